"""One sampling call split over the processes `accelerate launch` started (see stasc.distributed)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from stasc.core.prompts import Message
from stasc.distributed import Processes
from stasc.sampling.base import Sampler, SharesGpuMemory


class ShardedSampler:
    """Splits each sampling call over the processes and gives every process all the answers.

    Prompts are dealt round-robin to the groups (group_size processes share one tensor-parallel
    vLLM engine and sample the same share), so each share has a similar mix of lengths.
    """

    def __init__(self, inner: Sampler, processes: Processes, group_size: int = 1) -> None:
        self.inner = inner
        self.processes = processes
        self.group_size = group_size

    def sample(
        self, conversations: Sequence[Sequence[Message]], num_samples: int, *, adapter: Path | None, seed: int,
        desc: str, temperature: float | None = None,
    ) -> list[list[str]]:
        groups = self.processes.count // self.group_size
        group = self.processes.index // self.group_size
        share = list(conversations[group::groups])
        samples = self.inner.sample(
            share, num_samples, adapter=adapter, seed=seed, desc=f"{desc} [{group + 1}/{groups}]",
            temperature=temperature,
        )
        shares = dict(self.processes.gather([(group, samples)]))
        results: list[list[str]] = [[] for _ in conversations]
        for index, answers in shares.items():
            results[index::groups] = answers
        return results

    def stream(
        self, conversation: Sequence[Message], *, adapter: Path | None, seed: int, desc: str,
        temperature: float | None = None,
    ) -> Iterator[str]:
        """One conversation is not split: every process streams it with its own backend."""
        return self.inner.stream(conversation, adapter=adapter, seed=seed, desc=desc, temperature=temperature)

    def release(self) -> None:
        if isinstance(self.inner, SharesGpuMemory):
            self.inner.release()

    def reclaim(self) -> None:
        if isinstance(self.inner, SharesGpuMemory):
            self.inner.reclaim()
