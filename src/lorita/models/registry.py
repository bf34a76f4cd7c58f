"""The model zoo's registry: build a model by name, rebuild it from its saved config.

Each model family file registers its builders with `@register_model`. A builder
takes its data inputs (`num_classes, in_channels, image_size` for image models) plus
its own keyword arguments and returns a plain `nn.Module` made only of standard torch
layers.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
from typing import Any, Callable

from torch import nn

from lorita.errors import LoritaError

logger = logging.getLogger(__name__)

IMAGE_INPUTS = ("num_classes", "in_channels", "image_size")
_INPUT_DEFAULTS = {"num_classes": 10, "in_channels": 1, "image_size": 28}
# Bounds on every integer and float argument of a zoo builder, so a model described in a
# file (lorita.load) cannot ask for an absurd size; a builder may tighten them per argument.
MAX_INT = 1 << 20
MAX_FLOAT = 1e6
# Each argument is bounded, so a builder also bounds the tensors their products make (a 2^20-channel
# 2^20-pixel FCN input would be a 2^60-wide Linear): at most MAX_ELEMENTS values per tensor (8 GiB
# in float32), and a ViT at most MAX_GRID patches a side.
MAX_ELEMENTS = 1 << 31
MAX_GRID = 1 << 10

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_EXCLUDE: dict[str, tuple[str, ...]] = {}
_INPUTS: dict[str, tuple[str, ...]] = {}
_LIMITS: dict[str, dict[str, int]] = {}


def register_model(name: str, exclude: tuple[str, ...] = (), *, inputs: tuple[str, ...] = IMAGE_INPUTS,
                   limits: dict[str, int] | None = None) -> Callable:
    """Decorator: add a builder to the zoo under `name`.

    `exclude` lists the module names the paper leaves plain (not composed). `inputs` are
    the builder's arguments that come from the data (image models: classes, channels and
    image size; a language model: its vocabulary size). `limits` caps integer arguments
    below `MAX_INT` (e.g. a layer count), so a described model stays cheap to check.

    Example:
        >>> from torch import nn
        >>> @register_model("tiny_demo")
        ... def tiny_demo(num_classes, in_channels, image_size, width=4):
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
        >>> "tiny_demo" in list_models()
        True
        >>> _ = [table.pop("tiny_demo") for table in (_BUILDERS, _EXCLUDE, _INPUTS, _LIMITS)]
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise LoritaError(f"model name {name!r} is registered twice; pick a new name")
        params = inspect.signature(builder).parameters
        missing = [p for p in inputs if p not in params]
        if missing:
            raise LoritaError(f"builder for {name!r} must accept {missing}; add them to its signature")
        _BUILDERS[name] = builder
        _EXCLUDE[name] = tuple(exclude)
        _INPUTS[name] = tuple(inputs)
        _LIMITS[name] = dict(limits or {})
        return builder

    return wrap


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted.

    Example:
        >>> "resnet20" in list_models()
        True
    """
    return sorted(_BUILDERS)


def _builder(name: str) -> Callable[..., nn.Module]:
    if not isinstance(name, str) or name not in _BUILDERS:
        known = list_models()
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise LoritaError(f"unknown model {name!r}; known models: {', '.join(known)}.{hint}")
    return _BUILDERS[name]


def model_inputs(name: str) -> tuple[str, ...]:
    """The arguments of model `name` that come from the data.

    Example:
        >>> model_inputs("fcn")
        ('num_classes', 'in_channels', 'image_size')
    """
    _builder(name)
    return _INPUTS[name]


def model_kwargs(name: str) -> dict[str, Any]:
    """The model-specific keyword arguments of `name` and their defaults.

    Example:
        >>> model_kwargs("fcn")
        {'width': 512, 'hidden_layers': 3}
    """
    params = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in params.items() if k not in _INPUTS[name]}


WIDTH_ARGUMENTS = ("width", "width_multiplier")  # an int (units/channels) or a float (channel scale)


def width_argument(name: str) -> str:
    """The argument of zoo model ``name`` that sets its width.

    Example:
        >>> width_argument("fcn"), width_argument("vgg16")
        ('width', 'width_multiplier')
    """
    kwargs = model_kwargs(name)
    for arg in reversed(WIDTH_ARGUMENTS):  # a width multiplier first: it scales every layer
        if arg in kwargs:
            return arg
    raise LoritaError(f"model {name!r} has no width argument ({' or '.join(WIDTH_ARGUMENTS)}), so no smaller dense "
                      "model of its family can be built; leave the small-model column out for it")


def paper_exclude(name: str) -> list[str]:
    """Module names the paper leaves plain (not composed) for model `name`.

    Example:
        >>> paper_exclude("vit")
        ['patch_embed', 'head']
        >>> paper_exclude("resnet20")
        []
    """
    _builder(name)
    return list(_EXCLUDE[name])


def check_int(what: str, value: Any, minimum: int = 1, maximum: int = MAX_INT) -> int:
    """Return `value` if it is an int in [`minimum`, `maximum`], else raise LoritaError.

    Example:
        >>> check_int("width", 8)
        8
    """
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise LoritaError(f"{what} must be an integer from {minimum} to {maximum}, got {value!r}")
    return value


def check_elements(what: str, *sizes: int | float) -> None:
    """Raise LoritaError when a tensor of shape ``sizes`` would hold more than ``MAX_ELEMENTS`` values.

    Example:
        >>> check_elements("fcn input layer", 784, 512)
        >>> check_elements("fcn input layer", 1 << 20, 1 << 20)
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: fcn input layer would hold 1048576 x 1048576 = 1.1e+12 values, more than the \
zoo's 2147483648 per tensor; use smaller model arguments
    """
    count = math.prod(sizes)
    if count > MAX_ELEMENTS:
        shape = " x ".join(str(int(s)) for s in sizes)
        raise LoritaError(f"{what} would hold {shape} = {count:.2g} values, more than the zoo's {MAX_ELEMENTS} per "
                          "tensor; use smaller model arguments")


def check_float(what: str, value: Any, minimum: float = 0.0, maximum: float = MAX_FLOAT) -> float:
    """Return `value` as float if it is a number in (`minimum`, `maximum`], else raise LoritaError.

    Example:
        >>> check_float("mlp_ratio", 2)
        2.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum < value <= maximum:
        raise LoritaError(f"{what} must be a number > {minimum} and <= {maximum:g}, got {value!r}")
    return float(value)


def resolve_args(name: str, args: dict[str, Any], *, inputs_given: bool = True) -> dict[str, Any]:
    """Every argument of zoo model `name`, defaults filled in, checked without building anything.

    Unknown names, non-JSON values and numbers outside the zoo's bounds raise LoritaError:
    this is what makes a model described in a file (``lorita.load``) safe to build.
    ``inputs_given=False``: check the model's own arguments before the data is known.

    Example:
        >>> resolve_args("fcn", {"width": 64})["hidden_layers"]
        3
    """
    _builder(name)
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise LoritaError(f"arguments of model {name!r} must be a JSON object of name -> value, got {args!r}")
    inputs = _INPUTS[name]
    allowed = model_kwargs(name)
    unknown = sorted(set(args) - set(allowed) - set(inputs))
    if unknown:
        raise LoritaError(
            f"model {name!r} got unknown keyword argument(s) {unknown}; "
            f"allowed: {sorted(allowed) or 'none'} (plus {', '.join(inputs)})"
        )
    given = [k for k in inputs if k in args]
    if given and not inputs_given:
        raise LoritaError(f"model {name!r} takes {', '.join(given)} from the data; leave it out of the model's own "
                          "arguments (--model-arg, model_kwargs)")
    missing = [k for k in inputs if k not in args and k not in _INPUT_DEFAULTS]
    if missing and not inputs_given:
        args = {**args, **{k: 1 for k in missing}}  # placeholders: only the model's own arguments are checked
    elif missing:
        raise LoritaError(f"model {name!r} needs {', '.join(missing)} (they come from the data)")
    resolved = {**{k: _INPUT_DEFAULTS[k] for k in inputs if k in _INPUT_DEFAULTS}, **allowed, **args}
    limits = _LIMITS[name]
    for key, value in resolved.items():
        if key in inputs:
            check_int(key, value, maximum=limits.get(key, MAX_INT))
            continue
        items = value if isinstance(value, list) and len(value) <= 1024 else [value]
        for item in items:
            if isinstance(item, bool) or item is None or (isinstance(item, str) and len(item) <= 1024):
                continue
            if isinstance(item, int) and not isinstance(allowed.get(key), float):
                bound = limits.get(key, MAX_INT)
                if abs(item) > bound:  # the builder checks the meaning (a width of 0, a negative context)
                    raise LoritaError(f"{key} must be an integer of magnitude at most {bound:,}, got {item:,}")
            elif isinstance(item, float) and type(allowed.get(key)) is int and not (
                    math.isfinite(item) and abs(item) <= limits.get(key, MAX_INT)):  # an integer argument's bound
                raise LoritaError(f"{key} must be an integer of magnitude at most {limits.get(key, MAX_INT):,}, got "
                                  f"{item!r}")
            elif isinstance(item, (int, float)):
                if not math.isfinite(item) or abs(item) > MAX_FLOAT:
                    raise LoritaError(f"{key} must be a finite number of magnitude <= {MAX_FLOAT:g}, got {item!r}")
            else:
                raise LoritaError(f"model {name!r} arguments must be plain JSON values (number, short string, "
                                  f"bool, null, or a short list of them); {key} is {type(item).__name__}")
    return resolved


def create_model(name: str, num_classes: int | None = None, in_channels: int | None = None,
                 image_size: int | None = None, **kwargs: Any) -> nn.Module:
    """Build zoo model `name`; the result carries `model.lorita_config` to rebuild it.

    `lorita_config` is ``{"zoo": name, "kwargs": {...}}`` with every argument, defaults
    filled in, so ``create_model(c["zoo"], **c["kwargs"])`` gives the same architecture;
    ``lorita.save`` stores it and ``lorita.load`` rebuilds zoo models from it (checked by
    `resolve_args`, nothing imported). Image models default to 10 classes, 1 channel, 28x28.

    Example:
        >>> net = create_model("fcn", width=64, hidden_layers=2)
        >>> net.lorita_config["kwargs"]["width"]
        64
        >>> twin = create_model(net.lorita_config["zoo"], **net.lorita_config["kwargs"])
    """
    given = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels),
                                 ("image_size", image_size)) if v is not None}
    resolved = resolve_args(name, {**given, **kwargs})
    model = _builder(name)(**resolved)
    model.lorita_config = {"zoo": name, "kwargs": resolved}
    n_params = sum(p.numel() for p in model.parameters())
    logger.debug("built %s with %d parameters", name, n_params)
    return model
