"""Shared plumbing of the estimators that read a store chunk by chunk (similarity, transferability).

:func:`select` validates a store and the requested layers and inits without reading features;
:func:`task_batches` cuts the image chunks into the tasks of a chain; :func:`read_rows` reads a
task's rows of some variables; :func:`until_finite` makes every estimate use the same images
(valid, and finite in every selected variable) while reading the features once in the common
case.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import zarr

from . import schema as S
from .config import parse_store_url
from .errors import FeatstoreInputError, StoreIncompleteError
from .store import FeatureStore

__all__ = [
    "Span",
    "Variable",
    "Selection",
    "select",
    "read_rows",
    "image_rows",
    "until_finite",
    "TASK_ROWS",
    "task_batches",
    "noop",
    "task_blas",
]

#: half-open range [start, stop)
Span = tuple[int, int]
T = TypeVar("T")
#: rows one task of a chain reads (consecutive chunks up to this many rows, at least one chunk):
#: bigger products per BLAS call and fewer tasks, memory still bounded
TASK_ROWS = 1024


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


def select(store: str | os.PathLike[str], layers: Sequence[str] | str | None,
            inits: Sequence[str] | str | None) -> Selection:
    """Validate the store and the requested layers and inits (reads no features)."""
    url = parse_store_url(str(store))
    handle = FeatureStore.open(url)
    meta = handle.meta
    chosen_layers = S.select_layers(meta["layers"], meta.get("layer_modules", {}),
                                    S.split_names(layers))
    names = handle.init_names
    if not names:
        raise FeatstoreInputError(f"store '{url}' has no inits; run `featstore extract` first")
    chosen_inits = S.select_inits(names, S.split_names(inits))
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


def noop() -> None:
    return None




@contextmanager
def task_blas(blas_threads: int | None) -> Iterator[None]:
    """Inside a task: limit BLAS threads in a LocalCluster's single-threaded workers."""
    if blas_threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        yield


def read_rows(variables: Sequence[Variable], pieces: Sequence[Span],
              keeps: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Kept rows of consecutive chunks of variables side by side, and which are finite.

    Parameters
    ----------
    variables : sequence of Variable
    pieces : sequence of (start, stop)
        Image chunks.
    keeps : sequence of int arrays
        Per chunk, the rows to keep (relative to the chunk's start).

    Returns
    -------
    rows : ndarray of shape (kept rows, sum of units)
        float64, C-contiguous; rows in chunk order, columns variable after variable.
    finite : bool ndarray of shape (kept rows,)
        The row is finite in every variable.
    """
    count = sum(int(k.size) for k in keeps)
    out = np.empty((count, sum(v.units for v in variables)))
    col = 0
    for variable in variables:
        row = 0
        for (a, b), keep in zip(pieces, keeps, strict=True):
            block = np.asarray(variable.source[variable.position, a:b])
            out[row:row + keep.size, col:col + variable.units] = block[keep]
            row += int(keep.size)
        col += variable.units
    return out, np.asarray(np.isfinite(out).all(axis=1), dtype=bool)


def image_rows(pieces: Sequence[Span], keeps: Sequence[np.ndarray]) -> np.ndarray:
    """Store row numbers of the kept rows of some chunks (int64, in chunk order)."""
    parts = [a + keep for (a, _), keep in zip(pieces, keeps, strict=True)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def until_finite(mask: np.ndarray,
                 compute: Callable[[np.ndarray], tuple[T, np.ndarray]]) -> tuple[T, np.ndarray]:
    """Run ``compute(mask)``; if it reports rows that are not finite, run it again without them.

    ``compute`` returns its result and the store rows among ``mask`` that hold NaN or inf in
    some variable (every variable reads every row of ``mask``, so one rerun suffices). Rows of
    invalid images are already out of ``mask``; other non-finite rows are rare, so the common
    case reads the features once.

    Returns
    -------
    (result, used)
        The result over the rows of ``used`` (``mask`` without the non-finite rows).
    """
    result, bad = compute(mask)
    if bad.size == 0:
        return result, mask
    used = mask.copy()
    used[bad] = False
    result, _ = compute(used)
    return result, used


def task_batches(pieces: Sequence[Span],
                 used: np.ndarray) -> list[tuple[list[Span], list[np.ndarray]]]:
    """Consecutive chunks grouped into tasks of at most :data:`TASK_ROWS` rows (at least one
    chunk each); chunks without used rows are left out.

    Returns
    -------
    list of (pieces, keeps)
        The chunks of each task and, per chunk, its used rows (relative to its start).
    """
    batches: list[tuple[list[Span], list[np.ndarray]]] = []
    current: list[Span] = []
    keeps: list[np.ndarray] = []
    rows = 0
    for a, b in pieces:
        keep = np.flatnonzero(used[a:b])
        if keep.size == 0:
            continue
        if current and rows + (b - a) > TASK_ROWS:
            batches.append((current, keeps))
            current, keeps, rows = [], [], 0
        current.append((a, b))
        keeps.append(keep)
        rows += b - a
    if current:
        batches.append((current, keeps))
    return batches
