"""`python -m stasc.space deploy|assemble ...`: the command line of stasc.hub.space."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from stasc.errors import StascError
from stasc.hub import space as hub_space
from stasc.hub.space import ZERO_GPU, assemble, deploy, fetch_manifest, hardware_choices, plan
from stasc.log import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stasc.space", description=hub_space.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    deploying = commands.add_parser("deploy", help="Create or update a Space that serves the app for a run.")
    deploying.add_argument("--space", required=True, help="The Space to create or update, ORG/NAME.")
    deploying.add_argument("--private", action="store_true", help="Create the Space as private.")
    assembling = commands.add_parser("assemble", help="Write the Space folder locally instead of uploading it.")
    assembling.add_argument("--out", required=True, type=Path, help="A new (or empty) directory.")
    assembling.add_argument("--space", default=None, help="The Space id its README names (default: the run's id).")
    for command in (deploying, assembling):
        command.add_argument("--run", required=True, help="The run pushed with 'python -m stasc push', ORG/NAME.")
        command.add_argument("--revision", default=None, help="Pin the run to a branch, tag or commit (default: main).")
        command.add_argument(
            "--hardware", default=ZERO_GPU, choices=hardware_choices(), metavar="HARDWARE",
            help="Where the Space runs: zero-gpu (default; a GPU only while it generates), cpu-basic, or any Space "
            f"hardware ({', '.join(hardware_choices()[1:])}). Which plan allows which: "
            "https://huggingface.co/docs/hub/spaces-zerogpu",
        )
    args = parser.parse_args(argv)

    setup_logging("info")
    try:
        if args.command == "deploy":
            url = deploy(args.space, args.run, revision=args.revision, private=args.private, hardware=args.hardware)
            print(f"Deployed {args.run} to {url} ({args.hardware})")
        else:
            from huggingface_hub import HfApi

            manifest = fetch_manifest(HfApi(), args.run, args.revision)
            space = plan(manifest, args.run, args.space or args.run, args.revision, args.hardware)
            print(f"Assembled the Space in {assemble(space, args.out)}; run it with: python {args.out / 'app.py'}")
    except StascError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0

