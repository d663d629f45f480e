"""What the written report says (:func:`report_blocks`) and the one function that writes it.

Only :func:`write_report` touches files: it reads a store's probe run, computes the knowledge
gain and writes

- ``scores_<metric>.png``: probe metric against layer depth, every pretrained-weight init and
  every baseline group (averaged over its seeds), each with a confidence band over folds, and
  the chance level;
- ``gain_<metric>.png``: knowledge gain per layer against each baseline, side by side, with its
  bootstrap confidence interval, the zero line, the best layer (with ``p_best``) and the sweet
  spot;
- ``gain_vs_parameters_<metric>.png``: gain against the number of parameters up to each layer
  (the complexity/benefit trade-off);
- ``results.csv`` (fold mean and spread per layer, init, classifier and metric), ``gain.csv``,
  ``report.md`` and ``report.html``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from featstore.errors import FeatstoreInputError
from featstore.gain import BASELINE_DESCRIPTIONS, DEFAULT_MARGIN, PRETRAINED_BN_DESCRIPTION
from featstore.results import (
    CHOSEN_PARAM,
    CONVERGED,
    init_kinds,
    layer_labels,
    probe_info,
    unconverged_fits,
)

from .document import Block, render_html, render_markdown
from .figures import plot_gain, plot_gain_vs_parameters, plot_health, plot_scores
from .tables import (
    baselines_of,
    check_choice,
    fmt,
    fmt_params,
    gain_rows,
    gain_slice,
    labels_of,
    marked_layers,
    metric_label,
    n_seeds_of,
    sweet_spot_text,
)

__all__ = ["ReportInputs", "ReportFiles", "report_blocks", "write_report"]


def _attrs(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


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
    similarity : xarray.Dataset, optional
        :func:`featstore.cka` of the store, when the report computed it.
    transfer, correlation : xarray.Dataset, optional
        :func:`featstore.transferability` of the store and its rank correlation with the probe
        accuracy (:func:`featstore.transfer.transferability_correlation`), when computed.
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
    similarity: xr.Dataset | None = None
    transfer: xr.Dataset | None = None
    correlation: xr.Dataset | None = None




def report_blocks(inputs: ReportInputs) -> list[Block]:
    """The report as a list of blocks, rendered by :func:`render_markdown` / :func:`render_html`."""
    meta = inputs.meta
    results, gain = inputs.results, inputs.gain
    baselines = baselines_of(gain)
    rows = {b: gain_rows(results, gain, inputs.classifier, inputs.metric, inputs.parameters,
                         inputs.confidence, baseline=b) for b in baselines}
    probe = probe_info(results)
    config = probe.get("config", {}) if isinstance(probe.get("config"), Mapping) else {}
    data = meta.get("data", {}) if isinstance(meta.get("data"), Mapping) else {}
    data_name = Path(str(data.get("root", "data"))).name or "data"
    n_images = int(meta.get("n_images", results.sizes.get("image", 0)))
    folds = results.sizes.get("fold", 0)
    margin = float(gain.attrs.get("margin", DEFAULT_MARGIN))
    metric_name = metric_label(inputs.metric)
    against = "; ".join(
        f"**{b}** ({_seeds(n_seeds_of(gain, b))}): {BASELINE_DESCRIPTIONS.get(b, b)}"
        for b in baselines)
    kinds = init_kinds(results)
    adabn = (f" The `pretrained+bn` init ({PRETRAINED_BN_DESCRIPTION}) is shown as its own "
             "curve among the scores; it is neither a treatment nor a baseline of the gain."
             if "pretrained+bn" in kinds else "")
    blocks: list[Block] = [
        Block("heading", f"featstore report: {meta.get('model', '?')} on {data_name}", level=1),
        Block("paragraph",
              f"How much ImageNet knowledge transfers to these images, layer by layer "
              f"(Li & Plataniotis, PLoS ONE 2020). A `{inputs.classifier}` probe was fit on the "
              f"pooled activations of each of {results.sizes.get('layer', 0)} layers of the "
              f"ImageNet-pretrained network and of baseline networks, with {folds}-fold "
              f"cross-validation over {n_images} images. The knowledge gain of a layer is "
              f"{metric_name.lower()}(pretrained) \u2212 {metric_name.lower()}(baseline), "
              f"paired on the same folds and averaged over the baseline's seeds, against each "
              f"baseline side by side: {against}.{adabn}"),
        Block("heading", "Where the knowledge is"),
    ]
    for b in baselines:
        blocks.append(Block("paragraph", sweet_spot_text(
            rows[b], inputs.metric, inputs.confidence, margin, baseline=b,
            n_seeds=n_seeds_of(gain, b))))
    captions = {
        "scores": f"{metric_name} of the probe per layer: pretrained and each baseline group "
                  f"(averaged over its seeds); bands are {inputs.confidence:.0%} CIs over "
                  "folds, dashed grey line is chance.",
        "gain": "Knowledge gain per layer against each baseline, side by side, with its "
                "bootstrap CI; the star marks the best layer (largest gain; p_best in the panel "
                "title), the diamond the sweet spot (shallowest layer whose gain is shown within "
                f"{margin:g} of the best).",
        "parameters": "Knowledge gain against the parameters the network needs up to each "
                      "layer (the cost of using that layer), one curve per baseline.",
    }
    for role in ("scores", "gain", "parameters"):
        if role in inputs.figures:
            blocks.append(Block("image", captions[role], src=inputs.figures[role]))
    blocks.append(Block("heading", f"Per-layer results ({inputs.classifier}, {metric_name})"))
    header = ["#", "layer", "units", "params up to layer", "pretrained"]
    for b in baselines:
        header += [b, f"gain vs {b} ({inputs.confidence:.0%} CI)", f"p_best vs {b}"]
    header.append("note")
    first = rows[baselines[0]]
    table_rows = []
    for i, row in enumerate(first):
        cells = [str(i), row["module"], "n/a" if row["units"] is None else str(row["units"]),
                 fmt_params(row["parameters"]), fmt(row["pretrained"])]
        marks = []
        for b in baselines:
            r = rows[b][i]
            cells += [fmt(r["random"]),
                      f"{fmt(r['gain'], sign=True)} [{fmt(r['ci_low'], sign=True)}, "
                      f"{fmt(r['ci_high'], sign=True)}]",
                      fmt(r["p_best"], digits=2)]
            marks += [f"{m} ({b})" for m, on in (("best", r["best"]),
                                                 ("sweet spot", r["sweet_spot"])) if on]
        table_rows.append((*cells, ", ".join(marks)))
    blocks.append(Block("table", header=tuple(header), rows=tuple(table_rows)))
    blocks.append(Block("paragraph",
                        "pretrained and each baseline: mean over folds (a baseline also over "
                        "its seeds); p_best: the share of bootstrap replicates in which the "
                        "layer has the largest gain (it sums to 1 over layers)."))
    blocks.extend(_detail_blocks(inputs, rows, margin))
    other = _other_metrics_table(gain)
    if other is not None:
        blocks.append(Block("heading", "Best layer and sweet spot for every classifier, metric "
                                       "and baseline"))
        blocks.append(other)
    blocks.extend(_fit_blocks(inputs))
    blocks.extend(_health_blocks(inputs))
    blocks.extend(_similarity_blocks(inputs))
    blocks.extend(_dataset_blocks(inputs, data))
    blocks.extend(_config_blocks(inputs, probe, config))
    blocks.extend(_caveat_blocks(inputs, data))
    return blocks


def _seeds(n: int | None) -> str:
    return "seeds not recorded" if n is None else f"{n} seed{'s' if n != 1 else ''}"


def _detail_blocks(inputs: ReportInputs, rows: Mapping[str, list[dict[str, Any]]],
                   margin: float) -> list[Block]:
    """One table per baseline: the gain's interval, seed spread, normalized gain, p_best and the
    non-inferiority bound behind the sweet spot."""
    ci = f"{inputs.confidence:.0%} CI"
    blocks = [Block("heading", "Gain statistics per baseline"),
              Block("paragraph",
                    f"seed SD: standard deviation of the gain across the baseline's seeds (the "
                    f"{ci} already includes this variance when there are two or more seeds); "
                    "normalized gain: gain / (1 \u2212 baseline) when positive (the share of "
                    "the baseline's headroom to a perfect score that pretraining recovers), "
                    "gain / baseline when negative (the share of the baseline's score lost), 0 "
                    "when equal, so it lies in [\u22121, 1] and is defined at the ceiling; "
                    f"vs best: the lower bound of the {ci} of gain(layer) \u2212 gain(best "
                    f"layer), paired on the same replicates; the sweet spot is the shallowest "
                    f"layer where it lies above \u2212{margin:g}.")]
    for b, table in rows.items():
        n = n_seeds_of(inputs.gain, b)
        blocks.append(Block("heading", f"vs {b} ({_seeds(n)})", level=3))
        body = []
        for i, row in enumerate(table):
            mark = " ".join(m for m, on in (("best", row["best"]),
                                            ("sweet spot", row["sweet_spot"])) if on)
            body.append((
                str(i), row["module"], fmt(row["random"]), fmt(row["gain"], sign=True),
                f"[{fmt(row['ci_low'], sign=True)}, {fmt(row['ci_high'], sign=True)}]",
                fmt(row["seed_sd"]),
                f"{fmt(row['normalized_gain'], sign=True)} "
                f"[{fmt(row['normalized_ci_low'], sign=True)}, "
                f"{fmt(row['normalized_ci_high'], sign=True)}]",
                fmt(row["p_best"], digits=2), fmt(row["diff_best_ci_low"], sign=True), mark))
        blocks.append(Block("table", header=(
            "#", "layer", b, "gain", ci, "seed SD", f"normalized gain [{ci}]", "p_best",
            "vs best (CI low)", "note"), rows=tuple(body)))
    return blocks


def _other_metrics_table(gain: xr.Dataset) -> Block | None:
    if "best_layer" not in gain or "sweet_spot_layer" not in gain:
        return None
    modules = dict(zip(labels_of(gain, "layer"), layer_labels(gain), strict=True))
    rows = []
    for clf in labels_of(gain, "classifier"):
        for metric in labels_of(gain, "metric"):
            for b in baselines_of(gain):
                sel = gain_slice(gain, clf, metric, b)
                best, sweet = marked_layers(sel)
                top = float(sel["gain"].max())
                p = (float(sel["p_best"].sel(layer=best)) if best and "p_best" in sel
                     else float("nan"))
                rows.append((clf, metric_label(metric), b, modules.get(best or "", "n/a"),
                             fmt(p, digits=2), modules.get(sweet or "", "n/a"),
                             fmt(top, sign=True)))
    return Block("table", header=("classifier", "metric", "baseline", "best layer", "p_best",
                                  "sweet spot", "largest gain"), rows=tuple(rows))


def _fit_blocks(inputs: ReportInputs) -> list[Block]:
    """Convergence of every iterative fit, and the regularization chosen by nested CV."""
    results = inputs.results
    blocks = [Block("heading", "Fits")]
    if CONVERGED not in results:
        blocks.append(Block("paragraph", "This probe run records no convergence per fit "
                                         "(made by an older featstore)."))
    else:
        failed = unconverged_fits(results)
        if failed:
            blocks.append(Block("paragraph", f"{len(failed)} fit record(s) did not converge "
                                             "(the solver stopped at --max-iter before meeting "
                                             "its tolerance); their predictions depend on where "
                                             "it stopped:"))
            blocks.append(Block("list", items=tuple(
                f"{f['classifier']}, layer {f['layer']}, init {f['init']}, fold {f['fold']}"
                + (f" ({f['fits']} inner-CV fits)" if f["stage"] == "inner" else "")
                for f in failed)))
        else:
            blocks.append(Block("paragraph", "Every logreg and linear-svm fit converged."))
    if CHOSEN_PARAM in results:
        chosen = results[CHOSEN_PARAM]
        auto = [c for c in labels_of(results, "classifier")
                if bool(np.isfinite(chosen.sel(classifier=c).values).any())]
        modules = layer_labels(results)
        kinds = init_kinds(results)
        for clf in auto:
            param = "alpha" if clf.startswith("ridge") else "C"
            groups = list(dict.fromkeys(kinds))
            body = []
            for j, layer in enumerate(labels_of(results, "layer")):
                cells = [modules[j]]
                for g in groups:
                    inits = [i for i, k in zip(labels_of(results, "init"), kinds, strict=True)
                             if k == g]
                    values = chosen.sel(classifier=clf, layer=layer, init=inits).values
                    values = values[np.isfinite(values)]
                    cells.append(_choices(values))
                body.append(tuple(cells))
            values = chosen.sel(classifier=clf).values
            values = values[np.isfinite(values)]
            grid = [float(v) for v in (_attrs(probe_info(results).get("config"))
                                       .get("auto_grid") or [])]
            edge = ""
            if grid and values.size:
                at_edge = int(np.isin(values, [min(grid), max(grid)]).sum())
                if at_edge:
                    edge = (f" {at_edge} of {values.size} choices lie at an end of the grid "
                            f"({min(grid):g} or {max(grid):g}): the best value may lie beyond "
                            "it; widen --auto-grid to see.")
            blocks.append(Block("paragraph",
                                f"`{clf}` chose {param} by nested stratified cross-validation "
                                "inside each training fold (largest mean inner accuracy; the "
                                "first grid value on ties); the values chosen per layer (over "
                                f"folds and seeds, with how often).{edge}"))
            blocks.append(Block("table", header=("layer", *groups), rows=tuple(body)))
    return blocks


def _choices(values: np.ndarray) -> str:
    if values.size == 0:
        return "n/a"
    unique, counts = np.unique(values, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return ", ".join(f"{unique[k]:g}" + (f" ({counts[k]}x)" if len(unique) > 1 else "")
                     for k in order[:3]) + (", ..." if len(unique) > 3 else "")


def _health_blocks(inputs: ReportInputs) -> list[Block]:
    """Activation health: the figure, and the degenerate (init, layer) pairs in words."""
    from featstore.health import degenerate, degenerate_warning

    health = _attrs(inputs.meta.get("health"))
    if not health:
        return []
    blocks = [Block("heading", "Activation health")]
    if "health" in inputs.figures:
        blocks.append(Block("image", "Pooled RMS (log scale) and effective dimensionality of "
                                     "each layer and init: a layer whose RMS collapses by "
                                     "orders of magnitude, or whose effective dimensionality "
                                     "is near 1, carries its signal in the last bits.",
                            src=inputs.figures["health"]))
    warning = degenerate_warning(degenerate(health))
    blocks.append(Block("paragraph", (f"Warning: {warning}. A gain measured against such a "
                                      "baseline at those layers compares with a numerical "
                                      "artefact, not with random features.") if warning else
                        "No layer of any init is numerically degenerate."))
    return blocks


def _similarity_blocks(inputs: ReportInputs) -> list[Block]:
    """Linear CKA and transferability estimators, when the report computed them."""
    blocks: list[Block] = []
    if inputs.similarity is not None:
        blocks.append(Block("heading", "Representation similarity (linear CKA)"))
        for role, caption in (
            ("cka_curve", "CKA between each layer of the pretrained network and the same "
                          "layer of each other init: 1 means the same representation up to "
                          "rotation and scale."),
            ("cka_heatmap", "CKA between every pair of layers, one panel per pair of inits."),
        ):
            if role in inputs.figures:
                blocks.append(Block("image", caption, src=inputs.figures[role]))
        notes = _attrs(inputs.similarity.attrs.get("featstore_similarity")).get("notes") or []
        if notes:
            blocks.append(Block("list", items=tuple(str(n) for n in notes)))
    if inputs.transfer is not None:
        blocks.append(Block("heading", "Transferability estimators"))
        if "transferability" in inputs.figures:
            blocks.append(Block("image", "LogME and H-score per layer and init beside the "
                                         "probe accuracy.",
                                src=inputs.figures["transferability"]))
        corr = inputs.correlation
        if corr is not None and "spearman" in corr:
            rows = []
            for estimator in labels_of(corr, "estimator"):
                for init in labels_of(corr, "init"):
                    for clf in labels_of(corr, "classifier"):
                        value = float(corr["spearman"].sel(estimator=estimator, init=init,
                                                           classifier=clf))
                        rows.append((estimator, init, clf, fmt(value, digits=2)))
            blocks.append(Block("table", header=("estimator", "init", "classifier",
                                                 "Spearman with probe accuracy"),
                                rows=tuple(rows)))
    return blocks


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
    classifiers = ", ".join(labels_of(inputs.results, "classifier"))
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
    if config.get("inner_folds") and any("=auto" in str(c) for c in
                                         labels_of(inputs.results, "classifier")):
        grid = ", ".join(f"{float(v):g}" for v in config.get("auto_grid") or [])
        items.append(f"=auto classifiers: {config['inner_folds']}-fold stratified inner CV in "
                     f"every training fold over the grid {grid}")
    gain_attrs = inputs.gain.attrs
    if gain_attrs.get("n_boot"):
        items.append(f"gain CI: {float(gain_attrs.get('confidence', inputs.confidence)):.0%}, "
                     f"{gain_attrs['n_boot']} replicates (seed {gain_attrs.get('seed', '?')}), "
                     f"{gain_attrs.get('ci_method', 'bootstrap')}")
    seeds = gain_attrs.get("seed_variance")
    if isinstance(seeds, Mapping):
        items.append("variance between seeds in the CI: "
                     + "; ".join(f"{b}: {text}" for b, text in seeds.items()))
    if gain_attrs.get("sweet_spot"):
        items.append(f"sweet spot: {gain_attrs['sweet_spot']} (--margin "
                     f"{float(gain_attrs.get('margin', DEFAULT_MARGIN)):g})")
    items.append(f"figures show classifier `{inputs.classifier}` and metric `{inputs.metric}`")
    versions = meta.get("versions", {})
    if isinstance(versions, Mapping) and versions:
        items.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    items.append(f"store: `{inputs.store}`")
    return [Block("heading", "Configuration"), Block("list", items=tuple(items))]


def _caveat_blocks(inputs: ReportInputs, data: Mapping[str, Any]) -> list[Block]:
    folds = inputs.results.sizes.get("fold", 0)
    seeds = ", ".join(f"{b} {_seeds(n_seeds_of(inputs.gain, b))}"
                      for b in baselines_of(inputs.gain))
    items = [
        "Cross-validation splits images, not patients or slides: tiles or augmented copies of "
        "the same tissue in different folds make absolute scores optimistic. The gain compares "
        "pretrained and baseline weights on the same folds, so it is less affected, but it is "
        "not a held-out estimate either.",
        "The gain's CI covers the sampling of test images and, with two or more seeds, the "
        "variance between the baseline's seeds; it does not cover refitting on other training "
        "sets or other fold partitions (measured on LC25000 as small: SD 0.001-0.013 across "
        f"reshuffled folds). Seeds per baseline: {seeds}.",
        "Random features are strong on colour and simple texture, so a small gain in shallow "
        "layers is expected and not a failure.",
        "Activations are globally pooled before the probe: spatial arrangement within the "
        "image is discarded, which penalises deep layers less than a spatial probe would.",
        f"Fold intervals use {folds} folds; with few images per fold they are wide, and "
        "overlapping CIs mean the data cannot rank those layers.",
        "A linear probe measures linearly available information; a non-linear classifier may "
        "find more in random features.",
    ]
    return [Block("heading", "Caveats"), Block("list", items=tuple(items))]



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
    return labels_of(results, "classifier")[0]


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
    margin: float = DEFAULT_MARGIN,
    parameters: bool = True,
    similarity: bool = False,
    transferability: bool = False,
    scheduler: str | None = None,
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
    n_boot, seed, confidence, margin : int, int, float, float
        Bootstrap settings and the sweet spot's non-inferiority margin of
        :func:`featstore.knowledge_gain`.
    parameters : bool
        Also draw gain against cumulative parameter count (builds the model once).
    similarity : bool
        Also compute linear CKA between every pair of (layer, init) variables
        (:func:`featstore.cka`): its figures and ``cka.csv``.
    transferability : bool
        Also compute LogME and H-score per layer and init (:func:`featstore.transferability`),
        their rank correlation with the probe accuracy, a figure and ``transferability.csv``.
    scheduler : str, optional
        Where those two run (see :func:`featstore.scheduler.parse_scheduler`).
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
    from featstore.gain import knowledge_gain
    from featstore.results import open_results, write_gain_csv, write_results_csv
    from featstore.store import open_store

    url = str(store)
    store_ds = open_store(url)  # raises NotAStoreError
    meta = dict(store_ds.attrs["featstore"])
    results = open_results(url, run=run)
    clf = classifier if classifier is not None else _default_classifier(results)
    check_choice("--classifier", clf, labels_of(results, "classifier"))
    check_choice("--metric", metric, labels_of(results, "metric"))
    gain = knowledge_gain(results, n_boot=n_boot, seed=seed, confidence=confidence,
                          margin=margin)

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    param_counts: dict[str, int] | None = None
    if parameters:
        from featstore.models import model_parameter_counts  # torch: only for this figure

        modules = layer_labels(results)
        try:
            by_module = model_parameter_counts(str(meta["model"]), modules)
            param_counts = {var: by_module[m] for var, m in
                            zip(labels_of(results, "layer"), modules, strict=True)}
        except FeatstoreInputError as exc:
            if log is not None:
                log(f"skipping the parameter figure: {exc}")

    figures: dict[str, Figure] = {
        "scores": plot_scores(results, clf, metric, confidence),
        "gain": plot_gain(gain, clf, metric),
    }
    if param_counts is not None:
        figures["parameters"] = plot_gain_vs_parameters(gain, param_counts, clf, metric)
    if _attrs(meta.get("health")):
        figures["health"] = plot_health(_attrs(meta.get("health")))
    tables = {"results": out_dir / "results.csv", "gain": out_dir / "gain.csv"}
    cka_result = scores = correlation = None
    if similarity:
        from featstore.similarity import cka, write_cka_csv
        from featstore.similarity_figures import plot_cka_curve, plot_cka_heatmaps

        cka_result = cka(url, scheduler=scheduler)
        figures["cka_heatmap"] = plot_cka_heatmaps(cka_result)
        if cka_result.sizes.get("init_a", 0) >= 2:
            figures["cka_curve"] = plot_cka_curve(cka_result)
        tables["cka"] = out_dir / "cka.csv"
        write_cka_csv(cka_result, tables["cka"])
    if transferability:
        from featstore.similarity_figures import plot_transferability
        from featstore.transfer import (
            transferability as estimate,
        )
        from featstore.transfer import (
            transferability_correlation,
            write_transferability_csv,
        )

        scores = estimate(url, scheduler=scheduler)
        correlation = transferability_correlation(scores, results)
        figures["transferability"] = plot_transferability(scores, results, correlation)
        tables["transferability"] = out_dir / "transferability.csv"
        write_transferability_csv(scores, tables["transferability"])
    stems = {"scores": f"scores_{metric}", "gain": f"gain_{metric}",
             "parameters": f"gain_vs_parameters_{metric}", "health": "health",
             "cka_heatmap": "cka_heatmap", "cka_curve": "cka_pretrained_vs_baselines",
             "transferability": "transferability"}
    figure_paths: dict[str, Path] = {}
    for role, fig in figures.items():
        path = out_dir / f"{stems[role]}.png"
        fig.savefig(path, dpi=150)
        figure_paths[role] = path
        if log is not None:
            log(f"wrote {path}")

    write_results_csv(results, tables["results"])
    write_gain_csv(gain, tables["gain"])

    classes = [str(c) for c in meta.get("classes", [])]
    inputs = ReportInputs(
        results=results, gain=gain, meta=meta, classifier=clf, metric=metric, store=url,
        figures={role: path.name for role, path in figure_paths.items()},
        parameters=param_counts, class_counts=_class_counts(store_ds, classes),
        split_counts=_split_counts(store_ds), confidence=confidence,
        similarity=cka_result, transfer=scores, correlation=correlation,
    )
    blocks = report_blocks(inputs)
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(render_html(blocks, title=blocks[0].text), encoding="utf-8")
    if log is not None:
        log(f"wrote {markdown} and {page}")
    return ReportFiles(out_dir, markdown, page, figure_paths, tables, clf, metric)

