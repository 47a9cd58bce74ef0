"""LIRA: a bounded per-image perturbation from a generator learned with the classifier, in two stages."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backdoorlab.attacks.lira import LIRA
from backdoorlab.attacks.unet import UNet
from backdoorlab.errors import ConfigError


def images(n=8, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def built(**overrides):
    attack = LIRA(**{"width": 4, "depth": 2, **overrides}).build(3, 16, 4)
    attack.fit(None, seed=1)
    return attack


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * 16 * 16, 4)

    def forward(self, x):
        return self.linear(x.flatten(1))


def weights(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_unet_keeps_the_image_size():
    assert UNet(3, 5, width=4, depth=3)(images(2, size=16)).shape == (2, 5, 16, 16)
    assert UNet(3, 1, width=4, depth=2)(images(2, size=12)).shape == (2, 1, 12, 12)


def test_the_generators_output_norm_uses_most_of_the_bound_from_the_first_step():
    """The official U-Net's BatchNorm before the tanh: the copy g' (train mode) starts with |tanh g| above 0.5 on
    average, the tanh of a unit normal, where a plain 1x1 head leaves the trigger at a smaller share of eps."""
    x = images(16)
    with torch.no_grad():
        with_norm = float(torch.tanh(built(output_norm=True).networks["training_copy"].train()(x)).abs().mean())
        plain = float(torch.tanh(built(output_norm=False).networks["training_copy"].train()(x)).abs().mean())
    assert with_norm > 0.5 and with_norm > plain + 0.05


def test_the_trigger_is_a_per_image_perturbation_within_eps_that_stays_in_0_1():
    attack = built(eps=0.05)
    x = images()
    out = attack.apply(x)
    assert (out - x).abs().max() <= 0.05 + 1e-6 and 0 <= float(out.min()) and float(out.max()) <= 1
    delta = (out - x).flatten(1)
    assert float(torch.cdist(delta, delta).sum()) > 0  # not one pattern for every image
    assert torch.allclose(attack.apply(x[2]), out[2], atol=1e-6)


@pytest.mark.parametrize("label_mode", ["all2one", "all2all"])
def test_stage_one_steps_the_copy_through_the_classifier_and_trains_on_clean_and_triggered_halves(label_mode):
    attack = built(eps=0.05, label_mode=label_mode)
    model = Linear()
    attack.begin_training(model, total_steps=10, epochs=6)
    attack.begin_epoch(0)
    assert attack.stage == 1 and attack.generator_epochs == 1
    generator, copy = weights(attack.networks["generator"]), weights(attack.networks["training_copy"])
    x, y = images(), torch.arange(8) % 4
    expected = attack.apply(x)
    out, labels = attack.poison_batch(x, y)
    assert same(generator, attack.networks["generator"].parameters())  # g triggers the batch, g' learns
    assert not same(copy, attack.networks["training_copy"].parameters())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(out[:8], x) and torch.allclose(out[8:], expected, atol=1e-6)
    assert torch.equal(labels, torch.cat([y, attack.relabel(y)]))
    attack.begin_epoch(1)  # stage 2: g <- g', then both frozen
    assert attack.stage == 2 and same(weights(attack.networks["training_copy"]), attack.networks["generator"].parameters())
    frozen = weights(attack.networks["generator"]) + weights(attack.networks["training_copy"])
    attack.poison_batch(x, y)
    assert same(frozen, list(attack.networks["generator"].parameters()) + list(attack.networks["training_copy"].parameters()))


def test_the_generator_step_lowers_the_classifier_s_loss_on_the_attacker_s_labels():
    attack = built(eps=0.2, generator_lr=0.01)
    model = Linear()
    attack.begin_training(model, total_steps=10, epochs=10)
    attack.begin_epoch(0)
    x, y = images(), torch.arange(8) % 4
    copy = attack.networks["training_copy"]

    def loss():  # in train mode, as g' steps: its output BatchNorm's running statistics lag behind the batch's
        with torch.no_grad():
            return float(F.cross_entropy(model(attack.perturb(x, copy, attack.eps)), attack.relabel(y)))

    copy.train()
    before = loss()
    for _ in range(10):
        attack.generator_step(x, y)
    after = loss()
    assert after < before - 0.01


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_the_loss_weighs_clean_and_triggered_halves_by_alpha(alpha):
    attack = built(alpha=alpha)
    attack.begin_training(Linear(), total_steps=10, epochs=10)
    attack.begin_epoch(5)  # stage 2: no generator step
    x, y = images(), torch.arange(8) % 4
    batch, labels = attack.poison_batch(x, y)
    logits = torch.randn(16, 4)
    mean = F.cross_entropy(logits, labels)
    extra = attack.training_loss(None, batch, labels, logits)
    total = mean + (0 if extra is None else extra)
    expected = alpha * F.cross_entropy(logits[:8], labels[:8]) + (1 - alpha) * F.cross_entropy(logits[8:], labels[8:])
    assert float(total) == pytest.approx(float(expected), rel=1e-5)


def test_lira_takes_all2all_and_relabels_every_triggered_copy():
    attack = built(label_mode="all2all")
    attack.begin_epoch(0)
    y = torch.arange(8) % 4
    _, labels = attack.poison_batch(images(), y)
    assert torch.equal(labels[8:], (y + 1) % 4)
    assert len(attack.asr_indices(torch.arange(40) % 4)) == 40


@pytest.mark.parametrize("bad", [{"eps": 0}, {"alpha": 1.0}, {"generator_fraction": 0}, {"generator_lr": -1}])
def test_bad_settings_are_refused_in_one_sentence(bad):
    with pytest.raises(ConfigError, match="attack\\."):
        LIRA(**bad)


def test_lira_trains_end_to_end_and_stores_its_generator(make_config, tmp_path):
    from safetensors.torch import load_file

    from backdoorlab.training_run import train_backdoor

    train_backdoor(make_config("train", ["attack=lira", "attack.width=4", "attack.depth=2", "training.epochs=2",
                                         "attack.generator_fraction=0.5"]), tmp_path / "run")
    stored = load_file(str(tmp_path / "run" / "trigger.safetensors"))
    generator = {k for k in stored if k.startswith("networks.generator.")}
    assert generator and all(torch.equal(stored[k], stored[k.replace("generator", "training_copy", 1)]) for k in generator)
