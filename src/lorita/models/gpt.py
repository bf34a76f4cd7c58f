"""Character-level GPT (decoder only, nanoGPT style): pre-norm blocks, causal attention, learned positions.

Attention is built only from `nn.Linear` (separate `q`, `k`, `v` and an output `proj`),
the MLP from `fc1`/`fc2`, so LoRITa composes each of them like any Linear. The token and
position embeddings are `nn.Embedding` (never composed) and the output `head` is a plain
Linear NOT tied to the token embedding: exclude it (`exclude=["head"]`) to leave it plain,
as the paper leaves the ViT's classifier. `model(ids)` returns logits; the loss is the
caller's (`F.cross_entropy(logits.flatten(0, 1), targets.flatten())`).

Init as nanoGPT: weights normal(0, 0.02), biases zero, and the residual projections
(`proj`, `fc2`) at 0.02 / sqrt(2 * depth) so the residual stream does not grow with depth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lorita.errors import LoritaError
from lorita.models.registry import check_elements, check_float, check_int, register_model


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention from separate `q`, `k`, `v` Linears and an output `proj`.

    Example:
        >>> CausalSelfAttention(dim=16, heads=4)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, H, T, hd)
        k = self.k(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, H, T, hd)
        v = self.v(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, H, T, hd)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, hd)
        out = out.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(out))


class MLP(nn.Module):
    """Linear -> GELU -> Linear (-> dropout).

    Example:
        >>> MLP(16, 64)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm decoder block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    Example:
        >>> Block(16, 4, 64)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, T, C)
        return x + self.mlp(self.norm2(x))  # (B, T, C)


class GPT(nn.Module):
    """Token + learned position embeddings, `depth` blocks, LayerNorm, untied `head`: ids (B, T) -> logits (B, T, V).

    Example:
        >>> net = GPT(vocab_size=11, context=8, dim=16, depth=1, heads=2)
        >>> net(torch.zeros(2, 5, dtype=torch.long)).shape
        torch.Size([2, 5, 11])
    """

    def __init__(self, vocab_size: int, context: int, dim: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise LoritaError(f"GPT dim {dim} is not divisible by heads {heads}; pick heads that divides dim")
        self.context = context
        self.tok_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Embedding(context, dim)
        self.drop = nn.Dropout(dropout)
        hidden = max(1, round(dim * mlp_ratio))
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.fc2.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * max(depth, 1)))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        if T > self.context:
            raise LoritaError(f"sequence of {T} tokens is longer than the model's context {self.context}; "
                              f"feed at most the last {self.context} tokens (generate() crops for you)")
        pos = torch.arange(T, device=ids.device)  # (T,)
        x = self.drop(self.tok_embed(ids) + self.pos_embed(pos))  # (B, T, C)
        x = self.norm(self.blocks(x))  # (B, T, C)
        return self.head(x)  # (B, T, V)


@register_model("gpt", exclude=("head",), inputs=("vocab_size",), limits={"depth": 1024, "context": 1 << 16})
def gpt(vocab_size: int, context: int = 128, dim: int = 128, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0,
        dropout: float = 0.0) -> nn.Module:
    """A character-level GPT; every argument checked (`dim` divisible by `heads`, `0 <= dropout < 1`).

    Example:
        >>> net = gpt(vocab_size=65, context=32, dim=32, depth=2, heads=4)
        >>> [n for n, m in net.named_modules() if isinstance(m, nn.Linear)][-7:-3]
        ['blocks.1.attn.q', 'blocks.1.attn.k', 'blocks.1.attn.v', 'blocks.1.attn.proj']
    """
    check_int("vocab_size", vocab_size)
    check_int("context", context, maximum=1 << 16)
    check_int("dim", dim)
    check_int("depth", depth, minimum=0, maximum=1024)
    check_int("heads", heads)
    mlp_ratio = check_float("mlp_ratio", mlp_ratio)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise LoritaError(f"dropout must be a number in [0, 1), got {dropout!r}; 0 turns it off")
    check_elements("the GPT token embedding (and head)", vocab_size, dim)
    check_elements("the GPT position embedding", context, dim)
    check_elements("a GPT MLP Linear", max(1, round(dim * mlp_ratio)), dim)
    return GPT(vocab_size, context, dim, depth, heads, mlp_ratio, float(dropout))


@torch.no_grad()
def generate(model: nn.Module, ids: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend ``ids`` (B, T) by ``max_new_tokens`` sampled tokens; returns (B, T + max_new_tokens).

    The model sees at most its last ``model.context`` tokens. ``temperature=0`` picks the
    most likely token; ``top_k`` samples among the k most likely. Runs in eval mode
    (dropout off) and restores the model's mode. Pass a seeded ``generator`` (on the
    model's device) for reproducible samples.

    Example:
        >>> net = gpt(vocab_size=10, context=4, dim=8, depth=1, heads=2)
        >>> out = generate(net, torch.zeros(1, 1, dtype=torch.long), 6, generator=torch.Generator().manual_seed(0))
        >>> out.shape
        torch.Size([1, 7])
    """
    context = getattr(model, "context", None)
    if not isinstance(context, int):
        raise LoritaError(f"generate needs a model with an int `context` attribute (one built by gpt()), "
                          f"got {type(model).__name__} with context={context!r}")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point() or ids.shape[1] < 1:
        got = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise LoritaError(f"ids must be an integer tensor (B, T) with T >= 1 (a prompt), got {got}")
    check_int("max_new_tokens", max_new_tokens, minimum=0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise LoritaError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None:
        check_int("top_k", top_k)
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            logits = model(ids[:, -context:])[:, -1, :]  # (B, V)
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)  # (B, 1)
            ids = torch.cat([ids, nxt], dim=1)  # (B, T + 1)
    finally:
        model.train(was_training)
    return ids
