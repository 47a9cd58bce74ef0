"""Reparameterisations that defenses train instead of the weights, and their folding back.

Both are ``torch.nn.utils.parametrize`` parametrizations, so the model keeps its module tree,
``functional_call`` (FIP's Fisher-trace JVP) sees only the new trainable tensors, and
:func:`fold` turns the model back into a plain network with the same outputs.

- :class:`Mask` (NFT, RNP, AWM): ``weight = m * weight`` with one mask ``m`` per channel of a
  BatchNorm layer (initialised to 1), i.e. ``y = m * gamma * xhat + beta``, or one per weight.
- :class:`SingularValueShift` (Fast FIP): a Conv2d/Linear weight ``W`` reshaped to out x rest,
  ``W = U diag(s) V^T`` (thin SVD, frozen), becomes ``U diag(relu(s + delta)) V^T`` with a trainable
  shift ``delta`` initialised to 0.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from backdoorlab.errors import ConfigError

NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)
WEIGHT_TYPES = (nn.Conv2d, nn.Linear)


class Mask(nn.Module):
    """``weight -> mask * weight`` with a trainable ``mask`` of ``shape`` (initialised to 1): one per
    channel of a BatchNorm layer (``shape = num_features``), or one per weight (``shape = weight.shape``)."""

    def __init__(self, shape: int | tuple[int, ...], device=None, dtype=None):
        super().__init__()
        self.mask = nn.Parameter(torch.ones(shape, device=device, dtype=dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.mask * weight


class SingularValueShift(nn.Module):
    """``W -> U diag(relu(s + delta)) V^T`` from the thin SVD of ``W`` (out x rest), with ``U``,
    ``s`` and ``V`` frozen buffers and ``delta`` (one scalar per singular value) trainable."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        matrix = weight.detach().reshape(weight.shape[0], -1)
        u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
        self.shape = tuple(weight.shape)
        self.register_buffer("u", u.to(weight.dtype))
        self.register_buffer("s", s.to(weight.dtype))
        self.register_buffer("vh", vh.to(weight.dtype))
        self.delta = nn.Parameter(torch.zeros_like(self.s))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:  # the original weight is ignored: U, s, V replace it
        return ((self.u * F.relu(self.s + self.delta)) @ self.vh).reshape(self.shape)


def layer_patterns(layers: str | Sequence[str]) -> list[str]:
    """``defense.layers`` as a list of glob patterns (one string is one pattern); none is an error."""
    patterns = [layers] if isinstance(layers, str) else [str(p) for p in layers]
    if not patterns:
        raise ConfigError('defense.layers must hold at least one layer name pattern ("*": all)')
    return patterns


def select_modules(model: nn.Module, types: tuple[type, ...], patterns: Sequence[str], what: str) -> list[tuple[str, nn.Module]]:
    """Modules of ``types`` whose qualified name matches one of the glob ``patterns`` (``"*"``: all),
    in registration order; a pattern that matches none of them, or a model without such layers, is a :class:`ConfigError`."""
    candidates = [(name, m) for name, m in model.named_modules() if isinstance(m, types)]
    if not candidates:
        kinds = " or ".join(t.__name__.lstrip("_") for t in types)
        raise ConfigError(f"{what} selects {kinds} layers and this model has none")
    patterns = list(patterns)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name, _ in candidates):
            names = ", ".join(name for name, _ in candidates[:6])
            raise ConfigError(f"{what} pattern {pattern!r} matches none of the model's layers ({names}, ...)")
    return [(name, m) for name, m in candidates if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def forward_order(model: nn.Module, modules: list[tuple[str, nn.Module]], example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """``modules`` sorted by when a forward pass on ``example`` first calls them (modules it never
    calls go last, in their given order). Runs in eval mode without gradients."""
    first_call: dict[int, int] = {}

    def record(module, *_):  # a forward hook's return value would replace the output
        first_call.setdefault(id(module), len(first_call))

    hooks = [m.register_forward_hook(record) for _, m in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return sorted(modules, key=lambda item: first_call.get(id(item[1]), len(modules) + modules.index(item)))


def attach(modules: list[tuple[str, nn.Module]], make: Callable[[nn.Module], nn.Module]) -> list[nn.Module]:
    """Registers ``make(module)`` as a parametrization of every module's ``weight``; returns them."""
    added = []
    for _, module in modules:
        p = make(module)
        parametrize.register_parametrization(module, "weight", p)
        added.append(p)
    return added


def fold(model: nn.Module) -> nn.Module:
    """Replaces every parametrized ``weight`` in ``model`` by its current value (in place): the
    plain network, with the same outputs, that is saved. Returns ``model``."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model
