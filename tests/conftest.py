"""Shared fixtures: tiny Conv -> GAP -> Linear models and deterministic inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyGap(nn.Module):
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

    def forward_head(self, f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        p = f.mean((2, 3)) if self.cam_pool == "avg" else f.amax((2, 3))
        return p if pre_logits else self.fc(p)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@pytest.fixture
def tiny_model() -> TinyGap:
    torch.manual_seed(0)
    return TinyGap().eval()


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 32, 40, generator=g)
