"""A user's own architecture through model=custom model._target_=..., with and without BatchNorm."""

import pytest

from backdoorlab.errors import ConfigError
from backdoorlab.purification_run import purify
from backdoorlab.training_run import train_backdoor

FACTORY = '''
import torch.nn as nn


def plain_cnn(num_classes, in_channels, width=8):
    """A CNN without BatchNorm, as a user might bring one."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
    )
'''


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    (tmp_path / "user_nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return ["model=custom", "model._target_=user_nets.plain_cnn"]


def test_a_users_architecture_without_batchnorm_trains_and_is_purified_by_fip(make_config, tmp_path, user_model):
    trained = tmp_path / "trained"
    train_backdoor(make_config("train", user_model), trained)
    result = purify(make_config("purify", [f"checkpoint={trained}", "defense=fip"]), tmp_path / "fip")
    assert result["steps"] == 3 and 0.0 <= result["after"]["acc"] <= 100.0


@pytest.mark.parametrize("defense", ["nft", "anp", "rnp"])
def test_batchnorm_defenses_refuse_a_model_without_batchnorm_in_one_sentence_before_training(make_config, tmp_path, user_model, defense):
    with pytest.raises(ConfigError, match=f"defense={defense} trains masks on BatchNorm channels and this model has no BatchNorm layer"):
        purify(make_config("purify", [*user_model, f"defense={defense}"]), tmp_path / defense)
    assert not (tmp_path / "outputs" / "models").exists() or not any((tmp_path / "outputs" / "models").rglob("*.safetensors"))


def test_the_custom_model_needs_a_target(make_config, tmp_path):
    with pytest.raises(ConfigError, match="model._target_ must be set to build model"):
        train_backdoor(make_config("train", ["model=custom"]), tmp_path / "t")
