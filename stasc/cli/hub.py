"""`python -m stasc push RUN_DIR --repo ORG/NAME`: publish (or finish publishing) a local run.

    python -m stasc push runs/stasc --repo my-user/smollm2-stasc [--private]
    python -m stasc iterations runs/stasc          # or a Hub repo id: list iterations and metrics
    python -m stasc push-metric --space my-user/stasc_rewards   # the rewards as an `evaluate` metric Space
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stasc.config import SuggestingParser
from stasc.errors import StascError
from stasc.log import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = SuggestingParser(
        prog="python -m stasc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="Push a local run's iterations to the Hugging Face Hub.")
    push.add_argument("run_dir", help="The run directory (the --output-dir of train.py).")
    push.add_argument("--repo", required=True, help="Hub repository ORG/NAME (a model and a dataset repo).")
    push.add_argument("--private", action="store_true", help="Create the repositories as private.")
    listing = commands.add_parser("iterations", help="List a run's iterations and metrics (local dir or Hub repo).")
    listing.add_argument("source", help="A run directory or a Hub repo id ORG/NAME.")
    listing.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit).")
    metric = commands.add_parser(
        "push-metric", help="Publish the rewards as an `evaluate` metric Space: evaluate.load('ORG/NAME') then works."
    )
    metric.add_argument("--space", required=True, help="The Space to create or update, ORG/NAME.")
    metric.add_argument("--private", action="store_true", help="Create the Space as private.")
    args = parser.parse_args(argv)

    setup_logging("info")
    try:
        if args.command == "push":
            from stasc.hub.push import push_run

            report = push_run(args.run_dir, args.repo, private=args.private, progress=print)
            if not report.pushed:
                print(f"Nothing to push: iterations {report.already_there} are already on {report.repo_id}.")
        elif args.command == "push-metric":
            from stasc.hub.metric_space import push_metric

            print(f"Published the metric to {push_metric(args.space, private=args.private)}")
        else:
            from stasc.run.manifest import format_table
            from stasc.hub.sources import RunSource, list_iterations

            print(format_table(list_iterations(RunSource(args.source, args.revision))))
    except StascError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0

