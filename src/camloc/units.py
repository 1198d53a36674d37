r"""Class-specific units (the paper's section 5): which trunk units a class's logit relies on, and what they see.

For a linear head, class ``c``'s logit is :math:`\sum_k w^c_k \bar f_k + b_c` (:math:`\bar f_k` the pooled
activation of unit ``k``), so two rankings of the ``K`` units are natural:

- by weight :math:`w^c_k`: what the classifier relies on per unit of activation;
- by contribution :math:`w^c_k \cdot \mathrm{mean}(\bar f_k \mid \text{images of } c)`: what the logit of the
  class's own images is actually made of.

:func:`scan_units` streams over the images once and keeps, for **every** unit, its ``n_top`` highest-activating
images (the unit's spatial maximum) and where that maximum is (feature-grid row, col), in two arrays
``[K, n_top]`` updated batch by batch (bounded memory: ``O(K n_top)``, whatever the number of images), and the
mean pooled activation of every unit over each data class's images (``[C_data, K]``). Everything the report
needs comes from this one pass plus one more forward of the few top images (their unit maps).

:func:`write_units_report` (``camloc units``) writes ``units.json``, ``units.png`` (a row per unit: its top
images with the unit's map thresholded at ``threshold`` of its max and the box of the largest region) and
``index.html``. With ``unit=K`` it reports one unit: the classes that weight it most and its top images.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from camloc._checks import check_number, fail
from camloc.errors import UnsupportedModelError
from camloc.models.info import ModelInfo, Preprocess

__all__ = ["UnitScan", "rank_units", "scan_units", "unit_maps", "write_units_report"]


@dataclass(frozen=True)
class UnitScan:
    """One pass over images: every unit's top images and every data class's mean pooled activations.

    Attributes:
        scores: ``float32 [K, n]`` the unit's spatial max on its top images, descending (``-inf``: no image).
        images: ``int64 [K, n]`` indices into :attr:`paths` (``-1``: no image).
        locations: ``int64 [K, n, 2]`` (row, col) of the maximum in the feature grid.
        class_mean: ``float64 [C_data, K]`` mean over each data class's images of the pooled activation.
        class_counts: ``int64 [C_data]`` images per data class.
        paths: the images, in scan order; ``labels``: ``int64 [N]`` their data-class indices.
        feature_size: ``(h, w)`` of the feature grid.
    """

    scores: np.ndarray
    images: np.ndarray
    locations: np.ndarray
    class_mean: np.ndarray
    class_counts: np.ndarray
    paths: tuple[Path, ...]
    labels: np.ndarray
    feature_size: tuple[int, int]


def _linear_weight(model: nn.Module) -> tuple[Any, torch.Tensor]:
    from camloc.resolve import resolve_head

    resolved = resolve_head(model)
    w = getattr(resolved.head, "weight", None)
    if not isinstance(w, torch.Tensor) or resolved.head.pool != "avg":
        raise UnsupportedModelError(
            f"`camloc units` needs a GAP -> linear head (weights w_k^c); {resolved.source} has "
            f"{resolved.head.describe()}"
        )
    return resolved, w.detach().double().cpu()


def scan_units(
    model: nn.Module,
    preprocess: Preprocess,
    items: Sequence[tuple[str | os.PathLike[str], int]],
    *,
    num_classes: int,
    n_top: int = 6,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: bool = False,
) -> UnitScan:
    """Stream ``(path, data-class)`` items through the model's trunk once (see the module docstring).

    Ties in a unit's score (its spatial max; saturating units such as ReLU6 outputs reach the same max on many
    images) go to the image where the unit's mean activation is higher, then to the earlier image. Unreadable
    images raise, naming every one of them.
    """
    from camloc.fit import stream_image_batches

    check_number("n_top", n_top, low=1, integer=True)
    resolved, w = _linear_weight(model)
    k = int(w.shape[1])
    paths = [Path(p) for p, _ in items]
    labels = np.asarray([lbl for _, lbl in items], np.int64)
    top_s = torch.full((k, n_top), -torch.inf)
    top_i = torch.full((k, n_top), -1, dtype=torch.long)
    top_l = torch.zeros((k, n_top), dtype=torch.long)  # flat index into the feature grid
    top_m = torch.full((k, n_top), -torch.inf)  # the unit's mean over the image: the tie-break
    sums = torch.zeros((num_classes, k), dtype=torch.float64)
    size = (0, 0)
    batches = stream_image_batches(
        paths, preprocess, batch_size=batch_size, device=device, workers=workers, progress=progress, desc="units"
    )
    with torch.no_grad():
        for good, x in batches:
            idx = torch.tensor(good)
            f, _ = resolved.run(x)
            f = f.float().cpu()
            size = (int(f.shape[2]), int(f.shape[3]))
            flat = f.flatten(2)  # [B, K, hw]
            s, loc = flat.max(dim=2)  # [B, K]
            m = flat.mean(dim=2)  # [B, K]
            sums.index_add_(0, torch.from_numpy(labels[idx.numpy()]), m.double())
            cat_s = torch.cat([top_s, s.T], dim=1)
            cat_m = torch.cat([top_m, m.T], dim=1)
            cat_i = torch.cat([top_i, idx[None].expand(k, -1)], dim=1)
            cat_l = torch.cat([top_l, loc.T], dim=1)
            # descending by max, then by mean, then earlier image first: two stable sorts (minor key first)
            by_mean = torch.sort(cat_m, dim=1, descending=True, stable=True).indices
            by_max = torch.sort(cat_s.gather(1, by_mean), dim=1, descending=True, stable=True).indices
            order = by_mean.gather(1, by_max)[:, :n_top]
            top_s, top_m = cat_s.gather(1, order), cat_m.gather(1, order)
            top_i, top_l = cat_i.gather(1, order), cat_l.gather(1, order)
    counts = np.bincount(labels, minlength=num_classes).astype(np.int64)
    mean = sums.numpy() / np.maximum(counts, 1)[:, None]
    w_grid = max(size[1], 1)
    locs = np.stack([top_l.numpy() // w_grid, top_l.numpy() % w_grid], axis=-1)
    return UnitScan(top_s.numpy(), top_i.numpy(), locs, mean, counts, tuple(paths), labels, size)


def rank_units(weight: np.ndarray, class_index: int, mean_activation: np.ndarray | None = None) -> np.ndarray:
    """Unit indices ``int64 [K]`` of class ``class_index``, best first.

    ``weight``: ``[C, K]`` head weights; with ``mean_activation [K]`` (the class's images' mean pooled
    activation) the ranking is by ``w^c_k * mean_activation_k``, else by ``w^c_k``. Ties keep the lower index.
    """
    w = np.asarray(weight, np.float64)[class_index]
    score = w if mean_activation is None else w * np.asarray(mean_activation, np.float64)
    return np.argsort(-score, kind="stable")


def unit_maps(
    model: nn.Module, preprocess: Preprocess, paths: Sequence[Path], units: Sequence[int], *, device: Any = "cpu"
) -> tuple[np.ndarray, list[Any]]:
    """``(float32 [N, h, w] maps, geometries)``: unit ``units[i]``'s raw activation map on image ``paths[i]``."""
    from camloc.pipeline import ImagePipeline

    resolved, _ = _linear_weight(model)
    pipe = ImagePipeline(preprocess)
    prepared = [pipe(p) for p in paths]
    out = []
    with torch.no_grad():
        for i in range(0, len(prepared), 32):
            chunk = prepared[i : i + 32]
            f, _ = resolved.run(torch.stack([p.tensor for p in chunk]).to(device))
            sel = torch.tensor(list(units[i : i + 32]), device=f.device)
            out.append(f[torch.arange(len(chunk), device=f.device), sel].float().cpu().numpy())
    maps = np.concatenate(out) if out else np.zeros((0, 1, 1), np.float32)
    return maps, [p.geometry for p in prepared]


# --------------------------------------------------------------------------------------------- the report


def _unit_entry(
    u: int,
    scan: UnitScan,
    weight: np.ndarray,
    model_classes: Sequence[str],
    data_classes: Sequence[str],
    c: int | None,
    top_classes: int,
) -> dict[str, Any]:
    col = weight[:, u]
    by_w = np.argsort(-col, kind="stable")[:top_classes]
    act = scan.class_mean[:, u]
    by_a = np.argsort(-act, kind="stable")[:top_classes]
    entry: dict[str, Any] = {
        "unit": int(u),
        "classes_weighting_it_most": [{"class": model_classes[i], "weight": float(col[i])} for i in by_w],
        "classes_activating_it_most": [
            {"class": data_classes[i], "mean_activation": float(act[i])} for i in by_a if scan.class_counts[i]
        ],
    }
    if c is not None:
        entry["weight"] = float(weight[c, u])
    return entry


def write_units_report(
    model: nn.Module,
    info: ModelInfo,
    items: Sequence[tuple[str | os.PathLike[str], int]],
    data_classes: Sequence[str],
    out: str | os.PathLike[str],
    *,
    class_name: str | None = None,
    unit: int | None = None,
    top_units: int = 8,
    n_top: int = 6,
    threshold: float = 0.5,
    top_classes: int = 5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Scan ``items`` once and write ``units.json``, ``units.png`` and ``index.html`` under ``out``.

    Exactly one of ``class_name`` (a class of the model: its ``top_units`` units by contribution
    ``w^c_k * mean activation`` on the data's images of that class, and by weight) or ``unit`` (one unit: the
    classes that weight it most). Returns the JSON document.
    """
    from camloc._io import atomic_save_png, atomic_write_json, atomic_write_text

    if (class_name is None) == (unit is None):
        fail("class_name / unit", "exactly one of them", f"class_name={class_name!r}, unit={unit!r}")
    check_number("top_units", top_units, low=1, integer=True)
    check_number("threshold", threshold, low=0.0, high=1.0)
    _, w_t = _linear_weight(model)
    weight = w_t.numpy()
    cats = list(info.categories)
    scan = scan_units(
        model, info.preprocess, items, num_classes=len(data_classes), n_top=n_top, batch_size=batch_size,
        device=device, workers=workers, progress=progress,
    )  # fmt: skip
    doc: dict[str, Any] = {
        "schema_version": 1,
        "tool": "camloc",
        "command": "units",
        "model": info.name,
        "images": len(scan.paths),
        "units_total": int(weight.shape[1]),
        "threshold": threshold,
        "feature_size": list(scan.feature_size),
    }
    c: int | None = None
    if class_name is not None:
        if class_name not in cats:
            fail("class", "a class of the model (" + ", ".join(cats[:20]) + (", ..." if len(cats) > 20 else ")"),
                 repr(class_name))  # fmt: skip
        c = cats.index(class_name)
        in_data = class_name in data_classes and scan.class_counts[list(data_classes).index(class_name)] > 0
        if in_data:
            mean_act = scan.class_mean[list(data_classes).index(class_name)]
        else:  # the class has no images in the data: its units' mean activation over all images
            mean_act = (scan.class_mean * scan.class_counts[:, None]).sum(0) / max(1, int(scan.class_counts.sum()))
        by_w = rank_units(weight, c)
        by_wa = rank_units(weight, c, mean_act)
        doc.update(
            {
                "class": class_name,
                "class_index": c,
                "activation_source": "the class's images" if in_data else "all images (the class has none)",
                "by_weight": [{"unit": int(u), "weight": float(weight[c, u])} for u in by_w[:top_units]],
                "by_contribution": [
                    {
                        "unit": int(u),
                        "weight": float(weight[c, u]),
                        "mean_activation": float(mean_act[u]),
                        "contribution": float(weight[c, u] * mean_act[u]),
                    }
                    for u in by_wa[:top_units]
                ],
            }
        )
        chosen = list(dict.fromkeys([int(u) for u in by_wa[:top_units]] + [int(u) for u in by_w[:top_units]]))
    else:
        assert unit is not None
        if not 0 <= unit < weight.shape[1]:
            fail("unit", f"a unit index in [0, {weight.shape[1]})", unit)
        chosen = [int(unit)]
        doc["unit"] = int(unit)
    units = [_unit_entry(u, scan, weight, cats, data_classes, c, top_classes) for u in chosen]
    # the top images' unit maps: one more forward of those few images
    # images where the unit does not fire at all (max <= 0) are no "top images"
    pairs = [(u, int(i), j) for u in chosen for j, i in enumerate(scan.images[u]) if i >= 0 and scan.scores[u, j] > 0]
    maps, geoms = unit_maps(model, info.preprocess, [scan.paths[i] for _, i, _ in pairs], [u for u, _, _ in pairs],
                            device=device)  # fmt: skip
    tiles, captions = _tiles(pairs, maps, geoms, scan, threshold, info.preprocess, units, data_classes)
    for e in units:
        e["top_images"] = tiles[e["unit"]]
    doc["units"] = units
    o = Path(out)
    if captions:
        from camloc.viz import image_grid

        grid = image_grid([t for t, _ in captions], ncols=n_top, captions=[s for _, s in captions], max_side=160)
        atomic_save_png(o / "units.png", grid)
        doc["png"] = "units.png"
    atomic_write_json(o / "units.json", doc)
    atomic_write_text(o / "index.html", _html(doc))
    return doc


def _tiles(
    pairs: list[tuple[int, int, int]],
    maps: np.ndarray,
    geoms: list[Any],
    scan: UnitScan,
    threshold: float,
    preprocess: Preprocess,
    units: list[dict[str, Any]],
    data_classes: Sequence[str],
) -> tuple[dict[int, list[dict[str, Any]]], list[tuple[np.ndarray, str]]]:
    from camloc.data.images import load_image
    from camloc.localization import localize
    from camloc.viz import draw_boxes, overlay

    per_unit: dict[int, list[dict[str, Any]]] = {e["unit"]: [] for e in units}
    grid: list[tuple[np.ndarray, str]] = []
    if not pairs:
        return per_unit, grid
    rows: dict[int, list[tuple[np.ndarray, str]]] = {e["unit"]: [] for e in units}
    h, w = preprocess.size
    loc = localize(torch.from_numpy(maps[:, None]), threshold=threshold, size=(h, w))
    for n, (u, i, j) in enumerate(pairs):
        box = geoms[n].map_boxes(loc.boxes[n, 0].numpy(), "network", "original").tolist()
        row, col = (int(v) for v in scan.locations[u, j])
        per_unit[u].append(
            {
                "path": str(scan.paths[i]),
                "class": data_classes[int(scan.labels[i])],
                "max_activation": float(scan.scores[u, j]),
                "location": [row, col],
                "box": [round(float(v), 2) for v in box],
            }
        )
        loaded = load_image(scan.paths[i], working_max_side=320)
        img = np.asarray(loaded.image)
        m = np.clip(maps[n] / max(float(maps[n].max()), 1e-12), 0, 1)
        m = np.where(m >= threshold, m, 0.0)  # the thresholded unit map
        ov = overlay(img, m, alpha=0.5)
        sx, sy = loaded.size[0] / loaded.original_size[0], loaded.size[1] / loaded.original_size[1]
        ov = draw_boxes(ov, [[box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]], colors=(255, 255, 255))
        rows[u].append((ov, f"u{u} #{j + 1} {scan.scores[u, j]:.2f}"))
    n_top = scan.images.shape[1]
    blank = np.full_like(rows[pairs[0][0]][0][0], 255)
    for u, tiles in rows.items():  # one grid row per unit, padded where it fires on fewer images
        grid += tiles + [(blank, f"u{u} -")] * (n_top - len(tiles))
    return per_unit, grid


def _html(doc: dict[str, Any]) -> str:
    e = html.escape
    title = f"units of class {doc['class']}" if "class" in doc else f"unit {doc['unit']}"
    parts = [f"<!doctype html><meta charset='utf-8'><title>camloc {e(title)}</title>", f"<h1>{e(doc['model'])}: "
             f"{e(title)}</h1>", f"<p>{doc['images']} images scanned; {doc['units_total']} units.</p>"]  # fmt: skip
    if "png" in doc:
        parts.append(f"<img src='{e(doc['png'])}' style='max-width:100%'>")
    for key, label in (("by_contribution", "by w x mean activation"), ("by_weight", "by weight")):
        if key in doc:
            rows = "".join(f"<tr><td>{r['unit']}</td><td>{r['weight']:.4f}</td></tr>" for r in doc[key])
            parts.append(f"<h2>Units {label}</h2><table><tr><th>unit</th><th>weight</th></tr>{rows}</table>")
    for u in doc["units"]:
        wc = ", ".join(f"{e(str(c['class']))} ({c['weight']:.3f})" for c in u["classes_weighting_it_most"])
        ac = ", ".join(f"{e(str(c['class']))} ({c['mean_activation']:.3f})" for c in u["classes_activating_it_most"])
        imgs = "".join(
            f"<li>{e(t['path'])} ({e(str(t['class']))}): max {t['max_activation']:.3f} at {t['location']}, "
            f"box {t['box']}</li>"
            for t in u["top_images"]
        )
        parts.append(
            f"<h3>unit {u['unit']}</h3><p>classes weighting it most: {wc}</p>"
            f"<p>classes whose images activate it most: {ac}</p><ul>{imgs}</ul>"
        )
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------- CLI


def register(p: Any) -> None:
    """Fill the ``camloc units`` sub-parser (see :mod:`camloc.cli`)."""
    from camloc.cli import _model_args

    p.add_argument("data", type=Path, metavar="DATA", help="images with class labels (any `camloc fit` layout)")
    _model_args(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--class", dest="class_name", help="a class of the model: rank its units")
    g.add_argument("--unit", type=int, help="one unit: the classes weighting it most and its top images")
    p.add_argument("--top-units", type=int, default=8, help="units per ranking (default 8)")
    p.add_argument("--images", type=int, default=6, help="top images kept per unit (default 6)")
    p.add_argument("--threshold", type=float, default=0.5, help="unit-map threshold, fraction of its max")
    p.add_argument("--split", default="all", choices=("all", "train", "val"), help="which images of DATA")
    p.add_argument("--out", type=Path, default=Path("camloc_units"))
    p.set_defaults(_out_is_folder=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_units)


def cmd_units(args: Any) -> int:
    import sys

    from camloc.cli import load_model_from_args
    from camloc.training.data import discover

    split = discover(args.data, val_fraction=0.0, seed=0)
    items = {"all": split.train + split.val, "train": split.train, "val": split.val}[args.split]
    if not items:
        fail("data", f"images in the {args.split!r} split", f"none in {args.data}")
    model, info = load_model_from_args(args)
    doc = write_units_report(
        model, info, items, split.classes, args.out, class_name=args.class_name, unit=args.unit,
        top_units=args.top_units, n_top=args.images, threshold=args.threshold, batch_size=args.batch_size,
        device=args.device, workers=args.workers, progress=not args.quiet,
    )  # fmt: skip
    if not args.quiet:
        print(f"camloc: {len(doc['units'])} unit(s) reported over {doc['images']} images -> {args.out}",
              file=sys.stderr)  # fmt: skip
    return 0
