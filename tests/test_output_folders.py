"""Output folders lose nothing: the output is never an input, a leftover staging folder is never deleted, two
commands never write one output at once, only lorita's own files are deleted (never across a mount point), and a
folder is swapped in atomically. See docs/SECURITY.md and docs/RUN_FOLDERS.md.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lorita.atomic import swap, temp_target
from lorita.cli import main
from lorita.errors import LoritaError
from lorita.runs.folder import foreign_entries, is_marked, mark, remove_tree, staging_path, write_json
from lorita.runs.lock import OutputLock, lock_path
from lorita.runs.output import RunOutput
from lorita.train.distributed import is_main_process
from test_hostile_cli import cli_error, finished, run, snapshot  # noqa: F401 - the shared finished run and helpers

TINY = ["--model", "fcn", "--model-arg", "width=8", "--model-arg", "hidden_layers=1", "--dataset", "digits",
        "--depth", "2", "--epochs", "1", "--batch-size", "256", "--device", "cpu", "--no-progress"]


def experiment_folder(run: Path, where: Path) -> Path:
    """A marked folder holding two runs, as an experiment leaves them."""
    where.mkdir()
    write_json(where / "config.json", mark({"command": "experiment"}))
    shutil.copytree(run, where / "depth1")
    shutil.copytree(run, where / "depth2")
    return where


# ----------------------------------------------------------------------------
# the output is never one of the inputs


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_report_never_replaces_the_runs_it_reads(run, tmp_path, capsys, where):
    exp = experiment_folder(run, tmp_path / "exp")
    runs = [str(exp / "depth1"), str(exp / "depth2")]
    out = {"same": exp / "depth1", "parent": exp, "inside": exp / "depth2" / "report"}[where]
    before = snapshot(exp)
    err = cli_error(["report", *runs, "--out", str(out), "--overwrite"], capsys)
    assert "would replace, hold or sit inside a run it reports on" in err
    assert snapshot(exp) == before
    assert main(["report", *runs, "--out", str(exp / "report")]) == 0  # beside the runs is fine
    assert foreign_entries(exp / "report") == []  # and everything the report writes is lorita's by name


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_train_from_never_replaces_its_source(run, tmp_path, capsys, where):
    exp = experiment_folder(run, tmp_path / "exp")
    source = exp / "depth1"
    out = {"same": source, "parent": exp, "inside": source / "longer"}[where]
    before = snapshot(exp)
    err = cli_error(["train", "--from", str(source), "--epochs", "1", "--device", "cpu", "--no-progress",
                     "--out", str(out), "--overwrite"], capsys)
    assert "would replace, hold or sit inside the model it continues (--from)" in err
    assert snapshot(exp) == before


def test_compress_never_reads_its_own_staging_folder(run, capsys):
    source = run.with_name("s.partial")
    run.rename(source)
    before = snapshot(source)
    err = cli_error(["compress", str(source), "--energy", "0.9", "--out", str(source.with_name("s"))], capsys)
    assert "(built in" in err and "would replace, hold or sit inside the run it compresses" in err
    assert snapshot(source) == before


def test_experiment_output_never_holds_its_config(tmp_path, capsys):
    exp = tmp_path / "exp"
    exp.mkdir()
    config = exp / "setup.json"
    config.write_text(json.dumps({"common": {"model": "fcn", "dataset": "digits"}, "full": {}, "reduced": {}}))
    err = cli_error(["experiment", str(config), "--reduced", "--out", str(exp), "--overwrite"], capsys)
    assert "would replace, hold or sit inside its config" in err
    assert config.is_file()


@pytest.mark.parametrize("out", [".", "./", "/", ".."])  # "": said to be empty (tests/test_hostile_cli.py)
def test_an_out_that_names_no_new_folder_is_refused(tmp_path, capsys, monkeypatch, out):
    work = tmp_path / "d"
    work.mkdir()
    (work / "mine.txt").write_text("keep")
    monkeypatch.chdir(work)
    err = cli_error(["train", *TINY, "--out", out, "--overwrite"], capsys)
    assert "names no new folder" in err
    assert sorted(p.name for p in work.iterdir()) == ["mine.txt"]


# ----------------------------------------------------------------------------
# a staging folder is used only by its own run's --resume, and never deleted


def killed_training(run: Path, name: str = "k") -> Path:
    """What kill -9 after an epoch leaves: NAME.partial with config, metrics and checkpoint."""
    partial = run.with_name(f"{name}.partial")
    shutil.copytree(run, partial)
    for file in ("model.lorita", "results.json", "spectrum.json"):
        (partial / file).unlink()
    return partial


@pytest.mark.parametrize("flag", [[], ["--overwrite"]])
def test_a_killed_training_is_never_deleted_by_a_rerun(run, capsys, flag):
    partial = killed_training(run)
    before = snapshot(partial)
    err = cli_error(["train", *TINY, "--out", str(partial.with_name("k")), *flag], capsys)
    assert "holds a training run that did not finish" in err and "--resume" in err and "rm -r" in err
    assert snapshot(partial) == before and not partial.with_name("k").exists()


def test_a_finished_run_named_like_a_staging_folder_is_never_deleted(run, capsys):
    partial = run.with_name("ablation.partial")
    shutil.copytree(run, partial)
    before = snapshot(partial)
    assert "holds a finished output that was not moved into place" in cli_error(
        ["train", *TINY, "--out", str(run.with_name("ablation"))], capsys)
    assert snapshot(partial) == before


@pytest.mark.parametrize("flags", [TINY, [*TINY, "--overwrite"], ["--resume", "--no-progress"]])
def test_the_older_output_a_killed_replacement_swapped_out_is_never_taken_for_the_newer(run, capsys, flags):
    """A kill in the instant after the swap leaves the previous output in NAME.partial and the new one in NAME:
    neither a rerun nor --resume may take the old one up (a resume would swap it back over the new one)."""
    partial = staging_path(run)
    shutil.copytree(run, partial)
    older = (run / "results.json").stat().st_mtime_ns - 10**9
    os.utime(partial / "results.json", ns=(older, older))
    os.utime(partial / "checkpoint.pt", ns=(older - 10**9, older - 10**9))  # written before its results, as always
    before, out_before = snapshot(partial), snapshot(run)
    err = cli_error(["train", *flags, "--out", str(run)], capsys)
    assert "holds an older finished output than" in err and f"rm -r {partial}" in err
    assert snapshot(partial) == before and snapshot(run) == out_before


def test_a_finished_training_a_kill_kept_from_its_place_is_moved_in_by_resume(run, capsys):
    """Killed between its last file and the swap: NAME.partial holds the newer whole run; --resume puts it in place."""
    partial = staging_path(run)
    shutil.copytree(run, partial)
    newer = (run / "results.json").stat().st_mtime_ns + 10**9
    os.utime(partial / "results.json", ns=(newer, newer))
    assert main(["train", "--resume", "--no-progress", "--out", str(run)]) == 0
    assert not partial.exists() and (run / "model.lorita").is_file()


@pytest.mark.parametrize("kind,message", [
    ("compress", r"left by a 'lorita compress' that did not finish .*\(rm -r "),
    ("unmarked", r"not a lorita run folder .*\(rm -r "),
    ("empty", r"an empty folder .*\(rmdir "),
    ("file", r"is not a folder lorita made"),
])
def test_a_leftover_staging_folder_is_named_and_kept(tmp_path, capsys, kind, message):
    import re

    partial = tmp_path / "out.partial"
    if kind == "file":
        partial.write_text("mine")
    else:
        partial.mkdir()
    if kind == "compress":
        write_json(partial / "config.json", mark({"command": "compress"}))
    elif kind == "unmarked":
        (partial / "thesis.tex").write_text("years of work")
    before = snapshot(partial) if partial.is_dir() else partial.read_text()
    err = cli_error(["train", *TINY, "--out", str(tmp_path / "out")], capsys)
    assert re.search(message, err), err
    assert (snapshot(partial) if partial.is_dir() else partial.read_text()) == before


def test_resume_never_follows_a_staging_folder_that_is_a_link(run, tmp_path, capsys):
    victim = tmp_path / "victim"
    shutil.copytree(run, victim)
    before = snapshot(victim)
    new = tmp_path / "new"
    staging_path(new).symlink_to(victim)
    err = cli_error(["train", *TINY, "--epochs", "2", "--resume", "--out", str(new)], capsys)
    assert "is a symbolic link" in err
    assert snapshot(victim) == before and not new.exists() and staging_path(new).is_symlink()


@pytest.mark.parametrize("command", [["train", *TINY, "--epochs", "2", "--resume"], ["compress", "RUN", "--energy",
                                     "0.9", "--overwrite"], ["report", "RUN", "--overwrite"]])
def test_an_out_that_is_a_link_is_named_and_its_target_untouched(run, tmp_path, capsys, command):
    victim = tmp_path / "victim"
    shutil.copytree(run, victim)
    before = snapshot(victim)
    new = tmp_path / "new"
    new.symlink_to(victim)
    err = cli_error([str(run) if a == "RUN" else a for a in command] + ["--out", str(new)], capsys)
    assert f"--out {new} is a symbolic link, and lorita never writes or deletes through one; remove the link" in err
    assert snapshot(victim) == before and new.is_symlink() and not staging_path(new).exists()


@pytest.mark.parametrize("how", ["new run", "extended run", "resumed killed run"])
def test_a_training_stopped_after_an_epoch_is_kept_for_resume(tmp_path, monkeypatch, capsys, how):
    """Stopped after its epochs (Ctrl-C while the model is evaluated), NAME.partial holds this run's own new
    checkpoint: kept, and --resume finishes it. (A resume refused before it trained, on a damaged checkpoint,
    leaves no copy of a finished run behind: tests/test_faults.py.)"""
    finished_here = tmp_path / "finished"  # with this file's flags, which a resume must repeat
    if how != "new run":
        assert main(["train", *TINY, "--out", str(finished_here)]) == 0
    out = {"new run": tmp_path / "new", "extended run": finished_here, "resumed killed run": tmp_path / "k"}[how]
    if how == "resumed killed run":
        killed_training(finished_here)
    epochs = ["--epochs", "1" if how == "new run" else "2"]

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lorita.runs.train.evaluate", stopped)
    capsys.readouterr()
    assert main(["train", *TINY, *epochs, *([] if how == "new run" else ["--resume"]), "--out", str(out)]) == 130
    assert f"{staging_path(out)} kept: continue it with --resume" in capsys.readouterr().err
    assert torch.load(staging_path(out) / "checkpoint.pt", weights_only=True)["epoch"] == int(epochs[1])
    monkeypatch.undo()
    assert main(["train", *TINY, *epochs, "--resume", "--out", str(out)]) == 0
    assert (out / "model.lorita").is_file() and not staging_path(out).exists()


def test_sigterm_stops_a_training_as_ctrl_c_does(tmp_path, monkeypatch, capsys):
    """SIGTERM (``timeout``, ``kill``, a scheduler) after an epoch: the checkpoint kept for --resume, exit 143."""
    out = tmp_path / "new"

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr("lorita.runs.train.evaluate", terminated)
    ignored = []  # a handler of the test's own: without main's, SIGTERM is ignored here, not the end of pytest

    def own(*args):
        ignored.append(args)

    earlier = signal.signal(signal.SIGTERM, own)
    try:
        assert main(["train", *TINY, "--out", str(out)]) == 143
        assert signal.getsignal(signal.SIGTERM) is own and not ignored  # main's handler, then this one put back
    finally:
        signal.signal(signal.SIGTERM, earlier)
    assert f"{staging_path(out)} kept: continue it with --resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["train", *TINY, "--resume", "--out", str(out)]) == 0 and not staging_path(out).exists()


def test_an_ignored_sigterm_stays_ignored(tmp_path, monkeypatch):
    """A launcher that ignores SIGTERM (as nohup-like tools do) keeps it ignored while lorita runs."""
    import lorita.runs.train

    evaluate = lorita.runs.train.evaluate

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr("lorita.runs.train.evaluate", signalled)
    earlier = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        assert main(["train", *TINY, "--out", str(tmp_path / "r")]) == 0  # went on past the ignored signal
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN and (tmp_path / "r" / "model.lorita").is_file()
    finally:
        signal.signal(signal.SIGTERM, earlier)


@pytest.mark.skipif(not Path("/usr/share/games/fortunes").is_dir(), reason="Debian package fortunes not installed")
def test_sigterm_from_outside_before_any_checkpoint_leaves_nothing_behind(tmp_path):
    """A training killed by ``timeout`` in its first epoch: no staging folder or lock left to block the next run."""
    out = tmp_path / "lm"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "lorita", "train", "--model", "gpt", "--model-arg", "dim=8",
                              "--model-arg", "depth=1", "--model-arg", "heads=1", "--model-arg", "context=8",
                              "--dataset", "fortunes", "--epochs", "1", "--steps-per-epoch", "100000000",
                              "--no-progress", "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (staging_path(out) / "config.json").exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    err = child.communicate(timeout=120)[1]
    assert child.returncode == 143 and "lorita train: terminated" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_resume_refuses_a_staging_folder_without_a_checkpoint(run, capsys):
    partial = killed_training(run)
    (partial / "checkpoint.pt").unlink()
    before = snapshot(partial)
    assert "holds no checkpoint.pt" in cli_error(["train", *TINY, "--resume", "--out", str(partial.with_name("k"))],
                                                 capsys)
    assert snapshot(partial) == before


# ----------------------------------------------------------------------------
# one command at a time per output


HOLDER = """
import sys
from lorita.runs.output import RunOutput
output = RunOutput(sys.argv[1])
output.begin()
print("ready", flush=True)
sys.stdin.read()  # hold the output until the test closes stdin, then exit without committing (as if killed)
"""


def test_a_second_command_on_the_same_out_fails_at_once_naming_the_first(tmp_path, capsys):
    out = tmp_path / "same"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=env, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        err = cli_error(["train", *TINY, "--out", str(out)], capsys)
        assert f"is being written by pid {holder.pid}" in err
        assert staging_path(out).is_dir() and not out.exists()  # the first one's folder untouched
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # the holder ended without committing, like a killed command: its empty staging folder is named, not deleted
    assert "an empty folder" in cli_error(["train", *TINY, "--out", str(out)], capsys)
    staging_path(out).rmdir()
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert is_marked(out) and sorted(p.name for p in tmp_path.iterdir()) == ["same"]  # no lock file left


def test_a_failed_command_releases_its_lock(run, tmp_path, capsys):
    out = tmp_path / "cut"
    (run / "model.lorita").write_bytes(b"not a model")
    cli_error(["compress", str(run), "--energy", "0.9", "--out", str(out)], capsys)
    lock = OutputLock(out)
    lock.acquire()  # would fail if the failed command still held it
    lock.release()
    assert not out.exists() and not staging_path(out).exists() and not lock_path(out).exists()


def test_a_failed_compress_run_releases_its_lock_while_its_error_is_kept(run, tmp_path):
    """A notebook keeps the last error, and with it compress_run's frame: the lock must not wait for it."""
    from lorita.cutspec import Energy
    from lorita.runs import compress_run

    out = tmp_path / "cut"
    with pytest.raises(LoritaError, match=r"calibrate=99, but the training data gives") as kept:
        compress_run(run, out, Energy(0.9, calibrate=99), progress=False)  # fails after the output is locked
    assert kept.value.__traceback__ is not None
    lock = OutputLock(out)
    lock.acquire()  # would fail if the failed call still held it
    lock.release()
    assert not out.exists() and not staging_path(out).exists() and not lock_path(out).exists()


def test_a_lock_file_left_by_a_killed_command_is_lorita_s(run, tmp_path):
    lock_path(run).write_text("pid 1 (lorita train ...)\n")  # kill -9 leaves the file; flock itself is gone
    (run / ".depth3.lorita-lock").write_text("")  # and one of a nested output
    assert foreign_entries(run) == []
    assert main(["train", *TINY, "--out", str(run), "--overwrite"]) == 0
    assert not lock_path(run).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_rank_without_torchrun_is_the_main_process(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # some schedulers export it; without WORLD_SIZE > 1 the run is alone
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert is_main_process()
    out = tmp_path / "rk"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert is_marked(out) and (out / "model.lorita").is_file() and not staging_path(out).exists()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not is_main_process()


# ----------------------------------------------------------------------------
# --overwrite deletes lorita's files only, by exact name, never across a mount point


def test_overwrite_deletes_only_files_lorita_names(run, capsys):
    (run / "holiday.png").write_bytes(b"a photo")
    (run / ".id_backup.tmp").write_text("a key")
    err = cli_error(["train", *TINY, "--out", str(run), "--overwrite"], capsys)
    assert "holiday.png" in err and ".id_backup.tmp" in err
    assert (run / "holiday.png").read_bytes() == b"a photo" and (run / ".id_backup.tmp").read_text() == "a key"
    (run / "holiday.png").unlink()
    (run / ".id_backup.tmp").unlink()
    (run / "spectra.png").write_bytes(b"lorita's plot")
    (run / ".metrics.csv.0a1b2c3d.tmp").write_text("a kill during a write")  # lorita.atomic's exact pattern
    assert foreign_entries(run) == []
    assert temp_target(".metrics.csv.0a1b2c3d.tmp") == "metrics.csv" and temp_target(".id_backup.tmp") is None


def mount_tmpfs(folder: Path) -> None:
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")


def test_a_nested_mount_point_is_never_emptied(run, tmp_path, capsys):
    exp = experiment_folder(run, tmp_path / "exp")
    nested = exp / "depth1"
    mount_tmpfs(nested)
    try:
        shutil.copytree(run, nested, dirs_exist_ok=True)  # a marked run on its own file system
        before = snapshot(exp)
        err = cli_error(["train", *TINY, "--out", str(exp), "--overwrite"], capsys)
        assert "a mount point" in err
        assert snapshot(exp) == before
        assert remove_tree(exp) == [str(nested)]  # even asked directly: the mount is left, and listed
        assert snapshot(nested) == snapshot(run)
    finally:
        subprocess.run(["umount", "-l", str(nested)], check=True)


def test_an_out_that_is_a_mount_point_is_refused(run, tmp_path, capsys):
    out = tmp_path / "mnt"
    out.mkdir()
    mount_tmpfs(out)
    try:
        shutil.copytree(run, out, dirs_exist_ok=True)
        before = snapshot(out)
        assert "is a mount point" in cli_error(["train", *TINY, "--out", str(out), "--overwrite"], capsys)
        assert snapshot(out) == before
    finally:
        subprocess.run(["umount", "-l", str(out)], check=True)


def test_deeply_nested_run_folders_need_no_recursion(tmp_path):
    top = folder = tmp_path / "deep"
    for _ in range(1100):
        write_json(folder / "config.json", mark({"command": "experiment"}))
        folder = folder / "n"
    write_json(folder / "config.json", mark({"command": "train"}))
    assert foreign_entries(top) == [f"{top / 'n'}/ (a run folder of command 'experiment' inside one of "
                                    "'experiment', where lorita never writes it)"]  # not walked further
    assert remove_tree(top) == [] and not top.exists()


def test_removing_only_loritas_leaves_what_appeared_since_the_check(run, tmp_path):
    exp = experiment_folder(run, tmp_path / "exp")
    (exp / "depth1" / "notes.txt").write_text("mine")
    (exp / "photos").mkdir()
    (exp / "photos" / "config.json").write_text("{}")  # an unmarked folder: left whole, even a lorita-named file
    (exp / "link").symlink_to(run / "metrics.csv")
    left = remove_tree(exp, only_lorita=True)
    assert sorted(left) == sorted(str(p) for p in (exp / "depth1" / "notes.txt", exp / "photos", exp / "link"))
    assert sorted(p.name for p in exp.iterdir()) == ["config.json", "depth1", "link", "photos"]
    assert sorted(p.name for p in (exp / "depth1").iterdir()) == ["config.json", "notes.txt"]  # still marked
    assert (exp / "photos" / "config.json").read_text() == "{}" and not (exp / "depth2").exists()
    assert (run / "metrics.csv").exists()


def test_files_written_into_out_while_it_is_replaced_are_kept(run, tmp_path, monkeypatch, caplog):
    """Checked when the command began and again before the swap; what appears after that is kept, not deleted."""
    real = swap

    def late_writer(a, b):  # a file written into the old output just before it is moved aside
        (run / "notes.txt").write_text("mine")
        return real(a, b)

    monkeypatch.setattr("lorita.runs.output.swap", late_writer)
    assert main(["train", *TINY, "--out", str(run), "--overwrite"]) == 0
    (kept,) = tmp_path.glob(".run.kept-*")
    assert (kept / "notes.txt").read_text() == "mine" and is_marked(kept) and (kept / "model.lorita").exists()
    assert f"the previous output is kept in {kept}, as what lorita did not write appeared" in caplog.text
    assert foreign_entries(run) == [] and (run / "model.lorita").exists()
    monkeypatch.setattr("lorita.runs.output.swap", real)
    assert main(["train", *TINY, "--out", str(run), "--overwrite"]) == 0  # kept: never touched again
    assert (kept / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [kept.name,
                                                                                                         "run"]


def test_files_written_into_the_old_output_after_its_last_check_are_left(run, tmp_path, monkeypatch, caplog):
    import lorita.runs.output as output
    real = output.foreign_entries

    def checked_then_written(folder):
        found = real(folder)
        if ".replaced-" in folder.name:  # the check after the swap passed; then a file appears
            (folder / "notes.txt").write_text("mine")
        return found

    monkeypatch.setattr(output, "foreign_entries", checked_then_written)
    assert main(["train", *TINY, "--out", str(run), "--overwrite"]) == 0
    (left,) = tmp_path.glob(".run.kept-*")
    assert sorted(p.name for p in left.iterdir()) == ["config.json", "notes.txt"]  # marked, with the file only
    assert "deleting the previous output stopped at what appeared in it meanwhile" in caplog.text
    assert f"({left / 'notes.txt'}); what is left of it is kept in {left}" in caplog.text
    monkeypatch.setattr(output, "foreign_entries", real)
    assert main(["train", *TINY, "--out", str(run), "--overwrite"]) == 0  # kept: never touched again
    assert (left / "notes.txt").read_text() == "mine"


def test_a_killed_replacements_leftover_holding_what_is_not_loritas_is_named(run, tmp_path, capsys):
    left = tmp_path / ".run.replaced-4242"
    shutil.copytree(run, left)
    (left / "notes.txt").write_text("mine")
    err = cli_error(["train", *TINY, "--out", str(run), "--overwrite"], capsys)
    assert f"{left} was left by a command killed while replacing {run}, and it is not only lorita's files " \
        f"({left / 'notes.txt'})" in err and (left / "notes.txt").read_text() == "mine"


def test_without_folder_handles_only_loritas_keeps_a_folder_holding_anything_else(run, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "supports_dir_fd", set())  # as on Windows
    (run / "notes.txt").write_text("mine")
    assert remove_tree(run, only_lorita=True) == [str(run / "notes.txt")] and (run / "model.lorita").exists()
    (run / "notes.txt").unlink()
    assert remove_tree(run, only_lorita=True) == [] and not run.exists()


def test_a_run_folder_moved_into_a_training_is_not_lorita_s_to_delete(run, tmp_path, capsys):
    """Only an experiment's folders hold runs: a finished training moved into another is the user's doing."""
    shutil.copytree(run, tmp_path / "baseline")
    (tmp_path / "baseline").rename(run / "baseline")
    err = cli_error(["train", *TINY, "--out", str(run), "--overwrite"], capsys)
    assert f"{run / 'baseline'}/ (a run folder of command 'train' inside one of 'train', where lorita never " \
        "writes it)" in err
    assert (run / "baseline" / "model.lorita").is_file()


def test_an_experiment_written_inside_an_experiment_is_not_lorita_s_to_delete(run, tmp_path):
    big = experiment_folder(run, tmp_path / "big")
    ablation = experiment_folder(run, big / "ablation")  # lorita experiment ... --out big/ablation
    assert foreign_entries(big) == [f"{ablation}/ (a run folder of command 'experiment' inside one of "
                                    "'experiment', where lorita never writes it)"]
    seeds = experiment_folder(run, tmp_path / "seeds")  # what lorita writes there: seed folders, trainings, cuts
    write_json(seeds / "seed0" / "config.json", mark({"command": "experiment-seed"}))
    shutil.copytree(run, seeds / "seed0" / "depth1")
    write_json(seeds / "seed0" / "depth1-cut" / "config.json", mark({"command": "compress"}))
    peers = tmp_path / "peers"
    write_json(peers / "config.json", mark({"command": "peers"}))
    shutil.copytree(run, peers / "fcn-depth1")  # the peers benchmark's trainings
    assert foreign_entries(seeds) == [] and foreign_entries(peers) == []
    with RunOutput(peers, overwrite=True) as folder:  # benchmarks/peers.py --overwrite
        write_json(folder / "config.json", mark({"command": "peers"}))
    assert sorted(p.name for p in peers.iterdir()) == ["config.json"]


def test_only_loritas_leaves_lock_files_it_did_not_write_or_that_are_held(tmp_path):
    folder = tmp_path / "run"
    write_json(folder / "config.json", mark({"command": "experiment"}))
    (folder / ".diary.lorita-lock").write_text("my diary, named like a lock")
    nested = folder / "depth1"
    write_json(nested / "config.json", mark({"command": "train"}))
    lock = OutputLock(nested / "sub")
    lock.acquire()  # a command writing inside it now
    try:
        assert sorted(remove_tree(folder, only_lorita=True)) == [str(folder / ".diary.lorita-lock"),
                                                                 str(lock_path(nested / "sub"))]
        assert lock_path(nested / "sub").is_file() and (folder / ".diary.lorita-lock").is_file()
    finally:
        lock.release()


def test_a_same_pid_leftover_does_not_stop_the_replacement(run, tmp_path):
    """The same process replacing the output twice (a notebook), or a PID used again after a kill."""
    stale = tmp_path / f".run.replaced-{os.getpid()}"
    shutil.copytree(run, stale)
    with RunOutput(run, overwrite=True) as folder:
        write_json(folder / "config.json", mark({"command": "train", "new": True}))
    assert json.loads((run / "config.json").read_text())["new"] and sorted(p.name for p in tmp_path.iterdir()) == \
        ["run"]


def test_a_killed_replacements_leftover_is_checked_again_before_it_is_deleted(run, tmp_path, caplog):
    stale = tmp_path / ".run.replaced-4242"
    shutil.copytree(run, stale)  # lorita's when the command begins: to be removed once the new output is in
    output = RunOutput(run, overwrite=True)
    folder = output.begin()
    write_json(folder / "config.json", mark({"command": "train"}))
    (stale / "notes.txt").write_text("written while the command ran")
    output.commit()
    (kept,) = tmp_path.glob(".run.kept-*")
    assert (kept / "notes.txt").exists() and (kept / "model.lorita").exists()
    assert f"the previous output is kept in {kept}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name, "run"]


# ----------------------------------------------------------------------------
# replacing a folder: one atomic step, and a crash in it is reported


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_swap_exchanges_two_folders_in_one_step(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old").touch()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "new").touch()
    assert swap(tmp_path / "a", tmp_path / "b")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["new"] and [p.name for p in (tmp_path / "b").iterdir()] \
        == ["old"]


@pytest.mark.parametrize("atomic", [True, False])
def test_overwrite_replaces_with_or_without_an_atomic_swap(run, tmp_path, monkeypatch, atomic):
    swapped = []

    def recorded(a, b):
        swapped.append(swap(a, b) if atomic else False)  # False: a system without renameat2
        return swapped[-1]

    monkeypatch.setattr("lorita.runs.output.swap", recorded)
    assert main(["train", *TINY, "--epochs", "2", "--out", str(run), "--overwrite"]) == 0
    assert swapped == [atomic] if sys.platform.startswith("linux") else len(swapped) == 1
    assert len((run / "metrics.csv").read_text().splitlines()) == 3 and foreign_entries(run) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_crash_while_replacing_is_reported(run, tmp_path, capsys):
    left = tmp_path / ".run.replaced-4242"
    run.rename(left)  # killed between the two renames of a replacement: the old run only in the hidden folder
    before = snapshot(left)
    err = cli_error(["train", *TINY, "--out", str(run)], capsys)
    assert f"mv {left} {run}" in err and snapshot(left) == before
    left.rename(run)
    shutil.copytree(run, left)  # killed while deleting the replaced run: OUT in place, the old one lorita's
    (left / "notes.txt").write_text("mine")
    assert "not only lorita's files" in cli_error(["train", *TINY, "--out", str(run), "--overwrite"], capsys)
    (left / "notes.txt").unlink()
    assert main(["train", *TINY, "--out", str(run), "--overwrite"]) == 0  # provably lorita's: removed once done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_run_output_checks_before_it_creates_anything(tmp_path):
    out = tmp_path / "new" / "deeper" / "run"
    output = RunOutput(out)  # the folders above do not exist yet: nothing is made until begin()
    assert not (tmp_path / "new").exists()
    with output as folder:
        write_json(folder / "config.json", mark({"command": "x"}))
    assert is_marked(out) and sorted(p.name for p in out.parent.iterdir()) == ["run"]
    with pytest.raises(LoritaError, match="already exists and is not empty"):
        RunOutput(out)


def test_a_planted_lock_file_link_is_never_written_through(tmp_path):
    target = tmp_path / "bashrc"
    target.write_text("mine")
    lock_path(tmp_path / "run").symlink_to(target)
    with pytest.raises(LoritaError, match="is not a file lorita made"):
        RunOutput(tmp_path / "run")
    assert target.read_text() == "mine" and not (tmp_path / "run").exists()


def test_a_failed_command_removes_the_folders_it_made_above_its_output(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "mine.txt").write_text("kept")
    with pytest.raises(RuntimeError):
        with RunOutput(tmp_path / "a" / "b" / "c" / "run"):
            raise RuntimeError("the data was missing")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["mine.txt"]  # b and c gone, a as it was
    with RunOutput(tmp_path / "a" / "b" / "run") as folder:  # a command that succeeds keeps them
        (folder / "config.json").write_text('{"format": "lorita.run"}')
    assert (tmp_path / "a" / "b" / "run" / "config.json").is_file()


def test_a_lock_that_cannot_be_made_says_where_to_write_instead(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(LoritaError, match=r"--out .*a-file/run: cannot write in .*a-file \(Not a directory\); choose"):
        OutputLock(tmp_path / "a-file" / "run").acquire()


def test_a_lock_left_by_a_long_non_ascii_command_is_still_lorita_s(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["lorita", "train", "--out", "漢" * 2000])  # 6,000 bytes of command line
    first = OutputLock(out)
    first.acquire()
    assert len(lock_path(out).read_bytes()) < 1000  # the holder line is cut by bytes, not characters
    os.close(first._fd)  # as a kill -9 leaves it: the lock dropped, the file left
    first._fd = None
    second = OutputLock(out)
    second.acquire()  # taken over, not refused as someone else's file
    second.release()


def test_a_failed_command_removes_only_the_folders_it_made_even_through_dot_dot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("yours").mkdir()  # empty, and the user's
    with pytest.raises(RuntimeError):
        with RunOutput(Path("made") / ".." / "yours" / "e"):
            raise RuntimeError("the data was missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yours"]


def test_a_folder_a_command_is_writing_in_is_called_busy_not_foreign(tmp_path):
    out = tmp_path / "run"
    with RunOutput(out) as folder:
        (folder / "config.json").write_text('{"format": "lorita.run"}')
    inner = OutputLock(out / "sub")
    inner.acquire()
    try:
        with pytest.raises(LoritaError, match=r"a lorita command is writing in it .*; wait until it ends"):
            RunOutput(out, overwrite=True)
    finally:
        inner.release()


@pytest.mark.parametrize("below", [["run"], ["a", "run"]])
def test_an_out_below_a_link_to_nothing_is_named_before_anything_is_made(tmp_path, capsys, below):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    err = cli_error(["train", *TINY, "--out", str(link.joinpath(*below))], capsys)
    assert f"{link} is a symbolic link to {tmp_path / 'gone'}, which leads nowhere (No such file or directory)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"] and not (tmp_path / "gone").exists()


def test_an_out_below_a_link_loop_is_named(tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    err = cli_error(["train", *TINY, "--out", str(loop / "run")], capsys)
    assert f"{loop} is a symbolic link to {loop}, which leads nowhere (Too many levels of symbolic links)" in err


def test_a_killed_extension_resumes_with_no_flag_to_its_new_epoch_count(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lorita.runs.train.evaluate", stopped)
    assert main(["train", "--resume", "--epochs", "2", "--no-progress", "--out", str(out)]) == 130
    monkeypatch.undo()
    assert main(["train", "--resume", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


def test_a_killed_experiments_results_json_does_not_make_it_a_finished_output(tmp_path, capsys):
    partial = tmp_path / "exp.partial"
    partial.mkdir()
    write_json(partial / "config.json", mark({"command": "experiment"}))
    write_json(partial / "results.json", {"command": "experiment"})  # its report and plots come after it
    err = cli_error(["train", *TINY, "--out", str(tmp_path / "exp")], capsys)
    assert "left by a 'lorita experiment' that did not finish" in err and "--resume" in err


def test_a_killed_extension_from_before_results_were_left_out_is_taken_for_a_training(run, capsys):
    """An extension copied by an earlier lorita kept the finished run's results.json beside its newer checkpoint."""
    partial = staging_path(run)
    shutil.copytree(run, partial)
    with open(partial / "metrics.csv", "a") as metrics:  # one epoch of the extension, past the results' epochs
        metrics.write(metrics_row := (run / "metrics.csv").read_text().splitlines()[-1].replace("1,", "2,", 1) + "\n")
    err = cli_error(["train", *TINY, "--out", str(run)], capsys)
    assert "holds a training run that did not finish" in err and metrics_row


def test_the_older_output_is_refused_when_file_times_did_not_survive_a_copy(run, capsys):
    """A finished output copied without its file times (cp -r) has its checkpoint newer than its results: still
    finished, so the older one swapped out beside it is still refused."""
    partial = staging_path(run)
    shutil.copytree(run, partial)
    older = (run / "results.json").stat().st_mtime_ns - 10**9
    os.utime(partial / "results.json", ns=(older, older))
    newest = (run / "results.json").stat().st_mtime_ns + 10**9
    os.utime(run / "checkpoint.pt", ns=(newest, newest))  # OUT's checkpoint after its results, as cp -r leaves it
    err = cli_error(["train", "--resume", "--no-progress", "--out", str(run)], capsys)
    assert "holds an older finished output than" in err


def test_an_extension_copy_that_fails_leaves_no_part_of_it(run, monkeypatch, capsys):
    """Disk full half-way through copying the finished run: no OUT.partial a later --resume would take for a training,
    no .OUT.partial.copying, the finished run untouched."""
    before = snapshot(run)
    copied = []

    def copyfile(src, dst, **kwargs):
        if copied:
            raise OSError(28, "No space left on device")
        copied.append(dst)
        return shutil.copy2(src, dst)

    monkeypatch.setattr("lorita.runs.folder.shutil.copyfile", copyfile)
    err = cli_error(["train", "--resume", "--epochs", "2", "--no-progress", "--out", str(run)], capsys, status=1)
    assert "No space left on device" in err and copied[0].name == "config.json"  # config.json first: marked
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name] and snapshot(run) == before


def test_the_staging_folder_of_an_extension_appears_whole(run, monkeypatch):
    """Another rank under torchrun waits for the staging folder's config.json and checkpoint: when they are there,
    so is every file of the copy."""
    from lorita.runs import folder
    seen = []
    rename = Path.rename

    def watched(self, target):
        seen.append(staging_path(run).exists())
        return rename(self, target)

    monkeypatch.setattr(folder.Path, "rename", watched)
    assert main(["train", "--resume", "--epochs", "2", "--no-progress", "--out", str(run)]) == 0
    assert seen and not seen[0]  # nothing at OUT.partial until the whole copy is renamed there


@pytest.mark.parametrize("leftover", ["marked", "cut before its config.json", "foreign"])
def test_a_kills_leftover_extension_copy_is_removed_only_when_it_is_loritas(run, capsys, leftover):
    building = run.with_name(f".{run.name}.partial.copying")
    building.mkdir()
    if leftover == "marked":
        shutil.copyfile(run / "config.json", building / "config.json")
        shutil.copyfile(run / "checkpoint.pt", building / "checkpoint.pt")
    elif leftover == "cut before its config.json":
        (building / ".config.json.0a1b2c3d.tmp").write_text('{"form')
    else:
        (building / "thesis.docx").write_text("mine")
    argv = ["train", "--resume", "--epochs", "2", "--no-progress", "--out", str(run)]
    if leftover == "foreign":
        err = cli_error(argv, capsys)
        assert f"{building} is where lorita copies {run} to extend it" in err and "rm -r" in err
        assert (building / "thesis.docx").read_text() == "mine" and not staging_path(run).exists()
    else:
        assert main(argv) == 0
        assert not building.exists() and json.loads((run / "results.json").read_text())["epochs"] == 2


def test_a_leftover_copy_does_not_block_a_resume_that_copies_nothing(run, capsys):
    """A killed training (OUT.partial with its checkpoint) resumes in place: a foreign .OUT.partial.copying beside
    it is not looked at, and stays."""
    partial = staging_path(run)
    shutil.copytree(run, partial)
    (partial / "results.json").unlink()
    building = run.with_name(f".{run.name}.partial.copying")
    building.mkdir()
    (building / "notes.txt").write_text("mine")
    assert main(["train", "--resume", "--epochs", "2", "--no-progress", "--out", str(run)]) == 0
    assert (building / "notes.txt").read_text() == "mine"
    (building / "notes.txt").unlink()
    building.rmdir()
    building.symlink_to(run)  # a link there, when an extension would copy: named as a link, nothing followed
    err = cli_error(["train", "--resume", "--epochs", "3", "--no-progress", "--out", str(run)], capsys)
    assert f"{building} is where lorita copies {run} to extend it, and it is a symbolic link" in err
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


def test_an_out_that_cannot_be_made_is_refused_before_any_work(tmp_path, monkeypatch):
    import os

    from lorita.runs.output import RunOutput

    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(LoritaError, match=r"file.txt is not a folder, so .* cannot be made below it"):
        RunOutput(tmp_path / "file.txt" / "sub" / "run")
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real(path, mode, **kw))
    with pytest.raises(LoritaError, match=r"locked is not writable by this user, so .* cannot be made below it"):
        RunOutput(locked / "new" / "run")  # as a user without write permission (tests may run as root)
    with RunOutput(tmp_path / "fine" / "run") as folder:  # a missing parent is made, as before
        (folder / "a").write_text("1")
    assert (tmp_path / "fine" / "run" / "a").read_text() == "1"
