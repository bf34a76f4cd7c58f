"""A comparison column: the factorized baseline (spectral init, Frobenius decay; ``lorita.factorized``) at each size.

For each size it is asked for, the column builds a fresh model of the experiment's family (seeded
as every training is), cuts it to the largest uniform rank fraction within that share of the
original params (spectral initialisation; the classifier, and a first conv, kept dense:
``kept_dense``), trains it for the full epochs with the plain recipe, Frobenius decay in place of
the factors' weight decay at the recipe's coefficient, and hands it over as the column's "cut" (no
fine-tuning: it was trained at that size all along; a size so large that no layer's rank saves
params trains the dense model with plain weight decay). Like the smaller dense model, every size
is a training: its crossing of the target is bisected ``factorized_refine`` times.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from lorita.errors import LoritaError
from lorita.factor_init import last_layer
from lorita.factorized import FrobeniusDecay, factorized_for_params
from lorita.lowrank import has_lowrank
from lorita.profile import count_params
from lorita.runs.config import ModelSpec
from lorita.train import TrainConfig, train

log = logging.getLogger(__name__)

FACTORIZED = "factorized + Frobenius decay"  # the column's label in an experiment's results


def kept_dense(model: nn.Module, exclude=None) -> list[str]:
    """The layers the factorized column keeps dense: ``exclude`` (names or patterns), the last layer (the
    classifier: one rank fraction for every layer would cut a 10-class head to rank 1 at small sizes) and a
    first layer that is a convolution (its kernel matrix is small, ``C_out x C_in*k*k``, and a cut there
    leaves the network a filter or two of the input for next to no params saved), as in Khodak et al.'s
    code. An MLP's first Linear (43% of the FCN's params) is cut: the small sizes need it.

    Example:
        >>> from torch import nn
        >>> kept_dense(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8, 2)))
        ['0', '4']
        >>> kept_dense(nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)), "1")
        ['1', '3']
    """
    names = [exclude] if isinstance(exclude, str) else list(exclude or [])
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if layers and isinstance(layers[0][1], nn.Conv2d):
        names.append(layers[0][0])
    head = last_layer(model)
    if head is not None:
        names.append(head)
    return list(dict.fromkeys(names))


def factorized_cutter(spec: ModelSpec, data, recipe: TrainConfig, original_params: int, exclude=None):
    """A comparison column's cutter (``size -> (model, detail) | None``): a spectrally initialised factorized
    ``spec`` model with at most ``size`` of ``original_params``, trained from scratch with ``recipe`` (the full
    epochs) under Frobenius decay at ``recipe.weight_decay`` (an SGD recipe: ``lorita.runs.ExperimentSpec``
    refuses a factorized column with another optimizer). Kept dense: ``exclude`` (the names or patterns
    LoRITa's composition leaves out) and ``kept_dense``'s layers (the classifier, a first conv).

    The model returned holds the best epoch on validation, on the CPU in eval mode. ``detail``: the rank
    fraction, the params, the training seconds and the best epoch. None when no rank fraction is that small.

    Example:
        >>> from lorita.data import load_dataset
        >>> data = load_dataset("digits")
        >>> spec = ModelSpec("fcn", {"width": 32, "hidden_layers": 1}, data.model_inputs)
        >>> original = count_params(spec.build())
        >>> model, detail = factorized_cutter(spec, data, TrainConfig(epochs=1, device="cpu"), original)(0.5)
        >>> detail["params"] <= 0.5 * original, sorted({type(m).__name__ for m in model.modules()} & {"LowRankLinear"})
        (True, ['LowRankLinear'])
    """
    if not math.isfinite(original_params) or original_params <= 0:
        raise LoritaError(f"original_params must be the original model's parameter count (> 0), "
                          f"got {original_params!r}")

    def cut(size: float):
        torch.manual_seed(recipe.seed)
        fresh = spec.build()
        made = factorized_for_params(fresh, size * original_params, exclude=kept_dense(fresh, exclude))
        if made is None:
            log.info("factorized model: even rank 1 in every layer keeps more than %.1f%% of the params", 100 * size)
            return None
        model, ratio = made
        params = count_params(model)
        log.info("factorized model: rank fraction %.4f (%d params, %.1f%% of the original), %d epochs, Frobenius "
                 "decay %g", ratio, params, 100 * params / original_params, recipe.epochs, recipe.weight_decay)
        # a budget that keeps every layer dense (no rank saves params there) trains the dense model as it is
        penalty = FrobeniusDecay(model, recipe.weight_decay) if has_lowrank(model) else None
        result = train(model, data, recipe, penalty=penalty)
        if result.best_state is not None:
            model.load_state_dict(result.best_state)
        detail = {"rank_fraction": ratio, "params": params, "train_seconds": result.seconds,
                  "best_epoch": result.best_epoch}
        return model.cpu().eval(), detail

    return cut
