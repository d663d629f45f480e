"""Regenerate docs/baselines.md: which random-weight baseline, measured on real LC25000 tiles.

Usage (from the repository root)::

    .venv/bin/python docs/baselines.py                  # 150 tiles per class
    .venv/bin/python docs/baselines.py --per-class 50   # quicker, noisier
    .venv/bin/python docs/baselines.py --store /tmp/featstore-lc25000/store.zarr
        # reuse the worked example's store (docs/lc25000_example.py), which holds these inits

A seeded subset of LC25000 lung tiles (symlinks, never copies) is extracted with
efficientnet_lite0 under four inits: ``pretrained``, ``random:0`` (the architecture's own
initialisation), ``random:0+bn`` (the same weights with the BatchNorm statistics re-estimated
on the tiles) and ``shuffled:0`` (the pretrained weights permuted within each tensor). The
script writes, per layer: the pooled RMS (activation health), the linear CKA between each block
and the next (how much a block changes the representation), and the accuracy of a logistic
regression probe (5-fold, seed 0) for every init; then a float16 store of ``random:0`` is
attempted, to show what ``--dtype float16`` does with the degenerate layers.
"""

from __future__ import annotations

import argparse
import platform
import random
import shutil
import time
from pathlib import Path

import torch

import featstore
from featstore.errors import FeatstoreInputError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "lc25000_lung"
INITS = ("pretrained", "random:0", "random:0+bn", "shuffled:0")
SHOWN = ("stem", "blocks.0", "blocks.3", "blocks.7", "blocks.11", "blocks.15", "head")


def link_subset(dest: Path, per_class: int, seed: int = 0) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    rng = random.Random(seed)
    for folder in sorted(p for p in DATA.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        (dest / folder.name).mkdir(parents=True)
        for path in sorted(rng.sample(files, per_class)):
            (dest / folder.name / path.name).symlink_to(path.resolve())
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--work", type=Path, default=Path("/tmp/featstore-baselines"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "baselines.md")
    parser.add_argument("--store", type=Path, default=None,
                        help="an existing store holding these inits (skips the extraction)")
    args = parser.parse_args()
    if args.store is not None:
        store = str(args.store)
        ds = featstore.open_store(store)
        tiles = Path(str(ds.attrs["featstore"]["data"]["root"]))
        extract_s = float("nan")
        n_images = int(ds.sizes["image"])
    else:
        tiles = link_subset(args.work / "tiles", args.per_class)
        store = str(args.work / "store.zarr")
        start = time.perf_counter()
        ds = featstore.extract(str(tiles), store, inits=INITS, device="cpu")
        extract_s = time.perf_counter() - start
        n_images = 3 * args.per_class
    health = ds.attrs["featstore"]["health"]
    results = featstore.probe(store, classifiers=["logreg"], folds=5, seed=0, inits=INITS)
    accuracy = results["score"].sel(metric="accuracy", classifier="logreg:C=1").mean("fold")
    layers = [str(v) for v in results["layer"].values]

    cka = featstore.cka(store, inits=["random:0", "random:0+bn", "pretrained"])
    def next_block_cka(init: str, layer: str) -> str:
        index = layers.index(layer)
        if index + 1 >= len(layers):
            return ""
        value = float(cka["cka"].sel(layer_a=layer, init_a=init, layer_b=layers[index + 1],
                                     init_b=init))
        return f"{value:.4f}"

    lines = [
        "# Which baseline? Measured on real tiles",
        "",
        f"{n_images} LC25000 lung tiles (seeded subset), efficientnet_lite0, 224 px; "
        "logistic-regression probe (C = 1), 5-fold CV, seed 0. Regenerate with "
        "`.venv/bin/python docs/baselines.py` (or `--store` on the worked example's store; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
        + (f"; extraction of {len(INITS)} inits took {extract_s:.0f} s" if extract_s == extract_s
           else "") + ").",
        "",
        "## Pooled RMS per layer (activation health)",
        "",
        "| layer | " + " | ".join(INITS) + " |",
        "|---|" + "---:|" * len(INITS),
    ]
    for layer in SHOWN:
        lines.append(f"| {layer} | " + " | ".join(f"{health[i][layer]['rms']:.2g}"
                                                   for i in INITS) + " |")
    lines += ["", "## Linear CKA between a block and the next one", "",
              "1.0000 means the next block did not change the representation.", "",
              "| layer -> next | random:0 | random:0+bn | pretrained |", "|---|---:|---:|---:|"]
    for layer in SHOWN[:-1]:
        lines.append(f"| {layer} | " + " | ".join(next_block_cka(i, layer) for i in
                                                   ("random:0", "random:0+bn", "pretrained"))
                     + " |")
    lines += ["", "## Probe accuracy per layer", "",
              "| layer | " + " | ".join(INITS) + " |", "|---|" + "---:|" * len(INITS)]
    for layer in SHOWN:
        lines.append(f"| {layer} | " + " | ".join(
            f"{float(accuracy.sel(layer=layer, init=i)):.3f}" for i in INITS) + " |")
    gain = {i: {layer: float(accuracy.sel(layer=layer, init="pretrained")
                             - accuracy.sel(layer=layer, init=i)) for layer in SHOWN}
            for i in INITS[1:]}
    lines += ["", "## Knowledge gain (pretrained minus baseline)", "",
              "| layer | " + " | ".join(INITS[1:]) + " |", "|---|" + "---:|" * 3]
    for layer in SHOWN:
        lines.append(f"| {layer} | " + " | ".join(f"{gain[i][layer]:+.3f}" for i in INITS[1:])
                     + " |")
    half = str(args.work / "float16.zarr")
    shutil.rmtree(half, ignore_errors=True)
    try:
        featstore.extract(str(tiles), half, inits=("random:0",), dtype="float16", device="cpu")
        float16 = "stored (no layer lost its digits)"
    except FeatstoreInputError as exc:
        float16 = f"refused: `{exc}`"
    lines += ["", "## `--dtype float16` with `random:0`", "", float16, ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
