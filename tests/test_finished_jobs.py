"""Sweeps that resume: a re-run multirun skips its finished jobs and runs only the missing ones."""

import json
import shutil
import subprocess
import sys

import pytest

from backdoorlab.finished_jobs import JOB_FILE


def sweep(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "backdoorlab.purify", "-m", "debug=fast", "logger=none", "defense=ft", "seed=0,1",
           f"paths.root_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def result_writer(out, calls: list):
    """A job that writes ``{"after": 1}`` into ``out/result.json``, counting its calls in ``calls``."""
    def job():
        calls.append(1)
        out.mkdir(exist_ok=True)
        (out / "result.json").write_text(json.dumps({"after": 1}))
        return {"after": 1}
    return job


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
    (jobs[0] / "model.safetensors").unlink()  # an interrupted run (job.json, written last, missing) runs again too
    (jobs[0] / JOB_FILE).unlink()
    partial = sweep(tmp_path)
    assert partial.returncode == 0 and "skipped" not in partial.stdout
    assert all((p / JOB_FILE).is_file() for p in jobs)
    assert {p: json.loads((p / "metrics.json").read_text())["after"] for p in jobs} == results  # same seeds, same result

    changed = sweep(tmp_path, "defense.steps=4")
    assert changed.returncode == 2
    assert "holds a finished run of another config (defense.steps: 3 there, 4 here)" in changed.stderr


def test_a_finished_job_is_the_same_run_wherever_the_data_set_lies_but_not_under_other_settings(tmp_path):
    """A sweep resumed from a moved project (or a worktree) finds its finished jobs: the data set's location is
    recorded in job.json but not compared; any other setting still is."""
    from omegaconf import OmegaConf

    from backdoorlab.errors import ConfigError
    from backdoorlab.finished_jobs import run_once

    def config(shared: str, steps: int = 3):
        return OmegaConf.create({"paths": {"shared_dir": shared}, "defense": {"steps": steps},
                                 "dataset": {"path": "${paths.shared_dir}/data/cifar.tar.gz",
                                             "source": {"cache_dir": "${paths.shared_dir}/cache", "name": "c"}}})

    out = tmp_path / "job"
    calls = []

    def job(value):
        def run():
            calls.append(value)
            out.mkdir(exist_ok=True)
            (out / "result.json").write_text(json.dumps({"after": value}))
            return {"after": value}
        return run

    assert run_once(config("/a/../shared"), out, "result.json", job(1)) == {"after": 1}
    recorded = json.loads((out / JOB_FILE).read_text())["settings"]
    assert recorded["dataset.path"] == "/a/../shared/data/cifar.tar.gz"  # recorded all the same
    assert run_once(config("/elsewhere/shared"), out, "result.json", job(2)) == {"after": 1}
    assert calls == [1]  # skipped: only where the data lies differs
    with pytest.raises(ConfigError, match=r"\(defense.steps: 3 there, 4 here\)"):
        run_once(config("/elsewhere/shared", steps=4), out, "result.json", job(3))
    assert calls == [1]


def test_an_entry_added_to_a_protocols_attack_table_leaves_the_other_attacks_finished_jobs_alike(tmp_path):
    """``attack_defaults`` (and the other tables that attack and defense configs read) is compared where it lands:
    a new entry for one attack does not make every finished job of the protocol another run; its value in the
    attack's config still counts."""
    from omegaconf import OmegaConf

    from backdoorlab.errors import ConfigError
    from backdoorlab.finished_jobs import run_once

    def config(table: dict, bf16: str = "${oc.select:attack_defaults.surrogate_bf16,false}"):
        return OmegaConf.create({"attack_defaults": table, "attack": {"surrogate": {"bf16": bf16}}})

    out, calls = tmp_path / "job", []

    job = result_writer(out, calls)

    run_once(config({"lira_eps": 0.01}), out, "result.json", job)
    assert run_once(config({"lira_eps": 0.01, "other_attack_knob": 3}), out, "result.json", job) == {"after": 1}
    assert calls == [1]
    with pytest.raises(ConfigError, match=r"attack.surrogate.bf16: False there, True here"):
        run_once(config({"lira_eps": 0.01, "surrogate_bf16": True}), out, "result.json", job)


def test_a_finished_purification_whose_weights_were_not_kept_is_skipped_but_a_training_run_is_not(tmp_path):
    """A study's ``.gitignore`` drops the purified weights: a sweep resumed from a clone must not run its finished
    purifications again (their result is their metrics), while a training run without weights is no model and runs
    again, as does any run whose job.json (written last) is missing."""
    from omegaconf import OmegaConf

    from backdoorlab import runs
    from backdoorlab.finished_jobs import run_once

    cfg = OmegaConf.create({"defense": {"steps": 3}})
    out, calls = tmp_path / "job", []

    def job():
        calls.append(1)
        out.mkdir(exist_ok=True)
        for name in (runs.RUN_FILE, runs.WEIGHTS_FILE):
            (out / name).write_text("{}")
        (out / runs.METRICS_FILE).write_text(json.dumps({"after": {"asr": 0.1}}))
        return {"after": {"asr": 0.1}}

    run_once(cfg, out, runs.METRICS_FILE, job, needs_weights=False)
    (out / runs.WEIGHTS_FILE).unlink()  # a clone of the study
    assert run_once(cfg, out, runs.METRICS_FILE, job, needs_weights=False) == {"after": {"asr": 0.1}}
    assert calls == [1]
    (out / runs.WEIGHTS_FILE).unlink(missing_ok=True)
    run_once(cfg, out, runs.METRICS_FILE, job, needs_weights=True)  # a training run: no weights, no model
    assert calls == [1, 1]
    (out / runs.WEIGHTS_FILE).unlink()
    (out / JOB_FILE).unlink()  # interrupted before the end
    run_once(cfg, out, runs.METRICS_FILE, job, needs_weights=False)
    assert calls == [1, 1, 1]


def test_a_setting_added_after_a_run_compares_as_the_value_that_reproduces_it(tmp_path):
    """A knob added to a defense (:data:`ADDED_SETTINGS`) leaves the finished runs that predate it finished where
    the config holds the value they ran with, and another config where it does not."""
    from omegaconf import OmegaConf

    from backdoorlab.errors import ConfigError
    from backdoorlab.finished_jobs import ADDED_SETTINGS, run_once

    key, before = next(iter(ADDED_SETTINGS.items()))
    out, calls = tmp_path / "job", []

    job = result_writer(out, calls)

    run_once(OmegaConf.create({"defense": {"steps": 3}}), out, "result.json", job)  # a run from before the knob
    name = key.split(".")[1]
    assert run_once(OmegaConf.create({"defense": {"steps": 3, name: before}}), out, "result.json", job) == {"after": 1}
    assert calls == [1]
    with pytest.raises(ConfigError, match=key):
        run_once(OmegaConf.create({"defense": {"steps": 3, name: "something else"}}), out, "result.json", job)
