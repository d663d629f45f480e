"""Pure compute: one forward pass -> the pooled activation of every chosen layer.

Nothing here opens, prints or saves anything. Forward hooks pool each layer's activation map as
soon as it is computed, so a batch never keeps more than one full map per layer alive, and the
forward pass stops right after the deepest chosen layer (the classifier is never run when no
chosen layer needs it).

Token sequences of vision transformers, shape (batch, tokens, channels), may start with prefix
tokens (class, distillation, register tokens) before the patch tokens. For a layer with
``prefix_tokens = P``, ``avg`` and ``max`` pool the patch tokens only (``tokens[P:]``) and
``cls`` takes the class token (``tokens[0]``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

__all__ = ["POOLS", "pool_activation", "PooledExtractor"]

Pool = Literal["avg", "max", "cls"]
#: global poolings: mean, max (over space or patch tokens), the class token of a token sequence
POOLS: tuple[str, ...] = ("avg", "max", "cls")


class _StopForward(Exception):
    """Raised by the deepest hook to skip the rest of the network."""


def pool_activation(activation: torch.Tensor, pool: str,
                    channel_axis: int | None = None, prefix_tokens: int = 0,
                    class_token: bool = False) -> torch.Tensor:
    """Pool an activation over every axis but the batch and the channel axis.

    Parameters
    ----------
    activation : torch.Tensor
        Shape (batch, channels, *spatial) for convolutional maps, (batch, tokens, channels) for
        transformer token sequences, (batch, h, w, channels) for channels-last maps (Swin), or
        (batch, units) already flat.
    pool : {"avg", "max", "cls"}
        Global average or global max pooling (over the patch tokens of a token sequence), or
        the class token of a token sequence. Flat activations (batch, units) are returned as
        they are by every pool.
    channel_axis : int, optional
        Axis of one image's activation (batch axis excluded) that holds the channels; default 0
        for maps of 3 or more axes, the last axis for token sequences.
    prefix_tokens : int
        Number of tokens before the patch tokens of a (batch, tokens, channels) sequence (class,
        distillation, register tokens); ``avg`` and ``max`` leave them out.
    class_token : bool
        Whether token 0 of the sequence is a class token (required by ``cls``).

    Returns
    -------
    torch.Tensor
        Shape (batch, units), float32.

    Raises
    ------
    ValueError
        For an unknown pool, ``cls`` without a class token, or prefix tokens on an activation
        that is no token sequence.
    """
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; allowed: {', '.join(POOLS)}")
    x = activation.float()
    if x.ndim == 2:
        return x
    if channel_axis is None:
        channel_axis = 1 if x.ndim == 3 else 0  # (batch, tokens, C) or (batch, C, h, w[, d])
    keep = channel_axis % (x.ndim - 1) + 1
    if prefix_tokens or pool == "cls":
        if x.ndim != 3 or not (pool != "cls" or class_token):
            raise ValueError(
                f"pool {pool!r} with {prefix_tokens} prefix tokens needs a token sequence "
                f"(batch, tokens, channels){' with a class token' if pool == 'cls' else ''}, "
                f"got shape {tuple(x.shape)}"
            )
        token_axis = 3 - keep
        if pool == "cls":
            return x.select(token_axis, 0)
        x = x.narrow(token_axis, prefix_tokens, x.shape[token_axis] - prefix_tokens)
    axes = tuple(axis for axis in range(1, x.ndim) if axis != keep)
    if pool == "avg":
        return x.mean(dim=axes)
    if pool == "max":
        return x.amax(dim=axes)
    raise AssertionError(pool)  # unreachable: checked above


class PooledExtractor:
    """Pooled activations of several layers of one model in a single forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        Network in eval mode; its device decides where the batch runs.
    layers : sequence of str
        Module paths (``dict(model.named_modules())`` keys), shallow to deep.
    pool : {"avg", "max", "cls"}
        Global pooling applied inside the hook (see :func:`pool_activation`).
    channel_axes : mapping of str to int, optional
        Per layer, the channel axis of one image's activation (see :func:`pool_activation`).
    prefix_tokens : mapping of str to int, optional
        Per layer, the number of prefix tokens of its token sequence (absent: 0).
    class_tokens : collection of str, optional
        The layers whose token 0 is a class token (``cls`` pools only these, and flat layers).

    Examples
    --------
    >>> extractor = PooledExtractor(model, ["stem", "head"], "avg")  # doctest: +SKIP
    >>> features = extractor(batch)  # {"stem": (n, 32) array, "head": (n, 1280) array}
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], pool: str = "avg",
                 channel_axes: Mapping[str, int] | None = None,
                 prefix_tokens: Mapping[str, int] | None = None,
                 class_tokens: Collection[str] = ()) -> None:
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
        self.prefix_tokens = {k: int(v) for k, v in (prefix_tokens or {}).items() if v}
        self.class_tokens = frozenset(class_tokens)
        self._modules = [modules[name] for name in self.layers]
        self.forward_calls = 0

    def pool_layer(self, name: str, output: torch.Tensor) -> torch.Tensor:
        """Pool layer ``name``'s activation (batch first) with this extractor's settings."""
        return pool_activation(output, self.pool, self.channel_axes.get(name),
                               self.prefix_tokens.get(name, 0), name in self.class_tokens)

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
                pooled[name] = self.pool_layer(name, output)
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
