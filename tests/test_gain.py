"""featstore.gain: knowledge gain against every baseline and its paired bootstrap statistics.

The bootstrap, ``p_best``, the normalized gain's interval and the non-inferiority sweet spot are
checked against a naive loop-by-loop reference (tests/_gain_reference.py) that draws the same
random numbers in the same order; known answers check the point estimates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import featstore
from _gain_reference import reference_gain
from _probe_data import informative, make_store
from _report_data import make_results
from featstore.errors import ProbeInputError
from featstore.gain import (
    _boot_fold_scores,
    check_gain_inits,
    knowledge_gain,
    normalized_gain,
    parse_margin,
)
from featstore.inits import init_kind
from featstore.probing import metric_scores

LAYERS = {"stem": 5, "mid": 7, "head": 10}
COMPARED = ("gain", "ci_low", "ci_high", "seed_sd", "p_best", "normalized_gain",
            "normalized_ci_low", "normalized_ci_high", "diff_best_ci_low")


def _probe(path: Path, features: object, inits: tuple[str, ...] = ("pretrained", "random:0"),
           classifiers: tuple[str, ...] = ("nearest-centroid",),
           per_class: tuple[int, ...] = (50, 50, 50)) -> xr.Dataset:
    store = make_store(path, per_class=per_class, layers=LAYERS, inits=inits,
                       features=features)  # type: ignore[arg-type]
    return featstore.probe(store, classifiers=list(classifiers), folds=5)


def _synthetic(inits: tuple[str, ...], seed: int = 4, n_images: int = 30,
               classifiers: tuple[str, ...] = ("x", "y")) -> xr.Dataset:
    results = make_results(layers=("a", "b", "c"), inits=inits, classifiers=classifiers,
                           n_images=n_images, n_classes=3, seed=seed)
    return results.assign_coords(init_kind=("init", [init_kind(i) for i in inits]))


def _assert_matches_reference(gain: xr.Dataset, results: xr.Dataset, n_boot: int, seed: int,
                              margin: float = 0.01, confidence: float = 0.95) -> None:
    ref = reference_gain(results, n_boot, seed, confidence=confidence, margin=margin)
    assert list(gain["baseline"].values) == ref.groups
    for group in ref.groups:
        sel = gain.sel(baseline=group).transpose("classifier", "layer", "metric")
        for name in COMPARED:
            expected = getattr(ref, {"gain": "gain", "ci_low": "ci_low", "ci_high": "ci_high",
                                     "seed_sd": "seed_sd", "p_best": "p_best",
                                     "normalized_gain": "norm",
                                     "normalized_ci_low": "norm_low",
                                     "normalized_ci_high": "norm_high",
                                     "diff_best_ci_low": "diff_low"}[name])[group]
            np.testing.assert_allclose(sel[name].values, expected, rtol=0, atol=1e-12,
                                       err_msg=f"{group} {name}")
        assert sel["best_layer"].values.tolist() == ref.best[group]
        assert sel["sweet_spot_layer"].values.tolist() == ref.sweet[group]


# ------------------------------------------------------------------ against the naive reference
@pytest.mark.parametrize("inits", [
    ("pretrained", "random:0"),
    ("pretrained", "random:0", "random:1", "random:2"),
    ("pretrained", "random:0", "random:1", "shuffled:0", "shuffled:1", "random:0+bn",
     "pretrained+bn"),
])
def test_bootstrap_equals_a_naive_loop_over_replicates(inits: tuple[str, ...]) -> None:
    results = _synthetic(inits)
    gain = knowledge_gain(results, n_boot=30, seed=3, margin=0.05)
    _assert_matches_reference(gain, results, 30, 3, margin=0.05)


def test_reference_on_a_real_probe_run(noisy: xr.Dataset) -> None:
    gain = knowledge_gain(noisy, n_boot=20, seed=7, confidence=0.9, margin=0.02)
    _assert_matches_reference(gain, noisy, 20, 7, margin=0.02, confidence=0.9)


def test_random_baseline_numbers_are_todays() -> None:
    """Frozen output of the single-baseline implementation (featstore before baselines) on a
    deterministic synthetic run: the random baseline's numbers must not move."""
    results = _synthetic(("pretrained", "random:0", "random:1"), classifiers=("x",))
    gain = knowledge_gain(results, n_boot=25, seed=3).sel(baseline="random", classifier="x")
    today = {
        "gain": [[-0.059468823513043834, -0.057364347049401854, -0.04613329198958305],
                 [0.12309262121450071, 0.052794458815919154, 0.09187742786487663],
                 [0.2457628771174173, 0.24265489734599788, 0.23427996737378243]],
        "ci_low": [[-0.09999999999999998, -0.17333333333333337, -0.15384126984126983],
                   [-0.3133333333333333, -0.2955555555555555, -0.2806666666666667],
                   [-0.18666666666666665, -0.23555555555555552, -0.18997017797017796]],
        "ci_high": [[0.07333333333333335, 0.09266666666666669, 0.07885714285714282],
                    [0.12309262121450071, 0.052794458815919154, 0.09187742786487663],
                    [0.2457628771174173, 0.24265489734599788, 0.23427996737378243]],
    }
    for name, values in today.items():
        np.testing.assert_allclose(gain[name].values, values, rtol=0, atol=1e-15)
    assert gain["best_layer"].values.tolist() == ["c", "c", "c"]


def test_other_baselines_leave_the_random_numbers_unchanged() -> None:
    full = _synthetic(("pretrained", "random:0", "random:1", "shuffled:0", "random:0+bn",
                       "random:1+bn", "pretrained+bn"))
    alone = full.sel(init=["pretrained", "random:0", "random:1"])
    a = knowledge_gain(full, n_boot=40, seed=1).sel(baseline="random")
    b = knowledge_gain(alone, n_boot=40, seed=1).sel(baseline="random")
    for name in COMPARED:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert list(knowledge_gain(full, n_boot=5)["baseline"].values) == [
        "random", "random+bn", "shuffled"]


# ------------------------------------------------------------------ known answers
def test_informative_vs_noise_gain_is_accuracy_minus_chance(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def features(init: str, layer: str, labels: np.ndarray, units: int) -> np.ndarray:
        strength = 12.0 if init == "pretrained" else 0.0  # baselines: pure noise
        return informative(labels, units, strength, rng)

    results = _probe(tmp_path / "s.zarr", features,
                     inits=("pretrained", "random:0", "shuffled:0"))
    gain = knowledge_gain(results, n_boot=500)
    assert gain["gain"].dims == ("baseline", "classifier", "layer", "metric")
    assert list(gain["baseline"].values) == ["random", "shuffled"]
    assert gain["n_seeds"].values.tolist() == [1, 1]
    acc = gain.sel(classifier="nearest-centroid", metric="accuracy")
    np.testing.assert_allclose(acc["pretrained"].values, 1.0)
    chance = float(results["chance"].sel(metric="accuracy"))
    # the baselines are at chance: gain = accuracy - chance, up to sampling noise
    np.testing.assert_allclose(acc["gain"].values, 1.0 - chance, atol=0.1)
    assert ((acc["ci_low"] <= 1.0 - chance) & (1.0 - chance <= acc["ci_high"])).all()
    assert (acc["ci_low"] > 0.4).all()
    # a perfect pretrained score recovers all of the headroom
    np.testing.assert_allclose(acc["normalized_gain"].values, 1.0)
    bal = gain.sel(classifier="nearest-centroid", metric="balanced_accuracy")
    np.testing.assert_allclose(bal["gain"].values, 1.0 - 1.0 / 3.0, atol=0.1)


def test_identical_inits_have_zero_gain_and_ci_contains_zero(tmp_path: Path) -> None:
    def features(init: str, layer: str, labels: np.ndarray, units: int) -> np.ndarray:
        return informative(labels, units, 0.7, np.random.default_rng(len(layer)))  # same for all

    results = _probe(tmp_path / "s.zarr", features, classifiers=("nearest-centroid", "ridge"))
    gain = knowledge_gain(results, n_boot=200)
    np.testing.assert_array_equal(gain["gain"].values, 0.0)
    np.testing.assert_array_equal(gain["ci_low"].values, 0.0)
    np.testing.assert_array_equal(gain["ci_high"].values, 0.0)
    np.testing.assert_array_equal(gain["normalized_gain"].values, 0.0)
    # every layer's gain is 0 in every replicate: all tie, p_best is split evenly
    np.testing.assert_allclose(gain["p_best"].values, 1.0 / len(LAYERS))
    assert (gain["sweet_spot_layer"].values == "stem").all()
    assert gain["pretrained"].values.min() > 0.4


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    """Weakly informative pretrained, two random inits and one shuffled, several classifiers."""
    rng = np.random.default_rng(5)

    def features(init: str, layer: str, labels: np.ndarray, units: int) -> np.ndarray:
        strength = {"pretrained": 0.5, "random:0": 0.25, "random:1": 0.2, "shuffled:0": 0.3}[init]
        return informative(labels, units, strength * (1 + list(LAYERS).index(layer) / 2), rng)

    path = tmp_path_factory.mktemp("gain") / "noisy.zarr"
    return _probe(path, features, inits=("pretrained", "random:0", "random:1", "shuffled:0"),
                  classifiers=("nearest-centroid", "ridge", "knn:k=3"), per_class=(25, 15, 10))


def test_point_estimates_are_fold_means(noisy: xr.Dataset) -> None:
    gain = knowledge_gain(noisy, n_boot=100, seed=1)
    score = noisy["score"]
    order = ("classifier", "layer", "metric")
    np.testing.assert_allclose(gain["pretrained"].values,
                               score.sel(init="pretrained").mean("fold").transpose(*order).values)
    rnd = gain.sel(baseline="random")
    np.testing.assert_allclose(rnd["random"].values,
                               score.sel(init=["random:0", "random:1"]).mean(["fold", "init"])
                               .transpose(*order).values)
    per_seed = score.sel(init="pretrained") - score.sel(init=["random:0", "random:1"])
    np.testing.assert_allclose(rnd["seed_sd"].values,
                               per_seed.mean("fold").std("init", ddof=1).transpose(*order).values,
                               atol=1e-12)
    shuffled = gain.sel(baseline="shuffled")
    np.testing.assert_allclose(shuffled["gain"].values,
                               (score.sel(init="pretrained") - score.sel(init="shuffled:0"))
                               .mean("fold").transpose(*order).values)
    assert np.isnan(shuffled["seed_sd"].values).all()
    assert gain.attrs["baseline_inits"] == {"random": ["random:0", "random:1"],
                                            "shuffled": ["shuffled:0"]}
    assert gain.attrs["seed_variance"]["random"].startswith("included: 2 seeds")
    assert gain.attrs["seed_variance"]["shuffled"].startswith("not estimable")
    assert gain.attrs["margin"] == 0.01
    np.testing.assert_allclose(gain["p_best"].sum("layer").values, 1.0)
    again = knowledge_gain(noisy, n_boot=100, seed=1)
    xr.testing.assert_identical(gain, again)


def test_sweet_spot_moves_with_the_margin(noisy: xr.Dataset) -> None:
    wide = knowledge_gain(noisy, n_boot=100, margin=0.99)
    assert (wide["sweet_spot_layer"].values == "stem").all()  # anything is within 0.99
    tight = knowledge_gain(noisy, n_boot=100, margin=1e-9)
    layers = list(noisy["layer"].values)
    for value, best in zip(tight["sweet_spot_layer"].values.ravel(),
                           tight["best_layer"].values.ravel(), strict=True):
        assert layers.index(value) <= layers.index(best)
    with pytest.raises(ProbeInputError, match=r"invalid --margin 0; must be a number in \(0, 1\)"):
        knowledge_gain(noisy, margin=0)


def test_gain_round_trips_through_zarr(noisy: xr.Dataset, tmp_path: Path) -> None:
    gain = knowledge_gain(noisy, n_boot=50)
    gain.to_zarr(tmp_path / "gain.zarr", zarr_format=3, consolidated=False)
    back = xr.open_zarr(tmp_path / "gain.zarr", consolidated=False).load()
    assert [str(v) for v in back["best_layer"].values.ravel()] == \
        [str(v) for v in gain["best_layer"].values.ravel()]
    np.testing.assert_array_equal(back["ci_high"].values, gain["ci_high"].values)


def test_normalized_gain_is_defined_at_the_ceiling() -> None:
    pre = np.array([1.0, 0.95, 0.9, 0.5, 0.0, np.nan, 1.0])
    base = np.array([1.0, 0.99, 0.8, 0.5, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(normalized_gain(pre, base),
                               [0.0, -0.04 / 0.99, 0.5, 0.0, -1.0, np.nan, 1.0])


def test_parse_margin() -> None:
    assert parse_margin(0.02) == 0.02
    for bad in (0, -0.1, 1.0, float("nan"), True):
        with pytest.raises(ProbeInputError, match="invalid --margin"):
            parse_margin(bad)  # type: ignore[arg-type]


def test_bootstrap_with_unit_weights_is_the_plain_metric() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, 40)
    preds = rng.integers(0, 3, (4, 40))
    out = _boot_fold_scores(np.ones((2, 40)), truth, preds, 3)
    for s in range(4):
        np.testing.assert_allclose(out[0, s], metric_scores(truth, preds[s], 3), atol=1e-12)
    twice = _boot_fold_scores(np.full((1, 40), 2.0), truth, preds, 3)
    np.testing.assert_allclose(twice[0], out[0], atol=1e-12)


def test_gain_needs_pretrained_and_a_baseline(noisy: xr.Dataset) -> None:
    with pytest.raises(ProbeInputError, match=r"knowledge gain needs at least one random init"):
        knowledge_gain(noisy.sel(init=["pretrained"]))
    with pytest.raises(ProbeInputError, match=r"knowledge gain needs exactly one pretrained"):
        knowledge_gain(noisy.sel(init=["random:0", "random:1"]))
    with pytest.raises(ProbeInputError, match=r"invalid n_boot 0"):
        knowledge_gain(noisy, n_boot=0)
    with pytest.raises(ProbeInputError, match=r"invalid confidence 1.5"):
        knowledge_gain(noisy, confidence=1.5)


def test_check_gain_inits_groups_the_baselines() -> None:
    assert init_kind("pretrained:IMAGENET1K_V2") == "pretrained"
    assert init_kind("random:3+bn") == "random+bn"
    assert check_gain_inits(["shuffled:0", "random:0", "pretrained", "pretrained+bn",
                             "random:1", "random:0+bn"]) == (
        "pretrained", {"random": ["random:0", "random:1"], "random+bn": ["random:0+bn"],
                       "shuffled": ["shuffled:0"]})
