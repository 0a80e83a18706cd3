"""What a visitor typed, checked, and the displayed chat turned into the conversation the model sees.

The model sees a chat exactly as training laid it out: the first question wrapped in the run's
instructions, and each self-correction preceded by the correction request that produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stasc.core.prompts import Message, initial_messages
from stasc.errors import StascError

MAX_QUESTION_CHARS = 500
MAX_REFERENCES_CHARS = 300
MAX_MESSAGE_CHARS = 500
MAX_HISTORY_MESSAGES = 40
MAX_HISTORY_MESSAGE_CHARS = 6000  # a reply of 512 new tokens is far shorter; anything longer was not made here
CORRECTION_TITLE = "Self-correction"


def check_text(value: Any, what: str, limit: int, *, required: bool = True) -> str:
    """Stripped text within the length limit, or an error saying how to fix it."""
    text = "" if value is None else str(value).strip()
    if required and not text:
        raise StascError(f"Type a {what} first.")
    if len(text) > limit:
        raise StascError(f"The {what} is {len(text)} characters long; the limit is {limit}. Shorten it.")
    return text


def parse_references(value: Any) -> list[str]:
    """Reference answers separated by ';' (commas occur inside answers, e.g. 'Washington, D.C.')."""
    text = check_text(value, "reference answers", MAX_REFERENCES_CHARS, required=False)
    return [part.strip() for part in text.split(";") if part.strip()]


def _content_text(content: Any) -> str:
    """Text of a chat message, whether Gradio sent a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return content["text"]
    if isinstance(content, list):
        return "".join(_content_text(part) for part in content)
    raise StascError("The chat history holds something other than text. Press Clear and start again.")


def normalize_history(history: Any) -> list[dict[str, Any]]:
    """The chat as a list of {role, content[, metadata]} with text content, checked."""
    messages: list[dict[str, Any]] = []
    for item in history or []:
        role = item.get("role") if isinstance(item, dict) else None
        if role not in ("user", "assistant"):
            raise StascError("The chat history is not a conversation. Press Clear and start again.")
        message: dict[str, Any] = {"role": role, "content": _content_text(item.get("content", ""))}
        if len(message["content"]) > MAX_HISTORY_MESSAGE_CHARS:
            raise StascError(
                f"The chat history holds a message over {MAX_HISTORY_MESSAGE_CHARS} characters. Press Clear and "
                "start again."
            )
        title = (item.get("metadata") or {}).get("title")
        if role == "assistant" and title == CORRECTION_TITLE:
            message["metadata"] = {"title": CORRECTION_TITLE}
        messages.append(message)
    return messages


def model_conversation(
    history: Sequence[dict[str, Any]], instructions: str, correction_instructions: str, use_instructions: bool
) -> list[Message]:
    """What the model sees for a displayed chat: the first question wrapped in the run's instructions (as in
    training), and each self-correction preceded by the correction request that produced it."""
    conversation: list[Message] = []
    for position, message in enumerate(history):
        text = message["content"]
        if message["role"] == "user":
            if position == 0 and use_instructions:
                conversation.extend(initial_messages(text, instructions))
            else:
                conversation.append({"role": "user", "content": text})
        else:
            if (message.get("metadata") or {}).get("title") == CORRECTION_TITLE:
                conversation.append({"role": "user", "content": correction_instructions})
            conversation.append({"role": "assistant", "content": text})
    return conversation
