"""Write the tables and plots of docs/results.md from the finished runs under runs/results.

    python experiments/report.py runs/results             # tables into docs/results.md, PNGs into docs/figures
    python experiments/report.py --best 2 runs/results    # print the two best built-in variants

Only the part of docs/results.md between the generated markers is rewritten; the reading
around it is written by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stasc.config import SuggestingParser  # noqa: E402
from stasc.results.report import (  # noqa: E402
    RunSummary,
    comparison_table,
    cost_table,
    design_choice_table,
    frame,
    iteration_table,
    load_runs,
    plot_runs,
    rank_variants,
    replace_generated,
)

DATASETS = (
    ("builtin-", "Built-in set (64 training questions, 120 test questions)", "builtin"),
    ("s_nq-", "Authors' NQ subset, s_nq (64 training questions, first 100 test questions)", "s_nq"),
)


def section(title: str, runs: list[RunSummary], figure: Path, document: Path) -> str:
    base = runs[0].baseline
    relative_figure = figure.relative_to(document.parent).as_posix()
    return "\n\n".join(
        [
            f"### {title}",
            "Prompting-only baseline (iteration 0, the base model, same for every variant): initial answers "
            f"{base.initial.format()}, corrections {base.correction.format()}.",
            f"![{title}]({relative_figure})",
            "Per iteration (test in-accuracy with 95% bootstrap intervals over questions; c→i and i→c are the "
            "shares of test questions whose answer the correction broke or fixed; kept = training examples "
            "that passed the filter; seconds = that iteration's steps):",
            iteration_table(runs),
            "Last iteration against the baseline, paired by question (differences with 95% intervals; bold = "
            "the interval excludes zero):",
            comparison_table(runs),
            "Design choices, last iteration's corrections: each row compares two variants that differ in one "
            "choice only (paired by question; bold = the interval excludes zero):",
            design_choice_table(runs),
            "Cost of each run (time = the sum of the seconds each timed iteration records, so pauses between "
            "resumes do not count; runs made before iteration 0 recorded its seconds leave out its evaluation, "
            "about two minutes here; storage of the whole run directory):",
            cost_table(runs),
        ]
    )


def main() -> int:
    parser = SuggestingParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="directory holding the runs (builtin-<VARIANT>, s_nq-<VARIANT>)")
    parser.add_argument("--best", type=int, help="only print the N best built-in variants, best first")
    parser.add_argument("--document", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    if args.best:
        runs = load_runs(args.root, DATASETS[0][0])
        if not runs:
            parser.error(f"no finished builtin-* runs under {args.root}; run experiments/run_results.sh first")
        print(" ".join(run.variant for run in rank_variants(runs)[: args.best]))
        return 0
    sections, tables = [], []
    for prefix, title, stem in DATASETS:
        runs = load_runs(args.root, prefix)
        if not runs:
            continue
        figure = args.figures / f"{stem}.png"
        plot_runs(runs, figure, title)
        sections.append(section(title, runs, figure, args.document))
        tables.append(frame(runs).assign(dataset=stem))
    if not sections:
        parser.error(f"no finished runs under {args.root}")
    document = args.document.read_text(encoding="utf-8") if args.document.is_file() else ""
    args.document.parent.mkdir(parents=True, exist_ok=True)
    args.document.write_text(replace_generated(document, "\n\n".join(sections)), encoding="utf-8")
    import pandas as pd

    pd.concat(tables).to_csv(args.document.with_suffix(".csv"), index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
