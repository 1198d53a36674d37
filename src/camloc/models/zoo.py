"""``timm:NAME`` and ``torchvision:NAME`` models, built offline (weights only from a local file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from camloc._checks import fail
from camloc.errors import CamlocValueError
from camloc.models.imagenet import imagenet_categories
from camloc.models.info import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, Preprocess
from camloc.models.weights import load_state_dict_file, load_weights_strict

__all__ = ["create_zoo_model"]


def _categories(n: int) -> tuple[str, ...]:
    return imagenet_categories() if n == 1000 else tuple(f"class_{i}" for i in range(n))


def _classifier_key(model: nn.Module) -> str | None:
    """State-dict key of the last linear / 1x1-conv weight (the classifier), if any."""
    key = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) or (isinstance(mod, nn.Conv2d) and mod.kernel_size == (1, 1)):
            key = f"{name}.weight"
    return key


def _num_classes_in(state: dict[str, Any], model: nn.Module) -> int | None:
    key = _classifier_key(model)
    if key is not None and key in state and hasattr(state[key], "shape"):
        return int(state[key].shape[0])
    return None


def _torchvision(name: str, weights: Path | None, num_classes: int | None) -> tuple[nn.Module, ModelInfo]:
    import torchvision

    available = set(torchvision.models.list_models(module=torchvision.models))
    if name not in available:
        fail("model", "torchvision:<classification model> (" + ", ".join(sorted(available)[:12]) + ", ...)", name)
    kwargs: dict[str, Any] = {}
    if name in ("googlenet", "inception_v3"):
        # As torchvision's pretrained builders do: ImageNet weights expect transform_input=True.
        kwargs.update(transform_input=weights is not None, aux_logits=True, init_weights=False)
    state = load_state_dict_file(weights) if weights is not None else None
    probe = torchvision.models.get_model(name, weights=None, **kwargs)
    if num_classes is None and state is not None:
        num_classes = _num_classes_in(state, probe)
    model = (
        probe
        if num_classes in (None, 1000)
        else torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    )
    if state is not None:
        if name in ("googlenet", "inception_v3") and not any(k.startswith(("aux", "AuxLogits")) for k in state):
            model.aux_logits = False  # type: ignore[assignment]
            for aux in ("aux1", "aux2", "AuxLogits"):
                if hasattr(model, aux):
                    setattr(model, aux, None)
        load_weights_strict(model, state, source=f"torchvision:{name} from {weights}")
    n = _num_classes_in(model.state_dict(), model) or 1000
    size = 299 if name == "inception_v3" else 224
    info = ModelInfo(
        name=f"torchvision:{name}",
        categories=_categories(n),
        preprocess=Preprocess(size=(size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear"),
        description=f"torchvision {name}" + (f" ({weights.name})" if weights else " (random weights)"),
    )
    return model, info


def _timm(name: str, weights: Path | None, num_classes: int | None) -> tuple[nn.Module, ModelInfo]:
    import timm

    if not timm.is_model(name):
        fail("model", "timm:<architecture name known to timm.list_models()>", name)
    state = load_state_dict_file(weights) if weights is not None else None
    model = timm.create_model(name, pretrained=False)
    if num_classes is None and state is not None:
        num_classes = _num_classes_in(state, model)
    if num_classes is not None and num_classes != model.num_classes:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if state is not None:
        load_weights_strict(model, state, source=f"timm:{name} from {weights}")
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))[1:]
    interp = cfg.get("interpolation", "bilinear")
    info = ModelInfo(
        name=f"timm:{name}",
        categories=_categories(int(model.num_classes)),  # type: ignore[arg-type]
        preprocess=Preprocess(
            size=(int(size[0]), int(size[1])),
            mean=tuple(cfg.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
            std=tuple(cfg.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
            interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear",
        ),
        description=f"timm {name}" + (f" ({weights.name})" if weights else " (random weights)"),
    )
    return model, info


def create_zoo_model(
    spec: str, *, weights: str | Path | None = None, num_classes: int | None = None
) -> tuple[nn.Module, ModelInfo]:
    """Build ``timm:NAME`` / ``torchvision:NAME`` with weights from a local file (or random init)."""
    zoo, _, name = spec.partition(":")
    if not name:
        fail("model", f"'{zoo}:NAME' with an architecture name", spec)
    path = Path(weights) if weights is not None else None
    if zoo == "torchvision":
        return _torchvision(name, path, num_classes)
    if zoo == "timm":
        return _timm(name, path, num_classes)
    raise CamlocValueError(f"`model` must start with 'timm:' or 'torchvision:'; got {spec!r}")  # pragma: no cover
