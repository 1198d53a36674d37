"""The one place for image geometry: the box convention and the maps between an image's frames.

Box convention (used everywhere in camloc)
------------------------------------------
A box is float ``(x0, y0, x1, y1)`` ("xyxy") in continuous pixel coordinates of a named frame: pixel (row ``i``,
column ``j``) covers ``[j, j+1) x [i, i+1)``, so a box over pixel columns ``c0..c1`` and rows ``r0..r1``
(inclusive) is ``(c0, r0, c1 + 1, r1 + 1)``; width is ``x1 - x0`` and area ``width * height`` (no ``+1``).
A resize from ``(w, h)`` to ``(W, H)`` multiplies x by ``W / w`` and y by ``H / h``; a crop with top-left corner
``(left, top)`` subtracts it. No localization (an empty mask) is the box ``(0, 0, 0, 0)``, area 0.
(The ``"wsolevaluation"`` protocol compares boxes in that project's "+1" convention instead, see
:mod:`camloc.sweep`; the geometry below is the same for both.)

SIZES ARE ``(width, height)`` EVERYWHERE IN THIS MODULE (unlike torchvision's ``Resize((h, w))``).

Frames
------
* **stored**: the pixels as the file stores them, decoded without the EXIF orientation. Annotations of the
  common data sets (ILSVRC, PASCAL VOC, CUB, wsolevaluation, camloc's CSV) and their mask files are in this
  frame: their tools read the stored pixels.
* **original**: the image as a viewer shows it, i.e. the stored pixels with the EXIF orientation applied
  (:data:`ORIENTATIONS`). camloc reports boxes in this frame.
* **working**: the decoded image, possibly reduced at decode time (JPEG draft mode divides each side by 2, 4
  or 8 in the DCT); taken as a uniform scaling of the original frame (``working / original`` per axis; the last
  reduced pixel of a side not divisible by the factor covers less, so this is exact to within one working
  pixel at the far edge).
* **network**: the network input: the working image resized once to ``resized_size`` and centre-cropped
  (torchvision ``CenterCrop`` semantics, padding when the crop is larger) to ``crop_size``.

Masks move with the same continuous map as boxes and are resampled with nearest neighbour at pixel
CENTRES (``sampling="center"``: output pixel ``j`` takes input pixel ``floor((j + 0.5) * w / W)``, as PIL
``NEAREST`` and torch ``"nearest-exact"``), or at pixel corners (``sampling="corner"``: ``floor(j * w / W)``, as
OpenCV ``INTER_NEAREST``, which wsolevaluation uses). The EXIF orientation is a pixel permutation and moves
masks exactly.

The centre-crop offset and the shorter-side resize follow torchvision exactly (``left = round((w - cw) / 2)``
with Python rounding; a crop larger than the image pads ``(cw - w) // 2`` on the left; ``Resize(int)`` sets the
shorter side and truncates the longer one).

Functions take numpy arrays (torch tensors are accepted and converted) and return numpy arrays: float boxes
keep their float dtype (other dtypes become float32), masks keep their dtype. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from camloc._checks import fail  # torch-free

__all__ = [
    "FRAMES",
    "ORIENTATIONS",
    "Geometry",
    "ImageTransform",
    "center_crop_boxes",
    "center_crop_mask",
    "center_crop_origin",
    "crop_boxes",
    "orient_boxes",
    "orient_mask",
    "oriented_size",
    "resize_boxes",
    "resize_mask",
    "resized_size",
]

Size = tuple[int, int]
Frame = Literal["stored", "original", "working", "network"]
Sampling = Literal["center", "corner"]

#: The frames :meth:`Geometry.map_boxes` / :meth:`Geometry.map_mask` convert between.
FRAMES: tuple[str, ...] = ("stored", "original", "working", "network")

#: EXIF orientation value -> the transpose that turns stored pixels into the original (viewed) image, as
#: ``PIL.ImageOps.exif_transpose`` applies it (1: none).
ORIENTATIONS: dict[int, str] = {
    1: "none",
    2: "flip left-right",
    3: "rotate 180",
    4: "flip top-bottom",
    5: "transpose",
    6: "rotate 90 clockwise",
    7: "transverse",
    8: "rotate 90 counter-clockwise",
}
_INVERSE_ORIENTATION = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}
_SWAPS = frozenset({5, 6, 7, 8})


# ---------------------------------------------------------------------------------------------- checks


def _size(name: str, value: Any) -> Size:
    """A ``(width, height)`` pair of positive integers."""
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    fail(name, "a (width, height) pair of positive integers", value)
    raise AssertionError  # unreachable: _fail raises


def _square_or_size(name: str, value: Any) -> Size:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value <= 0:
            fail(name, "a positive integer or a (width, height) pair", value)
        return int(value), int(value)
    return _size(name, value)


def _int_pair(name: str, value: Any, what: str) -> tuple[int, int]:
    if not (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        fail(name, what, value)
    return int(value[0]), int(value[1])


def _orientation(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) not in ORIENTATIONS:
        fail("orientation", "an EXIF orientation value 1..8", value)
    return int(value)


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


def _is_empty(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])


def _canonical_empty(boxes: np.ndarray) -> np.ndarray:
    """Set boxes with zero area to ``(0, 0, 0, 0)``."""
    boxes[_is_empty(boxes)] = 0.0
    return boxes


# ----------------------------------------------------------------------------------------- orientation


def oriented_size(size: Size, orientation: int) -> Size:
    """Size ``(w, h)`` after the EXIF ``orientation`` (5-8 swap width and height)."""
    w, h = _size("size", size)
    return (h, w) if _orientation(orientation) in _SWAPS else (w, h)


def _orient_points(x: np.ndarray, y: np.ndarray, w: int, h: int, o: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous points of a stored ``w x h`` image -> the oriented image (see :data:`ORIENTATIONS`)."""
    if o == 1:
        return x, y
    if o == 2:
        return w - x, y
    if o == 3:
        return w - x, h - y
    if o == 4:
        return x, h - y
    if o == 5:
        return y, x
    if o == 6:
        return h - y, x
    if o == 7:
        return h - y, w - x
    return y, w - x  # 8


def orient_boxes(boxes: Any, size: Size, orientation: int, *, inverse: bool = False) -> np.ndarray:
    """Boxes ``[..., 4]`` of a stored image of ``size = (w, h)`` -> the same boxes after the EXIF ``orientation``.

    ``inverse=True`` maps boxes of the ORIENTED image (whose size is ``size``) back to the stored pixels.
    The no-localization box ``(0, 0, 0, 0)`` stays ``(0, 0, 0, 0)``; other degenerate boxes are mapped.
    """
    arr, dtype = _boxes(boxes)
    w, h = _size("size", size)
    o = _orientation(orientation)
    if inverse:
        o = _INVERSE_ORIENTATION[o]
    empty = (arr == 0).all(axis=-1)
    xa, ya = _orient_points(arr[..., 0], arr[..., 1], w, h, o)
    xb, yb = _orient_points(arr[..., 2], arr[..., 3], w, h, o)
    out = np.stack([np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb)], axis=-1)
    out[empty] = 0.0
    return out.astype(dtype)


def orient_mask(mask: Any, orientation: int, *, inverse: bool = False) -> np.ndarray:
    """A stored-frame mask ``[..., h, w]`` with the EXIF ``orientation`` applied (exactly as PIL does to pixels).

    ``inverse=True`` undoes it (original frame -> stored pixels).
    """
    a = _mask(mask)
    o = _orientation(orientation)
    if inverse:
        o = _INVERSE_ORIENTATION[o]
    if o == 1:
        return a
    if o == 2:
        return a[..., :, ::-1]
    if o == 3:
        return a[..., ::-1, ::-1]
    if o == 4:
        return a[..., ::-1, :]
    t = np.swapaxes(a, -1, -2)
    if o == 5:
        return t
    if o == 6:
        return t[..., :, ::-1]
    if o == 7:
        return t[..., ::-1, ::-1]
    return t[..., ::-1, :]  # 8


# ----------------------------------------------------------------------------------------------- boxes


def resize_boxes(boxes: Any, from_size: Size, to_size: Size) -> np.ndarray:
    """Boxes ``[..., 4]`` of an image of size ``from_size`` expressed in the same image resized to ``to_size``.

    Pure scaling: x by ``W / w``, y by ``H / h`` (computed as ``x * W / w``); nothing is clipped.
    """
    arr, dtype = _boxes(boxes)
    w, h = _size("from_size", from_size)
    W, H = _size("to_size", to_size)
    return (arr * np.array([W, H, W, H], np.float64) / np.array([w, h, w, h], np.float64)).astype(dtype)


def crop_boxes(boxes: Any, origin: tuple[int, int], crop_size: Size) -> np.ndarray:
    """Boxes ``[..., 4]`` in the frame of a crop whose top-left corner is ``origin = (left, top)``.

    Shifted by ``-origin``, clipped to ``[0, cw] x [0, ch]``; boxes left with no area become ``(0, 0, 0, 0)``.
    ``origin`` may be negative (a crop that pads the image).
    """
    arr, dtype = _boxes(boxes)
    left, top = _int_pair("origin", origin, "a (left, top) pair of integers")
    cw, ch = _size("crop_size", crop_size)
    return _crop(arr, (left, top), (cw, ch)).astype(dtype)


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


def _indices(n_out: int, num: float, den: float, b_out: float, b_in: float, n_src: int, s: Sampling) -> np.ndarray:
    """Source index of each output pixel ``u``: ``floor((u + b_out) * num / den - b_in)`` (``u`` at the pixel
    centre for ``"center"`` sampling, at its corner for ``"corner"``, then clamped to the last pixel as OpenCV)."""
    u = np.arange(n_out, dtype=np.float64) + (0.5 if s == "center" else 0.0)
    idx = np.floor((u + b_out) * num / den - b_in).astype(np.int64)
    if s == "corner":
        idx = np.minimum(idx, n_src - 1)
    return idx


def _gather(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, fill: Any) -> np.ndarray:
    h, w = mask.shape[-2:]
    vx, vy = (xs >= 0) & (xs < w), (ys >= 0) & (ys < h)
    out = mask[..., np.clip(ys, 0, h - 1)[:, None], np.clip(xs, 0, w - 1)[None, :]]
    if not (vx.all() and vy.all()):
        out = out.copy()
        out[..., ~(vy[:, None] & vx[None, :])] = fill
    return out


def _check_sampling(sampling: Any) -> Sampling:
    if sampling not in ("center", "corner"):
        fail("sampling", "'center' or 'corner'", sampling)
    return sampling  # type: ignore[no-any-return]


def resize_mask(mask: Any, to_size: Size, *, sampling: Sampling = "center") -> np.ndarray:
    """Nearest-neighbour resize of a mask ``[..., H, W]`` to ``to_size = (W', H')`` (see module docstring)."""
    arr = _mask(mask)
    W, H = _size("to_size", to_size)
    s = _check_sampling(sampling)
    h, w = arr.shape[-2:]
    xs = _indices(W, w, W, 0.0, 0.0, w, s)
    ys = _indices(H, h, H, 0.0, 0.0, h, s)
    return _gather(arr, xs, ys, 0)


def center_crop_mask(mask: Any, crop_size: Size, *, fill: Any = 0) -> np.ndarray:
    """torchvision-style center crop of a mask ``[..., H, W]`` to ``crop_size`` (padding with ``fill``)."""
    arr = _mask(mask)
    cw, ch = _size("crop_size", crop_size)
    left, top = center_crop_origin((arr.shape[-1], arr.shape[-2]), (cw, ch))
    xs = np.arange(cw, dtype=np.int64) + left
    ys = np.arange(ch, dtype=np.int64) + top
    return _gather(arr, xs, ys, fill)


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
    """The exact maps between one image's frames (module docstring): stored -> original -> working -> network.

    Attributes (sizes ``(width, height)``):
        image_size: the original frame (after the EXIF orientation).
        resized_size: size after the one resize step (computed from the working image, as torchvision would).
        crop_origin: ``(left, top)`` of the crop in the resized image (negative: the crop pads).
        crop_size: the network input size.
        working_size: the decoded image's size (None: the original size, nothing reduced at decode).
        orientation: EXIF orientation that turned the stored pixels into the original frame (1: none).

    An original pixel coordinate ``x`` maps to ``x * resized_w / image_w - left`` in the network frame and to
    ``x * working_w / image_w`` in the working frame.
    """

    image_size: Size
    resized_size: Size
    crop_origin: tuple[int, int]
    crop_size: Size
    working_size: Size | None = None
    orientation: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _size("image_size", self.image_size))
        object.__setattr__(self, "resized_size", _size("resized_size", self.resized_size))
        object.__setattr__(self, "crop_size", _size("crop_size", self.crop_size))
        origin = _int_pair("crop_origin", self.crop_origin, "a (left, top) pair of integers")
        object.__setattr__(self, "crop_origin", origin)
        if self.working_size is not None:
            object.__setattr__(self, "working_size", _size("working_size", self.working_size))
        object.__setattr__(self, "orientation", _orientation(self.orientation))

    @property
    def output_size(self) -> Size:
        """``(width, height)`` of the network input (= ``crop_size``)."""
        return self.crop_size

    @property
    def stored_size(self) -> Size:
        """``(width, height)`` of the stored pixels (before the EXIF orientation)."""
        return oriented_size(self.image_size, _INVERSE_ORIENTATION[self.orientation])

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy)``: resized size over original size."""
        return self.resized_size[0] / self.image_size[0], self.resized_size[1] / self.image_size[1]

    # frame f: u_f = x * num_f / den_f - off_f per axis, x in original pixels
    def _affine(self, frame: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, Size]:
        w, h = self.image_size
        den = np.array([w, h], np.float64)
        if frame == "original":
            return den, den, np.zeros(2), self.image_size
        if frame == "working":
            ws = self.working_size or self.image_size
            return np.array(ws, np.float64), den, np.zeros(2), ws
        if frame == "network":
            return np.array(self.resized_size, np.float64), den, np.array(self.crop_origin, np.float64), self.crop_size
        fail("frame", "one of " + ", ".join(repr(f) for f in FRAMES), frame)
        raise AssertionError  # unreachable

    def frame_size(self, frame: Frame) -> Size:
        """``(width, height)`` of ``frame`` (``"stored"``, ``"original"``, ``"working"``, ``"network"``)."""
        if frame == "stored":
            return self.stored_size
        return self._affine(frame)[3]

    def map_boxes(self, boxes: Any, src: Frame, dst: Frame, *, clip: bool = True) -> np.ndarray:
        """Boxes ``[..., 4]`` from frame ``src`` to frame ``dst`` (see the module docstring for the frames).

        With ``clip`` (default) the result is clipped to ``dst``'s extent (a centre crop cuts boxes); boxes left
        with no area, and empty input boxes, become ``(0, 0, 0, 0)``. With ``clip=False`` the map is applied as
        it is (nothing clipped, degenerate boxes kept; only ``(0, 0, 0, 0)`` stays ``(0, 0, 0, 0)``).
        """
        arr, dtype = _boxes(boxes)
        empty = _is_empty(arr) if clip else (arr == 0).all(axis=-1)
        if src == "stored":
            arr = orient_boxes(arr, self.stored_size, self.orientation).astype(np.float64)
            src = "original"
        to_stored = dst == "stored"
        if to_stored:
            dst = "original"
        if src != dst:
            n_s, d_s, o_s, _ = self._affine(src)
            n_d, d_d, o_d, _ = self._affine(dst)
            x = arr if src == "original" else (arr + np.tile(o_s, 2)) * np.tile(d_s, 2) / np.tile(n_s, 2)
            arr = x * np.tile(n_d, 2) / np.tile(d_d, 2) - np.tile(o_d, 2)
        if clip:
            W, H = self._affine(dst)[3]
            arr = arr.copy()
            arr[..., 0::2] = np.clip(arr[..., 0::2], 0.0, W)
            arr[..., 1::2] = np.clip(arr[..., 1::2], 0.0, H)
        if to_stored:
            arr = orient_boxes(arr, self.image_size, self.orientation, inverse=True).astype(np.float64)
        arr[empty] = 0.0
        return (_canonical_empty(arr) if clip else arr).astype(dtype)

    def map_mask(
        self, mask: Any, src: Frame, dst: Frame, *, fill: Any = 0, sampling: Sampling = "center"
    ) -> np.ndarray:
        """Mask ``[..., h, w]`` from frame ``src`` to frame ``dst`` (nearest neighbour; ``dst``'s size).

        The mask covers ``src``'s whole extent; its own resolution may differ from ``src``'s size (a mask file
        at another resolution is scaled with it). Pixels of ``dst`` outside ``src``'s extent get ``fill``.
        """
        arr = _mask(mask)
        s = _check_sampling(sampling)
        if src == "stored":
            arr = orient_mask(arr, self.orientation)
            src = "original"
        to_stored = dst == "stored"
        if to_stored:
            dst = "original"
        n_s, d_s, o_s, size_s = self._affine(src)
        n_d, d_d, o_d, size_d = self._affine(dst)
        mh, mw = arr.shape[-2:]
        if src != dst or (mw, mh) != size_s:
            # dst coordinate u -> original x = (u + o_d) * d_d / n_d -> src u_s = x * n_s / d_s - o_s -> mask
            # coordinate u_s * m / size_s; the factors are integers, multiplied before the one division
            m = np.array([mw, mh], np.float64)
            sz = np.array(size_s, np.float64)
            num, den = d_d * n_s * m, n_d * d_s * sz
            b_in = o_s * m / sz
            xs = _indices(size_d[0], num[0], den[0], o_d[0], b_in[0], mw, s)
            ys = _indices(size_d[1], num[1], den[1], o_d[1], b_in[1], mh, s)
            arr = _gather(arr, xs, ys, fill)
        if to_stored:
            arr = orient_mask(arr, self.orientation, inverse=True)
        return arr

    # the original <-> network shortcuts
    def forward_boxes(self, boxes: Any) -> np.ndarray:
        """Original-pixel boxes ``[..., 4]`` -> network frame: scaled, shifted, clipped; emptied ones -> 0."""
        return self.map_boxes(boxes, "original", "network")

    def inverse_boxes(self, boxes: Any) -> np.ndarray:
        """Network-frame boxes ``[..., 4]`` -> original pixels, clipped to the image; empty boxes stay empty."""
        return self.map_boxes(boxes, "network", "original")

    def forward_mask(self, mask: Any, *, fill: Any = 0) -> np.ndarray:
        """Original mask ``[..., h, w]`` -> network frame ``[..., ch, cw]`` (nearest; padding gets ``fill``)."""
        return self.map_mask(self._mask_of(mask, self.image_size, "image_size"), "original", "network", fill=fill)

    def inverse_mask(self, mask: Any, *, fill: Any = 0) -> np.ndarray:
        """Network-frame mask ``[..., ch, cw]`` -> original pixels ``[..., h, w]`` (nearest at pixel centres).

        Original pixels outside the crop get ``fill``.
        """
        return self.map_mask(self._mask_of(mask, self.crop_size, "crop_size"), "network", "original", fill=fill)

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
    ``ImageTransform(resize=(224, 224))`` (wsolevaluation's test transform).
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

    def geometry(self, image_size: Size, *, working_size: Size | None = None, orientation: int = 1) -> Geometry:
        """The :class:`Geometry` of this transform applied to an image of ``image_size = (w, h)`` (original frame).

        ``working_size``: the decoded (maybe reduced) image the resize is applied to (default: ``image_size``).
        """
        size = _size("image_size", image_size)
        work = size if working_size is None else _size("working_size", working_size)
        resized = resized_size(work, self.resize)
        crop = resized if self.crop is None else _square_or_size("crop", self.crop)
        return Geometry(size, resized, center_crop_origin(resized, crop), crop, working_size, orientation)

    def output_size(self, image_size: Size) -> Size:
        """``(width, height)`` of the transformed image."""
        return self.geometry(image_size).output_size

    def forward_boxes(self, boxes: Any, image_size: Size) -> np.ndarray:
        """Shortcut for ``self.geometry(image_size).forward_boxes(boxes)``."""
        return self.geometry(image_size).forward_boxes(boxes)

    def inverse_boxes(self, boxes: Any, image_size: Size) -> np.ndarray:
        """Shortcut for ``self.geometry(image_size).inverse_boxes(boxes)``."""
        return self.geometry(image_size).inverse_boxes(boxes)
