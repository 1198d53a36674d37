"""Geometry of image preprocessing, so ground-truth boxes and masks can be compared in one frame.

SIZES ARE ``(width, height)`` EVERYWHERE IN THIS MODULE (unlike torchvision's ``Resize((h, w))``).

Boxes are float ``(x0, y0, x1, y1)`` in continuous pixel coordinates (pixel (row i, column j) covers
``[j, j+1) x [i, i+1)``), so a resize from ``(w, h)`` to ``(W, H)`` multiplies x by ``W / w`` and y by ``H / h``
and a crop with top-left corner ``(left, top)`` subtracts it. An empty box (no pixel selected) is
``(0, 0, 0, 0)``. Masks are resampled with nearest neighbour at pixel CENTRES: output pixel ``j`` takes input
pixel ``floor((j + 0.5) * w / W)`` (PIL ``NEAREST``, torch ``"nearest-exact"``), so masks move with the
same continuous map as boxes.

The center-crop offset and the shorter-side resize size follow torchvision exactly
(``left = round((w - cw) / 2)`` with Python rounding; a crop larger than the image pads it on both sides,
``pad_left = (cw - w) // 2``; ``Resize(int)`` sets the shorter side and truncates the longer one).

Functions take numpy arrays (torch tensors are accepted and converted) and return numpy arrays: float boxes
keep their float dtype (other dtypes become float32), masks keep their dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from camloc.data._io import fail

__all__ = [
    "Geometry",
    "ImageTransform",
    "center_crop_boxes",
    "center_crop_mask",
    "center_crop_origin",
    "crop_boxes",
    "resize_boxes",
    "resize_mask",
    "resized_size",
]

Size = tuple[int, int]


# ---------------------------------------------------------------------------------------------- checks


def _size(name: str, value: Any) -> Size:
    """A ``(width, height)`` pair of positive integers (an int ``s`` means ``(s, s)`` only where stated)."""
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    fail(name, "a (width, height) pair of positive integers", value)
    raise AssertionError  # unreachable: fail raises


def _square_or_size(name: str, value: Any) -> Size:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value <= 0:
            fail(name, "a positive integer or a (width, height) pair", value)
        return int(value), int(value)
    return _size(name, value)


def _array(name: str, x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        fail(name, "an array", x, type_error=True)
        raise AssertionError from None  # unreachable


def _boxes(x: Any) -> tuple[np.ndarray, np.dtype]:
    """``(boxes as float64 [..., 4], output dtype)``."""
    arr = _array("boxes", x)
    if arr.ndim == 0 or arr.shape[-1] != 4:
        fail("boxes", "an array of shape [..., 4]", arr)
    if not (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating)):
        fail("boxes", "a real numeric array", f"dtype {arr.dtype}", type_error=True)
    out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float32)
    return arr.astype(np.float64), out_dtype


def _mask(x: Any) -> np.ndarray:
    arr = _array("mask", x)
    if arr.ndim < 2:
        fail("mask", "an array of shape [..., H, W]", arr)
    return arr


def _canonical_empty(boxes: np.ndarray) -> np.ndarray:
    """Set boxes with zero area to ``(0, 0, 0, 0)``."""
    empty = (boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])
    boxes[empty] = 0.0
    return boxes


# ----------------------------------------------------------------------------------------------- boxes


def resize_boxes(boxes: Any, from_size: Size, to_size: Size) -> np.ndarray:
    """Boxes ``[..., 4]`` of an image of size ``from_size`` expressed in the same image resized to ``to_size``.

    Pure scaling: x by ``W / w``, y by ``H / h`` (sizes ``(width, height)``); nothing is clipped.
    """
    arr, dtype = _boxes(boxes)
    w, h = _size("from_size", from_size)
    W, H = _size("to_size", to_size)
    scale = np.array([W / w, H / h, W / w, H / h])
    return (arr * scale).astype(dtype)


def crop_boxes(boxes: Any, origin: tuple[int, int], crop_size: Size) -> np.ndarray:
    """Boxes ``[..., 4]`` in the frame of a crop whose top-left corner is ``origin = (left, top)``.

    Shifted by ``-origin``, clipped to ``[0, cw] x [0, ch]``; boxes left with no area become ``(0, 0, 0, 0)``.
    ``origin`` may be negative (a crop that pads the image).
    """
    arr, dtype = _boxes(boxes)
    if not (
        isinstance(origin, (tuple, list))
        and len(origin) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in origin)
    ):
        fail("origin", "a (left, top) pair of integers", origin)
    cw, ch = _size("crop_size", crop_size)
    return _crop(arr, (int(origin[0]), int(origin[1])), (cw, ch)).astype(dtype)


def _crop(arr: np.ndarray, origin: tuple[float, float], crop: Size) -> np.ndarray:
    left, top = origin
    out = arr - np.array([left, top, left, top], dtype=np.float64)
    out[..., 0::2] = np.clip(out[..., 0::2], 0.0, crop[0])
    out[..., 1::2] = np.clip(out[..., 1::2], 0.0, crop[1])
    return _canonical_empty(out)


def center_crop_origin(image_size: Size, crop_size: Size) -> tuple[int, int]:
    """``(left, top)`` of torchvision's ``CenterCrop(crop)`` in an image of ``image_size`` (both ``(w, h)``).

    Negative when the crop is larger than the image (torchvision pads ``(crop - size) // 2`` on the left/top).
    """
    w, h = _size("image_size", image_size)
    cw, ch = _size("crop_size", crop_size)
    return _center_offset(w, cw), _center_offset(h, ch)


def _center_offset(size: int, crop: int) -> int:
    if crop > size:
        return -((crop - size) // 2)
    return round((size - crop) / 2.0)  # Python rounding (half to even), as torchvision


def center_crop_boxes(boxes: Any, image_size: Size, crop_size: Size) -> np.ndarray:
    """Boxes ``[..., 4]`` of an image of ``image_size`` in the frame of its center crop of ``crop_size``.

    Clipped to the crop; boxes that fall outside it become ``(0, 0, 0, 0)``.
    """
    cw, ch = _size("crop_size", crop_size)
    return crop_boxes(boxes, center_crop_origin(image_size, (cw, ch)), (cw, ch))


# ----------------------------------------------------------------------------------------------- masks


def _sample(
    mask: np.ndarray, out_size: Size, scale: tuple[float, float], offset: tuple[float, float], fill: Any
) -> np.ndarray:
    """Nearest resampling: output pixel (u, v) takes input pixel floor(((u + 0.5) + offset) * scale)."""
    h, w = mask.shape[-2:]
    ow, oh = out_size
    xs = np.floor((np.arange(ow) + 0.5 + offset[0]) * scale[0]).astype(np.int64)
    ys = np.floor((np.arange(oh) + 0.5 + offset[1]) * scale[1]).astype(np.int64)
    vx, vy = (xs >= 0) & (xs < w), (ys >= 0) & (ys < h)
    out = mask[..., np.clip(ys, 0, h - 1)[:, None], np.clip(xs, 0, w - 1)[None, :]]
    if not (vx.all() and vy.all()):
        out = out.copy()
        out[..., ~(vy[:, None] & vx[None, :])] = fill
    return out


def resize_mask(mask: Any, to_size: Size) -> np.ndarray:
    """Nearest-neighbour resize (pixel centres) of a mask ``[..., H, W]`` to ``to_size = (W', H')``."""
    arr = _mask(mask)
    W, H = _size("to_size", to_size)
    h, w = arr.shape[-2:]
    return _sample(arr, (W, H), (w / W, h / H), (0.0, 0.0), 0)


def center_crop_mask(mask: Any, crop_size: Size, *, fill: Any = 0) -> np.ndarray:
    """torchvision-style center crop of a mask ``[..., H, W]`` to ``crop_size`` (padding with ``fill``)."""
    arr = _mask(mask)
    cw, ch = _size("crop_size", crop_size)
    left, top = center_crop_origin((arr.shape[-1], arr.shape[-2]), (cw, ch))
    return _sample(arr, (cw, ch), (1.0, 1.0), (float(left), float(top)), fill)


# -------------------------------------------------------------------------------------------- geometry


def resized_size(image_size: Size, resize: int | Size | None) -> Size:
    """Size ``(w, h)`` after a resize: None keeps it, ``(W, H)`` is exact, an int sets the SHORTER side.

    The int case matches torchvision ``Resize(int)``: the longer side becomes ``int(s * long / short)``.
    """
    w, h = _size("image_size", image_size)
    if resize is None:
        return w, h
    if isinstance(resize, (int, np.integer)) and not isinstance(resize, bool):
        if resize <= 0:
            fail("resize", "None, a positive integer or a (width, height) pair", resize)
        s = int(resize)
        if w <= h:
            return s, int(s * h / w)
        return int(s * w / h), s
    return _size("resize", resize)


@dataclass(frozen=True)
class Geometry:
    """The exact map from one image to the network input: resize to ``resized_size``, then crop.

    Attributes (sizes ``(width, height)``):
        image_size: the original image size.
        resized_size: size after the resize step.
        crop_origin: ``(left, top)`` of the crop in the resized image (negative: the crop pads).
        crop_size: the output size.

    An original pixel coordinate ``x`` maps to ``x * sx - left`` with ``sx = resized_w / image_w``.
    """

    image_size: Size
    resized_size: Size
    crop_origin: tuple[int, int]
    crop_size: Size

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _size("image_size", self.image_size))
        object.__setattr__(self, "resized_size", _size("resized_size", self.resized_size))
        object.__setattr__(self, "crop_size", _size("crop_size", self.crop_size))
        o = self.crop_origin
        if not (isinstance(o, (tuple, list)) and len(o) == 2 and all(isinstance(v, (int, np.integer)) for v in o)):
            fail("crop_origin", "a (left, top) pair of integers", o)
        object.__setattr__(self, "crop_origin", (int(o[0]), int(o[1])))

    @property
    def output_size(self) -> Size:
        """``(width, height)`` of the transformed image (= ``crop_size``)."""
        return self.crop_size

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy)``: resized size over original size."""
        return self.resized_size[0] / self.image_size[0], self.resized_size[1] / self.image_size[1]

    def forward_boxes(self, boxes: Any) -> np.ndarray:
        """Original-pixel boxes ``[..., 4]`` -> output frame: scaled, shifted, clipped; emptied ones -> 0."""
        arr, dtype = _boxes(boxes)
        sx, sy = self.scale
        scaled = arr * np.array([sx, sy, sx, sy])
        return _crop(scaled, self.crop_origin, self.crop_size).astype(dtype)

    def inverse_boxes(self, boxes: Any) -> np.ndarray:
        """Output-frame boxes ``[..., 4]`` -> original pixels, clipped to the image; empty boxes stay empty."""
        arr, dtype = _boxes(boxes)
        empty = (arr[..., 2] <= arr[..., 0]) | (arr[..., 3] <= arr[..., 1])
        sx, sy = self.scale
        left, top = self.crop_origin
        out = (arr + np.array([left, top, left, top])) / np.array([sx, sy, sx, sy])
        w, h = self.image_size
        out[..., 0::2] = np.clip(out[..., 0::2], 0.0, w)
        out[..., 1::2] = np.clip(out[..., 1::2], 0.0, h)
        out[empty] = 0.0
        return _canonical_empty(out).astype(dtype)

    def forward_mask(self, mask: Any, *, fill: Any = 0) -> np.ndarray:
        """Original mask ``[..., h, w]`` -> output frame ``[..., ch, cw]`` (nearest; padding gets ``fill``)."""
        arr = self._mask_of(mask, self.image_size, "image_size")
        sx, sy = self.scale
        left, top = self.crop_origin
        return _sample(arr, self.crop_size, (1.0 / sx, 1.0 / sy), (float(left), float(top)), fill)

    def inverse_mask(self, mask: Any, *, fill: Any = 0) -> np.ndarray:
        """Output-frame mask ``[..., ch, cw]`` -> original pixels ``[..., h, w]`` (nearest at pixel centres).

        Original pixels outside the crop get ``fill``.
        """
        arr = self._mask_of(mask, self.crop_size, "crop_size")
        sx, sy = self.scale
        left, top = self.crop_origin
        w, h = self.image_size
        xs = np.floor((np.arange(w) + 0.5) * sx - left).astype(np.int64)
        ys = np.floor((np.arange(h) + 0.5) * sy - top).astype(np.int64)
        ch, cw = arr.shape[-2:]
        vx, vy = (xs >= 0) & (xs < cw), (ys >= 0) & (ys < ch)
        out = arr[..., np.clip(ys, 0, ch - 1)[:, None], np.clip(xs, 0, cw - 1)[None, :]]
        if not (vx.all() and vy.all()):
            out = out.copy()
            out[..., ~(vy[:, None] & vx[None, :])] = fill
        return out

    @staticmethod
    def _mask_of(mask: Any, size: Size, what: str) -> np.ndarray:
        arr = _mask(mask)
        if (arr.shape[-1], arr.shape[-2]) != size:
            fail("mask", f"an array [..., {size[1]}, {size[0]}] matching {what} {size} (width, height)", arr)
        return arr


@dataclass(frozen=True)
class ImageTransform:
    """A size-independent description of the preprocessing geometry: optional resize, then optional center crop.

    Attributes:
        resize: None (keep), an int (set the SHORTER side, torchvision ``Resize(int)``) or ``(W, H)`` (exact).
        crop: None (no crop), an int (square) or ``(W, H)``: torchvision ``CenterCrop`` of the resized image.

    Examples: ``ImageTransform(resize=256, crop=224)`` (ImageNet evaluation),
    ``ImageTransform(resize=(224, 224))`` (wsolevaluation test transform).
    """

    resize: int | Size | None = None
    crop: int | Size | None = None

    def __post_init__(self) -> None:
        if self.resize is not None:
            if isinstance(self.resize, (int, np.integer)) and not isinstance(self.resize, bool):
                if self.resize <= 0:
                    fail("resize", "None, a positive integer or a (width, height) pair", self.resize)
                object.__setattr__(self, "resize", int(self.resize))
            else:
                object.__setattr__(self, "resize", _size("resize", self.resize))
        if self.crop is not None:
            object.__setattr__(self, "crop", _square_or_size("crop", self.crop))

    def geometry(self, image_size: Size) -> Geometry:
        """The :class:`Geometry` of this transform applied to an image of ``image_size = (w, h)``."""
        size = _size("image_size", image_size)
        resized = resized_size(size, self.resize)
        crop = resized if self.crop is None else _square_or_size("crop", self.crop)
        return Geometry(size, resized, center_crop_origin(resized, crop), crop)

    def output_size(self, image_size: Size) -> Size:
        """``(width, height)`` of the transformed image."""
        return self.geometry(image_size).output_size

    def forward_boxes(self, boxes: Any, image_size: Size) -> np.ndarray:
        """Shortcut for ``self.geometry(image_size).forward_boxes(boxes)``."""
        return self.geometry(image_size).forward_boxes(boxes)

    def inverse_boxes(self, boxes: Any, image_size: Size) -> np.ndarray:
        """Shortcut for ``self.geometry(image_size).inverse_boxes(boxes)``."""
        return self.geometry(image_size).inverse_boxes(boxes)
