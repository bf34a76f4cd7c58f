"""Argument checks shared by the library: one place for "is this an integer / a fraction / a choice".

Each ``check_*`` returns the value (converted where it says so) or raises LoritaError with a
message naming the argument, what is allowed and what was given. ``bool`` is never a number
here, and NaN or infinity never pass a numeric check.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

import torch

from lorita.errors import LoritaError


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool``.

    Example:
        >>> is_int(3), is_int(True), is_int(3.0)
        (True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """An ``int`` or ``float`` that is not a ``bool`` (NaN and infinity included).

    Example:
        >>> is_real(float("nan")), is_real(True)
        (True, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool``; an ``int`` beyond float range is not.

    Example:
        >>> is_number(0.5), is_number(float("nan")), is_number(False), is_number(10 ** 400)
        (True, False, False, False)
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (read from a file, say): no usable number
        return False


def is_module_name(name: Any) -> bool:
    """A name ``named_modules()`` can produce for a submodule: a non-empty string whose
    dot-separated parts are non-empty. PyTorch forbids only ``.`` and the empty string in a
    child's name, so ``block1-0`` (torchvision's RegNet), ``0`` or ``layer 1`` are all names.
    The one check on module names in lorita: a name is only ever looked up among the
    model's own ``named_modules()``, never used to reach an attribute.

    Example:
        >>> is_module_name("trunk_output.block1.block1-0"), is_module_name("a..b"), is_module_name("")
        (True, False, False)
    """
    return isinstance(name, str) and all(name.split("."))


def got(value: Any) -> str:
    """``got VALUE`` for a message, with a hint when ``value`` is a numpy or torch scalar (which lorita does not take
    for a Python number: they do not write to JSON and compare differently).

    Example:
        >>> import torch
        >>> got(2), got(torch.tensor(2))
        ('got 2', 'got tensor(2) (a torch scalar: pass a Python number, value.item())')
    """
    kind = type(value).__module__.split(".")[0]
    if kind in ("numpy", "torch") and getattr(value, "ndim", 1) == 0:
        return f"got {value!r} (a {kind} scalar: pass a Python number, value.item())"
    return f"got {value!r}"


def _meaning(meaning: str) -> str:
    return f" ({meaning})" if meaning else ""


def check_int(what: str, value: Any, minimum: int = 1, maximum: int | None = None, *, meaning: str = "") -> int:
    """``value`` if it is an integer in ``[minimum, maximum]``; ``meaning`` goes in the message.

    Example:
        >>> check_int("epochs", 3)
        3
    """
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        span = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise LoritaError(f"{what} must be an integer {span}{_meaning(meaning)}, {got(value)}")
    return value


def check_number(what: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                 low_open: bool = False, high_open: bool = False, meaning: str = "") -> float:
    """``float(value)`` if it is a finite number within the bounds (``*_open``: bound excluded).

    Example:
        >>> check_number("lr", 1, minimum=0, low_open=True)
        1.0
    """
    ok = is_number(value)
    if ok and minimum is not None:
        ok = value > minimum if low_open else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if high_open else value <= maximum
    if not ok:
        low = "" if minimum is None else f"{'>' if low_open else '>='} {minimum:g}"
        high = "" if maximum is None else f"{'<' if high_open else '<='} {maximum:g}"
        span = " and ".join(p for p in (low, high) if p)
        span = f" {span}" if span else ""
        raise LoritaError(f"{what} must be a finite number{span}{_meaning(meaning)}, {got(value)}")
    return float(value)


def check_fraction(what: str, value: Any, *, low_open: bool = True, high_open: bool = False,
                   meaning: str = "") -> float:
    """``float(value)`` if it lies in the unit interval, ``(0, 1]`` by default.

    Example:
        >>> check_fraction("energy", 0.9)
        0.9
    """
    if not (is_number(value) and (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)):
        span = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise LoritaError(f"{what} must be a number in {span}{_meaning(meaning)}, {got(value)}")
    return float(value)


def check_choice(what: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``.

    Example:
        >>> check_choice("mode", "fused", ("sequential", "fused", "auto"))
        'fused'
    """
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise LoritaError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_str(what: str, value: Any) -> str:
    """``value`` if it is a non-empty string.

    Example:
        >>> check_str("model name", "fcn")
        'fcn'
    """
    if not isinstance(value, str) or not value:
        raise LoritaError(f"{what} must be a non-empty string, got {value!r}")
    return value


def check_device(value: Any, doing: str, *, auto: bool = False, here: bool = False) -> torch.device | None:
    """``value`` as a ``torch.device`` that holds values (not ``meta``), for ``doing`` (what the device is for, said
    in the message); with ``auto``, ``"auto"`` is allowed too and gives None (the caller chooses). ``here``: also one
    this PyTorch can use now (mps, xpu, ...: tried; CUDA is checked where it is used), for work about to run on it,
    not for a setting recorded to run elsewhere.

    Example:
        >>> check_device("cpu", "loaded onto it")
        device(type='cpu')
        >>> check_device("auto", "to train on", auto=True) is None
        True
    """
    names = "'auto', 'cpu', 'cuda' or 'cuda:N'" if auto else "'cpu', 'cuda' or 'cuda:N'"
    if auto and value == "auto":
        return None
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise LoritaError(f"device {value!r} is not a torch device; use {names}") from None
    if device.type == "meta":
        raise LoritaError(f"device 'meta' holds no values, so nothing can be {doing}; use {names}")
    if here and device.type not in ("cpu", "cuda"):
        try:
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError, ValueError, ImportError, AttributeError) as err:  # AssertionError:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:200]  # torch's own
            instead = "'auto' or 'cpu'" if auto else "'cpu'"
            raise LoritaError(f"device {value!r} cannot be used here ({reason}); use {instead}") from None
    return torch.device("cpu") if device.type == "cpu" else device  # one CPU: "cpu:0" is "cpu"


def check_json_object(what: str, value: Any) -> dict:
    """``value`` if it is a dict with string keys that JSON can write.

    Example:
        >>> check_json_object("options", {"energy": 0.9})
        {'energy': 0.9}
    """
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise LoritaError(f"{what} must be an object of name -> value, got {value!r}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise LoritaError(f"{what} must hold plain JSON values ({err})") from None
    return value
