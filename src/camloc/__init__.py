"""camloc: exact class activation maps, boxes and localization metrics for any GAP classifier.

Importing ``camloc`` is cheap: torch and friends load on first use of a public name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CAM": "camloc.extractor",
    "CamResult": "camloc.extractor",
    "Head": "camloc.heads",
    "LinearHead": "camloc.heads",
    "NormPoolHead": "camloc.heads",
    "ReluConvHead": "camloc.heads",
    "SklearnHead": "camloc.heads",
    "resolve_head": "camloc.resolve",
    "fit_linear_head": "camloc.fit",
    "FitResult": "camloc.fit",
    "CamHead": "camloc.resolve",  # deprecated name of camloc.resolve.ResolvedHead (not in __all__)
    "class_activation_maps": "camloc.cam",
    "normalize_maps": "camloc.cam",
    "pool_logits": "camloc.cam",
    "topk_classes": "camloc.cam",
    "upsample_maps": "camloc.cam",
    "Localization": "camloc.localization",
    "localize": "camloc.localization",
    "threshold_maps": "camloc.localization",
    "largest_component_box": "camloc.localization",
    "component_boxes": "camloc.localization",
    "scale_boxes": "camloc.localization",
    "create_model": "camloc.models.registry",
    "list_models": "camloc.models.registry",
    "register_model": "camloc.models.registry",
    "ModelInfo": "camloc.models.registry",
    "Preprocess": "camloc.models.registry",
    "CamlocError": "camloc.errors",
    "CamlocValueError": "camloc.errors",
    "CamlocTypeError": "camloc.errors",
    "UnsupportedModelError": "camloc.errors",
    "ImageLoadError": "camloc.errors",
    "AnnotationError": "camloc.errors",
}

__all__ = [
    "CAM",
    "AnnotationError",
    "CamResult",
    "CamlocError",
    "CamlocTypeError",
    "CamlocValueError",
    "FitResult",
    "Head",
    "ImageLoadError",
    "LinearHead",
    "Localization",
    "ModelInfo",
    "NormPoolHead",
    "Preprocess",
    "ReluConvHead",
    "SklearnHead",
    "UnsupportedModelError",
    "__version__",
    "class_activation_maps",
    "component_boxes",
    "create_model",
    "fit_linear_head",
    "largest_component_box",
    "list_models",
    "localize",
    "normalize_maps",
    "pool_logits",
    "register_model",
    "resolve_head",
    "scale_boxes",
    "threshold_maps",
    "topk_classes",
    "upsample_maps",
]

if TYPE_CHECKING:  # pragma: no cover
    from camloc.cam import class_activation_maps, normalize_maps, pool_logits, topk_classes, upsample_maps
    from camloc.errors import (
        AnnotationError,
        CamlocError,
        CamlocTypeError,
        CamlocValueError,
        ImageLoadError,
        UnsupportedModelError,
    )
    from camloc.extractor import CAM, CamResult
    from camloc.fit import FitResult, fit_linear_head
    from camloc.heads import Head, LinearHead, NormPoolHead, ReluConvHead, SklearnHead
    from camloc.localization import (
        Localization,
        component_boxes,
        largest_component_box,
        localize,
        scale_boxes,
        threshold_maps,
    )
    from camloc.models.registry import ModelInfo, Preprocess, create_model, list_models, register_model
    from camloc.resolve import resolve_head


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'camloc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
