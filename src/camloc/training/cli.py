"""``camloc train DATA --arch NAME`` and ``python -m camloc.train`` (also under ``torchrun -m camloc.train``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from camloc.models.paper import GapNet
from camloc.training.config import EpochStats, TrainConfig
from camloc.training.distributed import env_int
from camloc.training.loop import train

__all__ = ["add_train_arguments", "config_from_args", "main", "register", "register_cli", "run_train"]

_DESCRIPTION = "Train the CAM paper's GAP networks (or any CNN trunk with a GAP head) on image-level labels."


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``camloc train`` options to ``parser`` (defaults = :class:`TrainConfig`'s)."""
    d = TrainConfig(data=".")
    parser.add_argument("data", type=Path, help="dataset root (camloc CSV, Tiny-ImageNet or ImageFolder layout)")
    parser.add_argument(
        "--arch",
        required=True,
        help="vgg16_gap | alexnet_gap | googlenet_gap | tiny_gap | *_gmp | timm:NAME | torchvision:NAME",
    )
    parser.add_argument("--pretrained", type=Path, help="local classifier checkpoint initialising the trunk")
    parser.add_argument("--pool", choices=("avg", "max"), help="pool of timm:/torchvision: trunks (default avg)")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument(
        "--head-lr-mult", type=float, help="LR multiplier of the added layers (default 10 with --pretrained, else 1)"
    )
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--img-size", type=int, help="input side (default: the architecture's)")
    parser.add_argument("--out", type=Path, default=Path(d.out_dir), help=f"checkpoint folder (default {d.out_dir})")
    parser.set_defaults(_out_is_folder=True)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--workers", type=int, default=d.workers)
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--drop-rate", type=float, default=d.drop_rate)
    parser.add_argument("--min-crop-scale", type=float, default=d.min_crop_scale)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default=d.optimizer)
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        data=args.data,
        arch=args.arch,
        pretrained=args.pretrained,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr_mult=args.head_lr_mult,
        weight_decay=args.weight_decay,
        img_size=args.img_size,
        out_dir=args.out,
        resume=args.resume,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        seed=args.seed,
        workers=args.workers,
        val_fraction=args.val_fraction,
        pool=args.pool,
        drop_rate=args.drop_rate,
        min_crop_scale=args.min_crop_scale,
        optimizer=args.optimizer,
    )


def run_train(args: argparse.Namespace) -> int:
    """``camloc train``: train, print one line per epoch and a summary (rank 0 only); return 0."""
    config = config_from_args(args)
    rank = env_int("RANK", 0)

    def report(s: EpochStats, _model: GapNet) -> None:
        if rank == 0:
            print(
                f"epoch {s.epoch}/{config.epochs}  train loss {s.train_loss:.4f} top1 {s.train_top1:.4f}  "
                f"val loss {s.val_loss:.4f} top1 {s.val_top1:.4f}  lr {s.lr:.2e}  "
                f"{s.seconds:.1f}s ({s.images_per_second:.0f} img/s)",
                flush=True,
            )

    result = train(config, stop_after_epoch=args.stop_after, on_epoch=report)
    if rank == 0:
        print(
            f"best epoch {result.best_epoch} (val top1 {result.best_val_top1:.4f}); "
            f"checkpoints: {result.last_checkpoint}, {result.best_checkpoint}"
        )
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """Fill the ``camloc train`` sub-parser (the CLI's command table calls this; see :mod:`camloc.cli`)."""
    add_train_arguments(parser)
    parser.set_defaults(func=run_train)


def register_cli(sub: Any) -> None:
    """Add the ``train`` sub-command to ``sub`` (an argparse sub-parsers object)."""
    register(sub.add_parser("train", help="train a GAP network on image-level labels (torchrun-aware)"))


def main(argv: list[str] | None = None) -> int:
    """``python -m camloc.train DATA --arch NAME ...`` (also under ``torchrun -m camloc.train``)."""
    parser = argparse.ArgumentParser(prog="camloc train", description=_DESCRIPTION)
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))
