"""Shared fixtures: tiny image folders and a tiny two-conv CNN; the ``tiny_cnn`` test model.

``tiny_cnn`` (tests/_tiny_model.py) is registered through ``FEATSTORE_PLUGINS``, here and in
every featstore process the tests start (``PYTHONPATH`` points at this folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import LC25000, lc25000_subset, make_image_folder

_TESTS = str(Path(__file__).resolve().parent)
os.environ["FEATSTORE_PLUGINS"] = "_tiny_model"
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_TESTS, os.environ.get("PYTHONPATH", "")) if p)


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


@pytest.fixture(scope="session")
def lung60(tmp_path_factory: pytest.TempPathFactory) -> str:
    """20 LC25000 lung tiles per class through the pretrained and a random efficientnet_lite0,
    all 18 layers (skips when ../shared/data is absent): at ``head`` 1280 units meet at most 48
    training images and dozens of units are constant, the shape of every small pathology set."""
    if not LC25000.is_dir():
        pytest.skip(f"{LC25000} is absent (the shared real data sets)")
    import featstore

    root = tmp_path_factory.mktemp("lung60")
    store = str(root / "lung60.zarr")
    featstore.extract(str(lc25000_subset(root / "tiles", 20)), store,
                      inits=("pretrained", "random:0"), device="cpu")
    return store
