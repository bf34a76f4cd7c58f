"""Hugging Face transformers models (built from tiny configs, nothing downloaded).

BERT, GPT-2 and ViT go through compose, merge, select_ranks and compress. GPT-2's
``Conv1D`` layers (weight stored ``(in, out)``, ``y = x @ W + b``) are treated as a
Linear with weight ``W^T``: composed like one, merged back to a ``Conv1D`` with the
same state_dict, compressed to a ``LowRankLinear``. GPT-2's ``lm_head`` shares its
weight with the token embedding and is left plain with a warning.

Tolerances: float32 models of O(1) activations through two transformer blocks; the
balanced split and the merge run in float64 and are cast back, so preserved and merged
outputs differ from the original by float32 rounding only (~1e-6 seen); 1e-5 leaves room
for the different summation order. Round trips through files load identical weights
into identical modules and compare exactly.
"""

import warnings

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

import lorita  # noqa: E402
from lorita.composed import COMPOSED_TYPES  # noqa: E402
from lorita.errors import LoritaWarning  # noqa: E402
from lorita.hf import is_conv1d  # noqa: E402
from lorita.targets import skipped_layers  # noqa: E402

ROUNDING = dict(atol=1e-5, rtol=1e-5)
EXACT = dict(atol=0, rtol=0)


def bert():
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3)
    return transformers.BertForSequenceClassification, config, torch.randint(0, 100, (2, 8))


def gpt2():
    config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel, config, torch.randint(0, 100, (2, 8))


def vit():
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, image_size=16, patch_size=4, num_labels=3)
    return transformers.ViTForImageClassification, config, torch.randn(2, 3, 16, 16)


MODELS = {"bert": bert, "gpt2": gpt2, "vit": vit}


def build(which):
    cls, config, x = MODELS[which]()
    torch.manual_seed(0)
    return cls, config, cls(config).eval(), x


def out(model, x):
    with torch.no_grad():
        return model(x).logits


def quiet(fn, *args, **kwargs):
    """Run ``fn`` ignoring lorita's skipped-layer warning (tested on its own below)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.\w+ left")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("which", list(MODELS))
def test_compose_merge_round_trip_into_the_plain_class(which, tmp_path):
    cls, config, model, x = build(which)
    preserved = quiet(lorita.compose, model, depth=3, init="preserve")
    torch.testing.assert_close(out(preserved, x), out(model, x), **ROUNDING)
    composed = quiet(lorita.compose, model, depth=2)
    layers = [m for m in composed.modules() if isinstance(m, COMPOSED_TYPES)]
    assert len(layers) >= 8  # per block: attention projections and two MLP linears (GPT-2 fuses q, k, v)
    assert not torch.allclose(out(composed, x), out(model, x), atol=1e-3)  # fresh factors: not trivial
    merged = lorita.merge(composed)
    torch.testing.assert_close(out(merged, x), out(composed, x), **ROUNDING)
    assert [type(m) for m in merged.modules()] == [type(m) for m in model.modules()]
    assert {k: v.shape for k, v in merged.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    merged.save_pretrained(tmp_path / "hf")
    again = cls.from_pretrained(tmp_path / "hf").eval()  # the unmodified transformers class
    assert type(again) is cls
    torch.testing.assert_close(out(again, x), out(merged, x), **EXACT)


@pytest.mark.parametrize("which", list(MODELS))
def test_select_compress_save_load(which, tmp_path):
    cls, config, model, x = build(which)
    ranks = quiet(lorita.select_ranks, model, "energy", energy=0.5)
    assert ranks and all(r >= 1 for r in ranks.values())
    small = quiet(lorita.compress, model, ranks=ranks).eval()
    pairs = [m for m in small.modules() if isinstance(m, lorita.LowRankLinear)]
    assert pairs, "nothing was cut"
    assert lorita.profile(small, x).params < lorita.profile(model, x).params
    path = tmp_path / "small.lorita"
    lorita.save(small, path)
    again = lorita.load(path, model=lambda: cls(config)).eval()
    torch.testing.assert_close(out(again, x), out(small, x), **EXACT)
    assert again.state_dict().keys() == small.state_dict().keys()


def test_full_rank_compress_keeps_outputs():
    _, _, model, x = build("gpt2")
    full = {name: int(s.numel()) for name, s in lorita.spectrum(model).items()}
    # every layer at full rank: the two thin layers compute the dense layer exactly (up to rounding)
    pairs = {name: lorita.truncate(module, full[name], name) for name, module in model.named_modules() if name in full}
    for name, pair in pairs.items():
        module = model.get_submodule(name)
        h = torch.randn(3, 5, pair.in_features)
        torch.testing.assert_close(pair(h), module(h), **ROUNDING)


def test_gpt2_conv1d_is_a_linear_with_the_weight_transposed(tmp_path):
    _, config, model, x = build("gpt2")
    conv = model.transformer.h[0].mlp.c_fc
    assert is_conv1d(conv) and conv.weight.shape == (32, 128)  # (in, out)
    composed = quiet(lorita.compose, model, depth=3)
    layer = composed.transformer.h[0].mlp.c_fc
    assert isinstance(layer, lorita.ComposedLinear) and (layer.in_features, layer.out_features) == (32, 128)
    merged = lorita.merge(composed)
    plain = merged.transformer.h[0].mlp.c_fc
    assert type(plain) is type(conv) and plain.weight.shape == (32, 128)
    torch.testing.assert_close(plain.weight.T, layer.merged_weight(), **EXACT)
    # a composed model saved and loaded merges back to Conv1D too
    path = tmp_path / "c.lorita"
    lorita.save(composed, path)
    loaded = lorita.load(path, model=lambda: transformers.GPT2LMHeadModel(config)).eval()
    remerged = lorita.merge(loaded)
    assert type(remerged.transformer.h[0].mlp.c_fc) is type(conv)
    torch.testing.assert_close(out(remerged, x), out(merged, x), **EXACT)
    # compressed: two standard nn.Linear layers
    small = quiet(lorita.compress, model, ranks={"transformer.h.0.mlp.c_fc": 4})
    pair = small.transformer.h[0].mlp.c_fc
    assert isinstance(pair, lorita.LowRankLinear) and [type(m) for m in pair] == [nn.Linear, nn.Linear]
    assert (pair.in_features, pair.rank, pair.out_features) == (32, 4, 128)


def test_gpt2_tied_lm_head_is_skipped_with_a_warning():
    _, _, model, x = build("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    assert skipped_layers(model) == {"lm_head": "weight tied to another module: merging or cutting it would untie them"}
    with pytest.warns(LoritaWarning, match=r"left 1 layer\(s\) plain: lm_head: weight tied"):
        composed = lorita.compose(model, depth=2)
    with pytest.warns(LoritaWarning, match=r"lm_head: weight tied"):
        small = lorita.compress(lorita.merge(composed), ratio=0.25)
    for m in (composed, small):
        assert type(m.lm_head) is nn.Linear and m.lm_head.weight is m.transformer.wte.weight
    with pytest.raises(lorita.LoritaError, match=r"cannot compose 'lm_head': weight tied"):
        lorita.compose(model, depth=2, targets=["lm_head"])


def test_transformers_is_not_imported_by_the_core():
    import subprocess
    import sys
    code = "import sys, lorita; lorita.compose; print('transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_layers_read_through_weight_keep_working():
    # transformers' ViT reads patch_embeddings.projection.weight.dtype in forward: composed and
    # compressed layers expose the dense weight they compute as a read-only ``weight``
    _, _, model, x = build("vit")
    composed = quiet(lorita.compose, model, depth=2)
    proj = composed.vit.embeddings.patch_embeddings.projection
    assert isinstance(proj, lorita.ComposedConv2d)
    torch.testing.assert_close(proj.weight, proj.merged_weight(), **ROUNDING)
    small = quiet(lorita.compress, model, ratio=0.25)
    pair = small.vit.embeddings.patch_embeddings.projection
    assert isinstance(pair, lorita.LowRankConv2d) and pair.weight.shape == (32, 3, 4, 4)
    h = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(pair(h), nn.functional.conv2d(h, pair.weight, pair[1].bias, stride=4), **ROUNDING)
    assert out(small, x).shape == (2, 3)
