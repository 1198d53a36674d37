"""A large-object twin of a boxed photo set: each photo cropped around its boxes, so objects fill more of the frame.

    python benchmarks/object_size_proxy.py /work/shared/data/imagenet-val100 /tmp/val100-large
    PYTHONPATH=src python benchmarks/methods_table.py /tmp/val100-large --configs cam,best

Why: a box rule or map method tuned on one set can fail on another whose objects are larger (the paper rule's
20 % threshold suits large objects, a finer map suits small ones). imagenet-val100's objects are small (the paper
rule is right for 0.33 of it, against about 0.65 reported on other ImageNet-val photos); this twin gives a boxed
set of larger objects from the same photos, so a method can be checked on both sizes before it is recommended.

Input: a folder with ``boxes.csv`` (``file,class_idx,wnid,w,h,x0,y0,x1,y1``, one row per box) and the images.
Per photo, the crop is the union of its boxes scaled so that the union covers a random fraction (uniform in
``--fraction``, default 0.35-0.85) of the crop's area, its centre jittered by up to 15 % of the union's size,
each side at least 60 % of the longer one, clipped to the photo. Boxes are clipped into the crop (those left
under 5 px are dropped). Output: the same layout (``images/...``, ``boxes.csv``, ``synset_words.txt`` when
present), seeded (``--seed``), JPEG quality 95.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import sys
from pathlib import Path

from PIL import Image

FIELDS = ("file", "class_idx", "wnid", "w", "h", "x0", "y0", "x1", "y1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--fraction", type=float, nargs=2, default=(0.35, 0.85), metavar=("LOW", "HIGH"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    with open(a.src / "boxes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_file: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    out: list[list[object]] = []
    for name, rs in by_file.items():
        im = Image.open(a.src / name).convert("RGB")
        W, H = im.size
        x0, y0 = min(float(r["x0"]) for r in rs), min(float(r["y0"]) for r in rs)
        x1, y1 = max(float(r["x1"]) for r in rs), max(float(r["y1"]) for r in rs)
        s = (1.0 / rng.uniform(*a.fraction)) ** 0.5
        cx = (x0 + x1) / 2 + rng.uniform(-0.15, 0.15) * (x1 - x0)
        cy = (y0 + y1) / 2 + rng.uniform(-0.15, 0.15) * (y1 - y0)
        hw, hh = (x1 - x0) * s / 2, (y1 - y0) * s / 2
        side = max(hw, hh, 32.0)
        hw, hh = max(hw, 0.6 * side), max(hh, 0.6 * side)
        c0, r0 = max(0, int(cx - hw)), max(0, int(cy - hh))
        c1, r1 = min(W, int(cx + hw)), min(H, int(cy + hh))
        crop = im.crop((c0, r0, c1, r1))
        cw, ch = crop.size
        (a.dst / name).parent.mkdir(parents=True, exist_ok=True)
        crop.save(a.dst / name, quality=95)
        for r in rs:
            bx0, by0 = max(0.0, float(r["x0"]) - c0), max(0.0, float(r["y0"]) - r0)
            bx1, by1 = min(float(cw), float(r["x1"]) - c0), min(float(ch), float(r["y1"]) - r0)
            if bx1 - bx0 >= 5 and by1 - by0 >= 5:
                out.append([name, r["class_idx"], r["wnid"], cw, ch, int(bx0), int(by0), int(bx1), int(by1)])
    with open(a.dst / "boxes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(FIELDS)
        w.writerows(out)
    if (a.src / "synset_words.txt").exists():
        shutil.copy(a.src / "synset_words.txt", a.dst / "synset_words.txt")
    print(f"{len(by_file)} photos, {len(out)} boxes -> {a.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
