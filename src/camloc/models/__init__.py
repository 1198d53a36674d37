"""Model registry, the embedded EfficientNet-Lite models and zoo loaders (torchvision / timm, offline)."""

from camloc.models.registry import (
    ModelInfo,
    Preprocess,
    create_model,
    list_models,
    register_model,
)

__all__ = ["ModelInfo", "Preprocess", "create_model", "list_models", "register_model"]
