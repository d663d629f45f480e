"""The report of a study (``featstore study``): data sets x models on one page.

Input is :func:`featstore.study.open_study`'s Dataset (dims dataset, model, layer, classifier,
metric[, baseline]; ``attrs["featstore_study"]`` with every run's grouping and leak check).

* :func:`transfer_counts` (pure): per model and layer, on how many data sets the gain's
  interval lies above zero, straddles zero, lies below zero -- the paper's "shallow layers
  transfer everywhere" as a table;
* :func:`sweet_spots` (pure): the best layer and the sweet spot of every data set x model, with
  their depth and the parameters the network needs up to them;
* :func:`plot_gain_by_depth`, :func:`plot_sweet_spots`: the cross-set figure (gain against
  relative depth, one curve per data set and model, intervals as bands) and the sweet spots
  against parameters;
* :func:`study_blocks`: what the report says; :func:`write_study_report` writes
  ``report.md``, ``report.html`` and ``figures/`` (the only function here that touches files).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from .document import Block, render_html, render_markdown
from .figures import new_figure
from .tables import BASELINE_LABELS, fmt, fmt_params, metric_label

__all__ = [
    "StudyReportFiles",
    "study_view",
    "transfer_counts",
    "sweet_spots",
    "plot_gain_by_depth",
    "plot_sweet_spots",
    "study_blocks",
    "write_study_report",
]

#: colour-blind-safe colours (Okabe-Ito) for data sets, in study order
_DATASET_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
                   "#F0E442")
_MODEL_STYLES = ("-", "--", ":", "-.")
_MODEL_MARKERS = ("o", "s", "^", "D", "v", "P")


def _labels(ds: xr.Dataset, dim: str) -> list[str]:
    return [str(v) for v in ds[dim].values]


def study_view(ds: xr.Dataset, classifier: str | None = None, metric: str = "accuracy",
               baseline: str | None = None) -> xr.Dataset:
    """One classifier, metric and baseline of a study: dims (dataset, model, layer).

    Defaults: the first classifier, ``accuracy`` (else the first metric), the first baseline.
    """
    classifier = classifier if classifier is not None else _labels(ds, "classifier")[0]
    metrics = _labels(ds, "metric")
    metric = metric if metric in metrics else metrics[0]
    view = ds.sel(classifier=classifier, metric=metric)
    if "baseline" in view.dims:
        view = view.sel(baseline=baseline if baseline is not None
                        else _labels(ds, "baseline")[0])
    return view


def _model_layers(view: xr.Dataset, model: str) -> list[str]:
    """The layers a model has (finite depth), shallow to deep."""
    depth = view["depth"].sel(model=model).to_series().dropna().sort_values(kind="stable")
    return [str(v) for v in depth.index]


def transfer_counts(view: xr.Dataset) -> pd.DataFrame:
    """Per model and layer: data sets whose gain interval lies above, straddles or lies below 0.

    Parameters
    ----------
    view : xarray.Dataset
        :func:`study_view` output, dims (dataset, model, layer).

    Returns
    -------
    pandas.DataFrame
        Columns ``model``, ``layer``, ``depth``, ``above``, ``straddles``, ``below``,
        ``datasets`` (how many data sets have a finite interval) and ``above_in`` (their names,
        comma-separated), layers shallow to deep within each model.
    """
    rows = []
    datasets = _labels(view, "dataset")
    for model in _labels(view, "model"):
        for layer in _model_layers(view, model):
            cell = view.sel(model=model, layer=layer)
            low = np.asarray(cell["ci_low"].values, dtype=np.float64)
            high = np.asarray(cell["ci_high"].values, dtype=np.float64)
            finite = np.isfinite(low) & np.isfinite(high)
            above = finite & (low > 0)
            below = finite & (high < 0)
            rows.append({
                "model": model, "layer": layer,
                "depth": float(view["depth"].sel(model=model, layer=layer)),
                "above": int(above.sum()), "straddles": int((finite & ~above & ~below).sum()),
                "below": int(below.sum()), "datasets": int(finite.sum()),
                "above_in": ", ".join(d for d, a in zip(datasets, above, strict=True) if a),
            })
    return pd.DataFrame(rows, columns=["model", "layer", "depth", "above", "straddles", "below",
                                       "datasets", "above_in"])


def sweet_spots(view: xr.Dataset) -> pd.DataFrame:
    """The best layer and the sweet spot of every data set x model.

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset``, ``model``; for ``best`` and ``sweet`` each: ``*_layer``,
        ``*_depth``, ``*_params``, ``*_gain``, ``*_ci_low``, ``*_ci_high``; and ``best_p`` (the
        best layer's ``p_best``). Rows for which the study has no gain are left out.
    """
    rows = []
    for dataset in _labels(view, "dataset"):
        for model in _labels(view, "model"):
            cell = view.sel(dataset=dataset, model=model)
            layers = _labels(cell, "layer")
            row: dict[str, Any] = {"dataset": dataset, "model": model}
            for kind, flag in (("best", "best"), ("sweet", "sweet_spot")):
                marked = [layer for layer, on in zip(layers, cell[flag].values, strict=True)
                          if bool(on)]
                if not marked:
                    break
                at = cell.sel(layer=marked[0])
                row.update({
                    f"{kind}_layer": marked[0],
                    f"{kind}_depth": float(at["depth"]),
                    f"{kind}_params": int(at["params_up_to_layer"]),
                    f"{kind}_gain": float(at["gain"]),
                    f"{kind}_ci_low": float(at["ci_low"]),
                    f"{kind}_ci_high": float(at["ci_high"]),
                })
                if kind == "best":
                    row["best_p"] = float(at["p_best"])
            else:
                rows.append(row)
    return pd.DataFrame(rows)


def _styles(view: xr.Dataset) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    datasets = _labels(view, "dataset")
    models = _labels(view, "model")
    colors = {d: _DATASET_COLORS[i % len(_DATASET_COLORS)] for i, d in enumerate(datasets)}
    styles = {m: _MODEL_STYLES[i % len(_MODEL_STYLES)] for i, m in enumerate(models)}
    markers = {m: _MODEL_MARKERS[i % len(_MODEL_MARKERS)] for i, m in enumerate(models)}
    return colors, styles, markers


def plot_gain_by_depth(view: xr.Dataset, title: str | None = None) -> Figure:
    """The cross-set figure: knowledge gain against relative depth, one curve per data set and
    model (colour: data set; line style and marker: model), the gain's interval as a band.

    Parameters
    ----------
    view : xarray.Dataset
        :func:`study_view` output.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One line per (data set, model) with a ``fill_between`` band, the zero line, and the
        sweet spot of each curve as a diamond.
    """
    colors, styles, markers = _styles(view)
    fig = new_figure((8.5, 5.4))
    ax = fig.add_subplot()
    for dataset in _labels(view, "dataset"):
        for model in _labels(view, "model"):
            cell = view.sel(dataset=dataset, model=model)
            layers = _model_layers(view, model)
            cell = cell.sel(layer=layers)
            gain = np.asarray(cell["gain"].values, dtype=np.float64)
            if not np.isfinite(gain).any():
                continue
            x = np.asarray(cell["depth"].values, dtype=np.float64)
            low = np.asarray(cell["ci_low"].values, dtype=np.float64)
            high = np.asarray(cell["ci_high"].values, dtype=np.float64)
            label = dataset if len(view["model"]) == 1 else f"{dataset}, {model}"
            ax.plot(x, gain, linestyle=styles[model], marker=markers[model], markersize=4,
                    color=colors[dataset], label=label)
            ax.fill_between(x, low, high, color=colors[dataset], alpha=0.15, linewidth=0)
            sweet = [i for i, on in enumerate(cell["sweet_spot"].values) if bool(on)]
            if sweet:
                ax.plot([x[sweet[0]]], [gain[sweet[0]]], marker="D", markersize=9,
                        linestyle="none", color=colors[dataset], markeredgecolor="black",
                        markeredgewidth=0.6, zorder=5)
    ax.axhline(0.0, color="black", linewidth=0.9)
    ax.plot([], [], marker="D", linestyle="none", color="white", markeredgecolor="black",
            label="sweet spot")
    metric = str(view["metric"].values)
    ax.set_xlabel("Relative depth of the layer in its network (0 = first stored layer, "
                  "1 = last)")
    ax.set_ylabel(f"Gain in {metric_label(metric).lower()} (pretrained \u2212 random)")
    ax.set_xlim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "Knowledge gain by depth across data sets (bands: 95% CI)",
                 fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3),
               fontsize=8, frameon=False)
    return fig


def plot_sweet_spots(spots: pd.DataFrame, view: xr.Dataset, title: str | None = None) -> Figure:
    """The sweet spot (filled) and the best layer (open) of every data set x model against the
    parameters the network needs up to that layer, each with its gain interval, over the whole
    curve of gain against parameters (thin line).

    Parameters
    ----------
    spots : pandas.DataFrame
        :func:`sweet_spots` output.
    view : xarray.Dataset
        :func:`study_view` output (for the curves, the colours and the metric).
    """
    colors, styles, markers = _styles(view)
    fig = new_figure((8.5, 5.0))
    ax = fig.add_subplot()
    for row in spots.itertuples(index=False):
        layers = _model_layers(view, str(row.model))
        cell = view.sel(dataset=str(row.dataset), model=str(row.model), layer=layers)
        ax.plot(np.asarray(cell["params_up_to_layer"].values, dtype=np.float64),
                np.asarray(cell["gain"].values, dtype=np.float64), linestyle=styles[row.model],
                color=colors[str(row.dataset)], linewidth=0.9, alpha=0.45)
    for row in spots.itertuples(index=False):
        color = colors[str(row.dataset)]
        marker = markers[str(row.model)]
        label = (str(row.dataset) if len(view["model"]) == 1
                 else f"{row.dataset}, {row.model}")
        for kind, face in (("best", "white"), ("sweet", color)):
            x = float(getattr(row, f"{kind}_params"))
            y = float(getattr(row, f"{kind}_gain"))
            err = [[max(0.0, y - float(getattr(row, f"{kind}_ci_low")))],
                   [max(0.0, float(getattr(row, f"{kind}_ci_high")) - y)]]
            ax.errorbar([x], [y], yerr=err, fmt=marker, color=color, markerfacecolor=face,
                        markeredgecolor=color, ecolor=color, capsize=3, markersize=8,
                        label=f"{label}: sweet spot" if kind == "sweet" else None)
            ax.annotate(str(getattr(row, f"{kind}_layer")), (x, y), textcoords="offset points",
                        xytext=(5, 5), fontsize=7)
        ax.plot([float(row.sweet_params), float(row.best_params)],
                [float(row.sweet_gain), float(row.best_gain)], color=color, linewidth=0.8,
                alpha=0.6)
    ax.plot([], [], marker="o", linestyle="none", markerfacecolor="white",
            markeredgecolor="black", label="best layer (open)")
    ax.axhline(0.0, color="black", linewidth=0.9)
    counts = np.asarray(view["params_up_to_layer"].values, dtype=np.float64)
    counts = counts[np.isfinite(counts)]
    if len(spots) and counts.size and (counts > 0).all():
        ax.set_xscale("log")
        ticks = FuncFormatter(lambda v, _pos: fmt_params(int(round(v))))
        ax.xaxis.set_major_formatter(ticks)
        # within one decade the minor ticks are the only ones: label them the same way
        ax.xaxis.set_minor_formatter(ticks if counts.max() < 10 * counts.min()
                                     else NullFormatter())
    metric = str(view["metric"].values)
    ax.set_xlabel("Parameters up to and including the layer (count, log scale)")
    ax.set_ylabel(f"Gain in {metric_label(metric).lower()} (pretrained \u2212 random)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "Sweet spot and best layer of every data set and model (lines: "
                          "every layer)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3),
               fontsize=8, frameon=False)
    return fig


def _ci(low: float, high: float) -> str:
    return f"[{fmt(low, sign=True)}, {fmt(high, sign=True)}]"


def _runs(ds: xr.Dataset) -> list[dict[str, Any]]:
    info = ds.attrs.get("featstore_study") or {}
    return [dict(r) for r in info.get("runs", [])]


def _grouping_text(run: Mapping[str, Any]) -> str:
    grouping = run.get("grouping") or {}
    if not grouping:
        return "images (no groups)"
    by = grouping.get("by") or f"regex `{grouping.get('regex')}`"
    return f"{by} ({grouping.get('n_groups')} groups)"


def _leak_row(run: Mapping[str, Any]) -> tuple[str, ...]:
    leaks = run.get("leaks") or {}
    base = (str(run["dataset"]), str(run["model"]), _grouping_text(run))
    if not leaks.get("checked"):
        return (*base, "not checked", "-", "-", str(leaks.get("reason", "not recorded")))
    return (*base, str(leaks.get("images")), str(leaks.get("pairs")),
            str(leaks.get("images_with_copy")),
            f"{leaks.get('test_with_train_copy')} of {leaks.get('n_test')}")


def _caveats(ds: xr.Dataset, runs: Sequence[Mapping[str, Any]], folds: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for run in runs:
        name = str(run["dataset"])
        leaks = run.get("leaks") or {}
        if leaks.get("checked") and int(leaks.get("test_with_train_copy", 0)) > 0 \
                and name not in seen:
            out.append(
                f"**{name}**: {leaks['test_with_train_copy']} of {leaks['n_test']} test images "
                f"have a near-copy (up to rotation/flip) among the training images of their fold"
                f"; its scores are optimistic, and so may its gains be, since both inits see "
                "the same copies. Group the folds by patient or slide where the data allows it.")
        if not leaks.get("checked") and name not in seen:
            out.append(f"**{name}**: the leak check did not run ({leaks.get('reason', '?')}).")
        grouping = run.get("grouping") or {}
        per_fold = run.get("groups_per_fold") or []
        if grouping and name not in seen:
            few = min(per_fold) if per_fold else None
            out.append(
                f"**{name}** is grouped by {_grouping_text(run)}: no group is tested in two "
                f"folds, and the gain's interval resamples groups within folds (cluster "
                f"bootstrap). With {', '.join(str(n) for n in per_fold)} groups per test fold "
                + ("the interval rests on very few groups and is itself uncertain."
                   if few is not None and few < 5 else "the interval is usable."))
        if int(run.get("folds", folds)) != folds and name not in seen:
            out.append(f"**{name}** uses {run.get('folds')} folds instead of the study's "
                       f"{folds} (set for this data set in the study file).")
        for baseline, n in (run.get("n_seeds") or {}).items():
            if int(n) < 2 and f"seed:{baseline}" not in seen:
                seen.add(f"seed:{baseline}")
                out.append(f"The {baseline} baseline has one seed: its interval leaves out the "
                           "variation between random networks (use random:0-4).")
        seen.add(name)
    out.append("The intervals cover the finite test sample (and the seeds), for classifiers as "
               "trained; refitting on other training sets is not included. The counts of the "
               "\"transfers everywhere\" table compare 95% intervals one layer and data set at a "
               "time, without a correction for the many comparisons.")
    out.append("Relative depth places each model's stored layers evenly from 0 to 1; layers of "
               "different models at the same depth are comparable in position only.")
    return out


def study_blocks(ds: xr.Dataset, figures: Mapping[str, str], classifier: str | None = None,
                 metric: str = "accuracy") -> list[Block]:
    """The report of a study as document blocks.

    Parameters
    ----------
    ds : xarray.Dataset
        :func:`featstore.study.open_study` output.
    figures : mapping of str to str
        ``"depth"`` and ``"sweet"`` -> figure paths relative to the report.
    classifier, metric : str
        What the figures and tables show (default: the first classifier, accuracy).
    """
    info = ds.attrs.get("featstore_study") or {}
    study = info.get("study") or {}
    runs = _runs(ds)
    view = study_view(ds, classifier, metric)
    clf = str(view["classifier"].values)
    met = str(view["metric"].values)
    baseline = str(view["baseline"].values) if "baseline" in view.coords else \
        (runs[0]["baselines"][0] if runs and runs[0].get("baselines") else "random")
    blocks = [Block("heading", f"featstore study: {study.get('name', '')}", level=1)]
    if study.get("description"):
        blocks.append(Block("paragraph", str(study["description"])))
    datasets = _labels(ds, "dataset")
    models = _labels(ds, "model")
    first_runs = {str(r["dataset"]): r for r in reversed(runs)}
    blocks.append(Block("paragraph", (
        f"{len(datasets)} data set{'s' if len(datasets) != 1 else ''} x {len(models)} "
        f"model{'s' if len(models) != 1 else ''}, inits {', '.join(study.get('inits', []))}; "
        f"`{clf}` probes on standardized features, {metric_label(met).lower()}; knowledge "
        f"gain = pretrained \u2212 {baseline} ({BASELINE_LABELS.get(baseline, baseline)}), "
        f"with its 95% interval ({info.get('n_boot', '?')} bootstrap replicates, seeds "
        "averaged). Every number is in "
        "`study.csv`; `featstore.open_study(DIR)` opens it as one xarray Dataset.")))
    header = ("data set", "images", "classes", "folds", "folds grouped by")
    rows = []
    for name in datasets:
        run = first_runs.get(name, {})
        rows.append((name, str(run.get("n_images_used", "?")),
                     str(len(run.get("classes", []))), str(run.get("folds", "?")),
                     _grouping_text(run)))
    blocks.append(Block("table", header=header, rows=tuple(rows)))

    blocks.append(Block("heading", "Knowledge gain by depth, across data sets"))
    blocks.append(Block("image", "Gain of the pretrained network over the random one against "
                                 "relative depth; bands: 95% intervals; diamonds: sweet spots.",
                        src=figures.get("depth", "")))
    counts = transfer_counts(view)
    blocks.append(Block("heading", "Transfers everywhere?"))
    blocks.append(Block("paragraph", (
        f"Per layer, on how many of the {len(datasets)} data sets the gain's 95% interval lies "
        "above zero (the pretrained features beat random ones), straddles zero, or lies below "
        "zero. The paper expects shallow layers above zero everywhere, and deep layers to "
        "depend on the data set.")))
    everywhere: dict[str, list[str]] = {}
    for model in models:
        part = counts[counts["model"] == model]
        trows = tuple((str(r.layer), f"{r.depth:.2f}", str(r.above), str(r.straddles),
                       str(r.below), str(r.above_in) or "-")
                      for r in part.itertuples(index=False))
        if len(models) > 1:
            blocks.append(Block("paragraph", f"**{model}**"))
        blocks.append(Block("table", header=("layer", "depth", "above 0", "straddles 0",
                                             "below 0", "above 0 on"), rows=trows))
        everywhere[model] = [str(r.layer) for r in part.itertuples(index=False)
                             if r.datasets == len(datasets) and r.above == len(datasets)]
    listed = "; ".join((f"{model}: " if len(models) > 1 else "") + (", ".join(names) or "none")
                       for model, names in everywhere.items())
    blocks.append(Block("paragraph", f"Layers whose gain is above zero on every data set: "
                                     f"{listed}."))

    spots = sweet_spots(view)
    blocks.append(Block("heading", "Sweet spot against parameters"))
    if len(spots):
        blocks.append(Block("image", "Sweet spot (filled) and best layer (open) of every data "
                                     "set and model against the parameters needed up to that "
                                     "layer, with 95% intervals.", src=figures.get("sweet", "")))
        srows = tuple(
            (str(r.dataset), str(r.model), f"{r.best_layer} (p_best {fmt(r.best_p, 2)})",
             f"{fmt(r.best_gain, sign=True)} {_ci(r.best_ci_low, r.best_ci_high)}",
             fmt_params(int(r.best_params)), f"{r.sweet_layer} (depth {r.sweet_depth:.2f})",
             f"{fmt(r.sweet_gain, sign=True)} {_ci(r.sweet_ci_low, r.sweet_ci_high)}",
             fmt_params(int(r.sweet_params)))
            for r in spots.itertuples(index=False))
        blocks.append(Block("table", header=("data set", "model", "best layer", "gain [CI]",
                                             "params", "sweet spot", "gain [CI]", "params"),
                            rows=srows))
        blocks.append(Block("paragraph", (
            f"The sweet spot is the shallowest layer whose gain is shown within "
            f"{info.get('margin', 0.01):g} of the best layer's (non-inferiority on the same "
            "bootstrap replicates): the cheapest layer that transfers about as much as the "
            "best one.")))
    blocks.append(Block("heading", "Leak check"))
    blocks.append(Block("paragraph", (
        "Near-duplicate images under the 8 rotations and flips (a perceptual hash per image; "
        "`featstore leaks DATA` lists the pairs). \"Test images with a copy in training\" "
        "counts test images that have a near-copy among the training images of their own fold: "
        "those make the scores optimistic.")))
    blocks.append(Block("table", header=(
        "data set", "model", "folds grouped by", "images hashed", "pairs",
        "images with a copy (other group)", "test images with a copy in training"),
        rows=tuple(_leak_row(r) for r in runs)))
    blocks.append(Block("heading", "Caveats"))
    blocks.append(Block("list", items=tuple(_caveats(ds, runs, int(study.get("folds", 5))))))
    methods: dict[str, list[str]] = {}
    for run in runs:
        if run.get("ci_method") and str(run["dataset"]) not in methods.get(run["ci_method"], []):
            methods.setdefault(str(run["ci_method"]), []).append(str(run["dataset"]))
    if methods:
        blocks.append(Block("heading", "How the intervals are computed"))
        blocks.append(Block("list", items=tuple(f"{', '.join(names)}: {method}"
                                                for method, names in methods.items())))
    return blocks


@dataclass(frozen=True)
class StudyReportFiles:
    """Paths written by :func:`write_study_report`."""

    markdown: Path
    html: Path
    figures: tuple[Path, ...]


def write_study_report(ds: xr.Dataset, out: str | os.PathLike[str],
                       classifier: str | None = None,
                       metric: str = "accuracy") -> StudyReportFiles:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` of a study into ``out``.

    Parameters
    ----------
    ds : xarray.Dataset
        :func:`featstore.study.open_study` output.
    out : str or PathLike
        The study folder.
    classifier, metric : str
        What the figures and tables show.

    Returns
    -------
    StudyReportFiles
    """
    folder = Path(out)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    view = study_view(ds, classifier, metric)
    met = str(view["metric"].values)
    names = {"depth": f"figures/gain_by_depth_{met}.png",
             "sweet": f"figures/sweet_spot_parameters_{met}.png"}
    written = []
    figure = plot_gain_by_depth(view)
    figure.savefig(folder / names["depth"], dpi=130)
    written.append(folder / names["depth"])
    spots = sweet_spots(view)
    if len(spots):
        figure = plot_sweet_spots(spots, view)
        figure.savefig(folder / names["sweet"], dpi=130)
        written.append(folder / names["sweet"])
    blocks = study_blocks(ds, names, classifier, metric)
    name = str((ds.attrs.get("featstore_study") or {}).get("study", {}).get("name", "study"))
    markdown = folder / "report.md"
    markdown.write_text(render_markdown(blocks))
    html = folder / "report.html"
    html.write_text(render_html(blocks, title=f"featstore study: {name}"))
    return StudyReportFiles(markdown, html, tuple(written))
