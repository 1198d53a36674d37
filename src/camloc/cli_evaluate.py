"""``camloc evaluate``: localization metrics of a model on an annotated data set, with report, plots and grid."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
FORMAT_CHOICES = ("auto", "imagenet", "voc", "cub", "wsol", "tiny", "csv", "coco")
_FORMAT_NAMES = {"imagenet": "ilsvrc_xml", "tiny": "tiny_imagenet"}


def register(p: argparse.ArgumentParser) -> None:
    """Fill the ``camloc evaluate`` sub-parser (the CLI's command table calls this; see :mod:`camloc.cli`)."""
    from camloc.cli import _method_args, _model_args

    p.add_argument("data", type=Path, metavar="DATA", help="annotated data set (folder or annotation file)")
    p.add_argument("--format", default="auto", choices=FORMAT_CHOICES)
    p.add_argument("--split", default=None, help="data-set split where the format has several")
    add_classes_arg(p)
    p.add_argument(
        "--class-map",
        type=Path,
        default=None,
        metavar="JSON",
        help="COCO: {category id or name: class index} (default: categories matched to the model's class names)",
    )
    _model_args(p)
    p.add_argument("--protocol", default="paper", choices=("paper", "wsolevaluation"))
    p.add_argument("--threshold", type=float, default=0.2, help="threshold for the fixed-threshold metrics")
    _method_args(p)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--box-head", type=Path, default=None,
                   help="a learned box head (camloc boxhead): its box replaces the CAM box of the localization "
                   "metrics; MaxBoxAcc(V2)/PxAP stay the CAM's")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("camloc_eval"))
    p.set_defaults(_out_is_folder=True)
    p.add_argument("--json", action="store_true", help="print metrics.json on stdout")
    p.add_argument("--quiet", action="store_true")
    from camloc.cli_zoom import add_zoom_args

    add_zoom_args(p)
    _faithfulness_args(p)
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out (same options)")
    p.set_defaults(func=cmd_evaluate)
    from camloc.cli_calibrate import add_calibration_args

    add_calibration_args(p, subset=True)


def _faithfulness_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("faithfulness (of the true class's map; see camloc.faithfulness)")
    g.add_argument(
        "--faithfulness",
        action="store_true",
        help="add deletion/insertion AUC, Average Drop, Increase in Confidence, pointing game, energy pointing game",
    )
    g.add_argument("--faithfulness-steps", type=int, default=50, metavar="N", help="deletion/insertion steps (50)")
    g.add_argument(
        "--faithfulness-baseline",
        default="rise",
        choices=("rise", "zero", "blur", "mean"),
        help="removed pixels' baseline; rise (default): zero for deletion, blur for insertion",
    )


def _faithfulness_config(args: argparse.Namespace) -> Any:
    """The :class:`camloc.faithfulness.FaithfulnessConfig` of ``--faithfulness*`` (None without the flag)."""
    if not args.faithfulness:
        return None
    from camloc.faithfulness import FaithfulnessConfig

    b = args.faithfulness_baseline
    d, i = ("zero", "blur") if b == "rise" else (b, b)  # type: tuple[Any, Any]
    chunk = max(1, args.batch_size) * 4
    return FaithfulnessConfig(
        steps=args.faithfulness_steps, deletion_baseline=d, insertion_baseline=i, chunk_size=chunk
    )


def register_cli(sub: Any) -> None:
    """Add the ``evaluate`` sub-command to ``sub`` (an argparse sub-parsers object)."""
    register(sub.add_parser("evaluate", help="localization metrics (top-1/5 loc, GT-known, MaxBoxAcc(V2), PxAP)"))


def _format_name(fmt: str) -> str:
    from camloc.data.annotations import FORMATS

    name = _FORMAT_NAMES.get(fmt, fmt)
    if fmt != "auto" and name not in FORMATS:
        # tolerate the reader's own names too
        name = next((f for f in FORMATS if f.startswith(fmt)), name)
    return name


def cmd_evaluate(args: argparse.Namespace) -> int:
    from camloc._io import JsonlWriter, atomic_write_json, atomic_write_text
    from camloc.cli import load_model_from_args, method_from_args
    from camloc.cli_calibrate import calibration_record, resolve_calibration, select_subset
    from camloc.data.annotations import read_dataset
    from camloc.errors import CamlocError
    from camloc.evaluate import evaluate_samples

    calib = resolve_calibration(args)
    if args.limit is not None and args.limit < 1:
        raise CamlocError(f"`--limit` must be >= 1; got {args.limit}")
    method, margs = method_from_args(args)
    kw: dict[str, Any] = {} if args.split is None else {"split": args.split}
    model: Any = None
    info: Any = None
    if _is_coco(args):  # COCO categories become class indices through the model's class names (or --class-map)
        model, info = load_model_from_args(args)
        kw.update(classes=info.categories, class_map=args.class_map)
    elif getattr(args, "class_map", None) is not None:
        raise CamlocError("`--class-map` must be used with COCO annotations (--format coco)")
    if needs_model_for_classes(args) and model is None:
        model, info = load_model_from_args(args)
    kw.update(reader_classes(args, info))
    ds = read_dataset(args.data, format=_format_name(args.format), **kw)
    samples = list(ds.samples)[: args.limit] if args.limit else list(ds.samples)
    if not samples:
        raise CamlocError(f"`DATA` must hold at least one annotated image; {args.data} has none")
    samples = select_subset(samples, args.subset)
    from camloc import resume as rs
    from camloc.sweep import get_protocol
    from camloc.zoom import zoom_from_args

    out: Path = args.out
    options = rs.run_options(args)
    keys = [f"{s.path}\t{s.class_idx}" for s in samples]
    if args.resume and rs.completed_run(out / "metrics.json", "evaluate", options, keys) is not None:
        print(f"camloc: the evaluation in {out} is complete; nothing to resume", file=sys.stderr)
        return 0
    if model is None:
        model, info = load_model_from_args(args)
    zoom = zoom_from_args(args, model, info, orientation=get_protocol(args.protocol).exif_orientation)
    started = time.time()
    ckpt = rs.EvalCheckpoint(out, options=options, keys=keys, resume=args.resume)
    try:
        with rs.graceful_signals():
            res = evaluate_samples(
                samples, model, info, protocol=args.protocol, threshold=args.threshold, method=method,
                method_args=margs, batch_size=args.batch_size, device=args.device, workers=args.workers,
                progress=not args.quiet, calibration=calib, box_head=args.box_head, zoom=zoom or False,
                faithfulness=_faithfulness_config(args), checkpoint=ckpt,
            )  # fmt: skip
    except KeyboardInterrupt as e:
        return rs.interrupted(e, ckpt.close, out)
    except CamlocError:  # a bad option or data found at the first batch: a fresh run leaves no files
        ckpt.discard_if_unused()
        raise
    except BaseException:
        ckpt.close()
        raise
    doc = {
        "schema_version": SCHEMA_VERSION,
        "tool": "camloc",
        "command": "evaluate",
        "data": str(args.data),
        "format": ds.format,
        "images": res.n_images,
        "images_with_boxes": res.n_box_images,
        "images_with_masks": res.n_mask_images,
        "failed": len(res.failures),
        "failures": res.failures,
        "model": info.name,
        "method": args.method,
        **({"method_args": margs} if margs else {}),
        "protocol": args.protocol,
        "threshold": args.threshold,
        "best_threshold": _num(res.best_threshold),
        "metrics": {k: round(float(v), 6) for k, v in res.metrics.items()},
        "notes": _notes(res),
        "breakdown": _rounded_breakdown(res.breakdown),
        "curve": {
            "thresholds": [round(float(t), 6) for t in res.thresholds],
            "maxboxacc": [_num(v) for v in res.maxboxacc_curve],
            "maxboxacc_v2": {
                f"iou_{int(d * 100)}": [_num(v) for v in res.maxboxacc_v2_curves[:, i]]
                for i, d in enumerate((0.3, 0.5, 0.7))
            },
        },
        "seconds": round(time.time() - started, 2),
        "options": {**options, "inputs": rs.inputs_digest(keys)},
    }
    doc["calibration"] = None if calib is None else calibration_record(calib, args.calibration, samples)
    if calib is not None:
        _calibration_notes(doc)
    if args.box_head is not None:
        from camloc.boxhead import box_head_summary

        doc["box_head"] = box_head_summary(args.box_head)
        doc["notes"].append(doc["box_head"]["note"])
    if zoom is not None:
        doc["zoom"] = zoom.describe()
    if res.faithfulness is not None:
        from camloc.faithfulness import faithfulness_doc

        doc["metrics"].update({k: round(float(v), 6) for k, v in res.faithfulness.metrics.items()})
        doc["faithfulness"] = faithfulness_doc(res.faithfulness)
    if res.pxap_curve is not None:
        doc["pxap_curve"] = {k: [round(float(x), 6) for x in v] for k, v in res.pxap_curve.items()}
    with JsonlWriter(out / "per_image.jsonl") as w:
        for rec in res.per_image:
            w.write(rec)
    atomic_write_text(out / "report.md", _report(doc))
    _plots(res, out)
    _grid(res, out, info)
    atomic_write_json(out / "metrics.json", doc)
    ckpt.finish()
    if args.json:
        print(json.dumps(doc))
    if not args.quiet:
        m = doc["metrics"]
        print(" ".join(f"{k}={v:.4f}" for k, v in m.items()), file=sys.stderr)
        if "box_head" in doc:
            print(f"camloc: localization boxes from the {doc['box_head']['label']}", file=sys.stderr)
    for f in res.failures:
        print(f"camloc: skipped {f['path']}: {f['error']}", file=sys.stderr)
    return 1 if res.failures else 0


def add_classes_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--classes",
        type=Path,
        default=None,
        metavar="LABELS",
        help="class order of the annotations (a labels file: 'wnid name' or one key per line); default: the reader's "
        "own, but the ImageNet-1k wnids for a Tiny-ImageNet folder with an ImageNet-1k classifier",
    )


def _resolved_format(args: argparse.Namespace) -> str:
    from camloc.data.annotations import detect_format

    fmt = _format_name(args.format)
    return detect_format(args.data) if fmt == "auto" else fmt


def is_imagenet_classifier(info: Any) -> bool:
    """True when ``info`` names the 1000 ImageNet-1k classes in the standard order (the zoo's classifiers)."""
    from camloc.models.imagenet import imagenet_categories

    return int(info.num_classes) == 1000 and tuple(info.categories) == imagenet_categories()


def needs_model_for_classes(args: argparse.Namespace) -> bool:
    """Whether the class order of ``DATA`` depends on the model (so load it before reading the annotations)."""
    return getattr(args, "classes", None) is None and _resolved_format(args) == "tiny_imagenet"


def reader_classes(args: argparse.Namespace, info: Any) -> dict[str, Any]:
    """The readers' ``classes=`` option: ``--classes``, or the ImageNet-1k wnids when a Tiny-ImageNet folder is
    read for an ImageNet-1k classifier (its own ``wnids.txt`` order would name the model's first 200 classes:
    every Tiny-ImageNet class is an ImageNet-1k synset)."""
    if getattr(args, "classes", None) is not None:
        return {"classes": str(args.classes)}
    if info is not None and _resolved_format(args) == "tiny_imagenet" and is_imagenet_classifier(info):
        from camloc.models.imagenet import imagenet_wnids

        return {"classes": list(imagenet_wnids())}
    return {}


def _is_coco(args: argparse.Namespace) -> bool:
    return _resolved_format(args) == "coco"


def _calibration_notes(doc: dict[str, Any]) -> None:
    """Say in the notes (and on stderr) which rule made the boxes, and whether calibration images are scored."""
    c = doc["calibration"]
    doc["notes"].append(f"boxes by the calibrated rule of {c['path']}: {c['rule_description']}")
    if c.get("overlap_images"):
        msg = f"{c['overlap_images']} of these images were used for calibration: their numbers are not held-out"
        doc["notes"].append(msg)
        print(f"camloc: warning: {msg}", file=sys.stderr)


def _num(v: float) -> float | None:
    """A rounded float, or None for NaN (no box images: JSON has no NaN)."""
    return None if v != v else round(float(v), 6)


def _notes(res: Any) -> list[str]:
    """What each metric was computed over, when not every image has every kind of ground truth."""
    notes = []
    if res.n_box_images < res.n_images:
        notes.append(
            f"box metrics (top-k/GT-known localization, MaxBoxAcc, MaxBoxAccV2) over the {res.n_box_images} of "
            f"{res.n_images} images with ground-truth boxes; the others have masks only"
        )
    if 0 < res.n_mask_images < res.n_images:
        notes.append(f"PxAP over the {res.n_mask_images} of {res.n_images} images with ground-truth masks")
    return notes


def _rounded_breakdown(b: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if b is None else {k: round(v, 6) if isinstance(v, float) else v for k, v in b.items()}


def _breakdown_lines(b: dict[str, Any] | None) -> list[str]:
    """The report's lines on where GT-known misses come from (images with one GT box against several)."""
    if not b or not b["multi_box_images"]:
        return []

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    share = b["multi_box_share_of_misses"]
    return [
        f"GT-known by instances: {pct(b['gt_known_loc_single_box'])} % of the {b['single_box_images']} images with"
        f" one GT box, {pct(b['gt_known_loc_multi_box'])} % of the {b['multi_box_images']} with several; the box"
        f" matches the union of their boxes (one box around the group) for {pct(b['group_loc_multi_box'])} %."
        + ("" if share is None else f" Multi-box images are {pct(share)} % of the misses."),
        "",
    ]


def _report(doc: dict[str, Any]) -> str:
    m = doc["metrics"]
    names = {
        "top1_cls": "Top-1 classification",
        "top5_cls": "Top-5 classification",
        "top1_loc": "Top-1 localization",
        "top5_loc": "Top-5 localization",
        "gt_known_loc": "GT-known localization",
        "maxboxacc": "MaxBoxAcc (IoU 0.5)",
        "maxboxacc_v2": "MaxBoxAccV2 (IoU 0.3/0.5/0.7)",
        "pxap": "PxAP",
    }
    lines = [
        f"# camloc evaluate: {doc['model']} on {doc['data']}",
        "",
        f"- images: {doc['images']} (failed: {doc['failed']}), format: {doc['format']}",
        f"- method: {doc['method']}, protocol: {doc['protocol']}, fixed threshold: {doc['threshold']}, "
        + (f"best sweep threshold: {doc['best_threshold']:.3f}" if doc["best_threshold"] is not None else "no boxes"),
        *[f"- {n}" for n in doc["notes"]],
        "",
        "| metric | value (%) | error (%) |",
        "|---|---:|---:|",
    ]
    for k, label in names.items():
        if k in m:
            lines.append(f"| {label} | {100 * m[k]:.2f} | {100 * (1 - m[k]):.2f} |")
    lines += ["", "Localization: class right (where it applies) and IoU >= 0.5 with some ground-truth box.", ""]
    lines += _breakdown_lines(doc.get("breakdown"))
    if "faithfulness" in doc:
        from camloc.faithfulness import report_lines

        lines += report_lines(doc["faithfulness"])
    return "\n".join(lines)


def _plots(res: Any, out: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from camloc._io import atomic_write_bytes

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    t = res.thresholds
    if not res.n_box_images:
        ax[0].set_title("no ground-truth boxes")
    elif len(t) > 1:
        ax[0].plot(t, res.maxboxacc_curve, label="box acc (IoU 0.5)")
        for i, d in enumerate((0.3, 0.5, 0.7)):
            ax[0].plot(t, res.maxboxacc_v2_curves[:, i], "--", label=f"any box, IoU {d}")
        ax[0].legend(fontsize=7)
    else:
        ax[0].bar([f"{x:.3f}" for x in t], res.maxboxacc_curve)
    ax[0].set_xlabel("threshold")
    ax[0].set_ylabel("box accuracy")
    ious = [r["iou_gt_known"] for r in res.per_image if r["iou_gt_known"] is not None]
    ax[1].hist(ious, bins=20, range=(0, 1))
    ax[1].axvline(0.5, color="k", lw=1)
    ax[1].set_xlabel("IoU (GT-known box)")
    ax[1].set_ylabel("images")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(out / "plots.png", buf.getvalue())


def _grid(res: Any, out: Path, info: Any, n: int = 8) -> None:
    from camloc._io import atomic_save_png
    from camloc.data.images import load_image
    from camloc.viz import draw_boxes, image_grid

    recs = sorted((r for r in res.per_image if r["iou_gt_known"] is not None), key=lambda r: r["iou_gt_known"])
    picks = recs[-n:][::-1] + recs[:n] if len(recs) > n else recs[::-1]
    tiles, caps = [], []
    for r in picks:
        loaded = load_image(r["path"], working_max_side=320)
        sx, sy = loaded.size[0] / loaded.original_size[0], loaded.size[1] / loaded.original_size[1]
        s = np.array([sx, sy, sx, sy])
        img = np.asarray(loaded.image)
        gt = np.asarray(r["gt_boxes"], np.float64).reshape(-1, 4) * s
        img = draw_boxes(img, gt, colors=(0, 200, 0))
        img = draw_boxes(img, (np.asarray(r["box_gt_known"]) * s)[None], colors=(230, 0, 0))
        tiles.append(img)
        caps.append(f"IoU {r['iou_gt_known']:.2f}")
    if tiles:
        atomic_save_png(out / "grid.png", image_grid(tiles, ncols=min(8, len(tiles)), captions=caps, max_side=200))
