"""Weights & Biases beyond Lightning's metric logging: models as artifacts with the model they came from, runs
grouped by study.

Used only where ``logger=wandb`` (offline by default). A trained model is logged as an artifact of type ``model``
(role ``backdoored``); a purified one (role ``purified``) names the model it was purified from in its metadata and
in the run's config (``source_model``), and, online, takes that model as the run's input artifact, so the project
draws backdoored model -> purification run -> purified model. wandb refuses input artifacts offline: an offline run
synced later keeps the link in its metadata and config, not as a drawn edge.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from backdoorlab import runs

MODEL_FILES = (runs.WEIGHTS_FILE, runs.RUN_FILE, runs.METRICS_FILE, runs.TRIGGER_FILE)


def study_group() -> str | None:
    """Resolver ``bdl.study_group``: the sweep directory's name in a multirun (every job of a study in one wandb
    group), else None."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    return Path(hydra.sweep.dir).name if hydra.mode == RunMode.MULTIRUN else None


def artifact_name(run_dir: str | Path) -> str:
    """``<folder>-<run folder>`` (e.g. ``study_digits-3-digits-blend-fip-seed1``), characters wandb refuses as ``_``."""
    run_dir = Path(run_dir).resolve()
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{run_dir.parent.name}-{run_dir.name}")


def wandb_run(loggers: Iterable) -> object | None:
    """The wandb run behind a Lightning ``WandbLogger`` among ``loggers``, else None."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            return logger.experiment
    return None


def _model_artifact(run_dir: Path, role: str, metadata: dict | None = None):
    import wandb

    artifact = wandb.Artifact(artifact_name(run_dir), type="model", metadata={"role": role, "run_dir": str(run_dir), **(metadata or {})})
    for name in MODEL_FILES:
        if (run_dir / name).is_file():
            artifact.add_file(str(run_dir / name))
    return artifact


def log_model(loggers: Iterable, run_dir: str | Path, role: str, source: str | Path | None = None) -> object | None:
    """Log the model of ``run_dir`` (``role``: backdoored or purified) to the wandb run among ``loggers``, naming
    ``source``, the run directory of the model it was purified from; returns the artifact (None without wandb)."""
    run = wandb_run(loggers)
    if run is None:
        return None
    metadata = {}
    if source is not None and runs.is_run_dir(source):
        metadata = {"source_model": artifact_name(source), "source_run_dir": str(source)}
        run.config.update({"source_model": metadata["source_model"]}, allow_val_change=True)
        if not run.offline:
            run.use_artifact(_model_artifact(Path(source), "backdoored"))
    artifact = _model_artifact(Path(run_dir), role, metadata)
    run.log_artifact(artifact)
    return artifact


def finish(loggers: Iterable) -> None:
    """Close the wandb run among ``loggers`` so that the next job of a sweep in this process starts its own."""
    run = wandb_run(loggers)
    if run is not None:
        run.finish()


def log_report(group: str, header: list[str], rows: list[list], images: Iterable[Path], save_dir: str | Path) -> str:
    """A wandb run of job type ``report`` in ``group`` (the study) holding the report table and its plots; offline
    unless WANDB_MODE says otherwise. Returns the run's local directory."""
    import wandb

    run = wandb.init(project="backdoorlab", group=group, job_type="report", name=f"report-{group}", dir=str(save_dir),
                     mode=os.environ.get("WANDB_MODE", "offline"))
    run.log({"report": wandb.Table(columns=header, data=rows), **{p.stem: wandb.Image(str(p)) for p in images}})
    run.finish()
    wandb.teardown()  # the service writes the offline records; done before the command returns
    return run.dir
