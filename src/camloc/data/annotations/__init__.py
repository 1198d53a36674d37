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
``coco``           instances JSON ``bbox [x, y, width, height]``     ``(x, y, x + width, y + height)``
=================  ================================================  ===========================================

One class per image: weakly-supervised evaluation assumes it. For XML sources (VOC, ILSVRC), COCO and the Kaggle CSV
the image's class is the class of its FIRST object and ``boxes`` holds only the boxes of that class; for the
row-per-box sources (CSV, Tiny-ImageNet) rows of one image with different classes are an error.

Malformed files raise :class:`camloc.errors.AnnotationError` naming the file, the 1-based line and the
problem; missing required files raise it naming the file that was expected.

One module per format in this package (``ilsvrc_xml``, ``ilsvrc_csv``, ``voc``, ``cub``, ``wsol``,
``tiny_imagenet``, ``simple_csv``, ``coco``), the shared records in ``records`` and the reader table and auto-detection
in ``detect``.
"""

from camloc.data._io import ClassList, read_class_list
from camloc.data.annotations.coco import read_coco
from camloc.data.annotations.cub import read_cub
from camloc.data.annotations.detect import FORMATS, detect_format, read_dataset
from camloc.data.annotations.ilsvrc_csv import read_ilsvrc_csv
from camloc.data.annotations.ilsvrc_xml import read_ilsvrc_xml
from camloc.data.annotations.records import AnnotationSet, Sample
from camloc.data.annotations.simple_csv import read_csv
from camloc.data.annotations.tiny_imagenet import TINY_IMAGENET_SIZE, read_tiny_imagenet
from camloc.data.annotations.voc import read_voc
from camloc.data.annotations.wsol import read_wsol

__all__ = [
    "FORMATS",
    "TINY_IMAGENET_SIZE",
    "AnnotationSet",
    "ClassList",
    "Sample",
    "detect_format",
    "read_class_list",
    "read_coco",
    "read_csv",
    "read_cub",
    "read_dataset",
    "read_ilsvrc_csv",
    "read_ilsvrc_xml",
    "read_tiny_imagenet",
    "read_voc",
    "read_wsol",
]
