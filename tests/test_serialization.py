"""save / load round trips for composed, merged and compressed models; bad files."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import lorita
from lorita import LoritaError
from lorita.models import create_model
from tiny_models import Nested, Shared, build, example


def stages(model):
    composed = lorita.compose(model, depth=3)
    merged = lorita.merge(composed)
    return {"composed": composed, "merged": merged, "compressed": lorita.compress(merged, ratio=0.3)}


@pytest.mark.parametrize("stage", ["composed", "merged", "compressed"])
@pytest.mark.parametrize("builder,shape", [(Nested, (2, 3, 8, 5)), (Shared, (3, 6))])
def test_round_trip_with_model_argument(stage, builder, shape, tmp_path):
    model = stages(build(builder))[stage]
    path = tmp_path / "m.lorita"
    lorita.save(model, path)
    again = lorita.load(path, model=lambda: builder()).eval()
    x = example(shape)
    torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)
    assert [type(m) for m in again.modules()] == [type(m) for m in model.modules()]
    assert again.state_dict().keys() == model.state_dict().keys()


def test_zoo_model_rebuilds_itself(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    small = lorita.compress(lorita.merge(lorita.compose(model, depth=2)), energy=0.9).eval()
    path = tmp_path / "r.lorita"
    lorita.save(small, path)
    again = lorita.load(path).eval()  # no model argument: lorita_config names the factory
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(again(x), small(x), atol=0, rtol=0)


def test_load_returns_eval_mode_like_from_pretrained(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), nn.BatchNorm1d(6), nn.Linear(6, 2))
    model.train()
    model(torch.randn(16, 6))  # BatchNorm running statistics that differ from a batch's
    lorita.save(model, tmp_path / "m.lorita")
    again = lorita.load(tmp_path / "m.lorita", model=lambda: nn.Sequential(
        nn.Linear(6, 6), nn.Dropout(0.5), nn.BatchNorm1d(6), nn.Linear(6, 2)))
    assert not any(m.training for m in again.modules())
    x = torch.randn(4, 6)
    torch.testing.assert_close(again(x), model.eval()(x), atol=0, rtol=0)  # dropout off, running statistics


class _HalfFirst(nn.Module):
    """A model in mixed precision: a float16 first layer, float32 LayerNorm and head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 16), nn.Linear(16, 3))
        self.body[0].half()

    def forward(self, x):
        h = self.body[1](self.body[0](x.half()).float())
        return self.body[3](torch.relu(self.body[2](h)))


def test_a_model_in_mixed_precision_keeps_each_tensors_dtype(tmp_path):
    torch.manual_seed(0)
    small = lorita.compress(_HalfFirst().eval(), ranks={"body.2": 4})
    lorita.save(small, tmp_path / "m.lorita")
    again = lorita.load(tmp_path / "m.lorita", model=_HalfFirst)  # the description's dtype is the first: float16
    assert {k: v.dtype for k, v in again.state_dict().items()} == {k: v.dtype for k, v in small.state_dict().items()}
    x = torch.randn(4, 8)
    torch.testing.assert_close(again(x), small(x), atol=0, rtol=0)  # was cast whole to float16: LayerNorm failed


class _Scaled(_HalfFirst):
    """_HalfFirst with buffers the file does not hold: one past float16's range, one in float64."""

    def __init__(self):
        super().__init__()
        self.register_buffer("big", torch.tensor([7e4]), persistent=False)
        self.register_buffer("fine", torch.tensor([1 / 3], dtype=torch.float64), persistent=False)

    def forward(self, x):
        return super().forward(x) / self.big * self.fine.float()


def test_a_buffer_the_file_does_not_hold_keeps_the_architectures_dtype(tmp_path):
    torch.manual_seed(0)
    model = _Scaled().eval()
    lorita.save(model, tmp_path / "m.lorita")
    again = lorita.load(tmp_path / "m.lorita", model=_Scaled)  # the description's dtype is float16 (the first)
    assert again.big.dtype == torch.float32 and again.fine.dtype == torch.float64  # was float16: big became inf
    x = torch.randn(4, 8)
    torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)
    half = _Scaled().half().eval()  # a whole model cast: its buffers too, which a fresh _Scaled() does not build so
    lorita.save(half, tmp_path / "h.lorita")
    again = lorita.load(tmp_path / "h.lorita", model=_Scaled)
    assert again.big.dtype == again.fine.dtype == torch.float16
    assert {k: v.dtype for k, v in again.state_dict().items()} == {k: v.dtype for k, v in half.state_dict().items()}


def test_whiten_is_reachable_after_import_lorita():
    import subprocess
    import sys
    code = "import lorita; print(lorita.whiten.collect_grams.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "collect_grams"


def test_file_is_safetensors_with_a_json_description(tmp_path):
    from safetensors import safe_open
    model = lorita.compress(build(Nested), ranks={"head.1.0": 2})
    path = tmp_path / "m.lorita"
    lorita.save(model, path)
    with safe_open(str(path), "pt") as f:
        desc = json.loads(f.metadata()["lorita"])
    assert desc["layers"] == {"head.1.0": {"type": "lowrank_linear", "rank": 2, "aliases": ["head.1.0"]}}
    assert desc["dtype"] == "float64"


def test_script_class_needs_model_argument(tmp_path):
    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x)

    path = tmp_path / "m.lorita"
    lorita.save(Local(), path)
    with pytest.raises(LoritaError, match=r"does not import or call code named in a file.*model=YourModel"):
        lorita.load(path)
    with pytest.raises(LoritaError, match=r"cannot import .*pass load\(path, model=YourModel\(\.\.\.\)\)"):
        lorita.load(path, trust_code=True)
    assert isinstance(lorita.load(path, model=Local), Local)


@pytest.mark.parametrize("content,message", [
    (b"", r"is not a readable safetensors file"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", r"is not a readable safetensors file"),
    (b"PK\x03\x04 this is a zip, maybe a torch.save pickle", r"is not a readable safetensors file"),
])
def test_corrupt_files_are_refused(content, message, tmp_path):
    path = tmp_path / "bad.lorita"
    path.write_bytes(content)
    with pytest.raises(LoritaError, match=message):
        lorita.load(path, model=nn.Linear(2, 2))


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "m.lorita"
    lorita.save(build(Nested), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoritaError, match=r"not a readable safetensors file|do not fit"):
        lorita.load(path, model=Nested)


def test_foreign_safetensors_and_wrong_model(tmp_path):
    foreign = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(LoritaError, match=r"not a lorita model \(no 'lorita' metadata\)"):
        lorita.load(foreign)
    path = tmp_path / "m.lorita"
    lorita.save(lorita.compress(build(Nested), ranks={"head.1.0": 2}), path)
    with pytest.raises(LoritaError, match=r"describes layer 'head.1.0' as lowrank_linear.*right model"):
        lorita.load(path, model=nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(LoritaError, match=r"no such file"):
        lorita.load(tmp_path / "missing.lorita")
    os.mkfifo(tmp_path / "fifo.lorita")  # never opened (a FIFO blocks a reader): said to be no regular file
    with pytest.raises(LoritaError, match=r"fifo.lorita is not a regular file; give a file lorita.save wrote"):
        lorita.load(tmp_path / "fifo.lorita")


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.lorita"
    lorita.save(build(Nested), path)
    before = path.read_bytes()

    def broken(model, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr("lorita.serialization.save_model", broken)
    with pytest.raises(OSError, match="No space left"):
        lorita.save(lorita.compose(build(Nested), depth=2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.lorita"]  # no temp file left behind


@pytest.mark.parametrize("dynamo", [False, True])
def test_compressed_model_exports_to_onnx(tmp_path, dynamo):
    """Both exporters: the legacy TorchScript one, and PyTorch's default (torch.export +
    onnxscript), there with a dynamic batch dimension checked at another batch size."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript" if dynamo else "onnx")
    torch.manual_seed(0)
    model = lorita.compress(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                          nn.Linear(8 * 6 * 6, 10)), ratio=0.25).eval()
    path = tmp_path / "m.onnx"
    options = {"dynamo": True, "dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamo else {"dynamo": False}
    torch.onnx.export(model, (torch.randn(2, 3, 6, 6),), str(path), input_names=["x"], **options)
    x = torch.randn(5 if dynamo else 2, 3, 6, 6)
    out = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), atol=1e-5, rtol=1e-4)


def test_paths_are_checked_and_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    net = nn.Linear(3, 2)
    lorita.save(net, "~/sub/net.lorita")  # where a shell would put it, not in a folder named '~'
    assert (tmp_path / "sub" / "net.lorita").is_file() and not (tmp_path / "~").exists()
    assert torch.equal(lorita.load("~/sub/net.lorita", model=nn.Linear(3, 2)).weight, net.weight)
    lorita.save(net, "~net.lorita")  # not a user's home: a file of that name here
    lorita.save(net, tmp_path / "sub" / "~" / "net.lorita")  # a folder named '~' given whole stays one
    assert (tmp_path / "~net.lorita").is_file() and (tmp_path / "sub" / "~" / "net.lorita").is_file()
    assert torch.equal(lorita.load("./~net.lorita", model=nn.Linear(3, 2)).weight, net.weight)
    with pytest.raises(LoritaError, match=r"load needs a file path \(a str or pathlib.Path\), got int"):
        lorita.load(3, model=net)
    with pytest.raises(LoritaError, match=r"sub is a folder; give a file lorita.save wrote .*model.lorita"):
        lorita.load(tmp_path / "sub", model=net)


def test_the_architecture_given_is_checked_for_what_users_get_wrong(tmp_path):
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    small = lorita.compress(net, ranks={"0": 2})
    lorita.save(small, tmp_path / "small.lorita")
    with pytest.raises(LoritaError, match=r"already has a LowRankLinear at '0'; give the original architecture"):
        lorita.load(tmp_path / "small.lorita", model=small)  # the cut model itself, not its architecture
    with torch.device("meta"):
        shell = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(LoritaError, match=r"model=\) is on the meta device .* model.to_empty\(device='cpu'\)"):
        lorita.load(tmp_path / "small.lorita", model=shell)
    wrapped = nn.Module()
    wrapped._orig_mod = small  # what torch.compile's wrapper holds
    lorita.save(wrapped, tmp_path / "compiled.lorita")
    with pytest.raises(LoritaError, match=r"start with '_orig_mod.': it was saved from a torch.compile wrapper"):
        lorita.load(tmp_path / "compiled.lorita", model=net)


def test_a_description_with_malformed_buffer_dtypes_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = tmp_path / "m.lorita"
    lorita.save(_Scaled(), path)
    with safe_open(str(path), "pt") as f:
        desc = json.loads(f.metadata()["lorita"])
    assert desc["buffer_dtypes"] == {"big": "float32", "fine": "float64"}
    for bad in ({"big": "int8"}, {"": "float32"}, ["big"]):
        save_file(load_file(str(path)), str(path), metadata={"lorita": json.dumps({**desc, "buffer_dtypes": bad})})
        with pytest.raises(LoritaError, match="buffer_dtypes must map buffer names to one of"):
            lorita.load(path, model=_Scaled)


def test_a_file_written_before_buffer_dtypes_were_recorded_loads_as_it_did(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = tmp_path / "old.lorita"
    half = _Scaled().half().eval()
    lorita.save(half, path)
    with safe_open(str(path), "pt") as f:
        desc = json.loads(f.metadata()["lorita"])
    del desc["buffer_dtypes"]
    save_file(load_file(str(path)), str(path), metadata={"lorita": json.dumps(desc)})
    again = lorita.load(path, model=_Scaled)  # a fresh _Scaled() builds its buffers in float32 and float64
    assert again.big.dtype == again.fine.dtype == torch.float16  # cast to the description's dtype, as before
    assert {k: v.dtype for k, v in again.state_dict().items()} == {k: v.dtype for k, v in half.state_dict().items()}


def test_a_new_file_without_recordable_buffers_is_not_cast_as_an_older_file(tmp_path):
    class Scaled8(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("q", torch.zeros(2, dtype=torch.float8_e4m3fn), persistent=False)

        def forward(self, x):
            return self.lin(x)

    lorita.save(Scaled8(), tmp_path / "m.lorita")
    assert lorita.load(tmp_path / "m.lorita", model=Scaled8).q.dtype == torch.float8_e4m3fn  # as built, not cast
