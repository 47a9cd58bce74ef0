"""Train and purify through the real config tree on digits at smoke scale."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from backdoorlab.purification_run import purify
from backdoorlab.training_run import train_backdoor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def trained(make_config, tmp_path):
    """A BadNets run directory (smoke scale), trained once per test."""
    cfg = make_config("train", ["attack=badnets", "attack.target_label=2"])
    out = tmp_path / "trained"
    train_backdoor(cfg, out)
    return out


def test_training_writes_a_self_describing_run_directory(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0 <= metrics["acc"] <= 100 and 0 <= metrics["asr"] <= 100
    run = json.loads((trained / "run.json").read_text())
    assert run["attack_name"] == "badnets" and run["config"]["attack"]["target_label"] == 2
    assert run["config"]["model"]["width"] == 4 and run["config"]["dataset"]["image_size"] == 8
    trigger = load_file(str(trained / "trigger.safetensors"))
    assert trigger["pattern"].shape == trigger["mask"].shape == (3, 8, 8)
    assert trigger["mask"].max() == 1.0 and 0 <= trigger["pattern"].min() and trigger["pattern"].max() <= 1
    assert (trained / "triggered_samples.png").read_bytes()[:4] == b"\x89PNG"
    weights = load_file(str(trained / "model.safetensors"))
    assert "conv1.weight" in weights and "linear.weight" in weights


@pytest.mark.parametrize("defense", ["fip", "ft", "nft", "nft_no_mixup", "fast_fip", "ft_sam", "anp", "fp", "nad", "rnp", "i_bau", "awm", "none"])
def test_purify_a_run_directory(make_config, trained, tmp_path, defense):
    cfg = make_config("purify", [f"checkpoint={trained}", f"defense={defense}", "attack=blend"])
    metrics = purify(cfg, tmp_path / "purified")
    saved = json.loads((tmp_path / "purified" / "metrics.json").read_text())
    assert saved["before"].keys() >= {"acc", "asr"} and saved["after"].keys() >= {"acc", "asr"}
    assert saved["runtime_s"] >= 0 and saved["defense"] == defense.removesuffix("_no_mixup")
    assert saved["peak_memory_mb"] > 0 and saved["trainable_parameters"] >= 0
    # Masks and singular-value shifts are folded back: the saved weights are the plain network's.
    assert load_file(str(tmp_path / "purified" / "model.safetensors")).keys() == load_file(str(trained / "model.safetensors")).keys()
    # The attack comes from the run directory, not from the attack=blend override.
    assert json.loads((tmp_path / "purified" / "run.json").read_text())["attack_name"] == "badnets"
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["before"]["acc"] == pytest.approx(trained_metrics["acc"], abs=1e-6)
    if defense == "none":
        assert metrics["after"] == metrics["before"] and metrics["runtime_s"] == 0
        assert torch.equal(load_file(str(tmp_path / "purified" / "model.safetensors"))["conv1.weight"],
                           load_file(str(trained / "model.safetensors"))["conv1.weight"])


def test_purify_a_plain_state_dict_described_by_overrides(make_config, trained, tmp_path):
    state = load_file(str(trained / "model.safetensors"))
    torch.save(state, tmp_path / "foreign.pth")
    cfg = make_config("purify", [f"checkpoint={tmp_path / 'foreign.pth'}", "defense=ft", "attack=badnets",
                                 "attack.target_label=2"])
    metrics = purify(cfg, tmp_path / "purified")
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["before"]["acc"] == pytest.approx(trained_metrics["acc"], abs=1e-6)
    assert metrics["before"]["asr"] == pytest.approx(trained_metrics["asr"], abs=1e-6)


def test_eval_every_records_the_trajectory_of_acc_and_asr(make_config, trained, tmp_path):
    # The trajectory evaluates the current weights; without tail averaging its last point is the result.
    plain = ["defense=ft", "defense.steps=4", "defense.average_fraction=0"]
    metrics = purify(make_config("purify", [f"checkpoint={trained}", *plain, "eval_every=2"]), tmp_path / "purified")
    assert [point["step"] for point in metrics["trajectory"]] == [2, 4]
    last = metrics["trajectory"][-1]
    assert last["acc"] == pytest.approx(metrics["after"]["acc"]) and last["asr"] == pytest.approx(metrics["after"]["asr"])
    saved = json.loads((tmp_path / "purified" / "metrics.json").read_text())
    assert saved["trajectory"] == metrics["trajectory"]
    # Observing the run does not change it: the same purification without evaluations in between.
    unobserved = purify(make_config("purify", [f"checkpoint={trained}", *plain]), tmp_path / "p0")
    assert unobserved["after"] == metrics["after"] and "trajectory" not in unobserved
    assert torch.equal(load_file(str(tmp_path / "p0" / "model.safetensors"))["linear.weight"],
                       load_file(str(tmp_path / "purified" / "model.safetensors"))["linear.weight"])


def test_purify_without_checkpoint_trains_once_then_reuses(make_config, tmp_path):
    cfg = make_config("purify", ["defense=none"])
    first = purify(cfg, tmp_path / "p1")
    cached = list((tmp_path / "outputs" / "models").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()
    stamp = (cached[0] / "model.safetensors").stat().st_mtime_ns
    second = purify(make_config("purify", ["defense=none"]), tmp_path / "p2")
    assert (cached[0] / "model.safetensors").stat().st_mtime_ns == stamp
    assert first["before"] == second["before"]


def test_a_new_training_version_does_not_reuse_older_cached_models(make_config, monkeypatch):
    from backdoorlab import purification_run

    cfg = make_config("purify", ["defense=none"])
    current = purification_run.cached_model_dir(cfg)
    monkeypatch.setattr(purification_run, "TRAINING_VERSION", purification_run.TRAINING_VERSION + 1)
    assert purification_run.cached_model_dir(cfg) != current


def test_the_cached_model_is_found_wherever_the_data_lies(make_config):
    from backdoorlab import purification_run

    here = make_config("purify", ["dataset=cifar10_jpeg", "dataset.path=/here/cifar10-jpeg.tar.gz"])
    there = make_config("purify", ["dataset=cifar10_jpeg", "dataset.path=/elsewhere/cifar10-jpeg.tar.gz"])
    assert purification_run.cached_model_dir(here) == purification_run.cached_model_dir(there)
    assert purification_run.cached_model_dir(here) != purification_run.cached_model_dir(
        make_config("purify", ["dataset=cifar10_jpeg", "dataset.path=/here/cifar10-jpeg.tar.gz", "dataset.image_size=24"]))


def test_same_seed_same_metrics_and_weights(make_config, tmp_path):
    runs = []
    for name in ("a", "b"):
        train_backdoor(make_config("train", ["attack=blend", "seed=3"]), tmp_path / name)
        runs.append(tmp_path / name)
    metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
    assert metrics[0]["acc"] == metrics[1]["acc"] and metrics[0]["asr"] == metrics[1]["asr"]
    wa, wb = (load_file(str(r / "model.safetensors")) for r in runs)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    purified = [purify(make_config("purify", [f"checkpoint={runs[0]}", "defense=fip", "seed=1"]), tmp_path / f"p{i}")
                for i in range(2)]
    assert purified[0]["after"] == purified[1]["after"]


def test_purification_seed_purifies_the_same_cached_model_along_another_random_stream(make_config, tmp_path):
    base = ["defense=ft", "defense.steps=3"]
    first = purify(make_config("purify", base), tmp_path / "p0")
    other = purify(make_config("purify", [*base, "purification_seed=5"]), tmp_path / "p5")
    assert len(list((tmp_path / "outputs" / "models").iterdir())) == 1  # one backdoored model, purified twice
    assert other["before"] == first["before"]
    w0, w5 = (load_file(str(tmp_path / p / "model.safetensors"))["linear.weight"] for p in ("p0", "p5"))
    assert not torch.equal(w0, w5)
    saved = json.loads((tmp_path / "p5" / "run.json").read_text())["config"]
    assert saved["seed"] == 0 and saved["purification_seed"] == 5


def test_evaluating_less_often_leaves_the_training_run_and_its_final_metrics_unchanged(make_config, tmp_path):
    results = {}
    for every in (1, 0, 3):  # every epoch; only at the end; every 3rd of 2 epochs (so again only at the end)
        out = tmp_path / f"every{every}"
        results[every] = train_backdoor(make_config("train", ["training.epochs=2", f"training.eval_every_epochs={every}"]), out)
        results[every]["weights"] = load_file(str(out / "model.safetensors"))["linear.weight"]
    for every in (0, 3):
        assert results[every]["acc"] == results[1]["acc"] and results[every]["asr"] == results[1]["asr"]
        assert torch.equal(results[every]["weights"], results[1]["weights"])


def test_every_defense_purifies_with_one_image_per_class(make_config, trained, tmp_path):
    # none and prune_masks use no pool image (prune_masks: test_prune_masks_* below)
    defenses = sorted(p.stem for p in (ROOT / "configs" / "defense").glob("*.yaml") if p.stem not in ("none", "prune_masks"))
    assert {"fip", "fast_fip", "nft", "anp", "awm", "i_bau", "rnp", "fp", "nad", "ft_sam"} <= set(defenses)
    for defense in defenses:
        metrics = purify(make_config("purify", [f"checkpoint={trained}", f"defense={defense}", "defense.samples_per_class=1"]),
                         tmp_path / defense)
        assert metrics["pool_samples"] == 10, defense  # one image of each of the 10 digits
        assert 0 <= metrics["after"]["acc"] <= 100 and 0 <= metrics["after"]["asr"] <= 100, defense


@pytest.mark.parametrize("defense", ["anp", "rnp"])
def test_prune_masks_applies_a_pruning_defense_s_saved_masks_without_learning_them_again(make_config, trained, tmp_path, defense):
    learned = tmp_path / defense
    metrics = purify(make_config("purify", [f"checkpoint={trained}", f"defense={defense}", "defense.threshold=0.9"]), learned)
    masks = load_file(str(learned / "masks.safetensors"))
    assert all(name.startswith("net.") and "bn" in name for name in masks) and len(masks) > 5
    assert all(((0 <= m) & (m <= 1)).all() for m in masks.values())
    # The same rule on the saved masks gives the same purified model, with no optimisation.
    same = purify(make_config("purify", [f"checkpoint={trained}", "defense=prune_masks", f"defense.masks={learned}",
                                         "defense.threshold=0.9"]), tmp_path / "same")
    assert same["steps"] == 0 and same["defense_summary"]["pruned_channels"] == metrics["defense_summary"]["pruned_channels"]
    assert same["after"] == pytest.approx(metrics["after"])
    mine, theirs = load_file(str(tmp_path / "same" / "model.safetensors")), load_file(str(learned / "model.safetensors"))
    assert [k for k in theirs if not torch.equal(mine[k], theirs[k])] == []
    # A cap of 0 prunes nothing: the backdoored model as it was. A folder holding the run (a multirun's) serves too.
    none = purify(make_config("purify", [f"checkpoint={trained}", "defense=prune_masks", f"defense.masks={tmp_path}",
                                         "defense.max_pruned_fraction=0"]), tmp_path / "none")
    assert none["defense_summary"]["pruned_channels"] == 0 and none["after"] == pytest.approx(none["before"])


def test_prune_masks_refuses_missing_masks_and_masks_of_another_architecture(make_config, trained, tmp_path):
    from backdoorlab.errors import ConfigError

    with pytest.raises(ConfigError, match="defense.masks"):
        purify(make_config("purify", [f"checkpoint={trained}", "defense=prune_masks"]), tmp_path / "a")
    with pytest.raises(ConfigError, match="no masks file"):
        purify(make_config("purify", [f"checkpoint={trained}", "defense=prune_masks", f"defense.masks={tmp_path}"]), tmp_path / "b")
    for run in ("anp", "anp2"):
        purify(make_config("purify", [f"checkpoint={trained}", "defense=anp", "defense.steps=1"]), tmp_path / "two" / run)
    with pytest.raises(ConfigError, match="holds 2 runs with masks"):
        purify(make_config("purify", [f"checkpoint={trained}", "defense=prune_masks", f"defense.masks={tmp_path / 'two'}"]), tmp_path / "d")
    wider = make_config("train", ["attack=badnets", "model.width=8"])
    train_backdoor(wider, tmp_path / "wider")
    with pytest.raises(ConfigError, match="another architecture"):
        purify(make_config("purify", [f"checkpoint={tmp_path / 'wider'}", "defense=prune_masks", f"defense.masks={tmp_path / 'two' / 'anp'}"]),
               tmp_path / "c")
