"""``--compile``: a torch.compile'd truncated network stores the eager features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from featstore.cli.app import main
from torch import nn

import featstore
from featstore.activations import PooledExtractor
from featstore.compiled import truncated_pooled
from featstore.models import TransformSpec, build_model, parse_init, register_model
from helpers import make_image_folder

OPTIONS = ["--model", "tiny_cnn", "--image-size", "12", "--batch-size", "4", "--chunk-images",
           "4", "--device", "cpu", "--init", "pretrained", "--init", "random:0", "-q"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0), capsys.readouterr().err


def test_truncated_graph_drops_the_classifier_and_pools_like_the_hooks() -> None:
    model, _ = build_model("efficientnet_lite0", parse_init("random:0"))
    eager = PooledExtractor(model, ["stem", "blocks.2"], "max")
    module = truncated_pooled(eager)
    graph = module.get_submodule("graph")
    assert isinstance(graph, torch.fx.GraphModule)
    names = {node.target for node in graph.graph.nodes if node.op == "call_module"}
    assert not any(str(name).startswith(("head", "classifier", "blocks.3")) for name in names)
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        ours = module(x)
    expected = eager(x)
    for name, value in zip(["stem", "blocks.2"], ours, strict=True):
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_extraction_equals_eager(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = make_image_folder(tmp_path / "data", per_class=6)
    eager_url, compiled_url = str(tmp_path / "e.zarr"), str(tmp_path / "c.zarr")
    assert run(["extract", str(data), "--store", eager_url, *OPTIONS], capsys)[0] == 0
    assert run(["extract", str(data), "--store", compiled_url, "--compile", *OPTIONS],
               capsys)[0] == 0
    eager, compiled = xr.open_zarr(eager_url).load(), xr.open_zarr(compiled_url).load()
    for var in eager.data_vars:
        scale = float(np.abs(eager[var].values).max())
        np.testing.assert_allclose(compiled[var].values, eager[var].values, rtol=0,
                                   atol=1e-4 * scale, err_msg=var)


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if float(y.sum()) > 0 else -y  # control flow on data: not traceable


def test_untraceable_model_is_one_line_exit_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    register_model("tiny_data_dependent", lambda name, init: (_DataDependent(), None, None),
                   lambda model: ["conv"],
                   lambda name, size: TransformSpec(size or 8, "bilinear", (0.5,) * 3,
                                                    (0.5,) * 3))
    data = make_image_folder(tmp_path / "data", per_class=2)
    code, err = run(["extract", str(data), "--store", str(tmp_path / "s.zarr"), "--model",
                     "tiny_data_dependent", "--init", "random:0", "--compile", "-q"], capsys)
    assert code == 2
    assert err.startswith("featstore: error: --compile: _DataDependent cannot be traced "
                          "symbolically (") and err.strip().endswith("extract without --compile")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.zarr").exists()  # refused before the store was touched
    featstore.extract(str(data), str(tmp_path / "plain.zarr"), model="tiny_data_dependent",
                      inits=("random:0",))  # without --compile it works
