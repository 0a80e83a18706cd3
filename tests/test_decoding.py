"""The fast decode loop against transformers' generate."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from stasc.sampling.cpu_engine import decoding
from stasc.sampling.cpu_engine.decoding import (
    MIN_SHARED_PREFIX,
    SHORTLIST,
    DecodeSettings,
    _nucleus_sample,
    decode,
    length_buckets,
    sample_next,
    shared_prompt_prefix,
    shortlist,
    stop_token_ids,
    token_probabilities,
)

from testing_utils import PROMPTS, tiny_llama


@pytest.fixture(scope="module")
def free_model(smollm_tokenizer_dir: Path):
    """A tiny random Llama that may say anything (no suppressed tokens), with SmolLM2's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.fixture(params=["llama steps", "model forward"])
def step_path(request, monkeypatch) -> Iterator[list[str]]:
    """Decode steps through stasc.sampling.cpu_engine.llama_steps, or (for models it does not cover) through the
    model's own forward; collects which one decode used."""
    used: list[str] = []
    real_llama, real_model = decoding.LlamaSteps, decoding.ModelSteps

    def spy(real, name):
        def build(*args, **kwargs):
            used.append(name)
            return real(*args, **kwargs)
        return build

    monkeypatch.setattr(decoding, "LlamaSteps", spy(real_llama, "llama steps"))
    monkeypatch.setattr(decoding, "ModelSteps", spy(real_model, "model forward"))
    if request.param == "model forward":
        monkeypatch.setattr(decoding, "supports_llama_steps", lambda model: False)
    yield used
    assert set(used) == {request.param}


def prompts_of(tokenizer, questions: list[str]) -> list[list[int]]:
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                      return_dict=False)
        for q in questions
    ]


QUESTIONS = ["What is the capital of France?", "Name a colour.", "Who wrote the play Hamlet, and when?", "2+2?"]


def reference_generate(model, tokenizer, prompts, num_samples, max_new_tokens):
    """Plain generate; greedy generate refuses num_return_sequences > 1, so prompts are repeated."""
    repeated = [prompt for prompt in prompts for _ in range(num_samples)]
    padded = tokenizer.pad({"input_ids": repeated}, padding=True, return_tensors="pt", padding_side="left")
    output = model.generate(**padded, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=2)
    rows = []
    for row in output[:, padded["input_ids"].shape[1]:].tolist():
        rows.append(row[: row.index(2)] if 2 in row else row)
    return rows


@pytest.mark.slow
def test_greedy_matches_generate_token_for_token(free_model, step_path) -> None:
    model, tokenizer = free_model
    prompts = prompts_of(tokenizer, QUESTIONS)
    assert shared_prompt_prefix(prompts) >= MIN_SHARED_PREFIX
    ours = decode(model, prompts, 2, DecodeSettings(24, 0.0, 1.0), pad_token_id=2, stop_ids=[2], seed=0)
    assert model.config._attn_implementation == "sdpa", "the model's own attention is back"
    assert ours == reference_generate(model, tokenizer, prompts, 2, 24)


def test_the_model_forward_prefills_the_shared_prefix_once_then_prompts_in_length_groups(
    free_model, monkeypatch
) -> None:
    model, tokenizer = free_model
    monkeypatch.setattr(decoding, "supports_llama_steps", lambda model: False)
    prompts = prompts_of(tokenizer, QUESTIONS)
    shared = shared_prompt_prefix(prompts)
    calls: list[tuple[int, ...]] = []
    cached: list[int] = []
    hooks = [
        model.register_forward_pre_hook(
            lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True),
        model.model.layers[0].self_attn.register_forward_pre_hook(
            lambda module, args, kwargs: cached.append(kwargs["past_key_values"].get_seq_length()), with_kwargs=True),
    ]
    try:
        decode(model, prompts, 2, DecodeSettings(8, 0.0, 1.0), pad_token_id=2, stop_ids=[2], seed=0)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls[0] == (1, shared), "the system prompt is prefilled once for all rows"
    prefills = [shape for shape in calls[1:] if shape[1] > 1]
    assert len(prefills) > 1, "prompts of different lengths are prefilled in groups"
    assert sum(rows for rows, _ in prefills) == len(prompts), "then every prompt's own tokens, once per prompt"
    assert cached[1] == 0, "the rows' cache does not hold copies of the shared prefix"


def test_llama_steps_prefill_the_shared_prefix_once_then_each_prompt_s_own_tokens(free_model, monkeypatch) -> None:
    model, tokenizer = free_model
    prompts = prompts_of(tokenizer, QUESTIONS)
    shared = shared_prompt_prefix(prompts)
    prefixes: list[list[int]] = []
    prefilled: list[list[list[int]]] = []
    real_prefix, real_prefill = decoding.prefill_shared_prefix, decoding.prefill

    def prefix_spy(weights, tokens):
        prefixes.append(list(tokens))
        return real_prefix(weights, tokens)

    def prefill_spy(weights, rows, start, prefix):
        prefilled.append([list(row) for row in rows])
        return real_prefill(weights, rows, start, prefix)

    monkeypatch.setattr(decoding, "prefill_shared_prefix", prefix_spy)
    monkeypatch.setattr(decoding, "prefill", prefill_spy)
    packings: list[int] = []
    real_packing = decoding.packed_linear_weights
    monkeypatch.setattr(decoding, "packed_linear_weights", lambda model: packings.append(1) or real_packing(model))
    forwards: list[int] = []
    hook = model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    try:
        decode(model, prompts, 2, DecodeSettings(8, 0.0, 1.0), pad_token_id=2, stop_ids=[2], seed=0)
    finally:
        hook.remove()
    assert prefixes == [prompts[0][:shared]], "the system prompt once for all rows"
    assert prefilled == [[prompt[shared:] for prompt in prompts]], "then each prompt's own tokens, once per prompt"
    assert not forwards, "the model's own forward never runs"
    assert not packings, "nor are its layers packed for it: only the fused weights are, once"


@pytest.mark.slow
def test_models_with_a_sliding_window_keep_their_own_attention(smollm_tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    torch.manual_seed(2)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
                         max_window_layers=1, eos_token_id=2, pad_token_id=2)
    model = Qwen2ForCausalLM(config).eval()
    prompts = prompts_of(tokenizer, [*QUESTIONS, "Why does the sky look blue at noon but red and orange at sunset, "
                                                 "and which kind of light scattering explains both colours?"])
    assert len(length_buckets([len(prompt) for prompt in prompts])) > 1, "prefilled in groups, then merged"
    seen: list[str] = []
    probe = model.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    try:
        ours = decode(model, prompts, 2, DecodeSettings(16, 0.0, 1.0), pad_token_id=2, stop_ids=[2], seed=0)
    finally:
        probe.remove()
    assert set(seen) == {"sdpa"}
    assert ours == reference_generate(model, tokenizer, prompts, 2, 16)


@pytest.mark.slow
def test_greedy_matches_generate_without_a_shared_prefix(free_model, step_path) -> None:
    model, tokenizer = free_model
    prompts = [tokenizer(question)["input_ids"] for question in QUESTIONS]
    assert shared_prompt_prefix(prompts) == 0
    ours = decode(model, prompts, 2, DecodeSettings(24, 0.0, 1.0), pad_token_id=2, stop_ids=[2], seed=0)
    assert ours == reference_generate(model, tokenizer, prompts, 2, 24)


def test_prompts_are_grouped_by_length_so_each_group_pads_little() -> None:
    assert length_buckets([10, 40, 31, 9, 29, 8]) == [[1, 2], [4], [0, 3, 5]]  # 29 < 0.75 x 40, 10 < 0.75 x 29
    assert length_buckets([10, 40, 31, 9, 30, 8]) == [[1, 2, 4], [0, 3, 5]]
    assert length_buckets([5, 5, 5]) == [[0, 1, 2]]


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own() -> None:
    system = list(range(100, 100 + MIN_SHARED_PREFIX + 4))
    assert shared_prompt_prefix([system + [1, 2], system + [1, 3], system + [4]]) == len(system)
    assert shared_prompt_prefix([system + [1, 2], system + [1, 3]]) == len(system) + 1
    assert shared_prompt_prefix([system, system]) == len(system) - 1
    assert shared_prompt_prefix([system]) == 0, "one prompt shares with nobody"
    assert shared_prompt_prefix([system[:MIN_SHARED_PREFIX - 1] + [1], system[:MIN_SHARED_PREFIX - 1] + [2]]) == 0


@pytest.mark.slow
def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(free_model, step_path) -> None:
    model, tokenizer = free_model
    prompts = prompts_of(tokenizer, QUESTIONS)
    settings = DecodeSettings(16, 0.0, 1.0)
    together = decode(model, prompts, 1, settings, pad_token_id=2, stop_ids=[2], seed=0)
    # pretend the most common first token ends a turn: those rows stop at once, the others go on unchanged
    first = together[0][0]
    stopped = decode(model, prompts, 1, settings, pad_token_id=2, stop_ids=[2, first], seed=0)
    for full, short in zip(together, stopped):
        expected = full[: full.index(first)] if first in full else full
        assert short == expected


def test_decoding_lets_the_prompts_cache_go_once_the_steps_have_grown_their_own(free_model, monkeypatch) -> None:
    """A decode batch's peak memory is one key/value cache: the prompts' cache, which every step replaces by a
    column longer copy, must not stay alive beside it."""
    model, tokenizer = free_model
    prefilled: list[weakref.ref] = []
    alive_during_steps: list[int] = []
    real_prefill, real_step = decoding.prefill, decoding.LlamaSteps.step

    def prefill(*args, **kwargs):
        rows = real_prefill(*args, **kwargs)
        prefilled.extend(weakref.ref(tensor) for tensor in rows.keys + rows.values)
        return rows

    def step(self, *args, **kwargs):
        gc.collect()
        alive_during_steps.append(sum(reference() is not None for reference in prefilled))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(decoding, "prefill", prefill)
    monkeypatch.setattr(decoding.LlamaSteps, "step", step)
    decode(model, prompts_of(tokenizer, QUESTIONS), 1, DecodeSettings(8, 0.0, 1.0), pad_token_id=2, stop_ids=[],
           seed=0)
    assert len(alive_during_steps) == 7 and prefilled
    assert alive_during_steps[0] == len(prefilled)  # the first step reads the prompts' cache
    assert alive_during_steps[1:] == [0] * 6


@pytest.mark.slow
def test_sampling_is_reproducible_and_varied(free_model, step_path) -> None:
    model, tokenizer = free_model
    prompts = prompts_of(tokenizer, QUESTIONS[:2])
    settings = DecodeSettings(12, 1.0, 0.9)
    first = decode(model, prompts, 4, settings, pad_token_id=2, stop_ids=[2], seed=7)
    assert first == decode(model, prompts, 4, settings, pad_token_id=2, stop_ids=[2], seed=7)
    assert len(first) == 8 and len({tuple(row) for row in first}) > 1


def test_samples_share_a_row_until_they_differ_and_each_draws_from_its_own_prefix(monkeypatch, step_path) -> None:
    model, prompts = tiny_llama(peaked=True), PROMPTS
    draws: list[tuple[torch.Tensor, list[list[int]]]] = []  # each step's row logits, and the sequences of each row
    real_sample, real_regrouped = decoding.sample_next, decoding.regrouped
    pending: list[torch.Tensor] = []
    monkeypatch.setattr(decoding, "sample_next",
                        lambda logits, *args: pending.append(logits.clone()) or real_sample(logits, *args))

    def regrouped(groups, tokens, stops):
        draws.append((pending[-1], [list(group) for group in groups]))
        return real_regrouped(groups, tokens, stops)

    monkeypatch.setattr(decoding, "regrouped", regrouped)
    sequences = decode(model, prompts, 4, DecodeSettings(10, 0.5, 0.9), pad_token_id=2, stop_ids=[2], seed=0)
    assert len(draws[0][1]) == len(prompts), "the samples of a prompt start in one row"
    assert any(len(groups) > len(draws[0][1]) for _, groups in draws), "rows split when their samples' tokens differ"
    assert any(len(group) > 1 for _, groups in draws[1:] for group in groups), "and samples that agree still share"
    checked = 0
    with torch.inference_mode():
        for index, tokens in enumerate(sequences):
            prompt = prompts[index // 4]
            own = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 :]
            for step, (logits, groups) in enumerate(draws):
                if step > len(tokens):
                    break
                row = next(row for row, group in enumerate(groups) if index in group)
                torch.testing.assert_close(logits[row], own[step], atol=1e-4, rtol=0)
                checked += 1
    assert checked > 4 * len(prompts) * 3


def test_a_row_per_sample_gives_what_shared_rows_give(monkeypatch, step_path) -> None:
    """The layout the benchmark compares against: each prompt's prefill copied to a row per sample."""
    model = tiny_llama(peaked=True)
    settings = DecodeSettings(10, 0.0, 1.0)
    shared = decode(model, PROMPTS, 3, settings, pad_token_id=2, stop_ids=[2], seed=0)
    monkeypatch.setattr(decoding, "sample_groups",
                        lambda prompts, samples: [[sequence] for sequence in range(prompts * samples)])
    apart = decode(model, PROMPTS, 3, settings, pad_token_id=2, stop_ids=[2], seed=0)
    assert apart == shared
    assert len({tuple(row) for row in shared}) == len(PROMPTS), "each prompt's greedy answer, once per sample"


def test_top_p_keeps_exactly_the_nucleus() -> None:
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps the first two (0.5 < 0.75, 0.8 >= 0.75)
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(2000, 1)
    generator = torch.Generator().manual_seed(0)
    tokens = sample_next(logits, DecodeSettings(1, 1.0, 0.75), generator)
    counts = torch.bincount(tokens, minlength=4).float() / 2000
    assert counts[2] == 0 and counts[3] == 0
    assert abs(counts[0] - 0.625) < 0.05  # 0.5 / 0.8


def test_wide_nucleus_falls_back_to_a_full_sort() -> None:
    logits = torch.zeros(3, 1000)  # uniform: the nucleus of 0.9 holds 900 tokens, more than the shortlist
    tokens = sample_next(logits, DecodeSettings(1, 1.0, 0.9), torch.Generator().manual_seed(0))
    assert tokens.shape == (3,)
    sorted_probs, sorted_ids = torch.full((1, 1000), 1 / 1000).sort(descending=True)
    picks = {int(_nucleus_sample(sorted_probs, sorted_ids, 0.9, torch.Generator().manual_seed(s))) for s in range(200)}
    assert max(picks) > SHORTLIST, "tokens beyond the shortlist can be drawn"


def test_a_row_drawn_several_times_samples_as_that_many_copies_of_it_do() -> None:
    logits = (torch.randn(4, 500, generator=torch.Generator().manual_seed(0)) * 4).to(torch.bfloat16)
    logits[1] = 0.0  # a flat row: its nucleus is wider than the shortlist
    repeats = torch.tensor([2, 3, 1, 2])
    for settings in (DecodeSettings(1, 0.0, 1.0), DecodeSettings(1, 0.6, 0.9), DecodeSettings(1, 1.3, 1.0)):
        drawn = sample_next(logits, settings, torch.Generator().manual_seed(5), repeats=repeats)
        copies = sample_next(logits.repeat_interleave(repeats, dim=0), settings, torch.Generator().manual_seed(5))
        assert torch.equal(drawn, copies), settings
    flat = sample_next(logits[1:2], DecodeSettings(1, 1.0, 0.9), torch.Generator().manual_seed(1),
                       repeats=torch.tensor([200]))
    assert len(set(flat.tolist())) > 100, "a row's draws are independent, not one draw repeated"


def test_the_shortlist_holds_the_most_probable_tokens_as_topk_does() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 49152, generator=generator) * 3).to(torch.bfloat16)  # bfloat16: many equal values
    logits[0, :40] = 30.0  # 40 equal best tokens, all in the first two blocks
    logits[1, ::1024] = 25.0  # best tokens spread over many blocks
    probs = (logits.float() / 0.6).softmax(-1)
    top_probs, top_ids = shortlist(probs, SHORTLIST)
    expected, _ = probs.topk(SHORTLIST)
    assert torch.equal(top_probs, expected), "the same probabilities, largest first"
    assert torch.equal(probs.gather(1, top_ids), top_probs), "each id is the token of its probability"
    assert len(set(top_ids[0].tolist())) == SHORTLIST and set(top_ids[0].tolist()) < set(range(40))
    small = probs[:, :96]  # too few blocks: plain topk
    assert all(torch.equal(a, b) for a, b in zip(shortlist(small, SHORTLIST), small.topk(SHORTLIST), strict=True))


def test_reused_float32_buffers_sample_exactly_what_fresh_tensors_do() -> None:
    logits = (torch.randn(6, 500, generator=torch.Generator().manual_seed(0)) * 4).to(torch.bfloat16)
    logits[0] = 0.0  # a flat row: its nucleus is wider than the shortlist
    scratch = torch.full((2, 8, 500), float("nan"))
    for settings in (DecodeSettings(1, 0.6, 0.9), DecodeSettings(1, 1.3, 1.0)):
        fresh = sample_next(logits, settings, torch.Generator().manual_seed(3))
        reused = sample_next(logits, settings, torch.Generator().manual_seed(3), scratch)
        assert torch.equal(fresh, reused)
    probabilities = token_probabilities(logits, 0.6, scratch)
    assert probabilities.data_ptr() == scratch[1].data_ptr(), "computed in the buffer, not in a fresh tensor"
    assert torch.equal(probabilities, (logits.float() / 0.6).softmax(-1))


def test_stop_ids_come_from_model_and_tokenizer(free_model) -> None:
    model, tokenizer = free_model
    assert 2 in stop_token_ids(model, tokenizer)


@pytest.mark.slow
def test_bundled_model_greedy_matches_generate(smollm_tokenizer_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(smollm_tokenizer_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    prompts = prompts_of(tokenizer, QUESTIONS)
    ours = decode(model, prompts, 1, DecodeSettings(32, 0.0, 1.0), pad_token_id=2, stop_ids=[2], seed=0)
    assert ours == reference_generate(model, tokenizer, prompts, 1, 32)


def test_prompt_logits_reach_a_frozen_output_layer_as_one_matrix(free_model, monkeypatch) -> None:
    """Under PEFT the tied output layer is frozen; a strided input there made torch copy its
    weights once per prompt (7 GB for 128 prompts of the bundled model)."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = free_model
    monkeypatch.setattr(decoding, "supports_llama_steps", lambda model: False)  # prompts through the forward
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
    seen: list[bool] = []
    output_layer = peft_model.get_output_embeddings()
    probe = output_layer.register_forward_hook(lambda _module, args, _output: seen.append(args[0].is_contiguous()))
    try:
        with peft_model.disable_adapter():
            plain = decode(model, prompts_of(tokenizer, QUESTIONS), 1, DecodeSettings(4, 0.0, 1.0),
                           pad_token_id=2, stop_ids=[2], seed=0)
            through_peft = decode(peft_model, prompts_of(tokenizer, QUESTIONS), 1, DecodeSettings(4, 0.0, 1.0),
                                  pad_token_id=2, stop_ids=[2], seed=0)
    finally:
        probe.remove()
        peft_model.unload()
    assert seen and all(seen)
    assert through_peft == plain
    assert not output_layer._forward_pre_hooks  # the fix is undone after decoding
