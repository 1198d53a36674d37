"""Dataset annotations (plain numpy records) and the geometry of preprocessing.

Importing this package is cheap: numpy only, no torch.
"""

from camloc.data.annotations import (
    FORMATS,
    AnnotationSet,
    ClassList,
    Sample,
    detect_format,
    read_class_list,
    read_csv,
    read_cub,
    read_dataset,
    read_ilsvrc_csv,
    read_ilsvrc_xml,
    read_tiny_imagenet,
    read_voc,
    read_wsol,
)
from camloc.data.transforms import (
    Geometry,
    ImageTransform,
    center_crop_boxes,
    center_crop_mask,
    center_crop_origin,
    crop_boxes,
    resize_boxes,
    resize_mask,
    resized_size,
)

__all__ = [
    "FORMATS",
    "AnnotationSet",
    "ClassList",
    "Geometry",
    "ImageTransform",
    "Sample",
    "center_crop_boxes",
    "center_crop_mask",
    "center_crop_origin",
    "crop_boxes",
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
    "resize_boxes",
    "resize_mask",
    "resized_size",
]
