"""The only module that reads and writes Zarr: create, extend, write chunks, record progress, open.

Layout of a store (schema version 1)::

    STORE/                      Zarr v3 group, attrs["featstore"] = description (see DESIGN.md)
      <layer var>               (init, image, unit_<var>) float32|float16, chunks (1, C, units)
      init                      (init,)  str     e.g. "pretrained", "random:0"
      image                     (image,) int64   0..n-1
      label, path, split, valid (image,) coordinates
      _featstore/done           (init, image chunk) bool, one Zarr chunk per marker
      _featstore/lock           JSON holder of the write lock (see featstore.lock), while held
      probes/...                probe results (schema: featstore.results)

Crash safety: a chunk's marker in ``_featstore/done`` is written only after every layer's data
for that chunk has been written (and fsync'ed, with its folder, for local directories); a marker
that cannot be read counts as not done. Paths and ``file://`` URLs are opened with zarr's
LocalStore, which writes every file through a temporary name and a rename, so a killed writer
leaves no torn file. Structure changes (create, replace, add inits) finish by writing the root
attributes, so an interrupted change is redone on the next run: creation writes the root with a
``featstore_creating`` marker first; replacing a store first swaps its description for that
marker, then deletes the old content, root last. Consolidated metadata is rewritten after each
structure change so that ``xarray.open_zarr(STORE)`` opens the store without warnings.
Feature chunks, coordinates and markers carry CRC32C checksums (``featstore verify``).
:func:`failpoint` marks the points where the crash tests kill a writer.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
import zarr.storage
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from . import schema as S
from .errors import DataSourceError, NotAStoreError
from .location import is_local, local_path, url_to_fs
from .lock import LOCK_KEY, LockInfo, lock_holder
from .schema import LayerSpec

__all__ = [
    "IDENTITY_KEYS",
    "PARTIAL",
    "LayerSpec",
    "StoreLayout",
    "FeatureStore",
    "open_store",
    "store_exists",
    "default_compressors",
    "zarr_store",
    "list_keys",
    "delete_keys",
    "creating_identity",
    "diff_identity",
    "failpoint",
]

#: keys of the store description that must match for a store to be resumed or extended
IDENTITY_KEYS: tuple[str, ...] = (
    "schema_version",
    "model",
    "layers",
    "units",
    "transform",
    "pool",
    "dtype",
    "chunk_images",
    "classes",
    "data_fingerprint",
    "n_images",
)
_CREATING_KEY = "featstore_creating"
#: names of the temporary files zarr's LocalStore writes before renaming them into place
PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")
_FAILPOINT_ENV = "FEATSTORE_FAILPOINTS"
_failpoint_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Fault-injection hook for crash tests; does nothing unless ``FEATSTORE_FAILPOINTS`` is set.

    ``FEATSTORE_FAILPOINTS="write_chunk.layer=kill@3,create.root=kill"`` makes this process
    SIGKILL itself at the 3rd pass through ``write_chunk.layer`` and at the first pass through
    ``create.root``; ``point=sleep:0.5`` sleeps there instead; ``point=wait:PATH`` blocks there
    until the file PATH exists (at most 10 minutes), so a test can hold a writer at a known
    point for as long as it needs. The points are listed in RELIABILITY.md.
    """
    spec = os.environ.get(_FAILPOINT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        point, _, action = item.strip().partition("=")
        if point != name:
            continue
        hits = _failpoint_hits[name] = _failpoint_hits.get(name, 0) + 1
        action = action or "kill"
        if action.startswith("sleep:"):
            time.sleep(float(action[len("sleep:"):]))
        elif action.startswith("wait:"):
            release, deadline = action[len("wait:"):], time.monotonic() + 600
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.05)
        elif action == "kill" or (action.startswith("kill@") and hits == int(action[5:])):
            os.kill(os.getpid(), signal.SIGKILL)


def default_compressors() -> tuple[Any, ...]:
    """Codecs for feature chunks: Blosc-zstd with byte shuffle, then a CRC32C checksum.

    The checksum makes any flipped byte in a chunk fail loudly on read (``featstore verify``).
    """
    return (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec())


def _checked_compressors() -> tuple[Any, ...]:
    """Codecs for coordinates and progress markers: zstd, then a CRC32C checksum."""
    return (ZstdCodec(level=3), Crc32cCodec())


@dataclass(frozen=True)
class StoreLayout:
    """Everything needed to create a store: shapes, coordinates and the identity of its rows.

    Attributes
    ----------
    model : str
        Model name.
    layers : tuple of LayerSpec
        Shallow to deep.
    transform : dict
        ``{"size", "interpolation", "mean", "std"}``.
    pool, dtype : str
        Pooling and storage dtype.
    chunk_images : int
        Images per chunk along ``image``.
    classes : tuple of str
        Class names (index = label).
    paths : tuple of str
        Image paths relative to the data root, in store order.
    labels : tuple of int
        Class index per image.
    splits : tuple of str, or None
        The data's own split per image, when it has one.
    data : dict
        Summary of the data source (kind, root, fingerprint...).
    coords : tuple of (str, tuple of str)
        Extra image coordinates (a manifest's ``patient``, ``slide``...): name and one text
        value per image, in store order. They describe the images, not the features, so they
        are no part of the store's identity: a resumed extraction rewrites them when the data
        changed them (:meth:`FeatureStore.sync_image_coords`).
    """

    model: str
    layers: tuple[LayerSpec, ...]
    transform: Mapping[str, Any]
    pool: str
    dtype: str
    chunk_images: int
    classes: tuple[str, ...]
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    splits: tuple[str, ...] | None
    data: Mapping[str, Any]
    coords: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        taken = {S.IMAGE, S.INIT, S.LABEL, S.PATH, S.SPLIT, S.VALID, S.INTERNAL_GROUP,
                 S.PROBES_GROUP} | {layer.var for layer in self.layers}
        for name, values in self.coords:
            if name in taken:
                raise DataSourceError(
                    f"image coordinate '{name}' clashes with a name the store already uses "
                    f"({', '.join(sorted(taken))}); rename that manifest column"
                )
            if len(values) != len(self.paths):
                raise ValueError(f"image coordinate '{name}' has {len(values)} values for "
                                 f"{len(self.paths)} images")

    @property
    def coord_names(self) -> list[str]:
        """Names of the extra image coordinates, in order."""
        return [name for name, _ in self.coords]

    @property
    def n_images(self) -> int:
        return len(self.paths)

    @property
    def n_chunks(self) -> int:
        return S.n_chunks(self.n_images, self.chunk_images)

    def description(self) -> dict[str, Any]:
        """The identity part of ``attrs["featstore"]``."""
        return {
            "schema_version": S.SCHEMA_VERSION,
            "model": self.model,
            "layers": [layer.var for layer in self.layers],
            "layer_modules": {layer.var: layer.name for layer in self.layers},
            "units": {layer.var: layer.units for layer in self.layers},
            "transform": _jsonable(dict(self.transform)),
            "pool": self.pool,
            "dtype": self.dtype,
            "chunk_images": self.chunk_images,
            "classes": list(self.classes),
            "data_fingerprint": self.data.get("fingerprint"),
            "n_images": self.n_images,
            "data": _jsonable({**self.data, "columns": self.coord_names} if self.coords
                              else dict(self.data)),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _identity(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _jsonable(meta.get(key)) for key in IDENTITY_KEYS}


def zarr_store(url: str, read_only: bool = False) -> Any:
    """What zarr opens: a LocalStore for paths and ``file://`` URLs (atomic writes), or the URL."""
    if is_local(url):
        return zarr.storage.LocalStore(local_path(url), read_only=read_only)
    return url


def _is_bookkeeping(key: str) -> bool:
    """Keys that do not make a store: the lock and temporary files of interrupted writes."""
    return key == LOCK_KEY or bool(PARTIAL.search(key))


def list_keys(url: str, prefix: str = "") -> list[str]:
    """Every object key under ``prefix`` of the store at ``url``, relative to the store root.

    Parameters
    ----------
    url : str
        Store path or fsspec URL.
    prefix : str
        Key prefix without a trailing slash, e.g. ``"stem/c"``; ``""`` lists the whole store.

    Returns
    -------
    list of str
        Sorted keys such as ``"stem/c/0/3/0"``.
    """
    if is_local(url):
        local = local_path(url)
        folder_base = local / prefix if prefix else local
        if not folder_base.is_dir():
            return []
        keys: list[str] = []
        for folder, _dirs, files in os.walk(folder_base):
            rel = Path(folder).relative_to(local).as_posix()
            keys.extend(f if rel == "." else f"{rel}/{f}" for f in files)
        return sorted(keys)
    fs, root = url_to_fs(url)
    try:
        found = fs.find(f"{root}/{prefix}" if prefix else root)
    except FileNotFoundError:
        return []
    start = len(root.lstrip("/")) + 1
    return sorted(str(p).lstrip("/")[start:] for p in found)


def delete_keys(url: str, keys: Iterable[str]) -> None:
    """Delete object keys (relative to the store root) of the store at ``url``; missing keys are
    ignored."""
    if is_local(url):
        local = local_path(url)
        for key in keys:
            (local / key).unlink(missing_ok=True)
        return
    fs, root = url_to_fs(url)
    for key in keys:
        try:
            fs.rm_file(f"{root}/{key}")
        except FileNotFoundError:
            pass


def store_exists(url: str) -> bool:
    """Whether anything exists at ``url`` (a non-empty directory or a Zarr node).

    A lock file or the temporary files of an interrupted first write do not count.
    """
    if is_local(url):
        path = local_path(url)
        if not path.exists():
            return False
        if not path.is_dir():
            return True
        for folder, _dirs, files in os.walk(path):
            rel = Path(folder).relative_to(path).as_posix()
            if any(not _is_bookkeeping(f if rel == "." else f"{rel}/{f}") for f in files):
                return True
        return False
    try:
        zarr.open_group(url, mode="r")
        return True
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return False


def _clear(url: str) -> None:
    """Delete everything in the store except its lock; the root ``zarr.json`` goes last."""
    keys = [k for k in list_keys(url) if k != LOCK_KEY]
    root_meta = [k for k in keys if k == "zarr.json"]
    delete_keys(url, [k for k in keys if k != "zarr.json"])
    delete_keys(url, root_meta)
    if is_local(url):
        root = local_path(url)
        for child in root.iterdir() if root.is_dir() else []:
            if child.is_dir() and child.name != S.INTERNAL_GROUP:
                shutil.rmtree(child, ignore_errors=True)
        internal = root / S.INTERNAL_GROUP
        for child in internal.iterdir() if internal.is_dir() else []:
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)


def _open_group(url: str, mode: str) -> zarr.Group:
    return zarr.open_group(zarr_store(url, read_only=mode == "r"), mode=mode,  # type: ignore[arg-type]
                           zarr_format=3, use_consolidated=False)


def _consolidate(group: zarr.Group) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(group.store, path=group.path or None, zarr_format=3)


class FeatureStore:
    """Read-write handle on one feature store.

    Use :meth:`open` for an existing store and :meth:`create` for a new one; the extraction job
    then calls :meth:`pending_chunks`, :meth:`write_chunk` and :meth:`consolidate`.
    """

    def __init__(self, url: str, group: zarr.Group) -> None:
        self.url = url
        self.group = group
        self._key_encoders: dict[str, Callable[[tuple[int, ...]], str]] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, url: str, mode: str = "r") -> FeatureStore:
        """Open an existing, fully created store.

        Raises
        ------
        NotAStoreError
            When nothing is there, or it is not a featstore store.
        """
        try:
            group = _open_group(url, mode="r+" if mode != "r" else "r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError,
                zarr.errors.NodeTypeValidationError, KeyError, ValueError):
            raise NotAStoreError(
                f"'{url}' is not a featstore store (no Zarr group there); "
                "create one with `featstore extract DATA --store STORE`"
            ) from None
        if S.ATTRS_KEY not in group.attrs:
            raise NotAStoreError(
                f"'{url}' is a Zarr group but not a featstore store "
                f"(no '{S.ATTRS_KEY}' attribute); "
                "create one with `featstore extract DATA --store STORE`"
            )
        return cls(url, group)

    @classmethod
    def create(cls, url: str, layout: StoreLayout, meta: Mapping[str, Any],
               inits: Sequence[Mapping[str, Any]]) -> FeatureStore:
        """Create a new store (replacing whatever was at ``url``, except its lock).

        Parameters
        ----------
        url : str
            Location.
        layout : StoreLayout
            Shapes and coordinates.
        meta : mapping
            Extra description entries (config, versions...).
        inits : sequence of dict
            One descriptor per init (``name`` first).
        """
        description = {**layout.description(), **_jsonable(dict(meta)), "inits": []}
        creating = {_CREATING_KEY: _identity(description)}
        if store_exists(url):
            _mark_replacing(url, creating)
            _clear(url)
        # the root is written with the "creating" marker in one (atomic) write: a creation
        # interrupted from here on is recognized and redone by the next run
        group = zarr.create_group(zarr_store(url), zarr_format=3, attributes=creating)
        failpoint("create.root")
        n_images = layout.n_images
        image_chunk = layout.chunk_images
        coords = [S.LABEL, S.PATH, S.VALID] + ([S.SPLIT] if layout.splits is not None else [])
        coords += layout.coord_names
        checked = _checked_compressors()

        def coordinate(name: str, dtype: Any, values: np.ndarray) -> None:
            array = group.create_array(name, shape=(n_images,), chunks=(n_images,), dtype=dtype,
                                       compressors=checked, dimension_names=(S.IMAGE,))
            array[:] = values
            failpoint("create.array")

        coordinate(S.IMAGE, "int64", np.arange(n_images, dtype=np.int64))
        coordinate(S.LABEL, "int64", np.asarray(layout.labels, dtype=np.int64))
        coordinate(S.PATH, str, np.asarray(layout.paths, dtype=object))
        if layout.splits is not None:
            coordinate(S.SPLIT, str, np.asarray(layout.splits, dtype=object))
        for name, values in layout.coords:
            coordinate(name, str, np.asarray(values, dtype=object))
        group.create_array(S.VALID, shape=(n_images,), chunks=(image_chunk,), dtype="bool",
                           fill_value=True, compressors=checked, dimension_names=(S.IMAGE,))
        group.create_array(S.INIT, shape=(0,), chunks=(1,), dtype=str, compressors=checked,
                           dimension_names=(S.INIT,))
        for layer in layout.layers:
            array = group.create_array(
                layer.var,
                shape=(0, n_images, layer.units),
                chunks=(1, image_chunk, layer.units),
                dtype=layout.dtype,
                fill_value=np.nan,
                compressors=default_compressors(),
                dimension_names=(S.INIT, S.IMAGE, S.unit_dim(layer.name)),
            )
            array.attrs.update({
                "module": layer.name,
                "shape": list(layer.shape),
                "units": layer.units,
                "coordinates": " ".join(coords),
            })
            if layer.prefix_tokens:  # token layout, only where there is one (older stores: none)
                array.attrs.update({"prefix_tokens": layer.prefix_tokens,
                                    "class_token": layer.class_token})
            failpoint("create.array")
        internal = group.create_group(S.INTERNAL_GROUP)
        internal.create_array(S.PROGRESS_ARRAY, shape=(0, layout.n_chunks), chunks=(1, 1),
                              dtype="bool", fill_value=False, compressors=checked)
        failpoint("create.before_description")
        attrs = dict(group.attrs)
        attrs.pop(_CREATING_KEY, None)
        attrs[S.ATTRS_KEY] = description
        group.attrs.put(attrs)
        store = cls(url, group)
        store.consolidate()
        store.add_inits(inits)
        return store

    # ------------------------------------------------------------------ description
    @property
    def meta(self) -> dict[str, Any]:
        """The store description ``attrs["featstore"]`` (a copy)."""
        return dict(self.group.attrs[S.ATTRS_KEY])  # type: ignore[arg-type]

    def identity(self) -> dict[str, Any]:
        """The fields that must match for this store to be resumed or extended."""
        return _identity(self.meta)

    @property
    def init_names(self) -> list[str]:
        return [d["name"] for d in self.meta.get("inits", [])]

    @property
    def layer_vars(self) -> list[str]:
        return list(self.meta["layers"])

    @property
    def n_images(self) -> int:
        return int(self.meta["n_images"])

    @property
    def chunk_images(self) -> int:
        return int(self.meta["chunk_images"])

    @property
    def n_chunks(self) -> int:
        return S.n_chunks(self.n_images, self.chunk_images)

    def _progress_array(self) -> zarr.Array:
        return self.group[f"{S.INTERNAL_GROUP}/{S.PROGRESS_ARRAY}"]  # type: ignore[return-value]

    # ------------------------------------------------------------------ structure
    def add_inits(self, inits: Sequence[Mapping[str, Any]]) -> None:
        """Append inits along ``init`` (idempotent after an interruption).

        Arrays are resized and the names written first; the description's ``inits`` list is
        updated last, so an interrupted call is simply redone.
        """
        meta = self.meta
        known = list(meta.get("inits", []))
        new = [dict(d) for d in inits if d["name"] not in {k["name"] for k in known}]
        if not new:
            return
        total = len(known) + len(new)
        for var in meta["layers"]:
            array = self.group[var]
            array.resize((total, *array.shape[1:]))  # type: ignore[union-attr]
            failpoint("add_inits.resize")
        progress = self._progress_array()
        progress.resize((total, progress.shape[1]))
        failpoint("add_inits.resized")
        names = self.group[S.INIT]
        names.resize((total,))  # type: ignore[union-attr]
        names[len(known):] = np.asarray([d["name"] for d in new], dtype=object)  # type: ignore[index]
        failpoint("add_inits.before_description")
        meta["inits"] = [*known, *_jsonable(new)]
        self.group.attrs[S.ATTRS_KEY] = meta
        failpoint("add_inits.before_consolidate")
        self.consolidate()

    def consolidate(self) -> None:
        """Rewrite consolidated metadata (after any change of shapes or attributes)."""
        _consolidate(self.group)

    def update_meta(self, **entries: Any) -> None:
        """Merge entries into the description and reconsolidate."""
        meta = self.meta
        meta.update(_jsonable(entries))
        self.group.attrs[S.ATTRS_KEY] = meta
        self.consolidate()

    # ------------------------------------------------------------------ progress
    def progress(self) -> np.ndarray:
        """Done markers, bool array of shape (n_inits, n_chunks).

        A marker that cannot be read (torn or damaged) counts as not done, so its chunk is
        simply computed again.
        """
        progress = self._progress_array()
        n_inits = len(self.init_names)
        if n_inits == 0:
            return np.zeros((0, self.n_chunks), dtype=bool)
        try:
            return np.asarray(progress[:n_inits], dtype=bool)
        except Exception:  # noqa: BLE001 - any decode failure: fall back marker by marker
            return np.array([[_read_marker(progress, i, c) for c in range(self.n_chunks)]
                             for i in range(n_inits)], dtype=bool).reshape(n_inits, -1)

    def pending_chunks(self, init_index: int) -> list[int]:
        """Chunk numbers of init ``init_index`` that are not yet written."""
        progress = self._progress_array()
        try:
            row = np.asarray(progress[init_index, :], dtype=bool)
        except Exception:  # noqa: BLE001 - a damaged marker counts as not done
            row = np.array([_read_marker(progress, init_index, c) for c in range(self.n_chunks)],
                           dtype=bool)
        return [int(c) for c in np.flatnonzero(~row)]

    def mark_pending(self, init_index: int, chunk: int) -> None:
        """Clear one chunk's done marker so that the next run computes it again."""
        self._progress_array()[init_index, chunk] = False

    def reset_valid(self, chunk: int) -> None:
        """Drop one chunk of the ``valid`` mask (back to all valid); the next run rewrites it."""
        array: zarr.Array = self.group[S.VALID]  # type: ignore[assignment]
        delete_keys(self.url, [f"{S.VALID}/{array.metadata.encode_chunk_key((chunk,))}"])

    def rewrite_coordinates(self, layout: StoreLayout) -> None:
        """Write the per-image coordinates and the init names again (repair of damaged ones)."""
        values = {S.IMAGE: np.arange(layout.n_images, dtype=np.int64),
                  S.LABEL: np.asarray(layout.labels, dtype=np.int64),
                  S.PATH: np.asarray(layout.paths, dtype=object)}
        if layout.splits is not None:
            values[S.SPLIT] = np.asarray(layout.splits, dtype=object)
        known = set(self.image_coord_names)
        values.update({name: np.asarray(v, dtype=object) for name, v in layout.coords
                       if name in known})
        for name, data in values.items():
            self.group[name][:] = data  # type: ignore[index]
        names = self.init_names
        if names:
            self.group[S.INIT][:] = np.asarray(names, dtype=object)  # type: ignore[index]

    @property
    def image_coord_names(self) -> list[str]:
        """Names of the extra image coordinates (a manifest's extra columns), in order."""
        data = self.meta.get("data") or {}
        return [str(c) for c in data.get("columns", [])] if isinstance(data, Mapping) else []

    def image_coords(self) -> dict[str, np.ndarray]:
        """The extra image coordinates: name -> object array of str, shape (n_images,)."""
        return {name: np.asarray(self.group[name][:], dtype=object)  # type: ignore[index]
                for name in self.image_coord_names}

    def sync_image_coords(self, layout: StoreLayout) -> bool:
        """Make the extra image coordinates those of ``layout`` (a resumed extraction whose
        manifest gained, lost or changed a column); nothing is written when they already match.

        Returns
        -------
        bool
            Whether anything changed.
        """
        stored = self.image_coords()
        wanted = {name: np.asarray(values, dtype=object) for name, values in layout.coords}
        if list(stored) == list(wanted) and all(
                np.array_equal(stored[n], wanted[n]) for n in wanted):
            return False
        checked = _checked_compressors()
        for name in stored:
            if name not in wanted:
                del self.group[name]
        for name, values in wanted.items():
            array = self.group.create_array(
                name, shape=(self.n_images,), chunks=(max(1, self.n_images),), dtype=str,
                compressors=checked, dimension_names=(S.IMAGE,), overwrite=True)
            array[:] = values
        base = [S.LABEL, S.PATH, S.VALID] + ([S.SPLIT] if S.SPLIT in self.group else [])
        for var in self.layer_vars:
            self.layer_array(var).attrs["coordinates"] = " ".join(base + list(wanted))
        meta = self.meta
        data = dict(meta.get("data") or {})
        data.pop("columns", None)
        if wanted:
            data["columns"] = list(wanted)
        meta["data"] = data
        self.group.attrs[S.ATTRS_KEY] = _jsonable(meta)
        self.consolidate()
        return True

    def chunk_key(self, var: str, coords: tuple[int, ...]) -> str:
        """Store key of one chunk of array ``var``, e.g. ``"stem/c/0/3/0"``."""
        encode = self._key_encoders.get(var)
        if encode is None:
            array: zarr.Array = self.group[var]  # type: ignore[assignment]
            encode = self._key_encoders[var] = array.metadata.encode_chunk_key
        return f"{var}/{encode(coords)}"

    def lock_holder(self) -> LockInfo | None:
        """The process writing this store now (pid, host, time, command), or None.

        Readers such as ``featstore probe`` call this to refuse, or to name the writer, when a
        store is being extracted.
        """
        return lock_holder(self.url)

    def is_complete(self, init_name: str | None = None) -> bool:
        """Whether every chunk of one init (or of all inits) is written."""
        done = self.progress()
        if init_name is None:
            return bool(done.size) and bool(done.all())
        return bool(done[self.init_names.index(init_name)].all())

    # ------------------------------------------------------------------ data
    def write_chunk(self, init_index: int, chunk: int, features: Mapping[str, np.ndarray],
                    invalid: np.ndarray | None = None) -> None:
        """Write one image chunk of every layer for one init, then mark it done.

        Parameters
        ----------
        init_index : int
            Position along ``init``.
        chunk : int
            Image chunk number; rows ``[chunk * C, min((chunk + 1) * C, n))``.
        features : mapping of str to ndarray
            Layer module path -> array of shape (rows, units); every stored layer is required.
        invalid : ndarray of bool, optional
            Shape (rows,): images that could not be read (their rows hold NaN).
        """
        start, stop = S.chunk_bounds(chunk, self.n_images, self.chunk_images)
        meta = self.meta
        modules: dict[str, str] = meta["layer_modules"]
        dtype = np.dtype(meta["dtype"])
        for var in meta["layers"]:
            block = np.asarray(features[modules[var]], dtype=dtype)
            if block.shape[0] != stop - start:
                raise ValueError(f"chunk {chunk} of {var}: {block.shape[0]} rows, "
                                 f"expected {stop - start}")
            self.group[var][init_index, start:stop, :] = block  # type: ignore[index]
            failpoint("write_chunk.layer")
        if invalid is not None and invalid.any():
            self.group[S.VALID][start:stop] = ~np.asarray(invalid, dtype=bool)  # type: ignore[index]
        self._make_durable(init_index, chunk)
        failpoint("write_chunk.before_marker")
        self._progress_array()[init_index, chunk] = True
        failpoint("write_chunk.after_marker")

    def _make_durable(self, init_index: int, chunk: int) -> None:
        """fsync the chunk files just written and their folders (local directories only)."""
        if not is_local(self.url):
            return
        root = local_path(self.url)
        keys = [self.chunk_key(var, (init_index, chunk, 0)) for var in self.layer_vars]
        keys.append(self.chunk_key(S.VALID, (chunk,)))
        for file in [root / key for key in keys]:
            for target in (file, file.parent):
                try:
                    fd = os.open(target, os.O_RDONLY)
                except FileNotFoundError:  # e.g. an all-valid chunk is never written
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def write_norm_state(self, init_index: int, state: Mapping[str, np.ndarray]) -> None:
        """Keep the re-estimated normalization statistics of a ``+bn`` init (one array).

        A resumed or repaired extraction loads them instead of estimating them again, so every
        chunk of the init sees the same statistics on any device.

        Parameters
        ----------
        init_index : int
            Position along ``init``.
        state : mapping of str to ndarray
            Buffer name (``"blocks.0.project.1.running_mean"``...) -> values.
        """
        keys = list(state)
        values = [np.asarray(state[k], dtype=np.float32) for k in keys]
        flat = np.concatenate([v.ravel() for v in values]) if values else np.zeros(0, "f4")
        group = self.group.require_group(f"{S.INTERNAL_GROUP}/{S.NORM_STATE_GROUP}")
        array = group.create_array(f"init{init_index}", shape=flat.shape,
                                   chunks=(max(1, flat.size),), dtype="float32",
                                   compressors=_checked_compressors(), overwrite=True)
        array[:] = flat
        array.attrs.update({"keys": keys, "shapes": [list(v.shape) for v in values]})
        self.consolidate()

    def read_norm_state(self, init_index: int) -> dict[str, np.ndarray] | None:
        """The statistics :meth:`write_norm_state` kept for an init, or None (not written, or
        unreadable: then they are estimated again)."""
        try:
            array = self.group[f"{S.INTERNAL_GROUP}/{S.NORM_STATE_GROUP}/init{init_index}"]
            flat = np.asarray(array[:])  # type: ignore[index]
            attrs: dict[str, Any] = dict(array.attrs)
            keys = [str(k) for k in attrs["keys"]]
            shapes = [tuple(int(n) for n in shape) for shape in attrs["shapes"]]
        except Exception:  # noqa: BLE001 - missing or damaged: estimate again
            return None
        out: dict[str, np.ndarray] = {}
        start = 0
        for key, shape in zip(keys, shapes, strict=True):
            size = int(np.prod(shape)) if shape else 1
            out[key] = flat[start:start + size].reshape(shape)
            start += size
        return out if start == flat.size else None

    def layer_array(self, var: str) -> zarr.Array:
        """The Zarr array of layer variable ``var``, shape (inits, images, units)."""
        array = self.group[var]
        if not isinstance(array, zarr.Array):
            raise TypeError(f"{var!r} is not an array in {self.url}")
        return array

    def read_layer(self, var: str, init_index: int, rows: slice | None = None) -> np.ndarray:
        """Read one layer of one init, array of shape (rows, units)."""
        return np.asarray(self.layer_array(var)[init_index, rows or slice(None), :])

    def valid_mask(self) -> np.ndarray:
        """Bool array of shape (n_images,): False for images recorded as unreadable."""
        return np.asarray(self.group[S.VALID][:], dtype=bool)  # type: ignore[index]


def _read_marker(progress: zarr.Array, init_index: int, chunk: int) -> bool:
    try:
        return bool(progress[init_index, chunk])
    except Exception:  # noqa: BLE001 - torn or damaged marker: not done
        return False


def _mark_replacing(url: str, creating: Mapping[str, Any]) -> None:
    """Before clearing an old store, replace its description by the "creating" marker.

    An interruption while the old content is deleted then leaves a store that the next run
    recognizes as an interrupted creation of the new one.
    """
    try:
        group = _open_group(url, mode="r+")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError,
            KeyError, ValueError):
        return
    group.attrs.put(dict(creating))


def creating_identity(url: str) -> dict[str, Any] | None:
    """Identity of a store whose creation was interrupted, or None."""
    try:
        group = _open_group(url, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
        return None
    value = group.attrs.get(_CREATING_KEY)
    return dict(value) if isinstance(value, Mapping) and S.ATTRS_KEY not in group.attrs else None


def diff_identity(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Names of identity fields that differ, in :data:`IDENTITY_KEYS` order."""
    return [k for k in IDENTITY_KEYS if _jsonable(stored.get(k)) != _jsonable(wanted.get(k))]


def open_store(url: str | os.PathLike[str]) -> xr.Dataset:
    """Open a feature store as a lazy :class:`xarray.Dataset`.

    Parameters
    ----------
    url : str or PathLike
        Path or fsspec URL of the store.

    Returns
    -------
    xarray.Dataset
        One data variable per layer, dims ``("init", "image", "unit_<layer>")``; coordinates
        ``init``, ``image``, ``label``, ``path``, ``valid`` and ``split`` when present;
        ``attrs["featstore"]`` describes the store.

    Raises
    ------
    NotAStoreError
        When ``url`` is not a featstore store.
    """
    text = str(url)
    FeatureStore.open(text)  # validates
    try:
        return xr.open_zarr(text, consolidated=True)
    except (KeyError, ValueError, FileNotFoundError):
        return xr.open_zarr(text, consolidated=False)
