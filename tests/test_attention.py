"""nn.MultiheadAttention split into four nn.Linear layers (lorita.attention), and fused back.

Exact properties: the split module computes what nn.MultiheadAttention computes for every argument of its forward;
split_attention makes a PyTorch transformer's every projection composable (a whole nn.TransformerEncoder had none);
merge then fuse_attention gives the original architecture (its state_dict loads with strict=True) and the composed
model's function; a full-rank cut keeps the function and stays split.
"""

import warnings

import pytest
import torch
from torch import nn

import lorita
from lorita.attention import SplitAttention, fuse_attention, split_attention
from lorita.composed import ComposedLinear
from lorita.errors import LoritaError, LoritaWarning
from lorita.lowrank import LowRankLinear
from lorita.targets import skipped_layers

N, L, S, E, H = 3, 5, 7, 16, 4


def _pair(**options):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H, **options).eval()
    with torch.no_grad():
        for p in mha.parameters():  # non-zero biases: each one is checked to land in its layer
            p.normal_(0, 0.3)
    return mha, SplitAttention.from_attention(mha)


def _inputs(batch_first=True, kdim=E, vdim=E, unbatched=False):
    g = torch.Generator().manual_seed(1)
    shape = (lambda t, d: (t, d)) if unbatched else (lambda t, d: (N, t, d) if batch_first else (t, N, d))
    return torch.randn(*shape(L, E), generator=g), torch.randn(*shape(S, kdim), generator=g), \
        torch.randn(*shape(S, vdim), generator=g)


def _same(a, b):
    assert (a[1] is None) == (b[1] is None)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)
    if a[1] is not None:
        torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=1e-5)


PADDING = torch.tensor([[False] * S, [False] * (S - 2) + [True] * 2, [False] + [True] * (S - 1)])
CAUSAL = torch.ones(L, S, dtype=torch.bool).triu(1)
ZERO = torch.tensor([0])  # the key every query may attend to (a query with none gives NaN)


@pytest.mark.parametrize("options", [{}, {"batch_first": True}, {"bias": False}, {"kdim": 6, "vdim": 10},
                                     {"kdim": 6, "vdim": 10, "batch_first": True, "bias": False}])
@pytest.mark.parametrize("call", [
    {}, {"need_weights": False}, {"average_attn_weights": False},
    {"key_padding_mask": PADDING}, {"key_padding_mask": PADDING, "need_weights": False},
    {"key_padding_mask": torch.where(PADDING, -3.0, 0.5)},
    {"attn_mask": CAUSAL}, {"attn_mask": CAUSAL, "is_causal": True, "need_weights": False},
    {"attn_mask": torch.randn(L, S, generator=torch.Generator().manual_seed(2))},
    {"attn_mask": (torch.rand(N * H, L, S, generator=torch.Generator().manual_seed(3)) > 0.7).index_fill(2, ZERO, 0),
     "key_padding_mask": PADDING, "average_attn_weights": False},
])
def test_the_split_attention_computes_what_multihead_attention_computes(options, call):
    mha, split = _pair(**options)
    q, k, v = _inputs(options.get("batch_first", False), options.get("kdim", E), options.get("vdim", E))
    with torch.no_grad():
        _same(split(q, k, v, **call), mha(q, k, v, **call))
    mha.train(), split.train()  # PyTorch's own path outside eval mode (dropout 0), and gradients
    _same(split(q, k, v, **call), mha(q, k, v, **call))


def test_unbatched_inputs_and_self_attention_as_in_multihead_attention():
    mha, split = _pair()
    q, _, _ = _inputs(unbatched=True)
    with torch.no_grad():
        _same(split(q, q, q), mha(q, q, q))
        _same(split(q, q, q, key_padding_mask=torch.tensor([False] * (L - 1) + [True])),
              mha(q, q, q, key_padding_mask=torch.tensor([False] * (L - 1) + [True])))


def test_dropout_falls_on_the_attention_weights_returned_as_multihead_attention_does():
    mha, split = _pair(dropout=0.5, batch_first=True)
    q, k, v = _inputs()
    mha.train(), split.train()
    torch.manual_seed(5)
    expected = mha(q, k, v)
    torch.manual_seed(5)
    _same(split(q, k, v), expected)
    assert split.eval()(q, k, v)[1].sum(-1).allclose(torch.ones(N, L))  # no dropout in eval


def test_the_causal_hint_needs_its_mask_as_in_multihead_attention():
    mha, split = _pair()
    q, k, v = _inputs(batch_first=False)
    for module in (mha, split):
        with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
            module(q, k, v, is_causal=True)


KEPT = ~PADDING[:, :L]  # the positions that are not padding: PyTorch's nested path gives the others zeros


def _encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, 32, batch_first=True, dropout=0.0)
    return nn.TransformerEncoder(layer, 2).eval()  # nested tensors enabled: PyTorch's default


def test_a_pytorch_transformer_has_no_composable_layer_until_its_attention_is_split():
    model = _encoder()
    with pytest.raises(LoritaError, match=r"no layer lorita can compose .*lorita.split_attention\(model\)"):
        lorita.compose(model, depth=2)
    assert "lorita.split_attention(model) turns it off" in skipped_layers(model)["layers.1.linear2"]
    split = split_attention(model)
    assert type(model.layers[0].self_attn) is nn.MultiheadAttention  # the model given is not changed
    x = torch.randn(N, L, E)
    with torch.no_grad():  # the encoder's nested-tensor path (a padding mask in eval) is off, its function kept
        torch.testing.assert_close(split(x, src_key_padding_mask=PADDING[:, :L])[KEPT],
                                   model(x, src_key_padding_mask=PADDING[:, :L])[KEPT], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(split(x), model(x), atol=1e-5, rtol=1e-5)
    assert skipped_layers(split) == {} and skipped_layers(split, example_input=x) == {}
    composed = lorita.compose(split, depth=2)
    names = {n for n, m in composed.named_modules() if isinstance(m, ComposedLinear)}
    assert names == {f"layers.{i}.{p}" for i in range(2) for p in
                     ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                      "linear1", "linear2")}


def test_merge_then_fuse_gives_the_original_architecture_and_the_composed_function():
    model = _encoder()
    composed = lorita.compose(split_attention(model), depth=3).eval()
    x = torch.randn(N, L, E)
    with torch.no_grad():
        expected = composed(x, src_key_padding_mask=PADDING[:, :L])
        fused = fuse_attention(lorita.merge(composed)).eval()
        assert type(fused.layers[1].self_attn) is nn.MultiheadAttention and fused.use_nested_tensor
        assert not hasattr(fused, "lorita_use_nested_tensor")
        torch.testing.assert_close(fused(x, src_key_padding_mask=PADDING[:, :L])[KEPT], expected[KEPT], atol=1e-5,
                                   rtol=1e-4)
    fresh = _encoder()
    assert not fresh.load_state_dict(fused.state_dict(), strict=True).missing_keys


def test_a_full_rank_cut_keeps_the_function_and_stays_split(tmp_path):
    model = _encoder()
    split = split_attention(model)
    full = lorita.compress(split, ratio=1.0)
    half = lorita.compress(split, ranks={"layers.0.self_attn.q_proj": 2, "layers.1.linear1": 3})
    x = torch.randn(N, L, E)
    with torch.no_grad():
        torch.testing.assert_close(full(x), model(x), atol=1e-5, rtol=1e-4)
        assert isinstance(half.layers[0].self_attn.q_proj, LowRankLinear)
        kept = fuse_attention(half)
        assert isinstance(kept.layers[0].self_attn, SplitAttention)  # cut: stays split
        assert isinstance(kept.layers[1].self_attn, SplitAttention)  # its encoder layer's linear1 is cut
        assert not kept.use_nested_tensor
        torch.testing.assert_close(kept(x), half(x), atol=1e-5, rtol=1e-4)
        attention_only = lorita.compress(split, ranks={"layers.0.self_attn.q_proj": 2})
        fused = fuse_attention(attention_only)  # layer 1 all plain: fused; the encoder's nested path stays off
        assert isinstance(fused.layers[0].self_attn, SplitAttention)
        assert type(fused.layers[1].self_attn) is nn.MultiheadAttention and not fused.use_nested_tensor
        torch.testing.assert_close(fused(x, src_key_padding_mask=PADDING[:, :L]),
                                   attention_only(x, src_key_padding_mask=PADDING[:, :L]), atol=1e-5, rtol=1e-4)
    lorita.save(half, tmp_path / "m.lorita")
    again = lorita.load(tmp_path / "m.lorita", model=lambda: split_attention(_encoder()))
    with torch.no_grad():
        torch.testing.assert_close(again(x), half.eval()(x), atol=0, rtol=0)
    lorita.save(split, tmp_path / "split.lorita")  # split, nothing cut: the original architecture does not fit
    with pytest.raises(LoritaError, match=r"split by lorita.split_attention: pass model=lambda: lorita.split_attenti"):
        lorita.load(tmp_path / "split.lorita", model=_encoder)
    for make in (lambda: nn.MultiheadAttention(E, H), lambda: nn.Sequential(nn.MultiheadAttention(E, H, kdim=6))):
        lorita.save(split_attention(make()), tmp_path / "one.lorita")  # a lone attention; separate key/value sizes
        with pytest.raises(LoritaError, match=r"split by lorita.split_attention"):
            lorita.load(tmp_path / "one.lorita", model=make)
        assert isinstance(lorita.load(tmp_path / "one.lorita", model=lambda: split_attention(make())), nn.Module)


def test_a_decoder_and_a_lone_attention_are_split_and_fused():
    torch.manual_seed(0)
    decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(E, H, 32, dropout=0.0), 1).eval()
    split = split_attention(decoder)
    assert {type(m).__name__ for m in split.modules()} >= {"SplitAttention"}
    assert not any(type(m) is nn.MultiheadAttention for m in split.modules())
    tgt, memory = torch.randn(L, N, E), torch.randn(S, N, E)
    with torch.no_grad():
        torch.testing.assert_close(split(tgt, memory), decoder(tgt, memory), atol=1e-5, rtol=1e-5)
    lone = nn.MultiheadAttention(E, H)
    assert isinstance(split_attention(lone), SplitAttention)
    assert type(fuse_attention(split_attention(lone))) is nn.MultiheadAttention


def test_an_attention_with_extra_key_value_biases_is_left_and_named():
    model = nn.ModuleDict({"plain": nn.MultiheadAttention(E, H), "extra": nn.MultiheadAttention(E, H,
                                                                                                 add_bias_kv=True)})
    with pytest.warns(LoritaWarning, match=r"left 1 attention\(s\) as they are: extra: add_bias_kv"):
        split = split_attention(model)
    assert isinstance(split["plain"], SplitAttention) and type(split["extra"]) is nn.MultiheadAttention
    with pytest.raises(LoritaError, match="add_bias_kv or add_zero_attn is not split"):
        SplitAttention.from_attention(model["extra"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_attention(nn.Linear(2, 2))  # nothing to split: no warning


def test_masks_multihead_attention_refuses_are_refused_not_misread():
    mha, split = _pair()
    q, k, v = _inputs(batch_first=False)
    for call, message in [({"key_padding_mask": PADDING.T}, r"key_padding_mask has shape \(7, 3\), but should be"),
                          ({"attn_mask": CAUSAL.T}, r"attn_mask has shape \(7, 5\), but should be \(5, 7\) or"),
                          ({"key_padding_mask": PADDING.to(torch.uint8)}, "must be a bool or floating-point tensor"),
                          ({"attn_mask": CAUSAL.long()}, r"got torch.int64; for a 0/1 mask pass mask.bool\(\)")]:
        with pytest.raises((AssertionError, RuntimeError)):  # PyTorch's own refusal
            mha(q, k, v, **call)
        with pytest.raises(LoritaError, match=message):
            split(q, k, v, **call)
    nested = torch.nested.nested_tensor([torch.randn(2, E), torch.randn(3, E)])
    with pytest.raises(LoritaError, match="does not take nested tensors"):
        split(nested, nested, nested)


def test_one_attention_used_twice_stays_one_module_split_and_fused():
    shared = nn.MultiheadAttention(E, H)
    model = nn.ModuleDict({"a": shared, "b": shared})
    split = split_attention(model)
    assert split["a"] is split["b"] and isinstance(split["a"], SplitAttention)
    assert sum(p.numel() for p in split.parameters()) == sum(p.numel() for p in model.parameters())
    fused = fuse_attention(split)
    assert fused["a"] is fused["b"] and type(fused["a"]) is nn.MultiheadAttention


def test_subclasses_hooks_and_parametrizations_are_left_and_named():
    class Mine(nn.MultiheadAttention):
        pass

    hooked, normed = nn.MultiheadAttention(E, H), nn.MultiheadAttention(E, H)
    hooked.register_forward_hook(lambda module, args, out: out)
    nn.utils.parametrizations.spectral_norm(normed.out_proj)
    model = nn.ModuleDict({"mine": Mine(E, H), "hooked": hooked, "normed": normed})
    with pytest.warns(LoritaWarning, match=r"left 3 attention\(s\).*mine: a subclass.*hooked: forward hooks.*normed: "
                                           "parametrized"):
        split = split_attention(model)
    assert not any(isinstance(m, SplitAttention) for m in split.modules())
    with pytest.raises(LoritaError) as caught:
        lorita.compose(nn.ModuleDict({"mine": Mine(E, H)}), depth=2)
    assert "split_attention" not in str(caught.value)  # no use for a subclass


def test_splitting_twice_keeps_the_encoders_own_nested_tensor_setting():
    model = _encoder()
    assert model.use_nested_tensor
    twice = fuse_attention(split_attention(split_attention(model)))
    assert twice.use_nested_tensor and not hasattr(twice, "lorita_use_nested_tensor")


def test_a_subclassed_encoder_layer_that_reads_its_weights_keeps_them_plain():
    import torch.nn.functional as F

    class Reads(nn.TransformerEncoderLayer):
        def _ff_block(self, x):
            return self.linear2(self.dropout(F.relu(F.linear(x, self.linear1.weight, self.linear1.bias))))

    model = split_attention(nn.Sequential(Reads(E, H, 32, batch_first=True)))
    assert "0.linear1" in skipped_layers(model)  # a subclass's code is read as any module's


def test_an_encoder_with_one_layer_split_and_another_left_keeps_off_its_nested_tensors():
    model = _encoder()
    model.layers[0].self_attn.register_forward_hook(lambda module, args, out: None)  # layer 0 left as it is
    with pytest.warns(LoritaWarning, match="layers.0.self_attn: forward hooks"):
        split = split_attention(model)
    assert isinstance(split.layers[1].self_attn, SplitAttention) and not split.use_nested_tensor
    x = torch.randn(N, L, E)
    with torch.no_grad():
        torch.testing.assert_close(split(x, src_key_padding_mask=PADDING[:, :L])[KEPT],
                                   model(x, src_key_padding_mask=PADDING[:, :L])[KEPT], atol=1e-5, rtol=1e-5)


def test_a_split_and_cut_encoder_exports_with_torch_export_to_the_same_function():
    half = lorita.compress(split_attention(_encoder()), ranks={"layers.0.self_attn.q_proj": 2,
                                                               "layers.1.linear1": 3}).eval()
    x, padding = torch.randn(N, L, E), PADDING[:, :L]
    program = torch.export.export(half, (x,), kwargs={"src_key_padding_mask": padding})
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x, src_key_padding_mask=padding),
                                   half(x, src_key_padding_mask=padding), atol=1e-6, rtol=1e-5)
