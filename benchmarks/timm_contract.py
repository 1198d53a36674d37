"""The CAM contract over timm's registry: every architecture is exact or refused with a camloc error.

For each registered architecture (random weights, ``pretrained=False``, ``num_classes=5``, a small input, float32,
eval mode) ``camloc.CAM(model)(x)`` must either

- **exact**: return logits equal to the model's own ``model(x)`` and maps with ``mean_xy M_c + offset_c ==
  logit_c`` for every class (within :func:`camloc.heads.identity_tolerance`, checked here independently of CAM), or
- **refused**: raise a camloc error (:class:`camloc.errors.CamlocError`) saying why;

never **error** (any other exception: a crash) and never **wrong** (an answer that fails the checks). Two more
outcomes are not camloc's: **model_error** (timm cannot build or run the model at this input) and **skipped**
(over ``--max-params`` parameters, counted on the meta device without building it: too big for this machine).

The input is 64x64 (``img_size=64`` where the constructor takes it); a model that cannot run at 64 is retried at
its default input size. Each line of ``--out`` (JSON lines) is one architecture; a rerun resumes after the last.

Usage::

    PYTHONPATH=src python benchmarks/timm_contract.py --out timm_contract.jsonl [--filter 'convnext*'] [--limit N]
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import camloc
from camloc.errors import CamlocError
from camloc.heads import identity_tolerance


class _Timeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout


def _create(name: str, size: int) -> tuple[torch.nn.Module, bool]:
    """``(model, took_img_size)``: with ``img_size=size`` where the constructor accepts it."""
    import timm

    try:
        return timm.create_model(name, pretrained=False, num_classes=5, img_size=size), True
    except TypeError:
        return timm.create_model(name, pretrained=False, num_classes=5), False


def _params_on_meta(name: str) -> int:
    import timm

    with torch.device("meta"):
        m = timm.create_model(name, pretrained=False, num_classes=5)
    return sum(p.numel() for p in m.parameters())


def check_arch(name: str, *, size: int = 64, max_params: int = 300_000_000) -> dict[str, Any]:
    """One architecture's outcome: ``{"name", "status", "reason", "params", "input", "seconds", "max_rel_err"}``."""
    import timm

    t0 = time.perf_counter()
    rec: dict[str, Any] = {"name": name, "module": timm.models.get_pretrained_cfg_value(name, "architecture")}
    rec["module"] = _module_of(name)
    try:
        rec["params"] = _params_on_meta(name)
    except Exception as e:  # the constructor itself fails: timm's, not camloc's
        return {**rec, "status": "model_error", "reason": f"build: {type(e).__name__}: {e}"[:300]}
    if rec["params"] > max_params:
        return {**rec, "status": "skipped", "reason": f"{rec['params'] / 1e6:.0f}M parameters"}
    torch.manual_seed(0)
    try:
        model, _ = _create(name, size)
        model.eval()
    except Exception as e:
        return {**rec, "status": "model_error", "reason": f"build: {type(e).__name__}: {e}"[:300]}
    x = ref = None
    for s in (size, _default_size(model)):
        x = torch.randn(2, 3, s, s)
        try:
            with torch.no_grad():
                ref = model(x)
            break
        except Exception as e:
            ref, err = None, e
    if ref is None or x is None:
        return {**rec, "status": "model_error", "reason": f"forward: {type(err).__name__}: {err}"[:300]}
    rec["input"] = int(x.shape[-1])
    try:
        cam = camloc.CAM(model)
        out = cam(x, classes=torch.arange(cam.head.num_classes))
    except CamlocError as e:
        return {**rec, "status": "refused", "reason": str(e)[:400], "seconds": time.perf_counter() - t0}
    except Exception as e:
        return {
            **rec,
            "status": "error",
            "reason": f"{type(e).__name__}: {e}"[:400],
            "seconds": time.perf_counter() - t0,
        }
    # Independent checks: the model's own logits, and the identity for every class.
    with torch.no_grad():
        f, _ = cam.resolved.run(x)
        tol = identity_tolerance(f, cam.head.scale(f))
        e1 = (out.logits.double() - ref.double()).abs()
        gap = out.maps.double().mean((2, 3)) + cam.head.offset(out.classes).double()
        e2 = (gap - out.logits.double()).abs()
    ok = bool((e1 <= tol).all() and (e2 <= tol).all()) and out.logits.shape == ref.shape
    rec.update(
        status="exact" if ok else "wrong",
        reason=f"{type(cam.head).__name__}: {cam.resolved.source}",
        max_rel_err=float(torch.maximum(e1, e2).div(cam.head.scale(f).double()).max()),
        maps=list(out.maps.shape[2:]),
        seconds=time.perf_counter() - t0,
    )
    return rec


def _default_size(model: torch.nn.Module) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size", (3, 224, 224)) if isinstance(cfg, dict) else (3, 224, 224)
    return int(size[-1])


def _module_of(name: str) -> str:
    from timm.models import _registry

    return str(_registry._model_to_module.get(name, "?"))


def round_robin(names: list[str]) -> list[str]:
    """``names`` reordered: the first of every timm module, then the second of every module, and so on."""
    by_module: dict[str, list[str]] = collections.defaultdict(list)
    for n in names:
        by_module[_module_of(n)].append(n)
    queues = [by_module[m] for m in sorted(by_module)]
    out: list[str] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def summarize(records: list[dict[str, Any]]) -> str:
    """Counts and shares per status, and the refusal reasons grouped by their first words."""
    n = len(records)
    counts = collections.Counter(r["status"] for r in records)
    modules = {r.get("module", "?") for r in records}
    lines = [f"{n} architectures from {len(modules)} timm modules"]
    lines += [f"  {k:12s} {v:5d}  {100 * v / max(n, 1):5.1f}%" for k, v in counts.most_common()]
    reasons = collections.Counter(
        " ".join(r["reason"].split(":")[0].split()[1:9]) for r in records if r["status"] == "refused"
    )
    lines.append("refusal reasons (first words after the class name):")
    lines += [f"  {v:5d}  {k}" for k, v in reasons.most_common(25)]
    for status in ("error", "wrong"):
        bad = [r for r in records if r["status"] == status]
        if bad:
            lines.append(f"{status}:")
            lines += [f"  {r['name']}: {r['reason'][:200]}" for r in bad]
    kinds = collections.Counter(r["reason"].split(":")[0] for r in records if r["status"] == "exact")
    lines.append("exact, by head kind: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    errs = [r["max_rel_err"] for r in records if r["status"] == "exact"]
    if errs:
        lines.append(f"max relative identity error over exact models (float32): {max(errs):.2e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import timm

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, one architecture each (resumed)")
    ap.add_argument("--filter", default="*", help="fnmatch pattern over timm names")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--timeout", type=int, default=240, help="seconds per architecture")
    ap.add_argument("--max-params", type=int, default=300_000_000)
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument(
        "--order",
        choices=("name", "round-robin"),
        default="name",
        help="round-robin: one architecture of each timm module in turn, so every family is covered early",
    )
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    done: dict[str, dict[str, Any]] = {}
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["name"]] = r
    names = [n for n in timm.list_models() if fnmatch.fnmatch(n, args.filter)]
    if args.order == "round-robin":
        names = round_robin(names)
    if args.limit:
        names = names[: args.limit]
    if not args.summary_only:
        signal.signal(signal.SIGALRM, _alarm)
        with args.out.open("a") as fh:
            for i, name in enumerate(names):
                if name in done:
                    continue
                signal.alarm(args.timeout)
                try:
                    rec = check_arch(name, size=args.size, max_params=args.max_params)
                except _Timeout:
                    rec = {"name": name, "module": _module_of(name), "status": "skipped", "reason": "timeout"}
                finally:
                    signal.alarm(0)
                done[name] = rec
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                print(f"[{i + 1}/{len(names)}] {name}: {rec['status']} {rec.get('reason', '')[:100]}", flush=True)
    print(summarize([done[n] for n in names if n in done]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
