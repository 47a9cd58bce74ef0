"""Entry point: ``python -m backdoorlab.analyze checkpoint=<train or purify run dir | weights> [analysis.key=value]``."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from backdoorlab.analysis_run import analyze
from backdoorlab.config import register_resolvers
from backdoorlab.entry import CONFIG_DIR, run_safely

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="analyze")
def main(cfg: DictConfig) -> float | None:
    """Returns lambda_max (for Hydra sweepers)."""
    result = run_safely(lambda: analyze(cfg, HydraConfig.get().runtime.output_dir))
    return None if result is None else result["lambda_max"]


if __name__ == "__main__":
    main()
