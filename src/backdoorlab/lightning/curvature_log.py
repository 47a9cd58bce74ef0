"""A callback that measures lambda_max and the trace of the loss during training or purification
(the papers' curves): every N epochs or steps, on fixed clean images, over the parameters being
trained (every weight for training, FIP and fine-tuning; the masks for NFT, the shifts for Fast
FIP). Writes ``curvature.csv`` and ``curvature.png`` into the run directory. Under DDP every
process measures on its shard of the images and the products are all-reduced."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import lightning as L
import torch

from backdoorlab.curvature.measure import CurvatureSettings, measure_curvature
from backdoorlab.reporting.collect import CURVATURE_CSV as CSV_FILE, read_curvature_rows
from backdoorlab.reporting.plots import plot_curvature_curves
from backdoorlab.tasks.base import Task
from backdoorlab.tasks.classification import CLASSIFICATION

PLOT_FILE = "curvature.png"
COLUMNS = ["epoch", "step", "lambda_max", "trace", "trace_std_error", "seconds"]


class CurvatureLog(L.Callback):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, settings: CurvatureSettings, out_dir: str | Path,
                 every_n_epochs: int = 0, every_n_steps: int = 0, resume: bool = False, task: Task = CLASSIFICATION):
        """``resume``: the run continues an interrupted one, whose rows in ``curvature.csv`` are kept."""
        if every_n_epochs < 0 or every_n_steps < 0 or not (every_n_epochs or every_n_steps):
            raise ValueError("CurvatureLog needs every_n_epochs > 0 or every_n_steps > 0")
        self.images, self.labels, self.task = images, labels, task
        self.settings = dataclasses.replace(settings, esd=False)
        self.out_dir, self.every_n_epochs, self.every_n_steps = Path(out_dir), int(every_n_epochs), int(every_n_steps)
        self.rows: list[dict] = read_curvature_rows(self.out_dir / CSV_FILE) if resume and (self.out_dir / CSV_FILE).is_file() else []

    def measure(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """One row: the curvature at the current weights, BatchNorm in eval mode, nothing changed."""
        model = module.model
        was_training = model.training
        model.eval()
        try:
            result = measure_curvature(model, self.images.to(module.device), self.labels.to(module.device), self.settings, self.task)
        finally:
            model.train(was_training)
        self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step, "lambda_max": result["lambda_max"],
                          "trace": result["trace"], "trace_std_error": result["trace_std_error"],
                          "seconds": sum(result["seconds"].values())})
        if trainer.is_global_zero:
            self.write()

    def on_train_start(self, trainer, module):
        if not self.rows:  # the starting point of the curve (a resumed run has it already)
            self.measure(trainer, module)

    def on_train_epoch_end(self, trainer, module):
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.measure(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.measure(trainer, module)

    def write(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / CSV_FILE, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        plot_curvature_curves(self.rows, self.out_dir / PLOT_FILE, by="epoch" if self.every_n_epochs else "step")
