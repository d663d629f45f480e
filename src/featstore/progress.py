"""The one progress protocol of every long job (extraction, probe sweep, download).

Library functions report progress to an object with these three methods and never print; the
command line passes a rich progress bar (``featstore.cli._progress.RichProgress``), tests pass
recorders, and None means silence.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress"]


class Progress(Protocol):
    """Receives the progress of a job made of countable steps (images, blocks, bytes)."""

    def start(self, name: str, total: int | None, completed: int = 0) -> None:
        """A task ``name`` begins with ``total`` steps (None: unknown), ``completed`` done."""

    def advance(self, count: int) -> None:
        """``count`` more steps are done."""

    def finish(self, name: str) -> None:
        """Task ``name`` is complete."""
