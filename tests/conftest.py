"""Shared fixtures: compose the real config tree (as the entry points do) into a temporary root."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from backdoorlab.config import register_resolvers
from backdoorlab.entry import CONFIG_DIR

register_resolvers()

# Smoke settings used by end-to-end tests: tiny network, 8x8 images, one epoch, a few steps.
FAST = ["debug=fast", "logger=none"]


def compose_config(config_name: str, overrides: list[str], root: Path) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with ``overrides`` and set the Hydra runtime so that
    interpolations such as ``${hydra:runtime.choices.attack}`` resolve; outputs go under ``root``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    out = root / "run"
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num = 0
        cfg.paths.root_dir = str(root)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def make_config(tmp_path):
    """``make_config("train", ["attack=blend"]) -> DictConfig`` rooted in the test's tmp_path."""

    def make(config_name: str, overrides: list[str] = (), fast: bool = True) -> DictConfig:
        return compose_config(config_name, (FAST if fast else []) + list(overrides), tmp_path)

    yield make
    GlobalHydra.instance().clear()
