"""Train the CAM paper's GAP networks (or any CNN trunk with a GAP head) on image-level labels.

``train(TrainConfig(...)) -> TrainResult`` is the library entry point; ``camloc train DATA --arch NAME`` the CLI
and ``torchrun --nproc-per-node N -m camloc.train ...`` the distributed one (:mod:`camloc.training.cli`).

==========================================  ==============================================================
module                                      job
==========================================  ==============================================================
:mod:`camloc.training.config`               TrainConfig, EpochStats, TrainResult
:mod:`camloc.training.data`                 dataset layouts -> (path, label) lists; the augmenting dataset
:mod:`camloc.training.distributed`          torchrun environment, process group, reductions, device
:mod:`camloc.training.rng`                  randomness as a function of (seed, epoch, rank)
:mod:`camloc.training.optim`                parameter groups, optimizer, warm-up + cosine schedule
:mod:`camloc.training.loop`                 the loop, validation, checkpoints and resume
:mod:`camloc.training.cli`                  ``camloc train`` / ``python -m camloc.train``
==========================================  ==============================================================

Checkpoints ``OUT/last.pt`` (every epoch) and ``OUT/best.pt`` (best validation top-1; the last epoch when there
is no validation set) are camloc checkpoints (:mod:`camloc.checkpoint`); :func:`load_checkpoint` rebuilds the
network from the file alone. ``resume=True`` continues from ``OUT/last.pt`` bit-for-bit on CPU, with the same
world size (a different one is refused).
"""

from camloc.checkpoint import load_checkpoint
from camloc.training.cli import add_train_arguments, config_from_args, main, register_cli, run_train
from camloc.training.config import EpochStats, TrainConfig, TrainResult
from camloc.training.loop import train

__all__ = [
    "EpochStats",
    "TrainConfig",
    "TrainResult",
    "add_train_arguments",
    "config_from_args",
    "load_checkpoint",
    "main",
    "register_cli",
    "run_train",
    "train",
]
