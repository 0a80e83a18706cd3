"""The one interface every sampling backend offers the loop, and what a backend may add to it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from stasc.core.prompts import Message


class Sampler(Protocol):
    """Anything that draws answers from M0 (adapter None) or from M0 + a saved adapter, at the run's sampling
    temperature or at the one a call asks for (evaluation has its own)."""

    def sample(
        self, conversations: Sequence[Sequence[Message]], num_samples: int, *, adapter: Path | None, seed: int,
        desc: str, temperature: float | None = None,
    ) -> list[list[str]]: ...

    def stream(
        self, conversation: Sequence[Message], *, adapter: Path | None, seed: int, desc: str,
        temperature: float | None = None,
    ) -> Iterator[str]:
        """One answer as it grows (the text so far, each longer than the last), ending with
        `sample([conversation], 1, adapter=adapter, seed=seed, ...)[0][0]`: what a reader watches is what the
        loop measures."""
        ...


@runtime_checkable
class SharesGpuMemory(Protocol):
    """A sampler that holds GPU memory between calls and can hand it over to fine-tuning."""

    def release(self) -> None: ...

    def reclaim(self) -> None: ...


@contextlib.contextmanager
def gpu_handover(sampler: object) -> Iterator[None]:
    """Lend a sampler's GPU memory to fine-tuning for the duration of the block (a no-op for other samplers)."""
    if not isinstance(sampler, SharesGpuMemory):
        yield
        return
    sampler.release()
    try:
        yield
    finally:
        sampler.reclaim()
