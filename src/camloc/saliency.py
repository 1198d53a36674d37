"""Backprop saliency (Simonyan et al., 2014): the CAM paper's baseline for localization.

For class ``c`` the map is ``S_c(x, y) = max_channel |d logit_c / d image(channel, x, y)|`` at input resolution.
It needs one backward pass per requested class (CAM needs none).
"""

from __future__ import annotations

import torch
from torch import nn

from camloc._checks import check_tensor, fail

__all__ = ["backprop_saliency"]


def backprop_saliency(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient saliency maps for per-image classes.

    Args:
        model: classifier returning logits ``[N, C]``; used as it is (its parameters' gradients are untouched:
            only the input's gradient is computed).
        x: ``Tensor[N, 3, H, W]`` network input.
        classes: ``Tensor[N, m]`` int64 class indices per image.

    Returns:
        ``(logits [N, C], maps [N, m, H, W])`` with ``maps >= 0``.
    """
    check_tensor("x", x, ndim=4, floating=True)
    check_tensor("classes", classes, ndim=2)
    if classes.shape[0] != x.shape[0]:
        fail("classes", f"of shape [N, m] with N = {x.shape[0]}", classes)
    inp = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inp)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            fail("model", "a classifier returning logits [N, C]", type(logits).__name__, type_error=True)
        cls = classes.to(logits.device, torch.long)
        maps = []
        m = cls.shape[1]
        for j in range(m):
            sel = logits.gather(1, cls[:, j : j + 1]).sum()
            (g,) = torch.autograd.grad(sel, inp, retain_graph=j < m - 1)
            maps.append(g.abs().amax(dim=1))
    return logits.detach(), torch.stack(maps, dim=1)
