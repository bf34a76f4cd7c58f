"""A language model trained with ``--select-by val_loss`` is judged by its loss from training to report: compress
keeps its validation loss within --max-drop nats (default ln 1.02, perplexity + 2%) and records accuracy and loss
at every stage; the report compares such runs at a loss budget. A tiny GPT on a small text folder."""

import json
import math

import pytest

from lorita.cli import main

TINY_GPT = ["--model", "gpt", "--dataset", "text", "--model-arg", "dim=16", "--model-arg", "depth=1",
            "--model-arg", "heads=2", "--model-arg", "context=16", "--epochs", "1", "--steps-per-epoch", "3",
            "--batch-size", "8", "--select-by", "val_loss", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    texts = root / "texts"
    texts.mkdir()
    entries = [f"entry {i}: the quick brown fox jumps over the lazy dog {i % 7}" for i in range(60)]
    (texts / "a.txt").write_text("\n%\n".join(entries) + "\n", encoding="utf-8")
    for depth in (1, 2):
        assert main(["train", *TINY_GPT, "--data-dir", str(texts), "--depth", str(depth), "--out",
                     str(root / f"d{depth}")]) == 0
    return root


def _results(folder):
    return json.loads((folder / "results.json").read_text())


def test_an_accuracy_cut_of_a_language_model_keeps_its_loss_within_two_percent_perplexity(runs, capsys):
    out = runs / "d2-acc"
    capsys.readouterr()
    assert main(["compress", str(runs / "d2"), "--strategy", "accuracy", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = _results(out)
    assert results["metric"] == "val_loss" and results["cut"]["max_drop"] == pytest.approx(math.log(1.02))
    assert results["after_cut"]["val_loss"] <= results["before"]["val_loss"] + math.log(1.02) + 1e-9
    assert f"test loss {results['before']['test_loss']:.4f} (perplexity" in printed
    assert main(["compress", str(runs / "d2"), "--strategy", "accuracy", "--max-drop", "0.5", "--no-progress",
                 "--out", str(runs / "d2-acc-half")]) == 0
    assert _results(runs / "d2-acc-half")["cut"]["max_drop"] == 0.5


def test_every_stage_records_accuracy_and_loss_as_evaluate_measures_them(runs, capsys):
    out = runs / "d2-e90"
    assert main(["compress", str(runs / "d2"), "--energy", "0.9", "--finetune-epochs", "1", "--no-progress",
                 "--out", str(out)]) == 0
    results = _results(out)
    for stage in ("before", "after_cut", "after_finetune"):
        assert set(results[stage]) >= {"val_acc", "test_acc", "val_loss", "test_loss"}, stage
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["val_loss"] == pytest.approx(results["after_finetune"]["val_loss"], rel=1e-6)
    assert figures["test_acc"] == pytest.approx(results["after_finetune"]["test_acc"], rel=1e-6)


def test_the_report_compares_language_models_at_a_loss_budget(runs, tmp_path):
    cut = runs / "d2-r4"
    assert main(["compress", str(runs / "d2"), "--rank", "4", "--no-progress", "--out", str(cut)]) == 0
    out = tmp_path / "report"
    assert main(["report", str(runs / "d1"), str(runs / "d2"), str(cut), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| val loss | test loss |" in text and "test loss (before → cut → fine-tune)" in text
    assert "## Comparison at a 0.0198-nat budget of validation loss (perplexity x 1.02)" in text
    plain = _results(runs / "d1")["val_loss"]
    target = plain + math.log(1.02)
    assert f"| (b) common | {target:.4f} (d1 {plain:.4f} + 0.0198) |" in text
    reached = _results(cut)["after_cut"]["val_loss"] <= target
    row = next(line for line in text.splitlines() if "| (b) common |" in line)
    assert ("d2-r4" in row) == reached and ("none of 1 run reaches it" in row) == (not reached)
    assert "point budget" not in text  # no run here is judged by accuracy


def test_one_max_drop_for_runs_judged_both_ways_is_refused_before_anything_is_written(runs, tmp_path, capsys):
    cut = runs / "d2-r3"
    assert main(["compress", str(runs / "d2"), "--rank", "3", "--no-progress", "--out", str(cut)]) == 0
    image = tmp_path / "fcn"
    assert main(["train", "--model", "fcn", "--model-arg", "width=8", "--model-arg", "hidden_layers=1", "--dataset",
                 "digits", "--depth", "1", "--epochs", "1", "--no-progress", "--out", str(image)]) == 0
    assert main(["compress", str(image), "--rank", "2", "--no-progress", "--out", str(tmp_path / "fcn-r2")]) == 0
    capsys.readouterr()
    out = tmp_path / "report"
    folders = [str(runs / "d2"), str(cut), str(image), str(tmp_path / "fcn-r2")]
    assert main(["report", *folders, "--max-drop", "0.5", "--out", str(out)]) == 2
    assert "judged both ways" in capsys.readouterr().err and not out.exists()
    assert main(["report", *folders, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Comparison at a 1-point budget" in text and "## Comparison at a 0.0198-nat budget" in text


def test_a_default_accuracy_cut_records_the_same_max_drop_in_config_and_results(runs):
    out = runs / "d2-acc-default"
    assert main(["compress", str(runs / "d2"), "--strategy", "accuracy", "--max-evals", "3", "--no-progress",
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["cut"]["max_drop"] == _results(out)["cut"]["max_drop"] == pytest.approx(math.log(1.02))
