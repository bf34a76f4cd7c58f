"""``lorita compress RUN --latency F [--batch B] [--channels-last]``: flags, options and the run's results.

The clock is faked (weights + a fixed cost per thin pair), so which layers are cut and every
recorded fraction are known; nothing here depends on the machine's speed.
"""

import json

import pytest
import torch

import lorita
import lorita.latency as latency_module
from lorita import LoritaError
from lorita.cli import build_parser
from lorita.cli.compress_cmd import cut_from_args
from lorita.cutspec import Latency, cut_from_strategy
from lorita.lowrank import LOWRANK_TYPES
from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, compress_run, read_json, train_run
from lorita.train import TrainConfig

OVERHEAD = 1000


def clock(module, x, **_):
    """Seconds = weights + OVERHEAD per thin pair (the same alone and in a model: predictions are exact)."""
    weights = sum(p.numel() for n, p in module.named_parameters() if n.endswith("weight"))
    return float(weights + OVERHEAD * sum(isinstance(m, LOWRANK_TYPES) for m in module.modules()))


@pytest.fixture
def fake_clock(monkeypatch):
    monkeypatch.setattr(latency_module, "time_module", clock)
    monkeypatch.setattr(latency_module, "_CACHE", {})


def parse(*argv):
    return cut_from_args(build_parser().parse_args(["compress", "runs/x", "--out", "runs/y", *argv]))


def test_flags_become_a_latency_cut():
    assert parse("--latency", "0.5") == Latency(0.5, batch=1, layout="auto")
    assert parse("--latency", "0.5", "--batch", "64", "--channels-last") == \
        Latency(0.5, batch=64, layout="channels_last")
    assert parse("--latency", "0.5", "--channels-last", "off").layout == "contiguous"
    assert parse("--latency", "0.5", "--channels-last", "auto").layout == "auto"
    assert parse("--latency", "0.5", "--calibrate", "2") == Latency(0.5, batch=1, layout="auto", calibrate=2)
    with pytest.raises(LoritaError, match="--batch and --channels-last go with --latency"):
        parse("--flops", "0.5", "--batch", "8")
    with pytest.raises(SystemExit):  # argparse: one budget at a time
        parse("--flops", "0.5", "--latency", "0.5")


def test_a_latency_cut_checks_itself():
    with pytest.raises(LoritaError, match="batch must be an integer from 1 to 65536"):
        Latency(0.5, batch=0)
    with pytest.raises(LoritaError, match=r"batch must be an integer from 1 to 65536 \(the batch size"):
        Latency(0.5, batch=1099511627776)  # refused before anything is made
    with pytest.raises(LoritaError, match="layout must be one of"):
        Latency(0.5, layout="nhwc")
    with pytest.raises(LoritaError, match="latency must be"):
        Latency(2.0)
    # the options of a run written before Latency read as one
    assert cut_from_strategy("budget", {"latency": 0.5, "batch": 8, "layout": "auto"}) == \
        Latency(0.5, batch=8, layout="auto")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    inputs = {"num_classes": 10, "in_channels": 1, "image_size": 8}
    config = RunConfig(ModelSpec("fcn", {"width": 64, "hidden_layers": 2}, inputs), DataSpec("digits"),
                       ComposeSpec(2), TrainConfig(epochs=1, batch_size=64, device="cpu"))
    folder = tmp_path_factory.mktemp("latency-run")
    train_run(folder / "run", config, config.dataset.load(), progress=False)
    return folder


def test_compress_run_records_predicted_and_measured_latency(trained, fake_clock):
    tmp_path = trained
    results = compress_run(tmp_path / "run", tmp_path / "cut", Latency(0.6, batch=8, layout="auto"),
                           progress=False)
    lat = results["latency"]
    assert lat["latency"] == 0.6 and lat["batch"] == 8 and lat["layout"] == "contiguous"  # auto: no gain measured
    assert 0.54 <= lat["measured"] <= 0.6 and lat["predicted"] == pytest.approx(lat["measured"])
    assert lat["final"]["measured"] == pytest.approx(lat["measured"])  # the real cut has the searched shapes
    assert set(lat["dense_by_layout"]) == {"contiguous", "channels_last"}
    assert results["cut"] == Latency(0.6, batch=8, layout="auto").to_dict()
    on_disk = read_json(tmp_path / "cut" / "results.json", "compress")
    assert on_disk["latency"]["measured"] == lat["measured"]
    config_json = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert config_json["cut"] == {"kind": "latency", "latency": 0.6, "batch": 8, "layout": "auto", "tolerance": 0.1,
                                  "rounds": 4, "repeats": 3, "points": 8, "calibrate": 0, "multiple": 1, "int8": False}
    small = lorita.load(tmp_path / "cut" / "model.lorita")
    assert {n: m.rank for n, m in small.named_modules() if isinstance(m, LOWRANK_TYPES)} == \
        {n: r for n, r in results["ranks"].items() if n not in results["dense_layers"]}
    assert small(torch.zeros(8, 1, 8, 8)).shape == (8, 10)


def test_with_int8_the_model_written_is_timed_too(trained, fake_clock, capsys):
    results = compress_run(trained / "run", trained / "int8", Latency(0.6, batch=8, layout="auto", int8=True),
                           progress=False)
    lat, small = results["latency"], lorita.load(trained / "int8" / "model.lorita")
    assert lat["final"]["measured"] == pytest.approx(lat["measured"])  # the float cut the search predicted
    pairs = sum(isinstance(m, LOWRANK_TYPES) for m in small.modules())
    assert pairs and lat["final_int8"]["cut_s"] == clock(small, None)  # the int8 model: weights in buffers
    assert lat["final_int8"]["cut_s"] < lat["final"]["cut_s"]
    assert lat["final_int8"]["dense_s"] == lat["final"]["dense_s"]
    from lorita.cli import main

    assert main(["compress", str(trained / "run"), "--latency", "0.6", "--batch", "8", "--int8", "--no-progress",
                 "--out", str(trained / "int8-cli")]) == 0
    printed = capsys.readouterr().out
    timed = json.loads((trained / "int8-cli" / "results.json").read_text())["latency"]
    assert f"(the compressed model: {timed['final']['measured']:.3f} in float, " \
           f"{timed['final_int8']['measured']:.3f} with its int8 weights)" in printed


def test_a_forced_channels_last_layout_is_recorded_and_the_model_saved(trained, fake_clock):
    results = compress_run(trained / "run", trained / "cl", Latency(0.7, batch=1, layout="channels_last"),
                           progress=False)
    assert results["latency"]["layout"] == "channels_last" and results["latency"]["batch"] == 1
    assert results["latency"]["dense_by_layout"] == {}  # forced: nothing to compare
    small = lorita.load(trained / "cl" / "model.lorita")
    assert small(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_a_timing_batch_too_large_for_memory_is_refused_before_it_is_made(trained, monkeypatch):
    monkeypatch.setattr(latency_module, "MAX_TIMING_BYTES", 1000)  # 8 x 8 float32 inputs: 3 fit, not 4
    with pytest.raises(LoritaError, match=r"--batch 4 needs a timing input of 0\.0 GiB \(4 examples of shape "
                                          r"\(1, 8, 8\)\); pass --batch 3 or less"):
        compress_run(trained / "run", trained / "big", Latency(0.5, batch=4, layout="auto"), progress=False)
    assert not (trained / "big").exists() and not (trained / "big.partial").exists()


def test_latency_one_keeps_the_dense_model_where_no_cut_is_faster(trained, monkeypatch):
    # every thin pair costs far more in the model than the weights it saves: no cut meets 1.0, the dense does
    monkeypatch.setattr(latency_module, "time_module", lambda m, x, **_: clock(m, x) * 1000 ** sum(
        isinstance(k, LOWRANK_TYPES) for k in m.modules()))
    monkeypatch.setattr(latency_module, "_CACHE", {})
    results = compress_run(trained / "run", trained / "one", Latency(1.0, batch=1, layout="auto"), progress=False)
    assert results["latency"]["measured"] == 1.0 and results["kept"]["params"] == 1.0
    assert sorted(results["dense_layers"]) == sorted(results["ranks"])
