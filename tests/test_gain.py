"""featstore.gain: knowledge gain and its paired bootstrap interval, on known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import featstore
from _probe_data import informative, make_store
from featstore.errors import ProbeInputError
from featstore.gain import _boot_fold_scores, check_gain_inits, knowledge_gain
from featstore.inits import init_kind
from featstore.probing import metric_scores

LAYERS = {"stem": 5, "head": 10}


def _probe(path: Path, features: object, inits: tuple[str, ...] = ("pretrained", "random:0"),
           classifiers: tuple[str, ...] = ("nearest-centroid",),
           per_class: tuple[int, ...] = (50, 50, 50)) -> xr.Dataset:
    store = make_store(path, per_class=per_class, layers=LAYERS, inits=inits,
                       features=features)  # type: ignore[arg-type]
    return featstore.probe(store, classifiers=list(classifiers), folds=5)


def test_informative_vs_noise_gain_is_accuracy_minus_chance(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def features(init: str, layer: str, labels: np.ndarray, units: int) -> np.ndarray:
        strength = 12.0 if init == "pretrained" else 0.0  # random init: pure noise
        return informative(labels, units, strength, rng)

    results = _probe(tmp_path / "s.zarr", features)
    gain = knowledge_gain(results, n_boot=500)
    acc = gain.sel(classifier="nearest-centroid", metric="accuracy")
    np.testing.assert_allclose(acc["pretrained"].values, 1.0)
    chance = float(results["chance"].sel(metric="accuracy"))
    # the random init is at chance: gain = accuracy - chance, up to sampling noise
    np.testing.assert_allclose(acc["gain"].values, 1.0 - chance, atol=0.1)
    assert ((acc["ci_low"] <= 1.0 - chance) & (1.0 - chance <= acc["ci_high"])).all()
    assert (acc["ci_low"] > 0.4).all()
    bal = gain.sel(classifier="nearest-centroid", metric="balanced_accuracy")
    np.testing.assert_allclose(bal["gain"].values, 1.0 - 1.0 / 3.0, atol=0.1)
    np.testing.assert_allclose(
        acc["normalized_gain"].values, (acc["gain"] / (1.0 - acc["random"])).values)


def test_identical_inits_have_zero_gain_and_ci_contains_zero(tmp_path: Path) -> None:
    def features(init: str, layer: str, labels: np.ndarray, units: int) -> np.ndarray:
        return informative(labels, units, 0.7, np.random.default_rng(len(layer)))  # same for both

    results = _probe(tmp_path / "s.zarr", features, classifiers=("nearest-centroid", "ridge"))
    gain = knowledge_gain(results, n_boot=200)
    np.testing.assert_array_equal(gain["gain"].values, 0.0)
    assert (gain["ci_low"] <= 0).all() and (gain["ci_high"] >= 0).all()
    np.testing.assert_array_equal(gain["ci_low"].values, 0.0)
    assert gain["pretrained"].values.min() > 0.4


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    """Weakly informative pretrained, two random inits, several classifiers."""
    rng = np.random.default_rng(5)

    def features(init: str, layer: str, labels: np.ndarray, units: int) -> np.ndarray:
        strength = {"pretrained": 0.5, "random:0": 0.25, "random:1": 0.2}[init]
        return informative(labels, units, strength * (2 if layer == "head" else 1), rng)

    path = tmp_path_factory.mktemp("gain") / "noisy.zarr"
    return _probe(path, features, inits=("pretrained", "random:0", "random:1"),
                  classifiers=("nearest-centroid", "ridge", "knn:k=3"), per_class=(25, 15, 10))


def test_point_estimate_inside_ci_and_means(noisy: xr.Dataset) -> None:
    gain = knowledge_gain(noisy, n_boot=300, seed=1)
    assert gain["gain"].dims == ("classifier", "layer", "metric")
    assert ((gain["ci_low"] <= gain["gain"]) & (gain["gain"] <= gain["ci_high"])).all()
    assert (gain["ci_high"] - gain["ci_low"] > 0).all()
    score = noisy["score"]
    np.testing.assert_allclose(gain["pretrained"].values,
                               score.sel(init="pretrained").mean("fold")
                               .transpose("classifier", "layer", "metric").values)
    np.testing.assert_allclose(gain["random"].values,
                               score.sel(init=["random:0", "random:1"]).mean(["fold", "init"])
                               .transpose("classifier", "layer", "metric").values)
    np.testing.assert_allclose(gain["gain"].values,
                               (gain["pretrained"] - gain["random"]).values)
    assert gain.attrs["random_inits"] == ["random:0", "random:1"]
    assert gain.attrs["seed_variance"].startswith("included")
    again = knowledge_gain(noisy, n_boot=300, seed=1)
    xr.testing.assert_identical(gain, again)


def test_best_layer_and_sweet_spot(noisy: xr.Dataset) -> None:
    gain = knowledge_gain(noisy, n_boot=200)
    layers = list(gain["layer"].values)
    for c in gain["classifier"].values:
        for m in gain["metric"].values:
            g = gain.sel(classifier=c, metric=m)
            best = layers[int(np.argmax(g["gain"].values))]
            assert g["best_layer"].item() == best
            reach = g["ci_high"].values >= g["gain"].sel(layer=best).item()
            assert g["sweet_spot_layer"].item() == layers[int(np.flatnonzero(reach)[0])]
            assert layers.index(g["sweet_spot_layer"].item()) <= layers.index(best)


def test_gain_round_trips_through_zarr(noisy: xr.Dataset, tmp_path: Path) -> None:
    gain = knowledge_gain(noisy, n_boot=50)
    gain.to_zarr(tmp_path / "gain.zarr", zarr_format=3, consolidated=False)
    back = xr.open_zarr(tmp_path / "gain.zarr", consolidated=False).load()
    assert [str(v) for v in back["best_layer"].values.ravel()] == \
        [str(v) for v in gain["best_layer"].values.ravel()]
    np.testing.assert_array_equal(back["ci_high"].values, gain["ci_high"].values)


def test_one_random_init_says_seed_variance_not_estimable(noisy: xr.Dataset) -> None:
    gain = knowledge_gain(noisy.sel(init=["pretrained", "random:0"]), n_boot=50)
    assert gain.attrs["seed_variance"].startswith("not estimable with one random init")


def test_bootstrap_with_unit_weights_is_the_plain_metric() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, 40)
    preds = rng.integers(0, 3, (4, 40))
    out = _boot_fold_scores(np.ones((2, 40)), truth, preds, 3)
    for s in range(4):
        np.testing.assert_allclose(out[0, s], metric_scores(truth, preds[s], 3), atol=1e-12)
    twice = _boot_fold_scores(np.full((1, 40), 2.0), truth, preds, 3)
    np.testing.assert_allclose(twice[0], out[0], atol=1e-12)


def test_gain_needs_pretrained_and_random(noisy: xr.Dataset) -> None:
    with pytest.raises(ProbeInputError, match=r"knowledge gain needs at least one random init"):
        knowledge_gain(noisy.sel(init=["pretrained"]))
    with pytest.raises(ProbeInputError, match=r"knowledge gain needs exactly one pretrained"):
        knowledge_gain(noisy.sel(init=["random:0", "random:1"]))
    with pytest.raises(ProbeInputError, match=r"invalid n_boot 0"):
        knowledge_gain(noisy, n_boot=0)
    with pytest.raises(ProbeInputError, match=r"invalid confidence 1.5"):
        knowledge_gain(noisy, confidence=1.5)


def test_init_kinds() -> None:
    assert init_kind("pretrained:IMAGENET1K_V2") == "pretrained"
    assert init_kind("random:3") == "random"
    assert check_gain_inits(["random:0", "pretrained", "random:1"]) == (
        "pretrained", ["random:0", "random:1"])
