"""Linear CKA (featstore.similarity) against naive n x n references, on arrays and on stores."""

from __future__ import annotations

import csv
import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
from featstore.cli.app import main

import featstore
import featstore._chunked as chunked
import featstore.similarity as similarity
from _probe_data import make_store, stored_features
from featstore.errors import FeatstoreInputError
from featstore.similarity import (
    CKA_COLUMNS,
    hsic_from_stats,
    linear_cka,
    merge_pair_stats,
    pair_stats,
    permutation_summary,
)

LAYERS = ("stem", "blocks.0", "head")
INITS = ("pretrained", "random:0")


# ------------------------------------------------------------------------------ references


def naive_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """Biased HSIC with the centring matrix H: tr(K H L H) / (n - 1)^2."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l_ @ h)) / (n - 1) ** 2


def naive_unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. (2012), eq. (5), with explicit n x n matrices."""
    n = k.shape[0]
    kt, lt = k.copy(), l_.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    return float(np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
                 - 2.0 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def u_statistic_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """HSIC_1 as the U-statistic over all ordered 4-tuples of distinct images (tiny n only)."""
    n = k.shape[0]
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l_[i, j] + k[i, j] * l_[q, r] - 2.0 * k[i, j] * l_[i, q]
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def naive_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    k, l_ = x @ x.T, y @ y.T
    f = naive_unbiased_hsic if debiased else naive_hsic
    return f(k, l_) / np.sqrt(f(k, k) * f(l_, l_))


def related(n: int, dx: int, dy: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dx)) * rng.uniform(0.2, 3.0, dx) + rng.uniform(-5, 5, dx)
    y = x[:, : min(dx, 3)] @ rng.normal(size=(min(dx, 3), dy)) + rng.normal(size=(n, dy)) + 2.0
    return x, y


# ------------------------------------------------------------------------------ pure compute


@pytest.mark.parametrize(("n", "dx", "dy"), [(40, 6, 9), (25, 3, 1), (12, 30, 50)])
def test_cka_equals_naive_centred_gram(n: int, dx: int, dy: int) -> None:
    x, y = related(n, dx, dy, seed=n + dx)
    assert linear_cka(x, y) == pytest.approx(naive_cka(x, y), abs=1e-6)
    assert linear_cka(x, y, debiased=True) == pytest.approx(naive_cka(x, y, True), abs=1e-6)


def test_naive_unbiased_formula_is_the_u_statistic() -> None:
    x, y = related(7, 3, 2, seed=1)
    k, l_ = x @ x.T, y @ y.T
    assert naive_unbiased_hsic(k, l_) == pytest.approx(u_statistic_hsic(k, l_), rel=1e-9)


def test_debiased_stats_equal_naive_unbiased_hsic() -> None:
    x, y = related(15, 4, 5, seed=3)
    spans_x, spans_y = [(0, 4)], [(0, 5)]
    got = hsic_from_stats(pair_stats(x, y, spans_x, spans_y), spans_x, spans_y, debiased=True)
    assert got[0, 0] == pytest.approx(naive_unbiased_hsic(x @ x.T, y @ y.T), rel=1e-8)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances_and_identity(debiased: bool) -> None:
    x, y = related(30, 5, 7, seed=7)
    base = linear_cka(x, y, debiased=debiased)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))
    assert linear_cka(x @ q, y, debiased=debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(3.7 * x, 0.01 * y, debiased=debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x + 100.0, y - 3.0, debiased=debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


def test_chunked_accumulation_equals_one_shot() -> None:
    # three variables side by side in X, two in Y; sums over uneven chunks, any shift
    rng = np.random.default_rng(4)
    parts_x = [rng.normal(size=(37, d)) + 4.0 for d in (2, 5, 3)]
    parts_y = [parts_x[1][:, :2] @ rng.normal(size=(2, d)) + rng.normal(size=(37, d))
               for d in (4, 1)]
    x, y = np.concatenate(parts_x, axis=1), np.concatenate(parts_y, axis=1)
    spans_x, spans_y = [(0, 2), (2, 7), (7, 10)], [(0, 4), (4, 5)]
    shift_x, shift_y = x[:5].mean(axis=0), y[:5].mean(axis=0)
    for debiased in (False, True):
        total = None
        for a, b in [(0, 10), (10, 11), (11, 30), (30, 37)]:
            part = pair_stats(x[a:b] - shift_x, y[a:b] - shift_y, spans_x, spans_y)
            total = part if total is None else merge_pair_stats(total, part)
        assert total is not None
        xx = pair_stats(x - shift_x, x - shift_x, spans_x, spans_x)
        yy = pair_stats(y - shift_y, y - shift_y, spans_y, spans_y)
        hxy = hsic_from_stats(total, spans_x, spans_y, debiased=debiased)
        hxx = np.diag(hsic_from_stats(xx, spans_x, spans_x, debiased=debiased))
        hyy = np.diag(hsic_from_stats(yy, spans_y, spans_y, debiased=debiased))
        got = similarity.cka_from_hsic(hxy, hxx, hyy)
        for i, j in itertools.product(range(3), range(2)):
            want = linear_cka(parts_x[i], parts_y[j], debiased=debiased)
            assert got[i, j] == pytest.approx(want, abs=1e-9)


def test_constant_variable_gives_nan() -> None:
    x, _ = related(10, 3, 2, seed=0)
    constant = np.full((10, 4), 2.5)
    assert np.isnan(linear_cka(x, constant))
    assert np.isnan(linear_cka(constant, x, debiased=True))


def test_input_errors() -> None:
    x, y = related(10, 3, 2, seed=0)
    with pytest.raises(FeatstoreInputError, match="debiased CKA estimator needs at least 4"):
        linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(FeatstoreInputError, match="at least 2 usable images"):
        linear_cka(x[:1], y[:1])
    with pytest.raises(FeatstoreInputError, match="one row per image"):
        linear_cka(x, y[:5])


def test_permutation_summary() -> None:
    observed = np.array([0.5, 0.1, np.nan])
    null = np.array([[0.2, 0.3, 0.1], [0.6, 0.1, 0.2], [0.1, 0.0, 0.3], [0.4, 0.2, 0.1]])
    p, q = permutation_summary(observed, null)
    assert p[0] == pytest.approx((1 + 1) / 5) and p[1] == pytest.approx((1 + 3) / 5)
    assert q[0] == pytest.approx(np.quantile(null[:, 0], 0.95))
    assert np.isnan(p[2]) and np.isnan(q[2])


# ------------------------------------------------------------------------------ stores


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    # one invalid image and one NaN row: both are left out of every pair
    return make_store(tmp_path_factory.mktemp("sim") / "s.zarr", per_class=(9, 8, 7),
                      chunk_images=8, invalid=(3,), nan_rows={("random:0", "head"): [10]})


def stored(store: str) -> tuple[dict[tuple[str, str], np.ndarray], np.ndarray]:
    """Stored features per (init, layer) and the rows valid and finite in all of them."""
    features = {(i, la): stored_features(store, i, la) for i in INITS for la in LAYERS}
    ok = np.isfinite(np.concatenate(list(features.values()), axis=1)).all(axis=1)
    return features, ok


@pytest.mark.parametrize("group_units", [2048, 10])
def test_store_cka_and_null_equal_naive(store: str, group_units: int,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # group_units 10 splits the variables into several groups (cross-group chains) and
    # TASK_ROWS 8 makes every chunk its own task (sums added to in place along the chains)
    monkeypatch.setattr(similarity, "GROUP_UNITS", group_units)
    if group_units == 10:
        monkeypatch.setattr(chunked, "TASK_ROWS", 8)
    perms = 15
    result = featstore.cka(store, permutations=perms, seed=4, debiased=group_units == 10)
    debiased = group_units == 10
    features, ok = stored(store)
    assert result.attrs["featstore_similarity"]["n_images_used"] == ok.sum() == 22
    assert result.attrs["featstore_similarity"]["excluded"] == {"invalid": 1, "non_finite": 1}
    order = [(i, la) for i in INITS for la in LAYERS]  # the documented variable order
    rng = np.random.default_rng(4)
    shuffles = [rng.permutation(int(ok.sum())) for _ in range(perms)]
    for a, b in itertools.combinations_with_replacement(range(len(order)), 2):
        (ia, la), (ib, lb) = order[a], order[b]
        x, y = features[ia, la][ok], features[ib, lb][ok]
        pick = {"layer_a": la, "init_a": ia, "layer_b": lb, "init_b": ib}
        mirror = {"layer_a": lb, "init_a": ib, "layer_b": la, "init_b": ia}
        want = naive_cka(x, y, debiased)
        assert float(result["cka"].sel(pick)) == pytest.approx(want, abs=1e-6)
        assert float(result["cka"].sel(mirror)) == pytest.approx(want, abs=1e-6)
        null = np.array([naive_cka(x, y[s], debiased) for s in shuffles])
        p_value = (1 + np.sum(null >= want - 1e-12)) / (1 + perms)
        assert float(result["p_value"].sel(pick)) == pytest.approx(p_value)
        assert float(result["null_q95"].sel(pick)) == pytest.approx(np.quantile(null, 0.95),
                                                                    abs=1e-6)


def test_store_selection_and_errors(store: str) -> None:
    result = featstore.cka(store, layers=["head", "stem"], inits="pretrained")
    assert list(result["layer_a"].values) == ["stem", "head"]
    assert list(result["init_b"].values) == ["pretrained"]
    assert "p_value" not in result
    with pytest.raises(FeatstoreInputError, match="unknown --layers value 'fc'; layers in"):
        featstore.cka(store, layers=["fc"])
    with pytest.raises(FeatstoreInputError, match="unknown --inits value 'random:9'"):
        featstore.cka(store, inits=["random:9"])
    with pytest.raises(FeatstoreInputError, match=r"invalid --permutations -1; must be"):
        featstore.cka(store, permutations=-1)


def test_store_constant_layer_and_too_few_images(tmp_path: Path) -> None:
    def features(init: str, layer: str, labels: np.ndarray, units: int) -> np.ndarray:
        rng = np.random.default_rng(len(layer))
        if layer == "stem":
            return np.full((labels.size, units), 0.75)
        return rng.normal(size=(labels.size, units))

    path = make_store(tmp_path / "c.zarr", per_class=(4, 4), features=features,
                      inits=("pretrained",))
    with pytest.warns(RuntimeWarning, match="'stem' of init 'pretrained': it is constant"):
        result = featstore.cka(path)
    values = result["cka"].sel(init_a="pretrained", init_b="pretrained")
    assert np.isnan(values.sel(layer_a="stem")).all() and np.isnan(values.sel(layer_b="stem")).all()
    assert float(values.sel(layer_a="head", layer_b="head")) == pytest.approx(1.0)
    assert "constant" in result.attrs["featstore_similarity"]["notes"][0]
    tiny = make_store(tmp_path / "t.zarr", per_class=(2, 1), inits=("pretrained",))
    with pytest.raises(FeatstoreInputError, match="at least 4 images; 3 usable"):
        featstore.cka(tiny, debiased=True)


def test_local_cluster_equals_threads(store: str) -> None:
    pytest.importorskip("distributed")
    threads = featstore.cka(store, layers=["stem", "head"], permutations=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # distributed may warn about ports or event loops
        local = featstore.cka(store, layers=["stem", "head"], permutations=3,
                              scheduler="local:2")
    for name in ("cka", "p_value", "null_q95"):
        np.testing.assert_allclose(local[name].values, threads[name].values, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ command line


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_writes_csv_and_figures(store: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    code, stdout, err = run(["similarity", store, "--out", str(out), "--permutations", "4"],
                            capsys)
    assert code == 0, err
    assert "CKA of each pretrained layer" in stdout and "random:0" in stdout
    with (out / "cka.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == (*CKA_COLUMNS, "p_value", "null_q95")
        rows = list(reader)
    assert len(rows) == (len(LAYERS) * len(INITS)) ** 2
    features, ok = stored(store)
    for row in rows:
        want = naive_cka(features[row["init_a"], row["layer_a"]][ok],
                         features[row["init_b"], row["layer_b"]][ok])
        assert float(row["cka"]) == pytest.approx(want, abs=1e-6)
    for name in ("cka_heatmap.png", "cka_curve.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_plain_columns_and_errors(store: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plain"
    code, _, err = run(["similarity", store, "--out", str(out), "--inits", "pretrained"], capsys)
    assert code == 0, err
    assert "no pretrained-vs-random curve" in err
    with (out / "cka.csv").open() as handle:
        assert next(csv.reader(handle)) == list(CKA_COLUMNS)
    assert (out / "cka_heatmap.png").exists() and not (out / "cka_curve.png").exists()
    code, _, err = run(["similarity", store, "--layers", "nope"], capsys)
    assert code == 2 and err.startswith("featstore: error: unknown --layers value 'nope'")
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(["similarity", store, "--scheduler", "cluster"], capsys)
    assert code == 2 and "invalid --scheduler" in err
