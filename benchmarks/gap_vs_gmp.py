"""GAP vs GMP heads on the same trunk and budget: classification and GT-known localization (paper rule).

For each dataset, trains ``<family>_gap`` and ``<family>_gmp`` (default family ``tiny``: 5 conv-BN-ReLU
layers + the added 3x3 conv, from scratch) with identical settings, then evaluates on the validation split:

- top-1 classification;
- top-1 localization (right class and IoU >= 0.5) and GT-known localization (box from the true class's CAM),
  with the paper's rule: CAM ``M_c = sum_k w_ck f_k`` upsampled (bilinear) to the image, divided by its max,
  >= 0.2, largest 8-connected component, its box (camloc.localization.localize; camloc.metrics);
- the best fixed centred box: the centred box of the relative scale (grid 0.05..1.0) that maximizes accuracy.

Datasets: the synthetic set (generated under ``--work`` if absent) and, with ``--tiny-imagenet PATH``, a
Tiny-ImageNet-layout folder (e.g. ``../shared/data/tiny-imagenet-10``; boxes from ``val/val_annotations.txt``).

    python benchmarks/gap_vs_gmp.py --tiny-imagenet ../shared/data/tiny-imagenet-10
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from camloc.data.synthetic import make_synthetic_dataset
from camloc.localization import localize
from camloc.metrics import box_iou, localization_accuracy
from camloc.train import TrainConfig, load_checkpoint, train


def synthetic_val(root: Path) -> list[tuple[Path, int, np.ndarray]]:
    with open(root / "val" / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, tuple[Path, int, list]] = {}
    for r in rows:
        p = root / "val" / r["file"]
        out.setdefault(r["file"], (p, int(r["class_idx"]), []))[2].append(
            [float(r[k]) for k in ("x0", "y0", "x1", "y1")]
        )
    return [(p, c, np.asarray(b, np.float32)) for p, c, b in out.values()]


def tiny_imagenet_val(root: Path) -> list[tuple[Path, int, np.ndarray]]:
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().splitlines() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    out = []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        if line.strip():
            f, w, *box = line.split("\t")
            out.append((root / "val" / "images" / f, index[w], np.asarray([[float(v) for v in box]], np.float32)))
    return out


@torch.no_grad()
def evaluate(ckpt: Path, items: list[tuple[Path, int, np.ndarray]], batch: int = 100) -> dict[str, float]:
    from PIL import Image

    model, info = load_checkpoint(ckpt)
    size = info.preprocess.size
    mean = np.asarray(info.preprocess.mean, np.float32)
    std = np.asarray(info.preprocess.std, np.float32)
    w_fc = model.get_classifier().weight
    pred_cls, pred_boxes, gt_known, true, gts, sizes = [], [], [], [], [], []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        xs, whs = [], []
        for p, _, _ in chunk:
            with Image.open(p) as im:
                img = im.convert("RGB")
                whs.append(img.size)
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            xs.append(((np.asarray(img, np.float32) / 255 - mean) / std).transpose(2, 0, 1))
        x = torch.from_numpy(np.stack(xs))
        f = model.forward_features(x)
        logits = model.forward_head(f)
        top1 = logits.argmax(1)
        labels = torch.tensor([c for _, c, _ in chunk])
        cams = torch.einsum("nck,nkhw->nchw", w_fc[torch.stack([top1, labels], 1)], f)  # [N, 2, h, w], no ReLU
        boxes = localize(cams, threshold=0.2, size=size, image_sizes=whs).boxes  # in original image pixels
        pred_cls.append(top1[:, None].numpy())
        pred_boxes.append(boxes[:, :1].numpy())
        gt_known.append(boxes[:, 1].numpy())
        true.append(labels.numpy())
        gts += [b for _, _, b in chunk]
        sizes += whs
    res = localization_accuracy(
        np.concatenate(pred_cls),
        np.concatenate(pred_boxes),
        np.concatenate(true),
        gts,
        gt_known_boxes=np.concatenate(gt_known),
        topk=(1,),
    )
    return {"top1": res.cls_acc[1], "top1_loc": res.loc_acc[1], "gt_known": float(res.gt_known_loc)}


def centred_baseline(items: list[tuple[Path, int, np.ndarray]]) -> tuple[float, float]:
    """(best accuracy, its relative scale) of a fixed centred box of side ``scale * (w, h)``."""
    from PIL import Image

    whs = []
    for p, _, _ in items:
        with Image.open(p) as im:
            whs.append(im.size)
    best = (0.0, 0.0)
    for a in np.linspace(0.05, 1.0, 20):
        hits = 0
        for (w, h), (_, _, gt) in zip(whs, items):
            box = np.array([[(1 - a) * w / 2, (1 - a) * h / 2, (1 + a) * w / 2, (1 + a) * h / 2]], np.float32)
            hits += bool(box_iou(box, gt).max() >= 0.5)
        best = max(best, (hits / len(items), float(a)))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("out/gap_vs_gmp"), help="datasets and checkpoints")
    ap.add_argument("--tiny-imagenet", type=Path, help="Tiny-ImageNet-layout folder (optional)")
    ap.add_argument("--family", default="tiny", help="tiny | alexnet | vgg16 | googlenet (from scratch)")
    ap.add_argument("--syn-epochs", type=int, default=12)
    ap.add_argument("--tin-epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for tiny nets)")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    syn = args.work / "synthetic"
    if not (syn / "val" / "labels.csv").is_file():
        make_synthetic_dataset(syn, num_classes=4, train_per_class=150, val_per_class=40, seed=0)
    datasets = [("synthetic-4", syn, synthetic_val(syn), args.syn_epochs)]
    if args.tiny_imagenet is not None:
        datasets.append(
            ("tiny-imagenet-10", args.tiny_imagenet, tiny_imagenet_val(args.tiny_imagenet), args.tin_epochs)
        )

    rows = []
    for name, root, items, epochs in datasets:
        centred, scale = centred_baseline(items)
        for tag in ("gap", "gmp"):
            cfg = TrainConfig(
                data=root,
                arch=f"{args.family}_{tag}",
                epochs=epochs,
                batch_size=32,
                lr=0.002,
                optimizer="adamw",
                weight_decay=0.01,
                min_crop_scale=0.5,
                img_size=64,
                out_dir=args.work / "runs" / f"{name}-{tag}",
                device="cpu",
                workers=args.workers,
                seed=0,
            )
            t0 = time.perf_counter()
            res = train(cfg)
            secs = time.perf_counter() - t0
            m = evaluate(res.best_checkpoint, items)
            ips = float(np.mean([h.images_per_second for h in res.history]))
            rows.append((name, tag.upper(), m, centred, scale, secs, ips, len(items), epochs))
            print(f"done {name} {tag}: {m} ({secs:.0f} s)", flush=True)

    head = (
        f"{'dataset':<17} {'head':<4} {'ep':>3} {'val':>4} {'top-1':>6} {'top-1 loc':>9} {'GT-known':>8} "
        f"{'centred box':>15} {'GT-known/centred':>16} {'train s':>8} {'img/s':>6}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for name, tag, m, centred, scale, secs, ips, n, epochs in rows:
        ratio = m["gt_known"] / centred if centred else float("inf")
        print(
            f"{name:<17} {tag:<4} {epochs:>3} {n:>4} {m['top1']:>6.3f} {m['top1_loc']:>9.3f} {m['gt_known']:>8.3f} "
            f"{centred:>8.3f} (s={scale:.2f}) {ratio:>16.2f} {secs:>8.0f} {ips:>6.0f}"
        )
    for name in dict.fromkeys(r[0] for r in rows):
        g = next(r[2] for r in rows if r[0] == name and r[1] == "GAP")
        x = next(r[2] for r in rows if r[0] == name and r[1] == "GMP")
        print(
            f"{name}: GAP/GMP ratios  top-1 {g['top1'] / max(x['top1'], 1e-9):.2f}  "
            f"GT-known {g['gt_known'] / max(x['gt_known'], 1e-9):.2f}"
        )


if __name__ == "__main__":
    main()
