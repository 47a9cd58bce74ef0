"""Run a function in several local processes joined in one ``torch.distributed`` group (gloo on the
CPU by default): how the curvature estimators are checked and timed on 1 against 2 processes
without a launcher. On GPUs the group comes from Lightning's DDP or torchrun instead."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def shard(items: Sequence[Any] | torch.Tensor, rank: int, world_size: int):
    """This process's share of ``items``: every ``world_size``-th one from ``rank`` on."""
    return items[rank::world_size]


def _entry(rank: int, world_size: int, init_file: str, out_dir: str, backend: str, threads: int | None,
           fn: Callable[..., Any], args: tuple) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.save(fn(*args), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_processes(fn: Callable[..., Any], world_size: int, args: tuple = (), backend: str = "gloo",
                  threads_per_process: int | None = 1) -> list[Any]:
    """``fn(*args)`` in ``world_size`` spawned processes of one process group; returns every rank's
    result (rank order). ``fn`` must be importable (defined at module level); results go through
    ``torch.save``, so keep them to tensors and plain Python values."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    with tempfile.TemporaryDirectory() as tmp:
        init_file = str(Path(tmp) / "init")
        mp.spawn(_entry, args=(world_size, init_file, tmp, backend, threads_per_process, fn, tuple(args)),
                 nprocs=world_size, join=True)
        return [torch.load(Path(tmp) / f"{rank}.pt", weights_only=True) for rank in range(world_size)]
