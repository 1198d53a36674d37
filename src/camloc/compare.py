"""Several map methods on one boxed data set, side by side: the comparison table of ``camloc compare``.

Per method (a name of ``camloc methods``, optionally with its arguments, ``NAME(k=v;k=v)``):

- one evaluation pass (:func:`camloc.evaluate.evaluate_samples`, the protocol's fixed-threshold rule): top-1 / top-5
  cls, top-1 / top-5 loc, GT-known, MaxBoxAcc, MaxBoxAccV2 (PxAP with masks), and GT-known on images with one /
  several GT boxes (:func:`camloc.metrics.breakdown_counts`);
- with ``holdout_folds=N``, the same pass also calibrates (:func:`camloc.calibrate.calibrate_samples`): GT-known
  and top-1 loc of the auto-chosen box rule on images the rule was not fitted on (each of N folds calibrated on the
  others), and the per-image-threshold ceiling;
- the time per image of ``forward + maps`` of two classes (top-1 and true class, as the evaluation asks), on one
  fixed batch of the data, every method interleaved round by round and the median taken (round 0 warms up). The
  ``cam`` method is always timed too, as the reference of ``relative_time``.

Every number comes from the library's own evaluation and calibration; this module only runs them and lays out the
table (:meth:`Comparison.to_markdown`, :meth:`Comparison.to_dict`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from camloc._checks import check_number, fail
from camloc.errors import CamlocError

__all__ = ["Comparison", "MethodRow", "compare_methods", "parse_method_list", "time_methods"]

#: ``(metrics key, column title)`` of the table, in order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("top1_cls", "top-1 cls"),
    ("top1_loc", "top-1 loc"),
    ("gt_known_loc", "GT-known"),
    ("maxboxacc", "MaxBoxAcc"),
    ("maxboxacc_v2", "MaxBoxAccV2"),
)


def parse_method_list(text: str, *, option: str = "methods") -> list[tuple[str, str, dict[str, Any]]]:
    """``"cam,best,affinity(layer=blocks.3;iters=2)"`` -> ``[(label, name, args), ...]``: split at commas outside
    parentheses, each item checked against the method table (errors name ``option``). The label is the item as
    written; the same item twice is an error."""
    from camloc.methods.registry import parse_method_spec, resolve_method, split_args

    if not isinstance(text, str):
        fail(option, "a comma-separated list of methods", text, type_error=True)
    items = split_args(text, sep=",")
    if not items:
        fail(option, "at least one method, e.g. cam,best", repr(text))
    out: list[tuple[str, str, dict[str, Any]]] = []
    for item in items:
        spec = parse_method_spec(item)
        name, args = (spec, {}) if isinstance(spec, str) else spec
        resolve_method(name, args, names=(option, option))
        if any(label == item for label, _, _ in out):
            fail(option, "each method once", repr(item))
        out.append((item, name, dict(args)))
    return out


def time_methods(producers: dict[str, Any], x: Any, true: Any, *, rounds: int = 3) -> dict[str, float]:
    """Seconds per image of each producer on the batch ``x [n, 3, H, W]`` (maps of the top-1 and ``true [n]``
    classes): one warm-up round, then ``rounds`` rounds with every producer in turn; the median per producer."""
    import torch

    check_number("rounds", rounds, low=1, integer=True)
    n = int(x.shape[0])
    times: dict[str, list[float]] = {k: [] for k in producers}

    def classes(lg: torch.Tensor) -> torch.Tensor:
        return torch.stack([lg.argmax(1), true.to(lg.device)], 1)

    for r in range(rounds + 1):
        for label, p in producers.items():
            t0 = time.perf_counter()
            p(x, classes=classes)
            if r:
                times[label].append((time.perf_counter() - t0) / n)
    return {k: statistics.median(v) for k, v in times.items()}


@dataclass(frozen=True)
class MethodRow:
    """One method's numbers (fractions in ``[0, 1]``; ``seconds_per_image`` and ``relative_time`` to ``cam``)."""

    label: str
    method: str
    method_args: dict[str, Any]
    images: int
    metrics: dict[str, float]
    breakdown: dict[str, Any] | None
    holdout: dict[str, Any] | None
    seconds_per_image: float
    relative_time: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "method": self.method,
            "method_args": dict(self.method_args),  # as written: parse_method_list keeps the strings
            "images": self.images,
            "metrics": self.metrics,
            "breakdown": self.breakdown,
            "holdout": self.holdout,
            "seconds_per_image": self.seconds_per_image,
            "relative_time": self.relative_time,
        }


@dataclass(frozen=True)
class Comparison:
    """The table: rows in the order asked, and how they were measured."""

    rows: list[MethodRow]
    model: str
    protocol: str
    holdout_folds: int | None
    timing: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "protocol": self.protocol,
            "holdout_folds": self.holdout_folds,
            "timing": self.timing,
            "data": self.data,
            "rows": [r.to_dict() for r in self.rows],
        }

    def to_markdown(self) -> str:
        """A Markdown table (percentages with one decimal; times in ms and x cam)."""
        cols = [c for _, c in COLUMNS] + ["GT-known 1 box / several"]
        if self.holdout_folds:
            cols += [f"held out ({self.holdout_folds} folds) top-1 loc / GT-known", "ceiling"]
        cols += ["ms / image", "x cam"]
        lines = [
            f"{self.model}, {self.protocol} protocol, fixed-threshold boxes (0.2 of the max, largest component); "
            f"time: batch of {self.timing['batch']}, median of {self.timing['rounds']} rounds",
            "",
            "| method | images | " + " | ".join(cols) + " |",
            "|---|---:|" + "---:|" * len(cols),
        ]
        for r in self.rows:
            vals = [_pct(r.metrics.get(k)) for k, _ in COLUMNS]
            b = r.breakdown or {}
            vals.append(f"{_pct(b.get('gt_known_loc_single_box'))} / {_pct(b.get('gt_known_loc_multi_box'))}")
            if self.holdout_folds:
                ho = r.holdout or {}
                auto = ho.get("auto") or {}
                vals.append(f"{_pct(auto.get('top1_loc'))} / {_pct(auto.get('gt_known_loc'))}")
                vals.append(_pct(ho.get("ceiling")))
            vals += [f"{1000 * r.seconds_per_image:.0f}", f"{r.relative_time:.2f}"]
            lines.append(f"| {r.label} | {r.images} | " + " | ".join(vals) + " |")
        return "\n".join(lines) + "\n"


def _pct(v: Any) -> str:
    return "-" if v is None or v != v else f"{100 * float(v):.1f}"


def compare_methods(
    samples: Sequence[Any],
    model: Any,
    info: Any,
    methods: str | Sequence[str],
    *,
    protocol: str = "paper",
    holdout_folds: int | None = None,
    batch_size: int = 32,
    device: Any = "cpu",
    workers: int | None = None,
    progress: bool = False,
    time_batch: int = 8,
    rounds: int = 3,
    data: dict[str, Any] | None = None,
) -> Comparison:
    """Evaluate (and with ``holdout_folds``, calibrate held out) every method of ``methods`` (a comma-separated
    string or a list of items, see :func:`parse_method_list`) on annotated ``samples``; time them side by side
    (module docstring). ``data`` is recorded as is."""
    import torch

    from camloc.calibrate import calibrate_samples
    from camloc.evaluate import _pipeline, evaluate_samples
    from camloc.methods import get_method
    from camloc.sweep import get_protocol

    check_number("time_batch", time_batch, low=1, integer=True)
    check_number("rounds", rounds, low=1, integer=True)
    if holdout_folds is not None:
        check_number("holdout_folds", holdout_folds, low=2, integer=True)
    specs = parse_method_list(methods if isinstance(methods, str) else ",".join(methods))
    if not samples:
        fail("samples", "at least one annotated image", "none")
    producers = {label: get_method(name, model, info, **args) for label, name, args in specs}
    reference = producers.get("cam")
    timed = dict(producers) if reference is not None else {"cam": get_method("cam", model, info), **producers}

    proto = get_protocol(protocol)
    pipe = _pipeline(info.preprocess, proto)
    tb: list[Any] = []
    xs: list[Any] = []
    for s in samples:  # the first readable images (an unreadable one is the evaluation's failure to report)
        if len(tb) == time_batch:
            break
        try:
            xs.append(pipe(s.path).tensor)
        except (CamlocError, OSError):
            continue
        tb.append(s)
    if not tb:
        fail("samples", "at least one readable image", f"none of {len(samples)}")
    x = torch.stack(xs).to(device)
    true = torch.tensor([int(s.class_idx) for s in tb])
    per_image = time_methods(timed, x, true, rounds=rounds)

    rows: list[MethodRow] = []
    for label, name, args in specs:  # each pass builds the method as `camloc evaluate --method` does
        held: dict[str, Any] | None = None
        kw = {"batch_size": batch_size, "device": device, "workers": workers, "progress": progress}
        if holdout_folds:
            calib, res = calibrate_samples(samples, model, info, protocol=protocol, method=name, method_args=args,
                                           holdout_folds=holdout_folds, **kw)  # fmt: skip
            ho = calib.holdout or {}
            held = {
                "auto": ho.get("auto"),
                "paper": ho.get("paper"),
                "chosen": [c.get("candidate") for c in ho.get("chosen", [])],
                "ceiling": (ho.get("oracle") or {}).get("largest"),
            }
        else:
            res = evaluate_samples(samples, model, info, protocol=protocol, method=name, method_args=args, **kw)
        t = per_image[label]
        rows.append(
            MethodRow(
                label=label,
                method=name,
                method_args=args,
                images=res.n_box_images,
                metrics={k: float(v) for k, v in res.metrics.items() if isinstance(v, int | float)},
                breakdown=res.breakdown,
                holdout=held,
                seconds_per_image=t,
                relative_time=t / per_image["cam"],
            )
        )
    timing = {"batch": len(tb), "rounds": rounds, "reference": "cam", "reference_seconds_per_image": per_image["cam"],
              "device": str(device)}  # fmt: skip
    return Comparison(rows, getattr(info, "name", "model"), proto.name, holdout_folds, timing, dict(data or {}))
