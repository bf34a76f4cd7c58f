"""The character-level GPT: shapes, causality, compose/merge round trip, which layers LoRITa takes, generate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorita
from lorita.composed import ComposedLinear
from lorita.errors import LoritaError
from lorita.models.gpt import generate, gpt

VOCAB, CONTEXT = 13, 12


def tiny(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return gpt(VOCAB, CONTEXT, **({"dim": 16, "depth": 2, "heads": 4} | kwargs)).eval()


def ids(batch: int = 3, length: int = CONTEXT, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_parameter_names():
    net = tiny(mlp_ratio=2.0)
    assert net(ids()).shape == (3, CONTEXT, VOCAB)
    assert net(ids(length=1)).shape == (3, 1, VOCAB)  # shorter than the context is fine
    sd = net.state_dict()
    assert sd["tok_embed.weight"].shape == (VOCAB, 16) and sd["pos_embed.weight"].shape == (CONTEXT, 16)
    assert sd["blocks.1.mlp.fc1.weight"].shape == (32, 16) and sd["head.weight"].shape == (VOCAB, 16)
    assert net.head.weight.data_ptr() != net.tok_embed.weight.data_ptr()  # untied
    with pytest.raises(LoritaError, match=r"13 tokens is longer than the model's context 12"):
        net(ids(length=CONTEXT + 1))


def test_causal_later_tokens_do_not_change_earlier_logits():
    net = tiny()
    x = ids(batch=2)
    t = 5
    changed = x.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % VOCAB
    a, b = net(x), net(changed)
    # Positions <= t see identical inputs through the same ops: equal up to float32 reduction order.
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-3  # and the later ones do change


def test_argument_checks():
    for kwargs, pattern in ((dict(vocab_size=0), "vocab_size must be an integer.*got 0"),
                            (dict(context=2.5), "context must be an integer"),
                            (dict(dim=10, heads=4), "dim 10 is not divisible by heads 4"),
                            (dict(mlp_ratio=0), "mlp_ratio must be a number > 0"),
                            (dict(dropout=1.0), r"dropout must be a number in \[0, 1\)"),
                            (dict(depth=-1), "depth must be an integer.*got -1")):
        args = dict(vocab_size=VOCAB, context=CONTEXT, dim=16, heads=4) | kwargs
        with pytest.raises(LoritaError, match=pattern):
            gpt(**args)


def test_default_composition_takes_attention_and_mlp_linears_only():
    net = tiny()
    composed = lorita.compose(net, depth=3, exclude=["head"])
    names = [n for n, m in composed.named_modules() if isinstance(m, ComposedLinear)]
    per_block = ["attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc1", "mlp.fc2"]
    assert names == [f"blocks.{b}.{p}" for b in range(2) for p in per_block]
    assert type(composed.head) is nn.Linear and type(composed.tok_embed) is nn.Embedding
    # Without the exclusion the head is composed too (embeddings never are).
    assert isinstance(lorita.compose(net, depth=2).head, ComposedLinear)


def test_compose_preserve_keeps_outputs_and_merge_restores_the_architecture():
    net = tiny()
    x = ids()
    composed = lorita.compose(net, depth=3, exclude=["head"], init="preserve").eval()
    # Balanced split in float64, run in float32: products of 3 factors round at ~1e-7 relative.
    torch.testing.assert_close(composed(x), net(x), rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # move off the starting point so the round trip cannot pass trivially
        for module in composed.modules():
            if isinstance(module, ComposedLinear):
                module.factors[0].mul_(1.5)
    merged = lorita.merge(composed)
    fresh = gpt(VOCAB, CONTEXT, dim=16, depth=2, heads=4)
    fresh.load_state_dict(merged.state_dict(), strict=True)
    fresh.eval()
    torch.testing.assert_close(fresh(x), composed(x), rtol=1e-4, atol=1e-5)
    assert (fresh(x) - net(x)).abs().max() > 1e-3
    assert not any(isinstance(m, ComposedLinear) for m in merged.modules())


def test_generate_is_reproducible_crops_and_respects_mode():
    net = tiny(dropout=0.1).train()
    prompt = ids(batch=2, length=3)
    first = generate(net, prompt, 2 * CONTEXT, generator=torch.Generator().manual_seed(7))
    again = generate(net, prompt, 2 * CONTEXT, generator=torch.Generator().manual_seed(7))
    other = generate(net, prompt, 2 * CONTEXT, generator=torch.Generator().manual_seed(8))
    assert first.shape == (2, 3 + 2 * CONTEXT) and torch.equal(first[:, :3], prompt)
    assert torch.equal(first, again) and not torch.equal(first, other)  # 48 draws over 13 symbols
    assert net.training  # mode restored
    greedy = generate(net, prompt, 5, temperature=0)
    assert torch.equal(greedy, generate(net, prompt, 5, temperature=0))
    top1 = generate(net, prompt, 5, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(top1, greedy)  # top_k=1 is greedy whatever the draw
    assert torch.equal(generate(net, prompt, 0), prompt)
    with pytest.raises(LoritaError, match=r"temperature must be a number >= 0"):
        generate(net, prompt, 1, temperature=-1)
    with pytest.raises(LoritaError, match=r"integer tensor \(B, T\)"):
        generate(net, prompt.float(), 1)
    with pytest.raises(LoritaError, match=r"int `context` attribute"):
        generate(nn.Linear(2, 2), prompt, 1)
