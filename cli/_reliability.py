"""``featstore verify``: read every chunk of a store and report what is damaged or missing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from featstore.errors import FeatstoreRuntimeError

if TYPE_CHECKING:
    from featstore.verify import VerifyReport


def report_table(report: VerifyReport, rows: list[dict[str, str]], title: str) -> Table:
    """A rich table of problem runs (see :meth:`VerifyReport.ranges`)."""
    table = Table(title=title)
    for column in ("problem", "variable", "init", "chunks", "images", "detail"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["kind"], row["variable"], row["init"], row["chunks"], row["images"],
                      row["detail"])
    return table


def print_repair(report: VerifyReport) -> None:
    """Tell the user which chunks ``extract --repair`` recomputes (on stderr)."""
    console = Console(stderr=True)
    damaged = [row for row in report.ranges() if row["kind"] != "pending"]
    if not damaged:
        console.print(f"repair: no corrupt or missing chunks in {report.url}", highlight=False)
        return
    n = len(report.damaged)
    console.print(report_table(report, damaged,
                               f"repair: recomputing {n} damaged chunk{'s' * (n != 1)}"))


def verify_command(
    store: Annotated[str, typer.Argument(help="Store directory or fsspec URL.")],
) -> None:
    """Read every chunk of a store; report corrupt, missing or unfinished chunks (exit 1)."""
    from featstore.verify import verify_store

    report = verify_store(store)
    console = Console()
    if report.leftovers:
        console.print(f"{len(report.leftovers)} temporary file(s) of interrupted writes "
                      "(harmless; extract --repair removes them)", highlight=False)
    if report.ok:
        console.print(report.summary(), highlight=False)
        return
    console.print(report_table(report, report.ranges(), f"problems in {report.url}"))
    raise FeatstoreRuntimeError(report.summary())


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("verify")(verify_command)
