"""The torchvision family: every torchvision classification model, with torchvision's weights.

Weights come through torchvision's weights API (``pretrained`` = the model's default weights,
``pretrained:WEIGHTS`` a named member such as ``IMAGENET1K_V2``) and are cached under
``$TORCH_HOME/hub/checkpoints``; ``pretrained:PATH`` loads a local state dict instead, for
machines without internet.

torchvision is imported inside the functions: its import takes seconds, and a process that
extracts with ``efficientnet_lite0`` or a plugin's model never needs it.
"""

from __future__ import annotations

import os
import urllib.error
from typing import Any, Final, cast
from urllib.parse import urlparse

import torch
from torch import nn

from featstore.errors import (
    ChecksumMismatchError,
    FeatstoreInputError,
    InitSpecError,
    WeightsUnavailableError,
)
from featstore.inits import InitSpec

from .checkpoints import file_sha256, load_state, read_checkpoint
from .layer_rules import swin_channel_axis, torchvision_layers
from .transforms import IMAGENET_MEAN, IMAGENET_STD, TransformSpec

__all__ = ["torchvision_models", "build_torchvision", "torchvision_transform", "register"]


def torchvision_models() -> list[str]:
    """Every torchvision classification model name, sorted."""
    from torchvision import models as tvm

    return list(tvm.list_models(module=tvm))


def torchvision_transform(name: str, image_size: int | None = None) -> TransformSpec:
    """The default weights' ``crop_size`` (else 224) and normalisation, bilinear resize.

    Raises
    ------
    FeatstoreInputError
        When ``image_size`` is not a positive integer, or is below the weights' ``min_size``.
    """
    from torchvision import models as tvm

    weights = tvm.get_model_weights(name).DEFAULT
    keywords: dict[str, Any] = dict(getattr(weights.transforms, "keywords", {}))
    size = int(keywords.get("crop_size", 224))
    mean = tuple(float(v) for v in keywords.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in keywords.get("std", IMAGENET_STD))
    min_size = max(weights.meta.get("min_size", (1, 1)))
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise FeatstoreInputError(f"image size must be a positive integer, got {image_size!r}")
        if image_size < min_size:
            raise FeatstoreInputError(
                f"image size {image_size} is too small for {name}; it needs at least {min_size}"
            )
        size = image_size
    return TransformSpec(
        size=size,
        interpolation="bilinear",
        mean=cast(tuple[float, float, float], mean),
        std=cast(tuple[float, float, float], std),
    )


#: models whose torchvision builder differs between random and pretrained: the pretrained
#: builder normalises inputs for the TensorFlow-trained weights (transform_input) and drops the
#: auxiliary classifiers, which never run in eval mode; ViTs size their positional embeddings
#: for the weights. Random and checkpoint builds match the default pretrained architecture.
_AUX_MODULES: Final = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}
_UNTRAINED_KWARGS: Final[dict[str, dict[str, Any]]] = {
    "googlenet": {"transform_input": True, "init_weights": True},
    "inception_v3": {"transform_input": True, "init_weights": True},
}


def _drop_aux(name: str, net: nn.Module) -> None:
    for attr in _AUX_MODULES.get(name, ()):
        setattr(net, attr, None)
        net.aux_logits = False  # type: ignore[assignment]


def _untrained_kwargs(name: str) -> dict[str, Any]:
    from torchvision import models as tvm

    kwargs = dict(_UNTRAINED_KWARGS.get(name, {}))
    if name.startswith("vit_"):  # positional embeddings sized for the default weights
        kwargs["image_size"] = tvm.get_model_weights(name).DEFAULT.meta["min_size"][0]
    return kwargs


def build_torchvision(name: str, init: InitSpec) -> tuple[nn.Module, str | None, str | None]:
    """Builder of the torchvision family (see :mod:`featstore.models.registry`)."""
    from torchvision import models as tvm

    if init.kind == "random" or init.path is not None:
        net = tvm.get_model(name, weights=None, **_untrained_kwargs(name))
        _drop_aux(name, net)
        if init.path is None:
            return net, None, None
        state = read_checkpoint(init.path)
        aux = tuple(f"{attr}." for attr in _AUX_MODULES.get(name, ()))
        if aux:
            state = {k: v for k, v in state.items() if not k.startswith(aux)}
        load_state(net, state, init.path, name)
        return net, init.path, file_sha256(init.path)
    weights = _resolve_weights(name, init.weights)
    full_name = f"{type(weights).__name__}.{weights.name}"
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", _url_filename(weights.url))
    try:
        net = tvm.get_model(name, weights=weights, progress=False)
    except Exception as exc:
        error = _weights_error(exc, full_name, weights.url, cached)
        if error is None:
            raise
        raise error from exc
    _drop_aux(name, net)
    return net, full_name, file_sha256(cached) if os.path.isfile(cached) else None


def _url_filename(url: str) -> str:
    return os.path.basename(urlparse(url).path)


def _weights_error(exc: Exception, full_name: str, url: str, cached: str) -> Exception | None:
    """The featstore error for a failure to fetch or load torchvision weights, or None."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    folder, filename = os.path.split(cached)
    if isinstance(exc, RuntimeError) and "invalid hash value" in reason:  # torch.hub's check
        return ChecksumMismatchError(
            f"the download of {full_name} from {url} is corrupt ({reason}); try again, or "
            f"download it elsewhere and pass --init pretrained:/path/to/{filename}"
        )
    if os.path.isfile(cached):
        return WeightsUnavailableError(
            f"cannot load {full_name} from its cached file {cached} ({reason}); delete the file "
            "to download it again"
        )
    if isinstance(exc, OSError):  # urllib.error.URLError is an OSError
        why = f"no internet? {reason}" if isinstance(exc, urllib.error.URLError) else reason
        return WeightsUnavailableError(
            f"cannot download {full_name} ({why}) and it is not cached under {folder} "
            f"($TORCH_HOME/hub/checkpoints); download {url} elsewhere and pass "
            f"--init pretrained:/path/to/{filename}, or copy it into that folder"
        )
    return None


def _resolve_weights(name: str, weights: str | None) -> Any:
    """The torchvision ``WeightsEnum`` member named by ``weights`` (None/"DEFAULT": default)."""
    from torchvision import models as tvm

    enum_cls = tvm.get_model_weights(name)
    valid = ["DEFAULT", *(member.name for member in enum_cls)]
    if weights is None:
        return enum_cls.DEFAULT
    enum_name, _, member = weights.rpartition(".")
    if member in valid and enum_name in ("", enum_cls.__name__):
        return enum_cls[member]
    qualified = [f"{enum_cls.__name__}.{m}" for m in valid[1:]]
    raise InitSpecError(
        f"unknown weights {weights!r} for {name}; valid: {', '.join(valid)} "
        f"(or qualified: {', '.join(qualified)})"
    )



def register() -> None:
    """Register every torchvision classification model in the model registry."""
    from .registry import register_family

    register_family(torchvision_models, build_torchvision, torchvision_layers,
                    torchvision_transform, channel_axis=swin_channel_axis)
