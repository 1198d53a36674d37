"""The reader table (:data:`FORMATS`), format auto-detection and :func:`read_dataset`."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from camloc.data._io import (
    WNID_RE,
    as_path,
    fail,
    read_voc_xml,
)
from camloc.data.annotations.coco import find_coco_file, is_coco_file, read_coco
from camloc.data.annotations.cub import read_cub
from camloc.data.annotations.ilsvrc_csv import read_ilsvrc_csv
from camloc.data.annotations.ilsvrc_xml import _ILSVRC_XML_DIRS, _has_xml, _xml_files, read_ilsvrc_xml
from camloc.data.annotations.records import AnnotationSet
from camloc.data.annotations.simple_csv import (
    _CSV_DEFAULT_SPLITS,
    _csv_header,
    _find_simple_csv,
    _is_simple_csv,
    read_csv,
)
from camloc.data.annotations.tiny_imagenet import read_tiny_imagenet
from camloc.data.annotations.voc import read_voc
from camloc.data.annotations.wsol import read_wsol
from camloc.errors import AnnotationError, CamlocTypeError, CamlocValueError

FORMATS: dict[str, Callable[..., AnnotationSet]] = {
    "ilsvrc_xml": read_ilsvrc_xml,
    "ilsvrc_csv": read_ilsvrc_csv,
    "voc": read_voc,
    "cub": read_cub,
    "wsol": read_wsol,
    "tiny_imagenet": read_tiny_imagenet,
    "csv": read_csv,
    "coco": read_coco,
}
"""Reader of each format name accepted by :func:`read_dataset`."""


def _first_object_name(xml_dir: Path) -> str | None:
    for f in _xml_files(xml_dir)[:1]:
        try:
            rec = read_voc_xml(f, one_based=False)
        except AnnotationError:
            return None
        return rec.objects[0].name if rec.objects else None
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess the annotation format of ``path`` from the files present (one of :data:`FORMATS`).

    Checked in order: a ``.csv`` file (Kaggle ``ImageId,PredictionString`` header -> ``ilsvrc_csv``, else
    ``csv``); a folder with ``image_ids.txt`` + ``class_labels.txt`` (``wsol``), ``images.txt`` +
    ``bounding_boxes.txt`` (``cub``, also under ``CUB_200_2011/``), ``wnids.txt`` + ``val/`` or ``train/``
    (``tiny_imagenet``), ``LOC_val_solution.csv`` (``ilsvrc_csv``), ``Annotations/`` + ``JPEGImages/`` (``voc``,
    or ``ilsvrc_xml`` when the first object name is a wnid), XML files or an ILSVRC XML sub-folder
    (``ilsvrc_xml``; before it: a folder holding ``instances.json`` / one ``annotations/instances_*.json``,
    ``coco``), a CSV with the simple header (``csv``); a COCO instances ``.json`` file (``coco``). Raises if
    nothing matches.
    """
    p = as_path("path", path)
    if p.is_file():
        if p.suffix.lower() == ".csv":
            h = _csv_header(p)
            if h == ["imageid", "predictionstring"]:
                return "ilsvrc_csv"
            if _is_simple_csv(p):
                return "csv"
            raise CamlocValueError(
                f"`path` must be an annotation CSV ('file,class_idx,x0,y0,x1,y1' or 'ImageId,PredictionString'); "
                f"got {p} with header {h!r}"
            )
        if p.name == "image_ids.txt":
            return "wsol"
        if is_coco_file(p):
            return "coco"
        raise CamlocValueError(f"`path` must be a dataset folder, an annotation CSV or a COCO JSON; got the file {p}")
    if not p.is_dir():
        raise AnnotationError(p, None, "not found (expected a dataset folder or an annotation file)")
    if any((c / "image_ids.txt").is_file() for c in (p, p / "test", p / "val", p / "train")):
        return "wsol"
    for c in (p, p / "CUB_200_2011"):
        if (c / "images.txt").is_file() and (c / "bounding_boxes.txt").is_file():
            return "cub"
    if (p / "wnids.txt").is_file() and ((p / "val").is_dir() or (p / "train").is_dir()):
        return "tiny_imagenet"
    if (p / "LOC_val_solution.csv").is_file() or (p / "LOC_train_solution.csv").is_file():
        return "ilsvrc_csv"
    if (p / "Annotations").is_dir() and (p / "JPEGImages").is_dir():
        name = _first_object_name(p / "Annotations")
        return "ilsvrc_xml" if name is not None and WNID_RE.fullmatch(name) else "voc"
    if find_coco_file(p, None) is not None and not _has_xml(p / "annotations"):  # COCO: annotations/instances_*.json
        return "coco"
    if _has_xml(p) or any((p / d).is_dir() for d in _ILSVRC_XML_DIRS) or (p / "ILSVRC").is_dir():
        return "ilsvrc_xml"
    if any(_find_simple_csv(c) is not None for c in (p, *(p / s for s in _CSV_DEFAULT_SPLITS), p / "train")):
        return "csv"
    raise CamlocValueError(
        "`path` must be a dataset folder in a known layout (wsolevaluation metadata, CUB-200-2011, Tiny-ImageNet, "
        "Kaggle ILSVRC, PASCAL VOC, ILSVRC XML, simple CSV, COCO instances JSON); got "
        f"{p} holding {sorted(x.name for x in p.iterdir())[:10]}"
    )


def read_dataset(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    split: str | None = None,
    **options: Any,
) -> AnnotationSet:
    """Read annotations with the reader of ``format`` (``"auto"``: :func:`detect_format`).

    ``split`` (when given) and ``options`` are passed to the reader (see ``read_<format>``); each reader
    keeps its own default split when ``split`` is None.
    """
    p = as_path("path", path)
    if not isinstance(format, str):
        fail("format", "a str", format, type_error=True)
    fmt = detect_format(p) if format == "auto" else format
    if fmt not in FORMATS:
        fail("format", "'auto' or one of " + ", ".join(repr(f) for f in FORMATS), format)
    reader = FORMATS[fmt]
    params = inspect.signature(reader).parameters
    if split is not None:
        options["split"] = split
    unknown = sorted(k for k in options if k not in params or k == "path")
    if unknown:
        allowed = ", ".join(k for k in params if k != "path")
        raise CamlocTypeError(f"`options` must be options of {reader.__name__} ({allowed}); got {', '.join(unknown)}")
    return reader(p, **options)
