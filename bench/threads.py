"""Sampler throughput by CPU thread count, alone and beside a competing process: what --threads auto picks.

    python bench/threads.py --quick     # 8 questions, 1 round, 30 s cap: checks the script (a few minutes)
    python bench/threads.py             # 64 questions x 4 samples, 3 rounds (about 15 minutes on 2 cores)

stasc's sampler draws the generation benchmark's sequences (bundled model, built-in training questions, the
loop's batch of 256 sequences, T 0.6, top-p 0.9, 64 new tokens) with each thread count, in three conditions:
alone; beside a busy loop (a Python process spinning on one core, like any single-threaded job); and beside a
second sampler (another process sampling the bundled model on one thread, like a second run of stasc). The
competitors are started once and paused (SIGSTOP) between their measurements, so every measurement of a round
runs on the same machine minutes; the conditions are interleaved and their order rotates from round to round.
A measurement that runs past --limit seconds is cut there and counted over the tokens drawn so far (marked *).
Tokens are counted up to and including end-of-turn, as in bench/generation.py. The baseline is torch's
default thread count (one per core, or OMP_NUM_THREADS): the results end with --threads auto's tok/s as a
ratio of the baseline's in each condition.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import append_result, question_prompts  # noqa: E402
from bench.generation import our_batches  # noqa: E402
from stasc.config import StascConfig, SuggestingParser  # noqa: E402
from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path  # noqa: E402
from stasc.sampling.cpu_engine.decoding import DecodeSettings, decode, stop_token_ids  # noqa: E402
from stasc.sampling.threads import resolve_threads, usable_cores  # noqa: E402

logger = logging.getLogger("bench.threads")

ALONE, BUSY, SAMPLER = "alone", "beside a busy loop", "beside a second sampler"
SETTINGS = DecodeSettings(64, 0.6, 0.9)


class _Cut(Exception):
    """A measurement ran past its time limit."""


def sample_rate(model, tokenizer, prompts: list[list[int]], samples: int, batch: int, limit: float) -> tuple[float, bool]:
    """Tokens per second of stasc's sampler on the prompts, and whether the measurement was cut at `limit` s."""
    stops = stop_token_ids(model, tokenizer)
    drawn: dict[str, list[list[int]]] = {}
    tokens, start = 0, time.perf_counter()

    def on_step(outputs: list[list[int]]) -> None:
        drawn["outputs"] = outputs
        if time.perf_counter() - start > limit:
            raise _Cut

    for number, indices in enumerate(our_batches(prompts, max(1, batch // samples))):
        try:
            rows = decode(model, [prompts[i] for i in indices], samples, SETTINGS, pad_token_id=tokenizer.pad_token_id,
                          stop_ids=stops, seed=number, on_step=on_step)
        except _Cut:
            tokens += sum(len(row) for row in drawn["outputs"])
            return tokens / (time.perf_counter() - start), True
        tokens += sum(len(row) + (len(row) < SETTINGS.max_new_tokens) for row in rows)  # + end-of-turn
    return tokens / (time.perf_counter() - start), False


def compete() -> None:
    """The second sampler: the bundled model sampling on one thread until it is killed."""
    torch.set_num_threads(1)
    path = resolve_model_path("bundled")
    model, tokenizer = load_model(path, dtype=pick_dtype("auto")), load_tokenizer(path)
    prompts = question_prompts(tokenizer, 16)
    print("ready", flush=True)
    with torch.inference_mode():
        while True:
            sample_rate(model, tokenizer, prompts, 4, 64, limit=float("inf"))


class Competitors:
    """The competing processes, started once, paused except while a measurement needs one."""

    def __init__(self) -> None:
        self.processes = {
            BUSY: subprocess.Popen([sys.executable, "-c", "while True: pass"]),
            SAMPLER: subprocess.Popen([sys.executable, __file__, "--compete"], stdout=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}),
        }
        ready = self.processes[SAMPLER].stdout.readline()  # type: ignore[union-attr]
        if ready.strip() != "ready":
            self.stop()
            raise SystemExit("the second sampler did not start; run `python bench/threads.py --compete` to see why")
        for process in self.processes.values():
            process.send_signal(signal.SIGSTOP)

    @contextlib.contextmanager
    def running(self, condition: str) -> Iterator[None]:
        """The condition's competitor runs for the block (after 2 s to get going); none for ALONE."""
        process = self.processes.get(condition)
        if process is None:
            yield
            return
        process.send_signal(signal.SIGCONT)
        time.sleep(2)
        try:
            yield
        finally:
            process.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait()


def cell(runs: list[tuple[float, bool]]) -> str:
    rates = " / ".join(f"{rate:.0f}{'*' if cut else ''}" for rate, cut in runs)
    return f"{statistics.median(rate for rate, _ in runs):.0f} ({rates})"


def main() -> None:
    parser = SuggestingParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 questions, 1 round, a 30 s cap")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement, interleaved")
    parser.add_argument("--limit", type=float, default=60, help="seconds after which a measurement is cut")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="thread counts to measure besides --threads auto's and torch's default (default: 1, 2, "
                        "one fewer than the cores and all cores)")
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/results.md")
    parser.add_argument("--compete", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compete:
        compete()
        return
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    questions, rounds, limit = (8, 1, 30.0) if args.quick else (args.questions, args.rounds, args.limit)
    cores = usable_cores()
    default, auto = torch.get_num_threads(), resolve_threads("auto")  # the baseline: torch's inherited count
    counts = sorted(set(args.threads or [1, 2, max(1, cores - 1), cores]) | {default, auto})
    batch = StascConfig().generation_batch_size

    path = resolve_model_path("bundled")
    tokenizer, model = load_tokenizer(path), load_model(path, dtype=pick_dtype("auto"))
    prompts = question_prompts(tokenizer, questions)
    conditions = [(threads, condition) for condition in (ALONE, BUSY, SAMPLER) for threads in counts]
    runs: dict[tuple[int, str], list[tuple[float, bool]]] = {key: [] for key in conditions}
    competitors = Competitors()
    try:
        with torch.inference_mode():
            sample_rate(model, tokenizer, prompts[:2], 2, batch, limit)  # warm up kernels
            for number in range(rounds):
                shift = number % len(conditions)
                for threads, condition in conditions[shift:] + conditions[:shift]:
                    torch.set_num_threads(threads)
                    with competitors.running(condition):
                        runs[threads, condition].append(
                            sample_rate(model, tokenizer, prompts, args.samples, batch, limit))
                    logger.info("round %d: %d thread(s) %s: %.0f tok/s", number + 1, threads, condition,
                                runs[threads, condition][-1][0])
    finally:
        competitors.stop()

    worst = {threads: min(rate for condition in (BUSY, SAMPLER) for rate, _ in runs[threads, condition])
             for threads in counts}
    alone = {threads: statistics.median(rate for rate, _ in runs[threads, ALONE]) for threads in counts}
    steadiest = max(counts, key=lambda threads: worst[threads])
    ratios = {condition: statistics.median(rate for rate, _ in runs[auto, condition])
              / statistics.median(rate for rate, _ in runs[default, condition]) for condition in (ALONE, BUSY, SAMPLER)}
    rows = [
        f"- setting: {questions} questions x {args.samples} samples, batch {batch} sequences, {pick_dtype('auto')}, "
        f"T {SETTINGS.temperature}, top-p {SETTINGS.top_p}, max {SETTINGS.max_new_tokens} new tokens; {rounds} "
        f"round(s), conditions interleaved; * = cut at {limit:.0f} s; {cores} usable cores, --threads auto = "
        f"{auto} here, torch's default {default}"
        + (f" (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})" if os.environ.get("OMP_NUM_THREADS") else ""),
        "- tok/s, median (each run):",
        "",
        "| threads | " + " | ".join((ALONE, BUSY, SAMPLER)) + " |",
        "|---|---|---|---|",
        *(f"| {threads} | " + " | ".join(cell(runs[threads, condition]) for condition in (ALONE, BUSY, SAMPLER))
          + " |" for threads in counts),
        "",
        f"- steadiest (highest slowest run beside a competitor): {steadiest} thread(s), {worst[steadiest]:.0f} tok/s at "
        f"worst, {alone[steadiest]:.0f} alone; the fastest alone: {max(counts, key=alone.get)} thread(s), "
        f"{max(alone.values()):.0f} tok/s alone, {worst[max(counts, key=alone.get)]:.0f} at worst",
        f"- --threads auto ({auto}) against torch's default ({default}), ratio of median tok/s: "
        + ", ".join(f"{ratios[condition]:.2f} {condition}" for condition in (ALONE, BUSY, SAMPLER))
        + f"; of the slowest runs beside a competitor: {worst[auto] / worst[default]:.2f}",
    ]
    if not args.no_write:
        append_result("Threads" + (" (quick)" if args.quick else ""), rows)
    print("\n".join(rows))
    print(f"steadiest_threads={steadiest}")
    print(f"auto_vs_default_worst={worst[auto] / worst[default]:.2f}")


if __name__ == "__main__":
    main()
