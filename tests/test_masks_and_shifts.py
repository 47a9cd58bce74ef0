"""NFT's BatchNorm masks and Fast FIP's singular-value shifts: what they train, their objectives,
and that folding them back gives the plain network with the same outputs."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backdoorlab.curvature.fisher import fisher_trace_estimate, fisher_trace_exact, trainable_parameters
from backdoorlab.defenses.fast_fip import FastFIP
from backdoorlab.defenses.nft import NFT, mixup_cross_entropy
from backdoorlab.defenses.reparam import NORM_TYPES, forward_order, select_modules
from backdoorlab.errors import ConfigError
from backdoorlab.models.classifier import ImageClassifier
from backdoorlab.models.preact_resnet import preact_resnet18


def small_model(seed=0):
    torch.manual_seed(seed)
    model = ImageClassifier(preact_resnet18(num_classes=4, width=4), (0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    return model.eval()


class Pool(list):
    """A list of (image, label) pairs with the ``labels`` the real pool carries."""

    @property
    def labels(self):
        return torch.tensor([y for _, y in self])


def pool(n=16, classes=4):
    gen = torch.Generator().manual_seed(0)
    return Pool((torch.rand(3, 8, 8, generator=gen), i % classes) for i in range(n))


def batch(n=8):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.arange(n) % 4


def test_nft_trains_one_mask_per_batchnorm_channel_and_nothing_else():
    model, defense = small_model(), NFT()
    defense.wrap(model, pool())
    norms = [m for m in model.modules() if isinstance(m, NORM_TYPES)]
    assert len(defense.masks) == len(norms) == 16
    assert [m.numel() for m in defense.masks] == [n.num_features for n in norms]
    assert all(torch.equal(m, torch.ones_like(m)) for m in defense.masks)
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(m) for m in defense.masks}
    assert defense.per_class == 4.0  # 16 pool images over 4 classes


def test_nft_clips_the_masks_of_the_l_th_layer_in_forward_order_to_alpha_exp_minus_beta_l():
    model, defense = small_model(), NFT(clip_alpha=0.8, clip_beta=0.5)
    defense.wrap(model, pool())
    assert defense.lower[:3] == pytest.approx([0.8 * math.exp(-0.5 * k) for k in (1, 2, 3)])
    with torch.no_grad():
        for m in defense.masks:
            m.fill_(-1.0)
        defense.masks[0][0] = 2.0
    defense.after_step(model)
    assert defense.masks[0][0] == 1.0
    for mask, low in zip(defense.masks, defense.lower):
        assert torch.allclose(mask[1:].detach(), torch.full_like(mask[1:], low))


def test_forward_order_follows_calls_not_registration():
    class Swapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.late, self.early = nn.BatchNorm2d(3), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.late(self.early(x))

    model = Swapped()
    ordered = forward_order(model, select_modules(model, NORM_TYPES, ["*"], "layers"), torch.rand(2, 3, 4, 4))
    assert [name for name, _ in ordered] == ["early", "late"]


def test_a_layer_pattern_that_matches_nothing_stops_before_training():
    with pytest.raises(ConfigError, match="defense.layers pattern 'net.layer9.\\*' matches none"):
        NFT(layers=["net.layer9.*"]).wrap(small_model(), pool())
    with pytest.raises(ConfigError, match="defense.layers pattern 'nothing' matches none"):
        FastFIP(layers="nothing").wrap(small_model(), pool())


def test_nft_masks_only_the_chosen_layers():
    model, defense = small_model(), NFT(layers=["net.layer4.*"])
    defense.wrap(model, pool())
    assert len(defense.masks) == 4
    assert defense.lower[0] == pytest.approx(0.8 * math.exp(-0.5))  # depth counts the masked layers


def test_nft_loss_is_mixup_cross_entropy_plus_the_mask_regulariser_over_samples_per_class():
    model, defense = small_model(), NFT(mixup=False, mask_l1=0.01)
    defense.wrap(model, pool(n=8))  # 2 images per class
    with torch.no_grad():
        defense.masks[0].fill_(0.5)
    x, y = batch()
    loss, terms = defense.loss(model, x, y)
    distance = 0.5 * defense.masks[0].numel()
    assert terms["mask_l1"].item() == pytest.approx(distance)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)
    assert loss.item() == pytest.approx(terms["ce"].item() + 0.01 / 2 * distance, rel=1e-6)
    loss.backward()
    assert all(m.grad is not None for m in defense.masks)


def test_mixup_cross_entropy_mixes_inputs_and_labels_with_the_same_partner():
    model = small_model()
    x, y = batch()
    assert mixup_cross_entropy(model, x, y, 1.0).item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)
    torch.manual_seed(3)
    perm = torch.randperm(len(y))
    torch.manual_seed(3)
    mixed = mixup_cross_entropy(model, x, y, 0.3)
    logits = model(0.3 * x + 0.7 * x[perm])
    expected = 0.3 * F.cross_entropy(logits, y) + 0.7 * F.cross_entropy(logits, y[perm])
    assert mixed.item() == pytest.approx(expected.item(), rel=1e-6)


def test_folding_the_masks_gives_the_plain_network_with_the_masked_outputs():
    model, defense = small_model(), NFT()
    keys = set(model.state_dict())
    defense.wrap(model, pool())
    with torch.no_grad():
        for m in defense.masks:
            m.uniform_(0.0, 1.0)
    x, _ = batch()
    masked = model(x)
    plain = defense.finalize(model)
    assert set(plain.state_dict()) == keys
    assert torch.allclose(plain(x), masked, atol=1e-6)
    assert not torch.allclose(small_model()(x), masked, atol=1e-3)  # the masks did change the outputs


def test_fast_fip_trains_one_shift_per_singular_value_and_starts_at_the_original_network():
    model, defense = small_model(), FastFIP()
    x, _ = batch()
    original = model(x)
    defense.wrap(model, pool())
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(defense.shifts) == len(layers)
    assert [s.numel() for s in defense.shifts] == [min(m.weight.shape[0], m.weight[0].numel()) for m in layers]
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(s) for s in defense.shifts}
    assert torch.allclose(model(x), original, atol=1e-5)


def test_folding_the_shifts_gives_the_plain_network_with_the_shifted_outputs():
    model, defense = small_model(), FastFIP()
    keys = set(model.state_dict())
    defense.wrap(model, pool())
    with torch.no_grad():
        for s in defense.shifts:
            s.uniform_(-0.3, 0.3)
    x, _ = batch()
    shifted = model(x)
    plain = defense.finalize(model)
    assert set(plain.state_dict()) == keys
    assert torch.allclose(plain(x), shifted, atol=1e-5)


def test_fast_fip_takes_the_fisher_trace_over_the_shifts():
    model, defense = small_model(), FastFIP()
    defense.wrap(model, pool())
    names = list(trainable_parameters(model))
    assert names and all(n.endswith(".delta") for n in names)
    x, y = batch()
    exact = fisher_trace_exact(model, x, y)
    gen = torch.Generator().manual_seed(0)
    estimate = fisher_trace_estimate(model, x, y, probes=400, generator=gen)
    assert estimate.item() == pytest.approx(exact.item(), rel=0.1)


def test_fast_fip_objective_moves_only_the_shifts():
    model, defense = small_model(), FastFIP(eta_f=0.01, eta_r=1.0)
    defense.wrap(model, pool())
    defense.prepare(model, pool())
    model.train()
    x, y = batch()
    loss, terms = defense.loss(model, x, y)
    assert {"ce", "retainer", "fisher_trace"} <= terms.keys()
    loss.backward()
    assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in defense.shifts)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_trigger_scores_single_out_the_channel_the_trigger_moves():
    from backdoorlab.analysis.channels import channel_means, top_channels, trigger_scores

    class TwoChannels(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(2).eval()

        def forward(self, x):
            return self.norm(x)

    model = TwoChannels()
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(64, 2, 4, 4, generator=gen)
    triggered = clean.clone()
    triggered[:, 1, :2, :2] += 1.0  # the trigger adds 0.25 to channel 1's spatial mean
    scores = trigger_scores(channel_means(model, [model.norm], clean), channel_means(model, [model.norm], triggered))
    assert scores[0][0] == pytest.approx(0.0, abs=1e-5)
    std = clean[:, 1].mean((1, 2)).std()
    assert scores[0][1].item() == pytest.approx(0.25 / std.item(), rel=1e-4)
    assert top_channels(scores, 0.5)[0].tolist() == [False, True]
