"""lorita.report on fake run folders laid out as docs/RUN_FOLDERS.md says: tables, comparison, plots, errors."""

import csv
import json
import math
import re
import struct
from pathlib import Path

import pytest

from lorita import LoritaError
from lorita.cutspec import Threshold
from lorita.report import (Run, check_max_drop, plot_compression, plot_ranks, plot_spectra, plot_training_curves,
                           read_run, summarize, write_report)
from lorita.report.demo import noise_lines
from lorita.report.markdown import ranks_summary

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def make_train(root, name, depth, val_curve, test_acc, decay, layers=("net.0", "net.3", "net.6")):
    run = root / name
    best = max(range(len(val_curve)), key=lambda i: val_curve[i]) + 1
    write_json(run / "config.json", {
        "command": "train", "lorita_version": "0.1.0",
        "model": {"name": "fcn", "num_classes": 10, "in_channels": 1, "image_size": 28, "kwargs": {}},
        "dataset": {"name": "fashion_mnist", "data_dir": "data", "val_fraction": 0.1, "seed": 0},
        "compose": {"depth": depth, "init": "default", "mode": "auto", "factor_side": "in", "exclude": []},
        "train": {"epochs": len(val_curve), "lr": 0.05}})
    with open(run / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for i, acc in enumerate(val_curve, start=1):
            writer.writerow({"epoch": i, "lr": 0.05, "train_loss": 1.0 / i, "train_acc": acc + 1, "val_loss": 0.5,
                             "val_acc": acc, "seconds": 3.0})
    # descending spectra; a deeper run decays faster (low rank induced)
    write_json(run / "spectrum.json", {"layers": {n: [5.0 * decay ** i for i in range(20)] for n in layers}})
    write_json(run / "results.json", {
        "command": "train", "depth": depth, "epochs": len(val_curve), "best_epoch": best,
        "val_acc": max(val_curve), "test_acc": test_acc, "params": 669_706, "macs": 668_672,
        "flops": 2 * 668_672, "seconds": 12.34})
    return run


def make_compress(root, name, source, kept, before, after_cut, after_finetune, ranks, dense):
    run = root / name
    write_json(run / "config.json", {"command": "compress", "source": source, "strategy": "global",
                                     "options": {"threshold": 0.05}, "finetune": None})
    write_json(run / "results.json", {
        "command": "compress", "source": source, "strategy": "global", "options": {"threshold": 0.05},
        "ranks": ranks, "dense_layers": dense,
        "original": {"params": 669_706, "macs": 668_672, "flops": 2 * 668_672},
        "before": dict(zip(("val_acc", "test_acc"), before)),
        "after_cut": {"params": int(669_706 * kept), "macs": int(668_672 * kept), "flops": 0,
                      **dict(zip(("val_acc", "test_acc"), after_cut))},
        "after_finetune": dict(zip(("val_acc", "test_acc"), after_finetune)) if after_finetune else None,
        "kept": {"params": kept, "macs": kept, "flops": kept}, "evaluations": 7, "search": None, "seconds": 4.2})
    return run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    d1 = make_train(root, "fmnist-d1", 1, [85.0, 89.0, 90.5, 90.2], 90.1, decay=0.9)
    d3 = make_train(root, "fmnist-d3", 3, [80.0, 86.0, 88.5, 89.0], 88.7, decay=0.5)
    # d1-cut names its source by absolute path, d3-cut by a path valid elsewhere (matched by folder name)
    c1 = make_compress(root, "d1-cut", str(d1), 0.25, (90.5, 90.1), (89.8, 89.5), None,
                       {"net.0": 40, "net.3": 30, "net.6": 10}, ["net.6"])
    c3 = make_compress(root, "d3-cut", "elsewhere/fmnist-d3", 0.08, (89.0, 88.7), (86.0, 85.9), (88.5, 88.3),
                       {"net.0": 12, "net.3": 9, "net.6": 8}, [])
    return [d1, d3, c1, c3]


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])  # IHDR follows the signature
    assert width > 100 and height > 100


def test_read_run(runs):
    d1, _, c1, _ = runs
    train = read_run(d1)
    assert train.kind == "train" and train.depth == 1 and train.label == "fmnist-d1 (depth 1)"
    assert [row["epoch"] for row in train.metrics] == [1.0, 2.0, 3.0, 4.0]
    assert train.metrics[2]["val_acc"] == 90.5
    assert set(train.spectrum) == {"net.0", "net.3", "net.6"} and train.spectrum["net.0"][0] == 5.0
    cut = read_run(c1)
    assert cut.kind == "compress" and cut.metrics == [] and cut.spectrum is None
    assert cut.get("kept", "params") == 0.25 and cut.get("after_finetune", "test_acc") is None


@pytest.mark.parametrize("value", ["NaN", "-Infinity", "-1.0"])
def test_a_spectrum_with_values_no_svd_gives_is_left_out_of_the_plots_with_a_warning(runs, value, caplog):
    d1 = runs[0]
    text = (d1 / "spectrum.json").read_text()
    (d1 / "spectrum.json").write_text(text.replace("5.0", value, 1))
    with caplog.at_level("WARNING"):
        assert read_run(d1).spectrum is None
    assert "hold singular values that are negative, NaN or infinite" in caplog.text


def test_write_report(runs, tmp_path):
    out = tmp_path / "new" / "report"  # created by write_report
    path = write_report(runs, out)
    assert path == out / "report.md"
    text = path.read_text()
    # train table: depth, epochs, best epoch, val/test acc, human-readable counts, units line
    assert "| fmnist-d1 | fcn | fashion\\_mnist | 1 | 4 | 3 | 90.50 | 90.10 | 669.71K | 668.67K | 12.3 |" in text
    assert "| fmnist-d3 | fcn | fashion\\_mnist | 3 | 4 | 4 | 89.00 | 88.70 | 669.71K | 668.67K | 12.3 |" in text
    assert "MACs = multiply-accumulates per example; FLOPs = 2 x MACs" in text
    # compress table: strategy with options, ranks summary, kept %, accuracy chain, evaluations, seconds
    assert ("| d1-cut | fmnist-d1 | global (threshold=0.05) | 2 layers cut, 1 dense | 25.0 | 25.0 | "
            "90.10 → 89.50 | 7 | 4.2 |") in text
    assert "| d3-cut | fmnist-d3 | global (threshold=0.05) | 3 layers cut, 0 dense | 8.0 | 8.0 | 88.70 → 85.90 → 88.30 |" in text
    # comparison: d3 meets its own bar (88.0) after fine-tuning, not depth 1's (89.5)
    assert "| fmnist-d1 (depth 1) | (a) own | 89.50 (own 90.50 - 1) | d1-cut | 25.0 | 25.0 | 89.50 |" in text
    assert "| fmnist-d3 (depth 3) | (a) own | 88.00 (own 89.00 - 1) | d3-cut | 8.0 | 8.0 | 88.30 |" in text
    assert "| fmnist-d3 (depth 3) | (b) common | 89.50 (fmnist-d1 90.50 - 1) | none of 1 run reaches it |" in text
    for name in ("training_curves.png", "spectra.png", "compression.png", "ranks.png"):
        assert f"]({name})" in text  # relative link
        assert_png(out / name)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.md", "training_curves.png", "spectra.png", "compression.png", "ranks.png"])  # no temp files left


def test_a_compress_run_names_its_typed_cut_and_the_options_it_changed(runs, tmp_path):
    # the fixture's compress runs were written before the typed cuts ("strategy", "options"); a new one holds "cut"
    new = make_compress(tmp_path / "runs", "d1-cut8", str(runs[0]), 0.3, (90.5, 90.1), (89.0, 88.9), None,
                        {"0": 8}, [])
    results = json.loads((new / "results.json").read_text())
    del results["strategy"], results["options"]
    results["cut"] = Threshold(0.05, multiple=8).to_dict()
    write_json(new / "results.json", results)
    text = summarize([*runs, new])
    assert "| d1-cut8 | fmnist-d1 | threshold (threshold=0.05, multiple=8) | 1 layer cut, 0 dense |" in text
    assert "| d1-cut | fmnist-d1 | global (threshold=0.05) |" in text


def test_cuts_of_same_named_sources_in_two_seed_folders_are_compared_apart(tmp_path):
    from lorita.report.runs import source_key

    runs = []
    for seed, (own, cut) in enumerate(((90.0, 89.5), (88.0, 87.5))):
        root = tmp_path / f"seed{seed}"
        runs.append(make_train(root, "depth2", 2, [80.0, own], own - 0.5, decay=0.5))
        # an experiment's cut records its source relative to its own folder: "depth2" in both seeds
        runs.append(make_compress(root, "depth2-cut", "depth2", 0.3, (own, own - 0.5), (cut, cut - 0.5), None,
                                  {"net.0": 4}, []))
    assert source_key(read_run(runs[1])) == str((tmp_path / "seed0" / "depth2").resolve())
    text = write_report(runs, tmp_path / "report").read_text()
    # each cut against its own seed's model (one group of both judged seed 0's target before)
    assert "(a) own | 89.00 (own 90.00 - 1) | depth2-cut | 30.0 | 30.0 | 89.00 |" in text
    assert "(a) own | 87.00 (own 88.00 - 1) | depth2-cut | 30.0 | 30.0 | 87.00 |" in text


def test_summarize_writes_nothing(runs, tmp_path):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    text = summarize(runs)
    assert text.startswith("# LoRITa report") and "2 train runs, 2 compress runs" in text
    assert "## Plots" not in text and ".png" not in text
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_only_train_runs(runs, tmp_path):
    text = write_report(runs[:2], tmp_path / "out").read_text()
    assert "## Compress runs" not in text and "compression.png" not in text
    assert not (tmp_path / "out" / "compression.png").exists()
    assert plot_compression(runs[:2], tmp_path / "c.png") is None
    assert plot_ranks(runs[:2], tmp_path / "r.png") is None
    assert plot_training_curves(runs[2:], tmp_path / "t.png") is None
    assert plot_spectra(runs[2:], tmp_path / "s.png") is None


def test_many_layers_spectra(tmp_path):
    layers = [f"blocks.{i}.fc" for i in range(20)]
    run = make_train(tmp_path, "vit", 2, [50.0, 60.0], 59.0, decay=0.7, layers=layers)
    assert_png(plot_spectra([run], tmp_path / "spectra.png"))


def test_ranks_summary():
    assert ranks_summary({"ranks": {"a": 1}, "dense_layers": []}) == "1 layer cut, 0 dense"
    assert ranks_summary({}) == "n/a"


def corrupt(runs, tmp_path, how):
    d1, _, c1, _ = runs
    if how == "no folder":
        return tmp_path / "nope"
    if how == "no results":
        (d1 / "results.json").unlink()
        return d1
    if how == "bad json":
        (c1 / "results.json").write_text('{"command": "compress",')
        return c1
    if how == "not object":
        (c1 / "results.json").write_text("[1, 2]")
        return c1
    if how == "bad command":
        write_json(d1 / "results.json", {"command": "export"})
        return d1
    if how == "not number":
        write_json(d1 / "results.json", {"command": "train", "test_acc": "90%"})
        return d1
    if how == "mixed":
        write_json(d1 / "config.json", {"command": "compress"})
        return d1
    if how == "bad csv":
        with open(d1 / "metrics.csv", "a") as handle:
            handle.write("5,0.05,0.1,90,0.4,oops,3\n")
        return d1
    if how == "bad spectrum":
        write_json(d1 / "spectrum.json", {"layers": [1, 2]})
        return d1
    if how == "parent":
        return d1.parent


@pytest.mark.parametrize("how,message", [
    ("no folder", r"run folder .*nope does not exist .*`lorita train \.\.\. --out RUN`"),
    ("no results", r"fmnist-d1/results\.json is missing: it is written by `lorita train .*an interrupted run"),
    ("bad json", r"d1-cut/results\.json is not valid JSON .*rerun that command"),
    ("not object", r"results\.json must hold a JSON object, got list"),
    ("bad command", r"has command 'export'; expected 'train' or 'compress'"),
    ("not number", r"results\.json: test_acc must be a number or null, got '90%'"),
    ("mixed", r"config\.json says command 'compress' but .*results\.json says 'train'"),
    ("bad csv", r"metrics\.csv, line 6: every value must be a number"),
    ("bad spectrum", r"spectrum\.json must hold \{\"layers\""),
    ("parent", r"results\.json is missing, but subfolders of .*runs are runs \(d1-cut, d3-cut, fmnist-d1"),
])
def test_bad_folders(runs, tmp_path, how, message):
    path = corrupt(runs, tmp_path, how)
    with pytest.raises(LoritaError, match=message):
        read_run(path)
    with pytest.raises(LoritaError, match=message):  # the report stops before writing anything
        write_report([*runs, path], tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()


def test_no_runs(tmp_path):
    with pytest.raises(LoritaError, match="no run folders given"):
        write_report([], tmp_path / "out")


def test_summarize_heading_level(runs):
    text = summarize(runs[:2], level=3)  # to embed under a "##" section of another document
    assert text.startswith("### LoRITa report") and "\n#### Train runs\n" in text
    with pytest.raises(LoritaError, match=r"level must be an integer from 1 to 5 .*got 0"):
        summarize(runs[:2], level=0)


def test_config_section_that_is_not_an_object_shows_as_na(runs):
    import json

    from lorita.report import summarize

    config_path = runs[0] / "config.json"
    config = json.loads(config_path.read_text())
    config["model"] = "fcn"  # damaged: a string where an object belongs
    config_path.write_text(json.dumps(config))
    text = summarize([runs[0]])
    row = next(line for line in text.splitlines() if line.startswith("| " + runs[0].name))
    assert "n/a" in row


def test_noise_lines_say_which_side_is_ahead():
    def column(lorita, acc):
        return {"lorita": lorita, "cuts": [{"size": 0.2, "test_acc": acc}]}

    results = {"metric": "val_acc", "spec": {"sizes": [0.2]},
               "runs": [{"test_images": 10000, "columns": {"LoRITa N=2": column(True, 80.0),
                                                           "plain + SVD": column(False, 85.0)}}]}
    (line,) = noise_lines(results)
    assert "is 5.00 points of test accuracy worse than the best alternative (the alternative ahead" in line
    results["runs"][0]["columns"]["LoRITa N=2"]["cuts"][0]["test_acc"] = 85.1
    (line,) = noise_lines(results)
    assert "is 0.10 points of test accuracy better than the best alternative (within the noise: one seed, the " \
           "test set's noise only, about ±1.01" in line


def test_noise_lines_over_seeds_give_the_paired_t_interval_of_the_differences():
    def run(ours, theirs):
        return {"test_images": 10000,
                "columns": {"LoRITa N=2": {"lorita": True, "cuts": [{"size": 0.2, "test_acc": ours}]},
                            "plain + SVD": {"lorita": False, "cuts": [{"size": 0.2, "test_acc": theirs}]}}}

    results = {"metric": "val_acc", "spec": {"sizes": [0.2]},
               "runs": [run(86.0, 85.0), run(85.5, 85.0), run(86.5, 85.0)]}
    (line,) = noise_lines(results)  # differences 1.0, 0.5, 1.5: mean 1.0, sd 0.5, t(2) 4.303: 1.0 +- 1.242
    assert "is 1.00 points of test accuracy better than the best alternative (within the noise: paired t 95% " \
           "interval [-0.24, +2.24] over 3 seeds)" in line
    results["runs"][1] = run(86.1, 85.0)
    (line,) = noise_lines(results)  # 1.0, 1.1, 1.5: mean 1.2, sd 0.265: 1.2 +- 0.657, the interval excludes zero
    assert "is 1.20 points of test accuracy better than the best alternative (LoRITa ahead: paired t 95% interval " \
           "[+0.54, +1.86] over 3 seeds)" in line


def test_noise_lines_take_each_side_s_column_best_on_validation_not_on_test():
    def column(lorita, val, test):
        return {"lorita": lorita, "cuts": [{"size": 0.2, "params_kept": 0.2, "val_acc": val, "test_acc": test}]}

    results = {"metric": "val_acc", "spec": {"sizes": [0.2]},
               "runs": [{"test_images": 10000, "columns": {"LoRITa N=2": column(True, 90.0, 90.0),
                                                           "A": column(False, 91.0, 89.0),
                                                           "B": column(False, 89.0, 91.0)}}]}
    (line,) = noise_lines(results)  # A, better on validation, is the alternative: LoRITa 1 point ahead on test
    assert "is 1.00 points of test accuracy better than the best alternative" in line


def test_noise_lines_compare_the_column_named_before_the_runs_not_the_best():
    def column(lorita, val, test):
        return {"lorita": lorita, "cuts": [{"size": 0.2, "params_kept": 0.2, "val_acc": val, "test_acc": test}]}

    results = {"metric": "val_acc", "spec": {"sizes": [0.2], "pre_registered": "LoRITa N=2 + FT"},
               "runs": [{"test_images": 10000, "columns": {"LoRITa N=2": column(True, 92.0, 92.0),
                                                           "LoRITa N=2 + FT": column(True, 88.0, 88.5),
                                                           "A": column(False, 89.0, 89.0)}}]}
    (line,) = noise_lines(results)  # the named column, though the other LoRITa column is better on validation
    assert "0.2% of the params" not in line and \
        "20% of the params: LoRITa N=2 + FT (named before the runs) is 0.50 points of test accuracy worse" in line
    del results["runs"][0]["columns"]["LoRITa N=2 + FT"]["cuts"][0]
    assert noise_lines(results) == []  # the named column has no cut there: no line


def test_text_from_run_files_is_escaped_in_report_md(runs, tmp_path):
    # folder, model, dataset, source, strategy and options go into the tables as literal text:
    # no HTML tag, image, link, emphasis or code span reaches a Markdown viewer
    d1, _, c1, _ = runs
    config = json.loads((d1 / "config.json").read_text())
    config["model"]["name"] = "<img src=https://attacker.example/p.gif>"
    config["dataset"]["name"] = "[click](javascript:alert(1))"
    write_json(d1 / "config.json", config)
    results = json.loads((c1 / "results.json").read_text())
    results.update(strategy="*bold* _it_ `code` & ~~gone~~", options={"<script>": "![x](y)"},
                   source="runs/<iframe>")
    write_json(c1 / "results.json", results)
    odd = d1.rename(d1.parent / "run<b>|[a](b)")
    text = (write_report([odd, c1], tmp_path / "out")).read_text()
    cells = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    assert not re.search(r"[<>]|&(?!lt;|gt;|amp;)|(?<!\\)[][*_`~!]", cells)  # nothing left unescaped
    assert "&lt;img src=https://attacker.example/p.gif&gt;" in text
    assert "\\[click\\](javascript:alert(1))" in text
    assert "\\*bold\\* \\_it\\_ \\`code\\` &amp; \\~\\~gone\\~\\~" in text
    assert "| run&lt;b&gt;\\|\\[a\\](b) (depth 1)" not in text  # the table's first column is the bare name
    assert "| run&lt;b&gt;\\|\\[a\\](b) |" in text


def _damage(run, how):
    if how == "depth NaN":
        (run / "results.json").write_text((run / "results.json").read_text().replace('"depth": 1', '"depth": NaN'))
    elif how == "huge int in results":
        (run / "results.json").write_text((run / "results.json").read_text().replace('"epochs": 4',
                                                                                       '"epochs": 1' + "0" * 400))
    elif how == "huge int in spectrum":
        write_json(run / "spectrum.json", {"layers": {"net.0": [10 ** 400, 1]}})
    elif how == "5000-digit int":
        (run / "results.json").write_text('{"command": "train", "depth": ' + "9" * 5000 + "}")
    elif how == "deep JSON":
        (run / "spectrum.json").write_text('{"layers": ' + "[" * 100000 + "]" * 100000 + "}")
    elif how == "non-UTF-8 CSV":
        with open(run / "metrics.csv", "ab") as handle:
            handle.write(b"5,0.05,0.1,90,0.4,\xff\xfe,3\n")
    elif how == "huge CSV field":
        with open(run / "metrics.csv", "a") as handle:
            handle.write("5,0.05,0.1,90,0.4," + "9" * 200_000 + ",3\n")
    elif how == "dense_layers of objects":
        results = json.loads((run / "results.json").read_text())
        write_json(run / "results.json", {**results, "dense_layers": [{"a": 1}]})


@pytest.mark.parametrize("how,message", [
    ("huge int in results", r"results\.json: epochs must be a number or null, got 1000"),
    ("huge int in spectrum", r"spectrum\.json must hold"),
    ("5000-digit int", r"results\.json is not valid JSON \(an integer with more than 4300 digits"),
    ("deep JSON", r"spectrum\.json is not valid JSON \(nested too deeply"),
    ("non-UTF-8 CSV", r"metrics\.csv is not a readable CSV file \(UnicodeDecodeError"),
    ("huge CSV field", r"metrics\.csv is not a readable CSV file \(Error: field larger than field limit"),
    ("dense_layers of objects", r"dense_layers must be a list of layer names"),
])
def test_damaged_run_files_are_clear_errors(runs, tmp_path, how, message):
    run = runs[2] if how == "dense_layers of objects" else runs[0]
    _damage(run, how)
    with pytest.raises(LoritaError, match=message):
        write_report(runs, tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()


def test_nan_depth_shows_as_unknown(runs, tmp_path):
    _damage(runs[0], "depth NaN")
    (runs[0] / "config.json").write_text('{"command": "train", "compose": ["not", "an", "object"]}')
    text = write_report(runs, tmp_path / "out").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| fmnist-d1 |"))
    assert row.split(" | ")[3] == "n/a"


def test_folder_names_that_look_like_matplotlib_math_are_drawn_literally(runs, tmp_path):
    names = []
    for run, new in zip(runs, ("run$\\frac{$", "$x^$", "cut$_{", "c$$")):
        names.append(run.rename(run.parent / new))
    results = json.loads((names[2] / "results.json").read_text())
    results["ranks"] = {"layer$\\sqrt{$": 3, **results["ranks"]}
    write_json(names[2] / "results.json", results)
    out = write_report(names, tmp_path / "out").parent
    for png in ("training_curves.png", "spectra.png", "compression.png", "ranks.png"):
        assert_png(out / png)


def make_lm(root, name, kept, dense, cut, recovered, method=None, steps=3):
    """A pretrained language model's compress run as ``lorita compress SOURCE --params P`` writes it (perplexities
    on one text; ``recovered`` None: no recovery)."""
    run = root / name
    compression = {"params": kept, "recovery": None if recovered is None else {"mode": "lora", "steps": 160},
                   **({"method": method} if method else {})}
    stage = ({"fortunes-val": {"ppl": p, "nll": math.log(p) if p else None, "tokens": 4088}}
             for p in (dense, cut, recovered))
    write_json(run / "config.json", {"command": "compress", "kind": "lm", "source": {"text": "smollm2-135m"}})
    write_json(run / "results.json", {
        "command": "compress", "kind": "lm", "source": {"kind": "packaged", "text": "smollm2-135m"},
        "compression": compression, "dense": next(stage), "after_cut": next(stage),
        "after_recovery": next(stage) if recovered is not None else None,
        "recovery": None if recovered is None else {"steps": steps},
        "params": {"dense": 134_515_008, "cut": int(134_515_008 * kept), "kept": kept},
        "seconds": {"total": 822.0}})
    return run


def test_language_model_runs_have_their_own_table_beside_the_image_runs(runs, tmp_path):
    root = tmp_path / "runs"
    lms = [make_lm(root, "smol-80", 0.8, 40.81, 312.73, 105.53), make_lm(root, "smol-60", 0.6, 40.81, 900.0, None,
                                                                         method="width")]
    text = summarize([*runs, *lms])
    assert "2 train runs, 2 compress runs, 2 language-model compress runs" in text
    assert ("| smol-80 | smollm2-135m | low-rank | 80.0 | 107.61M of 134.52M | 40.81 → 312.73 → 105.53 (2.59x) | "
            "lora, 3 steps | 13.7 |") in text
    assert "| smol-60 | smollm2-135m | width | 60.0 | 80.71M of 134.52M | 40.81 → 900.00 (22.05x) | none |" in text
    assert read_run(lms[0]).kind == "lm"
    out = write_report([*runs, *lms], tmp_path / "report")
    assert_png(out.parent / "perplexity.png")
    assert_png(out.parent / "compression.png")


def test_language_model_runs_are_compared_at_a_perplexity_budget(tmp_path):
    root = tmp_path / "runs"
    lms = [make_lm(root, "smol-90", 0.9, 40.0, 45.0, 40.6), make_lm(root, "smol-80", 0.8, 40.0, 60.0, 40.7),
           make_lm(root, "smol-70", 0.7, 40.0, 90.0, 48.0)]
    text = summarize(lms)  # default: perplexity x 1.02, the smallest within it is the 80% run (40.7 <= 40.8)
    assert "## Language models at a 0.0198-nat budget (perplexity x 1.02)" in text
    assert ("| smollm2-135m | fortunes-val | x 1.020 of dense | smol-80 | low-rank | 80.0 | "
            "40.00 → 60.00 → 40.70 (1.02x) |") in text
    text = summarize(lms, max_drop=math.log(1.25))  # a wider budget takes the 70% run
    assert "| smollm2-135m | fortunes-val | x 1.250 of dense | smol-70 | low-rank | 70.0 |" in text
    text = summarize(lms, max_drop=0.001)  # none within: the closest is named with its ratio
    assert "| none of 3 runs reaches it (closest: smol-90, x 1.015) | n/a | n/a | n/a |" in text
    with pytest.raises(LoritaError, match="judged both ways"):  # an accuracy compress run beside: units differ
        check_max_drop(0.5, [read_run(lms[0]), Run(Path("c"), "compress", {}, {}, [], None)])


def test_the_language_model_comparison_takes_odd_runs_without_a_traceback(tmp_path):
    root = tmp_path / "runs"
    far = make_lm(root, "far", 0.5, 40.0, 90.0, None)  # a loss past a float's exp: shown as inf, no OverflowError
    results = json.loads((far / "results.json").read_text())
    results["after_cut"]["fortunes-val"]["nll"] = 800.0
    write_json(far / "results.json", results)
    unsized = make_lm(root, "unsized", 0.9, 40.0, 40.1, None)  # params kept unknown: never chosen, never "closest"
    results = json.loads((unsized / "results.json").read_text())
    results["params"]["kept"] = None
    write_json(unsized / "results.json", results)
    text = summarize([far, unsized])
    assert "| none of 1 run reaches it (closest: far, x inf) | n/a | n/a | n/a |" in text
    assert "(perplexity x inf)" in summarize([far], max_drop=710.0)
    text = summarize([unsized])
    assert "| no run with its perplexities and params on this text | n/a |" in text


def test_two_pretrained_models_of_one_name_are_compared_apart(tmp_path):
    runs = []
    for folder, ppl in (("a", 40.5), ("b", 60.0)):
        run = make_lm(tmp_path / folder, "cut", 0.8, 40.0, ppl, None)
        results = json.loads((run / "results.json").read_text())
        results["source"]["text"] = f"/models/{folder}/model.gguf"
        results["dense"]["t|x<b>"] = results["dense"]["fortunes-val"]  # a text name that would break the table
        write_json(run / "results.json", results)
        runs.append(run)
    text = summarize(runs)
    assert "| /models/a/model.gguf | fortunes-val | x 1.020 of dense | cut |" in text
    assert "| /models/b/model.gguf | fortunes-val | x 1.020 of dense | none of 1 run reaches it" in text
    assert "| t\\|x&lt;b&gt; perplexity |" in text and "<b>" not in text


def test_one_relative_path_typed_in_two_folders_names_two_models(tmp_path):
    """The runs record the file each read: the same text `model.gguf` typed in /models/a and /models/b is two models."""
    runs = []
    for folder, ppl in (("a", 40.5), ("b", 60.0)):
        run = make_lm(tmp_path / folder, "cut", 0.8, 40.0, ppl, None)
        results = json.loads((run / "results.json").read_text())
        results["source"] = {"kind": "gguf", "folder": f"/models/{folder}", "gguf_file": "model.gguf",
                             "text": "model.gguf"}
        write_json(run / "results.json", results)
        runs.append(run)
    text = summarize(runs)
    assert "| /models/a/model.gguf | fortunes-val | x 1.020 of dense | cut |" in text
    assert "| /models/b/model.gguf | fortunes-val | x 1.020 of dense | none of 1 run reaches it" in text


@pytest.mark.parametrize("stage,value", [("dense", "41"), ("after_cut", [1.0]), ("after_recovery", {"x": 3})])
def test_a_damaged_language_model_run_names_the_field(tmp_path, stage, value):
    run = make_lm(tmp_path, "smol", 0.8, 40.8, 312.7, 105.5)
    results = json.loads((run / "results.json").read_text())
    results[stage] = {"fortunes-val": {"ppl": value}} if stage != "after_cut" else value
    write_json(run / "results.json", results)
    with pytest.raises(LoritaError, match=rf"results.json: {stage} must be an object of text -> "):
        read_run(run)


def test_every_plot_the_report_draws_is_one_a_later_overwrite_knows_as_loritas():
    from lorita.report.markdown import PLOTS
    from lorita.runs.folder import PLOT_FILES

    assert {name for name, _, _ in PLOTS} <= PLOT_FILES


def test_an_experiment_folder_is_pointed_to_its_runs(runs, tmp_path):
    folder = tmp_path / "exp"
    write_json(folder / "results.json", {"command": "experiment"})
    write_json(folder / "depth1" / "results.json", {"command": "train"})
    with pytest.raises(LoritaError, match=r"is a 'lorita experiment' folder, which holds its own report.md; .*"
                                          r"pass them \(depth1, e.g. .*exp/\*/\)"):
        read_run(folder)


def test_an_experiment_of_several_seeds_is_pointed_to_its_seeds_runs(tmp_path):
    folder = tmp_path / "exp"
    write_json(folder / "results.json", {"command": "experiment"})
    write_json(folder / "seed0" / "depth1" / "results.json", {"command": "train"})
    with pytest.raises(LoritaError, match=r"pass them \(seed0/depth1, e.g. .*exp/\*/\*/\)"):
        read_run(folder)
