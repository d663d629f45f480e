"""Frozen, typed job configurations and the ``parse_*`` functions that normalize user input.

Each ``parse_<thing>`` returns the normalized value or raises a :class:`FeatstoreInputError`
naming the parameter, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import FeatstoreInputError

__all__ = [
    "DEVICES",
    "DTYPES",
    "ExtractConfig",
    "ProbeConfig",
    "DEFAULT_TOL",
    "DEFAULT_MAX_ITER",
    "DEFAULT_AUTO_GRID",
    "DEFAULT_INNER_FOLDS",
    "DEFAULT_MARGIN",
    "parse_auto_grid",
    "parse_positive_float",
    "parse_choice",
    "parse_positive_int",
    "parse_device",
    "parse_store_url",
]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DTYPES: tuple[str, ...] = ("float32", "float16")


def parse_choice(parameter: str, value: str, allowed: Sequence[str]) -> str:
    """Return ``value`` when it is one of ``allowed``, else raise naming the choices."""
    if value not in allowed:
        raise FeatstoreInputError(
            f"invalid {parameter} {value!r}; allowed: {', '.join(allowed)}"
        )
    return value


def parse_positive_int(parameter: str, value: int, minimum: int = 1) -> int:
    """Return ``value`` when it is an int >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FeatstoreInputError(f"invalid {parameter} {value!r}; must be an integer >= {minimum}")
    return value


def parse_positive_float(parameter: str, value: float) -> float:
    """Return ``value`` when it is a finite number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, float | int) or not math.isfinite(value) \
            or value <= 0:
        raise FeatstoreInputError(f"invalid {parameter} {value!r}; must be a finite number > 0")
    return value


def parse_device(value: str, cuda_available: bool) -> str:
    """Resolve ``auto|cpu|cuda|cuda:N`` to a concrete torch device string.

    Parameters
    ----------
    value : str
        The requested device.
    cuda_available : bool
        Whether CUDA is usable on this machine.
    """
    if value == "auto":
        return "cuda" if cuda_available else "cpu"
    if value == "cpu":
        return "cpu"
    if value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit()):
        if not cuda_available:
            raise FeatstoreInputError(
                f"invalid --device {value!r}: no CUDA device is available here; use auto or cpu"
            )
        return value
    raise FeatstoreInputError(f"invalid --device {value!r}; allowed: auto, cpu, cuda, cuda:N")


def parse_store_url(value: str) -> str:
    """Normalize a store location: a local path or an fsspec URL (``memory://``, ``s3://``...)."""
    text = str(value).strip()
    if not text:
        raise FeatstoreInputError("invalid --store '': give a directory path or an fsspec URL")
    return text.rstrip("/") if "://" in text else text


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that defines one extraction job.

    Only the fields that shape the stored features (model, layers, pooling, image size, dtype,
    chunking, the data) decide whether an existing store may be resumed or extended (the
    store compares its description, :data:`featstore.store.IDENTITY_KEYS`); run-time fields
    (device, batch size, workers) may change between runs.

    Attributes
    ----------
    data : str
        ImageFolder directory or CSV manifest.
    store : str
        Store location (path or fsspec URL).
    model : str
        Model name (``featstore layers --list``).
    inits : tuple of str
        Init specs, e.g. ``("pretrained", "random:0")``.
    layers : tuple of str
        ``("auto",)`` or module paths.
    pool : str
        ``"avg"``, ``"max"`` or ``"cls"`` (the class token of transformer layers).
    image_size : int or None
        Side length after resizing; None takes the model's standard size.
    device, batch_size, workers : run-time settings.
    dtype : str
        Storage dtype, ``"float32"`` or ``"float16"``.
    chunk_images : int
        Images per store chunk along ``image``.
    overwrite, skip_unreadable : bool
        Replace a mismatched store; record unreadable images as invalid instead of stopping.
    autocast : bool
        bfloat16 autocast on CUDA.
    bn_images : int
        At most this many images (a seeded sample, from the training split when the data has
        one) re-estimate the normalization statistics of ``+bn`` inits.
    scheduler : str or None
        None: extract in this process; ``"local:N"`` or ``"tcp://HOST:PORT"``: (init, chunk)
        tasks on dask workers (a run-time setting: the store is the same).
    compile : bool
        Extract with a ``torch.compile``'d truncated network (a run-time setting).
    """

    data: str
    store: str
    model: str = "efficientnet_lite0"
    inits: tuple[str, ...] = ("pretrained", "random:0")
    layers: tuple[str, ...] = ("auto",)
    pool: str = "avg"
    image_size: int | None = None
    device: str = "auto"
    batch_size: int = 32
    workers: int = 0
    dtype: str = "float32"
    chunk_images: int = 256
    overwrite: bool = False
    skip_unreadable: bool = False
    autocast: bool = False
    bn_images: int = 1024
    scheduler: str | None = None
    compile: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["inits"] = list(self.inits)
        out["layers"] = list(self.layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise FeatstoreInputError(f"unknown ExtractConfig field(s): {', '.join(unknown)}")
        values = dict(data)
        for key in ("inits", "layers"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


#: default gradient tolerance of the iterative probes (logreg; linear-svm uses a tenth of it).
#: Tighter than scikit-learn's lbfgs default (1e-4): with weak regularization (large C) on wide
#: layers the optimum is flat, and at 1e-4 where a solver stops -- so its test accuracy --
#: depends on the path it took (measured: up to 1.7 points between two solvers on the
#: efficientnet_lite0 head, C=10). At 1e-6 results no longer depend on the solver.
DEFAULT_TOL = 1e-6
#: default iteration limit of the iterative probes
DEFAULT_MAX_ITER = 1000
#: default grid of ``logreg:C=auto``, ``linear-svm:C=auto`` and ``ridge:alpha=auto``
DEFAULT_AUTO_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
#: default number of inner folds of the nested cross-validation of ``=auto`` classifiers
DEFAULT_INNER_FOLDS = 3
#: default non-inferiority margin of the sweet spot, in metric units (``--margin``)
DEFAULT_MARGIN = 0.01


def parse_auto_grid(values: Sequence[float] | str) -> tuple[float, ...]:
    """The candidate values of ``=auto`` classifiers: finite numbers > 0, duplicates dropped,
    in the order given (the first wins ties); a comma-separated string is accepted."""
    items: list[Any] = ([v for v in values.split(",") if v.strip()] if isinstance(values, str)
                        else list(values))
    out: list[float] = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            value = math.nan
        if isinstance(item, bool) or not math.isfinite(value) or value <= 0:
            raise FeatstoreInputError(
                f"invalid --auto-grid value {item!r}; give numbers > 0, e.g. "
                f"{','.join(f'{v:g}' for v in DEFAULT_AUTO_GRID)}"
            )
        if value not in out:
            out.append(value)
    if not out:
        raise FeatstoreInputError("invalid --auto-grid: no value; give numbers > 0, e.g. "
                                  f"{','.join(f'{v:g}' for v in DEFAULT_AUTO_GRID)}")
    return tuple(out)


@dataclass(frozen=True)
class ProbeConfig:
    """Everything that defines one probe sweep (``featstore probe``).

    The *identity* fields (:meth:`identity`) decide whether stored results can be reused; the
    run-time fields (``store``, ``scheduler``, ``force``) do not change the numbers.

    Attributes
    ----------
    store : str
        Store location (path or fsspec URL).
    classifiers : tuple of str
        Classifier specs, e.g. ``("logreg:C=0.01,0.1", "knn:k=5")`` (see
        :func:`featstore.probing.parse_classifier`); stored resolved, one canonical name per row.
    folds : int
        Number of stratified folds (1 with ``split``).
    seed : int
        ``random_state`` of :class:`sklearn.model_selection.StratifiedKFold`.
    split : bool
        Use the store's ``split`` coordinate (train + val -> test) instead of K folds.
    layers, inits : tuple of str, or None
        Layer variable names / init names to probe; None takes all (stored resolved).
    tol, max_iter : float, int
        Stopping rule of the iterative solvers (logreg, linear-svm).
    auto_grid : tuple of float
        Candidate values of ``=auto`` classifiers (``logreg:C=auto``...).
    inner_folds : int
        Stratified inner folds of their nested cross-validation (shuffled with ``seed``).
    scheduler : str or None
        None (local threads), ``"threads:N"``, ``"sync"``, ``"local:N"`` or ``"tcp://HOST:PORT"``.
    force : bool
        Recompute even when results of the same identity are stored.
    group_by : str or None
        An image coordinate of the store (a manifest column such as ``patient``): folds are
        ``StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)`` over its
        values, so no group is tested in two folds.
    group_regex : str or None
        Instead of ``group_by``: the first capture group of this regular expression searched
        in each image's path (:func:`featstore.leaks.groups_from_paths`).
    leak_check : bool
        Look for near-duplicate images across folds when the images can be read (a run-time
        setting: it changes no score, only the warning and the recorded count).
    """

    store: str
    classifiers: tuple[str, ...] = ("logreg",)
    folds: int = 5
    seed: int = 0
    split: bool = False
    layers: tuple[str, ...] | None = None
    inits: tuple[str, ...] | None = None
    tol: float = DEFAULT_TOL
    max_iter: int = DEFAULT_MAX_ITER
    auto_grid: tuple[float, ...] = DEFAULT_AUTO_GRID
    inner_folds: int = DEFAULT_INNER_FOLDS
    scheduler: str | None = None
    force: bool = False
    group_by: str | None = None
    group_regex: str | None = None
    leak_check: bool = True

    #: fields that change the results
    IDENTITY_FIELDS = ("classifiers", "folds", "seed", "split", "layers", "inits", "tol",
                       "max_iter", "auto_grid", "inner_folds")
    #: fields that change the results when set; left out of the identity when None, so that
    #: ungrouped runs keep the identity (and run id) they had before grouping existed
    GROUP_FIELDS = ("group_by", "group_regex")

    def identity(self) -> dict[str, Any]:
        """The fields that change the results, JSON-able."""
        data = self.to_dict()
        out = {key: data[key] for key in self.IDENTITY_FIELDS}
        out.update({key: data[key] for key in self.GROUP_FIELDS if data[key] is not None})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key in ("classifiers", "layers", "inits", "auto_grid"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise FeatstoreInputError(f"unknown ProbeConfig field(s): {', '.join(unknown)}")
        values = dict(data)
        for key in ("classifiers", "layers", "inits", "auto_grid"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

