"""The whole ``camloc explain`` folder job vs a torch-cam script vs a forward-only loop, on real photos.

Each job runs as its own Python process, so start-up (imports, model build, worker spawn) counts, as it does for a
user; wall time is measured around the process. The three jobs run interleaved, round by round with the order
rotated, so a busy machine slows all of them alike; ratios are taken within each round (median, and the range).

1. **camloc**: ``python -m camloc.cli explain DIR --out OUT --quiet --batch-size 32 --model lite0`` (top-5 classes,
   maps and boxes, an overlay PNG and a top-5 panel PNG per image, results.jsonl, manifest.json).
2. **torch-cam script**: what a user writes with torch-cam's README, doing less: per image PIL open ->
   torchvision transforms -> forward with ``torchcam.methods.CAM`` hooked -> top-1 map -> ``overlay_mask`` ->
   threshold + ``cv2.findContours`` / ``boundingRect`` -> box drawn with cv2 -> one PNG + one JSON line.
3. **forward only**: DataLoader (2 worker processes, batch 32) decoding + resizing to the input, ``model(x)``
   under ``torch.no_grad``, nothing written.

All three build the model with ``camloc.create_model`` (lite0: camloc's embedded EfficientNet-Lite0 weights).

Two sets: **small**, the photos of ``DATA`` squashed to ``--small-side`` (227) square and repeated under different
names up to ``--small-n`` (512) files (written to a temporary folder as JPEG quality 95); **full**, the photos of
``DATA`` as they are (ImageNet-val: about 500x375).

Usage::

    python benchmarks/folder_job.py ../shared/data/imagenet-val100/images            # both sets, 3 rounds
    python benchmarks/folder_job.py DATA --sets small --rounds 5
    python benchmarks/folder_job.py DATA --profile        # also: per-image CPU cost of each step (in-process)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET_SPEEDUP = 1.5  # camloc job / torch-cam script (wall time ratio)
TARGET_VS_FORWARD = 0.7  # camloc job throughput / forward-only throughput
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# torch-cam layer names for each camloc model spec
LAYERS = {"lite0": ("bn2", "classifier"), "torchvision:resnet50": ("layer4", "fc")}


def _list(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))


def _build(model_name: str) -> tuple[Any, Any]:
    import camloc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = camloc.create_model(model_name)
    return model.eval(), info


# --------------------------------------------------------------------------------------------- the jobs (children)
def job_forward(folder: Path, out: Path, model_name: str) -> int:
    """Forward-only: DataLoader with 2 worker processes decodes + resizes, then ``model(x)``; writes nothing."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    model, info = _build(model_name)
    paths = _list(folder)

    class Decode(Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> Any:
            with Image.open(paths[i]) as img:
                return info.preprocess.to_tensor(img.convert("RGB"))

    n = 0
    with torch.no_grad():
        for x in DataLoader(Decode(), batch_size=32, num_workers=2):
            model(x)
            n += len(x)
    return n


def job_torchcam(folder: Path, out: Path, model_name: str) -> int:
    """The torch-cam way, one image at a time as its README shows, plus a cv2 box, one PNG and one JSON line."""
    import cv2
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms as T
    from torchvision.transforms.functional import to_pil_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchcam.methods import CAM
        from torchcam.utils import overlay_mask

    model, info = _build(model_name)
    pp = info.preprocess
    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[pp.interpolation]
    tf = T.Compose([T.Resize(pp.size, interpolation=interp), T.ToTensor(), T.Normalize(pp.mean, pp.std)])
    feature_layer, fc_layer = LAYERS[model_name]
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with CAM(model, feature_layer, fc_layer) as extractor, (out / "results.jsonl").open("w") as fh:
        for p in _list(folder):
            img = Image.open(p).convert("RGB")
            x = tf(img).unsqueeze(0)
            with torch.no_grad():
                logits = model(x)
            prob = logits.softmax(dim=1)
            c = int(logits.argmax(dim=1))
            heat = extractor(c, logits)[0].squeeze(0)  # [h, w], min-max normalised
            result = overlay_mask(img, to_pil_image(heat, mode="F"), alpha=0.5)
            full = cv2.resize(heat.numpy(), img.size, interpolation=cv2.INTER_LINEAR)
            mask = (full >= 0.2).astype(np.uint8)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            box = [0, 0, 0, 0]
            arr = np.array(result)
            if contours:
                bx, by, bw, bh = cv2.boundingRect(max(contours, key=cv2.contourArea))
                box = [bx, by, bx + bw, by + bh]
                cv2.rectangle(arr, (bx, by), (bx + bw - 1, by + bh - 1), (255, 255, 255), 2)
            Image.fromarray(arr).save(out / f"{p.stem}.png")
            rec = {"path": str(p), "class_idx": c, "prob": float(prob[0, c]), "box": box}
            fh.write(json.dumps(rec) + "\n")
            n += 1
    return n


def job_forward_tuned(folder: Path, out: Path, model_name: str) -> int:
    """Forward-only with camloc's own settings: malloc tuning, channels_last, 2 decode threads, batch 32."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from PIL import Image

    import camloc.explain

    tune = getattr(camloc.explain, "_keep_freed_memory", None)  # absent in camloc versions before it
    if tune is not None:
        tune()
    model, info = _build(model_name)
    model = model.to(memory_format=torch.channels_last)
    paths = _list(folder)

    def decode(p: Path) -> Any:
        with Image.open(p) as img:
            return info.preprocess.to_tensor(img.convert("RGB"))

    n = 0
    batch: list[Any] = []
    with ThreadPoolExecutor(2) as pool, torch.no_grad():
        for k, x in enumerate(pool.map(decode, paths)):  # decoding runs ahead of the model
            batch.append(x)
            if len(batch) == 32 or k == len(paths) - 1:
                model(torch.stack(batch))
                n += len(batch)
                batch = []
    return n


CHILD_JOBS = {"forward": job_forward, "forward_tuned": job_forward_tuned, "torchcam": job_torchcam}


# --------------------------------------------------------------------------------------------- orchestration
#: another camloc source tree to time beside this one (``--reference-src``), e.g. a checkout of an older version
REFERENCE_SRC: Path | None = None


def _env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def command(job: str, folder: Path, out: Path, model_name: str) -> list[str]:
    if job in ("camloc", "camloc_ref"):
        cli = [sys.executable, "-m", "camloc.cli", "explain", str(folder), "--out", str(out), "--quiet"]
        return [*cli, "--batch-size", "32", "--model", model_name]
    return [sys.executable, str(Path(__file__).resolve()), "--child", job, str(folder), str(out), model_name]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_job(job: str, folder: Path, out: Path, model_name: str) -> tuple[float, float]:
    """``(wall seconds, CPU seconds)`` of the job's whole process (and its worker processes); checks the output."""
    cmd = command(job, folder, out, model_name)
    src = REFERENCE_SRC if job == "camloc_ref" and REFERENCE_SRC is not None else REPO / "src"
    c0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, env=_env(src), capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"{job} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    n = len(_list(folder))
    if job in ("forward", "forward_tuned"):
        done = int(proc.stdout.split()[-1])
    else:
        done = sum(1 for _ in (out / "results.jsonl").open())
    if done != n:
        raise RuntimeError(f"{job} handled {done} of {n} images")
    return wall, cpu


def make_small(src: Sequence[Path], folder: Path, *, n: int, side: int) -> list[Path]:
    """``n`` JPEGs: the photos squashed to ``side`` x ``side`` (aspect not kept), repeated under new names."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    squashed = []
    for p in src:
        with Image.open(p) as im:
            squashed.append(im.convert("RGB").resize((side, side), Image.Resampling.BICUBIC))
    out = []
    for i in range(n):
        q = folder / f"small_{i:04d}.jpg"
        squashed[i % len(squashed)].save(q, quality=95)
        out.append(q)
    return out


def table(title: str, header: Sequence[str], rows: list[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    line = "  ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths))))


LABELS = {
    "camloc": "camloc explain (top-5, 2 PNG, JSON)",
    "torchcam": "torch-cam script (top-1, 1 PNG, JSON)",
    "forward": "forward only (DataLoader + model)",
    "forward_tuned": "forward only, camloc's settings",
    "camloc_ref": "camloc explain, --reference-src",
}


def bench_set(name: str, folder: Path, tmp: Path, *, model_name: str, rounds: int) -> dict[str, tuple[float, ...]]:
    """Interleaved rounds of the three jobs on ``folder``; prints a table; returns per-round ratios."""
    from PIL import Image

    paths = _list(folder)
    sizes = [Image.open(p).size for p in paths]
    mean_mp = statistics.mean(w * h for w, h in sizes) / 1e6
    side = max(max(s) for s in sizes)
    jobs = ["camloc", "torchcam", "forward", "forward_tuned"] + (["camloc_ref"] if REFERENCE_SRC else [])
    warm = tmp / f"warm_{name}"
    warm.mkdir()
    for p in paths[:8]:
        os.symlink(p.resolve(), warm / p.name)
    for j in jobs:  # page cache, .pyc files
        run_job(j, warm, tmp / f"out_warm_{j}", model_name)
    times: dict[str, list[float]] = {j: [] for j in jobs}
    cpu: dict[str, list[float]] = {j: [] for j in jobs}
    for r in range(rounds):
        for j in jobs[r % len(jobs) :] + jobs[: r % len(jobs)]:
            out = tmp / f"out_{name}_{j}_{r}"
            wall, c = run_job(j, folder, out, model_name)
            times[j].append(wall)
            cpu[j].append(c)
            print(f"    {j}: {wall:.2f} s, {c:.1f} CPU s", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        done = ", ".join(f"{j} {times[j][-1]:.2f} s ({cpu[j][-1]:.1f} CPU s)" for j in jobs)
        print(f"  [{name}] round {r + 1}: {done}", flush=True)
    n = len(paths)
    cam = times["camloc"]
    speedup = tuple(t / c for t, c in zip(times["torchcam"], cam))
    vs_fwd = tuple(f / c for f, c in zip(times["forward"], cam))
    vs_tuned = tuple(f / c for f, c in zip(times["forward_tuned"], cam))
    rows = []
    for j in jobs:
        t = times[j]
        med = statistics.median(t)
        ratio = tuple(x / c for x, c in zip(t, cam))  # > 1: camloc is faster than this job
        rows.append(
            [
                LABELS[j],
                f"{med:.2f}",
                f"{min(t):.2f}-{max(t):.2f}",
                f"{n / med:.1f}",
                f"{statistics.median(cpu[j]):.1f}",
                f"{statistics.median(ratio):.2f}x" if j != "camloc" else "1",
                f"{statistics.median(tuple(f / x for x, f in zip(t, times['forward']))):.2f}x",
                f"{statistics.median(tuple(f / x for x, f in zip(t, times['forward_tuned']))):.2f}x",
            ]
        )
    table(
        f"[{name}] {n} images, mean {mean_mp:.3f} MP (longest side <= {side}), model {model_name}, {rounds} rounds",
        ["job (whole process)", "median s", "range s", "img/s", "CPU s", "camloc speed-up", "vs fwd-only", "vs tuned"],
        rows,
    )
    for what, v in (
        ("camloc speed-up over the torch-cam script", speedup),
        ("camloc throughput / forward-only (DataLoader)", vs_fwd),
        ("camloc throughput / forward-only (camloc's settings)", vs_tuned),
    ):
        print(f"  {what}: median {statistics.median(v):.2f}x (range {min(v):.2f}-{max(v):.2f})")
    return {"speedup": speedup, "vs_forward": vs_fwd, "vs_tuned": vs_tuned}


# --------------------------------------------------------------------------------------------- in-process profile
def profile_steps(folder: Path, tmp: Path, *, model_name: str, limit: int = 32) -> None:
    """Per-image CPU cost of the steps of the camloc job (thread CPU time, min of 3 repeats)."""
    import numpy as np
    import torch

    from camloc._io import atomic_save_png
    from camloc.explain import _Files, explain_images
    from camloc.viz import draw_boxes, overlay, topk_panel

    paths = _list(folder)[:limit]
    n = len(paths)
    t0 = time.perf_counter()
    model, info = _build(model_name)
    build_s = time.perf_counter() - t0
    items = [it for it in explain_images(paths, model, info, batch_size=32, workers=0) if hasattr(it, "maps")]
    files = _Files(paths, info.preprocess, 512)

    def boxes(it: Any) -> list[list[float]]:
        sx, sy = it.display_scale
        return [[b.box[0] * sx, b.box[1] * sy, b.box[2] * sx, b.box[3] * sy] for b in it.result.topk]

    ovs = [overlay(it.display, it.maps[0], alpha=0.5) for it in items]
    panels = [topk_panel(it.display, it.maps, boxes(it), ["x"] * 5, scores=[0.5] * 5, title="t") for it in items]
    out = tmp / "profile"
    steps = {
        "decode + resize + display (_Files)": lambda: [files[i] for i in range(n)],
        "overlay() + draw_boxes() with label": lambda: [
            draw_boxes(overlay(it.display, it.maps[0], alpha=0.5), boxes(it)[:1], labels=["x 0.5"]) for it in items
        ],
        "topk_panel() (6 tiles, captions)": lambda: [
            topk_panel(it.display, it.maps, boxes(it), ["x"] * 5, scores=[0.5] * 5, title="t") for it in items
        ],
        "PNG overlay (atomic_save_png)": lambda: [atomic_save_png(out / "o.png", o) for o in ovs],
        "PNG panel (atomic_save_png)": lambda: [atomic_save_png(out / "p.png", p) for p in panels],
    }
    best = {}
    for k, f in steps.items():
        ts = []
        for _ in range(3):
            c0 = time.thread_time()
            f()
            ts.append(time.thread_time() - c0)
        best[k] = min(ts) / n
    x = torch.randn(32, 3, *info.preprocess.size)
    fwd = []
    with torch.no_grad():
        for _ in range(3):
            c0 = time.process_time()
            model(x)
            fwd.append(time.process_time() - c0)
    rows = [["model build (in a warm process), s", f"{build_s:.2f}"]]
    rows.append([f"model(x) batch 32, per image (all {torch.get_num_threads()} threads)", f"{min(fwd) / 32 * 1e3:.1f}"])
    rows += [[k, f"{v * 1e3:.2f}"] for k, v in best.items()]
    size = np.mean([it.display.shape[0] * it.display.shape[1] for it in items]) / 1e6
    table(f"[profile] {folder.name}: CPU ms per image (display {size:.3f} MP)", ["step", "CPU ms/img"], rows)


# --------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        job, folder, out, model_name = argv[1:5]
        print(CHILD_JOBS[job](Path(folder), Path(out), model_name))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="folder of photos (e.g. ../shared/data/imagenet-val100/images)")
    ap.add_argument("--sets", default="small,full", help="small, full or small,full")
    ap.add_argument("--small-n", type=int, default=512, help="files in the small set (default 512)")
    ap.add_argument("--small-side", type=int, default=227, help="side of the small set's squares (default 227)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="lite0", choices=sorted(LAYERS))
    ap.add_argument("--profile", action="store_true", help="also print per-step CPU costs of the camloc job")
    ap.add_argument("--reference-src", type=Path, help="another camloc src/ folder to time beside this one")
    args = ap.parse_args(argv)
    global REFERENCE_SRC
    REFERENCE_SRC = args.reference_src.resolve() if args.reference_src else None
    src = _list(args.data)
    if not src:
        ap.error(f"no photos in {args.data}")
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    import torch

    try:
        import torchcam  # noqa: F401
    except ImportError:
        ap.error("torch-cam is not installed (pip install torchcam)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; {len(src)} photos")
    tmp = Path(tempfile.mkdtemp(prefix="camloc_folder_job_"))
    verdicts = {}
    try:
        for s in sets:
            if s == "small":
                folder = tmp / "small"
                make_small(src, folder, n=args.small_n, side=args.small_side)
            elif s == "full":
                folder = tmp / "full"
                folder.mkdir()
                for p in src:  # the jobs see exactly these files
                    os.symlink(p.resolve(), folder / p.name)
            else:
                ap.error(f"unknown set {s!r}")
            verdicts[s] = bench_set(s, folder, tmp, model_name=args.model, rounds=args.rounds)
            if args.profile:
                profile_steps(folder, tmp, model_name=args.model)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nTargets")
    for s, v in verdicts.items():
        sp, vf = statistics.median(v["speedup"]), statistics.median(v["vs_forward"])
        ok = "MET" if sp >= TARGET_SPEEDUP else "MISSED"
        print(f"  {s:<5} camloc vs torch-cam script: {sp:.2f}x (>= {TARGET_SPEEDUP}x) {ok}")
        ok = "MET" if vf >= TARGET_VS_FORWARD else "MISSED"
        print(f"  {s:<5} camloc vs forward-only throughput: {vf:.2f}x (>= {TARGET_VS_FORWARD}x) {ok}")
        vt = statistics.median(v["vs_tuned"])
        ok = "MET" if vt >= TARGET_VS_FORWARD else "MISSED"
        print(f"  {s:<5} camloc vs forward-only with camloc's settings: {vt:.2f}x (>= {TARGET_VS_FORWARD}x) {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
