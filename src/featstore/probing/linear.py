"""Linear probes: multinomial logistic regression by batched L-BFGS and the squared-hinge linear
SVM by a finite Newton method, every fold and ``C`` value of one block in one solve.

All folds and ``C`` values of the logistic regression are solved together by one batched L-BFGS
(:func:`featstore.probing.lbfgs.lbfgs`) whose matrix products cover every problem at once (each
fold's standardization is folded into the weights, so the raw block is multiplied once per
iteration), preconditioned with the leading eigenvectors of each fold's training covariance.
The linear SVM is solved exactly by the modified finite Newton method
(:mod:`featstore.probing.hinge`): L-BFGS did not converge on it on wide layers.

The solvers stop on scikit-learn's lbfgs criterion (largest absolute gradient entry of the
mean-loss objective ``<= tol``); they reach the same optimum as scikit-learn, but by another
path, so at a loose ``tol`` individual predictions may differ where the optimum is flat (large
``C``); solved tightly both agree exactly (see the tests). The default ``tol`` (1e-6,
:data:`featstore.config.DEFAULT_TOL`) is tight enough for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from featstore.config import DEFAULT_MAX_ITER, DEFAULT_TOL

from .hinge import hinge_newton
from .lbfgs import lbfgs
from .standardize import StandardizedProbe, fold_standardization

__all__ = ["LogisticProbe", "LinearSVMProbe", "solve_linear", "predict_linear", "fold_spectra"]


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


def _fold_spectra(Xc: np.ndarray, train: np.ndarray, mean: np.ndarray, inv_scale: np.ndarray,
                  rank: int = _PRECOND_RANK) -> _Spectrum:
    """Eigen-structure of every fold's standardized training features (training rows only).

    Rows are grouped by the folds they train (for K folds: by test fold); the Gram matrix of
    each group's rows, centred on that group's mean, is computed once (in float32: it only
    shapes the preconditioner), and fold ``f`` combines the groups it trains on with the exact
    between-group term, so no variance is ever a difference of two large sums. Small layers get
    an exact eigendecomposition; larger ones the top ``rank`` pairs by randomized subspace
    iteration (fixed seed, so results are deterministic).

    Parameters
    ----------
    Xc : ndarray, shape (n, d)
    train : ndarray of bool, shape (F, n)
    mean, inv_scale : ndarray, shape (F, d)
        Training standardization of ``Xc`` per fold (``inv_scale`` 0 for constant features).
    rank : int
    """
    F, d = train.shape[0], Xc.shape[1]
    patterns, atom = np.unique(train.T, axis=0, return_inverse=True)
    atom = np.ravel(atom)
    grams: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}
    for a, pattern in enumerate(patterns):
        if pattern.any():
            rows = Xc[atom == a]
            centre = rows.mean(axis=0)
            deviations = (rows - centre).astype(np.float32)
            grams[a] = (float(rows.shape[0]), centre,
                        (deviations.T @ deviations).astype(np.float64))
    k = d if d <= 2 * rank else rank
    basis = np.empty((F, d, k))
    values = np.empty((F, k))
    rest = np.zeros(F)
    rng = np.random.default_rng(0)
    for f in range(F):
        n_f = float(train[f].sum())
        G = np.zeros((d, d))
        for a, (n_a, centre, gram) in grams.items():
            if patterns[a, f]:
                offset = centre - mean[f]
                G += gram + n_a * np.outer(offset, offset)
        G = G / n_f * np.outer(inv_scale[f], inv_scale[f])
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
    spectrum_index: np.ndarray | None = None  # (F,): spectrum row of each training mask

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
        if self.spectrum_index is not None:
            folds = self.spectrum_index[folds]
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



def _linear_targets(y: np.ndarray, n_classes: int, loss: str) -> np.ndarray:
    """Targets of shape (T, n): one-hot rows, or +-1 (one row for two classes, else one-vs-rest)."""
    if loss == "multinomial":
        return np.ascontiguousarray(np.eye(n_classes)[y].T)
    if n_classes == 2:
        return np.where(y == 1, 1.0, -1.0)[None, :]
    return np.ascontiguousarray(np.where(np.eye(n_classes, dtype=bool)[y], 1.0, -1.0).T)


def predict_linear(Z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Class indices from decision values: argmax along ``axis``, or the sign when it has size 1."""
    if Z.shape[axis] == 1:
        return (np.take(Z, 0, axis=axis) > 0).astype(np.int64)
    return Z.argmax(axis=axis)


def fold_spectra(Xc: np.ndarray, train: np.ndarray, mean: np.ndarray,
                 inv_scale: np.ndarray) -> _Spectrum:
    """The preconditioner's eigen-structure of every fold (see :func:`solve_linear`); computed
    once per block and shared by every linear kind and ``C``."""
    return _fold_spectra(Xc, train, mean, inv_scale)


def solve_linear(Xc: np.ndarray, y: np.ndarray, n_classes: int, loss: str,
                 train: np.ndarray, Cs: Sequence[float], tol: float, max_iter: int,
                 fold_stats: tuple[np.ndarray, np.ndarray] | None = None,
                 precondition: bool = True,
                 pairs: tuple[np.ndarray, np.ndarray] | None = None,
                 spectrum: tuple[_Spectrum, np.ndarray] | None = None,
                 ) -> tuple[_LinearProblems, np.ndarray, np.ndarray, np.ndarray]:
    """Fit every (fold, C) problem of one linear model together.

    Parameters
    ----------
    Xc : ndarray, shape (n, d)
        Features of the used images (any fixed shift of the raw features).
    y : ndarray of int, shape (n,)
    n_classes : int
    loss : {"multinomial", "squared_hinge"}
    train : ndarray of bool, shape (F, n)
        Training rows of each fold (or of any set of training masks).
    Cs : sequence of float
        Inverse regularization strengths (scikit-learn's ``C``).
    fold_stats : (mean, inv_scale), each of shape (F, d), optional
        Training standardization per fold (see
        :func:`~featstore.probing.standardize.fold_standardization`); computed from ``train``
        when omitted.
    precondition : bool
        Precondition L-BFGS with each fold's training feature covariance
        (:meth:`_LinearProblems.precondition`): same optimum, far fewer iterations on
        correlated features. (The squared hinge is solved by the finite Newton method of
        :mod:`featstore.probing.hinge` instead of L-BFGS; ``max_iter`` then counts Newton
        iterations.)
    pairs : (fold, C) arrays of shape (P,), optional
        Solve exactly these problems (training mask ``fold[p]`` with ``C[p]``) instead of every
        fold with every value of ``Cs``.
    spectrum : (spectra, index), optional
        Precomputed preconditioner spectra (:func:`fold_spectra`) and, per training mask, the
        spectrum row it uses (e.g. inner-CV masks reuse their outer fold's: it only shapes the
        speed of convergence, never the optimum).

    Returns
    -------
    problems : _LinearProblems
        Without ``pairs``, problem ``p = f * len(Cs) + q`` is fold ``f`` with ``Cs[q]``.
    x : ndarray, shape (P, D)
        Solutions.
    n_iter : ndarray of int, shape (P,)
    converged : ndarray of bool, shape (P,)
        Whether each solve met its tolerance (see :func:`~featstore.probing.lbfgs.lbfgs`).
    """
    F = train.shape[0]
    n_train = train.sum(axis=1).astype(np.float64)
    if fold_stats is None:
        stats = [fold_standardization(Xc[train[f]]) for f in range(F)]
        mean = np.stack([m for m, _, _ in stats])
        inv_scale = np.stack([inv for _, _, inv in stats])
    else:
        mean, inv_scale = fold_stats
    targets = _linear_targets(y, n_classes, loss)
    T = targets.shape[0]
    if pairs is None:
        Cs_arr = np.asarray(Cs, dtype=np.float64)
        fold = np.repeat(np.arange(F), len(Cs_arr))
        C = np.tile(Cs_arr, F)
    else:
        fold = np.asarray(pairs[0], dtype=np.int64)
        C = np.asarray(pairs[1], dtype=np.float64)
    # scikit-learn minimizes mean(loss) + ||W||^2 / (2 C n); binary logistic regression has one
    # weight vector w where a two-class multinomial has w1 = -w2 = w / 2, hence the factor 2.
    factor = 2.0 if (loss == "multinomial" and n_classes == 2) else 1.0
    lam = factor / (C * n_train[fold])
    if loss == "squared_hinge":  # exact finite Newton: see featstore.probing.hinge
        problems = _LinearProblems(
            Xc=Xc, targets=targets, weights=train / n_train[:, None], mean=mean,
            inv_scale=inv_scale, fold=fold, lam=lam, loss=loss)
        W, b, n_iter, converged = hinge_newton(Xc, mean, inv_scale, targets, train, fold, C,
                                               tol, max_iter)
        return problems, np.concatenate([W.reshape(len(fold), -1), b], axis=1), n_iter, \
            converged
    spectra, index = (None, None) if spectrum is None else spectrum
    if precondition and spectra is None:
        spectra = _fold_spectra(Xc, train, mean, inv_scale)
    problems = _LinearProblems(
        Xc=Xc, targets=targets, weights=train / n_train[:, None], mean=mean,
        inv_scale=inv_scale, fold=fold, lam=lam, loss=loss,
        spectrum=spectra if precondition else None, spectrum_index=index,
    )
    D = (Xc.shape[1] + 1) * T
    x, n_iter, converged = lbfgs(problems.loss_grad, np.zeros((len(fold), D)), tol, max_iter,
                                  precond=problems.precondition if precondition else None)
    return problems, x, n_iter, converged

class _LinearProbe(StandardizedProbe):
    _loss: str = "multinomial"
    C: float
    tol: float
    max_iter: int

    def fit(self, X: Any, y: Any) -> _LinearProbe:
        """Fit on training features ``X`` (shape (n_samples, n_features)) and labels ``y``."""
        X, y_idx = self._prepare_fit(X, y)
        train = np.ones((1, X.shape[0]), dtype=bool)
        stats = (self.mean_[None], self._inv_scale[None])
        problems, x, n_iter, converged = solve_linear(
            X, y_idx, len(self.classes_), self._loss, train, [self.C], self.tol, self.max_iter,
            stats)
        W, b = problems.split(x)
        self.coef_ = W[0].copy()  # (T, d) on standardized features
        self.intercept_ = b[0].copy()
        self.n_iter_ = int(n_iter[0])
        self.converged_ = bool(converged[0])
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Decision values, shape (n_samples, T) (T = 1 for a binary linear SVM)."""
        Z = self._standardize(X) @ self.coef_.T + self.intercept_
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels, shape (n_samples,)."""
        Z = self._standardize(X) @ self.coef_.T + self.intercept_
        return self.classes_[predict_linear(Z)]


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
    converged_ : bool
        Whether the solver met its tolerance before ``max_iter``.
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
    (liblinear's ``intercept_scaling=1``); solved in the primal on the objective divided by
    ``C n`` by the finite Newton method of :mod:`featstore.probing.hinge`, to its exact
    optimum (``max_iter`` counts Newton iterations; a handful to a few dozen suffice).

    Parameters
    ----------
    C : float
    tol : float
        Gradient tolerance on the scaled objective.
    max_iter : int

    Attributes
    ----------
    classes_, mean_, scale_, n_iter_, converged_
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

