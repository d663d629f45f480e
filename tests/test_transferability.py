"""LogME and H-score (featstore.transferability) against direct references, arrays and stores."""

from __future__ import annotations

import csv
import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from featstore.cli.app import main
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import minimize
from scipy.stats import spearmanr
from sklearn.covariance import LedoitWolf

import featstore
import featstore._chunked as chunked
from _probe_data import make_store, stored_features
from featstore.errors import FeatstoreInputError
from featstore.transfer import (
    TRANSFERABILITY_COLUMNS,
    class_stats,
    hscore,
    hscore_from_stats,
    logme,
    logme_from_stats,
    merge_class_stats,
    parse_estimators,
    transferability_correlation,
)

LAYERS = ("stem", "blocks.0", "head")
INITS = ("pretrained", "random:0")


# ------------------------------------------------------------------------------ references


def direct_log_evidence(f: np.ndarray, y: np.ndarray) -> float:
    """max over (alpha, beta) of log N(y; 0, I / beta + F F^T / alpha), per image.

    The n x n marginal likelihood of the Bayesian linear model, written as
    ``(I + F F^T / lambda) / beta`` with ``lambda = alpha / beta`` (a matrix with eigenvalues
    >= 1 whose Cholesky solve stays accurate), maximized numerically over (log lambda,
    log beta): a coarse grid, then Nelder-Mead from the best three grid points. ``lambda`` is
    searched within about 1e-9..1e9 times the mean squared row norm.
    """
    n = f.shape[0]
    gram = f @ f.T
    scale = math.log(max(float(np.trace(gram)) / n, 1e-300))

    def negative(p: np.ndarray) -> float:
        lam, beta = math.exp(p[0]), math.exp(p[1])
        try:
            factor = cho_factor(np.eye(n) + gram / lam)
        except np.linalg.LinAlgError:
            return math.inf
        log_det = 2.0 * float(np.sum(np.log(np.diag(factor[0])))) - n * math.log(beta)
        quad = beta * float(y @ cho_solve(factor, y))
        return 0.5 * (n * math.log(2 * math.pi) + log_det + quad)

    grid = itertools.product(np.linspace(scale - 21, scale + 21, 43), np.linspace(-12, 18, 31))
    starts = sorted((negative(np.array(p)), p) for p in grid)[:3]
    best = min(
        (minimize(negative, np.array(p), method="Nelder-Mead",
                  options={"xatol": 1e-8, "fatol": 1e-11, "maxiter": 5_000})
         for _, p in starts),
        key=lambda r: r.fun,
    )
    return -float(best.fun) / n


def direct_logme(f: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([direct_log_evidence(f, (labels == k).astype(float))
                          for k in np.unique(labels)]))


def direct_hscore(f: np.ndarray, labels: np.ndarray) -> float:
    cov = LedoitWolf().fit(f).covariance_
    mean = f.mean(axis=0)
    between = np.zeros_like(cov)
    for k in np.unique(labels):
        members = labels == k
        d = f[members].mean(axis=0) - mean
        between += members.mean() * np.outer(d, d)
    return float(np.trace(np.linalg.pinv(cov) @ between))


def data(n: int, d: int, classes: int, seed: int, offset: float = 2.0) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    centres = rng.normal(size=(classes, d))
    f = offset + rng.normal(size=(n, d)) * rng.uniform(0.3, 2.0, d) + 0.8 * centres[labels]
    return np.abs(f), labels


# ------------------------------------------------------------------------------ pure compute


@pytest.mark.parametrize(("n", "d", "classes"), [(30, 5, 3), (24, 1, 2), (20, 50, 3),
                                                 (12, 40, 2), (16, 16, 2)])
def test_logme_equals_direct_evidence_maximization(n: int, d: int, classes: int) -> None:
    f, labels = data(n, d, classes, seed=n * d)
    assert logme(f, labels) == pytest.approx(direct_logme(f, labels), abs=1e-6)


def test_logme_counts_every_unit_direction() -> None:
    # D > n: the zero-eigenvalue directions change the evidence through alpha only; the n x n
    # reference holds them implicitly, so agreement here checks the D - rank log(alpha) terms
    f, labels = data(8, 30, 2, seed=2)
    result = logme_from_stats(class_stats(f, labels, 2))
    assert result.converged and np.all(result.iterations > 0)
    assert result.value == pytest.approx(direct_logme(f, labels), abs=1e-6)


@pytest.mark.parametrize(("n", "d"), [(40, 6), (10, 30)])
def test_hscore_equals_direct_formula(n: int, d: int) -> None:
    f, labels = data(n, d, 3, seed=n + d, offset=50.0)  # a large mean: conditioning
    assert hscore(f, labels) == pytest.approx(direct_hscore(f, labels), rel=1e-7)


def test_chunked_stats_equal_one_shot() -> None:
    f, labels = data(45, 7, 3, seed=9, offset=30.0)
    shift = f[:4].mean(axis=0)
    total = None
    for a, b in [(0, 3), (3, 20), (20, 21), (21, 45)]:
        part = class_stats(f[a:b], labels[a:b], 3, shift)
        total = part if total is None else merge_class_stats(total, part)
    assert total is not None
    assert logme_from_stats(total).value == pytest.approx(direct_logme(f, labels), abs=1e-6)
    assert hscore_from_stats(total) == pytest.approx(direct_hscore(f, labels), rel=1e-7)


def test_degenerate_inputs() -> None:
    f, labels = data(20, 6, 2, seed=1)
    # constant units: finite, and still equal to the references
    f[:, 2] = 3.0
    assert logme(f, labels) == pytest.approx(direct_logme(f, labels), abs=1e-6)
    assert hscore(f, labels) == pytest.approx(direct_hscore(f, labels), rel=1e-7)
    # all-zero features: the zero-weight limit, -(log(2 pi n_k / n) + 1) / 2, and H-score 0
    zeros = np.zeros((20, 6))
    want = np.mean([-(math.log(2 * math.pi * (labels == k).mean()) + 1) / 2 for k in (0, 1)])
    assert logme(zeros, labels) == pytest.approx(want, abs=1e-12)
    assert hscore(zeros, labels) == 0.0
    # units >> images and one image per class: defined values equal to the references
    wide, few = data(3, 60, 3, seed=5)
    assert logme(wide, few) == pytest.approx(direct_logme(wide, few), abs=1e-6)
    assert hscore(wide, few) == pytest.approx(direct_hscore(wide, few), rel=1e-7)
    with pytest.raises(FeatstoreInputError, match="at least 2 classes; the labels hold 1"):
        logme(f, np.zeros(20, dtype=int))
    with pytest.raises(FeatstoreInputError, match="NaN or infinite"):
        hscore(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))


def test_parse_estimators() -> None:
    assert parse_estimators(None) == ("logme", "hscore")
    assert parse_estimators(["hscore,LogME"]) == ("logme", "hscore")
    with pytest.raises(FeatstoreInputError, match="unknown --estimator 'leep'; allowed: logme"):
        parse_estimators(["leep"])


def probe_like(accuracy: np.ndarray, layers: list[str], inits: list[str]) -> xr.Dataset:
    """Probe results with one classifier, two folds and the given fold-mean accuracy."""
    score = np.stack([accuracy - 0.01, accuracy + 0.01], axis=-1)[None, ..., None]
    return xr.Dataset(
        {"score": (("classifier", "layer", "init", "fold", "metric"), score)},
        coords={"classifier": ["ridge"], "layer": layers, "init": inits, "fold": [0, 1],
                "metric": ["accuracy"]},
    )


def test_correlation_equals_scipy_spearman() -> None:
    rng = np.random.default_rng(0)
    layers = [f"l{k}" for k in range(6)]
    scores = xr.Dataset(
        {"score": (("layer", "init", "estimator"), rng.normal(size=(6, 2, 2)))},
        coords={"layer": layers, "init": ["pretrained", "random:0"],
                "estimator": ["logme", "hscore"]},
    )
    accuracy = rng.uniform(size=(5, 2))
    accuracy[:, 1] = 0.5  # constant: undefined correlation, with a note
    results = probe_like(accuracy, layers[:5], ["pretrained", "random:0"])
    got = transferability_correlation(scores, results)
    want = spearmanr(scores["score"].values[:5, 0, 1], accuracy[:, 0])
    rho = float(got["spearman"].sel(estimator="hscore", init="pretrained", classifier="ridge"))
    assert rho == pytest.approx(want.statistic)
    assert int(got["n_layers"].sel(estimator="hscore", init="pretrained",
                                   classifier="ridge")) == 5
    assert np.isnan(got["spearman"].sel(init="random:0")).all()
    assert any("constant across layers" in note for note in got.attrs["notes"])
    short = transferability_correlation(scores, probe_like(accuracy[:2], layers[:2],
                                                           ["pretrained", "random:0"]))
    assert np.isnan(short["spearman"]).all()
    assert "needs at least 3" in short.attrs["notes"][0]


# ------------------------------------------------------------------------------ stores


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_store(tmp_path_factory.mktemp("tr") / "s.zarr", per_class=(9, 8, 7),
                      chunk_images=8, invalid=(2,), nan_rows={("pretrained", "stem"): [11]})


def stored(store: str) -> tuple[dict[tuple[str, str], np.ndarray], np.ndarray, np.ndarray]:
    features = {(i, la): stored_features(store, i, la) for i in INITS for la in LAYERS}
    ok = np.isfinite(np.concatenate(list(features.values()), axis=1)).all(axis=1)
    labels = np.asarray(featstore.open_store(store)["label"].values)
    return features, ok, labels


@pytest.mark.parametrize("task_rows", [1024, 8])
def test_store_scores_equal_direct(store: str, task_rows: int,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunked, "TASK_ROWS", task_rows)  # 8: one chunk per task
    scores = featstore.transferability(store)
    features, ok, labels = stored(store)
    info = scores.attrs["featstore_transferability"]
    assert info["n_images_used"] == ok.sum() == 22
    assert info["excluded"] == {"invalid": 1, "unlabelled": 0, "non_finite": 1}
    assert scores["score"].dims == ("layer", "init", "estimator")
    for (init, layer), f in features.items():
        got = scores["score"].sel(layer=layer, init=init)
        assert float(got.sel(estimator="logme")) == pytest.approx(
            direct_logme(f[ok], labels[ok]), abs=1e-6)
        assert float(got.sel(estimator="hscore")) == pytest.approx(
            direct_hscore(f[ok], labels[ok]), rel=1e-7)


def test_store_one_class_is_an_error(tmp_path: Path) -> None:
    path = make_store(tmp_path / "one.zarr", per_class=(3, 1), invalid=(0, 1, 2, 3),
                      inits=("pretrained",))
    with pytest.raises(FeatstoreInputError, match="0 class among its usable images"):
        featstore.transferability(path)


# ------------------------------------------------------------------------------ command line


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_writes_csv_figure_and_correlation(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = make_store(tmp_path / "c.zarr", per_class=(8, 8, 8), chunk_images=8)
    out = tmp_path / "t.csv"
    code, stdout, err = run(["transferability", path, "--out", str(out)], capsys)
    assert code == 0, err
    assert "rank correlation with probe accuracy: unavailable" in err
    with out.open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == TRANSFERABILITY_COLUMNS
        rows = list(reader)
    assert len(rows) == len(LAYERS) * len(INITS) * 2
    features, ok, labels = stored(path)
    for row in rows:
        if row["estimator"] == "logme":
            want = direct_logme(features[row["init"], row["layer"]][ok], labels[ok])
            assert float(row["score"]) == pytest.approx(want, abs=1e-6)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"

    featstore.probe(path, classifiers=["nearest-centroid"], folds=3)
    code, stdout, err = run(["transferability", path, "--out", str(out), "--estimator",
                             "hscore"], capsys)
    assert code == 0, err
    assert "Spearman rank correlation" in stdout
    results = featstore.open_results(path)
    accuracy = results["score"].sel(metric="accuracy").mean("fold").isel(classifier=0)
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["estimator"] for r in rows} == {"hscore"}
    for init in INITS:
        mine = [float(r["score"]) for layer in LAYERS for r in rows
                if r["init"] == init and r["layer"] == layer]
        want = spearmanr(mine, accuracy.sel(init=init, layer=list(LAYERS)).values).statistic
        line = next(line for line in stdout.splitlines()
                    if line.startswith("│ hscore") and f" {init} " in line)
        assert f"{want:.3f}" in re.sub(r"\s+", " ", line)
    code, _, err = run(["transferability", path, "--estimator", "leep"], capsys)
    assert code == 2 and "unknown --estimator 'leep'" in err
