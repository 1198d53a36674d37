"""``camloc export`` (a model's CAM graph to ONNX) and explain's ``--onnx`` / ``--export coco|yolo`` options."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1]; got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1]; got {value}")
    return value


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        h, w = (int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be HxW (e.g. 224x224); got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"must be positive; got {text!r}")
    return h, w


def register(p: argparse.ArgumentParser) -> None:
    """Fill the ``camloc export`` sub-parser (the CLI's command table calls this; see :mod:`camloc.cli`)."""
    from camloc.cli import model_source_args

    model_source_args(p)
    p.add_argument("--format", default="onnx", choices=("onnx",), help="export format (default onnx)")
    p.add_argument("--topk", type=int, default=5, help="K: classes per image whose maps the graph outputs")
    p.add_argument("--out", type=Path, default=Path("model.onnx"), help="output file (default model.onnx)")
    p.set_defaults(_out_is_folder=False)
    p.add_argument(
        "--upsample",
        nargs="?",
        const="input",
        default=None,
        metavar="HxW",
        help="output maps resized bilinearly to the input size (or to HxW) instead of feature resolution",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch check before writing")
    p.add_argument("--json", action="store_true", help="print the export summary as JSON on stdout")
    p.set_defaults(func=cmd_export, device="cpu")


def cmd_export(args: argparse.Namespace) -> int:
    from camloc.cli import load_model_from_args
    from camloc.export.onnx import export_onnx

    upsample: bool | tuple[int, int] = False
    if args.upsample == "input":
        upsample = True
    elif args.upsample is not None:
        try:
            upsample = _size(args.upsample)
        except argparse.ArgumentTypeError as e:
            from camloc.errors import CamlocValueError

            raise CamlocValueError(f"`--upsample` {e}") from None
    model, info = load_model_from_args(args)
    res = export_onnx(
        model, info, args.out, topk=args.topk, upsample=upsample, opset=args.opset, check=not args.no_check
    )
    summary = {
        "path": str(res.path),
        "model": info.name,
        "topk": res.topk,
        "input_size": list(res.input_size),
        "map_size": list(res.map_size),
        "opset": res.opset,
        "max_abs_error": {k: float(f"{v:.3g}") for k, v in res.max_abs_error.items()},
    }
    if args.json:
        print(json.dumps(summary))
    else:
        err = ", ".join(f"{k} {v:.2g}" for k, v in res.max_abs_error.items()) or "not checked"
        print(
            f"camloc: {info.name} -> {res.path} (top-{res.topk} maps {res.map_size[0]}x{res.map_size[1]}, opset "
            f"{res.opset}); onnxruntime vs PyTorch max abs error: {err}",
            file=sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------------------------- explain options


def explain_options(p: argparse.ArgumentParser) -> None:
    """Add ``--onnx``, ``--threads``, ``--export``, ``--export-topk`` and ``--min-score`` to ``camloc explain``."""
    p.add_argument(
        "--onnx",
        type=Path,
        default=None,
        metavar="FILE",
        help="run this graph from `camloc export` in onnxruntime instead of a torch model (--model is ignored)",
    )
    p.add_argument("--threads", type=_positive_int, default=None, help="onnxruntime threads for --onnx")
    p.add_argument(
        "--export",
        action="append",
        choices=("coco", "yolo"),
        default=None,
        help="also write boxes as detections: coco (detections.json + instances.json) or yolo (labels/*.txt, "
        "classes.txt); repeatable",
    )
    p.add_argument(
        "--export-topk", type=_positive_int, default=1, help="boxes of the top N classes per image (default 1)"
    )
    p.add_argument(
        "--min-score", type=_fraction, default=0.0, help="export only boxes whose probability is >= this (default 0)"
    )


def onnx_producer(args: argparse.Namespace) -> Any:
    """The :class:`camloc.export.onnx.OnnxCAM` of ``--onnx`` (checked against ``--topk``)."""
    from camloc.errors import CamlocValueError
    from camloc.export.onnx import OnnxCAM

    for opt in ("checkpoint", "weights"):
        if getattr(args, opt, None) is not None:
            raise CamlocValueError(f"`--{opt}` must not be given with `--onnx` (the graph carries its own weights)")
    producer = OnnxCAM(args.onnx, device=args.device, threads=args.threads)
    if min(args.topk, producer.info.num_classes) > producer.topk:
        raise CamlocValueError(
            f"`--topk` must be <= {producer.topk}, the top-K {args.onnx} was exported with; got {args.topk}"
        )
    return producer


def explain_exports(
    args: argparse.Namespace, exported: Sequence[tuple[Any, str]], info: Any, out_dir: Path
) -> dict[str, Any]:
    """Write explain's ``--export`` files; return what the manifest records about them and about ``--onnx``."""
    extra: dict[str, Any] = {}
    if args.onnx is not None:
        extra["onnx"] = str(args.onnx)
    if args.export:
        from camloc.export.detections import write_detections

        formats = list(dict.fromkeys(args.export))
        files = write_detections(
            out_dir,
            [r for r, _ in exported],
            info.categories,
            formats=formats,
            stems=[s for _, s in exported],
            topk=args.export_topk,
            min_score=args.min_score,
        )
        extra["export"] = {
            "formats": formats,
            "files": files,
            "topk": args.export_topk,
            "min_score": args.min_score,
            "coco": "image_id = 1-based order of results.jsonl, category_id = class_idx + 1, bbox [x, y, w, h]",
            "yolo": "labels/<overlay stem>.txt: class_idx cx cy w h, normalised by the original image size",
        }
    return extra
