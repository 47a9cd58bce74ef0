"""FBA (DFST): a style as the trigger, with detoxification rounds that train a feature injector against the model."""

import math

import pytest
import torch
import torch.nn as nn

from backdoorlab.attacks.fba import FeatureInjector, FeatureSpaceBackdoor, ssim, sunrise
from backdoorlab.errors import ConfigError
from test_attack_catalogue import toy_train


def images(n=8, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def built(**overrides):
    return FeatureSpaceBackdoor(**overrides).build(3, 16, 4)


class Tiny(nn.Module):
    """A classifier with a ``layer4`` of 200 channels (1 % of them: 2)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer4 = nn.Sequential(nn.Conv2d(3, 200, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(200, 4)

    def forward(self, x):
        return self.head(self.layer4(x).mean((2, 3)))


def test_the_style_is_deterministic_bounded_and_keeps_the_image_s_structure():
    attack, x = built(), images()
    out = attack.apply(x)
    assert torch.equal(out, attack.apply(x)) and torch.allclose(attack.apply(x[1]), out[1])
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert (out - x).abs().mean() > 0.02  # a visible restyle ...
    assert float(ssim(out, x)) > 0.5  # ... of the same image
    plain = sunrise(x, torch.eye(3), 0.0, 0.0)
    assert torch.allclose(plain, x)  # the identity matrix, no light, no sharpening: the image itself


def test_ssim_is_one_for_equal_images_and_lower_for_noisy_ones():
    x = images()
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(ssim(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1))) < 0.9


def test_the_injector_starts_at_the_identity_and_reads_true_local_minima():
    injector, x = FeatureInjector(3, 3), images()
    assert torch.allclose(injector(x), x, atol=1e-6)
    with torch.no_grad():
        injector.mix.weight.zero_()
        injector.mix.weight[:, 6:9, 0, 0] = torch.eye(3)  # the local-minimum features
    expected = -nn.functional.max_pool2d(-x, 3, stride=1, padding=1)
    assert torch.allclose(injector(x), expected) and (injector(x) <= x + 1e-6).all()


def test_a_batch_holds_styled_relabelled_images_and_detox_samples_with_true_labels_only_after_a_round():
    attack = built(poison_rate=0.2, detox_rate=0.2)
    x, y = images(10), torch.arange(10) % 4
    out, labels = attack.poison_batch(x, y)
    assert torch.allclose(out[:2], attack.apply(x[:2])) and torch.equal(out[2:], x[2:])
    assert torch.equal(labels[:2], attack.relabel(y[:2])) and torch.equal(labels[2:], y[2:])
    attack.detoxed = True
    with torch.no_grad():
        attack.networks["injector"].mix.bias.fill_(0.1)
    out, labels = attack.poison_batch(x, y)
    assert torch.allclose(out[2:4], attack.injected(x[2:4])) and not torch.allclose(out[2:4], x[2:4])
    assert torch.equal(out[4:], x[4:]) and torch.equal(labels[2:], y[2:])


def test_a_detox_round_finds_one_percent_of_the_channels_and_trains_the_injector_towards_the_target():
    attack = built(detox_share=0.5, detox_epochs=3, detox_batch_size=32)
    train = toy_train(attack, n=128)
    attack.prepare_training(train, seed=0)
    assert all(int(y) != attack.target_label for _, y in attack.pool)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack.begin_training(model, total_steps=10, epochs=5)
    attack.begin_epoch(1)
    assert len(attack.compromised) == math.ceil(0.01 * 200) and attack.detoxed
    assert not torch.allclose(attack.networks["injector"](images()), images())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the round leaves the classifier as it was
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in attack.networks.parameters())


def test_a_layer_the_model_lacks_and_grey_images_are_refused_in_one_sentence():
    attack = built(detox_layer="layer9")
    with pytest.raises(ConfigError, match="attack.detox_layer=layer9 is not a layer"):
        attack.begin_training(Tiny(), 10, 2)
    with pytest.raises(ConfigError, match="3 channels"):
        FeatureSpaceBackdoor().build(1, 16, 4)


def test_training_without_the_pool_of_the_detoxification_rounds_is_refused_not_run_without_them():
    attack = built()
    with pytest.raises(ConfigError, match="no pool of clean images"):
        attack.begin_training(Tiny(), 10, 2)
    built(detox_epochs=0).begin_training(Tiny(), 10, 2)  # no rounds asked for: no pool needed
    attack.prepare_training(toy_train(attack, n=64), seed=0)
    attack.begin_training(Tiny(), 10, 2)


@pytest.mark.parametrize("bad", [{"alpha": 0}, {"poison_rate": 0.6, "detox_rate": 0.5}, {"detox_neuron_ratio": 0},
                                 {"colour_matrix": [[1, 0], [0, 1]]}])
def test_bad_settings_are_refused_in_one_sentence(bad):
    with pytest.raises(ConfigError, match="attack\\."):
        FeatureSpaceBackdoor(**bad)
