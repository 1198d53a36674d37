"""Calibration of the box rule on a few boxed images (``camloc calibrate``), and the calib.json it writes.

Choe et al. (CVPR 2020) tune a WSOL method's threshold on a separate boxed split; this module chooses the
threshold *and* the box rule (:mod:`camloc.boxes`: ``largest`` / ``mass`` / ``merge`` components, fixed / Otsu
/ fitted per-image thresholds) for one map method on given boxes, and reports numbers only on images it did not
see.

**One pass.** :func:`collect_table` runs :func:`camloc.evaluate.evaluate_samples` once (same data formats,
protocol presets, image pipeline and map resize as ``camloc evaluate``) and, per image, turns the true class's
map at the input size into a row of a :class:`CalibrationTable`: the IoU of every rule's box at every threshold
of :data:`camloc.boxes.GRID` (one labelling per threshold serves all rules), the map statistics of
:func:`camloc.boxes.map_features`, the Otsu threshold and whether top-1 is right. Maps are not kept (memory is
``O(images x rules x 100)`` floats); every later step is table look-ups.

**Objective** (``objective``), over the calibration images, of the box of the *true* class's map:

* ``"gt_known"`` (default): the fraction whose box has IoU >= 0.5 with some GT box (GT-known localization);
* ``"top1_loc"``: the fraction whose top-1 class is right and whose box has IoU >= 0.5 (top-1 localization);
* ``"iou_mean3"``: the mean over IoU 0.3 / 0.5 / 0.7 of the fraction reaching it (MaxBoxAccV2's levels, with the
  rule's single box instead of every candidate).

**Choice.** Each candidate (rule x threshold mode, :func:`candidates`) is fitted on the calibration images —
``fixed``: the grid threshold maximising the objective (ties: the middle of the tied ones); ``otsu``: nothing
to fit; ``model``: a :class:`camloc.boxes.ThresholdModel`, ridge regression from the map statistics to each
image's target threshold (the median of the grid thresholds where its box reaches the highest IoU level of the
objective that it reaches at all; weight 1 when it reaches 0.5, 0.2 otherwise; images with a wrong top-1 get
weight 0 under ``top1_loc``), its L2 penalty chosen by an inner 3-fold cross-validation of the objective. The
candidate with the best ``folds``-fold cross-validated objective wins (ties: the simpler, in candidate order)
and is refitted on every calibration image. ``cv_score`` is that cross-validated value; ``score`` the refitted
rule's value on the calibration images themselves (optimistic).

**Held-out numbers.** Images are split by their position in the data set: fold ``k`` of ``n`` holds the images
with ``index % n == k`` (:func:`split_indices`; ``camloc calibrate/evaluate --subset k/n``). :func:`holdout`
(``camloc calibrate --holdout n``) calibrates on every fold but one and scores the rest, for each fold in turn,
so every image is scored by a calibration that never saw it; it reports each candidate, the auto-chosen rule and
the paper's rule on the same images.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from camloc._checks import check_choice, check_number, fail
from camloc.boxes import (
    FEATURES,
    GRID,
    RULES,
    THRESHOLD_MODES,
    BoxRule,
    ThresholdModel,
    _grid_index,
    map_features,
    normalized_map,
    otsu_threshold,
    rule_boxes,
)
from camloc.errors import CamlocError

__all__ = [
    "OBJECTIVES",
    "SCHEMA_VERSION",
    "Calibration",
    "CalibrationTable",
    "Candidate",
    "calibrate_samples",
    "candidates",
    "choose_rule",
    "collect_table",
    "fit_candidate",
    "holdout",
    "load_calibration",
    "objective_value",
    "rule_of",
    "sample_key",
    "score_rule",
    "split_indices",
    "table_from_maps",
]

SCHEMA_VERSION = 1
OBJECTIVES = ("gt_known", "top1_loc", "iou_mean3")
_DELTAS = {"gt_known": (0.5,), "top1_loc": (0.5,), "iou_mean3": (0.3, 0.5, 0.7)}
#: Default ``(rule, min_mass)`` variants swept by calibration.
DEFAULT_SPECS: tuple[tuple[str, float], ...] = (
    ("largest", 0.0),
    ("mass", 0.0),
    ("merge", 0.0),
    ("merge", 0.05),
    ("merge", 0.2),
)
_RIDGE = (0.01, 0.1, 1.0, 10.0)  # L2 penalties, in units of the total sample weight


# ----------------------------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True, eq=False)  # holds arrays
class CalibrationTable:
    """Per-image look-up table of a calibration set (``n`` images, ``R`` rule variants, ``T = len(GRID)``).

    Attributes:
        keys: ``n`` image keys (:func:`sample_key`).
        iou: float32 ``[n, R, T]``: best IoU with a GT box of rule variant ``r``'s box at ``GRID[t]``.
        features: float64 ``[n, F]``: :func:`camloc.boxes.map_features` of each normalised map.
        otsu: int64 ``[n]``: grid index of each map's Otsu threshold.
        top1_ok: bool ``[n]``: the top-1 class is the true class.
        specs: the ``R`` ``(rule, min_mass)`` variants.
        normalize: the maps' normalisation (``"max"`` / ``"minmax"``).
        iou_convention: the protocol's IoU convention.
    """

    keys: tuple[str, ...]
    iou: np.ndarray
    features: np.ndarray
    otsu: np.ndarray
    top1_ok: np.ndarray
    specs: tuple[tuple[str, float], ...]
    normalize: str = "max"
    iou_convention: str = "continuous"

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, idx: np.ndarray | Sequence[int]) -> CalibrationTable:
        """The rows ``idx`` (indices or a boolean mask)."""
        ix = np.asarray(idx)
        if ix.dtype == bool:
            ix = np.flatnonzero(ix)
        return CalibrationTable(
            tuple(self.keys[i] for i in ix.tolist()),
            self.iou[ix],
            self.features[ix],
            self.otsu[ix],
            self.top1_ok[ix],
            self.specs,
            self.normalize,
            self.iou_convention,
        )


def table_from_maps(
    maps: Sequence[Any],
    gt_boxes: Sequence[Any],
    *,
    top1_ok: Sequence[bool] | np.ndarray | None = None,
    keys: Sequence[str] | None = None,
    specs: Sequence[tuple[str, float]] = DEFAULT_SPECS,
    normalize: str = "max",
    iou_convention: str = "continuous",
) -> CalibrationTable:
    """A :class:`CalibrationTable` from raw score maps ``[H_i, W_i]`` and their GT boxes ``[G_i, 4]`` (same frame).

    ``top1_ok`` defaults to all True; ``keys`` to ``"0", "1", ...``.
    """
    from camloc._sweep_boxes import IOU_CONVENTIONS, as_boxes, iou_matrix

    check_choice("iou_convention", iou_convention, IOU_CONVENTIONS)
    specs = tuple((str(r), float(m)) for r, m in specs)
    if not specs:
        fail("specs", "at least one (rule, min_mass) variant", "none")
    n = len(maps)
    if len(gt_boxes) != n:
        fail("gt_boxes", f"one [G, 4] array per map ({n})", f"{len(gt_boxes)}")
    iou = np.zeros((n, len(specs), len(GRID)), np.float32)
    feats = np.zeros((n, len(FEATURES)), np.float64)
    otsu = np.zeros(n, np.int64)
    plus_one = iou_convention == "wsol"
    for i in range(n):
        v = normalized_map(maps[i], normalize=normalize)
        gt = as_boxes(f"gt_boxes[{i}]", gt_boxes[i], allow_empty=False)
        b = rule_boxes(v, GRID, specs).reshape(-1, 4).astype(np.float64)
        iou[i] = iou_matrix(b, gt, plus_one).max(axis=1).reshape(len(specs), len(GRID))
        feats[i] = map_features(v)
        otsu[i] = _grid_index(otsu_threshold(v))
    ok = np.ones(n, bool) if top1_ok is None else np.asarray(top1_ok, bool).reshape(-1)
    if ok.shape != (n,):
        fail("top1_ok", f"{n} booleans", f"shape {ok.shape}")
    ks = tuple(str(i) for i in range(n)) if keys is None else tuple(keys)
    if len(ks) != n:
        fail("keys", f"{n} keys", f"{len(ks)}")
    return CalibrationTable(ks, iou, feats, otsu, ok, specs, normalize, iou_convention)


def _concat(tables: Sequence[CalibrationTable]) -> CalibrationTable:
    t0 = tables[0]
    return CalibrationTable(
        tuple(k for t in tables for k in t.keys),
        np.concatenate([t.iou for t in tables]),
        np.concatenate([t.features for t in tables]),
        np.concatenate([t.otsu for t in tables]),
        np.concatenate([t.top1_ok for t in tables]),
        t0.specs,
        t0.normalize,
        t0.iou_convention,
    )


def sample_key(sample: Any) -> str:
    """A short stable key of an annotated sample: sha1 of ``file name | class index`` (12 hex digits)."""
    text = f"{Path(sample.path).name}|{int(sample.class_idx)}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _fingerprint(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode("ascii")).hexdigest()[:16]


def split_indices(n: int, subset: tuple[int, int] | str) -> np.ndarray:
    """Positions (int64) of fold ``k`` of ``m`` among ``n`` items: ``index % m == k``. ``subset``: ``(k, m)`` or
    ``"k/m"``; ``"even"`` / ``"odd"`` are ``0/2`` / ``1/2``."""
    k, m = _parse_subset(subset)
    return np.arange(k, n, m, dtype=np.int64)


def _parse_subset(subset: tuple[int, int] | str) -> tuple[int, int]:
    if isinstance(subset, str):
        named = {"even": (0, 2), "odd": (1, 2)}
        if subset in named:
            return named[subset]
        try:
            a, b = subset.split("/")
            subset = (int(a), int(b))
        except ValueError:
            fail("subset", "'K/N' with 0 <= K < N (or 'even' / 'odd')", repr(subset))
    if not (isinstance(subset, tuple) and len(subset) == 2) or not all(isinstance(v, int) for v in subset):
        fail("subset", "a (K, N) pair of integers or 'K/N'", subset, type_error=True)
    k, m = subset
    if m < 2 or not 0 <= k < m:
        fail("subset", "'K/N' with N >= 2 and 0 <= K < N", f"{k}/{m}")
    return k, m


class _TableSink:
    """``evaluate_samples(on_maps=...)`` callback building the table batch by batch."""

    def __init__(self, samples: Sequence[Any], specs: Sequence[tuple[str, float]], normalize: str, conv: str):
        self.samples = samples
        self.specs = tuple(specs)
        self.normalize = normalize
        self.conv = conv
        self.parts: list[CalibrationTable] = []

    def __call__(self, batch: Any) -> None:
        ok = batch.top_classes[:, 0] == batch.true_class
        keys = [sample_key(self.samples[i]) for i in batch.indices]
        self.parts.append(
            table_from_maps(
                list(batch.maps), batch.gt_boxes, top1_ok=ok, keys=keys, specs=self.specs,
                normalize=self.normalize, iou_convention=self.conv,
            )
        )  # fmt: skip


def _method_kwargs(method: Any, method_args: dict[str, Any] | None) -> dict[str, Any]:
    """``method=`` / ``method_args=`` for :func:`camloc.evaluate.evaluate_samples` (method args need a build of
    evaluate that takes them: :mod:`camloc.methods`)."""
    import inspect

    from camloc.evaluate import evaluate_samples

    kw: dict[str, Any] = {"method": method}
    if method_args:
        if "method_args" not in inspect.signature(evaluate_samples).parameters:
            fail("method_args", "empty (this camloc has no configurable map methods)", repr(method_args))
        kw["method_args"] = dict(method_args)
    return kw


def collect_table(
    samples: Sequence[Any],
    model: Any,
    info: Any,
    *,
    protocol: Any = "paper",
    method: Any = "cam",
    method_args: dict[str, Any] | None = None,
    specs: Sequence[tuple[str, float]] = DEFAULT_SPECS,
    batch_size: int = 32,
    device: Any = "cpu",
    workers: int | None = None,
    progress: bool = False,
) -> tuple[CalibrationTable, Any]:
    """One evaluation pass over ``samples`` -> (:class:`CalibrationTable` of the images with GT boxes, the
    :class:`camloc.evaluate.EvalResult` of the paper's rule on them). Unreadable images are skipped
    (``EvalResult.failures``)."""
    from camloc.evaluate import evaluate_samples
    from camloc.sweep import get_protocol

    proto = get_protocol(protocol)
    normalize = "minmax" if proto.normalize == "minmax" else "max"
    sink = _TableSink(samples, specs, normalize, proto.iou_convention)
    res = evaluate_samples(
        samples, model, info, protocol=proto, batch_size=batch_size, device=device, workers=workers,
        progress=progress, on_maps=sink, **_method_kwargs(method, method_args),
    )  # fmt: skip
    if not sink.parts:
        fail("samples", "at least one readable image with a ground-truth box", "none")
    return _concat(sink.parts), res


# ----------------------------------------------------------------------------------------------------------
# scoring, fitting, choosing


@dataclass(frozen=True)
class Candidate:
    """One family of box rules: a ``(rule, min_mass)`` variant and a threshold mode."""

    rule: str
    min_mass: float
    mode: str

    @property
    def name(self) -> str:
        """``rule/mode``, e.g. ``"largest/fixed"``, ``"merge@0.05/otsu"``."""
        return f"{_spec_name(self.rule, self.min_mass)}/{self.mode}"


def _spec_name(rule: str, min_mass: float) -> str:
    return rule if rule != "merge" else f"merge@{min_mass:g}"


def candidates(
    specs: Sequence[tuple[str, float]] = DEFAULT_SPECS, modes: Sequence[str] = THRESHOLD_MODES
) -> list[Candidate]:
    """Every ``spec x mode`` candidate, simplest first (modes in the given order within each spec)."""
    for m in modes:
        check_choice("threshold_mode", m, THRESHOLD_MODES)
    return [Candidate(r, float(mm), m) for m in modes for r, mm in specs]


def _objective_vector(iou: np.ndarray, top1_ok: np.ndarray, objective: str) -> np.ndarray:
    """Per-image contribution (``[n, ...]``) of boxes with IoU ``iou [n, ...]`` to the objective."""
    deltas = _DELTAS[objective]
    hit = np.mean([iou >= d for d in deltas], axis=0)
    if objective == "top1_loc":
        hit = hit * top1_ok.reshape((-1,) + (1,) * (iou.ndim - 1))
    return hit


def _spec_index(table: CalibrationTable, rule: BoxRule) -> int:
    key = (rule.rule, float(rule.min_mass))
    if key not in table.specs:
        fail("rule", f"one of the table's variants {list(table.specs)}", f"{key}")
    if rule.normalize != table.normalize:
        fail("rule", f"a rule on {table.normalize!r}-normalised maps (the table's)", rule.normalize)
    return table.specs.index(key)


def _threshold_indices(table: CalibrationTable, rule: BoxRule) -> np.ndarray:
    n = len(table)
    if rule.threshold_mode == "fixed":
        t = float(rule.threshold)
        k = _grid_index(t)
        if abs(float(GRID[k]) - t) > 1e-9:
            fail("rule.threshold", "a threshold on the calibration grid (multiples of 0.01)", t)
        return np.full(n, k, np.int64)
    if rule.threshold_mode == "otsu":
        return table.otsu.copy()
    assert rule.model is not None
    raw = rule.model.predict_raw(table.features) if n else np.zeros(0)
    clipped = np.clip(raw, rule.model.low, rule.model.high)  # as ThresholdModel.predict, then onto the grid
    return np.clip(np.round(clipped * 100), 0, len(GRID) - 1).astype(np.int64)


def score_rule(table: CalibrationTable, rule: BoxRule) -> np.ndarray:
    """Per-image IoU (float32 ``[n]``) of ``rule``'s box on the table's images (fixed thresholds on the grid)."""
    r = _spec_index(table, rule)
    t = _threshold_indices(table, rule)
    return table.iou[np.arange(len(table)), r, t]


def objective_value(table: CalibrationTable, ious: np.ndarray, objective: str) -> float:
    """The objective of per-image IoUs ``ious [n]`` of the table's images (NaN for no image)."""
    check_choice("objective", objective, OBJECTIVES)
    if len(ious) == 0:
        return float("nan")
    return float(_objective_vector(np.asarray(ious), table.top1_ok, objective).mean())


def _best_fixed(iou_r: np.ndarray, top1_ok: np.ndarray, objective: str) -> float:
    curve = _objective_vector(iou_r, top1_ok, objective).mean(axis=0)  # [T]
    tied = np.flatnonzero(curve >= curve.max() - 1e-12)
    return float(GRID[int(tied[(len(tied) - 1) // 2])])


def _targets(iou_r: np.ndarray, top1_ok: np.ndarray, objective: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-image target threshold and weight for the threshold model (see the module docstring)."""
    deltas = sorted(_DELTAS[objective], reverse=True)
    n = iou_r.shape[0]
    y = np.zeros(n)
    w = np.zeros(n)
    for i in range(n):
        row = iou_r[i]
        top = float(row.max())
        level = next((d for d in deltas if top >= d), top)  # the highest level of the objective reached
        good = np.flatnonzero(row >= level)
        y[i] = GRID[int(good[(good.size - 1) // 2])]
        w[i] = 1.0 if top >= 0.5 else 0.2
    if objective == "top1_loc":
        w = w * top1_ok
    return y, w


def _ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, lam: float) -> ThresholdModel:
    sw = float(w.sum())
    if sw <= 0:
        mean, scale, coef, icpt = np.zeros(x.shape[1]), np.ones(x.shape[1]), np.zeros(x.shape[1]), 0.2
    else:
        mean = (w[:, None] * x).sum(0) / sw
        scale = np.sqrt((w[:, None] * (x - mean) ** 2).sum(0) / sw)
        scale = np.where(scale > 1e-6, scale, 1.0)
        z = (x - mean) / scale
        icpt = float((w * y).sum() / sw)
        a = (z * w[:, None]).T @ z + lam * sw * np.eye(x.shape[1])
        coef = np.linalg.solve(a, (z * w[:, None]).T @ (y - icpt))
    return ThresholdModel(
        features=FEATURES,
        mean=tuple(mean.tolist()),
        scale=tuple(scale.tolist()),
        coef=tuple(coef.tolist()),
        intercept=icpt,
        ridge=lam,
    )


def _model_rule(table: CalibrationTable, c: Candidate, objective: str, lam: float) -> BoxRule:
    r = table.specs.index((c.rule, c.min_mass))
    y, w = _targets(table.iou[:, r], table.top1_ok, objective)
    m = _ridge(table.features, y, w, lam)
    return BoxRule(rule=c.rule, min_mass=c.min_mass, threshold_mode="model", model=m, normalize=table.normalize)


def fit_candidate(table: CalibrationTable, c: Candidate, *, objective: str = "gt_known") -> BoxRule:
    """Fit candidate ``c`` on every image of ``table`` (see the module docstring) -> its :class:`BoxRule`."""
    check_choice("objective", objective, OBJECTIVES)
    key = (c.rule, float(c.min_mass))
    if key not in table.specs:
        fail("candidate", f"a variant of the table {list(table.specs)}", f"{key}")
    base = {"rule": c.rule, "min_mass": c.min_mass, "normalize": table.normalize}
    if c.mode == "otsu":
        return BoxRule(threshold_mode="otsu", **base)  # type: ignore[arg-type]
    r = table.specs.index(key)
    if c.mode == "fixed" or len(table) < 3:
        t = _best_fixed(table.iou[:, r], table.top1_ok, objective) if len(table) else 0.2
        if c.mode == "fixed":
            return BoxRule(threshold=t, **base)  # type: ignore[arg-type]
    # model: the ridge penalty by an inner 3-fold cross-validation of the objective
    n = len(table)
    if n < 6:
        return _model_rule(table, c, objective, 1.0)
    best_lam, best = _RIDGE[0], -1.0
    for lam in _RIDGE:
        scores = np.zeros(n)
        for f in range(3):
            test = np.arange(n) % 3 == f
            rule = _model_rule(table.subset(~test), c, objective, lam)
            sub = table.subset(test)
            scores[test] = _objective_vector(score_rule(sub, rule), sub.top1_ok, objective)
        if scores.mean() > best + 1e-12:
            best_lam, best = lam, float(scores.mean())
    return _model_rule(table, c, objective, best_lam)


def _cv_ious(table: CalibrationTable, c: Candidate, objective: str, folds: int) -> np.ndarray:
    n = len(table)
    out = np.zeros(n, np.float32)
    k = min(folds, n)
    if k < 2:
        return score_rule(table, fit_candidate(table, c, objective=objective))
    for f in range(k):
        test = np.arange(n) % k == f
        rule = fit_candidate(table.subset(~test), c, objective=objective)
        out[test] = score_rule(table.subset(test), rule)
    return out


def choose_rule(
    table: CalibrationTable,
    *,
    objective: str = "gt_known",
    cands: Sequence[Candidate] | None = None,
    folds: int = 5,
) -> tuple[BoxRule, Candidate, list[dict[str, Any]]]:
    """The candidate with the best ``folds``-fold cross-validated objective, refitted on all of ``table``.

    Returns (rule, its candidate, one record per candidate: ``name``, ``cv_score``, ``score`` (refitted, in
    sample), ``threshold`` (fixed) — in candidate order).
    """
    check_choice("objective", objective, OBJECTIVES)
    check_number("folds", folds, low=1, integer=True)
    if len(table) == 0:
        fail("table", "at least one image", "an empty table")
    cands = list(candidates(table.specs) if cands is None else cands)
    if not cands:
        fail("cands", "at least one candidate", "none")
    records: list[dict[str, Any]] = []
    best_i, best = 0, -1.0
    for i, c in enumerate(cands):
        cv = objective_value(table, _cv_ious(table, c, objective, folds), objective)
        rule = fit_candidate(table, c, objective=objective)
        rec = {"name": c.name, "cv_score": cv, "score": objective_value(table, score_rule(table, rule), objective)}
        if rule.threshold_mode == "fixed":
            rec["threshold"] = rule.threshold
        records.append(rec)
        if cv > best + 1e-12:
            best_i, best = i, cv
    chosen = cands[best_i]
    return fit_candidate(table, chosen, objective=objective), chosen, records


def _rates(table: CalibrationTable, ious: np.ndarray) -> dict[str, float]:
    ok = np.asarray(ious) >= 0.5
    return {
        "gt_known_loc": float(ok.mean()),
        "top1_loc": float((ok & table.top1_ok).mean()),
        "iou_mean3": float(np.mean([(np.asarray(ious) >= d).mean() for d in (0.3, 0.5, 0.7)])),
        "mean_iou": float(np.mean(ious)),
    }


def holdout(
    table: CalibrationTable,
    *,
    folds: int = 2,
    objective: str = "gt_known",
    cands: Sequence[Candidate] | None = None,
    cv_folds: int = 5,
) -> dict[str, Any]:
    """Cross-fitted numbers: for each fold ``k`` (images ``index % folds == k``), calibrate on the other folds
    and score fold ``k``; pool the scores so every image is scored by a calibration that never saw it.

    Returns a JSON-ready dict: ``folds``, ``objective``, ``images``, ``top1_cls`` (of these images), ``chosen``
    (per fold: the candidate chosen, its threshold, held-out numbers), ``auto`` (pooled numbers of the chosen
    rules), ``paper`` (the paper rule, largest component at 0.2), ``candidates`` (pooled numbers of every
    candidate fitted on the other folds), ``oracle`` (per rule variant: the fraction of images whose box has IoU
    >= 0.5 at *some* grid threshold, the ceiling of any per-image threshold). Numbers: ``gt_known_loc``,
    ``top1_loc``, ``iou_mean3``, ``mean_iou``.
    """
    check_number("folds", folds, low=2, integer=True)
    n = len(table)
    if n < folds:
        fail("folds", f"<= the number of images ({n})", folds)
    cands = list(candidates(table.specs) if cands is None else cands)
    auto = np.zeros(n, np.float32)
    per_cand = np.zeros((len(cands), n), np.float32)
    chosen: list[dict[str, Any]] = []
    paper = BoxRule(normalize=table.normalize)
    for k in range(folds):
        test = np.arange(n) % folds == k
        train, held = table.subset(~test), table.subset(test)
        rule, cand, _ = choose_rule(train, objective=objective, cands=cands, folds=cv_folds)
        auto[test] = score_rule(held, rule)
        rec: dict[str, Any] = {"fold": f"{k}/{folds}", "candidate": cand.name, "rule": rule.describe()}
        rec.update(_rates(held, auto[test]))
        chosen.append(rec)
        for j, c in enumerate(cands):
            per_cand[j, test] = score_rule(held, fit_candidate(train, c, objective=objective))
    has_paper = ("largest", 0.0) in table.specs
    return {
        "folds": folds,
        "objective": objective,
        "images": n,
        "top1_cls": float(table.top1_ok.mean()),
        "chosen": chosen,
        "auto": _rates(table, auto),
        "paper": _rates(table, score_rule(table, paper)) if has_paper else None,
        "candidates": [{"name": c.name, **_rates(table, per_cand[j])} for j, c in enumerate(cands)],
        "oracle": {
            _spec_name(r, m): float((table.iou[:, i].max(axis=1) >= 0.5).mean()) for i, (r, m) in enumerate(table.specs)
        },
    }


# ----------------------------------------------------------------------------------------------------------
# the calibration file


@dataclass(frozen=True)
class Calibration:
    """A calibrated box rule for one map method, with where it came from (``calib.json``).

    ``rule.box(map)`` / ``rule.boxes(maps)`` apply it; ``evaluate_samples(calibration=...)`` and
    ``explain_images(calibration=...)`` take it whole. ``image_keys``: :func:`sample_key` of every calibration
    image (sorted), so an evaluation can tell how many of its images were used for calibration.
    """

    rule: BoxRule
    method: str = "cam"
    method_args: dict[str, Any] = field(default_factory=dict)
    protocol: str = "paper"
    model: str = ""
    objective: str = "gt_known"
    score: float = float("nan")
    cv_score: float | None = None
    n_images: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    image_keys: tuple[str, ...] = ()
    candidates: tuple[dict[str, Any], ...] = ()
    baseline: dict[str, Any] = field(default_factory=dict)
    holdout: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rule, BoxRule):
            fail("rule", "a camloc.boxes.BoxRule", self.rule, type_error=True)
        if not isinstance(self.method, str) or not self.method:
            fail("method", "a method name", self.method, type_error=True)
        if not isinstance(self.method_args, dict):
            fail("method_args", "a dict", self.method_args, type_error=True)
        check_choice("objective", self.objective, OBJECTIVES)
        object.__setattr__(self, "image_keys", tuple(sorted(self.image_keys)))

    @property
    def fingerprint(self) -> str:
        """A short hash of the rule, method and method arguments (what decides the boxes)."""
        import json

        doc = {"rule": self.rule.to_dict(), "method": self.method, "method_args": self.method_args}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def overlap(self, keys: Sequence[str]) -> int:
        """How many of ``keys`` (:func:`sample_key`) were calibration images."""
        own = set(self.image_keys)
        return sum(k in own for k in keys)

    def to_dict(self) -> dict[str, Any]:
        from camloc import __version__

        return {
            "schema_version": SCHEMA_VERSION,
            "tool": "camloc",
            "version": __version__,
            "command": "calibrate",
            "method": self.method,
            "method_args": dict(self.method_args),
            "model": self.model,
            "protocol": self.protocol,
            "objective": self.objective,
            "rule": self.rule.to_dict(),
            "rule_description": self.rule.describe(),
            "fingerprint": self.fingerprint,
            "score": _num(self.score),
            "cv_score": _num(self.cv_score),
            "n_images": self.n_images,
            "data": dict(self.data),
            "baseline": dict(self.baseline),
            "candidates": [dict(c) for c in self.candidates],
            "holdout": self.holdout,
            "image_keys": list(self.image_keys),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Calibration:
        if not isinstance(d, dict):
            fail("calibration", "a JSON object written by camloc calibrate", d, type_error=True)
        if d.get("schema_version") != SCHEMA_VERSION or d.get("command") != "calibrate":
            fail(
                "calibration",
                f"a camloc calibrate file (schema_version {SCHEMA_VERSION})",
                f"schema_version {d.get('schema_version')!r}, command {d.get('command')!r}",
            )
        for key in ("rule", "method"):
            if key not in d:
                fail("calibration", f"an object with a {key!r} entry", f"keys {sorted(d)}")
        try:
            return cls._from_checked_dict(d)
        except CamlocError:
            raise
        except (TypeError, ValueError) as e:  # a hand-edited or foreign file: name the file's problem, no traceback
            fail("calibration", "a file written by camloc calibrate", f"a malformed entry ({type(e).__name__}: {e})")

    @classmethod
    def _from_checked_dict(cls, d: dict[str, Any]) -> Calibration:
        cv = d.get("cv_score")
        kinds = (("method_args", dict), ("data", dict), ("baseline", dict), ("image_keys", list), ("candidates", list))
        for key, kind in kinds:
            if d.get(key) is not None and not isinstance(d[key], kind):
                fail("calibration", f"a file whose {key!r} is a JSON {kind.__name__}", repr(d[key])[:80])
        if not isinstance(d["method"], str):
            fail("calibration", "a file whose 'method' is a method name", repr(d["method"])[:80])
        return cls(
            rule=BoxRule.from_dict(d["rule"]),
            method=d["method"],
            method_args=d.get("method_args") or {},
            protocol=str(d.get("protocol", "paper")),
            model=str(d.get("model", "")),
            objective=d.get("objective", "gt_known"),
            score=float("nan") if d.get("score") is None else float(d["score"]),
            cv_score=None if cv is None else float(cv),
            n_images=int(d.get("n_images", 0)),
            data=dict(d.get("data") or {}),
            image_keys=tuple(d.get("image_keys") or ()),
            candidates=tuple(d.get("candidates") or ()),
            baseline=dict(d.get("baseline") or {}),
            holdout=d.get("holdout"),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``calib.json`` atomically."""
        from camloc._io import atomic_write_json

        atomic_write_json(path, self.to_dict())


def _num(v: float | None) -> float | None:
    return None if v is None or v != v else round(float(v), 6)


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read a ``calib.json`` written by ``camloc calibrate`` (camloc errors for missing or malformed files)."""
    import json

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        fail("calibration", "a readable calib.json file", f"{p} ({e.strerror or e})")
    except UnicodeDecodeError:
        fail("calibration", "a JSON file written by camloc calibrate", f"{p} (not UTF-8 text)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        fail("calibration", "a JSON file written by camloc calibrate", f"{p} (invalid JSON: {e.msg})")
    return Calibration.from_dict(doc)


def rule_of(calibration: Any, *, method: Any = "cam") -> BoxRule | None:
    """The box rule of ``calibration`` (a :class:`Calibration`, a :class:`BoxRule` or ``None``), checking that a
    Calibration was made for ``method`` (a name; producer objects are not checked)."""
    if calibration is None or isinstance(calibration, BoxRule):
        return calibration
    if not isinstance(calibration, Calibration):
        fail("calibration", "a camloc Calibration, a BoxRule or None", calibration, type_error=True)
    if isinstance(method, str) and method != calibration.method:
        fail(
            "method",
            f"the calibration's method {calibration.method!r} (its rule was fitted on that method's maps; pass "
            "calibration.rule to apply the rule to another method anyway)",
            repr(method),
        )
    return calibration.rule


# ----------------------------------------------------------------------------------------------------------
# the whole job


def calibrate_samples(
    samples: Sequence[Any],
    model: Any,
    info: Any,
    *,
    protocol: str = "paper",
    method: str = "cam",
    method_args: dict[str, Any] | None = None,
    objective: str = "gt_known",
    rules: Sequence[str] = RULES,
    threshold_modes: Sequence[str] = THRESHOLD_MODES,
    folds: int = 5,
    holdout_folds: int | None = None,
    batch_size: int = 32,
    device: Any = "cpu",
    workers: int | None = None,
    progress: bool = False,
    data: dict[str, Any] | None = None,
) -> tuple[Calibration, Any]:
    """Calibrate a box rule for ``method`` on annotated ``samples`` (module docstring) -> (:class:`Calibration`,
    the :class:`camloc.evaluate.EvalResult` of the same pass with the paper's rule).

    ``rules``: which of ``largest`` / ``mass`` / ``merge`` to consider (merge with ``min_mass`` 0, 0.05, 0.2);
    ``threshold_modes``: which of ``fixed`` / ``otsu`` / ``model``; ``holdout_folds``: also report the
    cross-fitted numbers of :func:`holdout` (stored in ``Calibration.holdout``); ``data``: recorded as is.
    """
    check_choice("objective", objective, OBJECTIVES)
    check_number("folds", folds, low=1, integer=True)
    if holdout_folds is not None:
        check_number("holdout_folds", holdout_folds, low=2, integer=True)
    if not rules:
        fail("rules", "at least one of " + ", ".join(RULES), "none")
    for r in rules:
        check_choice("rules", r, RULES)
    if not threshold_modes:
        fail("threshold_modes", "at least one of " + ", ".join(THRESHOLD_MODES), "none")
    specs = [s for s in DEFAULT_SPECS if s[0] in rules]
    if "largest" not in rules:
        specs = [("largest", 0.0), *specs]  # the paper rule's column, for the baseline numbers
    table, res = collect_table(
        samples, model, info, protocol=protocol, method=method, method_args=method_args, specs=specs,
        batch_size=batch_size, device=device, workers=workers, progress=progress,
    )  # fmt: skip
    cands = candidates([s for s in specs if s[0] in rules], threshold_modes)
    rule, chosen, records = choose_rule(table, objective=objective, cands=cands, folds=folds)
    best = records[cands.index(chosen)]
    ho = holdout(table, folds=holdout_folds, objective=objective, cands=cands) if holdout_folds else None
    keys = table.keys
    baseline = {k: float(v) for k, v in res.metrics.items() if not math.isnan(float(v))}
    calib = Calibration(
        rule=rule,
        method=method if isinstance(method, str) else type(method).__name__,
        method_args=dict(method_args or {}),
        protocol=protocol,
        model=getattr(info, "name", ""),
        objective=objective,
        score=objective_value(table, score_rule(table, rule), objective),
        cv_score=best["cv_score"],
        n_images=len(table),
        data={**(data or {}), "fingerprint": _fingerprint(keys), "images": len(table)},
        image_keys=keys,
        candidates=tuple(records),
        baseline=baseline,
        holdout=ho,
    )
    return calib, res
