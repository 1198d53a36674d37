"""The CAM paper's GAP networks (Zhou et al., CVPR 2016, Sec. 2) and a GAP head for any CNN trunk.

The paper turns a classification CNN into a localizer by removing the layers after its last kept conv stage,
adding a 3x3 conv (stride 1, pad 1, 1024 units) + ReLU, global average pooling (GAP) and one linear layer.
Every network built here is a :class:`GapNet` and follows timm's head contract, so camloc finds its CAM:

- ``forward_features(x: Tensor[N, 3, H, W]) -> Tensor[N, K, h, w]`` (unpooled, after the added conv + ReLU),
- ``forward_head(f, pre_logits=False) -> Tensor[N, C]`` (pool -> flatten -> dropout -> linear; with
  ``pre_logits=True`` the pooled ``Tensor[N, K]``),
- ``get_classifier() -> nn.Linear``, ``reset_classifier(num_classes)``, ``cam_pool in {"avg", "max"}``.

With ``cam_pool == "avg"`` the class activation map ``M_c = sum_k w_ck f_k`` satisfies exactly
``mean_xy(M_c) + b_c == logit_c`` (no ReLU on ``M_c``). The ``*_gmp`` variants pool with the maximum instead.

Registered names (see :func:`camloc.models.registry.list_models`): ``alexnet_gap``, ``vgg16_gap``,
``googlenet_gap``, ``tiny_gap`` and their ``*_gmp`` twins. They reuse torchvision's modules, so the kept layers
load from torchvision checkpoints (``pretrained``): AlexNet keeps conv1-conv5 (+ReLU; pool5 and the FC layers
go), VGG16 keeps conv1_1-conv5_3 (pool5 and the FC layers go), GoogLeNet keeps everything up to inception4e
(pool4, inception5a/5b, the pooling, dropout, fc and the aux heads go). torchvision's GoogLeNet has batch norm
after every conv, unlike the original the paper used. Its ``transform_input`` (which maps ImageNet-normalised
input to the ``(x - 0.5) / 0.5`` input the ported Google weights expect) becomes the trunk's first module
when ``pretrained`` is given (as torchvision does when it loads those weights) and is left out when training
from scratch; ``transform_input=True/False`` overrides. ``tiny_*`` is a small trunk for tests and demos.
:func:`build_gap_network` also accepts ``timm:NAME`` and ``torchvision:NAME`` trunks. Weights are never
downloaded: ``pretrained`` is a local file.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from camloc._checks import check_choice, check_number, fail
from camloc.checkpoint import FORMAT as CHECKPOINT_FORMAT  # re-exported (the one checkpoint format)
from camloc.checkpoint import peek_checkpoint
from camloc.errors import CamlocValueError, UnsupportedModelError
from camloc.models.info import ModelInfo, Preprocess, RegisteredModel
from camloc.models.weights import describe_key_mismatch, load_state_dict_file, load_weights_strict

__all__ = [
    "BUILTIN_MODELS",
    "CHECKPOINT_FORMAT",
    "PAPER_ARCHS",
    "GapNet",
    "build_gap_network",
    "gap_head",
    "load_trunk_weights",
]

Pool = Literal["avg", "max"]
_PAPER_FAMILIES = ("alexnet", "vgg16", "googlenet", "tiny")
PAPER_ARCHS: tuple[str, ...] = tuple(f"{f}_{p}" for f in _PAPER_FAMILIES for p in ("gap", "gmp"))
_DEFAULT_CONV = {"alexnet": 1024, "vgg16": 1024, "googlenet": 1024, "tiny": 64}
_DEFAULT_SIZE = {"alexnet": 224, "vgg16": 224, "googlenet": 224, "tiny": 64}


class GapNet(nn.Module):
    """``trunk -> [3x3 conv + ReLU] -> global pool -> flatten -> dropout -> linear``.

    Args:
        trunk: module mapping ``Tensor[N, 3, H, W]`` to ``Tensor[N, in_channels, h, w]``.
        in_channels: channels of the trunk's output.
        num_classes: outputs of the linear classifier (>= 1).
        pool: ``"avg"`` (GAP, the paper's CAM network) or ``"max"`` (GMP, its baseline).
        conv_channels: units of the added 3x3 conv (stride 1, pad 1) + ReLU; ``None`` adds no conv.
        drop_rate: dropout on the pooled vector during training.

    ``num_features`` is K, the channel count of :meth:`forward_features`.
    """

    def __init__(
        self,
        trunk: nn.Module,
        *,
        in_channels: int,
        num_classes: int,
        pool: Pool = "avg",
        conv_channels: int | None = 1024,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_number("in_channels", in_channels, low=1, integer=True)
        check_number("num_classes", num_classes, low=1, integer=True)
        check_choice("pool", pool, ("avg", "max"))
        check_number("drop_rate", drop_rate, low=0.0, high=1.0)
        self.trunk = trunk
        if conv_channels is None:
            self.extra: nn.Module = nn.Identity()
            self.num_features = int(in_channels)
        else:
            check_number("conv_channels", conv_channels, low=1, integer=True)
            conv = nn.Conv2d(in_channels, conv_channels, kernel_size=3, stride=1, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
            self.extra = nn.Sequential(OrderedDict([("conv", conv), ("relu", nn.ReLU(inplace=True))]))
            self.num_features = int(conv_channels)
        self.cam_pool: str = pool
        self.drop_rate = float(drop_rate)
        self.drop = nn.Dropout(self.drop_rate)
        self.num_classes = int(num_classes)
        self.fc = self._new_fc(self.num_classes)

    def _new_fc(self, num_classes: int) -> nn.Linear:
        fc = nn.Linear(self.num_features, num_classes)
        nn.init.normal_(fc.weight, 0.0, 0.01)
        nn.init.zeros_(fc.bias)
        return fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 3, H, W] -> Tensor[N, K, h, w]`` (unpooled, after the added conv + ReLU)."""
        return self.extra(self.trunk(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``Tensor[N, K, h, w] -> Tensor[N, C]`` logits (or the pooled ``Tensor[N, K]`` if ``pre_logits``)."""
        x = x.mean(dim=(2, 3)) if self.cam_pool == "avg" else x.amax(dim=(2, 3))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the linear classifier by a freshly initialised one with ``num_classes`` outputs."""
        check_number("num_classes", num_classes, low=1, integer=True)
        self.num_classes = int(num_classes)
        self.fc = self._new_fc(self.num_classes).to(self.fc.weight.device, self.fc.weight.dtype)

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters of the layers the paper adds (3x3 conv and classifier), e.g. for a larger LR."""
        return [*self.extra.parameters(), *self.fc.parameters()]

    def trunk_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())


def gap_head(
    trunk: nn.Module,
    num_classes: int,
    *,
    pool: Pool = "avg",
    in_channels: int | None = None,
    conv_channels: int | None = None,
    drop_rate: float = 0.0,
) -> GapNet:
    """Put a GAP (or GMP) + linear head on ``trunk`` (a module returning ``Tensor[N, C, h, w]``).

    A timm model (it has ``forward_features``) is used through its ``forward_features``; build it with
    ``num_classes=0, global_pool=""``. ``in_channels`` defaults to the trunk's ``num_features`` attribute, or the
    channel count of its last conv / batch-norm layer. ``conv_channels`` adds the paper's 3x3 conv + ReLU.
    """
    if not isinstance(trunk, nn.Module):
        fail("trunk", "an nn.Module", trunk, type_error=True)
    if hasattr(trunk, "forward_features") and not isinstance(trunk, GapNet):
        trunk = _FeaturesOf(trunk)
    if in_channels is None:
        in_channels = _guess_channels(trunk)
    return GapNet(
        trunk,
        in_channels=in_channels,
        num_classes=num_classes,
        pool=pool,
        conv_channels=conv_channels,
        drop_rate=drop_rate,
    )


class _FeaturesOf(nn.Module):
    """Wrap a timm model so that ``forward`` is its ``forward_features`` (must be ``Tensor[N, C, h, w]``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_features = getattr(model, "num_features", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.forward_features(x)  # type: ignore[operator]
        if not isinstance(f, torch.Tensor) or f.ndim != 4:
            got = f"Tensor of shape {tuple(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__
            raise UnsupportedModelError(
                f"`trunk` must return a (N, C, h, w) feature map from forward_features (a CNN); got {got}"
            )
        return f


def _guess_channels(trunk: nn.Module) -> int:
    nf = getattr(trunk, "num_features", None)
    if isinstance(nf, int) and nf > 0:
        return nf
    last: int | None = None
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            last = m.out_channels
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            last = m.num_features if isinstance(m, nn.BatchNorm2d) else m.num_channels
    if last is None:
        raise CamlocValueError(
            "`in_channels` must be given (the trunk has no num_features attribute and no conv layer); got None"
        )
    return int(last)


# ---------------------------------------------------------------------------------------------------------
# Loading trunk weights from a classifier checkpoint
# ---------------------------------------------------------------------------------------------------------


def load_trunk_weights(
    trunk: nn.Module,
    state: dict[str, Any],
    *,
    key_map: dict[str, str],
    known_keys: set[str],
    source: str,
) -> None:
    """Copy ``state`` (keys of the full classifier) into ``trunk``.

    ``key_map`` maps each trunk key to its name in the full classifier; ``known_keys`` are all the full
    classifier's keys (the dropped layers' keys are ignored). Raises CamlocValueError naming missing,
    unexpected and shape-mismatched keys.
    """
    missing = [fk for fk in key_map.values() if fk not in state]
    unexpected = [k for k in state if k not in known_keys]
    own = trunk.state_dict()
    mismatched = [
        f"{fk}: file {tuple(state[fk].shape)} vs model {tuple(own[tk].shape)}"
        for tk, fk in key_map.items()
        if fk in state and hasattr(state[fk], "shape") and tuple(state[fk].shape) != tuple(own[tk].shape)
    ]
    problems = describe_key_mismatch(missing, unexpected, mismatched)
    if problems:
        raise CamlocValueError(f"`pretrained` ({source}) does not fit the trunk: {problems}")
    trunk.load_state_dict({tk: state[fk] for tk, fk in key_map.items()})


def _identity_key_map(full: nn.Module, trunk: nn.Module) -> dict[str, str]:
    """Trunk key -> full-model key, for a trunk made of the full model's own modules."""
    name_of = {id(t): k for k, t in full.state_dict(keep_vars=True).items()}
    out = {}
    for tk, t in trunk.state_dict(keep_vars=True).items():
        if id(t) not in name_of:  # pragma: no cover - a trunk module not taken from `full`
            raise CamlocValueError(f"internal: trunk key {tk!r} has no counterpart in the full model")
        out[tk] = name_of[id(t)]
    return out


_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _read_trunk_file(
    path: str | Path,
    trunk: nn.Module,
    *,
    key_map: dict[str, str],
    known_keys: set[str],
    source: str,
) -> None:
    state = load_state_dict_file(path)
    state = {(_DENSENET_OLD_KEY.sub(r"\1\2", k)): v for k, v in state.items()}
    # A camloc GapNet state dict or training checkpoint (keys trunk.*, extra.*, fc.*) also provides a trunk:
    # its trunk.* keys are trunk keys; the added conv and classifier are not used.
    if any(k.startswith("trunk.") for k in state) and all(k.startswith(("trunk.", "extra.", "fc.")) for k in state):
        state = {key_map.get(k[6:], k[6:]): v for k, v in state.items() if k.startswith("trunk.")}
    load_trunk_weights(trunk, state, key_map=key_map, known_keys=known_keys, source=f"{source} from {path}")


# ---------------------------------------------------------------------------------------------------------
# The paper's networks
# ---------------------------------------------------------------------------------------------------------


class GoogLeNetTransformInput(nn.Module):
    """torchvision GoogLeNet's ``transform_input``: ImageNet-normalised input -> ``(x - 0.5) / 0.5`` input.

    torchvision's ``IMAGENET1K_V1`` GoogLeNet weights (ported from the original release) expect it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.new_tensor([0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5]).view(1, 3, 1, 1)
        shift = x.new_tensor([(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5]).view(1, 3, 1, 1)
        return x * scale + shift


def _vgg16_trunk() -> tuple[nn.Module, int, dict[str, str], set[str]]:
    from torchvision.models import vgg as tv_vgg

    features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=False)
    for m in features.modules():  # torchvision VGG's initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)  # type: ignore[arg-type]
    trunk = nn.Sequential(*list(features.children())[:30])  # up to conv5_3 + ReLU; pool5 and FCs dropped
    with torch.device("meta"):
        known = set(tv_vgg.vgg16(weights=None, init_weights=False).state_dict())
    key_map = {k: f"features.{k}" for k in trunk.state_dict()}
    return trunk, 512, key_map, known


def _alexnet_trunk() -> tuple[nn.Module, int, dict[str, str], set[str]]:
    from torchvision.models import alexnet

    full = alexnet(weights=None)
    trunk = nn.Sequential(*list(full.features.children())[:12])  # up to conv5 + ReLU; pool5 dropped
    return trunk, 256, _identity_key_map(full, trunk), set(full.state_dict())


_GOOGLENET_KEPT = (
    "conv1",
    "maxpool1",
    "conv2",
    "conv3",
    "maxpool2",
    "inception3a",
    "inception3b",
    "maxpool3",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
)


def _googlenet_trunk(transform_input: bool) -> tuple[nn.Module, int, dict[str, str], set[str]]:
    from torchvision.models import GoogLeNet

    full = GoogLeNet(aux_logits=True, transform_input=False, init_weights=True)
    layers: list[tuple[str, nn.Module]] = [(n, getattr(full, n)) for n in _GOOGLENET_KEPT]
    if transform_input:
        layers.insert(0, ("transform_input", GoogLeNetTransformInput()))
    trunk = nn.Sequential(OrderedDict(layers))  # up to inception4e; pool4, 5a/5b, pool, dropout, fc, aux dropped
    return trunk, 832, _identity_key_map(full, trunk), set(full.state_dict())


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _tiny_trunk(width: int = 16) -> tuple[nn.Module, int, dict[str, str], set[str]]:
    """A 5-conv BN trunk for tests and demos: channels w, w, 2w, 4w, 4w; output stride 4; receptive field 27 px.

    With the added 3x3 conv (64 units by default) the CAM's receptive field is 35 px: at 64x64 input the map is
    16x16. About 42 MFLOPs per 64x64 image at the default width 16.
    """
    w = width
    trunk = nn.Sequential(
        *_conv_bn_relu(3, w),
        *_conv_bn_relu(w, w, stride=2),
        *_conv_bn_relu(w, 2 * w),
        nn.MaxPool2d(2),
        *_conv_bn_relu(2 * w, 4 * w),
        *_conv_bn_relu(4 * w, 4 * w),
    )
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    keys = list(trunk.state_dict())
    return trunk, 4 * w, {k: k for k in keys}, set(keys)


_PAPER_NOTES = {
    "alexnet": "AlexNet-{P}: torchvision AlexNet conv1-conv5 (+ReLU; pool5 and FCs removed)",
    "vgg16": "VGG16-{P}: torchvision VGG16 conv1_1-conv5_3 (pool5 and FCs removed)",
    "googlenet": "GoogLeNet-{P}: torchvision GoogLeNet (with BN, unlike the paper's) up to inception4e",
    "tiny": "tiny-{P}: 5 conv-BN-ReLU layers (stride 4) + 3x3 conv (64), for tests and demos",
}


def _categories(num_classes: int, categories: Sequence[str] | None) -> tuple[str, ...]:
    if categories is None:
        return tuple(f"class_{i}" for i in range(num_classes))
    cats = tuple(str(c) for c in categories)
    if len(cats) != num_classes:
        fail("categories", f"{num_classes} names (one per class)", f"{len(cats)} names")
    return cats


def _read_full_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """(state dict, ModelInfo dict, build dict) from a state-dict file or a camloc checkpoint.

    The last two are ``None`` for a plain state-dict file.
    """
    ckpt = peek_checkpoint(path)
    if ckpt is None:
        return load_state_dict_file(path), None, None
    if ckpt.architecture.kind != "gap_network":
        fail("weights", "a checkpoint of a GAP network", f"a {ckpt.architecture.kind!r} checkpoint ({path})")
    return ckpt.state_dict, ckpt.info.to_dict(), dict(ckpt.architecture.spec)


def _build_paper(
    family: str,
    pool: Pool,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    pretrained: str | Path | None = None,
    conv_channels: int | None = None,
    drop_rate: float | None = None,
    categories: Sequence[str] | None = None,
    img_size: int | None = None,
    transform_input: bool | None = None,
    width: int | None = None,
) -> tuple[GapNet, ModelInfo]:
    name = f"{family}_{'gap' if pool == 'avg' else 'gmp'}"
    state = info_d = None
    if weights is not None:
        state, info_d, build = _read_full_weights(weights)
        if build is not None:
            if build.get("arch") != name:
                fail("weights", f"weights of {name!r}", f"a checkpoint of {build.get('arch')!r} ({weights})")
            conv_channels = build.get("conv_channels") if conv_channels is None else conv_channels
            transform_input = build.get("transform_input") if transform_input is None else transform_input
            width = build.get("width") if width is None else width
        if num_classes is None and "fc.weight" in state:
            num_classes = int(state["fc.weight"].shape[0])
        if categories is None and info_d is not None:
            categories = info_d.get("categories")
    num_classes = 1000 if num_classes is None else num_classes
    check_number("num_classes", num_classes, low=1, integer=True)
    build_kw: dict[str, Any] = {"arch": name, "pool": pool}
    if family == "googlenet":
        # torchvision turns transform_input on when it loads its ImageNet weights; we do the same for
        # `pretrained` (a torchvision checkpoint), and leave it off when training from scratch.
        use_ti = (pretrained is not None) if transform_input is None else bool(transform_input)
        trunk, cin, key_map, known = _googlenet_trunk(use_ti)
        build_kw["transform_input"] = use_ti
    elif family == "vgg16":
        trunk, cin, key_map, known = _vgg16_trunk()
    elif family == "alexnet":
        trunk, cin, key_map, known = _alexnet_trunk()
    else:
        width = 16 if width is None else width
        check_number("width", width, low=1, integer=True)
        trunk, cin, key_map, known = _tiny_trunk(width)
        build_kw["width"] = width
    if pretrained is not None:
        _read_trunk_file(pretrained, trunk, key_map=key_map, known_keys=known, source=f"{name} trunk")
    conv_channels = _DEFAULT_CONV[family] if conv_channels is None else conv_channels
    build_kw["conv_channels"] = conv_channels
    model = GapNet(
        trunk,
        in_channels=cin,
        num_classes=num_classes,
        pool=pool,
        conv_channels=conv_channels,
        drop_rate=0.0 if drop_rate is None else drop_rate,
    )
    if state is not None:
        load_weights_strict(model, state, source=str(weights))
    if info_d is not None and img_size is None:
        preprocess = Preprocess.from_dict(info_d["preprocess"])
    else:
        size = _DEFAULT_SIZE[family] if img_size is None else int(img_size)
        preprocess = Preprocess(size=(size, size))
    info = ModelInfo(
        name=name,
        categories=_categories(num_classes, categories),
        preprocess=preprocess,
        description=_PAPER_NOTES[family].format(P=name.split("_")[1].upper()),
        extra={"build": build_kw},
    )
    return model, info


def _make_builder(family: str, pool: Pool) -> Callable[..., tuple[GapNet, ModelInfo]]:
    def builder(**kwargs: Any) -> tuple[GapNet, ModelInfo]:
        return _build_paper(family, pool, **kwargs)

    builder.__name__ = f"build_{family}_{pool}"
    builder.__doc__ = (
        f"Build {family} with a global {pool} pool head. Keywords: weights (full network file), num_classes, "
        "pretrained (torchvision classifier checkpoint for the trunk), conv_channels, drop_rate, categories, "
        "img_size" + (", transform_input" if family == "googlenet" else "") + "."
    )
    return builder


#: The registry entries of this module (added by :mod:`camloc.models.registry` on first use).
BUILTIN_MODELS: tuple[RegisteredModel, ...] = tuple(
    RegisteredModel(
        f"{family}_{tag}",
        _make_builder(family, pool),  # type: ignore[arg-type]
        _PAPER_NOTES[family].format(P=tag.upper()) + f", global {pool} pool",
        default_weights=False,
    )
    for family in _PAPER_FAMILIES
    for pool, tag in (("avg", "gap"), ("max", "gmp"))
)


# ---------------------------------------------------------------------------------------------------------
# timm: / torchvision: trunks
# ---------------------------------------------------------------------------------------------------------


def _tv_trunk(name: str, full: nn.Module) -> tuple[nn.Module, int]:
    """(trunk made of ``full``'s modules, output channels) for a torchvision classifier."""
    m: Any = full
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        trunk = nn.Sequential(
            OrderedDict(
                (n, getattr(m, n)) for n in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
            )
        )
        return trunk, m.fc.in_features
    if name.startswith("densenet"):  # densenet applies ReLU after `features` in forward()
        return nn.Sequential(OrderedDict([("features", m.features), ("relu", nn.ReLU())])), m.classifier.in_features
    if name.startswith("mobilenet_v2"):
        return m.features, m.classifier[-1].in_features
    if name.startswith("mobilenet_v3"):  # its head is pool -> MLP; we keep the conv features only
        return m.features, m.classifier[0].in_features
    if name.startswith("efficientnet"):
        return m.features, m.classifier[-1].in_features
    if name.startswith(("vgg", "squeezenet")):
        return m.features, 512
    if name.startswith("alexnet"):
        return m.features, 256
    if name.startswith("convnext"):  # LayerNorm2d of the head is applied per position, before pooling
        trunk = nn.Sequential(OrderedDict([("features", m.features), ("norm", m.classifier[0])]))
        return trunk, m.classifier[-1].in_features
    if name.startswith("regnet"):
        return nn.Sequential(OrderedDict([("stem", m.stem), ("trunk_output", m.trunk_output)])), m.fc.in_features
    if name.startswith("mnasnet"):
        return m.layers, m.classifier[-1].in_features
    if name.startswith("shufflenet"):
        parts = ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5")
        return nn.Sequential(OrderedDict((n, getattr(m, n)) for n in parts)), m.fc.in_features
    raise _unsupported_tv(name)  # pragma: no cover - checked before building


_TV_FAMILIES = (
    "resnet",
    "resnext",
    "wide_resnet",
    "densenet",
    "mobilenet_v2",
    "mobilenet_v3",
    "efficientnet",
    "vgg",
    "alexnet",
    "squeezenet",
    "convnext",
    "regnet",
    "mnasnet",
    "shufflenet",
)


def _unsupported_tv(name: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        "`arch` must be a torchvision CNN of a supported family (" + ", ".join(_TV_FAMILIES) + f"); "
        f"got 'torchvision:{name}'"
    )


def _spec_trunk(spec: str, pretrained: str | Path | None) -> tuple[nn.Module, int]:
    kind, _, name = spec.partition(":")
    if not name:
        fail("arch", "'timm:NAME' or 'torchvision:NAME' with a model name", repr(spec))
    if kind == "timm":
        import timm

        try:
            model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
            with torch.device("meta"):
                known = set(timm.create_model(name, pretrained=False).state_dict())
        except RuntimeError as e:
            raise CamlocValueError(f"`arch` must name a timm model; got {spec!r} ({e})") from e
        trunk: nn.Module = _FeaturesOf(model)
        cin = int(model.num_features)  # type: ignore[arg-type]
        key_map = {f"model.{k}": k for k in model.state_dict()}
    else:
        import torchvision

        if not name.startswith(_TV_FAMILIES):
            raise _unsupported_tv(name)
        try:
            full = torchvision.models.get_model(name, weights=None)
        except ValueError as e:
            raise CamlocValueError(f"`arch` must name a torchvision model; got {spec!r} ({e})") from e
        trunk, cin = _tv_trunk(name, full)
        known = set(full.state_dict())
        key_map = _identity_key_map(full, trunk)
    if pretrained is not None:
        _read_trunk_file(pretrained, trunk, key_map=key_map, known_keys=known, source=f"{spec} trunk")
    return trunk, int(cin)


def build_gap_network(
    arch: str,
    num_classes: int,
    *,
    pool: Pool | None = None,
    pretrained: str | Path | None = None,
    conv_channels: int | None = None,
    drop_rate: float = 0.0,
    categories: Sequence[str] | None = None,
    img_size: int | None = None,
    **kwargs: Any,
) -> tuple[GapNet, ModelInfo]:
    """Build a GAP/GMP network from ``arch``; return ``(model, info)`` (model in train mode, random head).

    ``arch`` is a paper name (``vgg16_gap``, ``tiny_gmp``, ...; it fixes the pool, ``pool`` may only agree
    with it), ``timm:NAME`` (trunk = ``timm.create_model(NAME, num_classes=0, global_pool="")``) or
    ``torchvision:NAME`` (the classifier's conv trunk). For the latter two ``pool`` defaults to ``"avg"`` and
    ``conv_channels`` to ``None`` (no added conv; pass 1024 for the paper's layer). ``pretrained`` is a local
    checkpoint of the full classifier (torchvision or timm keys); its classifier keys are ignored.
    """
    if not isinstance(arch, str) or not arch:
        fail("arch", "a non-empty architecture string", arch, type_error=not isinstance(arch, str))
    if pool is not None:
        check_choice("pool", pool, ("avg", "max"))
    if arch in PAPER_ARCHS:
        family, tag = arch.rsplit("_", 1)
        own: Pool = "avg" if tag == "gap" else "max"
        if pool is not None and pool != own:
            fail("pool", f"{own!r} for {arch!r} (or None)", repr(pool))
        return _build_paper(
            family,
            own,
            num_classes=num_classes,
            pretrained=pretrained,
            conv_channels=conv_channels,
            drop_rate=drop_rate,
            categories=categories,
            img_size=img_size,
            **kwargs,
        )
    if not arch.startswith(("timm:", "torchvision:")):
        fail("arch", "one of " + ", ".join(PAPER_ARCHS) + ", 'timm:NAME' or 'torchvision:NAME'", repr(arch))
    if kwargs:
        fail("kwargs", f"empty for {arch!r}", ", ".join(sorted(kwargs)))
    check_number("num_classes", num_classes, low=1, integer=True)
    trunk, cin = _spec_trunk(arch, pretrained)
    pool = "avg" if pool is None else pool
    model = GapNet(
        trunk, in_channels=cin, num_classes=num_classes, pool=pool, conv_channels=conv_channels, drop_rate=drop_rate
    )
    from camloc.models.zoo import zoo_preprocess  # the trunk's own mean / std / size / interpolation

    info = ModelInfo(
        name=arch,
        categories=_categories(num_classes, categories),
        preprocess=zoo_preprocess(arch, size=None if img_size is None else int(img_size)),
        description=f"{arch} trunk + global {pool} pool + linear",
        extra={"build": {"arch": arch, "pool": pool, "conv_channels": conv_channels}},
    )
    return model, info
