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


def question_prompts(tokenizer, questions: int) -> list[list[int]]:
    """Token ids of the loop's initial-answer prompts for the first `questions` built-in training questions."""
    from stasc.config import DEFAULT_INSTRUCTIONS
    from stasc.core.prompts import initial_messages
    from stasc.data import load_qa_splits

    train, _ = load_qa_splits("builtin", max_train=questions)
    return [
        tokenizer.apply_chat_template(initial_messages(q.question, DEFAULT_INSTRUCTIONS), add_generation_prompt=True,
                                      tokenize=True, return_dict=False)
        for q in train
    ]
