"""Deploy the app as a Hugging Face Space for a run published with `python -m stasc push`.

    python -m stasc.space deploy --space ORG/NAME --run ORG/RUN [--revision REV] [--private] [--hardware HW]
    python -m stasc.space assemble --run ORG/RUN --out DIR      # the same folder, written locally

The folder is the templates in spaces/ filled in for the run (README.md with the Space metadata,
app.py, requirements.txt) plus a copy of this stasc package: stasc is not on PyPI, and the copy makes
the Space run exactly the code that deployed it. `python DIR/app.py` runs the folder as-is.

The Space runs on ZeroGPU unless --hardware names another: the app's generating handlers carry
`spaces.GPU` (stasc.app.ui.gpu_task), so a GPU is held only while they generate, and the same files run
on CPU hardware and locally, where the decorator does nothing. Which plan allows which hardware:
https://huggingface.co/docs/hub/spaces-zerogpu and https://huggingface.co/docs/hub/spaces-gpus.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from stasc.config import check_repo_id
from stasc.errors import StascError
from stasc.hub.push import BUNDLED_HUB_ID
from stasc.run.manifest import check_manifest
from stasc.modeling.models import BUNDLED_MODEL

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole stasc package, every subpackage included
TEMPLATES = PACKAGE_DIR.parent / "spaces"
TEMPLATE_FILES = ("README.md", "app.py", "requirements.txt")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
ZERO_GPU = "zero-gpu"
HARDWARE_ALIASES = {ZERO_GPU: "zero-a10g"}  # the Hub's own name for ZeroGPU
CPU_TORCH_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def hardware_choices() -> list[str]:
    """What --hardware accepts: zero-gpu, and every Space hardware the Hub client knows."""
    from huggingface_hub import SpaceHardware

    return [ZERO_GPU, *(flavor.value for flavor in SpaceHardware)]


def hub_hardware(name: str) -> str:
    """The Hub's name for the hardware a user asked for, or an error listing the choices."""
    if name not in hardware_choices():
        raise StascError(
            f"Unknown Space hardware {name!r}: pass --hardware with one of {', '.join(hardware_choices())}."
        )
    return HARDWARE_ALIASES.get(name, name)


@dataclass(frozen=True)
class SpacePlan:
    """What a Space is for: the run (at a revision) and what its README and app.py name."""

    run_repo: str
    revision: str | None
    space_id: str
    base_model: str  # the run's --model value: 'bundled', a Hub id, or a path on the training machine
    variant: str
    hardware: str = HARDWARE_ALIASES[ZERO_GPU]  # the Hub's name for it

    @property
    def base_model_hub_id(self) -> str | None:
        """The base model's Hub id for the Space metadata; None when the run used a local directory."""
        if self.base_model == BUNDLED_MODEL:
            return BUNDLED_HUB_ID
        if Path(self.base_model).expanduser().exists():
            return None
        try:
            return check_repo_id(self.base_model)
        except StascError:
            return None

    @property
    def run_spec(self) -> str:
        return f"{self.run_repo}@{self.revision}" if self.revision else self.run_repo


def plan(
    manifest: dict[str, Any], run_repo: str, space_id: str, revision: str | None = None, hardware: str = ZERO_GPU
) -> SpacePlan:
    """Check the ids and the hardware, and warn when the Space could not load the run's base model."""
    check_repo_id(run_repo)
    check_repo_id(space_id)
    if revision is not None and not REVISION.match(revision):
        raise StascError(f"Invalid revision {revision!r}: use a branch, tag or commit id.")
    model, variant = str(manifest["config"]["model"]), str(manifest.get("variant", "?"))
    result = SpacePlan(run_repo, revision, space_id, model, variant, hub_hardware(hardware))
    if result.base_model_hub_id is None:
        logger.warning(
            "The run's base model %s is a local directory: the Space can only start where that path exists. "
            "Publish the base model to the Hub and train with --model ORG/NAME to deploy it anywhere.",
            result.base_model,
        )
    return result


def fetch_manifest(api: Any, run_repo: str, revision: str | None = None) -> dict[str, Any]:
    """The published run.json, read through the Hub client (so a test can stand in for the Hub)."""
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(run_repo)
    try:
        path = api.hf_hub_download(repo_id=run_repo, filename="run.json", revision=revision)
    except (HfHubHTTPError, OSError) as error:
        raise StascError(
            f"Could not read run.json of {run_repo} ({type(error).__name__}). Check that the run was pushed with "
            "'python -m stasc push', the id and revision, and your login for private repositories."
        ) from None
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise StascError(f"run.json of {run_repo} is not valid JSON ({error.msg}).") from None
    check_manifest(manifest, Path(f"{run_repo}/run.json"))
    return manifest


def start_folder(out_dir: Path | str, new: str, sources: Path, names: tuple[str, ...], missing_fix: str) -> Path:
    """out_dir, checked before anything is written to it: refused when it holds files (`new` names what to pass
    instead), and when any of the files to copy from `sources` is missing (`missing_fix` says what to do)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise StascError(f"{out_dir} is not empty. Pass a new {new} (or delete that one).")
    missing = [name for name in names if not (sources / name).is_file()]
    if missing:
        raise StascError(f"The files {', '.join(missing)} are missing from {sources}{missing_fix}")
    return out_dir


def assemble(space: SpacePlan, out_dir: Path) -> Path:
    """Write the Space folder: filled-in templates and a copy of the stasc package."""
    out_dir = start_folder(
        out_dir, "--out directory", TEMPLATES, TEMPLATE_FILES,
        ". Run this from a stasc checkout, where spaces/ sits beside the stasc package.",
    )
    hub_id = space.base_model_hub_id
    models = [model for model in (hub_id, space.run_repo) if model]
    values = {
        "title": space.space_id.split("/")[1],
        # JSON strings are valid YAML scalars, so any id is quoted safely.
        "models": "\n".join(f"  - {json.dumps(model)}" for model in models),
        "run_repo": space.run_repo,
        "run_spec": space.run_spec,
        "revision": space.revision or "",
        "space_id": space.space_id,
        "base_model": space.base_model,
        "variant": space.variant,
        "hardware": space.hardware,
        # The CPU build of torch on CPU hardware; PyPI's default build (with CUDA) on a GPU.
        "torch_index": CPU_TORCH_INDEX if space.hardware.startswith("cpu") else "",
    }
    base_link = f"[{hub_id}](https://huggingface.co/{hub_id})" if hub_id else space.base_model
    per_file = {
        "README.md": dict(values, base_model=base_link),
        # Inside app.py's string literals: JSON's escapes are valid Python escapes.
        "app.py": {key: json.dumps(value)[1:-1] for key, value in values.items()},
        "requirements.txt": values,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATE_FILES:
        text = (TEMPLATES / name).read_text(encoding="utf-8")
        filled = Template(text).substitute(per_file[name])
        (out_dir / name).write_text(filled, encoding="utf-8")
    shutil.copytree(PACKAGE_DIR, out_dir / "stasc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    logger.info("Assembled the Space for %s in %s", space.run_spec, out_dir)
    return out_dir


def _explain(error: Exception, space_id: str) -> StascError:
    """A failed upload, with its cause and fix (never the token)."""
    from huggingface_hub.errors import HfHubHTTPError

    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, HfHubHTTPError) and status == 401:
        return StascError("The Hub refused the token (HTTP 401). Log in with 'hf auth login' or set HF_TOKEN.")
    if isinstance(error, HfHubHTTPError) and status == 403:
        return StascError(
            f"The token may not write to the Space {space_id} (HTTP 403): it belongs to someone else or the token "
            "is read-only. Deploy to a Space you own, with a write token."
        )
    if isinstance(error, HfHubHTTPError):
        return StascError(f"The Hub answered HTTP {status} while deploying {space_id}. Try again later.")
    return StascError(f"Could not reach the Hub while deploying {space_id} ({type(error).__name__}). Try again.")


def _hardware_refused(error: Exception, space: SpacePlan) -> StascError:
    """The Space is uploaded but the Hub would not run it on the hardware asked for: usually the account's plan."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    why = f"HTTP {status}" if status else type(error).__name__
    return StascError(
        f"The Space {space.space_id} is uploaded, but the Hub would not put it on {space.hardware} "
        f"({why}): the account's plan may not include that hardware (ZeroGPU and CPU hardware: "
        "https://huggingface.co/docs/hub/spaces-zerogpu, https://huggingface.co/docs/hub/spaces-gpus). "
        "Pick hardware in the Space's settings, or deploy again with another --hardware."
    )


def deploy(
    space_id: str, run_repo: str, *, revision: str | None = None, private: bool = False, hardware: str = ZERO_GPU,
    api: Any = None,
) -> str:
    """Create (or update) the Space for a published run on the hardware asked for; returns its URL."""
    from huggingface_hub import HfApi, constants

    api = api or HfApi()
    check_repo_id(space_id)
    space = plan(fetch_manifest(api, run_repo, revision), run_repo, space_id, revision, hardware)
    with tempfile.TemporaryDirectory(prefix="stasc-space-") as scratch:
        folder = assemble(space, Path(scratch) / "space")
        try:
            api.create_repo(
                space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True,
                space_hardware=space.hardware,
            )
            api.upload_folder(
                repo_id=space_id,
                repo_type="space",
                folder_path=str(folder),
                commit_message=f"Deploy the STaSC app for {space.run_spec}",
                delete_patterns=["stasc/**"],  # modules removed from stasc since the last deploy
            )
        except Exception as error:  # any failure of the Hub client: say why and how to fix it
            raise _explain(error, space_id) from None
    try:  # an existing Space keeps its hardware through create_repo: ask for it explicitly
        api.request_space_hardware(space_id, space.hardware)
    except Exception as error:
        raise _hardware_refused(error, space) from None
    return f"{constants.ENDPOINT}/spaces/{space_id}"
