"""Finer maps from the same weights: a larger input (``hires``) or the last stride(s) turned into dilation
(``dilate``, as the paper's 14x14 GoogLeNet-GAP maps and DeepLab's output stride).

``dilate`` works on a deep copy of the model (the caller's model is never changed): one probe forward at the
model's input size records every convolution's input and output grid; the stride-2 convolutions that produce the
final feature grid get stride 1, and every convolution that runs on the final grid afterwards gets its dilation
doubled (with padding ``dilation * (k - 1) / 2``; timm's ``Conv2dSame`` pads itself). This is torchvision's
``replace_stride_with_dilation`` for ResNets (tested equal) and the same rule for EfficientNet / MobileNet blocks
(a strided depthwise conv, 1x1 projections after it). ``stages=2`` repeats it (4x finer grid). On an even-sized
input with symmetric zero padding the dilated network's map at even positions equals the original map; the logits
change (the pooling now averages 4x as many positions): ``camloc evaluate --method dilate`` measures the drift.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from camloc.errors import UnsupportedModelError
from camloc.methods.base import MapMethod, probe_forward, rescale_input, scaled_size
from camloc.methods.basic import build_base

__all__ = ["Hires", "build_dilate", "build_hires", "dilate_last_stages"]


class Hires(MapMethod):
    """The base producer on ``x`` enlarged by ``scale`` (bilinear, from the network input tensor); maps stay on the
    base method's (finer) grid. ``logits="scaled"``: the logits of the enlarged input; ``"input"``: those of ``x``
    itself (one more forward, classification as the plain model's)."""

    name = "hires"

    def __init__(self, base: Any, *, scale: float, logits: str = "scaled") -> None:
        self.base = base
        self.scale = float(scale)
        self.logits = logits

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        size = scaled_size((int(x.shape[2]), int(x.shape[3])), self.scale)
        state, logits = self.base.forward(rescale_input(x, size))
        if self.logits == "input":
            logits = self.base.forward(x)[1]
        return state, logits

    def maps(self, state: Any, classes: torch.Tensor) -> torch.Tensor:
        return self.base.maps(state, classes)


def build_hires(model: nn.Module, info: Any, *, scale: float, base: Any, logits: str) -> Hires:
    return Hires(build_base(base, model, info), scale=scale, logits=logits)


def _static_padding(conv: nn.Conv2d) -> None:
    if type(conv).__name__ == "Conv2dSame" or isinstance(conv.padding, str):
        return  # pads itself from stride / dilation at run time
    conv.padding = tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))  # type: ignore[assignment]


def _dilate_once(net: nn.Module, size: tuple[int, int]) -> None:
    grids: dict[nn.Module, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def record(mod: nn.Module, inp: Any, out: Any) -> None:
        grids.setdefault(mod, (tuple(inp[0].shape[-2:]), tuple(out.shape[-2:])))

    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d)]
    feats = probe_forward(net, size, convs, record)
    final = tuple(feats.shape[-2:])
    strided = [m for m, (i, o) in grids.items() if o == final and i != final]
    if not strided or any(not isinstance(m, nn.Conv2d) for m in strided):
        kinds = sorted({type(m).__name__ for m in strided}) or ["none"]
        raise UnsupportedModelError(
            f"`dilate` needs stride-2 convolutions producing the final {final[0]}x{final[1]} feature grid; "
            f"{type(net).__name__} reaches it through: {', '.join(kinds)}"
        )
    for m in strided:
        assert isinstance(m, nn.Conv2d)
        if tuple(m.stride) != (2, 2):
            raise UnsupportedModelError(f"`dilate` handles stride-2 convolutions; found stride {tuple(m.stride)}")
        m.stride = (1, 1)
        _static_padding(m)
    for m, (i, o) in grids.items():
        if i == final and o == final and isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1:
            m.dilation = tuple(2 * d for d in m.dilation)  # type: ignore[assignment]
            _static_padding(m)


def dilate_last_stages(model: nn.Module, *, stages: int = 1, size: tuple[int, int] = (224, 224)) -> nn.Module:
    """A deep copy of ``model`` whose last ``stages`` downsamplings are turned into dilation (module docstring).

    ``size`` is the probe input ``(H, W)`` (the model's input size). Raises
    :class:`~camloc.errors.UnsupportedModelError` where the last downsampling is not a stride-2 convolution.
    """
    net = copy.deepcopy(model)
    for _ in range(stages):
        _dilate_once(net, size)
    return net


def build_dilate(model: nn.Module, info: Any, *, stages: int, base: Any) -> Any:
    size = tuple(int(s) for s in info.preprocess.size)
    return build_base(base, dilate_last_stages(model, stages=stages, size=(size[0], size[1])), info)
