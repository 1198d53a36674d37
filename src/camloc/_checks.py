"""One validation helper family, one message style: "`name` must be <expected>; got <actual>".

:func:`fail` is THE way camloc raises an argument error. This module does not import torch (only
:func:`check_tensor` does, when called), so torch-free modules (``camloc.data``) use it too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from camloc.errors import CamlocTypeError, CamlocValueError

if TYPE_CHECKING:
    import torch


def _describe(x: Any) -> str:
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch is not None and isinstance(x, torch.Tensor):
        return f"Tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}" if not hasattr(x, "shape") else f"{type(x).__name__} {x.shape}"


def fail(name: str, expected: str, got: Any, *, type_error: bool = False) -> NoReturn:
    """Raise the standard camloc error for argument ``name``."""
    cls = CamlocTypeError if type_error else CamlocValueError
    raise cls(f"`{name}` must be {expected}; got {got if isinstance(got, str) else _describe(got)}")


def check_tensor(
    name: str,
    x: Any,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool = False,
    finite: bool = False,
) -> torch.Tensor:
    """Check that ``x`` is a tensor with the given rank (and optionally floating, finite); return it."""
    import torch

    if not isinstance(x, torch.Tensor):
        fail(name, "a torch.Tensor", x, type_error=True)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            fail(name, f"a {want} tensor", x)
    if floating and not x.is_floating_point():
        fail(name, "a floating-point tensor", x)
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        fail(name, "finite (no NaN or inf values)", "a tensor with NaN/inf values")
    return x


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    low_inclusive: bool = True,
) -> Any:
    """Check a scalar option (bool is rejected) and its range; return it."""
    ok_types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        fail(name, "an integer" if integer else "a number", value, type_error=True)
    if value != value:  # NaN
        fail(name, "a number (not NaN)", value)
    if low is not None and (value < low or (not low_inclusive and value == low)):
        op = ">=" if low_inclusive else ">"
        fail(name, f"{op} {low}", value)
    if high is not None and value > high:
        fail(name, f"<= {high}", value)
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Check that ``value`` is one of ``choices``; return it."""
    if value not in choices:
        fail(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def describe_load_error(e: BaseException) -> str:
    """A short reason why a file could not be unpickled (torch.load's own message suggests unsafe loading)."""
    text = str(e).strip()
    if "Weights only load failed" in text:
        return "not a file of tensors and plain values (torch.load with weights_only=True refuses it)"
    if isinstance(e, KeyError | EOFError | UnicodeDecodeError) or type(e).__name__ == "UnpicklingError":
        return "not a torch.save file: corrupt, or a file of another kind"
    first = text.splitlines()[0][:160] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
