"""The ``--init`` forms for foundation-model weights: ``.safetensors``/``.bin`` checkpoints and
``pretrained:hf-hub:ORG/NAME``; the older forms keep their meaning and messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from featstore.errors import InitSpecError
from featstore.inits import InitSpec, init_kind, parse_init, parse_inits
from featstore.models import build_model
from featstore.models.checkpoints import read_checkpoint


@pytest.mark.parametrize("suffix", [".safetensors", ".bin", ".pth", ".pt"])
def test_checkpoint_suffixes(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"")
    spec = parse_init(f"pretrained:{path}")
    assert spec == InitSpec("pretrained", path=str(path))
    assert spec.name == f"pretrained:{path}" and parse_init(spec.name) == spec
    monkeypatch.chdir(tmp_path)
    assert parse_init(f"pretrained:model{suffix}+bn") == InitSpec(
        "pretrained", path=str(path), recalibrate=True)
    assert init_kind(f"pretrained:{path}") == "pretrained"


@pytest.mark.parametrize(
    ("text", "hub", "group"),
    [
        ("pretrained:hf-hub:MahmoodLab/UNI", "MahmoodLab/UNI", "pretrained"),
        ("pretrained:hf-hub:owkin/phikon+bn", "owkin/phikon", "pretrained+bn"),
        (" pretrained:hf-hub:timm/vit_tiny_patch16_224.augreg_in21k ", "timm/vit_tiny_patch16_"
         "224.augreg_in21k", "pretrained"),
        ("pretrained:hf-hub:bioptimus/H-optimus-0", "bioptimus/H-optimus-0", "pretrained"),
    ],
)
def test_hub_inits(text: str, hub: str, group: str) -> None:
    spec = parse_init(text)
    assert spec.kind == "pretrained" and spec.hub == hub
    assert spec.weights is None and spec.path is None and spec.seed is None
    assert spec.name == text.strip() and parse_init(spec.name) == spec
    assert spec.group == group == init_kind(spec.name)
    assert spec.weights_spec == InitSpec("pretrained", hub=hub)  # +bn dropped, hub kept
    assert parse_inits([text, text.strip()]) == [spec]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pretrained:hf-hub:", r"bad --init 'pretrained:hf-hub:': '' is no Hugging Face hub "
         r"model id; expected ORG/NAME, as in 'pretrained:hf-hub:MahmoodLab/UNI'$"),
        ("pretrained:hf-hub:UNI", r"'UNI' is no Hugging Face hub model id"),
        ("pretrained:hf-hub:a/b/c", r"'a/b/c' is no Hugging Face hub model id"),
        ("pretrained:hf-hub:a/../b", r"is no Hugging Face hub model id"),
        ("pretrained:hf-hub:org/na me", r"is no Hugging Face hub model id"),
        ("random:hf-hub:a/b", r"the seed must be a non-negative integer"),
        ("pretrained:/no/such/model.safetensors", r"checkpoint file "
         r"'/no/such/model\.safetensors' does not exist"),
        ("pretrained:/etc/hostname", r"a checkpoint must be a \.pth or \.pt file \(or \.bin, "
         r"\.safetensors\)"),
        ("pretrained:", r"'' is neither a weights name nor a \.pth/\.pt path"),
    ],
)
def test_bad_forms(text: str, message: str) -> None:
    with pytest.raises(InitSpecError, match=message) as info:
        parse_init(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "pretrained", "hub": "a/b", "weights": "DEFAULT"}, "one of weights, a path"),
        ({"kind": "pretrained", "hub": "a/b", "path": "/m.pth"}, "one of weights, a path"),
        ({"kind": "random", "seed": 0, "hub": "a/b"}, "takes a seed only"),
        ({"kind": "pretrained", "hub": "ab"}, "malformed Hugging Face hub model id 'ab'"),
        ({"kind": "pretrained", "path": "rel.safetensors"}, "must be absolute"),
    ],
)
def test_inconsistent_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InitSpecError, match=message):
        InitSpec(**kwargs)  # type: ignore[arg-type]


_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_]{0,8}(?:-[A-Za-z0-9_]{1,4})?", fullmatch=True)


@given(_ids, _ids, st.booleans())
def test_hub_name_round_trip(org: str, name: str, bn: bool) -> None:
    spec = InitSpec("pretrained", hub=f"{org}/{name}", recalibrate=bn)
    assert parse_init(spec.name) == spec
    assert init_kind(spec.name) == spec.group


def test_safetensors_checkpoint_reads_and_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = {f"module.{k}": v for k, v in net.state_dict().items()}  # DataParallel prefix
    save_file(state, str(tmp_path / "w.safetensors"))
    read = read_checkpoint(str(tmp_path / "w.safetensors"))
    assert set(read) == set(net.state_dict())
    for key, value in net.state_dict().items():
        assert torch.equal(read[key], value)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InitSpecError, match=r"^cannot read checkpoint '.*bad\.safetensors' as a "
                       r"safetensors file: "):
        read_checkpoint(str(tmp_path / "bad.safetensors"))


def test_tiny_model_from_safetensors_and_hub_refused(tmp_path: Path) -> None:
    reference, _ = build_model("tiny_cnn", parse_init("random:5"))
    save_file(reference.state_dict(), str(tmp_path / "tiny.safetensors"))
    net, descriptor = build_model("tiny_cnn", parse_init(f"pretrained:{tmp_path}/tiny.safetensors"))
    assert descriptor["weights"] == str(tmp_path / "tiny.safetensors")
    for key, value in reference.state_dict().items():
        assert torch.equal(net.state_dict()[key], value)
    with pytest.raises(InitSpecError, match=r"^--init pretrained:hf-hub:a/b: tiny_cnn does not "
                       r"load Hugging Face hub weights"):
        build_model("tiny_cnn", parse_init("pretrained:hf-hub:a/b"))
