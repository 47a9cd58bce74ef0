"""Loading and saving weights. Checkpoints from outside are untrusted: only safetensors files and
``torch.load(weights_only=True)`` are used, never a plain unpickle."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from backdoorlab.errors import ConfigError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def save_weights(net: nn.Module, path: str | Path) -> None:
    """The bare network's state_dict as safetensors (tensors made contiguous and unshared)."""
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}, str(path))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or a weights-only torch file; unwraps the usual containers
    (``{"state_dict": ...}``, ``{"model": ...}``) and strips DataParallel's ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    elif path.suffix in TORCH_SUFFIXES:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ConfigError(
                f"refusing to load {path}: it is a pickle that needs code to load, which can run arbitrary code; "
                "save a plain state_dict (torch.save(model.state_dict(), ...)) or safetensors instead"
            ) from err
    else:
        raise ConfigError(f"checkpoint {path} must be a run directory, a .safetensors file or one of {', '.join(TORCH_SUFFIXES)}")
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"checkpoint {path} does not hold a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``net`` strictly; a mismatch is one sentence naming what differs."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                parts.append(f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})")
        raise ConfigError(
            f"{source} does not match the model ({'; '.join(parts)}): check model=, model.width and dataset= against how it was trained"
        )
    net.load_state_dict(state)
