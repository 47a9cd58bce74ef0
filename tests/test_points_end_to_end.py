"""Point clouds end to end at smoke scale: train PCBA on the primitive shapes, purify with the defenses the issue
names (through the same defense configs as images), measure the curvature."""

import json

import pytest
import torch
from safetensors.torch import load_file

from backdoorlab.analysis_run import analyze
from backdoorlab.purification_run import purify
from backdoorlab.training_run import train_backdoor

SMALL = ["experiment=points_demo", "dataset.source.train_per_class=12", "dataset.source.test_per_class=4",
         "dataset.source.points=64", "attack.pattern_points=4", "attack.surrogate.epochs=1",
         "attack.centre_search.inits=1", "attack.centre_search.steps=5", "attack.attacker_fraction=0.5",
         "training.epochs=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from hydra.core.global_hydra import GlobalHydra

    from backdoorlab.config import compose_run_config

    root = tmp_path_factory.mktemp("points")
    cfg = compose_run_config("train", ["debug=fast", "logger=none", *SMALL, f"paths.root_dir={root}"], root / "run")
    GlobalHydra.instance().clear()
    out = root / "trained"
    train_backdoor(cfg, out)
    return out


def test_a_point_cloud_run_directory_stores_its_trigger_and_metrics(trained):
    run = json.loads((trained / "run.json").read_text())
    assert run["attack_name"] == "pcba" and run["config"]["model"]["_target_"].endswith("pointnet")
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0 <= metrics["acc"] <= 100 and 0 <= metrics["asr"] <= 100
    assert load_file(str(trained / "trigger.safetensors"))["centre"].shape == (3,)


@pytest.mark.parametrize("defense", ["fip", "fip_no_suppressor", "ft", "nft", "anp", "nad", "fp"])
def test_every_defense_the_issue_names_purifies_a_point_model(make_config, trained, tmp_path, defense):
    extra = ["defense.retainer=fisher"] if defense == "fip" else []
    # the experiment names the point model's layers for NAD and fine-pruning (its defense_defaults)
    cfg = make_config("purify", ["experiment=points_demo", f"checkpoint={trained}", f"defense={defense}", *extra])
    metrics = purify(cfg, tmp_path / "purified")
    before = json.loads((trained / "metrics.json").read_text())
    assert metrics["before"]["acc"] == pytest.approx(before["acc"], abs=1e-6)
    assert metrics["before"]["asr"] == pytest.approx(before["asr"], abs=1e-6)
    assert 0 <= metrics["after"]["acc"] <= 100 and 0 <= metrics["after"]["asr"] <= 100
    saved = load_file(str(tmp_path / "purified" / "model.safetensors"))
    assert saved.keys() == load_file(str(trained / "model.safetensors")).keys()
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_a_layer_name_the_point_model_lacks_is_refused_naming_the_way_out(make_config, trained, tmp_path):
    from backdoorlab.errors import ConfigError

    with pytest.raises(ConfigError, match="not a module of the model.*defense_defaults.nad_betas"):
        purify(make_config("purify", [f"checkpoint={trained}", "defense=nad"]), tmp_path / "purified")


def test_analyze_gives_the_curvature_of_a_point_model(make_config, trained, tmp_path):
    result = analyze(make_config("analyze", [f"checkpoint={trained}", "analysis.samples=16", "analysis.batch_size=8",
                                             "analysis.trace_max_probes=4", "analysis.esd=false", "analysis.top_k=1",
                                             "analysis.power_max_iter=8"]), tmp_path / "analysis")
    assert result["lambda_max"] > 0 and result["trace"] > 0


def test_a_run_directory_names_its_purification_by_its_own_data_and_attack(make_config, trained):
    assert make_config("purify", [f"checkpoint={trained}", "defense=ft"]).run_name == "primitive_shapes-pcba-ft-seed0"


def test_a_benign_model_composes_with_an_experiment_that_sets_its_attacks_trigger(make_config):
    from backdoorlab.builders import build_attack

    cfg = make_config("purify", ["experiment=points_demo", "setting=points_benign_520"])
    assert cfg.attack.source_label == 2 and build_attack(cfg).is_benign and cfg.seed == 520
