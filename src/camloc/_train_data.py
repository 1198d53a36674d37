"""Former home of the training data layouts; they live in :mod:`camloc.training.data` now."""

from camloc.training.data import DataSplit, ImageDataset, Item, crop_params, discover

__all__ = ["DataSplit", "ImageDataset", "Item", "crop_params", "discover"]
