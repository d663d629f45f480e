"""``featstore study``: data sets x models -> stores, probes, knowledge gain, one report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ._progress import RichProgress


def study_command(
    study: Annotated[Path, typer.Argument(
        help="Study file (TOML) with the tables study (name), dataset (one per data set: "
             "name, data, group or group_regex, folds), extract (models, inits, image_size, "
             "scheduler) and probe (classifiers, folds, seed).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Study folder: stores/, study.csv, study.json, report.md/.html, "
                      "figures/. Default: a folder named after the study beside the file.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Extract, probe and measure the knowledge gain of every data set x model; one report."""
    from featstore.study import run_study
    from featstore.study_config import read_study

    config = read_study(study)
    folder = out if out is not None else study.parent / config.name
    err = Console(stderr=True, highlight=False)

    def log(line: str) -> None:
        if not quiet:
            err.print(line, markup=False)

    with RichProgress("items", enabled=not quiet) as progress:
        files = run_study(config, folder, progress=progress, log=log)
    err.print(f"study {config.name}: {len(files.stores)} stores ({files.computed['extracted']} "
              f"extracted, {files.computed['probed']} probed in this run) in "
              f"{files.seconds:.1f} s", markup=False)
    Console(highlight=False).print(
        f"wrote {files.table}, {files.report_md}, {files.report_html}", markup=False,
        soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("study")(study_command)
