"""Split, poisoned sets and batched augmentation."""

import pytest
import torch

from backdoorlab.attacks.badnets import BadNets
from backdoorlab.attacks.blend import Blend
from backdoorlab.data.augment import BatchAugment, random_shift
from backdoorlab.data.backdoor_data import build_backdoor_data
from backdoorlab.data.loaders import Repeated
from backdoorlab.data.digits import load_digits
from backdoorlab.data.split import per_class_subset, split_pool, stratified_holdout
from backdoorlab.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    return load_digits(image_size=8, test_fraction=0.2, seed=0)


def test_digits_bundle_shapes_and_ranges(digits):
    x, y = digits.train[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert len(digits.train) + len(digits.test) == 1797
    assert abs(len(digits.test) - 0.2 * 1797) < 10
    assert torch.equal(x[0], x[1])  # grayscale repeated to 3 channels
    assert sorted(torch.unique(digits.test.labels).tolist()) == list(range(10))


def test_stratified_holdout_is_disjoint_seeded_and_per_class():
    labels = torch.arange(5).repeat_interleave(torch.tensor([10, 20, 30, 40, 50]))
    kept, held = stratified_holdout(labels, 0.1, seed=0)
    assert len(set(kept.tolist()) & set(held.tolist())) == 0 and len(kept) + len(held) == len(labels)
    assert torch.bincount(labels[held]).tolist() == [1, 2, 3, 4, 5]
    assert torch.equal(held, stratified_holdout(labels, 0.1, seed=0)[1])
    assert not torch.equal(held, stratified_holdout(labels, 0.1, seed=1)[1])


def test_pool_fraction_outside_range_is_refused():
    with pytest.raises(ConfigError, match="dataset.pool_fraction must lie in \\(0, 1\\)"):
        split_pool(torch.arange(10), 0.0, seed=0)


def test_per_class_subset_and_too_small_pool():
    labels = torch.arange(3).repeat(4)
    chosen = per_class_subset(labels, 2, seed=0)
    assert torch.bincount(labels[chosen]).tolist() == [2, 2, 2]
    with pytest.raises(ConfigError, match="pool has 4 images of class 0 but defense.samples_per_class asks for 5"):
        per_class_subset(labels, 5, seed=0)


def test_backdoor_data_poisons_the_training_set_and_keeps_the_pool_clean(digits):
    attack = BadNets(size=2, target_label=7, poison_rate=0.1)
    data = build_backdoor_data(digits, attack, pool_fraction=0.1, split_seed=0, poison_seed=0)
    train_ids, pool_ids = set(data.split.train.tolist()), set(data.split.pool.tolist())
    assert not train_ids & pool_ids and len(train_ids) + len(pool_ids) == len(digits.train)
    assert len(data.poisoned_positions) == round(0.1 * len(data.train))
    pos = int(data.poisoned_positions[0])
    x, y = data.train[pos]
    original = digits.train.image(int(data.split.train[pos]))
    assert y == 7 and int(digits.train.labels[data.split.train[pos]]) != 7
    assert torch.equal(x, attack.apply(original)) and not torch.equal(x, original)
    assert (data.train.labels == 7).sum() > (digits.train.labels[data.split.train] == 7).sum()
    # The pool and the clean test set carry no trigger; the triggered test set excludes the target class.
    for i in range(len(data.pool)):
        assert torch.equal(data.pool[i][0], digits.train.image(int(data.split.pool[i])))
    assert len(data.test_clean) == len(digits.test)
    assert len(data.test_triggered) == int((digits.test.labels != 7).sum())
    assert all(data.test_triggered[i][1] == 7 for i in range(0, len(data.test_triggered), 37))


def test_poisoned_set_is_reproducible(digits):
    a = build_backdoor_data(digits, Blend(), 0.1, 0, poison_seed=5)
    b = build_backdoor_data(digits, Blend(), 0.1, 0, poison_seed=5)
    assert torch.equal(a.poisoned_positions, b.poisoned_positions)
    assert a.split.fingerprint() == b.split.fingerprint()


def test_random_shift_moves_content_without_changing_it():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    out = random_shift(x, 2)
    assert out.shape == x.shape
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(64))  # the pixel stays inside
    where = torch.nonzero(out[:, 0])[:, 1:]
    assert where.min() >= 2 and where.max() <= 6 and len(torch.unique(where, dim=0)) > 10


def test_batch_augment_identity_and_flip():
    x = torch.rand(4, 3, 6, 6)
    assert torch.equal(BatchAugment(0, False)(x), x)
    torch.manual_seed(1)
    flipped = BatchAugment(0, True)(x)
    for a, b in zip(flipped, x):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))


def test_repeated_dataset_cycles_a_small_pool():
    data = Repeated(list(range(3)), 8)
    assert len(data) == 8 and [data[i] for i in range(8)] == [0, 1, 2, 0, 1, 2, 0, 1]
