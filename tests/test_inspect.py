"""featstore.inspect.summarize_store and ``featstore info``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from featstore.cli.app import main

from featstore import schema as S
from featstore.errors import NotAStoreError
from featstore.inspect import disk_usage, summarize_store
from featstore.store import FeatureStore, LayerSpec, StoreLayout

INITS: list[dict[str, Any]] = [
    {"name": "pretrained", "kind": "pretrained", "weights": "W.IMAGENET", "sha256": "ab" * 32,
     "seed": None},
    {"name": "random:0", "kind": "random", "weights": None, "sha256": None, "seed": 0},
]


def make_layout(n_images: int = 10, chunk: int = 4, splits: bool = True) -> StoreLayout:
    return StoreLayout(
        model="tiny",
        layers=(LayerSpec("conv1", 3, (3, 8, 8)), LayerSpec("blocks.0", 5, (5, 4, 4))),
        transform={"size": 8, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3},
        pool="avg",
        dtype="float32",
        chunk_images=chunk,
        classes=("benign", "tumour"),
        paths=tuple(f"{'ab'[i % 2]}/img{i}.png" for i in range(n_images)),
        labels=tuple(int(i % 3 == 0) for i in range(n_images)),
        splits=tuple("train" if i < 6 else "test" for i in range(n_images)) if splits else None,
        data={"kind": "imagefolder", "root": "/data/tiny", "fingerprint": "abc"},
    )


def make_store(url: str, *, complete: bool = True, splits: bool = True) -> FeatureStore:
    """Two inits; the second has only its first chunk written unless ``complete``."""
    layout = make_layout(splits=splits)
    store = FeatureStore.create(url, layout, {"versions": {"featstore": "test"},
                                              "created": "2025-01-01T00:00:00+00:00"}, INITS)
    rng = np.random.default_rng(0)
    for init in range(2):
        chunks = range(layout.n_chunks) if (complete or init == 0) else range(1)
        for chunk in chunks:
            start, stop = S.chunk_bounds(chunk, layout.n_images, layout.chunk_images)
            feats = {layer.name: rng.normal(size=(stop - start, layer.units)).astype(np.float32)
                     for layer in layout.layers}
            invalid = np.zeros(stop - start, dtype=bool)
            if chunk == 0:
                invalid[1] = True
            store.write_chunk(init, chunk, feats, invalid)
    return store


def test_summary_of_a_partial_local_store(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    make_store(url, complete=False)
    summary = summarize_store(url)
    assert summary["model"] == "tiny"
    assert [layer["module"] for layer in summary["layers"]] == ["conv1", "blocks.0"]
    assert [layer["units"] for layer in summary["layers"]] == [3, 5]
    assert summary["layers"][1]["shape"] == [5, 4, 4]
    pre, rnd = summary["inits"]
    assert (pre["name"], pre["weights"], pre["sha256"]) == ("pretrained", "W.IMAGENET", "ab" * 32)
    assert (pre["chunks_done"], pre["chunks_total"], pre["images_done"], pre["complete"]) == (
        3, 3, 10, True)
    assert (rnd["seed"], rnd["chunks_done"], rnd["images_done"], rnd["complete"]) == (
        0, 1, 4, False)
    images = summary["images"]
    assert images["n_images"] == 10 and images["n_valid"] == 9
    assert images["classes"] == {"benign": 6, "tumour": 4}
    assert images["splits"] == {"test": {"benign": 2, "tumour": 2},
                                "train": {"benign": 4, "tumour": 2}}
    size = summary["size"]
    assert size["raw_feature_bytes"] == (3 + 5) * 4 * (10 + 4)
    files = [p for p in Path(url).rglob("*") if p.is_file()]
    assert size["stored_bytes"] == sum(p.stat().st_size for p in files)
    layer_dirs = [Path(url) / "conv1", Path(url) / "blocks.0"]
    assert size["feature_bytes"] == sum(p.stat().st_size for p in files
                                        if any(d in p.parents for d in layer_dirs))
    assert 0 < size["feature_bytes"] < size["stored_bytes"]
    assert size["compression_ratio"] == pytest.approx(size["raw_feature_bytes"]
                                                      / size["feature_bytes"])
    assert summary["probes"] == []
    json.dumps(summary)  # pure, JSON-able data


def test_summary_of_a_memory_store_counts_its_bytes() -> None:
    import fsspec

    url = f"memory://featstore-inspect-{np.random.default_rng().integers(10**9)}/s.zarr"
    make_store(url, splits=False)
    summary = summarize_store(url)
    assert summary["images"]["splits"] is None
    assert all(init["complete"] for init in summary["inits"])
    fs = fsspec.filesystem("memory")
    root = "/" + url.removeprefix("memory://")
    sizes = {path: len(fs.cat_file(path)) for path in fs.find(root)}  # every object, read back
    assert summary["size"]["stored_bytes"] == disk_usage(url) == sum(sizes.values()) > 0
    assert summary["size"]["feature_bytes"] == sum(
        n for path, n in sizes.items()
        if path.removeprefix(root).lstrip("/").split("/")[0] in ("conv1", "blocks.0"))


def test_not_a_store_raises(tmp_path: Path) -> None:
    with pytest.raises(NotAStoreError, match="is not a featstore store"):
        summarize_store(str(tmp_path / "missing"))


def test_info_command_prints_the_summary(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "s.zarr")
    make_store(url, complete=False)
    with pytest.raises(SystemExit) as exc:
        main(["info", url])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in ("tiny", "pretrained", "random:0", "seed 0", "1/3 partial", "3/3", "4/10",
                 "benign", "blocks.0", "compression", "probe runs: none"):
        assert text in out


def test_info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "s.zarr")
    make_store(url)
    with pytest.raises(SystemExit) as exc:
        main(["info", url, "--json"])
    assert exc.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"]["classes"] == {"benign": 6, "tumour": 4}


@pytest.mark.parametrize("kind", ["missing", "plain_dir", "zarr_group"])
def test_info_on_a_non_store_fails_with_one_line(tmp_path: Path, kind: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x"
    if kind == "plain_dir":
        path.mkdir()
        (path / "file.txt").write_text("hello")
    elif kind == "zarr_group":
        import zarr

        zarr.open_group(str(path), mode="w", zarr_format=3)
    with pytest.raises(SystemExit) as exc:
        main(["info", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a featstore store" in err
