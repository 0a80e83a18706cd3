"""One process at a time in a run directory: RUN_DIR/run.lock, held with flock while a run works there.

Two train.py processes on one directory would each write the other's files and delete the other's
temporary files at start-up. The lock file holds the pid of the process that holds it; the kernel
releases the lock when that process ends, however it ends, so a lock left by a killed process is
taken over by the next run without anyone deleting it by hand.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from stasc.errors import StascError
from stasc.run.storage import explained_write_failures

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK_NAME


def _holder(handle: int) -> str:
    """The pid written in an open lock file, or 'unknown' while its holder has not written it yet."""
    os.lseek(handle, 0, os.SEEK_SET)
    text = os.read(handle, 64).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


def _in_use(run_dir: Path, pid: str) -> StascError:
    stop = f" (or stop it: kill {pid})" if pid.isdigit() else ""
    return StascError(
        f"{run_dir} is in use by another stasc process (pid {pid}), which holds {lock_path(run_dir)}. "
        f"Wait for it to finish{stop}, or pass another --output-dir."
    )


def check_unlocked(run_dir: Path) -> None:
    """Refuse early, creating nothing, when another process holds run_dir's lock (RunLock decides for good)."""
    try:
        handle = os.open(lock_path(run_dir), os.O_RDONLY)
    except OSError:
        return  # no lock file (or no directory): nobody holds it
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(run_dir, _holder(handle)) from None
    finally:
        os.close(handle)


class RunLock:
    """The lock of one run directory, held from acquire() to release()."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._handle: int | None = None

    def acquire(self) -> None:
        """Take the lock, creating the run directory; a StascError naming the holder's pid if it is taken."""
        path = lock_path(self.run_dir)
        with explained_write_failures(path):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            while True:
                handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                if not _flock_soon(handle):
                    pid = _holder(handle)
                    os.close(handle)
                    raise _in_use(self.run_dir, pid)
                if _same_file(handle, path):
                    break
                os.close(handle)  # its holder removed the file as we opened it: lock the new one
            previous = _holder(handle)
            if previous not in ("unknown", str(os.getpid())):
                logger.warning(
                    "%s was left by process %s, which no longer holds it (it was killed or crashed); taking it over",
                    path, previous,
                )
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"{os.getpid()}\n".encode("ascii"), 0)
        self._handle = handle

    def release(self) -> None:
        """Remove the lock file and let go of the lock (removing first, so no one locks a file on its way out)."""
        if self._handle is None:
            return
        lock_path(self.run_dir).unlink(missing_ok=True)
        os.close(self._handle)
        self._handle = None


def _flock_soon(handle: int, attempts: int = 5, pause: float = 0.05) -> bool:
    """Take the exclusive lock, trying a few times: check_unlocked holds it shared for an instant."""
    for attempt in range(attempts):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(pause)
    return False


def _same_file(handle: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle).st_ino
    except FileNotFoundError:
        return False
