"""The thread budget: how many compute threads each worker gets so that they add up to the cores.

A worker runs its denoiser in torch and its VAE codec in ONNX Runtime, one after the other, so
both pools may use the worker's whole share. Left alone, every worker process starts torch and
ONNX Runtime pools as wide as the machine: `serve --workers 2` on 2 cores ran 2 x (2 + 2)
threads, and throughput rose when they were cut (issue 14). The service sets them itself:

    threads per worker = max(1, cores // workers)

where `cores` is what this process may really use: its CPU affinity, capped by a cgroup CPU quota
(a container limited to 2 CPUs on a 64-core node sees 64 cores in `os.cpu_count()`).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# cgroup v2 CPU limit ("max 100000" = none, "200000 100000" = 2 CPUs)
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def threads_per_worker(workers_per_host: int, cores: int | None = None) -> int:
    """Compute threads for each of `workers_per_host` workers sharing `cores` (default: all)."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, workers_per_host))


def apply_torch_threads(threads: int) -> None:
    """Size torch's intra-op pool (process-wide: the embedded workers' threads share it)."""
    import torch

    torch.set_num_threads(threads)
    logger.info("torch intra-op threads: %d", threads)
