"""Crafted model files: ``lorita.load`` never imports or calls what a file names, never
allocates what a file's sizes ask for before checking them, and answers every malformed
description with a LoritaError (docs/SECURITY.md).

Each crafted file is a real ``lorita.save`` output whose JSON description is then edited,
so the tensors are valid and only the description is hostile.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import lorita
from lorita import LoritaError
from lorita.models import create_model


def write_with(path, desc: dict, tensors: dict | None = None) -> None:
    save_file(tensors if tensors is not None else {"w": torch.zeros(2)}, str(path),
              metadata={"lorita": json.dumps(desc)})


def zoo_file(tmp_path, **edit):
    """A saved depth-2 composed tiny FCN; ``edit`` replaces top-level fields of its description."""
    torch.manual_seed(0)
    model = lorita.compose(create_model("fcn", width=8, hidden_layers=1), depth=2)
    path = tmp_path / "model.lorita"
    lorita.save(model, path)
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        desc = json.loads(f.metadata()["lorita"])
    tensors = load_file(str(path))
    desc.update(edit)
    write_with(path, desc, tensors)
    return path, desc, tensors


# ----------------------------------------------------------------------------
# code named in a file is never run


@pytest.mark.parametrize("architecture", [
    {"factory": "subprocess:run", "kwargs": {"args": ["touch", "{marker}"]}},
    {"factory": "os:system", "kwargs": {"command": "touch {marker}"}},
    {"class": "subprocess:Popen"},
    {"factory": "builtins:exec", "kwargs": {"source": "open('{marker}', 'w')"}},
])
def test_named_code_is_not_run(architecture, tmp_path):
    marker = tmp_path / "PWNED"
    arch = json.loads(json.dumps(architecture).replace("{marker}", str(marker)))
    path = tmp_path / "evil.lorita"
    write_with(path, {"format": "lorita", "version": 1, "architecture": arch, "layers": {}})
    with pytest.raises(LoritaError, match=r"does not import or call code named in a file.*model=YourModel"
                                          r".*trust_code=True"):
        lorita.load(path)
    assert not marker.exists()


def test_trust_code_is_the_explicit_opt_in(tmp_path):
    path = tmp_path / "linear.lorita"
    write_with(path, {"format": "lorita", "version": 1, "layers": {},
                      "architecture": {"factory": "torch.nn:Linear", "kwargs": {"in_features": 3, "out_features": 2}}},
               {"weight": torch.ones(2, 3), "bias": torch.zeros(2)})
    with pytest.raises(LoritaError, match="trust_code"):
        lorita.load(path)
    model = lorita.load(path, trust_code=True)
    assert isinstance(model, nn.Linear) and torch.equal(model.weight, torch.ones(2, 3))
    with pytest.raises(LoritaError, match="trust_code must be True or False"):
        lorita.load(path, trust_code="yes")


def test_zoo_models_load_without_trust(tmp_path):
    path, _, _ = zoo_file(tmp_path)
    model = lorita.load(path)
    assert type(model).__name__ == "FCN"


def test_files_from_before_the_zoo_field_still_load(tmp_path):
    # format-1 files written before this change named the zoo's own factory
    path, desc, tensors = zoo_file(tmp_path)
    kwargs = {"name": "fcn", **desc["architecture"]["kwargs"]}
    desc["architecture"] = {"factory": "lorita.models:create_model", "kwargs": kwargs}
    write_with(path, desc, tensors)
    assert type(lorita.load(path)).__name__ == "FCN"


# ----------------------------------------------------------------------------
# sizes are checked before anything is allocated


@pytest.mark.parametrize("field,value,message", [
    ("depth", 10**9, r"depth of layer .* must be an integer from 2 to 64"),
    ("depth", 1, r"depth of layer .* must be an integer from 2 to 64"),
    ("depth", "3", r"depth of layer .* must be an integer"),
])
def test_absurd_depth_is_refused(field, value, message, tmp_path):
    path, desc, tensors = zoo_file(tmp_path)
    name = next(iter(desc["layers"]))
    desc["layers"][name][field] = value
    write_with(path, desc, tensors)
    with pytest.raises(LoritaError, match=message):
        lorita.load(path)


def test_absurd_rank_is_refused(tmp_path):
    model = lorita.compress(create_model("fcn", width=8, hidden_layers=1), ranks={"blocks.0.0": 2})
    path = tmp_path / "m.lorita"
    lorita.save(model, path)
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        desc = json.loads(f.metadata()["lorita"])
    desc["layers"]["blocks.0.0"]["rank"] = 10**12
    write_with(path, desc, load_file(str(path)))
    with pytest.raises(LoritaError, match=r"rank 1000000000000 of layer 'blocks.0.0' exceeds min\(out, in\) = 8"):
        lorita.load(path)


@pytest.mark.parametrize("kwargs,message", [
    ({"width": 10**9}, r"width must be an integer of magnitude at most 1,048,576, got 1,000,000,000"),
    ({"hidden_layers": 10**6}, r"hidden_layers must be an integer of magnitude at most"),
    ({"width": 30000}, r"do not fit the architecture"),  # within bounds, but not the file's tensors
    ({"in_channels": 1 << 20, "image_size": 1 << 20}, r"the FCN.s first Linear would hold 8 x 1152921504606846976"),
    ({"width": 1 << 20}, r"an FCN hidden Linear would hold 1048576 x 1048576 = 1.1e\+12 values, more than"),
    ({"image_size": -3}, r"image_size must be an integer from 1"),
    ({"width": 1e300}, r"width must be an integer of magnitude at most 1,048,576, got 1e\+300"),
    ({"width": {"nested": 1}}, r"plain JSON values"),
    ({"evil": 1}, r"unknown keyword argument"),
])
def test_zoo_arguments_are_checked_before_building(kwargs, message, tmp_path):
    path, desc, tensors = zoo_file(tmp_path)
    desc["architecture"]["kwargs"].update(kwargs)
    write_with(path, desc, tensors)
    with pytest.raises(LoritaError, match=message):
        lorita.load(path)


def test_unknown_zoo_model(tmp_path):
    path, desc, tensors = zoo_file(tmp_path, architecture={"zoo": "resnet2O", "kwargs": {}})
    with pytest.raises(LoritaError, match=r"unknown model 'resnet2O'.*Did you mean 'resnet20'"):
        lorita.load(path)


# ----------------------------------------------------------------------------
# malformed descriptions: always a LoritaError, never a raw exception

LAYER = "blocks.0.0"


def _layer_edit(**entry):
    def edit(desc):
        desc["layers"][LAYER].update(entry)
    return edit


def _set(key, value):
    def edit(desc):
        desc[key] = value
    return edit


def _rename(new):
    def edit(desc):
        desc["layers"][new] = desc["layers"].pop(LAYER)
        desc["layers"][new]["aliases"] = [new]
    return edit


MALFORMED = {
    "version as string": _set("version", "2"),
    "version bool": _set("version", True),
    "version zero": _set("version", 0),
    "newer version": _set("version", 99),
    "format missing": _set("format", None),
    "dtype number": _set("dtype", 5),
    "dtype unknown": _set("dtype", "complex128"),
    "dtype attribute": _set("dtype", "manual_seed"),
    "layers string": _set("layers", "blocks"),
    "layers list": _set("layers", [LAYER]),
    "architecture string": _set("architecture", "fcn"),
    "architecture list": _set("architecture", ["fcn"]),
    "zoo kwargs string": _set("architecture", {"zoo": "fcn", "kwargs": "width=8"}),
    "zoo name number": _set("architecture", {"zoo": 5, "kwargs": {}}),
    "module_versions list": _set("module_versions", [1]),
    "module_versions string value": _set("module_versions", {"blocks": "2"}),
    "layer entry string": lambda d: d["layers"].update({LAYER: "composed_linear"}),
    "layer type unknown": _layer_edit(type="pickle"),
    "layer type missing": lambda d: d["layers"][LAYER].pop("type"),
    "empty aliases": _layer_edit(aliases=[]),
    "alias empty string": _layer_edit(aliases=[""]),
    "alias dunder": _layer_edit(aliases=["__class__"]),
    "alias dunder path": _layer_edit(aliases=["blocks.__dict__"]),
    "alias other module": _layer_edit(aliases=["head"]),
    "aliases string": _layer_edit(aliases=LAYER),
    "name dunder": _rename("__class__"),
    "name not in model": _rename("blocks.7.0"),
    "name with spaces": _rename("blocks 0"),
    "name of a norm layer": _rename("blocks.0.1"),
    "depth float": _layer_edit(depth=2.0),
    "depth null": _layer_edit(depth=None),
    "mode unknown": _layer_edit(mode="turbo"),
    "side unknown": _layer_edit(side="left"),
    "conv type on a linear": _layer_edit(type="composed_conv2d"),
    "lowrank without rank": _layer_edit(type="lowrank_linear"),
    "lowrank rank zero": _layer_edit(type="lowrank_linear", rank=0),
    "lowrank rank string": _layer_edit(type="lowrank_linear", rank="4"),
    "lowrank rank fits but tensors do not": _layer_edit(type="lowrank_linear", rank=4),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_description_is_a_lorita_error(case, tmp_path):
    path, desc, tensors = zoo_file(tmp_path)
    MALFORMED[case](desc)
    write_with(path, desc, tensors)
    with pytest.raises(LoritaError, match=str(path.name)):  # every message names the file...
        lorita.load(path)
    if not case.startswith("zoo"):  # with model= the file's architecture is not used at all
        model = create_model("fcn", width=8, hidden_layers=1)
        with pytest.raises(LoritaError):  # ...and an explicit model= changes nothing about the checks
            lorita.load(path, model=model)


def test_the_description_must_be_json(tmp_path):
    path = tmp_path / "m.lorita"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"lorita": "{not json"})
    with pytest.raises(LoritaError, match="not valid JSON"):
        lorita.load(path)
    save_file({"w": torch.zeros(1)}, str(path), metadata={"lorita": "[" * 100000})
    with pytest.raises(LoritaError, match="not valid JSON|malformed"):
        lorita.load(path)


# ----------------------------------------------------------------------------
# the model= argument


def test_model_argument_is_checked(tmp_path):
    path, _, _ = zoo_file(tmp_path)
    with pytest.raises(LoritaError, match=r"model= must be an nn.Module or a zero-argument callable"):
        lorita.load(path, model=5)
    with pytest.raises(LoritaError, match=r"the model= callable returned NoneType, not an nn.Module"):
        lorita.load(path, model=lambda: None)
    with pytest.raises(LoritaError, match=r"building the architecture with the model= callable failed: "
                                          r"ZeroDivisionError"):
        lorita.load(path, model=lambda: 1 / 0)


def test_wrong_model_lists_what_does_not_fit(tmp_path):
    path, _, _ = zoo_file(tmp_path)
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    with pytest.raises(LoritaError, match=r"describes layer 'blocks.0.0'.*no such module"):
        lorita.load(path, model=other)
    plain = tmp_path / "plain.lorita"
    lorita.save(nn.Sequential(nn.Linear(4, 3)), plain)
    with pytest.raises(LoritaError, match=r"do not fit the architecture \(missing \['1.bias', '1.weight'\]; "
                                          r"unexpected \['0.bias', '0.weight'\]"):
        lorita.load(plain, model=nn.Sequential(nn.Identity(), nn.Linear(4, 3)))
    with pytest.raises(LoritaError, match=r"0.weight: file \(3, 4\) vs model \(3, 5\)"):
        lorita.load(plain, model=nn.Sequential(nn.Linear(5, 3)))


def test_save_to_a_folder_is_refused(tmp_path):
    with pytest.raises(LoritaError, match=r"is a folder; save needs a file path"):
        lorita.save(nn.Linear(2, 2), tmp_path)


class Versioned(nn.Module):
    """A module whose loading code checks its state_dict version, as torchvision's MNASNet does."""

    _version = 2

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get("version") != 2:
            raise ValueError(f"expected version 2, got {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


def test_module_versions_survive_a_round_trip(tmp_path):
    model = lorita.compress(Versioned(), ranks={"fc": 1})
    path = tmp_path / "v.lorita"
    lorita.save(model, path)
    again = lorita.load(path, model=Versioned)
    x = torch.randn(2, 3)
    torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)


def test_a_module_refusing_its_weights_is_a_lorita_error(tmp_path):
    path = tmp_path / "v.lorita"
    lorita.save(Versioned(), path)
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        desc = json.loads(f.metadata()["lorita"])
    desc["module_versions"] = {"": 1}
    write_with(path, desc, load_file(str(path)))
    with pytest.raises(LoritaError, match=r"ValueError: expected version 2, got 1"):
        lorita.load(path, model=Versioned)


def test_meta_models_are_not_saved(tmp_path):
    with torch.device("meta"):
        model = nn.Linear(3, 2)
    with pytest.raises(LoritaError, match=r"on the meta device \(no values\)"):
        lorita.save(model, tmp_path / "m.lorita")


# ----------------------------------------------------------------------------
# memory: bounded by the file, buffers that are not stored included


def vit_file(tmp_path, dim=4, **edit):
    """A saved tiny ViT (depth 0) whose description's kwargs are then edited."""
    model = create_model("vit", num_classes=1, in_channels=1, image_size=4, patch_size=1, dim=dim, depth=0, heads=1)
    path = tmp_path / "vit.lorita"
    lorita.save(model, path)
    desc = lorita.serialization.read_description(path)
    desc["architecture"]["kwargs"].update(edit)
    write_with(path, desc, load_file(str(path)))
    return path


def test_a_stored_nowhere_position_table_is_bounded_by_the_file(tmp_path, monkeypatch):
    """The ViT's position table is a non-persistent buffer computed from image_size: not in the file, so
    only the meta build's count of every tensor can bound it. It is never made off the meta device."""
    import lorita.models.vit as vit

    devices = []
    real = vit.sincos_2d
    monkeypatch.setattr(vit, "sincos_2d", lambda grid, dim: devices.append(str(real(grid, dim).device)) or
                        real(grid, dim))
    path = vit_file(tmp_path, dim=64, image_size=1024)  # 2^20 positions x 64: 256 MiB from a 2 KB file
    assert path.stat().st_size < 4096
    devices.clear()
    with pytest.raises(LoritaError, match=r"vit.lorita: building the model it describes would take 256 MiB, more "
                                          r"than lorita.load allows for a file of \d+ bytes \(64 MiB \+ 64 x"):
        lorita.load(path)
    assert devices == ["meta"]
    path = vit_file(tmp_path, image_size=4096)  # an 892-byte file that took 1.6 GB before the bound
    devices.clear()
    with pytest.raises(LoritaError, match=r"gives 4096 patches a side, more than 1024; use larger patches"):
        lorita.load(path)
    assert devices == []
    assert lorita.load(vit_file(tmp_path, image_size=8)).pos_embed.shape == (1, 64, 4)  # small enough: loads


def test_a_cut_far_smaller_than_its_model_needs_model_argument(tmp_path):
    """The plain layers a low-rank file replaces are built first: counted against the file too. A rank-1
    cut of a 20000-wide hidden layer is a 7 MB file, but its plain model takes 1.6 GB to build."""
    from lorita.serialization import _apply_structure

    small = lorita.compress(create_model("fcn", width=16, hidden_layers=2, image_size=8), ranks={"blocks.1.0": 1})
    path = tmp_path / "m.lorita"
    lorita.save(small, path)
    assert lorita.load(path).blocks[1][0].rank == 1  # the real file loads
    desc = lorita.serialization.read_description(path)
    desc["architecture"]["kwargs"]["width"] = 20000
    with torch.device("meta"):
        wide = create_model("fcn", width=20000, hidden_layers=2, image_size=8)
    _apply_structure(wide, desc["layers"], path)
    write_with(path, desc, {k: torch.zeros(t.shape, dtype=t.dtype) for k, t in wide.state_dict().items()})
    assert path.stat().st_size < 7 << 20
    with pytest.raises(LoritaError, match=r"would take 1\d{3} MiB, more than lorita.load allows"):
        lorita.load(path)


@pytest.mark.parametrize("name,kwargs,message", [
    ("vit", {"image_size": 4096, "patch_size": 4, "dim": 4096}, r"ViT position table \(patches x dim\) would hold"),
    ("vit", {"dim": 4096, "mlp_ratio": 1000}, r"a ViT MLP Linear would hold"),
    ("gpt", {"vocab_size": 1 << 20, "dim": 1 << 20, "heads": 1}, r"GPT token embedding \(and head\) would hold"),
    ("gpt", {"vocab_size": 4, "context": 1 << 16, "dim": 1 << 16}, r"GPT position embedding would hold"),
    ("vgg16", {"width_multiplier": 64.0}, r"a VGG conv would hold 32768 x 32768 x 3 x 3"),
    ("vgg16", {"image_size": 1 << 20, "num_classes": 1 << 20}, r"the VGG classifier would hold"),
])
def test_products_of_bounded_arguments_are_bounded(name, kwargs, message):
    """Each argument is within the zoo's bounds, their product is not: a clear error, not an overflow."""
    with torch.device("meta"), pytest.raises(LoritaError, match=message):
        create_model(name, **kwargs)


def test_a_builder_failing_on_a_file_is_a_lorita_error(tmp_path, monkeypatch):
    import functools

    from lorita.models import registry

    real = registry._BUILDERS["fcn"]

    @functools.wraps(real)
    def overflowing(*args, **kwargs):
        raise RuntimeError("Storage size calculation overflowed with sizes=[8, 1152921504606846976]")

    path, _, _ = zoo_file(tmp_path)
    monkeypatch.setitem(registry._BUILDERS, "fcn", overflowing)
    with pytest.raises(LoritaError, match=r"model.lorita: the zoo model it describes cannot be built \(RuntimeError: "
                                          r"Storage size calculation overflowed.*the file is damaged or crafted"):
        lorita.load(path)


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.uint8])
def test_weights_of_the_wrong_kind_are_refused(dtype, tmp_path):
    path, desc, tensors = zoo_file(tmp_path)
    tensors["head.bias"] = torch.ones_like(tensors["head.bias"], dtype=dtype)
    write_with(path, desc, tensors)
    kind = str(dtype).replace("torch.", "").replace("bool", "BOOL").replace("int64", "I64").replace("uint8", "U8")
    with pytest.raises(LoritaError, match=rf"head.bias: file dtype {kind} vs model float32\); is this the right"):
        lorita.load(path)
    tensors["head.bias"] = tensors["head.bias"].float()
    tensors["blocks.0.1.num_batches_tracked"] = torch.tensor(1.5)  # a float where the model counts
    write_with(path, desc, tensors)
    with pytest.raises(LoritaError, match=r"num_batches_tracked: file dtype F32 vs model int64"):
        lorita.load(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(value, tmp_path):
    path, desc, tensors = zoo_file(tmp_path)
    tensors["head.bias"][0] = value
    write_with(path, desc, tensors)
    bad = "NaN" if value != value else "Inf"
    with pytest.raises(LoritaError, match=rf"model.lorita: the file is damaged: layer 'head' has {bad} in its bias"):
        lorita.load(path)
