"""The camloc checkpoint format: one module writes and reads it (training, ``--checkpoint``, ``weights=``).

A checkpoint is a ``torch.save`` dict that loads with ``torch.load(..., weights_only=True)`` (tensors, lists,
dicts, str, numbers only)::

    format = "camloc-checkpoint", schema_version = 2,
    architecture = {"kind": KIND, "spec": {...}},   # what rebuilds the network, without the weights
    model = {name: Tensor},                         # the state dict of the network that `kind` builds
    model_info = ModelInfo.to_dict(),               # class names and preprocessing
    training = {...} | None                         # optional: what `camloc train --resume` continues from

Architecture kinds (:data:`ARCHITECTURES`; a later kind is one more entry, the layout stays):

* ``"gap_network"``: a :class:`~camloc.models.paper.GapNet` rebuilt by
  :func:`~camloc.models.paper.build_gap_network`; ``spec`` holds its build keywords (``arch``, ``pool``,
  ``conv_channels`` and the family's own, e.g. ``width``, ``transform_input``).

* ``"fitted_head"``: a :class:`~camloc.fit.FittedHeadNetwork` (``camloc fit``: a frozen trunk and a GAP ->
  linear head fitted on its pooled features), rebuilt by :func:`camloc.fit._build_fitted_head`. ``spec``:
  ``trunk`` (``model`` spec, ``weights`` or ``checkpoint`` file with its ``sha256``, ``embedded``),
  ``in_features``, ``num_classes``, ``pool``, ``classifier``, ``C``; ``model`` holds ``fc.weight``/``fc.bias``
  and, when ``embedded``, the trunk's tensors (``trunk.*``).

``training`` (written by :mod:`camloc.training`): ``epoch`` (completed epochs), ``world_size``, ``optimizer``,
``scheduler``, ``scaler``, ``config`` (TrainConfig as a dict), ``history`` (EpochStats dicts), ``best_epoch``,
``best_val_top1``.

Schema 1 (``format = "camloc-train-checkpoint"``, written by camloc 0.1 training) still reads: its ``build`` dict
becomes a ``gap_network`` spec and its top-level training entries the ``training`` dict (without
``world_size``: unknown).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camloc._checks import describe_load_error, fail
from camloc.errors import CamlocValueError
from camloc.models.info import ModelInfo

__all__ = [
    "ARCHITECTURES",
    "FORMAT",
    "SCHEMA_VERSION",
    "Architecture",
    "Checkpoint",
    "build_model",
    "is_checkpoint",
    "load_checkpoint",
    "peek_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT = "camloc-checkpoint"
SCHEMA_VERSION = 2
_LEGACY_FORMAT = "camloc-train-checkpoint"  # schema 1
_TRAINING_KEYS_V1 = ("optimizer", "scheduler", "scaler", "epoch", "rng", "config", "history", "best_epoch")

#: kind -> ``"module:function"`` building ``(nn.Module, ModelInfo)`` from ``(spec, info)``; imported on use.
ARCHITECTURES: dict[str, str] = {
    "gap_network": "camloc.checkpoint:_build_gap_network",
    "fitted_head": "camloc.fit:_build_fitted_head",
}


@dataclass(frozen=True)
class Architecture:
    """What rebuilds a network without its weights: a ``kind`` of :data:`ARCHITECTURES` and its ``spec``."""

    kind: str
    spec: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "spec": dict(self.spec)}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read by :func:`read_checkpoint` (any schema, normalised to schema 2)."""

    architecture: Architecture
    state_dict: dict[str, Any]
    info: ModelInfo
    training: dict[str, Any] | None
    schema_version: int
    path: Path | None = None


def _as_path(name: str, path: Any) -> Path:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        fail(name, "a str or os.PathLike path", path, type_error=True)
    return Path(path)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    architecture: Architecture,
    state_dict: dict[str, Any],
    info: ModelInfo,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a schema-2 checkpoint to ``path`` atomically (temp file + rename, :mod:`camloc._io`); return it."""
    import torch

    from camloc._io import atomic_open

    if architecture.kind not in ARCHITECTURES:
        fail("architecture.kind", "one of " + ", ".join(map(repr, ARCHITECTURES)), repr(architecture.kind))
    obj = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "architecture": architecture.to_dict(),
        "model": state_dict,
        "model_info": info.to_dict(),
        "training": training,
    }
    dest = _as_path("path", path)
    with atomic_open(dest, "wb") as fh:
        torch.save(obj, fh)
    return dest


def is_checkpoint(obj: Any) -> bool:
    """True when ``obj`` (a loaded dict) is a camloc checkpoint of any schema."""
    return isinstance(obj, dict) and obj.get("format") in (FORMAT, _LEGACY_FORMAT)


def _from_dict(obj: dict[str, Any], path: Path | None) -> Checkpoint:
    where = f" in {path}" if path is not None else ""
    version = obj.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        fail("checkpoint", f"schema_version 1..{SCHEMA_VERSION}", f"{version!r}{where}")
    try:
        info = ModelInfo.from_dict(obj["model_info"])
        state = obj["model"]
        if obj["format"] == _LEGACY_FORMAT:  # schema 1: build + training entries at the top level
            arch = Architecture("gap_network", dict(obj["build"]))
            training: dict[str, Any] | None = {k: obj[k] for k in _TRAINING_KEYS_V1 if k in obj}
            training["best_val_top1"] = obj.get("best_val_top1")  # type: ignore[index]
        else:
            a = obj["architecture"]
            arch = Architecture(str(a["kind"]), dict(a["spec"]))
            training = obj.get("training")
    except (KeyError, TypeError, ValueError) as e:
        raise CamlocValueError(f"`checkpoint` must be a complete camloc checkpoint; {e!r} is missing{where}") from e
    if not isinstance(state, dict):
        fail("checkpoint", "a state dict under 'model'", f"{type(state).__name__}{where}")
    return Checkpoint(arch, state, info, training, version, path)


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a camloc checkpoint file (schema 1 or 2) on the CPU; raise a camloc error for anything else."""
    import torch

    p = _as_path("checkpoint", path)
    if not p.is_file():
        fail("checkpoint", "an existing camloc checkpoint file", str(p))
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign or corrupt file
        raise CamlocValueError(
            f"`checkpoint` must be a camloc checkpoint; could not read {p} ({describe_load_error(e)})"
        ) from e
    if not is_checkpoint(obj):
        fail("checkpoint", f"a camloc checkpoint (format {FORMAT!r})", f"another file: {p}")
    return _from_dict(obj, p)


def peek_checkpoint(path: str | os.PathLike[str]) -> Checkpoint | None:
    """:func:`read_checkpoint` for a file that may be a plain weights file: ``None`` when it is not a checkpoint."""
    import torch

    p = _as_path("weights", path)
    if not p.is_file() or p.suffix == ".safetensors":
        return None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:
        return None  # the plain weights reader reports it
    return _from_dict(obj, p) if is_checkpoint(obj) else None


def _resolve(kind: str) -> Any:
    if kind not in ARCHITECTURES:
        fail("checkpoint", "an architecture kind of " + ", ".join(map(repr, ARCHITECTURES)), repr(kind))
    target = ARCHITECTURES[kind]
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _build_gap_network(spec: dict[str, Any], info: ModelInfo) -> tuple[Any, ModelInfo]:
    from camloc.models.paper import build_gap_network

    kw = {k: v for k, v in spec.items() if k not in ("arch", "pool")}
    model, _ = build_gap_network(
        spec["arch"], info.num_classes, pool=spec.get("pool"), categories=info.categories, **kw
    )
    return model, dataclasses.replace(info, extra={"build": dict(spec)})


def build_model(ckpt: Checkpoint, *, device: Any = "cpu") -> tuple[Any, ModelInfo]:
    """Rebuild the network of ``ckpt`` and load its weights; return ``(model.eval(), info)``.

    ``info.extra["build"]`` is the architecture spec.
    """
    from camloc.models.weights import load_weights_strict

    model, info = _resolve(ckpt.architecture.kind)(ckpt.architecture.spec, ckpt.info)
    source = str(ckpt.path) if ckpt.path is not None else "checkpoint"
    load_weights_strict(model, ckpt.state_dict, source=source)
    return model.to(device).eval(), info


def load_checkpoint(path: str | os.PathLike[str], *, device: Any = "cpu") -> tuple[Any, ModelInfo]:
    """Rebuild the trained network from a camloc checkpoint file alone; return ``(model.eval(), info)``.

    ``info`` carries the architecture name, class names and preprocessing recorded at training time.
    """
    return build_model(read_checkpoint(path), device=device)
