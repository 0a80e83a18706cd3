"""Publish stasc's rewards as an `evaluate` metric Space.

    python -m stasc push-metric --space ORG/NAME [--private]

The Space follows the `evaluate` convention: the module file, its card as README.md (with the Space
metadata), an app.py that serves `evaluate.utils.launch_gradio_widget`, and requirements.txt; all four
ship with stasc in stasc/metric/stasc_rewards/. Beside them goes the part of stasc the module imports (the
rewards and what they import), so the Space scores with exactly the code that published it, and
`evaluate.load("ORG/NAME")` works for anyone once it is pushed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from stasc import __version__
from stasc.config import check_repo_id
from stasc.metric import MODULE_DIR, MODULE_NAME

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The modules stasc_rewards.py needs: stasc.core.rewards and its imports.
PACKAGE_FILES = ("__init__.py", "errors.py", "core/__init__.py", "core/rewards.py")
SPACE_FILES = (f"{MODULE_NAME}.py", "README.md", "app.py", "requirements.txt")


def assemble_metric_space(out_dir: Path) -> Path:
    """Write the metric Space folder: the shipped module folder plus the stasc modules it imports."""
    from stasc.hub.space import start_folder

    out_dir = start_folder(
        out_dir, "directory", MODULE_DIR, SPACE_FILES, ": this stasc installation is incomplete. Reinstall stasc."
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copyfile(MODULE_DIR / name, out_dir / name)
    for name in PACKAGE_FILES:
        target = out_dir / "stasc" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_DIR / name, target)
    return out_dir


def push_metric(space_id: str, *, private: bool = False, api: Any = None) -> str:
    """Create (or update) the metric Space space_id; returns its URL."""
    from huggingface_hub import HfApi, constants

    check_repo_id(space_id)
    api = api or HfApi()
    with tempfile.TemporaryDirectory(prefix="stasc-metric-") as scratch:
        folder = assemble_metric_space(Path(scratch) / "space")
        try:
            api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            api.upload_folder(
                repo_id=space_id,
                repo_type="space",
                folder_path=str(folder),
                commit_message=f"Publish the {MODULE_NAME} metric of stasc {__version__}",
                delete_patterns=["stasc/**"],  # modules the rewards no longer import
            )
        except Exception as error:  # any failure of the Hub client: say why and how to fix it
            from stasc.hub.space import _explain

            raise _explain(error, space_id) from None
    logger.info("Published the %s metric to %s", MODULE_NAME, space_id)
    return f"{constants.ENDPOINT}/spaces/{space_id}"
