"""``CAM``: the stateful wrapper that runs a model once and returns logits and class activation maps."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from camloc._checks import check_number, check_tensor, fail
from camloc.cam import class_activation_maps, normalize_maps, pool_logits, topk_classes, upsample_maps
from camloc.errors import UnsupportedModelError
from camloc.heads import CamHead, resolve_head

__all__ = ["CAM", "CamResult"]


@dataclass(frozen=True)
class CamResult:
    """Output of :class:`CAM` for a batch.

    Attributes:
        logits: ``Tensor[N, C]``, equal to ``model(x)``.
        classes: ``Tensor[N, m]`` int64, the classes whose maps were computed (top-k: best first).
        scores: ``Tensor[N, m]`` softmax probabilities of those classes.
        maps: ``Tensor[N, m, h, w]`` raw maps ``M_c = sum_k w_k^c f_k`` at feature resolution (no ReLU, no bias
            — except for relu-conv heads, see :class:`camloc.heads.CamHead`).
        input_size: ``(H, W)`` of the network input.
    """

    logits: torch.Tensor
    classes: torch.Tensor
    scores: torch.Tensor
    maps: torch.Tensor
    input_size: tuple[int, int]

    def normalized(self, *, mode: Literal["max", "minmax"] = "max") -> torch.Tensor:
        """Maps normalised to ``[0, 1]`` (see :func:`camloc.cam.normalize_maps`), feature resolution."""
        return normalize_maps(self.maps.detach().float(), mode=mode)

    def upsampled(
        self,
        size: tuple[int, int] | None = None,
        *,
        normalize: Literal["max", "minmax"] | None = None,
    ) -> torch.Tensor:
        """Maps resized to ``size = (H, W)`` (default: the input size), optionally normalised after resizing."""
        up = upsample_maps(self.maps, size or self.input_size)
        return up if normalize is None else normalize_maps(up, mode=normalize)


class CAM:
    """Exact class activation maps for a classifier with a global-pooling -> linear head.

    One forward pass of the model's own modules gives the features ``f [N, K, h, w]`` and the logits; the maps
    are the contraction ``M_c = sum_k w_k^c f_k`` for the requested classes only (never all ``C`` upsampled).

    Example::

        cam = camloc.CAM(torchvision.models.resnet50().eval())
        out = cam(x, topk=5)                     # out.logits [N, 1000], out.maps [N, 5, 7, 7]
        heat = out.upsampled(normalize="max")    # [N, 5, 224, 224] in [0, 1]

    The model is used as it is: its ``training`` flag, hooks and ``requires_grad`` are never changed (call
    ``model.eval()`` for inference). The first call in eval mode checks the identity
    ``pool(f) @ W.T + b == logits``; a head that breaks it raises :class:`~camloc.errors.UnsupportedModelError`.

    Args:
        model: the classifier.
        features, classifier, pool: explicit overrides passed to :func:`camloc.heads.resolve_head`.
        check_identity: run the one-time identity check (default ``True``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        features: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        classifier: str | nn.Module | None = None,
        pool: Literal["avg", "max"] | None = None,
        check_identity: bool = True,
    ) -> None:
        self.head: CamHead = resolve_head(model, features=features, classifier=classifier, pool=pool)
        self.model = model
        self._verified = not check_identity

    def __repr__(self) -> str:
        return f"CAM({self.head.source}, pool={self.head.pool!r}, classes={self.head.num_classes})"

    def __call__(
        self,
        x: torch.Tensor,
        *,
        classes: torch.Tensor | int | list[int] | None = None,
        topk: int = 5,
        differentiable: bool = False,
    ) -> CamResult:
        """Run the model on ``x [N, 3, H, W]`` and return logits and maps.

        Args:
            classes: ``None`` -> each image's ``topk`` classes; an int or ``Tensor[m]`` -> the same classes for all
                images; ``Tensor[N, m]`` -> per-image classes (e.g. the true class, for GT-known localization).
            topk: number of top classes when ``classes`` is ``None``.
            differentiable: keep the autograd graph (for CAM-based losses); otherwise runs under ``no_grad``.
        """
        check_tensor("x", x, ndim=4, floating=True)
        check_number("topk", topk, low=1, integer=True)
        ctx = contextlib.nullcontext() if differentiable else torch.no_grad()
        with ctx:
            feats, logits = self.forward(x)
            cls = self._select(classes, logits, topk)
            maps = self.maps(feats, cls)
            scores = logits.float().softmax(dim=1).gather(1, cls)
        return CamResult(logits, cls, scores, maps, (int(x.shape[2]), int(x.shape[3])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass of the model's own modules: ``(features [N, K, h, w], logits [N, C])`` (grad mode as set)."""
        weight = self.head.weight
        if x.device != weight.device:
            x = x.to(weight.device)
        feats, logits = self.head(x)
        if not self._verified and not self.model.training:
            self._check_identity(feats, logits)
        return feats, logits

    def maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Raw maps ``[N, m, h, w]`` of per-image ``classes [N, m]`` from :meth:`forward`'s features."""
        h = self.head
        out = class_activation_maps(features, h.weight, classes, bias=h.bias if h.activation == "relu" else None)
        return out.relu() if h.activation == "relu" else out

    def _select(self, classes: torch.Tensor | int | list[int] | None, logits: torch.Tensor, topk: int) -> torch.Tensor:
        n, c = logits.shape
        if classes is None:
            return topk_classes(logits, topk)[1]
        if isinstance(classes, int) and not isinstance(classes, bool):
            classes = torch.tensor([classes])
        elif isinstance(classes, list | tuple):
            classes = torch.as_tensor(classes, dtype=torch.long)
        classes = check_tensor("classes", classes, ndim=(1, 2))
        if classes.is_floating_point():
            fail("classes", "integer class indices", classes)
        classes = classes.to(logits.device, torch.long)
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= c):
            fail("classes", f"class indices in [0, {c})", f"values up to {int(classes.max())}")
        if classes.ndim == 1:
            return classes.unsqueeze(0).expand(n, -1)
        if classes.shape[0] != n:
            fail("classes", f"of shape [N, m] with N = {n}", classes)
        return classes

    def _check_identity(self, feats: torch.Tensor, logits: torch.Tensor) -> None:
        h = self.head
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != h.num_classes:
            raise UnsupportedModelError(
                f"{h.source}: the head returned {getattr(logits, 'shape', type(logits).__name__)}, expected logits "
                f"[N, {h.num_classes}]"
            )
        f = feats[:1].detach().double()
        w = h.weight.detach().double()
        b = None if h.bias is None else h.bias.detach().double()
        if h.activation == "relu":
            ours = class_activation_maps(f, w, bias=b).relu().mean(dim=(2, 3))
        else:
            ours = pool_logits(f, w, b, pool=h.pool)
        ref = logits[:1].detach().double()
        err = float((ours - ref).abs().max())
        tol = 1e-3 * max(1.0, float(ref.abs().max()))
        if err > tol:
            raise UnsupportedModelError(
                f"{h.source}: the model's head is not {h.pool}-pool -> linear: its logits differ from "
                f"pool(features) @ W.T + b by {err:.3g}. There are layers between the features and the classifier "
                "(a hidden FC layer, a normalisation, ...), so CAM is not defined for this head."
            )
        self._verified = True
