"""Hydra's launcher plugins run the same sweep: joblib (parallel local processes) and submitit_local."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backdoorlab.config import compose_run_config
from backdoorlab.entry import job_threads

ROOT = Path(__file__).resolve().parents[1]


def sweep(tmp_path, name: str, *overrides: str) -> dict[str, dict]:
    """A two-job purify sweep into tmp_path/name: {job directory name: metrics.json}."""
    cmd = [sys.executable, "-m", "backdoorlab.purify", "-m", "debug=fast", "logger=none", "defense=ft", "seed=0,1",
           f"paths.root_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / name}", *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {p.name: json.loads((p / "metrics.json").read_text()) for p in sorted((tmp_path / name).iterdir())
            if (p / "metrics.json").is_file()}


@pytest.mark.parametrize(("launcher", "cores", "threads"), [("joblib", 8, 4), ("joblib", 1, 1), ("basic", 8, None)])
def test_auto_threads_share_the_cores_among_the_parallel_jobs(tmp_path, launcher, cores, threads):
    cfg = compose_run_config("purify", [f"hydra/launcher={launcher}"] + (["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []),
                             tmp_path)
    assert job_threads(cfg, cores=cores) == threads


def test_threads_must_be_auto_or_a_positive_number(tmp_path):
    from backdoorlab.errors import ConfigError

    with pytest.raises(ConfigError, match="threads must be auto or a positive number, got 0"):
        job_threads(compose_run_config("purify", ["threads=0"], tmp_path))


def test_joblib_and_submitit_local_give_the_basic_launchers_metrics(tmp_path):
    per_job = max(1, len(os.sched_getaffinity(0)) // 2)
    basic = sweep(tmp_path, "basic", f"threads={per_job}")
    parallel = sweep(tmp_path, "joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")  # threads=auto
    submitit = sweep(tmp_path, "submitit", "hydra/launcher=submitit_local", f"threads={per_job}")
    assert list(basic) == list(parallel) == list(submitit) == ["0-digits-badnets-ft-seed0", "1-digits-badnets-ft-seed1"]
    for name, metrics in basic.items():
        assert parallel[name]["threads"] == submitit[name]["threads"] == metrics["threads"] == per_job
        for other in (parallel[name], submitit[name]):
            assert other["before"] == metrics["before"] and other["after"] == metrics["after"]


def test_the_slurm_preset_starts_one_task_per_gpu_for_lightnings_ddp(tmp_path):
    cfg = compose_run_config("purify", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                                        "trainer=ddp", "trainer.devices=4"], tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.tasks_per_node == launcher.gpus_per_node == cfg.trainer.devices == 4
    assert cfg.trainer.strategy == "ddp" and job_threads(cfg) == launcher.cpus_per_task == 8


def test_parallel_jobs_that_need_one_model_train_it_once(tmp_path):
    jobs = sweep(tmp_path, "shared_model", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "defense=ft,none", "seed=0")
    assert len(jobs) == 2 and len({json.dumps(m["before"]) for m in jobs.values()}) == 1
    models = [p for p in (tmp_path / "outputs" / "models").iterdir() if p.is_dir()]
    assert len(models) == 1
    logs = [(tmp_path / "shared_model" / name / "purify.log").read_text() for name in jobs]
    assert sum("training the backdoored model" in log for log in logs) == 1
    assert sum("reusing the backdoored model" in log for log in logs) == 1


def test_the_study_presets_sweep_their_drawn_settings_into_a_fixed_directory(tmp_path):
    digits = compose_run_config("purify", ["experiment=study_digits", "setting=digits_badnets_2"], tmp_path)
    params = digits.hydra.sweeper.params
    assert len(params.setting.split(",")) * len(params.defense.split(",")) == 24
    assert (digits.seed, digits.attack.target_label, digits.attack.position) == (2, 7, "top_right")
    assert digits.hydra.sweep.dir.endswith("outputs/study/study_digits") and digits.training.epochs == 30
    cifar = compose_run_config("purify", ["experiment=study_cifar_cpu", "setting=cifar_blend_104"], tmp_path)
    assert (cifar.seed, cifar.attack.target_label, cifar.budget) == (104, 0, "authors") and "position" not in cifar.attack
    from backdoorlab.purification_run import cached_model_dir

    assert (cached_model_dir(cifar) / "model.safetensors").is_file()  # the committed zoo model of this setting


@pytest.mark.parametrize("part", ["study_attacks_cifar_cpu", "study_attacks2_cifar_cpu"])
def test_the_authors_budget_attack_study_purifies_the_same_models_at_the_authors_settings(tmp_path, part):
    shared = compose_run_config("purify", [f"experiment={part}"], tmp_path)
    authors = compose_run_config("purify", [f"experiment={part}_authors"], tmp_path)
    assert authors.hydra.sweeper.params.setting == shared.hydra.sweeper.params.setting
    defenses = shared.hydra.sweeper.params.defense.split(",")
    # every defense of the shared sweep and both methods' ablations, once each (part 2 runs the ablations first)
    authors_defenses = authors.hydra.sweeper.params.defense.split(",")
    assert len(authors_defenses) == len(set(authors_defenses))
    assert set(authors_defenses) == set(defenses) | {"fip_no_suppressor", "nft_no_mixup"}
    assert (shared.budget, authors.budget) == ("shared", "authors")
    assert authors.paths.model_cache == shared.paths.model_cache  # the committed zoo models, not trained again
    fip = compose_run_config("purify", [f"experiment={part}_authors", "setting=attack_lira", "defense=fip"], tmp_path)
    assert (fip.defense.steps, fip.defense.lr, fip.defense.eta_r) == (2000, 0.005, 0.0)
    # part 2 holds the models whose train-mode BatchNorm misleads a train-mode retainer reference; part 1 ran before it
    assert fip.defense.retainer_reference == ("eval" if part == "study_attacks2_cifar_cpu" else "student")


@pytest.mark.parametrize("protocol", ["digits", "cifar_cpu"])
def test_the_attack_study_presets_compose_every_model_of_the_catalogue(tmp_path, protocol):
    from backdoorlab.builders import build_adaptive

    # cifar_cpu's study is two sweeps (the first table complete after 11 models); together they hold the catalogue
    # the adaptive attacks' sweep adds FIP's ablation, to compare FIP with it on them
    presets = {"digits": {"study_attacks_digits": "none,fip,nft,anp,ft"},
               "cifar_cpu": {"study_attacks_cifar_cpu": "none,fip,nft,anp,ft",
                             "study_attacks2_cifar_cpu": "none,fip,nft,anp,ft,fip_no_suppressor"}}[protocol]
    settings = []
    for preset, defenses in presets.items():
        cfg = compose_run_config("purify", [f"experiment={preset}"], tmp_path)
        assert cfg.hydra.sweeper.params.defense == defenses
        settings += [(preset, name) for name in cfg.hydra.sweeper.params.setting.split(",")]
    lines = [line.split() for line in (ROOT / "scripts" / "study_settings" / "attacks.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(settings) == len(lines) == 18
    for (preset, name), (attack, seed, target, position, *overrides) in zip(settings, lines):
        one = compose_run_config("purify", [f"experiment={preset}", f"setting={name}"], tmp_path)
        assert (one.hydra.runtime.choices.attack, one.seed, one.attack.target_label) == (attack, int(seed), int(target))
        assert one.attack.get("position", "-") == position
        assert one.attack.get("label_mode", "all2one") == ("all2all" if "attack.label_mode=all2all" in overrides else "all2one")
        adaptive = build_adaptive(one)
        assert (adaptive is not None) == any(o.startswith("adaptive=") for o in overrides)
        if "adaptive=sam" in overrides:
            assert adaptive.rho > 2 and adaptive.asam  # the regime the FIP paper's claim is about (its README: > 2, runs 3)
