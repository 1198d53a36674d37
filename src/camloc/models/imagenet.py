"""ImageNet-1k class names and WordNet ids (from the installed torchvision / timm packages; no download)."""

from __future__ import annotations

from functools import cache

__all__ = ["imagenet_categories", "imagenet_wnids"]


@cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 short ImageNet-1k class names in the standard index order (sorted wnids)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids (``n01440764`` ...) in index order."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())
