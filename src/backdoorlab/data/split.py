"""The fixed, seeded, stratified split of a training part into the model's training set and the
defender's clean purification pool (disjoint by construction)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from backdoorlab.errors import ConfigError


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (kept, held out), holding out ``round(fraction * n_c)`` (at least one when
    ``fraction > 0``) of every class ``c``. Both index tensors are sorted."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"a holdout fraction must lie in [0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(int(seed))
    kept, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_held = max(1, round(fraction * len(idx))) if fraction > 0 else 0
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


@dataclass(frozen=True)
class PoolSplit:
    """Indices into the official training part: what the model trains on, and the clean pool."""

    train: torch.Tensor
    pool: torch.Tensor

    def fingerprint(self) -> str:
        """A short hash of the pool indices, stored with checkpoints to detect a changed split."""
        return hashlib.sha256(self.pool.numpy().tobytes()).hexdigest()[:16]


def split_pool(labels: torch.Tensor, pool_fraction: float, seed: int) -> PoolSplit:
    """Hold out a stratified clean pool of ``pool_fraction`` of every class."""
    if not 0.0 < pool_fraction < 1.0:
        raise ConfigError(f"dataset.pool_fraction must lie in (0, 1), got {pool_fraction}")
    train, pool = stratified_holdout(labels, pool_fraction, seed)
    return PoolSplit(train=train, pool=pool)


def per_class_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Positions of ``per_class`` samples of every class (seeded); a clear error when a class has fewer."""
    gen = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < per_class:
            raise ConfigError(
                f"the purification pool has {len(idx)} images of class {c} but defense.samples_per_class "
                f"asks for {per_class}; raise dataset.pool_fraction or lower defense.samples_per_class"
            )
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values
