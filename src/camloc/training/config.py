"""What a training run depends on (:class:`TrainConfig`) and produces (:class:`EpochStats`, :class:`TrainResult`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camloc._checks import check_choice, check_number, fail
from camloc.models.info import ModelInfo

__all__ = ["RESUME_FIELDS", "EpochStats", "TrainConfig", "TrainResult"]

# Config fields that must agree between a run and its resumption (others: paths, device, workers, epochs).
RESUME_FIELDS = (
    "arch",
    "pool",
    "batch_size",
    "lr",
    "head_lr_mult",
    "weight_decay",
    "img_size",
    "seed",
    "val_fraction",
    "drop_rate",
    "min_crop_scale",
    "amp",
    "optimizer",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on.

    Attributes:
        data: dataset root (camloc CSV, Tiny-ImageNet or ImageFolder layout; see :mod:`camloc.training.data`).
        arch: a paper network (``vgg16_gap``, ``googlenet_gmp``, ``tiny_gap``, ...), ``timm:NAME`` or
            ``torchvision:NAME`` (the trunk gets a GAP/GMP + linear head).
        pretrained: local checkpoint of the full classifier whose trunk weights initialise the trunk.
        head_lr_mult: LR multiplier of the added layers; ``None`` -> 10 with ``pretrained``, else 1.
        img_size: square input side; ``None`` -> the architecture's default (224; 64 for ``tiny_*``).
        out_dir: checkpoints go to ``out_dir/last.pt`` and ``out_dir/best.pt``.
        resume: continue from ``out_dir/last.pt`` (which must exist).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: mixed precision: fp16 + GradScaler on CUDA, bfloat16 autocast on CPU.
        channels_last: ``None`` -> on for CUDA.
        workers: DataLoader worker processes.
        val_fraction: share of each class held out when the dataset has no validation split.
        pool: ``"avg"``/``"max"`` for ``timm:``/``torchvision:`` trunks; ``None`` -> the arch's own (GAP).
        min_crop_scale: lower bound of the random-resized-crop area fraction.
        optimizer: ``"sgd"`` (momentum 0.9, Nesterov; the paper's) or ``"adamw"`` (betas 0.9/0.999).
    """

    data: str | Path
    arch: str = "tiny_gap"
    pretrained: str | Path | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    head_lr_mult: float | None = None
    weight_decay: float = 1e-4
    img_size: int | None = None
    out_dir: str | Path = "out/train"
    resume: bool = False
    device: str = "auto"
    amp: bool = False
    channels_last: bool | None = None
    seed: int = 0
    workers: int = 2
    val_fraction: float = 0.1
    pool: str | None = None
    drop_rate: float = 0.0
    min_crop_scale: float = 0.35
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        if not isinstance(self.data, (str, os.PathLike)):
            fail("data", "a dataset path", self.data, type_error=True)
        if not isinstance(self.arch, str) or not self.arch:
            fail("arch", "a non-empty architecture name", self.arch, type_error=not isinstance(self.arch, str))
        check_number("epochs", self.epochs, low=1, integer=True)
        check_number("batch_size", self.batch_size, low=1, integer=True)
        check_number("lr", self.lr, low=0.0, low_inclusive=False)
        if self.head_lr_mult is not None:
            check_number("head_lr_mult", self.head_lr_mult, low=0.0, low_inclusive=False)
        check_number("weight_decay", self.weight_decay, low=0.0)
        if self.img_size is not None:
            check_number("img_size", self.img_size, low=8, integer=True)
        check_number("seed", self.seed, low=0, integer=True)
        check_number("workers", self.workers, low=0, integer=True)
        check_number("val_fraction", self.val_fraction, low=0.0, high=0.9)
        check_number("drop_rate", self.drop_rate, low=0.0, high=1.0)
        check_number("min_crop_scale", self.min_crop_scale, low=0.01, high=1.0)
        if self.pool is not None:
            check_choice("pool", self.pool, ("avg", "max"))
        check_choice("optimizer", self.optimizer, ("sgd", "adamw"))
        if not isinstance(self.device, str):
            fail("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", self.device, type_error=True)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class EpochStats:
    """Metrics of one epoch (1-based ``epoch``); ``val_*`` are NaN without a validation set."""

    epoch: int
    train_loss: float
    train_top1: float
    val_loss: float
    val_top1: float
    lr: float
    seconds: float
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced. ``best_epoch`` is 1-based; ``history`` covers all epochs so far (resumed ones too)."""

    history: tuple[EpochStats, ...]
    best_epoch: int
    best_val_top1: float
    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    model_info: ModelInfo
    completed_epochs: int
