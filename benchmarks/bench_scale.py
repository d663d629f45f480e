"""Scale: extraction memory and time vs the number of images; chunked probes at 200k rows.

Three measurements, each process doing only the measured work (peak RSS = its ``ru_maxrss``):

1. **Extraction**, 1k against 20k synthetic images (32 x 32 PNG files in an ImageFolder,
   3 classes, ``--image-size 32``, efficientnet_lite0, all 18 layers, init ``pretrained``):
   peak RSS of the whole process and seconds per image of the ``featstore.extract`` call. The 1k
   run is the baseline; the two sizes alternate.
2. **Chunked probes**, ``ridge:alpha=0.1,1,10,100`` and ``nearest-centroid`` x 5 folds on a
   one-layer store of synthetic features (1280 units, 2 inits, float32; written with
   ``FeatureStore.create`` + ``write_chunk``), at a small and at a large row count
   (>= 200k rows, 1.02 GB per init): peak RSS against the raw size of the data the sweep
   reads. Memory bounded by chunks means the peak does not follow the rows.
3. **Schedulers**: the same large sweep on the default threaded scheduler (the baseline) and on
   a ``dask.distributed.LocalCluster`` (``scheduler="local:2"``: 2 single-threaded worker
   processes), alternating; for the cluster, peak RSS of the client and of the largest worker.

Synthetic images and stores are cached under ``$FEATSTORE_BENCH_CACHE``
(default ``/tmp/featstore-bench-cache``).

    .venv/bin/python benchmarks/bench_scale.py            # 1k vs 20k images; 25k vs 200k rows
    .venv/bin/python benchmarks/bench_scale.py --quick    # 500 vs 3k images; 5k vs 40k rows
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    CACHE,
    LoadLog,
    md_table,
    median,
    peak_rss_mib,
    print_child_result,
    run_child,
    spread,
    synthetic_store,
    write_section,
)

N_CLASSES = 3
UNITS = 1280
INITS = ("pretrained", "random:0")
CLASSIFIERS = ["ridge:alpha=0.1,1,10,100", "nearest-centroid"]


# --------------------------------------------------------------------------- data

def synthetic_images(n_images: int, size: int = 32) -> Path:
    """An ImageFolder of ``n_images`` small PNG files (class-tinted noise), cached.

    Smaller sets are prefixes of larger ones: image ``i`` is the same file in every set.
    """
    import numpy as np
    from PIL import Image

    root = CACHE / f"png{size}-{n_images}"
    done = root / ".complete"
    if done.exists():
        return root
    tint = np.array([[60, 0, 0], [0, 60, 0], [0, 0, 60]], dtype=np.int16)
    for i in range(n_images):
        label = i % N_CLASSES
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 196, size=(size, size, 3), dtype=np.int16) + tint[label]
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:06d}.png")
    done.touch()
    return root


def probe_store(n_rows: int) -> str:
    """A complete one-layer synthetic store of ``n_rows`` x 1280 units x 2 inits, cached."""
    from featstore.errors import FeatstoreError
    from featstore.store import FeatureStore

    url = str(CACHE / f"synthetic-v2-{n_rows}x{UNITS}.zarr")
    try:
        if FeatureStore.open(url).is_complete():
            return url
    except FeatstoreError:
        pass
    shutil.rmtree(url, ignore_errors=True)
    print(f"writing {url} ...", flush=True)
    synthetic_store(url, n_rows, UNITS, INITS, n_classes=N_CLASSES)
    return url


# --------------------------------------------------------------------------- children

def child_extract(data: str, tmp: str) -> None:
    import torch  # noqa: F401  (featstore imports lazily: load the libraries before measuring)
    import torchvision  # noqa: F401
    import zarr  # noqa: F401

    import featstore

    store = f"{tmp}/extract.zarr"
    before = peak_rss_mib()  # the imports (torch, torchvision, ...)
    start = time.perf_counter()
    featstore.extract(data, store, model="efficientnet_lite0", inits=("pretrained",),
                      image_size=32, device="cpu")
    seconds = time.perf_counter() - start
    n = int(featstore.open_store(store).sizes["image"])
    print_child_result({"seconds": seconds, "n_images": n, "rss_mib": peak_rss_mib(),
                        "imports_rss_mib": before})


def child_probe(url: str, scheduler: str) -> None:
    import dask.array  # noqa: F401  (featstore imports lazily: load the libraries first)
    import distributed  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import xarray  # noqa: F401

    import featstore
    import featstore.sweep  # noqa: F401

    before = peak_rss_mib()
    start = time.perf_counter()
    results = featstore.probe(url, classifiers=CLASSIFIERS, folds=5, seed=0, force=True,
                              scheduler=None if scheduler == "threads" else scheduler)
    seconds = time.perf_counter() - start
    accuracy = results["score"].sel(metric="accuracy").mean("fold")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print_child_result({"seconds": seconds, "rss_mib": peak_rss_mib(), "imports_rss_mib": before,
                        "children_rss_mib": children, "accuracy": float(accuracy.mean())})


# --------------------------------------------------------------------------- parent

def extraction_section(small: int, large: int, repeats: int) -> str:
    data = synthetic_images(large)
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "subset"
        for i in range(small):  # the first `small` images of the large set, as symlinks
            folder = subset / f"class{i % N_CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:06d}.png").symlink_to(data / f"class{i % N_CLASSES}" / f"{i:06d}.png")
        runs: dict[int, list[dict[str, float]]] = {small: [], large: []}
        for rep in range(repeats):
            for n, path in ((small, subset), (large, data))[:: 1 if rep % 2 == 0 else -1]:
                out = Path(tmp) / f"out{n}"
                out.mkdir(exist_ok=True)
                result = run_child(["bench_scale.py", "--child", "extract", str(path), str(out)])
                shutil.rmtree(out, ignore_errors=True)
                print(f"extract {n} images: {result}", flush=True)
                runs[n].append(result)
    rss = {n: median([r["rss_mib"] for r in runs[n]]) for n in runs}
    secs = {n: [r["seconds"] for r in runs[n]] for n in runs}
    per = {n: [r["seconds"] / r["n_images"] * 1000 for r in runs[n]] for n in runs}
    slope = (median(secs[large]) - median(secs[small])) / (large - small)
    table = md_table(
        ["images", "peak RSS (MiB)", "of which imports (MiB)", "extract wall time (s)",
         "ms / image"],
        [[f"{n}{' (baseline)' if n == small else ''}", spread([r["rss_mib"] for r in runs[n]], 0),
          spread([r["imports_rss_mib"] for r in runs[n]], 0), spread(secs[n]), spread(per[n], 2)]
         for n in (small, large)])
    return f"""
Synthetic 32 x 32 PNG images (ImageFolder, 3 classes), `featstore.extract(DATA, STORE,
image_size=32, inits=("pretrained",))`, efficientnet_lite0, 18 layers, batch 32, chunks of 256
images; one fresh process per run, {repeats} repeat(s) alternating, median (min-max).

{table}

**Peak RSS {large} / {small} images = {rss[large] / rss[small]:.3f}
({(rss[large] / rss[small] - 1) * 100:+.1f} %)** (target: within 10 %).
Time per image {large} / {small} = {median(per[large]) / median(per[small]):.2f}; the marginal
cost between the two sizes is {slope * 1000:.2f} ms/image (the {small}-image run also pays the
fixed start-up: model builds, store creation; imports are not timed).
"""


def probe_section(small: int, large: int, repeats: int) -> str:
    urls = {small: probe_store(small), large: probe_store(large)}
    raw = {n: n * UNITS * 4 * len(INITS) / 2**20 for n in urls}
    threads: dict[int, list[dict[str, float]]] = {small: [], large: []}
    cluster: list[dict[str, float]] = []
    for rep in range(repeats):
        steps = [("threads", small), ("threads", large), ("local:2", large)]
        for scheduler, n in steps[:: 1 if rep % 2 == 0 else -1]:
            result = run_child(["bench_scale.py", "--child", "probe", urls[n], scheduler])
            print(f"probe {n} rows {scheduler}: {result}", flush=True)
            (threads[n] if scheduler == "threads" else cluster).append(result)
    rss = {n: median([r["rss_mib"] for r in threads[n]]) for n in threads}
    t_threads = [r["seconds"] for r in threads[large]]
    t_cluster = [r["seconds"] for r in cluster]
    acc_threads = median([r["accuracy"] for r in threads[large]])
    acc_cluster = median([r["accuracy"] for r in cluster])
    memory = md_table(
        ["rows", "raw data read (MiB, 2 inits)", "peak RSS (MiB)", "of which imports (MiB)",
         "peak RSS / raw", "sweep wall time (s)"],
        [[n, f"{raw[n]:.0f}", spread([r["rss_mib"] for r in threads[n]], 0),
          spread([r["imports_rss_mib"] for r in threads[n]], 0), f"{rss[n] / raw[n]:.2f}",
          spread([r["seconds"] for r in threads[n]])]
         for n in (small, large)])
    schedulers = md_table(
        ["scheduler", "wall time (s)", "peak RSS client (MiB)", "peak RSS largest worker (MiB)"],
        [["threads (default; baseline)", spread(t_threads),
          spread([r["rss_mib"] for r in threads[large]], 0), "-"],
         ["`local:2` (LocalCluster, 2 processes x 1 thread)", spread(t_cluster),
          spread([r["rss_mib"] for r in cluster], 0),
          spread([r["children_rss_mib"] for r in cluster], 0)]])
    return f"""
One layer of {UNITS} units, 2 inits, float32 synthetic features (non-negative, class signal),
chunks of 256 rows, written by `FeatureStore.write_chunk`. Sweep:
`featstore.probe(STORE, classifiers={CLASSIFIERS}, folds=5, force=True)`;
ridge and nearest centroid take featstore's chunked sufficient-statistics path. One fresh process
per run, {repeats} repeat(s) alternating, median (min-max).

{memory}

**Peak RSS {large} / {small} rows = {rss[large] / rss[small]:.2f}** for {large / small:.0f}x the
rows; at {large} rows the peak is {rss[large] / raw[large] * 100:.0f} % of the raw data
({raw[large]:.0f} MiB). Mean accuracy over classifiers, inits and folds: {acc_threads:.3f}.

Schedulers, the same {large}-row sweep:

{schedulers}

**LocalCluster / threads wall time = {median(t_cluster) / median(t_threads):.2f}**; identical
mean accuracy: {'yes' if abs(acc_cluster - acc_threads) < 1e-12 else 'NO'}.
"""


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        child_extract(*rest) if kind == "extract" else child_probe(*rest)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="500 vs 3k images, 5k vs 40k rows, 1 repeat; writes RESULTS-quick.md")
    parser.add_argument("--images", type=int, nargs=2, default=(1000, 20000))
    parser.add_argument("--rows", type=int, nargs=2, default=(25_000, 200_000))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", choices=("extract", "probe"), help="run one part")
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS*.md")
    args = parser.parse_args()
    load = LoadLog()
    if args.quick:
        images, rows, repeats = (500, 3000), (5000, 40_000), 1
    else:
        images, rows, repeats = tuple(args.images), tuple(args.rows), args.repeats
    if args.only in (None, "extract"):
        body = extraction_section(images[0], images[1], repeats)
        print(body, flush=True)
        if not args.no_write:
            print("wrote", write_section("Scale: extraction memory and time", body,
                                         quick=args.quick, load=load))
    if args.only in (None, "probe"):
        body = probe_section(rows[0], rows[1], repeats)
        print(body, flush=True)
        if not args.no_write:
            print("wrote", write_section("Scale: chunked probes and schedulers", body,
                                         quick=args.quick, load=load))


if __name__ == "__main__":
    main()
