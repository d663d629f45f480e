"""Parameter counts up to each layer: the cost of using a layer's representation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from featstore.errors import FeatstoreInputError
from featstore.inits import parse_init

from .registry import build_model

__all__ = ["cumulative_parameter_counts", "model_parameter_counts"]


def cumulative_parameter_counts(model: nn.Module, layers: Sequence[str]) -> dict[str, int]:
    """Number of parameters in every module up to and including each layer, in module order.

    Modules are taken in registration order (``model.named_modules()``), which for the
    sequential backbones featstore supports is the order of the forward pass. A layer covers
    itself and its submodules; a parameter shared by several modules is counted once.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layers : sequence of str
        Module paths (``"blocks.3"``), shallow to deep.

    Returns
    -------
    dict of str to int
        Layer module path -> cumulative parameter count.

    Raises
    ------
    FeatstoreInputError
        When a layer is not a module of ``model``.
    """
    names: list[str] = []
    own: list[int] = []
    seen: set[int] = set()
    for name, module in model.named_modules(remove_duplicate=False):
        count = 0
        for parameter in module.parameters(recurse=False):
            if id(parameter) not in seen:
                seen.add(id(parameter))
                count += int(parameter.numel())
        names.append(name)
        own.append(count)
    cumulative = np.cumsum(own)
    out: dict[str, int] = {}
    for layer in layers:
        positions = [i for i, name in enumerate(names)
                     if name == layer or name.startswith(layer + ".")]
        if not positions or layer not in names:
            raise FeatstoreInputError(
                f"layer '{layer}' is not a module of {type(model).__name__}; "
                f"known modules start with: {', '.join(n for n in names[1:6])}, ..."
            )
        out[layer] = int(cumulative[max(positions)])
    return out


def model_parameter_counts(model: str, layers: Sequence[str]) -> dict[str, int]:
    """:func:`cumulative_parameter_counts` for a registered model, built with random weights.

    Parameters
    ----------
    model : str
        Model name (``featstore layers --list``).
    layers : sequence of str
        Module paths, shallow to deep.
    """
    net, _ = build_model(model, parse_init("random:0"))
    return cumulative_parameter_counts(net, layers)

