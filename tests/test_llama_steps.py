"""Decode steps written out for Llama models against the model's own forward."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM

import stasc.sampling.cpu_engine.llama_steps
from stasc.sampling.cpu_engine import decoding, shared_rows
from stasc.sampling.cpu_engine.decoding import DecodeSettings, decode
from stasc.sampling.cpu_engine.llama_steps import supports_llama_steps

from testing_utils import PROMPTS, tiny_llama

def with_lora(model: torch.nn.Module, **lora) -> torch.nn.Module:
    adapted = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear", **lora))
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)  # an adapter that changes the output
    return adapted.eval()


GREEDY = DecodeSettings(12, 0.0, 1.0)


def step_logits(
    model, monkeypatch, llama_steps: bool, stop_ids: list[int], moves: list[int] | None = None,
    settings: DecodeSettings = GREEDY,
) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Tokens (greedy unless `settings` say otherwise), and the logits of every step (rows in the order decode holds
    them); `moves` collects how many rows moved into the places of finished ones at each drop."""
    seen: list[torch.Tensor] = []
    built: list[int] = []
    real, real_steps = decoding.sample_next, decoding.LlamaSteps
    real_moves = shared_rows.compaction_moves

    def recording(logits, *args, **kwargs):
        seen.append(logits.float().clone())
        return real(logits, *args, **kwargs)

    def counted_moves(finished):
        holes, movers = real_moves(finished)
        (moves if moves is not None else []).append(len(holes))
        return holes, movers

    with monkeypatch.context() as patch:
        patch.setattr(decoding, "sample_next", recording)
        patch.setattr(shared_rows, "compaction_moves", counted_moves)
        patch.setattr(decoding, "LlamaSteps", lambda *args: built.append(1) or real_steps(*args))
        if not llama_steps:
            patch.setattr(decoding, "supports_llama_steps", lambda model: False)
        tokens = decode(model, PROMPTS, 2, settings, pad_token_id=2, stop_ids=stop_ids, seed=0)
    assert bool(built) == llama_steps, "decode took the path the comparison asks for"
    return tokens, seen


def assert_same_steps(model, monkeypatch, atol: float) -> None:
    own_tokens, own = step_logits(model, monkeypatch, False, [2])
    # stop on a token some rows produce early, so rows leave the batch and others move into their places
    early = next(row[1] for row in own_tokens if len(row) > 3)
    own_tokens, own = step_logits(model, monkeypatch, False, [2, early])
    moves: list[int] = []
    tokens, ours = step_logits(model, monkeypatch, True, [2, early], moves)
    assert tokens == own_tokens
    assert [logits.shape for logits in ours] == [logits.shape for logits in own]
    assert len({logits.shape[0] for logits in ours}) > 1, "rows left the batch on the way"
    assert any(moves), "and unfinished rows moved into the places of finished ones"
    for step, (a, b) in enumerate(zip(ours, own, strict=True)):
        torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=lambda message, step=step: f"step {step}: {message}")


def test_steps_give_the_logits_of_the_models_own_forward(monkeypatch) -> None:
    assert_same_steps(tiny_llama(), monkeypatch, atol=1e-5)


def test_rows_that_split_between_samples_give_the_logits_of_the_models_own_forward(monkeypatch) -> None:
    model = tiny_llama(peaked=True)
    sampled = DecodeSettings(12, 0.5, 0.9)
    own_tokens, own = step_logits(model, monkeypatch, False, [2], settings=sampled)
    tokens, ours = step_logits(model, monkeypatch, True, [2], settings=sampled)
    assert tokens == own_tokens
    rows = [logits.shape[0] for logits in ours]
    assert rows[0] == len(PROMPTS) and max(rows) > len(PROMPTS), "rows split when their samples drew different tokens"
    for step, (a, b) in enumerate(zip(ours, own, strict=True)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda message, step=step: f"step {step}: {message}")


def test_prompts_prefilled_in_several_groups_give_the_same_logits(monkeypatch) -> None:
    steps = stasc.sampling.cpu_engine.llama_steps
    monkeypatch.setattr(steps, "PREFILL_TOKENS", 12)  # the prompts' own tokens are 1-10 wide here
    groups: list[int] = []
    real = steps._prefill_group
    monkeypatch.setattr(steps, "_prefill_group", lambda *args: groups.append(1) or real(*args))
    assert_same_steps(tiny_llama(), monkeypatch, atol=1e-5)
    assert len(groups) == 1 + len(PROMPTS), "the shared prefix, then each prompt in a group of its own"


def test_a_lora_adapter_gives_the_logits_of_peft_s_forward(monkeypatch) -> None:
    model = with_lora(tiny_llama())
    assert supports_llama_steps(model)
    with torch.inference_mode():
        plain = model(input_ids=torch.tensor([PROMPTS[0]])).logits
        with model.disable_adapter():
            base = model(input_ids=torch.tensor([PROMPTS[0]])).logits
    assert (plain - base).abs().max() > 0.5, "the adapter changes the output"
    assert_same_steps(model, monkeypatch, atol=1e-4)


def test_with_the_adapter_disabled_the_steps_use_the_base_weights(monkeypatch) -> None:
    """The loop samples from M0 by disabling the adapter of its PEFT model."""
    model = with_lora(tiny_llama())
    base_tokens, base = step_logits(tiny_llama(), monkeypatch, False, [2])
    with model.disable_adapter():
        assert supports_llama_steps(model)
        tokens, ours = step_logits(model, monkeypatch, True, [2])
    assert tokens == base_tokens
    for a, b in zip(ours, base, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_bfloat16_steps_with_packed_weights_stay_close_to_the_models_forward(monkeypatch) -> None:
    model = tiny_llama(torch.bfloat16)
    _, own = step_logits(model, monkeypatch, False, [2])
    _, ours = step_logits(model, monkeypatch, True, [2])
    first, own_first = ours[1], own[1]  # the first step after the prompt: the same rows on both paths
    scale = own_first.abs().max()
    assert (first - own_first).abs().max() < 0.05 * scale


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (tiny_llama(), True),
        (with_lora(tiny_llama()), True),
        (with_lora(tiny_llama()).train(), False),  # PEFT's forward (dropout) while training
        (with_lora(tiny_llama(), use_dora=True), False),
        (tiny_llama(attention_bias=True), False),
        (tiny_llama(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}), False),
        (Qwen2ForCausalLM(Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)).eval(), False),
    ],
    ids=["llama", "llama+lora", "lora training", "dora", "attention bias", "dynamic rope", "qwen2"],
)
def test_which_models_take_these_steps(model: torch.nn.Module, expected: bool) -> None:
    assert supports_llama_steps(model) is expected


def test_a_replaced_forward_keeps_the_models_own_steps() -> None:
    model = tiny_llama()
    projection = model.model.layers[1].mlp.down_proj
    projection.forward = lambda inputs: torch.nn.functional.linear(inputs, projection.weight)  # like accelerate's hooks
    assert not supports_llama_steps(model)
