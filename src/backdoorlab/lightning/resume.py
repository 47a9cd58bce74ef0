"""Resuming an interrupted training run from its last finished epoch, with the same result.

:class:`EpochCheckpoint` writes ``resume.ckpt`` (weights, optimiser, schedule, loop position and the
random number generators' states) at the end of every epoch, atomically, so that a run stopped by
Ctrl-C or a crash continues from its last finished epoch when started again on the same run
directory. Restoring the generators makes the data order and augmentation after the restart those
of an uninterrupted run: on the CPU at the same thread count the resumed run ends bit for bit where
the uninterrupted one does (a test checks it); on a GPU, non-deterministic kernels may differ.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

RESUME_FILE = "resume.ckpt"
RNG_KEY = "backdoorlab_rng"
ELAPSED_KEY = "backdoorlab_elapsed_s"


def rng_state() -> dict:
    """The Python, NumPy and torch (CPU and CUDA) generators' states, in types that load weights-only."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochCheckpoint(L.Callback):
    """Save ``<directory>/resume.ckpt`` after every training epoch (after its validation), written to
    a temporary file first so that a crash while saving keeps the previous one. :meth:`elapsed` is
    the training time of the whole run: the finished epochs before a restart plus the time since."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / RESUME_FILE
        self.before_restart = 0.0
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.before_restart + time.perf_counter() - self.start

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tmp = self.path.with_suffix(".ckpt.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state; every rank calls it, rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = rng_state()
        checkpoint[ELAPSED_KEY] = self.elapsed()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if RNG_KEY in checkpoint:
            set_rng_state(checkpoint[RNG_KEY])
        self.before_restart = float(checkpoint.get(ELAPSED_KEY, 0.0))
