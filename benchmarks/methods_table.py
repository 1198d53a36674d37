"""Every map method side by side on one annotated folder: ``camloc compare`` over the whole method table.

    PYTHONPATH=src python benchmarks/methods_table.py /work/shared/data/imagenet-val100 --model lite0
    PYTHONPATH=src python benchmarks/methods_table.py DATA --methods cam,flip,pca --limit 20
    PYTHONPATH=src python benchmarks/methods_table.py /work/shared/data/tiny-imagenet-10 \
        --classes /work/shared/data/imagenet-val100/synset_words.txt   # Tiny-ImageNet wnids -> ImageNet-1k indices

The numbers are :func:`camloc.compare.compare_methods`' (the same as ``camloc compare DATA --methods ...``): per
method one ``evaluate_samples`` pass (paper protocol: top-1 cls; top-1 loc and GT-known at 0.2 of each map's
max, largest component; MaxBoxAcc, MaxBoxAccV2; GT-known on single- / multi-box images), with ``--calibrate N``
one ``calibrate_samples --holdout N`` pass instead (plus the held-out top-1 loc / GT-known of the auto-chosen rule
and the per-image-threshold ceiling). Time: forward + maps of the top-1 and true classes on one fixed batch, all
methods interleaved round after round, the median over ``--rounds`` rounds; ``x cam`` is that time over cam's in
the same run. Slow methods (``scorecam``, one forward per channel) run in a second comparison on the first
``--slow-limit`` images, with cam timed again beside them. Prints the Markdown tables (``--out``: JSON too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: The default methods, in table order (``NAME(k=v;k=v)`` as ``--methods`` takes them).
METHODS = (
    "cam,backprop,flip,multiscale,multiscale(flip=1),hires,hires(logits=input),dilate,pca,ddt,cam+pca,"
    "cam+pca(combine=mean),flip(base=cam+pca),ensemble,ensemble(base=cam+pca),gradcam,gradcam++,layercam,eigencam,"
    "multiscale(scales=1,1.5,2;norm=max;logits=input),affinity(layer=blocks.3),best"
)
SLOW = "scorecam"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--format", default="auto")
    ap.add_argument("--classes", default=None, help="class list for the reader (tiny_imagenet: ImageNet wnids)")
    ap.add_argument("--model", default="lite0")
    ap.add_argument("--methods", default=METHODS, help="comma-separated NAME or NAME(k=v;k=v) (default: all)")
    ap.add_argument("--slow", default=SLOW, help="methods run on --slow-limit images only ('' for none)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--slow-limit", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--time-batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--calibrate", type=int, default=0, metavar="N", help="also held-out calibration over N folds")
    a = ap.parse_args(argv)

    import torch

    from camloc.compare import compare_methods
    from camloc.data.annotations import read_dataset
    from camloc.models.registry import create_model

    kw = {} if a.classes is None else {"classes": a.classes}
    samples = list(read_dataset(a.data, format=a.format, **kw).samples)
    samples = samples[: a.limit] if a.limit else samples
    model, info = create_model(a.model)
    model = model.eval().to(memory_format=torch.channels_last)
    common = {"holdout_folds": a.calibrate or None, "batch_size": a.batch_size, "workers": 0,
              "time_batch": a.time_batch, "rounds": a.rounds}  # fmt: skip
    runs = [("all", samples, a.methods)]
    if a.slow:
        runs.append((f"first {a.slow_limit} images", samples[: a.slow_limit], a.slow))
    out = []
    for what, subset, methods in runs:
        comp = compare_methods(subset, model, info, methods, data={"path": str(a.data), "images": what}, **common)
        print(f"\n{a.model} on {a.data} ({what}: {len(subset)} images)\n")
        print(comp.to_markdown())
        out.append(comp.to_dict())
    if a.out is not None:
        a.out.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
