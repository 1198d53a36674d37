"""Box rules: one score map at input resolution -> one box, by rules beyond the paper's largest component.

A box rule has two parts, both pure functions of one map (numpy, ``[H, W]``):

1. **A threshold** on the normalised map ``v`` (``"max"``: ``max(M, 0) / max(M)``, the paper's; ``"minmax"``:
   ``(M - min) / (max - min)``; :func:`camloc.sweep.normalize_score_map`): ``"fixed"`` (one number for every
   image, the paper's 0.2), ``"otsu"`` (per image: Otsu's threshold of ``v``'s 256-bin histogram, unfitted) or
   ``"model"`` (per image: a ridge-regression :class:`ThresholdModel` of simple map statistics,
   :func:`map_features`, fitted on boxed calibration images by :mod:`camloc.calibrate`). Per-image thresholds
   are clipped to ``[0, 0.99]`` and rounded to the calibration grid (:data:`GRID`, steps of 0.01).
2. **A component rule** on the mask ``v >= t`` (8-connected components, :mod:`camloc.localization`):

   * ``"largest"``: the component with the most pixels (ties: the first in label order) — the paper's rule;
     with a fixed threshold and ``"max"`` it equals ``camloc.sweep.sweep_boxes`` of the ``paper`` protocol;
   * ``"mass"``: the component holding the largest total map mass ``sum v`` (a small bright blob beats a
     large dim one);
   * ``"merge"``: the box around every component holding at least ``min_mass`` of the mask's total mass
     (``min_mass = 0``: the box around the whole mask).

Maps whose normalised maximum is ``<= 0`` (no positive evidence, or a flat map under ``"minmax"``) give the
empty box ``(0, 0, 0, 0)``. Boxes are float32 ``(x0, y0, x1, y1)`` in the camloc convention (a component over
pixel columns ``c0..c1`` and rows ``r0..r1`` is ``(c0, r0, c1 + 1, r1 + 1)``), in the map's pixel frame.

:class:`BoxRule` (frozen) bundles the choices; ``rule.box(map)`` and ``rule.boxes(maps)`` apply it, and
``camloc explain`` / ``camloc evaluate`` apply a :class:`camloc.calibrate.Calibration`'s rule with one call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camloc._checks import check_choice, check_number, fail

__all__ = [
    "FEATURES",
    "GRID",
    "PAPER_RULE",
    "RULES",
    "THRESHOLD_MODES",
    "BoxRule",
    "ThresholdModel",
    "box_from_map",
    "map_features",
    "normalized_map",
    "otsu_threshold",
    "rule_boxes",
    "snap_threshold",
]

RULES = ("largest", "mass", "merge")
THRESHOLD_MODES = ("fixed", "otsu", "model")
NORMALIZE = ("max", "minmax")
#: The threshold grid of calibration (0, 0.01, ..., 0.99); per-image thresholds are rounded onto it.
GRID: np.ndarray = np.round(np.arange(0, 1, 0.01), 2)
#: Names of :func:`map_features`, in order.
FEATURES: tuple[str, ...] = (
    "mean",
    "std",
    "area_0.2",
    "area_0.4",
    "area_0.6",
    "area_0.8",
    "entropy",
    "otsu",
    "knee",
)
_AREA_LEVELS = (0.2, 0.4, 0.6, 0.8)
_KNEE_GRID = np.linspace(0.0, 1.0, 51)


def normalized_map(score_map: Any, *, normalize: str = "max") -> np.ndarray:
    """The normalised map ``v`` (float32 ``[H, W]`` in ``[0, 1]``) the rules threshold.

    ``"max"``: ``max(M, 0) / max(M)`` (zeros when ``max(M) <= 0``), the ``paper`` protocol's;
    ``"minmax"``: ``(M - min) / (max - min)`` (zeros when flat). NaN/inf maps raise a camloc error.
    """
    from camloc.sweep import normalize_score_map, replace

    check_choice("normalize", normalize, NORMALIZE)
    proto = "paper" if normalize == "max" else replace("paper", name="minmax", normalize="minmax")
    return normalize_score_map(score_map, protocol=proto).astype(np.float32)


def snap_threshold(t: float) -> float:
    """``t`` clipped to ``[0, 0.99]`` and rounded to the calibration grid :data:`GRID` (steps of 0.01)."""
    return float(GRID[_grid_index(t)])


def _grid_index(t: float) -> int:
    return int(min(len(GRID) - 1, max(0, round(float(t) * 100))))


def otsu_threshold(v: np.ndarray) -> float:
    """Otsu's threshold of a normalised map ``v`` (``[H, W]`` in ``[0, 1]``): the 256-bin histogram split
    maximising the between-class variance; pixels ``>= t`` are the foreground. When several cuts tie (empty bins
    between the two modes) the middle one (OpenCV takes the first). A map with one value -> 0."""
    a = np.asarray(v, np.float64).ravel()
    hist = np.bincount(np.clip((a * 255).astype(np.int64), 0, 255), minlength=256).astype(np.float64)
    p = hist / max(1.0, hist.sum())
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(p)  # weight of bins 0..k (background when the cut is after bin k)
    mu = np.cumsum(p * levels)
    mu_t = mu[-1]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_t * w0 - mu) ** 2 / (w0 * w1)
    between[(w0 <= 0) | (w1 <= 1e-12)] = -1.0
    best = float(between.max())
    if best < 0:
        return 0.0
    tied = np.flatnonzero(between >= best - 1e-12 * max(1.0, best))  # empty bins between the modes tie
    return (int(tied[(len(tied) - 1) // 2]) + 1) / 255.0


def map_features(v: np.ndarray) -> np.ndarray:
    """Statistics of a normalised map ``v`` (``[H, W]`` in ``[0, 1]``) -> float64 ``[len(FEATURES)]``.

    ``mean`` (= mean/max ratio), ``std``, ``area_t``: the fraction of pixels ``>= t`` for t = 0.2, 0.4, 0.6, 0.8,
    ``entropy`` of ``v / sum v`` divided by ``log(H W)`` (1 = flat), ``otsu`` (:func:`otsu_threshold`) and
    ``knee``: the threshold where the area-vs-threshold curve (51 levels) lies farthest below its chord.
    """
    a = np.asarray(v, np.float64).ravel()
    n = max(1, a.size)
    s = a.sum()
    if s > 0:
        q = a[a > 0] / s
        entropy = float(-(q * np.log(q)).sum() / np.log(n)) if n > 1 else 0.0
    else:
        entropy = 0.0
    srt = np.sort(a)
    area = 1.0 - np.searchsorted(srt, _KNEE_GRID, side="left") / n  # fraction >= t
    chord = area[0] + (area[-1] - area[0]) * _KNEE_GRID
    knee = float(_KNEE_GRID[int(np.argmax(chord - area))])
    areas = [float(x) for x in 1.0 - np.searchsorted(srt, np.asarray(_AREA_LEVELS), side="left") / n]
    return np.array([a.mean(), a.std(), *areas, entropy, otsu_threshold(v), knee], np.float64)


@dataclass(frozen=True)
class ThresholdModel:
    """Per-image threshold ``t = intercept + sum_i coef_i (f_i - mean_i) / scale_i``, clipped to ``[low, high]``
    and rounded to :data:`GRID`; ``f`` = :func:`map_features` of the normalised map (names in ``features``).
    ``ridge`` is the L2 penalty it was fitted with (recorded, not used to predict)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    low: float = 0.0
    high: float = 0.99
    ridge: float = 1.0

    def __post_init__(self) -> None:
        if tuple(self.features) != FEATURES:
            fail("features", f"the feature list {FEATURES}", tuple(self.features))
        for name in ("mean", "scale", "coef"):
            vals = getattr(self, name)
            if len(vals) != len(FEATURES) or not all(np.isfinite(float(x)) for x in vals):
                fail(name, f"{len(FEATURES)} finite numbers", f"{vals!r}")
            object.__setattr__(self, name, tuple(float(x) for x in vals))
        if any(x <= 0 for x in self.scale):
            fail("scale", "positive numbers", f"{self.scale!r}")
        check_number("intercept", self.intercept)
        check_number("low", self.low, low=0.0, high=0.99)
        check_number("high", self.high, low=self.low, high=0.99)
        object.__setattr__(self, "features", tuple(self.features))

    def predict_raw(self, features: np.ndarray) -> np.ndarray:
        """Unclipped predictions for features ``[n, F]`` (or ``[F]``) -> float64 ``[n]`` (or scalar array)."""
        f = (np.asarray(features, np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return self.intercept + f @ np.asarray(self.coef)

    def predict(self, features: np.ndarray) -> float:
        """The threshold of one image from its features ``[F]``: clipped and rounded to the grid."""
        t = float(np.clip(self.predict_raw(features), self.low, self.high))
        return snap_threshold(t)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> ThresholdModel:
        if not isinstance(d, dict):
            fail("model", "an object (threshold model parameters)", d, type_error=True)
        try:
            return cls(
                features=tuple(d["features"]),
                mean=tuple(d["mean"]),
                scale=tuple(d["scale"]),
                coef=tuple(d["coef"]),
                intercept=float(d["intercept"]),
                low=float(d.get("low", 0.0)),
                high=float(d.get("high", 0.99)),
                ridge=float(d.get("ridge", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            fail("model", "threshold model parameters (features, mean, scale, coef, intercept)", f"{d!r} ({e})")


def _select(
    labels: np.ndarray | None,
    boxes: np.ndarray,
    areas: np.ndarray,
    v: np.ndarray,
    specs: Sequence[tuple[str, float]],
) -> np.ndarray:
    """The box of each ``(rule, min_mass)`` in ``specs`` from one mask's components -> float32 ``[R, 4]``."""
    out = np.zeros((len(specs), 4), np.float32)
    if labels is None or not len(areas):
        return out
    mass: np.ndarray | None = None
    for r, (rule, min_mass) in enumerate(specs):
        if rule == "largest":
            out[r] = boxes[int(np.argmax(areas))]
            continue
        if mass is None:
            mass = np.bincount(labels.ravel(), weights=v.ravel(), minlength=len(areas) + 1)[1:]
        if rule == "mass":
            out[r] = boxes[int(np.argmax(mass))]
        else:  # merge
            total = float(mass.sum())
            keep = mass >= min_mass * total if total > 0 else np.ones(len(mass), bool)
            if not keep.any():  # cannot happen for min_mass <= 1; kept for safety
                keep = mass == mass.max()
            b = boxes[keep]
            out[r] = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
    return out


def rule_boxes(
    v: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    specs: Sequence[tuple[str, float]],
    *,
    connectivity: int = 8,
) -> np.ndarray:
    """Boxes of several rules at several thresholds on one normalised map -> float32 ``[R, T, 4]``.

    ``v``: ``[H, W]`` in ``[0, 1]`` (:func:`normalized_map`); ``specs``: ``(rule, min_mass)`` pairs; one labelling
    per threshold serves every rule (this is the calibration sweep).
    """
    from camloc.localization import _label_components

    check_choice("connectivity", connectivity, (4, 8))
    for rule, mm in specs:
        check_choice("rule", rule, RULES)
        check_number("min_mass", mm, low=0.0, high=1.0)
    v = np.ascontiguousarray(v, np.float32)
    out = np.zeros((len(specs), len(thresholds), 4), np.float32)
    if v.size == 0 or float(v.max()) <= 0:
        return out
    for k, t in enumerate(thresholds):
        # v is float32: compare with the smallest float32 >= t, which keeps exactly the pixels with v >= t
        t32 = np.float32(t)
        if float(t32) < float(t):
            t32 = np.nextafter(t32, np.float32(np.inf))
        m = (v >= t32).view(np.uint8) if t > 0 else np.ones(v.shape, np.uint8)
        boxes, areas, labels = _label_components(np.ascontiguousarray(m), connectivity)
        out[:, k] = _select(labels, boxes, areas, v, specs)
    return out


def box_from_map(
    score_map: Any,
    *,
    threshold: float = 0.2,
    rule: str = "largest",
    min_mass: float = 0.0,
    normalize: str = "max",
    connectivity: int = 8,
) -> np.ndarray:
    """The box (float32 ``[4]``, xyxy) of ``rule`` at a fixed ``threshold`` on a raw score map ``[H, W]``."""
    check_number("threshold", threshold, low=0.0, high=1.0)
    return BoxRule(
        rule=rule, threshold=threshold, min_mass=min_mass, normalize=normalize, connectivity=connectivity
    ).box(score_map)


@dataclass(frozen=True)
class BoxRule:
    """How one score map becomes one box (module docstring): a threshold mode and a component rule.

    Attributes:
        rule: ``"largest"`` (paper), ``"mass"`` or ``"merge"``.
        threshold: the fixed threshold (``threshold_mode="fixed"``), a fraction of the normalised map.
        threshold_mode: ``"fixed"``, ``"otsu"`` or ``"model"`` (needs ``model``).
        min_mass: ``"merge"`` only: a component joins the box when it holds ``>= min_mass`` of the mask's mass.
        model: the :class:`ThresholdModel` of ``threshold_mode="model"``.
        normalize: ``"max"`` (the ``paper`` protocol) or ``"minmax"`` (``wsolevaluation``'s normalisation).
        connectivity: 8 (paper) or 4.
    """

    rule: str = "largest"
    threshold: float = 0.2
    threshold_mode: str = "fixed"
    min_mass: float = 0.0
    model: ThresholdModel | None = None
    normalize: str = "max"
    connectivity: int = 8

    def __post_init__(self) -> None:
        check_choice("rule", self.rule, RULES)
        check_number("threshold", self.threshold, low=0.0, high=1.0)
        check_choice("threshold_mode", self.threshold_mode, THRESHOLD_MODES)
        check_number("min_mass", self.min_mass, low=0.0, high=1.0)
        check_choice("normalize", self.normalize, NORMALIZE)
        check_choice("connectivity", self.connectivity, (4, 8))
        if self.threshold_mode == "model" and not isinstance(self.model, ThresholdModel):
            fail("model", "a ThresholdModel when threshold_mode='model'", self.model)
        if self.threshold_mode != "model" and self.model is not None:
            fail("model", "None unless threshold_mode='model'", "a ThresholdModel")
        if self.rule != "merge" and self.min_mass != 0:
            fail("min_mass", "0 unless rule='merge'", self.min_mass)

    def threshold_for(self, v: np.ndarray) -> float:
        """The threshold this rule uses on the normalised map ``v`` (per image for ``otsu`` / ``model``)."""
        if self.threshold_mode == "fixed":
            return float(self.threshold)
        if self.threshold_mode == "otsu":
            return snap_threshold(otsu_threshold(v))
        assert self.model is not None
        return self.model.predict(map_features(v))

    def box(self, score_map: Any) -> np.ndarray:
        """The box of a raw score map ``[H, W]`` (numpy or torch) -> float32 ``[4]`` xyxy in its pixel frame."""
        v = normalized_map(score_map, normalize=self.normalize)
        return rule_boxes(v, [self.threshold_for(v)], [(self.rule, self.min_mass)], connectivity=self.connectivity)[
            0, 0
        ]

    def boxes(self, maps: Any) -> np.ndarray:
        """Boxes of a batch of raw maps ``[N, m, H, W]`` (numpy or torch) -> float32 ``[N, m, 4]``."""
        from camloc._sweep_boxes import as_numpy

        arr = as_numpy("maps", maps)
        if arr.ndim != 4:
            fail("maps", "a [N, m, H, W] batch of score maps", f"shape {tuple(arr.shape)}")
        out = np.zeros((*arr.shape[:2], 4), np.float32)
        for i in range(arr.shape[0]):
            for j in range(arr.shape[1]):
                out[i, j] = self.box(arr[i, j])
        return out

    @property
    def is_paper(self) -> bool:
        """Whether this is the paper's rule at some fixed threshold (largest 8-connected component, max)."""
        return (
            self.rule == "largest"
            and self.threshold_mode == "fixed"
            and self.normalize == "max"
            and self.connectivity == 8
        )

    def describe(self) -> str:
        """One line for manifests and reports, e.g. ``"mass component, threshold 0.35 of the max"``."""
        what = {"largest": "largest component", "mass": "highest-mass component"}.get(
            self.rule, f"box around components holding >= {self.min_mass:g} of the mass"
        )
        norm = "of the max" if self.normalize == "max" else "of the min-max range"
        if self.threshold_mode == "fixed":
            thr = f"threshold {self.threshold:g} {norm}"
        elif self.threshold_mode == "otsu":
            thr = f"per-image Otsu threshold {norm}"
        else:
            thr = f"per-image threshold {norm} from a ridge model of map statistics"
        return f"{what} ({self.connectivity}-connected), {thr}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "threshold": self.threshold,
            "threshold_mode": self.threshold_mode,
            "min_mass": self.min_mass,
            "model": None if self.model is None else self.model.to_dict(),
            "normalize": self.normalize,
            "connectivity": self.connectivity,
        }

    @classmethod
    def from_dict(cls, d: Any) -> BoxRule:
        if not isinstance(d, dict):
            fail("rule", "an object (box rule)", d, type_error=True)
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - known
        if extra:
            fail("rule", f"an object with keys among {sorted(known)}", f"unknown keys {sorted(extra)}")
        kw = dict(d)
        if kw.get("model") is not None:
            kw["model"] = ThresholdModel.from_dict(kw["model"])
        try:
            return cls(**kw)
        except TypeError as e:  # a value of the wrong kind reached a comparison
            fail("rule", "a valid box rule", f"{d!r} ({e})", type_error=True)


#: The paper's rule: largest 8-connected component at 20 % of the max.
PAPER_RULE = BoxRule()
