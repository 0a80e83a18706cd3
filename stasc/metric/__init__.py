"""STaSC's rewards as a Hugging Face `evaluate` metric module, for scoring outside a stasc run.

`evaluate.load(str(MODULE_DIR))` loads it offline. The folder is also a complete metric Space (the
module, its card, app.py and requirements.txt), which `python -m stasc push-metric` publishes. The
scores come from stasc.core.rewards, so a run and the metric can never disagree.
"""

from pathlib import Path

MODULE_NAME = "stasc_rewards"
MODULE_DIR = Path(__file__).resolve().parent / MODULE_NAME
