"""What the entry points share: where the configs are, and turning a ConfigError into one line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from backdoorlab.config import CONFIG_DIR
from backdoorlab.errors import AttackFailed, ConfigError
from backdoorlab.finished_jobs import run_once

__all__ = ["CONFIG_DIR", "job_threads", "run_job", "run_safely", "set_job_threads"]
T = TypeVar("T")
log = logging.getLogger("backdoorlab")


def run_safely(job: Callable[[], T]) -> T:
    """Run ``job``; a :class:`ConfigError` or :class:`AttackFailed` is printed as one sentence and exits with status 2."""
    try:
        return job()
    except (ConfigError, AttackFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        log.error("%s", err)
        sys.exit(2)


def job_threads(cfg: DictConfig, cores: int | None = None) -> int | None:
    """The CPU threads ``cfg.threads`` asks for: a number as it is; ``auto`` under Hydra's joblib launcher the
    cores shared among its ``n_jobs`` (-1: one per core), under submitit its ``cpus_per_task`` where set, else None
    (OMP_NUM_THREADS or torch's default stand), so that parallel jobs do not oversubscribe the cores."""
    threads = cfg.get("threads", "auto")
    if threads != "auto":
        if not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be auto or a positive number, got {threads!r}")
        return threads
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    target = str(launcher.get("_target_", ""))
    cores = cores or len(os.sched_getaffinity(0))
    if "joblib" in target:
        jobs = int(launcher.get("n_jobs") or 1)
        return 1 if jobs < 0 else max(1, cores // jobs)
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return None


def set_job_threads(cfg: DictConfig) -> None:
    """Apply :func:`job_threads` to torch in this process."""
    threads = job_threads(cfg)
    if threads is not None:
        torch.set_num_threads(threads)


def run_job(cfg: DictConfig, result_file: str, job: Callable[[str], T], needs_weights: bool = True) -> T | dict:
    """An entry point's job in its Hydra output directory: ``job(out_dir)`` with this job's threads set, skipped where
    the directory holds a finished run of this config (:func:`backdoorlab.finished_jobs.run_once`), a bad config or a
    failed attack printed as one sentence. ``needs_weights``: see :func:`~backdoorlab.finished_jobs.run_once`."""
    out = HydraConfig.get().runtime.output_dir

    def start():
        set_job_threads(cfg)
        return run_once(cfg, out, result_file, lambda: job(out), needs_weights)

    return run_safely(start)
