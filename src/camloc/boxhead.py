r"""A learned class-agnostic box head on a FROZEN trunk's feature map (two-stage localization, as PSOL, CVPR 2020).

The classifier stays as it is; a small regressor reads its unpooled features ``f [N, K, h, w]`` (what
:meth:`camloc.CAM.forward` returns: lite0 gives ``[1280, 7, 7]`` at 224) and predicts ONE box per image, whatever
the class: ``(cx, cy, w, h)`` normalised by the network input's width and height (``[0, 1]``, the network-input
frame; :func:`normalized_to_pixels` gives camloc's xyxy pixel boxes there, :class:`camloc.geometry.Geometry` maps
them to the photo).

**Network** (:class:`BoxRegressor`): per-channel standardisation of the features (mean and std of the training
features, stored in the head), a FIXED projection on their first ``pca`` principal components (computed once from
the training features, unsupervised; ``pca=0``: none), a 1x1 conv ``-> width`` + ReLU, a 3x3 conv
``width -> width`` + ReLU, flatten (``width * h * w``), a linear layer ``-> hidden`` + ReLU + dropout, a linear
layer ``-> 4`` and a sigmoid.
``cam_input=True`` appends the top-1 class's map (ReLU, divided by its max) as one more input channel.

**Loss**: ``l1_weight * |pred - target|_1`` (mean over the 4 normalised coordinates) ``+ giou_weight *
(1 - GIoU)`` (:func:`torchvision.ops.generalized_box_iou_loss` on the xyxy forms), averaged over the batch; AdamW,
cosine learning-rate decay, fixed epochs (:class:`HeadConfig`). Features are extracted once (and cached on disk,
``float16``), so training runs on the CPU in seconds to minutes.

**Supervision** (recorded in the saved file and in every report; numbers must always be labelled with it):

- ``"pseudo"`` (weakly supervised): the targets are the CAM boxes of each image's top-1 class, by the paper's
  rule (upsample to the input, ``>= threshold * max``, largest 8-connected component; ``threshold`` 0.2 unless
  given), on UNLABELLED images: a folder of images, no labels, no boxes used.
- ``"boxes"`` (few-shot supervised): the targets are ground-truth boxes of a few annotated images (any format
  ``camloc evaluate`` reads); an image with several boxes gives ONE target: the ``largest`` box (default) or the
  ``union`` of its boxes (``multi_box``). Class labels are not used.

**Augmentation**: the horizontally flipped image is a second training sample (its features are extracted from the
flipped input; its target is the flipped box, or for ``pseudo`` the CAM box of the flipped image).

**The file** (:meth:`BoxHead.save`, :func:`load_box_head`): ``torch.save`` of a plain dict (``format``
``"camloc-box-head"``, ``schema_version``, ``supervision`` and its details, the trunk's identity: model spec /
weights or checkpoint file with sha256, the model name, a sha256 fingerprint of its state dict, its preprocessing
and feature shape; the training set's fingerprint; the hyper-parameters; the regressor's state dict), read with
``weights_only=True``. :meth:`BoxHead.bind` refuses a model whose fingerprint, preprocessing or feature shape is not
the trunk's it was trained on.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from camloc._checks import check_choice, check_number, check_tensor, describe_load_error, fail
from camloc.errors import CamlocError, CamlocValueError
from camloc.models.info import ModelInfo, Preprocess

__all__ = [
    "FILE_FORMAT",
    "SCHEMA_VERSION",
    "BoxFeatures",
    "BoxHead",
    "BoxHeadResult",
    "BoxPredictor",
    "BoxRegressor",
    "HeadConfig",
    "LearnedBox",
    "as_box_head",
    "box_head_summary",
    "box_loss",
    "extract_box_features",
    "flip_boxes",
    "load_box_head",
    "merge_gt_boxes",
    "normalized_to_pixels",
    "pixels_to_normalized",
    "pseudo_boxes",
    "train_box_head",
    "train_box_regressor",
]

FILE_FORMAT = "camloc-box-head"
SCHEMA_VERSION = 1
_CACHE_VERSION = 1
Supervision = Literal["pseudo", "boxes"]
SUPERVISIONS: tuple[str, ...] = ("pseudo", "boxes")
MULTI_BOX: tuple[str, ...] = ("largest", "union")


# --------------------------------------------------------------------------------------------- pure box functions


def normalized_to_pixels(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Normalised ``(cx, cy, w, h) [..., 4]`` -> xyxy pixels ``[..., 4]`` of a frame of ``size = (H, W)``.

    ``x0 = (cx - w / 2) * W`` etc., clipped to ``[0, W] x [0, H]`` (camloc's continuous box convention).
    """
    h, w = float(size[0]), float(size[1])
    cx, cy, bw, bh = boxes.unbind(-1)
    x0 = ((cx - bw / 2) * w).clamp(0, w)
    x1 = ((cx + bw / 2) * w).clamp(0, w)
    y0 = ((cy - bh / 2) * h).clamp(0, h)
    y1 = ((cy + bh / 2) * h).clamp(0, h)
    return torch.stack([x0, y0, x1, y1], -1)


def pixels_to_normalized(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """xyxy pixels ``[..., 4]`` of a frame of ``size = (H, W)`` -> normalised ``(cx, cy, w, h) [..., 4]``."""
    h, w = float(size[0]), float(size[1])
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / (2 * w), (y0 + y1) / (2 * h), (x1 - x0) / w, (y1 - y0) / h], -1)


def flip_boxes(boxes: torch.Tensor, width: float) -> torch.Tensor:
    """xyxy boxes ``[..., 4]`` mirrored left-right in a frame ``width`` wide: ``(W - x1, y0, W - x0, y1)``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([width - x1, y0, width - x0, y1], -1)


def merge_gt_boxes(boxes: np.ndarray, mode: Literal["largest", "union"] = "largest") -> np.ndarray:
    """One target box ``float64 [4]`` from an image's GT boxes ``[G, 4]`` (xyxy, G >= 1).

    ``"largest"``: the box of largest area (the first on ties); ``"union"``: the smallest box containing all.
    """
    check_choice("multi_box", mode, MULTI_BOX)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(b):
        fail("boxes", "at least one box", b)
    if mode == "union":
        return np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])
    area = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    return b[int(np.argmax(area))]


def box_loss(
    pred: torch.Tensor, target: torch.Tensor, *, l1_weight: float = 1.0, giou_weight: float = 1.0
) -> torch.Tensor:
    """``l1_weight * mean |pred - target| + giou_weight * mean (1 - GIoU)`` of normalised cxcywh ``[N, 4]``.

    The L1 term is the mean over the ``4 N`` coordinates, GIoU (Rezatofighi et al., CVPR 2019) is computed on the
    xyxy forms (:func:`torchvision.ops.generalized_box_iou_loss`, mean over ``N``). Returns a scalar tensor.
    """
    from torchvision.ops import generalized_box_iou_loss

    l1 = (pred - target).abs().mean()
    px = normalized_to_pixels(pred, (1, 1))
    tx = normalized_to_pixels(target, (1, 1))
    giou = generalized_box_iou_loss(px, tx, reduction="mean")
    return l1_weight * l1 + giou_weight * giou


def _box_iou_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of row-paired xyxy boxes ``[N, 4]`` -> ``[N]`` (0 for empty unions)."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1) + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def pseudo_boxes(cams: torch.Tensor, input_size: tuple[int, int], *, threshold: float = 0.2) -> torch.Tensor:
    """The paper rule's boxes of raw maps ``cams [N, h, w]``: upsampled (bilinear) to ``input_size = (H, W)``,
    divided by their max, ``>= threshold``, largest 8-connected component; xyxy pixels of the input, ``[N, 4]``
    (``(0, 0, 0, 0)`` where a map has no positive value)."""
    from camloc.localization import localize

    check_tensor("cams", cams, ndim=3, floating=True)
    if not len(cams):
        return torch.zeros(0, 4)
    out = [localize(c[:, None], threshold=threshold, size=input_size).boxes[:, 0] for c in cams.split(64)]
    return torch.cat(out)


def _cam_channel(cams: torch.Tensor) -> torch.Tensor:
    """Raw maps ``[N, h, w]`` -> ``[N, 1, h, w]``: ReLU divided by the max (0 where the max is <= 0)."""
    c = cams.float().clamp(min=0)
    m = c.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
    return (c / m)[:, None]


# --------------------------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class HeadConfig:
    """Hyper-parameters of the regressor and its training (all recorded in the saved file).

    Attributes:
        pca: fixed projection of the standardised features on their first ``pca`` principal components before
            the learned layers (0: none; more than ``K``: ``K``). Cuts the training cost ~``K / pca``-fold and the
            parameters a few boxed images must fit.
        width: channels after the 1x1 reduction (and of the 3x3 conv).
        hidden: units of the hidden linear layer.
        dropout: dropout before the last layer.
        cam_input: append the top-1 class's normalised map as an input channel.
        epochs, batch_size, lr, weight_decay: AdamW with cosine decay from ``lr`` to 0 over ``epochs``.
        l1_weight, giou_weight: the loss's weights (:func:`box_loss`).
        seed: initialisation and shuffling.
    """

    pca: int = 128
    width: int = 32
    hidden: int = 256
    dropout: float = 0.3
    cam_input: bool = False
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    l1_weight: float = 1.0
    giou_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "hidden", "epochs", "batch_size"):
            check_number(name, getattr(self, name), low=1, integer=True)
        check_number("pca", self.pca, low=0, integer=True)
        check_number("dropout", self.dropout, low=0.0, high=0.99)
        for name in ("lr", "weight_decay", "l1_weight", "giou_weight"):
            check_number(name, getattr(self, name), low=0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class BoxRegressor(nn.Module):
    """Features ``[N, K, h, w]`` (+ optional map channel) -> normalised ``(cx, cy, w, h) [N, 4]`` in ``(0, 1)``.

    ``mean`` / ``std`` (``[K]`` buffers) standardise the features per channel; see the module docstring.
    """

    def __init__(self, in_channels: int, grid: tuple[int, int], *, config: HeadConfig = HeadConfig()) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.grid = (int(grid[0]), int(grid[1]))
        self.cam_input = bool(config.cam_input)
        c = config.width
        p = min(config.pca, self.in_channels) if config.pca else self.in_channels
        self.register_buffer("mean", torch.zeros(self.in_channels))
        self.register_buffer("std", torch.ones(self.in_channels))
        self.register_buffer("proj", torch.eye(self.in_channels)[:, :p].clone())  # [K, p], fixed
        self.reduce = nn.Conv2d(p + int(self.cam_input), c, 1)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.fc1 = nn.Linear(c * self.grid[0] * self.grid[1], config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.hidden, 4)
        with torch.no_grad():  # start at a centred box of half the frame's side
            self.fc2.weight.mul_(0.1)
            self.fc2.bias.zero_()

    def forward(self, features: torch.Tensor, cam: torch.Tensor | None = None) -> torch.Tensor:
        """``features [N, K, h, w]`` (any float dtype), ``cam [N, 1, h, w]`` (with ``cam_input``) -> ``[N, 4]``."""
        return self.layers(self.project(features), cam)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """The fixed part: standardise, project on the principal axes: ``[N, K, h, w] -> [N, p, h, w]`` float32."""
        mean: torch.Tensor = self.mean  # type: ignore[assignment]
        std: torch.Tensor = self.std  # type: ignore[assignment]
        z = (features.float() - mean[:, None, None]) / std[:, None, None]
        proj: torch.Tensor = self.proj  # type: ignore[assignment]
        return torch.einsum("nkhw,kp->nphw", z, proj) if proj.shape[1] < proj.shape[0] else z

    def layers(self, z: torch.Tensor, cam: torch.Tensor | None = None) -> torch.Tensor:
        """The learned part: projected features ``[N, p, h, w]`` (+ ``cam``) -> normalised cxcywh ``[N, 4]``."""
        if self.cam_input:
            if cam is None:
                fail("cam", "the top-1 map channel [N, 1, h, w] (this head was trained with cam_input)", cam)
            z = torch.cat([z, cam.float()], 1)
        z = torch.relu(self.conv(torch.relu(self.reduce(z))))
        z = self.drop(torch.relu(self.fc1(z.flatten(1))))
        return torch.sigmoid(self.fc2(z))


def _standardisation(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std ``[K]`` of ``[N, K, h, w]`` features (float64 accumulation, chunked)."""
    k = features.shape[1]
    s = torch.zeros(k, dtype=torch.float64)
    s2 = torch.zeros(k, dtype=torch.float64)
    n = 0
    for chunk in features.split(128):
        c = chunk.double()
        s += c.sum((0, 2, 3))
        s2 += (c * c).sum((0, 2, 3))
        n += c.shape[0] * c.shape[2] * c.shape[3]
    mean = s / max(n, 1)
    var = (s2 / max(n, 1) - mean * mean).clamp(min=0)
    return mean.float(), var.sqrt().clamp(min=1e-3).float()


def _principal_axes(
    features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, p: int, *, seed: int, max_rows: int = 8192
) -> torch.Tensor:
    """``[K, p]``: the first ``p`` principal axes of the standardised features' per-position vectors.

    Computed from at most ``max_rows`` positions drawn with ``seed`` (eigenvectors of their covariance, largest
    eigenvalue first, each axis's sign fixed so its largest-magnitude entry is positive).
    """
    n, _, h, w = features.shape
    g = torch.Generator().manual_seed(seed)
    total = n * h * w
    pick = torch.randperm(total, generator=g)[: min(total, max_rows)]
    img, pos = pick // (h * w), pick % (h * w)
    rows = features.flatten(2)[img, :, pos].float()  # [R, K]
    z = (rows - mean) / std
    cov = (z.T @ z).double() / max(len(z) - 1, 1)
    vals, vecs = torch.linalg.eigh(cov)
    axes = vecs[:, torch.argsort(vals, descending=True)[:p]]
    sign = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    return (axes * sign).float()


def train_box_regressor(
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    cams: torch.Tensor | None = None,
    config: HeadConfig = HeadConfig(),
    progress: bool = False,
) -> tuple[BoxRegressor, dict[str, Any]]:
    """Fit a :class:`BoxRegressor` on ``features [N, K, h, w]`` and normalised cxcywh ``targets [N, 4]``.

    ``cams [N, h, w]``: the raw top-1 maps (needed with ``config.cam_input``). Deterministic given
    ``config.seed`` (single-threaded numerics aside). Returns the regressor in eval mode and a history dict
    (``loss`` per epoch, ``train_iou``: mean IoU of its predictions with the targets, ``seconds``).
    """
    check_tensor("features", features, ndim=4, floating=True)
    check_tensor("targets", targets, ndim=2, floating=True)
    n = features.shape[0]
    if n < 1 or targets.shape != (n, 4):
        fail("targets", f"a [N, 4] tensor with N = {n} >= 1", targets)
    if config.cam_input and (cams is None or cams.shape[0] != n):
        fail("cams", f"the [N, h, w] top-1 maps of the {n} samples (config.cam_input)", cams)
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        reg = BoxRegressor(features.shape[1], (features.shape[2], features.shape[3]), config=config)
    mean, std = _standardisation(features)
    reg.mean.copy_(mean)  # type: ignore[operator]
    reg.std.copy_(std)  # type: ignore[operator]
    proj: torch.Tensor = reg.proj  # type: ignore[assignment]
    p = int(proj.shape[1])
    if p < features.shape[1]:
        reg.proj.copy_(_principal_axes(features, mean, std, p, seed=config.seed))  # type: ignore[operator]
    with torch.no_grad():  # the fixed part once: the learned layers train on [N, p, h, w]
        z_all = torch.cat([reg.project(c) for c in features.split(256)])
    cam_ch = _cam_channel(cams) if config.cam_input and cams is not None else None
    tgt = targets.float()
    opt = torch.optim.AdamW(reg.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    history: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, unit="epoch", desc="box head", dynamic_ncols=True)
    reg.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # dropout
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=gen)
            run = 0.0
            for idx in order.split(config.batch_size):
                pred = reg.layers(z_all[idx], None if cam_ch is None else cam_ch[idx])
                loss = box_loss(pred, tgt[idx], l1_weight=config.l1_weight, giou_weight=config.giou_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                run += float(loss.detach()) * len(idx)
            history.append(run / n)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]:.4f}")
    if bar is not None:
        bar.close()
    reg.eval()
    with torch.no_grad():
        preds = torch.cat(
            [reg.layers(z_all[i : i + 256], None if cam_ch is None else cam_ch[i : i + 256]) for i in range(0, n, 256)]
        )
        iou = _box_iou_pairs(normalized_to_pixels(preds, (1, 1)), normalized_to_pixels(tgt, (1, 1)))
    return reg, {
        "loss": [round(v, 6) for v in history],
        "train_iou": round(float(iou.mean()), 6),
        "seconds": round(time.perf_counter() - started, 3),
    }


# --------------------------------------------------------------------------------------------- features


@dataclass(frozen=True)
class BoxFeatures:
    """Frozen-trunk features of images (every view), ready for training.

    Attributes:
        features: ``float16 [S, K, h, w]``: one row per (view, image), views in ``views`` order, images in
            ``paths`` order (``S = len(views) * len(paths)``).
        cams: ``float32 [S, h, w]``: the raw map of each sample's top-1 class.
        top1: ``int64 [S]``: that class.
        gt: ``float32 [S, 4]`` xyxy network-input pixels of the sample's GT target box (flipped for the flipped
            view), NaN where no boxes were given.
        image: ``int64 [S]``: index into ``paths``.
        views: the views (``"plain"``, ``"flip"``).
        paths: the image files.
        input_size: ``(H, W)`` of the network input.
    """

    features: torch.Tensor
    cams: torch.Tensor
    top1: torch.Tensor
    gt: torch.Tensor
    image: torch.Tensor
    views: tuple[str, ...]
    paths: tuple[Path, ...]
    input_size: tuple[int, int]

    def select(self, images: Sequence[int]) -> BoxFeatures:
        """The samples (every view) of the images with these indices into ``paths`` (re-indexed)."""
        keep = torch.as_tensor(list(images), dtype=torch.long)
        remap = torch.full((len(self.paths),), -1, dtype=torch.long)
        remap[keep] = torch.arange(len(keep))
        rows = torch.nonzero(remap[self.image] >= 0).flatten()
        return BoxFeatures(
            self.features[rows], self.cams[rows], self.top1[rows], self.gt[rows], remap[self.image[rows]],
            self.views, tuple(self.paths[int(i)] for i in keep), self.input_size,
        )  # fmt: skip


class _BoxImages(torch.utils.data.Dataset):
    """Paths (+ GT boxes in stored pixels) -> ``(index, Tensor[3, H, W], gt xyxy network [4] | None, error)``."""

    def __init__(
        self, paths: Sequence[Path], boxes: Sequence[np.ndarray] | None, preprocess: Preprocess, multi_box: str
    ) -> None:
        from camloc.pipeline import ImagePipeline

        self.paths = list(paths)
        self.boxes = None if boxes is None else list(boxes)
        self.pipeline = ImagePipeline(preprocess)
        self.multi_box = multi_box

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, np.ndarray | None, str | None]:
        try:
            item = self.pipeline(self.paths[i])
        except CamlocError as e:
            return i, None, None, str(e)
        gt = None
        if self.boxes is not None:
            net = item.geometry.map_boxes(np.asarray(self.boxes[i], np.float64).reshape(-1, 4), "stored", "network")
            gt = merge_gt_boxes(net, self.multi_box)  # type: ignore[arg-type]
        return i, item.tensor, gt, None


def _collate(items: list[Any]) -> list[Any]:
    return items


def _batches(
    ds: _BoxImages, *, batch_size: int, device: str | torch.device, workers: int | None, progress: bool
) -> Iterator[tuple[list[int], torch.Tensor, list[np.ndarray | None]]]:
    from camloc.fit import stream_dataset_batches

    for idx, x, extra in stream_dataset_batches(
        ds, ds.paths, batch_size=batch_size, device=device, workers=workers, progress=progress,
        desc="box-head features",
    ):  # fmt: skip
        yield idx, x, [e[0] for e in extra]


def _cache_key(fingerprint: str, preprocess: Preprocess, paths: Sequence[Path], extra: Any) -> str:
    files = []
    for p in paths:
        st = p.stat()
        files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    doc = {"v": _CACHE_VERSION, "trunk": fingerprint, "preprocess": preprocess.to_dict(), "files": files, **extra}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def extract_box_features(
    model: nn.Module,
    info: ModelInfo,
    paths: Sequence[str | os.PathLike[str]],
    *,
    boxes: Sequence[np.ndarray] | None = None,
    multi_box: Literal["largest", "union"] = "largest",
    views: Sequence[Literal["plain", "flip"]] = ("plain", "flip"),
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: bool = False,
) -> BoxFeatures:
    """Run the frozen trunk once per image and view: features, top-1 maps and (given ``boxes``) GT targets.

    Images go through the one image pipeline (:class:`camloc.pipeline.ImagePipeline`, ``info.preprocess``: the
    same input ``camloc evaluate``'s ``paper`` protocol gives the model); the trunk is run by
    :meth:`camloc.CAM.forward` under ``no_grad`` (pass the model in eval mode). ``boxes``: per image, GT boxes
    ``[G, 4]`` in stored pixels (as :class:`camloc.data.annotations.Sample` holds them), merged into one target
    by ``multi_box``. ``cache_dir``: the result is stored there (``boxfeat-<key>.pt``, written atomically) under
    a key of the model's fingerprint, the preprocessing, the files (path, size, mtime), the views and the boxes,
    and read back instead of running the trunk again.
    """
    from camloc.extractor import CAM
    from camloc.fit import trunk_fingerprint

    check_number("batch_size", batch_size, low=1, integer=True)
    check_choice("multi_box", multi_box, MULTI_BOX)
    views = tuple(views)
    if not views:
        fail("views", "at least one of 'plain', 'flip'", views)
    for v in views:
        check_choice("views", v, ("plain", "flip"))
    files = [Path(p) for p in paths]
    if not files:
        fail("paths", "at least one image file", "none")
    if boxes is not None and len(boxes) != len(files):
        fail("boxes", f"one [G, 4] array per image ({len(files)})", f"{len(boxes)} arrays")
    size = (int(info.preprocess.size[0]), int(info.preprocess.size[1]))
    cache_path = None
    if cache_dir is not None:
        box_doc = None if boxes is None else [np.asarray(b, np.float64).round(3).tolist() for b in boxes]
        key = _cache_key(
            trunk_fingerprint(model), info.preprocess, files, {"views": views, "boxes": box_doc, "multi": multi_box}
        )
        cache_path = Path(cache_dir) / f"boxfeat-{key[:32]}.pt"
        if cache_path.is_file():
            try:
                d = torch.load(cache_path, map_location="cpu", weights_only=True)
                return BoxFeatures(d["features"], d["cams"], d["top1"], d["gt"], d["image"], views, tuple(files), size)
            except (OSError, RuntimeError, KeyError, EOFError):
                pass  # unreadable entry: extract again and overwrite it
    cam = CAM(model)
    ds = _BoxImages(files, boxes, info.preprocess, multi_box)
    per_view: dict[str, dict[str, list[torch.Tensor]]] = {v: {"f": [], "c": [], "t": [], "g": []} for v in views}
    order: list[int] = []
    with torch.no_grad():
        for idx, x, gts in _batches(ds, batch_size=batch_size, device=device, workers=workers, progress=progress):
            order += idx
            g = torch.tensor(np.stack([np.full(4, np.nan) if b is None else b for b in gts]), dtype=torch.float32)
            for v in views:
                xv = x if v == "plain" else torch.flip(x, dims=[3])
                feats, logits = cam.forward(xv)
                top = logits.argmax(1, keepdim=True)
                per_view[v]["f"].append(feats.detach().to("cpu", torch.float16))
                per_view[v]["c"].append(cam.maps(feats, top)[:, 0].detach().float().cpu())
                per_view[v]["t"].append(top[:, 0].cpu())
                per_view[v]["g"].append(g if v == "plain" else flip_boxes(g, float(size[1])))
    feats_all = torch.cat([torch.cat(per_view[v]["f"]) for v in views])
    cams_all = torch.cat([torch.cat(per_view[v]["c"]) for v in views])
    top_all = torch.cat([torch.cat(per_view[v]["t"]) for v in views])
    gt_all = torch.cat([torch.cat(per_view[v]["g"]) for v in views])
    image = torch.as_tensor(order, dtype=torch.long).repeat(len(views))
    if cache_path is not None:
        from camloc._io import atomic_write_bytes

        buf = io.BytesIO()
        torch.save({"features": feats_all, "cams": cams_all, "top1": top_all, "gt": gt_all, "image": image}, buf)
        atomic_write_bytes(cache_path, buf.getvalue())
    return BoxFeatures(feats_all, cams_all, top_all, gt_all, image, views, tuple(files), size)


# --------------------------------------------------------------------------------------------- the saved head


def _file_sha256(path: Path) -> str:
    from camloc.fit import _file_sha256 as sha

    return sha(path)


@dataclass(frozen=True)
class BoxHead:
    """A trained box head and everything that says what it is (see the module docstring for the file).

    Attributes:
        regressor: the :class:`BoxRegressor` (eval mode, CPU).
        supervision: ``"pseudo"`` or ``"boxes"``.
        supervision_detail: how the targets were made (``threshold`` and rule for ``pseudo``, ``multi_box``
            and the data set for ``boxes``).
        trunk: the trunk's identity: ``model`` (spec), ``name``, ``weights`` / ``checkpoint`` (+ ``sha256``),
            ``fingerprint`` (sha256 of the model's state dict, :func:`camloc.fit.trunk_fingerprint`).
        preprocess: the trunk's preprocessing (the head's input frame is its network input).
        feature_shape: ``(K, h, w)`` the head reads.
        config: the hyper-parameters.
        training: the training set (``fingerprint``, ``images``, ``samples``, ``views``, ``data``) and the fit's
            history (``train_iou``, ``seconds``, ...).
    """

    regressor: BoxRegressor
    supervision: str
    supervision_detail: dict[str, Any]
    trunk: dict[str, Any]
    preprocess: Preprocess
    feature_shape: tuple[int, int, int]
    config: HeadConfig
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``"box head (supervision: pseudo, ...)"``: the tag every number from this head carries."""
        d = self.supervision_detail
        if self.supervision == "pseudo":
            what = f"CAM boxes (threshold {d.get('threshold')}) of the top-1 class on unlabelled images"
        else:
            what = f"GT boxes ({d.get('multi_box')}) of {d.get('images')} boxed images"
        return f"box head (supervision: {self.supervision}: {what}; {self.training.get('data', '?')})"

    def to_dict(self) -> dict[str, Any]:
        """The metadata (everything but the weights), JSON-serialisable."""
        return {
            "format": FILE_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "supervision": self.supervision,
            "supervision_detail": dict(self.supervision_detail),
            "trunk": dict(self.trunk),
            "preprocess": self.preprocess.to_dict(),
            "feature_shape": list(self.feature_shape),
            "config": self.config.to_dict(),
            "training": dict(self.training),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the head to ``path`` atomically (``torch.save`` of :meth:`to_dict` + ``state_dict``)."""
        from camloc._io import atomic_write_bytes

        obj = self.to_dict()
        obj["state_dict"] = {k: v.detach().cpu().clone() for k, v in self.regressor.state_dict().items()}
        buf = io.BytesIO()
        torch.save(obj, buf)
        dest = Path(path)
        atomic_write_bytes(dest, buf.getvalue())
        return dest

    def check_trunk(self, model: nn.Module, info: ModelInfo) -> None:
        """Raise :class:`~camloc.errors.CamlocValueError` unless ``model``/``info`` are the trunk it was trained on.

        Compared: the model's state-dict fingerprint, and the preprocessing (the head's input frame).
        """
        from camloc.fit import trunk_fingerprint

        want = self.trunk.get("fingerprint")
        got = trunk_fingerprint(model)
        name = self.trunk.get("name") or self.trunk.get("model")
        if want != got:
            fail(
                "box_head",
                f"a box head trained on this model's trunk (it was trained on {name}, fingerprint {str(want)[:12]})",
                f"a model named {info.name!r} with fingerprint {got[:12]} (another model or other weights)",
            )
        if self.preprocess.to_dict() != info.preprocess.to_dict():
            fail(
                "box_head",
                f"a box head trained with this model's preprocessing ({info.preprocess.to_dict()})",
                f"one trained with {self.preprocess.to_dict()}",
            )

    def bind(self, model: nn.Module, info: ModelInfo) -> BoxPredictor:
        """A :class:`BoxPredictor` for ``model`` after :meth:`check_trunk`."""
        self.check_trunk(model, info)
        return BoxPredictor(self, model)


class BoxPredictor:
    """A box head bound to its (checked) model: ``predictor(x [N, 3, H, W]) -> Tensor[N, 4]``.

    The result is float32 xyxy in network-input pixels (camloc's box convention), on the CPU, one box per image,
    class-agnostic. The trunk runs under ``no_grad`` via :meth:`camloc.CAM.forward` (one forward per call); the
    head's input must have the training's feature shape.
    """

    def __init__(self, head: BoxHead, model: nn.Module) -> None:
        from camloc.extractor import CAM

        self.head = head
        self.cam = CAM(model)

    def from_features(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Boxes ``[N, 4]`` (network-input pixels) from trunk ``features [N, K, h, w]`` (and, for ``cam_input``
        heads, the ``logits [N, C]`` whose top-1 class's map is the extra channel)."""
        k, h, w = self.head.feature_shape
        if tuple(features.shape[1:]) != (k, h, w):
            fail("features", f"trunk features of shape [N, {k}, {h}, {w}] (the box head's)", features)
        reg = self.head.regressor
        cam = None
        if reg.cam_input:
            if logits is None:
                fail("logits", "the model's logits (this box head reads the top-1 map)", logits)
            cam = _cam_channel(self.cam.maps(features, logits.argmax(1, keepdim=True))[:, 0])
        with torch.no_grad():
            dev = next(reg.parameters()).device
            pred = reg(features.to(dev), None if cam is None else cam.to(dev))
        return normalized_to_pixels(pred.float().cpu(), self.head.preprocess.size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, ndim=4, floating=True)
        with torch.no_grad():
            feats, logits = self.cam.forward(x)
        return self.from_features(feats, logits)


def load_box_head(path: str | os.PathLike[str]) -> BoxHead:
    """Read a file written by :meth:`BoxHead.save`; a file of another kind or schema is a camloc error."""
    p = Path(path)
    if not p.is_file():
        fail("box_head", "an existing box-head file (camloc boxhead --out)", str(p))
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure: not a box-head file
        fail("box_head", "a box-head file written by camloc boxhead", f"{p} ({describe_load_error(e)})")
    if not isinstance(obj, dict) or obj.get("format") != FILE_FORMAT:
        fail("box_head", f"a {FILE_FORMAT!r} file (camloc boxhead --out)", f"{p}, which is not one")
    if obj.get("schema_version") != SCHEMA_VERSION:
        fail("box_head", f"a box-head file of schema {SCHEMA_VERSION}", f"schema {obj.get('schema_version')} in {p}")
    config = HeadConfig.from_dict(obj["config"])
    k, h, w = (int(v) for v in obj["feature_shape"])
    reg = BoxRegressor(k, (h, w), config=config)
    reg.load_state_dict(obj["state_dict"])
    return BoxHead(
        reg.eval(), str(obj["supervision"]), dict(obj["supervision_detail"]), dict(obj["trunk"]),
        Preprocess.from_dict(obj["preprocess"]), (k, h, w), config, dict(obj["training"]),
    )  # fmt: skip


def as_box_head(box_head: BoxHead | str | os.PathLike[str]) -> BoxHead:
    """A :class:`BoxHead` as it is, or loaded from its file."""
    return box_head if isinstance(box_head, BoxHead) else load_box_head(box_head)


# --------------------------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class BoxHeadResult:
    """What :func:`train_box_head` returns: the head, its report (also printed by the CLI), the file written."""

    head: BoxHead
    report: dict[str, Any]
    path: Path | None


def _training_images(
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    supervision: str,
    format: str,
    split: str | None,
) -> tuple[list[Path], list[np.ndarray] | None, str]:
    """Image files (+ GT boxes for ``boxes``) and a description of the data."""
    from camloc.data.annotations import read_dataset
    from camloc.data.images import find_images

    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if supervision == "pseudo":
        paths = [Path(p) for p in items]
        if len(paths) == 1 and paths[0].is_file() and paths[0].suffix.lower() in (".csv", ".txt", ".json"):
            ds = read_dataset(paths[0], format=format, **({} if split is None else {"split": split}))
            return [s.path for s in ds.samples], None, f"{paths[0]} (images only, labels and boxes unused)"
        files = find_images(paths, recursive=True)
        if not files:
            fail("data", "image files or folders holding images", ", ".join(map(str, paths)))
        return files, None, ", ".join(map(str, paths)) + " (unlabelled images)"
    if len(items) != 1:
        fail("data", "one annotated data set for supervision 'boxes'", f"{len(items)} paths")
    ds = read_dataset(items[0], format=format, **({} if split is None else {"split": split}))
    samples = [s for s in ds.samples if s.num_boxes]
    if not samples:
        fail("data", "an annotated data set with ground-truth boxes", f"{items[0]} ({ds.format}) with none")
    return [s.path for s in samples], [np.asarray(s.boxes) for s in samples], f"{items[0]} ({ds.format}, boxes)"


def _trunk_ref(
    model: str, weights: str | os.PathLike[str] | None, checkpoint: str | os.PathLike[str] | None
) -> tuple[nn.Module, ModelInfo, dict[str, Any]]:
    from camloc.models.registry import create_model

    if checkpoint is not None:
        from camloc.checkpoint import load_checkpoint

        cp = Path(checkpoint)
        net, info = load_checkpoint(cp)
        ref: dict[str, Any] = {"checkpoint": str(cp.resolve()), "sha256": _file_sha256(cp), "model": info.name}
    else:
        net, info = create_model(model, weights=None if weights is None else Path(weights))
        ref = {"model": model, "weights": None if weights is None else str(Path(weights).resolve())}
        if weights is not None:
            ref["sha256"] = _file_sha256(Path(weights))
    ref["name"] = info.name
    return net.eval(), info, ref


def train_box_head(
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    supervision: Supervision,
    model: str | nn.Module = "lite0",
    info: ModelInfo | None = None,
    weights: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    threshold: float = 0.2,
    format: str = "auto",
    split: str | None = None,
    multi_box: Literal["largest", "union"] = "largest",
    flip: bool = True,
    limit: int | None = None,
    config: HeadConfig = HeadConfig(),
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: bool = False,
) -> BoxHeadResult:
    """Train a class-agnostic box head on a frozen trunk (module docstring) and optionally save it to ``out``.

    Args:
        data: ``pseudo``: image files / folders (or an annotation file whose images are used, labels and boxes
            ignored); ``boxes``: an annotated data set (any format of :func:`camloc.data.annotations.read_dataset`;
            images without boxes are skipped).
        supervision: ``"pseudo"`` or ``"boxes"``.
        model: a model spec (``lite0``, ``timm:NAME``, ...) with optional ``weights``, or a ``checkpoint``; or an
            ``nn.Module`` with its ``info`` (the file then records only its name and fingerprint).
        threshold: the paper rule's threshold for ``pseudo`` targets.
        multi_box: ``boxes``: one target per image from several GT boxes (``largest`` or ``union``).
        flip: add the mirrored images as training samples.
        limit: use only the first ``limit`` images (in the data's order).
        cache_dir: feature cache folder (:func:`extract_box_features`).
    Returns:
        :class:`BoxHeadResult`.
    """
    check_choice("supervision", supervision, SUPERVISIONS)
    check_number("threshold", threshold, low=0.0, high=1.0)
    check_choice("multi_box", multi_box, MULTI_BOX)
    if limit is not None:
        check_number("limit", limit, low=1, integer=True)
    started = time.perf_counter()
    if isinstance(model, nn.Module):
        if info is None:
            fail("info", "the ModelInfo of the model given as an nn.Module", info)
        net, ref = model.eval(), {"model": info.name, "name": info.name, "weights": None}
    else:
        net, info, ref = _trunk_ref(model, weights, checkpoint)
    from camloc.fit import trunk_fingerprint

    net = net.to(device)
    ref["fingerprint"] = trunk_fingerprint(net)
    paths, boxes, described = _training_images(data, supervision, format, split)
    if limit is not None:
        paths = paths[:limit]
        boxes = None if boxes is None else boxes[:limit]
    views: tuple[Literal["plain", "flip"], ...] = ("plain", "flip") if flip else ("plain",)
    t0 = time.perf_counter()
    bf = extract_box_features(
        net, info, paths, boxes=boxes, multi_box=multi_box, views=views, cache_dir=cache_dir,
        batch_size=batch_size, device=device, workers=workers, progress=progress,
    )  # fmt: skip
    extract_seconds = time.perf_counter() - t0
    size = bf.input_size
    if supervision == "pseudo":
        target_px = pseudo_boxes(bf.cams, size, threshold=threshold)
        detail: dict[str, Any] = {
            "threshold": threshold,
            "rule": "top-1 class's CAM upsampled to the input, >= threshold * max, largest 8-connected component",
            "labels_used": False,
            "boxes_used": False,
        }
    else:
        target_px = bf.gt
        detail = {"multi_box": multi_box, "images": len(paths), "labels_used": False, "boxes_used": True}
    empty = (target_px[:, 2] <= target_px[:, 0]) | (target_px[:, 3] <= target_px[:, 1])
    keep = torch.nonzero(~empty).flatten()  # a pseudo target without any positive map value teaches nothing
    if not len(keep):
        fail("data", "images whose targets are non-empty boxes", "no usable target box")
    targets = pixels_to_normalized(target_px[keep], size)
    reg, hist = train_box_regressor(
        bf.features[keep], targets, cams=bf.cams[keep] if config.cam_input else None, config=config, progress=progress
    )
    fp = hashlib.sha256(
        json.dumps(
            {
                "files": [[str(p.resolve()), p.stat().st_size] for p in paths],
                "boxes": None if boxes is None else [np.asarray(b, np.float64).round(3).tolist() for b in boxes],
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    training = {
        "data": described,
        "fingerprint": fp,
        "images": len(paths),
        "samples": len(keep),
        "skipped_empty_targets": int(empty.sum()),
        "views": list(views),
        "train_iou": hist["train_iou"],
        "final_loss": hist["loss"][-1] if hist["loss"] else None,
        "extract_seconds": round(extract_seconds, 3),
        "fit_seconds": hist["seconds"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    feat_shape = (int(bf.features.shape[1]), int(bf.features.shape[2]), int(bf.features.shape[3]))
    head = BoxHead(reg, supervision, detail, ref, info.preprocess, feat_shape, config, training)
    dest = head.save(out) if out is not None else None
    report = {**head.to_dict(), "label": head.label, "path": None if dest is None else str(dest)}
    return BoxHeadResult(head, report, dest)


# --------------------------------------------------------------------------------------------- CLI


def register(p: Any) -> None:
    """Fill the ``camloc boxhead`` sub-parser (the CLI's command table calls this; see :mod:`camloc.cli`)."""
    from camloc.cli import _model_args
    from camloc.cli_evaluate import FORMAT_CHOICES

    p.add_argument("data", type=Path, nargs="+", metavar="DATA",
                   help="pseudo: image files/folders (unlabelled); boxes: an annotated data set")  # fmt: skip
    p.add_argument("--supervision", required=True, choices=SUPERVISIONS,
                   help="pseudo: CAM boxes of the top-1 class on unlabelled images; boxes: GT boxes")  # fmt: skip
    _model_args(p)
    p.add_argument("--out", type=Path, default=Path("boxhead.pt"), help="the head's file (default boxhead.pt)")
    p.set_defaults(_out_is_folder=False)
    p.add_argument("--threshold", type=float, default=0.2, help="pseudo: the CAM box threshold (default 0.2)")
    p.add_argument("--format", default="auto", choices=FORMAT_CHOICES, help="boxes: annotation format")
    p.add_argument("--split", default=None, help="boxes: data-set split where the format has several")
    p.add_argument("--multi-box", default="largest", choices=MULTI_BOX,
                   help="boxes: one target from several GT boxes: the largest (default) or their union")  # fmt: skip
    p.add_argument("--no-flip", action="store_true", help="no mirrored copies of the training images")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: none)")
    d = HeadConfig()
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--width", type=int, default=d.width, help="channels after the 1x1 reduction")
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--cam-input", action="store_true", help="also feed the top-1 class's map to the head")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_boxhead)


def cmd_boxhead(args: Any) -> int:
    """``camloc boxhead``: train and save a box head; one line (or ``--json``) with its supervision and numbers."""
    import sys

    from camloc.cli_evaluate import _format_name

    if args.checkpoint is None and args.model is None:
        raise CamlocValueError("`--model` or `--checkpoint` must be given")
    config = HeadConfig(
        width=args.width, hidden=args.hidden, dropout=args.dropout, cam_input=args.cam_input, epochs=args.epochs,
        batch_size=64, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
    )  # fmt: skip
    data = args.data[0] if len(args.data) == 1 else args.data
    res = train_box_head(
        data, supervision=args.supervision, model=args.model, weights=args.weights, checkpoint=args.checkpoint,
        out=args.out, threshold=args.threshold, format=_format_name(args.format),
        split=args.split, multi_box=args.multi_box, flip=not args.no_flip, limit=args.limit, config=config,
        cache_dir=args.cache, batch_size=args.batch_size, device=args.device, workers=args.workers,
        progress=not args.quiet,
    )  # fmt: skip
    if args.json:
        print(json.dumps(res.report))
    t = res.report["training"]
    print(
        f"camloc: {res.head.label}: {t['images']} images ({t['samples']} samples), train IoU {t['train_iou']:.3f}, "
        f"features {t['extract_seconds']:.1f} s + fit {t['fit_seconds']:.1f} s -> {res.path}",
        file=sys.stderr,
    )
    return 0


# --------------------------------------------------------------------------------------------- for the consumers


@dataclass(frozen=True)
class LearnedBox:
    """The box head's box of one image (``explain``): xyxy in original pixels, and the head's supervision."""

    box: tuple[float, float, float, float]
    supervision: str

    def to_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 2) for v in self.box], "supervision": self.supervision, "class_agnostic": True}


def box_head_summary(box_head: BoxHead | str | os.PathLike[str]) -> dict[str, Any]:
    """What ``evaluate`` / ``explain`` record about the head they used: file, supervision, label, training set."""
    head = as_box_head(box_head)
    t = head.training
    return {
        "path": None if isinstance(box_head, BoxHead) else str(box_head),
        "supervision": head.supervision,
        "supervision_detail": dict(head.supervision_detail),
        "label": head.label,
        "trunk": head.trunk.get("name"),
        "training_set": {k: t.get(k) for k in ("data", "images", "samples", "views", "fingerprint")},
        "note": (
            f"top1_loc, top5_loc and gt_known_loc use the {head.label}: one class-agnostic box per image; "
            "maxboxacc, maxboxacc_v2 and pxap are the maps' (a box head has no threshold to sweep)"
        ),
    }
