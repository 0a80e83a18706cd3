"""How many CPU threads torch computes with while stasc samples and trains: chosen, not inherited.

torch's own default is one thread per core. An OpenMP thread that another process preempts makes the other
threads wait for it at every matrix product, so on a machine whose cores other jobs also use a sampler with
a thread per core slows down many times over, while one with a core to spare holds its speed
(bench/threads.py measures both, alone and beside a competing process).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

AUTO = "auto"


def usable_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyperthreads of one core count once)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:  # no topology (not Linux): each CPU its own core
            cores.add(str(cpu))
    return max(1, len(cores))


def resolve_threads(setting: str) -> int:
    """The thread count a --threads setting stands for: a number as given; 'auto' is OMP_NUM_THREADS when the
    environment sets it (a user, torchrun or `accelerate launch` chose), else one thread fewer than the usable
    cores, at least one."""
    if setting != AUTO:
        return int(setting)
    environment = os.environ.get("OMP_NUM_THREADS", "")
    if environment.isdigit() and int(environment) >= 1:
        return int(environment)
    return max(1, usable_cores() - 1)


@contextlib.contextmanager
def cpu_threads(setting: str) -> Iterator[int]:
    """torch's intra-op thread count set to the setting's for the block (the whole process), then put back."""
    import torch  # here, so that command lines can resolve a setting before loading torch

    count = resolve_threads(setting)
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    logger.info("Computing on %d CPU thread%s (--threads %s)", count, "" if count == 1 else "s", setting)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)
