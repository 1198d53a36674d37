"""Test-time augmentation: horizontal flip, several input scales, several models.

What is fused, exactly:

- ``flip`` / ``multiscale`` (:class:`Augmented`): the views are ``x`` resized to ``round(s * H), round(s * W)``
  for each scale ``s`` (bilinear, antialiased, from the network input tensor) and, with ``flip``, each of them
  mirrored left-right. The base method (default ``cam``) runs on every view; the **logits** are the mean of the
  views' logits; the classes are chosen once from that mean; each view's **raw maps** for those classes are
  resized to the input size ``(H, W)`` (bilinear), mirrored back for flipped views, and averaged (``fuse=mean``)
  or maxed (``fuse=max``). By default (``norm=none``) the raw maps are fused, since the views share one model;
  ``norm=max`` (``clamp(M / max M, 0, 1)``) or ``minmax`` normalises each view's map first, so that every scale
  weighs the same whatever its logit scale (larger inputs give smaller maps: GAP averages more background).
  ``logits=input`` takes the logits (and so the classes) from ``x`` itself instead of the views' mean (the
  scale-1 unmirrored view when there is one, else one more forward). ``scales=1`` without flip is exactly the
  base method, upsampled.
- ``ensemble`` (:class:`Ensemble`): each member model gets its own input, made from ``x`` by undoing the first
  model's normalisation, resizing to the member's input size with its interpolation, and applying the member's
  mean / std (so the members see the image as their preprocessing would, up to resampling from the network
  input; the model ``x`` was made for gets ``x`` itself; sizes scale with ``x``, so an enlarged ``x`` stays
  enlarged). The **probabilities** are the mean of the members' softmax; the returned logits are their log (so
  ``softmax(logits)`` is that mean). Each member's maps are resized to the input size, **normalised per map**
  (``norm=max``: ``clamp(M / max M, 0, 1)``; ``minmax``), and averaged. One member gives the normalised
  upsampled maps of the base method.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import nn

from camloc._checks import fail
from camloc.cam import normalize_maps, upsample_maps
from camloc.methods.base import MapMethod, rescale_input, scaled_size
from camloc.methods.basic import build_base

__all__ = ["Augmented", "Ensemble", "build_ensemble", "build_tta"]


class Augmented(MapMethod):
    """Flip and/or multi-scale views of one base producer (see the module docstring)."""

    name = "tta"

    def __init__(
        self,
        base: Any,
        *,
        flip: bool,
        scales: tuple[float, ...],
        fuse: str = "mean",
        norm: str = "none",
        logits: str = "views",
    ) -> None:
        if not scales:
            fail("scales", "at least one scale", scales)
        self.base = base
        self.flip = bool(flip)
        self.scales = tuple(float(s) for s in scales)
        self.fuse = fuse
        self.norm = norm
        self.logits = logits

    def __repr__(self) -> str:
        return (
            f"Augmented(base={self.base!r}, flip={self.flip}, scales={self.scales}, fuse={self.fuse!r}, "
            f"norm={self.norm!r}, logits={self.logits!r})"
        )

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        size = (int(x.shape[2]), int(x.shape[3]))
        views: list[tuple[Any, bool]] = []
        total: torch.Tensor | None = None
        own: torch.Tensor | None = None
        for s in self.scales:
            xs = rescale_input(x, scaled_size(size, s))
            for mirrored in (False, True) if self.flip else (False,):
                state, logits = self.base.forward(xs.flip(-1) if mirrored else xs)
                views.append((state, mirrored))
                lg = logits.detach().float()
                total = lg if total is None else total + lg
                if s == 1.0 and not mirrored:
                    own = lg
        assert total is not None
        if self.logits == "input":
            if own is None:
                own = self.base.forward(x)[1].detach().float()
            return (views, size), own
        return (views, size), total / len(views)

    def maps(self, state: Any, classes: torch.Tensor) -> torch.Tensor:
        views, size = state
        out: torch.Tensor | None = None
        for st, mirrored in views:
            m = upsample_maps(self.base.maps(st, classes).detach().float(), size)
            if self.norm != "none":
                m = normalize_maps(m, mode=cast(Literal["max", "minmax"], self.norm))
            if mirrored:
                m = m.flip(-1)
            if out is None:
                out = m
            elif self.fuse == "max":
                out = torch.maximum(out, m)
            else:
                out = out + m
        assert out is not None
        return out if self.fuse == "max" else out / len(views)


def build_tta(
    model: nn.Module,
    info: Any,
    *,
    base: Any,
    flip: bool,
    scales: tuple[float, ...],
    fuse: str,
    norm: str = "none",
    logits: str = "views",
) -> Augmented:
    return Augmented(build_base(base, model, info), flip=flip, scales=scales, fuse=fuse, norm=norm, logits=logits)


def _device_and_format(model: nn.Module) -> tuple[torch.device, torch.memory_format]:
    for p in model.parameters():
        if p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
            return p.device, torch.channels_last
        return p.device, torch.contiguous_format
    return torch.device("cpu"), torch.contiguous_format


class Ensemble(MapMethod):
    """Several models, each with its own input size and normalisation (see the module docstring).

    Args:
        members: ``(producer, preprocess)`` per model; ``preprocess`` is the member's
            :class:`~camloc.models.registry.Preprocess`, or ``None`` for the model ``x`` was made for.
        preprocess: the preprocessing of the input ``x`` (the first model's).
        norm: per-map normalisation before averaging (``"max"`` or ``"minmax"``).
    """

    name = "ensemble"

    def __init__(self, members: list[tuple[Any, Any]], preprocess: Any, *, norm: str = "max") -> None:
        if not members:
            fail("models", "at least one model", members)
        self.members = members
        self.preprocess = preprocess
        self.norm = norm

    def _input(self, x: torch.Tensor, pre: Any) -> torch.Tensor:
        """The member's input: ``x`` itself for the first model (``pre is None``), else resized to the member's size
        (relative to the first model's, so an enlarged ``x`` stays enlarged) and renormalised."""
        if pre is None:
            return x
        p0 = self.preprocess
        h, w = int(x.shape[2]), int(x.shape[3])
        size = (max(1, round(pre.size[0] * h / p0.size[0])), max(1, round(pre.size[1] * w / p0.size[1])))
        mode = "bicubic" if pre.interpolation == "bicubic" else "bilinear"
        if tuple(pre.mean) == tuple(p0.mean) and tuple(pre.std) == tuple(p0.std):
            return rescale_input(x, size, mode=mode)
        m0 = torch.as_tensor(p0.mean, dtype=x.dtype, device=x.device)[:, None, None]
        s0 = torch.as_tensor(p0.std, dtype=x.dtype, device=x.device)[:, None, None]
        img = rescale_input(x * s0 + m0, size, mode=mode)
        m1 = torch.as_tensor(pre.mean, dtype=x.dtype, device=x.device)[:, None, None]
        s1 = torch.as_tensor(pre.std, dtype=x.dtype, device=x.device)[:, None, None]
        return (img - m1) / s1

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        size = (int(x.shape[2]), int(x.shape[3]))
        states = []
        probs: torch.Tensor | None = None
        for producer, pre in self.members:
            state, logits = producer.forward(self._input(x, pre))
            p = logits.detach().float().softmax(dim=1)
            if probs is not None and p.shape[1] != probs.shape[1]:
                fail("models", f"classifiers over the same {probs.shape[1]} classes", f"one with {p.shape[1]}")
            probs = p if probs is None else probs + p
            states.append(state)
        assert probs is not None
        return (states, size), (probs / len(self.members)).log()

    def maps(self, state: Any, classes: torch.Tensor) -> torch.Tensor:
        states, size = state
        out: torch.Tensor | None = None
        for (producer, _), st in zip(self.members, states):
            m = upsample_maps(producer.maps(st, classes).detach().float(), size)
            m = normalize_maps(m, mode=cast(Literal["max", "minmax"], self.norm))
            out = m if out is None else out + m
        assert out is not None
        return out / len(self.members)


def build_ensemble(model: nn.Module, info: Any, *, models: tuple[str, ...], base: Any, norm: str) -> Ensemble:
    """Members named by the model registry (``create_model``); ``self`` or the given model's own name reuse
    ``model``. Members are put on ``model``'s device and memory format, in eval mode."""
    from camloc.models.registry import create_model

    device, fmt = _device_and_format(model)
    members: list[tuple[Any, Any]] = []
    for name in models:
        if name in ("self", getattr(info, "name", None)):
            members.append((build_base(base, model, info), None))
        else:
            m, i = create_model(name)
            m = m.to(device=device, memory_format=fmt).eval()
            members.append((build_base(base, m, i), i.preprocess))
    return Ensemble(members, info.preprocess, norm=norm)
