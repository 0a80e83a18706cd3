"""Command-line entry for training: parse flags, set up logging, run the loop, report errors plainly."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stasc.config import StascConfig, config_from_args
from stasc.errors import StascError
from stasc.log import setup_logging

logger = logging.getLogger("stasc")

TRAIN_DESCRIPTION = """Run STaSC (Self-Taught Self-Correction): sample answers, sample corrections,
keep the corrections the reward approves, fine-tune a LoRA adapter on them, repeat.

examples:
  python train.py                                   # bundled SmolLM2-135M, built-in questions
  python train.py --variant EIE --iterations 3 --output-dir runs/eie
  python train.py --config configs/qwen2.5-1.5b-paper.yaml
  python train.py --dataset ../shared/data/stasc_adaptive_rag/s_nq.train.jsonl \\
      --test-dataset ../shared/data/stasc_adaptive_rag/s_nq.test.jsonl
Re-running a command with the same --output-dir resumes the run."""


def push_after_each_iteration(config: StascConfig) -> Callable[[Path], None] | None:
    """A callback that pushes the run to config.push_to_hub; a failed push is logged, not fatal."""
    if config.push_to_hub is None:
        return None
    from stasc.hub.push import push_run

    repo_id = config.push_to_hub

    def push(run_dir: Path) -> None:
        try:
            push_run(run_dir, repo_id, private=config.hub_private, progress=logger.info)
        except StascError as error:
            logger.error("Hub push failed; training goes on. %s", error)

    return push


def run_stasc(config: StascConfig) -> dict[str, Any]:
    """Run or resume the STaSC loop described by config; return the run manifest."""
    from stasc.run.loop import StascRun  # heavy imports only after the flags are valid

    return StascRun(config).run(on_iteration=push_after_each_iteration(config))


def train_main(argv: Sequence[str] | None = None) -> int:
    """`python train.py ...`: returns the process exit code."""
    try:
        config = config_from_args(argv, TRAIN_DESCRIPTION)
        setup_logging(config.log_level)
        try:
            run_stasc(config)
        finally:
            import torch.distributed

            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()  # else gloo/NCCL may abort at exit
    except StascError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted. Re-run the same command to resume from the last completed step.", file=sys.stderr)
        return 130
    return 0
