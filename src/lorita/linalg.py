"""Pure tensor math behind LoRITa: factor products, balanced splits, truncated SVD.

Nothing here knows about modules; every function takes and returns tensors, so the
identities can be tested on bare matrices.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence, get_args

import torch

from lorita.checks import check_int, got, is_int
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
    # min and max carry any NaN or Inf: one reduction pass, no full-size boolean tensor (10-20x faster)
    if weight.numel() and not torch.isfinite(torch.stack(torch.aminmax(weight.detach()))).all():
        bad = "NaN" if torch.isnan(weight).any() else "Inf"
        raise LoritaError(
            f"layer {name!r} has {bad} in its {what}; a model with non-finite weights cannot be "
            "composed, merged or compressed. Check the training run that produced it (learning "
            "rate, loss scaling) and use an earlier checkpoint."
        )


def svd(matrix: torch.Tensor, *, full_matrices: bool = False):
    """SVD ``U, S, Vh`` computed in float64 (float32 on MPS), returned in that precision.

    LAPACK's reduced SVD (all ``min(m, n)`` components); a wide matrix is decomposed as its
    transpose, which LAPACK does about 1.5 to 3 times faster (same factors up to rounding).

    Example:
        >>> u, s, vh = svd(torch.eye(3))
        >>> s.tolist()
        [1.0, 1.0, 1.0]
    """
    check_values(matrix, "the matrix", "an SVD")
    a = matrix.to(work_dtype(matrix))
    if full_matrices or a.shape[0] >= a.shape[1]:
        return torch.linalg.svd(a, full_matrices=full_matrices)
    v, s, uh = torch.linalg.svd(a.T, full_matrices=False)  # A^T = V S U^T
    return uh.T, s, v.T


# ----------------------------------------------------------------------------
# decompositions at scale
#
# LAPACK's SVD (bidiagonalisation, half of it matrix-vector work) dominates the cost of
# spectrum and compress on large layers. For a layer with k = min(m, n) at least
# GRAM_MIN, the "gram" route forms the k x k Gram matrix (W W^T or W^T W) in float64,
# one matrix multiply, and runs the symmetric eigensolver on it: 3 to 5 times faster on
# CPU for k = 1024 to 2048. Squaring doubles the exponent of the condition number, which
# float64 absorbs: each eigenvalue sigma_i^2 is off by at most about k * 1e-16 *
# sigma_max^2, so singular values from the eigenvalues carry an absolute error below
# sqrt(k * 1e-16) * sigma_max (about 5e-7 sigma_max at k = 2048: below what float32 weights
# resolve near the small values, and 1e-13 or less of any energy fraction). With vectors, the
# cut is the exact projection of W on the top eigenvectors (U_r U_r^T W), so its error is
# the optimal one to float64 rounding of the Gram matrix (tests/test_linalg_scale.py bounds
# both against LAPACK). "randomized": a seeded randomized range finder with power
# iterations (Halko, Martinsson, Tropp 2011) for cuts that keep few directions; not exact
# (its excess error is bounded in the tests), so only on request.

GRAM_MIN = 512  # layers with min(m, n) at least this go through the Gram matrix ("auto")
_CHUNK = 1 << 22  # elements of W converted to float64 at a time (32 MB)
Method = Literal["auto", "lapack", "gram", "randomized"]
METHODS: tuple[Method, ...] = get_args(Method)


def _route(matrix: torch.Tensor, method: str, rank: int | None = None) -> str:
    """"lapack", "gram" or "randomized" for this matrix."""
    if method not in METHODS:
        raise LoritaError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if work_dtype(matrix) != torch.float64:  # the Gram route needs float64 (MPS has none)
        return "lapack"
    if method == "randomized":
        return "randomized" if rank is not None else "gram"
    if method == "auto":
        return "gram" if min(matrix.shape) >= GRAM_MIN else "lapack"
    return method


def gram(matrix: torch.Tensor) -> torch.Tensor:
    """The smaller Gram matrix of ``matrix`` (m x n): ``W W^T`` when m <= n, else ``W^T W``, in float64.

    Accumulated over slices of the long side, so at most ``_CHUNK`` elements of ``W`` are
    held in float64 at a time (a 32000 x 2048 float32 head never gets a float64 copy).

    Example:
        >>> w = torch.randn(3, 5)
        >>> torch.allclose(gram(w), w.double() @ w.double().T)
        True
    """
    check_values(matrix, "the matrix", "a Gram matrix")
    dtype = work_dtype(matrix)
    a = matrix.detach()
    if a.shape[0] < a.shape[1]:
        a = a.T  # (long, k): G = a^T a either way
    long, k = a.shape
    g = torch.zeros(k, k, dtype=dtype, device=a.device)
    step = max(1, _CHUNK // max(k, 1))
    for i in range(0, long, step):
        part = a[i:i + step].to(dtype)
        g.addmm_(part.T, part)
    return g


def singular_values(matrix: torch.Tensor, *, method: Method = "auto") -> torch.Tensor:
    """Singular values of ``matrix``, descending, in float64 (float32 on MPS).

    ``method="auto"``: LAPACK's ``svdvals`` below ``GRAM_MIN``, the Gram route at or above
    it (see the notes above ``GRAM_MIN``: absolute error below ``sqrt(k * 1e-16) *
    sigma_max``). ``"lapack"`` or ``"gram"`` force one.

    Example:
        >>> singular_values(torch.diag(torch.tensor([1.0, 3.0]))).tolist()
        [3.0, 1.0]
    """
    check_values(matrix, "the matrix", "singular values")
    if _route(matrix, method) == "gram":
        return torch.linalg.eigvalsh(gram(matrix)).flip(0).clamp_min(0).sqrt()
    a = matrix.detach()
    a = a.T if a.shape[0] < a.shape[1] else a
    return torch.linalg.svdvals(a.to(work_dtype(a)))


def _project(matrix: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``W q`` (tall W, q: n x r) or ``q^T W`` (wide W, q: m x r), in q's dtype, by slices of the long side."""
    a = matrix.detach()
    wide = a.shape[0] < a.shape[1]
    if wide:
        a = a.T  # (n, m): q^T W = (W^T q)^T
    long = a.shape[0]
    out = torch.empty(long, q.shape[1], dtype=q.dtype, device=q.device)
    step = max(1, _CHUNK // max(a.shape[1], 1))
    for i in range(0, long, step):
        torch.mm(a[i:i + step].to(q.dtype), q, out=out[i:i + step])
    return out.T if wide else out


def _from_eigenvectors(matrix: torch.Tensor, q: torch.Tensor):
    """(U, S, Vh) of the projection of ``matrix`` on the orthonormal columns ``q`` of its smaller side."""
    p = _project(matrix, q)  # tall: W V (m x r) = U S; wide: U^T W (r x n) = S Vh
    tall = matrix.shape[0] >= matrix.shape[1]
    s = torch.linalg.vector_norm(p, dim=0 if tall else 1)  # Rayleigh: accurate even for small values
    order = torch.argsort(s, descending=True, stable=True)
    s, p, q = s[order], (p[:, order] if tall else p[order]), q[:, order]
    scale = torch.where(s > 0, 1 / s, torch.zeros_like(s))
    if tall:
        return p.mul_(scale), s, q.T
    return q, s, p.mul_(scale[:, None])


def _randomized(matrix: torch.Tensor, rank: int, *, oversample: int | None = None, power: int = 4):
    """Top-``rank`` SVD by a randomized range finder (seeded: the same matrix gives the same factors)."""
    dtype = work_dtype(matrix)
    a = matrix.detach().to(dtype)
    m, n = a.shape
    width = min(rank + (oversample if oversample is not None else max(10, rank // 4)), m, n)
    generator = torch.Generator(device=a.device).manual_seed(0)  # no effect on the global RNG
    omega = torch.randn(n, width, dtype=dtype, device=a.device, generator=generator)
    q = torch.linalg.qr(a @ omega).Q  # (m, width)
    for _ in range(power):  # power iterations, re-orthonormalised: sharpen the top directions
        q = torch.linalg.qr(a @ torch.linalg.qr(a.T @ q).Q).Q
    ub, s, vh = torch.linalg.svd(q.T @ a, full_matrices=False)  # (width, n): small
    return (q @ ub[:, :rank]), s[:rank], vh[:rank]


def decompose(matrix: torch.Tensor, rank: int | None = None, *, method: Method = "auto"):
    """``(U, S, Vh)`` of ``matrix`` truncated to its top ``rank`` components (all of them: None).

    ``method="auto"``: LAPACK (``svd``) below ``GRAM_MIN``, else the Gram route: the same
    cut to float64 rounding, 3 to 5 times faster on CPU. ``"randomized"`` (with a ``rank``):
    a seeded randomized range finder with 4 power iterations, for cuts far below
    ``min(m, n)``; its cut is within about 1% of the optimal error on flat (random)
    spectra and closer on decaying ones, not exact. In float64 (float32 on MPS).

    Example:
        >>> w = torch.randn(6, 4, dtype=torch.float64)
        >>> u, s, vh = decompose(w, 2)
        >>> u.shape, s.shape, vh.shape
        (torch.Size([6, 2]), torch.Size([2]), torch.Size([2, 4]))
    """
    check_values(matrix, "the matrix", "an SVD")
    k = min(matrix.shape)
    if rank is not None:
        check_rank("rank", rank, *matrix.shape)
    route = _route(matrix, method, rank)
    if route == "randomized":
        return _randomized(matrix, rank)
    if route == "gram":
        _, q = torch.linalg.eigh(gram(matrix))  # ascending eigenvalues
        keep = k if rank is None else rank
        return _from_eigenvectors(matrix, q[:, k - keep:].flip(1))
    u, s, vh = svd(matrix)
    if rank is None or rank == k:
        return u, s, vh
    return u[:, :rank].clone(), s[:rank].clone(), vh[:rank].clone()  # copies: the full factors can go


def energy_cut(matrix: torch.Tensor, energy: float, *, method: Method = "auto"):
    """``(rank, decomposition)``: the energy rank of ``matrix`` and, where that rank is below
    break-even (the layer will be cut), its top-``rank`` ``(U, S, Vh)``; else ``None``.

    One decomposition per matrix: LAPACK's SVD (small layers), or one Gram matrix whose
    eigenvalues choose the rank and whose eigenvectors (only when the layer is cut) give
    the factors. A layer that stays dense never pays for singular vectors.

    Example:
        >>> w = torch.diag(torch.tensor([10.0, 1.0, 0.1, 0.01], dtype=torch.float64))
        >>> rank, (u, s, vh) = energy_cut(w, 0.9)
        >>> rank, s.tolist()
        (1, [10.0])
    """
    m, n = matrix.shape
    if _route(matrix, "lapack" if method == "randomized" else method) != "gram":
        u, s, vh = svd(matrix)
        rank = energy_rank(s, energy)
        if rank > break_even_rank(m, n):
            return rank, None
        return rank, (u[:, :rank].clone(), s[:rank].clone(), vh[:rank].clone())
    g = gram(matrix)
    rank = energy_rank(torch.linalg.eigvalsh(g).flip(0).clamp_min(0).sqrt(), energy)
    if rank > break_even_rank(m, n):
        return rank, None
    _, q = torch.linalg.eigh(g)
    del g
    k = q.shape[0]
    return rank, _from_eigenvectors(matrix, q[:, k - rank:].flip(1))


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
    u, s, vh = decompose(weight)  # reduced: u (m, k), s (k,), vh (k, n), k = min(m, n)
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
    scale = s / padded[:k].pow((depth - 1) / depth)  # (k,); the columns past k stay zero
    u = u.mul_(scale[None, :])  # in place: the decomposition is ours, and a large U is not copied again
    if inner == k:
        last = u  # (m, inner)
    else:
        last = torch.zeros(m, inner, dtype=s.dtype, device=s.device)
        last[:, :k] = u
    return [first, *middle, last]


def truncated_factors(weight: torch.Tensor, rank: int, *,
                      decomposition: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors ``(A, B)`` with ``B @ A`` the truncated SVD of ``weight``.

    ``A = S_r^(1/2) V_r^T`` (r x n) is applied first, ``B = U_r S_r^(1/2)`` (m x r) second.
    ``decomposition``: ``decompose(weight)`` (or ``svd``) if already computed, with at least
    ``rank`` components; otherwise ``decompose(weight, rank)`` runs (the Gram route on large layers).

    Example:
        >>> w = torch.randn(6, 4, dtype=torch.float64)
        >>> a, b = truncated_factors(w, 4)
        >>> torch.allclose(b @ a, w)
        True
    """
    check_rank("rank", rank, *weight.shape)
    u, s, vh = decompose(weight, rank) if decomposition is None else decomposition
    if min(vh.shape[0], u.shape[1], s.shape[0]) < rank:
        raise LoritaError(f"the given decomposition has {min(vh.shape[0], u.shape[1], s.shape[0])} components, "
                          f"fewer than rank {rank}")
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
                          f"(its weight is {m}x{n}), {got(rank)}")
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
