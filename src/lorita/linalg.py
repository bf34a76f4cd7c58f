"""Pure tensor math behind LoRITa: factor products, balanced splits, truncated SVD.

Nothing here knows about modules; every function takes and returns tensors, so the
identities can be tested on bare matrices.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from lorita.checks import check_int, is_int
from lorita.errors import LoritaError

# Preserving splits pad zero (or tiny) singular directions of the inner factors with
# this fraction of the largest singular value, so they are not dead saddle points.
PAD_RELATIVE = 1e-3


def work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype SVDs and factor products run in: float64, or float32 where the device lacks it.

    Example:
        >>> work_dtype(torch.zeros(2, dtype=torch.float16))
        torch.float64
    """
    return torch.float32 if tensor.device.type == "mps" else torch.float64


def chain_product(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The product ``F_N ... F_2 F_1`` of factors given in the order they are applied.

    Example:
        >>> a, b = torch.randn(4, 3), torch.randn(2, 4)
        >>> torch.allclose(chain_product([a, b]), b @ a)
        True
    """
    if len(factors) == 1:
        return factors[0]
    if len(factors) == 2:  # one matmul: skip multi_dot's argument checks
        return factors[1] @ factors[0]
    # multi_dot picks the cheapest association and supports autograd.
    return torch.linalg.multi_dot(list(reversed(factors)))


def check_values(tensor: torch.Tensor, label: str, what: str = "this") -> None:
    """Raise LoritaError when ``tensor`` is on the meta device (shapes only, no values).

    ``label`` names it in the message (``"layer 'fc'"``), ``what`` says what needs values.

    Example:
        >>> check_values(torch.ones(2), "layer 'fc'")
    """
    if tensor.is_meta:
        raise LoritaError(
            f"{label} is on the meta device: meta tensors have no values, so {what} cannot run on it "
            "(compose with the default init and merge work on structure only). Materialise the model first, "
            "e.g. model.to_empty(device='cpu') then model.load_state_dict(weights)."
        )


def check_finite(weight: torch.Tensor, name: str, what: str = "weight") -> None:
    """Raise LoritaError naming the layer when a tensor holds NaN or Inf (or has no values: meta).

    ``what`` names the tensor in the message: ``"weight"`` or ``"bias"``.

    Example:
        >>> check_finite(torch.ones(2, 2), "fc")
    """
    check_values(weight, f"layer {name!r}", "spectrum, compress or an SVD")
    if not torch.isfinite(weight).all():
        bad = "NaN" if torch.isnan(weight).any() else "Inf"
        raise LoritaError(
            f"layer {name!r} has {bad} in its {what}; a model with non-finite weights cannot be "
            "composed, merged or compressed. Check the training run that produced it (learning "
            "rate, loss scaling) and use an earlier checkpoint."
        )


def svd(matrix: torch.Tensor, *, full_matrices: bool = False):
    """SVD ``U, S, Vh`` computed in float64 (float32 on MPS), returned in that precision.

    Example:
        >>> u, s, vh = svd(torch.eye(3))
        >>> s.tolist()
        [1.0, 1.0, 1.0]
    """
    check_values(matrix, "the matrix", "an SVD")
    return torch.linalg.svd(matrix.to(work_dtype(matrix)), full_matrices=full_matrices)


def balanced_split(weight: torch.Tensor, depth: int, inner: int, side: str) -> list[torch.Tensor]:
    """Split ``weight`` (m x n) into ``depth`` factors whose product equals it.

    ``side="input"``: factors ``inner x n`` ... then ``m x inner`` (square ``n x n`` inner
    factors when ``inner == n``); ``side="output"``: ``inner x n`` first, then square
    ``m x m`` factors (``inner == m``). Singular values are shared out evenly
    (``sigma^(1/depth)`` per factor, the minimiser of the weight-decay penalty). Directions
    with zero or tiny singular value get a small positive value in the inner factors
    (``PAD_RELATIVE`` of the largest) and are cancelled in the outermost factor, so the
    product stays exact and gradients still reach them. Returned in application order.

    Example:
        >>> w = torch.randn(5, 3, dtype=torch.float64)
        >>> fs = balanced_split(w, 3, 3, "input")
        >>> [tuple(f.shape) for f in fs]
        [(3, 3), (3, 3), (5, 3)]
        >>> torch.allclose(chain_product(fs), w)
        True
    """
    m, n = weight.shape
    if depth < 2:
        raise LoritaError(f"balanced_split needs depth >= 2, got {depth}")
    if side == "output":
        # Mirror: W^T = F_1^T ... F_N^T is an input-side split of W^T.
        mirrored = balanced_split(weight.T, depth, inner, "input")
        return [f.T.contiguous() for f in reversed(mirrored)]
    if side != "input":
        raise LoritaError(f"side must be 'input' or 'output', got {side!r}")
    if inner < min(m, n):
        raise LoritaError(f"inner size {inner} is below min(m, n) = {min(m, n)}: the product would lose rank")
    u, s, vh = svd(weight)  # reduced: u (m, k), s (k,), vh (k, n), k = min(m, n)
    k = s.numel()
    # Pad singular values to the inner size; the extra directions come from V's complement.
    floor = PAD_RELATIVE * (float(s[0]) if k and float(s[0]) > 0 else 1.0)
    sigma = torch.zeros(inner, dtype=s.dtype, device=s.device)
    sigma[:k] = s
    padded = sigma.clamp_min(floor)  # what the inner factors carry
    root = padded.pow(1.0 / depth)  # (inner,)
    # Input basis: the k rows of vh, then (when inner > k) orthonormal rows spanning the
    # complement of V's row space, from a QR of V (n x k) rather than a full n x n SVD;
    # if inner > n, the rows past n are zero (unused inputs).
    rows = min(inner, n)
    basis = torch.zeros(inner, n, dtype=s.dtype, device=s.device)
    basis[:k] = vh
    if rows > k:
        q, _ = torch.linalg.qr(vh.T, mode="complete")  # (n, n): columns k.. span the complement
        basis[k:rows] = q[:, k:rows].T
    first = root[:, None] * basis  # (inner, n)
    middle = [torch.diag(root) for _ in range(depth - 2)]  # (inner, inner)
    # Outermost factor restores the true sigma: column j carries sigma_j / padded_j^((N-1)/N).
    scale = torch.zeros(inner, dtype=s.dtype, device=s.device)
    scale[:k] = s / padded[:k].pow((depth - 1) / depth)
    out_basis = torch.zeros(m, inner, dtype=s.dtype, device=s.device)
    out_basis[:, :k] = u[:, :k]
    last = out_basis * scale[None, :]  # (m, inner)
    return [first, *middle, last]


def truncated_factors(weight: torch.Tensor, rank: int, *,
                      decomposition: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors ``(A, B)`` with ``B @ A`` the truncated SVD of ``weight``.

    ``A = S_r^(1/2) V_r^T`` (r x n) is applied first, ``B = U_r S_r^(1/2)`` (m x r) second.
    ``decomposition``: ``svd(weight)`` if already computed (at least ``rank`` components).

    Example:
        >>> w = torch.randn(6, 4, dtype=torch.float64)
        >>> a, b = truncated_factors(w, 4)
        >>> torch.allclose(b @ a, w)
        True
    """
    check_rank("rank", rank, *weight.shape)
    u, s, vh = svd(weight) if decomposition is None else decomposition
    if s.shape[0] < rank:
        raise LoritaError(f"the given decomposition has {s.shape[0]} components, fewer than rank {rank}")
    root = s[:rank].sqrt()
    return root[:, None] * vh[:rank], u[:, :rank] * root[None, :]


def break_even_rank(m: int, n: int) -> int:
    """The largest rank ``r`` with ``r * (m + n) < m * n`` (0 if there is none).

    A rank-r pair of thin layers holds ``r*(m+n)`` weights against the dense ``m*n``:
    only ranks up to this one save anything. Integer arithmetic, exact for any size.

    Example:
        >>> break_even_rank(512, 512), break_even_rank(512, 784), break_even_rank(10, 1)
        (255, 309, 0)
    """
    check_int("m", m, meaning="a layer dimension")
    check_int("n", n, meaning="a layer dimension")
    return (m * n - 1) // (m + n)


def check_rank(what: str, rank: int, m: int, n: int) -> int:
    """``rank`` if it is an integer from 1 to ``min(m, n)``, a valid cut of an ``m x n`` weight.

    ``what`` names it in the message: ``"rank"`` or ``"rank for 'fc'"``.

    Example:
        >>> check_rank("rank for 'fc'", 3, 8, 4)
        3
    """
    if not is_int(rank) or not 1 <= rank <= min(m, n):
        raise LoritaError(f"{what} must be an integer between 1 and min(out, in) = {min(m, n)} "
                          f"(its weight is {m}x{n}), got {rank!r}")
    return rank


def energy_rank(sigma: torch.Tensor, energy: float) -> int:
    """Smallest rank whose cumulative ``sigma^2`` reaches ``energy`` of the total (at least 1).

    Example:
        >>> energy_rank(torch.tensor([3.0, 1.0, 0.0]), 0.9)
        1
    """
    power = sigma.to(torch.float64).pow(2).cumsum(0)
    total = float(power[-1]) if power.numel() else 0.0
    if total <= 0.0:
        return 1
    # Relative slack absorbs the rounding of the cumulative sum (energy=1.0 must be reachable).
    hit = (power >= energy * total * (1 - 1e-12)).nonzero()
    return int(hit[0]) + 1


def ratio_rank(k: int, ratio: float) -> int:
    """``ceil(ratio * k)`` without float surprises (0.3 * 10 gives 3), at least 1.

    Example:
        >>> ratio_rank(10, 0.3)
        3
    """
    return max(1, math.ceil(round(ratio * k, 9)))
