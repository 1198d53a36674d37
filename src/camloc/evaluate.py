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
- ``maxboxacc``: over the protocol's threshold sweep (the ``paper`` preset, a single threshold, is swept over
  0, 0.01, ..., 0.99 here), the best fraction of images whose selected box (largest
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
from camloc.metrics import LocalizationAccuracy, MaxBoxAcc, MaxBoxAccV2, PxAP
from camloc.models.registry import ModelInfo, Preprocess
from camloc.sweep import Protocol, box_iou, get_protocol, sweep_boxes

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
    if len(thresholds) < 10:  # a fixed-threshold preset (paper: 0.2) still gets a sweep for MaxBoxAcc / PxAP
        thresholds = np.round(np.arange(0, 1, 0.01), 2)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(samples) > batch_size else 0
    loader = DataLoader(
        _Samples(samples, info.preprocess), batch_size=batch_size, num_workers=workers, collate_fn=_collate
    )
    cam = CAM(model) if method == "cam" else None
    h_in, w_in = info.preprocess.size
    acc = LocalizationAccuracy(topk=(1, 5), convention=proto.iou_convention)
    box1 = MaxBoxAcc(protocol=proto, thresholds=thresholds)
    box2 = MaxBoxAccV2(protocol=proto, thresholds=thresholds, iou_thresholds=IOU_V2)
    pix = PxAP(protocol=proto, thresholds=thresholds)
    per_image: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(samples), unit="img", desc=f"evaluate ({method}, {proto.name})", dynamic_ncols=True)
    try:
        for items in loader:
            failures += [
                {"path": str(samples[it["index"]].path), "error": it["error"]} for it in items if "error" in it
            ]
            good = [it for it in items if "x" in it and len(samples[it["index"]].boxes)]
            failures += [
                {"path": str(samples[it["index"]].path), "error": "no ground-truth box"}
                for it in items
                if "x" in it and not len(samples[it["index"]].boxes)
            ]
            if good:
                _evaluate_batch(
                    good, samples, model, cam, proto, threshold, (h_in, w_in), device,
                    acc, box1, box2, pix, per_image,
                )  # fmt: skip
            if bar is not None:
                bar.update(len(items))
    finally:
        if bar is not None:
            bar.close()
    n = len(per_image)
    if n == 0:
        raise CamlocError("`samples` must contain at least one readable image with a ground-truth box")
    loc = acc.compute()
    r1, r2 = box1.compute(), box2.compute()
    metrics = {k: float(v) for k, v in loc.as_dict().items() if k != "n_images" and v is not None}
    metrics["maxboxacc"] = r1.value
    metrics["maxboxacc_v2"] = r2.value
    pxap_curve = None
    if any(s.mask_paths for s in samples):  # PxAP where the data set has masks
        rp = pix.compute()
        metrics["pxap"] = rp.value
        pxap_curve = {"thresholds": rp.thresholds, "precision": rp.precision, "recall": rp.recall}
    return EvalResult(
        metrics, thresholds, r1.accuracy, r2.accuracy.T, r1.best_threshold, pxap_curve, per_image, failures, n
    )


def _evaluate_batch(
    good: list[dict[str, Any]],
    samples: Sequence[Sample],
    model: torch.nn.Module,
    cam: CAM | None,
    proto: Protocol,
    threshold: float,
    size: tuple[int, int],
    device: str | torch.device,
    acc: LocalizationAccuracy,
    box1: MaxBoxAcc,
    box2: MaxBoxAccV2,
    pix: PxAP,
    per_image: list[dict[str, Any]],
) -> None:
    """Maps of the top-1 and true classes for a batch, then every metric's update."""
    h_in, w_in = size
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
            logits = model(x)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
        classes = torch.stack([top[:, 0], true], dim=1)
        maps = backprop_saliency(model, x, classes.to(x.device))[1].float().cpu()
    maps_np = maps.numpy()
    gts = [it["boxes"] for it in good]
    true_maps = maps_np[:, 1]
    box_true = np.stack([sweep_boxes(m, protocol=proto, thresholds=[threshold])[0] for m in true_maps])
    box_top1 = np.stack([sweep_boxes(m, protocol=proto, thresholds=[threshold])[0] for m in maps_np[:, 0]])
    # the box of the j-th predicted class: the true class's box where it is the true class, top-1's at j = 0
    k = top.shape[1]
    pred_boxes = np.zeros((len(good), max(k, 5), 4))
    pred_classes = np.full((len(good), max(k, 5)), -1, np.int64)
    pred_classes[:, :k] = top.numpy()
    pred_boxes[:, 0] = box_top1
    hit = pred_classes == true.numpy()[:, None]
    pred_boxes[hit] = np.repeat(box_true, hit.sum(1), axis=0)
    acc.update(pred_classes, pred_boxes, true.numpy(), gts, gt_known_boxes=box_true)
    box1.update(true_maps, gts)
    box2.update(true_maps, gts)
    with_masks = [i for i, it in enumerate(good) if it["mask"] is not None]
    if with_masks:
        pix.update(
            [true_maps[i] for i in with_masks],
            [good[i]["mask"] for i in with_masks],
            None if any(good[i]["ignore"] is None for i in with_masks) else [good[i]["ignore"] for i in with_masks],
        )
    for i, it in enumerate(good):
        s = samples[it["index"]]
        iou_true = float(box_iou(box_true[i][None], gts[i], convention=proto.iou_convention).max())
        iou_top1 = float(box_iou(box_top1[i][None], gts[i], convention=proto.iou_convention).max())
        sx, sy = it["size"][0] / w_in, it["size"][1] / h_in
        scale = np.array([sx, sy, sx, sy])
        t1 = int(top[i, 0])
        per_image.append(
            {
                "path": str(s.path),
                "true_class": s.class_idx,
                "top1_class": t1,
                "top5_classes": [int(c) for c in top[i]],
                "iou_gt_known": round(iou_true, 4),
                "iou_top1": round(iou_top1, 4),
                "box_gt_known": [round(float(v), 2) for v in box_true[i] * scale],
                "box_top1": [round(float(v), 2) for v in box_top1[i] * scale],
                "gt_boxes": [[round(float(v), 2) for v in b * scale] for b in gts[i]],
                "top1_loc": bool(t1 == s.class_idx and iou_true >= 0.5),
                "gt_known_loc": bool(iou_true >= 0.5),
            }
        )
