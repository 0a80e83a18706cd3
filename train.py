"""Run the STaSC self-correction loop.

    python train.py                                  # defaults: bundled SmolLM2-135M, built-in QA set
    python train.py --help                           # every setting, with allowed values
    python train.py --variant EIE --iterations 3 --output-dir runs/eie
    python train.py --config configs/default.yaml --n-init 4

Re-running a command with the same --output-dir resumes an interrupted run.
"""

import sys

from stasc.cli.train import train_main

if __name__ == "__main__":
    sys.exit(train_main())
