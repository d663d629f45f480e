"""Baseline kinds (shuffled weights, +bn recalibration), activation health and float16 safety."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr
from featstore.cli.app import main
from torch import nn

import featstore
from _tiny_model import TinyCNN
from featstore.baselines import (
    norm_layers,
    recalibrate_norm_stats,
    recalibration_sample,
    shuffle_weights,
)
from featstore.errors import FeatstoreInputError
from featstore.health import HealthAccumulator, degenerate, degenerate_warning, layer_health
from featstore.models import TransformSpec, build_model, parse_init, register_model
from featstore.store import FeatureStore
from helpers import LC25000, make_image_folder

SMALL: dict[str, Any] = {"model": "tiny_cnn", "image_size": 12, "batch_size": 4, "chunk_images": 4,
         "device": "cpu"}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data", per_class=6)


# ------------------------------------------------------------------------------- shuffled


def test_shuffled_keeps_every_tensors_values_and_destroys_their_order() -> None:
    pretrained, _ = build_model("tiny_cnn", parse_init("pretrained"))
    shuffled, descriptor = build_model("tiny_cnn", parse_init("shuffled:3"))
    again, _ = build_model("tiny_cnn", parse_init("shuffled:3"))
    other, _ = build_model("tiny_cnn", parse_init("shuffled:4"))
    assert descriptor["kind"] == "shuffled" and descriptor["seed"] == 3
    for (name, a), b, c, d in zip(pretrained.named_parameters(), shuffled.parameters(),
                                  again.parameters(), other.parameters(), strict=True):
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values), name
        assert torch.equal(b, c), name  # seeded
        if a.numel() > 3:
            assert not torch.equal(a, b) and not torch.equal(b, d), name
    for (name, buffer), kept in zip(pretrained.named_buffers(), shuffled.buffers(), strict=True):
        assert torch.equal(buffer, kept), name  # running statistics are not parameters


def test_shuffle_weights_is_a_permutation_per_tensor() -> None:
    net = nn.Linear(5, 7)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    shuffle_weights(net, 0)
    generator = torch.Generator().manual_seed(0)
    for name, value in net.state_dict().items():
        order = torch.randperm(before[name].numel(), generator=generator)
        torch.testing.assert_close(value.reshape(-1), before[name].reshape(-1)[order])


# ------------------------------------------------------------------------------- +bn


class _TwoBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(5)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def _reference_stats(net: _TwoBN, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """Each batch normalized with its own statistics, written out by hand; running statistics
    are the plain average over batches of the batch means and unbiased batch variances."""
    means: list[list[torch.Tensor]] = [[], []]
    variances: list[list[torch.Tensor]] = [[], []]
    with torch.no_grad():
        for x in batches:
            h = net.conv1(x)
            for i, (bn, conv) in enumerate(((net.bn1, None), (net.bn2, net.conv2))):
                if conv is not None:
                    h = conv(torch.relu(h))
                mean = h.mean(dim=(0, 2, 3))
                var = h.var(dim=(0, 2, 3), unbiased=False)
                count = h.numel() / h.shape[1]
                means[i].append(mean)
                variances[i].append(var * count / (count - 1))
                h = (h - mean[None, :, None, None]) / torch.sqrt(var + bn.eps)[None, :, None, None]
                h = h * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
    return [(torch.stack(means[i]).mean(0), torch.stack(variances[i]).mean(0)) for i in (0, 1)]


def test_recalibrated_statistics_equal_a_direct_reimplementation() -> None:
    torch.manual_seed(0)
    net = _TwoBN().eval()
    with torch.no_grad():  # non-trivial affine parameters
        for bn in (net.bn1, net.bn2):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    batches = [torch.randn(n, 3, 9, 9) * 3 + 1 for n in (4, 4, 3)]
    expected = _reference_stats(net, batches)
    seen = recalibrate_norm_stats(net, iter(batches))
    assert seen == 11
    for bn, (mean, var) in zip((net.bn1, net.bn2), expected, strict=True):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
        assert bn.momentum == 0.1  # restored
    assert not net.training and not net.drop.training


def test_recalibration_refuses_models_without_batchnorm() -> None:
    with pytest.raises(ValueError, match="no normalization layer"):
        recalibrate_norm_stats(nn.Sequential(nn.Conv2d(3, 3, 1)), iter([torch.zeros(1, 3, 2, 2)]))
    assert norm_layers(nn.Sequential(nn.LayerNorm(3))) == []


def test_recalibration_sample_is_seeded_and_respects_the_train_split() -> None:
    train = np.zeros(50, dtype=bool)
    train[10:40] = True
    sample = recalibration_sample(50, 8, seed=1, train=train)
    assert len(sample) == 8 and train[sample].all() and np.all(np.diff(sample) > 0)
    assert np.array_equal(sample, recalibration_sample(50, 8, seed=1, train=train))
    assert np.array_equal(recalibration_sample(5, 8, seed=1), np.arange(5))


def test_bn_init_extracts_recorded_deterministic_and_appended(data: Path, tmp_path: Path) -> None:
    first = str(tmp_path / "a.zarr")
    featstore.extract(str(data), first, inits=("pretrained", "random:0"), **SMALL)
    featstore.extract(str(data), first, inits=("random:0+bn",), **SMALL)  # appended
    fresh = str(tmp_path / "b.zarr")
    featstore.extract(str(data), fresh, inits=("random:0+bn",), **SMALL)
    ds_a, ds_b = xr.open_zarr(first), xr.open_zarr(fresh)
    assert list(ds_a["init"].values) == ["pretrained", "random:0", "random:0+bn"]
    for layer in ("stem", "block"):
        np.testing.assert_array_equal(ds_a[layer].sel(init="random:0+bn").values,
                                      ds_b[layer].sel(init="random:0+bn").values)
        assert not np.allclose(ds_a[layer].sel(init="random:0").values,
                               ds_a[layer].sel(init="random:0+bn").values)
    record = ds_a.attrs["featstore"]["inits"][2]["recalibration"]
    assert record["images"] == 12 and record["sample"] == "all images"
    assert len(record["sample_sha256"]) == 64 and record["batch_size"] == 32
    # the store keeps the statistics; they are those of the model re-estimated directly
    store = FeatureStore.open(first)
    state = store.read_norm_state(2)
    assert state is not None and set(state) == {"stem.1.running_mean", "stem.1.running_var",
                                                "block.1.running_mean", "block.1.running_var"}


def test_resume_of_a_bn_init_uses_the_kept_statistics(data: Path, tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    clean = featstore.extract(str(data), url, inits=("random:1+bn",), **SMALL).load()
    store = FeatureStore.open(url, mode="r+")
    kept = store.read_norm_state(0)
    assert kept is not None
    # different statistics on record: a resumed chunk must use them, not re-estimate
    store.write_norm_state(0, {k: v * 0 + (2.0 if k.endswith("var") else 0.5)
                               for k, v in kept.items()})
    store.mark_pending(0, 1)
    resumed = featstore.extract(str(data), url, inits=("random:1+bn",), **SMALL).load()
    np.testing.assert_array_equal(resumed["block"].values[0, :4], clean["block"].values[0, :4])
    assert not np.allclose(resumed["block"].values[0, 4:8], clean["block"].values[0, 4:8])


def test_other_bn_sample_size_is_a_mismatch(data: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "s.zarr")
    featstore.extract(str(data), url, inits=("random:0+bn",), bn_images=8, **SMALL)
    FeatureStore.open(url, mode="r+").mark_pending(0, 0)
    args = ["extract", str(data), "--store", url, "--model", "tiny_cnn", "--image-size", "12",
            "--batch-size", "4", "--chunk-images", "4", "--init", "random:0+bn", "-q"]
    code, _, err = run(args, capsys)
    assert code == 2
    assert "re-estimated its normalization statistics on another sample (--bn-images 8 then, " \
           "1024 now)" in err and len(err.strip().splitlines()) == 1


def test_bn_on_a_model_without_batchnorm_exits_2(data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    register_model("tiny_nobn", lambda name, init: (nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()),
                                                   None, None),
                   lambda model: ["0", "1"], lambda name, size: TransformSpec(
                       size or 8, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    code, _, err = run(["extract", str(data), "--store", str(tmp_path / "s.zarr"), "--model",
                        "tiny_nobn", "--init", "random:0+bn", "-q"], capsys)
    assert code == 2
    assert err.strip() == (
        "featstore: error: --init random:0+bn: tiny_nobn has no normalization layers with "
        "running statistics (BatchNorm), so there is nothing for '+bn' to re-estimate; drop "
        "'+bn'")
    assert not (tmp_path / "s.zarr").exists()


# ------------------------------------------------------------------------------- health


def test_health_numbers_equal_direct_formulas() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)) * np.array([5.0, 1.0, 1.0, 0.1, 0.0, 1e-3]) + 2.0
    X[:, 4] = 7.0  # constant unit
    chunked = HealthAccumulator(6)
    for part in np.array_split(X, 7):
        chunked.add(part)
    result = chunked.result()
    cov = np.cov(X, rowvar=False, bias=True)
    eigen = np.linalg.eigvalsh(cov)
    assert result["rms"] == pytest.approx(np.sqrt((X**2).mean()), rel=1e-12)
    assert result["participation_ratio"] == pytest.approx(eigen.sum()**2 / (eigen**2).sum(),
                                                          rel=1e-9)
    assert result["constant_fraction"] == pytest.approx(1 / 6)
    assert layer_health(X) == pytest.approx(result)


def test_degenerate_names_tiny_rms_and_one_dimensional_layers() -> None:
    health = {
        "pretrained": {"a": {"rms": 2.0, "constant_fraction": 0.0, "participation_ratio": 5.0},
                       "b": {"rms": 1.0, "constant_fraction": 0.0, "participation_ratio": 9.0}},
        "random:0": {"a": {"rms": 0.5, "constant_fraction": 0.0, "participation_ratio": 3.0},
                     "b": {"rms": 1e-9, "constant_fraction": 0.0, "participation_ratio": 1.02}},
        "random:0+bn": {"a": {"rms": 0.4, "constant_fraction": 0.0, "participation_ratio": 3},
                        "b": {"rms": 0.5, "constant_fraction": 1.0, "participation_ratio": 2}},
    }
    # one dominant direction in the reference itself, and a baseline alike: not degenerate
    health["pretrained"]["c"] = {"rms": 1.0, "constant_fraction": 0.0,
                                 "participation_ratio": 1.05}
    health["random:0"]["c"] = {"rms": 0.5, "constant_fraction": 0.0, "participation_ratio": 1.04}
    health["random:0+bn"]["c"] = {"rms": 0.5, "constant_fraction": 0.0,
                                  "participation_ratio": 1.2}
    found = degenerate(health)
    assert [(init, layer) for init, layer, _ in found] == [("random:0", "b"),
                                                           ("random:0+bn", "b")]
    assert "RMS 1e-09 (1e-09x pretrained's), effective dimensionality 1.02" == found[0][2]
    assert found[1][2] == "every unit constant"
    warning = degenerate_warning(found[:1])
    assert warning is not None and "random:0 at b" in warning and "--init random:0+bn" in warning


def _fading(name: str, init: object) -> tuple[nn.Module, str | None, str | None]:
    """Without normalization, a random init whose every layer shrinks the signal 1000-fold."""
    net = nn.Sequential(*(m for _ in range(4) for m in (nn.Conv2d(3, 3, 3, padding=1),
                                                       nn.ReLU())))
    kind = getattr(init, "kind", "random")
    with torch.no_grad():
        for conv in net.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.mul_(1e-3 if kind == "random" else 1.0)
                if conv.bias is not None:
                    conv.bias.zero_()
    return net, ("fixed" if kind == "pretrained" else None), None


def test_info_prints_health_and_names_the_degenerate_init(data: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    register_model("tiny_fading", _fading, lambda model: ["1", "3", "5", "7"],
                   lambda name, size: TransformSpec(size or 8, "bilinear", (0.5, 0.5, 0.5),
                                                    (0.25, 0.25, 0.25)))
    url = str(tmp_path / "s.zarr")
    code, _, err = run(["extract", str(data), "--store", url, "--model", "tiny_fading",
                        "--init", "pretrained", "--init", "random:0", "-q"], capsys)
    assert code == 0, err
    assert "warning: numerically degenerate features: " in err
    assert "random:0 at 3 ... 7 (3 layers): RMS " in err
    code, out, err = run(["info", url], capsys)
    assert code == 0
    assert "activation health per init" in out and "random:0" in out
    assert err.startswith("warning: numerically degenerate features: ")
    assert "random:0 at 3 ... 7 (3 layers)" in err and len(err.strip().splitlines()) == 1
    health = xr.open_zarr(url).attrs["featstore"]["health"]
    assert health["random:0"]["7"]["rms"] < 1e-6 * health["pretrained"]["7"]["rms"]


# ------------------------------------------------------------------------------- float16


@pytest.mark.parametrize("factor, expected", [(1e6, "overflow float16"),
                                              (1e-7, "are below 6.1e-05")])
def test_float16_refuses_magnitudes_it_cannot_hold(data: Path, tmp_path: Path, factor: float,
                                                   expected: str) -> None:
    model = f"tiny_scaled_{factor:g}"

    def build(name: str, init: object) -> tuple[nn.Module, str | None, str | None]:
        net = TinyCNN()
        norm = net.get_submodule("block.1")
        assert isinstance(norm, nn.BatchNorm2d)
        with torch.no_grad():
            norm.weight.mul_(factor)
            norm.bias.mul_(factor)
        return net, None, None

    register_model(model, build, lambda m: ["stem", "block"],
                   lambda name, size: TransformSpec(size or 12, "bilinear", (0.5,) * 3,
                                                    (0.25,) * 3))
    url = str(tmp_path / "s.zarr")
    with pytest.raises(FeatstoreInputError, match=rf"^--dtype float16 would destroy init "
                                                  rf"'random:0' at layer 'block': .*{expected}"):
        featstore.extract(str(data), url, model=model, inits=("random:0",), dtype="float16",
                          image_size=12, device="cpu")
    assert FeatureStore.open(url).init_names == []  # refused before anything of it was written


def test_float16_round_trip_of_healthy_features(data: Path, tmp_path: Path) -> None:
    half = featstore.extract(str(data), str(tmp_path / "h.zarr"), inits=("pretrained",),
                             dtype="float16", **SMALL)
    full = featstore.extract(str(data), str(tmp_path / "f.zarr"), inits=("pretrained",),
                             **SMALL)
    for layer in ("stem", "block"):
        h, f = half[layer].values.astype(np.float64), full[layer].values.astype(np.float64)
        np.testing.assert_allclose(h, f, rtol=2**-10, atol=1e-7)


# ------------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_tiles_bn_baseline_is_healthy_where_random_is_not(tmp_path: Path) -> None:
    """On LC25000 tiles: the random head's pooled RMS is far below 1e-2, the recalibrated
    one's within [1e-2, 1e2]; shuffled differs from pretrained with the same weights."""
    if not LC25000.is_dir():
        pytest.skip(f"{LC25000} is absent")
    root = tmp_path / "tiles"
    for folder in sorted(p for p in LC25000.iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True)
        for tile in sorted(folder.iterdir())[:8]:
            (root / folder.name / tile.name).symlink_to(tile)
    url = str(tmp_path / "s.zarr")
    ds = featstore.extract(str(root), url, layers="stem,head", device="cpu",
                           inits=("pretrained", "random:0", "random:0+bn", "shuffled:0"))
    assert list(ds["init"].values) == ["pretrained", "random:0", "random:0+bn", "shuffled:0"]
    health = ds.attrs["featstore"]["health"]
    assert health["random:0"]["head"]["rms"] < 1e-6
    assert 1e-2 <= health["random:0+bn"]["head"]["rms"] <= 1e2
    assert not np.allclose(ds["head"].sel(init="pretrained").values,
                           ds["head"].sel(init="shuffled:0").values)
