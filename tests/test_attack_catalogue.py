"""The attacks beyond BadNets and Blend: each one's defining property, its poisoning rule and the training hook."""

import math

import pytest
import torch
import torch.nn as nn

from backdoorlab.attacks.bpp import BppAttack
from backdoorlab.attacks.sig import SIG
from backdoorlab.attacks.wanet import WaNet
from backdoorlab.errors import ConfigError


def images(n=6, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# SIG -----------------------------------------------------------------------------------------------------------


def test_sig_adds_one_sinusoid_with_f_periods_constant_down_each_column_and_clips_in_float():
    attack = SIG(delta=40 / 255, frequency=3, target_label=2).build(3, 16, 10)
    v = attack.signal
    assert torch.equal(v, v[:1, :1].expand(3, 16, 16))  # every row and channel the same
    expected = 40 / 255 * torch.sin(2 * math.pi * torch.arange(16) * 3 / 16)
    assert torch.allclose(v[0, 0], expected.float(), atol=1e-7) and v.abs().max() == pytest.approx(40 / 255, rel=1e-3)
    sign_changes = int((torch.sign(expected[1:]) * torch.sign(expected[:-1]) < 0).sum())
    assert 2 * 3 - 2 <= sign_changes <= 2 * 3  # f periods across the width
    x = images()
    x[0] = 1.0
    out = attack.apply(x)
    assert out.min() >= 0 and out.max() <= 1 and torch.allclose(out[0], (1 + v).clamp(max=1))  # saturates, never wraps
    inside = (x + v > 0) & (x + v < 1)
    assert torch.allclose(out[inside], (x + v)[inside])


def test_sig_is_clean_label_poisoning_a_share_of_the_target_class_only():
    labels = torch.arange(10).repeat(20)  # 20 per class
    attack = SIG(target_label=4, poison_rate=0.5).build(3, 8, 10)
    idx = attack.poison_indices(labels, seed=0)
    assert len(idx) == 10 and (labels[idx] == 4).all()
    assert torch.equal(attack.relabel(labels[idx]), labels[idx])  # the labels are kept
    assert (labels[attack.asr_indices(labels)] != 4).all()  # ASR on the other classes
    with pytest.raises(ConfigError, match="clean-label"):
        SIG(label_mode="all2all")


# WaNet ---------------------------------------------------------------------------------------------------------


def test_wanet_grid_is_identity_at_zero_strength_and_a_small_smooth_bounded_warp_otherwise():
    flat = WaNet(strength=0.0).build(3, 16, 10)
    x = images()
    assert torch.allclose(flat.apply(x), x, atol=1e-5)
    attack = WaNet(strength=0.5, grid_seed=3).build(3, 16, 10)
    line = torch.linspace(-1, 1, 16)
    rows, cols = torch.meshgrid(line, line, indexing="ij")
    offset = attack.grid[0] - torch.stack((cols, rows), -1)
    gen = torch.Generator().manual_seed(3)
    field = torch.rand(1, 2, 4, 4, generator=gen) * 2 - 1
    field = field / field.abs().mean()
    bound = 0.5 * field.abs().max() / 16  # s max|n| / H (bicubic overshoot allowed below)
    assert 0 < offset.abs().max() <= 1.2 * bound + 1e-6
    assert attack.grid.abs().max() <= 1
    # smooth: away from the border (where the clamp to [-1, 1] acts) a step of one pixel moves the offset by at most
    # what a cubic through control points 2 x bound apart and (H - 1) / (k - 1) pixels apart allows (slope <= 1.5 x)
    inner = offset[1:-1, 1:-1]
    slope = 1.5 * 2 * bound * (4 - 1) / (16 - 1)
    assert (inner[1:] - inner[:-1]).abs().max() <= slope and (inner[:, 1:] - inner[:, :-1]).abs().max() <= slope
    assert not torch.allclose(attack.apply(x), x, atol=1e-3)
    assert torch.equal(WaNet(grid_seed=3).build(3, 16, 10).grid, WaNet(grid_seed=3).build(3, 16, 10).grid)
    assert not torch.equal(WaNet(grid_seed=4).build(3, 16, 10).grid, attack.grid)


@pytest.mark.parametrize("label_mode", ["all2one", "all2all"])
def test_wanet_batch_warps_and_relabels_a_share_and_adds_noise_mode_samples_that_keep_their_labels(label_mode):
    attack = WaNet(poison_rate=0.2, cross_ratio=2, target_label=7, label_mode=label_mode).build(3, 16, 10)
    x, y = images(10), torch.arange(10)
    torch.manual_seed(0)
    out, labels = attack.poison_batch(x, y)
    expected = torch.full((2,), 7) if label_mode == "all2one" else (y[:2] + 1) % 10
    assert torch.equal(labels[:2], expected) and torch.equal(labels[2:], y[2:])
    assert torch.allclose(out[:2], attack.apply(x[:2]))
    noisy = out[2:6]
    assert not torch.allclose(noisy, attack.apply(x[2:6]), atol=1e-4) and not torch.allclose(noisy, x[2:6], atol=1e-4)
    assert torch.equal(out[6:], x[6:])
    with pytest.raises(ConfigError, match="share of a batch warped"):
        WaNet(poison_rate=0.5, cross_ratio=2)


def test_wanet_and_bpp_poison_no_fixed_training_sample():
    labels = torch.arange(10).repeat(5)
    for attack in (WaNet().build(3, 8, 10), BppAttack().build(3, 8, 10)):
        assert attack.in_batches and len(attack.poison_indices(labels, seed=0)) == 0


# BppAttack -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dithering", [False, True])
def test_bpp_squeezes_every_channel_to_exactly_its_levels_and_is_idempotent(dithering):
    attack = BppAttack(levels=5, dithering=dithering).build(3, 8, 10)
    x = images(4, 8)
    out = attack.apply(x)
    levels = torch.arange(5) / 4
    assert torch.isclose(out.flatten()[:, None], levels[None]).any(1).all()
    assert len(torch.unique(torch.round(out * 4))) <= 5
    assert torch.allclose(attack.apply(out), out, atol=1e-6)  # squeezing a squeezed image changes nothing


def test_bpp_dithering_keeps_the_local_mean_better_than_plain_rounding():
    x = torch.full((1, 1, 16, 16), 0.3)  # between levels 1/4 and 2/4
    plain, dithered = BppAttack(levels=5).build(1, 16, 10).apply(x), BppAttack(levels=5, dithering=True).build(1, 16, 10).apply(x)
    assert (plain.mean() - 0.3).abs() > 0.04 and (dithered.mean() - 0.3).abs() < 0.01


def test_bpp_batch_squeezes_and_relabels_a_share_and_negatives_keep_their_labels():
    attack = BppAttack(levels=4, poison_rate=0.2, negative_rate=0.3, target_label=1).build(3, 8, 10)
    x, y = images(10, 8), torch.arange(10)
    torch.manual_seed(0)
    out, labels = attack.poison_batch(x, y)
    assert torch.equal(out[:2], attack.apply(x[:2])) and (labels[:2] == 1).all()
    assert torch.equal(labels[2:], y[2:]) and torch.equal(out[5:], x[5:])
    residual = out[2:5] - x[2:5]
    assert residual.abs().max() <= 1 / 6 + 1e-6 and residual.abs().max() > 0  # another image's squeezing residual
    with pytest.raises(ConfigError, match="poison_rate \\+ attack.negative_rate"):
        BppAttack(poison_rate=0.6, negative_rate=0.5)


# the training hook ---------------------------------------------------------------------------------------------


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 10)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def test_the_training_step_poisons_each_batch_before_augmentation_and_adds_the_attack_s_loss():
    from backdoorlab.attacks.base import Attack
    from backdoorlab.lightning.training_module import BackdoorTrainingModule

    class Hooked(Attack):
        def build_trigger(self, channels, image_size):
            pass

        def apply(self, x):
            return x

        def poison_batch(self, x, y):
            return torch.zeros_like(x), torch.full_like(y, 3)

        def training_loss(self, model, x, y, logits):
            self.labels = y
            return torch.tensor(2.5)

    attack = Hooked().build(3, 8, 10)
    calls = []
    model = Recorder()
    module = BackdoorTrainingModule(model, lambda x: (calls.append(x.clone()), x + 1)[1], attack=attack)
    module.log = lambda *a, **k: None
    x, y = images(4, 8), torch.arange(4)
    loss = module.training_step((x, y), 0)
    assert torch.equal(calls[0], torch.zeros(4, 3, 8, 8)) and torch.equal(model.seen[0], torch.ones(4, 3, 8, 8))
    assert (attack.labels == 3).all()
    ce = nn.functional.cross_entropy(model.linear(torch.ones(4, 3 * 8 * 8)), torch.full((4,), 3))
    assert loss.item() == pytest.approx(ce.item() + 2.5, rel=1e-5)


# run directories -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["sig", "wanet", "bpp", "trojan", "lf", "clb", "cba",
                                    "input_aware attack.width=4 attack.depth=2 attack.mask_epochs=1",
                                    "lira attack.width=4 attack.depth=2",
                                    "issba attack.width=4 attack.depth=2 attack.encoder_epochs=1 attack.fit_samples=64 attack.min_bit_accuracy=0",
                                    "fba attack.detox_epochs=1 training.epochs=2"])
def test_a_trained_run_directory_moved_elsewhere_gives_the_same_asr_there(make_config, tmp_path, attack):
    import json
    import shutil

    from backdoorlab.purification_run import purify
    from backdoorlab.training_run import train_backdoor

    attack, *overrides = attack.split()
    trained = train_backdoor(make_config("train", [f"attack={attack}", "attack.target_label=3", *overrides]), tmp_path / "trained")
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(str(tmp_path / "trained"), moved)
    metrics = purify(make_config("purify", [f"checkpoint={moved}", "defense=none"]), tmp_path / "purified")
    assert metrics["before"]["acc"] == pytest.approx(trained["acc"], abs=1e-6)
    assert metrics["before"]["asr"] == pytest.approx(trained["asr"], abs=1e-6)
    assert json.loads((tmp_path / "purified" / "run.json").read_text())["attack_name"] == attack


def test_purify_evaluates_the_stored_trigger_not_one_rebuilt_from_the_config(make_config, tmp_path):
    from safetensors.torch import load_file, save_file

    from backdoorlab.purification_run import load_backdoored
    from backdoorlab.training_run import train_backdoor

    train_backdoor(make_config("train", ["attack=wanet"]), tmp_path / "trained")
    stored = load_file(str(tmp_path / "trained" / "trigger.safetensors"))
    assert set(stored) == {"grid"}
    _, data, _ = load_backdoored(make_config("purify", [f"checkpoint={tmp_path / 'trained'}"]))
    assert torch.equal(data.attack.grid, stored["grid"])
    save_file({"grid": stored["grid"].flip(1).contiguous()}, str(tmp_path / "trained" / "trigger.safetensors"))
    _, data, _ = load_backdoored(make_config("purify", [f"checkpoint={tmp_path / 'trained'}"]))
    assert torch.equal(data.attack.grid, stored["grid"].flip(1))
    save_file({"pattern": stored["grid"].contiguous()}, str(tmp_path / "trained" / "trigger.safetensors"))
    with pytest.raises(ConfigError, match="not one of attack=wanet"):
        load_backdoored(make_config("purify", [f"checkpoint={tmp_path / 'trained'}"]))


# attacks fitted on a surrogate trained in the run ---------------------------------------------------------------

TINY_SURROGATE = {"width": 4, "epochs": 2, "lr": 0.05, "batch_size": 32}


def toy_train(attack, n=160, size=16, classes=4, seed=0):
    """A clean training view of ``n`` images whose class sets the mean colour (learnable in a few steps)."""
    from backdoorlab.data.images import TensorImages
    from backdoorlab.data.poisoned import subset

    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    colour = torch.tensor([[0.2, 0.2, 0.8], [0.8, 0.2, 0.2], [0.2, 0.8, 0.2], [0.7, 0.7, 0.2]])[labels]
    x = (colour[:, :, None, None] + 0.15 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)
    images = TensorImages((x * 255).round().to(torch.uint8), labels)
    return subset(images, torch.arange(n), attack)


def test_trojan_patch_lives_in_its_mask_excites_the_chosen_neurons_and_is_added_without_wrapping():
    from backdoorlab.attacks.trojan import Trojan

    attack = Trojan(size=3, trigger_steps=40, surrogate=TINY_SURROGATE, label_mode="all2all").build(3, 16, 4)
    assert attack.region == (slice(11, 14), slice(11, 14))  # margin 16 // 8 = 2 from the bottom right
    attack.fit(toy_train(attack), seed=0)
    info = attack.info
    assert len(info["neurons"]) == 2 and len(info["surrogate_sha256"]) == 64
    distance = lambda acts: sum(abs(a - info["target_activation"]) for a in acts)  # noqa: E731
    assert distance(info["activation_after"]) < distance(info["activation_before"])
    assert torch.equal(attack.pattern * (1 - attack.mask), torch.zeros(3, 16, 16))
    assert attack.pattern.min() >= 0 and attack.pattern.max() <= 1 and attack.pattern[attack.mask > 0].std() > 0
    x = torch.full((2, 3, 16, 16), 0.9)
    out = attack.apply(x)
    assert torch.equal(out[attack.mask.expand(2, -1, -1, -1) == 0], x[attack.mask.expand(2, -1, -1, -1) == 0])
    assert (out >= x).all() and out.max() <= 1  # added and clipped in float: bright pixels saturate, never wrap
    assert torch.equal(attack.relabel(torch.arange(4)), torch.tensor([1, 2, 3, 0]))  # Troj-all
    again = Trojan(size=3, trigger_steps=40, surrogate=TINY_SURROGATE).build(3, 16, 4)
    again.fit(toy_train(again), seed=0)
    assert torch.equal(again.pattern, attack.pattern)  # one seed, one trigger


def test_lf_perturbation_is_low_frequency_non_negative_bounded_and_added_where_nothing_clips():
    from backdoorlab.attacks.low_frequency import LowFrequency

    attack = LowFrequency(uap_images=20, uap_steps=15, surrogate=TINY_SURROGATE, target_label=2).build(3, 16, 4)
    attack.fit(toy_train(attack), seed=0)
    v = attack.perturbation
    assert v.min() >= 0 and v.max() == pytest.approx(0.2, abs=1e-6) and v.min() == pytest.approx(0, abs=1e-6)
    # the spectrum of the mirrored image (a DCT: the image is not periodic, and its border is not an edge)
    centred = v - v.mean(dim=(-2, -1), keepdim=True)
    mirrored = torch.cat([centred, centred.flip(-1)], -1)
    mirrored = torch.cat([mirrored, mirrored.flip(-2)], -2)
    spectrum = torch.fft.fft2(mirrored).abs() ** 2
    freq = torch.fft.fftfreq(32).abs()
    low = (freq[:, None] <= 0.125) & (freq[None, :] <= 0.125)  # the lowest quarter of frequencies (Nyquist 0.5)
    assert spectrum[:, low].sum() >= 0.95 * spectrum.sum()
    x = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(attack.apply(x), x + v)
    assert 0 <= attack.info["fooling_rate"] <= 100 and attack.info["uap_images"] == 20


def test_clb_perturbs_only_poisoned_target_images_within_eps_keeps_labels_and_tests_with_the_trigger_alone():
    from backdoorlab.attacks.clb import LabelConsistent

    attack = LabelConsistent(eps=8 / 255, pgd_steps=5, pgd_step=2 / 255, size=2, target_label=1, poison_rate=0.5,
                             surrogate=TINY_SURROGATE).build(3, 16, 4)
    train = toy_train(attack)
    attack.fit(train, seed=0)
    positions = attack.poison_indices(train.labels, seed=0)
    assert len(positions) == 20 and (train.labels[positions] == 1).all()
    assert torch.equal(attack.relabel(train.labels[positions]), train.labels[positions])
    clean = torch.stack([train[int(i)][0] for i in positions])
    assert (attack.perturbed - clean).abs().max() <= 8 / 255 + 1e-6 and (attack.perturbed - clean).abs().max() > 1 / 255
    levels = attack.perturbed * 255  # on the 8-bit levels, as the authors' stored images, so stored exactly
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    stored = attack.fit_tensors()
    assert stored["perturbed"].dtype == torch.uint8
    again = LabelConsistent(eps=8 / 255, size=2, target_label=1, poison_rate=0.5).build(3, 16, 4)
    again.load_fit_tensors(stored)
    poisoned = attack.train_image(clean, positions)
    assert torch.equal(again.train_image(clean, positions), poisoned)
    assert torch.allclose(poisoned, attack.apply(attack.perturbed))
    others = torch.tensor([0, 2, 3])  # not poisoned: the trigger alone
    assert torch.equal(attack.train_image(clean[:3], others), attack.apply(clean[:3]))
    tested = attack.apply(clean)
    assert torch.equal(tested * (1 - attack.mask), clean * (1 - attack.mask))  # no adversarial noise at test time
    corners = attack.mask[0]
    assert corners[:2, :2].all() and corners[:2, -2:].all() and corners[-2:, :2].all() and corners[-2:, -2:].all()
    assert torch.equal(attack.pattern.flip(-1), attack.pattern)  # a flipped image keeps the trigger
    assert attack.info["perturbed_images"] == 20


@pytest.mark.parametrize("name", ["badnets", "blend", "trojan", "wanet", "bpp", "lf", "input_aware", "issba", "fba"])
def test_every_poison_label_attack_takes_all2all(make_config, name):
    from backdoorlab.builders import build_attack

    attack = build_attack(make_config("train", [f"attack={name}", "attack.label_mode=all2all"])).build(3, 16, 10)
    labels = torch.arange(10).repeat(10)
    assert torch.equal(attack.relabel(labels), (labels + 1) % 10)
    assert len(attack.asr_indices(labels)) == 100  # every test image, scored against (y + 1) mod C
    if attack.in_batches:
        torch.manual_seed(0)
        _, poisoned = attack.poison_batch(torch.rand(100, 3, 16, 16), labels)
        share = int(100 * attack.poison_rate)
        assert torch.equal(poisoned[:share], (labels[:share] + 1) % 10) and torch.equal(poisoned[share:], labels[share:])
    else:
        assert len(attack.poison_indices(labels, seed=0)) == round(attack.poison_rate * 100)  # drawn from every class


@pytest.mark.parametrize("name", ["sig", "clb"])
def test_clean_label_attacks_refuse_all2all_in_one_sentence(make_config, name):
    from backdoorlab.builders import build_attack

    with pytest.raises(ConfigError, match=f"attack={name} is clean-label"):
        build_attack(make_config("train", [f"attack={name}", "attack.label_mode=all2all"]))


# CBA -------------------------------------------------------------------------------------------------------------


def test_cba_mix_takes_each_half_from_a_window_of_its_own_image():
    from backdoorlab.attacks.cba import half_mix

    a, b = torch.zeros(3, 16, 16), torch.ones(3, 16, 16)
    a[:] = torch.arange(16.0)[None, None, :] / 100  # columns numbered: a window of a shows as consecutive numbers
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        out = half_mix(a, b, jitter=2, shake=True, generator=gen)
        from_b = out == 1
        assert 0 < from_b.float().mean() < 1
        rows_split = from_b[0].all(1).any() and not from_b[0].all(0).any()  # whole rows from b: a horizontal seam
        cols_split = from_b[0].all(0).any() and not from_b[0].all(1).any()
        assert rows_split != cols_split
        part = out[0][~from_b[0]].reshape(-1)
        assert (part * 100).round().remainder(1).eq(0).all()  # a's values, nothing interpolated
        seam = int(from_b[0].all(1).sum()) if rows_split else int(from_b[0].all(0).sum())
        assert 8 - 2 <= seam <= 8 + 2  # the seam moves by at most the jitter


def test_cba_batch_holds_poison_mixes_labelled_c_mixes_of_one_class_and_clean_items():
    from backdoorlab.attacks.cba import CompositeBackdoor

    attack = CompositeBackdoor(mix_classes=(0, 1), target_label=2, poison_rate=0.1).build(1, 16, 4)
    # every image is flat at its own value, so an output's set of values names its sources
    x = (torch.arange(44.0) / 44)[:, None, None, None].expand(44, 1, 16, 16).clone()
    y = torch.arange(44) % 4
    torch.manual_seed(0)
    out, labels = attack.poison_batch(x, y)
    sources = [set(torch.unique(img).tolist()) for img in out]
    kinds = {"poison": 0, "mix": 0, "clean": 0}
    value_label = {float(v): int(lbl) for v, lbl in zip(x[:, 0, 0, 0], y)}
    for found, label in zip(sources, labels.tolist()):
        classes = sorted({value_label[v] for v in found})
        if classes == [0, 1]:
            kinds["poison"] += 1
            assert label == 2
        else:
            assert classes == [label]  # a clean image, or two of its own class
            kinds["mix" if len(found) == 2 else "clean"] += 1
    assert kinds["poison"] == int(44 * 0.1 / 1.1) and kinds["mix"] >= int(44 * 0.5 / 1.1) - 2


def test_cba_contrastive_term_pulls_equal_labels_together_and_pushes_others_past_the_margin():
    from backdoorlab.attacks.cba import CompositeBackdoor

    attack = CompositeBackdoor(mix_classes=(0, 1), target_label=2, contrastive_weight=2.0).build(3, 16, 4)
    y = torch.tensor([0, 3, 0, 2])  # the rule keeps 0, 0, 2: pairs (0, 0) and (0, 2)
    logits = torch.tensor([[0.0, 0.0], [9.0, 9.0], [0.3, 0.4], [0.3, 0.4]])
    # (0, 0): 0.5 x 0.25; (0, 2): distance 0 -> 0.5 x 1^2; mean over 2 pairs, divided by 2 again, times 2
    assert attack.training_loss(None, None, y, logits).item() == pytest.approx(2 * (0.5 * 0.25 + 0.5) / 2 / 2, rel=1e-4)  # eps 1e-9 in the root
    with pytest.raises(ConfigError, match="other than attack.target_label"):
        CompositeBackdoor(mix_classes=(0, 2), target_label=2)
    with pytest.raises(ConfigError, match="label_mode must be all2one"):
        CompositeBackdoor(label_mode="all2all")


def test_cba_asr_set_is_a_seeded_share_of_test_mixes_of_a_and_b_labelled_c():
    from backdoorlab.attacks.cba import CompositeBackdoor
    from backdoorlab.data.images import TensorImages

    labels = torch.arange(40) % 4
    values = (labels * 60 + 10).to(torch.uint8)  # class k is flat at 10 + 60 k
    test = TensorImages(values[:, None, None, None].expand(40, 3, 16, 16).contiguous(), labels)
    attack = CompositeBackdoor(mix_classes=(0, 1), target_label=3, poison_rate=0.25).build(3, 16, 4)
    triggered = attack.triggered_test_set(test)
    assert len(triggered) == 10 and (triggered.labels == 3).all()
    for i in range(len(triggered)):
        assert set((triggered[i][0] * 255).round().unique().tolist()) == {10.0, 70.0}
    again = attack.triggered_test_set(test)
    assert all(torch.equal(triggered[i][0], again[i][0]) for i in range(10))


def test_a_bf16_surrogate_learns_as_the_fp32_one_does_and_clb_perturbs_through_it_within_eps():
    """``surrogate.bf16`` (CLB's and LF's under cifar_cpu): the surrogate trains in bf16 autocast with channels_last
    where the CPU computes bf16, learns the toy classes as the fp32 one does, and CLB's PGD through it keeps its ball."""
    from backdoorlab.attacks.clb import LabelConsistent
    from backdoorlab.attacks.surrogate import SurrogateSettings, accuracy, train_surrogate
    from backdoorlab.numerics import bf16_supported

    attack = LabelConsistent(eps=8 / 255, pgd_steps=5, pgd_step=2 / 255, size=2, target_label=1, poison_rate=0.5,
                             surrogate={**TINY_SURROGATE, "bf16": True}).build(3, 16, 4)
    train = toy_train(attack)
    learnt = {}
    for bf16 in (False, True):
        settings = SurrogateSettings(**{**TINY_SURROGATE, "width": 8, "epochs": 8}, bf16=bf16)
        assert settings.uses_bf16() == (bf16 and bf16_supported("cpu"))
        model = train_surrogate(train, 3, 4, settings, seed=0)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == settings.uses_bf16()
        learnt[bf16] = accuracy(model, train)
    assert min(learnt.values()) >= 70  # chance: 25 (these tiny BatchNorm models in eval mode swing between 75 and 100)

    attack.fit(train, seed=0)
    positions = attack.poison_indices(train.labels, seed=0)
    clean = torch.stack([train[int(i)][0] for i in positions])
    assert attack.perturbed.dtype == torch.float32
    assert 1 / 255 < (attack.perturbed - clean).abs().max() <= 8 / 255 + 1e-6
