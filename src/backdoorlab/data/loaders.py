"""Batches of a data set view, gathered as tensor ops from uint8 images held on the device.

A view whose images are in memory (:class:`~backdoorlab.data.images.TensorImages`: CIFAR, the
image-folder cache, digits) is copied once to the device as uint8; every batch is then one gather,
one conversion to [0, 1] and one batched trigger stamp (``torch.where`` over the batch, so no
host-device synchronisation), with no per-sample Python and no DataLoader workers. Views of lazily
decoded files (ImageNet folders) keep the DataLoader path.

:func:`batches` yields exactly the batches that a ``torch.utils.data.DataLoader`` of the same view
yields, bit for bit: the shuffled orders are drawn from the global generator as a ``DataLoader``
with a ``RandomSampler`` draws them (its iterator's base seed, then the sampler's seed), or as
Lightning's ``DistributedSampler`` does under DDP. A run therefore does not depend on which path
served it, and models trained before this path existed are reproduced by it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from backdoorlab.data.poisoned import PoisonedImages

DATA_ON_DEVICE = ("auto", True, False)


class Repeated(Dataset):
    """``base`` cycled to ``length`` items, so that a shuffled epoch visits every item equally often
    even when the pool is smaller than a batch (one-shot pools)."""

    def __init__(self, base: Dataset, length: int):
        self.base, self.length = base, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.base[i % len(self.base)]


def _view_of(dataset: Dataset) -> tuple[PoisonedImages | None, int]:
    """The in-memory view behind ``dataset`` (through :class:`Repeated`) and the cycle length."""
    base = dataset.base if isinstance(dataset, Repeated) else dataset
    if isinstance(base, PoisonedImages) and base.in_memory:
        return base, len(base)
    return None, 0


def can_reside(dataset: Dataset) -> bool:
    """Whether ``dataset``'s images are in memory, so that :func:`batches` can serve it from the device."""
    return _view_of(dataset)[0] is not None


def _global_draw() -> int:
    return int(torch.empty((), dtype=torch.int64).random_().item())


class _EpochOf:
    """The ``sampler`` of a :class:`DeviceBatches`: Lightning calls ``loader.sampler.set_epoch(epoch)``
    at every epoch (the shuffle seed of DDP sharding)."""

    def __init__(self, loader: DeviceBatches):
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.loader.epoch = int(epoch)


class DeviceBatches:
    """An iterable of ``(x, y)`` batches on ``device`` gathered from an in-memory view.

    ``order``: ``"sequential"``; ``"shuffle"`` (a fresh permutation every pass, as ``shuffle=True``);
    ``"replacement"`` (``samples`` positions drawn with replacement). ``world`` > 1 shards as
    Lightning's ``DistributedSampler`` (seeded with ``seed`` + the epoch that Lightning sets through
    ``sampler.set_epoch``; sequential shards are not padded). ``drop_last`` drops a final short batch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device | str, order: str = "sequential",
                 drop_last: bool = False, samples: int | None = None, rank: int = 0, world: int = 1, seed: int = 0):
        view, cycle = _view_of(dataset)
        if view is None:
            raise ValueError("DeviceBatches needs a view of in-memory images")
        self.images, self.labels, self.poisoned = view.resident(device)
        self.view, self.cycle, self.n = view, cycle, len(dataset)
        self.batch_size, self.order, self.drop_last = int(batch_size), order, bool(drop_last)
        self.samples = self.n if samples is None else int(samples)
        self.rank, self.world, self.seed, self.epoch = int(rank), int(world), int(seed), 0
        self.sampler, self.batch_sampler = _EpochOf(self), None  # what Lightning looks for on a loader


    def _positions(self) -> torch.Tensor:
        if self.world > 1:
            if self.order == "sequential":
                return torch.arange(self.n)[self.rank :: self.world]
            _global_draw()  # the DataLoader iterator's base seed; the sampler has its own generator
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
            total = math.ceil(self.n / self.world) * self.world
            perm = torch.cat([perm, perm[: total - self.n]]) if total > self.n else perm
            return perm[self.rank : total : self.world]
        if self.order == "sequential":
            return torch.arange(self.n)
        _global_draw()  # the DataLoader iterator's base seed
        gen = torch.Generator().manual_seed(_global_draw())  # RandomSampler's seed
        if self.order == "shuffle":
            return torch.randperm(self.n, generator=gen)
        draws = [torch.randint(high=self.n, size=(32,), generator=gen) for _ in range(self.samples // 32)]
        draws.append(torch.randint(high=self.n, size=(self.samples % 32,), generator=gen))
        return torch.cat(draws)

    def _count(self) -> int:
        """How many positions one pass visits on this process."""
        if self.order == "replacement":
            return self.samples
        if self.world == 1:
            return self.n
        if self.order == "sequential":
            return len(range(self.rank, self.n, self.world))
        return math.ceil(self.n / self.world)

    def __len__(self) -> int:
        count = self._count()
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def gather(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images at ``positions`` in [0, 1], triggered where poisoned, and their labels."""
        idx = (positions % self.cycle).to(self.images.device)
        x = self.images[idx].float().div_(255.0)
        rows = self.poisoned[idx].nonzero().squeeze(1)
        if len(rows):  # only the poisoned rows: a trigger made by networks costs a forward pass per image stamped
            x[rows] = self.view.stamp(x[rows], idx[rows])
        return x, self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        positions = self._positions()
        for i in range(len(self)):
            yield self.gather(positions[i * self.batch_size : (i + 1) * self.batch_size])


def batches(dataset: Dataset, batch_size: int, device: torch.device | str = "cpu", *, shuffle: bool = False,
            drop_last: bool = False, replacement_samples: int | None = None, on_device: bool | str = "auto",
            num_workers: int = 0, rank: int = 0, world: int = 1):
    """Batches of ``dataset`` on ``device``: :class:`DeviceBatches` when its images are in memory (and
    ``on_device`` is not ``False``), else a DataLoader (``num_workers`` workers) whose batches still
    need moving to the device. Both give the same batches. ``replacement_samples`` draws that many
    positions with replacement instead of shuffling."""
    if on_device not in DATA_ON_DEVICE:
        raise ValueError(f"on_device must be auto, true or false, got {on_device!r}")
    resident = can_reside(dataset) and on_device is not False
    if on_device is True and not resident:
        raise ValueError("the data set's images are not held in memory, so they cannot be served from the device")
    if resident:
        order = "replacement" if replacement_samples else "shuffle" if shuffle else "sequential"
        return DeviceBatches(dataset, batch_size, device, order=order, drop_last=drop_last, samples=replacement_samples,
                             rank=rank, world=world, seed=int(os.getenv("PL_GLOBAL_SEED", 0)))
    sampler = RandomSampler(dataset, replacement=True, num_samples=replacement_samples) if replacement_samples else None
    # An unshuffled loader draws its iterator seed from its own generator, not from the global RNG:
    # evaluating more or less often must not change the training or purification run.
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      drop_last=drop_last, num_workers=num_workers, persistent_workers=num_workers > 0,
                      pin_memory=torch.cuda.is_available(), generator=None if shuffle or sampler else torch.Generator())
