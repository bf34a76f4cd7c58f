"""``compress_run``: cut a trained run to low rank, optionally fine-tune, into a new run folder.

Two layers: ``compress_run`` reads the run from disk, checks everything that can be checked
before the (slow) model and data are loaded, and writes the folder only when complete;
``compress_model`` does the work on objects in memory (a merged model or its ``Spectra``,
the data, a ``lorita.cutspec`` way to cut) and is what an experiment calls on the models it
holds, so nothing is reloaded or computed twice.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from lorita import jsonio
from lorita.batchnorm import recalibrate_batchnorm
from lorita.checks import check_int, check_number
from lorita.compose import merge
from lorita.cutspec import Accuracy, CutSpec, Latency
from lorita.data.datasets import data_folder
from lorita.errors import LoritaError
from lorita.latency import LatencyBudget, at_batch, compare_latency
from lorita.linalg import check_finite
from lorita.lm.sources import PACKAGED
from lorita.metric import ACCURACY, Metric, metric_named
from lorita.lowrank import LOWRANK_TYPES, has_lowrank
from lorita.profile import profile
from lorita.runs.alternatives import training_batches
from lorita.runs.config import CompressConfig, data_of, train_config_of
from lorita.quantize import quantize
from lorita.runs.folder import read_json, write_json
from lorita.runs.output import RunOutput
from lorita.runs.train import example_input
from lorita.search import AccuracySearch
from lorita.select import choose_ranks
from lorita.serialization import load, save
from lorita.spectra import Spectra
from lorita.train import TrainConfig, evaluate, finetune as finetune_kept
from lorita.train.config import MAX_EPOCHS, MAX_RATE

log = logging.getLogger(__name__)

UNITS = {"params": "count", "macs": "multiply-accumulates per example", "flops": "2 x MACs per example",
         "acc": "percent", "loss": "nats per prediction (per character for text), the mean cross-entropy"}


def scores(model: nn.Module, data) -> dict:
    """``model``'s accuracy and loss on ``data``'s validation and test splits (one pass over each).

    Example:
        >>> from lorita.data import load_dataset
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> sorted(scores(net, load_dataset("digits")))
        ['test_acc', 'test_loss', 'val_acc', 'val_loss']
    """
    val_acc, val_loss = evaluate(model, data.val)
    test_acc, test_loss = evaluate(model, data.test)
    return {"val_acc": val_acc, "test_acc": test_acc, "val_loss": val_loss, "test_loss": test_loss}


def with_default_drop(how: CutSpec, metric: Metric) -> CutSpec:
    """``how`` with an ``Accuracy`` cut's unset ``max_drop`` set to ``metric``'s default (1 point of accuracy, or
    ln 1.02 nats of loss); any other way to cut as it is.

    Example:
        >>> from lorita.metric import LOSS
        >>> round(with_default_drop(Accuracy(), LOSS).max_drop, 4), with_default_drop(Accuracy(0.5), LOSS).max_drop
        (0.0198, 0.5)
    """
    if isinstance(how, Accuracy) and how.max_drop is None:
        return dataclasses.replace(how, max_drop=metric.default_drop)
    return how


def _check_source(source: Path) -> None:
    if source.is_file() and source.suffix == ".lorita":
        raise LoritaError(f"{source} is a model file; lorita compress cuts a run folder 'lorita train' wrote (it holds "
                          "the validation data the cut is chosen on); cut a model file in Python: "
                          "lorita.compress(lorita.load(path, model=YourModel()), ratio=0.5)")
    if not source.is_dir():
        close = difflib.get_close_matches(str(source).strip().lower(), list(PACKAGED), n=1, cutoff=0.6)
        hint = f" (or did you mean the packaged language model {close[0]!r}?)" if close else \
            f", or a pretrained language model: a packaged one ({', '.join(PACKAGED)}), a .gguf file or a Hugging " \
            "Face model folder"
        raise LoritaError(f"{source} does not exist or is not a folder: give a run folder 'lorita train' wrote{hint}")
    if not (source / "model.lorita").is_file():
        hint = ""
        if (source / "config.json").is_file() and (any(source.glob("*.safetensors")) or any(source.glob("*.bin"))):
            try:  # a pretrained model's folder that was not taken for one: say why
                jsonio.read(source / "config.json")
                hint = " It looks like a Hugging Face model folder, but its config.json names no model_type."
            except LoritaError as err:
                hint = f" It looks like a Hugging Face model folder, but {err}."
        if os.path.lexists(source / "model.lorita"):
            raise LoritaError(f"{source / 'model.lorita'} is not a regular file; a run's model is one file "
                              "'lorita train' wrote")
        raise LoritaError(f"{source} has no model.lorita: did 'lorita train' finish there?{hint}")
    read_json(source / "results.json", "'lorita train'")


def finetune_recipe(recipe: TrainConfig, epochs: int, lr: float | None = None) -> TrainConfig:
    """The fine-tuning recipe after a cut: ``recipe``, ``epochs`` long, cosine from ``lr`` (default: the
    recipe's lr / 10), no warm-up.

    Example:
        >>> finetune_recipe(TrainConfig(lr=0.1), 2).lr
        0.01
    """
    return dataclasses.replace(recipe, epochs=epochs, warmup_epochs=0, schedule="cosine",
                               lr=lr if lr is not None else recipe.lr / 10)


def compress_run(source: str | Path, out: str | Path, how: CutSpec, *, finetune_epochs: int = 0,
                 finetune_lr: float | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Compress the run in ``source`` into ``out`` as ``how`` says; return its results.json content.

    ``how``: a way to cut (``lorita.cutspec``: ``Energy(0.95)``, ``Budget(flops=0.3)``,
    ``Latency(0.5, batch=64)``, ``Accuracy(max_drop=1.0)``, ``Ranks({...})``; with
    ``calibrate=N`` whitened on N batches of the run's training data; with ``int8=True`` the
    cut, fine-tuned model's weights are then stored in int8). ``finetune_epochs``: fine-tune
    the cut model that long (``finetune_lr``, default the run's lr / 10). The run is judged as it was
    trained (its ``select_by``): an ``Accuracy`` cut of a language model (``select_by="val_loss"``) keeps its
    validation loss within ``max_drop`` nats (None: ln 1.02); every stage records accuracy and loss.

    Example:
        >>> import tempfile, lorita
        >>> from lorita.cutspec import Energy
        >>> from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, train_run
        >>> config = RunConfig(ModelSpec("fcn", {"width": 8, "hidden_layers": 1},
        ...                              {"num_classes": 10, "in_channels": 1, "image_size": 8}),
        ...                    DataSpec("digits"), ComposeSpec(depth=2), lorita.TrainConfig(epochs=1, device="cpu"))
        >>> folder = Path(tempfile.mkdtemp()) / "run"
        >>> run = train_run(folder, config, config.dataset.load(), progress=False)
        >>> results = compress_run(folder, folder.with_name("cut"), Energy(0.95), progress=False)
        >>> results["kept"]["params"] < 1, (folder.with_name("cut") / "model.lorita").is_file()
        (True, True)
    """
    source, out = Path(source), Path(out)
    if not isinstance(how, CutSpec):
        raise LoritaError(f"how must be a way to cut (lorita.cutspec: Energy(0.95), Budget(flops=0.3), ...), "
                          f"got {type(how).__name__}")
    check_int("finetune_epochs (--finetune-epochs)", finetune_epochs, minimum=0, maximum=MAX_EPOCHS)
    if finetune_lr is not None:
        check_number("finetune_lr", finetune_lr, minimum=0, low_open=True, maximum=MAX_RATE)
    _check_source(source)
    train_config = train_config_of(source)
    metric = metric_named(train_config.train.select_by)
    how = with_default_drop(how, metric)  # config.json and results.json record the same cut
    finetune = finetune_recipe(train_config.train, finetune_epochs, finetune_lr) if finetune_epochs else None
    # recorded whole, so a later command finds it from any folder (lorita.cut_source)
    config = CompressConfig(os.path.abspath(source), how, finetune)
    inputs = [(source, "the run it compresses"), (data_folder(train_config.dataset.data_dir),
                                                   "its data (the run's data_dir)")]
    output = RunOutput(out, overwrite=overwrite, inputs=inputs)  # checked before the slow part
    try:
        data = data_of(source)
        if how.whitened:  # after the data is read, before the model is
            check_calibrate(data, train_config.train, how.calibrate)
        model = merge(load(source / "model.lorita"), inplace=True)  # no second copy
        small, results = compress_model(model, data, how, recipe=train_config.train, finetune=finetune,
                                        metric=metric, progress=progress)
    except BaseException:  # the lock goes now, not when the error is garbage-collected (a notebook keeps it)
        output.abandon()
        raise
    with output as folder:
        write_cut(folder, config, small, results)
    return {"command": "compress", "source": config.source, **results}


def compress_model(model: nn.Module | Spectra, data, how: CutSpec, *, recipe: TrainConfig | None = None,
                   finetune: TrainConfig | None = None, before: dict | None = None, batchnorm: int = 0,
                   metric: Metric = ACCURACY, progress: bool = True) -> tuple[nn.Module, dict]:
    """Cut a merged ``model`` (or its ``Spectra``, shared with other cuts) as ``how`` says, measure it on ``data``
    before and after, fine-tune it with ``finetune`` if given, store it in int8 if ``how.int8``; return the model
    and the results.

    ``recipe``: the training recipe the calibration batches of a whitened cut are drawn with
    (batch size, seed), and the BatchNorm re-estimation's: ``batchnorm=N`` re-estimates the cut
    model's BatchNorm statistics on N shuffled training batches (epoch 0 of the recipe's seed,
    ``lorita.runs.alternatives.training_batches``) before it is measured, unless the cut kept
    every layer dense. ``before``: the
    uncompressed model's ``{"val_acc", "test_acc"}`` (``metric``'s keys at least) when the caller already
    measured them. ``metric``: what an ``Accuracy`` cut keeps within ``max_drop`` of the uncompressed model
    (``lorita.metric``: accuracy points, or nats of loss for a language model); its search records scores
    (higher is better: minus the loss). Every other stage records accuracy and loss (``scores``). Size is
    measured on the example input of ``data``.

    Example:
        >>> from lorita.cutspec import Threshold
        >>> from lorita.data import load_dataset
        >>> data = load_dataset("digits")
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> small, results = compress_model(net, data, Threshold(0.5), progress=False)
        >>> results["kept"]["params"] < 1
        True
    """
    start = time.time()
    how = with_default_drop(how, metric)  # an unset max_drop: the default of what the model is judged by
    check_int("batchnorm", batchnorm, minimum=0, meaning="training batches to re-estimate BatchNorm on; 0: not")
    if batchnorm and recipe is None:
        raise LoritaError("batchnorm=N needs recipe= (the batch size and seed its training batches are drawn with)")
    spectra = model if isinstance(model, Spectra) else _spectra(model, data, how, recipe)
    merged = spectra.model
    original = spectra.profile
    if before is None:
        before = scores(merged, data)
    choice = choose_ranks(spectra, how, evaluate=lambda m: metric.score(metric.measure(m, data.val)),
                          baseline=metric.score(before[metric.val]))
    small = choice.model if choice.model is not None else spectra.cut(choice.ranks, whitened=how.whitened)
    cut = profile(small, spectra.example_input)
    latency = _latency_results(choice.report, spectra, small, how) if isinstance(how, Latency) else None
    if latency is not None and choice.report.layout == "channels_last":
        small = small.to(memory_format=torch.channels_last)
    batchnorm = batchnorm if has_lowrank(small) else 0  # a cut that kept every layer dense is the model itself
    if batchnorm:
        recalibrate_batchnorm(small, training_batches(data, recipe.batch_size, recipe.seed)(), max_batches=batchnorm)
    after_cut = {"params": cut.params, "macs": cut.macs, "flops": cut.flops, **scores(small, data)}
    after_finetune = None
    if finetune is not None:
        cut_score = metric.score(after_cut[metric.val]) if metric.val == finetune.select_by else None  # else measured
        after_finetune = _finetune(small, data, finetune, cut_score, progress)
    after_int8 = None
    if how.int8:  # then int8 weights, one scale per output channel (lorita.quantize)
        small = quantize(small, "int8")
        after_int8 = scores(small, data)
        if latency is not None:  # the model written is the int8 one: timed too (the search predicts the float cut)
            latency["final_int8"] = _time_final(choice.report, spectra, small, how)
    search = choice.report.search if isinstance(choice.report, AccuracySearch) else None
    lowrank = {n for n, m in small.named_modules() if isinstance(m, LOWRANK_TYPES)}
    results = {
        "cut": how.to_dict(), "ranks": {n: int(r) for n, r in choice.ranks.items()},
        "dense_layers": sorted(set(choice.ranks) - lowrank), "skipped_layers": dict(spectra.scan.skipped),
        "original": {"params": original.params, "macs": original.macs, "flops": original.flops},
        "metric": metric.val, "before": dict(before),
        "after_cut": after_cut, "after_finetune": after_finetune,
        **({"after_int8": after_int8} if how.int8 else {}),
        **({"batchnorm_batches": batchnorm} if batchnorm else {}),
        "kept": {k: getattr(cut, k) / max(getattr(original, k), 1) for k in ("params", "macs", "flops")},
        "evaluations": 2 + (search.evaluations if search is not None else 0),
        "search": [dataclasses.asdict(s) for s in search.steps] if search is not None else None,
        **({"latency": latency} if latency is not None else {}),
        "seconds": time.time() - start,
        "units": UNITS,
    }
    return small, results


def _spectra(model: nn.Module, data, how: CutSpec, recipe: TrainConfig | None) -> Spectra:
    """The merged model's ``Spectra`` on the data's example input (and training batches, for whitened cuts);
    a damaged model is named before anything is computed."""
    model.eval()
    for name, p in model.named_parameters():
        check_finite(p.detach(), name)
    batches = None
    if how.whitened:
        if recipe is None:
            raise LoritaError("a whitened cut (calibrate=N) needs recipe= (the batch size and seed its calibration "
                              "batches are drawn with)")
        check_calibrate(data, recipe, how.calibrate)
        batches = (x for x, _ in data.train.batches(recipe.batch_size, seed=recipe.seed, epoch=0))
    return Spectra(model, example_input(data), batches=batches)


def _finetune(small: nn.Module, data, recipe: TrainConfig, start_score: float | None, progress: bool) -> dict:
    """Fine-tune ``small`` in place (``lorita.train.finetune``: the best validation epoch, or the cut model itself
    if none beat it); its scores after and the epoch kept (0: the cut model)."""
    kept = finetune_kept(small, data, recipe, start_score=start_score, progress=progress)
    small.cpu().eval()
    return {**scores(small, data), "epoch_kept": kept.epoch}


def _latency_results(found: LatencyBudget, spectra: Spectra, small: nn.Module, how: Latency) -> dict:
    """What results.json says about a latency budget: the request, what was predicted, what the search measured
    on random-weight pairs, and the compressed model itself timed against the dense one (``final``; after int8,
    ``final_int8`` too)."""
    out = {k: v for k, v in found.to_dict().items() if k != "ranks"}
    out["final"] = _time_final(found, spectra, small, how)
    return out


def _time_final(found: LatencyBudget, spectra: Spectra, small: nn.Module, how: Latency) -> dict:
    """``small`` timed against the dense model in the budget's layout and batch: seconds and the measured fraction
    (the median of the within-round ratios, not cut_s / dense_s, medians of their own)."""
    call = spectra.example_input if how.batch is None else at_batch(spectra.example_input, how.batch)
    dense = spectra.model
    if found.layout == "channels_last":  # both timed in the chosen layout (copies: the models stay as they are)
        dense = copy.deepcopy(dense).to(memory_format=torch.channels_last)
        small = copy.deepcopy(small).to(memory_format=torch.channels_last)
    if call.lead.dim() == 4:  # the input in that layout too (a channels_last input timed as contiguous, or back)
        fmt = torch.channels_last if found.layout == "channels_last" else torch.contiguous_format
        call = call.with_lead(call.lead.contiguous(memory_format=fmt))
    seconds, fractions = compare_latency({"dense": dense, "cut": small}, call, reference="dense")
    return {"dense_s": seconds["dense"], "cut_s": seconds["cut"], "measured": fractions["cut"]}


def check_calibrate(data, train, batches: int) -> None:
    """Refuse more calibration batches than the training data gives (they would be recorded, not used).

    Example:
        >>> from lorita.runs.config import DataSpec
        >>> check_calibrate(DataSpec("digits").load(), TrainConfig(batch_size=128), 11)
        >>> check_calibrate(DataSpec("digits").load(), TrainConfig(batch_size=128), 12)
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: calibrate=12, but the training data gives 11 batches of 128; calibrate on at most 11
    """
    available = data.train.num_batches(train.batch_size)
    if batches > available:
        raise LoritaError(f"calibrate={batches}, but the training data gives {available} batches of "
                          f"{train.batch_size}; calibrate on at most {available}")


def write_cut(folder: Path, config: CompressConfig, small: nn.Module, results: dict) -> None:
    """A compress run's files in ``folder``: config.json, model.lorita, results.json."""
    write_json(folder / "config.json", config.to_dict())
    save(small, folder / "model.lorita")
    write_json(folder / "results.json", {"command": "compress", "source": config.source, **results})
