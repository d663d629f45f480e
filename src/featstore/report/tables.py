"""Statistics and text of a report: fold intervals, score summaries, per-layer gain rows and the
paragraph that says where the knowledge is. Pure: no figures, no files."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from featstore.errors import FeatstoreInputError
from featstore.results import CLASSIFIER, METRIC, init_kinds, layer_labels

__all__ = [
    "METRIC_LABELS",
    "metric_label",
    "labels_of",
    "check_choice",
    "gain_slice",
    "marked_layers",
    "fold_interval",
    "score_summary",
    "gain_rows",
    "fmt",
    "fmt_params",
    "sweet_spot_text",
]

METRIC_LABELS: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro-F1",
}


def metric_label(metric: str) -> str:
    """Display name of a metric, e.g. ``"Balanced accuracy"``."""
    return METRIC_LABELS.get(metric, metric.replace("_", " ").capitalize())


def labels_of(ds: xr.Dataset | xr.DataArray, dim: str) -> list[str]:
    """The labels of dimension ``dim`` as text."""
    return [str(v) for v in ds[dim].values]


def check_choice(parameter: str, value: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else a FeatstoreInputError naming the choices."""
    if value not in allowed:
        raise FeatstoreInputError(
            f"invalid {parameter} {value!r}; this probe run has: {', '.join(map(str, allowed))}"
        )
    return value


def gain_slice(gain: xr.Dataset, classifier: str, metric: str) -> xr.Dataset:
    """The gain of one classifier and metric, dims ``(layer,)``."""
    check_choice("--classifier", classifier, labels_of(gain, CLASSIFIER))
    check_choice("--metric", metric, labels_of(gain, METRIC))
    return gain.sel({CLASSIFIER: classifier, METRIC: metric})


def marked_layers(sel: xr.Dataset) -> tuple[str | None, str | None]:
    """The best layer and the sweet spot named by a :func:`gain_slice` (None when absent)."""
    best = str(sel["best_layer"].values) if "best_layer" in sel else None
    sweet = str(sel["sweet_spot_layer"].values) if "sweet_spot_layer" in sel else None
    return best or None, sweet or None


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
    check_choice("--classifier", classifier, labels_of(results, "classifier"))
    check_choice("--metric", metric, labels_of(results, "metric"))
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
    sel = gain_slice(gain, classifier, metric)
    summary = score_summary(results, classifier, metric, confidence)
    pretrained_inits = [i for i, k in zip(labels_of(results, "init"), init_kinds(results),
                                          strict=True) if k == "pretrained"]
    best, sweet = marked_layers(sel)
    modules = layer_labels(gain)
    units = ([int(v) for v in results["layer_units"].values]
             if "layer_units" in results.coords else [None] * len(modules))
    rows = []
    for i, layer in enumerate(labels_of(gain, "layer")):
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


def fmt(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def fmt_params(count: int | None) -> str:
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
    name = metric_label(metric).lower()
    best = next((r for r in rows if r["best"]), None)
    if best is None:
        best = max(rows, key=lambda r: (r["gain"] if math.isfinite(r["gain"]) else -math.inf))
    order = [r["layer"] for r in rows]
    parts = [
        f"The largest knowledge gain in {name} is at **{best['module']}** (layer "
        f"{order.index(best['layer']) + 1} of {len(rows)}): {fmt(best['gain'], sign=True)} "
        f"({confidence:.0%} CI {fmt(best['ci_low'], sign=True)} to "
        f"{fmt(best['ci_high'], sign=True)}; pretrained {fmt(best['pretrained'])} vs random "
        f"{fmt(best['random'])})."
    ]
    sweet = next((r for r in rows if r["sweet_spot"]), None)
    if sweet is not None and sweet["layer"] != best["layer"]:
        cost = ""
        if sweet.get("parameters") and best.get("parameters"):
            cost = (f", {fmt_params(sweet['parameters'])} parameters up to it instead of "
                    f"{fmt_params(best['parameters'])}")
        parts.append(
            f"The sweet spot, the shallowest layer whose gain cannot be told apart from the best "
            f"at this confidence, is **{sweet['module']}** (layer "
            f"{order.index(sweet['layer']) + 1}{cost}; gain {fmt(sweet['gain'], sign=True)}, "
            f"CI up to {fmt(sweet['ci_high'], sign=True)})."
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

