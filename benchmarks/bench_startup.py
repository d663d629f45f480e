"""Extraction start-up and preprocessing: featstore without torchvision vs with it.

An extraction process (the CLI, or a dask worker before its first chunk) imports featstore,
builds the model and preprocesses images. featstore resizes with Pillow directly and imports
torchvision only for torchvision's own models; before, every such process imported torchvision.

1. Start-up. Baseline: a fresh Python process that imports torchvision, then does what an
   efficientnet_lite0 extraction process does before its first batch (import
   ``featstore.extraction``, build the model, preprocess one real tile, one forward pass);
   featstore: the same without the torchvision import. The two alternate, each in its own
   process; the clock is the parent's, from process start to exit.
2. Preprocessing per image. Baseline: torchvision's functional resize, to-tensor and normalize
   (featstore's earlier ``preprocess``); featstore: ``featstore.data.preprocess``. Same decoded
   real tiles, same 224 px output, alternating; outputs checked equal bit for bit.

    .venv/bin/python benchmarks/bench_startup.py            # 9 start-ups each, 300 tiles
    .venv/bin/python benchmarks/bench_startup.py --quick    # 3 start-ups each, 60 tiles
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from _common import LoadLog, md_table, median, spread, tile_subset, write_section
from featstore.data import decode_image, preprocess

MODEL = "efficientnet_lite0"

_CHILD = """
import sys
if sys.argv[1] == "with":
    import torchvision  # noqa: F401
import torch
import featstore.extraction  # noqa: F401
from featstore.data import decode_image, preprocess
from featstore.models import build_model, default_transform, parse_init
model, _ = build_model({model!r}, parse_init("random:0"))
t = default_transform({model!r})
x = preprocess(decode_image(sys.argv[2]), t.size, t.mean, t.std, t.interpolation)
with torch.no_grad():
    model.eval()(x[None])
assert ("torchvision" in sys.modules) == (sys.argv[1] == "with")
"""


def start_up(variant: str, tile: Path) -> float:
    """Seconds from the start of a fresh process to its exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CHILD.format(model=MODEL), variant, str(tile)],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - start


def torchvision_preprocess(image: Image.Image, size: int, mean: tuple[float, ...],
                           std: tuple[float, ...]) -> torch.Tensor:
    """featstore's earlier preprocess (torchvision's functional API, no centre crop)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    resized = TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR,
                        antialias=True)
    tensor = TF.pil_to_tensor(resized).to(torch.float32).div_(255.0)
    return TF.normalize(tensor, list(mean), list(std))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 start-ups each, 60 tiles")
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS*.md")
    args = parser.parse_args()
    load = LoadLog()
    starts, per_class = (3, 20) if args.quick else (9, 100)
    with tempfile.TemporaryDirectory() as work:
        tiles = sorted(tile_subset(Path(work) / "tiles", per_class).rglob("*.jpeg"))
        times: dict[str, list[float]] = {"with": [], "without": []}
        for rep in range(starts):
            for variant in ("with", "without") if rep % 2 == 0 else ("without", "with"):
                times[variant].append(start_up(variant, tiles[0]))
            print(f"start-up {rep + 1}/{starts}: with torchvision {times['with'][-1]:.2f} s, "
                  f"without {times['without'][-1]:.2f} s", flush=True)
        images = [decode_image(str(t)) for t in tiles]
        size, mean, std = 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        pre: dict[str, list[float]] = {"torchvision": [], "featstore": []}
        torchvision_preprocess(images[0], size, mean, std)  # its import is not per-image work
        for rep in range(3):
            order = ("torchvision", "featstore") if rep % 2 == 0 else ("featstore", "torchvision")
            for which in order:
                fn = torchvision_preprocess if which == "torchvision" else preprocess
                start = time.perf_counter()
                for image in images:
                    fn(image, size, mean, std)
                pre[which].append((time.perf_counter() - start) / len(images) * 1e3)
        equal = all(torch.equal(preprocess(i, size, mean, std),
                                torchvision_preprocess(i, size, mean, std)) for i in images)
    paired = [w / o for w, o in zip(times["without"], times["with"], strict=True)]
    startup = md_table(["process", "seconds from start to exit"],
                       [["imports torchvision first (baseline: every extraction process before)",
                         spread(times["with"], 2)],
                        ["featstore today (torchvision not imported)",
                         spread(times["without"], 2)]])
    per_image = md_table(["preprocess", "ms per image"],
                         [["torchvision functional resize / to-tensor / normalize (baseline)",
                           spread(pre["torchvision"], 3)],
                          ["`featstore.data.preprocess` (Pillow)", spread(pre["featstore"], 3)]])
    body = f"""
A process that extracts with {MODEL} (the CLI, a dask worker before its first chunk): import
featstore.extraction, build the model, preprocess one real LC25000 tile, one forward pass; with
and without importing torchvision first; {starts} start-ups each, alternating, each a fresh
process (1 thread); median (min-max).

{startup}

**without / with torchvision = {median(paired):.2f}** (median of the paired ratios; min
{min(paired):.2f}, max {max(paired):.2f}): {median(times['with']) - median(times['without']):.2f} s
less per process.

Preprocessing {len(images)} decoded real tiles to 224 px, 3 alternating passes, median
(min-max) ms per image; outputs equal bit for bit: {'yes' if equal else 'NO'}.

{per_image}

**featstore / torchvision = {median(pre['featstore']) / median(pre['torchvision']):.2f}** per
image.
"""
    print(body)
    if not args.no_write:
        print("wrote", write_section("Extraction start-up and preprocessing (CPU)", body,
                                     quick=args.quick, load=load))


if __name__ == "__main__":
    main()
