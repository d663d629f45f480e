"""Extraction on a GPU: `featstore extract` images/s against the bare GPU forward pass.

Needs a CUDA device. Without one it says so and exits with status 0 (touching RESULTS.md only to
record, once, that the section has not been measured yet).

Runs, alternating, medians of repeats (efficientnet_lite0, 18 layers, 224 px):

* **bare loop** (baseline): the same decode + preprocess (featstore's dataset class), the same
  DataLoader (batch size, ``num_workers``, ``pin_memory=True``), ``non_blocking`` copies, the model
  in ``channels_last``, the forward pass to the logits under the same autocast setting; logits
  discarded; one ``torch.cuda.synchronize()`` at the end.
* **featstore**: ``featstore.extract(..., device="cuda", workers=W, autocast=...)`` -- every layer
  pooled in the forward pass, pooled features copied to the host per batch, chunks written to
  Zarr by the background writer thread.

Each with autocast bf16 and in float32. Target: featstore >= 0.90 of the bare throughput.
A second table isolates the compute: the same batch already on the GPU, ``model(batch)`` against
featstore's ``PooledExtractor(batch)`` (hooks + pooling + device-to-host copy), no data loading.

Data: the shared LC25000 tiles when present (``--data`` or ``../shared/data/lc25000_lung``),
else synthetic 224 px JPEG tiles generated in a temporary folder (same decode path).

    .venv/bin/python benchmarks/bench_extract_gpu.py            # 3000 images, 3 repeats
    .venv/bin/python benchmarks/bench_extract_gpu.py --quick    # 600 images, 1 repeat
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from _common import (
    RESULTS,
    SHARED_TILES,
    LoadLog,
    md_table,
    median,
    spread,
    tile_subset,
    write_section,
)

MODEL = "efficientnet_lite0"
INITS = ("pretrained", "random:0")
SECTION = "Extraction on GPU"


def no_cuda(args: argparse.Namespace) -> None:
    message = ("bench_extract_gpu.py: no CUDA device here (torch.cuda.is_available() is False); "
               "run it on a machine with an NVIDIA GPU. Nothing was measured.")
    print(message, file=sys.stderr)
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if not args.no_write and not args.quick and f"## {SECTION}\n" not in text:
        write_section(SECTION, "**Not run**: the machine that ran the other benchmarks has no "
                               "CUDA device, and no GPU machine was available to this run. "
                               "`.venv/bin/python benchmarks/bench_extract_gpu.py` on a CUDA "
                               "machine replaces this note with the measurements.")


def synthetic_tiles(dest: Path, n_images: int) -> Path:
    """JPEG tiles of 224 px with texture (decode cost like real tiles), 3 classes."""
    import numpy as np
    from PIL import Image

    for i in range(n_images):
        folder = dest / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        base = rng.integers(0, 255, size=(28, 28, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((224, 224), Image.Resampling.BICUBIC)
        image.save(folder / f"{i:06d}.jpeg", quality=90)
    return dest


def bare_loop(dataset: object, batch_size: int, workers: int, autocast: bool) -> None:
    from featstore.models import build_model, parse_init

    for init in INITS:
        model, _ = build_model(MODEL, parse_init(init))
        model = model.to("cuda").to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        loader: DataLoader[Any] = DataLoader(
            dataset, batch_size=batch_size, num_workers=workers, pin_memory=True)  # type: ignore[arg-type]
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else nullcontext()
        with torch.inference_mode(), amp:
            for batch, _, _ in loader:
                batch = batch.to("cuda", non_blocking=True).contiguous(
                    memory_format=torch.channels_last)
                model(batch)
        torch.cuda.synchronize()


def featstore_run(data: Path, store: Path, batch_size: int, workers: int, autocast: bool) -> None:
    import featstore

    shutil.rmtree(store, ignore_errors=True)
    featstore.extract(str(data), str(store), model=MODEL, inits=INITS, device="cuda",
                      batch_size=batch_size, workers=workers, autocast=autocast,
                      chunk_images=batch_size * max(1, 256 // batch_size))
    torch.cuda.synchronize()


def compute_only(batch_size: int, steps: int) -> list[list[str]]:
    """The same on-GPU batch: model(batch) vs PooledExtractor(batch), fp32 and bf16."""
    from featstore.activations import PooledExtractor
    from featstore.models import build_model, parse_init, parse_layers

    model, _ = build_model(MODEL, parse_init("pretrained"))
    model = model.to("cuda").to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    layers = parse_layers(MODEL, model, "auto")
    extractor = PooledExtractor(model, layers, "avg")
    batch = torch.randn(batch_size, 3, 224, 224, device="cuda").contiguous(
        memory_format=torch.channels_last)
    rows = []
    for autocast in (False, True):
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else nullcontext()

        def bare(amp: object = amp) -> None:
            with torch.inference_mode(), amp:  # type: ignore[attr-defined]
                for _ in range(steps):
                    model(batch)
            torch.cuda.synchronize()

        def ours(amp: object = amp) -> None:
            with amp:  # type: ignore[attr-defined]
                for _ in range(steps):
                    extractor(batch)  # returns host NumPy arrays: syncs every batch
            torch.cuda.synchronize()

        bare()  # warm-up (cuDNN autotuning, allocator)
        ours()
        t_bare: list[float] = []
        t_ours: list[float] = []
        for rep in range(5):
            for times, fn in ((t_bare, bare), (t_ours, ours))[:: 1 if rep % 2 == 0 else -1]:
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        n = batch_size * steps
        rows.append(["bf16 autocast" if autocast else "float32", f"{n / median(t_bare):.0f}",
                     f"{n / median(t_ours):.0f}", f"**{median(t_bare) / median(t_ours):.2f}**"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="600 images, 1 repeat; writes RESULTS-quick.md")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--data", type=Path, help="ImageFolder of tiles (default: shared tiles)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS*.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        no_cuda(args)
        return
    from featstore.data import open_source
    from featstore.extraction import ImageDataset
    from featstore.models import default_transform

    load = LoadLog()
    n_images, repeats = (600, 1) if args.quick else (args.images, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is not None:
            data = args.data
        elif SHARED_TILES.exists():
            data = tile_subset(Path(tmp) / "tiles", n_images // 3)
        else:
            data = synthetic_tiles(Path(tmp) / "tiles", n_images)
        source = open_source(data)
        dataset = ImageDataset(source, default_transform(MODEL))
        store = Path(tmp) / "gpu.zarr"
        # warm-up: CUDA context, cuDNN, worker start-up, page cache of the images
        bare_loop(dataset, args.batch_size, args.workers, True)
        times: dict[tuple[str, bool], list[float]] = {}
        for rep in range(repeats):
            steps = [(kind, amp) for amp in (True, False) for kind in ("bare", "featstore")]
            for kind, amp in steps if rep % 2 == 0 else steps[::-1]:
                start = time.perf_counter()
                if kind == "bare":
                    bare_loop(dataset, args.batch_size, args.workers, amp)
                else:
                    featstore_run(data, store, args.batch_size, args.workers, amp)
                times.setdefault((kind, amp), []).append(time.perf_counter() - start)
                print(f"repeat {rep + 1}: {kind} autocast={amp}: {times[(kind, amp)][-1]:.1f} s",
                      flush=True)
        compute_rows = compute_only(args.batch_size, steps=20 if args.quick else 50)
    total = len(source) * len(INITS)
    lines: list[list[str]] = []
    for amp in (True, False):
        bare, ours = times[("bare", amp)], times[("featstore", amp)]
        label = "bf16 autocast" if amp else "float32"
        lines.append([label, spread(bare), f"{total / median(bare):.0f}", spread(ours),
                      f"{total / median(ours):.0f}", f"**{median(bare) / median(ours):.3f}**"])
    origin = ("given" if args.data else "LC25000 tiles" if SHARED_TILES.exists()
              else "synthetic 224 px JPEG tiles")
    header = ["precision", "bare loop (s)", "bare images/s", "featstore extract (s)",
              "featstore images/s", "featstore / bare throughput"]
    compute_header = ["precision", "`model(batch)` images/s",
                      "`PooledExtractor(batch)` images/s (18 hooks, pooled, to host)", "ratio"]
    body = f"""
{MODEL}, 18 layers, inits {', '.join(INITS)}, {len(source)} images ({origin}), 224 px, batch
{args.batch_size}, DataLoader workers {args.workers}, pinned memory + non-blocking copies,
channels_last; {repeats} repeat(s) alternating, median (min-max) seconds for {total} image passes.

{md_table(header, lines)}

Target: featstore / bare >= 0.90.

Compute only (one batch of {args.batch_size} already on the GPU, no data loading):

{md_table(compute_header, compute_rows)}
"""
    print(body)
    if not args.no_write:
        print("wrote", write_section(SECTION, body, quick=args.quick, load=load))


if __name__ == "__main__":
    main()
