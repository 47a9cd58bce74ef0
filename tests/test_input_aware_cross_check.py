"""scripts/input_aware_cross_check.py measures an input-aware model's ACC and ASR as the run did, and its cross rates."""

import runpy
import sys
from pathlib import Path

import pytest

from backdoorlab.errors import ConfigError
from backdoorlab.training_run import train_backdoor

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["attack.width=4", "attack.depth=2", "attack.mask_epochs=1"]


def script(monkeypatch, name="cross_rates"):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts src/ first
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # where it finds per_class_accuracy
    return runpy.run_path(str(ROOT / "scripts" / "input_aware_cross_check.py"))[name]


@pytest.mark.parametrize("label_mode", ["all2one", "all2all"])
def test_the_own_trigger_rates_are_the_runs_and_the_cross_rates_are_rates(make_config, tmp_path, monkeypatch, label_mode):
    cross_rates = script(monkeypatch)
    metrics = train_backdoor(make_config("train", ["attack=input_aware", f"attack.label_mode={label_mode}", *SMALL]),
                             tmp_path / "run")
    rates = cross_rates(tmp_path / "run")
    assert rates["mode"] == label_mode
    assert rates["clean"] == pytest.approx(metrics["acc"], abs=1e-4)  # the same images, model and batches as the run's
    assert rates["own"] == pytest.approx(metrics["asr"], abs=1e-4)
    for name in ("own_correct", "cross_acc", "cross_asr"):
        assert 0 <= rates[name] <= 100


def test_a_cross_image_carries_the_previous_images_pattern_and_mask(make_config, monkeypatch):
    import torch

    from backdoorlab.builders import build_data

    cross_triggered = script(monkeypatch, "cross_triggered")
    data = build_data(make_config("train", ["attack=input_aware", *SMALL]))
    attack, size = data.attack, data.bundle.image_size
    x = torch.rand(5, data.bundle.channels, size, size)
    cross = cross_triggered(attack, x)
    for i in range(5):
        partner = x[i - 1:i] if i else x[4:5]
        pattern, mask = attack.with_networks(partner, attack.networks["pattern"]), attack.with_networks(partner, attack.masks)
        torch.testing.assert_close(cross[i:i + 1], x[i:i + 1] + (pattern - x[i:i + 1]) * mask)
    assert not torch.allclose(cross, attack.apply(x))  # not the images' own triggers


def test_a_model_of_another_attack_is_refused(make_config, tmp_path, monkeypatch):
    cross_rates = script(monkeypatch)
    train_backdoor(make_config("train", ["attack=badnets"]), tmp_path / "run")
    with pytest.raises(ConfigError, match="attack=badnets"):
        cross_rates(tmp_path / "run")
