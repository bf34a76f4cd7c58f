"""Hostile input and faults: non-finite weights, corrupt or malicious files, failed writes, odd layers.

Every failure is a LoritaError (or, from the CLI, exit status 2 with a message) that says
what is wrong, raised before anything is written; loading never runs pickled code; a write
that fails part-way leaves the previous file intact and no temporary file behind.
"""

import json
import math
import pathlib
import pickle
import re
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import lorita
from lorita import LoritaError
from lorita.cli import main
from lorita.targets import skipped_layers
from lorita.train.checkpoint import load_checkpoint, save_checkpoint


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


# ----------------------------------------------------------------------------
# NaN / Inf weights


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_weights_are_named_by_every_verb(bad):
    kind = "NaN" if math.isnan(bad) else "Inf"
    model = mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = bad
    with pytest.raises(LoritaError, match=rf"layer '2' has {kind}"):
        lorita.compose(model, depth=3, init="preserve")
    for strategy, options in [("energy", {"energy": 0.9}), ("uniform", {"ratio": 0.5}),
                              ("global", {"threshold": 0.1}), ("budget", {"params": 0.5})]:
        with pytest.raises(LoritaError, match=rf"layer '2' has {kind}"):
            lorita.select_ranks(model, strategy, **options)
    with pytest.raises(LoritaError, match=rf"layer '2' has {kind}"):
        lorita.search_accuracy(model, lambda m: 50.0)
    composed = lorita.compose(mlp(), depth=3)
    with torch.no_grad():
        composed[0].factors[1][0, 0] = bad
    with pytest.raises(LoritaError, match=rf"layer '0' has {kind}"):
        lorita.merge(composed)
    with pytest.raises(LoritaError, match=rf"layer '0' has {kind}"):
        lorita.compress(composed, energy=0.9)


# ----------------------------------------------------------------------------
# malicious and corrupt training checkpoints


class Evil:
    """Unpickling this would create ``marker`` (as os.system would run a command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_malicious_checkpoint_is_refused_without_running_it(how, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    payload = {"format": "lorita.train.checkpoint", "version": 1, "epoch": 1, "evil": Evil(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # torch.load's default protocol
    assert not marker.exists()
    with pytest.raises(LoritaError, match=r"cannot read checkpoint .*checkpoint\.pt") as refused:
        load_checkpoint(path)
    assert not marker.exists()
    if how == "torch.save":  # torch's advice to load it with weights_only=False is not passed on
        assert "weights_only" not in str(refused.value) and "which lorita never loads" in str(refused.value)


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"PK\x03\x04 not really a zip", b"{\"epoch\": 1}"])
def test_corrupt_checkpoint_is_refused(content, tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(LoritaError, match=r"cannot read checkpoint") as refused:
        load_checkpoint(path)
    assert "pickled Python objects" not in str(refused.value)  # damaged, not a refused class
    assert "weights_only" not in str(refused.value)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 3, "model": mlp().state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoritaError, match=r"cannot read checkpoint"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------
# atomic writes


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()

    def broken(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr("lorita.train.checkpoint.torch.save", broken)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint({"epoch": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


def test_failed_json_write_keeps_the_previous_file(tmp_path, monkeypatch):
    from lorita.runs import write_json
    path = tmp_path / "results.json"
    write_json(path, {"command": "train", "test_acc": 90.0})
    before = path.read_text()
    real = pathlib.Path.write_text

    def broken(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", broken)
    with pytest.raises(OSError, match="No space left"):
        write_json(path, {"command": "train", "test_acc": 91.0})
    monkeypatch.undo()
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# ----------------------------------------------------------------------------
# damaged run folders through the CLI

TINY = ["--model", "fcn", "--model-arg", "width=8", "--model-arg", "hidden_layers=1", "--dataset", "digits",
        "--epochs", "1", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "plain"
    assert main(["train", *TINY, "--depth", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture
def damaged(run_folder, tmp_path):
    """A fresh copy of the run to damage."""
    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy)
    return copy


def cli_error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    return err


@pytest.mark.parametrize("name,content,message", [
    ("results.json", b"{\"command\": \"tra", r"results\.json is not valid JSON"),
    ("results.json", b"\xff\xfe\x00\x01 binary", r"results\.json is not UTF-8 text \(invalid start byte at byte 0\)"),
    ("results.json", b"[1, 2]", r"results\.json does not hold a JSON object"),
    ("config.json", b"", r"config\.json is not valid JSON"),
    ("config.json", b"{\"command\": \"report\"}", r"config\.json is neither a train nor a compress run"),
    ("config.json", b"{\"command\": \"compress\"}", r"config\.json is a compress run's config without its 'source'"),
    ("config.json", b"{\"command\": \"compress\", \"source\": \"run\"}", r"its .source. leads back to a run already"),
    ("config.json", b"{\"command\": \"train\", \"dataset\": 5}", r"config\.json.*'dataset' must be an object"),
    ("model.lorita", b"\x00" * 100, r"model\.lorita is not a readable safetensors file"),
])
def test_compress_refuses_a_damaged_run(damaged, tmp_path, capsys, name, content, message):
    (damaged / name).write_bytes(content)
    out = tmp_path / "cut"
    err = cli_error(["compress", str(damaged), "--energy", "0.9", "--out", str(out)], capsys)
    assert re.search(message, err), err
    assert not out.exists()  # nothing written


def test_evaluate_and_report_refuse_corrupt_json(damaged, tmp_path, capsys):
    (damaged / "config.json").write_text("{oops")
    assert "config.json is not valid JSON" in cli_error(["evaluate", str(damaged)], capsys)
    (damaged / "results.json").write_text("{oops")
    assert "results.json" in cli_error(["report", str(damaged), "--out", str(tmp_path / "r")], capsys)


@pytest.mark.parametrize("kind", ["tensor", "evil"])
def test_resume_refuses_a_foreign_or_malicious_checkpoint(damaged, tmp_path, capsys, kind):
    marker = tmp_path / "pwned"
    if kind == "tensor":
        torch.save(torch.zeros(3), damaged / "checkpoint.pt")  # a valid torch file, but not a checkpoint
    else:
        torch.save({"format": "lorita.train.checkpoint", "evil": Evil(marker)}, damaged / "checkpoint.pt")
    err = cli_error(["train", *TINY, "--depth", "1", "--epochs", "2", "--resume", "--out", str(damaged)], capsys)
    assert re.search(r"not a lorita training checkpoint" if kind == "tensor" else r"cannot read checkpoint", err), err
    assert not marker.exists()


def _row(edit):
    def apply(ckpt):
        edit(ckpt["history"][0])
    return apply


def _momentum(ckpt):
    state = ckpt["optimizer"]["state"]
    state[0]["momentum_buffer"] = torch.zeros(3, 3)


def _best_model(ckpt):
    ckpt["best_model"] = {k: torch.zeros(1) for k in ckpt["model"]}


TAMPERED = {  # what a hand-edited checkpoint.pt may hold, and what the error says
    "extra history key": (_row(lambda r: r.update(evil=1)), r"history row 1 must have exactly the columns"),
    "history without seconds": (_row(lambda r: r.pop("seconds")), r"history row 1 must have exactly the columns"),
    "formula in history": (_row(lambda r: r.update(train_loss='=HYPERLINK("http://x.example","x")')),
                           r"history row 1 holds train_loss='=HYPERLINK.*not a finite number"),
    "NaN in history": (_row(lambda r: r.update(val_acc=math.nan)), r"history row 1 holds val_acc=nan"),
    "wrong epoch in history": (_row(lambda r: r.update(epoch=7)), r"history row 1 has epoch 7"),
    "best_val_loss text": (lambda c: c.update(best_val_loss="abc"), r"best_val_loss must be a number, got 'abc'"),
    "best_score list": (lambda c: c.update(best_score=[1]), r"best_score must be a number, got \[1\]"),
    "best_epoch negative": (lambda c: c.update(best_epoch=-5), r"best_epoch -5 is not one of its 1 finished epochs"),
    "best_epoch huge": (lambda c: c.update(best_epoch=10**6), r"best_epoch 1000000 is not one of its 1 finished"),
    "schedule scale huge": (lambda c: c["schedule"].update(scale=1e300),
                            r"its schedule scale must be a number in \(0, 1\]"),
    "schedule scale negative": (lambda c: c["schedule"].update(scale=-1.0), r"its schedule scale must be a number in"),
    "schedule best NaN": (lambda c: c["schedule"].update(best=math.nan),
                          r"its schedule.s best validation loss must be a number, got nan"),
    "schedule bad_epochs text": (lambda c: c["schedule"].update(bad_epochs="2"),
                                 r"its schedule.s bad_epochs must be an integer >= 0, got .2."),
    "momentum of the wrong shape": (_momentum, r"optimizer state 'momentum_buffer' of parameter 0 has shape \(3, 3\)"),
    "momentum NaN": (lambda c: c["optimizer"]["state"][0]["momentum_buffer"].fill_(math.nan),
                     r"optimizer state 'momentum_buffer' of parameter 0 holds NaN or Inf"),
    "optimizer of another model": (lambda c: c["optimizer"]["param_groups"][0]["params"].pop(),
                                   r"its optimizer state covers \d+ parameters, the model has \d+"),
    "best model of wrong shapes": (_best_model, r"its best model does not fit the model"),
}


@pytest.mark.parametrize("where", ["finished run", "killed run"])
@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_checkpoint_is_refused_before_training_resumes(damaged, capsys, case, where):
    """Each was a traceback mid-epoch or at the end, or trained nonsense (lr -0.05, a formula in metrics.csv).
    A killed run's kept NAME.partial stays as it was (its config.json was rewritten before the optimizer checks)."""
    folder = damaged if where == "finished run" else damaged.rename(damaged.with_name("killed.partial"))
    out = damaged if where == "finished run" else damaged.with_name("killed")
    path = folder / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    edit, message = TAMPERED[case]
    edit(ckpt)
    torch.save(ckpt, path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    err = cli_error(["train", *TINY, "--depth", "1", "--epochs", "2", "--resume", "--out", str(out)], capsys)
    assert re.search(rf"checkpoint\.pt is damaged: {message}.*; start the run again without --resume", err), err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written, metrics.csv included
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no output, staging or lock file


def test_compress_names_a_non_finite_layer_before_writing(damaged, tmp_path, capsys):
    path = damaged / "model.lorita"
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith("weight") and tensors[k].dim() == 2)
    tensors[key][0, 0] = math.nan
    save_file(tensors, str(path), metadata=meta)  # what lorita.save refuses to write
    out = tmp_path / "cut"
    err = cli_error(["compress", str(damaged), "--energy", "0.9", "--out", str(out)], capsys)
    layer, _, what = key.rpartition(".")
    assert f"model.lorita: the file is damaged: layer '{layer}' has NaN in its {what}" in err
    assert not out.exists()


def test_compress_results_list_skipped_layers(run_folder, tmp_path):
    out = tmp_path / "cut"
    assert main(["compress", str(run_folder), "--energy", "0.9", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["skipped_layers"] == {}  # an FCN: every layer is cut


# ----------------------------------------------------------------------------
# layers left plain: named in the warning and in skipped_layers


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.depthwise = nn.Conv2d(4, 4, 3, groups=4)
        self.grouped = nn.Conv2d(4, 6, 1, groups=2)
        self.conv1d = nn.Conv1d(4, 4, 3)
        self.conv3d = nn.Conv3d(2, 2, 1)
        self.emb = nn.Embedding(10, 8)
        self.tied = nn.Linear(8, 10, bias=False)
        self.tied.weight = self.emb.weight
        self.fc = nn.Linear(8, 8)


def test_skipped_layers_name_every_odd_layer():
    skipped = skipped_layers(Odd())
    assert set(skipped) == {"attn.out_proj", "depthwise", "grouped", "conv1d", "conv3d", "tied"}
    assert "MultiheadAttention" in skipped["attn.out_proj"] and "depthwise" in skipped["depthwise"]
    assert "grouped" in skipped["grouped"] and "only Conv2d" in skipped["conv1d"]
    assert "tied" in skipped["tied"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = lorita.compress(Odd(), ratio=0.25)
    message = " ".join(str(w.message) for w in caught)
    assert all(name + ":" in message for name in skipped)
    assert type(small.fc) is lorita.LowRankLinear and type(small.conv1d) is nn.Conv1d


def test_lorita_file_for_another_architecture_is_refused(tmp_path):
    path = tmp_path / "m.lorita"
    lorita.save(lorita.compress(nn.Sequential(nn.Linear(64, 64)), ranks={"0": 4}), path)
    with pytest.raises(LoritaError, match=r"describes layer '0' as lowrank_linear, but the architecture has Conv2d"):
        lorita.load(path, model=nn.Sequential(nn.Conv2d(3, 3, 1)))


@pytest.mark.parametrize("version", [99, 0, "1", None])
def test_a_run_config_of_a_format_version_this_lorita_does_not_read_is_refused(damaged, tmp_path, capsys, version):
    config = json.loads((damaged / "config.json").read_text())
    (damaged / "config.json").write_text(json.dumps({**config, "format_version": version}))
    err = cli_error(["compress", str(damaged), "--energy", "0.9", "--out", str(tmp_path / "cut")], capsys)
    assert f"config.json: format_version {version!r}, which this lorita" in err and "does not read" in err
    assert not (tmp_path / "cut").exists()
