"""Sampling many answers for many prompts in batches, or one answer as it grows.

Prompts are sorted by length so each batch pads little, and all samples of one prompt
share a batch (and its prompt computation, see stasc.sampling.cpu_engine.decoding). A streamed
answer is the same decode call on a batch of one, so it is the answer `sample` gives for that
prompt and seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from stasc.sampling.cpu_engine.decoding import DecodeSettings, decode, stop_token_ids
from stasc.modeling.policy import Policy
from stasc.core.prompts import Message
from stasc.modeling.tokenization import render_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings(DecodeSettings):
    """How answers are drawn, and how many sequences share a batch."""

    batch_size: int


class ModelSlot(Protocol):
    """What the transformers backend samples from: a tokenizer, and the model with whichever weights are active
    (the loop's Policy; the app's loaded iteration)."""

    tokenizer: PreTrainedTokenizerBase

    @property
    def model(self) -> torch.nn.Module: ...

    @property
    def device(self) -> torch.device: ...

    def generating(self) -> contextlib.AbstractContextManager[torch.nn.Module]: ...


class _Stopped(Exception):
    """The reader of a stream went away: ends the decode loop at its next step."""


class TransformersSampler:
    """Generates with the policy's currently active model (M0 or base + adapter)."""

    def __init__(self, policy: ModelSlot, settings: SamplingSettings) -> None:
        self.policy = policy
        self.settings = settings
        self.stop_ids = stop_token_ids(policy.model, policy.tokenizer)
        suppressed = getattr(policy.model.generation_config, "suppress_tokens", None)
        self.suppress_ids = torch.tensor(suppressed, device=policy.device) if suppressed else None

    def sample(
        self, conversations: Sequence[Sequence[Message]], num_samples: int, *, seed: int, desc: str,
        temperature: float | None = None,
    ) -> list[list[str]]:
        """num_samples continuations of each conversation, in the order given (at `temperature` when given,
        else the settings' own)."""
        settings = self._settings(temperature)
        encoded = self.encode(conversations)
        order = sorted(range(len(encoded)), key=lambda index: -len(encoded[index]))
        per_batch = max(1, settings.batch_size // num_samples)
        results: list[list[str]] = [[] for _ in conversations]
        batches = [order[start : start + per_batch] for start in range(0, len(order), per_batch)]
        with self.policy.generating() as model, tqdm(total=len(order), desc=desc, unit="prompt") as bar:
            for batch_index, batch in enumerate(batches):
                texts = self._generate_batch(model, [encoded[i] for i in batch], num_samples, seed + batch_index, settings)
                for position, index in enumerate(batch):
                    results[index] = texts[position * num_samples : (position + 1) * num_samples]
                bar.update(len(batch))
        return results

    def stream(
        self, conversation: Sequence[Message], *, seed: int, desc: str, temperature: float | None = None
    ) -> Iterator[str]:
        """The continuation of one conversation as it grows, ending with the text `sample([conversation], 1,
        seed=seed)` gives. Closing the iterator stops the decoding at its next step."""
        settings = self._settings(temperature)
        (prompt,) = self.encode([conversation])
        tokenizer = self.policy.tokenizer
        updates: queue.Queue[list[int] | tuple[str, BaseException | None]] = queue.Queue()
        stop = threading.Event()

        def on_step(outputs: list[list[int]]) -> None:
            if stop.is_set():
                raise _Stopped
            updates.put(list(outputs[0]))

        def work() -> None:
            try:
                with self.policy.generating() as model:
                    (text,) = self._generate_batch(model, [prompt], 1, seed, settings, on_step)
                updates.put((text, None))
            except _Stopped:
                updates.put(("", None))
            except BaseException as error:  # handed to the reader, who raises it in its own thread
                updates.put(("", error))

        logger.debug("%s: streaming one answer (seed %d)", desc, seed)
        worker = threading.Thread(target=work, name="stasc-stream", daemon=True)
        worker.start()
        shown = ""
        try:
            while True:
                update = updates.get()
                if isinstance(update, tuple):
                    text, error = update
                    if error is not None:
                        raise error
                    yield text
                    return
                text = tokenizer.decode(update, skip_special_tokens=True).lstrip()
                if text != shown and not text.endswith("\ufffd"):  # wait for the rest of a split character
                    shown = text
                    yield text
        finally:
            stop.set()
            worker.join()

    def encode(self, conversations: Sequence[Sequence[Message]]) -> list[list[int]]:
        """Token ids of each conversation's prompt, rendered through the chat template as in training."""
        tokenizer = self.policy.tokenizer
        return [
            tokenizer(render_prompt(tokenizer, conversation), add_special_tokens=False)["input_ids"]
            for conversation in conversations
        ]

    def _settings(self, temperature: float | None) -> SamplingSettings:
        return self.settings if temperature is None else dataclasses.replace(self.settings, temperature=temperature)

    def _generate_batch(
        self, model: torch.nn.Module, prompts: list[list[int]], num_samples: int, seed: int, settings: SamplingSettings,
        on_step: Callable[[list[list[int]]], None] | None = None,
    ) -> list[str]:
        tokenizer = self.policy.tokenizer
        new_tokens = decode(
            model, prompts, num_samples, settings,
            pad_token_id=tokenizer.pad_token_id, stop_ids=self.stop_ids, seed=seed, suppress_ids=self.suppress_ids,
            on_step=on_step,
        )
        return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class PolicySampler:
    """The transformers backend: generates with the in-memory policy after loading the adapter."""

    def __init__(self, policy: Policy, settings: SamplingSettings) -> None:
        self.policy = policy
        self.sampler = TransformersSampler(policy, settings)

    def sample(
        self, conversations: Sequence[Sequence[Message]], num_samples: int, *, adapter: Path | None, seed: int,
        desc: str, temperature: float | None = None,
    ) -> list[list[str]]:
        self.policy.activate(adapter)
        return self.sampler.sample(conversations, num_samples, seed=seed, desc=desc, temperature=temperature)

    def stream(
        self, conversation: Sequence[Message], *, adapter: Path | None, seed: int, desc: str,
        temperature: float | None = None,
    ) -> Iterator[str]:
        self.policy.activate(adapter)
        return self.sampler.stream(conversation, seed=seed, desc=desc, temperature=temperature)
