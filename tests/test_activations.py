"""The pooled extractor equals a direct forward pass with hooks; the network runs once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featstore.activations import PooledExtractor, pool_activation


def _reference(model: torch.nn.Module, batch: torch.Tensor, layers: list[str], pool: str):
    maps: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: maps.__setitem__(name, out.detach().clone()))
        for name in layers
    ]
    with torch.no_grad():
        model(batch)
    for handle in handles:
        handle.remove()
    reduce = (lambda t: t.mean(dim=(2, 3))) if pool == "avg" else (lambda t: t.amax(dim=(2, 3)))
    return {name: reduce(maps[name]).numpy() for name in layers}


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_equals_direct_forward_pass(two_conv_net, pool):
    batch = torch.randn(5, 3, 16, 16)
    layers = ["conv1", "act1", "conv2", "act2"]
    got = PooledExtractor(two_conv_net, layers, pool)(batch)
    want = _reference(two_conv_net, batch, layers, pool)
    for name in layers:
        assert got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)


def test_network_runs_once_and_stops_after_deepest_layer(two_conv_net):
    calls = {"model": 0, "fc": 0}
    two_conv_net.register_forward_pre_hook(
        lambda *_: calls.__setitem__("model", calls["model"] + 1))
    two_conv_net.fc.register_forward_pre_hook(lambda *_: calls.__setitem__("fc", calls["fc"] + 1))
    extractor = PooledExtractor(two_conv_net, ["act1", "act2"], "avg")
    extractor(torch.randn(2, 3, 8, 8))
    assert calls == {"model": 1, "fc": 0}
    assert extractor.forward_calls == 1


def test_output_in_layer_order_and_hooks_removed(two_conv_net):
    extractor = PooledExtractor(two_conv_net, ["conv1", "fc"], "avg")
    out = extractor(torch.randn(2, 3, 8, 8))
    assert list(out) == ["conv1", "fc"]
    assert out["fc"].shape == (2, 3)
    assert not two_conv_net.conv1._forward_hooks
    assert not two_conv_net.fc._forward_hooks


def test_pool_token_sequences_and_flat():
    tokens = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    np.testing.assert_allclose(pool_activation(tokens, "avg").numpy(), tokens.mean(1).numpy())
    flat = torch.randn(2, 5)
    assert torch.equal(pool_activation(flat, "max"), flat)


def test_bad_pool_and_layer(two_conv_net):
    with pytest.raises(ValueError, match="unknown pool 'median'"):
        PooledExtractor(two_conv_net, ["conv1"], "median")
    with pytest.raises(ValueError, match="layers not in model"):
        PooledExtractor(two_conv_net, ["conv9"], "avg")


def test_channels_last_maps_pool_over_space():
    maps = torch.randn(2, 5, 6, 3)  # (batch, h, w, channels), as Swin stages produce
    got = pool_activation(maps, "avg", channel_axis=2)
    np.testing.assert_allclose(got.numpy(), maps.mean(dim=(1, 2)).numpy(), rtol=1e-6)
    assert pool_activation(maps, "max", channel_axis=-1).shape == (2, 3)
