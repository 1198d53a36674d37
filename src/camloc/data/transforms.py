"""Preprocessing geometry (kept importable from here): everything lives in :mod:`camloc.geometry`."""

from __future__ import annotations

from camloc.geometry import (
    Geometry,
    ImageTransform,
    center_crop_boxes,
    center_crop_mask,
    center_crop_origin,
    crop_boxes,
    orient_boxes,
    orient_mask,
    resize_boxes,
    resize_mask,
    resized_size,
)

__all__ = [
    "Geometry",
    "ImageTransform",
    "center_crop_boxes",
    "center_crop_mask",
    "center_crop_origin",
    "crop_boxes",
    "orient_boxes",
    "orient_mask",
    "resize_boxes",
    "resize_mask",
    "resized_size",
]
