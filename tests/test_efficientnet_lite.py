"""EfficientNet-Lite1 and Lite2: the architecture fits the published weights, the weights label
natural images right, and the outputs equal an independent implementation on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from torch import nn

from featstore.data import preprocess
from featstore.models import (
    EfficientNetLite0,
    auto_layers,
    build_model,
    default_transform,
    parse_init,
)
from featstore.models.efficientnet_lite import LITE_VARIANTS, EfficientNetLite

VARIANTS = ["efficientnet_lite1", "efficientnet_lite2"]


@pytest.fixture(scope="module", params=VARIANTS)
def pretrained(request: pytest.FixtureRequest) -> tuple[str, nn.Module, dict[str, object]]:
    model, descriptor = build_model(request.param, parse_init("pretrained"))
    return request.param, model, descriptor


def _image(array: np.ndarray, name: str) -> torch.Tensor:
    t = default_transform(name)
    return preprocess(Image.fromarray(array), t.size, t.mean, t.std, t.interpolation)[None]


def test_pretrained_labels_real_images(pretrained: tuple[str, nn.Module, dict[str, object]]
                                       ) -> None:
    name, model, descriptor = pretrained
    assert descriptor["weights"] == f"{LITE_VARIANTS[name].distribution}==0.1.0"
    with torch.no_grad():
        cat = model(_image(skimage.data.chelsea(), name)).argmax().item()
        coffee = model(_image(skimage.data.coffee(), name)).argmax().item()
    assert 281 <= cat <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert coffee == 967  # espresso


def test_equals_the_independent_implementation(
        pretrained: tuple[str, nn.Module, dict[str, object]]) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    name, model, _ = pretrained
    size = LITE_VARIANTS[name].resolution
    weights = __import__(LITE_VARIANTS[name].module, fromlist=["x"])
    path = getattr(weights, LITE_VARIANTS[name].file_class).get_model_file_path()
    ref = EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=str(path),
                                       image_size=size).eval()
    x = torch.cat([_image(skimage.data.coffee(), name),
                   torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))])
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
    err = (ours - theirs).abs().max().item()
    assert err <= 1e-4 * theirs.abs().max().item(), err


def test_layers_sizes_and_lite0_unchanged() -> None:
    for name, blocks, size in (("efficientnet_lite1", 21, 240), ("efficientnet_lite2", 21, 260)):
        model, _ = build_model(name, parse_init("random:0"))
        layers = auto_layers(name, model)
        assert layers == ["stem", *(f"blocks.{i}" for i in range(blocks)), "head"]
        assert default_transform(name).size == size
    # Lite0 is the width-1, depth-1 member: same modules, and the same random draws
    torch.manual_seed(5)
    general = EfficientNetLite(1.0, 1.0)
    torch.manual_seed(5)
    lite0 = EfficientNetLite0()
    for (key, a), b in zip(general.state_dict().items(), lite0.state_dict().values(),
                           strict=True):
        assert torch.equal(a, b), key
    assert len(lite0.blocks) == 16
    lite2 = EfficientNetLite(1.1, 1.2)
    head, project = lite2.get_submodule("head.0"), lite2.get_submodule("blocks.4.project.0")
    assert isinstance(head, nn.Conv2d) and isinstance(project, nn.Conv2d)
    assert head.in_channels == 352 and project.out_channels == 48
