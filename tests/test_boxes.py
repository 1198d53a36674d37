"""Box rules (camloc.boxes): hand-built maps with known boxes for every rule, the paper rule against the sweep,
Otsu against OpenCV, the per-image threshold model, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from camloc.boxes import (
    FEATURES,
    GRID,
    PAPER_RULE,
    BoxRule,
    ThresholdModel,
    box_from_map,
    map_features,
    otsu_threshold,
    rule_boxes,
    snap_threshold,
)
from camloc.errors import CamlocError
from camloc.sweep import sweep_boxes


def _two_blobs() -> np.ndarray:
    """A large dim blob (10x10 at 0.25: mass 25) and a small bright one (6x6 at 1.0: mass 36), on 0."""
    m = np.zeros((20, 30), np.float32)
    m[2:12, 2:12] = 0.25  # box (2, 2, 12, 12)
    m[5:11, 20:26] = 1.0  # box (20, 5, 26, 11)
    return m


DIM, BRIGHT, BOTH = [2, 2, 12, 12], [20, 5, 26, 11], [2, 2, 26, 12]


@pytest.mark.parametrize(
    ("rule", "min_mass", "threshold", "expected"),
    [
        ("largest", 0.0, 0.2, DIM),  # most pixels: the dim blob (the paper's rule)
        ("mass", 0.0, 0.2, BRIGHT),  # most mass: 36 > 25
        ("merge", 0.0, 0.2, BOTH),  # every component
        ("merge", 0.4, 0.2, BOTH),  # the dim blob holds 25/61 = 0.41 of the mass
        ("merge", 0.5, 0.2, BRIGHT),  # ... which is < 0.5
        ("largest", 0.0, 0.3, BRIGHT),  # above 0.25 only the bright blob is left
        ("mass", 0.0, 0.3, BRIGHT),
        ("merge", 0.0, 0.3, BRIGHT),
        ("merge", 0.0, 0.0, [0, 0, 30, 20]),  # threshold 0 keeps every pixel of a map with positive evidence
    ],
)
def test_each_rule_boxes_the_component_it_should(rule, min_mass, threshold, expected):
    got = box_from_map(_two_blobs(), threshold=threshold, rule=rule, min_mass=min_mass)
    assert got.dtype == np.float32 and got.tolist() == expected
    # the same through the batch sweep, at once for every rule and threshold
    sweep = rule_boxes(_two_blobs(), [threshold], [(rule, min_mass)])
    assert sweep.shape == (1, 1, 4) and sweep[0, 0].tolist() == expected


def test_maps_without_positive_evidence_give_the_empty_box():
    for m in (np.zeros((8, 8), np.float32), -np.ones((8, 8), np.float32)):
        for rule in ("largest", "mass", "merge"):
            assert box_from_map(m, rule=rule, threshold=0.0).tolist() == [0, 0, 0, 0]
    flat = np.full((8, 8), 3.0, np.float32)  # positive flat map: max normalisation keeps it whole ...
    assert box_from_map(flat).tolist() == [0, 0, 8, 8]
    assert box_from_map(flat, normalize="minmax").tolist() == [0, 0, 0, 0]  # ... min-max makes it zeros


def test_minmax_normalisation_moves_the_cut():
    m = np.zeros((10, 10), np.float32) + 0.5
    m[2:5, 2:5] = 1.0
    m[6:9, 6:9] = 0.7  # max-normalised 0.7, min-max normalised 0.4
    assert box_from_map(m, threshold=0.5, rule="merge").tolist() == [0, 0, 10, 10]  # the background is 0.5 too
    assert box_from_map(m, threshold=0.6, rule="merge").tolist() == [2, 2, 9, 9]
    assert box_from_map(m, threshold=0.3, rule="merge", normalize="minmax").tolist() == [2, 2, 9, 9]
    assert box_from_map(m, threshold=0.5, rule="merge", normalize="minmax").tolist() == [2, 2, 5, 5]


def test_paper_rule_equals_the_sweep_of_the_paper_protocol():
    rng = np.random.default_rng(3)
    for i in range(12):
        m = cv2.GaussianBlur(rng.normal(size=(37, 53)).astype(np.float32), (0, 0), 1.5 + i % 3)
        for t in (0.0, 0.07, 0.2, 0.5, 0.93):
            want = sweep_boxes(m, protocol="paper", thresholds=[t])[0]
            assert np.array_equal(BoxRule(threshold=t).box(m), want)
    assert BoxRule(rule="largest", threshold=0.2) == PAPER_RULE and PAPER_RULE.is_paper


def test_the_threshold_is_compared_exactly_as_the_sweep_does():
    # pixel values just below and at float32(0.2) (which is > 0.2): only v >= 0.2 in float64 counts
    lo = np.nextafter(np.float32(0.2), np.float32(0))
    m = np.array([[1.0, np.float32(0.2), lo, 0.0]], np.float32)
    assert box_from_map(m, threshold=0.2, rule="merge").tolist() == [0, 0, 2, 1]
    assert np.array_equal(box_from_map(m, threshold=0.2), sweep_boxes(m, thresholds=[0.2])[0])


def test_otsu_matches_opencv_on_8_bit_maps():
    rng = np.random.default_rng(0)
    for _ in range(10):  # every level present: no tied cuts (where OpenCV takes the first, camloc the middle)
        u8 = np.clip(rng.normal(80, 20, (100, 100)), 0, 255).astype(np.uint8)
        u8[5:55, 5:40] = np.clip(rng.normal(190, 25, (50, 35)), 0, 255).astype(np.uint8)
        u8.ravel()[:256] = np.arange(256)
        thr, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)  # foreground: u8 > thr
        assert otsu_threshold(u8 / 255.0) == pytest.approx((thr + 1) / 255.0)
    assert otsu_threshold(np.full((4, 4), 0.5)) == 0.0  # one value: nothing to split


def test_otsu_rule_splits_a_bimodal_map():
    m = np.full((20, 20), 0.6, np.float32)
    m[4:9, 3:12] = 1.0
    rule = BoxRule(threshold_mode="otsu")
    assert 0.6 < rule.threshold_for(m) <= 1.0 and rule.box(m).tolist() == [3, 4, 12, 9]
    assert PAPER_RULE.box(m).tolist() == [0, 0, 20, 20]


def test_map_features_on_known_maps():
    flat = map_features(np.ones((10, 10)))
    f = dict(zip(FEATURES, flat))
    assert f["mean"] == 1 and f["std"] == 0 and f["entropy"] == pytest.approx(1.0)
    assert f["area_0.2"] == f["area_0.8"] == 1.0
    spike = np.zeros((10, 10))
    spike[3, 4] = 1.0
    g = dict(zip(FEATURES, map_features(spike)))
    assert g["entropy"] == 0 and g["mean"] == pytest.approx(0.01) and g["area_0.2"] == pytest.approx(0.01)
    half = np.zeros((10, 10))
    half[:, :5] = 1.0
    h = dict(zip(FEATURES, map_features(half)))
    assert h["area_0.6"] == 0.5 and h["entropy"] == pytest.approx(np.log(50) / np.log(100))
    assert 0 < h["otsu"] <= 1 and 0 <= h["knee"] <= 1


def _model(coef_mean: float, intercept: float) -> ThresholdModel:
    k = len(FEATURES)
    return ThresholdModel(
        features=FEATURES,
        mean=(0.0,) * k,
        scale=(1.0,) * k,
        coef=(coef_mean,) + (0.0,) * (k - 1),
        intercept=intercept,
    )


def test_threshold_model_predicts_clips_and_snaps_to_the_grid():
    m = _model(1.0, 0.1)  # t = 0.1 + mean(v)
    f = np.zeros(len(FEATURES))
    f[0] = 0.2345
    assert m.predict(f) == 0.33  # 0.3345 -> grid
    f[0] = 5.0
    assert m.predict(f) == 0.99
    f[0] = -1.0
    assert m.predict(f) == 0.0
    assert snap_threshold(0.204) == 0.2 and snap_threshold(1.0) == 0.99 and float(GRID[37]) == 0.37
    # as a box rule: a map of mean 0.25 gets threshold 0.35
    v = np.zeros((4, 4), np.float32)
    v[0] = 1.0
    assert BoxRule(threshold_mode="model", model=m).threshold_for(v) == 0.35
    assert ThresholdModel.from_dict(m.to_dict()) == m


def test_batches_of_maps_torch_or_numpy():
    maps = torch.from_numpy(np.stack([_two_blobs(), _two_blobs() * 0])).reshape(1, 2, 20, 30)
    out = BoxRule(rule="mass").boxes(maps)
    assert out.shape == (1, 2, 4) and out[0, 0].tolist() == BRIGHT and out[0, 1].tolist() == [0, 0, 0, 0]
    assert np.array_equal(BoxRule(rule="mass").boxes(maps.numpy()), out)


def test_round_trip_and_descriptions():
    rules = [
        PAPER_RULE,
        BoxRule(rule="merge", min_mass=0.05, threshold=0.31, normalize="minmax"),
        BoxRule(rule="mass", threshold_mode="otsu"),
        BoxRule(rule="largest", threshold_mode="model", model=_model(0.5, 0.2)),
    ]
    for r in rules:
        assert BoxRule.from_dict(r.to_dict()) == r
        assert r.describe()
    assert "Otsu" in rules[2].describe() and "0.31" in rules[1].describe()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "biggest"}, "`rule` must be one of"),
        ({"threshold": 1.5}, "`threshold` must be <= 1"),
        ({"threshold_mode": "model"}, "`model` must be a ThresholdModel"),
        ({"threshold_mode": "otsu", "model": "x"}, "`model` must be None"),
        ({"rule": "mass", "min_mass": 0.2}, "`min_mass` must be 0 unless rule='merge'"),
        ({"normalize": "zscore"}, "`normalize` must be one of"),
        ({"connectivity": 6}, "`connectivity` must be one of"),
    ],
)
def test_bad_rules_raise_camloc_errors(kwargs, message):
    with pytest.raises(CamlocError, match=message):
        BoxRule(**kwargs)


def test_bad_input_raises_camloc_errors():
    with pytest.raises(CamlocError, match="`rule` must be an object with keys"):
        BoxRule.from_dict({"rule": "largest", "size": 3})
    with pytest.raises(CamlocError, match="`score_map` must be finite"):
        PAPER_RULE.box(np.full((3, 3), np.nan))
    with pytest.raises(CamlocError, match="`maps` must be a \\[N, m, H, W\\]"):
        PAPER_RULE.boxes(np.zeros((3, 3)))
    with pytest.raises(CamlocError, match="`features` must be the feature list"):
        ThresholdModel(features=("mean",), mean=(0,), scale=(1,), coef=(0,), intercept=0.2)
    with pytest.raises(CamlocError, match="`scale` must be positive"):
        ThresholdModel(features=FEATURES, mean=(0,) * 9, scale=(0,) * 9, coef=(0,) * 9, intercept=0.2)
    with pytest.raises(CamlocError, match="`model` must be threshold model parameters"):
        ThresholdModel.from_dict({"features": list(FEATURES)})
