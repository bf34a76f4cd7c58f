"""The model zoo's registry: build a model by name, rebuild it from its saved config.

Each model family file registers its builders with `@register_model`. A builder
takes `num_classes, in_channels, image_size` plus its own keyword arguments and
returns a plain `nn.Module` made only of standard torch layers.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
from typing import Any, Callable

from torch import nn

from lorita.errors import LoritaError

logger = logging.getLogger(__name__)

FACTORY = "lorita.models:create_model"
_COMMON = ("num_classes", "in_channels", "image_size")

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_EXCLUDE: dict[str, tuple[str, ...]] = {}


def register_model(name: str, exclude: tuple[str, ...] = ()) -> Callable:
    """Decorator: add a builder to the zoo under `name`.

    `exclude` lists the module names the paper leaves plain (not composed).

    Example:
        >>> from torch import nn
        >>> @register_model("tiny_demo")
        ... def tiny_demo(num_classes, in_channels, image_size, width=4):
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
        >>> "tiny_demo" in list_models()
        True
        >>> _ = _BUILDERS.pop("tiny_demo"), _EXCLUDE.pop("tiny_demo")
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise LoritaError(f"model name {name!r} is registered twice; pick a new name")
        params = inspect.signature(builder).parameters
        missing = [p for p in _COMMON if p not in params]
        if missing:
            raise LoritaError(f"builder for {name!r} must accept {missing}; add them to its signature")
        _BUILDERS[name] = builder
        _EXCLUDE[name] = tuple(exclude)
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


def model_kwargs(name: str) -> dict[str, Any]:
    """The model-specific keyword arguments of `name` and their defaults.

    Example:
        >>> model_kwargs("fcn")
        {'width': 512, 'hidden_layers': 3}
    """
    params = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in params.items() if k not in _COMMON}


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


def check_int(what: str, value: Any, minimum: int = 1) -> int:
    """Return `value` if it is an int >= `minimum`, else raise LoritaError.

    Example:
        >>> check_int("width", 8)
        8
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LoritaError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def check_float(what: str, value: Any, minimum: float = 0.0) -> float:
    """Return `value` as float if it is a number > `minimum`, else raise LoritaError.

    Example:
        >>> check_float("mlp_ratio", 2)
        2.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > minimum:
        raise LoritaError(f"{what} must be a number > {minimum}, got {value!r}")
    return float(value)


def create_model(
    name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, **kwargs: Any
) -> nn.Module:
    """Build zoo model `name`; the result carries `model.lorita_config` to rebuild it.

    `lorita_config["kwargs"]` holds every argument, defaults filled in, so
    `create_model(**model.lorita_config["kwargs"])` gives the same architecture.

    Example:
        >>> net = create_model("fcn", width=64, hidden_layers=2)
        >>> net.lorita_config["kwargs"]["width"]
        64
        >>> twin = create_model(**net.lorita_config["kwargs"])
    """
    builder = _builder(name)
    allowed = model_kwargs(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise LoritaError(
            f"model {name!r} got unknown keyword argument(s) {unknown}; "
            f"allowed: {sorted(allowed) or 'none'} (plus {', '.join(_COMMON)})"
        )
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    check_int("image_size", image_size)
    resolved = {**allowed, **kwargs}
    try:
        json.dumps(resolved)
    except (TypeError, ValueError) as err:
        raise LoritaError(
            f"model {name!r} arguments must be plain JSON values (int, float, str, bool, list): {err}"
        ) from None
    model = builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **resolved)
    model.lorita_config = {
        "factory": FACTORY,
        "kwargs": {
            "name": name,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "image_size": image_size,
            **resolved,
        },
    }
    n_params = sum(p.numel() for p in model.parameters())
    logger.debug("built %s with %d parameters", name, n_params)
    return model
