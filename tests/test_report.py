"""featstore.report: parameter counts, figures, tables, Markdown/HTML and ``featstore report``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from featstore.cli.app import main
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.lines import Line2D
from scipy import stats

from _report_data import make_gain, make_probed_store, make_results
from featstore import report as R
from featstore.errors import FeatstoreInputError
from featstore.models import cumulative_parameter_counts, model_parameter_counts


def ydata(line: Line2D) -> np.ndarray:
    """A plotted line's y values as a float array."""
    return np.asarray(line.get_ydata(), dtype=float)

LAYERS = ("stem", "blocks.0", "blocks.1", "head")
CLF = "logreg:C=1"


INITS = ("pretrained", "random:0", "random:1", "shuffled:0", "pretrained+bn")


@pytest.fixture(scope="module")
def results():
    return make_results(layers=LAYERS, inits=INITS, classifiers=(CLF, "knn:k=5"))


@pytest.fixture(scope="module")
def gain(results):
    return make_gain(results)


# ------------------------------------------------------------------ parameter counts
def test_cumulative_parameter_counts_follow_module_order(two_conv_net) -> None:
    counts = cumulative_parameter_counts(two_conv_net, ["conv1", "act1", "conv2", "fc"])
    conv1 = 3 * 4 * 9 + 4
    conv2 = 4 * 6 * 9 + 6
    assert counts == {"conv1": conv1, "act1": conv1, "conv2": conv1 + conv2,
                      "fc": conv1 + conv2 + 6 * 3 + 3}


def test_cumulative_parameter_counts_cover_submodules_and_shared_weights() -> None:
    from torch import nn

    shared = nn.Linear(2, 2)
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), shared, shared)
    counts = cumulative_parameter_counts(net, ["0", "1", "2"])
    assert counts == {"0": 9, "1": 15, "2": 15}


def test_cumulative_parameter_counts_reject_unknown_layer(two_conv_net) -> None:
    with pytest.raises(FeatstoreInputError, match="layer 'layer9' is not a module"):
        cumulative_parameter_counts(two_conv_net, ["layer9"])


def test_model_parameter_counts_of_efficientnet_lite0() -> None:
    counts = model_parameter_counts("efficientnet_lite0", ["stem", "blocks.0", "head"])
    assert counts["stem"] == 3 * 32 * 9 + 2 * 32  # conv without bias + BN weight and bias
    assert counts["stem"] < counts["blocks.0"] < counts["head"]
    assert counts["head"] == 3_371_008  # everything but the classifier (1280 * 1000 + 1000)


# ------------------------------------------------------------------ summaries
def test_fold_interval_is_a_student_t_interval() -> None:
    scores = np.array([0.8, 0.9, 0.85, 0.7, np.nan])
    mean, low, high = R.fold_interval(scores, 0.95)
    finite = scores[:4]
    half = stats.t.ppf(0.975, 3) * finite.std(ddof=1) / 2
    assert mean == pytest.approx(finite.mean())
    assert (low, high) == pytest.approx((finite.mean() - half, finite.mean() + half))
    assert R.fold_interval(np.array([0.5])) == (0.5, 0.5, 0.5)
    assert all(math.isnan(v) for v in R.fold_interval(np.array([np.nan])))


def test_score_summary(results) -> None:
    summary = R.score_summary(results, CLF, "accuracy")
    assert summary["mean"].dims == ("init", "layer")
    expected = results["score"].sel(classifier=CLF, metric="accuracy").mean("fold")
    np.testing.assert_allclose(summary["mean"].values, expected.transpose("init", "layer").values)
    assert (summary["low"] <= summary["mean"]).all() and (summary["mean"] <= summary["high"]).all()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"classifier": "svm", "metric": "accuracy"}, "invalid --classifier 'svm'; this probe run "
                                                  "has: logreg:C=1, knn:k=5"),
    ({"classifier": CLF, "metric": "auc"}, "invalid --metric 'auc'"),
])
def test_unknown_classifier_or_metric(results, gain, kwargs, match) -> None:
    with pytest.raises(FeatstoreInputError, match=match):
        R.plot_scores(results, **kwargs)
    with pytest.raises(FeatstoreInputError, match=match):
        R.plot_gain(gain, **kwargs)


# ------------------------------------------------------------------ figures
def test_plot_scores_has_one_series_per_init_group_plus_chance(results) -> None:
    fig = R.plot_scores(results, CLF, "balanced_accuracy")
    (ax,) = fig.axes
    # pretrained, pretrained+bn, random (2 seeds averaged), shuffled; plus chance
    assert len(ax.lines) == 4 + 1
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 4
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == list(LAYERS)
    assert ax.get_xticklabels()[0].get_rotation() > 0
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["ImageNet-pretrained", "pretrained, BN re-estimated (AdaBN)",
                      "random init, BN as initialised (2 seeds)",
                      "shuffled pretrained weights (seed 0)", "chance (0.50)"]
    assert ax.get_xlabel() and "Balanced accuracy" in ax.get_ylabel()
    score = results["score"].sel(classifier=CLF, metric="balanced_accuracy")
    pretrained, _, random, shuffled = ax.lines[:4]
    np.testing.assert_allclose(ydata(pretrained),
                               score.sel(init="pretrained").mean("fold").values)
    np.testing.assert_allclose(ydata(random),
                               score.sel(init=["random:0", "random:1"]).mean(["init", "fold"])
                               .transpose("layer").values)
    assert pretrained.get_color() == R.PRETRAINED_COLOR
    assert random.get_color() == R.RANDOM_COLOR
    assert shuffled.get_color() == R.GROUP_COLORS["shuffled"]
    assert random.get_linestyle() != shuffled.get_linestyle()


def test_score_series_band_is_the_fold_interval_of_the_seed_average(results) -> None:
    series = {s.group: s for s in R.score_series(results, CLF, "accuracy", 0.9)}
    per_fold = results["score"].sel(classifier=CLF, metric="accuracy",
                                    init=["random:0", "random:1"]).mean("init")
    for j, layer in enumerate(results["layer"].values):
        values = per_fold.sel(layer=layer).values
        half = stats.t.ppf(0.95, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
        assert series["random"].low[j] == pytest.approx(values.mean() - half)
        assert series["random"].high[j] == pytest.approx(values.mean() + half)
    assert series["random"].inits == ("random:0", "random:1")


def test_plot_gain_shows_each_baseline_side_by_side(gain) -> None:
    fig = R.plot_gain(gain, CLF, "accuracy")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2  # random, shuffled
    for ax, baseline in zip(axes, ("random", "shuffled"), strict=True):
        sel = gain.sel(classifier=CLF, metric="accuracy", baseline=baseline)
        assert len(ax.lines) == 4  # gain, zero, sweet-spot marker, best marker
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 1
        curve = next(line for line in ax.lines if np.size(line.get_xdata()) == len(LAYERS))
        np.testing.assert_allclose(ydata(curve), sel["gain"].values)
        zero = next(line for line in ax.lines if list(ydata(line)) == [0, 0])
        assert zero.get_color() == "black"
        title = ax.get_title()
        best = str(sel["best_layer"].values)
        p_best = float(sel["p_best"].sel(layer=best))
        assert title.startswith(f"vs {baseline}: ")
        assert f"best {best.replace('-', '.')} (p_best {p_best:.2f})" in title
        assert "sweet spot " in title and "(margin 0.01)" in title
        star = next(line for line in ax.lines if line.get_marker() == "*")
        assert np.asarray(star.get_xdata())[0] == list(gain["layer"].values).index(best)
    assert "random init, BN as initialised, 2 seeds" in axes[0].get_title()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "best layer (largest gain)" in legend


def test_plot_gain_vs_parameters(gain) -> None:
    params = {"stem": 1_000, "blocks-0": 2_000, "blocks-1": 10_000, "head": 3_000_000}
    fig = R.plot_gain_vs_parameters(gain, params, CLF)
    (ax,) = fig.axes
    containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 2  # one per baseline
    data_line = containers[0].lines[0]
    np.testing.assert_allclose(ydata(data_line),
                               gain.sel(classifier=CLF, metric="accuracy",
                                        baseline="random")["gain"].values)
    assert data_line.get_color() == R.GROUP_COLORS["random"]
    assert ax.get_xscale() == "log"
    assert "Parameters" in ax.get_xlabel()
    with pytest.raises(FeatstoreInputError, match="no parameter count for layer 'blocks.0'"):
        R.plot_gain_vs_parameters(gain, {"stem": 1}, CLF)


def test_figures_save_as_non_empty_png(results, gain, tmp_path: Path) -> None:
    path = tmp_path / "scores.png"
    R.plot_scores(results, CLF).savefig(path, dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


# ------------------------------------------------------------------ tables and text
def test_gain_rows(results, gain) -> None:
    rows = R.gain_rows(results, gain, CLF, "accuracy", {"stem": 10})
    assert [r["module"] for r in rows] == list(LAYERS)
    assert rows[0]["parameters"] == 10 and rows[1]["parameters"] is None
    assert rows[0]["units"] == 8
    sel = gain.sel(classifier=CLF, metric="accuracy", baseline="random")
    np.testing.assert_allclose([r["gain"] for r in rows], sel["gain"].values)
    np.testing.assert_allclose([r["p_best"] for r in rows], sel["p_best"].values)
    assert sum(r["best"] for r in rows) == 1 and sum(r["sweet_spot"] for r in rows) == 1
    assert all(r["pretrained_low"] <= r["pretrained"] <= r["pretrained_high"] for r in rows)
    shuffled = R.gain_rows(results, gain, CLF, "accuracy", baseline="shuffled")
    np.testing.assert_allclose([r["random"] for r in shuffled],
                               gain.sel(classifier=CLF, metric="accuracy",
                                        baseline="shuffled")["random"].values)
    with pytest.raises(FeatstoreInputError, match="invalid --baseline 'random[+]bn'"):
        R.gain_rows(results, gain, CLF, "accuracy", baseline="random+bn")


def _row(layer: str, gain: float, low: float, high: float, **extra) -> dict:
    return {"layer": layer, "module": layer.replace("-", "."), "gain": gain, "ci_low": low,
            "ci_high": high, "pretrained": 0.7 + gain, "random": 0.7, "best": False,
            "sweet_spot": False, "parameters": None, "p_best": 0.0,
            "diff_best_ci_low": -0.004, **extra}


def test_sweet_spot_text_names_the_layers() -> None:
    rows = [
        _row("stem", -0.05, -0.1, -0.01, parameters=900),
        _row("blocks-1", 0.15, 0.05, 0.25, sweet_spot=True, parameters=2_000, p_best=0.3),
        _row("head", 0.2, 0.1, 0.3, best=True, parameters=3_000_000, p_best=0.7,
             diff_best_ci_low=0.0),
    ]
    text = R.sweet_spot_text(rows, "accuracy", margin=0.02, n_seeds=5)
    assert ("Against **random**, the largest knowledge gain in accuracy is at **head** (layer 3 "
            "of 3): +0.200 (95% CI +0.100 to +0.300; the CI carries 5 seeds; pretrained 0.900 "
            "vs random 0.700)") in text
    assert ("**head** has the largest gain in 70% of the bootstrap replicates (p_best): no "
            "layer is clearly best (none wins in 95% of the replicates); the wins are shared "
            "by head 70%, blocks.1 30%.") in text
    assert ("The sweet spot, the shallowest layer shown non-inferior to the best (the 95% CI "
            "of its gain minus the best layer's stays above \u22120.02), is **blocks.1** (layer "
            "2, 2k parameters up to it instead of 3M; gain +0.150, difference to the best at "
            "least -0.004)") in text
    assert "above zero at 2 of 3 layers (blocks.1, head)" in text
    assert "The random baseline does better at 1 layer(s) (stem)" in text


def test_best_layer_text_when_one_layer_is_clearly_best() -> None:
    rows = [_row("stem", 0.0, -0.02, 0.02, p_best=0.01),
            _row("head", 0.3, 0.2, 0.4, best=True, p_best=0.99)]
    assert R.best_layer_text(rows) == ("**head** has the largest gain in 99% of the bootstrap "
                                       "replicates (p_best), so it is clearly the best layer "
                                       "at 95%.")


def test_sweet_spot_text_when_nothing_transfers() -> None:
    rows = [_row("stem", 0.0, -0.02, 0.02, best=True, sweet_spot=True, p_best=0.6),
            _row("head", -0.01, -0.03, 0.01, p_best=0.4)]
    text = R.sweet_spot_text(rows, "macro_f1", confidence=0.9, baseline="shuffled", n_seeds=1)
    assert "Against **shuffled**, the largest knowledge gain in macro-f1 is at **stem**" in text
    assert "90% CI" in text and "the CI carries one seed" in text
    assert "also the sweet spot" in text
    assert "no layer shows a gain distinguishable from shuffled" in text


def _inputs(results, gain) -> R.ReportInputs:
    meta = {
        "model": "efficientnet_lite0", "n_images": 40, "pool": "avg", "dtype": "float32",
        "transform": {"size": 224, "interpolation": "bilinear", "mean": [0.5] * 3,
                      "std": [0.5] * 3},
        "inits": [{"name": "pretrained", "kind": "pretrained", "weights": "W<1>",
                   "sha256": "f" * 64},
                  {"name": "random:0", "kind": "random", "seed": 0}],
        "data": {"kind": "imagefolder", "root": "/data/lung <set>", "fingerprint": "0" * 64},
        "versions": {"featstore": "0.1.0"},
    }
    return R.ReportInputs(results=results, gain=gain, meta=meta, classifier=CLF,
                          metric="accuracy", store="s.zarr",
                          figures={"scores": "scores_accuracy.png", "gain": "gain_accuracy.png"},
                          class_counts={"benign": 20, "tumour": 20},
                          split_counts=None)


def test_markdown_report(results, gain) -> None:
    text = R.render_markdown(R.report_blocks(_inputs(results, gain)))
    assert text.startswith("# featstore report: efficientnet_lite0 on lung <set>")
    assert "![" in text and "(scores_accuracy.png)" in text and "(gain_accuracy.png)" in text
    assert "gain_vs_parameters" not in text
    table = [line for line in text.splitlines()
             if line.startswith("| ") and not line.startswith("| ---")]
    # main table: header + 4 layers; one detail table per baseline; other table: header + 2
    # classifiers x 3 metrics x 2 baselines
    assert len(table) == (1 + len(LAYERS)) + 2 * (1 + len(LAYERS)) + (1 + 12)
    header = table[0]
    assert ("| pretrained | random | gain vs random (95% CI) | p_best vs random | shuffled | "
            "gain vs shuffled (95% CI) | p_best vs shuffled | note |") in header
    for section in ("## Where the knowledge is", "## Data", "## Configuration", "## Caveats",
                    "## Gain statistics per baseline", "### vs random (2 seeds)",
                    "### vs shuffled (1 seed)", "## Fits",
                    "**random** (2 seeds): the architecture's own random initialisation, "
                    "normalization statistics as initialised",
                    "**shuffled** (1 seed): the pretrained weights permuted within each tensor",
                    "The `pretrained+bn` init (the pretrained weights with normalization "
                    "statistics re-estimated", "Against **random**", "Against **shuffled**",
                    "the CI carries 2 seeds", "defined at the ceiling", "(p_best)",
                    "benign (20)", "weights W<1>", "sha256 `ffffffffffff`", "logreg:C=1"):
        assert section in text, section


def test_html_report_escapes_and_links_figures(results, gain) -> None:
    page = R.render_html(R.report_blocks(_inputs(results, gain)), title="t <x>")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>t &lt;x&gt;</title>" in page
    assert '<img src="scores_accuracy.png"' in page
    assert "lung &lt;set&gt;" in page and "<set>" not in page
    assert page.count("<table>") == 4
    assert "<strong>" in page and "<code>" in page


# ------------------------------------------------------------------ write_report and the CLI
@pytest.fixture(scope="module")
def probed_store(tmp_path_factory) -> str:
    return make_probed_store(str(tmp_path_factory.mktemp("report") / "s.zarr"))


def test_write_report_on_a_probed_store(probed_store: str, tmp_path: Path) -> None:
    lines: list[str] = []
    files = R.write_report(probed_store, tmp_path / "out", n_boot=200, log=lines.append)
    assert files.classifier == "logreg:C=1" and files.metric == "accuracy"
    assert set(files.figures) == {"scores", "gain", "parameters"}
    for path in files.figures.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    text = files.markdown.read_text()
    for name in ("scores_accuracy.png", "gain_accuracy.png", "gain_vs_parameters_accuracy.png",
                 "| 0 | stem | 4 | 928 |", "| 2 | head | 8 | 3.37M |", "benign (20)",
                 "init `random:1`: seed 1", "5-fold stratified CV, seed 0"):
        assert name in text
    assert "The CI lies above zero at" in text
    assert "Every logreg and linear-svm fit converged." in text
    assert "<img src=\"gain_accuracy.png\"" in files.html.read_text()
    assert files.tables["results"].read_text().startswith("layer,init,classifier,metric")
    assert files.tables["gain"].read_text().startswith("layer,classifier,metric,baseline,gain")
    assert any("wrote" in line for line in lines)


def test_write_report_other_metric_and_no_parameter_figure(probed_store: str,
                                                           tmp_path: Path) -> None:
    files = R.write_report(probed_store, tmp_path, metric="macro_f1", parameters=False,
                           n_boot=50)
    assert set(files.figures) == {"scores", "gain"}
    assert files.figures["gain"].name == "gain_macro_f1.png"
    assert "Macro-F1" in files.markdown.read_text()


def test_report_command(probed_store: str, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", probed_store, "--out", str(tmp_path / "r"), "--n-boot", "100",
              "--metric", "balanced_accuracy", "--classifier", "logreg:C=1"])
    assert exc.value.code == 0
    assert "report.html" in capsys.readouterr().err
    assert (tmp_path / "r" / "scores_balanced_accuracy.png").stat().st_size > 0


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_report_command_bad_inputs(probed_store: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "r")
    assert "not a featstore store" in _fails(["report", str(tmp_path / "nope"), "--out", out],
                                             capsys)
    unprobed = make_probed_store(str(tmp_path / "unprobed.zarr"), probe=False)
    assert "holds no probe results; run `featstore probe" in _fails(
        ["report", unprobed, "--out", out], capsys)
    assert "invalid --classifier 'svm'; this probe run has: logreg:C=1" in _fails(
        ["report", probed_store, "--out", out, "--classifier", "svm"], capsys)
    assert "'auc' is not one of" in _fails(
        ["report", probed_store, "--out", out, "--metric", "auc"], capsys)
    assert "unknown probe run 'r0'" in _fails(
        ["report", probed_store, "--out", out, "--run", "r0"], capsys)
    assert not (tmp_path / "r").exists()  # nothing written on bad input


def test_figures_use_the_agg_canvas(results) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    assert isinstance(R.plot_scores(results, CLF).canvas, FigureCanvasAgg)


def test_report_lists_unconverged_fits_and_the_chosen_values(tmp_path: Path) -> None:
    import featstore

    url = make_probed_store(str(tmp_path / "s.zarr"), probe=False)
    featstore.probe(url, classifiers=["logreg:C=100", "ridge:alpha=auto"], folds=5, max_iter=2,
                    auto_grid=(0.01, 1.0), inner_folds=2)
    files = R.write_report(url, tmp_path / "out", n_boot=20, parameters=False)
    text = files.markdown.read_text()
    assert "fit record(s) did not converge" in text
    assert "- logreg:C=100, layer stem, init pretrained, fold 0\n" in text
    assert "`ridge:alpha=auto` chose alpha by nested stratified cross-validation" in text
    assert "| layer | pretrained | random |" in text  # chosen values per layer and init group
    assert "choices lie at an end of the grid (0.01 or 1)" in text
