"""``--compile``: the pooled activations of every chosen layer from a torch.compile'd network.

:class:`~featstore.activations.PooledExtractor` pools inside forward hooks and stops the
forward pass with an exception after the deepest chosen layer; neither survives compilation
well. Here the network is first *truncated* symbolically (torch.fx, through torchvision's
``create_feature_extractor``: every node that no chosen layer needs is dropped, the classifier
included), the pooling of each layer is appended to the graph, and the whole is compiled with
``torch.compile``. The result equals the eager extractor's to floating-point rounding (tested
within 1e-4 relative). Compilation costs tens of seconds once per model and input shape; it
pays off on large jobs only (``benchmarks/RESULTS.md`` gives the break-even).

Pure compute: nothing is opened, printed or saved.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .activations import PooledExtractor
from .errors import FeatstoreInputError

__all__ = ["CompiledPooledExtractor", "truncated_pooled"]


class _PooledOutputs(nn.Module):
    """A truncated feature graph followed by the pooling of each of its outputs."""

    def __init__(self, graph: nn.Module, eager: PooledExtractor) -> None:
        super().__init__()
        self.graph = graph
        self.layers = list(eager.layers)
        self._pool = eager.pool_layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Pooled activations, one (batch, units) tensor per chosen layer, shallow to deep."""
        outputs = self.graph(x)
        return tuple(self._pool(name, outputs[name]) for name in self.layers)


def _leaf_types(model: nn.Module) -> list[type[nn.Module]]:
    """Module classes that symbolic tracing must not enter (shape-dependent Python code)."""
    from .models.efficientnet_lite import _SameConv2d

    return [_SameConv2d]


def truncated_pooled(eager: PooledExtractor) -> nn.Module:
    """The eager extractor's model cut after its deepest chosen layer, with pooling appended.

    Raises
    ------
    FeatstoreInputError
        When the model cannot be traced symbolically (then ``--compile`` is not available for
        it; extraction without it works).
    """
    from torchvision.models.feature_extraction import create_feature_extractor

    try:
        graph = create_feature_extractor(
            eager.model, return_nodes={name: name for name in eager.layers},
            tracer_kwargs={"leaf_modules": _leaf_types(eager.model)},
        )
    except Exception as exc:  # noqa: BLE001 - tracing fails in many ways on dynamic code
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise FeatstoreInputError(
            f"--compile: {type(eager.model).__name__} cannot be traced symbolically ({reason}); "
            "extract without --compile"
        ) from None
    return _PooledOutputs(graph, eager).eval()


class CompiledPooledExtractor:
    """:class:`~featstore.activations.PooledExtractor`'s results from a compiled, truncated
    network; same call signature (batch -> {layer: (n, units) float32 array}).

    Parameters
    ----------
    eager : PooledExtractor
        The extractor to reproduce (model, layers, pooling and token layout).
    mode : str
        ``torch.compile`` mode.
    """

    def __init__(self, eager: PooledExtractor, mode: str = "default") -> None:
        self.layers = list(eager.layers)
        self.model = eager.model
        self._module = truncated_pooled(eager)
        self._compiled: Any = torch.compile(self._module, mode=mode, dynamic=False)
        self.forward_calls = 0

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        """Run the compiled network once on ``batch`` (shape (n, 3, H, W), on its device)."""
        self.forward_calls += 1
        outputs = self._compiled(batch)
        return {name: out.float().cpu().numpy() for name, out in zip(self.layers, outputs,
                                                                     strict=True)}
