"""Batch explanation of image files: decode -> one forward -> top-k CAMs -> boxes in original pixels.

:func:`explain_images` is the library entry point behind ``camloc explain``. Decoding runs in DataLoader worker
processes; a file that cannot be decoded becomes an :class:`ImageFailure` and the run goes on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from camloc._checks import check_number
from camloc.cam import normalize_maps
from camloc.errors import CamlocError
from camloc.extractor import CAM
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
    """Top-k classes with boxes for one image; ``size`` is the original ``(width, height)`` after EXIF rotation."""

    path: Path
    size: tuple[int, int]
    topk: tuple[ClassBox, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "width": self.size[0],
            "height": self.size[1],
            "topk": [c.to_dict() for c in self.topk],
        }


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


def explain_images(
    paths: Sequence[str | os.PathLike[str]],
    model: torch.nn.Module,
    info: ModelInfo,
    *,
    topk: int = 5,
    threshold: float = 0.2,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    display_max_side: int = 512,
    progress: bool = False,
) -> Iterator[Explained | ImageFailure]:
    """Explain image files in input order, yielding :class:`Explained` or :class:`ImageFailure` per file.

    Each image is resized whole to the network input (``info.preprocess``), the top-``topk`` classes' maps are
    upsampled to the input size, thresholded at ``threshold`` of their max, and the largest component's box is
    mapped back to original pixels (see :mod:`camloc.localization` for the box convention).
    The model is moved to ``device`` by the caller; this function only moves inputs.
    """
    check_number("topk", topk, low=1, integer=True)
    check_number("threshold", threshold, low=0.0, high=1.0)
    check_number("batch_size", batch_size, low=1, integer=True)
    files = [Path(p) for p in paths]
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(files) > batch_size else 0
    loader = DataLoader(
        _Files(files, info.preprocess, display_max_side),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    cam = CAM(model)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="img", desc="explain", dynamic_ncols=True)
    try:
        for items in loader:
            good = [it for it in items if "x" in it]
            if good:
                x = torch.stack([it["x"] for it in good]).to(device)
                out = cam(x, topk=topk)
                up = out.upsampled()  # [n, k, H_in, W_in]: the paper upsamples before thresholding
                loc = localize(up, threshold=threshold)
                norm = normalize_maps(out.maps.float(), mode="max").cpu().numpy()  # drawings resize it themselves
                classes = out.classes.cpu().tolist()
                scores = out.scores.cpu().tolist()
            by_index = {it["index"]: n for n, it in enumerate(good)}
            for it in items:
                path = files[it["index"]]
                if "error" in it:
                    yield ImageFailure(path, it["error"])
                    continue
                n = by_index[it["index"]]
                boxes = it["geometry"].map_boxes(loc.boxes[n].numpy(), "network", "original").tolist()
                tk = tuple(
                    ClassBox(r + 1, c, info.categories[c], float(p), tuple(float(v) for v in b))  # type: ignore[arg-type]
                    for r, (c, p, b) in enumerate(zip(classes[n], scores[n], boxes))
                )
                yield Explained(ImageResult(path, it["size"], tk), it["display"], it["display_scale"], norm[n])
            if bar is not None:
                bar.update(len(items))
    finally:
        if bar is not None:
            bar.close()
