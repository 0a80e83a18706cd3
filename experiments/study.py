"""The self-correction study behind docs/results.md: which configuration teaches the bundled model to fix
its own answers. Settings are chosen on a validation part of the training questions, never on the test split.

    python experiments/study.py validation           # the levers at the study budget, on validation questions
    python experiments/study.py validation --only own-answer-fixes fixed-init
    python experiments/study.py test                 # the default, STaR and Self-Refine on the test split
    python experiments/report.py runs/study          # then the tables, plots and CSV of docs/results.md

Runs go to runs/study/<split>-<configuration> and resume when a command is repeated; `--workers 2` runs two
side by side, each on one CPU thread. `test` runs python train.py's defaults (chosen on validation) and the
two baselines at the same budget and on the same test questions: STaR (--method star) and Self-Refine
(the base model correcting itself three times, --eval-rounds 3).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("study")

sys.path.insert(0, str(ROOT))

from stasc.config import SuggestingParser  # noqa: E402

VALIDATION = ["--evaluate-on", "validation", "--eval-samples", "2", "--max-test-questions", "none"]
BUDGET = ["--max-train-questions", "256", "--n-init", "4", "--n-corr", "2"]  # the study's common budget
DEFAULT_BUDGET = ["--max-train-questions", "128", "--n-init", "4", "--n-corr", "1"]  # what fits a default run

CONFIGURATIONS: dict[str, tuple[str, list[str]]] = {
    # name: (what it is, flags on top of VALIDATION)
    "enf": ("the paper's ENF (non-decreasing filter: wrong->right and right->right)",
            [*BUDGET, "--variant", "ENF", "--no-own-answer-fixes", "--iterations", "2"]),
    "balanced": ("balanced filter, one right->right pair per fix",
                 [*BUDGET, "--variant", "EBF", "--no-own-answer-fixes", "--iterations", "3"]),
    "rationalize": ("balanced + hinted rationalizations",
                    [*BUDGET, "--variant", "EBF", "--rationalize", "--no-own-answer-fixes", "--iterations", "2"]),
    "own-answer-fixes": ("balanced + own-answer fixes, evolving initialization and fine-tuning",
                         [*BUDGET, "--variant", "EBE", "--own-answer-fixes", "--iterations", "3"]),
    "fixed-init": ("balanced + own-answer fixes, initial answers fixed to the base model's (FBE)",
                   [*BUDGET, "--variant", "FBE", "--own-answer-fixes", "--iterations", "3"]),
    "fixed-init-small": ("FBE + own-answer fixes at the budget of a default run",
                         [*DEFAULT_BUDGET, "--variant", "FBE", "--own-answer-fixes", "--iterations", "2"]),
    "fixed-init-small-greedy": ("the same, 3 iterations, evaluated greedily (--eval-temperature 0)",
                                [*DEFAULT_BUDGET, "--variant", "FBE", "--own-answer-fixes", "--iterations", "3",
                                 "--eval-temperature", "0"]),
    "fixed-init-64-greedy": ("the same at 64 training questions (a run that would fit 10 minutes)",
                             ["--max-train-questions", "64", "--n-init", "4", "--n-corr", "1", "--variant", "FBE",
                              "--own-answer-fixes", "--iterations", "3", "--eval-temperature", "0"]),
    "fixed-init-128x2-greedy": ("the same at 128 questions x 2 initial answers (half the sampling of a default run)",
                                ["--max-train-questions", "128", "--n-init", "2", "--n-corr", "1", "--variant", "FBE",
                                 "--own-answer-fixes", "--iterations", "3", "--eval-temperature", "0",
                                 "--eval-samples", "1", "--threads", "2"]),
}
TEST_CONFIGURATIONS: dict[str, list[str]] = {
    "default": [],
    "star": ["--method", "star", "--initialization", "evolving"],
    "self-refine": ["--iterations", "0", "--eval-rounds", "3"],
}


def command(split: str, name: str, flags: list[str]) -> list[str]:
    evaluation = VALIDATION if split == "validation" else []
    return [sys.executable, str(ROOT / "train.py"), *evaluation, *flags,
            "--output-dir", str(ROOT / "runs" / "study" / f"{split}-{name}"), "--log-level", "warning"]


def run(arguments: list[str], threads: str | None) -> int:
    environment = {**os.environ, **({"OMP_NUM_THREADS": threads} if threads else {})}
    logger.info("+ %s", " ".join(arguments[1:]))
    return subprocess.run(arguments, env=environment, cwd=ROOT).returncode


def main() -> int:
    parser = SuggestingParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("split", choices=["validation", "test"])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these configurations")
    parser.add_argument("--workers", type=int, default=1, help="runs side by side, each on one thread")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    todo = {name: flags for name, (_, flags) in CONFIGURATIONS.items()} if args.split == "validation" \
        else dict(TEST_CONFIGURATIONS)
    if args.only:
        unknown = sorted(set(args.only) - set(todo))
        if unknown:
            parser.error(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(todo)}")
        todo = {name: todo[name] for name in args.only}
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        threads = "1" if args.workers > 1 else None
        codes = list(pool.map(lambda flags: run(flags, threads),
                              [command(args.split, name, flags) for name, flags in todo.items()]))
    return max(codes, default=0)


if __name__ == "__main__":
    raise SystemExit(main())
