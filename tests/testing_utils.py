"""Helpers shared by the tests (fixtures are in conftest.py): a tiny Llama, small QA files, a local
stand-in for the Hub, a config for the tiny model, a run's model loaded without the app, and ports."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from stasc.config import StascConfig
from stasc.hub.sources import RunSource, adapter_location, load_run_manifest
from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path

ROBUSTNESS_DOC = Path(__file__).resolve().parents[1] / "docs" / "robustness.md"
CITIES = ("Paris", "London", "Rome")
HUB_REPO = "stasc-test/tiny-run"
SYSTEM = list(range(40, 70))  # a prefix all prompts share
PROMPTS = [SYSTEM + list(range(5, 5 + length)) for length in (3, 9, 4, 12)]  # token ids for tiny_llama


def tiny_llama(dtype: torch.dtype = torch.float32, peaked: bool = False, **config) -> LlamaForCausalLM:
    """A 2-layer random Llama with a 96-token vocabulary; `peaked`: its output layer scaled up, so its next-token
    distributions are narrow and samples of one prompt often draw the same token (not always)."""
    torch.manual_seed(0)
    settings = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "eos_token_id": 2, "pad_token_id": 2} | config
    model = LlamaForCausalLM(LlamaConfig(**settings)).to(dtype).eval()
    if peaked:
        with torch.no_grad():
            model.lm_head.weight.mul_(20)
    return model


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def capital_questions(count: int) -> list[dict]:
    """Questions the bundled model answers right most of the time (up to 10): for runs of the real model."""
    capitals = [
        ("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Germany", "Berlin"), ("Spain", "Madrid"),
        ("Russia", "Moscow"), ("England", "London"), ("Egypt", "Cairo"), ("Austria", "Vienna"), ("Greece", "Athens"),
    ]
    return [{"question": f"What is the capital of {country}?", "answers": [city]} for country, city in capitals[:count]]


def city_question_files(directory: Path) -> tuple[Path, Path]:
    """Train and test JSONL files (8 and 4 questions) whose answers are the cities the tiny model can say."""
    train = [{"id": f"q{i}", "question": f"Which city is number {i}?", "answers": [CITIES[i % 3]]} for i in range(8)]
    test = [{"id": f"t{i}", "question": f"Which city is test {i}?", "answers": [CITIES[i % 3]]} for i in range(4)]
    return write_jsonl(directory / "train.jsonl", train), write_jsonl(directory / "test.jsonl", test)


def make_config(directory: Path, model: Path, questions: tuple[Path, Path], **overrides) -> StascConfig:
    train, test = questions
    settings = dict(
        model=str(model), dataset=str(train), test_dataset=str(test), output_dir=str(directory / "run"),
        iterations=2, n_init=3, n_corr=3, max_new_tokens=4, dtype="float32", train_batch_size=4,
        learning_rate=5e-3, variant="EIE", generation_batch_size=64, log_level="warning",
    )
    settings.update(overrides)
    return StascConfig(**settings)


def load_iteration_model(source: RunSource, iteration: int, dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) of a run's iteration as the run describes it: its base model, plus the adapter
    run.json names for the iteration (none for iteration 0), loaded with stasc.modeling and peft, not the app."""
    from peft import PeftModel

    manifest = load_run_manifest(source)
    config = manifest["config"]
    remote_code = config.get("trust_remote_code", False)
    model_path = resolve_model_path(config["model"], config.get("model_cache_dir"))
    tokenizer = load_tokenizer(model_path, trust_remote_code=remote_code)
    model = load_model(model_path, dtype=pick_dtype(dtype), trust_remote_code=remote_code)
    location = adapter_location(source, iteration, manifest)
    if location is not None:
        path, subfolder = location
        kwargs = {"subfolder": subfolder, "revision": source.revision} if subfolder else {}
        model = PeftModel.from_pretrained(model, path, **kwargs)
        model.eval()
    return model, tokenizer


class GitMirrorApi:
    """Stands in for HfApi: each create_commit becomes a commit in a local git repository."""

    def __init__(self, mirrors: Path) -> None:
        self.mirrors = mirrors

    def _repo(self, repo_id: str, repo_type: str) -> Path:
        return self.mirrors / ("models" if repo_type == "model" else "datasets") / repo_id

    def create_repo(self, repo_id: str, *, repo_type: str, private: bool, exist_ok: bool) -> None:
        path = self._repo(repo_id, repo_type)
        if not path.exists():
            path.mkdir(parents=True)
            subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)

    def create_commit(self, repo_id: str, operations, *, repo_type: str, commit_message: str) -> None:
        path = self._repo(repo_id, repo_type)
        for operation in operations:
            target = path / operation.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            source = operation.path_or_fileobj
            target.write_bytes(source if isinstance(source, bytes) else Path(source).read_bytes())
        git = ["git", "-C", str(path), "-c", "user.name=stasc", "-c", "user.email=stasc@localhost"]
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", commit_message], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not start within {timeout} s:\n{log.read_text()[-3000:]}")


def app_environment(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no run or Hub settings of the caller, no Gradio analytics."""
    skipped = ("STASC_RUNS", "STASC_HUB", "GRADIO_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(skipped)}
    return {**env, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", **extra}


def last(items: Iterator[Any]) -> Any:
    values = list(items)
    assert values, "the handler yielded nothing"
    return values[-1]


def documented_messages() -> dict[str, str]:
    """docs/robustness.md's table: each bad input's name and the message the user sees (… marks a part that
    varies, such as a path or a process id; the command lines print it after "error: ")."""
    rows = re.findall(r"^\| ([^|`]+?) \| `([^`]+)` \|", ROBUSTNESS_DOC.read_text(encoding="utf-8"), re.MULTILINE)
    messages = dict(rows)
    assert len(messages) == len(rows), "every row of docs/robustness.md names a different bad input"
    return messages


def assert_documented(name: str, output: str) -> None:
    """One line of output (stderr, or an error's text) is exactly the message docs/robustness.md shows for name."""
    shown = documented_messages().get(name)
    assert shown is not None, f"docs/robustness.md has no row {name!r}; add it with the message:\n{output.strip()}"
    pattern = "(?:error: )?" + ".*?".join(re.escape(piece) for piece in shown.split("…"))
    assert any(re.fullmatch(pattern, line) for line in output.splitlines()), (
        f"docs/robustness.md shows for {name!r}:\n{shown}\nbut the user saw:\n{output.strip()}"
    )
