"""The command line's progress bar: the rate column shows a number once anything is done."""

from __future__ import annotations

from featstore.cli._progress import _RateColumn
from rich.progress import Progress


def test_rate_shown_after_a_single_update() -> None:
    """One advance to completion leaves rich without a speed estimate; the mean rate is shown."""
    now = [0.0]
    progress = Progress(get_time=lambda: now[0], disable=True)
    task_id = progress.add_task("pretrained", total=180)
    column = _RateColumn("images")
    task = progress.tasks[0]
    assert column.render(task).plain == "- images/s"
    now[0] = 4.0
    progress.advance(task_id, 180)
    assert column.render(task).plain == "45.0 images/s"
