"""featstore: how much off-the-shelf ImageNet knowledge transfers to pathology images, per layer.

Extract pooled activations of every layer of a pretrained and a random-weight CNN once into a
Zarr store (:func:`extract`), open it with xarray (:func:`open_store`), and probe it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import FeatstoreError, FeatstoreInputError, FeatstoreRuntimeError

if TYPE_CHECKING:
    from .demo import run_demo
    from .extraction import extract
    from .gain import knowledge_gain
    from .inspect import summarize_store
    from .report import write_report
    from .results import open_results
    from .similarity import cka
    from .store import open_store
    from .study import open_study
    from .sweep import probe
    from .transfer import transferability

#: public name -> module defining it; imported on first use so that ``import featstore`` (and
#: the command line's start-up) does not pay for torch, zarr and dask until they are needed
_LAZY = {
    "extract": "extraction",
    "open_store": "store",
    "probe": "sweep",
    "open_results": "results",
    "knowledge_gain": "gain",
    "write_report": "report",
    "summarize_store": "inspect",
    "run_demo": "demo",
    "cka": "similarity",
    "transferability": "transfer",
    "open_study": "study",
}

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "extract",
    "open_store",
    "probe",
    "knowledge_gain",
    "open_results",
    "write_report",
    "summarize_store",
    "run_demo",
    "cka",
    "transferability",
    "open_study",
    "FeatstoreError",
    "FeatstoreInputError",
    "FeatstoreRuntimeError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
