"""Slow tests (`make test-slow`): DDP, multirun sweeps and the demo's quality targets."""

import subprocess
import sys

import pytest

from backdoorlab.purification_run import purify
from backdoorlab.training_run import train_backdoor

pytestmark = pytest.mark.slow


def test_two_process_ddp_matches_the_run_directory_contract(make_config, tmp_path):
    trained = tmp_path / "trained"
    metrics = train_backdoor(make_config("train", ["trainer=ddp_sim"]), trained)
    assert (trained / "model.safetensors").is_file() and 0 <= metrics["acc"] <= 100
    result = purify(make_config("purify", [f"checkpoint={trained}", "trainer=ddp_sim", "defense=fip"]), tmp_path / "p")
    assert result["after"].keys() >= {"acc", "asr"} and (tmp_path / "p" / "model.safetensors").is_file()


def test_the_curvature_curve_under_lightning_ddp_starts_where_one_process_starts(make_config, tmp_path):
    import csv

    small = ["analysis.samples=24", "analysis.batch_size=12", "analysis.trace_max_probes=4", "analysis.power_max_iter=8",
             "training.epochs=1", "curvature_every_epochs=1"]
    curves = {}
    for trainer in ("cpu", "ddp_sim"):
        out = tmp_path / trainer
        train_backdoor(make_config("train", [f"trainer={trainer}", *small]), out)
        with open(out / "curvature.csv") as f:
            curves[trainer] = list(csv.DictReader(f))
    assert len(curves["ddp_sim"]) == len(curves["cpu"]) == 2
    # the same initial weights and images, sharded over the two processes and all-reduced
    assert float(curves["ddp_sim"][0]["lambda_max"]) == pytest.approx(float(curves["cpu"][0]["lambda_max"]), rel=1e-4)
    assert float(curves["ddp_sim"][0]["trace"]) == pytest.approx(float(curves["cpu"][0]["trace"]), rel=1e-4)


def test_multirun_gives_one_directory_per_job_named_by_attack_defense_seed(tmp_path):
    cmd = [sys.executable, "-m", "backdoorlab.purify", "-m", "debug=fast", "logger=none", "attack=badnets,blend",
           "defense=fip,ft", "seed=0,1", f"paths.root_dir={tmp_path}", "hydra.sweep.dir=" + str(tmp_path / "sweep")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=1800)
    names = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "sweep").iterdir() if (p / "metrics.json").is_file())
    assert names == sorted(f"digits-{a}-{d}-seed{s}" for a in ("badnets", "blend") for d in ("fip", "ft") for s in (0, 1))
    # Two attacks x two seeds: four backdoored models trained once and shared by both defenses.
    assert len(list((tmp_path / "outputs" / "models").iterdir())) == 4


@pytest.mark.parametrize("attack", ["badnets", "blend"])
def test_demo_models_reach_the_backdoor_targets(make_config, tmp_path, attack):
    metrics = train_backdoor(make_config("train", ["experiment=demo", f"attack={attack}"], fast=False), tmp_path / "t")
    assert metrics["acc"] >= 97 and metrics["asr"] >= 95
