"""Layers whose parent reads their ``.weight`` instead of calling them, found by reading source.

Without an example input no forward pass runs, so ``lorita.probe.weight_readers`` cannot
watch the model. The code that would call a layer can still be read: the ``forward`` of
each of its ancestors (and the methods of theirs that ``forward`` calls, such as Mamba's
``slow_forward``), parsed with ``ast``, never run. A layer counts as read by its parent when
that code computes with ``<child>.weight`` or ``<child>.bias`` (``self.qkv.weight``, or
``self.attn.qkv.weight`` in a grandparent, passed to a function or used in arithmetic),
also where another branch calls the layer (timm's BEiT calls ``self.qkv`` without a q/v
bias and reads ``self.qkv.weight`` with one: which branch runs is decided by the config).
Reading only what describes the weight (``self.wo.weight.dtype`` in transformers' T5,
``.shape``, ``.device``) does not count: the weight is not computed with. Where a class's
source cannot be read (built-in, generated, or shipped without ``.py`` files) nothing is
found for it.

Examples this finds: torchvision's Swin/SwinV2 ``attn.qkv``/``attn.proj``
(``shifted_window_attention(x, self.qkv.weight, ...)``), timm's BEiT ``attn.qkv``
(``F.linear(x, self.qkv.weight, qkv_bias)``), transformers' Mamba ``mixer.dt_proj`` and
WavLM attention projections.
"""

from __future__ import annotations

import ast
import functools
import inspect
import logging
import textwrap
from typing import Iterable

import torch  # noqa: F401 (doctests)
from torch import nn

log = logging.getLogger(__name__)

READ, CALL, OTHER = "read", "call", "other"
_WEIGHTS = ("weight", "bias")
# what describes a tensor without computing with it: reading these is no use of the weight's values
_METADATA = {"dtype", "device", "shape", "size", "ndim", "dim", "requires_grad", "is_cuda", "is_meta", "numel",
             "layout", "is_floating_point", "element_size", "nelement", "is_contiguous", "data_ptr", "grad_fn",
             "__describe__"}


def _chain(node: ast.AST) -> tuple[str, ...] | None:
    """``self.attn.qkv`` -> ``("self", "attn", "qkv")``; None for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return tuple(reversed(parts))


_DESCRIBE = {"isinstance", "type", "hasattr", "getattr", "callable", "id"}  # f(x.weight, ...): no computing


def _uses(tree: ast.AST) -> list[tuple[tuple[str, ...], bool]]:
    """Every maximal name/attribute chain in ``tree``, with whether it is the function of a call.

    A chain only described (``isinstance(self.wo.weight, torch.Tensor)``, ``self.proj.bias is
    None``) ends in ``"__describe__"``, which counts like ``.dtype``."""
    inner, called, described = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            inner.add(id(node.value))
        elif isinstance(node, ast.Call):
            called.add(id(node.func))
            if isinstance(node.func, ast.Name) and node.func.id in _DESCRIBE and node.args:
                described.add(id(node.args[0]))
        elif isinstance(node, ast.Compare) and all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            described.update(id(n) for n in (node.left, *node.comparators))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)) and id(node) not in inner:
            chain = _chain(node)
            if chain is not None:
                out.append((chain + ("__describe__",) if id(node) in described else chain, id(node) in called))
    return out


def _method_tree(function) -> ast.AST | None:
    try:
        source = textwrap.dedent(inspect.getsource(function))
        return ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError) as err:  # no source here: nothing found
        log.debug("no source for %r (%s)", function, err)
        return None


def _method(cls: type, name: str, start: int = 0) -> tuple[object, int] | None:
    """The function ``name`` resolves to in ``cls``'s MRO from position ``start`` on (``super()``
    starts after the defining class), and that position; None past ``nn.Module``."""
    mro = cls.__mro__
    for index in range(start, len(mro)):
        if mro[index] in (nn.Module, object):
            return None
        value = mro[index].__dict__.get(name)
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value):
            return value, index
    return None


Uses = dict[str, list[tuple[tuple[str, ...], bool, bool]]]


@functools.lru_cache(maxsize=512)
def _forward_uses(cls: type) -> Uses:
    seen: set[tuple[str, int]] = set()
    todo = [("forward", 0)]  # (method name, MRO position to resolve it from)
    uses: Uses = {}
    while todo:
        key = todo.pop()
        found = _method(cls, *key)
        if found is None or (key[0], found[1]) in seen:
            continue
        seen.add((key[0], found[1]))
        tree = _method_tree(found[0])
        if tree is None:
            continue
        for chain, called in _uses(tree):
            if called and len(chain) == 2 and chain[0] == "self":
                todo.append((chain[1], 0))  # self.helper(...): read helper too
            own = chain[0] == "self"
            chain = chain[1:] if own else chain
            if chain:
                uses.setdefault(chain[0], []).append((chain, called, own))
        for node in ast.walk(tree):  # super().method(...): the next definition in the MRO
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call) and \
                    _chain(node.value.func) == ("super",):
                todo.append((node.attr, found[1] + 1))
    return uses


def forward_uses(cls: type) -> Uses:
    """The name/attribute chains used by ``cls.forward`` and the methods of ``cls`` it calls
    (transitively), with a leading ``self`` dropped, by first part: ``{part: [(chain, called,
    own)]}`` (``own``: the chain started with ``self``; else it starts with a local name).

    Example:
        >>> class Reads(nn.Module):
        ...     def forward(self, x):
        ...         return self.helper(x)
        ...     def helper(self, x):
        ...         return x @ self.proj.weight.T
        >>> forward_uses(Reads)["proj"]
        [(('proj', 'weight', 'T'), False, True)]
    """
    return _forward_uses(cls)


def _kind(chain: tuple[str, ...], called: bool, own: bool, path: tuple[str, ...]) -> str | None:
    """How ``chain`` uses the module at relative ``path``: compute with its weight, call (or pass on) it,
    other (its ``.weight.dtype``, an attribute), or None (another module).

    A chain from a local name (``qkv.weight`` after ``qkv = self.qkv``) counts only as a
    weight read: a local of the same name used otherwise is most often a tensor (``qkv =
    F.linear(...)``), and handing the module itself to a local already shows as ``self.qkv``.
    """
    if chain[:len(path)] != path:
        return None
    rest = chain[len(path):]
    read = bool(rest) and rest[0] in _WEIGHTS and (len(rest) == 1 or rest[1] not in _METADATA)
    if not own:
        return READ if read else None
    if read:
        return READ
    if not rest:
        return CALL  # called, or the module itself passed on or stored: it may run
    if rest[0] == "forward" and called:
        return CALL
    return OTHER


def _fused_path_off(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.TransformerEncoderLayer`` that never takes its fused inference path, the only
    code of it that reads its layers' weights: PyTorch takes it only when ``self_attn.in_proj_bias`` is a tensor
    (not for ``bias=False``, nor for ``lorita.attention.SplitAttention``). A subclass is read as any module (its
    own methods may read the weights elsewhere).

    Example:
        >>> _fused_path_off(nn.TransformerEncoderLayer(8, 2, 16, bias=False)), _fused_path_off(nn.Linear(2, 2))
        (True, False)
    """
    return type(module) is nn.TransformerEncoderLayer and \
        getattr(getattr(module, "self_attn", None), "in_proj_bias", None) is None


def read_not_called(names: Iterable[str], modules: dict[str, nn.Module]) -> list[str]:
    """Of ``names`` (layers, by their name in the model), those whose ancestors' forward code computes
    with their ``.weight``/``.bias``. ``modules``: ``dict(model.named_modules())``.

    Example:
        >>> class Attention(nn.Module):  # torchvision Swin: the weights go to a function
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.qkv, self.norm = nn.Linear(4, 12), nn.Linear(4, 4)
        ...     def forward(self, x):
        ...         return torch.addmm(self.qkv.bias, self.norm(x), self.qkv.weight.T)
        >>> model = Attention()
        >>> read_not_called(["qkv", "norm"], dict(model.named_modules()))
        ['qkv']
    """
    found = []
    for name in names:
        parts = tuple(name.split("."))
        kinds = set()
        for cut in range(len(parts)):  # the root (cut 0), ..., the parent (cut len - 1)
            ancestor = modules.get(".".join(parts[:cut]))
            if ancestor is None or _fused_path_off(ancestor):
                continue
            path = parts[cut:]
            for chain, called, own in forward_uses(type(ancestor)).get(path[0], ()):
                kind = _kind(chain, called, own, path)
                if kind is not None:
                    kinds.add(kind)
        if READ in kinds:
            found.append(name)
    return found
