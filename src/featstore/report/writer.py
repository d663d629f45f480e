"""What the written report says (:func:`report_blocks`) and the one function that writes it.

Only :func:`write_report` touches files: it reads a store's probe run, computes the knowledge
gain and writes

- ``scores_<metric>.png``: probe metric against layer depth, pretrained and every random init,
  each with a confidence band over folds, and the chance level;
- ``gain_<metric>.png``: knowledge gain per layer with its bootstrap confidence interval, the zero
  line, the best layer and the sweet spot;
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
from featstore.results import init_kinds, layer_labels, probe_info

from .document import Block, render_html, render_markdown
from .figures import plot_gain, plot_gain_vs_parameters, plot_scores
from .tables import (
    check_choice,
    fmt,
    fmt_params,
    gain_rows,
    labels_of,
    marked_layers,
    metric_label,
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




def report_blocks(inputs: ReportInputs) -> list[Block]:
    """The report as a list of blocks, rendered by :func:`render_markdown` / :func:`render_html`."""
    meta = inputs.meta
    results, gain = inputs.results, inputs.gain
    rows = gain_rows(results, gain, inputs.classifier, inputs.metric, inputs.parameters,
                     inputs.confidence)
    probe = probe_info(results)
    config = probe.get("config", {}) if isinstance(probe.get("config"), Mapping) else {}
    data = meta.get("data", {}) if isinstance(meta.get("data"), Mapping) else {}
    data_name = Path(str(data.get("root", "data"))).name or "data"
    n_images = int(meta.get("n_images", results.sizes.get("image", 0)))
    folds = results.sizes.get("fold", 0)
    randoms = [i for i, k in zip(labels_of(results, "init"), init_kinds(results), strict=True)
               if k == "random"]
    metric_name = metric_label(inputs.metric)
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
            fmt_params(row["parameters"]), fmt(row["pretrained"]), fmt(row["random"]),
            fmt(row["gain"], sign=True),
            f"[{fmt(row['ci_low'], sign=True)}, {fmt(row['ci_high'], sign=True)}]",
            fmt(row["normalized_gain"], sign=True), mark,
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
    modules = dict(zip(labels_of(gain, "layer"), layer_labels(gain), strict=True))
    rows = []
    for clf in labels_of(gain, "classifier"):
        for metric in labels_of(gain, "metric"):
            sel = gain.sel(classifier=clf, metric=metric)
            best, sweet = marked_layers(sel)
            top = float(sel["gain"].max())
            rows.append((clf, metric_label(metric), modules.get(best or "", "n/a"),
                         modules.get(sweet or "", "n/a"), fmt(top, sign=True)))
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
    n_random = sum(1 for k in init_kinds(inputs.results) if k == "random")
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
    gain = knowledge_gain(results, n_boot=n_boot, seed=seed, confidence=confidence)

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

