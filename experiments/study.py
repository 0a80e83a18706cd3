"""The self-correction study behind docs/results.md: which configuration teaches the bundled model to fix
its own answers. Settings are chosen on a validation part of the training questions, never on the test split.

    python experiments/study.py validation           # every configuration, evaluated on validation questions
    python experiments/study.py test                 # the chosen ones, the baselines and the default, on test
    python experiments/study.py validation --only balanced own-answer-fixes
    python experiments/report.py runs/study          # then the tables, plots and CSV of docs/results.md

Runs go to runs/study/<split>-<configuration> and resume when a command is repeated. Two runs go side by
side, each on one CPU thread (faster than one after the other on two threads on a 2-core machine).
`test` runs CHOSEN, the configuration with the largest validation delta (then i_to_c), unless
--chosen names another, and STaR and Self-Refine at the same budget.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stasc.results.report import load_runs, rank_runs  # noqa: E402

EVALUATION = ["--iterations", "3", "--eval-samples", "4", "--max-test-questions", "none"]
BUDGET = ["--max-train-questions", "256", "--n-init", "4", "--n-corr", "2"]  # the study's common budget
PAPER_BUDGET = ["--max-train-questions", "none", "--n-init", "5", "--n-corr", "5"]

CONFIGURATIONS: dict[str, tuple[str, list[str]]] = {
    # name: (what it is, flags on top of EVALUATION)
    "default": ("python train.py's defaults", []),
    "enf": ("the paper's ENF at the study budget (non-decreasing filter: wrong->right and right->right)",
            [*BUDGET, "--variant", "ENF"]),
    "enf-paper-budget": ("ENF with N_init = N_corr = 5 over every training question",
                         [*PAPER_BUDGET, "--variant", "ENF", "--iterations", "2"]),
    "authors-filter": ("the authors' non-decreasing filter (right->right only)", [*BUDGET, "--variant", "EAF"]),
    "balanced": ("balanced filter, one right->right pair per fix", [*BUDGET, "--variant", "EBF"]),
    "rationalize": ("balanced + hinted rationalizations", [*BUDGET, "--variant", "EBF", "--rationalize"]),
    "own-answer-fixes": ("balanced + own-answer fixes", [*BUDGET, "--variant", "EBF", "--own-answer-fixes"]),
    "min-steps": ("balanced + at least 40 optimizer steps", [*BUDGET, "--variant", "EBF", "--min-train-steps", "40"]),
    "together": ("balanced + rationalizations + own-answer fixes + 40 steps",
                 [*BUDGET, "--variant", "EBF", "--rationalize", "--own-answer-fixes", "--min-train-steps", "40"]),
}


def command(split: str, name: str, flags: list[str]) -> list[str]:
    evaluation = [*EVALUATION]
    if "--iterations" in flags:  # the configuration's own count wins
        del evaluation[0:2]
    return [sys.executable, str(ROOT / "train.py"), *evaluation, *flags, "--evaluate-on", split,
            "--output-dir", str(ROOT / "runs" / "study" / f"{split}-{name}"), "--log-level", "warning"]


def run(arguments: list[str]) -> int:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    print("+", " ".join(arguments[1:]), flush=True)
    return subprocess.run(arguments, env=environment, cwd=ROOT).returncode


def test_configurations(chosen: str) -> dict[str, list[str]]:
    """On the test split: the default, the chosen configuration, and the baselines at its budget."""
    flags = CONFIGURATIONS[chosen][1]
    return {
        "default": [],
        chosen: flags,
        f"{chosen}-star": [*(flag for flag in flags if flag not in ("--rationalize", "--own-answer-fixes")),
                           "--method", "star"],
        "self-refine": ["--iterations", "0", "--eval-rounds", "3"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("split", choices=["validation", "test"])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these configurations")
    parser.add_argument("--chosen", help="the configuration to evaluate on test (default: best on validation)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.split == "validation":
        todo = {name: flags for name, (_, flags) in CONFIGURATIONS.items()}
    else:
        chosen = args.chosen
        if chosen is None:
            ranked = rank_runs(load_runs(ROOT / "runs" / "study", "validation-"))
            if not ranked:
                parser.error("no finished validation runs under runs/study: run `study.py validation` first")
            chosen = ranked[0].name.removeprefix("validation-")
        todo = test_configurations(chosen)
    if args.only:
        unknown = sorted(set(args.only) - set(todo))
        if unknown:
            parser.error(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(todo)}")
        todo = {name: todo[name] for name in args.only}
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        codes = list(pool.map(run, [command(args.split, name, flags) for name, flags in todo.items()]))
    return max(codes, default=0)


if __name__ == "__main__":
    raise SystemExit(main())
