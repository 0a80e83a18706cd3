"""Turning conversations into token ids, with labels only on the final assistant turn.

The final turn is located through the chat template itself: the conversation without its
last turn, rendered with the generation prompt, must be a prefix of the whole rendered
conversation; every token that starts at or after that prefix is supervised. This works
for any template (ChatML, Llama 3, Gemma, ...) without model-specific token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from stasc.errors import StascError
from stasc.core.prompts import Message

IGNORE_INDEX = -100


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> str:
    """The text a model continues to produce the next assistant turn."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]
) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels (-100 everywhere but the last assistant turn)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("A training conversation must end with an assistant turn.")
    prompt = render_prompt(tokenizer, messages[:-1])
    full = tokenizer.apply_chat_template(list(messages), tokenize=False)
    if not full.startswith(prompt):
        raise StascError(
            "The model's chat template renders a conversation differently from its own prefix "
            "(it rewrites earlier turns), so the correction turn cannot be located for training. "
            "Use a model whose template keeps earlier turns unchanged."
        )
    encoded: Any = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    boundary = len(prompt)
    labels = [
        token if start >= boundary else IGNORE_INDEX
        for token, (start, _end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
    ]
    if all(label == IGNORE_INDEX for label in labels):
        raise ValueError("The final assistant turn produced no tokens to train on.")
    return {
        "input_ids": list(encoded["input_ids"]),
        "attention_mask": list(encoded["attention_mask"]),
        "labels": labels,
    }
