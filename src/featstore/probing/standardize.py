"""Training-fold standardization, exactly as :class:`sklearn.preprocessing.StandardScaler`,
and the estimator base class every probe shares (standardization, class encoding)."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

__all__ = ["EPS", "feature_scale", "standardization", "fold_standardization",
           "StandardizedProbe"]

#: float64 machine epsilon
EPS: Final = float(np.finfo(np.float64).eps)


def feature_scale(var: np.ndarray, mean: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard deviation with near-constant features set to 1 (as StandardScaler).

    Parameters
    ----------
    var : ndarray, shape (d,)
        Variance of each feature over the training rows.
    mean : ndarray, shape (d,)
        Mean of each feature on the raw scale (decides what "near-constant" means).
    n : int
        Number of training rows.

    Returns
    -------
    scale : ndarray, shape (d,)
        scikit-learn's ``scale_``: the standard deviation, 1 for near-constant features.
    constant : ndarray of bool, shape (d,)
        The near-constant features (scikit-learn's ``_is_constant_feature`` rule).
    """
    var = np.maximum(var, 0.0)
    scale = np.sqrt(var)
    constant = (var <= n * EPS * var + (n * mean * EPS) ** 2) | (scale < 10 * EPS)
    scale[constant] = 1.0
    return scale, constant


def standardization(X: np.ndarray, offset: np.ndarray | float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of training features, as :class:`sklearn.preprocessing.StandardScaler`.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
        Training rows only (possibly shifted: ``X = raw - offset``).
    offset : ndarray of shape (n_features,) or float
        The shift already subtracted from ``X``; only used to detect near-constant features on
        the raw scale, as scikit-learn does.

    Returns
    -------
    mean, scale : ndarray of float64, shape (n_features,)
        Standardized features are ``(X - mean) / scale``; near-constant features get scale 1.
    """
    mean, scale, _ = fold_standardization(X, offset)
    return mean, scale


def fold_standardization(X: np.ndarray, offset: np.ndarray | float = 0.0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`standardization` plus the multiplier the probes apply: 0 for near-constant features.

    A feature that is constant over the training rows is 0 in every standardized training row,
    so the exact fit gives it no weight and it moves every distance alike; scikit-learn still
    scales a test row's value by 1, and a value far from the training constant (a unit that is
    dead in the training fold and alive in a test image) then meets a weight that is zero only
    up to rounding, which can flip a prediction. featstore multiplies such features by 0: the
    exact answer, free of that rounding.

    Returns
    -------
    mean, scale : ndarray of float64, shape (n_features,)
        As :func:`standardization`.
    inv_scale : ndarray of float64, shape (n_features,)
        ``1 / scale``, and 0 for near-constant features; standardized features are
        ``(X - mean) * inv_scale``.
    """
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    centered = X - mean
    var = (centered**2).mean(axis=0) - (centered.mean(axis=0)) ** 2
    scale, constant = feature_scale(var, mean + offset, X.shape[0])
    return mean, scale, np.where(constant, 0.0, 1.0 / scale)



class StandardizedProbe(ClassifierMixin, BaseEstimator):
    """Shared parts: training standardization and class encoding."""

    def _prepare_fit(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinity")
        classes, y_idx = np.unique(np.asarray(y), return_inverse=True)
        if len(y_idx) != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {len(y_idx)} labels")
        if len(classes) < 2:
            raise ValueError(f"need at least 2 classes to fit, got {len(classes)}")
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        self.mean_, self.scale_, self._inv_scale = fold_standardization(X)
        return X, y_idx

    def _standardize(self, X: Any) -> np.ndarray:
        """``(X - mean_) / scale_`` with near-constant training features set to 0 (see
        :func:`fold_standardization`)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have shape (n, {self.n_features_in_}), got {X.shape}")
        return (X - self.mean_) * self._inv_scale

