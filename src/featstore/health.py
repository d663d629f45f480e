"""Activation health: is a layer's pooled representation numerically alive? Pure compute.

Three numbers per (init, layer), from the stored pooled features of every valid image:

* ``rms``: root mean square of the pooled features (all images, all units);
* ``constant_fraction``: share of units whose value does not vary over the images;
* ``participation_ratio``: the effective dimensionality of the features' covariance,
  ``(sum of eigenvalues)^2 / (sum of squared eigenvalues) = tr(C)^2 / ||C||_F^2``, between 1 (one
  direction carries everything) and the number of units (isotropic).

A random-weight network whose normalization layers keep their initial statistics shrinks its
activations stage by stage (efficientnet_lite0 ``random:0``: pooled RMS ~1e-9 at ``head``), and
its deep layers then differ from the shallow ones by rounding; :func:`degenerate` names such
(init, layer) pairs so that a user sees them before trusting a gain measured against them.

The statistics are accumulated chunk by chunk (:class:`HealthAccumulator`, centred moments
combined exactly), so memory is bounded by units^2, not images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

__all__ = [
    "RMS_RATIO_BOUNDS",
    "MIN_PARTICIPATION",
    "HealthAccumulator",
    "layer_health",
    "degenerate",
    "degenerate_warning",
]

#: a layer is degenerate when its RMS relative to the pretrained network's same layer leaves
#: these bounds (float32 features then carry the signal in their last bits, float16 not at all)
RMS_RATIO_BOUNDS: Final = (1e-4, 1e4)
#: ... or when its effective dimensionality is below this while the reference network's same
#: layer has at least twice as much (see :func:`_collapsed`)
MIN_PARTICIPATION: Final = 1.1
#: ... or when every unit is constant
_ALL_CONSTANT: Final = 1.0


@dataclass
class HealthAccumulator:
    """Running moments of one (init, layer) over chunks of rows.

    Attributes
    ----------
    n : int
        Rows seen.
    mean : ndarray, shape (units,)
    m2 : ndarray, shape (units, units)
        Sum of outer products of deviations from ``mean`` (the co-moment matrix).
    sumsq : float
        Sum of squared values (for the RMS).
    """

    units: int
    n: int = 0
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    sumsq: float = 0.0

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.units)
        self.m2 = np.zeros((self.units, self.units))

    def add(self, rows: np.ndarray) -> None:
        """Add rows of shape (k, units); non-finite rows must be removed by the caller."""
        X = np.asarray(rows, dtype=np.float64)
        k = X.shape[0]
        if k == 0:
            return
        centre = X.mean(axis=0)
        deviations = X - centre
        total = self.n + k
        delta = centre - self.mean
        self.m2 += deviations.T @ deviations + np.outer(delta, delta) * (self.n * k / total)
        self.mean += delta * (k / total)
        self.n = total
        self.sumsq += float((X**2).sum())

    def result(self) -> dict[str, float]:
        """``{"rms", "constant_fraction", "participation_ratio"}`` (NaN without rows)."""
        if self.n == 0:
            return {"rms": float("nan"), "constant_fraction": float("nan"),
                    "participation_ratio": float("nan")}
        variances = np.maximum(np.diagonal(self.m2) / self.n, 0.0)
        # a unit is constant when its spread is at the rounding level of its magnitude
        scale = np.maximum(np.abs(self.mean), np.sqrt(self.sumsq / (self.n * self.units)))
        constant = np.sqrt(variances) <= 1e-6 * np.maximum(scale, np.finfo(np.float32).tiny)
        trace = float(variances.sum())
        frobenius = float(((self.m2 / self.n) ** 2).sum())
        ratio = trace**2 / frobenius if frobenius > 0 else float("nan")
        return {
            "rms": float(np.sqrt(self.sumsq / (self.n * self.units))),
            "constant_fraction": float(constant.mean()),
            "participation_ratio": float(ratio),
        }


def layer_health(features: np.ndarray) -> dict[str, float]:
    """The health numbers of one block of pooled features, shape (images, units)."""
    accumulator = HealthAccumulator(features.shape[1])
    rows = np.asarray(features)
    accumulator.add(rows[np.isfinite(rows).all(axis=1)])
    return accumulator.result()


def degenerate(health: Mapping[str, Mapping[str, Mapping[str, Any]]],
               reference: str | None = "pretrained") -> list[tuple[str, str, str]]:
    """The (init, layer) pairs whose features are numerically degenerate, and why.

    Parameters
    ----------
    health : mapping
        init name -> layer -> ``{"rms", "constant_fraction", "participation_ratio"}``.
    reference : str or None
        The init whose RMS and effective dimensionality are the yardstick (same layer); without
        it, RMS is judged absolutely against the same bounds and dimensionality is not judged.

    Returns
    -------
    list of (init, layer, reason)
        In the order of ``health``.
    """
    base = health.get(reference, {}) if reference else {}
    found = []
    for init, layers in health.items():
        for layer, stats in layers.items():
            rms = float(stats.get("rms", float("nan")))
            ref = float(base.get(layer, {}).get("rms", 1.0)) if base else 1.0
            ratio = rms / ref if ref > 0 else float("nan")
            low, high = RMS_RATIO_BOUNDS
            reasons = []
            if np.isfinite(ratio) and not low <= ratio <= high:
                relative = f" ({ratio:.1g}x {reference}'s)" if base else ""
                reasons.append(f"RMS {rms:.2g}{relative}")
            if float(stats.get("constant_fraction", 0.0)) >= _ALL_CONSTANT:
                reasons.append("every unit constant")
            elif _collapsed(float(stats.get("participation_ratio", np.inf)),
                            float(base.get(layer, {}).get("participation_ratio", 0.0))
                            if base and init != reference else 0.0):
                reasons.append(f"effective dimensionality "
                               f"{float(stats['participation_ratio']):.2f}")
            if reasons:
                found.append((init, layer, ", ".join(reasons)))
    return found


def _collapsed(ratio: float, reference: float) -> bool:
    """Effective dimensionality near 1 where the reference network's same layer has at least
    twice as much: one direction carries the layer (a raw-scale covariance of H&E features is
    often dominated by one stain-intensity direction in shallow layers of any network, so a low
    value alone is no sign of degeneracy)."""
    return ratio < MIN_PARTICIPATION and ratio < 0.5 * reference


def degenerate_warning(found: list[tuple[str, str, str]]) -> str | None:
    """One line naming every degenerate (init, layer) of :func:`degenerate`, or None.

    Layers of one init are listed together, e.g. ``random:0 at blocks.5-head (RMS 2.4e-05 ...
    at blocks.5)``, and the line suggests the ``+bn`` baseline.
    """
    if not found:
        return None
    by_init: dict[str, list[tuple[str, str]]] = {}
    for init, layer, reason in found:
        by_init.setdefault(init, []).append((layer, reason))
    parts = []
    for init, items in by_init.items():
        layers = [layer for layer, _ in items]
        span = (layers[0] if len(layers) == 1
                else f"{layers[0]} ... {layers[-1]} ({len(layers)} layers)")
        parts.append(f"{init} at {span}: {items[-1][1]} at {items[-1][0]}")
    bases = sorted({init.split("+", 1)[0] for init in by_init if not init.endswith("+bn")})
    hint = (f"; a baseline with re-estimated normalization statistics (--init {bases[0]}+bn) "
            "keeps a healthy scale" if bases and bases[0] != "pretrained" else "")
    return "numerically degenerate features: " + "; ".join(parts) + hint
