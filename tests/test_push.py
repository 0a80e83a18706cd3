"""The write side of Hub publishing, checked at the huggingface_hub boundary (uploads cannot run here)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from unittest.mock import call, create_autospec

import httpx
import pytest
from huggingface_hub import DatasetCard, HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError

from stasc.config import check_repo_id
from stasc.errors import StascError
from stasc.hub.push import push_run
from stasc.run.manifest import read_manifest

REPO = "stasc-test/tiny-run"
SECRET = "hf_SECRETtoken1234567890abcdef"


@pytest.fixture()
def run_dir(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def fake_api() -> HfApi:
    return create_autospec(HfApi, instance=True)


def operations(commit_call) -> dict[str, object]:
    return {op.path_in_repo: op.path_or_fileobj for op in commit_call.args[1]}


def tree_digest(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*")) if path.is_file() and path.name != "hub_push.json"
    }


def test_push_commits_each_iteration_to_a_model_and_a_dataset_repo(run_dir: Path) -> None:
    api = fake_api()
    report = push_run(run_dir, REPO, private=True, api=api)
    assert report.pushed == [0, 1, 2] and report.already_there == []
    assert api.create_repo.call_args_list == [
        call(REPO, repo_type="model", private=True, exist_ok=True),
        call(REPO, repo_type="dataset", private=True, exist_ok=True),
    ]
    commits = api.create_commit.call_args_list
    assert [(c.args[0], c.kwargs["repo_type"]) for c in commits] == [(REPO, "model"), (REPO, "dataset")] * 3
    manifest = read_manifest(run_dir)

    model0, data0, model1, data1, model2, data2 = commits
    assert set(operations(model0)) == {"README.md", "run.json"}  # iteration 0 is the base model: no adapter
    assert set(operations(data0)) == {"iteration_00/evaluation.parquet", "README.md", "run.json"}
    assert set(operations(model1)) == {
        "iteration_01/adapter_model.safetensors", "iteration_01/adapter_config.json", "iteration_01/README.md",
        "adapter_model.safetensors", "adapter_config.json", "README.md", "run.json",
    }
    assert set(operations(data1)) == {
        f"iteration_01/{name}.parquet" for name in ("train", "corrections", "initial_answers", "evaluation")
    } | {"README.md", "run.json"}
    assert operations(model2)["iteration_02/adapter_model.safetensors"] == str(
        run_dir / "iteration_02" / "adapter" / "adapter_model.safetensors"
    )
    metrics = manifest["iterations"][1]["metrics"]
    assert model1.kwargs["commit_message"] == (
        f"STaSC iteration 1: initial in-acc {metrics['initial_in_acc']:.3f}, "
        f"correction in-acc {metrics['correction_in_acc']:.3f}"
    )

    card = ModelCard(operations(model2)["README.md"].decode())
    assert card.data.base_model == manifest["config"]["model"]
    assert card.data.library_name == "peft" and card.data.license == "apache-2.0"
    assert "stasc" in card.data.tags and card.data.datasets == [REPO]
    assert "| 2 |" in card.text and "| 1 |" in card.text and "| 0 |" in card.text  # metrics of all iterations so far
    dataset_card = DatasetCard(operations(data2)["README.md"].decode())
    configs = {c["config_name"]: c for c in dataset_card.data.configs}
    assert set(configs) == {"train", "corrections", "initial_answers", "evaluation"}
    assert [f["split"] for f in configs["evaluation"]["data_files"]] == ["iteration_00", "iteration_01", "iteration_02"]
    assert {"split": "iteration_02", "path": "iteration_02/train.parquet"} in configs["train"]["data_files"]


def test_pushing_twice_changes_nothing(run_dir: Path) -> None:
    push_run(run_dir, REPO, api=fake_api())
    again = fake_api()
    report = push_run(run_dir, REPO, api=again)
    assert report.pushed == [] and report.already_there == [0, 1, 2]
    assert again.method_calls == []


def http_error(status: int) -> HfHubHTTPError:
    request = httpx.Request("POST", f"https://huggingface.co/api/models/{REPO}/commit/main")
    return HfHubHTTPError(f"{status} error", response=httpx.Response(status, request=request))


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (http_error(401), "refused the token \\(HTTP 401\\).*hf auth login"),
        (http_error(403), "may not write to stasc-test/tiny-run \\(HTTP 403\\).*belongs to someone else"),
        (http_error(503), "HTTP 503"),
        (httpx.ConnectError("connection dropped"), "Could not reach the Hub"),
    ],
)
def test_failed_push_explains_keeps_the_run_and_resumes(run_dir: Path, monkeypatch, error, message) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    before = tree_digest(run_dir)
    api = fake_api()
    api.create_commit.side_effect = [None, None, None, error]  # iteration 0 and the model of 1 land, then failure
    with pytest.raises(StascError, match=message) as failure:
        push_run(run_dir, REPO, api=api)
    assert SECRET not in str(failure.value)
    assert f"python -m stasc push {run_dir} --repo {REPO}" in str(failure.value)
    assert tree_digest(run_dir) == before, "the local run is untouched"

    retry = fake_api()
    report = push_run(run_dir, REPO, api=retry)
    assert report.pushed == [1, 2] and report.already_there == [0]
    kinds = [(c.kwargs["repo_type"], c.kwargs["commit_message"].split(":")[0]) for c in retry.create_commit.call_args_list]
    assert kinds == [
        ("dataset", "STaSC iteration 1 data"), ("model", "STaSC iteration 2"), ("dataset", "STaSC iteration 2 data")
    ]


def test_no_token_in_any_file_or_operation(run_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    api = fake_api()
    push_run(run_dir, REPO, api=api)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for commit in api.create_commit.call_args_list:
        for content in operations(commit).values():
            data = content if isinstance(content, bytes) else Path(content).read_bytes()
            assert SECRET.encode() not in data


@pytest.mark.slow
def test_no_token_in_the_logs_of_a_run_that_pushes(tmp_path, tiny_model_dir, city_questions, monkeypatch, capfd) -> None:
    """train.py --push-to-hub at debug level, with a push refused once (401) and retried: the token
    appears in no log line, no file of the run, and no uploaded file."""
    from stasc.cli.train import train_main

    monkeypatch.setenv("HF_TOKEN", SECRET)
    api = fake_api()
    api.create_commit.side_effect = [http_error(401), None, None, None, None, None]
    monkeypatch.setattr("huggingface_hub.HfApi", lambda *args, **kwargs: api)
    train, test = city_questions
    output = tmp_path / "run"
    code = train_main(["--model", str(tiny_model_dir), "--dataset", str(train), "--test-dataset", str(test),
                       "--output-dir", str(output), "--iterations", "1", "--max-new-tokens", "4", "--dtype", "float32",
                       "--train-batch-size", "4", "--push-to-hub", REPO, "--log-level", "debug"])
    assert code == 0
    logs = capfd.readouterr()
    assert "Hub push failed" in logs.err and "HTTP 401" in logs.err  # the failure was logged, at debug level
    assert SECRET not in logs.out + logs.err
    for path in output.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for commit in api.create_commit.call_args_list:
        for content in operations(commit).values():
            assert SECRET.encode() not in (content if isinstance(content, bytes) else Path(content).read_bytes())


@pytest.mark.parametrize("repo_id", ["no-slash", "a/b/c", "org/na me", "org/-bad", "org/a..b", ""])
def test_invalid_repo_ids_are_refused_before_any_call(repo_id: str) -> None:
    with pytest.raises(StascError, match="Invalid Hub repository id"):
        check_repo_id(repo_id)


def test_push_flag_is_validated_by_the_config() -> None:
    from stasc.config import config_from_args

    with pytest.raises(StascError, match="Invalid Hub repository id 'nope'"):
        config_from_args(["--push-to-hub", "nope"])
    assert config_from_args(["--push-to-hub", "me/run", "--hub-private"]).hub_private is True


def test_nothing_outside_the_run_directory_is_ever_uploaded(run_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(b"a file outside the run")
    manifest_file = run_dir / "run.json"
    original = manifest_file.read_text()
    manifest_file.write_text(original.replace('"iteration_01/train.parquet"', '"../secret.parquet"'))
    api = fake_api()
    with pytest.raises(StascError, match=r"iterations\[1\].train_data '../secret.parquet' is not a file of an iteration"):
        push_run(run_dir, REPO, api=api)
    assert api.create_commit.call_count == 0
    manifest_file.write_text(original)
    (run_dir / "iteration_01" / "adapter" / "README.md").unlink()
    (run_dir / "iteration_01" / "adapter" / "README.md").symlink_to(secret)
    with pytest.raises(StascError, match="is a link to .*secret.parquet, outside the run directory"):
        push_run(run_dir, REPO, api=api)
    uploaded = [str(op.path_or_fileobj) for commit in api.create_commit.call_args_list for op in commit.args[1]]
    assert uploaded and not any("iteration_01" in path or "secret" in path for path in uploaded)
