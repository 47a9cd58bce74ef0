"""Adaptive attacks: backdoor training with (A)SAM and with FIP's suppressor, as config on any attack."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backdoorlab.adaptive.fip_suppressor import FIPSuppressorTraining
from backdoorlab.adaptive.sam import SAMTraining, sam_perturbation, sharpness_aware_loss
from backdoorlab.errors import ConfigError


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def batch(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(8, 3, 6, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)


def grads_of(loss, model):
    return [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]


@pytest.mark.parametrize("asam", [False, True])
def test_the_sam_step_is_the_gradient_at_the_weights_moved_by_rho_and_the_weights_come_back_exactly(asam):
    model, (x, y) = tiny_model(), batch()
    before = [p.detach().clone() for p in model.parameters()]
    stats = model[1].running_mean.clone()
    surrogate, loss, sharp = sharpness_aware_loss(model, lambda: F.cross_entropy(model(x), y), rho=0.5, asam=asam)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert not torch.equal(model[1].running_mean, stats)  # the first pass moves BatchNorm's statistics ...
    moved = model[1].running_mean.clone()

    # by hand: the ascent from the first pass's gradient, then the gradient at the moved weights
    reference = tiny_model()  # train-mode BatchNorm: the gradients depend on the batch's statistics only
    g = grads_of(F.cross_entropy(reference(x), y), reference)
    e = sam_perturbation([p.detach() for p in reference.parameters()], g, 0.5, asam)
    scale = [p.detach().abs() if asam else torch.ones_like(p) for p in reference.parameters()]
    assert torch.linalg.vector_norm(torch.cat([(a / s.clamp_min(1e-12)).flatten() for a, s in zip(e, scale)])) == pytest.approx(0.5, rel=1e-4)
    with torch.no_grad():
        for p, step in zip(reference.parameters(), e):
            p.add_(step)
    expected = grads_of(F.cross_entropy(reference(x), y), reference)
    got = grads_of(surrogate, model)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, expected))
    assert float(surrogate.detach()) == pytest.approx(float(sharp)) and float(sharp) > float(loss)
    assert torch.equal(model[1].running_mean, moved)  # ... the second pass does not (the authors' bypass_bn)


def test_sam_with_a_vanishing_radius_steps_on_the_plain_gradient():
    reference, (x, y) = tiny_model(), batch()
    plain = grads_of(F.cross_entropy(reference(x), y), reference)
    model = tiny_model()
    surrogate, _ = SAMTraining(rho=1e-7, asam=False).loss(model, x, y, lambda: F.cross_entropy(model(x), y), step=0)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads_of(surrogate, model), plain))


def test_the_fip_suppressor_joins_every_kth_step_with_weight_k_eta_and_the_others_are_plain():
    from backdoorlab.curvature.fisher import fisher_trace_sign_estimate

    model, (x, y) = tiny_model(), batch()
    adaptive = FIPSuppressorTraining(eta_f=0.01, every=3, probes=1, probe_space="samples", scale="absolute")
    objective = lambda: F.cross_entropy(model(x), y)  # noqa: E731
    torch.manual_seed(5)
    loss, terms = adaptive.loss(model, x, y, objective, step=6)
    torch.manual_seed(5)
    trace = fisher_trace_sign_estimate(model, x, y, probes=1)
    expected = [a + 3 * 0.01 * b for a, b in zip(grads_of(objective(), model), grads_of(trace, model))]
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads_of(loss, model), expected))
    assert float(terms["fisher_trace"]) == pytest.approx(float(trace.detach()), rel=1e-5)
    for step in (7, 8):  # steps 1 and 2 of every 3: the objective alone
        loss, terms = adaptive.loss(model, x, y, objective, step=step)
        assert terms == {} and float(loss.detach()) == pytest.approx(float(objective().detach()))


@pytest.mark.parametrize("make, match", [(lambda: SAMTraining(rho=0), "adaptive.rho"),
                                         (lambda: FIPSuppressorTraining(eta_f=0), "adaptive.eta_f"),
                                         (lambda: FIPSuppressorTraining(every=0), "adaptive.every"),
                                         (lambda: FIPSuppressorTraining(probe_space="pixels"), "adaptive.probe_space")])
def test_bad_settings_are_refused_in_this_group_s_names(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize("adaptive", ["sam", "fip_suppressor"])
def test_an_adaptive_attack_trains_end_to_end_is_part_of_the_model_s_identity_and_purify_reads_it_back(make_config, tmp_path, adaptive):
    import json

    from backdoorlab.purification_run import cached_model_dir, purify
    from backdoorlab.training_run import rebuild_config, train_backdoor

    plain = make_config("train", ["attack=badnets"])
    adapted = make_config("train", ["attack=badnets", f"adaptive={adaptive}", "adaptive.every=1" if adaptive == "fip_suppressor" else "adaptive.rho=1.5"])
    assert "adaptive" not in rebuild_config(plain)  # models trained without it keep their cache keys
    assert cached_model_dir(make_config("purify", ["attack=badnets"])) != cached_model_dir(
        make_config("purify", ["attack=badnets", f"adaptive={adaptive}"]))
    metrics = train_backdoor(adapted, tmp_path / "trained")
    assert 0 <= metrics["acc"] <= 100
    stored = json.loads((tmp_path / "trained" / "run.json").read_text())["config"]
    assert stored["adaptive"]["_target_"].endswith("SAMTraining" if adaptive == "sam" else "FIPSuppressorTraining")
    purified = purify(make_config("purify", [f"checkpoint={tmp_path / 'trained'}", "defense=none"]), tmp_path / "purified")
    assert purified["before"]["acc"] == pytest.approx(metrics["acc"], abs=1e-6)


def test_an_adaptive_attack_on_an_attack_that_trains_its_own_networks_is_refused_before_training(make_config, tmp_path):
    from backdoorlab.training_run import train_backdoor

    with pytest.raises(ConfigError, match="attack=input_aware trains its trigger networks"):
        train_backdoor(make_config("train", ["attack=input_aware", "adaptive=sam"]), tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_training_loss_that_is_not_finite_stops_training_in_one_sentence():
    from backdoorlab.attacks.base import Attack
    from backdoorlab.errors import DivergenceError
    from backdoorlab.lightning.training_module import BackdoorTrainingModule

    class Runaway(Attack):
        def build_trigger(self, channels, image_size):
            pass

        def training_loss(self, model, x, y, logits):
            return torch.tensor(float("nan"))

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3))
    module = BackdoorTrainingModule(model, lambda x: x, attack=Runaway().build(3, 6, 3))
    module.log = lambda *a, **k: None
    with pytest.raises(DivergenceError, match="training loss is not finite"):
        module.training_step(batch(), 0)
