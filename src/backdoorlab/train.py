"""Entry point: ``python -m backdoorlab.train [dataset=...] [attack=...] [model=...] [key=value ...]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from backdoorlab import runs
from backdoorlab.config import register_resolvers
from backdoorlab.entry import CONFIG_DIR, run_job
from backdoorlab.training_run import train_backdoor

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Skipped where its directory holds a finished run of this config (:mod:`backdoorlab.finished_jobs`).
    Returns the final ACC (for Hydra sweepers)."""
    metrics = run_job(cfg, runs.METRICS_FILE, lambda out: train_backdoor(cfg, out))
    return None if metrics is None else metrics["acc"]


if __name__ == "__main__":
    main()
