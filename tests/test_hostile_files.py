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
    ({"width": 10**9}, r"width must be an integer from"),
    ({"hidden_layers": 10**6}, r"hidden_layers must be an integer from"),
    ({"width": 60000}, r"do not fit the architecture"),  # within bounds, but not the file's tensors
    ({"image_size": -3}, r"image_size must be an integer from 1"),
    ({"width": 1e300}, r"finite number|must be an integer"),
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
