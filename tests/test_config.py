"""Every config group choice composes; bad input stops before training with one clear sentence."""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from backdoorlab.builders import build_defense, build_model
from backdoorlab.config import instantiate
from backdoorlab.data.digits import load_digits
from backdoorlab.entry import CONFIG_DIR
from backdoorlab.errors import ConfigError
from backdoorlab.purification_run import purify
from backdoorlab.training_run import train_backdoor

ROOT = Path(CONFIG_DIR).parent


def choices(group):
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def test_issue_groups_exist():
    assert set(choices("dataset")) >= {"digits", "cifar10", "cifar10_jpeg", "image_folder", "cifar100", "gtsrb",
                                       "tiny_imagenet", "imagenet"}
    assert set(choices("attack")) >= {"benign", "badnets", "blend"}
    assert set(choices("model")) >= {"preact_resnet18", "resnet18"}
    assert set(choices("defense")) >= {"fip", "ft", "none"}
    assert set(choices("trainer")) >= {"cpu", "gpu", "ddp", "ddp_sim"}
    assert set(choices("logger")) >= {"csv", "wandb", "none"}
    assert set(choices("experiment")) >= {"demo", "cifar_cpu", "cifar_paper"}
    assert set(choices("defense")) >= {"fip_paper", "fip_no_suppressor"}


@pytest.mark.parametrize("group", ["dataset", "attack", "model", "trainer", "logger", "experiment", "debug"])
def test_every_choice_composes_and_resolves_for_train(make_config, group):
    for choice in choices(group):
        cfg = make_config("train", [f"{group}={choice}"], fast=False)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        assert cfg.run_name.startswith(f"{cfg.dataset.name}-")


@pytest.mark.parametrize("choice", choices("defense"))
def test_every_defense_composes_and_builds(make_config, choice):
    masks = ["defense.masks=some/anp/run"] if choice == "prune_masks" else []  # its one required value
    cfg = make_config("purify", [f"defense={choice}", *masks], fast=False)
    defense = build_defense(cfg)
    assert choice.startswith(defense.name) and cfg.run_name.endswith(f"-{choice}-seed0")


@pytest.mark.parametrize("choice", choices("attack"))
def test_every_attack_builds(make_config, choice):
    attack = instantiate(make_config("train", [f"attack={choice}"]).attack, "attack")
    attack.build(3, 64 if attack.modality == "points" else 16, 10)  # 64 points a cloud, or 16 x 16 images
    assert attack.name == choice


@pytest.mark.parametrize("choice", choices("model"))
def test_every_model_builds_for_the_dataset(make_config, choice):
    factory = ["model._target_=backdoorlab.models.preact_resnet.preact_resnet18"] if choice == "custom" else []
    model = build_model(make_config("train", [f"model={choice}", *factory]), load_digits(image_size=8))
    assert model.net.state_dict()


def run_entry(module, *args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_unknown_group_choice_names_the_accepted_values(tmp_path):
    result = run_entry("backdoorlab.train", "attack=badnet", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'attack/badnet'" in result.stderr and "badnets" in result.stderr and "blend" in result.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["attack.poison_rate=1.5"], "attack.poison_rate must lie in [0, 1], got 1.5"),
        (["attack.target_label=10"], "attack.target_label must lie in 0..9 for this dataset, got 10"),
        (["dataset=cifar10"], "cifar"),
        (["training.eval_every_epochs=-1"], "training.eval_every_epochs must be >= 0 (0: evaluate only at the end), got -1"),
    ],
)
def test_bad_training_input_stops_before_training(make_config, tmp_path, overrides, message):
    cfg = make_config("train", overrides)
    with pytest.raises(ConfigError) as err:
        train_backdoor(cfg, tmp_path / "run")
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "model.safetensors").exists() and not (tmp_path / "run" / "csv").exists()


def test_bad_input_exits_with_one_line(tmp_path):
    result = run_entry("backdoorlab.train", "debug=fast", "logger=none", "attack.poison_rate=2.5", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: attack.poison_rate must lie in [0, 1], got 2.5"


def test_pool_too_small_and_mismatched_checkpoint_stop_before_purifying(make_config, tmp_path):
    trained = tmp_path / "trained"
    train_backdoor(make_config("train", []), trained)
    with pytest.raises(ConfigError, match="pool has .* images of class 0 but defense.samples_per_class asks for 500"):
        purify(make_config("purify", [f"checkpoint={trained}", "defense.samples_per_class=500"]), tmp_path / "p1")
    from safetensors.torch import load_file
    import torch
    torch.save(load_file(str(trained / "model.safetensors")), tmp_path / "w.pt")
    with pytest.raises(ConfigError, match="does not match the model .* check model=, model.width and dataset="):
        purify(make_config("purify", [f"checkpoint={tmp_path / 'w.pt'}", "model.width=8"]), tmp_path / "p2")
    with pytest.raises(ConfigError, match="is a directory without run.json"):
        purify(make_config("purify", [f"checkpoint={tmp_path}"]), tmp_path / "p3")
    assert not (tmp_path / "p1" / "model.safetensors").exists() and not (tmp_path / "p2" / "model.safetensors").exists()


def test_sweep_input_errors_stop_before_the_backdoored_model_is_trained(make_config, tmp_path):
    with pytest.raises(ConfigError, match="defense.samples_per_class asks for 500"):
        purify(make_config("purify", ["defense.samples_per_class=500"]), tmp_path / "p")
    with pytest.raises(ConfigError, match="defense.schedule must be one of constant, cosine"):
        purify(make_config("purify", ["defense.schedule=linear"]), tmp_path / "p")
    with pytest.raises(ConfigError, match="defense.suppressor_scale must be one of absolute, relative"):
        purify(make_config("purify", ["defense.suppressor_scale=log"]), tmp_path / "p")
    with pytest.raises(ConfigError, match="eval_every must be >= 0"):
        purify(make_config("purify", ["eval_every=-5"]), tmp_path / "p")
    assert not (tmp_path / "outputs" / "models").exists()


def test_loggers_csv_always_and_wandb_offline(make_config):
    from lightning.pytorch.loggers import WandbLogger

    from backdoorlab.builders import build_loggers
    from backdoorlab.lightning.csv_logger import AppendingCSVLogger as CSVLogger

    csv_only = build_loggers(make_config("train", ["logger=csv"]))
    both = build_loggers(make_config("train", ["logger=wandb"]))
    assert [type(x) for x in csv_only] == [CSVLogger]
    assert [type(x) for x in both] == [CSVLogger, WandbLogger] and both[1]._offline is True
    assert build_loggers(make_config("train", ["logger=none"])) == []


def test_a_protocols_defense_defaults_reach_every_defense_with_that_setting(make_config):
    protocol = ["+defense_defaults.lr=0.02", "+defense_defaults.eta_f=0.002", "+defense_defaults.train_mode=false"]
    fip = make_config("purify", ["defense=fip", *protocol], fast=False).defense
    ft = make_config("purify", ["defense=ft", *protocol], fast=False).defense
    ablation = make_config("purify", ["defense=fip_no_suppressor", *protocol], fast=False).defense
    assert (fip.lr, fip.eta_f, fip.train_mode) == (0.02, 0.002, False)
    assert (ft.lr, ft.train_mode) == (0.02, False) and "eta_f" not in ft  # the same budget, no FIP-only keys
    assert (ablation.lr, ablation.eta_f) == (0.02, 0.0)  # a preset's own value stays
    assert make_config("purify", ["defense=ft", "defense.lr=0.3", *protocol], fast=False).defense.lr == 0.3
    default = make_config("purify", ["defense=fip"], fast=False).defense
    assert (default.lr, default.eta_f, default.train_mode) == (0.05, 0.01, True)  # no protocol: the digits defaults


def test_budget_authors_runs_each_defense_as_its_authors_and_shared_keeps_one_budget(make_config):
    from backdoorlab.builders import build_defense

    def defense(name, budget):
        return build_defense(make_config("purify", [f"defense={name}", f"budget={budget}"], fast=False))

    fip = defense("fip", "authors")
    assert (fip.steps, fip.batch_size, fip.lr, fip.momentum, fip.schedule, fip.grad_clip, fip.train_mode) == (
        2000, 128, 0.005, 0.95, "constant", None, True)
    nft = defense("nft_no_mixup", "authors")
    assert (nft.steps, nft.batch_size, nft.lr_floor, nft.schedule_rounds) == (1000, 128, 0.4, 5)
    anp = defense("anp", "authors")
    assert (anp.steps, anp.batch_size, anp.lr, anp.momentum) == (2000, 128, 0.2, 0.9)
    shared = [defense(name, "shared") for name in ("fip", "ft", "nft", "anp")]
    assert {(d.steps, d.batch_size) for d in shared} == {(600, 64)}
    assert make_config("purify", ["defense=fip", "budget=authors", "defense.lr=0.3"], fast=False).defense.lr == 0.3
    with pytest.raises(ConfigError, match="budget must be one of shared, authors, got 'paper'"):
        defense("fip", "paper")
