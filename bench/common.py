"""Shared pieces of the benchmarks: machine facts, the bundled model, results rows."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results.md"


def machine() -> str:
    import transformers

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"Python {platform.python_version()}")


def matmul_gflops(dtype: torch.dtype = torch.bfloat16, size: int = 2048, repeats: int = 5) -> float:
    """The machine's dense matrix-multiply rate, measured now (the roofline for generation)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def append_result(title: str, rows: list[str]) -> None:
    """Append one measured block to bench/results.md with date, machine and command."""
    command = "python " + " ".join(shlex.quote(arg) for arg in sys.argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = [f"### {title} ({stamp})", "", f"- command: `{command}`", f"- machine: {machine()}", *rows, ""]
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(block) + "\n")
