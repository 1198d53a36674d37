r"""Fit a linear head on the pooled features of a frozen trunk: a localizer for new classes from image labels.

The paper's section 4: the global-average-pooled features :math:`p_k = \operatorname{mean}_{xy} f_k(x, y)` of
a network trained once are generic, so a linear classifier on them, fitted on image-level labels only, gives
class activation maps :math:`M_c = \sum_k w_{ck} f_k` that box new classes.

:func:`fit_linear_head` does it in four steps:

1. **data**: the layouts of :func:`camloc.training.data.discover` (camloc CSV, Tiny-ImageNet, ImageFolder).
   Only the training split is fitted on; a seeded per-class hold-out of it (``val_fraction``) chooses ``C``.
   A validation folder of the data set, when there is one, is never fitted on: it is reported as ``test``.
2. **features**: every image through the one image pipeline (:class:`camloc.pipeline.ImagePipeline`,
   the trunk's preprocessing), the trunk under ``no_grad``, pooled by the mean: ``float32 [N, K]``. Cached on
   disk (:class:`FeatureCache`) under a key of the trunk's weights, the preprocessing, the file list (path,
   size, mtime) and the view (``plain`` / ``flip``, the mirrored image), so a re-fit with other options does
   not run the trunk again.
3. **classifier** (scikit-learn): multinomial logistic regression (default) or a linear SVM (the paper's),
   on standardised features; ``C`` from a grid, chosen by accuracy on the hold-out; then re-fitted on the
   whole training split with that ``C``. ``class_weight="balanced"`` optionally.
4. **one head**: the standardisation is folded into the weights,
   :math:`W' = W / s`, :math:`b' = b - W' \mu`, so the result is one exact GAP -> linear head
   (:class:`FittedHeadNetwork`, ``fc``): ``logit_c = W'_c p + b'_c`` equals the classifier's
   ``decision_function`` on the pooled features, and ``mean_xy M_c + b'_c = logit_c`` (the CAM identity).
   Binary problems (``coef_`` of shape ``[1, K]``) become two classes ``[negative, positive]`` with rows
   ``[0; w]`` and biases ``[0; b]`` (as :class:`camloc.heads.SklearnHead`): the positive class carries the map,
   the negative class's map is zero.

The result is saved as a camloc checkpoint of architecture kind ``"fitted_head"`` (:mod:`camloc.checkpoint`),
read by ``camloc explain/evaluate --checkpoint`` and :func:`camloc.checkpoint.load_checkpoint` unchanged.
Its ``spec`` names the trunk (``model`` spec, ``weights`` file + sha256, or a camloc ``checkpoint`` file +
sha256) and whether the trunk's weights are stored in the checkpoint itself (``embedded``: always for trunks
whose weights cannot be rebuilt, e.g. random initialisation; on request otherwise); its state dict holds
``fc.weight [C, K]``, ``fc.bias [C]`` (and ``trunk.*`` when embedded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from camloc._checks import check_choice, check_number, fail
from camloc.errors import CamlocValueError
from camloc.models.info import ModelInfo, Preprocess

__all__ = [
    "DEFAULT_C_GRID",
    "FeatureCache",
    "FitResult",
    "FittedHeadNetwork",
    "LinearFit",
    "extract_pooled_features",
    "fit_linear_classifier",
    "fit_linear_head",
    "fold_standardization",
    "trunk_fingerprint",
]

ARCHITECTURE_KIND = "fitted_head"
DEFAULT_C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
"""``C`` values tried on the hold-out (inverse regularisation strength, on standardised features)."""
_CACHE_VERSION = 1
Classifier = Literal["logreg", "svm"]


def _sklearn() -> Any:
    try:
        import sklearn
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise CamlocValueError(
            "`camloc fit` needs scikit-learn, which is not installed: pip install camloc[fit]"
        ) from e
    return sklearn


# --------------------------------------------------------------------------------------------- the network


class FittedHeadNetwork(nn.Module):
    """A frozen trunk and a fitted GAP -> linear head: ``logits = fc(mean_xy trunk_features(x))``.

    Follows the timm head contract (``forward_features`` ``[N, K, h, w]``, ``forward_head``, ``get_classifier``)
    so :class:`camloc.CAM`, ``explain`` and ``evaluate`` find the head like any other model's.

    Args:
        trunk: a classifier whose feature trunk camloc resolves (:func:`camloc.resolve.resolve_head`); its own
            head is not used.
        fc: ``nn.Linear(K, C)``, the fitted head.
        trunk_in_state: ``False`` (the trunk's weights are referenced, not stored): ``state_dict()`` holds only
            ``fc.*`` and ``load_state_dict`` expects only those.
    """

    cam_pool = "avg"

    def __init__(self, trunk: nn.Module, fc: nn.Linear, *, trunk_in_state: bool = True) -> None:
        super().__init__()
        from camloc.resolve import resolve_head

        self.trunk = trunk
        self.fc = fc
        self.num_features = int(fc.in_features)
        self.num_classes = int(fc.out_features)
        self.trunk_in_state = trunk_in_state
        self._features = resolve_head(trunk)
        if not trunk_in_state:
            self.register_state_dict_post_hook(_drop_trunk_keys)
            self.register_load_state_dict_post_hook(_allow_missing_trunk)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, K, h, w]``: the trunk's feature map."""
        return self._features.run(x)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Mean over ``(h, w)``, then ``fc``: ``[N, K, h, w] -> [N, C]`` (``pre_logits``: the pooled ``[N, K]``)."""
        p = x.mean(dim=(2, 3))
        return p if pre_logits else self.fc(p)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _drop_trunk_keys(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for k in [k for k in state if k.startswith(prefix + "trunk.")]:
        del state[k]


def _allow_missing_trunk(module: nn.Module, incompatible: Any) -> None:
    missing = incompatible.missing_keys
    missing[:] = [k for k in missing if not k.startswith("trunk.") and ".trunk." not in k]


# --------------------------------------------------------------------------------------------- features


def trunk_fingerprint(model: nn.Module) -> str:
    """sha256 (hex) of a model's class name and state dict (names, dtypes, shapes, bytes): the cache's trunk key."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Images(torch.utils.data.Dataset):
    """Paths -> ``(index, Tensor[3, H, W] | None, error | None)`` through the one image pipeline."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], preprocess: Preprocess) -> None:
        from camloc.pipeline import ImagePipeline

        self.paths = [Path(p) for p in paths]
        self.pipeline = ImagePipeline(preprocess)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        from camloc.errors import CamlocError

        try:
            return i, self.pipeline(self.paths[i]).tensor, None
        except CamlocError as e:
            return i, None, str(e)


def _collate(items: list[Any]) -> list[Any]:
    return items


def stream_image_batches(
    paths: Sequence[Path],
    preprocess: Preprocess,
    *,
    batch_size: int,
    device: str | torch.device,
    workers: int | None,
    progress: bool,
    desc: str,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``(indices into paths, Tensor[B, 3, H, W] on device)`` batches through the one image pipeline, in order.

    Every image is read; once one fails no more batches are yielded, and after the last batch a
    :class:`~camloc.errors.CamlocValueError` names every unreadable file. ``workers=None``: up to 2 worker
    processes when there is more than one batch. A tqdm bar (``desc``) with ``progress``.
    """
    for idx, x, _ in stream_dataset_batches(
        _Images(paths, preprocess), paths, batch_size=batch_size, device=device, workers=workers,
        progress=progress, desc=desc,
    ):  # fmt: skip
        yield idx, x


def stream_dataset_batches(
    ds: torch.utils.data.Dataset[Any],
    paths: Sequence[Path],
    *,
    batch_size: int,
    device: str | torch.device,
    workers: int | None,
    progress: bool,
    desc: str,
) -> Iterator[tuple[list[int], torch.Tensor, list[tuple[Any, ...]]]]:
    """:func:`stream_image_batches` over any dataset whose items are ``(index, tensor, *extra, error or None)``:
    yields ``(indices, Tensor[B, ...] on device, [extra of each image])``, with the same failure rule."""
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(paths) > batch_size else 0
    check_number("workers", workers, low=0, integer=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    failures: list[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="img", desc=desc, dynamic_ncols=True)
    try:
        for items in loader:
            failures += [f"{paths[it[0]]}: {it[-1]}" for it in items if it[-1] is not None]
            good = [it for it in items if it[-1] is None]
            if good and not failures:
                yield [it[0] for it in good], torch.stack([it[1] for it in good]).to(device), [it[2:-1] for it in good]
            if bar is not None:
                bar.update(len(items))
    finally:
        if bar is not None:
            bar.close()
    if failures:
        shown = "; ".join(failures[:5]) + (f"; ... (+{len(failures) - 5} more)" if len(failures) > 5 else "")
        raise CamlocValueError(f"`data` must hold readable images; {len(failures)} could not be read: {shown}")


def extract_pooled_features(
    model: nn.Module,
    preprocess: Preprocess,
    paths: Sequence[str | os.PathLike[str]],
    *,
    views: Sequence[Literal["plain", "flip"]] = ("plain",),
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Mean-pooled trunk features of image files: ``{view: float32 [N, K]}`` in ``paths`` order.

    ``"plain"``: the image as the pipeline gives it; ``"flip"``: mirrored left-right (the network input flipped,
    which is the flip of the image resampled the same way). The trunk is found by
    :func:`camloc.resolve.resolve_head` and run under ``no_grad``; the model's ``training`` flag is not changed
    (pass it in eval mode). An unreadable image raises :class:`~camloc.errors.CamlocValueError` naming every
    unreadable file.
    """
    from camloc.resolve import resolve_head

    check_number("batch_size", batch_size, low=1, integer=True)
    for v in views:
        check_choice("views", v, ("plain", "flip"))
    resolved = resolve_head(model)
    files = [Path(p) for p in paths]
    out: dict[str, list[np.ndarray]] = {v: [] for v in views}
    batches = stream_image_batches(
        files, preprocess, batch_size=batch_size, device=device, workers=workers, progress=progress, desc="features"
    )
    with torch.no_grad():
        for _, x in batches:
            for v in views:
                f, _ = resolved.run(x if v == "plain" else torch.flip(x, dims=[3]))
                out[v].append(f.float().mean(dim=(2, 3)).cpu().numpy())
    k = 0
    return {v: (np.concatenate(a) if a else np.zeros((0, k), np.float32)) for v, a in out.items()}


class FeatureCache:
    """Pooled features on disk: ``DIR/features-<key>.npy`` (``float32 [N, K]``), written atomically.

    The key (:meth:`key`) is the sha256 of the trunk fingerprint, the preprocessing, the files (resolved path,
    size, mtime) and the view, so any change to one of them is a different entry (stale entries are never read).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @staticmethod
    def key(trunk: str, preprocess: Preprocess, paths: Sequence[Path], view: str) -> str:
        files = []
        for p in paths:
            st = p.stat()
            files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
        doc = {"v": _CACHE_VERSION, "trunk": trunk, "preprocess": preprocess.to_dict(), "files": files, "view": view}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"features-{key[:32]}.npy"

    def load(self, key: str, n: int) -> np.ndarray | None:
        """The cached ``[n, K]`` array, or ``None`` (missing, unreadable or of another length)."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return a if a.ndim == 2 and a.shape[0] == n and a.dtype == np.float32 else None

    def save(self, key: str, features: np.ndarray) -> Path:
        import io

        from camloc._io import atomic_write_bytes

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(features, np.float32), allow_pickle=False)
        p = self.path(key)
        atomic_write_bytes(p, buf.getvalue())
        return p


# --------------------------------------------------------------------------------------------- classifier


@dataclass(frozen=True)
class LinearFit:
    """A fitted linear classifier on pooled features, as one head.

    Attributes:
        weight: ``float64 [C, K]`` (standardisation folded in; binary: ``[0; w]``).
        bias: ``float64 [C]``.
        C: the chosen inverse regularisation strength.
        grid: ``{C: hold-out accuracy}`` of every ``C`` tried (empty when only one was given).
        holdout_accuracy: accuracy of the chosen ``C``'s hold-out model (``nan`` without a hold-out).
        holdout_confusion: ``int [C, C]`` rows true class, columns predicted, of that model (``None``: no hold-out).
        estimator: the final scikit-learn pipeline (scaler + classifier), fitted on all training features.
    """

    weight: np.ndarray
    bias: np.ndarray
    C: float
    grid: dict[float, float]
    holdout_accuracy: float
    holdout_confusion: np.ndarray | None
    estimator: Any = field(repr=False)

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        """``float64 [N, C]`` logits of pooled features ``[N, K]``: ``pooled @ weight.T + bias``."""
        return np.asarray(pooled, np.float64) @ self.weight.T + self.bias


def fold_standardization(
    coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Fold ``z = (p - mean) / scale`` into a linear layer: ``W z + b = W' p + b'``.

    ``W' = W / scale`` (per column), ``b' = b - W' mean``. Binary ``coef [1, K]`` becomes ``[0; W']``, ``[0; b']``.
    Returns ``(weight float64 [C, K], bias float64 [C])``.
    """
    w = np.asarray(coef, np.float64) / np.asarray(scale, np.float64)[None, :]
    b = np.asarray(intercept, np.float64).reshape(-1) - w @ np.asarray(mean, np.float64)
    if w.shape[0] == 1:
        w = np.concatenate([np.zeros_like(w), w])
        b = np.concatenate([np.zeros(1), b])
    return w, b


def _make_estimator(classifier: Classifier, C: float, class_weight: str | None, seed: int) -> Any:
    _sklearn()
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if classifier == "logreg":
        clf: Any = LogisticRegression(C=C, class_weight=class_weight, max_iter=2000, random_state=seed)
    else:
        clf = LinearSVC(C=C, class_weight=class_weight, max_iter=20000, random_state=seed)
    return make_pipeline(StandardScaler(), clf)


def _fit_quiet(est: Any, x: np.ndarray, y: np.ndarray) -> Any:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the grid's extreme C values may not converge
        return est.fit(x, y)


def _confusion(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (y, pred), 1)
    return m


def fit_linear_classifier(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_hold: np.ndarray | None = None,
    y_hold: np.ndarray | None = None,
    *,
    num_classes: int,
    classifier: Classifier = "logreg",
    Cs: Sequence[float] = DEFAULT_C_GRID,
    class_weight: Literal["balanced"] | None = None,
    refit: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> LinearFit:
    """Standardise + fit a linear classifier on pooled features ``[N, K]``; choose ``C`` on the hold-out.

    Every ``C`` of ``Cs`` is fitted on ``(x_train, y_train)`` and scored on ``(x_hold, y_hold)`` (accuracy; the
    first best wins, so ties go to the smaller ``C``: the stronger regularisation). The chosen ``C`` is then
    re-fitted on ``refit = (x, y)`` (default: train and hold-out together). Labels are ``0..num_classes-1``,
    all of them present in ``y_train``. The result's ``weight``/``bias`` reproduce the final estimator's
    ``decision_function`` (see :func:`fold_standardization`).
    """
    check_choice("classifier", classifier, ("logreg", "svm"))
    if class_weight is not None:
        check_choice("class_weight", class_weight, ("balanced",))
    Cs = tuple(float(c) for c in Cs)
    if not Cs or any(not c > 0 for c in Cs):
        fail("Cs", "a non-empty list of positive numbers", repr(Cs))
    present = np.unique(y_train)
    if len(present) != num_classes:
        fail("y_train", f"labels of all {num_classes} classes", f"labels {present.tolist()}")
    grid: dict[float, float] = {}
    confusion = None
    hold_acc = float("nan")
    have_hold = x_hold is not None and y_hold is not None and len(y_hold) > 0
    if have_hold:
        assert x_hold is not None and y_hold is not None
        best = None
        for c in Cs:
            est = _fit_quiet(_make_estimator(classifier, c, class_weight, seed), x_train, y_train)
            pred = est.predict(x_hold)
            acc = float((pred == y_hold).mean())
            grid[c] = acc
            if best is None or acc > best[1]:
                best = (c, acc, _confusion(y_hold, pred, num_classes))
        assert best is not None
        chosen, hold_acc, confusion = best
    else:
        chosen = Cs[len(Cs) // 2] if len(Cs) > 1 else Cs[0]
    if refit is not None:
        xs, ys = refit
    elif have_hold:
        assert x_hold is not None and y_hold is not None
        xs, ys = np.concatenate([x_train, x_hold]), np.concatenate([y_train, y_hold])
    else:
        xs, ys = x_train, y_train
    est = _fit_quiet(_make_estimator(classifier, chosen, class_weight, seed), xs, ys)
    scaler, clf = est[0], est[-1]
    w, b = fold_standardization(clf.coef_, clf.intercept_, scaler.mean_, scaler.scale_)
    return LinearFit(w, b, chosen, grid, hold_acc, confusion, est)


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class _Data:
    classes: tuple[str, ...]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    layout: str


def _check_labels(items: list[tuple[str, int]], classes: tuple[str, ...], data: Path) -> None:
    """Every class has images; a file (by path or by content) carries one label only."""
    counts = np.bincount([lbl for _, lbl in items], minlength=len(classes))
    empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
    if empty:
        fail("data", "images for every class", f"no training images for class(es) {', '.join(empty)} in {data}")
    if int((counts > 0).sum()) < 2:
        fail("data", "images of at least 2 classes", f"only class {classes[int(counts.argmax())]} in {data}")
    by_path: dict[str, int] = {}
    for p, lbl in items:
        key = str(Path(p).resolve())
        if by_path.setdefault(key, lbl) != lbl:
            fail(
                "data",
                "one label per image",
                f"{p} is labelled both {classes[by_path[key]]!r} and {classes[lbl]!r}",
            )
    by_size: dict[int, list[tuple[str, int]]] = {}
    for p, lbl in items:
        with contextlib.suppress(OSError):
            by_size.setdefault(os.path.getsize(p), []).append((p, lbl))
    for group in by_size.values():
        if len({lbl for _, lbl in group}) < 2:
            continue
        seen: dict[str, tuple[str, int]] = {}
        for p, lbl in group:
            digest = _file_sha256(Path(p))
            q, other = seen.setdefault(digest, (p, lbl))
            if other != lbl:
                fail(
                    "data",
                    "one label per image",
                    f"{p} ({classes[lbl]!r}) and {q} ({classes[other]!r}) are the same image with different labels",
                )


def _read_data(data: str | os.PathLike[str]) -> _Data:
    from camloc.training.data import discover

    root = Path(data)
    if not root.exists():
        fail("data", "an existing data set folder or labels.csv", str(root))
    split = discover(root, val_fraction=0.0, seed=0)
    _check_labels(split.train, split.classes, root)
    return _Data(split.classes, list(split.train), list(split.val), split.layout)


# --------------------------------------------------------------------------------------------- trunk


def _build_trunk(trunk: dict[str, Any]) -> tuple[nn.Module, ModelInfo]:
    """The trunk named by a ``fitted_head`` spec's ``trunk`` entry (weights checked against their sha256)."""
    from camloc.models.registry import create_model

    if trunk.get("checkpoint"):
        from camloc.checkpoint import load_checkpoint

        path = Path(trunk["checkpoint"])
        if not trunk.get("embedded"):
            _check_sha(path, trunk.get("sha256"), "trunk checkpoint")
        return load_checkpoint(path)  # type: ignore[no-any-return]
    weights = trunk.get("weights")
    if weights is not None and not trunk.get("embedded"):
        _check_sha(Path(weights), trunk.get("sha256"), "trunk weights")
        return create_model(trunk["model"], weights=weights)
    return create_model(trunk["model"])


def _check_sha(path: Path, sha: str | None, what: str) -> None:
    if not path.is_file():
        fail("checkpoint", f"a fitted head whose {what} file exists", f"{path} is missing (use --embed-trunk)")
    if sha and _file_sha256(path) != sha:
        fail("checkpoint", f"a fitted head whose {what} are unchanged", f"{path} changed since the fit (sha256)")


def _build_fitted_head(spec: dict[str, Any], info: ModelInfo) -> tuple[FittedHeadNetwork, ModelInfo]:
    """Checkpoint builder of kind ``"fitted_head"`` (registered in :data:`camloc.checkpoint.ARCHITECTURES`)."""
    import dataclasses

    trunk, _ = _build_trunk(spec["trunk"])
    fc = nn.Linear(int(spec["in_features"]), int(spec["num_classes"]))
    model = FittedHeadNetwork(trunk.eval(), fc, trunk_in_state=bool(spec["trunk"].get("embedded")))
    return model, dataclasses.replace(info, extra={"build": dict(spec)})


# --------------------------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_linear_head` returns.

    Attributes:
        model: the :class:`FittedHeadNetwork` (eval mode, on the CPU); ``camloc.CAM(model)`` gives its maps.
        info: class names (logit order) and the trunk's preprocessing.
        fit: the :class:`LinearFit` (weights, chosen ``C``, hold-out scores, the scikit-learn estimator).
        report: the fit report (also written to ``out/fit_report.json`` / ``.md``).
        checkpoint: ``out/model.pt`` when ``out`` was given, else ``None``.
    """

    model: FittedHeadNetwork
    info: ModelInfo
    fit: LinearFit
    report: dict[str, Any]
    checkpoint: Path | None


def _features(
    model: nn.Module,
    preprocess: Preprocess,
    paths: list[Path],
    views: tuple[str, ...],
    cache: FeatureCache | None,
    fingerprint: str,
    stats: dict[str, Any],
    **kw: Any,
) -> dict[str, np.ndarray]:
    got: dict[str, np.ndarray] = {}
    keys = {v: FeatureCache.key(fingerprint, preprocess, paths, v) for v in views}
    if cache is not None:
        for v in views:
            a = cache.load(keys[v], len(paths))
            if a is not None:
                got[v] = a
    todo = tuple(v for v in views if v not in got)
    if todo and paths:
        t0 = time.perf_counter()
        new = extract_pooled_features(model, preprocess, paths, views=todo, **kw)  # type: ignore[arg-type]
        stats["extract_seconds"] += time.perf_counter() - t0
        stats["extracted_images"] += len(paths)
        stats["extracted_passes"] += len(todo)
        stats["forwards"] += len(paths) * len(todo)
        for v, a in new.items():
            got[v] = a
            if cache is not None:
                cache.save(keys[v], a)
    stats["cached_views"] += len(views) - len(todo)
    return got


def fit_linear_head(
    data: str | os.PathLike[str],
    *,
    model: str = "lite0",
    weights: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    classifier: Classifier = "logreg",
    Cs: Sequence[float] = DEFAULT_C_GRID,
    class_weight: Literal["balanced"] | None = None,
    flip: bool = False,
    val_fraction: float = 0.2,
    seed: int = 0,
    embed_trunk: bool = False,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: bool = False,
    zoom: bool = False,
    zoom_margin: float = 0.1,
) -> FitResult:
    """Fit a GAP -> linear head on a frozen trunk's pooled features from image-level labels (module docstring).

    Args:
        data: a data set folder or ``labels.csv`` (camloc CSV, Tiny-ImageNet or ImageFolder layout).
        model, weights: the trunk: a model spec (``lite0``, ``timm:NAME``, ``torchvision:NAME``, ...) and an
            optional local weights file; or ``checkpoint``: a camloc checkpoint (e.g. from ``camloc train``).
        out: folder for ``model.pt``, ``fit_report.json`` and ``fit_report.md`` (and the feature cache).
        cache_dir: feature cache folder (default ``out/cache``; no cache without either).
        classifier: ``"logreg"`` (multinomial logistic regression) or ``"svm"`` (linear SVM, one-vs-rest).
        Cs: the ``C`` grid; ``class_weight="balanced"`` weighs classes by inverse frequency.
        flip: add the features of the mirrored images as training samples.
        val_fraction: per-class hold-out of the training split that chooses ``C``.
        embed_trunk: store the trunk's weights in ``model.pt`` (always done when they cannot be rebuilt).
        zoom: localize-then-classify (:mod:`camloc.zoom`): a first head fitted on whole-image features crops each
            training image at its top-1 CAM box (``zoom_margin`` added), the head is fitted on the mean of the
            whole image's and the crop's pooled features; test images are cropped with that head's own top-1 box
            (``evaluate --zoom``). The report's ``zoom`` entry has the first head's whole-image test accuracy.
    Returns:
        :class:`FitResult`.
    """
    from camloc.models.registry import create_model, get_model_entry
    from camloc.training.data import _holdout

    _sklearn()
    check_number("val_fraction", val_fraction, low=0.0, high=0.9)
    check_choice("classifier", classifier, ("logreg", "svm"))
    check_number("zoom_margin", zoom_margin, low=0.0, high=10.0)
    if zoom and flip:
        fail("flip", "False with zoom (mirrored crops are not extracted)", flip)
    started = time.perf_counter()
    ds = _read_data(data)
    trunk_ref: dict[str, Any]
    if checkpoint is not None:
        from camloc.checkpoint import load_checkpoint

        cp = Path(checkpoint)
        trunk, tinfo = load_checkpoint(cp)
        trunk_ref = {"checkpoint": str(cp.resolve()), "sha256": _file_sha256(cp), "model": tinfo.name}
    else:
        trunk, tinfo = create_model(model, weights=None if weights is None else Path(weights))
        trunk_ref = {"model": model, "weights": None if weights is None else str(Path(weights).resolve())}
        if weights is not None:
            trunk_ref["sha256"] = _file_sha256(Path(weights))
        elif model.startswith(("timm:", "torchvision:")) or not get_model_entry(model).default_weights:
            embed_trunk = True  # random initialisation: only the weights themselves rebuild it
    trunk_ref["embedded"] = bool(embed_trunk)
    trunk = trunk.eval().to(device)
    preprocess = tinfo.preprocess
    fingerprint = trunk_fingerprint(trunk)
    cache_root = cache_dir if cache_dir is not None else (Path(out) / "cache" if out is not None else None)
    cache = FeatureCache(cache_root) if cache_root is not None else None
    stats: dict[str, Any] = dict.fromkeys(("extracted_images", "extracted_passes", "cached_views", "forwards"), 0)
    stats["extract_seconds"] = 0.0
    kw = {"batch_size": batch_size, "device": device, "workers": workers, "progress": progress}
    views = ("plain", "flip") if flip else ("plain",)
    train_paths = [Path(p) for p, _ in ds.train]
    feats = _features(trunk, preprocess, train_paths, views, cache, fingerprint, stats, **kw)
    test_feats = None
    if ds.test:
        test_paths = [Path(p) for p, _ in ds.test]
        test_feats = _features(trunk, preprocess, test_paths, ("plain",), cache, fingerprint, stats, **kw)["plain"]
    y_all = np.asarray([lbl for _, lbl in ds.train], np.int64)
    index = {p: i for i, (p, _) in enumerate(ds.train)}
    tr, ho = _holdout(list(ds.train), val_fraction, seed)
    i_tr = np.asarray([index[p] for p, _ in tr], np.int64)
    i_ho = np.asarray([index[p] for p, _ in ho], np.int64)

    def train_set(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs = [feats[v][idx] for v in views]
        return np.concatenate(xs), np.tile(y_all[idx], len(views))

    fit_kw: dict[str, Any] = {
        "num_classes": len(ds.classes),
        "classifier": classifier,
        "Cs": Cs,
        "class_weight": class_weight,
        "seed": seed,
    }
    zoom_report: dict[str, Any] | None = None
    zoom_kw: dict[str, Any] = {"margin": zoom_margin, "threshold": 0.2, "cache": cache, "fingerprint": fingerprint}
    zoom_kw.update(stats=stats, **kw)
    if zoom:  # stage 1: a whole-image head chooses the training crops; the head below fits on whole + crop
        from camloc.zoom import combine_features, zoom_fit_features

        t0 = time.perf_counter()
        x_tr, y_tr = train_set(i_tr)
        hold = (feats["plain"][i_ho], y_all[i_ho]) if len(i_ho) else (None, None)
        lf1 = fit_linear_classifier(x_tr, y_tr, *hold, refit=train_set(np.arange(len(y_all))), **fit_kw)
        stage1_seconds = time.perf_counter() - t0
        crops = zoom_fit_features(trunk, lf1.weight, lf1.bias, tinfo, train_paths, **zoom_kw)
        feats = {"plain": combine_features(feats["plain"], crops)}
        zoom_report = {
            "margin": zoom_margin,
            "threshold": 0.2,
            "crop_weight": 0.5,
            "features": "mean of the whole image's and the top-1 crop's pooled features",
            "stage1": {"C": lf1.C, "holdout_accuracy": _nan_none(lf1.holdout_accuracy), "fit_seconds": stage1_seconds},
        }
        if test_feats is not None:
            y_te1 = np.asarray([lbl for _, lbl in ds.test], np.int64)
            acc1 = float((lf1.logits(test_feats).argmax(1) == y_te1).mean())
            zoom_report["stage1"]["test_accuracy_whole_image"] = acc1
    t0 = time.perf_counter()
    x_tr, y_tr = train_set(i_tr)
    lf = fit_linear_classifier(
        x_tr, y_tr, feats["plain"][i_ho] if len(i_ho) else None, y_all[i_ho] if len(i_ho) else None,
        num_classes=len(ds.classes), classifier=classifier, Cs=Cs, class_weight=class_weight,
        refit=train_set(np.arange(len(y_all))), seed=seed,
    )  # fmt: skip
    fit_seconds = time.perf_counter() - t0
    fc = nn.Linear(lf.weight.shape[1], lf.weight.shape[0])
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(lf.weight))
        fc.bias.copy_(torch.from_numpy(lf.bias))
    net = FittedHeadNetwork(trunk.cpu(), fc, trunk_in_state=bool(trunk_ref["embedded"])).eval()
    info = ModelInfo(
        name=f"fit:{trunk_ref['model']}",
        categories=ds.classes,
        preprocess=preprocess,
        description=f"{classifier} head (C={lf.C:g}) fitted on the pooled features of {trunk_ref['model']}",
    )
    if zoom and test_feats is not None:  # test crops from the final head's own top-1 map, as `evaluate --zoom`
        from camloc.zoom import combine_features, zoom_fit_features

        test_crops = zoom_fit_features(trunk, lf.weight, lf.bias, tinfo, test_paths, **zoom_kw)
        test_feats = combine_features(test_feats, test_crops)
    report = _report(ds, lf, data, trunk_ref, classifier, class_weight, flip, stats, fit_seconds, started, len(i_ho))
    if zoom_report is not None:
        report["zoom"] = zoom_report
    if test_feats is not None:
        y_te = np.asarray([lbl for _, lbl in ds.test], np.int64)
        pred = lf.logits(test_feats).argmax(1)
        report["test"] = {
            "images": len(y_te),
            "accuracy": float((pred == y_te).mean()),
            "confusion": _confusion(y_te, pred, len(ds.classes)).tolist(),
        }
    spec = {
        "trunk": trunk_ref,
        "in_features": int(lf.weight.shape[1]),
        "num_classes": int(lf.weight.shape[0]),
        "pool": "avg",
        "classifier": classifier,
        "C": lf.C,
    }
    if zoom:
        spec["zoom"] = {"margin": zoom_margin, "threshold": 0.2, "crop_weight": 0.5}
    ckpt_path = None
    if out is not None:
        from camloc._io import atomic_write_json, atomic_write_text
        from camloc.checkpoint import Architecture, save_checkpoint

        o = Path(out)
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        ckpt_path = save_checkpoint(
            o / "model.pt", architecture=Architecture(ARCHITECTURE_KIND, spec), state_dict=state, info=info
        )
        report["checkpoint"] = str(ckpt_path)
        atomic_write_json(o / "fit_report.json", report)
        atomic_write_text(o / "fit_report.md", _report_md(report))
    info = ModelInfo(info.name, info.categories, info.preprocess, info.description, extra={"build": spec})
    return FitResult(net, info, lf, report, ckpt_path)


def _nan_none(v: float) -> float | None:
    return None if v != v else float(v)


def _finish_stats(report: dict[str, Any], stats: dict[str, Any]) -> None:
    sec = stats["extract_seconds"]
    report["features"] = {
        "extracted_images": stats["extracted_images"],
        "extracted_passes": stats["extracted_passes"],
        "forwards": stats["forwards"],
        "cached_views": stats["cached_views"],
        "seconds": round(sec, 3),
        "images_per_second": round(stats["forwards"] / sec, 2) if sec > 0 else None,
    }


def _report(
    ds: _Data,
    lf: LinearFit,
    data: Any,
    trunk_ref: dict[str, Any],
    classifier: str,
    class_weight: str | None,
    flip: bool,
    stats: dict[str, Any],
    fit_seconds: float,
    started: float,
    n_hold: int,
) -> dict[str, Any]:
    from camloc import __version__

    rep: dict[str, Any] = {
        "schema_version": 1,
        "tool": "camloc",
        "version": __version__,
        "command": "fit",
        "data": str(data),
        "layout": ds.layout,
        "classes": list(ds.classes),
        "train_images": len(ds.train),
        "holdout_images": n_hold,
        "train_samples": len(ds.train) * (2 if flip else 1),
        "trunk": trunk_ref,
        "classifier": classifier,
        "class_weight": class_weight,
        "flip": flip,
        "C": lf.C,
        "grid": [{"C": c, "holdout_accuracy": a} for c, a in lf.grid.items()],
        "holdout": {
            "accuracy": None if lf.holdout_accuracy != lf.holdout_accuracy else lf.holdout_accuracy,
            "confusion": None if lf.holdout_confusion is None else lf.holdout_confusion.tolist(),
        },
        "binary_positive_class": ds.classes[1] if len(ds.classes) == 2 else None,
        "fit_seconds": round(fit_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    _finish_stats(rep, stats)
    return rep


def _report_md(rep: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    f = rep["features"]
    lines = [
        f"# camloc fit: {rep['classifier']} head on {rep['trunk']['model']}",
        "",
        f"- data: {rep['data']} ({rep['layout']}), {len(rep['classes'])} classes, {rep['train_images']} training "
        f"images ({rep['holdout_images']} held out to choose C)",
        f"- chosen C: {rep['C']:g}; class weight: {rep['class_weight']}; flip augmentation: {rep['flip']}",
        f"- hold-out accuracy: {pct(rep['holdout']['accuracy'])}",
    ]
    if "test" in rep:
        lines.append(f"- test (the data set's validation split, {rep['test']['images']} images): "
                     f"{pct(rep['test']['accuracy'])}")  # fmt: skip
    z = rep.get("zoom")
    if z:
        whole = z["stage1"].get("test_accuracy_whole_image")
        lines.append(
            f"- zoom: fitted on the mean of whole-image and top-1-crop features (margin {z['margin']:g})"
            + (f"; the whole-image head's test accuracy: {pct(whole)}" if whole is not None else "")
        )
    if rep["binary_positive_class"]:
        lines.append(f"- binary: the positive class (the one with a map) is {rep['binary_positive_class']!r}")
    ips = f["images_per_second"]
    lines += [
        f"- features: {f['extracted_images']} images extracted in {f['seconds']:.1f} s"
        + (f" ({ips:.1f} images/s)" if ips else "")
        + f", {f['cached_views']} view(s) from the cache; classifier fit {rep['fit_seconds']:.2f} s",
        "",
        "| C | hold-out accuracy |",
        "|---:|---:|",
        *[f"| {g['C']:g} | {pct(g['holdout_accuracy'])} |" for g in rep["grid"]],
        "",
    ]
    conf = rep["holdout"]["confusion"]
    if conf is not None:
        names = rep["classes"]
        lines += ["Hold-out confusion (rows: true class, columns: predicted):", ""]
        lines += ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        lines += [f"| {names[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(conf)]
        lines.append("")
    return "\n".join(lines)
