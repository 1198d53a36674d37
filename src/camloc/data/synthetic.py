"""A synthetic weakly-supervised localization dataset, generated deterministically from a seed.

Each image holds one object of one class on a cluttered background. The first four classes are textures
(``stripes``, ``checker``, ``dots``, ``grid``: two colours, random period and orientation) on an object whose
outline is drawn at random from square / disc / triangle / diamond for every texture class alike; the other
six are uniformly filled shapes (``disc``, ``square``, ``triangle``, ``cross``, ``ring``, ``diamond``).
Colours, position and scale are drawn from the same distributions for every class, and the background (a
colour gradient, pixel noise and soft colour blobs, never periodic) is drawn before and independently of the
class. So only the object tells the classes apart and a classifier trained on labels alone has to look at
it. The texture classes are quick to learn (local evidence spread over the whole object); mixing textured and
uniform classes lets a network recognise a uniform class by the *absence* of texture, i.e. from background.

Layout written by :func:`make_synthetic_dataset` (one layout, read by ``camloc train`` and the evaluators)::

    OUT/classes.txt                  one class name per line (class index = line number - 1)
    OUT/train/labels.csv             file,class_idx,x0,y0,x1,y1,w,h,mask  (one row per box)
    OUT/train/classes.txt            same as OUT/classes.txt
    OUT/train/images/000000.png ...  RGB images
    OUT/train/masks/000000.png ...   object masks, 0 / 255
    OUT/val/...                      the same for the validation split

Paths in the CSV are relative to the CSV's folder. Boxes follow camloc's box convention: continuous pixel
coordinates, ``(x0, y0, x1, y1) = (c0, r0, c1 + 1, r1 + 1)`` for a mask whose pixels span columns c0..c1 and
rows r0..r1, so every mask pixel lies inside the box and the box is the tightest such box. ``w, h`` are the
image's width and height.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from camloc._checks import check_number, fail
from camloc._io import atomic_write_bytes

__all__ = [
    "SYNTHETIC_CLASSES",
    "SyntheticDataset",
    "SyntheticSample",
    "make_synthetic_dataset",
    "mask_box",
    "render_synthetic_sample",
]

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "stripes",
    "checker",
    "dots",
    "grid",
    "disc",
    "square",
    "triangle",
    "cross",
    "ring",
    "diamond",
)
_TEXTURES = ("stripes", "checker", "dots", "grid")
_OUTLINES = ("square", "disc", "triangle", "diamond")
CSV_HEADER = "file,class_idx,x0,y0,x1,y1,w,h,mask"
_SPLIT_CODE = {"train": 1, "val": 2}


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered sample: ``image`` uint8 (H, W, 3) RGB, ``mask`` uint8 (H, W) in {0, 255}, ``box`` xyxy."""

    image: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]
    class_idx: int


@dataclass(frozen=True)
class SyntheticDataset:
    """Paths written by :func:`make_synthetic_dataset`."""

    root: Path
    train_csv: Path
    val_csv: Path
    classes_txt: Path
    classes: tuple[str, ...]
    num_train: int
    num_val: int


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tightest box ``(c0, r0, c1 + 1, r1 + 1)`` around the nonzero pixels of a (H, W) mask; (0, 0, 0, 0) if none."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float (size, size, 3) background in [0, 255]: gradient + soft blobs + noise; class-independent."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
    img = (c0 * (1 - t) + c1 * t).astype(np.float32)
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = rng.uniform(0, size, 2)
        sigma = rng.uniform(0.04, 0.15) * size
        amp = rng.uniform(0.4, 0.9)
        g = np.exp(-((xx * (size - 1) - cx) ** 2 + (yy * (size - 1) - cy) ** 2) / (2 * sigma**2))[..., None]
        img = img * (1 - amp * g) + rng.uniform(0, 255, 3).astype(np.float32) * (amp * g)
    img += rng.normal(0, rng.uniform(4, 14), img.shape).astype(np.float32)
    return img


def _shape_mask(rng: np.random.Generator, name: str, size: int, bw: int, bh: int, x: int, y: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    x1, y1 = x + bw - 1, y + bh - 1
    cx, cy = (x + x1) / 2, (y + y1) / 2
    if name in ("disc", "ring"):
        center = (round(cx), round(cy))
        axes = (max(bw // 2, 1), max(bh // 2, 1))
        cv2.ellipse(m, center, axes, 0, 0, 360, 255, -1, lineType=cv2.LINE_8)
        if name == "ring":
            f = rng.uniform(0.45, 0.65)
            inner = (max(round(axes[0] * f), 1), max(round(axes[1] * f), 1))
            cv2.ellipse(m, center, inner, 0, 0, 360, 0, -1, lineType=cv2.LINE_8)
    elif name == "square":
        m[y : y1 + 1, x : x1 + 1] = 255
    elif name == "triangle":
        pts = {
            0: [(x, y1), (x1, y1), (round(cx), y)],
            1: [(x, y), (x1, y), (round(cx), y1)],
            2: [(x, y), (x, y1), (x1, round(cy))],
            3: [(x1, y), (x1, y1), (x, round(cy))],
        }[int(rng.integers(0, 4))]
        cv2.fillPoly(m, [np.array(pts, np.int32)], 255, lineType=cv2.LINE_8)
    elif name == "diamond":
        pts = [(round(cx), y), (x1, round(cy)), (round(cx), y1), (x, round(cy))]
        cv2.fillPoly(m, [np.array(pts, np.int32)], 255, lineType=cv2.LINE_8)
    elif name == "cross":
        tx, ty = max(round(bw * rng.uniform(0.25, 0.4)), 1), max(round(bh * rng.uniform(0.25, 0.4)), 1)
        ox, oy = x + (bw - tx) // 2, y + (bh - ty) // 2
        m[y : y1 + 1, ox : ox + tx] = 255
        m[oy : oy + ty, x : x1 + 1] = 255
    else:  # pragma: no cover - guarded by the caller
        raise AssertionError(name)
    return m


def _object_pixels(rng: np.random.Generator, texture: str, size: int, bg_mean: np.ndarray) -> np.ndarray:
    """Float (size, size, 3) object appearance (only read where the mask is on)."""

    def contrasting(ref: np.ndarray, margin: float) -> np.ndarray:
        c = rng.uniform(0, 255, 3)
        if np.abs(c - ref).mean() < margin:
            c = np.where(ref > 127, rng.uniform(0, 70, 3), rng.uniform(185, 255, 3))
        return c.astype(np.float32)

    a = contrasting(bg_mean, 60)
    out = np.broadcast_to(a, (size, size, 3)).copy()
    if texture != "uniform":
        b = contrasting(a, 80)
        yy, xx = np.mgrid[0:size, 0:size]
        period = int(rng.integers(4, 7))
        ox, oy = rng.integers(0, period, 2)
        xx, yy = xx + ox, yy + oy
        if texture == "stripes":
            coord = {0: xx, 1: yy, 2: xx + yy, 3: xx - yy + 2 * size}[int(rng.integers(0, 4))]
            sel = (coord // (period // 2)) % 2 == 1
        elif texture == "checker":
            half = max(period // 2, 2)
            sel = ((xx // half) + (yy // half)) % 2 == 1
        elif texture == "dots":
            r = period / 2 - 0.5
            sel = ((xx % period) - r) ** 2 + ((yy % period) - r) ** 2 <= (period / 3.2) ** 2
        else:  # grid: one-pixel lines in both directions
            sel = (xx % period == 0) | (yy % period == 0)
        out[sel] = b
    out += rng.normal(0, 6, out.shape).astype(np.float32)
    return out


def render_synthetic_sample(
    class_idx: int,
    *,
    image_size: int = 64,
    seed: int = 0,
    index: int = 0,
    split: str = "train",
    min_scale: float = 0.3,
    max_scale: float = 0.7,
    shapes: tuple[str, ...] | None = None,
) -> SyntheticSample:
    """Render sample ``index`` of ``split`` for ``class_idx`` (a pure function of all its arguments).

    The object's box side is ``scale * image_size`` with ``scale ~ U(min_scale, max_scale)`` (aspect ratio
    jittered by up to 1.25x), placed uniformly at random fully inside the image.
    """
    check_number("class_idx", class_idx, low=0, integer=True)
    if shapes is None:
        shapes = SYNTHETIC_CLASSES
    if class_idx >= len(shapes) or shapes[class_idx] not in SYNTHETIC_CLASSES:
        fail("class_idx", f"an index into {tuple(shapes)} (names from {SYNTHETIC_CLASSES})", class_idx)
    check_number("image_size", image_size, low=16, integer=True)
    check_number("min_scale", min_scale, low=0.05, high=1.0)
    check_number("max_scale", max_scale, low=min_scale, high=1.0)
    if split not in _SPLIT_CODE:
        fail("split", "'train' or 'val'", repr(split))
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _SPLIT_CODE[split], int(index)])
    size = int(image_size)
    name = shapes[class_idx]
    bg = _background(rng, size)  # drawn first: the same for every class at a given (seed, split, index)
    side = rng.uniform(min_scale, max_scale) * size
    aspect = np.exp(rng.uniform(-np.log(1.25), np.log(1.25)))
    bw = int(np.clip(round(side * np.sqrt(aspect)), 6, size))
    bh = int(np.clip(round(side / np.sqrt(aspect)), 6, size))
    x = int(rng.integers(0, size - bw + 1))
    y = int(rng.integers(0, size - bh + 1))
    outline = _OUTLINES[int(rng.integers(0, len(_OUTLINES)))]  # used by the texture classes only
    mask = _shape_mask(rng, outline if name in _TEXTURES else name, size, bw, bh, x, y)
    on = mask > 0
    obj = _object_pixels(rng, name if name in _TEXTURES else "uniform", size, bg[on].mean(axis=0))
    img = np.where(on[..., None], obj, bg)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return SyntheticSample(image=image, mask=mask, box=mask_box(mask), class_idx=int(class_idx))


def _png(array: np.ndarray) -> bytes:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - encoding a uint8 array does not fail
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def _write_split(root: Path, split: str, n_per_class: int, classes: tuple[str, ...], **render_kw: float | int) -> Path:
    folder = root / split
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rows = [CSV_HEADER]
    size = int(render_kw["image_size"])
    for i in range(n_per_class * len(classes)):
        c = i % len(classes)  # interleaved: exactly n_per_class images per class
        s = render_synthetic_sample(c, index=i, split=split, shapes=classes, **render_kw)  # type: ignore[arg-type]
        img_rel, mask_rel = f"images/{i:06d}.png", f"masks/{i:06d}.png"
        atomic_write_bytes(folder / img_rel, _png(s.image), fsync=False)
        atomic_write_bytes(folder / mask_rel, _png(s.mask), fsync=False)
        x0, y0, x1, y1 = s.box
        rows.append(f"{img_rel},{c},{x0},{y0},{x1},{y1},{size},{size},{mask_rel}")
    text = "\n".join(classes) + "\n"
    atomic_write_bytes(folder / "classes.txt", text.encode(), fsync=False)
    csv = folder / "labels.csv"
    atomic_write_bytes(csv, ("\n".join(rows) + "\n").encode(), fsync=False)
    return csv


def make_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_classes: int = 4,
    train_per_class: int = 100,
    val_per_class: int = 25,
    image_size: int = 64,
    seed: int = 0,
    min_scale: float = 0.3,
    max_scale: float = 0.7,
    classes: tuple[str, ...] | None = None,
) -> SyntheticDataset:
    """Write the train and val splits under ``out_dir`` (layout in the module docstring); return the paths.

    The first ``num_classes`` of :data:`SYNTHETIC_CLASSES` are used, with exactly ``train_per_class`` /
    ``val_per_class`` images each. Same arguments -> byte-identical files. Every file is written atomically
    and each split's ``labels.csv`` last, so a complete CSV means a complete split.
    """
    if classes is None:
        check_number("num_classes", num_classes, low=2, high=len(SYNTHETIC_CLASSES), integer=True)
        classes = SYNTHETIC_CLASSES[:num_classes]
    else:
        bad = [c for c in classes if c not in SYNTHETIC_CLASSES]
        if bad or len(set(classes)) != len(classes) or len(classes) < 2:
            fail("classes", f"at least 2 distinct names from {SYNTHETIC_CLASSES}", tuple(classes))
        classes = tuple(classes)
    check_number("train_per_class", train_per_class, low=1, integer=True)
    check_number("val_per_class", val_per_class, low=0, integer=True)
    check_number("seed", seed, low=0, integer=True)
    check_number("image_size", image_size, low=16, integer=True)
    check_number("min_scale", min_scale, low=0.05, high=1.0)
    check_number("max_scale", max_scale, low=min_scale, high=1.0)
    if isinstance(out_dir, bytes) or not isinstance(out_dir, (str, os.PathLike)):
        fail("out_dir", "a str or os.PathLike path", out_dir, type_error=True)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    kw: dict[str, float | int] = {
        "image_size": image_size,
        "seed": seed,
        "min_scale": min_scale,
        "max_scale": max_scale,
    }
    train_csv = _write_split(root, "train", train_per_class, classes, **kw)
    val_csv = _write_split(root, "val", val_per_class, classes, **kw)
    classes_txt = root / "classes.txt"
    atomic_write_bytes(classes_txt, ("\n".join(classes) + "\n").encode(), fsync=False)
    return SyntheticDataset(
        root=root,
        train_csv=train_csv,
        val_csv=val_csv,
        classes_txt=classes_txt,
        classes=classes,
        num_train=train_per_class * len(classes),
        num_val=val_per_class * len(classes),
    )
