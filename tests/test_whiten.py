"""Whitened SVD: exact properties of the factors, and Gram matrices collected by hooks against hand-made ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lorita.errors import LoritaError
from lorita.linalg import truncated_factors
from lorita.lowrank import weight_matrix
from lorita.models.gpt import gpt
from lorita.whiten import (Grams, collect_grams, input_rows, whitened_factors, whitened_spectrum,
                           whitening_factor)

F64 = torch.float64


def layer_and_inputs(m: int = 12, n: int = 10, rows: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and inputs with a strongly non-white covariance (scales 1e-2 .. 10 along random directions)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, dtype=F64, generator=gen)
    basis, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=gen))
    scales = torch.logspace(1, -2, n, dtype=F64)
    x = torch.randn(rows, n, dtype=F64, generator=gen) * scales @ basis.T  # (rows, n)
    return w, x


def output_error(w: torch.Tensor, approx: torch.Tensor, x: torch.Tensor) -> float:
    return float(torch.linalg.norm((w - approx) @ x.T))


# ------------------------------------------------------------------ the math


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_whitened_cut_beats_plain_svd_on_outputs_and_reaches_the_optimum(rank):
    w, x = layer_and_inputs()
    gram = x.T @ x
    a, b = whitened_factors(w, gram, rank, eps=0.0)
    pa, pb = truncated_factors(w, rank)
    assert a.shape == (rank, 10) and b.shape == (12, rank) and a.dtype == b.dtype == F64
    whitened, plain = output_error(w, b @ a, x), output_error(w, pb @ pa, x)
    assert whitened < 0.9 * plain  # the inputs are far from white: a clear margin, not a rounding win
    # Eckart-Young in whitened coordinates: the error is exactly the tail of W L's spectrum.
    s = whitened_spectrum(w, gram, eps=0.0)
    assert whitened == pytest.approx(float(s[rank:].square().sum().sqrt()), rel=1e-9)  # float64, cond(L) ~ 1e3
    # ... and plain SVD minimises the weight error instead.
    assert torch.linalg.norm(w - pb @ pa) <= torch.linalg.norm(w - b @ a)


def test_white_inputs_give_plain_svd_and_scaling_the_gram_changes_nothing():
    w, x = layer_and_inputs()
    for c in (1.0, 37.5):
        a, b = whitened_factors(w, c * torch.eye(10, dtype=F64), 4)
        pa, pb = truncated_factors(w, 4)
        # L = sqrt(c (1 + eps)) I is a pure scale: same singular vectors, product identical up to
        # float64 rounding of one SVD and one triangular solve (~1e-15 relative).
        torch.testing.assert_close(b @ a, pb @ pa, rtol=1e-10, atol=1e-12)
    gram = x.T @ x
    a1, b1 = whitened_factors(w, gram, 4)
    a2, b2 = whitened_factors(w, 1e3 * gram, 4)  # the relative ridge scales along with G
    torch.testing.assert_close(b1 @ a1, b2 @ a2, rtol=1e-9, atol=1e-12)


def test_full_rank_reproduces_the_weight_even_from_a_singular_gram():
    w, x = layer_and_inputs(m=6, n=9, rows=5)  # 5 rows < 9 inputs: rank-5 Gram matrix
    gram = x.T @ x
    a, b = whitened_factors(w, gram, 6)  # min(m, n) = 6: full rank, exact whatever L is
    torch.testing.assert_close(b @ a, w, rtol=1e-9, atol=1e-9)  # cond(L) ~ 1e3 after the 1e-6 ridge
    a, b = whitened_factors(w, gram, 5)  # the data spans 5 directions: rank 5 fits it (almost) exactly
    # "Almost": the ridge weighs the 4 unseen directions at eps = 1e-6 of the mean eigenvalue, which tilts the
    # kept singular vectors by O(sqrt(eps)) = 1e-3 relative at most (measured: 2.4e-5).
    assert output_error(w, b @ a, x) < 1e-3 * float(torch.linalg.norm(w @ x.T))
    with pytest.raises(LoritaError, match=r"not positive definite.*raise eps"):
        whitened_factors(w, gram, 2, eps=0.0)
    with pytest.raises(LoritaError, match=r"not positive definite"):
        whitening_factor(torch.zeros(3, 3))


def test_argument_errors():
    w = torch.randn(4, 3)
    with pytest.raises(LoritaError, match=r"gram must be \(3, 3\) for a weight with 3 inputs, got \(4, 4\)"):
        whitened_factors(w, torch.eye(4), 1)
    with pytest.raises(LoritaError,
                       match=r"rank must be an integer between 1 and min\(out, in\) = 3 \(its weight is 4x3\), got 4"):
        whitened_factors(w, torch.eye(3), 4)
    with pytest.raises(LoritaError, match=r"weight must be a 2-D \(out x in\) matrix.*weight_matrix"):
        whitened_spectrum(torch.randn(2, 3, 3, 3), torch.eye(27))
    with pytest.raises(LoritaError, match=r"eps must be a finite number >= 0 \(relative ridge\), got"):
        whitened_spectrum(w, torch.eye(3), eps=-1)


# ------------------------------------------------------------------ collecting Gram matrices


def test_collect_grams_matches_hand_computed_gram_on_token_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).train()
    batches = [torch.randn(2, 5, 4), torch.randn(3, 5, 4), torch.randn(1, 5, 4)]  # (B, T, C)
    grams = collect_grams(net, batches, max_batches=2)
    assert isinstance(grams, Grams) and list(grams) == ["0", "2"]
    x = torch.cat([b.reshape(-1, 4) for b in batches[:2]]).to(F64)  # (25, 4)
    h = torch.relu(net[0](torch.cat([b.reshape(-1, 4) for b in batches[:2]]))).to(F64)  # (25, 6)
    torch.testing.assert_close(grams["0"], x.T @ x, rtol=1e-12, atol=1e-12)  # same float64 sums
    # The hidden activations were computed by the model in float32 in both paths, with the same kernels
    # but a different batch shape: allow float32 rounding of the inputs (~1e-7 relative).
    torch.testing.assert_close(grams["2"], h.T @ h, rtol=1e-5, atol=1e-5)
    assert grams.rows == {"0": 25, "2": 25} and grams["0"].dtype == F64
    assert net.training and not any(m._forward_pre_hooks for m in net.modules())  # mode and hooks restored


def test_collect_grams_cleans_up_after_an_error_and_checks_names():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with pytest.raises(LoritaError, match=r"the model failed on calibration batch 2, a tensor of shape \(2, 5\)"):
        collect_grams(net, [torch.randn(2, 4), torch.randn(2, 5)])  # the second batch does not fit
    assert not net.training and not any(m._forward_pre_hooks for m in net.modules())
    with pytest.raises(LoritaError, match=r"no module named '3' in the model; layers: '0', '2'"):
        collect_grams(net, [torch.randn(2, 4)], names=["3"])
    with pytest.raises(LoritaError, match=r"no module named '2\.' in the model; did you mean: '2' \("):
        collect_grams(net, [torch.randn(2, 4)], names=["2."])
    with pytest.raises(LoritaError, match=r"module '1' is a ReLU"):
        collect_grams(net, [torch.randn(2, 4)], names=["1"])
    with pytest.raises(LoritaError, match=r"no calibration batches"):
        collect_grams(net, [])
    with pytest.raises(LoritaError, match=r"max_batches must be an integer >= 1 \(or None for all batches\), got"):
        collect_grams(net, [torch.randn(2, 4)], max_batches=0)

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(LoritaError, match=r"\['unused'\] received no input in 1 calibration batch"):
        collect_grams(Skips(), [torch.randn(2, 4)])


def test_a_calibration_batch_the_model_cannot_run_is_named_not_a_traceback():
    """Through the typed cut (lorita.cut(..., batches=)) as through collect_grams: a raw RuntimeError before."""
    from lorita import cut
    from lorita.cutspec import Energy

    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for batch, message in [(torch.zeros(2, 4, device="meta"), r"a tensor of shape \(2, 4\) \(torch.float32, on meta\)"),
                           (torch.zeros(2, 3), r"a tensor of shape \(2, 3\) \(torch.float32\): RuntimeError"),
                           ((torch.zeros(2, 4), torch.zeros(2)), r"arguments of shape \(2, 4\).*TypeError")]:
        with pytest.raises(LoritaError, match=r"the model failed on calibration batch 1, " + message):
            cut(net, Energy(0.9, calibrate=1), batches=[batch])
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not any(m._forward_pre_hooks for m in net.modules())


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, stride=2, padding=1, dilation=1),
    dict(kernel_size=(3, 2), stride=1, padding=(2, 0), dilation=2),
    dict(kernel_size=3, padding="same", dilation=2),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
])
def test_conv_rows_are_the_patches_its_weight_matrix_multiplies(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, **kwargs).double()
    x = torch.randn(2, 3, 9, 8, dtype=F64)
    rows = input_rows(conv, x)  # (B*L, C_in*kh*kw)
    out = conv(x) - conv.bias[None, :, None, None]  # (B, C_out, H', W')
    by_rows = (rows @ weight_matrix(conv).T).reshape(2, -1, 5)  # (B, L, C_out)
    torch.testing.assert_close(by_rows, out.flatten(2).transpose(1, 2), rtol=1e-12, atol=1e-12)
    grams = collect_grams(nn.Sequential(conv), [x])
    torch.testing.assert_close(grams["0"], rows.T @ rows, rtol=1e-12, atol=1e-10)
    assert grams.rows["0"] == rows.shape[0]


def test_grouped_conv_is_refused_and_left_out_by_default():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2))
    assert list(collect_grams(net, [torch.randn(1, 4, 3, 3)])) == ["2"]
    with pytest.raises(LoritaError, match=r"module '0' is a Conv2d"):
        collect_grams(net, [torch.randn(1, 4, 3, 3)], names=["0"])
    with pytest.raises(LoritaError, match=r"groups=1 only"):
        input_rows(net[0], torch.randn(1, 4, 3, 3))


def test_collect_grams_on_the_gpt_and_whiten_one_of_its_layers():
    torch.manual_seed(0)
    net = gpt(vocab_size=11, context=8, dim=16, depth=1, heads=2)
    tokens = [torch.randint(0, 11, (4, 8)) for _ in range(3)]
    grams = collect_grams(net, tokens)
    assert list(grams) == ["blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v", "blocks.0.attn.proj",
                           "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "head"]
    assert set(grams.rows.values()) == {3 * 4 * 8}
    assert grams["blocks.0.mlp.fc2"].shape == (64, 64)
    w = net.blocks[0].mlp.fc2.weight.detach()
    a, b = whitened_factors(w, grams["blocks.0.mlp.fc2"], 4)
    assert a.shape == (4, 64) and b.shape == (16, 4)


# ----------------------------------------------------------------------------
# lorita.compress(calibration=): whitened cuts of whole models


def test_compress_with_calibration_lowers_the_output_error():
    import lorita
    from lorita import LoritaError

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    x = torch.randn(512, 16, dtype=torch.float64) * torch.linspace(0.05, 3.0, 16, dtype=torch.float64)  # not white
    grams = collect_grams(net, [x])
    whitened = lorita.compress(net, ranks={"0": 4}, calibration=grams)
    plain = lorita.compress(net, ranks={"0": 4})
    y = net[0](x)
    err = lambda model: (model[0](x) - y).norm().item()  # noqa: E731
    assert err(whitened) < 0.9 * err(plain)  # the whitened cut minimises exactly this error
    full = lorita.compress(net, ranks={"0": 16, "2": 4}, calibration=grams)  # full rank: no cut, same function
    torch.testing.assert_close(full(x), net(x))
    with pytest.raises(LoritaError, match=r"calibration has no Gram matrix for 2"):
        lorita.compress(net, ranks={"0": 4}, calibration={"0": grams["0"]})
    with pytest.raises(LoritaError, match=r"calibration must be a dict"):
        lorita.compress(net, ranks={"0": 4}, calibration=[1])
    meta = {**grams, "2": torch.empty(16, 16, device="meta")}
    for ranks in ({"0": 4}, {"2": 2}):  # also when the meta entry's layer is not the one cut
        with pytest.raises(LoritaError, match=r"calibration\['2'\] is on the meta device \(shapes only, no values\)"):
            lorita.compress(net, ranks=ranks, calibration=meta)
    with pytest.raises(LoritaError, match=r"calibration\['2'\] must be a tensor \(X\^T X"):
        lorita.compress(net, ranks={"0": 4}, calibration={**grams, "2": [[1.0]]})
    with pytest.raises(LoritaError, match=r"gram is on the meta device"):
        whitened_factors(net[0].weight, torch.empty(16, 16, device="meta"), 2)


def test_compress_calibration_energy_counts_output_energy():
    import lorita

    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(12, 12)).double()
    x = torch.zeros(256, 12, dtype=torch.float64)
    x[:, :2] = torch.randn(256, 2, dtype=torch.float64)  # the inputs live in two directions only
    grams = collect_grams(net, [x])
    small = lorita.compress(net, energy=0.99, calibration=grams)
    # the output energy sits in a 2-dimensional input space: rank 2 holds (almost) all of it
    assert small[0].rank <= 2
