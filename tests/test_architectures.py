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
- transformers Mamba (``dt_proj``) and WavLM (attention projections), and a timm BEiT/EVA
  attention and torchvision Swin / SwinV2 attention written here
  (``F.linear(x, self.qkv.weight, ...)``, ``shifted_window_attention(x, self.qkv.weight, ...)``):
  the parent reads the child's weight and never calls it; found, and left plain, both by
  the example-input probe and, without an example input, from the parents' source.
- a torchvision RegNet layout written here: blocks named ``block1-0`` (legal PyTorch names
  that are not identifiers) through compose, cut, save and load.
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
import re
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


def shifted_window_attention(x, qkv_weight, proj_weight, relative_position_bias, window_size, num_heads,
                             qkv_bias=None, proj_bias=None, logit_scale=None):
    """torchvision's ``shifted_window_attention`` (no shift, no padding): a free function that
    gets the projections' weights, never the layers."""
    b, h, w, c = x.shape
    ws = window_size
    windows = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
    if logit_scale is not None and qkv_bias is not None:  # SwinV2: no key bias
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length:2 * length].zero_()
    qkv = F.linear(windows, qkv_weight, qkv_bias)
    q, k, v = qkv.reshape(windows.size(0), windows.size(1), 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    if logit_scale is not None:  # SwinV2: cosine attention
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * (c // num_heads) ** -0.5) @ k.transpose(-2, -1)
    attn = (attn + relative_position_bias).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(windows.size(0), windows.size(1), c)
    out = F.linear(out, proj_weight, proj_bias)
    return out.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def _relative_index(ws):
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + ws - 1
    return (relative[:, :, 0] * (2 * ws - 1) + relative[:, :, 1]).flatten()


class ShiftedWindowAttention(nn.Module):
    """torchvision Swin's attention: ``forward`` passes ``self.qkv.weight`` and ``self.proj.weight`` on."""

    def __init__(self, dim, window_size, num_heads):
        super().__init__()
        self.window_size, self.num_heads = window_size, num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window_size - 1) ** 2, num_heads) * 0.02)
        self.register_buffer("relative_position_index", _relative_index(window_size), persistent=False)

    def get_relative_position_bias(self):
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index].view(n, n, -1)
        return bias.permute(2, 0, 1).unsqueeze(0)

    def forward(self, x):
        relative_position_bias = self.get_relative_position_bias()
        return shifted_window_attention(x, self.qkv.weight, self.proj.weight, relative_position_bias,
                                        self.window_size, self.num_heads, qkv_bias=self.qkv.bias,
                                        proj_bias=self.proj.bias)


class ShiftedWindowAttentionV2(ShiftedWindowAttention):
    """torchvision SwinV2's attention: also a continuous position bias MLP (called) and a logit scale."""

    def __init__(self, dim, window_size, num_heads):
        super().__init__(dim, window_size, num_heads)
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 16), nn.ReLU(inplace=True), nn.Linear(16, num_heads, bias=False))
        grid = torch.arange(-(window_size - 1), window_size, dtype=torch.float32)
        table = torch.stack(torch.meshgrid(grid, grid, indexing="ij")).permute(1, 2, 0).unsqueeze(0)
        table = table / (window_size - 1) * 8
        table = torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / 3.0
        self.register_buffer("relative_coords_table", table, persistent=False)
        length = self.qkv.bias.numel() // 3
        self.qkv.bias[length:2 * length].data.zero_()  # read in __init__ only: not a forward read

    def get_relative_position_bias(self):
        n = self.window_size ** 2
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        return 16 * torch.sigmoid(bias)

    def forward(self, x):
        relative_position_bias = self.get_relative_position_bias()
        return shifted_window_attention(x, self.qkv.weight, self.proj.weight, relative_position_bias,
                                        self.window_size, self.num_heads, qkv_bias=self.qkv.bias,
                                        proj_bias=self.proj.bias, logit_scale=self.logit_scale)


class SwinBlock(nn.Module):
    def __init__(self, dim, attention):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention(dim, window_size=2, num_heads=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinySwin(nn.Module):
    """torchvision's Swin layout: ``features`` (patch embedding, then blocks on (B, H, W, C)), norm, head."""

    def __init__(self, attention=ShiftedWindowAttention):
        super().__init__()
        dim = 16
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, dim, 4, stride=4), nn.LayerNorm(dim)),
            nn.Sequential(SwinBlock(dim, attention), SwinBlock(dim, attention)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):  # (B, 3, 16, 16)
        x = self.features[0][0](x).permute(0, 2, 3, 1)
        x = self.features[1](self.features[0][1](x))
        return self.head(self.norm(x).mean((1, 2)))


class TinySwinV2(TinySwin):
    def __init__(self):
        super().__init__(ShiftedWindowAttentionV2)


def conv_bn(c_in, c_out, kernel, stride=1, groups=1, act=True):
    """torchvision's ``Conv2dNormActivation``: a Sequential named 0, 1, 2."""
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if act else []))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels, squeeze):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.avgpool(x)))))


class ResBottleneckBlock(nn.Module):
    """torchvision RegNet's block: ``f`` (a, grouped b, se, c) plus a projection shortcut."""

    def __init__(self, w_in, w_out, stride, group_width=4):
        super().__init__()
        self.proj = conv_bn(w_in, w_out, 1, stride, act=False) if w_in != w_out or stride != 1 else None
        self.f = nn.Sequential()
        self.f.add_module("a", conv_bn(w_in, w_out, 1))
        self.f.add_module("b", conv_bn(w_out, w_out, 3, stride, groups=w_out // group_width))
        self.f.add_module("se", SqueezeExcitation(w_out, max(1, w_in // 4)))
        self.f.add_module("c", conv_bn(w_out, w_out, 1, act=False))

    def forward(self, x):
        shortcut = x if self.proj is None else self.proj(x)
        return torch.relu(shortcut + self.f(x))


class TinyRegNet(nn.Module):
    """torchvision's RegNet layout, whose stages name their blocks ``block1-0``, ``block1-1``:
    legal PyTorch module names that are not Python identifiers."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8, 3, stride=2)
        self.trunk_output = nn.Sequential()
        for stage, (w_in, w_out, depth) in enumerate([(8, 16, 2), (16, 32, 1)], start=1):
            blocks = nn.Sequential()
            for i in range(depth):
                blocks.add_module(f"block{stage}-{i}", ResBottleneckBlock(w_in if i == 0 else w_out, w_out,
                                                                          2 if i == 0 else 1))
            self.trunk_output.add_module(f"block{stage}", blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(self.avgpool(self.trunk_output(self.stem(x))).flatten(1))


# ----------------------------------------------------------------------------
# the table: id -> (class, config, example input, names read by their parent)


def _ids(*shape):
    return torch.randint(0, 100, shape, generator=torch.Generator().manual_seed(1))


def _images(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=DTYPE)


# layers the model both calls and reads the .weight of (HF ViT reads the patch projection's dtype): cut,
# the read forms the dense kernel, and one warning names the layer
DENSE_READS = {"vit": {"vit.embeddings.patch_embeddings.projection"}}
SWIN_READ = {f"features.1.{i}.attn.{p}" for i in range(2) for p in ("qkv", "proj")}
CUSTOM = {
    "custom-weight-reading": (WeightReadingNet, None, _images(2, 5, 8), {"attn.qkv", "attn.mix"}),
    "custom-swin": (TinySwin, None, _images(2, 3, 16, 16), SWIN_READ),
    "custom-swinv2": (TinySwinV2, None, _images(2, 3, 16, 16), SWIN_READ),
    "custom-regnet": (TinyRegNet, None, _images(2, 3, 16, 16), set()),
}


def rows():
    t = transformers
    return {
        **CUSTOM,
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
    } if t is not None else CUSTOM


IDS = [*CUSTOM, "bert", "gpt2", "vit", "mobilenet_v1", "mobilenet_v2", "swin", "mamba", "wavlm",
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


# with the example input, the probe watches one forward pass; without it, the parents' source
# (and transformers' dummy inputs) must find the same layers
GIVEN = pytest.mark.parametrize("given", [True, False], ids=["example_input", "no_example_input"])


@GIVEN
@pytest.mark.parametrize("which", PARAMS)
def test_left_plain_layers_are_named_with_their_reason(which, given):
    _, model, x, read = build(which)
    example = x if given else None
    skipped = skipped_layers(model, example_input=example)
    assert {n for n, reason in skipped.items() if reason == READ_BY_PARENT} == read
    assert all(reason for reason in skipped.values())
    eligible = scan_layers(model, example_input=example).layers
    assert eligible and not read & set(eligible)


@GIVEN
@pytest.mark.parametrize("which", PARAMS)
def test_preserve_keeps_outputs(which, given):
    _, model, x, read = build(which)
    preserved = quiet(lorita.compose, model, depth=3, init="preserve", example_input=x if given else None)
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


@GIVEN
@pytest.mark.parametrize("which", PARAMS)
def test_full_rank_cut_keeps_outputs(which, given):
    # every eligible layer replaced by its two thin layers at full rank, in place: the model's
    # own forward (padding, weight reads of other layers) must give the same outputs
    _, model, x, _ = build(which)
    cut = copy.deepcopy(model)
    layers = scan_layers(cut, example_input=x if given else None).layers
    for name, layer in layers.items():
        full = min(weight_matrix(layer.module).shape)
        replace_module(cut, layer, truncate(layer.module, full, name))
    assert sum(isinstance(m, LOWRANK_TYPES) for m in cut.modules()) == len(layers)
    close(out(cut, x), out(model, x))


@GIVEN
@pytest.mark.parametrize("which", PARAMS)
def test_lossy_cut_runs_its_thin_layers_and_round_trips(which, given, tmp_path):
    factory, model, x, read = build(which)
    small = quiet(lorita.compress, model, ratio=0.25, example_input=x if given else None).eval()
    pairs = {n: m for n, m in small.named_modules() if isinstance(m, LOWRANK_TYPES)}
    assert pairs and not set(pairs) & read
    ran = set()
    handles = [m[i].register_forward_hook(lambda *_, key=(n, i): ran.add(key))
               for n, m in pairs.items() for i in (0, 1)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = out(small, x)
    for h in handles:
        h.remove()
    warned = {m for w in caught for m in re.findall(r"dense \.weight of layer '([^']+)'", str(w.message))}
    assert warned == DENSE_READS.get(which, set()) & set(pairs)  # named once, only where the model reads it
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


def test_names_that_are_not_identifiers_select_save_and_load(tmp_path):
    # RegNet's block1-0: a legal PyTorch name; targets, exclude, ranks and files take it as any other
    _, model, x, _ = build("custom-regnet")
    name = "trunk_output.block1.block1-0.f.a.0"
    composed = quiet(lorita.compose, model, depth=2, targets=["block1-0.f.a.0"])
    assert [n for n, m in composed.named_modules() if isinstance(m, COMPOSED_TYPES)] == [name]
    kept = quiet(lorita.compose, model, depth=2, exclude=r".*block\d-\d.*")
    assert {n for n, m in kept.named_modules() if isinstance(m, COMPOSED_TYPES)} == {"stem.0", "fc"}
    small = quiet(lorita.compress, model, ranks={name: 2})
    path = tmp_path / "regnet.lorita"
    lorita.save(small, path)
    desc = lorita.serialization.read_description(path)
    assert desc["layers"][name]["rank"] == 2 and "trunk_output.block1.block1-0.f.a.1" in desc["module_versions"]
    torch.testing.assert_close(out(lorita.load(path, model=TinyRegNet).to(DTYPE).eval(), x), out(small, x),
                               atol=0, rtol=0)
