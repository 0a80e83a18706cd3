"""The process's memory settings: glibc's mapping threshold and the return of freed memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stasc.run import memory

ROOT = Path(__file__).resolve().parents[1]  # the subprocesses import this checkout's stasc


def test_without_glibc_both_are_no_ops(monkeypatch) -> None:
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.limit_retained_memory() is False
    assert memory.release_freed_memory() is False


@pytest.mark.skipif(memory._glibc() is None, reason="glibc only")
def test_on_glibc_the_threshold_is_set_unless_the_environment_sets_it() -> None:
    code = "from stasc.run.memory import limit_retained_memory as limit; print(limit())"

    def made(env: dict[str, str]) -> str:  # a process of its own: the setting lasts for the rest of a process
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT
        ).stdout.strip()

    environment = {name: value for name, value in os.environ.items() if name != "MALLOC_MMAP_THRESHOLD_"}
    assert made(environment) == "True"
    assert made({**environment, "MALLOC_MMAP_THRESHOLD_": "65536"}) == "False"


@pytest.mark.skipif(memory._glibc() is None, reason="glibc only")
def test_freed_heap_memory_goes_back_to_the_system() -> None:
    # 200 MB in 64 kB blocks (under any mapping threshold), each followed by a small block that stays: glibc can
    # shrink its heap only from the top, so it keeps the freed blocks' pages until malloc_trim
    code = """
from stasc.run.memory import release_freed_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
blocks, pins = [], []
for _ in range(3200):
    blocks.append(bytearray(65536))
    pins.append(bytearray(1024))
before = rss()
del blocks
kept = rss()
release_freed_memory()
print(before, kept, rss())
"""
    before, kept, after = map(int, subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.split())
    assert kept > before - 50, f"glibc kept the freed pages ({before} MB before freeing, {kept} MB after)"
    assert after < before - 150, f"{before} MB before freeing, {after} MB after releasing"
