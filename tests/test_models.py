from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from stasc.errors import StascError
from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path

from testing_utils import assert_documented


def test_bundled_model_is_converted_to_a_plain_checkpoint(smollm_tokenizer_dir: Path) -> None:
    assert (smollm_tokenizer_dir / "config.json").is_file()
    assert (smollm_tokenizer_dir / "model.safetensors").is_file()
    assert resolve_model_path("bundled") == str(smollm_tokenizer_dir)  # cached: converted once


def test_unknown_model_name_suggests_bundled() -> None:
    with pytest.raises(StascError, match="Unknown model 'bundeld'.*Did you mean 'bundled'"):
        resolve_model_path("bundeld")


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StascError, match="has no config.json"):
        resolve_model_path(str(tmp_path))


def test_hub_model_offline_gives_a_clear_error(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(StascError, match="Could not load model 'nobody-here/no-such-model'"):
        load_tokenizer(resolve_model_path("nobody-here/no-such-model"))


def test_model_without_chat_template_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(StascError, match="has no chat template"):
        load_tokenizer(str(tmp_path))


def test_explicit_dtype_is_respected() -> None:
    assert pick_dtype("float32") is torch.float32
    assert pick_dtype("auto") in (torch.float32, torch.bfloat16, torch.float16)


def test_trust_remote_code_is_off_by_default() -> None:
    from stasc.config import StascConfig

    assert StascConfig().trust_remote_code is False


@pytest.mark.slow
def test_bundled_model_answers_easy_questions(smollm_tokenizer_dir: Path) -> None:
    """The real bundled model, sampling through the loop's sampler, knows the capital of France."""
    from peft import LoraConfig

    from stasc.config import DEFAULT_INSTRUCTIONS
    from stasc.sampling.transformers import SamplingSettings, TransformersSampler
    from stasc.modeling.policy import Policy
    from stasc.core.prompts import initial_messages
    from stasc.core.rewards import in_accuracy

    tokenizer = load_tokenizer(str(smollm_tokenizer_dir))
    model = load_model(str(smollm_tokenizer_dir), dtype=pick_dtype("auto"))
    policy = Policy(model, tokenizer, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"), seed=0)
    sampler = TransformersSampler(policy, SamplingSettings(max_new_tokens=48, temperature=0.6, top_p=0.9, batch_size=16))
    questions = {"What is the capital of France?": ["Paris"], "How many legs does a spider have?": ["8", "eight"]}
    outputs = sampler.sample(
        [initial_messages(q, DEFAULT_INSTRUCTIONS) for q in questions], 4, seed=0, desc="bundled"
    )
    assert all(len(samples) == 4 and all(isinstance(s, str) and s for s in samples) for samples in outputs)
    paris = [in_accuracy(text, questions["What is the capital of France?"]) for text in outputs[0]]
    assert sum(paris) >= 2, outputs[0]


def test_a_cut_short_weights_file_is_named_with_the_way_out(tmp_path: Path, tiny_model_dir: Path) -> None:
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted copy
    with pytest.raises(StascError) as damaged:
        load_model(str(model_dir), dtype=torch.float32)
    assert str(damaged.value).startswith(f"Model {model_dir} has a damaged weights file (")
    assert_documented("a damaged weights file in the model directory", str(damaged.value))
