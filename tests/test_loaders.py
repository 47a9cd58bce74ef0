"""Batches gathered on the device equal the DataLoader's, bit for bit, and so do the runs they feed."""

import os

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, DistributedSampler

from backdoorlab.attacks.blend import Blend
from backdoorlab.data.backdoor_data import build_backdoor_data
from backdoorlab.data.digits import load_digits
from backdoorlab.data.loaders import DeviceBatches, Repeated, batches
from backdoorlab.data.poisoned import PoisonedImages
from backdoorlab.purification_run import purify
from backdoorlab.training_run import train_backdoor


@pytest.fixture(scope="module")
def data():
    bundle = load_digits(image_size=8, test_fraction=0.2, seed=0)
    return build_backdoor_data(bundle, Blend(alpha=0.3, target_label=2), pool_fraction=0.1, split_seed=0, poison_seed=0)


def drawn(dataset, seed: int, **kwargs) -> tuple[list, torch.Tensor]:
    """Two passes of :func:`batches` from global seed ``seed``, and the global generator's state after them."""
    torch.manual_seed(seed)
    loader = batches(dataset, 16, **kwargs)
    out = [b for _ in range(2) for b in loader]
    return out, torch.get_rng_state()


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.dtype == xb.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("order", ["sequential", "shuffle", "shuffle_drop_last", "replacement", "repeated_pool"])
def test_device_batches_equal_the_dataloader_batches_and_draw_the_same_random_numbers(data, order):
    dataset = Repeated(data.pool, 100) if order == "repeated_pool" else data.train
    kwargs = {"shuffle": order != "sequential" and order != "replacement", "drop_last": order == "shuffle_drop_last",
              "replacement_samples": 70 if order == "replacement" else None}
    device, state_device = drawn(dataset, 3, on_device=True, **kwargs)
    loader, state_loader = drawn(dataset, 3, on_device=False, **kwargs)
    assert isinstance(batches(dataset, 16, on_device=True, **kwargs), DeviceBatches)
    assert_same_batches(device, loader)
    assert torch.equal(state_device, state_loader)  # the run's random stream goes on identically
    if order != "sequential":
        assert not torch.equal(device[0][1], drawn(dataset, 4, on_device=True, **kwargs)[0][0][1])


def test_the_triggered_images_are_stamped_on_the_poisoned_samples_only(data):
    x, y = next(iter(batches(data.train, len(data.train))))
    poisoned = data.train.is_poisoned
    clean = data.train.base.images[data.train.indices].float() / 255
    assert torch.equal(x[~poisoned], clean[~poisoned])
    assert torch.equal(x[poisoned], data.attack.apply(clean[poisoned]))
    assert torch.equal(y, data.train.labels) and (y[poisoned] == 2).all()


@pytest.mark.parametrize("shuffle", [True, False])
def test_ddp_shards_are_those_of_lightnings_distributed_sampler(data, shuffle):
    for epoch in (0, 1):
        for rank in (0, 1):
            loader = batches(data.train, 16, shuffle=shuffle, drop_last=shuffle, rank=rank, world=2)
            loader.sampler.set_epoch(epoch)
            ours = list(loader)
            if shuffle:  # as Lightning replaces the sampler of a shuffled DataLoader
                seed = int(os.getenv("PL_GLOBAL_SEED", 0))  # Lightning's seed, set by seed_everything in earlier tests
                sampler = DistributedSampler(data.train, num_replicas=2, rank=rank, shuffle=True, seed=seed)
                sampler.set_epoch(epoch)
                expected = list(DataLoader(data.train, batch_size=16, sampler=sampler, drop_last=True))
            else:  # evaluation shards without the padding (duplicated samples) of DistributedSampler
                expected = list(DataLoader(torch.utils.data.Subset(data.train, range(rank, len(data.train), 2)), batch_size=16))
            assert_same_batches(ours, expected)
            assert len(loader) == len(expected)


def test_only_the_poisoned_samples_go_through_the_trigger(data, monkeypatch):
    """A trigger made by networks costs a forward pass per image: a clean pool's batches never reach the attack,
    a poisoned training set's send it its poisoned images only."""
    stamped = []
    apply = data.attack.apply
    monkeypatch.setattr(data.attack, "apply", lambda x: stamped.append(len(x)) or apply(x))
    for _ in batches(data.pool, 16, on_device=True):
        pass
    assert stamped == []
    for _ in batches(data.train, 16, on_device=True):
        pass
    assert sum(stamped) == int(data.train.is_poisoned.sum()) > 0 and max(stamped) < 16


def test_a_view_of_files_is_served_by_a_dataloader(data, tmp_path):
    from backdoorlab.data.images import FolderImages, TensorImages
    from torchvision.utils import save_image

    images = TensorImages(data.bundle.test.images[:4], data.bundle.test.labels[:4])
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        save_image(images.image(i), paths[-1])
    view = PoisonedImages(FolderImages(paths, images.labels.tolist(), 8), torch.arange(4), data.attack, torch.tensor([1]))
    assert isinstance(batches(view, 2), DataLoader)
    with pytest.raises(ValueError, match="not held in memory"):
        batches(view, 2, on_device=True)


RUN = ["attack=blend", "seed=2", "training.epochs=2"]


def test_training_and_purification_are_bit_for_bit_those_of_the_dataloader_path(make_config, tmp_path):
    weights = {}
    for on_device in ("true", "false"):
        trained = tmp_path / f"train-{on_device}"
        train_backdoor(make_config("train", [*RUN, f"trainer.data_on_device={on_device}"]), trained)
        purified = tmp_path / f"purify-{on_device}"
        purify(make_config("purify", [f"checkpoint={trained}", "defense=ft", f"trainer.data_on_device={on_device}"]), purified)
        weights[on_device] = [load_file(str(d / "model.safetensors")) for d in (trained, purified)]
    for a, b in zip(weights["true"], weights["false"]):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
