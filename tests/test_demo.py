"""featstore.demo: the built-in IHC tile set, the choice of data, and ``featstore demo``."""

from __future__ import annotations

import math
import types
from pathlib import Path

import numpy as np
import pytest
from featstore.cli.app import main
from PIL import Image

import featstore
from featstore import demo as D
from featstore.data import open_source
from featstore.errors import DatasetFetchError, DataSourceError
from featstore.inspect import summarize_store
from helpers import make_image_folder


def _two_stain_image() -> np.ndarray:
    """128x128 RGB: left half DAB only, right half haematoxylin only, a white bottom strip."""
    from skimage.color import hed2rgb

    hed = np.zeros((128, 128, 3))
    hed[:, :64, 2] = 0.6
    hed[:, 64:, 0] = 0.3
    hed[112:, :, :] = 0.0
    rgb = np.clip(hed2rgb(hed), 0, 1)
    return (rgb * 255).round().astype(np.uint8)


def test_label_ihc_tiles_on_a_synthetic_two_stain_image() -> None:
    tiles = D.label_ihc_tiles(_two_stain_image(), tile=32, stride=32, balance=False)
    by_position = {(t.y, t.x): t.label for t in tiles}
    # rows 0..2 are tissue (row 3 holds the white strip in its lower half, still > min density)
    for y in (0, 32, 64):
        assert by_position[(y, 0)] == by_position[(y, 32)] == 0  # dab_rich
        assert by_position[(y, 64)] == by_position[(y, 96)] == 1  # hematoxylin_rich
    assert [(t.y, t.x) for t in tiles] == sorted((t.y, t.x) for t in tiles)


def test_label_ihc_tiles_drops_background() -> None:
    white = np.full((64, 64, 3), 255, dtype=np.uint8)
    assert D.label_ihc_tiles(white, tile=32, stride=32) == []


def _naive_ihc_labels(image: np.ndarray, tile: int = 64, stride: int = 32, margin: float = 0.05,
                      min_density: float = 0.25) -> dict[tuple[int, int], tuple[int, float, float]]:
    """Reference for the documented rule, one pixel at a time: (y, x) -> (label, dab, hem).

    Densities are optical densities (skimage's colour deconvolution) divided by their 99th
    percentile over the image; a tile is kept when DAB + haematoxylin >= min_density and they
    differ by more than margin, and labelled 0 (dab_rich) when DAB is the larger.
    """
    from skimage.color import rgb2hed

    hed = rgb2hed(image)
    tops = {c: float(np.percentile(hed[..., c], 99)) for c in (0, 2)}
    out = {}
    for y in range(0, image.shape[0] - tile + 1, stride):
        for x in range(0, image.shape[1] - tile + 1, stride):
            sums = {0: 0.0, 2: 0.0}
            for i in range(y, y + tile):
                for c in (0, 2):
                    sums[c] += math.fsum(hed[i, x:x + tile, c].tolist())
            dab, hem = sums[2] / tile**2 / tops[2], sums[0] / tile**2 / tops[0]
            if dab + hem >= min_density and abs(dab - hem) > margin:
                out[(y, x)] = (0 if dab > hem else 1, dab, hem)
    return out


def test_builtin_ihc_labels_follow_the_rule_and_are_balanced() -> None:
    from skimage.data import immunohistochemistry

    image = immunohistochemistry()
    reference = _naive_ihc_labels(image)
    unbalanced = D.label_ihc_tiles(image, balance=False)
    assert {(t.y, t.x): t.label for t in unbalanced} == {k: v[0] for k, v in reference.items()}
    for t in unbalanced:
        assert (t.dab, t.hematoxylin) == pytest.approx(reference[(t.y, t.x)][1:], rel=1e-9)
    assert (sum(t.label == 0 for t in unbalanced), sum(t.label == 1 for t in unbalanced)) == (
        90, 107)
    tiles = D.label_ihc_tiles(image)
    assert len(tiles) == 180
    assert sum(t.label == 0 for t in tiles) == sum(t.label == 1 for t in tiles) == 90
    # balancing keeps, per class, the tiles whose stains differ most
    for label in (0, 1):
        kept = {(t.y, t.x) for t in tiles if t.label == label}
        gaps = {k: abs(v[1] - v[2]) for k, v in reference.items() if v[0] == label}
        dropped = [g for k, g in gaps.items() if k not in kept]
        assert kept <= set(gaps) and min(gaps[k] for k in kept) >= max(dropped, default=0.0)
    assert D.label_ihc_tiles(image) == tiles  # deterministic


def test_label_ihc_tiles_rejects_bad_input() -> None:
    with pytest.raises(DataSourceError, match=r"expected an RGB image of shape \(h, w, 3\)"):
        D.label_ihc_tiles(np.zeros((8, 8)))
    with pytest.raises(DataSourceError, match="invalid tile 4"):
        D.label_ihc_tiles(np.zeros((8, 8, 3), dtype=np.uint8), tile=4)


def test_write_ihc_dataset_is_an_image_folder(tmp_path: Path) -> None:
    root = D.write_ihc_dataset(tmp_path / "ihc")
    source = open_source(root)
    assert tuple(source.classes) == D.IHC_CLASSES
    assert len(source) == 180
    assert [r.label for r in source.records].count(0) == 90
    with Image.open(sorted((root / "dab_rich").iterdir())[0]) as first:
        assert first.size == (64, 64) and first.mode == "RGB"
    assert "colour deconvolution" in (root / "SOURCE.md").read_text()
    # rewriting replaces, never mixes
    (root / "dab_rich" / "stray.png").write_bytes(b"")
    D.write_ihc_dataset(root)
    assert not (root / "dab_rich" / "stray.png").exists()


def _fake_datasets(cached: Path | None = None, fetched: Path | None = None):
    calls: list[tuple[str, float]] = []

    def dataset_path(name: str, cache_dir=None):
        return cached if name == "kather2016" else None

    def fetch_dataset(name: str, *, cache_dir=None, timeout=10.0, progress=None, base_url=None):
        calls.append((name, timeout))
        if fetched is None:
            raise DatasetFetchError(f"cannot download {name}: network is unreachable")
        return fetched

    return types.SimpleNamespace(dataset_path=dataset_path, fetch_dataset=fetch_dataset), calls


def test_choose_demo_data_given(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "mine")
    chosen = D.choose_demo_data(data, tmp_path / "out")
    assert (chosen.path, chosen.origin) == (data, "given")
    with pytest.raises(DataSourceError, match="demo data '.*nope' does not exist"):
        D.choose_demo_data(tmp_path / "nope", tmp_path / "out")


def test_choose_demo_data_falls_back_to_builtin_when_offline(tmp_path: Path,
                                                            monkeypatch) -> None:
    fake, calls = _fake_datasets()
    monkeypatch.setattr(D, "_datasets_module", lambda: fake)
    lines: list[str] = []
    chosen = D.choose_demo_data(None, tmp_path / "out", fetch_timeout=3, log=lines.append)
    assert calls == [("kather2016", 3)]
    assert chosen.origin == "builtin" and chosen.name == "ihc-builtin"
    assert chosen.path == tmp_path / "out" / "data" / "ihc-builtin"
    assert "90 dab_rich + 90 hematoxylin_rich grey-level tiles" in chosen.description
    assert any("could not download kather2016: cannot download" in line for line in lines)


def test_choose_demo_data_without_fetch_or_datasets_module(tmp_path: Path, monkeypatch) -> None:
    fake, calls = _fake_datasets()
    monkeypatch.setattr(D, "_datasets_module", lambda: fake)
    assert D.choose_demo_data(None, tmp_path / "a", fetch=False).origin == "builtin"
    assert calls == []
    monkeypatch.setattr(D, "_datasets_module", lambda: None)
    assert D.choose_demo_data(None, tmp_path / "b").origin == "builtin"


@pytest.mark.parametrize("origin", ["cache", "download"])
def test_choose_demo_data_takes_a_subset_of_a_public_set(tmp_path: Path, monkeypatch,
                                                         origin: str) -> None:
    public = make_image_folder(tmp_path / "kather", classes=("01_TUMOR", "02_STROMA", "03_X"),
                               per_class=5)
    fake, _ = (_fake_datasets(cached=public) if origin == "cache"
               else _fake_datasets(fetched=public))
    monkeypatch.setattr(D, "_datasets_module", lambda: fake)
    chosen = D.choose_demo_data(None, tmp_path / "out", per_class=2)
    assert chosen.origin == origin and chosen.name == "kather2016"
    source = open_source(chosen.path)
    assert list(source.classes) == ["01_TUMOR", "02_STROMA", "03_X"]
    assert len(source) == 6
    assert chosen.path.is_relative_to(tmp_path / "out")


def test_demo_command_with_missing_data_fails_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", str(tmp_path / "nope"), "--out", str(tmp_path / "out"), "-q"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_run_demo_end_to_end_on_given_data(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "mine", per_class=5)
    lines: list[str] = []
    # fewer inits than the default (DEMO_INITS, run by the slow test below) keep this test fast
    result = D.run_demo(data, tmp_path / "demo", image_size=32, n_boot=50, log=lines.append,
                        inits=("pretrained", "random:0-2", "shuffled:0"))
    assert result.data.origin == "given"
    assert set(result.timings) == {"data", "extract", "probe", "report"}
    assert result.results_csv.read_text().startswith("layer,init,classifier,metric")
    assert result.gain_csv.read_text().startswith("layer,classifier,metric,baseline,gain")
    gain = result.gain_csv.read_text().splitlines()
    assert {line.split(",")[3] for line in gain[1:]} == {"random", "shuffled"}
    summary = summarize_store(result.store)
    assert [i["name"] for i in summary["inits"]] == [
        "pretrained", "random:0", "random:1", "random:2", "shuffled:0"]
    text = result.report.markdown.read_text()
    assert "the CI carries 3 seeds" in text and "Against **shuffled**" in text
    assert D.DEMO_INITS == ("pretrained", "random:0-4", "random:0+bn", "shuffled:0")
    assert len(summary["layers"]) == 18 and summary["probes"][0]["folds"] == 5
    assert set(result.report.figures) == {"scores", "gain", "parameters", "health"}
    assert all(p.stat().st_size > 10_000 for p in result.report.figures.values())
    assert result.report.markdown.parent == tmp_path / "demo" / "report"
    assert any(line.startswith("data: your data at") for line in lines)


@pytest.mark.slow
def test_demo_command_on_the_builtin_set(tmp_path: Path, monkeypatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(D, "_datasets_module", lambda: None)  # offline, no cache
    full = D.write_ihc_dataset
    monkeypatch.setattr(D, "write_ihc_dataset", lambda root: full(root, stride=64))  # fewer tiles
    out = tmp_path / "featstore-demo"
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(out), "-q", "--image-size", "64"])  # the tiles are 64 px
    assert exc.value.code == 0
    err = capsys.readouterr().err
    assert "data: the built-in set: " in err and "dab_rich + " in err
    results = featstore.open_results(str(out / "store.zarr"))
    assert results.sizes["layer"] == 18 and list(results["init"].values) == [
        "pretrained", "random:0", "random:1", "random:2", "random:3", "random:4", "random:0+bn",
        "shuffled:0"]
    for name in ("scores_accuracy.png", "gain_accuracy.png", "gain_vs_parameters_accuracy.png",
                 "report.md", "report.html"):
        assert (out / "report" / name).stat().st_size > 0
    assert (out / "results.csv").exists() and (out / "gain.csv").exists()
