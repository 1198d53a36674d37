"""Shared fixtures: tiny Conv -> GAP -> Linear models and deterministic inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class GapHead(nn.Module):
    """The timm head contract over ``forward_features``: global pool (``cam_pool``: ``avg``, the default; any
    other value: max) -> ``self.fc``. Subclasses define ``fc`` and ``forward_features``."""

    fc: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        p = f.mean((2, 3)) if getattr(self, "cam_pool", "avg") == "avg" else f.amax((2, 3))
        return p if pre_logits else self.fc(p)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class TinyGap(GapHead):
    """Conv trunk -> global pool -> linear, following the timm head contract."""

    def __init__(self, num_classes: int = 5, channels: int = 8, pool: str = "avg") -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        )
        self.fc = nn.Linear(channels, num_classes)
        self.cam_pool = pool

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


@pytest.fixture
def tiny_model() -> TinyGap:
    torch.manual_seed(0)
    return TinyGap().eval()


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 32, 40, generator=g)


def synthetic_run(root, *, val_per_class: int = 2):
    """A two-class synthetic data set (32 px) and an untrained ``tiny_gap`` checkpoint (seed 0) under ``root``:
    ``(data root, checkpoint path)``."""
    from pathlib import Path

    from camloc.checkpoint import Architecture, save_checkpoint
    from camloc.data.synthetic import make_synthetic_dataset
    from camloc.models.paper import build_gap_network

    ds = make_synthetic_dataset(
        root / "syn", num_classes=2, train_per_class=1, val_per_class=val_per_class, image_size=32
    )
    torch.manual_seed(0)
    model, info = build_gap_network("tiny_gap", 2, categories=("a", "b"), img_size=32)
    arch = Architecture("gap_network", dict(info.extra["build"]))
    ckpt = save_checkpoint(root / "tiny.pt", architecture=arch, state_dict=model.state_dict(), info=info)
    return Path(ds.root), ckpt


class BrightSpot(GapHead):
    """Class 0 = 'bright', class 1 = 'dark': the features are the image's brightness (``mean_rgb(x) + 1``, 0 for
    black ... 2 for white with the (x - 0.5) / 0.5 scaling), so the CAM of class 0 is the brightness map, times
    ``gain``, and its box is the bright region. Logits: ``gain * (p, -p) + (-bias, bias)`` with ``p`` the mean."""

    def __init__(self, gain: float = 1.0, bias: float = 0.1) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[gain], [-gain]]))
            self.fc.bias.copy_(torch.tensor([-bias, bias]))
        self.cam_pool = "avg"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1, keepdim=True) + 1.0
