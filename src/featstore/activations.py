"""Pure compute: one forward pass -> the pooled activation of every chosen layer.

Nothing here opens, prints or saves anything. Forward hooks pool each layer's activation map as
soon as it is computed, so a batch never keeps more than one full map per layer alive, and the
forward pass stops right after the deepest chosen layer (the classifier is never run when no
chosen layer needs it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

__all__ = ["POOLS", "pool_activation", "PooledExtractor"]

Pool = Literal["avg", "max"]
POOLS: tuple[str, ...] = ("avg", "max")


class _StopForward(Exception):
    """Raised by the deepest hook to skip the rest of the network."""


def pool_activation(activation: torch.Tensor, pool: str,
                    channel_axis: int | None = None) -> torch.Tensor:
    """Pool an activation over every axis but the batch and the channel axis.

    Parameters
    ----------
    activation : torch.Tensor
        Shape (batch, channels, *spatial) for convolutional maps, (batch, tokens, channels) for
        transformer token sequences, (batch, h, w, channels) for channels-last maps (Swin), or
        (batch, units) already flat.
    pool : {"avg", "max"}
        Global average or global max pooling.
    channel_axis : int, optional
        Axis of one image's activation (batch axis excluded) that holds the channels; default 0
        for maps of 3 or more axes, the last axis for token sequences.

    Returns
    -------
    torch.Tensor
        Shape (batch, units), float32.
    """
    x = activation.float()
    if x.ndim == 2:
        return x
    if channel_axis is None:
        channel_axis = 1 if x.ndim == 3 else 0  # (batch, tokens, C) or (batch, C, h, w[, d])
    keep = channel_axis % (x.ndim - 1) + 1
    axes = tuple(axis for axis in range(1, x.ndim) if axis != keep)
    if pool == "avg":
        return x.mean(dim=axes)
    if pool == "max":
        return x.amax(dim=axes)
    raise ValueError(f"unknown pool {pool!r}; allowed: {', '.join(POOLS)}")


class PooledExtractor:
    """Pooled activations of several layers of one model in a single forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        Network in eval mode; its device decides where the batch runs.
    layers : sequence of str
        Module paths (``dict(model.named_modules())`` keys), shallow to deep.
    pool : {"avg", "max"}
        Global pooling applied inside the hook.
    channel_axes : mapping of str to int, optional
        Per layer, the channel axis of one image's activation (see :func:`pool_activation`).

    Examples
    --------
    >>> extractor = PooledExtractor(model, ["stem", "head"], "avg")  # doctest: +SKIP
    >>> features = extractor(batch)  # {"stem": (n, 32) array, "head": (n, 1280) array}
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], pool: str = "avg",
                 channel_axes: Mapping[str, int] | None = None) -> None:
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; allowed: {', '.join(POOLS)}")
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise ValueError(f"layers not in model: {missing}")
        self.model = model
        self.layers = list(layers)
        self.pool = pool
        self.channel_axes = dict(channel_axes or {})
        self._modules = [modules[name] for name in self.layers]
        self.forward_calls = 0

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        """Run the model once on ``batch`` and pool every chosen layer.

        Parameters
        ----------
        batch : torch.Tensor
            Shape (n_images, 3, height, width), on the model's device.

        Returns
        -------
        dict of str to numpy.ndarray
            Layer name -> float32 array of shape (n_images, n_units).
        """
        pooled: dict[str, torch.Tensor] = {}
        remaining = set(self.layers)
        handles = []

        def make_hook(name: str):  # type: ignore[no-untyped-def]
            def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
                if name in pooled:  # a module reused in the graph: keep its first call
                    return
                pooled[name] = pool_activation(output, self.pool, self.channel_axes.get(name))
                remaining.discard(name)
                if not remaining:
                    raise _StopForward

            return hook

        for name, module in zip(self.layers, self._modules, strict=True):
            handles.append(module.register_forward_hook(make_hook(name)))
        try:
            self.forward_calls += 1
            self.model(batch)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if remaining:
            raise RuntimeError(f"layers never ran in the forward pass: {sorted(remaining)}")
        return {name: pooled[name].cpu().numpy() for name in self.layers}
