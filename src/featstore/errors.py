"""Exception hierarchy.

Every error a user can cause derives from :class:`FeatstoreInputError` (a ``ValueError``); the
command line turns it into one line on stderr and exit status 2. Failures at run time that are not
the user's input derive from :class:`FeatstoreRuntimeError` and exit with status 1.
"""

from __future__ import annotations

__all__ = [
    "FeatstoreError",
    "FeatstoreInputError",
    "FeatstoreRuntimeError",
    "UnknownModelError",
    "UnknownLayerError",
    "InitSpecError",
    "WeightsUnavailableError",
    "DataSourceError",
    "UnreadableImageError",
    "StoreError",
    "NotAStoreError",
    "StoreMismatchError",
    "StoreIncompleteError",
    "StoreLockedError",
    "ProbeInputError",
    "SchedulerError",
    "DatasetFetchError",
    "ChecksumMismatchError",
]


class FeatstoreError(Exception):
    """Base class of every featstore error."""


class FeatstoreInputError(FeatstoreError, ValueError):
    """Bad input or usage: a parameter, file or store the user named is not acceptable."""


class FeatstoreRuntimeError(FeatstoreError, RuntimeError):
    """A failure at run time that is not caused by the user's input."""


class UnknownModelError(FeatstoreInputError):
    """The model name is not in the registry."""


class UnknownLayerError(FeatstoreInputError):
    """A layer name does not exist in the model."""


class InitSpecError(FeatstoreInputError):
    """A ``--init`` value is malformed or names weights that do not exist."""


class WeightsUnavailableError(FeatstoreInputError):
    """Pretrained weights are neither cached nor downloadable (e.g. offline)."""


class DataSourceError(FeatstoreInputError):
    """The image data (folder, manifest, archive) is missing, empty or malformed."""


class UnreadableImageError(DataSourceError):
    """One image cannot be decoded."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"cannot read image '{path}': {reason}; fix or remove it, or pass --skip-unreadable "
            "to record it as invalid and go on"
        )


class StoreError(FeatstoreInputError):
    """Base class of problems with a feature store."""


class NotAStoreError(StoreError):
    """The path is not a featstore store."""


class StoreMismatchError(StoreError):
    """The store was written with a different configuration."""


class StoreIncompleteError(StoreError):
    """The store (or the requested part of it) has not finished extracting."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


class ProbeInputError(FeatstoreInputError):
    """A probe option or the store's labels do not allow the requested probe."""


class SchedulerError(FeatstoreInputError):
    """A ``--scheduler`` value is malformed or its dask scheduler cannot be reached."""


class DatasetFetchError(FeatstoreRuntimeError):
    """A dataset download failed."""


class ChecksumMismatchError(FeatstoreInputError):
    """A downloaded or cached file does not match its published checksum."""
