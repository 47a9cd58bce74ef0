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
