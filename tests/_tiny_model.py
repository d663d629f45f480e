"""``tiny_cnn``: a two-block CNN registered as a featstore model, for fast store and reliability
tests (8-16 px inputs). Imported through ``FEATSTORE_PLUGINS`` (set in conftest.py), so that
featstore processes started by the tests know it too.

``pretrained`` gives fixed, non-random-looking weights (a seeded draw scaled per layer, the same
in every process); ``pretrained:PATH`` loads a state dict; ``random:SEED`` is the architecture's
own seeded initialisation. BatchNorm layers make the normalization baselines testable.
"""

from __future__ import annotations

import torch
from torch import nn

from featstore.models import TransformSpec, register_model
from featstore.models.checkpoints import file_sha256, load_state, read_checkpoint

NAME = "tiny_cnn"
#: the ``pretrained`` weights' name in the init descriptor
WEIGHTS = "tiny_cnn-fixed-v1"


class TinyCNN(nn.Module):
    """``stem`` (conv 3->4, BN, ReLU) -> ``block`` (conv 4->6 stride 2, BN, ReLU) -> pool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6),
                                   nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, 3) for images of shape (N, 3, H, W)."""
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


def build(name: str, init) -> tuple[nn.Module, str | None, str | None]:  # noqa: ANN001
    net = TinyCNN()
    if init.kind == "random":
        return net, None, None
    if init.path is not None:
        load_state(net, read_checkpoint(init.path), init.path, NAME)
        return net, init.path, file_sha256(init.path)
    generator = torch.Generator().manual_seed(20240601)
    with torch.no_grad():
        for key, value in net.state_dict().items():
            if value.dtype.is_floating_point and not key.endswith("running_var"):
                value.copy_(torch.randn(value.shape, generator=generator) * 0.5)
            elif key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
    return net, WEIGHTS, None


def layers(model: nn.Module) -> list[str]:
    return ["stem", "block"]


def transform(name: str, image_size: int | None = None) -> TransformSpec:
    return TransformSpec(size=image_size or 16, interpolation="bilinear", mean=(0.5, 0.5, 0.5),
                         std=(0.25, 0.25, 0.25))


register_model(NAME, build, layers, transform)
