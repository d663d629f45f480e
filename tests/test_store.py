"""The store module: schema v1 layout, chunk progress, init appends, xarray round trip."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xarray as xr

from featstore import schema as S
from featstore.errors import NotAStoreError
from featstore.store import FeatureStore, LayerSpec, StoreLayout, open_store


def make_layout(n_images: int = 10, chunk: int = 4, splits: bool = False) -> StoreLayout:
    return StoreLayout(
        model="tiny",
        layers=(LayerSpec("conv1", 3, (3, 8, 8)), LayerSpec("blocks.0", 5, (5, 4, 4))),
        transform={"size": 8, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3},
        pool="avg",
        dtype="float32",
        chunk_images=chunk,
        classes=("a", "b"),
        paths=tuple(f"{'ab'[i % 2]}/img{i}.png" for i in range(n_images)),
        labels=tuple(i % 2 for i in range(n_images)),
        splits=tuple("train" if i < 6 else "test" for i in range(n_images)) if splits else None,
        data={"kind": "imagefolder", "root": "/data", "fingerprint": "abc"},
    )


INITS: list[dict[str, Any]] = [{"name": "pretrained", "kind": "pretrained"},
                               {"name": "random:0", "kind": "random", "seed": 0}]


@pytest.fixture(params=["local", "memory"])
def store_url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "s.zarr")
    unique = np.random.default_rng().integers(10**9)
    return f"memory://featstore-test-{request.node.name}-{unique}/s.zarr"


def fill(store: FeatureStore, layout: StoreLayout, init_index: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    for chunk in range(layout.n_chunks):
        start, stop = S.chunk_bounds(chunk, layout.n_images, layout.chunk_images)
        feats = {layer.name: rng.normal(size=(stop - start, layer.units)).astype(np.float32)
                 for layer in layout.layers}
        store.write_chunk(init_index, chunk, feats)
        for name, block in feats.items():
            written.setdefault(name, []).append(block)
    return {k: np.concatenate(v) for k, v in written.items()}


def test_schema_v1_round_trip_through_xarray(store_url):
    layout = make_layout(splits=True)
    store = FeatureStore.create(store_url, layout, {"versions": {"featstore": "x"}}, INITS)
    written = [fill(store, layout, i, seed=i) for i in range(2)]
    ds = xr.open_zarr(store_url)
    assert set(ds.data_vars) == {"blocks.0", "conv1"}
    assert ds["conv1"].dims == ("init", "image", "unit_conv1")
    assert ds["blocks.0"].dims == ("init", "image", "unit_blocks.0")
    assert ds["conv1"].dtype == np.float32
    assert ds["conv1"].encoding["chunks"] == (1, 4, 3)
    assert list(ds["init"].values) == ["pretrained", "random:0"]
    assert ds["image"].values.tolist() == list(range(10))
    assert ds["label"].values.tolist() == [i % 2 for i in range(10)]
    assert ds["path"].values[3] == "b/img3.png"
    assert ds["split"].values[7] == "test"
    assert ds["valid"].values.all()
    for coord in ("label", "path", "split", "valid"):
        assert coord in ds.coords
    meta = ds.attrs["featstore"]
    assert meta["schema_version"] == 1
    assert meta["layers"] == ["conv1", "blocks.0"]
    assert [d["name"] for d in meta["inits"]] == ["pretrained", "random:0"]
    assert ds["blocks.0"].attrs["module"] == "blocks.0"
    assert ds["blocks.0"].attrs["shape"] == [5, 4, 4]
    for i in range(2):
        np.testing.assert_array_equal(ds["conv1"].isel(init=i).values, written[i]["conv1"])
        np.testing.assert_array_equal(ds["blocks.0"].isel(init=i).values, written[i]["blocks.0"])
    assert store.is_complete()
    xr.testing.assert_identical(open_store(store_url).load(), ds.load())


def test_progress_is_per_chunk_and_resumable(tmp_path):
    layout = make_layout(n_images=10, chunk=4)
    store = FeatureStore.create(str(tmp_path / "s.zarr"), layout, {}, INITS)
    assert store.pending_chunks(0) == [0, 1, 2]
    feats = {layer.name: np.ones((4, layer.units), np.float32) for layer in layout.layers}
    store.write_chunk(0, 1, feats)
    reopened = FeatureStore.open(str(tmp_path / "s.zarr"), mode="r+")
    assert reopened.pending_chunks(0) == [0, 2]
    assert reopened.pending_chunks(1) == [0, 1, 2]
    assert not reopened.is_complete("pretrained")
    ds = open_store(str(tmp_path / "s.zarr"))
    assert np.isnan(ds["conv1"].isel(init=0, image=0).values).all()  # unwritten rows are NaN


def test_add_inits_appends_without_touching_existing(tmp_path):
    url = str(tmp_path / "s.zarr")
    layout = make_layout()
    store = FeatureStore.create(url, layout, {}, INITS[:1])
    first = fill(store, layout, 0, seed=1)
    store.add_inits([INITS[1]])
    store.add_inits([INITS[1]])  # idempotent
    assert store.init_names == ["pretrained", "random:0"]
    assert store.pending_chunks(0) == []
    assert store.pending_chunks(1) == [0, 1, 2]
    ds = open_store(url)
    assert ds.sizes["init"] == 2
    np.testing.assert_array_equal(ds["conv1"].isel(init=0).values, first["conv1"])


def test_invalid_rows_recorded(tmp_path):
    url = str(tmp_path / "s.zarr")
    layout = make_layout()
    store = FeatureStore.create(url, layout, {}, INITS[:1])
    feats = {layer.name: np.zeros((4, layer.units), np.float32) for layer in layout.layers}
    store.write_chunk(0, 1, feats, invalid=np.array([False, True, False, False]))
    assert open_store(url)["valid"].values.tolist() == [True] * 5 + [False] + [True] * 4


def test_float16_storage(tmp_path):
    layout = make_layout()
    layout = StoreLayout(**{**layout.__dict__, "dtype": "float16"})
    store = FeatureStore.create(str(tmp_path / "h.zarr"), layout, {}, INITS[:1])
    fill(store, layout, 0, seed=0)
    assert open_store(str(tmp_path / "h.zarr"))["conv1"].dtype == np.float16


def test_not_a_store(tmp_path):
    with pytest.raises(NotAStoreError, match="is not a featstore store"):
        open_store(str(tmp_path / "missing.zarr"))
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(NotAStoreError, match="not a featstore store"):
        FeatureStore.open(str(tmp_path / "plain.zarr"))


def test_corrupt_chunk_fails_loudly(tmp_path):
    url = tmp_path / "s.zarr"
    layout = make_layout()
    store = FeatureStore.create(str(url), layout, {}, INITS[:1])
    fill(store, layout, 0, seed=0)
    chunk_file = url / "conv1" / "c" / "0" / "1" / "0"
    raw = bytearray(chunk_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk_file.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum do not match"):  # CRC32C on every chunk
        _ = open_store(str(url))["conv1"].values
