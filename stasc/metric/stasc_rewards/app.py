"""The metric Space: evaluate's widget for stasc_rewards, loaded from the module file beside this one."""

from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load(str(Path(__file__).resolve().with_name("stasc_rewards.py")))
launch_gradio_widget(module)
