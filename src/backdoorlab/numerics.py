"""What a run computes in: its precision (Lightning's ``trainer.precision``), the memory format of the
model and its batches (``trainer.channels_last``), ``torch.compile`` (``trainer.compile``) and where
the batches are gathered (``trainer.data_on_device``).

Mixed precision covers first-order work only. Everything that differentiates through gradients
(FIP's suppressor, I-BAU's hypergradient, the curvature estimators) runs inside
:func:`full_precision`, in fp32 whatever the run's setting.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

# backdoorlab's own keys of the ``trainer`` group: not arguments of lightning.Trainer
RUNTIME_KEYS = ("channels_last", "compile", "data_on_device")
DEFAULTS = {"precision": "32-true", "channels_last": False, "compile": False}
_warned: set[str] = set()


def bf16_supported(accelerator: str) -> bool:
    """Whether ``accelerator`` (``cpu``, ``gpu``/``cuda``, ``auto``) computes bf16 natively: the
    CPU's oneDNN bf16 kernels (AVX-512 BF16 or AMX), or a GPU that supports bf16."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(checker()) if checker is not None else False


def resolve_precision(precision: str, accelerator: str) -> str:
    """``precision``, or ``32-true`` with one logged line where bf16 is asked for on hardware without it."""
    precision = str(precision)
    if precision.startswith("bf16") and not bf16_supported(str(accelerator)):
        if precision not in _warned:
            _warned.add(precision)
            log.warning("trainer.precision=%s: this %s has no native bf16 support; running in fp32 (32-true)",
                        precision, "GPU" if accelerator in ("gpu", "cuda") else "CPU")
        return "32-true"
    return precision


def numerics(trainer: dict) -> dict:
    """The settings of the ``trainer`` group that change the numbers a run computes (with bf16 on
    hardware without it resolved to what runs): written into run.json."""
    return {
        "precision": resolve_precision(trainer.get("precision", DEFAULTS["precision"]), trainer.get("accelerator", "cpu")),
        "channels_last": bool(trainer.get("channels_last", DEFAULTS["channels_last"])),
        "compile": bool(trainer.get("compile", DEFAULTS["compile"])),
    }


def non_default(settings: dict) -> dict:
    """The entries of :func:`numerics` that differ from fp32, contiguous and eager."""
    return {k: v for k, v in settings.items() if DEFAULTS.get(k) != v}


@contextmanager
def full_precision() -> Iterator[None]:
    """Compute in fp32 inside, whatever autocast the caller runs under (inputs must be fp32)."""
    with torch.autocast("cpu", enabled=False):
        if torch.cuda.is_available():
            with torch.autocast("cuda", enabled=False):
                yield
        else:
            yield
