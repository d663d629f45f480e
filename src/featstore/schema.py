"""Names and constants of the store schema (version 1), in one place.

A store is a Zarr v3 group. Every extracted layer is an array with dimension names
``("init", "image", unit_dim(layer))``; coordinates ``init``, ``image``, ``label``, ``path``,
``split`` (optional) and ``valid`` live beside them. Layer names are torch module paths
(``"blocks.3"``); :func:`layer_to_var` maps them to variable names (one place for that rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from .errors import FeatstoreInputError, UnknownLayerError

__all__ = [
    "LayerSpec",
    "split_names",
    "select_layers",
    "select_inits",
    "SCHEMA_VERSION",
    "ATTRS_KEY",
    "INIT",
    "IMAGE",
    "LABEL",
    "PATH",
    "SPLIT",
    "VALID",
    "INTERNAL_GROUP",
    "PROGRESS_ARRAY",
    "PROBES_GROUP",
    "NORM_STATE_GROUP",
    "DEFAULT_CHUNK_IMAGES",
    "layer_to_var",
    "unit_dim",
    "chunk_bounds",
    "n_chunks",
]

SCHEMA_VERSION: Final = 1
#: key of the root group attribute holding the store description
ATTRS_KEY: Final = "featstore"

INIT: Final = "init"
IMAGE: Final = "image"
LABEL: Final = "label"
PATH: Final = "path"
SPLIT: Final = "split"
VALID: Final = "valid"

#: subgroup for bookkeeping that xarray.open_zarr does not show (progress markers, locks)
INTERNAL_GROUP: Final = "_featstore"
#: boolean array (init, image-chunk): a chunk of every layer is written and durable
PROGRESS_ARRAY: Final = "done"
#: group holding probe results beside the features
PROBES_GROUP: Final = "probes"
#: subgroup of INTERNAL_GROUP: re-estimated normalization statistics of each +bn init
NORM_STATE_GROUP: Final = "norm_state"

#: images per chunk along the image dimension (a multiple of the batch size is enforced)
DEFAULT_CHUNK_IMAGES: Final = 256

def layer_to_var(layer: str) -> str:
    """Store variable name of a layer: the torch module path itself.

    Zarr v3 node names may hold ``.`` and ``-`` (RegNet's ``block1-0``), so module paths are
    stored unchanged; only names Zarr cannot hold are refused.

    Parameters
    ----------
    layer : str
        Dotted module path, e.g. ``"blocks.3"``.

    Returns
    -------
    str
        Variable name, e.g. ``"blocks.3"``.

    Raises
    ------
    ValueError
        For an empty name, one containing ``/``, one starting with ``__`` or made only of dots.
    """
    if not layer or "/" in layer or layer.startswith("__") or not layer.strip("."):
        raise ValueError(
            f"layer name {layer!r} cannot be stored: it must be a non-empty module path"
        )
    return layer


def unit_dim(layer: str) -> str:
    """Name of the unit (channel) dimension of a layer's variable, e.g. ``"unit_blocks.3"``."""
    return f"unit_{layer_to_var(layer)}"


def n_chunks(n_images: int, chunk_images: int) -> int:
    """Number of image chunks needed for ``n_images`` images."""
    return -(-n_images // chunk_images)


def chunk_bounds(chunk: int, n_images: int, chunk_images: int) -> tuple[int, int]:
    """Half-open image range ``[start, stop)`` covered by chunk number ``chunk``."""
    start = chunk * chunk_images
    if chunk < 0 or start >= n_images:
        raise IndexError(f"chunk {chunk} out of range for {n_images} images")
    return start, min(start + chunk_images, n_images)


@dataclass(frozen=True)
class LayerSpec:
    """One layer (module output) to extract and store.

    Parameters
    ----------
    name : str
        Torch module path, e.g. ``"blocks.3"``.
    units : int
        Number of units (channels) left after pooling the activation map over space.
    shape : tuple of int
        Activation of one image, without the batch dimension: ``(C, H, W)`` for conv maps,
        ``(n_tokens, C)`` for transformer token sequences, ``(H, W, C)`` for Swin stages,
        ``(C,)`` for vectors.
    channel_axis : int
        Axis of ``shape`` that holds the units; pooling reduces every other axis.
    prefix_tokens : int
        For a ``(n_tokens, C)`` sequence: how many tokens precede the patch tokens (class,
        distillation, register tokens); ``avg``/``max`` pooling leaves them out. 0 otherwise.
    class_token : bool
        Whether token 0 of the sequence is a class token (what ``--pool cls`` takes).
    """

    name: str
    units: int
    shape: tuple[int, ...]
    channel_axis: int = 0
    prefix_tokens: int = 0
    class_token: bool = False

    @property
    def var(self) -> str:
        """Store variable name."""
        return layer_to_var(self.name)


def split_names(values: Sequence[str] | str | None) -> list[str] | None:
    """Names from repeated and comma-separated options (``--layers a,b --layers c``); None for
    none given (all)."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    names = [p.strip() for v in values for p in str(v).split(",") if p.strip()]
    return names or None


def select_layers(stored: Sequence[str], modules: Mapping[str, str],
                  wanted: Sequence[str] | None) -> list[str]:
    """The stored layer variables a ``--layers`` selection names, in the store's order.

    Parameters
    ----------
    stored : sequence of str
        The store's layer variables, shallow to deep.
    modules : mapping of str to str
        Variable -> module path, where they differ (the store's ``layer_modules``).
    wanted : sequence of str or None
        Variable names or module paths; None for every stored layer.

    Raises
    ------
    UnknownLayerError
        For a name the store does not hold, listing the layers it does hold.
    """
    if wanted is None:
        return list(stored)
    by_name = {**{v: v for v in stored}, **{modules.get(v, v): v for v in stored}}
    for name in wanted:
        if name not in by_name:
            known = ", ".join(modules.get(v, v) for v in stored)
            raise UnknownLayerError(
                f"unknown --layers value {name!r}; layers in this store: {known} "
                "(`featstore info STORE` lists them)"
            )
    picked = {by_name[n] for n in wanted}
    return [v for v in stored if v in picked]


def select_inits(stored: Sequence[str], wanted: Sequence[str] | None,
                 error: type[FeatstoreInputError] = FeatstoreInputError) -> list[str]:
    """The stored inits an ``--inits`` selection names, in the store's order.

    Raises
    ------
    FeatstoreInputError
        (``error``) for a name the store does not hold, listing the inits it does hold.
    """
    if wanted is None:
        return list(stored)
    for name in wanted:
        if name not in stored:
            raise error(
                f"unknown --inits value {name!r}; inits in this store: {', '.join(stored)}"
            )
    picked = set(wanted)
    return [n for n in stored if n in picked]
