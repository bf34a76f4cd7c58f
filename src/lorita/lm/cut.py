"""The post-training low-rank cut of a pretrained decoder LM, block by block, under a whole-model params budget.

``lm_cut(model, calibration, params=0.8)`` cuts every ``nn.Linear`` (or GPT-2's ``Conv1D``) inside the
decoder blocks (attention q/k/v/o, MLP gate/up/down) to two thin layers, in place, so that the whole
model keeps ``params`` of its parameters: embeddings, norms and a tied head are counted (once)
and left alone. Three steps:

1. **Spectra** (one pass over the calibration windows, block by block): each layer's whitened
   spectrum, the singular values of ``W L`` where ``L L^T`` is the Gram matrix of the layer's
   calibration inputs (``lorita.whiten``, SVD-LLM's truncation-aware whitening); dropping
   ``s_j`` costs exactly ``s_j^2`` of output error on that data. ``whiten=False``: the plain
   spectrum of ``W`` (plain SVD).
2. **Ranks**: non-uniform, chosen globally by ``lorita.ranks.budget_ranks``: the least summed
   relative truncation loss whose whole-model params fit the budget. Each layer is priced at
   its own shape, so the narrow key/value projections of grouped-query attention cost
   ``r * (C + C_kv)``, and a layer may stay dense when that is the better use of the budget.
   ``multiple``: every cut rank a multiple of it (e.g. 8 or 16, for faster kernels), allocated so by
   ``budget_ranks(..., step=multiple)``, so the budget still holds.
3. **Cut** (a second pass, block by block): each layer becomes ``A`` (whitened, from the dense
   model's calibration inputs) and ``B``; with ``update=True`` ``B`` is then refitted in closed
   form (``lorita.whiten.refit_second``) so the block maps the inputs it really receives, from
   the already-cut blocks before it, to the dense block's outputs.

Memory: the model, one dense copy of one block, the hidden states of the calibration windows
(two streams with ``update``), and the Gram matrices of one block.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from lorita.checks import check_fraction, check_int
from lorita.conv1d import is_conv1d
from lorita.errors import LoritaError
from lorita.linalg import break_even_rank, singular_values
from lorita.lm.blocks import BlockInput, block_inputs, decoder_blocks, run_block
from lorita.lm.corpus import check_calibration
from lorita.lowrank import LowRankLinear, truncate, weight_matrix
from lorita.probe import eval_mode, hooks_on
from lorita.progress import progress as progress_of
from lorita.ranks import LayerCost, budget_ranks
from lorita.targets import keep_frozen
from lorita.whiten import input_rows, refit_second, whitened_spectrum

logger = logging.getLogger(__name__)

BATCH = 8  # calibration windows per forward


@dataclass
class LMCut:
    """What ``lm_cut`` did: ``ranks`` per layer (full module names; ``min(m, n)`` = left dense), the params of the
    whole model before and after, the calibration tokens, and the seconds of each step."""

    ranks: dict[str, int]
    params_before: int
    params_after: int
    calibration_tokens: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> float:
        """Fraction of the whole model's params kept."""
        return self.params_after / self.params_before

    def to_dict(self) -> dict:
        return {"ranks": dict(self.ranks), "params_before": self.params_before, "params_after": self.params_after,
                "kept": self.kept, "calibration_tokens": self.calibration_tokens, "seconds": dict(self.seconds)}


def count_params(model: nn.Module) -> int:
    """Parameters of the whole model, a tied (shared) tensor counted once.

    Example:
        >>> emb = nn.Embedding(10, 4); head = nn.Linear(4, 10, bias=False); head.weight = emb.weight
        >>> count_params(nn.ModuleList([emb, head]))
        40
    """
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


def layer_name(prefix: str, index: int, name: str) -> str:
    """The full module name of layer ``name`` of block ``index`` of the blocks at ``prefix``.

    Example:
        >>> layer_name("model.layers", 3, "mlp.up_proj"), layer_name("h", 0, "")
        ('model.layers.3.mlp.up_proj', 'h.0')
    """
    return ".".join(part for part in (prefix, str(index), name) if part)


def block_linears(block: nn.Module) -> dict[str, nn.Module]:
    """Every plain ``nn.Linear`` (or transformers ``Conv1D``, GPT-2's linear layer) of a block, by name inside the block
    (in module order).

    Example:
        >>> list(block_linears(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))))
        ['0', '2']
    """
    return {name: m for name, m in block.named_modules() if type(m) is nn.Linear or is_conv1d(m)}


def budget_costs(model: nn.Module, shapes: dict[str, tuple[int, int]]) -> tuple[dict[str, LayerCost], int]:
    """``LayerCost`` of each layer to cut (its ``(m, n)``) and the params of everything else in the whole model.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2))
        >>> budget_costs(net, {"0": (4, 4)})
        ({'0': LayerCost(out_features=4, in_features=4, positions=1)}, 10)
    """
    costs = {name: LayerCost(m, n) for name, (m, n) in shapes.items()}
    return costs, count_params(model) - sum(m * n for m, n in shapes.values())


class _Inputs:
    """Forward pre-hooks keeping the latest input of each named module of a block (a reference, no copy)."""

    def __init__(self, block: nn.Module, names: list[str]):
        self.seen: dict[str, torch.Tensor] = {}
        self.hooks = hooks_on(block, {n: self._keeper(n) for n in names}, before=True)

    def _keeper(self, name: str):
        def keep(module, args):
            self.seen[name] = args[0]
        return keep

    def __enter__(self) -> "_Inputs":
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)


def _add_grams(grams: dict[str, torch.Tensor], linears: dict[str, nn.Linear], seen: dict[str, torch.Tensor]) -> None:
    """``grams[name] += X^T X`` of each layer's last input; layers fed the same tensor (q/k/v) share one product."""
    done: dict[int, torch.Tensor] = {}
    for name, module in linears.items():
        x = seen[name]
        key = id(x)
        if key not in done:
            rows = input_rows(module, x)  # (R, n) float64
            done[key] = rows.T @ rows  # (n, n)
        grams[name] = grams[name] + done[key] if name in grams else done[key].clone()


def _calibration_inputs(model: nn.Module, calibration: torch.Tensor, batch_size: int) -> list[BlockInput]:
    check_calibration(calibration, model)
    check_int("batch_size", batch_size)
    return block_inputs(model, calibration.split(batch_size))


@torch.no_grad()
def _dense_spectra(blocks: nn.ModuleList, prefix: str, inputs: list[BlockInput], whiten: bool, bar=None) -> dict:
    """Pass 1: each layer's (whitened) spectrum, block by block on the dense model's own hidden states."""
    spectra, hidden = {}, [b.hidden for b in inputs]
    for index, block in enumerate(blocks):
        linears = block_linears(block)
        grams: dict[str, torch.Tensor] = {}
        if whiten:
            with _Inputs(block, list(linears)) as kept:
                for i, batch in enumerate(inputs):
                    hidden[i] = run_block(block, batch, hidden[i])
                    _add_grams(grams, linears, kept.seen)
        for name, module in linears.items():
            w = weight_matrix(module).detach()
            full = layer_name(prefix, index, name)
            spectra[full] = whitened_spectrum(w, grams[name]) if whiten else singular_values(w)
        logger.debug("block %d: spectra of %d layers", index, len(linears))
        if bar is not None:
            bar.update()
    return spectra


def _refit(block: nn.Module, dense: nn.Module, pairs: dict[str, LowRankLinear], batches: list[BlockInput],
           dense_h: list[torch.Tensor], cut_h: list[torch.Tensor]) -> None:
    """Closed-form update of each pair's second factor on the inputs the cut block really receives."""
    cross: dict[str, torch.Tensor] = {}
    gram: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def keep_output(name):
        def hook(module, args, out):
            outputs[name] = out
        return hook

    with _Inputs(dense, list(pairs)) as kept, hooks_on(block, {f"{n}.0": keep_output(n) for n in pairs}):
        for i, batch in enumerate(batches):
            run_block(dense, batch, dense_h[i])
            run_block(block, batch, cut_h[i])
            for name, pair in pairs.items():
                x = input_rows(pair, kept.seen[name])  # (R, n) dense inputs
                z = input_rows(pair[1], outputs[name])  # (R, r) first-factor outputs of the cut block
                cross[name] = cross.get(name, 0) + x.T @ z
                gram[name] = gram.get(name, 0) + z.T @ z
    dense_linears = block_linears(dense)
    for name, pair in pairs.items():
        second = refit_second(weight_matrix(dense_linears[name]).detach(), cross[name], gram[name])
        pair[1].weight.data.copy_(second.to(pair[1].weight.dtype))


@torch.no_grad()
def _cut_pass(blocks: nn.ModuleList, prefix: str, inputs: list[BlockInput], ranks: dict[str, int], *,
              whiten: bool, update: bool, bar=None) -> None:
    """Pass 2: cut each block's layers to their ranks, block by block (and refit on the cut stream with ``update``)."""
    dense_h = [b.hidden for b in inputs]
    cut_h = list(dense_h)
    for index, block in enumerate(blocks):
        linears = block_linears(block)
        chosen = {n: ranks[layer_name(prefix, index, n)] for n in linears
                  if ranks[layer_name(prefix, index, n)] <= break_even_rank(*weight_matrix(linears[n]).shape)}
        dense = copy.deepcopy(block) if update else None
        grams: dict[str, torch.Tensor] = {}
        next_dense = []
        if whiten or update:
            with _Inputs(block, list(chosen)) as kept:
                for i, batch in enumerate(inputs):
                    next_dense.append(run_block(block, batch, dense_h[i]))
                    if whiten:
                        _add_grams(grams, {n: linears[n] for n in chosen}, kept.seen)
        pairs = {}
        for name, rank in chosen.items():
            pairs[name] = truncate(linears[name], rank, layer_name(prefix, index, name), gram=grams.pop(name, None))
            keep_frozen(linears[name], pairs[name])
            block.set_submodule(name, pairs[name])
        if update and pairs:
            _refit(block, dense, pairs, inputs, dense_h, cut_h)
        if update:
            cut_h = [run_block(block, batch, cut_h[i]) for i, batch in enumerate(inputs)]
        dense_h = next_dense
        logger.debug("block %d: %d of %d layers cut", index, len(pairs), len(linears))
        if bar is not None:
            bar.update()


@torch.no_grad()  # calibration forwards build no autograd graph: activations are freed block by block
def lm_cut(model: nn.Module, calibration: torch.Tensor, *, params: float, whiten: bool = True, update: bool = True,
           multiple: int = 1, batch_size: int = BATCH, progress: bool = False) -> LMCut:
    """Cut the decoder blocks' linear layers of ``model`` in place so the whole model keeps ``params`` of its params.

    ``calibration``: token ids ``(windows, context)`` (``lorita.lm.corpus.random_windows``).
    ``whiten=False`` gives plain SVD (spectra and factors of ``W`` alone; then ``update`` is
    ignored and no calibration pass runs); ``update`` refits each second factor on the cut
    model's own inputs (module docstring). ``progress``: a bar over the blocks of both passes
    (spectra, then cut). Returns what was done (``LMCut``).

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        ...                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
        >>> torch.manual_seed(0); model = LlamaForCausalLM(config).eval()  # doctest: +ELLIPSIS
        <...>
        >>> done = lm_cut(model, torch.randint(0, 64, (8, 16)), params=0.8)
        >>> done.kept <= 0.8, type(model.model.layers[0].mlp.down_proj).__name__
        (True, 'LowRankLinear')
    """
    check_fraction("params", params, meaning="the fraction of the whole model's params to keep")
    check_int("multiple", multiple)
    start = time.perf_counter()
    prefix, blocks = decoder_blocks(model)
    pairs = [name for name, m in blocks.named_modules() if isinstance(m, LowRankLinear)]
    if pairs:  # its thin layers are plain nn.Linear too: a second cut would nest pairs under a budget of the cut
        raise LoritaError(f"the model is already cut (thin pairs in its blocks, e.g. {prefix}.{pairs[0]}); cut the "
                          "dense model it came from, to the size you want")
    shapes = {layer_name(prefix, i, n): tuple(weight_matrix(m).shape) for i, b in enumerate(blocks)
              for n, m in block_linears(b).items()}
    if not shapes:
        raise LoritaError("the decoder blocks hold no plain nn.Linear (or GPT-2 Conv1D) to cut (already cut, or "
                          "composed: merge first)")
    costs, fixed = budget_costs(model, shapes)
    before = count_params(model)
    with eval_mode(model), progress_of(progress, desc="cut", unit="block", total=2 * len(blocks)) as bar:
        inputs = _calibration_inputs(model, calibration, batch_size) if whiten or update else []
        logger.debug("calibration: inputs of the first block captured (%d batches)", len(inputs))
        spectra = _dense_spectra(blocks, prefix, inputs, whiten, bar)
        seconds = {"spectra": time.perf_counter() - start}
        try:
            ranks = budget_ranks(spectra, costs, params, fixed=fixed, step=multiple)  # allocated in multiples
        except LoritaError as err:
            raise LoritaError(str(err).replace("target=", "params=").replace("pass a target", "pass params")) from None
        logger.debug("ranks chosen")
        _cut_pass(blocks, prefix, inputs if whiten else [], ranks, whiten=whiten, update=update and whiten, bar=bar)
    seconds["total"] = time.perf_counter() - start
    seconds["cut"] = seconds["total"] - seconds["spectra"]
    tokens = int(calibration.numel()) if whiten else 0
    done = LMCut(ranks, before, count_params(model), tokens, seconds)
    logger.info("lm_cut: kept %.4f of %d params (%d layers cut) in %.1f s", done.kept, before,
                sum(isinstance(m, LowRankLinear) for m in model.modules()), seconds["total"])
    return done
