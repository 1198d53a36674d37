"""Hugging Face ``transformers`` image classifiers: their trunk and head (``pip install camloc[hf]``).

``camloc.CAM(model)`` on an ``AutoModelForImageClassification`` model lands here (this module is imported only
then; ``import camloc`` never imports ``transformers``). The backbone is ``getattr(model, model.base_model_prefix)``
and its ``last_hidden_state`` is the feature map; the model's ``forward`` returns an output object whose
``.logits`` camloc checks the head against (:meth:`camloc.resolve.ResolvedHead.model_logits`). Families, by
``config.model_type``:

============================================  ======================================  ============================
family                                        head                                    feature map
============================================  ======================================  ============================
resnet, regnet, mobilenet_v1, mobilenet_v2,   avg-pool -> linear (:class:`LinearHead`)  ``last_hidden_state`` NCHW
efficientnet
convnext, convnextv2                          avg-pool -> LayerNorm -> linear         ``last_hidden_state`` NCHW
                                              (:class:`NormPoolHead`, ``layernorm``)
swin, swinv2                                  normed tokens -> avg-pool -> linear     tokens on the patch grid
vit, deit, dinov2, ... (class token)          refused: the class token has no map     --
============================================  ======================================  ============================

Swin's tokens ``[N, h*w, K]`` are row-major on the last stage's grid (``h = H / (patch_size * 2**(stages-1))``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from camloc.errors import UnsupportedModelError
from camloc.heads import Head, LinearHead, NormPoolHead

__all__ = ["hf_parts", "is_hf_model"]

LINEAR = ("resnet", "regnet", "mobilenet_v1", "mobilenet_v2", "efficientnet")
NORM = ("convnext", "convnextv2")
TOKENS = ("swin", "swinv2")
CLASS_TOKEN = (
    "vit",
    "deit",
    "dinov2",
    "dinov2_with_registers",
    "data2vec-vision",
    "vit_msn",
    "vit_hybrid",
    "dinov3_vit",
)


def is_hf_model(model: Any) -> bool:
    """``True`` for a ``transformers`` ``PreTrainedModel`` (told by its class's module; nothing is imported)."""
    return any(c.__module__.startswith("transformers.") for c in type(model).__mro__)


def _classifier(model: nn.Module, name: str) -> nn.Linear:
    clf = getattr(model, "classifier", None)
    if isinstance(clf, nn.Sequential):  # ResNet/RegNet: Flatten -> Linear
        mods = [m for m in clf if not isinstance(m, nn.Flatten | nn.Identity | nn.Dropout)]
        clf = mods[0] if len(mods) == 1 else clf
    if not isinstance(clf, nn.Linear):
        raise UnsupportedModelError(
            f"{name}'s classifier is {type(clf).__name__}, not a single nn.Linear after pooling, so a class "
            "activation map is not defined"
        )
    return clf


class _Backbone:
    """``x -> backbone(x).last_hidden_state`` as ``[N, K, h, w]`` (tokens placed on the grid)."""

    def __init__(self, backbone: nn.Module, stride: int | None, name: str) -> None:
        self.backbone, self.stride, self.name = backbone, stride, name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from camloc.resolve import _tokens_to_grid

        f = self.backbone(x).last_hidden_state
        if f.ndim == 3:
            return _tokens_to_grid(f, x.shape[-2:], self.stride, self.name)
        return f


def hf_parts(model: nn.Module, *, swap: bool = False) -> tuple[Any, Head | None, str, int | None]:
    """``(trunk, head or None when swapped, source, K)`` of a ``transformers`` image classifier (module docstring)."""
    cfg = getattr(model, "config", None)
    kind = str(getattr(cfg, "model_type", ""))
    name = f"transformers {type(model).__name__}"
    prefix = getattr(model, "base_model_prefix", "")
    backbone = getattr(model, prefix, None) if isinstance(prefix, str) and prefix else None
    if kind in CLASS_TOKEN and not swap:
        raise UnsupportedModelError(
            f"{name} classifies its class token, which reaches the patch tokens only through attention, so the "
            "logit has no exact spatial decomposition. Use timm's ViT created with global_pool='avg', fit a linear "
            "head on the average of its patch tokens (`camloc fit`), or an approximate map method."
        )
    if not isinstance(backbone, nn.Module) or kind not in LINEAR + NORM + TOKENS + CLASS_TOKEN:
        raise UnsupportedModelError(
            f"{name} (model_type {kind!r}) is not a transformers family camloc knows "
            f"({', '.join(LINEAR + NORM + TOKENS)}). Pass the trunk and head explicitly: "
            "CAM(model, features=callable x -> [N, K, h, w], classifier=...)."
        )
    stride = None
    if kind in TOKENS or kind in CLASS_TOKEN:
        depths = getattr(cfg, "depths", None) or [1]
        ps = getattr(cfg, "patch_size", None)
        ps = ps[0] if isinstance(ps, list | tuple) else ps
        stride = int(ps) * 2 ** (len(depths) - 1) if isinstance(ps, int) else None
    trunk: Any = _Backbone(backbone, stride, name)
    if kind in CLASS_TOKEN:  # swapped head on the patch tokens: drop the class (and register) tokens
        skip = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        inner = trunk

        def trunk(x: torch.Tensor) -> torch.Tensor:
            from camloc.resolve import _tokens_to_grid

            t = inner.backbone(x).last_hidden_state[:, skip:]
            return _tokens_to_grid(t, x.shape[-2:], stride, name)

    if swap:
        return trunk, None, name, None
    clf = _classifier(model, name)
    head: Head = LinearHead(clf)
    source = f"{name} (last_hidden_state -> avg-pool -> linear)"
    if kind in NORM:
        norm = getattr(backbone, "layernorm", None)
        if not isinstance(norm, nn.LayerNorm):
            raise UnsupportedModelError(f"{name}: expected a LayerNorm `layernorm` after pooling; found {norm}")
        head = NormPoolHead(norm, clf)
        source = f"{name} (last_hidden_state -> avg-pool -> LayerNorm -> linear)"
    elif kind in TOKENS:
        source = f"{name} (normed tokens on the grid -> avg-pool -> linear)"
    return trunk, head, source, head.in_features
