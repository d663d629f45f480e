"""Probes on a small real store equal scikit-learn at every layer, local and distributed.

20 LC25000 lung tiles per class (60 images, 3 folds: 40 training images; the session fixture
``lung60`` in conftest.py) through the pretrained and a random efficientnet_lite0: at ``head``
1280 units meet 40 training images and dozens of units are constant, the shape of every small
pathology set. Skips when ../shared/data is absent.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from featstore.cli.app import main
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

import featstore

pytestmark = pytest.mark.slow

CLASSIFIERS = {
    "logreg:C=1": lambda: LogisticRegression(max_iter=5000),
    "linear-svm:C=1": lambda: LinearSVC(max_iter=20000),
    "ridge:alpha=1": lambda: RidgeClassifier(),
    "knn:k=5": lambda: KNeighborsClassifier(5, algorithm="brute"),
    "nearest-centroid": lambda: NearestCentroid(),
}


def test_probe_command_succeeds(lung60: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["probe", lung60, "--classifier", "logreg", "--classifier", "ridge", "--folds",
              "3", "-q"])
    out, err = capsys.readouterr()
    assert info.value.code in (0, None), err
    assert "head" in out and "Traceback" not in err


def test_every_classifier_equals_sklearn_at_every_layer(lung60: str) -> None:
    results = featstore.probe(lung60, classifiers=list(CLASSIFIERS), folds=3, seed=0)
    ds = xr.open_zarr(lung60)
    labels = np.asarray(ds["label"].values)
    splits = list(StratifiedKFold(3, shuffle=True, random_state=0).split(labels, labels))
    ours = results["score"].sel(metric="accuracy").mean("fold")
    for name, make in CLASSIFIERS.items():
        differences = []
        for layer in results["layer"].values:
            for init in results["init"].values:
                X = np.asarray(ds[str(layer)].sel(init=init).values, dtype=np.float64)
                accuracies = []
                for train, test in splits:
                    model = make_pipeline(StandardScaler(), make())
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # convergence, zero variance
                        model.fit(X[train], labels[train])
                    accuracies.append(float((model.predict(X[test]) == labels[test]).mean()))
                differences.append(abs(float(ours.sel(classifier=name, layer=layer, init=init))
                                       - float(np.mean(accuracies))))
        print(f"{name}: worst layer {max(differences):.4f}, mean {np.mean(differences):.4f}")
        assert max(differences) <= 0.05, (name, max(differences))
        assert float(np.mean(differences)) <= 0.02, (name, float(np.mean(differences)))


def test_distributed_probe_equals_local(lung60: str) -> None:
    specs = ["logreg", "ridge"]
    local = featstore.probe(lung60, classifiers=specs, folds=3, force=True)
    distributed = featstore.probe(lung60, classifiers=specs, folds=3, scheduler="local:2",
                                  force=True)
    np.testing.assert_array_equal(distributed["prediction"].values, local["prediction"].values)
    np.testing.assert_array_equal(distributed["score"].values, local["score"].values)


def test_store_holds_the_degenerate_case(lung60: str) -> None:
    """The store is the case the issue reported: more units than training images, and units
    constant over the images (or the test above would not exercise it)."""
    head = np.asarray(xr.open_zarr(lung60)["head"].sel(init="pretrained").values)
    assert head.shape == (60, 1280)
    assert int((head.std(axis=0) == 0).sum()) >= 10
    assert Path(lung60).is_dir()
