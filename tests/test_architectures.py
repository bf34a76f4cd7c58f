"""Real architectures users bring, as one table of tiny models (random weights, nothing downloaded).

Each row goes through the whole library: preserve-init compose keeps the outputs; a
freshly composed model differs, merges back to the original classes with no wrapper left
and loads into a fresh instance with ``strict=True``; every eligible layer cut at full rank
keeps the outputs; a lossy cut runs every thin layer it made (hooked) and changes the
outputs; save/load round-trips; profile counts fewer params and MACs. Layers lorita cannot
handle are left plain with a reason (never a crash), and the rows check the ones each
family is known for:

- transformers MobileNetV1/V2 with TF-style padding: the parent reads ``stride``,
  ``kernel_size`` and ``dilation`` of the (replaced) conv; depthwise convs stay plain.
- transformers Mamba (``dt_proj``) and WavLM (attention projections), and a BEiT/EVA or
  torchvision-Swin style attention written here (``F.linear(x, self.qkv.weight, ...)``):
  the parent reads the child's weight and never calls it; found by the example-input
  probe and left plain.
- transformers Falcon: every linear is ``FalconLinear`` (own forward, same math), accepted
  after a numerical check.
- transformers DeBERTa-v2: profile used to trip PyTorch's FLOP counter.
- BERT, GPT-2 (``Conv1D``), ViT, Swin (HF), as in test_hf.py.

Weights are re-drawn with a He-style scale (std sqrt(2 / fan_in)) so the CNNs' outputs
are O(1) rather than vanishing through a dozen ReLU layers, and every model runs in
float64. Tolerances: float64 products and SVDs of O(1) factors are exact to ~1e-13
relative; through a few blocks (softmax, norms, a selective scan) 1e-9 relative to the
output's size leaves room for summation order while any real error (a wrong factor, a
dropped bias, a lost padding) is O(1). Files round-trip bit for bit.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lorita
from lorita.composed import COMPOSED_TYPES
from lorita.lowrank import LOWRANK_TYPES, truncate, weight_matrix
from lorita.probe import READ_BY_PARENT
from lorita.targets import replace_module, scan_layers, skipped_layers

try:
    import transformers
except ImportError:  # the custom rows still run
    transformers = None

DTYPE = torch.float64
needs_hf = pytest.mark.skipif(transformers is None, reason="transformers is not installed")


# ----------------------------------------------------------------------------
# rows written here: a parent that reads its child's weight


class WeightReadingAttention(nn.Module):
    """timm BEiT/EVA-style attention: ``qkv`` is a bias-free Linear read through ``.weight``
    (the bias is assembled from q and v biases), the output projection is called; plus a
    torchvision-Swin-style ``mix`` layer read through ``.weight`` and ``.bias``."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.randn(dim) * 0.1)
        self.v_bias = nn.Parameter(torch.randn(dim) * 0.1)
        self.proj = nn.Linear(dim, dim)
        self.mix = nn.Linear(dim, dim)

    def forward(self, x):  # (B, T, C)
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, T, 3C)
        q, k, v = qkv.unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # each (B, H, T, C/H)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (B, T, C)
        y = self.proj(y)
        return F.linear(torch.relu(y), self.mix.weight, self.mix.bias)


class WeightReadingNet(nn.Module):
    def __init__(self, config=None):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = WeightReadingAttention()
        self.head = nn.Linear(16, 3)

    def forward(self, x):  # (B, T, 8)
        return self.head(self.attn(self.embed(x)).mean(1))


# ----------------------------------------------------------------------------
# the table: id -> (class, config, example input, names read by their parent)


def _ids(*shape):
    return torch.randint(0, 100, shape, generator=torch.Generator().manual_seed(1))


def _images(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=DTYPE)


def rows():
    t = transformers
    return {
        "custom-weight-reading": (WeightReadingNet, None, _images(2, 5, 8), {"attn.qkv", "attn.mix"}),
        "bert": (t.BertForSequenceClassification,
                 t.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=32, num_labels=3), _ids(2, 8), set()),
        "gpt2": (t.GPT2LMHeadModel, t.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                                 bos_token_id=0, eos_token_id=0), _ids(2, 8), set()),
        "vit": (t.ViTForImageClassification,
                t.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            image_size=16, patch_size=4, num_labels=3), _images(2, 3, 16, 16), set()),
        "mobilenet_v1": (t.MobileNetV1ForImageClassification,
                         t.MobileNetV1Config(image_size=32, depth_multiplier=0.25, min_depth=4, num_labels=3,
                                             tf_padding=True), _images(2, 3, 32, 32), set()),
        "mobilenet_v2": (t.MobileNetV2ForImageClassification,
                         t.MobileNetV2Config(image_size=32, depth_multiplier=0.25, min_depth=4, num_labels=3,
                                             tf_padding=True), _images(2, 3, 32, 32), set()),
        "swin": (t.SwinForImageClassification,
                 t.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                              window_size=4, num_labels=3), _images(2, 3, 32, 32), set()),
        "mamba": (t.MambaForCausalLM,
                  t.MambaConfig(vocab_size=100, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                                conv_kernel=3, time_step_rank=4), _ids(2, 8),
                  {f"backbone.layers.{i}.mixer.dt_proj" for i in range(2)}),
        "wavlm": (t.WavLMModel,
                  t.WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                conv_dim=(8, 8), conv_stride=(4, 4), conv_kernel=(8, 4), num_conv_pos_embeddings=4,
                                num_conv_pos_embedding_groups=2, num_buckets=16, max_bucket_distance=32),
                  _images(2, 400), {f"encoder.layers.{i}.attention.{p}_proj" for i in range(2)
                                    for p in ("q", "k", "v", "out")}),
        "falcon": (t.FalconForCausalLM,
                   t.FalconConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  max_position_embeddings=32), _ids(2, 8), set()),
        "deberta_v2": (t.DebertaV2ForSequenceClassification,
                       t.DebertaV2Config(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=32, num_labels=3,
                                         relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"]),
                       _ids(2, 8), set()),
    } if t is not None else {
        "custom-weight-reading": (WeightReadingNet, None, _images(2, 5, 8), {"attn.qkv", "attn.mix"}),
    }


IDS = ["custom-weight-reading", "bert", "gpt2", "vit", "mobilenet_v1", "mobilenet_v2", "swin", "mamba", "wavlm",
       "falcon", "deberta_v2"]
PARAMS = [pytest.param(i, marks=() if i.startswith("custom") else needs_hf) for i in IDS]


def fresh(cls, config):
    return (cls(config) if config is not None else cls()).to(DTYPE).eval()


def build(which):
    """``(factory, model, x, read_by_parent)``: a seeded instance with He-scaled weights, in eval mode."""
    cls, config, x, read = rows()[which]
    torch.manual_seed(0)
    model = fresh(cls, config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) or type(module).__name__ == "Conv1D":
                fan_in = weight.shape[0] if type(module).__name__ == "Conv1D" else weight[0].numel()
                weight.copy_(torch.randn(weight.shape, generator=g, dtype=DTYPE) * math.sqrt(2 / fan_in))
    return (lambda: fresh(cls, config)), model, x, read


def out(model, x):
    with torch.no_grad():
        y = model(x)
    return y if isinstance(y, torch.Tensor) else y[0]  # logits or last hidden state


def close(a, b):
    """Equal up to float64 summation order, relative to the output's size (module docstring)."""
    torch.testing.assert_close(a, b, atol=1e-9 * max(1.0, float(b.abs().max())), rtol=1e-9)


def quiet(fn, *args, **kwargs):
    """Run ``fn`` ignoring lorita's skipped-layer warning (the skipped layers are checked directly)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.\w+ left")
        return fn(*args, **kwargs)


def types(model):
    return [type(m) for m in model.modules()]


# ----------------------------------------------------------------------------
# the checks, one per step, every row


@pytest.mark.parametrize("which", PARAMS)
def test_left_plain_layers_are_named_with_their_reason(which):
    _, model, x, read = build(which)
    skipped = skipped_layers(model, example_input=x)
    assert {n for n, reason in skipped.items() if reason == READ_BY_PARENT} == read
    assert all(reason for reason in skipped.values())
    eligible = scan_layers(model, example_input=x).layers
    assert eligible and not read & set(eligible)


@pytest.mark.parametrize("which", PARAMS)
def test_preserve_keeps_outputs(which):
    _, model, x, read = build(which)
    preserved = quiet(lorita.compose, model, depth=3, init="preserve", example_input=x)
    close(out(preserved, x), out(model, x))
    composed = {n for n, m in preserved.named_modules() if isinstance(m, COMPOSED_TYPES)}
    assert composed and not composed & read  # the weight-read layers stayed plain


@pytest.mark.parametrize("which", PARAMS)
def test_merge_restores_the_architecture_exactly(which):
    factory, model, x, _ = build(which)
    composed = quiet(lorita.compose, model, depth=2, example_input=x)
    y = out(composed, x)
    assert not torch.allclose(y, out(model, x), atol=1e-3)  # fresh factors: not trivial
    merged = lorita.merge(composed)
    assert not any(isinstance(m, COMPOSED_TYPES) for m in merged.modules())  # no wrapper remains
    assert types(merged) == types(model)
    close(out(merged, x), y)
    again = factory()
    again.load_state_dict(merged.state_dict(), strict=True)
    torch.testing.assert_close(out(again.eval(), x), out(merged, x), atol=0, rtol=0)


@pytest.mark.parametrize("which", PARAMS)
def test_full_rank_cut_keeps_outputs(which):
    # every eligible layer replaced by its two thin layers at full rank, in place: the model's
    # own forward (padding, weight reads of other layers) must give the same outputs
    _, model, x, _ = build(which)
    cut = copy.deepcopy(model)
    layers = scan_layers(cut, example_input=x).layers
    for name, layer in layers.items():
        full = min(weight_matrix(layer.module).shape)
        replace_module(cut, layer, truncate(layer.module, full, name))
    assert sum(isinstance(m, LOWRANK_TYPES) for m in cut.modules()) == len(layers)
    close(out(cut, x), out(model, x))


@pytest.mark.parametrize("which", PARAMS)
def test_lossy_cut_runs_its_thin_layers_and_round_trips(which, tmp_path):
    factory, model, x, read = build(which)
    small = quiet(lorita.compress, model, ratio=0.25, example_input=x).eval()
    pairs = {n: m for n, m in small.named_modules() if isinstance(m, LOWRANK_TYPES)}
    assert pairs and not set(pairs) & read
    ran = set()
    handles = [m[i].register_forward_hook(lambda *_, key=(n, i): ran.add(key))
               for n, m in pairs.items() for i in (0, 1)]
    y = out(small, x)
    for h in handles:
        h.remove()
    assert ran == {(n, i) for n in pairs for i in (0, 1)}  # every thin layer ran: nothing rebuilt a dense weight
    assert not torch.allclose(y, out(model, x), atol=1e-6)  # lossy: the cut changed the function
    path = tmp_path / "small.lorita"
    lorita.save(small, path)
    loaded = lorita.load(path, model=factory).eval()
    torch.testing.assert_close(out(loaded, x), y, atol=0, rtol=0)


@pytest.mark.parametrize("which", PARAMS)
def test_profile_counts_what_runs(which):
    _, model, x, read = build(which)
    dense = lorita.profile(model, x)
    small = quiet(lorita.compress, model, ratio=0.25, example_input=x)
    cut = lorita.profile(small, x)
    assert cut.params < dense.params and cut.macs < dense.macs
    rows_by_name = {row.name: row for row in cut.layers}
    assert {n for n, row in rows_by_name.items() if row.note and row.type in ("Linear", "LowRankLinear")} <= read
    for name, row in rows_by_name.items():
        if row.type.startswith("LowRank"):
            assert row.macs > 0 and not row.note  # the pair itself ran
