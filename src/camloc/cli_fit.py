"""``camloc fit``: fit a GAP -> linear head on a frozen trunk's pooled features (:mod:`camloc.fit`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from camloc.errors import CamlocError


def _floats(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"a comma-separated list of numbers; got {text!r}") from e
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"positive numbers; got {text!r}")
    return values


def register(p: argparse.ArgumentParser) -> None:
    """Fill the ``camloc fit`` sub-parser (the CLI's command table calls this; see :mod:`camloc.cli`)."""
    from camloc.cli import _model_args
    from camloc.fit import DEFAULT_C_GRID

    p.add_argument("data", type=Path, metavar="DATA", help="ImageFolder, Tiny-ImageNet layout or camloc CSV")
    _model_args(p)
    p.add_argument("--out", type=Path, default=Path("camloc_fit"), help="run folder (default camloc_fit)")
    p.set_defaults(_out_is_folder=True)
    p.add_argument("--cache", type=Path, default=None, help="feature cache folder (default OUT/cache)")
    p.add_argument("--classifier", default="logreg", choices=("logreg", "svm"))
    p.add_argument(
        "--C",
        dest="Cs",
        type=_floats,
        default=list(DEFAULT_C_GRID),
        help="C grid, comma-separated (default " + ",".join(f"{c:g}" for c in DEFAULT_C_GRID) + ")",
    )
    p.add_argument("--class-weight", default=None, choices=("balanced",), help="weigh classes by inverse frequency")
    p.add_argument("--flip", action="store_true", help="add mirrored images' features as training samples")
    p.add_argument("--val-fraction", type=float, default=0.2, help="per-class hold-out choosing C (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embed-trunk", action="store_true", help="store the trunk's weights in model.pt")
    from camloc.cli_zoom import add_zoom_args

    add_zoom_args(p)
    p.add_argument("--json", action="store_true", help="print fit_report.json on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    from camloc.fit import fit_linear_head

    if not 0 <= args.val_fraction <= 0.9:
        raise CamlocError(f"`--val-fraction` must be in [0, 0.9]; got {args.val_fraction}")
    res = fit_linear_head(
        args.data, model=args.model, weights=args.weights, checkpoint=args.checkpoint, out=args.out,
        cache_dir=args.cache, classifier=args.classifier, Cs=args.Cs, class_weight=args.class_weight,
        flip=args.flip, val_fraction=args.val_fraction, seed=args.seed, embed_trunk=args.embed_trunk,
        batch_size=args.batch_size, device=args.device, workers=args.workers, progress=not args.quiet,
        zoom=args.zoom, **({} if args.zoom_margin is None else {"zoom_margin": args.zoom_margin}),
    )  # fmt: skip
    if args.json:
        print(json.dumps(res.report))
    if not args.quiet:
        rep = res.report
        acc = rep["holdout"]["accuracy"]
        msg = f"camloc: fitted {rep['classifier']} (C={rep['C']:g})"
        msg += f", hold-out accuracy {acc:.4f}" if acc is not None else ""
        msg += f", test accuracy {rep['test']['accuracy']:.4f}" if "test" in rep else ""
        print(f"{msg} -> {res.checkpoint}", file=sys.stderr)
    return 0
