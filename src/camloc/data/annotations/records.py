"""Shared by the readers: the :class:`Sample` / :class:`AnnotationSet` records and the row-to-record helpers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from camloc.data._io import (
    ClassList,
    fail,
    read_text,
)
from camloc.errors import AnnotationError


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
