"""Everything an experiment needs from the data, built in one place from (dataset, attack, seeds):
the poisoned training set, the clean purification pool, the clean test set and the triggered test set."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backdoorlab.attacks.base import Attack
from backdoorlab.data.images import DatasetBundle
from backdoorlab.data.poisoned import PoisonedImages, fully_triggered, subset
from backdoorlab.data.split import PoolSplit, per_class_subset, split_pool


@dataclass
class BackdoorData:
    bundle: DatasetBundle
    attack: Attack
    split: PoolSplit
    poisoned_positions: torch.Tensor  # positions in ``split.train`` that carry the trigger
    train: PoisonedImages  # what the (backdoored) model is trained on
    pool: PoisonedImages  # the defender's clean pool, disjoint from ``train``
    test_clean: PoisonedImages
    test_triggered: PoisonedImages | None  # None for a benign model

    @property
    def num_classes(self) -> int:
        return self.bundle.num_classes

    def pool_subset(self, per_class: int | None, seed: int) -> PoisonedImages:
        """The pool, or ``per_class`` of its images of every class (seeded; one-shot pools)."""
        if per_class is None:
            return self.pool
        chosen = self.split.pool[per_class_subset(self.pool.labels, per_class, seed)]
        return subset(self.bundle.train, chosen, self.attack)


def build_backdoor_data(
    bundle: DatasetBundle, attack: Attack, pool_fraction: float, split_seed: int, poison_seed: int
) -> BackdoorData:
    """Split ``bundle.train`` into training set and pool, poison the training set, build the test sets."""
    attack.build(bundle.channels, bundle.image_size, bundle.num_classes)
    split = split_pool(bundle.train.labels, pool_fraction, split_seed)
    positions = attack.poison_indices(bundle.train.labels[split.train], poison_seed)
    test_all = torch.arange(len(bundle.test))
    triggered = None
    if not attack.is_benign:
        triggered = fully_triggered(bundle.test, attack.asr_indices(bundle.test.labels), attack)
    return BackdoorData(
        bundle=bundle,
        attack=attack,
        split=split,
        poisoned_positions=positions,
        train=PoisonedImages(bundle.train, split.train, attack, positions),
        pool=subset(bundle.train, split.pool, attack),
        test_clean=subset(bundle.test, test_all, attack),
        test_triggered=triggered,
    )
