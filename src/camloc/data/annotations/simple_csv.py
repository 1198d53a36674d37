"""camloc's simple CSV (``file,class_idx,x0,y0,x1,y1[,...]``, one row per box): ``csv``."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from camloc.data._io import (
    LABEL_FILE_NAMES,
    ClassList,
    FileIndex,
    as_path,
    check_box,
    check_box_in_image,
    check_exists,
    fail,
    find_labels_file,
    integer,
    number,
    read_class_list,
    require_dir,
    require_file,
    resolve_classes,
)
from camloc.data.annotations.records import (
    AnnotationSet,
    _Builder,
    _check_flag,
    _class_meta,
    _csv_rows,
    _lookup,
    _set_class,
)
from camloc.errors import AnnotationError

_CSV_CLASS_FILES = ("classes.txt", *LABEL_FILE_NAMES)


_CSV_REQUIRED = ("file", "x0", "y0", "x1", "y1")
_CSV_PREFERRED = ("boxes.csv", "annotations.csv", "labels.csv")
_CSV_DEFAULT_SPLITS = ("val", "test")


def _csv_header(path: Path) -> list[str] | None:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            row = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None if row is None else [c.strip().lower() for c in row]


def _is_simple_csv(path: Path) -> bool:
    h = _csv_header(path)
    return h is not None and all(c in h for c in _CSV_REQUIRED) and ("class_idx" in h or "wnid" in h)


def _find_simple_csv(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob("*.csv") if p.is_file() and _is_simple_csv(p))
    preferred = [p for p in found if p.name in _CSV_PREFERRED]
    if preferred:
        return preferred[0]
    return found[0] if len(found) == 1 else None


def _csv_in_folder(folder: Path, split: str | None) -> Path:
    """The simple CSV of ``folder`` (or of its ``split`` / default-split sub-folder)."""
    if split is not None:
        sub = require_dir(folder / split, f"the folder of split {split!r} holding a CSV")
        found = _find_simple_csv(sub)
    else:
        found = _find_simple_csv(folder)
        for name in _CSV_DEFAULT_SPLITS:
            if found is None and (folder / name).is_dir():
                found = _find_simple_csv(folder / name)
    if found is None:
        where = folder / split if split is not None else folder
        raise AnnotationError(where, None, "no CSV with a header 'file,class_idx,x0,y0,x1,y1' (or several)")
    return found


def read_csv(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    classes: str | os.PathLike[str] | Sequence[str] | None = None,
    check_files: bool = True,
) -> AnnotationSet:
    """Read the simple CSV format: header ``file,class_idx,x0,y0,x1,y1``, one row per box.

    Columns (any order, names case-insensitive, unknown columns ignored):
        ``file`` image path relative to the CSV's folder; ``class_idx`` 0-based class (or ``wnid`` alone when a
        wnid labels file gives the order; with both, they must agree); ``x0,y0,x1,y1`` box corners used as-is
        (all four empty: a row without a box; no box column at all: image-level labels only, as for training);
        optional ``w,h`` image size; optional ``mask`` (PNG foreground mask path, relative) and ``ignore``
        (ignore-mask path) for PxAP.
    Rows of the same file are grouped into one sample (first-appearance order); a different class, size or
    ignore mask on a later row of the same file is an error.

    Args:
        path: the CSV file, or a folder holding ``boxes.csv`` / ``annotations.csv`` / ``labels.csv`` / a single
            such CSV.
        split: for a folder: read the CSV of the sub-folder ``<path>/<split>/`` (the
            :mod:`camloc.data.synthetic` layout ``root/{train,val}/labels.csv``). None: the folder itself, else
            its ``val/`` then ``test/`` sub-folder.
        classes: class order (labels file or sequence of keys); default: ``classes.txt``, ``synset_words.txt``,
            ``LOC_synset_mapping.txt``, ``wnids.txt`` or ``synsets.txt`` beside the CSV (else in its parent
            folder), if any.
        check_files: raise if an image or mask file is missing.
    """
    p = as_path("path", path)
    _check_flag("check_files", check_files)
    if split is not None and not isinstance(split, str):
        fail("split", "None or a str", split, type_error=True)
    if p.is_dir():
        p = _csv_in_folder(p, split)
    elif split is not None:
        fail("split", "None when `path` is a CSV file", repr(split))
    require_file(p, "a CSV file 'file,class_idx,x0,y0,x1,y1'")
    root = p.parent
    cl = resolve_classes(classes)
    if cl is None:
        found_labels = find_labels_file([root, root.parent], _CSV_CLASS_FILES)
        cl = read_class_list(found_labels) if found_labels is not None else None
    index = cl.index_of() if cl is not None else {}
    builders: dict[str, _Builder] = {}
    files = FileIndex()
    rows = _csv_rows(p)
    if not rows:
        raise AnnotationError(p, None, "empty file (expected a header 'file,class_idx,x0,y0,x1,y1')")
    hline, header = rows[0]
    cols = [c.strip().lower() for c in header]
    box_cols = ("x0", "y0", "x1", "y1")
    has_boxes = any(c in cols for c in box_cols)  # image-level labels only: no box column at all
    missing = [c for c in _CSV_REQUIRED if c not in cols and (has_boxes or c not in box_cols)]
    if missing or ("class_idx" not in cols and "wnid" not in cols):
        need = missing + ([] if ("class_idx" in cols or "wnid" in cols) else ["class_idx"])
        raise AnnotationError(p, hline, f"header lacks column(s) {', '.join(need)}; got {','.join(header)}")
    dup = next((c for c in cols if c and cols.count(c) > 1), None)
    if dup is not None:
        raise AnnotationError(p, hline, f"duplicate column {dup!r} in the header")
    col = {c: i for i, c in enumerate(cols)}
    has_w, has_h = "w" in col, "h" in col
    if has_w != has_h:
        raise AnnotationError(p, hline, "columns w and h must come together")
    if "class_idx" not in col and (cl is None or not cl.has_wnids):
        raise AnnotationError(p, hline, "a 'wnid' column without 'class_idx' needs a wnid labels file; pass `classes=`")
    for line, row in rows[1:]:
        if len(row) != len(cols):
            raise AnnotationError(p, line, f"expected {len(cols)} columns ({','.join(cols)}); got {len(row)}")
        cell = {c: row[i].strip() for c, i in col.items()}
        f = cell["file"]
        if not f:
            raise AnnotationError(p, line, "empty file column")
        cidx = _csv_class(p, line, cell, cl, index)
        b = _set_class(builders, f, root / f, cidx, p, line)
        if check_files and b.line == line:  # first row of this image
            check_exists(files, b.path, p, line)
        coords = [cell[c] for c in box_cols] if has_boxes else []
        if any(coords):
            if not all(coords):
                raise AnnotationError(p, line, "box columns x0,y0,x1,y1 must be all set or all empty")
            vals = [number(p, line, t, c) for t, c in zip(coords, ("x0", "y0", "x1", "y1"))]
            b.boxes.append(check_box(p, line, vals))
        if has_w and (cell["w"] or cell["h"]):
            size = (integer(p, line, cell["w"], "w", low=1), integer(p, line, cell["h"], "h", low=1))
            if b.size is not None and b.size != size:
                raise AnnotationError(p, line, f"conflicting size {size} for {f!r}; earlier rows say {b.size}")
            b.size = size
        if b.size is not None and b.boxes:
            check_box_in_image(p, line, b.boxes[-1], b.size)
        if cell.get("mask"):
            mask = root / cell["mask"]
            if mask not in b.masks:
                if check_files:
                    check_exists(files, mask, p, line, what="mask")
                b.masks.append(mask)
        if cell.get("ignore"):
            ignore = root / cell["ignore"]
            if b.ignore is not None and b.ignore != ignore:
                raise AnnotationError(p, line, f"conflicting ignore mask for {f!r}")
            if check_files and b.ignore is None:
                check_exists(files, ignore, p, line, what="ignore mask")
            b.ignore = ignore
    names, wnids = _class_meta(cl)
    return AnnotationSet(tuple(b.sample() for b in builders.values()), names, "csv", root, wnids)


def _csv_class(p: Path, line: int, cell: dict[str, str], cl: ClassList | None, index: dict[str, int]) -> int:
    wnid = cell.get("wnid", "")
    if "class_idx" in cell:
        cidx = integer(p, line, cell["class_idx"], "class_idx", low=0)
        if cl is not None and cidx >= len(cl.keys):
            src = f"the labels file {cl.path}" if cl.path is not None else "`classes`"
            raise AnnotationError(p, line, f"class_idx {cidx} out of range: {src} has {len(cl.keys)} classes")
        if wnid and cl is not None and cl.has_wnids:
            expected = _lookup(cl, index, wnid, p, line, "wnid")
            if expected != cidx:
                raise AnnotationError(
                    p, line, f"class_idx {cidx} disagrees with wnid {wnid} (index {expected} in {cl.path})"
                )
        return cidx
    if not wnid or cl is None:
        raise AnnotationError(p, line, "empty wnid column")
    return _lookup(cl, index, wnid, p, line, "wnid")
