"""Which images train and test each fold: one plan shared by every layer, init and classifier."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["FoldPlan"]


@dataclass(frozen=True)
class FoldPlan:
    """Which images train and test each fold.

    Attributes
    ----------
    groups : ndarray of int, shape (n_images,)
        Group of each image; ``-1`` for images not used at all (invalid, unlabeled, non-finite).
    labels : ndarray of int, shape (n_images,)
        Class index of each image (0..n_classes-1; anything for unused images).
    n_classes : int
        Number of classes of the store (class indices are ``0..n_classes-1``).
    train_groups : ndarray of bool, shape (n_folds, n_groups)
        ``train_groups[f, g]``: fold ``f`` trains on group ``g``.
    test_group : ndarray of int, shape (n_folds,)
        The group fold ``f`` is tested on.
    inner : ndarray of int, shape (n_folds, n_images), or None
        Nested cross-validation inside each training fold (``=auto`` classifiers): the inner
        fold of each of fold ``f``'s training images, ``-1`` for every other image
        (:meth:`with_inner`).
    """

    groups: np.ndarray
    labels: np.ndarray
    n_classes: int
    train_groups: np.ndarray
    test_group: np.ndarray
    inner: np.ndarray | None = None

    @classmethod
    def from_test_fold(cls, test_fold: np.ndarray, labels: np.ndarray,
                       n_classes: int) -> FoldPlan:
        """K-fold cross-validation: group = test fold; fold f trains on every other fold.

        Parameters
        ----------
        test_fold : ndarray of int, shape (n_images,)
            Test fold of each image, ``-1`` for unused images.
        """
        folds = int(test_fold.max()) + 1
        train = ~np.eye(folds, dtype=bool)
        return cls(np.asarray(test_fold, dtype=np.int64), np.asarray(labels, dtype=np.int64),
                   int(n_classes), train, np.arange(folds))

    @classmethod
    def from_split(cls, train: np.ndarray, test: np.ndarray, labels: np.ndarray,
                   n_classes: int) -> FoldPlan:
        """One fold: train on the ``train`` images (group 1), test on the ``test`` images (group 0).

        Parameters
        ----------
        train, test : ndarray of bool, shape (n_images,)
            Disjoint masks.
        """
        groups = np.full(len(labels), -1, dtype=np.int64)
        groups[np.asarray(train, dtype=bool)] = 1
        groups[np.asarray(test, dtype=bool)] = 0
        return cls(groups, np.asarray(labels, dtype=np.int64), int(n_classes),
                   np.array([[False, True]]), np.array([0]))

    def with_inner(self, n_inner: int, seed: int) -> FoldPlan:
        """This plan with inner folds: ``StratifiedKFold(n_splits=n_inner, shuffle=True,
        random_state=seed)`` over each fold's training images (in image order).

        Every class must have at least ``n_inner`` training images in every fold (the sweep
        checks this first and names the fold).
        """
        from sklearn.model_selection import StratifiedKFold

        inner = np.full((self.n_folds, self.groups.shape[0]), -1, dtype=np.int64)
        splitter = StratifiedKFold(n_splits=n_inner, shuffle=True, random_state=seed)
        for f in range(self.n_folds):
            rows = np.flatnonzero(self.train_mask(f))
            for q, (_, test) in enumerate(splitter.split(np.zeros(rows.size),
                                                         self.labels[rows])):
                inner[f, rows[test]] = q
        return replace(self, inner=inner)

    @property
    def n_inner(self) -> int:
        """Inner folds per training fold (0 without :attr:`inner`)."""
        return 0 if self.inner is None else int(self.inner.max()) + 1

    @property
    def n_folds(self) -> int:
        return int(self.train_groups.shape[0])

    @property
    def n_groups(self) -> int:
        return int(self.train_groups.shape[1])

    @property
    def used(self) -> np.ndarray:
        """Bool array of shape (n_images,): images that take part in some fold."""
        return self.groups >= 0

    def train_mask(self, fold: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Bool mask of the training images of ``fold`` (over ``rows`` of groups, default all)."""
        groups = self.groups if rows is None else rows
        return (groups >= 0) & self.train_groups[fold][np.maximum(groups, 0)]

    def test_mask(self, fold: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Bool mask of the test images of ``fold``."""
        groups = self.groups if rows is None else rows
        return groups == self.test_group[fold]

    def test_fold(self) -> np.ndarray:
        """Int array of shape (n_images,): the fold each image is tested in, ``-1`` for none."""
        out = np.full(self.groups.shape, -1, dtype=np.int64)
        for f in range(self.n_folds):
            out[self.test_mask(f)] = f
        return out

