"""One eval-mode forward pass on an example input: what each layer sees, and which layers really run.

Rank selection counts each layer's output positions (its MACs); the latency check needs
the input each layer really gets (``observe``). Some parents never call a child layer:
they read its ``.weight`` / ``.bias`` and compute ``F.linear`` themselves (torchvision's
Swin, transformers' Mamba ``dt_proj`` and WavLM attention, timm's BEiT/EVA ``qkv``). A
composed or cut layer there would rebuild its dense weight at every call and save nothing,
so compose and compress leave it plain: ``weight_readers`` finds such layers with one
forward pass (``track_usage``: did the layer's own forward run, was its weight read from
outside it), on the example input or, without one, on the inputs the model's library
provides (``library_weight_readers``: transformers' ``dummy_inputs``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from lorita.dense_reads import quiet_dense_reads
from lorita.errors import LoritaError

log = logging.getLogger(__name__)

READ_BY_PARENT = ("its parent reads its .weight/.bias and computes with them itself (e.g. F.linear(x, layer.weight)); "
                  "its own forward never runs, so a composed or cut layer would rebuild the dense weight at every "
                  "call and save nothing")


LEAD_NAMES = ("input_ids", "pixel_values", "input_values", "input_features", "inputs_embeds")


@dataclass(frozen=True, eq=False)
class ModelInput:
    """The arguments of one model call, ``model(*args, **kwargs)``: what ``example_input`` and
    calibration batches become (``model_input``).

    ``lead`` is the tensor that carries the batch: the first positional argument; with keyword
    arguments only, the one named ``key``: by default the first of ``LEAD_NAMES`` present
    (``input_ids``, ``pixel_values``, ...), else the first tensor of at least one dimension whose
    name does not start with "label" (a Hugging Face batch may put its labels first).

    Example:
        >>> call = ModelInput(kwargs={"labels": torch.zeros(2), "input_ids": torch.zeros(2, 5, dtype=torch.long)})
        >>> call.key, call.lead.shape, call.batch_size
        ('input_ids', torch.Size([2, 5]), 2)
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))  # a copy: the caller's dict may change later
        if not all(isinstance(k, str) for k in self.kwargs):
            raise LoritaError(f"an example_input given as a mapping names the model's arguments, so its keys must be "
                              f"strings; got keys {sorted(map(repr, self.kwargs))[:5]}")
        if self.args:
            if self.key is not None:
                raise LoritaError(f"key={self.key!r} names a keyword argument as the lead, but the call has positional "
                                  "arguments, whose first is the lead; leave key out")
            if not isinstance(self.args[0], torch.Tensor):
                raise LoritaError("example_input must be a tensor (or a tuple of tensors, or a dict of named "
                                  "arguments) the model accepts, e.g. torch.randn(1, 3, 32, 32); got "
                                  f"{type(self.args[0]).__name__}")
            return
        tensors = {k: v for k, v in self.kwargs.items() if isinstance(v, torch.Tensor)}
        if not tensors:
            raise LoritaError(f"the example_input (arguments {sorted(self.kwargs)[:5]}) holds no tensor; pass a "
                              "tensor, a tuple or a dict of tensors (a tokenizer makes one with return_tensors='pt', "
                              "e.g. tokenizer('Hello', return_tensors='pt'))")
        if self.key is None:
            named = [k for k in LEAD_NAMES if k in tensors]
            batched = [k for k, v in tensors.items() if v.dim() >= 1 and not k.startswith("label")]
            object.__setattr__(self, "key", (named or batched or list(tensors))[0])
        elif self.key not in tensors:
            raise LoritaError(f"key={self.key!r} names no tensor among the arguments {sorted(self.kwargs)[:5]}")

    def __call__(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)

    @property
    def lead(self) -> torch.Tensor:
        return self.args[0] if self.args else self.kwargs[self.key]

    @property
    def lead_name(self) -> str:
        """How messages name the lead: ``example_input`` or ``example_input['input_ids']``."""
        return "example_input" if self.args else f"example_input[{self.key!r}]"

    @property
    def batch_size(self) -> int:
        """The lead tensor's first size; 1 for a lead of fewer than 2 dimensions (one unbatched example)."""
        return int(self.lead.shape[0]) if self.lead.dim() >= 2 else 1

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ModelInput:
        """The same call with ``fn`` applied to every tensor argument (other arguments as they are)."""
        def each(value):
            return fn(value) if isinstance(value, torch.Tensor) else value
        return ModelInput(tuple(each(a) for a in self.args), {k: each(v) for k, v in self.kwargs.items()}, self.key)

    def with_lead(self, x: torch.Tensor) -> ModelInput:
        """The same call with ``x`` in place of the lead tensor."""
        if self.args:
            return ModelInput((x, *self.args[1:]), self.kwargs)
        return ModelInput(self.args, {**self.kwargs, self.key: x}, self.key)

    def describe(self) -> str:
        """What was passed, for error messages: shapes and dtypes of the tensors (and devices other than the CPU).

        Example:
            >>> ModelInput((torch.zeros(2, 5),)).describe()
            'a tensor of shape (2, 5) (torch.float32)'
            >>> ModelInput((torch.zeros(2, 5, device="meta"),)).describe()
            'a tensor of shape (2, 5) (torch.float32, on meta)'
            >>> ModelInput(kwargs={"input_ids": torch.zeros(1, 3, dtype=torch.long), "use_cache": False}).describe()
            'arguments of input_ids=shape (1, 3) (torch.int64), use_cache=bool'
        """
        parts = [_shown(a) for a in self.args] + [f"{k}={_shown(v)}" for k, v in self.kwargs.items()]
        if len(parts) == 1 and not self.kwargs:
            return f"a tensor of {parts[0]}"
        return "arguments of " + ", ".join(parts)


def _shown(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        where = "" if value.device.type == "cpu" else f", on {value.device}"
        return f"shape {tuple(value.shape)} ({value.dtype}{where})"
    return type(value).__name__


def model_input(example_input: Any) -> ModelInput:
    """``example_input`` as the arguments of one model call, checked: a tensor (``model(x)``), a tuple whose
    first item is a tensor (``model(*args)``), or a mapping of argument names to values with at least one
    tensor among them (``model(**kwargs)``: a tokenizer's output, a Hugging Face batch).

    Example:
        >>> model_input(torch.zeros(1, 4)).args[0].shape
        torch.Size([1, 4])
        >>> sorted(model_input({"input_ids": torch.zeros(1, 3, dtype=torch.long)}).kwargs)
        ['input_ids']
    """
    if isinstance(example_input, ModelInput):
        return example_input
    if isinstance(example_input, Mapping):
        return ModelInput(kwargs=dict(example_input))
    if isinstance(example_input, tuple) and not example_input:
        raise LoritaError("example_input is an empty tuple; pass a tensor (or a tuple of tensors, or a dict of "
                          "named arguments) the model accepts, e.g. torch.randn(1, 3, 32, 32)")
    return ModelInput(example_input if isinstance(example_input, tuple) else (example_input,))


def run_model(model: nn.Module, call: ModelInput, what: str = "example_input") -> Any:
    """``call(model)``; an error raised inside the model becomes a LoritaError naming the input given
    (``what``: how the caller calls it, e.g. "calibration batch 3").

    Example:
        >>> run_model(nn.Linear(3, 2), model_input(torch.zeros(4, 3))).shape
        torch.Size([4, 2])
    """
    try:
        return call(model)
    except LoritaError:
        raise
    except Exception as err:  # a forward can raise anything (shape, dtype, device, index errors)
        raise LoritaError(f"the model failed on {what}, {call.describe()}: {type(err).__name__}: {err}. "
                          "Pass an input the model accepts (the shape and dtype of one real batch).") from err


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; every submodule's own train/eval flag comes back
    after, also on error (a frozen norm inside a training model stays frozen).

    A module whose class overrides ``train()`` is put back through it (parents first, each module after its
    parent), so what the override does on a mode change (loralib's adapters merge into the weight on ``eval()``
    and out again on ``train()``) is undone too.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
        >>> _ = net[1].eval()  # frozen inside a model that trains
        >>> with eval_mode(net):
        ...     net.training
        False
        >>> net.training, net[1].training
        (True, False)
    """
    modes = [(module, module.training) for module in model.modules()]  # parents before children
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            if module.training == training:
                continue
            if type(module).train is not nn.Module.train:  # its own train() acts (loralib merges on eval): call it
                module.train(training)
            else:
                module.training = training
        for module, training in modes:  # an override may have reset one restored before it (a shared module)
            module.training = training


@contextlib.contextmanager
def unfused() -> Iterator[None]:
    """Inside the block, PyTorch's fused fast path of ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention``
    in eval mode is off (restored after), so each submodule runs its own forward: one fused kernel is what
    PyTorch's FLOP counter cannot see into (it counted 0 MACs for a whole encoder layer).

    Example:
        >>> with unfused():
        ...     torch.backends.mha.get_fastpath_enabled()
        False
    """
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


@contextlib.contextmanager
def hooks_on(model: nn.Module, hooks: dict[str, Callable], *, before: bool = False) -> Iterator[None]:
    """``hooks[name]`` on module ``name`` of ``model`` inside the block, removed after (also on error).

    ``before=False``: forward hooks, ``hook(module, inputs, output)``; ``before=True``:
    forward pre-hooks, ``hook(module, inputs)``.

    Example:
        >>> net, seen = nn.Sequential(nn.Linear(4, 3)), []
        >>> with hooks_on(net, {"0": lambda m, i: seen.append(i[0].shape)}, before=True):
        ...     _ = net(torch.zeros(2, 4))
        >>> seen, net[0]._forward_pre_hooks
        ([torch.Size([2, 4])], OrderedDict())
    """
    handles = []
    try:
        for name, hook in hooks.items():
            module = model.get_submodule(name)
            handles.append(module.register_forward_pre_hook(hook) if before else module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()  # not inference_mode: a tensor the model caches in its forward must stay usable for training
def observe(model: nn.Module, example_input: Any, hooks: dict[str, Callable], *, before: bool = False) -> None:
    """Run ``model`` once in eval mode with ``hooks[name]`` on module ``name``; restore the mode after.

    ``before=False``: each hook is called as ``hook(module, inputs, output)`` after the
    module runs; ``before=True``: as ``hook(module, inputs)`` before it runs.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        >>> seen = []
        >>> observe(net, torch.zeros(2, 4), {"0": lambda m, i, o: seen.append(o.shape)})
        >>> seen
        [torch.Size([2, 3])]
    """
    call = model_input(example_input)
    with eval_mode(model), hooks_on(model, hooks, before=before):
        run_model(model, call)


@dataclass
class Usage:
    """What one forward pass did with the tracked layers (by name): ``ran`` (their own forward
    was called) and ``read`` (``.weight`` or ``.bias`` read from outside their own forward)."""

    ran: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)

    def read_not_run(self) -> list[str]:
        """Layers the parent used through their weights only: their own forward never ran."""
        return sorted(self.read - self.ran)


def _tracking_class(cls: type, usage: Usage, names: dict[int, list[str]], depth: dict[int, int]) -> type:
    """A subclass of ``cls`` recording into ``usage`` (swapped in for one forward pass only)."""

    def forward(self, *args, **kwargs):
        key = id(self)
        usage.ran.update(names[key])
        depth[key] = depth.get(key, 0) + 1
        try:
            return cls.forward(self, *args, **kwargs)
        finally:
            depth[key] -= 1

    def __getattribute__(self, attr):
        if attr in ("weight", "bias"):
            key = id(self)
            if key in names and not depth.get(key):
                usage.read.update(names[key])
        return cls.__getattribute__(self, attr)

    return type(cls.__name__, (cls,), {"forward": forward, "__getattribute__": __getattribute__,
                                       "__module__": cls.__module__, "__qualname__": cls.__qualname__})


@contextlib.contextmanager
def track_usage(modules: dict[str, nn.Module]) -> Iterator[Usage]:
    """Within the block, record which of ``modules`` (by name) run their own forward and which
    have their ``.weight`` / ``.bias`` read from outside it. Their classes are swapped for
    recording subclasses for the duration and restored after (also on error); a module whose
    forward is wrapped on the instance (accelerate's hooks, ``layer.forward = ...``) gets forward
    hooks that mark the call too (only such modules: a hook on a layer turns off PyTorch's fused
    encoder path, which would make its layers look called); compiled submodules run eagerly.

    Example:
        >>> class ReadsWeight(nn.Module):  # uses its child through the weight only
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.proj = nn.Linear(4, 4)
        ...     def forward(self, x):
        ...         return nn.functional.linear(x, self.proj.weight, self.proj.bias)
        >>> model = ReadsWeight()
        >>> with track_usage({"proj": model.proj}) as usage:
        ...     _ = model(torch.zeros(1, 4))
        >>> usage.read_not_run(), type(model.proj) is nn.Linear
        (['proj'], True)
    """
    usage = Usage()
    names: dict[int, list[str]] = {}
    unique: dict[int, nn.Module] = {}
    for name, module in modules.items():
        names.setdefault(id(module), []).append(name)
        unique[id(module)] = module
    depth: dict[int, int] = {}
    classes: dict[type, type] = {}
    swapped, handles = [], []

    def entered(module, args):  # around whatever forward a call runs (one an instance attribute wraps, too)
        key = id(module)
        usage.ran.update(names[key])
        depth[key] = depth.get(key, 0) + 1

    def left(module, args, output):
        depth[id(module)] -= 1

    try:
        for module in unique.values():
            cls = type(module)
            if cls not in classes:
                classes[cls] = _tracking_class(cls, usage, names, depth)
            module.__class__ = classes[cls]
            swapped.append((module, cls))
            if "forward" in vars(module):  # wrapped on the instance (accelerate's hooks): the class's may never run
                handles += [module.register_forward_pre_hook(entered),
                            module.register_forward_hook(left, always_call=True)]
        with _eager():
            yield usage
    finally:
        for handle in handles:
            handle.remove()
        for module, cls in swapped:
            module.__class__ = cls


def _eager() -> contextlib.AbstractContextManager:
    """Compiled submodules (``torch.compile``) run eagerly inside: the recording classes are not traced."""
    if "torch._dynamo" not in sys.modules:  # nothing was compiled in this process: dynamo need not be imported
        return contextlib.nullcontext()
    stance = getattr(torch.compiler, "set_stance", None)  # torch 2.6 and later
    return stance("force_eager") if stance is not None else contextlib.nullcontext()


def _readers(model: nn.Module, run: Callable[[], Any], modules: dict[str, nn.Module]) -> dict[str, str]:
    with eval_mode(model), torch.no_grad(), track_usage(modules) as usage, quiet_dense_reads():
        run()
    return {name: READ_BY_PARENT for name in usage.read_not_run()}


def weight_readers(model: nn.Module, example_input: Any, modules: dict[str, nn.Module]) -> dict[str, str]:
    """``{name: reason}`` for each of ``modules`` whose parent reads its weight instead of calling it.

    One eval-mode forward pass of ``model`` on ``example_input``. A layer counts when its
    ``.weight`` or ``.bias`` is read from outside its own forward and that forward never
    runs. A layer that neither runs nor is read (unused on this input) is not named.

    Example:
        >>> class ReadsWeight(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.proj, self.out = nn.Linear(4, 4), nn.Linear(4, 2)
        ...     def forward(self, x):
        ...         return self.out(nn.functional.linear(x, self.proj.weight, self.proj.bias))
        >>> model = ReadsWeight()
        >>> list(weight_readers(model, torch.zeros(1, 4), {"proj": model.proj, "out": model.out}))
        ['proj']
    """
    call = model_input(example_input)
    return _readers(model, lambda: run_model(model, call), modules)


def library_inputs(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The small inputs the model's own library makes for such checks, on the model's device, or None.

    transformers' models have ``model.dummy_inputs`` (a few token ids, made in code,
    nothing downloaded); other models have none. None too for a model on the meta device.

    Example:
        >>> library_inputs(nn.Linear(2, 2)) is None
        True
    """
    if not any(cls.__module__.startswith("transformers.") for cls in type(model).__mro__):
        return None
    try:
        inputs = model.dummy_inputs
    except Exception:  # the library's own property: any failure means no dummy inputs
        return None
    if not isinstance(inputs, dict) or not inputs or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in inputs.items()):
        return None
    device = next((p.device for p in model.parameters()), None)
    if device is None or device.type == "meta":
        return None
    return {key: value.to(device) for key, value in inputs.items()}


def library_weight_readers(model: nn.Module, modules: dict[str, nn.Module]) -> dict[str, str] | None:
    """``weight_readers`` on the model's ``library_inputs``, for a model given without an example input.

    None when the library provides no inputs or the model does not accept them (an audio
    or image model's token-id dummies): then reading the source finds such layers
    (``lorita.source_readers``).

    Example:
        >>> library_weight_readers(nn.Linear(2, 2), {}) is None
        True
    """
    inputs = library_inputs(model)
    if inputs is None:
        return None
    try:
        return _readers(model, lambda: ModelInput(kwargs=inputs)(model), modules)
    except Exception as err:  # the model refused its library's dummy inputs: no information, not an error
        log.debug("dummy inputs %s failed on %s: %s: %s", list(inputs), type(model).__name__,
                  type(err).__name__, err)
        return None
