"""The LightningDataModule shared by training (poisoned set) and purification (clean pool)."""

from __future__ import annotations

import lightning as L
from torch.utils.data import Dataset

from backdoorlab.data.backdoor_data import BackdoorData
from backdoorlab.data.loaders import DATA_ON_DEVICE, Repeated, batches, can_reside
from backdoorlab.errors import ConfigError


class BackdoorDataModule(L.LightningDataModule):
    """Training loader: the poisoned training set (``role="train"``) or the clean pool cycled for
    ``pool_steps`` batches (``role="purify"``). Evaluation loaders: clean test set, then triggered set.

    ``data_on_device`` (``auto``, ``true``, ``false``): serve in-memory images from uint8 tensors on
    the training device (:mod:`backdoorlab.data.loaders`; ``auto`` wherever the images are in
    memory), or through DataLoader workers. Both give the same batches."""

    def __init__(
        self,
        data: BackdoorData,
        batch_size: int,
        role: str = "train",
        eval_batch_size: int = 512,
        num_workers: int = 0,
        pool_steps: int = 0,
        pool: Dataset | None = None,
        data_on_device: bool | str = "auto",
    ):
        super().__init__()
        if role not in ("train", "purify"):
            raise ValueError(f"role must be 'train' or 'purify', got {role!r}")
        if data_on_device not in DATA_ON_DEVICE:
            raise ConfigError(f"trainer.data_on_device must be auto, true or false, got {data_on_device!r}")
        self.data, self.role = data, role
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers, self.pool_steps = int(num_workers), int(pool_steps)
        self.pool = data.pool if pool is None else pool
        if data_on_device is True and not can_reside(data.train):
            raise ConfigError("trainer.data_on_device=true needs a data set held in memory; this one is decoded from files "
                              "(use auto or false)")
        self.data_on_device = data_on_device

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool):
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else "cpu"
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return batches(dataset, batch_size, device, shuffle=shuffle, drop_last=shuffle and len(dataset) > batch_size,
                       on_device=self.data_on_device, num_workers=self.num_workers, rank=rank, world=world)

    def train_dataloader(self):
        if self.role == "train":
            return self._loader(self.data.train, self.batch_size, shuffle=True)
        length = max(self.pool_steps, 1) * self.batch_size
        return self._loader(Repeated(self.pool, length), self.batch_size, shuffle=True)

    def val_dataloader(self) -> list:
        sets = [self.data.test_clean] + ([self.data.test_triggered] if self.data.test_triggered is not None else [])
        return [self._loader(s, self.eval_batch_size, shuffle=False) for s in sets]
