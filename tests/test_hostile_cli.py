"""Hostile and careless use of the ``lorita`` command: nothing named in a file is run, nothing a
user wrote is deleted or written through, a failed or killed command leaves the previous output
as it was and no half-made folder, and bad input gets a message (exit status 2), not a traceback.
See docs/SECURITY.md.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lorita
from lorita.cli import main
from lorita.runs.folder import foreign_entries, is_marked, mark, staging_path, write_json
from lorita.runs.lock import OutputLock, lock_path

TINY = ["--model", "fcn", "--model-arg", "width=8", "--model-arg", "hidden_layers=1", "--dataset", "digits",
        "--epochs", "1", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished training run, copied by each test that damages it."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", *TINY, "--depth", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_error(argv, capsys, status: int = 2) -> str:
    capsys.readouterr()
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    return err


# ----------------------------------------------------------------------------
# files that name code


def test_a_run_folder_with_an_evil_model_file_runs_nothing(run, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    desc = {"format": "lorita", "version": 1, "layers": {},
            "architecture": {"factory": "subprocess:run", "kwargs": {"args": ["touch", str(marker)]}}}
    save_file({"w": torch.zeros(2)}, str(run / "model.lorita"), metadata={"lorita": json.dumps(desc)})
    assert "does not import or call code named in a file" in cli_error(["evaluate", str(run)], capsys)
    assert "does not import or call code named in a file" in cli_error(
        ["compress", str(run), "--energy", "0.9", "--out", str(tmp_path / "cut")], capsys)
    assert not marker.exists()
    assert not (tmp_path / "cut").exists() and not staging_path(tmp_path / "cut").exists()


# ----------------------------------------------------------------------------
# --overwrite never costs a user their work


def test_a_failed_overwrite_keeps_the_old_run(run, capsys):
    before = snapshot(run)
    assert "depth must be an integer" in cli_error(["train", *TINY, "--depth", "0", "--out", str(run),
                                                    "--overwrite"], capsys)
    assert snapshot(run) == before
    assert not staging_path(run).exists()


def test_an_interrupted_overwrite_keeps_the_old_output(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cut"
    assert main(["compress", str(run), "--energy", "0.9", "--out", str(out), "--no-progress"]) == 0
    before = snapshot(out)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C while the new model was being written

    monkeypatch.setattr("lorita.runs.compress.save", killed)
    assert main(["compress", str(run), "--energy", "0.5", "--out", str(out), "--overwrite", "--no-progress"]) == 130
    assert snapshot(out) == before
    assert not staging_path(out).exists()


def test_overwrite_replaces_a_run_when_the_new_one_is_complete(run, tmp_path):
    out = tmp_path / "cut"
    assert main(["compress", str(run), "--energy", "0.9", "--out", str(out), "--no-progress"]) == 0
    assert main(["compress", str(run), "--energy", "0.5", "--out", str(out), "--overwrite", "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["cut"]["energy"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "run"]  # no staging or replaced folder left


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_compress_refuses_to_write_over_its_source(run, capsys, where):
    out = {"same": run, "inside": run / "cut", "parent": run.parent}[where]
    before = snapshot(run)
    err = cli_error(["compress", str(run), "--energy", "0.9", "--out", str(out), "--overwrite"], capsys)
    assert "would replace, hold or sit inside the run it compresses" in err
    assert snapshot(run) == before


def test_a_user_folder_that_looks_like_a_run_is_never_deleted(tmp_path, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.json").write_text('{"command": "npm start"}')
    (proj / "thesis.tex").write_text("years of work")
    err = cli_error(["train", *TINY, "--out", str(proj), "--overwrite"], capsys)
    assert "not a lorita run folder" in err and "lorita only ever deletes what it wrote" in err
    assert (proj / "thesis.tex").read_text() == "years of work"


def test_a_run_folder_holding_a_user_file_is_not_replaced(run, capsys):
    (run / "notes.txt").write_text("my notes")
    err = cli_error(["train", *TINY, "--out", str(run), "--overwrite"], capsys)
    assert "holds files lorita did not write" in err and "notes.txt" in err
    assert (run / "notes.txt").read_text() == "my notes" and (run / "model.lorita").is_file()


def test_a_run_folder_holding_a_link_is_not_replaced(run, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (run / "extra.png").symlink_to(outside)
    err = cli_error(["train", *TINY, "--out", str(run), "--overwrite"], capsys)
    assert "a symbolic link" in err
    assert outside.read_text() == "keep"


def test_a_user_folder_named_like_a_copy_in_progress_is_not_deleted(run, capsys):
    mine = run / ".thesis.copying"  # lorita builds such folders in experiments only, never in a training run
    mine.mkdir()
    (mine / "results.json").write_text("chapter 3")
    err = cli_error(["train", *TINY, "--out", str(run), "--overwrite"], capsys)
    assert "holds files lorita did not write" in err and ".thesis.copying" in err
    assert (mine / "results.json").read_text() == "chapter 3"


def test_a_user_file_named_like_a_lock_is_neither_deleted_nor_overwritten(run, tmp_path, capsys):
    inside = run / ".notes.lorita-lock"
    inside.write_text("my notes")
    err = cli_error(["train", *TINY, "--out", str(run), "--overwrite"], capsys)
    assert "named like a lock file, but not one lorita wrote" in err
    assert inside.read_text() == "my notes"
    beside = tmp_path / ".new.lorita-lock"  # where the lock of --out new would go
    beside.write_text("my notes too")
    err = cli_error(["train", *TINY, "--out", str(tmp_path / "new")], capsys)
    assert "holds something lorita did not write" in err
    assert beside.read_text() == "my notes too" and not (tmp_path / "new").exists()


def test_a_folder_another_command_is_writing_in_is_not_replaced(run, capsys):
    inner = OutputLock(run / "sub")  # a command writing --out run/sub, still running
    inner.acquire()
    try:
        err = cli_error(["train", *TINY, "--out", str(run), "--overwrite"], capsys)
        assert "is writing in this folder; wait until it ends" in err
        assert lock_path(run / "sub").is_file()
    finally:
        inner.release()


@pytest.mark.parametrize("name", ["x.partial", "x.resume", ".x.copying", ".x.replaced-12", ".x.lorita-lock"])
def test_names_lorita_keeps_for_itself_are_refused_as_outputs(name, tmp_path, capsys):
    err = cli_error(["train", *TINY, "--out", str(tmp_path / name)], capsys)
    assert "lorita keeps names like" in err
    assert list(tmp_path.iterdir()) == []


def test_foreign_entries_looks_into_nested_runs(run, tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    write_json(outer / "config.json", mark({"command": "experiment"}))  # lorita copies trainings into these
    shutil.copytree(run, outer / "depth1")
    assert foreign_entries(outer) == []
    (outer / "depth1" / "mine.py").write_text("x = 1")
    (outer / "plain-folder").mkdir()
    found = foreign_entries(outer)
    assert len(found) == 2 and found[0].endswith("depth1/mine.py")
    assert found[1].endswith("plain-folder/ (not a lorita run folder)")
    (outer / ".depth2.copying").mkdir()  # a copy killed before its config.json was whole: lorita's
    (outer / ".depth2.copying" / "config.json").write_text('{"form')
    (outer / "empty").mkdir()  # empty, but not a name lorita writes
    (outer / ".copying").mkdir()  # nor this
    (outer / ".depth4.copying" / "sub").mkdir(parents=True)  # a copy's unmarked folder holds no folder
    (outer / ".depth3.copying").symlink_to(tmp_path / "empty-target", target_is_directory=True)
    (tmp_path / "empty-target").mkdir()
    found = foreign_entries(outer)
    assert len(found) == 6 and not any(".depth2.copying" in f for f in found)
    assert found[0].endswith(".copying/ (not a lorita run folder)")
    assert found[1].endswith(".depth3.copying (a symbolic link)")
    assert found[2].endswith(".depth4.copying/ (not a lorita run folder)")
    assert found[4].endswith("empty/ (not a lorita run folder)")
    write_json(outer / "config.json", mark({"command": "train"}))  # a training run: lorita copies nothing into it
    assert any(f.endswith(".depth2.copying/ (not a lorita run folder)") for f in foreign_entries(outer))


def test_report_has_an_output_folder_like_every_command(run, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "report.md").write_text("my own report")
    assert "not a lorita run folder" in cli_error(["report", str(run), "--out", str(notes), "--overwrite"], capsys)
    assert (notes / "report.md").read_text() == "my own report"
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert "already exists" in cli_error(["report", str(run), "--out", str(out)], capsys)
    assert main(["report", str(run), "--out", str(out), "--overwrite"]) == 0
    assert is_marked(out) and (out / "report.md").is_file()


@pytest.mark.slow
def test_demo_overwrites_its_own_output(tmp_path):
    out = tmp_path / "demo"
    argv = ["demo", "--dataset", "digits", "--epochs", "1", "--finetune-epochs", "0", "--width", "8",
            "--hidden-layers", "1", "--depths", "1", "2", "--points", "3", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert main([*argv, "--overwrite"]) == 0
    assert is_marked(out) and is_marked(out / "depth2") and foreign_entries(out) == []


# ----------------------------------------------------------------------------
# resume


def killed_copy(run: Path) -> Path:
    """What ``kill -9`` after the first epoch leaves: RUN.partial with config, metrics and checkpoint."""
    partial = staging_path(run.with_name("killed"))
    shutil.copytree(run, partial)
    for name in ("model.lorita", "results.json", "spectrum.json"):
        (partial / name).unlink()
    return partial


def test_a_rejected_resume_changes_nothing(run, capsys):
    partial = killed_copy(run)
    before = snapshot(partial)
    err = cli_error(["train", *TINY, "--depth", "2", "--epochs", "2", "--lr", "0.5", "--resume", "--out",
                     str(partial.with_name("killed"))], capsys)
    assert "--lr: the run has 0.05, the flags give 0.5" in err and "only --epochs may change" in err
    assert snapshot(partial) == before


def test_a_resume_with_other_flags_names_what_differs(run, capsys):
    partial = killed_copy(run)
    before = snapshot(partial)
    at = TINY.index("hidden_layers=1")
    flags = TINY[:at - 1] + TINY[at + 1:]  # the run's --model-arg hidden_layers=1 left out
    err = cli_error(["train", *flags, "--depth", "2", "--epochs", "2", "--resume", "--out",
                     str(partial.with_name("killed"))], capsys)
    assert ("the flags differ from the run's config.json (--model-arg: the run has ['width=8', 'hidden_layers=1'], "
            "the flags give ['width=8'])") in err
    assert snapshot(partial) == before


def test_resume_continues_a_killed_run_and_cleans_up(run):
    partial = killed_copy(run)
    (partial / ".checkpoint.pt.0a1b2c3d.tmp").write_bytes(b"half a checkpoint")  # left by a kill during a save
    out = partial.with_name("killed")
    assert main(["train", *TINY, "--depth", "2", "--epochs", "2", "--resume", "--out", str(out)]) == 0
    assert not partial.exists() and foreign_entries(out) == []
    assert not list(out.glob(".*.tmp"))
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


def _weights(out: Path) -> dict:
    return lorita.load(out / "model.lorita").state_dict()


def test_resume_takes_the_runs_own_flags_and_ends_as_with_them_written_out(run):
    by_flags, by_config = killed_copy(run), staging_path(run.with_name("again"))
    shutil.copytree(by_flags, by_config)
    killed = str(run.with_name("killed"))
    assert main(["train", *TINY, "--depth", "2", "--epochs", "2", "--resume", "--out", killed]) == 0
    assert main(["train", "--resume", "--epochs", "2", "--no-progress", "--out", str(run.with_name("again"))]) == 0
    first, second = _weights(run.with_name("killed")), _weights(run.with_name("again"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    config = json.loads((run.with_name("again") / "config.json").read_text())
    assert config["train"]["epochs"] == 2 and config["compose"]["depth"] == 2
    assert config["model"]["kwargs"] == {"width": 8, "hidden_layers": 1}


def test_resume_of_a_killed_run_needs_no_flag_at_all(run):
    partial = killed_copy(run)  # killed after its last epoch, before its model was written
    assert main(["train", "--resume", "--no-progress", "--out", str(run.with_name("killed"))]) == 0
    assert not partial.exists() and (run.with_name("killed") / "model.lorita").is_file()


def test_resume_of_a_finished_run_asks_for_more_epochs_and_of_nothing_says_so(run, tmp_path, capsys):
    before = snapshot(run)
    err = cli_error(["train", "--resume", "--no-progress", "--out", str(run)], capsys)
    assert "has finished all its 1 epochs; give --epochs N (more than 1)" in err
    assert snapshot(run) == before and not staging_path(run).exists()
    err = cli_error(["train", "--resume", "--no-progress", "--out", str(tmp_path / "nothing")], capsys)
    assert "there is no run to continue at" in err and "start it without --resume" in err
    assert not (tmp_path / "nothing").exists() and not staging_path(tmp_path / "nothing").exists()


def test_resume_with_one_flag_that_differs_still_names_it(run, capsys):
    partial = killed_copy(run)
    before = snapshot(partial)
    err = cli_error(["train", "--resume", "--depth", "3", "--no-progress", "--out", str(run.with_name("killed"))],
                    capsys)
    assert "the flags differ from the run's config.json (--depth: the run has 2, the flags give 3)" in err
    assert "leave them out" in err
    assert snapshot(partial) == before


@pytest.mark.parametrize("flags,message", [
    (["--from", "RUN"], "--from: the run has None, the flags give"),
    (["--model", "resnet20"], "--model: the run has 'fcn', the flags give 'resnet20'"),
    (["--dataset", "Digits", "--model-arg", "hidden_layers=1", "--model-arg", "width=8", "--lr", "0.9"],
     "--lr: the run has 0.05, the flags give 0.9)"),
])
def test_resume_compares_the_flags_given_before_acting_on_any(run, capsys, flags, message):
    partial = killed_copy(run)
    before = snapshot(partial)
    err = cli_error(["train", "--resume", *[str(run) if f == "RUN" else f for f in flags], "--no-progress", "--out",
                     str(run.with_name("killed"))], capsys)
    assert message in err and "only --epochs may change" in err
    assert snapshot(partial) == before


def test_resume_of_what_is_no_training_says_so(run, tmp_path, capsys):
    cut = tmp_path / "cut"
    assert main(["compress", str(run), "--energy", "0.9", "--no-progress", "--out", str(cut)]) == 0
    err = cli_error(["train", "--resume", "--no-progress", "--out", str(cut)], capsys)
    assert f"{cut} holds no checkpoint.pt of a 'lorita train' run" in err


def test_resume_of_a_run_continued_from_a_relative_path_works_from_anywhere(run, tmp_path, monkeypatch):
    monkeypatch.chdir(run.parent)
    assert main(["train", "--from", run.name, "--depth", "2", "--epochs", "1", "--batch-size", "256", "--no-progress",
                 "--out", "continued"]) == 0
    monkeypatch.chdir(tmp_path.parent)  # the relative --from no longer names it: not needed, the checkpoint holds all
    out = run.parent / "continued"
    assert main(["train", "--resume", "--epochs", "2", "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["source"] == str(Path(run.name) / "model.lorita") and config["train"]["epochs"] == 2
    monkeypatch.chdir(run.parent)  # the same model written another way: accepted, and recorded as the run has it
    assert main(["train", "--resume", "--from", str(run.resolve()), "--epochs", "3", "--no-progress", "--out",
                 "continued"]) == 0
    assert json.loads((out / "config.json").read_text())["source"] == config["source"]


def test_resume_does_not_check_the_model_it_no_longer_reads(run, tmp_path, monkeypatch):
    out = tmp_path / "elsewhere" / run.name
    out.parent.mkdir()
    monkeypatch.chdir(run.parent)
    assert main(["train", "--from", run.name, "--depth", "2", "--epochs", "1", "--batch-size", "256", "--no-progress",
                 "--out", str(out)]) == 0
    monkeypatch.chdir(out.parent)  # the relative --from now names the output itself: it is not read, no refusal
    assert main(["train", "--resume", "--epochs", "2", "--no-progress", "--out", run.name]) == 0
    assert json.loads((out / "results.json").read_text())["epochs"] == 2


def test_a_run_records_its_data_folder_whole_so_a_resume_from_elsewhere_reads_the_same_data(tmp_path, monkeypatch):
    from test_data import make_idx_folder
    make_idx_folder(tmp_path / "project" / "data", gz=False, n_train=40, n_test=10)
    make_idx_folder(tmp_path / "data", gz=False, n_train=80, n_test=10)  # where "data" points from the other folder
    monkeypatch.chdir(tmp_path / "project")
    assert main(["train", "--model", "fcn", "--model-arg", "width=8", "--model-arg", "hidden_layers=1", "--dataset",
                 "mnist", "--depth", "2", "--batch-size", "16", "--no-progress", "--data-dir", "data", "--epochs", "1",
                 "--out", "run"]) == 0
    out = tmp_path / "project" / "run"
    assert json.loads((out / "config.json").read_text())["dataset"]["data_dir"] == str(tmp_path / "project" / "data")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", "--epochs", "2", "--no-progress", "--out", "project/run"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["resumed_after_epoch"] == 1 and results["steps_per_epoch"] == 3  # 36 training images, not 72


def test_a_run_that_recorded_its_data_folder_relative_says_where_it_reads_it(tmp_path, monkeypatch, capsys):
    from test_data import make_idx_folder
    make_idx_folder(tmp_path / "data", gz=False, n_train=40, n_test=10)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "fcn", "--model-arg", "width=8", "--model-arg", "hidden_layers=1", "--dataset",
                 "mnist", "--depth", "2", "--batch-size", "16", "--no-progress", "--data-dir", "data", "--epochs", "1",
                 "--out", "run"]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["dataset"]["data_dir"] = "data"  # as lorita recorded it before it kept the folder whole
    write_json(tmp_path / "run" / "config.json", config)
    capsys.readouterr()
    assert main(["train", "--resume", "--epochs", "2", "--no-progress", "--out", "run"]) == 0
    err = capsys.readouterr().err
    assert "records its data folder as a relative path ('data'), read from the current folder: " \
           f"{tmp_path / 'data'}" in err
    assert main(["evaluate", "run"]) == 0
    assert "records its data folder as a relative path ('data')" in capsys.readouterr().err


def test_a_resume_takes_a_data_dir_that_reads_the_same_files_and_refuses_one_that_does_not(tmp_path, monkeypatch,
                                                                                           capsys):
    import dataclasses
    from test_data import make_idx_folder
    from lorita.data import datasets
    default = make_idx_folder(tmp_path / "share" / "fashion-mnist", gz=False, n_train=40, n_test=10)
    make_idx_folder(tmp_path / "other", gz=False, n_train=40, n_test=10)
    spec = datasets._REGISTRY["fashion-mnist"]
    monkeypatch.setitem(datasets._REGISTRY, "fashion-mnist", dataclasses.replace(spec, default_dir=default))
    out = tmp_path / "run"
    assert main(["train", "--model", "fcn", "--model-arg", "width=8", "--model-arg", "hidden_layers=1", "--depth", "2",
                 "--batch-size", "16", "--no-progress", "--epochs", "1", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["dataset"]["data_dir"] is None  # the default folder
    for same in (default, default.parent):  # the folder itself, and one the readers find it in
        err = cli_error(["train", "--resume", "--epochs", "1", "--data-dir", str(same), "--out", str(out)], capsys)
        assert "has finished all its 1 epochs" in err, err  # past the flags check: accepted
    err = cli_error(["train", "--resume", "--epochs", "2", "--data-dir", str(tmp_path / "other"), "--out", str(out)],
                    capsys)
    assert "--data-dir: the run has None" in err and json.loads((out / "results.json").read_text())["epochs"] == 1
    assert main(["train", "--resume", "--epochs", "2", "--data-dir", str(default.parent), "--no-progress", "--out",
                 str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"]["data_dir"] is None and json.loads((out / "results.json").read_text())["epochs"] == 2


def test_resume_of_a_continued_run_takes_the_model_it_continued(run, tmp_path):
    out = tmp_path / "continued"
    assert main(["train", "--from", str(run), "--depth", "2", "--epochs", "1", "--batch-size", "256",
                 "--no-progress", "--out", str(out)]) == 0
    assert main(["train", "--resume", "--epochs", "2", "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["source"] == str(run / "model.lorita") and config["train"]["epochs"] == 2


@pytest.mark.parametrize("name", [".thesis.docx.deadbeef.tmp", "notes.txt"])
def test_a_resume_never_deletes_or_carries_a_user_file(run, capsys, name):
    partial = killed_copy(run)
    (partial / name).write_text("mine")
    err = cli_error(["train", *TINY, "--depth", "2", "--epochs", "2", "--resume", "--out",
                     str(partial.with_name("killed"))], capsys)
    assert "holds files lorita did not write" in err and name in err
    assert (partial / name).read_text() == "mine" and not partial.with_name("killed").exists()


def test_resume_never_writes_through_a_planted_link(run, tmp_path):
    partial = killed_copy(run)
    outside = tmp_path / "outside.csv"
    outside.write_text("not yours")
    (partial / "metrics.csv").unlink()
    (partial / "metrics.csv").symlink_to(outside)
    main(["train", *TINY, "--depth", "2", "--epochs", "2", "--resume", "--out", str(partial.with_name("killed"))])
    assert outside.read_text() == "not yours"


# ----------------------------------------------------------------------------
# failed commands leave nothing behind, and say why


@pytest.mark.parametrize("argv,message", [
    (["--energy", "1.5"], r"energy must be a number in \(0, 1\]"),
    (["--energy", "nan"], r"energy must be a number in \(0, 1\]"),
    (["--threshold", "-0.1"], r"threshold must be a number in \[0, 1\]"),
    (["--strategy", "budget"], r"exactly one of params or flops"),
    (["--strategy", "global"], r"strategy 'global' needs threshold"),
    (["--strategy", "energy", "--params", "0.3"], r"--params do\(es\) not apply to --strategy energy"),
    (["--energy", "0.9", "--max-drop", "2"], r"--max-drop go\(es\) with --strategy accuracy, not energy"),
    (["--strategy", "uniform", "--rank", "4"],
     r"--rank do\(es\) not apply to --strategy uniform.*leave --strategy out"),
    (["--strategy", "accuracy", "--max-evals", "0"], r"max_evals must be an integer >= 1"),
    (["--strategy", "accuracy", "--max-drop", "-1"], r"max_drop must be a finite number >= 0"),
    (["--energy", "0.9", "--finetune-epochs", "-1"], r"finetune_epochs \(--finetune-epochs\) must be an integer"),
    (["--energy", "0.9", "--finetune-epochs", "200000"],
     r"finetune_epochs \(--finetune-epochs\) must be an integer from 0 to 100000, got 200000"),
    (["--energy", "0.9", "--finetune-lr", "0"], r"finetune_lr must be a finite number > 0"),
    (["--energy", "0.9", "--calibrate", "1000000000000000000"],
     r"calibrate=1000000000000000000, but the training data gives \d+ batches of 256; calibrate on at most"),
    (["--energy", "0.9", "--finetune-epochs", "1", "--finetune-lr", "1e300"],
     r"finetune_lr must be a finite number > 0 and <= 1e\+06, got 1e\+300"),
    ([], r"say how to cut"),
])
def test_bad_compress_options_fail_before_any_work(run, tmp_path, capsys, monkeypatch, argv, message):
    import re

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr("lorita.runs.compress.load", never)
    out = tmp_path / "cut"
    err = cli_error(["compress", str(run), *argv, "--out", str(out)], capsys)
    assert re.search(message, err), err
    assert not out.exists() and not staging_path(out).exists()


def test_mutually_exclusive_cuts_are_refused(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", str(run), "--energy", "0.9", "--ratio", "0.5", "--out", str(tmp_path / "cut")])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--exclude", "haed"], r"unknown module 'haed'. Did you mean head"),
    (["--batch-size", "1"], r"BatchNorm layers, which need at least 2 per batch"),
    (["--depth", "0"], r"depth must be an integer from 1 to 64"),
    (["--depth", "65"], r"depth must be an integer from 1 to 64 \(factors per layer; a lorita model file holds"),
    (["--depth", "1000000"], r"depth must be an integer from 1 to 64"),
    (["--model-arg", "num_classes=3"], r"model 'fcn' takes num_classes from the data; leave it out"),
    (["--data-dir", "/nonexistent"], r"dataset 'digits' is bundled with scikit-learn and reads no files"),
    (["--steps-per-epoch", "3"], r"steps_per_epoch \(--steps-per-epoch\) sets the batches of a text epoch"),
    (["--shard"], r"shard=True \(--shard\) splits the model over the processes of a torchrun launch"),
    (["--seed", "18446744073709551616"], r"seed must be an integer from 0 to 2\^64 - 1"),
    (["--device", "meta"], r"device 'meta' holds no values, so nothing can be trained on it"),
    (["--device", "mps"], r"device 'mps' cannot be used here \(.*MPS.*\); use 'auto' or 'cpu'"),
    (["--device", "xla"], r"device 'xla' cannot be used here \(.*XLA.*\); use 'auto' or 'cpu'"),
    (["--lr", "1e300"], r"lr must be a finite number > 0 and <= 1e\+06, got 1e\+300"),
    (["--lr", "1e39"], r"lr must be a finite number > 0 and <= 1e\+06, got 1e\+39"),
    (["--weight-decay", "1e300"], r"weight_decay must be a finite number >= 0 and <= 1e\+06"),
    (["--model-arg", "width=1048576", "--model-arg", "hidden_layers=2"], r"an FCN hidden Linear would hold 1048576 x"),
    (["--val-fraction", "0.99999"], r"leaves no training images|val_fraction"),
    (["--val-fraction", "0.999"], r"the training set holds 1 example\(s\), but the model has BatchNorm layers"),
    (["--lr", "-1"], r"lr must be a finite number > 0"),
])
def test_bad_train_options_leave_no_folder(tmp_path, capsys, argv, message):
    import re
    out = tmp_path / "run"
    err = cli_error(["train", *TINY, *argv, "--out", str(out)], capsys)
    assert re.search(message, err), err
    assert not out.exists() and not staging_path(out).exists()


def test_a_full_disk_is_a_message_and_keeps_nothing_half_written(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "model.lorita")

    monkeypatch.setattr("lorita.runs.train.lorita.save", full)
    out = tmp_path / "run"
    err = cli_error(["train", *TINY, "--out", str(out)], capsys, status=1)
    assert "No space left on device" in err
    assert not out.exists()


@pytest.mark.slow
def test_a_real_full_disk(tmp_path, capsys):
    """On a 200 KiB tmpfs (where this machine lets us mount one): the error, and the folder as it was."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = mount / "run"
        err = cli_error(["train", *TINY, "--model-arg", "width=256", "--out", str(out)], capsys, status=1)
        assert "No space left on device" in err
        assert not out.exists() and sorted(p.name for p in mount.iterdir()) in ([], ["run.partial"])
        if (mount / "run.partial").exists():  # kept only when a checkpoint made it resumable
            assert (mount / "run.partial" / "checkpoint.pt").is_file()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_missing_extra_fails_within_seconds(tmp_path, capsys, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    out = tmp_path / "demo"
    err = cli_error(["demo", "--dataset", "digits", "--out", str(out)], capsys)
    assert "pip install -e '.[cli]'" in err and "matplotlib (plots)" in err
    assert not out.exists()


def test_files_get_the_usual_permissions(run):
    old = os.umask(0o022)
    os.umask(old)
    assert old == 0o022 or pytest.skip("this test assumes umask 022")
    assert {oct(p.stat().st_mode & 0o777) for p in run.iterdir()} == {"0o644"}


def test_a_run_whose_dataset_is_unknown_names_its_config(run, tmp_path, capsys):
    config = json.loads((run / "config.json").read_text())
    config["dataset"]["name"] = "imagenet"
    (run / "config.json").write_text(json.dumps(config))
    err = cli_error(["evaluate", str(run)], capsys)
    assert "its training config.json names dataset 'imagenet'" in err and "unknown dataset" in err


@pytest.mark.slow
def test_non_utf8_run_paths(tmp_path):
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff"))
    code = ("import sys; from lorita.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C.UTF-8"}

    def lorita_cli(*argv):
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, env=env)

    done = lorita_cli("train", *TINY, "--out", os.fsencode(folder))
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    cut = Path(os.fsdecode(bytes(tmp_path) + b"/cut-\xfe"))
    for argv in (["evaluate", os.fsencode(folder)],
                 ["compress", os.fsencode(folder), "--energy", "0.9", "--no-progress", "--out", os.fsencode(cut)],
                 ["report", os.fsencode(folder), os.fsencode(cut), "--out", os.fsencode(tmp_path / "report")]):
        done = lorita_cli(*argv)
        assert done.returncode == 0, (argv[0], done.stderr.decode(errors="replace"))
    assert lorita.load(cut / "model.lorita") is not None


def test_an_empty_data_dir_is_refused_not_taken_as_the_current_folder(tmp_path, capsys):
    err = cli_error(["train", "--model", "fcn", "--dataset", "mnist", "--data-dir", "", "--epochs", "1",
                     "--no-progress", "--out", str(tmp_path / "run")], capsys)
    assert "data_dir must be a non-empty string" in err and not (tmp_path / "run").exists()


def test_val_fraction_on_text_is_refused_not_ignored(tmp_path, capsys):
    """Text is split 90/5/5 by entry whatever --val-fraction says: given, it is refused, as --steps-per-epoch is
    on images."""
    (tmp_path / "texts").mkdir()
    err = cli_error(["train", "--model", "gpt", "--dataset", "text", "--data-dir", str(tmp_path / "texts"),
                     "--val-fraction", "0.5", "--out", str(tmp_path / "lm")], capsys)
    assert "--val-fraction sets an image dataset's validation split; text ('text') is always split 90/5/5" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts"]


def test_a_run_whose_data_folder_is_gone_says_to_put_it_back_not_to_pass_data_dir(tmp_path, capsys):
    from test_data import make_idx_folder

    data = make_idx_folder(tmp_path / "mnist", gz=False, n_train=40, n_test=20)
    run = tmp_path / "run"
    assert main(["train", "--model", "fcn", "--model-arg", "width=8", "--model-arg", "hidden_layers=1",
                 "--dataset", "mnist", "--data-dir", str(data), "--epochs", "1", "--batch-size", "16",
                 "--no-progress", "--out", str(run)]) == 0
    data.rename(tmp_path / "moved")
    for command in (["compress", str(run), "--energy", "0.9", "--out", str(tmp_path / "cut")],
                    ["evaluate", str(run)]):
        err = cli_error(command, capsys)
        assert f"is no longer in the folder its config.json records ({data})" in err, err
        assert "put the files back there" in err and "--data-dir" not in err
    assert not (tmp_path / "cut").exists()


def test_a_runs_model_that_is_a_fifo_or_a_folder_is_said_to_be_no_regular_file(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "model.lorita").unlink()
    os.mkfifo(copy / "model.lorita")
    err = cli_error(["compress", str(copy), "--energy", "0.9", "--out", str(tmp_path / "cut")], capsys)
    assert "model.lorita is not a regular file" in err and not (tmp_path / "cut").exists()


@pytest.mark.parametrize("command", [["train", *TINY], ["demo"], ["compress", "RUN", "--energy", "0.9"],
                                     ["experiment", "CONFIG", "--reduced", "--resume", "--overwrite"]])
def test_an_empty_out_is_said_to_be_empty(command, tmp_path, capsys, monkeypatch):
    config = str(Path(__file__).resolve().parents[1] / "experiments" / "fcn_fashion_mnist.json")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([config if a == "CONFIG" else a for a in command] + ["--out", ""])
    assert exit_info.value.code == 2
    assert "argument --out: empty: give a new folder name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_mistyped_packaged_model_name_gets_a_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = cli_error(["compress", "smollm2-999m", "--params", "0.8", "--out", "z"], capsys)
    assert "did you mean the packaged language model 'smollm2-135m'?" in err
    err = cli_error(["compress", "runs/nothere", "--energy", "0.9", "--out", "z"], capsys)
    assert "or a pretrained language model: a packaged one (smollm2-135m), a .gguf file" in err
    assert list(tmp_path.iterdir()) == []


def test_train_from_a_mixed_precision_model_file_trains_in_float32(tmp_path, capsys):
    from lorita.models import create_model

    model = create_model("fcn", width=8, hidden_layers=1, num_classes=10, in_channels=1, image_size=8)
    model.head.half()  # one layer saved in float16 beside float32 ones: lorita.load keeps each tensor's dtype
    lorita.save(model, tmp_path / "mixed.lorita")
    assert {t.dtype for t in lorita.load(tmp_path / "mixed.lorita").state_dict().values()} >= {torch.float16}
    assert main(["train", "--from", str(tmp_path / "mixed.lorita"), "--dataset", "digits", "--epochs", "1",
                 "--depth", "2", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    trained = lorita.load(tmp_path / "run" / "model.lorita")
    assert {t.dtype for t in trained.state_dict().values() if t.is_floating_point()} == {torch.float32}
