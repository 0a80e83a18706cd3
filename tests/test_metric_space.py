"""The metric Space: the assembled folder scores on its own, and a push makes exactly the expected Hub calls
(uploads are mocked: no server that accepts them can run here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import httpx
import pytest
import yaml
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from stasc import __version__
from stasc.cli.hub import main as hub_main
from stasc.errors import StascError
from stasc.hub.metric_space import assemble_metric_space, push_metric
from stasc.metric import MODULE_NAME

from testing_utils import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
SPACE_FILES = {f"{MODULE_NAME}.py", "README.md", "app.py", "requirements.txt",
               "stasc/__init__.py", "stasc/errors.py", "stasc/core/__init__.py", "stasc/core/rewards.py"}
# A Python whose environment has the Space's packages (gradio 3.50.2 from the README's sdk_version, and
# requirements.txt): set it to run the Space's app.py as the Hub would.
SPACE_PYTHON = os.environ.get("STASC_METRIC_SPACE_PYTHON")


def files_in(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_the_folder_is_a_metric_space(tmp_path: Path) -> None:
    folder = assemble_metric_space(tmp_path / "space")
    assert files_in(folder) == SPACE_FILES
    meta = yaml.safe_load((folder / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert {"evaluate", "metric"} <= set(meta["tags"])
    assert "launch_gradio_widget(module)" in (folder / "app.py").read_text()
    project = (ROOT / "requirements.txt").read_text()
    evaluate_pin = re.search(r"^evaluate==(\S+)$", project, re.M).group(1)
    assert f"evaluate=={evaluate_pin}" in (folder / "requirements.txt").read_text().splitlines()
    assert (folder / "stasc" / "core" / "rewards.py").read_bytes() == (ROOT / "stasc" / "core" / "rewards.py").read_bytes()
    with pytest.raises(StascError, match="is not empty. Pass a new directory"):
        assemble_metric_space(folder)


def test_the_folder_scores_with_its_own_copy_of_stasc(tmp_path: Path) -> None:
    """Run as the Space runs it: from the folder, with the stasc copy beside the module (not this checkout)."""
    folder = assemble_metric_space(tmp_path / "space")
    script = (
        "import sys; sys.path.insert(0, '.')\n"
        "import evaluate, stasc\n"
        "print(stasc.__file__)\n"
        f"rewards = evaluate.load('{MODULE_NAME}.py', keep_in_memory=True)\n"
        "print(rewards.compute(predictions=['It is Zürich.', 'Final Answer: 14'], references=[['Zurich'], ['4']],"
        " answer_extraction='final_answer'))\n"
    )
    run = subprocess.run([sys.executable, "-I", "-c", script], cwd=folder, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    location, scores = run.stdout.strip().splitlines()[-2:]
    assert Path(location) == folder / "stasc" / "__init__.py"
    assert scores == "{'in_acc': 0.0, 'em': 0.0, 'f1': 0.0, 'token_f1': 0.0}"  # neither has the right final line


def test_push_creates_the_space_and_uploads_the_folder() -> None:
    api = mock.create_autospec(HfApi, instance=True)
    uploaded: list[set[str]] = []
    api.upload_folder.side_effect = lambda **kwargs: uploaded.append(files_in(Path(kwargs["folder_path"])))
    url = push_metric("me/stasc-rewards", private=True, api=api)
    assert url.endswith("/spaces/me/stasc-rewards")
    assert api.method_calls == [
        mock.call.create_repo("me/stasc-rewards", repo_type="space", space_sdk="gradio", private=True, exist_ok=True),
        mock.call.upload_folder(
            repo_id="me/stasc-rewards", repo_type="space", folder_path=mock.ANY,
            commit_message=f"Publish the {MODULE_NAME} metric of stasc {__version__}", delete_patterns=["stasc/**"],
        ),
    ]
    assert uploaded == [SPACE_FILES]


def http_error(status: int) -> HfHubHTTPError:
    request = httpx.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"HTTP {status}", response=httpx.Response(status, request=request))


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "refused the token .* 'hf auth login'"), (403, "may not write to the Space me/stasc-rewards")],
)
def test_a_refused_push_says_what_to_do(status: int, message: str) -> None:
    api = mock.create_autospec(HfApi, instance=True)
    api.create_repo.side_effect = http_error(status)
    with pytest.raises(StascError, match=message):
        push_metric("me/stasc-rewards", api=api)
    api.upload_folder.assert_not_called()


def test_command_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    api = mock.create_autospec(HfApi, instance=True)
    monkeypatch.setattr("huggingface_hub.HfApi", lambda: api)
    monkeypatch.setattr("stasc.cli.hub.setup_logging", lambda level: None)  # keep pytest's log capture in place
    assert hub_main(["push-metric", "--space", "me/stasc-rewards", "--private"]) == 0
    assert "Published the metric to " in capsys.readouterr().out
    assert api.create_repo.call_args.kwargs["private"] is True
    assert hub_main(["push-metric", "--space", "not an id"]) == 2
    assert "error: Invalid Hub repository id 'not an id'" in capsys.readouterr().err
    assert api.create_repo.call_count == 1


@pytest.mark.slow
@pytest.mark.skipif(SPACE_PYTHON is None, reason="set STASC_METRIC_SPACE_PYTHON to a Python with the Space's packages")
def test_the_space_app_serves_the_widget(tmp_path: Path) -> None:
    """app.py, started from the folder as the Hub starts it, answers through gradio_client with the rewards."""
    folder = assemble_metric_space(tmp_path / "space")
    port = free_port()
    log = tmp_path / "space.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1")
    with open(log, "wb") as output:
        process = subprocess.Popen([SPACE_PYTHON, "app.py"], cwd=folder, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, log)
        table = tmp_path / "table.json"  # gradio_client 0.6 sends a Dataframe as a JSON file
        table.write_text(json.dumps({"headers": ["predictions", "references"],
                                     "data": [['"It is Paris"', '["Paris"]'], ['"14"', '["4"]']]}))
        client = (
            "from gradio_client import Client\n"
            f"client = Client('http://127.0.0.1:{port}/', verbose=False)\n"
            f"print(client.predict({str(table)!r}, api_name='/predict'))\n"
        )
        answer = subprocess.run([SPACE_PYTHON, "-c", client], env=env, capture_output=True, text=True, timeout=120)
        assert answer.returncode == 0, answer.stderr[-3000:] + log.read_text()[-3000:]
        assert answer.stdout.strip().splitlines()[-1] == "{'in_acc': 0.5, 'em': 0.0, 'f1': 0.5, 'token_f1': 0.25}"
    finally:
        process.terminate()
        process.wait(timeout=30)
