"""``python -m backdoorlab.analyze``: the curvature of a trained or purified run, in 1 or 2 processes."""

from __future__ import annotations

import csv
import json
import math

import pytest

from backdoorlab.analysis_run import analyze
from backdoorlab.errors import ConfigError
from backdoorlab import runs
from backdoorlab.purification_run import model_seed, purify
from backdoorlab.reporting.collect import collect_curvature_runs, curvature_table
from backdoorlab.training_run import train_backdoor

SMALL = ["analysis.samples=24", "analysis.batch_size=12", "analysis.trace_max_probes=4", "analysis.esd_steps=6", "analysis.top_k=2",
         "analysis.power_max_iter=8"]


@pytest.fixture
def trained(make_config, tmp_path):
    out = tmp_path / "trained"
    train_backdoor(make_config("train", ["attack=badnets"]), out)
    return out


def test_analyze_writes_the_curvature_and_its_density_plot(make_config, trained, tmp_path):
    result = analyze(make_config("analyze", [f"checkpoint={trained}", *SMALL]), tmp_path / "analysis")
    written = json.loads((tmp_path / "analysis" / "curvature.json").read_text())
    assert written["lambda_max"] == pytest.approx(result["lambda_max"]) and written["lambda_max"] > 0
    assert written["top_eigenvalues"][0] == written["lambda_max"] and abs(written["top_eigenvalues"][1]) <= written["lambda_max"]
    assert written["samples"] == 24 and written["processes"] == 1 and written["data"] == "train_clean"
    assert written["trace_probes"] <= 4 and written["settings"]["seed"] == 0 and written["runtime_s"] > 0
    assert len(written["esd"]["nodes"][0]) == 6 and sum(written["esd"]["weights"][0]) == pytest.approx(1.0, abs=1e-6)
    assert (tmp_path / "analysis" / "esd.png").read_bytes()[:4] == b"\x89PNG"
    again = analyze(make_config("analyze", [f"checkpoint={trained}", *SMALL]), tmp_path / "again")
    assert again["lambda_max"] == result["lambda_max"] and again["trace"] == result["trace"]  # the seed fixes images and probes


def test_two_cpu_processes_measure_what_one_does(make_config, trained, tmp_path):
    alone = analyze(make_config("analyze", [f"checkpoint={trained}", *SMALL, "analysis.esd=false"]), tmp_path / "one")
    shared = analyze(make_config("analyze", [f"checkpoint={trained}", *SMALL, "analysis.esd=false", "trainer=ddp_sim"]),
                     tmp_path / "two")
    assert shared["processes"] == 2 and shared["samples"] == alone["samples"] == 24
    assert shared["lambda_max"] == pytest.approx(alone["lambda_max"], rel=1e-4)
    assert shared["top_eigenvalues"] == pytest.approx(alone["top_eigenvalues"], rel=1e-3)
    assert shared["trace"] == pytest.approx(alone["trace"], rel=1e-4)


def test_a_purified_run_is_analysed_on_its_models_clean_training_images(make_config, trained, tmp_path):
    purify(make_config("purify", [f"checkpoint={trained}", "defense=ft", "seed=5"]), tmp_path / "purified")
    result = analyze(make_config("analyze", ["checkpoint=" + str(tmp_path / "purified"), *SMALL, "analysis.esd=false"]),
                     tmp_path / "analysis")
    assert result["checkpoint"].endswith("purified/model.safetensors") and math.isfinite(result["lambda_max"])
    run = runs.read_run(tmp_path / "purified")
    assert run["config"]["seed"] == 5 and model_seed(run) == 0  # the poisoned images are the trained model's (seed 0)
    [row] = collect_curvature_runs(tmp_path)  # the premise table's line for it
    metrics = json.loads((tmp_path / "purified" / "metrics.json").read_text())
    assert (row["attack"], row["model"], row["ACC"], row["lambda_max"]) == ("badnets", "after ft", metrics["after"]["acc"], result["lambda_max"])
    assert "| after ft |" in curvature_table([row], fmt="markdown")


@pytest.mark.parametrize("override, message", [
    ("analysis.curvature=laplacian", "analysis.curvature must be one of hessian, ggn, fisher"),
    ("analysis.trace=exact", "analysis.trace must be one of hutchinson, hutch"),
    ("analysis.data=poisoned", "analysis.data must be one of train_clean, pool, test"),
    ("analysis.samples=100000", "analysis.samples must be in"),
    ("trainer=gpu", "needs a GPU"),
])
def test_bad_analysis_settings_stop_with_one_sentence(make_config, trained, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        analyze(make_config("analyze", [f"checkpoint={trained}", *SMALL, override]), tmp_path / "analysis")


def read_curve(run_dir) -> list[dict]:
    with open(run_dir / "curvature.csv") as f:
        return list(csv.DictReader(f))


def test_curvature_curves_during_training_and_purification(make_config, tmp_path):
    out = tmp_path / "trained"
    train_backdoor(make_config("train", ["training.epochs=2", "curvature_every_epochs=1", *SMALL]), out)
    rows = read_curve(out)
    assert [int(r["epoch"]) for r in rows] == [0, 0, 1] and int(rows[0]["step"]) == 0  # the start, then after each epoch
    assert int(rows[2]["step"]) > int(rows[1]["step"]) > 0
    assert all(float(r["lambda_max"]) != 0 and float(r["trace"]) != 0 for r in rows)
    assert (out / "curvature.png").read_bytes()[:4] == b"\x89PNG"
    purified = tmp_path / "purified"
    purify(make_config("purify", [f"checkpoint={out}", "defense=ft", "defense.steps=4", "curvature_every_steps=2", *SMALL]), purified)
    rows = read_curve(purified)
    assert [int(r["step"]) for r in rows] == [0, 2, 4]
    start = analyze(make_config("analyze", [f"checkpoint={out}", *SMALL, "analysis.esd=false"]), tmp_path / "analysis")
    assert float(rows[0]["lambda_max"]) == pytest.approx(start["lambda_max"], rel=1e-5)  # the curve starts at the model's curvature


def test_negative_curvature_periods_are_refused(make_config, tmp_path):
    with pytest.raises(ConfigError, match="curvature_every_epochs and curvature_every_steps must be >= 0"):
        train_backdoor(make_config("train", ["curvature_every_epochs=-1"]), tmp_path / "t")


def test_the_curvature_table_tells_an_ablation_from_its_method():
    from backdoorlab.reporting.collect import purified_label

    assert purified_label("fip", {"eta_f": 0.01}) == "after fip"
    assert purified_label("fip", {"eta_f": 0.0}) == "after fip (eta_f=0)"
    assert purified_label("nft", {"mixup": False}) == "after nft (no MixUp)"
    assert purified_label("nft", {"mixup": True}) == "after nft" and purified_label("ft", {}) == "after ft"


def test_the_curvature_table_names_adaptive_and_all2all_models_as_the_attack_tables_do(tmp_path):
    """A SAM-trained all2all model's line must not read as the plain attack's (the two are far apart in curvature)."""
    model, analysis = tmp_path / "model", tmp_path / "analysis"
    model.mkdir(), analysis.mkdir()
    runs.write_json(model / runs.RUN_FILE, {"format": runs.FORMAT, "kind": "train", "attack_name": "badnets", "config": {
        "dataset": {"name": "digits"}, "seed": 3, "attack": {"label_mode": "all2all"},
        "adaptive": {"_target_": "backdoorlab.adaptive.sam.SAMTraining", "rho": 3.0}}})
    runs.write_json(model / runs.METRICS_FILE, {"acc": 90.0, "asr": 95.0})
    runs.write_json(analysis / "curvature.json", {
        "checkpoint": str(model / "model.safetensors"), "lambda_max": 2.0, "trace": 5.0, "samples": 8})
    [row] = collect_curvature_runs(analysis)
    assert (row["attack"], row["model"], row["seed"], row["ASR"]) == ("badnets all2all + sam", "trained", 3, 95.0)
