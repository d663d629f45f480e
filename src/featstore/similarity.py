"""Linear CKA between every pair of (layer, init) variables of a feature store, chunk by chunk.

Centred kernel alignment (Kornblith et al., ICML 2019) with the linear kernel ``K = X X^T``::

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

For the linear kernel every term is a function of sums over images that add up chunk by chunk
(:class:`PairStats`): the cross product ``X^T Y``, the column sums and, for the debiased
estimator, sums of products with the rows' squared norms. Nothing of size images x images is
ever formed, and the memory of a computation is bounded by units^2 (the cross product of two
blocks of variables), not by the number of images.

Estimators
----------
* ``debiased=False`` (default): the usual biased estimator
  ``HSIC(K, L) = ||X_c^T Y_c||_F^2 / (n - 1)^2`` on centred features ``X_c``.
* ``debiased=True``: the unbiased HSIC estimator of Song et al. (JMLR 2012), as used for CKA by
  Nguyen, Raghu & Kornblith (ICLR 2021), with ``K~``, ``L~`` the Gram matrices with their
  diagonal set to zero::

      HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))

  It needs at least 4 images. It is invariant to shifting the features, like the biased one.

Degenerate inputs: a variable that is constant on the used images has ``HSIC(K, K) = 0``; its
CKA with anything is NaN (undefined), and a note says so (``attrs``, and a ``RuntimeWarning``).
With the debiased estimator a non-constant variable can still get ``HSIC_1(K, K) <= 0`` (an
unbiased estimate of a tiny quantity from few images); its CKA is NaN too, with a note.

Permutation null (``permutations=N``): for each pair the images of the second variable (in the
result's variable order, see :func:`cka`) are shuffled, the same ``N`` permutations for every
pair, drawn as ``rng = numpy.random.default_rng(seed)`` and ``rng.permutation(n)`` N times over
the ``n`` used images (in store order). The p-value is ``(1 + #{null >= observed}) / (1 + N)``
and ``null_q95`` the null's 95th percentile (``numpy.quantile``, linear interpolation): CKA of
unrelated features grows with units / images, so a CKA means little below that line. The null
costs about N times the CKA itself and reads every chunk of the shuffled side once per task
(about 1024 images) of the other side and batch of permutations.

Execution (:func:`cka`): the selected variables are packed into groups of at most
:data:`GROUP_UNITS` units (in the result's variable order); for every pair of groups one dask
chain adds up the :class:`PairStats` of the two groups, each task reading its own rows (about
``TASK_ROWS`` = 1024 images, whole chunks) of every variable of both groups from the Zarr arrays,
so one read serves every pair of variables in the two groups; BLAS adds each task's cross
product into the chain's running sum in place (``dgemm``; ``dsyrk`` within a group). The last
task of a chain reduces the sums to one HSIC value per pair of variables. Memory is a few
(group x group) float64 matrices, whatever the number of images. Images are used when they are
valid and finite in every selected variable: the chains record rows that are not finite, and in
that (rare) case the computation runs once more without them, so every pair uses the same
images.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import dask
import numpy as np
import xarray as xr

from ._chunked import (
    TASK_ROWS,
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
from .config import parse_positive_int
from .errors import FeatstoreInputError
from .scheduler import Runner, blas_limits, parse_scheduler

__all__ = [
    "LAYER_A",
    "INIT_A",
    "LAYER_B",
    "INIT_B",
    "CKA_COLUMNS",
    "PERMUTATION_COLUMNS",
    "SIMILARITY_ATTR",
    "GROUP_UNITS",
    "PairStats",
    "pair_stats",
    "merge_pair_stats",
    "hsic_from_stats",
    "cka_from_hsic",
    "linear_cka",
    "permutation_summary",
    "cka",
    "cka_rows",
    "write_cka_csv",
]

#: dimension names of :func:`cka`'s result
LAYER_A: Final = "layer_a"
INIT_A: Final = "init_a"
LAYER_B: Final = "layer_b"
INIT_B: Final = "init_b"
#: columns of ``cka.csv``; with permutations :data:`PERMUTATION_COLUMNS` follow
CKA_COLUMNS: Final = ("layer_a", "init_a", "layer_b", "init_b", "cka")
PERMUTATION_COLUMNS: Final = ("p_value", "null_q95")
#: attribute of the result holding its description
SIMILARITY_ATTR: Final = "featstore_similarity"
#: most units in one group of variables: a chain holds one (group x group) float64 cross product
GROUP_UNITS: Final = 4096
#: memory for the running sums of one permutation chain (a batch of permutations), bytes
_PERMUTATION_BYTES: Final = 256 * 2**20
#: the 95th percentile reported for the permutation null
_NULL_QUANTILE: Final = 0.95



# ---------------------------------------------------------------------------------------------
# pure compute


@dataclass(frozen=True)
class PairStats:
    """Sums over images of two blocks of features ``X`` (rows x_i) and ``Y`` (rows y_i).

    ``X`` holds ``vx`` variables side by side (their column spans are given separately), ``Y``
    holds ``vy``; ``r_i^(a) = ||x_i^(a)||^2`` is the squared norm of variable ``a``'s part of
    row ``i`` (likewise ``q_i^(b)`` for ``Y``).

    Attributes
    ----------
    n : int
        Number of images.
    cross : ndarray of shape (dx, dy)
        ``sum_i x_i y_i^T``.
    sum_x, sum_y : ndarray of shape (dx,), (dy,)
        Column sums.
    norm_x, norm_y : ndarray of shape (vx,), (vy,)
        ``sum_i r_i^(a)`` and ``sum_i q_i^(b)``.
    x_norm_y : ndarray of shape (dx, vy)
        ``sum_i x_i q_i^(b)``.
    norm_x_y : ndarray of shape (vx, dy)
        ``sum_i r_i^(a) y_i``.
    norm_norm : ndarray of shape (vx, vy)
        ``sum_i r_i^(a) q_i^(b)``.
    """

    n: int
    cross: np.ndarray
    sum_x: np.ndarray
    sum_y: np.ndarray
    norm_x: np.ndarray
    norm_y: np.ndarray
    x_norm_y: np.ndarray
    norm_x_y: np.ndarray
    norm_norm: np.ndarray


def _row_norms(x: np.ndarray, spans: Sequence[Span]) -> np.ndarray:
    """Squared norm of each variable's part of each row, array of shape (rows, len(spans))."""
    out = np.empty((x.shape[0], len(spans)))
    for k, (a, b) in enumerate(spans):
        out[:, k] = np.einsum("ij,ij->i", x[:, a:b], x[:, a:b])
    return out


def pair_stats(x: np.ndarray, y: np.ndarray, spans_x: Sequence[Span],
               spans_y: Sequence[Span]) -> PairStats:
    """The :class:`PairStats` of aligned rows ``x`` and ``y``.

    Parameters
    ----------
    x : ndarray of shape (rows, dx)
        Features of the X block (variables side by side), float64.
    y : ndarray of shape (rows, dy)
        Features of the Y block for the same images, in the same order.
    spans_x, spans_y : sequence of (start, stop)
        Column span of each variable in ``x`` and ``y``.

    Returns
    -------
    PairStats
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows and y {y.shape[0]}; they must be aligned")
    rx = _row_norms(x, spans_x)
    ry = _row_norms(y, spans_y)
    return PairStats(
        n=int(x.shape[0]), cross=x.T @ y, sum_x=x.sum(axis=0), sum_y=y.sum(axis=0),
        norm_x=rx.sum(axis=0), norm_y=ry.sum(axis=0), x_norm_y=x.T @ ry, norm_x_y=rx.T @ y,
        norm_norm=rx.T @ ry,
    )


def merge_pair_stats(a: PairStats, b: PairStats) -> PairStats:
    """The :class:`PairStats` of the union of two disjoint sets of images."""
    return PairStats(
        n=a.n + b.n, cross=a.cross + b.cross, sum_x=a.sum_x + b.sum_x, sum_y=a.sum_y + b.sum_y,
        norm_x=a.norm_x + b.norm_x, norm_y=a.norm_y + b.norm_y,
        x_norm_y=a.x_norm_y + b.x_norm_y, norm_x_y=a.norm_x_y + b.norm_x_y,
        norm_norm=a.norm_norm + b.norm_norm,
    )


def hsic_from_stats(stats: PairStats, spans_x: Sequence[Span], spans_y: Sequence[Span], *,
                    debiased: bool = False) -> np.ndarray:
    """Linear-kernel HSIC of every pair (variable of X, variable of Y) from summed statistics.

    Parameters
    ----------
    stats : PairStats
        Sums over ``n`` images (``n >= 2``; ``n >= 4`` when ``debiased``).
    spans_x, spans_y : sequence of (start, stop)
        Column span of each variable.
    debiased : bool
        The unbiased estimator of Song et al. (2012) instead of the biased one.

    Returns
    -------
    ndarray of shape (len(spans_x), len(spans_y))
        Biased: ``||X_c^T Y_c||_F^2 / (n - 1)^2``; debiased: ``HSIC_1`` (see the module
        docstring), which can be negative.
    """
    n = stats.n
    out = np.empty((len(spans_x), len(spans_y)))
    for i, (a0, a1) in enumerate(spans_x):
        sx = stats.sum_x[a0:a1]
        for j, (b0, b1) in enumerate(spans_y):
            m = stats.cross[a0:a1, b0:b1]
            sy = stats.sum_y[b0:b1]
            if not debiased:
                centred = m - np.outer(sx, sy) / n
                out[i, j] = float(np.sum(centred * centred)) / (n - 1) ** 2
                continue
            nn = float(stats.norm_norm[i, j])
            trace = float(np.sum(m * m)) - nn  # tr(K~ L~)
            kk = float(sx @ sx) - float(stats.norm_x[i])  # 1^T K~ 1
            ll = float(sy @ sy) - float(stats.norm_y[j])  # 1^T L~ 1
            # 1^T K~ L~ 1 = sum_i (x_i.s_x - r_i)(y_i.s_y - q_i)
            kl = (float(sx @ m @ sy) - float(sx @ stats.x_norm_y[a0:a1, j])
                  - float(stats.norm_x_y[i, b0:b1] @ sy) + nn)
            out[i, j] = (trace + kk * ll / ((n - 1) * (n - 2)) - 2.0 * kl / (n - 2)) \
                / (n * (n - 3))
    return out


def cka_from_hsic(hsic_xy: np.ndarray, hsic_xx: np.ndarray, hsic_yy: np.ndarray) -> np.ndarray:
    """``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``, NaN where a self-HSIC is not positive.

    Parameters
    ----------
    hsic_xy : ndarray of shape (..., vx, vy)
    hsic_xx : ndarray of shape (vx,)
    hsic_yy : ndarray of shape (vy,)

    Returns
    -------
    ndarray of shape (..., vx, vy)
    """
    xx = np.asarray(hsic_xx, dtype=np.float64)[:, None]
    yy = np.asarray(hsic_yy, dtype=np.float64)[None, :]
    ok = (xx > 0) & (yy > 0)
    denominator = np.sqrt(np.where(ok, xx * yy, 1.0))
    return np.where(ok, np.asarray(hsic_xy, dtype=np.float64) / denominator, np.nan)


def _check_rows(n: int, debiased: bool) -> None:
    if debiased and n < 4:
        raise FeatstoreInputError(
            f"the debiased CKA estimator needs at least 4 images; {n} usable; "
            "drop --debiased or use more images"
        )
    if n < 2:
        raise FeatstoreInputError(f"CKA needs at least 2 usable images; {n} usable")


def linear_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA of two feature matrices of the same images (one shot, in memory).

    Parameters
    ----------
    x : array of shape (n_images, units_x)
    y : array of shape (n_images, units_y)
    debiased : bool
        Use the unbiased HSIC estimator (needs ``n_images >= 4``).

    Returns
    -------
    float
        In [0, 1] for the biased estimator; NaN when either side is constant (or, debiased,
        has a self-HSIC that is not positive).

    Raises
    ------
    FeatstoreInputError
        Different numbers of rows, fewer than 2 images, or fewer than 4 when ``debiased``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise FeatstoreInputError(
            f"x and y must be 2-D arrays with one row per image; got shapes {x.shape} and "
            f"{y.shape}"
        )
    _check_rows(x.shape[0], debiased)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    sx, sy = [(0, x.shape[1])], [(0, y.shape[1])]
    hxy = hsic_from_stats(pair_stats(x, y, sx, sy), sx, sy, debiased=debiased)
    hxx = hsic_from_stats(pair_stats(x, x, sx, sx), sx, sx, debiased=debiased)[0]
    hyy = hsic_from_stats(pair_stats(y, y, sy, sy), sy, sy, debiased=debiased)[0]
    return float(cka_from_hsic(hxy, hxx, hyy)[0, 0])


def permutation_summary(observed: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p-value and 95th percentile of a permutation null.

    Parameters
    ----------
    observed : ndarray of shape (...)
        Observed statistics.
    null : ndarray of shape (N, ...)
        The statistic under N permutations.

    Returns
    -------
    p_value, q95 : ndarray of shape (...)
        ``(1 + #{null >= observed}) / (1 + N)`` and ``numpy.quantile(null, 0.95, axis=0)``;
        NaN where the observed value or any null value is NaN.
    """
    observed = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    defined = np.isfinite(observed) & np.isfinite(null).all(axis=0)
    with np.errstate(invalid="ignore"):
        exceed = (null >= observed[None]).sum(axis=0)
    p_value = np.where(defined, (1.0 + exceed) / (1.0 + null.shape[0]), np.nan)
    filled = np.where(np.isfinite(null), null, 0.0)
    q95 = np.where(defined, np.quantile(filled, _NULL_QUANTILE, axis=0), np.nan)
    return p_value, q95


# ---------------------------------------------------------------------------------------------
# the graph


def _groups(variables: Sequence[Variable], budget: int) -> list[list[int]]:
    """Consecutive variables packed into groups of at most ``budget`` units (one at least)."""
    groups: list[list[int]] = []
    size = 0
    for k, variable in enumerate(variables):
        if groups and size + variable.units <= budget:
            groups[-1].append(k)
            size += variable.units
        else:
            groups.append([k])
            size = variable.units
    return groups


def _spans(widths: Sequence[int]) -> list[Span]:
    bounds = np.cumsum((0, *widths))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class _Running:
    """The :class:`PairStats` of one chain, added to in place.

    The cross product is a Fortran-ordered array that BLAS updates directly (``dgemm`` with
    ``beta = 1``; ``dsyrk``, upper triangle only, when Y is X), so a task allocates nothing of
    size units^2. The first rows added fix the shifts (their means) subtracted from every row:
    the estimators do not depend on them, and near-centred sums stay well conditioned.
    """

    def __init__(self, spans_x: Sequence[Span], spans_y: Sequence[Span], symmetric: bool) -> None:
        dx, dy = spans_x[-1][1], spans_y[-1][1]
        vx, vy = len(spans_x), len(spans_y)
        self.spans_x, self.spans_y, self.symmetric = list(spans_x), list(spans_y), symmetric
        self.n = 0
        self.shift_x: np.ndarray | None = None
        self.shift_y: np.ndarray | None = None
        self.bad: list[np.ndarray] = []  # store rows found not finite
        self.cross = np.zeros((dx, dy), order="F")
        self.sum_x, self.sum_y = np.zeros(dx), np.zeros(dy)
        self.norm_x, self.norm_y = np.zeros(vx), np.zeros(vy)
        self.x_norm_y, self.norm_x_y = np.zeros((dx, vy)), np.zeros((vx, dy))
        self.norm_norm = np.zeros((vx, vy))

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add aligned rows ``x`` (rows, dx) and ``y`` (rows, dy), C-contiguous float64 arrays
        this object may modify (``y is x`` for a symmetric chain)."""
        from scipy.linalg.blas import dgemm, dsyrk

        if x.shape[0] == 0:
            return
        if self.shift_x is None or self.shift_y is None:
            self.shift_x = x.mean(axis=0)
            self.shift_y = self.shift_x if self.symmetric else y.mean(axis=0)
        x -= self.shift_x
        if self.symmetric:
            self.cross = dsyrk(1.0, x.T, beta=1.0, c=self.cross, trans=0, lower=0,
                               overwrite_c=1)
        else:
            y -= self.shift_y
            self.cross = dgemm(1.0, x.T, y.T, beta=1.0, c=self.cross, trans_b=1, overwrite_c=1)
        rx = _row_norms(x, self.spans_x)
        ry = rx if self.symmetric else _row_norms(y, self.spans_y)
        self.n += int(x.shape[0])
        self.sum_x += x.sum(axis=0)
        self.sum_y += y.sum(axis=0)
        self.norm_x += rx.sum(axis=0)
        self.norm_y += ry.sum(axis=0)
        self.x_norm_y += x.T @ ry
        self.norm_x_y += rx.T @ y
        self.norm_norm += rx.T @ ry

    def stats(self) -> PairStats:
        cross = self.cross
        if self.symmetric:  # dsyrk filled the upper triangle; the lower one is still zero
            diagonal = np.diag(cross).copy()
            cross = cross + cross.T
            np.fill_diagonal(cross, diagonal)
        return PairStats(self.n, cross, self.sum_x, self.sum_y,
                         self.norm_x, self.norm_y, self.x_norm_y, self.norm_x_y, self.norm_norm)


def _pair_task(total: _Running | None, xs: Sequence[Variable], ys: Sequence[Variable] | None,
               pieces: Sequence[Span], keeps: Sequence[np.ndarray], spans_x: Sequence[Span],
               spans_y: Sequence[Span], blas_threads: int | None) -> _Running:
    """``total`` plus the kept rows of some consecutive chunks (``ys`` None: Y is X); rows that
    are not finite are recorded, not added."""
    with task_blas(blas_threads):
        x, ok = read_rows(xs, pieces, keeps)
        y = x
        if ys is not None:
            y, finite_y = read_rows(ys, pieces, keeps)
            ok &= finite_y
        running = _Running(spans_x, spans_y, ys is None) if total is None else total
        if not ok.all():
            running.bad.append(image_rows(pieces, keeps)[~ok])
            x = x[ok]
            y = x if ys is None else y[ok]
        running.add(x, y)
    return running


def _finish_pair(total: _Running, spans_x: Sequence[Span], spans_y: Sequence[Span],
                 debiased: bool) -> tuple[np.ndarray, np.ndarray]:
    """HSIC of every pair of the chain's variables, and the store rows found not finite."""
    bad = np.concatenate(total.bad) if total.bad else np.zeros(0, dtype=np.int64)
    if total.n < 2 or (debiased and total.n < 4):
        return np.full((len(spans_x), len(spans_y)), np.nan), bad
    return hsic_from_stats(total.stats(), spans_x, spans_y, debiased=debiased), bad


def _perm_task(totals: list[_Running] | None, xs: Sequence[Variable], ys: Sequence[Variable],
               pieces: Sequence[Span], keeps: Sequence[np.ndarray], targets: np.ndarray,
               all_pieces: Sequence[Span], chunk_images: int, spans_x: Sequence[Span],
               spans_y: Sequence[Span], blas_threads: int | None) -> list[_Running]:
    """Add some chunks of X, paired with permuted rows of Y, for a batch of permutations.

    ``targets`` (batch, kept rows) holds, per permutation, the store row of Y paired with each
    kept row of these chunks; every chunk of Y holding such a row is read once.
    """
    with task_blas(blas_threads):
        x, _ = read_rows(xs, pieces, keeps)
        width = sum(v.units for v in ys)
        gathered = np.empty((targets.shape[0], targets.shape[1], width))
        owner = targets // chunk_images
        for chunk in np.unique(owner):
            start, stop = all_pieces[int(chunk)]
            block, _ = read_rows(ys, [(start, stop)], [np.arange(stop - start)])
            here = owner == chunk
            gathered[here] = block[targets[here] - start]
        running = ([_Running(spans_x, spans_y, False) for _ in range(targets.shape[0])]
                   if totals is None else totals)
        for p, total in enumerate(running):
            total.add(x.copy(), gathered[p])
    return running


def _finish_perm(totals: list[_Running], spans_x: Sequence[Span], spans_y: Sequence[Span],
                 debiased: bool) -> np.ndarray:
    return np.stack([hsic_from_stats(t.stats(), spans_x, spans_y, debiased=debiased)
                     for t in totals])


def _parse_permutations(permutations: int) -> int:
    return parse_positive_int("--permutations", permutations, minimum=0)


def _parse_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise FeatstoreInputError(f"invalid --seed {seed!r}; must be an integer >= 0")
    return int(seed)


def cka(
    store: str | os.PathLike[str],
    *,
    layers: Sequence[str] | str | None = None,
    inits: Sequence[str] | str | None = None,
    debiased: bool = False,
    permutations: int = 0,
    seed: int = 0,
    scheduler: str | None = None,
) -> xr.Dataset:
    """Linear CKA between every pair of (layer, init) variables of a feature store.

    Only images that are valid and finite in every selected variable are used, the same images
    for every pair. The computation runs as a dask graph on ``scheduler`` (see
    :func:`featstore.scheduler.parse_scheduler`) with memory bounded by units^2, never by
    images^2 (see the module docstring); every scheduler gives the same numbers.

    Parameters
    ----------
    store : str or PathLike
        Feature store path or URL.
    layers, inits : sequence of str, optional
        Layers (module paths or variable names) and inits to compare; default all. Comma-
        separated values are split.
    debiased : bool
        Use the unbiased HSIC estimator (Song et al. 2012); needs at least 4 images.
    permutations : int
        Size of the permutation null per pair (0: none).
    seed : int
        Seed of the permutations.
    scheduler : str, optional
        ``threads`` (default), ``threads:N``, ``sync``, ``local:N`` or ``tcp://HOST:PORT``.

    Returns
    -------
    xarray.Dataset
        Dims ``(layer_a, init_a, layer_b, init_b)`` (layers shallow to deep, inits in store
        order): ``cka`` float64, symmetric (``cka[la, ia, lb, ib] == cka[lb, ib, la, ia]``),
        1 on the diagonal, NaN for a constant variable. With ``permutations > 0`` also
        ``p_value`` and ``null_q95`` (the second variable of a pair -- in the order init-major,
        then layer -- is the shuffled one; symmetric too). Coordinates ``layer_a``,
        ``init_a``, ``layer_b``, ``init_b`` (str) and ``units_a``, ``units_b`` (int).
        ``attrs["featstore_similarity"]``: ``store``, ``estimator`` (``"linear"`` or
        ``"linear-debiased"``), ``permutations``, ``seed``, ``n_images_used``, ``excluded``
        (counts of invalid and non-finite images), ``notes`` (one line per degenerate
        variable; each also raised as a ``RuntimeWarning``).

    Raises
    ------
    FeatstoreInputError
        Unknown layers or inits, an incomplete store, a bad ``permutations``/``seed``/
        ``scheduler``, fewer than 2 usable images (4 with ``debiased``).
    """
    selection = select(store, layers, inits)
    permutations = _parse_permutations(permutations)
    seed = _parse_seed(seed)
    kind, argument = parse_scheduler(scheduler)
    variables = selection.variables
    valid = selection.store.valid_mask()
    _check_rows(int(valid.sum()), debiased)
    null = None
    with Runner(kind, argument) as runner, blas_limits(kind, argument):
        hsic, used = until_finite(
            valid, lambda mask: _observed_hsic(selection, runner, debiased, mask))
        n = int(used.sum())
        _check_rows(n, debiased)
        if permutations:
            null = _null_hsic(selection, runner, debiased, used, permutations, seed)
    self_hsic = np.diag(hsic).copy()
    observed = cka_from_hsic(hsic, self_hsic, self_hsic)
    notes = _degenerate_notes(variables, self_hsic, n, debiased)
    data: dict[str, Any] = {"cka": observed}
    if null is not None:
        data["p_value"], data["null_q95"] = permutation_summary(
            observed, cka_from_hsic(null, self_hsic, self_hsic))
    n_layers, n_inits = len(selection.layers), len(selection.inits)
    units = [v.units for v in variables[:n_layers]]
    arrays = {
        name: ((LAYER_A, INIT_A, LAYER_B, INIT_B),
               value.reshape(n_inits, n_layers, n_inits, n_layers).transpose(1, 0, 3, 2))
        for name, value in data.items()
    }
    obj = object
    info = {
        "store": selection.url,
        "estimator": "linear-debiased" if debiased else "linear",
        "permutations": permutations,
        "seed": seed,
        "n_images_used": n,
        "excluded": {"invalid": int((~valid).sum()),
                     "non_finite": int((valid & ~used).sum())},
        "notes": notes,
    }
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    return xr.Dataset(
        arrays,
        coords={
            LAYER_A: np.array(selection.layers, dtype=obj),
            INIT_A: np.array(selection.inits, dtype=obj),
            LAYER_B: np.array(selection.layers, dtype=obj),
            INIT_B: np.array(selection.inits, dtype=obj),
            "units_a": (LAYER_A, np.array(units, dtype=np.int64)),
            "units_b": (LAYER_B, np.array(units, dtype=np.int64)),
        },
        attrs={SIMILARITY_ATTR: info},
    )


def _plan(selection: Selection) -> tuple[list[list[int]], list[list[Span]], list[Any]]:
    """Groups of variables, their column spans and one graph node per group's variables."""
    variables = selection.variables
    groups = _groups(variables, GROUP_UNITS)
    spans = [_spans([variables[k].units for k in g]) for g in groups]
    # one graph node per group, shared by every task that reads it (tokenized once)
    members = [dask.delayed([variables[k] for k in g], pure=True) for g in groups]
    return groups, spans, members


def _observed_hsic(selection: Selection, runner: Runner, debiased: bool,
                   mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSIC of every pair of variables (V, V) over the rows of ``mask``, and the rows of
    ``mask`` that are not finite in some variable (their rows are left out of every sum)."""
    groups, spans, members = _plan(selection)
    batches = task_batches(selection.pieces, mask)
    blas = runner.blas_threads
    delayed = dask.delayed
    pairs = [(g, h) for g in range(len(groups)) for h in range(g, len(groups))]
    tasks = []
    for g, h in pairs:
        total = None
        for chunks, keeps in batches:
            total = delayed(_pair_task, pure=True)(
                total, members[g], None if g == h else members[h], chunks, keeps, spans[g],
                spans[h], blas)
        tasks.append(delayed(_finish_pair, pure=True)(total, spans[g], spans[h], debiased))
    outputs = runner.compute_all(tasks, noop)
    size = len(selection.variables)
    hsic = np.full((size, size), np.nan)
    bad = [np.zeros(0, dtype=np.int64)]
    for (g, h), (block, rows) in zip(pairs, outputs, strict=True):
        hsic[np.ix_(groups[g], groups[h])] = block
        hsic[np.ix_(groups[h], groups[g])] = block.T
        bad.append(rows)
    return hsic, np.unique(np.concatenate(bad))


def _null_hsic(selection: Selection, runner: Runner, debiased: bool, used: np.ndarray,
               permutations: int, seed: int) -> np.ndarray:
    """HSIC of every pair under ``permutations`` shufflings of the second variable's images,
    array of shape (N, V, V)."""
    groups, spans, members = _plan(selection)
    batches = task_batches(selection.pieces, used)
    blas = runner.blas_threads
    delayed = dask.delayed
    pairs = [(g, h) for g in range(len(groups)) for h in range(g, len(groups))]
    rows_used = np.flatnonzero(used)
    rng = np.random.default_rng(seed)
    order = np.stack([rows_used[rng.permutation(rows_used.size)]
                      for _ in range(permutations)])  # (N, n): the Y row paired with used row k
    starts = np.cumsum([0, *(sum(int(k.size) for k in keeps) for _, keeps in batches)])
    all_pieces = delayed(list(selection.pieces), pure=True)
    tasks, keys = [], []
    for g, h in pairs:
        dx, dy = spans[g][-1][1], spans[h][-1][1]
        per = 8 * (dx * dy + TASK_ROWS * dy + 2 * (dx + dy))
        batch = max(1, min(permutations, _PERMUTATION_BYTES // per))
        for first in range(0, permutations, batch):
            total = None
            for b, (chunks, keeps) in enumerate(batches):
                targets = order[first:first + batch, starts[b]:starts[b + 1]]
                total = delayed(_perm_task, pure=True)(
                    total, members[g], members[h], chunks, keeps, targets, all_pieces,
                    selection.store.chunk_images, spans[g], spans[h], blas)
            tasks.append(delayed(_finish_perm, pure=True)(total, spans[g], spans[h], debiased))
            keys.append((g, h, first))
    outputs = runner.compute_all(tasks, noop)
    size = len(selection.variables)
    null = np.full((permutations, size, size), np.nan)
    for (g, h, first), block in zip(keys, outputs, strict=True):
        stop = first + block.shape[0]
        for i, a in enumerate(groups[g]):
            for j, b in enumerate(groups[h]):
                if a <= b:  # the second variable of a pair is the shuffled one
                    null[first:stop, a, b] = block[:, i, j]
                    null[first:stop, b, a] = block[:, i, j]
    return null


def _degenerate_notes(variables: Sequence[Variable], self_hsic: np.ndarray, n: int,
                      debiased: bool) -> list[str]:
    notes = []
    for variable, value in zip(variables, self_hsic, strict=True):
        if value > 0:
            continue
        name = f"layer {variable.layer!r} of init {variable.init!r}"
        if debiased and value != 0.0:
            notes.append(
                f"CKA is NaN for every pair with {name}: its debiased self-HSIC is "
                f"{value:.3g} <= 0 on {n} images (too few images for its {variable.units} "
                "units; the biased estimator is defined)"
            )
        else:
            notes.append(
                f"CKA is NaN for every pair with {name}: it is constant on the {n} used "
                "images (HSIC(K, K) = 0)"
            )
    return notes


# ---------------------------------------------------------------------------------------------
# tables


def cka_rows(result: xr.Dataset) -> list[dict[str, Any]]:
    """One row per ordered pair of variables of :func:`cka`'s result.

    Rows run over ``init_a``, ``layer_a``, ``init_b``, ``layer_b`` (every ordered pair,
    the diagonal included); columns :data:`CKA_COLUMNS`, plus :data:`PERMUTATION_COLUMNS`
    when the result has a permutation null.
    """
    names = ["cka"] + [c for c in PERMUTATION_COLUMNS if c in result.data_vars]
    values = {c: result[c].transpose(INIT_A, LAYER_A, INIT_B, LAYER_B).values for c in names}
    layers = [str(v) for v in result[LAYER_A].values]
    inits = [str(v) for v in result[INIT_A].values]
    rows = []
    for i, init_a in enumerate(inits):
        for j, layer_a in enumerate(layers):
            for k, init_b in enumerate(inits):
                for m, layer_b in enumerate(layers):
                    row: dict[str, Any] = {"layer_a": layer_a, "init_a": init_a,
                                           "layer_b": layer_b, "init_b": init_b}
                    row.update({c: float(values[c][i, j, k, m]) for c in names})
                    rows.append(row)
    return rows


def write_cka_csv(result: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write :func:`cka_rows` to ``path`` (parent folders created); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    columns = list(CKA_COLUMNS) + [c for c in PERMUTATION_COLUMNS if c in result.data_vars]
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(cka_rows(result))
    return target

