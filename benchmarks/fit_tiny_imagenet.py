"""`camloc fit` on a Tiny-ImageNet-layout folder: fit on train, evaluate on val (top-1, GT-known loc, times).

    python benchmarks/fit_tiny_imagenet.py ../shared/data/tiny-imagenet-10 --model lite0 --out /tmp/fit_bench

Prints one JSON line: top-1 (the fit's test accuracy and `evaluate`'s), GT-known localization at the paper's
threshold (0.2) and at the best threshold (MaxBoxAcc), fit and feature-extraction times and throughput.
A second run re-uses the feature cache under OUT (extraction time 0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _subset(data: Path, out: Path, per_class: int) -> Path:
    """A Tiny-ImageNet layout under ``out`` with the first ``per_class`` training images of each class (symlinks)."""
    root = out / f"subset{per_class}"
    if root.exists():
        return root
    (root / "train").mkdir(parents=True)
    for name in ("wnids.txt", "words.txt", "val"):
        if (data / name).exists():
            (root / name).symlink_to((data / name).resolve())
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
    args = ap.parse_args()
    data = args.data if args.train_per_class is None else _subset(args.data, args.out, args.train_per_class)

    from camloc.checkpoint import load_checkpoint
    from camloc.data.annotations import read_dataset
    from camloc.evaluate import evaluate_samples
    from camloc.fit import fit_linear_head

    t0 = time.perf_counter()
    res = fit_linear_head(
        data, model=args.model, out=args.out / args.model, classifier=args.classifier, flip=args.flip,
        batch_size=args.batch_size, device=args.device, workers=args.workers, progress=True,
    )  # fmt: skip
    fit_wall = time.perf_counter() - t0
    model, info = load_checkpoint(res.checkpoint)
    model = model.to(args.device)
    ds = read_dataset(args.data, format="tiny_imagenet", split="val")
    t1 = time.perf_counter()
    ev = evaluate_samples(
        list(ds.samples), model, info, protocol="paper", threshold=0.2, batch_size=args.batch_size,
        device=args.device, workers=args.workers, progress=True,
    )  # fmt: skip
    rep = res.report
    print(
        json.dumps(
            {
                "model": args.model,
                "train_images": rep["train_images"],
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


if __name__ == "__main__":
    main()
