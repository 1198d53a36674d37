"""Low-level helpers shared by the annotation readers: text lines, numbers, boxes, XML with line numbers.

Every problem found in a file is raised as :class:`camloc.errors.AnnotationError` naming the file, the
1-based line number (when one applies) and the problem. No torch import here (keeps ``camloc.data`` cheap).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

from camloc._checks import fail
from camloc.data.images import IMAGE_EXTENSIONS
from camloc.errors import AnnotationError, CamlocTypeError, CamlocValueError

__all__ = ["IMAGE_EXTENSIONS", "fail"]  # re-exported: the one fail helper, the one extension list

WNID_RE = re.compile(r"n\d{8}")
# Labels files giving the ImageNet class order ("wnid name..." or plain "wnid" lines), in search order.
LABEL_FILE_NAMES = ("synset_words.txt", "LOC_synset_mapping.txt", "wnids.txt", "synsets.txt")


def as_path(name: str, value: Any) -> Path:
    """Check that ``value`` is a ``str`` or ``os.PathLike`` and return it as a :class:`Path`."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise CamlocTypeError(f"`{name}` must be a str or os.PathLike path; got {type(value).__name__} {value!r}")


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise naming what was expected there."""
    if not path.is_file():
        raise AnnotationError(path, None, f"file not found (expected {what})")
    return path


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise naming what was expected there."""
    if not path.is_dir():
        raise AnnotationError(path, None, f"folder not found (expected {what})")
    return path


def read_text(path: Path) -> str:
    """The whole file as text (UTF-8, BOM dropped, universal newlines)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(path, None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise AnnotationError(path, None, f"cannot read file ({exc.strerror or exc})") from None


def text_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file, stripped, with their 1-based line numbers."""
    lines = read_text(path).split("\n")
    return [(i, s) for i, line in enumerate(lines, start=1) if (s := line.strip())]


def number(path: Path, line: int | None, token: str, what: str) -> float:
    """Parse a finite float or raise an AnnotationError naming ``what``."""
    try:
        value = float(token)
    except ValueError:
        raise AnnotationError(path, line, f"{what} must be a number; got {token!r}") from None
    if not math.isfinite(value):
        raise AnnotationError(path, line, f"{what} must be a finite number; got {token!r}")
    return value


def integer(path: Path, line: int | None, token: str, what: str, *, low: int | None = None) -> int:
    """Parse an integer (optionally ``>= low``) or raise an AnnotationError naming ``what``."""
    try:
        value = int(token)
    except ValueError:
        raise AnnotationError(path, line, f"{what} must be an integer; got {token!r}") from None
    if low is not None and value < low:
        raise AnnotationError(path, line, f"{what} must be >= {low}; got {value}")
    return value


def check_box(path: Path, line: int | None, box: Sequence[float]) -> tuple[float, float, float, float]:
    """Validate an ``(x0, y0, x1, y1)`` box already in the project convention: non-negative, x1 >= x0, y1 >= y0."""
    x0, y0, x1, y1 = (float(v) for v in box)
    shown = f"({_fmt(x0)}, {_fmt(y0)}, {_fmt(x1)}, {_fmt(y1)})"
    if x1 < x0:
        raise AnnotationError(path, line, f"box {shown} has x1 < x0")
    if y1 < y0:
        raise AnnotationError(path, line, f"box {shown} has y1 < y0")
    if x0 < 0 or y0 < 0:
        raise AnnotationError(path, line, f"box {shown} has a negative corner")
    return x0, y0, x1, y1


def check_box_in_image(path: Path, line: int | None, box: Sequence[float], size: tuple[int, int]) -> None:
    """Refuse a box that lies outside its declared ``(w, h)`` image by more than rounding (2 px or 1 % of the
    side): its IoU would be computed against pixels that do not exist."""
    w, h = size
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 > w + max(2.0, 0.01 * w) or y1 > h + max(2.0, 0.01 * h):
        shown = f"({_fmt(x0)}, {_fmt(y0)}, {_fmt(x1)}, {_fmt(y1)})"
        raise AnnotationError(path, line, f"box {shown} lies outside the {w}x{h} image the row declares")


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def fields(path: Path, line: int, text: str, count: int, layout: str, *, sep: str | None = None) -> list[str]:
    """Split a line into exactly ``count`` fields (whitespace by default) or raise naming the layout."""
    parts = text.split(sep) if sep is None else [p.strip() for p in text.split(sep)]
    if len(parts) != count:
        raise AnnotationError(path, line, f"expected {count} fields ({layout}); got {len(parts)}: {text!r}")
    return parts


class FileIndex:
    """Existence checks through cached folder listings (one ``os.listdir`` per folder, not one stat per file)."""

    def __init__(self) -> None:
        self._names: dict[Path, frozenset[str]] = {}
        self._images: dict[Path, dict[str, str]] = {}

    def names(self, folder: Path) -> frozenset[str]:
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._names[folder] = frozenset()
        return self._names[folder]

    def exists(self, path: Path) -> bool:
        return path.name in self.names(path.parent)

    def _images_by_stem(self, folder: Path) -> dict[str, str]:
        """stem -> file name of the image files of ``folder`` (extension in IMAGE_EXTENSIONS, any case).

        Where several files share a stem (``a.jpg``, ``a.PNG``), the first name in sorted order wins.
        """
        if folder not in self._images:
            by_stem: dict[str, str] = {}
            for name in sorted(self.names(folder)):
                stem, dot, ext = name.rpartition(".")
                if dot and stem and f".{ext.lower()}" in IMAGE_EXTENSIONS:
                    by_stem.setdefault(stem, name)
            self._images[folder] = by_stem
        return self._images[folder]

    def find_image(self, folder: Path, filename: str | None, stem: str) -> Path | None:
        """``folder/filename`` if present, else ``folder/<stem>.<ext>`` for an image extension (case-insensitive)."""
        if filename and filename in self.names(folder):
            return folder / filename
        name = self._images_by_stem(folder).get(stem)
        return None if name is None else folder / name


def check_exists(
    index: FileIndex, file: Path, ann_path: Path, line: int | None, what: str = "image", hint: str = ""
) -> None:
    """Raise an AnnotationError at ``ann_path:line`` if the referenced ``file`` does not exist."""
    if not index.exists(file):
        raise AnnotationError(ann_path, line, f"references a missing {what} file: {file}{hint}")


# --------------------------------------------------------------------------------------------- class lists


@dataclass(frozen=True)
class ClassList:
    """A class order read from a labels file.

    ``keys[i]`` is the identifier that annotations use for class ``i`` (a WordNet id such as ``n01440764``
    or a plain class name); ``names[i]`` its human-readable name (``keys[i]`` when the file gives none).
    """

    keys: tuple[str, ...]
    names: tuple[str, ...]
    path: Path | None = None

    @property
    def has_wnids(self) -> bool:
        """True when every key is a WordNet id (``n`` followed by 8 digits)."""
        return bool(self.keys) and all(WNID_RE.fullmatch(k) for k in self.keys)

    def index_of(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}


def read_class_list(path: str | os.PathLike[str]) -> ClassList:
    """Read a labels file giving the class order: class index = position among the non-blank lines.

    Accepted lines: ``"<wnid> <name...>"`` (``synset_words.txt``, ``LOC_synset_mapping.txt``; space or tab),
    a plain ``"<wnid>"`` (``wnids.txt``), or a plain class name (the whole line, spaces allowed).
    Duplicate keys raise :class:`~camloc.errors.AnnotationError`.
    """
    p = as_path("path", path)
    require_file(p, "a labels file with one class per line")
    keys: list[str] = []
    names: list[str] = []
    seen: dict[str, int] = {}
    for line, text in text_lines(p):
        first, _, rest = text.partition(" ") if "\t" not in text else text.partition("\t")
        if WNID_RE.fullmatch(first):
            key, name = first, (rest.strip() or first)
        else:
            key = name = text
        if key in seen:
            raise AnnotationError(p, line, f"duplicate class {key!r} (first at line {seen[key]})")
        seen[key] = line
        keys.append(key)
        names.append(name)
    if not keys:
        raise AnnotationError(p, None, "labels file has no classes")
    return ClassList(tuple(keys), tuple(names), p)


def resolve_classes(classes: Any) -> ClassList | None:
    """``classes`` option of the readers: None, a labels-file path, or a sequence of class keys."""
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        return read_class_list(classes)
    if isinstance(classes, Sequence) and all(isinstance(c, str) for c in classes):
        keys = tuple(classes)
        if not keys:
            raise CamlocValueError("`classes` must be a non-empty sequence of class keys; got an empty sequence")
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise CamlocValueError(f"`classes` must not repeat a class; got {dup!r} twice")
        return ClassList(keys, keys, None)
    raise CamlocTypeError(
        "`classes` must be None, a labels-file path or a sequence of str class keys; "
        f"got {type(classes).__name__} {classes!r}"
    )


def find_labels_file(folders: Sequence[Path], names: Sequence[str] = LABEL_FILE_NAMES) -> Path | None:
    """The first existing ``folder/name`` (folders outer loop, names inner loop), or None."""
    seen: set[Path] = set()
    for folder in folders:
        if folder in seen:
            continue
        seen.add(folder)
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


# ------------------------------------------------------------------------------------------------- XML


@dataclass
class XmlNode:
    """A minimal XML element that remembers the line it starts on (ElementTree does not)."""

    tag: str
    line: int
    children: list[XmlNode] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts).strip()

    def child(self, tag: str) -> XmlNode | None:
        return next((c for c in self.children if c.tag == tag), None)

    def all(self, tag: str) -> list[XmlNode]:
        return [c for c in self.children if c.tag == tag]


def parse_xml(path: Path) -> XmlNode:
    """Parse an XML file into :class:`XmlNode` (root element). Malformed XML raises with its line number."""
    parser = expat.ParserCreate()
    top = XmlNode("", 0)
    stack = [top]

    def start(tag: str, _attrs: Any) -> None:
        node = XmlNode(tag, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        stack[-1].parts.append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AnnotationError(path, None, "file not found") from None
    except OSError as exc:
        raise AnnotationError(path, None, f"cannot read file ({exc.strerror or exc})") from None
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise AnnotationError(path, exc.lineno, f"malformed XML ({expat.ErrorString(exc.code)})") from None
    if not top.children:
        raise AnnotationError(path, None, "malformed XML (no root element)")
    return top.children[0]


@dataclass(frozen=True)
class XmlObject:
    name: str
    box: tuple[float, float, float, float]
    line: int
    difficult: bool


@dataclass(frozen=True)
class XmlRecord:
    filename: str | None
    size: tuple[int, int] | None
    objects: tuple[XmlObject, ...]


def read_voc_xml(path: Path, *, one_based: bool) -> XmlRecord:
    """Read a PASCAL-VOC style XML file (also the ILSVRC one).

    ``one_based=True`` converts VOC's 1-based inclusive pixel indices to the project convention:
    ``(xmin - 1, ymin - 1, xmax, ymax)`` (x0/y0 clipped at 0); ``False`` keeps the corners as written.
    """
    root = parse_xml(path)
    fn = root.child("filename")
    filename = fn.text if fn is not None and fn.text else None
    size = None
    size_node = root.child("size")
    if size_node is not None:
        wn, hn = size_node.child("width"), size_node.child("height")
        if wn is not None and hn is not None and wn.text and hn.text:
            w = integer(path, wn.line, wn.text, "<width>", low=0)
            h = integer(path, hn.line, hn.text, "<height>", low=0)
            size = (w, h) if w > 0 and h > 0 else None  # some files carry 0 x 0 for "unknown"
    objects = []
    for obj in root.all("object"):
        name_node = obj.child("name")
        if name_node is None or not name_node.text:
            raise AnnotationError(path, obj.line, "<object> without a <name>")
        bb = obj.child("bndbox")
        if bb is None:
            raise AnnotationError(path, obj.line, f"<object> {name_node.text!r} without a <bndbox>")
        vals = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            node = bb.child(tag)
            if node is None or not node.text:
                raise AnnotationError(path, bb.line, f"<bndbox> without <{tag}>")
            vals.append(number(path, node.line, node.text, f"<{tag}>"))
        xmin, ymin, xmax, ymax = vals
        if one_based:
            if xmax < xmin or ymax < ymin:
                check_box(path, bb.line, vals)  # raises with the raw corners
            box = (max(xmin - 1.0, 0.0), max(ymin - 1.0, 0.0), xmax, ymax)
        else:
            box = (xmin, ymin, xmax, ymax)
        box = check_box(path, bb.line, box)
        diff = obj.child("difficult")
        difficult = diff is not None and diff.text not in ("", "0")
        objects.append(XmlObject(name_node.text, box, name_node.line, difficult))
    return XmlRecord(filename, size, tuple(objects))
