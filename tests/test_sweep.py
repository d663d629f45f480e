"""featstore.sweep: the probe sweep on real (synthetic-feature) stores, the results contract,
reuse, bad input, and distributed == local."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import featstore
from _probe_data import make_store, stored_features
from featstore import schema as S
from featstore.config import ProbeConfig
from featstore.errors import (
    FeatstoreInputError,
    NotAStoreError,
    ProbeInputError,
    SchedulerError,
    StoreIncompleteError,
    UnknownLayerError,
)
from featstore.results import list_runs, open_results, results_table, write_results_csv
from featstore.scheduler import parse_scheduler
from featstore.store import open_store
from featstore.sweep import run_probe

SPECS = ["logreg:C=0.1", "ridge:alpha=10", "knn:k=3", "nearest-centroid"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three classes x 30 images, 3 layers, pretrained + random:0; one invalid, one NaN row."""
    path = tmp_path_factory.mktemp("sweep") / "store.zarr"
    return make_store(path, per_class=(30, 30, 30), invalid=(5,),
                      nan_rows={("random:0", "head"): [11]})


@pytest.fixture(scope="module")
def results(store: str) -> xr.Dataset:
    return featstore.probe(store, classifiers=SPECS, folds=4, seed=3)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def start(self, name: str, total: int | None, completed: int = 0) -> None:
        self.events.append(("start", total))

    def advance(self, count: int) -> None:
        self.events.append(("advance", count))

    def finish(self, name: str) -> None:
        self.events.append(("finish", name))


def _reference(kind: str) -> object:
    return {
        "logreg:C=0.1": LogisticRegression(C=0.1, tol=1e-10, max_iter=20000),
        "ridge:alpha=10": RidgeClassifier(alpha=10.0),
        "knn:k=3": KNeighborsClassifier(3),
        "nearest-centroid": NearestCentroid(),
    }[kind]


def test_results_contract(results: xr.Dataset, store: str) -> None:
    assert results["score"].dims == ("classifier", "layer", "init", "fold", "metric")
    assert results["score"].dtype == np.float64
    assert results["prediction"].dims == ("classifier", "layer", "init", "image")
    assert results["prediction"].dtype == np.int16
    assert list(results["classifier"].values) == ["logreg:C=0.1", "ridge:alpha=10", "knn:k=3",
                                                  "nearest-centroid"]
    assert list(results["layer"].values) == ["stem", "blocks.0", "head"]
    assert list(results["layer_module"].values) == ["stem", "blocks.0", "head"]
    assert results["layer_units"].values.tolist() == [6, 8, 12]
    assert list(results["init"].values) == ["pretrained", "random:0"]
    assert list(results["init_kind"].values) == ["pretrained", "random"]
    assert results["fold"].values.tolist() == [0, 1, 2, 3]
    assert list(results["metric"].values) == ["accuracy", "balanced_accuracy", "macro_f1"]
    assert results["label"].dtype == np.int64
    assert results["test_fold"].dtype == np.int16
    np.testing.assert_allclose(results["chance"].values, [30 / 88, 1 / 3, 2 * (30 / 88) /
                                                          ((1 + 30 / 88) * 3)])
    info = results.attrs["featstore_probe"]
    json.dumps(info)
    assert ProbeConfig.from_dict(info["config"]).classifiers == tuple(SPECS)
    assert info["classes"] == ["class0", "class1", "class2"]
    assert info["excluded"] == {"invalid": 1, "unlabelled": 0, "non_finite": 1}
    assert set(info) >= {"config", "run", "created", "versions", "classes"}
    # the invalid image and the image with NaN features are in no fold, predicted -1
    for image in (5, 11):
        assert results["test_fold"].values[image] == -1
        assert (results["prediction"].values[..., image] == -1).all()
    assert (results["prediction"].values[..., results["test_fold"].values >= 0] >= 0).all()
    assert not np.isnan(results["score"].values).any()
    for name in ("chosen_param", "converged", "inner_unconverged"):
        assert results[name].dims == ("classifier", "layer", "init", "fold")
    assert np.isnan(results["chosen_param"].values).all()  # no =auto classifier here
    assert results["converged"].dtype == bool and results["converged"].values.all()
    assert (results["inner_unconverged"].values == 0).all()
    assert info["unconverged"] == {}


def test_scores_equal_sklearn_cross_validation(results: xr.Dataset, store: str) -> None:
    ds = open_store(store)
    labels = ds[S.LABEL].values
    used = np.ones(labels.size, dtype=bool)
    used[[5, 11]] = False
    rows = np.flatnonzero(used)
    folds = list(StratifiedKFold(4, shuffle=True, random_state=3).split(rows, labels[rows]))
    for f, (_, te) in enumerate(folds):
        assert (results["test_fold"].values[rows[te]] == f).all()
    for init in ("pretrained", "random:0"):
        for layer in ("stem", "head"):
            X = stored_features(store, init, layer)
            for spec in SPECS:
                for f, (tr, te) in enumerate(folds):
                    model = make_pipeline(StandardScaler(), _reference(spec))
                    pred = model.fit(X[rows[tr]], labels[rows[tr]]).predict(X[rows[te]])
                    truth = labels[rows[te]]
                    expected = [accuracy_score(truth, pred), balanced_accuracy_score(truth, pred),
                                f1_score(truth, pred, average="macro")]
                    got = results["score"].sel(classifier=spec, layer=layer, init=init, fold=f)
                    np.testing.assert_allclose(got.values, expected, atol=1e-12,
                                               err_msg=f"{spec} {layer} {init} fold {f}")


def test_auto_classifier_records_the_chosen_value_per_fold(store: str) -> None:
    """The sweep's nested CV (inner folds seeded with --seed) equals the block's on the plan
    it builds, and its choices land in chosen_param."""
    from featstore.probing import FoldPlan, parse_classifiers, probe_block

    results = featstore.probe(store, classifiers=["logreg:C=auto", "ridge:alpha=auto"],
                              folds=3, seed=4, layers=["head"], inits=["random:0"],
                              auto_grid=(0.01, 1.0, 100.0), inner_folds=2)
    info = results.attrs["featstore_probe"]
    assert info["config"]["auto_grid"] == [0.01, 1.0, 100.0] and info["config"]["inner_folds"] == 2
    X = stored_features(store, "random:0", "head")
    plan = FoldPlan.from_test_fold(results["test_fold"].values.astype(np.int64),
                                   results["label"].values, 3).with_inner(2, 4)
    block = probe_block(X, plan, parse_classifiers(["logreg:C=auto", "ridge:alpha=auto"]),
                        grid=(0.01, 1.0, 100.0))
    chosen = results["chosen_param"].sel(layer="head", init="random:0")
    np.testing.assert_array_equal(chosen.values, block.chosen)
    assert set(np.unique(block.chosen)) <= {0.01, 1.0, 100.0}
    np.testing.assert_array_equal(
        results["prediction"].sel(layer="head", init="random:0").values, block.predictions)


def test_stats_path_equals_block_path(results: xr.Dataset, store: str) -> None:
    chunked = featstore.probe(store, classifiers=["ridge:alpha=10", "nearest-centroid"],
                              folds=4, seed=3)
    for spec in ("ridge:alpha=10", "nearest-centroid"):
        np.testing.assert_array_equal(chunked["prediction"].sel(classifier=spec).values,
                                      results["prediction"].sel(classifier=spec).values)
        np.testing.assert_allclose(chunked["score"].sel(classifier=spec).values,
                                   results["score"].sel(classifier=spec).values, atol=1e-12)


def test_stats_path_reads_chunk_by_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ridge / nearest centroid alone never load a whole (init, layer) block.

    Every task reads its own chunk from the store: once for the shift, once per chunk for the
    sums, once per chunk for the predictions. (Tasks sharing loaded chunks across the two
    passes would keep the whole block in memory until the models exist.)
    """
    import featstore.sweep as sweep

    path = make_store(tmp_path / "chunks.zarr", per_class=(30, 30), chunk_images=16)
    rows_seen: list[int] = []
    original = sweep._read_rows

    def spy(source: object, position: int, rows: tuple[int, int]) -> np.ndarray:
        chunk = original(source, position, rows)  # type: ignore[arg-type]
        rows_seen.append(chunk.shape[0])
        return chunk

    def no_block(*args: object) -> None:
        raise AssertionError("whole block loaded")

    monkeypatch.setattr(sweep, "_read_rows", spy)
    monkeypatch.setattr(sweep, "_block_task", no_block)
    out = featstore.probe(path, classifiers=["ridge", "nearest-centroid"], folds=3)
    assert max(rows_seen) == 16
    assert len(rows_seen) == (1 + 4 + 4) * 3 * 2  # (shift + 2 passes of 4 chunks) x layers x inits
    monkeypatch.undo()
    block = featstore.probe(path, classifiers=["ridge", "nearest-centroid", "knn"], folds=3)
    np.testing.assert_array_equal(
        out["prediction"].values,
        block["prediction"].sel(classifier=["ridge:alpha=1", "nearest-centroid"]).values)


def test_store_root_still_opens_after_results(results: xr.Dataset, store: str) -> None:
    ds = xr.open_zarr(store)
    assert set(ds.data_vars) == {"stem", "blocks.0", "head"}
    assert ds.attrs["featstore"]["layers"] == ["stem", "blocks.0", "head"]
    assert "probes" in zarr.open_group(store, mode="r", use_consolidated=False)
    assert results.attrs["featstore_probe"]["run"] in list_runs(store)


def test_rerun_reuses_and_force_recomputes(store: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_store(tmp_path / "reuse.zarr", per_class=(12, 12))
    first = featstore.probe(path, classifiers=["nearest-centroid"], folds=3)
    created = first.attrs["featstore_probe"]["created"]

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed")

    monkeypatch.setattr("featstore.sweep._finite_rows", boom)
    again = featstore.probe(path, classifiers=["nearest-centroid"], folds=3)
    assert again.attrs["featstore_probe"]["created"] == created
    xr.testing.assert_identical(again, first)
    monkeypatch.undo()
    forced = featstore.probe(path, classifiers=["nearest-centroid"], folds=3, force=True)
    assert forced.attrs["featstore_probe"]["created"] != created
    assert forced.attrs["featstore_probe"]["run"] == first.attrs["featstore_probe"]["run"]
    np.testing.assert_array_equal(forced["score"].values, first["score"].values)
    other = featstore.probe(path, classifiers=["nearest-centroid"], folds=3, seed=1)
    assert other.attrs["featstore_probe"]["run"] != first.attrs["featstore_probe"]["run"]
    assert open_results(path).attrs["featstore_probe"]["run"] == \
        other.attrs["featstore_probe"]["run"]
    assert len(list_runs(path)) == 2


def test_progress_counts_blocks(tmp_path: Path) -> None:
    path = make_store(tmp_path / "progress.zarr", per_class=(10, 10))
    recorder = Recorder()
    featstore.probe(path, classifiers=["ridge", "logreg"], folds=2, progress=recorder)
    assert recorder.events[0] == ("start", 6)
    assert sum(v for e, v in recorder.events if e == "advance") == 6  # type: ignore[misc]
    assert recorder.events[-1] == ("finish", "probe")


def test_layers_and_inits_subsets_keep_store_order(store: str) -> None:
    out = featstore.probe(store, classifiers=["nearest-centroid"], folds=4, seed=3,
                          layers=["head", "stem"], inits=["random:0"])
    assert list(out["layer"].values) == ["stem", "head"]
    assert list(out["init"].values) == ["random:0"]
    full = featstore.probe(store, classifiers=["nearest-centroid"], folds=4, seed=3)
    np.testing.assert_array_equal(
        out["score"].values, full["score"].sel(layer=["stem", "head"], init=["random:0"]).values)
    one = featstore.probe(store, classifiers=["nearest-centroid"], folds=4, seed=3,
                          layers=["blocks.0"])
    assert list(one["layer_module"].values) == ["blocks.0"]


def test_split_mode(tmp_path: Path) -> None:
    splits = tuple(np.array(["train", "val", "test"])[np.arange(60) % 3])
    path = make_store(tmp_path / "split.zarr", per_class=(20, 20, 20), splits=splits)
    out = featstore.probe(path, classifiers=["ridge"], split=True)
    assert out.sizes["fold"] == 1
    split = np.asarray(splits)
    np.testing.assert_array_equal(out["test_fold"].values, np.where(split == "test", 0, -1))
    labels = out["label"].values
    X = stored_features(path, "pretrained", "head")
    tr, te = split != "test", split == "test"
    pred = make_pipeline(StandardScaler(), RidgeClassifier()).fit(X[tr], labels[tr]).predict(X[te])
    np.testing.assert_array_equal(
        out["prediction"].sel(classifier="ridge:alpha=1", layer="head", init="pretrained")
        .values[te], pred)
    assert out.attrs["featstore_probe"]["config"]["folds"] == 1


def test_results_rows_and_csv(results: xr.Dataset, tmp_path: Path) -> None:
    rows = results_table(results).to_dict("records")
    assert len(rows) == 3 * 2 * 4 * 3
    write_results_csv(results, tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "layer,init,classifier,metric,mean,std,n_folds,chance"
    assert lines[1].split(",")[:4] == [rows[0][k] for k in ("layer", "init", "classifier",
                                                             "metric")]
    first = rows[0]
    values = results["score"].sel(layer=first["layer"], init=first["init"],
                                  classifier=first["classifier"], metric=first["metric"]).values
    assert first["mean"] == pytest.approx(values.mean())
    assert first["std"] == pytest.approx(values.std())
    assert first["n_folds"] == 4


# --------------------------------------------------------------------------------- bad input


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(NotAStoreError, match="is not a featstore store"):
        featstore.probe(tmp_path / "nothing")


def test_incomplete_store(tmp_path: Path) -> None:
    path = make_store(tmp_path / "partial.zarr", per_class=(10, 10), complete=False)
    with pytest.raises(StoreIncompleteError,
                       match=r"still being extracted: init 'random:0' has 0 of 1 chunks"):
        featstore.probe(path)
    out = featstore.probe(path, classifiers=["ridge"], inits=["pretrained"], folds=2)
    assert list(out["init"].values) == ["pretrained"]


def test_one_class_only(tmp_path: Path) -> None:
    path = make_store(tmp_path / "one.zarr", per_class=(12,))
    with pytest.raises(ProbeInputError, match=r"has 1 class among its usable images \(class0\)"):
        featstore.probe(path)


def test_store_without_labels(tmp_path: Path) -> None:
    path = make_store(tmp_path / "unlabelled.zarr", per_class=(6, 6))
    labels = zarr.open_group(path, mode="r+", use_consolidated=False)[S.LABEL]
    assert isinstance(labels, zarr.Array)
    labels[:] = -1
    with pytest.raises(ProbeInputError, match="has no labels"):
        featstore.probe(path)


def test_unknown_layer_init_classifier(store: str) -> None:
    with pytest.raises(UnknownLayerError,
                       match=r"unknown --layers value 'layer9'; layers in this store: stem, "
                             r"blocks.0, head"):
        featstore.probe(store, layers=["layer9"])
    with pytest.raises(ProbeInputError,
                       match=r"unknown --inits value 'random:7'; inits in this store: "
                             r"pretrained, random:0"):
        featstore.probe(store, inits=["random:7"])
    with pytest.raises(ProbeInputError, match=r"unknown --classifier 'svm'"):
        featstore.probe(store, classifiers=["svm"])


def test_too_many_folds_and_neighbours(tmp_path: Path) -> None:
    path = make_store(tmp_path / "small.zarr", per_class=(4, 9))
    with pytest.raises(ProbeInputError, match=r"--folds 5 is larger than the smallest class "
                                              r"\('class0': 4 usable images\); use --folds 4"):
        featstore.probe(path, folds=5)
    with pytest.raises(ProbeInputError, match=r"knn:k=20 exceeds the 9 training images"):
        featstore.probe(path, classifiers=["knn:k=20"], folds=4)
    with pytest.raises(FeatstoreInputError, match=r"invalid --folds 1; must be an integer >= 2"):
        featstore.probe(path, folds=1)


def test_split_without_split_coordinate(store: str) -> None:
    with pytest.raises(ProbeInputError, match="has no 'split' coordinate; drop --split"):
        featstore.probe(store, split=True)


def test_gain_required_without_random_init(store: str) -> None:
    config = ProbeConfig(store=store, inits=("pretrained",))
    with pytest.raises(ProbeInputError, match=r"knowledge gain needs at least one random init"):
        run_probe(config, require_gain=True)


def test_open_results_errors(tmp_path: Path, store: str) -> None:
    path = make_store(tmp_path / "empty.zarr", per_class=(5, 5))
    with pytest.raises(ProbeInputError, match="holds no probe results; run `featstore probe"):
        open_results(path)
    featstore.probe(store, classifiers=["nearest-centroid"], folds=4, seed=3)
    with pytest.raises(ProbeInputError, match="unknown probe run 'nope'"):
        open_results(store, run="nope")


@pytest.mark.parametrize("value, expected", [
    (None, ("threads", None)), ("threads:3", ("threads", 3)), ("sync", ("sync", None)),
    ("local:2", ("local", 2)), ("tcp://127.0.0.1:8786", ("distributed", "tcp://127.0.0.1:8786")),
])
def test_parse_scheduler(value: str | None, expected: tuple[str, object]) -> None:
    assert parse_scheduler(value) == expected


def test_parse_scheduler_rejects() -> None:
    with pytest.raises(SchedulerError, match=r"invalid --scheduler .cluster.; allowed: threads"):
        parse_scheduler("cluster")


# --------------------------------------------------------------------------------- distributed


def test_distributed_equals_local(results: xr.Dataset, store: str) -> None:
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        # distributed may warn about ports, event loops or unclosed resources while it runs
        warnings.simplefilter("ignore")
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                      protocol="tcp", host="127.0.0.1",
                                      dashboard_address=None) as cluster:
            remote = featstore.probe(store, classifiers=SPECS, folds=4, seed=3,
                                     scheduler=cluster.scheduler_address, force=True)
            chunked = featstore.probe(store, classifiers=["ridge:alpha=10"], folds=4, seed=3,
                                      scheduler=cluster.scheduler_address, force=True)
    np.testing.assert_array_equal(remote["score"].values, results["score"].values)
    np.testing.assert_array_equal(remote["prediction"].values, results["prediction"].values)
    np.testing.assert_array_equal(chunked["score"].values,
                                  results["score"].sel(classifier=["ridge:alpha=10"]).values)
    sync = featstore.probe(store, classifiers=SPECS, folds=4, seed=3, scheduler="sync",
                           force=True)
    np.testing.assert_array_equal(sync["score"].values, results["score"].values)


def test_public_api_names() -> None:
    import importlib

    importlib.import_module("featstore.probing")
    importlib.import_module("featstore.gain")
    assert callable(featstore.probe) and featstore.probe.__module__ == "featstore.sweep"
    assert featstore.open_results is open_results
    assert callable(featstore.knowledge_gain)
    assert {"probe", "knowledge_gain", "open_results"} <= set(featstore.__all__)


_names = st.lists(st.text("abc.:0123", min_size=1, max_size=6), min_size=1, max_size=3)


@given(classifiers=_names, folds=st.integers(2, 20), seed=st.integers(0, 2**31),
       split=st.booleans(), layers=st.none() | _names, inits=st.none() | _names,
       tol=st.floats(1e-12, 1.0), max_iter=st.integers(1, 10**6),
       auto_grid=st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=4),
       inner_folds=st.integers(2, 10),
       scheduler=st.none() | st.sampled_from(["threads:2", "local:3", "tcp://h:1"]),
       force=st.booleans())
@settings(max_examples=50, deadline=None)
def test_probe_config_round_trip(**fields: object) -> None:
    config = ProbeConfig(store="s.zarr", **{k: tuple(v) if isinstance(v, list) else v  # type: ignore[arg-type]
                                            for k, v in fields.items()})
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert ProbeConfig.from_dict(data) == config
    assert set(config.identity()) == set(ProbeConfig.IDENTITY_FIELDS)


def test_probe_config_rejects_unknown_fields() -> None:
    with pytest.raises(FeatstoreInputError, match="unknown ProbeConfig field"):
        ProbeConfig.from_dict({"store": "s", "colour": "red"})
