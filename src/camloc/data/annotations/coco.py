"""COCO instances JSON (``images``, ``annotations`` with ``bbox``, ``categories``): ``coco``.

The file's categories become camloc class indices in this order of precedence:

1. ``class_map``: an explicit ``{category id or name: class index}`` (a dict or a JSON file); annotations of
   categories it does not name are ignored (e.g. the COCO classes an ImageNet model has no class for);
2. ``classes``: the model's class names in class-index order (``camloc evaluate`` passes them): a category whose
   ``camloc_class_idx`` (files written by ``camloc explain --export coco``) names a class of that name takes that
   index, any other its name's index (exact, else case-insensitive); a category used by an annotation whose name
   is not among the classes, or is there twice, is an error that asks for ``class_map``;
3. neither: ``camloc_class_idx`` when every category has it, else the categories sorted by id are classes
   ``0..C-1`` (their names the class names).

Per image, annotations with ``iscrowd: 1`` are ignored; the image's class is the class of its FIRST remaining
annotation (file order) and ``boxes`` holds that class's boxes, as for the other multi-object formats
(:mod:`camloc.data.annotations`). Images with no remaining annotation have no label and are left out.
``bbox = [x, y, width, height]`` (floats, pixels of the stored image) becomes ``(x, y, x + width, y + height)``.

Image files: ``images=`` / the folder of the file, with ``file_name`` below it; for
``annotations/instances_<split>.json`` (the COCO layout) ``<root>/<split>/`` when it holds the first image; an
image entry with a ``path`` (camloc's own files) that exists is taken as it is.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camloc.data._io import FileIndex, as_path, check_box, check_exists, fail, require_file
from camloc.data.annotations.records import AnnotationSet, Sample, _check_flag
from camloc.errors import AnnotationError


def find_coco_file(path: Path, split: str | None) -> Path | None:
    """The instances file of a folder: ``annotations/instances_<split>.json``, ``instances.json``, or the one
    ``annotations/instances_*.json``; None if there is none (or several and no ``split``)."""
    if split is not None:
        for cand in (path / "annotations" / f"instances_{split}.json", path / f"instances_{split}.json"):
            if cand.is_file():
                return cand
        return None
    if (path / "instances.json").is_file():
        return path / "instances.json"
    found = sorted((path / "annotations").glob("instances_*.json")) if (path / "annotations").is_dir() else []
    return found[0] if len(found) == 1 else None


def is_coco_file(path: Path) -> bool:
    """Whether ``path`` looks like a COCO instances file: a ``.json`` object naming ``images``, ``annotations`` or
    ``categories`` in its first MiB (a cheap test; :func:`read_coco` checks the whole file)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20).decode("utf-8-sig", errors="ignore")
    except OSError:
        return False
    return head.lstrip().startswith("{") and any(f'"{k}"' in head for k in ("images", "annotations", "categories"))


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise AnnotationError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(path, e.lineno, f"malformed JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(doc, dict):
        raise AnnotationError(
            path, None, f"expected a JSON object with images, annotations, categories; got {type(doc).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise AnnotationError(path, None, f"expected a list {key!r} (COCO instances format)")
    return doc


def _field(path: Path, where: str, obj: Any, key: str, kinds: tuple[type, ...]) -> Any:
    if not isinstance(obj, dict):
        raise AnnotationError(path, None, f"{where} must be an object; got {type(obj).__name__}")
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise AnnotationError(
            path, None, f"{where} needs {key!r} ({'/'.join(k.__name__ for k in kinds)}); got {value!r}"
        )
    return value


def _read_class_map(class_map: Any) -> dict[str, int]:
    """``{str(category id or name): class index}`` from a mapping or a JSON file holding one."""
    if isinstance(class_map, str | os.PathLike):
        p = require_file(Path(class_map), "a JSON object {category id or name: class index}")
        try:
            class_map = json.loads(p.read_text(encoding="utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as e:
            raise AnnotationError(p, None, f"malformed JSON ({e})") from None
    if not isinstance(class_map, Mapping):
        fail(
            "class_map",
            "a mapping {category id or name: class index} or a JSON file of one",
            class_map,
            type_error=True,
        )
    out = {}
    for k, v in class_map.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            fail("class_map", "class indices >= 0 as values", f"{k!r}: {v!r}")
        out[str(k)] = int(v)
    return out


def _category_classes(
    path: Path, cats: list[dict[str, Any]], used: set[int], classes: Sequence[str] | None, class_map: Any
) -> tuple[dict[int, int], tuple[str, ...] | None]:
    """``(category id -> class index, class names)`` following the module docstring's precedence."""
    if class_map is not None:
        cmap = _read_class_map(class_map)
        out: dict[int, int] = {}
        for c in cats:
            idx = cmap.get(str(c["id"]), cmap.get(str(c["name"])))
            if idx is not None:
                out[c["id"]] = idx
        names = tuple(classes) if classes is not None else None
        return out, names
    own = [c.get("camloc_class_idx") for c in cats]
    has_own = bool(cats) and all(isinstance(i, int) and not isinstance(i, bool) for i in own)
    if classes is not None:
        names = tuple(str(n) for n in classes)
        exact: dict[str, list[int]] = {}
        folded: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            exact.setdefault(n, []).append(i)
            folded.setdefault(n.casefold(), []).append(i)
        out = {}
        unknown: list[str] = []
        ambiguous: list[str] = []
        for c in cats:
            j = c.get("camloc_class_idx")
            if isinstance(j, int) and 0 <= j < len(names) and names[j] == c["name"]:
                out[c["id"]] = j
                continue
            hits = exact.get(c["name"]) or folded.get(str(c["name"]).casefold()) or []
            if len(hits) == 1:
                out[c["id"]] = hits[0]
            elif c["id"] in used:
                (ambiguous if hits else unknown).append(repr(c["name"]))
        if unknown or ambiguous:
            what = []
            if unknown:
                what.append(f"categories not among the model's {len(names)} class names: {', '.join(unknown[:8])}")
            if ambiguous:
                what.append(f"names the model has twice: {', '.join(ambiguous[:8])}")
            raise AnnotationError(
                path, None, "; ".join(what) + " (give `class_map` / --class-map: {category id or name: class index})"
            )
        return out, names
    if has_own:
        order = sorted(cats, key=lambda c: c["camloc_class_idx"])
        n = max(c["camloc_class_idx"] for c in cats) + 1
        names_list = [f"class_{i}" for i in range(n)]
        for c in order:
            names_list[c["camloc_class_idx"]] = str(c["name"])
        return {c["id"]: c["camloc_class_idx"] for c in cats}, tuple(names_list)
    order = sorted(cats, key=lambda c: c["id"])
    return {c["id"]: i for i, c in enumerate(order)}, tuple(str(c["name"]) for c in order)


def _image_root(path: Path, images: Any, first: str | None) -> Path:
    if images is not None:
        return as_path("images", images)
    ann_dir = path.parent
    stem = path.stem
    if ann_dir.name == "annotations" and stem.startswith("instances_") and first is not None:
        cand = ann_dir.parent / stem[len("instances_") :]
        if (cand / first).is_file():
            return cand
    return ann_dir


def read_coco(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    images: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
    class_map: Mapping[Any, int] | str | os.PathLike[str] | None = None,
    check_files: bool = True,
) -> AnnotationSet:
    """Read a COCO instances file (module docstring for the class mapping, crowds and several objects).

    Args:
        path: the ``.json`` file, or a folder holding ``instances.json`` / ``annotations/instances_<split>.json``.
        split: with a folder: read ``annotations/instances_<split>.json`` (e.g. ``"val2017"``).
        images: the folder ``file_name`` is relative to (default: see the module docstring).
        classes: class names in class-index order (e.g. the model's ``info.categories``).
        class_map: ``{category id or name: class index}`` or a JSON file of it (wins over ``classes``).
        check_files: raise if an image file is missing.
    """
    p = as_path("path", path)
    _check_flag("check_files", check_files)
    if split is not None and not isinstance(split, str):
        fail("split", "None or a str", split, type_error=True)
    if p.is_dir():
        found = find_coco_file(p, split)
        if found is None:
            want = (
                f"annotations/instances_{split}.json" if split else "instances.json or one annotations/instances_*.json"
            )
            raise AnnotationError(p, None, f"folder has no COCO instances file (expected {want})")
        p = found
    elif split is not None:
        fail("split", "None when `path` is a JSON file", repr(split))
    if classes is not None and (isinstance(classes, str) or not isinstance(classes, Sequence)):
        fail("classes", "a sequence of class names in class-index order", classes, type_error=True)
    require_file(p, "a COCO instances JSON file")
    doc = _load(p)
    cats: list[dict[str, Any]] = []
    for i, c in enumerate(doc["categories"]):
        _field(p, f"categories[{i}]", c, "id", (int,))
        _field(p, f"categories[{i}]", c, "name", (str,))
        cats.append(c)
    cat_ids = {c["id"] for c in cats}
    imgs: dict[Any, dict[str, Any]] = {}
    for i, im in enumerate(doc["images"]):
        iid = _field(p, f"images[{i}]", im, "id", (int, str))
        _field(p, f"images[{i}] (id {iid})", im, "file_name", (str,))
        if iid in imgs:
            raise AnnotationError(p, None, f"images[{i}]: duplicate image id {iid!r}")
        imgs[iid] = im
    anns: list[tuple[int, dict[str, Any]]] = []
    used: set[int] = set()
    for i, a in enumerate(doc["annotations"]):
        where = f"annotations[{i}]"
        iid = _field(p, where, a, "image_id", (int, str))
        cid = _field(p, where, a, "category_id", (int,))
        if iid not in imgs:
            raise AnnotationError(p, None, f"{where}: unknown image_id {iid!r} (not in images)")
        if cid not in cat_ids:
            raise AnnotationError(p, None, f"{where}: unknown category_id {cid} (not in categories)")
        if a.get("iscrowd", 0) in (1, True):
            continue
        anns.append((i, a))
        used.add(cid)
    class_of, names = _category_classes(p, cats, used, classes, class_map)
    per_image: dict[Any, list[tuple[int, tuple[float, float, float, float]]]] = {}
    for i, a in anns:
        cidx = class_of.get(a["category_id"])
        if cidx is None:
            continue
        if names is not None and cidx >= len(names):
            raise AnnotationError(p, None, f"annotations[{i}]: class index {cidx} out of range ({len(names)} classes)")
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_finite(v) for v in bbox):
            raise AnnotationError(
                p, None, f"annotations[{i}]: bbox must be [x, y, width, height] numbers; got {bbox!r}"
            )
        x, y, w, h = (float(v) for v in bbox)
        if w < 0 or h < 0:
            raise AnnotationError(p, None, f"annotations[{i}]: bbox width and height must be >= 0; got {w}, {h}")
        per_image.setdefault(a["image_id"], []).append((cidx, check_box(p, None, (x, y, x + w, y + h))))
    first = next((imgs[k]["file_name"] for k in imgs if k in per_image), None)
    root = _image_root(p, images, first)
    files = FileIndex()
    samples = []
    for iid, im in imgs.items():
        objs = per_image.get(iid)
        if not objs:
            continue
        cidx = objs[0][0]
        own = im.get("path")
        image = Path(own) if isinstance(own, str) and images is None and Path(own).is_file() else root / im["file_name"]
        if check_files:
            check_exists(files, image, p, None, hint=f" (images[id {iid!r}]; pass `images=` for the image folder)")
        iw, ih = im.get("width"), im.get("height")
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (iw, ih))
        size = (int(iw), int(ih)) if ok else None  # type: ignore[arg-type]
        boxes = np.asarray([b for c, b in objs if c == cidx], np.float32).reshape(-1, 4)
        samples.append(Sample(im["file_name"], image, cidx, boxes, size))  # type: ignore[arg-type]
    return AnnotationSet(tuple(samples), names, "coco", p.parent, None)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
