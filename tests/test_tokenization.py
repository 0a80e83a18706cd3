from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from stasc.errors import StascError
from stasc.core.prompts import training_messages
from stasc.modeling.tokenization import IGNORE_INDEX, tokenize_conversation

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
REWRITING_TEMPLATE = (
    "{% for message in messages %}{% if loop.last %}{{ message['content'] }}{% else %}[old]{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}>>{% endif %}"
)

CONVERSATION = training_messages(
    "What is the capital of France?",
    "It is Lyon.\nFinal Answer: Lyon",
    "Lyon is wrong; the capital is Paris.\nFinal Answer: Paris",
    "Answer the question.",
    "Correct your answer if it is wrong.",
)


@pytest.fixture(scope="module")
def tokenizer(smollm_tokenizer_dir: Path):
    return AutoTokenizer.from_pretrained(smollm_tokenizer_dir)


def supervised_text(tokenizer, encoded: dict[str, list[int]]) -> str:
    return tokenizer.decode([label for label in encoded["labels"] if label != IGNORE_INDEX])


@pytest.mark.parametrize(
    ("template", "end_of_turn"),
    [(None, "<|im_end|>"), (LLAMA3_TEMPLATE, "<|eot_id|>"), (GEMMA_TEMPLATE, "<end_of_turn>")],
    ids=["chatml-smollm2", "llama3", "gemma"],
)
def test_only_the_correction_turn_is_supervised(tokenizer, template: str | None, end_of_turn: str) -> None:
    if template is not None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
        tokenizer.chat_template = template
    encoded = tokenize_conversation(tokenizer, CONVERSATION)
    text = supervised_text(tokenizer, encoded)
    assert text.startswith("Lyon is wrong; the capital is Paris.\nFinal Answer: Paris")
    assert "It is Lyon" not in text and "capital of France" not in text
    assert end_of_turn not in text or text.rstrip().endswith(end_of_turn)
    assert len(encoded["input_ids"]) == len(encoded["labels"]) == len(encoded["attention_mask"])
    # labels equal the input ids wherever they are not masked, and the mask is one contiguous tail
    first = next(i for i, label in enumerate(encoded["labels"]) if label != IGNORE_INDEX)
    assert all(label == IGNORE_INDEX for label in encoded["labels"][:first])
    assert encoded["labels"][first:] == encoded["input_ids"][first:]


def test_chatml_supervises_the_end_of_turn_token(tokenizer) -> None:
    text = supervised_text(tokenizer, tokenize_conversation(tokenizer, CONVERSATION))
    assert "<|im_end|>" in text  # the model must learn to stop after its correction


def test_template_that_rewrites_earlier_turns_is_refused(tokenizer) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = REWRITING_TEMPLATE
    with pytest.raises(StascError, match="cannot be located"):
        tokenize_conversation(tokenizer, CONVERSATION)


def test_conversation_must_end_with_the_assistant(tokenizer) -> None:
    with pytest.raises(ValueError):
        tokenize_conversation(tokenizer, CONVERSATION[:-1])
