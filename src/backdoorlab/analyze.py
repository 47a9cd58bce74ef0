"""Entry point: ``python -m backdoorlab.analyze checkpoint=<train or purify run dir | weights> [analysis.key=value]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from backdoorlab.analysis_run import CURVATURE_FILE, analyze
from backdoorlab.config import register_resolvers
from backdoorlab.entry import CONFIG_DIR, run_job

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="analyze")
def main(cfg: DictConfig) -> float | None:
    """Skipped where its directory holds a finished run of this config (:mod:`backdoorlab.finished_jobs`).
    Returns lambda_max (for Hydra sweepers)."""
    result = run_job(cfg, CURVATURE_FILE, lambda out: analyze(cfg, out))
    return None if result is None else result["lambda_max"]


if __name__ == "__main__":
    main()
