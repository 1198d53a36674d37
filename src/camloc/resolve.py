"""Find a classifier's feature trunk and its head: ``model -> (trunk, Head)``, with every zoo quirk in one place.

:func:`resolve_head` splits a model into a trunk ``x -> f [N, K, h, w]`` that runs the model's *own* modules and
a computing :class:`~camloc.heads.Head` (see :mod:`camloc.heads` for the head kinds). It tries, in order:

1. explicit names or callables given by the caller (``features=``, ``classifier=``, ``pool=``);
2. the timm head contract (``forward_features`` / ``forward_head`` / ``get_classifier``), which camloc's own
   networks also follow;
3. torchvision families: resnet/resnext/wide_resnet, densenet, mobilenet_v2, efficientnet v1/v2, regnet,
   shufflenet_v2, mnasnet, googlenet, inception_v3, squeezenet (a 1x1-conv + ReLU classifier before pooling).

``classifier=`` without ``features=`` swaps the head on the trunk found in 2 or 3 (a :class:`~camloc.heads.Head`,
an ``nn.Linear`` or a fitted scikit-learn linear classifier). Heads that are not linear after pooling (VGG/AlexNet
FC stacks, ConvNeXt's LayerNorm after pooling, MobileNetV3's hidden FC layer, transformers without a spatial
map) raise :class:`~camloc.errors.UnsupportedModelError` saying what was found and what to use instead.
Nothing here is trusted: :class:`camloc.CAM` checks trunk + head against the model's own ``model(x)`` once.
No forward hooks are used when the model exposes its features; nothing about the model is changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from camloc._checks import check_choice, fail
from camloc.errors import UnsupportedModelError
from camloc.heads import Head, LinearHead, Pool, ReluConvHead, SklearnHead, _linear_module

__all__ = ["CamHead", "ResolvedHead", "resolve_head"]

Features = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class ResolvedHead:
    """A model split into a feature trunk and a computing :class:`~camloc.heads.Head`.

    Attributes:
        model: the wrapped model (never modified).
        features: ``x [N, 3, H, W] -> f [N, K, h, w]``, the model's own trunk modules; ``None`` when the features
            are read from ``feature_module`` during ``model(x)``.
        head: the head whose ``logits`` / ``maps`` camloc uses.
        source: how trunk and head were found, for messages.
        own: ``True`` when the head is the model's own (its logits must equal ``model(x)``); ``False`` for a
            head swapped in from outside (checked on its own identity only).
        feature_module: explicit override: the submodule whose output is the feature map (read with a temporary
            forward hook that is always removed).
    """

    model: nn.Module
    features: Features | None
    head: Head
    source: str
    own: bool = True
    feature_module: nn.Module | None = None

    @property
    def pool(self) -> Pool:
        return self.head.pool

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def classifier(self) -> nn.Module | None:
        """The head's linear module (``nn.Linear`` / 1x1 ``nn.Conv2d``), if it has one."""
        for attr in ("classifier", "module"):
            mod = getattr(self.head, attr, None)
            if isinstance(mod, nn.Module):
                return mod
        return None

    @property
    def weight(self) -> torch.Tensor:
        """``Tensor[C, K]`` weights of linear-type heads."""
        w = getattr(self.head, "weight", None)
        if not isinstance(w, torch.Tensor):
            raise AttributeError(f"{type(self.head).__name__} has no `weight`")
        return w

    @property
    def bias(self) -> torch.Tensor | None:
        b = getattr(self.head, "bias", None)
        return b if isinstance(b, torch.Tensor) else None

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the trunk: ``(features [N, K, h, w], model logits [N, C] or None)``.

        The model's logits come for free (not ``None``) only on the hook path, which runs ``model(x)``.
        """
        if self.feature_module is None:
            assert self.features is not None
            f = self.features(x)
            _check_features(f, self.source)
            return f, None
        captured: list[torch.Tensor] = []
        handle = self.feature_module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        if not captured:
            raise UnsupportedModelError(f"`features` module ({self.source}) did not run during model(x)")
        f = captured[-1]
        _check_features(f, self.source)
        return f, logits if isinstance(logits, torch.Tensor) else None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [N, K, h, w], head.logits(features) [N, C])``."""
        f, _ = self.run(x)
        return f, self.head.logits(f)


CamHead = ResolvedHead
"""Deprecated name of :class:`ResolvedHead`."""


def _check_features(f: Any, source: str) -> None:
    if not isinstance(f, torch.Tensor) or f.ndim != 4:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise UnsupportedModelError(
            f"features must be a 4-D map [N, K, h, w]; {source} gave {shape}. Class activation maps need a "
            "spatial feature map (token-based transformers do not have one)."
        )


# --------------------------------------------------------------------------------------------- given heads


def _is_submodule(model: nn.Module, mod: nn.Module) -> bool:
    return any(m is mod for m in model.modules())


def _as_head(model: nn.Module, classifier: Any, pool: Pool | None, default_pool: Pool) -> tuple[Head, bool]:
    """``classifier=`` as ``(head, own)``: a Head, a submodule name, an nn.Linear / 1x1 conv, or sklearn."""
    if isinstance(classifier, Head):
        if pool is not None and pool != classifier.pool:
            fail("pool", f"{classifier.pool!r} (set by the given head) or left out", pool)
        mods = classifier.modules()
        return classifier, bool(mods) and all(_is_submodule(model, m) for m in mods)
    if isinstance(classifier, str):
        try:
            mod = model.get_submodule(classifier)
        except AttributeError:
            fail("classifier", "the name of a submodule of the model", repr(classifier))
        return LinearHead(_linear_module(mod), pool=pool or default_pool), True
    if isinstance(classifier, nn.Module):
        return LinearHead(_linear_module(classifier), pool=pool or default_pool), _is_submodule(model, classifier)
    if hasattr(classifier, "coef_") or hasattr(classifier, "decision_function"):
        return SklearnHead(classifier, pool=pool or default_pool), False
    fail(
        "classifier",
        "a submodule name, an nn.Linear / 1x1 nn.Conv2d, a camloc Head or a fitted scikit-learn linear classifier",
        classifier,
        type_error=True,
    )
    raise AssertionError  # unreachable


def _explicit(
    model: nn.Module,
    features: str | Features,
    classifier: Any,
    pool: Pool | None,
) -> ResolvedHead:
    if classifier is None:
        fail("classifier", "given together with `features` (a module name, nn.Linear or Head)", None)
    head, own = _as_head(model, classifier, pool, "avg")
    if isinstance(features, str):
        try:
            mod = model.get_submodule(features)
        except AttributeError:
            fail("features", "the name of a submodule of the model", repr(features))
        return ResolvedHead(model, None, head, f"explicit features={features!r}", own, mod)
    if not callable(features):
        fail("features", "a submodule name or a callable x -> features", features, type_error=True)
    return ResolvedHead(model, features, head, "explicit features callable", own)


# --------------------------------------------------------------------------------------------- timm contract

_POST_POOL_OK = (nn.Identity, nn.Dropout, nn.Flatten)


def _is_pass_through(mod: nn.Module) -> bool:
    # Parameter-free activations/normalisations are *not* pass-throughs; only empty containers are.
    return isinstance(mod, nn.Sequential) and len(mod) == 0


def _timm_pool(model: nn.Module, gp: nn.Module | None, pool: Pool | None) -> Pool:
    t = getattr(gp, "pool_type", None) if gp is not None else None
    pool_type = pool or getattr(model, "cam_pool", None) or (t if isinstance(t, str) else None)
    if pool_type in ("avg", "fast", "avgavg") or pool_type is None:
        return "avg"  # None: verified against model(x) by camloc.CAM's identity check
    if pool_type == "max":
        return "max"
    raise UnsupportedModelError(
        f"{type(model).__name__} pools with {pool_type!r}; CAM is defined for global average ('avg') or max "
        "('max') pooling"
    )


def _timm_contract(model: nn.Module, pool: Pool | None, swap: bool) -> tuple[Features, Head | None, str, int | None]:
    name = type(model).__name__
    source = f"{name} (forward_features/forward_head contract)"
    children = dict(model.named_children())
    head_mod = children.get("head")
    gp = children.get("global_pool")
    if isinstance(head_mod, nn.Module):
        gp = getattr(head_mod, "global_pool", gp)
    k = getattr(model, "num_features", None)
    k = k if isinstance(k, int) else None
    feats: Features = model.forward_features  # type: ignore[assignment]
    if swap:  # the model's own head is not used: only the trunk matters
        return feats, None, source, k
    clf = model.get_classifier()  # type: ignore[operator]
    if isinstance(clf, tuple | list):
        raise UnsupportedModelError(f"{name} has several classifiers (distillation heads); CAM needs exactly one")
    if isinstance(clf, nn.Identity) or clf is None:
        raise UnsupportedModelError(f"{name} has no classifier (created with num_classes=0); CAM needs one")
    clf = _linear_module(clf)
    # Modules between global pooling and the classifier must be parameter-free pass-throughs.
    suspicious: list[str] = []
    if "global_pool" in children:
        after = list(children)[list(children).index("global_pool") + 1 :]
        for key in after:
            mod = children[key]
            if mod is clf or isinstance(mod, _POST_POOL_OK) or _is_pass_through(mod):
                continue
            suspicious.append(f"{key} ({type(mod).__name__})")
    if isinstance(head_mod, nn.Module) and head_mod is not clf:
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
    head = LinearHead(clf, pool=_timm_pool(model, gp, pool))
    return feats, head, source, head.in_features


# --------------------------------------------------------------------------------------------- torchvision

_TV_REFUSED = {
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


def _seq(*mods: nn.Module) -> nn.Sequential:
    """A Sequential that *references* the model's own modules (no copies: weights stay shared)."""
    return nn.Sequential(*mods)


def _torchvision(model: nn.Module) -> tuple[Features, Head, str] | None:
    """The trunk (the model's own modules, in its forward's order) and the head of a torchvision classifier.

    The trunk must reproduce the model's forward up to the pooling; :class:`camloc.CAM` checks that
    ``head.logits(trunk(x)) == model(x)``, so a wrong trunk here is refused, not trusted.
    """
    try:
        from torchvision import models as tvm
    except ImportError:  # pragma: no cover
        return None
    name = type(model).__name__
    if name in _TV_REFUSED and isinstance(model, getattr(tvm, name, ())):
        raise UnsupportedModelError(f"torchvision {name} is not supported: {_TV_REFUSED[name]}.")

    m: Any = model
    relu = torch.nn.functional.relu
    if isinstance(model, tvm.ResNet):
        feats = _seq(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
        return feats, LinearHead(m.fc), "torchvision resnet"
    if isinstance(model, tvm.DenseNet):
        return (lambda x: relu(m.features(x))), LinearHead(m.classifier), "torchvision densenet"
    if isinstance(model, tvm.MobileNetV2):
        return m.features, LinearHead(m.classifier[-1]), "torchvision mobilenet_v2"
    if isinstance(model, tvm.EfficientNet):
        return m.features, LinearHead(m.classifier[-1]), "torchvision efficientnet"
    if isinstance(model, tvm.RegNet):
        return _seq(m.stem, m.trunk_output), LinearHead(m.fc), "torchvision regnet"
    if isinstance(model, tvm.ShuffleNetV2):
        feats = _seq(m.conv1, m.maxpool, m.stage2, m.stage3, m.stage4, m.conv5)
        return feats, LinearHead(m.fc), "torchvision shufflenet_v2"
    if isinstance(model, tvm.MNASNet):
        return m.layers, LinearHead(m.classifier[-1]), "torchvision mnasnet"
    if isinstance(model, tvm.GoogLeNet):
        seq = _seq(
            m.conv1, m.maxpool1, m.conv2, m.conv3, m.maxpool2, m.inception3a, m.inception3b, m.maxpool3,
            m.inception4a, m.inception4b, m.inception4c, m.inception4d, m.inception4e, m.maxpool4,
            m.inception5a, m.inception5b,
        )  # fmt: skip
        return (lambda x: seq(m._transform_input(x))), LinearHead(m.fc), "torchvision googlenet"
    if isinstance(model, tvm.Inception3):
        seq = _seq(
            m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.maxpool1, m.Conv2d_3b_1x1, m.Conv2d_4a_3x3,
            m.maxpool2, m.Mixed_5b, m.Mixed_5c, m.Mixed_5d, m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d,
            m.Mixed_6e, m.Mixed_7a, m.Mixed_7b, m.Mixed_7c,
        )  # fmt: skip
        return (lambda x: seq(m._transform_input(x))), LinearHead(m.fc), "torchvision inception_v3"
    if isinstance(model, tvm.SqueezeNet):
        # classifier = Dropout -> Conv2d(512, C, 1) -> ReLU -> AdaptiveAvgPool2d(1); the conv runs before pooling.
        return m.features, ReluConvHead(m.classifier[1]), "torchvision squeezenet (1x1 conv + ReLU before pooling)"
    return None


# --------------------------------------------------------------------------------------------- entry point


def _with_pool(head: Head, pool: Pool | None, source: str) -> Head:
    if pool is None or pool == head.pool:
        return head
    if isinstance(head, LinearHead) and not isinstance(head, SklearnHead):
        return LinearHead(head.module, pool=pool)
    raise UnsupportedModelError(f"{source}: its {head.describe()} head has no {pool!r}-pooling variant")


def resolve_head(
    model: nn.Module,
    *,
    features: str | Features | None = None,
    classifier: str | nn.Module | Head | Any | None = None,
    pool: Pool | None = None,
) -> ResolvedHead:
    """Split ``model`` into a feature trunk and a :class:`~camloc.heads.Head` (module docstring for the order).

    Args:
        model: an ``nn.Module`` classifier.
        features: explicit trunk: a submodule name (its output is read with a temporary hook during ``model(x)``)
            or a callable ``x -> Tensor[N, K, h, w]``. Requires ``classifier``.
        classifier: the head: a submodule name, an ``nn.Linear`` / 1x1 ``nn.Conv2d``, a
            :class:`~camloc.heads.Head` or a fitted scikit-learn linear classifier. Without ``features`` it
            replaces the model's head on the automatically found trunk; its input size must match the trunk's.
        pool: ``"avg"`` or ``"max"``; overrides what was detected (default for a given classifier: the model's
            own pooling where detected, else ``"avg"``).

    Raises:
        UnsupportedModelError: the head is not one of camloc's head kinds, or cannot be found.
    """
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", model, type_error=True)
    if pool is not None:
        check_choice("pool", pool, ("avg", "max"))
    if features is not None:
        return _explicit(model, features, classifier, pool)
    swap = classifier is not None
    trunk: Features
    own: Head | None
    if all(callable(getattr(model, a, None)) for a in ("forward_features", "forward_head", "get_classifier")):
        trunk, own, source, k = _timm_contract(model, pool, swap)
        default_pool = pool or _safe_timm_pool(model)
    else:
        found = _torchvision(model)
        if found is None:
            raise UnsupportedModelError(
                f"cannot find the features and the pool -> linear head of {type(model).__name__}: it does not "
                "follow the timm contract (forward_features/forward_head/get_classifier) and is not a known "
                "torchvision family. Pass them explicitly: CAM(model, features='<module name>', "
                "classifier='<linear name>', pool='avg')."
            )
        trunk, own, source = found
        k, default_pool = own.in_features, own.pool
    if not swap:
        assert own is not None
        return ResolvedHead(model, trunk, _with_pool(own, pool, source), source)
    head, is_own = _as_head(model, classifier, pool, default_pool)
    if k is not None and head.in_features is not None and head.in_features != k:
        fail(
            "classifier",
            f"a head taking the {k} feature channels of {source}",
            f"{head.describe()} taking {head.in_features}",
        )
    return ResolvedHead(model, trunk, head, f"{source} with classifier {head.describe()}", is_own)


def _safe_timm_pool(model: nn.Module) -> Pool:
    children = dict(model.named_children())
    gp = children.get("global_pool")
    head_mod = children.get("head")
    if isinstance(head_mod, nn.Module):
        gp = getattr(head_mod, "global_pool", gp)
    try:
        return _timm_pool(model, gp, None)
    except UnsupportedModelError:
        return "avg"
