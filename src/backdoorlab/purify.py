"""Entry point: ``python -m backdoorlab.purify checkpoint=<train run dir | weights file | null> defense=fip``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from backdoorlab import runs
from backdoorlab.config import register_resolvers
from backdoorlab.entry import CONFIG_DIR, run_job
from backdoorlab.purification_run import purify

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="purify")
def main(cfg: DictConfig) -> float | None:
    """Skipped where its directory holds a finished run of this config (:mod:`backdoorlab.finished_jobs`), with or
    without its weights (a study's ``.gitignore`` drops them).
    Returns the ASR after purification (for Hydra sweepers)."""
    metrics = run_job(cfg, runs.METRICS_FILE, lambda out: purify(cfg, out), needs_weights=False)
    return None if metrics is None else metrics["after"].get("asr")


if __name__ == "__main__":
    main()
