"""Knowledge gain per layer with a bootstrap confidence interval (pure compute).

The knowledge gain of a layer (Li & Plataniotis, PLoS ONE 2020) is how much the pretrained
network's features beat the same network with random weights, with the same classifier on the
same folds::

    gain = metric(pretrained) - metric(random)

Both terms are means over folds of the per-fold test metric; ``random`` is also averaged over
every random init (``random:0``, ``random:1``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import xarray as xr

from . import schema as S
from .errors import ProbeInputError
from .inits import init_kind
from .probing import METRICS, scores_from_confusion
from .results import (
    CLASSIFIER,
    FOLD,
    LAYER,
    LAYER_MODULE,
    LAYER_UNITS,
    METRIC,
    TEST_FOLD,
    init_kinds,
    probe_info,
)

__all__ = ["check_gain_inits", "knowledge_gain", "CI_METHOD"]

CI_METHOD: Final = (
    "paired percentile bootstrap over test images, resampled with replacement within each "
    "fold; every init's metric is recomputed from its stored out-of-fold predictions on the "
    "same resample; with two or more random inits they are also resampled with replacement "
    "in every replicate"
)

#: bytes of one-hot matrix built at a time while bootstrapping
_BLOCK_BYTES: Final = 64 * 2**20


def check_gain_inits(inits: Sequence[str], kinds: Sequence[str] | None = None
                     ) -> tuple[str, list[str]]:
    """The pretrained init and the random inits among ``inits``.

    Parameters
    ----------
    inits : sequence of str
        Init names.
    kinds : sequence of str, optional
        Their kinds; default :func:`init_kind` of each name.

    Raises
    ------
    ProbeInputError
        Unless there is exactly one pretrained init and at least one random init.
    """
    kinds = [init_kind(n) for n in inits] if kinds is None else list(kinds)
    pretrained = [n for n, k in zip(inits, kinds, strict=True) if k == "pretrained"]
    random = [n for n, k in zip(inits, kinds, strict=True) if k == "random"]
    if len(pretrained) != 1 or not random:
        need = ("exactly one pretrained init" if len(pretrained) != 1
                else "at least one random init (random:SEED)")
        raise ProbeInputError(
            f"knowledge gain needs {need}; the selected inits are: {', '.join(inits) or 'none'}; "
            "extract the missing one (`featstore extract DATA --store STORE --init pretrained "
            "--init random:0`) or choose inits with --inits"
        )
    return pretrained[0], random


def _fold_weights(n_rows: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each test image of a fold is drawn in each replicate, shape (n_boot, n_rows)."""
    return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot).astype(np.float64)


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


def knowledge_gain(results: xr.Dataset, n_boot: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> xr.Dataset:
    """Knowledge gain of every layer, classifier and metric, with a bootstrap interval.

    Parameters
    ----------
    results : xarray.Dataset
        Probe results (:func:`featstore.open_results`), with exactly one init whose
        ``init_kind`` is ``"pretrained"`` and at least one ``"random"``.
    n_boot : int
        Bootstrap replicates.
    seed : int
        Seed of the resampling.
    confidence : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    xarray.Dataset
        Dims ``(classifier, layer, metric)`` with float64 variables

        * ``pretrained``: mean over folds of the pretrained init's metric;
        * ``random``: mean over folds and random inits;
        * ``gain``: ``pretrained - random``;
        * ``ci_low``, ``ci_high``: the bootstrap interval of ``gain`` (see Notes);
        * ``normalized_gain``: ``gain / (1 - random)``, the share of the headroom the random
          baseline leaves below a perfect score that pretraining recovers (NaN when
          ``random == 1``; it can be negative);

        and str variables of dims ``(classifier, metric)``

        * ``best_layer``: the layer with the largest gain (the shallowest on ties);
        * ``sweet_spot_layer``: the shallowest layer whose ``ci_high`` reaches the best layer's
          gain, i.e. whose gain cannot be told apart from the best one at this confidence -- the
          least transferred depth that keeps the benefit.

        Coordinates ``layer_module``, ``layer_units`` (layer) and ``chance`` (metric) are kept;
        attrs record the method, ``n_boot``, ``seed``, ``confidence``, the inits and the run.

    Raises
    ------
    ProbeInputError
        No pretrained or no random init in ``results``, or bad ``n_boot`` / ``confidence``.

    Notes
    -----
    The interval is a paired percentile bootstrap over test images. In each of ``n_boot``
    replicates the test images of every fold are resampled with replacement within that fold
    (strata = folds, so each fold keeps its size); each init's per-fold metric is recomputed
    from its stored out-of-fold predictions on the *same* resampled images (paired), averaged
    over folds as the point estimate is, and the replicate's gain is pretrained minus the mean
    over random inits. With two or more random inits the random inits are also resampled with
    replacement in each replicate, so the spread between random seeds widens the interval; with
    a single random init that variance is not estimable and is not included. The interval is
    the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the replicate gains;
    when a biased resampled statistic (typically macro-F1 with rare classes) would leave the
    point estimate outside, the interval is widened to include it, so ``ci_low <= gain <=
    ci_high`` always holds.

    The interval describes the uncertainty due to the finite test sample (and the random seeds),
    for the classifiers as trained; the variance of refitting on other training sets is not
    included (that would need repeated cross-validation).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ProbeInputError(f"invalid n_boot {n_boot!r}; must be an integer >= 1")
    if not 0.0 < float(confidence) < 1.0:
        raise ProbeInputError(f"invalid confidence {confidence!r}; must be in (0, 1)")
    inits = [str(v) for v in results[S.INIT].values]
    kinds = init_kinds(results)
    pretrained_name, _ = check_gain_inits(inits, kinds)
    pre = [i for i, k in enumerate(kinds) if k == "pretrained"][0]
    rand = [i for i, k in enumerate(kinds) if k == "random"]

    score = results["score"].transpose(CLASSIFIER, LAYER, S.INIT, FOLD, METRIC).values
    pretrained = score[:, :, pre].mean(axis=2)  # (C, L, M)
    random = score[:, :, rand].mean(axis=(2, 3))
    gain = pretrained - random

    # bootstrap replicates of the fold-mean metric of every (classifier, layer, init)
    prediction = results["prediction"].transpose(CLASSIFIER, LAYER, S.INIT, S.IMAGE).values
    labels = np.asarray(results[S.LABEL].values, dtype=np.int64)
    test_fold = np.asarray(results[TEST_FOLD].values, dtype=np.int64)
    n_c, n_l, n_i, _ = prediction.shape
    folds = results.sizes[FOLD]
    info = probe_info(results)
    n_classes = max(len(info.get("classes", []) or []), int(labels.max(initial=0)) + 1,
                    int(prediction.max(initial=0)) + 1)
    rng = np.random.default_rng(seed)
    boot = np.zeros((n_boot, n_c, n_l, n_i, len(METRICS)))
    for f in range(folds):
        rows = np.flatnonzero(test_fold == f)
        if rows.size == 0:
            raise ProbeInputError(f"fold {f} of the results has no test images")
        weights = _fold_weights(rows.size, n_boot, rng)
        sets = prediction[:, :, :, rows].reshape(-1, rows.size).astype(np.int64)
        if (sets < 0).any():
            raise ProbeInputError("results lack a prediction for some test image; rerun "
                                  "`featstore probe --force`")
        boot += _boot_fold_scores(weights, labels[rows], sets, n_classes).reshape(
            n_boot, n_c, n_l, n_i, len(METRICS)) / folds
    if len(rand) > 1:
        draws = rng.integers(0, len(rand), size=(n_boot, len(rand)))
        share = np.stack([np.bincount(d, minlength=len(rand)) for d in draws]) / len(rand)
    else:
        share = np.ones((n_boot, 1))
    boot_random = np.einsum("bclrm,br->bclm", boot[:, :, :, rand], share)
    boot_gain = boot[:, :, :, pre] - boot_random
    alpha = 1.0 - float(confidence)
    low, high = np.quantile(boot_gain, [alpha / 2, 1.0 - alpha / 2], axis=0)
    low = np.minimum(low, gain)
    high = np.maximum(high, gain)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = np.where(random < 1.0, gain / (1.0 - random), np.nan)

    layers = np.array([str(v) for v in results[LAYER].values], dtype=object)
    best = np.empty((n_c, len(METRICS)), dtype=object)
    sweet = np.empty((n_c, len(METRICS)), dtype=object)
    for c in range(n_c):
        for m in range(len(METRICS)):
            g = gain[c, :, m]
            if np.isnan(g).all():
                best[c, m] = sweet[c, m] = ""
                continue
            b = int(np.nanargmax(g))
            best[c, m] = layers[b]
            sweet[c, m] = layers[int(np.flatnonzero(high[c, :, m] >= g[b])[0])]

    dims = (CLASSIFIER, LAYER, METRIC)
    coords: dict[str, Any] = {
        CLASSIFIER: results[CLASSIFIER].values.astype(object),
        LAYER: layers,
        METRIC: results[METRIC].values.astype(object),
    }
    for name in (LAYER_MODULE, LAYER_UNITS):
        if name in results.coords:
            coords[name] = (LAYER, results[name].values)
    if "chance" in results.coords:
        coords["chance"] = (METRIC, results["chance"].values)
    return xr.Dataset(
        {
            "pretrained": (dims, pretrained),
            "random": (dims, random),
            "gain": (dims, gain),
            "ci_low": (dims, low),
            "ci_high": (dims, high),
            "normalized_gain": (dims, normalized),
            "best_layer": ((CLASSIFIER, METRIC), best),
            "sweet_spot_layer": ((CLASSIFIER, METRIC), sweet),
        },
        coords=coords,
        attrs={
            "ci_method": CI_METHOD,
            "confidence": float(confidence),
            "n_boot": int(n_boot),
            "seed": int(seed),
            "pretrained_init": pretrained_name,
            "random_inits": [inits[i] for i in rand],
            "seed_variance": ("included: random inits resampled in every replicate"
                              if len(rand) > 1 else
                              "not estimable with one random init; not included"),
            "normalized_gain": "gain / (1 - random): share of the random baseline's headroom "
                               "recovered by pretraining",
            "sweet_spot": "shallowest layer whose ci_high >= the best layer's gain",
            "run": str(info.get("run", "")),
        },
    )
