"""Probe sweep: `featstore probe` against a plain scikit-learn loop on the same stored features.

The sweep: 2 inits x every layer of efficientnet_lite0 (18, ``auto``) x 5 stratified folds x
``logreg:C=0.01,0.1,1,10``: 20 fits per layer and init, 720 logistic regressions in all.

Baseline (the "scikit-learn loop"): for each init, layer, C and fold, one after another,
``make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=1e-6, max_iter=1000))`` fit on the
training fold and scored on the test fold -- the loop a researcher writes by hand. It reads each
(init, layer) block once from the same store and uses the very folds featstore uses
(``StratifiedKFold(5, shuffle=True, random_state=0)``); ``tol`` and ``max_iter`` equal featstore's
defaults, so both solve the same problems to the same stopping rule. (At scikit-learn's default
tol, 1e-4, where the solver stops on the flat optimum of weak regularization decides some test
predictions: two solvers both meeting it differed by up to 1.7 points on the head layer at C=10,
and by 0.03 points at 1e-6, hence featstore's default.) Both sides have the machine's cores:
scikit-learn through multi-threaded BLAS, featstore through dask threads. featstore is timed
as a user runs it (its leak check re-reads and hashes the store's images, to warn about
near-copies across folds) and with ``leak_check=False`` (the sweep alone).

The store: the real LC25000 lung tiles (1000 per class, 3000 images) extracted with featstore at
``--image-size 64`` (the network at 224 px would take hours on this CPU; the probes only need
real activations, and 64 px keeps every layer's width). It is cached under
``$FEATSTORE_BENCH_CACHE`` (default ``/tmp/featstore-bench-cache``) and reused.

    .venv/bin/python benchmarks/bench_probe.py            # 3000 images, 18 layers, 2 repeats
    .venv/bin/python benchmarks/bench_probe.py --quick    # 1002 images, 6 layers, 1 repeat
"""

from __future__ import annotations

import argparse
import functools
import re
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import featstore
from _common import Clock, LoadLog, md_table, median, real_feature_store, spread, write_section
from featstore.config import DEFAULT_MAX_ITER, DEFAULT_TOL

INITS = ("pretrained", "random:0")
C_VALUES = (0.01, 0.1, 1.0, 10.0)
CLASSIFIER = "logreg:C=" + ",".join(f"{c:g}" for c in C_VALUES)
FOLDS = 5
SEED = 0
TOL = DEFAULT_TOL
MAX_ITER = DEFAULT_MAX_ITER


#: mean test accuracy per (init, layer, C), fits that hit max_iter, test fold per image
Sweep = tuple[dict[tuple[str, str, float], float], int, np.ndarray]


def sklearn_loop(store: str, layers: list[str]) -> Sweep:
    """Mean test accuracy per (init, layer, C), the number of unconverged fits, the folds."""
    ds = featstore.open_store(store)
    labels = np.asarray(ds["label"].values)
    splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    splits = list(splitter.split(np.zeros(labels.size), labels))
    test_fold = np.full(labels.size, -1)
    for fold, (_, test) in enumerate(splits):
        test_fold[test] = fold
    accuracy: dict[tuple[str, str, float], float] = {}
    unconverged = 0
    for init_index, init in enumerate(ds["init"].values.tolist()):
        for var in layers:
            X = np.asarray(ds[var][init_index].values)
            for C in C_VALUES:
                scores = []
                for train, test in splits:
                    model = make_pipeline(StandardScaler(),
                                          LogisticRegression(C=C, tol=TOL, max_iter=MAX_ITER))
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", ConvergenceWarning)
                        model.fit(X[train], labels[train])
                    unconverged += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
                    scores.append(model.score(X[test], labels[test]))
                accuracy[(init, var, C)] = float(np.mean(scores))
    return accuracy, unconverged, test_fold


def featstore_sweep(store: str, layers: list[str], leak_check: bool = True) -> Sweep:
    """The same sweep through ``featstore.probe`` (recomputed: ``force=True``); with its
    default leak check (the store's images re-read and hashed) or without it."""
    results = featstore.probe(store, classifiers=[CLASSIFIER], folds=FOLDS, seed=SEED,
                              layers=layers, inits=list(INITS), force=True, tol=TOL,
                              max_iter=MAX_ITER, leak_check=leak_check)
    score = results["score"].sel(metric="accuracy").mean("fold")
    accuracy = {}
    for name in results["classifier"].values.tolist():
        C = float(re.search(r"C=([0-9.eE+-]+)", name).group(1))  # type: ignore[union-attr]
        for init in results["init"].values.tolist():
            for var in layers:
                accuracy[(init, var, C)] = float(score.sel(classifier=name, init=init, layer=var))
    unconverged = sum(int(v) for v in results.attrs["featstore_probe"]["unconverged"].values())
    return accuracy, unconverged, np.asarray(results["test_fold"].values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1002 images, 6 layers, 1 repeat (minutes); writes RESULTS-quick.md")
    parser.add_argument("--per-class", type=int, default=1000, help="images per class (3 classes)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS*.md")
    args = parser.parse_args()
    load = LoadLog()
    per_class, repeats = (334, 1) if args.quick else (args.per_class, args.repeats)
    store_path, extract_s = real_feature_store(per_class, args.image_size, INITS)
    store = str(store_path)
    all_layers = list(featstore.open_store(store).attrs["featstore"]["layers"])
    layers = all_layers[::3] if args.quick else all_layers
    units = {v: int(featstore.open_store(store)[v].shape[-1]) for v in layers}
    n_images = 3 * per_class

    base, ours, bare = Clock(), Clock(), Clock()
    runs: dict[str, tuple[Clock, Callable[[str, list[str]], Sweep]]] = {
        "base": (base, sklearn_loop), "ours": (ours, featstore_sweep),
        "bare": (bare, functools.partial(featstore_sweep, leak_check=False))}
    outputs: dict[str, Sweep] = {}
    for rep in range(repeats):  # alternate so drifts in machine load hit all alike
        for which in ("base", "ours", "bare") if rep % 2 == 0 else ("bare", "ours", "base"):
            clock, fn = runs[which]
            outputs[which] = clock(functools.partial(fn, store, layers))
            print(f"repeat {rep + 1}/{repeats}: {which} {clock.wall[-1]:.1f} s wall, "
                  f"{clock.cpu[-1]:.1f} s CPU", flush=True)
    base_acc, base_unconv, base_folds = outputs["base"]
    ours_acc, ours_unconv, ours_folds = outputs["ours"]
    assert outputs["bare"][0] == ours_acc, "the leak check changed the scores"
    same_folds = bool(np.array_equal(base_folds, ours_folds))
    diff = {key: abs(ours_acc[key] - base_acc[key]) * 100 for key in base_acc}
    worst = max(diff.values())
    n_fits = len(INITS) * len(layers) * FOLDS * len(C_VALUES)
    timing = md_table(
        ["run", "wall time (s)", "fits/s", "CPU time (s)"],
        [["scikit-learn loop: StandardScaler + LogisticRegression per fold, sequential "
          "(baseline)", spread(base.wall), f"{n_fits / median(base.wall):.1f}", spread(base.cpu)],
         ["`featstore.probe` (dask threads; default, with the leak check)", spread(ours.wall),
          f"{n_fits / median(ours.wall):.1f}", spread(ours.cpu)],
         ["`featstore.probe(..., leak_check=False)`", spread(bare.wall),
          f"{n_fits / median(bare.wall):.1f}", spread(bare.cpu)]])
    accuracy = md_table(
        ["layer", "units", *[f"C={c:g}" for c in C_VALUES], "pretrained accuracy (%)"],
        [[f"`{var}`", units[var],
          *[f"{max(diff[(init, var, C)] for init in INITS):.2f}" for C in C_VALUES],
          " / ".join(f"{ours_acc[('pretrained', var, C)] * 100:.1f}" for C in C_VALUES)]
         for var in layers], align="lrrrrrl")
    extraction = "cached" if extract_s < 30 else f"{extract_s:.0f} s"
    body = f"""
Store: {n_images} real LC25000 lung tiles (3 classes) extracted by featstore with
efficientnet_lite0 at `--image-size {args.image_size}`, inits {', '.join(INITS)},
{len(all_layers)} layers (extraction: {extraction}). Sweep: {len(INITS)} inits x
{len(layers)} layers x {FOLDS} folds x `{CLASSIFIER}` = {n_fits} logistic regressions;
tol {TOL} and max_iter {MAX_ITER} on both sides; {repeats} repeat(s), baseline and featstore
alternating, median (min-max) seconds; CPU time = user + system of the process, all
threads.

{timing}

**loop / featstore = {median(base.wall) / median(ours.wall):.1f}x** wall time (target >= 5x);
CPU time ratio {median(base.cpu) / median(ours.cpu):.1f}x. Without the leak check (which re-reads
and hashes all {n_images} images on every run, to warn about near-copies across folds):
{median(base.wall) / median(bare.wall):.1f}x wall time; the leak check is
{median(ours.wall) - median(bare.wall):.1f} s of the default run. Same folds on both sides:
{'yes' if same_folds else 'NO'}. Fits that hit max_iter: scikit-learn {base_unconv}, featstore
{ours_unconv}.

**Largest mean-accuracy difference over all (init, layer, C): {worst:.2f} points** (target <=
0.5); mean difference {np.mean(list(diff.values())):.3f} points. Per layer and C: the larger of
the two inits' differences (points), and featstore's pretrained accuracy at each C:

{accuracy}
"""
    print(body)
    if not args.no_write:
        print("wrote", write_section("Probe sweep (CPU)", body, quick=args.quick, load=load))

if __name__ == "__main__":
    main()
