"""Randomness of a training run: a pure function of ``(seed, epoch, rank)``, never of what ran before.

Every epoch reseeds the global RNGs (python, numpy, torch; dropout draws from torch's) from
``epoch_seed(seed, epoch, rank)``, and augmentation and shuffling have their own generators seeded from
``(seed, epoch)``. So a resumed run continues bit-for-bit from a checkpoint without any saved RNG state (rank 0,
which writes the checkpoints, could not save the other ranks' states anyway). :func:`preserved_global_rng`
gives the caller back its own RNG states when training returns.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["epoch_seed", "preserved_global_rng", "seed_all"]


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 32-bit seed that depends on ``(seed, epoch, rank)`` only (numpy SeedSequence)."""
    return int(np.random.SeedSequence([seed, epoch, rank, 11]).generate_state(1)[0])


def seed_all(s: int) -> None:
    """Seed the python, numpy and torch (CPU and CUDA) global RNGs with ``s``."""
    random.seed(s)
    np.random.seed(s)  # noqa: NPY002 - the global RNG other code may use, on purpose
    torch.manual_seed(s)


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Restore the python, numpy, torch (and initialised CUDA) global RNG states on exit."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()  # noqa: NPY002
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)  # noqa: NPY002
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
