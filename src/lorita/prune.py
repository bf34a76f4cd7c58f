"""Structured pruning with Torch-Pruning (optional extra ``lorita[prune]``): the alternative a user has
to low-rank cuts, used as a comparison column by experiments and benchmarks.

``prune_to`` removes whole channels (L1 magnitude, ranked globally) step by step until the
model's params or MACs, counted by ``lorita.profile`` like every other column, are at most a
fraction of the original. The result is a smaller model of the same classes.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
from typing import Callable, Iterable, Literal, get_args

import torch
from torch import nn

from lorita.checks import check_choice, check_fraction, check_int
from lorita.errors import LoritaError
from lorita.models.resnet import BasicBlock, CifarResNet, PadShortcut
from lorita.profile import profile

STEPS = 200  # pruning steps from the full model to nothing: each removes about 0.5% of the channels
MAX_RATIO = 0.9  # at most this fraction of one layer's channels may go
Importance = Literal["l1", "l2", "taylor"]
IMPORTANCES: tuple[str, ...] = get_args(Importance)


def available() -> bool:
    """Whether ``torch_pruning`` is installed.

    Example:
        >>> isinstance(available(), bool)
        True
    """
    return importlib.util.find_spec("torch_pruning") is not None


def ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers Torch-Pruning must keep at full width: the classifier, and residual streams it cannot trace.

    The classifier is the last ``nn.Linear``. The zoo's CIFAR ResNets use the parameter-free
    "option A" shortcut (subsample and zero-pad channels with ``F.pad``); Torch-Pruning's
    dependency graph does not follow channels through that pad, so the convs writing the
    residual stream (the stem and each block's ``conv2``) stay whole and only the inner
    channels of each block are pruned.

    Example:
        >>> ignored_layers(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
        [Linear(in_features=4, out_features=2, bias=True)]
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    ignored = linears[-1:]
    if isinstance(model, CifarResNet) and any(isinstance(m, PadShortcut) for m in model.modules()):
        ignored += [model.conv1] + [b.conv2 for b in model.modules() if isinstance(b, BasicBlock)]
    return ignored


def prune_to(model: nn.Module, budget: float, example_input: torch.Tensor, *,
             metric: Literal["params", "macs"] = "params", max_ratio: float = MAX_RATIO, steps: int = STEPS,
             reached: Callable[[nn.Module, float], bool] | None = None, importance: Importance = "l1",
             batches: Iterable | None = None) -> tuple[nn.Module, dict]:
    """A pruned copy of ``model`` with at most ``budget`` of its params (or MACs), and what was done.

    Torch-Pruning's pruner with global ranking, ``steps`` iterative steps from the full model
    to pruning ratio 1; the first step at or below the budget is kept. ``importance`` scores
    each group of coupled channels (a channel with everything that must go with it: the
    BatchNorm after it, the next layer's inputs): "l1" or "l2", the group's mean-normalised
    weight magnitude; "taylor", the group's first-order Taylor estimate of the loss change
    (weight x gradient), with the gradient of the cross-entropy on one item of ``batches`` (a
    few ``(inputs, targets)`` pairs, e.g. training batches, held in memory and used in turn)
    before every step. Global ranking does not see what a channel costs; ``max_ratio``
    (Torch-Pruning's ``max_pruning_ratio``) bounds how far one layer is thinned.
    ``reached(pruned, kept)``: a stop of the caller's instead of ``kept <= budget`` (``kept``:
    the fraction of the params or MACs left), e.g. a measured latency. Raises LoritaError when
    the budget cannot be reached within those bounds.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> small, info = prune_to(net, 0.5, torch.zeros(1, 16))  # doctest: +SKIP
        >>> info["kept"] <= 0.5  # doctest: +SKIP
        True
    """
    if not available():
        raise LoritaError("pruning needs torch-pruning: pip install torch-pruning "
                          "(in lorita's clone: pip install -e '.[prune]')")
    import torch_pruning as tp  # an optional extra (lorita[prune])

    check_fraction("budget", budget)
    check_choice("metric", metric, ("params", "macs"))
    check_fraction("max_ratio", max_ratio)
    check_int("steps", steps)
    if reached is not None and not callable(reached):
        raise LoritaError(f"reached must be a callable (model, kept fraction) -> bool, got {type(reached).__name__}")
    check_choice("importance", importance, IMPORTANCES)
    if importance == "taylor" and batches is None:
        raise LoritaError("importance='taylor' needs batches: (inputs, targets) pairs to take the loss gradient on")
    gradients = _gradients(batches) if importance == "taylor" else None
    pruned = copy.deepcopy(model).cpu().eval()

    def size() -> int:  # params: counted directly (cheap, the same count as lorita.profile); MACs: profiled
        if metric == "params":
            return sum(p.numel() for p in pruned.parameters())
        return profile(pruned, example_input).macs

    original = size()

    def done(current: int) -> bool:
        return current <= budget * original if reached is None else reached(pruned, current / original)

    pruner_cls = getattr(tp.pruner, "BasePruner", None) or tp.pruner.MetaPruner
    scorer = (tp.importance.GroupTaylorImportance() if importance == "taylor"
              else tp.importance.MagnitudeImportance(p=1 if importance == "l1" else 2))
    pruner = pruner_cls(pruned, example_input, importance=scorer,
                        global_pruning=True, pruning_ratio=1.0, max_pruning_ratio=max_ratio,
                        iterative_steps=steps, ignored_layers=ignored_layers(pruned))
    current, taken = original, 0
    ok = done(current)
    while not ok and taken < steps:
        if gradients is not None:
            gradients(pruned)
        pruner.step()
        taken += 1
        current = size()
        ok = done(current)
    if not ok:
        raise LoritaError(f"Torch-Pruning reached {current / original:.3f} of the original {metric}, not {budget:g}: "
                          f"max_ratio={max_ratio} keeps at least {1 - max_ratio:.0%} of every layer's channels")
    pruned.zero_grad(set_to_none=True)
    widths = {name: int(m.out_features if isinstance(m, nn.Linear) else m.out_channels)
              for name, m in pruned.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    return pruned, {"steps": taken, "kept": current / original, "widths": widths, "importance": importance}


def _gradients(batches: Iterable):
    """``fill(model)``: the cross-entropy gradient of ``model`` on the next batch (cycling), for Taylor scores."""
    items = list(batches)
    if not items or not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in items):
        raise LoritaError("importance='taylor' needs batches of (inputs, targets) pairs; got none or another kind")
    turn = itertools.count()

    def fill(model: nn.Module) -> None:
        x, y = items[next(turn) % len(items)]
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()

    return fill
