"""Config helpers: the single route through ``hydra.utils.instantiate``, OmegaConf resolvers, and
the checks that stop bad input with one clear sentence before anything is trained."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from backdoorlab.errors import ConfigError
from backdoorlab.runs import is_run_dir, read_run

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def instantiate(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with errors turned into one sentence naming the config group;
    a :class:`ConfigError` raised by the target passes through unchanged."""
    try:
        return hydra_instantiate(node, **kwargs, _convert_="all")
    except MissingMandatoryValue as err:
        raise ConfigError(f"{err.full_key} must be set to build {what} (e.g. {err.full_key}=my_package.my_factory)") from None
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"could not build {what} from {OmegaConf.select(node, '_target_')}: {cause or err}") from err


def trained_with(checkpoint: str | None, key: str, default: str) -> str:
    """Resolver ``bdl.trained_with``: ``key`` of the run directory ``checkpoint`` (``attack_name``, or a dotted path
    into its config such as ``config.dataset.name``), else ``default`` (not a run directory, or no such key)."""
    if not (checkpoint and is_run_dir(checkpoint)):
        return default
    value: Any = read_run(checkpoint)
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return str(value)


def project_dir() -> str:
    """Resolver ``bdl.project_dir``: the project's root (the folder that holds ``configs/``)."""
    return str(Path(CONFIG_DIR).parent)


def first_set(*values: Any) -> Any:
    """Resolver ``bdl.first``: the first of its arguments that is not null."""
    return next((v for v in values if v is not None), None)


def register_resolvers() -> None:
    from backdoorlab import tracking

    for name, resolver in (("bdl.trained_with", trained_with), ("bdl.project_dir", project_dir), ("bdl.first", first_set),
                           ("bdl.study_group", lambda: tracking.study_group())):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def compose_run_config(config_name: str, overrides: list[str], output_dir: str | Path) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` as an entry point would, outside ``@hydra.main``
    (scripts, notebooks, tests): Hydra's runtime is set so that ``${hydra:...}`` interpolations
    resolve, with ``output_dir`` as this run's directory."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def flatten_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"defense.lr": 0.05, ...}``: the leaves of a nested config (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def to_container(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def config_hash(payload: dict) -> str:
    """Stable short hash of a JSON-serialisable dict (keys sorted)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
