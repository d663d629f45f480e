"""featstore: how much off-the-shelf ImageNet knowledge transfers to pathology images, per layer.

Extract pooled activations of every layer of a pretrained and a random-weight CNN once into a
Zarr store (:func:`extract`), open it with xarray (:func:`open_store`), and probe it.
"""

from __future__ import annotations

from .demo import run_demo
from .errors import FeatstoreError, FeatstoreInputError, FeatstoreRuntimeError
from .extraction import extract
from .gain import knowledge_gain
from .inspect import summarize_store
from .report import write_report
from .store import open_store
from .sweep import open_results, probe

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
    "FeatstoreError",
    "FeatstoreInputError",
    "FeatstoreRuntimeError",
]
