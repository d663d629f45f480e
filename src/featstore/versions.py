"""Versions of the libraries that shape featstore's numbers, recorded with every store and run."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from typing import Final

__all__ = ["EXTRACT_LIBRARIES", "PROBE_LIBRARIES", "library_versions"]

#: distributions whose versions a store records (extraction)
EXTRACT_LIBRARIES: Final = ("featstore", "torch", "torchvision", "zarr", "numpy", "xarray", "dask",
                            "scikit-learn")
#: distributions whose versions a probe run records
PROBE_LIBRARIES: Final = ("featstore", "numpy", "scipy", "scikit-learn", "dask", "distributed",
                          "xarray", "zarr")


def library_versions(names: Sequence[str] = EXTRACT_LIBRARIES) -> dict[str, str]:
    """Installed version of each distribution in ``names`` (``"unknown"`` when not installed).

    Parameters
    ----------
    names : sequence of str
        Distribution names, e.g. :data:`EXTRACT_LIBRARIES`.

    Returns
    -------
    dict of str to str
        Name -> version, in the order of ``names``.
    """
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions
