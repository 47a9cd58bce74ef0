"""Sweeps that resume: a job whose directory already holds a finished run of the same resolved config is skipped.

Every finished job writes ``job.json`` into its directory, last: the fingerprint of its resolved config and the
config itself (flattened), without what does not change a result (:data:`NOT_RESULT_KEYS`: loggers, paths, the
progress bar and log interval). Where the data set lies (``dataset.path``, ``dataset.source.cache_dir``, ...: the
keys the model cache ignores too) is recorded but not compared, so that a sweep resumes from a moved project, a
worktree or another machine. Re-running a multirun into the same sweep directory (a fixed
``hydra.sweep.dir``, as the study presets set) therefore runs only the jobs whose directory has no finished run:
the missing, the failed and the interrupted ones (an interrupted training run continues from its last epoch).
A directory that holds a finished run of *another* config (the same job number and name, other values: the
sweep was changed) stops that job with the keys that differ, instead of overwriting a result.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

from backdoorlab import runs
from backdoorlab.config import config_hash, flatten_config
from backdoorlab.errors import ConfigError
from backdoorlab.training_run import DATA_LOCATION_KEYS

JOB_FILE = "job.json"
NOT_RESULT_KEYS = ("logger", "paths", "trainer.enable_progress_bar", "trainer.log_every_n_steps")
T = TypeVar("T")
log = logging.getLogger("backdoorlab")


def result_settings(cfg: DictConfig) -> dict[str, object]:
    """The resolved config as ``{"defense.lr": 0.05, ...}``, without the keys that do not change a result."""
    flat = flatten_config(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_RESULT_KEYS)}


def _is_data_location(key: str) -> bool:
    parts = key.split(".")
    return parts[0] == "dataset" and parts[-1] in DATA_LOCATION_KEYS


# A protocol's tables of settings that configs/attack/*.yaml and configs/defense/*.yaml read: what they set is
# compared where it lands (attack.*, defense.*), so an entry added for one attack leaves the others' runs alike.
INDIRECT_KEYS = ("attack_defaults", "attack_patterns", "defense_defaults")


# Settings added after runs recorded their config, each with the value that reproduces what those runs computed: a
# job.json without one compares as if it held that value, so a finished sweep stays finished when a knob is added.
ADDED_SETTINGS = {"defense.retainer_reference": "student"}


def compared_settings(settings: dict[str, object]) -> dict[str, object]:
    """``settings`` without where the data lies and without the protocol's tables that attacks and defenses read
    (:data:`INDIRECT_KEYS`): what two runs must share to be the same run."""
    return {k: v for k, v in settings.items() if not _is_data_location(k) and k.split(".")[0] not in INDIRECT_KEYS}


def _finished(out: Path, result_file: str, needs_weights: bool) -> tuple[dict | None, dict] | None:
    """``(job.json or None, the result)`` where ``out`` holds a finished run, else None (nothing, a failed or an
    interrupted run). A run without its weights is finished only where they are not ``needs_weights`` and job.json,
    written last, says it ended: a study that keeps no weights (its ``.gitignore`` drops them) resumes from a clone."""
    result = out / result_file
    if not result.is_file():
        return None
    payload = json.loads(result.read_text())
    if "error" in payload:
        return None
    job = out / JOB_FILE
    if result_file == runs.METRICS_FILE and not runs.is_complete(out) and (needs_weights or not job.is_file()):
        return None
    return (json.loads(job.read_text()) if job.is_file() else None), payload


def run_once(cfg: DictConfig, out_dir: str | Path, result_file: str, job: Callable[[], T],
             needs_weights: bool = True) -> T | dict:
    """``job()`` (the run that writes ``result_file`` into ``out_dir``), unless ``out_dir`` holds a finished run of
    this config: then its result, read back. Raises :class:`ConfigError` where it holds a finished run of another
    config, or one from before job.json existed, naming what differs. ``resume=<run dir>`` (training) runs
    ``job()`` as it is: it checks the run it continues itself. ``needs_weights=False`` (purification, whose result
    is its metrics) counts a finished run whose weights were not kept as finished."""
    if cfg.get("resume"):
        return job()
    out = Path(out_dir)
    settings = result_settings(cfg)
    compared = compared_settings(settings)
    done = _finished(out, result_file, needs_weights)
    if done is not None:
        stamp, result = done
        if stamp is None:
            raise ConfigError(f"{out} holds a finished run from before runs recorded their config ({JOB_FILE}); "
                              "delete that directory to run it again, or run into another one")
        old = compared_settings(stamp["settings"])  # job.json files of before this rule compare alike
        old = {**{k: v for k, v in ADDED_SETTINGS.items() if k in compared}, **old}
        if old == compared:
            kept = result_file != runs.METRICS_FILE or (out / runs.WEIGHTS_FILE).is_file()
            log.info("%s holds a finished run of this config: skipped%s", out, "" if kept else " (its weights were not kept)")
            return result
        differ = [f"{k}: {old.get(k, '(unset)')!r} there, {compared.get(k, '(unset)')!r} here"
                  for k in sorted(set(old) | set(compared)) if old.get(k, "(unset)") != compared.get(k, "(unset)")]
        raise ConfigError(f"{out} holds a finished run of another config ({'; '.join(differ[:5])}"
                          f"{'; ...' if len(differ) > 5 else ''}); run into another hydra.sweep.dir, or delete that "
                          "directory to replace it")
    result = job()
    if result is not None and int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
        runs.write_json(out / JOB_FILE, {"fingerprint": config_hash(compared), "settings": settings})
    return result
