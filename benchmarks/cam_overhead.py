"""What do class activation maps + boxes cost on top of a plain forward? camloc vs torch-cam vs pytorch-grad-cam.

Tensors (CPU, ``torch.no_grad``, eval, random 224x224 input, default ``torch`` threads): time per batch of

1. ``model(x)`` (the reference);
2. camloc: ``CAM(model)(x, topk=5)`` + ``localize(out.maps, size=(224, 224))`` (top-5 maps upsampled to the input,
   normalised, thresholded at 0.2 of their max, largest 8-connected component -> boxes);
3. torch-cam ``torchcam.methods.CAM`` (top-1 class map at feature resolution, as in its README);
4. pytorch-grad-cam ``GradCAM`` (top-1 class map, upsampled to the input; needs a backward pass, so no ``no_grad``),

with the ratio to the plain forward (median of per-round ratios; the methods run interleaved round by round so a
busy machine slows all of them alike). A stage-by-stage profile of the camloc path follows.

The whole ``camloc explain`` folder job (start-up included, against a torch-cam script and a forward-only loop, on
real photos) is measured by ``benchmarks/folder_job.py``.

Usage::

    python benchmarks/cam_overhead.py              # a few minutes on 2 cores
    python benchmarks/cam_overhead.py --quick      # fewer repeats
    python benchmarks/cam_overhead.py --models lite0

Optional comparisons: ``pip install torchcam`` and ``pip install --no-deps grad-cam ttach scikit-learn``; missing
packages print "not installed" rows. resnet50 uses random weights (timing only); lite0 uses camloc's weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
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

import camloc
from camloc.cam import class_activation_maps, normalize_maps, topk_classes, upsample_maps
from camloc.localization import _components, largest_component_box, threshold_maps

ASSETS = Path(camloc.__file__).parent / "assets"
TARGET_OVERHEAD = 1.10  # camloc (maps + boxes) / plain forward, batch 32, CPU


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
    print(f"\nOverhead per batch (CPU, {threads} threads, 224x224 random input, interleaved rounds)")
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


# --------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--models", default="resnet50,lite0", help="models (resnet50, lite0)")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in SPECS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(SPECS)}")
    threads, cpus = torch.get_num_threads(), os.cpu_count()
    print(f"torch {torch.__version__}, {threads} threads, {cpus} CPUs; camloc {camloc.__version__}")
    state = {True: "installed", False: "not installed"}
    tc, gc = _import_torchcam() is not None, _import_gradcam() is not None
    print(f"torch-cam: {state[tc]}; pytorch-grad-cam: {state[gc]}")
    a = part_a(models, quick=args.quick)
    print("\nTargets")
    for name, bs, ratio in a:
        if bs == 32:
            ok = "MET" if ratio <= TARGET_OVERHEAD else "MISSED"
            print(
                f"  A {name:<9} camloc maps+boxes / plain forward, batch 32: {ratio:.3f}x (<= {TARGET_OVERHEAD}x) {ok}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
