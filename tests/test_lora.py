"""LoRA fine-tuning: what is trained, and that the fast loss equals the model's own."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

import stasc.training.lora
from stasc.config import StascConfig
from stasc.errors import StascError
from stasc.run.loop import lora_config
from stasc.modeling.models import load_model, load_tokenizer
from stasc.modeling.policy import Policy
from stasc.core.prompts import training_messages
from stasc.modeling.tokenization import tokenize_conversation
from stasc.training.lora import (
    EAGER_ATTENTION_MAX_TOKENS,
    MIN_SHARED_PREFIX,
    CorrectionTrainer,
    check_sequence_room,
    make_collator,
    optimizer_steps,
    shared_prefix_length,
    train_adapter,
    training_attention,
    training_mode,
    warmup_steps,
)

CONVERSATIONS = [
    training_messages(f"Which city is number {i}?", "Rome" * (i % 3 + 1), " London" * (i % 4 + 1), "Answer.", "Correct it.")
    for i in range(6)
]


@pytest.fixture()
def policy(tiny_model_dir: Path) -> Policy:
    """The tiny model with a float32 LoRA adapter, without dropout so forward passes compare exactly."""
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir), dtype=torch.float32)
    return Policy(model, tokenizer, lora_config(StascConfig(lora_dropout=0.0)), seed=0)


@pytest.mark.parametrize(("eager_up_to", "attention"), [(0, "sdpa"), (10_000, "eager")])
def test_loss_on_supervised_positions_equals_the_models_own_loss(
    policy: Policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eager_up_to: int, attention: str
) -> None:
    """The trainer's loss (shared prefix, logits only where needed, per-batch attention) against the
    model's own forward with its own SDPA attention."""
    monkeypatch.setattr(stasc.training.lora, "EAGER_ATTENTION_MAX_TOKENS", eager_up_to)
    rows = [tokenize_conversation(policy.tokenizer, conversation) for conversation in CONVERSATIONS]
    with torch.no_grad():  # LoRA B is zero at start; move it so adapters take part in the comparison
        for name, parameter in policy.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    trainer = CorrectionTrainer(model=policy.model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]))
    config = policy.model.get_base_model().config
    losses, gradients = [], []
    with training_mode(policy):
        batch = make_collator(policy)(rows)
        first_label = int((batch["labels"] != -100).int().argmax(dim=1).min()) - 1
        assert shared_prefix_length(batch["input_ids"], batch["attention_mask"], first_label) >= MIN_SHARED_PREFIX, (
            "the batch shares its prompt prefix, so the shared-prefix path is the one compared"
        )
        calls: list[tuple[int, ...]] = []
        for compute in (lambda: policy.model(**batch).loss, lambda: trainer.compute_loss(policy.model, batch)):
            policy.model.zero_grad()
            calls.clear()
            hook = policy.model.get_base_model().register_forward_pre_hook(
                lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
            )
            try:
                loss = compute()
            finally:
                hook.remove()
            loss.backward()
            losses.append(loss.item())
            gradients.append(torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None]))
        assert calls[0][0] == 1 and calls[0][1] >= MIN_SHARED_PREFIX, "the trainer ran the shared prefix once"
        assert calls[1] == (len(rows), batch["input_ids"].shape[1] - calls[0][1]), "then the rest of every row"
        assert config._attn_implementation == attention, "the trainer picked the attention for this batch"
    assert config._attn_implementation == "sdpa", "sampling attention is back"
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-4, atol=1e-7)


def test_shared_prefix_stops_at_the_first_difference_padding_or_needed_logit() -> None:
    prefix = list(range(100, 100 + 2 * MIN_SHARED_PREFIX))
    rows = torch.tensor([prefix + [1, 2, 3], prefix + [1, 5, 0], prefix + [7, 8, 9]])
    mask = torch.ones_like(rows)
    assert shared_prefix_length(rows, mask, first_needed=99) == len(prefix)
    assert shared_prefix_length(rows[:2], mask[:2], first_needed=99) == len(prefix) + 1
    assert shared_prefix_length(rows, mask, first_needed=MIN_SHARED_PREFIX + 3) == MIN_SHARED_PREFIX + 3
    assert shared_prefix_length(rows, mask, first_needed=MIN_SHARED_PREFIX - 1) == 0, "too short to pay"
    assert shared_prefix_length(rows[:1], mask[:1], first_needed=99) == 0, "one row shares with nobody"
    short = mask.clone()
    short[1, 20:] = 0  # a right-padded row ends inside the common tokens
    assert shared_prefix_length(rows, short, first_needed=99) == 20
    same = torch.tensor([prefix, prefix])
    assert shared_prefix_length(same, torch.ones_like(same), first_needed=99) == len(prefix) - 1, "a row keeps a token"


def test_training_moves_only_the_adapter(policy: Policy) -> None:
    base = {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_" in n}
    config = StascConfig(train_batch_size=2, learning_rate=1e-2)
    report = train_adapter(policy, CONVERSATIONS, config, seed=0)
    assert report.examples == 6 and report.steps == 3 and report.train_loss > 0
    assert report.supervised_tokens == sum(
        sum(label != -100 for label in tokenize_conversation(policy.tokenizer, c)["labels"]) for c in CONVERSATIONS
    )
    after = dict(policy.model.named_parameters())
    assert all(torch.equal(after[n], value) for n, value in base.items()), "base weights are frozen"
    assert any(not torch.equal(after[n], value) for n, value in lora.items()), "the adapter learned"
    assert policy.tokenizer.padding_side == "left", "generation padding is restored"
    assert policy.model.get_base_model().config._attn_implementation == "sdpa", "sampling attention is back"


def test_short_batches_train_with_eager_attention_on_a_cpu_only() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert training_attention(cpu, "sdpa", EAGER_ATTENTION_MAX_TOKENS) == "eager"
    assert training_attention(cpu, "sdpa", EAGER_ATTENTION_MAX_TOKENS + 1) == "sdpa", "long: SDPA is faster"
    assert training_attention(gpu, "sdpa", 200) == "sdpa"
    assert training_attention(cpu, "flash_attention_2", 200) == "flash_attention_2", "a chosen kernel is kept"


def test_bfloat16_base_weights_train_float32_adapters_in_bfloat16(tiny_model_dir: Path) -> None:
    """The adapters compute in bfloat16 under autocast (no float32 round trip of every layer's
    input), while their weights, gradients and optimizer stay float32 and still learn."""
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    policy = Policy(model, tokenizer, lora_config(StascConfig()), seed=0)
    lora = {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_B" in n}
    seen: set[torch.dtype] = set()
    layer = next(m for n, m in policy.model.named_modules() if n.endswith("q_proj.lora_A.default"))
    hook = layer.register_forward_hook(lambda module, args, output: seen.update({args[0].dtype, output.dtype}))
    report = train_adapter(policy, CONVERSATIONS, StascConfig(train_batch_size=2, learning_rate=1e-2), seed=0)
    hook.remove()
    assert seen == {torch.bfloat16}, "the adapter's input and output stay in bfloat16"
    assert math.isfinite(report.train_loss)
    after = dict(policy.model.named_parameters())
    assert all(after[n].dtype == torch.float32 for n in lora), "float32 master weights"
    assert any(not torch.equal(after[n], value) for n, value in lora.items()), "the adapter learned"


def test_an_iteration_of_one_optimizer_step_still_learns(policy: Policy) -> None:
    """The improving filter often keeps fewer examples than one batch: that single step must not be a
    warm-up step at learning rate 0 (it was, and such iterations saved an untrained adapter)."""
    lora = {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_B" in n}
    report = train_adapter(policy, CONVERSATIONS[:4], StascConfig(train_batch_size=8, warmup_ratio=0.03), seed=0)
    assert report.steps == 1
    after = dict(policy.model.named_parameters())
    assert any(not torch.equal(after[n], value) for n, value in lora.items()), "the one step moved the adapter"


def test_optimizer_steps_count_each_process_share() -> None:
    assert optimizer_steps(20, 4, 1, 1, 1.0) == 5
    assert optimizer_steps(20, 1, 2, 2, 1.0) == 5  # 10 examples per process, 2 batches per step
    assert optimizer_steps(21, 1, 2, 2, 1.0) == 6  # the last, short step of an epoch counts
    assert optimizer_steps(8, 2, 1, 1, 2.0) == 8


def test_warmup_is_rounded_down() -> None:
    assert [warmup_steps(0.03, steps) for steps in (1, 9, 33, 34, 100)] == [0, 0, 0, 1, 3]


def test_overlong_conversations_are_skipped(policy: Policy) -> None:
    config = StascConfig(train_batch_size=2, max_seq_length=16)
    with pytest.raises(StascError, match="No training conversation fits --max-seq-length 16: all 6 kept ones"):
        train_adapter(policy, CONVERSATIONS, config, seed=0)


def test_a_small_kept_set_is_passed_over_until_the_minimum_steps_are_done(policy: Policy) -> None:
    plain = train_adapter(policy, CONVERSATIONS[:4], StascConfig(train_batch_size=4, gradient_accumulation_steps=1), seed=0)
    assert plain.steps == 1
    policy.reset_adapter()
    config = StascConfig(train_batch_size=4, gradient_accumulation_steps=1, min_train_steps=5)
    repeated = train_adapter(policy, CONVERSATIONS[:4], config, seed=0)
    assert repeated.steps == 5 and repeated.examples == 4
    policy.reset_adapter()
    enough = train_adapter(policy, CONVERSATIONS, StascConfig(train_batch_size=2, gradient_accumulation_steps=1,
                                                            min_train_steps=2), seed=0)
    assert enough.steps == 3, "a set that already takes more steps than the minimum is passed over once"


def test_a_max_seq_length_no_conversation_fits_is_refused_before_the_run(policy: Policy) -> None:
    questions = ["Which city is number 1?", "Which city is the capital of a large country in Europe?"]
    config = StascConfig(max_new_tokens=8, max_seq_length=16)
    with pytest.raises(StascError) as refused:
        check_sequence_room(policy.tokenizer, questions, config)
    needed = int(str(refused.value).split("Use --max-seq-length ")[1].split()[0])
    empty = training_messages(questions[0], "", "", config.instructions, config.correction_instructions)
    frame = len(tokenize_conversation(policy.tokenizer, empty[:-1] + [{"role": "assistant", "content": "x"}])["input_ids"])
    assert needed == pytest.approx(frame + 2 * 8, abs=2), "the shortest question with two answers of 8 tokens"
    check_sequence_room(policy.tokenizer, questions, StascConfig(max_new_tokens=8, max_seq_length=needed))
    with pytest.raises(StascError, match=f"--max-seq-length {needed - 1} is too short"):
        check_sequence_room(policy.tokenizer, questions, StascConfig(max_new_tokens=8, max_seq_length=needed - 1))
