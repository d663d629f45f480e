"""``featstore report``, ``featstore info`` and ``featstore demo``."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from featstore.config import DEFAULT_MARGIN, parse_store_url

from ._progress import RichProgress


class Metric(StrEnum):
    accuracy = "accuracy"
    balanced_accuracy = "balanced_accuracy"
    macro_f1 = "macro_f1"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def report_command(
    store: Annotated[str, typer.Argument(help="Feature store with probe results.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for figures and report.")],
    classifier: Annotated[str | None, typer.Option(
        help="Classifier to show, e.g. 'logreg:C=1'; default the run's first.")] = None,
    metric: Annotated[Metric, typer.Option(help="Metric to show.")] = Metric.accuracy,
    run: Annotated[str | None, typer.Option(help="Probe run id; default the latest.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples of the gain's CI.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    margin: Annotated[float, typer.Option(
        help="Non-inferiority margin of the sweet spot (gain within this of the best layer's)."
    )] = DEFAULT_MARGIN,
    parameters: Annotated[bool, typer.Option(
        help="Also plot gain against parameters up to each layer.")] = True,
    similarity: Annotated[bool, typer.Option(
        "--similarity", help="Also compute linear CKA between every pair of (layer, init) "
                             "(figures, cka.csv).")] = False,
    transferability: Annotated[bool, typer.Option(
        "--transferability", help="Also compute LogME and H-score per layer and init, and "
                                  "their rank correlation with the probe accuracy.")] = False,
    scheduler: Annotated[str | None, typer.Option(
        help="Where CKA and the estimators run: threads (default), local:N or "
             "tcp://HOST:PORT.")] = None,
) -> None:
    """Figures (score and gain per layer), CSV tables, report.md and report.html."""
    from featstore.report import write_report

    files = write_report(parse_store_url(store), out, classifier=classifier, metric=metric.value,
                         run=run, n_boot=n_boot, seed=seed, margin=margin, parameters=parameters,
                         similarity=similarity, transferability=transferability,
                         scheduler=scheduler)
    console = _err()
    for path in [*files.figures.values(), *files.tables.values(), files.markdown, files.html]:
        console.print(f"wrote {path}", markup=False)


def _bytes(count: int | None) -> str:
    if count is None:
        return "n/a"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def render_summary(summary: dict[str, Any], console: Console) -> None:
    """Print a :func:`featstore.inspect.summarize_store` summary as rich tables."""
    data = summary.get("data", {})
    images = summary["images"]
    size = summary["size"]
    transform = summary.get("transform", {})
    console.print(f"[bold]store[/bold]   {summary['url']}")
    console.print(f"[bold]model[/bold]   {summary['model']}  (pool {summary['pool']}, "
                  f"{summary['dtype']}, input {transform.get('size', '?')} px)")
    console.print(f"[bold]data[/bold]    {data.get('kind', '?')} at {data.get('root', '?')}")
    console.print(f"[bold]created[/bold] {summary.get('created') or 'unknown'}")
    ratio = size.get("compression_ratio")
    console.print(
        f"[bold]size[/bold]    {_bytes(size['stored_bytes'])} on disk; features "
        f"{_bytes(size['feature_bytes'])} ({_bytes(size['raw_feature_bytes'])} raw"
        + (f", compression {ratio:.2f}x)" if ratio else ")")
    )

    inits = Table(title="inits", title_justify="left")
    for column in ("init", "weights / seed", "sha256", "chunks", "images"):
        inits.add_column(column, overflow="fold", no_wrap=column != "weights / seed")
    for init in summary["inits"]:
        detail = str(init["weights"]) if init["kind"] == "pretrained" else f"seed {init['seed']}"
        sha = (init["sha256"] or "")[:12] or "-"
        state = "" if init["complete"] else " partial"
        inits.add_row(str(init["name"]), detail, sha,
                      f"{init['chunks_done']}/{init['chunks_total']}{state}",
                      f"{init['images_done']}/{images['n_images']}")
    console.print(inits)

    classes = Table(title=f"images: {images['n_images']} ({images['n_valid']} readable)",
                    title_justify="left")
    classes.add_column("label", justify="right")
    classes.add_column("class")
    classes.add_column("images", justify="right")
    splits = images.get("splits") or {}
    for split in splits:
        classes.add_column(split, justify="right")
    for k, (name, count) in enumerate(images["classes"].items()):
        classes.add_row(str(k), name, str(count), *(str(splits[s].get(name, 0)) for s in splits))
    console.print(classes)

    layers = Table(title=f"layers: {len(summary['layers'])}", title_justify="left")
    for column, justify in (("#", "right"), ("layer", "left"), ("units", "right"),
                            ("activation map", "left")):
        layers.add_column(column, justify=justify)  # type: ignore[arg-type]
    for i, layer in enumerate(summary["layers"]):
        layers.add_row(str(i), layer["module"], str(layer["units"]),
                       "x".join(map(str, layer["shape"])) or "?")
    console.print(layers)

    render_health(summary, console)

    if not summary["probes"]:
        console.print("probe runs: none (run `featstore probe STORE`)")
        return
    runs = Table(title=f"probe runs: {len(summary['probes'])}", title_justify="left")
    for column in ("run", "created", "classifiers", "folds", "seed", "layers x inits"):
        runs.add_column(column, overflow="fold")
    for run in summary["probes"]:
        folds = "split" if run.get("split") else str(run["folds"])
        runs.add_row(str(run["run"]) + ("" if run["complete"] else " (incomplete)"),
                     str(run["created"] or "?")[:19], ", ".join(run["classifiers"] or []) or "?",
                     folds, str(run["seed"]), f"{run['n_layers']} x {run['n_inits']}")
    console.print(runs)


def render_health(summary: dict[str, Any], console: Console) -> None:
    """The activation health table (layers x inits) and the degenerate-features warning."""
    from featstore.health import degenerate_warning

    health = summary.get("health") or {}
    if not health:
        console.print("activation health: not recorded (rerun the same `featstore extract` "
                      "command to add it)")
        return
    inits = list(health)
    table = Table(title="activation health per init: pooled RMS, constant units, effective "
                        "dimensions", title_justify="left")
    table.add_column("layer", no_wrap=True)
    for init in inits:
        table.add_column(init, justify="right", no_wrap=True)
    layers = list(next(iter(health.values())))
    for layer in layers:
        cells = []
        for init in inits:
            stats = health[init].get(layer, {})
            cells.append(f"{stats.get('rms', float('nan')):.2g} "
                         f"{stats.get('constant_fraction', float('nan')):.0%} "
                         f"{stats.get('participation_ratio', float('nan')):.1f}")
        table.add_row(layer, *cells)
    console.print(table)
    warning = degenerate_warning([tuple(item) for item in summary.get("degenerate") or []])
    if warning:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"warning: {warning}",
                                                                    markup=False)


def info_command(
    store: Annotated[str, typer.Argument(help="Feature store path or fsspec URL.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """What a store holds: model, inits, layers, images, progress, size, probe runs."""
    from featstore.inspect import summarize_store

    summary = summarize_store(parse_store_url(store))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    render_summary(summary, Console(highlight=False))


def demo_command(
    data: Annotated[str | None, typer.Argument(
        help="Images to use; default a cached public set, else the built-in IHC tiles.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("featstore-demo"),
    fetch: Annotated[bool, typer.Option(
        help="Try downloading a public set (3 s timeout) when none is cached.")] = True,
    per_class: Annotated[int, typer.Option(
        help="Images per class taken from a public set.")] = 30,
    device: Annotated[Device, typer.Option(help="auto takes CUDA when present.")] = Device.auto,
    image_size: Annotated[int | None, typer.Option(
        help="Resize side; default the model's standard size.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Extract -> probe -> report end to end on real tissue, in a few minutes on a CPU."""
    console = _err()
    with RichProgress("images", enabled=not quiet) as progress:
        from featstore.demo import run_demo

        result = run_demo(data, out, per_class=per_class, fetch=fetch, device=device.value,
                          image_size=image_size,
                          log=lambda line: console.print(line, markup=False), progress=progress)
    t = result.timings
    console.print(
        f"demo done in {sum(t.values()):.0f} s (extract {t.get('extract', 0):.0f} s, probe "
        f"{t.get('probe', 0):.0f} s, report {t.get('report', 0):.0f} s) on {result.data.name}"
    )
    console.print(f"report: {result.report.markdown} and {result.report.html}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("report")(report_command)
    app.command("info")(info_command)
    app.command("demo")(demo_command)
