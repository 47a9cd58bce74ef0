"""The benchmark scripts run (on a tiny shape) and print what they promise; their timings are not tested."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, args: list[str], capsys, monkeypatch) -> str:
    """Runs a benchmark script in this process (no second start-up of torch and Lightning) at this
    process's thread count, so that the tests after it keep theirs; returns what it printed."""
    monkeypatch.setattr(sys, "argv", [script, *args, "--threads", str(torch.get_num_threads())])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the scripts put src/ and scripts/ first
    capsys.readouterr()
    runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
    return capsys.readouterr().out


def test_defense_step_benchmark_prints_every_defense_with_its_ratio_to_fine_tuning(capsys, monkeypatch):
    out = run_benchmark("bench_defense_step.py", ["--width", "8", "--image-size", "8", "--batch", "4", "--steps", "1",
                                                  "--warmup", "0", "--channels-last"], capsys, monkeypatch).splitlines()
    assert out[0].startswith(f"cpu, {torch.get_num_threads()} threads, batch 4 of 8x8, width 8, channels_last")
    rows = {line.rsplit(None, 2)[0].strip(): line.split() for line in out[3:]}
    assert set(rows) == {"ft", "fip eta_f=0 (ablation)", "fip", "fip suppressor_every=5", "fip suppressor_every=2",
                         "fip suppressor_batch=batch/4", "fast_fip suppressor_every=5", "nft", "anp"} and rows["ft"][-1] == "1.00"
    assert all(float(cols[-2]) > 0 for cols in rows.values())


def run_training_benchmark(modes, capsys, monkeypatch):
    out = run_benchmark("bench_train.py", ["--experiment", "demo", "--width", "8", "--batch", "16", "--steps", "2", "--warmup", "1",
                                           "--repeats", "1", "--defense-batch", "8", "--defense-steps", "1",
                                           "--modes", ",".join(modes), "--override", "debug=fast"], capsys, monkeypatch)
    table = out[out.index(f"cpu, {torch.get_num_threads()} threads, demo: width 8, batch 16"):].splitlines()
    rows = [line.split() for line in table[3:3 + len(modes)]]
    assert [row[0] for row in rows] == modes and rows[0][-1] == "1.00"
    assert all(float(v) > 0 for row in rows for v in row[1:])
    steps = out[out.index("one purification step"):].splitlines()
    assert steps[1].split()[1:] == ["fp32", "bf16_cl"]  # purification runs eager: no compiled column
    assert [line.split()[0] for line in steps[3:7]] == ["ft", "fip", "nft", "anp"]


def test_training_benchmark_prints_the_framework_against_the_plain_loop_per_mode(capsys, monkeypatch):
    run_training_benchmark(["fp32", "bf16_cl"], capsys, monkeypatch)


@pytest.mark.slow  # torch.compile's first compilation takes half a minute on two cores
def test_training_benchmark_prints_the_compiled_modes(capsys, monkeypatch):
    run_training_benchmark(["fp32", "bf16_cl", "bf16_cl_compile"], capsys, monkeypatch)


def test_fip_terms_script_reports_each_third_of_a_run(tmp_path):
    run = tmp_path / "fip-run"
    (run / "csv").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"config": {"defense": {"eta_f": 0.1, "eta_r": 2.0}}}))
    lines = ["epoch,step,purify/loss,purify/ce,purify/retainer,purify/fisher_trace,purify/suppressor_ratio,purify/suppressor_cosine"]
    traces = [10.0, 30.0, 10.0, 30.0, 5.0, 5.0]
    ratios, cosines = [1.0, 1.0, 0.5, 0.5, 0.25, 0.25], [0.1, 0.1, 0.0, 0.0, -0.1, -0.1]
    lines += [f"0,{i},9,{1.0 - 0.1 * i},{0.5},{t},{r},{c}" for i, (t, r, c) in enumerate(zip(traces, ratios, cosines))]
    lines.insert(3, "0,2,,,,,,")  # a row of other metrics (evaluation) is skipped
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "fip_terms.py"), str(run)],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    first, middle, last = (line.split() for line in out[2:5])
    # first third: CE mean 0.95, eta_r x retainer 1, eta_f x trace 2, trace std/mean 0.5, share 2 / 3.95
    assert first[-8:] == ["2", "0.95", "1", "2", "0.5", "0.506", "1", "0.1"]
    assert middle[-6:] == ["1", "2", "0.5", "0.533", "0.5", "0"] and last[-5:] == ["0.5", "0", "0.244", "0.25", "-0.1"]
