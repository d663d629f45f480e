"""A naive, loop-by-loop reference of featstore.gain's bootstrap (for tests only).

It draws the same random numbers in the same order as :func:`featstore.knowledge_gain` (per fold
the test images' draw counts of every replicate, then per baseline group with two or more seeds
the seeds drawn with replacement), but one replicate at a time, expands each resample into an
explicit list of images, and computes every metric, mean, quantile, ``p_best`` and sweet spot with
plain Python loops and textbook formulas. Nothing here is shared with the library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

GROUPS = ("random", "random+bn", "shuffled", "shuffled+bn")
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
TIE = 1e-12


def naive_metrics(truth: list[int], pred: list[int]) -> tuple[float, float, float]:
    """Accuracy, balanced accuracy (mean recall over true classes present) and macro-F1 (over
    classes present in truth or prediction), by counting."""
    n = len(truth)
    correct = sum(1 for t, p in zip(truth, pred, strict=True) if t == p)
    classes = sorted(set(truth) | set(pred))
    recalls = []
    f1s = []
    for k in classes:
        tp = sum(1 for t, p in zip(truth, pred, strict=True) if t == k and p == k)
        n_true = sum(1 for t in truth if t == k)
        n_pred = sum(1 for p in pred if p == k)
        if n_true:
            recalls.append(tp / n_true)
        f1s.append(2 * tp / (n_true + n_pred))
    return correct / n, sum(recalls) / len(recalls), sum(f1s) / len(f1s)


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default method), by sorting."""
    v = sorted(values)
    h = (len(v) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (h - lo) * (v[hi] - v[lo])


def normalized(pre: float, base: float) -> float:
    """gain / (1 - base) for a positive gain, gain / base for a negative one, 0 for none."""
    g = pre - base
    if g > 0:
        return g / (1.0 - base)
    if g < 0:
        return g / base
    return 0.0


@dataclass
class Reference:
    """Replicates and summaries per baseline group; arrays indexed [c][j][m] as nested lists."""

    groups: list[str]
    replicates: dict[str, np.ndarray]  # group -> (n_boot, C, L, M) gain per replicate
    norm_replicates: dict[str, np.ndarray]
    gain: dict[str, np.ndarray]  # (C, L, M)
    ci_low: dict[str, np.ndarray]
    ci_high: dict[str, np.ndarray]
    norm: dict[str, np.ndarray]
    norm_low: dict[str, np.ndarray]
    norm_high: dict[str, np.ndarray]
    seed_sd: dict[str, np.ndarray]
    p_best: dict[str, np.ndarray]
    best: dict[str, list[list[str]]]  # (C, M)
    sweet: dict[str, list[list[str]]]
    diff_low: dict[str, np.ndarray]


def reference_gain(results: xr.Dataset, n_boot: int, seed: int, confidence: float = 0.95,
                   margin: float = 0.01) -> Reference:
    inits = [str(v) for v in results["init"].values]
    kinds = [str(v) for v in results["init_kind"].values]
    pre = kinds.index("pretrained")
    groups = [g for g in GROUPS if g in kinds]
    members = {g: [i for i, k in enumerate(kinds) if k == g] for g in groups}
    labels = [int(v) for v in results["label"].values]
    test_fold = [int(v) for v in results["test_fold"].values]
    prediction = results["prediction"].transpose("classifier", "layer", "init", "image").values
    score = results["score"].transpose("classifier", "layer", "init", "fold", "metric").values
    n_c, n_l = prediction.shape[:2]
    n_f = results.sizes["fold"]
    n_m = len(METRICS)
    layers = [str(v) for v in results["layer"].values]

    rng = np.random.default_rng(seed)
    rows = {f: [i for i in range(len(labels)) if test_fold[i] == f] for f in range(n_f)}
    counts = {f: [rng.multinomial(len(rows[f]), np.full(len(rows[f]), 1.0 / len(rows[f])))
                  for _ in range(n_boot)] for f in range(n_f)}
    draws = {}
    for g in groups:
        r = len(members[g])
        if r > 1:
            draws[g] = [rng.integers(0, r, size=r) for _ in range(n_boot)]

    used = [pre] + [i for g in groups for i in members[g]]
    # fold-mean metric of every used init on every replicate
    rep_metric = np.zeros((n_boot, n_c, n_l, len(inits), n_m))
    for b in range(n_boot):
        for c in range(n_c):
            for j in range(n_l):
                for i in used:
                    total = [0.0, 0.0, 0.0]
                    for f in range(n_f):
                        truth: list[int] = []
                        pred: list[int] = []
                        for row, k in zip(rows[f], counts[f][b], strict=True):
                            truth += [labels[row]] * int(k)
                            pred += [int(prediction[c, j, i, row])] * int(k)
                        for m, value in enumerate(naive_metrics(truth, pred)):
                            total[m] += value / n_f
                    rep_metric[b, c, j, i] = total

    alpha = 1.0 - confidence
    out = Reference(groups, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})
    for g in groups:
        reps = np.zeros((n_boot, n_c, n_l, n_m))
        nreps = np.zeros((n_boot, n_c, n_l, n_m))
        for b in range(n_boot):
            chosen = [members[g][j] for j in draws[g][b]] if g in draws else members[g]
            for c in range(n_c):
                for j in range(n_l):
                    for m in range(n_m):
                        base = sum(rep_metric[b, c, j, i, m] for i in chosen) / len(chosen)
                        p = rep_metric[b, c, j, pre, m]
                        reps[b, c, j, m] = p - base
                        nreps[b, c, j, m] = normalized(p, base)
        out.replicates[g] = reps
        out.norm_replicates[g] = nreps
        gain = np.zeros((n_c, n_l, n_m))
        low = np.zeros_like(gain)
        high = np.zeros_like(gain)
        norm = np.zeros_like(gain)
        nlow = np.zeros_like(gain)
        nhigh = np.zeros_like(gain)
        sd = np.zeros_like(gain)
        p_best = np.zeros_like(gain)
        diff_low = np.zeros_like(gain)
        best_names = [["" for _ in range(n_m)] for _ in range(n_c)]
        sweet_names = [["" for _ in range(n_m)] for _ in range(n_c)]
        for c in range(n_c):
            for m in range(n_m):
                for j in range(n_l):
                    p = sum(score[c, j, pre, f, m] for f in range(n_f)) / n_f
                    per_seed = [sum(score[c, j, i, f, m] for f in range(n_f)) / n_f
                                for i in members[g]]
                    base = sum(per_seed) / len(per_seed)
                    gain[c, j, m] = p - base
                    norm[c, j, m] = normalized(p, base)
                    values = [float(v) for v in reps[:, c, j, m]]
                    low[c, j, m] = min(quantile(values, alpha / 2), gain[c, j, m])
                    high[c, j, m] = max(quantile(values, 1 - alpha / 2), gain[c, j, m])
                    nvalues = [float(v) for v in nreps[:, c, j, m]]
                    nlow[c, j, m] = min(quantile(nvalues, alpha / 2), norm[c, j, m])
                    nhigh[c, j, m] = max(quantile(nvalues, 1 - alpha / 2), norm[c, j, m])
                    if len(per_seed) > 1:
                        gains = [p - s for s in per_seed]
                        mu = sum(gains) / len(gains)
                        sd[c, j, m] = math.sqrt(sum((x - mu) ** 2 for x in gains)
                                                / (len(gains) - 1))
                    else:
                        sd[c, j, m] = math.nan
                # p_best: ties (within 1e-12) share a replicate evenly
                for b in range(n_boot):
                    top = max(reps[b, c, :, m])
                    winners = [j for j in range(n_l) if top - reps[b, c, j, m] <= TIE]
                    for j in winners:
                        p_best[c, j, m] += 1.0 / len(winners) / n_boot
                best = 0
                for j in range(1, n_l):
                    if gain[c, j, m] > gain[c, best, m]:
                        best = j
                best_names[c][m] = layers[best]
                sweet = None
                for j in range(n_l):
                    diffs = [float(reps[b, c, j, m] - reps[b, c, best, m]) for b in range(n_boot)]
                    diff_low[c, j, m] = quantile(diffs, alpha / 2)
                    if sweet is None and diff_low[c, j, m] > -margin:
                        sweet = j
                sweet_names[c][m] = layers[sweet if sweet is not None else best]
        out.gain[g], out.ci_low[g], out.ci_high[g] = gain, low, high
        out.norm[g], out.norm_low[g], out.norm_high[g] = norm, nlow, nhigh
        out.seed_sd[g], out.p_best[g], out.diff_low[g] = sd, p_best, diff_low
        out.best[g], out.sweet[g] = best_names, sweet_names
    return out
