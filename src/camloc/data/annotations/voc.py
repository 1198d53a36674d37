"""PASCAL VOC (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``): ``voc``."""

from __future__ import annotations

import os
from collections.abc import Sequence

from camloc.data._io import (
    ClassList,
    as_path,
    fail,
    read_voc_xml,
    require_dir,
    require_file,
    resolve_classes,
    text_lines,
)
from camloc.data.annotations.ilsvrc_xml import _xml_files, _xml_samples
from camloc.data.annotations.records import AnnotationSet, _check_flag, _class_meta
from camloc.errors import AnnotationError


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
