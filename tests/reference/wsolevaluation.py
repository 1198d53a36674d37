"""Test oracle: clovaai/wsolevaluation's evaluation pipeline, from image file to MaxBoxAcc / MaxBoxAccV2 / PxAP.

Provenance
----------
Repository https://github.com/clovaai/wsolevaluation (Choe et al., "Evaluating Weakly Supervised Object
Localization Methods Right", CVPR 2020), MIT licence, Copyright (c) 2020-present NAVER Corp. Files and
versions read:

* ``data_loaders.py`` (commit b5c1e8a9): ``WSOLImageLabelDataset.__getitem__`` (``Image.open`` +
  ``convert('RGB')``, no EXIF transpose) and the test transform of ``get_data_loader``
  (``Resize((crop_size, crop_size))``, ``ToTensor``, ``Normalize`` with ImageNet mean/std); box / mask metadata
  layouts.
* ``inference.py`` (commit 502b92b3): ``CAMComputer.compute_and_evaluate_cams`` (``cv2.resize(cam, image_size,
  interpolation=cv2.INTER_CUBIC)``, then ``normalize_scoremap``: NaN or flat -> zeros, else min-max).
* ``evaluation.py`` (commit b98c7d11): ``resize_bbox`` (scale to 224 in float, then ``int()``),
  ``compute_bboxes_from_scoremaps`` (``uint8(map * 255)``, ``cv2.threshold(THRESH_BINARY)`` at
  ``int(t * max)``, ``findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``, largest ``contourArea`` or every contour with
  ``multi_contour_eval``, ``boundingRect`` with x1 / y1 clipped to W - 1 / H - 1, ``[0, 0, 0, 0]`` without
  contours), ``calculate_multiple_iou`` ("+1" areas, degenerate unions -> 0), ``BoxEvaluator`` (an image counts
  at a CAM threshold when its best box reaches the IoU threshold), ``load_mask_image`` / ``get_mask``
  (``cv2.imread`` grey, ``cv2.resize`` ``INTER_NEAREST`` to 224 x 224, ``> 0.5``; ignore = ignore box minus
  foreground) and ``MaskEvaluator`` (histograms over ``thresholds + [1, 2, 3]``, AP = sum of precision times
  recall steps where something is predicted).

This is an independent re-statement of those steps for testing (same library calls, same order, same dtypes),
not a copy: it drops the data-set plumbing (metadata files, data loaders, scoremap files, argparse, printing,
the ``munch`` config) and takes plain lists instead. The CAM itself is computed by a caller-given function
(the network is not part of the evaluation protocol); everything before it (decode, resize, normalise) and
after it (CAM resize, normalisation, boxes, IoU, masks, the metrics) follows the files above. Percentages are
returned as fractions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import transforms

RESIZE = 224
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def image_tensor(path: str) -> torch.Tensor:
    """data_loaders.py: the test split's image tensor ``[3, 224, 224]``."""
    tf = transforms.Compose(
        [transforms.Resize((RESIZE, RESIZE)), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )
    with Image.open(path) as im:
        return tf(im.convert("RGB"))


def score_map(cam: np.ndarray) -> np.ndarray:
    """inference.py: a feature-resolution CAM (float32) -> the normalised 224 x 224 score map."""
    resized = cv2.resize(cam, (RESIZE, RESIZE), interpolation=cv2.INTER_CUBIC)
    if np.isnan(resized).any() or resized.min() == resized.max():
        return np.zeros_like(resized)
    resized = resized - resized.min()
    return resized / resized.max()


def gt_box(box: Sequence[int], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """evaluation.py ``resize_bbox``: a metadata box (x0, y0, x1, y1) scaled to 224 and truncated."""
    w, h = (float(v) for v in image_size)
    x0, y0, x1, y1 = (float(v) for v in box)
    return int(x0 * RESIZE / w), int(y0 * RESIZE / h), int(x1 * RESIZE / w), int(y1 * RESIZE / h)


def boxes_at_thresholds(scoremap: np.ndarray, thresholds: Sequence[float], multi: bool) -> list[np.ndarray]:
    """evaluation.py ``compute_bboxes_from_scoremaps``: the candidate boxes ``[k, 4]`` at each threshold."""
    height, width = scoremap.shape
    img = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    out = []
    for t in thresholds:
        _, binary = cv2.threshold(src=img, thresh=int(t * np.max(img)), maxval=255, type=cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            out.append(np.asarray([[0, 0, 0, 0]]))
            continue
        if not multi:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = []
        for c in contours:
            x, y, bw, bh = cv2.boundingRect(c)
            boxes.append([x, y, min(x + bw, width - 1), min(y + bh, height - 1)])
        out.append(np.asarray(boxes))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """evaluation.py ``calculate_multiple_iou`` ("+1" convention) -> ``[len(a), len(b)]``."""
    a = a[:, None, :].astype(np.float64)
    b = b[None, :, :].astype(np.float64)
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    den = area_a + area_b - inter
    bad = den <= 0
    out = inter / np.where(bad, 1, den)
    out[bad] = 0
    return out


def box_accuracy(
    scoremaps: Sequence[np.ndarray],
    gt_boxes: Sequence[Sequence[tuple[int, int, int, int]]],
    *,
    thresholds: Sequence[float],
    iou_thresholds: Sequence[int],
    multi: bool,
) -> dict[int, np.ndarray]:
    """evaluation.py ``BoxEvaluator``: per IoU threshold (in %), the accuracy (fraction) at each CAM threshold."""
    correct = {d: np.zeros(len(thresholds)) for d in iou_thresholds}
    for m, gts in zip(scoremaps, gt_boxes):
        per_t = boxes_at_thresholds(m, thresholds, multi)
        best = np.asarray([iou(b, np.asarray(gts)).max() for b in per_t])
        for d in iou_thresholds:
            correct[d][best >= d / 100] += 1
    return {d: c / len(scoremaps) for d, c in correct.items()}


def mask_image(path: str) -> np.ndarray:
    """evaluation.py ``load_mask_image``: grey float32 mask resized (nearest) to 224 x 224."""
    mask = np.float32(cv2.imread(path, cv2.IMREAD_GRAYSCALE))
    return cv2.resize(mask, (RESIZE, RESIZE), interpolation=cv2.INTER_NEAREST)


def gt_mask(mask_paths: Sequence[str], ignore_path: str) -> np.ndarray:
    """evaluation.py ``get_mask``: 1 = foreground, 255 = ignored, 0 = background (uint8 224 x 224)."""
    fg = np.stack([mask_image(p) > 0.5 for p in mask_paths]).any(axis=0)
    ignore = (mask_image(ignore_path) > 0.5) & ~fg
    return fg.astype(np.uint8) + 255 * ignore.astype(np.uint8)


def pxap(scoremaps: Sequence[np.ndarray], masks: Sequence[np.ndarray], thresholds: Sequence[float]) -> float:
    """evaluation.py ``MaskEvaluator``: pixel average precision (fraction)."""
    edges = np.append(np.asarray(thresholds), [1.0, 2.0, 3.0])
    pos = np.zeros(len(edges) - 1)
    neg = np.zeros(len(edges) - 1)
    for m, gt in zip(scoremaps, masks):
        pos += np.histogram(m[gt == 1], bins=edges)[0]
        neg += np.histogram(m[gt == 0], bins=edges)[0]
    tp = pos[::-1].cumsum()
    fp = neg[::-1].cumsum()
    fn = pos.sum() - tp
    nonzero = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return float((precision[1:] * np.diff(recall))[nonzero[1:]].sum())


def evaluate(
    image_paths: Sequence[str],
    labels: Sequence[int],
    cam_fn: Callable[[torch.Tensor, torch.Tensor], np.ndarray],
    *,
    boxes: Sequence[Sequence[Sequence[int]] | None],
    masks: Sequence[tuple[Sequence[str], str] | None],
    cam_curve_interval: float = 0.001,
) -> dict[str, Any]:
    """The whole pipeline: ``maxboxacc`` (IoU 0.5, one box), ``maxboxacc_v2`` (mean over IoU 30/50/70, every
    contour) over the images with ``boxes``, ``pxap`` over the images with ``masks`` ((mask paths, ignore path)).
    Also the curves: ``maxboxacc_curve [T]`` and ``maxboxacc_v2_curves [T, 3]`` (accuracy per CAM threshold).

    ``cam_fn(images [N, 3, 224, 224], labels [N]) -> float32 [N, h, w]`` gives the true class's raw CAMs.
    """
    thresholds = list(np.arange(0, 1, cam_curve_interval))
    x = torch.stack([image_tensor(p) for p in image_paths])
    cams = cam_fn(x, torch.as_tensor(labels))
    maps = [score_map(np.ascontiguousarray(c, dtype=np.float32)) for c in cams]
    out: dict[str, Any] = {}
    with_boxes = [i for i, b in enumerate(boxes) if b]
    if with_boxes:
        sizes = []
        for i in with_boxes:
            with Image.open(image_paths[i]) as im:  # image_sizes.txt: the stored size
                sizes.append(im.size)
        gts = [[gt_box(b, size) for b in boxes[i]] for i, size in zip(with_boxes, sizes)]  # type: ignore[union-attr]
        sel = [maps[i] for i in with_boxes]
        v1 = box_accuracy(sel, gts, thresholds=thresholds, iou_thresholds=[50], multi=False)
        v2 = box_accuracy(sel, gts, thresholds=thresholds, iou_thresholds=[30, 50, 70], multi=True)
        out["maxboxacc"] = float(v1[50].max())
        out["maxboxacc_v2"] = float(np.mean([v2[d].max() for d in (30, 50, 70)]))
        out["maxboxacc_curve"] = v1[50]
        out["maxboxacc_v2_curves"] = np.stack([v2[d] for d in (30, 50, 70)], axis=1)
    with_masks = [i for i, m in enumerate(masks) if m]
    if with_masks:
        gms = [gt_mask(*masks[i]) for i in with_masks]  # type: ignore[misc]
        out["pxap"] = pxap([maps[i] for i in with_masks], gms, thresholds)
    return out
