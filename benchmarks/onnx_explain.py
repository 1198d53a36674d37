"""``camloc explain`` with the torch model vs with its exported ONNX graph (``--onnx``, onnxruntime), side by side.

1. The model is exported once (``camloc.export.export_onnx``, top-5 maps at feature resolution; the time and the
   onnxruntime-vs-PyTorch max abs errors are printed).
2. **Folder job**: ``python -m camloc.cli explain DATA --out OUT --quiet [--no-images]`` with ``--model M`` vs with
   ``--onnx model.onnx``, each as its own process (start-up included), interleaved round by round with the order
   rotated so a busy machine slows both alike; wall time, images/s, and the ratio within each round.
3. **In-process** (no start-up, no PNGs): :func:`camloc.explain.explain_images` over the same files with
   ``CAM(model)`` vs ``producer=OnnxCAM(...)``, same decoding threads, interleaved; images/s, and the agreement
   of the two (same top-k classes; largest box difference in original pixels).

Usage::

    python benchmarks/onnx_explain.py ../shared/data/imagenet-val100/images            # lite0, 3 rounds
    python benchmarks/onnx_explain.py DATA --model torchvision:resnet50 --rounds 2 --no-images
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_job(argv: Sequence[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "camloc.cli", *argv], env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(f"camloc {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def folder_jobs(
    data: Path, onnx_path: Path, tmp: Path, *, model: str, rounds: int, images: bool, batch: int
) -> dict[str, list[float]]:
    common = ["explain", str(data), "--quiet", "--batch-size", str(batch)] + ([] if images else ["--no-images"])
    jobs = {"torch": ["--model", model], "onnx": ["--onnx", str(onnx_path)]}
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for r in range(rounds):
        order = list(jobs) if r % 2 == 0 else list(jobs)[::-1]
        for name in order:
            times[name].append(run_job([*common, "--out", str(tmp / f"{name}_{r}"), *jobs[name]]))
    a = [json.loads(x) for x in (tmp / "torch_0" / "results.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp / "onnx_0" / "results.jsonl").read_text().splitlines()]
    same = sum(
        [t["class_idx"] for t in x["topk"]] == [t["class_idx"] for t in y["topk"]] for x, y in zip(a, b, strict=True)
    )
    worst = max(
        abs(u - v) for x, y in zip(a, b) for s, t in zip(x["topk"], y["topk"]) for u, v in zip(s["box"], t["box"])
    )
    print(
        f"folder-job results: {same}/{len(a)} images with the same top-k classes; largest box difference {worst:.2f} px"
    )
    return times


def in_process(
    files: list[Path], model: Any, info: Any, onnx_path: Path, *, rounds: int, batch: int
) -> dict[str, list[float]]:
    import numpy as np

    from camloc.explain import explain_images
    from camloc.export.onnx import OnnxCAM

    producer = OnnxCAM(onnx_path)
    runs = {
        "torch": lambda: list(explain_images(files, model, info, batch_size=batch)),
        "onnx": lambda: list(explain_images(files, None, producer.info, batch_size=batch, producer=producer)),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    results: dict[str, list[Any]] = {}
    for r in range(rounds):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            t = time.perf_counter()
            results[name] = runs[name]()
            times[name].append(time.perf_counter() - t)
    a = [e.result for e in results["torch"] if hasattr(e, "result")]
    b = [e.result for e in results["onnx"] if hasattr(e, "result")]
    same = sum([c.class_idx for c in x.topk] == [c.class_idx for c in y.topk] for x, y in zip(a, b))
    worst = max(float(np.abs(np.subtract(s.box, t.box)).max()) for x, y in zip(a, b) for s, t in zip(x.topk, y.topk))
    maps = max(
        float(np.abs(x.maps - y.maps).max()) for x, y in zip(results["torch"], results["onnx"]) if hasattr(x, "maps")
    )
    print(
        f"in-process results: {same}/{len(a)} images with the same top-5 classes; largest box difference "
        f"{worst:.2f} px; largest difference of the max-normalised maps {maps:.2g}"
    )
    return times


def table(title: str, times: dict[str, list[float]], n: int) -> None:
    print(f"\n{title} ({n} images, {len(times['torch'])} rounds)")
    print(f"{'path':<8} {'median s':>9} {'range s':>15} {'images/s':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<8} {med:>9.2f} {min(ts):>7.2f}-{max(ts):<7.2f} {n / med:>9.1f}")
    ratios = [t / o for t, o in zip(times["torch"], times["onnx"])]
    print(f"onnx speed-up (torch time / onnx time, per round): median {statistics.median(ratios):.2f}x, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}x")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="a folder of photos (e.g. imagenet-val100/images)")
    ap.add_argument("--model", default="lite0")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-images", action="store_true", help="folder job without overlay/panel PNGs")
    ap.add_argument("--skip-folder-job", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    import torch

    import camloc
    from camloc.data.images import find_images
    from camloc.export.onnx import export_onnx

    files = find_images([args.data])
    print(f"camloc {camloc.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs, model {args.model}, {len(files)} images")  # fmt: skip
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}")
    model, info = camloc.create_model(args.model)
    with tempfile.TemporaryDirectory(prefix="camloc_onnx_bench_") as d:
        tmp = Path(d)
        t = time.perf_counter()
        res = export_onnx(model, info, tmp / "model.onnx", topk=5)
        size_mb = (tmp / "model.onnx").stat().st_size / 1e6
        errs = ", ".join(f"{k} {v:.2g}" for k, v in res.max_abs_error.items())
        print(f"export: {time.perf_counter() - t:.1f} s, {size_mb:.1f} MB, max abs error vs PyTorch: {errs}")
        ip = in_process(files, model, info, tmp / "model.onnx", rounds=args.rounds, batch=args.batch_size)
        table("in-process explain_images (decode + forward + maps + boxes; no start-up, no files)", ip, len(files))
        if not args.skip_folder_job:
            fj = folder_jobs(
                args.data, tmp / "model.onnx", tmp, model=args.model, rounds=args.rounds,
                images=not args.no_images, batch=args.batch_size,
            )  # fmt: skip
            what = "no PNGs" if args.no_images else "overlay + panel PNGs"
            table(f"folder job: camloc explain as a process (start-up included, {what})", fj, len(files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
