"""``featstore datasets list`` and ``featstore datasets fetch NAME``."""

from __future__ import annotations

from types import TracebackType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from featstore.datasets import (
    DEFAULT_TIMEOUT,
    ENV_CACHE,
    ENV_MIRROR,
    dataset_path,
    fetch_dataset,
    get_dataset,
    list_datasets,
)
from featstore.errors import FeatstoreInputError

datasets_app = typer.Typer(
    name="datasets",
    help="List and fetch public pathology image sets (verified, resumable downloads).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class ByteProgress:
    """A rich progress bar in bytes (size, rate, ETA) on stderr; a featstore Progress."""

    def __init__(self, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task: TaskID | None = None
        self._started = False

    def __enter__(self) -> ByteProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._started:
            self._progress.stop()

    def start(self, name: str, total: int | None, completed: int = 0) -> None:
        if not self._started:  # shown from the first step on: a cached set prints nothing
            self._progress.start()
            self._started = True
        self._task = self._progress.add_task(name, total=total, completed=completed)

    def advance(self, count: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, count)

    def finish(self, name: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, description=f"{name} done")


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} GB"  # pragma: no cover


@datasets_app.command("list")
def list_command(
    cache_dir: Annotated[str | None, typer.Option(
        help=f"Base cache folder (default ${ENV_CACHE} or ~/.cache/featstore/datasets).")] = None,
) -> None:
    """List the datasets featstore can fetch and whether they are cached."""
    table = Table(title="featstore datasets")
    table.add_column("name")
    table.add_column("description")
    table.add_column("size", justify="right")
    table.add_column("cached")
    for info in list_datasets():
        size = _human(info.approx_size)
        if any(f.size is None for f in info.files):
            size = f"~{size}"
        path = dataset_path(info, cache_dir)
        table.add_row(info.name, info.title, size, str(path) if path else "no")
    Console().print(table)


@datasets_app.command("fetch")
def fetch_command(
    name: Annotated[str, typer.Argument(help="Dataset name (`featstore datasets list`).")],
    cache_dir: Annotated[str | None, typer.Option(
        help=f"Base cache folder (default ${ENV_CACHE} or ~/.cache/featstore/datasets).")] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the server (connect and each read).")] = DEFAULT_TIMEOUT,
    mirror: Annotated[str | None, typer.Option(
        help=f"Mirror serving MIRROR/<file name> (default ${ENV_MIRROR}).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Download, verify and unpack a dataset; print the DATA path for `featstore extract`."""
    info = get_dataset(name)
    if not timeout > 0:
        raise FeatstoreInputError(f"--timeout must be a positive number of seconds, got {timeout}")
    with ByteProgress(enabled=not quiet) as progress:
        path = fetch_dataset(info, cache_dir=cache_dir, timeout=timeout, progress=progress,
                             base_url=mirror)
    print(path)


def register(app: typer.Typer) -> None:
    """Add the ``datasets`` command group to the app."""
    app.add_typer(datasets_app, name="datasets")
