"""Re-estimate BatchNorm statistics after a cut.

A truncated SVD changes what every later layer sees, but a BatchNorm layer still normalises
with the running mean and variance it learnt from the uncut network: the cut model is judged
with stale statistics, and a deep cut of a BN network can fall to chance before fine-tuning
(plain ResNet20 + SVD at 10% accuracy in docs/RESULTS.md). Re-estimating the statistics on a
few hundred training batches (forward passes only, no gradient, no weight changes) is what a
user does before judging such a cut; :func:`recalibrate_batchnorm` does it for every BatchNorm
layer of a model.
"""

from __future__ import annotations

import itertools
import logging
from typing import Iterable

import torch
from torch import nn

from lorita.checks import check_int
from lorita.errors import LoritaError

log = logging.getLogger(__name__)

MAX_BATCHES = 200  # the default number of training batches a re-estimate reads


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics.

    Example:
        >>> len(batchnorm_layers(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))))
        1
    """
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, *, max_batches: int = MAX_BATCHES) -> nn.Module:
    """Re-estimate the running mean and variance of every BatchNorm layer of ``model`` in place.

    Each layer's statistics are reset, then ``model`` runs forward on up to ``max_batches``
    items of ``batches`` (inputs, or ``(inputs, targets)`` pairs: lorita's ``Split.batches``)
    with only its BatchNorm layers in training mode (dropout and the rest stay in eval mode)
    and no gradient; the statistics are the cumulative average over those batches
    (``momentum=None``), each batch weighted equally. Weights and biases are untouched, and
    every module's mode and momentum are restored. A model without BatchNorm is returned
    unchanged. Returns ``model``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        >>> x = torch.randn(64, 3)
        >>> _ = recalibrate_batchnorm(net, [x[:32], x[32:]])
        >>> torch.allclose(net[1].running_mean, net[0](x).mean(0), atol=1e-6)
        True
    """
    check_int("max_batches", max_batches)
    layers = batchnorm_layers(model)
    if not layers:
        log.info("recalibrate_batchnorm: the model has no BatchNorm layer with running statistics; nothing to do")
        return model
    items = iter(batches)
    first = next(items, None)  # checked before any statistic is reset
    if first is None:
        raise LoritaError("recalibrate_batchnorm: no batches were given; pass training batches "
                          "(e.g. data.train.batches(128, shuffle=True))")
    if _inputs(first).shape[0] < 2:
        raise LoritaError("recalibrate_batchnorm: the first batch holds one sample, which has no batch variance; "
                          "use batches of at least 2 (a few hundred batches of 128 is typical)")
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    seen = 0
    saved = {m: {k: v.clone() for k, v in m.state_dict().items()} for m in layers}  # put back if a batch fails
    try:
        model.eval()
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative moving average: every batch counts the same
            layer.train()
        for batch in itertools.chain([first], items):
            if seen >= max_batches:
                break
            x = _inputs(batch)
            if x.shape[0] < 2:  # one sample has no batch variance (the loop drops such batches too)
                continue
            model(x.to(device))
            seen += 1
    except Exception as err:
        for m, state in saved.items():
            m.load_state_dict(state)
        if isinstance(batches, torch.Tensor) and seen == 0:  # its items are its rows, not batches
            raise LoritaError(f"recalibrate_batchnorm: the model failed on the first item of batches, one tensor "
                              f"of shape {tuple(batches.shape)}, whose items are its rows "
                              f"({type(err).__name__}: {err}); pass a list of batches, [x] for one") from None
        raise
    finally:
        for m, training in modes.items():
            m.train(training)
        for m, momentum in momenta.items():
            m.momentum = momentum
    log.info("re-estimated %d BatchNorm layers on %d batches", len(layers), seen)
    return model


def _inputs(batch) -> torch.Tensor:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, torch.Tensor):
        raise LoritaError(f"recalibrate_batchnorm: batches must yield tensors or (inputs, targets) pairs, "
                          f"got {type(x).__name__}")
    return x
