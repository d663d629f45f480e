"""Probe classifiers and per-block fit/score: pure compute, NumPy in and NumPy out.

Every classifier works on features standardized with statistics of its *training* rows only
(mean and population standard deviation, near-constant features scaled by 1, exactly as
:class:`sklearn.preprocessing.StandardScaler`), so each one equals the scikit-learn pipeline
``Pipeline([StandardScaler(), <estimator>])`` (the table of kinds is in
:mod:`~featstore.probing.specs`). The modules, by responsibility:

* :mod:`~featstore.probing.specs`: the ``--classifier`` grammar, :class:`ClassifierSpec`;
* :mod:`~featstore.probing.folds`: :class:`FoldPlan`, which images train and test each fold;
* :mod:`~featstore.probing.metrics`: confusion-based scores and chance levels;
* :mod:`~featstore.probing.standardize`: training-fold standardization, the estimators' base;
* :mod:`~featstore.probing.lbfgs`: the batched L-BFGS solver;
* :mod:`~featstore.probing.linear`: logistic regression and linear SVM on top of it;
* :mod:`~featstore.probing.sufficient`: ridge and nearest centroid from sufficient statistics;
* :mod:`~featstore.probing.knn`: k nearest neighbours;
* :mod:`~featstore.probing.nested`: nested cross-validation of ``=auto`` classifiers;
* :mod:`~featstore.probing.block`: :func:`probe_block`, every classifier on every fold of one
  (init, layer) block, sharing work between them.

The estimators (:class:`LogisticProbe`, :class:`LinearSVMProbe`, :class:`RidgeProbe`,
:class:`KNNProbe`, :class:`NearestCentroidProbe`) follow the scikit-learn contract
(``fit``/``predict``/``score``, ``get_params``/``set_params``, :func:`sklearn.base.clone`).
"""

from .block import BlockResult, ClassifierFailure, probe_block
from .folds import FoldPlan
from .knn import KNNProbe
from .linear import LinearSVMProbe, LogisticProbe
from .metrics import METRICS, chance_levels, fold_scores, metric_scores, scores_from_confusion
from .nested import NestedCVProbe
from .specs import AUTO, KINDS, ClassifierSpec, parse_classifier, parse_classifiers
from .standardize import standardization
from .sufficient import (
    GroupStats,
    NearestCentroidProbe,
    RidgeProbe,
    fit_from_stats,
    group_stats,
    merge_stats,
    predict_from_stats,
)

__all__ = [
    "METRICS",
    "KINDS",
    "AUTO",
    "ClassifierSpec",
    "parse_classifier",
    "parse_classifiers",
    "FoldPlan",
    "BlockResult",
    "ClassifierFailure",
    "GroupStats",
    "LogisticProbe",
    "LinearSVMProbe",
    "RidgeProbe",
    "KNNProbe",
    "NearestCentroidProbe",
    "NestedCVProbe",
    "standardization",
    "metric_scores",
    "scores_from_confusion",
    "chance_levels",
    "group_stats",
    "merge_stats",
    "fit_from_stats",
    "predict_from_stats",
    "fold_scores",
    "probe_block",
]
