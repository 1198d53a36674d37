"""Batch localization on a Ray cluster (Ray Data): ``camloc explain SOURCE --engine ray``.

::

    import ray
    from camloc.ray import ModelSpec, explain_dataset, image_dataset

    ray.init()                                          # or ray.init(address="auto")
    ds = image_dataset(["photos/", "more/*.jpg"])       # or a Parquet file of paths or of image bytes
    rows = explain_dataset(ds, ModelSpec("lite0"), topk=5, actors=4, gpus_per_actor=0.25)
    rows.write_parquet("out/")                          # or iterate: rows.iter_batches(batch_format="pyarrow")

The pipeline is Ray Data's: a dataset of image paths (or bytes) -> **decode** in Ray tasks with camloc's
:class:`~camloc.pipeline.ImagePipeline` (exactly what the single-process ``explain`` does per file) -> **inference**
in a pool of ``actors`` stateful actors (``map_batches`` with a callable class that builds the model once from a
picklable :class:`ModelSpec` through the CLI's own :func:`camloc.cli.load_model`) -> one result row per image
with the schema of ``results.jsonl`` (:data:`RESULT_SCHEMA`; failures have ``error`` set). Output order is the
input order (Ray Data's ``preserve_order``), so the CLI's ``results.jsonl`` is line-for-line the single-process
one, and ``--resume`` works as there (:mod:`camloc.resume`).

Ray is an optional dependency (``pip install camloc[ray]``); ``import camloc`` never imports it.
"""

from __future__ import annotations

import argparse
import glob
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camloc.errors import CamlocError

__all__ = [
    "RESULT_SCHEMA",
    "ModelSpec",
    "RayNotInstalledError",
    "explain_dataset",
    "image_dataset",
    "results_to_parquet",
]


class RayNotInstalledError(CamlocError, ImportError):
    """``camloc.ray`` was used without Ray Data installed."""


def _ray() -> Any:
    """``ray`` with ``ray.data`` imported, or :class:`RayNotInstalledError` naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise RayNotInstalledError(
            "`--engine ray` / camloc.ray needs Ray Data, which is not installed: pip install camloc[ray]"
        ) from e
    return ray


@dataclass(frozen=True)
class ModelSpec:
    """A picklable recipe for the model each actor builds: ``--model`` / ``--weights`` / ``--checkpoint`` (which
    wins) and the ``device`` (``"cuda"`` in an actor with ``gpus_per_actor > 0``). Paths must be readable on the
    workers (a shared file system on a multi-node cluster)."""

    model: str = "lite0"
    weights: str | None = None
    checkpoint: str | None = None
    device: str = "cpu"

    def build(self) -> tuple[Any, Any]:
        """``(model, info)`` in eval mode on :attr:`device` (:func:`camloc.cli.load_model`)."""
        from camloc.cli import load_model

        return load_model(self.model, weights=self.weights, checkpoint=self.checkpoint, device=self.device)


def _result_schema() -> Any:
    import pyarrow as pa

    box = pa.struct(
        [
            ("rank", pa.int64()),
            ("class_idx", pa.int64()),
            ("name", pa.string()),
            ("prob", pa.float64()),
            ("box", pa.list_(pa.float64())),
        ]
    )
    return pa.schema(
        [
            ("path", pa.string()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("topk", pa.list_(box)),
            ("overlay", pa.string()),
            ("panel", pa.string()),
            ("error", pa.string()),
        ]
    )


#: The Arrow schema of result rows: ``results.jsonl``'s fields (``path, width, height, topk[rank, class_idx, name,
#: prob, box]``, ``overlay``/``panel`` when drawn) plus ``error`` (null, or why the image failed).
RESULT_SCHEMA: Any = None  # built on first use by result_schema() (pyarrow is imported lazily)


def result_schema() -> Any:
    """:data:`RESULT_SCHEMA` (a ``pyarrow.Schema``)."""
    global RESULT_SCHEMA
    if RESULT_SCHEMA is None:
        RESULT_SCHEMA = _result_schema()
    return RESULT_SCHEMA


def row_to_record(row: dict[str, Any]) -> dict[str, Any]:
    """A result row -> the ``results.jsonl`` record (the keys and order of :meth:`ImageResult.to_dict`, then
    ``overlay``/``panel`` when set). Failure rows (``error`` set) are not records."""
    rec = {
        "path": row["path"],
        "width": row["width"],
        "height": row["height"],
        "topk": [
            {"rank": t["rank"], "class_idx": t["class_idx"], "name": t["name"], "prob": t["prob"], "box": t["box"]}
            for t in row["topk"]
        ],
    }
    for k in ("overlay", "panel"):
        if row.get(k) is not None:
            rec[k] = row[k]
    return rec


# ----------------------------------------------------------------------------------------------------------
# sources


def _is_parquet(s: str) -> bool:
    return s.lower().endswith((".parquet", ".pq"))


def _expand(sources: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """``(image sources, parquet files)``: globs expanded (sorted), folders and files kept."""
    images: list[str] = []
    parquet: list[str] = []
    for raw in sources:
        s = os.fspath(raw)
        hits = sorted(glob.glob(s, recursive=True)) if glob.has_magic(s) and not os.path.exists(s) else [s]
        if not hits:
            raise CamlocError(f"`SOURCE` glob {s!r} must match some files; it matches none")
        for h in hits:
            (parquet if _is_parquet(h) else images).append(h)
    return images, parquet


def _parquet_columns(files: list[str], path_column: str, bytes_column: str) -> tuple[list[str], bool]:
    """The keys (``path_column``) of Parquet ``files`` in order, and whether they hold a ``bytes_column``."""
    import pyarrow.parquet as pq

    keys: list[str] = []
    has_bytes = None
    for f in files:
        names = pq.read_schema(f).names
        if path_column not in names:
            raise CamlocError(f"`SOURCE` Parquet file {f} must have a {path_column!r} column; it has {names}")
        hb = bytes_column in names
        if has_bytes is not None and hb != has_bytes:
            raise CamlocError(f"`SOURCE` Parquet files must all have a {bytes_column!r} column or none")
        has_bytes = hb
        keys += [str(v) for v in pq.read_table(f, columns=[path_column]).column(path_column).to_pylist()]
    return keys, bool(has_bytes)


@dataclass(frozen=True)
class _Source:
    keys: list[str]  # every input's key (its results "path") in input order
    parquet: list[str]  # Parquet files of bytes (empty: the keys are image paths)
    path_column: str
    bytes_column: str

    def dataset(self, skip: set[str] | frozenset[str] = frozenset(), stems: dict[str, str] | None = None) -> Any:
        ray = _ray()
        if not self.parquet:
            items = [{"path": k, "stem": (stems or {}).get(k, "")} for k in self.keys if k not in skip]
            return ray.data.from_items(items)
        ds = ray.data.read_parquet(self.parquet).select_columns([self.path_column, self.bytes_column])
        if self.path_column != "path" or self.bytes_column != "bytes":
            ds = ds.rename_columns({self.path_column: "path", self.bytes_column: "bytes"})
        if skip:
            ds = ds.map_batches(_drop_done, fn_kwargs={"done": sorted(skip)}, batch_format="pyarrow")
        return ds


def _drop_done(batch: Any, *, done: list[str]) -> Any:
    """Ray task: the rows of a ``pyarrow.Table`` batch whose ``path`` is not in ``done`` (a resumed run)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keep = pc.invert(pc.is_in(pc.cast(batch.column("path"), pa.string()), value_set=pa.array(done, pa.string())))
    return batch.filter(keep)


def _source(sources: Sequence[str | os.PathLike[str]], path_column: str, bytes_column: str) -> _Source:
    from camloc.data.images import find_images

    images, parquet = _expand(sources)
    if images and parquet:
        raise CamlocError("`SOURCE` must be image files/folders/globs or Parquet files, not both")
    if parquet:
        keys, has_bytes = _parquet_columns(parquet, path_column, bytes_column)
        src = _Source(keys, parquet if has_bytes else [], path_column, bytes_column)
    else:
        src = _Source([str(f) for f in find_images(images, recursive=True)], [], path_column, bytes_column)
    if not src.keys:
        raise CamlocError("`SOURCE` must name image files, folders, globs or Parquet rows; none were found")
    return src


def image_dataset(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    path_column: str = "path",
    bytes_column: str = "bytes",
) -> Any:
    """A ``ray.data.Dataset`` of images to explain, in input order: one ``path`` column (and ``bytes``).

    ``sources``: image files, folders (searched recursively, as ``camloc explain`` does), globs, or Parquet files
    with a ``path_column`` of image paths, or of ids next to a ``bytes_column`` of encoded images (PNG, JPEG, ...;
    then the ids are the results' ``path``).
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    return _source(sources, path_column, bytes_column).dataset()


# ----------------------------------------------------------------------------------------------------------
# the Ray Data stages


def _writable_numba_cache() -> None:
    """Give numba a cache directory this worker can write (``NUMBA_CACHE_DIR``), before anything imports numba."""
    current = os.environ.get("NUMBA_CACHE_DIR")
    if current and os.access(current, os.W_OK):
        return
    path = Path(tempfile.gettempdir()) / f"camloc-numba-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    path.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(path)


def _decode_batch(batch: dict[str, Any], *, preprocess: Any, max_side: int, render: bool) -> dict[str, Any]:
    """Ray task: ``path`` (+ ``bytes``) -> network tensor ``x`` float32 ``[n, 3, H, W]``, ``meta`` (pickled
    geometry, size and display copy) and ``error`` ("" when decoded), through explain's own per-file decoding."""
    import numpy as np

    from camloc.explain import _Files

    paths = [str(p) for p in batch["path"]]
    blobs = batch.get("bytes")
    srcs: list[Any] = [Path(p) for p in paths] if blobs is None else [bytes(b) for b in blobs]
    files = _Files(srcs, preprocess, max_side)  # type: ignore[arg-type]
    h, w = preprocess.size
    x = np.zeros((len(paths), 3, h, w), np.float32)
    meta: list[bytes] = []
    errors: list[str] = []
    for i in range(len(paths)):
        it = files[i]
        if "error" in it:
            errors.append(it["error"] or "error")
            meta.append(b"")
            continue
        x[i] = it["x"].numpy()
        disp = (it["display"], it["display_scale"]) if render else (None, None)
        meta.append(pickle.dumps((it["geometry"], *disp), protocol=pickle.HIGHEST_PROTOCOL))
        errors.append("")
    out = {"path": np.array(paths, dtype=object), "x": x, "meta": np.array(meta, dtype=object)}
    out["error"] = np.array(errors, dtype=object)
    if render:  # overlay file stems: the dataset's (decided over the whole input list), else the file's name
        from camloc.cli import _safe_name

        given = [str(s) for s in batch["stem"]] if "stem" in batch else [""] * len(paths)
        out["stem"] = np.array([g or _safe_name(Path(p), None) for g, p in zip(given, paths)], dtype=object)
    return out


class _Explainer:
    """Actor state: the model, built once per actor from a :class:`ModelSpec`; called on decoded batches."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        topk: int,
        threshold: float,
        method: str,
        method_args: dict[str, Any] | None,
        out_dir: str | None,
        max_side: int,
        threads: int,
    ) -> None:
        _writable_numba_cache()
        import torch

        torch.set_num_threads(max(1, threads))
        model, self.info = spec.build()
        self.device = next(model.parameters()).device
        if self.device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)  # as the single-process path
        if method == "cam":
            from camloc.extractor import CAM

            self.cam: Any = CAM(model)
        else:  # a map method of the registry (camloc.methods, same call contract as CAM)
            from camloc.methods import get_method  # type: ignore[import-not-found]

            self.cam = get_method(method, model, self.info, **(method_args or {}))
        self.topk, self.threshold = topk, threshold
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.max_side = max_side

    def __call__(self, batch: dict[str, Any]) -> Any:
        import pyarrow as pa
        import torch

        from camloc.explain import Explained, results_from_maps

        paths = [str(p) for p in batch["path"]]
        errors = [str(e) for e in batch["error"]]
        good = [i for i, e in enumerate(errors) if not e]
        rows: list[dict[str, Any]] = [
            {"path": p, "width": 0, "height": 0, "topk": [], "overlay": None, "panel": None, "error": e or None}
            for p, e in zip(paths, errors)
        ]
        if good:
            metas = [pickle.loads(batch["meta"][i]) for i in good]
            x = torch.from_numpy(batch["x"][good]).to(self.device)
            out = self.cam(x, topk=self.topk)
            results, norm = results_from_maps(
                out, [m[0] for m in metas], [Path(paths[i]) for i in good], self.info, threshold=self.threshold
            )
            for n, (i, res) in enumerate(zip(good, results)):
                d = res.to_dict()
                d["path"] = paths[i]
                rows[i].update(d)
                if self.out_dir is not None:
                    from camloc.cli import draw_explained

                    item = Explained(res, metas[n][1], metas[n][2], norm[n])
                    rows[i].update(draw_explained(item, str(batch["stem"][i]), self.out_dir, max_side=self.max_side))
        return pa.Table.from_pylist(rows, schema=result_schema())


def _cluster_cpus(ray: Any) -> float:
    try:
        return float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    except Exception:  # pragma: no cover - not connected
        return float(os.cpu_count() or 1)


def explain_dataset(
    ds: Any,
    model: ModelSpec,
    *,
    info: Any = None,
    topk: int = 5,
    threshold: float = 0.2,
    batch_size: int = 16,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float | None = None,
    max_side: int = 512,
    overlays_dir: str | os.PathLike[str] | None = None,
    method: str = "cam",
    method_args: dict[str, Any] | None = None,
    preserve_order: bool = True,
) -> Any:
    """Explain every image of ``ds`` (a ``ray.data.Dataset`` with a ``path`` column, and optionally ``bytes``, as
    :func:`image_dataset` builds) on the connected Ray cluster; return the (lazy) dataset of result rows
    (:func:`result_schema`), one per input row, in input order when ``preserve_order`` (it sets
    ``execution_options.preserve_order`` in the datasets' ``DataContext``).

    Decoding runs in Ray tasks, inference in ``actors`` actors of ``cpus_per_actor`` CPUs (default: an equal
    share of the cluster's CPUs leaving one share to the decoding tasks, at most 1) and ``gpus_per_actor`` GPUs
    (``> 0``: the model runs on the actor's CUDA device; fractions share a GPU), ``batch_size`` images per forward.
    ``overlays_dir``: also draw each image's overlay and top-k panel there (``overlays/``, ``panels/``; the rows
    get their relative paths; the stem comes from the dataset's ``stem`` column, else the path). ``info``: the
    model's :class:`~camloc.models.registry.ModelInfo` when the caller has it (else the driver builds the model
    once to read its preprocessing). ``method``/``method_args``: a map method of ``camloc.methods`` instead of CAM.
    """
    from camloc._checks import check_number

    ray = _ray()
    check_number("topk", topk, low=1, integer=True)
    check_number("threshold", threshold, low=0.0, high=1.0)
    check_number("batch_size", batch_size, low=1, integer=True)
    check_number("actors", actors, low=1, integer=True)
    check_number("gpus_per_actor", gpus_per_actor, low=0.0)
    if not isinstance(model, ModelSpec):
        from camloc._checks import fail

        fail("model", "a camloc.ray.ModelSpec", model, type_error=True)
    if info is None:
        info = model.build()[1]
    if cpus_per_actor is None:
        cpus_per_actor = min(1.0, _cluster_cpus(ray) / (actors + 1))
    check_number("cpus_per_actor", cpus_per_actor, low=0.0)
    if preserve_order:  # a dataset executes with the context it was built with: set it there
        ds.context.execution_options.preserve_order = True
    render = overlays_dir is not None
    spec = model if gpus_per_actor == 0 or model.device != "cpu" else ModelSpec(**{**vars(model), "device": "cuda"})
    decoded = ds.map_batches(
        _decode_batch,
        batch_size=batch_size,
        fn_kwargs={"preprocess": info.preprocess, "max_side": max_side, "render": render},
        num_cpus=min(1.0, max(0.25, cpus_per_actor / 2)),
    )
    rows = decoded.map_batches(
        _Explainer,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={
            "spec": spec,
            "topk": topk,
            "threshold": threshold,
            "method": method,
            "method_args": method_args,
            "out_dir": None if overlays_dir is None else os.fspath(overlays_dir),
            "max_side": max_side,
            "threads": int(cpus_per_actor) or 1,
        },
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor or None,
    )
    if preserve_order:
        rows.context.execution_options.preserve_order = True
    return rows


def results_to_parquet(jsonl: str | os.PathLike[str], parquet: str | os.PathLike[str], *, chunk: int = 10000) -> Path:
    """Write the rows of a ``results.jsonl`` to ``parquet`` (:func:`result_schema` without ``error``), streaming
    ``chunk`` rows per row group, atomically; return its path."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from camloc._io import atomic_open

    schema = result_schema()
    schema = schema.remove(schema.get_field_index("error"))
    with atomic_open(parquet, "wb") as fh, open(jsonl, encoding="utf-8") as src:
        writer = pq.ParquetWriter(fh, schema)
        rows: list[dict[str, Any]] = []
        for line in src:
            rows.append(json.loads(line))
            if len(rows) >= chunk:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        writer.close()
    return Path(parquet)


# ----------------------------------------------------------------------------------------------------------
# CLI


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """The ``--engine ray`` options of ``camloc explain`` (parsing them never imports Ray)."""
    g = p.add_argument_group("Ray engine (pip install camloc[ray])")
    g.add_argument("--engine", choices=("local", "ray"), default="local", help="local process (default) or Ray Data")
    g.add_argument("--address", default=None, help="Ray cluster to join (auto | ray://HOST:PORT); default: start one")
    g.add_argument("--actors", type=int, default=1, help="inference actors (model replicas; default 1)")
    g.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor (fractions share one)")
    g.add_argument("--cpus-per-actor", type=float, default=None, help="CPUs per actor (default: a fair share)")


def cmd_explain_ray(args: argparse.Namespace) -> int:
    """``camloc explain SOURCE --engine ray``: the single-process command's outputs, computed on Ray."""
    from camloc import resume as rs
    from camloc._io import atomic_write_json
    from camloc.cli import _common_root, _stems, explain_extras, explain_manifest, method_from_args
    from camloc.cli_calibrate import resolve_calibration

    ray = _ray()
    resolve_calibration(args)  # settles --method (no calibration on Ray: cmd_explain refuses one)
    method, margs = method_from_args(args)
    if args.actors < 1:
        raise CamlocError(f"`--actors` must be >= 1; got {args.actors}")
    if args.gpus_per_actor < 0:
        raise CamlocError(f"`--gpus-per-actor` must be >= 0; got {args.gpus_per_actor}")
    src = _source(args.paths, "path", "bytes")
    out_dir: Path = args.out
    journal = rs.ResultJournal(
        out_dir, command="explain", options=rs.run_options(args), keys=src.keys, resume=args.resume,
        sync_every=args.batch_size, keep_rows=False,
    )  # fmt: skip
    if journal.complete:  # said even with --quiet: nothing was done
        print(f"camloc: the run in {out_dir} is complete; nothing to resume", file=sys.stderr)
        return 0
    render = not args.no_images
    stems = _stems([Path(k) for k in src.keys], _common_root([Path(k) for k in src.keys])) if render else None
    started = time.time()
    spec = ModelSpec(
        args.model,
        None if args.weights is None else str(args.weights),
        None if args.checkpoint is None else str(args.checkpoint),
        args.device,
    )
    info = spec.build()[1] if args.device == "cpu" else ModelSpec(**{**vars(spec), "device": "cpu"}).build()[1]
    journal.open()
    started_here = False
    try:
        with rs.graceful_signals():
            try:
                if not ray.is_initialized():
                    kw: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
                    if args.address is None:  # a private local cluster; its workers import this camloc
                        kw["num_cpus"] = os.cpu_count() or 1
                        kw["runtime_env"] = {"env_vars": {"PYTHONPATH": _camloc_pythonpath()}}
                    else:
                        kw["address"] = args.address
                    ray.init(**kw)
                    started_here = True
                import logging

                ctx = ray.data.DataContext.get_current()
                ctx.enable_progress_bars = not args.quiet
                if args.quiet:
                    logging.getLogger("ray.data").setLevel(logging.ERROR)
                rows = explain_dataset(
                    src.dataset(journal.done, stems),
                    spec,
                    info=info,
                    topk=args.topk,
                    threshold=args.threshold,
                    batch_size=args.batch_size,
                    actors=args.actors,
                    gpus_per_actor=args.gpus_per_actor,
                    cpus_per_actor=args.cpus_per_actor,
                    max_side=args.max_side,
                    overlays_dir=out_dir if render else None,
                    method=method,
                    method_args=margs or None,
                )
                for batch in rows.iter_batches(batch_format="pyarrow", batch_size=None):
                    for row in batch.to_pylist():
                        if row["error"] is not None:
                            journal.fail({"path": row["path"], "error": row["error"]})
                            print(f"camloc: skipped {row['path']}: {row['error']}", file=sys.stderr)
                            continue
                        rec = row_to_record(row)
                        journal.write(rec)
                        if args.json:
                            import json

                            print(json.dumps(rec), flush=True)
            except KeyboardInterrupt:
                journal.sync()
                raise
            failures = journal.commit()
            results_to_parquet(journal.final, out_dir / "results.parquet")
            n_ok = journal.results.lines
            keys = [Path(k) for k in src.keys]
            doc = explain_manifest(
                args, info, n_ok, failures, journal.options, started,
                engine={"name": "ray", "actors": args.actors, "gpus_per_actor": args.gpus_per_actor},
                parquet="results.parquet",
                **explain_extras(args, info, out_dir, keys, method=method, margs=margs),
            )  # fmt: skip
            atomic_write_json(out_dir / "manifest.json", doc)
            journal.finish()
    except KeyboardInterrupt as e:
        return rs.interrupted(e, journal.close, out_dir)
    except BaseException:
        journal.close()
        raise
    finally:
        if started_here:
            ray.shutdown()
    if not args.quiet:
        print(f"camloc: {n_ok} image(s) explained on Ray, {len(failures)} failed -> {out_dir}", file=sys.stderr)
    return 1 if failures else 0


def _camloc_pythonpath() -> str:
    """``PYTHONPATH`` for workers: the folder this ``camloc`` was imported from, then the current value."""
    import camloc

    here = str(Path(camloc.__file__).resolve().parent.parent)
    return os.pathsep.join(x for x in (here, os.environ.get("PYTHONPATH")) if x)
