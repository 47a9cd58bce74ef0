"""Sweeps that resume: a re-run multirun skips its finished jobs and runs only the missing ones."""

import json
import shutil
import subprocess
import sys

from backdoorlab.finished_jobs import JOB_FILE


def sweep(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "backdoorlab.purify", "-m", "debug=fast", "logger=none", "defense=ft", "seed=0,1",
           f"paths.root_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_a_rerun_sweep_skips_finished_jobs_reruns_deleted_ones_and_refuses_a_changed_config(tmp_path):
    first = sweep(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0-digits-badnets-ft-seed0", "1-digits-badnets-ft-seed1"]
    assert all(json.loads((p / JOB_FILE).read_text())["settings"]["defense.steps"] == 3 for p in jobs)
    written = {p: (p / "metrics.json").stat().st_mtime_ns for p in jobs}
    results = {p: json.loads((p / "metrics.json").read_text())["after"] for p in jobs}

    again = sweep(tmp_path)
    assert again.returncode == 0 and again.stdout.count("holds a finished run of this config: skipped") == 2
    assert {p: (p / "metrics.json").stat().st_mtime_ns for p in jobs} == written  # nothing ran, nothing rewritten

    shutil.rmtree(jobs[1])
    (jobs[0] / "model.safetensors").unlink()  # an incomplete run (as a crash leaves it) runs again too
    partial = sweep(tmp_path)
    assert partial.returncode == 0 and "skipped" not in partial.stdout
    assert all((p / JOB_FILE).is_file() for p in jobs)
    assert {p: json.loads((p / "metrics.json").read_text())["after"] for p in jobs} == results  # same seeds, same result

    changed = sweep(tmp_path, "defense.steps=4")
    assert changed.returncode == 2
    assert "holds a finished run of another config (defense.steps: 3 there, 4 here)" in changed.stderr
