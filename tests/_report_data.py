"""Synthetic probe results and knowledge gain in the exact form of the results contract.

Used by test_report.py, test_inspect.py and test_demo.py until (and besides) the real probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def make_results(
    layers: Sequence[str] = ("stem", "blocks.0", "blocks.1", "head"),
    inits: Sequence[str] = ("pretrained", "random:0", "random:1"),
    classifiers: Sequence[str] = ("logreg:C=1",),
    folds: int = 5,
    n_images: int = 40,
    n_classes: int = 2,
    seed: int = 0,
) -> xr.Dataset:
    """Probe results: pretrained rises with depth, random falls; both above chance."""
    from featstore.inits import init_kind

    rng = np.random.default_rng(seed)
    n_layers = len(layers)
    depth = np.linspace(0.0, 1.0, n_layers)
    score = np.empty((len(classifiers), n_layers, len(inits), folds, len(METRICS)))
    for i, init in enumerate(inits):
        base = 0.7 + 0.2 * depth if init == "pretrained" else 0.75 - 0.1 * depth
        noise = rng.normal(0.0, 0.03, size=(len(classifiers), n_layers, folds, len(METRICS)))
        score[:, :, i] = np.clip(base[None, :, None, None] + noise, 0.0, 1.0)
    label = np.arange(n_images) % n_classes
    prediction = rng.integers(0, n_classes, size=(len(classifiers), n_layers, len(inits),
                                                  n_images)).astype(np.int16)
    vars_ = [name.replace(".", "-") for name in layers]
    return xr.Dataset(
        {
            "score": (("classifier", "layer", "init", "fold", "metric"), score),
            "prediction": (("classifier", "layer", "init", "image"), prediction),
        },
        coords={
            "classifier": list(classifiers),
            "layer": vars_,
            "init": list(inits),
            "fold": np.arange(folds),
            "metric": list(METRICS),
            "image": np.arange(n_images),
            "label": ("image", label),
            "test_fold": ("image", np.arange(n_images) % folds),
            "chance": ("metric", [1.0 / n_classes] * len(METRICS)),
            "init_kind": ("init", [init_kind(i) for i in inits]),
            "layer_module": ("layer", list(layers)),
            "layer_units": ("layer", [8 * (k + 1) for k in range(n_layers)]),
        },
        attrs={"featstore_probe": {
            "run": "20250101T000000-synthetic",
            "created": "2025-01-01T00:00:00+00:00",
            "classes": [f"class{k}" for k in range(n_classes)],
            "config": {"classifiers": list(classifiers), "folds": folds, "seed": 0},
        }},
    )


def make_gain(results: xr.Dataset) -> xr.Dataset:
    """Knowledge gain of ``results`` in the contract's form, one entry per baseline group
    present (no bootstrap: +-2 s.e. over folds; ``p_best`` from a normal approximation)."""
    from featstore.inits import BASELINE_GROUPS, init_kind

    score = results["score"]
    kinds = np.array([init_kind(str(i)) for i in results["init"].values])
    pre = score.isel(init=np.flatnonzero(kinds == "pretrained")[0])
    groups = [g for g in BASELINE_GROUPS if g in kinds]
    parts = []
    for group in groups:
        rnd = score.isel(init=np.flatnonzero(kinds == group)).mean("init")
        diff = pre - rnd
        gain = diff.mean("fold")
        se = diff.std("fold", ddof=1) / np.sqrt(results.sizes["fold"])
        random = rnd.mean("fold")
        weight = np.exp(gain / (se + 1e-9))
        parts.append(xr.Dataset({
            "random": random,
            "gain": gain,
            "ci_low": gain - 2 * se,
            "ci_high": gain + 2 * se,
            "seed_sd": diff.mean("fold") * 0 + 0.01,
            "p_best": weight / weight.sum("layer"),
            "normalized_gain": gain / (1.0 - random),
            "normalized_ci_low": (gain - 2 * se) / (1.0 - random),
            "normalized_ci_high": (gain + 2 * se) / (1.0 - random),
            "diff_best_ci_low": gain - gain.max("layer") - 2 * se,
        }))
    ds = xr.concat(parts, dim="baseline").assign_coords(
        baseline=groups, n_seeds=("baseline", [int((kinds == g).sum()) for g in groups]))
    ds["pretrained"] = pre.mean("fold")
    ds = ds.transpose("baseline", "classifier", "layer", "metric")
    # best = largest gain; sweet spot = shallowest layer whose difference to the best has its
    # lower bound above -0.01
    layers = results["layer"].values
    g = ds["gain"].values
    low = ds["diff_best_ci_low"].values
    best = np.empty((len(groups), g.shape[1], g.shape[3]), dtype=object)
    sweet = np.empty_like(best)
    for k in range(len(groups)):
        for c in range(g.shape[1]):
            for m in range(g.shape[3]):
                b = int(np.argmax(g[k, c, :, m]))
                best[k, c, m] = layers[b]
                ok = low[k, c, :, m] > -0.01
                ok[b] = True
                sweet[k, c, m] = layers[int(np.flatnonzero(ok)[0])]
    ds["best_layer"] = (("baseline", "classifier", "metric"), best.astype(str))
    ds["sweet_spot_layer"] = (("baseline", "classifier", "metric"), sweet.astype(str))
    ds = ds.assign_coords(layer_module=results["layer_module"])
    ds.attrs.update({"confidence": 0.95, "margin": 0.01})
    return ds


def make_probed_store(url: str, *, n_images: int = 40, probe: bool = True,
                      layers: Sequence[tuple[str, int]] = (("stem", 4), ("blocks.0", 6),
                                                           ("head", 8))) -> str:
    """A tiny efficientnet_lite0-named store with random features, optionally probed.

    Pretrained features carry the label (more so deeper), random ones only at the stem, so the
    gain is positive and grows with depth. Layer names are real lite0 modules (so parameter
    counts work); unit counts are small.
    """
    from featstore import schema as S
    from featstore.store import FeatureStore, LayerSpec, StoreLayout

    labels = np.arange(n_images) % 2
    layout = StoreLayout(
        model="efficientnet_lite0",
        layers=tuple(LayerSpec(name, units, (units, 4, 4)) for name, units in layers),
        transform={"size": 32, "interpolation": "bilinear", "mean": [0.5] * 3,
                   "std": [0.5] * 3},
        pool="avg", dtype="float32", chunk_images=16, classes=("benign", "tumour"),
        paths=tuple(f"{'ab'[i % 2]}/img{i:03d}.png" for i in range(n_images)),
        labels=tuple(int(v) for v in labels), splits=None,
        data={"kind": "imagefolder", "root": "/data/tiny", "fingerprint": "f" * 64},
    )
    inits: list[dict[str, Any]] = [
        {"name": "pretrained", "kind": "pretrained", "weights": "tiny-weights", "sha256": "a" * 64,
         "seed": None},
        {"name": "random:0", "kind": "random", "weights": None, "sha256": None, "seed": 0},
        {"name": "random:1", "kind": "random", "weights": None, "sha256": None, "seed": 1},
    ]
    store = FeatureStore.create(url, layout, {"versions": {"featstore": "test"},
                                              "created": "2025-01-01T00:00:00+00:00"}, inits)
    rng = np.random.default_rng(0)
    for i, init in enumerate(inits):
        for chunk in range(layout.n_chunks):
            start, stop = S.chunk_bounds(chunk, n_images, layout.chunk_images)
            y = labels[start:stop]
            feats = {}
            for depth, layer in enumerate(layout.layers):
                signal = (0.6 + 0.8 * depth) if init["kind"] == "pretrained" else (
                    0.8 if depth == 0 else 0.0)
                x = rng.normal(size=(stop - start, layer.units))
                x[:, 0] += signal * (2 * y - 1)
                feats[layer.name] = x.astype(np.float32)
            store.write_chunk(i, chunk, feats)
    if probe:
        from featstore import probe as run_probe

        run_probe(url, classifiers=("logreg",), folds=5, seed=0)
    return url
