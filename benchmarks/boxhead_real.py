"""Learned box head on real photos: pseudo supervision on unlabelled images, few-shot boxes on half / other half.

Usage (paths to the development data; nothing here is part of the test suite)::

    python benchmarks/boxhead_real.py --val /work/shared/data/imagenet-val100 \
        --unlabelled /work/shared/data/imagenet-sample1000/images --cache /work/runs/boxhead/cache \
        --work /work/runs/boxhead [--tiny TINY_SUBSET.csv | --tiny DIR --tiny-split train]

Runs, with one model (default lite0), and prints one table, every row labelled with its supervision:

- ``cam``: the paper rule (threshold 0.2), all images and each half;
- ``pseudo``: a head trained on the CAM boxes (paper rule) of the top-1 class on the unlabelled images,
  evaluated on every val image (no val image, label or box is used for training);
- ``boxes A->B`` / ``boxes B->A``: a head trained on the GT boxes of one half of the val set (first / last 50
  images in file order), evaluated on the other half; hyper-parameters chosen by 5-fold cross-validation WITHIN
  the training half (``--select``), never on the evaluated half;
- ``tiny-boxes`` (``--tiny``): a head trained on Tiny-ImageNet-10 train boxes, evaluated on every val image.

Evaluation is ``camloc.evaluate.evaluate_samples`` (paper protocol) with ``box_head=``, i.e. what
``camloc evaluate DATA --box-head FILE`` computes.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camloc.boxhead import (
    HeadConfig,
    _box_iou_pairs,
    extract_box_features,
    normalized_to_pixels,
    pixels_to_normalized,
    train_box_head,
    train_box_regressor,
)
from camloc.data.annotations import read_dataset
from camloc.evaluate import evaluate_samples
from camloc.models.registry import create_model

CANDIDATES = {
    "default": HeadConfig(),
    "cam_input": HeadConfig(cam_input=True),
    "small": HeadConfig(width=16, hidden=64, dropout=0.5),
    "small_cam": HeadConfig(width=16, hidden=64, dropout=0.5, cam_input=True),
}


def _halves(val: Path, work: Path) -> tuple[Path, Path]:
    with open(val / "boxes.csv") as fh:
        rows = list(csv.DictReader(fh))
    files: list[str] = []
    for r in rows:
        if r["file"] not in files:
            files.append(r["file"])
    out = []
    for name, keep in (("A", set(files[: len(files) // 2])), ("B", set(files[len(files) // 2 :]))):
        p = work / "halves" / f"val_{name}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "class_idx", "x0", "y0", "x1", "y1"])
            for r in rows:
                if r["file"] in keep:
                    w.writerow([str(val / r["file"]), r["class_idx"], r["x0"], r["y0"], r["x1"], r["y1"]])
        out.append(p)
    return out[0], out[1]


def _cv_select(model: Any, info: Any, data: Path, cache: Path, folds: int = 5) -> tuple[str, dict[str, float]]:
    """Choose a candidate config by k-fold CV over the IMAGES of ``data`` (its two views stay together)."""
    ds = read_dataset(data)
    samples = [s for s in ds.samples if s.num_boxes]
    bf = extract_box_features(
        model, info, [s.path for s in samples], boxes=[s.boxes for s in samples], cache_dir=cache, workers=0
    )
    n = len(samples)
    rng = np.random.default_rng(0)
    fold_of = rng.permutation(n) % folds
    gts = [np.asarray(s.boxes, np.float64) for s in samples]
    scores = {}
    for name, cfg in CANDIDATES.items():
        hits = 0
        for k in range(folds):
            tr = [i for i in range(n) if fold_of[i] != k]
            te = [i for i in range(n) if fold_of[i] == k]
            a, b = bf.select(tr), bf.select(te)
            reg, _ = train_box_regressor(
                a.features, pixels_to_normalized(a.gt, a.input_size), cams=a.cams if cfg.cam_input else None, config=cfg
            )
            plain = torch.nonzero(torch.tensor([True] * len(te) + [False] * (len(b.image) - len(te)))).flatten()
            with torch.no_grad():
                from camloc.boxhead import _cam_channel

                cam = _cam_channel(b.cams[plain]) if cfg.cam_input else None
                pred = normalized_to_pixels(reg(b.features[plain], cam), b.input_size)
            for j, i in enumerate(te):  # IoU with ANY GT box of the image (the metric's definition)
                g = torch.tensor(_to_network(gts[i], samples[i].path, info), dtype=torch.float32)
                hits += int(float(_box_iou_pairs(pred[j : j + 1].expand(len(g), 4), g).max()) >= 0.5)
        scores[name] = hits / n
    best = max(scores, key=lambda k: scores[k])
    return best, scores


def _to_network(boxes: np.ndarray, path: Path, info: Any) -> np.ndarray:
    from camloc.pipeline import ImagePipeline

    g = ImagePipeline(info.preprocess).decode(path)
    geom = ImagePipeline(info.preprocess).geometry(
        g.original_size, working_size=g.image.size, orientation=g.orientation
    )
    return geom.map_boxes(boxes, "stored", "network", clip=False)


def _eval(samples: list, model: Any, info: Any, head: Any) -> tuple[dict[str, float], list[dict[str, Any]]]:
    res = evaluate_samples(samples, model, info, box_head=head, workers=0, batch_size=25)
    return res.metrics, res.per_image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--unlabelled", type=Path, default=None)
    ap.add_argument("--tiny", type=Path, default=None)
    ap.add_argument("--tiny-limit", type=int, default=None)
    ap.add_argument("--tiny-split", default=None, help="e.g. train for the Tiny-ImageNet folder")
    ap.add_argument("--model", default="lite0")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--select", action="store_true", help="choose the boxes head's config by CV in the train half")
    ap.add_argument("--only", default="cam,pseudo,boxes,tiny")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: best on a shared CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, info = create_model(args.model)
    only = set(args.only.split(","))
    val = list(read_dataset(args.val).samples)
    a_csv, b_csv = _halves(args.val, args.work)
    a = list(read_dataset(a_csv).samples)
    b = list(read_dataset(b_csv).samples)
    rows: list[dict[str, Any]] = []

    def row(name: str, supervision: str, m: dict[str, float], n: int, seconds: float | None, extra: str = "") -> None:
        r = {
            "run": name,
            "supervision": supervision,
            "images": n,
            "top1_cls": m["top1_cls"],
            "gt_known_loc": m["gt_known_loc"],
            "top1_loc": m["top1_loc"],
            "train_seconds": seconds,
            "note": extra,
        }
        rows.append(r)
        print(json.dumps(r), flush=True)

    if "cam" in only:
        m, per = _eval(val, model, info, None)
        row("cam (paper rule 0.2)", "none (CAM)", m, len(val), None)
        for name, part in (("A", a), ("B", b)):
            keep = {str(s.path) for s in part}
            recs = [r for r in per if r["path"] in keep]
            mm = {
                "top1_cls": np.mean([r["top1_class"] == r["true_class"] for r in recs]),
                "gt_known_loc": np.mean([r["gt_known_loc"] for r in recs]),
                "top1_loc": np.mean([r["top1_loc"] for r in recs]),
            }
            row(f"cam on half {name}", "none (CAM)", mm, len(recs), None)
    if "pseudo" in only and args.unlabelled is not None:
        for t in (0.2,):
            t0 = time.perf_counter()
            res = train_box_head(
                args.unlabelled,
                supervision="pseudo",
                model=model,
                info=info,
                threshold=t,
                out=args.work / f"pseudo_t{t}.pt",
                cache_dir=args.cache,
                workers=0,
            )
            sec = time.perf_counter() - t0
            m, _ = _eval(val, model, info, res.head)
            tr = res.report["training"]
            row(
                f"pseudo t={t}",
                res.head.label,
                m,
                len(val),
                sec,
                f"{tr['images']} images, features {tr['extract_seconds']:.0f} s, fit {tr['fit_seconds']:.0f} s",
            )
    if "pseudo-cal" in only and args.unlabelled is not None:
        # pseudo targets whose threshold is the CAM's best MaxBoxAcc threshold on one half's boxes; scored on the other
        for name, cal, test in (("A->B", a, b), ("B->A", b, a)):
            t = round(float(evaluate_samples(cal, model, info, workers=0, batch_size=25).best_threshold), 2)
            t0 = time.perf_counter()
            res = train_box_head(
                args.unlabelled,
                supervision="pseudo",
                model=model,
                info=info,
                threshold=t,
                out=args.work / f"pseudo_cal_{name[0]}.pt",
                cache_dir=args.cache,
                workers=0,
            )
            sec = time.perf_counter() - t0
            m, _ = _eval(test, model, info, res.head)
            row(f"pseudo, threshold {t} from half {name[0]}'s boxes, {name}", res.head.label, m, len(test), sec)
    if "boxes" in only:
        for name, train_csv, test in (("A->B", a_csv, b), ("B->A", b_csv, a)):
            chosen, scores = "default", {}
            if args.select:
                chosen, scores = _cv_select(model, info, train_csv, args.cache)
            t0 = time.perf_counter()
            res = train_box_head(
                train_csv,
                supervision="boxes",
                model=model,
                info=info,
                config=CANDIDATES[chosen],
                out=args.work / f"boxes_{name[0]}.pt",
                cache_dir=args.cache,
                workers=0,
            )
            sec = time.perf_counter() - t0
            m, _ = _eval(test, model, info, res.head)
            row(f"boxes {name}", res.head.label, m, len(test), sec, f"config {chosen}, CV {scores}")
    if "tiny" in only and args.tiny is not None:
        t0 = time.perf_counter()
        res = train_box_head(
            args.tiny, supervision="boxes", model=model, info=info, split=args.tiny_split, limit=args.tiny_limit,
            flip=False, out=args.work / "boxes_tiny.pt", cache_dir=args.cache, workers=0,
        )  # fmt: skip
        sec = time.perf_counter() - t0
        m, _ = _eval(val, model, info, res.head)
        row("tiny-imagenet-10 boxes", res.head.label, m, len(val), sec)
    (args.work / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
