"""Where a store lives: a local directory (a path or ``file://`` URL) or any fsspec URL.

One answer for every module that touches a store's files directly (store, lock, verify, info):
local directories get atomic renames, fsync and ``flock``; other URLs go through fsspec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["is_local", "local_path", "url_to_fs"]


def is_local(url: str) -> bool:
    """Whether ``url`` names a local directory: a plain path or a ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> Path:
    """The directory of a local ``url`` (see :func:`is_local`)."""
    return Path(url[len("file://"):] if url.startswith("file://") else url)


def url_to_fs(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the store's root path in it (no trailing slash)."""
    from fsspec.core import url_to_fs as _url_to_fs

    fs, root = _url_to_fs(url)
    return fs, str(root).rstrip("/")
