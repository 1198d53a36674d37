"""`camloc fit` on a Tiny-ImageNet-layout folder: fit on train, evaluate on val (top-1, GT-known loc, times).

    python benchmarks/fit_tiny_imagenet.py ../shared/data/tiny-imagenet-10 --model lite0 --out /tmp/fit_bench
    python benchmarks/fit_tiny_imagenet.py DATA --model lite0 --zoom --train-per-class 100   # + localize-then-classify
    python benchmarks/fit_tiny_imagenet.py DATA --centred-box                                # the baseline only
    python benchmarks/fit_tiny_imagenet.py DATA --scratch-epochs 6                           # `camloc train` instead

Prints one JSON line: top-1 (the fit's test accuracy and `evaluate`'s), GT-known localization at the paper's
threshold (0.2) and at the best threshold (MaxBoxAcc), fit and feature-extraction times and throughput.
A second run re-uses the feature cache under OUT (extraction time 0). ``--zoom`` fits with ``zoom=True`` and
evaluates with and without ``--zoom`` (the fit report also has the whole-image head's test accuracy).
``--centred-box``: the best fixed centred box (side ``a * (w, h)``, ``a`` in 0.05, 0.10, ..., 1.0) on the val
boxes, i.e. GT-known localization without looking at the image. ``--scratch-epochs N``: ``camloc train`` a
``tiny_gap`` from scratch on the same training split (64 x 64, AdamW lr 0.002, batch 64), then the same
evaluation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _subset(
    data: Path, out: Path, per_class: int | None, val_per_class: int | None = None, with_val: bool = True
) -> Path:
    """A Tiny-ImageNet layout under ``out`` (symlinks): the first ``per_class`` training images of each class (all
    with ``None``), and the val split whole, its first ``val_per_class`` images per class, or none."""
    tag = f"subset{per_class}" + (f"-val{val_per_class}" if val_per_class else "") + ("" if with_val else "-noval")
    root = out / tag
    if root.exists():
        return root
    (root / "train").mkdir(parents=True)
    for name in ("wnids.txt", "words.txt"):
        if (data / name).exists():
            (root / name).symlink_to((data / name).resolve())
    if with_val and val_per_class is None:
        (root / "val").symlink_to((data / "val").resolve())
    elif with_val:
        (root / "val" / "images").mkdir(parents=True)
        kept, seen = [], {}
        for line in (data / "val" / "val_annotations.txt").read_text().splitlines():
            f, wnid = line.split("\t")[:2]
            if line.strip() and seen.get(wnid, 0) < val_per_class:
                seen[wnid] = seen.get(wnid, 0) + 1
                kept.append(line)
                (root / "val" / "images" / f).symlink_to((data / "val" / "images" / f).resolve())
        (root / "val" / "val_annotations.txt").write_text("\n".join(kept) + "\n")
    for wnid in (data / "wnids.txt").read_text().split():
        src = data / "train" / wnid / "images"
        dst = root / "train" / wnid / "images"
        dst.mkdir(parents=True)
        for p in sorted(src.iterdir())[:per_class]:
            (dst / p.name).symlink_to(p.resolve())
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default="lite0")
    ap.add_argument("--out", type=Path, default=Path("/tmp/camloc_fit_bench"))
    ap.add_argument("--classifier", default="logreg", choices=("logreg", "svm"))
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--train-per-class", type=int, default=None, help="fit on the first N images of each class")
    ap.add_argument("--val-per-class", type=int, default=None, help="evaluate on the first N val images per class")
    ap.add_argument("--no-fit-test", action="store_true", help="the fit sees no val split (evaluate still runs)")
    ap.add_argument("--zoom", action="store_true", help="fit with zoom; evaluate with and without it")
    ap.add_argument("--centred-box", action="store_true", help="print the best centred box's GT-known loc only")
    ap.add_argument("--scratch-epochs", type=int, default=None, help="camloc train tiny_gap for N epochs instead")
    args = ap.parse_args()
    if args.centred_box:
        print(json.dumps(centred_box(args.data)))
        return
    subset = args.train_per_class is not None or args.val_per_class is not None or args.no_fit_test
    data = args.data
    if subset:
        data = _subset(args.data, args.out, args.train_per_class, args.val_per_class, not args.no_fit_test)
    val_root = _subset(args.data, args.out, 1, args.val_per_class) if args.val_per_class else args.data
    if args.scratch_epochs is not None:
        print(json.dumps(scratch(args, data)))
        return

    from camloc.checkpoint import load_checkpoint
    from camloc.data.annotations import read_dataset
    from camloc.evaluate import evaluate_samples
    from camloc.fit import fit_linear_head

    t0 = time.perf_counter()
    run = args.out / (args.model + ("-zoom" if args.zoom else ""))
    res = fit_linear_head(
        data, model=args.model, out=run, classifier=args.classifier, flip=args.flip,
        batch_size=args.batch_size, device=args.device, workers=args.workers, progress=True, zoom=args.zoom,
        cache_dir=args.out / args.model / "cache",
    )  # fmt: skip
    fit_wall = time.perf_counter() - t0
    model, info = load_checkpoint(res.checkpoint)
    model = model.to(args.device)
    ds = read_dataset(val_root, format="tiny_imagenet", split="val")
    t1 = time.perf_counter()
    ev = evaluate_samples(
        list(ds.samples), model, info, protocol="paper", threshold=0.2, batch_size=args.batch_size,
        device=args.device, workers=args.workers, progress=True,
    )  # fmt: skip
    rep = res.report
    zoomed = {}
    if args.zoom:
        t2 = time.perf_counter()
        evz = evaluate_samples(
            list(ds.samples), model, info, protocol="paper", threshold=0.2, batch_size=args.batch_size,
            device=args.device, workers=args.workers, progress=True, zoom=True,
        )  # fmt: skip
        zoomed = {
            "zoom_eval_top1": round(evz.metrics["top1_cls"], 4),
            "zoom_stage1_test_top1_whole_image": rep["zoom"]["stage1"].get("test_accuracy_whole_image"),
            "zoom_evaluate_s": round(time.perf_counter() - t2, 1),
        }
    print(
        json.dumps(
            {
                "model": args.model,
                **zoomed,
                "train_images": rep["train_images"],
                "val_images": len(ds.samples),
                "classifier": args.classifier,
                "flip": args.flip,
                "C": rep["C"],
                "holdout_top1": rep["holdout"]["accuracy"],
                "fit_test_top1": rep.get("test", {}).get("accuracy"),
                "eval_top1": round(ev.metrics["top1_cls"], 4),
                "gt_known_loc_0.2": round(ev.metrics.get("gt_known_loc", float("nan")), 4),
                "maxboxacc": round(ev.metrics.get("maxboxacc", float("nan")), 4),
                "best_threshold": ev.best_threshold,
                "fit_wall_s": round(fit_wall, 1),
                "classifier_fit_s": rep["fit_seconds"],
                "features": rep["features"],
                "evaluate_s": round(time.perf_counter() - t1, 1),
            }
        )
    )


def centred_box(data: Path) -> dict[str, float]:
    """Best fixed centred box on the val split: GT-known localization (IoU >= 0.5) without the image."""
    import numpy as np
    from PIL import Image

    from camloc.data.annotations import read_dataset
    from camloc.sweep import box_iou

    samples = list(read_dataset(data, format="tiny_imagenet", split="val").samples)
    sizes = []
    for s in samples:
        with Image.open(s.path) as im:
            sizes.append(im.size)
    best = (0.0, 0.0)
    for a in np.round(np.arange(0.05, 1.0001, 0.05), 2):
        hits = 0
        for (w, h), s in zip(sizes, samples):
            box = np.array([[(1 - a) * w / 2, (1 - a) * h / 2, (1 + a) * w / 2, (1 + a) * h / 2]])
            hits += bool(box_iou(box, np.asarray(s.boxes, np.float64).reshape(-1, 4)).max() >= 0.5)
        best = max(best, (hits / len(samples), float(a)))
    return {"centred_box_gt_known": round(best[0], 4), "scale": best[1], "images": len(samples)}


def scratch(args: argparse.Namespace, data: Path) -> dict[str, object]:
    """``camloc train`` a tiny_gap from scratch on the training split, then the same evaluation as the fit."""
    from camloc.checkpoint import load_checkpoint
    from camloc.data.annotations import read_dataset
    from camloc.evaluate import evaluate_samples
    from camloc.train import TrainConfig, train

    data = _subset(args.data, args.out, args.train_per_class, None, with_val=False)  # choose best.pt without val
    out = args.out / f"scratch-tiny_gap-{args.scratch_epochs}"
    cfg = TrainConfig(
        data=data, arch="tiny_gap", epochs=args.scratch_epochs, batch_size=64, lr=0.002, optimizer="adamw",
        out_dir=out, device=args.device, workers=args.workers, val_fraction=0.1,
    )  # fmt: skip
    t0 = time.perf_counter()
    train(cfg)
    train_s = time.perf_counter() - t0
    model, info = load_checkpoint(out / "best.pt")
    model = model.to(args.device).eval()
    ds = read_dataset(args.data, format="tiny_imagenet", split="val")
    ev = evaluate_samples(
        list(ds.samples), model, info, protocol="paper", threshold=0.2, batch_size=args.batch_size,
        device=args.device, workers=args.workers, progress=True,
    )  # fmt: skip
    return {
        "model": "tiny_gap (camloc train, from scratch)",
        "epochs": args.scratch_epochs,
        "settings": "AdamW lr 0.002, batch 64, 64x64 input, best.pt by held-out accuracy (10 % of train)",
        "eval_top1": round(ev.metrics["top1_cls"], 4),
        "gt_known_loc_0.2": round(ev.metrics.get("gt_known_loc", float("nan")), 4),
        "maxboxacc": round(ev.metrics.get("maxboxacc", float("nan")), 4),
        "best_threshold": ev.best_threshold,
        "train_s": round(train_s, 1),
    }


if __name__ == "__main__":
    main()
