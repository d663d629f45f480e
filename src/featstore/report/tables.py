"""Statistics and text of a report: fold intervals, score series, per-layer gain rows and the
paragraphs that say where the knowledge is. Pure: no figures, no files."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import xarray as xr

from featstore.errors import FeatstoreInputError
from featstore.results import BASELINE, CLASSIFIER, METRIC, N_SEEDS, init_kinds, layer_labels

__all__ = [
    "METRIC_LABELS",
    "BASELINE_LABELS",
    "SEEDED_GROUPS",
    "ScoreSeries",
    "metric_label",
    "labels_of",
    "check_choice",
    "gain_slice",
    "baselines_of",
    "marked_layers",
    "fold_interval",
    "score_summary",
    "score_series",
    "gain_rows",
    "fmt",
    "fmt_params",
    "best_layer_text",
    "sweet_spot_text",
    "n_seeds_of",
]

METRIC_LABELS: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro-F1",
}

#: short display names of the init groups (figures, table headers)
BASELINE_LABELS: Final[dict[str, str]] = {
    "pretrained": "ImageNet-pretrained",
    "pretrained+bn": "pretrained, BN re-estimated (AdaBN)",
    "random": "random init, BN as initialised",
    "random+bn": "random init, BN re-estimated",
    "shuffled": "shuffled pretrained weights",
    "shuffled+bn": "shuffled weights, BN re-estimated",
}
#: init groups whose members differ only by seed (shown as one series, averaged over seeds)
SEEDED_GROUPS: Final = ("random", "random+bn", "shuffled", "shuffled+bn")


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


def baselines_of(gain: xr.Dataset) -> list[str]:
    """The baseline groups of a knowledge gain, in its order (``random`` first)."""
    return labels_of(gain, BASELINE)


def gain_slice(gain: xr.Dataset, classifier: str, metric: str,
               baseline: str | None = None) -> xr.Dataset:
    """The gain of one classifier and metric: dims ``(baseline, layer)``, or ``(layer,)`` for
    one ``baseline``."""
    check_choice("--classifier", classifier, labels_of(gain, CLASSIFIER))
    check_choice("--metric", metric, labels_of(gain, METRIC))
    sel = gain.sel({CLASSIFIER: classifier, METRIC: metric})
    if baseline is not None:
        check_choice("--baseline", baseline, baselines_of(gain))
        sel = sel.sel({BASELINE: baseline})
    return sel


def marked_layers(sel: xr.Dataset) -> tuple[str | None, str | None]:
    """The best layer and the sweet spot named by a one-baseline :func:`gain_slice` (None when
    absent)."""
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


@dataclass(frozen=True)
class ScoreSeries:
    """One curve of the scores figure: an init, or every seed of a baseline group averaged.

    Attributes
    ----------
    group : str
        Init group (``"pretrained"``, ``"random"``, ``"random+bn"``...).
    label : str
        Legend text, e.g. ``"random init, BN as initialised (5 seeds)"``.
    inits : tuple of str
        The inits averaged.
    mean, low, high : ndarray, shape (n_layers,)
        Mean over folds (and seeds) and the Student-t interval over folds of the per-fold seed
        average.
    """

    group: str
    label: str
    inits: tuple[str, ...]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def score_series(results: xr.Dataset, classifier: str, metric: str,
                 confidence: float = 0.95) -> list[ScoreSeries]:
    """The curves of the scores figure: each pretrained-weight init on its own, each seeded
    baseline group (:data:`SEEDED_GROUPS`) as the average over its seeds.

    Returns
    -------
    list of ScoreSeries
        Pretrained inits first (in store order), then the groups in :data:`SEEDED_GROUPS` order.
    """
    check_choice("--classifier", classifier, labels_of(results, "classifier"))
    check_choice("--metric", metric, labels_of(results, "metric"))
    score = results["score"].sel(classifier=classifier, metric=metric).transpose(
        "init", "layer", "fold")
    values = np.asarray(score.values, dtype=np.float64)
    inits = labels_of(results, "init")
    kinds = init_kinds(results)
    series: list[tuple[str, str, list[int]]] = []
    for i, (name, kind) in enumerate(zip(inits, kinds, strict=True)):
        if kind not in SEEDED_GROUPS:
            label = BASELINE_LABELS.get(kind, kind)
            if name not in ("pretrained", "pretrained+bn"):
                label = f"{label} ({name})"
            series.append((kind, label, [i]))
    for group in SEEDED_GROUPS:
        members = [i for i, k in enumerate(kinds) if k == group]
        if members:
            n = len(members)
            seeds = f"{n} seed{'s' if n > 1 else ''}" if n > 1 else \
                f"seed {inits[members[0]].split(':', 1)[-1].removesuffix('+bn')}"
            series.append((group, f"{BASELINE_LABELS[group]} ({seeds})", members))
    out = []
    for group, label, members in series:
        per_fold = values[members].mean(axis=0)  # (layer, fold)
        stats = np.array([fold_interval(per_fold[j], confidence)
                          for j in range(per_fold.shape[0])]).reshape(-1, 3)
        out.append(ScoreSeries(group, label, tuple(inits[i] for i in members),
                               stats[:, 0], stats[:, 1], stats[:, 2]))
    return out


def gain_rows(results: xr.Dataset, gain: xr.Dataset, classifier: str, metric: str,
              parameters: Mapping[str, int] | None = None,
              confidence: float = 0.95, baseline: str | None = None) -> list[dict[str, Any]]:
    """One row per layer: module, units, parameters, scores, and the gain against one baseline
    with its statistics.

    Parameters
    ----------
    results : xarray.Dataset
        Probe results.
    gain : xarray.Dataset
        Knowledge gain of ``results`` (:func:`featstore.knowledge_gain`).
    classifier, metric : str
        Which classifier and metric.
    parameters : mapping, optional
        Cumulative parameter count per layer variable.
    confidence : float
        Coverage of the fold interval of the pretrained score.
    baseline : str, optional
        Baseline group; default the gain's first (``random`` when present).

    Returns
    -------
    list of dict
        Keys ``layer``, ``module``, ``units``, ``parameters``, ``pretrained``,
        ``pretrained_low``, ``pretrained_high``, ``random`` (the baseline's score), ``gain``,
        ``ci_low``, ``ci_high``, ``seed_sd``, ``p_best``, ``normalized_gain``,
        ``normalized_ci_low``, ``normalized_ci_high``, ``diff_best_ci_low``, ``best``,
        ``sweet_spot``.
    """
    baseline = baseline if baseline is not None else baselines_of(gain)[0]
    sel = gain_slice(gain, classifier, metric, baseline)
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
        row: dict[str, Any] = {
            "layer": layer,
            "module": modules[i],
            "units": units[i],
            "parameters": None if parameters is None else parameters.get(layer),
            "pretrained": float(point["pretrained"]),
            "pretrained_low": float(pre["low"]) if pre is not None else math.nan,
            "pretrained_high": float(pre["high"]) if pre is not None else math.nan,
        }
        for name in ("random", "gain", "ci_low", "ci_high", "seed_sd", "p_best",
                     "normalized_gain", "normalized_ci_low", "normalized_ci_high",
                     "diff_best_ci_low"):
            row[name] = float(point[name]) if name in point else math.nan
        row["best"] = layer == best
        row["sweet_spot"] = layer == sweet
        rows.append(row)
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


def best_layer_text(rows: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> str:
    """The best layer with its ``p_best``, and whether any layer is clearly best.

    A layer is called clearly best when it has the largest gain in at least ``confidence`` of
    the bootstrap replicates; otherwise the sentence names the layers that share the
    replicates.
    """
    best = next((r for r in rows if r["best"]), None)
    if best is None:
        return "No layer has a gain."
    p = best.get("p_best", math.nan)
    if not math.isfinite(p):
        return f"**{best['module']}** has the largest gain."
    text = (f"**{best['module']}** has the largest gain in {p:.0%} of the bootstrap "
            "replicates (p_best)")
    if p >= confidence:
        return text + f", so it is clearly the best layer at {confidence:.0%}."
    ranked = sorted((r for r in rows if math.isfinite(r.get("p_best", math.nan))
                     and r["p_best"] > 0), key=lambda r: -r["p_best"])
    shown: list[str] = []
    total = 0.0
    for r in ranked:
        if total >= confidence or len(shown) == 5:
            break
        shown.append(f"{r['module']} {r['p_best']:.0%}")
        total += r["p_best"]
    return (text + f": no layer is clearly best (none wins in {confidence:.0%} of the "
            f"replicates); the wins are shared by {', '.join(shown)}"
            + (" and others" if total < confidence - 1e-9 else "") + ".")


def sweet_spot_text(rows: Sequence[Mapping[str, Any]], metric: str,
                    confidence: float = 0.95, margin: float = 0.01,
                    baseline: str = "random", n_seeds: int | None = None) -> str:
    """One paragraph: where the gain against ``baseline`` is largest (the best layer, its
    ``p_best``), where the sweet spot lies, at which layers the gain is distinguishable from
    zero, and where the baseline wins.

    Parameters
    ----------
    rows : sequence of dict
        :func:`gain_rows` output, shallow to deep.
    metric : str
        Metric name, for the wording.
    confidence : float
        Coverage of the gain's interval, for the wording.
    margin : float
        The sweet spot's non-inferiority margin.
    baseline : str
        Baseline group, for the wording.
    n_seeds : int, optional
        Seeds of the baseline group: how many seeds the interval carries.
    """
    if not rows:
        return "No layers."
    name = metric_label(metric).lower()
    best = next((r for r in rows if r["best"]), None)
    if best is None:
        best = max(rows, key=lambda r: (r["gain"] if math.isfinite(r["gain"]) else -math.inf))
    order = [r["layer"] for r in rows]
    seeds = ""
    if n_seeds is not None:
        seeds = (f"; the CI carries {n_seeds} seeds" if n_seeds > 1 else
                 "; the CI carries one seed, so it leaves out the variance between seeds")
    parts = [
        f"Against **{baseline}**, the largest knowledge gain in {name} is at "
        f"**{best['module']}** (layer {order.index(best['layer']) + 1} of {len(rows)}): "
        f"{fmt(best['gain'], sign=True)} ({confidence:.0%} CI {fmt(best['ci_low'], sign=True)} "
        f"to {fmt(best['ci_high'], sign=True)}{seeds}; pretrained {fmt(best['pretrained'])} vs "
        f"{baseline} {fmt(best['random'])}).",
    ]
    if any(math.isfinite(r.get("p_best", math.nan)) for r in rows):
        parts.append(best_layer_text(rows, confidence))
    sweet = next((r for r in rows if r["sweet_spot"]), None)
    if sweet is not None and sweet["layer"] != best["layer"]:
        cost = ""
        if sweet.get("parameters") and best.get("parameters"):
            cost = (f", {fmt_params(sweet['parameters'])} parameters up to it instead of "
                    f"{fmt_params(best['parameters'])}")
        parts.append(
            f"The sweet spot, the shallowest layer shown non-inferior to the best (the "
            f"{confidence:.0%} CI of its gain minus the best layer's stays above "
            f"\u2212{margin:g}), is **{sweet['module']}** (layer "
            f"{order.index(sweet['layer']) + 1}{cost}; gain {fmt(sweet['gain'], sign=True)}, "
            f"difference to the best at least {fmt(sweet.get('diff_best_ci_low'), sign=True)})."
        )
    elif sweet is not None:
        parts.append(f"No shallower layer is shown within {margin:g} of it, so it is also the "
                     "sweet spot.")
    positive = [r["module"] for r in rows if math.isfinite(r["ci_low"]) and r["ci_low"] > 0]
    negative = [r["module"] for r in rows if math.isfinite(r["ci_high"]) and r["ci_high"] < 0]
    if positive:
        parts.append(f"The CI lies above zero at {len(positive)} of {len(rows)} layers "
                     f"({_span(positive)}).")
    else:
        parts.append(f"At no layer does the CI lie above zero: no layer shows a gain "
                     f"distinguishable from {baseline} at this sample size.")
    if negative:
        parts.append(f"The {baseline} baseline does better at {len(negative)} layer(s) "
                     f"({_span(negative)}).")
    return " ".join(parts)


def _span(names: Sequence[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, ..., {names[-1]}"


def n_seeds_of(gain: xr.Dataset, baseline: str) -> int | None:
    """Seeds of a baseline group in a knowledge gain (None when not recorded)."""
    if N_SEEDS not in gain.coords:
        return None
    return int(gain[N_SEEDS].sel({BASELINE: baseline}))
