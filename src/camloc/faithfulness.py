"""Faithfulness metrics of score maps: deletion / insertion AUC, Average Drop / Increase in Confidence, pointing game
and energy-based pointing game.

Pure functions on tensors first, then :class:`Faithfulness`, a streaming accumulator (``update`` per batch,
``compute`` at the end, ``reset``; memory bounded by the number of steps, not the number of images) used by
``camloc evaluate --faithfulness``. Nothing here prints.

Inputs. ``x``: the network input ``Tensor[N, 3, H, W]``, NORMALISED as the weights expect (``(pixel / 255 - mean) /
std``). ``maps``: ``Tensor[N, H, W]``, one map per image AT THE INPUT RESOLUTION (resize first, e.g. with
:meth:`camloc.extractor.CamResult.upsampled`). ``classes``: ``Tensor[N]`` int64, the explained class of each image.
``model``: called as ``model(x) -> logits [N, C]`` (a tensor, or an output object with ``.logits``); it is used as it
is (call ``model.eval()`` first), under ``torch.no_grad``, in chunks of at most ``chunk_size`` images. The
"confidence" of a class is always its softmax probability.

Definitions.

* **Deletion / insertion** (Petsiuk et al., RISE, BMVC 2018). Pixels (all three channels) are ordered by the map's
  value, highest first (ties: raster order, row-major). With ``T = steps``, at step ``i = 0..T`` the first
  ``k_i = round(i * H * W / T)`` pixels of that order are replaced by the *baseline* (deletion: from the image
  towards the baseline) or copied from the image into the baseline (insertion: from the baseline towards the
  image), and the explained class's probability is recorded: ``p_i``. The AUC is the trapezoid rule over the
  fraction of pixels ``f_i = k_i / (H * W)``: ``sum_i (f_{i+1} - f_i) (p_i + p_{i+1}) / 2``, in ``[0, 1]``
  (probabilities in ``[0, 1]`` over a unit interval). A faithful map has a LOW deletion AUC and a HIGH insertion AUC.
  Baselines (:data:`BASELINES`): ``"zero"``: 0 in the normalised space, i.e. the weights' mean colour (RISE's
  deletion, ``torch.zeros_like`` of the normalised tensor); ``"blur"``: the image blurred with RISE's Gaussian
  (11x11, sigma 5; replicate padding where RISE pads with zeros), RISE's insertion start; ``"mean"``: the image's
  own per-channel mean colour. Defaults are RISE's: deletion ``"zero"``, insertion ``"blur"``.
* **Average Drop / Increase in Confidence** (Chattopadhyay et al., Grad-CAM++, WACV 2018). ``Y_i``: the class's
  probability on the image; ``O_i``: on the *explanation map* ``E_i = M_i * I_i``, the image multiplied pixel-wise by
  the map min-max normalised to ``[0, 1]`` (flat maps -> 0). Average Drop ``= mean_i max(0, Y_i - O_i) / Y_i``,
  Increase in Confidence ``= mean_i 1[Y_i < O_i]``, as fractions (the paper prints them x100). The product is
  taken, by default, in PIXEL space before normalisation (``space="pixel"``: ``I = x * std + mean`` in ``[0, 1]``,
  ``E = (M * I - mean) / std``): a zero of the map makes the pixel BLACK, as multiplying "the image" reads in the
  paper. ``space="normalized"`` multiplies the normalised tensor (``E = M * x``, as pytorch-grad-cam's
  ``multiply_tensor_with_cam`` does): there a zero makes the pixel the weights' mean colour (grey for ImageNet),
  and a half-weight pixel moves towards grey rather than towards black. The two conventions give different numbers
  (grey hides less than black), so say which one was used when comparing with papers.
* **Pointing game** (Zhang et al., ECCV 2016, excitation backprop). The map's maximum (first in raster order on
  ties) is a hit when the centre of that pixel lies within ``tolerance`` pixels (default 15) OF THE ORIGINAL IMAGE
  of some GT box: with ``scale = (sx, sy)`` network pixels per original pixel, the distance from the point to the
  box (0 inside) is ``sqrt((dx / sx)^2 + (dy / sy)^2)`` where ``dx, dy`` are the network-frame offsets to the box's
  closest point; hit when it is ``<= tolerance``. (TorchRay measures to GT pixel centres with a strict ``<``; here
  boxes are continuous regions in camloc's convention, :mod:`camloc.geometry`.) The value is the fraction of hits
  over the images that have GT boxes; images without boxes are skipped.
* **Energy-based pointing game** (Wang et al., Score-CAM, CVPRW 2020): the fraction of the map's energy inside the
  union of the GT boxes, ``sum_{p in boxes} L_p / sum_p L_p``. A pixel is inside when its centre is in some box.
  ``L`` is the map's positive part ``max(M, 0)`` by default (``energy="relu"``, "positive energy"; Score-CAM's maps
  are non-negative after its ReLU); ``energy="minmax"`` uses the min-max normalised map as Score-CAM's code does
  (for raw CAM maps, which have negative values, the two differ). A map with no energy scores 0. Mean over the
  images that have GT boxes.

GT boxes are float ``(x0, y0, x1, y1)`` in the frame of the maps (the network input), camloc's box convention.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from camloc._checks import check_choice, check_number, check_tensor, fail

__all__ = [
    "BASELINES",
    "METRICS",
    "ConfidenceChange",
    "Faithfulness",
    "FaithfulnessConfig",
    "FaithfulnessResult",
    "PerturbationCurves",
    "average_drop_increase",
    "baseline_images",
    "box_union_mask",
    "class_probabilities",
    "curve_auc",
    "deletion_insertion",
    "energy_pointing_game",
    "explanation_images",
    "faithfulness_doc",
    "pixel_fractions",
    "pixel_order",
    "pointing_game",
    "report_lines",
]

Baseline = Literal["zero", "blur", "mean"]
#: The baselines for removed pixels (deletion) / the starting image (insertion), see the module docstring.
BASELINES: tuple[str, ...] = ("zero", "blur", "mean")
Space = Literal["pixel", "normalized"]
Energy = Literal["relu", "minmax"]
Model = Callable[[torch.Tensor], Any]

BLUR_KERNEL = 11  # RISE's gkern(klen=11, nsig=5)
BLUR_SIGMA = 5.0


# ---------------------------------------------------------------------------------------------- checks


def _check_inputs(x: Any, maps: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x = check_tensor("x", x, ndim=4, floating=True)
    if x.shape[1] != 3:
        fail("x", "a tensor [N, 3, H, W] (RGB)", x)
    maps = check_tensor("maps", maps, ndim=3, floating=True, finite=True)
    if maps.shape != (x.shape[0], x.shape[2], x.shape[3]):
        fail("maps", f"a tensor [N, H, W] = {[x.shape[0], x.shape[2], x.shape[3]]} (maps at the input size)", maps)
    return x, maps.to(x.device)


def _check_classes(classes: Any, n: int) -> torch.Tensor:
    if isinstance(classes, Sequence):
        classes = torch.as_tensor(classes)
    classes = check_tensor("classes", classes, ndim=1)
    if classes.is_floating_point() or classes.shape[0] != n:
        fail("classes", f"an integer tensor [N] with N = {n}", classes)
    return classes.long()


def _check_boxes(gt_boxes: Any, n: int) -> list[np.ndarray]:
    if isinstance(gt_boxes, np.ndarray | torch.Tensor) and np.ndim(gt_boxes) == 3:
        gt_boxes = list(gt_boxes)
    if not isinstance(gt_boxes, Sequence) or len(gt_boxes) != n:
        fail("gt_boxes", f"a sequence of N = {n} box arrays [G_i, 4]", gt_boxes, type_error=True)
    out = []
    for b in gt_boxes:
        arr = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, np.float64).reshape(-1, 4)
        if not len(arr):
            fail("gt_boxes", "at least one box per image (skip images without boxes)", "an image with none")
        out.append(arr)
    return out


def _check_scale(scale: Any, n: int) -> np.ndarray:
    arr = np.asarray(scale, np.float64)
    if arr.ndim == 0:
        arr = np.full((n, 2), float(arr))
    elif arr.shape == (2,):
        arr = np.tile(arr, (n, 1))
    if arr.shape != (n, 2) or not np.isfinite(arr).all() or (arr <= 0).any():
        fail("scale", f"a positive number, an (sx, sy) pair or an array [N = {n}, 2]", np.asarray(scale))
    return arr


# ---------------------------------------------------------------------------------------------- model calls


def class_probabilities(
    model: Model, images: torch.Tensor, classes: torch.Tensor, *, chunk_size: int = 64
) -> torch.Tensor:
    """Softmax probability of ``classes [M]`` for ``images [M, 3, H, W]``: float64 ``[M]`` on the CPU.

    ``model`` runs under ``torch.no_grad`` on at most ``chunk_size`` images per call.
    """
    from camloc.resolve import _as_logits

    out = []
    with torch.no_grad():
        for s in range(0, images.shape[0], chunk_size):
            out.append(_probs(model, images[s : s + chunk_size], classes[s : s + chunk_size], _as_logits))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _probs(model: Model, images: torch.Tensor, classes: torch.Tensor, as_logits: Callable[[Any], Any]) -> torch.Tensor:
    raw = model(images)
    logits = as_logits(raw)
    if logits is None or logits.ndim != 2 or logits.shape[0] != images.shape[0]:
        fail("model", "a callable returning logits [N, C] (or an object with `.logits`)", raw, type_error=True)
    p = logits.float().softmax(dim=1).gather(1, classes.to(logits.device).view(-1, 1))[:, 0]
    return p.double().cpu()


# ---------------------------------------------------------------------------------------------- deletion / insertion


def pixel_fractions(num_pixels: int, steps: int) -> np.ndarray:
    """Fractions ``k_i / num_pixels`` of pixels perturbed at steps ``i = 0..steps``: float64 ``[steps + 1]``.

    ``k_i = round(i * num_pixels / steps)`` (numpy rounding), so ``k_0 = 0`` and ``k_steps = num_pixels``.
    """
    check_number("num_pixels", num_pixels, low=1, integer=True)
    check_number("steps", steps, low=1, integer=True)
    return _counts(num_pixels, steps) / num_pixels


def _counts(num_pixels: int, steps: int) -> np.ndarray:
    return np.round(np.arange(steps + 1) * (num_pixels / steps)).astype(np.int64)


def pixel_order(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel in the perturbation order: int64 ``[N, H * W]`` (0 = the map's highest pixel).

    Pixels are ordered by value, highest first; equal values keep raster order (row-major). Pixel ``p`` is
    perturbed at step ``i`` when ``rank[p] < k_i``.
    """
    maps = check_tensor("maps", maps, ndim=3, floating=True, finite=True)
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order).contiguous())
    return rank


def _gaussian_blur(x: torch.Tensor, size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype).to(x.device)
    c = x.shape[1]
    pad = size // 2
    y = F.pad(x, (pad, pad, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    y = F.pad(y, (0, 0, pad, pad), mode="replicate")
    return F.conv2d(y, k.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


def baseline_images(x: torch.Tensor, baseline: Baseline | torch.Tensor) -> torch.Tensor:
    """The baseline image of each input (normalised space, like ``x [N, 3, H, W]``), see :data:`BASELINES`.

    A tensor broadcastable to ``x`` is used as given (e.g. a colour ``[3, 1, 1]`` in the normalised space).
    """
    if isinstance(baseline, torch.Tensor):
        try:
            return torch.broadcast_to(baseline.to(x.device, x.dtype), x.shape)
        except RuntimeError:
            fail("baseline", f"a tensor broadcastable to {list(x.shape)}", baseline)
    check_choice("baseline", baseline, BASELINES)
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    return _gaussian_blur(x)


def curve_auc(curves: Any, fractions: Any) -> np.ndarray:
    """Trapezoid-rule area under ``curves [N, T]`` over ``fractions [T]`` (increasing, 0 to 1): float64 ``[N]``."""
    y = np.asarray(curves, np.float64)
    f = np.asarray(fractions, np.float64)
    if y.ndim == 1:
        y = y[None]
    if f.ndim != 1 or y.ndim != 2 or y.shape[1] != f.size or f.size < 2:
        fail("curves", f"an array [N, T] matching fractions [T = {f.size} >= 2]", y)
    return np.asarray(((f[1:] - f[:-1]) * (y[:, 1:] + y[:, :-1]) / 2).sum(axis=1))


@dataclass(frozen=True)
class PerturbationCurves:
    """Deletion and insertion curves of a batch.

    Attributes:
        fractions: float64 ``[T + 1]``, fraction of pixels perturbed at each step (0 to 1).
        deletion: float64 ``[N, T + 1]``, the class's probability as pixels are removed (step 0: the image).
        insertion: float64 ``[N, T + 1]``, as pixels are inserted into the baseline (last step: the image).
        deletion_auc, insertion_auc: float64 ``[N]`` in ``[0, 1]`` (:func:`curve_auc`).
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray


def _perturbed(
    model: Model,
    x: torch.Tensor,
    base: torch.Tensor,
    rank: torch.Tensor,
    counts: torch.Tensor,
    classes: torch.Tensor,
    *,
    insert: bool,
    chunk_size: int,
) -> np.ndarray:
    """Probabilities ``[N, len(counts)]`` with the first ``counts[j]`` pixels taken from ``base`` (deletion) or from
    ``x`` into ``base`` (insertion); the images are built chunk by chunk (at most ``chunk_size`` at a time)."""
    from camloc.resolve import _as_logits

    n, _, h, w = x.shape
    s = counts.numel()
    jobs = torch.arange(n * s)
    out = torch.empty(n * s, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, n * s, chunk_size):
            j = jobs[start : start + chunk_size]
            b, i = (j // s).to(x.device), (j % s).to(x.device)
            taken = (rank[b] < counts[i][:, None]).view(-1, 1, h, w)  # pixels perturbed at that step
            src, dst = (x[b], base[b]) if insert else (base[b], x[b])
            imgs = torch.where(taken, src, dst)
            out[start : start + j.numel()] = _probs(model, imgs, classes.to(x.device)[b], _as_logits)
    return out.view(n, s).numpy()


def deletion_insertion(
    model: Model,
    x: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    *,
    steps: int = 50,
    deletion_baseline: Baseline | torch.Tensor = "zero",
    insertion_baseline: Baseline | torch.Tensor = "blur",
    chunk_size: int = 64,
    reference: torch.Tensor | None = None,
) -> PerturbationCurves:
    """Deletion and insertion curves and AUCs of ``maps [N, H, W]`` for ``classes [N]`` (module docstring).

    One batch of images at once: ``N * (2 * steps + 1)`` perturbed images in chunks of ``chunk_size`` per model call
    (the unperturbed image, deletion's step 0 and insertion's last step, is run once; pass its probabilities as
    ``reference [N]`` when already known).
    """
    x, maps = _check_inputs(x, maps)
    classes = _check_classes(classes, x.shape[0])
    check_number("steps", steps, low=1, integer=True)
    check_number("chunk_size", chunk_size, low=1, integer=True)
    n, _, h, w = x.shape
    counts_np = _counts(h * w, steps)
    fractions = counts_np / (h * w)
    if reference is None:
        reference = class_probabilities(model, x, classes, chunk_size=chunk_size)
    ref = np.asarray(torch.as_tensor(reference, dtype=torch.float64).cpu()).reshape(n, 1)
    rank = pixel_order(maps)
    counts = torch.as_tensor(counts_np, device=x.device)
    dele = _perturbed(model, x, baseline_images(x, deletion_baseline), rank, counts[1:], classes, insert=False,
                      chunk_size=chunk_size)  # fmt: skip
    ins = _perturbed(model, x, baseline_images(x, insertion_baseline), rank, counts[:-1], classes, insert=True,
                     chunk_size=chunk_size)  # fmt: skip
    d = np.concatenate([ref, dele], axis=1)
    i = np.concatenate([ins, ref], axis=1)
    return PerturbationCurves(fractions, d, i, curve_auc(d, fractions), curve_auc(i, fractions))


# ---------------------------------------------------------------------------------------------- confidence


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    from camloc.cam import normalize_maps

    return normalize_maps(maps.float(), mode="minmax")


def explanation_images(
    x: torch.Tensor,
    maps: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    space: Space = "pixel",
) -> torch.Tensor:
    """The explanation maps ``E = M * I`` of Grad-CAM++, normalised like ``x [N, 3, H, W]`` (module docstring).

    ``M``: ``maps [N, H, W]`` min-max normalised per image. ``space="pixel"``: ``E = (M * (x * std + mean) - mean) /
    std``; ``space="normalized"``: ``E = M * x``. ``mean`` / ``std``: the weights' normalisation (3 values each).
    """
    x, maps = _check_inputs(x, maps)
    check_choice("space", space, ("pixel", "normalized"))
    m = _minmax(maps).to(x.dtype)[:, None]
    if space == "normalized":
        return x * m
    if len(mean) != 3 or len(std) != 3:
        fail("mean/std", "3 values each (RGB)", f"{len(mean)} and {len(std)}")
    mu = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    sd = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (m * (x * sd + mu) - mu) / sd


@dataclass(frozen=True)
class ConfidenceChange:
    """Confidence on the image and on its explanation map, per image.

    Attributes:
        full: float64 ``[N]``, the class's softmax probability ``Y`` on the image.
        masked: float64 ``[N]``, on the explanation map ``O``.
        drop: float64 ``[N]``, ``max(0, Y - O) / Y`` (its mean is Average Drop).
        increase: bool ``[N]``, ``Y < O`` (its mean is Increase in Confidence).
    """

    full: np.ndarray
    masked: np.ndarray
    drop: np.ndarray
    increase: np.ndarray

    @property
    def average_drop(self) -> float:
        return float(self.drop.mean()) if self.drop.size else float("nan")

    @property
    def increase_in_confidence(self) -> float:
        return float(self.increase.mean()) if self.increase.size else float("nan")


def average_drop_increase(
    model: Model,
    x: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    space: Space = "pixel",
    chunk_size: int = 64,
    reference: torch.Tensor | None = None,
) -> ConfidenceChange:
    """Average Drop / Increase in Confidence terms of ``maps [N, H, W]`` for ``classes [N]`` (module docstring).

    ``reference [N]``: the probabilities on the unperturbed images when already known (else computed).
    """
    x, maps = _check_inputs(x, maps)
    classes = _check_classes(classes, x.shape[0])
    check_number("chunk_size", chunk_size, low=1, integer=True)
    if reference is None:
        reference = class_probabilities(model, x, classes, chunk_size=chunk_size)
    y = np.asarray(torch.as_tensor(reference, dtype=torch.float64).cpu()).reshape(-1)
    e = explanation_images(x, maps, mean=mean, std=std, space=space)
    o = class_probabilities(model, e, classes, chunk_size=chunk_size).numpy()
    drop = np.maximum(0.0, y - o) / np.maximum(y, np.finfo(np.float64).tiny)
    return ConfidenceChange(y, o, drop, y < o)


# ---------------------------------------------------------------------------------------------- pointing games


def _argmax_points(maps: torch.Tensor) -> np.ndarray:
    """Centres ``(x, y)`` of each map's maximum (first in raster order): float64 ``[N, 2]``."""
    w = maps.shape[2]
    idx = maps.flatten(1).argmax(dim=1).cpu().numpy()  # torch: first occurrence of the maximum
    return np.stack([idx % w + 0.5, idx // w + 0.5], axis=1).astype(np.float64)


def pointing_game(
    maps: torch.Tensor,
    gt_boxes: Sequence[Any],
    *,
    tolerance: float = 15.0,
    scale: Any = 1.0,
) -> np.ndarray:
    """Pointing-game hits of ``maps [N, H, W]`` against ``gt_boxes`` (N arrays ``[G_i, 4]``, G_i >= 1): bool ``[N]``.

    ``tolerance`` is in original-image pixels; ``scale``: network pixels per original pixel, a number, ``(sx, sy)``
    or an array ``[N, 2]`` (:attr:`camloc.geometry.Geometry.scale`). See the module docstring.
    """
    maps = check_tensor("maps", maps, ndim=3, floating=True, finite=True)
    check_number("tolerance", tolerance, low=0.0)
    n = maps.shape[0]
    boxes = _check_boxes(gt_boxes, n)
    sc = _check_scale(scale, n)
    pts = _argmax_points(maps)
    hits = np.zeros(n, bool)
    for k, (b, (px, py)) in enumerate(zip(boxes, pts, strict=True)):
        dx = np.maximum(np.maximum(b[:, 0] - px, px - b[:, 2]), 0.0) / sc[k, 0]
        dy = np.maximum(np.maximum(b[:, 1] - py, py - b[:, 3]), 0.0) / sc[k, 1]
        hits[k] = bool((np.hypot(dx, dy) <= tolerance + 1e-9).any())
    return hits


def box_union_mask(boxes: Any, size: tuple[int, int]) -> np.ndarray:
    """Pixels ``[H, W]`` (``size = (H, W)``) whose centre lies in some box ``[G, 4]``: bool."""
    h, w = size
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx, cy = np.arange(w) + 0.5, np.arange(h) + 0.5
    inx = (cx[None] >= b[:, :1]) & (cx[None] < b[:, 2:3])  # [G, W]
    iny = (cy[None] >= b[:, 1:2]) & (cy[None] < b[:, 3:4])  # [G, H]
    return np.asarray((iny[:, :, None] & inx[:, None, :]).any(axis=0))


def energy_pointing_game(maps: torch.Tensor, gt_boxes: Sequence[Any], *, energy: Energy = "relu") -> np.ndarray:
    """Fraction of each map's energy inside its GT boxes: float64 ``[N]`` in ``[0, 1]`` (module docstring).

    ``maps [N, H, W]``; ``gt_boxes``: N arrays ``[G_i, 4]`` (G_i >= 1) in the maps' frame.
    """
    maps = check_tensor("maps", maps, ndim=3, floating=True, finite=True)
    check_choice("energy", energy, ("relu", "minmax"))
    n, h, w = maps.shape
    boxes = _check_boxes(gt_boxes, n)
    m = (maps.float().clamp_min(0) if energy == "relu" else _minmax(maps)).double().cpu().numpy()
    out = np.zeros(n)
    for k, b in enumerate(boxes):
        total = m[k].sum()
        if total > 0:
            out[k] = m[k][box_union_mask(b, (h, w))].sum() / total
    return out


# ---------------------------------------------------------------------------------------------- accumulator


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Options of :class:`Faithfulness` (``camloc evaluate --faithfulness``); see the module docstring.

    Attributes:
        steps: deletion / insertion steps (RISE used one row of pixels per step: ``steps = H``).
        deletion_baseline, insertion_baseline: one of :data:`BASELINES` (RISE: ``"zero"`` and ``"blur"``).
        confidence_space: where Average Drop's ``M * I`` is taken: ``"pixel"`` (default) or ``"normalized"``.
        tolerance: pointing-game tolerance in original-image pixels (15, Zhang et al.).
        energy: the energy pointing game's map: ``"relu"`` (positive part) or ``"minmax"``.
        chunk_size: at most this many images per model call.
    """

    steps: int = 50
    deletion_baseline: Baseline = "zero"
    insertion_baseline: Baseline = "blur"
    confidence_space: Space = "pixel"
    tolerance: float = 15.0
    energy: Energy = "relu"
    chunk_size: int = 64

    def __post_init__(self) -> None:
        check_number("steps", self.steps, low=1, integer=True)
        check_choice("deletion_baseline", self.deletion_baseline, BASELINES)
        check_choice("insertion_baseline", self.insertion_baseline, BASELINES)
        check_choice("confidence_space", self.confidence_space, ("pixel", "normalized"))
        check_number("tolerance", self.tolerance, low=0.0)
        check_choice("energy", self.energy, ("relu", "minmax"))
        check_number("chunk_size", self.chunk_size, low=1, integer=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "deletion_baseline": self.deletion_baseline,
            "insertion_baseline": self.insertion_baseline,
            "confidence_space": self.confidence_space,
            "tolerance_px": self.tolerance,
            "energy": self.energy,
        }


#: metric name -> (label, which direction is better)
METRICS: dict[str, tuple[str, str]] = {
    "deletion_auc": ("Deletion AUC", "lower"),
    "insertion_auc": ("Insertion AUC", "higher"),
    "average_drop": ("Average Drop", "lower"),
    "increase_in_confidence": ("Increase in Confidence", "higher"),
    "pointing_game": ("Pointing game (hit rate)", "higher"),
    "energy_pointing_game": ("Energy-based pointing game", "higher"),
}


@dataclass(frozen=True)
class FaithfulnessResult:
    """Faithfulness numbers over a data set (fractions in ``[0, 1]``).

    Attributes:
        metrics: ``deletion_auc``, ``insertion_auc``, ``average_drop``, ``increase_in_confidence`` over the
            ``n_images`` images; ``pointing_game``, ``energy_pointing_game`` over the ``n_box_images`` with boxes
            (absent when there are none).
        fractions: float64 ``[T + 1]``; ``deletion_curve`` / ``insertion_curve``: float64 ``[T + 1]``, the mean
            probability at each step over the images.
        seconds: time spent in :meth:`Faithfulness.update` (model calls included).
    """

    metrics: dict[str, float]
    n_images: int
    n_box_images: int
    fractions: np.ndarray
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray
    config: FaithfulnessConfig
    seconds: float = 0.0


class Faithfulness:
    """Streaming faithfulness metrics: ``update`` per batch, ``compute`` at the end, ``reset``.

    Memory is bounded: running sums and the two mean curves (``steps + 1`` values each), never per-image maps.
    ``mean`` / ``std``: the weights' normalisation of ``x`` (needed by ``confidence_space="pixel"``).
    """

    def __init__(
        self,
        config: FaithfulnessConfig | None = None,
        *,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        self.config = FaithfulnessConfig() if config is None else config
        if not isinstance(self.config, FaithfulnessConfig):
            fail("config", "a FaithfulnessConfig", self.config, type_error=True)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.reset()

    def reset(self) -> None:
        self._sums = dict.fromkeys(("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence"), 0.0)
        self._box_sums = dict.fromkeys(("pointing_game", "energy_pointing_game"), 0.0)
        self._n = 0
        self._nb = 0
        self._fractions: np.ndarray | None = None
        self._curves = np.zeros((2, self.config.steps + 1))
        self._seconds = 0.0

    def update(
        self,
        model: Model,
        x: torch.Tensor,
        maps: torch.Tensor,
        classes: torch.Tensor,
        gt_boxes: Sequence[Any] | None = None,
        *,
        scale: Any = 1.0,
    ) -> list[dict[str, Any]]:
        """Add a batch: ``x [N, 3, H, W]`` (normalised), ``maps [N, H, W]`` at the input size of ``classes [N]``,
        ``gt_boxes``: N arrays ``[G_i, 4]`` in the network frame (empty: the image is skipped by the pointing
        games) or None; ``scale``: network pixels per original pixel (number, ``(sx, sy)`` or ``[N, 2]``).

        Returns the per-image values (``None`` for the pointing games of images without boxes).
        """
        t0 = time.perf_counter()
        c = self.config
        x, maps = _check_inputs(x, maps)
        cls = _check_classes(classes, x.shape[0])
        n = x.shape[0]
        ref = class_probabilities(model, x, cls, chunk_size=c.chunk_size)
        curves = deletion_insertion(model, x, maps, cls, steps=c.steps, deletion_baseline=c.deletion_baseline,
                                    insertion_baseline=c.insertion_baseline, chunk_size=c.chunk_size,
                                    reference=ref)  # fmt: skip
        conf = average_drop_increase(model, x, maps, cls, mean=self.mean, std=self.std, space=c.confidence_space,
                                     chunk_size=c.chunk_size, reference=ref)  # fmt: skip
        rows: list[dict[str, Any]] = [
            {
                "deletion_auc": float(curves.deletion_auc[k]),
                "insertion_auc": float(curves.insertion_auc[k]),
                "confidence": float(conf.full[k]),
                "confidence_explanation_map": float(conf.masked[k]),
                "pointing_game": None,
                "energy_pointing_game": None,
            }
            for k in range(n)
        ]
        boxes = [None] * n if gt_boxes is None else list(gt_boxes)
        if len(boxes) != n:
            fail("gt_boxes", f"N = {n} box arrays or None", f"{len(boxes)} entries")
        boxed = [k for k in range(n) if boxes[k] is not None and np.asarray(boxes[k]).size]
        if boxed:
            sc = _check_scale(scale, n)[boxed]
            mb = maps[boxed].detach().cpu()
            bb = [boxes[k] for k in boxed]
            hits = pointing_game(mb, bb, tolerance=c.tolerance, scale=sc)
            energy = energy_pointing_game(mb, bb, energy=c.energy)
            for j, k in enumerate(boxed):
                rows[k]["pointing_game"] = bool(hits[j])
                rows[k]["energy_pointing_game"] = float(energy[j])
            self._box_sums["pointing_game"] += float(hits.sum())
            self._box_sums["energy_pointing_game"] += float(energy.sum())
        self._sums["deletion_auc"] += float(curves.deletion_auc.sum())
        self._sums["insertion_auc"] += float(curves.insertion_auc.sum())
        self._sums["average_drop"] += float(conf.drop.sum())
        self._sums["increase_in_confidence"] += float(conf.increase.sum())
        if self._fractions is not None and self._fractions.shape != curves.fractions.shape:
            fail("x", "images of one size across updates", x)
        self._fractions = curves.fractions
        self._curves[0] += curves.deletion.sum(axis=0)
        self._curves[1] += curves.insertion.sum(axis=0)
        self._n += n
        self._nb += len(boxed)
        self._seconds += time.perf_counter() - t0
        return rows

    def compute(self) -> FaithfulnessResult:
        """The metrics so far (NaN-free: the pointing games are absent without box images)."""
        if self._n == 0:
            fail("Faithfulness", "updated with at least one image before compute()", "no images")
        metrics = {k: v / self._n for k, v in self._sums.items()}
        if self._nb:
            metrics.update({k: v / self._nb for k, v in self._box_sums.items()})
        assert self._fractions is not None
        return FaithfulnessResult(
            metrics,
            self._n,
            self._nb,
            self._fractions,
            self._curves[0] / self._n,
            self._curves[1] / self._n,
            self.config,
            self._seconds,
        )


def faithfulness_doc(result: FaithfulnessResult, *, explained: str = "true class") -> dict[str, Any]:
    """The JSON-ready ``faithfulness`` section of ``metrics.json`` (rounded floats, the curves, the options)."""
    r = 6
    return {
        "explained_class": explained,
        "confidence": "softmax probability of the explained class",
        "images": result.n_images,
        "images_with_boxes": result.n_box_images,
        **result.config.as_dict(),
        "metrics": {k: round(float(v), r) for k, v in result.metrics.items()},
        "curves": {
            "fractions": [round(float(v), r) for v in result.fractions],
            "deletion": [round(float(v), r) for v in result.deletion_curve],
            "insertion": [round(float(v), r) for v in result.insertion_curve],
        },
        "seconds": round(result.seconds, 2),
        "seconds_per_image": round(result.seconds / max(result.n_images, 1), 4),
    }


def report_lines(doc: dict[str, Any]) -> list[str]:
    """Markdown lines for ``report.md`` from :func:`faithfulness_doc`'s section: the table and its conditions."""
    m = doc["metrics"]
    lines = [
        f"## Faithfulness (map of the {doc['explained_class']})",
        "",
        f"- {doc['images']} images; pointing games over the {doc['images_with_boxes']} with boxes; confidence: "
        f"{doc['confidence']}",
        f"- deletion / insertion: {doc['steps']} steps, baselines {doc['deletion_baseline']} / "
        f"{doc['insertion_baseline']}; Average Drop: map x image in {doc['confidence_space']} space; pointing "
        f"tolerance {doc['tolerance_px']:g} px of the original image; energy: {doc['energy']}",
        f"- cost: {doc['seconds']:.1f} s ({doc['seconds_per_image']:.3f} s per image)",
        "",
        "| metric | value (%) | better |",
        "|---|---:|---|",
    ]
    for k, (label, better) in METRICS.items():
        if k in m:
            lines.append(f"| {label} | {100 * m[k]:.2f} | {better} |")
    return [*lines, ""]
