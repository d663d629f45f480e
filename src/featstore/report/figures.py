"""Figures of a report: score and gain per layer, gain against parameters.

Every figure is a :class:`matplotlib.figure.Figure` on its own Agg canvas (:func:`new_figure`:
no pyplot, no global backend state; works on headless machines). Colours are colour-blind safe
(Okabe-Ito) and the same in every figure: one colour per init group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from featstore.errors import FeatstoreInputError
from featstore.results import layer_labels

from .tables import (
    BASELINE_LABELS,
    baselines_of,
    fmt_params,
    gain_slice,
    labels_of,
    marked_layers,
    metric_label,
    n_seeds_of,
    score_series,
)

__all__ = [
    "PRETRAINED_COLOR",
    "RANDOM_COLOR",
    "GAIN_COLOR",
    "GROUP_COLORS",
    "new_figure",
    "plot_scores",
    "plot_gain",
    "plot_gain_vs_parameters",
    "plot_health",
]

#: colour-blind-safe colours (Okabe-Ito), the same in every figure
PRETRAINED_COLOR = "#0072B2"
RANDOM_COLOR = "#D55E00"
GAIN_COLOR = "#009E73"
CHANCE_COLOR = "#555555"
BEST_COLOR = "#CC79A7"
SWEET_COLOR = "#E69F00"
#: colour of each init group's curves
GROUP_COLORS: dict[str, str] = {
    "pretrained": PRETRAINED_COLOR,
    "pretrained+bn": "#56B4E9",
    "random": RANDOM_COLOR,
    "random+bn": "#E69F00",
    "shuffled": "#CC79A7",
    "shuffled+bn": "#000000",
}
_GROUP_STYLES: dict[str, Any] = {
    "pretrained": "-", "pretrained+bn": (0, (5, 2)), "random": "--", "random+bn": "-.",
    "shuffled": ":", "shuffled+bn": (0, (3, 1, 1, 1, 1, 1)),
}
_GROUP_MARKERS = {"pretrained": "o", "pretrained+bn": "o", "random": "s", "random+bn": "^",
                  "shuffled": "v", "shuffled+bn": "D"}


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


def _legend(fig: Figure, ax: Axes, handles: Sequence[Any] | None = None) -> None:
    """One legend below the axes, so that it never hides data."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    else:
        labels = [h.get_label() for h in handles]
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3),
               fontsize=8, frameon=False)


def plot_scores(results: xr.Dataset, classifier: str, metric: str = "accuracy",
                confidence: float = 0.95, title: str | None = None) -> Figure:
    """Probe score against layer depth per init group, with confidence bands and chance.

    One line with markers and one shaded band per series (:func:`score_series`): each
    pretrained-weight init (``pretrained`` in blue, ``pretrained+bn`` in sky blue), and each
    baseline group averaged over its seeds in its own colour and line style; bands are
    Student-t intervals over folds (of the per-fold seed average); a grey dashed line at chance.

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
        ``n_series + 1`` lines (one per series, plus chance) and ``n_series`` band collections.
    """
    series = score_series(results, classifier, metric, confidence)
    labels = layer_labels(results)
    x = np.arange(len(labels))
    fig = new_figure((9.5, 5.2))
    ax = fig.add_subplot()
    spans: list[float] = []
    for item in series:
        color = GROUP_COLORS.get(item.group, RANDOM_COLOR)
        z = 3 if item.group.startswith("pretrained") else 2
        low = np.clip(item.low, 0.0, 1.0)  # metrics live in [0, 1]
        high = np.clip(item.high, 0.0, 1.0)
        ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0, zorder=z - 1)
        spans.extend([np.nanmin(low), np.nanmax(high)])
        ax.plot(x, item.mean, linestyle=_GROUP_STYLES.get(item.group, "--"),
                marker=_GROUP_MARKERS.get(item.group, "s"), markersize=4, color=color,
                label=item.label, zorder=z)
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
    n_folds = results.sizes.get("fold", 0)
    ax.set_title(title or f"{classifier} probe per layer; bands: {confidence:.0%} CI over "
                 f"{n_folds} folds; baselines averaged over their seeds", fontsize=10)
    _legend(fig, ax)
    return fig


def _panel_title(gain: xr.Dataset, sel: xr.Dataset, baseline: str, labels: Sequence[str],
                 layers: Sequence[str]) -> str:
    n = n_seeds_of(gain, baseline)
    seeds = "" if n is None else f", {n} seed{'s' if n != 1 else ''}"
    head = f"vs {baseline}: {BASELINE_LABELS.get(baseline, baseline)}{seeds}"
    best, sweet = marked_layers(sel)
    parts = []
    if best is not None and best in layers:
        i = layers.index(best)
        p = float(sel["p_best"].values[i]) if "p_best" in sel else math.nan
        parts.append(f"best {labels[i]}" + (f" (p_best {p:.2f})" if math.isfinite(p) else ""))
    if sweet is not None and sweet in layers:
        margin = gain.attrs.get("margin")
        parts.append(f"sweet spot {labels[layers.index(sweet)]}"
                     + (f" (margin {float(margin):g})" if margin is not None else ""))
    return head + ("\n" + "; ".join(parts) if parts else "")


def plot_gain(gain: xr.Dataset, classifier: str, metric: str = "accuracy",
              title: str | None = None) -> Figure:
    """Knowledge gain per layer against each baseline, side by side, with its interval.

    One panel per baseline group (``random`` first; shared y axis): the gain curve, its
    bootstrap interval, the zero line, the best layer (star) and the sweet spot (diamond); the
    panel title names the baseline, its seeds, the best layer with its ``p_best`` and the sweet
    spot with the margin.

    Parameters
    ----------
    gain : xarray.Dataset
        Output of :func:`featstore.knowledge_gain`, dims ``(baseline, classifier, layer,
        metric)``.
    classifier, metric : str
        Which classifier and metric.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per baseline, each with four lines (gain, zero, best-layer marker, sweet-spot
        marker) and one band collection.
    """
    gain_slice(gain, classifier, metric)  # checks the choices
    baselines = baselines_of(gain)
    labels = layer_labels(gain)
    layers = labels_of(gain, "layer")
    x = np.arange(len(labels))
    ncols = min(len(baselines), 2)
    nrows = math.ceil(len(baselines) / ncols)
    fig = new_figure((6.0 * ncols + 1.5, 4.6 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    confidence = float(gain.attrs.get("confidence", 0.95))
    for ax, baseline in zip(axes, baselines, strict=False):
        sel = gain_slice(gain, classifier, metric, baseline)
        values = np.asarray(sel["gain"].values, dtype=np.float64)
        ax.fill_between(x, sel["ci_low"].values, sel["ci_high"].values, color=GAIN_COLOR,
                        alpha=0.2, linewidth=0)
        ax.plot(x, values, "-o", color=GAIN_COLOR, markersize=4, zorder=3)
        ax.axhline(0.0, color="black", linewidth=0.9, zorder=1)
        best, sweet = marked_layers(sel)
        for name, marker, color, size, z in ((sweet, "D", SWEET_COLOR, 11, 4),
                                             (best, "*", BEST_COLOR, 14, 5)):
            i = layers.index(name) if name is not None and name in layers else None
            ax.plot([] if i is None else [i], [] if i is None else [values[i]], marker=marker,
                    linestyle="none", markersize=size, color=color, markeredgecolor="black",
                    markeredgewidth=0.6, zorder=z)
        _depth_axis(ax, labels)
        ax.set_title(_panel_title(gain, sel, baseline, labels, layers), fontsize=9)
        if ax in axes[::ncols]:
            ax.set_ylabel(f"Gain in {metric_label(metric).lower()} (pretrained \u2212 baseline)")
    for ax in axes[len(baselines):]:
        ax.set_visible(False)
    fig.suptitle(title or f"Knowledge gain per layer, {classifier} probe", fontsize=10)
    handles = [
        Line2D([], [], color=GAIN_COLOR, marker="o", markersize=4,
               label="knowledge gain (pretrained \u2212 baseline)"),
        Patch(color=GAIN_COLOR, alpha=0.2, label=f"{confidence:.0%} bootstrap CI"),
        Line2D([], [], color="black", linewidth=0.9, label="no gain"),
        Line2D([], [], marker="*", linestyle="none", markersize=12, color=BEST_COLOR,
               markeredgecolor="black", label="best layer (largest gain)"),
        Line2D([], [], marker="D", linestyle="none", markersize=8, color=SWEET_COLOR,
               markeredgecolor="black", label="sweet spot (shallowest layer non-inferior to "
                                              "the best)"),
    ]
    _legend(fig, axes[0], handles)
    return fig


def plot_gain_vs_parameters(gain: xr.Dataset, parameters: Mapping[str, int], classifier: str,
                            metric: str = "accuracy", title: str | None = None) -> Figure:
    """Knowledge gain against the number of parameters up to each layer, one curve per baseline.

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
        One error-bar container per baseline (the gain with its CI per layer, in the baseline's
        colour), the zero line, and per baseline a star at the best layer and a diamond at the
        sweet spot.
    """
    gain_slice(gain, classifier, metric)  # checks the choices
    layers = labels_of(gain, "layer")
    labels = layer_labels(gain)
    counts = []
    for var, module in zip(layers, labels, strict=True):
        value = parameters.get(var, parameters.get(module))
        if value is None:
            raise FeatstoreInputError(f"no parameter count for layer '{module}'")
        counts.append(value)
    x = np.asarray(counts, dtype=np.float64)
    fig = new_figure((8.5, 5.4))
    ax = fig.add_subplot()
    annotate: set[int] = {0, len(layers) - 1}
    baselines = baselines_of(gain)
    for k, baseline in enumerate(baselines):
        sel = gain_slice(gain, classifier, metric, baseline)
        color = GROUP_COLORS.get(baseline, GAIN_COLOR)
        y = np.asarray(sel["gain"].values, dtype=np.float64)
        low = y - np.asarray(sel["ci_low"].values, dtype=np.float64)
        high = np.asarray(sel["ci_high"].values, dtype=np.float64) - y
        # spread the baselines a little along x so that their error bars do not overlap
        shift = x * 1.04 ** (k - (len(baselines) - 1) / 2)
        ax.errorbar(shift, y, yerr=np.vstack([np.clip(low, 0, None), np.clip(high, 0, None)]),
                    fmt="-o", color=color, ecolor=color, elinewidth=1, capsize=2, markersize=4,
                    label=f"gain vs {baseline} with CI")
        best, sweet = marked_layers(sel)
        for name, marker, size, what, z in ((sweet, "D", 10, "sweet spot", 4),
                                            (best, "*", 14, "best layer", 5)):
            if name is not None and name in layers:
                i = layers.index(name)
                annotate.add(i)
                ax.plot([shift[i]], [y[i]], marker=marker, linestyle="none", markersize=size,
                        color=color, markeredgecolor="black", markeredgewidth=0.6, zorder=z,
                        label=f"{what} vs {baseline}: {labels[i]}")
    ax.axhline(0.0, color="black", linewidth=0.9, label="no gain")
    if np.all(x > 0):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_params(int(round(v)))))
    first = gain_slice(gain, classifier, metric, baselines[0])
    y0 = np.asarray(first["gain"].values, dtype=np.float64)
    for i in sorted(annotate):
        ax.annotate(labels[i], (x[i], y0[i]), textcoords="offset points", xytext=(4, 6),
                    fontsize=8)
    ax.set_xlabel("Parameters up to and including the layer (count, log scale)")
    ax.set_ylabel(f"Gain in {metric_label(metric).lower()} (pretrained \u2212 baseline)")
    ax.set_title(title or f"Knowledge gain against network size, {classifier} probe",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(fig, ax)
    return fig


def plot_health(health: Mapping[str, Mapping[str, Mapping[str, float]]],
                title: str | None = None) -> Figure:
    """Activation health per layer: pooled RMS (log scale) and effective dimensionality.

    Parameters
    ----------
    health : mapping
        init -> layer (module path, shallow to deep) -> ``{"rms", "constant_fraction",
        "participation_ratio"}``, as the store records it (:mod:`featstore.health`).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Two panels sharing the layer axis; one line per init, coloured by its group.
    """
    from featstore.inits import init_kind

    inits = list(health)
    if not inits:
        raise FeatstoreInputError("no activation health recorded in this store")
    layers = list(health[inits[0]])
    x = np.arange(len(layers))
    fig = new_figure((9.5, 7.0))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for init in inits:
        group = init_kind(init)
        style = {"color": GROUP_COLORS.get(group, CHANCE_COLOR),
                 "linestyle": _GROUP_STYLES.get(group, "-"),
                 "marker": _GROUP_MARKERS.get(group, "o"), "markersize": 3.5}
        rms = [max(float(health[init].get(layer, {}).get("rms", np.nan)), 1e-30)
               for layer in layers]
        ratio = [float(health[init].get(layer, {}).get("participation_ratio", np.nan))
                 for layer in layers]
        top.plot(x, rms, label=init, **style)
        bottom.plot(x, ratio, **style)
    top.set_yscale("log")
    top.set_ylabel("Pooled RMS (log scale)")
    top.grid(True, which="both", alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_ylabel("Effective dimensionality\n(participation ratio)")
    _depth_axis(bottom, layers)
    top.set_title(title or "Activation health: is each layer's representation numerically "
                           "alive?", fontsize=10)
    _legend(fig, top)
    return fig
