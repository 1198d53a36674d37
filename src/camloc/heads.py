"""Find a classifier's feature trunk and its ``pool -> linear`` head.

:func:`resolve_head` turns a model into a :class:`CamHead`: a callable ``x -> (features, logits)`` that runs the
model's *own* modules, plus the classifier whose weights define the class activation maps. It tries, in order:

1. explicit names or callables given by the caller (``features=``, ``classifier=``, ``pool=``);
2. the timm head contract (``forward_features`` / ``forward_head`` / ``get_classifier``), which camloc's own
   networks also follow;
3. torchvision families: resnet/resnext/wide_resnet, densenet, mobilenet_v2, efficientnet v1/v2, regnet,
   shufflenet_v2, mnasnet, googlenet, inception_v3, squeezenet (a 1x1-conv classifier before pooling).

Heads that are not linear after pooling (VGG/AlexNet FC stacks, ConvNeXt's LayerNorm after pooling,
MobileNetV3's hidden FC layer, transformers without a spatial map) raise
:class:`~camloc.errors.UnsupportedModelError` saying what was found and what to use instead.
No forward hooks are used when the model exposes its features; nothing about the model is changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from camloc._checks import check_choice, fail
from camloc.errors import UnsupportedModelError

__all__ = ["CamHead", "resolve_head"]

Pool = Literal["avg", "max"]


@dataclass(frozen=True, eq=False)
class CamHead:
    """A model split into ``features`` and a pooling -> linear ``head``.

    Attributes:
        model: the wrapped model (never modified).
        features: ``x [N, 3, H, W] -> f [N, K, h, w]``, the model's own trunk modules. ``None`` when features are
            captured from a named submodule during ``model(x)`` (explicit override; see ``feature_module``).
        head: ``f -> logits [N, C]``, the model's own head modules (``None`` with ``feature_module``).
        classifier: the ``nn.Linear`` (or 1x1 ``nn.Conv2d``) whose weights give the maps.
        pool: ``"avg"`` (GAP: ``mean_xy M_c + b_c = logit_c``) or ``"max"`` (GMP).
        activation: ``"none"`` for ``pool -> linear`` heads; ``"relu"`` for heads that apply a 1x1 conv and a ReLU
            *before* pooling (SqueezeNet): then ``M_c = relu(sum_k w_k^c f_k + b_c)`` and ``mean_xy M_c = logit_c``.
        source: how the head was found, for messages.
        feature_module: explicit override: the submodule whose output is the feature map (read with a temporary
            forward hook that is always removed).
    """

    model: nn.Module
    features: Callable[[torch.Tensor], torch.Tensor] | None
    head: Callable[[torch.Tensor], torch.Tensor] | None
    classifier: nn.Module
    pool: Pool
    activation: Literal["none", "relu"]
    source: str
    feature_module: nn.Module | None = None

    @property
    def weight(self) -> torch.Tensor:
        """``Tensor[C, K]`` classifier weights."""
        w = self.classifier.weight
        assert isinstance(w, torch.Tensor)
        return w.flatten(1) if w.ndim == 4 else w

    @property
    def bias(self) -> torch.Tensor | None:
        """``Tensor[C]`` classifier bias or ``None``."""
        return getattr(self.classifier, "bias", None)

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model once: ``(features [N, K, h, w], logits [N, C])``; logits equal ``model(x)``."""
        if self.feature_module is None:
            assert self.features is not None and self.head is not None
            f = self.features(x)
            _check_features(f, self.source)
            return f, self.head(f)
        captured: list[torch.Tensor] = []
        handle = self.feature_module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        if not captured:
            raise UnsupportedModelError(f"`features` module ({self.source}) did not run during model(x)")
        if not isinstance(logits, torch.Tensor):
            raise UnsupportedModelError(
                f"model(x) must return a logits tensor for the explicit-features path; got {type(logits).__name__}"
            )
        f = captured[-1]
        _check_features(f, self.source)
        return f, logits


def _check_features(f: Any, source: str) -> None:
    if not isinstance(f, torch.Tensor) or f.ndim != 4:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise UnsupportedModelError(
            f"features must be a 4-D map [N, K, h, w]; {source} gave {shape}. Class activation maps need a "
            "spatial feature map (token-based transformers do not have one)."
        )


def _flat_linear(classifier: nn.Module) -> nn.Linear | nn.Conv2d:
    if isinstance(classifier, nn.Linear):
        return classifier
    if isinstance(classifier, nn.Conv2d) and classifier.kernel_size == (1, 1) and classifier.groups == 1:
        return classifier
    raise UnsupportedModelError(
        f"the classifier must be nn.Linear or a 1x1 nn.Conv2d; found {type(classifier).__name__}: {classifier}"
    )


# --------------------------------------------------------------------------------------------- explicit


def _explicit(
    model: nn.Module,
    features: str | Callable[[torch.Tensor], torch.Tensor],
    classifier: str | nn.Module | None,
    pool: Pool | None,
) -> CamHead:
    if classifier is None:
        fail("classifier", "given together with `features` (a module name or nn.Linear)", None)
    if isinstance(classifier, str):
        try:
            classifier = model.get_submodule(classifier)
        except AttributeError:
            fail("classifier", "the name of a submodule of the model", repr(classifier))
    assert isinstance(classifier, nn.Module)
    clf = _flat_linear(classifier)
    pool_ = check_choice("pool", pool or "avg", ("avg", "max"))
    if isinstance(features, str):
        try:
            mod = model.get_submodule(features)
        except AttributeError:
            fail("features", "the name of a submodule of the model", repr(features))
        return CamHead(model, None, None, clf, pool_, "none", f"explicit features={features!r}", mod)
    if not callable(features):
        fail("features", "a submodule name or a callable x -> features", features, type_error=True)

    def head(f: torch.Tensor) -> torch.Tensor:
        pooled = f.mean(dim=(2, 3)) if pool_ == "avg" else f.amax(dim=(2, 3))
        if isinstance(clf, nn.Conv2d):
            return clf(pooled[:, :, None, None]).flatten(1)
        return clf(pooled)

    return CamHead(model, features, head, clf, pool_, "none", "explicit features callable")


# --------------------------------------------------------------------------------------------- timm contract

_POST_POOL_OK = (nn.Identity, nn.Dropout, nn.Flatten)


def _timm_pool_type(gp: nn.Module | None) -> str | None:
    if gp is None:
        return None
    t = getattr(gp, "pool_type", None)
    return t if isinstance(t, str) else None


def _timm_contract(model: nn.Module, pool: Pool | None) -> CamHead:
    name = type(model).__name__
    clf = model.get_classifier()  # type: ignore[operator]
    if isinstance(clf, tuple | list):
        raise UnsupportedModelError(f"{name} has several classifiers (distillation heads); CAM needs exactly one")
    if isinstance(clf, nn.Identity) or clf is None:
        raise UnsupportedModelError(f"{name} has no classifier (created with num_classes=0); CAM needs one")
    clf = _flat_linear(clf)

    children = dict(model.named_children())
    # Modules between global pooling and the classifier must be parameter-free pass-throughs.
    suspicious: list[str] = []
    gp: nn.Module | None = None
    if "global_pool" in children:
        gp = children["global_pool"]
        after = list(children)[list(children).index("global_pool") + 1 :]
        for key in after:
            mod = children[key]
            if mod is clf or isinstance(mod, _POST_POOL_OK) or _is_pass_through(mod):
                continue
            suspicious.append(f"{key} ({type(mod).__name__})")
    head_mod = children.get("head")
    if isinstance(head_mod, nn.Module) and head_mod is not clf:
        gp = getattr(head_mod, "global_pool", gp)
        for key, mod in head_mod.named_children():
            if mod is clf or key == "global_pool" or isinstance(mod, _POST_POOL_OK) or _is_pass_through(mod):
                continue
            suspicious.append(f"head.{key} ({type(mod).__name__})")
    pre = children.get("pre_logits")
    if isinstance(pre, nn.Module) and any(True for _ in pre.parameters()):
        suspicious.append(f"pre_logits ({type(pre).__name__})")
    if suspicious:
        raise UnsupportedModelError(
            f"{name}'s head is not pooling -> linear: found {', '.join(suspicious)} between the features and the "
            "classifier, so a class activation map is not defined. Use a model whose classifier follows global "
            "pooling directly (e.g. resnet, efficientnet, densenet, regnet), or give it a GAP head with "
            "camloc's gap_head / `camloc train --arch timm:NAME`."
        )
    pool_type = getattr(model, "cam_pool", None) or _timm_pool_type(gp)
    if pool is not None:
        pool_type = pool
    if pool_type in ("avg", "fast", "avgavg"):
        pool_ = "avg"
    elif pool_type == "max":
        pool_ = "max"
    elif pool_type is None:
        pool_ = "avg"  # verified against forward_head by camloc.CAM's identity check
    else:
        raise UnsupportedModelError(
            f"{name} pools with {pool_type!r}; CAM is defined for global average ('avg') or max ('max') pooling"
        )
    return CamHead(
        model,
        model.forward_features,  # type: ignore[arg-type]
        model.forward_head,  # type: ignore[arg-type]
        clf,
        pool_,  # type: ignore[arg-type]
        "none",
        f"{name} (forward_features/forward_head contract)",
    )


def _is_pass_through(mod: nn.Module) -> bool:
    # Parameter-free activations/normalisations are *not* pass-throughs; only empty containers are.
    return isinstance(mod, nn.Sequential) and len(mod) == 0


# --------------------------------------------------------------------------------------------- torchvision


def _seq(*mods: nn.Module) -> nn.Sequential:
    """A Sequential that *references* the model's own modules (no copies: weights stay shared)."""
    return nn.Sequential(*mods)


def _torchvision(model: nn.Module) -> CamHead | None:
    try:
        from torchvision import models as tvm
    except ImportError:  # pragma: no cover
        return None
    name = type(model).__name__

    refuse = {
        "VGG": "its classifier is a stack of fully-connected layers after 7x7 pooling; use camloc's 'vgg16_gap' "
        "(the paper's VGG16-GAP), trained or fine-tuned with `camloc train`",
        "AlexNet": "its classifier is a stack of fully-connected layers; use camloc's 'alexnet_gap' (the paper's "
        "AlexNet-GAP), trained or fine-tuned with `camloc train`",
        "MobileNetV3": "its head has a hidden fully-connected layer (Linear -> Hardswish) after pooling; use "
        "mobilenet_v2 or efficientnet, or a GAP head via `camloc train --arch torchvision:mobilenet_v3_large`",
        "ConvNeXt": "it applies LayerNorm after pooling, so the logit is not linear in the pooled features; give "
        "it a GAP head via `camloc train --arch torchvision:convnext_tiny`",
        "VisionTransformer": "it has no spatial feature map (token-based transformer)",
        "SwinTransformer": "it applies LayerNorm after its last stage and pools tokens; not a GAP head",
        "MaxVit": "its head has LayerNorm and a hidden layer after pooling",
    }
    if name in refuse and isinstance(model, getattr(tvm, name, ())):
        raise UnsupportedModelError(f"torchvision {name} is not supported: {refuse[name]}.")

    m: Any = model
    if isinstance(model, tvm.ResNet):
        feats = _seq(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
        return _tv(model, feats, lambda f: m.fc(torch.flatten(m.avgpool(f), 1)), m.fc, "resnet")
    if isinstance(model, tvm.DenseNet):
        return _tv(
            model,
            lambda x: torch.nn.functional.relu(m.features(x)),
            lambda f: m.classifier(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(f, 1), 1)),
            m.classifier,
            "densenet",
        )
    if isinstance(model, tvm.MobileNetV2):
        clf = m.classifier[-1]
        return _tv(
            model,
            m.features,
            lambda f: m.classifier(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(f, 1), 1)),
            clf,
            "mobilenet_v2",
        )
    if isinstance(model, tvm.EfficientNet):
        return _tv(
            model, m.features, lambda f: m.classifier(torch.flatten(m.avgpool(f), 1)), m.classifier[-1], "efficientnet"
        )
    if isinstance(model, tvm.RegNet):
        return _tv(model, _seq(m.stem, m.trunk_output), lambda f: m.fc(torch.flatten(m.avgpool(f), 1)), m.fc, "regnet")
    if isinstance(model, tvm.ShuffleNetV2):
        feats = _seq(m.conv1, m.maxpool, m.stage2, m.stage3, m.stage4, m.conv5)
        return _tv(model, feats, lambda f: m.fc(f.mean([2, 3])), m.fc, "shufflenet_v2")
    if isinstance(model, tvm.MNASNet):
        return _tv(model, m.layers, lambda f: m.classifier(f.mean([2, 3])), m.classifier[-1], "mnasnet")
    if isinstance(model, tvm.GoogLeNet):
        seq = _seq(
            m.conv1, m.maxpool1, m.conv2, m.conv3, m.maxpool2, m.inception3a, m.inception3b, m.maxpool3,
            m.inception4a, m.inception4b, m.inception4c, m.inception4d, m.inception4e, m.maxpool4,
            m.inception5a, m.inception5b,
        )  # fmt: skip
        return _tv(
            model,
            lambda x: seq(m._transform_input(x)),
            lambda f: m.fc(m.dropout(torch.flatten(m.avgpool(f), 1))),
            m.fc,
            "googlenet",
        )
    if isinstance(model, tvm.Inception3):
        seq = _seq(
            m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.maxpool1, m.Conv2d_3b_1x1, m.Conv2d_4a_3x3,
            m.maxpool2, m.Mixed_5b, m.Mixed_5c, m.Mixed_5d, m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d,
            m.Mixed_6e, m.Mixed_7a, m.Mixed_7b, m.Mixed_7c,
        )  # fmt: skip
        return _tv(
            model,
            lambda x: seq(m._transform_input(x)),
            lambda f: m.fc(torch.flatten(m.dropout(m.avgpool(f)), 1)),
            m.fc,
            "inception_v3",
        )
    if isinstance(model, tvm.SqueezeNet):
        # classifier = Dropout -> Conv2d(512, C, 1) -> ReLU -> AdaptiveAvgPool2d(1); the conv runs before pooling.
        conv = m.classifier[1]
        return CamHead(
            model,
            m.features,
            lambda f: torch.flatten(m.classifier(f), 1),
            _flat_linear(conv),
            "avg",
            "relu",
            "torchvision squeezenet (1x1 conv + ReLU before pooling)",
        )
    return None


def _tv(
    model: nn.Module,
    features: Callable[[torch.Tensor], torch.Tensor],
    head: Callable[[torch.Tensor], torch.Tensor],
    clf: nn.Module,
    family: str,
) -> CamHead:
    return CamHead(model, features, head, _flat_linear(clf), "avg", "none", f"torchvision {family}")


# --------------------------------------------------------------------------------------------- entry point


def resolve_head(
    model: nn.Module,
    *,
    features: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
    classifier: str | nn.Module | None = None,
    pool: Pool | None = None,
) -> CamHead:
    """Split ``model`` into features and a ``pool -> linear`` head (see the module docstring for the order).

    Args:
        model: an ``nn.Module`` classifier.
        features: explicit override: a submodule name (its output is read with a temporary hook during
            ``model(x)``) or a callable ``x -> Tensor[N, K, h, w]``.
        classifier: explicit override: a submodule name or the ``nn.Linear`` itself (required with ``features``).
        pool: ``"avg"`` or ``"max"``; overrides what was detected.

    Raises:
        UnsupportedModelError: the head is not pooling -> linear, or cannot be found.
    """
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", model, type_error=True)
    if pool is not None:
        check_choice("pool", pool, ("avg", "max"))
    if features is not None:
        return _explicit(model, features, classifier, pool)
    if classifier is not None:
        fail("features", "given together with `classifier`", None)
    if all(callable(getattr(model, a, None)) for a in ("forward_features", "forward_head", "get_classifier")):
        return _timm_contract(model, pool)
    found = _torchvision(model)
    if found is not None:
        return found if pool is None else CamHead(**{**found.__dict__, "pool": pool})
    raise UnsupportedModelError(
        f"cannot find the features and the pool -> linear head of {type(model).__name__}: it does not follow the "
        "timm contract (forward_features/forward_head/get_classifier) and is not a known torchvision family. "
        "Pass them explicitly: CAM(model, features='<module name>', classifier='<linear name>', pool='avg')."
    )
