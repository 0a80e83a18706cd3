"""Sampling many answers for many prompts in batches.

Prompts are sorted by length so each batch pads little, and all samples of one prompt
share a batch (and its prompt computation, see stasc.sampling.cpu_engine.decoding).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from stasc.sampling.cpu_engine.decoding import DecodeSettings, decode, stop_token_ids
from stasc.modeling.policy import Policy
from stasc.core.prompts import Message
from stasc.modeling.tokenization import render_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings(DecodeSettings):
    """How answers are drawn, and how many sequences share a batch."""

    batch_size: int


class TransformersSampler:
    """Generates with the policy's currently active model (M0 or base + adapter)."""

    def __init__(self, policy: Policy, settings: SamplingSettings) -> None:
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
        settings = self.settings if temperature is None else dataclasses.replace(self.settings, temperature=temperature)
        tokenizer = self.policy.tokenizer
        encoded = [
            tokenizer(render_prompt(tokenizer, conversation), add_special_tokens=False)["input_ids"]
            for conversation in conversations
        ]
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

    def _generate_batch(
        self, model: torch.nn.Module, prompts: list[list[int]], num_samples: int, seed: int, settings: SamplingSettings
    ) -> list[str]:
        tokenizer = self.policy.tokenizer
        new_tokens = decode(
            model, prompts, num_samples, settings,
            pad_token_id=tokenizer.pad_token_id, stop_ids=self.stop_ids, seed=seed, suppress_ids=self.suppress_ids,
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
