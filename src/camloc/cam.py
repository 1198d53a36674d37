r"""Class activation maps: pure tensor functions.

For a network ending in conv features :math:`f_k(x, y)` (``features``: ``Tensor[N, K, h, w]``), global pooling
and a linear layer with weights :math:`w^c_k` (``weight``: ``Tensor[C, K]``) and bias :math:`b_c`, the class
activation map of class :math:`c` is (Zhou et al., CVPR 2016, eq. 2)

.. math:: M_c(x, y) = \sum_k w^c_k f_k(x, y)

with **no ReLU and no bias**. For global *average* pooling the identity
:math:`\operatorname{mean}_{x,y} M_c(x, y) + b_c = \mathrm{logit}_c` holds exactly; for global *max* pooling the
logit is :math:`\sum_k w^c_k \max_{x,y} f_k + b_c` instead (:func:`pool_logits` computes both).

Other head kinds (a ReLU-conv head, LayerNorm after pooling, scikit-learn heads) and the identity each keeps
are in :mod:`camloc.heads`; they build on these functions.

Conventions: maps are ``float`` tensors ``[N, m, h, w]`` where ``m`` indexes the requested classes of each image
in order; ``classes`` are ``int64``. Nothing here changes the inputs; everything is differentiable.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from camloc._checks import check_choice, check_number, check_tensor, fail

__all__ = [
    "class_activation_maps",
    "normalize_maps",
    "pool_logits",
    "topk_classes",
    "upsample_maps",
]


def _check_weight(features: torch.Tensor, weight: torch.Tensor) -> None:
    check_tensor("features", features, ndim=4, floating=True)
    check_tensor("weight", weight, ndim=2, floating=True)
    if weight.shape[1] != features.shape[1]:
        fail(
            "weight",
            f"of shape [C, K] with K = features.shape[1] = {features.shape[1]}",
            weight,
        )


def class_activation_maps(
    features: torch.Tensor,
    weight: torch.Tensor,
    classes: torch.Tensor | None = None,
    *,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Class activation maps :math:`M_c = \sum_k w^c_k f_k` for chosen classes.

    Args:
        features: ``Tensor[N, K, h, w]`` unpooled features.
        weight: ``Tensor[C, K]`` linear-layer weights.
        classes: which maps to compute:

            - ``None``: all ``C`` classes -> ``[N, C, h, w]``;
            - ``Tensor[m]`` (int): the same ``m`` classes for every image -> ``[N, m, h, w]``;
            - ``Tensor[N, m]`` (int): per-image classes (e.g. each image's top-k) -> ``[N, m, h, w]``.
        bias: optional ``Tensor[C]`` added to each map (``M_c + b_c``). Off by default, as in the paper.

    Returns:
        ``Tensor[N, m, h, w]`` raw maps (no normalisation, no ReLU), dtype of ``features``.
    """
    _check_weight(features, weight)
    num_classes = weight.shape[0]
    w = weight.to(features.dtype)
    if classes is None:
        maps = torch.einsum("ck,nkhw->nchw", w, features)
        sel_bias = None if bias is None else bias.view(1, -1, 1, 1)
    else:
        check_tensor("classes", classes, ndim=(1, 2))
        if classes.is_floating_point() or classes.dtype == torch.bool:
            fail("classes", "an integer tensor of class indices", classes)
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
            fail(
                "classes",
                f"class indices in [0, {num_classes})",
                f"values in [{int(classes.min())}, {int(classes.max())}]",
            )
        classes = classes.to(device=features.device, dtype=torch.long)
        if classes.ndim == 1:
            maps = torch.einsum("mk,nkhw->nmhw", w[classes], features)
            sel_bias = None if bias is None else bias[classes].view(1, -1, 1, 1)
        else:
            if classes.shape[0] != features.shape[0]:
                fail("classes", f"of shape [N, m] with N = {features.shape[0]}", classes)
            maps = torch.einsum("nmk,nkhw->nmhw", w[classes], features)
            sel_bias = None if bias is None else bias[classes].unsqueeze(-1).unsqueeze(-1)
    if sel_bias is not None:
        maps = maps + sel_bias.to(maps.dtype)
    return maps


def pool_logits(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    pool: Literal["avg", "max"] = "avg",
) -> torch.Tensor:
    """Logits of a pool -> linear head: ``pool(features) @ weight.T + bias`` -> ``Tensor[N, C]``.

    For ``pool="avg"`` this equals ``mean_xy(class_activation_maps(features, weight)) + bias`` exactly
    (up to floating-point summation order), without materialising any map.
    """
    _check_weight(features, weight)
    check_choice("pool", pool, ("avg", "max"))
    pooled = features.mean(dim=(2, 3)) if pool == "avg" else features.amax(dim=(2, 3))
    return F.linear(pooled, weight.to(pooled.dtype), None if bias is None else bias.to(pooled.dtype))


def topk_classes(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` classes per image: ``(probabilities [N, k], classes [N, k] int64)``, best first.

    Probabilities are the softmax of ``logits`` (``Tensor[N, C]``); ``k`` is capped at ``C``.
    """
    check_tensor("logits", logits, ndim=2, floating=True)
    check_number("k", k, low=1, integer=True)
    k = min(k, logits.shape[1])
    probs = logits.float().softmax(dim=1)
    values, indices = probs.topk(k, dim=1)
    return values, indices


def normalize_maps(
    maps: torch.Tensor,
    *,
    mode: Literal["max", "minmax"] = "max",
) -> torch.Tensor:
    """Normalise each map (over its last two dims) to ``[0, 1]``.

    - ``"max"`` (the CAM paper's rule): ``clamp(M / max M, 0, 1)``; maps whose max is ``<= 0`` become all zeros
      (no pixel carries positive class evidence).
    - ``"minmax"``: ``(M - min M) / (max M - min M)``; flat maps (max == min) become all zeros (as in
      wsolevaluation).

    NaN or infinite values raise :class:`camloc.errors.CamlocValueError`.

    Args:
        maps: ``Tensor[..., h, w]`` float.
    Returns:
        ``Tensor[..., h, w]`` float in ``[0, 1]``.
    """
    check_tensor("maps", maps, ndim=(2, 3, 4, 5), floating=True, finite=True)
    check_choice("mode", mode, ("max", "minmax"))
    flat = maps.flatten(-2)
    mx = flat.amax(dim=-1, keepdim=True).unsqueeze(-1)
    if mode == "max":
        pos = mx > 0
        out = torch.where(pos, maps / torch.where(pos, mx, torch.ones_like(mx)), torch.zeros_like(maps))
        return out.clamp(0.0, 1.0)
    mn = flat.amin(dim=-1, keepdim=True).unsqueeze(-1)
    rng = mx - mn
    ok = rng > 0
    out = torch.where(ok, (maps - mn) / torch.where(ok, rng, torch.ones_like(rng)), torch.zeros_like(maps))
    return out.clamp(0.0, 1.0)


def upsample_maps(
    maps: torch.Tensor,
    size: tuple[int, int],
    *,
    mode: Literal["bilinear", "bicubic", "nearest"] = "bilinear",
) -> torch.Tensor:
    """Resize maps ``[N, m, h, w]`` to ``[N, m, H, W]`` with ``size = (H, W)``.

    Pixel-centre aligned (``align_corners=False``), so a map covering the input image still covers it after
    resizing. ``bicubic`` may overshoot the input range; ``bilinear`` (default) does not.
    """
    check_tensor("maps", maps, ndim=4, floating=True)
    check_choice("mode", mode, ("bilinear", "bicubic", "nearest"))
    if len(size) != 2 or min(int(s) for s in size) < 1:
        fail("size", "a (height, width) pair of positive ints", size)
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    if mode == "nearest":
        return F.interpolate(maps, size=size, mode="nearest")
    return F.interpolate(maps, size=size, mode=mode, align_corners=False)
