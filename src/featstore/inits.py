"""``--init`` values: how a model's weights are initialised, parsed once.

An init is ``pretrained`` (the model's ImageNet weights), ``pretrained:WEIGHTS`` (named weights),
``pretrained:PATH`` (a local state-dict checkpoint) or ``random:SEED`` (the architecture's own
random initialisation, seeded). :func:`parse_init` turns user text into an :class:`InitSpec`;
:func:`init_kind` answers "which kind is this stored init name?" with the same grammar, without
touching the filesystem, so that every part of featstore classifies inits the same way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Final, Literal

from .errors import InitSpecError

__all__ = ["INIT_KINDS", "InitSpec", "parse_init", "init_kind"]

#: the kinds of init, in the order reports show them
INIT_KINDS: Final = ("pretrained", "random")
#: largest seed torch.manual_seed accepts
_MAX_SEED: Final = 2**64 - 1

#: torchvision weights names: a member (``IMAGENET1K_V2``, ``DEFAULT``), optionally qualified by
#: its enum class (``ResNet50_Weights.IMAGENET1K_V2``). Members are upper case in torchvision.
_WEIGHTS_RE: Final = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*\.)?[A-Z_][A-Z0-9_]*")
_SEED_RE: Final = re.compile(r"[0-9]+")
_CHECKPOINT_SUFFIXES: Final = (".pth", ".pt")
_INIT_FORMS: Final = (
    "allowed: 'pretrained', 'pretrained:WEIGHTS' (e.g. IMAGENET1K_V2 or "
    "ResNet50_Weights.IMAGENET1K_V2), 'pretrained:/path/to/checkpoint.pth' (or .pt) and "
    "'random:SEED' (SEED a non-negative integer)"
)


@dataclass(frozen=True)
class InitSpec:
    """How a model's weights are initialised: ImageNet weights, a checkpoint, or seeded random.

    Parameters
    ----------
    kind : {"pretrained", "random"}
        ``"pretrained"`` loads trained weights; ``"random"`` draws the architecture's own random
        initialisation from ``seed``.
    weights : str or None
        torchvision weights name, short (``"IMAGENET1K_V1"``), qualified
        (``"ResNet18_Weights.IMAGENET1K_V1"``) or ``"DEFAULT"``; None means the model's default
        weights. Only with ``kind="pretrained"``.
    path : str or None
        Absolute path of a local state-dict checkpoint (``.pth``/``.pt``). Only with
        ``kind="pretrained"``, not together with ``weights``.
    seed : int or None
        Seed of the random initialisation, in ``[0, 2**64)``. Required with ``kind="random"``.

    Raises
    ------
    InitSpecError
        When the fields do not form one of the forms above.
    """

    kind: Literal["pretrained", "random"]
    weights: str | None = None
    path: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "random":
            seed = self.seed
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
                raise InitSpecError(
                    f"random init needs a seed in [0, 2**64), got {seed!r}; {_INIT_FORMS}"
                )
            if self.weights is not None or self.path is not None:
                raise InitSpecError("a random init takes a seed only, no weights or path")
        elif self.kind == "pretrained":
            if self.seed is not None:
                raise InitSpecError(
                    f"a pretrained init takes no seed (got {self.seed!r}); {_INIT_FORMS}"
                )
            if self.weights is not None and self.path is not None:
                raise InitSpecError("a pretrained init takes weights or a path, not both")
            if self.weights is not None and not _is_weights_name(self.weights):
                raise InitSpecError(f"malformed weights name {self.weights!r}; {_INIT_FORMS}")
            if self.path is not None and not (
                os.path.isabs(self.path) and self.path.endswith(_CHECKPOINT_SUFFIXES)
            ):
                raise InitSpecError(
                    f"checkpoint path {self.path!r} must be absolute and end in .pth or .pt"
                )
        else:
            raise InitSpecError(f"unknown init kind {self.kind!r}; {_INIT_FORMS}")

    @property
    def name(self) -> str:
        """Canonical text of this init, accepted by :func:`parse_init`.

        Examples: ``"pretrained"``, ``"pretrained:IMAGENET1K_V1"``,
        ``"pretrained:/abs/ckpt.pth"``, ``"random:0"``.
        """
        if self.kind == "random":
            return f"random:{self.seed}"
        if self.path is not None:
            return f"pretrained:{self.path}"
        if self.weights is not None:
            return f"pretrained:{self.weights}"
        return "pretrained"


def _is_weights_name(text: str) -> bool:
    return _WEIGHTS_RE.fullmatch(text) is not None and not _looks_like_path(text)


def _looks_like_path(text: str) -> bool:
    seps = [sep for sep in (os.sep, os.altsep, "/") if sep]
    return (
        any(sep in text for sep in seps)
        or text.startswith("~")
        or text.endswith(_CHECKPOINT_SUFFIXES)
    )


def _split_init(text: str) -> tuple[str, str, str]:
    """``(kind, separator, argument)`` of an init text, or raise naming the allowed forms."""
    if not isinstance(text, str):
        raise InitSpecError(f"--init must be text, got {text!r}; {_INIT_FORMS}")
    value = text.strip()
    kind, sep, arg = value.partition(":")
    if kind not in INIT_KINDS:
        raise InitSpecError(f"bad --init {text!r}; {_INIT_FORMS}")
    return kind, sep, arg


def init_kind(name: str) -> str:
    """The kind of an init name, as :func:`parse_init` would decide it (no file is opened).

    Parameters
    ----------
    name : str
        An init name as stored, e.g. ``"pretrained"``, ``"pretrained:/abs/ckpt.pth"``,
        ``"random:0"``.

    Returns
    -------
    str
        One of :data:`INIT_KINDS`.

    Raises
    ------
    InitSpecError
        For a name that is no init.
    """
    return _split_init(name)[0]


def parse_init(text: str) -> InitSpec:
    """Parse an ``--init`` value.

    Parameters
    ----------
    text : str
        One of ``"pretrained"``, ``"pretrained:WEIGHTS"`` (``IMAGENET1K_V2``,
        ``ResNet50_Weights.IMAGENET1K_V2`` or ``DEFAULT``), ``"pretrained:PATH"`` (an existing
        ``.pth``/``.pt`` file; relative paths and ``~`` are made absolute) or ``"random:SEED"``
        (a non-negative integer). Surrounding whitespace is ignored.

    Returns
    -------
    InitSpec
        The normalised spec; ``parse_init(spec.name) == spec``.

    Raises
    ------
    InitSpecError
        One line naming the bad value and the allowed forms. Whether named weights exist for a
        model is checked later, by :func:`build_model`.
    """
    kind, sep, arg = _split_init(text)
    if kind == "pretrained":
        if not sep:
            return InitSpec("pretrained")
        if _looks_like_path(arg):
            return InitSpec("pretrained", path=_parse_checkpoint_path(arg, text))
        if _WEIGHTS_RE.fullmatch(arg):
            return InitSpec("pretrained", weights=arg)
        raise InitSpecError(
            f"bad --init {text!r}: {arg!r} is neither a weights name nor a .pth/.pt path; "
            f"{_INIT_FORMS}"
        )
    if not _SEED_RE.fullmatch(arg):  # kind == "random"
        raise InitSpecError(
            f"bad --init {text!r}: the seed must be a non-negative integer, as in "
            f"'random:0'; {_INIT_FORMS}"
        )
    seed = int(arg)
    if seed > _MAX_SEED:
        raise InitSpecError(f"bad --init {text!r}: the seed must be below 2**64")
    return InitSpec("random", seed=seed)


def _parse_checkpoint_path(arg: str, text: str) -> str:
    path = os.path.abspath(os.path.expanduser(arg))
    if not path.endswith(_CHECKPOINT_SUFFIXES):
        raise InitSpecError(
            f"bad --init {text!r}: a checkpoint must be a .pth or .pt file; {_INIT_FORMS}"
        )
    if not os.path.isfile(path):
        raise InitSpecError(f"bad --init {text!r}: checkpoint file '{path}' does not exist")
    return path


