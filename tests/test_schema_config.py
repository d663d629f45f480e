"""Schema name codec, chunk arithmetic and config round trips (property-based)."""

from __future__ import annotations

import json

import pytest
import xarray as xr
import zarr
import zarr.storage
from hypothesis import given, settings
from hypothesis import strategies as st

from featstore import schema as S
from featstore.config import ExtractConfig, parse_choice, parse_device, parse_positive_int
from featstore.errors import FeatstoreInputError

identifier = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}", fullmatch=True)  # RegNet: block1-0
module_path = st.lists(st.one_of(identifier, st.integers(0, 99).map(str)), min_size=1,
                       max_size=4).map(".".join)


@settings(max_examples=30, deadline=None)
@given(module_path)
def test_layer_names_are_zarr_node_names(path):
    """Every module path is stored as itself and survives a Zarr v3 group and xarray."""
    var = S.layer_to_var(path)
    group = zarr.create_group(zarr.storage.MemoryStore(), zarr_format=3)
    group.create_array(var, shape=(1, 2), dtype="f4",
                       dimension_names=(S.IMAGE, S.unit_dim(path)))
    assert [name for name, _ in group.arrays()] == [path]
    ds = xr.open_zarr(group.store, consolidated=False)
    assert ds[path].dims == (S.IMAGE, f"unit_{path}")


@given(st.integers(1, 10_000), st.integers(1, 512))
def test_chunks_cover_every_image_once(n_images, chunk_images):
    covered = []
    for chunk in range(S.n_chunks(n_images, chunk_images)):
        start, stop = S.chunk_bounds(chunk, n_images, chunk_images)
        assert 0 < stop - start <= chunk_images
        covered.append((start, stop))
    assert covered[0][0] == 0 and covered[-1][1] == n_images
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))


def test_chunk_out_of_range():
    with pytest.raises(IndexError):
        S.chunk_bounds(3, 10, 5)


@given(
    st.tuples(st.sampled_from(["pretrained", "random:0", "random:7"])).map(list),
    st.sampled_from(["avg", "max"]),
    st.integers(1, 256),
    st.one_of(st.none(), st.integers(8, 512)),
)
def test_extract_config_round_trip_through_json(inits, pool, batch, size):
    """What a store records (JSON) gives the same config back, field by field."""
    config = ExtractConfig(data="d", store="s.zarr", inits=tuple(inits), pool=pool,
                           batch_size=batch, image_size=size)
    recorded = json.loads(json.dumps(config.to_dict()))
    assert (recorded["data"], recorded["store"], recorded["inits"], recorded["pool"],
            recorded["batch_size"], recorded["image_size"]) == ("d", "s.zarr", inits, pool,
                                                                 batch, size)
    assert ExtractConfig.from_dict(recorded) == config


def test_config_from_dict_rejects_unknown():
    with pytest.raises(FeatstoreInputError, match="unknown ExtractConfig field"):
        ExtractConfig.from_dict({"data": "d", "store": "s", "colour": 1})


def test_parse_helpers():
    assert parse_choice("--pool", "max", ("avg", "max")) == "max"
    with pytest.raises(FeatstoreInputError, match="invalid --pool 'sum'; allowed: avg, max"):
        parse_choice("--pool", "sum", ("avg", "max"))
    with pytest.raises(FeatstoreInputError, match="invalid --batch-size 0"):
        parse_positive_int("--batch-size", 0)
    assert parse_device("auto", cuda_available=False) == "cpu"
    assert parse_device("auto", cuda_available=True) == "cuda"
    with pytest.raises(FeatstoreInputError, match="no CUDA device"):
        parse_device("cuda", cuda_available=False)
    with pytest.raises(FeatstoreInputError, match="allowed: auto, cpu, cuda"):
        parse_device("tpu", cuda_available=False)


@pytest.mark.parametrize("bad", ["", "a/b", "__zarr", "..."])
def test_unstorable_layer_names(bad):
    with pytest.raises(ValueError, match="cannot be stored"):
        S.layer_to_var(bad)
