"""Label-aware transferability estimators per (layer, init), straight from a feature store.

Two estimators score how well a layer's pooled features suit the store's labels, without
training a classifier:

* **LogME** (You, Liu, Wang & Long, ICML 2021): for each class ``k``, the labels ``y_k`` (1 for
  the class, 0 otherwise) are modelled as ``y_k = F w + noise`` with the raw pooled features
  ``F`` (n images x D units, no bias term, no normalization), prior ``w ~ N(0, I / alpha)`` and
  noise precision ``beta``. The evidence ``p(y_k | F, alpha, beta)`` is maximized by MacKay's
  fixed point iteration on the eigen-decomposition of ``F^T F`` (the SVD of ``F``), run to
  convergence (relative change of alpha and beta below 1e-10). The score is the exact log
  evidence per image, averaged over the classes present::

      log p = D/2 log(alpha) + n/2 log(beta) - n/2 log(2 pi) - beta/2 ||y - F m||^2
              - alpha/2 ||m||^2 - 1/2 log|alpha I_D + beta F^T F|

  where the log-determinant counts all D directions, including the zero-eigenvalue ones when
  D > n (each adds ``log(alpha)``). Higher is better. The iteration starts at the best point of
  a log-spaced scan of the evidence profile in ``alpha / beta`` rather than at the paper's
  ``alpha = beta = 1``, which can converge to a worse stationary point (or drift to the
  noiseless limit ``beta -> infinity``) when D > n; the result is the global maximum, checked
  against the limits at both ends of the profile (see :func:`logme_from_stats`). Defined
  values for degenerate inputs: features that are all zero, or carry nothing along the labels,
  have their supremum at zero weights, ``-(log(2 pi ||y||^2 / n) + 1) / 2`` per image; labels
  that are an exact linear function of features of rank < n have unbounded evidence (+inf).
* **H-score** (Bao et al., ICIP 2019): ``tr(cov(f)^-1 cov(E[f | y]))``, with ``cov(f)`` the
  Ledoit-Wolf shrinkage estimate (as :class:`sklearn.covariance.LedoitWolf`, divisor n) so that
  D > n works, and ``cov(E[f | y]) = sum_k (n_k / n)(mu_k - mu)(mu_k - mu)^T``. The inverse is
  a pseudo-inverse, so a constant layer (zero covariance) scores 0. Higher is better.

Both are computed from sums that add up chunk by chunk (:class:`ClassStats`: ``F^T F``, column
and per-class sums, sums of the rows' squared norms), so memory is bounded by units^2, not by
the number of images. Only images that are valid, labelled and finite in every selected
variable are used, the same images for every (layer, init); the classes are those present
among them (at least 2).

:func:`transferability_correlation` relates the scores to stored probe accuracy: the Spearman
rank correlation across layers, per estimator, init and classifier.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import dask
import numpy as np
import xarray as xr

from . import schema as S
from ._chunked import (
    Selection,
    Span,
    Variable,
    image_rows,
    noop,
    read_rows,
    select,
    task_batches,
    task_blas,
    until_finite,
)
from .errors import FeatstoreInputError
from .scheduler import Runner, blas_limits, parse_scheduler
from .store import open_store

__all__ = [
    "ESTIMATORS",
    "ESTIMATOR",
    "TRANSFERABILITY_ATTR",
    "TRANSFERABILITY_COLUMNS",
    "ClassStats",
    "LogmeResult",
    "class_stats",
    "merge_class_stats",
    "logme_from_stats",
    "hscore_from_stats",
    "logme",
    "hscore",
    "parse_estimators",
    "transferability",
    "transferability_rows",
    "write_transferability_csv",
    "transferability_correlation",
]

#: estimator names, in output order
ESTIMATORS: Final = ("logme", "hscore")
#: dimension of the estimators in :func:`transferability`'s result
ESTIMATOR: Final = "estimator"
#: attribute of the result holding its description
TRANSFERABILITY_ATTR: Final = "featstore_transferability"
#: columns of the CSV
TRANSFERABILITY_COLUMNS: Final = ("layer", "init", "estimator", "score")
#: LogME's fixed point stops when alpha and beta change by less than this (relative)
LOGME_TOL: Final = 1e-10
#: and gives up (with a note) after this many iterations
LOGME_MAX_ITER: Final = 10_000
#: points of the log-spaced scan of the evidence profile that starts the fixed point
LOGME_GRID: Final = 256
#: ||y outside col(F)||^2 below this fraction of ||y||^2 counts as zero (round-off)
_EXACT: Final = 1e-12


# ---------------------------------------------------------------------------------------------
# sufficient statistics


@dataclass(frozen=True)
class ClassStats:
    """Sums over images of shifted features ``x_i = f_i - shift`` and their classes.

    Attributes
    ----------
    n : int
        Number of images.
    shift : ndarray of shape (D,)
        Subtracted from every row before summing (keeps the sums well conditioned).
    total : ndarray of shape (D,)
        ``sum_i x_i``.
    gram : ndarray of shape (D, D)
        ``sum_i x_i x_i^T``.
    class_sum : ndarray of shape (K, D)
        ``sum_{i in class k} x_i``.
    class_count : ndarray of shape (K,)
        Images per class (int64).
    norm : float
        ``sum_i ||x_i||^2``.
    norm_sq : float
        ``sum_i ||x_i||^4``.
    norm_x : ndarray of shape (D,)
        ``sum_i ||x_i||^2 x_i``.
    """

    n: int
    shift: np.ndarray
    total: np.ndarray
    gram: np.ndarray
    class_sum: np.ndarray
    class_count: np.ndarray
    norm: float
    norm_sq: float
    norm_x: np.ndarray

    def raw_gram(self) -> np.ndarray:
        """``F^T F`` of the unshifted features, array of shape (D, D)."""
        cross = np.outer(self.shift, self.total)
        return self.gram + cross + cross.T + self.n * np.outer(self.shift, self.shift)

    def raw_class_sum(self) -> np.ndarray:
        """``F^T y_k`` of the unshifted features, array of shape (K, D)."""
        return self.class_sum + self.class_count[:, None] * self.shift[None, :]


def class_stats(features: np.ndarray, labels: np.ndarray, n_classes: int,
                shift: np.ndarray | None = None) -> ClassStats:
    """The :class:`ClassStats` of some images.

    Parameters
    ----------
    features : array of shape (n_images, D)
    labels : int array of shape (n_images,)
        Class index in ``[0, n_classes)``.
    n_classes : int
    shift : array of shape (D,), optional
        Default zeros.

    Returns
    -------
    ClassStats
    """
    f = np.asarray(features, dtype=np.float64)
    shift = np.zeros(f.shape[1]) if shift is None else np.asarray(shift, dtype=np.float64)
    x = f - shift
    labels = np.asarray(labels, dtype=np.int64)
    class_sum = _one_hot(labels, n_classes).T @ x
    r = np.einsum("ij,ij->i", x, x)
    return ClassStats(
        n=int(x.shape[0]), shift=shift, total=x.sum(axis=0), gram=x.T @ x, class_sum=class_sum,
        class_count=np.bincount(labels, minlength=n_classes).astype(np.int64),
        norm=float(r.sum()), norm_sq=float(r @ r), norm_x=r @ x,
    )


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Array of shape (n_images, n_classes): 1 in each image's class."""
    return (labels[:, None] == np.arange(n_classes)[None, :]).astype(np.float64)


class _RunningClass:
    """:class:`ClassStats` of one chain, added to in place (``dsyrk`` into the upper triangle
    of a Fortran-ordered Gram matrix: a task allocates nothing of size units^2). The first rows
    added fix the shift (their mean)."""

    def __init__(self, units: int, n_classes: int) -> None:
        self.shift: np.ndarray | None = None
        self.bad: list[np.ndarray] = []  # store rows found not finite
        self.n = 0
        self.total = np.zeros(units)
        self.gram = np.zeros((units, units), order="F")
        self.class_sum = np.zeros((n_classes, units))
        self.class_count = np.zeros(n_classes, dtype=np.int64)
        self.norm = self.norm_sq = 0.0
        self.norm_x = np.zeros(units)

    def add(self, x: np.ndarray, labels: np.ndarray) -> None:
        """Add rows ``x`` (rows, D), a C-contiguous float64 array this object may modify, of
        classes ``labels``."""
        from scipy.linalg.blas import dsyrk

        if x.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = x.mean(axis=0)
        x -= self.shift
        self.gram = dsyrk(1.0, x.T, beta=1.0, c=self.gram, trans=0, lower=0, overwrite_c=1)
        r = np.einsum("ij,ij->i", x, x)
        self.n += int(x.shape[0])
        self.total += x.sum(axis=0)
        self.class_sum += _one_hot(labels, self.class_count.size).T @ x
        self.class_count += np.bincount(labels, minlength=self.class_count.size)
        self.norm += float(r.sum())
        self.norm_sq += float(r @ r)
        self.norm_x += r @ x

    def stats(self) -> ClassStats:
        diagonal = np.diag(self.gram).copy()
        gram = self.gram + self.gram.T  # the lower triangle is still zero
        np.fill_diagonal(gram, diagonal)
        shift = np.zeros(self.total.size) if self.shift is None else self.shift
        return ClassStats(self.n, shift, self.total, gram, self.class_sum,
                          self.class_count, self.norm, self.norm_sq, self.norm_x)


def merge_class_stats(a: ClassStats, b: ClassStats) -> ClassStats:
    """The :class:`ClassStats` of the union of two disjoint sets of images (same shift)."""
    if not np.array_equal(a.shift, b.shift):
        raise ValueError("ClassStats with different shifts cannot be merged")
    return ClassStats(
        n=a.n + b.n, shift=a.shift, total=a.total + b.total, gram=a.gram + b.gram,
        class_sum=a.class_sum + b.class_sum, class_count=a.class_count + b.class_count,
        norm=a.norm + b.norm, norm_sq=a.norm_sq + b.norm_sq, norm_x=a.norm_x + b.norm_x,
    )


# ---------------------------------------------------------------------------------------------
# LogME


@dataclass(frozen=True)
class LogmeResult:
    """LogME of one feature matrix.

    Attributes
    ----------
    value : float
        Log evidence per image, averaged over the classes present.
    evidence : ndarray of shape (K,)
        Log evidence per image of each class (NaN for classes without images).
    alpha, beta : ndarray of shape (K,)
        The maximizing prior and noise precisions (``alpha`` is ``inf`` where the supremum is
        at zero weights).
    iterations : ndarray of shape (K,)
        Fixed-point iterations used.
    converged : bool
        Whether every class converged within :data:`LOGME_MAX_ITER` iterations.
    """

    value: float
    evidence: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    iterations: np.ndarray
    converged: bool


def _step(alpha: float, beta: float, sigma: np.ndarray, t: np.ndarray,
          outside: float) -> tuple[float, float, float]:
    """``gamma``, ``||m||^2`` and ``||y - F m||^2`` at (alpha, beta).

    ``sigma`` (r,) are the positive eigenvalues of ``F^T F``, ``t`` (r,) the coordinates of
    ``F^T y`` along their eigenvectors and ``outside`` the squared norm of the part of ``y``
    outside the column space of ``F``.
    """
    denominator = alpha + beta * sigma
    gamma = float(np.sum(beta * sigma / denominator))
    m = beta * t / denominator
    # ||y - F m||^2 = ||y outside col(F)||^2 + sum_i (t_i^2 / s_i)(alpha / (alpha + beta s_i))^2
    residual = outside + float(np.sum(t * t / sigma * (alpha / denominator) ** 2))
    return gamma, float(m @ m), residual


def _evidence(alpha: float, beta: float, sigma: np.ndarray, t: np.ndarray, outside: float,
              n: int, d: int) -> float:
    """Log evidence at (alpha, beta), the log-determinant over all ``d`` directions."""
    _, mm, residual = _step(alpha, beta, sigma, t, outside)
    log_det = float(np.sum(np.log(alpha + beta * sigma))) + (d - sigma.size) * math.log(alpha)
    return (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * residual - alpha / 2 * mm - log_det / 2)


def _profile(lam: np.ndarray, sigma: np.ndarray, a: np.ndarray, outside: float,
             n: int) -> np.ndarray:
    """Log evidence maximized over beta at ``alpha = lam * beta``, for each ``lam`` (array).

    ``a`` (r,) holds ``t_i^2 / sigma_i``, the squared coordinates of ``y`` along the left
    singular vectors of ``F``; ``Q(lam) = outside + sum_i a_i lam / (lam + sigma_i)`` is
    ``y^T (I + F F^T / lam)^-1 y`` and ``beta = n / Q``.
    """
    lam = np.asarray(lam, dtype=np.float64)[:, None]
    q = outside + np.sum(a * lam / (lam + sigma), axis=1)
    log_det = np.sum(np.log1p(sigma / lam), axis=1)
    with np.errstate(divide="ignore"):
        return -n / 2 * (math.log(2 * math.pi) + 1 + np.log(q / n)) - log_det / 2


def _fixed_point(alpha: float, beta: float, sigma: np.ndarray, t: np.ndarray, outside: float,
                 n: int) -> tuple[float, float, int, bool]:
    """MacKay's updates from (alpha, beta) until the relative change is below LOGME_TOL.

    Returns the last (alpha, beta), the iterations and whether it converged (False also when
    it heads for a boundary: ``||m|| = 0`` or a residual or ``n - gamma`` of 0).
    """
    for step in range(1, LOGME_MAX_ITER + 1):
        gamma, mm, residual = _step(alpha, beta, sigma, t, outside)
        if mm <= 0 or residual <= 0 or n - gamma <= 0:
            return alpha, beta, step, False
        new_alpha, new_beta = gamma / mm, (n - gamma) / residual
        if not (math.isfinite(new_alpha) and math.isfinite(new_beta)) or min(new_alpha,
                                                                             new_beta) <= 0:
            return alpha, beta, step, False
        change = max(abs(new_alpha - alpha) / alpha, abs(new_beta - beta) / beta)
        alpha, beta = new_alpha, new_beta
        if change < LOGME_TOL:
            return alpha, beta, step, True
    return alpha, beta, LOGME_MAX_ITER, False


def logme_from_stats(stats: ClassStats) -> LogmeResult:
    """LogME from summed statistics (see the module docstring for the model).

    Per class, the evidence is maximized by MacKay's fixed point iteration started at the best
    point of a log-spaced scan (:data:`LOGME_GRID` points) of the evidence profile in
    ``lambda = alpha / beta`` (beta maximized in closed form), and compared with the limits at
    the ends of the profile: ``lambda -> infinity`` (zero weights) and, when ``y`` lies in the
    column space of ``F`` (units >= images), ``lambda -> 0`` (the noiseless interpolant). The
    paper's start ``alpha = beta = 1`` can converge to a worse stationary point, or drift to the
    noiseless limit when units > images; the scan makes the result the global maximum.

    Parameters
    ----------
    stats : ClassStats
        Of the raw features (any shift) and their labels.

    Returns
    -------
    LogmeResult
    """
    n, d = stats.n, stats.gram.shape[0]
    eigenvalues, vectors = np.linalg.eigh(stats.raw_gram())
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    top = float(eigenvalues.max(initial=0.0))
    positive = eigenvalues > top * d * np.finfo(np.float64).eps
    sigma = eigenvalues[positive]
    basis = vectors[:, positive]
    rank = int(sigma.size)
    k = stats.class_count.size
    evidence = np.full(k, np.nan)
    alphas = np.full(k, np.nan)
    betas = np.full(k, np.nan)
    iterations = np.zeros(k, dtype=np.int64)
    converged = True
    sums = stats.raw_class_sum()
    if rank:
        grid = np.geomspace(float(sigma.min()) * 1e-6, float(sigma.max()) * 1e6, LOGME_GRID)
    for c in range(k):
        count = int(stats.class_count[c])
        if count == 0:
            continue
        t = basis.T @ sums[c]
        a = t * t / sigma if rank else t
        # ||y||^2 outside the column space of F; exactly 0 when rank == n
        outside = 0.0 if rank >= n else max(count - float(np.sum(a)), 0.0)
        # lambda -> infinity: zero weights, y ~ N(0, I / beta), beta = n / ||y||^2
        best = -(math.log(2 * math.pi * count / n) + 1) / 2 * n
        alphas[c], betas[c] = math.inf, n / count
        if rank and np.any(t):
            if rank < n and outside <= _EXACT * count:
                # y is a linear function of F (up to round-off) with rank < n: unbounded
                best, alphas[c], betas[c] = math.inf, 0.0, math.inf
                evidence[c] = math.inf
                continue
            if rank == n:  # lambda -> 0: the noiseless interpolant of y
                spread = float(np.sum(a / sigma))
                limit = (-n / 2 * (math.log(2 * math.pi) + 1 + math.log(spread / n))
                         - float(np.sum(np.log(sigma))) / 2)
                if limit > best:
                    best, alphas[c], betas[c] = limit, 0.0, math.inf
            profile = _profile(grid, sigma, a, outside, n)
            lam = float(grid[int(np.nanargmax(profile))])
            beta0 = n / (outside + float(np.sum(a * lam / (lam + sigma))))
            alpha, beta, steps, done = _fixed_point(lam * beta0, beta0, sigma, t, outside, n)
            iterations[c] = steps
            value = _evidence(alpha, beta, sigma, t, outside, n, d)
            # a fixed point that heads for an end of the profile is that end's limit, unless
            # it stopped (LOGME_MAX_ITER) somewhere clearly better
            if (done and value >= best) or value > best + 1e-9 * max(1.0, abs(best)):
                best, alphas[c], betas[c] = value, alpha, beta
                converged = converged and done
        evidence[c] = best / n
    present = stats.class_count > 0
    value = float(np.mean(evidence[present])) if present.any() else math.nan
    return LogmeResult(value, evidence, alphas, betas, iterations, converged)


def _check_labels(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                       int]:
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or y.ndim != 1 or f.shape[0] != y.shape[0]:
        raise FeatstoreInputError(
            f"features must be (n_images, units) and labels (n_images,); got shapes {f.shape} "
            f"and {y.shape}"
        )
    if not np.isfinite(f).all():
        raise FeatstoreInputError("features hold NaN or infinite values; drop those rows")
    classes, index = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise FeatstoreInputError(
            f"transferability needs at least 2 classes; the labels hold {classes.size}"
        )
    return f, index.astype(np.int64), int(classes.size)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of features for labels (one shot, in memory).

    Parameters
    ----------
    features : array of shape (n_images, units)
        Raw pooled features.
    labels : array of shape (n_images,)
        Class labels (any values; at least 2 distinct).

    Returns
    -------
    float
        Mean over classes of the maximized log evidence per image.
    """
    f, y, k = _check_labels(features, labels)
    return logme_from_stats(class_stats(f, y, k, f.mean(axis=0))).value


# ---------------------------------------------------------------------------------------------
# H-score


def _ledoit_wolf(cov: np.ndarray, n: int, fourth: float) -> float:
    """Ledoit-Wolf shrinkage of an empirical covariance (divisor n), as scikit-learn computes it.

    ``fourth`` is ``sum_i ||x_i - mean||^4``.
    """
    p = cov.shape[0]
    if p == 1:
        return 0.0
    trace = float(np.trace(cov))
    mu = trace / p
    delta_ = float(np.sum(cov * cov))
    beta = (fourth / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * trace + p * mu**2) / p
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


def hscore_from_stats(stats: ClassStats) -> float:
    """H-score with a Ledoit-Wolf covariance, from summed statistics.

    Parameters
    ----------
    stats : ClassStats

    Returns
    -------
    float
        ``tr(pinv(cov_LW(f)) cov(E[f | y]))``.
    """
    n = stats.n
    mean = stats.total / n
    cov = stats.gram / n - np.outer(mean, mean)
    m2 = float(mean @ mean)
    # sum_i ||x_i - mean||^4 expanded in the summed statistics
    fourth = (stats.norm_sq + 4 * float(mean @ stats.gram @ mean) + n * m2**2
              - 4 * float(mean @ stats.norm_x) + 2 * m2 * stats.norm - 4 * n * m2**2)
    fourth = max(fourth, 0.0)
    shrinkage = _ledoit_wolf(cov, n, fourth)
    mu = float(np.trace(cov)) / cov.shape[0]
    shrunk = (1.0 - shrinkage) * cov + shrinkage * mu * np.eye(cov.shape[0])
    present = stats.class_count > 0
    weights = stats.class_count[present] / n
    centres = stats.class_sum[present] / stats.class_count[present, None] - mean
    between = (centres.T * weights) @ centres
    return float(np.trace(np.linalg.pinv(shrunk, hermitian=True) @ between))


def hscore(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score of features for labels with a Ledoit-Wolf covariance (one shot, in memory).

    Parameters
    ----------
    features : array of shape (n_images, units)
    labels : array of shape (n_images,)
        At least 2 distinct values.

    Returns
    -------
    float
    """
    f, y, k = _check_labels(features, labels)
    return hscore_from_stats(class_stats(f, y, k, f.mean(axis=0)))


# ---------------------------------------------------------------------------------------------
# the store


def parse_estimators(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """Normalize estimator names (``"logme"``, ``"hscore"``; comma-separated values split).

    Raises
    ------
    FeatstoreInputError
        For an unknown name.
    """
    if values is None:
        return ESTIMATORS
    if isinstance(values, str):
        values = [values]
    names = [p.strip().lower() for v in values for p in str(v).split(",") if p.strip()]
    for name in names:
        if name not in ESTIMATORS:
            raise FeatstoreInputError(
                f"unknown --estimator {name!r}; allowed: {', '.join(ESTIMATORS)}"
            )
    if not names:
        raise FeatstoreInputError(f"no --estimator given; allowed: {', '.join(ESTIMATORS)}")
    return tuple(e for e in ESTIMATORS if e in names)


def _class_task(total: _RunningClass | None, variable: Variable, pieces: Sequence[Span],
                keeps: Sequence[np.ndarray], labels: np.ndarray, n_classes: int,
                blas_threads: int | None) -> _RunningClass:
    """``total`` plus the kept rows of some consecutive chunks of one variable; rows that are
    not finite are recorded, not added."""
    with task_blas(blas_threads):
        running = _RunningClass(variable.units, n_classes) if total is None else total
        x, ok = read_rows([variable], pieces, keeps)
        if not ok.all():
            running.bad.append(image_rows(pieces, keeps)[~ok])
            x, labels = x[ok], labels[ok]
        running.add(x, labels)
    return running


def _scores(total: _RunningClass,
            estimators: tuple[str, ...]) -> tuple[list[float], bool, np.ndarray]:
    """The estimators, whether LogME converged, and the store rows found not finite."""
    bad = np.concatenate(total.bad) if total.bad else np.zeros(0, dtype=np.int64)
    if bad.size:  # the caller runs again without these rows
        return [math.nan] * len(estimators), True, bad
    # one BLAS thread: LAPACK's multithreaded eigensolver can be 10-40x slower on a busy
    # machine, and the matrices are at most units x units
    with task_blas(1):
        stats = total.stats()
        values = []
        converged = True
        for name in estimators:
            if name == "logme":
                result = logme_from_stats(stats)
                values.append(result.value)
                converged = result.converged
            else:
                values.append(hscore_from_stats(stats))
    return values, converged, bad


def _labels(selection: Selection) -> tuple[np.ndarray, list[str]]:
    ds = open_store(selection.url)
    classes = [str(c) for c in selection.store.meta.get("classes") or []]
    if S.LABEL not in ds.coords or not classes:
        raise FeatstoreInputError(
            f"store '{selection.url}' has no labels; transferability needs labelled data "
            "(extract from an ImageFolder or a manifest with labels)"
        )
    return np.asarray(ds[S.LABEL].values, dtype=np.int64), classes


def transferability(
    store: str | os.PathLike[str],
    *,
    layers: Sequence[str] | str | None = None,
    inits: Sequence[str] | str | None = None,
    estimators: Sequence[str] | str = ESTIMATORS,
    scheduler: str | None = None,
) -> xr.Dataset:
    """LogME and H-score of every (layer, init) of a feature store for its labels.

    One dask chain per (layer, init) adds up :class:`ClassStats` chunk by chunk (each task reads
    its own chunk from the Zarr array); its last task computes the estimators. Memory is
    bounded by units^2; every scheduler gives the same numbers.

    Parameters
    ----------
    store : str or PathLike
        Feature store path or URL, with labels.
    layers, inits : sequence of str, optional
        Default all (comma-separated values are split).
    estimators : sequence of str
        ``"logme"``, ``"hscore"``.
    scheduler : str, optional
        ``threads`` (default), ``threads:N``, ``sync``, ``local:N`` or ``tcp://HOST:PORT``.

    Returns
    -------
    xarray.Dataset
        ``score`` (layer, init, estimator) float64; coordinates ``layer`` (store variable
        names, shallow to deep), ``init``, ``estimator`` and ``layer_units`` (layer).
        ``attrs["featstore_transferability"]``: ``store``, ``n_images_used``, ``classes`` (the
        classes present), ``excluded`` (invalid, unlabelled, non-finite counts), ``notes``
        (e.g. LogME fixed points that did not converge; each also a ``RuntimeWarning``).

    Raises
    ------
    FeatstoreInputError
        Unknown layers, inits or estimators, an incomplete or unlabelled store, fewer than
        2 classes among the usable images.
    """
    selection = select(store, layers, inits)
    names = parse_estimators(estimators)
    kind, argument = parse_scheduler(scheduler)
    labels, classes = _labels(selection)
    labelled = (labels >= 0) & (labels < len(classes))
    valid = selection.store.valid_mask()
    delayed = dask.delayed

    def classes_present(mask: np.ndarray) -> np.ndarray:
        present = np.unique(labels[mask])
        if present.size < 2:
            which = ", ".join(classes[k] for k in present) or "none"
            raise FeatstoreInputError(
                f"store '{selection.url}' has {present.size} class among its usable images "
                f"({which}); transferability needs at least 2 classes"
            )
        return present

    def compute(mask: np.ndarray) -> tuple[list[Any], np.ndarray]:
        present = classes_present(mask)
        index = np.full(len(classes), -1, dtype=np.int64)
        index[present] = np.arange(present.size)
        batches = task_batches(selection.pieces, mask)
        tasks = []
        for variable in selection.variables:
            ref = delayed(variable, pure=True)  # tokenized once, shared by its chain
            total = None
            for chunks, keeps in batches:
                rows = image_rows(chunks, keeps)
                total = delayed(_class_task, pure=True)(
                    total, ref, chunks, keeps, index[labels[rows]], present.size,
                    runner.blas_threads)
            tasks.append(delayed(_scores, pure=True)(total, names))
        outputs = runner.compute_all(tasks, noop)
        return outputs, np.unique(np.concatenate([o[2] for o in outputs]))

    with Runner(kind, argument) as runner, blas_limits(kind, argument):
        outputs, used = until_finite(valid & labelled, compute)
    present = classes_present(used)
    n_layers, n_inits = len(selection.layers), len(selection.inits)
    score = np.array([o[0] for o in outputs], dtype=np.float64).reshape(
        n_inits, n_layers, len(names)).transpose(1, 0, 2)
    notes = [
        f"LogME of layer {v.layer!r} of init {v.init!r}: the fixed point did not converge in "
        f"{LOGME_MAX_ITER} iterations; the score is the evidence at the last iterate"
        for v, o in zip(selection.variables, outputs, strict=True) if not o[1]
    ]
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    obj = object
    info = {
        "store": selection.url,
        "n_images_used": int(used.sum()),
        "classes": [classes[k] for k in present],
        "excluded": {
            "invalid": int((~valid).sum()),
            "unlabelled": int((valid & ~labelled).sum()),
            "non_finite": int((valid & labelled & ~used).sum()),
        },
        "notes": notes,
    }
    units = [v.units for v in selection.variables[:n_layers]]
    return xr.Dataset(
        {"score": (("layer", S.INIT, ESTIMATOR), score)},
        coords={
            "layer": np.array(selection.layers, dtype=obj),
            S.INIT: np.array(selection.inits, dtype=obj),
            ESTIMATOR: np.array(names, dtype=obj),
            "layer_units": ("layer", np.array(units, dtype=np.int64)),
        },
        attrs={TRANSFERABILITY_ATTR: info},
    )


def transferability_rows(scores: xr.Dataset) -> list[dict[str, Any]]:
    """One row per (layer, init, estimator) of :func:`transferability`'s result."""
    values = scores["score"].transpose("layer", S.INIT, ESTIMATOR).values
    rows = []
    for j, layer in enumerate(scores["layer"].values):
        for i, init in enumerate(scores[S.INIT].values):
            for e, name in enumerate(scores[ESTIMATOR].values):
                rows.append({"layer": str(layer), "init": str(init), "estimator": str(name),
                             "score": float(values[j, i, e])})
    return rows


def write_transferability_csv(scores: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write :func:`transferability_rows` (columns :data:`TRANSFERABILITY_COLUMNS`) to ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TRANSFERABILITY_COLUMNS))
        writer.writeheader()
        writer.writerows(transferability_rows(scores))
    return target


# ---------------------------------------------------------------------------------------------
# agreement with the probes


def transferability_correlation(scores: xr.Dataset, results: xr.Dataset,
                                metric: str = "accuracy") -> xr.Dataset:
    """Spearman rank correlation across layers between each estimator and probe accuracy.

    Parameters
    ----------
    scores : xarray.Dataset
        :func:`transferability`'s result.
    results : xarray.Dataset
        Probe results (:func:`featstore.open_results`): ``score`` (classifier, layer, init,
        fold, metric).
    metric : str
        Probe metric, averaged over folds.

    Returns
    -------
    xarray.Dataset
        Dims ``(estimator, init, classifier)`` over the inits both hold: ``spearman`` (rho,
        :func:`scipy.stats.spearmanr`), ``p_value`` and ``n_layers`` (layers both hold).
        Undefined correlations (fewer than 3 common layers, or a constant side) are NaN, each
        with a line in ``attrs["notes"]``.
    """
    from scipy.stats import spearmanr

    if metric not in [str(m) for m in results["metric"].values]:
        raise FeatstoreInputError(
            f"unknown metric {metric!r}; the probe results hold: "
            + ", ".join(str(m) for m in results["metric"].values)
        )
    probe_layers = {str(v) for v in results["layer"].values}
    layers = [str(v) for v in scores["layer"].values if str(v) in probe_layers]
    probe_inits = {str(v) for v in results[S.INIT].values}
    inits = [str(v) for v in scores[S.INIT].values if str(v) in probe_inits]
    names = [str(v) for v in scores[ESTIMATOR].values]
    classifiers = [str(v) for v in results["classifier"].values]
    shape = (len(names), len(inits), len(classifiers))
    rho = np.full(shape, np.nan)
    p_value = np.full(shape, np.nan)
    counts = np.zeros(shape, dtype=np.int64)
    notes: list[str] = []
    accuracy = results["score"].sel(metric=metric).mean("fold")
    if not inits:
        notes.append("the probe results share no init with the transferability scores")
    for e, name in enumerate(names):
        for i, init in enumerate(inits):
            for c, clf in enumerate(classifiers):
                a = scores["score"].sel(estimator=name, init=init, layer=layers).values
                b = accuracy.sel(classifier=clf, init=init, layer=layers).values
                ok = np.isfinite(a) & np.isfinite(b)
                a, b = a[ok], b[ok]
                counts[e, i, c] = a.size
                where = f"{name} vs {clf} {metric} ({init})"
                if a.size < 3:
                    notes.append(f"{where}: {a.size} layers in common; a rank correlation "
                                 "needs at least 3")
                elif np.ptp(a) == 0 or np.ptp(b) == 0:
                    notes.append(f"{where}: one side is constant across layers; the rank "
                                 "correlation is undefined")
                else:
                    result = spearmanr(a, b)
                    rho[e, i, c] = float(result.statistic)
                    p_value[e, i, c] = float(result.pvalue)
    obj = object
    dims = (ESTIMATOR, S.INIT, "classifier")
    return xr.Dataset(
        {"spearman": (dims, rho), "p_value": (dims, p_value), "n_layers": (dims, counts)},
        coords={ESTIMATOR: np.array(names, dtype=obj), S.INIT: np.array(inits, dtype=obj),
                "classifier": np.array(classifiers, dtype=obj)},
        attrs={"metric": metric, "notes": notes},
    )
