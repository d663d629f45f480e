"""``featstore probe``: classifiers x layers x inits x folds, and the knowledge gain per layer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from featstore.config import DEFAULT_MAX_ITER, DEFAULT_TOL, ProbeConfig
from featstore.errors import ProbeInputError

from ._progress import RichProgress

if TYPE_CHECKING:
    import xarray as xr


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    names = tuple(p.strip() for v in values or [] for p in v.split(",") if p.strip())
    return names or None


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _table(results: xr.Dataset, gain: xr.Dataset | None) -> Table:
    from featstore.results import probe_info

    classifier = str(results["classifier"].values[0])
    metric = "accuracy"
    folds = results.sizes["fold"]
    chance = float(results["chance"].sel(metric=metric))
    info = probe_info(results)
    title = (f"{classifier} {metric} ({folds} fold{'s' if folds > 1 else ''}, "
             f"{info.get('n_images_used', '?')} images, chance {chance:.3f})")
    table = Table(title=title)
    table.add_column("layer")
    table.add_column("units", justify="right")
    if gain is not None:
        g = gain.sel(classifier=classifier, metric=metric)
        for name in ("pretrained", "random", "gain"):
            table.add_column(name, justify="right")
        table.add_column(f"{100 * float(gain.attrs['confidence']):.0f}% CI", justify="right",
                         no_wrap=True)
        table.add_column("normalized", justify="right")
        best = str(g["best_layer"].values)
        sweet = str(g["sweet_spot_layer"].values)
        for j, layer in enumerate(g["layer"].values):
            flags = (("best", layer == best), ("sweet spot", layer == sweet))
            marks = " ".join(m for m, on in flags if on)
            table.add_row(
                f"{g['layer_module'].values[j]}" + (f" ({marks})" if marks else ""),
                str(int(results["layer_units"].values[j])),
                _fmt(float(g["pretrained"][j])), _fmt(float(g["random"][j])),
                _fmt(float(g["gain"][j])),
                f"[{_fmt(float(g['ci_low'][j]))}, {_fmt(float(g['ci_high'][j]))}]",
                _fmt(float(g["normalized_gain"][j])),
            )
        return table
    mean = results["score"].sel(classifier=classifier, metric=metric).mean("fold")
    for init in results["init"].values:
        table.add_column(str(init), justify="right")
    for j, layer in enumerate(results["layer"].values):
        table.add_row(str(results["layer_module"].values[j]),
                      str(int(results["layer_units"].values[j])),
                      *(_fmt(float(mean.sel(layer=layer, init=i))) for i in results["init"].values))
    return table


def probe_command(
    store: Annotated[str, typer.Argument(
        help="Feature store path or URL (from `featstore extract`).")],
    classifier: Annotated[list[str] | None, typer.Option(
        "--classifier", "-c",
        help="logreg, linear-svm, ridge, knn, nearest-centroid; values in the name, e.g. "
             "logreg:C=0.01,0.1,1,10 or knn:k=1,5. Repeatable. Default logreg (C=1).")] = None,
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
        "--gain-out", help="CSV: layer, classifier, metric, gain, ci_low, ci_high, "
                           "normalized_gain, pretrained, random.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates of the gain's CI.")] = 1000,
    tol: Annotated[float, typer.Option(
        help="Gradient tolerance of logreg (linear-svm: a tenth of it).")] = DEFAULT_TOL,
    max_iter: Annotated[int, typer.Option(
        help="Iteration limit of logreg and linear-svm.")] = DEFAULT_MAX_ITER,
    force: Annotated[bool, typer.Option("--force", help="Recompute stored results.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fit classifiers on every layer and init; show each layer's knowledge gain with its CI."""
    # heavy imports (dask, xarray, scikit-learn) only when the command runs
    from featstore.gain import check_gain_inits, knowledge_gain
    from featstore.results import init_kinds, probe_info, write_gain_csv, write_results_csv
    from featstore.sweep import run_probe, stored_run

    config = ProbeConfig(
        store=store, classifiers=tuple(classifier or ("logreg",)), folds=folds, seed=seed,
        split=split, layers=_names(layers), inits=_names(inits), tol=tol, max_iter=max_iter,
        scheduler=scheduler, force=force,
    )
    if n_boot < 1:
        raise ProbeInputError(f"invalid --n-boot {n_boot}; must be an integer >= 1")
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
        gain = knowledge_gain(results, n_boot=n_boot)
    Console().print(_table(results, gain))
    unconverged = info.get("unconverged") or {}
    if unconverged:
        err.print("note: solver hit max_iter in "
                  + ", ".join(f"{k} ({v} folds)" for k, v in unconverged.items()),
                  highlight=False)
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
