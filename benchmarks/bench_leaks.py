"""Leak check: `featstore.find_leaks` (decode, thumbnail, dihedral hash, all-pairs search) against
decoding and resizing alone, on the shared LC25000 lung tiles (3 x 1000 JPEG tiles, 224 px).

Baseline ("decode + resize only"): for every tile, ``source.load(i)`` (the same decoder
featstore uses) and the 32 x 32 grayscale thumbnail, one after another on one thread -- the
least any perceptual-hash tool must do. Measured:

1. **one core**: ``find_leaks(DATA, workers=1)`` end to end vs the baseline, alternating, medians;
   BLAS limited to one thread, so everything runs on one core.
2. **after decoding**: hashing (:func:`featstore.leaks.dihedral_hashes`, all 8 rotations/flips)
   and the all-pairs search (:func:`featstore.leaks.near_duplicates`) of the 3000 thumbnails,
   in images per second, and their time as a fraction of the baseline's.
3. **default workers**: ``find_leaks(DATA)`` with its decoding thread pool (``min(8, cores)``).
4. **search scaling**: the search alone on random hashes of 10,000 and 50,000 images
   (n (n - 1) / 2 pairs x 8 variants), seconds and pairs compared per second.

The script prints a Markdown section (command, machine, date, load, figures); it writes nothing.

    .venv/bin/python benchmarks/bench_leaks.py              # 5 repeats, search up to 50k
    .venv/bin/python benchmarks/bench_leaks.py --quick      # 1 repeat, search up to 10k
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _common import (  # noqa: E402
    SHARED_TILES,
    LoadLog,
    md_table,
    median,
    spread,
    write_section,
)
from featstore.data import open_source  # noqa: E402
from featstore.leaks import (  # noqa: E402
    DEFAULT_THRESHOLD,
    dihedral_hashes,
    find_leaks,
    near_duplicates,
    thumbnail,
)


def baseline(data: str) -> np.ndarray:
    """Decode and resize every tile, one thread; the thumbnails, shape (n, 32, 32)."""
    source = open_source(data)
    return np.stack([thumbnail(source.load(i)) for i in range(len(source))])


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, search up to 10k")
    parser.add_argument("--data", default=str(SHARED_TILES))
    parser.add_argument("--no-write", action="store_true", help="only print")
    args = parser.parse_args()
    if not os.path.exists(args.data):
        raise SystemExit(f"benchmark data not found: {args.data} (the shared pathology tiles)")
    repeats = 1 if args.quick else 5
    load = LoadLog()

    thumbs = baseline(args.data)  # warm the page cache and the imports
    n = len(thumbs)
    base_t: list[float] = []
    one_t: list[float] = []
    pool_t: list[float] = []
    hash_t: list[float] = []
    search_t: list[float] = []
    result = None
    for _ in range(repeats):
        base_t.append(timed(lambda: baseline(args.data))[0])
        seconds, result = timed(lambda: find_leaks(args.data, workers=1))
        one_t.append(seconds)
        pool_t.append(timed(lambda: find_leaks(args.data))[0])
        seconds, hashes = timed(lambda: dihedral_hashes(thumbs))
        hash_t.append(seconds)
        search_t.append(timed(lambda h=hashes: near_duplicates(h, DEFAULT_THRESHOLD))[0])
    assert result is not None

    sizes = (10_000,) if args.quick else (10_000, 50_000)
    rng = np.random.default_rng(0)
    scaling = []
    for size in sizes:
        random_hashes = rng.integers(0, 2**63, size=(size, 8), dtype=np.uint64)
        seconds, _ = timed(lambda h=random_hashes: near_duplicates(h, DEFAULT_THRESHOLD))
        comparisons = size * (size - 1) / 2 * 8
        scaling.append((f"{size:,}", f"{seconds:.1f}", f"{comparisons / seconds / 1e6:,.0f}"))

    def row(name: str, times: list[float], digits: int) -> tuple[str, str, str, str]:
        ratios = [t / b for t, b in zip(times, base_t, strict=True)]  # paired per repeat
        return (name, spread(times, digits), f"{n / median(times):,.0f}",
                f"{median(ratios):.{digits}f}")

    rows = [
        row("decode + resize only (baseline), 1 thread", base_t, 2),
        row("find_leaks, workers=1 (decode, hash, search)", one_t, 2),
        row(f"find_leaks, default workers ({min(8, os.cpu_count() or 1)} threads)", pool_t, 2),
        row("hash 8 variants, after decoding", hash_t, 3),
        row("all-pairs search, after hashing", search_t, 3),
    ]
    summary = result.summary()
    body = "\n".join([
        f"{n} LC25000 tiles (224 px JPEG), threshold {DEFAULT_THRESHOLD}; medians of "
        f"{repeats} alternating repeats (min-max); ratio = median of the per-repeat ratios "
        "time / baseline time.\n",
        md_table(("step", "seconds", "images/s", "ratio"), rows),
        f"\nFound: {summary['exact_pairs']} exact and {summary['near_pairs']} near pairs; "
        f"{summary['images_with_copy']} of {n} tiles have a near-copy (up to rotation/flip).\n",
        "Search alone on random hashes (one core):\n",
        md_table(("images", "seconds", "million comparisons/s"), scaling),
    ])
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('Leak check (CPU)', body, quick=args.quick, load=load)}")

if __name__ == "__main__":
    main()
