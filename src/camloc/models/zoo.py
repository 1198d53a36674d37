"""``timm:NAME`` and ``torchvision:NAME`` models, built offline (weights only from a local file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from camloc._checks import fail
from camloc.errors import CamlocTypeError, CamlocValueError
from camloc.models.imagenet import imagenet_categories
from camloc.models.info import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, Preprocess
from camloc.models.weights import load_state_dict_file, load_weights_strict

__all__ = ["create_zoo_model", "timm_preprocess", "torchvision_preprocess", "zoo_preprocess"]

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _interp(value: Any) -> str:
    v = str(getattr(value, "value", value)).lower()
    return v if v in _INTERPOLATIONS else "bilinear"


def torchvision_preprocess(name: str, *, size: int | None = None) -> Preprocess:
    """The preprocessing of torchvision's ``DEFAULT`` weights for ``name`` (``weights.transforms()``): crop size
    (the input), mean, std, interpolation and ``crop_pct = crop / resize``; ImageNet defaults at 224 (299 for
    inception_v3) when torchvision lists no weights. ``size`` overrides the input size. ``resize`` stays
    ``"full"`` (camloc's default: every pixel gets a CAM value)."""
    import torchvision

    try:
        tf = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
        mean, std, interp = tuple(tf.mean), tuple(tf.std), _interp(tf.interpolation)
    except (ValueError, KeyError, AttributeError, IndexError, TypeError):
        crop = 299 if name == "inception_v3" else 224
        resize, mean, std, interp = round(crop / 0.875), IMAGENET_MEAN, IMAGENET_STD, "bilinear"
    s = crop if size is None else int(size)
    return Preprocess(size=(s, s), mean=mean, std=std, interpolation=interp, crop_pct=crop / resize)  # type: ignore[arg-type]


def timm_preprocess(model: nn.Module, *, size: int | None = None) -> Preprocess:
    """The preprocessing in a timm model's ``pretrained_cfg``: ``input_size``, ``mean``, ``std``,
    ``interpolation``, ``crop_pct`` (``resize`` stays ``"full"``). ``size`` overrides the input size."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    h, w = (int(v) for v in tuple(cfg.get("input_size", (3, 224, 224)))[1:])
    if size is not None:
        h = w = int(size)
    return Preprocess(
        size=(h, w),
        mean=tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
        interpolation=_interp(cfg.get("interpolation", "bilinear")),  # type: ignore[arg-type]
        crop_pct=float(cfg.get("crop_pct") or 0.875),
    )


def zoo_preprocess(spec: str, *, size: int | None = None) -> Preprocess:
    """:func:`timm_preprocess` / :func:`torchvision_preprocess` for ``timm:NAME`` / ``torchvision:NAME``."""
    zoo, _, name = spec.partition(":")
    if zoo == "torchvision":
        return torchvision_preprocess(name, size=size)
    if zoo == "timm":
        import timm

        return timm_preprocess(timm.create_model(name, pretrained=False, num_classes=0), size=size)
    fail("spec", "'timm:NAME' or 'torchvision:NAME'", repr(spec))
    raise AssertionError  # unreachable


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


def _torchvision(
    name: str, weights: Path | None, num_classes: int | None, extra: dict[str, Any]
) -> tuple[nn.Module, ModelInfo]:
    import torchvision

    available = set(torchvision.models.list_models(module=torchvision.models))
    if name not in available:
        fail("model", "torchvision:<classification model> (" + ", ".join(sorted(available)[:12]) + ", ...)", name)
    kwargs: dict[str, Any] = {}
    if name in ("googlenet", "inception_v3"):
        # As torchvision's pretrained builders do: ImageNet weights expect transform_input=True.
        kwargs.update(transform_input=weights is not None, aux_logits=True, init_weights=False)
    kwargs.update(extra)  # the caller's builder arguments win
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
    info = ModelInfo(
        name=f"torchvision:{name}",
        categories=_categories(n),
        preprocess=torchvision_preprocess(name),
        description=f"torchvision {name}" + (f" ({weights.name})" if weights else " (random weights)"),
    )
    return model, info


def _timm(
    name: str, weights: Path | None, num_classes: int | None, extra: dict[str, Any]
) -> tuple[nn.Module, ModelInfo]:
    import timm

    if not timm.is_model(name):
        fail("model", "timm:<architecture name known to timm.list_models()>", name)
    if "pretrained" in extra:
        fail("pretrained", "absent (camloc never downloads; pass weights=FILE)", extra["pretrained"])
    state = load_state_dict_file(weights) if weights is not None else None
    model = timm.create_model(name, pretrained=False, **extra)
    if num_classes is None and state is not None:
        num_classes = _num_classes_in(state, model)
    if num_classes is not None and num_classes != model.num_classes:
        model = timm.create_model(name, pretrained=False, **{**extra, "num_classes": num_classes})
    if state is not None:
        load_weights_strict(model, state, source=f"timm:{name} from {weights}")
    info = ModelInfo(
        name=f"timm:{name}",
        categories=_categories(int(model.num_classes)),  # type: ignore[arg-type]
        preprocess=timm_preprocess(model),
        description=f"timm {name}" + (f" ({weights.name})" if weights else " (random weights)"),
    )
    return model, info


def create_zoo_model(
    spec: str, *, weights: str | Path | None = None, num_classes: int | None = None, **kwargs: Any
) -> tuple[nn.Module, ModelInfo]:
    """Build ``timm:NAME`` / ``torchvision:NAME`` with weights from a local file (or random init).

    ``kwargs`` go to the builder (``timm.create_model`` / ``torchvision.models.get_model``), e.g. ``drop_rate``,
    ``drop_path_rate``, ``in_chans``; a builder that rejects one raises :class:`~camloc.errors.CamlocTypeError`.
    The preprocessing comes from the model's own config (:func:`timm_preprocess`, :func:`torchvision_preprocess`).
    """
    zoo, _, name = spec.partition(":")
    if not name:
        fail("model", f"'{zoo}:NAME' with an architecture name", spec)
    path = Path(weights) if weights is not None else None
    try:
        if zoo == "torchvision":
            return _torchvision(name, path, num_classes, kwargs)
        if zoo == "timm":
            return _timm(name, path, num_classes, kwargs)
    except TypeError as e:
        if kwargs and not isinstance(e, CamlocTypeError) and "argument" in str(e):
            raise CamlocTypeError(f"`kwargs` must be arguments of the {zoo} builder of {name!r}; got {e}") from e
        raise
    raise CamlocValueError(f"`model` must start with 'timm:' or 'torchvision:'; got {spec!r}")  # pragma: no cover
