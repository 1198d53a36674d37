"""Training data for :mod:`camloc.training`: dataset layouts -> (path, label) lists, and the augmenting dataset.

Layouts (detected in this order, from the ``data`` root):

1. camloc CSV (:mod:`camloc.data.synthetic`): ``root/train/labels.csv`` (+ optional ``root/val/labels.csv``),
   or ``data`` itself a ``.csv`` file, read by :func:`camloc.data.annotations.read_csv` (its rules: columns
   ``file,class_idx[,x0,y0,x1,y1,...]``, paths relative to the CSV, one class per image, class names from
   ``classes.txt`` & co. beside the CSV or in its parent), else ``class_<i>``.
2. Tiny-ImageNet: ``root/wnids.txt``, ``root/train/<wnid>/images/*``, ``root/val/val_annotations.txt`` +
   ``root/val/images/*``; classes and the val split read by :func:`camloc.data.annotations.read_tiny_imagenet`.
   Class names: the first synonym of ``words.txt`` when present.
3. ImageFolder: ``root/train/<class>/...`` (+ optional ``root/val/<class>/...``), else ``root/<class>/...``.
   Classes are the sorted folder names; images are found recursively.

Without a validation split, ``val_fraction`` of each class (a seeded permutation) is held out.

Augmentation is a pure function of ``(seed, epoch, index)``, so it does not depend on worker processes,
the global RNG or how the samples are split between distributed ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from camloc._checks import fail
from camloc.data.annotations import AnnotationSet, read_csv, read_tiny_imagenet
from camloc.data.annotations.tiny_imagenet import tiny_imagenet_classes
from camloc.data.images import IMAGE_EXTENSIONS

Item = tuple[str, int]


@dataclass(frozen=True)
class DataSplit:
    """``train``/``val``: lists of (image path, class index); ``classes``: names in class-index order."""

    train: list[Item]
    val: list[Item]
    classes: tuple[str, ...]
    layout: str  # "csv" | "tiny-imagenet" | "imagefolder"
    val_source: str  # "split" (held out from train) | "folder" | "none"


def _items(annotations: AnnotationSet) -> list[Item]:
    return [(str(s.path), s.class_idx) for s in annotations.samples]


def _csv_layout(train_csv: Path, val_csv: Path | None) -> tuple[list[Item], list[Item] | None, tuple[str, ...]]:
    """The camloc CSV layout through :func:`camloc.data.annotations.read_csv` (its rules; boxes unused)."""
    train_set = read_csv(train_csv)
    train = _items(train_set)
    val = _items(read_csv(val_csv, classes=train_set.class_names)) if val_csv is not None else None
    if train_set.class_names is not None:  # read_csv checked every class_idx against it
        return train, val, train_set.class_names
    n = 1 + max(lbl for _, lbl in train + (val or []))
    return train, val, tuple(f"class_{i}" for i in range(n))


def _images_under(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _tiny_imagenet(root: Path) -> tuple[list[Item], list[Item] | None, tuple[str, ...]]:
    """Tiny-ImageNet: classes and the val split through :mod:`camloc.data.annotations`'s reader; the train
    images are found like an ImageFolder (``train/<wnid>/images/*``, or ``train/<wnid>/*``): no boxes needed."""
    cl = tiny_imagenet_classes(root)
    train: list[Item] = []
    for label, wnid in enumerate(cl.keys):
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            folder = root / "train" / wnid
        train += [(p, label) for p in _images_under(folder)]
    val = None
    if (root / "val" / "val_annotations.txt").is_file():
        val = _items(read_tiny_imagenet(root, split="val", classes=cl.keys))
    # the model's class names: the first synonym of each words.txt entry ("goldfish, Carassius auratus")
    return train, val, tuple(name.split(",")[0].strip() or key for key, name in zip(cl.keys, cl.names))


def _image_folder(folder: Path, classes: list[str] | None = None) -> tuple[list[Item], list[str]]:
    if classes is None:
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    index = {c: i for i, c in enumerate(classes)}
    items: list[Item] = []
    for c in classes:
        if (folder / c).is_dir():
            items += [(p, index[c]) for p in _images_under(folder / c)]
    return items, classes


def _holdout(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Per-class seeded hold-out of ``round(n * fraction)`` items (at least 1 when n >= 2 and fraction > 0)."""
    if fraction <= 0:
        return items, []
    by_class: dict[int, list[Item]] = {}
    for it in sorted(items):
        by_class.setdefault(it[1], []).append(it)
    train: list[Item] = []
    val: list[Item] = []
    for label in sorted(by_class):
        group = by_class[label]
        k = min(max(round(len(group) * fraction), 1 if len(group) >= 2 else 0), len(group) - 1)
        perm = np.random.default_rng([seed, label]).permutation(len(group))
        held = set(perm[:k].tolist())
        for j, it in enumerate(group):
            (val if j in held else train).append(it)
    return train, val


def discover(root: str | Path, *, val_fraction: float, seed: int) -> DataSplit:
    """Find the dataset layout under ``root`` and list its train / val items (see module docstring)."""
    r = Path(root)
    if r.is_file() and r.suffix.lower() == ".csv":
        train, val, classes = _csv_layout(r, None)
        layout = "csv"
    elif (r / "train" / "labels.csv").is_file():
        vcsv = r / "val" / "labels.csv"
        train, val, classes = _csv_layout(r / "train" / "labels.csv", vcsv if vcsv.is_file() else None)
        layout = "csv"
    elif (r / "wnids.txt").is_file() and (r / "train").is_dir():
        train, val, classes = _tiny_imagenet(r)
        layout = "tiny-imagenet"
    elif r.is_dir():
        base = r / "train" if (r / "train").is_dir() else r
        train, class_list = _image_folder(base)
        val = None
        if base != r and (r / "val").is_dir() and any(p.is_dir() for p in (r / "val").iterdir()):
            val, _ = _image_folder(r / "val", class_list)
        classes = tuple(class_list)
        layout = "imagefolder"
    else:
        fail("data", "a dataset folder (camloc CSV, Tiny-ImageNet or ImageFolder layout) or a labels.csv", str(r))
    if not train:
        fail("data", "a dataset with training images", f"no images found under {r} ({layout} layout)")
    if len(classes) < 2:
        fail("data", "a dataset with at least 2 classes", f"{len(classes)} class in {r}")
    if val is None:
        train, val = _holdout(train, val_fraction, seed)
        source = "split" if val else "none"
    else:
        source = "folder"
    return DataSplit(train=train, val=val, classes=classes, layout=layout, val_source=source)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def crop_params(
    rng: np.random.Generator, width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop parameter sampler on ``rng``: (left, top, crop width, crop height)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class ImageDataset(torch.utils.data.Dataset):
    """(path, label) items -> ``(Tensor[3, S, S] float32 normalised, label)``.

    Train: random resized crop (scale ``(min_crop_scale, 1)``, ratio 3/4..4/3) + horizontal flip (p=0.5),
    drawn from ``np.random.default_rng`` seeded by ``(seed, epoch, index)``. Eval: the one image pipeline
    (:class:`camloc.pipeline.ImagePipeline`, full resize to S x S with ``interpolation``), exactly what
    ``camloc explain`` / ``evaluate`` feed the trained model.
    """

    def __init__(
        self,
        items: list[Item],
        *,
        size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        seed: int = 0,
        min_crop_scale: float = 0.35,
        interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear",
    ) -> None:
        from camloc.models.info import Preprocess
        from camloc.pipeline import ImagePipeline

        self.items = items
        self.size = size
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.train = train
        self.seed = seed
        self.min_crop_scale = min_crop_scale
        self.epoch = 0
        pre = Preprocess(size=(size, size), mean=tuple(mean), std=tuple(std), interpolation=interpolation)  # type: ignore[arg-type]
        self.pipeline = ImagePipeline(pre)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from camloc.data.images import load_image

        path, label = self.items[index]
        if not self.train:
            return self.pipeline(path).tensor, label
        img = load_image(path).image
        s = self.size
        rng = np.random.default_rng(_seed(self.seed, self.epoch, index, 7))
        left, top, w, h = crop_params(rng, img.width, img.height, (self.min_crop_scale, 1.0), (3 / 4, 4 / 3))
        img = img.resize((s, s), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        a = (np.asarray(img, np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))), label
