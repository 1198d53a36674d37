"""``camloc`` command line: thin wrappers over the library. ``main(argv) -> int`` is the testable entry point.

Every command is one row of :data:`COMMANDS` (name, ``"module:function"``, help); the function fills the
command's sub-parser (``register(parser)``) and sets ``func``. Only the module of the command being run is
imported, so ``camloc --help`` imports neither torch nor the trainer.

Exit codes: 0 success; 1 the run finished but some inputs failed (reported on stderr and in the manifest);
2 bad usage or arguments: a camloc error (:class:`~camloc.errors.CamlocError`) is printed as one line
(``--debug``: with its traceback). Any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camloc import __version__
from camloc.errors import CamlocError

SCHEMA_VERSION = 1
BOX_CONVENTION = (
    "xyxy float pixel coordinates of the original image (after EXIF rotation); pixel (row i, col j) covers "
    "[j, j+1) x [i, i+1); (0, 0, 0, 0) = no box"
)


def model_source_args(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights``, ``--checkpoint``: which network (shared by every command that loads one)."""
    p.add_argument(
        "--model",
        default="lite0",
        help="lite0 | lite1 | lite2 | a registered name | timm:NAME | torchvision:NAME (default: lite0)",
    )
    p.add_argument("--weights", type=Path, help="local weights file for --model (never downloaded)")
    p.add_argument("--checkpoint", type=Path, help="a camloc training checkpoint (overrides --model/--weights)")


def _model_args(p: argparse.ArgumentParser) -> None:
    model_source_args(p)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--workers", type=int, default=None, help="image decoding: 2 threads by default; N > 0: N processes; 0: inline"
    )


def _method_args(p: argparse.ArgumentParser) -> None:
    """``--method NAME`` and ``--method-arg k=v`` (camloc.methods), shared by explain and evaluate."""
    p.add_argument("--method", default="cam", help="map method (`camloc methods` lists them; default cam)")
    p.add_argument(
        "--method-arg",
        action="append",
        default=[],
        metavar="K=V",
        help="a parameter of --method (repeatable), e.g. scales=0.75,1,1.25",
    )


def method_from_args(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """``(--method, {k: v})`` checked against the method table before any model is built (errors name the
    option and list the valid names / parameters)."""
    from camloc.methods import parse_method_args, resolve_method

    margs = parse_method_args(args.method_arg, option="--method-arg")
    if not margs and getattr(args, "method_args_resolved", None):  # the calibration's method arguments
        margs = dict(args.method_args_resolved)
    resolve_method(args.method, margs, names=("--method", "--method-arg"))
    return args.method, margs


def load_model_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """Build the model named by ``--model/--weights`` or ``--checkpoint``; put it on ``--device`` in eval mode."""
    return load_model(args.model, weights=args.weights, checkpoint=args.checkpoint, device=args.device)


def load_model(
    model: str = "lite0", *, weights: Any = None, checkpoint: Any = None, device: str = "cpu"
) -> tuple[Any, Any]:
    """``(model, info)`` as ``--model/--weights`` or ``--checkpoint`` (which wins) name it, on ``device``, in eval
    mode. Every command (and each Ray actor, :mod:`camloc.ray`) builds its model through this one function."""
    from camloc.models.registry import create_model

    if checkpoint is not None:
        from camloc.checkpoint import load_checkpoint

        net, info = load_checkpoint(checkpoint)
    else:
        net, info = create_model(model, weights=weights)
    return net.to(check_device(device)).eval(), info


def check_device(device: str) -> Any:
    """``device`` as a ``torch.device``, or the CamlocError a user sees for a bad or unavailable one."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise CamlocError(f"`--device` must be cpu, cuda or cuda:N; got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CamlocError("`--device` cuda was asked for but no CUDA device is available")
    return dev


def _safe_name(path: Path, root: Path | None) -> str:
    try:
        rel = path.resolve().relative_to(root) if root else Path(path.name)
    except ValueError:
        rel = Path(path.name)
    stem = "__".join(rel.with_suffix("").parts)
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in stem) or "image"


def _common_root(paths: Sequence[Path]) -> Path | None:
    import os

    dirs = [str(p.resolve().parent) for p in paths]
    if not dirs:
        return None
    return Path(os.path.commonpath(dirs))


def _stems(files: Sequence[Path], root: Path | None) -> dict[str, str]:
    """Each input's overlay/panel file stem (its path under ``root``, made safe; repeats get ``_`` appended),
    decided from the whole input list, so a resumed or distributed run names files as one uninterrupted run."""
    used: set[str] = set()
    out: dict[str, str] = {}
    for f in files:
        stem = _safe_name(f, root)
        while stem in used:
            stem += "_"
        used.add(stem)
        out[str(f)] = stem
    return out


def draw_explained(item: Any, stem: str, out_dir: Path, *, max_side: int) -> dict[str, str]:
    """Save the overlay and the top-k panel of one :class:`~camloc.explain.Explained` under ``out_dir``; return
    their paths relative to it (``{"overlay", "panel"}``, the keys added to its results line)."""
    from camloc._io import atomic_save_png
    from camloc.viz import draw_boxes, overlay, topk_panel

    res = item.result
    sx, sy = item.display_scale
    disp_boxes = [[b.box[0] * sx, b.box[1] * sy, b.box[2] * sx, b.box[3] * sy] for b in res.topk]
    top = res.topk[0]
    ov = overlay(item.display, item.maps[0], alpha=0.5)
    ov = draw_boxes(ov, [disp_boxes[0]], labels=[f"{top.name} {top.prob:.2f}"], colors=(255, 255, 255))
    if res.box_head is not None:  # the learned class-agnostic box, in its own colour
        hb = res.box_head.box
        ov = draw_boxes(ov, [[hb[0] * sx, hb[1] * sy, hb[2] * sx, hb[3] * sy]], labels=["box head"],
                        colors=(0, 255, 255))  # fmt: skip
    files_out = {"overlay": f"overlays/{stem}.png", "panel": f"panels/{stem}.png"}
    atomic_save_png(out_dir / files_out["overlay"], ov)
    panel = topk_panel(
        item.display,
        item.maps,
        disp_boxes,
        [b.name for b in res.topk],
        scores=[b.prob for b in res.topk],
        title=res.path.name,
        tile_size=min(224, max_side),
    )
    atomic_save_png(out_dir / files_out["panel"], panel)
    return files_out


def explain_manifest(args: argparse.Namespace, info: Any, n_ok: int, failures: list[dict[str, Any]],
                     options: dict[str, Any], started: float, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The ``manifest.json`` of an explain run (any engine)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "camloc",
        "version": __version__,
        "command": "explain",
        "model": {k: v for k, v in info.to_dict().items() if k != "categories"},
        "num_classes": info.num_classes,
        "topk": args.topk,
        "threshold": args.threshold,
        "threshold_rule": "normalised by max, keep >= threshold, largest 8-connected component",
        "calibration": None,
        "box_convention": BOX_CONVENTION,
        "images": n_ok,
        "failed": len(failures),
        "failures": failures,
        "results": "results.jsonl",
        **extra,
        "seconds": round(time.time() - started, 3),
        "options": options,
    }


def explain_extras(
    args: argparse.Namespace, info: Any, out_dir: Path, files: Sequence[Path], **used: Any
) -> dict[str, Any]:
    """The manifest entries of explain's options beyond the paper's (method, zoom, box head, ONNX, exports);
    ``--export`` files are written here from the finished ``results.jsonl`` (every engine, resumed runs too)."""
    out: dict[str, Any] = {}
    method, margs, zoom, calib = used.get("method", "cam"), used.get("margs") or {}, used.get("zoom"), used.get("calib")
    if calib is not None:
        from camloc.cli_calibrate import calibration_record

        out.update(threshold_rule=calib.rule.describe(), calibration=calibration_record(calib, args.calibration, []))
    if method != "cam" or margs:
        out.update(method=method, method_args=margs)
    if zoom is not None:
        out["zoom"] = zoom.describe()
    if getattr(args, "box_head", None) is not None:
        from camloc.boxhead import box_head_summary

        out["box_head"] = box_head_summary(args.box_head)
    if getattr(args, "onnx", None) is not None or getattr(args, "export", None):
        from camloc.cli_export import explain_exports

        rows = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines() if line.strip()]
        stems = _stems(files, _common_root(files))
        out.update(
            explain_exports(args, [(r, stems.get(r["path"], Path(r["path"]).stem)) for r in rows], info, out_dir)
        )
    return out


def cmd_explain(args: argparse.Namespace) -> int:
    if getattr(args, "engine", "local") == "ray":
        from camloc.ray import cmd_explain_ray

        local_only = [
            opt
            for opt, key in (
                ("--onnx", "onnx"),
                ("--calibration", "calibration"),
                ("--zoom", "zoom"),
                ("--box-head", "box_head"),
            )
            if getattr(args, key, None)
        ]
        if local_only:
            raise CamlocError(f"`--engine ray` does not take {', '.join(local_only)}; run those with --engine local")

        return cmd_explain_ray(args)
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from camloc import resume as rs
    from camloc._io import atomic_write_json
    from camloc.cli_calibrate import resolve_calibration
    from camloc.data.images import find_images
    from camloc.explain import ImageFailure, _keep_freed_memory, explain_images
    from camloc.zoom import zoom_from_args

    calib = resolve_calibration(args)
    files = find_images(args.paths, recursive=True)
    if not files:
        raise CamlocError("`PATH` must name image files or folders holding images; none were found")
    method, margs = method_from_args(args)
    out_dir: Path = args.out
    keys = [str(f) for f in files]
    journal = rs.ResultJournal(
        out_dir, command="explain", options=rs.run_options(args), keys=keys, resume=args.resume,
        sync_every=args.batch_size, keep_rows=False,
    )  # fmt: skip
    if journal.complete:  # said even with --quiet: nothing was done
        print(f"camloc: the run in {out_dir} is complete; nothing to resume", file=sys.stderr)
        return 0
    _keep_freed_memory()  # this process is ours: CPU batches no longer page-fault their activations in each time
    producer = None
    if getattr(args, "onnx", None) is not None:  # onnxruntime runs the exported graph: no torch model at all
        from camloc.cli_export import onnx_producer

        model, producer = None, onnx_producer(args)
        info = producer.info
    else:
        model, info = load_model_from_args(args)
        if next(model.parameters()).device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)  # faster CPU convolutions (oneDNN); same results
    if model is None and (getattr(args, "zoom", False) or args.box_head is not None):
        raise CamlocError("`--onnx` does not take --zoom or --box-head (they run the torch model's trunk)")
    zoom = zoom_from_args(args, model, info) if model is not None else None
    journal.open()
    todo = [f for f in files if str(f) not in journal.done]
    render = not args.no_images
    stems = _stems(files, _common_root(files)) if render else {}
    started = time.time()

    def draw(item: Any, stem: str) -> dict[str, str]:
        return draw_explained(item, stem, out_dir, max_side=args.max_side)

    pool = ThreadPoolExecutor(max_workers=2) if render else None
    pending: list[tuple[dict[str, Any], Any]] = []

    def flush(limit: int) -> None:
        while len(pending) > limit:
            record, fut = pending[0]
            if fut is not None:  # a signal while waiting leaves the record pending: the interrupt path writes it
                record.update(fut.result())
            with rs.critical():  # written and dropped from `pending` together: never lost, never written twice
                journal.write(record)
                pending.pop(0)
            if args.json:
                print(json.dumps(record), flush=True)

    try:
        with rs.graceful_signals():
            try:
                for item in explain_images(
                    todo,
                    model,
                    info,
                    topk=args.topk,
                    threshold=args.threshold,
                    batch_size=args.batch_size,
                    device=args.device,
                    workers=args.workers,
                    display_max_side=args.max_side,
                    progress=not args.quiet,
                    producer=producer,
                    calibration=calib,
                    box_head=args.box_head,
                    zoom=zoom or False,
                    method=method,
                    method_args=margs,
                ):
                    if isinstance(item, ImageFailure):
                        journal.fail(item.to_dict())
                        print(f"camloc: skipped {item.path}: {item.error}", file=sys.stderr)
                        continue
                    record = item.result.to_dict()
                    fut = pool.submit(draw, item, stems[str(item.result.path)]) if pool is not None else None
                    pending.append((record, fut))
                    flush(limit=64)
                flush(limit=0)
            except KeyboardInterrupt:  # keep what is finished: the drawn images' lines, then the state
                k = 0  # the longest run of finished drawings: lines stay in input order
                while k < len(pending) and (pending[k][1] is None or pending[k][1].done()):
                    if pending[k][1] is not None and pending[k][1].exception() is not None:
                        break
                    k += 1
                del pending[k:]
                flush(limit=0)
                journal.sync()
                raise
            failures = journal.commit()
            n_ok = journal.results.lines
            extra = explain_extras(args, info, out_dir, files, calib=calib, zoom=zoom, method=method, margs=margs)
            doc = explain_manifest(args, info, n_ok, failures, journal.options, started, **extra)
            atomic_write_json(out_dir / "manifest.json", doc)
            journal.finish()
    except KeyboardInterrupt as e:
        return rs.interrupted(e, journal.close, out_dir)
    except CamlocError:  # a bad option found at the first batch: a fresh run that recorded nothing leaves no files
        journal.discard_if_unused()
        raise
    except BaseException:
        journal.close()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if not args.quiet:
        print(f"camloc: {n_ok} image(s) explained, {len(failures)} failed -> {out_dir}", file=sys.stderr)
    return 1 if failures else 0


def cmd_models(args: argparse.Namespace) -> int:
    from camloc.models.registry import list_models

    entries = list_models()
    if args.json:
        print(
            json.dumps([{"name": e.name, "description": e.description, "weights": e.default_weights} for e in entries])
        )
        return 0
    width = max(len(e.name) for e in entries)
    for e in entries:
        tag = "embedded weights" if e.default_weights else "needs --weights/--checkpoint or training"
        print(f"{e.name:<{width}}  {e.description}  [{tag}]")
    print("timm:NAME / torchvision:NAME  any timm or torchvision classifier with a GAP head (--weights FILE)")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from camloc.methods import list_methods

    rows = list_methods()
    if args.json:
        print(json.dumps([{"name": n, "description": d} for n, d in rows]))
        return 0
    for name, desc in rows:
        print(f"{name}\t{desc}")
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    from camloc.data.synthetic import make_synthetic_dataset

    if args.kind == "text":
        return _synthetic_text(args)
    if args.photos is not None:
        raise CamlocError("`--photos` must come with `--kind text`; the shapes set draws its own backgrounds")
    ds = make_synthetic_dataset(
        args.out,
        num_classes=args.classes,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        image_size=64 if args.image_size is None else args.image_size,
        seed=args.seed,
    )
    print(f"camloc: synthetic data set ({args.classes} classes) written to {ds.root}")
    return 0


def _synthetic_text(args: argparse.Namespace) -> int:
    from camloc.data.synthetic_text import find_fonts, make_text_dataset

    if args.photos is None:
        raise CamlocError("`--photos` must name a folder of photos for `--kind text` (the words go onto them)")
    if args.fonts is not None and not Path(args.fonts).is_dir():
        raise CamlocError(f"`--fonts` must be a folder of .ttf/.otf fonts; got {args.fonts!r} (not a folder)")
    fonts = None if args.fonts is None else find_fonts([args.fonts])
    ds = make_text_dataset(
        args.out, args.photos, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
        image_size=224 if args.image_size is None else args.image_size, seed=args.seed, max_words=args.max_words,
        fonts=fonts,
    )  # fmt: skip
    print(
        f"camloc: text set ({ds.num_train} train / {ds.num_val} val images, {len(ds.photos)} photos, "
        f"{len(ds.fonts)} fonts) written to {ds.root}"
    )
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise SystemExit(f"{self.prog}: error: {message}")


def register_explain(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    _model_args(p)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.2, help="fraction of each map's max (default 0.2)")
    p.add_argument("--out", type=Path, default=Path("camloc_out"), help="output folder (default camloc_out)")
    p.set_defaults(_out_is_folder=True)
    p.add_argument("--max-side", type=int, default=512, help="longest side of the overlay PNGs (default 512)")
    p.add_argument("--no-images", action="store_true", help="write only results.jsonl and manifest.json")
    p.add_argument(
        "--box-head", type=Path, default=None, help="a learned box head (camloc boxhead): each result also gets its box"
    )
    p.add_argument("--json", action="store_true", help="also print each result as a JSON line on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from camloc.cli_export import explain_options

    explain_options(p)
    from camloc.cli_zoom import add_zoom_args

    add_zoom_args(p)
    _method_args(p)
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out (same options)")
    from camloc.ray import add_ray_args

    add_ray_args(p)
    p.set_defaults(func=cmd_explain)
    from camloc.cli_calibrate import add_calibration_args

    add_calibration_args(p)


def register_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)


def register_methods(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_methods)


def register_synthetic(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--train-per-class", type=int, default=150)
    p.add_argument("--val-per-class", type=int, default=40)
    p.add_argument("--image-size", type=int, default=None, help="side in pixels (default 64; --kind text: 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", default="shapes", choices=("shapes", "text"), help="shapes (default) or words on --photos")
    p.add_argument("--photos", type=Path, default=None, help="--kind text: a folder of photos to write on")
    p.add_argument(
        "--fonts",
        type=Path,
        default=None,
        metavar="DIR",
        help="--kind text: Pillow's font and the .ttf/.otf fonts in DIR instead of the system's",
    )
    p.add_argument("--max-words", type=int, default=2, help="--kind text: at most this many words per image")
    p.set_defaults(func=cmd_synthetic, _out_is_folder=True)


#: Every ``camloc`` command: (name, ``"module:function"`` filling its sub-parser, one-line help), in help order.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("explain", "camloc.cli:register_explain", "top-k classes, CAM overlays and boxes for image files or folders"),
    ("models", "camloc.cli:register_models", "list the built-in models"),
    ("synthetic", "camloc.cli:register_synthetic", "write the synthetic weak-localization data set (CSV + masks)"),
    (
        "evaluate",
        "camloc.cli_evaluate:register",
        "localization metrics (top-1/5 loc, GT-known, MaxBoxAcc(V2), PxAP)",
    ),
    ("train", "camloc.training.cli:register", "train a GAP network on image-level labels (torchrun-aware)"),
    ("fit", "camloc.cli_fit:register", "fit a linear head on a frozen trunk's pooled features (new classes)"),
    (
        "calibrate",
        "camloc.cli_calibrate:register",
        "choose the box rule and threshold for a map method on boxed images",
    ),
    ("units", "camloc.units:register", "a class's most important trunk units and their top images (or one unit's)"),
    ("boxhead", "camloc.boxhead:register", "train a class-agnostic box head on a frozen trunk's features"),
    (
        "serve",
        "camloc.serve.cli:register",
        "a local web app and JSON API: drop photos, see their classes, maps and boxes",
    ),
    ("compare", "camloc.cli_compare:register", "several map methods on one boxed data set, side by side"),
    ("export", "camloc.cli_export:register", "export a model's CAM graph (top-k classes and maps) to ONNX"),
    ("methods", "camloc.cli:register_methods", "list the map methods of --method (name, tab, description)"),
)


def _register(target: str, parser: argparse.ArgumentParser) -> None:
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(parser)


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``: its first token that is not an option (the global options take no value)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in {c[0] for c in COMMANDS} else None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``camloc`` parser. With ``argv``, only the sub-parser of the command it names is filled (and its
    module imported); without, all of them are."""
    parser = _Parser(prog="camloc", description="Class activation maps, boxes and localization metrics.")
    parser.add_argument("--version", action="version", version=f"camloc {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of camloc errors too")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    chosen = None if argv is None else _command_in(argv)
    for name, target, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text)
        if argv is None or name == chosen:
            _register(target, p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (never calls ``sys.exit``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        return int(e.code or 0)
    problem = _check_common_args(args)
    if problem:
        print(f"camloc: error: {problem}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except CamlocError as e:  # a user error: one line; anything else is a bug and keeps its traceback
        if args.debug:
            traceback.print_exc()
        print(f"camloc: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the user named cannot be written or read (exists, is a folder, no permission)
        if args.debug:
            traceback.print_exc()
        where = f": {e.filename}" if e.filename else ""
        print(f"camloc: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    """The user's message of ``e``: a camloc error re-raised by a DataLoader worker carries the worker's traceback
    in its text; keep only the original message (its last line, after the exception's class name)."""
    text = str(e)
    if "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def _check_common_args(args: argparse.Namespace) -> str | None:
    """One message for a bad value of an option shared by several commands (``None`` when all are fine)."""
    for name in ("topk", "batch_size", "max_side"):
        if hasattr(args, name) and getattr(args, name) < 1:
            return f"`--{name.replace('_', '-')}` must be >= 1; got {getattr(args, name)}"
    if hasattr(args, "threshold") and args.threshold is not None and not 0 <= args.threshold <= 1:
        return f"`--threshold` must be in [0, 1]; got {args.threshold}"
    workers = getattr(args, "workers", None)
    if isinstance(workers, int) and workers < 0:
        return f"`--workers` must be >= 0; got {workers}"
    device = getattr(args, "device", None)
    if isinstance(device, str) and device.startswith("cuda"):  # not "auto" (train's), and no torch import for cpu
        try:
            check_device(device)
        except CamlocError as e:
            return str(e)
    for name in ("out", "cache"):
        path = getattr(args, name, None)
        if isinstance(path, (str, Path)):
            problem = _writable_problem(
                Path(path), folder=True if name == "cache" else getattr(args, "_out_is_folder", None)
            )
            if problem:
                return f"`--{name}` {problem}"
    return None


def _writable_problem(path: Path, *, folder: bool | None) -> str | None:
    """Why ``path`` cannot be written as an output (``folder``: True a folder, False a file, None either)."""
    if folder is True and path.exists() and not path.is_dir():
        return f"must be a folder; got the existing file {path}"
    if folder is False and path.is_dir():
        return f"must be a file path; got the existing folder {path}"
    parent = path if folder is True and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"must be under a folder; {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"must be writable; cannot write in {parent}"
    return None


def entry() -> None:  # console-script entry point
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
