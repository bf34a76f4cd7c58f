"""Whitened (activation-aware) SVD, as in SVD-LLM: truncate to minimise the output error, not the weight error.

A layer ``y = W x`` (W m x n) sees calibration inputs ``X`` (rows = samples, N x n). The
cut ``W_r`` that minimises ``||(W - W_r) X^T||_F`` among rank-r matrices is found from the
Gram matrix ``G = X^T X = L L^T`` (Cholesky): since ``||(W - W_r) X^T||_F^2 =
||(W - W_r) L||_F^2``, truncate the SVD of ``W L`` to ``U_r S_r V_r^T`` and map back,
``W_r = U_r S_r V_r^T L^(-1)``. Plain SVD is the special case of white inputs (``G = c I``).

Two parts:

* ``collect_grams`` runs a model over calibration batches and accumulates ``X^T X`` for
  each layer (float64), from forward pre-hooks.
* ``whitened_factors`` / ``whitened_spectrum``: pure tensor math on ``(weight, gram)``,
  with the same return convention as ``lorita.linalg.truncated_factors``.

Layers: ``nn.Linear`` (inputs ``(..., n)`` flattened to rows), transformers ``Conv1D``
(the same), and ``nn.Conv2d`` with ``groups == 1``, whose rows are the input patches
``F.unfold`` extracts with the conv's own padding (any ``padding``, ``"same"`` included,
and any ``padding_mode``), stride and dilation: ``n = C_in * kh * kw``, in the order of
``lorita.lowrank.weight_matrix(conv)``'s columns.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lorita.checks import check_int, check_number
from lorita.errors import LoritaError
from lorita.conv1d import is_conv1d
from lorita.linalg import check_rank, svd, work_dtype
from lorita.probe import eval_mode, hooks_on, model_input, run_model

logger = logging.getLogger(__name__)

# Relative ridge: ``eps * trace(G) / n`` (eps times the mean eigenvalue) is added to G's
# diagonal, so a singular Gram matrix (fewer calibration rows than inputs, or an input
# that is always zero) still has a Cholesky factor. Directions the data never excites
# then count with that tiny weight, instead of not at all: the cut keeps them small
# rather than arbitrary. 1e-6 changes the objective by ~1e-6 relative and keeps G's
# condition number below ~1e6 * n, far inside float64's reach.
DEFAULT_EPS = 1e-6


class Grams(dict):
    """``name -> X^T X`` (float64, n x n) per layer, with ``rows[name]``: how many input rows were summed.

    ``gram / rows[name]`` is the (uncentred) second-moment matrix of the layer's input.

    Example:
        >>> g = Grams({"fc": torch.eye(2)}, rows={"fc": 5})
        >>> g["fc"].shape, g.rows["fc"]
        (torch.Size([2, 2]), 5)
    """

    def __init__(self, grams: dict[str, torch.Tensor] | None = None, *, rows: dict[str, int] | None = None):
        super().__init__(grams or {})
        self.rows: dict[str, int] = dict(rows or {})


def _supported(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module) or \
        (isinstance(module, nn.Conv2d) and module.groups == 1)


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows ``module``'s weight matrix multiplies: (R, n), in float64 (float32 on MPS).

    Linear / ``Conv1D``: ``(..., n) -> (prod(...), n)``. Conv2d: every input patch
    ``(C_in * kh * kw)`` at every output position, so that
    ``conv(x) - bias == (weight_matrix(conv) @ rows.T)`` rearranged.

    Example:
        >>> input_rows(nn.Linear(4, 2), torch.zeros(2, 3, 4)).shape
        torch.Size([6, 4])
        >>> input_rows(nn.Conv2d(3, 8, 3, padding=1), torch.zeros(2, 3, 5, 5)).shape
        torch.Size([50, 27])
    """
    x = x.detach().to(work_dtype(x))
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise LoritaError(f"whitening supports Conv2d with groups=1 only, got groups={module.groups}: a grouped "
                              "conv is not one (C_out x C_in*k*k) matrix; leave it out of `names`")
        if x.dim() == 3:
            x = x.unsqueeze(0)  # (1, C, H, W): an unbatched input
        # The conv's own padding, as its forward applies it (covers "same" and non-zero padding modes).
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)  # (B, C, H', W')
        patches = F.unfold(x, module.kernel_size, dilation=module.dilation, stride=module.stride)  # (B, n, L)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (B*L, n)
    return x.reshape(-1, x.shape[-1])  # (R, n)


def _pick(model: nn.Module, names: Sequence[str] | None) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    if names is None:
        chosen = {n: m for n, m in modules.items() if _supported(m)}
        if not chosen:
            raise LoritaError(f"{type(model).__name__} has no Linear or Conv2d (groups=1) layer to whiten")
        return chosen
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise LoritaError(f"names must be a list of module names (e.g. ['blocks.0.attn.q']), got {names!r}")
    chosen = {}
    for name in names:
        if name not in modules:
            layers = [n for n, m in modules.items() if _supported(m)]
            close = difflib.get_close_matches(name, layers, n=3)
            known = ", ".join(map(repr, close or layers[:8])) + ("" if close or len(layers) <= 8 else ", ...")
            raise LoritaError(f"no module named {name!r} in the model; {'did you mean' if close else 'layers'}: "
                              f"{known} (names as model.named_modules() gives them)")
        if not _supported(modules[name]):
            raise LoritaError(f"module {name!r} is a {type(modules[name]).__name__}; whitening supports nn.Linear, "
                              "nn.Conv2d with groups=1 and transformers Conv1D")
        chosen[name] = modules[name]
    return chosen


@torch.no_grad()
def collect_grams(model: nn.Module, batches: Iterable[Any], names: Sequence[str] | None = None, *,
                  max_batches: int | None = None) -> Grams:
    """Run ``model`` in eval mode over calibration ``batches``; sum ``X^T X`` of each layer's input.

    Each batch is what the model takes: a tensor, a tuple of tensors (pass inputs only:
    ``(x for x, _ in split.batches(...))``) or a dict of named arguments (a Hugging Face
    batch; ``lorita.probe.model_input``). ``names``: module names
    (default: every Linear, Conv2d with groups=1 and transformers Conv1D). Leading
    dimensions are flattened, ``(B, T, n) -> (B*T, n)``; a Conv2d contributes its input
    patches (module docstring). Sums in float64. The model's train/eval mode is restored
    and the hooks removed afterwards, also on error. A layer called several times per
    forward (shared) sums every call.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> grams = collect_grams(net, [torch.randn(8, 3), torch.randn(8, 3)])
        >>> {name: tuple(g.shape) for name, g in grams.items()}, grams.rows["2"]
        ({'0': (3, 3), '2': (4, 4)}, 16)
    """
    if max_batches is not None:
        check_int("max_batches", max_batches, meaning="or None for all batches")
    chosen = _pick(model, names)
    grams = Grams({}, rows={name: 0 for name in chosen})

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            rows = input_rows(module, args[0])  # (R, n)
            if name not in grams:
                grams[name] = torch.zeros(rows.shape[1], rows.shape[1], dtype=rows.dtype, device=rows.device)
            grams[name].addmm_(rows.T, rows)  # += X^T X, (n, n)
            grams.rows[name] += rows.shape[0]
        return hook

    seen = 0
    with eval_mode(model), hooks_on(model, {name: hook_for(name) for name in chosen}, before=True):
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            run_model(model, model_input(batch), f"calibration batch {seen + 1}")  # a bad batch: LoritaError
            seen += 1
    if seen == 0:
        raise LoritaError("collect_grams got no calibration batches; pass a non-empty iterable of model inputs")
    idle = [name for name, count in grams.rows.items() if count == 0]
    if idle:
        raise LoritaError(f"layer(s) {idle} received no input in {seen} calibration batch(es); the forward pass "
                          "never calls them: leave them out of `names`")
    logger.debug("collected %d Gram matrices over %d batch(es)", len(grams), seen)
    return Grams({name: grams[name] for name in chosen}, rows=grams.rows)


def check_gram(label: str, gram: Any) -> None:
    """Raise LoritaError unless ``gram`` is a tensor with values (not on the meta device).

    Example:
        >>> check_gram("calibration['fc']", torch.eye(2))
    """
    if not isinstance(gram, torch.Tensor):
        raise LoritaError(f"{label} must be a tensor (X^T X from lorita.whiten.collect_grams), "
                          f"got {type(gram).__name__}")
    if gram.is_meta:
        raise LoritaError(f"{label} is on the meta device (shapes only, no values), so no whitened cut can use it; "
                          "collect it on real data: lorita.whiten.collect_grams(model, batches)")


def _check(weight: torch.Tensor, gram: torch.Tensor, eps: float) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise LoritaError(f"weight must be a 2-D (out x in) matrix, got {got}; flatten a conv kernel with "
                          "lorita.lowrank.weight_matrix(conv)")
    n = weight.shape[1]
    if not isinstance(gram, torch.Tensor) or tuple(gram.shape) != (n, n):
        got = tuple(gram.shape) if isinstance(gram, torch.Tensor) else type(gram).__name__
        raise LoritaError(f"gram must be ({n}, {n}) for a weight with {n} inputs, got {got}; "
                          "pass the layer's entry of collect_grams(...)")
    check_gram("gram", gram)
    check_number("eps", eps, minimum=0, meaning="relative ridge")


def whitening_factor(gram: torch.Tensor, *, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Lower-triangular ``L`` with ``L L^T = G + eps * trace(G)/n * I``, in float64 (float32 on MPS).

    Example:
        >>> whitening_factor(4 * torch.eye(2), eps=0)
        tensor([[2., 0.],
                [0., 2.]], dtype=torch.float64)
    """
    g = gram.to(work_dtype(gram))
    g = (g + g.T) / 2  # exact symmetry (a sum of float products may be off in the last bit)
    n = g.shape[0]
    ridge = eps * float(torch.diagonal(g).sum()) / max(n, 1)
    chol, info = torch.linalg.cholesky_ex(g + ridge * torch.eye(n, dtype=g.dtype, device=g.device))
    if int(info) != 0 or not bool(torch.isfinite(chol).all()):
        raise LoritaError(
            f"the Gram matrix ({n}x{n}) is not positive definite even with a ridge of eps={eps:g} times its "
            "mean eigenvalue (is it all zeros, or holding NaN?); raise eps, or collect it over more calibration data"
        )
    return chol


def whitened_factors(weight: torch.Tensor, gram: torch.Tensor, rank: int, *,
                     eps: float = DEFAULT_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` factors ``(A, B)`` minimising ``||(W - B A) L||_F``, i.e. the output error on the calibration data.

    ``W L ~ U_r S_r V_r^T`` (truncated SVD), ``A = S_r^(1/2) V_r^T L^(-1)`` (r x n,
    applied first) by a triangular solve, ``B = U_r S_r^(1/2)`` (m x r). ``L`` is the
    Cholesky factor of ``gram`` plus a relative ridge (``DEFAULT_EPS``, see there).
    Float64 (float32 on MPS), like ``lorita.linalg.truncated_factors``; unchanged when
    ``gram`` is scaled; equal to plain SVD in product when ``gram = c * I``; ``B @ A == W``
    at full rank.

    Example:
        >>> w, x = torch.randn(5, 4, dtype=torch.float64), torch.randn(100, 4, dtype=torch.float64)
        >>> a, b = whitened_factors(w, x.T @ x, 4)
        >>> a.shape, b.shape, torch.allclose(b @ a, w)
        (torch.Size([4, 4]), torch.Size([5, 4]), True)
    """
    _check(weight, gram, eps)
    check_rank("rank", rank, *weight.shape)
    chol = whitening_factor(gram.to(weight.device), eps=eps)  # (n, n) lower
    u, s, vh = svd(weight.to(chol.dtype) @ chol)  # W L = U S V^T
    root = s[:rank].sqrt()  # (r,)
    first = torch.linalg.solve_triangular(chol, root[:, None] * vh[:rank], upper=False, left=False)  # A L = S^.5 V^T
    return first, u[:, :rank] * root[None, :]  # (r, n), (m, r)


def whitened_spectrum(weight: torch.Tensor, gram: torch.Tensor, *, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Singular values of ``W L``, descending: what rank selection on a whitened layer looks at.

    The squared tail ``sum_{j > r} s_j^2`` is the output error ``||(W - W_r) X^T||_F^2`` of
    the whitened rank-r cut (with ``eps = 0``).

    Example:
        >>> whitened_spectrum(torch.diag(torch.tensor([3.0, 1.0])), torch.diag(torch.tensor([1.0, 16.0])), eps=0)
        tensor([4., 3.], dtype=torch.float64)
    """
    _check(weight, gram, eps)
    chol = whitening_factor(gram.to(weight.device), eps=eps)
    return torch.linalg.svdvals(weight.to(chol.dtype) @ chol)


def refit_second(weight: torch.Tensor, cross: torch.Tensor, gram: torch.Tensor, *,
                 eps: float = DEFAULT_EPS) -> torch.Tensor:
    """The second factor ``B`` (m x r) that best maps the first factor's outputs ``Z`` to the dense layer's outputs.

    SVD-LLM's closed-form update of the remaining factor, on the inputs the layer really sees
    once the layers before it are cut: with the dense layer's inputs ``X`` (N x n), the cut
    model's first-factor outputs ``Z = X' A^T`` (N x r), ``cross = X^T Z`` (n x r) and
    ``gram = Z^T Z`` (r x r), ``B = W cross gram^(-1)`` minimises ``||X W^T - Z B^T||_F``
    (least squares; the same relative ridge as ``whitening_factor`` on ``gram``). When the
    cut model's inputs equal the dense ones (``X' = X``) and ``A`` comes from
    ``whitened_factors``, this is that function's ``B`` again: whitened truncation is already
    optimal on its own calibration data; the update corrects for the errors of earlier cuts.

    Example:
        >>> w, x = torch.randn(5, 4, dtype=torch.float64), torch.randn(200, 4, dtype=torch.float64)
        >>> a, b = whitened_factors(w, x.T @ x, 2)
        >>> z = x @ a.T
        >>> torch.allclose(refit_second(w, x.T @ z, z.T @ z, eps=0), b)
        True
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise LoritaError("weight must be a 2-D (out x in) matrix")
    n = weight.shape[1]
    if not isinstance(cross, torch.Tensor) or cross.dim() != 2 or cross.shape[0] != n:
        raise LoritaError(f"cross must be X^T Z, ({n} x r) for a weight with {n} inputs, got "
                          f"{tuple(cross.shape) if isinstance(cross, torch.Tensor) else type(cross).__name__}")
    r = cross.shape[1]
    if not isinstance(gram, torch.Tensor) or tuple(gram.shape) != (r, r):
        raise LoritaError(f"gram must be Z^T Z, ({r} x {r}) for a cross of {r} columns, got "
                          f"{tuple(gram.shape) if isinstance(gram, torch.Tensor) else type(gram).__name__}")
    chol = whitening_factor(gram.to(weight.device), eps=eps)  # (r, r) lower, G_z = L L^T
    target = weight.to(chol.dtype) @ cross.to(chol.dtype)  # (m, r) = W X^T Z
    return torch.cholesky_solve(target.T, chol).T  # (m, r) = W X^T Z (Z^T Z)^-1
