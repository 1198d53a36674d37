"""The training loop: :func:`train` (``TrainConfig`` in, ``TrainResult`` out), checkpoints each epoch.

Under ``torchrun --nproc-per-node N`` it wraps the network in DistributedDataParallel and shards the data with
a DistributedSampler (:mod:`camloc.training.distributed`); metrics are all-reduced and only rank 0 writes
checkpoints (:mod:`camloc.checkpoint`; the ``training`` entry holds what ``resume=True`` needs, the world size
included). Randomness: :mod:`camloc.training.rng`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camloc._checks import check_number, fail
from camloc.checkpoint import Architecture, Checkpoint, read_checkpoint, save_checkpoint
from camloc.models.paper import GapNet, build_gap_network
from camloc.models.weights import load_weights_strict
from camloc.training.config import RESUME_FIELDS, EpochStats, TrainConfig, TrainResult
from camloc.training.data import ImageDataset, discover
from camloc.training.distributed import Dist, all_sum, average_buffers, init_dist, resolve_device
from camloc.training.optim import make_optimizer
from camloc.training.rng import epoch_seed, preserved_global_rng, seed_all

__all__ = ["train"]


def _resumable(last_path: Path, config: TrainConfig, d: Dist) -> tuple[Checkpoint, dict[str, Any]]:
    """The checkpoint to resume from and its training state, after checking that ``config`` and ``d`` fit it."""
    if not last_path.is_file():
        fail("resume", f"a run to continue (a checkpoint at {last_path})", "no such file")
    ckpt = read_checkpoint(last_path)
    state = ckpt.training
    if not state:
        fail("resume", "a training checkpoint (with its optimizer state)", f"a checkpoint without one: {last_path}")
    assert state is not None
    old = state["config"]
    diff = [f"{k}: {old.get(k)!r} -> {getattr(config, k)!r}" for k in RESUME_FIELDS if old.get(k) != getattr(config, k)]
    if diff:
        fail("config", "the resumed run's settings", "changes to " + "; ".join(diff))
    world = state.get("world_size")  # None in schema-1 checkpoints: unknown, not checked
    if world is not None and int(world) != d.world:
        fail(
            "WORLD_SIZE",
            f"{world}, the world size of the run being resumed (its data shards, steps per epoch and LR schedule "
            "depend on it; camloc does not rescale them)",
            str(d.world),
        )
    return ckpt, state


@contextlib.contextmanager
def _autocast(device: torch.device, amp: bool) -> Iterator[None]:
    if not amp:
        yield
        return
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def _progress(loader: Any, *, enabled: bool, desc: str) -> Any:
    if not enabled:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------- training


def train(
    config: TrainConfig,
    *,
    stop_after_epoch: int | None = None,
    on_epoch: Callable[[EpochStats, GapNet], None] | None = None,
) -> TrainResult:
    """Train ``config.arch`` on ``config.data``; write ``last.pt``/``best.pt`` under ``config.out_dir``.

    ``stop_after_epoch`` stops after that (1-based) epoch as if interrupted (the schedule still spans
    ``config.epochs``; continue with ``resume=True``). ``on_epoch(stats, model)`` runs on every rank after
    each epoch (``model`` unwrapped from DDP, in train mode; do not modify it). Progress bars (tqdm) show on
    rank 0 when stderr is a terminal. Nothing is printed.
    """
    if not isinstance(config, TrainConfig):
        fail("config", "a TrainConfig", config, type_error=True)
    if stop_after_epoch is not None:
        check_number("stop_after_epoch", stop_after_epoch, low=1, integer=True)
    want_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    d = init_dist("cuda" if want_cuda else "cpu")
    try:
        with preserved_global_rng():
            return _train(config, d, stop_after_epoch, on_epoch)
    finally:
        if d.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(
    config: TrainConfig,
    d: Dist,
    stop_after_epoch: int | None,
    on_epoch: Callable[[EpochStats, GapNet], None] | None,
) -> TrainResult:
    device = resolve_device(config.device, d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out = Path(config.out_dir)
    last_path, best_path = out / "last.pt", out / "best.pt"
    ckpt: Checkpoint | None = None
    state: dict[str, Any] = {}  # the checkpoint's training state
    if config.resume:
        ckpt, state = _resumable(last_path, config, d)

    split = discover(config.data, val_fraction=config.val_fraction, seed=config.seed)
    seed_all(config.seed)
    # On resume the network is rebuilt as recorded (e.g. GoogLeNet's transform_input) and the weights come
    # from the checkpoint, so the `pretrained` file is not read again.
    extra_kw = {} if ckpt is None else {k: v for k, v in ckpt.architecture.spec.items() if k not in ("arch", "pool")}
    model, info = build_gap_network(
        config.arch,
        len(split.classes),
        pool=config.pool,  # type: ignore[arg-type]
        pretrained=config.pretrained if ckpt is None else None,
        categories=split.classes,
        img_size=config.img_size,
        drop_rate=config.drop_rate,
        **extra_kw,
    )
    size = info.preprocess.size[0]
    info = dataclasses.replace(info, preprocess=info.preprocess.replace(size=(size, size), resize="full"))
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    pre = info.preprocess
    train_ds = ImageDataset(
        split.train,
        size=size,
        mean=pre.mean,
        std=pre.std,
        seed=config.seed,
        train=True,
        min_crop_scale=config.min_crop_scale,
    )
    val_ds = ImageDataset(
        split.val, size=size, mean=pre.mean, std=pre.std, seed=config.seed, train=False, interpolation=pre.interpolation
    )
    sampler: torch.utils.data.DistributedSampler[Any] = torch.utils.data.DistributedSampler(
        train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=config.seed, drop_last=False
    )
    val_idx = list(range(d.rank, len(val_ds), d.world))  # no padding: each val image counted once
    val_sub = torch.utils.data.Subset(val_ds, val_idx)
    pin = device.type == "cuda"
    steps_per_epoch = math.ceil(len(sampler) / config.batch_size)
    head_mult = config.head_lr_mult if config.head_lr_mult is not None else (10.0 if config.pretrained else 1.0)
    optimizer, scheduler = make_optimizer(
        model,
        kind=config.optimizer,
        lr=config.lr,
        head_mult=head_mult,
        weight_decay=config.weight_decay,
        total_steps=steps_per_epoch * config.epochs,
    )
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")

    start_epoch, history, best_epoch, best_top1 = 0, [], 0, -math.inf
    if ckpt is not None:
        load_weights_strict(model, ckpt.state_dict, source=str(last_path))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        # No RNG state to restore: each epoch reseeds from (seed, epoch, rank) below (see camloc.training.rng).
        start_epoch = int(state["epoch"])
        history = [EpochStats(**h) for h in state["history"]]
        best_epoch, best_top1 = int(state["best_epoch"]), float(state["best_val_top1"])

    net: nn.Module = model
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    criterion = nn.CrossEntropyLoss()
    show = d.main and sys.stderr.isatty()
    build = info.extra.get("build", {"arch": config.arch, "pool": config.pool})

    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        seed_all(epoch_seed(config.seed, epoch, d.rank))
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        gen = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, 1 << 20))
        loader = torch.utils.data.DataLoader(
            train_ds,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            pin_memory=pin,
            generator=gen,
        )
        net.train()
        sums = [0.0, 0.0, 0.0]  # loss * n, correct, n
        for x, y in _progress(loader, enabled=show, desc=f"epoch {epoch + 1}/{config.epochs}"):
            x = x.to(device, non_blocking=pin)
            y = y.to(device, non_blocking=pin)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, config.amp):
                logits = net(x)
                loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n = y.shape[0]
            sums[0] += float(loss.detach()) * n
            sums[1] += float((logits.detach().argmax(1) == y).sum())
            sums[2] += n
        train_seconds = time.perf_counter() - t0
        average_buffers(model, d)
        tl, tc, tn = all_sum(sums, d, device)
        vl, vc, vn = all_sum(_evaluate(model, val_sub, config, device, channels_last, criterion, pin), d, device)
        stats = EpochStats(
            epoch=epoch + 1,
            train_loss=tl / max(tn, 1),
            train_top1=tc / max(tn, 1),
            val_loss=vl / vn if vn else math.nan,
            val_top1=vc / vn if vn else math.nan,
            lr=float(optimizer.param_groups[0]["lr"]),
            seconds=time.perf_counter() - t0,
            images_per_second=tn / max(train_seconds, 1e-9),
        )
        history.append(stats)
        is_best = (stats.val_top1 > best_top1) if vn else True
        if is_best:
            best_epoch, best_top1 = epoch + 1, (stats.val_top1 if vn else math.nan)
        if d.main:
            training = {
                "epoch": epoch + 1,
                "world_size": d.world,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "config": config.to_dict(),
                "history": [h.to_dict() for h in history],
                "best_epoch": best_epoch,
                "best_val_top1": best_top1,
            }
            arch = Architecture("gap_network", dict(build))
            kw: dict[str, Any] = {
                "architecture": arch,
                "state_dict": model.state_dict(),
                "info": info,
                "training": training,
            }
            save_checkpoint(last_path, **kw)
            if is_best:
                save_checkpoint(best_path, **kw)
        if d.enabled:
            import torch.distributed as dist

            dist.barrier()
        if on_epoch is not None:
            on_epoch(stats, model)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break

    return TrainResult(
        history=tuple(history),
        best_epoch=best_epoch,
        best_val_top1=best_top1,
        out_dir=out,
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        model_info=info,
        completed_epochs=len(history),
    )


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    data: Any,
    config: TrainConfig,
    device: torch.device,
    channels_last: bool,
    criterion: nn.Module,
    pin: bool,
) -> list[float]:
    if len(data) == 0:
        return [0.0, 0.0, 0.0]
    was = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, num_workers=config.workers, pin_memory=pin)
    sums = [0.0, 0.0, 0.0]
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, config.amp):
            logits = model(x).float()
        sums[0] += float(criterion(logits, y)) * y.shape[0]
        sums[1] += float((logits.argmax(1) == y).sum())
        sums[2] += y.shape[0]
    model.train(was)
    return sums
