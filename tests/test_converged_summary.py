"""experiments/converged_summary.py: per-seed experiment folders pooled into summary.json and the epoch-budget
curve, from what results.json records (nothing recomputed)."""

import json
import math
import subprocess
import sys

import pytest

from lorita.report import converged
from lorita.report.converged import paired_lines
from lorita.runs.experiment_spec import load_spec


def _column(lorita: bool, kept: float | None, exposure: float, acc: float) -> dict:
    cuts = [{"size": 0.1, "params_kept": 0.1, "val_acc": acc, "test_acc": acc - 0.5, "seconds": 1.0}]
    return {"lorita": lorita, "finetune_epochs": 2, "train_seconds": 10.0, "exposure": exposure, "cuts": cuts,
            "chosen": None if kept is None else {"params_kept": kept}}


def _experiment(folder, model: str, epochs: int, seed: int, ours: float | None, theirs: float, gain: float,
                depths: bool = True, pre_registered: str = "LoRITa N=2 + FT") -> None:
    """One seed's results.json; uncut, the plain model at 89 + epochs/100, depth 2 at 88 + seed/10, depth 3 0.1
    below depth 2."""
    folder.mkdir(parents=True)
    run = {"seed": seed, "target_val_acc": 88.0, "plateau": {"plateau": gain < 0.1, "gain": gain},
           **({"depths": {"1": {"uncompressed": {"val_acc": 89.0 + epochs / 100}},
                          "2": {"uncompressed": {"val_acc": 88.0 + seed / 10}},
                          "3": {"uncompressed": {"val_acc": 87.9 + seed / 10}}}} if depths else {}),
           "columns": {pre_registered: _column(True, ours, 0.2 * epochs, 90.0),
                       "plain + SVD + FT": _column(False, theirs, 0.1 * epochs, 89.0),
                       "small dense": _column(False, None, 0.1 * epochs, 91.0)}}
    results = {"recipe": {"model": model, "epochs": epochs}, "dataset": "fashion-mnist",
               "spec": {"pre_registered": pre_registered, "sizes": [0.1], "depths": [1, 2, 3]},
               "headline": {"bar_ratio": 0.5}, "runs": [run]}
    (folder / "results.json").write_text(json.dumps(results))


def test_pools_seeds_per_budget_into_the_summary_and_the_curve(tmp_path):
    for seed, (ours, theirs) in enumerate([(0.05, 0.1), (0.04, 0.1), (0.06, 0.1)]):
        _experiment(tmp_path / "fcn-e60" / f"seed{seed}", "fcn", 60, seed, ours, theirs, 0.05)
        _experiment(tmp_path / "fcn-e15" / f"seed{seed}", "fcn", 15, seed, None if seed == 1 else 0.1, 0.1, 0.5)
    out, plot = tmp_path / "summary.json", tmp_path / "curve.png"
    (tmp_path / "fcn-e60" / "seed0.log").write_text("a run's log")  # what seed* also matches: skipped
    folders = sorted(str(p) for p in tmp_path.glob("fcn-e*/seed*"))
    fixed = tmp_path / "fixed.json"
    done = subprocess.run([sys.executable, "experiments/converged_summary.py", *folders, "--out", str(out),
                           "--plot", str(plot), "--fixed-sizes", str(fixed)], capture_output=True, text=True,
                          check=True)
    studies = {s["epochs"]: s for s in json.loads(out.read_text())["studies"]}
    long = studies[60]
    assert long["exposure"] == 12.0 and long["plateau"] is True and long["small_model_baseline"] is True
    assert long["geomean_ratio"] == pytest.approx(math.exp(sum(math.log(r) for r in (0.5, 0.4, 0.6)) / 3))
    assert long["ci95"][0] < long["geomean_ratio"] < long["ci95"][1]
    short = studies[15]  # seed 1 misses the target: no geometric mean, the plain model still rising
    assert short["geomean_ratio"] is None and short["plateau"] is False
    assert [r["lorita_params_kept"] for r in short["per_seed"]] == [0.1, None, 0.1]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    at_sizes = {s["epochs"]: s["fixed_size_differences"] for s in json.loads(fixed.read_text())["studies"]}
    (row,) = at_sizes[60]  # LoRITa's 89.5% test at 10% minus the small dense model's 90.5 (best on validation)
    assert row["size"] == 0.1 and row["n"] == 3 and row["alternatives"] == ["small dense"] * 3
    assert row["differences"] == pytest.approx([-1.0] * 3) and row["mean"] == pytest.approx(-1.0)
    copied = tmp_path / "docs"
    subprocess.run([sys.executable, "experiments/converged_summary.py", str(tmp_path / "fcn-e60" / "seed0"),
                    "--copy-to", str(copied)], capture_output=True, text=True, check=True)
    raw = copied / tmp_path.name / "fcn-e60" / "seed0" / "results.json"
    assert raw.read_bytes() == (tmp_path / "fcn-e60" / "seed0" / "results.json").read_bytes()
    assert "the bar: a ratio at most 0.5" in done.stdout and "No geometric mean" in done.stdout
    assert "skipped " in done.stderr and "seed0.log: not a finished experiment folder" in done.stderr
    table = done.stdout.split("## fcn on fashion-mnist: each seed across budgets")[1].strip().splitlines()
    assert table[2] == ("| seed | 15 epochs: ratio | 15 epochs: gap | 15 epochs: plain gain | 60 epochs: ratio "
                        "| 60 epochs: gap | 60 epochs: plain gain |")
    assert table[4] == "| 0 | 1.000 | 1.15 | +0.50 | 0.500 | 1.60 | +0.05 |"  # gap: 89.15 - 88.0, 89.6 - 88.0
    assert table[5] == "| 1 | missed | 1.05 | +0.50 | 0.400 | 1.50 | +0.05 |"


def test_each_seed_across_budgets_needs_the_uncut_models(tmp_path):
    _experiment(tmp_path / "fcn-e15" / "seed0", "fcn", 15, 0, 0.1, 0.1, 0.5)
    _experiment(tmp_path / "fcn-e60" / "seed0", "fcn", 60, 0, 0.05, 0.1, 0.05, depths=False)
    done = subprocess.run([sys.executable, "experiments/converged_summary.py", str(tmp_path / "fcn-e15" / "seed0"),
                           str(tmp_path / "fcn-e60" / "seed0")], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "seed 0: no uncut depth-1 model in the run" in done.stderr
    alone = subprocess.run([sys.executable, "experiments/converged_summary.py", str(tmp_path / "fcn-e60" / "seed0")],
                           capture_output=True, text=True, check=True)  # one budget: no table, nothing needed
    assert "each seed across budgets" not in alone.stdout


def test_a_seed_twice_is_refused(tmp_path):
    _experiment(tmp_path / "a", "fcn", 60, 0, 0.05, 0.1, 0.05)
    _experiment(tmp_path / "b", "fcn", 60, 0, 0.05, 0.1, 0.05)
    done = subprocess.run([sys.executable, "experiments/converged_summary.py", str(tmp_path / "a"),
                           str(tmp_path / "b")], capture_output=True, text=True)
    assert done.returncode == 1 and "seed 0 of ('fcn', 'fashion-mnist', 60) appears twice" in done.stderr


def test_paired_lines_name_a_missed_seed_and_the_interval():
    comparison = {"per_seed": [{"seed": 3, "target_val_acc": 88.0, "lorita_params_kept": None,
                                "best_alternative": "small dense", "best_alternative_params_kept": 0.2,
                                "ratio": None}], "geomean_ratio": None, "ci95": None, "missed": [3]}
    lines = paired_lines({"pre_registered": "LoRITa N=2 + FT", "ratio_over_seeds": comparison})
    assert lines[2] == "| 3 | 88.00 | missed | small dense | 20.0% | - |"
    assert lines[-1] == "No geometric mean: LoRITa N=2 + FT misses the target on seeds [3]."


def test_the_gap_is_taken_at_the_pre_registered_columns_depth(tmp_path):
    for epochs in (15, 60):
        _experiment(tmp_path / f"e{epochs}" / "seed0", "fcn", epochs, 0, 0.1, 0.1, 0.5,
                    pre_registered="LoRITa N=3 + FT")
    done = subprocess.run([sys.executable, "experiments/converged_summary.py",
                           *sorted(str(p) for p in tmp_path.glob("e*/seed0"))], capture_output=True, text=True,
                          check=True)
    table = done.stdout.split("each seed across budgets")[1].strip().splitlines()
    assert "| 0 | 1.000 | 1.25 | +0.50 | 1.000 | 1.70 | +0.50 |" in table  # 89.15 - 87.9, 89.6 - 87.9
    step = [line for line in table if line.startswith("- From ")]
    assert len(step) == 1 and step[0].startswith("- From 15 to 60 epochs (1 seed): the plain model's best "
                                                 "validation accuracy +0.45 points")  # 89.6 - 89.15
    assert "the gap before any cut +0.45 (one seed: no interval)." in step[0]  # 1.70 - 1.25


def test_a_pre_registered_column_that_is_no_lorita_one_is_refused_before_writing(tmp_path):
    for epochs in (15, 60):
        _experiment(tmp_path / f"e{epochs}" / "seed0", "fcn", epochs, 0, 0.1, 0.1, 0.5, pre_registered="small dense")
    out = tmp_path / "summary.json"
    done = subprocess.run([sys.executable, "experiments/converged_summary.py",
                           *sorted(str(p) for p in tmp_path.glob("e*/seed0")), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr and not out.exists()
    message = "fcn on fashion-mnist, 15 epochs: the pre-registered column 'small dense' is not a LoRITa column"
    assert message in done.stderr


def test_runs_that_do_not_say_their_depths_get_no_start_up_gap(tmp_path):
    for epochs in (15, 60):  # results.json whose spec lists no depths: no gap to take, said before writing
        _experiment(tmp_path / f"e{epochs}" / "seed0", "fcn", epochs, 0, 0.1, 0.1, 0.5)
        path = tmp_path / f"e{epochs}" / "seed0" / "results.json"
        results = json.loads(path.read_text())
        del results["spec"]["depths"]
        path.write_text(json.dumps(results))
    out = tmp_path / "summary.json"
    done = subprocess.run([sys.executable, "experiments/converged_summary.py",
                           *sorted(str(p) for p in tmp_path.glob("e*/seed0")), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr and not out.exists()
    assert "'LoRITa N=2 + FT' is the cut of no factored depth the experiments ran" in done.stderr


def test_columns_at_the_target_name_the_best_alternative_and_the_pre_registered_column():
    from lorita.report.converged import columns_markdown

    run = {"target_val_acc": 90.2, "columns": {
        "plain + SVD + FT": {"lorita": False, "epochs": 15, "finetune_epochs": 2,
                             "chosen": {"params_kept": 0.099, "val_acc": 90.25, "test_acc": 89.6}},
        "small dense": {"lorita": False, "epochs": 15, "finetune_epochs": 0,
                        "chosen": {"params_kept": 0.071, "val_acc": 90.28, "test_acc": 89.4}},
        "LoRITa N=2 + FT": {"lorita": True, "epochs": 15, "finetune_epochs": 2, "chosen": None}}}
    lines = columns_markdown(run, "LoRITa N=2 + FT").splitlines()
    assert lines[0].startswith("| column (target: 90.20% validation) |")
    assert lines[2:] == ["| plain + SVD + FT | 13 + 2 | 9.9% | 90.25 | 89.60 |",
                         "| **small dense** (best alternative) | 15 + 0 | **7.1%** | 90.28 | 89.40 |",
                         "| **LoRITa N=2 + FT** (named before the runs) | 13 + 2 | **missed** | - | - |"]


def test_seeds_of_other_settings_or_columns_are_not_pooled(tmp_path):
    """A grid setting's seed is not a seed of the base: experiments that differ in a setting (defaults filled in, so
    a setting added after a seed ran does not count) or in their columns are refused together."""
    spec = load_spec("experiments/converged/fcn.json").flat()
    for seed in range(3):
        _experiment(tmp_path / f"seed{seed}", "fcn", 60, seed, 0.05, 0.1, 0.05)
    with_spec = {0: {k: v for k, v in spec.items() if k != "cut_rule"}, 1: spec, 2: {**spec, "cut_rule": "least-loss"}}
    for seed, flat in with_spec.items():
        path = tmp_path / f"seed{seed}" / "results.json"
        results = json.loads(path.read_text())
        path.write_text(json.dumps({**results, "spec": {**flat, "pre_registered": "LoRITa N=2 + FT", "sizes": [0.1]}}))

    def pooled(*seeds):
        return subprocess.run([sys.executable, "experiments/converged_summary.py",
                               *(str(tmp_path / f"seed{s}") for s in seeds)], capture_output=True, text=True)

    assert pooled(0, 1).returncode == 0  # cut_rule absent is its default, "threshold"
    refused = pooled(0, 1, 2)
    assert refused.returncode != 0 and "the seeds' experiments differ in their settings" in refused.stderr
    results = json.loads((tmp_path / "seed1" / "results.json").read_text())
    del results["runs"][0]["columns"]["small dense"]
    (tmp_path / "seed1" / "results.json").write_text(json.dumps(results))
    assert "differ in their columns" in pooled(0, 1).stderr


def test_budget_curve_draws_no_mean_for_one_seed_and_joins_only_neighbouring_means(tmp_path, monkeypatch):
    drawn, real_save = {}, converged.save_figure

    def keep(fig, path):  # what is drawn, read before saving clears the figure
        ax = fig.axes[0]
        drawn["means"] = [list(bar.lines[0].get_xdata()) for bar in ax.containers]
        drawn["lines"] = [(line.get_label(), tuple(line.get_xdata())) for line in ax.lines]
        return real_save(fig, path)

    monkeypatch.setattr(converged, "save_figure", keep)

    def study(epochs, mean, ci, *ratios):
        seeds = [{"seed": i, "target_val_acc": 90.0, "lorita_params_kept": 0.1 * r, "best_alternative": "small dense",
                  "best_alternative_params_kept": 0.1} for i, r in enumerate(ratios)]
        return {"model": "m", "epochs": epochs, "exposure": epochs / 10, "geomean_ratio": mean, "ci95": ci,
                "per_seed": seeds}

    studies = [study(6, 1.3, [1.1, 1.5], 1.2, 1.4), study(12, 1.2, [1.0, 1.4], 1.1, 1.3),
               study(24, None, None, 1.0),  # a miss on another seed: no mean
               study(48, 1.1, [0.9, 1.3], 1.0, 1.2), study(96, 1.44, None, 1.44)]  # one seed so far
    converged.plot_budget_curve(studies, tmp_path / "curve.png", {"m": 0.7})
    assert drawn["means"] == [[6, 12, 48]]  # the means with an interval, not the one seed at 96
    joined = [x for label, x in drawn["lines"] if len(x) == 2 and x[0] >= 6]
    assert joined == [(6, 12)]  # not across the miss at 24, not to the one seed at 96
    assert 96 in dict(drawn["lines"])["m: one seed's ratio"]  # the one seed still shown, as a dot


@pytest.mark.parametrize("flag", ["--out", "--fixed-sizes", "--plot"])
def test_an_output_over_an_input_or_a_file_of_another_kind_is_refused_before_any_work(tmp_path, flag):
    _experiment(tmp_path / "fcn-e60" / "seed0", "fcn", 60, 0, 0.05, 0.1, 0.05)
    result = tmp_path / "fcn-e60" / "seed0" / "results.json"
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    before = result.read_bytes()
    for path, message in ((result, "is, or sits inside, an input of this script"),
                          (notes, "exists and is not"), (tmp_path / "new" / "x", "create it first")):
        done = subprocess.run([sys.executable, "experiments/converged_summary.py", str(result.parent), flag,
                               str(path)], capture_output=True, text=True)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert "the bar" not in done.stdout  # refused before the seeds were read
    assert result.read_bytes() == before and notes.read_text() == "mine" and not (tmp_path / "new").exists()


def test_copy_to_a_file_or_onto_the_copied_folder_is_refused(tmp_path):
    run = tmp_path / "docs" / "fcn-e60" / "base" / "seed0"
    _experiment(run, "fcn", 60, 0, 0.05, 0.1, 0.05)
    for to, message in ((tmp_path / "docs", "would copy"), (run / "results.json", "give a folder")):
        done = subprocess.run([sys.executable, "experiments/converged_summary.py", str(run), "--copy-to", str(to)],
                              capture_output=True, text=True)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("content", ["{", "[]", '{"recipe": 5, "dataset": "x", "runs": [], "spec": {}}'])
def test_a_damaged_results_json_ends_with_a_message_naming_it(tmp_path, content):
    _experiment(tmp_path / "fcn-e60" / "seed0", "fcn", 60, 0, 0.05, 0.1, 0.05)
    (tmp_path / "fcn-e60" / "seed0" / "results.json").write_text(content)
    done = subprocess.run([sys.executable, "experiments/converged_summary.py", str(tmp_path / "fcn-e60" / "seed0")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "results.json" in done.stderr, done.stderr
    assert "rerun that seed, or leave its folder out" in done.stderr
