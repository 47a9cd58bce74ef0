"""The baseline defenses' objectives on small models."""

import pytest
import torch
import torch.nn.functional as F

from backdoorlab.defenses.ft_sam import FTSAM
from backdoorlab.errors import ConfigError
from backdoorlab.models.classifier import ImageClassifier
from backdoorlab.models.preact_resnet import preact_resnet18


def small_model():
    torch.manual_seed(0)
    return ImageClassifier(preact_resnet18(num_classes=4, width=4), (0.5,) * 3, (0.5,) * 3).eval()


def batch(n=8):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.arange(n) % 4


@pytest.mark.parametrize("adaptive", [False, True])
def test_ft_sam_gradient_is_the_cross_entropy_gradient_at_the_perturbed_weights(adaptive):
    model, defense = small_model(), FTSAM(rho=0.05 if not adaptive else 0.5, adaptive=adaptive)
    x, y = batch()
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    loss, terms = defense.loss(model, x, y)
    loss.backward()
    assert all(torch.equal(p, s) for p, s in zip(params, start))  # the weights are restored

    reference = small_model()
    ref_params = list(reference.parameters())
    g = torch.autograd.grad(F.cross_entropy(reference(x), y), ref_params)
    scale = [p.abs() if adaptive else torch.ones_like(p) for p in ref_params]
    norm = torch.sqrt(sum(((s * gi) ** 2).sum() for s, gi in zip(scale, g)))
    with torch.no_grad():
        for p, s, gi in zip(ref_params, scale, g):
            p.add_(defense.rho * s * s * gi / norm)
    sharp = F.cross_entropy(reference(x), y)
    expected = torch.autograd.grad(sharp, ref_params)
    assert loss.item() == pytest.approx(sharp.item(), rel=1e-5) and terms["sharp_ce"] > terms["ce"]
    for p, e in zip(params, expected):
        assert torch.allclose(p.grad, e, atol=1e-6, rtol=1e-4)


def test_ft_sam_needs_a_positive_radius():
    with pytest.raises(ConfigError, match="defense.rho must be > 0"):
        FTSAM(rho=0)


def pool(n=16):
    gen = torch.Generator().manual_seed(0)
    return [(torch.rand(3, 8, 8, generator=gen), i % 4) for i in range(n)]


@pytest.mark.parametrize("project", [False, True])
def test_anp_perturbation_is_a_signed_ascent_step_from_a_random_start(project):
    from backdoorlab.defenses.anp import ANP

    model, defense = small_model(), ANP(eps=0.4, project=project)
    defense.wrap(model, pool())
    model.train()
    x, y = batch()
    torch.manual_seed(11)
    defense._perturb(model, x, y)
    moved = [s.perturbation.clone() for s in defense.scales]
    torch.manual_seed(11)  # the same random start, its gradient taken by hand
    noises = [s.perturbation for s in defense.scales]
    with torch.no_grad():
        for n in noises:
            n.uniform_(-0.4, 0.4)
    start = [n.clone().requires_grad_(True) for n in noises]
    for s, n in zip(defense.scales, start):
        s.perturbation = n
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), start)
    for m, n, g in zip(moved, start, grads):
        expected = n.detach() + 0.4 * g.sign()
        assert torch.allclose(m, expected.clamp(-0.4, 0.4) if project else expected, atol=1e-6)
    assert max(m.abs().max().item() for m in moved) > 0.4 + 1e-3 or project  # unprojected, as the authors' code


def test_anp_learns_masks_under_perturbations_and_prunes_at_or_below_the_threshold():
    from backdoorlab.defenses.anp import ANP

    model, defense = small_model(), ANP(eps=0.4, alpha=0.2, threshold=0.2)
    defense.wrap(model, pool())
    defense.prepare(model, pool())
    start_mean = model.net.layer2[0].bn1.running_mean.clone()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(defense.masks) == len(norms) and {id(p) for p in model.parameters() if p.requires_grad} == {id(m) for m in defense.masks}
    model.train()
    x, y = batch()
    loss, terms = defense.loss(model, x, y)
    assert all(s.perturbation.abs().max() <= 0.8 + 1e-7 and s.perturbation.abs().max() > 0 for s in defense.scales)
    assert terms["perturbed_ce"] > terms["ce"]  # the perturbation raised the loss
    assert loss.item() == pytest.approx(0.2 * terms["ce"].item() + 0.8 * terms["perturbed_ce"].item(), rel=1e-6)
    loss.backward()
    assert all(m.grad is not None for m in defense.masks)
    with torch.no_grad():
        for m in defense.masks:
            m.fill_(1.5)
        defense.masks[0][:3] = torch.tensor([0.1, -0.3, 0.2])
    defense.after_step(model)
    assert defense.masks[0][:4].tolist() == [pytest.approx(0.1), 0.0, pytest.approx(0.2), 1.0]
    model.eval()
    plain = defense.finalize(model)
    assert defense.summary()["pruned_channels"] == 3  # at or below the threshold, as the authors prune
    assert torch.equal(plain.net.layer2[0].bn1.running_mean, start_mean)  # the train-mode passes left no trace
    reference = small_model()
    gamma, ref_gamma = plain.net.layer1[0].bn1.weight, reference.net.layer1[0].bn1.weight
    assert torch.equal(gamma[:3], torch.zeros(3)) and torch.equal(gamma[3:], ref_gamma[3:])
    assert torch.equal(plain.net.layer1[0].bn1.bias, reference.net.layer1[0].bn1.bias)
    assert set(plain.state_dict()) == set(reference.state_dict())


def test_anp_max_pruned_fraction_prunes_only_the_lowest_masks_and_saves_every_mask_value():
    from backdoorlab.defenses.anp import ANP

    model, channels = small_model(), sum(m.num_features for m in small_model().modules() if isinstance(m, torch.nn.BatchNorm2d))
    defense = ANP(threshold=0.2, max_pruned_fraction=2.5 / channels)  # a cap of two channels
    defense.wrap(model, pool())
    with torch.no_grad():
        defense.masks[0][:3] = torch.tensor([0.1, 0.0, 0.2])
        defense.masks[2][1] = 0.05
    saved = {name: m.clone() for name, m in defense.saved_masks().items()}
    assert list(saved) == defense.norm_names and saved[defense.norm_names[0]][:3].tolist() == [pytest.approx(0.1), 0.0, pytest.approx(0.2)]
    plain = defense.finalize(model)
    assert defense.summary()["pruned_channels"] == 2 and defense.summary()["max_pruned_fraction"] == pytest.approx(2.5 / channels)
    first, third = plain.get_submodule(defense.norm_names[0]), plain.get_submodule(defense.norm_names[2])
    start = small_model()
    assert first.weight[1] == 0 and third.weight[1] == 0  # masks 0.0 and 0.05: the two lowest
    assert torch.equal(first.weight[[0, 2]], start.get_submodule(defense.norm_names[0]).weight[[0, 2]])  # 0.1 and 0.2 kept
    with pytest.raises(ConfigError, match="max_pruned_fraction"):
        ANP(max_pruned_fraction=-0.1)


def test_pruning_rule_takes_the_lowest_masks_at_or_below_the_threshold_ties_in_order():
    from backdoorlab.defenses.pruning import pruned_channels

    masks = torch.tensor([0.3, 0.1, 0.2, 0.1, 0.9, 0.0])
    assert pruned_channels(masks, 0.2).tolist() == [False, True, True, True, False, True]
    assert pruned_channels(masks, 0.2, 5 / 6).sum() == 4  # a cap above the candidates changes nothing
    assert pruned_channels(masks, 0.2, 3 / 6).tolist() == [False, True, False, True, False, True]
    assert pruned_channels(masks, 0.2, 2 / 6).tolist() == [False, True, False, False, False, True]  # 0.0, then the first 0.1
    assert not pruned_channels(masks, 0.2, 0.0).any() and not pruned_channels(masks, -0.1).any()


def test_fine_pruning_prunes_the_least_active_channels_while_the_pool_accuracy_holds():
    from backdoorlab.defenses.fp import FinePruning

    class Features(torch.nn.Module):  # the "feature map" is the input itself: 4 channels
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)
            with torch.no_grad():  # class 1 iff channel 1 exceeds 0.2; channel 0 (the least active) is unused
                self.linear.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0]]))
                self.linear.bias.copy_(torch.tensor([0.0, -2.0]))

        def forward(self, x):
            return self.linear(x)

    gen = torch.Generator().manual_seed(0)
    c1 = 0.2 + 0.1 * torch.randn(64, generator=gen)
    x = torch.stack([torch.full((64,), 0.1), c1, torch.full((64,), 5.0), torch.full((64,), 6.0)], 1)
    items = [(xi, int(xi[1] > 0.2)) for xi in x]
    strict = FinePruning(layer="linear", max_acc_drop=5.0, max_fraction=1.0)
    model = Features()
    strict.wrap(model, items)
    assert strict.pruned == 1 and model.linear.parametrizations.weight[0].keep.tolist() == [[0.0, 1.0, 1.0, 1.0]]
    capped = FinePruning(layer="linear", max_acc_drop=100.0, max_fraction=0.5)
    other = Features()
    capped.wrap(other, items)
    assert capped.pruned == 2 and capped.summary() == {"pruned_channels": 2}  # no accuracy limit: the cap decides
    plain = capped.finalize(other)
    assert torch.all(plain.linear.weight[:, :2] == 0) and set(plain.state_dict()) == {"linear.weight", "linear.bias"}


def test_fine_pruning_needs_a_linear_classifier_layer():
    from backdoorlab.defenses.fp import FinePruning

    with pytest.raises(ConfigError, match="defense.layer=net.conv1 must name the model's Linear classifier layer"):
        FinePruning(layer="net.conv1").wrap(small_model(), pool())


def test_nad_distils_the_attention_maps_of_a_teacher_fine_tuned_on_the_pool():
    from backdoorlab.defenses.nad import NAD, attention_map

    a = torch.randn(2, 3, 4, 4)
    expected = a.pow(2).mean(1).flatten(1)
    assert torch.allclose(attention_map(a, 2.0), expected / expected.norm(dim=1, keepdim=True))

    model, defense = small_model(), NAD(betas={"net.layer3": 10.0}, teacher_steps=3, batch_size=4, lr=0.1)
    defense.prepare(model, pool())
    start = small_model()
    assert not torch.equal(defense.teacher.net.conv1.weight, start.net.conv1.weight)  # the teacher was fine-tuned
    assert torch.equal(model.net.conv1.weight, start.net.conv1.weight)  # the student was not
    x, y = batch()
    loss, terms = defense.loss(model, x, y)
    with torch.no_grad():
        s = attention_map(model.net.layer3(model.net.layer2(model.net.layer1(model.net.conv1((x - model.mean) / model.std)))), 2.0)
        t = attention_map(defense.teacher.net.layer3(defense.teacher.net.layer2(defense.teacher.net.layer1(
            defense.teacher.net.conv1((x - model.mean) / model.std)))), 2.0)
    assert terms["at_net.layer3"].item() == pytest.approx((s - t).pow(2).mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx(terms["ce"].item() + 10.0 * terms["at_net.layer3"].item(), rel=1e-5)
    defense.finalize(model)
    assert not model.net.layer3._forward_hooks


def test_nads_teacher_trains_as_long_as_the_student_when_its_steps_are_not_set(monkeypatch):
    from backdoorlab.defenses.nad import NAD

    drawn = []
    defense = NAD(betas={"net.layer3": 1.0}, epochs=3, batch_size=4, lr=0.01)
    defense.fit_to_pool(len(pool()))
    monkeypatch.setattr(NAD, "pool_batches", lambda self, items, steps, device: drawn.append(steps) or iter(()))
    defense.prepare(small_model(), pool())
    assert drawn == [defense.steps] and defense.steps == 3 * -(-len(pool()) // 4)  # epochs (under budget=authors), not steps


def test_nad_names_a_layer_the_model_lacks():
    from backdoorlab.defenses.nad import NAD

    with pytest.raises(ConfigError, match="defense.betas names 'net.layer9'"):
        NAD(betas={"net.layer9": 1.0}, teacher_steps=0).prepare(small_model(), pool())


def test_rnp_unlearns_a_copy_recovers_its_gamma_masks_with_the_authors_weight_and_prunes_only_the_original_gamma():
    from backdoorlab.defenses.rnp import RNP

    model, defense = small_model(), RNP(unlearn_lr=0.5, unlearn_acc=100.0, unlearn_max_epochs=3, batch_size=4, threshold=0.2)
    items = pool()
    defense.wrap(model, items)
    assert all(not p.requires_grad for p in model.parameters())  # the original model is not trained
    assert {id(p) for p in defense.unlearned.parameters() if p.requires_grad} == {id(m) for m in defense.masks}
    defense.prepare(model, items)
    assert defense.unlearn_steps == 4  # stopped after its first pass (16 images / 4): accuracy below 100 %
    start = small_model()
    assert not torch.equal(defense.unlearned.net.conv1.weight, start.net.conv1.weight)  # the copy was unlearned
    assert torch.equal(model.net.conv1.weight, start.net.conv1.weight)
    x, y = batch()
    loss, terms = defense.loss(model, x, y)
    assert loss.item() == pytest.approx(0.2 * terms["ce"].item(), rel=1e-6)  # the authors' alpha x CE
    loss.backward()
    assert all(m.grad is not None for m in defense.masks)
    bn = defense.unlearned.net.layer1[0].bn1
    with torch.no_grad():
        bias = bn.bias.clone()
        defense.masks[0].fill_(0.5)
        assert torch.allclose(bn.weight, 0.5 * bn.parametrizations.weight.original)
        assert torch.equal(bn.bias, bias)  # beta is not masked (the authors' coeff_bias = 1)
        defense.masks[0][:4] = torch.tensor([0.1, -1.0, 0.2, 0.3])
    defense.after_step(model)
    plain = defense.finalize(model)
    assert defense.summary()["pruned_channels"] == 3  # at or below the threshold
    assert torch.equal(plain.net.layer1[0].bn1.weight[:3], torch.zeros(3))
    assert torch.equal(plain.net.layer1[0].bn1.weight[3:], start.net.layer1[0].bn1.weight[3:])
    assert torch.equal(plain.net.layer1[0].bn1.bias, start.net.layer1[0].bn1.bias)


def test_rnp_max_pruned_fraction_prunes_only_the_lowest_masks_below_the_threshold():
    from backdoorlab.defenses.rnp import RNP

    model, items = small_model(), pool()
    probe = RNP(threshold=0.2)
    probe.wrap(small_model(), items)
    channels = sum(m.numel() for m in probe.masks)
    defense = RNP(threshold=0.2, max_pruned_fraction=2.5 / channels)  # a cap of two channels
    defense.wrap(model, items)
    start = small_model()
    with torch.no_grad():
        defense.masks[0][:4] = torch.tensor([0.1, 0.0, 0.2, 0.3])
        defense.masks[1][0] = 0.05
    plain = defense.finalize(model)
    assert defense.summary()["pruned_channels"] == 2
    pruned = torch.cat([plain.get_submodule(n).weight == 0 for n in defense.norm_names])
    assert pruned.sum() == 2
    first, second = plain.get_submodule(defense.norm_names[0]), plain.get_submodule(defense.norm_names[1])
    assert first.weight[1] == 0 and second.weight[0] == 0  # masks 0.0 and 0.05: the two lowest
    assert defense.summary()["pruned_by_layer"] == {defense.norm_names[0]: 1, defense.norm_names[1]: 1}
    assert torch.equal(first.weight[[0, 2, 3]], start.get_submodule(defense.norm_names[0]).weight[[0, 2, 3]])
    with pytest.raises(ConfigError, match="max_pruned_fraction"):
        RNP(max_pruned_fraction=1.5)


def test_i_bau_step_follows_the_implicit_hypergradient_of_the_minimax_problem():
    from torch.autograd.functional import jacobian

    from backdoorlab.defenses.i_bau import IBAU

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    defense = IBAU(portion=1.0, inner_lr=0.1, fixed_point_steps=3, perturbation_l2=0.01)
    defense.prepare(model, [(xi, int(yi)) for xi, yi in zip(x, y)])
    defense.round_steps, defense.calls = 10**9, 1  # no perturbation search: use this delta
    defense.delta = 0.3 * torch.randn(1, 3, 2, 2)
    loss, _ = defense.loss(model, x, y)
    loss.backward()

    theta0 = torch.cat([model[1].weight.detach().flatten(), model[1].bias.detach()])  # loss() left the weights as they were
    d0 = defense.delta.flatten()

    def logits(d, theta):
        return F.linear((x + d.view(1, 3, 2, 2)).flatten(1), theta[:36].view(3, 12), theta[36:])

    def outer(d, theta):
        return F.cross_entropy(logits(d, theta), y)

    def phi(d, theta):
        inner = lambda dd: -F.cross_entropy(logits(dd, theta), y) + 0.01 * dd.pow(2).sum()  # noqa: E731
        return d - 0.1 * torch.autograd.grad(inner(d), d, create_graph=True)[0]

    g_d, g_theta = jacobian(outer, (d0, theta0))
    a, b = jacobian(phi, (d0, theta0), create_graph=True)  # dPhi/d delta and dPhi/d theta
    v = torch.zeros_like(d0)
    for _ in range(3):
        v = a.T @ v + g_d
    expected = g_theta + b.T @ v
    got = torch.cat([model[1].weight.grad.flatten(), model[1].bias.grad])
    assert torch.allclose(got, expected.detach(), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, g_theta, atol=1e-4)  # the implicit term matters here


def test_an_unknown_optimizer_stops_before_training():
    from backdoorlab.defenses.ft import FineTuning

    with pytest.raises(ConfigError, match="defense.optimizer must be one of sgd, adam"):
        FineTuning(optimizer="rmsprop")


def test_awm_masks_every_convolution_weight_and_trains_against_a_bounded_universal_perturbation():
    from backdoorlab.defenses.awm import AWM

    model, defense = small_model(), AWM(trigger_norm=2.0, gamma=0.01, alpha=0.7, passes=1, batch_size=4)
    items = pool()
    defense.wrap(model, items)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.shape for m in defense.masks] == [c.parametrizations.weight.original.shape for c in convs]
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(m) for m in defense.masks}
    defense.prepare(model, items)
    assert defense.round_steps == 4
    x, y = batch()
    loss, terms = defense.loss(model, x, y)
    assert defense.delta.shape == (1, 3, 8, 8) and defense.delta.abs().sum() <= 2.0 + 1e-5
    l1 = sum(m.numel() for m in defense.masks)  # masks at 1
    assert terms["mask_l1"].item() == pytest.approx(l1)
    assert loss.item() == pytest.approx(0.7 * terms["ce"].item() + 0.3 * terms["perturbed_ce"].item() + 0.01 * l1, rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    with torch.no_grad():
        for m in defense.masks:
            m.uniform_(-0.5, 1.5)
    defense.after_step(model)
    assert all(m.min() >= 0 and m.max() <= 1 for m in defense.masks)
    masked = model(x)
    plain = defense.finalize(model)
    assert torch.allclose(plain(x), masked, atol=1e-6) and set(plain.state_dict()) == set(small_model().state_dict())


def test_epochs_turn_into_steps_over_the_pool():
    from backdoorlab.defenses.ft import FineTuning

    defense = FineTuning(steps=600, batch_size=64, epochs=20)
    defense.fit_to_pool(143)  # 3 batches a pass
    assert defense.steps == 60
    plain = FineTuning(steps=600, batch_size=64)
    plain.fit_to_pool(143)
    assert plain.steps == 600
    with pytest.raises(ConfigError, match="defense.epochs must be >= 0 or null"):
        FineTuning(epochs=-1)
