r"""Head kinds: every way camloc turns features into logits and class activation maps, and the identity each keeps.

A *head* maps unpooled features :math:`f_k(x, y)` (``Tensor[N, K, h, w]``) to logits (``Tensor[N, C]``) and to
class activation maps :math:`M_c(x, y)` (``Tensor[N, m, h, w]`` for ``m`` chosen classes per image). Every head
with ``pool == "avg"`` guarantees the **CAM identity**

.. math:: \operatorname{mean}_{x,y} M_c(x, y) + \mathrm{offset}_c = \mathrm{logit}_c

(:meth:`Head.offset`), so a map is an exact spatial decomposition of its logit. Max-pooling heads (GMP) have no
such identity; their maps are still the paper's :math:`\sum_k w^c_k f_k`.

- :class:`LinearHead` (GAP or GMP, then ``nn.Linear`` / 1x1 conv): logit
  :math:`\sum_k w_{ck}\,\mathrm{pool}(f_k) + b_c`, map :math:`\sum_k w_{ck} f_k` (the paper's; no ReLU, no bias),
  offset :math:`b_c`.
- :class:`SklearnHead`: a :class:`LinearHead` from a fitted scikit-learn linear model (``coef_``, ``intercept_``).
- :class:`ReluConvHead` (1x1 conv + ReLU before GAP, SqueezeNet): logit
  :math:`\mathrm{mean}_{xy}\,\mathrm{relu}(\sum_k w_{ck} f_k + b_c)`, map the same unpooled, offset 0.
- :class:`NormPoolHead` (GAP, LayerNorm, linear; ConvNeXt-style): logit :math:`W\,\mathrm{LN}(p) + b`,
  map :math:`\sum_k W_{ck}\gamma_k (f_k - \mu)/\sigma` with the image's pooled statistics, offset
  :math:`(W\beta + b)_c`.
- :class:`BatchNormPoolHead` (GAP, BatchNorm1d with running statistics, linear; LeViT, EfficientViT-MSRA, SHViT):
  the norm is a fixed affine map in eval mode, folded into the linear layer: a :class:`LinearHead` with
  :math:`W' = W\,\mathrm{diag}(a)`, :math:`b' = W d + b`.

Heads built on a model's own modules read their weights *live* (no copies): training updates, ``.to(device)``
and ``.half()`` on the model are followed. To add a head kind, subclass :class:`Head` and implement
:meth:`~Head.logits`, :meth:`~Head.maps` and :meth:`~Head.offset`; :class:`camloc.CAM` has no code specific to
any kind and checks the identity of whatever head it is given (:func:`check_head`).

**Tolerance of the identity checks** (:func:`identity_tolerance`). Both sides of a checked identity are sums of
``n = K + h*w`` rounded terms, so their difference is bounded by ``c * (2 u + n u_acc) * S`` per logit, where
``u = eps/2`` is the unit roundoff of the features' dtype (rounding of the pooled inputs and of the result),
``u_acc`` that of the accumulation dtype (float32 for bfloat16/float16, as CPU and GPU kernels accumulate; the
dtype itself otherwise), ``S = Head.scale(features)`` the magnitude of the summed terms (for a linear head
``|W| mean_xy|f| + |b|``) and ``c = 4`` (two sides, a margin of two). In float64 this is ~1e-12 relative: exact.
A layer hidden between pooling and the classifier changes the logits by a fraction of order one and is refused.
"""

from __future__ import annotations

import abc
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from camloc._checks import check_choice, check_tensor, fail
from camloc.cam import class_activation_maps
from camloc.errors import UnsupportedModelError

__all__ = [
    "BatchNormPoolHead",
    "Head",
    "LinearHead",
    "NormPoolHead",
    "ReluConvHead",
    "SklearnHead",
    "check_head",
    "identity_tolerance",
]

Pool = Literal["avg", "max"]

IDENTITY_SAFETY = 4.0
"""``c`` in the identity tolerance ``c * (2 u + n u_acc) * S`` (see the module docstring)."""


class Head(abc.ABC):
    """Base of every head kind: features ``[N, K, h, w]`` -> logits ``[N, C]`` and maps ``[N, m, h, w]``.

    Subclasses set :attr:`pool` and implement :attr:`num_classes`, :meth:`logits`, :meth:`maps` and
    :meth:`offset`; :attr:`in_features`, :meth:`scale` and :meth:`modules` have defaults. All methods are pure
    (no state changes) and differentiable; outputs have the dtype of ``features``.
    """

    pool: Pool = "avg"

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """``C``, the number of logits."""

    @property
    def in_features(self) -> int | None:
        """``K``, the number of feature channels the head takes (``None``: any)."""
        return None

    @abc.abstractmethod
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, C]`` logits of ``features [N, K, h, w]``."""

    @abc.abstractmethod
    def maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, m, h, w]`` maps of per-image ``classes [N, m]`` (int64)."""

    @abc.abstractmethod
    def offset(self, classes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, m]``: ``logit - mean_xy(map)`` of ``classes [N, m]`` (the CAM identity; ``pool == "avg"``)."""

    def scale(self, features: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, C]`` magnitude of the terms summed into each logit, for rounding tolerances.

        Default: ``|logits|`` (at least 1); kinds that know their sums override it with the sum of ``|terms|``.
        """
        return self.logits(features).abs().clamp_min(1.0)

    def modules(self) -> tuple[nn.Module, ...]:
        """The torch modules whose weights the head reads (empty: none). Used to tell a model's own head."""
        return ()

    def describe(self) -> str:
        """One line naming the kind and its formula, for messages."""
        return f"{type(self).__name__} ({self.pool} pooling)"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(classes={self.num_classes}, in_features={self.in_features}, pool={self.pool!r})"


def _weight_2d(module: nn.Module) -> torch.Tensor:
    """``[C, K]`` view of an ``nn.Linear`` / 1x1 ``nn.Conv2d`` weight (a view: live, no copy)."""
    w = module.weight
    assert isinstance(w, torch.Tensor)
    return w.flatten(1) if w.ndim == 4 else w


def _linear_module(module: Any, name: str = "classifier") -> nn.Linear | nn.Conv2d:
    if isinstance(module, nn.Linear):
        return module
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
        return module
    raise UnsupportedModelError(
        f"`{name}` must be nn.Linear or a 1x1 nn.Conv2d; found {type(module).__name__}: {module}"
    )


def _pool(features: torch.Tensor, pool: Pool) -> torch.Tensor:
    check_tensor("features", features, ndim=4, floating=True)
    return features.mean(dim=(2, 3)) if pool == "avg" else features.amax(dim=(2, 3))


def _like(t: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.to(device=ref.device, dtype=ref.dtype)


class _ModuleWeights:
    """The live ``[C, K]`` weights and ``[C]`` bias of a head's ``nn.Linear`` / 1x1 ``nn.Conv2d`` (``self.module``)."""

    module: nn.Linear | nn.Conv2d

    @property
    def weight(self) -> torch.Tensor:
        """``Tensor[C, K]`` classifier weights (a live view)."""
        return _weight_2d(self.module)

    @property
    def bias(self) -> torch.Tensor | None:
        """``Tensor[C]`` classifier bias, or ``None``."""
        b = getattr(self.module, "bias", None)
        return b if isinstance(b, torch.Tensor) else None

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])


class LinearHead(_ModuleWeights, Head):
    r"""Global average (GAP) or max (GMP) pooling, then ``nn.Linear`` or a 1x1 ``nn.Conv2d`` (Zhou et al., eq. 2).

    - logit: :math:`\mathrm{logit}_c = \sum_k w_{ck}\,\mathrm{pool}_{xy} f_k + b_c`
    - map: :math:`M_c(x, y) = \sum_k w_{ck} f_k(x, y)` — no ReLU, no bias, as in the paper
    - offset: :math:`b_c` (GAP: :math:`\mathrm{mean}_{xy} M_c + b_c = \mathrm{logit}_c` exactly)

    Args:
        module: the classifier; its weights are read live at every call (no copy).
        pool: ``"avg"`` or ``"max"``.
    """

    def __init__(self, module: nn.Module, *, pool: Pool = "avg") -> None:
        self.module = _linear_module(module)
        self.pool = check_choice("pool", pool, ("avg", "max"))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        pooled = _pool(features, self.pool)
        w = _like(self.weight, pooled)
        assert w is not None
        return F.linear(pooled, w, _like(self.bias, pooled))

    def maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return class_activation_maps(features, _like(self.weight, features), classes)  # type: ignore[arg-type]

    def offset(self, classes: torch.Tensor) -> torch.Tensor:
        b = self.bias
        if b is None:
            return torch.zeros(classes.shape, dtype=self.weight.dtype, device=self.weight.device)
        return b[classes.to(b.device, torch.long)]

    def scale(self, features: torch.Tensor) -> torch.Tensor:
        mag = features.detach().abs()
        pooled = mag.mean(dim=(2, 3)) if self.pool == "avg" else mag.amax(dim=(2, 3))
        w, b = self.weight.detach().abs(), self.bias
        out = pooled.double() @ w.double().T
        return out if b is None else out + b.detach().abs().double()

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.module,)

    def describe(self) -> str:
        return f"{self.pool}-pool -> linear"

    @classmethod
    def from_sklearn(cls, estimator: Any, *, pool: Pool = "avg", dtype: torch.dtype = torch.float32) -> SklearnHead:
        """A :class:`SklearnHead` from a fitted scikit-learn linear classifier (see there)."""
        return SklearnHead(estimator, pool=pool, dtype=dtype)


class SklearnHead(LinearHead):
    r"""A :class:`LinearHead` fitted outside torch: a scikit-learn linear classifier on pooled features.

    Takes any fitted estimator with ``coef_ [C, K]``, ``intercept_ [C]`` and ``classes_`` (LogisticRegression,
    LinearSVC, RidgeClassifier, SGDClassifier, ...), or a ``OneVsRestClassifier`` of such estimators, trained on
    ``pool(features)``;
    ``logits`` equal ``estimator.decision_function``. Binary problems (``coef_`` of shape ``[1, K]``) become two
    classes ``[negative, positive]`` with rows ``[0; coef]`` and bias ``[0; intercept]``: the softmax of the two
    logits equals the sigmoid of the decision function and the positive class carries the map.

    The coefficients are copied once into an ``nn.Linear`` (:attr:`module`, ``dtype``, on the CPU; the head
    follows the features' device and dtype at every call). :attr:`labels` holds ``classes_`` in logit order.
    """

    def __init__(self, estimator: Any, *, pool: Pool = "avg", dtype: torch.dtype = torch.float32) -> None:
        import numpy as np

        coef, intercept = _sklearn_coef(estimator)
        labels = list(np.asarray(estimator.classes_).tolist())
        if coef.shape[0] not in (1, len(labels)) or (coef.shape[0] == 1 and len(labels) != 2):
            fail("classifier", f"coef_ of shape [C, K] or [1, K] (binary) with C = {len(labels)} classes", coef)
        if coef.shape[0] == 1:
            coef = np.concatenate([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros(1), intercept])
        linear = nn.Linear(coef.shape[1], coef.shape[0], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(coef))
            linear.bias.copy_(torch.tensor(intercept))
        linear.requires_grad_(False)
        super().__init__(linear, pool=pool)
        self.estimator = estimator
        self.labels: tuple[Any, ...] = tuple(labels)

    def describe(self) -> str:
        return f"{self.pool}-pool -> {type(self.estimator).__name__}"


def _sklearn_coef(estimator: Any) -> tuple[Any, Any]:
    """``(coef [C or 1, K], intercept [C or 1])`` float64 arrays of a fitted linear classifier (or OvR of them)."""
    import numpy as np

    parts = getattr(estimator, "estimators_", None)
    if getattr(estimator, "coef_", None) is None and isinstance(parts, list) and parts:
        pairs = [_sklearn_coef(e) for e in parts]  # OneVsRestClassifier: one binary estimator per class
        if not hasattr(estimator, "classes_"):
            fail("classifier", "a fitted scikit-learn classifier with classes_", type(estimator).__name__)
        return np.concatenate([c for c, _ in pairs]), np.concatenate([b for _, b in pairs])
    coef = getattr(estimator, "coef_", None)
    if coef is None or not hasattr(estimator, "classes_"):
        fail(
            "classifier",
            "a fitted scikit-learn linear classifier (with coef_, intercept_ and classes_)",
            type(estimator).__name__,
        )
    assert coef is not None
    if hasattr(coef, "toarray"):  # sparsified estimators
        coef = coef.toarray()
    coef = np.asarray(coef, dtype=np.float64)
    coef = coef.reshape(1, -1) if coef.ndim == 1 else coef  # RidgeClassifier, binary
    if coef.ndim != 2:
        fail("classifier", "a linear classifier with coef_ of shape [C, K]", coef)
    intercept = np.asarray(getattr(estimator, "intercept_", 0.0), dtype=np.float64).reshape(-1)
    return coef, np.ascontiguousarray(np.broadcast_to(intercept, coef.shape[:1]))


class ReluConvHead(_ModuleWeights, Head):
    r"""A 1x1 convolution and a ReLU *before* global average pooling (torchvision SqueezeNet).

    - logit: :math:`\mathrm{logit}_c = \mathrm{mean}_{xy}\,\mathrm{relu}(\sum_k w_{ck} f_k(x, y) + b_c)`
    - map: :math:`M_c(x, y) = \mathrm{relu}(\sum_k w_{ck} f_k(x, y) + b_c)` (bias and ReLU inside the map)
    - offset: 0 (:math:`\mathrm{mean}_{xy} M_c = \mathrm{logit}_c` exactly)
    """

    pool: Pool = "avg"

    def __init__(self, module: nn.Module) -> None:
        self.module = _linear_module(module)

    def _maps(self, features: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        w = _like(self.weight, features)
        return class_activation_maps(features, w, classes, bias=_like(self.bias, features)).relu()  # type: ignore[arg-type]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self._maps(features, None).mean(dim=(2, 3))

    def maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return self._maps(features, classes)

    def offset(self, classes: torch.Tensor) -> torch.Tensor:
        return torch.zeros(classes.shape, dtype=self.weight.dtype, device=self.weight.device)

    def scale(self, features: torch.Tensor) -> torch.Tensor:
        f = features.detach().abs().double()
        out = torch.einsum("ck,nkhw->nc", self.weight.detach().abs().double(), f) / (f.shape[2] * f.shape[3])
        b = self.bias
        return out if b is None else out + b.detach().abs().double()

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.module,)

    def describe(self) -> str:
        return "1x1 conv -> ReLU -> avg-pool"


class NormPoolHead(_ModuleWeights, Head):
    r"""Global average pooling, then LayerNorm over channels, then a linear layer (ConvNeXt-style heads).

    With :math:`p = \mathrm{mean}_{xy} f` the pooled vector of one image, :math:`\mu, \sigma` its LayerNorm
    statistics (:math:`\mu = \mathrm{mean}_k p_k`, :math:`\sigma = \sqrt{\mathrm{var}_k p + \epsilon}`) and
    :math:`\gamma, \beta` the LayerNorm affine parameters:

    - logit: :math:`\mathrm{logit} = W\,(\gamma \odot (p - \mu)/\sigma + \beta) + b`
    - map: :math:`M_c(x, y) = \sum_k W_{ck}\gamma_k (f_k(x, y) - \mu)/\sigma`
    - offset: :math:`(W\beta + b)_c`

    The identity is exact given the image's pooled statistics (``mu`` and ``sigma`` are per image, not per
    location).

    Args:
        norm: ``nn.LayerNorm`` over ``K`` channels (weights read live).
        classifier: ``nn.Linear`` or 1x1 ``nn.Conv2d`` on the normalised vector (weights read live).
    """

    pool: Pool = "avg"

    def __init__(self, norm: nn.Module, classifier: nn.Module) -> None:
        if not isinstance(norm, nn.LayerNorm):
            fail("norm", "an nn.LayerNorm", type(norm).__name__, type_error=True)
        assert isinstance(norm, nn.LayerNorm)
        self.norm = norm
        self.module = _linear_module(classifier)
        k = self.in_features
        if tuple(norm.normalized_shape) != (k,):
            fail(
                "norm",
                f"a LayerNorm over the classifier's {k} input features",
                f"normalized_shape {norm.normalized_shape}",
            )

    @property
    def classifier(self) -> nn.Linear | nn.Conv2d:
        """The linear layer after the norm (the model's own module)."""
        return self.module

    def _affine(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.in_features
        g = self.norm.weight if isinstance(self.norm.weight, torch.Tensor) else torch.ones(k)
        beta = self.norm.bias if isinstance(self.norm.bias, torch.Tensor) else torch.zeros(k)
        return _like(g, ref), _like(beta, ref)  # type: ignore[return-value]

    def _stats(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = _pool(features, "avg")
        mu = p.mean(dim=1, keepdim=True)
        sigma = (p.var(dim=1, unbiased=False, keepdim=True) + self.norm.eps).sqrt()
        return p, mu, sigma

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        p, mu, sigma = self._stats(features)
        g, beta = self._affine(p)
        w = _like(self.weight, p)
        assert w is not None
        return F.linear(g * (p - mu) / sigma + beta, w, _like(self.bias, p))

    def maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        _, mu, sigma = self._stats(features)
        g, _ = self._affine(features)
        w = _like(self.weight, features)
        assert w is not None
        wg = w * g  # [C, K]: W_ck * gamma_k
        raw = class_activation_maps(features, wg, classes)  # sum_k W_ck g_k f_k
        cls = classes.to(features.device, torch.long)
        if cls.ndim == 1:
            cls = cls.unsqueeze(0).expand(features.shape[0], -1)
        shift = wg.sum(dim=1)[cls] * mu  # sum_k W_ck g_k mu, [N, m]
        return (raw - shift[..., None, None]) / sigma[..., None, None]

    def offset(self, classes: torch.Tensor) -> torch.Tensor:
        w = self.weight
        _, beta = self._affine(w)
        off = w @ beta
        b = self.bias
        off = off if b is None else off + b
        return off[classes.to(off.device, torch.long)]

    def scale(self, features: torch.Tensor) -> torch.Tensor:
        f = features.detach().double()
        _, mu, sigma = self._stats(f)
        g, beta = self._affine(f)
        z = (f - mu[..., None, None]).abs().mean(dim=(2, 3)) / sigma
        w = self.weight.detach().double().abs()
        out = (z * g.abs()) @ w.T + beta.abs() @ w.T
        b = self.bias
        return out if b is None else out + b.detach().abs().double()

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.norm, self.classifier)

    def describe(self) -> str:
        return "avg-pool -> LayerNorm -> linear"


class BatchNormPoolHead(LinearHead):
    r"""Global average pooling, then ``BatchNorm1d`` over channels, then a linear layer (LeViT-style heads).

    In eval mode the norm uses its running statistics, so it is the fixed affine map
    :math:`p \mapsto a \odot p + d` with :math:`a = \gamma/\sqrt{\mathrm{var} + \epsilon}` and
    :math:`d = \beta - a \odot \mathrm{mean}`; folded into the classifier it is a :class:`LinearHead` with

    - weights :math:`W'_{ck} = W_{ck} a_k`, bias :math:`b' = W d + b`;
    - map :math:`M_c(x, y) = \sum_k W_{ck} a_k f_k(x, y)`, offset :math:`b'_c`, and the identity is exact.

    Exact in eval mode only: in training mode the norm uses the batch's statistics (the check of
    :class:`camloc.CAM` runs in eval mode). Weights and statistics are read live.

    Args:
        norm: ``nn.BatchNorm1d`` over ``K`` channels that tracks running statistics.
        classifier: ``nn.Linear`` or 1x1 ``nn.Conv2d`` on the normalised vector.
    """

    def __init__(self, norm: nn.Module, classifier: nn.Module) -> None:
        if not isinstance(norm, nn.BatchNorm1d):
            fail("norm", "an nn.BatchNorm1d", type(norm).__name__, type_error=True)
        assert isinstance(norm, nn.BatchNorm1d)
        super().__init__(classifier, pool="avg")
        k = int(_weight_2d(self.module).shape[1])
        if norm.num_features != k or norm.running_mean is None or norm.running_var is None:
            fail(
                "norm",
                f"a BatchNorm1d over the classifier's {k} input features with running statistics",
                f"num_features {norm.num_features}, track_running_stats={norm.track_running_stats}",
            )
        self.norm = norm

    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, d)``, both ``Tensor[K]``: the eval-mode norm is ``p -> a * p + d``."""
        n = self.norm
        assert n.running_mean is not None and n.running_var is not None
        a = (n.running_var + n.eps).rsqrt()
        if isinstance(n.weight, torch.Tensor):
            a = a * n.weight
        d = -a * n.running_mean
        if isinstance(n.bias, torch.Tensor):
            d = d + n.bias
        return a, d

    @property
    def weight(self) -> torch.Tensor:
        """``Tensor[C, K]``: the classifier's weights times the norm's scale (computed from live parameters)."""
        w = _weight_2d(self.module)
        a, _ = self._affine()
        return w * a.to(w)

    @property
    def bias(self) -> torch.Tensor:
        """``Tensor[C]``: ``W d + b``."""
        w = _weight_2d(self.module)
        _, d = self._affine()
        b = w @ d.to(w)
        own = getattr(self.module, "bias", None)
        return b if not isinstance(own, torch.Tensor) else b + own

    def scale(self, features: torch.Tensor) -> torch.Tensor:
        mag = features.detach().abs().double().mean(dim=(2, 3))  # [N, K]
        a, d = (t.detach().double() for t in self._affine())
        n = self.norm
        assert n.running_mean is not None
        w = _weight_2d(self.module).detach().double().abs()
        inner = mag * a.abs() + (a * n.running_mean.detach().double()).abs() + d.abs()  # every term's size
        own = getattr(self.module, "bias", None)
        out = inner @ w.T
        return out if not isinstance(own, torch.Tensor) else out + own.detach().abs().double()

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.norm, self.module)

    def describe(self) -> str:
        return "avg-pool -> BatchNorm1d (running statistics) -> linear"


# --------------------------------------------------------------------------------------------- the identity check


def _unit_roundoff(dtype: torch.dtype) -> tuple[float, float]:
    """``(u, u_acc)``: unit roundoff of ``dtype`` and of the dtype its sums accumulate in."""
    u = torch.finfo(dtype).eps / 2
    acc = torch.float32 if torch.finfo(dtype).bits < 32 else dtype
    return u, torch.finfo(acc).eps / 2


def identity_tolerance(features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-logit tolerance ``c * (2 u + n u_acc) * scale`` of an identity on ``features`` (module docstring).

    Args:
        features: ``Tensor[N, K, h, w]``; its dtype sets ``u`` and ``u_acc``, its shape ``n = K + h*w``.
        scale: ``Tensor[N, C]`` magnitude of the summed terms (:meth:`Head.scale`).
    Returns:
        ``Tensor[N, C]`` float64.
    """
    u, u_acc = _unit_roundoff(features.dtype)
    n = features.shape[1] + features.shape[2] * features.shape[3]
    return IDENTITY_SAFETY * (2 * u + n * u_acc) * scale.double() + torch.finfo(torch.float64).tiny


def _worst(diff: torch.Tensor, tol: torch.Tensor) -> tuple[float, float, bool]:
    ratio = diff / tol
    i = int(ratio.flatten().argmax())
    return float(diff.flatten()[i]), float(tol.flatten()[i]), bool((diff <= tol).all())


def check_head(
    head: Head,
    features: torch.Tensor,
    *,
    model_logits: torch.Tensor | None = None,
    source: str = "the head",
) -> None:
    """Check a head's identities on ``features [N, K, h, w]`` (``N`` small: the check uses every class).

    1. With ``model_logits [N, C]`` (the model's own ``model(x)`` for the same images): ``head.logits(features)``
       must equal them, so the trunk and the head together are the model.
    2. For ``pool == "avg"``: ``mean_xy head.maps(features, all classes) + head.offset == head.logits``.

    Both within :func:`identity_tolerance`. Raises :class:`~camloc.errors.UnsupportedModelError` naming what
    differs and by how much.
    """
    with torch.no_grad():
        f = features.detach()
        logits = head.logits(f)
        c = head.num_classes
        if not isinstance(logits, torch.Tensor) or logits.shape != (f.shape[0], c):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise UnsupportedModelError(f"{source}: {head.describe()} returned logits {got}, expected [N, {c}]")
        tol = identity_tolerance(f, head.scale(f))
        if model_logits is not None:
            ref = model_logits.detach()
            if not isinstance(ref, torch.Tensor) or ref.shape != logits.shape:
                got = tuple(ref.shape) if isinstance(ref, torch.Tensor) else type(ref).__name__
                raise UnsupportedModelError(
                    f"{source}: model(x) gave {got}, but the head ({head.describe()}) has {c} classes"
                )
            err, t, ok = _worst((logits.double() - ref.to(logits.device).double()).abs(), tol)
            if not ok:
                raise UnsupportedModelError(
                    f"{source}: the model's head is not {head.describe()}: model(x) differs from the head's logits "
                    f"on the trunk's features by {err:.3g} (tolerance {t:.3g} in {f.dtype}). There are layers "
                    "between the features and the classifier "
                    "(a hidden FC layer, a normalisation, ...), so CAM is not defined for this head."
                )
        if head.pool == "avg":
            classes = torch.arange(c, device=f.device).unsqueeze(0).expand(f.shape[0], -1)
            pooled = head.maps(f, classes).double().mean(dim=(2, 3)) + head.offset(classes).to(f.device).double()
            err, t, ok = _worst((pooled - logits.double()).abs(), tol)
            if not ok:
                raise UnsupportedModelError(
                    f"{source}: {head.describe()} breaks the CAM identity mean_xy(maps) + offset == logits by "
                    f"{err:.3g} (tolerance {t:.3g} in {f.dtype})"
                )


def __getattr__(name: str) -> Any:
    # Finding a model's trunk and head lives in camloc.resolve (which imports this module).
    if name in ("resolve_head", "CamHead", "ResolvedHead"):
        from camloc import resolve

        return getattr(resolve, name)
    raise AttributeError(f"module 'camloc.heads' has no attribute {name!r}")
