"""One (init, layer) block: every classifier on every fold, sharing work between them.

Each fold's training statistics are computed once; each linear kind fits all its folds and ``C``
values in one batched L-BFGS; kNN sorts neighbours once per fold for all ``k``; ridge and
nearest centroid are fit from sufficient statistics of the block; ``=auto`` classifiers run
their nested cross-validation (:mod:`~featstore.probing.nested`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from featstore.config import DEFAULT_AUTO_GRID, DEFAULT_MAX_ITER, DEFAULT_TOL

from .folds import FoldPlan
from .knn import knn_predict
from .linear import fold_spectra, predict_linear, solve_linear
from .metrics import fold_scores
from .nested import AutoFit, auto_linear, auto_ridge
from .specs import ClassifierSpec
from .standardize import fold_standardization
from .sufficient import fit_from_stats, group_stats, predict_from_stats

__all__ = ["BlockResult", "ClassifierFailure", "probe_block"]


class ClassifierFailure(Exception):
    """A classifier failed on a block; the sweep names the block's layer and init around it.

    Attributes
    ----------
    classifiers : tuple of str
        The canonical names of the classifiers fit together when it failed.
    reason : str
        The first line of the underlying error.
    """

    def __init__(self, classifiers: Sequence[str], reason: str) -> None:
        self.classifiers = tuple(classifiers)
        self.reason = reason
        super().__init__(f"classifier {', '.join(self.classifiers)}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[tuple[str, ...], str]]:
        return (type(self), (self.classifiers, self.reason))


@contextmanager
def failing_as(specs: Sequence[ClassifierSpec]) -> Iterator[None]:
    """Re-raise any error of the enclosed fit as a :class:`ClassifierFailure` naming ``specs``."""
    try:
        yield
    except ClassifierFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - any numerical failure becomes one named line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClassifierFailure([s.name for s in specs], reason) from exc


@dataclass(frozen=True)
class BlockResult:
    """Out-of-fold predictions and fold scores of every classifier on one block.

    Attributes
    ----------
    predictions : ndarray of int16, shape (n_specs, n_images)
        Predicted class of each image in the fold where it is tested; ``-1`` elsewhere.
    scores : ndarray of float64, shape (n_specs, n_folds, 3)
        Metrics (:data:`METRICS` order) per classifier and fold.
    converged : ndarray of bool, shape (n_specs, n_folds)
        Whether each fold's (final) fit converged; True for the direct methods.
    chosen : ndarray of float64, shape (n_specs, n_folds)
        The value an ``=auto`` classifier chose per fold; NaN for the others.
    inner_unconverged : ndarray of int, shape (n_specs, n_folds)
        Inner-CV fits of an ``=auto`` classifier that did not converge, per fold.
    """

    predictions: np.ndarray
    scores: np.ndarray
    converged: np.ndarray
    chosen: np.ndarray
    inner_unconverged: np.ndarray

    @classmethod
    def direct(cls, predictions: np.ndarray, plan: FoldPlan) -> BlockResult:
        """The result of classifiers fit directly (no solver, no choice) from predictions."""
        shape = (predictions.shape[0], plan.n_folds)
        return cls(predictions, fold_scores(predictions, plan), np.ones(shape, dtype=bool),
                   np.full(shape, np.nan), np.zeros(shape, dtype=np.int64))

    @property
    def unconverged(self) -> np.ndarray:
        """Fits that did not converge per classifier, inner-CV fits included, shape
        (n_specs,)."""
        return (~self.converged).sum(axis=1) + self.inner_unconverged.sum(axis=1)



def probe_block(block: np.ndarray, plan: FoldPlan, specs: Sequence[ClassifierSpec],
                tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER,
                grid: Sequence[float] = DEFAULT_AUTO_GRID) -> BlockResult:
    """Evaluate every classifier on every fold of one (init, layer) block.

    Work is shared: each fold's training statistics (and the solvers' preconditioner) are
    computed once; each linear kind (``logreg``, ``linear-svm``) fits all its folds and ``C``
    values in one batched L-BFGS; ``knn`` sorts neighbours once per fold for all ``k``; ridge and
    nearest centroid are fit from sufficient statistics of the block. ``=auto`` classifiers
    choose their value per fold by nested cross-validation over ``grid`` on the plan's inner
    folds (:mod:`~featstore.probing.nested`).

    Parameters
    ----------
    block : ndarray, shape (n_images, n_units)
        Features of one layer and init, every image of the store (unused rows are ignored and
        may hold NaN).
    plan : FoldPlan
        With inner folds (:meth:`FoldPlan.with_inner`) when a spec is ``=auto``.
    specs : sequence of ClassifierSpec
    tol, max_iter : float, int
        Stopping rule of the linear models (see :class:`LogisticProbe`; linear SVMs use
        ``tol / 10`` on their scaled objective).
    grid : sequence of float
        Candidate values of the ``=auto`` classifiers.

    Returns
    -------
    BlockResult

    Raises
    ------
    ClassifierFailure
        When a classifier's fit fails, naming it.
    """
    rows = np.flatnonzero(plan.used)
    X = np.asarray(block[rows], dtype=np.float64)
    # Work on X - (block mean): a fixed shift that keeps sums accurate. It changes nothing
    # mathematically: every fold is standardized with its own training rows' mean and scale,
    # and (x - a - mean_train(x - a)) = (x - mean_train(x)) for any constant a.
    shift = X.mean(axis=0)
    Xc = X - shift
    y = plan.labels[rows]
    g = plan.groups[rows]
    K = plan.n_classes
    F = plan.n_folds
    train = np.stack([plan.train_mask(f, g) for f in range(F)])
    test = np.stack([plan.test_mask(f, g) for f in range(F)])
    fold_std = [fold_standardization(Xc[train[f]], offset=shift) for f in range(F)]
    mean = np.stack([m for m, _, _ in fold_std])
    inv_scale = np.stack([inv for _, _, inv in fold_std])
    auto = [s for s in specs if s.auto is not None]
    inner = None
    if auto:
        if plan.inner is None:
            raise ValueError(f"{auto[0].name} needs a fold plan with inner folds")
        inner = plan.inner[:, rows]

    n_images = plan.groups.shape[0]
    predictions = np.full((len(specs), n_images), -1, dtype=np.int16)
    converged = np.ones((len(specs), F), dtype=bool)
    chosen = np.full((len(specs), F), np.nan)
    inner_unconverged = np.zeros((len(specs), F), dtype=np.int64)
    index = {spec.name: i for i, spec in enumerate(specs)}

    spectra = None  # the L-BFGS preconditioner of logreg (the linear SVM is solved by Newton)
    if any(s.kind == "logreg" for s in specs):
        with failing_as([s for s in specs if s.kind == "logreg"]):
            spectra = fold_spectra(Xc, train, mean, inv_scale)
    for kind, loss, kind_tol in (("logreg", "multinomial", tol),
                                 ("linear-svm", "squared_hinge", tol / 10)):
        group = [s for s in specs if s.kind == kind and s.auto is None]
        if group:
            Cs = [float(s.param("C")) for s in group]
            with failing_as(group):
                problems, x, _, done = solve_linear(
                    Xc, y, K, loss, train, Cs, kind_tol, max_iter, (mean, inv_scale),
                    spectrum=(spectra, np.arange(F)) if spectra is not None else None)
                Z = problems.decision(x, np.arange(len(problems.fold)))  # (T, F * len(Cs), n)
            for f in range(F):
                for q, spec in enumerate(group):
                    p = f * len(Cs) + q
                    predictions[index[spec.name], rows[test[f]]] = predict_linear(
                        Z[:, p, test[f]], axis=0)
                    converged[index[spec.name], f] = done[p]
        for spec in (s for s in auto if s.kind == kind):
            assert inner is not None
            with failing_as([spec]):
                fit = auto_linear(Xc, y, K, loss, train, test, inner, grid, kind_tol, max_iter,
                                  (mean, inv_scale), shift, spectra)
            _store_auto(fit, index[spec.name], rows, predictions, converged, chosen,
                        inner_unconverged)

    knn = [s for s in specs if s.kind == "knn"]
    if knn:
        ks = [int(s.param("k")) for s in knn]
        for f in range(F):
            Xtr = (Xc[train[f]] - mean[f]) * inv_scale[f]
            Xte = (Xc[test[f]] - mean[f]) * inv_scale[f]
            with failing_as(knn):
                pred = knn_predict(Xtr, y[train[f]], Xte, ks, K)
            for i, spec in enumerate(knn):
                predictions[index[spec.name], rows[test[f]]] = pred[i]

    by_stats = [s for s in specs if s.uses_stats]
    if by_stats:
        with failing_as(by_stats):
            stats = group_stats(X, y, g, plan.n_groups, K, shift,
                                gram=any(s.kind == "ridge" for s in by_stats))
            models = fit_from_stats(stats, plan, by_stats)
            pred = predict_from_stats(models, X, g, plan, shift)
        for i, spec in enumerate(by_stats):
            predictions[index[spec.name], rows] = pred[i]

    for spec in (s for s in auto if s.kind == "ridge"):
        assert inner is not None
        with failing_as([spec]):
            fit = auto_ridge(X, y, K, plan, g, inner, spec, grid, shift)
        _store_auto(fit, index[spec.name], rows, predictions, converged, chosen,
                    inner_unconverged)

    return BlockResult(predictions, fold_scores(predictions, plan), converged, chosen,
                       inner_unconverged)


def _store_auto(fit: AutoFit, s: int, rows: np.ndarray, predictions: np.ndarray,
                converged: np.ndarray, chosen: np.ndarray, inner_unconverged: np.ndarray
                ) -> None:
    used = fit.predictions >= 0
    predictions[s, rows[used]] = fit.predictions[used]
    converged[s] = fit.converged
    chosen[s] = fit.chosen
    inner_unconverged[s] = fit.inner_unconverged
