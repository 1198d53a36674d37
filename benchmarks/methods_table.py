"""Every map method side by side on one annotated folder: localization metrics and time per image relative to cam.

    PYTHONPATH=src python benchmarks/methods_table.py /work/shared/data/imagenet-val100 --model lite0
    PYTHONPATH=src python benchmarks/methods_table.py DATA --configs cam,flip,pca --limit 20
    PYTHONPATH=src python benchmarks/methods_table.py /work/shared/data/tiny-imagenet-10 \
        --classes /work/shared/data/imagenet-val100/synset_words.txt   # Tiny-ImageNet wnids -> ImageNet-1k indices

Metrics are ``camloc.evaluate.evaluate_samples`` (paper protocol: top-1 cls; top-1 loc and GT-known loc at the
fixed threshold 0.2 of each map's max, largest component; MaxBoxAcc and MaxBoxAccV2 over the threshold sweep)
for every configuration on the same images. Time: the producer's own work (forward + maps of the top-1 and true
classes, batch ``--time-batch``) measured on one fixed batch, all configurations interleaved round after round
(the median over ``--rounds`` rounds), so load from other processes hits them alike; decoding and metric code
are excluded. ``x cam`` is that time over cam's. Slow configurations (``scorecam``) are evaluated on the first
``--slow-limit`` images only; their rows say so. Prints a markdown table (and writes JSON with ``--out``).

``--calibrate N``: the same single pass per configuration also runs ``camloc calibrate --holdout N``
(``camloc.calibrate.calibrate_samples``): every image is scored by a box rule chosen on the other folds (images
``index % N``), and the table gains the held-out top-1 loc / GT-known of that auto-chosen rule and the ceiling
(the best threshold of each image, boxes known). ``--breakdown`` adds GT-known on single- / multi-box images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from camloc.methods.registry import format_method_value, parse_method_args, split_args

#: label -> (method, args): the default configurations, in table order.
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "cam": ("cam", {}),
    "backprop": ("backprop", {}),
    "flip": ("flip", {}),
    "multiscale": ("multiscale", {}),
    "multiscale+flip": ("multiscale", {"flip": True}),
    "hires": ("hires", {}),
    "dilate": ("dilate", {}),
    "pca": ("pca", {}),
    "ddt": ("ddt", {}),
    "cam+pca": ("cam+pca", {}),
    "cam+pca mean": ("cam+pca", {"combine": "mean"}),
    "flip cam+pca": ("flip", {"base": "cam+pca"}),
    "ensemble": ("ensemble", {}),
    "ensemble cam+pca": ("ensemble", {"base": "cam+pca"}),
    "gradcam": ("gradcam", {}),
    "gradcam++": ("gradcam++", {}),
    "layercam": ("layercam", {}),
    "eigencam": ("eigencam", {}),
    "scorecam": ("scorecam", {}),
    "affinity": ("affinity", {}),
    "affinity blocks.3": ("affinity", {"layer": "blocks.3"}),  # the Lite models' first stride-16 stage
    "multiscale 1-2x": ("multiscale", {"scales": (1.0, 1.5, 2.0), "norm": "max", "logits": "input"}),
    "best": ("best", {}),
}
SLOW = {"scorecam"}
COLUMNS = (("top1_cls", "top-1 cls"), ("top1_loc", "top-1 loc"), ("gt_known_loc", "GT-known"),
           ("maxboxacc", "MaxBoxAcc"), ("maxboxacc_v2", "MaxBoxAccV2"))  # fmt: skip


def _parse_config(text: str) -> tuple[str, tuple[str, dict[str, Any]]]:
    """``LABEL=METHOD[:k=v;k=v]`` or a default label."""
    if "=" not in text.split(":")[0]:
        if text not in CONFIGS:
            raise SystemExit(f"unknown configuration {text!r}; defaults: {', '.join(CONFIGS)}")
        return text, CONFIGS[text]
    label, _, rest = text.partition("=")
    name, _, argtext = rest.partition(":")
    args = parse_method_args(split_args(argtext), option="--config")
    return label, (name, args)


def _args_text(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_method_value(v)}" for k, v in args.items()) or "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--format", default="auto")
    ap.add_argument("--classes", default=None, help="class list for the reader (tiny_imagenet: ImageNet wnids)")
    ap.add_argument("--model", default="lite0")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated labels or LABEL=METHOD:k=v;k=v")
    ap.add_argument("--config", action="append", default=[], help="one more LABEL=METHOD:k=v;k=v (repeatable)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--slow-limit", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--time-batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--calibrate", type=int, default=0, metavar="N", help="also held-out calibration over N folds")
    ap.add_argument("--breakdown", action="store_true", help="also GT-known on single- / multi-box images")
    a = ap.parse_args(argv)

    from camloc.calibrate import calibrate_samples
    from camloc.data.annotations import read_dataset
    from camloc.evaluate import _pipeline, evaluate_samples
    from camloc.methods import get_method
    from camloc.models.registry import create_model
    from camloc.sweep import get_protocol

    kw: dict[str, Any] = {} if a.classes is None else {"classes": a.classes}
    samples = list(read_dataset(a.data, format=a.format, **kw).samples)
    samples = samples[: a.limit] if a.limit else samples
    model, info = create_model(a.model)
    model = model.eval().to(memory_format=torch.channels_last)
    configs = dict(_parse_config(t) for t in [*a.configs.split(","), *a.config] if t)
    producers = {label: get_method(name, model, info, **args) for label, (name, args) in configs.items()}

    # timing: one fixed batch, every configuration interleaved, median over rounds
    pipe = _pipeline(info.preprocess, get_protocol("paper"))
    tb = samples[: a.time_batch]
    x = torch.stack([pipe(s.path).tensor for s in tb])
    true = torch.tensor([s.class_idx for s in tb])
    times: dict[str, list[float]] = {k: [] for k in producers}
    for r in range(a.rounds + 1):  # round 0 warms up (identity checks, lazy imports, allocator)
        for label, p in producers.items():
            if label in SLOW and r > 1:
                continue
            n = 1 if label in SLOW else len(x)
            t0 = time.perf_counter()
            p(x[:n], classes=lambda lg, t=true[:n]: torch.stack([lg.argmax(1), t.to(lg.device)], 1))
            if r:
                times[label].append((time.perf_counter() - t0) / n)
    per_image = {k: statistics.median(v) for k, v in times.items()}

    rows = []
    for label, p in producers.items():
        subset = samples[: a.slow_limit] if label in SLOW else samples
        t0 = time.perf_counter()
        held: dict[str, Any] = {}
        if a.calibrate:
            calib, res = calibrate_samples(subset, model, info, method=p, holdout_folds=a.calibrate,
                                           batch_size=a.batch_size, workers=0)  # fmt: skip
            ho = calib.holdout or {}
            held = {"auto": ho.get("auto"), "chosen": [c["candidate"] for c in ho.get("chosen", [])],
                    "ceiling": (ho.get("oracle") or {}).get("largest")}  # fmt: skip
        else:
            res = evaluate_samples(subset, model, info, method=p, batch_size=a.batch_size, workers=0)
        print(f"{label}: {time.perf_counter() - t0:.1f}s {res.metrics} {held}", file=sys.stderr, flush=True)
        name, args = configs[label]
        rows.append({"label": label, "method": name, "args": args, "images": res.n_box_images,
                     "metrics": res.metrics, "seconds_per_image": per_image[label], "holdout": held,
                     "breakdown": res.breakdown})  # fmt: skip

    cam_t = per_image.get("cam")
    print(f"\n{a.model} on {a.data} ({len(samples)} images; paper protocol, fixed threshold 0.2)\n")
    extra = []
    if a.calibrate:
        extra += [f"held-out calibrated ({a.calibrate} folds) top-1 loc / GT-known", "ceiling"]
    if a.breakdown:
        extra += ["GT-known 1 box / several"]
    head = "| method | args | images | " + " | ".join([c for _, c in COLUMNS] + extra) + " | ms / image | x cam |"
    print(head)
    print("|" + "---|" * 3 + "---:|" * (len(COLUMNS) + len(extra) + 2))
    for row in rows:
        m = row["metrics"]
        vals = [f"{100 * m[k]:.1f}" if k in m else "-" for k, _ in COLUMNS]
        if a.calibrate:
            auto, ceil = row["holdout"].get("auto"), row["holdout"].get("ceiling")
            vals.append("-" if not auto else f"{100 * auto['top1_loc']:.1f} / {100 * auto['gt_known_loc']:.1f}")
            vals.append("-" if ceil is None else f"{100 * ceil:.1f}")
        if a.breakdown:
            b = row["breakdown"] or {}
            one, many = b.get("gt_known_loc_single_box"), b.get("gt_known_loc_multi_box")
            vals.append(" / ".join("-" if v is None else f"{100 * v:.1f}" for v in (one, many)))
        t = row["seconds_per_image"]
        ratio = f"{t / cam_t:.2f}" if cam_t else "-"
        print(f"| {row['label']} | {_args_text(row['args'])} | {row['images']} | {' | '.join(vals)} "
              f"| {1000 * t:.0f} | {ratio} |")  # fmt: skip
    if a.out is not None:
        a.out.write_text(json.dumps({"model": a.model, "data": str(a.data), "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
