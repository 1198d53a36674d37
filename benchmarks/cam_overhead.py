"""What do class activation maps + boxes cost on top of a plain forward? camloc vs torch-cam vs pytorch-grad-cam.

Part A (tensors, CPU, ``torch.no_grad``, eval, random 224x224 input, default ``torch`` threads): time per batch of

1. ``model(x)`` (the reference);
2. camloc: ``CAM(model)(x, topk=5)`` + ``localize(out.maps, size=(224, 224))`` (top-5 maps upsampled to the input,
   normalised, thresholded at 0.2 of their max, largest 8-connected component -> boxes);
3. torch-cam ``torchcam.methods.CAM`` (top-1 class map at feature resolution, as in its README);
4. pytorch-grad-cam ``GradCAM`` (top-1 class map, upsampled to the input; needs a backward pass, so no ``no_grad``),

with the ratio to the plain forward (median of per-round ratios; the methods run interleaved round by round so a
busy machine slows all of them alike). A stage-by-stage profile of the camloc path follows.

Part B (a folder of real-size JPEGs, end to end, images/s; model creation included in every job):

1. forward only: DataLoader (2 workers) decode + resize to the input, then ``model(x)``;
2. camloc's whole job: ``camloc explain DIR --out TMP --quiet --batch-size 32`` (top-5 maps, boxes, overlay PNG,
   top-k panel PNG, results.jsonl, manifest.json);
3. the same job written with torch-cam the way a user would: per image PIL open -> torchvision transforms ->
   forward with the CAM extractor hooked -> ``overlay_mask`` -> threshold + ``cv2.findContours`` /
   ``boundingRect`` -> box drawn with cv2 -> PNG + one JSON line.

Usage::

    python benchmarks/cam_overhead.py                      # everything (a few minutes on 2 cores)
    python benchmarks/cam_overhead.py --quick              # fewer repeats
    python benchmarks/cam_overhead.py --images ../shared/data/imagenet-val100/images --job-models lite0,resnet50

Optional comparisons: ``pip install torchcam`` and ``pip install --no-deps grad-cam ttach scikit-learn``; missing
packages print "not installed" rows. resnet50 uses random weights (timing only); lite0 uses camloc's weights.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import camloc
from camloc.cam import class_activation_maps, normalize_maps, topk_classes, upsample_maps
from camloc.localization import _components, largest_component_box, threshold_maps

ASSETS = Path(camloc.__file__).parent / "assets"
TARGET_OVERHEAD = 1.10  # camloc (maps + boxes) / plain forward, batch 32, CPU
TARGET_SPEEDUP = 1.5  # camloc job / torch-cam script
TARGET_VS_FORWARD = 0.7  # camloc job / forward-only throughput


# --------------------------------------------------------------------------------------------- optional packages
def _import_torchcam() -> tuple[Any, Any] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchcam.methods import CAM as TorchCamCAM
            from torchcam.utils import overlay_mask
    except Exception:  # ImportError, or a broken optional dependency
        return None
    return TorchCamCAM, overlay_mask


def _import_gradcam() -> Any | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pytorch_grad_cam import GradCAM
    except Exception:
        return None
    return GradCAM


# --------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Spec:
    """How each tool is pointed at a model: camloc CLI spec, torch-cam layer names, grad-cam target layer."""

    name: str
    cli: str
    feature_layer: str  # torch-cam target_layer (module name)
    fc_layer: str  # torch-cam fc_layer (module name)


SPECS = {
    "resnet50": Spec("resnet50", "torchvision:resnet50", "layer4", "fc"),
    "lite0": Spec("lite0", "lite0", "bn2", "classifier"),
}


def build(name: str) -> tuple[torch.nn.Module, Any]:
    """``(model in eval mode, camloc ModelInfo)``; resnet50 has random weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = camloc.create_model(SPECS[name].cli)
    return model.eval(), info


def _module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    return dict(model.named_modules())[name]


# --------------------------------------------------------------------------------------------- timing
def interleaved(fns: dict[str, Callable[[], Any]], *, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function; one call of every function per round, rotating the order."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def paired_ratio(t: list[float], ref: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(t, ref))


def table(title: str, header: Sequence[str], rows: list[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    line = "  ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths))))


# --------------------------------------------------------------------------------------------- part A
def overhead_fns(name: str, model: torch.nn.Module, cam: Any, x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """The methods compared in part A, each a no-argument callable on the batch ``x``."""
    spec = SPECS[name]
    tc = _import_torchcam()
    GradCAM = _import_gradcam()

    def plain() -> Any:
        with torch.no_grad():
            return model(x)

    def camloc_boxes() -> Any:
        out = cam(x, topk=5)  # runs under no_grad itself
        return camloc.localize(out.maps, size=(224, 224)).boxes

    fns: dict[str, Callable[[], Any]] = {"plain model(x)": plain, "camloc top-5 maps + boxes": camloc_boxes}
    if tc is not None:
        TorchCamCAM = tc[0]

        def torchcam_top1() -> Any:
            # README style: hook, forward, ask for each image's top-1 class map (min-max normalised, feature res).
            with TorchCamCAM(model, spec.feature_layer, spec.fc_layer) as extractor:
                with torch.no_grad():
                    out = model(x)
                return extractor(out.argmax(dim=1).tolist(), out)

        fns["torch-cam CAM top-1 map"] = torchcam_top1
    if GradCAM is not None:
        # grad-cam README's choice for resnet50 is layer4[-1] (same output as layer4).
        layer = model.layer4[-1] if name == "resnet50" else _module(model, spec.feature_layer)  # type: ignore[index]

        def gradcam_top1() -> Any:
            # Needs autograd (no no_grad); targets=None -> top-1; returns numpy maps upsampled to the input.
            with GradCAM(model=model, target_layers=[layer]) as gc:
                return gc(input_tensor=x, targets=None)

        fns["grad-cam GradCAM top-1 map"] = gradcam_top1
    return fns


def part_a(models: Sequence[str], *, quick: bool) -> list[tuple[str, int, float]]:
    threads = torch.get_num_threads()
    print(f"\nPart A: overhead per batch (CPU, {threads} threads, 224x224 random input, interleaved rounds)")
    print("  'vs plain' = median over rounds of t(method) / t(plain) in the same round; 'min ratio' = ratio of minima")
    missing = {
        "torch-cam CAM top-1 map": _import_torchcam() is None,
        "grad-cam GradCAM top-1 map": _import_gradcam() is None,
    }
    verdicts: list[tuple[str, int, float]] = []
    for name in models:
        model, info = build(name)
        cam = camloc.CAM(model)  # built once, as explain_images does; the one-time identity check runs in warm-up
        for bs in (1, 32):
            torch.manual_seed(0)
            x = torch.randn(bs, 3, 224, 224)
            fns = overhead_fns(name, model, cam, x)
            if bs == 1:
                repeats, warmup = (8, 2) if quick else (25, 3)
            else:
                repeats, warmup = (3, 1) if quick else (7, 1)
            times = interleaved(fns, repeats=repeats, warmup=warmup)
            ref = times["plain model(x)"]
            rows = []
            for k, t in times.items():
                med, lo = statistics.median(t), min(t)
                ratio = paired_ratio(t, ref)
                rows.append(
                    [
                        k,
                        f"{med * 1e3:.1f}",
                        f"{lo * 1e3:.1f}",
                        f"{bs / med:.1f}",
                        f"{ratio:.3f}x",
                        f"{lo / min(ref):.3f}x",
                    ]
                )
            rows += [[k, "not installed", "", "", "", ""] for k, gone in missing.items() if gone]
            table(
                f"[A] {name}, batch {bs} ({repeats} rounds)",
                ["method", "median ms", "min ms", "img/s", "vs plain", "min ratio"],
                rows,
            )
            verdicts.append((name, bs, paired_ratio(times["camloc top-5 maps + boxes"], ref)))
        profile_camloc(name, model, cam, info, quick=quick)
    return verdicts


def photo_batch(info: Any, n: int = 32) -> torch.Tensor:
    """``n`` input tensors made from random crops of the bundled photos (realistic maps for the profile)."""
    rng = np.random.default_rng(1)
    sources = [Image.open(p).convert("RGB") for p in sorted(ASSETS.glob("*.jpg"))]
    xs = []
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        xs.append(info.preprocess.to_tensor(src.crop((x0, y0, x0 + cw, y0 + ch))))
    return torch.stack(xs)


def _masks(cam: Any, x: torch.Tensor) -> np.ndarray:
    out = cam(x, topk=5)
    return threshold_maps(upsample_maps(out.maps, (224, 224)), 0.2).numpy().astype(np.uint8)


def profile_camloc(name: str, model: torch.nn.Module, cam: Any, info: Any, *, quick: bool) -> None:
    """Stage-by-stage cost of the camloc path at batch 32 (each stage timed on its own, medians)."""
    torch.manual_seed(0)
    x = torch.randn(32, 3, 224, 224)
    with torch.no_grad():
        feats, logits = cam.forward(x)
        weight = cam.head.weight
        _, cls = topk_classes(logits, 5)
        maps = class_activation_maps(feats, weight, cls)
        up = upsample_maps(maps, (224, 224))
        masks = threshold_maps(up, 0.2)
        masks_np = masks.numpy().astype(np.uint8)
        photo_np = _masks(cam, photo_batch(info))
    for tag, mk in (("random input", masks_np), ("photo crops", photo_np)):
        ncomp = [cv2.connectedComponents(m, connectivity=8)[0] - 1 for m in mk.reshape(-1, 224, 224)]
        print(f"  masks ({tag}): fill {mk.mean():.2f}, single-component maps {np.mean(np.equal(ncomp, 1)):.0%}")

    def components_loop(mk: np.ndarray) -> Any:
        return [_components(mk[i, j], 8) for i in range(32) for j in range(5)]

    def fast_loop(mk: np.ndarray) -> Any:
        return [largest_component_box(mk[i, j]) for i in range(32) for j in range(5)]

    x1 = x[:1].clone()
    with torch.no_grad():
        stages: dict[str, Callable[[], Any]] = {
            "plain model(x)": lambda: model(x),
            "CAM head forward (features + head)": lambda: cam.forward(x),
            "softmax + top-5 (topk_classes)": lambda: topk_classes(logits, 5),
            "CAM einsum top-5 (class_activation_maps)": lambda: class_activation_maps(feats, weight, cls),
            "scores: 2nd softmax + gather": lambda: logits.float().softmax(dim=1).gather(1, cls),
            "upsample 160 maps to 224 (bilinear)": lambda: upsample_maps(maps, (224, 224)),
            "isfinite check @224 (once, in localize)": lambda: bool(torch.isfinite(up).all()),
            "normalize_maps max @224 (drawing only)": lambda: normalize_maps(up, mode="max"),
            "threshold_maps @224 (checked, fused)": lambda: threshold_maps(up, 0.2),
            "mask -> numpy uint8": lambda: masks.numpy().astype(np.uint8),
            "labelling only (connectedComponentsWithStats) x160 (rand)": lambda: components_loop(masks_np),
            "labelling only (connectedComponentsWithStats) x160 (photo)": lambda: components_loop(photo_np),
            "largest_component_box x160 (contour fast path) (rand)": lambda: fast_loop(masks_np),
            "largest_component_box x160 (contour fast path) (photo)": lambda: fast_loop(photo_np),
            "localize(maps, size=224) total": lambda: camloc.localize(maps, size=(224, 224)),
            "one-time: CAM() + 1st call (identity), 1 img": lambda: camloc.CAM(model)(x1, topk=5),
            "  reused CAM call, 1 img": lambda: cam(x1, topk=5),
        }
        times = interleaved(stages, repeats=3 if quick else 7, warmup=1)
    ref, ref_min = statistics.median(times["plain model(x)"]), min(times["plain model(x)"])
    rows = [
        [
            k,
            f"{statistics.median(t) * 1e3:.2f}",
            f"{statistics.median(t) / ref:.2%}",
            f"{min(t) * 1e3:.2f}",
            f"{min(t) / ref_min:.2%}",
        ]
        for k, t in times.items()
    ]
    table(
        f"[A-profile] camloc stages, {name}, batch 32",
        ["stage", "median ms", "of plain", "min ms", "of plain (min)"],
        rows,
    )


# --------------------------------------------------------------------------------------------- part B
def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` JPEGs cropped/resized from the bundled photos to sizes between ~500x375 and 1024x768."""
    rng = np.random.default_rng(0)
    sources = [Image.open(p).convert("RGB") for p in sorted(ASSETS.glob("*.jpg"))]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        tw = int(rng.integers(500, 1025))
        th = round(tw * 0.75)
        size = (tw, th) if i % 4 else (th, tw)  # one in four is portrait
        img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.BICUBIC)
        p = folder / f"img_{i:03d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


class _Decode(Dataset):
    def __init__(self, paths: Sequence[Path], preprocess: Any) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            return self.preprocess.to_tensor(img.convert("RGB"))


def job_forward_only(name: str, paths: Sequence[Path], out: Path) -> int:
    model, info = build(name)
    loader = DataLoader(_Decode(paths, info.preprocess), batch_size=32, num_workers=2)
    n = 0
    with torch.no_grad():
        for x in loader:
            model(x)
            n += len(x)
    return n


def job_camloc(name: str, folder: Path, out: Path) -> int:
    from camloc.cli import main

    argv = ["explain", str(folder), "--out", str(out), "--quiet", "--batch-size", "32", "--model", SPECS[name].cli]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"camloc explain exited with {rc}")
    return sum(1 for _ in (out / "results.jsonl").open())


def job_torchcam(name: str, paths: Sequence[Path], out: Path) -> int:
    """The torch-cam way, one image at a time, as its README shows, plus a cv2 box and a JSON line."""
    from torchvision import transforms as T
    from torchvision.transforms.functional import to_pil_image

    TorchCamCAM, overlay_mask = _import_torchcam()  # type: ignore[misc]
    model, info = build(name)
    pp = info.preprocess
    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[pp.interpolation]
    tf = T.Compose([T.Resize(pp.size, interpolation=interp), T.ToTensor(), T.Normalize(pp.mean, pp.std)])
    spec = SPECS[name]
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with TorchCamCAM(model, spec.feature_layer, spec.fc_layer) as extractor, (out / "results.jsonl").open("w") as fh:
        for p in paths:
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


def cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its reaped children (DataLoader workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def profile_job(name: str, paths: Sequence[Path], out: Path, *, quick: bool) -> None:
    """Per-image CPU cost of each step of the two jobs (thread CPU time, min over repeats, up to 32 images)."""
    from torchvision.transforms.functional import to_pil_image

    from camloc._io import atomic_save_png
    from camloc.explain import _Files, explain_images
    from camloc.viz import draw_boxes, overlay, topk_panel

    paths = list(paths)[:32]
    n = len(paths)
    model, info = build(name)
    out.mkdir(parents=True, exist_ok=True)
    items = [it for it in explain_images(paths, model, info, batch_size=32, workers=0) if hasattr(it, "maps")]
    files = _Files(paths, info.preprocess, 512)
    photos = [Image.open(p).convert("RGB") for p in paths]
    heat = [to_pil_image(torch.from_numpy(it.maps[0][::32, ::32].copy()), mode="F") for it in items]

    def boxes(it: Any) -> list[list[float]]:
        sx, sy = it.display_scale
        return [[b.box[0] * sx, b.box[1] * sy, b.box[2] * sx, b.box[3] * sy] for b in it.result.topk]

    ovs = [overlay(it.display, it.maps[0], alpha=0.5) for it in items]
    panels = [topk_panel(it.display, it.maps, boxes(it), ["x"] * 5, scores=[0.5] * 5, title="t") for it in items]
    tc = _import_torchcam()
    full = [tc[1](im, h, alpha=0.5) for im, h in zip(photos, heat)] if tc is not None else []

    def png(images: Sequence[Any], **kw: Any) -> None:
        for a in images:
            img = a if isinstance(a, Image.Image) else Image.fromarray(a)
            img.save(out / "x.png", format="PNG", **kw)

    steps: dict[str, Callable[[], Any]] = {
        "decode+resize (forward-only dataset)": lambda: [_Decode(paths, info.preprocess)[i] for i in range(n)],
        "decode+resize+display (camloc _Files)": lambda: [files[i] for i in range(n)],
        "camloc overlay() + draw_boxes()": lambda: [
            draw_boxes(overlay(it.display, it.maps[0], alpha=0.5), boxes(it)[:1], labels=["x 0.5"]) for it in items
        ],
        "camloc topk_panel() (5 tiles)": lambda: [
            topk_panel(it.display, it.maps, boxes(it), ["x"] * 5, scores=[0.5] * 5, title="t") for it in items
        ],
        "PNG overlay (camloc atomic_save_png)": lambda: [atomic_save_png(out / "o.png", o) for o in ovs],
        "PNG panel (camloc atomic_save_png)": lambda: [atomic_save_png(out / "p.png", o) for o in panels],
        "  for reference: PIL PNG overlay, default level 6": lambda: png(ovs),
    }
    if tc is not None:
        steps["torch-cam overlay_mask (full size)"] = lambda: [tc[1](im, h, alpha=0.5) for im, h in zip(photos, heat)]
        steps["torch-cam script PNG full size (PIL lvl 6)"] = lambda: png(full)
    best: dict[str, float] = {}
    for k, f in steps.items():
        ts = []
        for _ in range(2 if quick else 3):
            t0 = time.thread_time()
            f()
            ts.append(time.thread_time() - t0)
        best[k] = min(ts) / n
    torch.manual_seed(0)
    x = torch.randn(32, 3, *info.preprocess.size)
    with torch.no_grad():
        fwd = []
        for _ in range(2 if quick else 3):
            t0 = time.process_time()
            model(x)
            fwd.append(time.process_time() - t0)
    rows = [["model(x) at batch 32, per image (all threads)", f"{min(fwd) / 32 * 1e3:.1f}"]]
    rows += [[k, f"{v * 1e3:.1f}"] for k, v in best.items()]
    table(f"[B-profile] {name}: CPU ms per image of each step (min of repeats)", ["step", "CPU ms/img"], rows)


def part_b(models: Sequence[str], images: Path | None, n_images: int, *, quick: bool) -> list[tuple[str, float, float]]:
    tc = _import_torchcam()
    tmp = Path(tempfile.mkdtemp(prefix="camloc_bench_"))
    verdicts: list[tuple[str, float, float]] = []
    try:
        if images is None:
            folder = tmp / "images"
            paths = make_images(folder, n_images)
            what = f"{len(paths)} generated JPEGs (500x375..1024x768 from the bundled photos)"
        else:
            from camloc.data.images import find_images

            paths = sorted(find_images([images], recursive=True))[:n_images]
            folder = tmp / "images"
            folder.mkdir()
            for p in paths:  # the job runs on exactly these files
                os.symlink(p.resolve(), folder / p.name)
            paths = sorted(folder.iterdir())
            what = f"{len(paths)} images from {images}"
        sizes = [Image.open(p).size for p in paths]
        mp = statistics.mean(w * h for w, h in sizes) / 1e6
        print(f"\nPart B: folder job on {what}; mean {mp:.2f} MP; batch 32, decode workers 2, model creation included")
        warm = tmp / "warm"
        warm.mkdir()
        for p in paths[:4]:
            os.symlink(p.resolve(), warm / p.name)
        runs = 0

        def fresh() -> Path:
            nonlocal runs
            runs += 1
            d = tmp / f"out{runs}"
            return d

        for name in models:
            jobs: dict[str, Callable[[Path], int]] = {
                "forward only (DataLoader + model(x))": functools.partial(job_forward_only, name, paths),
                "camloc explain (maps+boxes+2 PNG+JSON)": functools.partial(job_camloc, name, folder),
            }
            if tc is not None:
                jobs["torch-cam script (map+box+PNG+JSON)"] = functools.partial(job_torchcam, name, paths)
            # warm-up on 4 images (imports, allocator), then interleaved rounds on the whole folder
            job_forward_only(name, list(warm.iterdir()), fresh())
            job_camloc(name, warm, fresh())
            if tc is not None:
                job_torchcam(name, list(warm.iterdir()), fresh())
            counts: dict[str, int] = {}
            times: dict[str, list[float]] = {k: [] for k in jobs}
            names = list(jobs)
            cpu: dict[str, list[float]] = {k: [] for k in jobs}
            for r in range(1 if quick else 3):
                for k in names[r % len(names) :] + names[: r % len(names)]:
                    c0, t0 = cpu_seconds(), time.perf_counter()
                    counts[k] = jobs[k](fresh())
                    times[k].append(time.perf_counter() - t0)
                    cpu[k].append(cpu_seconds() - c0)
                for d in tmp.glob("out*"):
                    shutil.rmtree(d, ignore_errors=True)
            n = len(paths)
            if any(c != n for c in counts.values()):
                raise RuntimeError(f"a job did not process all {n} images: {counts}")
            ref = times["forward only (DataLoader + model(x))"]
            cam_t = times["camloc explain (maps+boxes+2 PNG+JSON)"]
            rows = []
            for k, t in times.items():
                med = statistics.median(t)
                rows.append(
                    [
                        k,
                        f"{med:.2f}",
                        f"{statistics.median(cpu[k]) / n * 1e3:.0f}",
                        f"{n / med:.1f}",
                        f"{paired_ratio(ref, t):.3f}x",
                        f"{paired_ratio(t, cam_t):.2f}x",
                    ]
                )
            if tc is None:
                rows.append(["torch-cam script (map+box+PNG+JSON)", "not installed", "", "", "", ""])
            table(
                f"[B] {name}, {n} images ({len(cam_t)} rounds)",
                ["job", "median s", "CPU ms/img", "img/s", "speed vs fwd-only", "camloc speed-up"],
                rows,
            )
            profile_job(name, paths, tmp / "profile", quick=quick)
            speedup = (
                paired_ratio(times["torch-cam script (map+box+PNG+JSON)"], cam_t) if tc is not None else float("nan")
            )
            verdicts.append((name, speedup, paired_ratio(ref, cam_t)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return verdicts


# --------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--models", default="resnet50,lite0", help="part A models (resnet50, lite0)")
    ap.add_argument("--job-models", default="lite0", help="part B models (lite0, resnet50)")
    ap.add_argument("--images", type=Path, help="folder of images for part B (default: generated)")
    ap.add_argument("--n-images", type=int, default=64, help="images in part B (default 64)")
    ap.add_argument("--parts", default="A,B", help="which parts to run (A, B or A,B)")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    job_models = [m for m in args.job_models.split(",") if m]
    for m in (*models, *job_models):
        if m not in SPECS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(SPECS)}")
    parts = {p.strip().upper() for p in args.parts.split(",")}
    threads, cpus = torch.get_num_threads(), os.cpu_count()
    print(f"torch {torch.__version__}, {threads} threads, {cpus} CPUs; camloc {camloc.__version__}")
    state = {True: "installed", False: "not installed"}
    tc, gc = _import_torchcam() is not None, _import_gradcam() is not None
    print(f"torch-cam: {state[tc]}; pytorch-grad-cam: {state[gc]}")
    a = part_a(models, quick=args.quick) if "A" in parts else []
    b = part_b(job_models, args.images, args.n_images, quick=args.quick) if "B" in parts else []
    print("\nTargets")
    for name, bs, ratio in a:
        if bs == 32:
            ok = "MET" if ratio <= TARGET_OVERHEAD else "MISSED"
            print(
                f"  A {name:<9} camloc maps+boxes / plain forward, batch 32: {ratio:.3f}x (<= {TARGET_OVERHEAD}x) {ok}"
            )
    for name, speedup, vs_fwd in b:
        ok1 = (
            "n/a (torch-cam not installed)"
            if speedup != speedup
            else ("MET" if speedup >= TARGET_SPEEDUP else "MISSED")
        )
        ok2 = "MET" if vs_fwd >= TARGET_VS_FORWARD else "MISSED"
        print(f"  B {name:<9} camloc job vs torch-cam script: {speedup:.2f}x (>= {TARGET_SPEEDUP}x) {ok1}")
        print(f"  B {name:<9} camloc job vs forward-only throughput: {vs_fwd:.3f}x (>= {TARGET_VS_FORWARD}x) {ok2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
