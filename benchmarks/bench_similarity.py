"""Similarity and transferability: all-pairs linear CKA and LogME per layer against one logreg
probe sweep on the same store, and their peak memory at 1k vs 20k images.

1. **Timing** on the real LC25000 lung tiles (3 x 1000 JPEG tiles) extracted by featstore at
   ``--image-size 64`` with efficientnet_lite0, all 18 layers, inits ``pretrained``,
   ``random:0``, ``random:1`` (54 variables, 9360 units in all; cached in
   ``$FEATSTORE_BENCH_CACHE``). Baseline: one probe sweep
   ``featstore.probe(store, classifiers=["logreg"], folds=5, force=True)`` (54 blocks x 5 folds).
   Measured: ``featstore.cka(store)`` (every pair of the 54 variables: 1485 pairs, the
   diagonal included), ``featstore.transferability(store, estimators=["logme"])`` (LogME for
   every layer and init) and both estimators together. The runs alternate; the figure is the
   median over repeats of the paired ratio probe time / estimator time (the issue's target:
   at least 10x). Also printed: the Spearman rank correlation across layers between each
   estimator and the sweep's accuracy, per init.
2. **Memory**: peak RSS (``VmHWM``) of a fresh process running ``featstore.cka`` and of one
   running ``featstore.transferability`` on a synthetic store of 1k and of 20k images with the
   same 18 layer widths and 3 inits (``_common.synthetic_rows`` features written with
   ``FeatureStore.create`` + ``write_chunk``); the 1k run is the baseline. Memory bounded by
   units^2 means the ratio stays near 1 while the data read grows 20x.

The script prints a Markdown section (command, machine, date, load, figures); it writes
nothing else.

    .venv/bin/python benchmarks/bench_similarity.py            # 3 repeats; 1k vs 20k images
    .venv/bin/python benchmarks/bench_similarity.py --quick    # 1 repeat; 1k vs 4k images
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    CACHE,
    LoadLog,
    md_table,
    median,
    peak_rss_mib,
    print_child_result,
    real_feature_store,
    run_child,
    spread,
    synthetic_rows,
    write_section,
)

INITS = ("pretrained", "random:0", "random:1")
#: efficientnet_lite0's 18 auto layers and their widths (featstore layers efficientnet_lite0)
WIDTHS = {"stem": 32, "blocks.0": 16, "blocks.1": 24, "blocks.2": 24, "blocks.3": 40,
          "blocks.4": 40, "blocks.5": 80, "blocks.6": 80, "blocks.7": 80, "blocks.8": 112,
          "blocks.9": 112, "blocks.10": 112, "blocks.11": 192, "blocks.12": 192,
          "blocks.13": 192, "blocks.14": 192, "blocks.15": 320, "head": 1280}


# --------------------------------------------------------------------------- data

def synthetic_layers_store(n_images: int, chunk_images: int = 256, n_classes: int = 3) -> str:
    """A store of synthetic rows with efficientnet_lite0's layer widths and 3 inits, cached."""
    import numpy as np

    from featstore.store import FeatureStore, LayerSpec, StoreLayout

    path = CACHE / f"similarity-synthetic-{n_images}.zarr"
    done = path.with_suffix(".complete")
    if done.exists():
        return str(path)
    labels = np.arange(n_images) % n_classes
    layout = StoreLayout(
        model="synthetic",
        layers=tuple(LayerSpec(name, units, (units, 1, 1)) for name, units in WIDTHS.items()),
        transform={"size": 0, "interpolation": "none", "mean": [0, 0, 0], "std": [1, 1, 1]},
        pool="avg", dtype="float32", chunk_images=chunk_images,
        classes=tuple(f"class{k}" for k in range(n_classes)),
        paths=tuple(f"synthetic/{i:07d}.png" for i in range(n_images)),
        labels=tuple(int(v) for v in labels), splits=None,
        data={"kind": "synthetic", "fingerprint": f"similarity-{n_images}"},
    )
    store = FeatureStore.create(str(path), layout, {"benchmark": "synthetic"},
                                [{"name": name} for name in INITS])
    for i in range(len(INITS)):
        for chunk in range(store.n_chunks):
            start, stop = chunk * chunk_images, min((chunk + 1) * chunk_images, n_images)
            block = {name: synthetic_rows((i * 1000 + k) * 100_003 + chunk, labels[start:stop],
                                          units, n_classes)
                     for k, (name, units) in enumerate(WIDTHS.items())}
            store.write_chunk(i, chunk, block)
    done.touch()
    return str(path)


# --------------------------------------------------------------------------- children

def peak_rss() -> float:
    """Peak resident set size of this process image, MiB: ``VmHWM`` of /proc/self/status.

    ``ru_maxrss`` would do on a process started from a small parent, but Linux carries the
    parent's resident size at fork into the child's ``ru_maxrss`` across exec, and this
    benchmark's parent holds torch and a feature store by then; ``VmHWM`` belongs to the new
    address space only.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def child(kind: str, url: str) -> None:
    import dask.array  # noqa: F401  (featstore imports lazily: load the libraries first)
    import scipy.stats  # noqa: F401
    import xarray  # noqa: F401

    import featstore
    import featstore.similarity  # noqa: F401
    import featstore.transfer  # noqa: F401

    before = peak_rss()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if kind == "cka":
            featstore.cka(url)
        else:
            featstore.transferability(url)
    seconds = time.perf_counter() - start
    print_child_result({"seconds": seconds, "rss_mib": peak_rss(), "imports_rss_mib": before})


# --------------------------------------------------------------------------- parent

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def timing_section(repeats: int) -> str:
    import numpy as np

    import featstore
    from featstore.transfer import transferability_correlation

    store, extract_s = real_feature_store(1000, 64, INITS)
    url = str(store)
    n_vars = len(featstore.open_store(url).attrs["featstore"]["layers"]) * len(INITS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        featstore.cka(url, layers=["stem"])  # warm the imports and the page cache
        featstore.transferability(url, layers=["stem"])
        probe_t, cka_t, logme_t, both_t = [], [], [], []
        results = scores = None
        for _ in range(repeats):
            seconds, results = timed(lambda: featstore.probe(url, classifiers=["logreg"],
                                                             folds=5, force=True))
            probe_t.append(seconds)
            cka_t.append(timed(lambda: featstore.cka(url))[0])
            logme_t.append(timed(lambda: featstore.transferability(
                url, estimators=["logme"]))[0])
            seconds, scores = timed(lambda: featstore.transferability(url))
            both_t.append(seconds)
    assert results is not None and scores is not None
    correlation = transferability_correlation(scores, results)

    def row(name: str, times: list[float]) -> tuple[str, str, str]:
        ratios = [p / t for p, t in zip(probe_t, times, strict=True)]  # paired per repeat
        return name, spread(times, 2), f"{median(ratios):.1f}x"

    rows = [
        ("logreg probe sweep, 5 folds (baseline)", spread(probe_t, 2), "1.0x"),
        row(f"all-pairs linear CKA ({n_vars} variables, {n_vars * (n_vars + 1) // 2} pairs)",
            cka_t),
        row(f"LogME, every layer and init ({n_vars})", logme_t),
        row("LogME + H-score, every layer and init", both_t),
    ]
    rho_rows = []
    for name in correlation["estimator"].values:
        for init in correlation["init"].values:
            rho = float(correlation["spearman"].sel(estimator=name, init=init).values[0])
            rho_rows.append((str(name), str(init), "n/a" if np.isnan(rho) else f"{rho:+.2f}"))
    extracted = f"featstore.extract took {extract_s:.0f} s (on a cached store it only checks)"
    return (
        f"Store: 3000 LC25000 tiles at 64 px, efficientnet_lite0, 18 layers x 3 inits "
        f"({', '.join(INITS)}), {extracted}. Medians of {repeats} alternating repeats "
        "(min-max); speed-up = median of the per-repeat ratios probe time / estimator time.\n\n"
        + md_table(("computation", "seconds", "cheaper than the probe sweep"), rows)
        + "\n\nSpearman rank correlation across the 18 layers with the sweep's logreg "
        "accuracy (fold mean):\n\n"
        + md_table(("estimator", "init", "rho"), rho_rows)
    )


def memory_section(small: int, large: int) -> str:
    rows = []
    for kind, label in (("cka", "all-pairs CKA"), ("transfer", "LogME + H-score")):
        found = {}
        for n in (small, large):
            url = synthetic_layers_store(n)
            found[n] = run_child(["bench_similarity.py", "--child", kind, url])
        base, big = found[small], found[large]
        rows.append((label, f"{base['rss_mib']:.0f}", f"{big['rss_mib']:.0f}",
                     f"{big['rss_mib'] / base['rss_mib']:.2f}x",
                     f"{base['seconds']:.1f}", f"{big['seconds']:.1f}",
                     f"{big['seconds'] / base['seconds']:.1f}x"))
    raw = sum(WIDTHS.values()) * len(INITS) * 4 / 2**20
    return (
        f"Synthetic stores with the same 18 layer widths x 3 inits ({raw * 1000:.0f} MiB of "
        f"float32 per 1000 images), {small:,} vs {large:,} images; each run in a fresh process "
        "(peak RSS = its VmHWM, libraries included).\n\n"
        + md_table(("computation", f"peak RSS {small:,} (MiB)", f"peak RSS {large:,} (MiB)",
                    "RSS ratio", f"seconds {small:,}", f"seconds {large:,}", "time ratio"),
                   rows)
    )


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat; 1k vs 4k images")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", choices=("timing", "memory"), help="run one part")
    parser.add_argument("--no-write", action="store_true", help="only print")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    small, large = (1000, 4000) if args.quick else (1000, 20_000)
    Path(CACHE).mkdir(parents=True, exist_ok=True)
    load = LoadLog()
    parts = []
    if args.only in (None, "timing"):
        parts.append("### Time against the probe sweep\n\n" + timing_section(repeats))
    if args.only in (None, "memory"):
        parts.append("### Peak memory against the number of images\n\n"
                     + memory_section(small, large))
    body = "\n\n".join(parts)
    print(body)
    if not args.no_write:
        path = write_section("Similarity and transferability (CPU)", body, quick=args.quick,
                             load=load)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
