"""The optimisation recipe: parameter groups (head LR multiplier, no decay on biases/norms), warm-up + cosine.

SGD (momentum 0.9, Nesterov; the paper's) or AdamW (betas 0.9/0.999); weight decay on conv/linear weights
only; the layers the paper adds (3x3 conv + classifier) at ``lr * head_mult``; linear warm-up over the first 5%
of the steps, then cosine decay to 0, stepped per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from camloc.models.paper import GapNet

__all__ = ["lr_lambda", "make_optimizer", "param_groups"]


def param_groups(model: GapNet, lr: float, head_mult: float, wd: float) -> list[dict[str, Any]]:
    new_ids = {id(p) for p in model.new_parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in new_ids, p.ndim > 1), []).append(p)
    out = []
    for (is_new, decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": lr * (head_mult if is_new else 1.0), "weight_decay": wd if decay else 0.0})
    return out


def lr_lambda(total_steps: int) -> Callable[[int], float]:
    warmup = max(1, round(0.05 * total_steps))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return f


def make_optimizer(
    model: GapNet, *, kind: str, lr: float, head_mult: float, weight_decay: float, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """``(optimizer, per-step scheduler)`` of the recipe for ``model``; ``kind`` is ``"sgd"`` or ``"adamw"``."""
    groups = param_groups(model, lr, head_mult, weight_decay)
    optimizer: torch.optim.Optimizer
    if kind == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps))
