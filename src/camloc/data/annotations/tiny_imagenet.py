"""Tiny-ImageNet (``wnids.txt``, ``words.txt``, ``train/``, ``val/val_annotations.txt``): ``tiny_imagenet``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from camloc.data._io import (
    ClassList,
    FileIndex,
    as_path,
    check_box,
    check_exists,
    fields,
    integer,
    read_class_list,
    require_file,
    resolve_classes,
    text_lines,
)
from camloc.data.annotations.records import (
    AnnotationSet,
    _Builder,
    _check_flag,
    _check_split,
    _class_meta,
    _lookup,
    _set_class,
)

TINY_IMAGENET_SIZE = (64, 64)


def tiny_imagenet_classes(root: Path) -> ClassList:
    """The Tiny-ImageNet class order (``wnids.txt`` line order) and names (``words.txt`` when present, else the
    wnids); ``words.txt`` lines are ``<wnid><TAB or space><name>``."""
    wnids_txt = require_file(root / "wnids.txt", "the Tiny-ImageNet class list")
    own = read_class_list(wnids_txt)
    names = own.keys
    words_txt = root / "words.txt"
    if words_txt.is_file():
        lookup: dict[str, str] = {}
        for _, text in text_lines(words_txt):
            wnid, _, name = text.partition("\t") if "\t" in text else text.partition(" ")
            lookup[wnid.strip()] = name.strip() or wnid.strip()
        names = tuple(lookup.get(w, w) for w in own.keys)
    return ClassList(own.keys, names, wnids_txt)


def read_tiny_imagenet(
    path: str | os.PathLike[str],
    *,
    split: str = "val",
    classes: str | os.PathLike[str] | Sequence[str] | None = None,
    check_files: bool = True,
) -> AnnotationSet:
    """Read Tiny-ImageNet (``wnids.txt``, ``words.txt``, ``train/``, ``val/``).

    Args:
        path: the dataset root (``tiny-imagenet-200``).
        split: ``"val"`` (``val/val_annotations.txt``: ``file wnid x0 y0 x1 y1``, images in ``val/images/``)
            or ``"train"`` (``train/<wnid>/<wnid>_boxes.txt``: ``file x0 y0 x1 y1``, images in
            ``train/<wnid>/images/``; classes in ``wnids.txt`` order).
        classes: class order override, e.g. ImageNet-1k ``synset_words.txt`` to get 1000-class indices;
            default: ``wnids.txt`` line order. Names: from ``classes`` when it has names, else ``words.txt``
            when present, else the wnids.
        check_files: raise if an image file is missing.

    Boxes: Tiny-ImageNet corners are INCLUSIVE pixel indices of the 64 x 64 image, stored as
    ``(x0, y0, x1 + 1, y1 + 1)`` (a box reaching column 63 ends at the right edge, 64). ``size`` = (64, 64).
    """
    root = as_path("path", path)
    _check_split(split, ("val", "train"))
    _check_flag("check_files", check_files)
    own = tiny_imagenet_classes(root)
    cl = resolve_classes(classes) or own
    index = cl.index_of()
    files = FileIndex()
    builders: dict[str, _Builder] = {}

    def add(ann: Path, line: int, key: str, image: Path, wnid: str, raw: list[str]) -> None:
        c = [integer(ann, line, t, n) for t, n in zip(raw, ("x0", "y0", "x1", "y1"))]
        if c[2] < c[0] or c[3] < c[1]:
            check_box(ann, line, c)  # raises naming the raw corners
        box = check_box(ann, line, (c[0], c[1], c[2] + 1, c[3] + 1))
        b = _set_class(builders, key, image, _lookup(cl, index, wnid, ann, line, "wnid"), ann, line)
        if check_files and b.line == line:  # first row of this image
            check_exists(files, image, ann, line)
        b.size = TINY_IMAGENET_SIZE
        b.boxes.append(box)

    if split == "val":
        ann = require_file(root / "val" / "val_annotations.txt", "the Tiny-ImageNet validation annotations")
        for line, text in text_lines(ann):
            f, wnid, *raw = fields(ann, line, text, 6, "file wnid x0 y0 x1 y1")
            add(ann, line, f, root / "val" / "images" / f, wnid, raw)
    else:
        for wnid in own.keys:
            ann = require_file(root / "train" / wnid / f"{wnid}_boxes.txt", f"the Tiny-ImageNet boxes of {wnid}")
            for line, text in text_lines(ann):
                f, *raw = fields(ann, line, text, 5, "file x0 y0 x1 y1")
                add(ann, line, f, root / "train" / wnid / "images" / f, wnid, raw)
    names_out, wnids_out = _class_meta(cl)
    return AnnotationSet(tuple(b.sample() for b in builders.values()), names_out, "tiny_imagenet", root, wnids_out)
