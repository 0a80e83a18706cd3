"""A real round trip through huggingface.co; runs only with HF_TOKEN and STASC_LIVE_HUB=1."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not (os.environ.get("HF_TOKEN") and os.environ.get("STASC_LIVE_HUB") == "1"),
    reason="live Hub test: set HF_TOKEN and STASC_LIVE_HUB=1 to push to huggingface.co",
)


def test_push_and_pull_through_the_real_hub(tiny_run: Path, tmp_path: Path) -> None:
    from datasets import load_dataset
    from huggingface_hub import HfApi

    from stasc.hub.push import push_run
    from stasc.run.manifest import read_manifest
    from stasc.hub.sources import RunSource, adapter_location, list_iterations

    api = HfApi()
    repo = f"{api.whoami()['name']}/stasc-live-test-{uuid.uuid4().hex[:8]}"
    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    try:
        assert push_run(run_dir, repo, private=True).pushed == [0, 1, 2]
        assert push_run(run_dir, repo, private=True).pushed == []
        source = RunSource(repo)
        assert [e["metrics"] for e in list_iterations(source)] == [e["metrics"] for e in read_manifest(run_dir)["iterations"]]
        assert adapter_location(source, 2) == (repo, "iteration_02")
        assert load_dataset(repo, "evaluation", split="iteration_01").num_rows == 4
    finally:
        for repo_type in ("model", "dataset"):
            api.delete_repo(repo, repo_type=repo_type, missing_ok=True)
