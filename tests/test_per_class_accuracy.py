"""scripts/per_class_accuracy.py loads a run directory as purify does and splits its clean ACC by class."""

import runpy
import sys
from pathlib import Path

import pytest

from backdoorlab.training_run import train_backdoor

ROOT = Path(__file__).resolve().parents[1]


def test_per_class_accuracy_adds_up_to_the_runs_acc_and_names_the_target(make_config, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts src/ first
    per_class_accuracy = runpy.run_path(str(ROOT / "scripts" / "per_class_accuracy.py"))["per_class_accuracy"]
    run = tmp_path / "sig"
    metrics = train_backdoor(make_config("train", ["attack=sig", "attack.target_label=3"]), run)
    attack, target, acc, per_class = per_class_accuracy(run)
    assert (attack, target, len(per_class)) == ("sig", 3, 10)
    assert acc == pytest.approx(metrics["acc"], abs=1e-4)  # the same images, model and batches as the run's evaluation
    assert min(per_class) <= acc <= max(per_class)
