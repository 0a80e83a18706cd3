"""Write the generated tables and plots of docs/results.md from the study's finished runs.

    python experiments/report.py runs/study          # tables into docs/results.md, PNGs into docs/figures
    python experiments/report.py runs/study --best   # print the configuration with the largest validation delta

Runs are runs/study/validation-<configuration> (choosing settings) and runs/study/test-<configuration> (the
chosen ones against the baselines), as experiments/study.py makes them. Only the part of docs/results.md
between the generated markers is rewritten; the reading around it is written by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stasc.results.report import (  # noqa: E402
    comparison_table,
    cost_table,
    frame,
    load_runs,
    plot_runs,
    rank_runs,
    replace_generated,
    study_table,
)


def names_of(runs, prefix: str) -> dict[str, str]:
    return {run.name: run.name.removeprefix(prefix) for run in runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("root", type=Path, help="directory holding the study's runs (runs/study)")
    parser.add_argument("--best", action="store_true", help="only print the best configuration on validation")
    parser.add_argument("--document", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    validation = load_runs(args.root, "validation-")
    test = load_runs(args.root, "test-")
    if args.best:
        if not validation:
            parser.error(f"no finished validation runs under {args.root}; run experiments/study.py validation first")
        print(rank_runs(validation)[0].name.removeprefix("validation-"))
        return 0
    if not validation and not test:
        parser.error(f"no finished runs under {args.root}; run experiments/study.py first")
    sections = []
    relative = args.figures.relative_to(args.document.parent) if args.figures.is_relative_to(args.document.parent) \
        else args.figures
    for runs, prefix, title, stem in (
        (validation, "validation-", "Choosing settings: every configuration on the validation questions", "validation"),
        (test, "test-", "The test split: the chosen configuration, the baselines and the default", "test"),
    ):
        if not runs:
            continue
        names = names_of(runs, prefix)
        plot_runs(runs, args.figures / f"{stem}.png", title, names)
        parts = [
            f"### {title}",
            f"![{title}]({(relative / f'{stem}.png').as_posix()})",
            "Per iteration, on the held-out questions (acc_t1: initial answers; acc_t2: self-corrections; delta = "
            "acc_t2 - acc_t1; i→c / c→i: answers the correction fixed / broke; each averaged over a question's "
            "samples, then over questions, with 95% bootstrap intervals over questions; bold = the interval "
            "excludes zero; kept = training examples the filter passed):",
            study_table(runs, names),
        ]
        if prefix == "test-":
            reference = next((run for run in rank_runs(runs) if run.method == "stasc" and run.last.iteration > 0),
                             runs[0])
            others = [run for run in runs if run is not reference]
            parts += [
                "Last iteration against the best STaSC configuration, paired by question (final acc = in-accuracy "
                "after the last turn: the correction, or Self-Refine's last round):",
                comparison_table(reference, others, names),
            ]
        parts += ["Cost (time the iterations record; storage of the run directory):", cost_table(runs, names)]
        sections.append("\n\n".join(parts))
    document = args.document.read_text(encoding="utf-8") if args.document.is_file() else ""
    args.document.parent.mkdir(parents=True, exist_ok=True)
    args.document.write_text(replace_generated(document, "\n\n".join(sections)), encoding="utf-8")
    frame(validation + test).to_csv(args.document.with_suffix(".csv"), index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
