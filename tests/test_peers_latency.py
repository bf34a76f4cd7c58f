"""benchmarks/peers.py --budget-kind latency: every column cut to the same measured latency, on a tiny FCN / digits.

The clock is faked (weights + a fixed cost per thin pair and per layer), so the cuts are known
to meet their budgets; the real clock is the benchmark's business, not the test's.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from torch import nn

import lorita.latency as latency_module
from lorita.lowrank import LOWRANK_TYPES

pytestmark = pytest.mark.slow  # trains three models end to end

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
BUDGET = 0.6


def clock(module, x, **_):
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    pairs = sum(isinstance(m, LOWRANK_TYPES) for m in module.modules())
    return float(sum(m.weight.numel() for m in layers) + 200 * pairs)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("sklearn")
    spec_ = importlib.util.spec_from_file_location("peers_latency_benchmark", SCRIPT)
    peers = importlib.util.module_from_spec(spec_)
    sys.modules[spec_.name] = peers
    spec_.loader.exec_module(peers)
    patch = pytest.MonkeyPatch()
    patch.setattr(latency_module, "time_module", clock)
    patch.setattr(latency_module, "_CACHE", {})
    with_tp = importlib.util.find_spec("torch_pruning") is not None
    spec = peers.PeersSpec(
        models=["fcn"], dataset="digits", depths=[2], budgets=[BUDGET], finetune_epochs=1,
        train={"epochs": 1, "batch_size": 64, "device": "cpu"}, model_kwargs={"fcn": {"width": 64, "hidden_layers": 2}},
        torch_pruning=with_tp, threads=1, repeats=3, batches=[1], budget_kind="latency", latency_batches=[1, 8])
    out = tmp_path_factory.mktemp("peers") / "out"
    try:
        results = peers.run_peers(spec, out)
    finally:
        patch.undo()
    return peers, out, results, with_tp


def test_every_column_is_cut_to_the_latency_budget(run):
    peers, out, results, with_tp = run
    rows = results["models"]["fcn"]["rows"]
    methods = {"lorita-d2", "svd"} | ({"torch-pruning"} if with_tp else set())
    assert {(r["method"], r["batch"]) for r in rows} == {(m, b) for m in methods for b in (1, 8)}
    for r in rows:
        assert "error" not in r, r
        assert r["budget_kind"] == "latency" and r["budget_met"]
        assert 0 < r["latency_kept"] <= BUDGET
        if r["method"] != "torch-pruning":
            assert 0.9 * BUDGET <= r["latency_kept"]  # the fake clock is additive: the search lands in the window
            assert set(r["layers"]) == set(r["ranks"]) and isinstance(r["kept_dense"], list)
    on_disk = json.loads((out / "results.json").read_text())
    text = peers.table(on_disk)
    assert "latency budget | batch | latency kept" in text
    assert text.count("\n") == 1 + 2 + len(rows)  # header, rule, 2 uncompressed rows (N=1, N=2), one per cut
    assert "layers left dense" in peers.layers_table(on_disk)
    png = peers.plot(on_disk, out / "accuracy_vs_latency.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
