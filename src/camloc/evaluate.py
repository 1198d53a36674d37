"""Localization evaluation of a classifier on an annotated data set (``camloc evaluate``).

Every image is resized whole to the network input, and the ground truth (boxes and masks) is transformed the
same way, so predictions and ground truth are compared in one frame: the network-input frame. (IoU is invariant
to the axis-aligned scaling between that frame and the original pixels, so numbers equal those computed in
original pixels up to rounding at box borders.)

Per image the score maps of the predicted top-1 class and of the true class are computed (CAM: one forward;
``backprop``: one backward per map), upsampled (bilinear) to the input size, and then:

- classification: top-1 / top-5 (true class among the k highest logits);
- ``gt_known_loc``: the box of the true class's map at the fixed ``threshold`` has IoU >= 0.5 with some GT box;
- ``top1_loc`` / ``top5_loc``: class right at top-1 / top-5 **and** that class's box has IoU >= 0.5 with a GT box
  (ILSVRC and CAM-paper definition; when the true class is the j-th prediction its box is the true class's box);
- ``maxboxacc``: over the protocol's threshold sweep, the best fraction of images whose selected box (largest
  component / contour) has IoU >= 0.5 with some GT box; ``maxboxacc_v2``: mean over IoU 0.3/0.5/0.7 of the
  best-threshold fraction of images where *any* candidate box matches some GT box (Choe et al., CVPR 2020);
- ``pxap``: pixel average precision of the true class's normalised map against GT masks (ignore regions
  excluded), when the data set has masks.

Thresholds, normalisation, quantisation and the IoU convention come from the protocol preset
(:mod:`camloc.sweep`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from camloc._checks import check_choice, check_number
from camloc.cam import upsample_maps
from camloc.data.annotations import Sample
from camloc.errors import CamlocError
from camloc.extractor import CAM
from camloc.models.registry import ModelInfo, Preprocess
from camloc.sweep import Protocol, box_iou, get_protocol, sweep_boxes, sweep_hits

__all__ = ["EvalResult", "evaluate_samples"]

IOU_V2 = (0.3, 0.5, 0.7)


@dataclass(frozen=True)
class EvalResult:
    """Numbers of one evaluation. ``metrics`` values are fractions in ``[0, 1]`` (``pxap`` only with masks)."""

    metrics: dict[str, float]
    thresholds: np.ndarray
    maxboxacc_curve: np.ndarray  # [T] box accuracy (IoU 0.5, selected box) per threshold
    maxboxacc_v2_curves: np.ndarray  # [T, 3] per IoU 0.3/0.5/0.7, any candidate box
    best_threshold: float
    pxap_curve: dict[str, np.ndarray] | None
    per_image: list[dict[str, Any]] = field(repr=False)
    failures: list[dict[str, str]] = field(repr=False)
    n_images: int = 0


def _mask_union(paths: Sequence[os.PathLike[str]], size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    out = np.zeros((size[1], size[0]), bool)
    for p in paths:
        with Image.open(p) as im:
            m = im.convert("L").resize(size, Image.Resampling.NEAREST)
            out |= np.asarray(m) > 127
    return out


class _Samples(Dataset):
    def __init__(self, samples: Sequence[Sample], preprocess: Preprocess) -> None:
        self.samples = list(samples)
        self.pre = preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from camloc.data.images import load_image

        s = self.samples[i]
        try:
            loaded = load_image(s.path, working_max_side=2 * max(self.pre.size))
            x = self.pre.to_tensor(loaded.image)
            h_in, w_in = self.pre.size
            ow, oh = loaded.original_size
            if self.pre.resize != "full":
                raise CamlocError("`model` preprocessing must resize the whole image for evaluation ('full')")
            sx, sy = w_in / ow, h_in / oh
            boxes = np.asarray(s.boxes, np.float64) * np.array([sx, sy, sx, sy])
            mask = _mask_union(s.mask_paths, (w_in, h_in)) if s.mask_paths else None
            ignore = _mask_union([s.ignore_path], (w_in, h_in)) if s.ignore_path else None
        except (CamlocError, OSError) as e:
            return {"index": i, "error": str(e)}
        return {"index": i, "x": x, "boxes": boxes, "mask": mask, "ignore": ignore, "size": loaded.original_size}


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def _pxap_update(
    hist_fg: np.ndarray,
    hist_bg: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray,
    ignore: np.ndarray | None,
    thresholds: np.ndarray,
) -> None:
    keep = np.ones_like(mask) if ignore is None else ~ignore
    # bin index = number of thresholds <= value (pixel counted as positive at every threshold up to its value)
    idx = np.searchsorted(thresholds, v[keep], side="right")
    m = mask[keep]
    hist_fg += np.bincount(idx[m], minlength=len(thresholds) + 1)
    hist_bg += np.bincount(idx[~m], minlength=len(thresholds) + 1)


def _pxap_compute(hist_fg: np.ndarray, hist_bg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    # positives at threshold k: pixels whose bin index > k  (value >= thresholds[k])
    tp = np.cumsum(hist_fg[::-1])[::-1][1:]
    fp = np.cumsum(hist_bg[::-1])[::-1][1:]
    total_fg = hist_fg.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        recall = tp / total_fg if total_fg > 0 else np.zeros_like(tp, dtype=float)
    # thresholds ascend -> recall descends; AP = sum precision * |delta recall|
    order = np.argsort(recall, kind="stable")
    r = np.concatenate([[0.0], recall[order]])
    p = precision[order]
    ap = float(np.sum(p * np.diff(r)))
    return ap, precision, recall


def evaluate_samples(
    samples: Sequence[Sample],
    model: torch.nn.Module,
    info: ModelInfo,
    *,
    protocol: str | Protocol = "paper",
    threshold: float = 0.2,
    method: Literal["cam", "backprop"] = "cam",
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on annotated ``samples`` (see the module docstring for every definition)."""
    proto = get_protocol(protocol)
    check_number("threshold", threshold, low=0.0, high=1.0)
    check_choice("method", method, ("cam", "backprop"))
    check_number("batch_size", batch_size, low=1, integer=True)
    thresholds = np.asarray(proto.thresholds, np.float64)
    pix_thr = np.arange(0, 1, 0.01) if len(thresholds) < 10 else thresholds
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(samples) > batch_size else 0
    loader = DataLoader(
        _Samples(samples, info.preprocess), batch_size=batch_size, num_workers=workers, collate_fn=_collate
    )
    cam = CAM(model) if method == "cam" else None
    h_in, w_in = info.preprocess.size
    hits1 = np.zeros(len(thresholds))
    hits2 = np.zeros((len(thresholds), len(IOU_V2)))
    hist_fg = np.zeros(len(pix_thr) + 1, np.int64)
    hist_bg = np.zeros(len(pix_thr) + 1, np.int64)
    has_masks = False
    counts = dict.fromkeys(("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known_loc"), 0)
    per_image: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(samples), unit="img", desc=f"evaluate ({method}, {proto.name})", dynamic_ncols=True)
    n = 0
    try:
        for items in loader:
            good = [it for it in items if "x" in it]
            for it in items:
                if "error" in it:
                    failures.append({"path": str(samples[it["index"]].path), "error": it["error"]})
            if good:
                x = torch.stack([it["x"] for it in good]).to(device)
                true = torch.tensor([samples[it["index"]].class_idx for it in good], dtype=torch.long)
                if cam is not None:
                    with torch.no_grad():
                        feats, logits = cam.forward(x)
                        top = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
                        classes = torch.stack([top[:, 0], true], dim=1)
                        maps = upsample_maps(cam.maps(feats, classes.to(feats.device)).float(), (h_in, w_in)).cpu()
                else:
                    from camloc.saliency import backprop_saliency

                    with torch.no_grad():
                        logits0 = model(x)
                    top = logits0.topk(min(5, logits0.shape[1]), dim=1).indices.cpu()
                    classes = torch.stack([top[:, 0], true], dim=1)
                    _, maps = backprop_saliency(model, x, classes.to(x.device))
                    maps = maps.float().cpu()
                for k, it in enumerate(good):
                    s = samples[it["index"]]
                    gt = it["boxes"]
                    t1 = int(top[k, 0])
                    in5 = bool((top[k] == s.class_idx).any())
                    true_map = maps[k, 1].numpy()
                    box_true = sweep_boxes(true_map, protocol=proto, thresholds=[threshold])[0]
                    box_top1 = sweep_boxes(maps[k, 0].numpy(), protocol=proto, thresholds=[threshold])[0]
                    iou_true = (
                        float(box_iou(box_true[None], gt, convention=proto.iou_convention).max()) if len(gt) else 0.0
                    )
                    iou_top1 = (
                        float(box_iou(box_top1[None], gt, convention=proto.iou_convention).max()) if len(gt) else 0.0
                    )
                    ok = iou_true >= 0.5
                    counts["top1_cls"] += t1 == s.class_idx
                    counts["top5_cls"] += in5
                    counts["gt_known_loc"] += ok
                    counts["top1_loc"] += (t1 == s.class_idx) and ok
                    counts["top5_loc"] += in5 and ok
                    if len(gt):
                        hits1 += sweep_hits(true_map, gt, protocol=proto, iou_thresholds=(0.5,))[:, 0]
                        hits2 += sweep_hits(true_map, gt, protocol=proto, iou_thresholds=IOU_V2, multi_box=True)
                    if it["mask"] is not None:
                        from camloc.sweep import normalize_score_map

                        has_masks = True
                        v = normalize_score_map(true_map, protocol=proto)
                        _pxap_update(hist_fg, hist_bg, v, it["mask"], it["ignore"], pix_thr)
                    sx, sy = it["size"][0] / w_in, it["size"][1] / h_in
                    scale = np.array([sx, sy, sx, sy])
                    per_image.append(
                        {
                            "path": str(s.path),
                            "true_class": s.class_idx,
                            "top1_class": t1,
                            "top5_classes": [int(c) for c in top[k]],
                            "iou_gt_known": round(iou_true, 4),
                            "iou_top1": round(iou_top1, 4),
                            "box_gt_known": [round(float(v), 2) for v in box_true * scale],
                            "box_top1": [round(float(v), 2) for v in box_top1 * scale],
                            "gt_boxes": [[round(float(v), 2) for v in b * scale] for b in gt],
                            "top1_loc": bool(t1 == s.class_idx and ok),
                            "gt_known_loc": bool(ok),
                        }
                    )
                    n += 1
            if bar is not None:
                bar.update(len(items))
    finally:
        if bar is not None:
            bar.close()
    denom = max(n, 1)
    metrics = {k: v / denom for k, v in counts.items()}
    curve1 = hits1 / denom
    curves2 = hits2 / denom
    metrics["maxboxacc"] = float(curve1.max()) if n else 0.0
    metrics["maxboxacc_v2"] = float(curves2.max(axis=0).mean()) if n else 0.0
    pxap_curve = None
    if has_masks:
        ap, prec, rec = _pxap_compute(hist_fg, hist_bg)
        metrics["pxap"] = ap
        pxap_curve = {"thresholds": pix_thr, "precision": prec, "recall": rec}
    best = float(thresholds[int(np.argmax(curve1))]) if n else float("nan")
    return EvalResult(metrics, thresholds, curve1, curves2, best, pxap_curve, per_image, failures, n)
