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
from typing import Any, Literal

import torch
from torch import nn

from camloc._checks import check_choice, fail
from camloc.errors import UnsupportedModelError
from camloc.heads import (
    BatchNormPoolHead,
    Head,
    LinearHead,
    NormPoolHead,
    Pool,
    ReluConvHead,
    SklearnHead,
    _linear_module,
)

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
        reference: ``x -> the model's own logits`` where ``model(x)`` is not them (Keras: after softmax).
        follows_train_flag: ``False`` when ``model.training`` does not set how ``model(x)`` runs (Keras).
    """

    model: nn.Module
    features: Features | None
    head: Head
    source: str
    own: bool = True
    feature_module: nn.Module | None = None
    reference: Callable[[torch.Tensor], Any] | None = None
    follows_train_flag: bool = True

    @property
    def in_training(self) -> bool:
        """Whether ``model(x)`` runs in training mode now (``model.training``; always ``False`` for models whose
        layers take the mode per call, as Keras layers do, ``follows_train_flag=False``)."""
        return self.follows_train_flag and bool(self.model.training)

    def model_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own logits ``[N, C]`` for ``x``: ``model(x)``, or ``reference(x)`` where the model's output is
        not its logits (Keras: probabilities after softmax). Output objects with ``.logits`` (Hugging Face) and
        mappings with ``"logits"`` are unwrapped; anything else raises :class:`~camloc.errors.UnsupportedModelError`.
        """
        out = self.reference(x) if self.reference is not None else self.model(x)
        logits = _as_logits(out)
        if logits is None:
            raise UnsupportedModelError(
                f"{self.source}: model(x) returned {type(out).__name__}, not a logits tensor (nor an object with "
                "`.logits`), so the head cannot be checked against it; pass check_identity=False to skip the check"
            )
        return logits

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
            logits = _as_logits(self.model(x))
        finally:
            handle.remove()
        if not captured:
            raise UnsupportedModelError(f"`features` module ({self.source}) did not run during model(x)")
        f = captured[-1]
        _check_features(f, self.source)
        return f, logits

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [N, K, h, w], head.logits(features) [N, C])``."""
        f, _ = self.run(x)
        return f, self.head.logits(f)


CamHead = ResolvedHead
"""Deprecated name of :class:`ResolvedHead`."""


def _as_logits(out: Any) -> torch.Tensor | None:
    """``out`` if a tensor, ``out.logits`` (Hugging Face outputs) or ``out["logits"]``; else ``None``."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, dict):
        logits = out.get("logits")
    return logits if isinstance(logits, torch.Tensor) else None


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

ALTERNATIVES = (
    "Alternatives: a GAP head on the same trunk (`camloc train --arch timm:NAME`, the paper's -GAP recipe), a "
    "linear head fitted on its pooled features (`camloc fit`, or CAM(model, classifier=...)), or an approximate "
    "map method."
)
"""What every refusal of a head without an exact CAM suggests instead."""


def _arch(model: nn.Module) -> str:
    """timm's architecture name of ``model`` (its class name when timm did not record one)."""
    cfg = getattr(model, "pretrained_cfg", None)
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    return arch if isinstance(arch, str) else type(model).__name__


def _is_pass_through(mod: nn.Module) -> bool:
    # Parameter-free activations/normalisations are *not* pass-throughs; only empty containers are.
    return isinstance(mod, _POST_POOL_OK) or (isinstance(mod, nn.Sequential) and len(mod) == 0)


def _pool_kind(model_name: str, pool_type: str | None, pool: Pool | None) -> Pool:
    pool_type = pool or pool_type
    if pool_type in ("avg", "fast", "avgavg") or pool_type is None:
        return "avg"  # None: verified against model(x) by camloc.CAM's identity check
    if pool_type == "max":
        return "max"
    if pool_type == "token":
        raise UnsupportedModelError(
            f"{model_name} classifies its class token (global_pool='token'): the logit reaches the patch tokens only "
            "through attention, so it has no exact spatial decomposition. Create it with global_pool='avg' "
            "(timm.create_model(name, global_pool='avg'): the map then lives on the patch grid) and fine-tune the "
            "head, or fit a linear head on its average-pooled patch tokens (`camloc fit`); or use an approximate "
            "map method."
        )
    if pool_type == "map":
        raise UnsupportedModelError(
            f"{model_name} pools with attention (global_pool='map'): the weights of the tokens depend on the image "
            "through a learned query, so the logit has no exact spatial decomposition. Create it with "
            "global_pool='avg' and fine-tune the head, or use an approximate map method."
        )
    raise UnsupportedModelError(
        f"{model_name} pools with {pool_type!r}; CAM is defined for global average ('avg') or max ('max') pooling"
    )


Layout = Literal["NCHW", "NHWC"]


@dataclass(frozen=True)
class _TimmTrunk:
    """``x -> forward_features(x)`` in camloc's layout ``[N, K, h, w]``.

    timm models return NCHW maps (CNNs), NHWC maps (Swin, MambaOut, ... : ``output_fmt == 'NHWC'``) or
    ``[N, L, K]`` tokens (ViT/DeiT/BEiT/Eva, MLP-Mixer, ResMLP): the first ``prefix`` tokens (class, register and
    distillation tokens) are dropped, as the model's average pooling drops them, and the ``h * w`` patch tokens,
    which timm orders row-major on the patch grid, are reshaped to ``[N, K, h, w]`` (``h = H / stride``).
    """

    model: nn.Module
    channels: int
    layout: Layout | None
    prefix: int
    stride: int | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.forward_features(x)  # type: ignore[operator]
        if not isinstance(f, torch.Tensor):
            raise UnsupportedModelError(
                f"{type(self.model).__name__}.forward_features returned {type(f).__name__}, not a feature tensor"
            )
        k = self.channels
        if f.ndim == 4:
            nhwc = self.layout == "NHWC" or (self.layout is None and f.shape[1] != k and f.shape[-1] == k)
            return f.permute(0, 3, 1, 2) if nhwc else f
        if f.ndim == 3 and f.shape[-1] == k:
            return _tokens_to_grid(f[:, self.prefix :], x.shape[-2:], self.stride, type(self.model).__name__)
        raise UnsupportedModelError(
            f"{type(self.model).__name__}.forward_features gave {tuple(f.shape)}: not a spatial map [N, {k}, h, w], "
            f"[N, h, w, {k}] or tokens [N, L, {k}], so there is no class activation map"
        )


def _tokens_to_grid(t: torch.Tensor, size: Any, stride: int | None, name: str) -> torch.Tensor:
    """Row-major patch tokens ``[N, h*w, K]`` -> ``[N, K, h, w]`` for an input of ``size = (H, W)``."""
    n, length, k = t.shape
    big_h, big_w = int(size[0]), int(size[1])
    grids = []
    if stride:
        grids = [(big_h // stride, big_w // stride), (-(-big_h // stride), -(-big_w // stride))]
    side = round(length**0.5)
    if big_h == big_w and side * side == length:
        grids.append((side, side))
    for h, w in grids:
        if h * w == length:
            return t.reshape(n, h, w, k).permute(0, 3, 1, 2)
    raise UnsupportedModelError(
        f"{name}: cannot place its {length} pooled tokens on the patch grid of a {big_h}x{big_w} input "
        f"(stride {stride}); class activation maps need the tokens' grid"
    )


def _model_stride(model: nn.Module) -> int | None:
    info = getattr(model, "feature_info", None)
    try:
        r = info[-1]["reduction"] if isinstance(info, list) and info else None  # type: ignore[index]
    except (KeyError, TypeError):
        r = None
    if isinstance(r, int) and r > 0:
        return r
    pe = getattr(model, "patch_embed", None) or getattr(model, "stem", None)
    ps = getattr(pe, "patch_size", None)
    if isinstance(ps, tuple | list) and ps and len(set(ps)) == 1:
        ps = ps[0]
    return ps if isinstance(ps, int) else None


def _norm_kind(mod: nn.Module, k: int | None) -> bool:
    """A LayerNorm over ``k`` channels (``nn.LayerNorm`` and its subclasses: timm's LayerNorm/LayerNorm2d)."""
    return isinstance(mod, nn.LayerNorm) and (k is None or tuple(mod.normalized_shape) == (k,))


def _leaves(mods: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """``mods`` with containers replaced by their leaf modules (norms and linear layers count as leaves), each
    module once: a head module listed with its children is checked once, through its children."""
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def visit(key: str, m: nn.Module) -> None:
        kids = list(m.named_children())
        if kids and not isinstance(m, nn.LayerNorm | nn.BatchNorm1d | nn.Linear | nn.Conv2d):
            for k2, c in kids:
                visit(f"{key}.{k2}", c)
        elif id(m) not in seen:
            seen.add(id(m))
            out.append((key, m))

    for key, m in mods:
        visit(key, m)
    return out


def _batchnorm_kind(mod: nn.Module, k: int) -> bool:
    """A BatchNorm1d over ``k`` channels with running statistics (a fixed affine map in eval mode)."""
    return isinstance(mod, nn.BatchNorm1d) and mod.num_features == k and mod.track_running_stats


def _timm_contract(model: nn.Module, pool: Pool | None, swap: bool) -> tuple[Features, Head | None, str, int | None]:
    """Trunk and head of a model following timm's contract; module docstring of :mod:`camloc.resolve`.

    Between the pooling and the classifier only pass-throughs and at most one norm over the channels are allowed:
    a LayerNorm (:class:`~camloc.heads.NormPoolHead`) or a BatchNorm1d with running statistics
    (:class:`~camloc.heads.BatchNormPoolHead`, timm's ``NormLinear`` included); the features may be NCHW, NHWC or
    tokens. timm's ``ClassifierHead`` returned as the classifier is unwrapped to its ``fc``.
    """
    name = type(model).__name__
    source = f"{name} (forward_features/forward_head contract)"
    children = dict(model.named_children())
    head_mod = children.get("head")
    gp_attr = getattr(model, "global_pool", None)
    # Where the pooling is, what runs after it, and the features' layout.
    post: list[tuple[str, nn.Module]] = []
    layout: Layout | None = None
    pool_type: str | None = None
    post_in_head = isinstance(head_mod, nn.Module) and isinstance(getattr(head_mod, "global_pool", None), nn.Module)
    if post_in_head:
        assert isinstance(head_mod, nn.Module)
        gp = head_mod.global_pool
        pool_type = getattr(gp, "pool_type", None)
        post = [(f"head.{key}", m) for key, m in head_mod.named_children() if key != "global_pool"]
        fmt = getattr(head_mod, "input_fmt", None)
        layout = fmt if fmt in ("NCHW", "NHWC") else None
    elif isinstance(gp_attr, str):  # token models: ViT/DeiT/BEiT/Eva, MLP-Mixer, ResMLP (pool in forward_head)
        pool_type = gp_attr
        if getattr(model, "attn_pool", None) is not None:
            pool_type = "map"
        if getattr(model, "pool_include_prefix", False) and int(getattr(model, "num_prefix_tokens", 0) or 0):
            raise UnsupportedModelError(
                f"{name} averages its class/register tokens together with the patch tokens (pool_include_prefix): "
                "those tokens have no place on the patch grid, so the map would not sum to the logit. " + ALTERNATIVES
            )
        post = [(key, children[key]) for key in ("fc_norm", "head_drop", "pre_logits") if key in children]
    elif isinstance(gp_attr, nn.Module):
        pool_type = getattr(gp_attr, "pool_type", None)
        keys = list(children)
        if "global_pool" in keys:
            post = [(key, children[key]) for key in keys[keys.index("global_pool") + 1 :]]
    token_pool = isinstance(gp_attr, str) and not post_in_head
    if isinstance(head_mod, nn.Module) and not post_in_head:  # a head module without its own pooling module
        post += [(f"head.{key}", m) for key, m in head_mod.named_children()]
    cam_pool = getattr(model, "cam_pool", None)  # camloc's own networks declare their pooling
    if isinstance(cam_pool, str):
        pool_type = cam_pool
    if layout is None:
        fmt = getattr(model, "output_fmt", None)
        layout = fmt if fmt in ("NCHW", "NHWC") else None
    k = getattr(model, "num_features", None)
    k = k if isinstance(k, int) else None
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    if swap:  # the model's own head is not used: only the trunk matters
        return _TimmTrunk(model, k or -1, layout, prefix, _model_stride(model)), None, source, k
    clf = model.get_classifier()  # type: ignore[operator]
    if isinstance(clf, tuple | list):
        raise UnsupportedModelError(
            f"{name} has several classifiers (a distillation head: the logit averages the class-token head and the "
            "distillation-token head, neither of which pools the patch tokens), so there is no exact map. Use the "
            "non-distilled model created with global_pool='avg', or fit a linear head on its pooled patch tokens "
            "(`camloc fit`)."
        )
    if isinstance(clf, nn.Identity) or clf is None:
        raise UnsupportedModelError(f"{name} has no classifier (created with num_classes=0); CAM needs one")
    norm: nn.Module | None = None
    wrapped = dict(clf.named_children()) if isinstance(clf, nn.Module) else {}
    if isinstance(wrapped.get("fc"), nn.Linear) and isinstance(wrapped.get("global_pool"), nn.Module):
        clf = wrapped["fc"]  # timm's ClassifierHead (pool -> drop -> fc) returned as the classifier
    elif isinstance(wrapped.get("bn"), nn.BatchNorm1d) and isinstance(wrapped.get("linear"), nn.Linear):
        norm, clf = wrapped["bn"], wrapped["linear"]  # timm's NormLinear (BatchNorm1d -> drop -> linear)
    if not isinstance(clf, nn.Linear | nn.Conv2d):
        raise UnsupportedModelError(
            f"{name}'s classifier is {type(clf).__name__}, not nn.Linear / a 1x1 nn.Conv2d (a hidden layer or a "
            "normalisation inside the classifier), so a class activation map is not defined. "
            + ALTERNATIVES.replace("NAME", _arch(model))
        )
    clf = _linear_module(clf)
    kind = _pool_kind(name, pool_type if isinstance(pool_type, str) else None, pool)
    kin = int(clf.weight.shape[1])
    suspicious: list[str] = []
    for key, mod in _leaves(post):
        if mod is clf or mod is norm or _is_pass_through(mod):
            continue
        if norm is None and (_norm_kind(mod, kin) or _batchnorm_kind(mod, kin)) and kind == "avg":
            norm = mod
            continue
        suspicious.append(f"{key} ({type(mod).__name__})")
    pre = children.get("pre_logits")
    if isinstance(pre, nn.Module) and any(True for _ in pre.parameters()) and not any(m is pre for _, m in post):
        suspicious.append(f"pre_logits ({type(pre).__name__})")
    if suspicious:
        raise UnsupportedModelError(
            f"{name}'s head is not pooling -> [LayerNorm ->] linear: found {', '.join(suspicious)} between the "
            "features and the classifier (a hidden fully-connected layer or another nonlinearity), so a class "
            "activation map is not defined. " + ALTERNATIVES.replace("NAME", _arch(model))
        )
    if k is not None and kin != k:
        raise UnsupportedModelError(
            f"{name}'s classifier takes {kin} features but its trunk gives {k}: a hidden fully-connected layer "
            "sits between the pooled features and the classifier, so a class activation map is not defined. "
            + ALTERNATIVES.replace("NAME", _arch(model))
        )
    head: Head
    if norm is None:
        head = LinearHead(clf, pool=kind)
    elif isinstance(norm, nn.BatchNorm1d):
        if kind != "avg":
            raise UnsupportedModelError(f"{name} max-pools before its BatchNorm1d head; CAM needs avg pooling here")
        head = BatchNormPoolHead(norm, clf)
    else:
        head = NormPoolHead(norm, clf)
    trunk = _TimmTrunk(model, kin, layout, prefix, _model_stride(model))
    what = ", NHWC features" if layout == "NHWC" else ""
    if token_pool:
        what = f", {prefix} prefix tokens dropped, patch tokens on the grid" if prefix else ", tokens on the grid"
    return trunk, head, source + what, head.in_features


# --------------------------------------------------------------------------------------------- torchvision

_TV_REFUSED = {
    "VGG": "its classifier is a stack of fully-connected layers after 7x7 pooling; use camloc's 'vgg16_gap' "
    "(the paper's VGG16-GAP), trained or fine-tuned with `camloc train`, or fit a linear head on its pooled "
    "features (`camloc fit`)",
    "AlexNet": "its classifier is a stack of fully-connected layers; use camloc's 'alexnet_gap' (the paper's "
    "AlexNet-GAP), trained or fine-tuned with `camloc train`, or fit a linear head on its pooled features "
    "(`camloc fit`)",
    "MobileNetV3": "its head has a hidden fully-connected layer (Linear -> Hardswish) after pooling; use "
    "mobilenet_v2 or efficientnet, a GAP head via `camloc train --arch torchvision:mobilenet_v3_large`, or a "
    "linear head fitted on its pooled features (`camloc fit`)",
    "VisionTransformer": "it classifies its class token, which reaches the patch tokens only through attention, "
    "so the logit has no exact spatial decomposition; use timm's ViT created with global_pool='avg', fit a linear "
    "head on its pooled patch tokens (`camloc fit`), or an approximate map method",
    "MaxVit": "its head has a hidden layer (LayerNorm -> Linear -> Tanh) after pooling; fit a linear head on its "
    "pooled features (`camloc fit`) or use an approximate map method",
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
    if isinstance(model, tvm.ConvNeXt):
        # avgpool -> classifier = LayerNorm2d -> Flatten -> Linear: LayerNorm after pooling.
        head = NormPoolHead(m.classifier[0], m.classifier[2])
        return m.features, head, "torchvision convnext (avg-pool -> LayerNorm -> linear)"
    if isinstance(model, tvm.SwinTransformer):
        # features -> norm (per token, NHWC) -> permute to NCHW -> avgpool -> flatten -> head: tokens normed, then
        # averaged; the trunk ends at the permute.
        return (lambda x: m.permute(m.norm(m.features(x)))), LinearHead(m.head), "torchvision swin (normed tokens)"
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
    if _from_package(model, "keras"):
        from camloc.keras import keras_resolved

        return keras_resolved(model, features=features, classifier=classifier, pool=pool)
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module (or a Keras 3 model)", model, type_error=True)
    if pool is not None:
        check_choice("pool", pool, ("avg", "max"))
    if features is not None:
        return _explicit(model, features, classifier, pool)
    swap = classifier is not None
    trunk: Features
    own: Head | None
    if _from_package(model, "transformers"):
        from camloc.hf import hf_parts

        trunk, own, source, k = hf_parts(model, swap=swap)
        default_pool = own.pool if own is not None else "avg"
    elif all(callable(getattr(model, a, None)) for a in ("forward_features", "forward_head", "get_classifier")):
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


def _from_package(model: Any, package: str) -> bool:
    """Whether ``model``'s class (or a base class) comes from ``package`` (nothing is imported to tell)."""
    return any(c.__module__.split(".")[0] == package for c in type(model).__mro__)


def _safe_timm_pool(model: nn.Module) -> Pool:
    """The model's own pooling where it is avg or max, else ``"avg"`` (the default for a swapped head)."""
    head_mod = getattr(model, "head", None)
    gp = getattr(head_mod, "global_pool", None) if isinstance(head_mod, nn.Module) else None
    gp = gp if gp is not None else getattr(model, "global_pool", None)
    t = gp if isinstance(gp, str) else getattr(gp, "pool_type", None)
    t = getattr(model, "cam_pool", None) or t
    return "max" if t == "max" else "avg"
