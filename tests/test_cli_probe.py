"""``featstore probe`` on the command line: outputs, reuse, and one-line errors with status 2."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from featstore.cli.app import main

from _probe_data import make_store
from featstore import schema as S
from featstore.results import open_results


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_store(tmp_path_factory.mktemp("cli") / "store.zarr", per_class=(20, 20, 20))


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_store(tmp_path_factory.mktemp("cli") / "baselines.zarr", per_class=(20, 20, 20),
                      inits=("pretrained", "random:0", "random:1", "random:2", "random:0+bn",
                             "shuffled:0", "pretrained+bn"))


def test_probe_writes_tables_and_csvs(store: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out_csv, gain_csv = tmp_path / "r.csv", tmp_path / "g.csv"
    code, out, err = run(["probe", store, "--classifier", "ridge:alpha=1,10", "-c",
                          "nearest-centroid", "--folds", "3", "--seed", "1", "--quiet",
                          "--n-boot", "100", "--out", str(out_csv), "--gain-out", str(gain_csv)],
                         capsys)
    assert code == 0, err
    assert "ridge:alpha=1 accuracy (3 folds, 60 images" in out
    for word in ("pretrained", "random", "gain", "95% CI", "head"):
        assert word in out
    with out_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["layer", "init", "classifier", "metric", "mean", "std", "n_folds",
                             "chance"]
    assert len(rows) == 3 * 2 * 3 * 3  # layers x inits x classifiers x metrics
    with gain_csv.open() as handle:
        gains = list(csv.DictReader(handle))
    assert list(gains[0]) == ["layer", "classifier", "metric", "baseline", "gain", "ci_low",
                              "ci_high", "seed_sd", "n_seeds", "p_best", "normalized_gain",
                              "normalized_ci_low", "normalized_ci_high", "diff_best_ci_low",
                              "best", "sweet_spot", "pretrained", "random"]
    assert len(gains) == 3 * 3 * 3
    assert {row["baseline"] for row in gains} == {"random"}
    for row in gains:
        assert float(row["gain"]) == pytest.approx(float(row["pretrained"]) - float(row["random"]))
        assert row["seed_sd"] == "nan" and row["n_seeds"] == "1"
    results = open_results(store)
    assert results.attrs["featstore_probe"]["config"]["seed"] == 1


def test_every_baseline_side_by_side(baselines: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    gain_csv = tmp_path / "g.csv"
    code, out, err = run(["probe", baselines, "-c", "ridge:alpha=auto", "-c", "nearest-centroid",
                          "--folds", "3", "-q", "--n-boot", "60", "--margin", "0.02",
                          "--auto-grid", "0.1,10,1000", "--gain-out", str(gain_csv)], capsys)
    assert code == 0, err
    for text in ("gain vs random [95% CI]", "gain vs random+bn", "gain vs shuffled", "p_best",
                 "vs random (the architecture's own random initialisation, normalization "
                 "statistics as initialised; 3 seeds in the CI",
                 "vs random+bn (the same random weights, normalization statistics re-estimated "
                 "on these images; 1 seed",
                 "vs shuffled (the pretrained weights permuted within each tensor",
                 "within 0.02 of the best at 95%"):
        assert text in " ".join(out.split()), text
    assert "best layer " in out and "sweet spot " in out
    assert out.index("gain vs random ") < out.index("gain vs random+bn") < \
        out.index("gain vs shuffled")
    with gain_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["baseline"] for r in rows[:3]] == ["random", "random+bn", "shuffled"]
    assert len(rows) == 3 * 2 * 3 * 3  # layers x classifiers x metrics x baselines
    totals: dict[tuple[str, str, str], float] = {}
    for row in rows:
        key = (row["classifier"], row["metric"], row["baseline"])
        totals[key] = totals.get(key, 0.0) + float(row["p_best"])
        assert row["n_seeds"] == ("3" if row["baseline"] == "random" else "1")
        assert float(row["normalized_ci_low"]) <= float(row["normalized_gain"]) <= \
            float(row["normalized_ci_high"])
    assert all(v == pytest.approx(1.0) for v in totals.values())
    assert sum(r["sweet_spot"] == "True" for r in rows) == len(totals)
    results = open_results(baselines)
    chosen = results["chosen_param"].sel(classifier="ridge:alpha=auto")
    assert set(np.unique(chosen.values)) <= {0.1, 10.0, 1000.0}
    assert np.isnan(results["chosen_param"].sel(classifier="nearest-centroid").values).all()
    assert results.attrs["featstore_probe"]["config"]["auto_grid"] == [0.1, 10.0, 1000.0]


def test_unconverged_fits_are_named_one_line_each(store: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["probe", store, "-c", "logreg:C=100", "--folds", "3", "-q", "--n-boot",
                        "10", "--max-iter", "2", "--layers", "head"], capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    expected = {f"warning: logreg:C=100 did not converge on layer head, init {init}, fold {f}; "
                "raise --max-iter (or --tol)" for init in ("pretrained", "random:0")
                for f in range(3)}
    assert set(lines) == expected
    code, _, err = run(["probe", store, "-c", "logreg", "--folds", "3", "-q", "--n-boot", "10"],
                       capsys)
    assert code == 0 and "warning:" not in err


def test_rerun_reuses_and_force_recomputes(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["probe", store, "-c", "nearest-centroid", "--folds", "4", "--quiet", "--n-boot", "20"]
    code, _, err = run(argv, capsys)
    assert code == 0 and "reusing" not in err
    created = open_results(store).attrs["featstore_probe"]["created"]
    code, _, err = run(argv, capsys)
    assert code == 0
    assert "reusing stored results" in err
    assert open_results(store).attrs["featstore_probe"]["created"] == created
    code, _, err = run([*argv, "--force"], capsys)
    assert code == 0 and "reusing" not in err
    assert open_results(store).attrs["featstore_probe"]["created"] != created


def test_without_random_init_shows_scores_per_init(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = make_store(tmp_path / "pre.zarr", per_class=(8, 8), inits=("pretrained",))
    code, out, err = run(["probe", path, "-c", "ridge", "--folds", "2", "-q"], capsys)
    assert code == 0
    assert "no knowledge gain: knowledge gain needs at least one random init" in err
    assert "pretrained" in out


def _store_variants(tmp: Path) -> dict[str, str]:
    partial = make_store(tmp / "partial.zarr", per_class=(8, 8), complete=False)
    one = make_store(tmp / "one.zarr", per_class=(9,))
    unlabelled = make_store(tmp / "unlabelled.zarr", per_class=(6, 6))
    labels = zarr.open_group(unlabelled, mode="r+", use_consolidated=False)[S.LABEL]
    assert isinstance(labels, zarr.Array)
    labels[:] = -1
    small = make_store(tmp / "small.zarr", per_class=(3, 8))
    pre = make_store(tmp / "pre.zarr", per_class=(6, 6), inits=("pretrained",))
    return {"partial": partial, "one": one, "unlabelled": unlabelled, "small": small, "pre": pre}


def test_bad_input_exits_2_with_one_line(store: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    stores = _store_variants(tmp_path)
    cases = [
        (["probe", str(tmp_path / "missing")], "is not a featstore store"),
        (["probe", stores["partial"]], "is still being extracted: init 'random:0'"),
        (["probe", stores["one"]], "has 1 class among its usable images"),
        (["probe", stores["unlabelled"]], "has no labels"),
        (["probe", stores["small"]], "--folds 5 is larger than the smallest class"),
        (["probe", store, "-c", "svm"], "unknown --classifier 'svm'; allowed: logreg"),
        (["probe", store, "-c", "logreg:gamma=2"], "unknown parameter 'gamma'"),
        (["probe", store, "--layers", "layer9"], "unknown --layers value 'layer9'"),
        (["probe", store, "--inits", "random:9"], "unknown --inits value 'random:9'"),
        (["probe", store, "--scheduler", "cluster"], "invalid --scheduler 'cluster'"),
        (["probe", stores["pre"], "--folds", "2", "--gain-out", str(tmp_path / "g.csv")],
         "knowledge gain needs at least one random init"),
        (["probe", store, "--folds", "x"], "Invalid value for '--folds'"),
        (["probe", store, "--tol", "0"], "invalid --tol 0.0; must be a finite number > 0"),
        (["probe", store, "--tol", "inf"], "invalid --tol inf; must be a finite number > 0"),
        (["probe", store, "--max-iter", "0"], "--max-iter"),
        (["probe", store, "--margin", "0"], "invalid --margin 0.0; must be a number in (0, 1)"),
        (["probe", store, "--auto-grid", "1,x"], "invalid --auto-grid value 'x'"),
        (["probe", store, "-c", "logreg:C=auto", "--inner-folds", "1"],
         "invalid --inner-folds 1; must be an integer >= 2"),
        (["probe", stores["small"], "--folds", "3", "-c", "logreg:C=auto", "--inner-folds",
          "3"], "--inner-folds 3 (nested CV of logreg:C=auto) is larger than class 'class0' in "
                "the training images of fold 0 (2 images); use --inner-folds 2 or fewer"),
        (["probe", stores["small"], "--folds", "2", "-c", "ridge:alpha=auto"],
         "nested CV of ridge:alpha=auto needs at least 2 training images of every class in "
         "every fold; class 'class0' has 1 in fold 0: use a fixed value such as ridge:alpha=1"),
    ]
    for argv, message in cases:
        code, out, err = run(argv, capsys)
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert lines[0].startswith("featstore: error: ")
        assert message in lines[0], (argv, lines[0])
        assert "Traceback" not in err
    assert not (tmp_path / "g.csv").exists()
    labels = zarr.open_group(stores["pre"], mode="r")["label"]
    assert isinstance(labels, zarr.Array)
    assert np.all(np.asarray(labels[:]) >= 0)


def test_solver_options_reach_the_stored_config(store: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["probe", store, "-c", "logreg:C=0.5", "--folds", "3", "--quiet",
                        "--n-boot", "10", "--tol", "0.001", "--max-iter", "50"], capsys)
    assert code == 0, err
    config = open_results(store).attrs["featstore_probe"]["config"]
    assert (config["tol"], config["max_iter"]) == (0.001, 50)


@pytest.mark.parametrize("classifier, target", [
    ("knn:k=3", "featstore.probing.block.knn_predict"),
    ("ridge", "featstore.probing.sufficient.fit_from_stats"),  # the chunked statistics path
])
def test_a_failing_classifier_is_one_line_naming_layer_init_classifier(
        store: str, classifier: str, target: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    module, name = target.rsplit(".", 1)
    import importlib

    def broken(*args: object, **kwargs: object) -> None:
        raise np.linalg.LinAlgError("Singular matrix\nmore detail")

    monkeypatch.setattr(importlib.import_module(module), name, broken)
    if module.endswith("sufficient"):  # the sweep imported it by name
        monkeypatch.setattr("featstore.sweep.fit_from_stats", broken)
    code, out, err = run(["probe", store, "-c", classifier, "--folds", "3", "-q", "--force",
                          "--scheduler", "sync"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    expected = classifier if ":" in classifier else f"{classifier}:alpha=1"
    assert re.fullmatch(
        r"featstore: error: probe failed on layer '(stem|blocks\.0|head)', init "
        rf"'(pretrained|random:0)', classifier {re.escape(expected)}: Singular matrix; the "
        r"other blocks are fine \(--layers / --inits / --classifier leave this one out\)",
        lines[0]), lines[0]


def test_split_with_a_class_absent_from_training_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = np.repeat([0, 1, 2], (12, 12, 4))
    labels = labels[np.random.default_rng(0).permutation(labels.size)]  # as make_store does
    splits = ["test" if label == 2 or i % 4 == 0 else "train" for i, label in enumerate(labels)]
    url = make_store(tmp_path / "split.zarr", per_class=(12, 12, 4), splits=splits,
                     classes=("a", "b", "c"))  # class 'c' only among the test images
    code, _, err = run(["probe", url, "--split", "-c", "ridge", "-q"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        "featstore: error: class 'c' has no image among the training images (train + val); a "
        "probe cannot learn a class it never sees: give it training images, or leave the class "
        "out of the data"]
