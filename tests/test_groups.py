"""Grouped splits: extra manifest columns as image coordinates, ``probe --group-by`` /
``--group-regex`` (StratifiedGroupKFold), the cluster bootstrap of the gain, and the probe's
leak check.

References are independent: scikit-learn's StratifiedGroupKFold and LogisticRegression on the
stored features, a naive loop-by-loop cluster bootstrap, and copy pairs this file creates.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from featstore.cli.app import main
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import featstore
from _gain_reference import naive_metrics, quantile
from _report_data import make_results
from featstore.config import ProbeConfig
from featstore.data import ManifestSource
from featstore.errors import DataSourceError, FeatstoreInputError, ProbeInputError
from featstore.gain import CLUSTER_CI_METHOD, knowledge_gain
from featstore.results import probe_info
from featstore.store import FeatureStore, LayerSpec, StoreLayout
from featstore.sweep import _fingerprint, run_probe
from helpers import make_image_folder

LAYERS = {"stem": 6, "mid": 8, "head": 10}


# ------------------------------------------------------------------ fixtures
def _cli(args: list[str]) -> int:
    """Run the command line in this process; its exit status."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def _grouped_store(path: Path, n_patients: int = 12, per_patient: int = 8, n_classes: int = 3,
                   seed: int = 0, coords: bool = True,
                   inits: tuple[str, ...] = ("pretrained", "random:0"),
                   classes_of: list[tuple[int, int]] | None = None) -> tuple[str, dict]:
    """A store whose images come from patients; each patient has a shared feature offset (so
    image-level folds would be optimistic) and images of two classes (random, or
    ``classes_of[p]``)."""
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for p in range(n_patients):
        classes = (rng.choice(n_classes, size=2, replace=False) if classes_of is None
                   else np.asarray(classes_of[p]))
        for k in range(per_patient):
            patients.append(f"P{p:02d}")
            labels.append(int(classes[k % 2]))
    order = rng.permutation(len(labels))
    patients = [patients[i] for i in order]
    labels = [labels[i] for i in order]
    y = np.asarray(labels)
    offsets = {f"P{p:02d}": rng.normal(size=max(LAYERS.values())) for p in range(n_patients)}
    layout = StoreLayout(
        model="synthetic",
        layers=tuple(LayerSpec(name, units, (units, 2, 2)) for name, units in LAYERS.items()),
        transform={"size": 8, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3},
        pool="avg", dtype="float32", chunk_images=32,
        classes=tuple(f"class{k}" for k in range(n_classes)),
        paths=tuple(f"{patients[i]}/img{i:04d}.png" for i in range(len(y))),
        labels=tuple(labels), splits=None,
        data={"kind": "synthetic", "fingerprint": f"grouped-{seed}-{len(y)}"},
        coords=(("patient", tuple(patients)), ("site", tuple("AB"[i % 2]
                                                              for i in range(len(y)))))
        if coords else (),
    )
    store = FeatureStore.create(str(path), layout, {}, [{"name": n} for n in inits])
    features = {}
    for i, init in enumerate(inits):
        for j, (layer, units) in enumerate(LAYERS.items()):
            centres = rng.normal(size=(n_classes, units))
            strength = (0.4 + 0.3 * j) if init == "pretrained" else 0.2
            block = (rng.normal(size=(y.size, units)) + strength * centres[y]
                     + 1.5 * np.stack([offsets[p][:units] for p in patients]))
            features[layer] = block.astype(np.float32)
        for chunk in range(store.n_chunks):
            start, stop = chunk * 32, min((chunk + 1) * 32, y.size)
            store.write_chunk(i, chunk, {k: v[start:stop] for k, v in features.items()})
    store.consolidate()
    return str(path), {"patients": np.asarray(patients, dtype=object), "labels": y}


def _paths(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


# ------------------------------------------------------------------ extra manifest columns
def test_extra_manifest_columns_become_image_coordinates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_image_folder(data, per_class=6)
    paths = _paths(data)
    patients = [f"P{i % 4}" for i in range(len(paths))]
    with (data / "m.csv").open("w") as handle:
        handle.write("path,label,patient,slide\n")
        for i, p in enumerate(paths):
            handle.write(f"{p},{p.split('/')[0]},{patients[i]},S{i}\n")
    store = str(tmp_path / "s.zarr")
    featstore.extract(str(data / "m.csv"), store, model="tiny_cnn", inits=["pretrained"],
                      device="cpu")
    ds = xr.open_zarr(store)
    assert {"patient", "slide"} <= set(ds.coords)
    assert ds["patient"].dims == ("image",)
    by_path = dict(zip(paths, patients, strict=True))
    assert [str(v) for v in ds["patient"].values] == [by_path[str(p)] for p in ds["path"].values]
    assert FeatureStore.open(store).meta["data"]["columns"] == ["patient", "slide"]

    # the manifest's column changes: a rerun rewrites the coordinate, not the features
    chunk = Path(store) / "stem" / "c" / "0" / "0" / "0"
    before = chunk.stat().st_mtime_ns
    with (data / "m.csv").open("w") as handle:
        handle.write("path,label,patient\n")
        for i, p in enumerate(paths):
            handle.write(f"{p},{p.split('/')[0]},Q{i % 3}\n")
    featstore.extract(str(data / "m.csv"), store, model="tiny_cnn", inits=["pretrained"],
                      device="cpu")
    ds = xr.open_zarr(store)
    assert "slide" not in ds.coords and "slide" not in ds
    assert [str(v) for v in ds["patient"].values] == [f"Q{paths.index(str(p)) % 3}"
                                                      for p in ds["path"].values]
    assert chunk.stat().st_mtime_ns == before


def test_a_manifest_without_extra_columns_gives_todays_description(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_image_folder(data, per_class=4)
    paths = _paths(data)
    with (data / "plain.csv").open("w") as handle:
        handle.write("path,label\n")
        handle.writelines(f"{p},{p.split('/')[0]}\n" for p in paths)
    store = str(tmp_path / "s.zarr")
    featstore.extract(str(data / "plain.csv"), store, model="tiny_cnn", inits=["pretrained"],
                      device="cpu")
    meta = FeatureStore.open(store).meta
    records = [(p, ["benign", "tumour"].index(p.split("/")[0]), None) for p in paths]
    digest = hashlib.sha256(json.dumps(["benign", "tumour"]).encode())
    for record in records:
        digest.update(json.dumps(list(record)).encode())
    assert meta["data"] == {"kind": "manifest", "root": str(data.resolve()),
                            "n_images": len(paths), "classes": ["benign", "tumour"],
                            "fingerprint": digest.hexdigest()}
    assert "columns" not in json.dumps(meta)
    attrs = json.loads((Path(store) / "stem" / "zarr.json").read_text())["attributes"]
    assert attrs["coordinates"] == "label path valid"
    assert sorted(p.name for p in Path(store).iterdir() if p.is_dir()) == [
        "_featstore", "block", "image", "init", "label", "path", "stem", "valid"]


@pytest.mark.parametrize("column", ["valid", "image", "group", "test_fold", "2nd", "unit_x"])
def test_reserved_or_bad_column_names_are_refused(tmp_path: Path, column: str) -> None:
    data = tmp_path / "data"
    make_image_folder(data, per_class=2)
    with (data / "m.csv").open("w") as handle:
        handle.write(f"path,label,{column}\n")
        handle.writelines(f"{p},{p.split('/')[0]},x\n" for p in _paths(data))
    with pytest.raises(DataSourceError, match=f"column '{column}' cannot become an image"):
        ManifestSource(data / "m.csv")


# ------------------------------------------------------------------ grouped folds
def test_grouped_folds_are_sklearns_and_keep_patients_apart(tmp_path: Path) -> None:
    store, truth = _grouped_store(tmp_path / "s.zarr")
    results = featstore.probe(store, classifiers=["logreg"], folds=4, seed=3,
                              group_by="patient")
    info = probe_info(results)
    assert info["grouping"]["by"] == "patient" and info["grouping"]["n_groups"] == 12
    assert [str(v) for v in results["group"].values] == truth["patients"].tolist()
    test_fold = np.asarray(results["test_fold"].values)
    for patient in set(truth["patients"]):
        assert len(set(test_fold[truth["patients"] == patient].tolist())) == 1
    expected = np.full(test_fold.shape, -1)
    splitter = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=3)
    n = truth["labels"].size
    for f, (_, test) in enumerate(splitter.split(np.zeros(n), truth["labels"],
                                                 truth["patients"])):
        expected[test] = f
    np.testing.assert_array_equal(test_fold, expected)

    # per-layer accuracy equals scikit-learn's grouped cross-validation on the stored features
    ds = featstore.open_store(store)
    ours = results["score"].sel(classifier=str(results["classifier"].values[0]),
                                init="pretrained", metric="accuracy").mean("fold")
    diffs = []
    for layer in LAYERS:
        x = np.asarray(ds[layer].sel(init="pretrained").values, dtype=np.float64)
        scores = []
        for train, test in StratifiedGroupKFold(4, shuffle=True, random_state=3).split(
                x, truth["labels"], truth["patients"]):
            model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
            model.fit(x[train], truth["labels"][train])
            scores.append(model.score(x[test], truth["labels"][test]))
        diffs.append(abs(float(ours.sel(layer=layer)) - float(np.mean(scores))))
    assert max(diffs) <= 0.05 and float(np.mean(diffs)) <= 0.02


def test_group_regex_groups_by_the_paths_first_capture(tmp_path: Path) -> None:
    store, truth = _grouped_store(tmp_path / "s.zarr")
    by_regex = featstore.probe(store, classifiers=["nearest-centroid"], folds=3,
                               group_regex=r"^(P\d+)/")
    by_column = featstore.probe(store, classifiers=["nearest-centroid"], folds=3,
                                group_by="patient")
    assert probe_info(by_regex)["grouping"]["regex"] == r"^(P\d+)/"
    np.testing.assert_array_equal(by_regex["test_fold"].values, by_column["test_fold"].values)
    np.testing.assert_array_equal(by_regex["score"].values, by_column["score"].values)
    assert probe_info(by_regex)["run"] != probe_info(by_column)["run"]


def test_too_few_groups_exit_2_naming_the_counts(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = _grouped_store(tmp_path / "s.zarr", n_patients=4)
    with pytest.raises(ProbeInputError, match=r"--folds 5 needs at least 5 groups, but the 32 "
                                              r"usable images hold 4 'patient' values"):
        featstore.probe(store, folds=5, group_by="patient")
    assert _cli(["probe", store, "--folds", "6", "--group-by", "site", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs at least 6 groups" in err[0] and "2 'site' values" in err[0]


def test_a_class_held_by_one_patient_is_named_with_it(tmp_path: Path) -> None:
    store, _ = _grouped_store(tmp_path / "s.zarr", n_patients=6,
                              classes_of=[(2, 2), (0, 1), (0, 1), (1, 0), (0, 1), (1, 0)])
    with pytest.raises(ProbeInputError, match=r"class 'class2' has no image among the training "
                                              r"images of fold \d: all its images are in the "
                                              r"group\(s\) that fold \d tests \(P00\)"):
        featstore.probe(store, classifiers=["nearest-centroid"], folds=3, group_by="patient")


def test_unknown_group_column_and_conflicting_options(tmp_path: Path) -> None:
    store, _ = _grouped_store(tmp_path / "s.zarr")
    with pytest.raises(ProbeInputError, match=r"--group-by 'donor' is not an image coordinate.*"
                                              r"patient"):
        featstore.probe(store, group_by="donor")
    with pytest.raises(ProbeInputError, match="choose one way"):
        featstore.probe(store, group_by="patient", group_regex=r"(P\d+)")
    with pytest.raises(FeatstoreInputError, match="does not match image"):
        featstore.probe(store, group_regex=r"^(Z\d+)/")


def test_without_groups_everything_is_as_before(tmp_path: Path) -> None:
    """Ungrouped: today's run id formula, StratifiedKFold folds, no group coordinate, and the
    same numbers whether or not the store has extra coordinates."""
    plain, truth = _grouped_store(tmp_path / "plain.zarr", coords=False)
    with_coords, _ = _grouped_store(tmp_path / "coords.zarr", coords=True)
    a = featstore.probe(plain, classifiers=["logreg"], folds=4, seed=1)
    b = featstore.probe(with_coords, classifiers=["logreg"], folds=4, seed=1)
    for name in ("score", "prediction"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert "group" not in a.coords and "grouping" not in probe_info(a)
    expected = np.full(truth["labels"].shape, -1)
    for f, (_, test) in enumerate(StratifiedKFold(4, shuffle=True, random_state=1).split(
            np.zeros(truth["labels"].size), truth["labels"])):
        expected[test] = f
    np.testing.assert_array_equal(a["test_fold"].values, expected)
    # the run id of an ungrouped run is computed exactly as before grouping existed
    config = ProbeConfig(store=plain, classifiers=("logreg:C=1",), folds=4, seed=1,
                         layers=tuple(LAYERS), inits=("pretrained", "random:0"))
    old_identity = {k: v for k, v in config.to_dict().items() if k in (
        "classifiers", "folds", "seed", "split", "layers", "inits", "tol", "max_iter",
        "auto_grid", "inner_folds")}
    from featstore.sweep import _PROBE_FORMAT

    payload = json.dumps({"probe": old_identity, "store": _fingerprint(
        FeatureStore.open(plain), ["pretrained", "random:0"]), "format": _PROBE_FORMAT},
        sort_keys=True, default=str)
    assert probe_info(a)["run"] == hashlib.sha256(payload.encode()).hexdigest()[:16]
    gain = knowledge_gain(a, n_boot=20)
    assert "bootstrap_groups_per_fold" not in gain.attrs
    assert gain.attrs["ci_method"].startswith("paired percentile bootstrap over test images")


# ------------------------------------------------------------------ cluster bootstrap
def _cluster_reference(results: xr.Dataset, n_boot: int, seed: int,
                       group: str = "random") -> dict[str, np.ndarray]:
    """Gain, interval and p_best of one baseline group, one replicate at a time: per fold the
    test images' groups (sorted) are drawn with replacement and expanded into images."""
    kinds = [str(v) for v in results["init_kind"].values]
    pre = kinds.index("pretrained")
    order = ("random", "random+bn", "shuffled", "shuffled+bn")
    members = {g: [i for i, k in enumerate(kinds) if k == g] for g in order if g in kinds}
    labels = [int(v) for v in results["label"].values]
    folds_of = [int(v) for v in results["test_fold"].values]
    groups = [str(v) for v in results["group"].values]
    prediction = results["prediction"].transpose("classifier", "layer", "init", "image").values
    score = results["score"].transpose("classifier", "layer", "init", "fold", "metric").values
    n_c, n_l = prediction.shape[:2]
    n_f = results.sizes["fold"]
    rng = np.random.default_rng(seed)
    draws: dict[int, list[tuple[list[str], np.ndarray]]] = {}
    for f in range(n_f):
        names = sorted({groups[i] for i in range(len(labels)) if folds_of[i] == f})
        draws[f] = [(names, rng.multinomial(len(names), [1.0 / len(names)] * len(names)))
                    for _ in range(n_boot)]
    seed_draws = {g: [rng.integers(0, len(m), size=len(m)) for _ in range(n_boot)]
                  for g, m in members.items() if len(m) > 1}
    reps = np.zeros((n_boot, n_c, n_l, 3))
    for b in range(n_boot):
        chosen = ([members[group][k] for k in seed_draws[group][b]] if group in seed_draws
                  else members[group])
        for c in range(n_c):
            for j in range(n_l):
                metric = {}
                for i in {pre, *chosen}:
                    total = [0.0, 0.0, 0.0]
                    for f in range(n_f):
                        names, counts = draws[f][b]
                        truth: list[int] = []
                        pred: list[int] = []
                        for name, count in zip(names, counts, strict=True):
                            for row in range(len(labels)):
                                if folds_of[row] == f and groups[row] == name:
                                    truth += [labels[row]] * int(count)
                                    pred += [int(prediction[c, j, i, row])] * int(count)
                        for m, value in enumerate(naive_metrics(truth, pred)):
                            total[m] += value / n_f
                    metric[i] = total
                for m in range(3):
                    base = sum(metric[i][m] for i in chosen) / len(chosen)
                    reps[b, c, j, m] = metric[pre][m] - base
    gain = score[:, :, pre].mean(axis=2) - score[:, :, members[group]].mean(axis=(2, 3))
    low = np.zeros_like(gain)
    high = np.zeros_like(gain)
    p_best = np.zeros_like(gain)
    for c in range(n_c):
        for m in range(3):
            for j in range(n_l):
                values = [float(v) for v in reps[:, c, j, m]]
                low[c, j, m] = min(quantile(values, 0.025), gain[c, j, m])
                high[c, j, m] = max(quantile(values, 0.975), gain[c, j, m])
            for b in range(n_boot):
                top = max(reps[b, c, :, m])
                winners = [j for j in range(n_l) if top - reps[b, c, j, m] <= 1e-12]
                for j in winners:
                    p_best[c, j, m] += 1.0 / len(winners) / n_boot
    return {"gain": gain, "ci_low": low, "ci_high": high, "p_best": p_best}


def test_cluster_bootstrap_equals_a_naive_loop() -> None:
    inits = ("pretrained", "random:0", "random:1", "shuffled:0")
    results = make_results(layers=("a", "b", "c"), inits=inits, classifiers=("x",),
                           n_images=36, n_classes=3, seed=5, folds=3)
    rng = np.random.default_rng(1)
    groups = np.array([f"G{int(g)}" for g in rng.integers(0, 12, size=36)], dtype=object)
    results = results.assign_coords(group=("image", groups))
    gain = knowledge_gain(results, n_boot=25, seed=4)
    assert gain.attrs["ci_method"] == CLUSTER_CI_METHOD
    ref = _cluster_reference(results, 25, 4)
    sel = gain.sel(baseline="random").transpose("classifier", "layer", "metric")
    for name, expected in ref.items():
        np.testing.assert_allclose(sel[name].values, expected, rtol=0, atol=1e-12,
                                   err_msg=name)
    per_fold = [len(set(groups[np.asarray(results["test_fold"].values) == f])) for f in range(3)]
    assert gain.attrs["bootstrap_groups_per_fold"] == per_fold


def test_cluster_interval_is_wider_when_groups_are_alike() -> None:
    """Images of one group predicted alike: resampling groups sees that fewer independent
    units exist than images, so the cluster interval is wider than the image one."""
    inits = ("pretrained", "random:0")
    results = make_results(layers=("a",), inits=inits, classifiers=("x",), n_images=120,
                           n_classes=2, seed=2, folds=2)
    groups = np.array([f"G{i // 10}" for i in range(120)], dtype=object)
    truth = np.asarray(results["label"].values)
    good = np.array([(i // 10) % 3 != 0 for i in range(120)])  # whole groups right or wrong
    pred = np.where(good, truth, 1 - truth).astype(np.int16)
    prediction = results["prediction"].copy()
    prediction.loc[{"init": "pretrained"}] = pred
    prediction.loc[{"init": "random:0"}] = truth.astype(np.int16)
    folds = np.asarray(results["test_fold"].values)
    score = results["score"].copy()
    for f in range(2):  # the point estimate from the same predictions
        score.loc[{"init": "pretrained", "fold": f}] = float((pred == truth)[folds == f].mean())
        score.loc[{"init": "random:0", "fold": f}] = 1.0
    results = results.assign(prediction=prediction, score=score)
    plain = knowledge_gain(results, n_boot=400, seed=0).sel(metric="accuracy")
    clustered = knowledge_gain(results.assign_coords(group=("image", groups)), n_boot=400,
                               seed=0).sel(metric="accuracy")
    width = (plain["ci_high"] - plain["ci_low"]).values.item()
    cluster_width = (clustered["ci_high"] - clustered["ci_low"]).values.item()
    assert math.isfinite(width) and cluster_width > 1.5 * width


# ------------------------------------------------------------------ the probe's leak check
def _folder_with_copies(root: Path, pairs: int = 6, singles: int = 6) -> dict[str, str]:
    """Two classes; in each, ``pairs`` images with a rotated/flipped copy (same patient id in
    the name) and ``singles`` unrelated images. Returns copy path -> original path."""
    rng = np.random.default_rng(0)
    copies = {}
    for label, name in enumerate(("a", "b")):
        folder = root / name
        folder.mkdir(parents=True)
        for k in range(pairs + singles):
            base = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
            pixels = np.kron(base, np.ones((4, 4, 1), dtype=np.uint8))
            Image.fromarray(pixels).save(folder / f"p{label}{k:02d}_0.png")
            if k < pairs:
                turned = np.rot90(pixels, k % 4) if k % 2 else np.fliplr(pixels)
                Image.fromarray(np.ascontiguousarray(turned)).save(
                    folder / f"p{label}{k:02d}_1.png")
                copies[f"{name}/p{label}{k:02d}_1.png"] = f"{name}/p{label}{k:02d}_0.png"
    return copies


def test_probe_counts_test_images_with_a_copy_in_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copies = _folder_with_copies(tmp_path / "data")
    store = str(tmp_path / "s.zarr")
    featstore.extract(str(tmp_path / "data"), store, model="tiny_cnn",
                      inits=["pretrained", "random:0"], device="cpu")
    results = featstore.probe(store, classifiers=["nearest-centroid"], folds=3, seed=0)
    leaks = probe_info(results)["leaks"]
    path_of = [str(p) for p in featstore.open_store(store)["path"].values]
    fold = dict(zip(path_of, np.asarray(results["test_fold"].values).tolist(), strict=True))
    expected = sum(2 for copy, original in copies.items() if fold[copy] != fold[original])
    assert leaks["checked"] and leaks["pairs"] == len(copies) == 12
    assert leaks["test_with_train_copy"] == expected and leaks["n_test"] == 36
    assert expected > 0

    assert _cli(["probe", store, "-c", "nearest-centroid", "--folds", "3", "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings_ = [line for line in err if "near-copy" in line]
    assert len(warnings_) == 1 and warnings_[0].startswith(f"warning: {expected} of 36 test")

    # grouped by the pair's id, copies stay on one side of every split
    grouped = featstore.probe(store, classifiers=["nearest-centroid"], folds=3,
                              group_regex=r"/(p\d+)_")
    assert probe_info(grouped)["leaks"]["test_with_train_copy"] == 0
    skipped = featstore.probe(store, classifiers=["nearest-centroid"], folds=3, seed=5,
                              leak_check=False)
    assert probe_info(skipped)["leaks"] == {"checked": False,
                                            "reason": "skipped (--no-leak-check)"}


def test_leak_check_says_nothing_when_images_cannot_be_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = _grouped_store(tmp_path / "s.zarr")  # synthetic: no images behind it
    assert _cli(["probe", store, "-c", "nearest-centroid", "--folds", "3", "-q"]) == 0
    assert "near-copy" not in capsys.readouterr().err
    info = probe_info(featstore.open_results(store))
    assert info["leaks"]["checked"] is False and "does not record where" in info["leaks"]["reason"]

    copies_root = tmp_path / "moved"
    _folder_with_copies(copies_root, pairs=2, singles=2)
    other = str(tmp_path / "t.zarr")
    featstore.extract(str(copies_root), other, model="tiny_cnn",
                      inits=["pretrained", "random:0"], device="cpu")
    os.rename(copies_root, tmp_path / "gone")
    results = run_probe(ProbeConfig(store=other, classifiers=("nearest-centroid",), folds=2))
    assert probe_info(results)["leaks"]["checked"] is False
    assert "is not there" in probe_info(results)["leaks"]["reason"]
