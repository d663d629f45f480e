"""Nested cross-validation for ``=auto`` classifiers: the regularization value chosen per
training fold.

``logreg:C=auto``, ``linear-svm:C=auto`` and ``ridge:alpha=auto`` choose their value inside each
training fold of the outer cross-validation: the fold's training images are split again into
stratified inner folds (:meth:`~featstore.probing.folds.FoldPlan.with_inner`), every grid value
is fit on each inner training set (standardized with that set's own statistics) and scored by
accuracy on its inner test set, and the value with the largest mean inner accuracy is chosen --
the first in grid order on ties, exactly as :class:`sklearn.model_selection.GridSearchCV` and
:class:`sklearn.linear_model.LogisticRegressionCV` pick theirs. The outer fold is then refit on
all its training images with that value and tested once. The outer test images never take part
in the choice.

All inner problems of a block are solved together (one batched L-BFGS for the linear kinds, one
set of sufficient statistics per outer fold for ridge); :class:`NestedCVProbe` is the same
procedure as a scikit-learn estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from .folds import FoldPlan
from .linear import _Spectrum, predict_linear, solve_linear
from .specs import ClassifierSpec
from .standardize import fold_standardization
from .sufficient import fit_from_stats, group_stats, predict_from_stats

__all__ = ["AutoFit", "choose", "auto_linear", "auto_ridge", "NestedCVProbe"]


@dataclass(frozen=True)
class AutoFit:
    """An ``=auto`` classifier on every fold of one block.

    Attributes
    ----------
    predictions : ndarray of int, shape (n_rows,)
        Out-of-fold prediction of each used row (by the model of the fold it is tested in).
    chosen : ndarray of float, shape (n_folds,)
        The value chosen in each fold.
    converged : ndarray of bool, shape (n_folds,)
        Whether each fold's final fit converged (always True for ridge).
    inner_unconverged : ndarray of int, shape (n_folds,)
        Inner-CV fits of each fold that did not converge.
    inner_scores : ndarray, shape (n_folds, n_inner, n_grid)
        Inner test accuracy of every grid value.
    """

    predictions: np.ndarray
    chosen: np.ndarray
    converged: np.ndarray
    inner_unconverged: np.ndarray
    inner_scores: np.ndarray


def choose(inner_scores: np.ndarray) -> np.ndarray:
    """Index of the chosen grid value per outer fold: the largest mean over inner folds (the
    mean as :class:`~sklearn.model_selection.GridSearchCV` takes it), the first on ties.

    Parameters
    ----------
    inner_scores : ndarray, shape (n_folds, n_inner, n_grid)

    Returns
    -------
    ndarray of int, shape (n_folds,)
    """
    return np.asarray(np.argmax(np.average(inner_scores, axis=1), axis=1))


def _inner_masks(inner: np.ndarray, n_inner: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and test masks of every (outer fold, inner fold), shape (F * n_inner, n) each,
    mask ``f * n_inner + q``."""
    folds = np.arange(n_inner)
    test = (inner[:, None, :] == folds[None, :, None])
    train = (inner[:, None, :] >= 0) & ~test
    n = inner.shape[1]
    return train.reshape(-1, n), test.reshape(-1, n)


def auto_linear(Xc: np.ndarray, y: np.ndarray, n_classes: int, loss: str, train: np.ndarray,
                test: np.ndarray, inner: np.ndarray, grid: Sequence[float], tol: float,
                max_iter: int, fold_stats: tuple[np.ndarray, np.ndarray],
                shift: np.ndarray | float, spectra: _Spectrum | None) -> AutoFit:
    """Nested cross-validation of a logistic regression or linear SVM over ``C`` in ``grid``.

    Parameters
    ----------
    Xc : ndarray, shape (n, d)
        Used rows of the block, shifted by ``shift``.
    y : ndarray of int, shape (n,)
    n_classes : int
    loss : {"multinomial", "squared_hinge"}
    train, test : ndarray of bool, shape (F, n)
        Outer folds.
    inner : ndarray of int, shape (F, n)
        Inner fold of each outer training row, ``-1`` elsewhere.
    grid : sequence of float
    tol, max_iter : float, int
        Stopping rule of every fit.
    fold_stats : (mean, inv_scale), each of shape (F, d)
        Outer training standardization.
    shift : ndarray of shape (d,) or float
        What was subtracted from the raw rows (for the near-constant test).
    spectra : _Spectrum or None
        The outer folds' preconditioner spectra, reused by their inner problems.

    Returns
    -------
    AutoFit
    """
    F = train.shape[0]
    n_inner = int(inner.max()) + 1
    G = len(grid)
    inner_train, inner_test = _inner_masks(inner, n_inner)
    stats = [fold_standardization(Xc[m], offset=shift) for m in inner_train]
    mean = np.stack([m for m, _, _ in stats])
    inv_scale = np.stack([inv for _, _, inv in stats])
    spectrum = None if spectra is None else (spectra, np.repeat(np.arange(F), n_inner))
    problems, x, _, converged = solve_linear(
        Xc, y, n_classes, loss, inner_train, list(grid), tol, max_iter, (mean, inv_scale),
        precondition=spectra is not None, spectrum=spectrum)
    Z = problems.decision(x, np.arange(len(problems.fold)))  # (T, M * G, n)
    pred = predict_linear(Z, axis=0).reshape(F * n_inner, G, -1)
    scores = np.empty((F * n_inner, G))
    for m in range(F * n_inner):
        rows = inner_test[m]
        scores[m] = (pred[m][:, rows] == y[rows]).mean(axis=1)
    scores = scores.reshape(F, n_inner, G)
    pick = choose(scores)
    chosen = np.asarray(grid, dtype=np.float64)[pick]
    inner_unconverged = (~converged).reshape(F, n_inner * G).sum(axis=1)
    problems, x, _, final = solve_linear(
        Xc, y, n_classes, loss, train, [], tol, max_iter, fold_stats,
        precondition=spectra is not None, pairs=(np.arange(F), chosen),
        spectrum=None if spectra is None else (spectra, np.arange(F)))
    Z = problems.decision(x, np.arange(F))
    predictions = np.full(y.shape, -1, dtype=np.int64)
    for f in range(F):
        predictions[test[f]] = predict_linear(Z[:, f, test[f]], axis=0)
    return AutoFit(predictions, chosen, final, inner_unconverged, scores)


def auto_ridge(X: np.ndarray, y: np.ndarray, n_classes: int, plan: FoldPlan, groups: np.ndarray,
               inner: np.ndarray, spec: ClassifierSpec, grid: Sequence[float],
               shift: np.ndarray) -> AutoFit:
    """Nested cross-validation of ridge over ``alpha`` in ``grid``, from sufficient statistics.

    Parameters
    ----------
    X : ndarray, shape (n, d)
        Used rows of the block (raw).
    y : ndarray of int, shape (n,)
    n_classes : int
    plan : FoldPlan
        The outer plan.
    groups : ndarray of int, shape (n,)
        Outer group of each row.
    inner : ndarray of int, shape (F, n)
        Inner fold of each outer training row, ``-1`` elsewhere.
    spec : ClassifierSpec
        The ``ridge:alpha=auto`` spec.
    grid : sequence of float
    shift : ndarray, shape (d,)

    Returns
    -------
    AutoFit
    """
    F = plan.n_folds
    n_inner = int(inner.max()) + 1
    candidates = [spec.with_value(float(a)) for a in grid]
    scores = np.empty((F, n_inner, len(grid)))
    for f in range(F):
        inner_plan = FoldPlan.from_test_fold(inner[f], y, n_classes)
        stats = group_stats(X, y, inner[f], n_inner, n_classes, shift, gram=True)
        pred = predict_from_stats(fit_from_stats(stats, inner_plan, candidates), X, inner[f],
                                  inner_plan, shift)
        for q in range(n_inner):
            rows = inner[f] == q
            scores[f, q] = (pred[:, rows] == y[rows]).mean(axis=1)
    pick = choose(scores)
    chosen = np.asarray(grid, dtype=np.float64)[pick]
    values = sorted(set(pick.tolist()))
    stats = group_stats(X, y, groups, plan.n_groups, n_classes, shift, gram=True)
    models = fit_from_stats(stats, plan, [candidates[v] for v in values])
    pred = predict_from_stats(models, X, groups, plan, shift)
    predictions = np.full(y.shape, -1, dtype=np.int64)
    for f in range(F):
        rows = plan.test_mask(f, groups)
        predictions[rows] = pred[values.index(int(pick[f])), rows]
    return AutoFit(predictions, chosen, np.ones(F, dtype=bool), np.zeros(F, dtype=np.int64),
                   scores)


class NestedCVProbe(ClassifierMixin, BaseEstimator):
    """An estimator whose regularization is chosen by stratified cross-validation on its
    training data, then refit on all of it (``logreg:C=auto`` and kin as one estimator).

    Parameters
    ----------
    estimator : estimator
        A featstore probe (:class:`LogisticProbe`, :class:`LinearSVMProbe`,
        :class:`RidgeProbe`).
    param : str
        The parameter chosen (``"C"`` or ``"alpha"``).
    grid : tuple of float
        Candidate values, in order (the first wins ties).
    inner_folds : int
        ``StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=seed)``.
    seed : int

    Attributes
    ----------
    classes_ : ndarray
    chosen_ : float
        The value chosen.
    inner_scores_ : ndarray, shape (inner_folds, len(grid))
        Inner test accuracy of every value.
    estimator_ : estimator
        The refit estimator.
    """

    def __init__(self, estimator: Any, param: str = "C",
                 grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2),
                 inner_folds: int = 3, seed: int = 0) -> None:
        self.estimator = estimator
        self.param = param
        self.grid = grid
        self.inner_folds = inner_folds
        self.seed = seed

    def fit(self, X: Any, y: Any) -> NestedCVProbe:
        """Choose the value on training features ``X`` (shape (n_samples, n_features)) and
        labels ``y``, then refit with it."""
        from sklearn.model_selection import StratifiedKFold

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        splitter = StratifiedKFold(n_splits=self.inner_folds, shuffle=True,
                                   random_state=self.seed)
        splits = list(splitter.split(np.zeros(len(y)), y))
        scores = np.empty((len(splits), len(self.grid)))
        for q, (tr, te) in enumerate(splits):
            for g, value in enumerate(self.grid):
                model = clone(self.estimator).set_params(**{self.param: value})
                scores[q, g] = model.fit(X[tr], y[tr]).score(X[te], y[te])
        self.inner_scores_ = scores
        self.chosen_ = float(self.grid[int(choose(scores[None])[0])])
        self.estimator_ = clone(self.estimator).set_params(**{self.param: self.chosen_}).fit(X, y)
        self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels, shape (n_samples,)."""
        return np.asarray(self.estimator_.predict(X))
