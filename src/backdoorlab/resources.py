"""What a run costs besides time: peak memory."""

from __future__ import annotations

import resource
import sys

import torch


class PeakMemory:
    """Peak memory from construction to :meth:`read`: the CUDA caching allocator's peak of allocated
    tensors where a GPU was used, else the process's peak resident set size (which includes the data
    set and everything loaded before, so compare it only between runs of the same protocol)."""

    def __init__(self):
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def read(self) -> dict[str, float | str]:
        if self.cuda and torch.cuda.max_memory_allocated() > 0:
            return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20, "memory_kind": "cuda_allocated"}
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return {"peak_memory_mb": rss / (2**20 if sys.platform == "darwin" else 2**10), "memory_kind": "process_rss"}
