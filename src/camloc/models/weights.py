"""Loading weight files into models: one reader (torch / safetensors), strict loading with one error message."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camloc._checks import describe_load_error, fail
from camloc.errors import CamlocValueError

__all__ = ["describe_key_mismatch", "load_state_dict_file", "load_weights_strict"]


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file and return its state dict (unwrapping ``state_dict``/``model``/``module.``).

    Accepts ``.pth``/``.pt`` (torch.load, weights_only) and ``.safetensors``.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        fail("weights", "an existing weights file", str(p))
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / foreign file
        raise CamlocValueError(
            f"`weights` must be a torch or safetensors checkpoint; could not read {p} ({describe_load_error(e)})"
        ) from e
    for key in ("state_dict", "model", "model_state", "ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        fail("weights", "a file holding a state dict (name -> tensor)", f"{type(obj).__name__} in {p}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def describe_key_mismatch(missing: Sequence[str], unexpected: Sequence[str], mismatched: Sequence[str]) -> str:
    """One message listing missing / unexpected / wrong-shape keys (first 8 of each); ``""`` when all fit."""

    def head(xs: Sequence[str]) -> str:
        return ", ".join(xs[:8]) + (f" ... (+{len(xs) - 8} more)" if len(xs) > 8 else "")

    parts = []
    if missing:
        parts.append(f"missing keys [{head(missing)}]")
    if unexpected:
        parts.append(f"unexpected keys [{head(unexpected)}]")
    if mismatched:
        parts.append(f"shape mismatches [{head(mismatched)}]")
    return "; ".join(parts)


def load_weights_strict(model: Any, state: dict[str, Any], *, source: str) -> None:
    """``model.load_state_dict(state)`` with a camloc error listing missing/unexpected/mismatched keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = describe_key_mismatch(missing, unexpected, mismatched)
    if problems:
        raise CamlocValueError(f"`weights` ({source}) do not fit the architecture: {problems}")
    model.load_state_dict(state)
