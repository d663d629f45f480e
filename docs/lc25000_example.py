"""Regenerate the worked example: the full method on LC25000 lung tiles with efficientnet_lite0.

Usage (from the repository root)::

    .venv/bin/python docs/lc25000_example.py                  # 300 images per class
    .venv/bin/python docs/lc25000_example.py --per-class 1000  # all 3,000 images
    .venv/bin/python docs/lc25000_example.py --report-only     # redraw from the existing store

Steps: a seeded random subset of ``--per-class`` images per class is linked (symlinks, no
copies) into ``--work/lc25000_lung``; ``featstore.extract`` runs efficientnet_lite0 over all 18
auto layers into ``--work/store.zarr`` with its ImageNet weights (``pretrained``, and
``pretrained+bn``: the same weights with BatchNorm statistics re-estimated on the tiles) and
three baselines of five seeds each: ``random:0-4`` (the architecture's own initialisation),
``random:0-4+bn`` (the same weights, statistics re-estimated on the tiles) and ``shuffled:0-4``
(the pretrained weights permuted within each tensor); ``featstore.probe`` fits a
logistic-regression probe per layer and init with 5-fold stratified cross-validation (seed 0);
``featstore.report.write_report`` writes the figures, CSV tables and ``report.md`` into ``--out``
(default ``docs/lc25000/``), with the knowledge gain against each baseline side by side, and
``run.json`` records the timings. The images never enter the repository; only the small outputs
do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import time
from pathlib import Path

import torch

import featstore
from featstore.report import write_report
from featstore.results import unconverged_fits

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "lc25000_lung"
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
#: the treatment, its AdaBN variant and three baselines of five seeds each (ranges expand)
INITS = ("pretrained", "pretrained+bn", "random:0-4", "random:0-4+bn", "shuffled:0-4")
CLASSIFIERS = ("logreg",)


def link_subset(data: Path, dest: Path, per_class: int, seed: int) -> dict[str, int]:
    """Link a seeded random sample of ``per_class`` images of each class folder into ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    rng = random.Random(seed)
    counts = {}
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        chosen = sorted(rng.sample(files, min(per_class, len(files))))
        (dest / folder.name).mkdir(parents=True)
        for path in chosen:
            target = dest / folder.name / path.name
            try:
                os.symlink(path.resolve(), target)
            except OSError:  # no symlinks here: copy into the work folder, never the repo
                shutil.copy2(path, target)
        counts[folder.name] = len(chosen)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--work", type=Path, default=Path("/tmp/featstore-lc25000"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "lc25000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true",
                        help="Only redraw the report from the existing store; keep run.json.")
    args = parser.parse_args()
    store = str(args.work / "store.zarr")
    if args.report_only:
        files = write_report(store, args.out, metric="accuracy", seed=args.seed)
        print(f"report -> {files.markdown}", flush=True)
        return

    timings: dict[str, float] = {}
    subset = args.work / "lc25000_lung"
    counts = link_subset(args.data, subset, args.per_class, args.seed)
    print(f"subset: {counts} -> {subset}", flush=True)

    start = time.perf_counter()
    featstore.extract(str(subset), store, model="efficientnet_lite0", inits=INITS,
                      overwrite=True)
    timings["extract_s"] = round(time.perf_counter() - start, 1)
    print(f"extract: {timings['extract_s']} s", flush=True)

    start = time.perf_counter()
    results = featstore.probe(store, classifiers=CLASSIFIERS, folds=5, seed=args.seed)
    timings["probe_s"] = round(time.perf_counter() - start, 1)
    print(f"probe: {timings['probe_s']} s", flush=True)

    start = time.perf_counter()
    files = write_report(store, args.out, metric="accuracy", seed=args.seed)
    timings["report_s"] = round(time.perf_counter() - start, 1)
    print(f"report: {timings['report_s']} s -> {files.markdown}", flush=True)

    n_images = sum(counts.values())
    inits = [str(v) for v in results["init"].values]
    run = {
        "data": str(args.data),
        "per_class": counts,
        "sample_seed": args.seed,
        "model": "efficientnet_lite0",
        "inits": inits,
        "probe": {"classifiers": list(CLASSIFIERS), "folds": 5, "seed": args.seed},
        "unconverged_fits": unconverged_fits(results),
        "timings": timings,
        "images_per_second_extract": round(len(inits) * n_images / timings["extract_s"], 1),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available(), "platform": platform.platform()},
        "featstore": featstore.__version__,
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
