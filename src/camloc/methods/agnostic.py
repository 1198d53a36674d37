r"""Class-agnostic maps from the features alone, and their combination with the class map.

With the trunk's features of one image as vectors ``X = [f(p)]_p`` (``[h*w, K]``, one row per position ``p``):

- ``pca`` (the first principal component of the image's own features, as in "CAM Back Again", CVPR 2024):
  :math:`A(p) = (f(p) - \bar f) \cdot v` with :math:`\bar f` the mean over the image's positions and :math:`v`
  the top right singular vector of the centred ``X``. The sign of :math:`v` is arbitrary; it is fixed per class to
  agree with the class map (``sign=cam``: :math:`\sum_p A(p) M_c(p) \ge 0`) or to point along the mean feature
  (``sign=mass``: :math:`\bar f \cdot v \ge 0`, strong activations positive). The same map is returned for every
  requested class, up to that sign.
- ``ddt`` (Deep Descriptor Transforming, Wei et al. 2017, kept simple): the same projection, but mean and
  principal direction come from a SET of images: every position of every image in the call (the batch: the
  transductive co-localisation of DDT), or, with ``fit=FOLDER``, from up to ``limit`` images of that folder once
  at construction (then batch-independent).
- ``cam+pca``: the class map and the ``pca`` map (signed to agree with it), each normalised per map
  (``norm=minmax`` or ``max``), then ``combine=product`` (default; keeps what both see), ``mean``
  (``weight * cam + (1 - weight) * pca``) or ``max``.

Logits, classes and scores are the model's own (the CAM head), so classification is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from camloc._checks import fail
from camloc.cam import normalize_maps
from camloc.extractor import CAM
from camloc.methods.base import MapMethod

__all__ = ["CamPca", "Ddt", "Pca", "build_cam_pca", "build_ddt", "build_pca", "principal_maps"]


def _vectors(features: torch.Tensor) -> torch.Tensor:
    """``[N, K, h, w]`` -> ``[N, h*w, K]`` float32."""
    return features.detach().float().flatten(2).transpose(1, 2)


def principal_maps(
    features: torch.Tensor,
    *,
    mean: torch.Tensor | None = None,
    direction: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-principal-component maps of ``features [N, K, h, w]``: ``(maps [N, h, w], mean [N, K], v [N, K])``.

    Without ``mean`` / ``direction`` (``Tensor[K]``) both are each image's own (centred SVD); with them, those
    are used for every image. The sign of ``v`` is as the SVD returns it (fix it with :func:`fix_sign`).
    """
    n, k, h, w = features.shape
    x = _vectors(features)
    mu = x.mean(dim=1) if mean is None else mean.float().to(x.device).expand(n, k)
    xc = x - mu[:, None, :]
    if direction is None:
        v = torch.linalg.svd(xc, full_matrices=False).Vh[:, 0, :]  # [N, K]
    else:
        v = direction.float().to(x.device).expand(n, k)
    maps = torch.einsum("npk,nk->np", xc, v).reshape(n, h, w)
    return maps, mu, v


def fix_sign(
    maps: torch.Tensor, mean: torch.Tensor, v: torch.Tensor, class_maps: torch.Tensor | None, sign: str
) -> torch.Tensor:
    """Signed agnostic maps ``[N, m, h, w]``: per class against ``class_maps [N, m, h', w']`` (``sign="cam"``,
    same grid), or once by the mean feature (``sign="mass"``)."""
    if sign == "mass" or class_maps is None:
        s = torch.where((mean * v).sum(dim=1) >= 0, 1.0, -1.0)  # [N]
        m = 1 if class_maps is None else class_maps.shape[1]
        return (maps * s[:, None, None])[:, None].expand(-1, m, -1, -1)
    agree = torch.einsum("nhw,nmhw->nm", maps, class_maps.float())
    s = torch.where(agree >= 0, 1.0, -1.0)
    return maps[:, None] * s[:, :, None, None]


class Pca(MapMethod):
    """``pca``: see the module docstring. ``maps`` ``[N, m, h, w]`` on the feature grid."""

    name = "pca"

    def __init__(self, model: nn.Module, *, sign: str = "cam") -> None:
        self.cam = CAM(model)
        self.sign = sign

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        with torch.no_grad():
            return self.cam.forward(x)

    def _stats(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return principal_maps(feats)

    def maps(self, state: Any, classes: torch.Tensor) -> torch.Tensor:
        feats = state
        with torch.no_grad():
            maps, mu, v = self._stats(feats)
            cm = self.cam.maps(feats, classes) if self.sign == "cam" else None
            return fix_sign(maps, mu, v, cm, self.sign).contiguous()


class Ddt(Pca):
    """``ddt``: mean and principal direction over a set (the call's batch, or a folder fitted once)."""

    name = "ddt"

    def __init__(self, model: nn.Module, *, sign: str = "cam") -> None:
        super().__init__(model, sign=sign)
        self.mean: torch.Tensor | None = None
        self.direction: torch.Tensor | None = None

    def fit(self, batches: Any) -> Ddt:
        """Fit mean ``[K]`` and direction ``[K]`` on an iterable of input batches ``[n, 3, H, W]``."""
        total: torch.Tensor | None = None
        gram: torch.Tensor | None = None
        count = 0
        for xb in batches:
            with torch.no_grad():
                feats, _ = self.cam.forward(xb)
            x = _vectors(feats).reshape(-1, feats.shape[1]).double()
            total = x.sum(0) if total is None else total + x.sum(0)
            gram = x.T @ x if gram is None else gram + x.T @ x
            count += x.shape[0]
        if total is None or gram is None or count < 2:
            fail("fit", "a folder with at least one readable image", "none")
        mu = total / count
        cov = gram / count - torch.outer(mu, mu)
        v = torch.linalg.eigh(cov).eigenvectors[:, -1]
        self.mean, self.direction = mu.float(), v.float()
        return self

    def _stats(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.mean is not None and self.direction is not None:
            return principal_maps(feats, mean=self.mean, direction=self.direction)
        x = _vectors(feats).reshape(-1, feats.shape[1])
        mu = x.mean(0)
        v = torch.linalg.svd(x - mu, full_matrices=False).Vh[0]
        return principal_maps(feats, mean=mu, direction=v)


class CamPca(Pca):
    """``cam+pca``: class map and signed ``pca`` map, normalised per map, combined (module docstring)."""

    name = "cam+pca"

    def __init__(self, model: nn.Module, *, combine: str, weight: float, norm: str, sign: str) -> None:
        super().__init__(model, sign=sign)
        if not 0.0 <= weight <= 1.0:
            fail("method_args", "weight in [0, 1] for method 'cam+pca'", f"weight={weight}")
        self.combine, self.weight, self.norm = combine, float(weight), norm

    def maps(self, state: Any, classes: torch.Tensor) -> torch.Tensor:
        feats = state
        with torch.no_grad():
            cm = self.cam.maps(feats, classes).float()
            maps, mu, v = principal_maps(feats)
            agn = fix_sign(maps, mu, v, cm if self.sign == "cam" else None, self.sign)
            a = normalize_maps(cm, mode=self.norm)  # type: ignore[arg-type]
            b = normalize_maps(agn.contiguous(), mode=self.norm)  # type: ignore[arg-type]
            if self.combine == "product":
                return a * b
            if self.combine == "max":
                return torch.maximum(a, b)
            return self.weight * a + (1.0 - self.weight) * b


def build_pca(model: nn.Module, info: Any, *, sign: str) -> Pca:
    return Pca(model, sign=sign)


def build_ddt(model: nn.Module, info: Any, *, sign: str, fit: str, limit: int) -> Ddt:
    ddt = Ddt(model, sign=sign)
    if fit:
        from camloc.data.images import find_images
        from camloc.pipeline import ImagePipeline

        folder = Path(fit)
        if not folder.exists():
            fail("method_args", "fit=FOLDER naming an existing folder of images for method 'ddt'", f"fit={fit!r}")
        files = find_images([folder], recursive=True)[:limit]
        pipe = ImagePipeline(info.preprocess)
        device = next(model.parameters()).device

        def batches() -> Any:
            for i in range(0, len(files), 16):
                yield torch.stack([pipe(f).tensor for f in files[i : i + 16]]).to(device)

        ddt.fit(batches())
    return ddt


def build_cam_pca(model: nn.Module, info: Any, *, combine: str, weight: float, norm: str, sign: str) -> CamPca:
    return CamPca(model, combine=combine, weight=weight, norm=norm, sign=sign)
