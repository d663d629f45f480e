"""Regenerate docs/study_example/: a featstore study over the two shared pathology sets.

Usage (from the repository root)::

    .venv/bin/python docs/study_example.py                        # efficientnet_lite0 and lite1
    .venv/bin/python docs/study_example.py --model efficientnet_lite0 --per-class 50 \
        --work /tmp/study-quick                                   # quicker, own stores

The study (written to ``WORK/study.toml`` and run with :func:`featstore.study.run_study`):

* ``lung``: a seeded subset of the shared LC25000 lung tiles (``--per-class`` per class,
  symlinks, never copies; 3 classes), image-level folds -- LC25000 has no patient ids;
* ``crc``: the 240 Kather 2016 colorectal tiles (8 classes x 30), folds grouped by the source
  slide ``CRC-Prim-HE-NN`` in the file names (10 slides), so no slide is tested in two folds;
* models ``--model`` (default efficientnet_lite0 and efficientnet_lite1), inits ``pretrained``,
  ``random:0-4`` and ``random:0+bn``, logistic regression, 5 folds, seed 0.

Then, as a check of what grouping does, the ``crc`` store is probed once more with image-level
folds (``crc_grouped_vs_images.csv``: pretrained accuracy and gain per layer, both ways).
Stores stay in WORK (reused by a rerun, which takes seconds); the report, the table and the
figures are copied to docs/study_example/.
"""

from __future__ import annotations

import argparse
import platform
import random
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

import featstore
from featstore.study import run_study
from featstore.study_config import read_study, store_name

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LUNG = SHARED / "lc25000_lung"
CRC = SHARED / "kather2016_crc"
OUT = REPO / "docs" / "study_example"
#: the slide of a Kather tile: ``<class>/<hex>_CRC-Prim-HE-NN_...tif``
SLIDE_REGEX = r"CRC-Prim-HE-(\d+)"
STUDY = """\
[study]
name = "lung-colon"
description = "Knowledge gain of ImageNet features on LC25000 lung tiles and Kather 2016 \
colorectal tiles (grouped by slide)."

[[dataset]]
name = "lung"
data = "{lung}"

[[dataset]]
name = "crc"
data = "{crc}"
group_regex = '{regex}'

[extract]
models = [{models}]
inits = ["pretrained", "random:0-4", "random:0+bn"]
device = "cpu"

[probe]
classifiers = ["logreg"]
folds = 5
seed = 0
"""


def link_subset(dest: Path, per_class: int, seed: int = 0) -> Path:
    """A seeded subset of the LC25000 tiles as an ImageFolder of symlinks (same rule as
    docs/baselines.py)."""
    if dest.exists():
        shutil.rmtree(dest)
    rng = random.Random(seed)
    for folder in sorted(p for p in LUNG.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        (dest / folder.name).mkdir(parents=True)
        for path in sorted(rng.sample(files, per_class)):
            (dest / folder.name / path.name).symlink_to(path.resolve())
    return dest


def grouped_vs_images(work: Path, model: str) -> pd.DataFrame:
    """Per layer of the crc store: pretrained accuracy and gain over random (accuracy), folds
    grouped by slide (the study's run, reused) vs image-level folds (probed here once)."""
    store = str(work / "out" / "stores" / store_name("crc", model))
    frame = None
    for label, group in (("slide", SLIDE_REGEX), ("image", None)):
        results = featstore.probe(store, classifiers=["logreg"], folds=5, seed=0,
                                  group_regex=group)
        gain = featstore.knowledge_gain(results, n_boot=200).sel(
            metric="accuracy", baseline="random", classifier="logreg:C=1")
        part = pd.DataFrame({
            "model": model, "layer": [str(v) for v in gain["layer_module"].values],
            f"pretrained_{label}_folds": gain["pretrained"].values.round(4),
            f"gain_{label}_folds": gain["gain"].values.round(4)})
        frame = part if frame is None else frame.merge(part, on=["model", "layer"])
    return pd.DataFrame() if frame is None else frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--model", action="append", default=None,
                        help="repeatable; default efficientnet_lite0 and efficientnet_lite1")
    parser.add_argument("--work", type=Path, default=Path("/tmp/featstore-study-example"))
    args = parser.parse_args()
    models = args.model or ["efficientnet_lite0", "efficientnet_lite1"]
    if not LUNG.is_dir() or not CRC.is_dir():
        raise SystemExit(f"the shared data is not there ({LUNG}, {CRC})")
    args.work.mkdir(parents=True, exist_ok=True)
    tiles = link_subset(args.work / "lung", args.per_class)
    study_file = args.work / "study.toml"
    study_file.write_text(STUDY.format(lung=tiles, crc=CRC.resolve(), regex=SLIDE_REGEX,
                                       models=", ".join(f'"{m}"' for m in models)))
    start = time.perf_counter()
    files = run_study(read_study(study_file), args.work / "out", log=print)
    print(f"study: {files.seconds:.0f} s ({files.computed})")
    comparison = pd.concat([grouped_vs_images(args.work, m) for m in models])
    total = time.perf_counter() - start

    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "figures").mkdir(parents=True)
    for name in ("report.md", "report.html", "study.csv"):
        shutil.copy(files.out / name, OUT / name)
    for figure in files.figures:
        shutil.copy(figure, OUT / "figures" / figure.name)
    comparison.to_csv(OUT / "crc_grouped_vs_images.csv", index=False)
    study = featstore.open_study(files.out)
    runs = study.attrs["featstore_study"]["runs"]
    lines = [
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads, CPU; wall time of this run {total:.0f} s "
        f"({files.computed['extracted']} stores extracted, {files.computed['probed']} probed)",
        f"lung: {args.per_class} tiles per class (seed 0)",
    ]
    for run in runs:
        leaks = run.get("leaks") or {}
        lines.append(f"{run['dataset']} x {run['model']}: folds {run['folds']}, grouping "
                     f"{run.get('grouping')}, groups per test fold {run.get('groups_per_fold')}, "
                     f"test class counts {run['class_counts']}, leaks {leaks}")
    gain = study["gain"].sel(metric="accuracy", classifier=str(study["classifier"].values[0]))
    if "baseline" in gain.dims:
        gain = gain.sel(baseline="random")
    lines.append("gain (accuracy) by layer:\n" + gain.to_dataframe(name="gain")["gain"]
                 .dropna().unstack("layer").round(3).to_string())
    lines.append("crc, pretrained accuracy and gain vs random, slide-grouped vs image-level "
                 "folds:\n"
                 + comparison.to_string(index=False))
    (OUT / "run.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
