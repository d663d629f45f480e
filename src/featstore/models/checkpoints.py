"""Weights files: read a state-dict checkpoint, load it strictly, fingerprint a file.

Shared by every model family, so a checkpoint that does not fit any model is reported the same
way: one line naming the file and the first misfitting keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from featstore.errors import InitSpecError

__all__ = ["file_sha256", "read_checkpoint", "load_state"]


def file_sha256(path: str) -> str:
    """Hex SHA-256 of the file at ``path`` (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """State dict stored at ``path``: a ``.safetensors`` file, or a PyTorch file (``.pth``,
    ``.pt``, ``.bin``) holding the state dict raw or under a ``"state_dict"`` or ``"model"`` key.

    Raises
    ------
    InitSpecError
        For a missing or unreadable file, or one that holds no state dict.
    """
    if str(path).endswith(".safetensors"):
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise InitSpecError(f"checkpoint file '{path}' does not exist") from exc
    except Exception as exc:  # torch.load raises many types for files that are no checkpoints
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InitSpecError(
            f"cannot read checkpoint '{path}' as a PyTorch state dict: {reason}"
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise InitSpecError(
            f"checkpoint '{path}' holds no state dict (a mapping of parameter names to tensors, "
            "possibly under 'state_dict' or 'model')"
        )
    state = dict(obj)
    if all(key.startswith("module.") for key in state):  # saved from nn.DataParallel
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def _read_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path, device="cpu")
    except FileNotFoundError as exc:
        raise InitSpecError(f"checkpoint file '{path}' does not exist") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InitSpecError(
            f"cannot read checkpoint '{path}' as a safetensors file: {reason}"
        ) from exc
    if not state:
        raise InitSpecError(f"checkpoint '{path}' holds no tensors")
    if all(key.startswith("module.") for key in state):  # saved from nn.DataParallel
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def load_state(net: nn.Module, state: dict[str, torch.Tensor], path: str, name: str) -> None:
    """Load ``state`` into ``net`` strictly, or raise InitSpecError naming the first misfits."""
    own = net.state_dict()
    # BatchNorm fills num_batches_tracked itself for old checkpoints that lack it
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_first(unexpected)}")
    if misshapen:
        k = misshapen[0]
        problems.append(
            f"{len(misshapen)} shape mismatches, e.g. {k} is {tuple(state[k].shape)} in the file "
            f"but {tuple(own[k].shape)} in the model"
        )
    if problems:
        raise InitSpecError(f"checkpoint '{path}' does not fit {name}: {'; '.join(problems)}")
    net.load_state_dict(state, strict=True)


def _first(keys: Sequence[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more

