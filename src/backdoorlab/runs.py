"""The run directory, the unit of exchange between entry points.

A training run writes ``model.safetensors`` (the bare network), ``run.json`` (what rebuilds model,
split and trigger: the resolved dataset/attack/model/training config, the seed, the pool
fingerprint), ``metrics.json``, and for pattern triggers ``trigger.safetensors`` plus
``triggered_samples.png``. A purification run writes ``model.safetensors``, ``run.json`` and
``metrics.json`` with ``before``/``after``/``runtime_s``.
"""

from __future__ import annotations

import json
from pathlib import Path

RUN_FILE = "run.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
TRIGGER_FILE = "trigger.safetensors"
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
