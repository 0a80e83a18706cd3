"""Models for the app: each base model loaded once, iteration adapters loaded on demand and cached,
and generation streamed token by token.

All iterations of a run share the base model, so switching iteration only switches the active
LoRA adapter (iteration 0 bypasses it). One lock guards the model state and generation: there is
one model in memory, and visitors take turns (the Gradio queue shows them their place).
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
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from stasc.app.catalog import AdapterRef, ModelTarget
from stasc.sampling.cpu_engine.decoding import DecodeSettings
from stasc.errors import StascError
from stasc.core.prompts import Message
from stasc.modeling.tokenization import render_prompt

logger = logging.getLogger(__name__)


@dataclass
class _LoadedBase:
    model: Any  # a PreTrainedModel until the first adapter turns it into a PeftModel
    tokenizer: PreTrainedTokenizerBase
    adapters: OrderedDict[AdapterRef, str] = field(default_factory=OrderedDict)  # least recently used first
    next_id: int = 0


class _StopEvent(StoppingCriteria):
    """Ends generate() early when the visitor leaves, so the model is free for the next one."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Engine:
    """Base models keyed by (model, cache, remote code, dtype); up to max_adapters adapters each."""

    def __init__(self, *, max_adapters: int = 8, max_prompt_tokens: int = 2048, stream_timeout: float = 600.0) -> None:
        self.max_adapters = max_adapters
        self.max_prompt_tokens = max_prompt_tokens
        self.stream_timeout = stream_timeout
        self._lock = threading.Lock()
        self._bases: dict[tuple[str, str | None, bool, str], _LoadedBase] = {}
        self.base_loads = 0
        self.adapter_loads = 0

    def preload(self, target: ModelTarget) -> None:
        """Load a target's base model and adapter now, so the first visitor does not wait for it."""
        with self._lock:
            self._adapter_name(self._base(target), target.adapter)

    def stream(self, target: ModelTarget, messages: Sequence[Message], sampling: DecodeSettings) -> Iterator[str]:
        """Yield the reply as it grows; the last value is the whole reply, stripped like the training loop's."""
        with self._lock:
            loaded = self._base(target)
            name = self._adapter_name(loaded, target.adapter)
            tokenizer = loaded.tokenizer
            prompt = render_prompt(tokenizer, messages)
            inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            length = inputs["input_ids"].shape[1]
            if length > self.max_prompt_tokens:
                raise StascError(
                    f"The conversation is too long for this app ({length} tokens, limit {self.max_prompt_tokens}). "
                    "Press Clear to start a new one, or ask a shorter question."
                )
            with self._active(loaded, name) as model:
                device = next(model.parameters()).device
                inputs = {key: value.to(device) for key, value in inputs.items()}
                streamer = TextIteratorStreamer(
                    tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=self.stream_timeout
                )
                stop = threading.Event()
                failures: list[BaseException] = []
                sampled = sampling.temperature > 0

                def generate() -> None:
                    try:
                        with torch.inference_mode():
                            model.generate(
                                **inputs,
                                streamer=streamer,
                                max_new_tokens=sampling.max_new_tokens,
                                do_sample=sampled,
                                temperature=sampling.temperature if sampled else None,
                                top_p=sampling.top_p if sampled else None,
                                top_k=None,
                                pad_token_id=tokenizer.pad_token_id,
                                stopping_criteria=StoppingCriteriaList([_StopEvent(stop)]),
                            )
                    except Exception as error:  # reported to the visitor below, with the log keeping the details
                        logger.exception("Generation failed")
                        failures.append(error)
                        streamer.end()

                worker = threading.Thread(target=generate, name="stasc-generate", daemon=True)
                worker.start()
                text = ""
                try:
                    for piece in streamer:
                        if piece:
                            text += piece
                            yield text
                finally:
                    stop.set()
                    worker.join()
        if failures:
            raise StascError(
                f"The model failed while generating ({type(failures[0]).__name__}). "
                "Try again with fewer new tokens; the server log has the details."
            )
        yield text.strip()

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

    @contextlib.contextmanager
    def _active(self, loaded: _LoadedBase, name: str | None) -> Iterator[Any]:
        """The model with the named adapter active, or with adapters bypassed for iteration 0."""
        from peft import PeftModel

        model = loaded.model
        if name is not None:
            model.set_adapter(name)
            yield model
        elif isinstance(model, PeftModel):
            with model.disable_adapter():
                yield model
        else:
            yield model
