"""Continuing a trained model as LoRITa (``lorita train --from``, ``lorita.runs.train.load_source``)."""

import copy
import json

import pytest
import torch
from torch import nn

import lorita
from lorita.cli import main
from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, build_model, train_run
from lorita.runs.train import load_source
from lorita.train import TrainConfig, train

INPUTS = {"num_classes": 10, "in_channels": 1, "image_size": 8}


@pytest.fixture(scope="module")
def data():
    return DataSpec("digits").load()


@pytest.fixture(scope="module")
def plain(data, tmp_path_factory):
    """A plain FCN trained 6 epochs on digits: the 'trained model' a user brings."""
    out = tmp_path_factory.mktemp("from") / "plain"
    config = RunConfig(ModelSpec("fcn", {"width": 64, "hidden_layers": 2}, INPUTS), DataSpec("digits"),
                       ComposeSpec(1), TrainConfig(epochs=6, batch_size=64, device="cpu"))
    train_run(out, config, data, progress=False)
    return out


def test_continuing_starts_from_the_same_outputs(plain, data):
    source, spec, path = load_source(plain)
    assert spec.name == "fcn" and spec.kwargs == {"width": 64, "hidden_layers": 2} and spec.inputs == INPUTS
    config = RunConfig(spec, DataSpec("digits"), ComposeSpec(3, "preserve"), source=str(path))
    composed = build_model(config, copy.deepcopy(source)).eval()
    assert any(isinstance(m, lorita.ComposedLinear) for m in composed.modules())
    x, _ = next(data.val.batches(64))
    # float32 model; the preserving split and the product run in float64: rounding only
    torch.testing.assert_close(composed(x), source(x), atol=1e-5, rtol=1e-5)


def entropy_ranks(model: nn.Module) -> list[float]:
    """exp(entropy of the normalised singular values) per layer: a smooth effective rank."""
    out = []
    for s in lorita.spectrum(lorita.merge(model)).values():
        p = s / s.sum()
        out.append(float(torch.exp(-(p * p.clamp_min(1e-30).log()).sum())))
    return out


@pytest.mark.slow
def test_a_few_epochs_lower_the_effective_rank_more_than_plain_training(plain, data):
    source, _, _ = load_source(plain)
    before = entropy_ranks(source)
    after = {}
    for depth in (1, 3):  # the same recipe for both: only the parameterisation differs
        model = lorita.compose(copy.deepcopy(source), depth=depth, init="preserve")
        train(model, data, TrainConfig(epochs=4, batch_size=64, lr=0.02, weight_decay=0.05, device="cpu"))
        after[depth] = entropy_ranks(model)
    assert all(a < b for a, b in zip(after[3], before))
    assert all(a3 < a1 for a3, a1 in zip(after[3], after[1]))


def test_cli_from_a_run_folder(plain, tmp_path, capsys):
    out = tmp_path / "cont"
    assert main(["train", "--from", str(plain), "--depth", "3", "--epochs", "1", "--batch-size", "64",
                 "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["source"] == str(plain / "model.lorita") and config["compose"]["init"] == "preserve"
    assert config["dataset"]["name"] == "digits"  # taken from the source run
    assert config["model"]["kwargs"] == {"width": 64, "hidden_layers": 2}
    model = lorita.load(out / "model.lorita")
    assert sum(isinstance(m, lorita.ComposedLinear) for m in model.modules()) == 3


@pytest.mark.parametrize("argv,message", [
    (["--init", "default"], r"--init default would throw away"),
    (["--model", "vgg16"], r"holds a fcn; leave --model out"),
    (["--model-arg", "width=8"], r"--model-arg does not apply with --from"),
    (["--dataset", "mnist", "--data-dir", "."], r"mnist|no such|not found"),
])
def test_cli_from_refuses_what_does_not_fit(plain, tmp_path, capsys, argv, message):
    import re
    out = tmp_path / "cont"
    assert main(["train", "--from", str(plain), *argv, "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists()


def test_cli_from_a_model_outside_the_zoo_is_explained(tmp_path, capsys):
    path = tmp_path / "mine.lorita"
    lorita.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), path)
    assert main(["train", "--from", str(path), "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    assert "not one of lorita's zoo models" in capsys.readouterr().err


def test_cli_from_a_cut_model_says_to_continue_its_source(plain, tmp_path, capsys):
    cut = tmp_path / "cut"
    assert main(["compress", str(plain), "--energy", "0.9", "--no-progress", "--out", str(cut)]) == 0
    lowrank = lorita.load(cut / "model.lorita")
    assert any(isinstance(m, lorita.LowRankLinear) for m in lowrank.modules())  # the cut holds low-rank pairs
    out = tmp_path / "cont"
    assert main(["train", "--from", str(cut), "--depth", "1", "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cut by 'lorita compress'" in err and "continue the trained run it was cut from" in err
    assert not out.exists()
