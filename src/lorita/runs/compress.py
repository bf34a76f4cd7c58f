"""``compress_run``: cut a trained run to low rank, optionally fine-tune, into a new run folder.

Everything that can be checked is checked before the (slow) model and data are loaded, and
the output folder appears only when complete. A caller that already holds the merged model,
the data and the ranks (``lorita demo``) passes them in: nothing is reloaded or recomputed.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import lorita
from lorita.checks import check_choice, check_fraction, check_int, check_number
from lorita.errors import LoritaError
from lorita.linalg import check_finite
from lorita.runs.config import STRATEGIES, CompressConfig, train_config_of
from lorita.runs.folder import read_json, write_json
from lorita.runs.output import RunOutput
from lorita.runs.train import example_input
from lorita.train.config import MAX_RATE
from lorita.targets import skipped_layers

log = logging.getLogger(__name__)

# strategy -> the options it takes (all required except where a default is given)
_OPTIONS: dict[str, dict[str, Any]] = {
    "uniform": {"ratio": None}, "energy": {"energy": None}, "global": {"threshold": None},
    "budget": {"params": None, "flops": None, "latency": None, "batch": None, "layout": None},
    "accuracy": {"max_drop": 1.0, "max_evals": 12}, "ranks": {},
}
# layouts of a latency budget (lorita.latency.latency_budget): "auto" takes channels_last where it measures faster
LATENCY_LAYOUTS = ("auto", "contiguous", "channels_last")
MAX_BATCH = 65536  # --batch of a latency budget: the model is timed on a batch this large, on this machine
MAX_TIMING_BYTES = 1 << 30  # and that batch of inputs is made in memory first
UNITS = {"params": "count", "macs": "multiply-accumulates per example", "flops": "2 x MACs per example",
         "acc": "percent"}


def check_options(strategy: str, options: dict) -> dict:
    """The options of ``strategy``, checked (and completed with defaults) before any work.

    Example:
        >>> check_options("accuracy", {"max_drop": 0.5})
        {'max_drop': 0.5, 'max_evals': 12}
    """
    if strategy not in STRATEGIES:
        raise LoritaError(f"unknown strategy {strategy!r}; strategies: {', '.join(STRATEGIES)}")
    allowed = _OPTIONS[strategy]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise LoritaError(f"strategy {strategy!r} does not take {', '.join(unknown)}; it takes "
                          f"{', '.join(allowed) or 'nothing else'}")
    out = {k: v for k, v in {**allowed, **options}.items() if v is not None}
    if strategy == "budget":
        if sum(k in out for k in ("params", "flops", "latency")) != 1:
            raise LoritaError("strategy 'budget' takes exactly one of params or flops (a target fraction of the size) "
                              "or latency (a target fraction of the measured time)")
        if "latency" in out:
            out = {"batch": 1, "layout": "auto", **out}
        elif "batch" in out or "layout" in out:
            raise LoritaError("batch and layout belong to a latency budget (--latency); params and flops "
                              "budgets count, they do not time")
    elif strategy != "ranks":
        missing = [k for k in allowed if k not in out]
        if missing:
            raise LoritaError(f"strategy {strategy!r} needs {', '.join(missing)}")
    for key, value in out.items():
        if key in ("ratio", "energy", "params", "flops", "latency"):
            check_fraction(key, value)
        elif key == "batch":
            check_int("batch", value, maximum=MAX_BATCH, meaning="the batch size the latency is measured at")
        elif key == "layout":
            check_choice("layout", value, LATENCY_LAYOUTS)
        elif key == "threshold":
            check_fraction(key, value, low_open=False)
        elif key == "max_drop":
            check_number("max_drop", value, minimum=0)
        elif key == "max_evals":
            check_int("max_evals", value)
    return out


def _check_source(source: Path) -> None:
    if not (source / "model.lorita").is_file():
        raise LoritaError(f"{source} has no model.lorita: did 'lorita train' finish there?")
    read_json(source / "results.json", "'lorita train'")


def compress_run(source: str | Path, out: str | Path, strategy: str, options: dict | None = None, *,
                 ranks: dict[str, int] | None = None, model: nn.Module | None = None, data=None,
                 finetune_epochs: int = 0, finetune_lr: float | None = None, overwrite: bool = False,
                 progress: bool = True, nested: bool = False, svd_cache=None, calibrate: int = 0,
                 int8: bool = False) -> dict:
    """Compress the run in ``source`` into ``out`` and return its results.json content.

    ``strategy`` and ``options`` choose the ranks (``lorita.select_ranks``); or pass
    ``strategy="ranks"`` with ``ranks=`` already chosen. ``model``: the run's merged
    model when the caller holds it (else ``source/model.lorita`` is loaded), ``data``
    likewise, and ``svd_cache`` (a ``lorita.svd_cache.SVDCache`` of that model) when its
    layers were already decomposed. ``nested``: ``out`` is a new folder inside another
    command's staging folder. ``calibrate``: whitened (activation-aware) cuts, calibrated
    on that many batches of the run's training data (``lorita.whiten``; with the energy,
    uniform or ranks strategy: energy then counts each layer's output energy). ``int8``: the
    cut (and fine-tuned) model's weights are then stored in int8 (``lorita.quantize``).

    Example:
        >>> import tempfile
        >>> from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, train_run
        >>> config = RunConfig(ModelSpec("fcn", {"width": 8, "hidden_layers": 1},
        ...                              {"num_classes": 10, "in_channels": 1, "image_size": 8}),
        ...                    DataSpec("digits"), ComposeSpec(depth=2), lorita.TrainConfig(epochs=1, device="cpu"))
        >>> folder = Path(tempfile.mkdtemp()) / "run"
        >>> run = train_run(folder, config, config.dataset.load(), progress=False)
        >>> results = compress_run(folder, folder.with_name("cut"), "energy", {"energy": 0.95}, progress=False)
        >>> results["kept"]["params"] < 1, (folder.with_name("cut") / "model.lorita").is_file()
        (True, True)
    """
    from lorita.select import search_accuracy, select_ranks
    from lorita.train import evaluate

    source, out = Path(source), Path(out)
    options = check_options(strategy, dict(options or {}))
    if (strategy == "ranks") != (ranks is not None):
        raise LoritaError("pass ranks= exactly when strategy is 'ranks'")
    check_int("finetune_epochs", finetune_epochs, minimum=0)
    check_int("calibrate", calibrate, minimum=0, meaning="training batches for whitened cuts; 0: plain SVD")
    if calibrate and strategy not in ("energy", "uniform", "ranks"):
        raise LoritaError(f"--calibrate works with --energy, --ratio or given ranks, not the {strategy} strategy "
                          "(its choice is made on the plain spectrum)")
    if finetune_lr is not None:
        check_number("finetune_lr", finetune_lr, minimum=0, low_open=True, maximum=MAX_RATE)
    if not isinstance(int8, bool):
        raise LoritaError(f"int8 must be True or False, got {int8!r}")
    _check_source(source)
    train_config = train_config_of(source)
    ft_config = None
    if finetune_epochs:
        base = train_config.train
        ft_config = dataclasses.replace(base, epochs=finetune_epochs, warmup_epochs=0, schedule="cosine",
                                        lr=finetune_lr if finetune_lr is not None else base.lr / 10)
    # a nested run's source sits in the same staging folder, which is renamed when done: record it relative
    recorded = os.path.relpath(source, out.parent) if nested else str(source)
    config = CompressConfig(recorded, strategy, {**options, **({"calibrate": calibrate} if calibrate else {}),
                                                 **({"int8": True} if int8 else {})}, ft_config)
    inputs = [(source, "the run it compresses"), (train_config.dataset.data_dir, "its data (the run's data_dir)")]
    output = None if nested else RunOutput(out, overwrite=overwrite, inputs=inputs)  # checked before the slow part
    start = time.time()
    data = data if data is not None else train_config.dataset.load(model=train_config.model, train=train_config.train)
    if calibrate:
        check_calibrate(data, train_config.train, calibrate)
    if model is None:
        model = lorita.merge(lorita.load(source / "model.lorita"), inplace=True)  # no second copy
    merged = model.eval()
    for name, p in merged.named_parameters():  # a damaged model: name the layer before anything is written
        check_finite(p.detach(), name)
    example = example_input(data)
    original = lorita.profile(merged, example)
    before_val, before_test = evaluate(merged, data.val)[0], evaluate(merged, data.test)[0]
    search, evaluations = None, 2  # before: validation and test
    latency = None
    grams = calibration_grams(merged, data, train_config.train, calibrate) if calibrate else None
    if strategy == "ranks":
        pass
    elif strategy == "budget" and "latency" in options:
        from lorita.latency import latency_budget

        timing_input = _batch_of(example, options["batch"])
        found = latency_budget(merged, options["latency"], timing_input, layout=options["layout"])
        ranks, latency = found.ranks, found
    elif strategy == "accuracy":
        found = search_accuracy(merged, lambda m: evaluate(m, data.val)[0], finetune=None, example_input=example,
                                **options)
        ranks, search = found.ranks, found.search
        evaluations += found.evaluations
    elif grams is not None and strategy == "energy":
        ranks = _whitened_energy_ranks(merged, grams, options["energy"], example)
    else:
        ranks = select_ranks(merged, strategy, example_input=example, **options)
    # the example input also leaves plain any layer whose parent reads its weight instead of calling it
    small = lorita.compress(merged, ranks=ranks, svd_cache=svd_cache if grams is None else None,
                            example_input=example, calibration=grams).eval()
    cut = lorita.profile(small, example)
    latency_results = None
    if latency is not None:  # the real cut (SVD weights), timed against the dense model in the chosen layout
        latency_results = _latency_results(latency, merged, small, timing_input)
        if latency.layout == "channels_last":
            small = small.to(memory_format=torch.channels_last)
    after_cut = {"params": cut.params, "macs": cut.macs, "flops": cut.flops,
                 "val_acc": evaluate(small, data.val)[0], "test_acc": evaluate(small, data.test)[0]}
    after_finetune = None
    if ft_config is not None:
        from lorita.train import train

        result = train(small, data, ft_config, progress=progress)
        if result.best_state is not None:
            small.load_state_dict(result.best_state)
        small = small.cpu().eval()
        after_finetune = {"val_acc": evaluate(small, data.val)[0], "test_acc": evaluate(small, data.test)[0]}
    lowrank = {n: m.rank for n, m in small.named_modules() if isinstance(m, (lorita.LowRankLinear, lorita.LowRankConv2d))}
    after_int8 = None
    if int8:
        small = lorita.quantize(small, "int8")
        after_int8 = {"val_acc": evaluate(small, data.val)[0], "test_acc": evaluate(small, data.test)[0]}
    results = {
        "command": "compress", "source": recorded, "strategy": strategy, "options": config.options,
        "ranks": {n: int(r) for n, r in ranks.items()}, "dense_layers": sorted(set(ranks) - set(lowrank)),
        "skipped_layers": skipped_layers(merged, example_input=example),
        "original": {"params": original.params, "macs": original.macs, "flops": original.flops},
        "before": {"val_acc": before_val, "test_acc": before_test},
        "after_cut": after_cut, "after_finetune": after_finetune,
        **({"after_int8": after_int8} if int8 else {}),
        "kept": {k: cut_value / max(getattr(original, k), 1) for k, cut_value in
                 (("params", cut.params), ("macs", cut.macs), ("flops", cut.flops))},
        "evaluations": evaluations,
        "search": [dataclasses.asdict(s) for s in search.steps] if search is not None else None,
        **({"latency": latency_results} if latency_results is not None else {}),
        "seconds": time.time() - start,
        "units": UNITS,
    }
    if output is None:
        out.mkdir()
        _write(out, config, small, results)
    else:
        with output as folder:
            _write(folder, config, small, results)
    return results


def _batch_of(example: torch.Tensor, batch: int) -> torch.Tensor:
    """``batch`` examples shaped like ``example``: seeded random values for images, ``example``'s own tokens repeated
    for integer inputs (timing depends on shapes, not values)."""
    shape = (batch, *example.shape[1:])
    each = example[:1].numel() * example.element_size()
    if batch * each > MAX_TIMING_BYTES:  # checked before anything is allocated
        raise LoritaError(f"--batch {batch} needs a timing input of {batch * each / 2**30:.1f} GiB ({batch} examples "
                          f"of shape {tuple(example.shape[1:])}); pass --batch {MAX_TIMING_BYTES // each} or less")
    if example.is_floating_point():
        return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=example.dtype)
    return example[:1].expand(shape).clone()


def _latency_results(found, merged: nn.Module, small: nn.Module, timing_input: torch.Tensor) -> dict:
    """What results.json says about a latency budget: the request, what was predicted, what the search measured
    on random-weight pairs, and the compressed model itself timed against the dense one."""
    from lorita.latency import measure_latency

    channels_last = found.layout == "channels_last"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = timing_input.contiguous(memory_format=fmt) if timing_input.dim() == 4 else timing_input
    dense, cut = copy.deepcopy(merged).to(memory_format=fmt), copy.deepcopy(small).to(memory_format=fmt)
    seconds = measure_latency({"dense": dense, "cut": cut}, x)
    out = {k: v for k, v in found.to_dict().items() if k != "ranks"}
    out["final"] = {"dense_s": seconds["dense"], "cut_s": seconds["cut"], "measured": seconds["cut"] / seconds["dense"]}
    return out


def check_calibrate(data, train, batches: int) -> None:
    """Refuse more calibration batches than the training data gives (they would be recorded, not used).

    Example:
        >>> from lorita.runs.config import DataSpec
        >>> check_calibrate(DataSpec("digits").load(), lorita.TrainConfig(batch_size=128), 11)
        >>> check_calibrate(DataSpec("digits").load(), lorita.TrainConfig(batch_size=128), 12)
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: calibrate=12, but the training data gives 11 batches of 128; calibrate on at most 11
    """
    available = data.train.num_batches(train.batch_size)
    if batches > available:
        raise LoritaError(f"calibrate={batches}, but the training data gives {available} batches of "
                          f"{train.batch_size}; calibrate on at most {available}")


def calibration_grams(model: nn.Module, data, train, batches: int) -> dict:
    """Input Gram matrices of the model's layers over the first ``batches`` training batches of epoch 0."""
    from lorita.whiten import collect_grams

    check_calibrate(data, train, batches)
    inputs = (x for x, _ in data.train.batches(train.batch_size, seed=train.seed, epoch=0))
    return collect_grams(model, inputs, max_batches=batches)


def _whitened_energy_ranks(model: nn.Module, grams: dict, energy: float, example) -> dict[str, int]:
    """Per layer, the smallest rank holding ``energy`` of its whitened spectrum's sum of squares."""
    from lorita.linalg import energy_rank
    from lorita.lowrank import weight_matrix
    from lorita.whiten import whitened_spectrum

    modules = dict(model.named_modules())
    return {name: energy_rank(whitened_spectrum(weight_matrix(modules[name]).detach(), grams[name]), energy)
            for name in lorita.spectrum(model, example_input=example)}


def _write(folder: Path, config: CompressConfig, small: nn.Module, results: dict) -> None:
    write_json(folder / "config.json", config.to_dict())
    lorita.save(small, folder / "model.lorita")
    write_json(folder / "results.json", results)
