"""Classifier specs: the ``--classifier`` grammar and the kinds of probe featstore fits.

=====================  ===============================================  ====================
name                   scikit-learn equivalent                          parameters
=====================  ===============================================  ====================
``logreg``             ``LogisticRegression(C=C)`` (multinomial, L2)     ``C`` (default 1)
``linear-svm``         ``LinearSVC(C=C)`` (squared hinge, one-vs-rest)   ``C`` (default 1)
``ridge``              ``RidgeClassifier(alpha=alpha)``                  ``alpha`` (default 1)
``knn``                ``KNeighborsClassifier(n_neighbors=k)``           ``k`` (default 5)
``nearest-centroid``   ``NearestCentroid()``                             none
=====================  ===============================================  ====================

``logreg:C=auto``, ``linear-svm:C=auto`` and ``ridge:alpha=auto`` choose the value per training
fold by nested cross-validation over a grid (:mod:`featstore.probing.nested`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sklearn.base import BaseEstimator

from featstore.errors import ProbeInputError

__all__ = ["KINDS", "AUTO", "AUTO_PARAMS", "ClassifierSpec", "parse_classifier",
           "parse_classifiers"]


@dataclass(frozen=True)
class _Kind:
    estimator: str
    params: tuple[tuple[str, type, float | int], ...]  # (name in the spec, type, default)
    stats: bool  # fit from sufficient statistics


#: classifier kinds, their parameters (name, type, default) and whether sums suffice to fit them
KINDS: Final[dict[str, _Kind]] = {
    "logreg": _Kind("LogisticProbe", (("C", float, 1.0),), False),
    "linear-svm": _Kind("LinearSVMProbe", (("C", float, 1.0),), False),
    "ridge": _Kind("RidgeProbe", (("alpha", float, 1.0),), True),
    "knn": _Kind("KNNProbe", (("k", int, 5),), False),
    "nearest-centroid": _Kind("NearestCentroidProbe", (), True),
}


#: the parameter value that asks for nested cross-validation over a grid
AUTO: Final = "auto"
#: the parameter of each kind that accepts :data:`AUTO`
AUTO_PARAMS: Final[dict[str, str]] = {"logreg": "C", "linear-svm": "C", "ridge": "alpha"}


def _format_value(value: float | int | str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return format(value, "g") if float(value) != int(value) or abs(value) >= 1e16 else str(
        int(value))


def _allowed_classifiers() -> str:
    parts = []
    for name, kind in KINDS.items():
        params = "".join(f"[:{p}=V1,V2,...{'|auto' if AUTO_PARAMS.get(name) == p else ''}]"
                         for p, _, _ in kind.params)
        parts.append(name + params)
    return ", ".join(parts)


@dataclass(frozen=True)
class ClassifierSpec:
    """One classifier row: a kind and one value per parameter.

    Attributes
    ----------
    kind : str
        A key of :data:`KINDS`, e.g. ``"logreg"``.
    params : tuple of (str, float or int or str)
        Parameter values in the kind's order, e.g. ``(("C", 0.1),)``; :data:`AUTO` (``"auto"``)
        for a value chosen by nested cross-validation.
    """

    kind: str
    params: tuple[tuple[str, float | int | str], ...] = ()

    @property
    def name(self) -> str:
        """Canonical row name, e.g. ``"logreg:C=0.1"``, ``"knn:k=5"``, ``"nearest-centroid"``."""
        return ":".join([self.kind, *(f"{p}={_format_value(v)}" for p, v in self.params)])

    def param(self, name: str) -> Any:
        return dict(self.params)[name]

    @property
    def auto(self) -> str | None:
        """The parameter chosen by nested cross-validation (``"C"``, ``"alpha"``), or None."""
        return next((p for p, v in self.params if v == AUTO), None)

    @property
    def uses_stats(self) -> bool:
        """Whether this classifier is fit from sufficient statistics (ridge, nearest centroid;
        not an ``=auto`` ridge, whose nested cross-validation needs the whole block)."""
        return KINDS[self.kind].stats and self.auto is None

    def with_value(self, value: float) -> ClassifierSpec:
        """This spec with its :attr:`auto` parameter set to ``value``."""
        return ClassifierSpec(self.kind, tuple((p, value if v == AUTO else v)
                                               for p, v in self.params))

    def estimator(self, grid: Sequence[float] | None = None, inner_folds: int | None = None,
                  seed: int = 0) -> BaseEstimator:
        """A fresh, unfitted estimator with these parameters.

        For an ``=auto`` spec, a :class:`~featstore.probing.nested.NestedCVProbe` choosing the
        value over ``grid`` by ``inner_folds``-fold stratified cross-validation (defaults:
        :data:`featstore.config.DEFAULT_AUTO_GRID`, :data:`featstore.config.DEFAULT_INNER_FOLDS`)
        shuffled with ``seed``.
        """
        from .knn import KNNProbe
        from .linear import LinearSVMProbe, LogisticProbe
        from .nested import NestedCVProbe
        from .sufficient import NearestCentroidProbe, RidgeProbe

        if self.auto is not None:
            from featstore.config import DEFAULT_AUTO_GRID, DEFAULT_INNER_FOLDS

            return NestedCVProbe(
                self.with_value(1.0).estimator(), self.auto,
                tuple(DEFAULT_AUTO_GRID if grid is None else grid),
                DEFAULT_INNER_FOLDS if inner_folds is None else inner_folds, seed)
        if self.kind == "logreg":
            return LogisticProbe(C=self.param("C"))
        if self.kind == "linear-svm":
            return LinearSVMProbe(C=self.param("C"))
        if self.kind == "ridge":
            return RidgeProbe(alpha=self.param("alpha"))
        if self.kind == "knn":
            return KNNProbe(n_neighbors=self.param("k"))
        return NearestCentroidProbe()


def _parse_number(kind: str, param: str, typ: type, text: str) -> float | int | str:
    if text.lower() == AUTO and AUTO_PARAMS.get(kind) == param:
        return AUTO
    bad = ProbeInputError(
        f"invalid --classifier value {kind}:{param}={text!r}; {param} must be "
        + ("an integer >= 1" if typ is int else "a number > 0")
        + (" or auto" if AUTO_PARAMS.get(kind) == param else "")
        + f"; allowed: {_allowed_classifiers()}"
    )
    try:
        value: float | int = int(text) if typ is int else float(text)
    except ValueError:
        raise bad from None
    if typ is float and (not math.isfinite(value) or value <= 0):
        raise bad
    if typ is int and value < 1:
        raise bad
    return value


def parse_classifier(value: str) -> tuple[ClassifierSpec, ...]:
    """Parse one ``--classifier`` value into one spec per parameter combination.

    Grammar: ``KIND[:PARAM=V1,V2,...[:PARAM2=...]]``; several values of a parameter (and several
    parameters) give the Cartesian product, in the order written. ``logreg:C=auto``,
    ``linear-svm:C=auto`` and ``ridge:alpha=auto`` choose the value by nested cross-validation.

    Parameters
    ----------
    value : str
        E.g. ``"logreg"``, ``"logreg:C=0.01,0.1,1,10"``, ``"knn:k=1,5"``.

    Returns
    -------
    tuple of ClassifierSpec
        E.g. four specs ``logreg:C=0.01`` ... ``logreg:C=10``.

    Raises
    ------
    ProbeInputError
        Unknown kind or parameter, or a bad value; the message lists what is allowed.
    """
    text = value.strip()
    kind_name, _, rest = text.partition(":")
    kind_name = kind_name.strip().lower().replace("_", "-")
    if kind_name not in KINDS:
        raise ProbeInputError(
            f"unknown --classifier {value!r}; allowed: {_allowed_classifiers()}"
        )
    kind = KINDS[kind_name]
    known = {name: (typ, default) for name, typ, default in kind.params}
    given: dict[str, list[float | int | str]] = {}
    if rest.strip():
        for part in re.split(r":(?=[A-Za-z_]\w*=)", rest.strip()):
            pname, eq, values = part.partition("=")
            pname = pname.strip()
            if not eq or pname not in known:
                allowed = ", ".join(known) or "none"
                raise ProbeInputError(
                    f"unknown parameter {pname!r} in --classifier {value!r}; parameters of "
                    f"{kind_name}: {allowed}; allowed: {_allowed_classifiers()}"
                )
            typ = known[pname][0]
            items = [v.strip() for v in values.split(",") if v.strip()]
            if not items:
                raise ProbeInputError(
                    f"invalid --classifier {value!r}: no value for {pname}; e.g. "
                    f"{kind_name}:{pname}={_format_value(known[pname][1])}"
                )
            given[pname] = [_parse_number(kind_name, pname, typ, v) for v in items]
    combos: list[tuple[tuple[str, float | int | str], ...]] = [()]
    for pname, typ, default in kind.params:
        values_ = given.get(pname, [typ(default)])
        combos = [(*c, (pname, v)) for c in combos for v in values_]
    return tuple(ClassifierSpec(kind_name, c) for c in combos)


def parse_classifiers(values: Sequence[str] | str) -> tuple[ClassifierSpec, ...]:
    """Parse several ``--classifier`` values; duplicate rows are dropped (first one kept).

    Raises
    ------
    ProbeInputError
        See :func:`parse_classifier`, or when no classifier is given.
    """
    items = [values] if isinstance(values, str) else list(values)
    specs: dict[str, ClassifierSpec] = {}
    for item in items:
        for spec in parse_classifier(item):
            specs.setdefault(spec.name, spec)
    if not specs:
        raise ProbeInputError(f"no --classifier given; allowed: {_allowed_classifiers()}")
    return tuple(specs.values())

