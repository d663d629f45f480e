"""The ``auto`` layer rule of every torchvision family, on its smallest member with random weights.

One forward pass per family, with a hook on every module, is the independent reference: each
``auto`` layer must run exactly once, the layers must fire in the listed order, the first must
come right after the stem's convolution(s), nothing but pooling and the classifier may run after
the last one, and ``describe_layers`` must count the units the hooks see. The expected first and
last layers are written out by hand from torchvision's model definitions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from featstore.models import (
    auto_layers,
    build_model,
    describe_layers,
    extractable_layers,
    parse_init,
)


@dataclass(frozen=True)
class Family:
    """One torchvision family: its smallest member and what its ``auto`` set must look like."""

    model: str
    size: int  #: input side (ViT and MaxViT are built for 224 px only)
    first: str  #: the stem, or the stem's activation
    last: str  #: the deepest feature map before pooling and the classifier
    stem_convs: int = 1  #: convolutions up to and including the first layer
    channels_last: bool = False  #: Swin maps are (H, W, C); token sequences are (T, C) anyway


FAMILIES: dict[str, Family] = {
    "ResNet": Family("resnet18", 32, "relu", "layer4.1"),
    "EfficientNet": Family("efficientnet_b0", 32, "features.0", "features.8"),
    "EfficientNetV2": Family("efficientnet_v2_s", 32, "features.0", "features.7"),
    "MobileNetV2": Family("mobilenet_v2", 32, "features.0", "features.18"),
    "MobileNetV3": Family("mobilenet_v3_small", 32, "features.0", "features.12"),
    "MNASNet": Family("mnasnet0_5", 32, "layers.2", "layers.16"),
    "DenseNet": Family("densenet121", 32, "features.relu0", "features.norm5"),
    "VGG": Family("vgg11", 32, "features.1", "features.19"),
    "AlexNet": Family("alexnet", 64, "features.1", "features.11"),
    "RegNet": Family("regnet_x_400mf", 32, "stem", "trunk_output.block4.block4-11"),
    "ConvNeXt": Family("convnext_tiny", 32, "features.0", "features.7.2"),
    "SqueezeNet": Family("squeezenet1_1", 32, "features.1", "features.12"),
    "ShuffleNetV2": Family("shufflenet_v2_x0_5", 32, "conv1", "conv5"),
    "Swin": Family("swin_t", 32, "features.0", "norm", channels_last=True),
    "SwinV2": Family("swin_v2_t", 32, "features.0", "norm", channels_last=True),
    "ViT": Family("vit_b_32", 224, "conv_proj", "encoder.ln"),
    "MaxViT": Family("maxvit_t", 224, "stem", "blocks.3.layers.1", stem_convs=2),
    "GoogLeNet (fallback)": Family("googlenet", 32, "conv1", "inception5b"),
    "Inception v3 (fallback)": Family("inception_v3", 75, "Conv2d_1a_3x3", "Mixed_7c"),
}

#: what may run after the last feature layer: pooling, flattening, dropout and classifier heads
HEAD_CHILDREN = frozenset({"avgpool", "fc", "classifier", "head", "heads", "dropout", "flatten",
                           "permute"})
POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class Trace:
    """One forward pass of a family's model, seen by hooks on every module."""

    family: Family
    model: nn.Module
    layers: list[str]
    #: module paths in the order their forward passes finished (a reused module appears again)
    finished: list[str]
    #: output shape (batch dimension included) of each auto layer, per call
    shapes: dict[str, list[tuple[int, ...]]]


@pytest.fixture(scope="module", params=list(FAMILIES), ids=list(FAMILIES))
def trace(request: pytest.FixtureRequest) -> Iterator[Trace]:
    family = FAMILIES[request.param]
    model, _ = build_model(family.model, parse_init("random:0"))
    layers = auto_layers(family.model, model)
    finished: list[str] = []
    shapes: dict[str, list[tuple[int, ...]]] = {layer: [] for layer in layers}

    def hook_for(path: str) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            finished.append(path)
            if path in shapes:
                shapes[path].append(tuple(output.shape))
        return hook

    handles = [module.register_forward_hook(hook_for(path))
               for path, module in model.named_modules() if path]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, family.size, family.size,
                             generator=torch.Generator().manual_seed(0)))
    finally:
        torch.set_num_threads(threads)
        for handle in handles:
            handle.remove()
    yield Trace(family, model, layers, finished, shapes)


def test_each_auto_layer_runs_once_in_network_order(trace: Trace) -> None:
    assert {layer: len(calls) for layer, calls in trace.shapes.items()} == {
        layer: 1 for layer in trace.layers}
    fired = [path for path in trace.finished if path in trace.shapes]
    assert fired == trace.layers  # hooks fire in the order auto_layers lists
    assert len(trace.layers) >= 5


def test_first_layer_is_the_stem(trace: Trace) -> None:
    first = trace.layers[0]
    assert first == trace.family.first
    modules = dict(trace.model.named_modules())
    convs_so_far = [path for path in trace.finished[: trace.finished.index(first) + 1]
                    if isinstance(modules[path], nn.Conv2d)]
    assert len(convs_so_far) == trace.family.stem_convs, convs_so_far


def test_last_layer_is_the_deepest_feature_map(trace: Trace) -> None:
    last = trace.layers[-1]
    assert last == trace.family.last
    modules = dict(trace.model.named_modules())
    after = trace.finished[trace.finished.index(last) + 1:]
    ancestors = {".".join(last.split(".")[:i]) for i in range(1, last.count(".") + 1)}
    # after the last layer only its enclosing containers finish, then pooling and the head
    not_head = [path for path in after
                if path not in ancestors and path.split(".")[0] not in HEAD_CHILDREN
                and not isinstance(modules[path], POOLING)]
    assert not_head == []
    assert any(path.split(".")[0] in HEAD_CHILDREN for path in after)  # the classifier ran


def test_units_match_describe_layers(trace: Trace) -> None:
    family = trace.family
    infos = describe_layers(family.model, trace.model, trace.layers, family.size)
    assert [info.name for info in infos] == trace.layers
    for info in infos:
        (shape,) = trace.shapes[info.name]
        assert info.shape == shape[1:], info.name
        channels = shape[-1] if family.channels_last or len(shape) == 3 else shape[1]
        assert info.units == channels, info.name


def test_layers_all_lists_every_extractable_module_and_each_extracts() -> None:
    """``featstore layers MODEL --all``: modules that run once and return a tensor, each a valid
    layer to store (resnet18 reuses one ReLU module twice per block: it is left out)."""
    model, _ = build_model("resnet18", parse_init("random:0"))
    names = extractable_layers(model, 32)
    assert "layer1.0.relu" not in names and "layer1.0.conv1" in names and names[-1] == "fc"
    assert len(describe_layers("resnet18", model, names, 32)) == len(names)
