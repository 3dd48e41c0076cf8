"""How many CPU threads torch trains with.

torch starts one intra-op thread per core. The heads trained here are small
matrix products, where threads mostly wait on each other, and on a machine
whose cores are busy with other work a waiting thread stalls the rest:
measured on a loaded 2-core machine, the demo took 49 s with torch's default
of 2 threads and 17 s with 1. So unless the user chose (--threads, or
OMP_NUM_THREADS / MKL_NUM_THREADS, which torch reads itself), training uses
the cores the rest of the machine leaves idle, at most SMALL_MODEL_THREADS.
"""

from __future__ import annotations

import logging
import os

import torch

from dmu_migrate.errors import InputError

log = logging.getLogger(__name__)

# A cap for the small heads, not a measured optimum; big plug-in models (image
# backbones) may want more: --threads N.
SMALL_MODEL_THREADS = 4
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # a container's or taskset's share, not the host's
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_threads() -> int:
    """The cores not busy with other work (1-minute load average), 1 to SMALL_MODEL_THREADS."""
    cores = usable_cores()
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(SMALL_MODEL_THREADS, cores, round(cores - busy)))


def use_threads(requested: int) -> int:
    """Set torch's CPU threads: ``requested`` (> 0), else the environment's, else auto_threads."""
    if requested < 0:
        raise InputError(f"--threads must be >= 0 (0 = automatic), got {requested}")
    if requested > 0:
        threads, why = requested, "--threads"
    elif any(os.environ.get(name) for name in THREAD_ENV):
        threads, why = torch.get_num_threads(), "from the environment"
    else:
        threads, why = auto_threads(), f"idle cores of {usable_cores()}"
    torch.set_num_threads(threads)
    log.info("torch trains with %d CPU thread(s) (%s)", threads, why)
    return threads
