"""``featstore similarity`` (layer-wise CKA) and ``featstore transferability`` (LogME, H-score)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import xarray as xr

_SCHEDULER_HELP = "threads (default), threads:N, sync, local:N (a LocalCluster) or tcp://HOST:PORT."


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _names(values: list[str] | None) -> list[str] | None:
    names = [p.strip() for v in values or [] for p in v.split(",") if p.strip()]
    return names or None


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _cka_table(result: xr.Dataset) -> Table:
    from featstore.similarity_figures import reference_init

    layers = [str(v) for v in result["layer_a"].values]
    inits = [str(v) for v in result["init_a"].values]
    ref = reference_init(inits)
    others = [i for i in inits if i != ref]
    info = result.attrs.get("featstore_similarity", {})
    table = Table(title=f"CKA of each {ref} layer with the same layer "
                        f"({info.get('estimator', 'linear')}, {info.get('n_images_used', '?')} "
                        "images)")
    table.add_column("layer")
    table.add_column("units", justify="right")
    null = "null_q95" in result.data_vars
    for other in others:
        table.add_column(other, justify="right")
        if null:
            table.add_column("null 95%", justify="right")
            table.add_column("p", justify="right")
    for j, layer in enumerate(layers):
        cells = [layer, str(int(result["units_a"].values[j]))]
        for other in others:
            pick = {"layer_a": layer, "init_a": ref, "layer_b": layer, "init_b": other}
            cells.append(_fmt(float(result["cka"].sel(pick))))
            if null:
                cells.append(_fmt(float(result["null_q95"].sel(pick))))
                cells.append(_fmt(float(result["p_value"].sel(pick))))
        table.add_row(*cells)
    return table


def similarity_command(
    store: Annotated[str, typer.Argument(help="Feature store path or URL.")],
    out: Annotated[Path, typer.Option(
        "--out", help="Output directory: cka.csv, cka_heatmap.png, cka_curve.png.")] = Path(
        "similarity"),
    layers: Annotated[list[str] | None, typer.Option(
        "--layers", help="Layers (module paths), comma-separated; default all.")] = None,
    inits: Annotated[list[str] | None, typer.Option(
        "--inits", help="Inits, comma-separated; default all.")] = None,
    debiased: Annotated[bool, typer.Option(
        "--debiased", help="Unbiased HSIC estimator (Song et al. 2012); needs >= 4 images.")
    ] = False,
    permutations: Annotated[int, typer.Option(
        help="Permutation null per pair (images of one side shuffled): p-value and the "
             "null's 95th percentile. Costs about N times the CKA.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the permutations.")] = 0,
    scheduler: Annotated[str | None, typer.Option(help=_SCHEDULER_HELP)] = None,
) -> None:
    """Linear CKA between every pair of (layer, init): CSV, heatmaps and the pretrained-vs-random
    curve."""
    from featstore.similarity import cka, write_cka_csv
    from featstore.similarity_figures import plot_cka_curve, plot_cka_heatmaps

    err = _err()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the notes are printed below
        result = cka(store, layers=_names(layers), inits=_names(inits), debiased=debiased,
                     permutations=permutations, seed=seed, scheduler=scheduler)
    info = result.attrs.get("featstore_similarity", {})
    for note in info.get("notes", []):
        err.print(f"warning: {note}", markup=False)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_cka_csv(result, out / "cka.csv")]
    heatmap = out / "cka_heatmap.png"
    plot_cka_heatmaps(result).savefig(heatmap, dpi=150)
    written.append(heatmap)
    if result.sizes["init_a"] >= 2:
        Console().print(_cka_table(result))
        curve = out / "cka_curve.png"
        plot_cka_curve(result).savefig(curve, dpi=150)
        written.append(curve)
    else:
        err.print("one init only: no pretrained-vs-random curve", markup=False)
    for path in written:
        err.print(f"wrote {path}", markup=False)


def _scores_tables(scores: xr.Dataset) -> list[Table]:
    """One table per estimator: layers down, inits across."""
    info = scores.attrs.get("featstore_transferability", {})
    inits = [str(v) for v in scores["init"].values]
    tables = []
    for name in scores["estimator"].values:
        table = Table(title=f"{name} ({info.get('n_images_used', '?')} images, "
                            f"{len(info.get('classes', []))} classes)")
        table.add_column("layer")
        for init in inits:
            table.add_column(init, justify="right")
        for layer in scores["layer"].values:
            table.add_row(str(layer), *(
                _fmt(float(scores["score"].sel(layer=layer, init=init, estimator=name)))
                for init in inits))
        tables.append(table)
    return tables


def _correlation_table(correlation: xr.Dataset) -> Table:
    metric = correlation.attrs.get("metric", "accuracy")
    table = Table(title=f"Spearman rank correlation with probe {metric} across layers")
    for column in ("estimator", "init", "classifier", "rho", "p", "layers"):
        table.add_column(column, justify="left" if column in ("estimator", "init",
                                                              "classifier") else "right")
    for name in correlation["estimator"].values:
        for init in correlation["init"].values:
            for clf in correlation["classifier"].values:
                pick = {"estimator": name, "init": init, "classifier": clf}
                table.add_row(str(name), str(init), str(clf),
                              _fmt(float(correlation["spearman"].sel(pick))),
                              _fmt(float(correlation["p_value"].sel(pick)), 4),
                              str(int(correlation["n_layers"].sel(pick))))
    return table


def transferability_command(
    store: Annotated[str, typer.Argument(help="Feature store path or URL (with labels).")],
    out: Annotated[Path, typer.Option(
        "--out", help="CSV: layer, init, estimator, score; a figure is written beside it "
                      "(same name, .png).")] = Path("transferability.csv"),
    layers: Annotated[list[str] | None, typer.Option(
        "--layers", help="Layers (module paths), comma-separated; default all.")] = None,
    inits: Annotated[list[str] | None, typer.Option(
        "--inits", help="Inits, comma-separated; default all.")] = None,
    estimator: Annotated[list[str] | None, typer.Option(
        "--estimator", help="logme, hscore (repeatable); default both.")] = None,
    scheduler: Annotated[str | None, typer.Option(help=_SCHEDULER_HELP)] = None,
) -> None:
    """LogME and H-score per (layer, init), and their rank correlation with probe accuracy."""
    import featstore
    from featstore.errors import FeatstoreInputError
    from featstore.similarity_figures import plot_transferability
    from featstore.transfer import (
        ESTIMATORS,
        transferability,
        transferability_correlation,
        write_transferability_csv,
    )

    err = _err()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the notes are printed below
        scores = transferability(store, layers=_names(layers), inits=_names(inits),
                                 estimators=_names(estimator) or ESTIMATORS, scheduler=scheduler)
    for note in scores.attrs.get("featstore_transferability", {}).get("notes", []):
        err.print(f"warning: {note}", markup=False)
    console = Console()
    for table in _scores_tables(scores):
        console.print(table)
    results = correlation = None
    try:
        results = featstore.open_results(store)
    except FeatstoreInputError as exc:
        err.print(f"rank correlation with probe accuracy: unavailable ({exc})", markup=False)
    if results is not None:
        correlation = transferability_correlation(scores, results)
        console.print(_correlation_table(correlation))
        for note in correlation.attrs.get("notes", []):
            err.print(f"note: {note}", markup=False)
    csv_path = write_transferability_csv(scores, out)
    figure = csv_path.with_suffix(".png")
    plot_transferability(scores, results, correlation).savefig(figure, dpi=150)
    for path in (csv_path, figure):
        err.print(f"wrote {path}", markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("similarity")(similarity_command)
    app.command("transferability")(transferability_command)
