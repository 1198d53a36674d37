"""torchrun awareness: the process group from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, reductions, the device.

One process (``WORLD_SIZE`` unset or 1) needs no process group. Under ``torchrun --nproc-per-node N`` the group
uses gloo on CPU and nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from camloc._checks import fail
from camloc.errors import CamlocValueError

__all__ = ["Dist", "all_sum", "average_buffers", "env_int", "init_dist", "resolve_device"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise CamlocValueError(f"`{name}` (environment) must be an integer; got {v!r}") from None


def init_dist(device_type: str) -> Dist:
    world = env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank, local = env_int("RANK", 0), env_int("LOCAL_RANK", 0)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        owns = True
    return Dist(rank=rank, world=world, local_rank=local, owns_group=owns)


def all_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t.tolist()


def average_buffers(model: nn.Module, d: Dist) -> None:
    """Average floating buffers (BN running stats) over ranks so every rank holds the same network."""
    if not d.enabled:
        return
    import torch.distributed as dist

    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(d.world)


def resolve_device(name: str, d_local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        fail("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", repr(name))
    if dev.type not in ("cpu", "cuda"):
        fail("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", repr(name))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            fail("device", "'cpu' or 'auto' (no CUDA device is available)", repr(name))
        if env_int("WORLD_SIZE", 1) > 1:
            dev = torch.device("cuda", d_local_rank)
    return dev
