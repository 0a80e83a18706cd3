"""Which runs the app may show: local run directories, configured Hub repos, the bundled base model.

The set is fixed by the operator (flags and environment); the UI only picks one of its keys, so
nothing a visitor types ever becomes a path or a repo id.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stasc.config import StascConfig, check_repo_id
from stasc.errors import StascError
from stasc.run.manifest import MANIFEST_NAME
from stasc.modeling.models import BUNDLED_MODEL, BUNDLED_NAME
from stasc.hub.sources import RunSource, adapter_location, load_run_manifest

logger = logging.getLogger(__name__)

BUNDLED_KEY = "bundled"


@dataclass(frozen=True)
class AdapterRef:
    """Where one iteration's LoRA adapter is: a local directory, or a Hub repo subfolder at a revision."""

    location: str
    subfolder: str | None = None
    revision: str | None = None
    version: int = 0  # local adapters: file modification time, so a retrained run is not served stale


@dataclass(frozen=True)
class ModelTarget:
    """Everything needed to generate with one iteration: its base model and (unless iteration 0) adapter."""

    base_model: str
    cache_dir: str | None
    trust_remote_code: bool
    dtype: str
    adapter: AdapterRef | None


@dataclass(frozen=True)
class SourceChoice:
    """One entry of the run dropdown."""

    key: str
    label: str
    source: RunSource | None  # None: the bundled base model with no run


@dataclass(frozen=True)
class RunView:
    """A run's manifest as the app needs it: settings for prompting and sampling, and its iterations."""

    choice: SourceChoice
    config: dict[str, Any]
    iterations: list[dict[str, Any]]
    manifest: dict[str, Any] | None

    @property
    def iteration_numbers(self) -> list[int]:
        return [entry["iteration"] for entry in self.iterations] or [0]

    @property
    def latest(self) -> int:
        return self.iteration_numbers[-1]

    def check_iteration(self, iteration: Any) -> int:
        """The iteration as an int, or an error naming the ones that exist."""
        numbers = self.iteration_numbers
        try:
            value = int(iteration)
        except (TypeError, ValueError):
            value = -1
        if isinstance(iteration, bool) or (isinstance(iteration, float) and not iteration.is_integer()):
            value = -1
        if value not in numbers:
            raise StascError(
                f"{self.choice.label} has iterations {numbers[0]}..{numbers[-1]}; pick one of them "
                f"(got {iteration!r})."
            )
        return value

    def target(self, iteration: Any, *, dtype: str | None, allow_remote_code: bool) -> ModelTarget:
        """The model to load for an iteration (its adapter located through stasc.hub.sources)."""
        iteration = self.check_iteration(iteration)
        trust = bool(self.config.get("trust_remote_code", False))
        if trust and not allow_remote_code:
            raise StascError(
                f"{self.choice.label} was trained on a model that runs its own code (trust_remote_code). "
                "Restart the app with --trust-remote-code if you trust that model."
            )
        source = self.choice.source
        adapter = None
        if source is not None and self.manifest is not None:
            location = adapter_location(source, iteration, self.manifest)
            if location is not None:
                path, subfolder = location
                if subfolder is None:
                    weights = Path(path) / "adapter_model.safetensors"
                    version = weights.stat().st_mtime_ns if weights.is_file() else 0
                    adapter = AdapterRef(path, version=version)
                else:
                    adapter = AdapterRef(path, subfolder, source.revision)
        local = source is not None and source.is_local
        return ModelTarget(
            base_model=str(self.config["model"]),
            # The trainer's cache directory means nothing on another machine.
            cache_dir=self.config.get("model_cache_dir") if local else None,
            trust_remote_code=trust,
            dtype=dtype or str(self.config.get("dtype", "auto")),
            adapter=adapter,
        )


def parse_hub_spec(spec: str) -> RunSource:
    """ORG/NAME or ORG/NAME@REVISION, as given to --hub-repo or STASC_HUB_REPOS."""
    repo, _, revision = spec.strip().partition("@")
    check_repo_id(repo)
    return RunSource(repo, revision or None)


def find_local_runs(runs_dir: Path) -> list[Path]:
    """runs_dir itself if it is a run, and its immediate subdirectories that are runs."""
    if not runs_dir.is_dir():
        return []
    found = [runs_dir] if (runs_dir / MANIFEST_NAME).is_file() else []
    found += sorted(child for child in runs_dir.iterdir() if child.is_dir() and (child / MANIFEST_NAME).is_file())
    return found


class Catalog:
    """The runs the operator configured, rescanned on refresh; Hub manifests are cached until then."""

    def __init__(self, runs_dir: Path | None, hub_specs: list[str]) -> None:
        self.runs_dir = runs_dir
        self.hub_sources = [parse_hub_spec(spec) for spec in hub_specs]
        self._lock = threading.Lock()
        self._choices: dict[str, SourceChoice] = {}
        self._hub_manifests: dict[str, dict[str, Any]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Rescan the runs directory (a run started after the app appears) and forget Hub manifests."""
        choices: list[SourceChoice] = []
        if self.runs_dir is not None:
            root = self.runs_dir.expanduser().resolve()  # sources stay valid if the working directory changes
            for path in find_local_runs(root):
                name = "." if path == root else path.name
                label = str(self.runs_dir if name == "." else self.runs_dir / name)
                choices.append(SourceChoice(f"local:{name}", label, RunSource(str(path))))
        for source in self.hub_sources:
            label = source.describe()
            key = f"hub:{source.location}" + (f"@{source.revision}" if source.revision else "")
            choices.append(SourceChoice(key, label, source))
        if not choices:
            choices.append(
                SourceChoice(BUNDLED_KEY, f"Bundled base model ({BUNDLED_NAME}, iteration 0)", None)
            )
        with self._lock:
            self._choices = {choice.key: choice for choice in choices}
            self._hub_manifests.clear()
        logger.info("Sources: %s", ", ".join(choice.label for choice in choices))

    def choices(self) -> list[tuple[str, str]]:
        """(label, key) pairs for a dropdown."""
        with self._lock:
            return [(choice.label, choice.key) for choice in self._choices.values()]

    @property
    def default_key(self) -> str:
        return self.choices()[0][1]

    def get(self, key: Any) -> SourceChoice:
        with self._lock:
            choice = self._choices.get(key) if isinstance(key, str) else None
        if choice is None:
            raise StascError("Unknown run: pick one from the Run list (press Refresh if it was just created).")
        return choice

    def view(self, key: Any) -> RunView:
        """The chosen run's manifest: read fresh for local runs (they may still be training)."""
        choice = self.get(key)
        if choice.source is None:
            config = dataclasses.asdict(StascConfig(model=BUNDLED_MODEL))
            return RunView(choice, config, [], None)
        if choice.source.is_local:
            manifest = load_run_manifest(choice.source)
        else:
            with self._lock:
                manifest = self._hub_manifests.get(choice.key)
            if manifest is None:
                manifest = load_run_manifest(choice.source)
                with self._lock:
                    self._hub_manifests[choice.key] = manifest
        return RunView(choice, manifest["config"], manifest["iterations"], manifest)
