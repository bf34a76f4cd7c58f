"""Run the converged study's experiments one at a time, one folder per (model, budget, setting, seed); resumable.

Usage:
    python experiments/converged_run.py experiments/converged/fcn.json --seeds 0 1 2 3 4
    LOCK=/work/locks/heavy nohup python experiments/converged_run.py experiments/converged/vgg_small.json \\
        --seeds 0 1 2 3 4 > runs/converged/vgg_small.log 2>&1 &

Each run is ``lorita --log-time experiment CONFIG --seeds S --out ROOT/<model>-e<E>/<setting>/seed<S>
--no-progress --resume`` (with ``--set KEY=VALUE`` for each override of the setting, ``--reduced`` for the
config's reduced recipe), its output in ``seed<S>.log`` beside its folder (appended: a rerun after a kill keeps
the first attempt's lines; ``lorita --log-time``: each line after the time it came, ``HH:MM:SS``, so each step's
cost can be read off).
A folder already there is complete (``lorita experiment`` builds it in ``seed<S>.partial`` and renames it only
when done) and is skipped, so the command can be started again after a kill and resumes with the next seed not
done; ``--resume`` takes up a seed killed midway (``lorita.runs.set_aside``: its finished trainings reused, the
one it was in continued from its last finished epoch), and refuses, with a message, a leftover that is not
lorita's.

``--threads N`` sets each run's ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` (recorded in its log). ``LOCK``
(environment; default none): a lock file. Each run then holds ``flock LOCK`` for its own duration only,
so other heavy jobs can take the machine between runs. Settings are the config's ``"settings"`` object (name ->
``{field: value}`` overrides, ``"train.lr"`` for a recipe field); ``base`` (no override) is always there.
``--epochs E``: another budget than the config's (f = round(E / 6) fine-tuning epochs, a setting's split the same
share of E: ``at_budget``). ``--reuse SETTING [SETTING ...]``: each seed's run takes the trainings it shares with
those settings' runs of the same seed, the first that holds each (``reuse``, ``lorita.runs.reuse``: copied where
the config is exactly the same), and the cuts of the side it leaves as they were (``lorita.runs.measured_cuts``),
so a setting that changes one side trains and cuts only that side; ``--reuse all`` names every other setting the
seed has finished (the base first). A run that fails is reported and the next one starts;
the exit status is 1 when any failed. ``--dry-run`` prints each command and, for a seed killed part-way, how far
it got (each training finished, or its epochs logged; the cuts recorded, which a resume of the same settings on
the same data and trainings does not measure again: ``lorita.runs.measured_cuts``). Each run's log ends with a
line that says when it ended, its exit status and its seconds (the wait for ``LOCK`` included: the run's own are
its ``results.json``'s ``seconds``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from lorita import jsonio
from lorita.errors import LoritaError
from lorita.runs import load_spec
from lorita.runs.experiment import measured_cuts_key
from lorita.runs.experiment_spec import config_settings
from lorita.runs.folder import read_json
from lorita.runs.measured_cuts import MEASURED_CUTS, read_record
from lorita.runs.reuse import RUN_FILES as REUSED_RUN_FILES

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # what torch's CPU thread pools read at start


def settings_of(config: Path) -> dict[str, dict]:
    """The config's settings (name -> overrides), ``base`` included."""
    try:
        settings = config_settings(config)
    except LoritaError as error:
        raise SystemExit(str(error)) from None
    for name, overrides in settings.items():  # what 'lorita experiment --set' cannot take, refused here
        nulls = sorted(k for k, v in overrides.items() if v is None)
        if nulls or "seeds" in overrides:
            raise SystemExit(f"{config}: setting {name!r} gives " + (
                f"{nulls} as null, which 'lorita experiment --set' refuses (it would keep the config's value): "
                "leave the key out, or give a value" if nulls else "'seeds', which the runner's --seeds sets"))
    return {"base": {}, **settings}


def command(config: Path, seed: int, out: Path, overrides: dict, reduced: bool, lock: str | None,
            reuse: list[Path] = ()) -> list[str]:
    """The command line of one run (under ``flock lock`` when given; taking unchanged trainings from ``reuse``)."""
    cmd = [sys.executable, "-m", "lorita", "--log-time", "experiment", str(config), "--seeds", str(seed),
           "--out", str(out), "--no-progress", "--resume"]
    if reuse:
        overrides = {**overrides, "reuse": [str(p) for p in reuse]}
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    if reduced:
        cmd.append("--reduced")
    return ["flock", lock, *cmd] if lock else cmd


def at_budget(base, overrides: dict, epochs: int) -> dict:
    """``overrides`` at ``epochs`` instead of the config's budget: f = round(E / 6) fine-tuning epochs, a setting's
    own split (``*_finetune_epochs``) the same share of E, at most as many pruning rounds as fine-tuning epochs."""
    if epochs < 2:
        raise SystemExit(f"--epochs must be at least 2 (one to train, one to fine-tune), got {epochs}")
    share = epochs / base.recipe.train.epochs
    out = {**overrides, "train.epochs": epochs, "finetune_epochs": max(1, round(epochs / 6))}
    for side in ("plain_finetune_epochs", "lorita_finetune_epochs"):
        if overrides.get(side) is not None:
            out[side] = min(epochs - 1, max(1, round(overrides[side] * share)))
    plain_ft = out.get("plain_finetune_epochs") or out["finetune_epochs"]
    out["prune_rounds"] = min(overrides.get("prune_rounds", base.columns.prune_rounds), plain_ft)
    return out


def _reuse_problem(reuse: Path, itself: bool) -> str | None:
    if itself:
        return "--reuse names the setting being run"
    return None if reuse.is_dir() else f"--reuse needs that setting's finished run of this seed ({reuse})"


def progress(out: Path, key: dict) -> str | None:
    """How far a seed killed part-way got, as ``--resume`` will take it up: for each of ``<out>.resume`` (kept from
    an earlier kill) and ``<out>.partial`` that is there, each training in it (a folder holding ``config.json``;
    dot names are copies a kill cut short, never taken), finished (every file a reused run needs) or the epochs
    its ``metrics.csv`` logged of its config's, and the cuts it measured under ``key`` (the run's
    ``measured_cuts_key``; a record under another is said to be measured again); None where neither is there (a
    seed not started, or complete).
    Reads nothing through a link (a folder, ``config.json`` or ``metrics.csv`` that is one is passed over), and no
    ``metrics.csv`` larger than 16 MiB or other than a plain file."""
    kept = [folder for folder in (out.with_name(out.name + ".resume"), out.with_name(out.name + ".partial"))
            if folder.is_dir() and not folder.is_symlink()]
    if not kept:
        return None
    return "part-way: " + "; ".join(f"{folder.name}: {_trainings(folder, key)}" for folder in kept)


def _trainings(folder: Path, key: dict) -> str:
    try:
        found = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir() and not p.is_symlink()
                       and _plain_file(p / "config.json"))
    except OSError as err:
        return f"not readable ({err.strerror})"
    trainings = ", ".join(f"{training.name} {_training(training)}" for training in found) or "no training started"
    return trainings + _cuts(folder / MEASURED_CUTS, key)


def _cuts(record: Path, key: dict) -> str:
    """How many cuts and sweeps the seed's record holds under ``key`` (``lorita.runs.measured_cuts``), as ``", 12
    cuts and 2 sweeps recorded"``: a resume takes those measured from the same data and trained models (which a
    dry run does not hash); a record under another key (other settings, another lorita version) is measured
    again, and said so."""
    if not _plain_file(record) or record.stat().st_size > 16 * 2**20:
        return ""
    try:
        recorded_key = jsonio.read(record, allow_nan=True)["key"]
    except (LoritaError, KeyError, TypeError):
        return ""
    if recorded_key != key:
        return ", cuts recorded under other settings or another lorita version (measured again)"
    cuts, sweeps = read_record(record, key)
    if not (cuts or sweeps):
        return ""
    return f", {len(cuts)} cuts" + (f" and {len(sweeps)} sweeps" if sweeps else "") + " recorded"


def _training(training: Path) -> str:
    if all(_plain_file(training / name) for name in REUSED_RUN_FILES):
        return "finished"
    try:
        epochs = read_json(training / "config.json", "'lorita train'")["train"]["epochs"]
        metrics = training / "metrics.csv"
        if not _plain_file(metrics) or metrics.stat().st_size > 16 * 2**20:
            raise ValueError(metrics)
        with open(metrics, encoding="utf-8") as handle:
            logged = max(0, sum(1 for line in handle if line.strip()) - 1)  # the header aside
    except (LoritaError, OSError, ValueError, KeyError, TypeError, RecursionError):
        return "started"
    return f"{logged} of {epochs} epochs"


def _plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _lock_wait_note(cmd: list[str]) -> str:
    """What a run's seconds include when it ran under ``flock`` (``command`` with a lock)."""
    return " (the wait for the lock included)" if cmd[0] == "flock" else ""


def run_one(cmd: list[str], out: Path, threads: int | None = None) -> int:
    """Run ``cmd`` (with ``threads`` OpenMP/MKL threads when given), its output appended to ``<out>.log`` between a
    start line and an end line (both with the time, the end one with the exit status and the seconds, any wait
    for a ``flock`` lock included); its exit status."""
    log = out.with_name(out.name + ".log")
    env = dict(os.environ)
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    with open(log, "a", encoding="utf-8") as handle:
        shown = f"{' '.join(f'{n}={threads}' for n in THREAD_VARIABLES)} " if threads is not None else ""
        handle.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {shown}{shlex.join(cmd)}\n")
        handle.flush()
        tic = time.time()
        code = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, check=False, env=env).returncode
        handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: exit status {code} after "
                     f"{time.time() - tic:.0f} s{_lock_wait_note(cmd)}\n")
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="experiments/converged/<model>.json")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="one run per seed, in this order")
    parser.add_argument("--setting", default="base", help="a setting of the config's 'settings' (default: base)")
    parser.add_argument("--root", type=Path, default=Path("runs/converged"), help="where the run folders go")
    parser.add_argument("--reduced", action="store_true", help="the config's reduced recipe (a smoke test)")
    parser.add_argument("--reuse", metavar="SETTING", nargs="+", default=[],
                        help="take the trainings and measured cuts a run shares with these settings' runs of the "
                             "same seed, the first that holds each (e.g. g3 base); all: every other setting's "
                             "finished run of the seed under --root, the base first")
    parser.add_argument("--epochs", type=int, help="another epoch budget E (docs/converged/PLAN.md: f = round(E / 6) "
                                                   "fine-tuning epochs, a setting's split the same share of E)")
    parser.add_argument("--threads", type=int, help="CPU threads of each run (OMP_NUM_THREADS; default: as set). On "
                                                    "a machine other jobs share, 1 avoids threads spinning while "
                                                    "they wait for a core")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {args.threads}")
    if min(args.seeds) < 0:
        raise SystemExit(f"--seeds must be integers >= 0, got {min(args.seeds)}")
    if args.root.exists() and not args.root.is_dir():
        raise SystemExit(f"--root {args.root} is not a folder; give the folder the run folders go in")
    lock = os.environ.get("LOCK") or None
    if lock and shutil.which("flock") is None:
        raise SystemExit("LOCK is set but there is no flock command on this machine")
    settings = settings_of(args.config)
    if args.setting not in settings:
        raise SystemExit(f"no setting {args.setting!r} in {args.config}; settings: {', '.join(settings)}")
    overrides = settings[args.setting]
    if args.epochs is not None:
        overrides = at_budget(load_spec(args.config, reduced=args.reduced), overrides, args.epochs)
    train = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("train.")}
    fields = {k: v for k, v in overrides.items() if not k.startswith("train.")}
    spec = load_spec(args.config, reduced=args.reduced, train_override=train, **fields)  # a bad config fails now
    budget = f"{spec.setup.model}-e{spec.recipe.train.epochs}" + ("-reduced" if args.reduced else "")
    folder = args.root / budget / args.setting
    failed = []
    for seed in args.seeds:
        out = folder / f"seed{seed}"
        if out.exists():
            print(f"{out}: complete, skipped", flush=True)
            continue
        names = args.reuse
        if names == ["all"]:  # every other setting this seed has finished here, the base first
            names = sorted((p.parent.name for p in (args.root / budget).glob(f"*/seed{seed}")
                            if p.is_dir() and p.parent.name != args.setting), key=lambda n: (n != "base", n))
        reuse = [args.root / budget / name / f"seed{seed}" for name in names]
        problem = next(filter(None, (_reuse_problem(folder, name == args.setting)
                                     for folder, name in zip(reuse, names))), None)
        if problem is None:
            cmd = command(args.config, seed, out, overrides, args.reduced, lock, reuse)
            if args.dry_run:
                print(shlex.join(cmd), flush=True)
                done = progress(out, measured_cuts_key(spec, seed))
                if done is not None:
                    print(f"  {out}: {done}", flush=True)
                continue
        if problem is not None:
            print(f"{out}: not run: {problem}", flush=True)
            failed.append(seed)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        done = progress(out, measured_cuts_key(spec, seed))
        print(f"{time.strftime('%H:%M:%S')} {out}: running (log {out.name}.log)"
              + (f"; resumes {done.removeprefix('part-way: ')}" if done else ""), flush=True)
        tic = time.time()
        code = run_one(cmd, out, args.threads)
        outcome = "done" if code == 0 else f"failed ({code}; see {out.name}.log)"
        print(f"{time.strftime('%H:%M:%S')} {out}: {outcome} in "
              f"{time.time() - tic:.0f} s{_lock_wait_note(cmd)}", flush=True)
        if code != 0:
            failed.append(seed)
    if failed:
        print(f"failed or not run: seeds {failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
