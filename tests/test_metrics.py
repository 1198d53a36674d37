"""camloc.metrics: hand-computed values, streaming == one-shot, and parity with wsolevaluation transcriptions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from camloc.errors import CamlocTypeError, CamlocValueError
from camloc.metrics import (
    LocalizationAccuracy,
    MaxBoxAcc,
    MaxBoxAccV2,
    PxAP,
    box_iou,
    breakdown_counts,
    instance_breakdown,
    localization_accuracy,
    max_box_acc,
    max_box_acc_v2,
    pxap,
    union_box,
)

UNIMODAL = np.array([[0, 1, 2, 1, 0], [1, 3, 5, 3, 1], [1, 3, 4, 3, 1], [0, 1, 1, 1, 0]], dtype=np.float64)
LINE_AND_BLOCK = np.array([[9, 9, 9, 9, 9], [0, 0, 0, 0, 0], [0, 0, 0, 8, 8], [0, 0, 0, 8, 8]], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------
# box_iou


def test_box_iou_by_hand():
    a = np.array([[0, 0, 2, 2], [0, 0, 0, 0]], dtype=np.float64)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [0, 0, 0, 0]], dtype=np.float64)
    cont = box_iou(a, b)
    # continuous: inter 1, union 4 + 4 - 1 = 7; the empty box has IoU 0 with everything (itself included)
    np.testing.assert_allclose(cont, [[1 / 7, 1, 0], [0, 0, 0]])
    wsol = box_iou(a, b, convention="wsol")
    # +1 widths: (0,0,2,2) is 3x3 = 9 pixels, 2x2 = 4 of them shared with (1,1,3,3) -> 4 / 14; (0,0,0,0) is
    # the single pixel (0, 0): inside (0,0,2,2) (1 / 9), outside (1,1,3,3)
    np.testing.assert_allclose(wsol, [[4 / 14, 1, 1 / 9], [0, 1 / 9, 1]])
    assert cont.dtype == np.float64 and cont.shape == (2, 3)


def test_box_iou_inputs():
    t = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert box_iou(t, t)[0, 0] == 1.0
    assert box_iou(np.array([0, 0, 4, 2]), np.array([2, 0, 6, 2]))[0, 0] == pytest.approx(4 / 12)
    assert box_iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    with pytest.raises(CamlocValueError, match="`a` must be boxes of shape"):
        box_iou(np.zeros((2, 3)), np.zeros((1, 4)))
    with pytest.raises(CamlocValueError, match="`convention` must be one of"):
        box_iou(t, t, convention="xywh")
    with pytest.raises(CamlocTypeError, match="`b`"):
        box_iou(t, "box")


# ----------------------------------------------------------------------------------------------------------
# top-k and GT-known localization


def _loc_batch():
    gt = [
        np.array([[0, 0, 10, 10]]),
        np.array([[0, 0, 10, 10]]),
        np.array([[50, 50, 60, 60], [0, 0, 2, 2]]),  # the second GT box is the one matched
        np.array([[0, 0, 10, 10]]),
    ]
    pred_classes = np.array([[3, 1, 2, 4, 5], [1, 3, 2, 4, 5], [2, 0, 1, 4, 5], [0, 1, 2, 3, 4]])
    true_class = np.array([3, 3, 2, 9])
    boxes = np.zeros((4, 5, 4))
    boxes[0, 0] = [0, 0, 10, 10]  # right class, right box
    boxes[1, 0] = [20, 20, 30, 30]  # wrong class, wrong box
    boxes[1, 1] = [0, 0, 10, 10]  # right class at rank 2, right box
    boxes[2, 0] = [0, 0, 2, 1]  # IoU with (0,0,2,2) exactly 0.5 -> counts (>=)
    boxes[3, 0] = [0, 0, 10, 10]  # right box but the true class is never predicted
    gt_known = np.array([[0, 0, 10, 10], [0, 0, 3, 3], [0, 0, 2, 2], [1, 1, 10, 10]])
    return pred_classes, boxes, true_class, gt, gt_known


def test_localization_accuracy_by_hand():
    pc, pb, tc, gt, gk = _loc_batch()
    res = localization_accuracy(pc, pb, tc, gt, gt_known_boxes=gk)
    # cls: top1 = images 0, 2; top5 = 0, 1, 2.  loc: top1 = 0, 2; top5 = 0, 1, 2.
    # GT-known: IoU 1, 9/100, 1, 81/100 -> images 0, 2, 3
    assert res.cls_acc == {1: 0.5, 5: 0.75}
    assert res.loc_acc == {1: 0.5, 5: 0.75}
    assert res.gt_known_loc == 0.75
    assert res.n_images == 4
    assert res.as_dict() == {
        "top1_cls": 0.5,
        "top5_cls": 0.75,
        "top1_loc": 0.5,
        "top5_loc": 0.75,
        "gt_known_loc": 0.75,
        "n_images": 4,
    }
    strict = localization_accuracy(pc, pb, tc, gt, iou_threshold=0.6)
    assert strict.loc_acc == {1: 0.25, 5: 0.5} and strict.gt_known_loc is None


def test_localization_accuracy_streaming_and_errors():
    pc, pb, tc, gt, gk = _loc_batch()
    acc = LocalizationAccuracy()
    acc.update(torch.tensor(pc[:1]), torch.tensor(pb[:1]), torch.tensor(tc[:1]), gt[:1], gt_known_boxes=gk[:1])
    acc.update(pc[1:], pb[1:], tc[1:], gt[1:], gt_known_boxes=gk[1:])
    assert acc.compute() == localization_accuracy(pc, pb, tc, gt, gt_known_boxes=gk)
    with pytest.raises(CamlocValueError, match="`gt_known_boxes` must be given in every update"):
        acc.update(pc, pb, tc, gt)
    acc.reset()
    with pytest.raises(CamlocValueError, match="call update"):
        acc.compute()
    with pytest.raises(CamlocValueError, match="`pred_classes` must be at least 5 ranked classes"):
        acc.update(pc[:, :3], pb[:, :3], tc, gt)
    top3 = localization_accuracy(pc[:, :3], pb[:, :3], tc, gt, topk=(1, 3))
    assert top3.loc_acc == {1: 0.5, 3: 0.75}
    with pytest.raises(CamlocValueError, match=r"`gt_boxes\[1\]` must be at least one box"):
        acc.update(pc, pb, tc, [gt[0], np.zeros((0, 4)), gt[2], gt[3]])
    with pytest.raises(CamlocValueError, match="`pred_boxes` must be shape"):
        acc.update(pc, pb[:, :2], tc, gt)


# ----------------------------------------------------------------------------------------------------------
# MaxBoxAcc / MaxBoxAccV2


def test_max_box_acc_by_hand():
    maps = [UNIMODAL, LINE_AND_BLOCK]
    gt = [np.array([[1, 1, 4, 3]]), np.array([[0, 0, 5, 1]])]
    thr = [0.2, 0.5, 0.9]
    # UNIMODAL (paper): t=.2 -> (0,0,5,4), IoU 6/20 = .3; t=.5 -> (1,1,4,3), IoU 1; t=.9 -> (2,1,3,2), IoU 1/6
    # LINE_AND_BLOCK: the 5-pixel line (0,0,5,1) is the largest component at every threshold -> IoU 1
    res = max_box_acc(maps, gt, protocol="paper", thresholds=thr)
    np.testing.assert_allclose(res.accuracy, [0.5, 1.0, 0.5])
    assert (res.value, res.best_threshold, res.n_images, res.protocol) == (1.0, 0.5, 2, "paper")
    v2 = max_box_acc_v2(maps, gt, protocol="paper", thresholds=thr)
    np.testing.assert_allclose(v2.accuracy, [[1.0, 1.0, 0.5], [0.5, 1.0, 0.5], [0.5, 1.0, 0.5]])
    np.testing.assert_allclose(v2.per_iou, [1, 1, 1])
    np.testing.assert_allclose(v2.best_thresholds, [0.2, 0.5, 0.5])
    assert v2.value == 1.0 and v2.iou_thresholds == (0.3, 0.5, 0.7)
    # default paper thresholds: the single threshold 0.2
    assert max_box_acc(maps, gt, protocol="paper").thresholds.tolist() == [0.2]


def test_max_box_acc_wsol_by_hand():
    # wsolevaluation on LINE_AND_BLOCK: at t = .5 the block wins (contour area 1 vs 0): (3,2,4,3) after clipping
    gt_block = [np.array([[3, 2, 4, 3]])]
    res = max_box_acc([LINE_AND_BLOCK], gt_block, thresholds=[0.5, 0.95])
    np.testing.assert_array_equal(res.accuracy, [1.0, 0.0])
    assert res.protocol == "wsolevaluation"


def ref_wsol_curves(maps, gts, thresholds, deltas, multi):
    """wsolevaluation BoxEvaluator.accumulate/compute, transcribed (fractions instead of percentages)."""
    correct = np.zeros((len(deltas), len(thresholds)))
    for scoremap, gt in zip(maps, gts):
        cam = scoremap.astype(np.float64)
        cam = np.zeros_like(cam) if cam.min() == cam.max() else (cam - cam.min()) / (cam - cam.min()).max()
        height, width = cam.shape
        image = (cam * 255).astype(np.uint8)
        best = []
        for t in thresholds:
            _, binary = cv2.threshold(image, int(t * np.max(image)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            if len(contours) == 0:
                boxes = np.zeros((1, 4))
            else:
                if not multi:
                    contours = [max(contours, key=cv2.contourArea)]
                boxes = []
                for c in contours:
                    x, y, w, h = cv2.boundingRect(c)
                    boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
                boxes = np.array(boxes, dtype=np.float64)
            best.append(box_iou(boxes, gt, convention="wsol").max())
        for i, d in enumerate(deltas):
            correct[i] += np.asarray(best) >= d
    return correct / len(maps)


def _random_set(seed, n):
    rng = np.random.default_rng(seed)
    maps, gts = [], []
    yy, xx = np.mgrid[0:48, 0:60]
    for _ in range(n):
        m = np.zeros((48, 60))
        for _ in range(int(rng.integers(1, 4))):
            cy, cx, s = rng.uniform(0, 48), rng.uniform(0, 60), rng.uniform(3, 15)
            m += rng.uniform(0.2, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        maps.append(m + rng.normal(0, 0.01, m.shape))
        x0, y0 = rng.integers(0, 40), rng.integers(0, 30)
        gts.append(np.array([[x0, y0, rng.integers(x0 + 4, 60), rng.integers(y0 + 4, 48)]], dtype=np.float64))
    return maps, gts


def test_max_box_acc_matches_wsolevaluation_transcription():
    maps, gts = _random_set(0, 30)
    thr = np.arange(0, 1, 0.01)
    res = max_box_acc(np.stack(maps), gts, thresholds=thr)
    ref = ref_wsol_curves(maps, gts, thr, (0.5,), multi=False)
    np.testing.assert_array_equal(res.accuracy, ref[0])
    assert res.value == ref[0].max()
    v2 = max_box_acc_v2(maps, gts, thresholds=thr)
    ref2 = ref_wsol_curves(maps, gts, thr, (0.3, 0.5, 0.7), multi=True)
    np.testing.assert_array_equal(v2.accuracy, ref2)
    assert v2.value == pytest.approx(ref2.max(axis=1).mean())


def test_box_accumulators_stream_and_reset():
    maps, gts = _random_set(1, 12)
    thr = np.arange(0, 1, 0.05)
    for cls, kwargs in ((MaxBoxAcc, {}), (MaxBoxAccV2, {"iou_thresholds": (0.5, 0.3)})):
        acc = cls(protocol="paper", thresholds=thr, **kwargs)
        acc.update(maps[:5], gts[:5])
        acc.update(torch.tensor(np.stack(maps[5:])), [torch.tensor(g) for g in gts[5:]])
        once = cls(protocol="paper", thresholds=thr, **kwargs)
        once.update(maps, gts)
        a, b = acc.compute(), once.compute()
        np.testing.assert_array_equal(a.accuracy, b.accuracy)
        assert a.n_images == 12
        acc.reset()
        with pytest.raises(CamlocValueError, match="call update"):
            acc.compute()


def test_box_accumulator_errors():
    acc = MaxBoxAcc(protocol="paper")
    bad = UNIMODAL.copy()
    bad[0, 0] = np.nan
    with pytest.raises(CamlocValueError, match=r"`score_maps\[1\]` must be finite"):
        acc.update([UNIMODAL, bad], [np.array([[0, 0, 1, 1]])] * 2)
    with pytest.raises(CamlocValueError, match="`gt_boxes` must be one entry per image"):
        acc.update([UNIMODAL, UNIMODAL], [np.array([[0, 0, 1, 1]])])
    with pytest.raises(CamlocValueError, match="`score_maps` must be a"):
        acc.update(UNIMODAL, [np.array([[0, 0, 1, 1]])])
    with pytest.raises(CamlocValueError, match="`iou_thresholds` must be <= 1"):
        MaxBoxAccV2(iou_thresholds=(0.5, 1.5))
    # wsolevaluation: a NaN map is all zeros -> empty box (0,0,0,0), no error
    res = max_box_acc([bad], [np.array([[0, 0, 1, 1]])], thresholds=[0.5])
    assert res.accuracy.tolist() == [0.0]


# ----------------------------------------------------------------------------------------------------------
# PxAP


def test_pxap_by_hand():
    m = np.array([[1.0, 0.5], [0.25, 0.0]])
    gt = np.array([[True, False], [True, False]])
    # t = 1: TP 1, FP 0 (p 1, r .5); t = .5: TP 1, FP 1 (p .5, r .5); t = 0: TP 2, FP 2 (p .5, r 1)
    # AP = 1 * .5 + .5 * 0 + .5 * .5 = .75
    res = pxap([m], [gt], thresholds=[0.0, 0.5])
    assert res.value == pytest.approx(0.75)
    np.testing.assert_allclose(res.precision, [0.5, 0.5])
    np.testing.assert_allclose(res.recall, [1.0, 0.5])
    assert res.best_threshold == 0.0  # F1 2/3 at 0 vs 1/2 at .5
    # ignoring the background pixel scored .5: t = .5 -> p 1; t = 0 -> p 2/3; AP = .5 + 0 + (2/3) * .5
    ign = np.array([[False, True], [False, False]])
    assert pxap([m], [gt], [ign], thresholds=[0.0, 0.5]).value == pytest.approx(0.5 + 1 / 3)
    # an ignore mask never removes GT foreground (wsolevaluation: ignore = ignore box minus foreground)
    assert pxap([m], [gt], [gt], thresholds=[0.0, 0.5]).value == pytest.approx(0.75)


def ref_mask_evaluator(maps, masks, ignores, thresholds):
    """wsolevaluation MaskEvaluator.accumulate/compute, transcribed (fraction instead of percentage)."""
    edges = np.append(thresholds, [1.0, 2.0, 3.0])
    pos = np.zeros(len(thresholds) + 2)
    neg = np.zeros(len(thresholds) + 2)
    for scoremap, gt, ign in zip(maps, masks, ignores):
        cam = scoremap - scoremap.min()
        cam = cam / cam.max()
        label = gt.astype(np.uint8) + 255 * (ign & ~gt).astype(np.uint8)
        pos += np.histogram(cam[label == 1], bins=edges)[0]
        neg += np.histogram(cam[label == 0], bins=edges)[0]
    tp = pos[::-1].cumsum()
    fn = pos.sum() - tp
    fp = neg[::-1].cumsum()
    nonzero = (tp + fp) != 0
    with np.errstate(invalid="ignore"):
        precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return (precision[1:] * np.diff(recall))[nonzero[1:]].sum(), precision, recall


def test_pxap_matches_wsolevaluation_transcription():
    maps, _ = _random_set(2, 20)
    rng = np.random.default_rng(3)
    masks = [m > np.quantile(m, rng.uniform(0.5, 0.9)) for m in maps]
    ignores = [rng.random(m.shape) < 0.1 for m in maps]
    thr = np.arange(0, 1, 0.001)
    res = pxap(maps, masks, ignores)
    ap, precision, recall = ref_mask_evaluator(maps, masks, ignores, thr)
    assert res.value == ap
    np.testing.assert_array_equal(res.precision, precision[2:][::-1])
    np.testing.assert_array_equal(res.recall, recall[2:][::-1])
    # streaming in two parts gives the same numbers
    acc = PxAP()
    acc.update(maps[:7], masks[:7], ignores[:7])
    acc.update(torch.tensor(np.stack(maps[7:])), torch.tensor(np.stack(masks[7:])), ignores[7:])
    assert acc.compute().value == ap


def test_pxap_errors_and_protocols():
    m = np.array([[1.0, 0.5], [0.25, 0.0]])
    gt = np.array([[True, False], [True, False]])
    with pytest.raises(CamlocValueError, match="`thresholds` must be strictly increasing"):
        PxAP(thresholds=[0.5, 0.2])
    with pytest.raises(CamlocValueError, match="`thresholds` must be < 1"):
        PxAP(thresholds=[0.5, 1.0])
    with pytest.raises(CamlocValueError, match=r"`gt_masks\[0\]` must be a mask of the score map's shape"):
        pxap([m], [gt[:1]])
    with pytest.raises(CamlocValueError, match="`gt_masks` must be at least one foreground pixel"):
        pxap([m], [np.zeros((2, 2), bool)])
    # paper protocol: normalised by the max (same as min-max here since min = 0); a map with max <= 0 predicts
    # nothing but its foreground still counts in the recall denominator
    assert pxap([m], [gt], protocol="paper", thresholds=[0.0, 0.5]).value == pytest.approx(0.75)
    half = pxap([m, -np.ones((2, 2))], [gt, gt], protocol="paper", thresholds=[0.0, 0.5])
    np.testing.assert_allclose(half.recall, [0.5, 0.25])


# ----------------------------------------------------------------------------------------------------------
# instance breakdown


def test_instance_breakdown_by_hand():
    two = np.array([[0, 0, 10, 10], [10, 0, 20, 10]], np.float64)  # two instances side by side
    np.testing.assert_array_equal(union_box(two), [0, 0, 20, 10])
    boxes = np.array(
        [
            [0, 0, 10, 10],  # single GT, exact: hit
            [0, 0, 5, 10],  # single GT, IoU 0.5: hit (>= 0.5)
            [0, 0, 20, 10],  # two GT: the group box; IoU 0.5 with each instance: hit, and it matches the union
            [0, 0, 21, 11],  # two GT: IoU 100 / 231 < 0.5 with each: miss; IoU 200 / 231 with the union
            [30, 30, 40, 40],  # two GT: far away: miss
        ],
        np.float64,
    )
    gts = [two[:1], two[:1], two, two, two]
    b = instance_breakdown(boxes, gts)
    assert b["single_box_images"] == 2 and b["multi_box_images"] == 3
    assert b["gt_known_loc_single_box"] == 1.0
    assert b["gt_known_loc_multi_box"] == pytest.approx(1 / 3)
    assert b["group_loc_multi_box"] == pytest.approx(2 / 3)
    assert b["multi_box_share_of_misses"] == 1.0  # both misses have two GT boxes
    # a stricter IoU: the half box (0.5) and the group box (0.5 per instance) now miss
    s = instance_breakdown(boxes, gts, iou_threshold=0.6)
    assert s["gt_known_loc_single_box"] == 0.5 and s["gt_known_loc_multi_box"] == 0.0
    assert s["multi_box_share_of_misses"] == pytest.approx(3 / 4)
    # the wsol convention (+1 widths): the half box's IoU is 6 * 11 / (11 * 11) > 0.5, the same outcomes here
    assert instance_breakdown(boxes, gts, convention="wsol") == b
    with pytest.raises(CamlocValueError, match="convention"):
        instance_breakdown(boxes, gts, convention="inclusive")


def test_breakdown_counts_edge_cases_and_errors():
    b = breakdown_counts([True, True], [True, True], [1, 1])
    assert b["multi_box_images"] == 0 and b["gt_known_loc_multi_box"] is None and b["group_loc_multi_box"] is None
    assert b["multi_box_share_of_misses"] is None  # no misses
    with pytest.raises(CamlocValueError, match="n_gt_boxes"):
        breakdown_counts([True], [True, False], [1])
    with pytest.raises(CamlocValueError, match="gt_boxes"):
        instance_breakdown(np.zeros((2, 4)), [np.zeros((1, 4))])
    with pytest.raises((CamlocValueError, CamlocTypeError), match="gt_boxes"):
        union_box(np.zeros((0, 4)))
