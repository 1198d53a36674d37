"""CAM boxes as detections: COCO results / instances files and YOLO label files (pure functions + writers).

Input: explain's per-image results, as :class:`camloc.explain.ImageResult` objects or as ``results.jsonl`` rows
(``{"path", "width", "height", "topk": [{"rank", "class_idx", "name", "prob", "box": [x0, y0, x1, y1]}]}``; the
Ray engine writes the same rows). Boxes are xyxy in original image pixels (:mod:`camloc.geometry`); ``(0, 0, 0,
0)`` (no box: the map has no positive value) is never exported, nor is a box of zero width or height. Which of an
image's top-k boxes go out: the first ``topk`` ranks whose softmax probability is ``>= min_score``.

COCO (:func:`coco_results`, :func:`coco_instances`): ``image_id`` is the 1-based position of the image in the
records, ``category_id = class_idx + 1`` (COCO ids start at 1; every class of the model is a category, named by
the model's class names, with ``camloc_class_idx``), ``bbox = [x0, y0, x1 - x0, y1 - y0]`` and ``score`` the
probability, from the same rounded numbers as ``results.jsonl``. ``detections.json`` is the COCO *results* list;
``instances.json`` is a complete COCO *instances* file (``images`` with ``file_name`` relative to the images' common
folder, ``width``, ``height`` and ``path``; ``categories``; ``annotations`` = the detections, with ``area`` and
``iscrowd: 0``), so both load in pycocotools::

    gt = COCO("instances.json"); dt = gt.loadRes("detections.json")

and ``instances.json`` is at once a pseudo-label training set for a detector and ``camloc evaluate``-able.

YOLO (:func:`yolo_lines`, :func:`write_yolo`): one ``labels/<stem>.txt`` per image (also for images without a
box: an empty file, a background image), lines ``class cx cy w h`` with ``class = class_idx`` and the centre and
size divided by the ORIGINAL image width / height (boxes clipped to the image first; 6 decimals), and
``classes.txt`` (line ``i`` = name of class ``i``); ``images.txt`` lists ``<image path>\\t<label file>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camloc._checks import check_number, fail

__all__ = [
    "EXPORT_FORMATS",
    "Detection",
    "DetectionRecord",
    "as_record",
    "coco_instances",
    "coco_results",
    "select_boxes",
    "write_coco",
    "write_detections",
    "write_yolo",
    "yolo_lines",
]

EXPORT_FORMATS = ("coco", "yolo")


@dataclass(frozen=True)
class Detection:
    """One exported box: ``class_idx``, probability ``score``, ``box`` xyxy in original pixels, ``rank`` in top-k."""

    class_idx: int
    score: float
    box: tuple[float, float, float, float]
    rank: int


@dataclass(frozen=True)
class DetectionRecord:
    """One image: ``path``, original ``(width, height)`` and its top-k ``boxes`` in rank order (unfiltered)."""

    path: Path
    size: tuple[int, int]
    boxes: tuple[Detection, ...]


def _row_box(row: Any, where: str) -> Detection:
    try:
        box = tuple(float(v) for v in row["box"])
        det = Detection(int(row["class_idx"]), float(row["prob"]), box, int(row["rank"]))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        fail(where, "a top-k entry with rank, class_idx, prob and a 4-number box", row)
    if len(det.box) != 4:
        fail(where, "a box of 4 numbers [x0, y0, x1, y1]", row.get("box"))
    return det


def as_record(result: Any) -> DetectionRecord:
    """A :class:`DetectionRecord` from an :class:`camloc.explain.ImageResult` or a ``results.jsonl`` row.

    Numbers are those of ``results.jsonl`` (``ImageResult.to_dict()``: probabilities to 6 decimals, boxes to 2),
    so an export equals the JSONL file whichever form it was given.
    """
    if isinstance(result, DetectionRecord):
        return result
    row = result.to_dict() if hasattr(result, "to_dict") and hasattr(result, "topk") else result
    if not isinstance(row, Mapping):
        fail("results", "ImageResult objects or results.jsonl rows (dicts)", result, type_error=True)
    if "error" in row and "topk" not in row:
        fail("results", "explained images (a failure row has no boxes)", f"the failure row of {row.get('path')}")
    try:
        path, size = Path(row["path"]), (int(row["width"]), int(row["height"]))
        topk = row["topk"]
    except (KeyError, TypeError, ValueError):
        fail("results", "rows with path, width, height and topk (results.jsonl)", dict(row))
    boxes = tuple(_row_box(t, f"topk of {path}") for t in topk)
    return DetectionRecord(path, size, tuple(sorted(boxes, key=lambda d: d.rank)))


def _check_selection(topk: int | None, min_score: float) -> None:
    if topk is not None:
        check_number("topk", topk, low=1, integer=True)
    check_number("min_score", min_score, low=0.0, high=1.0)


def select_boxes(record: DetectionRecord, *, topk: int | None = 1, min_score: float = 0.0) -> list[Detection]:
    """The boxes of ``record`` that go out: ranks ``1..topk`` (None: all) with ``score >= min_score`` and a box of
    positive width and height."""
    _check_selection(topk, min_score)
    out = []
    for d in record.boxes:
        if topk is not None and d.rank > topk:
            continue
        x0, y0, x1, y1 = d.box
        if d.score >= min_score and x1 > x0 and y1 > y0:
            out.append(d)
    return out


def _categories(categories: Sequence[str]) -> list[dict[str, Any]]:
    if isinstance(categories, str) or not isinstance(categories, Sequence) or not categories:
        fail("categories", "a non-empty sequence of class names (class-index order)", categories, type_error=True)
    return [{"id": i + 1, "name": str(n), "supercategory": "", "camloc_class_idx": i} for i, n in enumerate(categories)]


def _check_class(d: Detection, n: int, path: Path) -> None:
    if not 0 <= d.class_idx < n:
        fail("categories", f"names for every class index (class {d.class_idx} of {path})", f"{n} names")


def coco_results(
    results: Iterable[Any], categories: Sequence[str], *, topk: int | None = 1, min_score: float = 0.0
) -> list[dict[str, Any]]:
    """COCO results list ``[{image_id, category_id, bbox [x, y, w, h], score}]`` (module docstring)."""
    _check_selection(topk, min_score)
    cats = _categories(categories)
    out = []
    for image_id, rec in enumerate((as_record(r) for r in results), start=1):
        for d in select_boxes(rec, topk=topk, min_score=min_score):
            _check_class(d, len(cats), rec.path)
            x0, y0, x1, y1 = d.box
            out.append(
                {
                    "image_id": image_id,
                    "category_id": d.class_idx + 1,
                    "bbox": [x0, y0, round(x1 - x0, 6), round(y1 - y0, 6)],
                    "score": d.score,
                }
            )
    return out


def coco_instances(
    results: Iterable[Any],
    categories: Sequence[str],
    *,
    topk: int | None = 1,
    min_score: float = 0.0,
    root: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """A COCO instances document whose annotations are the selected boxes (module docstring).

    ``root``: the folder ``file_name`` is relative to (default: the images' common folder).
    """
    records = [as_record(r) for r in results]
    dets = coco_results(records, categories, topk=topk, min_score=min_score)
    from camloc.cli import _common_root

    base = Path(root).resolve() if root is not None else _common_root([r.path for r in records])
    images = []
    for image_id, rec in enumerate(records, start=1):
        try:
            name = rec.path.resolve().relative_to(base).as_posix() if base is not None else rec.path.name
        except ValueError:
            name = rec.path.name
        images.append(
            {"id": image_id, "file_name": name, "width": rec.size[0], "height": rec.size[1], "path": str(rec.path)}
        )
    anns = []
    for i, d in enumerate(dets, start=1):
        w, h = d["bbox"][2], d["bbox"][3]
        anns.append({"id": i, **d, "area": round(w * h, 4), "iscrowd": 0})
    return {
        "info": {"description": "camloc CAM boxes (pseudo-labels)", "version": _version()},
        "images": images,
        "annotations": anns,
        "categories": _categories(categories),
    }


def _version() -> str:
    from camloc import __version__

    return __version__


def yolo_lines(record: Any, *, topk: int | None = 1, min_score: float = 0.0) -> list[str]:
    """YOLO label lines ``"class cx cy w h"`` of one image, normalised by its original size (module docstring)."""
    rec = as_record(record)
    width, height = rec.size
    lines = []
    for d in select_boxes(rec, topk=topk, min_score=min_score):
        x0, y0, x1, y1 = d.box
        x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
        y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
        if x1 <= x0 or y1 <= y0:
            continue
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        lines.append(f"{d.class_idx} {cx:.6f} {cy:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return lines


def write_coco(
    out_dir: str | os.PathLike[str],
    results: Iterable[Any],
    categories: Sequence[str],
    *,
    topk: int | None = 1,
    min_score: float = 0.0,
    root: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``detections.json`` (COCO results) and ``instances.json`` (COCO instances) into ``out_dir``."""
    from camloc._io import atomic_write_json

    out = Path(out_dir)
    doc = coco_instances(results, categories, topk=topk, min_score=min_score, root=root)
    dets = [{k: a[k] for k in ("image_id", "category_id", "bbox", "score")} for a in doc["annotations"]]
    atomic_write_json(out / "detections.json", dets, indent=None)
    atomic_write_json(out / "instances.json", doc, indent=None)
    return out / "detections.json", out / "instances.json"


def write_yolo(
    out_dir: str | os.PathLike[str],
    results: Iterable[Any],
    categories: Sequence[str],
    *,
    stems: Sequence[str] | None = None,
    topk: int | None = 1,
    min_score: float = 0.0,
) -> Path:
    """Write ``labels/<stem>.txt`` per image, ``classes.txt`` and ``images.txt`` into ``out_dir``; return
    ``labels/``.

    ``stems``: the label file names (without ``.txt``), one per record, e.g. the overlays' names; default: the
    path relative to the images' common folder with ``/`` as ``__`` (made unique with ``_`` suffixes).
    """
    from camloc._io import atomic_open, atomic_write_text
    from camloc.cli import _common_root, _safe_name

    _categories(categories)
    _check_selection(topk, min_score)
    records = [as_record(r) for r in results]
    if stems is None:
        root = _common_root([r.path for r in records])
        used: set[str] = set()
        names = []
        for r in records:
            s = _safe_name(r.path, root)
            while s in used:
                s += "_"
            used.add(s)
            names.append(s)
    else:
        names = [str(s) for s in stems]
        if len(names) != len(records) or len(set(names)) != len(names):
            fail("stems", f"{len(records)} distinct names, one per image", f"{len(names)} ({len(set(names))} distinct)")
    out = Path(out_dir)
    listing = []
    for rec, stem in zip(records, names):
        lines = yolo_lines(rec, topk=topk, min_score=min_score)
        for d in select_boxes(rec, topk=topk, min_score=min_score):
            _check_class(d, len(categories), rec.path)
        label = out / "labels" / f"{stem}.txt"
        with atomic_open(label, "w", fsync=False) as fh:  # many small files: atomic, not fsynced one by one
            fh.write("".join(line + "\n" for line in lines))
        listing.append(f"{rec.path}\tlabels/{stem}.txt\n")
    atomic_write_text(out / "classes.txt", "".join(f"{n}\n" for n in categories))
    atomic_write_text(out / "images.txt", "".join(listing))
    return out / "labels"


def write_detections(
    out_dir: str | os.PathLike[str],
    results: Iterable[Any],
    categories: Sequence[str],
    *,
    formats: Sequence[str],
    stems: Sequence[str] | None = None,
    topk: int | None = 1,
    min_score: float = 0.0,
) -> dict[str, list[str]]:
    """Write each of ``formats`` (``"coco"``, ``"yolo"``) into ``out_dir``; return ``{format: [files, relative]}``.

    The entry point of ``camloc explain --export`` (and of the Ray engine: pass its ``results.jsonl`` rows).
    """
    for f in formats:
        if f not in EXPORT_FORMATS:
            fail("export", "one of " + ", ".join(repr(x) for x in EXPORT_FORMATS), f)
    records = [as_record(r) for r in results]
    written: dict[str, list[str]] = {}
    if "coco" in formats:
        write_coco(out_dir, records, categories, topk=topk, min_score=min_score)
        written["coco"] = ["detections.json", "instances.json"]
    if "yolo" in formats:
        write_yolo(out_dir, records, categories, stems=stems, topk=topk, min_score=min_score)
        written["yolo"] = ["labels/", "classes.txt", "images.txt"]
    return written
