"""CUB-200-2011 (``images.txt``, ``image_class_labels.txt``, ``bounding_boxes.txt``, ...): ``cub``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from camloc.data._io import (
    FileIndex,
    as_path,
    check_box,
    check_exists,
    fields,
    integer,
    number,
    require_file,
    text_lines,
)
from camloc.data.annotations.records import AnnotationSet, Sample, _check_flag, _check_split
from camloc.errors import AnnotationError


def _cub_root(path: Path) -> Path:
    if (path / "images.txt").is_file():
        return path
    if (path / "CUB_200_2011" / "images.txt").is_file():
        return path / "CUB_200_2011"
    raise AnnotationError(path / "images.txt", None, "file not found (expected the CUB-200-2011 image list)")


def _cub_table(path: Path, ids: dict[int, int], width: int, layout: str) -> dict[int, list[tuple[int, list[str]]]]:
    """``image id -> [(line, other fields), ...]`` of a CUB ``<id> ...`` table; unknown ids raise."""
    out: dict[int, list[tuple[int, list[str]]]] = {}
    for line, text in text_lines(path):
        parts = fields(path, line, text, width, layout)
        iid = integer(path, line, parts[0], "image id")
        if iid not in ids:
            raise AnnotationError(path, line, f"unknown image id {iid} (not in images.txt)")
        out.setdefault(iid, []).append((line, parts[1:]))
    return out


def _cub_single(path: Path, rows: list[tuple[int, list[str]]], iid: int) -> tuple[int, str]:
    """The one value of a ``<id> <value>`` table; a conflicting repeated entry raises."""
    line, (value,) = rows[0]
    for other_line, (other,) in rows[1:]:
        if other != value:
            raise AnnotationError(
                path, other_line, f"conflicting duplicate entry for image id {iid} (line {line} says {value})"
            )
    return line, value


def read_cub(
    path: str | os.PathLike[str],
    *,
    split: str = "test",
    check_files: bool = True,
) -> AnnotationSet:
    """Read CUB-200-2011 (``images.txt``, ``image_class_labels.txt``, ``bounding_boxes.txt``,
    ``train_test_split.txt``, ``classes.txt``; images under ``images/``).

    Args:
        path: the ``CUB_200_2011`` folder (or its parent).
        split: ``"test"`` (split flag 0), ``"train"`` (flag 1) or ``"all"``.
        check_files: raise if an image file is missing.

    Class ids are 1-based in the files and 0-based in the samples; names are the ``classes.txt`` entries
    as written (e.g. ``"001.Black_footed_Albatross"``), None without that file. Boxes ``x y width height``
    become ``(x, y, x + width, y + height)``. ``image_id`` is the relative image path from ``images.txt``.
    """
    root = _cub_root(as_path("path", path))
    _check_split(split, ("test", "train", "all"))
    _check_flag("check_files", check_files)
    images_txt = root / "images.txt"
    entries: list[tuple[int, int, str]] = []
    ids: dict[int, int] = {}
    for line, text in text_lines(images_txt):
        parts = text.split(maxsplit=1)
        if len(parts) != 2:
            raise AnnotationError(
                images_txt, line, f"expected 2 fields (<image_id> <path>); got {len(parts)}: {text!r}"
            )
        iid = integer(images_txt, line, parts[0], "image id")
        if iid in ids:
            raise AnnotationError(images_txt, line, f"duplicate image id {iid} (first at line {ids[iid]})")
        ids[iid] = line
        entries.append((line, iid, parts[1]))
    names: tuple[str, ...] | None = None
    classes_txt = root / "classes.txt"
    if classes_txt.is_file():
        cls_names: list[str] = []
        for line, text in text_lines(classes_txt):
            parts = text.split(maxsplit=1)
            if len(parts) != 2:
                raise AnnotationError(
                    classes_txt, line, f"expected 2 fields (<class_id> <name>); got {len(parts)}: {text!r}"
                )
            cid = integer(classes_txt, line, parts[0], "class id")
            if cid != len(cls_names) + 1:
                raise AnnotationError(classes_txt, line, f"class ids must be 1, 2, 3... in order; got {cid} here")
            cls_names.append(parts[1])
        names = tuple(cls_names)
    labels_txt = require_file(root / "image_class_labels.txt", "the CUB-200-2011 class labels")
    boxes_txt = require_file(root / "bounding_boxes.txt", "the CUB-200-2011 boxes")
    labels = _cub_table(labels_txt, ids, 2, "<image_id> <class_id>")
    boxes = _cub_table(boxes_txt, ids, 5, "<image_id> <x> <y> <width> <height>")
    flags: dict[int, list[tuple[int, list[str]]]] = {}
    split_txt = root / "train_test_split.txt"
    if split != "all":
        require_file(split_txt, "the CUB-200-2011 train/test split")
        flags = _cub_table(split_txt, ids, 2, "<image_id> <is_training_image>")
    files = FileIndex()
    samples = []
    for line, iid, rel in entries:
        for table, rows in (("image_class_labels.txt", labels), ("bounding_boxes.txt", boxes)):
            if iid not in rows:
                raise AnnotationError(images_txt, line, f"image id {iid} has no entry in {table}")
        if split != "all":
            if iid not in flags:
                raise AnnotationError(images_txt, line, f"image id {iid} has no entry in train_test_split.txt")
            fline, flag = _cub_single(split_txt, flags[iid], iid)
            if flag not in ("0", "1"):
                raise AnnotationError(split_txt, fline, f"is_training_image must be 0 or 1; got {flag!r}")
            keep = (flag == "1") == (split == "train")
        else:
            keep = True
        lline, cid_text = _cub_single(labels_txt, labels[iid], iid)
        cid = integer(labels_txt, lline, cid_text, "class id", low=1)
        if names is not None and cid > len(names):
            raise AnnotationError(labels_txt, lline, f"unknown class id {cid} (classes.txt has {len(names)})")
        bx = []
        for bline, vals in boxes[iid]:
            x, y, w, h = (number(boxes_txt, bline, v, n) for v, n in zip(vals, ("x", "y", "width", "height")))
            if w < 0 or h < 0:
                raise AnnotationError(boxes_txt, bline, f"box width and height must be >= 0; got {w}, {h}")
            bx.append(check_box(boxes_txt, bline, (x, y, x + w, y + h)))
        if not keep:  # parsed anyway: an error must not depend on the split
            continue
        image = root / "images" / rel
        if check_files:
            check_exists(files, image, images_txt, line)
        samples.append(Sample(rel, image, cid - 1, np.asarray(bx, np.float32)))
    return AnnotationSet(tuple(samples), names, "cub", root, None)
