"""Train a classifier on the poisoned training set and write its run directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from safetensors.torch import save_file
from torchvision.utils import save_image

from backdoorlab import runs
from backdoorlab.builders import build_augment, build_data, build_loggers, build_model, build_trainer
from backdoorlab.config import to_container
from backdoorlab.data.backdoor_data import BackdoorData
from backdoorlab.data.datamodule import BackdoorDataModule
from backdoorlab.lightning.evaluation import evaluation_results
from backdoorlab.lightning.training_module import BackdoorTrainingModule
from backdoorlab.models.checkpoint import save_weights
from backdoorlab.reporting.table import format_table

log = logging.getLogger(__name__)
REBUILD_KEYS = ("dataset", "attack", "model", "training", "seed")
# Bump when a code change alters the weights that training produces from the same config: models
# cached by ``checkpoint=null`` under an older version are then trained again instead of reused.
TRAINING_VERSION = 1


def rebuild_config(cfg: DictConfig) -> dict:
    """The part of the config that determines the trained model (stored in run.json)."""
    return {key: to_container(cfg[key]) if isinstance(cfg[key], DictConfig) else cfg[key] for key in REBUILD_KEYS}


def save_trigger(data: BackdoorData, out: Path, n: int = 8) -> None:
    """``trigger.safetensors`` and a PNG with clean images (top row) above their triggered versions."""
    tensors = data.attack.trigger_tensors()
    if tensors:
        save_file(tensors, str(out / runs.TRIGGER_FILE))
    if data.test_triggered is not None:
        idx = data.test_triggered.indices[:n]
        clean = torch.stack([data.bundle.test.image(int(i)) for i in idx])
        save_image(torch.cat([clean, data.attack.apply(clean)]), out / runs.SAMPLES_FILE, nrow=len(idx), padding=1)


def train_backdoor(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Train per ``cfg`` into ``out_dir``; returns the final ``{"acc", "asr"}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = build_data(cfg)
    model = build_model(cfg, data.bundle)
    t = cfg.training
    module = BackdoorTrainingModule(
        model, data.num_classes, build_augment(cfg.dataset.augment), lr=t.lr, momentum=t.momentum,
        weight_decay=t.weight_decay, nesterov=t.nesterov, schedule=t.schedule, label_smoothing=t.label_smoothing,
    )
    datamodule = BackdoorDataModule(data, t.batch_size, role="train", eval_batch_size=t.eval_batch_size, num_workers=t.num_workers)
    trainer = build_trainer(cfg, build_loggers(cfg), max_epochs=t.epochs, num_sanity_val_steps=0)
    run = {
        "format": runs.FORMAT,
        "kind": "train",
        "attack_name": data.attack.name,
        "config": rebuild_config(cfg),
        "pool_fingerprint": data.split.fingerprint(),
        "num_classes": data.num_classes,
        "poisoned_samples": len(data.poisoned_positions),
        "train_samples": len(data.train),
        "pool_samples": len(data.pool),
    }
    if trainer.is_global_zero:
        runs.write_json(out / runs.RUN_FILE, run)
        save_trigger(data, out)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule)
    except BaseException:
        if trainer.is_global_zero:
            save_weights(model.net, out / "model.interrupted.safetensors")
            log.error("training stopped; the weights so far are in %s", out / "model.interrupted.safetensors")
        raise
    metrics = {**evaluation_results(trainer), "train_runtime_s": time.perf_counter() - start, "epochs": t.epochs}
    metrics.setdefault("asr", None)
    if trainer.is_global_zero:
        save_weights(model.net, out / runs.WEIGHTS_FILE)
        runs.write_json(out / runs.METRICS_FILE, metrics)
        print("\n" + format_table(["attack", "ACC %", "ASR %", "poisoned", "train s"],
                                  [[data.attack.name, metrics["acc"], metrics["asr"], len(data.poisoned_positions), metrics["train_runtime_s"]]]))
        print(f"run directory: {out}")
    return metrics
