"""clovaai/wsolevaluation metadata folders (``image_ids.txt``, ``class_labels.txt``, ``localization.txt``): ``wsol``."""

from __future__ import annotations

import os
from pathlib import Path

from camloc.data._io import (
    FileIndex,
    as_path,
    check_box,
    check_exists,
    fields,
    integer,
    number,
    require_dir,
    require_file,
    text_lines,
)
from camloc.data.annotations.records import AnnotationSet, _Builder, _check_flag, _set_class
from camloc.errors import AnnotationError


def _wsol_dir(path: Path, split: str | None) -> Path:
    if split is None:
        if (path / "image_ids.txt").is_file():
            return path
        split = "test"
    if (path / split / "image_ids.txt").is_file():
        return path / split
    if path.name == split and (path / "image_ids.txt").is_file():
        return path
    raise AnnotationError(
        path / split / "image_ids.txt", None, "file not found (expected the wsolevaluation metadata of the split)"
    )


def read_wsol(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    mask_root: str | os.PathLike[str] | None = None,
    check_files: bool = True,
) -> AnnotationSet:
    """Read a clovaai/wsolevaluation metadata folder.

    Files: ``image_ids.txt`` (one image path per line, the sample order), ``class_labels.txt`` (``path,class``),
    optional ``localization.txt`` (boxes: ``path,x0,y0,x1,y1``, one line per box, used as-is; or masks
    (OpenImages): ``path,mask_path,ignore_path``, one line per mask, the ignore path on one of them),
    optional ``image_sizes.txt`` (``path,w,h``).

    Args:
        path: the split folder (holding ``image_ids.txt``) or its parent (``metadata/<dataset>``) with ``split``.
        split: sub-folder to use (``"train"``, ``"val"``, ``"test"``); default: ``path`` itself when it holds
            ``image_ids.txt``, else ``"test"``.
        data_root: folder the image paths are relative to (default: the metadata folder, rarely right).
        mask_root: folder the mask paths are relative to (default: ``data_root``).
        check_files: raise if an image (or mask) file is missing.
    """
    meta = _wsol_dir(as_path("path", path), split)
    _check_flag("check_files", check_files)
    if data_root is not None:
        droot = require_dir(as_path("data_root", data_root), "the wsolevaluation data root")
    else:
        droot = meta
    mroot = require_dir(as_path("mask_root", mask_root), "the mask root") if mask_root is not None else droot
    hint = "" if data_root is not None else " (image paths are relative to `data_root`; pass it)"
    ids_txt = meta / "image_ids.txt"
    order: dict[str, int] = {}
    for line, text in text_lines(ids_txt):
        if text in order:
            raise AnnotationError(ids_txt, line, f"duplicate image {text!r} (first at line {order[text]})")
        order[text] = line
    labels_txt = require_file(meta / "class_labels.txt", "the wsolevaluation class labels")
    builders: dict[str, _Builder] = {}
    files = FileIndex()
    for line, text in text_lines(labels_txt):
        key, sep, cls = text.rpartition(",")
        if not sep:
            raise AnnotationError(labels_txt, line, f"expected 2 fields (path,class); got 1: {text!r}")
        if key not in order:
            raise AnnotationError(labels_txt, line, f"unknown image {key!r} (not in image_ids.txt)")
        cidx = integer(labels_txt, line, cls.strip(), "class", low=0)
        _set_class(builders, key, droot / key, cidx, labels_txt, line)
    for key, line in order.items():
        if key not in builders:
            raise AnnotationError(ids_txt, line, f"image {key!r} has no entry in class_labels.txt")
        if check_files:
            check_exists(files, droot / key, ids_txt, line, hint=hint)
    loc_txt = meta / "localization.txt"
    if loc_txt.is_file():
        width = None
        for line, text in text_lines(loc_txt):
            parts = [p.strip() for p in text.split(",")]
            width = width or (5 if len(parts) == 5 else 3)
            layout = "path,x0,y0,x1,y1" if width == 5 else "path,mask_path,ignore_path"
            parts = fields(loc_txt, line, text, width, layout, sep=",")
            b = builders.get(parts[0])
            if b is None:
                raise AnnotationError(loc_txt, line, f"unknown image {parts[0]!r} (not in image_ids.txt)")
            if width == 5:
                coords = [number(loc_txt, line, t, c) for t, c in zip(parts[1:], ("x0", "y0", "x1", "y1"))]
                b.boxes.append(check_box(loc_txt, line, coords))
                continue
            if not parts[1]:
                raise AnnotationError(loc_txt, line, "empty mask path")
            mask = mroot / parts[1]
            if check_files:
                check_exists(files, mask, loc_txt, line, what="mask")
            b.masks.append(mask)
            if parts[2]:
                ignore = mroot / parts[2]
                if b.ignore is not None and b.ignore != ignore:
                    raise AnnotationError(loc_txt, line, f"second, different ignore mask for {parts[0]!r}")
                if check_files:
                    check_exists(files, ignore, loc_txt, line, what="ignore mask")
                b.ignore = ignore
    sizes_txt = meta / "image_sizes.txt"
    if sizes_txt.is_file():
        for line, text in text_lines(sizes_txt):
            key, w, h = fields(sizes_txt, line, text, 3, "path,w,h", sep=",")
            b = builders.get(key)
            if b is None:
                raise AnnotationError(sizes_txt, line, f"unknown image {key!r} (not in image_ids.txt)")
            b.size = (integer(sizes_txt, line, w, "w", low=1), integer(sizes_txt, line, h, "h", low=1))
    samples = tuple(builders[k].sample() for k in order)
    return AnnotationSet(samples, None, "wsol", meta, None)
