"""Run every benchmark, quick (minutes, into RESULTS-quick.md) or full size (into RESULTS.md).

    .venv/bin/python benchmarks/run_all.py --quick    # validation, a few minutes each
    .venv/bin/python benchmarks/run_all.py            # full size (~50 min on a quiet 2-core CPU)
    .venv/bin/python benchmarks/run_all.py --only probe scale

Benchmarks run one after another in fresh processes (never in parallel: they would time each
other). ``bench_extract_gpu.py`` is included; without CUDA it only says so. A full run warns when
the machine is already busy (1-minute load average >= 3), because every figure is a ratio of
wall times measured on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import BENCH

BENCHMARKS = {
    "extract": "bench_extract.py",
    "probe": "bench_probe.py",
    "store_io": "bench_store_io.py",
    "scale": "bench_scale.py",
    "startup": "bench_startup.py",
    "extract_gpu": "bench_extract_gpu.py",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="a subset")
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS*.md")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"load average (1 min): {load:.1f}", flush=True)
    if not args.quick and load >= 3:
        print("warning: the machine is busy; full-size timings will be noisy (ratios are "
              "measured side by side, but a quieter machine gives steadier numbers)", flush=True)
    failed = []
    for name in args.only or list(BENCHMARKS):
        command = [sys.executable, str(BENCH / BENCHMARKS[name])]
        command += ["--quick"] if args.quick else []
        command += ["--no-write"] if args.no_write else []
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(command, cwd=BENCH)
        print(f"=== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
