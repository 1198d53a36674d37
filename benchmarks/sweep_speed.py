"""Threshold sweeps for MaxBoxAcc / MaxBoxAccV2: camloc's one-pass engine vs a per-threshold reference loop.

On the same random smooth maps (sums of random Gaussians on a 14x14 grid, cubic-upsampled to ``--size``, like
upsampled CAMs; 1-3 random GT boxes each), for each protocol, threshold count (100, 1000) and metric:

* reference: the straightforward loop, one labelling per image and threshold.
  ``paper``: ``v >= t`` -> ``cv2.connectedComponentsWithStats`` (8-connectivity) -> largest component (ties:
  first pixel in raster order) or every component; continuous IoU.
  ``wsolevaluation``: clovaai/wsolevaluation's loop (``cv2.threshold`` on the uint8 map,
  ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``, largest ``cv2.contourArea`` or every contour,
  ``cv2.boundingRect``, x1/y1 clipped) with "+1" IoU.
* camloc: ``MaxBoxAcc`` / ``MaxBoxAccV2`` (``update`` + ``compute``) with the same protocol and thresholds.

Prints time per image, the speed-up and whether the per-threshold accuracy curves are identical. Both run in
one process on one thread, interleaved in chunks of ``--chunk`` images (alternating which goes first), so a
machine whose speed drifts slows both alike: the ratio is what to read.

Usage::

    python benchmarks/sweep_speed.py                     # 200 maps at 224x224 (a few minutes on 2 cores)
    python benchmarks/sweep_speed.py --n-images 50 --size 160 --seed 1
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from camloc import sweep
from camloc.metrics import MaxBoxAcc, MaxBoxAccV2

DELTAS_V2 = (0.3, 0.5, 0.7)


def make_data(n: int, size: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:14, 0:14]
    maps, gts = [], []
    for _ in range(n):
        m = np.zeros((14, 14))
        for _ in range(int(rng.integers(1, 5))):
            cy, cx, s = rng.uniform(-1, 15), rng.uniform(-1, 15), rng.uniform(1, 5)
            m += rng.uniform(0.2, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        maps.append(cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC))
        g = []
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.integers(0, size - 8, 2)
            g.append([x0, y0, rng.integers(x0 + 4, size), rng.integers(y0 + 4, size)])
        gts.append(np.array(g, dtype=np.float64))
    return maps, gts


def iou_max(boxes: np.ndarray, gt: np.ndarray, plus_one: bool) -> float:
    one = 1.0 if plus_one else 0.0
    iw = np.minimum(boxes[:, None, 2], gt[None, :, 2]) - np.maximum(boxes[:, None, 0], gt[None, :, 0]) + one
    ih = np.minimum(boxes[:, None, 3], gt[None, :, 3]) - np.maximum(boxes[:, None, 1], gt[None, :, 1]) + one
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area_a = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    area_b = (gt[:, 2] - gt[:, 0] + one) * (gt[:, 3] - gt[:, 1] + one)
    union = (area_a[:, None] + area_b[None, :]) - inter
    return float(np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0).max())


def ref_paper_boxes(v: np.ndarray, t: float, multi: bool) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats((v >= t).view(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros((1, 4))
    st = stats[1:].astype(np.float64)
    boxes = np.stack([st[:, 0], st[:, 1], st[:, 0] + st[:, 2], st[:, 1] + st[:, 3]], axis=1)
    if multi:
        return boxes
    area = st[:, 4]
    tied = np.flatnonzero(area == area.max())
    if tied.size > 1:  # tie -> the component whose first pixel comes first in raster order
        first = [int(np.argmax(labels.ravel() == i + 1)) for i in tied]
        return boxes[[tied[int(np.argmin(first))]]]
    return boxes[tied]


def ref_wsol_boxes(image: np.ndarray, t: float, multi: bool) -> np.ndarray:
    height, width = image.shape
    _, binary = cv2.threshold(image, int(t * np.max(image)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return np.zeros((1, 4))
    if not multi:
        contours = [max(contours, key=cv2.contourArea)]
    out = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        out.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return np.array(out, dtype=np.float64)


def reference_curves(maps, gts, protocol: str, thresholds: np.ndarray, deltas: tuple[float, ...], multi: bool):
    correct = np.zeros((len(deltas), thresholds.size))
    d = np.asarray(deltas)
    for m, gt in zip(maps, gts):
        if protocol == "paper":
            v = np.maximum(m, 0) / m.max()
            best = [iou_max(ref_paper_boxes(v, t, multi), gt, False) for t in thresholds]
        else:
            cam = m - m.min()
            image = ((cam / cam.max()) * 255).astype(np.uint8)
            best = [iou_max(ref_wsol_boxes(image, t, multi), gt, True) for t in thresholds]
        correct += np.asarray(best)[None, :] >= d[:, None]
    return correct


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=200)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=10, help="images per interleaved timing chunk")
    args = ap.parse_args(argv)
    maps, gts = make_data(args.n_images, args.size, args.seed)
    engine = "numba one-pass" if sweep._USE_KERNEL else "OpenCV per distinct mask (numba missing)"
    print(f"{args.n_images} maps {args.size}x{args.size}, seed {args.seed}; camloc engine: {engine}")
    MaxBoxAcc(protocol="paper", thresholds=[0.5]).update(maps[:1], gts[:1])  # compile / load the kernels
    MaxBoxAccV2(protocol="wsolevaluation", thresholds=[0.5]).update(maps[:1], gts[:1])
    header = f"{'protocol':<15}{'metric':<12}{'thresholds':>10}{'ref ms/img':>12}{'camloc ms/img':>15}"
    print(header + f"{'speed-up':>10}{'identical':>11}")
    for protocol in ("paper", "wsolevaluation"):
        for n_thr in (100, 1000):
            thr = np.arange(n_thr) / n_thr
            for name, cls, deltas, multi in (
                ("MaxBoxAcc", MaxBoxAcc, (0.5,), False),
                ("MaxBoxAccV2", MaxBoxAccV2, DELTAS_V2, True),
            ):
                acc = cls(protocol=protocol, thresholds=thr)
                ref = np.zeros((len(deltas), thr.size))
                t_ref = t_cam = 0.0
                for j, start in enumerate(range(0, len(maps), args.chunk)):
                    part = slice(start, start + args.chunk)
                    for which in ("ref", "cam") if j % 2 == 0 else ("cam", "ref"):
                        t0 = time.perf_counter()
                        if which == "ref":
                            ref += reference_curves(maps[part], gts[part], protocol, thr, deltas, multi)
                            t_ref += time.perf_counter() - t0
                        else:
                            acc.update(maps[part], gts[part])
                            t_cam += time.perf_counter() - t0
                t0 = time.perf_counter()
                res = acc.compute()
                t_cam += time.perf_counter() - t0
                ref /= len(maps)
                t_ref *= 1e3 / len(maps)
                t_cam *= 1e3 / len(maps)
                curves = np.atleast_2d(res.accuracy)
                same = "yes" if np.array_equal(curves, ref) else "NO"
                print(
                    f"{protocol:<15}{name:<12}{n_thr:>10}{t_ref:>12.2f}{t_cam:>15.2f}{t_ref / t_cam:>9.1f}x{same:>11}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
