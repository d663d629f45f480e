"""Extraction beyond the eager loop: dask workers, torch.compile, channels-last, worker memory.

Three sections of RESULTS.md, each a ratio against a baseline measured in the same run:

1. **Scale-out** (``Scale-out extraction``): ``featstore.extract`` of real LC25000 tiles
   (efficientnet_lite0, 18 layers, ``pretrained``, 224 px) in one process with 2 torch threads
   (the baseline) against ``scheduler="local:2"`` (a LocalCluster of 2 worker processes, one
   thread each, every (init, chunk) a dask task). Every run in a fresh process, the two
   alternating; the LocalCluster's start-up is timed on its own as well.
2. **Compile and memory format** (``Compiled and channels-last extraction``): the pooled
   forward pass of efficientnet_lite0 (18 layers) on batches of 32 real tiles, eager with
   contiguous tensors (the baseline), eager channels-last, and ``--compile`` (the truncated
   network through ``torch.compile``); the compile time, the steady-state time per image and
   the break-even number of images (compile time / time saved per image); the largest relative
   difference of the compiled features from eager.
3. **Worker memory** (``Distributed extraction: worker memory``): peak RSS of each of two dask
   workers after extracting 1k and 50k synthetic 32 px images (efficientnet_lite0 at 32 px),
   the 1k run being the baseline: memory bounded by chunks means the same peak.

    .venv/bin/python benchmarks/bench_scaleout.py            # 600 tiles, 3 repeats; 1k vs 50k
    .venv/bin/python benchmarks/bench_scaleout.py --quick    # 150 tiles, 2 repeats; 500 vs 5k
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    CACHE,
    LoadLog,
    md_table,
    median,
    print_child_result,
    run_child,
    spread,
    tile_subset,
    write_section,
)

EXTRACT: dict[str, Any] = {"model": "efficientnet_lite0", "inits": ("pretrained",), "device": "cpu",
           "batch_size": 32, "chunk_images": 64}


# --------------------------------------------------------------------------- children

def child_extract(data: str, scheduler: str | None) -> dict[str, Any]:
    """One timed ``featstore.extract`` into a fresh temporary store."""
    import torch

    import featstore

    torch.set_num_threads(2)
    store = Path(tempfile.mkdtemp(prefix="scaleout-")) / "s.zarr"
    start = time.perf_counter()
    featstore.extract(data, str(store), scheduler=scheduler, **EXTRACT)
    seconds = time.perf_counter() - start
    shutil.rmtree(store.parent, ignore_errors=True)
    return {"seconds": seconds}


def child_cluster_start() -> dict[str, Any]:
    """Start and stop the LocalCluster that ``local:2`` uses, nothing else."""
    from featstore.scheduler import Runner

    start = time.perf_counter()
    with Runner("local", 2, worker_threads=1) as runner:
        runner.client.wait_for_workers(2)
    return {"seconds": time.perf_counter() - start}


def child_compile(data: str, repeats: int) -> dict[str, Any]:
    """Per-batch times of eager (contiguous, channels-last) and compiled pooled forward passes."""
    import numpy as np
    import torch
    from PIL import Image

    from featstore.activations import PooledExtractor
    from featstore.compiled import CompiledPooledExtractor
    from featstore.data import preprocess
    from featstore.models import auto_layers, build_model, default_transform, parse_init

    torch.set_num_threads(2)
    t = default_transform("efficientnet_lite0")
    files = sorted(Path(data).rglob("*.jp*g"))[:32]
    batch = torch.stack([preprocess(Image.open(f).convert("RGB"), t.size, t.mean, t.std,
                                    t.interpolation) for f in files])
    model, _ = build_model("efficientnet_lite0", parse_init("pretrained"))
    layers = auto_layers("efficientnet_lite0", model)
    eager = PooledExtractor(model, layers, "avg")

    def per_image(fn: Any, x: torch.Tensor) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - start) / x.shape[0])
        return float(statistics.median(times))

    fn_eager = per_image(eager, batch)
    reference = eager(batch)
    start = time.perf_counter()
    compiled = CompiledPooledExtractor(eager)
    first = compiled(batch)
    compile_s = time.perf_counter() - start
    fn_compiled = per_image(compiled, batch)
    error = max(float(np.abs(first[n] - reference[n]).max() / max(np.abs(reference[n]).max(),
                                                                  1e-12)) for n in layers)
    model_cl = model.to(memory_format=torch.channels_last)
    eager_cl = PooledExtractor(model_cl, layers, "avg")
    batch_cl = batch.contiguous(memory_format=torch.channels_last)
    fn_channels_last = per_image(eager_cl, batch_cl)
    fn_eager_again = per_image(PooledExtractor(model.to(memory_format=torch.contiguous_format),
                                               layers, "avg"), batch)
    cl_ref = eager_cl(batch_cl)
    cl_error = max(float(np.abs(cl_ref[n] - reference[n]).max() / max(np.abs(reference[n]).max(),
                                                                     1e-12)) for n in layers)
    return {"eager": (fn_eager + fn_eager_again) / 2, "compiled": fn_compiled,
            "channels_last": fn_channels_last, "compile_s": compile_s - fn_compiled * 32,
            "error": error, "cl_error": cl_error}


def child_worker_memory(data: str, n_images: int) -> dict[str, Any]:
    """Extract on a 2-worker LocalCluster and report each worker's peak RSS (MiB)."""
    from distributed import Client, LocalCluster

    import featstore

    store = Path(tempfile.mkdtemp(prefix="workermem-")) / "s.zarr"
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      env={"OMP_NUM_THREADS": "1"}) as cluster, Client(cluster) as client:
        start = time.perf_counter()
        featstore.extract(data, str(store), model="efficientnet_lite0", inits=("pretrained",),
                          image_size=32, device="cpu", batch_size=64, chunk_images=256,
                          scheduler=cluster.scheduler_address)
        seconds = time.perf_counter() - start
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    shutil.rmtree(store.parent, ignore_errors=True)
    return {"seconds": seconds, "peaks": sorted(peaks.values()), "images": n_images}


# --------------------------------------------------------------------------- data

def synthetic_images(n_images: int) -> Path:
    """An ImageFolder of ``n_images`` symlinks to 300 distinct 32 px PNG files (cached)."""
    import numpy as np
    from PIL import Image

    pool = CACHE / "scaleout-png32"
    pool.mkdir(parents=True, exist_ok=True)
    for i in range(300):
        file = pool / f"{i:03d}.png"
        if not file.exists():
            rng = np.random.default_rng(i)
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(file)
    root = CACHE / f"scaleout-links-{n_images}"
    done = root / ".complete"
    if not done.exists():
        for i in range(n_images):
            folder = root / f"class{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            link = folder / f"{i:06d}.png"
            if not link.exists():
                link.symlink_to(pool / f"{i % 300:03d}.png")
        done.touch()
    return root


# --------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--arg", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        children: dict[str, Callable[..., dict[str, Any]]] = {
            "extract": child_extract, "cluster": child_cluster_start,
            "compile": child_compile, "memory": child_worker_memory}
        fn = children[args.child]
        values: list[Any] = [json.loads(a) for a in args.arg]
        print_child_result(fn(*values))
        return
    per_class = 50 if args.quick else 200
    repeats = 2 if args.quick else 3
    sizes = (500, 5000) if args.quick else (1000, 50000)
    load = LoadLog()
    tiles = str(tile_subset(CACHE / "tiles" / f"lc25000-{per_class}", per_class))

    def child(name: str, *values: Any) -> dict[str, Any]:
        argv = [str(Path(__file__).resolve()), "--child", name]
        for value in values:
            argv += ["--arg", json.dumps(value)]
        return run_child(argv, timeout=3600)

    # 1. scale-out
    single, cluster, ratios = [], [], []
    for _ in range(repeats):
        a = child("extract", tiles, None)["seconds"]
        b = child("extract", tiles, "local:2")["seconds"]
        single.append(a)
        cluster.append(b)
        ratios.append(b / a)
    startup = [child("cluster")["seconds"] for _ in range(repeats)]
    n = 3 * per_class
    body1 = md_table(
        ["run", "seconds", "images/s", "ratio to one process"],
        [["one process, 2 torch threads (baseline)", spread(single), f"{n / median(single):.1f}",
          "1.00"],
         ["local:2 (2 workers x 1 thread)", spread(cluster), f"{n / median(cluster):.1f}",
          f"{median(ratios):.2f}"],
         ["of which LocalCluster start + stop", spread(startup), "", ""]])
    body1 = (f"{n} real LC25000 tiles, efficientnet_lite0 (18 layers), `pretrained`, 224 px, "
             f"batch 32, chunks of 64 images; {repeats} alternating repeats, each run in a "
             f"fresh process; ratio = median of per-repeat ratios (below 1: faster).\n\n"
             + body1 + "\n\nWhat limits it: both runs use the same two cores for the same "
             "forward passes. The workers add the LocalCluster's start, one model build per "
             "worker, a store open and a DataLoader per (init, chunk) task, and they run each "
             "batch on one thread, where the single process splits every convolution over two. "
             "So on one 2-core machine the scheduler can at best match one process; it is "
             "for more cores than one process uses well, several GPUs (one worker each) and "
             "several machines.")
    print(body1)

    # 2. compile and memory format
    runs = [child("compile", tiles, 5) for _ in range(repeats)]
    eager = median([r["eager"] for r in runs])
    compiled = median([r["compiled"] for r in runs])
    channels_last = median([r["channels_last"] for r in runs])
    compile_s = median([r["compile_s"] for r in runs])
    saved = eager - compiled
    break_even = f"{compile_s / saved:,.0f}" if saved > 0 else "never (not faster)"
    body2 = md_table(
        ["forward pass (18 layers pooled)", "ms/image", "ratio to eager"],
        [["eager, contiguous (baseline)", f"{1000 * eager:.1f}", "1.00"],
         ["eager, channels-last", f"{1000 * channels_last:.1f}", f"{channels_last / eager:.2f}"],
         ["--compile (steady state)", f"{1000 * compiled:.1f}", f"{compiled / eager:.2f}"]])
    body2 = (f"Batches of 32 real tiles, 224 px, 2 torch threads; medians of {repeats} fresh "
             f"processes x 5 batches. Compilation: {compile_s:.0f} s (median); break-even: "
             f"{break_even} images per model and input shape. Largest relative difference "
             f"from eager: compiled {max(r['error'] for r in runs):.1e}, channels-last "
             f"{max(r['cl_error'] for r in runs):.1e}.\n\n" + body2)
    print(body2)

    # 3. worker memory
    memory = {size: child("memory", str(synthetic_images(size)), size) for size in sizes}
    small, large = sizes
    rows = [[f"{size:,}", f"{memory[size]['seconds']:.0f}",
             " / ".join(f"{p:.0f}" for p in memory[size]["peaks"])] for size in sizes]
    ratio = max(memory[large]["peaks"]) / max(memory[small]["peaks"])
    body3 = (f"Synthetic 32 px images (an ImageFolder of links to 300 PNG files), "
             f"efficientnet_lite0 at "
             f"32 px, `pretrained`, chunks of 256 images, 2 dask workers x 1 thread; peak RSS "
             f"of each worker process (MiB). Largest worker peak {large:,} / {small:,} images: "
             f"**{ratio:.2f}**.\n\n"
             + md_table(["images", "seconds", "worker peak RSS, MiB"], rows))
    print(body3)
    if not args.no_write:
        write_section("Scale-out extraction", body1, quick=args.quick, load=load)
        write_section("Compiled and channels-last extraction", body2, quick=args.quick,
                      load=load)
        path = write_section("Distributed extraction: worker memory", body3, quick=args.quick,
                             load=load)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
