"""Localization metrics: top-1/top-5/GT-known localization, MaxBoxAcc, MaxBoxAccV2 and PxAP.

Every metric is a stateless function plus a streaming accumulator with ``update(...)``, ``compute()`` and
``reset()``. Results are frozen dataclasses of plain Python floats and numpy arrays; accuracies are fractions
in [0, 1] (multiply by 100 for the percentages papers and wsolevaluation print). Nothing here prints.

Inputs: score maps are ``[H, W]`` numpy arrays or torch tensors **at the resolution of the image the GT
refers to** (a batch is ``[N, H, W]`` or a sequence of ``[H_i, W_i]`` maps); GT boxes per image are ``[G_i, 4]``
``(x0, y0, x1, y1)`` in that image's pixel frame; GT masks are ``[H, W]`` bool.

Box convention (camloc): pixel (row i, column j) covers [j, j+1) x [i, i+1); a box over pixel columns c0..c1
and rows r0..r1 is (c0, r0, c1 + 1, r1 + 1), area = width * height, the empty box (0, 0, 0, 0) has IoU 0 with
everything. The ``"wsolevaluation"`` protocol keeps that project's "+1" convention instead (integer pixel
corners, area = (x1 - x0 + 1) * (y1 - y0 + 1)); to reproduce its numbers pass GT boxes as it has them.

Definitions.

* **Top-k classification**: the true class is among the first k predicted classes.
* **Top-k localization** (ILSVRC / CAM paper): an image is correct at top-k when for some j < k the j-th
  predicted class is the true class *and* the box predicted for that class has IoU >= 0.5 with *some* GT box
  of the image. **GT-known localization**: the box computed from the true class's map has IoU >= 0.5 with
  some GT box (classification ignored).
* **MaxBoxAcc** (Choe et al., CVPR 2020): at each threshold the candidate box is the selected box of the mask
  (largest component / largest contour, see :mod:`camloc.sweep`); the accuracy at a threshold is the fraction
  of images whose candidate has IoU >= 0.5 with some GT box; MaxBoxAcc is the maximum over thresholds.
* **MaxBoxAccV2**: every component (``"wsolevaluation"``: every contour, hole contours included) is a
  candidate; an image counts at (threshold, delta) when its best candidate has IoU >= delta with some GT box;
  the value is the mean over delta in (0.3, 0.5, 0.7) of each delta's maximum over thresholds.
* **PxAP**: pixel average precision. Pixel scores are the protocol's normalised map (min-max for
  ``"wsolevaluation"``, no uint8 quantisation); over the whole data set, at each threshold t (the list plus
  1.0 and 2.0, as wsolevaluation's ``MaskEvaluator``), TP(t) / FP(t) count GT-foreground / background pixels
  with score >= t; ignore-mask pixels are excluded unless they are GT foreground (wsolevaluation: ignore =
  ignore-box minus foreground). precision = TP / (TP + FP), recall = TP / #foreground pixels, and
  AP = sum over consecutive thresholds (from high to low) of precision * (recall increase), skipping
  thresholds where nothing is predicted.

The threshold sweeps run on :func:`camloc.sweep.sweep_hits` (one union-find pass per image, not one labelling
per threshold; exact OpenCV contour semantics for ``"wsolevaluation"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camloc._checks import check_choice, check_number, fail
from camloc._sweep_boxes import IOU_CONVENTIONS, as_boxes, as_numpy, box_iou, iou_matrix
from camloc.sweep import (
    PROTOCOLS,
    WSOL_THRESHOLDS,
    Protocol,
    _as_thresholds,
    _hits,
    _normalized,
    get_protocol,
)

__all__ = [
    "PROTOCOLS",
    "LocalizationAccuracy",
    "LocalizationResult",
    "MaxBoxAcc",
    "MaxBoxAccResult",
    "MaxBoxAccV2",
    "MaxBoxAccV2Result",
    "Protocol",
    "PxAP",
    "PxAPResult",
    "box_iou",
    "breakdown_counts",
    "instance_breakdown",
    "localization_accuracy",
    "max_box_acc",
    "max_box_acc_v2",
    "pxap",
    "union_box",
]


# ----------------------------------------------------------------------------------------------------------
# input helpers


def _batch(name: str, x: Any) -> list[Any]:
    """A batch ``[N, ...]`` array/tensor or a sequence -> list of per-image items."""
    if isinstance(x, (list, tuple)):
        return list(x)
    arr = as_numpy(name, x)
    if arr.ndim != 3:
        fail(name, "a [N, H, W] batch or a sequence of [H, W] arrays", f"shape {tuple(arr.shape)}")
    return list(arr)


def _same_length(items: dict[str, list[Any]]) -> int:
    lengths = {k: len(v) for k, v in items.items()}
    n = next(iter(lengths.values()))
    for k, v in lengths.items():
        if v != n:
            first = next(iter(lengths))
            fail(k, f"one entry per image ({n}, as `{first}`)", f"{v} entries")
    return n


def _per_image_gt(name: str, gt_boxes: Any) -> list[np.ndarray]:
    items = gt_boxes if isinstance(gt_boxes, (list, tuple)) else list(as_numpy(name, gt_boxes))
    return [as_boxes(f"{name}[{i}]", g, allow_empty=False) for i, g in enumerate(items)]


def _check_increasing(name: str, thr: np.ndarray) -> None:
    if thr.size > 1 and not (np.diff(thr) > 0).all():
        fail(name, "strictly increasing", "values that are not strictly increasing")


# ----------------------------------------------------------------------------------------------------------
# top-k and GT-known localization


@dataclass(frozen=True)
class LocalizationResult:
    """Top-k classification / localization and GT-known localization accuracies (fractions in [0, 1]).

    ``cls_acc[k]`` and ``loc_acc[k]`` for each k in ``topk``; ``gt_known_loc`` is None when no GT-known boxes
    were given.
    """

    n_images: int
    topk: tuple[int, ...]
    cls_acc: dict[int, float]
    loc_acc: dict[int, float]
    gt_known_loc: float | None
    iou_threshold: float

    def as_dict(self) -> dict[str, float | int | None]:
        """Flat dict: ``top1_cls``, ``top5_cls``, ``top1_loc``, ``top5_loc``, ``gt_known_loc``, ``n_images``."""
        out: dict[str, float | int | None] = {}
        for k in self.topk:
            out[f"top{k}_cls"] = self.cls_acc[k]
        for k in self.topk:
            out[f"top{k}_loc"] = self.loc_acc[k]
        out["gt_known_loc"] = self.gt_known_loc
        out["n_images"] = self.n_images
        return out


class LocalizationAccuracy:
    """Streaming top-k classification, top-k localization and GT-known localization (ILSVRC / CAM paper).

    ``update(pred_classes [N, k], pred_boxes [N, k, 4], true_class [N], gt_boxes, *, gt_known_boxes=None)``:
    ``pred_classes[i, j]`` is the j-th ranked class of image i and ``pred_boxes[i, j]`` the box computed from
    that class's map; ``gt_boxes`` holds one ``[G_i, 4]`` array per image (G_i >= 1); ``gt_known_boxes [N, 4]``
    are the boxes from the true class's maps (optional; if given, give them in every update). IoU uses
    ``convention`` (see :func:`box_iou`). Image i is top-k localised when some j < k has
    ``pred_classes[i, j] == true_class[i]`` and ``max_g IoU(pred_boxes[i, j], gt_boxes[i][g]) >= iou_threshold``.
    """

    def __init__(
        self, *, topk: Sequence[int] = (1, 5), iou_threshold: float = 0.5, convention: str = "continuous"
    ) -> None:
        ks = tuple(topk)
        if not ks:
            fail("topk", "a non-empty sequence of positive integers", topk)
        for k in ks:
            check_number("topk", k, low=1, integer=True)
        self.topk = tuple(sorted(set(ks)))
        self.iou_threshold = float(check_number("iou_threshold", iou_threshold, low=0.0, high=1.0))
        self.convention = check_choice("convention", convention, IOU_CONVENTIONS)
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._n = 0
        self._cls = np.zeros(len(self.topk), np.int64)
        self._loc = np.zeros(len(self.topk), np.int64)
        self._gt_known = 0
        self._gt_known_mode: bool | None = None

    def update(
        self,
        pred_classes: Any,
        pred_boxes: Any,
        true_class: Any,
        gt_boxes: Any,
        *,
        gt_known_boxes: Any = None,
    ) -> None:
        """Add a batch of N images (see the class docstring for shapes)."""
        pc = as_numpy("pred_classes", pred_classes)
        if pc.ndim != 2 or pc.dtype.kind not in "iu":
            fail("pred_classes", "an integer array [N, k]", f"shape {tuple(pc.shape)} and dtype {pc.dtype}")
        n, k = pc.shape
        if k < self.topk[-1]:
            fail("pred_classes", f"at least {self.topk[-1]} ranked classes per image (topk={self.topk})", f"{k}")
        pb = as_numpy("pred_boxes", pred_boxes)
        if pb.shape != (n, k, 4):
            fail("pred_boxes", f"shape [N, k, 4] = {(n, k, 4)}", f"shape {tuple(pb.shape)}")
        tc = as_numpy("true_class", true_class)
        if tc.shape != (n,) or tc.dtype.kind not in "iu":
            fail("true_class", f"an integer array of shape ({n},)", f"shape {tuple(tc.shape)}, dtype {tc.dtype}")
        gts = _per_image_gt("gt_boxes", gt_boxes)
        if len(gts) != n:
            fail("gt_boxes", f"one [G, 4] array per image ({n})", f"{len(gts)}")
        mode = gt_known_boxes is not None
        if self._gt_known_mode is not None and mode != self._gt_known_mode:
            fail("gt_known_boxes", "given in every update or in none", "a change between updates")
        self._gt_known_mode = mode
        boxes = as_boxes("pred_boxes", pb.reshape(n * k, 4)).reshape(n, k, 4)
        gk = as_boxes("gt_known_boxes", gt_known_boxes) if mode else None
        if gk is not None and gk.shape[0] != n:
            fail("gt_known_boxes", f"shape [N, 4] = {(n, 4)}", f"shape {tuple(gk.shape)}")
        plus_one = self.convention == "wsol"
        correct = pc == tc[:, None]  # [N, k]
        for i in range(n):
            ok = iou_matrix(boxes[i], gts[i], plus_one).max(axis=1) >= self.iou_threshold  # [k]
            for a, kk in enumerate(self.topk):
                self._cls[a] += bool(correct[i, :kk].any())
                self._loc[a] += bool((correct[i, :kk] & ok[:kk]).any())
            if gk is not None:
                self._gt_known += bool(iou_matrix(gk[i : i + 1], gts[i], plus_one).max() >= self.iou_threshold)
        self._n += n

    def compute(self) -> LocalizationResult:
        """Accuracies over every image added since the last reset."""
        if self._n == 0:
            fail("LocalizationAccuracy", "at least one image (call update() first)", "0 images")
        n = self._n
        return LocalizationResult(
            n_images=n,
            topk=self.topk,
            cls_acc={k: float(c / n) for k, c in zip(self.topk, self._cls)},
            loc_acc={k: float(c / n) for k, c in zip(self.topk, self._loc)},
            gt_known_loc=float(self._gt_known / n) if self._gt_known_mode else None,
            iou_threshold=self.iou_threshold,
        )


def localization_accuracy(
    pred_classes: Any,
    pred_boxes: Any,
    true_class: Any,
    gt_boxes: Any,
    *,
    gt_known_boxes: Any = None,
    topk: Sequence[int] = (1, 5),
    iou_threshold: float = 0.5,
    convention: str = "continuous",
) -> LocalizationResult:
    """One-shot :class:`LocalizationAccuracy` (same arguments as its ``update``)."""
    acc = LocalizationAccuracy(topk=topk, iou_threshold=iou_threshold, convention=convention)
    acc.update(pred_classes, pred_boxes, true_class, gt_boxes, gt_known_boxes=gt_known_boxes)
    return acc.compute()


# ----------------------------------------------------------------------------------------------------------
# MaxBoxAcc / MaxBoxAccV2


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class MaxBoxAccResult:
    """MaxBoxAcc: ``value`` = max over thresholds of ``accuracy`` (fraction), reached first at ``best_threshold``.

    ``thresholds`` float64 [T] and ``accuracy`` float64 [T] are the per-threshold curve (in the given order).
    """

    value: float
    best_threshold: float
    thresholds: np.ndarray
    accuracy: np.ndarray
    iou_threshold: float
    n_images: int
    protocol: str


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class MaxBoxAccV2Result:
    """MaxBoxAccV2: ``value`` = mean over ``iou_thresholds`` of ``per_iou`` (each delta's max over thresholds).

    ``accuracy`` float64 [D, T] is the curve of each delta; ``best_thresholds`` float64 [D] where each max is
    first reached.
    """

    value: float
    iou_thresholds: tuple[float, ...]
    per_iou: np.ndarray
    best_thresholds: np.ndarray
    thresholds: np.ndarray
    accuracy: np.ndarray
    n_images: int
    protocol: str


class _BoxSweep:
    """Shared state of MaxBoxAcc / MaxBoxAccV2: per-threshold, per-delta counts of correct images."""

    _multi = False

    def __init__(self, protocol: str | Protocol, thresholds: Any, iou_thresholds: Sequence[float]) -> None:
        self.protocol = get_protocol(protocol)
        self.thresholds = _as_thresholds(self.protocol.thresholds if thresholds is None else thresholds)
        deltas = _as_thresholds(iou_thresholds, "iou_thresholds")
        for d in deltas:
            check_number("iou_thresholds", float(d), low=0.0, high=1.0)
        self.iou_thresholds = tuple(float(d) for d in deltas)
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._n = 0
        self._correct = np.zeros((len(self.iou_thresholds), self.thresholds.size), np.int64)

    def update(self, score_maps: Any, gt_boxes: Any) -> None:
        """Add images: ``score_maps`` [N, H, W] (or a sequence of [H_i, W_i]), ``gt_boxes`` N arrays [G_i, 4]."""
        maps = _batch("score_maps", score_maps)
        gts = _per_image_gt("gt_boxes", gt_boxes)
        _same_length({"score_maps": maps, "gt_boxes": gts})
        correct = np.zeros_like(self._correct)  # committed only once every image went through
        deltas = np.asarray(self.iou_thresholds, np.float64)
        for i, (m, g) in enumerate(zip(maps, gts)):
            hits = _hits(f"score_maps[{i}]", m, g, self.protocol, self.thresholds, deltas, self._multi)
            correct += hits.T
        self._correct += correct
        self._n += len(maps)

    def _curves(self) -> np.ndarray:
        if self._n == 0:
            fail(type(self).__name__, "at least one image (call update() first)", "0 images")
        return self._correct / self._n


class MaxBoxAcc(_BoxSweep):
    """Streaming MaxBoxAcc (Choe et al. 2020): best-threshold box accuracy at IoU ``iou_threshold``.

    ``protocol``: ``"wsolevaluation"`` (default; exact replica of clovaai/wsolevaluation, thresholds
    ``np.arange(0, 1, 0.001)``), ``"paper"`` (CAM paper conventions, default threshold list ``(0.2,)`` — pass
    ``thresholds`` for a sweep) or a :class:`~camloc.sweep.Protocol`. ``thresholds`` overrides the protocol's.
    """

    def __init__(
        self,
        *,
        protocol: str | Protocol = "wsolevaluation",
        thresholds: Sequence[float] | np.ndarray | None = None,
        iou_threshold: float = 0.5,
    ) -> None:
        super().__init__(protocol, thresholds, (iou_threshold,))

    def compute(self) -> MaxBoxAccResult:
        """MaxBoxAcc over every image added since the last reset."""
        acc = self._curves()[0]
        best = int(np.argmax(acc))
        return MaxBoxAccResult(
            value=float(acc[best]),
            best_threshold=float(self.thresholds[best]),
            thresholds=self.thresholds.copy(),
            accuracy=acc,
            iou_threshold=self.iou_thresholds[0],
            n_images=self._n,
            protocol=self.protocol.name,
        )


class MaxBoxAccV2(_BoxSweep):
    """Streaming MaxBoxAccV2 (Choe et al. 2020): every component/contour is a candidate box; mean over
    ``iou_thresholds`` (default 0.3, 0.5, 0.7) of the best-threshold accuracy. Options as :class:`MaxBoxAcc`.
    """

    _multi = True

    def __init__(
        self,
        *,
        protocol: str | Protocol = "wsolevaluation",
        thresholds: Sequence[float] | np.ndarray | None = None,
        iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    ) -> None:
        super().__init__(protocol, thresholds, iou_thresholds)

    def compute(self) -> MaxBoxAccV2Result:
        """MaxBoxAccV2 over every image added since the last reset."""
        acc = self._curves()
        best = np.argmax(acc, axis=1)
        per_iou = acc[np.arange(acc.shape[0]), best]
        return MaxBoxAccV2Result(
            value=float(per_iou.mean()),
            iou_thresholds=self.iou_thresholds,
            per_iou=per_iou,
            best_thresholds=self.thresholds[best],
            thresholds=self.thresholds.copy(),
            accuracy=acc,
            n_images=self._n,
            protocol=self.protocol.name,
        )


def max_box_acc(
    score_maps: Any,
    gt_boxes: Any,
    *,
    protocol: str | Protocol = "wsolevaluation",
    thresholds: Sequence[float] | np.ndarray | None = None,
    iou_threshold: float = 0.5,
) -> MaxBoxAccResult:
    """One-shot :class:`MaxBoxAcc` over ``score_maps`` [N, H, W] (or a sequence) and ``gt_boxes`` (N x [G_i, 4])."""
    acc = MaxBoxAcc(protocol=protocol, thresholds=thresholds, iou_threshold=iou_threshold)
    acc.update(score_maps, gt_boxes)
    return acc.compute()


def max_box_acc_v2(
    score_maps: Any,
    gt_boxes: Any,
    *,
    protocol: str | Protocol = "wsolevaluation",
    thresholds: Sequence[float] | np.ndarray | None = None,
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
) -> MaxBoxAccV2Result:
    """One-shot :class:`MaxBoxAccV2` (arguments as :func:`max_box_acc`)."""
    acc = MaxBoxAccV2(protocol=protocol, thresholds=thresholds, iou_thresholds=iou_thresholds)
    acc.update(score_maps, gt_boxes)
    return acc.compute()


# ----------------------------------------------------------------------------------------------------------
# PxAP


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class PxAPResult:
    """PxAP (fraction in [0, 1]) and its precision-recall curve.

    ``thresholds`` float64 [T] (ascending, as given), ``precision`` / ``recall`` float64 [T] at each
    (precision is NaN where no pixel scores >= t). ``value`` also integrates the point t = 1.0 (the maxima of
    the normalised maps), as wsolevaluation does. ``best_threshold`` maximises the pixel F1 score.
    """

    value: float
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    best_threshold: float
    n_images: int
    protocol: str


class PxAP:
    """Streaming pixel average precision (Choe et al. 2020, wsolevaluation's ``MaskEvaluator``).

    ``update(score_maps, gt_masks, ignore_masks=None)``: maps [N, H, W] (or sequences of [H_i, W_i]), GT masks
    bool of the same shapes, optional ignore masks. Scores are the protocol's normalised maps (``protocol``
    decides normalisation and NaN handling only; no quantisation). ``thresholds`` (default
    ``np.arange(0, 1, 0.001)``) must be strictly increasing and < 1.
    """

    def __init__(
        self,
        *,
        protocol: str | Protocol = "wsolevaluation",
        thresholds: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        self.protocol = get_protocol(protocol)
        thr = _as_thresholds(WSOL_THRESHOLDS if thresholds is None else thresholds)
        _check_increasing("thresholds", thr)
        if thr[-1] >= 1.0:
            fail("thresholds", "< 1 (1.0 and 2.0 are appended, as in wsolevaluation)", f"max {thr[-1]}")
        self.thresholds = thr
        self._edges = np.concatenate([thr, [1.0, 2.0, 3.0]])
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._n = 0
        self._pos_hist = np.zeros(self._edges.size - 1, np.int64)
        self._neg_hist = np.zeros(self._edges.size - 1, np.int64)
        self._n_pos = 0

    def _hist(self, values: np.ndarray) -> np.ndarray:
        # np.histogram semantics: bins [e_i, e_i+1), the last one closed; values outside are dropped
        nb = self._edges.size - 1
        idx = np.searchsorted(self._edges, values, side="right") - 1
        idx[values == self._edges[-1]] = nb - 1
        return np.bincount(idx[(idx >= 0) & (idx < nb)], minlength=nb)

    def update(self, score_maps: Any, gt_masks: Any, ignore_masks: Any = None) -> None:
        """Add images (see the class docstring)."""
        maps = _batch("score_maps", score_maps)
        masks = _batch("gt_masks", gt_masks)
        lists: dict[str, list[Any]] = {"score_maps": maps, "gt_masks": masks}
        ignores = None if ignore_masks is None else _batch("ignore_masks", ignore_masks)
        if ignores is not None:
            lists["ignore_masks"] = ignores
        _same_length(lists)
        pos = np.zeros_like(self._pos_hist)  # committed only once every image went through
        neg = np.zeros_like(self._neg_hist)
        n_pos = 0
        for i, m in enumerate(maps):
            v, empty = _normalized(f"score_maps[{i}]", m, self.protocol)
            gt = self._mask(f"gt_masks[{i}]", masks[i], v.shape)
            keep = np.ones_like(gt)
            if ignores is not None:
                keep = ~self._mask(f"ignore_masks[{i}]", ignores[i], v.shape) | gt
            if empty:  # paper protocol, max <= 0: nothing is ever predicted
                v = np.full_like(v, -np.inf)
            pos += self._hist(v[gt])
            neg += self._hist(v[keep & ~gt])
            n_pos += int(gt.sum())
        self._pos_hist += pos
        self._neg_hist += neg
        self._n_pos += n_pos
        self._n += len(maps)

    @staticmethod
    def _mask(name: str, x: Any, shape: tuple[int, ...]) -> np.ndarray:
        arr = as_numpy(name, x)
        if arr.shape != shape:
            fail(name, f"a mask of the score map's shape {shape}", f"shape {tuple(arr.shape)}")
        if arr.dtype != np.bool_:
            if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all():
                fail(name, "a boolean mask (or 0/1 values)", f"dtype {arr.dtype} with other values")
            arr = arr.astype(bool)
        return arr

    def compute(self) -> PxAPResult:
        """PxAP over every image added since the last reset."""
        if self._n == 0:
            fail("PxAP", "at least one image (call update() first)", "0 images")
        if self._n_pos == 0:
            fail("gt_masks", "at least one foreground pixel over the data set", "none")
        # cumulative from the top: index 0 <-> t = 2.0, 1 <-> 1.0, then the thresholds descending
        tp = np.cumsum(self._pos_hist[::-1])
        fp = np.cumsum(self._neg_hist[::-1])
        pred = tp + fp
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(pred > 0, tp / np.where(pred > 0, pred, 1), np.nan)
        recall = tp / self._n_pos
        use = pred[1:] != 0
        ap = float((precision[1:] * np.diff(recall))[use].sum())
        prec_t = precision[2:][::-1].copy()
        rec_t = recall[2:][::-1].copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(prec_t + rec_t > 0, 2 * prec_t * rec_t / (prec_t + rec_t), 0.0)
        f1 = np.nan_to_num(f1, nan=0.0)
        return PxAPResult(
            value=ap,
            thresholds=self.thresholds.copy(),
            precision=prec_t,
            recall=rec_t,
            best_threshold=float(self.thresholds[int(np.argmax(f1))]),
            n_images=self._n,
            protocol=self.protocol.name,
        )


def pxap(
    score_maps: Any,
    gt_masks: Any,
    ignore_masks: Any = None,
    *,
    protocol: str | Protocol = "wsolevaluation",
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> PxAPResult:
    """One-shot :class:`PxAP`."""
    acc = PxAP(protocol=protocol, thresholds=thresholds)
    acc.update(score_maps, gt_masks, ignore_masks)
    return acc.compute()


# ----------------------------------------------------------------------------------------------------------
# where GT-known misses come from: one box against several instances


def union_box(gt_boxes: Any) -> np.ndarray:
    """The box around every box of ``gt_boxes [G, 4]`` (G >= 1) -> float64 ``[4]`` (the group of instances)."""
    g = as_boxes("gt_boxes", gt_boxes, allow_empty=False)
    return np.array([g[:, 0].min(), g[:, 1].min(), g[:, 2].max(), g[:, 3].max()], np.float64)


def instance_breakdown(
    boxes: Any, gt_boxes: Any, *, iou_threshold: float = 0.5, convention: str = "continuous"
) -> dict[str, float | int | None]:
    """GT-known localization of one box per image, split by how many GT boxes (instances) each image has.

    ``boxes [N, 4]``: the one box per image (the true class's); ``gt_boxes``: one ``[G_i, 4]`` array per image.
    An image is localised when ``max_g IoU(box, gt_g) >= iou_threshold`` (as ``gt_known_loc``). Returns
    ``single_box_images`` / ``multi_box_images`` (counts), ``gt_known_loc_single_box`` /
    ``gt_known_loc_multi_box`` (fractions, ``None`` without such images), ``group_loc_multi_box``: the fraction
    of multi-box images whose box has IoU >= ``iou_threshold`` with the :func:`union_box` of their GT boxes
    (one box drawn around the group of instances, which the per-instance criterion counts as a miss), and
    ``multi_box_share_of_misses``: the fraction of the missed images that have several GT boxes (``None``
    without misses).
    """
    check_number("iou_threshold", iou_threshold, low=0.0, high=1.0)
    check_choice("convention", convention, IOU_CONVENTIONS)
    gts = _per_image_gt("gt_boxes", gt_boxes)
    bx = as_boxes("boxes", boxes).reshape(-1, 4)
    if len(bx) != len(gts):
        fail("gt_boxes", f"one [G, 4] array per box ({len(bx)})", f"{len(gts)}")
    plus_one = convention == "wsol"
    ok = [bool(iou_matrix(b[None], g, plus_one).max() >= iou_threshold) for b, g in zip(bx, gts)]
    group = [bool(iou_matrix(b[None], union_box(g)[None], plus_one)[0, 0] >= iou_threshold) for b, g in zip(bx, gts)]
    return breakdown_counts(ok, group, [len(g) for g in gts])


def breakdown_counts(
    localised: Sequence[bool], group_localised: Sequence[bool], n_gt_boxes: Sequence[int]
) -> dict[str, float | int | None]:
    """:func:`instance_breakdown`'s numbers from per-image outcomes (each image: box matched some GT box; box
    matched the union of its GT boxes; how many GT boxes it has)."""
    ok = np.asarray(localised, bool).reshape(-1)
    group = np.asarray(group_localised, bool).reshape(-1)
    n = np.asarray(n_gt_boxes, np.int64).reshape(-1)
    if not (len(ok) == len(group) == len(n)):
        fail("n_gt_boxes", f"one entry per image ({len(ok)})", f"{len(group)} and {len(n)} entries")
    multi = n > 1

    def frac(v: np.ndarray) -> float | None:
        return float(v.mean()) if v.size else None

    return {
        "single_box_images": int((~multi).sum()),
        "multi_box_images": int(multi.sum()),
        "gt_known_loc_single_box": frac(ok[~multi]),
        "gt_known_loc_multi_box": frac(ok[multi]),
        "group_loc_multi_box": frac(group[multi]),
        "multi_box_share_of_misses": frac(multi[~ok]),
    }
