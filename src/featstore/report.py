"""Tables, figures and the written report of a probe run.

The pure functions here turn probe results (see :func:`featstore.open_results`) and knowledge
gain (see :func:`featstore.knowledge_gain`) into matplotlib :class:`~matplotlib.figure.Figure`
objects, table rows and Markdown/HTML text; they open, print and save nothing. Only
:func:`write_report` touches files: it reads a store, computes the gain and writes

- ``scores_<metric>.png``: probe metric against layer depth, pretrained and every random init,
  each with a confidence band over folds, and the chance level;
- ``gain_<metric>.png``: knowledge gain per layer with its bootstrap confidence interval, the zero
  line, the best layer and the sweet spot;
- ``gain_vs_parameters_<metric>.png``: gain against the number of parameters up to each layer
  (the complexity/benefit trade-off);
- ``results.csv`` (fold mean and spread per layer, init, classifier and metric), ``gain.csv``,
  ``report.md`` and ``report.html``.

Figures are :class:`matplotlib.figure.Figure` objects on their own Agg canvas (no pyplot, no
global backend state; works on headless machines).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from torch import nn

from .errors import FeatstoreInputError

__all__ = [
    "PRETRAINED_COLOR",
    "RANDOM_COLOR",
    "GAIN_COLOR",
    "METRIC_LABELS",
    "ReportFiles",
    "cumulative_parameter_counts",
    "model_parameter_counts",
    "fold_interval",
    "score_summary",
    "plot_scores",
    "plot_gain",
    "plot_gain_vs_parameters",
    "gain_rows",
    "sweet_spot_text",
    "report_blocks",
    "render_markdown",
    "render_html",
    "write_report",
]

#: colour-blind-safe colours (Okabe-Ito), the same in every figure
PRETRAINED_COLOR = "#0072B2"
RANDOM_COLOR = "#D55E00"
GAIN_COLOR = "#009E73"
CHANCE_COLOR = "#555555"
BEST_COLOR = "#CC79A7"
SWEET_COLOR = "#E69F00"
_RANDOM_STYLES: tuple[Any, ...] = ("--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
_RANDOM_MARKERS = ("s", "^", "v", "D", "P")

METRIC_LABELS: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro-F1",
}


# --------------------------------------------------------------------------- parameter counts
def cumulative_parameter_counts(model: nn.Module, layers: Sequence[str]) -> dict[str, int]:
    """Number of parameters in every module up to and including each layer, in module order.

    Modules are taken in registration order (``model.named_modules()``), which for the
    sequential backbones featstore supports is the order of the forward pass. A layer covers
    itself and its submodules; a parameter shared by several modules is counted once.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layers : sequence of str
        Module paths (``"blocks.3"``), shallow to deep.

    Returns
    -------
    dict of str to int
        Layer module path -> cumulative parameter count.

    Raises
    ------
    FeatstoreInputError
        When a layer is not a module of ``model``.
    """
    names: list[str] = []
    own: list[int] = []
    seen: set[int] = set()
    for name, module in model.named_modules(remove_duplicate=False):
        count = 0
        for parameter in module.parameters(recurse=False):
            if id(parameter) not in seen:
                seen.add(id(parameter))
                count += int(parameter.numel())
        names.append(name)
        own.append(count)
    cumulative = np.cumsum(own)
    out: dict[str, int] = {}
    for layer in layers:
        positions = [i for i, name in enumerate(names)
                     if name == layer or name.startswith(layer + ".")]
        if not positions or layer not in names:
            raise FeatstoreInputError(
                f"layer '{layer}' is not a module of {type(model).__name__}; "
                f"known modules start with: {', '.join(n for n in names[1:6])}, ..."
            )
        out[layer] = int(cumulative[max(positions)])
    return out


def model_parameter_counts(model: str, layers: Sequence[str]) -> dict[str, int]:
    """:func:`cumulative_parameter_counts` for a registered model, built with random weights.

    Parameters
    ----------
    model : str
        Model name (``featstore layers --list``).
    layers : sequence of str
        Module paths, shallow to deep.
    """
    from .models import build_model, parse_init

    net, _ = build_model(model, parse_init("random:0"))
    return cumulative_parameter_counts(net, layers)


# --------------------------------------------------------------------------- summaries
def fold_interval(scores: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of the mean over folds.

    Parameters
    ----------
    scores : ndarray of shape (n_folds,)
        One score per fold; NaN entries are ignored.
    confidence : float
        Coverage of the interval.

    Returns
    -------
    mean, low, high : float
        ``low == high == mean`` with fewer than two finite folds.
    """
    from scipy import stats

    values = np.asarray(scores, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1)
                 * values.std(ddof=1) / math.sqrt(values.size))
    return mean, mean - half, mean + half


def _check_choice(parameter: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise FeatstoreInputError(
            f"invalid {parameter} {value!r}; this probe run has: {', '.join(map(str, allowed))}"
        )
    return value


def _values(ds: xr.Dataset | xr.DataArray, dim: str) -> list[str]:
    return [str(v) for v in ds[dim].values]


def score_summary(results: xr.Dataset, classifier: str, metric: str,
                  confidence: float = 0.95) -> xr.Dataset:
    """Mean probe score per init and layer with a confidence interval over folds.

    Parameters
    ----------
    results : xarray.Dataset
        Probe results (variable ``score`` with dims ``(classifier, layer, init, fold, metric)``).
    classifier, metric : str
        Which classifier and metric.
    confidence : float
        Coverage of the Student-t interval over folds.

    Returns
    -------
    xarray.Dataset
        Variables ``mean``, ``low``, ``high`` with dims ``(init, layer)``.
    """
    _check_choice("--classifier", classifier, _values(results, "classifier"))
    _check_choice("--metric", metric, _values(results, "metric"))
    score = results["score"].sel(classifier=classifier, metric=metric).transpose(
        "init", "layer", "fold")
    values = np.asarray(score.values, dtype=np.float64)
    stats = np.array([[fold_interval(values[i, j], confidence) for j in range(values.shape[1])]
                      for i in range(values.shape[0])]).reshape(values.shape[0], values.shape[1], 3)
    coords = {"init": score["init"].values, "layer": score["layer"].values}
    return xr.Dataset(
        {name: (("init", "layer"), stats[..., k])
         for k, name in enumerate(("mean", "low", "high"))},
        coords=coords,
        attrs={"confidence": confidence, "n_folds": int(values.shape[2])},
    )


# --------------------------------------------------------------------------- figures
def _layer_labels(ds: xr.Dataset) -> list[str]:
    if "layer_module" in ds.coords:
        return [str(v) for v in ds["layer_module"].values]
    return _values(ds, "layer")


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " ").capitalize())


def _depth_axis(ax: Axes, labels: Sequence[str]) -> None:
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_xlabel("Layer (shallow \u2192 deep)")
    ax.grid(True, axis="y", alpha=0.3)


def _new_figure(size: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend, nothing shown."""
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _legend(fig: Figure, ax: Axes) -> None:
    """One legend below the axes, so that it never hides data."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4),
               fontsize=8, frameon=False)


def _init_kinds(results: xr.Dataset) -> list[str]:
    if "init_kind" in results.coords:
        return [str(v) for v in results["init_kind"].values]
    return ["pretrained" if str(v).startswith("pretrained") else "random"
            for v in results["init"].values]


def _init_label(init: str, kind: str) -> str:
    if kind == "random":
        seed = init.split(":", 1)[1] if ":" in init else "?"
        return f"random weights (seed {seed})"
    return "ImageNet-pretrained" if init == "pretrained" else f"pretrained ({init})"


def plot_scores(results: xr.Dataset, classifier: str, metric: str = "accuracy",
                confidence: float = 0.95, title: str | None = None) -> Figure:
    """Probe score against layer depth for every init, with confidence bands and chance.

    One line with markers and one shaded band (Student-t interval of the mean over folds) per
    init: the pretrained network in blue, random-weight networks in vermillion with a different
    line style per seed; a grey dashed horizontal line at chance level.

    Parameters
    ----------
    results : xarray.Dataset
        Probe results.
    classifier, metric : str
        Which classifier and metric.
    confidence : float
        Coverage of the bands.
    title : str, optional
        Figure title; a default names classifier and folds.

    Returns
    -------
    matplotlib.figure.Figure
        ``n_inits + 1`` lines (one per init, plus chance) and ``n_inits`` band collections.
    """
    summary = score_summary(results, classifier, metric, confidence)
    labels = _layer_labels(results)
    x = np.arange(len(labels))
    fig = _new_figure((9.5, 5.2))
    ax = fig.add_subplot()
    random_index = 0
    spans: list[float] = []
    for init, kind in zip(_values(summary, "init"), _init_kinds(results), strict=True):
        row = summary.sel(init=init)
        style: Any
        if kind == "pretrained":
            color, style, marker, z = PRETRAINED_COLOR, "-", "o", 3
        else:
            color = RANDOM_COLOR
            style = _RANDOM_STYLES[random_index % len(_RANDOM_STYLES)]
            marker = _RANDOM_MARKERS[random_index % len(_RANDOM_MARKERS)]
            z = 2
            random_index += 1
        low = np.clip(row["low"].values, 0.0, 1.0)  # metrics live in [0, 1]
        high = np.clip(row["high"].values, 0.0, 1.0)
        ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0, zorder=z - 1)
        spans.extend([np.nanmin(low), np.nanmax(high)])
        ax.plot(x, row["mean"].values, linestyle=style, marker=marker, markersize=4,
                color=color, label=_init_label(init, kind), zorder=z)
    bottom, top = float(np.nanmin(spans)), float(np.nanmax(spans))
    pad = max(0.05 * (top - bottom), 0.01)
    if "chance" in results.coords:
        chance = float(results["chance"].sel(metric=metric))
        # show chance on the axis unless that would squash the curves into a sliver
        shown = chance >= bottom - 0.5 * (top - bottom + 2 * pad)
        ax.axhline(chance, color=CHANCE_COLOR, linestyle="--", linewidth=1, zorder=1,
                   label=f"chance ({chance:.2f})" if shown
                   else f"chance ({chance:.2f}, below the axis)")
        if shown:
            bottom = min(bottom, chance)
    ax.set_ylim(bottom - pad, min(top + pad, 1.0 + pad))
    _depth_axis(ax, labels)
    ax.set_ylabel(f"{_metric_label(metric)} (0\u20131, mean over folds)")
    n_folds = summary.attrs["n_folds"]
    ax.set_title(title or f"{classifier} probe per layer; bands: {confidence:.0%} CI over "
                 f"{n_folds} folds", fontsize=10)
    _legend(fig, ax)
    return fig


def _gain_slice(gain: xr.Dataset, classifier: str, metric: str) -> xr.Dataset:
    _check_choice("--classifier", classifier, _values(gain, "classifier"))
    _check_choice("--metric", metric, _values(gain, "metric"))
    return gain.sel(classifier=classifier, metric=metric)


def _marked_layers(sel: xr.Dataset) -> tuple[str | None, str | None]:
    best = str(sel["best_layer"].values) if "best_layer" in sel else None
    sweet = str(sel["sweet_spot_layer"].values) if "sweet_spot_layer" in sel else None
    return best or None, sweet or None


def plot_gain(gain: xr.Dataset, classifier: str, metric: str = "accuracy",
              title: str | None = None) -> Figure:
    """Knowledge gain per layer with its confidence interval, zero line, best layer and sweet spot.

    Parameters
    ----------
    gain : xarray.Dataset
        Output of :func:`featstore.knowledge_gain`, dims ``(classifier, layer, metric)``.
    classifier, metric : str
        Which classifier and metric.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Four lines (gain, zero, best-layer marker, sweet-spot marker) and one band collection.
    """
    sel = _gain_slice(gain, classifier, metric)
    labels = _layer_labels(gain)
    layers = _values(gain, "layer")
    x = np.arange(len(labels))
    values = np.asarray(sel["gain"].values, dtype=np.float64)
    fig = _new_figure((9.5, 5.2))
    ax = fig.add_subplot()
    ax.fill_between(x, sel["ci_low"].values, sel["ci_high"].values, color=GAIN_COLOR, alpha=0.2,
                    linewidth=0, label="95% bootstrap CI" if "confidence" not in gain.attrs
                    else f"{float(gain.attrs['confidence']):.0%} bootstrap CI")
    ax.plot(x, values, "-o", color=GAIN_COLOR, markersize=4,
            label="knowledge gain (pretrained \u2212 random)", zorder=3)
    ax.axhline(0.0, color="black", linewidth=0.9, label="no gain", zorder=1)
    best, sweet = _marked_layers(sel)
    for name, marker, color, size, what, z in (
        (sweet, "D", SWEET_COLOR, 12, "sweet spot", 4),
        (best, "*", BEST_COLOR, 14, "best layer", 5),
    ):
        if name is None or name not in layers:
            ax.plot([], [], marker=marker, linestyle="none", color=color, label=f"{what}: none")
            continue
        i = layers.index(name)
        ax.plot([i], [values[i]], marker=marker, linestyle="none", markersize=size, color=color,
                markeredgecolor="black", markeredgewidth=0.6, zorder=z,
                label=f"{what}: {labels[i]}")
    _depth_axis(ax, labels)
    ax.set_ylabel(f"Gain in {_metric_label(metric).lower()} (pretrained \u2212 random)")
    ax.set_title(title or f"Knowledge gain per layer, {classifier} probe", fontsize=10)
    _legend(fig, ax)
    return fig


def plot_gain_vs_parameters(gain: xr.Dataset, parameters: Mapping[str, int], classifier: str,
                            metric: str = "accuracy", title: str | None = None) -> Figure:
    """Knowledge gain against the number of parameters up to each layer.

    Parameters
    ----------
    gain : xarray.Dataset
        Output of :func:`featstore.knowledge_gain`.
    parameters : mapping of str to int
        Layer (variable name or module path) -> cumulative parameter count, e.g. from
        :func:`model_parameter_counts`.
    classifier, metric : str
        Which classifier and metric.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Lines: the gain curve (an error-bar container with the CI per layer), the zero line,
        and one marker each for the best layer and the sweet spot when the gain names them.
    """
    sel = _gain_slice(gain, classifier, metric)
    layers = _values(gain, "layer")
    labels = _layer_labels(gain)
    counts = []
    for var, module in zip(layers, labels, strict=True):
        value = parameters.get(var, parameters.get(module))
        if value is None:
            raise FeatstoreInputError(f"no parameter count for layer '{module}'")
        counts.append(value)
    x = np.asarray(counts, dtype=np.float64)
    y = np.asarray(sel["gain"].values, dtype=np.float64)
    low = y - np.asarray(sel["ci_low"].values, dtype=np.float64)
    high = np.asarray(sel["ci_high"].values, dtype=np.float64) - y
    fig = _new_figure((8.5, 5.2))
    ax = fig.add_subplot()
    ax.errorbar(x, y, yerr=np.vstack([np.clip(low, 0, None), np.clip(high, 0, None)]), fmt="-o",
                color=GAIN_COLOR, ecolor=GAIN_COLOR, elinewidth=1, capsize=2, markersize=4,
                label="knowledge gain with CI")
    ax.axhline(0.0, color="black", linewidth=0.9, label="no gain")
    if np.all(x > 0):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt_params(int(round(v)))))
    best, sweet = _marked_layers(sel)
    for name, marker, color, size, what, z in (
        (sweet, "D", SWEET_COLOR, 11, "sweet spot", 4),
        (best, "*", BEST_COLOR, 14, "best layer", 5),
    ):
        if name is not None and name in layers:
            i = layers.index(name)
            ax.plot([x[i]], [y[i]], marker=marker, linestyle="none", markersize=size,
                    color=color, markeredgecolor="black", markeredgewidth=0.6, zorder=z,
                    label=f"{what}: {labels[i]}")
    annotate = {0, len(layers) - 1}
    annotate |= {layers.index(n) for n in (best, sweet) if n is not None and n in layers}
    for i in sorted(annotate):
        ax.annotate(labels[i], (x[i], y[i]), textcoords="offset points", xytext=(4, 6),
                    fontsize=8)
    ax.set_xlabel("Parameters up to and including the layer (count, log scale)")
    ax.set_ylabel(f"Gain in {_metric_label(metric).lower()} (pretrained \u2212 random)")
    ax.set_title(title or f"Knowledge gain against network size, {classifier} probe",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(fig, ax)
    return fig


# --------------------------------------------------------------------------- tables and text
def gain_rows(results: xr.Dataset, gain: xr.Dataset, classifier: str, metric: str,
              parameters: Mapping[str, int] | None = None,
              confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per layer: module, units, parameters, pretrained and random scores, gain and CI.

    Parameters
    ----------
    results : xarray.Dataset
        Probe results.
    gain : xarray.Dataset
        Knowledge gain of ``results``.
    classifier, metric : str
        Which classifier and metric.
    parameters : mapping, optional
        Cumulative parameter count per layer variable.
    confidence : float
        Coverage of the fold interval of the pretrained score.

    Returns
    -------
    list of dict
        Keys ``layer``, ``module``, ``units``, ``parameters``, ``pretrained``,
        ``pretrained_low``, ``pretrained_high``, ``random``, ``gain``, ``ci_low``, ``ci_high``,
        ``normalized_gain``, ``best``, ``sweet_spot``.
    """
    sel = _gain_slice(gain, classifier, metric)
    summary = score_summary(results, classifier, metric, confidence)
    pretrained_inits = [i for i, k in zip(_values(results, "init"), _init_kinds(results),
                                          strict=True) if k == "pretrained"]
    best, sweet = _marked_layers(sel)
    modules = _layer_labels(gain)
    units = ([int(v) for v in results["layer_units"].values]
             if "layer_units" in results.coords else [None] * len(modules))
    rows = []
    for i, layer in enumerate(_values(gain, "layer")):
        point = sel.sel(layer=layer)
        pre = (summary.sel(init=pretrained_inits[0], layer=layer) if pretrained_inits else None)
        rows.append({
            "layer": layer,
            "module": modules[i],
            "units": units[i],
            "parameters": None if parameters is None else parameters.get(layer),
            "pretrained": float(point["pretrained"]),
            "pretrained_low": float(pre["low"]) if pre is not None else math.nan,
            "pretrained_high": float(pre["high"]) if pre is not None else math.nan,
            "random": float(point["random"]),
            "gain": float(point["gain"]),
            "ci_low": float(point["ci_low"]),
            "ci_high": float(point["ci_high"]),
            "normalized_gain": float(point["normalized_gain"]),
            "best": layer == best,
            "sweet_spot": layer == sweet,
        })
    return rows


def _fmt(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _fmt_params(count: int | None) -> str:
    if count is None:
        return "n/a"
    if count >= 1_000_000:
        return f"{count / 1e6:.3g}M"
    if count >= 1_000:
        return f"{count / 1e3:.3g}k"
    return str(count)


def sweet_spot_text(rows: Sequence[Mapping[str, Any]], metric: str,
                    confidence: float = 0.95) -> str:
    """One paragraph: where the gain is largest (the best layer), where the sweet spot lies, at
    which layers the gain is distinguishable from zero, and where random weights win.

    Parameters
    ----------
    rows : sequence of dict
        :func:`gain_rows` output, shallow to deep.
    metric : str
        Metric name, for the wording.
    confidence : float
        Coverage of the gain's interval, for the wording.
    """
    if not rows:
        return "No layers."
    name = _metric_label(metric).lower()
    best = next((r for r in rows if r["best"]), None)
    if best is None:
        best = max(rows, key=lambda r: (r["gain"] if math.isfinite(r["gain"]) else -math.inf))
    order = [r["layer"] for r in rows]
    parts = [
        f"The largest knowledge gain in {name} is at **{best['module']}** (layer "
        f"{order.index(best['layer']) + 1} of {len(rows)}): {_fmt(best['gain'], sign=True)} "
        f"({confidence:.0%} CI {_fmt(best['ci_low'], sign=True)} to "
        f"{_fmt(best['ci_high'], sign=True)}; pretrained {_fmt(best['pretrained'])} vs random "
        f"{_fmt(best['random'])})."
    ]
    sweet = next((r for r in rows if r["sweet_spot"]), None)
    if sweet is not None and sweet["layer"] != best["layer"]:
        cost = ""
        if sweet.get("parameters") and best.get("parameters"):
            cost = (f", {_fmt_params(sweet['parameters'])} parameters up to it instead of "
                    f"{_fmt_params(best['parameters'])}")
        parts.append(
            f"The sweet spot, the shallowest layer whose gain cannot be told apart from the best "
            f"at this confidence, is **{sweet['module']}** (layer "
            f"{order.index(sweet['layer']) + 1}{cost}; gain {_fmt(sweet['gain'], sign=True)}, "
            f"CI up to {_fmt(sweet['ci_high'], sign=True)})."
        )
    elif sweet is not None:
        parts.append("No shallower layer comes within the confidence interval of it, so it is "
                     "also the sweet spot.")
    positive = [r["module"] for r in rows if math.isfinite(r["ci_low"]) and r["ci_low"] > 0]
    negative = [r["module"] for r in rows if math.isfinite(r["ci_high"]) and r["ci_high"] < 0]
    if positive:
        parts.append(f"The CI lies above zero at {len(positive)} of {len(rows)} layers "
                     f"({_span(positive)}).")
    else:
        parts.append("At no layer does the CI lie above zero: no layer shows a gain "
                     "distinguishable from random weights at this sample size.")
    if negative:
        parts.append(f"Random weights do better at {len(negative)} layer(s) "
                     f"({_span(negative)}).")
    return " ".join(parts)


def _span(names: Sequence[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, ..., {names[-1]}"


@dataclass(frozen=True)
class Block:
    """One piece of a report: ``kind`` is heading, paragraph, list, table, image or code."""

    kind: str
    text: str = ""
    level: int = 2
    items: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    src: str = ""


@dataclass
class ReportInputs:
    """Everything the written report says, gathered by :func:`write_report`.

    Attributes
    ----------
    results, gain : xarray.Dataset
        Probe results and their knowledge gain.
    meta : dict
        The store description (``attrs["featstore"]``).
    classifier, metric : str
        The classifier and metric the figures show.
    store : str
        Store location.
    figures : dict of str to str
        Figure role (``scores``, ``gain``, ``parameters``) -> file name.
    parameters : dict of str to int, optional
        Cumulative parameter count per layer variable.
    class_counts : dict of str to int
        Images per class.
    split_counts : dict of str to int, optional
        Images per split.
    """

    results: xr.Dataset
    gain: xr.Dataset
    meta: Mapping[str, Any]
    classifier: str
    metric: str
    store: str
    figures: Mapping[str, str]
    parameters: Mapping[str, int] | None = None
    class_counts: Mapping[str, int] = field(default_factory=dict)
    split_counts: Mapping[str, int] | None = None
    confidence: float = 0.95


def _attrs(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _probe_info(results: xr.Dataset) -> dict[str, Any]:
    info = results.attrs.get("featstore_probe", {})
    return dict(info) if isinstance(info, Mapping) else {}


def report_blocks(inputs: ReportInputs) -> list[Block]:
    """The report as a list of blocks, rendered by :func:`render_markdown` / :func:`render_html`."""
    meta = inputs.meta
    results, gain = inputs.results, inputs.gain
    rows = gain_rows(results, gain, inputs.classifier, inputs.metric, inputs.parameters,
                     inputs.confidence)
    probe = _probe_info(results)
    config = probe.get("config", {}) if isinstance(probe.get("config"), Mapping) else {}
    data = meta.get("data", {}) if isinstance(meta.get("data"), Mapping) else {}
    data_name = Path(str(data.get("root", "data"))).name or "data"
    n_images = int(meta.get("n_images", results.sizes.get("image", 0)))
    folds = results.sizes.get("fold", 0)
    randoms = [i for i, k in zip(_values(results, "init"), _init_kinds(results), strict=True)
               if k == "random"]
    metric_name = _metric_label(inputs.metric)
    blocks: list[Block] = [
        Block("heading", f"featstore report: {meta.get('model', '?')} on {data_name}", level=1),
        Block("paragraph",
              f"How much ImageNet knowledge transfers to these images, layer by layer "
              f"(Li & Plataniotis, PLoS ONE 2020). A `{inputs.classifier}` probe was fit on the "
              f"pooled activations of each of {results.sizes.get('layer', 0)} layers of the "
              f"ImageNet-pretrained network and of the same network with random weights "
              f"({len(randoms)} seed(s)), with {folds}-fold cross-validation over {n_images} "
              f"images. The knowledge gain of a layer is {metric_name.lower()}(pretrained) "
              f"\u2212 {metric_name.lower()}(random), paired on the same folds and averaged over "
              f"the random seeds."),
        Block("heading", "Where the knowledge is"),
        Block("paragraph", sweet_spot_text(rows, inputs.metric, inputs.confidence)),
    ]
    captions = {
        "scores": f"{metric_name} of the probe per layer: pretrained (blue) and random weights "
                  f"(vermillion), bands are {inputs.confidence:.0%} CIs over folds, dashed grey "
                  "line is chance.",
        "gain": "Knowledge gain per layer with its bootstrap CI; the star marks the best layer "
                "(largest gain), the diamond the sweet spot (shallowest layer whose CI reaches "
                "the best gain).",
        "parameters": "Knowledge gain against the parameters the network needs up to each "
                      "layer (the cost of using that layer).",
    }
    for role in ("scores", "gain", "parameters"):
        if role in inputs.figures:
            blocks.append(Block("image", captions[role], src=inputs.figures[role]))
    blocks.append(Block("heading", f"Per-layer results ({inputs.classifier}, {metric_name})"))
    header = ("#", "layer", "units", "params up to layer", "pretrained", "random", "gain",
              f"gain {inputs.confidence:.0%} CI", "normalized gain", "note")
    table_rows = []
    for i, row in enumerate(rows):
        mark = " ".join(m for m, on in (("best", row["best"]), ("sweet spot", row["sweet_spot"]))
                        if on)
        table_rows.append((
            str(i), row["module"], "n/a" if row["units"] is None else str(row["units"]),
            _fmt_params(row["parameters"]), _fmt(row["pretrained"]), _fmt(row["random"]),
            _fmt(row["gain"], sign=True),
            f"[{_fmt(row['ci_low'], sign=True)}, {_fmt(row['ci_high'], sign=True)}]",
            _fmt(row["normalized_gain"], sign=True), mark,
        ))
    blocks.append(Block("table", header=header, rows=tuple(table_rows)))
    blocks.append(Block("paragraph",
                        "pretrained and random: mean over folds (random also over its seeds); "
                        "normalized gain: gain / (1 \u2212 random), the share of the headroom "
                        "left by the random baseline that pretraining recovers."))
    other = _other_metrics_table(gain, inputs.classifier)
    if other is not None:
        blocks.append(Block("heading", "Best layer and sweet spot for every classifier and metric"))
        blocks.append(other)
    blocks.extend(_dataset_blocks(inputs, data))
    blocks.extend(_config_blocks(inputs, probe, config))
    blocks.extend(_caveat_blocks(inputs, data))
    return blocks


def _other_metrics_table(gain: xr.Dataset, classifier: str) -> Block | None:
    if "best_layer" not in gain or "sweet_spot_layer" not in gain:
        return None
    modules = dict(zip(_values(gain, "layer"), _layer_labels(gain), strict=True))
    rows = []
    for clf in _values(gain, "classifier"):
        for metric in _values(gain, "metric"):
            sel = gain.sel(classifier=clf, metric=metric)
            best, sweet = _marked_layers(sel)
            top = float(sel["gain"].max())
            rows.append((clf, _metric_label(metric), modules.get(best or "", "n/a"),
                         modules.get(sweet or "", "n/a"), _fmt(top, sign=True)))
    return Block("table", header=("classifier", "metric", "best layer", "sweet spot",
                                  "largest gain"), rows=tuple(rows))


def _dataset_blocks(inputs: ReportInputs, data: Mapping[str, Any]) -> list[Block]:
    meta = inputs.meta
    items = [
        f"source: {data.get('kind', 'unknown')} at `{data.get('root', '?')}`",
        f"images: {meta.get('n_images', '?')}",
        "classes: " + ", ".join(f"{name} ({count})" for name, count in
                                 inputs.class_counts.items()),
    ]
    if inputs.split_counts:
        items.append("splits: " + ", ".join(f"{k} ({v})" for k, v in inputs.split_counts.items()))
    if data.get("fingerprint"):
        items.append(f"fingerprint: `{str(data['fingerprint'])[:16]}`")
    return [Block("heading", "Data"), Block("list", items=tuple(items))]


def _config_blocks(inputs: ReportInputs, probe: Mapping[str, Any],
                   config: Mapping[str, Any]) -> list[Block]:
    meta = inputs.meta
    transform = meta.get("transform", {}) if isinstance(meta.get("transform"), Mapping) else {}
    items = [f"model: `{meta.get('model', '?')}`; pooling: {meta.get('pool', '?')}; "
             f"stored as {meta.get('dtype', '?')}",
             f"input: {transform.get('size', '?')} px, {transform.get('interpolation', '?')} "
             f"resize, mean {transform.get('mean', '?')}, std {transform.get('std', '?')}"]
    for init in meta.get("inits", []):
        if not isinstance(init, Mapping):
            continue
        detail = (f"weights {init.get('weights')}" if init.get("kind") == "pretrained"
                  else f"seed {init.get('seed')}")
        sha = f", sha256 `{str(init['sha256'])[:12]}`" if init.get("sha256") else ""
        items.append(f"init `{init.get('name')}`: {detail}{sha}")
    if probe.get("run") or probe.get("run_id"):
        items.append(f"probe run: `{probe.get('run', probe.get('run_id'))}`"
                     + (f", created {probe['created']}" if probe.get("created") else ""))
    classifiers = ", ".join(_values(inputs.results, "classifier"))
    folds = ("the store's train/test split" if config.get("split")
             else f"{inputs.results.sizes.get('fold', '?')}-fold stratified CV")
    items.append(f"probe: {classifiers}; {folds}, seed {config.get('seed', '?')}; features "
                 "standardized with training-fold statistics")
    if probe.get("n_images_used") is not None:
        excluded = _attrs(probe.get("excluded"))
        dropped = ", ".join(f"{v} {k}" for k, v in excluded.items() if v)
        items.append(f"images used by the probe: {probe['n_images_used']}"
                     + (f" (excluded: {dropped})" if dropped else ""))
    unconverged = _attrs(probe.get("unconverged"))
    if unconverged:
        items.append("solver hit max_iter in: "
                     + ", ".join(f"{k} ({v} fits)" for k, v in unconverged.items()))
    gain_attrs = inputs.gain.attrs
    if gain_attrs.get("n_boot"):
        items.append(f"gain CI: {float(gain_attrs.get('confidence', inputs.confidence)):.0%}, "
                     f"{gain_attrs['n_boot']} replicates (seed {gain_attrs.get('seed', '?')}), "
                     f"{gain_attrs.get('ci_method', 'bootstrap')}")
    if gain_attrs.get("seed_variance"):
        items.append(f"variance between random seeds: {gain_attrs['seed_variance']}")
    items.append(f"figures show classifier `{inputs.classifier}` and metric `{inputs.metric}`")
    versions = meta.get("versions", {})
    if isinstance(versions, Mapping) and versions:
        items.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    items.append(f"store: `{inputs.store}`")
    return [Block("heading", "Configuration"), Block("list", items=tuple(items))]


def _caveat_blocks(inputs: ReportInputs, data: Mapping[str, Any]) -> list[Block]:
    folds = inputs.results.sizes.get("fold", 0)
    n_random = sum(1 for k in _init_kinds(inputs.results) if k == "random")
    items = [
        "Cross-validation splits images, not patients or slides: tiles or augmented copies of "
        "the same tissue in different folds make absolute scores optimistic. The gain compares "
        "pretrained and random weights on the same folds, so it is less affected, but it is "
        "not a held-out estimate either.",
        f"The random-weight baseline rests on {n_random} seed(s) of one initialisation scheme; "
        "random features are strong on colour and simple texture, so a small gain in shallow "
        "layers is expected and not a failure.",
        "Activations are globally pooled before the probe: spatial arrangement within the "
        "image is discarded, which penalises deep layers less than a spatial probe would.",
        f"Fold intervals use {folds} folds; with few images per fold they are wide, and "
        "overlapping CIs mean the data cannot rank those layers.",
        "A linear probe measures linearly available information; a non-linear classifier may "
        "find more in random features.",
    ]
    return [Block("heading", "Caveats"), Block("list", items=tuple(items))]


def render_markdown(blocks: Sequence[Block]) -> str:
    """Render report blocks as GitHub-flavoured Markdown."""
    out: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            out.append(f"{'#' * block.level} {block.text}")
        elif block.kind == "paragraph":
            out.append(block.text)
        elif block.kind == "list":
            out.append("\n".join(f"- {item}" for item in block.items))
        elif block.kind == "image":
            out.append(f"![{block.text}]({block.src})\n\n*{block.text}*")
        elif block.kind == "table":
            lines = ["| " + " | ".join(block.header) + " |",
                     "|" + "|".join(" --- " for _ in block.header) + "|"]
            lines.extend("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                         for row in block.rows)
            out.append("\n".join(lines))
        elif block.kind == "code":
            out.append(f"```\n{block.text}\n```")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape text and turn Markdown ``**bold**`` and ```code``` spans into tags."""
    escaped = html.escape(text)
    for mark, tag in (("**", "strong"), ("`", "code")):
        parts = escaped.split(mark)
        if len(parts) % 2 == 1:
            escaped = "".join(f"<{tag}>{p}</{tag}>" if i % 2 else p
                              for i, p in enumerate(parts))
    return escaped


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:nth-child(2), th:nth-child(2) { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #444; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def render_html(blocks: Sequence[Block], title: str = "featstore report") -> str:
    """Render report blocks as one self-contained HTML page (images linked by relative path)."""
    body: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            body.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif block.kind == "paragraph":
            body.append(f"<p>{_inline_html(block.text)}</p>")
        elif block.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items)
                        + "</ul>")
        elif block.kind == "image":
            body.append(f'<figure><img src="{html.escape(block.src)}" '
                        f'alt="{html.escape(block.text)}"><figcaption>'
                        f"{_inline_html(block.text)}</figcaption></figure>")
        elif block.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                           for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif block.kind == "code":
            body.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# --------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    out: Path
    markdown: Path
    html: Path
    figures: dict[str, Path]
    tables: dict[str, Path]
    classifier: str
    metric: str


def _class_counts(store_ds: xr.Dataset, classes: Sequence[str]) -> dict[str, int]:
    labels = np.asarray(store_ds["label"].values, dtype=np.int64)
    if "valid" in store_ds.coords or "valid" in store_ds:
        labels = labels[np.asarray(store_ds["valid"].values, dtype=bool)]
    counts = np.bincount(labels, minlength=len(classes))
    return {str(name): int(counts[i]) for i, name in enumerate(classes)}


def _split_counts(store_ds: xr.Dataset) -> dict[str, int] | None:
    if "split" not in store_ds.coords and "split" not in store_ds:
        return None
    names, counts = np.unique(np.asarray(store_ds["split"].values).astype(str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def _default_classifier(results: xr.Dataset) -> str:
    return _values(results, "classifier")[0]


def write_report(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    classifier: str | None = None,
    metric: str = "accuracy",
    run: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    parameters: bool = True,
    log: Callable[[str], None] | None = None,
) -> ReportFiles:
    """Write figures, CSV tables, ``report.md`` and ``report.html`` for a store's probe run.

    Parameters
    ----------
    store : str or PathLike
        Feature store holding probe results (``featstore probe`` writes them).
    out : str or PathLike
        Output directory (created).
    classifier : str, optional
        Classifier shown in the figures and the main table; default the run's first.
    metric : str
        ``"accuracy"``, ``"balanced_accuracy"`` or ``"macro_f1"``.
    run : str, optional
        Probe run id; default the latest.
    n_boot, seed, confidence : int, int, float
        Bootstrap settings of :func:`featstore.knowledge_gain`.
    parameters : bool
        Also draw gain against cumulative parameter count (builds the model once).
    log : callable, optional
        Receives one line per step.

    Returns
    -------
    ReportFiles
        Paths of everything written.

    Raises
    ------
    NotAStoreError
        When ``store`` is not a feature store.
    FeatstoreInputError
        When the store has no probe results, or for an unknown classifier or metric.
    """
    from .gain import knowledge_gain
    from .store import open_store
    from .sweep import open_results, write_gain_csv, write_results_csv

    url = str(store)
    store_ds = open_store(url)  # raises NotAStoreError
    meta = dict(store_ds.attrs["featstore"])
    results = open_results(url, run=run)
    clf = classifier if classifier is not None else _default_classifier(results)
    _check_choice("--classifier", clf, _values(results, "classifier"))
    _check_choice("--metric", metric, _values(results, "metric"))
    gain = knowledge_gain(results, n_boot=n_boot, seed=seed, confidence=confidence)

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    param_counts: dict[str, int] | None = None
    if parameters:
        modules = _layer_labels(results)
        try:
            by_module = model_parameter_counts(str(meta["model"]), modules)
            param_counts = {var: by_module[m] for var, m in
                            zip(_values(results, "layer"), modules, strict=True)}
        except FeatstoreInputError as exc:
            if log is not None:
                log(f"skipping the parameter figure: {exc}")

    figures: dict[str, Figure] = {
        "scores": plot_scores(results, clf, metric, confidence),
        "gain": plot_gain(gain, clf, metric),
    }
    if param_counts is not None:
        figures["parameters"] = plot_gain_vs_parameters(gain, param_counts, clf, metric)
    stems = {"scores": f"scores_{metric}", "gain": f"gain_{metric}",
             "parameters": f"gain_vs_parameters_{metric}"}
    figure_paths: dict[str, Path] = {}
    for role, fig in figures.items():
        path = out_dir / f"{stems[role]}.png"
        fig.savefig(path, dpi=150)
        figure_paths[role] = path
        if log is not None:
            log(f"wrote {path}")

    tables = {"results": out_dir / "results.csv", "gain": out_dir / "gain.csv"}
    write_results_csv(results, tables["results"])
    write_gain_csv(gain, tables["gain"])

    classes = [str(c) for c in meta.get("classes", [])]
    inputs = ReportInputs(
        results=results, gain=gain, meta=meta, classifier=clf, metric=metric, store=url,
        figures={role: path.name for role, path in figure_paths.items()},
        parameters=param_counts, class_counts=_class_counts(store_ds, classes),
        split_counts=_split_counts(store_ds), confidence=confidence,
    )
    blocks = report_blocks(inputs)
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(render_html(blocks, title=blocks[0].text), encoding="utf-8")
    if log is not None:
        log(f"wrote {markdown} and {page}")
    return ReportFiles(out_dir, markdown, page, figure_paths, tables, clf, metric)

