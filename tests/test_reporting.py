"""Tables over purification runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backdoorlab import runs
from backdoorlab.reporting.collect import collect_purification_runs, results_table, summary_table, trajectory_table
from backdoorlab.reporting.table import format_table

ROOT = Path(__file__).resolve().parents[1]


def fake_run(folder: Path, attack: str, seed: int, defense: str, after_asr: float, **settings) -> None:
    folder.mkdir(parents=True)
    config = {"attack": {"target_label": 3, "position": "top_left"} if attack == "badnets" else {"target_label": 1},
              "seed": seed, "defense": {"eta_f": 0.1, "lr": 0.03, "steps": 600, **settings}, "dataset": {"name": "digits"}}
    runs.write_json(folder / runs.RUN_FILE, {"format": runs.FORMAT, "kind": "purify", "attack_name": attack, "config": config})
    runs.write_json(folder / runs.METRICS_FILE, {"before": {"acc": 99.0, "asr": 100.0}, "after": {"acc": 98.5, "asr": after_asr},
                                                 "runtime_s": 12.5, "defense": defense})


def test_collect_and_format(tmp_path):
    fake_run(tmp_path / "b" / "1-digits-blend-fip-seed2", "blend", 2, "fip", 0.5)
    fake_run(tmp_path / "a" / "0-digits-badnets-ft-seed1", "badnets", 1, "ft", 40.0)
    (tmp_path / "train_run").mkdir()
    runs.write_json(tmp_path / "train_run" / runs.RUN_FILE, {"format": runs.FORMAT, "kind": "train"})
    runs.write_json(tmp_path / "train_run" / runs.METRICS_FILE, {"acc": 99.0, "asr": 100.0})
    rows = collect_purification_runs(tmp_path)
    assert [(r["attack"], r["seed"], r["defense"], r["position"]) for r in rows] == [
        ("badnets", 1, "ft", "top_left"), ("blend", 2, "fip", "-")]
    assert rows[1]["settings"] == "eta_f=0.1 lr=0.03 steps=600" and rows[1]["ASR after"] == 0.5
    text = results_table(rows)
    assert "badnets" in text.splitlines()[2] and "40.00" in text
    md = results_table(rows, fmt="markdown").splitlines()
    assert md[0].startswith("| attack |") and md[3].endswith("| 0.5 | 12.5 |")


def test_purification_seed_column_appears_for_runs_purified_with_another_seed(tmp_path):
    fake_run(tmp_path / "a", "blend", 1, "fip", 0.5)
    assert "purification seed" not in results_table(collect_purification_runs(tmp_path))
    fake_run(tmp_path / "b", "blend", 1, "fip", 2.5)
    run = json.loads((tmp_path / "b" / runs.RUN_FILE).read_text())
    run["config"]["purification_seed"] = 7
    runs.write_json(tmp_path / "b" / runs.RUN_FILE, run)
    rows = collect_purification_runs(tmp_path)
    header = results_table(rows).splitlines()[0].split()
    assert header[3:6] == ["seed", "purification", "seed"] and [r["purification seed"] for r in rows] == [1, 7]
    assert "2 of 2" in summary_table(rows)  # both runs of the same setting count in one summary line


def test_settings_at_their_off_value_are_not_shown(tmp_path):
    fake_run(tmp_path / "off", "blend", 1, "fip", 0.5, average_fraction=0.0)
    fake_run(tmp_path / "on", "blend", 2, "fip", 0.5, average_fraction=0.3)
    assert [r["settings"] for r in collect_purification_runs(tmp_path)] == [
        "eta_f=0.1 lr=0.03 steps=600", "eta_f=0.1 lr=0.03 steps=600 average_fraction=0.3"]
    fake_run(tmp_path / "every1", "blend", 3, "fip", 0.5, suppressor_every=1, suppressor_batch=None)
    fake_run(tmp_path / "every5", "blend", 4, "fip", 0.5, suppressor_every=5, suppressor_batch=16)
    assert [r["settings"] for r in collect_purification_runs(tmp_path)][2:] == [
        "eta_f=0.1 lr=0.03 steps=600", "eta_f=0.1 lr=0.03 steps=600 suppressor_every=5 suppressor_batch=16"]
    fake_run(tmp_path / "ablation", "blend", 5, "fip", 0.5, eta_f=0.0, suppressor_every=5)  # no suppressor to thin out
    assert collect_purification_runs(tmp_path)[-1]["settings"] == "eta_f=0.0 lr=0.03 steps=600"
    fake_run(tmp_path / "bn", "blend", 6, "fip", 0.5, train_mode=False, decay_fraction=1.0)
    fake_run(tmp_path / "bn_default", "blend", 7, "fip", 0.5, train_mode=True, decay_fraction=0.3)
    assert [r["settings"] for r in collect_purification_runs(tmp_path)][-2:] == [
        "eta_f=0.1 lr=0.03 steps=600 decay_fraction=1.0 train_mode=False", "eta_f=0.1 lr=0.03 steps=600"]
    fake_run(tmp_path / "relative", "blend", 8, "fip", 0.5, suppressor_scale="relative", probes=4)
    fake_run(tmp_path / "absolute", "blend", 9, "fip", 0.5, suppressor_scale="absolute", probes=1)
    assert [r["settings"] for r in collect_purification_runs(tmp_path)][-2:] == [
        "eta_f=0.1 lr=0.03 steps=600 suppressor_scale=relative probes=4", "eta_f=0.1 lr=0.03 steps=600"]
    fake_run(tmp_path / "epochs", "blend", 10, "ft", 0.5, eta_f=None, epochs=100)  # epochs replace steps
    assert collect_purification_runs(tmp_path)[-1]["settings"] == "lr=0.03 epochs=100"


def test_the_report_refreshes_a_block_of_a_page(tmp_path):
    fake_run(tmp_path / "runs" / "x", "blend", 0, "fip", 1.0)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\noutro\n")
    subprocess.run([sys.executable, "-m", "backdoorlab.report", str(tmp_path / "runs"), "--page", str(readme), "--view", "runs"],
                   check=True, capture_output=True)
    text = readme.read_text()
    assert "old" not in text and "| blend | 1 | - | 0 | fip |" in text and text.endswith("<!-- results:end -->\noutro\n")
    subprocess.run([sys.executable, "-m", "backdoorlab.report", str(tmp_path / "runs"), "--page", str(readme),
                    "--view", "summary"], check=True, capture_output=True)
    text = readme.read_text()
    assert "| blend | 1 |" not in text and "| fip | eta_f=0.1 lr=0.03 steps=600 | 1 | 1 of 1 |" in text
    assert f"--page {readme} --block results --view summary -->" in text and text.startswith("intro\n") and text.endswith("outro\n")


def fake_model(folder: Path, dataset: str, attack: str, acc: float, label_mode: str = "all2one",
               adaptive: dict | None = None) -> None:
    folder.mkdir(parents=True)
    config = {"dataset": {"name": dataset}, "model": {"width": 16}, "training": {}, "seed": 7, "adaptive": adaptive,
              "attack": {"target_label": 2, "pattern": "white", "position": "top_left", "label_mode": label_mode}}
    runs.write_json(folder / runs.RUN_FILE, {"format": runs.FORMAT, "kind": "train", "attack_name": attack, "config": config})
    runs.write_json(folder / runs.METRICS_FILE, {"acc": acc, "asr": 96.5, "train_runtime_s": 880.0, "epochs": 15})


def test_the_report_lists_the_trained_models_of_one_dataset(tmp_path):
    fake_model(tmp_path / "models" / "c", "cifar10_jpeg", "badnets", 84.25)
    fake_model(tmp_path / "models" / "d", "digits", "badnets", 99.0)
    fake_run(tmp_path / "models" / "p", "blend", 0, "fip", 1.0)  # a purification run is not a model
    page = tmp_path / "page.md"
    page.write_text("<!-- models:start -->\n<!-- models:end -->\n")
    subprocess.run([sys.executable, "-m", "backdoorlab.report", str(tmp_path / "models"), "--view", "models",
                    "--dataset", "cifar10_jpeg", "--page", str(page), "--block", "models"], check=True, capture_output=True)
    text = page.read_text()
    # a run from before run.json recorded its numerics and metrics.json the threads: fp32, threads unknown
    assert "| cifar10_jpeg | badnets | white | 2 | top_left | 7 | 16 | 15 | fp32 | 84.2 | 96.5 | 880.0 | - | - |" in text
    assert "digits" not in text and "--view models --dataset cifar10_jpeg -->" in text
    fake_model(tmp_path / "models" / "e", "cifar10_jpeg", "badnets", 83.0, label_mode="all2all")
    fake_model(tmp_path / "models" / "f", "cifar10_jpeg", "badnets", 82.0, adaptive={"_target_": "backdoorlab.adaptive.sam.SAMTraining"})
    subprocess.run([sys.executable, "-m", "backdoorlab.report", str(tmp_path / "models"), "--view", "models",
                    "--dataset", "cifar10_jpeg", "--page", str(page), "--block", "models"], check=True, capture_output=True)
    lines = [line for line in page.read_text().splitlines() if line.startswith("| cifar10_jpeg |")]
    # models of one attack trained all2all or with an adaptive attack are named apart, as in the attack tables
    assert [line.split(" | ")[1] for line in lines] == ["badnets", "badnets + sam", "badnets all2all"]
    missing = subprocess.run([sys.executable, "-m", "backdoorlab.report", str(tmp_path / "models"), "--view", "runs",
                              "--dataset", "gtsrb"], capture_output=True, text=True)
    assert missing.returncode != 0 and "no purification runs below" in missing.stderr and "on gtsrb" in missing.stderr


def test_the_models_table_names_the_numerics_a_model_was_trained_with():
    from backdoorlab.reporting.collect import numerics_label

    assert numerics_label({}) == "fp32"
    assert numerics_label({"numerics": {"precision": "bf16-mixed", "channels_last": True, "compile": True}}) == "bf16 cl compiled"
    assert numerics_label({"numerics": {"precision": "32-true", "channels_last": False, "compile": True}}) == "fp32 compiled"


def test_format_table_aligns_numbers_right():
    lines = format_table(["name", "x"], [["a", 1.5], ["bb", 10.25]]).splitlines()
    assert lines[2] == "a      1.50" and lines[3] == "bb    10.25"


def test_summary_counts_runs_meeting_the_target(tmp_path):
    for seed, asr in enumerate([0.5, 2.9, 3.5]):  # ACC drop 0.5 in every run
        fake_run(tmp_path / f"fip{seed}", "blend", seed, "fip", asr)
    fake_run(tmp_path / "ft", "blend", 0, "ft", 40.0)
    lines = summary_table(collect_purification_runs(tmp_path), max_asr=3.0, max_acc_drop=2.0).splitlines()
    fip = next(line for line in lines if line.startswith("fip"))
    assert "2 of 3" in fip and fip.split()[-4:] == ["0.50", "0.50", "2.30", "3.50"]
    assert "0 of 1" in next(line for line in lines if line.startswith("ft"))
    assert "0 of 3" in summary_table(collect_purification_runs(tmp_path), max_asr=3.0, max_acc_drop=0.4)


def test_runtime_table_gives_each_defense_s_time_as_a_ratio_to_fine_tuning_on_the_same_model(tmp_path):
    from backdoorlab.reporting.collect import runtime_table

    for seed, ft_s, fip_s in ((1, 10.0, 30.0), (2, 20.0, 20.0)):
        fake_run(tmp_path / f"ft{seed}", "blend", seed, "ft", 1.0)
        fake_run(tmp_path / f"fip{seed}", "blend", seed, "fip", 1.0)
        for name, seconds in ((f"ft{seed}", ft_s), (f"fip{seed}", fip_s)):
            metrics = json.loads((tmp_path / name / runs.METRICS_FILE).read_text())
            runs.write_json(tmp_path / name / runs.METRICS_FILE, {**metrics, "runtime_s": seconds})
    fake_run(tmp_path / "lonely", "badnets", 9, "fip", 1.0)  # no fine-tuning on this model: time only
    lines = runtime_table(collect_purification_runs(tmp_path), fmt="markdown").splitlines()
    assert "| fip | eta_f=0.1 lr=0.03 steps=600 | 3 | 20.8 | 2.0 | 3.0 |" in lines  # (30 + 20 + 12.5) / 3; ratios 3 and 1
    assert "| ft | eta_f=0.1 lr=0.03 steps=600 | 2 | 15.0 | 1.0 | 1.0 |" in lines
    fake_run(tmp_path / "ft_other_lr", "blend", 1, "ft", 1.0, lr=0.01)  # a fine-tuning run on another budget
    metrics = json.loads((tmp_path / "ft_other_lr" / runs.METRICS_FILE).read_text())
    runs.write_json(tmp_path / "ft_other_lr" / runs.METRICS_FILE, {**metrics, "runtime_s": 1.0})
    lines = runtime_table(collect_purification_runs(tmp_path), fmt="markdown").splitlines()
    assert "| fip | eta_f=0.1 lr=0.03 steps=600 | 3 | 20.8 | 2.0 | 3.0 |" in lines  # still against lr 0.03's
    assert "| ft | eta_f=0.1 lr=0.01 steps=600 | 1 | 1.0 | 1.0 | 1.0 |" in lines


def test_defense_seconds_leave_out_the_curvature_measured_along_the_run(tmp_path):
    fake_run(tmp_path / "fip", "blend", 1, "fip", 1.0)  # runtime_s 12.5
    (tmp_path / "fip" / "curvature.csv").write_text("epoch,step,lambda_max,trace,trace_std_error,seconds\n"
                                                      "0,0,1.0,2.0,0.1,3.0\n0,100,1.0,2.0,0.1,4.5\n")
    fake_run(tmp_path / "ft", "blend", 1, "ft", 1.0)
    seconds = {r["defense"]: r["defense s"] for r in collect_purification_runs(tmp_path)}
    assert seconds == {"fip": pytest.approx(5.0), "ft": pytest.approx(12.5)}


def test_ablation_table_pairs_each_method_with_its_ablation_on_the_same_model_and_budget(tmp_path):
    from backdoorlab.reporting.collect import ablation_table

    fake_run(tmp_path / "fip1", "blend", 1, "fip", 2.0)  # ACC 99.0 -> 98.5 on every fake run
    fake_run(tmp_path / "abl1", "blend", 1, "fip", 9.0, eta_f=0.0)  # ASR above 5: FIP is the better
    fake_run(tmp_path / "fip2", "blend", 2, "fip", 4.0)
    fake_run(tmp_path / "abl2", "blend", 2, "fip", 1.0, eta_f=0.0)  # both below 5: the higher DER wins
    fake_run(tmp_path / "abl2_other_lr", "blend", 2, "fip", 0.0, eta_f=0.0, lr=0.01)  # another budget: not its pair
    fake_run(tmp_path / "nft", "blend", 1, "nft", 3.0)
    fake_run(tmp_path / "nft_no_mixup", "blend", 1, "nft", 3.0, mixup=False)
    fake_run(tmp_path / "lonely", "badnets", 9, "fip", 1.0)  # no ablation on this model
    lines = ablation_table(collect_purification_runs(tmp_path), max_asr=5.0, fmt="markdown").splitlines()
    assert "| blend | 1 | - | 1 | fip | 98.5 / 2.0 | 98.5 / 9.0 | 98.8 | 95.2 | method | yes |" in lines  # DER (0.98 - 0.005 + 1) / 2
    assert "| blend | 1 | - | 2 | fip | 98.5 / 4.0 | 98.5 / 1.0 | 97.8 | 99.2 | ablation | no |" in lines
    assert "| blend | 1 | - | 1 | nft | 98.5 / 3.0 | 98.5 / 3.0 | 98.2 | 98.2 | tie | no |" in lines  # same ASR: no dominance
    assert len([line for line in lines if line.startswith("| ")]) == 4  # header and three pairs
    assert ("fip better than its ablation on 1 of 2 models (ablation better on 1, ties 0; ASR <= 5 first, then DER); "
            "dominates it on 1 of 2 (lower ASR at no lower ACC, or >= 1 point more ACC at ASR <= 5)") in lines
    assert lines[-1].startswith("nft better than its ablation on 0 of 1 models (ablation better on 0, ties 1;")


def _set_after(run: Path, acc: float, asr: float) -> None:
    metrics = json.loads((run / runs.METRICS_FILE).read_text())
    metrics["after"] = {"acc": acc, "asr": asr}
    runs.write_json(run / runs.METRICS_FILE, metrics)


def test_ablation_tables_dominance_is_a_lower_asr_at_no_lower_acc_or_a_point_more_acc_once_purified(tmp_path):
    from backdoorlab.reporting.collect import ablation_table

    cases = {1: ((80.0, 2.0), (80.0, 3.0), "yes"),   # lower ASR, same ACC
             2: ((79.9, 2.0), (80.0, 3.0), "no"),    # lower ASR but less ACC
             3: ((81.0, 4.0), (80.0, 1.0), "yes"),   # a point more ACC at ASR <= 5
             4: ((80.9, 4.0), (80.0, 1.0), "no"),    # less than a point more
             5: ((85.0, 6.0), (80.0, 1.0), "no")}    # more ACC, but not purified
    for seed, (method, ablation, _) in cases.items():
        fake_run(tmp_path / f"fip{seed}", "blend", seed, "fip", 0.0)
        fake_run(tmp_path / f"abl{seed}", "blend", seed, "fip", 0.0, eta_f=0.0)
        _set_after(tmp_path / f"fip{seed}", *method)
        _set_after(tmp_path / f"abl{seed}", *ablation)
    lines = ablation_table(collect_purification_runs(tmp_path), max_asr=5.0, fmt="markdown").splitlines()
    verdicts = {int(line.split(" | ")[3]): line.split(" | ")[-1].rstrip(" |") for line in lines if line.startswith("| blend")}
    assert verdicts == {seed: expected for seed, (_, _, expected) in cases.items()}


def test_flatness_table_compares_the_end_of_the_curvature_along_a_method_and_its_ablation(tmp_path):
    from backdoorlab.reporting.collect import flatness_table

    def curvature(folder: Path, lambdas: list[float], traces: list[float]) -> None:
        rows = "".join(f"0,{100 * i},{lam},{tr},1.0,2.0\n" for i, (lam, tr) in enumerate(zip(lambdas, traces)))
        (folder / "curvature.csv").write_text("epoch,step,lambda_max,trace,trace_std_error,seconds\n" + rows)

    fake_run(tmp_path / "fip", "blend", 1, "fip", 1.0)
    fake_run(tmp_path / "abl", "blend", 1, "fip", 1.0, eta_f=0.0)
    curvature(tmp_path / "fip", [10, 50, 4, 6], [100, 500, 40, 60])  # the end (last 2): 5 +- 1.4 and 50 +- 14
    curvature(tmp_path / "abl", [10, 1, 7, 9], [100, 10, 70, 90])
    fake_run(tmp_path / "fip2", "blend", 2, "fip", 1.0)  # its ablation recorded no curvature: no line
    fake_run(tmp_path / "abl2", "blend", 2, "fip", 1.0, eta_f=0.0)
    curvature(tmp_path / "fip2", [1, 2], [3, 4])
    rows = collect_purification_runs(tmp_path)
    assert {r["run"]: r["defense s"] for r in rows}["fip"] == 12.5 - 8.0  # curvature seconds left out
    lines = flatness_table(rows, last=2, fmt="markdown").splitlines()
    assert lines[2:] == ["| blend | 1 | - | 1 | fip | 10 | 5 +- 1.4 | 8 +- 1.4 | 100 | 50 +- 14 | 80 +- 14 | method |"]
    curvature(tmp_path / "abl", [10, 1, 4, 4], [100, 10, 70, 90])  # lambda_max lower, trace higher
    assert flatness_table(collect_purification_runs(tmp_path), last=2, fmt="markdown").splitlines()[2].endswith("| mixed |")


def test_trajectory_table_lines_up_the_evaluated_steps_of_each_run(tmp_path):
    fake_run(tmp_path / "plain", "blend", 1, "fip", 0.5)  # no eval_every: not in the table
    fake_run(tmp_path / "traj", "blend", 2, "ft", 4.0)
    metrics = json.loads((tmp_path / "traj" / runs.METRICS_FILE).read_text())
    metrics["trajectory"] = [{"step": 100, "acc": 70.0, "asr": 20.0}, {"step": 200, "acc": 75.25, "asr": 5.0}]
    runs.write_json(tmp_path / "traj" / runs.METRICS_FILE, metrics)
    table = trajectory_table(collect_purification_runs(tmp_path), fmt="markdown")
    header, _, line = table.splitlines()
    assert header.split(" | ")[-4:] == ["before", "step 100", "step 200", "after |"]
    assert line.endswith("| 99.0 / 100.0 | 70.0 / 20.0 | 75.2 / 5.0 | 98.5 / 4.0 |") and "| 2 | ft |" in line


def test_benchmark_table_gives_each_defense_s_time_as_a_ratio_to_fip_s_on_the_same_model(tmp_path):
    from backdoorlab.reporting.collect import benchmark_table

    def run(name, seed, defense, seconds, asr, **settings):
        fake_run(tmp_path / name, "blend", seed, defense, asr, **settings)
        metrics = json.loads((tmp_path / name / runs.METRICS_FILE).read_text())
        runs.write_json(tmp_path / name / runs.METRICS_FILE, {**metrics, "runtime_s": seconds, "peak_memory_mb": 100.0 * seed,
                                                              "trainable_parameters": 50})

    for seed, fip_s in ((1, 10.0), (2, 40.0)):
        run(f"fip{seed}", seed, "fip", fip_s, 1.0)
        run(f"ablation{seed}", seed, "fip", fip_s / 2, 3.0, eta_f=0.0)  # the ablation is no reference
        run(f"paper{seed}", seed, "fip", 1.0, 3.0, retainer="fisher")  # nor is fip_paper
        run(f"nft{seed}", seed, "nft", 20.0, 5.0, mixup=False)
    lines = benchmark_table(collect_purification_runs(tmp_path), fmt="markdown").splitlines()
    # ACC 99 -> 98.5 in every run; nft's ratios 20 / 10 and 20 / 40; peak memory 100 and 200
    assert "| nft | eta_f=0.1 lr=0.03 steps=600 mixup=False | 2 | 98.5 | 0.5 | 5.0 | 5.0 | 20.0 | 1.2 | 150.0 | 50 |" in lines
    assert "| fip | eta_f=0.1 lr=0.03 steps=600 | 2 | 98.5 | 0.5 | 1.0 | 1.0 | 25.0 | 1.0 | 150.0 | 50 |" in lines
    assert "| fip | eta_f=0.0 lr=0.03 steps=600 | 2 | 98.5 | 0.5 | 3.0 | 3.0 | 12.5 | 0.5 | 150.0 | 50 |" in lines


FAKE_PYTHON = """\
import pathlib, sys
args = sys.argv[1:]
with open(sys.argv[0] + ".calls", "a") as calls:
    calls.write(" ".join(args) + "\\n")
if args[:2] == ["-m", "backdoorlab.purify"]:
    if "defense=broken" in args:
        sys.exit(3)
    sweep = next(a.split("=", 1)[1] for a in args if a.startswith("hydra.sweep.dir="))
    pathlib.Path(sweep, "0").mkdir(parents=True, exist_ok=True)
"""


def test_the_purification_study_resumes_where_it_stopped(tmp_path):
    fake = tmp_path / "fake_python.py"
    fake.write_text(FAKE_PYTHON)
    settings = tmp_path / "settings.txt"
    settings.write_text("# attack seed target position\nbadnets 3 1 top_left\nblend 4 2 -\n")
    out = tmp_path / "study"
    env = {**os.environ, "PY": f"{sys.executable} {fake}", "SETTINGS": str(settings)}

    def study(defenses: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / "scripts" / "purification_study.sh"), str(out), "budget=authors"], text=True,
                              capture_output=True, env={**env, "DEFENSES": defenses})

    calls_file = tmp_path / "fake_python.py.calls"

    def purify_calls() -> list[str]:
        """The purify commands since the last call."""
        lines = calls_file.read_text().splitlines() if calls_file.exists() else []
        calls_file.unlink(missing_ok=True)
        return [line for line in lines if "backdoorlab.purify" in line]

    failed = study("ft,broken,fip")
    assert failed.returncode != 0 and "failed: badnets 3 1 top_left broken" in failed.stdout
    calls = purify_calls()
    assert len(calls) == 2 and "defense=ft" in calls[0] and "attack.position=top_left" in calls[0] and calls[0].endswith("budget=authors")
    assert (out / "badnets-seed3" / "ft" / ".done").is_file() and not (out / "badnets-seed3" / "broken" / ".done").exists()
    done = study("ft,fip")
    assert done.returncode == 0
    calls = purify_calls()  # ft on badnets was done: fip there, then both on blend
    assert [c.split("defense=")[1].split()[0] for c in calls] == ["fip", "ft", "fip"]
    assert "attack=blend" in calls[1] and "attack.position" not in calls[1]
    assert study("ft,fip").returncode == 0 and purify_calls() == []
    # @SETTING@ in an override names each model's folder (a per-model path, such as its ANP run's masks)
    masked = subprocess.run([str(ROOT / "scripts" / "purification_study.sh"), str(tmp_path / "pruned"), "defense.masks=anp/@SETTING@/x"],
                            text=True, capture_output=True, env={**env, "DEFENSES": "prune_masks"})
    assert masked.returncode == 0
    assert [c.rsplit(" ", 1)[1] for c in purify_calls()] == ["defense.masks=anp/badnets-seed3/x", "defense.masks=anp/blend-seed4/x"]
    # overrides after the position apply to that model and name its folder
    settings.write_text("trojan 5 0 - attack.label_mode=all2all\n")
    assert study("ft").returncode == 0
    (call,) = purify_calls()
    assert "attack.label_mode=all2all" in call and "attack.position" not in call
    assert (out / "trojan-seed5-all2all" / "ft" / ".done").is_file()


def test_runs_under_the_authors_budget_say_so_in_their_settings(tmp_path):
    fake_run(tmp_path / "shared", "blend", 1, "fip", 0.5)
    fake_run(tmp_path / "authors", "blend", 1, "fip", 0.5)
    run = json.loads((tmp_path / "authors" / runs.RUN_FILE).read_text())
    runs.write_json(tmp_path / "authors" / runs.RUN_FILE, {**run, "config": {**run["config"], "budget": "authors"}})
    assert sorted(r["settings"] for r in collect_purification_runs(tmp_path)) == [
        "budget=authors eta_f=0.1 lr=0.03 steps=600", "eta_f=0.1 lr=0.03 steps=600"]


def test_papers_table_sets_our_means_beside_the_papers_figures(tmp_path):
    from backdoorlab.reporting.collect import papers_table

    fake_run(tmp_path / "nft1", "badnets", 1, "nft", 2.0)
    fake_run(tmp_path / "nft2", "badnets", 2, "nft", 6.0)
    fake_run(tmp_path / "anp", "blend", 1, "anp", 1.0)
    fake_run(tmp_path / "ft", "blend", 1, "ft", 1.0)
    lines = papers_table(collect_purification_runs(tmp_path), fmt="markdown").splitlines()
    # ours: ACC 99 -> 98.5; NFT Table 1 BadNets 92.96 -> 90.82 at ASR 1.74; both papers ran ANP on Blend
    assert "| badnets | nft | eta_f=0.1 lr=0.03 steps=600 | 2 | 99.0 | 98.5 | 0.5 | 4.0 | 6.0 | NFT Table 1: 2.1 / 1.74 |" in lines
    assert any(line.startswith("| blend | anp |") and line.endswith("| NFT Table 1: 6.5 / 4.77; FIP Table 6: 6.5 / 5.77 |")
               for line in lines)
    assert any(line.startswith("| blend | ft |") and line.endswith("| - |") for line in lines)  # the papers did not run it
    fake_run(tmp_path / "fip", "blend", 1, "fip", 1.0)
    fake_run(tmp_path / "ablation", "blend", 1, "fip", 1.0, eta_f=0.0)
    lines = papers_table(collect_purification_runs(tmp_path), fmt="markdown").splitlines()
    assert any(line.startswith("| blend | fip | eta_f=0.1") and line.endswith("| FIP Table 6: 1.9 / 0.38 |") for line in lines)
    assert any(line.startswith("| blend | fip | eta_f=0.0") and line.endswith("| - |") for line in lines)
    fake_run(tmp_path / "nft_no_mixup", "badnets", 1, "nft", 1.0, mixup=False)
    lines = papers_table(collect_purification_runs(tmp_path), fmt="markdown").splitlines()
    assert any(line.startswith("| badnets | nft |") and "mixup=False" in line and line.endswith("| - |") for line in lines)


def test_attack_table_has_one_line_per_attack_and_label_mode_and_one_asr_acc_cell_per_defense(tmp_path):
    from backdoorlab.reporting.collect import attack_table

    fake_run(tmp_path / "b1", "blend", 1, "fip", 2.0)
    fake_run(tmp_path / "b2", "blend", 2, "fip", 4.0)
    fake_run(tmp_path / "b3", "blend", 1, "ft", 10.0)
    fake_run(tmp_path / "t1", "trojan", 1, "fip", 1.0)
    fake_run(tmp_path / "t2", "trojan", 1, "fip", 7.0)
    run = json.loads((tmp_path / "t2" / runs.RUN_FILE).read_text())
    run["config"]["attack"]["label_mode"] = "all2all"
    runs.write_json(tmp_path / "t2" / runs.RUN_FILE, run)
    lines = attack_table(collect_purification_runs(tmp_path), fmt="markdown").splitlines()
    assert lines[0] == "| attack | models | no defense | fip eta_f=0.1 lr=0.03 steps=600 | ft eta_f=0.1 lr=0.03 steps=600 |"
    assert lines[2] == "| blend | 2 | 100.0 / 99.0 | 3.0 / 98.5 | 10.0 / 98.5 |"  # fip: the mean over the two models
    assert lines[3] == "| trojan | 1 | 100.0 / 99.0 | 1.0 / 98.5 | - |"
    assert lines[4] == "| trojan all2all | 1 | 100.0 / 99.0 | 7.0 / 98.5 | - |"
    fake_run(tmp_path / "s1", "blend", 1, "fip", 5.0)  # the same model trained with adaptive SAM: a line of its own
    run = json.loads((tmp_path / "s1" / runs.RUN_FILE).read_text())
    run["config"]["adaptive"] = {"_target_": "backdoorlab.adaptive.sam.SAMTraining", "rho": 3.0, "asam": True}
    runs.write_json(tmp_path / "s1" / runs.RUN_FILE, run)
    lines = attack_table(collect_purification_runs(tmp_path), fmt="markdown").splitlines()
    assert "| blend + sam | 1 | 100.0 / 99.0 | 5.0 / 98.5 | - |" in lines and lines[2].startswith("| blend | 2 |")
