"""Triggers and poisoning rules."""

import pytest
import torch

from backdoorlab.attacks.badnets import POSITIONS, BadNets
from backdoorlab.attacks.benign import Benign
from backdoorlab.attacks.blend import Blend
from backdoorlab.errors import ConfigError


@pytest.mark.parametrize("position", POSITIONS)
def test_badnets_patch_sits_in_the_requested_corner(position):
    attack = BadNets(size=3, position=position, margin=1).build(channels=3, image_size=10, num_classes=10)
    rows, cols = torch.nonzero(attack.mask[0] > 0, as_tuple=True)
    expect_rows = range(1, 4) if position.startswith("top") else range(6, 9)
    expect_cols = range(1, 4) if position.endswith("left") else range(6, 9)
    assert sorted(set(rows.tolist())) == list(expect_rows)
    assert sorted(set(cols.tolist())) == list(expect_cols)
    patch = attack.pattern[0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert torch.equal(patch, torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))


def test_badnets_pastes_or_blends_only_inside_the_patch():
    x = torch.full((2, 3, 8, 8), 0.5)
    pasted = BadNets(size=2, alpha=1.0).build(3, 8, 10).apply(x)
    blended = BadNets(size=2, alpha=0.6).build(3, 8, 10).apply(x)
    assert torch.equal(pasted[..., :6, :], x[..., :6, :]) and torch.equal(pasted[..., :, :6], x[..., :, :6])
    assert torch.allclose(pasted[0, 0, 6:, 6:], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(blended[0, 0, 6:, 6:], 0.4 * 0.5 + 0.6 * torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_blend_pattern_is_seeded_and_mixes_with_alpha():
    a = Blend(alpha=0.2, pattern_seed=3).build(3, 8, 10)
    b = Blend(alpha=0.2, pattern_seed=3).build(3, 8, 10)
    c = Blend(alpha=0.2, pattern_seed=4).build(3, 8, 10)
    assert torch.equal(a.pattern, b.pattern) and not torch.equal(a.pattern, c.pattern)
    x = torch.rand(3, 8, 8)
    assert torch.allclose(a.apply(x), 0.8 * x + 0.2 * a.pattern)
    assert set(a.trigger_tensors()) == {"pattern", "mask"}


def test_all2one_poisons_only_non_target_samples_at_the_rate():
    labels = torch.arange(10).repeat(20)  # 200 samples, 20 per class
    attack = BadNets(target_label=3, poison_rate=0.1).build(3, 8, 10)
    idx = attack.poison_indices(labels, seed=0)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    assert (labels[idx] != 3).all()
    assert torch.equal(idx, attack.poison_indices(labels, seed=0))
    assert not torch.equal(idx, attack.poison_indices(labels, seed=1))
    assert (attack.relabel(labels[idx]) == 3).all()
    assert torch.equal(attack.asr_indices(labels), torch.nonzero(labels != 3).flatten())


def test_all2all_shifts_labels_and_measures_asr_on_every_sample():
    labels = torch.arange(10)
    attack = Blend(label_mode="all2all").build(3, 8, 10)
    assert torch.equal(attack.relabel(labels), (labels + 1) % 10)
    assert len(attack.asr_indices(labels)) == 10


def test_benign_poisons_nothing():
    attack = Benign().build(3, 8, 10)
    assert len(attack.poison_indices(torch.arange(10).repeat(5), seed=0)) == 0
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(attack.apply(x), x)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: BadNets(poison_rate=1.5), "attack.poison_rate must lie in \\[0, 1\\]"),
        (lambda: Blend(poison_rate=-0.1), "attack.poison_rate"),
        (lambda: BadNets(position="middle"), "attack.position must be one of bottom_right"),
        (lambda: BadNets(label_mode="one2one"), "attack.label_mode must be one of all2one, all2all"),
        (lambda: BadNets(target_label=10).build(3, 8, 10), "attack.target_label must lie in 0..9"),
        (lambda: BadNets(size=9).build(3, 8, 10), "does not fit"),
    ],
)
def test_bad_attack_settings_are_one_clear_error(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize("make", [lambda: BadNets(alpha=0), lambda: Blend(alpha=1.5)])
def test_trigger_alpha_outside_range_is_refused(make):
    with pytest.raises(ConfigError, match="attack.alpha must lie in \\(0, 1\\]"):
        make()


def test_badnets_white_pattern_is_a_white_square_at_the_bottom_right():
    attack = BadNets(size=3, pattern="white").build(3, 8, 10)
    assert torch.equal(attack.pattern[:, 5:, 5:], torch.ones(3, 3, 3)) and attack.pattern.sum() == 27
    assert torch.equal(attack.mask[:, 5:, 5:], torch.ones(3, 3, 3)) and attack.mask.sum() == 27
    with pytest.raises(ConfigError, match="attack.pattern must be one of checkerboard, white"):
        BadNets(pattern="stripes")


@pytest.mark.parametrize("name", ["china", "flower"])
def test_blend_with_a_natural_image_resizes_the_whole_image(name):
    from sklearn.datasets import load_sample_image

    from backdoorlab.data.images import resize_uint8

    attack = Blend(alpha=0.2, pattern=name).build(3, 16, 10)
    source = torch.as_tensor(load_sample_image(f"{name}.jpg")).permute(2, 0, 1)
    expected = resize_uint8(source[None], 16)[0].float() / 255
    assert attack.pattern.shape == (3, 16, 16) and torch.equal(attack.pattern, expected)
    assert attack.pattern.std() > 0.1  # an image, not a flat colour
    assert torch.equal(attack.mask, torch.full((3, 16, 16), 0.2))
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(attack.apply(x), 0.8 * x + 0.2 * expected)
    gray = Blend(pattern=name).build(1, 16, 10)
    assert gray.pattern.shape == (1, 16, 16) and torch.allclose(gray.pattern[0], expected.mean(0))


def test_blend_reads_an_image_file_and_refuses_a_missing_or_unreadable_one(tmp_path):
    from PIL import Image

    pixels = (torch.arange(8 * 8 * 3) % 256).to(torch.uint8).reshape(8, 8, 3)
    Image.fromarray(pixels.numpy()).save(tmp_path / "trigger.png")
    attack = Blend(pattern=str(tmp_path / "trigger.png")).build(3, 8, 10)
    assert torch.equal(attack.pattern, pixels.permute(2, 0, 1).float() / 255)
    assert not torch.equal(Blend(pattern="china").build(3, 8, 10).pattern, Blend(pattern="flower").build(3, 8, 10).pattern)
    with pytest.raises(ConfigError, match="noise, china, flower or an image file"):
        Blend(pattern=str(tmp_path / "missing.png"))
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(ConfigError, match="could not be read as an image"):
        Blend(pattern=str(tmp_path / "bad.png"))


def test_an_experiment_sets_the_published_triggers_and_an_override_wins(make_config):
    from backdoorlab.builders import build_attack

    assert make_config("train", ["attack=badnets"]).attack.pattern == "checkerboard"
    assert make_config("train", ["attack=blend"]).attack.pattern == "noise"
    assert make_config("train", ["experiment=cifar_cpu", "attack=badnets"]).attack.pattern == "white"
    blend = build_attack(make_config("train", ["experiment=cifar_cpu", "attack=blend"]))
    assert blend.pattern_name == "china" and blend.alpha == 0.2
    assert make_config("train", ["experiment=cifar_cpu", "attack=blend", "attack.pattern=flower"]).attack.pattern == "flower"
