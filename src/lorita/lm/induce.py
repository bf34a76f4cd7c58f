"""LoRITa's answer for a model that is already trained: induce low rank before the cut.

``induce(model, ...)`` composes every linear layer of the decoder blocks into a product of
``depth`` factors whose product is the current weight (``lorita.compose(init="preserve",
inplace=True)``: the model's outputs do not change), trains only those factors with weight
decay on them (``lorita.lm.recover.train_lm``; SGD's coupled decay is the penalty of
METHOD.md section 1, AdamW's decoupled decay is offered too), and merges them back in place
(``lorita.merge``). The model keeps its architecture; its layers' spectra are what the
training and the penalty made of them, and the cut that follows (``lorita.lm.cut.lm_cut``)
is the same as for any model. The objective is the recipe's (``distill``: the dense model as its
own teacher keeps the trained model close to what it was).
"""

from __future__ import annotations

import logging
import warnings

from torch import nn

from lorita.compose import compose, merge
from lorita.composed import COMPOSED_TYPES
from lorita.errors import LoritaError, LoritaWarning
from lorita.lm.blocks import decoder_blocks
from lorita.lm.cut import block_linears, layer_name
from lorita.lm.recover import SGD_MOMENTUM, LMTraining, RecoveryRecipe, lr_factor, train_lm

logger = logging.getLogger(__name__)


def block_linear_names(model: nn.Module) -> list[str]:
    """Full names of every plain ``nn.Linear`` inside the decoder blocks (what ``lm_cut`` cuts).

    Example:
        >>> net = nn.Sequential(nn.Embedding(4, 4), nn.ModuleList([nn.Sequential(nn.Linear(4, 4))]))
        >>> block_linear_names(net)
        ['1.0.0']
    """
    prefix, blocks = decoder_blocks(model)
    return [layer_name(prefix, i, n) for i, block in enumerate(blocks) for n in block_linears(block)]


def penalty_exposure(recipe: RecoveryRecipe, depth: int = 2) -> float:
    """The low-rank pressure ``induce`` applies with ``recipe`` (METHOD.md section 5, as ``lorita.train.exposure``):
    ``depth * weight_decay * sum of the step learning rates``, over ``1 - momentum`` for SGD; the log-factor by
    which the decay alone would shrink a direction the data does not use. Steps as the recipe sets them (a
    ``seconds`` budget may stop earlier: then this is an upper bound).

    Example:
        >>> how = RecoveryRecipe(steps=100, lr=1e-3, weight_decay=1.0, optimizer="sgd", warmup=0.0)
        >>> round(penalty_exposure(how), 3)  # 2 * 1.0 * (100 steps * 1e-3 * 0.505, the cosine's mean) / 0.1
        1.01
    """
    total = sum(recipe.lr * lr_factor(step, recipe.steps, recipe.warmup) for step in range(recipe.steps))
    exposure = depth * recipe.weight_decay * total
    return exposure / (1 - SGD_MOMENTUM) if recipe.optimizer == "sgd" else exposure


def induce(model: nn.Module, train, val, recipe: RecoveryRecipe, *, depth: int = 2,
           teacher: nn.Module | None = None) -> LMTraining:
    """Compose the decoder blocks' linears (``init="preserve"``), train the factors with ``recipe.weight_decay``
    (``recipe.optimizer``: SGD's decay is the penalty of METHOD.md section 1), merge back; in place. Everything else
    stays frozen; a linear whose weight the user froze is left plain and untouched (a frozen bias stays frozen), and
    each merged layer is trainable where it was before.
    ``train`` / ``val``: token streams (``lorita.lm.recover.train_lm``); ``teacher``: for
    ``recipe.distill``.

    Example:
        >>> net = nn.Sequential(nn.Embedding(20, 8), nn.ModuleList([nn.Linear(8, 8)]), nn.Linear(8, 20))
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.net = net
        ...     def forward(self, x):
        ...         return self.net[2](self.net[1][0](self.net[0](x)))
        >>> import torch
        >>> model, ids = Net(), torch.arange(200) % 20
        >>> _ = induce(model, ids, ids, RecoveryRecipe(steps=4, context=8, lr=0.01, weight_decay=1e-3, optimizer="sgd"))
        >>> type(model.net[1][0]).__name__
        'Linear'
    """
    every = block_linear_names(model)
    names = [n for n in every if model.get_submodule(n).weight.requires_grad]
    if every and not names:  # (none at all: compose says so below)
        raise LoritaError(f"every linear of the decoder blocks ({len(every)}) has its weight frozen "
                          "(requires_grad False): nothing to induce; unfreeze the layers to train "
                          "(model.requires_grad_(True))")
    if len(names) < len(every):
        logger.info("induce: %d frozen linear(s) left plain and untouched (e.g. %s)", len(every) - len(names),
                    next(n for n in every if n not in names))
    frozen = {p: p.requires_grad for p in model.parameters()}
    layer_flags = {n: {k: p.requires_grad for k, p in model.get_submodule(n).named_parameters()} for n in names}
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with warnings.catch_warnings():  # the tied lm_head is not a target; compose names it as left plain anyway
            warnings.filterwarnings("ignore", message=".*tied to another module", category=LoritaWarning)
            compose(model, depth, targets=names, init="preserve", factor_side="smaller", inplace=True)
        for n in names:  # the factors train; a bias the user froze stays frozen
            for k, p in model.get_submodule(n).named_parameters():
                p.requires_grad_(k != "bias" or layer_flags[n].get("bias", True))
        result = train_lm(model, train, val, recipe, teacher=teacher)
    finally:
        if any(isinstance(m, COMPOSED_TYPES) for m in model.modules()):  # compose itself may have failed
            merge(model, inplace=True)
        for p, flag in frozen.items():
            p.requires_grad_(flag)
        for n, flags in layer_flags.items():  # the merged layers are new: trainable where the user's were
            for k, p in model.get_submodule(n).named_parameters():
                p.requires_grad_(flags.get(k, True))
    logger.info("induce: %d layers composed (depth %d), trained %d steps, merged", len(names), depth, result.steps)
    return result
