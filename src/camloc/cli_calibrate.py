"""``camloc calibrate``: choose the box rule and threshold for a map method on boxed images -> calib.json.

Also the options the other commands share: ``--calibration FILE`` (``explain``, ``evaluate``) and ``--subset K/N``
(``calibrate``, ``evaluate``), with :func:`resolve_calibration` deciding the method: a calibration brings its
own method (and method arguments); ``--method`` may repeat it but not contradict it (an error: a rule fitted on one
method's maps says nothing about another's; to try that anyway, use the library with ``calibration.rule``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_calibration_args", "parse_method_args", "register", "resolve_calibration", "select_subset"]


def register(p: argparse.ArgumentParser) -> None:
    """Fill the ``camloc calibrate`` sub-parser (the CLI's command table calls this)."""
    from camloc.boxes import RULES, THRESHOLD_MODES
    from camloc.calibrate import OBJECTIVES
    from camloc.cli import _model_args
    from camloc.cli_evaluate import FORMAT_CHOICES, add_classes_arg

    p.add_argument("data", type=Path, metavar="DATA", help="annotated data set (as for camloc evaluate)")
    p.add_argument("--format", default="auto", choices=FORMAT_CHOICES)
    p.add_argument("--split", default=None, help="data-set split where the format has several")
    add_classes_arg(p)
    _model_args(p)
    p.add_argument("--protocol", default="paper", choices=("paper", "wsolevaluation"))
    p.add_argument("--method", default="cam", help="map method whose boxes are calibrated (default: cam)")
    p.add_argument(
        "--method-arg", action="append", default=None, metavar="K=V", help="a parameter of the method (repeatable)"
    )
    p.add_argument("--objective", default="gt_known", choices=OBJECTIVES, help="what the rule maximises")
    p.add_argument("--rules", default=",".join(RULES), help=f"component rules to consider ({','.join(RULES)})")
    p.add_argument(
        "--thresholds",
        default=",".join(THRESHOLD_MODES),
        help=f"threshold modes to consider ({','.join(THRESHOLD_MODES)})",
    )
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for choosing (default 5)")
    p.add_argument("--subset", default=None, metavar="K/N", help="calibrate on the images with index %% N == K")
    p.add_argument(
        "--holdout",
        type=int,
        default=None,
        metavar="N",
        help="also report held-out numbers: calibrate on N-1 folds, score the N-th, for each fold",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--out", type=Path, default=Path("calib.json"), help="output file (default calib.json)")
    p.set_defaults(_out_is_folder=False)
    p.add_argument("--json", action="store_true", help="print calib.json on stdout")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_calibrate)


def add_calibration_args(p: argparse.ArgumentParser, *, subset: bool = False) -> None:
    """Add ``--calibration FILE`` (and ``--subset K/N``) to a command; ``--method`` then defaults to the
    calibration's (call this after ``--method`` is defined)."""
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        metavar="FILE",
        help="calib.json from camloc calibrate: its box rule (and its method) replace the threshold rule",
    )
    if subset:
        p.add_argument("--subset", default=None, metavar="K/N", help="only the images with index %% N == K")
    p.set_defaults(method=None)  # None: not given (the calibration's method, else cam)


def parse_method_args(items: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: v}`` (strings; :func:`camloc.methods.resolve_method` converts them)."""
    from camloc.methods import parse_method_args as parse

    return parse(items, option="--method-arg")


def resolve_calibration(args: argparse.Namespace) -> Any:
    """Load ``--calibration`` (or None) and settle ``args.method``: the calibration's unless ``--method`` gave
    another (error), ``cam`` without a calibration. Sets ``args.method_args_resolved`` too."""
    from camloc.calibrate import load_calibration
    from camloc.errors import CamlocError

    given = getattr(args, "method", None)
    user_args = parse_method_args(getattr(args, "method_arg", None))
    path = getattr(args, "calibration", None)
    if path is None:
        if hasattr(args, "method") and given is None:
            args.method = "cam"
        args.method_args_resolved = user_args
        return None
    calib = load_calibration(path)
    if given is not None and given != calib.method:
        raise CamlocError(
            f"`--method` {given!r} contradicts the calibration's method {calib.method!r} ({path}): its rule was "
            f"fitted on {calib.method}'s maps; drop --method, or calibrate {given}"
        )
    if user_args and user_args != calib.method_args:
        raise CamlocError(
            f"`--method-arg` {user_args} contradicts the calibration's method arguments {calib.method_args} ({path})"
        )
    args.method = calib.method
    args.method_args_resolved = dict(calib.method_args)
    return calib


def select_subset(samples: list[Any], subset: str | None) -> list[Any]:
    """The samples of ``--subset K/N`` (index % N == K), or all of them."""
    if subset is None:
        return samples
    from camloc.calibrate import split_indices
    from camloc.errors import CamlocError

    picked = [samples[i] for i in split_indices(len(samples), subset).tolist()]
    if not picked:
        raise CamlocError(f"`--subset` {subset} selects no image of the {len(samples)}")
    return picked


def calibration_record(calib: Any, path: Path, samples: list[Any]) -> dict[str, Any]:
    """What ``metrics.json`` / ``manifest.json`` record about the calibration used."""
    from camloc.calibrate import sample_key

    rec = {
        "path": str(path),
        "fingerprint": calib.fingerprint,
        "method": calib.method,
        "method_args": calib.method_args,
        "rule": calib.rule.to_dict(),
        "rule_description": calib.rule.describe(),
        "calibrated_on": calib.data,
        "objective": calib.objective,
    }
    if samples:
        rec["overlap_images"] = calib.overlap([sample_key(s) for s in samples])
    return rec


def _read_samples(args: argparse.Namespace, info: Any = None) -> tuple[list[Any], Any]:
    from camloc.cli_evaluate import _format_name, reader_classes
    from camloc.data.annotations import read_dataset
    from camloc.errors import CamlocError

    if args.limit is not None and args.limit < 1:
        raise CamlocError(f"`--limit` must be >= 1; got {args.limit}")
    kw: dict[str, Any] = {} if args.split is None else {"split": args.split}
    kw.update(reader_classes(args, info))
    ds = read_dataset(args.data, format=_format_name(args.format), **kw)
    samples = list(ds.samples)[: args.limit] if args.limit else list(ds.samples)
    if not samples:
        raise CamlocError(f"`DATA` must hold at least one annotated image; {args.data} has none")
    return select_subset(samples, args.subset), ds


def _names(text: str, option: str, allowed: tuple[str, ...]) -> list[str]:
    from camloc.errors import CamlocError

    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in allowed]
    if not names or bad:
        raise CamlocError(f"`{option}` must be a comma-separated list of {', '.join(allowed)}; got {text!r}")
    return names


def cmd_calibrate(args: argparse.Namespace) -> int:
    from camloc.boxes import RULES, THRESHOLD_MODES
    from camloc.calibrate import calibrate_samples
    from camloc.cli import load_model_from_args
    from camloc.errors import CamlocError

    rules = _names(args.rules, "--rules", RULES)
    modes = _names(args.thresholds, "--thresholds", THRESHOLD_MODES)
    if args.folds < 1:
        raise CamlocError(f"`--folds` must be >= 1; got {args.folds}")
    if args.holdout is not None and args.holdout < 2:
        raise CamlocError(f"`--holdout` must be >= 2; got {args.holdout}")
    method_args = parse_method_args(args.method_arg)
    model, info = load_model_from_args(args)
    samples, ds = _read_samples(args, info)
    calib, res = calibrate_samples(
        samples, model, info, protocol=args.protocol, method=args.method, method_args=method_args,
        objective=args.objective, rules=rules, threshold_modes=modes, folds=args.folds, holdout_folds=args.holdout,
        batch_size=args.batch_size, device=args.device, workers=args.workers, progress=not args.quiet,
        data={"path": str(args.data), "format": ds.format, "split": args.split, "subset": args.subset,
              "limit": args.limit},
    )  # fmt: skip
    calib = _with_failures(calib, res.failures)
    calib.save(args.out)
    if args.json:
        print(json.dumps(calib.to_dict()))
    if not args.quiet:
        print(_summary(calib), file=sys.stderr)
    for f in res.failures:
        print(f"camloc: skipped {f['path']}: {f['error']}", file=sys.stderr)
    return 1 if res.failures else 0


def _with_failures(calib: Any, failures: list[dict[str, str]]) -> Any:
    import dataclasses

    return dataclasses.replace(calib, data={**calib.data, "failed": len(failures)})


def _summary(calib: Any) -> str:
    """A plain-text report of a calibration (stderr)."""
    b = calib.baseline
    lines = [
        f"camloc: calibrated {calib.method} on {calib.n_images} images ({calib.objective}): {calib.rule.describe()}",
        f"  cross-validated {calib.objective} {calib.cv_score:.4f}, on the calibration images {calib.score:.4f}; "
        f"paper rule there: GT-known {b.get('gt_known_loc', float('nan')):.4f}, "
        f"top-1 loc {b.get('top1_loc', float('nan')):.4f}",
        "  candidate            cv      in-sample",
    ]
    for c in calib.candidates:
        lines.append(f"  {c['name']:<20} {c['cv_score']:.4f}  {c['score']:.4f}")
    ho = calib.holdout
    if ho:
        lines.append(f"  held out ({ho['folds']} folds; each image scored by a calibration that never saw it):")
        lines.append("  rule                 GT-known  top-1 loc")
        if ho.get("paper"):
            lines.append(
                f"  {'paper (largest/0.2)':<20} {ho['paper']['gt_known_loc']:.4f}    {ho['paper']['top1_loc']:.4f}"
            )
        lines.append(f"  {'auto (chosen)':<20} {ho['auto']['gt_known_loc']:.4f}    {ho['auto']['top1_loc']:.4f}")
        for c in ho["candidates"]:
            lines.append(f"  {c['name']:<20} {c['gt_known_loc']:.4f}    {c['top1_loc']:.4f}")
        ceiling = ", ".join(f"{k} {v:.4f}" for k, v in ho.get("oracle", {}).items())
        lines.append(f"  ceiling (GT-known with the best threshold of each image): {ceiling}")
    return "\n".join(lines)
