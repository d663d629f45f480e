"""Probes fit from sufficient statistics: ridge and nearest centroid.

Moments per group of images (counts, class sums, centred second moments and co-moments) are
enough to fit both, so the sweep can accumulate them chunk by chunk with memory bounded by the
chunk, not the number of images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from .folds import FoldPlan
from .linear import predict_linear
from .specs import ClassifierSpec
from .standardize import StandardizedProbe, feature_scale

__all__ = ["GroupStats", "group_stats", "merge_stats", "fit_from_stats", "predict_from_stats",
           "RidgeProbe", "NearestCentroidProbe"]


@dataclass
class GroupStats:
    """Per-group moments of the images of each group, enough to fit ridge and nearest centroid.

    Second moments are kept *centred on each group's own mean* and combined with the exact
    pairwise update of Chan, Golub & LeVeque (1979), never as raw sums of squares minus a squared
    mean: that subtraction loses every digit for a unit that is constant within a fold but not
    across the data (common in pooled ReLU features), and the lost digits became huge
    standardized values and an indefinite ridge system. Class sums are of the shifted features
    ``x - shift`` (a fixed vector, e.g. the data mean).

    Attributes
    ----------
    shift : ndarray, shape (d,)
    counts : ndarray of int, shape (G, K)
        Images per group and class.
    sums : ndarray, shape (G, K, d)
        Sum of shifted features per group and class.
    m2 : ndarray, shape (G, d)
        Sum of squared deviations from the group's mean, per group.
    comoment : ndarray, shape (G, d, d), or None
        Sum of outer products of deviations from the group's mean (only when a ridge classifier
        needs it).
    """

    shift: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    m2: np.ndarray
    comoment: np.ndarray | None

    def group_means(self) -> np.ndarray:
        """Mean shifted feature of each group, shape (G, d); 0 for empty groups."""
        n = self.counts.sum(axis=1).astype(np.float64)
        return self.sums.sum(axis=1) / np.maximum(n, 1.0)[:, None]


def group_stats(X: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_groups: int,
                n_classes: int, shift: np.ndarray, gram: bool) -> GroupStats:
    """Sufficient statistics of one chunk of rows.

    Parameters
    ----------
    X : ndarray, shape (rows, d)
        Raw features of the chunk (rows of unused images may hold anything, NaN included).
    labels, groups : ndarray of int, shape (rows,)
        Class and group of each row; rows with group ``-1`` are skipped.
    n_groups, n_classes : int
    shift : ndarray, shape (d,)
    gram : bool
        Also accumulate the centred co-moment matrix per group (memory ``G * d * d``).

    Returns
    -------
    GroupStats
    """
    d = X.shape[1]
    counts = np.zeros((n_groups, n_classes), dtype=np.int64)
    sums = np.zeros((n_groups, n_classes, d))
    m2 = np.zeros((n_groups, d))
    comoment = np.zeros((n_groups, d, d)) if gram else None
    for g in range(n_groups):
        rows = np.flatnonzero(groups == g)
        if rows.size == 0:
            continue
        Xg = np.asarray(X[rows], dtype=np.float64) - shift
        yg = labels[rows]
        counts[g] = np.bincount(yg, minlength=n_classes)
        sums[g] = np.eye(n_classes)[yg].T @ Xg
        deviations = Xg - Xg.mean(axis=0)
        m2[g] = (deviations**2).sum(axis=0)
        if comoment is not None:
            comoment[g] = deviations.T @ deviations
    return GroupStats(np.asarray(shift, dtype=np.float64), counts, sums, m2, comoment)


def _between(n_a: np.ndarray, n_b: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Weight ``n_a n_b / (n_a + n_b)`` of the mean difference in the pairwise update (0 when a
    side is empty), shape like ``n_a``."""
    total = n_a + n_b
    return np.where(total > 0, n_a * n_b / np.maximum(total, 1.0), 0.0)


def merge_stats(a: GroupStats, b: GroupStats) -> GroupStats:
    """Statistics of the union of two chunks' rows (same shift, same groups).

    Per group: counts and class sums add; centred moments add plus the between-chunk term
    ``n_a n_b / n (mean_b - mean_a)^2`` (outer product for the co-moment).
    """
    n_a = a.counts.sum(axis=1).astype(np.float64)
    n_b = b.counts.sum(axis=1).astype(np.float64)
    delta = b.group_means() - a.group_means()  # (G, d)
    weight = _between(n_a, n_b, delta)  # (G,)
    m2 = a.m2 + b.m2 + weight[:, None] * delta**2
    comoment = None
    if a.comoment is not None and b.comoment is not None:
        comoment = a.comoment + b.comoment + weight[:, None, None] * (
            delta[:, :, None] * delta[:, None, :])
    return GroupStats(a.shift, a.counts + b.counts, a.sums + b.sums, m2, comoment)


@dataclass(frozen=True)
class _StatsModel:
    """Per fold: standardization and a linear decision ``((x - shift - m) * inv) @ coef + b``
    (``inv``: ``1 / scale``, 0 for constant features)."""

    mean: np.ndarray  # (F, d) shifted mean
    scale: np.ndarray  # (F, d) scikit-learn's scale_
    inv_scale: np.ndarray  # (F, d)
    coef: np.ndarray  # (F, d, T)
    intercept: np.ndarray  # (F, T)
    kind: str  # "ridge" | "centroid"


def _fold_moments(stats: GroupStats, fold_groups: np.ndarray
                  ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                             np.ndarray, np.ndarray | None]:
    """Moments of the training rows of one fold: the union of groups ``fold_groups``.

    Returns ``(n, counts (K,), class_sums (K, d), mean (d,), scale (d,), inv_scale (d,),
    comoment (d, d) or None)``: total = within-group + between-group, exactly.
    """
    counts = stats.counts[fold_groups].sum(axis=0)  # (K,)
    n = float(counts.sum())
    class_sums = stats.sums[fold_groups].sum(axis=0)  # (K, d)
    mean = class_sums.sum(axis=0) / n
    n_g = stats.counts[fold_groups].sum(axis=1).astype(np.float64)  # (g,)
    offsets = (stats.group_means()[fold_groups] - mean) * (n_g > 0)[:, None]  # (g, d)
    m2 = stats.m2[fold_groups].sum(axis=0) + (n_g[:, None] * offsets**2).sum(axis=0)
    scale, constant = feature_scale(m2 / n, mean + stats.shift, int(n))
    inv_scale = np.where(constant, 0.0, 1.0 / scale)
    comoment = None
    if stats.comoment is not None:
        comoment = stats.comoment[fold_groups].sum(axis=0) + (offsets.T * n_g) @ offsets
    return n, counts, class_sums, mean, scale, inv_scale, comoment


def _solve_ridge(A: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve the symmetric positive (semi)definite system ``A x = rhs``.

    Cholesky first; a system that is numerically singular (a tiny ``alpha`` on rank-deficient
    features) gets the minimum-norm least-squares solution, as scikit-learn's ridge does.
    """
    try:
        factor = scipy.linalg.cho_factor(A, check_finite=False)
        return np.asarray(scipy.linalg.cho_solve(factor, rhs, check_finite=False))
    except (np.linalg.LinAlgError, ValueError):
        return np.asarray(scipy.linalg.lstsq(A, rhs, check_finite=False)[0])


def fit_from_stats(stats: GroupStats, plan: FoldPlan, specs: Sequence[ClassifierSpec]
                   ) -> list[_StatsModel]:
    """Fit ridge / nearest-centroid classifiers of every fold from sufficient statistics.

    Ridge equals :class:`sklearn.linear_model.RidgeClassifier` (targets +-1, centred, intercept
    unpenalized, ``(Xs^T Xs + alpha I) w = Xs^T y``); nearest centroid equals
    :class:`sklearn.neighbors.NearestCentroid` (Euclidean, class means of standardized features),
    written as the linear rule ``argmax(2 x.c_k - ||c_k||^2)``.

    Parameters
    ----------
    stats : GroupStats
        With ``comoment`` when a ridge spec is present.
    plan : FoldPlan
    specs : sequence of ClassifierSpec
        Ridge and nearest-centroid specs only.

    Returns
    -------
    list of _StatsModel
        One per spec.
    """
    K = plan.n_classes
    moments = [_fold_moments(stats, plan.train_groups[f]) for f in range(plan.n_folds)]
    means = np.stack([m[3] for m in moments])
    scales = np.stack([m[4] for m in moments])
    inv_scales = np.stack([m[5] for m in moments])
    models = []
    for spec in specs:
        coefs, intercepts = [], []
        for n, counts, class_sums, mean, _, inv_scale, comoment in moments:
            # sum over class k of the standardized training rows: (S_k - n_k m) / s
            class_std = (class_sums - counts[:, None] * mean) * inv_scale  # (K, d)
            if spec.kind == "ridge":
                if comoment is None:
                    raise ValueError("ridge needs the co-moment matrix in the statistics")
                A = comoment * np.outer(inv_scale, inv_scale)
                A.flat[:: A.shape[0] + 1] += float(spec.param("alpha"))
                if K == 2:
                    rhs = 2.0 * class_std[1:2].T  # (d, 1), +1 for class 1
                    ybar = np.array([(counts[1] - counts[0]) / n])
                else:
                    rhs = 2.0 * class_std.T  # sum_i xs_i (2 [y_i = k] - 1), xs centred
                    ybar = 2.0 * counts / n - 1.0
                coefs.append(_solve_ridge(A, rhs))
                intercepts.append(ybar)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    centroids = class_std / counts[:, None]  # (K, d)
                centroids = np.where(counts[:, None] > 0, centroids, np.nan)
                sq = (centroids**2).sum(axis=1)
                coefs.append(np.nan_to_num(2.0 * centroids.T, nan=0.0))
                intercepts.append(np.where(counts > 0, -sq, -np.inf))
        models.append(_StatsModel(means, scales, inv_scales, np.stack(coefs),
                                  np.stack(intercepts),
                                  "ridge" if spec.kind == "ridge" else "centroid"))
    return models


def predict_from_stats(models: Sequence[_StatsModel], X: np.ndarray, groups: np.ndarray,
                       plan: FoldPlan, shift: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions of a chunk of rows.

    Parameters
    ----------
    models : sequence of _StatsModel
        From :func:`fit_from_stats`.
    X : ndarray, shape (rows, d)
        Raw features of the chunk.
    groups : ndarray of int, shape (rows,)
    plan : FoldPlan
    shift : ndarray, shape (d,)

    Returns
    -------
    ndarray of int16, shape (len(models), rows)
        Predicted class of each row tested in some fold (by that fold's model), ``-1`` elsewhere.
    """
    out = np.full((len(models), X.shape[0]), -1, dtype=np.int16)
    for f in range(plan.n_folds):
        rows = np.flatnonzero(plan.test_mask(f, groups))
        if rows.size == 0:
            continue
        Xf = np.asarray(X[rows], dtype=np.float64) - shift
        for i, model in enumerate(models):
            Xs = (Xf - model.mean[f]) * model.inv_scale[f]
            Z = Xs @ model.coef[f] + model.intercept[f]
            out[i, rows] = predict_linear(Z)
    return out


def _single_fold_plan(y: np.ndarray, n_classes: int) -> FoldPlan:
    """All rows in group 0, one fold training on it (and testing on no row)."""
    return FoldPlan(np.zeros(len(y), dtype=np.int64), np.asarray(y, dtype=np.int64), n_classes,
                    np.array([[True]]), np.array([-2]))


class _StatsProbe(StandardizedProbe):
    """Estimators fit from sufficient statistics (the sweep's chunked path, on one chunk)."""

    def _spec(self) -> ClassifierSpec:
        raise NotImplementedError

    def fit(self, X: Any, y: Any) -> _StatsProbe:
        """Fit on training features ``X`` (shape (n_samples, n_features)) and labels ``y``."""
        X, y_idx = self._prepare_fit(X, y)
        plan = _single_fold_plan(y_idx, len(self.classes_))
        spec = self._spec()
        stats = group_stats(X, y_idx, plan.groups, 1, len(self.classes_), self.mean_,
                            gram=spec.kind == "ridge")
        model = fit_from_stats(stats, plan, [spec])[0]
        self.mean_ = stats.shift + model.mean[0]
        self.scale_ = model.scale[0]
        self._inv_scale = model.inv_scale[0]
        self._coef = model.coef[0]
        self._intercept = model.intercept[0]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Decision values, shape (n_samples,) for a binary ridge, else (n_samples, n_classes)."""
        Z = self._standardize(X) @ self._coef + self._intercept
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels, shape (n_samples,)."""
        return self.classes_[predict_linear(self._standardize(X) @ self._coef + self._intercept)]


class RidgeProbe(_StatsProbe):
    """Ridge classifier on training-standardized features.

    Equals :class:`sklearn.linear_model.RidgeClassifier` (targets +-1, intercept unpenalized),
    fit from sufficient statistics (the Gram matrix of the standardized training rows).

    Parameters
    ----------
    alpha : float
        L2 strength.

    Attributes
    ----------
    classes_, mean_, scale_
        As :class:`LogisticProbe`.
    coef_ : ndarray of shape (T, n_features)
        T = 1 for two classes, else n_classes; on standardized features.
    intercept_ : ndarray of shape (T,)
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def _spec(self) -> ClassifierSpec:
        return ClassifierSpec("ridge", (("alpha", float(self.alpha)),))

    def fit(self, X: Any, y: Any) -> RidgeProbe:
        """Fit on training features ``X`` (shape (n_samples, n_features)) and labels ``y``."""
        super().fit(X, y)
        self.coef_ = self._coef.T.copy()
        self.intercept_ = self._intercept.copy()
        return self


class NearestCentroidProbe(_StatsProbe):
    """Nearest class mean (Euclidean) on training-standardized features.

    Equals :class:`sklearn.neighbors.NearestCentroid` with its defaults; fit from class sums.
    One documented deviation: when every training row is identical (every feature constant),
    scikit-learn refuses to fit ("All features have zero variance"); here every centroid
    coincides, every class is tied, and the lowest class index is predicted.

    Attributes
    ----------
    classes_, mean_, scale_
        As :class:`LogisticProbe`.
    centroids_ : ndarray of shape (n_classes, n_features)
        Class means of the standardized training features.
    """

    def __init__(self) -> None:
        pass

    def _spec(self) -> ClassifierSpec:
        return ClassifierSpec("nearest-centroid")

    def fit(self, X: Any, y: Any) -> NearestCentroidProbe:
        """Fit on training features ``X`` (shape (n_samples, n_features)) and labels ``y``."""
        super().fit(X, y)
        self.centroids_ = (self._coef / 2.0).T.copy()
        return self

