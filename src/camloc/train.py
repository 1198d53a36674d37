"""Train the CAM paper's GAP networks (or any CNN trunk with a GAP head) on image-level labels.

``train(TrainConfig(...)) -> TrainResult`` is the library entry point; ``camloc train DATA --arch NAME`` the
CLI (:func:`add_train_arguments` / :func:`run_train`). The same entry point scales out under
``torchrun --nproc-per-node N``: it reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, wraps the network in
DistributedDataParallel (gloo on CPU, nccl on CUDA) and shards the data with a DistributedSampler; metrics are
all-reduced and only rank 0 writes checkpoints.

Recipe: SGD (momentum 0.9, Nesterov; or AdamW), weight decay on conv/linear weights only, the layers the paper adds
(3x3 conv + classifier) at ``lr * head_lr_mult``, linear warm-up over the first 5% of the steps then cosine
decay to 0 (per step), cross-entropy. Train augmentation: random resized crop + horizontal flip; validation:
full resize to ``img_size`` (the model's :class:`~camloc.models.registry.Preprocess` records the same).

Checkpoints ``OUT/last.pt`` (every epoch) and ``OUT/best.pt`` (best validation top-1; the last epoch when
there is no validation set) are written atomically and load with ``torch.load(..., weights_only=True)``::

    format="camloc-train-checkpoint", schema_version=1,
    model (state dict), optimizer, scheduler, scaler, epoch (completed epochs),
    rng {torch, numpy, python[, cuda]}, config (TrainConfig as a dict), history (list of EpochStats dicts),
    best_epoch, best_val_top1, model_info (ModelInfo.to_dict()), build (what rebuilds the network)

:func:`load_checkpoint` rebuilds the network from the file alone. ``resume=True`` continues from
``OUT/last.pt`` bit-for-bit on CPU: shuffling and augmentation are pure functions of ``(seed, epoch)``, and
every epoch reseeds the global RNGs from ``(seed, epoch, rank)``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from camloc._checks import check_choice, check_number, fail
from camloc._train_data import ImageDataset, discover
from camloc.errors import CamlocValueError
from camloc.models.paper import CHECKPOINT_FORMAT, GapNet, build_gap_network
from camloc.models.registry import ModelInfo, load_weights_strict

__all__ = [
    "EpochStats",
    "TrainConfig",
    "TrainResult",
    "add_train_arguments",
    "load_checkpoint",
    "main",
    "register_cli",
    "run_train",
    "train",
]

SCHEMA_VERSION = 1
# Config fields that must agree between a run and its resumption (others: paths, device, workers, epochs).
_RESUME_FIELDS = (
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
        data: dataset root (camloc CSV, Tiny-ImageNet or ImageFolder layout; see :mod:`camloc._train_data`).
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


# ---------------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class _Dist:
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


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise CamlocValueError(f"`{name}` (environment) must be an integer; got {v!r}") from None


def _init_dist(device_type: str) -> _Dist:
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        owns = True
    return _Dist(rank=rank, world=world, local_rank=local, owns_group=owns)


def _all_sum(values: list[float], d: _Dist, device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t.tolist()


def _average_buffers(model: nn.Module, d: _Dist) -> None:
    """Average floating buffers (BN running stats) over ranks so every rank holds the same network."""
    if not d.enabled:
        return
    import torch.distributed as dist

    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(d.world)


# ---------------------------------------------------------------------------------------------- helpers


def _resolve_device(name: str, d_local_rank: int) -> torch.device:
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
        if _env_int("WORLD_SIZE", 1) > 1:
            dev = torch.device("cuda", d_local_rank)
    return dev


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank, 11]).generate_state(1)[0])


def _seed_all(s: int) -> None:
    random.seed(s)
    np.random.seed(s)  # noqa: NPY002 - the global RNG other code may use, on purpose
    torch.manual_seed(s)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    kind, keys, pos, has_gauss, cached = st["numpy"]
    state = (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
    np.random.set_state(state)  # noqa: NPY002
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _param_groups(model: GapNet, lr: float, head_mult: float, wd: float) -> list[dict[str, Any]]:
    new_ids = {id(p) for p in model.new_parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in new_ids, p.ndim > 1), []).append(p)
    out = []
    for (is_new, decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": lr * (head_mult if is_new else 1.0), "weight_decay": wd if decay else 0.0})
    return out


def _lr_lambda(total_steps: int) -> Callable[[int], float]:
    warmup = max(1, round(0.05 * total_steps))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return f


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    from camloc._io import atomic_open

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        fail("checkpoint", "an existing camloc training checkpoint file", str(p))
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CamlocValueError(f"`checkpoint` must be a camloc training checkpoint; could not read {p}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        fail("checkpoint", f"a camloc training checkpoint (format {CHECKPOINT_FORMAT!r})", f"another file: {p}")
    if int(ckpt.get("schema_version", 0)) > SCHEMA_VERSION:
        fail("checkpoint", f"schema_version <= {SCHEMA_VERSION}", f"{ckpt.get('schema_version')} in {p}")
    return ckpt


def _build_kwargs(build: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in build.items() if k not in ("arch", "pool")}


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[GapNet, ModelInfo]:
    """Rebuild the trained network from a camloc training checkpoint alone; return ``(model.eval(), info)``.

    ``info`` carries the architecture name, class names and preprocessing recorded at training time.
    """
    ckpt = _read_checkpoint(path)
    build = dict(ckpt["build"])
    info = ModelInfo.from_dict(ckpt["model_info"])
    model, _ = build_gap_network(
        build["arch"], info.num_classes, pool=build.get("pool"), categories=info.categories, **_build_kwargs(build)
    )
    load_weights_strict(model, ckpt["model"], source=str(path))
    info = dataclasses.replace(info, extra={"build": build})
    return model.to(device).eval(), info


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
    d = _init_dist("cuda" if want_cuda else "cpu")
    try:
        return _train(config, d, stop_after_epoch, on_epoch)
    finally:
        if d.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(
    config: TrainConfig,
    d: _Dist,
    stop_after_epoch: int | None,
    on_epoch: Callable[[EpochStats, GapNet], None] | None,
) -> TrainResult:
    device = _resolve_device(config.device, d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out = Path(config.out_dir)
    last_path, best_path = out / "last.pt", out / "best.pt"
    ckpt: dict[str, Any] | None = None
    if config.resume:
        if not last_path.is_file():
            fail("resume", f"a run to continue (a checkpoint at {last_path})", "no such file")
        ckpt = _read_checkpoint(last_path)
        old = ckpt["config"]
        diff = [
            f"{k}: {old.get(k)!r} -> {getattr(config, k)!r}" for k in _RESUME_FIELDS if old.get(k) != getattr(config, k)
        ]
        if diff:
            fail("config", "the resumed run's settings", "changes to " + "; ".join(diff))

    split = discover(config.data, val_fraction=config.val_fraction, seed=config.seed)
    _seed_all(config.seed)
    # On resume the network is rebuilt as recorded (e.g. GoogLeNet's transform_input) and the weights come
    # from the checkpoint, so the `pretrained` file is not read again.
    extra_kw = {} if ckpt is None else _build_kwargs(ckpt["build"])
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
    val_ds = ImageDataset(split.val, size=size, mean=pre.mean, std=pre.std, seed=config.seed, train=False)
    sampler: torch.utils.data.DistributedSampler[Any] = torch.utils.data.DistributedSampler(
        train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=config.seed, drop_last=False
    )
    val_idx = list(range(d.rank, len(val_ds), d.world))  # no padding: each val image counted once
    val_sub = torch.utils.data.Subset(val_ds, val_idx)
    pin = device.type == "cuda"
    steps_per_epoch = math.ceil(len(sampler) / config.batch_size)
    head_mult = config.head_lr_mult if config.head_lr_mult is not None else (10.0 if config.pretrained else 1.0)
    groups = _param_groups(model, config.lr, head_mult, config.weight_decay)
    optimizer: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps_per_epoch * config.epochs))
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")

    start_epoch, history, best_epoch, best_top1 = 0, [], 0, -math.inf
    if ckpt is not None:
        load_weights_strict(model, ckpt["model"], source=str(last_path))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"])
        history = [EpochStats(**h) for h in ckpt["history"]]
        best_epoch, best_top1 = int(ckpt["best_epoch"]), float(ckpt["best_val_top1"])

    net: nn.Module = model
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    criterion = nn.CrossEntropyLoss()
    show = d.main and sys.stderr.isatty()
    build = info.extra.get("build", {"arch": config.arch, "pool": config.pool})

    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        _seed_all(_epoch_seed(config.seed, epoch, d.rank))
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        gen = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch, 1 << 20))
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
        _average_buffers(model, d)
        tl, tc, tn = _all_sum(sums, d, device)
        vl, vc, vn = _all_sum(_evaluate(model, val_sub, config, device, channels_last, criterion, pin), d, device)
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
            obj = {
                "format": CHECKPOINT_FORMAT,
                "schema_version": SCHEMA_VERSION,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "epoch": epoch + 1,
                "rng": _rng_state(),
                "config": config.to_dict(),
                "history": [h.to_dict() for h in history],
                "best_epoch": best_epoch,
                "best_val_top1": best_top1,
                "model_info": info.to_dict(),
                "build": build,
            }
            _save_atomic(obj, last_path)
            if is_best:
                _save_atomic(obj, best_path)
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


# ---------------------------------------------------------------------------------------------- CLI


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
    rank = _env_int("RANK", 0)

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


def register_cli(sub: Any) -> None:
    """Add the ``train`` sub-command to the camloc CLI's sub-parsers."""
    p = sub.add_parser("train", help="train a GAP network on image-level labels (torchrun-aware)")
    add_train_arguments(p)
    p.set_defaults(func=run_train)


def main(argv: list[str] | None = None) -> int:
    """``python -m camloc.train DATA --arch NAME ...`` (also under ``torchrun -m camloc.train``)."""
    parser = argparse.ArgumentParser(prog="camloc train", description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
