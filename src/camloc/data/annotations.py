"""Readers for localization-dataset annotations, returning plain records (numpy, no torch).

Every reader returns an :class:`AnnotationSet` of :class:`Sample` records: image path, class index and the
ground-truth boxes ``float32 [G, 4]`` in the project box convention, in ORIGINAL image pixels:
``(x0, y0, x1, y1)`` continuous coordinates where pixel (row i, column j) covers ``[j, j+1) x [i, i+1)``;
a box covering pixel columns c0..c1 and rows r0..r1 inclusive is ``(c0, r0, c1 + 1, r1 + 1)``.

How each source is converted (boxes are never clipped to the image, never rounded):

=================  ================================================  ===========================================
format             source corners                                    stored box
=================  ================================================  ===========================================
``ilsvrc_xml``     ``<xmin> <ymin> <xmax> <ymax>``                   as-is (the de-facto WSOL convention)
``ilsvrc_csv``     Kaggle ``LOC_*_solution.csv``: "wnid x0 y0 x1 y1"  as-is (same numbers as the XML)
``voc``            1-based inclusive pixel indices                   ``(xmin-1, ymin-1, xmax, ymax)``, x0/y0
                                                                     clipped at 0 (``one_based=False``: as-is)
``cub``            ``x y width height`` (floats)                     ``(x, y, x + width, y + height)``
``wsol``           wsolevaluation ``localization.txt``: x0,y0,x1,y1  as-is
``tiny_imagenet``  inclusive pixel indices x0 y0 x1 y1 (0..63)       ``(x0, y0, x1 + 1, y1 + 1)``
``csv``            ``x0,y0,x1,y1`` columns                           as-is
=================  ================================================  ===========================================

One class per image: weakly-supervised evaluation assumes it. For XML sources (VOC, ILSVRC) and the Kaggle CSV
the image's class is the class of its FIRST object and ``boxes`` holds only the boxes of that class; for the
row-per-box sources (CSV, Tiny-ImageNet) rows of one image with different classes are an error.

Malformed files raise :class:`camloc.errors.AnnotationError` naming the file, the 1-based line and the
problem; missing required files raise it naming the file that was expected.
"""

from __future__ import annotations

import csv
import inspect
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from camloc.data._io import (
    LABEL_FILE_NAMES,
    WNID_RE,
    ClassList,
    FileIndex,
    XmlRecord,
    as_path,
    check_box,
    check_exists,
    fail,
    fields,
    find_labels_file,
    integer,
    number,
    read_class_list,
    read_text,
    read_voc_xml,
    require_dir,
    require_file,
    resolve_classes,
    text_lines,
)
from camloc.errors import AnnotationError, CamlocTypeError, CamlocValueError

__all__ = [
    "FORMATS",
    "AnnotationSet",
    "ClassList",
    "Sample",
    "detect_format",
    "read_class_list",
    "read_csv",
    "read_cub",
    "read_dataset",
    "read_ilsvrc_csv",
    "read_ilsvrc_xml",
    "read_tiny_imagenet",
    "read_voc",
    "read_wsol",
]

TINY_IMAGENET_SIZE = (64, 64)
_CSV_CLASS_FILES = ("classes.txt", *LABEL_FILE_NAMES)


# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True, eq=False)
class Sample:
    """One annotated image.

    Attributes:
        image_id: dataset-unique key (the path as written in the annotation, or the file stem for XML/Kaggle).
        path: image file path (absolute when the reader was given an absolute root).
        class_idx: 0-based class index.
        boxes: ``float32 [G, 4]`` read-only array of ``(x0, y0, x1, y1)`` boxes in original image pixels
            (project box convention); ``G`` may be 0 (e.g. mask-only samples).
        size: ``(width, height)`` of the image when the annotation states it, else None.
        mask_paths: ground-truth foreground mask files (PxAP; e.g. OpenImages in wsolevaluation).
        ignore_path: mask of pixels to ignore in PxAP, or None.

    Equality compares every field (boxes by value).
    """

    image_id: str
    path: Path
    class_idx: int
    boxes: np.ndarray
    size: tuple[int, int] | None = None
    mask_paths: tuple[Path, ...] = ()
    ignore_path: Path | None = None

    def __post_init__(self) -> None:
        boxes = np.array(self.boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            fail("boxes", "an array of shape [G, 4]", boxes)
        boxes.setflags(write=False)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "path", Path(self.path))
        if isinstance(self.class_idx, bool) or not isinstance(self.class_idx, (int, np.integer)):
            fail("class_idx", "an integer", self.class_idx, type_error=True)
        if self.class_idx < 0:
            fail("class_idx", ">= 0", self.class_idx)
        object.__setattr__(self, "class_idx", int(self.class_idx))
        if self.size is not None:
            size = tuple(self.size)
            if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
                fail("size", "None or a (width, height) pair of positive integers", self.size)
            object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        object.__setattr__(self, "mask_paths", tuple(Path(p) for p in self.mask_paths))
        if self.ignore_path is not None:
            object.__setattr__(self, "ignore_path", Path(self.ignore_path))

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sample):
            return NotImplemented
        return (
            self.image_id == other.image_id
            and self.path == other.path
            and self.class_idx == other.class_idx
            and np.array_equal(self.boxes, other.boxes)
            and self.size == other.size
            and self.mask_paths == other.mask_paths
            and self.ignore_path == other.ignore_path
        )

    def __hash__(self) -> int:
        return hash((self.image_id, self.path, self.class_idx))


@dataclass(frozen=True)
class AnnotationSet:
    """The result of a reader: samples in annotation-file order plus class metadata.

    Attributes:
        samples: the records.
        class_names: human-readable name of each class index, or None when the source gives none.
        format: the reader that produced it (one of :data:`FORMATS`).
        root: the folder the annotations were read from.
        wnids: WordNet ids in class-index order for ImageNet-style sources (ILSVRC, Tiny-ImageNet, a CSV with
            a wnid labels file), else None.
    """

    samples: tuple[Sample, ...]
    class_names: tuple[str, ...] | None
    format: str
    root: Path
    wnids: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    @property
    def num_boxes(self) -> int:
        """Total number of ground-truth boxes over all samples."""
        return sum(s.num_boxes for s in self.samples)

    @property
    def num_classes(self) -> int | None:
        """``len(class_names)`` when known, else None."""
        return None if self.class_names is None else len(self.class_names)


class _Builder:
    """Accumulates the rows of one image (row-per-box sources)."""

    def __init__(self, image_id: str, path: Path, class_idx: int, line: int) -> None:
        self.image_id = image_id
        self.path = path
        self.class_idx = class_idx
        self.line = line
        self.boxes: list[tuple[float, float, float, float]] = []
        self.size: tuple[int, int] | None = None
        self.masks: list[Path] = []
        self.ignore: Path | None = None

    def sample(self) -> Sample:
        return Sample(
            self.image_id,
            self.path,
            self.class_idx,
            np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4),
            self.size,
            tuple(self.masks),
            self.ignore,
        )


def _set_class(builders: dict[str, _Builder], key: str, path: Path, class_idx: int, ann: Path, line: int) -> _Builder:
    """Get or create the builder of ``key``; a different class on a later row is an error."""
    b = builders.get(key)
    if b is None:
        b = builders[key] = _Builder(key, path, class_idx, line)
    elif b.class_idx != class_idx:
        raise AnnotationError(
            ann, line, f"conflicting class for {key!r}: {class_idx} here, {b.class_idx} at line {b.line}"
        )
    return b


def _check_split(split: Any, choices: Sequence[str]) -> str:
    if split not in choices:
        fail("split", "one of " + ", ".join(repr(c) for c in choices), repr(split))
    return split


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        fail(name, "a bool", value, type_error=True)
    return value


def _class_meta(cl: ClassList | None) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """``(class_names, wnids)`` of an AnnotationSet from a class list."""
    if cl is None:
        return None, None
    return cl.names, (cl.keys if cl.has_wnids else None)


def _lookup(cl: ClassList, index: dict[str, int], key: str, ann: Path, line: int | None, what: str) -> int:
    idx = index.get(key)
    if idx is None:
        src = f"labels file {cl.path}" if cl.path is not None else "`classes`"
        raise AnnotationError(ann, line, f"unknown {what} {key!r} (not in {src})")
    return idx


# ------------------------------------------------------------------------------------------ ILSVRC (XML)

_ILSVRC_XML_DIRS = ("bbox", "Annotations", "annotations", "xml", "val_bbox")


def _has_xml(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() == ".xml" for p in folder.iterdir())


def _ilsvrc_xml_dirs(path: Path, split: str) -> tuple[Path, Path]:
    """``(xml_dir, root)``: ``path`` itself when it holds XML files, else a known sub-folder."""
    if _has_xml(path):
        return path, path.parent
    candidates = [
        *(path / d for d in _ILSVRC_XML_DIRS),
        path / "Annotations" / "CLS-LOC" / split,
        path / "ILSVRC" / "Annotations" / "CLS-LOC" / split,
    ]
    for c in candidates:
        if c.is_dir():
            return c, path
    looked = ", ".join(str(c.relative_to(path)) for c in candidates)
    raise AnnotationError(path, None, f"no ILSVRC XML annotation files here or in: {looked}")


def _xml_files(xml_dir: Path) -> list[Path]:
    return sorted(p for p in xml_dir.rglob("*") if p.suffix.lower() == ".xml" and p.is_file())


def read_ilsvrc_xml(
    path: str | os.PathLike[str],
    *,
    split: str = "val",
    image_dir: str | os.PathLike[str] | None = None,
    classes: str | os.PathLike[str] | Sequence[str] | None = None,
    check_files: bool = True,
) -> AnnotationSet:
    """Read ILSVRC (ImageNet) per-image PASCAL-VOC XML files (``ILSVRC2012_val_00000001.xml``).

    Args:
        path: the folder of XML files, or a dataset root holding one of ``bbox/``, ``Annotations/``, ``xml/``,
            ``val_bbox/`` or the Kaggle ``[ILSVRC/]Annotations/CLS-LOC/<split>/`` layout. XML files are found
            recursively (sorted by path).
        split: sub-folder used by the Kaggle layout only (``"val"``).
        image_dir: folder of the images; default: the first of the XML folder itself, ``<root>/<split>``,
            ``<root>/images``, ``<root>/JPEGImages``, ``<root>/[ILSVRC/]Data/CLS-LOC/<split>`` that holds the
            first file's image. Sub-folders of the XML folder are mirrored under it.
        classes: class order: a labels file (``"wnid name..."`` or ``"wnid"`` lines) or a sequence of wnids.
            Default: ``synset_words.txt`` / ``LOC_synset_mapping.txt`` / ``wnids.txt`` / ``synsets.txt``
            searched in the XML folder, its parent and the root. Class index = line index of the wnid.
        check_files: raise if an image file is missing.

    Boxes: the XML corners are used as-is (the de-facto WSOL convention). Class: the first object's wnid;
    boxes: every object with that wnid. ``size`` from ``<size>`` when present.
    """
    root_in = as_path("path", path)
    if not isinstance(split, str):
        fail("split", "a str", split, type_error=True)
    _check_flag("check_files", check_files)
    require_dir(root_in, "a folder of ILSVRC XML files or a dataset root")
    xml_dir, root = _ilsvrc_xml_dirs(root_in, split)
    files = _xml_files(xml_dir)
    if not files:
        raise AnnotationError(xml_dir, None, "folder has no .xml annotation files")
    cl = resolve_classes(classes)
    if cl is None:
        found = find_labels_file([xml_dir, xml_dir.parent, root_in, root])
        if found is None:
            raise AnnotationError(
                root_in,
                None,
                "no labels file giving the class order (expected one of "
                + ", ".join(LABEL_FILE_NAMES)
                + " next to the annotations); pass `classes=`",
            )
        cl = read_class_list(found)
    index = cl.index_of()
    records = [(f, read_voc_xml(f, one_based=False)) for f in files]
    img_dir = _resolve_image_dir(
        image_dir,
        records[0],
        xml_dir,
        [
            xml_dir,
            root / split,
            root / "images",
            root / "JPEGImages",
            root / "Data" / "CLS-LOC" / split,
            root / "ILSVRC" / "Data" / "CLS-LOC" / split,
        ],
        check_files,
    )
    samples = _xml_samples(records, xml_dir, img_dir, cl, index, "wnid", check_files, ".JPEG")
    names, wnids = _class_meta(cl)
    return AnnotationSet(tuple(samples), names, "ilsvrc_xml", root_in, wnids)


def _resolve_image_dir(
    image_dir: Any,
    first: tuple[Path, XmlRecord],
    xml_dir: Path,
    candidates: Sequence[Path],
    check_files: bool,
) -> Path:
    if image_dir is not None:
        return require_dir(as_path("image_dir", image_dir), "the image folder")
    xml_path, rec = first
    rel = xml_path.parent.relative_to(xml_dir)
    index = FileIndex()
    for c in candidates:
        if index.find_image(c / rel, rec.filename, xml_path.stem) is not None:
            return c
    if not check_files:
        return xml_dir
    looked = ", ".join(str(c) for c in candidates)
    raise AnnotationError(
        xml_path, None, f"cannot find its image {xml_path.stem}.* in any of: {looked}; pass `image_dir=`"
    )


def _xml_samples(
    records: list[tuple[Path, XmlRecord]],
    xml_dir: Path,
    img_dir: Path,
    cl: ClassList,
    index: dict[str, int],
    what: str,
    check_files: bool,
    default_ext: str,
    skip_difficult: bool = False,
) -> list[Sample]:
    files = FileIndex()
    samples = []
    for xml_path, rec in records:
        objects = [o for o in rec.objects if not (skip_difficult and o.difficult)]
        if not objects:
            if skip_difficult and rec.objects:
                continue  # only difficult objects: the image is left out
            raise AnnotationError(xml_path, None, "no <object> in the annotation")
        first = objects[0]
        class_idx = _lookup(cl, index, first.name, xml_path, first.line, what)
        for o in objects[1:]:  # every name must be known, even the ones whose boxes are dropped
            _lookup(cl, index, o.name, xml_path, o.line, what)
        boxes = [o.box for o in objects if o.name == first.name]
        folder = img_dir / xml_path.parent.relative_to(xml_dir)
        image = files.find_image(folder, rec.filename, xml_path.stem)
        if image is None:
            if check_files:
                raise AnnotationError(xml_path, None, f"references a missing image file: {folder / xml_path.stem}.*")
            name = rec.filename if rec.filename and Path(rec.filename).suffix else xml_path.stem + default_ext
            image = folder / name
        image_id = xml_path.relative_to(xml_dir).with_suffix("").as_posix()
        samples.append(Sample(image_id, image, class_idx, np.asarray(boxes, np.float32), rec.size))
    return samples


# ------------------------------------------------------------------------------------------ ILSVRC (CSV)


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows of a CSV file with their 1-based line numbers (of the row's last line)."""
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows = []
    try:
        for row in reader:
            if row and any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise AnnotationError(path, reader.line_num, f"malformed CSV ({exc})") from None
    return rows


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


# -------------------------------------------------------------------------------------------------- VOC


def read_voc(
    path: str | os.PathLike[str],
    *,
    split: str = "all",
    classes: str | os.PathLike[str] | Sequence[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    skip_difficult: bool = False,
    one_based: bool = True,
    check_files: bool = True,
) -> AnnotationSet:
    """Read a PASCAL VOC layout: ``Annotations/*.xml``, ``JPEGImages/``, optional ``ImageSets/Main/<split>.txt``.

    Args:
        path: the VOC root (e.g. ``VOCdevkit/VOC2012``).
        split: ``"all"`` (every XML file, sorted) or the name of a list ``ImageSets/Main/<split>.txt``
            (``"train"``, ``"val"``, ``"trainval"``, ``"test"``...), read in file order.
        classes: class order (labels file or sequence of names); default: the sorted set of object names.
        image_dir: default ``<root>/JPEGImages``.
        skip_difficult: drop ``<difficult>1</difficult>`` objects before choosing the class; an image with
            only difficult objects is then left out.
        one_based: VOC corners are 1-based inclusive pixel indices: stored as ``(xmin-1, ymin-1, xmax, ymax)``
            (x0/y0 clipped at 0). ``False`` keeps the corners as written.
        check_files: raise if an image file is missing.

    Class: the class of the image's FIRST object (weakly-supervised evaluation assumes one class per image);
    boxes: every object of that class. ``size`` from ``<size>``.
    """
    root = as_path("path", path)
    if not isinstance(split, str):
        fail("split", "a str", split, type_error=True)
    for name, flag in (("skip_difficult", skip_difficult), ("one_based", one_based), ("check_files", check_files)):
        _check_flag(name, flag)
    ann_dir = require_dir(root / "Annotations", "the VOC Annotations/ folder of XML files")
    if split == "all":
        files = _xml_files(ann_dir)
        if not files:
            raise AnnotationError(ann_dir, None, "folder has no .xml annotation files")
    else:
        list_path = require_file(root / "ImageSets" / "Main" / f"{split}.txt", f"the VOC image list of split {split!r}")
        files = []
        for line, text in text_lines(list_path):
            f = ann_dir / f"{text.split()[0]}.xml"
            if not f.is_file():
                raise AnnotationError(list_path, line, f"references a missing annotation file: {f}")
            files.append(f)
    records = [(f, read_voc_xml(f, one_based=one_based)) for f in files]
    cl = resolve_classes(classes)
    if cl is None:
        used = sorted({o.name for _, r in records for o in r.objects if not (skip_difficult and o.difficult)})
        if not used:
            raise AnnotationError(ann_dir, None, "no <object> in any annotation")
        cl = ClassList(tuple(used), tuple(used), None)
    img_dir = (
        require_dir(as_path("image_dir", image_dir), "the image folder")
        if image_dir is not None
        else root / "JPEGImages"
    )
    if check_files:
        require_dir(img_dir, "the VOC JPEGImages/ folder")
    samples = _xml_samples(records, ann_dir, img_dir, cl, cl.index_of(), "class", check_files, ".jpg", skip_difficult)
    names, wnids = _class_meta(cl)
    return AnnotationSet(tuple(samples), names, "voc", root, wnids)


# -------------------------------------------------------------------------------------------------- CUB


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


# ------------------------------------------------------------------------------------ wsolevaluation


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


# ------------------------------------------------------------------------------------------ Tiny-ImageNet


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
    wnids_txt = require_file(root / "wnids.txt", "the Tiny-ImageNet class list")
    own = read_class_list(wnids_txt)
    cl = resolve_classes(classes)
    if cl is None:
        names = own.keys
        words_txt = root / "words.txt"
        if words_txt.is_file():
            lookup: dict[str, str] = {}
            for _, text in text_lines(words_txt):
                wnid, _, name = text.partition("\t") if "\t" in text else text.partition(" ")
                lookup[wnid.strip()] = name.strip() or wnid.strip()
            names = tuple(lookup.get(w, w) for w in own.keys)
        cl = ClassList(own.keys, names, wnids_txt)
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


# -------------------------------------------------------------------------------------------------- CSV

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
        (all four empty: a row without a box); optional ``w,h`` image size; optional ``mask`` (PNG foreground
        mask path, relative) and ``ignore`` (ignore-mask path) for PxAP.
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
    missing = [c for c in _CSV_REQUIRED if c not in cols]
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
        coords = [cell[c] for c in ("x0", "y0", "x1", "y1")]
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


# ---------------------------------------------------------------------------------------- auto detection

FORMATS: dict[str, Callable[..., AnnotationSet]] = {
    "ilsvrc_xml": read_ilsvrc_xml,
    "ilsvrc_csv": read_ilsvrc_csv,
    "voc": read_voc,
    "cub": read_cub,
    "wsol": read_wsol,
    "tiny_imagenet": read_tiny_imagenet,
    "csv": read_csv,
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
    (``ilsvrc_xml``), a CSV with the simple header (``csv``). Raises if nothing matches.
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
        raise CamlocValueError(f"`path` must be a dataset folder or an annotation CSV; got the file {p}")
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
    if _has_xml(p) or any((p / d).is_dir() for d in _ILSVRC_XML_DIRS) or (p / "ILSVRC").is_dir():
        return "ilsvrc_xml"
    if any(_find_simple_csv(c) is not None for c in (p, *(p / s for s in _CSV_DEFAULT_SPLITS), p / "train")):
        return "csv"
    raise CamlocValueError(
        "`path` must be a dataset folder in a known layout (wsolevaluation metadata, CUB-200-2011, Tiny-ImageNet, "
        "Kaggle ILSVRC, PASCAL VOC, ILSVRC XML, simple CSV); got "
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
