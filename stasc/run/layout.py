"""Where a run keeps each iteration: RUN_DIR/iteration_NN/, and the same folder names on the Hub."""

from __future__ import annotations

from pathlib import Path


def iteration_folder(iteration: int) -> str:
    return f"iteration_{iteration:02d}"


def iteration_dir(run_dir: Path, iteration: int) -> Path:
    return run_dir / iteration_folder(iteration)
