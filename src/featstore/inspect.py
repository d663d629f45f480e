"""What a store holds, as plain data: the library side of ``featstore info``.

:func:`summarize_store` reads only metadata, coordinates, progress markers and file sizes (never
the feature arrays) and returns a JSON-able dict; the command line renders it with rich.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import schema as S
from .health import degenerate
from .location import is_local, local_path, url_to_fs
from .results import describe_runs
from .store import FeatureStore

__all__ = ["summarize_store", "disk_usage"]


def disk_usage(url: str, subpath: str = "") -> int:
    """Bytes stored under ``url`` (optionally below ``subpath``): file sizes, summed.

    Local directories are walked; other fsspec URLs (``memory://``, ``s3://``...) use the
    filesystem's ``du``.

    Parameters
    ----------
    url : str
        Store location.
    subpath : str
        Node inside the store, e.g. a layer variable name.
    """
    if is_local(url):
        root = local_path(url)
        top = root / subpath if subpath else root
        total = 0
        for dirpath, _dirnames, filenames in os.walk(top):
            for name in filenames:
                try:
                    total += os.path.getsize(os.path.join(dirpath, name))
                except OSError:
                    continue
        return total
    fs, path = url_to_fs(url)
    target = f"{path}/{subpath}" if subpath else path
    try:
        return int(fs.du(target, total=True))
    except FileNotFoundError:
        return 0


def _attrs_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _read_coord(store: FeatureStore, name: str) -> np.ndarray | None:
    try:
        return np.asarray(store.group[name][:])  # type: ignore[index]
    except KeyError:
        return None


def summarize_store(url: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarize a feature store: model, inits, layers, images, progress, size, probe runs.

    Parameters
    ----------
    url : str or PathLike
        Store path or fsspec URL.

    Returns
    -------
    dict
        JSON-able; keys ``url``, ``model``, ``schema_version``, ``created``, ``pool``,
        ``dtype``, ``transform``, ``chunk_images``, ``inits`` (list of dicts with ``name``,
        ``kind``, ``weights``, ``seed``, ``sha256``, ``chunks_done``, ``chunks_total``,
        ``images_done``, ``complete``), ``layers`` (``var``, ``module``, ``units``, ``shape``),
        ``images`` (``n_images``, ``n_valid``, ``classes`` name -> count, ``splits``
        split -> {class -> count} or None), ``data``, ``size`` (``stored_bytes``,
        ``feature_bytes``, ``raw_feature_bytes``, ``compression_ratio``), ``probes`` (see
        :func:`featstore.results.describe_runs`), ``versions``, ``health`` (init -> layer ->
        ``rms``, ``constant_fraction``, ``participation_ratio``; see :mod:`featstore.health`;
        empty for stores extracted before it was recorded) and ``degenerate`` (``[init, layer,
        reason]`` for every numerically degenerate pair).

    Raises
    ------
    NotAStoreError
        When ``url`` is not a featstore store.
    """
    text = str(url)
    store = FeatureStore.open(text)
    meta = store.meta
    health = {str(k): v for k, v in _attrs_dict(meta.get("health")).items()}
    n_images = int(meta["n_images"])
    chunk_images = int(meta["chunk_images"])
    done = store.progress()
    n_chunks = S.n_chunks(n_images, chunk_images)
    bounds = [S.chunk_bounds(c, n_images, chunk_images) for c in range(n_chunks)]
    rows_per_chunk = np.array([stop - start for start, stop in bounds], dtype=np.int64)
    inits = []
    rows_done_total = 0
    for i, descriptor in enumerate(meta.get("inits", [])):
        row = done[i] if i < done.shape[0] else np.zeros(n_chunks, dtype=bool)
        images_done = int(rows_per_chunk[row].sum())
        rows_done_total += images_done
        inits.append({
            "name": descriptor.get("name"),
            "kind": descriptor.get("kind"),
            "weights": descriptor.get("weights"),
            "seed": descriptor.get("seed"),
            "sha256": descriptor.get("sha256"),
            "chunks_done": int(row.sum()),
            "chunks_total": n_chunks,
            "images_done": images_done,
            "complete": bool(row.all()),
        })

    modules = _attrs_dict(meta.get("layer_modules"))
    units = _attrs_dict(meta.get("units"))
    layers = []
    itemsize = np.dtype(str(meta.get("dtype", "float32"))).itemsize
    raw = 0
    feature_bytes = 0
    for var in meta["layers"]:
        attrs = _attrs_dict(store.group[var].attrs)
        n_units = int(units.get(var, attrs.get("units", 0)))
        layers.append({
            "var": var,
            "module": modules.get(var, var),
            "units": n_units,
            "shape": list(attrs.get("shape", [])),
        })
        raw += n_units * itemsize * rows_done_total
        feature_bytes += disk_usage(text, var)
    stored = disk_usage(text)

    classes = [str(c) for c in meta.get("classes", [])]
    labels = _read_coord(store, S.LABEL)
    valid = _read_coord(store, S.VALID)
    splits_raw = _read_coord(store, S.SPLIT)
    label_arr = (np.asarray(labels, dtype=np.int64) if labels is not None
                 else np.zeros(0, dtype=np.int64))
    counts = np.bincount(label_arr, minlength=len(classes)) if label_arr.size else \
        np.zeros(len(classes), dtype=np.int64)
    split_counts: dict[str, dict[str, int]] | None = None
    if splits_raw is not None and label_arr.size:
        split_arr = np.array([str(s) for s in splits_raw.tolist()], dtype=object)
        split_counts = {}
        for split in sorted(set(split_arr.tolist())):
            per = np.bincount(label_arr[split_arr == split], minlength=len(classes))
            split_counts[split] = {name: int(per[k]) for k, name in enumerate(classes)}

    return {
        "url": text,
        "model": meta.get("model"),
        "schema_version": meta.get("schema_version"),
        "created": meta.get("created"),
        "pool": meta.get("pool"),
        "dtype": meta.get("dtype"),
        "transform": _attrs_dict(meta.get("transform")),
        "chunk_images": chunk_images,
        "inits": inits,
        "layers": layers,
        "images": {
            "n_images": n_images,
            "n_valid": int(np.asarray(valid, dtype=bool).sum()) if valid is not None
            else n_images,
            "classes": {name: int(counts[k]) for k, name in enumerate(classes)},
            "splits": split_counts,
        },
        "data": _attrs_dict(meta.get("data")),
        "size": {
            "stored_bytes": stored,
            "feature_bytes": feature_bytes,
            "raw_feature_bytes": raw,
            "compression_ratio": (raw / feature_bytes) if feature_bytes else None,
        },
        "probes": describe_runs(store),
        "versions": _attrs_dict(meta.get("versions")),
        "health": health,
        "degenerate": [list(item) for item in degenerate(health)],
    }
