"""The CLI end to end on scikit-learn's digits: train, compress, evaluate, report, demo; and its errors."""

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lorita
from lorita.cli import main

TINY = ["--model", "fcn", "--model-arg", "width=16", "--model-arg", "hidden_layers=2", "--dataset", "digits",
        "--epochs", "1", "--batch-size", "64", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "d2"
    assert main(["train", *TINY, "--depth", "2", "--out", str(out)]) == 0
    return out


def test_train_writes_a_complete_run(trained):
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "model.lorita", "spectrum.json", "results.json"):
        assert (trained / name).is_file(), name
    config = json.loads((trained / "config.json").read_text())
    assert config["compose"]["depth"] == 2 and config["model"]["kwargs"] == {"width": 16, "hidden_layers": 2}
    results = json.loads((trained / "results.json").read_text())
    assert 0 <= results["test_acc"] <= 100 and results["flops"] == 2 * results["macs"]
    # params of the merged model: the original FCN 64-16-16-10 with BatchNorm
    assert results["params"] == (64 * 16 + 16) + 2 * 16 + (16 * 16 + 16) + 2 * 16 + (16 * 10 + 10)
    model = lorita.load(trained / "model.lorita")
    assert any(isinstance(m, lorita.ComposedLinear) for m in model.modules())
    assert len((trained / "metrics.csv").read_text().strip().splitlines()) == 2  # header + 1 epoch
    state = torch.load(trained / "checkpoint.pt", weights_only=True)
    assert "config" in state or any("config" in k for k in state)


def test_compress_evaluate_report(trained, tmp_path, capsys):
    cut = tmp_path / "cut"
    assert main(["compress", str(trained), "--energy", "0.8", "--finetune-epochs", "1", "--no-progress",
                 "--out", str(cut)]) == 0
    results = json.loads((cut / "results.json").read_text())
    assert results["cut"]["kind"] == "energy" and results["cut"]["energy"] == 0.8 and results["ranks"]
    finetuned, cut_scores = results["after_finetune"], results["after_cut"]
    # fine-tuning keeps its best validation epoch, or the cut model itself when no epoch beat it
    assert finetuned["epoch_kept"] in (0, 1) and finetuned["val_acc"] >= cut_scores["val_acc"]
    if finetuned["epoch_kept"] == 0:
        assert finetuned["test_acc"] == cut_scores["test_acc"] and finetuned["val_loss"] == cut_scores["val_loss"]
    assert results["kept"]["params"] == pytest.approx(results["after_cut"]["params"] / results["original"]["params"])
    small = lorita.load(cut / "model.lorita")
    assert any(isinstance(m, lorita.LowRankLinear) for m in small.modules())
    said = capsys.readouterr().out
    assert ("fine-tuning: epoch 1 of 1 kept" in said) == (finetuned["epoch_kept"] == 1)
    assert ("the cut model is kept" in said) == (finetuned["epoch_kept"] == 0)
    assert main(["evaluate", str(cut), "--write"]) == 0
    printed = capsys.readouterr().out
    evaluation = json.loads((cut / "evaluation.json").read_text())
    # the fine-tuned model was saved: evaluating it again reproduces the recorded test accuracy
    assert evaluation["test_acc"] == pytest.approx(results["after_finetune"]["test_acc"])
    assert "test" in printed and "FLOPs" in printed
    assert main(["report", str(trained), str(cut), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "d2" in report and "cut" in report


def test_a_cut_finds_its_source_from_any_folder_through_any_link(trained, tmp_path, monkeypatch, capsys):
    import shutil

    from lorita.runs.config import train_config_of

    home = tmp_path / "exp"
    shutil.copytree(trained, home / "seed0" / "d2")
    other = home / "seed1" / "d2"  # another seed's run of the same name, with another validation split
    shutil.copytree(trained, other)
    config = json.loads((other / "config.json").read_text())
    config["dataset"]["seed"] = 5
    (other / "config.json").write_text(json.dumps(config))
    (tmp_path / "links").symlink_to(home / "seed1")
    monkeypatch.chdir(home / "seed0")
    assert main(["compress", "d2", "--ratio", "0.5", "--no-progress", "--out", str(tmp_path / "links" / "cut")]) == 0
    cut = home / "seed1" / "cut"  # written through the link, cut from seed 0's d2
    assert json.loads((cut / "config.json").read_text())["source"] == str(home / "seed0" / "d2")  # whole
    mine = json.loads((cut / "results.json").read_text())["after_cut"]["val_acc"]
    monkeypatch.chdir(home / "seed1")  # where "d2" names seed 1's run: the cut's own source is still taken
    for name in ("cut", str(tmp_path / "links" / "cut")):
        assert train_config_of(name).dataset.seed == 0
    capsys.readouterr()
    assert main(["evaluate", "cut", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["val_acc"] == pytest.approx(mine)
    # an experiment's cut records its source relative to its own folder: found through a link to it, or as "."
    config = json.loads((cut / "config.json").read_text())
    config["source"] = "d2"
    shutil.copytree(cut, home / "seed0" / "cut", ignore=shutil.ignore_patterns("config.json"))
    (home / "seed0" / "cut" / "config.json").write_text(json.dumps(config))
    (tmp_path / "c0").symlink_to(home / "seed0" / "cut")
    assert train_config_of(tmp_path / "c0").dataset.seed == 0
    monkeypatch.chdir(home / "seed0" / "cut")
    assert train_config_of(".").dataset.seed == 0
    shutil.rmtree(home / "seed0" / "d2")  # gone: a same-named run in the current folder is read with a warning
    monkeypatch.chdir(home / "seed1")
    capsys.readouterr()
    assert train_config_of(home / "seed0" / "cut").dataset.seed == 5
    assert "records its source as a relative path ('d2') that is not beside it" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(cut)]) == 2
    assert f"its source '{home / 'seed0' / 'd2'}', the run it was cut from, is not there" in capsys.readouterr().err


def test_evaluate_write_checks_where_it_writes_before_evaluating(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (tmp_path / "link").symlink_to(run)
    (tmp_path / "plain").mkdir()  # an unmarked folder holding a run's files
    for name in ("model.lorita", "results.json"):
        shutil.copy(run / name, tmp_path / "plain" / name)
    config = json.loads((run / "config.json").read_text())
    (tmp_path / "plain" / "config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                               if not k.startswith("format")}))
    (tmp_path / "plain" / "evaluation.json").write_text('{"mine": true}')
    for folder, message in (("link", "is a symbolic link"), ("plain", "is not a run folder lorita wrote")):
        assert main(["evaluate", str(tmp_path / folder), "--write"]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "plain" / "evaluation.json").read_text() == '{"mine": true}'
    (run / "evaluation.json").mkdir()
    assert main(["evaluate", str(run), "--write"]) == 2
    captured = capsys.readouterr()
    assert "evaluation.json is there and is not a file" in captured.err and "val" not in captured.out  # before
    (run / "evaluation.json").rmdir()
    (run / "evaluation.json").symlink_to(tmp_path / "plain" / "evaluation.json")  # the user's link: kept
    assert main(["evaluate", str(run), "--write"]) == 2
    assert "evaluation.json is there and is not a file" in capsys.readouterr().err
    (run / "evaluation.json").unlink()
    (run / "evaluation.json").write_text("my notes")
    assert main(["evaluate", str(run), "--write"]) == 2
    assert "is not an evaluation --write wrote" in capsys.readouterr().err
    assert (run / "evaluation.json").read_text() == "my notes"
    (run / "evaluation.json").unlink()
    assert main(["evaluate", str(run), "--write"]) == 0 and main(["evaluate", str(run), "--write"]) == 0  # its own


def test_evaluate_write_into_a_folder_it_cannot_write_is_refused_before_evaluating(trained, tmp_path, capsys,
                                                                                    monkeypatch):
    import os
    import shutil

    import lorita.runs

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != run and real(path, mode, **kw))
    monkeypatch.setattr(lorita.runs, "evaluate_run", lambda *a: pytest.fail("evaluated before the check"))
    assert main(["evaluate", str(run), "--write"]) == 2  # as a user without write permission (tests may run as root)
    assert "is not writable by this user" in capsys.readouterr().err and not (run / "evaluation.json").exists()


def test_evaluate_json_writes_a_perplexity_past_a_float_as_null(trained, tmp_path, monkeypatch, capsys):
    import shutil

    import lorita.runs
    from lorita import jsonio

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    figures = {"val_loss": 1e4, "val_ppl": math.inf, "test_loss": 1e4, "test_ppl": math.inf, "params": 3}
    monkeypatch.setattr(lorita.runs, "evaluate_run", lambda _: (dict(figures), None))  # a diverged text model's
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--write"]) == 0

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    expected = {**figures, "val_ppl": None, "test_ppl": None}
    assert json.loads(capsys.readouterr().out, parse_constant=refuse) == expected
    assert jsonio.read(run / "evaluation.json") == expected  # lorita's own reader refused Infinity


@pytest.mark.parametrize("strategy", [["--strategy", "budget", "--params", "0.6"],
                                      ["--strategy", "accuracy", "--max-drop", "50", "--max-evals", "3"],
                                      ["--strategy", "global", "--threshold", "0.2"],
                                      ["--params", "0.6", "--multiple", "4"],
                                      ["--rank", "3"]])
def test_compress_strategies(trained, tmp_path, strategy):
    out = tmp_path / "s"
    assert main(["compress", str(trained), *strategy, "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    if "budget" in strategy or "--params" in strategy:
        assert results["kept"]["params"] <= 0.6
    if "--rank" in strategy:
        assert results["cut"]["kind"] == "rank" and set(results["ranks"].values()) == {3}
    if "--multiple" in strategy:
        assert results["cut"]["multiple"] == 4 and all(r % 4 == 0 for n, r in results["ranks"].items()
                                                       if n not in results["dense_layers"])
    if "accuracy" in strategy:
        # before (validation, test) and at most 3 cuts: the search reuses the measured baseline
        assert results["search"] and results["evaluations"] <= 2 + 3


def test_a_rank_above_every_layers_break_even_says_the_model_is_unchanged(trained, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["compress", str(trained), "--rank", "100000", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["dense_layers"]) == sorted(results["ranks"]) and results["kept"]["params"] == 1
    assert "note: no layer was cut" in capsys.readouterr().err
    assert main(["compress", str(trained), "--rank", "1", "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    assert "no layer was cut" not in capsys.readouterr().err


def test_compress_calibrated_whitened_cut(trained, tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["compress", str(trained), "--energy", "0.9", "--calibrate", "2", "--out", str(out),
                 "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["cut"] == {"kind": "energy", "energy": 0.9, "calibrate": 2, "multiple": 1, "int8": False}
    # whitening is an option of every way to cut: a params budget on the whitened spectra
    assert main(["compress", str(trained), "--params", "0.5", "--calibrate", "2", "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 0
    budget = json.loads((tmp_path / "x" / "results.json").read_text())
    assert budget["cut"]["calibrate"] == 2 and budget["kept"]["params"] <= 0.5


@pytest.mark.slow
def test_demo_runs_and_reports(tmp_path):
    out = tmp_path / "demo"
    # --epochs 2 without --finetune-epochs: the fine-tuning default (2) follows the shorter recipe (1)
    assert main(["demo", "--dataset", "digits", "--epochs", "2", "--width", "16",
                 "--hidden-layers", "1", "--depths", "1", "2", "--points", "4", "--sizes", "0.3", "0.6",
                 "--no-progress", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    columns = results["runs"][0]["columns"]
    assert {"plain + SVD", "LoRITa N=2", "plain + SVD + FT", "LoRITa N=2 + FT"} <= set(columns)
    assert columns["plain + SVD + FT"]["epochs"] == 2 and columns["plain + SVD + FT"]["finetune_epochs"] == 1
    head = results["headline"]
    assert head["total_epochs"] == 2 and head["best_alternative"] is not None  # the plain model always qualifies
    if head["lorita"] is not None:
        assert head["ratio"] == head["lorita"]["params_kept"] / head["best_alternative"]["params_kept"]
    assert head["bar_ratio"] == 0.5 and head["bar_met"] == (head["ratio"] is not None and head["ratio"] <= 0.5)
    assert set(results["depths"]) == {"1", "2"}
    plain = results["depths"]["1"]
    assert plain["views"]["a"] is not None  # the uncompressed model is always within its own budget
    assert any(p["params_kept"] == 1.0 for p in plain["sweep"])
    report = (out / "report.md").read_text()
    assert "view (b)" in report.lower() and "accuracy_vs_params.png" in report
    for png in ("accuracy_vs_params.png", "accuracy_vs_flops.png", "spectra.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_flags_add_the_strongest_alternatives_and_name_the_headline_column(tmp_path, monkeypatch):
    import lorita.runs
    seen = {}

    def capture(spec, out, **kwargs):
        seen["spec"] = spec
        raise SystemExit(0)

    monkeypatch.setattr(lorita.runs, "run_experiment", capture)
    with pytest.raises(SystemExit):
        main(["demo", "--dataset", "digits", "--small-dense", "--calibrate", "16", "--pre-registered",
              "LoRITa N=2 + FT", "--out", str(tmp_path / "d")])
    spec = seen["spec"]
    assert spec.columns.small_dense and spec.columns.calibrate == 16
    assert spec.report.pre_registered == "LoRITa N=2 + FT"
    with pytest.raises(SystemExit):
        main(["demo", "--dataset", "digits", "--out", str(tmp_path / "e")])
    assert not seen["spec"].columns.small_dense and seen["spec"].columns.calibrate == 0  # the defaults, as before
    assert seen["spec"].report.pre_registered is None


@pytest.mark.parametrize("argv,message", [
    (["train", "--model", "resnet99", "--dataset", "digits", "--out", "X"], r"unknown model 'resnet99'"),
    (["train", "--model", "fcn", "--dataset", "imagenet", "--out", "X"], r"unknown dataset"),
    (["train", "--model", "gpt", "--dataset", "fortune", "--out", "X"], r"text datasets \(for 'gpt'\): fortunes"),
    (["train", "--model", "gpt", "--dataset", "digits", "--out", "X"],
     r"'gpt' is a language model.*--dataset fortunes"),
    (["train", "--model", "fcn", "--dataset", "Fortunes", "--steps-per-epoch", "2", "--out", "X"],
     r"'fcn' is not a language model"),
    (["train", "--model", "fcn", "--dataset", "digits", "--model-arg", "width", "--out", "X"], r"KEY=VALUE"),
    (["compress", "RUN", "--out", "Y"], r"say how to cut"),
    (["demo", "--dataset", "digits", "--pre-registered", "LoRITa N=5", "--out", "X"],
     r"pre_registered must be one of this experiment's LoRITa columns \(LoRITa N=2, LoRITa N=2 \+ FT, LoRITa N=3, "),
])
def test_bad_input_gives_a_clear_error(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "RUN").mkdir()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    import re
    assert re.search(message, err, re.IGNORECASE), err


def test_existing_output_is_refused_unless_overwrite(trained, capsys):
    assert main(["train", *TINY, "--depth", "1", "--out", str(trained)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "pass --overwrite" in err
    assert (trained / "model.lorita").is_file()  # nothing lost


def test_overwrite_refuses_a_folder_lorita_did_not_write(tmp_path, capsys):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.tex").write_text("important")
    assert main(["train", *TINY, "--out", str(precious), "--overwrite"]) == 2
    assert "not a lorita run folder" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "important"


def test_help_shows_every_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "factors per layer (1 = plain training) (default: 3)" in text
    assert "(default: auto: the paper's where a normalisation layer follows" in text
    assert "clip the gradient norm to this (default: no)" in text and "(default: None)" not in text
    assert "--seed SEED seed of the split, the init and the batch order (default: 0)" in text
    assert "(default: no) (default" not in text and "(default: 20) (default" not in text  # never said twice


def test_dotted_set_names_only_train_and_model_kwargs(tmp_path, capsys):
    assert main(["experiment", "experiments/fcn_fashion_mnist.json", "--reduced", "--set", "spec.width=3",
                 "--out", str(tmp_path / "x")]) == 2
    assert "a dotted name is train.FIELD or model_kwargs.KEY" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("given, message", [
    (["--set", "seeds=[0]", "--seeds", "1"], "--set seeds and --seeds both given: give one of them"),
    (["--set", 'init="default"', "--init", "balanced"], "--set init and --init both given"),
    (["--set", "reduced=true"], "an experiment config has no field 'reduced'; for the reduced recipe pass --reduced"),
    (["--set", "path=1"], "an experiment config has no field 'path'"),
    (["--set", "train_override={}"], "no field 'train_override'"),
    (["--set", "model=null"], "--set model=null would leave the config's model as it is")])
def test_set_of_a_field_a_flag_also_sets_or_of_no_field_is_refused(tmp_path, capsys, given, message):
    assert main(["experiment", "experiments/fcn_fashion_mnist.json", "--reduced", *given, "--dry-run",
                 "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err


def test_set_of_a_field_a_flag_also_sets_is_taken_alone(tmp_path, capsys):
    assert main(["experiment", "experiments/fcn_fashion_mnist.json", "--reduced", "--set", "seeds=[3]",
                 "--set", 'init="default"', "--dry-run", "--out", str(tmp_path / "x")]) == 0
    plan = capsys.readouterr().out
    assert "seeds 3;" in plan and not (tmp_path / "x").exists()


def test_experiment_resume_refuses_a_leftover_that_is_not_loritas_by_message(tmp_path, capsys):
    leftover = tmp_path / "x.partial"
    leftover.mkdir()
    (leftover / "notes.txt").write_text("mine")
    assert main(["experiment", "experiments/fcn_fashion_mnist.json", "--reduced", "--out", str(tmp_path / "x"),
                 "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "x.partial is not a lorita run folder" in err and "Traceback" not in err
    assert (leftover / "notes.txt").read_text() == "mine" and not (tmp_path / "x.resume").exists()
    assert main(["experiment", "experiments/fcn_fashion_mnist.json", "--reduced", "--out", str(tmp_path / "x"),
                 "--resume", "--dry-run"]) == 2
    assert "--dry-run does not take up a killed run" in capsys.readouterr().err


@pytest.mark.parametrize("out", [".", "/"])  # "": tests/test_hostile_cli.py
def test_experiment_resume_of_no_new_folder_is_refused_before_anything(out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "experiments" / "fcn_fashion_mnist.json"
    assert main(["experiment", str(config), "--reduced", "--out", out, "--resume", "--overwrite",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "names no new folder" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_experiment_resume_checks_its_inputs_before_setting_a_killed_run_aside(tmp_path, capsys):
    killed = tmp_path / "e.partial"  # a killed experiment's staging folder, also named as a folder to reuse
    killed.mkdir()
    (killed / "config.json").write_text('{"format": "lorita.run", "format_version": 1, "command": "experiment"}')
    assert main(["experiment", "experiments/fcn_fashion_mnist.json", "--reduced", "--out", str(tmp_path / "e"),
                 "--resume", "--no-progress", "--set", f"reuse=[\"{killed}\"]"]) == 2
    assert "would replace, hold or sit inside an experiment whose trainings it reuses" in capsys.readouterr().err
    assert killed.is_dir() and not (tmp_path / "e.resume").exists()  # nothing renamed


def test_unknown_flag_and_help():
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--bogus"])
    assert exit_info.value.code == 2
    for command in ("train", "compress", "evaluate", "report", "demo", "models", "datasets"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0


@pytest.mark.slow
def test_python_dash_m_and_listing_commands():
    out = subprocess.run([sys.executable, "-m", "lorita", "models"], capture_output=True, text=True, check=True).stdout
    assert "resnet20" in out and "vit" in out
    out = subprocess.run([sys.executable, "-m", "lorita", "datasets"], capture_output=True, text=True, check=True).stdout
    assert "digits" in out and "available" in out


class _ClosedPipe:
    """A stdout whose reader has gone away (``lorita models | head -1`` once head has exited)."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


def test_a_closed_pipe_ends_the_command_quietly(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["models"]) == 141  # as a shell reports a command ended by SIGPIPE
    assert capsys.readouterr().err == ""  # no "error: Broken pipe"


def test_an_unexpected_error_is_one_line_and_the_traceback_is_behind_verbose(monkeypatch, capsys):
    import lorita.cli.info_cmd as info

    def broken(args):
        raise struct.error("unpack requires a buffer of 8 bytes")

    monkeypatch.setattr(info, "run_models", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lorita models: internal error: error: unpack requires a buffer of 8 bytes (a bug in")
    assert "Traceback" not in err and "-v" in err
    with pytest.raises(struct.error):
        main(["-v", "models"])


def test_evaluate_a_language_model_run_prints_perplexity(tmp_path, capsys):
    texts = tmp_path / "texts"
    texts.mkdir()
    entries = [f"entry {i}: the quick brown fox jumps over the lazy dog {i % 7}" for i in range(60)]
    (texts / "a.txt").write_text("\n%\n".join(entries) + "\n", encoding="utf-8")
    run = tmp_path / "gpt"
    assert main(["train", "--model", "gpt", "--dataset", "text", "--data-dir", str(texts), "--model-arg", "dim=16",
                 "--model-arg", "depth=1", "--model-arg", "heads=2", "--model-arg", "context=16", "--depth", "1",
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--no-progress", "--out",
                 str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["val_ppl"] == pytest.approx(math.exp(figures["val_loss"]))
    assert figures["test_ppl"] == pytest.approx(math.exp(figures["test_loss"]))
    assert main(["evaluate", str(run)]) == 0
    assert f"(perplexity {figures['val_ppl']:.3g})" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--text", str(texts)]) == 2  # --text is for a compressed pretrained LM
    assert "leave --text out" in capsys.readouterr().err


def test_evaluate_of_a_mistyped_folder_says_it_does_not_exist(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "typo"), "--text", "fortunes"]) == 2
    assert "does not exist or is not a folder" in capsys.readouterr().err


def test_a_diverged_language_model_has_infinite_perplexity():
    from lorita.runs.evaluate import _exp
    assert _exp(2.0) == pytest.approx(math.exp(2.0)) and _exp(1e4) == math.inf


def test_given_flags_counts_what_is_written_not_what_differs_from_a_default():
    from lorita.cli import build_parser, given_flags

    parser = build_parser()
    argv = ["-v", "train", "--out", "r", "--depth", "3", "--ep", "4", "--model-arg", "width=8", "--no-augment",
            "--exclude"]
    assert given_flags(parser, argv, "train") == {"out", "depth", "epochs", "model_arg", "augment", "exclude"}
    assert given_flags(parser, ["train", "--out", "r"], "train") == {"out"}
    assert given_flags(parser, ["models"], "models") == set()


def test_compress_of_a_model_file_points_to_the_python_route(tmp_path, capsys):
    lorita.save(torch.nn.Linear(4, 2), tmp_path / "net.lorita")
    assert main(["compress", str(tmp_path / "net.lorita"), "--ratio", "0.5", "--out", str(tmp_path / "small")]) == 2
    assert "is a model file; lorita compress cuts a run folder" in capsys.readouterr().err
    assert not (tmp_path / "small").exists()
