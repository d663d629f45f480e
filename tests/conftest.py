"""Shared fixtures: tiny image folders and a tiny two-conv CNN; the ``tiny_cnn`` test model;
the test processes (pytest-xdist, one per usable core) and their share of the cores.

``tiny_cnn`` (tests/_tiny_model.py) is registered through ``FEATSTORE_PLUGINS``, here and in
every featstore process the tests start (``PYTHONPATH`` points at this folder).
"""

from __future__ import annotations

import os
from pathlib import Path

#: at most this many test processes (each holds torch and a model or two in memory)
MAX_TEST_WORKERS = 8


def usable_cpus() -> int:
    """The cores this process may use: its CPU affinity, bounded by a cgroup CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus or 1, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus or 1)


def pytest_xdist_auto_num_workers(config: object) -> int:
    """``-n auto`` (the default in pyproject.toml): one test process per usable core."""
    return min(MAX_TEST_WORKERS, usable_cpus())


def _share_the_cores() -> int | None:
    """Under pytest-xdist, each worker gets its share of the cores (threads of torch, BLAS and
    OpenMP, also in the processes the tests start): N workers x all cores each would
    oversubscribe the machine. Returns the threads per worker, None outside xdist."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2:
        return None
    threads = max(1, usable_cpus() // workers)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    return threads


_THREADS = _share_the_cores()

import pytest  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from torch import nn  # noqa: E402

from helpers import LC25000, lc25000_subset, make_image_folder  # noqa: E402

if _THREADS is not None:
    torch.set_num_threads(_THREADS)
    threadpool_limits(_THREADS)

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
