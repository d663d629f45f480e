"""k nearest neighbours on training-standardized features, several ``k`` in one sort."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .standardize import StandardizedProbe

__all__ = ["KNNProbe", "knn_predict"]


def knn_predict(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, ks: Sequence[int],
                 n_classes: int, batch: int = 1024) -> np.ndarray:
    """Majority vote of the k nearest training rows (Euclidean), for several k at once.

    Neighbours are sorted once for the largest k; vote ties go to the lowest class index
    (scikit-learn's ``argmax`` of ``predict_proba``).

    Parameters
    ----------
    train : ndarray, shape (n_train, d)
    train_y : ndarray of int, shape (n_train,)
    test : ndarray, shape (n_test, d)
    ks : sequence of int
        Each <= n_train.
    n_classes : int
    batch : int
        Test rows per distance block (memory ``batch * n_train``).

    Returns
    -------
    ndarray of int, shape (len(ks), n_test)
    """
    kmax = max(ks)
    out = np.empty((len(ks), test.shape[0]), dtype=np.int64)
    train_sq = np.einsum("nd,nd->n", train, train)
    eye = np.eye(n_classes, dtype=np.int32)
    for start in range(0, test.shape[0], batch):
        block = test[start:start + batch]
        dist = train_sq[None, :] - 2.0 * (block @ train.T)  # + ||x||^2, constant per row
        if kmax < train.shape[0]:
            near = np.argpartition(dist, kmax - 1, axis=1)[:, :kmax]
        else:
            near = np.broadcast_to(np.arange(train.shape[0]), dist.shape).copy()
        order = np.argsort(np.take_along_axis(dist, near, axis=1), axis=1, kind="stable")
        near = np.take_along_axis(near, order, axis=1)
        votes = np.cumsum(eye[train_y[near]], axis=1)  # (b, kmax, K)
        for i, k in enumerate(ks):
            out[i, start:start + block.shape[0]] = votes[:, k - 1, :].argmax(axis=1)
    return out


class KNNProbe(StandardizedProbe):
    """k-nearest-neighbour vote (Euclidean, uniform weights) on training-standardized features.

    Equals :class:`sklearn.neighbors.KNeighborsClassifier` with its defaults.

    Parameters
    ----------
    n_neighbors : int

    Attributes
    ----------
    classes_, mean_, scale_
        As :class:`LogisticProbe`.
    """

    def __init__(self, n_neighbors: int = 5) -> None:
        self.n_neighbors = n_neighbors

    def fit(self, X: Any, y: Any) -> KNNProbe:
        """Remember the standardized training rows ``X`` (shape (n_samples, n_features))."""
        X, y_idx = self._prepare_fit(X, y)
        if not 1 <= self.n_neighbors <= X.shape[0]:
            raise ValueError(f"n_neighbors={self.n_neighbors} must be in [1, {X.shape[0]}]")
        self._train = self._standardize(X)
        self._train_y = y_idx
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels, shape (n_samples,)."""
        pred = knn_predict(self._train, self._train_y, self._standardize(X),
                            [self.n_neighbors], len(self.classes_))
        return self.classes_[pred[0]]

