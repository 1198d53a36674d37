"""Batch explanation of image files: decode -> one forward -> top-k CAMs -> boxes in original pixels.

:func:`explain_images` is the library entry point behind ``camloc explain``. Decoding runs ahead of the model in a
few threads (PIL and the tensor conversion release the GIL; no worker processes to start), or in DataLoader worker
processes when asked for; a file that cannot be decoded becomes an :class:`ImageFailure` and the run goes on.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from camloc._checks import check_number, fail
from camloc.cam import normalize_maps
from camloc.errors import CamlocError
from camloc.extractor import CAM, CamResult
from camloc.geometry import Geometry
from camloc.localization import localize
from camloc.models.registry import ModelInfo, Preprocess
from camloc.pipeline import ImagePipeline

__all__ = ["ClassBox", "Explained", "ImageFailure", "ImageResult", "explain_images"]


@dataclass(frozen=True)
class ClassBox:
    """One of an image's top-k classes: index, name, softmax probability and box (original pixels, xyxy)."""

    rank: int
    class_idx: int
    name: str
    prob: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "class_idx": self.class_idx,
            "name": self.name,
            "prob": round(self.prob, 6),
            "box": [round(v, 2) for v in self.box],
        }


@dataclass(frozen=True)
class ImageResult:
    """Top-k classes with boxes for one image; ``size`` is the original ``(width, height)`` after EXIF rotation.

    ``box_head``: with a learned box head (:mod:`camloc.boxhead`), its one class-agnostic box (original pixels)
    and supervision, recorded beside the classes' CAM boxes (``"box_head"`` in :meth:`to_dict`); else None.
    """

    path: Path
    size: tuple[int, int]
    topk: tuple[ClassBox, ...]
    box_head: Any = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "path": str(self.path),
            "width": self.size[0],
            "height": self.size[1],
            "topk": [c.to_dict() for c in self.topk],
        }
        if self.box_head is not None:
            d["box_head"] = self.box_head.to_dict()
        return d


@dataclass(frozen=True)
class ImageFailure:
    """A file that could not be explained, with the reason."""

    path: Path
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "error": self.error}


@dataclass(frozen=True)
class Explained:
    """An :class:`ImageResult` plus what is needed to draw it.

    ``display`` is the image reduced to at most ``display_max_side`` (uint8 ``[h, w, 3]``), ``display_scale`` maps
    original pixels to display pixels (multiply), ``maps`` are the top-k maps normalised by their max
    (``float32 [k, h, w]`` at feature resolution; they stretch over the whole image, as the input does).
    """

    result: ImageResult
    display: np.ndarray
    display_scale: tuple[float, float]
    maps: np.ndarray = field(repr=False)


class _Files(Dataset):
    """Paths -> network tensors through :class:`camloc.pipeline.ImagePipeline`, plus a display copy."""

    def __init__(self, paths: Sequence[Path], preprocess: Preprocess, display_max_side: int) -> None:
        self.paths = list(paths)
        self.pipeline = ImagePipeline(preprocess, min_working_side=display_max_side)
        self.display_max_side = display_max_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from PIL import Image

        path = self.paths[i]
        try:
            item = self.pipeline(path)
        except CamlocError as e:
            return {"index": i, "error": str(e)}
        img = item.image  # the decoded working image; the network input was resampled from it once
        w, h = img.size
        s = min(1.0, self.display_max_side / max(w, h))
        if s < 1.0:
            img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR, reducing_gap=2.0)
        ow, oh = item.original_size
        return {
            "index": i,
            "x": item.tensor,
            "size": item.original_size,
            "geometry": item.geometry,
            "display": np.asarray(img, dtype=np.uint8),
            "display_scale": (img.size[0] / ow, img.size[1] / oh),
        }


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def _serial_batches(ds: _Files, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(ds), batch_size):
        yield [ds[i] for i in range(start, min(start + batch_size, len(ds)))]


def _threaded_batches(ds: _Files, batch_size: int, threads: int) -> Iterator[list[dict[str, Any]]]:
    """``ds``'s items in order, in lists of ``batch_size``, decoded by ``threads`` threads up to 2 batches ahead."""
    ahead = 2 * batch_size
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="camloc-decode") as pool:
        pending: deque[Future[dict[str, Any]]] = deque()
        nxt = 0
        try:
            batch: list[dict[str, Any]] = []
            while nxt < len(ds) or pending:
                while nxt < len(ds) and len(pending) < ahead:
                    pending.append(pool.submit(ds.__getitem__, nxt))
                    nxt += 1
                batch.append(pending.popleft().result())
                if len(batch) == batch_size or not (pending or nxt < len(ds)):
                    yield batch
                    batch = []
        finally:
            for f in pending:  # the consumer stopped early, or a decode raised: do not decode the rest
                f.cancel()


def _keep_freed_memory() -> bool:
    """Make glibc's malloc keep and reuse freed memory instead of returning it to the OS at once.

    A CPU forward at batch 32 allocates and frees activations of tens of MB; glibc serves each with a fresh
    ``mmap`` (above ``M_MMAP_THRESHOLD``), so every batch page-faults in and zeroes all of them again: measured,
    that page-fault work took longer than the convolutions themselves (lite0, 2 cores). This raises the
    ``mmap`` and trim thresholds for the whole process (its peak heap stays reserved until it exits), so it is for
    command-line runs, not for library code. Returns ``False`` (and changes nothing) where the C library is not
    glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt but other semantics)
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def results_from_maps(
    out: CamResult,
    geometries: Sequence[Geometry],
    paths: Sequence[Path],
    info: ModelInfo,
    *,
    threshold: float,
    rule: Any = None,
    head_boxes: np.ndarray | None = None,
    supervision: str | None = None,
) -> tuple[list[ImageResult], np.ndarray]:
    """One batch's :class:`ImageResult` per image from its maps (``out``, any map resolution) and each image's
    :class:`~camloc.geometry.Geometry`; plus the maps normalised by their max (``float32 [N, k, h, w]``, for
    drawing). Used by :func:`explain_images` and by the Ray actors of :mod:`camloc.ray`.

    ``rule``: a :class:`camloc.boxes.BoxRule` instead of the paper's largest component at ``threshold``;
    ``head_boxes``: ``[N, 4]`` network-frame boxes of a learned box head (``supervision`` names how it was trained).
    """
    up = out.upsampled()  # [n, k, H_in, W_in]: the paper upsamples before thresholding
    net_boxes = localize(up, threshold=threshold).boxes.numpy() if rule is None else rule.boxes(up)
    norm = normalize_maps(out.maps.float(), mode="max").cpu().numpy()  # drawings resize it themselves
    classes = out.classes.cpu().tolist()
    scores = out.scores.cpu().tolist()
    results = []
    for n, (g, path) in enumerate(zip(geometries, paths)):
        boxes = g.map_boxes(net_boxes[n], "network", "original").tolist()
        tk = tuple(
            ClassBox(r + 1, c, info.categories[c], float(p), tuple(float(v) for v in b))  # type: ignore[arg-type]
            for r, (c, p, b) in enumerate(zip(classes[n], scores[n], boxes))
        )
        hb = None
        if head_boxes is not None:
            from camloc.boxhead import LearnedBox

            b = g.map_boxes(head_boxes[n], "network", "original").tolist()
            hb = LearnedBox(tuple(float(v) for v in b), supervision or "")  # type: ignore[arg-type]
        results.append(ImageResult(path, g.image_size, tk, hb))
    return results, norm


def explain_images(
    paths: Sequence[str | os.PathLike[str]],
    model: torch.nn.Module | None,
    info: ModelInfo,
    *,
    topk: int = 5,
    threshold: float = 0.2,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    display_max_side: int = 512,
    progress: bool = False,
    method: str | Any = "cam",
    method_args: Mapping[str, Any] | None = None,
    producer: Callable[..., CamResult] | None = None,
    calibration: Any = None,
    box_head: Any = None,
    zoom: bool | Any = False,
) -> Iterator[Explained | ImageFailure]:
    """Explain image files in input order, yielding :class:`Explained` or :class:`ImageFailure` per file.

    Each image is resized whole to the network input (``info.preprocess``), the top-``topk`` classes' maps are
    upsampled to the input size, thresholded at ``threshold`` of their max, and the largest component's box is
    mapped back to original pixels (see :mod:`camloc.localization` for the box convention).
    The model is moved to ``device`` by the caller; this function only moves inputs.

    ``workers=None`` decodes in up to 2 threads, up to two batches ahead of the model; ``workers=N`` uses ``N``
    DataLoader worker processes instead (``0``: decode in the calling thread, between batches).

    ``method`` names a map method of :mod:`camloc.methods` (with ``method_args``) or is a ready producer; the
    default ``"cam"`` is :class:`camloc.CAM`. Maps of any resolution are upsampled to the input before boxing.

    ``producer``: a ready map producer called as ``producer(x, topk=topk) -> CamResult`` instead of
    ``CAM(model)`` (e.g. :class:`camloc.export.onnx.OnnxCAM`; ``model`` may then be ``None``).

    ``calibration``: a :class:`camloc.calibrate.Calibration` (made for the ``cam`` method) or a
    :class:`camloc.boxes.BoxRule`: its rule makes the boxes instead of the largest component at ``threshold``.

    ``box_head``: a :class:`camloc.boxhead.BoxHead` or its file (checked against ``model``'s trunk); each result
    then also carries the head's class-agnostic box (:attr:`ImageResult.box_head`); the top-k CAM boxes stay.

    ``zoom``: localize-then-classify (:mod:`camloc.zoom`): ``True`` or a :class:`camloc.zoom.Zoom`; the classes
    and probabilities come from the combined logits of the whole image and of its crop at the top-1 box of the
    method's map; the maps and boxes are the method's, of the whole image, as without.
    """
    from camloc.calibrate import rule_of

    rule = rule_of(calibration, method=method)
    check_number("topk", topk, low=1, integer=True)
    check_number("threshold", threshold, low=0.0, high=1.0)
    check_number("batch_size", batch_size, low=1, integer=True)
    files = [Path(p) for p in paths]
    ds = _Files(files, info.preprocess, display_max_side)
    batches: Iterator[list[dict[str, Any]]]
    if workers is None:  # threads: nothing to start, nothing to pickle
        threads = min(2, os.cpu_count() or 1) if len(files) > 1 else 0
        batches = _threaded_batches(ds, batch_size, threads) if threads else _serial_batches(ds, batch_size)
    else:
        check_number("workers", workers, low=0, integer=True)
        loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate)
        batches = iter(loader)
    if producer is None and model is None:
        fail("model", "a torch model, or None together with a `producer`", None)
    from camloc.methods import make_producer

    if producer is not None:
        cam: Any = producer
    elif method == "cam" and not method_args:
        cam = CAM(model)  # type: ignore[arg-type]
    else:
        cam = make_producer(method, model, info, method_args)
    if model is None and (box_head is not None or zoom):
        fail("model", "a torch model with `box_head` / `zoom` (they run its trunk), not a `producer` alone", None)
    boxes_from = learned = None
    if box_head is not None:
        from camloc.boxhead import as_box_head

        assert model is not None
        learned = as_box_head(box_head)
        boxes_from = learned.bind(model, info)
    if zoom is True:
        from camloc.zoom import Zoom

        assert model is not None
        zoom = Zoom(model, info, threshold=threshold, cam=cam if isinstance(cam, CAM) else None, method=cam)
    elif zoom:
        zoom = zoom.with_method(cam)  # the crop is the top-1 box of the explained method's map
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="img", desc="explain", dynamic_ncols=True)
    try:
        for items in batches:
            good = [it for it in items if "x" in it]
            if good:
                x = torch.stack([it["x"] for it in good]).to(device)
                if zoom:  # the crops are decoded again from the files, at the resolution they need
                    srcs, geoms = [files[it["index"]] for it in good], [it["geometry"] for it in good]
                    out, _ = zoom.cam_result(x, srcs, geoms, topk=topk)
                else:
                    out = cam(x, topk=topk)
                geoms = [it["geometry"] for it in good]
                paths_ = [files[it["index"]] for it in good]
                head_boxes = boxes_from(x).numpy() if boxes_from is not None else None
                results, norm = results_from_maps(
                    out, geoms, paths_, info, threshold=threshold, rule=rule, head_boxes=head_boxes,
                    supervision=None if learned is None else learned.supervision,
                )  # fmt: skip
            by_index = {it["index"]: n for n, it in enumerate(good)}
            for it in items:
                path = files[it["index"]]
                if "error" in it:
                    yield ImageFailure(path, it["error"])
                    continue
                n = by_index[it["index"]]
                yield Explained(results[n], it["display"], it["display_scale"], norm[n])
            if bar is not None:
                bar.update(len(items))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        if bar is not None:
            bar.close()
