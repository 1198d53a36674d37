"""Model registry: names -> builders, and the metadata that travels with weights.

A *model spec* string names a network:

- a registered name (``lite0``, ``lite1``, ``lite2``, the paper's ``vgg16_gap`` ...; see :func:`list_models`);
- ``timm:NAME`` for any timm architecture (weights only from a local file, never from a hub);
- ``torchvision:NAME`` for any torchvision classification architecture (likewise).

:func:`create_model` returns the ``nn.Module`` (in eval mode) and its :class:`ModelInfo`: class names and the
preprocessing the weights expect. Nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from camloc._checks import check_choice, fail
from camloc.errors import CamlocValueError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelInfo",
    "Preprocess",
    "RegisteredModel",
    "create_model",
    "describe_key_mismatch",
    "get_model_entry",
    "list_models",
    "load_state_dict_file",
    "load_weights_strict",
    "register_model",
]

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


_REGISTRY: dict[str, RegisteredModel] = {}


def register_model(name: str, *, description: str = "", default_weights: bool = False) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name``; a duplicate name raises CamlocValueError."""

    def deco(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise CamlocValueError(f"`name` must be unique in the model registry; {name!r} is registered already")
        if ":" in name:
            fail("name", "a registry name without ':'", name)
        _REGISTRY[name] = RegisteredModel(name, builder, description, default_weights)
        return builder

    return deco


def _ensure_builtin() -> None:
    # Importing these modules registers their builders (kept lazy so `import camloc` stays cheap).
    from camloc.models import efficientnet_lite  # noqa: F401

    with contextlib.suppress(ImportError):  # the paper's networks (optional module)
        from camloc.models import paper  # noqa: F401


def list_models() -> list[RegisteredModel]:
    """All registered models, sorted by name."""
    _ensure_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_model_entry(name: str) -> RegisteredModel:
    _ensure_builtin()
    if name not in _REGISTRY:
        fail(
            "model",
            "a registered name (" + ", ".join(sorted(_REGISTRY)) + "), 'timm:NAME' or 'torchvision:NAME'",
            repr(name),
        )
    return _REGISTRY[name]


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file and return its state dict (unwrapping ``state_dict``/``model``/``module.``).

    Accepts ``.pth``/``.pt`` (torch.load, weights_only) and ``.safetensors``.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        fail("weights", "an existing weights file", str(p))
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / foreign file
        raise CamlocValueError(f"`weights` must be a torch or safetensors checkpoint; could not read {p}: {e}") from e
    for key in ("state_dict", "model", "model_state", "ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        fail("weights", "a file holding a state dict (name -> tensor)", f"{type(obj).__name__} in {p}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def describe_key_mismatch(missing: Sequence[str], unexpected: Sequence[str], mismatched: Sequence[str]) -> str:
    """One message listing missing / unexpected / wrong-shape keys (first 8 of each); ``""`` when all fit."""

    def head(xs: Sequence[str]) -> str:
        return ", ".join(xs[:8]) + (f" ... (+{len(xs) - 8} more)" if len(xs) > 8 else "")

    parts = []
    if missing:
        parts.append(f"missing keys [{head(missing)}]")
    if unexpected:
        parts.append(f"unexpected keys [{head(unexpected)}]")
    if mismatched:
        parts.append(f"shape mismatches [{head(mismatched)}]")
    return "; ".join(parts)


def load_weights_strict(model: Any, state: dict[str, Any], *, source: str) -> None:
    """``model.load_state_dict(state)`` with a camloc error listing missing/unexpected/mismatched keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = describe_key_mismatch(missing, unexpected, mismatched)
    if problems:
        raise CamlocValueError(f"`weights` ({source}) do not fit the architecture: {problems}")
    model.load_state_dict(state)


def create_model(
    spec: str,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> tuple[Any, ModelInfo]:
    """Build the model named by ``spec`` (see module docstring); return ``(model.eval(), info)``.

    ``weights`` is a local file (state dict or checkpoint). Registered models with packaged weights (lite0/1/2)
    need none. ``timm:``/``torchvision:`` specs without ``weights`` get random initialisation.
    """
    if not isinstance(spec, str) or not spec:
        fail("model", "a non-empty model spec string", spec, type_error=not isinstance(spec, str))
    if spec.startswith("timm:") or spec.startswith("torchvision:"):
        from camloc.models.zoo import create_zoo_model

        model, info = create_zoo_model(spec, weights=weights, num_classes=num_classes, **kwargs)
    else:
        entry = get_model_entry(spec)
        model, info = entry.builder(weights=weights, num_classes=num_classes, **kwargs)
    return model.eval(), info
