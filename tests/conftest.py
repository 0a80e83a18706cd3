"""Shared fixtures: a tiny random model with the real SmolLM2 tokenizer, and small QA files."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from stasc.modeling.models import resolve_model_path

CITIES = ("Paris", "London", "Rome")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
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


@pytest.fixture(scope="session")
def smollm_tokenizer_dir() -> Path:
    """The bundled SmolLM2 checkpoint directory (converted once per machine)."""
    return Path(resolve_model_path("bundled"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm_tokenizer_dir: Path) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer whose generation may only emit a few
    city names and end-of-turn, so rewards come out mixed (some right, some wrong)."""
    directory = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    allowed = {tokenizer.eos_token_id}
    for city in CITIES:
        allowed.update(tokenizer.encode(" " + city, add_special_tokens=False))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        suppress_tokens=[token for token in range(len(tokenizer)) if token not in allowed],
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture()
def city_questions(tmp_path: Path) -> tuple[Path, Path]:
    """Train and test JSONL files whose answers are the cities the tiny model can say."""
    train = [{"id": f"q{i}", "question": f"Which city is number {i}?", "answers": [CITIES[i % 3]]} for i in range(8)]
    test = [{"id": f"t{i}", "question": f"Which city is test {i}?", "answers": [CITIES[i % 3]]} for i in range(4)]
    return write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "test.jsonl", test)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A finished 2-iteration run of the tiny model (read-only for tests: copy it to modify it)."""
    from stasc.config import StascConfig
    from stasc.run.loop import StascRun

    directory = tmp_path_factory.mktemp("tiny-run")
    train = [{"id": f"q{i}", "question": f"Which city is number {i}?", "answers": [CITIES[i % 3]]} for i in range(8)]
    test = [{"id": f"t{i}", "question": f"Which city is test {i}?", "answers": [CITIES[i % 3]]} for i in range(4)]
    config = StascConfig(
        model=str(tiny_model_dir), dataset=str(write_jsonl(directory / "train.jsonl", train)),
        test_dataset=str(write_jsonl(directory / "test.jsonl", test)), output_dir=str(directory / "run"),
        iterations=2, n_init=3, n_corr=3, max_new_tokens=4, dtype="float32", train_batch_size=4,
        learning_rate=5e-3, variant="EIE", log_level="warning",
    )
    StascRun(config).run()
    return directory / "run"


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


@pytest.fixture(scope="session")
def hub_server(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real Hub-compatible server (olah, offline) serving the model and dataset repositories
    HUB_REPO that push_run wrote for the tiny run; yields (endpoint URL, its working folder).
    Clients must run in a subprocess with HF_ENDPOINT=endpoint and HF_HUB_DISABLE_XET=1,
    because huggingface_hub reads the endpoint when it is first imported."""
    from stasc.hub.push import push_run

    root = tmp_path_factory.mktemp("olah")
    push_run(shutil.copytree(tiny_run, root / "run"), HUB_REPO, api=GitMirrorApi(root / "mirrors"))
    port = free_port()
    config = root / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\nrepos-path = "{root / "repos"}"\n'
        f'mirror-scheme = "http"\nmirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'mirrors-path = ["{root / "mirrors"}"]\n'
        "[accessibility]\noffline = true\n"
    )
    olah = shutil.which("olah-cli") or str(Path(sys.executable).parent / "olah-cli")
    log = open(root / "olah.log", "w")
    server = subprocess.Popen([olah, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=root)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None:
                raise RuntimeError((root / "olah.log").read_text())
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}", root
    server.terminate()
    server.wait(timeout=10)
    log.close()
