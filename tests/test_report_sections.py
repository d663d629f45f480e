"""The report's activation-health, similarity and transferability sections, end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from featstore.cli.app import main

import featstore
from featstore.report.figures import plot_health
from helpers import make_image_folder


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("report")
    data = make_image_folder(root / "data", per_class=12)
    url = str(root / "s.zarr")
    featstore.extract(str(data), url, model="tiny_cnn", image_size=12, batch_size=8,
                      chunk_images=8, device="cpu", inits=("pretrained", "random:0", "random:1"))
    featstore.probe(url, classifiers=["ridge"], folds=3)
    return url


def test_report_command_with_health_similarity_and_transferability(
        probed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as info:
        main(["report", probed, "--out", str(out), "--similarity", "--transferability",
              "--no-parameters", "--n-boot", "50", "--scheduler", "sync"])
    assert info.value.code in (0, None), capsys.readouterr().err
    for name in ("health.png", "cka_heatmap.png", "cka_pretrained_vs_baselines.png",
                 "transferability.png", "cka.csv", "transferability.csv"):
        assert (out / name).stat().st_size > 0, name
    text = (out / "report.md").read_text()
    for heading in ("## Activation health", "## Representation similarity (linear CKA)",
                    "## Transferability estimators"):
        assert heading in text
    assert "Spearman with probe accuracy" in text
    # the CSV holds what featstore.cka computes
    cka = featstore.cka(probed)
    with (out / "cka.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    row = next(r for r in rows if r["layer_a"] == "block" and r["init_a"] == "pretrained"
               and r["layer_b"] == "block" and r["init_b"] == "random:0")
    expected = float(cka["cka"].sel(layer_a="block", init_a="pretrained", layer_b="block",
                                    init_b="random:0"))
    assert float(row["cka"]) == pytest.approx(expected, rel=1e-9)


def test_report_without_the_optional_sections(probed: str, tmp_path: Path) -> None:
    files = featstore.write_report(probed, tmp_path / "plain", n_boot=50, parameters=False)
    text = files.markdown.read_text()
    assert "## Activation health" in text and "No layer of any init is numerically" in text
    assert "linear CKA" not in text and not (tmp_path / "plain" / "cka.csv").exists()


def test_health_figure_has_one_line_per_init_on_a_log_axis() -> None:
    health = {init: {layer: {"rms": rms * (10.0 ** -i), "constant_fraction": 0.0,
                             "participation_ratio": 2.0 + i}
                     for i, layer in enumerate(("stem", "a", "b"))}
              for init, rms in (("pretrained", 1.0), ("random:0", 1e-3))}
    fig = plot_health(health)
    top, bottom = fig.axes[:2]
    assert top.get_yscale() == "log" and len(top.get_lines()) == 2
    np.testing.assert_allclose(np.asarray(top.get_lines()[1].get_ydata(), dtype=float),
                               np.array([1e-3, 1e-4, 1e-5]))
