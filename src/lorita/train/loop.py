"""The training loop: one epoch-based loop for any ``nn.Module`` classifier.

Nothing here knows about model types: composed (LoRITa) layers, plain layers
and normalisation layers are all just parameters to the optimizer. The same
function trains from scratch, resumes an interrupted run and fine-tunes an
already trained (e.g. truncated) model: it never re-initialises anything.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from lorita.atomic import atomic_write_text
from lorita.data.split import derive_seed
from lorita.errors import LoritaError
from lorita.progress import progress_bar
from lorita.train import distributed
from lorita.train.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, METRIC_COLUMNS, START_OVER, check_contents,
                                     check_fits, load_checkpoint, save_checkpoint)
from lorita.train.config import TrainConfig
from lorita.train.evaluate import IGNORE_INDEX, evaluate, flat_logits, logits_of
from lorita.train.exposure import drop_last
from lorita.train.penalty import Penalty, replaced_parameters
from lorita.train.schedule import EpochSchedule
from lorita.train.user_data import is_pair, user_splits

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.csv"

Callback = Callable[[str, dict], Any]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``history``: one dict per finished epoch with the keys of metrics.csv
    (``epoch`` is 1-based; ``train_loss`` includes label smoothing,
    ``val_loss`` is plain cross-entropy; accuracies in percent; ``seconds``
    is that epoch's wall time). ``best_epoch`` (1-based): the epoch with the
    highest validation accuracy, or the lowest validation loss with
    ``select_by="val_loss"`` (the first one on ties); ``best_val_acc`` and
    ``best_val_loss``: that epoch's; ``best_score``: its ``val_acc`` or
    ``-val_loss`` (higher is better either way). ``final_val_acc``: the last epoch's. ``seconds``: sum
    of the epochs' seconds, across resumes. ``best_state``: CPU copy of the
    model's state_dict at ``best_epoch`` (the model itself keeps the last
    epoch's weights).

    Example:
        >>> TrainResult(history=[], best_epoch=0, best_val_acc=0.0, final_val_acc=0.0, seconds=0.0).best_state
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_val_acc: float
    final_val_acc: float
    seconds: float
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    best_val_loss: float = math.nan
    best_score: float = math.nan


def _cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _as_config(config: TrainConfig | Mapping[str, Any]) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return dataclasses.replace(config)  # checked again: a field set after it was made (cfg.epochs = ...) too
    if isinstance(config, Mapping):
        return TrainConfig.from_dict(config)
    raise LoritaError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")


def _unpack_data(data: Any, config: TrainConfig):
    if is_pair(data):  # your own (train, val) Datasets or DataLoaders
        train_split, val_split, config = user_splits(data, config)
        data = SimpleNamespace(train=train_split, val=val_split)
    if not (hasattr(data, "train") and hasattr(data, "val")):
        raise LoritaError(
            "data must be a (train, val) pair of torch Datasets or DataLoaders of (input, target) items, or a "
            f"lorita dataset with .train and .val splits (lorita.data.ImageDataset), got {type(data).__name__}"
        )
    if len(data.train) == 0:
        raise LoritaError("data.train is empty; training needs samples in both train and val: pass a non-empty "
                          "train split")
    if len(data.val) == 0:
        raise LoritaError(
            "data.val is empty; training needs samples in both train and val: with lorita's datasets the validation "
            "split is a share of the training images (load_dataset's val_fraction, 0.1 by default), so give more "
            "training images (a larger max_train in a config) or a larger share; with your own data, pass a "
            "non-empty val split"
        )
    augment = config.augment if config.augment is not None else bool(getattr(data, "default_augment", False))
    return data.train, data.val, augment, config


def _make_optimizer(model: nn.Module, config: TrainConfig, undecayed: list[nn.Parameter]) -> torch.optim.Optimizer:
    # Weight decay on every parameter (norm scales and biases too), as the authors do, except those a
    # penalty decays instead (``undecayed``: a second group without weight decay).
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LoritaError("the model has no trainable parameters (all have requires_grad=False)")
    skip = {id(p) for p in undecayed}
    groups = [{"params": [p for p in params if id(p) not in skip]}]
    if undecayed:
        groups = [g for g in groups if g["params"]] + [{"params": undecayed, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


@dataclass
class _Progress:
    """Everything that evolves across epochs and goes into the checkpoint."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    best_val_loss: float = math.inf
    best_score: float = -math.inf  # val_acc, or -val_loss (select_by): higher is better

    def result(self) -> "TrainResult":
        """What the run returns: the history, the best epoch and its weights."""
        history = self.history
        return TrainResult(
            history=history,
            best_epoch=self.best_epoch,
            best_val_acc=self.best_val_acc,
            final_val_acc=history[-1]["val_acc"] if history else float("nan"),
            seconds=sum(row["seconds"] for row in history),
            best_state=self.best_state,
            best_val_loss=self.best_val_loss,
            best_score=self.best_score,
        )


def check_resume(path: str | Path, config: TrainConfig) -> dict:
    """The checkpoint at ``path`` if ``config`` may continue it (only ``epochs`` may differ), else LoritaError.

    Example:
        >>> check_resume("no/such/checkpoint.pt", TrainConfig())
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: no checkpoint at no/such/checkpoint.pt; train without resume first, or point to the right folder
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise LoritaError(f"{path} is not a lorita training checkpoint (no format={CHECKPOINT_FORMAT!r})")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise LoritaError(f"{path} has checkpoint version {ckpt.get('version')}, this lorita reads {CHECKPOINT_VERSION}")
    check_contents(ckpt, path)
    saved, wanted = ckpt["config"], config.to_dict()
    differing = sorted(k for k in set(saved) | set(wanted) if k != "epochs" and saved.get(k) != wanted.get(k))
    if differing:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {wanted.get(k)!r}" for k in differing)
        raise LoritaError(
            f"cannot resume {path}: the config differs in {detail}; only epochs may change on resume "
            "(use the checkpoint's config, or start afresh without resume)"
        )
    if ckpt["epoch"] > config.epochs:
        raise LoritaError(f"{path} has already trained {ckpt['epoch']} epochs, more than epochs={config.epochs}")
    return ckpt


def _check_same_decay_groups(ckpt: dict, path: Path, optimizer) -> None:
    """The checkpoint's optimizer has this run's weight-decay groups: a run trained with a penalty (its parameters
    in a group without weight decay) resumes only with one, and a run without one only without."""
    saved = ckpt["optimizer"].get("param_groups") if isinstance(ckpt["optimizer"], dict) else None
    if not isinstance(saved, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), list) and
                                              isinstance(g.get("weight_decay"), (int, float)) for g in saved):
        return  # a sharded run stores no optimizer state; a malformed one is check_fits' to report
    layout = [(len(g["params"]), g["weight_decay"]) for g in saved]
    now = [(len(g["params"]), g["weight_decay"]) for g in optimizer.param_groups]
    if [wd for _, wd in layout] != [wd for _, wd in now]:  # other counts in the same groups: check_fits says what
        def say(groups):
            return " and ".join(f"{n} parameter(s) at weight decay {wd:g}" for n, wd in groups)
        raise LoritaError(f"{path} was trained with {say(layout)}, this run has {say(now)}: a run trained with a "
                          "penalty (train(..., penalty=)) resumes only with the same penalty, and one trained "
                          "without only without")


def _restore(path: Path, model: nn.Module, optimizer, schedule: EpochSchedule, config: TrainConfig) -> _Progress:
    ckpt = check_resume(path, config)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, KeyError, AttributeError) as err:
        said = " ".join(str(err).replace("Error(s) in loading state_dict for", "").split())
        said = said if len(said) <= 300 else said[:300] + " ..."
        raise LoritaError(f"the checkpoint {path.name} of the run being resumed does not fit this model ({said}); "
                          "resume with the run's own model arguments, or start again without --resume") from None
    for name, p in model.named_parameters():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise LoritaError(f"{path} is damaged: parameter {name!r} holds NaN or Inf; {START_OVER}")
    _check_same_decay_groups(ckpt, path, optimizer)  # before check_fits: another grouping reads as damage there
    check_fits(ckpt, path, model, optimizer)
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise LoritaError(f"{path} is damaged: its optimizer or schedule state cannot be restored ({err}); "
                          f"{START_OVER}") from err
    best = ckpt["best_model"] if ckpt["best_model"] is not None else ckpt["model"]
    best_acc = float(ckpt["best_val_acc"])
    progress = _Progress(list(ckpt["history"]), int(ckpt["best_epoch"]), best_acc, _cpu_copy(best),
                         float(ckpt.get("best_val_loss", math.inf)), float(ckpt.get("best_score", best_acc)))
    logger.info("resuming from %s after epoch %d", path, ckpt["epoch"])
    return progress


def _checkpoint(model, optimizer, schedule, config, progress: _Progress, epoch: int, world_size: int,
                whole: dict | None = None) -> dict:
    """The checkpoint's content; ``whole``: the gathered state of a sharded model (its optimizer state is
    left out: a sharded run is not resumable)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "config": config.to_dict(),
        "model": whole if whole is not None else model.state_dict(),
        "optimizer": {} if whole is not None else optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "best_epoch": progress.best_epoch,
        "best_val_acc": progress.best_val_acc,
        "best_val_loss": progress.best_val_loss,
        "best_score": progress.best_score,
        "best_model": None if progress.best_epoch == epoch else progress.best_state,
        "history": progress.history,
        "world_size": world_size,
    }


def _write_metrics(path: Path, rows: Iterable[Mapping[str, float]]) -> None:
    """Rewrite metrics.csv with every row so far, atomically (a link at ``path`` is replaced, not followed)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def _targets_counted(y: torch.Tensor, ctx) -> tuple[int, int | torch.Tensor]:
    """The targets a step scores (those of ``IGNORE_INDEX`` left out): this rank's, and the whole global batch's
    (under DDP summed over the ranks, each of which may skip a different number); at least 1 where all are skipped
    (the step's loss is then 0), so that the mean over them is defined."""
    local = int((y != IGNORE_INDEX).sum()) if y.dtype.is_signed else y.numel()  # uint8 has no -100 (156 wraps)
    if not ctx.distributed:
        return local, max(local, 1)
    counted = distributed.all_reduce_sum(torch.tensor(float(local), device=ctx.device), ctx)
    return local, counted.clamp_(min=1.0)


def _train_one_epoch(net, optimizer, loss_fn, split, config: TrainConfig, epoch: int, augment: bool, ctx,
                     penalty: Penalty | None = None):
    """One pass over the training split; returns (mean train loss, train accuracy %) over all ranks (the data's
    loss: ``penalty()``, when given, is added to each step's loss but not to the figure returned)."""
    n, bs, world = len(split), config.batch_size, ctx.world_size
    drop = drop_last(n, bs, world)  # a last batch with fewer than 2 samples per rank
    net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    correct = torch.zeros((), dtype=torch.float64, device=ctx.device)
    count = 0
    batches = split.batches(
        bs, shuffle=True, seed=config.seed, epoch=epoch, augment=augment,
        rank=ctx.rank, world_size=world, drop_last=drop,
    )
    for x, y in batches:
        local_count, global_count = _targets_counted(y, ctx)
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        logits, y = flat_logits(logits_of(net, x, "training"), y, "training")  # (N, classes), (N,)
        local_sum = loss_fn(logits, y)  # summed over this rank's chunk (targets of -100 skipped)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over the K ranks; K / global_count turns that
        # average into the mean over the whole global batch (chunks may differ
        # in size). In one process this is the plain batch mean.
        step_loss = local_sum * (world / global_count)
        if penalty is not None:  # each rank adds it whole: DDP's average of the ranks' gradients keeps it whole
            step_loss = step_loss + penalty()
        step_loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        optimizer.step()
        loss_sum += local_sum.detach().double()
        correct += (logits.detach().argmax(dim=1) == y).sum().double()  # an ignored target is never a class
        count += local_count
    totals = torch.stack([loss_sum, correct, torch.tensor(float(count), dtype=torch.float64, device=ctx.device)])
    loss_total, correct_total, count_total = distributed.all_reduce_sum(totals, ctx).tolist()
    if not count_total:
        raise LoritaError(f"training: every target of the training split is {IGNORE_INDEX} (skipped), so there is "
                          "nothing to learn from; give it targets that are class indices")
    return loss_total / count_total, 100.0 * correct_total / count_total


def train(
    model: nn.Module,
    data: Any,
    config: TrainConfig | Mapping[str, Any],
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    callbacks: Iterable[Callback] = (),
    penalty: Penalty | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.train``, selecting on ``data.val``.

    ``data`` is a ``(train, val)`` pair of PyTorch Datasets or DataLoaders of
    ``(input, target)`` items (``lorita.train.user_data``), or a
    :class:`lorita.data.ImageDataset` (anything with ``.train`` and ``.val``
    splits and optionally ``.default_augment``); the test split is never
    looked at. Each epoch: learning rate from the schedule, one shuffled
    pass with label-smoothed cross-entropy, evaluation on val, plateau step on
    val loss, best-epoch bookkeeping. With ``out_dir`` (rank 0 only) it
    appends a row to ``metrics.csv`` and atomically rewrites
    ``checkpoint.pt`` after every epoch (contents: ``lorita.train.checkpoint``).
    ``resume=True`` continues from ``out_dir/checkpoint.pt`` and ends with the
    same weights as an uninterrupted run; only ``epochs`` may differ from the
    checkpoint's config (with "cosine", changing it changes the remaining
    learning rates). Without ``resume`` an existing checkpoint is overwritten.

    ``callbacks``: callables ``cb(event, info)`` run on every rank for the
    events "train_start", "epoch_end" and "train_end"; ``info`` holds
    ``model``, ``optimizer``, ``config``, ``rank``, ``world_size`` and, at
    "epoch_end", ``epoch`` (1-based), ``metrics`` (the history row),
    ``best_epoch``, ``best_val_acc`` and ``stop``: set ``info["stop"] = True``
    to end training after this epoch (its checkpoint is already written).
    ``penalty`` (``lorita.train.penalty.Penalty``, e.g. ``lorita.factorized.FrobeniusDecay``): ``penalty()``
    is added to every step's loss (not to the train loss reported) and the parameters it names get no
    weight decay from the optimizer (with ``grad_clip``, its gradient is clipped with the data's); it is not
    saved in the checkpoint, so pass the same one on resume (a resume with a penalty's parameters grouped
    otherwise than the checkpoint's is refused).
    Not with ``shard=True``. Under torchrun, see :mod:`lorita.train.distributed`. Torch's global RNG is
    reseeded per epoch from (seed, epoch, rank) inside a fork, so the
    caller's RNG state is left as it was.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> from lorita.data import Split
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.randint(0, 2, (64,), generator=g)
        >>> x = (y * 200 + 20).to(torch.uint8).view(64, 1, 1, 1).expand(64, 1, 2, 2)
        >>> data = SimpleNamespace(train=Split(x, y, [0.5], [0.4]), val=Split(x, y, [0.5], [0.4]))
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> result = train(net, data, TrainConfig(epochs=3, batch_size=16, device="cpu"))
        >>> result.best_val_acc
        100.0
    """
    config = _as_config(config)
    train_split, val_split, augment, config = _unpack_data(data, config)
    callbacks = list(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise LoritaError(f"callbacks must be callables cb(event, info), got {type(cb).__name__}")
    out_dir = None if out_dir is None else Path(out_dir)
    if resume and out_dir is None:
        raise LoritaError("resume=True needs out_dir, the folder holding checkpoint.pt")
    ctx = distributed.setup(config.device)
    try:
        rng_devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):
            return _run(model, (train_split, val_split, augment), config, out_dir, resume, progress, callbacks, ctx,
                        penalty)
    finally:
        distributed.teardown(ctx)


def check_batch_norm(model: nn.Module, config: TrainConfig, world_size: int, examples: int) -> None:
    """A model with BatchNorm needs at least 2 samples in each process's batch: refused before training.

    Example:
        >>> check_batch_norm(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), TrainConfig(batch_size=8), 1, 1)
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: the training set holds 1 example(s), but the model has BatchNorm layers, ...
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    if examples < 2 * world_size:
        raise LoritaError(f"the training set holds {examples} example(s), but the model has BatchNorm layers, which "
                          f"need at least 2 per batch{' and process' if world_size > 1 else ''}: give more training "
                          "data (train: a smaller --val-fraction; experiment: a larger max_train)")
    per_rank = config.batch_size // world_size
    if per_rank < 2:
        raise LoritaError(f"batch_size {config.batch_size} gives {per_rank} sample(s) per process, but the model has "
                          "BatchNorm layers, which need at least 2 per batch; use batch_size >= "
                          f"{2 * world_size}")


def _prepare(model: nn.Module, config: TrainConfig, ctx, resume: bool, penalty: Penalty | None):
    """The checks before training, then ``(net, optimizer, sharded)``: the model on its device, wrapped for DDP or
    sharding, and its optimizer (a penalty's parameters in a group without weight decay)."""
    undecayed = replaced_parameters(penalty, model)
    if config.shard and not ctx.distributed:
        raise LoritaError("shard=True (--shard) splits the model over the processes of a torchrun launch, but this "
                          "is one process; leave it off, or launch with torchrun --nproc_per_node=N")
    sharded = config.shard and ctx.distributed
    if sharded and penalty is not None:
        raise LoritaError("a penalty reads the model's own parameters, which shard=True (--shard) replaces; train "
                          "with the penalty without sharding")
    if sharded and resume:
        raise LoritaError("resuming a sharded (shard=True) run is not supported: its checkpoints hold the whole "
                          "model but not the sharded optimizer state; start it again, or resume without sharding")
    model.to(ctx.device)
    net = distributed.wrap(model, ctx, shard=sharded)  # before the optimizer: sharding replaces the parameters
    return net, _make_optimizer(model, config, undecayed), sharded


def _run(model, splits, config, out_dir, resume, progress, callbacks, ctx, penalty: Penalty | None) -> TrainResult:
    train_split, val_split, augment = splits
    check_batch_norm(model, config, ctx.world_size, len(train_split))
    net, optimizer, sharded = _prepare(model, config, ctx, resume, penalty)
    schedule = EpochSchedule(config)
    state = _Progress()
    if resume:
        state = _restore(out_dir / CHECKPOINT_NAME, model, optimizer, schedule, config)
    start = len(state.history)
    writes = out_dir is not None and ctx.is_main
    if writes:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_metrics(out_dir / METRICS_NAME, state.history)  # drops rows past the checkpoint
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing, reduction="sum")
    bar = progress_bar(progress and ctx.is_main, total=config.epochs, initial=start, desc="train", unit="epoch")
    base = {"model": model, "optimizer": optimizer, "config": config, "rank": ctx.rank, "world_size": ctx.world_size}

    def emit(event: str, info: dict) -> dict:
        for cb in callbacks:
            cb(event, info)
        return info

    emit("train_start", {**base, "epoch": start})
    try:
        for epoch in range(start, config.epochs):
            tic = time.perf_counter()
            lr = schedule.lr(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(derive_seed(config.seed, epoch, ctx.rank))  # dropout etc.; replayable on resume
            train_loss, train_acc = _train_one_epoch(net, optimizer, loss_fn, train_split, config, epoch, augment, ctx,
                                                     penalty)
            if not math.isfinite(train_loss):
                raise LoritaError(
                    f"training diverged in epoch {epoch + 1}: train loss is {train_loss}; lower lr (now {lr:g})"
                )
            val_acc, val_loss = evaluate(model, val_split, config.eval_batch_size, ctx.device)
            schedule.step(epoch, val_loss)
            row = {
                "epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": val_loss, "val_acc": val_acc, "seconds": time.perf_counter() - tic,
            }
            state.history.append(row)
            score = val_acc if config.select_by == "val_acc" else -val_loss
            whole = distributed.full_state(model, sharded) if sharded else None  # a collective: every rank
            if score > state.best_score:
                state.best_epoch, state.best_score = epoch + 1, score
                state.best_val_acc, state.best_val_loss = val_acc, val_loss
                state.best_state = whole if sharded else _cpu_copy(model.state_dict())
            if writes:
                _write_metrics(out_dir / METRICS_NAME, state.history)
                ckpt = _checkpoint(model, optimizer, schedule, config, state, epoch + 1, ctx.world_size, whole)
                save_checkpoint(ckpt, out_dir / CHECKPOINT_NAME)
            if ctx.is_main:
                logger.info(
                    "epoch %d/%d lr %.4g train loss %.4f acc %.2f%% val loss %.4f acc %.2f%% (%.1fs)",
                    epoch + 1, config.epochs, lr, train_loss, train_acc, val_loss, val_acc, row["seconds"],
                )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{train_acc:.1f}", val_acc=f"{val_acc:.1f}")
            info = emit("epoch_end", {
                **base, "epoch": epoch + 1, "metrics": row, "best_epoch": state.best_epoch,
                "best_val_acc": state.best_val_acc, "stop": False,
            })
            if distributed.any_rank(bool(info.get("stop")), ctx):
                logger.info("stopped by a callback after epoch %d", epoch + 1)
                break
    finally:
        if bar is not None:
            bar.close()
    result = state.result()
    emit("train_end", {**base, "result": result})
    return result
