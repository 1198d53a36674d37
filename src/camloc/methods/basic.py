"""``cam`` (camloc.CAM itself) and ``backprop`` (gradient saliency, :mod:`camloc.saliency`) as producers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from camloc.extractor import CAM
from camloc.methods.base import MapMethod

__all__ = ["Backprop", "build_backprop", "build_base", "build_cam"]


def build_cam(model: nn.Module, info: Any) -> CAM:
    """``cam``: :class:`camloc.CAM` (its maps at feature resolution, raw ``M_c``)."""
    return CAM(model)


class Backprop(MapMethod):
    """``backprop``: ``S_c = max_channel |d logit_c / d x|`` at input resolution (:mod:`camloc.saliency`).

    ``forward`` runs ``model(x)`` without a graph for the logits; ``maps`` runs one more forward with autograd and
    one backward per requested class (only the input's gradient is computed).
    """

    name = "backprop"

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = self.model(x)
        return x, logits

    def maps(self, state: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        from camloc.saliency import backprop_saliency

        return backprop_saliency(self.model, state, classes.to(state.device))[1]


def build_backprop(model: nn.Module, info: Any) -> Backprop:
    return Backprop(model)


def build_base(base: Any, model: nn.Module, info: Any) -> Any:
    """The inner producer of a wrapper: a method name, or ``(name, {args})``."""
    from camloc.methods.registry import get_method

    if isinstance(base, tuple):
        return get_method(base[0], model, info, **base[1])
    return get_method(base, model, info)
