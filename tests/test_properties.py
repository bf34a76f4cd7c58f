"""Property tests: the compose / merge / truncate identities on random layer geometries.

Random Linear and Conv2d layers (shapes, kernel sizes, strides, paddings, dilations, bias
on or off) and composition depths 1-4, in float64. Tolerances: float64 products of a few
O(1) factors and an SVD are exact to ~1e-14 relative; 1e-9 (scaled by the weight's norm
where a norm is compared) leaves room for summation order while any real error (a wrong
factor order, a dropped bias, a wrong flatten) is O(1).
"""

import math

import pytest
import torch
from torch import nn

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import lorita  # noqa: E402
from lorita.composed import COMPOSED_TYPES  # noqa: E402
from lorita.linalg import balanced_split, chain_product, svd  # noqa: E402

TIGHT = dict(atol=1e-9, rtol=1e-9)
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


@st.composite
def linear_layers(draw):
    n_in, n_out = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 16))
    torch.manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=bias, dtype=torch.float64)
    lead = draw(st.sampled_from([(3,), (2, 4)]))  # (B, C) or (B, T, C)
    return layer, torch.randn(*lead, n_in, dtype=torch.float64)


@st.composite
def conv_layers(draw):
    c_in, c_out = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    bias = draw(st.booleans())
    # smallest input that leaves at least one output position in each direction
    size = [max(1, dilation[i] * (kernel[i] - 1) + 1 - 2 * padding[i]) + draw(st.integers(0, 3)) for i in range(2)]
    seed = draw(st.integers(0, 2 ** 16))
    torch.manual_seed(seed)
    layer = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias,
                      dtype=torch.float64)
    return layer, torch.randn(2, c_in, *size, dtype=torch.float64)


layers = st.one_of(linear_layers(), conv_layers())
depths = st.integers(1, 4)


def wrap(layer):
    """The layer inside a container (a root module cannot be swapped)."""
    return nn.Sequential(layer).eval()


def matrix(module):
    """out x in weight matrix of a plain layer or a compressed pair (conv kernels flattened)."""
    weight = module.weight.detach()
    return weight.reshape(weight.shape[0], -1)


@SETTINGS
@given(layers, depths, st.sampled_from(["input", "smaller"]))
def test_preserve_keeps_outputs(case, depth, side):
    layer, x = case
    model = wrap(layer)
    composed = lorita.compose(model, depth=depth, init="preserve", factor_side=side)
    assert (depth > 1) == isinstance(composed[0], COMPOSED_TYPES)
    torch.testing.assert_close(composed(x), model(x), **TIGHT)


@SETTINGS
@given(layers, st.integers(2, 4), st.sampled_from(["sequential", "fused"]))
def test_merge_equals_composed(case, depth, mode):
    layer, x = case
    composed = lorita.compose(wrap(layer), depth=depth, mode=mode)
    merged = lorita.merge(composed)
    assert type(merged[0]) is type(layer) and merged[0].weight.shape == layer.weight.shape
    torch.testing.assert_close(merged(x), composed(x), **TIGHT)


@SETTINGS
@given(layers)
def test_full_rank_truncate_equals_dense(case):
    layer, x = case
    full = min(matrix(layer).shape)
    pair = lorita.truncate(layer, full)
    torch.testing.assert_close(pair(x), layer(x), **TIGHT)


@SETTINGS
@given(layers, st.floats(0.0, 1.0))
def test_truncation_error_is_the_dropped_singular_values(case, fraction):
    layer, _ = case
    w = matrix(layer)
    k = min(w.shape)
    rank = max(1, min(k, math.ceil(fraction * k)))
    pair = lorita.truncate(layer, rank)
    sigma = svd(w)[1]
    error = torch.linalg.matrix_norm(w - matrix(pair))  # Frobenius (Eckart-Young)
    expected = sigma[rank:].square().sum().sqrt()
    assert abs(float(error) - float(expected)) <= 1e-9 * float(sigma[0])


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 9), st.integers(2, 4), st.sampled_from(["input", "output"]),
       st.integers(0, 2), st.integers(0, 2 ** 16))
def test_balanced_split_is_exact_with_full_rank_inner_factors(m, n, depth, side, rank_drop, seed):
    # inner = n (input side) or m (output side), the sizes compose uses; a rank-deficient
    # weight (rank_drop) and a wide/tall one make the split pad directions beyond the SVD's k.
    torch.manual_seed(seed)
    k = min(m, n)
    r = max(0, k - rank_drop)
    w = torch.randn(m, r, dtype=torch.float64) @ torch.randn(r, n, dtype=torch.float64)
    inner = n if side == "input" else m
    factors = balanced_split(w, depth, inner, side)
    torch.testing.assert_close(chain_product(factors), w, atol=1e-9 * max(1.0, float(w.abs().max())), rtol=0)
    # Every factor but the outermost has full rank: no zero singular direction (no dead saddle).
    inner_factors = factors[:-1] if side == "input" else factors[1:]
    for f in inner_factors:
        assert torch.linalg.matrix_rank(f) == min(f.shape)
