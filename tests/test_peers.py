"""benchmarks/peers.py: LoRITa, plain SVD and Torch-Pruning cut to one MACs budget, on a tiny FCN / digits."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # several processes / a benchmark run end to end

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
BUDGET = 0.5
# Every method stops at the first cut at or below the budget, so MACs kept is never above it.
# How far below is one step of the method: a rank step of one layer (m + n MACs) for the SVD
# cuts, about one channel of the widest layer for Torch-Pruning. In the 64-32-32-10 FCN one
# such step is at most (64 + 32) / 3392 = 2.8% of the MACs; 5 points leaves room for a
# step that prunes two channels at once (tied importances).
TOLERANCE = 0.05


def _load_script():
    spec = importlib.util.spec_from_file_location("peers_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peers():
    return _load_script()


@pytest.fixture(scope="module")
def run(peers, tmp_path_factory):
    pytest.importorskip("sklearn")  # the digits dataset
    with_tp = importlib.util.find_spec("torch_pruning") is not None
    spec = peers.PeersSpec(
        models=["fcn"], dataset="digits", depths=[2, 3], budgets=[BUDGET], finetune_epochs=1,
        train={"epochs": 1, "batch_size": 64, "device": "cpu"}, model_kwargs={"fcn": {"width": 32, "hidden_layers": 2}},
        torch_pruning=with_tp, threads=1, repeats=3, batches=[1, 8])
    out = tmp_path_factory.mktemp("peers") / "out"
    results = peers.run_peers(spec, out)
    return out, results, with_tp


def test_results_json_is_well_formed(run, peers):
    out, results, with_tp = run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["complete"]
    fcn = on_disk["models"]["fcn"]
    assert fcn["epochs"] == {"train": 1, "finetune": 1, "total": 2}
    assert fcn["original"]["flops"] == 2 * fcn["original"]["macs"]
    assert set(fcn["uncompressed"]) == {"1", "2", "3"}
    methods = {"lorita-d2", "lorita-d3", "svd"} | ({"torch-pruning"} if with_tp else set())
    assert {r["method"] for r in fcn["rows"]} == methods
    for row in fcn["rows"]:
        assert "error" not in row, row
        assert row["flops"] == 2 * row["macs"]
        assert row["epochs"] == {"train": 1, "finetune": 1, "total": 2}
        assert row["finetune_epoch_kept"] in (0, 1)
        assert 0 <= row["test_acc"] <= 100 and math.isfinite(row["val_acc"])
        for batch in ("1", "8"):
            assert row["latency_ms"][batch]["median"] > 0
    # the table and the plot are made from the file alone
    text = peers.table(on_disk)
    assert text.count("\n") == 1 + 3 + len(methods)  # header, rule, 3 uncompressed rows, one row per method
    png = peers.plot(on_disk, out / "accuracy_vs_macs.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("method", ["lorita-d2", "lorita-d3", "svd"])
def test_svd_cuts_meet_the_budget(run, method):
    _, results, _ = run
    row = next(r for r in results["models"]["fcn"]["rows"] if r["method"] == method)
    assert row["budget_met"]
    assert BUDGET - TOLERANCE <= row["macs_kept"] <= BUDGET


def test_torch_pruning_meets_the_budget(run):
    pytest.importorskip("torch_pruning")
    _, results, _ = run
    row = next(r for r in results["models"]["fcn"]["rows"] if r["method"] == "torch-pruning")
    assert row["budget_met"]
    assert BUDGET - TOLERANCE <= row["macs_kept"] <= BUDGET
    assert row["widths"]["head"] == 10  # the classifier keeps its outputs
    assert row["params"] < results["models"]["fcn"]["original"]["params"]
