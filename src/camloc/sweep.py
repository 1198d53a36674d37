"""Threshold sweeps over score maps: protocol presets, normalisation, the candidate box at every threshold.

A *protocol* fixes how a score map becomes a binary mask at a threshold ``t`` and how boxes are read from it.
camloc ships two presets (:data:`PROTOCOLS`); :class:`Protocol` builds others.

``"paper"`` — what the original CAM code did (Zhou et al. 2016: ``map / max``, written as an 8-bit image,
boxes at 20 % of the max):
  * normalise by the max: ``v = max(M, 0) / max(M)`` (negatives clipped to 0); a map with ``max(M) <= 0`` gives
    an empty mask at every threshold. NaN/inf maps are rejected (:class:`~camloc.errors.CamlocValueError`
    naming the argument).
  * keep pixels with ``v >= t`` (float comparison, no quantisation); default thresholds ``(0.2,)``.
  * candidates are the 8-connected components; the selected box is the component with the most pixels
    (ties: the component whose first pixel in raster order comes first); boxes in the camloc convention
    ``(c0, r0, c1 + 1, r1 + 1)``; IoU in the continuous convention (no "+1").

``"wsolevaluation"`` — clovaai/wsolevaluation (Choe et al., CVPR 2020), ``evaluation.py`` +
``inference.normalize_scoremap``, reproduced exactly:
  * min-max normalise: ``v = (M - min) / (max - min)``; a map that is flat or contains a NaN becomes all zeros
    (as the original does; it never raises on NaN). inf values are rejected (the original fails on them too).
  * quantise: ``q = uint8(v * 255)`` (truncation). Normalising and quantising run in the map's own precision,
    as the original's NumPy code does on the float32 CAMs a network gives: a float32 map in float32 (float64
    arithmetic moves a few pixels per million by one level), any other dtype in float64.
  * at threshold ``t`` the cut-off is ``int(t * max(q))`` and a pixel is kept when ``q > cut-off`` (strictly:
    ``cv2.THRESH_BINARY``). Default thresholds ``np.arange(0, 1, 0.001)`` (``cam_curve_interval=0.001``).
  * candidates are OpenCV contours: ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``, which returns one outer
    contour per 8-connected component **and one contour per hole**; the single box is the contour with the
    largest ``cv2.contourArea`` (the polygon through the border pixel centres, holes included — not the pixel
    count; a 1-pixel-wide line has area 0), first in OpenCV's order on ties; ``cv2.boundingRect`` gives
    ``(x, y, x + w, y + h)`` and x1 / y1 are clipped to W - 1 / H - 1; an empty mask gives (0, 0, 0, 0).
  * IoU in the wsol "+1" convention: ``area = (x1 - x0 + 1) * (y1 - y0 + 1)``.

Why the two disagree on the same map: min-max vs max normalisation differ whenever ``min(M) != 0`` (the same
``t`` is a different level); the uint8 truncation moves a cut-off by up to 1/255 and merges nearby thresholds;
``>`` vs ``>=`` changes masks on plateaus; contour area vs pixel count can pick a different component (a long
thin component has a small polygon area); hole contours are extra candidates for MaxBoxAccV2; the x1/y1 clip
and the "+1" IoU change IoU near borders and for small boxes. Numbers from the two presets are not
interchangeable: always report which one was used.

Both presets normalise a float32 map in float32 arithmetic and any other map in float64.

Engine. The masks of a sweep are nested, so the answers at all thresholds come from one pass over the pixels
in value order with a union-find over 8-connected components (:mod:`camloc._sweep_kernels`, compiled with
numba; without numba every distinct mask is labelled with OpenCV instead: same answers, slower). Thresholds
that give the same mask share one checkpoint (at most 256 under uint8 quantisation). For the
``"wsolevaluation"`` preset the pass also tracks each component's outer-contour polygon area and Euler number;
it is exact at every checkpoint where the largest area is unique and no other component has a hole (for
MaxBoxAccV2: where no component has a hole or every IoU level is already hit). The few other checkpoints are
settled exactly too: one by one with ``cv2.findContours`` on that mask, or, when there are many, by a second
pass over the filled masks (a background union-find that finds holes and the hole contours' boxes). So every
threshold's answer equals the original's; ``benchmarks/sweep_speed.py`` measures both against per-threshold
loops. Per map the work is one fused normalise-and-quantise pass, a counting sort of the pixels by checkpoint
and the union-find pass, in scratch buffers each thread keeps between maps (fresh buffers cost about as much
in page faults as the pass itself). The kernels release the GIL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from camloc import _sweep_kernels as _k
from camloc._checks import check_choice, fail
from camloc._sweep_boxes import IOU_CONVENTIONS, as_boxes, as_numpy, box_iou, iou_matrix

__all__ = [
    "PROTOCOLS",
    "WSOL_THRESHOLDS",
    "Protocol",
    "box_iou",
    "get_protocol",
    "normalize_score_map",
    "replace",
    "sweep_boxes",
    "sweep_hits",
]

#: wsolevaluation's default threshold list, ``np.arange(0, 1, 0.001)`` (1000 values).
WSOL_THRESHOLDS: tuple[float, ...] = tuple(np.arange(0, 1, 0.001).tolist())

_NORMALIZE = ("max", "minmax", "none")
_CANDIDATES = ("component", "contour")
_NAN_POLICY = ("raise", "zeros")

# Tests set this to False to exercise the OpenCV per-mask engine.
_USE_KERNEL = _k.HAVE_NUMBA
# Contour protocol: up to this many checkpoints the kernel cannot settle are redone with cv2.findContours one
# by one; beyond it, a second pass over the filled masks is cheaper (one findContours ~ 1/50 of a pass).
_PER_MASK_LIMIT = 40


def _as_thresholds(thresholds: Any, name: str = "thresholds") -> np.ndarray:
    arr = np.asarray(as_numpy(name, thresholds) if not isinstance(thresholds, (int, float)) else [thresholds])
    if arr.dtype.kind not in "iuf" or arr.ndim != 1 or arr.size == 0:
        fail(name, "a non-empty 1-D sequence of numbers", f"shape {arr.shape} and dtype {arr.dtype}")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        fail(name, "finite numbers", "NaN or inf values")
    return out


@dataclass(frozen=True)
class Protocol:
    """How score maps become masks and boxes at each threshold (see the module docstring).

    Attributes:
        name: label used in results.
        normalize: ``"max"`` (``max(M, 0) / max(M)``, ``max <= 0`` -> empty masks), ``"minmax"``
            (``(M - min) / (max - min)``, flat -> zeros) or ``"none"`` (values used as given).
        quantize_uint8: compare ``q = uint8(v * 255)`` against ``int(t * max(q))`` instead of ``v`` against ``t``
            (needs a normalised map).
        strict_greater: keep ``value > cut-off`` (True) or ``value >= cut-off`` (False).
        iou_convention: ``"continuous"`` or ``"wsol"`` ("+1" widths), see :func:`box_iou`.
        candidates: ``"component"`` (8-connected components, largest = most pixels) or ``"contour"``
            (OpenCV ``RETR_TREE`` contours, largest = ``cv2.contourArea``, hole contours are candidates).
        clip_last_pixel: clip box x1 to W - 1 and y1 to H - 1 (wsolevaluation).
        nan_policy: ``"raise"`` (NaN maps raise CamlocValueError) or ``"zeros"`` (a map with a NaN becomes
            all zeros, as wsolevaluation's ``normalize_scoremap``).
        thresholds: default threshold list for box sweeps.

    The pipeline from image to score map and ground truth (used by :func:`camloc.evaluate.evaluate_samples`):

        cam_resize: how maps are brought to the network input: ``"bilinear"`` (torch, pixel-centre aligned) or
            ``"bicubic_cv2"`` (``cv2.resize(map, (W, H), interpolation=cv2.INTER_CUBIC)`` on float32 maps).
        box_rounding: GT boxes after scaling to the network input: ``"none"`` (float) or ``"truncate"``
            (``int(x * W / w)``, as wsolevaluation's ``resize_bbox``).
        mask_sampling: nearest-neighbour resize of GT masks to the input: ``"center"`` (pixel centres, PIL
            ``NEAREST``) or ``"corner"`` (OpenCV ``INTER_NEAREST``); see :mod:`camloc.geometry`.
        mask_threshold: a mask pixel (8-bit grey value) is foreground when ``> mask_threshold``.
        image_interpolation: the one image resize's interpolation (None: the model's preprocessing).
        image_draft: allow reduced JPEG decoding (DCT draft mode) before that resize.
        exif_orientation: apply the EXIF orientation to the image (and the same map to its ground truth).
    """

    name: str
    normalize: str
    quantize_uint8: bool
    strict_greater: bool
    iou_convention: str
    candidates: str
    clip_last_pixel: bool
    nan_policy: str
    thresholds: tuple[float, ...] = field(repr=False)
    cam_resize: str = "bilinear"
    box_rounding: str = "none"
    mask_sampling: str = "center"
    mask_threshold: float = 127.0
    image_interpolation: str | None = None
    image_draft: bool = True
    exif_orientation: bool = True

    def __post_init__(self) -> None:
        check_choice("cam_resize", self.cam_resize, ("bilinear", "bicubic_cv2"))
        check_choice("box_rounding", self.box_rounding, ("none", "truncate"))
        check_choice("mask_sampling", self.mask_sampling, ("center", "corner"))
        if self.image_interpolation is not None:
            check_choice("image_interpolation", self.image_interpolation, ("bilinear", "bicubic", "nearest"))
        check_choice("normalize", self.normalize, _NORMALIZE)
        check_choice("iou_convention", self.iou_convention, IOU_CONVENTIONS)
        check_choice("candidates", self.candidates, _CANDIDATES)
        check_choice("nan_policy", self.nan_policy, _NAN_POLICY)
        if self.quantize_uint8 and self.normalize == "none":
            fail("normalize", "'max' or 'minmax' when quantize_uint8=True", self.normalize)
        object.__setattr__(self, "thresholds", tuple(float(t) for t in _as_thresholds(self.thresholds)))


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol(
        name="paper",
        normalize="max",
        quantize_uint8=False,
        strict_greater=False,
        iou_convention="continuous",
        candidates="component",
        clip_last_pixel=False,
        nan_policy="raise",
        thresholds=(0.2,),
    ),
    "wsolevaluation": Protocol(
        name="wsolevaluation",
        normalize="minmax",
        quantize_uint8=True,
        strict_greater=True,
        iou_convention="wsol",
        candidates="contour",
        clip_last_pixel=True,
        nan_policy="zeros",
        thresholds=WSOL_THRESHOLDS,
        # data_loaders.py: Image.open(path).convert("RGB") (no EXIF transpose, every pixel decoded), then
        # transforms.Resize((224, 224)) (bilinear); inference.py: cv2 bicubic CAM resize; evaluation.py:
        # int() GT boxes after scaling, masks by cv2 INTER_NEAREST and > 0.5
        cam_resize="bicubic_cv2",
        box_rounding="truncate",
        mask_sampling="corner",
        mask_threshold=0.5,
        image_interpolation="bilinear",
        image_draft=False,
        exif_orientation=False,
    ),
}


def get_protocol(protocol: str | Protocol) -> Protocol:
    """A :class:`Protocol` from a preset name (``"paper"``, ``"wsolevaluation"``) or a Protocol (returned)."""
    if isinstance(protocol, Protocol):
        return protocol
    if not isinstance(protocol, str):
        fail("protocol", "a preset name or a Protocol", protocol, type_error=True)
    check_choice("protocol", protocol, tuple(PROTOCOLS))
    return PROTOCOLS[protocol]


def _as_map(name: str, score_map: Any) -> np.ndarray:
    """Validated C-contiguous ``[H, W]`` map: float32 stays float32, every other real dtype becomes float64."""
    arr = as_numpy(name, score_map)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        fail(name, "a non-empty 2-D score map [H, W]", f"shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "iuf":
        fail(name, "a real-valued score map", f"dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32 if arr.dtype == np.float32 else np.float64)


@dataclass(frozen=True)
class _Scale:
    """How a map is normalised: ``kind`` "zeros" (all-zero result), "empty" (paper, max <= 0: every mask
    empty), "max" (``max(M, lo) / rng``), "minmax" (``(M - lo) / rng``) or "none"; ``lo`` / ``rng`` are scalars
    in the map's dtype, so float32 maps are normalised in float32 exactly as NumPy code written for them."""

    kind: str
    lo: Any = 0.0
    rng: Any = 1.0


def _scale(name: str, m: np.ndarray, proto: Protocol) -> _Scale:
    if _USE_KERNEL:
        mn, mx, has_nan, has_inf = _k.map_stats(m.ravel())
    else:
        has_nan = bool(np.isnan(m).any())
        has_inf = not has_nan and not bool(np.isfinite(m).all())
        mn, mx = (m.min(), m.max()) if not (has_nan or has_inf) else (0.0, 0.0)
    if has_nan and proto.nan_policy == "zeros":
        return _Scale("zeros")
    if has_nan or has_inf:
        what = "NaN" if has_nan else "inf"
        fail(name, "finite (no NaN or inf values)", f"a score map with {what} values")
    t = m.dtype.type
    if proto.normalize == "max":
        return _Scale("empty") if mx <= 0 else _Scale("max", t(0), t(mx))
    if proto.normalize == "minmax":
        # (M - min) / max(M - min): the max of the differences is exactly max - min rounded in the map's dtype
        return _Scale("zeros") if mn == mx else _Scale("minmax", t(mn), t(mx) - t(mn))
    return _Scale("none")


def _apply(m: np.ndarray, s: _Scale) -> np.ndarray:
    """The normalised map in ``m``'s dtype."""
    if s.kind in ("zeros", "empty"):
        return np.zeros_like(m)
    if s.kind == "max":
        return np.maximum(m, s.lo) / s.rng
    if s.kind == "minmax":
        return (m - s.lo) / s.rng
    return m


def _normalized(name: str, score_map: Any, proto: Protocol) -> tuple[np.ndarray, bool]:
    """float64 normalised map and whether every mask is empty by definition (paper, max <= 0)."""
    m = _as_map(name, score_map)
    s = _scale(name, m, proto)
    return _apply(m, s).astype(np.float64, copy=False), s.kind == "empty"


def normalize_score_map(score_map: Any, *, protocol: str | Protocol = "paper") -> np.ndarray:
    """The protocol's normalised map, float64 ``[H, W]`` (before any uint8 quantisation).

    ``score_map``: ``[H, W]`` numpy array or torch tensor. ``"paper"``: ``max(M, 0) / max(M)`` (zeros when
    ``max(M) <= 0``; the sweep then treats every mask as empty); ``"wsolevaluation"``: min-max, flat or NaN ->
    zeros. A float32 map is normalised in float32 arithmetic (as the NumPy code of both originals does on
    float32 CAMs) and returned as float64; any other dtype is normalised in float64.
    """
    return _normalized("score_map", score_map, get_protocol(protocol))[0]


@dataclass(frozen=True)
class _Checkpoints:
    bucket: np.ndarray  # int32 [H * W]: first checkpoint containing the pixel, K = never
    index: np.ndarray  # int64 [T]: checkpoint of each threshold
    n: int  # K


def _unique(cut: np.ndarray, int_max: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(cut, return_inverse=True)``; by counting when ``cut`` holds integers in ``0..int_max``."""
    if int_max >= 0 and cut.min() >= 0 and cut.max() <= int_max:
        ci = cut.astype(np.int64)
        present = np.zeros(int_max + 1, bool)
        present[ci] = True
        return np.flatnonzero(present).astype(np.float64), (np.cumsum(present) - 1)[ci]
    return np.unique(cut, return_inverse=True)


def _checkpoints(name: str, score_map: Any, thr: np.ndarray, proto: Protocol) -> tuple[_Checkpoints, np.ndarray]:
    """Checkpoints of a map's sweep and the validated map (float32 or float64 ``[H, W]``)."""
    m = _as_map(name, score_map)
    s = _scale(name, m, proto)
    empty = s.kind == "empty"
    v: np.ndarray | None = None
    if proto.quantize_uint8:
        if _USE_KERNEL and s.kind in ("max", "minmax"):  # one fused pass: normalise, quantise, max
            q, qmax = _k.quantize_map(m.ravel(), s.kind == "max", s.lo, s.rng, m.dtype.type(255))
        else:
            v = _apply(m, s)
            q = (v * v.dtype.type(255)).astype(np.uint8).ravel()
            qmax = int(q.max())
        cut = np.trunc(thr * float(qmax))  # int(t * max(q)), as Python's int() truncates
    else:
        v = _apply(m, s)
        cut = thr
    # checkpoints run from the strictest cut-off (smallest mask) to the loosest
    uniq, inv = _unique(cut, 255 if proto.quantize_uint8 else -1)
    n = int(uniq.size)
    index = (n - 1 - inv).astype(np.int64)
    if empty:
        return _Checkpoints(np.full(m.size, n, np.int32), index, n), m
    side: Literal["left", "right"] = "left" if proto.strict_greater else "right"
    if proto.quantize_uint8:
        lut = (n - np.searchsorted(uniq, np.arange(256, dtype=np.float64), side=side)).astype(np.int32)
        bucket = lut[q]
    else:
        assert v is not None
        if _USE_KERNEL:
            bucket = _k.float_buckets(v.ravel(), uniq, proto.strict_greater)
        else:
            bucket = (n - np.searchsorted(uniq, v.ravel(), side=side)).astype(np.int32)
    return _Checkpoints(bucket, index, n), m


def _mask(ck: _Checkpoints, k: int, shape: tuple[int, int]) -> np.ndarray:
    return (ck.bucket <= k).reshape(shape).view(np.uint8)


def _clip_boxes(boxes: np.ndarray, shape: tuple[int, int], proto: Protocol) -> np.ndarray:
    if proto.clip_last_pixel:
        boxes[:, 2] = np.minimum(boxes[:, 2], shape[1] - 1)
        boxes[:, 3] = np.minimum(boxes[:, 3], shape[0] - 1)
    return boxes


def _run(
    name: str,
    score_map: Any,
    thr: np.ndarray,
    proto: Protocol,
    gt: np.ndarray,
    deltas: np.ndarray,
    multi: bool,
) -> tuple[_Checkpoints, np.ndarray, np.ndarray | None]:
    """Boxes (single mode) or hits (multi mode) per checkpoint.

    Returns the checkpoints, float64 boxes [K, 4] (single mode; empty mask -> 0s) and uint8 hits [K, D]
    (multi mode, else None). ``deltas`` ascending.
    """
    ck, m = _checkpoints(name, score_map, thr, proto)
    shape = m.shape
    contour = proto.candidates == "contour"
    plus_one = proto.iou_convention == "wsol"
    clip = proto.clip_last_pixel
    boxes = np.zeros((ck.n, 4), np.float64)
    hits: np.ndarray | None = np.zeros((ck.n, deltas.size), np.uint8) if multi else None
    if _USE_KERNEL and max(shape) <= _k.MAX_SIDE:
        h, w = shape
        bucket = ck.bucket
        rest = (gt, deltas, plus_one, clip, *_k.workspace(h, w))
        exact = np.zeros(0, np.int64)
        empties = np.zeros(0, np.int64)
        if multi:
            kb, kh, _, holed = _k.fg_pass(bucket, h, w, ck.n, _k.SELECT_NONE, True, contour, *rest)
            assert hits is not None
            hits[:] = kh
            empties = np.flatnonzero(kb[:, 0] < 0)
            if contour:  # hole contours are candidates too; they only matter where a hit is still missing
                exact = np.flatnonzero((holed > 0) & ~kh.all(axis=1))
                if exact.size > _PER_MASK_LIMIT:
                    hits |= _k.bg_pass(bucket, h, w, ck.n, True, *rest)[1]
                    exact = np.zeros(0, np.int64)
        else:
            select = _k.SELECT_AREA if contour else _k.SELECT_PIXELS
            kb, _, ties, holed = _k.fg_pass(bucket, h, w, ck.n, select, False, contour, *rest)
            if contour:
                # exact unless another component has a hole (its outer contour encloses the hole, so its area
                # is unknown here) or several components share the largest area (OpenCV's order decides)
                exact = np.flatnonzero((ties > 1) | (holed > 0))
                if exact.size > _PER_MASK_LIMIT:  # redo the sweep on the filled masks: areas are exact there
                    phi = _k.bg_pass(bucket, h, w, ck.n, False, *rest)[0]
                    kb, _, ties, _ = _k.fg_pass(phi, h, w, ck.n, select, False, False, *rest)
                    exact = np.flatnonzero(ties > 1)
            nonempty = kb[:, 0] >= 0
            boxes[nonempty] = _clip_boxes(kb[nonempty].astype(np.float64), shape, proto)
    else:
        exact = np.arange(ck.n)
        empties = np.zeros(0, np.int64)
    if exact.size:
        from camloc import _sweep_reference as _ref  # OpenCV per-mask engines, only when a mask needs them
    for k in exact.tolist():
        mask = _mask(ck, k, shape)
        if contour:
            cand = _ref.contour_boxes(mask, multi=multi, clip=proto.clip_last_pixel).astype(np.float64)
        else:
            cand = _clip_boxes(_ref.component_boxes(mask, multi=multi).astype(np.float64), shape, proto)
            if cand.shape[0] == 0:
                cand = np.zeros((1, 4), np.float64)
        if multi:
            assert hits is not None
            best = iou_matrix(cand, gt, plus_one).max(initial=0.0)
            hits[k] = best >= deltas
        else:
            boxes[k] = cand[0]
    if multi and empties.size:  # an empty mask's candidate is the box (0, 0, 0, 0)
        assert hits is not None
        best0 = iou_matrix(np.zeros((1, 4)), gt, plus_one).max(initial=0.0)
        hits[empties] = best0 >= deltas
    return ck, boxes, hits


def sweep_boxes(
    score_map: Any, *, protocol: str | Protocol = "paper", thresholds: Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """The selected box at every threshold -> float64 ``numpy.ndarray [T, 4]``.

    ``score_map``: ``[H, W]`` numpy array or torch tensor at the resolution of the image the boxes refer to.
    ``thresholds`` (default: the protocol's) in the protocol's normalised units. Boxes are ``(x0, y0, x1, y1)``:
    for ``"paper"`` in the camloc convention (pixel columns c0..c1, rows r0..r1 -> (c0, r0, c1 + 1, r1 + 1));
    for ``"wsolevaluation"`` wsolevaluation's integer boxes ``(x, y, min(x + w, W - 1), min(y + h, H - 1))``.
    An empty mask gives (0, 0, 0, 0).
    """
    proto = get_protocol(protocol)
    thr = _as_thresholds(proto.thresholds if thresholds is None else thresholds)
    ck, boxes, _ = _run("score_map", score_map, thr, proto, np.zeros((0, 4)), np.zeros(0), False)
    return boxes[ck.index]


def sweep_hits(
    score_map: Any,
    gt_boxes: Any,
    *,
    protocol: str | Protocol = "paper",
    thresholds: Sequence[float] | np.ndarray | None = None,
    iou_thresholds: Sequence[float] = (0.5,),
    multi_box: bool = False,
    name: str = "score_map",
) -> np.ndarray:
    """Whether the image counts as localised, at every threshold and IoU threshold -> bool ``[T, D]``.

    ``score_map``: ``[H, W]``; ``gt_boxes``: ``[G, 4]`` (G >= 1) in the same pixel frame, in the box
    convention of the protocol's IoU (see :func:`box_iou`). With ``multi_box=False`` the image counts at
    ``(t, delta)`` when the selected box at ``t`` has IoU >= ``delta`` with some GT box (MaxBoxAcc); with
    ``multi_box=True`` when *any* candidate box (every component, or every contour including hole contours)
    does (MaxBoxAccV2). ``name`` is used in error messages.
    """
    proto = get_protocol(protocol)
    thr = _as_thresholds(proto.thresholds if thresholds is None else thresholds)
    deltas = _as_thresholds(iou_thresholds, "iou_thresholds")
    gt = as_boxes("gt_boxes", gt_boxes, allow_empty=False)
    return _hits(name, score_map, gt, proto, thr, deltas, bool(multi_box))


def _hits(
    name: str, score_map: Any, gt: np.ndarray, proto: Protocol, thr: np.ndarray, deltas: np.ndarray, multi: bool
) -> np.ndarray:
    """:func:`sweep_hits` on validated ``gt`` float64 [G, 4], thresholds and IoU thresholds -> bool [T, D]."""
    gt = np.ascontiguousarray(gt)
    order = np.argsort(deltas, kind="stable")
    d_sorted = np.ascontiguousarray(deltas[order])
    plus_one = proto.iou_convention == "wsol"
    ck, boxes, hits = _run(name, score_map, thr, proto, gt, d_sorted, multi)
    if multi:
        assert hits is not None
        per_ck = np.empty_like(hits, dtype=bool)
        per_ck[:, order] = hits.astype(bool)
    elif _USE_KERNEL:
        levels = _k.box_levels(boxes, gt, d_sorted, plus_one)  # how many sorted deltas each box reaches
        per_ck = np.empty((ck.n, deltas.size), dtype=bool)
        per_ck[:, order] = levels[:, None] > np.arange(deltas.size)[None, :]
    else:
        best = iou_matrix(boxes, gt, plus_one).max(axis=1)
        per_ck = best[:, None] >= deltas[None, :]
    return per_ck[ck.index]


def replace(protocol: str | Protocol, **changes: Any) -> Protocol:
    """A copy of a protocol with some fields changed, e.g. ``replace("paper", thresholds=np.arange(0, 1, .01))``."""
    return dataclasses.replace(get_protocol(protocol), **changes)
