"""The Kaggle ILSVRC ``LOC_<split>_solution.csv`` (``ImageId,PredictionString``): ``ilsvrc_csv``."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from camloc.data._io import (
    LABEL_FILE_NAMES,
    FileIndex,
    as_path,
    check_box,
    check_exists,
    find_labels_file,
    number,
    read_class_list,
    require_dir,
    require_file,
    resolve_classes,
)
from camloc.data.annotations.records import (
    AnnotationSet,
    Sample,
    _check_flag,
    _check_split,
    _class_meta,
    _csv_rows,
    _lookup,
)
from camloc.errors import AnnotationError


def read_ilsvrc_csv(
    path: str | os.PathLike[str],
    *,
    split: str = "val",
    image_dir: str | os.PathLike[str] | None = None,
    classes: str | os.PathLike[str] | Sequence[str] | None = None,
    check_files: bool = True,
) -> AnnotationSet:
    """Read the Kaggle ILSVRC ``LOC_<split>_solution.csv`` (``ImageId,PredictionString``).

    ``PredictionString`` holds groups of 5 tokens ``"wnid x0 y0 x1 y1"`` (corners as in the XML, used as-is).

    Args:
        path: the CSV file, or the folder holding ``LOC_<split>_solution.csv``.
        split: ``"val"`` or ``"train"`` (selects the CSV inside a folder and the image layout).
        image_dir: image folder; default ``<root>/ILSVRC/Data/CLS-LOC/<split>`` (else ``<root>/<split>``).
            Train images are looked up in ``<image_dir>/<wnid>/``.
        classes: class order (labels file or wnid sequence); default ``LOC_synset_mapping.txt`` (or another
            known labels file) beside the CSV.
        check_files: raise if an image file is missing.

    Class: the first group's wnid; boxes: every group with that wnid. Images are ``<ImageId>.JPEG``.
    """
    p = as_path("path", path)
    _check_split(split, ("val", "train"))
    _check_flag("check_files", check_files)
    csv_path = p / f"LOC_{split}_solution.csv" if p.is_dir() else p
    require_file(csv_path, f"the Kaggle ILSVRC LOC_{split}_solution.csv")
    root = csv_path.parent
    cl = resolve_classes(classes)
    if cl is None:
        found = find_labels_file([root], ("LOC_synset_mapping.txt", *LABEL_FILE_NAMES))
        if found is None:
            raise AnnotationError(
                root, None, "no labels file giving the class order (expected LOC_synset_mapping.txt); pass `classes=`"
            )
        cl = read_class_list(found)
    index = cl.index_of()
    if image_dir is not None:
        img_dir = require_dir(as_path("image_dir", image_dir), "the image folder")
    else:
        img_dir = root / "ILSVRC" / "Data" / "CLS-LOC" / split
        if not img_dir.is_dir() and (root / split).is_dir():
            img_dir = root / split
        if check_files:
            require_dir(img_dir, f"the ILSVRC {split} images (Kaggle layout); pass `image_dir=`")
    files = FileIndex()
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    rows = _csv_rows(csv_path)
    hline, header = rows[0] if rows else (None, None)
    if header is None or [h.strip() for h in header] != ["ImageId", "PredictionString"]:
        raise AnnotationError(csv_path, hline, f"expected the header 'ImageId,PredictionString'; got {header!r}")
    for line, row in rows[1:]:
        if len(row) != 2:
            raise AnnotationError(csv_path, line, f"expected 2 columns (ImageId,PredictionString); got {len(row)}")
        image_id, pred = row[0].strip(), row[1].split()
        if image_id in seen:
            raise AnnotationError(csv_path, line, f"duplicate ImageId {image_id!r} (first at line {seen[image_id]})")
        seen[image_id] = line
        if not pred or len(pred) % 5:
            raise AnnotationError(
                csv_path,
                line,
                f"PredictionString must be groups of 5 tokens 'wnid x0 y0 x1 y1'; got {len(pred)} tokens",
            )
        groups = [pred[i : i + 5] for i in range(0, len(pred), 5)]
        wnid = groups[0][0]
        class_idx = _lookup(cl, index, wnid, csv_path, line, "wnid")
        boxes = []
        for g in groups:
            _lookup(cl, index, g[0], csv_path, line, "wnid")
            if g[0] == wnid:
                coords = [number(csv_path, line, t, f"{c} of {g[0]}") for t, c in zip(g[1:], ("x0", "y0", "x1", "y1"))]
                boxes.append(check_box(csv_path, line, coords))
        folder = img_dir / image_id.split("_")[0] if split == "train" else img_dir
        image = folder / f"{image_id}.JPEG"
        if check_files:
            check_exists(files, image, csv_path, line)
        samples.append(Sample(image_id, image, class_idx, np.asarray(boxes, np.float32)))
    names, wnids = _class_meta(cl)
    return AnnotationSet(tuple(samples), names, "ilsvrc_csv", root, wnids)
