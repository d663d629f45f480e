"""Figures of a report: score and gain per layer, gain against parameters.

Every figure is a :class:`matplotlib.figure.Figure` on its own Agg canvas (:func:`new_figure`:
no pyplot, no global backend state; works on headless machines). Colours are colour-blind safe
(Okabe-Ito) and the same in every figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from featstore.errors import FeatstoreInputError
from featstore.results import init_kinds, layer_labels

from .tables import fmt_params, gain_slice, labels_of, marked_layers, metric_label, score_summary

__all__ = [
    "PRETRAINED_COLOR",
    "RANDOM_COLOR",
    "GAIN_COLOR",
    "new_figure",
    "plot_scores",
    "plot_gain",
    "plot_gain_vs_parameters",
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


def _depth_axis(ax: Axes, labels: Sequence[str]) -> None:
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_xlabel("Layer (shallow \u2192 deep)")
    ax.grid(True, axis="y", alpha=0.3)


def new_figure(size: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend, nothing shown."""
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _legend(fig: Figure, ax: Axes) -> None:
    """One legend below the axes, so that it never hides data."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4),
               fontsize=8, frameon=False)



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
    labels = layer_labels(results)
    x = np.arange(len(labels))
    fig = new_figure((9.5, 5.2))
    ax = fig.add_subplot()
    random_index = 0
    spans: list[float] = []
    for init, kind in zip(labels_of(summary, "init"), init_kinds(results), strict=True):
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
    ax.set_ylabel(f"{metric_label(metric)} (0\u20131, mean over folds)")
    n_folds = summary.attrs["n_folds"]
    ax.set_title(title or f"{classifier} probe per layer; bands: {confidence:.0%} CI over "
                 f"{n_folds} folds", fontsize=10)
    _legend(fig, ax)
    return fig


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
    sel = gain_slice(gain, classifier, metric)
    labels = layer_labels(gain)
    layers = labels_of(gain, "layer")
    x = np.arange(len(labels))
    values = np.asarray(sel["gain"].values, dtype=np.float64)
    fig = new_figure((9.5, 5.2))
    ax = fig.add_subplot()
    ax.fill_between(x, sel["ci_low"].values, sel["ci_high"].values, color=GAIN_COLOR, alpha=0.2,
                    linewidth=0, label="95% bootstrap CI" if "confidence" not in gain.attrs
                    else f"{float(gain.attrs['confidence']):.0%} bootstrap CI")
    ax.plot(x, values, "-o", color=GAIN_COLOR, markersize=4,
            label="knowledge gain (pretrained \u2212 random)", zorder=3)
    ax.axhline(0.0, color="black", linewidth=0.9, label="no gain", zorder=1)
    best, sweet = marked_layers(sel)
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
    ax.set_ylabel(f"Gain in {metric_label(metric).lower()} (pretrained \u2212 random)")
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
    sel = gain_slice(gain, classifier, metric)
    layers = labels_of(gain, "layer")
    labels = layer_labels(gain)
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
    fig = new_figure((8.5, 5.2))
    ax = fig.add_subplot()
    ax.errorbar(x, y, yerr=np.vstack([np.clip(low, 0, None), np.clip(high, 0, None)]), fmt="-o",
                color=GAIN_COLOR, ecolor=GAIN_COLOR, elinewidth=1, capsize=2, markersize=4,
                label="knowledge gain with CI")
    ax.axhline(0.0, color="black", linewidth=0.9, label="no gain")
    if np.all(x > 0):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_params(int(round(v)))))
    best, sweet = marked_layers(sel)
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
    ax.set_ylabel(f"Gain in {metric_label(metric).lower()} (pretrained \u2212 random)")
    ax.set_title(title or f"Knowledge gain against network size, {classifier} probe",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(fig, ax)
    return fig


