"""``featstore probe``: classifiers x layers x inits x folds, and the knowledge gain per layer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from featstore.config import (
    DEFAULT_AUTO_GRID,
    DEFAULT_INNER_FOLDS,
    DEFAULT_MARGIN,
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    ProbeConfig,
    parse_auto_grid,
)
from featstore.errors import ProbeInputError

from ._progress import RichProgress

if TYPE_CHECKING:
    import xarray as xr


_GRID = ",".join(format(v, "g") for v in DEFAULT_AUTO_GRID)


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    names = tuple(p.strip() for v in values or [] for p in v.split(",") if p.strip())
    return names or None


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _table(results: xr.Dataset, gain: xr.Dataset | None) -> Table:
    """Scores per layer of the first classifier (accuracy); with a gain, each baseline side by
    side: its score, the gain with its CI and p_best (and the normalized gain for one)."""
    from featstore.results import probe_info

    classifier = str(results["classifier"].values[0])
    metric = "accuracy"
    folds = results.sizes["fold"]
    chance = float(results["chance"].sel(metric=metric))
    info = probe_info(results)
    grouping = info.get("grouping") or {}
    by = grouping.get("by") or (f"regex {grouping['regex']}" if "regex" in grouping else None)
    grouped = f" grouped by {by}, {grouping.get('n_groups', '?')} groups" if by else ""
    title = (f"{classifier} {metric} ({folds} fold{'s' if folds > 1 else ''}{grouped}, "
             f"{info.get('n_images_used', '?')} images, chance {chance:.3f})")
    table = Table(title=title)
    table.add_column("layer")
    table.add_column("units", justify="right")
    if gain is not None:
        g = gain.sel(classifier=classifier, metric=metric)
        baselines = [str(b) for b in g["baseline"].values]
        ci = f"{100 * float(gain.attrs['confidence']):.0f}% CI"
        table.add_column("pretrained", justify="right")
        for b in baselines:
            table.add_column(b, justify="right")
            table.add_column(f"gain vs {b} [{ci}]", justify="right", no_wrap=True)
            table.add_column("p_best", justify="right")
            if len(baselines) == 1:
                table.add_column("normalized", justify="right")
        for j, layer in enumerate(g["layer"].values):
            marks = []
            cells = [_fmt(float(g["pretrained"][j]))]
            for b in baselines:
                row = g.sel(baseline=b)
                marks += [f"{m} vs {b}" if len(baselines) > 1 else m for m, on in (
                    ("best", layer == str(row["best_layer"].values)),
                    ("sweet spot", layer == str(row["sweet_spot_layer"].values))) if on]
                cells += [_fmt(float(row["random"][j])),
                          f"{_fmt(float(row['gain'][j]))} [{_fmt(float(row['ci_low'][j]))}, "
                          f"{_fmt(float(row['ci_high'][j]))}]",
                          _fmt(float(row["p_best"][j]))]
                if len(baselines) == 1:
                    cells.append(_fmt(float(row["normalized_gain"][j])))
            table.add_row(
                f"{g['layer_module'].values[j]}" + (f" ({', '.join(marks)})" if marks else ""),
                str(int(results["layer_units"].values[j])), *cells)
        return table
    mean = results["score"].sel(classifier=classifier, metric=metric).mean("fold")
    for init in results["init"].values:
        table.add_column(str(init), justify="right")
    for j, layer in enumerate(results["layer"].values):
        table.add_row(str(results["layer_module"].values[j]),
                      str(int(results["layer_units"].values[j])),
                      *(_fmt(float(mean.sel(layer=layer, init=i))) for i in results["init"].values))
    return table


def _baseline_lines(results: xr.Dataset, gain: xr.Dataset) -> list[str]:
    """One line per baseline: what it is, the seeds behind the CI, best layer with p_best and
    the sweet spot with the margin (first classifier, accuracy)."""
    import numpy as np

    from featstore.gain import BASELINE_DESCRIPTIONS

    classifier = str(results["classifier"].values[0])
    g = gain.sel(classifier=classifier, metric="accuracy")
    modules = dict(zip((str(v) for v in g["layer"].values),
                       (str(v) for v in g["layer_module"].values), strict=True))
    confidence = float(gain.attrs["confidence"])
    margin = float(gain.attrs["margin"])
    lines = []
    for b in (str(v) for v in g["baseline"].values):
        row = g.sel(baseline=b)
        n = int(row["n_seeds"])
        best = str(row["best_layer"].values)
        sweet = str(row["sweet_spot_layer"].values)
        p = float(row["p_best"].sel(layer=best)) if best else math.nan
        seeds = (f"{n} seeds in the CI, seed SD of the gain up to "
                 f"{_fmt(float(np.nanmax(row['seed_sd'].values)))}" if n > 1 else
                 "1 seed: the CI leaves out the variance between seeds (extract random:0-4)")
        clear = ("clearly best" if p >= confidence else
                 f"no layer clearly best at {confidence:.0%}")
        lines.append(
            f"vs {b} ({BASELINE_DESCRIPTIONS.get(b, b)}; {seeds}): best layer "
            f"{modules.get(best, '-')} (p_best {_fmt(p)}, {clear}); sweet spot "
            f"{modules.get(sweet, '-')} (shallowest layer within {margin:g} of the best at "
            f"{confidence:.0%})")
    return lines


def _unconverged_lines(results: xr.Dataset) -> list[str]:
    from featstore.results import unconverged_fits

    return [
        f"warning: {f['classifier']} did not converge on layer {f['layer']}, init {f['init']}, "
        f"fold {f['fold']}"
        + (f" ({f['fits']} inner-CV fits)" if f["stage"] == "inner" else "")
        + "; raise --max-iter (or --tol)"
        for f in unconverged_fits(results)
    ]


def probe_command(
    store: Annotated[str, typer.Argument(
        help="Feature store path or URL (from `featstore extract`).")],
    classifier: Annotated[list[str] | None, typer.Option(
        "--classifier", "-c",
        help="logreg, linear-svm, ridge, knn, nearest-centroid; values in the name, e.g. "
             "logreg:C=0.01,0.1,1,10 or knn:k=1,5; logreg:C=auto (also linear-svm:C=auto, "
             "ridge:alpha=auto) chooses C per fold by nested CV. Repeatable. Default logreg "
             "(C=1).")] = None,
    folds: Annotated[int, typer.Option(help="Stratified K-fold splits.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold shuffling.")] = 0,
    split: Annotated[bool, typer.Option(
        "--split", help="Use the store's split: train on train+val, test on test.")] = False,
    layers: Annotated[list[str] | None, typer.Option(
        "--layers", help="Layers to probe (module paths), comma-separated; default all.")] = None,
    inits: Annotated[list[str] | None, typer.Option(
        "--inits", help="Inits to probe, comma-separated; default all.")] = None,
    scheduler: Annotated[str | None, typer.Option(
        help="threads (default), threads:N, sync, local:N (a LocalCluster) or "
             "tcp://HOST:PORT.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="CSV: layer, init, classifier, metric, mean, std, n_folds, chance.")] = None,
    gain_out: Annotated[Path | None, typer.Option(
        "--gain-out", help="CSV, one row per layer, classifier, metric and baseline: gain, "
                           "ci_low, ci_high, seed_sd, p_best, normalized_gain with "
                           "normalized_ci_low/high, ...")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates of the gain's CI.")] = 1000,
    margin: Annotated[float, typer.Option(
        help="Sweet spot: the shallowest layer whose gain is shown within this margin of the "
             "best layer's (non-inferiority, metric units).")] = DEFAULT_MARGIN,
    tol: Annotated[float, typer.Option(
        help="Gradient tolerance of logreg (linear-svm: a tenth of it).")] = DEFAULT_TOL,
    max_iter: Annotated[int, typer.Option(
        help="Iteration limit of logreg and linear-svm.")] = DEFAULT_MAX_ITER,
    auto_grid: Annotated[str, typer.Option(
        help="Candidate values of logreg:C=auto, linear-svm:C=auto, ridge:alpha=auto, "
             "comma-separated.")] = _GRID,
    inner_folds: Annotated[int, typer.Option(
        help="Stratified inner folds of the nested CV of =auto classifiers.")
    ] = DEFAULT_INNER_FOLDS,
    group_by: Annotated[str | None, typer.Option(
        "--group-by", help="Image coordinate of the store (an extra manifest column such as "
                           "patient or slide): StratifiedGroupKFold, no group in two test "
                           "folds; the gain's CI resamples groups.")] = None,
    group_regex: Annotated[str | None, typer.Option(
        "--group-regex", help=r"Group each image by the first capture group of this regex "
                              r"searched in its path, e.g. '^[^/]+/(\d+)_'.")] = None,
    leak_check: Annotated[bool, typer.Option(
        "--leak-check/--no-leak-check", help="Hash the store's images (when they can be read) "
                                             "and warn when test images have a near-copy among "
                                             "their fold's training images.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Recompute stored results.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fit classifiers on every layer and init; show each layer's knowledge gain with its CI."""
    # heavy imports (dask, xarray, scikit-learn) only when the command runs
    from featstore.gain import check_gain_inits, knowledge_gain, parse_margin
    from featstore.leakcheck import leak_warning
    from featstore.results import init_kinds, probe_info, write_gain_csv, write_results_csv
    from featstore.sweep import run_probe, stored_run

    config = ProbeConfig(
        store=store, classifiers=tuple(classifier or ("logreg",)), folds=folds, seed=seed,
        split=split, layers=_names(layers), inits=_names(inits), tol=tol, max_iter=max_iter,
        auto_grid=parse_auto_grid(auto_grid), inner_folds=inner_folds, scheduler=scheduler,
        force=force, group_by=group_by, group_regex=group_regex, leak_check=leak_check,
    )
    if n_boot < 1:
        raise ProbeInputError(f"invalid --n-boot {n_boot}; must be an integer >= 1")
    parse_margin(margin)
    err = Console(stderr=True)
    reused = None if force else stored_run(config)
    with RichProgress("blocks", enabled=not quiet and reused is None) as progress:
        results = run_probe(config, progress, require_gain=gain_out is not None)
    info = probe_info(results)
    run = info.get("run", "?")
    if reused is not None:
        err.print(f"reusing stored results of run {run} (same configuration); --force "
                  "recomputes", highlight=False)
    gain = None
    inits_ = [str(v) for v in results["init"].values]
    kinds = init_kinds(results)
    try:
        check_gain_inits(inits_, kinds)
    except ProbeInputError as exc:
        err.print(f"no knowledge gain: {exc}", highlight=False)
    else:
        gain = knowledge_gain(results, n_boot=n_boot, margin=margin)
    console = Console()
    table = _table(results, gain)
    if not console.is_terminal:  # piped: never squash the baselines' columns into ellipses
        wide = console.measure(table, options=console.options.update_width(10_000)).maximum
        console = Console(width=max(console.width, wide))
    console.print(table)
    if gain is not None:
        for line in _baseline_lines(results, gain):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    for line in _unconverged_lines(results):
        err.print(line, highlight=False, markup=False, soft_wrap=True)
    warning = leak_warning(info.get("leaks"))
    if warning is not None:
        err.print(warning, highlight=False, markup=False, soft_wrap=True)
    if out is not None:
        write_results_csv(results, out)
    if gain_out is not None and gain is not None:
        write_gain_csv(gain, gain_out)
    err.print(f"results: run {run} in {config.store}/probes"
              + (f"; {out}" if out else "") + (f"; {gain_out}" if gain_out else ""),
              highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("probe")(probe_command)
