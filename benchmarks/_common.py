"""Shared helpers of the benchmarks: machine description, timing, data subsets, RESULTS.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SHARED_TILES = ROOT.parent / "shared" / "data" / "lc25000_lung"


def machine() -> str:
    """One line describing the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, torch threads {torch.get_num_threads()}")


def command_line() -> str:
    """The command that produced the numbers, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(ROOT))
    except ValueError:
        script_text = str(script)
    return " ".join([".venv/bin/python", script_text, *map(shlex.quote, sys.argv[1:])])


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one call, seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def tile_subset(dest: Path, per_class: int, source: Path = SHARED_TILES) -> Path:
    """An ImageFolder of symlinks to the first ``per_class`` tiles of each class (sorted names)."""
    if not source.exists():
        raise SystemExit(f"benchmark data not found: {source} (the shared pathology tiles)")
    for cls in sorted(p for p in source.iterdir() if p.is_dir()):
        target = dest / cls.name
        target.mkdir(parents=True, exist_ok=True)
        for file in sorted(cls.iterdir())[:per_class]:
            link = target / file.name
            if not link.exists():
                link.symlink_to(file)
    return dest


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``## name`` of RESULTS.md with ``body``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"## {name}\n\n- command: `{command_line()}`\n- machine: {machine()}\n"
               f"- date: {stamp}\n\n{body.strip()}\n")
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmark results\n\nEvery number is a ratio against a baseline measured in the same run "
        "(medians of repeated runs). Regenerate a section with the command it names.\n\n")
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS.write_text(text.rstrip() + "\n")
