"""Integrity check of a feature store: read every chunk, report what is damaged or missing.

Every feature chunk, coordinate and progress marker is written with a CRC32C checksum (see
:func:`featstore.store.default_compressors`), so a flipped byte fails to decode.
:func:`verify_store` reads all of them and returns a :class:`VerifyReport` that names each
problem by variable (layer), init and image range; ``featstore extract ... --repair``
recomputes exactly those chunks (:func:`mark_for_repair` clears their done markers, then the
normal resume path runs).

Kinds of problems
    ``corrupt``  the chunk exists but cannot be decoded (checksum mismatch, truncation) or holds
                 values that contradict the store's description;
    ``missing``  the chunk is marked done but its data is absent;
    ``stale``    the consolidated metadata in the root ``zarr.json`` lags behind the arrays (a
                 run was interrupted between two metadata writes); every extract run, and
                 ``--repair``, rewrites it, no data is affected;
    ``pending``  the chunk is not marked done: extraction has not finished it yet.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from . import schema as S
from .lock import LockInfo
from .store import (
    PARTIAL,
    FeatureStore,
    StoreLayout,
    delete_keys,
    list_keys,
    zarr_store,
)

__all__ = ["PROBLEM_KINDS", "ChunkProblem", "VerifyReport", "verify_store", "verify",
           "mark_for_repair", "repair_command"]

PROBLEM_KINDS: tuple[str, ...] = ("corrupt", "missing", "stale", "pending")
#: the variable name used for problems of the progress markers
MARKERS = f"{S.INTERNAL_GROUP}/{S.PROGRESS_ARRAY}"
#: the variable name used for the consolidated metadata in the root zarr.json
CONSOLIDATED = "zarr.json (consolidated metadata)"
#: the variable name of pending chunks (not yet extracted for any layer)
ALL_LAYERS = "(all layers)"
_READ_BYTES = 64 << 20  # bytes read per request while checking a layer


@dataclass(frozen=True)
class ChunkProblem:
    """One damaged, missing or unfinished chunk.

    Attributes
    ----------
    kind : {"corrupt", "missing", "stale", "pending"}
        What is wrong.
    variable : str
        Layer variable (e.g. ``"blocks-3"``), coordinate name, :data:`MARKERS` or
        :data:`CONSOLIDATED`.
    init : str or None
        Init name for per-init data, else None.
    chunk : int or None
        Image chunk number, or None for a whole-array problem.
    start, stop : int
        Half-open image range ``[start, stop)`` affected.
    detail : str
        The decoder's message or what contradicts the description.
    """

    kind: str
    variable: str
    init: str | None
    chunk: int | None
    start: int
    stop: int
    detail: str = ""


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify_store`.

    Attributes
    ----------
    url : str
        The store.
    layers, inits : tuple of str
        Layer variables and init names the store describes.
    n_images, chunk_images, n_chunks : int
        Image count, images per chunk, chunks per layer and init.
    chunks_read : int
        Layer chunks that were read and decoded.
    problems : tuple of ChunkProblem
        Everything found, in store order.
    leftovers : tuple of str
        Temporary files of interrupted writes (harmless; ``--repair`` removes them).
    holder : LockInfo or None
        The process writing the store during the check, if any.
    """

    url: str
    layers: tuple[str, ...]
    inits: tuple[str, ...]
    n_images: int
    chunk_images: int
    n_chunks: int
    chunks_read: int
    problems: tuple[ChunkProblem, ...]
    leftovers: tuple[str, ...] = ()
    holder: LockInfo | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when every chunk is present, readable and marked done."""
        return not self.problems

    @property
    def damaged(self) -> tuple[ChunkProblem, ...]:
        """Corrupt and missing problems (the data is damaged, not merely unfinished)."""
        return tuple(p for p in self.problems if p.kind in ("corrupt", "missing"))

    @property
    def pending(self) -> tuple[ChunkProblem, ...]:
        """Chunks not extracted yet."""
        return tuple(p for p in self.problems if p.kind == "pending")

    def count(self, kind: str) -> int:
        """Number of problems of one kind."""
        return sum(p.kind == kind for p in self.problems)

    def ranges(self) -> list[dict[str, Any]]:
        """Problems merged into runs of neighbouring chunks, one row per run.

        Returns
        -------
        list of dict
            Keys ``kind``, ``variable``, ``init``, ``chunks`` (``"3"`` or ``"3-5"``), ``images``
            (inclusive, ``"12-23"``), ``detail``.
        """
        rows: list[dict[str, Any]] = []
        last: ChunkProblem | None = None
        for problem in self.problems:
            if (last is not None and rows and problem.chunk is not None and last.chunk is not None
                    and (problem.kind, problem.variable, problem.init)
                    == (last.kind, last.variable, last.init)
                    and problem.chunk == last.chunk + 1):
                row = rows[-1]
                row["_stop_chunk"] = problem.chunk
                row["_stop"] = problem.stop
            else:
                rows.append({"kind": problem.kind, "variable": problem.variable,
                             "init": problem.init or "", "_start_chunk": problem.chunk,
                             "_stop_chunk": problem.chunk, "_start": problem.start,
                             "_stop": problem.stop, "detail": problem.detail})
            last = problem
        out = []
        for row in rows:
            first, final = row.pop("_start_chunk"), row.pop("_stop_chunk")
            start, stop = row.pop("_start"), row.pop("_stop")
            chunks = "" if first is None else (str(first) if first == final
                                               else f"{first}-{final}")
            images = str(start) if stop - start == 1 else f"{start}-{stop - 1}"
            out.append({**row, "chunks": chunks, "images": images})
        return out

    def summary(self) -> str:
        """One line: the verdict, where the first problem is and how to fix it."""
        checked = (f"{len(self.layers)} layers x {len(self.inits)} inits x {self.n_chunks} "
                   f"chunks")
        if self.ok:
            return f"store '{self.url}' is intact and complete ({checked}, every chunk read)"
        parts = []
        for kind, label in (("corrupt", "corrupt"), ("missing", "missing"),
                            ("pending", "not extracted yet")):
            n = self.count(kind)
            if n:
                parts.append(f"{n} chunk{'s' if n != 1 else ''} {label}")
        if self.count("stale"):
            parts.append("consolidated metadata out of date")
        first = (self.damaged or self.pending or self.problems)[0]
        where = first.variable + (f" init {first.init}" if first.init else "") + (
            "" if first.kind == "stale" else f" images {first.start}-{first.stop - 1}")
        if self.damaged:
            fix = f"recompute them with `{repair_command(self.meta, self.url)}`"
        elif not self.pending:
            fix = f"rewrite it with `{repair_command(self.meta, self.url)}`"
        elif self.holder is not None:
            fix = f"it is being written by {self.holder.describe()}"
        else:
            fix = "rerun the extract command to finish it"
        return f"store '{self.url}': {', '.join(parts)} (first: {where}); {fix}"


def repair_command(meta: Mapping[str, Any], url: str) -> str:
    """The ``featstore extract ... --repair`` command that recomputes a store's damaged chunks.

    Parameters
    ----------
    meta : mapping
        The store description ``attrs["featstore"]``.
    url : str
        The store location.
    """
    config: Mapping[str, Any] = meta.get("config") or {}
    args = ["featstore", "extract", str(config.get("data", "DATA")), "--store", url]
    if meta.get("model"):
        args += ["--model", str(meta["model"])]
    for init in meta.get("inits", []):
        args += ["--init", str(init["name"])]
    layers = config.get("layers")
    if layers and list(layers) != ["auto"]:
        args += ["--layers", ",".join(layers)]
    transform = meta.get("transform") or {}
    for option, value in (("--image-size", transform.get("size")), ("--pool", meta.get("pool")),
                          ("--dtype", meta.get("dtype")),
                          ("--chunk-images", meta.get("chunk_images")),
                          ("--batch-size", config.get("batch_size"))):
        if value is not None:
            args += [option, str(value)]
    if config.get("skip_unreadable"):
        args.append("--skip-unreadable")
    return shlex.join([*args, "--repair"])


def verify_store(url: str) -> VerifyReport:
    """Read every chunk of a store and report corrupt, missing and unfinished chunks.

    Parameters
    ----------
    url : str
        Store path or fsspec URL.

    Returns
    -------
    VerifyReport
        ``report.ok`` is True when every chunk of every layer and init is marked done, present
        and decodes with a matching checksum, and the coordinates agree with the description.

    Raises
    ------
    NotAStoreError
        When ``url`` is not a featstore store.
    """
    return verify(FeatureStore.open(str(url)))


def verify(store: FeatureStore) -> VerifyReport:
    """:func:`verify_store` on an open store handle."""
    meta = store.meta
    inits = tuple(store.init_names)
    n_images, chunk_images, n_chunks = store.n_images, store.chunk_images, store.n_chunks
    problems: list[ChunkProblem] = []
    problems += _check_coordinates(store, meta, inits)
    problems += _check_consolidated(store)
    valid_problems = _check_valid(store)
    done, marker_problems = _check_markers(store, inits)
    keys = set(list_keys(store.url))
    chunks_read = 0
    layer_problems: list[ChunkProblem] = []
    for var in store.layer_vars:
        array: zarr.Array = store.group[var]  # type: ignore[assignment]
        for i, init in enumerate(inits):
            for chunk in range(n_chunks):
                if done[i, chunk] and store.chunk_key(var, (i, chunk, 0)) not in keys:
                    start, stop = S.chunk_bounds(chunk, n_images, chunk_images)
                    layer_problems.append(ChunkProblem("missing", var, init, chunk, start, stop,
                                                       "marked done but its data is absent"))
            for chunk, detail in _unreadable_chunks(array, i, done[i], n_images, chunk_images):
                start, stop = S.chunk_bounds(chunk, n_images, chunk_images)
                layer_problems.append(ChunkProblem("corrupt", var, init, chunk, start, stop,
                                                   detail))
            chunks_read += int(done[i].sum())
    pending = [ChunkProblem("pending", ALL_LAYERS, init, chunk,
                            *S.chunk_bounds(chunk, n_images, chunk_images), "not marked done")
               for i, init in enumerate(inits) for chunk in np.flatnonzero(~done[i]).tolist()]
    problems += valid_problems + marker_problems + layer_problems + pending
    leftovers = tuple(k for k in sorted(keys) if PARTIAL.search(k))
    return VerifyReport(
        url=store.url, layers=tuple(store.layer_vars), inits=inits, n_images=n_images,
        chunk_images=chunk_images, n_chunks=n_chunks, chunks_read=chunks_read,
        problems=tuple(problems), leftovers=leftovers, holder=store.lock_holder(), meta=meta,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if text and "checksum" in text[0].lower():
        return "CRC32C checksum mismatch"
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


def _check_coordinates(store: FeatureStore, meta: Mapping[str, Any],
                       inits: tuple[str, ...]) -> list[ChunkProblem]:
    n = store.n_images
    n_classes = len(meta.get("classes", []))
    problems = []
    names = [S.IMAGE, S.LABEL, S.PATH] + ([S.SPLIT] if S.SPLIT in store.group else [])
    for name in names:
        try:
            values = np.asarray(store.group[name][:])  # type: ignore[index]
        except Exception as exc:  # noqa: BLE001 - any decode failure is reported
            problems.append(ChunkProblem("corrupt", name, None, None, 0, n, _first_line(exc)))
            continue
        detail = ""
        if values.shape != (n,):
            detail = f"shape {values.shape}, expected ({n},)"
        elif name == S.IMAGE and not np.array_equal(values, np.arange(n)):
            detail = f"values are not 0..{n - 1}"
        elif name == S.LABEL and n and (values.min() < 0 or values.max() >= n_classes):
            detail = f"labels outside 0..{n_classes - 1}"
        if detail:
            problems.append(ChunkProblem("corrupt", name, None, None, 0, n, detail))
    try:
        stored = [str(v) for v in np.asarray(store.group[S.INIT][:len(inits)])]  # type: ignore[index]
        if stored != list(inits):
            problems.append(ChunkProblem(
                "corrupt", S.INIT, None, None, 0, n,
                f"names {stored} differ from the description {list(inits)}"))
    except Exception as exc:  # noqa: BLE001
        problems.append(ChunkProblem("corrupt", S.INIT, None, None, 0, n, _first_line(exc)))
    return problems


def _check_consolidated(store: FeatureStore) -> list[ChunkProblem]:
    n = store.n_images
    try:
        group = zarr.open_group(zarr_store(store.url, read_only=True), mode="r", zarr_format=3,
                                use_consolidated=True)
        consolidated = group.metadata.consolidated_metadata
        if consolidated is None:
            raise ValueError("the root zarr.json holds no consolidated metadata")
        listed = consolidated.metadata
        stale = [name for name in [*store.layer_vars, S.INIT]
                 if name not in listed or tuple(listed[name].shape)  # type: ignore[union-attr]
                 != tuple(store.group[name].shape)]  # type: ignore[union-attr]
        if stale:
            raise ValueError(f"it is out of date for {', '.join(stale)}")
    except Exception as exc:  # noqa: BLE001
        return [ChunkProblem("stale", CONSOLIDATED, None, None, 0, n, _first_line(exc))]
    return []


def _check_valid(store: FeatureStore) -> list[ChunkProblem]:
    array: zarr.Array = store.group[S.VALID]  # type: ignore[assignment]
    problems = []
    for chunk in range(store.n_chunks):
        start, stop = S.chunk_bounds(chunk, store.n_images, store.chunk_images)
        try:
            array[start:stop]
        except Exception as exc:  # noqa: BLE001
            problems.append(ChunkProblem("corrupt", S.VALID, None, chunk, start, stop,
                                         _first_line(exc)))
    return problems


def _check_markers(store: FeatureStore,
                   inits: tuple[str, ...]) -> tuple[np.ndarray, list[ChunkProblem]]:
    array: zarr.Array = store.group[MARKERS]  # type: ignore[assignment]
    done = np.zeros((len(inits), store.n_chunks), dtype=bool)
    problems = []
    for i, init in enumerate(inits):
        try:
            done[i] = np.asarray(array[i, :], dtype=bool)
            continue
        except Exception:  # noqa: BLE001 - locate the damaged markers one by one
            pass
        for chunk in range(store.n_chunks):
            try:
                done[i, chunk] = bool(array[i, chunk])
            except Exception as exc:  # noqa: BLE001
                start, stop = S.chunk_bounds(chunk, store.n_images, store.chunk_images)
                problems.append(ChunkProblem("corrupt", MARKERS, init, chunk, start, stop,
                                             _first_line(exc)))
    return done, problems


def _unreadable_chunks(array: zarr.Array, init_index: int, done: np.ndarray, n_images: int,
                       chunk_images: int) -> Iterator[tuple[int, str]]:
    """Done chunks of one layer and init that fail to decode, read many chunks per request."""
    row_bytes = int(np.prod(array.shape[2:])) * array.dtype.itemsize  # type: ignore[union-attr]
    per_read = max(1, _READ_BYTES // max(1, row_bytes * chunk_images))
    chunks = np.flatnonzero(done).tolist()
    runs: list[list[int]] = []
    for chunk in chunks:  # contiguous runs of done chunks, at most per_read chunks each
        if runs and chunk == runs[-1][-1] + 1 and len(runs[-1]) < per_read:
            runs[-1].append(chunk)
        else:
            runs.append([chunk])
    for run in runs:
        start = S.chunk_bounds(run[0], n_images, chunk_images)[0]
        stop = S.chunk_bounds(run[-1], n_images, chunk_images)[1]
        try:
            array[init_index, start:stop]
            continue
        except Exception:  # noqa: BLE001 - locate the failing chunk(s) below
            pass
        for chunk in run:
            lo, hi = S.chunk_bounds(chunk, n_images, chunk_images)
            try:
                array[init_index, lo:hi]
            except Exception as exc:  # noqa: BLE001
                yield chunk, _first_line(exc)


def mark_for_repair(store: FeatureStore, report: VerifyReport,
                    layout: StoreLayout) -> set[int]:
    """Prepare the damaged chunks of a report to be computed again by the normal resume path.

    Clears the done marker of every corrupt or missing layer chunk (all layers of that init and
    chunk are recomputed, the network runs once per image anyway), drops damaged ``valid`` chunks
    (and recomputes their chunks for every init), rewrites damaged coordinates from ``layout``,
    rewrites consolidated metadata and removes temporary files of interrupted writes.

    Parameters
    ----------
    store : FeatureStore
        The store, opened for writing, under its lock.
    report : VerifyReport
        :func:`verify` of that store.
    layout : StoreLayout
        The layout of the current configuration (identical to the store's).

    Returns
    -------
    set of int
        Indices of the inits that have chunks to recompute.
    """
    inits = list(report.inits)
    todo: set[tuple[int, int]] = set()
    rewrite_coords = False
    for problem in report.damaged:
        if problem.variable == S.VALID and problem.chunk is not None:
            store.reset_valid(problem.chunk)
            todo.update((i, problem.chunk) for i in range(len(inits)))
        elif problem.init is not None and problem.chunk is not None:
            todo.add((inits.index(problem.init), problem.chunk))
        elif problem.variable in (S.IMAGE, S.LABEL, S.PATH, S.SPLIT, S.INIT):
            rewrite_coords = True
    if rewrite_coords:
        store.rewrite_coordinates(layout)
    for init_index, chunk in sorted(todo):
        store.mark_pending(init_index, chunk)
    if report.leftovers:
        delete_keys(store.url, report.leftovers)
    store.consolidate()
    return {i for i, _ in todo}
