"""Throughput of batch localization: single process vs Ray Data with 1 and 2 inference actors, in one run.

All three explain the same files with the same model (top-5 classes, maps, boxes; no drawings), batch size
``--batch-size``:

1. **single**: :func:`camloc.explain.explain_images` in this process (decoding in 2 threads ahead of the model, as
   ``camloc explain`` does), model built once;
2. **ray-1**, **ray-2**: :func:`camloc.ray.explain_dataset` on a local Ray cluster of ``--cpus`` CPUs started once
   (``ray.init``): decoding in Ray tasks, inference in 1 or 2 actors that each build the model.

Per job: ``wall`` (first call to the last row; for Ray it includes starting the actors and their model build,
which a long run pays once) and ``steady`` (from the first to the last result row: the rate a long run converges
to). Rounds are interleaved with the order rotated, so a busy machine slows all jobs alike; medians are reported.

Usage::

    python benchmarks/ray_explain.py ../shared/data/imagenet-val100/images                 # 100 photos, 2 rounds
    python benchmarks/ray_explain.py DATA --repeat 3 --rounds 3 --cpus 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))


def _files(data: Path, repeat: int, tmp: Path) -> list[Path]:
    from camloc.data.images import find_images

    files = find_images([data])
    if repeat <= 1:
        return files
    import shutil

    out = []
    for r in range(repeat):  # copies of the photos under other names: more rows, same per-image cost
        for f in files:
            copy = tmp / f"r{r}_{f.name}"
            shutil.copyfile(f, copy)
            out.append(copy)
    return out


def _single(files: list[Path], model: Any, info: Any, batch_size: int) -> dict[str, float]:
    from camloc.explain import ImageFailure, explain_images

    t0 = time.perf_counter()
    first = None
    n = 0
    for item in explain_images(files, model, info, topk=5, batch_size=batch_size):
        if first is None:
            first = time.perf_counter()
        n += not isinstance(item, ImageFailure)
    t1 = time.perf_counter()
    return {"images": n, "wall_s": t1 - t0, "first_s": (first or t1) - t0, "steady_img_s": _steady(n, first, t1)}


def _steady(n: int, first: float | None, end: float) -> float:
    return (n - 1) / (end - first) if first is not None and end > first and n > 1 else float("nan")


def _ray_job(files: list[Path], info: Any, batch_size: int, actors: int, model: str) -> dict[str, float]:
    from camloc.ray import ModelSpec, explain_dataset, image_dataset

    t0 = time.perf_counter()
    rows = explain_dataset(
        image_dataset([str(f) for f in files]), ModelSpec(model), info=info, topk=5, batch_size=batch_size,
        actors=actors,
    )  # fmt: skip
    first = None
    n = 0
    for batch in rows.iter_batches(batch_format="pyarrow", batch_size=None):
        if first is None:
            first = time.perf_counter()
        n += sum(e is None for e in batch.column("error").to_pylist())
    t1 = time.perf_counter()
    return {"images": n, "wall_s": t1 - t0, "first_s": (first or t1) - t0, "steady_img_s": _steady(n, first, t1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a folder of images (e.g. imagenet-val100/images)")
    ap.add_argument("--model", default="lite0")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1, help="list the folder's photos this many times")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray cluster")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")

    import logging

    import ray
    import torch

    from camloc.cli import load_model
    from camloc.explain import _keep_freed_memory

    _keep_freed_memory()
    tmp = Path(tempfile.mkdtemp(prefix="camloc-raybench-"))
    files = _files(args.data, args.repeat, tmp)
    model, info = load_model(args.model)
    model = model.to(memory_format=torch.channels_last)
    src = str(REPO / "src")  # the workers import this checkout's camloc too
    os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (src, os.environ.get("PYTHONPATH")) if x)
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    jobs = {
        "single": lambda: _single(files, model, info, args.batch_size),
        "ray-1": lambda: _ray_job(files, info, args.batch_size, 1, args.model),
        "ray-2": lambda: _ray_job(files, info, args.batch_size, 2, args.model),
    }
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in jobs}
    names = list(jobs)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            res = jobs[name]()
            runs[name].append(res)
            print(f"round {r + 1} {name:>6}: {res['images']} images, wall {res['wall_s']:.1f} s "
                  f"({res['images'] / res['wall_s']:.2f} img/s), steady {res['steady_img_s']:.2f} img/s",
                  file=sys.stderr, flush=True)  # fmt: skip
    ray.shutdown()
    summary = {
        name: {
            "images": rs[0]["images"],
            "wall_s": statistics.median(x["wall_s"] for x in rs),
            "wall_img_s": statistics.median(x["images"] / x["wall_s"] for x in rs),
            "steady_img_s": statistics.median(x["steady_img_s"] for x in rs),
            "first_row_s": statistics.median(x["first_s"] for x in rs),
        }
        for name, rs in runs.items()
    }
    doc = {
        "model": args.model,
        "batch_size": args.batch_size,
        "images": len(files),
        "cpus": args.cpus,
        "machine_cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "jobs": summary,
        "runs": runs,
    }
    print(f"{'job':>8} {'wall s':>8} {'img/s':>8} {'steady img/s':>13} {'first row s':>12}")
    for name, s in summary.items():
        print(f"{name:>8} {s['wall_s']:8.1f} {s['wall_img_s']:8.2f} {s['steady_img_s']:13.2f} {s['first_row_s']:12.1f}")
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
