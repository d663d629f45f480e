"""Extraction overhead: `featstore extract` against a bare forward loop, and against one pass per layer.

Baseline (the "bare loop"): the same images, the same decode + preprocess (featstore's dataset
class), the same DataLoader batch size and worker count, the same models and threads; the forward
pass runs to the logits, which are discarded. featstore runs the same forward passes with 18 pooled
hooks and writes every chunk to Zarr (compressed, checksummed, fsync'ed, progress markers).

The per-layer alternative (tools that take one layer per call) runs one full forward pass per layer;
it is timed on a smaller subset and reported as a ratio.

    .venv/bin/python benchmarks/bench_extract.py            # 1002 real tiles, 3 repeats
    .venv/bin/python benchmarks/bench_extract.py --quick    # 99 tiles, 1 repeat
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import featstore
from featstore.activations import PooledExtractor
from featstore.data import open_source
from featstore.extraction import _ImageDataset
from featstore.models import build_model, default_transform, parse_init, parse_layers

from _common import median, timed, tile_subset, write_section

MODEL = "efficientnet_lite0"
INITS = ("pretrained", "random:0")


def bare_loop(data: Path, batch_size: int, workers: int) -> None:
    """Forward every image through each init's model to the logits; keep nothing."""
    source = open_source(data)
    dataset = _ImageDataset(source, default_transform(MODEL))
    for init in INITS:
        model, _ = build_model(MODEL, parse_init(init))
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
        with torch.inference_mode():
            for batch, _, _ in loader:
                model(batch)


def featstore_extract(data: Path, store: Path, batch_size: int, workers: int) -> None:
    shutil.rmtree(store, ignore_errors=True)
    featstore.extract(str(data), str(store), model=MODEL, inits=INITS, device="cpu",
                      batch_size=batch_size, workers=workers)


def per_layer_ratio(data: Path, batch_size: int) -> tuple[float, float, int]:
    """Seconds for one pass per layer vs one pass for all layers, on the same images."""
    source = open_source(data)
    dataset = _ImageDataset(source, default_transform(MODEL))
    model, _ = build_model(MODEL, parse_init("pretrained"))
    layers = parse_layers(MODEL, model, "auto")
    batches = [b for b, _, _ in DataLoader(dataset, batch_size=batch_size)]

    def one_pass() -> None:
        extractor = PooledExtractor(model, layers, "avg")
        for batch in batches:
            extractor(batch)

    modules = dict(model.named_modules())

    def pass_per_layer() -> None:
        for layer in layers:  # the full network per layer, as one-layer-per-call tools run it
            kept: list[torch.Tensor] = []
            handle = modules[layer].register_forward_hook(
                lambda _m, _i, out: kept.append(out.mean(dim=(2, 3))))
            with torch.inference_mode():
                for batch in batches:
                    model(batch)
            handle.remove()

    return timed(pass_per_layer), timed(one_pass), len(layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="99 tiles, 1 repeat")
    parser.add_argument("--per-class", type=int, default=334, help="tiles per class (3 classes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()
    per_class, repeats = (33, 1) if args.quick else (args.per_class, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        data = tile_subset(Path(tmp) / "tiles", per_class)
        n_images = len(open_source(data))
        store = Path(tmp) / "bench.zarr"
        bare, ours = [], []
        for _ in range(repeats):  # alternate so drifts in machine load hit both alike
            bare.append(timed(lambda: bare_loop(data, args.batch_size, args.workers)))
            ours.append(timed(lambda: featstore_extract(data, store, args.batch_size, args.workers)))
        ds = featstore.open_store(str(store))
        n_layers = len(ds.attrs["featstore"]["layers"])
        sub = tile_subset(Path(tmp) / "sub", max(4, per_class // 10))
        n_sub = len(open_source(sub))
        per_layer, one_pass, n_l = per_layer_ratio(sub, args.batch_size)
    ratio = median(ours) / median(bare)
    images_total = n_images * len(INITS)
    body = f"""
{MODEL}, {n_layers} layers (auto), inits {', '.join(INITS)}, {n_images} real tiles (LC25000 lung,
224 px), batch {args.batch_size}, workers {args.workers}, CPU, {repeats} repeat(s), medians.

| run | wall time (s) | images/s |
| --- | ---: | ---: |
| bare forward loop (baseline) | {median(bare):.1f} | {images_total / median(bare):.1f} |
| `featstore extract` (all layers, Zarr writes) | {median(ours):.1f} | {images_total / median(ours):.1f} |

**extract / bare = {ratio:.3f}** (target <= 1.10).

One forward pass per layer ({n_l} passes, as one-layer-per-call tools do) vs featstore's single pass
on a {n_sub}-tile subset: {per_layer:.1f} s vs {one_pass:.1f} s =
**{per_layer / one_pass:.1f}x faster** with the single pass (ideal: {n_l}x).
"""
    print(body)
    if not args.no_write:
        write_section("Extraction overhead (CPU)", body)


if __name__ == "__main__":
    main()
