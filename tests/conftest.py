"""Shared fixtures: tiny image folders and a tiny two-conv CNN."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LC25000 = SHARED_DATA / "lc25000_lung"

# keep CPU runs reproducible and light on the 2-core CI machine
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def make_image_folder(root: Path, classes: tuple[str, ...] = ("benign", "tumour"),
                      per_class: int = 5, seed: int = 0) -> Path:
    """Write a small ImageFolder of random RGB images of varied sizes; class 1 is brighter."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(12, 40))
            pixels = rng.integers(0, 160, size=(side, side, 3)) + 80 * label
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"img{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """ImageFolder with 2 classes x 5 images."""
    return make_image_folder(tmp_path / "data")


class TwoConvNet(nn.Module):
    """A tiny CNN: conv-relu, conv-relu, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.fixture
def two_conv_net() -> TwoConvNet:
    torch.manual_seed(0)
    return TwoConvNet().eval()
