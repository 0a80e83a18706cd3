"""Models for the app: each base model loaded once, iteration adapters loaded on demand and cached,
and answers streamed through the loop's own sampler (stasc.sampling.transformers).

All iterations of a run share the base model, so switching iteration only switches the active
LoRA adapter (iteration 0 bypasses it). One lock guards the model state and generation: there is
one model in memory, and visitors take turns (the Gradio queue shows them their place). An answer
is `TransformersSampler.stream` on the iteration's model: for a prompt, seed and settings it is the
answer the training loop's sampler draws, so what a visitor sees is what the run's metrics measured.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from stasc.app.catalog import AdapterRef, ModelTarget
from stasc.core.prompts import Message
from stasc.errors import StascError
from stasc.sampling.cpu_engine.decoding import DecodeSettings
from stasc.sampling.transformers import SamplingSettings, TransformersSampler

logger = logging.getLogger(__name__)


@dataclass
class _LoadedBase:
    model: Any  # a PreTrainedModel until the first adapter turns it into a PeftModel
    tokenizer: PreTrainedTokenizerBase
    adapters: OrderedDict[AdapterRef, str] = field(default_factory=OrderedDict)  # least recently used first
    next_id: int = 0


@dataclass
class _Iteration:
    """One iteration of a loaded base model, as the sampler sees a model slot (stasc.sampling.transformers.ModelSlot):
    the named adapter active, or adapters bypassed for iteration 0."""

    loaded: _LoadedBase
    adapter: str | None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.loaded.tokenizer

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def device(self) -> torch.device:
        return next(self.loaded.model.parameters()).device

    @contextlib.contextmanager
    def generating(self) -> Iterator[torch.nn.Module]:
        from peft import PeftModel

        model = self.loaded.model
        model.eval()
        if self.adapter is not None:
            model.set_adapter(self.adapter)
            yield model
        elif isinstance(model, PeftModel):
            with model.disable_adapter():
                yield model
        else:
            yield model


class Engine:
    """Base models keyed by (model, cache, remote code, dtype); up to max_adapters adapters each."""

    def __init__(self, *, max_adapters: int = 8, max_prompt_tokens: int = 2048) -> None:
        self.max_adapters = max_adapters
        self.max_prompt_tokens = max_prompt_tokens
        self._lock = threading.Lock()
        self._bases: dict[tuple[str, str | None, bool, str], _LoadedBase] = {}
        self.base_loads = 0
        self.adapter_loads = 0

    def preload(self, target: ModelTarget) -> None:
        """Load a target's base model and adapter now, so the first visitor does not wait for it."""
        with self._lock:
            self._adapter_name(self._base(target), target.adapter)

    def stream(
        self, target: ModelTarget, messages: Sequence[Message], sampling: DecodeSettings, seed: int = 0
    ) -> Iterator[str]:
        """Yield the reply as it grows; the last value is the whole reply, the loop's sample for this seed."""
        with self._lock:
            loaded = self._base(target)
            iteration = _Iteration(loaded, self._adapter_name(loaded, target.adapter))
            settings = SamplingSettings(sampling.max_new_tokens, sampling.temperature, sampling.top_p, batch_size=1)
            sampler = TransformersSampler(iteration, settings)
            (prompt,) = sampler.encode([messages])
            if len(prompt) > self.max_prompt_tokens:
                raise StascError(
                    f"The conversation is too long for this app ({len(prompt)} tokens, limit {self.max_prompt_tokens})."
                    " Press Clear to start a new one, or ask a shorter question."
                )
            try:
                yield from sampler.stream(messages, seed=seed, desc="app")
            except StascError:
                raise
            except Exception as error:  # the model's own failure: reported to the visitor, details in the log
                logger.exception("Generation failed")
                raise StascError(
                    f"The model failed while generating ({type(error).__name__}). "
                    "Try again with fewer new tokens; the server log has the details."
                ) from None

    def _base(self, target: ModelTarget) -> _LoadedBase:
        key = (target.base_model, target.cache_dir, target.trust_remote_code, target.dtype)
        loaded = self._bases.get(key)
        if loaded is None:
            from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path

            logger.info("Loading base model %s", target.base_model)
            path = resolve_model_path(target.base_model, target.cache_dir)
            tokenizer = load_tokenizer(path, trust_remote_code=target.trust_remote_code)
            model = load_model(path, dtype=pick_dtype(target.dtype), trust_remote_code=target.trust_remote_code)
            loaded = self._bases[key] = _LoadedBase(model, tokenizer)
            self.base_loads += 1
        return loaded

    def _adapter_name(self, loaded: _LoadedBase, ref: AdapterRef | None) -> str | None:
        """The adapter's name in the PeftModel, loading it (and evicting the least used) when new."""
        if ref is None:
            return None
        name = loaded.adapters.get(ref)
        if name is not None:
            loaded.adapters.move_to_end(ref)
            return name
        from peft import PeftModel

        name = f"iteration_adapter_{loaded.next_id}"
        kwargs = {key: value for key, value in (("subfolder", ref.subfolder), ("revision", ref.revision)) if value}
        where = ref.location + (f" ({ref.subfolder})" if ref.subfolder else "")
        logger.info("Loading adapter %s", where)
        try:
            if isinstance(loaded.model, PeftModel):
                loaded.model.load_adapter(ref.location, adapter_name=name, **kwargs)
            else:
                loaded.model = PeftModel.from_pretrained(loaded.model, ref.location, adapter_name=name, **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            logger.warning("Could not load adapter %s: %s", where, error)
            raise StascError(
                f"Could not load the adapter {where} ({type(error).__name__}). Check that the run is complete "
                "(or fully pushed) and that this machine can reach it, then try again."
            ) from None
        loaded.model.eval()
        loaded.next_id += 1
        loaded.adapters[ref] = name
        self.adapter_loads += 1
        loaded.model.set_adapter(name)  # so that evicting the previously active adapter is quiet
        while len(loaded.adapters) > self.max_adapters:
            _, evicted = loaded.adapters.popitem(last=False)
            loaded.model.delete_adapter(evicted)
        return name
