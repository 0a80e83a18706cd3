"""Reading a run back, from a local run directory or from the Hub: its manifest, where each
iteration's adapter is, and its tables.

A source is either a path to a run directory or a Hub repo id ORG/NAME pushed by
stasc.hub.push. Iteration 0 is the base model; iteration k is the base model plus the adapter
that run.json names for k (which may be an earlier one carried forward).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stasc.config import check_repo_id
from stasc.errors import StascError
from stasc.run.layout import iteration_folder
from stasc.run.manifest import check_manifest, read_manifest, run_file
from stasc.run.storage import read_parquet


@dataclass(frozen=True)
class RunSource:
    """Where a run lives: a local directory, or a Hub repo at a revision."""

    location: str
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.location).expanduser().is_dir()

    def describe(self) -> str:
        return self.location if self.is_local else f"hf://{self.location}" + (f"@{self.revision}" if self.revision else "")


def _hub_file(source: RunSource, filename: str, repo_type: str = "model") -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        check_repo_id(source.location)
    except StascError:
        raise StascError(
            f"{source.location!r} is neither a local run directory nor a Hub repository id (ORG/NAME). "
            "Pass the --output-dir of a run, or the repo a run was pushed to."
        ) from None
    try:
        return Path(hf_hub_download(source.location, filename, repo_type=repo_type, revision=source.revision))
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise StascError(
            f"Hub repository {source.location!r} (revision {source.revision or 'main'}) was not found or is private. "
            "Check the id, and log in ('hf auth login' or HF_TOKEN) for private repositories."
        ) from None
    except EntryNotFoundError:
        raise StascError(f"{source.location} has no {filename}: it was not pushed by stasc.") from None
    except (HfHubHTTPError, OSError) as error:
        raise StascError(f"Could not download {filename} from {source.location} ({type(error).__name__}).") from None


def load_run_manifest(source: RunSource) -> dict[str, Any]:
    """The run.json of a local run or of a pushed run."""
    if source.is_local:
        return read_manifest(Path(source.location).expanduser())
    path = _hub_file(source, "run.json")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise StascError(f"run.json of {source.location} is not valid JSON ({error.msg}).") from None
    check_manifest(manifest, Path(f"{source.location}/run.json"))
    return manifest


def list_iterations(source: RunSource) -> list[dict[str, Any]]:
    """Iteration entries (iteration, metrics, paths) without downloading any adapter."""
    return load_run_manifest(source)["iterations"]


def _entry(manifest: dict[str, Any], iteration: int, source: RunSource) -> dict[str, Any]:
    entries = manifest["iterations"]
    if not 0 <= iteration < len(entries):
        raise StascError(
            f"{source.describe()} has iterations 0..{len(entries) - 1}; iteration {iteration} does not exist."
        )
    return entries[iteration]


def adapter_location(source: RunSource, iteration: int, manifest: dict[str, Any] | None = None) -> tuple[str, str | None] | None:
    """(path or repo id, subfolder) of iteration's adapter, or None for the base model."""
    manifest = manifest or load_run_manifest(source)
    relative = _entry(manifest, iteration, source).get("adapter")
    if not relative:
        return None
    if source.is_local:
        return str(run_file(Path(source.location).expanduser(), relative)), None
    owner = int(Path(relative).parent.name.split("_")[1])  # carried-forward adapters keep their own folder
    return source.location, iteration_folder(owner)


def load_evaluation(source: RunSource, iteration: int, kind: str = "evaluation") -> pd.DataFrame:
    """One of an iteration's tables: evaluation, train_data, corrections or initial_answers."""
    manifest = load_run_manifest(source)
    relative = _entry(manifest, iteration, source).get(kind)
    if not relative:
        return pd.DataFrame()
    if source.is_local:
        path = run_file(Path(source.location).expanduser(), relative)
    else:
        path = _hub_file(source, f"{iteration_folder(iteration)}/{Path(relative).name}", repo_type="dataset")
    return read_parquet(path)
