"""The probe sweep: classifiers x layers x inits x folds on a feature store, with dask.

This module is the I/O and orchestration edge of probing; the compute lives in
:mod:`featstore.probing` (fit/score one block) and :mod:`featstore.gain` (knowledge gain). It

1. validates the request against the store (labels, classes, layers, inits, completeness) and
   builds one :class:`~featstore.probing.FoldPlan` shared by every layer, init and classifier
   (``StratifiedKFold(n_splits=K, shuffle=True, random_state=seed)`` over the usable images,
   ``StratifiedGroupKFold`` with the same arguments when the images are grouped by an image
   coordinate or a regex on their paths, or the store's own split);
2. reads features lazily (:func:`featstore.store.open_store`) and runs one dask task per
   (init, layer) block, which loads the block once and evaluates every classifier and fold on
   it. When every classifier can be fit from sufficient statistics (ridge, nearest centroid),
   each block is instead processed chunk by chunk -- sums per chunk, a tree reduction, a
   solve, and predictions per chunk -- so memory is bounded by the chunk size, not the number
   of images;
3. writes the results as an :class:`xarray.Dataset` into the store's ``probes/<run>`` group
   (:mod:`featstore.results` holds that schema, reads runs back and exports CSV tables).

Schedulers: local threads by default; ``"threads:N"``; ``"sync"`` (no parallelism, for
debugging); ``"local:N"`` starts a :class:`distributed.LocalCluster` of N single-threaded
worker processes; ``"tcp://HOST:PORT"`` uses an existing dask.distributed scheduler (its
workers must be able to read the store's path or URL). Every scheduler gives identical numbers.

:func:`probe` is the public entry; the results contract (dims, variables, coordinates) is
documented in :mod:`featstore.results`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Final

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from . import schema as S
from .config import (
    DEFAULT_AUTO_GRID,
    DEFAULT_INNER_FOLDS,
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    ProbeConfig,
    parse_auto_grid,
    parse_positive_float,
    parse_positive_int,
    parse_store_url,
)
from .errors import (
    FeatstoreRuntimeError,
    ProbeInputError,
    StoreIncompleteError,
)
from .gain import check_gain_inits
from .inits import init_kind
from .leakcheck import LEAK_ATTR, leak_summary, not_checked, store_leaks
from .leaks import LeakResult, groups_from_paths
from .probing import (
    METRICS,
    BlockResult,
    ClassifierFailure,
    ClassifierSpec,
    FoldPlan,
    GroupStats,
    chance_levels,
    fit_from_stats,
    group_stats,
    merge_stats,
    parse_classifiers,
    predict_from_stats,
    probe_block,
)
from .probing.block import failing_as
from .progress import Progress
from .results import (
    CHOSEN_PARAM,
    CLASSIFIER,
    CONVERGED,
    FOLD,
    GROUP,
    INIT_KIND,
    INNER_UNCONVERGED,
    LAYER,
    LAYER_MODULE,
    LAYER_UNITS,
    METRIC,
    RESULTS_ATTR,
    TEST_FOLD,
    list_runs,
    open_results,
    write_results,
)
from .scheduler import Runner, blas_limits, parse_scheduler
from .store import FeatureStore, open_store
from .versions import PROBE_LIBRARIES, library_versions

__all__ = ["probe", "run_probe", "stored_run"]

#: bump when a change to the probe computation changes numbers (invalidates stored runs); 4:
#: per-fold ``converged`` / ``chosen_param`` / ``inner_unconverged``, ``=auto`` classifiers; 5:
#: linear-svm by finite Newton
_PROBE_FORMAT: Final = 5


# ---------------------------------------------------------------------------------------------
# parsing and validation


@dataclass(frozen=True)
class _Request:
    """A validated sweep: resolved config, store handle, the fold plan and the run id."""

    config: ProbeConfig
    specs: tuple[ClassifierSpec, ...]
    store: FeatureStore
    dataset: xr.Dataset
    layers: list[str]
    inits: list[str]
    scheduler: tuple[str, int | str | None]
    run_id: str
    groups: np.ndarray | None = None


def _grouping(config: ProbeConfig) -> dict[str, str] | None:
    """How the run groups its images, as recorded in the results attrs (None: ungrouped)."""
    if config.group_by is not None:
        return {"by": config.group_by}
    if config.group_regex is not None:
        return {"regex": config.group_regex}
    return None


def _resolve_groups(config: ProbeConfig, store: FeatureStore,
                    ds: xr.Dataset) -> np.ndarray | None:
    """Group of every image (object array of str, shape (n_images,)), or None without
    ``group_by`` / ``group_regex``."""
    url = config.store
    if config.group_by is not None and config.group_regex is not None:
        raise ProbeInputError("--group-by and --group-regex both given; choose one way to "
                              "group the images")
    if config.group_by is None and config.group_regex is None:
        return None
    if config.split:
        raise ProbeInputError("--group-by/--group-regex cannot be combined with --split: the "
                              "store's split is fixed; drop --split to use grouped K-fold")
    if config.group_regex is not None:
        values = groups_from_paths([str(p) for p in ds[S.PATH].values], config.group_regex)
        return np.asarray(values, dtype=object)
    name = config.group_by
    candidates = [str(c) for c, v in ds.coords.items()
                  if v.dims == (S.IMAGE,) and c not in (S.IMAGE, S.LABEL, S.VALID)]
    if name not in candidates:
        extra = store.image_coord_names
        hint = (f"its image coordinates: {', '.join(candidates)}" if extra else
                "it has no extra image coordinates; extract from a CSV manifest with a column "
                "such as 'patient', or use --group-regex on the image paths")
        raise ProbeInputError(f"--group-by {name!r} is not an image coordinate of store "
                              f"'{url}'; {hint}")
    column = np.asarray([str(v) for v in ds[name].values], dtype=object)
    empty = np.flatnonzero(column == "")
    if empty.size:
        path = str(ds[S.PATH].values[empty[0]])
        raise ProbeInputError(f"--group-by {name!r}: {empty.size} images have an empty value "
                              f"(first: '{path}'); every image needs a group")
    return column


def _fingerprint(store: FeatureStore, inits: Sequence[str]) -> dict[str, Any]:
    described = {d["name"]: d for d in store.meta.get("inits", [])}
    return {"identity": store.identity(), "inits": [described.get(n, {"name": n}) for n in inits]}


def _run_id(config: ProbeConfig, fingerprint: dict[str, Any],
            groups: np.ndarray | None = None) -> str:
    content: dict[str, Any] = {"probe": config.identity(), "store": fingerprint,
                               "format": _PROBE_FORMAT}
    if groups is not None:  # the group values are part of a grouped run (a manifest may change)
        content["groups"] = hashlib.sha256(json.dumps(groups.tolist()).encode()).hexdigest()
    payload = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _prepare(config: ProbeConfig, require_gain: bool = False) -> _Request:
    """Validate ``config`` against the store without reading any features."""
    url = parse_store_url(config.store)
    specs = parse_classifiers(config.classifiers)
    scheduler = parse_scheduler(config.scheduler)
    if not config.split:
        parse_positive_int("--folds", config.folds, minimum=2)
    parse_positive_float("--tol", config.tol)
    parse_positive_int("--max-iter", config.max_iter)
    grid = parse_auto_grid(config.auto_grid)
    parse_positive_int("--inner-folds", config.inner_folds, minimum=2)
    store = FeatureStore.open(url)
    meta = store.meta
    layers = S.select_layers(meta["layers"], meta.get("layer_modules", {}),
                             S.split_names(config.layers))
    if not store.init_names:
        raise ProbeInputError("the store has no inits; run `featstore extract` first")
    inits = S.select_inits(store.init_names, S.split_names(config.inits), ProbeInputError)
    if require_gain:
        check_gain_inits(inits)
    done = store.progress()
    for name in inits:
        row = done[store.init_names.index(name)]
        if not row.all():
            raise StoreIncompleteError(
                f"store '{url}' is still being extracted: init {name!r} has "
                f"{int(row.sum())} of {row.size} chunks; let `featstore extract` finish (rerun "
                "it to resume), or pick complete inits with --inits"
            )
    ds = open_store(url)
    resolved = replace(
        config, store=url, classifiers=tuple(s.name for s in specs), layers=tuple(layers),
        inits=tuple(inits), folds=1 if config.split else config.folds, auto_grid=grid,
    )
    groups = _resolve_groups(resolved, store, ds)
    return _Request(resolved, specs, store, ds, layers, inits, scheduler,
                    _run_id(resolved, _fingerprint(store, inits), groups), groups)


def _usable(request: _Request, finite: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels, the usable-image mask and the class count; raises on unusable labels."""
    ds = request.dataset
    url = request.config.store
    classes = list(request.store.meta.get("classes") or [])
    if S.LABEL not in ds.coords:
        raise ProbeInputError(f"store '{url}' has no labels ('{S.LABEL}' coordinate); "
                              "extract from labelled data (ImageFolder or a manifest with labels)")
    labels = np.asarray(ds[S.LABEL].values, dtype=np.int64)
    valid = (np.asarray(ds[S.VALID].values, dtype=bool) if S.VALID in ds.coords
             else np.ones(labels.shape, dtype=bool))
    n_classes = max(len(classes), int(labels.max(initial=-1)) + 1)
    labelled = (labels >= 0) & (labels < max(n_classes, 1))
    if not labelled.any() or not classes:
        raise ProbeInputError(f"store '{url}' has no labels; extract from labelled data "
                              "(ImageFolder or a manifest with labels)")
    used = valid & labelled & finite
    present = np.unique(labels[used])
    if present.size < 2:
        which = ", ".join(classes[k] if k < len(classes) else str(k) for k in present) or "none"
        raise ProbeInputError(
            f"store '{url}' has {present.size} class among its usable images ({which}); "
            "probing needs at least 2 classes"
        )
    return labels, used, n_classes


def _check_training_classes(plan: FoldPlan, labels: np.ndarray, used: np.ndarray,
                            classes: Sequence[str], what: str,
                            groups: np.ndarray | None = None) -> None:
    """Every class of the usable images has training images in every fold, or exit 2."""
    present = np.unique(labels[used])
    for f in range(plan.n_folds):
        trained = np.unique(labels[plan.train_mask(f)])
        missing = [int(k) for k in present if k not in trained]
        if missing:
            name = classes[missing[0]] if missing[0] < len(classes) else str(missing[0])
            where = "the training images (train + val)" if what == "--split" else \
                f"the training images of fold {f}"
            if groups is not None:
                held = sorted(set(groups[used & (labels == missing[0])].tolist()))
                raise ProbeInputError(
                    f"class {name!r} has no image among {where}: all its images are in the "
                    f"group(s) that fold {f} tests ({', '.join(held[:5])}); a probe cannot "
                    "learn a class it never sees: use fewer --folds, or leave the class out"
                )
            raise ProbeInputError(
                f"class {name!r} has no image among {where}; a probe cannot learn a class it "
                "never sees: give it training images, or leave the class out of the data"
            )


def _check_group_count(config: ProbeConfig, groups: np.ndarray) -> None:
    """Grouped K-fold needs at least K groups among the usable images, or exit 2."""
    n_groups = len(set(groups.tolist()))
    if config.folds <= n_groups:
        return
    what = (f"{config.group_by!r} values" if config.group_by is not None
            else "groups of --group-regex")
    raise ProbeInputError(
        f"--folds {config.folds} needs at least {config.folds} groups, but the {groups.size} "
        f"usable images hold {n_groups} {what}; use --folds {n_groups} or fewer"
        if n_groups >= 2 else
        f"--folds {config.folds}: the {groups.size} usable images hold {n_groups} {what}; "
        "grouped folds need at least 2 groups"
    )


def _fold_plan(request: _Request, labels: np.ndarray, used: np.ndarray,
               n_classes: int) -> FoldPlan:
    config = request.config
    classes = list(request.store.meta.get("classes") or [])
    url = config.store
    if config.split:
        ds = request.dataset
        if S.SPLIT not in ds.coords:
            raise ProbeInputError(f"--split: store '{url}' has no '{S.SPLIT}' coordinate; "
                                  "drop --split to use stratified K-fold")
        split = np.array([str(v) for v in ds[S.SPLIT].values], dtype=object)
        train = used & np.isin(split, ("train", "val"))
        test = used & (split == "test")
        if not test.any() or not train.any():
            found = ", ".join(sorted(set(split[used].tolist())))
            raise ProbeInputError(
                f"--split needs usable images with split 'train' (or 'val') and 'test'; store "
                f"'{url}' has: {found}"
            )
        if np.unique(labels[train]).size < 2:
            raise ProbeInputError(f"--split: the training images of store '{url}' hold fewer "
                                  "than 2 classes")
        plan = FoldPlan.from_split(train, test, labels, n_classes)
    else:
        if request.groups is not None:
            _check_group_count(config, request.groups[used])
        counts = np.bincount(labels[used], minlength=n_classes)
        present = np.flatnonzero(counts)
        smallest = present[np.argmin(counts[present])]
        if config.folds > counts[smallest]:
            name = classes[smallest] if smallest < len(classes) else str(smallest)
            raise ProbeInputError(
                f"--folds {config.folds} is larger than the smallest class ({name!r}: "
                f"{counts[smallest]} usable images); use --folds {max(2, counts[smallest])} "
                "or fewer" if counts[smallest] >= 2 else
                f"--folds {config.folds}: class {name!r} has only {counts[smallest]} usable "
                "image; every class needs at least 2"
            )
        rows = np.flatnonzero(used)
        test_fold = np.full(labels.shape, -1, dtype=np.int64)
        if request.groups is None:
            splitter = StratifiedKFold(n_splits=config.folds, shuffle=True,
                                       random_state=config.seed)
            parts = splitter.split(np.zeros(rows.size), labels[rows])
        else:
            grouped = StratifiedGroupKFold(n_splits=config.folds, shuffle=True,
                                           random_state=config.seed)
            parts = grouped.split(np.zeros(rows.size), labels[rows], request.groups[rows])
        for fold, (_, test_rows) in enumerate(parts):
            test_fold[rows[test_rows]] = fold
        plan = FoldPlan.from_test_fold(test_fold, labels, n_classes)
    _check_training_classes(plan, labels, used, classes, "--split" if config.split else "fold",
                            request.groups)
    auto = [s.name for s in request.specs if s.auto is not None]
    if auto:
        for f in range(plan.n_folds):
            counts = np.bincount(labels[plan.train_mask(f)], minlength=n_classes)
            present = np.flatnonzero(counts)
            smallest = present[np.argmin(counts[present])]
            if counts[smallest] < config.inner_folds:
                name = classes[smallest] if smallest < len(classes) else str(smallest)
                raise ProbeInputError(
                    f"--inner-folds {config.inner_folds} (nested CV of {auto[0]}) is larger "
                    f"than class {name!r} in the training images of fold {f} "
                    f"({counts[smallest]} images); use --inner-folds "
                    f"{max(2, int(counts[smallest]))} or fewer, or a fixed value such as "
                    f"{auto[0].replace('auto', '1')}"
                    if counts[smallest] >= 2 else
                    f"nested CV of {auto[0]} needs at least 2 training images of every class "
                    f"in every fold; class {name!r} has {counts[smallest]} in fold {f}: use a "
                    f"fixed value such as {auto[0].replace('auto', '1')}"
                )
        plan = plan.with_inner(config.inner_folds, config.seed)
    knn = [int(s.param("k")) for s in request.specs if s.kind == "knn"]
    if knn:
        smallest_train = min(int(plan.train_mask(f).sum()) for f in range(plan.n_folds))
        if max(knn) > smallest_train:
            raise ProbeInputError(
                f"--classifier knn:k={max(knn)} exceeds the {smallest_train} training images "
                f"of the smallest fold; use k <= {smallest_train}"
            )
    return plan


# ---------------------------------------------------------------------------------------------
# execution


@contextmanager
def _naming_block(layer: str, init: str) -> Iterator[None]:
    """Turn a classifier's failure into one line naming layer, init and classifier (exit 1)."""
    try:
        yield
    except ClassifierFailure as exc:
        raise FeatstoreRuntimeError(
            f"probe failed on layer {layer!r}, init {init!r}, {exc}; the other blocks are fine "
            "(--layers / --inits / --classifier leave this one out)"
        ) from None


def _block_task(block: np.ndarray, plan: FoldPlan, specs: tuple[ClassifierSpec, ...],
                tol: float, max_iter: int, grid: tuple[float, ...], blas_threads: int | None,
                layer: str, init: str) -> BlockResult:
    with _naming_block(layer, init):
        if blas_threads is None:
            return probe_block(block, plan, specs, tol=tol, max_iter=max_iter, grid=grid)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=blas_threads, user_api="blas"):
            return probe_block(block, plan, specs, tol=tol, max_iter=max_iter, grid=grid)


def _fit_stats_task(stats: GroupStats, plan: FoldPlan, specs: tuple[ClassifierSpec, ...],
                    layer: str, init: str) -> Any:
    """:func:`fit_from_stats` of one block, failures named (see :func:`_naming_block`)."""
    with _naming_block(layer, init), failing_as(specs):
        return fit_from_stats(stats, plan, specs)


#: independent accumulation chains per (init, layer) block in the chunked ridge /
#: nearest-centroid path: parallelism within a block, at the cost of one set of sums
#: (``folds * d * d`` float64 for ridge) per chain; blocks themselves run in parallel
_STATS_LANES: Final = 2


def _read_rows(source: zarr.Array, position: int, rows: tuple[int, int]) -> np.ndarray:
    """Rows ``rows[0]:rows[1]`` of init ``position`` of a layer's Zarr array."""
    return np.asarray(source[position, rows[0]:rows[1]])


def _rows_shift(source: zarr.Array, position: int, rows: tuple[int, int],
                groups: np.ndarray) -> np.ndarray:
    """Mean of the used rows among ``rows``: the shift that keeps the sums well conditioned."""
    chunk = _read_rows(source, position, rows)
    used = np.flatnonzero(groups >= 0)
    if used.size == 0:
        return np.zeros(chunk.shape[1])
    return np.asarray(chunk[used], dtype=np.float64).mean(axis=0)


def _accumulate(total: GroupStats | None, source: zarr.Array, position: int,
                rows: tuple[int, int], labels: np.ndarray, groups: np.ndarray, n_groups: int,
                n_classes: int, shift: np.ndarray, gram: bool) -> GroupStats:
    """``total`` plus the sufficient statistics of rows ``rows`` (read from ``source``)."""
    stats = group_stats(_read_rows(source, position, rows), labels, groups, n_groups, n_classes,
                        shift, gram)
    return stats if total is None else merge_stats(total, stats)


def _assemble_stats(parts: list[np.ndarray], plan: FoldPlan) -> BlockResult:
    return BlockResult.direct(np.concatenate(parts, axis=1), plan)


def _predict_rows(models: Any, source: zarr.Array, position: int, rows: tuple[int, int],
                  groups: np.ndarray, plan: FoldPlan, shift: np.ndarray) -> np.ndarray:
    """Read rows ``rows`` of init ``position`` from the layer array ``source``; predict them."""
    return predict_from_stats(models, _read_rows(source, position, rows), groups, plan, shift)


def _stats_graph(chunk_rows: Sequence[int], source: zarr.Array, position: int, plan: FoldPlan,
                 plan_ref: Any, specs: tuple[ClassifierSpec, ...], layer: str,
                 init: str) -> Any:
    """Chunked ridge / nearest-centroid with memory bounded by chunks, not rows.

    Every task reads its own rows (one chunk; ``chunk_rows`` are the chunk lengths along
    images) of init ``position`` from the layer's Zarr array ``source``. The first pass adds
    the chunks' sufficient statistics along :data:`_STATS_LANES` chains of consecutive chunks,
    so at most one running sum per chain exists at any time; the models are fit from the total;
    the second pass predicts chunk by chunk. No task holds a chunk for another: dask keeps a
    loaded chunk until every task that uses it has run, so a loader shared by both passes, or a
    tree of partial sums, would make memory grow with the rows. ``plan_ref`` is the plan as one
    shared graph node, so that a distributed scheduler ships it to each worker once rather than
    with every chunk task.
    """
    delayed = dask.delayed
    bounds = np.cumsum((0, *chunk_rows))
    pieces = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    gram = any(s.kind == "ridge" for s in specs)
    shift = delayed(_rows_shift, pure=True)(source, position, pieces[0],
                                            plan.groups[: pieces[0][1]])
    lanes = np.array_split(np.arange(len(pieces)), min(_STATS_LANES, len(pieces)))
    totals = []
    for lane in lanes:
        total = None
        for k in lane:
            a, b = pieces[k]
            total = delayed(_accumulate, pure=True)(
                total, source, position, (a, b), plan.labels[a:b], plan.groups[a:b],
                plan.n_groups, plan.n_classes, shift, gram)
        totals.append(total)
    while len(totals) > 1:
        totals = [delayed(merge_stats, pure=True)(*totals[:2]), *totals[2:]]
    models = delayed(_fit_stats_task, pure=True)(totals[0], plan_ref, specs, layer, init)
    predictions = [
        delayed(_predict_rows, pure=True)(models, source, position, (a, b), plan.groups[a:b],
                                          plan_ref, shift)
        for a, b in pieces
    ]
    return delayed(_assemble_stats, pure=True)(predictions, plan_ref)


def _finite_rows(request: _Request, runner: Runner) -> np.ndarray:
    """Bool array (n_images,): every selected layer and init is finite in that row."""
    ds = request.dataset
    positions = [request.store.init_names.index(n) for n in request.inits]
    parts = []
    for var in request.layers:
        array = ds[var].data
        for pos in positions:
            parts.append(da.isfinite(array[pos]).all(axis=1))
    return np.asarray(runner.compute(da.stack(parts).all(axis=0)), dtype=bool)


def _results_dataset(request: _Request, plan: FoldPlan, blocks: dict[tuple[int, int], BlockResult],
                     used: np.ndarray, excluded: dict[str, int],
                     leaks: dict[str, Any] | None = None) -> xr.Dataset:
    specs = request.specs
    layers = request.layers
    inits = request.inits
    meta = request.store.meta
    n_images = plan.groups.shape[0]
    score = np.full((len(specs), len(layers), len(inits), plan.n_folds, len(METRICS)), np.nan)
    prediction = np.full((len(specs), len(layers), len(inits), n_images), -1, dtype=np.int16)
    per_fold = (len(specs), len(layers), len(inits), plan.n_folds)
    converged = np.ones(per_fold, dtype=bool)
    chosen = np.full(per_fold, np.nan)
    inner_unconverged = np.zeros(per_fold, dtype=np.int64)
    unconverged: dict[str, int] = {}
    for (i, j), result in blocks.items():
        score[:, j, i] = result.scores
        prediction[:, j, i] = result.predictions
        converged[:, j, i] = result.converged
        chosen[:, j, i] = result.chosen
        inner_unconverged[:, j, i] = result.inner_unconverged
        for s, spec in enumerate(specs):
            if result.unconverged[s]:
                unconverged[spec.name] = unconverged.get(spec.name, 0) + int(result.unconverged[s])
    test_fold = plan.test_fold().astype(np.int16)
    modules = meta.get("layer_modules", {})
    units = meta.get("units", {})
    config = request.config
    info = {
        "config": config.to_dict(),
        "run": request.run_id,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds"),
        "versions": library_versions(PROBE_LIBRARIES),
        "classes": list(meta.get("classes") or []),
        "n_images_used": int(used.sum()),
        "excluded": excluded,
        "unconverged": unconverged,
        "store_model": meta.get("model"),
        "chance_definition": "accuracy: majority-class rate; balanced_accuracy: 1/K; macro_f1: "
                             "macro-F1 of always predicting the majority class, 2p/((1+p)K)",
    }
    obj = np.dtype(object)
    extra: dict[str, Any] = {}
    if request.groups is not None:
        info["grouping"] = {**(_grouping(config) or {}),
                            "n_groups": len(set(request.groups[used].tolist())),
                            "splitter": "StratifiedGroupKFold(shuffle=True)"}
        extra[GROUP] = (S.IMAGE, np.asarray(request.groups, dtype=obj))
    if leaks is not None:
        info[LEAK_ATTR] = leaks
    return xr.Dataset(
        {
            "score": ((CLASSIFIER, LAYER, S.INIT, FOLD, METRIC), score),
            "prediction": ((CLASSIFIER, LAYER, S.INIT, S.IMAGE), prediction),
            CHOSEN_PARAM: ((CLASSIFIER, LAYER, S.INIT, FOLD), chosen),
            CONVERGED: ((CLASSIFIER, LAYER, S.INIT, FOLD), converged),
            INNER_UNCONVERGED: ((CLASSIFIER, LAYER, S.INIT, FOLD), inner_unconverged),
        },
        coords={
            CLASSIFIER: np.array([s.name for s in specs], dtype=obj),
            LAYER: np.array(layers, dtype=obj),
            S.INIT: np.array(inits, dtype=obj),
            FOLD: np.arange(plan.n_folds, dtype=np.int64),
            METRIC: np.array(METRICS, dtype=obj),
            S.IMAGE: np.arange(n_images, dtype=np.int64),
            S.LABEL: (S.IMAGE, plan.labels.astype(np.int64)),
            TEST_FOLD: (S.IMAGE, test_fold),
            "chance": (METRIC, chance_levels(plan.labels[test_fold >= 0], plan.n_classes)),
            INIT_KIND: (S.INIT, np.array([init_kind(n) for n in inits], dtype=obj)),
            LAYER_MODULE: (LAYER, np.array([modules.get(v, v) for v in layers],
                                             dtype=obj)),
            LAYER_UNITS: (LAYER, np.array([int(units.get(v, request.dataset[v].shape[-1]))
                                             for v in layers], dtype=np.int64)),
            **extra,
        },
        attrs={RESULTS_ATTR: info},
    )


def run_probe(config: ProbeConfig, progress: Progress | None = None,
              require_gain: bool = False, leaks: LeakResult | None = None) -> xr.Dataset:
    """Run (or reuse) the sweep described by ``config``; see :func:`probe`.

    Parameters
    ----------
    config : ProbeConfig
    progress : Progress, optional
        Told the number of (init, layer) blocks, then each finished block.
    require_gain : bool
        Fail before computing when the selected inits cannot give a knowledge gain (no
        ``pretrained`` or no ``random:*`` init).
    leaks : LeakResult, optional
        Near-duplicates of the store's images, already found (``featstore study`` hashes each
        data set once); default: hashed here when ``config.leak_check`` and the images can be
        read.

    Returns
    -------
    xarray.Dataset
        The results, as :func:`open_results` returns them.
    """
    request = _prepare(config, require_gain=require_gain)
    url = request.config.store
    if not config.force and request.run_id in list_runs(url):
        return open_results(url, request.run_id)
    kind, argument = request.scheduler
    everything = np.ones(request.store.n_images, dtype=bool)
    _fold_plan(request, *_usable(request, everything))  # cheap checks before reading features
    with Runner(kind, argument) as runner, blas_limits(kind, argument):
        finite = _finite_rows(request, runner)
        labels, used, n_classes = _usable(request, finite)
        plan = _fold_plan(request, labels, used, n_classes)
        ds = request.dataset
        positions = [request.store.init_names.index(n) for n in request.inits]
        stats_only = all(s.uses_stats for s in request.specs)
        keys: list[tuple[int, int]] = []
        tasks = []
        plan_ref = dask.delayed(plan, pure=True)  # one graph node shared by every task
        # a LocalCluster runs one single-threaded process per worker: one BLAS thread each
        blas_threads = runner.blas_threads
        for i, pos in enumerate(positions):
            for j, var in enumerate(request.layers):
                array = ds[var].data[pos]
                if stats_only:
                    task = _stats_graph(array.chunks[0], request.store.layer_array(var), pos, plan,
                                        plan_ref, request.specs, var, request.inits[i])
                else:
                    task = dask.delayed(_block_task, pure=True)(
                        array, plan_ref, request.specs, request.config.tol,
                        request.config.max_iter, request.config.auto_grid, blas_threads, var,
                        request.inits[i])
                keys.append((i, j))
                tasks.append(task)
        if progress is not None:
            progress.start("probe", len(tasks))
        outputs = runner.compute_all(tasks, (lambda: progress.advance(1)) if progress else _noop)
        if progress is not None:
            progress.finish("probe")
    valid = (np.asarray(ds[S.VALID].values, dtype=bool) if S.VALID in ds.coords
             else np.ones(labels.shape, dtype=bool))
    excluded = {
        "invalid": int((~valid).sum()),
        "unlabelled": int((valid & (labels < 0)).sum()),
        "non_finite": int((valid & (labels >= 0) & ~finite).sum()),
    }
    checked = _leak_check(request, plan, leaks)
    results = _results_dataset(request, plan, dict(zip(keys, outputs, strict=True)), used,
                               excluded, checked)
    write_results(url, results)
    return open_results(url, request.run_id)


def _leak_check(request: _Request, plan: FoldPlan, leaks: LeakResult | None) -> dict[str, Any]:
    """Near-copies of training images among the test images of ``plan`` (the attrs entry)."""
    if not request.config.leak_check and leaks is None:
        return not_checked("skipped (--no-leak-check)")
    paths = [str(p) for p in request.dataset[S.PATH].values]
    if leaks is None:
        groups = None if request.groups is None else list(request.groups)
        found = store_leaks(request.store.meta.get("data") or {}, paths, groups)
        if isinstance(found, str):
            return not_checked(f"images not readable: {found}")
        leaks = found
    elif list(leaks.paths) != paths:
        return not_checked("the leak check given was made for other images")
    train = plan.train_mask(0) if request.config.split else None
    return leak_summary(leaks, plan.test_fold(), train)


def stored_run(config: ProbeConfig) -> str | None:
    """The id of stored results for ``config`` (which a run without ``force`` reuses), or None."""
    request = _prepare(config)
    return request.run_id if request.run_id in list_runs(request.config.store) else None


def _noop() -> None:
    return None


def probe(
    store: str | os.PathLike[str],
    classifiers: Sequence[str] | str = ("logreg",),
    folds: int = 5,
    seed: int = 0,
    split: bool = False,
    layers: Sequence[str] | None = None,
    inits: Sequence[str] | None = None,
    scheduler: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    auto_grid: Sequence[float] = DEFAULT_AUTO_GRID,
    inner_folds: int = DEFAULT_INNER_FOLDS,
    group_by: str | None = None,
    group_regex: str | None = None,
    leak_check: bool = True,
) -> xr.Dataset:
    """Fit classifiers on every layer and init of a feature store; return and store the results.

    Each classifier is evaluated on the same folds for every layer and init (paired
    comparisons): ``StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)`` over the
    usable images -- valid, labelled, and finite in every selected layer and init -- or, with
    ``split``, one fold that trains on the store's ``"train"`` and ``"val"`` images and tests on
    its ``"test"`` images (validation images are training data: only ``=auto`` classifiers
    select a hyperparameter, by nested CV inside the training images). Features are
    standardized with training-fold statistics only.

    A rerun with the same configuration on the same store returns the stored results without
    computing (``force=True`` recomputes).

    Parameters
    ----------
    store : str or PathLike
        Feature store path or URL.
    classifiers : sequence of str
        Specs such as ``"logreg"``, ``"logreg:C=0.01,0.1,1,10"``, ``"logreg:C=auto"``,
        ``"linear-svm:C=1"``,
        ``"ridge:alpha=1,10"``, ``"knn:k=5"``, ``"nearest-centroid"``
        (:func:`featstore.probing.parse_classifier`).
    folds : int
        Number of folds (>= 2; at most the smallest class's count).
    seed : int
        Fold shuffling seed.
    split : bool
        Use the store's split instead of K folds.
    layers, inits : sequence of str, optional
        Subsets (layer module paths or variable names; init names); default all.
    scheduler : str, optional
        See :func:`parse_scheduler`.
    force : bool
        Recompute even if stored.
    progress : Progress, optional
    tol, max_iter : float, int
        Stopping rule of logreg / linear-svm (gradient infinity norm, iterations); the default
        tolerance, 1e-6, is tighter than scikit-learn's so that results do not depend on the
        solver's path (:data:`featstore.config.DEFAULT_TOL`). Every fit records whether it
        converged (results variable ``converged``).
    auto_grid, inner_folds : sequence of float, int
        Candidate values and inner folds of ``=auto`` classifiers (``logreg:C=auto``,
        ``linear-svm:C=auto``, ``ridge:alpha=auto``): nested stratified cross-validation inside
        each training fold; the value chosen per (classifier, layer, init, fold) is the results
        variable ``chosen_param``.
    group_by : str, optional
        An image coordinate of the store (a manifest column such as ``patient``): the folds
        are ``StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)`` over the
        usable images with these groups, so no group is tested in two folds. The results gain
        an image coordinate ``group`` and ``attrs["featstore_probe"]["grouping"]``; the
        knowledge gain's bootstrap then resamples groups (cluster bootstrap).
    group_regex : str, optional
        Instead of ``group_by``: the group is the first capture group of this regular
        expression searched in each image's path, e.g. ``r"^[^/]+/(\\d+)_"``.
    leak_check : bool
        When the store's images can still be read, hash them (:mod:`featstore.leaks`) and
        record in ``attrs["featstore_probe"]["leaks"]`` how many test images have a near-copy
        among their fold's training images (``checked: False`` with the reason otherwise).

    Returns
    -------
    xarray.Dataset
        See :func:`open_results`.

    Raises
    ------
    FeatstoreInputError
        (exit status 2 on the command line) for a path that is not a store, a store still being
        extracted, no labels or a single class, unknown classifiers, layers or inits, more folds
        than the smallest class has images.
    """
    config = ProbeConfig(
        store=str(store),
        classifiers=(classifiers,) if isinstance(classifiers, str) else tuple(classifiers),
        folds=folds, seed=seed, split=split,
        layers=None if layers is None else tuple(layers),
        inits=None if inits is None else tuple(inits),
        tol=tol, max_iter=max_iter, auto_grid=tuple(auto_grid), inner_folds=inner_folds,
        scheduler=scheduler, force=force, group_by=group_by, group_regex=group_regex,
        leak_check=leak_check,
    )
    return run_probe(config, progress)
