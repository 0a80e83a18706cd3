"""Atomic writes: a file or directory is either absent or complete, never half-written.

Everything is written next to its destination under a temporary name and renamed into
place with os.replace, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from stasc.errors import StascError

TEMP_PREFIX = ".tmp-"
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_OS_ERROR = re.compile(r"os error (\d+)")  # how safetensors (Rust) reports the system's error in its message


def write_failure(error: BaseException, path: Path) -> StascError | None:
    """The error to show for a write to path that failed because the disk is full or not writable (None
    for any other failure). Library errors that wrap the system's (safetensors) are recognised too."""
    number = error.errno if isinstance(error, OSError) else None
    if number is None:
        match = _OS_ERROR.search(str(error))
        number = int(match.group(1)) if match else None
    if number in DISK_FULL:
        return StascError(
            f"The disk is full: writing {path} failed ({os.strerror(number)}). Free some space and rerun the same "
            "command: the run resumes from its last completed step, and the files already written are unchanged."
        )
    if number in NOT_WRITABLE:
        target = getattr(error, "filename", None) or path
        return StascError(
            f"{target} cannot be written ({os.strerror(number)}). Make the run directory writable, or pass another "
            "--output-dir (a run directory must be writable, even to resume a finished run)."
        )
    return None


@contextlib.contextmanager
def explained_write_failures(path: Path) -> Iterator[None]:
    """Turn a full disk or a read-only directory met while writing path into an error that says so."""
    try:
        yield
    except Exception as error:
        explained = write_failure(error, path)
        if explained is None:
            raise
        raise explained from None


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(destination: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces destination."""
    with explained_write_failures(destination):
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=TEMP_PREFIX + destination.name + ".", dir=destination.parent)
        os.close(handle)
        temporary = Path(name)
        try:
            yield temporary
            _fsync_file(temporary)
            os.replace(temporary, destination)
        finally:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(destination: Path) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it takes destination's place."""
    with explained_write_failures(destination):
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + destination.name + ".", dir=destination.parent))
        try:
            yield temporary
            for child in temporary.iterdir():
                _fsync_file(child)
            if destination.exists():
                shutil.rmtree(destination)
            os.replace(temporary, destination)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)


def write_json(path: Path, value: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)


def remove_leftovers(directory: Path) -> None:
    """Delete temporary files and directories an interrupted run left behind."""
    if not directory.is_dir():
        return
    for leftover in directory.rglob(TEMP_PREFIX + "*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a table the run wrote, turning a damaged file into an error that says how to recover."""
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise StascError(f"{path} is missing. Delete its iteration directory and rerun the same command.") from None
    except Exception as error:  # pyarrow raises several types for truncated or foreign files
        raise StascError(
            f"{path} is damaged ({type(error).__name__}: {str(error).splitlines()[0][:200]}). Delete it and rerun "
            "the same command: that step is redone and nothing else is lost."
        ) from None
