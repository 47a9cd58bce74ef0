"""ISSBA: a fixed bit string hidden in every poisoned image by an encoder trained in the run, readable by its decoder."""

import pytest
import torch

from backdoorlab.attacks.issba import ISSBA, psnr
from backdoorlab.errors import ConfigError
from test_attack_catalogue import toy_train


@pytest.fixture(scope="module")
def fitted():
    """A codec fitted on toy images: 8 bits, 25 epochs on the bit loss, then 15 with the residual's L2 (about 10 s)."""
    attack = ISSBA(secret_bits=8, width=8, depth=2, encoder_epochs=40, secret_only_epochs=25, lr=1e-3).build(3, 16, 4)
    attack.fit(toy_train(attack, n=256), seed=0)
    return attack


def test_the_decoder_reads_the_hidden_string_back_from_held_out_images(fitted):
    assert fitted.info["bit_accuracy"] >= 0.95
    x = torch.stack([toy_train(fitted, n=32, seed=7)[i][0] for i in range(32)])
    with torch.no_grad():
        bits = (fitted.networks["decoder"](fitted.apply(x)) > 0).float()
    assert float((bits == fitted.secret).float().mean()) >= 0.95
    assert fitted.secret.shape == (8,) and set(fitted.secret.tolist()) <= {0.0, 1.0}


def test_the_residual_differs_per_image_is_clipped_to_0_1_and_kept_small_by_the_l2_term(fitted):
    x = torch.stack([toy_train(fitted, n=16, seed=8)[i][0] for i in range(16)])
    out = fitted.apply(x)
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    residual = (out - x).flatten(1)
    correlation = torch.corrcoef(residual)[~torch.eye(16, dtype=torch.bool)]
    assert float(correlation.max()) < 0.99  # sample-specific, not one pattern
    assert psnr(out, x) > 15 and fitted.info["psnr_db"] > 15  # the bit loss alone leaves about 7 dB on these images
    with torch.no_grad():  # the L2 term is on the residual before clipping: an overshoot past 0 or 1 is not free
        raw = fitted.residual(x, fitted.secret).pow(2).mean()
    assert float(raw) < 10 ** (-15 / 10)


def test_poisoned_training_images_carry_the_code_and_the_target_label_and_the_codec_stays_in_eval_mode(fitted):
    from backdoorlab.data.images import TensorImages
    from backdoorlab.data.poisoned import PoisonedImages

    base = toy_train(fitted, n=40, seed=9).base
    positions = fitted.poison_indices(base.labels, seed=1)
    view = PoisonedImages(base, torch.arange(40), fitted, positions, training=True)
    assert isinstance(base, TensorImages) and len(positions) == 4
    assert all(view[int(i)][1] == fitted.target_label for i in positions)
    assert torch.allclose(view[int(positions[0])][0], fitted.apply(base.image(int(positions[0]))), atol=1e-6)
    assert not any(m.training for m in fitted.networks.modules())


@pytest.mark.parametrize("bad", [{"secret_bits": 0}, {"lr": 0}, {"fit_samples": 1}, {"held_out": 1.0}])
def test_bad_settings_are_refused_in_one_sentence(bad):
    with pytest.raises(ConfigError, match="attack\\."):
        ISSBA(**bad)


def test_a_codec_whose_code_does_not_survive_stops_the_run_before_the_classifier_trains():
    from backdoorlab.errors import AttackFailed

    attack = ISSBA(secret_bits=8, width=4, depth=2, encoder_epochs=1, lr=1e-5).build(3, 16, 4)
    with pytest.raises(AttackFailed, match="attack.min_bit_accuracy"):
        attack.fit(toy_train(attack, n=64), seed=0)
