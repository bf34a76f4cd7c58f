"""A cut language model on disk and at work: save, reload, generate, time.

``save_lm(model, tokenizer, folder)`` writes ``model.lorita`` (``lorita.save``: the thin pairs
and their ranks, safetensors, a tied embedding stored once), the model's Hugging Face
``config.json`` and its tokenizer files. ``load_lm(folder)`` rebuilds the architecture from
that config with transformers' own classes (``AutoConfig.for_model``: a ``model_type``
transformers knows; no code is imported from the folder) and loads the weights with
``lorita.load(path, model=...)``. ``densified(model)`` multiplies each thin pair back into one
``nn.Linear``: a plain transformers model, for ``save_pretrained`` where a user wants a folder
any transformers install reads (it is as large and as slow as the dense model).

``speed`` measures, at batch 1 on this machine: prefill (tokens per second of one forward over
a prompt) and decode (new tokens per second of greedy generation with the KV cache, the
prefill's time taken out), medians of repeats.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lorita import jsonio
from lorita.atomic import atomic_write_text
from lorita.errors import LoritaError
from lorita.lm.sources import check_layer_count, require, with_built_in_attention
from lorita.lm.width import WIDTHS_KEY, set_mlp_widths
from lorita.lowrank import LowRankLinear
from lorita.serialization import check_fits, load, save
from lorita.targets import keep_frozen

MODEL_FILE = "model.lorita"
CONFIG_FILE = "config.json"


def save_lm(model: nn.Module, tokenizer, folder: str | Path) -> None:
    """Write ``model.lorita``, ``config.json`` and the tokenizer files into the existing ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LoritaError(f"{folder} is not a folder; create it first (save_lm writes three kinds of file into it)")
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise LoritaError(f"{type(model).__name__} has no Hugging Face config; save it with lorita.save instead")
    save(model, folder / MODEL_FILE)
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config.to_dict(), indent=1, default=str))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))


def config_from_dict(values: dict, where: str):
    """A transformers config from its JSON form (``config.to_dict()``), for an architecture transformers itself knows
    (``AutoConfig.for_model``: no code is imported from anywhere; ``auto_map`` is dropped). ``where``: for errors.

    Example:
        >>> config_from_dict({"model_type": "llama", "hidden_size": 16, "num_attention_heads": 2}, "c.json").hidden_size
        16
        >>> config_from_dict({"model_type": "llama", "hidden_size": 16}, "c.json")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: c.json does not describe a valid 'llama' model (StrictDataclassClassValidationError: Class validation error for validator 'validate_architecture': ValueError: The hidden size (16) is not a multiple of the number of attention heads (32).)
    """
    require("transformers")
    from transformers import AutoConfig  # the lm extra

    if not isinstance(values, dict) or not isinstance(values.get("model_type"), str):
        raise LoritaError(f"{where} has no model_type; lorita rebuilds only architectures transformers itself knows")
    values = dict(values)
    kind = values.pop("model_type")
    values.pop("auto_map", None)  # never code from the folder, nor a Hub kernel it names (built-in attention)
    for key in ("attn_implementation", "_attn_implementation", "_attn_implementation_internal"):
        values.pop(key, None)
    try:
        cls = type(AutoConfig.for_model(kind))
    except (ValueError, KeyError) as err:
        raise LoritaError(f"{where}: transformers does not know model_type {kind!r:.60} "
                          f"({' '.join(str(err).split())[:300]})") from None
    try:
        return cls(**values)
    except Exception as err:  # transformers validates a config with errors of its own types (not ValueError)
        detail = " ".join(str(err).split())
        raise LoritaError(f"{where} does not describe a valid {kind!r} model ({type(err).__name__}: "
                          f"{detail[:300]})") from None


def rebuild_lm(path: str | Path, config) -> nn.Module:
    """The model ``lorita.save`` wrote to ``path``, rebuilt on transformers' own class for ``config`` (MLPs narrowed to
    the config's ``lorita_mlp_widths`` where the widths differ by block; ties the embeddings again where the config
    says so), in eval mode."""
    require("transformers")
    from transformers import AutoModelForCausalLM  # the lm extra

    def build() -> nn.Module:
        model = with_built_in_attention(lambda attention: AutoModelForCausalLM.from_config(
            config, attn_implementation=attention))
        widths = getattr(config, WIDTHS_KEY, None)  # MLP widths that differ by block (prune_width, allocation="global")
        if widths is not None:
            set_mlp_widths(model, widths)
        return model

    check_layer_count(config, f"{path}'s model_config")
    with torch.device("meta"):  # the config's sizes checked against the file's weights before any memory is taken
        skeleton = build()
    check_fits(path, skeleton)
    del skeleton
    model = load(path, model=build)
    if getattr(config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()


def load_lm(folder: str | Path, *, tokenizer: bool = True):
    """``(model, tokenizer)`` saved by ``save_lm``, in eval mode (``tokenizer=False``: None for it).

    Example:
        >>> load_lm("/no/such/run")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: /no/such/run/model.lorita is missing; is this a folder written by save_lm?
    """
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file():
        raise LoritaError(f"{folder / MODEL_FILE} is missing; is this a folder written by save_lm?")
    require("transformers")
    from transformers import AutoTokenizer  # the lm extra

    values = jsonio.read(folder / CONFIG_FILE, fix="was the folder written by lorita.lm.deploy.save_lm?",
                         allow_nan=True)  # transformers' own configs hold Infinity (e.g. time_step_limit)
    model = rebuild_lm(folder / MODEL_FILE, config_from_dict(values, str(folder / CONFIG_FILE)))
    if not tokenizer:
        return model, None
    try:
        words = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (LoritaError, MemoryError):
        raise
    except Exception as err:  # a missing or damaged tokenizer file: transformers and tokenizers raise many kinds
        raise LoritaError(f"{folder}: its tokenizer cannot be read ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:300]})") from None
    return model, words


@torch.no_grad()
def densified(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every thin pair multiplied back into one ``nn.Linear`` (same outputs, dense size).

    Example:
        >>> from lorita.lowrank import truncate
        >>> net = nn.Sequential(truncate(nn.Linear(6, 4), 2))
        >>> type(densified(net)[0]).__name__
        'Linear'
    """
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, LowRankLinear):
            dense = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                              device=module[1].weight.device, dtype=module[1].weight.dtype)
            dense.weight.copy_(module.weight)
            if module.bias is not None:
                dense.bias.copy_(module.bias)
            keep_frozen(module, dense)
            out.set_submodule(name, dense)
    return out


def generate(model: nn.Module, tokenizer, prompt: str, *, new_tokens: int = 40) -> str:
    """Greedy continuation of ``prompt`` (``new_tokens`` tokens), decoded without special tokens."""
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@dataclass(frozen=True)
class Speed:
    """Batch-1 throughput: ``prefill`` and ``decode`` tokens per second, with the lengths they were measured at."""

    prefill: float
    decode: float
    prompt_tokens: int
    new_tokens: int

    def to_dict(self) -> dict:
        return {"prefill_tokens_per_s": self.prefill, "decode_tokens_per_s": self.decode,
                "prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens}


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


@torch.no_grad()
def speed(model: nn.Module, prompt: torch.Tensor, *, new_tokens: int = 32, repeats: int = 5) -> Speed:
    """Prefill and decode throughput of ``model`` at batch 1 on a ``prompt`` of token ids (1-D).

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
        ...                                      num_hidden_layers=1, num_attention_heads=2))
        >>> speed(model, torch.arange(8), new_tokens=3, repeats=1).decode > 0
        True
    """
    ids = prompt.view(1, -1)
    model.eval()
    prefill = _median_seconds(lambda: model(ids, use_cache=False), repeats)
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   pad_token_id=getattr(model.config, "eos_token_id", None) or 0)
    total = _median_seconds(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), **options), repeats)
    decode = max(total - prefill, 1e-9)  # the first new token comes from the prefill, the others from the cache
    return Speed(ids.shape[1] / prefill, max(new_tokens - 1, 1) / decode, ids.shape[1], new_tokens)
