"""Width pruning of a Llama-style model's MLPs: the structured alternative to a low-rank cut.

Torch-Pruning's LLM recipe (``examples/LLMs/prune_llm.py``: ``MetaPruner``, group L2-norm
importance, local ranking, heads and hidden size pruned at one ratio) does not run on this
stack: with torch-pruning 1.6.1 and transformers 5.x, building the dependency graph of a
Llama (even 2 blocks of width 32, with or without grouped-query attention or tied
embeddings) does not finish (Torch-Pruning issue #527 reports the same endless loop for
Qwen3). So the same importance is applied here to the part of the model where structured
pruning is simplest and most of the parameters sit (59% of SmolLM2-135M): the MLP channels.

Each block's MLP keeps the same number of intermediate channels (local ranking, as the
recipe), those with the largest group importance: the mean over its three weight slices of
the squared L2 norm (row ``j`` of ``gate_proj`` and ``up_proj``, column ``j`` of
``down_proj``), Torch-Pruning's ``GroupMagnitudeImportance(p=2, group_reduction="mean")``.
Widths are rounded to a multiple of 4 (``round_to=4``). Attention, norms and embeddings are
left whole.

On SmolLM2-135M that weight-only importance is far worse than choosing channels at random
(keeping 90% of the params: fortunes perplexity 101,070 against 197 at random; dense 40.8;
``benchmarks/lm_width_ranking.py``): the smallest weights are not the unused channels. With
calibration text, ``prune_width`` ranks the channels by what they carry instead, the
activation-aware importance of Wanda-SP and FLAP: for channel ``j``, the squared norm of its
input to ``down_proj`` over the calibration tokens times the squared norm of ``down_proj``'s
column ``j`` (``activation_importance``): 57 there.

With calibration, ``down_proj`` is then refitted on the kept channels (``update=True``, the width
counterpart of the low-rank cut's closed-form update, as in FLAP's and SliceGPT's compensation):
the kept columns ``W'`` minimise ``sum ||W h - W' h_K||^2`` over the calibration tokens' inputs
``h`` to ``down_proj``, ``W' = W G[:, K] (G[K, K] + damp I)^-1`` with ``G`` their Gram matrix and a
1% damping of its mean diagonal (SparseGPT's). The removed channels' share of the output is
carried by the kept channels that correlate with them. Importance and Gram matrices come from one
pass of the dense model (not block by block).

``allocation="global"`` lets the widths differ from block to block (in the spirit of FLAP's
adaptive structure): each channel's importance is divided by its block's median, so it reads as
how far the channel stands above a typical channel of its block, and the channels ranking highest
over all blocks are kept, the same total as the uniform allocation keeps. On SmolLM2-135M it is
level with the uniform widths before any recovery (docs/LM.md; dividing by the block's sum
instead, or FLAP's standardisation, does worse: a block whose importance sits in a few channels then
loses nearly all the others, three blocks down to 4 to 20 of 1,536 channels), so ``"uniform"`` stays
the default. Widths are rounded to a multiple of 4 per block (at least 4). Such a model's Hugging
Face config cannot say its widths (``intermediate_size`` is one number: it is set to the widest
block), so they are recorded in the config as ``lorita_mlp_widths``, which
``lorita.lm.deploy.load_lm`` reads back (``set_mlp_widths``); a plain ``from_pretrained`` of a
``save_pretrained`` copy cannot.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import nn

from lorita.checks import check_choice, check_fraction, check_int
from lorita.errors import LoritaError
from lorita.lm.corpus import check_calibration
from lorita.lm.cut import count_params
from lorita.lowrank import LowRankLinear
from lorita.probe import eval_mode
from lorita.targets import keep_frozen

logger = logging.getLogger(__name__)

ROUND_TO = 4
DAMP = 0.01  # the refit's ridge: this fraction of the Gram matrix's mean diagonal
GRAM_BYTES = 1 << 30  # Gram matrices of at most this many bytes are gathered in one calibration pass
ALLOCATIONS = ("uniform", "global")  # prune_width(allocation=...): one width for every block, or one ranking over all
WIDTHS_KEY = "lorita_mlp_widths"  # the config attribute holding each block's MLP width when they differ


def _mlps(model: nn.Module) -> list[nn.Module]:
    found = [m for m in model.modules() if all(isinstance(getattr(m, n, None), nn.Linear)
                                               for n in ("gate_proj", "up_proj", "down_proj"))]
    if not found:
        raise LoritaError(f"{type(model).__name__} has no Llama-style MLP (gate_proj, up_proj, down_proj) to prune; "
                          "the low-rank cut (method 'low-rank', the default) takes any decoder's linear layers")
    return found


def _narrowed(layer: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``layer`` keeping the rows (``dim=0``) or columns (``dim=1``) ``keep``, frozen and in the mode
    where ``layer`` was."""
    weight = layer.weight.detach().index_select(dim, keep)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None, device=weight.device,
                    dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias if dim == 1 else layer.bias.index_select(0, keep))
    keep_frozen(layer, new)
    return new.train(layer.training)


def channel_importance(mlp: nn.Module) -> torch.Tensor:
    """Group importance of each intermediate channel: the mean squared L2 norm of its three weight slices.

    Example:
        >>> mlp = nn.Module(); mlp.gate_proj, mlp.up_proj = nn.Linear(2, 3), nn.Linear(2, 3)
        >>> mlp.down_proj = nn.Linear(3, 2)
        >>> channel_importance(mlp).shape
        torch.Size([3])
    """
    gate, up, down = (getattr(mlp, n).weight.detach().float() for n in ("gate_proj", "up_proj", "down_proj"))
    return (gate.pow(2).sum(1) + up.pow(2).sum(1) + down.pow(2).sum(0)) / 3


def _down_proj_inputs(model: nn.Module, mlps: list[nn.Module], calibration: torch.Tensor, batch_size: int,
                      gram: bool) -> dict[nn.Module, torch.Tensor]:
    """Per MLP, the summed squared inputs to ``down_proj`` (``gram=False``) or their Gram matrix (float64)."""
    found: dict[nn.Module, torch.Tensor] = {}

    def record(layer: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach().float()
        x = x.reshape(-1, x.shape[-1])
        part = (x.T @ x).double() if gram else x.pow(2).sum(0)
        found[layer] = found[layer] + part if layer in found else part

    hooks = [m.down_proj.register_forward_pre_hook(record) for m in mlps]
    no_cache = {"use_cache": False} if hasattr(getattr(model, "config", None), "use_cache") else {}
    try:
        with torch.no_grad(), eval_mode(model):  # eval: no dropout in what ranks the channels
            for start in range(0, calibration.shape[0], batch_size):
                model(calibration[start:start + batch_size], **no_cache)
    finally:
        for hook in hooks:
            hook.remove()
    return {m: found[m.down_proj] for m in mlps}


def activation_importance(model: nn.Module, calibration: torch.Tensor, *, batch_size: int = 4) -> dict[nn.Module, torch.Tensor]:
    """Each MLP's channel importance on calibration windows: input energy to ``down_proj`` times its column norm.

    ``calibration`` is a ``(windows, tokens)`` tensor of token ids; the model runs on it without
    autograd, ``batch_size`` windows at a time.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        ...                      num_attention_heads=4, num_key_value_heads=2)
        >>> model = LlamaForCausalLM(config)
        >>> scores = activation_importance(model, torch.randint(0, 64, (3, 8)))
        >>> [tuple(s.shape) for s in scores.values()]
        [(64,), (64,)]
    """
    check_calibration(calibration, model)
    check_int("batch_size", batch_size, meaning="calibration windows per forward pass")
    mlps = _mlps(model)
    energy = _down_proj_inputs(model, mlps, calibration, batch_size, gram=False)
    return {m: energy[m] * m.down_proj.weight.detach().float().pow(2).sum(0) for m in mlps}


def refit_down_proj(weight: torch.Tensor, keep: torch.Tensor, gram: torch.Tensor, *, damp: float = DAMP) -> torch.Tensor:
    """The columns of ``down_proj`` for the kept channels that best carry the whole layer's output.

    ``weight``: ``down_proj``'s ``(out, channels)`` weight; ``keep``: the kept channel indices;
    ``gram``: the ``(channels, channels)`` Gram matrix of its inputs on calibration tokens. Returns
    ``W G[:, K] (G[K, K] + damp * mean(diag G[K, K]) I)^-1`` in ``weight``'s dtype.

    Example:
        >>> h = torch.randn(100, 4); h[:, 3] = h[:, 0]          # channel 3 copies channel 0
        >>> w = torch.randn(2, 4)
        >>> new = refit_down_proj(w, torch.tensor([0, 1, 2]), h.T @ h, damp=0.0)
        >>> torch.allclose(h[:, :3] @ new.T, h @ w.T, atol=1e-4)   # nothing lost: 0 carries 3
        True
    """
    g = gram.double()
    inner = g[keep][:, keep]
    inner = inner + damp * inner.diagonal().mean() * torch.eye(len(keep), dtype=g.dtype, device=g.device)
    target = weight.detach().double() @ g[:, keep]  # (out, kept)
    return torch.linalg.solve(inner, target.T).T.to(weight.dtype)  # inner is symmetric


def _refits(model: nn.Module, mlps: list[nn.Module], keep: dict[nn.Module, torch.Tensor],
            calibration: torch.Tensor, batch_size: int) -> dict[nn.Module, torch.Tensor]:
    """Every MLP's refitted ``down_proj`` weight on its kept channels; Gram matrices gathered ``GRAM_BYTES`` at a time."""
    width = mlps[0].down_proj.in_features
    per_pass = max(1, GRAM_BYTES // (width * width * 8))
    refitted = {}
    for start in range(0, len(mlps), per_pass):
        group = mlps[start:start + per_pass]
        grams = _down_proj_inputs(model, group, calibration, batch_size, gram=True)
        for mlp in group:
            refitted[mlp] = refit_down_proj(mlp.down_proj.weight, keep[mlp], grams.pop(mlp))
    return refitted


def over_median(scores: torch.Tensor) -> torch.Tensor:
    """Each channel's importance over its block's median importance, in float64.

    Example:
        >>> over_median(torch.tensor([4.0, 1.0, 2.0])).tolist()
        [2.0, 0.5, 1.0]
    """
    return scores.double() / scores.double().median().clamp_min(1e-300)


def global_widths(scores: list[torch.Tensor], total: int, *,
                  normalize: Callable[[torch.Tensor], torch.Tensor] = over_median) -> list[int]:
    """Each block's width when the ``total`` channels with the largest normalised importance over all blocks are kept.

    ``scores``: one non-negative importance per channel, one tensor per block, each normalised by
    ``normalize`` (by default over the block's median, ``over_median``) before the one ranking;
    each block's count is rounded to a multiple of 4, at least 4: down first (a block raised to 4 paid for
    by the widest), then what rounding left is handed out 4 channels at a time to the block whose next
    channel ranks highest, so the widths add up to ``total`` (or just under: never more).

    Example:
        >>> flat, peaked = torch.ones(8), torch.tensor([9.0, 9, 9, 9, 0.1, 0.1, 0.1, 0.1])
        >>> global_widths([flat, peaked], 12)     # the peaked block's last four channels carry almost nothing
        [8, 4]
    """
    ordered = [normalize(s).double().sort(descending=True).values for s in scores]
    block = torch.cat([torch.full((len(s),), i) for i, s in enumerate(ordered)])
    chosen = block[torch.cat(ordered).argsort(descending=True, stable=True)[:total]]
    counts = torch.bincount(chosen, minlength=len(scores)).tolist()
    widths = [max(ROUND_TO, c - c % ROUND_TO) for c in counts]
    while sum(widths) > total:  # blocks raised to the minimum width are paid for by the widest
        widest = widths.index(max(widths))
        widths[widest] -= ROUND_TO
    while sum(widths) + ROUND_TO <= total:  # what rounding down left goes, 4 channels at a time, where the next is best
        room = [b for b in range(len(widths)) if widths[b] + ROUND_TO <= len(ordered[b])]
        if not room:
            break
        best = max(room, key=lambda b: ordered[b][widths[b]].item())
        widths[best] += ROUND_TO
    return widths


def set_mlp_widths(model: nn.Module, widths: list[int]) -> None:
    """Narrow each Llama-style MLP of ``model`` to its width in ``widths`` (in block order), keeping its first channels.

    For rebuilding a model pruned with ``allocation="global"`` before its weights are loaded.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
        ...                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
        >>> set_mlp_widths(model, [8, 16])
        >>> [layer.mlp.down_proj.in_features for layer in model.model.layers]
        [8, 16]
    """
    mlps = _mlps(model)
    if (not isinstance(widths, (list, tuple)) or len(widths) != len(mlps)
            or not all(type(w) is int and 1 <= w <= m.up_proj.out_features for w, m in zip(widths, mlps))):
        raise LoritaError(f"MLP widths must be {len(mlps)} integers, each between 1 and its block's width "
                          f"({mlps[0].up_proj.out_features}), got {str(widths)[:200]}")
    for mlp, width in zip(mlps, widths):
        _narrow_mlp(mlp, torch.arange(width))


def _narrow_mlp(mlp: nn.Module, keep: torch.Tensor) -> None:
    mlp.gate_proj = _narrowed(mlp.gate_proj, keep, 0)
    mlp.up_proj = _narrowed(mlp.up_proj, keep, 0)
    mlp.down_proj = _narrowed(mlp.down_proj, keep, 1)


def prune_width(model: nn.Module, params: float, calibration: torch.Tensor | None = None, *,
                update: bool = True, allocation: str = "uniform") -> dict:
    """Prune the MLP channels of ``model`` in place so the whole model keeps at most ``params`` of its params.

    Without ``calibration`` the channels are ranked by their weights (``channel_importance``,
    Torch-Pruning's recipe); with calibration windows of token ids, by what they carry on them
    (``activation_importance``), which is far better on a pretrained model, and ``down_proj`` is
    refitted on the kept channels (``refit_down_proj``) unless ``update=False``. ``allocation``:
    ``"uniform"`` (every block keeps the same width) or ``"global"`` (``global_widths``: one ranking
    over all blocks, the same total; module docstring).

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        ...                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
        >>> model = LlamaForCausalLM(config)
        >>> info = prune_width(model, 0.8)
        >>> info["kept"] <= 0.8, model.model.layers[0].mlp.up_proj.out_features, model.config.intermediate_size
        (True, 40, 40)
    """
    check_fraction("params", params, meaning="the fraction of the whole model's params to keep")
    check_choice("allocation", allocation, ALLOCATIONS)
    if calibration is not None:
        check_calibration(calibration, model)
    pair = next((f"{name}.{n}" for name, m in model.named_modules() for n in ("gate_proj", "up_proj", "down_proj")
                 if isinstance(getattr(m, n, None), LowRankLinear)), None)
    if pair is not None:  # its cut MLPs would keep their width while the config says the pruned one
        raise LoritaError(f"the model's MLPs are cut to low rank (thin pairs, e.g. {pair}); prune the width of the "
                          "dense model it came from instead")
    mlps = _mlps(model)
    before = count_params(model)
    width = mlps[0].up_proj.out_features
    if any(m.up_proj.out_features != width for m in mlps):
        raise LoritaError(f"the model's MLPs are of several widths ({sorted({m.up_proj.out_features for m in mlps})}: "
                          "pruned before, by the global allocation); prune_width sizes every block from one width: "
                          "prune the original model to the size you want instead")
    per_channel = sum(sum(getattr(m, n).weight[0].numel() if n != "down_proj" else getattr(m, n).weight.shape[0]
                          for n in ("gate_proj", "up_proj", "down_proj")) for m in mlps)  # params of channel j in all
    removed = math.ceil(max(0.0, before - params * before) / per_channel)
    keep = width - removed
    if removed:
        keep -= keep % ROUND_TO
    check_int("channels kept", keep, meaning=f"{params:g} of the params leaves no MLP channel; raise params")
    found = activation_importance(model, calibration) if calibration is not None else None
    scores = {m: found[m] if found is not None else channel_importance(m) for m in mlps}
    widths = [keep] * len(mlps)
    if allocation == "global" and removed:
        widths = global_widths([scores[m] for m in mlps], keep * len(mlps))
    kept = {m: scores[m].argsort(descending=True)[:w].sort().values for m, w in zip(mlps, widths)}
    narrowed = [m for m in mlps if len(kept[m]) < width]  # a block kept whole is left as it is: no refit
    refitted = _refits(model, narrowed, kept, calibration, 4) if calibration is not None and update and narrowed \
        else {}
    for mlp in narrowed:
        _narrow_mlp(mlp, kept[mlp])
        if mlp in refitted:
            with torch.no_grad():
                mlp.down_proj.weight.copy_(refitted[mlp])
    config = getattr(model, "config", None)
    if hasattr(config, "intermediate_size"):
        config.intermediate_size = max(widths)
        if len(set(widths)) > 1:
            setattr(config, WIDTHS_KEY, widths)
    share = count_params(model) / before
    logger.info("prune_width: MLP %d -> %d to %d channels (%s), kept %.4f of %d params", width, min(widths),
                max(widths), allocation, share, before)
    return {"kept": share, "params_before": before, "params_after": count_params(model), "mlp_width": max(widths),
            "mlp_widths": widths, "mlp_width_before": width, "allocation": allocation,
            "importance": "weights" if calibration is None else "activations", "refit": bool(refitted)}


def pruned_linears(model: nn.Module) -> list[nn.Linear]:
    """The layers a width-pruned model's recovery trains: the pruned MLPs' linears.

    Example:
        >>> mlp = nn.Module(); mlp.gate_proj, mlp.up_proj = nn.Linear(2, 3), nn.Linear(2, 3)
        >>> mlp.down_proj = nn.Linear(3, 2)
        >>> len(pruned_linears(nn.ModuleList([mlp])))
        3
    """
    return [getattr(m, n) for m in _mlps(model) for n in ("gate_proj", "up_proj", "down_proj")]
