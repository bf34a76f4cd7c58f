"""The simplest alternative to any compression: a smaller dense model of the same family, trained directly.

A user who wants a model with 10% of the parameters can train one: the same zoo model with a
narrower width, for the same epochs and recipe as the original. The comparison column built
here does that for each size it is asked for: it finds the width whose parameter count is the
largest that stays within the requested fraction of the original model's, trains that model
from scratch for the full epochs, and hands it over as the column's "cut" (no fine-tuning: it
was trained at that size all along). Its seconds are the training's. An experiment trains each
one as a run folder of its seed (``small-dense-WIDTH``, ``small_dense_folder``), so a killed
experiment resumes it from its last epoch and a finished one is reused; alone, the cutter
trains in memory.

The width is the zoo model's ``width`` (an integer, e.g. the FCN's hidden size) or
``width_multiplier`` (a float scaling every channel count, e.g. VGG16); other models have no
single width knob and are refused.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch
from torch import nn

from lorita.errors import LoritaError
from lorita.models.registry import model_kwargs, width_argument
from lorita.profile import count_params
from lorita.runs.config import ModelSpec
from lorita.train import TrainConfig, train

log = logging.getLogger(__name__)

SMALL_DENSE = "small dense"  # the column's label in an experiment's results
_FLOAT_STEPS = 60  # bisection steps on a float width: far below one channel of any zoo model
# trains a model spec with a recipe: (the model with its best epoch's weights, on the CPU in eval mode, the
# training's seconds, its best epoch)
Trainer = Callable[[ModelSpec, TrainConfig], "tuple[nn.Module, float, int]"]


def width_for_params(spec: ModelSpec, target: float) -> tuple[int | float, int]:
    """The widest ``spec`` model (its other arguments kept) with at most ``target`` params: (width, params).

    Parameter counts grow with the width, so the search is a bisection: over whole numbers
    for ``width``, over (0, the spec's width] for ``width_multiplier``. Raises LoritaError when
    even the narrowest model has more than ``target`` params.

    Example:
        >>> spec = ModelSpec("fcn", {"hidden_layers": 1}, {"num_classes": 10, "in_channels": 1, "image_size": 8})
        >>> width_for_params(spec, 1000)  # 64*w + 2w (BatchNorm) + w + 10*w + 10 <= 1000
        (12, 934)
    """
    arg = width_argument(spec.name)
    full = {**model_kwargs(spec.name), **spec.kwargs}[arg]

    def params(width) -> int:
        return count_params(ModelSpec(spec.name, {**spec.kwargs, arg: width}, spec.inputs).build())

    if arg == "width":
        lo, hi = 1, int(full)
        if params(lo) > target:
            raise LoritaError(f"even {arg}=1 gives {params(lo):,} params, more than the {target:,.0f} asked for")
        while lo < hi:  # the largest whole width within the target
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if params(mid) <= target else (lo, mid - 1)
        return lo, params(lo)
    lo, hi = 0.0, float(full)
    for _ in range(_FLOAT_STEPS):
        mid = 0.5 * (lo + hi)
        if params(mid) <= target:
            lo = mid
        else:
            hi = mid
    if lo == 0.0 or params(lo) > target:
        raise LoritaError(f"no {arg} of {spec.name} keeps at most {target:,.0f} params; ask for a larger size")
    return lo, params(lo)


def small_dense_folder(spec: ModelSpec) -> str:
    """The name of the run folder an experiment trains the smaller dense model ``spec`` in (its width, exact).

    Example:
        >>> small_dense_folder(ModelSpec("vgg_small", {"width_multiplier": 0.0625}))
        'small-dense-0.0625'
    """
    return f"small-dense-{spec.kwargs[width_argument(spec.name)]!r}"


def train_in_memory(data) -> Trainer:
    """The cutter's trainer without a folder: ``train`` on ``data``, the init seeded from the recipe's seed as
    ``lorita.runs.train_run`` seeds it (so both give the same model).

    Example:
        >>> from lorita.data import load_dataset
        >>> data = load_dataset("digits")
        >>> spec = ModelSpec("fcn", {"width": 8, "hidden_layers": 1}, data.model_inputs)
        >>> model, seconds, best_epoch = train_in_memory(data)(spec, TrainConfig(epochs=1, device="cpu"))
        >>> best_epoch, model.training
        (1, False)
    """
    def trained(spec: ModelSpec, recipe: TrainConfig):
        torch.manual_seed(recipe.seed)
        model = spec.build()
        result = train(model, data, recipe)
        if result.best_state is not None:
            model.load_state_dict(result.best_state)
        return model.cpu().eval(), result.seconds, result.best_epoch

    return trained


def small_dense_cutter(spec: ModelSpec, data, recipe: TrainConfig, original_params: int, *,
                       trainer: Trainer | None = None):
    """A comparison column's cutter (``size -> (model, detail) | None``): a narrower ``spec`` model trained
    from scratch with ``recipe`` (the full epochs), at most ``size`` of ``original_params``.

    ``trainer`` trains it (default: ``train_in_memory(data)``; an experiment's trains a run folder of its
    seed); the model returned holds the best epoch on validation, on the CPU in eval mode. ``detail``: the
    width, the params, the training seconds and the best epoch. None when no width is that small.

    Example:
        >>> from lorita.data import load_dataset
        >>> data = load_dataset("digits")
        >>> spec = ModelSpec("fcn", {"width": 32, "hidden_layers": 1}, data.model_inputs)
        >>> original = count_params(spec.build())  # 77 * 32 + 10 = 2474
        >>> model, detail = small_dense_cutter(spec, data, TrainConfig(epochs=1, device="cpu"), original)(0.5)
        >>> detail["width"], detail["params"]  # the widest with at most 1237 params
        (15, 1165)
    """
    def cut(size: float):
        try:
            width, params = width_for_params(spec, size * original_params)
        except LoritaError as err:
            log.info("small dense model: %s", err)
            return None
        arg = width_argument(spec.name)
        log.info("small dense model: %s=%s (%d params, %.1f%% of the original), %d epochs", arg,
                 width if isinstance(width, int) else f"{width:.4f}", params, 100 * params / original_params,
                 recipe.epochs)
        model, seconds, best_epoch = train_with(ModelSpec(spec.name, {**spec.kwargs, arg: width}, spec.inputs),
                                                recipe)
        detail = {"width": width, "params": params, "train_seconds": seconds, "best_epoch": best_epoch}
        return model, detail

    if not math.isfinite(original_params) or original_params <= 0:
        raise LoritaError(f"original_params must be the original model's parameter count (> 0), got {original_params!r}")
    train_with = trainer if trainer is not None else train_in_memory(data)
    return cut
