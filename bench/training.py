"""LoRA fine-tuning throughput of stasc's training step against a plain float32 Trainer run.

    python bench/training.py --quick        # 64 examples
    python bench/training.py                # 256 examples

Both fine-tune the same LoRA (r 8, all linear layers) of the bundled model on the same
conversations (built-in questions with a wrong first answer and a corrected second one,
loss only on the correction), one epoch, batch 8, same seed. The baseline is what one
would write with Trainer: float32 weights, padded batches. stasc's step is
stasc.training.lora.train_adapter as the loop calls it. Reports processed tokens per second
(all tokens of each conversation); the loss both trained adapters reach, each measured the
same way (float32, all conversations) next to its spread over two seeds; and stasc's time
with each of its ideas undone.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stasc.training.lora  # noqa: E402
from bench.common import append_result  # noqa: E402
from stasc.config import DEFAULT_CORRECTION_INSTRUCTIONS, DEFAULT_INSTRUCTIONS, StascConfig, SuggestingParser  # noqa: E402
from stasc.data import load_qa_splits  # noqa: E402
from stasc.run.loop import lora_config  # noqa: E402
from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path  # noqa: E402
from stasc.modeling.policy import Policy  # noqa: E402
from stasc.core.prompts import training_messages  # noqa: E402
from stasc.modeling.tokenization import tokenize_conversation  # noqa: E402
from stasc.training.lora import optimizer_steps, train_adapter, warmup_steps  # noqa: E402


def conversations(count: int) -> list[list[dict[str, str]]]:
    train, test = load_qa_splits("builtin", max_train=count)
    pool = train + test
    result = []
    for index, example in enumerate(train[:count]):
        wrong = pool[(index + 7) % len(pool)].answers[0]
        result.append(training_messages(
            example.question,
            f"I think the answer is {wrong}, because it is the first thing that comes to mind.\nFinal Answer: {wrong}",
            f"My first answer was wrong. The correct answer is {example.answers[0]}.\nFinal Answer: {example.answers[0]}",
            DEFAULT_INSTRUCTIONS, DEFAULT_CORRECTION_INSTRUCTIONS,
        ))
    return result


def plain_trainer(
    path: str, rows: list[list[dict[str, str]]], config: StascConfig, *, seed: int | None = None,
    start: dict[str, torch.Tensor] | None = None,
) -> tuple[float, float, int, dict[str, torch.Tensor]]:
    """A textbook float32 Trainer + LoRA run: seconds, final loss, optimizer steps, trained LoRA weights.

    Same hyperparameters as stasc's step (the warm-up rounded down the same way), so that only the
    implementation differs.

    start: LoRA weights to begin from (the loop's evolving fine-tuning); a fresh adapter otherwise.
    """
    from datasets import Dataset
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    seed = config.seed if seed is None else seed
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "right"
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), lora_config(config))
    if start is not None:
        set_peft_model_state_dict(model, {name: value.float() for name, value in start.items()})
    dataset = Dataset.from_list([tokenize_conversation(tokenizer, row) for row in rows])
    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=config.train_batch_size, num_train_epochs=config.epochs,
            learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler,
            warmup_steps=warmup_steps(
                config.warmup_ratio, optimizer_steps(len(rows), config.train_batch_size, 1, 1, config.epochs)),
            weight_decay=config.weight_decay,
            save_strategy="no", report_to=[], seed=seed, logging_steps=1000, disable_tqdm=True,
            dataloader_pin_memory=False,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=dataset,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
        began = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - began
    return seconds, float(output.training_loss), output.global_step, get_peft_model_state_dict(model)


def stasc_step(
    path: str, rows: list[list[dict[str, str]]], config: StascConfig
) -> tuple[float, float, dict[str, torch.Tensor]]:
    """stasc's training step as the loop runs it: seconds, training loss, trained LoRA weights."""
    from peft import get_peft_model_state_dict

    tokenizer = load_tokenizer(path)
    policy = Policy(load_model(path, dtype=pick_dtype(config.dtype)), tokenizer, lora_config(config), seed=config.seed)
    start = time.perf_counter()
    report = train_adapter(policy, rows, config, seed=config.seed)
    return time.perf_counter() - start, report.train_loss, get_peft_model_state_dict(policy.model)


def float32_losses(
    path: str, rows: list[list[dict[str, str]]], config: StascConfig, adapters: list[dict[str, torch.Tensor]]
) -> list[float]:
    """Loss per supervised token of the base model plus each trained adapter, in float32, over all the
    conversations: one yardstick for adapters trained in different precisions."""
    from peft import get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "right"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), lora_config(config))
    model.eval()
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    batches = [collate([tokenize_conversation(tokenizer, row) for row in rows[start : start + 8]])
               for start in range(0, len(rows), 8)]
    losses = []
    for adapter in adapters:
        set_peft_model_state_dict(model, {name: value.float() for name, value in adapter.items()})
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in batches:
                supervised = int((batch["labels"][:, 1:] != -100).sum())
                total += model(**batch).loss.item() * supervised
                count += supervised
        losses.append(total / count)
    return losses


def main() -> None:
    parser = SuggestingParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    count = 64 if args.quick else args.examples
    path = resolve_model_path("bundled")
    rows = conversations(count)
    tokenizer = load_tokenizer(path)
    tokens = sum(len(tokenize_conversation(tokenizer, row)["input_ids"]) for row in rows)
    config = StascConfig(log_level="warning")
    stasc_step(path, rows[:8], config)  # warm up kernels
    base_seconds, base_loss, _, base_adapter = plain_trainer(path, rows, config)
    our_seconds, our_loss, our_adapter = stasc_step(path, rows, config)
    undone = {}
    with mock.patch.object(stasc.training.lora, "shared_prefix_length", lambda *args: 0):
        undone["without the shared prompt prefix"] = stasc_step(path, rows, config)[0]
    model_own = lambda device, model_attention, batch_tokens: model_attention  # noqa: E731
    with mock.patch.object(stasc.training.lora, "training_attention", model_own):
        undone["with SDPA attention instead of eager"] = stasc_step(path, rows, config)[0]
    with mock.patch.object(stasc.training.lora, "trains_in_bfloat16", lambda policy: False):
        undone["with float32 adapter compute (PEFT's casts)"] = stasc_step(path, rows, config)[0]
    undone["with LoRA dropout 0.05 (the former default)"] = stasc_step(
        path, rows, dataclasses.replace(config, lora_dropout=0.05))[0]
    undone["with all 8 conversations of a step in one pass (--gradient-accumulation-steps 1)"] = stasc_step(
        path, rows, dataclasses.replace(config, gradient_accumulation_steps=1))[0]
    other_seed = dataclasses.replace(config, seed=config.seed + 1)
    *_, base_adapter_2 = plain_trainer(path, rows, other_seed)
    *_, our_adapter_2 = stasc_step(path, rows, other_seed)
    final = float32_losses(path, rows, config, [base_adapter, base_adapter_2, our_adapter, our_adapter_2])
    base_final, our_final = final[:2], final[2:]
    base_rate, our_rate = tokens / base_seconds, tokens / our_seconds
    lines = [
        f"- setting: {len(rows)} conversations ({tokens} tokens, {math.ceil(len(rows) / 8)} steps of 8), LoRA r 8 "
        f"all-linear, 1 epoch, lr {config.learning_rate}",
        f"- plain float32 Trainer: {base_rate:.0f} tok/s, training loss {base_loss:.3f}; stasc: {our_rate:.0f} tok/s "
        f"({pick_dtype(config.dtype)} base weights), training loss {our_loss:.3f}; "
        f"**speedup {our_rate / base_rate:.2f}x**",
        f"- loss after training, both adapters measured in float32 on all conversations, seeds {config.seed} and "
        f"{config.seed + 1}: plain Trainer {base_final[0]:.3f} / {base_final[1]:.3f}, "
        f"stasc {our_final[0]:.3f} / {our_final[1]:.3f}",
        "- ideas, stasc's time with one of them undone: "
        + "; ".join(f"{idea} {seconds:.0f} s" for idea, seconds in undone.items())
        + f"; against {our_seconds:.0f} s with all",
    ]
    if not args.no_write:
        append_result("Training" + (" (quick)" if args.quick else ""), lines)
    print("\n".join(lines))
    print(f"speedup_vs_trainer={our_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
