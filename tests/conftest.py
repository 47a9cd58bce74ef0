"""Shared fixtures: compose the real config tree (as the entry points do) into a temporary root."""

from __future__ import annotations

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from backdoorlab.config import compose_run_config

# Smoke settings used by end-to-end tests: tiny network, 8x8 images, one epoch, a few steps.
FAST = ["debug=fast", "logger=none"]


@pytest.fixture
def make_config(tmp_path):
    """``make_config("train", ["attack=blend"]) -> DictConfig`` with every output under tmp_path."""

    def make(config_name: str, overrides: list[str] = (), fast: bool = True) -> DictConfig:
        extra = (FAST if fast else []) + list(overrides) + [f"paths.root_dir={tmp_path}"]
        return compose_run_config(config_name, extra, tmp_path / "run")

    yield make
    GlobalHydra.instance().clear()
