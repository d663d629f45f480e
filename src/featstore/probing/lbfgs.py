"""A batched L-BFGS: many independent smooth convex problems minimized together.

Every evaluation covers all still-active problems in one call, so the caller can serve them all
with one matrix product (see :mod:`featstore.probing.linear`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from .standardize import EPS

__all__ = ["lbfgs"]


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


def lbfgs(fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
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
        Whether the problem stopped on the gradient or the relative-decrease test (scipy's
        L-BFGS-B success, after which scikit-learn raises no ConvergenceWarning); False when it
        hit ``max_iter`` or its line search failed.
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
        tiny = (f_old - f[P_ok]) <= 64 * EPS * np.maximum(
            np.maximum(np.abs(f_old), np.abs(f[P_ok])), 1.0)
        converged[P_ok] = conv | tiny
        done = conv | tiny | (n_iter[P_ok] >= max_iter)
        active[P_ok[done]] = False
    return x, n_iter, converged

