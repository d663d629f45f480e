"""The probe results schema, in one place: names, where runs live, reading, listing, exporting.

A probe run is an :class:`xarray.Dataset` stored in the group ``probes/<run>`` of its feature
store, with

* dims ``classifier`` (str, e.g. ``"logreg:C=1"``), ``layer`` (store variable names, shallow to
  deep), ``init`` (str), ``fold`` (int, 0..K-1), ``metric`` (:data:`~featstore.probing.METRICS`),
  ``image`` (int);
* ``score`` (classifier, layer, init, fold, metric) float64: the metric on the fold's test
  images;
* ``prediction`` (classifier, layer, init, image) int16: the out-of-fold predicted label, ``-1``
  where the image is in no test fold or is not usable;
* ``chosen_param`` (classifier, layer, init, fold) float64: the regularization value nested
  cross-validation chose for an ``=auto`` classifier (``logreg:C=auto``, ``linear-svm:C=auto``,
  ``ridge:alpha=auto``) on that fold's training images; NaN for every other classifier;
* ``converged`` (classifier, layer, init, fold) bool: whether the fold's final fit converged
  (logreg, linear-svm: the solver met its tolerance before ``max_iter``; always True for the
  direct methods), and ``inner_unconverged`` (classifier, layer, init, fold) int: how many of
  an ``=auto`` classifier's inner-CV fits on that fold did not;
* coords ``label`` (image) int64, ``test_fold`` (image) int16 (``-1``: none), ``chance``
  (metric) float64, ``init_kind`` (init), ``layer_module`` (layer) str, ``layer_units`` (layer)
  int;
* ``attrs["featstore_probe"]`` (:data:`RESULTS_ATTR`): ``config``, ``run``, ``created``,
  ``versions``, ``classes``, ``n_images_used``, ``excluded``, ``unconverged`` (classifier ->
  number of unconverged fits, inner-CV fits included), ``leaks`` (the leak check,
  :mod:`featstore.leakcheck`: ``checked`` and, when checked, ``test_with_train_copy`` -- test
  images with a near-copy among their fold's training images -- with the pair counts; else the
  ``reason``). It is written last, so a run without it is incomplete and never reused.
* grouped runs (``featstore probe --group-by COLUMN`` / ``--group-regex REGEX``) also have the
  coordinate ``group`` (image) str, each image's group, and ``attrs["featstore_probe"]
  ["grouping"]``: ``by`` (the column) or ``regex``, ``n_groups`` among the usable images and
  the ``splitter``. No group is tested in two folds; :func:`featstore.knowledge_gain`
  resamples groups (cluster bootstrap) when ``group`` is present.

The sweep (:mod:`featstore.sweep`) writes runs with :func:`write_results`; everything else reads
them with :func:`open_results`, :func:`list_runs` and :func:`describe_runs`, and exports tidy CSV
tables with :func:`results_table` / :func:`gain_table`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from . import schema as S
from .config import parse_store_url
from .errors import ProbeInputError
from .inits import init_kind
from .store import FeatureStore

__all__ = [
    "RESULTS_ATTR",
    "CLASSIFIER",
    "LAYER",
    "FOLD",
    "METRIC",
    "INIT_KIND",
    "LAYER_MODULE",
    "LAYER_UNITS",
    "TEST_FOLD",
    "GROUP",
    "CHOSEN_PARAM",
    "CONVERGED",
    "INNER_UNCONVERGED",
    "BASELINE",
    "N_SEEDS",
    "RESULTS_COLUMNS",
    "GAIN_COLUMNS",
    "run_path",
    "write_results",
    "list_runs",
    "describe_runs",
    "open_results",
    "probe_info",
    "init_kinds",
    "layer_labels",
    "unconverged_fits",
    "results_table",
    "gain_table",
    "write_results_csv",
    "write_gain_csv",
]

#: attribute of a results group holding its description (written last: marks a complete run)
RESULTS_ATTR: Final = "featstore_probe"

#: dimension names of the results (``init`` and ``image`` are the store's, see schema)
CLASSIFIER: Final = "classifier"
LAYER: Final = "layer"
FOLD: Final = "fold"
METRIC: Final = "metric"
#: coordinate names of the results
INIT_KIND: Final = "init_kind"
LAYER_MODULE: Final = "layer_module"
LAYER_UNITS: Final = "layer_units"
TEST_FOLD: Final = "test_fold"
#: coordinate of grouped results (dim image): the group (patient, slide) of each image
GROUP: Final = "group"
#: per-fold variables of the results beside ``score``
CHOSEN_PARAM: Final = "chosen_param"
CONVERGED: Final = "converged"
INNER_UNCONVERGED: Final = "inner_unconverged"
#: dimension of the knowledge gain: the baseline group it is measured against
BASELINE: Final = "baseline"
#: coordinate of the knowledge gain (dim baseline): how many seeds the baseline group has
N_SEEDS: Final = "n_seeds"

#: columns of the results CSV (one row per layer, init, classifier, metric)
RESULTS_COLUMNS: Final = ("layer", "init", "classifier", "metric", "mean", "std", "n_folds",
                          "chance")
#: columns of the gain CSV (one row per layer, classifier, metric and baseline); ``random`` is
#: the baseline group's score, ``best`` / ``sweet_spot`` mark the best layer and the sweet spot
GAIN_COLUMNS: Final = ("layer", "classifier", "metric", "baseline", "gain", "ci_low", "ci_high",
                       "seed_sd", "n_seeds", "p_best", "normalized_gain", "normalized_ci_low",
                       "normalized_ci_high", "diff_best_ci_low", "best", "sweet_spot",
                       "pretrained", "random")


def run_path(run_id: str) -> str:
    """Group path of a probe run inside its store, e.g. ``"probes/0123abcd"``."""
    return f"{S.PROBES_GROUP}/{run_id}"


def write_results(url: str, results: xr.Dataset) -> None:
    """Store a probe run in ``probes/<run>``; its description is written last.

    Parameters
    ----------
    url : str
        Store location.
    results : xarray.Dataset
        With ``attrs[RESULTS_ATTR]["run"]``.
    """
    info = results.attrs[RESULTS_ATTR]
    path = run_path(info["run"])
    body = results.copy()
    body.attrs = {}
    body.to_zarr(url, group=path, mode="w", zarr_format=3, consolidated=False)
    # the description goes last: a run without it is incomplete and is never reused
    group = zarr.open_group(url, path=path, mode="r+", zarr_format=3, use_consolidated=False)
    group.attrs[RESULTS_ATTR] = info


def _probes_group(url: str) -> zarr.Group | None:
    try:
        return zarr.open_group(url, path=S.PROBES_GROUP, mode="r", zarr_format=3,
                               use_consolidated=False)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError,
            zarr.errors.NodeTypeValidationError):
        return None


def _attrs_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def list_runs(store: str | os.PathLike[str]) -> dict[str, str]:
    """Complete probe runs of a store.

    Returns
    -------
    dict
        Run id -> creation time (ISO 8601), oldest first.

    Raises
    ------
    NotAStoreError
        When ``store`` is not a feature store.
    """
    url = parse_store_url(str(store))
    FeatureStore.open(url)
    group = _probes_group(url)
    if group is None:
        return {}
    runs = {}
    for name, child in group.groups():
        info = child.attrs.get(RESULTS_ATTR)
        if isinstance(info, dict):
            runs[name] = str(info.get("created", ""))
    return dict(sorted(runs.items(), key=lambda kv: (kv[1], kv[0])))


def describe_runs(store: FeatureStore) -> list[dict[str, Any]]:
    """Every probe run stored in ``probes/<run_id>``, complete or not, oldest first.

    Reads only descriptions and the small dimension coordinates, never scores.

    Returns
    -------
    list of dict
        ``run``, ``created``, ``classifiers`` (resolved names such as ``"logreg:C=1"``),
        ``folds``, ``seed``, ``split``, ``n_layers``, ``n_inits`` and ``complete`` (False for a
        run interrupted before its description was written; ``featstore probe`` ignores those).
    """
    try:
        probes = store.group[S.PROBES_GROUP]
    except KeyError:
        return []
    runs: list[dict[str, Any]] = []
    for name, node in probes.groups():  # type: ignore[union-attr]
        info = _attrs_dict(node.attrs.get(RESULTS_ATTR))
        config = _attrs_dict(info.get("config"))
        sizes: dict[str, int | None] = {}
        names: list[str] | None = None
        for dim in (CLASSIFIER, LAYER, S.INIT):
            try:
                array = node[dim]
            except KeyError:
                array = None
            if not isinstance(array, zarr.Array):
                sizes[dim] = None
                continue
            sizes[dim] = int(array.shape[0])
            if dim == CLASSIFIER:
                names = [str(v) for v in np.asarray(array[:]).tolist()]
        runs.append({
            "run": str(info.get("run", name)),
            "created": info.get("created"),
            "classifiers": names if names is not None else config.get("classifiers"),
            "folds": config.get("folds"),
            "seed": config.get("seed"),
            "split": config.get("split"),
            "n_layers": sizes[LAYER],
            "n_inits": sizes[S.INIT],
            "complete": bool(info),
        })
    runs.sort(key=lambda r: (str(r["created"] or ""), r["run"]))
    return runs


def open_results(store: str | os.PathLike[str], run: str | None = None) -> xr.Dataset:
    """Open stored probe results (the latest run by default); see the module docstring.

    Parameters
    ----------
    store : str or PathLike
    run : str, optional
        Run id (see :func:`list_runs`); default the most recent.

    Returns
    -------
    xarray.Dataset
        Loaded into memory.

    Raises
    ------
    ProbeInputError
        No stored results, or an unknown run id.
    """
    url = parse_store_url(str(store))
    runs = list_runs(url)
    if not runs:
        raise ProbeInputError(f"store '{url}' holds no probe results; run `featstore probe "
                              f"{url}` first")
    if run is None:
        run = next(reversed(runs))
    elif run not in runs:
        raise ProbeInputError(f"unknown probe run {run!r} in '{url}'; runs: {', '.join(runs)}")
    with xr.open_dataset(url, engine="zarr", group=run_path(run), consolidated=False,
                         chunks=None) as ds:
        results = ds.load()
    info = zarr.open_group(url, path=run_path(run), mode="r", zarr_format=3,
                           use_consolidated=False).attrs[RESULTS_ATTR]
    results.attrs = {RESULTS_ATTR: info}
    return results


def probe_info(results: xr.Dataset) -> dict[str, Any]:
    """The run description ``attrs["featstore_probe"]`` of results (empty when absent)."""
    return _attrs_dict(results.attrs.get(RESULTS_ATTR))


def init_kinds(results: xr.Dataset) -> list[str]:
    """Group of each init of results (``"pretrained"``, ``"random"``, ``"random+bn"``...), in
    order (:func:`featstore.inits.init_kind`)."""
    if INIT_KIND in results.coords:
        return [str(v) for v in results[INIT_KIND].values]
    return [init_kind(str(v)) for v in results[S.INIT].values]


def layer_labels(ds: xr.Dataset) -> list[str]:
    """Module path of each layer of results or gain (the variable name when not recorded)."""
    if LAYER_MODULE in ds.coords:
        return [str(v) for v in ds[LAYER_MODULE].values]
    return [str(v) for v in ds[LAYER].values]


def results_table(results: xr.Dataset) -> pd.DataFrame:
    """Tidy table of fold means: one row per (layer, init, classifier, metric).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`RESULTS_COLUMNS`: the fold mean and standard deviation (ddof 0) of each
        score, the number of folds and the metric's chance level.
    """
    score = results["score"]
    table = xr.Dataset({
        "mean": score.mean(FOLD, skipna=False),
        "std": score.std(FOLD, skipna=False),
        "n_folds": results.sizes[FOLD],
        "chance": results["chance"],
    })
    frame = table.to_dataframe(dim_order=[LAYER, S.INIT, CLASSIFIER, METRIC]).reset_index()
    return frame[list(RESULTS_COLUMNS)]


def gain_table(gain: xr.Dataset) -> pd.DataFrame:
    """Tidy table of :func:`featstore.knowledge_gain` output: one row per (layer, classifier,
    metric, baseline) -- the baselines of one layer side by side, ``random`` first -- columns
    :data:`GAIN_COLUMNS`."""
    layers = gain[LAYER]
    seeds = gain[N_SEEDS].reset_coords(drop=True)
    table = gain.reset_coords(drop=True).assign({
        "best": gain["best_layer"] == layers,
        "sweet_spot": gain["sweet_spot_layer"] == layers,
        N_SEEDS: seeds,
    })
    names = [c for c in GAIN_COLUMNS if c not in (LAYER, CLASSIFIER, METRIC, BASELINE)]
    frame = table[names].to_dataframe(
        dim_order=[LAYER, CLASSIFIER, METRIC, BASELINE]).reset_index()
    return frame[list(GAIN_COLUMNS)]


def unconverged_fits(results: xr.Dataset) -> list[dict[str, Any]]:
    """Every fit of a probe run whose iterative solver did not converge.

    Returns
    -------
    list of dict
        ``classifier``, ``layer`` (module path), ``init``, ``fold`` and ``fits``: 1 for the
        fold's final fit, or the number of inner-CV fits (``stage`` ``"final"`` or
        ``"inner"``). Empty for runs that record no convergence (older runs).
    """
    out: list[dict[str, Any]] = []
    if CONVERGED not in results:
        return out
    modules = layer_labels(results)
    converged = results[CONVERGED].transpose(CLASSIFIER, LAYER, S.INIT, FOLD).values
    inner = (results[INNER_UNCONVERGED].transpose(CLASSIFIER, LAYER, S.INIT, FOLD).values
             if INNER_UNCONVERGED in results else np.zeros(converged.shape, dtype=np.int64))
    classifiers = [str(v) for v in results[CLASSIFIER].values]
    inits = [str(v) for v in results[S.INIT].values]
    folds = [int(v) for v in results[FOLD].values]
    for c, j, i, f in zip(*np.nonzero(~converged.astype(bool) | (inner > 0)), strict=True):
        base = {"classifier": classifiers[c], "layer": modules[j], "init": inits[i],
                "fold": folds[f]}
        if not converged[c, j, i, f]:
            out.append({**base, "stage": "final", "fits": 1})
        if inner[c, j, i, f] > 0:
            out.append({**base, "stage": "inner", "fits": int(inner[c, j, i, f])})
    return out


def _write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(target, index=False, na_rep="nan", lineterminator="\r\n")  # RFC 4180, as csv


def write_results_csv(results: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write :func:`results_table` to ``path`` (CSV, columns :data:`RESULTS_COLUMNS`)."""
    _write_csv(results_table(results), path)


def write_gain_csv(gain: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write :func:`gain_table` to ``path`` (CSV, columns :data:`GAIN_COLUMNS`)."""
    _write_csv(gain_table(gain), path)
