"""Metrics from confusion matrices (accuracy, balanced accuracy, macro-F1) and chance levels."""

from __future__ import annotations

from typing import Final

import numpy as np

from .folds import FoldPlan

__all__ = ["METRICS", "scores_from_confusion", "metric_scores", "chance_levels", "fold_scores"]

#: metrics reported for every fold, in this order
METRICS: Final[tuple[str, ...]] = ("accuracy", "balanced_accuracy", "macro_f1")


def scores_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Accuracy, balanced accuracy and macro-F1 from confusion matrices.

    Definitions follow scikit-learn: balanced accuracy is the mean recall over the classes present
    in ``y_true``; macro-F1 is the mean F1 over the classes present in ``y_true`` or ``y_pred``
    (F1 = 2 TP / (2 TP + FP + FN)).

    Parameters
    ----------
    confusion : ndarray, shape (..., n_classes, n_classes)
        Counts (or weights), rows = true class, columns = predicted class.

    Returns
    -------
    ndarray of float64, shape (..., 3)
        In the order of :data:`METRICS`; NaN where the matrix is empty.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    true = cm.sum(axis=-1)
    pred = cm.sum(axis=-2)
    total = true.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = tp.sum(axis=-1) / total
        present = true > 0
        recall = np.where(present, tp / np.where(present, true, 1.0), 0.0)
        balanced = recall.sum(axis=-1) / present.sum(axis=-1)
        either = (true + pred) > 0
        f1 = np.where(either, 2.0 * tp / np.where(either, true + pred, 1.0), 0.0)
        macro_f1 = f1.sum(axis=-1) / either.sum(axis=-1)
    return np.stack([accuracy, balanced, macro_f1], axis=-1)


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    index = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def metric_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Metrics of one set of predictions.

    Parameters
    ----------
    y_true, y_pred : ndarray of int, shape (n,)
        Class indices in ``0..n_classes-1``.
    n_classes : int

    Returns
    -------
    ndarray of float64, shape (3,)
        Accuracy, balanced accuracy, macro-F1 (equal to scikit-learn's ``accuracy_score``,
        ``balanced_accuracy_score`` and ``f1_score(average="macro")``).
    """
    return scores_from_confusion(_confusion(y_true, y_pred, n_classes))


def chance_levels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Chance level of each metric for the images in ``labels``.

    * accuracy: rate of the majority class (always predicting it);
    * balanced accuracy: ``1 / K`` with K the number of classes present;
    * macro-F1: the macro-F1 of always predicting the majority class, ``2 p / ((1 + p) K)``
      with ``p`` the majority rate (the majority class has precision ``p`` and recall 1; the
      other classes score 0).

    Parameters
    ----------
    labels : ndarray of int, shape (n,)
    n_classes : int

    Returns
    -------
    ndarray of float64, shape (3,)
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    present = int((counts > 0).sum())
    if present == 0:
        return np.full(3, np.nan)
    p = counts.max() / counts.sum()
    return np.array([p, 1.0 / present, 2.0 * p / ((1.0 + p) * present)])



def fold_scores(predictions: np.ndarray, plan: FoldPlan) -> np.ndarray:
    """Metrics of out-of-fold predictions per fold.

    Parameters
    ----------
    predictions : ndarray of int, shape (n_specs, n_images)
    plan : FoldPlan

    Returns
    -------
    ndarray of float64, shape (n_specs, n_folds, 3)
    """
    K = plan.n_classes
    out = np.empty((predictions.shape[0], plan.n_folds, len(METRICS)))
    for f in range(plan.n_folds):
        rows = np.flatnonzero(plan.test_mask(f))
        truth = plan.labels[rows]
        for s in range(predictions.shape[0]):
            out[s, f] = metric_scores(truth, predictions[s, rows], K)
    return out

