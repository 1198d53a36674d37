"""``camloc compare``: several map methods on one boxed data set, one table (:mod:`camloc.compare`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_METHODS = "cam,best"


def register(p: argparse.ArgumentParser) -> None:
    """Fill the ``camloc compare`` sub-parser (the CLI's command table calls this)."""
    from camloc.cli import _model_args
    from camloc.cli_evaluate import FORMAT_CHOICES, add_classes_arg

    p.add_argument("data", type=Path, metavar="DATA", help="annotated data set (as for camloc evaluate)")
    p.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help="comma-separated methods of `camloc methods`, each optionally NAME(k=v;k=v), e.g. "
        "'cam,best,gradcam,affinity(layer=blocks.3)' (default: cam,best)",
    )
    p.add_argument("--format", default="auto", choices=FORMAT_CHOICES)
    p.add_argument("--split", default=None, help="data-set split where the format has several")
    add_classes_arg(p)
    _model_args(p)
    p.add_argument("--protocol", default="paper", choices=("paper", "wsolevaluation"))
    p.add_argument(
        "--holdout",
        type=int,
        default=None,
        metavar="N",
        help="also calibrate each method held out over N folds (camloc calibrate --holdout N) and report it",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--subset", default=None, metavar="K/N", help="only the images with index %% N == K")
    p.add_argument("--time-batch", type=int, default=8, help="images in the timed batch (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds, median taken (default 3)")
    p.add_argument("--out", type=Path, default=Path("camloc_compare"), help="folder for comparison.md / .json")
    p.set_defaults(_out_is_folder=True)
    p.add_argument("--json", action="store_true", help="print comparison.json on stdout instead of the table")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from camloc._io import atomic_write_json, atomic_write_text
    from camloc.cli import load_model_from_args
    from camloc.cli_calibrate import _read_samples
    from camloc.compare import compare_methods, parse_method_list
    from camloc.errors import CamlocError

    parse_method_list(args.methods, option="--methods")  # checked before any model is built
    for opt, v, low in (("--holdout", args.holdout, 2), ("--time-batch", args.time_batch, 1),
                        ("--rounds", args.rounds, 1)):  # fmt: skip
        if v is not None and v < low:
            raise CamlocError(f"`{opt}` must be >= {low}; got {v}")
    model, info = load_model_from_args(args)
    samples, ds = _read_samples(args, info)
    comp = compare_methods(
        samples, model, info, args.methods, protocol=args.protocol, holdout_folds=args.holdout,
        batch_size=args.batch_size, device=args.device, workers=args.workers, progress=not args.quiet,
        time_batch=args.time_batch, rounds=args.rounds,
        data={"path": str(args.data), "format": ds.format, "split": args.split, "subset": args.subset,
              "limit": args.limit, "images": len(samples)},
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    doc = comp.to_dict()
    atomic_write_json(args.out / "comparison.json", doc)
    table = comp.to_markdown()
    atomic_write_text(args.out / "comparison.md", table)
    print(json.dumps(doc) if args.json else table, end="\n" if args.json else "")
    if not args.quiet:
        print(f"camloc: wrote {args.out / 'comparison.md'} and comparison.json", file=sys.stderr)
    return 0
