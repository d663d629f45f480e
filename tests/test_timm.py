"""timm models through featstore: stored features equal timm's own ``forward_intermediates``.

References are computed with timm alone (its own transform from the data config, its own
``forward_intermediates`` / ``forward_head``), never with featstore's pooling or preprocessing.
Weights are random, saved to checkpoint files (.pth and .safetensors) by the tests; the hub is
never reached (a fake Hugging Face cache stands in for it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from featstore.cli.app import main
from PIL import Image
from safetensors.torch import save_file

import featstore
from featstore.data import preprocess
from featstore.errors import FeatstoreInputError, InitSpecError, WeightsUnavailableError
from featstore.models import (
    TransformSpec,
    available_models,
    build_model,
    default_transform,
    describe_layers,
    model_entry,
    parse_init,
    parse_layers,
)
from featstore.models.timm_family import parse_timm_name
from helpers import make_image_folder

timm = pytest.importorskip("timm")
from timm.data import create_transform  # noqa: E402
from timm.models import get_pretrained_cfg  # noqa: E402

VIT = "vit_tiny_patch16_224"
VIT_64 = f"timm:{VIT}(img_size=64)"  # 4x4 patches + class token: fast on CPU
SIZE = 64  # input side of the CNN checks


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def assert_rel(actual: np.ndarray, expected: np.ndarray | torch.Tensor, what: str) -> None:
    """``actual`` equals ``expected`` to 1e-4 relative (to the largest entry)."""
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(float(np.abs(expected).max()), 1e-12)
    error = float(np.abs(actual - expected).max())
    assert error <= 1e-4 * scale, f"{what}: max error {error} vs scale {scale}"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("timm") / "data", per_class=3)


def timm_batch(data: Path, arch: str, size: int) -> torch.Tensor:
    """Images in store order, through timm's own evaluation transform of ``arch``'s data config
    at ``size`` (resize to floor(size / crop_pct), centre crop, normalize)."""
    cfg = get_pretrained_cfg(arch)
    assert cfg is not None
    transform = create_transform(input_size=(3, size, size), interpolation=cfg.interpolation,
                                 mean=cfg.mean, std=cfg.std, crop_pct=cfg.crop_pct,
                                 crop_mode=cfg.crop_mode)
    paths = sorted(p for p in data.rglob("*.png"))
    return torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])


def reference_model(arch: str, seed: int, **kwargs: Any) -> Any:
    """A timm model with its own random init (seeded) and a 1000-class head, in eval mode."""
    torch.manual_seed(seed)
    return timm.create_model(arch, **kwargs).eval()


def layer(ds: Any, name: str, init: str) -> np.ndarray:
    return np.asarray(ds[name].sel(init=init).values)


# --------------------------------------------------------------------------------------------
# registry, names, layers, transform
# --------------------------------------------------------------------------------------------


def test_names_and_listing() -> None:
    names = available_models("timm")
    assert len(names) == len(timm.list_models()) and f"timm:{VIT}" in names
    assert not any(n.startswith("timm:") for n in available_models())  # listed on request only
    assert model_entry(f"timm:{VIT}.augreg_in21k_ft_in1k") is model_entry(f"timm:{VIT}")
    spec = parse_timm_name("timm:vit_large_patch16_224(init_values=1e-5, mean=(0.5, 0.5, 0.5))")
    assert spec.arch == "vit_large_patch16_224" and spec.tag is None
    assert spec.model_args == (("init_values", 1e-5),)
    assert spec.data_args == (("mean", (0.5, 0.5, 0.5)),)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("timm:vit_tiny_patch16_22", r"^unknown model 'timm:vit_tiny_patch16_22'; did you mean: "
         r"timm:vit_tiny_patch16_224.*`featstore layers --list --family timm` lists all \d+ "
         r"timm models$"),
        (f"timm:{VIT}.nosuchtag", r"unknown pretrained tag 'nosuchtag' for timm:vit_tiny_patch16"
         r"_224; its tags: .*augreg_in21k_ft_in1k"),
        ("timm:resnet18(num_classes=3)", r"featstore sets num_classes itself"),
        ("timm:resnet18(3)", r"keywords only"),
        ("timm:resnet18(x=open)", r"the value of x is no Python literal"),
    ],
)
def test_bad_names_exit_2(model: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["layers", model], capsys)
    assert code == 2
    line = err.strip()
    assert "\n" not in line and line.startswith("featstore: error: ")
    assert __import__("re").search(message, line.removeprefix("featstore: error: ")), line


def test_model_arguments_timm_rejects_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["layers", "timm:resnet18(no_such_argument=1)"], capsys)
    assert code == 2 and "cannot build timm:resnet18(no_such_argument=1)" in err


def test_layers_command_lists_vit_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["layers", f"timm:{VIT}"], capsys)
    assert code == 0, err
    rows = [line.split("│")[2].strip() for line in out.splitlines()
            if line.startswith("│") and line.split("│")[1].strip().isdigit()]
    assert rows == ["patch_embed", *(f"blocks.{i}" for i in range(12)), "norm", "head"]
    assert "1 (cls)" in out  # the token column: one prefix token, the class token
    code, out, _ = run(["layers", "--list", "--family", "timm"], capsys)
    listed = out.splitlines()
    assert code == 0 and f"timm:{VIT}" in listed and all(n.startswith("timm:") for n in listed)


def test_cnn_auto_layers_follow_stages() -> None:
    for model, expected in [
        ("timm:resnet18", ["act1", *(f"layer{s}.{b}" for s in range(1, 5) for b in (0, 1)),
                           "fc"]),
        ("timm:convnext_atto", ["stem", *(f"stages.{s}.blocks.{b}" for s, n in
                                          enumerate((2, 2, 6, 2)) for b in range(n)), "head.fc"]),
    ]:
        net, _ = build_model(model, parse_init("random:0"))
        assert parse_layers(model, net, "auto") == expected


def test_tokens_channel_axes_and_swin() -> None:
    cases = {
        "timm:deit_tiny_distilled_patch16_224(img_size=32,depth=1)": ("blocks.0", (6, 192), 2,
                                                                      True),
        "timm:vit_small_patch14_reg4_dinov2(img_size=28,embed_dim=48,depth=1,num_heads=2)": (
            "blocks.0", (9, 48), 5, True),
        f"timm:{VIT}(img_size=32,depth=1,class_token=False,global_pool='avg')": (
            "blocks.0", (4, 192), 0, False),
        f"timm:{VIT}(img_size=32,depth=1,dynamic_img_size=True)": ("patch_embed", (2, 2, 192), 0,
                                                                   False),
    }
    for model, (name, shape, prefix, cls) in cases.items():
        net, _ = build_model(model, parse_init("random:0"))
        size = default_transform(model).size
        (info,) = describe_layers(model, net, [name], size)
        assert (info.shape, info.prefix_tokens, info.class_token) == (shape, prefix, cls), model
        assert info.units == shape[-1] and info.channel_axis == len(shape) - 1
    model = ("timm:swin_tiny_patch4_window7_224(img_size=112,embed_dim=16,depths=(1,1,1,1),"
             "num_heads=(1,1,1,1))")  # a small Swin: channels-last (H, W, C) stages
    net, _ = build_model(model, parse_init("random:0"))
    infos = describe_layers(model, net, ["patch_embed", "layers.0.blocks.0", "norm", "head.fc"],
                            112)
    assert [(i.shape, i.channel_axis, i.units) for i in infos] == [
        ((28, 28, 16), 2, 16), ((28, 28, 16), 2, 16), ((4, 4, 128), 2, 128), ((128,), 0, 128)]


def test_transform_from_data_config() -> None:
    assert default_transform(f"timm:{VIT}") == TransformSpec(
        224, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop_pct=0.9)
    assert default_transform(f"timm:{VIT}").to_dict()["crop_pct"] == 0.9
    assert default_transform(VIT_64).size == 64
    assert default_transform("timm:resnet18", 64) == TransformSpec(
        64, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop_pct=0.95)
    overridden = default_transform(
        "timm:vit_large_patch16_224(mean=(0.485,0.456,0.406),std=(0.229,0.224,0.225),"
        "crop_pct=1.0,interpolation='bilinear')")
    assert overridden == TransformSpec(224, "bilinear", (0.485, 0.456, 0.406),
                                       (0.229, 0.224, 0.225))
    assert "crop_pct" not in overridden.to_dict()  # no crop: described as before crops existed
    assert "crop_pct" not in default_transform("resnet18").to_dict()
    with pytest.raises(FeatstoreInputError, match=r"takes 224x224 inputs only; build it for 64 "
                       r"with --model 'timm:vit_tiny_patch16_224\(img_size=64\)'"):
        default_transform(f"timm:{VIT}", 64)


def test_transform_crop_round_trip_and_preprocess() -> None:
    spec = TransformSpec(8, "bilinear", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_pct=0.75)
    assert spec.resize_size == 10 and TransformSpec.from_dict(spec.to_dict()) == spec
    assert TransformSpec.from_dict({k: v for k, v in spec.to_dict().items()
                                    if k != "crop_pct"}).crop_pct == 1.0
    for bad in (0.0, 1.5, True):
        with pytest.raises(FeatstoreInputError, match="crop_pct must be a float in"):
            TransformSpec(8, "bilinear", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_pct=bad)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8))
    expected = np.asarray(image.resize((10, 10), Image.Resampling.BILINEAR), dtype=np.float64)
    expected = (expected[1:9, 1:9] / 255.0 - 0.5) / 0.25  # centre 8x8 of the 10x10 resize
    actual = preprocess(image, 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear", 0.75)
    assert_rel(actual.permute(1, 2, 0).numpy(), expected, "crop")


def test_random_init_is_timms_own_seeded() -> None:
    first, descriptor = build_model(VIT_64, parse_init("random:3"))
    other, _ = build_model(VIT_64, parse_init("random:4"))
    torch.manual_seed(3)
    reference = timm.create_model(VIT, img_size=64, num_classes=0)
    a, c = first.state_dict(), other.state_dict()
    for key, value in reference.state_dict().items():  # bit for bit
        assert torch.equal(a[key], value), key
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])
    assert descriptor == {"name": "random:3", "kind": "random", "weights": None, "sha256": None,
                          "seed": 3}


def test_bn_on_layernorm_model_is_refused() -> None:
    with pytest.raises(InitSpecError, match=r"timm:vit_tiny_patch16_224\(img_size=64\) has no "
                       r"normalization layers with running statistics"):
        build_model(VIT_64, parse_init("random:0+bn"))
    net, _ = build_model("timm:resnet18", parse_init("random:0+bn"))  # BatchNorm: accepted
    assert net is not None


# --------------------------------------------------------------------------------------------
# stored features == timm's forward_intermediates
# --------------------------------------------------------------------------------------------


def test_vit_features_equal_forward_intermediates(data: Path, tmp_path: Path) -> None:
    ref_a = reference_model(VIT, 11, img_size=64)
    ref_b = reference_model(VIT, 12, img_size=64)
    torch.save(ref_a.state_dict(), tmp_path / "a.pth")
    save_file(ref_b.state_dict(), str(tmp_path / "b.safetensors"))
    inits = [f"pretrained:{tmp_path / 'a.pth'}", f"pretrained:{tmp_path / 'b.safetensors'}",
             "random:0"]
    ds = featstore.extract(str(data), str(tmp_path / "s.zarr"), model=VIT_64, inits=inits,
                           batch_size=4)
    meta = ds.attrs["featstore"]
    assert meta["layers"][0] == "patch_embed" and meta["layers"][-2:] == ["norm", "head"]
    assert len(meta["layers"]) == 15
    assert meta["transform"]["crop_pct"] == 0.9 and meta["transform"]["size"] == 64
    assert ds["blocks.0"].attrs["prefix_tokens"] == 1 and ds["blocks.0"].attrs["class_token"]
    assert "prefix_tokens" not in ds["patch_embed"].attrs
    x = timm_batch(data, VIT, 64)
    torch.manual_seed(0)
    ref_random = timm.create_model(VIT, img_size=64, num_classes=0).eval()
    for init, ref in zip(inits, (ref_a, ref_b, ref_random), strict=True):
        with torch.no_grad():
            final, inter = ref.forward_intermediates(x, return_prefix_tokens=True)
            pre_logits = ref.forward_head(final, pre_logits=True)
            stem = ref.patch_embed(x)
        assert len(inter) == 12
        for i, (spatial, _prefix) in enumerate(inter):  # spatial: (n, C, 4, 4), patches only
            assert_rel(layer(ds, f"blocks.{i}", init), spatial.mean((2, 3)), f"{init} blocks.{i}")
        assert_rel(layer(ds, "norm", init), final[:, 1:].mean(1), f"{init} norm")
        assert_rel(layer(ds, "head", init), pre_logits, f"{init} head")
        assert_rel(layer(ds, "patch_embed", init), stem.mean(1), f"{init} patch_embed")
    assert meta["inits"][0]["sha256"] == hashlib.sha256((tmp_path / "a.pth").read_bytes()
                                                        ).hexdigest()


def test_vit_cls_and_max_pooling(data: Path, tmp_path: Path) -> None:
    ref = reference_model(VIT, 21, img_size=64)
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    init = f"pretrained:{tmp_path / 'w.safetensors'}"
    x = timm_batch(data, VIT, 64)
    with torch.no_grad():
        final, inter = ref.forward_intermediates(x, return_prefix_tokens=True)
    cls = featstore.extract(str(data), str(tmp_path / "cls.zarr"), model=VIT_64, inits=[init],
                            pool="cls")
    layers = cls.attrs["featstore"]["layers"]
    assert layers == [*(f"blocks.{i}" for i in range(12)), "norm", "head"]  # no patch_embed
    assert cls.attrs["featstore"]["pool"] == "cls"
    for i, (_spatial, prefix) in enumerate(inter):
        assert_rel(layer(cls, f"blocks.{i}", init), prefix[:, 0], f"cls blocks.{i}")
    assert_rel(layer(cls, "norm", init), final[:, 0], "cls norm")
    top = featstore.extract(str(data), str(tmp_path / "max.zarr"), model=VIT_64, inits=[init],
                            pool="max", layers=["blocks.3", "norm"])
    assert_rel(layer(top, "blocks.3", init), inter[3][0].amax((2, 3)), "max blocks.3")
    assert_rel(layer(top, "norm", init), final[:, 1:].amax(1), "max norm")


def test_cls_pool_without_class_token_exits_2(data: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    base = ["extract", str(data), "--init", "random:0", "--pool", "cls", "--quiet"]
    code, _, err = run([*base, "--store", str(tmp_path / "a.zarr"), "--model", VIT_64,
                        "--layers", "patch_embed,blocks.0"], capsys)
    assert code == 2
    assert "--pool cls: layer 'patch_embed' of timm:vit_tiny_patch16_224(img_size=64) has no " \
           "class token" in err and err.count("\n") == 1
    code, _, err = run([*base, "--store", str(tmp_path / "b.zarr"), "--model", "timm:resnet18",
                        "--image-size", "32"], capsys)
    assert code == 2 and "no chosen layer of timm:resnet18 is a token sequence" in err


@pytest.mark.parametrize(
    ("arch", "stem", "blocks", "suffix"),
    [
        ("resnet18", "act1", [f"layer{s}.1" for s in range(1, 5)], ".pth"),
        ("convnext_atto", None, [f"stages.{s}.blocks.{n - 1}" for s, n in
                                 enumerate((2, 2, 6, 2))], ".safetensors"),
    ],
)
def test_cnn_features_equal_forward_intermediates(data: Path, tmp_path: Path, arch: str,
                                                  stem: str | None, blocks: list[str],
                                                  suffix: str) -> None:
    ref = reference_model(arch, 5)
    with torch.no_grad():  # BatchNorm running statistics away from the (0, 1) of a fresh net
        for name, buffer in ref.named_buffers():
            if name.endswith("running_mean"):
                buffer.uniform_(-0.2, 0.2)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": ref.state_dict()}, path)
    else:
        save_file(ref.state_dict(), str(path))
    init = f"pretrained:{path}"
    ds = featstore.extract(str(data), str(tmp_path / "s.zarr"), model=f"timm:{arch}",
                           inits=[init], image_size=SIZE)
    cfg = get_pretrained_cfg(arch)
    assert cfg is not None
    assert ds.attrs["featstore"]["transform"]["crop_pct"] == cfg.crop_pct
    x = timm_batch(data, arch, SIZE)
    with torch.no_grad():
        final, inter = ref.forward_intermediates(x)
        pre_logits = ref.forward_head(final, pre_logits=True)
    stages = inter[1:] if stem else inter
    if stem:
        assert_rel(layer(ds, stem, init), inter[0].mean((2, 3)), f"{arch} {stem}")
    assert len(stages) == len(blocks)
    for var, expected in zip(blocks, stages, strict=True):
        assert_rel(layer(ds, var, init), expected.mean((2, 3)), f"{arch} {var}")
    head = ds.attrs["featstore"]["layers"][-1]
    assert_rel(layer(ds, head, init), pre_logits, f"{arch} {head}")


# --------------------------------------------------------------------------------------------
# pretrained weights: offline, cached, hub models
# --------------------------------------------------------------------------------------------


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, offline (in the environment and in huggingface_hub)."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


def test_offline_uncached_pretrained_exits_2_with_one_line(
        data: Path, tmp_path: Path, offline_hub: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["extract", str(data), "--store", str(tmp_path / "s.zarr"), "--model",
                        f"timm:{VIT}", "--init", "pretrained", "--quiet"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k" in err
    assert str(offline_hub / "hub") in err
    assert "--init pretrained:/path/model.safetensors" in err
    with pytest.raises(WeightsUnavailableError, match=r"hf-hub:MahmoodLab/UNI\) are not in the "
                       r"Hugging Face cache .*--init pretrained:/path/model\.safetensors"):
        build_model("timm:vit_large_patch16_224(init_values=1e-5)",
                    parse_init("pretrained:hf-hub:MahmoodLab/UNI"))


def _cache_file(home: Path, repo: str, filename: str, content: bytes) -> Path:
    """Put a file into a Hugging Face hub cache the way huggingface_hub lays it out."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    path = folder / "snapshots" / commit / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_pretrained_from_the_hub_cache_offline(offline_hub: Path, tmp_path: Path) -> None:
    ref = reference_model(VIT, 31)  # 224 px, 1000 classes: as timm publishes it
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    repo = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    cached = _cache_file(offline_hub, repo, "model.safetensors",
                         (tmp_path / "w.safetensors").read_bytes())
    net, descriptor = build_model(f"timm:{VIT}", parse_init("pretrained"))
    assert descriptor["weights"] == f"hf-hub:{repo}"
    assert descriptor["sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    own = net.state_dict()
    assert "head.weight" not in own  # built without classifier
    for key, value in own.items():
        assert torch.equal(value, ref.state_dict()[key]), key
    shuffled, _ = build_model(f"timm:{VIT}", parse_init("shuffled:1"))
    weight = shuffled.state_dict()["blocks.0.mlp.fc1.weight"]
    assert not torch.equal(weight, own["blocks.0.mlp.fc1.weight"])
    assert torch.equal(weight.flatten().sort().values,
                       own["blocks.0.mlp.fc1.weight"].flatten().sort().values)


def test_hub_model_checks_architecture_and_arguments(offline_hub: Path, tmp_path: Path) -> None:
    import json

    ref = reference_model(VIT, 41, img_size=64, init_values=1e-5, num_classes=0)
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    config = {"architecture": VIT, "num_classes": 0, "model_args": {"img_size": 64},
              "pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    _cache_file(offline_hub, "lab/tiny", "config.json", json.dumps(config).encode())
    _cache_file(offline_hub, "lab/tiny", "model.safetensors",
                (tmp_path / "w.safetensors").read_bytes())
    init = parse_init("pretrained:hf-hub:lab/tiny")
    with pytest.raises(InitSpecError, match=r"builds vit_tiny_patch16_224 with img_size set; pass "
                       r"--model 'timm:vit_tiny_patch16_224\(img_size=64\)'"):
        build_model(f"timm:{VIT}", init)
    with pytest.raises(InitSpecError, match=r"is a vit_tiny_patch16_224, not resnet18; use "
                       r"--model timm:vit_tiny_patch16_224"):
        build_model("timm:resnet18", init)
    net, descriptor = build_model(f"timm:{VIT}(img_size=64, init_values=1e-5)", init)
    assert descriptor["weights"] == "hf-hub:lab/tiny" and descriptor["name"] == init.name
    for key, value in ref.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    with pytest.raises(InitSpecError, match="does not load Hugging Face hub weights"):
        build_model("resnet18", init)


def test_checkpoint_that_does_not_fit_names_keys(tmp_path: Path) -> None:
    ref = reference_model(VIT, 1, img_size=64, init_values=1e-5)  # LayerScale: gamma keys
    save_file(ref.state_dict(), str(tmp_path / "uni_like.safetensors"))
    with pytest.raises(InitSpecError, match=r"does not fit timm:vit_tiny_patch16_224\(img_size="
                       r"64\): unexpected keys blocks\.0\.ls1\.gamma"):
        build_model(VIT_64, parse_init(f"pretrained:{tmp_path / 'uni_like.safetensors'}"))
    with pytest.raises(InitSpecError, match=r"timm models take no weights names"):
        build_model(VIT_64, parse_init("pretrained:IMAGENET1K_V1"))
