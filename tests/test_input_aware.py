"""Input-aware dynamic backdoor: per-image triggers, the mask stage, cross samples, the generator trained with the classifier."""

import pytest
import torch

from backdoorlab.attacks.input_aware import InputAware, TriggerGenerator, threshold
from backdoorlab.errors import ConfigError
from test_attack_catalogue import toy_train

TINY = {"width": 4, "depth": 2, "mask_epochs": 0, "batch_size": 32}


def images(n=8, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def built(**overrides):
    return InputAware(**{**TINY, **overrides}).build(3, 16, 4)


def diversified(attack, steps=20):
    """``attack`` after ``steps`` Adam steps of the joint stage's diversity term alone: its patterns then depend on
    the image (an untrained generator in eval mode gives nearly one pattern for every image)."""
    from backdoorlab.attacks.input_aware import diversity

    pattern = attack.networks["pattern"]
    optimiser = torch.optim.Adam(pattern.parameters(), lr=0.01)
    for step in range(steps):
        x, other = images(seed=100 + step), images(seed=200 + step)
        optimiser.zero_grad()
        diversity(x, other, pattern(x), pattern(other)).backward()
        optimiser.step()
    return attack


def test_generator_keeps_the_image_size_and_gives_values_in_0_1_and_a_one_channel_mask():
    x = images()
    for outputs in (3, 1):
        with torch.no_grad():
            out = TriggerGenerator(3, outputs, width=4, depth=3)(x)
        assert out.shape == (8, outputs, 16, 16)
        assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert float(threshold(torch.tensor(0.0))) < 1e-4 and float(threshold(torch.tensor(1.0))) > 1 - 1e-4


def test_triggers_differ_per_image_and_change_the_image_only_where_the_mask_is_on():
    attack = diversified(built())
    x = images()
    out = attack.apply(x)
    attack.networks.eval()  # as apply runs them
    with torch.no_grad():
        g, m = attack.networks["pattern"](x), attack.masks(x)
    assert torch.allclose(out, x + (g - x) * m, atol=1e-6)
    assert ((out - x).abs() <= m + 1e-6).all()  # the image changes only as far as the mask lets it: nowhere where M(x) = 0
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    patterns = g.flatten(1)
    assert float(torch.cdist(patterns, patterns).sum()) / (8 * 7) > 1.0  # the mean pairwise distance between patterns
    assert not torch.equal(m[0], m[1])
    assert torch.allclose(attack.apply(x[3]), out[3], atol=1e-6)  # one image as in a batch


def test_the_mask_stage_brings_the_mask_density_near_its_target_and_freezes_the_mask():
    # the density penalty against the diversity term at its weight in [0, 1] units; at the official balance
    # (mask_lambda_div 4) these toy images end at 1-4x the target, by seed and thread count
    attack = InputAware(width=4, depth=2, mask_epochs=10, batch_size=32, mask_density=0.05, mask_lambda_div=1.0).build(3, 16, 4)
    attack.fit(toy_train(attack, n=256), seed=1)
    x = next(iter(torch.utils.data.DataLoader(toy_train(attack, n=64, seed=2), batch_size=64)))[0]
    attack.networks.eval()
    with torch.no_grad():
        density = float(attack.masks(x).mean())
    assert 0.005 < density <= 2 * 0.05
    assert attack.info["mask_density"] == pytest.approx(density, abs=0.05)
    assert not any(p.requires_grad for p in attack.networks["mask"].parameters())
    assert all(p.requires_grad for p in attack.networks["pattern"].parameters())


@pytest.mark.parametrize("label_mode", ["all2one", "all2all"])
def test_a_batch_holds_triggered_relabelled_images_then_cross_samples_that_keep_their_labels(label_mode):
    attack = diversified(built(cross_rate=0.2, poison_rate=0.2, label_mode=label_mode))
    attack.networks.eval()  # BatchNorm in eval mode: the networks give the same output on any sub-batch
    x, y = images(10), torch.arange(10) % 4
    torch.manual_seed(3)
    out, labels = attack.poison_batch(x, y)
    torch.manual_seed(3)
    from backdoorlab.attacks.input_aware import partner_order

    partner = x[partner_order(10, "cpu")]
    with torch.no_grad():
        assert torch.allclose(out[:2], attack.apply(x[:2]), atol=1e-6)
        cross = x[2:4] + (attack.networks["pattern"](partner[2:4]) - x[2:4]) * attack.masks(partner[2:4])
    assert torch.allclose(out[2:4], cross, atol=1e-6) and not torch.allclose(out[2:4], attack.apply(x[2:4]), atol=1e-4)
    assert torch.equal(out[4:], x[4:])
    assert torch.equal(labels[:2], attack.relabel(y[:2])) and torch.equal(labels[2:], y[2:])
    assert attack.training_loss(None, out, labels, None) > 0
    assert attack.training_loss(None, out, labels, None) is None  # the term belongs to one batch


def test_a_batch_too_small_to_poison_stays_clean_and_adds_no_term():
    attack = built()
    x, y = images(5), torch.arange(5) % 4
    out, labels = attack.poison_batch(x, y)
    assert torch.equal(out, x) and torch.equal(labels, y)
    assert attack.training_loss(None, out, labels, None) is None


def test_partners_are_never_the_image_itself():
    from backdoorlab.attacks.input_aware import partner_order

    torch.manual_seed(0)
    for n in (2, 3, 17):
        for _ in range(20):
            assert (partner_order(n, "cpu") != torch.arange(n)).all()


def test_the_training_loop_steps_the_pattern_generator_with_the_classifier_and_leaves_the_mask(make_config, tmp_path):
    from backdoorlab.builders import build_augment, build_data, build_model
    from backdoorlab.lightning.training_module import BackdoorTrainingModule

    cfg = make_config("train", ["attack=input_aware", "attack.width=4", "attack.depth=2", "attack.mask_epochs=1"])
    data = build_data(cfg)
    attack = data.attack
    module = BackdoorTrainingModule(build_model(cfg, data.bundle), build_augment(cfg.dataset.augment), attack=attack)
    assert any(n.startswith("attack_networks.pattern") for n, _ in module.named_parameters())
    module.log = lambda *a, **k: None
    attack.begin_training(module.model, 100, 10)
    pattern = [p.clone() for p in attack.networks["pattern"].parameters()]
    mask = [p.clone() for p in attack.networks["mask"].parameters()]
    x, y = images(20, size=data.bundle.image_size), torch.arange(20) % data.num_classes
    module.training_step((x, y), 0).backward()
    attack.end_step()
    assert any(not torch.equal(a, b) for a, b in zip(pattern, attack.networks["pattern"].parameters()))
    assert all(torch.equal(a, b) for a, b in zip(mask, attack.networks["mask"].parameters()))
    state = attack.training_state()
    assert state["optimiser"]["state"] and state["schedule"]["milestones"]


def test_a_resumed_run_which_loads_the_mask_generator_instead_of_fitting_it_keeps_it_frozen():
    attack = built()  # as a resumed run builds it: networks loaded from the stored trigger, fit() never runs
    attack.load_trigger(built().trigger_tensors())
    assert all(p.requires_grad for p in attack.networks["mask"].parameters())
    attack.begin_training(torch.nn.Linear(1, 1), 100, 10)
    assert not any(p.requires_grad for p in attack.networks["mask"].parameters())
    assert all(p.requires_grad for p in attack.networks["pattern"].parameters())


def test_trained_generators_are_stored_and_rebuild_the_same_triggers(make_config, tmp_path):
    from safetensors.torch import load_file

    from backdoorlab.purification_run import load_backdoored
    from backdoorlab.training_run import train_backdoor

    overrides = ["attack=input_aware", "attack.width=4", "attack.depth=2", "attack.mask_epochs=1"]
    train_backdoor(make_config("train", overrides), tmp_path / "trained")
    stored = load_file(str(tmp_path / "trained" / "trigger.safetensors"))
    assert any(k.startswith("networks.pattern.") for k in stored) and any(k.startswith("networks.mask.") for k in stored)
    _, data, _ = load_backdoored(make_config("purify", [f"checkpoint={tmp_path / 'trained'}"]))
    for name, value in data.attack.networks.state_dict().items():
        assert torch.equal(value, stored[f"networks.{name}"])


@pytest.mark.parametrize("bad", [{"poison_rate": 0.6, "cross_rate": 0.5}, {"mask_density": 0.0}, {"generator_milestones": [1.5]},
                                 {"width": 0}])
def test_bad_settings_are_refused_in_one_sentence(bad):
    with pytest.raises(ConfigError, match="attack\\."):
        InputAware(**bad)


def test_an_image_size_the_generators_cannot_halve_is_refused():
    with pytest.raises(ConfigError, match="divisible by 8"):
        InputAware(depth=3).build(3, 12, 10)
