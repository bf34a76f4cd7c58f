"""The output head's loss a slice of tokens at a time: the same value and gradients as the whole-logits loss."""

import pytest
import torch
import torch.nn.functional as F

from lorita.errors import LoritaError
from lorita.lm.head import head_loss, split_head

g = torch.Generator().manual_seed(0)
N, C, V = 11, 6, 23
HIDDEN = torch.randn(N, C, generator=g, dtype=torch.float64)
WEIGHT = torch.randn(V, C, generator=g, dtype=torch.float64)
TEACHER = torch.randn(N, C, generator=g, dtype=torch.float64)
TARGETS = torch.randint(0, V, (N,), generator=g)
TARGETS[[2, 7]] = -100  # not scored


def reference(hidden, weight, distill):
    """The loss from whole logits: cross-entropy to (1 - distill) * one-hot + distill * teacher softmax."""
    logp = F.log_softmax(hidden @ weight.T, dim=-1)
    keep = TARGETS != -100
    onehot = F.one_hot(TARGETS.clamp(min=0), V).to(logp.dtype)
    target = (1 - distill) * onehot + distill * F.softmax(TEACHER @ weight.detach().T, dim=-1)  # a fixed target
    return -(target * logp).sum(-1)[keep].mean()


@pytest.mark.parametrize("distill", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_the_sliced_loss_and_its_gradients_equal_the_whole_logits_ones(distill, chunk):
    h, w = HIDDEN.clone().requires_grad_(), WEIGHT.clone().requires_grad_()
    loss, nll = head_loss(h, w, TARGETS, teacher=TEACHER, distill=distill, chunk=chunk)
    loss.backward()
    h2, w2 = HIDDEN.clone().requires_grad_(), WEIGHT.clone().requires_grad_()
    expected = reference(h2, w2, distill)
    expected.backward()
    assert torch.allclose(loss, expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(nll, F.cross_entropy(HIDDEN @ WEIGHT.T, TARGETS), rtol=1e-12, atol=1e-12)
    assert torch.allclose(h.grad, h2.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(w.grad, w2.grad, rtol=1e-10, atol=1e-12)


def test_a_frozen_head_gets_no_gradient_and_no_grad_mode_computes_none():
    h = HIDDEN.clone().requires_grad_()
    loss, _ = head_loss(h, WEIGHT, TARGETS, chunk=3)
    loss.backward()
    assert h.grad is not None and WEIGHT.grad is None
    with torch.no_grad():
        value, _ = head_loss(HIDDEN.clone().requires_grad_(), WEIGHT, TARGETS)
    assert not value.requires_grad and torch.allclose(value, loss)


def test_shapes_are_checked():
    with pytest.raises(LoritaError, match=r"targets must be \(11,\)"):
        head_loss(HIDDEN, WEIGHT, TARGETS[:5])
    with pytest.raises(LoritaError, match="teacher hidden states must match"):
        head_loss(HIDDEN, WEIGHT, TARGETS, teacher=TEACHER[:3], distill=0.5)
    with pytest.raises(LoritaError, match="distill"):
        head_loss(HIDDEN, WEIGHT, TARGETS, teacher=TEACHER, distill=1.5)


@pytest.mark.parametrize("bad", [-1, V])
def test_a_target_outside_the_vocabulary_is_refused(bad):
    targets = TARGETS.clone()
    targets[0] = bad  # (-1 was scored as token 0, V a raw gather error)
    with pytest.raises(LoritaError, match=f"target token {bad} is outside the head's {V} rows"):
        head_loss(HIDDEN, WEIGHT, targets)


def test_a_transformers_lm_splits_into_body_and_head():
    pytest.importorskip("transformers")
    from tiny_lm import tiny_llama

    model = tiny_llama()
    body, head = split_head(model)
    ids = torch.randint(0, 261, (2, 9), generator=g)
    with torch.no_grad():
        assert torch.allclose(head(body(input_ids=ids).last_hidden_state), model(ids).logits, atol=1e-6)
    assert split_head(torch.nn.Linear(3, 3)) is None


def test_a_head_whose_logits_the_model_rescales_is_not_split():
    transformers = pytest.importorskip("transformers")
    config = transformers.GraniteConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, logits_scaling=8.0)
    torch.manual_seed(0)
    model = transformers.GraniteForCausalLM(config).eval()
    assert split_head(model) is None  # its logits are head(hidden) / 8: the sliced loss would score head(hidden)
    from lorita.lm.recover import lm_loss

    ids = torch.randint(0, 40, (2, 9), generator=g)
    with torch.no_grad():
        _, nll = lm_loss(model, ids)
        expected = model(ids, labels=ids).loss  # the model's own cross-entropy (it shifts the labels itself)
    torch.testing.assert_close(nll, expected, atol=1e-5, rtol=1e-5)  # (4.79 against 4.17)
