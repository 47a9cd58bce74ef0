"""Measure the curvature of a model's loss (``python -m backdoorlab.analyze``): lambda_max, the top
eigenvalues, the trace and the spectral density on clean images, in one process or sharded over
several (``trainer=ddp_sim``: 2 CPU processes; ``trainer=ddp``: the node's GPUs); writes
``curvature.json`` and ``esd.png`` into the run directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from backdoorlab import runs
from backdoorlab.builders import build_curvature_settings, build_task
from backdoorlab.curvature.measure import CurvatureSettings, measure_curvature
from backdoorlab.curvature.processes import run_processes
from backdoorlab.errors import ConfigError
from backdoorlab.purification_run import load_backdoored
from backdoorlab.reporting.plots import plot_spectral_density
from backdoorlab.reporting.table import format_table

log = logging.getLogger(__name__)
CURVATURE_FILE, ESD_FILE = "curvature.json", "esd.png"


def _processes(trainer: DictConfig) -> tuple[int, str]:
    """How many processes share the images, and the device kind, from the ``trainer`` group."""
    accelerator = str(trainer.get("accelerator", "cpu"))
    devices = trainer.get("devices", 1)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} needs a GPU, and torch sees none: use trainer=cpu or trainer=ddp_sim")
    if devices in (-1, "-1", "auto"):
        devices = torch.cuda.device_count() if gpu else 1
    if not str(devices).isdigit() or int(devices) < 1:
        raise ConfigError(f"trainer.devices must be a count of devices for the analysis, got {devices!r}")
    return int(devices), "cuda" if gpu else "cpu"


def _measure_on_rank(model, x, y, settings: CurvatureSettings, kind: str, task) -> dict:
    """One process of a sharded measurement (module level: spawned processes import it)."""
    import torch.distributed as dist

    device = torch.device(kind, dist.get_rank()) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(device)
    return measure_curvature(model.to(device), x, y, settings, task)


def analyze(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Load the model (as purify does), draw the images, measure, write ``curvature.json`` and ``esd.png``."""
    out = Path(out_dir)
    settings = build_curvature_settings(cfg.analysis)  # bad settings stop here, before any model is trained
    processes, kind = _processes(cfg.trainer)
    weights, data, model = load_backdoored(cfg)
    x, y = data.clean_images(str(cfg.analysis.data), cfg.analysis.samples, int(cfg.analysis.seed))
    model.eval()
    start = time.perf_counter()
    if processes == 1:
        result = measure_curvature(model.to(kind), x.to(kind), y.to(kind), settings, build_task(cfg))
    else:
        threads = max(1, torch.get_num_threads() // processes) if kind == "cpu" else None
        result = run_processes(_measure_on_rank, processes, args=(model, x, y, settings, kind, build_task(cfg)),
                               backend="nccl" if kind == "cuda" else "gloo", threads_per_process=threads)[0]
    result["runtime_s"] = time.perf_counter() - start
    result.update({"checkpoint": str(weights), "data": str(cfg.analysis.data), "device": kind,
                   "threads": torch.get_num_threads() if kind == "cpu" else None})
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / CURVATURE_FILE, result)
    if "esd" in result:
        plot_spectral_density(result["esd"]["nodes"], result["esd"]["weights"], float(cfg.analysis.esd_sigma), out / ESD_FILE,
                              title=f"{Path(str(weights)).parent.name}: {settings.curvature}, {result['samples']} images")
    rows = [["lambda_max", result["lambda_max"]], ["trace", result["trace"]], ["products", result["products"]],
            ["seconds", result["runtime_s"]]]
    print("\n" + format_table(["curvature", "value"], rows))
    print(f"run directory: {out}" + (f" ({processes} processes)" if processes > 1 else ""))
    log.info("curvature of %s: lambda_max %.4g, trace %.4g (%d processes)", weights, result["lambda_max"], result["trace"],
             processes)
    return result
