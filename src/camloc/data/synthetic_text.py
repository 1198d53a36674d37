"""A weakly-supervised text-detection set: words rendered onto real photos, with image labels and exact boxes.

The CAM paper's demo (sec. 4): a linear head fitted on "text" / "no text" image labels only, on a frozen trunk's
pooled features, localizes the text. :func:`make_text_dataset` makes such a set from any folder of photos:

- every image is a random square crop of one of the photos (side ``U(0.6, 1)`` of the shorter side, resized to
  ``image_size``); images alternate "no text" (class 0) and "text" (class 1), and each consecutive pair shares one
  photo (two different crops), so every photo appears equally often in both classes and the photo itself says
  nothing about the label. Train and val draw from disjoint parts of the photo list (when there are >= 2 photos).
- a "text" image gets 1..``max_words`` words (a built-in word list, digits and capitals mixed in), each in a
  font drawn from :func:`find_fonts` (Pillow's own scalable default font, plus TrueType / OpenType fonts found
  at run time in the usual system folders such as Debian's DejaVu and Liberation; none is required), a height of
  ``U(min_text_height, max_text_height) * image_size``, a colour contrasting with the photo under it, an angle
  ``U(-max_angle, max_angle)`` degrees and a position where it fits whole and overlaps no other word.
- **ink and boxes are exact**: each word is rendered anti-aliased into an 8-bit coverage mask (rotated with it),
  coverage below 1/8 is dropped, and the image is ``photo * (1 - a) + colour * a`` with ``a = coverage / 255``:
  pixels differ from the photo only where a word's coverage is > 0 (the ink). A word's box is the tight
  axis-aligned box of its ink pixels in camloc's convention (``(c0, r0, c1 + 1, r1 + 1)``, see
  :func:`camloc.data.synthetic.mask_box`); the ink of all words is the image's mask.

Layout (camloc CSV, read by ``fit``, ``train`` and ``evaluate``)::

    OUT/classes.txt                    "no text", "text"
    OUT/{train,val}/labels.csv         file,class_idx,x0,y0,x1,y1,w,h,mask (one row per word box; "no text"
                                       images have one row with empty box and mask)
    OUT/{train,val}/text.csv           the "text" rows only (what ``camloc evaluate`` localizes)
    OUT/{train,val}/images/NNNNNN.png  RGB, lossless
    OUT/{train,val}/masks/NNNNNN.png   the ink, 0 / 255 ("text" images only)
    OUT/text_set.json                  the settings, fonts and photos used

Deterministic: the same photos, fonts and arguments give byte-identical files (``seed`` fixes every draw; the
fonts found depend on the machine and are listed in ``text_set.json``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camloc._checks import check_number, fail
from camloc._io import atomic_write_bytes
from camloc.data.synthetic import CSV_HEADER, _png, mask_box

__all__ = [
    "DEFAULT_FONT",
    "TEXT_CLASSES",
    "TextDataset",
    "TextSample",
    "find_fonts",
    "make_text_dataset",
    "render_text",
    "text_background",
]

TEXT_CLASSES: tuple[str, ...] = ("no text", "text")
DEFAULT_FONT = "pillow-default"
"""The font name of Pillow's own scalable font (``ImageFont.load_default(size=...)``)."""
FONT_DIRS: tuple[str, ...] = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:/Windows/Fonts",
)
_WORDS = (
    "STOP", "OPEN", "SALE", "EXIT", "CAFE", "HOTEL", "TAXI", "BUS", "PARKING", "POLICE", "MENU", "PIZZA", "BAR",
    "NEWS", "BOOKS", "MARKET", "BANK", "POST", "FREE", "WELCOME", "hello", "world", "coffee", "station", "garden",
    "street", "museum", "music", "summer", "river", "camera", "paper", "window", "green", "orange", "tiger",
    "Berlin", "Paris", "Tokyo", "London", "Main St", "No. 42", "2016", "1984", "24/7", "A4", "ZX81", "Route 66",
    "Exit 12", "Platform 9", "Gate B7", "Level 3", "50% OFF", "OK", "Lorem", "ipsum", "dolor", "Zhou", "CVPR",
)  # fmt: skip
_SPLIT_CODE = {"train": 1, "val": 2}
_MIN_COVERAGE = 32  # coverage (0..255) below this is dropped: the ink is where coverage >= 1/8
_CROP_SCALE = (0.6, 1.0)


@dataclass(frozen=True)
class TextSample:
    """One rendered image: ``image`` uint8 ``[S, S, 3]``, ``mask`` uint8 ``[S, S]`` (ink 255), ``boxes`` one
    xyxy int box per word (tight around its ink), ``words`` the strings, ``fonts`` their fonts."""

    image: np.ndarray
    mask: np.ndarray
    boxes: tuple[tuple[int, int, int, int], ...]
    words: tuple[str, ...]
    fonts: tuple[str, ...]


@dataclass(frozen=True)
class TextDataset:
    """Paths written by :func:`make_text_dataset` and what was used."""

    root: Path
    train_csv: Path
    val_csv: Path
    train_text_csv: Path
    val_text_csv: Path
    classes: tuple[str, ...]
    num_train: int
    num_val: int
    fonts: tuple[str, ...]
    photos: tuple[Path, ...]


def find_fonts(dirs: Sequence[str | os.PathLike[str]] | None = None) -> tuple[str, ...]:
    """:data:`DEFAULT_FONT` (when Pillow has FreeType) and every ``.ttf`` / ``.otf`` under ``dirs`` (default
    :data:`FONT_DIRS`, the usual system font folders; missing ones are skipped) that Pillow can open, sorted."""
    found: list[str] = []
    try:
        ImageFont.load_default(size=12)
        if isinstance(ImageFont.load_default(size=12), ImageFont.FreeTypeFont):
            found.append(DEFAULT_FONT)
    except (OSError, ImportError):  # pragma: no cover - Pillow built without FreeType
        pass
    files: set[str] = set()
    for d in FONT_DIRS if dirs is None else dirs:
        root = Path(os.path.expanduser(str(d)))
        if root.is_dir():
            files.update(str(p) for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf") and p.is_file())
    for f in sorted(files):
        try:
            ImageFont.truetype(f, 12)
        except OSError:
            continue
        found.append(f)
    return tuple(found)


@lru_cache(maxsize=256)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if name == DEFAULT_FONT:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(name, size)


def _word(rng: np.random.Generator) -> str:
    w = _WORDS[int(rng.integers(0, len(_WORDS)))]
    r = rng.random()
    if r < 0.25:
        return w.upper()
    if r < 0.4:
        return w.lower()
    return w


def _coverage(word: str, font: Any, angle: float) -> np.ndarray:
    """The word's anti-aliased coverage ``uint8 [h, w]``, rotated by ``angle`` degrees, cut to its tight box."""
    x0, y0, x1, y1 = font.getbbox(word)
    canvas = Image.new("L", (int(x1 - x0) + 8, int(y1 - y0) + 8), 0)
    ImageDraw.Draw(canvas).text((4 - x0, 4 - y0), word, fill=255, font=font)
    if angle:
        canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=0)
    a = np.asarray(canvas, np.uint8).copy()
    a[a < _MIN_COVERAGE] = 0
    bx0, by0, bx1, by1 = mask_box(a)
    return a[by0:by1, bx0:bx1]


def _contrasting(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A colour whose mean absolute difference to ``under`` (the photo's mean colour there) is at least 90."""
    c = rng.uniform(0, 255, 3)
    if np.abs(c - under).mean() < 90:
        c = np.where(under.mean() > 127, rng.uniform(0, 50, 3), rng.uniform(205, 255, 3))
    return c


def render_text(
    background: np.ndarray,
    *,
    seed: int = 0,
    index: int = 0,
    split: str = "train",
    fonts: Sequence[str] | None = None,
    max_words: int = 2,
    min_text_height: float = 0.08,
    max_text_height: float = 0.22,
    max_angle: float = 30.0,
) -> TextSample:
    """Render 1..``max_words`` words onto ``background`` (uint8 ``[S, S, 3]``): a pure function of its arguments.

    Returns the image, the ink mask and one tight box per word (module docstring). Words that cannot be placed
    without overlapping another (20 tries) are left out; the first always fits (its size shrinks until it does).
    """
    bg = np.asarray(background)
    if bg.dtype != np.uint8 or bg.ndim != 3 or bg.shape[2] != 3 or bg.shape[0] != bg.shape[1]:
        fail("background", "a square uint8 RGB image [S, S, 3]", getattr(bg, "shape", bg))
    fonts = tuple(find_fonts() if fonts is None else fonts)
    if not fonts:
        fail("fonts", "at least one font (Pillow's default needs FreeType)", fonts)
    check_number("max_words", max_words, low=1, integer=True)
    check_number("min_text_height", min_text_height, low=0.02, high=0.9)
    check_number("max_text_height", max_text_height, low=min_text_height, high=0.9)
    check_number("max_angle", max_angle, low=0.0, high=90.0)
    if split not in _SPLIT_CODE:
        fail("split", "'train' or 'val'", repr(split))
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _SPLIT_CODE[split], int(index), 7])
    s = bg.shape[0]
    img = bg.astype(np.float32)
    mask = np.zeros((s, s), np.uint8)
    taken = np.zeros((s, s), bool)
    boxes: list[tuple[int, int, int, int]] = []
    words: list[str] = []
    used: list[str] = []
    for k in range(int(rng.integers(1, max_words + 1))):
        word, font_name = _word(rng), fonts[int(rng.integers(0, len(fonts)))]
        height = rng.uniform(min_text_height, max_text_height) * s
        angle = float(rng.uniform(-max_angle, max_angle))
        cov = None
        for _ in range(8):  # shrink until the rotated word fits in 90 % of the image
            cov = _coverage(word, _font(font_name, max(6, round(height))), angle)
            if cov.size and max(cov.shape) <= 0.9 * s:
                break
            height *= 0.75
            cov = None
        if cov is None or not cov.any():
            continue
        h, w = cov.shape
        place = None
        for _ in range(20):
            x, y = int(rng.integers(0, s - w + 1)), int(rng.integers(0, s - h + 1))
            if not taken[max(0, y - 2) : y + h + 2, max(0, x - 2) : x + w + 2].any():
                place = (x, y)
                break
        if place is None:
            if k == 0:  # pragma: no cover - an empty image always has room for the first word
                raise AssertionError("no room for the first word")
            continue
        x, y = place
        a = cov.astype(np.float32)[..., None] / 255.0
        colour = _contrasting(rng, img[y : y + h, x : x + w].reshape(-1, 3).mean(0))
        region = img[y : y + h, x : x + w]
        img[y : y + h, x : x + w] = np.where(a > 0, region * (1 - a) + colour.astype(np.float32) * a, region)
        mask[y : y + h, x : x + w] = np.where(cov > 0, 255, mask[y : y + h, x : x + w])
        taken[y : y + h, x : x + w] = True
        bx0, by0, bx1, by1 = mask_box(cov)
        boxes.append((x + bx0, y + by0, x + bx1, y + by1))
        words.append(word)
        used.append(Path(font_name).name if font_name != DEFAULT_FONT else DEFAULT_FONT)
    out = np.where(mask[..., None] > 0, np.clip(np.rint(img), 0, 255), bg).astype(np.uint8)
    return TextSample(out, mask, tuple(boxes), tuple(words), tuple(used))


def _photo_pools(photos: Sequence[Path], n_train: int, n_val: int, seed: int) -> dict[str, list[Path]]:
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 99]).permutation(len(photos))
    shuffled = [photos[i] for i in order]
    if len(shuffled) < 2 or n_val == 0:
        return {"train": shuffled, "val": shuffled}
    k = min(len(shuffled) - 1, max(1, round(len(shuffled) * n_train / (n_train + n_val))))
    return {"train": shuffled[:k], "val": shuffled[k:]}


@lru_cache(maxsize=8)
def _decoded(path: str, need: int) -> np.ndarray:
    from camloc.data.images import decode_image

    return np.asarray(decode_image(path, min_size=(need, need)).image, np.uint8)


def text_background(
    photos: Sequence[str | os.PathLike[str]], *, index: int, split: str = "train", seed: int = 0, image_size: int = 224,
    num_train: int | None = None, num_val: int | None = None,
) -> np.ndarray:  # fmt: skip
    """The photo crop under image ``index`` of ``split`` (uint8 ``[S, S, 3]``), as :func:`make_text_dataset` makes
    it: photo ``pool[(index // 2) % len(pool)]`` of the split's share of the (seed-shuffled) ``photos``, a random
    square crop of side ``U(0.6, 1)`` of its shorter side, resized (bilinear) to ``image_size``.
    ``num_train`` / ``num_val``: the split sizes, which set the photo shares (default: equal)."""
    files = [Path(p) for p in photos]
    if not files:
        fail("photos", "at least one photo", "none")
    pools = _photo_pools(files, num_train or 1, 1 if num_val is None else num_val, seed)
    pool = pools[split]
    photo = pool[(int(index) // 2) % len(pool)]
    need = math.ceil(image_size / _CROP_SCALE[0])
    arr = _decoded(str(photo), need)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _SPLIT_CODE[split], int(index), 3])
    h, w = arr.shape[:2]
    side = max(1, round(rng.uniform(*_CROP_SCALE) * min(h, w)))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    crop = Image.fromarray(arr[y : y + side, x : x + side])
    return np.asarray(crop.resize((image_size, image_size), Image.Resampling.BILINEAR), np.uint8)


def make_text_dataset(
    out_dir: str | os.PathLike[str],
    photos: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    train_per_class: int = 150,
    val_per_class: int = 40,
    image_size: int = 224,
    seed: int = 0,
    max_words: int = 2,
    min_text_height: float = 0.08,
    max_text_height: float = 0.22,
    max_angle: float = 30.0,
    fonts: Sequence[str] | None = None,
) -> TextDataset:
    """Write the text-detection set under ``out_dir`` (layout and rules in the module docstring).

    Args:
        photos: a folder (searched recursively for images) or a list of image files.
        train_per_class, val_per_class: images per class ("no text", "text") in each split.
        fonts: font files (or :data:`DEFAULT_FONT`); default :func:`find_fonts`.
    """
    from camloc.data.images import find_images
    from camloc.errors import CamlocError

    check_number("train_per_class", train_per_class, low=1, integer=True)
    check_number("val_per_class", val_per_class, low=0, integer=True)
    check_number("seed", seed, low=0, integer=True)
    check_number("image_size", image_size, low=32, high=2048, integer=True)
    if isinstance(photos, (str, os.PathLike)):
        src = Path(photos)
        if not src.is_dir():
            fail("photos", "a folder of photos", str(src))
        files = [Path(p) for p in find_images([src], recursive=True)]
    else:
        files = [Path(p) for p in photos]
    if not files:
        fail("photos", "a folder holding at least one image", str(photos))
    font_list = tuple(find_fonts() if fonts is None else fonts)
    if not font_list:
        fail("fonts", "at least one usable font", "none found (Pillow without FreeType and no font files)")
    render_kw: dict[str, Any] = {
        "fonts": font_list, "max_words": max_words, "min_text_height": min_text_height,
        "max_text_height": max_text_height, "max_angle": max_angle, "seed": seed,
    }  # fmt: skip
    render_text(np.zeros((image_size, image_size, 3), np.uint8), **render_kw)  # checks the options once
    root = Path(out_dir)
    n = {"train": 2 * train_per_class, "val": 2 * val_per_class}
    csvs: dict[str, tuple[Path, Path]] = {}
    for split in ("train", "val"):
        folder = root / split
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        rows, text_rows = [CSV_HEADER], [CSV_HEADER]
        for i in range(n[split]):
            try:
                bg = text_background(
                    files, index=i, split=split, seed=seed, image_size=image_size,
                    num_train=n["train"], num_val=n["val"],
                )  # fmt: skip
            except CamlocError as e:
                raise type(e)(f"`photos` must be readable images: {e}") from e
            img_rel = f"images/{i:06d}.png"
            if i % 2 == 0:
                atomic_write_bytes(folder / img_rel, _png(bg), fsync=False)
                rows.append(f"{img_rel},0,,,,,{image_size},{image_size},")
                continue
            s = render_text(bg, index=i, split=split, **render_kw)
            mask_rel = f"masks/{i:06d}.png"
            atomic_write_bytes(folder / img_rel, _png(s.image), fsync=False)
            atomic_write_bytes(folder / mask_rel, _png(s.mask), fsync=False)
            for x0, y0, x1, y1 in s.boxes:
                row = f"{img_rel},1,{x0},{y0},{x1},{y1},{image_size},{image_size},{mask_rel}"
                rows.append(row)
                text_rows.append(row)
        names = "\n".join(TEXT_CLASSES) + "\n"
        atomic_write_bytes(folder / "classes.txt", names.encode(), fsync=False)
        atomic_write_bytes(folder / "text.csv", ("\n".join(text_rows) + "\n").encode(), fsync=False)
        atomic_write_bytes(folder / "labels.csv", ("\n".join(rows) + "\n").encode(), fsync=False)
        csvs[split] = (folder / "labels.csv", folder / "text.csv")
    atomic_write_bytes(root / "classes.txt", ("\n".join(TEXT_CLASSES) + "\n").encode(), fsync=False)
    meta = {
        "schema_version": 1,
        "kind": "text",
        "classes": list(TEXT_CLASSES),
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "image_size": image_size,
        "seed": seed,
        "max_words": max_words,
        "text_height": [min_text_height, max_text_height],
        "max_angle": max_angle,
        "fonts": [f if f == DEFAULT_FONT else str(f) for f in font_list],
        "photos": [str(p) for p in files],
    }
    atomic_write_bytes(root / "text_set.json", (json.dumps(meta, indent=1) + "\n").encode(), fsync=False)
    return TextDataset(
        root=root,
        train_csv=csvs["train"][0],
        val_csv=csvs["val"][0],
        train_text_csv=csvs["train"][1],
        val_text_csv=csvs["val"][1],
        classes=TEXT_CLASSES,
        num_train=n["train"],
        num_val=n["val"],
        fonts=font_list,
        photos=tuple(files),
    )
