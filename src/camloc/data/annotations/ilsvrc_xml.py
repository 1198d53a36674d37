"""ILSVRC (ImageNet) per-image PASCAL-VOC XML files (``ILSVRC2012_val_00000001.xml``): ``ilsvrc_xml``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camloc.data._io import (
    LABEL_FILE_NAMES,
    ClassList,
    FileIndex,
    XmlRecord,
    as_path,
    fail,
    find_labels_file,
    read_class_list,
    read_voc_xml,
    require_dir,
    resolve_classes,
)
from camloc.data.annotations.records import AnnotationSet, Sample, _check_flag, _class_meta, _lookup
from camloc.errors import AnnotationError

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
