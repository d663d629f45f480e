"""featstore.verify: each damaged, missing or unfinished chunk is named by layer, init, images."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from featstore.cli.app import main

from featstore import schema as S
from featstore.errors import NotAStoreError
from featstore.store import FeatureStore, LayerSpec, StoreLayout, open_store
from featstore.verify import (
    ALL_LAYERS,
    CONSOLIDATED,
    MARKERS,
    mark_for_repair,
    repair_command,
    verify_store,
)

INITS: list[dict[str, Any]] = [{"name": "pretrained", "kind": "pretrained"},
                               {"name": "random:0", "kind": "random", "seed": 0}]


def make_layout(n_images: int = 10, chunk: int = 4) -> StoreLayout:
    return StoreLayout(
        model="tiny",
        layers=(LayerSpec("conv1", 3, (3, 8, 8)), LayerSpec("blocks.0", 5, (5, 4, 4))),
        transform={"size": 8, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3},
        pool="avg", dtype="float32", chunk_images=chunk, classes=("a", "b"),
        paths=tuple(f"{'ab'[i % 2]}/img{i}.png" for i in range(n_images)),
        labels=tuple(i % 2 for i in range(n_images)),
        splits=tuple("train" if i < 6 else "test" for i in range(n_images)),
        data={"kind": "imagefolder", "root": "/data", "fingerprint": "abc"},
    )


def fill(store: FeatureStore, layout: StoreLayout, init_index: int,
         chunks: list[int] | None = None) -> None:
    rng = np.random.default_rng(init_index)
    for chunk in range(layout.n_chunks) if chunks is None else chunks:
        start, stop = S.chunk_bounds(chunk, layout.n_images, layout.chunk_images)
        store.write_chunk(init_index, chunk, {
            layer.name: rng.normal(size=(stop - start, layer.units)).astype(np.float32)
            for layer in layout.layers})


@pytest.fixture(params=["local", "file", "memory"])
def url(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "s.zarr")
    if request.param == "file":
        return f"file://{tmp_path / 's.zarr'}"
    return f"memory://featstore-verify-{uuid.uuid4().hex}/s.zarr"


def full_store(url: str) -> tuple[FeatureStore, StoreLayout]:
    layout = make_layout()
    store = FeatureStore.create(url, layout, {"config": {"data": "/data", "batch_size": 4}},
                                INITS)
    for i in range(2):
        fill(store, layout, i)
    return store, layout


def read_key(url: str, key: str) -> bytes:
    if url.startswith("memory://"):
        return bytes(fsspec.filesystem("memory").cat_file(f"{url[9:]}/{key}"))
    return (Path(url.removeprefix("file://")) / key).read_bytes()


def write_key(url: str, key: str, raw: bytes) -> None:
    if url.startswith("memory://"):
        fsspec.filesystem("memory").pipe_file(f"{url[9:]}/{key}", raw)
    else:
        (Path(url.removeprefix("file://")) / key).write_bytes(raw)


def flip(url: str, key: str) -> None:
    raw = bytearray(read_key(url, key))
    raw[len(raw) // 2] ^= 0xFF
    write_key(url, key, bytes(raw))


def test_clean_store_is_ok(url):
    full_store(url)
    report = verify_store(url)
    assert report.ok and report.problems == ()
    assert report.chunks_read == 2 * 2 * 3  # layers x inits x chunks
    assert report.summary() == (f"store '{url}' is intact and complete "
                                "(2 layers x 2 inits x 3 chunks, every chunk read)")


def test_flipped_byte_is_reported_by_layer_init_and_images(url):
    store, _ = full_store(url)
    flip(url, store.chunk_key("blocks.0", (1, 1, 0)))
    report = verify_store(url)
    assert not report.ok
    (problem,) = report.problems
    assert (problem.kind, problem.variable, problem.init, problem.chunk) == (
        "corrupt", "blocks.0", "random:0", 1)
    assert (problem.start, problem.stop) == (4, 8)
    assert problem.detail == "CRC32C checksum mismatch"
    assert report.ranges() == [{"kind": "corrupt", "variable": "blocks.0", "init": "random:0",
                                "chunks": "1", "images": "4-7",
                                "detail": "CRC32C checksum mismatch"}]
    assert report.summary().startswith(
        f"store '{url}': 1 chunk corrupt (first: blocks.0 init random:0 images 4-7); "
        "recompute them with `featstore extract /data --store")
    assert report.summary().endswith("--repair`")


def test_missing_pending_and_damaged_markers_and_coordinates(url):
    layout = make_layout()
    store = FeatureStore.create(url, layout, {}, INITS)
    fill(store, layout, 0)
    fill(store, layout, 1, chunks=[0])
    if url.startswith("memory://"):
        fsspec.filesystem("memory").rm_file(f"{url[9:]}/{store.chunk_key('conv1', (0, 2, 0))}")
    else:
        (Path(url.removeprefix("file://")) / store.chunk_key("conv1", (0, 2, 0))).unlink()
    flip(url, store.chunk_key(MARKERS, (0, 0)))
    flip(url, store.chunk_key(S.LABEL, (0,)))
    report = verify_store(url)
    got = {(p.kind, p.variable, p.init, p.chunk) for p in report.problems}
    assert got == {
        ("missing", "conv1", "pretrained", 2),
        ("corrupt", MARKERS, "pretrained", 0),
        ("corrupt", S.LABEL, None, None),
        ("pending", ALL_LAYERS, "pretrained", 0),  # its marker no longer says done
        ("pending", ALL_LAYERS, "random:0", 1),
        ("pending", ALL_LAYERS, "random:0", 2),
    }
    rows = report.ranges()
    assert {"kind": "pending", "variable": ALL_LAYERS, "init": "random:0", "chunks": "1-2",
            "images": "4-9", "detail": "not marked done"} in rows
    assert report.count("pending") == 3 and len(report.damaged) == 3


def test_truncated_and_emptied_chunks(tmp_path):
    url = str(tmp_path / "s.zarr")
    store, _ = full_store(url)
    for coords, content in (((0, 0, 0), lambda raw: raw[: len(raw) // 2]),
                            ((1, 2, 0), lambda raw: b"")):
        key = store.chunk_key("conv1", coords)
        write_key(url, key, content(read_key(url, key)))
    got = {(p.kind, p.init, p.chunk) for p in verify_store(url).problems}
    assert got == {("corrupt", "pretrained", 0), ("corrupt", "random:0", 2)}


def test_stale_consolidated_metadata_is_reported_not_damage(tmp_path):
    url = str(tmp_path / "s.zarr")
    store, _ = full_store(url)
    store.group.attrs[S.ATTRS_KEY] = store.meta  # rewrites the root without consolidated metadata
    report = verify_store(url)
    (problem,) = report.problems
    assert (problem.kind, problem.variable) == ("stale", CONSOLIDATED)
    assert report.damaged == ()
    assert "consolidated metadata out of date" in report.summary()
    store.consolidate()
    assert verify_store(url).ok


def test_mark_for_repair_clears_exactly_the_damaged_chunks(url):
    store, layout = full_store(url)
    flip(url, store.chunk_key("conv1", (1, 2, 0)))
    flip(url, store.chunk_key(S.PATH, (0,)))
    report = verify_store(url)
    handle = FeatureStore.open(url, mode="r+")
    assert mark_for_repair(handle, report, layout) == {1}
    assert handle.pending_chunks(0) == [] and handle.pending_chunks(1) == [2]
    assert open_store(url)["path"].values[3] == "b/img3.png"  # rewritten from the layout
    fill(handle, layout, 1, chunks=[2])
    assert verify_store(url).ok


def test_repair_command_rebuilds_the_extract_command():
    meta = {"model": "resnet18", "inits": [{"name": "pretrained"}, {"name": "random:0"}],
            "transform": {"size": 224}, "pool": "avg", "dtype": "float32", "chunk_images": 256,
            "config": {"data": "/data/my tiles", "layers": ["layer1", "layer2"],
                       "batch_size": 64, "skip_unreadable": True}}
    assert repair_command(meta, "s.zarr") == (
        "featstore extract '/data/my tiles' --store s.zarr --model resnet18 --init pretrained "
        "--init random:0 --layers layer1,layer2 --image-size 224 --pool avg --dtype float32 "
        "--chunk-images 256 --batch-size 64 --skip-unreadable --repair")


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_cli_exit_status_and_output(tmp_path, capsys):
    url = str(tmp_path / "s.zarr")
    store, _ = full_store(url)
    code, out, err = run_cli(["verify", url], capsys)
    assert code == 0 and "intact and complete" in out and err == ""
    flip(url, store.chunk_key("conv1", (0, 1, 0)))
    code, out, err = run_cli(["verify", url], capsys)
    assert code == 1
    assert "corrupt" in out and "conv1" in out and "pretrained" in out and "4-7" in out
    assert err.count("\n") == 1
    assert err.startswith(f"featstore: error: store '{url}': 1 chunk corrupt (first: conv1 init "
                          "pretrained images 4-7); recompute them with `featstore extract")
    code, _, err = run_cli(["verify", str(tmp_path / "nothing.zarr")], capsys)
    assert code == 2 and "is not a featstore store" in err and err.count("\n") == 1


def test_not_a_store(tmp_path):
    with pytest.raises(NotAStoreError, match="is not a featstore store"):
        verify_store(str(tmp_path / "missing.zarr"))
