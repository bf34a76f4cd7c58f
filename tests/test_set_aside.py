"""lorita.runs.set_aside and ``lorita experiment --resume``: a killed experiment's staging folder kept as OUT.resume,
its finished trainings taken up by the next run, only when it is lorita's."""

import json
import logging
import os
import shutil

import pytest

from lorita import LoritaError
from lorita.runs import ExperimentSpec, run_experiment
from lorita.runs.folder import mark, write_json
from lorita.runs.lock import OutputLock
from lorita.runs.set_aside import drop_set_aside, resume_path, set_aside, trainings_in


def test_a_killed_runs_staging_folder_is_kept_to_resume_from_only_when_it_is_loritas(tmp_path):
    out = tmp_path / "seed0"
    partial, resume = tmp_path / "seed0.partial", tmp_path / "seed0.resume"
    assert set_aside(out) is None  # nothing killed: nothing to take up
    write_json(partial / "config.json", mark({"command": "experiment"}))
    write_json(partial / "depth1" / "config.json", mark({"command": "train"}))
    assert set_aside(out) == resume and resume_path(out) == resume and not partial.exists()
    assert (resume / "depth1" / "config.json").is_file()  # kept for the next attempt to reuse
    assert set_aside(out) == resume  # no new kill: the one kept is still there to take up
    write_json(resume / "depth2" / "config.json", mark({"command": "train", "attempt": 1}))
    write_json(partial / "config.json", mark({"command": "experiment", "attempt": 2}))
    write_json(partial / "depth2" / "config.json", mark({"command": "train", "attempt": 2}))
    assert set_aside(out) == resume  # a second kill: the newer staging folder replaces the older one,
    assert json.loads((resume / "config.json").read_text())["attempt"] == 2  # keeping its own depth2
    assert json.loads((resume / "depth2" / "config.json").read_text())["attempt"] == 2
    assert (resume / "depth1" / "config.json").is_file()  # and the older's depth1, which it had not copied yet
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    with pytest.raises(LoritaError, match="is not a lorita run folder"):
        set_aside(out)
    write_json(partial / "config.json", mark({"command": "experiment"}))
    with pytest.raises(LoritaError, match="holds what lorita did not write"):
        set_aside(out)
    assert (partial / "notes.txt").read_text() == "mine" and resume.is_dir()  # nothing of either touched
    (resume / "mine.txt").write_text("mine")
    drop_set_aside(out)  # not lorita's only: left
    assert (resume / "mine.txt").is_file()
    (resume / "mine.txt").unlink()
    drop_set_aside(out)  # no finished run holds its trainings: kept
    assert (resume / "depth1" / "config.json").is_file()


def test_experiment_resume_takes_up_a_killed_runs_finished_trainings_and_then_removes_them(tmp_path, caplog):
    flat = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
            "depths": [1, 2], "points": 3, "sizes": [0.5], "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}}
    first = run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "first", progress=False)
    out = tmp_path / "again"
    (tmp_path / "first").rename(out.with_name("again.partial"))  # as a kill at its very end leaves it
    with caplog.at_level(logging.INFO, logger="lorita.runs"):
        again = run_experiment(ExperimentSpec.from_flat(flat), out, progress=False, resume=True)
    assert "depth1: reused from" in caplog.text and "depth2: reused from" in caplog.text
    assert not resume_path(out).exists() and not out.with_name("again.partial").exists()
    assert again["spec"]["reuse"] == [str(resume_path(out))]  # recorded: what it took up
    assert again["runs"][0]["columns"]["LoRITa N=2"]["cuts"][0]["val_acc"] == \
        first["runs"][0]["columns"]["LoRITa N=2"]["cuts"][0]["val_acc"]
    leftover = tmp_path / "other.partial"
    leftover.mkdir()
    (leftover / "notes.txt").write_text("mine")
    with pytest.raises(LoritaError, match="is not a lorita run folder"):
        run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "other", progress=False, resume=True)
    assert (leftover / "notes.txt").read_text() == "mine" and not (tmp_path / "other.resume").exists()


def test_ctrl_c_keeps_an_experiments_finished_trainings_for_resume(tmp_path, monkeypatch, caplog):
    import lorita.runs.experiment as experiment
    flat = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
            "depths": [1, 2], "points": 3, "sizes": [0.5], "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "_summary", interrupted)  # Ctrl-C after both trainings finished
    out = tmp_path / "exp"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False)
    partial = out.with_name("exp.partial")
    assert [p.name for p in trainings_in(partial)] == ["depth1", "depth2"]
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="lorita.runs"):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False, resume=True)
    assert "depth1: reused from" in caplog.text and "depth2: reused from" in caplog.text
    assert not partial.exists() and not resume_path(out).exists()
    monkeypatch.setattr(experiment, "_one_seed", interrupted)  # Ctrl-C before any training: nothing to keep
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "early", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    monkeypatch.undo()  # the real _one_seed back
    monkeypatch.setattr(experiment, "_summary", interrupted)
    with pytest.raises(KeyboardInterrupt):  # the demo has no --resume: its folder goes, finished trainings or not
        run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "demo", progress=False, keep_partial=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_a_failure_after_the_trainings_keeps_them_for_resume(tmp_path, monkeypatch, caplog):
    import lorita.runs.experiment as experiment
    flat = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
            "depths": [1, 2], "points": 3, "sizes": [0.5], "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}}

    def failing(*args, **kwargs):
        raise RuntimeError("a report that cannot be written")

    monkeypatch.setattr(experiment, "write_demo_report", failing)
    out = tmp_path / "exp"
    with pytest.raises(RuntimeError, match="report"):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False)
    assert [p.name for p in trainings_in(out.with_name("exp.partial"))] == ["depth1", "depth2"]  # all were deleted
    assert not out.exists()
    monkeypatch.setattr(experiment, "write_cut", failing)  # a cut's folder made, nothing written in it
    with pytest.raises(RuntimeError):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False, resume=True)
    monkeypatch.undo()
    run_experiment(ExperimentSpec.from_flat(flat), out, progress=False, resume=True)  # the empty folder was refused
    assert (out / "results.json").is_file() and not out.with_name("exp.partial").exists()
    monkeypatch.setattr(experiment, "write_demo_report", failing)  # replacing the finished one: OUT stays till then
    with caplog.at_level(logging.WARNING, logger="lorita.runs"), pytest.raises(RuntimeError):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False, overwrite=True)
    assert "continue it with --resume --overwrite --out" in caplog.text  # --resume alone is refused there


def test_a_resume_that_fails_before_taking_anything_says_the_earlier_trainings_are_kept(tmp_path, monkeypatch,
                                                                                        caplog):
    """The earlier attempts' OUT.resume outlives a --resume that fails at once; a run without --resume is refused
    while it is there (it would train everything again and leave it behind)."""
    import lorita.runs.experiment as experiment
    flat = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
            "depths": [1, 2], "points": 3, "sizes": [0.5], "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}}
    out = tmp_path / "exp"
    monkeypatch.setattr(experiment, "write_demo_report", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False)  # exp.partial kept
    monkeypatch.setattr(experiment, "_one_seed", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no data")))
    with caplog.at_level(logging.WARNING, logger="lorita.runs"), pytest.raises(RuntimeError, match="no data"):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False, resume=True)
    assert f"{out.with_name('exp.resume')}, the earlier attempts' trainings, is kept: --resume takes it up" in \
        caplog.text
    assert [p.name for p in trainings_in(out.with_name("exp.resume"))] == ["depth1", "depth2"]
    monkeypatch.undo()
    monkeypatch.setattr(experiment, "_output", lambda *a: pytest.fail("refused only after checking the output"))
    with pytest.raises(LoritaError, match="exp.resume keeps an earlier attempt's trainings: continue it with "
                                          "--resume"):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False)
    with pytest.raises(LoritaError, match="exp.resume keeps an earlier attempt's trainings"):
        experiment.plan_experiment(ExperimentSpec.from_flat(flat), out)  # --dry-run says so too
    monkeypatch.undo()
    assert not out.exists() and not out.with_name("exp.partial").exists()
    run_experiment(ExperimentSpec.from_flat(flat), out, progress=False, resume=True)
    assert (out / "results.json").is_file() and not out.with_name("exp.resume").exists()


def test_a_resume_name_that_is_not_lorita_s_folder_is_left_alone(tmp_path):
    """A file, a link or a folder of the user's own at OUT.resume: no earlier attempt; a run goes ahead and leaves
    it as it was. The demo (no --resume) leaves lorita's own alone too."""
    flat = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
            "depths": [1, 2], "points": 3, "sizes": [0.5], "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}}
    (tmp_path / "mine").mkdir()
    for name, make in (("file", lambda p: p.write_text("notes")), ("link", lambda p: p.symlink_to(tmp_path / "mine")),
                       ("folder", lambda p: p.mkdir())):
        out = tmp_path / name
        make(out.with_name(f"{name}.resume"))
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False)
        assert (out / "results.json").is_file() and os.path.lexists(out.with_name(f"{name}.resume"))
    aside = tmp_path / "demo.resume"
    write_json(aside / "config.json", mark({"command": "experiment"}))
    run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "demo", progress=False, keep_partial=False)
    assert (aside / "config.json").is_file()


def _training(folder, finished: bool, epochs: int = 1, **config) -> None:
    write_json(folder / "config.json", mark({"command": "train", **config}))
    (folder / "metrics.csv").write_text("epoch\n" + "".join(f"{e}\n" for e in range(epochs)))
    for name in ("results.json", "model.lorita", "spectrum.json") if finished else ():
        (folder / name).write_text("{}")


def test_a_second_kill_keeps_what_either_attempt_got_further_with_seeds_included(tmp_path):
    out = tmp_path / "exp"
    older, newer = tmp_path / "exp.resume", tmp_path / "exp.partial"
    for folder, attempt in ((older, 1), (newer, 2)):
        write_json(folder / "config.json", mark({"command": "experiment", "attempt": attempt}))
        write_json(folder / "seed0" / "config.json", mark({"command": "experiment-seed", "seed": 0}))
    _training(older / "seed0" / "depth1", finished=True, name="d1")
    _training(older / "seed0" / "depth2", finished=True, name="d2")
    _training(newer / "seed0" / "depth2", finished=False, name="d2")  # a kill while it was copied: in part
    _training(older / "seed0" / "depth3", finished=False, epochs=2, name="d3")
    _training(newer / "seed0" / "depth3", finished=False, epochs=5, name="d3")  # continued further: kept
    assert set_aside(out) == older
    seed = older / "seed0"
    assert json.loads((older / "config.json").read_text())["attempt"] == 2
    assert (seed / "depth1" / "results.json").is_file()  # not copied yet by the newer: taken from the older
    assert (seed / "depth2" / "results.json").is_file()  # the older's whole one, not the newer's part
    assert len((seed / "depth3" / "metrics.csv").read_text().splitlines()) == 6  # the newer's five epochs
    assert sorted(p.name for p in seed.iterdir()) == ["config.json", "depth1", "depth2", "depth3"]


def test_a_second_kill_after_another_recipe_keeps_the_first_recipes_trainings(tmp_path):
    out = tmp_path / "exp"
    older, newer = tmp_path / "exp.resume", tmp_path / "exp.partial"
    for folder in (older, newer):
        write_json(folder / "config.json", mark({"command": "experiment"}))
    _training(older / "depth1", finished=True, name="d1", lr=0.05)  # the first attempt's, finished
    _training(newer / "depth1", finished=False, name="d1", lr=0.1)  # the second ran another lr, killed part-way
    assert set_aside(out) == older
    assert json.loads((older / "depth1" / "config.json").read_text())["lr"] == 0.1
    kept = older / "depth1-earlier"
    assert json.loads((kept / "config.json").read_text())["lr"] == 0.05 and (kept / "results.json").is_file()
    write_json(out / "config.json", mark({"command": "experiment"}))
    _training(out / "depth1", finished=True, name="d1", lr=0.1)
    drop_set_aside(out)  # the finished run took the lr=0.1 training only: the first recipe's is not thrown away
    assert (kept / "results.json").is_file()


def test_set_aside_never_takes_apart_a_killed_training(tmp_path):
    out = tmp_path / "t"
    _training(tmp_path / "t.partial", finished=False, epochs=18, name="d1")  # a killed lorita train, resumable
    with pytest.raises(LoritaError, match=r"was left by a 'lorita train', not by 'lorita experiment'"):
        set_aside(out)
    assert (tmp_path / "t.partial" / "metrics.csv").is_file() and not resume_path(out).exists()


def test_a_resume_that_cannot_replace_the_output_renames_nothing(tmp_path):
    out = tmp_path / "exp"
    write_json(tmp_path / "exp.partial" / "config.json", mark({"command": "experiment"}))
    out.mkdir()
    (out / "user.txt").write_text("mine")
    flat = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
            "depths": [1], "points": 3, "sizes": [0.5], "train": {"epochs": 1, "device": "cpu"}}
    with pytest.raises(LoritaError, match="not a lorita run folder"):
        run_experiment(ExperimentSpec.from_flat(flat), out, overwrite=True, progress=False, resume=True)
    assert (tmp_path / "exp.partial").is_dir() and not resume_path(out).exists()
    assert (out / "user.txt").read_text() == "mine"


def test_set_aside_refuses_while_a_command_writes_the_output(tmp_path):
    out = tmp_path / "exp"
    write_json(tmp_path / "exp.partial" / "config.json", mark({"command": "experiment"}))
    lock = OutputLock(out)
    lock.acquire()
    try:
        with pytest.raises(LoritaError):
            set_aside(out)
        drop_set_aside(out)  # a lock held: nothing removed either
    finally:
        lock.release()
    assert (tmp_path / "exp.partial" / "config.json").is_file()


def test_drop_set_aside_keeps_trainings_the_finished_run_did_not_take(tmp_path):
    out, resume = tmp_path / "exp", tmp_path / "exp.resume"
    write_json(out / "config.json", mark({"command": "experiment"}))
    _training(out / "depth1", finished=True, name="d1")
    write_json(resume / "config.json", mark({"command": "experiment"}))
    _training(resume / "depth1", finished=True, name="d1")
    _training(resume / "depth5", finished=False, name="d5")  # e.g. of a depth the resumed run no longer has
    drop_set_aside(out)
    assert (resume / "depth5" / "config.json").is_file()
    shutil.rmtree(resume / "depth5")
    drop_set_aside(out)
    assert not resume.exists()


def test_what_appears_in_the_set_aside_folder_after_its_check_is_never_deleted(tmp_path, monkeypatch, caplog):
    import lorita.runs.set_aside as aside
    out, resume = tmp_path / "exp", tmp_path / "exp.resume"
    write_json(out / "config.json", mark({"command": "experiment"}))
    _training(out / "depth1", finished=True, name="d1")
    write_json(resume / "config.json", mark({"command": "experiment"}))
    _training(resume / "depth1", finished=True, name="d1")
    real = aside._check_lorita_folder

    def checked_then_written(folder):  # a file written just after the check passed
        real(folder)
        (folder / "depth1" / "notes.txt").write_text("mine")

    monkeypatch.setattr(aside, "_check_lorita_folder", checked_then_written)
    drop_set_aside(out)
    assert (resume / "depth1" / "notes.txt").read_text() == "mine"
    assert (resume / "depth1" / "config.json").is_file() and not (resume / "depth1" / "model.lorita").exists()
    assert "which lorita did not write" in caplog.text


def test_resume_renames_nothing_when_the_output_is_a_finished_run_or_the_config_is_bad(tmp_path):
    flat = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
            "depths": [1, 2], "points": 3, "sizes": [0.5], "train": {"epochs": 1, "device": "cpu"}}
    out = tmp_path / "exp"
    write_json(tmp_path / "exp.partial" / "config.json", mark({"command": "experiment"}))
    with pytest.raises(LoritaError, match="no model named|unknown model|model"):
        run_experiment(ExperimentSpec.from_flat({**flat, "model": "no_such_model"}), out, progress=False, resume=True)
    write_json(out / "config.json", mark({"command": "experiment"}))
    with pytest.raises(LoritaError, match="exists; --resume takes up only a run killed before it was in place"):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False, resume=True)
    assert (tmp_path / "exp.partial").is_dir() and not resume_path(out).exists()


def _two_attempts(tmp_path):
    """OUT, and two killed attempts at it: the older kept as OUT.resume, the newer left as OUT.partial."""
    out = tmp_path / "exp"
    older, newer = tmp_path / "exp.resume", tmp_path / "exp.partial"
    for folder in (older, newer):
        write_json(folder / "config.json", mark({"command": "experiment"}))
    return out, older, newer


def test_a_copy_a_kill_cut_short_is_never_taken(tmp_path):
    out, older, newer = _two_attempts(tmp_path)
    _training(older / "depth1", finished=True, name="d1")
    _training(newer / ".depth1.copying", finished=True, name="d1")  # built beside, never renamed into place
    _training(older / "depth2", finished=True, name="d2")
    _training(newer / "depth2", finished=False, epochs=3, name="other")  # another config: the newer's is kept
    assert set_aside(out) == older
    assert (older / "depth1" / "results.json").is_file()
    assert (older / "depth2" / "config.json").read_text().count("other") == 1
    assert [p.name for p in trainings_in(older)] == ["depth1", "depth2", "depth2-earlier"]  # the older's d2 kept


def test_a_copy_a_kill_cut_short_before_its_config_was_whole_does_not_stop_the_next_resume(tmp_path):
    out, older, newer = _two_attempts(tmp_path)
    _training(older / "depth1", finished=True, name="d1")
    _training(older / "depth2", finished=True, name="d2")
    _training(older / "depth3", finished=True, name="d3")
    (newer / ".depth1.copying").mkdir()  # killed after making the copy's folder, before its config.json
    (newer / ".depth2.copying").mkdir()
    (newer / ".depth2.copying" / "config.json").write_text('{"form')  # killed while config.json was copied
    (newer / ".depth3.copying").mkdir()
    (newer / ".depth3.copying" / ".config.json.0a1b2c3d.tmp").write_text("{")  # or while it was written
    assert set_aside(out) == older
    assert [p.name for p in trainings_in(older)] == ["depth1", "depth2", "depth3"]
    assert all((older / name / "results.json").is_file() for name in ("depth1", "depth2", "depth3"))
    (newer / ".depth1.copying").mkdir(parents=True)
    (newer / ".depth1.copying" / "notes.txt").write_text("mine")  # not a name lorita writes: not lorita's
    write_json(newer / "config.json", mark({"command": "experiment"}))
    with pytest.raises(LoritaError, match="holds what lorita did not write"):
        set_aside(out)
    assert (newer / ".depth1.copying" / "notes.txt").read_text() == "mine"
