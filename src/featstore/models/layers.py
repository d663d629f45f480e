"""Which layers to read: the ``auto`` set or explicit module paths, and each layer's shape.

Layers are named by their torch module path (``"blocks.3"``, ``"layer2.1"``), the names
``dict(model.named_modules())`` uses; a layer's activation is the output of that module. Every
model's ``auto`` set comes from its registered layer rule (:mod:`featstore.models.registry`),
sorted here in network order.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
from torch import nn

from featstore.errors import FeatstoreInputError, UnknownLayerError, UnknownModelError
from featstore.schema import LayerSpec

from .registry import (
    ChannelAxisRule,
    TokenRule,
    default_channel_axis,
    default_tokens,
    model_entry,
)

__all__ = ["auto_layers", "parse_layers", "describe_layers", "in_network_order",
           "select_for_pool", "extractable_layers"]


def auto_layers(model_name: str, model: nn.Module) -> list[str]:
    """The ``auto`` layer set: the model's block outputs, shallow to deep.

    The stem is taken after its activation and the head after its activation, before pooling;
    which modules those are is the model's registered layer rule (e.g.
    :func:`featstore.models.efficientnet_lite.lite0_layers`: ``stem``, ``blocks.0`` ...
    ``blocks.15``, ``head``; :func:`featstore.models.layer_rules.torchvision_layers` for every
    torchvision architecture).

    Parameters
    ----------
    model_name : str
        Name of the model in the registry.
    model : torch.nn.Module
        The model from :func:`featstore.models.build_model`.

    Returns
    -------
    list of str
        Module paths in network order.
    """
    return in_network_order(model, model_entry(model_name).layer_rule(model))


def _module_order(model: nn.Module) -> dict[str, int]:
    """Position of every submodule path in post-order: children (registration order) before
    their parent, i.e. the order in which a sequential network finishes computing them."""
    order: dict[str, int] = {}

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            path = f"{prefix}.{child_name}" if prefix else child_name
            visit(child, path)
            order.setdefault(path, len(order))

    visit(model, "")
    return order


def _in_network_order(model: nn.Module, names: Sequence[str]) -> list[str]:
    order = _module_order(model)
    return sorted(dict.fromkeys(names), key=lambda name: order[name])

def in_network_order(model: nn.Module, names: Sequence[str]) -> list[str]:
    """``names`` without duplicates, in network order (see :func:`_module_order`)."""
    order = _module_order(model)
    return sorted(dict.fromkeys(names), key=lambda name: order[name])

def parse_layers(model_name: str, model: nn.Module, spec: str | Sequence[str]) -> list[str]:
    """Parse a layer selection.

    Parameters
    ----------
    model_name : str
        Name of the model (for messages).
    model : torch.nn.Module
        The model the layers belong to.
    spec : str or sequence of str
        ``"auto"`` (see :func:`auto_layers`) or module paths of ``model``, comma-separated
        (``"layer1.0,layer4"``) or as a list; ``"auto"`` may be mixed with explicit paths.

    Returns
    -------
    list of str
        Module paths without duplicates, in network order (shallow to deep: registration order,
        a module after its own submodules).

    Raises
    ------
    UnknownLayerError
        For a path that is not in ``dict(model.named_modules())``, with close matches, or for an
        empty selection.
    """
    tokens = [spec] if isinstance(spec, str) else list(spec)
    names = [part.strip() for token in tokens for part in str(token).split(",")]
    if not names or any(not name for name in names):
        raise UnknownLayerError(
            f"empty layer name in {spec!r} for {model_name}; pass 'auto' or module paths "
            f"separated by commas; `featstore layers {model_name}` lists them"
        )
    known = _module_order(model)
    selected: list[str] = []
    for name in names:
        if name == "auto":
            selected.extend(auto_layers(model_name, model))
        elif name in known:
            selected.append(name)
        else:
            close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
            hint = f"did you mean: {', '.join(close)}? " if close else ""
            raise UnknownLayerError(
                f"unknown layer {name!r} for {model_name}; {hint}"
                f"`featstore layers {model_name}` lists them"
            )
    return in_network_order(model, selected)


def _channel_axis_rule(model_name: str) -> ChannelAxisRule:
    """The registered channel-axis rule of a model; the default one for a module that is not
    registered (``describe_layers`` also serves ad-hoc modules, named for messages only)."""
    try:
        return model_entry(model_name).channel_axis
    except UnknownModelError:
        return default_channel_axis


def _token_rule(model_name: str) -> TokenRule:
    try:
        return model_entry(model_name).tokens
    except UnknownModelError:
        return default_tokens


def _units(shape: tuple[int, ...], channel_axis: int) -> int:
    return shape[channel_axis] if shape else 1


def describe_layers(
    model_name: str, model: nn.Module, layers: Sequence[str], image_size: int
) -> list[LayerSpec]:
    """Shapes and unit counts of layer activations, from one forward pass of a zeros batch.

    Parameters
    ----------
    model_name : str
        Name of the model in the registry (its channel-axis rule applies), or any name of an
        unregistered module (for messages; the default rule applies).
    model : torch.nn.Module
        The model, in eval mode.
    layers : sequence of str
        Module paths (see :func:`parse_layers`).
    image_size : int
        Side S of the square input; the pass runs on zeros of shape (1, 3, S, S).

    Returns
    -------
    list of LayerSpec
        One per layer, in the order given. ``units`` is the channel dimension: ``shape[0]`` of a
        (C, H, W) map, ``shape[-1]`` of a (n_tokens, C) sequence or of a Swin (H, W, C) map;
        ``prefix_tokens`` and ``class_token`` come from the model's token rule.

    Raises
    ------
    UnknownLayerError
        For a path not in the model.
    FeatstoreInputError
        When the model cannot run on ``image_size`` pixels, or a layer does not output exactly
        one tensor in the pass (it is skipped in eval mode, reused, or returns a tuple).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise FeatstoreInputError(f"image size must be a positive integer, got {image_size!r}")
    channel_axis = _channel_axis_rule(model_name)
    tokens = _token_rule(model_name)
    modules = dict(model.named_modules())
    unknown = [layer for layer in layers if layer not in modules or not layer]
    if unknown:
        parse_layers(model_name, model, unknown)  # raises UnknownLayerError with close matches
    outputs: dict[str, list[Any]] = {layer: [] for layer in layers}

    def hook_for(layer: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            outputs[layer].append(output)

        return hook

    handles = [modules[layer].register_forward_hook(hook_for(layer)) for layer in outputs]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    except (RuntimeError, ValueError, AssertionError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise FeatstoreInputError(
            f"{model_name} cannot run on {image_size}x{image_size} images: {reason}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    infos = []
    for layer in layers:
        seen = outputs[layer]
        if len(seen) != 1 or not isinstance(seen[0], torch.Tensor):
            what = (
                "does not run in eval mode"
                if not seen
                else f"runs {len(seen)} times per pass"
                if len(seen) > 1
                else f"returns {type(seen[0]).__name__}, not a tensor"
            )
            raise FeatstoreInputError(
                f"layer {layer!r} of {model_name} {what}; choose another module "
                f"(`featstore layers {model_name}` lists them)"
            )
        shape = tuple(int(n) for n in seen[0].shape[1:])
        axis = channel_axis(model, layer, shape) if shape else 0
        prefix, cls = tokens(model, layer, shape) if len(shape) == 2 else (0, False)
        infos.append(LayerSpec(name=layer, units=_units(shape, axis), shape=shape,
                               channel_axis=axis, prefix_tokens=int(prefix),
                               class_token=bool(cls)))
    return infos


def _poolable(info: LayerSpec, pool: str) -> bool:
    return pool != "cls" or info.class_token or len(info.shape) <= 1


def select_for_pool(model_name: str, infos: Sequence[LayerSpec], pool: str,
                    explicit: Collection[str] = ()) -> list[LayerSpec]:
    """The layers a pooling can read: all of them, except that ``cls`` reads only token
    sequences with a class token (and flat vectors, which every pool keeps as they are).

    Parameters
    ----------
    model_name : str
        Name of the model (for messages).
    infos : sequence of LayerSpec
        The selected layers (:func:`describe_layers`).
    pool : {"avg", "max", "cls"}
        The pooling.
    explicit : collection of str
        Layers the user named (not through ``auto``): with ``cls``, one of them without a class
        token is an error, while ``auto`` layers without one (a patch embedding, a CNN stage)
        are left out.

    Returns
    -------
    list of LayerSpec
        ``infos`` in order, without the left-out layers.

    Raises
    ------
    FeatstoreInputError
        For ``cls`` on a named layer without a class token, or when no layer has one.
    """
    named = set(explicit)
    for info in infos:
        if info.name in named and not _poolable(info, pool):
            raise FeatstoreInputError(
                f"--pool cls: layer {info.name!r} of {model_name} has no class token "
                f"(activation {'x'.join(map(str, info.shape))}); choose layers with one "
                f"(`featstore layers {model_name}` lists them) or --pool avg/max"
            )
    kept = [info for info in infos if _poolable(info, pool)]
    if pool == "cls" and not any(info.class_token for info in kept):
        raise FeatstoreInputError(
            f"--pool cls: no chosen layer of {model_name} is a token sequence with a class "
            "token (only vision transformers have one); use --pool avg or --pool max"
        )
    return kept


def extractable_layers(model: nn.Module, image_size: int) -> list[str]:
    """Every module path of ``model`` that a store can hold: modules that run exactly once in a
    forward pass of a ``(1, 3, S, S)`` zeros batch and output one tensor, in network order.

    Modules reused within the pass (a ReLU shared by a block's two convolutions), skipped in
    eval mode (dropout paths) or returning tuples are left out, so that every listed path is a
    valid ``--layers`` value.
    """
    counts: dict[str, list[Any]] = {}
    modules = {name: module for name, module in model.named_modules() if name}

    def hook_for(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            counts.setdefault(name, []).append(isinstance(output, torch.Tensor))

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    once = [name for name, seen in counts.items() if seen == [True]]
    return in_network_order(model, once)
