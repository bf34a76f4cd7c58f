"""The fast decompositions of lorita.linalg (Gram route, randomized, transposed LAPACK) against LAPACK's SVD.

Bounds, and why:
- Gram route values: eigenvalues of W^T W in float64 are off by about k * 1e-16 * sigma_max^2,
  so singular values by at most sqrt(k * 1e-16) * sigma_max in absolute terms (tiny values
  included); we allow 4x that.
- Gram route cuts: the projection on the top eigenvectors is the optimal rank-r cut up to
  the float64 rounding of the Gram matrix: the weight error matches LAPACK's to 1e-9
  relative (the float32 weight itself is the input of both, so nothing here is float32).
- Randomized cuts: not exact. With 4 power iterations and oversampling max(10, r/4), the
  excess error over the optimal cut measured 0.4-0.55% on Gaussian (flat-spectrum)
  matrices and below 0.12% on a 1/sqrt(j) spectrum; we bound 1% and 0.3%.
"""

import math

import pytest
import torch

import lorita
import lorita.linalg as linalg
from lorita.linalg import GRAM_MIN, decompose, energy_cut, energy_rank, gram, singular_values


def _matrix(m, n, kind="gauss", seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        return torch.randn(m, n, generator=g)
    k = min(m, n)
    u = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q
    sigma = torch.arange(1, k + 1, dtype=torch.float64).pow(-0.5 if kind == "decay" else 3.0)
    return ((u * sigma) @ v.T).float()


def _cut_error(w, u, s, vh):
    return float((w.double() - (u * s) @ vh).norm())


@pytest.mark.parametrize("shape", [(GRAM_MIN, 900), (900, GRAM_MIN)], ids=["wide", "tall"])
@pytest.mark.parametrize("kind", ["gauss", "steep"])
def test_gram_values_are_within_the_bound(shape, kind):
    w = _matrix(*shape, kind)
    exact = torch.linalg.svdvals(w.double())
    fast = singular_values(w)  # auto: the Gram route at this size
    assert fast.dtype == torch.float64 and fast.shape == exact.shape
    bound = 4 * math.sqrt(min(shape) * 1e-16) * float(exact[0])
    assert float((fast - exact).abs().max()) <= bound
    assert torch.all(fast[:-1] >= fast[1:])  # descending
    # the energy rank, what compress(energy=) uses, is the same
    for e in (0.5, 0.9, 0.99):
        assert energy_rank(fast, e) == energy_rank(exact, e)


@pytest.mark.parametrize("shape", [(GRAM_MIN, 900), (900, GRAM_MIN)], ids=["wide", "tall"])
@pytest.mark.parametrize("rank", [1, 37, GRAM_MIN])
def test_gram_cut_is_the_optimal_cut(shape, rank):
    w = _matrix(*shape, "decay", seed=1)
    u, s, vh = decompose(w, rank)
    assert u.shape == (shape[0], rank) and s.shape == (rank,) and vh.shape == (rank, shape[1])
    exact = torch.linalg.svdvals(w.double())
    optimal = float(exact[rank:].square().sum().sqrt())
    error = _cut_error(w, u, s, vh)
    assert abs(error - optimal) <= 1e-9 * float(exact.norm()) + 1e-9 * optimal
    torch.testing.assert_close(s, exact[:rank], rtol=1e-10, atol=1e-12 * float(exact[0]))
    # orthonormal directions wherever sigma is not tiny
    eye = torch.eye(rank, dtype=torch.float64)
    torch.testing.assert_close(vh @ vh.T, eye, atol=1e-8, rtol=0)
    torch.testing.assert_close(u.T @ u, eye, atol=1e-8, rtol=0)


def test_gram_route_reconstructs_a_rank_deficient_matrix():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(GRAM_MIN + 8, 20, dtype=torch.float64, generator=g) @ \
        torch.randn(20, GRAM_MIN, dtype=torch.float64, generator=g)
    u, s, vh = decompose(w)  # all components: the zero directions too
    torch.testing.assert_close((u * s) @ vh, w, atol=1e-9 * float(w.norm()), rtol=0)
    a, b = linalg.truncated_factors(w, 20)
    torch.testing.assert_close(b @ a, w, atol=1e-9 * float(w.norm()), rtol=0)


def test_gram_is_accumulated_in_slices(monkeypatch):
    w = _matrix(300, 40)
    whole = gram(w)
    monkeypatch.setattr(linalg, "_CHUNK", 40 * 7)  # 7 rows at a time, a ragged last slice
    torch.testing.assert_close(gram(w), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gram(w.T), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(whole, w.double().T @ w.double(), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("kind,bound", [("gauss", 0.01), ("decay", 0.003)])
def test_randomized_cut_is_close_to_optimal(kind, bound):
    w = _matrix(GRAM_MIN, GRAM_MIN + 100, kind, seed=3)
    exact = torch.linalg.svdvals(w.double())
    state = torch.get_rng_state()
    for rank in (8, 48):
        u, s, vh = decompose(w, rank, method="randomized")
        optimal = float(exact[rank:].square().sum().sqrt())
        assert optimal <= _cut_error(w, u, s, vh) <= (1 + bound) * optimal
        again = decompose(w, rank, method="randomized")
        assert torch.equal(again[1], s)  # seeded: the same factors every time
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched


def test_energy_cut_matches_lapack_and_skips_vectors_when_dense():
    w = _matrix(GRAM_MIN, 700, "decay", seed=4)
    for e in (0.3, 0.6):
        rank, (u, s, vh) = energy_cut(w, e)
        exact = torch.linalg.svdvals(w.double())
        assert rank == energy_rank(exact, e)
        torch.testing.assert_close(s, exact[:rank], rtol=1e-10, atol=1e-12)
    rank, parts = energy_cut(w, 0.999)  # rank above break-even: the layer stays dense
    assert parts is None and rank > linalg.break_even_rank(*w.shape)


def test_wide_lapack_svd_is_transposed_correctly():
    w = torch.randn(5, 9, dtype=torch.float64)
    u, s, vh = linalg.svd(w)
    assert u.shape == (5, 5) and vh.shape == (5, 9)
    torch.testing.assert_close((u * s) @ vh, w, atol=1e-12, rtol=0)
    torch.testing.assert_close(s, torch.linalg.svdvals(w), atol=1e-12, rtol=0)


def test_method_is_checked():
    with pytest.raises(lorita.LoritaError, match="method must be one of auto, lapack, gram, randomized"):
        decompose(torch.eye(3), 1, method="fast")
    with pytest.raises(lorita.LoritaError, match="rank must be an integer between 1 and min"):
        decompose(torch.eye(3), 4)


@pytest.mark.parametrize("shape,inner,side", [((GRAM_MIN + 8, GRAM_MIN + 90), GRAM_MIN + 90, "input"),
                                              ((GRAM_MIN + 90, GRAM_MIN + 8), GRAM_MIN + 8, "input"),
                                              ((GRAM_MIN + 8, GRAM_MIN + 90), GRAM_MIN + 8, "output")],
                         ids=["wide-input", "tall-input", "wide-output"])
def test_preserving_split_of_a_large_layer_is_exact(shape, inner, side):
    # compose(init="preserve") on layers past GRAM_MIN: the balanced split through the Gram route still multiplies
    # back to the weight (float64 rounding; the product of 3 factors, each with norm about ||W||^(1/3))
    w = _matrix(*shape, "decay", seed=5).double()
    factors = linalg.balanced_split(w, 3, inner, side)
    torch.testing.assert_close(linalg.chain_product(factors), w, atol=1e-10 * float(w.norm()), rtol=0)
