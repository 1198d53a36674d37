"""From class activation maps to masks and boxes (the CAM paper's rule and variants).

**Box convention**: float ``(x0, y0, x1, y1)`` in continuous pixel coordinates, no ``+1``, ``(0, 0, 0, 0)`` for no
localization; written down once, with every map between an image's frames, in :mod:`camloc.geometry`.

**The paper's rule** (Zhou et al. 2016, sec. 4.1; their code divides the upsampled map by its max): normalise each
map by its maximum (:func:`camloc.cam.normalize_maps` ``mode="max"``), keep pixels whose value is ``>= threshold``
(0.2), take the largest connected component (8-connected by default; ties go to the component met first in
raster order) and box it. Flat maps with a positive value keep every pixel (the whole image); maps whose maximum is
``<= 0`` keep none; NaN maps are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch

from camloc._checks import check_choice, check_number, check_tensor, fail
from camloc.cam import normalize_maps, upsample_maps

__all__ = [
    "Localization",
    "component_boxes",
    "largest_component_box",
    "localize",
    "scale_boxes",
    "threshold_maps",
]

Normalize = Literal["max", "minmax"]


def threshold_maps(
    maps: torch.Tensor,
    threshold: float = 0.2,
    *,
    normalize: Normalize | None = "max",
) -> torch.Tensor:
    """Binary masks ``normalize(maps) >= threshold`` (``Tensor[..., h, w]`` bool).

    With ``normalize=None`` the maps are used as given (already in ``[0, 1]``).
    """
    check_number("threshold", threshold, low=0.0, high=1.0)
    check_tensor("maps", maps, floating=True, finite=True)
    return _threshold(maps, threshold, normalize)


def _threshold(maps: torch.Tensor, threshold: float, normalize: Normalize | None) -> torch.Tensor:
    # Unchecked core of threshold_maps. For "max" it compares maps / max >= t directly: the same division as
    # normalize_maps, without its temporaries (clamping to [0, 1] cannot change a comparison with t in (0, 1]).
    if normalize == "max":
        mx = maps.flatten(-2).amax(-1)[..., None, None]
        pos = mx > 0
        if threshold == 0:  # "keep >= 0% of the max": every pixel of a map with positive evidence
            return pos.expand_as(maps).clone()
        return (maps / torch.where(pos, mx, torch.ones_like(mx)) >= threshold) & pos
    m = maps if normalize is None else normalize_maps(maps, mode=normalize)
    return m >= threshold


def _as_uint8_mask(mask: np.ndarray | torch.Tensor, name: str = "mask") -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        fail(name, "a 2-D boolean mask [h, w]", mask)
    return np.ascontiguousarray(mask.astype(np.uint8, copy=False))


def _components(mask: np.ndarray | torch.Tensor, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    check_choice("connectivity", connectivity, (4, 8))
    boxes, areas, _ = _label_components(_as_uint8_mask(mask), connectivity)
    return boxes, areas


def _label_components(m: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Components of a uint8 mask ``[h, w]``: boxes ``[k, 4]`` float32, pixel areas ``[k]`` int64 (label order:
    raster order of each component's first pixel) and the label image int32 ``[h, w]`` (0 = background, component
    ``i`` has label ``i + 1``; ``None`` when the mask is empty). Unchecked: ``m`` is C-contiguous uint8."""
    if m.size == 0 or not m.any():
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), None
    _, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=connectivity, ltype=cv2.CV_32S)
    st = stats[1:]  # label 0 is the background
    boxes = np.stack(
        [st[:, 0], st[:, 1], st[:, 0] + st[:, 2], st[:, 1] + st[:, 3]],
        axis=1,
    ).astype(np.float32)
    return boxes, st[:, 4].astype(np.int64), labels


def largest_component_box(mask: np.ndarray | torch.Tensor, *, connectivity: int = 8) -> np.ndarray:
    """Box ``[4]`` (float32, xyxy, mask pixels) of the largest connected component of ``mask [h, w]``.

    Ties in area go to the component whose first pixel comes first in raster order. Empty mask -> ``(0,0,0,0)``.
    """
    check_choice("connectivity", connectivity, (4, 8))
    return _largest_box(_as_uint8_mask(mask), connectivity)


def _largest_box(m: np.ndarray, connectivity: int) -> np.ndarray:
    if m.size == 0:
        return np.zeros(4, np.float32)
    if connectivity == 8:
        # Fast path: RETR_CCOMP lists one top-level contour per 8-connected component (components inside holes
        # included) at a fraction of the cost of labelling; with a single component its bounding rect is the box.
        contours, hier = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return np.zeros(4, np.float32)
        top = [c for c, h in zip(contours, hier[0]) if h[3] < 0]
        if len(top) == 1:
            x, y, w, h = cv2.boundingRect(top[0])
            return np.array([x, y, x + w, y + h], np.float32)
    boxes, areas = _components(m, connectivity)
    if len(areas) == 0:
        return np.zeros(4, np.float32)
    return boxes[int(np.argmax(areas))]


def component_boxes(mask: np.ndarray | torch.Tensor, *, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[k, 4]`` and pixel areas ``[k]`` of every connected component, largest first (stable)."""
    boxes, areas = _components(mask, connectivity)
    order = np.argsort(-areas, kind="stable")
    return boxes[order], areas[order]


def scale_boxes(
    boxes: torch.Tensor | np.ndarray,
    from_size: tuple[int, int],
    to_size: tuple[int, int],
) -> torch.Tensor:
    """Map boxes ``[..., 4]`` from an image of ``from_size = (w, h)`` to one of ``to_size = (W, H)``.

    ``x * W / w``, ``y * H / h`` (:func:`camloc.geometry.resize_boxes`); returns float32 on the input's device.
    """
    from camloc.geometry import resize_boxes

    device = boxes.device if isinstance(boxes, torch.Tensor) else torch.device("cpu")
    out = resize_boxes(np.asarray(torch.as_tensor(boxes, dtype=torch.float32).cpu()), from_size, to_size)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(device)


@dataclass(frozen=True)
class Localization:
    """Boxes (and optionally masks) for ``N`` images x ``m`` classes.

    Attributes:
        boxes: ``Tensor[N, m, 4]`` float32 xyxy in each image's target frame (``image_sizes``; by default the
            working frame). ``(0, 0, 0, 0)`` means no localization.
        masks: ``Tensor[N, m, H, W]`` bool at the working resolution (``None`` unless asked for).
        all_boxes: with ``mode="all"``: ``all_boxes[n][j]`` is ``Tensor[k, 4]`` of every component (largest first)
            in the target frame; ``None`` otherwise.
        working_size: ``(H, W)`` of the maps that were thresholded.
    """

    boxes: torch.Tensor
    masks: torch.Tensor | None
    all_boxes: list[list[torch.Tensor]] | None
    working_size: tuple[int, int]


def localize(
    maps: torch.Tensor,
    *,
    threshold: float = 0.2,
    normalize: Normalize | None = "max",
    size: tuple[int, int] | None = None,
    image_sizes: list[tuple[int, int]] | tuple[int, int] | None = None,
    connectivity: int = 8,
    mode: Literal["largest", "all"] = "largest",
    return_masks: bool = False,
) -> Localization:
    """The paper's localization rule on a batch of maps.

    Args:
        maps: ``Tensor[N, m, h, w]`` raw (or already normalised, with ``normalize=None``) class activation maps.
        threshold: keep pixels with normalised value ``>= threshold`` (paper: 0.2).
        normalize: ``"max"`` (paper), ``"minmax"``, or ``None`` (maps already in ``[0, 1]``).
        size: working resolution ``(H, W)``: maps are upsampled (bilinear) to it before thresholding; default:
            the maps' own size. Use the network input size to follow the paper (upsample to the image).
        image_sizes: per-image target size ``(width, height)`` (one pair for all, or a list of ``N``), e.g. the
            original photo sizes when the whole photo was resized to the input: boxes are scaled to it.
        connectivity: 4 or 8.
        mode: ``"largest"`` component (paper) or ``"all"`` (also fills ``all_boxes``).
        return_masks: also return the thresholded masks at the working resolution.
    """
    check_tensor("maps", maps, ndim=4, floating=True, finite=True)
    check_choice("mode", mode, ("largest", "all"))
    check_choice("connectivity", connectivity, (4, 8))
    if normalize is not None:
        check_choice("normalize", normalize, ("max", "minmax"))
    n, m = maps.shape[:2]
    maps = maps.detach().float()
    if size is not None:
        maps = upsample_maps(maps, size)
    hh, ww = int(maps.shape[2]), int(maps.shape[3])
    check_number("threshold", threshold, low=0.0, high=1.0)
    masks = _threshold(maps, threshold, normalize)  # maps were checked finite; upsampling keeps them finite
    if image_sizes is None:
        targets = [(ww, hh)] * n
    elif isinstance(image_sizes, tuple) and len(image_sizes) == 2 and all(isinstance(v, int) for v in image_sizes):
        targets = [image_sizes] * n  # type: ignore[list-item]
    else:
        targets = [(int(s[0]), int(s[1])) for s in image_sizes]  # type: ignore[index]
        if len(targets) != n:
            fail("image_sizes", f"{n} (width, height) pairs, one per image", f"{len(targets)} pairs")
    masks_np = masks.cpu().numpy().astype(np.uint8)
    boxes = np.zeros((n, m, 4), np.float32)
    all_boxes: list[list[torch.Tensor]] | None = [] if mode == "all" else None
    for i in range(n):
        sx, sy = targets[i][0] / ww, targets[i][1] / hh
        scale = np.array([sx, sy, sx, sy], np.float32)
        row: list[torch.Tensor] = []
        for j in range(m):
            if all_boxes is None:
                boxes[i, j] = _largest_box(masks_np[i, j], connectivity) * scale
                continue
            cb, ca = _components(masks_np[i, j], connectivity)
            if len(ca):
                boxes[i, j] = cb[int(np.argmax(ca))] * scale
            order = np.argsort(-ca, kind="stable")
            row.append(torch.from_numpy(cb[order] * scale))
        if all_boxes is not None:
            all_boxes.append(row)
    return Localization(
        boxes=torch.from_numpy(boxes),
        masks=masks.cpu() if return_masks else None,
        all_boxes=all_boxes,
        working_size=(hh, ww),
    )
