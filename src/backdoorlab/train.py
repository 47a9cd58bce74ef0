"""Entry point: ``python -m backdoorlab.train [dataset=...] [attack=...] [model=...] [key=value ...]``."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from backdoorlab.config import register_resolvers
from backdoorlab.entry import CONFIG_DIR, run_safely
from backdoorlab.training_run import train_backdoor

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the final ACC (for Hydra sweepers)."""
    metrics = run_safely(lambda: train_backdoor(cfg, HydraConfig.get().runtime.output_dir))
    return None if metrics is None else metrics["acc"]


if __name__ == "__main__":
    main()
