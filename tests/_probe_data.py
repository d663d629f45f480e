"""Synthetic feature stores for the probe tests (no network: features are made up).

``make_store`` writes a real store through :class:`featstore.store.FeatureStore`, so the probe
reads exactly what ``featstore extract`` would have written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from featstore.store import FeatureStore, LayerSpec, StoreLayout

#: layer module path -> units, shallow to deep
LAYERS: dict[str, int] = {"stem": 6, "blocks.0": 8, "head": 12}


def informative(labels: np.ndarray, units: int, strength: float,
                rng: np.random.Generator) -> np.ndarray:
    """Gaussian features whose class means differ by ``strength`` (0: pure noise)."""
    centres = rng.normal(size=(int(labels.max()) + 1, units))
    noise = rng.normal(size=(labels.size, units))
    return 3.0 + noise * rng.uniform(0.5, 2.0, size=units) + strength * centres[labels]


def make_store(
    path: Path | str,
    per_class: Sequence[int] = (40, 40, 40),
    layers: Mapping[str, int] = LAYERS,
    inits: Sequence[str] = ("pretrained", "random:0"),
    features: Callable[[str, str, np.ndarray, int], np.ndarray] | None = None,
    chunk_images: int = 32,
    splits: Sequence[str] | None = None,
    invalid: Sequence[int] = (),
    nan_rows: Mapping[tuple[str, str], Sequence[int]] | None = None,
    complete: bool = True,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> str:
    """Write a complete (or partial) store and return its path.

    Parameters
    ----------
    per_class : sequence of int
        Images per class (labels in blocks, then shuffled).
    features : callable, optional
        ``features(init, layer, labels, units) -> (n, units)``; default: the pretrained init is
        informative (more with depth), random inits are weakly informative.
    invalid : sequence of int
        Images recorded as unreadable (their rows are NaN, ``valid`` is False).
    nan_rows : mapping, optional
        (init, layer) -> rows set to NaN while staying valid.
    complete : bool
        Leave the last chunk of the last init unwritten when False.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(per_class)), per_class)
    labels = labels[rng.permutation(labels.size)]
    n = labels.size
    names = tuple(classes or (f"class{k}" for k in range(len(per_class))))
    layout = StoreLayout(
        model="synthetic",
        layers=tuple(LayerSpec(name, units, (units, 2, 2)) for name, units in layers.items()),
        transform={"size": 8, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3},
        pool="avg", dtype="float32", chunk_images=chunk_images, classes=names,
        paths=tuple(f"img{i:04d}.png" for i in range(n)), labels=tuple(int(v) for v in labels),
        splits=None if splits is None else tuple(splits),
        data={"kind": "synthetic", "fingerprint": f"synthetic-{seed}-{n}"},
    )
    store = FeatureStore.create(str(path), layout, {}, [{"name": name} for name in inits])

    def default(init: str, layer: str, y: np.ndarray, units: int) -> np.ndarray:
        depth = list(layers).index(layer) + 1
        strength = 0.6 * depth if init == "pretrained" else 0.15
        return informative(y, units, strength, rng)

    make = features or default
    data = {(init, layer): np.asarray(make(init, layer, labels, units), dtype=np.float32)
            for init in inits for layer, units in layers.items()}
    for (init, layer), rows in (nan_rows or {}).items():
        data[init, layer][list(rows)] = np.nan
    bad = np.zeros(n, dtype=bool)
    bad[list(invalid)] = True
    for i, init in enumerate(inits):
        for chunk in range(store.n_chunks):
            if not complete and i == len(inits) - 1 and chunk == store.n_chunks - 1:
                continue
            start, stop = chunk * chunk_images, min(n, (chunk + 1) * chunk_images)
            block = {}
            for layer in layers:
                values = data[init, layer][start:stop].copy()
                values[bad[start:stop]] = np.nan
                block[layer] = values
            store.write_chunk(i, chunk, block, bad[start:stop])
    store.consolidate()
    return str(path)


def stored_features(path: str, init: str, layer_var: str) -> np.ndarray:
    """Features of one layer and init as float64, shape (n_images, units)."""
    store = FeatureStore.open(path)
    return store.read_layer(layer_var, store.init_names.index(init)).astype(np.float64)
