"""Evaluate a model, purify it on the clean pool with a defense, evaluate again, write the run."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from backdoorlab import runs
from backdoorlab.builders import build_attack, build_augment, build_curvature_log, build_data, build_defense, build_loggers, build_model, build_trainer, seed_run
from backdoorlab.config import config_hash, instantiate, to_container
from backdoorlab.data.backdoor_data import BackdoorData
from backdoorlab.data.datamodule import BackdoorDataModule
from backdoorlab.defenses.pruning import MASKS_FILE, save_masks
from backdoorlab.errors import ConfigError, DivergenceError
from backdoorlab.lightning.evaluation import evaluation_results
from backdoorlab.lightning.purification_module import PurificationModule
from backdoorlab.metrics import defense_effectiveness_rating
from backdoorlab.models.classifier import ImageClassifier
from backdoorlab.models.checkpoint import load_weights, read_state_dict, save_weights
from backdoorlab.reporting.table import format_table
from backdoorlab.resources import PeakMemory
from backdoorlab.numerics import non_default
from backdoorlab.tracking import finish as finish_tracking, log_model
from backdoorlab.training_run import REBUILD_KEYS, TRAINING_VERSION, adopt_run_config, rebuild_config, run_numerics, train_backdoor, without_data_locations

log = logging.getLogger(__name__)


def cached_model_dir(cfg: DictConfig) -> Path:
    """Where ``checkpoint=null`` keeps the backdoored model of this (dataset, attack, model, training,
    seed, and precision, memory format and compilation where not fp32, contiguous and eager), trained
    by this version of the training code. Where the data lies is not part of the key, so that a checkout
    elsewhere (a fresh clone, another machine) finds the same cached models (zoo/)."""
    key = config_hash({**without_data_locations(rebuild_config(cfg)), **non_default(run_numerics(cfg)),
                       "training_version": TRAINING_VERSION})
    return Path(cfg.paths.model_cache) / f"{cfg.dataset.name}-{build_attack(cfg).name}-seed{cfg.seed}-{key}"


def resolve_checkpoint(cfg: DictConfig) -> tuple[Path, dict | None]:
    """The weights file and, for a run directory, its run.json, whose dataset/attack/model config
    replaces the one composed for this run. ``checkpoint=null`` trains (or reuses) the model."""
    if cfg.checkpoint is None:
        run_dir = cached_model_dir(cfg)
        with runs.exclusive(run_dir / ".lock"):  # parallel jobs wanting this model take turns
            if runs.is_complete(run_dir):
                log.info("reusing the backdoored model in %s", run_dir)
            else:
                log.info("training the backdoored model into %s", run_dir)
                train_backdoor(cfg, run_dir)
        return run_dir / runs.WEIGHTS_FILE, runs.read_run(run_dir)
    path = Path(str(cfg.checkpoint))
    if runs.is_run_dir(path):
        return path / runs.WEIGHTS_FILE, runs.read_run(path)
    if path.is_dir():
        raise ConfigError(f"checkpoint={path} is a directory without {runs.RUN_FILE}: give a train run directory or a weights file")
    return path, None


def model_seed(run: dict) -> int:
    """The seed the run's model was trained (and its training set poisoned) with: a purify run's
    is that of the model it purified, found through its ``checkpoint`` when that run directory is here."""
    for _ in range(100):  # purified models of purified models
        source = Path(str(run.get("checkpoint", ""))).parent
        if run.get("kind") != "purify" or not runs.is_run_dir(source):
            break
        run = runs.read_run(source)
    return int(run["config"]["seed"])


def load_backdoored(cfg: DictConfig) -> tuple[Path, BackdoorData, ImageClassifier]:
    """The weights file of ``cfg.checkpoint`` (trained first for ``checkpoint=null``), the data it
    was trained on (the same split, pool and trigger) and the model with those weights loaded."""
    weights, trained = resolve_checkpoint(cfg)
    trigger = None
    if trained is not None:
        adopt_run_config(cfg, trained, keys=tuple(k for k in REBUILD_KEYS if k != "seed"))  # the seed stays this run's
        trigger = runs.read_trigger(weights.parent)  # the trigger the model was trained with
    data = build_data(cfg, poison_seed=model_seed(trained) if trained is not None else None, trigger=trigger)
    if trained is not None and trained["pool_fingerprint"] != data.split.fingerprint():
        raise ConfigError(
            "the purification pool rebuilt here differs from the one held out when the model was trained "
            "(the split code or data changed); the pool might overlap the training data"
        )
    model = build_model(cfg, data.bundle)
    load_weights(model.net, read_state_dict(weights), source=f"checkpoint {weights}")
    return weights, data, model


def purify(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Evaluate, purify with ``cfg.defense``, evaluate again; writes the run into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    defense = build_defense(cfg)  # bad defense settings stop here, before any training
    every = int(cfg.eval_every)
    if every < 0:
        raise ConfigError(f"eval_every must be >= 0 (0: evaluate only before and after), got {every}")
    if cfg.checkpoint is None and defense.samples_per_class is not None:
        build_data(cfg, fit=False).pool_subset(defense.samples_per_class, cfg.purification_seed)  # so does a pool too small
    if cfg.trainer.get("compile") and cfg.checkpoint is not None:
        log.info("trainer.compile applies to training; the defense runs eager")
    if cfg.checkpoint is None and defense.needs_batchnorm and not runs.is_complete(cached_model_dir(cfg)):
        # refuse before a backdoored model is trained (a cached one is checked once loaded, below)
        bundle = instantiate(cfg.dataset.source, "dataset")
        defense.check_model(build_model(cfg, bundle))
    weights, data, model = load_backdoored(cfg)
    defense.check_model(model)
    pool = data.pool_subset(defense.samples_per_class, cfg.purification_seed)
    defense.fit_to_pool(len(pool))
    curvature = build_curvature_log(cfg, data, out, every_n_steps=int(cfg.get("curvature_every_steps") or 0))

    seed_run(cfg, cfg.purification_seed)
    module = PurificationModule(model, defense, build_augment(cfg.dataset.augment))
    datamodule = BackdoorDataModule(data, defense.batch_size, role="purify", eval_batch_size=cfg.training.eval_batch_size,
                                    num_workers=cfg.training.num_workers, pool_steps=defense.steps, pool=pool,
                                    data_on_device=cfg.trainer.get("data_on_device", "auto"))
    evaluator = build_trainer(cfg, False, enable_progress_bar=False)
    evaluator.validate(module, datamodule=datamodule, verbose=False)
    before = evaluation_results(evaluator)

    runtime, memory, loggers = 0.0, PeakMemory(), []
    if defense.steps > 0:
        evaluate = {"val_check_interval": every, "check_val_every_n_epoch": None} if every > 0 else {"limit_val_batches": 0}
        loggers = build_loggers(cfg)
        trainer = build_trainer(cfg, loggers, max_steps=defense.steps, max_epochs=-1, num_sanity_val_steps=0,
                                gradient_clip_val=defense.grad_clip, callbacks=[curvature] if curvature else [], **evaluate)
        start = time.perf_counter()
        try:
            trainer.fit(module, datamodule=datamodule)
        except DivergenceError:
            save_weights(model.net, out / "model.last_good.safetensors")
            runs.write_json(out / runs.METRICS_FILE, {"before": before, "error": "diverged"})
            raise
        runtime = time.perf_counter() - start
    trainable = sum(t.numel() for t in defense.trainable(model)) if defense.steps > 0 else 0
    masks = {name: m.detach().clone() for name, m in defense.saved_masks().items()}
    purified = defense.finalize(model)
    module.model = purified
    evaluator.validate(module, datamodule=datamodule, verbose=False)
    after = evaluation_results(evaluator)

    metrics = {"before": before, "after": after, "runtime_s": runtime, "defense": defense.name, "pool_samples": len(pool),
               "steps": defense.steps, "trainable_parameters": trainable, "threads": torch.get_num_threads(), **memory.read()}
    if defense.summary():
        metrics["defense_summary"] = defense.summary()
    if module.trajectory:
        metrics["trajectory"] = module.trajectory
    if "asr" in before:
        metrics["der"] = defense_effectiveness_rating(before, after)
    run = {"format": runs.FORMAT, "kind": "purify", "attack_name": data.attack.name, "checkpoint": str(weights),
           "config": {**rebuild_config(cfg), "purification_seed": cfg.purification_seed, "budget": cfg.get("budget"),
                      "defense": to_container(cfg.defense)},
           "numerics": {**run_numerics(cfg), "compile": False},
           "pool_fingerprint": data.split.fingerprint(),
           "num_classes": data.num_classes}
    if evaluator.is_global_zero:
        save_weights(purified.net, out / runs.WEIGHTS_FILE)
        runs.write_trigger(out, data.attack.trigger_tensors())
        if masks:
            save_masks(masks, out / MASKS_FILE)
        runs.write_json(out / runs.RUN_FILE, run)
        runs.write_json(out / runs.METRICS_FILE, metrics)
        log_model(loggers, out, "purified", source=weights.parent)
        finish_tracking(loggers)
        rows = [["before", before["acc"], before.get("asr")], [f"after {defense.name}", after["acc"], after.get("asr")]]
        print("\n" + format_table(["model", "ACC %", "ASR %"], rows))
        print(f"defense runtime: {runtime:.1f} s on {len(pool)} pool images; run directory: {out}")
    return metrics
