"""Entry point: ``python -m backdoorlab.analyze checkpoint=<train or purify run dir | weights> [analysis.key=value]``."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from backdoorlab.analysis_run import CURVATURE_FILE, analyze
from backdoorlab.config import register_resolvers
from backdoorlab.entry import CONFIG_DIR, run_safely, set_job_threads
from backdoorlab.finished_jobs import run_once

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="analyze")
def main(cfg: DictConfig) -> float | None:
    """Skipped where its directory holds a finished run of this config (:mod:`backdoorlab.finished_jobs`).
    Returns lambda_max (for Hydra sweepers)."""
    out = HydraConfig.get().runtime.output_dir
    run_safely(lambda: set_job_threads(cfg))
    result = run_safely(lambda: run_once(cfg, out, CURVATURE_FILE, lambda: analyze(cfg, out)))
    return None if result is None else result["lambda_max"]


if __name__ == "__main__":
    main()
