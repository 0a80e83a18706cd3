"""The process's memory: its peak resident size, for the run's metrics, and what the C allocator keeps.

Linux keeps the peak (VmHWM) per process and lets a process reset it, so each iteration can report its
own peak; elsewhere the process's peak so far (getrusage) is reported.

glibc's malloc keeps memory a program frees for its next allocations instead of returning it to the
system. Sampling and fine-tuning free hundreds of MB of tensors of ever-changing sizes (a KV cache one
column wider at every decode step), so the process would keep growing from call to call. Two settings stop
that: allocations of 1 MB and more get pages of their own, returned to the system when freed (glibc would
otherwise raise that threshold to 32 MB as soon as a large block is freed), and after each sampling call
and each fine-tuning the memory freed inside the heaps is returned too (`malloc_trim`). The first costs
time, pages mapped and zeroed again at every decode step: `bench/memory.py --loop` measures the trade
(MALLOC_MMAP_THRESHOLD_ in the environment overrides it). Both are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import os
import resource
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 1 << 20  # bytes: allocations at least this large are mapped, and unmapped when freed


def peak_rss_mb() -> float:
    """The largest resident set size since the last reset_peak_rss (or since the process started), in MB."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def reset_peak_rss() -> None:
    """Start measuring the peak afresh (Linux only; elsewhere the peak keeps counting from the start)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (which has mallopt and malloc_trim), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols the process has loaded, the C library's among them
        libc.gnu_get_libc_version  # glibc only (musl has no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


def limit_retained_memory() -> bool:
    """Have glibc map allocations of MMAP_THRESHOLD bytes and more on their own pages, returned to the system
    when freed, for the rest of the process (unless MALLOC_MMAP_THRESHOLD_ in the environment already sets it).
    Whether the setting was made."""
    libc = _glibc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    made = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not made:
        logger.debug("mallopt(M_MMAP_THRESHOLD, %d) was refused", MMAP_THRESHOLD)
    return made


def release_freed_memory() -> bool:
    """Return to the system the memory freed since the last call (Python's unreachable cycles first: a Trainer
    lives in some), instead of leaving it in glibc's heaps. Whether glibc gave any back."""
    gc.collect()
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
