"""Model registry: the table of names -> builders. ``create_model(spec)`` builds any model camloc knows.

A *model spec* string names a network:

- a registered name (``lite0``, ``lite1``, ``lite2``, the paper's ``vgg16_gap`` ...; see :func:`list_models`);
- ``timm:NAME`` for any timm architecture (weights only from a local file, never from a hub);
- ``torchvision:NAME`` for any torchvision classification architecture (likewise).

:func:`create_model` returns the ``nn.Module`` (in eval mode) and its :class:`ModelInfo`: class names and the
preprocessing the weights expect. Nothing is ever downloaded.

The built-in entries are declared by their modules (``BUILTIN_MODELS`` in each module of
:data:`BUILTIN_MODULES`) and added to the table on first use; those modules import only
:mod:`camloc.models.info` and :mod:`camloc.models.weights`, never this module, so there is no import cycle.
An error while importing a built-in module propagates as it is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from camloc._checks import fail
from camloc.errors import CamlocValueError
from camloc.models.info import IMAGENET_MEAN, IMAGENET_STD, Builder, ModelInfo, Preprocess, RegisteredModel
from camloc.models.weights import describe_key_mismatch, load_state_dict_file, load_weights_strict

__all__ = [
    "BUILTIN_MODULES",
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

#: Modules whose ``BUILTIN_MODELS`` (a sequence of :class:`RegisteredModel`) fill the table on first use.
BUILTIN_MODULES: tuple[str, ...] = ("camloc.models.efficientnet_lite", "camloc.models.paper")

_REGISTRY: dict[str, RegisteredModel] = {}
_builtin_loaded = False


def _add(entry: RegisteredModel) -> None:
    if entry.name in _REGISTRY:
        raise CamlocValueError(f"`name` must be unique in the model registry; {entry.name!r} is registered already")
    if ":" in entry.name:
        fail("name", "a registry name without ':'", entry.name)
    _REGISTRY[entry.name] = entry


def register_model(name: str, *, description: str = "", default_weights: bool = False) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name``; a duplicate name raises CamlocValueError."""

    def deco(builder: Builder) -> Builder:
        _ensure_builtin()  # so a name that a built-in model uses is refused
        _add(RegisteredModel(name, builder, description, default_weights))
        return builder

    return deco


def _ensure_builtin() -> None:
    """Add the built-in entries once (lazily, so ``import camloc`` stays cheap). Import errors propagate."""
    global _builtin_loaded
    if _builtin_loaded:
        return
    entries: list[RegisteredModel] = []
    for module in BUILTIN_MODULES:
        entries.extend(importlib.import_module(module).BUILTIN_MODELS)
    for entry in entries:
        _add(entry)
    _builtin_loaded = True


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
