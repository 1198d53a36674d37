"""``CAM``: the stateful wrapper that runs a model once and returns logits and class activation maps."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from camloc._checks import check_number, check_tensor, fail
from camloc.cam import normalize_maps, topk_classes, upsample_maps
from camloc.heads import Head, check_head
from camloc.resolve import ResolvedHead, resolve_head

__all__ = ["CAM", "CamResult", "select_classes"]

Classes = torch.Tensor | int | list[int] | Callable[[torch.Tensor], torch.Tensor] | None
"""What a producer's ``classes=`` accepts (see :func:`select_classes`)."""


@dataclass(frozen=True)
class CamResult:
    """Output of :class:`CAM` for a batch.

    Attributes:
        logits: ``Tensor[N, C]``, ``head.logits(features)``: equal to ``model(x)`` in eval mode.
        classes: ``Tensor[N, m]`` int64, the classes whose maps were computed (top-k: best first).
        scores: ``Tensor[N, m]`` softmax probabilities of those classes.
        maps: ``Tensor[N, m, h, w]`` the head's maps at feature resolution: for linear heads the raw
            ``M_c = sum_k w_k^c f_k`` (no ReLU, no bias); other head kinds in :mod:`camloc.heads`.
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
    """Exact class activation maps for a classifier whose head is one of camloc's head kinds.

    One forward pass of the model's own trunk gives the features ``f [N, K, h, w]``; the head
    (:mod:`camloc.heads`) turns them into logits and into maps for the requested classes only (never all ``C``
    upsampled). ``CAM`` itself knows nothing about head kinds: it calls ``head.logits`` and ``head.maps``.

    Example::

        cam = camloc.CAM(torchvision.models.resnet50().eval())
        out = cam(x, topk=5)                     # out.logits [N, 1000], out.maps [N, 5, 7, 7]
        heat = out.upsampled(normalize="max")    # [N, 5, 224, 224] in [0, 1]
        cam = camloc.CAM(model, classifier=sklearn_logreg)   # a head fitted on pooled features, same trunk

    The model is used as it is: its ``training`` flag, hooks and ``requires_grad`` are never changed (call
    ``model.eval()`` for inference). The logits are ``head.logits(features)``: equal to ``model(x)`` in eval
    mode (head dropout is not applied in training mode). Once, on the first batch in eval mode, the head is
    checked against the model's own ``model(x)`` (one extra forward of one image) and its CAM identity
    ``mean_xy maps + offset == logits`` is checked (:func:`camloc.heads.check_head`, tolerance following the
    dtype); a head swapped in from outside has no model logits and is checked on its own identity. A head that
    fails raises :class:`~camloc.errors.UnsupportedModelError`.

    Args:
        model: the classifier.
        features, classifier, pool: overrides passed to :func:`camloc.resolve.resolve_head`; ``classifier``
            alone swaps the head on the automatically found trunk.
        check_identity: run the one-time identity check (default ``True``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        features: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        classifier: str | nn.Module | Head | Any | None = None,
        pool: Literal["avg", "max"] | None = None,
        check_identity: bool = True,
    ) -> None:
        self.resolved: ResolvedHead = resolve_head(model, features=features, classifier=classifier, pool=pool)
        self.head: Head = self.resolved.head
        self.model = model
        self._verified = not check_identity

    def __repr__(self) -> str:
        h = self.head
        return f"CAM({self.resolved.source}, head={h.describe()}, classes={h.num_classes})"

    def __call__(
        self,
        x: torch.Tensor,
        *,
        classes: Classes = None,
        topk: int = 5,
        differentiable: bool = False,
    ) -> CamResult:
        """Run the model on ``x [N, 3, H, W]`` and return logits and maps.

        Args:
            classes: ``None`` -> each image's ``topk`` classes; an int or ``Tensor[m]`` -> the same classes for all
                images; ``Tensor[N, m]`` -> per-image classes (e.g. the true class, for GT-known localization);
                a callable ``select(logits) -> Tensor[N, m]`` chooses from this forward's logits
                (:func:`select_classes`).
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
        """Trunk then head: ``(features [N, K, h, w], logits [N, C])`` (grad mode as set)."""
        device = _device(self.model)
        if device is not None and x.device != device:
            x = x.to(device)
        feats, model_logits = self.resolved.run(x)
        k = self.head.in_features
        if k is not None and feats.shape[1] != k:
            fail(
                "classifier",
                f"a head taking the {feats.shape[1]} feature channels of {self.resolved.source}",
                f"{self.head.describe()} taking {k}",
            )
        logits = self.head.logits(feats)
        if not self._verified and (not self.resolved.own or not self.resolved.in_training):
            self._check_identity(x, feats, model_logits)
        return feats, logits

    def maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Maps ``[N, m, h, w]`` of per-image ``classes [N, m]`` from :meth:`forward`'s features (``head.maps``)."""
        return self.head.maps(features, classes)

    def _select(self, classes: Classes, logits: torch.Tensor, topk: int) -> torch.Tensor:
        return select_classes(classes, logits, topk)

    def _check_identity(self, x: torch.Tensor, feats: torch.Tensor, model_logits: torch.Tensor | None) -> None:
        """Check the head on the first image: against ``model(x)`` for the model's own head, and its identity."""
        ref: torch.Tensor | None = None
        with torch.no_grad():
            f1 = feats[:1].detach()
            if self.resolved.own:
                if model_logits is not None:
                    ref = model_logits[:1]
                else:
                    x1 = x[:1]
                    ref = self.resolved.model_logits(x1)  # model(x), unwrapping output objects (`.logits`)
                    if feats.shape[0] > 1:  # same batch size as model(x1): the same kernels, the same bits
                        f1, _ = self.resolved.run(x1)
            check_head(self.head, f1, model_logits=ref, source=self.resolved.source)
        self._verified = True


def select_classes(classes: Classes, logits: torch.Tensor, topk: int = 5) -> torch.Tensor:
    """The classes ``[N, m]`` int64 whose maps a producer computes, from ``logits [N, C]``.

    ``classes``: ``None`` -> each image's top-``topk`` (best first); an int, list or ``Tensor[m]`` -> the same
    classes for every image; ``Tensor[N, m]`` -> per-image classes; a callable ``select(logits [N, C]) ->
    Tensor[N, m]`` (or ``Tensor[m]``) -> its result, checked like a tensor (e.g. top-1 and the true class in one
    forward: ``lambda lg: torch.stack([lg.argmax(1), true], 1)``).
    """
    n, c = logits.shape
    if callable(classes) and not isinstance(classes, torch.Tensor):
        classes = classes(logits)
        if not isinstance(classes, torch.Tensor):
            fail("classes", "a callable returning a Tensor[N, m] of class indices", classes, type_error=True)
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


def _device(model: nn.Module) -> torch.device | None:
    params = getattr(model, "parameters", None)  # Keras models on other backends have none: inputs stay put
    for p in params() if callable(params) else ():
        return p.device
    return None
