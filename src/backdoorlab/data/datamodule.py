"""The LightningDataModule shared by training (poisoned set) and purification (clean pool)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from backdoorlab.data.backdoor_data import BackdoorData


class RepeatedDataset(Dataset):
    """``base`` cycled to ``length`` items, so that a shuffled epoch visits every item equally often
    even when the pool is smaller than a batch (one-shot pools)."""

    def __init__(self, base: Dataset, length: int):
        self.base, self.length = base, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.base[i % len(self.base)]


class BackdoorDataModule(L.LightningDataModule):
    """Training loader: the poisoned training set (``role="train"``) or the clean pool cycled for
    ``pool_steps`` batches (``role="purify"``). Evaluation loaders: clean test set, then triggered set."""

    def __init__(
        self,
        data: BackdoorData,
        batch_size: int,
        role: str = "train",
        eval_batch_size: int = 512,
        num_workers: int = 0,
        pool_steps: int = 0,
        pool: Dataset | None = None,
    ):
        super().__init__()
        if role not in ("train", "purify"):
            raise ValueError(f"role must be 'train' or 'purify', got {role!r}")
        self.data, self.role = data, role
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers, self.pool_steps = int(num_workers), int(pool_steps)
        self.pool = data.pool if pool is None else pool

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        # An evaluation loader draws its iterator seed from its own generator, not from the global
        # RNG: evaluating more or less often must not change the training or purification run.
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=None if shuffle else torch.Generator(),
        )

    def train_dataloader(self) -> DataLoader:
        if self.role == "train":
            return self._loader(self.data.train, self.batch_size, shuffle=True)
        length = max(self.pool_steps, 1) * self.batch_size
        return self._loader(RepeatedDataset(self.pool, length), self.batch_size, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        sets = [self.data.test_clean] + ([self.data.test_triggered] if self.data.test_triggered is not None else [])
        return [self._loader(s, self.eval_batch_size, shuffle=False) for s in sets]
