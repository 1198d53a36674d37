"""The one interface of every map method, and the small tensor helpers they share.

A map method ("producer") is called like :class:`camloc.CAM`::

    out = producer(x, classes=None, topk=5)      # x: Tensor[N, 3, H, W], the network input of the model
    out.logits [N, C], out.classes [N, m] int64, out.scores [N, m], out.maps [N, m, h, w], out.input_size (H, W)

and returns a :class:`camloc.extractor.CamResult` whose maps may have ANY resolution (feature grid, a finer
grid, the input size); ``input_size`` is always the size of ``x``, so ``out.upsampled()`` puts every method's maps
in the caller's frame. Internally every producer has two stages, as :class:`camloc.CAM` has:
``forward(x) -> (state, logits [N, C])`` and ``maps(state, classes [N, m]) -> maps``, so that wrappers (flip,
multi-scale, ensembles) choose the classes ONCE from fused logits and then ask every view for the same classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from camloc._checks import check_number, check_tensor
from camloc.extractor import CamResult, Classes, select_classes

__all__ = ["MapMethod", "Producer", "frozen_parameters", "probe_forward", "rescale_input", "result_of"]


@runtime_checkable
class Producer(Protocol):
    """What every map method offers (``camloc.CAM`` included)."""

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]: ...

    def maps(self, state: Any, classes: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, x: torch.Tensor, *, classes: Classes = None, topk: int = 5) -> CamResult: ...


def result_of(producer: Producer, x: torch.Tensor, classes: Classes, topk: int) -> CamResult:
    """Run the two stages of ``producer`` on ``x`` and pack a :class:`CamResult` (scores: softmax of the logits)."""
    check_tensor("x", x, ndim=4, floating=True)
    check_number("topk", topk, low=1, integer=True)
    with torch.no_grad():  # gradient methods turn autograd on inside their own stages
        state, logits = producer.forward(x)
        logits = logits.detach()
        cls = select_classes(classes, logits, topk)
        maps = producer.maps(state, cls)
        scores = logits.float().softmax(dim=1).gather(1, cls)
    return CamResult(logits, cls, scores, maps.detach(), (int(x.shape[2]), int(x.shape[3])))


class MapMethod:
    """Base class: subclasses implement :meth:`forward` and :meth:`maps`; ``__call__`` is shared."""

    name = "method"

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def maps(self, state: Any, classes: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, *, classes: Classes = None, topk: int = 5) -> CamResult:
        """Logits and maps for ``x [N, 3, H, W]`` (see the module docstring); runs without autograd graph kept."""
        return result_of(self, x, classes, topk)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def rescale_input(x: torch.Tensor, size: tuple[int, int], *, mode: str = "bilinear") -> torch.Tensor:
    """``x [N, 3, H, W]`` resampled to ``size = (h, w)`` (antialiased when shrinking; unchanged when equal).

    Views are resampled from the network input tensor, not decoded again from the file: the model's
    normalisation is affine, so resizing the normalised tensor equals normalising the resized image.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=mode in ("bilinear", "bicubic"))


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``round(H * scale), round(W * scale)``, at least 1 pixel each."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on ``model``'s parameters for a gradient method's backward passes, then restore
    every flag: gradients reach the activations (through an input that requires grad) and no parameter's
    ``.grad`` is ever written."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def probe_forward(net: nn.Module, size: tuple[int, int], modules: Any, record: Any) -> torch.Tensor:
    """One forward of ``zeros(1, 3, *size)`` through ``net``'s resolved trunk, in eval mode and without autograd,
    with the forward hook ``record(module, inputs, output)`` on each of ``modules``; returns the trunk features
    ``[1, K, h, w]``. The hooks are removed and every ``training`` flag is restored afterwards."""
    from camloc.resolve import resolve_head

    resolved = resolve_head(net)
    hooks = [m.register_forward_hook(record) for m in modules]
    try:
        with torch.no_grad(), kept_modes(net):
            net.eval()
            p = next(net.parameters())
            feats, _ = resolved.run(torch.zeros(1, 3, *size, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
    return feats


@contextlib.contextmanager
def kept_modes(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's ``training`` flag on exit (for libraries that call ``model.eval()``)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, t in modes:
            m.training = t
