"""Figures of layer-wise CKA (:func:`featstore.cka`) and transferability estimators.

Pure functions: each takes result datasets and returns a :class:`matplotlib.figure.Figure` on
its own Agg canvas (no pyplot, no global backend state, nothing shown or saved; call
``fig.savefig(path)``).

* :func:`plot_cka_heatmaps`: CKA layers x layers, one panel per pair of inits;
* :func:`plot_cka_curve`: CKA between the pretrained layer and the same layer of every other
  init, against depth, with the permutation null's 95th percentile when computed;
* :func:`plot_transferability`: LogME and H-score against depth per init, beside the probe
  accuracy, with the Spearman rank correlations in the titles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.figure import Figure

from .errors import FeatstoreInputError
from .report.figures import new_figure
from .similarity import INIT_A, INIT_B, LAYER_A, LAYER_B

__all__ = [
    "ESTIMATOR_LABELS",
    "reference_init",
    "plot_cka_heatmaps",
    "plot_cka_curve",
    "plot_transferability",
]

#: readable names of the transferability estimators
ESTIMATOR_LABELS = {"logme": "LogME (log evidence per image)", "hscore": "H-score"}
#: colour-blind-safe colours (Okabe-Ito): the reference init first, then the others
_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
_STYLES = ("-", "--", "-.", ":")


def reference_init(inits: Sequence[str]) -> str:
    """The init the others are compared with: ``"pretrained"``, else the first
    ``pretrained...`` init, else the first init."""
    names = [str(i) for i in inits]
    if not names:
        raise FeatstoreInputError("no inits to compare")
    if "pretrained" in names:
        return "pretrained"
    return next((n for n in names if n.startswith("pretrained")), names[0])


def _layer_ticks(layers: Sequence[str], max_ticks: int = 24) -> tuple[list[int], list[str]]:
    step = max(1, -(-len(layers) // max_ticks))
    ticks = list(range(0, len(layers), step))
    return ticks, [str(layers[t]) for t in ticks]


def plot_cka_heatmaps(result: xr.Dataset) -> Figure:
    """CKA layers x layers, one panel per (unordered) pair of inits.

    Parameters
    ----------
    result : xarray.Dataset
        :func:`featstore.cka`'s result, ``cka`` (layer_a, init_a, layer_b, init_b).

    Returns
    -------
    matplotlib.figure.Figure
        Panels for (init_i, init_j), i <= j in store order: rows ``layer_a`` of init_i (shallow
        at the top), columns ``layer_b`` of init_j; one colour scale (0 to 1) for all; NaN
        (a constant layer) in grey.
    """
    layers = [str(v) for v in result[LAYER_A].values]
    inits = [str(v) for v in result[INIT_A].values]
    pairs = [(a, b) for k, a in enumerate(inits) for b in inits[k:]]
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    side = min(6.0, max(3.2, 0.22 * len(layers) + 1.5))
    fig = new_figure((side * cols + 1.0, side * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    values = result["cka"]
    low = float(min(0.0, np.nanmin(values.values))) if np.isfinite(values.values).any() else 0.0
    image = None
    cmap = colormaps["viridis"].with_extremes(bad="#BBBBBB")
    ticks, labels = _layer_ticks(layers)
    for k, (a, b) in enumerate(pairs):
        ax = axes[k // cols][k % cols]
        matrix = values.sel({INIT_A: a, INIT_B: b}).transpose(LAYER_A, LAYER_B).values
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=low, vmax=1.0,
                          interpolation="nearest")
        ax.set_title(f"{a} vs {b}", fontsize=9)
        ax.set_xticks(ticks, labels, rotation=90, fontsize=6)
        ax.set_yticks(ticks, labels, fontsize=6)
        ax.set_xlabel(f"layer ({b})", fontsize=8)
        ax.set_ylabel(f"layer ({a})", fontsize=8)
    for k in range(len(pairs), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    if image is not None:
        estimator = result.attrs.get("featstore_similarity", {}).get("estimator", "linear")
        label = "debiased linear CKA" if estimator == "linear-debiased" else "linear CKA"
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=label)
    return fig


def plot_cka_curve(result: xr.Dataset, reference: str | None = None) -> Figure:
    """CKA between each layer of the reference init and the same layer of every other init.

    Parameters
    ----------
    result : xarray.Dataset
        :func:`featstore.cka`'s result with at least two inits.
    reference : str, optional
        Default :func:`reference_init` (``"pretrained"``).

    Returns
    -------
    matplotlib.figure.Figure
        One line per other init against depth; with a permutation null, its 95th percentile
        as a thin line of the same colour (CKA below it is what unrelated features give).

    Raises
    ------
    FeatstoreInputError
        Fewer than two inits, or an unknown ``reference``.
    """
    layers = [str(v) for v in result[LAYER_A].values]
    inits = [str(v) for v in result[INIT_A].values]
    if len(inits) < 2:
        raise FeatstoreInputError(
            f"the CKA curve compares inits; the result holds only {', '.join(inits)}"
        )
    ref = reference_init(inits) if reference is None else reference
    if ref not in inits:
        raise FeatstoreInputError(f"unknown reference init {ref!r}; inits: {', '.join(inits)}")
    fig = new_figure((9.5, 5.2))
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    others = [i for i in inits if i != ref]
    for k, other in enumerate(others):
        color = _COLORS[1 + k % (len(_COLORS) - 1)]
        style = _STYLES[k % len(_STYLES)]
        pick = {INIT_A: ref, INIT_B: other}
        diagonal = np.array([float(result["cka"].sel(pick).sel({LAYER_A: la, LAYER_B: la}))
                             for la in layers])
        ax.plot(x, diagonal, linestyle=style, marker="o", markersize=4, color=color,
                label=f"CKA({ref}, {other})")
        if "null_q95" in result.data_vars:
            null = np.array([float(result["null_q95"].sel(pick).sel({LAYER_A: la, LAYER_B: la}))
                             for la in layers])
            ax.plot(x, null, linestyle=":", linewidth=1, color=color,
                    label=f"95th percentile of the permutation null ({other})")
    ax.set_ylim(min(0.0, float(ax.get_ylim()[0])), 1.02)
    ticks, labels = _layer_ticks(layers, max_ticks=40)
    ax.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("layer (shallow to deep)")
    ax.set_ylabel("CKA with the same layer")
    ax.set_title(f"How similar is each {ref} layer to the same layer of the baselines?",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 3), fontsize=8,
               frameon=False)
    return fig


def plot_transferability(scores: xr.Dataset, results: xr.Dataset | None = None,
                         correlation: xr.Dataset | None = None,
                         metric: str = "accuracy") -> Figure:
    """Transferability estimators against depth per init, beside the probe metric.

    Parameters
    ----------
    scores : xarray.Dataset
        :func:`featstore.transferability`'s result, ``score`` (layer, init, estimator).
    results : xarray.Dataset, optional
        Probe results; adds a panel with the fold-mean ``metric`` of the first classifier.
    correlation : xarray.Dataset, optional
        :func:`featstore.transfer.transferability_correlation`; its Spearman rho for
        the first classifier goes into each estimator's title.
    metric : str
        Probe metric shown.

    Returns
    -------
    matplotlib.figure.Figure
    """
    layers = [str(v) for v in scores["layer"].values]
    inits = [str(v) for v in scores["init"].values]
    names = [str(v) for v in scores["estimator"].values]
    panels = len(names) + (results is not None)
    fig = new_figure((5.2 * panels + 0.6, 5.0))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ref = reference_init(inits)
    order = [ref, *[i for i in inits if i != ref]]
    x = np.arange(len(layers))
    ticks, labels = _layer_ticks(layers, max_ticks=20)

    def style(k: int) -> dict[str, object]:
        return {"color": _COLORS[k % len(_COLORS)], "linestyle": _STYLES[min(k, 1)],
                "marker": "o", "markersize": 3}

    for e, name in enumerate(names):
        ax = axes[e]
        for k, init in enumerate(order):
            ax.plot(x, scores["score"].sel(estimator=name, init=init).values, label=init,
                    **style(k))  # type: ignore[arg-type]
        title = ESTIMATOR_LABELS.get(name, name)
        if correlation is not None and correlation.sizes.get("classifier", 0):
            clf = str(correlation["classifier"].values[0])
            rhos = []
            for init in [str(v) for v in correlation["init"].values]:
                rho = float(correlation["spearman"].sel(estimator=name, init=init,
                                                        classifier=clf))
                rhos.append(f"{init} {rho:+.2f}" if np.isfinite(rho) else f"{init} n/a")
            title += f"\nSpearman rho vs {clf} {metric}:\n" + ", ".join(rhos)
        ax.set_title(title, fontsize=8)
        ax.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=6)
        ax.grid(True, alpha=0.3)
    if results is not None:
        ax = axes[-1]
        clf = str(results["classifier"].values[0])
        mean = results["score"].sel(classifier=clf, metric=metric).mean("fold")
        probe_layers = [str(v) for v in results["layer"].values]
        shown = [la for la in layers if la in probe_layers]
        for k, init in enumerate(order):
            if init not in [str(v) for v in results["init"].values]:
                continue
            ax.plot([layers.index(la) for la in shown],
                    mean.sel(init=init, layer=shown).values, label=init,
                    **style(k))  # type: ignore[arg-type]
        ax.set_title(f"probe: {clf} {metric} (fold mean)", fontsize=8)
        ax.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=6)
        ax.grid(True, alpha=0.3)
    handles, legend = axes[0].get_legend_handles_labels()
    fig.legend(handles, legend, loc="outside lower center", ncols=min(len(legend), 5),
               fontsize=8, frameon=False)
    return fig
