"""Peak resident memory of this process, for the run's metrics.

Linux keeps the peak (VmHWM) per process and lets a process reset it, so each iteration can report its
own peak; elsewhere the process's peak so far (getrusage) is reported.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


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
