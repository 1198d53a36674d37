r"""Localize, then classify (the CAM paper's fine-grained experiment): CAM box -> crop -> classify the crop.

Per image:

1. the whole image goes through the map method once (default :class:`camloc.CAM`; any producer of
   :mod:`camloc.methods`, e.g. ``best``): logits ``z_whole [C]`` and the top-1 class's map, boxed by the paper's
   rule (upsampled to the input, ``>= threshold`` of its max, the largest 8-connected component;
   :func:`camloc.localization.localize`);
2. that box (network frame) is mapped to the ORIGINAL image with the image's :class:`camloc.geometry.Geometry`,
   grown by ``margin`` of its width / height on every side and clipped to the image (:func:`zoom_box`; an
   empty box, i.e. a map with no positive value, becomes the whole image);
3. the crop is decoded from the file at a resolution that covers the network input (JPEG draft mode only
   where the reduced image still gives the crop at least the input's pixels; :class:`Cropper`), resized
   whole to the network input (one resample, the model's interpolation and normalisation) and classified by
   the model itself (one plain forward, whatever the map method): ``z_crop [C]`` and its pooled trunk features
   ``p_crop [K]``;
4. **combination** (:func:`combine_logits`): ``z = (1 - a) z_whole + a z_crop`` with ``a = crop_weight``
   (default 0.5: the mean). Up to a per-image constant this is the mean of the two log-softmax vectors
   (``log_softmax(z) = z - logsumexp(z)``), so the probabilities ``softmax(z)`` and the class ranking are those of
   the mean log-probabilities. For a linear head it is also the head applied to the mean of the pooled
   features, ``W ((1 - a) p_whole + a p_crop) + b`` (:func:`combine_features`), which is what
   ``camloc fit --zoom`` trains on: a head fitted with zoom is the same plain GAP -> linear head, and
   zoomed inference with it is exactly the classifier it was fitted as.

Maps and boxes stay those of the whole image (the method's maps of the classes chosen from the combined
logits).

``camloc fit --zoom`` (:func:`zoom_fit_features`) is two-stage: a head fitted on whole-image features chooses
the training crops (its top-1 map; the label is not used, as at test time), the final head is fitted on the
combined features; test images are cropped with the final head's own top-1 map, as ``evaluate --zoom`` does.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from camloc._checks import check_number, fail
from camloc.cam import upsample_maps
from camloc.data.images import ImageSource
from camloc.errors import CamlocError, CamlocValueError
from camloc.extractor import CAM, CamResult
from camloc.geometry import Geometry
from camloc.localization import localize
from camloc.models.info import ModelInfo, Preprocess
from camloc.pipeline import ImagePipeline, image_to_tensor

if TYPE_CHECKING:
    from camloc.fit import FeatureCache

__all__ = [
    "DEFAULT_MARGIN",
    "Cropper",
    "Zoom",
    "ZoomOutput",
    "combine_features",
    "combine_logits",
    "zoom_box",
    "zoom_class_maps",
    "zoom_features",
    "zoom_fit_features",
    "zoom_from_args",
]

DEFAULT_MARGIN = 0.1
"""Fraction of the box's width / height added on each side before cropping."""


# --------------------------------------------------------------------------------------------- pure functions


def zoom_box(box: Any, image_size: tuple[int, int], *, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The crop rectangle of a CAM box: ``float64 [..., 4]`` xyxy in the same frame as ``box``.

    Each box ``(x0, y0, x1, y1)`` grows by ``margin * (x1 - x0)`` left and right and ``margin * (y1 - y0)`` above
    and below, then is clipped to ``[0, W] x [0, H]`` (``image_size = (W, H)``). An empty box (no area, e.g. the
    ``(0, 0, 0, 0)`` of a map without positive evidence) becomes the whole image ``(0, 0, W, H)``.
    """
    check_number("margin", margin, low=0.0, high=10.0)
    w, h = (int(v) for v in image_size)
    if w < 1 or h < 1:
        fail("image_size", "a (width, height) pair of positive integers", image_size)
    b = np.asarray(box, np.float64)
    if b.shape[-1:] != (4,) or not np.isfinite(b).all():
        fail("box", "finite xyxy boxes of shape [..., 4]", b.shape)
    bw, bh = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    out = np.stack(
        [b[..., 0] - margin * bw, b[..., 1] - margin * bh, b[..., 2] + margin * bw, b[..., 3] + margin * bh], -1
    )
    out[..., 0::2] = np.clip(out[..., 0::2], 0.0, w)
    out[..., 1::2] = np.clip(out[..., 1::2], 0.0, h)
    empty = (bw <= 0) | (bh <= 0) | (out[..., 2] <= out[..., 0]) | (out[..., 3] <= out[..., 1])
    out[empty] = (0.0, 0.0, float(w), float(h))
    return out


def combine_logits(whole: torch.Tensor, crop: torch.Tensor, *, crop_weight: float = 0.5) -> torch.Tensor:
    """``(1 - a) whole + a crop`` for logits ``[N, C]`` (``a = crop_weight``): see the module docstring.

    Equal, up to a per-image constant, to ``(1 - a) log_softmax(whole) + a log_softmax(crop)``: the same softmax and
    ranking. For a linear head ``W p + b``: the head on ``(1 - a) p_whole + a p_crop``.
    """
    check_number("crop_weight", crop_weight, low=0.0, high=1.0)
    if whole.shape != crop.shape or whole.ndim != 2:
        fail("crop", f"logits of the whole image's shape {tuple(whole.shape)} ([N, C])", tuple(crop.shape))
    return (1.0 - crop_weight) * whole + crop_weight * crop


def combine_features(whole: np.ndarray, crop: np.ndarray, *, crop_weight: float = 0.5) -> np.ndarray:
    """``float32 [N, K]``: ``(1 - a) whole + a crop`` of pooled features (what ``fit --zoom`` fits on)."""
    check_number("crop_weight", crop_weight, low=0.0, high=1.0)
    w, c = np.asarray(whole, np.float32), np.asarray(crop, np.float32)
    if w.shape != c.shape or w.ndim != 2:
        fail("crop", f"pooled features of the whole image's shape {w.shape} ([N, K])", c.shape)
    return ((1.0 - crop_weight) * w + crop_weight * c).astype(np.float32)


# --------------------------------------------------------------------------------------------- cropping


@dataclass(frozen=True)
class Cropper:
    """Crops of the original image, resized whole to the network input (``Tensor[3, H, W]`` float32, normalised).

    Attributes:
        preprocess: the model's preprocessing (size, interpolation, mean / std; the crop is resized whole,
            whatever ``preprocess.resize`` says: the box already is the region to look at).
        orientation: apply the EXIF orientation (as the pipeline that produced the boxes did).
    """

    preprocess: Preprocess
    orientation: bool = True

    def __call__(self, source: ImageSource, box: Any, geometry: Geometry) -> torch.Tensor:
        """Crop ``box`` (xyxy, ORIGINAL frame of ``geometry``) out of ``source`` -> network input.

        The file is decoded at the smallest JPEG draft scale that still gives the crop at least the network
        input's pixels on both axes (full resolution for other formats).
        """
        from camloc.data.images import decode_image

        b = np.asarray(box, np.float64).reshape(4)
        W, H = geometry.image_size
        net_h, net_w = self.preprocess.size
        bw, bh = max(b[2] - b[0], 1.0), max(b[3] - b[1], 1.0)
        need = (min(W, math.ceil(net_w * W / bw)), min(H, math.ceil(net_h * H / bh)))
        loaded = decode_image(source, min_size=(int(need[0]), int(need[1])), orientation=self.orientation)
        if loaded.original_size != (W, H):
            fail("source", f"the image the box was computed on ({W}x{H})", "{}x{}".format(*loaded.original_size))
        sx, sy = loaded.image.size[0] / W, loaded.image.size[1] / H
        x0, x1 = math.floor(b[0] * sx), math.ceil(b[2] * sx)
        y0, y1 = math.floor(b[1] * sy), math.ceil(b[3] * sy)
        iw, ih = loaded.image.size
        x0, y0 = min(max(x0, 0), iw - 1), min(max(y0, 0), ih - 1)
        x1, y1 = max(min(x1, iw), x0 + 1), max(min(y1, ih), y0 + 1)
        crop = loaded.image.crop((x0, y0, x1, y1))
        return image_to_tensor(crop, self.preprocess.replace(resize="full"))


# --------------------------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class ZoomOutput:
    """What :class:`Zoom` computes for a batch of ``N`` images.

    Attributes:
        logits: ``Tensor[N, C]`` the combined logits (:func:`combine_logits`).
        whole_logits, crop_logits: ``Tensor[N, C]`` of the whole image and of the crop.
        whole_features, crop_features: ``Tensor[N, K]`` float32, the trunk's mean-pooled features
            (``whole_features`` is ``None`` when the map method is not the plain CAM: its state holds no such
            features, and fitting, which needs them, always zooms with the CAM).
        top1: ``Tensor[N]`` int64, the whole image's top-1 class, whose map chose the crop.
        boxes: ``float64 [N, 4]`` that map's paper-rule box in the network frame.
        crop_boxes: ``float64 [N, 4]`` the crops, xyxy in original pixels (margin added, clipped).
        state: the map method's state of the whole image (for the CAM: its trunk features ``[N, K, h, w]``),
            for the maps of more classes without another forward.
    """

    logits: torch.Tensor
    whole_logits: torch.Tensor
    crop_logits: torch.Tensor
    whole_features: torch.Tensor | None
    crop_features: torch.Tensor
    top1: torch.Tensor
    boxes: np.ndarray
    crop_boxes: np.ndarray
    state: Any = field(repr=False)


class Zoom:
    """Localize-then-classify around a CAM-capable model (module docstring).

    Example::

        zoom = camloc.zoom.Zoom(model, info)
        item = ImagePipeline(info.preprocess)("bird.jpg")
        out = zoom(item.tensor[None], ["bird.jpg"], [item.geometry])     # out.logits: whole + crop

    Args:
        model: any classifier :class:`camloc.CAM` accepts (eval mode; on the device the inputs go to).
        info: its :class:`~camloc.models.info.ModelInfo` (the preprocessing of the crops).
        margin: see :func:`zoom_box`. threshold: the paper rule's threshold for the top-1 box.
        crop_weight: the crop's weight ``a`` in :func:`combine_logits`.
        orientation: whether the boxes' geometry applied the EXIF orientation (crops are decoded the same way).
        cam: a ready :class:`camloc.CAM` of ``model`` to share (default: a new one); it classifies the crops.
        method: the map method (a producer of :mod:`camloc.methods` on ``model``) whose top-1 map chooses the
            crop and whose maps are returned; default ``cam``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        info: ModelInfo,
        *,
        margin: float = DEFAULT_MARGIN,
        threshold: float = 0.2,
        crop_weight: float = 0.5,
        orientation: bool = True,
        cam: CAM | None = None,
        method: Any = None,
    ) -> None:
        check_number("margin", margin, low=0.0, high=10.0)
        check_number("threshold", threshold, low=0.0, high=1.0)
        check_number("crop_weight", crop_weight, low=0.0, high=1.0)
        self.cam = cam if cam is not None else CAM(model)
        if method is not None and not (hasattr(method, "forward") and hasattr(method, "maps")):
            fail("method", "a map method (forward / maps)", method, type_error=True)
        self.method = method if method is not None else self.cam
        self.info = info
        self.margin = float(margin)
        self.threshold = float(threshold)
        self.crop_weight = float(crop_weight)
        self.cropper = Cropper(info.preprocess, orientation=orientation)

    def with_method(self, method: Any) -> Zoom:
        """This zoom around the map method ``method`` (a producer on the same model): ``self`` when it already
        uses it, or when ``method`` is a plain :class:`camloc.CAM` and ``self`` zooms with its own CAM; a copy
        otherwise. A zoom built for another method is refused (its maps would not be ``method``'s)."""
        if method is self.method or (isinstance(method, CAM) and self.method is self.cam):
            return self
        if self.method is not self.cam:
            fail("zoom", f"a zoom around the evaluated method {method!r}", f"one around {self.method!r}")
        out = copy.copy(self)
        out.method = method
        return out

    def describe(self) -> dict[str, Any]:
        """The settings, for manifests and reports."""
        return {
            "margin": self.margin,
            "threshold": self.threshold,
            "crop_weight": self.crop_weight,
            "combination": "(1 - crop_weight) * whole logits + crop_weight * crop logits",
        }

    def __call__(self, x: torch.Tensor, sources: Sequence[ImageSource], geometries: Sequence[Geometry]) -> ZoomOutput:
        """Zoom a batch: ``x [N, 3, H, W]`` the whole images as the pipeline made them, their sources (paths or
        bytes, re-decoded for the crops) and geometries."""
        n = int(x.shape[0])
        if len(sources) != n or len(geometries) != n:
            fail("sources", f"{n} sources and geometries (one per image of x)", f"{len(sources)}, {len(geometries)}")
        with torch.no_grad():
            state, logits = self.method.forward(x)
            logits = logits.detach()
            top1 = logits.argmax(1)
            maps = self.method.maps(state, top1[:, None]).detach()
            up = upsample_maps(maps.float(), (int(x.shape[2]), int(x.shape[3])))
            boxes = localize(up, threshold=self.threshold).boxes[:, 0].cpu().numpy().astype(np.float64)
            crop_boxes = np.stack(
                [
                    zoom_box(g.map_boxes(b, "network", "original"), g.image_size, margin=self.margin)
                    for b, g in zip(boxes, geometries)
                ]
            )
            crops = torch.stack([self.cropper(s, cb, g) for s, cb, g in zip(sources, crop_boxes, geometries)])
            cfeats, clogits = self.cam.forward(crops.to(x.device))
            combined = combine_logits(logits.float(), clogits.float(), crop_weight=self.crop_weight)
        return ZoomOutput(
            logits=combined,
            whole_logits=logits,
            crop_logits=clogits,
            whole_features=state.float().mean(dim=(2, 3)) if self.method is self.cam else None,
            crop_features=cfeats.float().mean(dim=(2, 3)),
            top1=top1,
            boxes=boxes,
            crop_boxes=crop_boxes,
            state=state,
        )

    def cam_result(
        self,
        x: torch.Tensor,
        sources: Sequence[ImageSource],
        geometries: Sequence[Geometry],
        *,
        classes: Callable[[torch.Tensor], torch.Tensor] | None = None,
        topk: int = 5,
    ) -> tuple[CamResult, ZoomOutput]:
        """A :class:`~camloc.extractor.CamResult` whose logits, classes and scores come from the combined logits
        and whose maps are the method's maps of the whole image for those classes (``classes``:
        ``select(logits) -> [N, m]``; default each image's top-``topk`` of the combined logits)."""
        check_number("topk", topk, low=1, integer=True)
        z = self(x, sources, geometries)
        with torch.no_grad():
            cls = z.logits.topk(min(topk, z.logits.shape[1]), dim=1).indices if classes is None else classes(z.logits)
            cls = cls.to(z.top1.device, torch.long)
            maps = self.method.maps(z.state, cls).detach()
            scores = z.logits.softmax(dim=1).gather(1, cls.to(z.logits.device))
        return CamResult(z.logits, cls, scores, maps, (int(x.shape[2]), int(x.shape[3]))), z


def zoom_class_maps(
    zoom: Zoom,
    x: torch.Tensor,
    true: torch.Tensor,
    sources: Sequence[ImageSource],
    geometries: Sequence[Geometry],
    upsample: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, np.ndarray]:
    """``evaluate --zoom``: top-5 of the combined logits ``[n, 5]`` (CPU) and the whole image's maps of the
    combined top-1 and the true class, resized by ``upsample`` to the input size (``float32 [n, 2, H, W]``)."""
    t = true.cpu()
    res, _ = zoom.cam_result(
        x, sources, geometries, classes=lambda lg: torch.stack([lg.argmax(1), t.to(lg.device)], dim=1)
    )
    top = res.logits.topk(min(5, res.logits.shape[1]), dim=1).indices.cpu()
    return top, upsample(res.maps).numpy()


# --------------------------------------------------------------------------------------------- files


class _Files(torch.utils.data.Dataset):
    """Paths -> ``(index, tensor, geometry)`` through the one image pipeline (an error raises)."""

    def __init__(self, paths: Sequence[Path], pipeline: ImagePipeline) -> None:
        self.paths = list(paths)
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, Geometry]:
        item = self.pipeline(self.paths[i])
        return i, item.tensor, item.geometry


def _batches(
    paths: Sequence[Path], preprocess: Preprocess, *, batch_size: int, workers: int | None
) -> Iterator[list[tuple[int, torch.Tensor, Geometry]]]:
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(paths) > batch_size else 0
    loader = torch.utils.data.DataLoader(
        _Files(paths, ImagePipeline(preprocess)), batch_size=batch_size, num_workers=workers, collate_fn=list
    )
    yield from loader


def zoom_features(
    zoom: Zoom,
    paths: Sequence[str | os.PathLike[str]],
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zoom over image files: ``(crop pooled features float32 [N, K], crop boxes float64 [N, 4] original
    pixels, whole-image logits float32 [N, C])`` in ``paths`` order."""
    check_number("batch_size", batch_size, low=1, integer=True)
    files = [Path(p) for p in paths]
    feats: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="img", desc="zoom crops", dynamic_ncols=True)
    try:
        for items in _batches(files, zoom.info.preprocess, batch_size=batch_size, workers=workers):
            x = torch.stack([t for _, t, _ in items]).to(device)
            z = zoom(x, [files[i] for i, _, _ in items], [g for _, _, g in items])
            feats.append(z.crop_features.cpu().numpy())
            boxes.append(z.crop_boxes)
            logits.append(z.whole_logits.float().cpu().numpy())
            if bar is not None:
                bar.update(len(items))
    except CamlocError as e:
        raise CamlocValueError(f"`data` must hold readable images: {e}") from e
    finally:
        if bar is not None:
            bar.close()
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros((0, 4)), np.zeros((0, 0), np.float32)
    return np.concatenate(feats), np.concatenate(boxes), np.concatenate(logits)


def zoom_fit_features(
    trunk: torch.nn.Module,
    weight: np.ndarray,
    bias: np.ndarray,
    info: ModelInfo,
    paths: Sequence[Path],
    *,
    margin: float,
    threshold: float,
    cache: FeatureCache | None,
    fingerprint: str,
    stats: dict[str, Any],
    batch_size: int,
    device: str | torch.device,
    workers: int | None,
    progress: bool,
) -> np.ndarray:
    """``fit --zoom``: pooled crop features ``float32 [N, K]`` of ``paths``, cropped at the top-1 box of the head
    ``(weight [C, K], bias [C])`` on ``trunk``. Cached (:class:`camloc.fit.FeatureCache`) under the head, margin and
    threshold, so re-fitting with other classifier options reuses them."""
    import time

    from torch import nn

    from camloc.fit import FeatureCache, FittedHeadNetwork

    head_key = hashlib.sha256(np.ascontiguousarray(weight, np.float64).tobytes())
    head_key.update(np.ascontiguousarray(bias, np.float64).tobytes())
    view = f"zoom:{margin!r}:{threshold!r}:{head_key.hexdigest()}"
    key = FeatureCache.key(fingerprint, info.preprocess, list(paths), view)
    if cache is not None:
        got = cache.load(key, len(paths))
        if got is not None:
            stats["cached_views"] += 1
            return got
    fc = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(np.asarray(weight, np.float64)))
        fc.bias.copy_(torch.from_numpy(np.asarray(bias, np.float64)))
    net = FittedHeadNetwork(trunk, fc.to(device)).eval()
    t0 = time.perf_counter()
    zoom = Zoom(net, info, margin=margin, threshold=threshold)
    feats, _, _ = zoom_features(zoom, paths, batch_size=batch_size, device=device, workers=workers, progress=progress)
    stats["extract_seconds"] += time.perf_counter() - t0
    stats["forwards"] += 2 * len(paths)
    stats["extracted_passes"] += 1
    if cache is not None:
        cache.save(key, feats)
    return feats


# --------------------------------------------------------------------------------------------- command line


def zoom_from_args(
    args: Any, model: torch.nn.Module, info: ModelInfo, *, orientation: bool = True, method: Any = None
) -> Zoom | None:
    """The :class:`Zoom` that ``--zoom/--zoom-margin/--threshold`` ask for (:func:`camloc.cli_zoom.add_zoom_args`),
    around the map method ``method`` (a producer; default ``cam``), or ``None`` without ``--zoom``."""
    if not getattr(args, "zoom", False):
        return None
    margin = DEFAULT_MARGIN if args.zoom_margin is None else args.zoom_margin
    if not 0 <= margin <= 10:
        raise CamlocValueError(f"`--zoom-margin` must be in [0, 10]; got {margin}")
    threshold = getattr(args, "threshold", 0.2)
    return Zoom(model, info, margin=margin, threshold=threshold, orientation=orientation, method=method)
