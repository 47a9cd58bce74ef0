"""scripts/per_class_accuracy.py loads a run directory as purify does and splits its ACC and ASR by class."""

import math
import runpy
import sys
from pathlib import Path

import pytest

from backdoorlab.training_run import train_backdoor

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("label_mode", "numerics"), [("all2one", []), ("all2all", []),
                                                     ("all2one", ["trainer.precision=bf16-mixed", "trainer.channels_last=true"])])
def test_per_class_rates_add_up_to_the_runs_acc_and_asr(make_config, tmp_path, monkeypatch, label_mode, numerics):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts src/ first
    per_class = runpy.run_path(str(ROOT / "scripts" / "per_class_accuracy.py"))["per_class"]
    run = tmp_path / "run"
    metrics = train_backdoor(make_config("train", ["attack=badnets", "attack.target_label=3", f"attack.label_mode={label_mode}",
                                                   *numerics]), run)
    result = per_class(run)
    assert result.attack == "badnets" and result.target == (3 if label_mode == "all2one" else None)
    # the same images, model and batches as the run's own evaluation
    assert result.acc.overall == pytest.approx(metrics["acc"], abs=1e-4)
    assert result.asr.overall == pytest.approx(metrics["asr"], abs=1e-4)
    assert len(result.acc.by_class) == len(result.asr.by_class) == 10
    assert min(result.acc.by_class) <= result.acc.overall <= max(result.acc.by_class)
    # all2one: the target class's own images are not in the triggered test set
    assert math.isnan(result.asr.by_class[3]) == (label_mode == "all2one")


def test_the_script_prints_the_recorded_rates_beside_the_measured_ones_of_a_moved_run(make_config, tmp_path, monkeypatch,
                                                                                        capsys):
    import shutil

    run, moved = tmp_path / "run", tmp_path / "elsewhere" / "blend_run"
    metrics = train_backdoor(make_config("train", ["attack=blend"]), run)
    shutil.copytree(run, moved)
    shutil.rmtree(run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", ["per_class_accuracy.py", str(moved)])
    runpy.run_path(str(ROOT / "scripts" / "per_class_accuracy.py"), run_name="__main__")
    rows = {line.split()[3]: line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("blend_run ")}
    for name in ("ACC", "ASR"):
        assert rows[name][4] == rows[name][5] == f"{metrics[name.lower()]:.2f}"  # recorded, measured
