"""The default solvers converge on real data at every layer (issue 11), and =auto chooses.

20 LC25000 lung tiles per class (the session fixture ``lung60``) through efficientnet_lite0 with
its ImageNet weights and one random init: every layer from ``stem`` (32 units) to ``head`` (1280
units, far more than the 48 training images of a fold). logreg and linear-svm at their defaults,
and linear-svm:C=auto over the whole default grid (C up to 100, where L-BFGS did not converge on
the squared hinge), must record every fit converged. Skips when ../shared/data is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

import featstore
from featstore.results import unconverged_fits

pytestmark = pytest.mark.slow


def test_default_solvers_converge_at_every_layer(lung60: str) -> None:
    results = featstore.probe(lung60, classifiers=["logreg", "linear-svm"], folds=5)
    assert results.sizes["layer"] == 18
    assert unconverged_fits(results) == []
    assert bool(results["converged"].all())


def test_auto_linear_svm_converges_over_the_whole_grid(lung60: str) -> None:
    results = featstore.probe(lung60, classifiers=["linear-svm:C=auto"], folds=5,
                              layers=["blocks.15", "head"])
    assert unconverged_fits(results) == []
    chosen = results["chosen_param"].values
    assert np.isin(chosen, [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]).all()
