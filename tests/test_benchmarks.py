"""The benchmark scripts run (on a tiny shape) and print what they promise; their timings are not tested."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_defense_step_benchmark_prints_every_defense_with_its_ratio_to_fine_tuning():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_defense_step.py"), "--width", "8", "--image-size", "8",
                          "--batch", "4", "--steps", "1", "--warmup", "0", "--threads", "1", "--channels-last"],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out[0].startswith("cpu, 1 threads, batch 4 of 8x8, width 8, channels_last")
    rows = {line.rsplit(None, 2)[0].strip(): line.split() for line in out[3:]}
    assert set(rows) == {"ft", "fip eta_f=0 (ablation)", "fip", "fip suppressor_every=5", "fip suppressor_every=2",
                         "fip suppressor_batch=batch/4"} and rows["ft"][-1] == "1.00"
    assert all(float(cols[-2]) > 0 for cols in rows.values())
