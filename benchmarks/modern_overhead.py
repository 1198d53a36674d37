"""CAM overhead vs the plain forward for convnext_tiny and swin_tiny (timm, random weights), side by side.

Per model, batch 32 at 224x224, CPU, eval, ``torch.no_grad``: ``model(x)`` vs ``CAM(model)(x, topk=5)`` (trunk,
head logits and the top-5 maps at feature resolution; the one-time identity check is done before timing). The two
run interleaved round by round so a busy machine slows both alike; reported: median seconds and the median of
per-round ratios.

Usage::

    PYTHONPATH=src python benchmarks/modern_overhead.py [--batch 32] [--rounds 3] [--models convnext_tiny,...]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import timm
import torch

import camloc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="convnext_tiny,swin_tiny_patch4_window7_224")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    print(f"batch {args.batch} x 3 x {args.size} x {args.size}, CPU threads {torch.get_num_threads()}")
    print(f"{'model':32s} {'head':14s} {'forward s':>10s} {'CAM s':>8s} {'ratio':>6s}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False).eval()
        x = torch.randn(args.batch, 3, args.size, args.size)
        cam = camloc.CAM(model)
        with torch.no_grad():
            cam(x[:2])  # identity check, warm-up
            model(x[:2])
        fw, cm, ratios = [], [], []
        for _ in range(args.rounds):
            with torch.no_grad():
                t0 = time.perf_counter()
                model(x)
                t1 = time.perf_counter()
            cam(x, topk=5)
            t2 = time.perf_counter()
            fw.append(t1 - t0)
            cm.append(t2 - t1)
            ratios.append((t2 - t1) / (t1 - t0))
        print(
            f"{name:32s} {type(cam.head).__name__:14s} {statistics.median(fw):10.3f} {statistics.median(cm):8.3f} "
            f"{statistics.median(ratios):6.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
