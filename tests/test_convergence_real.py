"""The default solvers converge on real data at every layer (issue 11), and =auto chooses.

30 LC25000 lung tiles per class through efficientnet_lite0 with its ImageNet weights and one
random init: every layer from ``stem`` (32 units) to ``head`` (1280 units, far more than the 72
training images of a fold). logreg and linear-svm at their defaults, and linear-svm:C=auto over
the whole default grid (C up to 100, where L-BFGS did not converge on the squared hinge), must
record every fit converged. Skips when ../shared/data is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

import featstore
from featstore.results import unconverged_fits
from helpers import LC25000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lung90(tmp_path_factory: pytest.TempPathFactory) -> str:
    if not LC25000.is_dir():
        pytest.skip(f"{LC25000} is absent (the shared real data sets)")
    root = tmp_path_factory.mktemp("lung90")
    data = root / "tiles"
    for folder in sorted(p for p in LC25000.iterdir() if p.is_dir()):
        (data / folder.name).mkdir(parents=True)
        for tile in sorted(folder.iterdir())[:30]:
            (data / folder.name / tile.name).symlink_to(tile)
    store = str(root / "lung90.zarr")
    featstore.extract(str(data), store, inits=("pretrained", "random:0"), device="cpu")
    return store


def test_default_solvers_converge_at_every_layer(lung90: str) -> None:
    results = featstore.probe(lung90, classifiers=["logreg", "linear-svm"], folds=5)
    assert results.sizes["layer"] == 18
    assert unconverged_fits(results) == []
    assert bool(results["converged"].all())


def test_auto_linear_svm_converges_over_the_whole_grid(lung90: str) -> None:
    results = featstore.probe(lung90, classifiers=["linear-svm:C=auto"], folds=5,
                              layers=["blocks.15", "head"])
    assert unconverged_fits(results) == []
    chosen = results["chosen_param"].values
    assert np.isin(chosen, [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]).all()
