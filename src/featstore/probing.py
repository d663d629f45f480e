"""Probe classifiers and per-block fit/score: pure compute, NumPy in and NumPy out.

Every classifier works on features standardized with statistics of its *training* rows only
(mean and population standard deviation, near-constant features scaled by 1, exactly as
:class:`sklearn.preprocessing.StandardScaler`), so each one equals the scikit-learn pipeline
``Pipeline([StandardScaler(), <estimator>])``:

=====================  ===============================================  ====================
name                   scikit-learn equivalent                          parameters
=====================  ===============================================  ====================
``logreg``             ``LogisticRegression(C=C)`` (multinomial, L2)     ``C`` (default 1)
``linear-svm``         ``LinearSVC(C=C)`` (squared hinge, one-vs-rest)   ``C`` (default 1)
``ridge``              ``RidgeClassifier(alpha=alpha)``                  ``alpha`` (default 1)
``knn``                ``KNeighborsClassifier(n_neighbors=k)``           ``k`` (default 5)
``nearest-centroid``   ``NearestCentroid()``                             none
=====================  ===============================================  ====================

Two ways in:

* the estimators (:class:`LogisticProbe`, :class:`LinearSVMProbe`, :class:`RidgeProbe`,
  :class:`KNNProbe`, :class:`NearestCentroidProbe`) follow the scikit-learn contract
  (``fit``/``predict``/``score``, ``get_params``/``set_params``, :func:`sklearn.base.clone`);
* :func:`probe_block` evaluates many classifiers on every fold of one (init, layer) block at once,
  sharing work between them: fold statistics are computed once per fold, all folds and all ``C``
  values of a linear model are solved together by one batched L-BFGS whose matrix products cover
  every problem at once (each fold's standardization is folded into the weights, so the raw
  block is multiplied once per iteration), preconditioned with the leading eigenvectors of each
  fold's training covariance; kNN sorts neighbours once per fold for all ``k``; ridge and
  nearest-centroid are fit from sufficient statistics (:func:`group_stats`), which the sweep can
  also accumulate chunk by chunk with bounded memory.

The iterative solvers stop on scikit-learn's lbfgs criterion (largest absolute gradient entry of
the mean-loss objective ``<= tol``); they reach the same optimum as scikit-learn, but by another
path, so at a loose ``tol`` individual predictions may differ where the optimum is flat (large
``C``); solved tightly both agree exactly (see the tests). The default ``tol`` (1e-6,
:data:`featstore.config.DEFAULT_TOL`) is tight enough for that.

The folds are described by a :class:`FoldPlan` over all images of the store: each image belongs
to one *group* (``-1``: not used), fold ``f`` trains on the groups ``train_groups[f]`` and tests on
group ``test_group[f]``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassifierMixin

from .config import DEFAULT_MAX_ITER, DEFAULT_TOL
from .errors import ProbeInputError

__all__ = [
    "METRICS",
    "KINDS",
    "ClassifierSpec",
    "parse_classifier",
    "parse_classifiers",
    "FoldPlan",
    "BlockResult",
    "GroupStats",
    "LogisticProbe",
    "LinearSVMProbe",
    "RidgeProbe",
    "KNNProbe",
    "NearestCentroidProbe",
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

#: metrics reported for every fold, in this order
METRICS: Final[tuple[str, ...]] = ("accuracy", "balanced_accuracy", "macro_f1")

_EPS: Final = float(np.finfo(np.float64).eps)

# ---------------------------------------------------------------------------------------------
# classifier specs


@dataclass(frozen=True)
class _Kind:
    estimator: str
    params: tuple[tuple[str, type, float | int], ...]  # (name in the spec, type, default)
    stats: bool  # fit from sufficient statistics


#: classifier kinds, their parameters (name, type, default) and whether sums suffice to fit them
KINDS: Final[dict[str, _Kind]] = {
    "logreg": _Kind("LogisticProbe", (("C", float, 1.0),), False),
    "linear-svm": _Kind("LinearSVMProbe", (("C", float, 1.0),), False),
    "ridge": _Kind("RidgeProbe", (("alpha", float, 1.0),), True),
    "knn": _Kind("KNNProbe", (("k", int, 5),), False),
    "nearest-centroid": _Kind("NearestCentroidProbe", (), True),
}


def _format_value(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return format(value, "g") if float(value) != int(value) or abs(value) >= 1e16 else str(
        int(value))


def _allowed_classifiers() -> str:
    parts = []
    for name, kind in KINDS.items():
        params = "".join(f"[:{p}=V1,V2,...]" for p, _, _ in kind.params)
        parts.append(name + params)
    return ", ".join(parts)


@dataclass(frozen=True)
class ClassifierSpec:
    """One classifier row: a kind and one value per parameter.

    Attributes
    ----------
    kind : str
        A key of :data:`KINDS`, e.g. ``"logreg"``.
    params : tuple of (str, float or int)
        Parameter values in the kind's order, e.g. ``(("C", 0.1),)``.
    """

    kind: str
    params: tuple[tuple[str, float | int], ...] = ()

    @property
    def name(self) -> str:
        """Canonical row name, e.g. ``"logreg:C=0.1"``, ``"knn:k=5"``, ``"nearest-centroid"``."""
        return ":".join([self.kind, *(f"{p}={_format_value(v)}" for p, v in self.params)])

    def param(self, name: str) -> Any:
        return dict(self.params)[name]

    @property
    def uses_stats(self) -> bool:
        """Whether this classifier is fit from sufficient statistics (ridge, nearest centroid)."""
        return KINDS[self.kind].stats

    def estimator(self) -> BaseEstimator:
        """A fresh, unfitted estimator with these parameters."""
        if self.kind == "logreg":
            return LogisticProbe(C=self.param("C"))
        if self.kind == "linear-svm":
            return LinearSVMProbe(C=self.param("C"))
        if self.kind == "ridge":
            return RidgeProbe(alpha=self.param("alpha"))
        if self.kind == "knn":
            return KNNProbe(n_neighbors=self.param("k"))
        return NearestCentroidProbe()


def _parse_number(kind: str, param: str, typ: type, text: str) -> float | int:
    bad = ProbeInputError(
        f"invalid --classifier value {kind}:{param}={text!r}; {param} must be "
        + ("an integer >= 1" if typ is int else "a number > 0")
        + f"; allowed: {_allowed_classifiers()}"
    )
    try:
        value: float | int = int(text) if typ is int else float(text)
    except ValueError:
        raise bad from None
    if typ is float and (not math.isfinite(value) or value <= 0):
        raise bad
    if typ is int and value < 1:
        raise bad
    return value


def parse_classifier(value: str) -> tuple[ClassifierSpec, ...]:
    """Parse one ``--classifier`` value into one spec per parameter combination.

    Grammar: ``KIND[:PARAM=V1,V2,...[:PARAM2=...]]``; several values of a parameter (and several
    parameters) give the Cartesian product, in the order written.

    Parameters
    ----------
    value : str
        E.g. ``"logreg"``, ``"logreg:C=0.01,0.1,1,10"``, ``"knn:k=1,5"``.

    Returns
    -------
    tuple of ClassifierSpec
        E.g. four specs ``logreg:C=0.01`` ... ``logreg:C=10``.

    Raises
    ------
    ProbeInputError
        Unknown kind or parameter, or a bad value; the message lists what is allowed.
    """
    text = value.strip()
    kind_name, _, rest = text.partition(":")
    kind_name = kind_name.strip().lower().replace("_", "-")
    if kind_name not in KINDS:
        raise ProbeInputError(
            f"unknown --classifier {value!r}; allowed: {_allowed_classifiers()}"
        )
    kind = KINDS[kind_name]
    known = {name: (typ, default) for name, typ, default in kind.params}
    given: dict[str, list[float | int]] = {}
    if rest.strip():
        for part in re.split(r":(?=[A-Za-z_]\w*=)", rest.strip()):
            pname, eq, values = part.partition("=")
            pname = pname.strip()
            if not eq or pname not in known:
                allowed = ", ".join(known) or "none"
                raise ProbeInputError(
                    f"unknown parameter {pname!r} in --classifier {value!r}; parameters of "
                    f"{kind_name}: {allowed}; allowed: {_allowed_classifiers()}"
                )
            typ = known[pname][0]
            items = [v.strip() for v in values.split(",") if v.strip()]
            if not items:
                raise ProbeInputError(
                    f"invalid --classifier {value!r}: no value for {pname}; e.g. "
                    f"{kind_name}:{pname}={_format_value(known[pname][1])}"
                )
            given[pname] = [_parse_number(kind_name, pname, typ, v) for v in items]
    combos: list[tuple[tuple[str, float | int], ...]] = [()]
    for pname, typ, default in kind.params:
        values_ = given.get(pname, [typ(default)])
        combos = [(*c, (pname, v)) for c in combos for v in values_]
    return tuple(ClassifierSpec(kind_name, c) for c in combos)


def parse_classifiers(values: Sequence[str] | str) -> tuple[ClassifierSpec, ...]:
    """Parse several ``--classifier`` values; duplicate rows are dropped (first one kept).

    Raises
    ------
    ProbeInputError
        See :func:`parse_classifier`, or when no classifier is given.
    """
    items = [values] if isinstance(values, str) else list(values)
    specs: dict[str, ClassifierSpec] = {}
    for item in items:
        for spec in parse_classifier(item):
            specs.setdefault(spec.name, spec)
    if not specs:
        raise ProbeInputError(f"no --classifier given; allowed: {_allowed_classifiers()}")
    return tuple(specs.values())


# ---------------------------------------------------------------------------------------------
# folds, metrics


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
    """

    groups: np.ndarray
    labels: np.ndarray
    n_classes: int
    train_groups: np.ndarray
    test_group: np.ndarray

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


# ---------------------------------------------------------------------------------------------
# standardization


def _scale(var: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """Standard deviation with near-constant features set to 1 (as StandardScaler)."""
    var = np.maximum(var, 0.0)
    constant = var <= n * _EPS * var + (n * mean * _EPS) ** 2
    scale = np.sqrt(var)
    scale[constant | (scale < 10 * _EPS)] = 1.0
    return scale


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
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    centered = X - mean
    var = (centered**2).mean(axis=0) - (centered.mean(axis=0)) ** 2
    return mean, _scale(var, mean + offset, X.shape[0])


# ---------------------------------------------------------------------------------------------
# batched linear models (multinomial logistic regression, squared-hinge linear SVM)


#: eigenpairs kept per fold for the L-BFGS preconditioner (all of them up to twice this)
_PRECOND_RANK: Final = 128
#: curvature of each loss per unit of feature variance, relative to the L2 strength, used to
#: weigh the data term against the penalty in the preconditioner (a rough, fixed guess: only
#: the speed of convergence depends on it, never the optimum)
_CURVATURE: Final = {"multinomial": 0.05, "squared_hinge": 0.5}


@dataclass(frozen=True)
class _Spectrum:
    """Leading eigenpairs of each fold's standardized training Gram matrix ``Xs^T Xs / n``.

    Attributes
    ----------
    basis : ndarray, shape (F, d, k)
        Orthonormal eigenvectors.
    values : ndarray, shape (F, k)
        Their eigenvalues.
    rest : ndarray, shape (F,)
        Mean eigenvalue of the orthogonal complement (0 when k = d).
    """

    basis: np.ndarray
    values: np.ndarray
    rest: np.ndarray


def _fold_spectra(Xc: np.ndarray, train: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                  rank: int = _PRECOND_RANK) -> _Spectrum:
    """Eigen-structure of every fold's standardized training features (training rows only).

    Rows are grouped by the folds they train (for K folds: by test fold), the Gram matrix of
    each group is computed once, and fold ``f`` sums the groups it trains on. Small layers get
    an exact eigendecomposition; larger ones the top ``rank`` pairs by randomized subspace
    iteration (fixed seed, so results are deterministic).

    Parameters
    ----------
    Xc : ndarray, shape (n, d)
    train : ndarray of bool, shape (F, n)
    mean, scale : ndarray, shape (F, d)
        Training standardization of ``Xc`` per fold.
    rank : int
    """
    F, d = train.shape[0], Xc.shape[1]
    patterns, atom = np.unique(train.T, axis=0, return_inverse=True)
    atom = np.ravel(atom)
    X32 = Xc.astype(np.float32)
    grams: dict[int, np.ndarray] = {}
    for a, pattern in enumerate(patterns):
        if pattern.any():
            rows = X32[atom == a]
            grams[a] = (rows.T @ rows).astype(np.float64)
    k = d if d <= 2 * rank else rank
    basis = np.empty((F, d, k))
    values = np.empty((F, k))
    rest = np.zeros(F)
    rng = np.random.default_rng(0)
    for f in range(F):
        n_f = float(train[f].sum())
        G = sum(grams[a] for a in grams if patterns[a, f])
        G = (G / n_f - np.outer(mean[f], mean[f])) / np.outer(scale[f], scale[f])
        if k == d:
            vals, vecs = np.linalg.eigh(G)
        else:
            Q = np.linalg.qr(G @ rng.standard_normal((d, k + 16)))[0]
            for _ in range(2):
                Q = np.linalg.qr(G @ Q)[0]
            vals, small = np.linalg.eigh(Q.T @ G @ Q)
            vals, vecs = vals[-k:], Q @ small[:, -k:]
            rest[f] = max(float(np.trace(G) - vals.sum()) / (d - k), 0.0)
        basis[f] = vecs
        values[f] = np.maximum(vals, 0.0)
    return _Spectrum(basis, values, rest)


@dataclass(frozen=True)
class _LinearProblems:
    """A batch of independent linear problems on one matrix ``Xc`` (shape (n, d)).

    Problem ``p`` fits weights W (T, d) and biases b (T) on the rows weighted by
    ``weights[fold[p]]`` (1/n_train on training rows, 0 elsewhere) and the features
    ``(Xc - mean[fold[p]]) * inv_scale[fold[p]]``, with L2 strength ``lam[p]``. The
    standardization is folded into the weights, so one matrix product over ``Xc`` serves every
    problem; work arrays are laid out (T, p, n) so that sums over classes add whole slabs.
    """

    Xc: np.ndarray  # (n, d)
    targets: np.ndarray  # (T, n): one-hot (multinomial) or +-1 (hinge)
    weights: np.ndarray  # (F, n)
    mean: np.ndarray  # (F, d)
    inv_scale: np.ndarray  # (F, d)
    fold: np.ndarray  # (P,)
    lam: np.ndarray  # (P,)
    loss: str  # "multinomial" | "squared_hinge"
    spectrum: _Spectrum | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.targets.shape[0], self.Xc.shape[1]

    def precondition(self, q: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Apply an approximate inverse Hessian to parameter rows ``q`` (shape (p, D)).

        The Hessian of problem ``p`` is approximated by ``c * G_f + lam_p * I`` on the weights
        (``G_f``: the fold's standardized training Gram matrix, ``c``: a fixed curvature per
        unit variance) and ``c + lam_p`` (hinge) or ``c`` (logistic) on the biases; ``G_f`` is
        used through its leading eigenpairs plus the mean of the remaining eigenvalues.
        """
        spec = self.spectrum
        if spec is None:
            return q
        c = _CURVATURE[self.loss]
        W, b = self.split(q)
        lam = self.lam[idx]
        folds = self.fold[idx]
        out_w = np.empty_like(W)
        for f in np.unique(folds):
            sel = np.flatnonzero(folds == f)
            U = spec.basis[f]
            inv_rest = 1.0 / (c * spec.rest[f] + lam[sel])  # (ps,)
            inv_top = 1.0 / (c * spec.values[f][None, :] + lam[sel][:, None])  # (ps, k)
            proj = W[sel] @ U  # (ps, T, k)
            proj *= (inv_top - inv_rest[:, None])[:, None, :]
            out_w[sel] = W[sel] * inv_rest[:, None, None] + proj @ U.T
        bias_lam = lam if self.loss == "squared_hinge" else np.zeros_like(lam)
        out_b = b / (c + bias_lam)[:, None]
        return np.concatenate([out_w.reshape(len(idx), -1), out_b], axis=1)

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights (p, T, d) and biases (p, T) of parameter rows ``x`` (shape (p, D))."""
        t, d = self.shape
        return x[:, : t * d].reshape(-1, t, d), x[:, t * d:]

    def decision(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Decision values of every row for problems ``idx``, shape (T, p, n)."""
        W, b = self.split(x)
        folds = self.fold[idx]
        V = W * self.inv_scale[folds][:, None, :]  # (p, T, d): weights on raw Xc
        offset = b - np.einsum("pd,ptd->pt", self.mean[folds], V)
        t, d = self.shape
        V = np.ascontiguousarray(V.transpose(1, 0, 2)).reshape(t * len(idx), d)
        Z = (V @ self.Xc.T).reshape(t, len(idx), -1)
        Z += offset.T[:, :, None]
        return Z

    def loss_grad(self, x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Objective and gradient of problems ``idx`` at ``x`` (shape (p, D))."""
        W, b = self.split(x)
        folds = self.fold[idx]
        lam = self.lam[idx]
        w = self.weights[folds]  # (p, n)
        Y = self.targets[:, None, :]  # (T, 1, n)
        R = self.decision(x, idx)  # (T, p, n), overwritten in place below
        if self.loss == "multinomial":
            top = R[0].copy()
            for k in range(1, R.shape[0]):
                np.maximum(top, R[k], out=top)
            R -= top
            true = (R * Y).sum(axis=0)
            np.exp(R, out=R)
            sums = R.sum(axis=0)
            f = ((np.log(sums) - true) * w).sum(axis=1)
            R /= sums
            R -= Y
            R *= w
            penalty = 0.5 * lam * (W**2).sum(axis=(1, 2))
            gb = R.sum(axis=2).T
        else:
            R *= Y
            np.subtract(1.0, R, out=R)
            np.maximum(R, 0.0, out=R)
            f = (R**2 * w).sum(axis=(0, 2))
            R *= Y
            R *= w
            R *= -2.0
            penalty = 0.5 * lam * ((W**2).sum(axis=(1, 2)) + (b**2).sum(axis=1))
            gb = R.sum(axis=2).T + lam[:, None] * b
        t, d = self.shape
        G = (R.reshape(t * len(idx), -1) @ self.Xc).reshape(t, len(idx), d).transpose(1, 0, 2)
        sum_r = R.sum(axis=2).T  # (p, T)
        G = (G - sum_r[:, :, None] * self.mean[folds][:, None, :]) * \
            self.inv_scale[folds][:, None, :] + lam[:, None, None] * W
        grad = np.concatenate([G.reshape(len(idx), -1), gb], axis=1)
        return f + penalty, grad


def _two_loop(g: np.ndarray, S: np.ndarray, Y: np.ndarray, rho: np.ndarray, count: np.ndarray,
              head: np.ndarray, yhy: np.ndarray,
              precond: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """L-BFGS two-loop recursion for a batch of problems (rows of ``g``).

    The initial inverse Hessian is ``gamma * H0`` with ``H0 = precond`` and ``gamma = s.y /
    y.H0.y`` of the newest pair (``yhy`` holds ``y.H0.y``).
    """
    m = S.shape[1]
    rows = np.arange(g.shape[0])
    q = g.copy()
    alphas = np.zeros((g.shape[0], m))
    for j in range(m):
        slot = (head - 1 - j) % m
        r = rho[rows, slot] * (j < count)
        a = r * np.einsum("pd,pd->p", S[rows, slot], q)
        alphas[:, j] = a
        q -= a[:, None] * Y[rows, slot]
    newest = (head - 1) % m
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where((count > 0) & (yhy > 0), 1.0 / (rho[rows, newest] * yhy), 1.0)
    r = gamma[:, None] * precond(q)
    for j in reversed(range(m)):
        slot = (head - 1 - j) % m
        rr = rho[rows, slot] * (j < count)
        beta = rr * np.einsum("pd,pd->p", Y[rows, slot], r)
        r += S[rows, slot] * ((alphas[:, j] - beta) * (j < count))[:, None]
    return r


def _lbfgs(fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
           x0: np.ndarray, tol: float, max_iter: int, history: int = 10,
           max_ls: int = 40,
           precond: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimize independent smooth convex objectives together (batched L-BFGS).

    Each problem has its own curvature history, step length (backtracking Armijo line search
    with safeguarded quadratic interpolation) and stopping test; every evaluation covers all
    still-active problems in one call, so the caller can use one matrix product for all of them.
    A problem stops when its gradient's largest absolute entry is ``<= tol`` (scikit-learn's
    ``gtol``), when its objective's relative decrease falls below ``64 * eps`` (its ``ftol``),
    or after ``max_iter`` iterations.

    Parameters
    ----------
    fun : callable
        ``fun(x, idx) -> (f, g)`` with ``x`` of shape (p, D) for problems ``idx`` (shape (p,)),
        ``f`` of shape (p,) and ``g`` of shape (p, D).
    x0 : ndarray, shape (P, D)
    tol : float
    max_iter : int
    history : int
        Number of correction pairs kept per problem.
    max_ls : int
        Line-search trials per iteration.
    precond : callable, optional
        ``precond(v, idx)``: an approximate inverse Hessian applied to rows ``v`` (shape
        (p, D)) of problems ``idx``; it shapes the initial matrix of the recursion and changes
        only how fast the optimum is reached. Default the identity.

    Returns
    -------
    x : ndarray, shape (P, D)
    n_iter : ndarray of int, shape (P,)
    converged : ndarray of bool, shape (P,)
        Whether the gradient test was met.
    """
    P, D = x0.shape
    x = np.array(x0, dtype=np.float64)
    every = np.arange(P)
    f, g = fun(x, every)
    S = np.zeros((P, history, D))
    Y = np.zeros((P, history, D))
    rho = np.zeros((P, history))
    yhy = np.zeros(P)
    count = np.zeros(P, dtype=np.int64)
    head = np.zeros(P, dtype=np.int64)
    n_iter = np.zeros(P, dtype=np.int64)

    def apply(v: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return v if precond is None else precond(v, idx)

    converged = np.abs(g).max(axis=1) <= tol
    active = ~converged & (max_iter > 0)
    c1 = 1e-4
    while active.any():
        A = np.flatnonzero(active)
        gA = g[A]
        d = -_two_loop(gA, S[A], Y[A], rho[A], count[A], head[A], yhy[A],
                       partial(apply, idx=A))
        gd = np.einsum("pd,pd->p", gA, d)
        bad = ~(gd < 0)
        if bad.any():
            d[bad] = -apply(gA[bad], A[bad])
            gd[bad] = np.einsum("pd,pd->p", gA[bad], d[bad])
            count[A[bad]] = 0
        fresh = count[A] == 0
        t = np.ones(len(A))
        t[fresh] = np.minimum(1.0, 1.0 / np.maximum(np.linalg.norm(d[fresh], axis=1), 1e-300))
        pending = np.arange(len(A))
        accepted = np.zeros(len(A), dtype=bool)
        f_new = np.empty(len(A))
        g_new = np.empty_like(gA)
        for _ in range(max_ls):
            idx = A[pending]
            xt = x[idx] + t[pending, None] * d[pending]
            ft, gt = fun(xt, idx)
            ok = np.isfinite(ft) & (ft <= f[idx] + c1 * t[pending] * gd[pending])
            take = pending[ok]
            accepted[take] = True
            f_new[take] = ft[ok]
            g_new[take] = gt[ok]
            rest = pending[~ok]
            if rest.size == 0:
                break
            # safeguarded minimizer of the quadratic through f(0), f'(0), f(t)
            tr = t[rest]
            fr = ft[~ok]
            curv = fr - f[A[rest]] - tr * gd[rest]
            with np.errstate(divide="ignore", invalid="ignore"):
                tq = -gd[rest] * tr**2 / (2.0 * curv)
            tq = np.where(np.isfinite(tq) & (curv > 0), tq, 0.5 * tr)
            t[rest] = np.clip(tq, 0.1 * tr, 0.5 * tr)
            pending = rest
        ok_idx = np.flatnonzero(accepted)
        stalled = A[~accepted]
        active[stalled] = False
        P_ok = A[ok_idx]
        s = t[ok_idx, None] * d[ok_idx]
        yv = g_new[ok_idx] - g[P_ok]
        sy = np.einsum("pd,pd->p", s, yv)
        upd = sy > 1e-10 * np.einsum("pd,pd->p", yv, yv)
        P_upd = P_ok[upd]
        slots = head[P_upd]
        S[P_upd, slots] = s[upd]
        Y[P_upd, slots] = yv[upd]
        rho[P_upd, slots] = 1.0 / sy[upd]
        if P_upd.size:
            yhy[P_upd] = np.einsum("pd,pd->p", yv[upd], apply(yv[upd], P_upd))
        head[P_upd] = (slots + 1) % history
        count[P_upd] = np.minimum(count[P_upd] + 1, history)
        f_old = f[P_ok]
        x[P_ok] += s
        f[P_ok] = f_new[ok_idx]
        g[P_ok] = g_new[ok_idx]
        n_iter[P_ok] += 1
        conv = np.abs(g[P_ok]).max(axis=1) <= tol
        converged[P_ok] = conv
        tiny = (f_old - f[P_ok]) <= 64 * _EPS * np.maximum(
            np.maximum(np.abs(f_old), np.abs(f[P_ok])), 1.0)
        done = conv | tiny | (n_iter[P_ok] >= max_iter)
        active[P_ok[done]] = False
    return x, n_iter, converged


def _linear_targets(y: np.ndarray, n_classes: int, loss: str) -> np.ndarray:
    """Targets of shape (T, n): one-hot rows, or +-1 (one row for two classes, else one-vs-rest)."""
    if loss == "multinomial":
        return np.ascontiguousarray(np.eye(n_classes)[y].T)
    if n_classes == 2:
        return np.where(y == 1, 1.0, -1.0)[None, :]
    return np.ascontiguousarray(np.where(np.eye(n_classes, dtype=bool)[y], 1.0, -1.0).T)


def _predict_linear(Z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Class indices from decision values: argmax along ``axis``, or the sign when it has size 1."""
    if Z.shape[axis] == 1:
        return (np.take(Z, 0, axis=axis) > 0).astype(np.int64)
    return Z.argmax(axis=axis)


def _solve_linear(Xc: np.ndarray, y: np.ndarray, n_classes: int, loss: str,
                  train: np.ndarray, Cs: Sequence[float], tol: float, max_iter: int,
                  fold_stats: tuple[np.ndarray, np.ndarray] | None = None,
                  precondition: bool = True,
                  ) -> tuple[_LinearProblems, np.ndarray, np.ndarray]:
    """Fit every (fold, C) problem of one linear model together.

    Parameters
    ----------
    Xc : ndarray, shape (n, d)
        Features of the used images (any fixed shift of the raw features).
    y : ndarray of int, shape (n,)
    n_classes : int
    loss : {"multinomial", "squared_hinge"}
    train : ndarray of bool, shape (F, n)
        Training rows of each fold.
    Cs : sequence of float
        Inverse regularization strengths (scikit-learn's ``C``).
    fold_stats : (mean, scale), each of shape (F, d), optional
        Training standardization per fold; computed from ``train`` when omitted.
    precondition : bool
        Precondition L-BFGS with each fold's training feature covariance
        (:meth:`_LinearProblems.precondition`): same optimum, far fewer iterations on
        correlated features.

    Returns
    -------
    problems : _LinearProblems
        Problem ``p = f * len(Cs) + q`` is fold ``f`` with ``Cs[q]``.
    x : ndarray, shape (F * len(Cs), D)
        Solutions.
    n_iter : ndarray of int, shape (F * len(Cs),)
    """
    F = train.shape[0]
    n_train = train.sum(axis=1).astype(np.float64)
    if fold_stats is None:
        stats = [standardization(Xc[train[f]]) for f in range(F)]
        mean = np.stack([m for m, _ in stats])
        scale = np.stack([s for _, s in stats])
    else:
        mean, scale = fold_stats
    targets = _linear_targets(y, n_classes, loss)
    T = targets.shape[0]
    Cs_arr = np.asarray(Cs, dtype=np.float64)
    fold = np.repeat(np.arange(F), len(Cs_arr))
    C = np.tile(Cs_arr, F)
    # scikit-learn minimizes mean(loss) + ||W||^2 / (2 C n); binary logistic regression has one
    # weight vector w where a two-class multinomial has w1 = -w2 = w / 2, hence the factor 2.
    factor = 2.0 if (loss == "multinomial" and n_classes == 2) else 1.0
    lam = factor / (C * n_train[fold])
    problems = _LinearProblems(
        Xc=Xc, targets=targets, weights=train / n_train[:, None], mean=mean,
        inv_scale=1.0 / scale, fold=fold, lam=lam, loss=loss,
        spectrum=_fold_spectra(Xc, train, mean, scale) if precondition else None,
    )
    D = (Xc.shape[1] + 1) * T
    x, n_iter, _ = _lbfgs(problems.loss_grad, np.zeros((len(fold), D)), tol, max_iter,
                          precond=problems.precondition if precondition else None)
    return problems, x, n_iter


class _StandardizedProbe(ClassifierMixin, BaseEstimator):
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
        self.mean_, self.scale_ = standardization(X)
        return X, y_idx

    def _standardize(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have shape (n, {self.n_features_in_}), got {X.shape}")
        return (X - self.mean_) / self.scale_


class _LinearProbe(_StandardizedProbe):
    _loss: str = "multinomial"
    C: float
    tol: float
    max_iter: int

    def fit(self, X: Any, y: Any) -> _LinearProbe:
        """Fit on training features ``X`` (shape (n_samples, n_features)) and labels ``y``."""
        X, y_idx = self._prepare_fit(X, y)
        train = np.ones((1, X.shape[0]), dtype=bool)
        stats = (self.mean_[None], self.scale_[None])
        problems, x, n_iter = _solve_linear(X, y_idx, len(self.classes_), self._loss, train,
                                            [self.C], self.tol, self.max_iter, stats)
        W, b = problems.split(x)
        self.coef_ = W[0].copy()  # (T, d) on standardized features
        self.intercept_ = b[0].copy()
        self.n_iter_ = int(n_iter[0])
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Decision values, shape (n_samples, T) (T = 1 for a binary linear SVM)."""
        Z = self._standardize(X) @ self.coef_.T + self.intercept_
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels, shape (n_samples,)."""
        Z = self._standardize(X) @ self.coef_.T + self.intercept_
        return self.classes_[_predict_linear(Z)]


class LogisticProbe(_LinearProbe):
    """Multinomial L2 logistic regression on training-standardized features.

    Minimizes ``mean(cross-entropy) + ||W||^2 / (2 C n)`` (intercepts unpenalized), the
    objective of :class:`sklearn.linear_model.LogisticRegression` with the lbfgs solver (binary
    problems use the equivalent two-class parametrization). Solved by L-BFGS to a gradient
    tolerance ``tol``.

    Parameters
    ----------
    C : float
        Inverse regularization strength.
    tol : float
        Stop when the largest absolute gradient entry is ``<= tol`` (default 1e-6, tighter
        than scikit-learn's 1e-4: see :data:`featstore.config.DEFAULT_TOL`).
    max_iter : int
        Iteration limit.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    mean_, scale_ : ndarray of shape (n_features,)
        Training standardization.
    coef_ : ndarray of shape (n_classes, n_features)
        Weights on standardized features.
    intercept_ : ndarray of shape (n_classes,)
    n_iter_ : int
    """

    _loss = "multinomial"

    def __init__(self, C: float = 1.0, tol: float = DEFAULT_TOL,
                 max_iter: int = DEFAULT_MAX_ITER) -> None:
        self.C = C
        self.tol = tol
        self.max_iter = max_iter


class LinearSVMProbe(_LinearProbe):
    """Linear SVM (squared hinge, L2, one-vs-rest) on training-standardized features.

    The objective of :class:`sklearn.svm.LinearSVC` with its defaults, per class:
    ``||w||^2 / 2 + C sum(max(0, 1 - y (w x + b))^2)`` with the intercept penalized like a weight
    (liblinear's ``intercept_scaling=1``); solved in the primal by L-BFGS on the objective
    divided by ``C n``.

    Parameters
    ----------
    C : float
    tol : float
        Gradient tolerance on the scaled objective.
    max_iter : int

    Attributes
    ----------
    classes_, mean_, scale_, n_iter_
        As :class:`LogisticProbe`.
    coef_ : ndarray of shape (T, n_features)
        T = 1 for two classes, else n_classes.
    intercept_ : ndarray of shape (T,)
    """

    _loss = "squared_hinge"

    def __init__(self, C: float = 1.0, tol: float = DEFAULT_TOL / 10,
                 max_iter: int = DEFAULT_MAX_ITER) -> None:
        self.C = C
        self.tol = tol
        self.max_iter = max_iter


# ---------------------------------------------------------------------------------------------
# sufficient statistics: ridge and nearest centroid


@dataclass
class GroupStats:
    """Sums over the images of each group, enough to fit ridge and nearest centroid.

    All sums are of the shifted features ``x - shift`` (a fixed vector, which keeps the
    subtraction in the variance and Gram matrix accurate).

    Attributes
    ----------
    shift : ndarray, shape (d,)
    counts : ndarray of int, shape (G, K)
        Images per group and class.
    sums : ndarray, shape (G, K, d)
        Sum of shifted features per group and class.
    sumsq : ndarray, shape (G, d)
        Sum of squared shifted features per group.
    gram : ndarray, shape (G, d, d), or None
        Sum of outer products per group (only when a ridge classifier needs it).
    """

    shift: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    sumsq: np.ndarray
    gram: np.ndarray | None


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
        Also accumulate the Gram matrix per group (memory ``G * d * d``).

    Returns
    -------
    GroupStats
    """
    d = X.shape[1]
    counts = np.zeros((n_groups, n_classes), dtype=np.int64)
    sums = np.zeros((n_groups, n_classes, d))
    sumsq = np.zeros((n_groups, d))
    grams = np.zeros((n_groups, d, d)) if gram else None
    for g in range(n_groups):
        rows = np.flatnonzero(groups == g)
        if rows.size == 0:
            continue
        Xg = np.asarray(X[rows], dtype=np.float64) - shift
        yg = labels[rows]
        counts[g] = np.bincount(yg, minlength=n_classes)
        sums[g] = np.eye(n_classes)[yg].T @ Xg
        sumsq[g] = (Xg**2).sum(axis=0)
        if grams is not None:
            grams[g] = Xg.T @ Xg
    return GroupStats(np.asarray(shift, dtype=np.float64), counts, sums, sumsq, grams)


def merge_stats(a: GroupStats, b: GroupStats) -> GroupStats:
    """Sum of two chunks' statistics (same shift)."""
    gram = None if a.gram is None or b.gram is None else a.gram + b.gram
    return GroupStats(a.shift, a.counts + b.counts, a.sums + b.sums, a.sumsq + b.sumsq, gram)


@dataclass(frozen=True)
class _StatsModel:
    """Per fold: standardization and a linear decision ``((x - shift - m) / s) @ coef + b``."""

    mean: np.ndarray  # (F, d) shifted mean
    scale: np.ndarray  # (F, d)
    coef: np.ndarray  # (F, d, T)
    intercept: np.ndarray  # (F, T)
    kind: str  # "ridge" | "centroid"


def _fold_moments(stats: GroupStats, fold_groups: np.ndarray
                  ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    counts = stats.counts[fold_groups].sum(axis=0)  # (K,)
    n = float(counts.sum())
    class_sums = stats.sums[fold_groups].sum(axis=0)  # (K, d)
    mean = class_sums.sum(axis=0) / n
    var = stats.sumsq[fold_groups].sum(axis=0) / n - mean**2
    scale = _scale(var, mean + stats.shift, int(n))
    return n, counts, class_sums, mean, scale


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
        With ``gram`` when a ridge spec is present.
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
    models = []
    for spec in specs:
        coefs, intercepts = [], []
        for f, (n, counts, class_sums, mean, scale) in enumerate(moments):
            # sum over class k of the standardized training rows: (S_k - n_k m) / s
            class_std = (class_sums - counts[:, None] * mean) / scale  # (K, d)
            if spec.kind == "ridge":
                if stats.gram is None:
                    raise ValueError("ridge needs the Gram matrix in the statistics")
                gram = stats.gram[plan.train_groups[f]].sum(axis=0)
                A = (gram - n * np.outer(mean, mean)) / np.outer(scale, scale)
                A.flat[:: A.shape[0] + 1] += float(spec.param("alpha"))
                if K == 2:
                    rhs = 2.0 * class_std[1:2].T  # (d, 1), +1 for class 1
                    ybar = np.array([(counts[1] - counts[0]) / n])
                else:
                    rhs = 2.0 * class_std.T  # sum_i xs_i (2 [y_i = k] - 1), xs centred
                    ybar = 2.0 * counts / n - 1.0
                coef = scipy.linalg.solve(A, rhs, assume_a="pos", overwrite_a=True)
                coefs.append(coef)
                intercepts.append(ybar)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    centroids = class_std / counts[:, None]  # (K, d)
                centroids = np.where(counts[:, None] > 0, centroids, np.nan)
                sq = (centroids**2).sum(axis=1)
                coefs.append(np.nan_to_num(2.0 * centroids.T, nan=0.0))
                intercepts.append(np.where(counts > 0, -sq, -np.inf))
        models.append(_StatsModel(means, scales, np.stack(coefs), np.stack(intercepts),
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
            Xs = (Xf - model.mean[f]) / model.scale[f]
            Z = Xs @ model.coef[f] + model.intercept[f]
            out[i, rows] = _predict_linear(Z)
    return out


def _single_fold_plan(y: np.ndarray, n_classes: int) -> FoldPlan:
    """All rows in group 0, one fold training on it (and testing on no row)."""
    return FoldPlan(np.zeros(len(y), dtype=np.int64), np.asarray(y, dtype=np.int64), n_classes,
                    np.array([[True]]), np.array([-2]))


class _StatsProbe(_StandardizedProbe):
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
        self._coef = model.coef[0]
        self._intercept = model.intercept[0]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Decision values, shape (n_samples,) for a binary ridge, else (n_samples, n_classes)."""
        Z = self._standardize(X) @ self._coef + self._intercept
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels, shape (n_samples,)."""
        return self.classes_[_predict_linear(self._standardize(X) @ self._coef + self._intercept)]


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


# ---------------------------------------------------------------------------------------------
# k nearest neighbours


def _knn_predict(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, ks: Sequence[int],
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


class KNNProbe(_StandardizedProbe):
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
        self._train = (X - self.mean_) / self.scale_
        self._train_y = y_idx
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels, shape (n_samples,)."""
        pred = _knn_predict(self._train, self._train_y, self._standardize(X),
                            [self.n_neighbors], len(self.classes_))
        return self.classes_[pred[0]]


# ---------------------------------------------------------------------------------------------
# one (init, layer) block


@dataclass(frozen=True)
class BlockResult:
    """Out-of-fold predictions and fold scores of every classifier on one block.

    Attributes
    ----------
    predictions : ndarray of int16, shape (n_specs, n_images)
        Predicted class of each image in the fold where it is tested; ``-1`` elsewhere.
    scores : ndarray of float64, shape (n_specs, n_folds, 3)
        Metrics (:data:`METRICS` order) per classifier and fold.
    unconverged : ndarray of int, shape (n_specs,)
        Folds whose iterative solver stopped at its iteration limit (0 for direct methods).
    """

    predictions: np.ndarray
    scores: np.ndarray
    unconverged: np.ndarray


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


def probe_block(block: np.ndarray, plan: FoldPlan, specs: Sequence[ClassifierSpec],
                tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER) -> BlockResult:
    """Evaluate every classifier on every fold of one (init, layer) block.

    Work is shared: each fold's training statistics are computed once; each linear kind
    (``logreg``, ``linear-svm``) fits all its folds and ``C`` values in one batched L-BFGS;
    ``knn`` sorts neighbours once per fold for all ``k``; ridge and nearest centroid are fit
    from sufficient statistics of the block.

    Parameters
    ----------
    block : ndarray, shape (n_images, n_units)
        Features of one layer and init, every image of the store (unused rows are ignored and
        may hold NaN).
    plan : FoldPlan
    specs : sequence of ClassifierSpec
    tol, max_iter : float, int
        Stopping rule of the linear models (see :class:`LogisticProbe`; linear SVMs use
        ``tol / 10`` on their scaled objective).

    Returns
    -------
    BlockResult
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
    fold_std = [standardization(Xc[train[f]], offset=shift) for f in range(F)]
    mean = np.stack([m for m, _ in fold_std])
    scale = np.stack([s for _, s in fold_std])

    n_images = plan.groups.shape[0]
    predictions = np.full((len(specs), n_images), -1, dtype=np.int16)
    unconverged = np.zeros(len(specs), dtype=np.int64)
    index = {spec.name: i for i, spec in enumerate(specs)}

    for kind, loss, kind_tol in (("logreg", "multinomial", tol),
                                 ("linear-svm", "squared_hinge", tol / 10)):
        group = [s for s in specs if s.kind == kind]
        if not group:
            continue
        Cs = [float(s.param("C")) for s in group]
        problems, x, n_iter = _solve_linear(Xc, y, K, loss, train, Cs, kind_tol, max_iter,
                                            (mean, scale))
        Z = problems.decision(x, np.arange(len(problems.fold)))  # (T, F * len(Cs), n)
        for f in range(F):
            for q, spec in enumerate(group):
                p = f * len(Cs) + q
                predictions[index[spec.name], rows[test[f]]] = _predict_linear(
                    Z[:, p, test[f]], axis=0)
                unconverged[index[spec.name]] += int(n_iter[p] >= max_iter)

    knn = [s for s in specs if s.kind == "knn"]
    if knn:
        ks = [int(s.param("k")) for s in knn]
        for f in range(F):
            Xtr = (Xc[train[f]] - mean[f]) / scale[f]
            Xte = (Xc[test[f]] - mean[f]) / scale[f]
            pred = _knn_predict(Xtr, y[train[f]], Xte, ks, K)
            for i, spec in enumerate(knn):
                predictions[index[spec.name], rows[test[f]]] = pred[i]

    by_stats = [s for s in specs if s.uses_stats]
    if by_stats:
        stats = group_stats(X, y, g, plan.n_groups, K, shift,
                            gram=any(s.kind == "ridge" for s in by_stats))
        models = fit_from_stats(stats, plan, by_stats)
        pred = predict_from_stats(models, X, g, plan, shift)
        for i, spec in enumerate(by_stats):
            predictions[index[spec.name], rows] = pred[i]

    return BlockResult(predictions, fold_scores(predictions, plan), unconverged)
