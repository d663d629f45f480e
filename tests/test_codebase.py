"""The code base stays lint- and type-clean: ruff and mypy, configured in pyproject.toml.

ruff checks every Python file of the repository (src, cli, tests, benchmarks, tools); mypy checks
the package and the command line with their settings, and the tests, benchmarks and tools with
the same settings. mypy keeps its cache in .mypy_cache (a rerun takes seconds); on a fresh clone
it runs cold, well under a minute on two cores.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ("src", "cli", "tests", "benchmarks", "tools")


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(path).exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return path


def test_ruff_clean() -> None:
    result = subprocess.run([_tool("ruff"), "check", "--no-cache", "--output-format", "concise",
                             *ROOTS], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean() -> None:
    targets = ["src/featstore", "cli", "tests", "benchmarks", "tools"]
    result = subprocess.run([_tool("mypy"), *targets], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
