"""Localization evaluation of a classifier on an annotated data set (``camloc evaluate``).

Every image goes through :class:`camloc.pipeline.ImagePipeline` (decode, EXIF orientation, one resize of the whole
image to the network input) and its ground truth through the same :class:`camloc.geometry.Geometry`: boxes and
masks are given in the STORED pixels of the file (as the data sets' tools read them), are rotated with the image
when it carries an EXIF orientation, and are resized like it, so predictions and ground truth are compared in one
frame: the network-input frame. (IoU is invariant to the axis-aligned scaling between that frame and the original
pixels, so numbers equal those computed in original pixels up to rounding at box borders.) ``per_image`` reports
boxes in original pixels (after the EXIF orientation).

The protocol preset (:class:`camloc.sweep.Protocol`) fixes every choice of that pipeline: decode (JPEG draft or
every pixel; EXIF orientation or not), the image resize's interpolation, the CAM resize (bilinear, or OpenCV
bicubic), GT box rounding (float, or ``int()`` after scaling), mask resampling and threshold. ``"wsolevaluation"``
reproduces clovaai/wsolevaluation from image file to number (tests/test_wsol_parity.py).

Per image the score maps of the predicted top-1 class and of the true class are computed (CAM: one forward;
``backprop``: one backward per map), resized to the input size, and then:

- classification: top-1 / top-5 (true class among the k highest logits);
- ``gt_known_loc``: the box of the true class's map at the fixed ``threshold`` has IoU >= 0.5 with some GT box;
- ``top1_loc`` / ``top5_loc``: class right at top-1 / top-5 **and** that class's box has IoU >= 0.5 with a GT box
  (ILSVRC and CAM-paper definition; when the true class is the j-th prediction its box is the true class's box);
- ``maxboxacc``: over the protocol's threshold sweep (the ``paper`` preset, a single threshold, is swept over
  0, 0.01, ..., 0.99 here), the best fraction of images whose selected box (largest
  component / contour) has IoU >= 0.5 with some GT box; ``maxboxacc_v2``: mean over IoU 0.3/0.5/0.7 of the
  best-threshold fraction of images where *any* candidate box matches some GT box (Choe et al., CVPR 2020);
- ``pxap``: pixel average precision of the true class's normalised map against GT masks (ignore regions
  excluded), over the images that have masks.

With ``box_head`` (a learned class-agnostic box head, :mod:`camloc.boxhead`) the fixed-threshold box of
``gt_known_loc``, ``top1_loc`` and ``top5_loc`` is the head's one box per image, whatever the class (so GT-known
and top-1 localization differ only by the classification); ``maxboxacc``, ``maxboxacc_v2`` and ``pxap`` have no
threshold to sweep for the head and stay the CAM's (the map method's), as without it.

Images with masks and no boxes (wsolevaluation's OpenImages) count for classification and PxAP; the box metrics
skip them (``EvalResult.n_box_images`` says over how many images they were computed).

Thresholds, normalisation, quantisation and the IoU convention come from the protocol preset
(:mod:`camloc.sweep`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from camloc._checks import check_number
from camloc.cam import upsample_maps
from camloc.data.annotations import Sample
from camloc.errors import CamlocError
from camloc.extractor import CAM
from camloc.geometry import Geometry
from camloc.metrics import LocalizationAccuracy, MaxBoxAcc, MaxBoxAccV2, PxAP, breakdown_counts, union_box
from camloc.models.registry import ModelInfo, Preprocess
from camloc.pipeline import ImagePipeline
from camloc.sweep import Protocol, box_iou, get_protocol, sweep_boxes

if TYPE_CHECKING:
    from camloc.faithfulness import Faithfulness, FaithfulnessConfig, FaithfulnessResult

__all__ = ["EvalResult", "MapBatch", "evaluate_samples"]

IOU_V2 = (0.3, 0.5, 0.7)


@dataclass(frozen=True)
class EvalResult:
    """Numbers of one evaluation. ``metrics`` values are fractions in ``[0, 1]``.

    ``top1_cls`` / ``top5_cls`` count every evaluated image; the box metrics (``*_loc``, ``maxboxacc``,
    ``maxboxacc_v2``, the curves, ``best_threshold``) only the ``n_box_images`` images with GT boxes (absent, and
    the curves NaN, when there are none); ``pxap`` only the ``n_mask_images`` images with GT masks.
    ``per_image`` records have ``None`` IoU / localization fields for images without boxes.
    """

    metrics: dict[str, float]
    thresholds: np.ndarray
    maxboxacc_curve: np.ndarray  # [T] box accuracy (IoU 0.5, selected box) per threshold
    maxboxacc_v2_curves: np.ndarray  # [T, 3] per IoU 0.3/0.5/0.7, any candidate box
    best_threshold: float
    pxap_curve: dict[str, np.ndarray] | None
    per_image: list[dict[str, Any]] = field(repr=False)
    failures: list[dict[str, str]] = field(repr=False)
    n_images: int = 0
    n_box_images: int = 0
    n_mask_images: int = 0
    faithfulness: FaithfulnessResult | None = None  # with ``faithfulness=``: of the true class's map
    #: GT-known split by single- / multi-box images (:func:`camloc.metrics.breakdown_counts`); None without boxes
    breakdown: dict[str, float | int | None] | None = None


@dataclass(frozen=True, eq=False)
class MapBatch:
    """What ``evaluate_samples(on_maps=...)`` hands over per batch, for the images with GT boxes.

    ``indices`` [n] positions in ``samples``; ``true_class`` / ``top_classes`` int64 [n] / [n, 5]; ``maps``
    float32 [n, H, W]: the true class's score map at the input size (the protocol's resize), the map every box
    metric uses; ``gt_boxes``: n float64 arrays [G_i, 4] in the same frame (the protocol's rounding).
    """

    indices: list[int]
    true_class: np.ndarray
    top_classes: np.ndarray
    maps: np.ndarray
    gt_boxes: list[np.ndarray]


def _gt_mask(paths: Sequence[os.PathLike[str]], geometry: Geometry, proto: Protocol) -> np.ndarray:
    """Union of mask files (stored frame, any resolution covering the image) in the network frame, bool [H, W].

    Each file is read as 8-bit grey, moved with the image's geometry (EXIF orientation, one nearest-neighbour
    resize with the protocol's sampling) and thresholded at ``> proto.mask_threshold``.
    """
    from PIL import Image

    w, h = geometry.crop_size
    out = np.zeros((h, w), bool)
    for p in paths:
        with Image.open(p) as im:
            grey = np.asarray(im.convert("L"))
        sampling: Any = proto.mask_sampling
        out |= geometry.map_mask(grey, "stored", "network", sampling=sampling) > proto.mask_threshold
    return out


def _gt_boxes(sample: Sample, geometry: Geometry, proto: Protocol) -> np.ndarray:
    """GT boxes (stored frame) in the network frame, float64 [G, 4], rounded as the protocol says."""
    boxes = geometry.map_boxes(np.asarray(sample.boxes, np.float64), "stored", "network", clip=False)
    return np.trunc(boxes) if proto.box_rounding == "truncate" else boxes


def _pipeline(preprocess: Preprocess, proto: Protocol) -> ImagePipeline:
    """The image pipeline the protocol prescribes (decode, orientation, the one resize) for this model."""
    return ImagePipeline(
        preprocess,
        draft=proto.image_draft,
        orientation=proto.exif_orientation,
        interpolation=proto.image_interpolation,
    )


class _Samples(Dataset):
    def __init__(self, samples: Sequence[Sample], pipeline: ImagePipeline, proto: Protocol) -> None:
        self.samples = list(samples)
        self.pipeline = pipeline
        self.proto = proto

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        try:
            if self.pipeline.preprocess.resize != "full":
                raise CamlocError("`model` preprocessing must resize the whole image for evaluation ('full')")
            item = self.pipeline(s.path)
            g = item.geometry
            boxes = _gt_boxes(s, g, self.proto)
            mask = _gt_mask(s.mask_paths, g, self.proto) if s.mask_paths else None
            ignore = _gt_mask([s.ignore_path], g, self.proto) if s.ignore_path else None
        except (CamlocError, OSError) as e:
            return {"index": i, "error": str(e)}
        return {"index": i, "x": item.tensor, "boxes": boxes, "mask": mask, "ignore": ignore, "geometry": g}


def _upsample(maps: torch.Tensor, size: tuple[int, int], proto: Protocol) -> torch.Tensor:
    """Maps ``[N, m, h, w]`` -> ``[N, m, H, W]`` float32 on the CPU, with the protocol's ``cam_resize``."""
    maps = maps.float()
    if proto.cam_resize == "bilinear" or tuple(maps.shape[-2:]) == tuple(size):
        return upsample_maps(maps, size).cpu()
    import cv2

    h, w = size
    arr = maps.detach().cpu().numpy()
    out = np.empty((*arr.shape[:2], h, w), np.float32)
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            out[i, j] = cv2.resize(arr[i, j], (w, h), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(out)


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def evaluate_samples(
    samples: Sequence[Sample],
    model: torch.nn.Module,
    info: ModelInfo,
    *,
    protocol: str | Protocol = "paper",
    threshold: float = 0.2,
    method: str | Any = "cam",
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: bool = False,
    method_args: Mapping[str, Any] | None = None,
    calibration: Any = None,
    on_maps: Callable[[MapBatch], None] | None = None,
    box_head: Any = None,
    zoom: bool | Any = False,
    faithfulness: FaithfulnessConfig | None = None,
    checkpoint: Any = None,
) -> EvalResult:
    """Evaluate ``model`` on annotated ``samples`` (see the module docstring for every definition).

    ``method`` names a map method of :mod:`camloc.methods` (with ``method_args``; default ``"cam"``) or is a ready
    producer; its maps, at any resolution, are resized to the input with the protocol's ``cam_resize``.

    ``calibration``: a :class:`camloc.calibrate.Calibration` (its ``method`` must be ``method``) or a
    :class:`camloc.boxes.BoxRule`: the fixed-threshold metrics (top-k / GT-known localization, per-image boxes)
    use its box rule instead of the paper's largest component at ``threshold``; the sweeps (MaxBoxAcc, V2,
    PxAP) are unchanged. ``on_maps`` is called with a :class:`MapBatch` after every batch (``camloc
    calibrate`` collects its table this way, in the same single pass).

    ``box_head``: a :class:`camloc.boxhead.BoxHead` or its file; its boxes replace the CAM boxes of the
    fixed-threshold localization metrics (checked against ``model``'s trunk first).

    ``zoom``: localize-then-classify (:mod:`camloc.zoom`; ``True`` or a :class:`camloc.zoom.Zoom`): the
    classification (top-1 / top-5 and the class of top-1 localization) comes from the combined logits of the whole
    image and the crop at the top-1 box of the method's map; the maps stay the method's maps of the whole image.

    ``faithfulness``: also compute :mod:`camloc.faithfulness`'s metrics of the TRUE class's map (at the input size)
    on every evaluated image (``EvalResult.faithfulness``; per-image values in ``per_image``).

    ``checkpoint``: a :class:`camloc.resume.EvalCheckpoint`; the evaluation starts from its last checkpoint (the
    samples it covers are skipped) and checkpoints after batches, so a killed run can be resumed exactly.
    """
    proto = get_protocol(protocol)
    from camloc.calibrate import rule_of

    rule = rule_of(calibration, method=method)
    check_number("threshold", threshold, low=0.0, high=1.0)
    check_number("batch_size", batch_size, low=1, integer=True)
    thresholds = np.asarray(proto.thresholds, np.float64)
    if len(thresholds) < 10:  # a fixed-threshold preset (paper: 0.2) still gets a sweep for MaxBoxAcc / PxAP
        thresholds = np.round(np.arange(0, 1, 0.01), 2)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(samples) > batch_size else 0
    state = _State(
        acc=LocalizationAccuracy(topk=(1, 5), convention=proto.iou_convention),
        box1=MaxBoxAcc(protocol=proto, thresholds=thresholds),
        box2=MaxBoxAccV2(protocol=proto, thresholds=thresholds, iou_thresholds=IOU_V2),
        pix=PxAP(protocol=proto, thresholds=thresholds),
    )
    from camloc.methods import make_producer

    cam = CAM(model) if method == "cam" and not method_args else make_producer(method, model, info, method_args)
    boxes_from = None
    if box_head is not None:
        from camloc.boxhead import as_box_head

        boxes_from = as_box_head(box_head).bind(model, info)
    if zoom is True:
        from camloc.zoom import Zoom

        plain = cam if isinstance(cam, CAM) else None
        zoom = Zoom(model, info, threshold=threshold, orientation=proto.exif_orientation, cam=plain, method=cam)
    elif zoom:
        zoom = zoom.with_method(cam)  # the crop is the top-1 box of the evaluated method's map
    faith = None
    if faithfulness is not None:
        from camloc.faithfulness import Faithfulness

        faith = Faithfulness(faithfulness, mean=info.preprocess.mean, std=info.preprocess.std)
    state.faith = faith  # checkpointed with the other accumulators
    failures: list[dict[str, str]] = []
    done = checkpoint.restore(state, failures) if checkpoint is not None else 0
    faith = state.faith
    todo = list(samples)[done:]  # a resumed run skips the samples its checkpoint covers
    data = _Samples(todo, _pipeline(info.preprocess, proto), proto)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    bar = None
    if progress:
        from tqdm import tqdm

        label = method if isinstance(method, str) else getattr(method, "name", "method")
        bar = tqdm(total=len(samples), unit="img", desc=f"evaluate ({label}, {proto.name})", dynamic_ncols=True)
        bar.update(done)
    try:
        for items in loader:
            for it in items:
                s = todo[it["index"]]
                if "error" in it:
                    failures.append({"path": str(s.path), "error": it["error"]})
                elif not len(it["boxes"]) and it["mask"] is None:
                    failures.append({"path": str(s.path), "error": "no ground-truth box or mask"})
            good = [it for it in items if "x" in it and (len(it["boxes"]) or it["mask"] is not None)]
            if good:
                _evaluate_batch(
                    good,
                    todo,
                    model,
                    cam,
                    proto,
                    threshold,
                    info.preprocess.size,
                    device,
                    state,
                    rule,
                    on_maps,
                    boxes_from,
                    zoom,
                    faith,
                )
            done += len(items)
            if checkpoint is not None:
                checkpoint.save(state, failures, done)
            if bar is not None:
                bar.update(len(items))
    finally:
        if bar is not None:
            bar.close()
    n = len(state.per_image)
    if n == 0:
        raise CamlocError("`samples` must contain at least one readable image with a ground-truth box or mask")
    metrics = {"top1_cls": state.cls[0] / n, "top5_cls": state.cls[1] / n}
    r1 = r2 = None
    breakdown = None
    if state.n_boxes:  # box metrics over the images that have boxes (mask-only images are skipped there)
        loc = state.acc.compute()
        metrics.update({k: float(v) for k, v in loc.as_dict().items() if k.endswith("_loc") and v is not None})
        r1, r2 = state.box1.compute(), state.box2.compute()
        metrics["maxboxacc"] = r1.value
        metrics["maxboxacc_v2"] = r2.value
        recs = [r for r in state.per_image if r.get("gt_known_loc") is not None and "n_gt_boxes" in r]
        if recs:
            breakdown = breakdown_counts([r["gt_known_loc"] for r in recs], [r["group_loc"] for r in recs],
                                         [r["n_gt_boxes"] for r in recs])  # fmt: skip
    pxap_curve = None
    if state.n_masks:  # PxAP over the images that have masks
        rp = state.pix.compute()
        metrics["pxap"] = rp.value
        pxap_curve = {"thresholds": rp.thresholds, "precision": rp.precision, "recall": rp.recall}
    nan = np.full(thresholds.size, np.nan)
    return EvalResult(
        metrics,
        thresholds,
        r1.accuracy if r1 is not None else nan,
        r2.accuracy.T if r2 is not None else np.full((thresholds.size, len(IOU_V2)), np.nan),
        r1.best_threshold if r1 is not None else float("nan"),
        pxap_curve,
        state.per_image,
        failures,
        n,
        n_box_images=state.n_boxes,
        n_mask_images=state.n_masks,
        faithfulness=faith.compute() if faith is not None else None,
        breakdown=breakdown,
    )


@dataclass
class _State:
    """The streaming accumulators of one evaluation."""

    acc: LocalizationAccuracy
    box1: MaxBoxAcc
    box2: MaxBoxAccV2
    pix: PxAP
    cls: list[int] = field(default_factory=lambda: [0, 0])  # top-1 / top-5 correct, over every image
    n_boxes: int = 0
    n_masks: int = 0
    per_image: list[dict[str, Any]] = field(default_factory=list)
    faith: Any = None  # the faithfulness accumulator, when asked for


def _class_maps(
    x: torch.Tensor, true: torch.Tensor, model: torch.nn.Module, cam: Any, proto: Protocol
) -> tuple[torch.Tensor, np.ndarray]:
    """Top-5 classes ``[n, 5]`` and the maps of the top-1 and true classes at the input size ``[n, 2, H, W]``.

    ``cam`` is the map producer (:class:`CAM` or a :mod:`camloc.methods` producer): one forward, the classes
    chosen from its logits, then its maps of those classes."""
    size = (int(x.shape[2]), int(x.shape[3]))
    with torch.no_grad():
        state, logits = cam.forward(x)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
        classes = torch.stack([top[:, 0], true], dim=1)
        maps = _upsample(cam.maps(state, classes.to(logits.device)), size, proto)
    return top, maps.numpy()


def _evaluate_batch(
    good: list[dict[str, Any]],
    samples: Sequence[Sample],
    model: torch.nn.Module,
    cam: Any,
    proto: Protocol,
    threshold: float,
    size: tuple[int, int],
    device: str | torch.device,
    st: _State,
    rule: Any = None,
    on_maps: Callable[[MapBatch], None] | None = None,
    boxes_from: Any = None,
    zoom: Any = None,
    faith: Faithfulness | None = None,
) -> None:
    """Maps of the top-1 and true classes for a batch, then every metric's update."""
    x = torch.stack([it["x"] for it in good]).to(device)
    true = torch.tensor([samples[it["index"]].class_idx for it in good], dtype=torch.long)
    if zoom:
        from camloc.zoom import zoom_class_maps

        paths = [samples[it["index"]].path for it in good]
        size_hw = (int(x.shape[2]), int(x.shape[3]))
        top, maps_np = zoom_class_maps(
            zoom, x, true, paths, [it["geometry"] for it in good], lambda m: _upsample(m, size_hw, proto)
        )
    else:
        top, maps_np = _class_maps(x, true, model, cam, proto)
    true_np = true.numpy()
    st.cls[0] += int((top[:, 0].numpy() == true_np).sum())
    st.cls[1] += int((top.numpy() == true_np[:, None]).any(1).sum())
    true_maps = maps_np[:, 1]
    scales = [it["geometry"].scale for it in good]  # network pixels per original pixel (pointing tolerance)
    extra = None if faith is None else faith.update(model, x, torch.from_numpy(true_maps), true,
                                                    [it["boxes"] for it in good], scale=scales)  # fmt: skip

    def box_of(m: np.ndarray) -> np.ndarray:  # the paper's rule at `threshold`, or the calibrated rule
        return sweep_boxes(m, protocol=proto, thresholds=[threshold])[0] if rule is None else rule.box(m)

    box_true = np.stack([box_of(m) for m in true_maps])
    box_top1 = np.stack([box_of(m) for m in maps_np[:, 0]])
    if boxes_from is not None:  # a learned class-agnostic box head: one box per image, for every class
        box_true = box_top1 = boxes_from(x).numpy().astype(np.float64)
    boxed = [i for i, it in enumerate(good) if len(it["boxes"])]
    if boxed:
        gts = [good[i]["boxes"] for i in boxed]
        if on_maps is not None:
            on_maps(MapBatch([good[i]["index"] for i in boxed], true_np[boxed], top.numpy()[boxed],
                             true_maps[boxed], gts))  # fmt: skip
        # the box of the j-th predicted class: the true class's box where it is the true class, top-1's at j = 0
        k = top.shape[1]
        pred_boxes = np.zeros((len(boxed), max(k, 5), 4))
        pred_classes = np.full((len(boxed), max(k, 5)), -1, np.int64)
        pred_classes[:, :k] = top.numpy()[boxed]
        pred_boxes[:, 0] = box_top1[boxed]
        hit = pred_classes == true_np[boxed][:, None]
        pred_boxes[hit] = np.repeat(box_true[boxed], hit.sum(1), axis=0)
        st.acc.update(pred_classes, pred_boxes, true_np[boxed], gts, gt_known_boxes=box_true[boxed])
        st.box1.update([true_maps[i] for i in boxed], gts)
        st.box2.update([true_maps[i] for i in boxed], gts)
        st.n_boxes += len(boxed)
    with_masks = [i for i, it in enumerate(good) if it["mask"] is not None]
    if with_masks:
        st.pix.update(
            [true_maps[i] for i in with_masks],
            [good[i]["mask"] for i in with_masks],
            None if any(good[i]["ignore"] is None for i in with_masks) else [good[i]["ignore"] for i in with_masks],
        )
        st.n_masks += len(with_masks)
    for i, it in enumerate(good):
        s = samples[it["index"]]
        g: Geometry = it["geometry"]
        t1 = int(top[i, 0])
        rec: dict[str, Any] = {
            "path": str(s.path),
            "true_class": s.class_idx,
            "top1_class": t1,
            "top5_classes": [int(c) for c in top[i]],
            "iou_gt_known": None,
            "iou_top1": None,
            "box_gt_known": _rounded(g.map_boxes(box_true[i], "network", "original")),
            "box_top1": _rounded(g.map_boxes(box_top1[i], "network", "original")),
            "gt_boxes": [_rounded(b) for b in g.map_boxes(np.asarray(s.boxes, np.float64).reshape(-1, 4),
                                                         "stored", "original", clip=False)],
            "top1_loc": None,
            "gt_known_loc": None,
            "n_gt_boxes": len(it["boxes"]),
            "group_loc": None,  # the true class's box matches the union of the GT boxes (the group)
        }  # fmt: skip
        if len(it["boxes"]):
            iou_true = float(box_iou(box_true[i][None], it["boxes"], convention=proto.iou_convention).max())
            iou_top1 = float(box_iou(box_top1[i][None], it["boxes"], convention=proto.iou_convention).max())
            iou_group = float(
                box_iou(box_true[i][None], union_box(it["boxes"])[None], convention=proto.iou_convention)[0, 0]
            )
            rec.update(
                group_loc=bool(iou_group >= 0.5),
                iou_gt_known=round(iou_true, 4),
                iou_top1=round(iou_top1, 4),
                top1_loc=bool(t1 == s.class_idx and iou_true >= 0.5),
                gt_known_loc=bool(iou_true >= 0.5),
            )
        if extra is not None:
            rec["faithfulness"] = extra[i]
        st.per_image.append(rec)


def _rounded(box: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in box]
