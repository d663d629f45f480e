"""``featstore study``: the paper's cross-dataset question -- data sets x models -- in one run.

Li & Plataniotis (PLoS ONE 2020) state their finding across image sets: shallow layers transfer
on every pathology set, deep layers' transfer depends on the set, and there is a sweet spot
between transferred complexity and performance. A study (:mod:`featstore.study_config`) names
the data sets, models and inits; :func:`run_study`

1. extracts every data set x model into ``DIR/stores/<dataset>__<model>.zarr`` with
   :func:`featstore.extract` (an existing store is reused and resumed, never recomputed);
2. probes each store with :func:`featstore.sweep.run_probe` (grouped folds where the data set
   names a ``group`` or ``group_regex``; the leak check hashes each data set once and serves
   every model), reusing stored runs;
3. computes the knowledge gain of every layer (:func:`featstore.knowledge_gain`) and writes

   * ``DIR/study.csv``: tidy, one row per (dataset, model, layer, classifier, metric[,
     baseline]) with :data:`STUDY_COLUMNS`;
   * ``DIR/study.json``: the study, and per data set and model the store, run, grouping, folds
     and leak check;
   * ``DIR/report.md``, ``DIR/report.html`` and ``DIR/figures/`` (:mod:`featstore.report.study`).

:func:`study_table` and :func:`open_study` are pure apart from reading files; the loop in
:func:`run_study` is the I/O edge.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import xarray as xr

from .config import ProbeConfig
from .errors import FeatstoreInputError
from .progress import Progress
from .study_config import DatasetSpec, StudyConfig, StudyConfigError, read_study, store_name

__all__ = [
    "STUDY_COLUMNS",
    "STUDY_KEY_COLUMNS",
    "StudyFiles",
    "study_rows",
    "open_study",
    "run_study",
    "read_study",
]

#: key columns of ``study.csv`` (``baseline`` only when the inits give several baselines)
STUDY_KEY_COLUMNS: Final = ("dataset", "model", "layer", "classifier", "metric", "baseline")
#: columns of ``study.csv``, in order; ``depth`` is the layer's relative depth in its model
#: (0 = first stored layer, 1 = last), ``params_up_to_layer`` the network's parameters up to
#: and including the layer, ``random`` the baseline's score
STUDY_COLUMNS: Final = ("dataset", "model", "layer", "depth", "units", "params_up_to_layer",
                        "classifier", "metric", "baseline", "pretrained", "random", "gain",
                        "ci_low", "ci_high", "p_best", "best", "sweet_spot")
_STUDY_JSON: Final = "study.json"
_STUDY_CSV: Final = "study.csv"


@dataclass(frozen=True)
class StudyFiles:
    """What :func:`run_study` wrote.

    Attributes
    ----------
    out : Path
        The study folder.
    table : Path
        ``study.csv``.
    report_md, report_html : Path
    figures : tuple of Path
    stores : dict of (str, str) to str
        (dataset, model) -> store path.
    seconds : float
        Wall time of the run.
    computed : dict of str to int
        How many stores were extracted (``extracted``) and runs probed (``probed``) in this
        run, as opposed to reused.
    """

    out: Path
    table: Path
    report_md: Path
    report_html: Path
    figures: tuple[Path, ...]
    stores: dict[tuple[str, str], str]
    seconds: float
    computed: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# pure: the tidy table


def relative_depth(n_layers: int) -> np.ndarray:
    """Relative depth of each of ``n_layers`` stored layers: ``i / (n_layers - 1)``, 0..1
    (0 for a single layer). Array of shape (n_layers,)."""
    if n_layers <= 1:
        return np.zeros(max(n_layers, 0))
    return np.arange(n_layers, dtype=np.float64) / (n_layers - 1)


def study_rows(gain: xr.Dataset, dataset: str, model: str,
               parameters: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The rows of ``study.csv`` for one data set and model.

    Parameters
    ----------
    gain : xarray.Dataset
        :func:`featstore.knowledge_gain` output, dims (baseline, classifier, layer, metric).
    dataset, model : str
    parameters : mapping of str to int, optional
        Layer module path (or variable name) -> parameters up to and including it.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`STUDY_COLUMNS`, one row per (layer, classifier, metric, baseline), layers
        shallow to deep.
    """
    from .results import gain_table, layer_labels

    layers = [str(v) for v in gain["layer"].values]
    modules = dict(zip(layers, layer_labels(gain), strict=True))
    depth = dict(zip(layers, relative_depth(len(layers)).tolist(), strict=True))
    units = ({str(k): int(v) for k, v in zip(layers, gain["layer_units"].values, strict=True)}
             if "layer_units" in gain.coords else {})
    frame = gain_table(gain)
    params = parameters or {}
    out = pd.DataFrame({
        "dataset": dataset,
        "model": model,
        "layer": [modules[v] for v in frame["layer"]],
        "depth": [depth[v] for v in frame["layer"]],
        "units": [units.get(v, -1) for v in frame["layer"]],
        "params_up_to_layer": [int(params.get(v, params.get(modules[v], -1)))
                               for v in frame["layer"]],
        "classifier": frame["classifier"],
        "metric": frame["metric"],
        "baseline": frame["baseline"],
        "pretrained": frame["pretrained"],
        "random": frame["random"],
        "gain": frame["gain"],
        "ci_low": frame["ci_low"],
        "ci_high": frame["ci_high"],
        "p_best": frame["p_best"],
        "best": frame["best"].astype(bool),
        "sweet_spot": frame["sweet_spot"].astype(bool),
    })
    return out[list(STUDY_COLUMNS)]


def _csv_frame(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """All rows; ``baseline`` dropped when every row has the same one."""
    table = pd.concat(frames, ignore_index=True)
    if table["baseline"].nunique() <= 1:
        table = table.drop(columns="baseline")
    return table


def open_study(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a study folder (``featstore study ... --out DIR``) as one xarray Dataset.

    Parameters
    ----------
    path : str or PathLike
        The study folder, holding ``study.csv`` and ``study.json``.

    Returns
    -------
    xarray.Dataset
        Dims ``dataset``, ``model``, ``layer`` (module paths, ordered by relative depth; a layer
        a model lacks is NaN there), ``classifier``, ``metric`` and ``baseline`` (when the
        study has several baselines). Float variables ``pretrained``, ``random``, ``gain``,
        ``ci_low``, ``ci_high``, ``p_best``; bool ``best``, ``sweet_spot``; coordinates
        ``depth``, ``units``, ``params_up_to_layer`` (model, layer). ``attrs["featstore_study"]``
        holds ``study.json`` (the study file, and per data set and model the store, run,
        grouping, folds and leak check).

    Raises
    ------
    StudyConfigError
        When the folder holds no study.
    """
    folder = Path(path)
    table_path = folder / _STUDY_CSV
    if not table_path.is_file():
        raise StudyConfigError(f"'{folder}' holds no study ({_STUDY_CSV} is missing); run "
                               "`featstore study STUDY.toml --out DIR` first")
    table = pd.read_csv(table_path, keep_default_na=False, na_values=["nan", "NaN", ""])
    info = json.loads((folder / _STUDY_JSON).read_text()) if (folder / _STUDY_JSON).is_file() \
        else {}
    keys = [k for k in STUDY_KEY_COLUMNS if k in table.columns]
    values = ["pretrained", "random", "gain", "ci_low", "ci_high", "p_best", "best",
              "sweet_spot"]
    ds = table.set_index(keys)[values].to_xarray()
    per_layer = table.drop_duplicates(["model", "layer"]).set_index(["model", "layer"])
    coords = per_layer[["depth", "units", "params_up_to_layer"]].to_xarray()
    order = per_layer["depth"].groupby(level="layer").min().sort_values(kind="stable")
    dims = {
        "dataset": _ordered(table["dataset"], [d["name"] for d in
                                               info.get("study", {}).get("datasets", [])]),
        "model": _ordered(table["model"], info.get("study", {}).get("models", [])),
        "layer": [str(v) for v in order.index],
        "classifier": list(pd.unique(table["classifier"])),
        "metric": list(pd.unique(table["metric"])),
    }
    if "baseline" in keys:
        dims["baseline"] = list(pd.unique(table["baseline"]))
    ds = ds.reindex(dims)
    coords = coords.reindex(model=dims["model"], layer=dims["layer"])
    ds = ds.assign_coords(depth=coords["depth"], units=coords["units"],
                          params_up_to_layer=coords["params_up_to_layer"])
    for name in ("best", "sweet_spot"):
        ds[name] = ds[name].fillna(False).astype(bool)
    ds.attrs["featstore_study"] = info
    return ds


def _ordered(column: pd.Series, preferred: Sequence[str]) -> list[str]:
    present = [str(v) for v in pd.unique(column)]
    return [p for p in preferred if p in present] + [p for p in present if p not in preferred]


# ---------------------------------------------------------------------------------------------
# the I/O edge


def _say(log: Callable[[str], None] | None, message: str) -> None:
    if log is not None:
        log(message)


def _complete(url: str, inits: Sequence[str]) -> bool:
    """Whether a store exists and holds every chunk of every init in ``inits``."""
    from .errors import NotAStoreError
    from .store import FeatureStore, store_exists

    if not store_exists(url):
        return False
    try:
        store = FeatureStore.open(url)
    except NotAStoreError:
        return False
    names = store.init_names
    return all(n in names for n in inits) and all(store.is_complete(n) for n in inits)


def _dataset_leaks(url: str, dataset: DatasetSpec) -> Any:
    """Near-duplicates of one data set's images, hashed once for every model (or None)."""
    from . import schema as S
    from .leakcheck import store_leaks
    from .leaks import LeakResult, groups_from_paths
    from .store import FeatureStore, open_store

    store = FeatureStore.open(url)
    ds = open_store(url)
    paths = [str(p) for p in ds[S.PATH].values]
    groups: list[str] | None = None
    if dataset.group_regex is not None:
        try:
            groups = list(groups_from_paths(paths, dataset.group_regex))
        except FeatstoreInputError:
            groups = None  # the probe names the problem
    elif dataset.group is not None and dataset.group in ds.coords:
        groups = [str(v) for v in ds[dataset.group].values]
    found = store_leaks(store.meta.get("data") or {}, paths, groups)
    return found if isinstance(found, LeakResult) else None


def _probe_config(config: StudyConfig, dataset: DatasetSpec, url: str) -> ProbeConfig:
    return ProbeConfig(
        store=url, classifiers=config.classifiers, folds=config.folds_of(dataset),
        seed=config.seed, scheduler=config.probe_scheduler, group_by=dataset.group,
        group_regex=dataset.group_regex, leak_check=config.leak_check,
    )


def _named(dataset: str, model: str, error: FeatstoreInputError) -> FeatstoreInputError:
    """The error's one line, prefixed with the data set and model (still exit status 2)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return FeatstoreInputError(f"dataset '{dataset}', model '{model}': {first}")


def run_study(config: StudyConfig, out: str | os.PathLike[str], *,
              progress: Progress | None = None,
              log: Callable[[str], None] | None = None) -> StudyFiles:
    """Run a study: extract, probe and measure the gain of every data set x model, then write
    the table, ``study.json`` and the report into ``out``.

    Parameters
    ----------
    config : StudyConfig
        From :func:`featstore.study_config.read_study`.
    out : str or PathLike
        The study folder (created). Stores go to ``out/stores/<dataset>__<model>.zarr``.
    progress : Progress, optional
        Receives the extraction and probe progress.
    log : callable, optional
        Receives one line per step (what was extracted, reused, probed).

    Returns
    -------
    StudyFiles

    Raises
    ------
    FeatstoreInputError
        Bad data, a store made with another configuration, too few groups for the folds...:
        one line naming the data set and model.
    """
    from . import schema as S
    from .extraction import extract
    from .gain import knowledge_gain
    from .inits import parse_inits
    from .models import model_parameter_counts
    from .report.study import write_study_report
    from .results import probe_info
    from .store import FeatureStore
    from .sweep import run_probe, stored_run

    started = time.perf_counter()
    folder = Path(out)
    (folder / "stores").mkdir(parents=True, exist_ok=True)
    frames: list[pd.DataFrame] = []
    runs: list[dict[str, Any]] = []
    stores: dict[tuple[str, str], str] = {}
    parameters: dict[str, dict[str, int]] = {}
    gains: dict[tuple[str, str], xr.Dataset] = {}
    computed = {"extracted": 0, "probed": 0}
    names = [spec.name for spec in parse_inits(list(config.inits))]
    for dataset in config.datasets:
        leaks: Any = None
        for model in config.models:
            url = str(folder / "stores" / store_name(dataset.name, model))
            stores[(dataset.name, model)] = url
            try:
                if _complete(url, names):
                    _say(log, f"{dataset.name} x {model}: checking the store {url}")
                else:
                    _say(log, f"{dataset.name} x {model}: extracting into {url}")
                    computed["extracted"] += 1
                extract(dataset.data, url, model=model, inits=config.inits,
                        layers=config.layers, pool=config.pool, image_size=config.image_size,
                        device=config.device, batch_size=config.batch_size,
                        scheduler=config.extract_scheduler, progress=progress)
                probe = _probe_config(config, dataset, url)
                if stored_run(probe) is None:
                    if config.leak_check and leaks is None:
                        _say(log, f"{dataset.name}: hashing the images for the leak check")
                        leaks = _dataset_leaks(url, dataset)
                    _say(log, f"{dataset.name} x {model}: probing")
                    computed["probed"] += 1
                else:
                    _say(log, f"{dataset.name} x {model}: reusing the stored probe run")
                results = run_probe(probe, progress, require_gain=True, leaks=leaks)
            except StudyConfigError:
                raise
            except FeatstoreInputError as exc:
                raise _named(dataset.name, model, exc) from None
            gain = knowledge_gain(results, n_boot=config.n_boot, seed=config.seed,
                                  margin=config.margin)
            gains[(dataset.name, model)] = gain
            meta = FeatureStore.open(url).meta
            modules = [meta.get("layer_modules", {}).get(v, v) for v in meta["layers"]]
            if model not in parameters:
                try:
                    parameters[model] = model_parameter_counts(model, modules)
                except FeatstoreInputError:  # a layer that is no module: counts unknown (-1)
                    parameters[model] = {}
            frames.append(study_rows(gain, dataset.name, model, parameters[model]))
            info = probe_info(results)
            labels = np.asarray(results[S.LABEL].values)
            test_fold = np.asarray(results["test_fold"].values)
            runs.append({
                "dataset": dataset.name, "model": model, "store": url,
                "run": info.get("run"), "data": dataset.data,
                "n_images": int(meta.get("n_images", labels.size)),
                "n_images_used": int(info.get("n_images_used", 0)),
                "classes": list(info.get("classes") or []),
                "class_counts": np.bincount(labels[test_fold >= 0],
                                            minlength=len(info.get("classes") or [])).tolist(),
                "folds": int(results.sizes["fold"]),
                "grouping": info.get("grouping"),
                "leaks": info.get("leaks"),
                "ci_method": gain.attrs.get("ci_method"),
                "baselines": [str(b) for b in gain["baseline"].values],
                "n_seeds": {str(b): int(n) for b, n in zip(
                    gain["baseline"].values, gain["n_seeds"].values, strict=True)},
                "groups_per_fold": gain.attrs.get("bootstrap_groups_per_fold"),
            })
    table = _csv_frame(frames)
    table_path = folder / _STUDY_CSV
    table.to_csv(table_path, index=False, na_rep="nan", lineterminator="\r\n")
    record = {"study": config.to_dict(), "runs": runs,
              "confidence": 0.95, "n_boot": config.n_boot, "margin": config.margin}
    (folder / _STUDY_JSON).write_text(json.dumps(record, indent=2, default=str) + "\n")
    report = write_study_report(open_study(folder), folder)
    seconds = time.perf_counter() - started
    return StudyFiles(folder, table_path, report.markdown, report.html, report.figures, stores,
                      seconds, computed)
