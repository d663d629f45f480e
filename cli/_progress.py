"""Rich progress bars for long jobs (written to stderr)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _RateColumn(TextColumn):
    """Items per second of the task."""

    def __init__(self, unit: str) -> None:
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[no-untyped-def,override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        if not speed and task.completed and task.elapsed:
            # fewer than two progress samples (e.g. one chunk per task): the mean rate so far
            speed = task.completed / task.elapsed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s")


class RichProgress:
    """A progress bar with count, rate and ETA; implements :class:`featstore.progress.Progress`."""

    def __init__(self, unit: str = "images", enabled: bool = True) -> None:
        self.unit = unit
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(unit),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    def start(self, name: str, total: int | None, completed: int = 0) -> None:
        self._task = self._progress.add_task(name, total=total, completed=completed)

    def advance(self, count: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, count)

    def finish(self, name: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, description=f"{name} done")
