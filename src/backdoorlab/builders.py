"""Build the experiment's objects from a composed config. Every Hydra instantiate goes through
:func:`backdoorlab.config.instantiate`."""

from __future__ import annotations

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from backdoorlab.attacks.base import Attack
from backdoorlab.config import instantiate
from backdoorlab.curvature.measure import CurvatureSettings
from backdoorlab.data.augment import BatchAugment
from backdoorlab.data.backdoor_data import BackdoorData, build_backdoor_data
from backdoorlab.data.images import DatasetBundle
from backdoorlab.defenses.base import Defense
from backdoorlab.errors import ConfigError
from backdoorlab.lightning.curvature_log import CurvatureLog
from backdoorlab.models.classifier import ImageClassifier
from backdoorlab.numerics import RUNTIME_KEYS, resolve_precision
from backdoorlab.tasks.base import Task
from backdoorlab.tasks.classification import CLASSIFICATION


def seed_run(cfg: DictConfig, seed: int) -> None:
    """Seed the process and set its deterministic mode as ``cfg.trainer`` will (Lightning sets it only when the
    Trainer is built), before anything random runs: an attack's fit (Trojan's patch) otherwise gave a run that is
    first in its process other bits than the later ones, and a resumed run did not end where the whole one did."""
    deterministic = cfg.trainer.get("deterministic")
    if deterministic is not None:
        torch.use_deterministic_algorithms(deterministic is True or deterministic == "warn", warn_only=deterministic == "warn")
    L.seed_everything(seed, workers=True, verbose=False)


def build_attack(cfg: DictConfig) -> Attack:
    return instantiate(cfg.attack, "attack")


def build_data(cfg: DictConfig, poison_seed: int | None = None, trigger: dict[str, torch.Tensor] | None = None,
               fit: bool = True, fitted: dict[str, torch.Tensor] | None = None) -> BackdoorData:
    """Dataset, attack, split and poisoned sets; all input checks on them run here. The poisoned
    samples are chosen with ``poison_seed`` (default: ``cfg.seed``, the seed the model is trained with);
    ``trigger``: a trained run's stored trigger, used instead of building or fitting one, and ``fitted`` what its
    fit made for the training set; ``fit=False`` leaves a trigger fitted on the data unfitted (for checks of the
    split alone)."""
    attack = build_attack(cfg)  # first: its checks need no data
    bundle: DatasetBundle = instantiate(cfg.dataset.source, "dataset")
    seed = cfg.seed if poison_seed is None else poison_seed
    return build_backdoor_data(bundle, attack, cfg.dataset.pool_fraction, cfg.dataset.split_seed, poison_seed=seed,
                               trigger=trigger, fit=fit, fitted=fitted)


def build_task(cfg: DictConfig) -> Task:
    """The task of ``cfg.task`` (classification where a config predates the task group)."""
    return instantiate(cfg.task, "task") if cfg.get("task") is not None else CLASSIFICATION


def build_model(cfg: DictConfig, bundle: DatasetBundle) -> ImageClassifier:
    """The network of ``cfg.model`` behind its normalisation, in the memory format of ``trainer.channels_last``."""
    net = instantiate(cfg.model, "model", num_classes=bundle.num_classes, in_channels=bundle.channels)
    return ImageClassifier(net, bundle.mean, bundle.std, channels_last=bool(cfg.trainer.get("channels_last", False)))


def build_augment(node: DictConfig) -> BatchAugment:
    return BatchAugment(shift=node.shift, flip=node.flip)


def build_adaptive(cfg: DictConfig):
    """The adaptive training of ``cfg.adaptive`` (None when unset). It trains the classifier's weights only, so an
    attack that trains its own networks with the classifier is refused here, before any training."""
    if cfg.get("adaptive") is None:
        return None
    adaptive = instantiate(cfg.adaptive, "adaptive")
    attack = build_attack(cfg)
    if attack.trains_networks:
        raise ConfigError(f"an adaptive training steps the classifier's weights only, and attack={attack.name} trains its trigger "
                          "networks with them: this combination is not supported")
    return adaptive


def build_defense(cfg: DictConfig) -> Defense:
    """The defense of ``cfg.defense`` under the budget ``cfg.budget`` (its ``budgets`` table is not passed on), scoring
    outputs by ``cfg.task``."""
    budgets = cfg.defense.get("budgets")
    if budgets is not None and cfg.get("budget") not in budgets:
        raise ConfigError(f"budget must be one of {', '.join(budgets)}, got {cfg.get('budget')!r}")
    node = OmegaConf.to_container(cfg.defense, resolve=True)
    node.pop("budgets", None)
    defense = instantiate(OmegaConf.create(node), "defense")
    defense.task = build_task(cfg)
    return defense


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items()]


def build_trainer(cfg: DictConfig, loggers: list | bool = False, **overrides) -> L.Trainer:
    """The Lightning Trainer of ``cfg.trainer`` (less backdoorlab's own keys, :data:`RUNTIME_KEYS`;
    bf16 falls back to fp32 on hardware without it) plus run-specific settings (never checkpoints:
    the entry points write safetensors themselves)."""
    node = OmegaConf.create({k: cfg.trainer[k] for k in cfg.trainer if k not in RUNTIME_KEYS})
    node.precision = resolve_precision(node.get("precision", "32-true"), node.get("accelerator", "cpu"))
    return instantiate(node, "trainer", logger=loggers, enable_checkpointing=False, **overrides)


def build_curvature_settings(analysis: DictConfig) -> CurvatureSettings:
    """The curvature estimators' settings from the ``analysis`` group; a bad value is one :class:`ConfigError`."""
    try:
        return CurvatureSettings(**{k: analysis[k] for k in CurvatureSettings.__dataclass_fields__ if k in analysis})
    except ValueError as err:
        raise ConfigError(str(err)) from None


def build_curvature_log(cfg: DictConfig, data: BackdoorData, out_dir, every_n_epochs: int = 0, every_n_steps: int = 0,
                        resume: bool = False):
    """The :class:`CurvatureLog` callback on ``cfg.analysis``'s images and settings, or ``None`` when both periods are 0
    (``resume``: keep the rows an interrupted run in ``out_dir`` wrote)."""
    if every_n_epochs < 0 or every_n_steps < 0:
        raise ConfigError(f"curvature_every_epochs and curvature_every_steps must be >= 0, got {every_n_epochs}, {every_n_steps}")
    if not (every_n_epochs or every_n_steps):
        return None
    settings = build_curvature_settings(cfg.analysis)
    x, y = data.clean_images(str(cfg.analysis.data), cfg.analysis.samples, int(cfg.analysis.seed))
    return CurvatureLog(x, y, settings, out_dir, every_n_epochs=every_n_epochs, every_n_steps=every_n_steps, resume=resume,
                        task=build_task(cfg))
