"""Knowledge gain per layer against every baseline, with paired bootstrap statistics (pure compute).

The knowledge gain of a layer (Li & Plataniotis, PLoS ONE 2020) is how much the pretrained
network's features beat a baseline network's, with the same classifier on the same folds::

    gain = metric(pretrained) - metric(baseline)

Both terms are means over folds of the per-fold test metric; the baseline is also averaged over
every seed of its group. The groups (:data:`featstore.inits.BASELINE_GROUPS`, described in
:data:`BASELINE_DESCRIPTIONS`) are ``random`` (``random:SEED``), ``random+bn``
(``random:SEED+bn``), ``shuffled`` (``shuffled:SEED``) and ``shuffled+bn``; the gain is computed
against each group present, side by side along the ``baseline`` dimension (``random`` first).
The treatment is always the single ``pretrained`` init; ``pretrained+bn`` (AdaBN) is no baseline
and no treatment here: reports show it as its own curve among the probe scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import xarray as xr

from . import schema as S
from .config import DEFAULT_MARGIN
from .errors import ProbeInputError
from .inits import BASELINE_GROUPS, init_kind
from .probing import METRICS, scores_from_confusion
from .results import (
    BASELINE,
    CLASSIFIER,
    FOLD,
    GROUP,
    LAYER,
    LAYER_MODULE,
    LAYER_UNITS,
    METRIC,
    N_SEEDS,
    TEST_FOLD,
    init_kinds,
    probe_info,
)

__all__ = [
    "BASELINE_DESCRIPTIONS",
    "PRETRAINED_BN_DESCRIPTION",
    "CI_METHOD",
    "CLUSTER_CI_METHOD",
    "DEFAULT_MARGIN",
    "TIE_TOLERANCE",
    "check_gain_inits",
    "parse_margin",
    "normalized_gain",
    "knowledge_gain",
]

CI_METHOD: Final = (
    "paired percentile bootstrap over test images, resampled with replacement within each "
    "fold; every init's metric is recomputed from its stored out-of-fold predictions on the "
    "same resample; with two or more seeds in a baseline group the seeds are also resampled "
    "with replacement in every replicate"
)
#: the interval's method for grouped results (``featstore probe --group-by``)
CLUSTER_CI_METHOD: Final = (
    "paired percentile cluster bootstrap: the groups (patients, slides) of each fold's test "
    "images are resampled with replacement within that fold, each drawn group bringing all its "
    "test images, because images of one group are not independent; every init's metric is "
    "recomputed from its stored out-of-fold predictions on the same resample; with two or more "
    "seeds in a baseline group the seeds are also resampled with replacement in every "
    "replicate; with few groups per fold the interval is itself uncertain (a fold with one "
    "group adds no spread)"
)

#: what each baseline group is, in words (the treatment is always ``pretrained``)
BASELINE_DESCRIPTIONS: Final[dict[str, str]] = {
    "random": "the architecture's own random initialisation, normalization statistics as "
              "initialised",
    "random+bn": "the same random weights, normalization statistics re-estimated on these "
                 "images",
    "shuffled": "the pretrained weights permuted within each tensor (each layer keeps its weight "
                "distribution, the learned structure is destroyed), normalization statistics "
                "as trained",
    "shuffled+bn": "the pretrained weights permuted within each tensor, normalization "
                   "statistics re-estimated on these images",
}
#: what ``pretrained+bn`` is; it is shown beside the baselines, never subtracted
PRETRAINED_BN_DESCRIPTION: Final = (
    "the pretrained weights with normalization statistics re-estimated on these images "
    "(AdaBN): shows how much of the gain is normalization statistics"
)

#: replicate gains closer than this to a replicate's largest count as tied for ``p_best``
TIE_TOLERANCE: Final = 1e-12

#: bytes of one-hot matrix built at a time while bootstrapping
_BLOCK_BYTES: Final = 64 * 2**20


def _baseline_members(kinds: Sequence[str]) -> dict[str, list[int]]:
    """Positions of the inits of every baseline group present, in :data:`BASELINE_GROUPS`
    order."""
    return {g: [i for i, k in enumerate(kinds) if k == g] for g in BASELINE_GROUPS
            if g in kinds}


def check_gain_inits(inits: Sequence[str], kinds: Sequence[str] | None = None
                     ) -> tuple[str, dict[str, list[str]]]:
    """The pretrained init and the inits of every baseline group among ``inits``.

    Parameters
    ----------
    inits : sequence of str
        Init names.
    kinds : sequence of str, optional
        Their groups; default :func:`init_kind` of each name.

    Returns
    -------
    pretrained : str
        The name of the one ``pretrained`` init.
    baselines : dict of str to list of str
        Baseline group -> its init names, groups in :data:`BASELINE_GROUPS` order.

    Raises
    ------
    ProbeInputError
        Unless there is exactly one pretrained init and at least one baseline init.
    """
    kinds = [init_kind(n) for n in inits] if kinds is None else list(kinds)
    pretrained = [n for n, k in zip(inits, kinds, strict=True) if k == "pretrained"]
    members = _baseline_members(kinds)
    if len(pretrained) != 1 or not members:
        need = ("exactly one pretrained init" if len(pretrained) != 1
                else "at least one random init (random:SEED) or another baseline "
                     "(random:SEED+bn, shuffled:SEED)")
        raise ProbeInputError(
            f"knowledge gain needs {need}; the selected inits are: {', '.join(inits) or 'none'}; "
            "extract the missing one (`featstore extract DATA --store STORE --init pretrained "
            "--init random:0-4`) or choose inits with --inits"
        )
    return pretrained[0], {g: [inits[i] for i in idx] for g, idx in members.items()}


def parse_margin(value: float) -> float:
    """The sweet spot's non-inferiority margin: a finite number > 0 (metric units), or raise.

    Raises
    ------
    ProbeInputError
        Naming ``--margin`` and what is allowed.
    """
    if isinstance(value, bool) or not isinstance(value, float | int) \
            or not math.isfinite(value) or not 0 < value < 1:
        raise ProbeInputError(
            f"invalid --margin {value!r}; must be a number in (0, 1), in metric units "
            f"(default {DEFAULT_MARGIN}: a layer within one point of the best counts as "
            "as good)"
        )
    return float(value)


def normalized_gain(pretrained: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Gain as a share of what was possible, defined everywhere in ``[0, 1]`` x ``[0, 1]``.

    ``gain / (1 - baseline)`` when the gain is positive (the share of the baseline's headroom
    to a perfect score that pretraining recovers), ``gain / baseline`` when it is negative (the
    share of the baseline's own score that pretraining loses), and 0 when the two are equal --
    including at the ceiling, ``baseline == pretrained == 1``. The value lies in ``[-1, 1]``;
    NaN only where an input is NaN.

    Parameters
    ----------
    pretrained, baseline : ndarray
        Metric values in ``[0, 1]``, broadcastable.

    Returns
    -------
    ndarray of float64
    """
    pre = np.asarray(pretrained, dtype=np.float64)
    base = np.asarray(baseline, dtype=np.float64)
    gain = pre - base
    with np.errstate(divide="ignore", invalid="ignore"):
        up = gain / (1.0 - base)
        down = gain / base
    out = np.where(gain > 0, up, np.where(gain < 0, down, 0.0))
    return np.where(np.isnan(gain), np.nan, out)


def _fold_weights(n_rows: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each test image of a fold is drawn in each replicate, shape (n_boot, n_rows)."""
    return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot).astype(np.float64)


def _cluster_weights(groups: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each test image of a fold is drawn in each replicate when its groups are
    resampled: ``n_groups`` draws with replacement of the fold's groups (sorted by name), each
    draw bringing every image of its group. Shape (n_boot, n_rows)."""
    names, member = np.unique(np.asarray([str(g) for g in groups], dtype=object),
                              return_inverse=True)
    counts = rng.multinomial(names.size, np.full(names.size, 1.0 / names.size), size=n_boot)
    return counts[:, member.ravel()].astype(np.float64)


def _boot_fold_scores(weights: np.ndarray, truth: np.ndarray, predictions: np.ndarray,
                      n_classes: int) -> np.ndarray:
    """Metrics of every prediction set on every bootstrap replicate of one fold.

    Parameters
    ----------
    weights : ndarray, shape (n_boot, n_rows)
        Draw counts of the fold's test images.
    truth : ndarray of int, shape (n_rows,)
    predictions : ndarray of int, shape (n_sets, n_rows)
    n_classes : int

    Returns
    -------
    ndarray, shape (n_boot, n_sets, 3)
    """
    K2 = n_classes * n_classes
    n_sets, n_rows = predictions.shape
    out = np.empty((weights.shape[0], n_sets, len(METRICS)))
    step = max(1, _BLOCK_BYTES // max(1, 8 * n_rows * K2))
    cells = truth[None, :] * n_classes + predictions  # (n_sets, n_rows)
    for start in range(0, n_sets, step):
        part = cells[start:start + step]
        onehot = np.zeros((n_rows, part.shape[0], K2))
        onehot[np.arange(n_rows)[None, :], np.arange(part.shape[0])[:, None], part] = 1.0
        confusion = weights @ onehot.reshape(n_rows, -1)
        confusion = confusion.reshape(weights.shape[0], part.shape[0], n_classes, n_classes)
        out[:, start:start + part.shape[0]] = scores_from_confusion(confusion)
    return out


def _seed_shares(rng: np.random.Generator, n_boot: int, n_seeds: int) -> np.ndarray:
    """Weight of each seed in each replicate, shape (n_boot, n_seeds): the seeds are drawn with
    replacement (``n_seeds`` draws) when there are two or more, else weight 1."""
    if n_seeds < 2:
        return np.ones((n_boot, n_seeds))
    draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    counts = np.zeros((n_boot, n_seeds))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts / n_seeds


def _widen(bounds: np.ndarray, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interval ``bounds`` (shape (2, ...): low, high) widened to include ``point``."""
    return np.minimum(bounds[0], point), np.maximum(bounds[1], point)


def _p_best(boot_gain: np.ndarray) -> np.ndarray:
    """Share of replicates in which each layer has the largest gain; ties split evenly.

    Parameters
    ----------
    boot_gain : ndarray, shape (n_boot, C, L, M)

    Returns
    -------
    ndarray, shape (C, L, M)
        Sums to 1 over layers (NaN where every replicate's gains are all NaN).
    """
    filled = np.where(np.isnan(boot_gain), -np.inf, boot_gain)
    top = filled.max(axis=2, keepdims=True)
    with np.errstate(invalid="ignore"):
        wins = np.isfinite(filled) & (top - filled <= TIE_TOLERANCE)
    n_wins = wins.sum(axis=2, keepdims=True)
    share = wins / np.maximum(n_wins, 1)
    p_best = share.mean(axis=0)
    valid = (n_wins > 0).any(axis=0)  # (C, 1, M)
    return np.where(valid, p_best, np.nan)


def knowledge_gain(results: xr.Dataset, n_boot: int = 1000, seed: int = 0,
                   confidence: float = 0.95, margin: float = DEFAULT_MARGIN) -> xr.Dataset:
    """Knowledge gain of every layer, classifier, metric and baseline, with bootstrap statistics.

    Parameters
    ----------
    results : xarray.Dataset
        Probe results (:func:`featstore.open_results`), with exactly one init whose
        ``init_kind`` is ``"pretrained"`` and at least one init of a baseline group
        (``"random"``, ``"random+bn"``, ``"shuffled"``, ``"shuffled+bn"``).
    n_boot : int
        Bootstrap replicates.
    seed : int
        Seed of the resampling.
    confidence : float
        Coverage of the intervals, in (0, 1).
    margin : float
        Non-inferiority margin of the sweet spot, in metric units, in (0, 1).

    Returns
    -------
    xarray.Dataset
        Dims ``(baseline, classifier, layer, metric)``; ``baseline`` lists the groups present
        in :data:`~featstore.inits.BASELINE_GROUPS` order (``random`` first). Float64 variables

        * ``pretrained`` (classifier, layer, metric): mean over folds of the pretrained init's
          metric;
        * ``random``: the baseline's metric, mean over folds and over the group's seeds (the
          name is historical: it holds each baseline group's score);
        * ``gain``: ``pretrained - random``;
        * ``ci_low``, ``ci_high``: the bootstrap interval of ``gain`` (see Notes);
        * ``seed_sd``: standard deviation (ddof 1) across the group's seeds of the per-seed gain
          ``pretrained - metric(seed)`` (NaN with one seed);
        * ``p_best``: share of replicates in which the layer has the largest gain (ties split
          evenly; sums to 1 over layers);
        * ``normalized_gain`` with ``normalized_ci_low``, ``normalized_ci_high``: see
          :func:`normalized_gain`, interval from the same replicates;
        * ``diff_best_ci_low``: lower bound of the interval of ``gain(layer) - gain(best
          layer)``, paired on the same replicates (0 at the best layer);

        str variables of dims ``(baseline, classifier, metric)``

        * ``best_layer``: the layer with the largest gain (the shallowest on ties);
        * ``sweet_spot_layer``: the shallowest layer whose ``diff_best_ci_low > -margin``: a
          layer shown non-inferior to the best one, within ``margin``.

        Coordinates: ``n_seeds`` (baseline), ``layer_module``, ``layer_units`` (layer),
        ``chance`` (metric). Attrs record the method, ``n_boot``, ``seed``, ``confidence``,
        ``margin``, the inits of every group (``baseline_inits``), what each baseline is
        (``baselines``) and the run.

    Raises
    ------
    ProbeInputError
        No pretrained or no baseline init in ``results``, or bad ``n_boot`` / ``confidence`` /
        ``margin``.

    Notes
    -----
    The interval is a paired percentile bootstrap over test images. In each of ``n_boot``
    replicates the test images of every fold are resampled with replacement within that fold
    (strata = folds, so each fold keeps its size); each init's per-fold metric is recomputed
    from its stored out-of-fold predictions on the *same* resampled images (paired), averaged
    over folds as the point estimate is, and the replicate's gain is pretrained minus the mean
    over the baseline's seeds. With two or more seeds in a group the seeds are also resampled
    with replacement in each replicate, so the spread between seeds widens the interval; with a
    single seed that variance is not estimable and is not included (``seed_sd`` is NaN). The
    random numbers are drawn in a fixed order -- every fold's image draws, then the seed draws
    of each group in :data:`~featstore.inits.BASELINE_GROUPS` order -- so the ``random``
    baseline's numbers do not depend on which other groups are present. The interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the replicate gains;
    when a biased resampled statistic (typically macro-F1 with rare classes) would leave the
    point estimate outside, the interval is widened to include it.

    The sweet spot is a non-inferiority test on the same replicates: for every layer the
    replicate differences ``gain(layer) - gain(best)`` give an interval whose lower bound (the
    ``(1 - confidence) / 2`` quantile) must lie above ``-margin``. This accounts for the best
    layer's own noise (and its winner's-curse bias), and less data widens the differences'
    intervals, so the sweet spot moves *deeper* with less data, towards the best layer, never
    shallower.

    Grouped results (a ``group`` coordinate, from ``featstore probe --group-by`` or
    ``--group-regex``) are resampled by group instead (cluster bootstrap,
    :data:`CLUSTER_CI_METHOD`): in each fold the test images' groups, sorted by name, are drawn
    with replacement as many times as the fold has groups, and each draw brings all of its
    group's test images, so a fold's resampled size varies. Images of one patient are not
    independent; resampling them one by one would make the interval too narrow. The random
    numbers are drawn in the same order (per fold, then the seeds).

    The intervals describe the uncertainty due to the finite test sample (and, with several
    seeds, the seeds), for the classifiers as trained; the variance of refitting on other
    training sets or fold partitions is not included (that would need repeated
    cross-validation).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ProbeInputError(f"invalid n_boot {n_boot!r}; must be an integer >= 1")
    if not 0.0 < float(confidence) < 1.0:
        raise ProbeInputError(f"invalid confidence {confidence!r}; must be in (0, 1)")
    margin = parse_margin(margin)
    inits = [str(v) for v in results[S.INIT].values]
    kinds = init_kinds(results)
    pretrained_name, baseline_inits = check_gain_inits(inits, kinds)
    pre = kinds.index("pretrained")
    members = _baseline_members(kinds)
    groups = list(members)
    used = [pre] + [i for g in groups for i in members[g]]
    # position of each group's inits among `used`
    position: dict[str, list[int]] = {}
    for g in groups:
        start = 1 + sum(len(members[h]) for h in groups[:groups.index(g)])
        position[g] = list(range(start, start + len(members[g])))

    score = results["score"].transpose(CLASSIFIER, LAYER, S.INIT, FOLD, METRIC).values
    pretrained = score[:, :, pre].mean(axis=2)  # (C, L, M)

    # bootstrap replicates of the fold-mean metric of every (classifier, layer, used init)
    prediction = results["prediction"].transpose(CLASSIFIER, LAYER, S.INIT, S.IMAGE).values
    prediction = prediction[:, :, used]
    labels = np.asarray(results[S.LABEL].values, dtype=np.int64)
    test_fold = np.asarray(results[TEST_FOLD].values, dtype=np.int64)
    n_c, n_l, n_u, _ = prediction.shape
    n_m = len(METRICS)
    folds = results.sizes[FOLD]
    info = probe_info(results)
    n_classes = max(len(info.get("classes", []) or []), int(labels.max(initial=0)) + 1,
                    int(prediction.max(initial=0)) + 1)
    clusters = (np.asarray([str(v) for v in results[GROUP].values], dtype=object)
                if GROUP in results.coords else None)
    rng = np.random.default_rng(seed)
    boot = np.zeros((n_boot, n_c, n_l, n_u, n_m))
    for f in range(folds):
        rows = np.flatnonzero(test_fold == f)
        if rows.size == 0:
            raise ProbeInputError(f"fold {f} of the results has no test images")
        weights = (_fold_weights(rows.size, n_boot, rng) if clusters is None
                   else _cluster_weights(clusters[rows], n_boot, rng))
        sets = prediction[:, :, :, rows].reshape(-1, rows.size).astype(np.int64)
        if (sets < 0).any():
            raise ProbeInputError("results lack a prediction for some test image; rerun "
                                  "`featstore probe --force`")
        boot += _boot_fold_scores(weights, labels[rows], sets, n_classes).reshape(
            n_boot, n_c, n_l, n_u, n_m) / folds
    shares = {g: _seed_shares(rng, n_boot, len(members[g])) for g in groups}

    alpha = 1.0 - float(confidence)
    quantiles = [alpha / 2, 1.0 - alpha / 2]
    shape = (len(groups), n_c, n_l, n_m)
    out = {name: np.empty(shape) for name in (
        "random", "gain", "ci_low", "ci_high", "seed_sd", "p_best", "normalized_gain",
        "normalized_ci_low", "normalized_ci_high", "diff_best_ci_low")}
    best = np.empty((len(groups), n_c, n_m), dtype=object)
    sweet = np.empty((len(groups), n_c, n_m), dtype=object)
    layers = np.array([str(v) for v in results[LAYER].values], dtype=object)
    for k, g in enumerate(groups):
        per_seed = score[:, :, members[g]].mean(axis=3)  # (C, L, R, M)
        base = score[:, :, members[g]].mean(axis=(2, 3))
        gain = pretrained - base
        boot_base = np.einsum("bclrm,br->bclm", boot[:, :, :, position[g]], shares[g])
        boot_gain = boot[:, :, :, 0] - boot_base
        low, high = _widen(np.quantile(boot_gain, quantiles, axis=0), gain)
        norm = normalized_gain(pretrained, base)
        boot_norm = normalized_gain(boot[:, :, :, 0], boot_base)
        nlow, nhigh = _widen(np.quantile(boot_norm, quantiles, axis=0), norm)
        seed_sd = (np.std(pretrained[:, :, None] - per_seed, axis=2, ddof=1)
                   if len(members[g]) > 1 else np.full(gain.shape, np.nan))
        # best layer: the largest point gain, the shallowest on ties
        finite = ~np.isnan(gain).all(axis=1)  # (C, M)
        top = np.argmax(np.where(np.isnan(gain), -np.inf, gain), axis=1)  # (C, M)
        at_best = np.take_along_axis(boot_gain, top[None, :, None, :], axis=2)
        diff_low = np.quantile(boot_gain - at_best, alpha / 2, axis=0)  # (C, L, M)
        ok = diff_low > -margin
        ok[np.arange(n_c)[:, None], top, np.arange(n_m)[None, :]] = True
        first = np.argmax(ok, axis=1)  # (C, M)
        best[k] = np.where(finite, layers[top], "")
        sweet[k] = np.where(finite, layers[first], "")
        for name, value in (("random", base), ("gain", gain), ("ci_low", low),
                            ("ci_high", high), ("seed_sd", seed_sd),
                            ("p_best", _p_best(boot_gain)), ("normalized_gain", norm),
                            ("normalized_ci_low", nlow), ("normalized_ci_high", nhigh),
                            ("diff_best_ci_low", diff_low)):
            out[name][k] = value

    dims = (BASELINE, CLASSIFIER, LAYER, METRIC)
    coords: dict[str, Any] = {
        BASELINE: np.array(groups, dtype=object),
        CLASSIFIER: results[CLASSIFIER].values.astype(object),
        LAYER: layers,
        METRIC: results[METRIC].values.astype(object),
        N_SEEDS: (BASELINE, np.array([len(members[g]) for g in groups], dtype=np.int64)),
    }
    for name in (LAYER_MODULE, LAYER_UNITS):
        if name in results.coords:
            coords[name] = (LAYER, results[name].values)
    if "chance" in results.coords:
        coords["chance"] = (METRIC, results["chance"].values)
    data: dict[str, Any] = {"pretrained": ((CLASSIFIER, LAYER, METRIC), pretrained)}
    data.update({name: (dims, value) for name, value in out.items()})
    data["best_layer"] = ((BASELINE, CLASSIFIER, METRIC), best)
    data["sweet_spot_layer"] = ((BASELINE, CLASSIFIER, METRIC), sweet)
    grouped: dict[str, Any] = {}
    if clusters is not None:
        grouped["bootstrap_groups_per_fold"] = [
            len(set(clusters[test_fold == f].tolist())) for f in range(folds)]
    return xr.Dataset(
        data,
        coords=coords,
        attrs={
            **grouped,
            "ci_method": CI_METHOD if clusters is None else CLUSTER_CI_METHOD,
            "confidence": float(confidence),
            "n_boot": int(n_boot),
            "seed": int(seed),
            "margin": margin,
            "pretrained_init": pretrained_name,
            "baseline_inits": baseline_inits,
            "random_inits": baseline_inits.get("random", []),
            "baselines": {g: BASELINE_DESCRIPTIONS[g] for g in groups},
            "seed_variance": {
                g: (f"included: {len(members[g])} seeds resampled in every replicate"
                    if len(members[g]) > 1 else
                    "not estimable with one seed; not included") for g in groups},
            "normalized_gain": "gain / (1 - baseline) when positive (share of the baseline's "
                               "headroom recovered), gain / baseline when negative (share of "
                               "the baseline's score lost), 0 when equal; in [-1, 1]",
            "sweet_spot": f"shallowest layer whose {confidence:.0%} CI of gain(layer) - "
                          f"gain(best layer) has its lower bound above -{margin:g}",
            "p_best": "share of bootstrap replicates in which the layer has the largest gain "
                      "(ties split evenly)",
            "run": str(info.get("run", "")),
        },
    )
