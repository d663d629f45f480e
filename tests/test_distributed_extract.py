"""Extraction as dask tasks: one store, the same bytes as a local run, faults survived.

A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (started with the
environment that registers ``tiny_cnn``), ``featstore extract --scheduler tcp://...``; a worker
killed with SIGKILL mid-job, and a client killed mid-job, both end in a complete, verified store
equal to a local extraction.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from featstore.cli.app import main

import featstore
from featstore.errors import NotAStoreError
from featstore.store import FeatureStore
from featstore.verify import verify_store
from helpers import make_image_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import fault_injection as FI  # noqa: E402

pytestmark = pytest.mark.slow

OPTIONS = ["--model", "tiny_cnn", "--image-size", "12", "--batch-size", "2", "--chunk-images",
           "2", "--device", "cpu", "--init", "pretrained", "--init", "random:0+bn", "-q"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "tiles", per_class=8)


@pytest.fixture(scope="module")
def local(data: Path, tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    url = str(tmp_path_factory.mktemp("local") / "local.zarr")
    featstore.extract(str(data), url, model="tiny_cnn", image_size=12, batch_size=2,
                      chunk_images=2, device="cpu", inits=("pretrained", "random:0+bn"))
    return xr.open_zarr(url).load()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FI.DaskCluster]:
    """``dask scheduler`` and two ``dask worker`` processes (the fault-injection tool's), each
    chunk write slowed by 0.3 s so that kills land mid-job; the tests below use it in file
    order, the last one kills a worker."""
    started = FI.DaskCluster(tmp_path_factory.mktemp("cluster"), workers=2, sleep=0.3)
    yield started
    started.close()


def _wait_for_chunks(url: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if FeatureStore.open(url).progress().sum() >= count:
                return
        except NotAStoreError:  # not created yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} chunks of {url} after 120 s")


def _same(ds: xr.Dataset, other: xr.Dataset) -> None:
    for var in other.data_vars:
        np.testing.assert_allclose(ds[var].values, other[var].values, rtol=1e-5, atol=1e-7,
                                   err_msg=var)
    assert list(ds["init"].values) == list(other["init"].values)
    mine, theirs = dict(ds.attrs["featstore"]), dict(other.attrs["featstore"])
    for key in ("created", "config"):  # timing and run settings
        mine.pop(key), theirs.pop(key)
    assert mine == theirs


def test_tcp_scheduler_equals_local(data: Path, local: xr.Dataset, cluster: FI.DaskCluster,
                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "d.zarr")
    code, _, err = run(["extract", str(data), "--store", url, "--scheduler", cluster.address,
                        *OPTIONS], capsys)
    assert code == 0, err
    _same(xr.open_zarr(url).load(), local)
    assert verify_store(url).ok


def test_local_cluster_equals_local(data: Path, local: xr.Dataset, tmp_path: Path) -> None:
    url = str(tmp_path / "d.zarr")
    featstore.extract(str(data), url, model="tiny_cnn", image_size=12, batch_size=2,
                      chunk_images=2, device="cpu", inits=("pretrained", "random:0+bn"),
                      scheduler="local:2")
    _same(xr.open_zarr(url).load(), local)


def test_a_killed_client_leaves_a_store_a_plain_rerun_completes(
        data: Path, local: xr.Dataset, cluster: FI.DaskCluster, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "d.zarr")
    client = subprocess.Popen([sys.executable, "-m", "featstore.cli.app", "extract", str(data),
                               "--store", url, "--scheduler", cluster.address, *OPTIONS],
                              stderr=subprocess.DEVNULL)
    _wait_for_chunks(url, 2)
    client.send_signal(signal.SIGKILL)
    client.wait()
    time.sleep(1.0)  # tasks already running on the workers finish their chunk
    store = FeatureStore.open(url)
    assert 0 < int(store.progress().sum()) < store.progress().size
    code, _, err = run(["extract", str(data), "--store", url, *OPTIONS], capsys)  # local rerun
    assert code == 0, err
    _same(xr.open_zarr(url).load(), local)
    assert verify_store(url).ok


def test_a_worker_killed_midway_is_retried(data: Path, local: xr.Dataset, cluster: FI.DaskCluster,
                                           tmp_path: Path) -> None:
    url = str(tmp_path / "d.zarr")
    client = subprocess.Popen([sys.executable, "-m", "featstore.cli.app", "extract", str(data),
                               "--store", url, "--scheduler", cluster.address, *OPTIONS],
                              stderr=subprocess.PIPE, text=True)
    _wait_for_chunks(url, 3)
    os.kill(cluster.workers[0].pid, signal.SIGKILL)
    _, err = client.communicate(timeout=300)
    assert client.returncode == 0, err
    _same(xr.open_zarr(url).load(), local)
    assert verify_store(url).ok


def test_extract_scheduler_refuses_threads(data: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["extract", str(data), "--store", str(tmp_path / "s.zarr"),
                        "--scheduler", "threads:2", *OPTIONS], capsys)
    assert code == 2
    assert err.strip() == (
        "featstore: error: invalid extract --scheduler 'threads:2'; extraction runs in this "
        "process without --scheduler, or as dask tasks with local:N (N worker processes) or "
        "tcp://HOST:PORT (a running dask.distributed scheduler)")
    assert not (tmp_path / "s.zarr").exists()
