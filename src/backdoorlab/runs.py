"""The run directory, the unit of exchange between entry points.

A training run writes ``model.safetensors`` (the bare network), ``run.json`` (what rebuilds model,
split and trigger: the resolved dataset/attack/model/training config, the seed, the pool
fingerprint), ``metrics.json``, and ``trigger.safetensors`` (the tensors of the trigger the model was
trained with: purify and analyze evaluate ASR with them, so a run directory copied to another machine
gives the same ASR there) plus ``triggered_samples.png``. A purification run writes
``model.safetensors``, ``run.json``, ``metrics.json`` with ``before``/``after``/``runtime_s`` and a copy
of the trigger of the model it purified.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RUN_FILE = "run.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
TRIGGER_FILE = "trigger.safetensors"
FIT_FILE = "fit.safetensors"  # what a fitted attack made for its training set (CLB's images), while training runs
SAMPLES_FILE = "triggered_samples.png"
FORMAT = "backdoorlab-run/1"


def write_json(path: Path, payload: dict) -> None:
    """Write atomically (temporary file, then rename) so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def is_run_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / RUN_FILE).is_file()


def read_run(path: str | Path) -> dict:
    run = json.loads((Path(path) / RUN_FILE).read_text())
    if run.get("format") != FORMAT:
        raise ValueError(f"{path} was written by an unknown format {run.get('format')!r}, expected {FORMAT!r}")
    return run


def is_complete(path: str | Path) -> bool:
    """A finished training run: weights, run.json and metrics.json all present."""
    p = Path(path)
    return all((p / f).is_file() for f in (RUN_FILE, WEIGHTS_FILE, METRICS_FILE))


def write_tensors(file: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """``tensors`` (detached, on the CPU) into the safetensors ``file``."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(file))


def write_trigger(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """``trigger.safetensors`` in the run directory ``path`` (nothing for an attack without tensors)."""
    if tensors:
        write_tensors(Path(path) / TRIGGER_FILE, tensors)


def read_trigger(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The stored trigger of the run directory ``path``, or None where it has none."""
    return read_tensors(Path(path) / TRIGGER_FILE)


def read_tensors(file: str | Path) -> dict[str, torch.Tensor] | None:
    """The tensors of the safetensors ``file``, or None where there is no such file."""
    return load_file(str(file)) if Path(file).is_file() else None


@contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if needed) while inside: parallel jobs of a sweep that
    need the same cached model take turns, so one trains it and the others reuse it. A no-op in the processes
    that a distributed run starts for its other ranks (LOCAL_RANK > 0), which follow rank 0 and must not wait
    on its lock, and where the platform has no ``fcntl``."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    if int(os.environ.get("LOCAL_RANK", "0")) > 0:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
