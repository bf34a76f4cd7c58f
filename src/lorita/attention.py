"""``nn.MultiheadAttention`` with its four projections as ``nn.Linear`` layers lorita can compose and cut.

PyTorch's ``nn.MultiheadAttention`` keeps the query, key and value projections in one raw
parameter (``in_proj_weight``) and hands ``out_proj.weight`` to a fused kernel, so none of its
projections is a layer that is ever called; ``nn.TransformerEncoderLayer`` also reads its
``linear1`` / ``linear2`` weights on its fused inference path. ``split_attention(model)``
replaces each ``nn.MultiheadAttention`` by a ``SplitAttention``: the same function (every
argument of its ``forward``: masks, ``need_weights``, batch-first or not, unbatched inputs),
computed from ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj`` called as layers. The split
module has no ``in_proj_bias``, which keeps an encoder layer off its fused path, so its
``linear1`` / ``linear2`` are called too. ``fuse_attention`` puts ``nn.MultiheadAttention``
back once the layers are plain again (after ``lorita.merge``), so the merged model loads into
the original architecture; a cut (``lorita.compress``) keeps the split form.

An attention with ``add_bias_kv`` or ``add_zero_attn`` is left as it is (named in a warning).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from lorita.errors import LoritaError, LoritaWarning
from lorita.targets import check_model, copy_model, outside_weight

_NESTED = "lorita_use_nested_tensor"  # an encoder's own setting, kept while its attention is split


class SplitAttention(nn.Module):
    """Multi-head attention computed as ``nn.MultiheadAttention`` computes it, from four ``nn.Linear`` layers.

    ``forward`` takes and returns what ``nn.MultiheadAttention.forward`` does: ``(output, weights)``, weights
    ``None`` unless ``need_weights`` (averaged over the heads unless ``average_attn_weights=False``).

    Example:
        >>> torch.manual_seed(0); mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()  # doctest: +ELLIPSIS
        <...>
        >>> split = SplitAttention.from_attention(mha)
        >>> x = torch.randn(3, 5, 8)
        >>> torch.allclose(split(x, x, x)[0], mha(x, x, x)[0], atol=1e-6)
        True
    """

    def __init__(self, embed_dim: int, num_heads: int, *, kdim: int | None = None, vdim: int | None = None,
                 bias: bool = True, dropout: float = 0.0, batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        if embed_dim % num_heads:
            raise LoritaError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        made = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **made)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias, **made)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias, **made)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **made)
        self.register_parameter("in_proj_bias", None)  # nn.TransformerEncoderLayer's fused path stays off

    @classmethod
    def from_attention(cls, mha: nn.MultiheadAttention) -> SplitAttention:
        """The split form of ``mha``, holding its weights (copied), in its training mode."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise LoritaError("an nn.MultiheadAttention with add_bias_kv or add_zero_attn is not split")
        weight = mha.in_proj_weight
        split = cls(mha.embed_dim, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim, bias=mha.in_proj_bias is not None,
                    dropout=mha.dropout, batch_first=mha.batch_first, device=mha.out_proj.weight.device,
                    dtype=mha.out_proj.weight.dtype)
        weights = weight.chunk(3) if weight is not None else (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3
        with torch.no_grad():
            for layer, w, b in zip((split.q_proj, split.k_proj, split.v_proj), weights, biases):
                layer.weight.copy_(w)
                if b is not None:
                    layer.bias.copy_(b)
            split.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None:
                split.out_proj.bias.copy_(mha.out_proj.bias)
        return split.train(mha.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if is_causal and attn_mask is None:  # as nn.MultiheadAttention: the flag is a hint about the mask given
            raise RuntimeError("Need attn_mask if specifying the is_causal hint")
        if query.is_nested or key.is_nested or value.is_nested:
            raise LoritaError("SplitAttention does not take nested tensors: pass padded tensors and a key_padding_mask")
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        batch, length, source = query.shape[0], query.shape[1], key.shape[1]
        q, k, v = (self._heads(layer(x)) for layer, x in ((self.q_proj, query), (self.k_proj, key),
                                                          (self.v_proj, value)))
        mask = _merged_mask(attn_mask, key_padding_mask, batch, self.num_heads, length, source, q.dtype)
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            weights = torch.softmax(scores if mask is None else scores + mask, dim=-1)
            weights = F.dropout(weights, dropout) if dropout > 0 else weights  # returned after dropout, as MHA does
            out = weights @ v
        else:
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim))
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if unbatched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, L, E)`` to ``(N, H, L, E / H)``."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, dropout={self.dropout}, batch_first={self.batch_first}"


def _additive(mask: torch.Tensor, dtype: torch.dtype, name: str, shapes: list[tuple[int, ...]]) -> torch.Tensor:
    """A boolean mask (True: not attended) as ``-inf`` where True and 0 elsewhere; a float mask as it is. Other
    dtypes and shapes are refused, as ``nn.MultiheadAttention`` refuses them (an integer mask would be added)."""
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise LoritaError(f"{name} must be a bool or floating-point tensor (as nn.MultiheadAttention takes it), got "
                          f"{mask.dtype}; for a 0/1 mask pass mask.bool() (True: not attended)")
    if tuple(mask.shape) not in shapes:
        raise LoritaError(f"{name} has shape {tuple(mask.shape)}, but should be "
                          f"{' or '.join(str(s) for s in shapes)} here")
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


def _merged_mask(attn_mask, key_padding_mask, batch: int, heads: int, length: int, source: int,
                 dtype: torch.dtype) -> torch.Tensor | None:
    """``attn_mask`` ``(L, S)`` or ``(N * H, L, S)`` and ``key_padding_mask`` ``(N, S)``, added into one mask that
    broadcasts over ``(N, H, L, S)``, as ``nn.MultiheadAttention`` merges them."""
    mask = None
    if attn_mask is not None:
        mask = _additive(attn_mask, dtype, "attn_mask", [(length, source), (batch * heads, length, source)])
        mask = mask.view(batch, heads, length, source) if mask.dim() == 3 else mask.view(1, 1, length, source)
    if key_padding_mask is not None:
        padding = _additive(key_padding_mask, dtype, "key_padding_mask", [(batch, source)]).view(batch, 1, 1, source)
        mask = padding if mask is None else mask + padding
    return mask


def _fused(split: SplitAttention) -> nn.MultiheadAttention:
    """The ``nn.MultiheadAttention`` holding ``split``'s weights (plain ``nn.Linear`` projections only)."""
    bias = split.q_proj.bias is not None
    weight = split.out_proj.weight
    mha = nn.MultiheadAttention(split.embed_dim, split.num_heads, dropout=split.dropout, bias=bias,
                                kdim=split.kdim, vdim=split.vdim, batch_first=split.batch_first,
                                device=weight.device, dtype=weight.dtype)
    projections = (split.q_proj, split.k_proj, split.v_proj)
    with torch.no_grad():
        if mha._qkv_same_embed_dim:
            mha.in_proj_weight.copy_(torch.cat([p.weight for p in projections]))
        else:
            for name, layer in zip(("q_proj_weight", "k_proj_weight", "v_proj_weight"), projections):
                getattr(mha, name).copy_(layer.weight)
        if bias:
            mha.in_proj_bias.copy_(torch.cat([p.bias for p in projections]))
            mha.out_proj.bias.copy_(split.out_proj.bias)
        mha.out_proj.weight.copy_(weight)
    return mha.train(split.training)


def _unsplittable(mha: nn.Module) -> str | None:
    """Why ``mha`` is left as it is, or None: what ``SplitAttention`` would not compute or would drop."""
    if type(mha) is not nn.MultiheadAttention:
        return f"a subclass of nn.MultiheadAttention ({type(mha).__name__}), whose forward may differ"
    if mha.bias_k is not None or mha.add_zero_attn:
        return "add_bias_kv or add_zero_attn, which SplitAttention does not compute"
    if mha._forward_hooks or mha._forward_pre_hooks or parametrize.is_parametrized(mha):
        return "forward hooks or parametrizations, which the split module would not run"
    return outside_weight(mha.out_proj)


def split_attention(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each ``nn.MultiheadAttention`` made a ``SplitAttention`` (module docstring): the same
    function, with projections ``compose`` and ``compress`` can take. One attention used in several places becomes
    one split module in all of them. Left as they are, and named in a warning: subclasses, attentions with
    ``add_bias_kv`` / ``add_zero_attn``, hooks or parametrizations. An encoder holding a split layer never takes
    PyTorch's nested-tensor path: with a padding mask it is slower, and its padded positions' outputs are computed
    rather than zero; a query none of whose keys may be attended to gives 0 (PyTorch's fused path: NaN).
    ``torch.jit.script`` cannot compile ``SplitAttention`` (``torch.export``, ``torch.jit.trace``, ONNX export and
    ``torch.compile`` can).

    Example:
        >>> layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
        >>> net = split_attention(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
        >>> type(net.layers[0].self_attn).__name__
        'SplitAttention'
    """
    check_model(model, "split_attention")
    new = copy_model(model, "split_attention")
    if isinstance(new, nn.MultiheadAttention) and _unsplittable(new) is None:
        return SplitAttention.from_attention(new)
    names = {}
    for name, module in new.named_modules(remove_duplicate=False):
        if isinstance(module, nn.MultiheadAttention):
            names.setdefault(id(module), (module, name))
    kept = {name: _unsplittable(module) for module, name in names.values() if _unsplittable(module)}
    made = {key: SplitAttention.from_attention(module) for key, (module, name) in names.items() if name not in kept}
    for parent in list(new.modules()):
        for child_name, child in list(parent._modules.items()):  # every name, a module held twice included
            if id(child) in made:
                setattr(parent, child_name, made[id(child)])
    for module in new.modules():  # an encoder's nested-tensor path reads its first attention's fused weights
        if isinstance(module, nn.TransformerEncoder) and any(isinstance(getattr(layer, "self_attn", None),
                                                                       SplitAttention) for layer in module.layers):
            if not hasattr(module, _NESTED):  # split again: the setting saved the first time stays
                setattr(module, _NESTED, getattr(module, "use_nested_tensor", False))
            module.use_nested_tensor = False
    if kept:
        warnings.warn(f"split_attention left {len(kept)} attention(s) as they are: "
                      + "; ".join(f"{name}: {why}" for name, why in kept.items()), LoritaWarning, stacklevel=2)
    return new


def fuse_attention(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each ``SplitAttention`` whose projections are plain ``nn.Linear`` again (after
    ``lorita.merge``) made an ``nn.MultiheadAttention`` (same function, the original's parameter names); a split
    attention with cut projections stays split, and so does one of an encoder layer whose ``linear1`` or ``linear2``
    is cut (fused, the layer would take PyTorch's fused path, which reads their weights).

    Example:
        >>> net = split_attention(nn.Sequential(nn.MultiheadAttention(8, 2)))
        >>> type(fuse_attention(net)[0]).__name__
        'MultiheadAttention'
    """
    check_model(model, "fuse_attention")
    new = copy_model(model, "fuse_attention")
    if isinstance(new, SplitAttention):
        return _fused(new) if _plain(new.q_proj, new.k_proj, new.v_proj, new.out_proj) else new
    places = [(parent, child_name, child) for parent in list(new.modules())
              for child_name, child in list(parent._modules.items()) if isinstance(child, SplitAttention)]
    held = {id(child) for parent, _, child in places  # cut, or feeding a cut encoder layer anywhere: stays split
            if not _plain(child.q_proj, child.k_proj, child.v_proj, child.out_proj) or _feeds_fused_path(parent, child)}
    made: dict[int, nn.MultiheadAttention] = {}
    for parent, child_name, child in places:
        if id(child) not in held:
            setattr(parent, child_name, made.setdefault(id(child), _fused(child)))  # shared: fused once
    for module in new.modules():
        if isinstance(module, nn.TransformerEncoder) and hasattr(module, _NESTED) and \
                all(type(layer.self_attn) is nn.MultiheadAttention for layer in module.layers):
            module.use_nested_tensor = getattr(module, _NESTED)
            delattr(module, _NESTED)
    return new


def _plain(*layers: nn.Module) -> bool:
    return all(type(layer) is nn.Linear for layer in layers)


def _feeds_fused_path(parent: nn.Module, attention: SplitAttention) -> bool:
    """Whether fusing ``attention`` would put ``parent``, an encoder layer whose feed-forward layers are cut or
    composed, back on PyTorch's fused inference path, which reads their weights (dense again at every call)."""
    return isinstance(parent, nn.TransformerEncoderLayer) and parent.self_attn is attention and \
        not _plain(parent.linear1, parent.linear2)
