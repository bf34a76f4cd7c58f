"""experiments/converged_run.py: the converged study's runner (one folder per model, budget, setting and seed;
resumable after a kill) and its configs."""

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from lorita.runs import load_spec
from lorita.runs.experiment import measured_cuts_key
from lorita.runs.folder import mark, write_json


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, f"experiments/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runner():
    return _script("converged_run")


@pytest.mark.parametrize("name,epochs,rounds,sizes", [("fcn", 60, 3, [0.05, 0.1, 0.2, 0.3]),
                                                      ("vgg_small", 12, 2, [0.1, 0.2, 0.3, 0.5])])
def test_the_study_configs_are_the_plans(name, epochs, rounds, sizes):
    spec = load_spec(f"experiments/converged/{name}.json")
    train, columns = spec.recipe.train, spec.columns
    assert (spec.setup.model, spec.setup.dataset, train.epochs) == (name, "fashion-mnist", epochs)
    assert columns.finetune_epochs == round(epochs / 6) and columns.prune_rounds == rounds
    assert columns.sizes == sizes and columns.batchnorm == 200 and columns.small_dense and columns.torch_pruning
    assert spec.report.pre_registered == "LoRITa N=2 + FT" and spec.recipe.depths == [1, 2]
    assert spec.recipe.init == "default" and spec.recipe.exclude == []  # g0: every layer composed, default init
    assert (train.lr, train.momentum, train.batch_size) == (0.05, 0.9, 128)
    assert load_spec(f"experiments/converged/{name}.json", reduced=True).report.pre_registered == "LoRITa N=2 + FT"


def test_dry_run_prints_one_command_per_seed_with_the_lock(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOCK", str(tmp_path / "heavy"))
    root = tmp_path / "runs"
    (root / "fcn-e60" / "base" / "seed1").mkdir(parents=True)  # complete: skipped
    assert _runner().main(["experiments/converged/fcn.json", "--seeds", "0", "1", "--root", str(root),
                           "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"flock {tmp_path / 'heavy'} {sys.executable} -m lorita --log-time experiment "
                               "experiments/converged/fcn.json --seeds 0 --out ")
    assert lines[0].endswith("fcn-e60/base/seed0 --no-progress --resume")
    assert lines[1] == f"{root / 'fcn-e60' / 'base' / 'seed1'}: complete, skipped"


def test_dry_run_says_how_far_a_seed_killed_part_way_got(tmp_path, capsys):
    root = tmp_path / "runs"
    partial = root / "fcn-e60" / "base" / "seed0.partial"
    for name in ("config.json", "results.json", "model.lorita", "spectrum.json"):  # a finished training
        write_json(partial / "depth1" / name, {"train": {"epochs": 60}})
    write_json(partial / "depth2" / "config.json", {"train": {"epochs": 60}})
    (partial / "depth2" / "metrics.csv").write_text("epoch,lr\n1,0.05\n2,0.05\n3,0.05\n")
    write_json(partial / "depth1-short" / "config.json", {"train": {}})  # unreadable: said to have started
    (partial / "depth1-short" / "metrics.csv").write_text("epoch,lr\n1,0.05\n")
    write_json(partial / "small" / "config.json", {"train": {"epochs": 60}})
    (partial / "small" / "metrics.csv").symlink_to("/dev/zero")  # never read through a link
    (partial / "small-deep").mkdir()
    (partial / "small-deep" / "config.json").write_text("[" * 100000)  # too deep to parse: started
    shutil.copytree(partial / "depth1", partial / ".depth1.copying")  # a copy a kill cut short: not listed
    (partial / "linked").mkdir()
    (partial / "linked" / "config.json").symlink_to(partial / "depth2" / "config.json")  # not read through a link
    write_json(partial / "config.json", mark({"command": "experiment"}))  # lorita's folder: its record is read
    key = measured_cuts_key(load_spec("experiments/converged/fcn.json"), 0)
    point = {"threshold": 0.0, "params": 90, "macs": 80, "params_kept": 1.0, "macs_kept": 1.0, "val": 91.0,
             "test": 90.0, "ranks": {}}
    write_json(partial / "measured-cuts.json", {"key": key, "cuts": {"plain + SVD + FT @ 0.1": {"inputs": "x",
                                                                                                 "cut": None},
                                                                     "plain + SVD + FT @ 0.2": {"inputs": "x",
                                                                                                 "cut": None}},
                                                "sweeps": {f"depth {d}": {"inputs": "y", "points": [point]}
                                                           for d in (1, 2)}})
    (root / "fcn-e60" / "base" / "seed1.partial").mkdir()
    write_json(root / "fcn-e60" / "base" / "seed1.resume" / "depth1" / "config.json", {"train": {"epochs": 60}})
    other = root / "fcn-e60" / "base" / "seed2.partial"  # measured under seed 0's key: not seed 2's
    shutil.copytree(partial, other, ignore=shutil.ignore_patterns(".*", "depth*", "small*", "linked"))
    assert _runner().main(["experiments/converged/fcn.json", "--seeds", "0", "1", "2", "--root", str(root),
                           "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"  {root / 'fcn-e60' / 'base' / 'seed0'}: part-way: seed0.partial: depth1 finished, " \
                       "depth1-short started, depth2 3 of 60 epochs, small started, small-deep started, 2 cuts and " \
                       "2 sweeps recorded"
    assert lines[3] == f"  {root / 'fcn-e60' / 'base' / 'seed1'}: part-way: seed1.resume: depth1 started; " \
                       "seed1.partial: no training started"
    assert lines[5] == f"  {root / 'fcn-e60' / 'base' / 'seed2'}: part-way: seed2.partial: no training started, " \
                       "cuts recorded under other settings or another lorita version (measured again)"
    assert len(lines) == 6


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs util-linux flock")
def test_the_log_ends_with_the_exit_status_and_says_when_a_lock_wait_is_in_the_seconds(tmp_path):
    runner, out = _runner(), tmp_path / "seed0"
    assert runner.run_one(["flock", str(tmp_path / "heavy"), sys.executable, "-c", "print('trained')"], out) == 0
    assert runner.run_one([sys.executable, "-c", "import sys; sys.exit(3)"], out) == 3
    lines = (tmp_path / "seed0.log").read_text().splitlines()
    assert lines[2] == "trained"
    assert re.fullmatch(r"=== .+: exit status 0 after \d+ s \(the wait for the lock included\)", lines[3])
    assert re.fullmatch(r"=== .+: exit status 3 after \d+ s", lines[-1])


@pytest.mark.parametrize("extra, message", [(["--seeds", "-1"], "--seeds must be integers >= 0, got -1"),
                                            (["--seeds", "0", "--root", "FILE"], "is not a folder")])
def test_a_negative_seed_or_a_root_that_is_a_file_is_refused_before_anything_runs(tmp_path, extra, message):
    (tmp_path / "file").write_text("mine")
    argv = ["experiments/converged/fcn.json", *[str(tmp_path / "file") if a == "FILE" else a for a in extra]]
    if "--root" not in extra:
        argv += ["--root", str(tmp_path / "runs")]
    for dry_run in ([], ["--dry-run"]):
        with pytest.raises(SystemExit, match=message):
            _runner().main(argv + ["--reduced", *dry_run])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_an_unknown_setting_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"no setting 'g9' in experiments/converged/fcn.json; settings: base"):
        _runner().main(["experiments/converged/fcn.json", "--seeds", "0", "--setting", "g9", "--root", str(tmp_path)])


@pytest.mark.parametrize("text, message", [("{", "not valid JSON"), ("[1]", "'settings' must map"),
                                           ('{"settings": {"g1": 3}}', "'settings' must map"),
                                           ('{"settings": {"nx": {"small_dense_refine": null}}}',
                                            r"setting 'nx' gives \['small_dense_refine'\] as null"),
                                           ('{"settings": {"s": {"seeds": [1]}}}', "'seeds', which the runner's")])
def test_a_config_that_is_not_a_studys_is_refused_with_a_message(tmp_path, text, message):
    config = tmp_path / "config.json"
    config.write_text(text)
    with pytest.raises(SystemExit, match=message):
        _runner().settings_of(config)
    with pytest.raises(SystemExit, match="missing.json cannot be read"):
        _runner().settings_of(tmp_path / "missing.json")


TINY = {"common": {"model": "fcn", "model_kwargs": {"width": 8, "hidden_layers": 1}, "depths": [1, 2],
                   "points": 3, "sizes": [0.5], "pre_registered": "LoRITa N=2"},
        "full": {"dataset": "digits", "max_train": 400, "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}},
        "settings": {"wide": {"model_kwargs": {"width": 12, "hidden_layers": 1}}}}


@pytest.mark.slow
def test_runs_each_seed_once_and_resumes_after_a_kill(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("LOCK", raising=False)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    root = tmp_path / "runs"
    killed = root / "fcn-e1" / "wide" / "seed1.partial"  # what a run killed at its start leaves
    write_json(killed / "config.json", mark({"command": "experiment"}))
    runner = _runner()
    assert runner.main([str(config), "--seeds", "0", "1", "--setting", "wide", "--root", str(root),
                        "--threads", "1"]) == 0
    for seed in (0, 1):
        results = json.loads((root / "fcn-e1" / "wide" / f"seed{seed}" / "results.json").read_text())
        assert results["seeds"] == [seed] and results["spec"]["model_kwargs"]["width"] == 12
        assert results["paired"]["pre_registered"] == "LoRITa N=2"
        log = (root / "fcn-e1" / "wide" / f"seed{seed}.log").read_text()  # beside its folder: the command, its output
        assert log.startswith("\n=== ") and f"--seeds {seed} --out " in log and "done in" in log
        assert ": OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " in log.splitlines()[1]  # each run's threads, recorded
        assert re.search(r"\n\d\d:\d\d:\d\d \[\w+\] seed \d: training depth 1", log)  # each step after its time
        assert re.fullmatch(r"=== \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+: exit status 0 after \d+ s",
                            log.splitlines()[-1])  # and when it ended
    assert not killed.exists() and not killed.with_suffix(".resume").exists()  # resumed from, then removed
    capsys.readouterr()
    assert runner.main([str(config), "--seeds", "0", "1", "--setting", "wide", "--root", str(root)]) == 0
    assert capsys.readouterr().out.count("complete, skipped") == 2

    # Killed at its very end: the next attempt trains nothing again, it takes every finished training.
    seed0 = root / "fcn-e1" / "wide" / "seed0"
    before = (seed0 / "depth2" / "results.json").read_text()
    seed0.rename(seed0.with_suffix(".partial"))
    assert runner.main([str(config), "--seeds", "0", "--setting", "wide", "--root", str(root)]) == 0
    assert (seed0 / "depth2" / "results.json").read_text() == before  # the same run, its seconds included
    assert "reuse" in json.loads((seed0 / "results.json").read_text())["spec"]
    assert not seed0.with_suffix(".resume").exists()

    # Killed inside a training, after its last checkpoint: the next attempt continues it from there.
    seed0.rename(seed0.with_suffix(".partial"))
    for name in ("results.json", "model.lorita", "spectrum.json"):
        (seed0.with_suffix(".partial") / "depth2" / name).unlink()
    assert runner.main([str(config), "--seeds", "0", "--setting", "wide", "--root", str(root)]) == 0
    continued = json.loads((seed0 / "depth2" / "results.json").read_text())
    assert continued.pop("resumed_after_epoch") == 1
    assert {k: v for k, v in continued.items() if "seconds" not in k} == \
        {k: v for k, v in json.loads(before).items() if "seconds" not in k}
    assert "depth2: continued from" in (root / "fcn-e1" / "wide" / "seed0.log").read_text()


def test_reuse_names_the_same_seed_of_another_setting(tmp_path, capsys):
    root = tmp_path / "runs"
    (root / "fcn-e60" / "base" / "seed0").mkdir(parents=True)
    runner = _runner()
    assert runner.main(["experiments/converged/fcn.json", "--seeds", "0", "1", "--root", str(root), "--dry-run",
                        "--setting", "base", "--reuse", "base"]) == 1  # seed0 complete; seed1: reuses itself
    assert "--reuse names the setting being run" in capsys.readouterr().out
    config = tmp_path / "fcn.json"
    config.write_text(json.dumps({**json.loads(open("experiments/converged/fcn.json").read()),
                                  "settings": {"g1": {"lorita_train": {"warmup_epochs": 2}}}}))
    assert runner.main([str(config), "--seeds", "0", "1", "--root", str(root), "--dry-run", "--setting", "g1",
                        "--reuse", "base"]) == 1
    lines = capsys.readouterr().out.splitlines()
    reuse = json.dumps([str(root / "fcn-e60" / "base" / "seed0")])
    assert lines[0].endswith(f"""--set 'lorita_train={{"warmup_epochs": 2}}' --set 'reuse={reuse}'""")
    assert "seed1: not run: --reuse needs that setting's finished run of this seed" in lines[1]
    (root / "fcn-e60" / "g3" / "seed0").mkdir(parents=True)
    assert runner.main([str(config), "--seeds", "0", "--root", str(root), "--dry-run", "--setting", "g1",
                        "--reuse", "g3", "base"]) == 0  # several settings: looked in in this order
    reuse = json.dumps([str(root / "fcn-e60" / name / "seed0") for name in ("g3", "base")])
    assert capsys.readouterr().out.splitlines()[0].endswith(f"--set 'reuse={reuse}'")
    (root / "fcn-e60" / "p1" / "seed0.partial").mkdir(parents=True)  # not finished: not taken
    assert runner.main([str(config), "--seeds", "0", "--root", str(root), "--dry-run", "--setting", "g1",
                        "--reuse", "all"]) == 0  # every other finished setting of the seed, the base first
    reuse = json.dumps([str(root / "fcn-e60" / name / "seed0") for name in ("base", "g3")])
    assert capsys.readouterr().out.splitlines()[0].endswith(f"--set 'reuse={reuse}'")


@pytest.mark.parametrize("name", ["fcn", "vgg_small"])
def test_every_grid_setting_is_a_valid_experiment_that_changes_one_side(name):
    path = f"experiments/converged/{name}.json"
    base = load_spec(path)
    settings = _runner().settings_of(Path(path))
    amended = {"g5"} if name == "fcn" else set()  # PLAN.md amendment 3: a smaller decay for LoRITa, FCN only
    amended.add("r1")  # amendment 4: the least-loss rank allocation for every SVD-family column, both sides
    amended.add("fd")  # amendment 5: the factorized baseline as one more alternative
    if name == "fcn":
        amended.add("p1r1")  # amendment 4's wiring: p1 for the plain side and r1 for LoRITa's, in one run
        amended.add("p1p3g3")  # amendment 1's rerun under the grid's choices at 60 epochs: p1's target, p3, g3
        amended.add("p1p3g3b")  # amendment 8: p1p3g3 with every fine-tuned cut's pairs rebalanced first
    else:
        amended.add("p2p4g4")  # amendment 1's rerun under the grid's choices: p2's target, p4's alternatives, g4
    assert set(settings) == {"base", "g1", "g2", "g3", "g4", "p1", "p2", "p3", "p4", "taylor"} | amended
    for setting, overrides in settings.items():
        spec = load_spec(path, **overrides)
        plain = spec.recipe.for_depth(spec.recipe.train, 1)
        lorita = spec.recipe.for_depth(spec.recipe.train, 2)
        if setting == "g3":  # the factors' starting scale: 0.76 of each layer's norm (PLAN.md), the paper's init
            assert (spec.recipe.init, spec.recipe.init_scale, base.recipe.init_scale) == ("default", 0.76, None)
        if setting.startswith("g"):  # LoRITa's side only: the plain side and the target as at the base
            assert plain == base.recipe.train and spec.columns.finetune_for(1) == base.columns.finetune_for(1)
        if setting.startswith("p") and setting not in ("p2p4g4", "p1p3g3", "p1p3g3b"):  # (both sides: own checks below)
            assert lorita == base.recipe.train and spec.columns.finetune_for(2) == base.columns.finetune_for(2)
        if setting in ("p1", "p2", "p3"):
            assert spec.recipe.target_train == {}  # judged at the base plain model's target
        if setting == "fd":  # one column more, trained with the plain side's recipe; every other training the base's
            assert (plain, lorita, spec.columns.factorized, base.columns.factorized) == (
                base.recipe.train, base.recipe.train, True, False)
        if setting == "r1":  # only how the cuts share ranks out: every training as at the base
            assert (plain, lorita, spec.columns.cut_rule) == (base.recipe.train, base.recipe.train, "loss")
        if setting == "p1r1":  # p1's plain training and its target (PLAN.md rule 1), r1's cuts on LoRITa's side only
            p1 = load_spec(path, **settings["p1"]).recipe
            assert plain == p1.for_depth(p1.train, 1) and plain != base.recipe.train
            assert spec.recipe.target_train is None  # the target is set by this run's own (p1) plain model
            assert (spec.columns.cut_rule_for(1), spec.columns.cut_rule_for(2)) == ("threshold", "loss")
        if setting == "p2p4g4":  # each side from its own choice: the base's plain training fine-tuned as p4, g4's
            p2, p4, g4 = (load_spec(path, **settings[name]) for name in ("p2", "p4", "g4"))  # LoRITa, p2's target
            assert (plain, lorita) == (base.recipe.train, base.recipe.train)
            assert spec.target_recipe(spec.recipe.train) == p2.recipe.for_depth(p2.recipe.train, 1)
            assert (spec.columns.finetune_for(1), spec.columns.finetune_for(2)) == (
                p4.columns.finetune_for(1), g4.columns.finetune_for(2)) != (base.columns.finetune_for(1),) * 2
        if setting == "p1p3g3":  # the grid's reading at 60 epochs: p1's target, p3's alternatives, g3's LoRITa
            p1, p3, g3 = (load_spec(path, **settings[name]) for name in ("p1", "p3", "g3"))
            assert plain == p3.recipe.for_depth(p3.recipe.train, 1) != base.recipe.train
            assert lorita == base.recipe.train and spec.recipe.init_scale == g3.recipe.init_scale == 0.76
            assert spec.target_recipe(spec.recipe.train) == p1.recipe.for_depth(p1.recipe.train, 1)
            choices = {"target_plain": "p1", "alternatives": "p3", "lorita": "g3", "torch_pruning_importance": "l1"}
            combined = _script("converged_choose").combined(choices, settings)
            assert combined == settings["p1p3g3"]
        if setting == "p1p3g3b":  # p1p3g3's every setting, and the fine-tuned cuts rebalanced (both sides alike)
            assert settings["p1p3g3b"] == {**settings["p1p3g3"], "finetune_rebalance": 0.9}
            assert spec.columns.finetune_rebalance == 0.9 and base.columns.finetune_rebalance is None
    g2 = load_spec(path, **settings["g2"]).recipe
    changed = g2.for_depth(g2.train, 2)
    assert changed.lr * changed.weight_decay == pytest.approx(base.recipe.train.lr * base.recipe.train.weight_decay)


@pytest.mark.parametrize("epochs,setting,expected", [
    (15, "base", {"train.epochs": 15, "finetune_epochs": 2, "prune_rounds": 2}),  # 2 fine-tuning epochs: 2 rounds
    (30, "base", {"train.epochs": 30, "finetune_epochs": 5, "prune_rounds": 3}),
    (120, "g4", {"train.epochs": 120, "finetune_epochs": 20, "prune_rounds": 3, "lorita_finetune_epochs": 40}),
    (30, "p4", {"train.epochs": 30, "finetune_epochs": 5, "prune_rounds": 3, "plain_finetune_epochs": 10}),
])
def test_another_budget_keeps_the_plans_split(epochs, setting, expected):
    runner = _runner()
    path = Path("experiments/converged/fcn.json")
    overrides = runner.at_budget(load_spec(path), runner.settings_of(path)[setting], epochs)
    assert overrides == expected
