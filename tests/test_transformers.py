"""The transformers sampling backend's stream: one answer as it grows, ending with the answer `sample` draws for
the same prompt, seed and settings; stopped when its reader leaves; its failures reach the reader."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from stasc.config import StascConfig
from stasc.distributed import Processes
from stasc.modeling.models import load_model, load_tokenizer
from stasc.modeling.policy import Policy
from stasc.sampling.sharded import ShardedSampler
from stasc.sampling.transformers import PolicySampler, SamplingSettings, TransformersSampler

CONVERSATION = [{"role": "user", "content": "Which city is test 1?"}]
SETTINGS = SamplingSettings(max_new_tokens=16, temperature=1.0, top_p=0.95, batch_size=8)


@pytest.fixture(scope="module")
def policy(tiny_model_dir: Path) -> Policy:
    from stasc.run.loop import lora_config

    model = load_model(str(tiny_model_dir), dtype=torch.float32)
    return Policy(model, load_tokenizer(str(tiny_model_dir)), lora_config(StascConfig()), seed=0)


def stream_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "stasc-stream"]


def test_a_streamed_answer_grows_and_ends_as_the_loops_sample_for_the_same_seed(policy: Policy) -> None:
    sampler = TransformersSampler(policy, SETTINGS)
    finals = set()
    for seed in range(6):
        steps = list(sampler.stream(CONVERSATION, seed=seed, desc="test"))
        (expected,), = sampler.sample([CONVERSATION], 1, seed=seed, desc="test")
        assert steps[-1] == expected
        assert all(later.startswith(earlier.strip()) for earlier, later in zip(steps, steps[1:]))
        finals.add(expected)
    assert len(finals) > 1, "the seeds should draw different answers at temperature 1"
    cooler = list(sampler.stream(CONVERSATION, seed=3, desc="test", temperature=0.0))[-1]
    assert cooler == sampler.sample([CONVERSATION], 1, seed=3, desc="test", temperature=0.0)[0][0]


def test_a_stream_whose_reader_leaves_stops_decoding(policy: Policy) -> None:
    long = TransformersSampler(policy, SamplingSettings(max_new_tokens=2000, temperature=1.0, top_p=1.0, batch_size=1))
    steps = 0
    real_generate = long._generate_batch

    def counting(*args, **kwargs):
        on_step = args[-1]

        def count(outputs):
            nonlocal steps
            steps += 1
            on_step(outputs)

        return real_generate(*args[:-1], count)

    long._generate_batch = counting  # type: ignore[method-assign]
    # A suppressed end-of-turn makes the model write until max_new_tokens unless the stream is stopped.
    long.suppress_ids = torch.tensor([policy.tokenizer.eos_token_id])
    stream = long.stream(CONVERSATION, seed=0, desc="test")
    next(stream)
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 10 and not stream_threads()
    assert steps < 2000


def test_a_failure_while_decoding_reaches_the_reader(policy: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory while decoding")

    monkeypatch.setattr("stasc.sampling.transformers.decode", broken)
    with pytest.raises(RuntimeError, match="out of memory while decoding"):
        list(TransformersSampler(policy, SETTINGS).stream(CONVERSATION, seed=0, desc="test"))
    assert not stream_threads()


def test_the_policy_and_sharded_samplers_stream_what_they_sample(policy: Policy) -> None:
    backend = PolicySampler(policy, SETTINGS)
    expected = backend.sample([CONVERSATION], 1, adapter=None, seed=5, desc="test")[0][0]
    assert list(backend.stream(CONVERSATION, adapter=None, seed=5, desc="test"))[-1] == expected
    sharded = ShardedSampler(backend, Processes(count=2, index=1))
    assert list(sharded.stream(CONVERSATION, adapter=None, seed=5, desc="test"))[-1] == expected
