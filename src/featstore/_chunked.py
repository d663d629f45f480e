"""Shared plumbing of the estimators that read a store chunk by chunk (similarity, transferability).

:func:`select` validates a store and the requested layers and inits without reading features;
:func:`scan` is the first pass that reads every chunk of every selected variable once and finds
the images that are valid and finite in all of them (the same images for every estimate) and
each variable's mean (the shift that keeps sums of squares well conditioned).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import dask
import numpy as np
import zarr

from . import schema as S
from .config import parse_store_url
from .errors import FeatstoreInputError, StoreIncompleteError, UnknownLayerError
from .scheduler import Runner
from .store import FeatureStore

__all__ = [
    "Span",
    "Variable",
    "Selection",
    "Scan",
    "select",
    "read_variable",
    "scan",
    "noop",
    "blas_limits",
    "task_blas",
]

#: half-open range [start, stop)
Span = tuple[int, int]




@dataclass(frozen=True)
class Variable:
    """One (layer, init) variable: its Zarr array, position along ``init`` and width."""

    layer: str
    init: str
    source: zarr.Array
    position: int
    units: int


@dataclass(frozen=True)
class Selection:
    url: str
    store: FeatureStore
    layers: list[str]
    inits: list[str]
    variables: list[Variable]  # init-major: every layer of inits[0], then of inits[1]...
    pieces: list[Span]  # image chunks


def _split_names(values: Sequence[str] | str | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    names = [p.strip() for v in values for p in str(v).split(",") if p.strip()]
    return names or None


def select(store: str | os.PathLike[str], layers: Sequence[str] | str | None,
            inits: Sequence[str] | str | None) -> Selection:
    """Validate the store and the requested layers and inits (reads no features)."""
    url = parse_store_url(str(store))
    handle = FeatureStore.open(url)
    meta = handle.meta
    stored: list[str] = list(meta["layers"])
    modules: dict[str, str] = dict(meta.get("layer_modules", {}))
    wanted = _split_names(layers)
    if wanted is None:
        chosen_layers = stored
    else:
        by_name = {**{v: v for v in stored},
                   **{modules.get(v, v): v for v in stored}}
        for name in wanted:
            if name not in by_name:
                known = ", ".join(modules.get(v, v) for v in stored)
                raise UnknownLayerError(
                    f"unknown --layers value {name!r}; layers in this store: {known} "
                    "(`featstore info STORE` lists them)"
                )
        picked = {by_name[n] for n in wanted}
        chosen_layers = [v for v in stored if v in picked]
    names = handle.init_names
    if not names:
        raise FeatstoreInputError(f"store '{url}' has no inits; run `featstore extract` first")
    wanted_inits = _split_names(inits)
    if wanted_inits is None:
        chosen_inits = list(names)
    else:
        for name in wanted_inits:
            if name not in names:
                raise FeatstoreInputError(
                    f"unknown --inits value {name!r}; inits in this store: {', '.join(names)}"
                )
        chosen_inits = [n for n in names if n in set(wanted_inits)]
    done = handle.progress()
    for name in chosen_inits:
        row = done[names.index(name)]
        if not row.all():
            raise StoreIncompleteError(
                f"store '{url}' is still being extracted: init {name!r} has {int(row.sum())} "
                f"of {row.size} chunks; let `featstore extract` finish (rerun it to resume), or "
                "pick complete inits with --inits"
            )
    units: dict[str, int] = dict(meta.get("units", {}))
    arrays = {v: handle.layer_array(v) for v in chosen_layers}
    variables = [
        Variable(v, init, arrays[v], names.index(init), int(units.get(v, arrays[v].shape[-1])))
        for init in chosen_inits for v in chosen_layers
    ]
    n, c = handle.n_images, handle.chunk_images
    pieces = [S.chunk_bounds(k, n, c) for k in range(S.n_chunks(n, c))]
    return Selection(url, handle, chosen_layers, chosen_inits, variables, pieces)


def read_variable(variable: Variable, rows: Span) -> np.ndarray:
    """Rows ``rows[0]:rows[1]`` of one variable, float64 array of shape (rows, units)."""
    return np.asarray(variable.source[variable.position, rows[0]:rows[1]], dtype=np.float64)


def _scan_chunk(variables: Sequence[Variable], rows: Span,
                valid: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Finite mask of one chunk, and per variable the sum and count of its valid finite rows."""
    finite = valid.copy()
    sums, counts = [], []
    for variable in variables:
        block = read_variable(variable, rows)
        ok = np.isfinite(block).all(axis=1)
        finite &= ok
        use = ok & valid
        sums.append(block[use].sum(axis=0))
        counts.append(int(use.sum()))
    return finite, sums, counts


@dataclass(frozen=True)
class Scan:
    finite: np.ndarray  # (n_images,) valid and finite in every selected variable
    valid: np.ndarray  # (n_images,)
    shifts: list[np.ndarray]  # per variable: the mean of its valid finite rows


def scan(selection: Selection, runner: Runner) -> Scan:
    """First pass: one task per chunk reads every selected variable once."""
    valid = selection.store.valid_mask()
    tasks = [dask.delayed(_scan_chunk, pure=True)(selection.variables, (a, b), valid[a:b])
             for a, b in selection.pieces]
    parts = runner.compute_all(tasks, noop)
    finite = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=bool)
    shifts = []
    for k, variable in enumerate(selection.variables):
        total = np.zeros(variable.units)
        count = 0
        for part in parts:
            total = total + part[1][k]
            count += part[2][k]
        shifts.append(total / count if count else total)
    return Scan(finite, valid, shifts)


def noop() -> None:
    return None


@contextmanager
def blas_limits(kind: str, argument: int | str | None) -> Iterator[None]:
    """One BLAS thread per task when several local threads run tasks side by side."""
    threads = argument if isinstance(argument, int) else (os.cpu_count() or 1)
    if kind == "threads" and threads > 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            yield
    else:
        yield


@contextmanager
def task_blas(blas_threads: int | None) -> Iterator[None]:
    """Inside a task: limit BLAS threads in a LocalCluster's single-threaded workers."""
    if blas_threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        yield
