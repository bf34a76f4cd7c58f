"""Finding layers whose parent reads their weight without an example input: the parents' source
(read, never run) and the dummy inputs a library provides. Each case is a parent written the
way real libraries write them; each expects exactly the layers the model never calls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lorita.probe import READ_BY_PARENT, library_inputs, library_weight_readers
from lorita.source_readers import read_not_called
from lorita.targets import skipped_layers

try:
    import transformers
except ImportError:
    transformers = None


def readers(model):
    modules = dict(model.named_modules())
    names = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    return read_not_called(names, modules)


class ReadsDtypeAndCalls(nn.Module):
    """transformers' T5 / Switch feed-forward: checks ``isinstance(self.wo.weight, torch.Tensor)`` and reads
    ``self.wo.weight.dtype`` (no computing with either), then calls ``self.wo``."""

    def __init__(self):
        super().__init__()
        self.wi, self.wo = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.wi(x))
        if isinstance(self.wo.weight, torch.Tensor) and h.dtype != self.wo.weight.dtype \
                and self.wo.bias is not None:
            h = h.to(self.wo.weight.dtype)
        return self.wo(h)


class MentionsInComments(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        """Unlike Swin, which passes self.proj.weight on, this calls the layer."""
        # F.linear(x, self.proj.weight) would be the weight-reading form
        return self.proj(x)


class ReadsInHelper(nn.Module):
    """transformers' Mamba: ``forward`` calls ``slow_forward``, which reads ``self.dt_proj.weight``;
    ``__init__`` and ``reset`` read the weight too, but never run in a forward pass."""

    def __init__(self):
        super().__init__()
        self.dt_proj, self.out_proj = nn.Linear(4, 4), nn.Linear(4, 4)
        nn.init.zeros_(self.out_proj.weight)

    def reset(self):
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x):
        return self.out_proj(self.slow_forward(x))

    def slow_forward(self, x):
        return x @ self.dt_proj.weight.T + self.dt_proj.bias


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(4, 12)
        self.mlp = nn.Linear(4, 4)

    def forward(self, x):  # a grandparent reading through its child
        q, k, v = F.linear(x, self.attn.qkv.weight, self.attn.qkv.bias).chunk(3, dim=-1)
        return self.mlp(q * k * v)


class PassesItOn(nn.Module):
    """Reads the weight's shape (no computing with it), and hands the layer itself to a function."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        assert x.shape[-1] == self.proj.weight.shape[1]
        return torch.utils.checkpoint.checkpoint(self.proj, x, use_reentrant=False)


class LocalTensor(nn.Module):
    """timm BEiT: the result of ``F.linear(x, self.qkv.weight, ...)`` is a local tensor named ``qkv``,
    used on; a local of the child's name is no call of the child."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 12)

    def forward(self, x):
        qkv = F.linear(x, self.qkv.weight)
        return qkv.relu()


class CallsOrReads(nn.Module):
    """timm's BEiT: calls ``self.qkv`` without a q/v bias, computes with ``self.qkv.weight`` with one.
    Which branch runs is the config's choice, so the source counts it as read (left plain; an
    example input decides exactly)."""

    def __init__(self, q_bias=True):
        super().__init__()
        self.qkv = nn.Linear(4, 12, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(12)) if q_bias else None

    def forward(self, x):
        if self.q_bias is None:
            return self.qkv(x)
        return F.linear(x, weight=self.qkv.weight, bias=self.q_bias)


class Overrides(ReadsInHelper):
    """Overrides ``forward`` without ``super()``: the base's weight reads never run."""

    def forward(self, x):
        return self.out_proj(self.dt_proj(x))


class Extends(ReadsInHelper):
    def forward(self, x):
        return super().forward(x) * 2


@pytest.mark.parametrize("model, expected", [
    (ReadsDtypeAndCalls(), []),
    (MentionsInComments(), []),
    (ReadsInHelper(), ["dt_proj"]),
    (Block(), ["attn.qkv"]),
    (PassesItOn(), []),
    (LocalTensor(), ["qkv"]),
    (Overrides(), []),
    (CallsOrReads(), ["qkv"]),
    (Extends(), ["dt_proj"]),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_source_names_exactly_the_layers_read_and_never_called(model, expected):
    assert readers(model) == expected


def test_an_example_input_decides_where_the_source_cannot():
    x = torch.ones(1, 4)
    assert skipped_layers(CallsOrReads(q_bias=False)) == {"qkv": READ_BY_PARENT}  # the source: either branch
    assert skipped_layers(CallsOrReads(q_bias=False), example_input=x) == {}  # the pass: it is called
    assert skipped_layers(CallsOrReads(q_bias=True), example_input=x) == {"qkv": READ_BY_PARENT}


def test_found_layers_are_left_plain_with_the_reason():
    assert skipped_layers(Block()) == {"attn.qkv": READ_BY_PARENT}
    assert skipped_layers(ReadsDtypeAndCalls()) == {}


def test_a_class_without_source_finds_nothing():
    namespace = {}
    exec("import torch.nn.functional as F\n"  # source not on disk: inspect cannot read it
         "def forward(self, x):\n    return F.linear(x, self.proj.weight)\n", namespace)
    Built = type("Built", (nn.Module,), {"forward": namespace["forward"]})
    model = Built()
    model.proj = nn.Linear(4, 4)
    assert readers(model) == []
    assert torch.equal(model(torch.ones(1, 4)), F.linear(torch.ones(1, 4), model.proj.weight))


def test_names_that_are_not_identifiers_are_looked_up_safely():
    model = nn.Sequential()
    model.add_module("block1-0", nn.Linear(4, 4))
    model.add_module("weight", nn.Linear(4, 4))
    assert readers(model) == []


def test_library_inputs_only_for_library_models():
    assert library_inputs(nn.Linear(2, 2)) is None
    assert library_weight_readers(nn.Linear(2, 2), {}) is None


@pytest.mark.skipif(transformers is None, reason="transformers is not installed")
def test_transformers_dummy_inputs_find_what_runs_and_refusals_are_no_error():
    config = transformers.MambaConfig(vocab_size=100, hidden_size=16, state_size=4, num_hidden_layers=1,
                                      expand=2, conv_kernel=3, time_step_rank=4)
    model = transformers.MambaForCausalLM(config).eval()
    assert set(library_inputs(model)) == {"input_ids"}
    modules = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert set(library_weight_readers(model, modules)) == {"backbone.layers.0.mixer.dt_proj"}
    audio = transformers.WavLMModel(transformers.WavLMConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8),
        conv_stride=(4, 4), conv_kernel=(8, 4), num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2))
    linears = {n: m for n, m in audio.named_modules() if isinstance(m, nn.Linear)}
    assert library_weight_readers(audio, linears) is None  # token-id dummies do not fit an audio model
    assert {n for n, r in skipped_layers(audio).items() if r == READ_BY_PARENT} == {
        f"encoder.layers.0.attention.{p}_proj" for p in ("q", "k", "v", "out")}  # the source finds them
