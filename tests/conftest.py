"""Shared fixtures: a tiny random model with the real SmolLM2 tokenizer, and small QA files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from stasc.models import resolve_model_path

CITIES = ("Paris", "London", "Rome")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    from stasc.loop import StascRun

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
