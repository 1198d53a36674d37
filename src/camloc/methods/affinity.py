"""``affinity``: the class map spread by a random walk over the image's own feature affinities (training-free).

A CAM is sharp where the object is most discriminative and blurry at its border: its 7x7 grid (stride 32) cannot
follow the object's outline, and a small object's blob spans the same few cells as a part of a large one. An
earlier layer of the same network knows better which positions belong together. This method (the idea of the
pixel-correlation module of SEAM, CVPR 2020, and of AffinityNet's random walk, CVPR 2018, here without any
training: the affinities are the frozen network's own) does:

1. the model's class maps ``M_c`` of the input enlarged ``scale`` times (default 1.5), ``ReLU``, each divided by
   its max, resampled to the grid of an intermediate layer (``layer``; ``auto``: the network's stride-16 stage);
2. that layer's features ``g_p`` (same enlarged input, same forward) give the affinity
   ``A_pq = max(0, cos(g_p, g_q)) ** beta`` and the transition matrix ``T = A / rowsum(A)`` (``A_pp = 1``);
3. ``iters`` steps ``M <- T M``: each position takes the affinity-weighted mean of the map. Mass flows along
   positions that look alike (the object), not across its border.

The result is a map on the layer's grid (``[N, m, h', w']``, values in ``[0, 1]``). Classes and scores are the
input's own (``logits=input``, one more forward at scale 1 unless ``scale == 1``), or those of the enlarged input
(``logits=scaled``). ``auto`` picks, in a probe forward at the model's input size, the top-most module whose
output has stride ``min(16, the trunk's stride)`` (one not inside another such module), the one with the most
parameters (ties: the later): ``layer3`` of a torchvision ResNet, ``blocks.4`` of timm's EfficientNets. Any
module name of the model can be given instead (``layer=blocks.3``). Grids of more than :data:`MAX_POSITIONS`
positions are average-pooled down first, so the ``[P, P]`` affinity stays small.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camloc._checks import check_number, check_tensor, fail
from camloc.cam import normalize_maps
from camloc.errors import UnsupportedModelError
from camloc.extractor import CAM
from camloc.methods.base import MapMethod, probe_forward, rescale_input, scaled_size

__all__ = ["MAX_POSITIONS", "Affinity", "affinity_walk", "build_affinity", "stride_layer", "transition_matrix"]

#: The most grid positions one image's affinity matrix is built over (64 x 64).
MAX_POSITIONS = 4096


def transition_matrix(features: torch.Tensor, *, beta: float = 8.0) -> torch.Tensor:
    """Row-stochastic ``T [N, P, P]`` (``P = h * w``) from ``features [N, K, h, w]``: ``A_pq = max(0, cos) ** beta``
    with ``A_pp = 1`` (so a zero feature vector keeps its own value), ``T = A / A.sum(-1)``."""
    check_tensor("features", features, ndim=4, floating=True)
    check_number("beta", beta, low=0.0)
    f = F.normalize(features.detach().float().flatten(2), dim=1)  # [N, K, P]
    a = torch.einsum("nkp,nkq->npq", f, f).clamp(min=0.0).pow(float(beta))
    a.diagonal(dim1=1, dim2=2).fill_(1.0)
    return a / a.sum(dim=2, keepdim=True)


def affinity_walk(maps: torch.Tensor, features: torch.Tensor, *, beta: float = 8.0, iters: int = 4) -> torch.Tensor:
    """``iters`` random-walk steps of ``maps [N, m, h, w]`` over the affinities of ``features [N, K, h, w]``
    (same grid): ``M <- T M`` with :func:`transition_matrix`. Returns float32 ``[N, m, h, w]``; ``iters=0``
    returns the maps unchanged. A convex combination per step: the range of each map is kept."""
    check_tensor("maps", maps, ndim=4, floating=True)
    check_number("iters", iters, low=0, integer=True)
    if tuple(maps.shape[-2:]) != tuple(features.shape[-2:]) or maps.shape[0] != features.shape[0]:
        fail("features", f"[{maps.shape[0]}, K, {maps.shape[2]}, {maps.shape[3]}] (the maps' batch and grid)",
             f"shape {tuple(features.shape)}")  # fmt: skip
    n, m, h, w = maps.shape
    v = maps.detach().float().reshape(n, m, h * w)
    if iters:
        t = transition_matrix(features, beta=beta)
        for _ in range(int(iters)):
            v = torch.einsum("npq,nmq->nmp", t, v)
    return v.reshape(n, m, h, w)


def _grid_cap(h: int, w: int) -> tuple[int, int]:
    """The largest grid of at most :data:`MAX_POSITIONS` positions with ``h:w``'s aspect (``(h, w)`` if it fits)."""
    cap = MAX_POSITIONS
    if h * w <= cap:
        return h, w
    s = math.sqrt(cap / (h * w))
    return max(1, int(h * s)), max(1, int(w * s))


def _params(mod: nn.Module) -> int:
    return sum(p.numel() for p in mod.parameters())


def _stride(size: int, out: int) -> int:
    """The power-of-two stride that maps ``size`` input pixels to ``out`` positions (260 -> 17 is stride 16)."""
    return 2 ** max(0, round(math.log2(size / out)))


def stride_layer(model: nn.Module, size: tuple[int, int], *, stride: int = 16) -> str:
    """The name of the module ``auto`` picks (module docstring) in a probe forward of ``zeros(1, 3, *size)``.

    Raises :class:`~camloc.errors.UnsupportedModelError` when no module outputs a 4-D feature map.
    """
    names = {m: n for n, m in model.named_modules() if n}
    seen: list[tuple[str, int]] = []  # (name, stride) in the order the outputs are produced

    def record(mod: nn.Module, inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] > 0:
            seen.append((names[mod], _stride(size[1], int(out.shape[-1]))))

    feats = probe_forward(model, size, names, record)
    final = _stride(size[1], int(feats.shape[-1]))
    target = min(int(stride), final)
    strides: dict[str, int] = {}
    for n, s in seen:
        strides.setdefault(n, s)  # a module run twice keeps its first output's stride
    at = [n for n, s in strides.items() if s == target]
    top = [n for n in at if not any(n.startswith(o + ".") for o in at if o != n)]
    if not top:
        raise UnsupportedModelError(
            f"`affinity` needs a module with a 4-D feature map at stride {target}; "
            f"{type(model).__name__} has none (name one with layer=NAME)"
        )
    mods = {n: m for m, n in names.items()}
    order = {n: i for i, n in enumerate(strides)}
    return max(top, key=lambda n: (_params(mods[n]), order[n]))


class Affinity(MapMethod):
    """``affinity`` (module docstring): maps ``[N, m, h', w']`` on ``layer``'s grid of the enlarged input.

    ``layer`` is a module name of ``model`` (:func:`build_affinity` turns ``"auto"`` into one)."""

    name = "affinity"

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: str,
        scale: float = 1.5,
        beta: float = 8.0,
        iters: int = 4,
        logits: str = "input",
    ) -> None:
        mods = dict(model.named_modules())
        if layer not in mods or not layer:
            example = next(iter(n for n in mods if n), "-")
            fail("layer", f"a module name of {type(model).__name__} (e.g. {example!r}; or 'auto')", repr(layer))
        self.cam = CAM(model)
        self.layer = layer
        self.module = mods[layer]
        self.scale = float(scale)
        self.beta = float(beta)
        self.iters = int(iters)
        self.logits = logits

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward of ``x`` -> (trunk features, logits, ``layer``'s output)."""
        box: list[torch.Tensor] = []

        def grab(mod: nn.Module, inp: Any, out: Any) -> None:
            if not box:
                box.append(out)

        hook = self.module.register_forward_hook(grab)
        try:
            feats, logits = self.cam.forward(x)
        finally:
            hook.remove()
        if not box or not isinstance(box[0], torch.Tensor) or box[0].ndim != 4:
            got = "no output" if not box else f"{type(box[0]).__name__} of {getattr(box[0], 'ndim', '?')} dims"
            raise UnsupportedModelError(f"`affinity` layer {self.layer!r} must output a 4-D feature map; got {got}")
        return feats, logits, box[0].detach()

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        size = scaled_size((int(x.shape[2]), int(x.shape[3])), self.scale)
        feats, logits, mid = self._run(rescale_input(x, size))
        if self.logits == "input" and size != tuple(x.shape[-2:]):
            logits = self.cam.forward(x)[1]
        return (feats, mid), logits

    def maps(self, state: Any, classes: torch.Tensor) -> torch.Tensor:
        feats, mid = state
        h, w = _grid_cap(int(mid.shape[2]), int(mid.shape[3]))
        if (h, w) != tuple(mid.shape[-2:]):
            mid = F.adaptive_avg_pool2d(mid.float(), (h, w))
        m = self.cam.maps(feats, classes).float().clamp(min=0.0)  # bilinear resampling keeps it non-negative
        m = normalize_maps(F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False), mode="max")
        return affinity_walk(m, mid, beta=self.beta, iters=self.iters)


def build_affinity(
    model: nn.Module, info: Any, *, layer: str, scale: float, beta: float, iters: int, logits: str
) -> Affinity:
    if layer == "auto":
        size = tuple(int(s) for s in info.preprocess.size)
        layer = stride_layer(model, (size[0], size[1]))
    return Affinity(model, layer=layer, scale=scale, beta=beta, iters=iters, logits=logits)
