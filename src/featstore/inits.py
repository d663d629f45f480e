"""``--init`` values: how a model's weights are initialised, parsed once.

An init is ``pretrained`` (the model's ImageNet weights), ``pretrained:WEIGHTS`` (named weights),
``pretrained:PATH`` (a local state-dict checkpoint: ``.pth``, ``.pt``, ``.bin`` or
``.safetensors``), ``pretrained:hf-hub:ORG/NAME`` (weights of a Hugging Face hub model),
``random:SEED`` (the architecture's own random initialisation, seeded) or ``shuffled:SEED`` (the
pretrained weights permuted within each tensor); any of them with ``+bn`` re-estimates the
normalization statistics on the data.
:func:`parse_init` / :func:`parse_inits` turn user text into :class:`InitSpec` objects (ranges
such as ``random:0-4`` expand to five); :func:`init_kind` answers "which group is this stored
init name?" with the same grammar, without touching the filesystem, so that every part of
featstore classifies inits the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from .errors import InitSpecError

__all__ = ["INIT_KINDS", "RECALIBRATED", "BASELINE_GROUPS", "HF_HUB_PREFIX", "InitSpec",
           "parse_init", "parse_inits", "init_kind"]

#: the kinds of init: trained weights, the architecture's seeded random initialisation, and the
#: trained weights with every tensor's entries permuted (seeded)
INIT_KINDS: Final = ("pretrained", "random", "shuffled")
#: suffix of an init whose normalization statistics are re-estimated on the data (AdaBN)
RECALIBRATED: Final = "+bn"
#: largest seed torch.manual_seed accepts
_MAX_SEED: Final = 2**64 - 1

#: torchvision weights names: a member (``IMAGENET1K_V2``, ``DEFAULT``), optionally qualified by
#: its enum class (``ResNet50_Weights.IMAGENET1K_V2``). Members are upper case in torchvision.
_WEIGHTS_RE: Final = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*\.)?[A-Z_][A-Z0-9_]*")
_SEED_RE: Final = re.compile(r"[0-9]+")
_RANGE_RE: Final = re.compile(r"([0-9]+)-([0-9]+)")
_CHECKPOINT_SUFFIXES: Final = (".pth", ".pt", ".bin", ".safetensors")
#: prefix of a Hugging Face hub model id in ``pretrained:hf-hub:ORG/NAME``
HF_HUB_PREFIX: Final = "hf-hub:"
#: a hub repository id ``ORG/NAME`` (letters, digits, ``-``, ``_``, ``.``; no ``--``/``..``)
_HUB_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")
#: at most this many inits from one seed range
_MAX_RANGE: Final = 1000
_INIT_FORMS: Final = (
    "allowed: 'pretrained', 'pretrained:WEIGHTS' (e.g. IMAGENET1K_V2 or "
    "ResNet50_Weights.IMAGENET1K_V2), 'pretrained:/path/to/checkpoint.pth' (or .pt, .bin, "
    ".safetensors), 'pretrained:hf-hub:ORG/NAME' (a Hugging Face hub model), "
    "'random:SEED' (SEED a non-negative integer; 'random:0-4' for seeds 0 to 4), "
    "'shuffled:SEED' (the pretrained weights permuted within each tensor), each optionally "
    "followed by '+bn' (normalization statistics re-estimated on the data)"
)


@dataclass(frozen=True)
class InitSpec:
    """How a model's weights are initialised.

    Parameters
    ----------
    kind : {"pretrained", "random", "shuffled"}
        ``"pretrained"`` loads trained weights; ``"random"`` draws the architecture's own random
        initialisation from ``seed``; ``"shuffled"`` loads the model's default trained weights
        and permutes the entries of every weight tensor with ``seed`` (each layer keeps its
        weight distribution and scale, the learned structure is destroyed).
    weights : str or None
        torchvision weights name, short (``"IMAGENET1K_V1"``), qualified
        (``"ResNet18_Weights.IMAGENET1K_V1"``) or ``"DEFAULT"``; None means the model's default
        weights. Only with ``kind="pretrained"``.
    path : str or None
        Absolute path of a local state-dict checkpoint (``.pth``, ``.pt``, ``.bin`` or
        ``.safetensors``). Only with ``kind="pretrained"``, not together with ``weights``.
    seed : int or None
        Seed in ``[0, 2**64)``: of the random initialisation, or of the permutation. Required with
        ``kind="random"`` and ``kind="shuffled"``.
    recalibrate : bool
        Re-estimate the normalization layers' running statistics on the data being extracted
        before extracting (``+bn``; see :mod:`featstore.baselines`).
    hub : str or None
        Hugging Face hub model id ``ORG/NAME`` whose weights to load (``pretrained:hf-hub:``).
        Only with ``kind="pretrained"``, not together with ``weights`` or ``path``.

    Raises
    ------
    InitSpecError
        When the fields do not form one of the forms above.
    """

    kind: Literal["pretrained", "random", "shuffled"]
    weights: str | None = None
    path: str | None = None
    seed: int | None = None
    recalibrate: bool = False
    hub: str | None = None

    def __post_init__(self) -> None:
        if self.kind in ("random", "shuffled"):
            seed = self.seed
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
                raise InitSpecError(
                    f"{self.kind} init needs a seed in [0, 2**64), got {seed!r}; {_INIT_FORMS}"
                )
            if self.weights is not None or self.path is not None or self.hub is not None:
                raise InitSpecError(f"a {self.kind} init takes a seed only, no weights or path")
        elif self.kind == "pretrained":
            if self.seed is not None:
                raise InitSpecError(
                    f"a pretrained init takes no seed (got {self.seed!r}); {_INIT_FORMS}"
                )
            if self.weights is not None and self.path is not None:
                raise InitSpecError("a pretrained init takes weights or a path, not both")
            if self.hub is not None and (self.weights is not None or self.path is not None):
                raise InitSpecError(
                    "a pretrained init takes one of weights, a path or a hub model id"
                )
            if self.hub is not None and not _is_hub_id(self.hub):
                raise InitSpecError(
                    f"malformed Hugging Face hub model id {self.hub!r}; expected ORG/NAME, "
                    "as in 'pretrained:hf-hub:MahmoodLab/UNI'"
                )
            if self.weights is not None and not _is_weights_name(self.weights):
                raise InitSpecError(f"malformed weights name {self.weights!r}; {_INIT_FORMS}")
            if self.path is not None and not (
                os.path.isabs(self.path) and self.path.endswith(_CHECKPOINT_SUFFIXES)
            ):
                raise InitSpecError(
                    f"checkpoint path {self.path!r} must be absolute and end in .pth or .pt "
                    "(or .bin, .safetensors)"
                )
        else:
            raise InitSpecError(f"unknown init kind {self.kind!r}; {_INIT_FORMS}")
        if not isinstance(self.recalibrate, bool):
            raise InitSpecError(f"recalibrate must be True or False, got {self.recalibrate!r}")

    @property
    def name(self) -> str:
        """Canonical text of this init, accepted by :func:`parse_init`.

        Examples: ``"pretrained"``, ``"pretrained:IMAGENET1K_V1"``,
        ``"pretrained:/abs/ckpt.pth"``, ``"pretrained:hf-hub:MahmoodLab/UNI"``, ``"random:0"``,
        ``"random:0+bn"``, ``"shuffled:3"``.
        """
        suffix = RECALIBRATED if self.recalibrate else ""
        if self.kind in ("random", "shuffled"):
            return f"{self.kind}:{self.seed}{suffix}"
        if self.hub is not None:
            return f"pretrained:{HF_HUB_PREFIX}{self.hub}{suffix}"
        if self.path is not None:
            return f"pretrained:{self.path}{suffix}"
        if self.weights is not None:
            return f"pretrained:{self.weights}{suffix}"
        return f"pretrained{suffix}"

    @property
    def group(self) -> str:
        """The kind with its ``+bn`` suffix: ``"pretrained"``, ``"random+bn"``, ``"shuffled"``...

        Inits of one group differ only in seed (or weights); the knowledge gain compares the
        ``pretrained`` group with each baseline group (:data:`BASELINE_GROUPS`).
        """
        return self.kind + (RECALIBRATED if self.recalibrate else "")

    @property
    def weights_spec(self) -> InitSpec:
        """The init whose weights this one starts from, before permuting or recalibrating:
        the default ``pretrained`` weights for ``shuffled``, itself without ``+bn`` otherwise."""
        if self.kind == "shuffled":
            return InitSpec("pretrained")
        return InitSpec(self.kind, self.weights, self.path, self.seed, hub=self.hub)


#: init groups the knowledge gain is measured against, in the order reports show them
BASELINE_GROUPS: Final = ("random", "random+bn", "shuffled", "shuffled+bn")


def _is_weights_name(text: str) -> bool:
    return _WEIGHTS_RE.fullmatch(text) is not None and not _looks_like_path(text)


def _is_hub_id(text: str) -> bool:
    return (
        isinstance(text, str)
        and _HUB_RE.fullmatch(text) is not None
        and "--" not in text
        and ".." not in text
    )


def _looks_like_path(text: str) -> bool:
    seps = [sep for sep in (os.sep, os.altsep, "/") if sep]
    return (
        any(sep in text for sep in seps)
        or text.startswith("~")
        or text.endswith(_CHECKPOINT_SUFFIXES)
    )


def _split_init(text: str) -> tuple[str, str, str, bool]:
    """``(kind, separator, argument, +bn)`` of an init text, or raise naming the allowed forms."""
    if not isinstance(text, str):
        raise InitSpecError(f"--init must be text, got {text!r}; {_INIT_FORMS}")
    value = text.strip()
    recalibrate = value.endswith(RECALIBRATED)
    if recalibrate:
        value = value[: -len(RECALIBRATED)]
    kind, sep, arg = value.partition(":")
    if kind not in INIT_KINDS:
        raise InitSpecError(f"bad --init {text!r}; {_INIT_FORMS}")
    return kind, sep, arg, recalibrate


def init_kind(name: str) -> str:
    """The group of an init name (its kind and ``+bn``), as :func:`parse_init` decides it; no
    file is opened.

    Parameters
    ----------
    name : str
        An init name as stored, e.g. ``"pretrained"``, ``"pretrained:/abs/ckpt.pth"``,
        ``"pretrained:/abs/model.safetensors"``, ``"pretrained:hf-hub:ORG/NAME"``,
        ``"random:0"``, ``"random:0+bn"``, ``"shuffled:1"``.

    Returns
    -------
    str
        :attr:`InitSpec.group`: ``"pretrained"``, ``"pretrained+bn"``, ``"random"``,
        ``"random+bn"``, ``"shuffled"`` or ``"shuffled+bn"``.

    Raises
    ------
    InitSpecError
        For a name that is no init.
    """
    kind, _, _, recalibrate = _split_init(name)
    return kind + (RECALIBRATED if recalibrate else "")


def parse_init(text: str) -> InitSpec:
    """Parse an ``--init`` value naming one init.

    Parameters
    ----------
    text : str
        One of ``"pretrained"``, ``"pretrained:WEIGHTS"`` (``IMAGENET1K_V2``,
        ``ResNet50_Weights.IMAGENET1K_V2`` or ``DEFAULT``), ``"pretrained:PATH"`` (an existing
        ``.pth``, ``.pt``, ``.bin`` or ``.safetensors`` file; relative paths and ``~`` are made
        absolute), ``"pretrained:hf-hub:ORG/NAME"`` (a Hugging Face hub model), ``"random:SEED"``
        or ``"shuffled:SEED"`` (a non-negative integer), each optionally followed by ``+bn``.
        Surrounding whitespace is ignored. Seed ranges (``random:0-4``) name several inits:
        see :func:`parse_inits`.

    Returns
    -------
    InitSpec
        The normalised spec; ``parse_init(spec.name) == spec``.

    Raises
    ------
    InitSpecError
        One line naming the bad value and the allowed forms. Whether named weights exist for a
        model is checked later, by :func:`featstore.models.build_model`.
    """
    specs = _parse(text, allow_range=False)
    return specs[0]


def parse_inits(values: str | Sequence[str]) -> list[InitSpec]:
    """Parse ``--init`` values, expanding seed ranges; duplicates are dropped (first kept).

    Parameters
    ----------
    values : str or sequence of str
        E.g. ``["pretrained", "random:0-4", "random:0+bn"]``.

    Returns
    -------
    list of InitSpec
        ``random:0-4`` gives ``random:0`` ... ``random:4``, in order.

    Raises
    ------
    InitSpecError
        For any bad value (see :func:`parse_init`), a descending range or one of more than
        1000 seeds.
    """
    items = [values] if isinstance(values, str) else list(values)
    specs: dict[str, InitSpec] = {}
    for item in items:
        for spec in _parse(item, allow_range=True):
            specs.setdefault(spec.name, spec)
    return list(specs.values())


def _parse(text: str, allow_range: bool) -> list[InitSpec]:
    kind, sep, arg, recalibrate = _split_init(text)
    if kind == "pretrained":
        if not sep:
            return [InitSpec("pretrained", recalibrate=recalibrate)]
        if arg.startswith(HF_HUB_PREFIX):
            hub = arg[len(HF_HUB_PREFIX):]
            if not _is_hub_id(hub):
                raise InitSpecError(
                    f"bad --init {text!r}: {hub!r} is no Hugging Face hub model id; expected "
                    "ORG/NAME, as in 'pretrained:hf-hub:MahmoodLab/UNI'"
                )
            return [InitSpec("pretrained", hub=hub, recalibrate=recalibrate)]
        if _looks_like_path(arg):
            return [InitSpec("pretrained", path=_parse_checkpoint_path(arg, text),
                             recalibrate=recalibrate)]
        if _WEIGHTS_RE.fullmatch(arg):
            return [InitSpec("pretrained", weights=arg, recalibrate=recalibrate)]
        raise InitSpecError(
            f"bad --init {text!r}: {arg!r} is neither a weights name nor a .pth/.pt path "
            f"(nor .bin, .safetensors or hf-hub:ORG/NAME); {_INIT_FORMS}"
        )
    seeds = _parse_seeds(text, kind, arg, allow_range)
    return [InitSpec(kind, seed=seed, recalibrate=recalibrate) for seed in seeds]  # type: ignore[arg-type]


def _parse_seeds(text: str, kind: str, arg: str, allow_range: bool) -> list[int]:
    match = _RANGE_RE.fullmatch(arg)
    if match and allow_range:
        first, last = int(match.group(1)), int(match.group(2))
        if last < first or last > _MAX_SEED or last - first >= _MAX_RANGE:
            raise InitSpecError(
                f"bad --init {text!r}: a seed range FIRST-LAST needs FIRST <= LAST, LAST below "
                f"2**64 and at most {_MAX_RANGE} seeds, as in '{kind}:0-4'"
            )
        return list(range(first, last + 1))
    if not _SEED_RE.fullmatch(arg):
        what = "a non-negative integer" + (" or a range FIRST-LAST" if allow_range else "")
        raise InitSpecError(
            f"bad --init {text!r}: the seed must be {what}, as in '{kind}:0'; {_INIT_FORMS}"
        )
    seed = int(arg)
    if seed > _MAX_SEED:
        raise InitSpecError(f"bad --init {text!r}: the seed must be below 2**64")
    return [seed]


def _parse_checkpoint_path(arg: str, text: str) -> str:
    path = os.path.abspath(os.path.expanduser(arg))
    if not path.endswith(_CHECKPOINT_SUFFIXES):
        raise InitSpecError(
            f"bad --init {text!r}: a checkpoint must be a .pth or .pt file (or .bin, "
            f".safetensors); {_INIT_FORMS}"
        )
    if not os.path.isfile(path):
        raise InitSpecError(f"bad --init {text!r}: checkpoint file '{path}' does not exist")
    return path
