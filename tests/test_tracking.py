"""wandb bookkeeping: models as artifacts with the model they came from, runs grouped by study."""

import pytest

from backdoorlab import runs, tracking


class FakeRun:
    def __init__(self, offline: bool):
        self.offline, self.used, self.logged = offline, [], []
        self.config = self

    def update(self, values, allow_val_change=False):
        self.values = values

    def use_artifact(self, artifact):
        self.used.append(artifact)

    def log_artifact(self, artifact):
        self.logged.append(artifact)


class WandbLogger:  # the name is what tracking.wandb_run looks for
    def __init__(self, run):
        self.experiment = run


def run_dir(path, attack="badnets"):
    path.mkdir(parents=True)
    runs.write_json(path / runs.RUN_FILE, {"format": runs.FORMAT, "kind": "train", "attack_name": attack, "config": {}})
    (path / runs.WEIGHTS_FILE).write_bytes(b"weights")
    return path


@pytest.mark.parametrize("offline", [True, False])
def test_a_purified_model_names_the_model_it_came_from(tmp_path, offline):
    model = run_dir(tmp_path / "models" / "digits-badnets-seed1-abc")
    purified = run_dir(tmp_path / "study_digits" / "0-digits-badnets-fip-seed1")
    run = FakeRun(offline)
    artifact = tracking.log_model([object(), WandbLogger(run)], purified, "purified", source=model)
    assert run.logged == [artifact] and artifact.name == "study_digits-0-digits-badnets-fip-seed1" and artifact.type == "model"
    assert artifact.metadata["role"] == "purified" and artifact.metadata["source_model"] == "models-digits-badnets-seed1-abc"
    assert run.values == {"source_model": "models-digits-badnets-seed1-abc"}
    # online the backdoored model is the run's input artifact (a drawn edge); wandb refuses that offline
    assert [a.name for a in run.used] == ([] if offline else ["models-digits-badnets-seed1-abc"])
    assert sorted(e.path for e in artifact.manifest.entries.values()) == sorted([runs.RUN_FILE, runs.WEIGHTS_FILE])


def test_without_a_wandb_logger_nothing_is_logged(tmp_path):
    assert tracking.log_model([object()], run_dir(tmp_path / "r"), "backdoored") is None


def test_a_purify_run_with_the_wandb_logger_runs_offline_and_groups_a_study(make_config, tmp_path, monkeypatch):
    from backdoorlab.purification_run import purify

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(tracking, "study_group", lambda: "study_x")
    cfg = make_config("purify", ["defense=ft", "logger=wandb"])
    metrics = purify(cfg, tmp_path / "p")
    assert metrics["after"]["acc"] > 0
    # the offline runs of the model's training and of its purification, in the job's directory; their records
    # (what `wandb sync` uploads) hold the study's group and the artifacts, the purified one naming its source
    records = [f.read_bytes() for f in sorted((tmp_path / "run" / "wandb").glob("offline-run-*/*.wandb"))]
    assert len(records) == 2 and all(b"study_x" in r for r in records)
    trained, purified = sorted(records, key=lambda r: b'"role":"purified"' in r)
    source = tracking.artifact_name(next((tmp_path / "outputs" / "models").iterdir()))
    assert b'"role":"backdoored"' in trained and f'"source_model":"{source}"'.encode() in purified
