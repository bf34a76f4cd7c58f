"""Real architectures through the whole library: which pass, which fail, and at which step.

Each model is built from a tiny config (random weights, float64, nothing downloaded) and
goes through:

1. ``preserve``: ``lorita.compose(depth=3, init="preserve")`` keeps the outputs, with and
   without ``example_input``;
2. ``merge``: a freshly composed model merges back to the original classes, and a fresh
   instance loads its state_dict with ``strict=True``, giving the same outputs;
3. ``cut``: every eligible layer replaced by its thin pair at full rank keeps the outputs,
   and a lossy ``lorita.compress(ratio=0.25)`` runs the own forward of every thin layer
   whose dense layer ran on the input (hooked), each with and without ``example_input``;
4. ``save/load``: the lossy cut round-trips bit for bit through ``lorita.save``/``load``;
5. ``profile``: the cut counts fewer params and MACs than the dense model;
6. ``onnx``: the cut (float32) exports with ``torch.onnx.export`` and onnxruntime agrees
   with PyTorch; "n/a" where the dense model itself does not export.

Libraries: transformers (every model type of ``MODEL_MAPPING_NAMES`` whose default config,
shrunk, builds below ``--max-params``), torchvision and timm (their model lists, smallest
variant per family, at 32x32 / 64x64 inputs). torchvision and timm are not lorita
dependencies; run those in an environment that has them. Prints one line per model and the
counts; ``--json`` writes the rows.

    flock /work/locks/heavy python benchmarks/architectures.py --library transformers --json arch-hf.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch
from torch import nn

import lorita
from lorita.composed import COMPOSED_TYPES
from lorita.lowrank import LOWRANK_TYPES, truncate, weight_matrix
from lorita.probe import READ_BY_PARENT
from lorita.targets import replace_module, scan_layers, skipped_layers

DTYPE = torch.float64
STEPS = ("build", "preserve", "merge", "cut", "save/load", "profile", "onnx")


# ----------------------------------------------------------------------------
# models


class Call(nn.Module):
    """``model(**{name: x}, **extra)``'s first tensor: a model whose forward needs keywords (seq2seq)."""

    def __init__(self, model: nn.Module, name: str, extra: tuple[str, ...] = ()):
        super().__init__()
        self.model, self.name, self.extra = model, name, extra

    def forward(self, x):
        return first_tensor(self.model(**{self.name: x}, **{k: x for k in self.extra}))


class First(nn.Module):
    """The model's first output tensor (exporters take tensors, not a library's output classes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return first_tensor(self.model(x))


def first_tensor(y):
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, dict) or hasattr(y, "to_tuple"):
        y = y.to_tuple() if hasattr(y, "to_tuple") else tuple(y.values())
    if isinstance(y, (tuple, list)):
        for item in y:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 48, "vocab_size": 99, "max_position_embeddings": 64, "d_model": 32,
        "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
        "encoder_ffn_dim": 48, "decoder_ffn_dim": 48, "d_ff": 48, "d_kv": 16, "num_layers": 2,
        "num_decoder_layers": 1, "num_heads": 2, "image_size": 32, "patch_size": 8, "embed_dim": 16,
        "projection_dim": 16, "head_dim": 16, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64,
        "n_inner": 48, "ffn_dim": 48, "num_experts": 2, "num_local_experts": 2, "num_experts_per_tok": 1,
        "moe_intermediate_size": 16, "shared_expert_intermediate_size": 16, "kv_lora_rank": 8,
        "q_lora_rank": 8, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 8,
        "state_size": 4, "time_step_rank": 4, "conv_kernel": 3, "expand": 2, "num_mel_bins": 16,
        "conv_dim": None, "window_size": 2, "ffn_hidden_size": 48, "num_kv_heads": 2, "n_routed_experts": 2,
        "hidden_dim": 48, "mlp_dim": 48, "d_inner": 48, "intermediate_dim": 48, "expert_intermediate_size": 16,
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}
LISTS = {"depths": 2, "hidden_sizes": 2, "num_heads": 2, "embed_dims": 2, "num_attention_heads": 2}


def shrink(config, depth: int = 0):
    """The config with every known size set small (nested sub-configs too)."""
    if depth > 3:
        return config
    values = config.to_dict() if hasattr(config, "to_dict") else {}
    for key, small in TINY.items():
        old = values.get(key)
        if small is None:
            if isinstance(old, (list, tuple)) and old and all(isinstance(v, int) for v in old):
                setattr(config, key, [min(v, 32) for v in old])  # audio feature encoders: narrow conv stacks
            continue
        if isinstance(old, int) and not isinstance(old, bool) and old > small:
            with contextlib.suppress(AttributeError, TypeError, ValueError):  # a derived, read-only size
                setattr(config, key, small)
    for key, n in LISTS.items():
        old = values.get(key)
        if isinstance(old, (list, tuple)) and old and all(isinstance(v, int) for v in old):
            setattr(config, key, [min(v, 32) if key != "depths" else 1 for v in old[:n]])
    for key in list(vars(config)):
        sub = getattr(config, key)
        if hasattr(sub, "to_dict") and hasattr(sub, "model_type"):
            shrink(sub, depth + 1)
    if isinstance(vars(config).get("layer_types"), list) and isinstance(vars(config).get("num_hidden_layers"), int):
        config.layer_types = config.layer_types[:config.num_hidden_layers]
    return config


def transformers_rows(max_params: int, only: set[str] | None):
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    for model_type, class_name in MODEL_MAPPING_NAMES.items():
        if only and model_type not in only:
            continue
        if not isinstance(class_name, str):
            continue

        def factory(model_type=model_type, class_name=class_name):
            config = shrink(CONFIG_MAPPING[model_type]())
            cls = getattr(transformers, class_name)
            with torch.device("meta"):
                count = sum(p.numel() for p in cls(config).parameters())
            if count > max_params:
                raise TooBig(f"{count / 1e6:.1f}M params after shrinking")
            torch.manual_seed(0)
            model = cls(config)
            return model, config
        yield f"transformers/{model_type}", factory


class TooBig(Exception):
    pass


def hf_input(model: nn.Module, config):
    """(callable model, example input) for a transformers model, or raise if its input is unknown."""
    name = getattr(model, "main_input_name", "input_ids")
    g = torch.Generator().manual_seed(1)
    if name == "input_ids":
        vocab = min(getattr(config, "vocab_size", 99) or 99, 99)
        x = torch.randint(3, max(vocab, 4), (2, 8), generator=g)
    elif name == "pixel_values":
        size = getattr(config, "image_size", 32)
        size = size[0] if isinstance(size, (list, tuple)) else size
        x = torch.randn(2, getattr(config, "num_channels", 3), size, size, generator=g, dtype=DTYPE)
    elif name == "input_values":
        x = torch.randn(2, 1600, generator=g, dtype=DTYPE)
    else:
        raise TooBig(f"main input {name!r} not built here")
    if getattr(config, "is_encoder_decoder", False):
        return Call(model, name, ("decoder_input_ids",)) if name == "input_ids" else None, x
    return model, x


# timm: the smallest member of each of timm's model modules (families), shrunk where the model takes its sizes
# as keyword arguments (transformers; as timm's own kwargs); the others at their real size, on 64 x 64 inputs
# (or the smallest size they accept: 96, 128, then their own)
_VIT = {"img_size": 64, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2}
_SWIN = {"img_size": 64, "window_size": 4, "embed_dim": 16, "depths": (1, 1), "num_heads": (2, 2)}
TIMM = {
    # plain transformers and their variants
    "vit_tiny_patch16_224": _VIT, "deit_tiny_patch16_224": _VIT, "deit3_small_patch16_224": _VIT,
    "beit_base_patch16_224": _VIT, "beitv2_base_patch16_224": _VIT, "cait_xxs24_224": _VIT, "convit_tiny": _VIT,
    "eva02_tiny_patch14_224": {**_VIT, "img_size": 56, "patch_size": 14},
    "vit_relpos_small_patch16_224": _VIT, "samvit_base_patch16": _VIT, "deepseek_vit_412m": _VIT,
    "gemma4_vit_167m": _VIT, "qwen3_vit_88m": _VIT, "naflexvit_base_patch16_gap": {"embed_dim": 32, "depth": 2,
                                                                                    "num_heads": 2},
    "vit_small_r26_s32_224": {"img_size": 64}, "xcit_nano_12_p16_224": {"img_size": 64},
    "pit_ti_224": {"img_size": 64}, "tnt_s_patch16_224": {"img_size": 64}, "volo_d1_224": {"img_size": 64},
    "crossvit_tiny_240": {}, "levit_128s": {"img_size": 64}, "visformer_tiny": {}, "vitamin_small_224": {},
    # windowed and hierarchical transformers
    "swin_tiny_patch4_window7_224": _SWIN, "swinv2_tiny_window8_256": _SWIN, "swinv2_cr_tiny_224": _SWIN,
    "davit_tiny": {"depths": (1, 1), "embed_dims": (16, 32), "num_heads": (1, 2)},
    "hiera_tiny_224": {"embed_dim": 16, "stages": (1, 1, 1, 1)},
    "hieradet_small": {"embed_dim": 16, "stages": (1, 1, 1, 1)},
    "maxvit_rmlp_pico_rw_256": {"img_size": 64}, "coatnet_nano_rw_224": {"img_size": 64},
    "mvitv2_tiny": {"img_size": 64}, "nest_tiny": {"img_size": 64}, "gcvit_xxtiny": {"img_size": 64},
    "twins_pcpvt_small": {}, "twins_svt_small": {}, "pvt_v2_b0": {}, "coat_lite_tiny": {}, "focalnet_tiny_srf": {},
    "tiny_vit_5m_224": {}, "efficientformer_l1": {}, "efficientformerv2_s0": {}, "efficientvit_b0": {},
    "efficientvit_m0": {"img_size": 64}, "swiftformer_xs": {}, "nextvit_small": {}, "shvit_s1": {},
    "iformer_t": {}, "lowformer_b0": {}, "csatv2": {},
    # MLPs, metaformers, state space
    "mixer_s16_224": {}, "gmlp_ti16_224": {}, "resmlp_12_224": {}, "gmixer_12_224": {}, "sequencer2d_s": {},
    "poolformer_s12": {}, "caformer_s18": {}, "convformer_s18": {}, "mambaout_femto": {}, "efficientvim_m1": {},
    # hybrids of convolution and attention
    "mobilevit_xxs": {"img_size": 64}, "mobilevitv2_050": {}, "edgenext_xx_small": {}, "fastvit_t8": {},
    "botnet26t_256": {"img_size": 64}, "halonet26t": {"img_size": 128}, "lambda_resnet26t": {"img_size": 64},
    # CNNs
    "resnet18": {}, "resnet26d": {}, "resnetv2_18": {}, "legacy_seresnet18": {}, "skresnet18": {},
    "resnest14d": {}, "res2net50_14w_8s": {}, "regnetx_002": {}, "regnety_002": {}, "nf_regnet_b0": {},
    "convnext_atto": {}, "inception_next_atto": {}, "rdnet_tiny": {}, "densenet121": {}, "dla34": {},
    "dpn48b": {}, "hrnet_w18_small": {}, "cs3darknet_s": {}, "cspnext_tiny": {}, "ese_vovnet19b_dw": {},
    "selecsls42b": {}, "tresnet_m": {}, "gernet_s": {}, "mobileone_s0": {}, "repvgg_a0": {},
    "eca_resnext26ts": {}, "convmixer_768_32": {}, "vgg11": {}, "inception_v3": {}, "inception_v4": {},
    "inception_resnet_v2": {}, "legacy_xception": {}, "xception41": {}, "nasnetalarge": {}, "pnasnet5large": {},
    "efficientnet_b0": {}, "mobilenetv2_050": {}, "mnasnet_050": {}, "mobilenetv3_small_050": {},
    "lcnet_050": {}, "lcnetv2_small": {}, "mobilenetv5_300m": {}, "ghostnet_050": {}, "ghostnetv2_100": {},
    "repghostnet_050": {}, "repvit_m0_9": {}, "hardcorenas_a": {}, "hgnetv2_b0": {}, "rexnet_100": {},
    "fasternet_t0": {}, "starnet_s050": {}, "cpubone_nano": {},
}


def _timm_tiny() -> dict:
    """timm models whose builder fixes the sizes it would need shrunk: their own class, at 64 x 64
    with two blocks of width 32, every other argument as the builder gives it."""
    from timm.models import mlp_mixer as mm

    mixer = {"img_size": 64, "patch_size": 16, "num_blocks": 2, "embed_dim": 32, "num_classes": 10}
    return {
        "mixer_s16_224": lambda: mm.MlpMixer(**mixer),
        "gmlp_ti16_224": lambda: mm.MlpMixer(**mixer, mlp_ratio=6, block_layer=mm.SpatialGatingBlock,
                                             mlp_layer=mm.GatedMlp),
        "resmlp_12_224": lambda: mm.MlpMixer(**mixer, mlp_ratio=4, block_layer=mm.ResBlock, norm_layer=mm.Affine),
        "gmixer_12_224": lambda: mm.MlpMixer(**mixer, mlp_ratio=(1.0, 4.0), mlp_layer=mm.GluMlp,
                                             act_layer=nn.SiLU),
    }


def timm_models() -> dict:
    """``TIMM``, name -> builder (``timm.create_model`` with the kwargs given, or ``_timm_tiny``)."""
    import timm

    tiny = _timm_tiny()
    return {n: tiny.get(n, lambda n=n: timm.create_model(n, pretrained=False, num_classes=10, **TIMM[n]))
            for n in TIMM}


def _family(name: str) -> str:
    """torchvision's family of a model name: ``resnet18`` -> ``resnet``, ``swin_v2_t`` -> ``swin_v2``."""
    import re

    return re.match(r"[a-z]+(?:_v\d)?", name).group(0)


def _torchvision_tiny() -> dict:
    """torchvision families whose smallest model takes a fixed 224 x 224 input (attention over
    patches or windows): their own classes at a tiny size, same code, every stage kept."""
    from torchvision import models as tv
    from torchvision.models import swin_transformer as sw

    swin = {"patch_size": [4, 4], "embed_dim": 16, "depths": [2, 2], "num_heads": [2, 2], "window_size": [4, 4],
            "stochastic_depth_prob": 0.0, "num_classes": 10}
    return {
        "vit_b_16": lambda: tv.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=10),
        "swin_t": lambda: tv.SwinTransformer(**swin),
        "swin_v2_t": lambda: tv.SwinTransformer(**swin, block=sw.SwinTransformerBlockV2,
                                                downsample_layer=sw.PatchMergingV2),
        "maxvit_t": lambda: tv.MaxVit(input_size=(64, 64), stem_channels=16, partition_size=4,
                                      block_channels=[16, 32], block_layers=[1, 1], head_dim=8,
                                      stochastic_depth_prob=0.0, num_classes=10),
    }


def torchvision_models() -> dict:
    """The smallest classification model of each torchvision family (by the parameter count its
    weights' metadata states: nothing built, nothing downloaded), name -> builder."""
    import torchvision
    from torchvision.models import get_model_weights

    names = torchvision.models.list_models(module=torchvision.models)
    sizes = {n: min(w.meta["num_params"] for w in get_model_weights(n)) for n in names}
    smallest: dict[str, str] = {}
    for name in sorted(names, key=sizes.get):
        smallest.setdefault(_family(name), name)
    tiny = _torchvision_tiny()
    return {n: tiny.get(n, lambda n=n: torchvision.models.get_model(n, weights=None, num_classes=10))
            for n in sorted(smallest.values())}


def vision_rows(library: str, max_params: int, only: set[str] | None):
    if library == "torchvision":
        builders = torchvision_models()
    else:
        builders = timm_models()
    for name, build in builders.items():
        if only and name not in only:
            continue

        def factory(build=build):
            torch.manual_seed(0)
            model = build()
            count = sum(p.numel() for p in model.parameters())
            if count > max_params:
                raise TooBig(f"{count / 1e6:.1f}M params")
            return model, None
        yield f"{library}/{name}", factory


def vision_inputs(model: nn.Module):
    """Candidate inputs, smallest first: a fixed-size model (ViT-style) takes its own size; the
    others 64 x 64, or 96, 128 or the size their config names where the model needs more
    (Inception's stem, windows that must divide the feature map)."""
    for attr in ("img_size", "image_size"):
        value = getattr(model, attr, None) or getattr(getattr(model, "patch_embed", None), attr, None)
        if isinstance(value, int) or (isinstance(value, (tuple, list)) and value):
            sizes = [value if isinstance(value, int) else value[0]]
            break
    else:
        own = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1]
        sizes = [64, 96, 128, *([own] if own > 128 else [])]
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, size, size, generator=g, dtype=DTYPE) for size in sizes]


# ----------------------------------------------------------------------------
# the checks


def out(model, x):
    with torch.no_grad():
        return first_tensor(model(x)).to(DTYPE)


def close(a, b, what):
    scale = max(1.0, float(b.abs().max()))
    err = float((a - b).abs().max())
    if not math.isfinite(err) or err > 1e-6 * scale:  # float64, but some models compute parts in float32
        raise AssertionError(f"{what}: max error {err:.3g} (scale {scale:.3g})")


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def ran_on(model: nn.Module, x) -> set[str]:
    """Names of the Linear/Conv2d layers whose forward runs on ``x`` (a multimodal model given only
    tokens never runs its vision tower: nothing can be checked there)."""
    ran: set[str] = set()
    hooks = [m.register_forward_hook(lambda *_, n=n: ran.add(n)) for n, m in model.named_modules()
             if isinstance(m, (nn.Linear, nn.Conv2d))]
    out(model, x)
    for h in hooks:
        h.remove()
    return ran


def run_checks(model: nn.Module, fresh, x, row: dict) -> None:
    y = out(model, x)
    if not torch.isfinite(y).all():
        raise TooBig("the dense model's output is not finite at this size")
    if not torch.equal(out(model, x), y):
        raise TooBig("two calls give different outputs (random masking in eval): nothing to compare")
    used = ran_on(model, x)
    read = {given is None: {n for n, r in skipped_layers(model, example_input=given).items() if r == READ_BY_PARENT}
            for given in (x, None)}
    row["read_by_parent"] = sorted(read[False])  # found by the forward pass on x
    if read[True] != read[False]:  # without x: the source and transformers' dummy inputs
        row["read_without_example"] = sorted(read[True])
    for given in (x, None):
        preserved = quiet(lorita.compose, model, depth=3, init="preserve", example_input=given)
        assert any(isinstance(m, COMPOSED_TYPES) for m in preserved.modules()), "nothing composed"
        close(out(preserved, x), y, "preserve")
    row["preserve"] = "ok"
    composed = quiet(lorita.compose, model, depth=2, example_input=x)
    merged = lorita.merge(composed)
    assert [type(m) for m in merged.modules()] == [type(m) for m in model.modules()], "classes differ"
    close(out(merged, x), out(composed, x), "merge")
    again = fresh()
    again.load_state_dict(merged.state_dict(), strict=True)
    close(out(again.eval(), x), out(merged, x), "strict load")
    row["merge"] = "ok"
    for given in (x, None):
        cut = copy.deepcopy(model)
        for name, layer in scan_layers(cut, example_input=given).layers.items():
            replace_module(cut, layer, truncate(layer.module, min(weight_matrix(layer.module).shape), name))
        close(out(cut, x), y, "full-rank cut")
        small = quiet(lorita.compress, model, ratio=0.25, example_input=given).eval()
        pairs = {n: m for n, m in small.named_modules() if isinstance(m, LOWRANK_TYPES)}
        assert pairs, "nothing cut"
        ran = set()
        hooks = [m[i].register_forward_hook(lambda *_, key=(n, i): ran.add(key)) for n, m in pairs.items()
                 for i in (0, 1)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            small_y = out(small, x)
        for h in hooks:
            h.remove()
        missing = sorted({n for n in pairs if n in used and ((n, 0) not in ran or (n, 1) not in ran)})
        assert not missing, f"thin layers that never ran: {missing[:4]}"
        row.setdefault("dense_reads", sorted({str(w.message).split("'")[1] for w in caught
                                              if "dense .weight" in str(w.message)}))
    row["cut"] = "ok"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "small.lorita"
        lorita.save(small, path)
        loaded = lorita.load(path, model=fresh).eval()
        assert torch.equal(out(loaded, x), small_y), "loaded model differs"
    row["save/load"] = "ok"
    dense_p, cut_p = lorita.profile(model, x), lorita.profile(small, x)
    assert cut_p.params < dense_p.params and cut_p.macs < dense_p.macs, "profile: no fewer params/MACs"
    row["profile"] = "ok"
    row["onnx"] = onnx_check(model, small, x)


def onnx_check(model: nn.Module, small: nn.Module, x: torch.Tensor) -> str:
    import onnxruntime

    x32 = x.float() if x.is_floating_point() else x

    def export(m, path):
        m = First(copy.deepcopy(m).float()).eval()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (x32,), str(path), dynamo=False, input_names=["x"])
        return m

    def error(m, path) -> float:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x32.numpy()})[0])
        with torch.no_grad():
            want = m.eval()(x32)  # (export can leave the model in training mode: dropout)
        return float((got - want).abs().max()) / max(1.0, float(want.abs().max()))

    with tempfile.TemporaryDirectory() as folder:
        try:
            dense = export(model, Path(folder) / "dense.onnx")
            dense_error = error(dense, Path(folder) / "dense.onnx")
        except Exception as err:  # noqa: BLE001 - the dense model does not export: not lorita's to fix
            return f"n/a (dense does not export: {type(err).__name__})"
        if dense_error > 1e-3:
            return f"n/a (dense export differs from PyTorch by {dense_error:.2g})"
        cut_error = error(export(small, Path(folder) / "cut.onnx"), Path(folder) / "cut.onnx")
        if cut_error > 1e-3:
            raise AssertionError(f"onnx: onnxruntime differs from PyTorch by {cut_error:.3g} (relative)")
    return "ok"


def first_accepted(model: nn.Module, inputs: list) -> torch.Tensor:
    """The first of ``inputs`` the model runs on (the last one's error if none)."""
    for i, x in enumerate(inputs):
        try:
            out(model, x)
            return x
        except Exception:  # noqa: BLE001 - too small for this model: try the next size
            if i == len(inputs) - 1:
                raise
    raise TooBig("no input")


def check(name: str, factory, library: str) -> dict:
    row = {"model": name}
    start = time.time()
    try:
        model, config = factory()
        model = model.to(DTYPE).eval()
        if library == "transformers":
            call, x = hf_input(model, config)
            if call is None:
                raise TooBig("encoder-decoder without token inputs")
        else:
            call, x = model, first_accepted(model, vision_inputs(model))

        def fresh():
            again, _ = factory()
            again = again.to(DTYPE).eval()
            return hf_input(again, config)[0] if library == "transformers" else again
        if out(call.eval(), x) is None:
            raise TooBig("no tensor output")
        row["build"] = "ok"
    except Exception as err:  # noqa: BLE001 - a model that does not build tiny here is skipped, with the reason
        row["build"] = f"skip ({type(err).__name__}: {str(err)[:120]})"
        return row
    try:
        run_checks(call, fresh, x, row)
        row["result"] = "pass"
    except TooBig as err:
        row["build"] = f"skip ({err})"
        return row
    except MemoryError:
        row["build"] = "skip (over --memory-gb)"
        return row
    except Exception as err:  # noqa: BLE001 - the failing step is what this script reports
        if any(text in str(err).lower() for text in ("can't allocate memory", "cannot allocate memory")):
            # the address-space limit: a chunk's earlier models leave the process's address space grown, so a
            # small model late in a chunk can meet it too; run such a model alone (--only NAME)
            row["build"] = "skip (over --memory-gb)"
            return row
        step = next((s for s in STEPS if s not in row), "?")
        row["result"] = f"FAIL at {step}: {type(err).__name__}: {str(err)[:300]}"
        row["trace"] = traceback.format_exc()[-2000:]
    row["seconds"] = round(time.time() - start, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=("transformers", "torchvision", "timm"), required=True)
    parser.add_argument("--only", nargs="*", help="model names (transformers: model types) to run")
    parser.add_argument("--max-params", type=int,
                        help="skip bigger models (default: 3M for transformers' shrunk configs, 100M for "
                             "torchvision/timm, whose models mostly come at their real size: VGG's 133M float64 "
                             "weights take most of an hour through every step on 2 cores)")
    parser.add_argument("--chunk", help="K/N: run only the K-th of N equal slices of the model list (1-based), "
                                        "to split a long sweep into shorter runs")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--memory-gb", type=float, default=8.0,
                        help="address-space limit of this process: a model too big for it fails alone (default 8)")
    args = parser.parse_args()
    import resource

    limit = int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    warnings.simplefilter("ignore")  # the dense-read warnings are recorded per row instead
    import logging
    logging.disable(logging.WARNING)
    only = set(args.only) if args.only else None
    if args.max_params is None:
        args.max_params = 3_000_000 if args.library == "transformers" else 100_000_000
    source = transformers_rows(args.max_params, only) if args.library == "transformers" else \
        vision_rows(args.library, args.max_params, only)
    if args.chunk:
        k, n = (int(v) for v in args.chunk.split("/"))
        source = list(source)  # (factories only: nothing is built before its turn)
        source = source[(k - 1) * len(source) // n:k * len(source) // n]
    rows = []
    for name, factory in source:
        row = check(name, factory, args.library)
        rows.append(row)
        status = row.get("result") or row["build"]
        print(f"{name:60s} {status[:160]}  {row.get('onnx', '')[:40]} {row.get('seconds', '')}", flush=True)
        if args.json:  # after every model: a run stopped midway keeps the rows it has
            Path(args.json).write_text(json.dumps(rows, indent=1))
    built = [r for r in rows if r["build"] == "ok"]
    passed = [r for r in built if r.get("result") == "pass"]
    onnx = [r for r in passed if r.get("onnx") == "ok"]
    for r in built:
        if r.get("read_by_parent") or "read_without_example" in r:
            print(f"{r['model']}: read by parent (forward pass) {r.get('read_by_parent')}"
                  + (f"; without example_input {r['read_without_example']}" if "read_without_example" in r else ""))
    print(f"\n{args.library}: {len(rows)} tried, {len(built)} built tiny, {len(passed)} passed every step "
          f"({len(onnx)} of them with an ONNX export checked; the others' dense model does not export), "
          f"{len(built) - len(passed)} failed", flush=True)


if __name__ == "__main__":
    sys.exit(main())
