"""What travels with a model's weights: the preprocessing they expect and their class names.

Shared by the registry and every builder (:mod:`camloc.models.efficientnet_lite`, :mod:`camloc.models.paper`,
:mod:`camloc.models.zoo`); it imports none of them, so the models package has no import cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from camloc._checks import check_choice, fail

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Builder", "ModelInfo", "Preprocess", "RegisteredModel"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network's input tensor.

    ``x = (pixel / 255 - mean) / std`` per RGB channel, after resizing. ``size`` is (height, width) of the input.
    ``resize="full"`` resizes the whole image to ``size`` (aspect ratio not kept, every pixel gets a CAM value);
    ``resize="center_crop"`` resizes the shorter side to ``floor(min(size) / crop_pct)`` and centre-crops ``size``
    (torchvision ``Resize(int)`` + ``CenterCrop``). The geometry is :mod:`camloc.geometry`'s, the pixels
    :mod:`camloc.pipeline`'s (one resample with ``interpolation``).
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    resize: Literal["full", "center_crop"] = "full"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            fail("size", "a (height, width) pair of positive ints", self.size)
        check_choice("interpolation", self.interpolation, ("bilinear", "bicubic", "nearest"))
        check_choice("resize", self.resize, ("full", "center_crop"))

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        for key in ("size", "mean", "std"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    def replace(self, **changes: Any) -> Preprocess:
        return dataclasses.replace(self, **changes)

    def transform(self) -> Any:
        """The resize / crop as a :class:`camloc.geometry.ImageTransform` (``pipeline.preprocess_transform``)."""
        from camloc.pipeline import preprocess_transform

        return preprocess_transform(self)

    def geometry(self, image_size: tuple[int, int], **kwargs: Any) -> Any:
        """The :class:`camloc.geometry.Geometry` of an image of ``image_size = (width, height)``.

        ``kwargs``: ``working_size`` (the decoded, maybe reduced image) and ``orientation`` (EXIF, 1..8).
        """
        return self.transform().geometry(image_size, **kwargs)

    def resized_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` of the image after the resize step (before any crop)."""
        return self.geometry(image_size).resized_size  # type: ignore[no-any-return]

    def to_tensor(self, image: Any) -> Any:
        """PIL RGB image -> normalised ``Tensor[3, H, W]`` float32 (``size = (H, W)``), resampled once.

        Equals torchvision's ``Resize`` (PIL backend, this ``interpolation``) [+ ``CenterCrop``] + ``ToTensor`` +
        ``Normalize(mean, std)``; :class:`camloc.pipeline.ImagePipeline` does the same from paths, bytes or arrays.
        """
        from camloc.pipeline import image_to_tensor

        return image_to_tensor(image, self)

    def boxes_to_image(self, boxes: Any, image_size: tuple[int, int]) -> Any:
        """Map boxes ``[..., 4]`` from the network-input frame to the pixels of the image of ``(width, height)``.

        Exact inverse of :meth:`to_tensor`'s geometry (:mod:`camloc.geometry`); boxes are not clipped, so a
        centre crop's boxes stay inside the cropped part of the image. Returns ``Tensor[..., 4]`` float32.
        """
        import torch

        b = torch.as_tensor(boxes, dtype=torch.float32).cpu().numpy()
        out = self.geometry(image_size).map_boxes(b, "network", "original", clip=False)
        return torch.from_numpy(out)


@dataclass(frozen=True)
class ModelInfo:
    """Metadata that travels with a model's weights."""

    name: str
    categories: tuple[str, ...]
    preprocess: Preprocess
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "categories": list(self.categories),
            "preprocess": self.preprocess.to_dict(),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        return cls(
            name=str(d["name"]),
            categories=tuple(d["categories"]),
            preprocess=Preprocess.from_dict(d["preprocess"]),
            description=str(d.get("description", "")),
        )


Builder = Callable[..., Any]


@dataclass(frozen=True)
class RegisteredModel:
    """A registry entry. ``builder(num_classes=..., weights=..., **kwargs) -> (nn.Module, ModelInfo)``."""

    name: str
    builder: Builder
    description: str
    default_weights: bool  # True when the package ships weights for it (no file needed)
