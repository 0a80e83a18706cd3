"""Command-line entry for training: parse flags, set up logging, run the loop, report errors plainly."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from stasc.config import config_from_args
from stasc.errors import StascError

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


def setup_logging(level: str) -> None:
    """Log to stderr with timestamps; quiet the libraries' chatter below warnings."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def train_main(argv: Sequence[str] | None = None) -> int:
    """`python train.py ...`: returns the process exit code."""
    try:
        config = config_from_args(argv, TRAIN_DESCRIPTION)
        setup_logging(config.log_level)
        from stasc.run.loop import run_stasc  # heavy imports only after the flags are valid

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
