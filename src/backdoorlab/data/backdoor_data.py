"""Everything an experiment needs from the data, built in one place from (dataset, attack, seeds):
the poisoned training set, the clean purification pool, the clean test set and the triggered test set."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backdoorlab.attacks.base import Attack
from backdoorlab.data.images import DatasetBundle
from backdoorlab.data.poisoned import PoisonedImages, subset
from backdoorlab.data.split import PoolSplit, per_class_subset, split_pool
from backdoorlab.errors import ConfigError

CLEAN_IMAGE_SOURCES = ("train_clean", "pool", "test")


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

    def clean_images(self, which: str, samples: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``samples`` images (all for ``None``, drawn with ``seed``) with their true labels: training
        images without the trigger (``train_clean``), the clean pool (``pool``) or the clean test set (``test``)."""
        if which not in CLEAN_IMAGE_SOURCES:
            raise ConfigError(f"analysis.data must be one of {', '.join(CLEAN_IMAGE_SOURCES)}, got {which!r}")
        source = {"train_clean": self.train, "pool": self.pool, "test": self.test_clean}[which]
        positions = torch.arange(len(source))
        if which == "train_clean":
            positions = positions[~source.is_poisoned]
        if samples is not None:
            if not 1 <= int(samples) <= len(positions):
                raise ConfigError(f"analysis.samples must be in [1, {len(positions)}] for analysis.data={which}, got {samples}")
            positions = positions[torch.randperm(len(positions), generator=torch.Generator().manual_seed(seed))[: int(samples)]]
        images, labels = zip(*(source[int(i)] for i in positions))
        return torch.stack(images), torch.tensor(labels)

    def pool_subset(self, per_class: int | None, seed: int) -> PoisonedImages:
        """The pool, or ``per_class`` of its images of every class (seeded; one-shot pools)."""
        if per_class is None:
            return self.pool
        chosen = self.split.pool[per_class_subset(self.pool.labels, per_class, seed)]
        return subset(self.bundle.train, chosen, self.attack)


def build_backdoor_data(
    bundle: DatasetBundle, attack: Attack, pool_fraction: float, split_seed: int, poison_seed: int,
    trigger: dict[str, torch.Tensor] | None = None, fit: bool = True, fitted: dict[str, torch.Tensor] | None = None,
) -> BackdoorData:
    """Split ``bundle.train`` into training set and pool, poison the training set, build the test sets.
    ``trigger``: the stored trigger of the run that trained the model (``trigger.safetensors``), set
    instead of building or fitting one; ``fitted``: what the attack's fit made for the training set in that run
    (``fit.safetensors``, an interrupted run's); ``fit=False`` leaves a trigger that is fitted on the data unfitted
    and the attack's training hooks unprepared (for checks of the split alone)."""
    if attack.modality != bundle.modality and not attack.is_benign:
        raise ConfigError(f"attack={attack.name} triggers {attack.modality} samples and this dataset holds {bundle.modality} "
                          "samples: choose an attack for them")
    attack.build(bundle.channels, bundle.image_size, bundle.num_classes)
    split = split_pool(bundle.train.labels, pool_fraction, split_seed)
    clean_train = subset(bundle.train, split.train, attack)
    if trigger is not None:
        attack.load_trigger(trigger)
        if fitted is not None:
            attack.load_fit_tensors(fitted)
    elif attack.needs_fit and fit:
        attack.fit(clean_train, poison_seed)
    if fit:
        attack.prepare_training(clean_train, poison_seed)
    positions = attack.poison_indices(bundle.train.labels[split.train], poison_seed)
    test_all = torch.arange(len(bundle.test))
    triggered = None
    if not attack.is_benign:
        triggered = attack.triggered_test_set(bundle.test)
    return BackdoorData(
        bundle=bundle,
        attack=attack,
        split=split,
        poisoned_positions=positions,
        train=PoisonedImages(bundle.train, split.train, attack, positions, training=True),
        pool=subset(bundle.train, split.pool, attack),
        test_clean=subset(bundle.test, test_all, attack),
        test_triggered=triggered,
    )
