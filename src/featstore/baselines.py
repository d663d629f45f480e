"""Baselines beyond the architecture's random initialisation: pure compute on torch modules.

The knowledge gain is only as meaningful as its baseline. Two controls complement
``random:SEED``:

* **shuffled weights** (:func:`shuffle_weights`, ``shuffled:SEED``): the pretrained network with
  the entries of every parameter tensor permuted. Each tensor keeps its exact distribution and
  scale (so activations keep a realistic magnitude), the learned structure is gone;
* **recalibrated normalization** (:func:`recalibrate_norm_stats`, ``+bn``): the running
  statistics of every BatchNorm layer re-estimated on the images being extracted (AdaBN). With a
  random initialisation the as-initialised statistics (mean 0, variance 1) make every stage of a
  deep network shrink its activations (pooled RMS ~1e-9 at the head of efficientnet_lite0), so
  deep random layers are copies of a few shallow random convolutions; recalibrated, the same
  weights form a healthy deep network. On the pretrained network (``pretrained+bn``) it shows how
  much of the gain is normalization statistics.

Nothing here reads files or prints; the extraction feeds :func:`recalibrate_norm_stats` its
batches and records :func:`recalibration_sample`'s choice in the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "DEFAULT_BN_IMAGES",
    "shuffle_weights",
    "norm_layers",
    "recalibration_sample",
    "recalibrate_norm_stats",
]

#: images used to re-estimate normalization statistics, at most (``--bn-images``)
DEFAULT_BN_IMAGES: Final = 1024


def shuffle_weights(model: nn.Module, seed: int) -> nn.Module:
    """Permute the entries of every parameter tensor of ``model`` in place (seeded).

    Each parameter (convolution and linear weights and biases, normalization scales and shifts)
    is flattened, permuted with its own draw from one generator seeded with ``seed``, and
    reshaped; buffers (BatchNorm running statistics) are left as they are. Parameters are
    visited in ``named_parameters()`` order, so the result is the same on every machine.

    Parameters
    ----------
    model : torch.nn.Module
        The network with its trained weights.
    seed : int
        Seed of the permutations, in ``[0, 2**64)``.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.
    """
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for _, parameter in model.named_parameters():
            flat = parameter.data.reshape(-1)
            order = torch.randperm(flat.numel(), generator=generator)
            parameter.data.copy_(flat[order].reshape(parameter.shape))
    return model


def norm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The normalization layers with running statistics (BatchNorm 1d/2d/3d, SyncBatchNorm)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def recalibration_sample(n_images: int, max_images: int, seed: int,
                         train: np.ndarray | None = None) -> np.ndarray:
    """The images whose activations re-estimate the normalization statistics.

    Parameters
    ----------
    n_images : int
        Images in the data.
    max_images : int
        Sample at most this many.
    seed : int
        Seed of the sample (``numpy.random.default_rng``).
    train : ndarray of bool, shape (n_images,), optional
        The data's training images, when it has a split: only they are sampled, so that test
        images never shape the features.

    Returns
    -------
    ndarray of int64, shape (k,)
        Sorted image indices, ``k = min(max_images, candidates)``.
    """
    candidates = (np.arange(n_images) if train is None
                  else np.flatnonzero(np.asarray(train, dtype=bool)))
    if candidates.size <= max_images:
        return candidates.astype(np.int64)
    chosen = np.random.default_rng(seed).choice(candidates, size=max_images, replace=False)
    return np.sort(chosen).astype(np.int64)


def sample_digest(indices: np.ndarray) -> str:
    """SHA-256 of a sample's indices (int64, little-endian), recorded instead of the indices."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


def recalibrate_norm_stats(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm layer's running statistics on ``batches`` (AdaBN).

    The statistics are reset, then accumulated as a cumulative average (``momentum=None``) over
    one no-grad pass in which only the normalization layers are in training mode (dropout and
    everything else stay in eval mode); afterwards the model is in eval mode again with the
    layers' momentum restored. Deterministic on CPU.

    Parameters
    ----------
    model : torch.nn.Module
        The network, on the device the batches are on.
    batches : iterable of torch.Tensor
        Preprocessed images, each of shape (n, 3, H, W).

    Returns
    -------
    int
        Images seen.

    Raises
    ------
    ValueError
        When the model has no normalization layer with running statistics, or no image came.
    """
    layers = norm_layers(model)
    if not layers:
        raise ValueError("the model has no normalization layer with running statistics")
    momenta = [layer.momentum for layer in layers]
    seen = 0
    model.eval()
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative moving average over every batch
            layer.train()
        with torch.no_grad():
            for batch in batches:
                model(batch)
                seen += int(batch.shape[0])
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
    if seen == 0:
        raise ValueError("no image to re-estimate the normalization statistics on")
    return seen
