"""Tiny pretrained-LM stand-ins: a random Llama with grouped-query attention and tied embeddings, written as a
GGUF file (the llama.cpp layout transformers reads back) or a Hugging Face folder, with a byte-level tokenizer.

Nothing is downloaded; the 98 MB packaged model is never needed by the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

VOCAB = 261  # 4 specials + 256 byte symbols + one merge ("he")
LAYERS, HIDDEN, MLP, HEADS, KV_HEADS = 2, 32, 64, 4, 2


def tiny_llama(seed: int = 0, layers: int = LAYERS):
    """A random ``LlamaForCausalLM``: GQA (4 heads, 2 key/value heads), tied embeddings, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    # 512 positions: the default evaluation windows fit, as for the packaged model (8,192)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=layers,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, tie_word_embeddings=True,
                         rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=512)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # weights of a trained model's scale: std 0.02 gives near-uniform logits
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return model


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 symbols of a byte-level BPE vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for _, c in sorted(zip(printable, codes))]


def _gguf_name(hf_name: str) -> str:
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    _, _, index, rest = hf_name.split(".", 3)
    return f"blk.{index}.{parts[rest.removesuffix('.weight')]}.weight"


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order of q/k projections (transformers undoes it on load)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_gguf(model, path: str | Path, *, blocks: int | None = None, ffn: int | None = None) -> Path:
    """``model`` (from ``tiny_llama``) as a float32 GGUF file with a byte-level BPE tokenizer; ``blocks`` / ``ffn``:
    metadata that says otherwise than the tensors (a damaged or hostile file)."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_block_count(blocks or config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(ffn or config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(VOCAB)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(["<unk>", "<s>", "</s>", "<pad>"] + _byte_symbols() + ["he"])
    writer.add_token_types([3] * 4 + [1] * 257)
    writer.add_token_merges(["h e"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(3)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied: llama.cpp stores the embedding once
        array = tensor.detach().numpy()
        if ".q_proj." in name:
            array = _permute(array, config.num_attention_heads)
        elif ".k_proj." in name:
            array = _permute(array, config.num_key_value_heads)
        writer.add_tensor(_gguf_name(name), np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def hf_folder(model, tokenizer, folder: str | Path) -> Path:
    """``model`` and ``tokenizer`` saved as a Hugging Face model folder."""
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
