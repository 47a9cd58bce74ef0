"""Train a classifier on the poisoned training set and write its run directory."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torchvision.utils import save_image

from backdoorlab import runs
from backdoorlab.builders import (build_adaptive, build_attack, build_augment, build_curvature_log, build_data, build_loggers,
                                  build_model, build_task, build_trainer, seed_run)
from backdoorlab.config import to_container
from backdoorlab.data.backdoor_data import BackdoorData
from backdoorlab.data.datamodule import BackdoorDataModule
from backdoorlab.errors import ConfigError
from backdoorlab.lightning.evaluation import evaluation_results
from backdoorlab.lightning.resume import RESUME_FILE, EpochCheckpoint
from backdoorlab.lightning.training_module import BackdoorTrainingModule
from backdoorlab.models.checkpoint import save_weights
from backdoorlab.numerics import numerics
from backdoorlab.reporting.plots import plot_point_clouds
from backdoorlab.reporting.table import format_table
from backdoorlab.tracking import finish as finish_tracking, log_model

log = logging.getLogger(__name__)
REBUILD_KEYS = ("dataset", "attack", "model", "training", "seed")
# Part of what determines the model only when set (``adaptive=...``); absent from run.json otherwise, so that
# the cache keys of models trained without it stay what they were.
OPTIONAL_REBUILD_KEYS = ("adaptive",)
# Bump when a code change alters the weights that training produces from the same config: models
# cached by ``checkpoint=null`` under an older version are then trained again instead of reused.
TRAINING_VERSION = 1


def rebuild_config(cfg: DictConfig) -> dict:
    """The part of the config that determines the trained model (stored in run.json)."""
    keys = REBUILD_KEYS + tuple(k for k in OPTIONAL_REBUILD_KEYS if cfg.get(k) is not None)
    return {key: to_container(cfg[key]) if isinstance(cfg[key], DictConfig) else cfg[key] for key in keys}


def run_numerics(cfg: DictConfig) -> dict:
    """Precision, memory format and compilation this run computes with (run.json's ``numerics``)."""
    return numerics(to_container(cfg.trainer))


def adopt_numerics(cfg: DictConfig, run: dict) -> None:
    """Continue a run with the precision, memory format and compilation it was started with."""
    with open_dict(cfg):
        for key, value in run.get("numerics", {}).items():
            cfg.trainer[key] = value


def machine_load() -> dict:
    """The CPU threads torch uses and the 5-minute load average (where the OS has one): with the
    training time, whether it was measured on an idle machine (load about the thread count)."""
    load = {"threads": torch.get_num_threads()}
    if hasattr(os, "getloadavg"):
        load["load_avg_5min"] = round(os.getloadavg()[1], 2)
    return load


def save_trigger(data: BackdoorData, out: Path, n: int = 8) -> None:
    """``trigger.safetensors`` and a PNG with clean images (top row) above their triggered versions (point clouds: 3D
    scatter plots, the inserted points in red)."""
    runs.write_trigger(out, data.attack.trigger_tensors())
    triggered = data.test_triggered
    if triggered is not None:
        shown = range(min(n, len(triggered)))
        clean = torch.stack([triggered.base.image(int(triggered.indices[i])) for i in shown])
        stamped = torch.stack([triggered[i][0] for i in shown])
        if data.bundle.modality == "points":
            plot_point_clouds(clean, stamped, out / runs.SAMPLES_FILE, inserted=int(getattr(data.attack, "pattern_points", 0)))
        else:
            save_image(torch.cat([clean, stamped]), out / runs.SAMPLES_FILE, nrow=len(shown), padding=1)


# Where the data lie on this machine (keys of ``dataset`` and of ``dataset.source``): not part of what a model was trained
# on, so a run adopted from run.json keeps this machine's values (the pool fingerprint checks that the data are the same).
DATA_LOCATION_KEYS = ("path", "root", "cache_dir", "download")
INTERRUPTED_WEIGHTS_FILE = "model.interrupted.safetensors"  # the weights when training stopped (a crash, Ctrl-C)


def without_data_locations(node):
    """``node`` (a plain config, as in run.json) without the :data:`DATA_LOCATION_KEYS`, at any depth: what a model
    was trained on, wherever its data lay."""
    if isinstance(node, dict):
        return {k: without_data_locations(v) for k, v in node.items() if k not in DATA_LOCATION_KEYS}
    return node


def _data_locations(dataset: DictConfig) -> dict[str, dict]:
    """``{"": {...}, "source": {...}}``: the :data:`DATA_LOCATION_KEYS` that ``dataset`` and its ``source`` set."""
    nodes = {"": dataset, "source": dataset.get("source")}
    return {name: {k: node[k] for k in DATA_LOCATION_KEYS if k in node} for name, node in nodes.items() if node is not None}


def adopt_run_config(cfg: DictConfig, run: dict, keys: tuple[str, ...] = REBUILD_KEYS) -> None:
    """Describe the model as it was trained: ``keys`` (by default all that determine it: dataset,
    attack, model, training, seed) are taken from its run.json, and its adaptive training (``adaptive``) always. When this run names the same data
    set, the data's location on this machine is kept, so that a run directory copied elsewhere works there."""
    same_data = "dataset" in keys and cfg.dataset.get("name") == run["config"]["dataset"].get("name")
    here = _data_locations(cfg.dataset) if same_data else {}
    with open_dict(cfg):
        for key in keys:
            value = run["config"][key]
            cfg[key] = OmegaConf.create(value) if isinstance(value, dict) else value
        for key in OPTIONAL_REBUILD_KEYS:  # an adaptive training the model had, or none
            value = run["config"].get(key)
            cfg[key] = None if value is None else OmegaConf.create(value)
        for name, values in here.items():
            node = cfg.dataset.get(name) if name else cfg.dataset
            if node is not None:
                node.update(values)


def resume_point(cfg: DictConfig, out: Path) -> Path | None:
    """The checkpoint to continue from when ``out`` holds an interrupted run, else ``None``.

    ``resume=<run dir>`` reads the run's config from its run.json; any other start on a directory
    that holds an interrupted run (``hydra.run.dir``, the model cache of ``purify``) must ask for the
    same model (wherever its data lie), or it stops with a clear error instead of mixing two runs.
    """
    if cfg.get("resume"):
        if not runs.is_run_dir(out):
            raise ConfigError(f"resume={out} is not a training run directory (it has no {runs.RUN_FILE})")
        if runs.is_complete(out):
            raise ConfigError(f"resume={out}: that training run has finished; there is nothing to resume")
        run = runs.read_run(out)
        adopt_run_config(cfg, run)
        adopt_numerics(cfg, run)
        if "curvature_log" in run:  # the interrupted run's curve goes on as it was asked for
            with open_dict(cfg):
                cfg.curvature_every_epochs = run["curvature_log"]["every_n_epochs"]
                cfg.analysis = OmegaConf.create(run["curvature_log"]["analysis"])
    checkpoint = out / RESUME_FILE
    if not checkpoint.is_file():
        return None
    interrupted = runs.read_run(out) if runs.is_run_dir(out) else None
    here = run_numerics(cfg)
    if interrupted is not None and (without_data_locations(interrupted["config"]) != without_data_locations(rebuild_config(cfg))
                                    or interrupted.get("numerics", here) != here):
        raise ConfigError(
            f"{out} holds an interrupted training run of another config; continue it with resume={out}, "
            "or train into a new directory"
        )
    return checkpoint


def train_backdoor(cfg: DictConfig, out_dir: str | Path, callbacks: Sequence[L.Callback] = ()) -> dict:
    """Train per ``cfg`` into ``out_dir``; returns the final ``{"acc", "asr"}``. A run directory that
    holds an interrupted run (``resume.ckpt``) continues from its last finished epoch, with the trigger it stored
    (an attack fitted on the data, Trojan's or LF's, is not fitted again). ``callbacks``:
    further Lightning callbacks for the training loop (a benchmark's step timer, ...)."""
    out = Path(out_dir)
    checkpoint = resume_point(cfg, out)
    t = cfg.training
    every = int(t.eval_every_epochs)
    if every < 0:
        raise ConfigError(f"training.eval_every_epochs must be >= 0 (0: evaluate only at the end), got {every}")
    out.mkdir(parents=True, exist_ok=True)
    adaptive = build_adaptive(cfg)  # its checks, and whether it can train this attack, before any training
    seed_run(cfg, cfg.seed)
    # a resumed run takes the trigger it stored when it started, instead of fitting it again (Trojan's or LF's
    # surrogate), and what the fit made for the training set (CLB's perturbed images)
    fitted = runs.read_tensors(out / runs.FIT_FILE) if checkpoint is not None else None
    if checkpoint is not None and fitted is None and (attack := build_attack(cfg)).fit_tensor_names:
        raise ConfigError(f"{out} holds an interrupted run of attack={attack.name} without its {runs.FIT_FILE} (what "
                          f"the attack's fit made for the training set): delete {checkpoint} to train it again from the start")
    data = build_data(cfg, trigger=runs.read_trigger(out) if checkpoint is not None else None, fitted=fitted)
    model = build_model(cfg, data.bundle)
    module = BackdoorTrainingModule(
        model, build_augment(cfg.dataset.augment), lr=t.lr, momentum=t.momentum,
        weight_decay=t.weight_decay, nesterov=t.nesterov, schedule=t.schedule, label_smoothing=t.label_smoothing,
        compile=bool(cfg.trainer.get("compile", False)), attack=data.attack, adaptive=adaptive, task=build_task(cfg),
    )
    datamodule = BackdoorDataModule(data, t.batch_size, role="train", eval_batch_size=t.eval_batch_size, num_workers=t.num_workers,
                                    data_on_device=cfg.trainer.get("data_on_device", "auto"))
    evaluate = {"check_val_every_n_epoch": every} if every > 0 else {"limit_val_batches": 0}
    epoch_checkpoint = EpochCheckpoint(out)
    curvature = build_curvature_log(cfg, data, out, every_n_epochs=int(cfg.get("curvature_every_epochs") or 0),
                                    resume=checkpoint is not None)
    trainer = build_trainer(cfg, build_loggers(cfg), max_epochs=t.epochs, num_sanity_val_steps=0,
                            callbacks=[epoch_checkpoint, *callbacks] + ([curvature] if curvature else []), **evaluate)
    run = {
        "format": runs.FORMAT,
        "kind": "train",
        "attack_name": data.attack.name,
        "config": rebuild_config(cfg),
        "numerics": run_numerics(cfg),
        "pool_fingerprint": data.split.fingerprint(),
        "num_classes": data.num_classes,
        "poisoned_samples": len(data.poisoned_positions),
        "train_samples": len(data.train),
        "pool_samples": len(data.pool),
    }
    if data.attack.trigger_info():
        run["trigger_info"] = data.attack.trigger_info()
    if curvature is not None:
        run["curvature_log"] = {"every_n_epochs": curvature.every_n_epochs, "analysis": to_container(cfg.analysis)}
    if trainer.is_global_zero:
        runs.write_json(out / runs.RUN_FILE, run)
        save_trigger(data, out)
        if checkpoint is None and data.attack.fit_tensor_names:
            runs.write_tensors(out / runs.FIT_FILE, data.attack.fit_tensors())
    if checkpoint is not None:
        log.info("continuing the interrupted run in %s from %s", out, checkpoint)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    except BaseException:
        if trainer.is_global_zero:
            save_weights(model.net, out / INTERRUPTED_WEIGHTS_FILE)
            log.error("training stopped; the weights so far are in %s; start it again with resume=%s to continue "
                      "from its last finished epoch", out / INTERRUPTED_WEIGHTS_FILE, out)
        raise
    runtime = epoch_checkpoint.elapsed()
    if trainer.is_global_zero and data.attack.networks is not None:
        save_trigger(data, out)  # the trigger networks trained with the classifier: their final weights
    if every == 0 or t.epochs % every:  # the last epoch was not evaluated
        evaluator = build_trainer(cfg, False, enable_progress_bar=False)
        evaluator.validate(module, datamodule=datamodule, verbose=False)
        results = evaluation_results(evaluator)
    else:
        results = evaluation_results(trainer)
    metrics = {**results, "train_runtime_s": runtime, "epochs": t.epochs, **machine_load()}
    if checkpoint is not None:
        metrics["resumed"] = True  # train_runtime_s: the finished epochs before the restart and the time since
    metrics.setdefault("asr", None)
    if trainer.is_global_zero:
        save_weights(model.net, out / runs.WEIGHTS_FILE)
        runs.write_json(out / runs.METRICS_FILE, metrics)
        for leftover in (RESUME_FILE, INTERRUPTED_WEIGHTS_FILE, runs.FIT_FILE):  # finished: nothing left to resume
            (out / leftover).unlink(missing_ok=True)
        log_model(trainer.loggers, out, "backdoored")
        finish_tracking(trainer.loggers)
        poisoned = f"{data.attack.poison_rate:.0%} of every batch" if data.attack.in_batches else len(data.poisoned_positions)
        print("\n" + format_table(["attack", "ACC %", "ASR %", "poisoned", "train s"],
                                  [[data.attack.name, metrics["acc"], metrics["asr"], poisoned, metrics["train_runtime_s"]]]))
        print(f"run directory: {out}")
    return metrics
