"""Shared helpers of the benchmarks: machine description, timing, data, child processes, RESULTS.md.

Benchmarks are scripts, not tests: ``tests/`` never imports this package, and no timing is ever
asserted. Every benchmark alternates its baseline and featstore runs (so that drift in machine
load hits both alike) and reports medians of the repeats.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "RESULTS.md"
#: quick runs (validation, minutes) go to their own file so they never replace full results
RESULTS_QUICK = BENCH / "RESULTS-quick.md"
SHARED_TILES = ROOT.parent / "shared" / "data" / "lc25000_lung"
#: stores and synthetic data reused between runs (never inside the repository)
CACHE = Path(os.environ.get("FEATSTORE_BENCH_CACHE",
                            Path(os.environ.get("TMPDIR", "/tmp")) / "featstore-bench-cache"))
_HEADER = ("# Benchmark results\n\nEvery figure is a ratio against a baseline measured in the "
           "same run, baseline and featstore runs alternating, medians of repeated runs. "
           "Regenerate a section with the command it names; `benchmarks/README.md` explains "
           "each benchmark.\n\n")


#: order of the sections in RESULTS.md (others go at the end)
SECTION_ORDER = (
    "Extraction overhead (CPU)",
    "Extraction on GPU",
    "Probe sweep (CPU)",
    "Scale: extraction memory and time",
    "Scale: chunked probes and schedulers",
    "Store I/O",
    "Extraction start-up and preprocessing (CPU)",
)


def machine() -> str:
    """One line describing the machine the numbers come from."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        mem = "RAM unknown"
    return (f"{cpu}, {os.cpu_count()} cores, {mem}, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, torch threads {torch.get_num_threads()}")


def load_average() -> str:
    """The 1-minute load average, formatted (the machine is shared; load explains noise)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


class LoadLog:
    """Load average at the start and at the end of a benchmark."""

    def __init__(self) -> None:
        self.start = load_average()

    def line(self) -> str:
        return f"load average (1 min) at start {self.start}, at end {load_average()}"


def command_line() -> str:
    """The command that produced the numbers, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(ROOT))
    except ValueError:
        script_text = str(script)
    return " ".join([".venv/bin/python", script_text, *map(shlex.quote, sys.argv[1:])])


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one call, seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Clock:
    """Wall time and this process's CPU time (user + system, every thread) of timed calls.

    On a shared machine the wall time of a run depends on what else runs; the CPU time counts
    only the work this process did, so its ratio is a load-robust cross-check of a wall-time
    ratio (it misses waiting, e.g. on disk, and counts busy-waiting threads).
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, fn: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)
        return result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], digits: int = 1) -> str:
    """``median (min-max)`` of repeated timings, or just the value for one run."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A Markdown table; ``align`` holds one ``l``/``r`` per column (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *[[str(c) for c in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tile_subset(dest: Path, per_class: int, source: Path = SHARED_TILES) -> Path:
    """An ImageFolder of symlinks to the first ``per_class`` tiles of each class (sorted names).

    The tiles themselves are never copied.
    """
    if not source.exists():
        raise SystemExit(f"benchmark data not found: {source} (the shared pathology tiles)")
    for cls in sorted(p for p in source.iterdir() if p.is_dir()):
        target = dest / cls.name
        target.mkdir(parents=True, exist_ok=True)
        files = sorted(f for f in cls.iterdir() if f.suffix.lower() in (".jpeg", ".jpg", ".png"))
        for file in files[:per_class]:
            link = target / file.name
            if not link.exists():
                link.symlink_to(file)
    return dest


def real_feature_store(per_class: int, image_size: int, inits: Sequence[str],
                       batch_size: int = 64) -> tuple[Path, float]:
    """A featstore store of real LC25000 tiles extracted at a small image size, cached.

    Returns the store path and the seconds spent extracting now (0 when the cache was complete:
    ``featstore.extract`` resumes and finds nothing to do).
    """
    import featstore

    name = f"lc25000-{3 * per_class}x{image_size}px-{'+'.join(inits).replace(':', '')}"
    data = tile_subset(CACHE / "tiles" / f"lc25000-{per_class}", per_class)
    store = CACHE / f"{name}.zarr"
    start = time.perf_counter()
    featstore.extract(str(data), str(store), model="efficientnet_lite0", inits=tuple(inits),
                      image_size=image_size, device="cpu", batch_size=batch_size,
                      chunk_images=256 if 256 % batch_size == 0 else batch_size * 4)
    return store, time.perf_counter() - start


def run_child(args: Sequence[str], timeout: float | None = None,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python ARGS`` in a fresh process; it must print one JSON object as its last line.

    Used for peak-memory figures (``ru_maxrss`` of a process that did only the measured work).
    """
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=BENCH, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return dict(json.loads(lines[-1]))


def print_child_result(result: dict[str, Any]) -> None:
    """The child side of :func:`run_child`."""
    print(json.dumps(result), flush=True)


def write_section(name: str, body: str, quick: bool = False, load: LoadLog | None = None) -> Path:
    """Replace (or append) the section ``## name`` of RESULTS.md (RESULTS-quick.md when ``quick``).

    The section starts with the command, the machine, the date and the load average.
    """
    target = RESULTS_QUICK if quick else RESULTS
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"- command: `{command_line()}`", f"- machine: {machine()}", f"- date: {stamp}"]
    if load is not None:
        lines.append(f"- {load.line()}")
    section = f"## {name}\n\n" + "\n".join(lines) + f"\n\n{body.strip()}\n"
    text = target.read_text() if target.exists() else _HEADER
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text)
    else:
        later = SECTION_ORDER[SECTION_ORDER.index(name) + 1:] if name in SECTION_ORDER else ()
        spots = [m.start() for m in (re.search(rf"^## {re.escape(n)}\n", text, re.M)
                                     for n in later) if m]
        if spots:
            at = min(spots)
            text = text[:at] + section + "\n" + text[at:]
        else:
            text = text.rstrip() + "\n\n" + section
    target.write_text(text.rstrip() + "\n")
    return target


def synthetic_rows(seed: int, labels: Any, units: int, n_classes: int) -> Any:
    """Pooled-activation-like rows: non-negative float32, class signal, shared low-rank factors.

    Deterministic in ``seed`` (one seed per chunk), so a chunk can be regenerated anywhere.
    Shape (len(labels), units).
    """
    import numpy as np

    base = np.random.default_rng(12345)  # the class structure is the same for every chunk
    centers = base.normal(0.0, 0.1, (n_classes, units)).astype(np.float32)
    factors = base.normal(0.0, 0.5, (8, units)).astype(np.float32)
    rng = np.random.default_rng(seed)
    rows = len(labels)
    z = rng.standard_normal((rows, units), dtype=np.float32)
    z += rng.standard_normal((rows, 8), dtype=np.float32) @ factors
    z += centers[np.asarray(labels)]
    return np.logaddexp(np.float32(0), z).astype(np.float32)  # softplus: >= 0, rarely exactly 0


def synthetic_store(url: str, n_images: int, units: int, inits: Sequence[str],
                    layer: str = "head", chunk_images: int = 256, n_classes: int = 3) -> Any:
    """A one-layer featstore store of synthetic features written with FeatureStore.write_chunk.

    Labels cycle through the classes; every row is :func:`synthetic_rows`. Returns the
    :class:`featstore.store.FeatureStore`.
    """
    import numpy as np

    from featstore.store import FeatureStore, LayerSpec, StoreLayout

    labels = np.arange(n_images) % n_classes
    layout = StoreLayout(
        model="synthetic", layers=(LayerSpec(layer, units, (units, 1, 1)),),
        transform={"size": 0, "interpolation": "none", "mean": [0, 0, 0], "std": [1, 1, 1]},
        pool="avg", dtype="float32", chunk_images=chunk_images,
        classes=tuple(f"class{k}" for k in range(n_classes)),
        paths=tuple(f"synthetic/{i:07d}.png" for i in range(n_images)),
        labels=tuple(int(v) for v in labels), splits=None,
        data={"kind": "synthetic", "fingerprint": f"synthetic-{n_images}-{units}-{n_classes}"},
    )
    store = FeatureStore.create(url, layout, {"benchmark": "synthetic"},
                                [{"name": name} for name in inits])
    n_chunks = -(-n_images // chunk_images)
    for init_index in range(len(inits)):
        for chunk in range(n_chunks):
            start, stop = chunk * chunk_images, min((chunk + 1) * chunk_images, n_images)
            rows = synthetic_rows(init_index * 1_000_003 + chunk, labels[start:stop], units,
                                  n_classes)
            store.write_chunk(init_index, chunk, {layer: rows})
    return store
