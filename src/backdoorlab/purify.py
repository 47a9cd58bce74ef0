"""Entry point: ``python -m backdoorlab.purify checkpoint=<train run dir | weights file | null> defense=fip``."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from backdoorlab.config import register_resolvers
from backdoorlab.entry import CONFIG_DIR, run_safely
from backdoorlab.purification_run import purify

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="purify")
def main(cfg: DictConfig) -> float | None:
    """Returns the ASR after purification (for Hydra sweepers)."""
    metrics = run_safely(lambda: purify(cfg, HydraConfig.get().runtime.output_dir))
    return None if metrics is None else metrics["after"].get("asr")


if __name__ == "__main__":
    main()
