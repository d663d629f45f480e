"""Layer rules: the ``auto`` layer set of every torchvision architecture, as module paths.

Each rule maps a built model to the module paths of its block outputs, stem and head included;
:func:`torchvision_layers` picks the rule by the model's class (see its docstring for the list).
The order of the returned names does not matter: :func:`featstore.models.layers.auto_layers`
sorts them in network order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Final, cast

from torch import nn

__all__ = ["children", "torchvision_layers", "swin_channel_axis"]


def children(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """``(path, child)`` of every direct child of ``module``, paths below ``prefix``."""
    for child_name, child in module.named_children():
        yield f"{prefix}.{child_name}", child


def _blocks_of(module: nn.Module, prefix: str) -> list[str]:
    """Paths of the blocks of a Sequential whose plain-Sequential children are stages of blocks."""
    names: list[str] = []
    for path, child in children(module, prefix):
        if type(child) is nn.Sequential:  # a stage (Conv2dNormActivation is a subclass: a block)
            names.extend(path for path, _ in children(child, path))
        else:
            names.append(path)
    return names



def _resnet_layers(model: nn.Module) -> list[str]:
    names = ["relu"]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        names.extend(path for path, _ in children(model.get_submodule(stage), stage))
    return names


def _features_layers(model: nn.Module) -> list[str]:
    # EfficientNet(V2), MobileNetV2/V3: features = [stem, blocks or stages of blocks, head conv]
    return _blocks_of(model.get_submodule("features"), "features")


def _mnasnet_layers(model: nn.Module) -> list[str]:
    # layers: 0-2 stem conv/BN/ReLU, 3-7 separable conv (ends in BN), 8-13 stages, 14-16 head
    layers = cast(nn.Sequential, model.get_submodule("layers"))
    names = ["layers.2", "layers.7"]
    for path, child in children(layers, "layers"):
        if type(child) is nn.Sequential:
            names.extend(p for p, _ in children(child, path))
    return [*names, f"layers.{len(layers) - 1}"]


def _densenet_layers(model: nn.Module) -> list[str]:
    # the final ReLU is functional, so the head is norm5 (before that ReLU)
    names = ["features.relu0"]
    for path, _ in children(model.get_submodule("features"), "features"):
        if path.split(".")[-1].startswith(("denseblock", "transition")):
            names.append(path)
    return [*names, "features.norm5"]


def _relu_layers(model: nn.Module) -> list[str]:
    # VGG, AlexNet: every ReLU of the convolutional part
    return [
        p
        for p, m in children(model.get_submodule("features"), "features")
        if isinstance(m, nn.ReLU)
    ]


def _regnet_layers(model: nn.Module) -> list[str]:
    names = ["stem"]
    for path, stage in children(model.get_submodule("trunk_output"), "trunk_output"):
        names.extend(p for p, _ in children(stage, path))
    return names


def _convnext_layers(model: nn.Module) -> list[str]:
    from torchvision import models as tvm

    features = model.get_submodule("features")
    blocks = [
        f"features.{path}"
        for path, module in features.named_modules()
        if isinstance(module, tvm.convnext.CNBlock)
    ]
    return ["features.0", *blocks]


def _squeezenet_layers(model: nn.Module) -> list[str]:
    from torchvision import models as tvm

    # stem ReLU and every Fire module; the head conv is the classifier (class score maps)
    features = model.get_submodule("features")
    return [
        "features.1",
        *(p for p, m in children(features, "features") if isinstance(m, tvm.squeezenet.Fire)),
    ]


def _shufflenet_layers(model: nn.Module) -> list[str]:
    names = ["conv1"]
    for stage in ("stage2", "stage3", "stage4"):
        names.extend(path for path, _ in children(model.get_submodule(stage), stage))
    return [*names, "conv5"]


def _swin_layers(model: nn.Module) -> list[str]:
    from torchvision import models as tvm

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
    return ["conv_proj", *(p for p, _ in children(layers, "encoder.layers")), "encoder.ln"]


def _maxvit_layers(model: nn.Module) -> list[str]:
    from torchvision import models as tvm

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
            names.extend(path for path, _ in children(child, name))
        else:
            names.append(name)
    return names


@functools.cache
def _layer_rules() -> tuple[tuple[type[nn.Module], Callable[[nn.Module], list[str]]], ...]:
    """(torchvision model class, its rule), in the order they are tried; torchvision is
    imported on first use, so that processes with other models never pay its import."""
    from torchvision import models as tvm

    return (
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


def torchvision_layers(model: nn.Module) -> list[str]:
    """The ``auto`` layers of a torchvision classification model.

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
    """
    for cls, rule in _layer_rules():
        if isinstance(model, cls):
            return rule(model)
    return _fallback_layers(model)


def swin_channel_axis(model: nn.Module, layer: str, shape: tuple[int, ...]) -> int:
    """Units axis of one image's activation; Swin keeps (H, W, C) until its final permute."""
    if len(shape) <= 1:
        return 0
    if len(shape) == 2:  # token sequence (n_tokens, C)
        return 1
    from torchvision import models as tvm

    if (
        isinstance(model, tvm.SwinTransformer)
        and len(shape) == 3
        and layer.split(".")[0] in ("features", "norm")
    ):
        return len(shape) - 1
    return 0
