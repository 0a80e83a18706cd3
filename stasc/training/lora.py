"""LoRA fine-tuning of one iteration's kept corrections with transformers' Trainer.

Only the final correction turn carries labels (see stasc.modeling.tokenization); base weights are
frozen by PEFT, so each iteration's result is a few MB of adapter.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from peft.helpers import disable_input_dtype_casting
from tqdm.auto import tqdm
from transformers import (
    DataCollatorForSeq2Seq,
    DynamicCache,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from stasc.config import StascConfig
from stasc.sampling.cpu_engine.decoding import MIN_SHARED_PREFIX
from stasc.distributed import current_processes
from stasc.errors import StascError
from stasc.log import progress
from stasc.modeling.policy import Policy
from stasc.core.prompts import Message, training_messages
from stasc.modeling.tokenization import IGNORE_INDEX, tokenize_conversation

logger = logging.getLogger(__name__)

EAGER_ATTENTION_MAX_TOKENS = 256
"""Up to this many tokens per (padded) batch, eager attention (plain matrix products) runs forward and
backward faster than SDPA's fused kernel on a CPU; beyond it, slower (bench/attention.py)."""


@dataclass(frozen=True)
class TrainingReport:
    """What one fine-tuning step did, for the manifest."""

    examples: int
    skipped_too_long: int
    steps: int
    train_loss: float
    supervised_tokens: int
    seconds: float
    loss_curve: list[list[float]]
    """[optimizer step, mean loss since the previous entry], as Trainer logs it: about ten times per
    fine-tuning (every max(1, steps // 10) steps), so runs can be compared step by step. Lists, not tuples,
    so that the report equals what training.json and run.json read back."""


def build_training_dataset(
    policy: Policy, conversations: Sequence[Sequence[Message]], max_seq_length: int
) -> tuple[list[dict[str, list[int]]], int]:
    """Tokenize and mask the conversations; drop those longer than max_seq_length. A plain list of rows is
    a dataset to Trainer, so training needs no `datasets` package (a stock CUDA image has none)."""
    rows = [tokenize_conversation(policy.tokenizer, conversation) for conversation in conversations]
    kept = [row for row in rows if len(row["input_ids"]) <= max_seq_length]
    skipped = len(rows) - len(kept)
    if skipped:
        logger.warning("Skipped %d training conversations longer than --max-seq-length %d", skipped, max_seq_length)
    return kept, skipped


def check_sequence_room(tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], config: StascConfig) -> None:
    """Refuse, before a run starts, a --max-seq-length that not even the shortest question's conversation fits
    with an answer and a correction of --max-new-tokens each: every kept pair would be skipped, and the run
    would stop at its first fine-tuning with settings that can no longer change."""
    shortest = min(questions, key=len)
    empty = training_messages(shortest, "", "", config.instructions, config.correction_instructions)
    frame = len(tokenizer(tokenizer.apply_chat_template(empty, tokenize=False), add_special_tokens=False)["input_ids"])
    needed = frame + 2 * config.max_new_tokens
    if config.max_seq_length < needed:
        raise StascError(
            f"--max-seq-length {config.max_seq_length} is too short for any training conversation: the "
            f"instructions, the shortest question and the correction request take {frame} tokens, and the answer "
            f"and its correction up to 2 x --max-new-tokens ({2 * config.max_new_tokens}) more. Use "
            f"--max-seq-length {needed} or more."
        )


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, first_needed: int) -> int:
    """How many leading tokens every row of the batch has in common (at most first_needed, the first
    position whose logits the loss needs, and never the whole row); 0 when sharing does not pay."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)
    length = min(int(same.int().cumprod(dim=0).sum()), first_needed, input_ids.shape[1] - 1)
    return length if length >= MIN_SHARED_PREFIX else 0


class TrainingProgress(TrainerCallback):
    """One progress bar of optimizer steps with the latest loss beside it; Trainer's log records go to the
    debug log instead of being printed."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.open_bar = contextlib.ExitStack()
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs) -> None:  # noqa: ANN001 - Trainer's signature
        if state.is_world_process_zero:
            self.bar = self.open_bar.enter_context(progress(self.desc, state.max_steps, "step"))

    def on_step_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # noqa: ANN001
        logger.debug("Trainer: %s", logs)
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}")

    def on_train_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        self.open_bar.close()
        self.bar = None


class CorrectionTrainer(Trainer):
    """A Trainer that computes only what the correction loss needs.

    The loss covers only the correction turn, a small share of each conversation, while the
    output layer (hidden x vocabulary, 49k words for SmolLM2) is the largest matrix of a small
    model: the model gives logits only at positions where some row has a label (through its own
    forward, so DDP, FSDP and DeepSpeed wrappers see the step). And every conversation starts
    with the same system prompt and instructions: an unwrapped model runs that shared prefix
    once for the batch and continues each row from its keys and values, instead of once per
    row. On a CPU, short batches run with eager attention (see training_attention). All of it
    gives the same loss and gradients as the model's own loss (tested).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model_attention = self.model.get_base_model().config._attn_implementation

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        base_model = self.model.get_base_model()
        attention = training_attention(input_ids.device, self.model_attention, input_ids.shape[1])
        if base_model.config._attn_implementation != attention:
            base_model.set_attn_implementation(attention)
        targets = inputs["labels"][:, 1:]  # position t predicts token t + 1
        supervised = targets != IGNORE_INDEX
        keep = supervised.any(dim=0).nonzero().squeeze(-1)  # positions where some row has a label
        first_needed = int(keep[0]) if keep.numel() else input_ids.shape[1]
        # two forward calls per batch are fine for the model itself, not for a DDP / FSDP / DeepSpeed wrapper
        shared = shared_prefix_length(input_ids, attention_mask, first_needed) if model is self.model else 0
        if shared:
            cache = DynamicCache(config=self.model.config)
            model(input_ids=input_ids[:1, :shared], attention_mask=attention_mask[:1, :shared],
                  past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache.batch_repeat_interleave(input_ids.shape[0])  # differentiable: gradients of all rows add up
            positions = torch.arange(shared, input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)
            logits = model(
                input_ids=input_ids[:, shared:], attention_mask=attention_mask, position_ids=positions,
                past_key_values=cache, use_cache=True, logits_to_keep=keep - shared,
            ).logits
        else:
            logits = model(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep,
            ).logits
        mask = supervised[:, keep]
        logits = logits[mask].float()
        loss = torch.nn.functional.cross_entropy(logits, targets[:, keep][mask], reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else supervised.sum()
        loss = loss / count
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # the count is every process's tokens and DDP averages the processes' gradients: scale by the process
            # count, as Trainer's own compute_loss does (without it a two-process run logged half the loss)
            loss = loss * self.accelerator.num_processes
        return (loss, {"logits": logits}) if return_outputs else loss


def optimizer_steps(examples: int, per_device: int, processes: int, accumulation: int, epochs: float) -> int:
    """The optimizer steps Trainer will take: each process gets its share of the examples in batches
    of per_device, and every `accumulation` batches (or the last few of an epoch) make one step."""
    batches = math.ceil(math.ceil(examples / processes) / per_device)
    return math.ceil(math.ceil(batches / accumulation) * epochs)


def warmup_steps(ratio: float, steps: int) -> int:
    """Warm-up steps, rounded down: a warm-up step starts at learning rate 0, so rounding up (as
    transformers does for a ratio) would make the only step of a one-step iteration learn nothing,
    and the improving filter often keeps fewer examples than one batch."""
    return int(ratio * steps)


def make_collator(policy: Policy) -> DataCollatorForSeq2Seq:
    """Right-padded batches; padding positions carry no label."""
    return DataCollatorForSeq2Seq(policy.tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


def training_attention(device: torch.device, model_attention: str, batch_tokens: int) -> str:
    """The attention implementation to train a batch with: eager on a CPU for short batches (STaSC's
    conversations are 150-300 tokens), the model's own otherwise; training_mode puts back the one
    sampling starts from."""
    if device.type == "cpu" and model_attention == "sdpa" and batch_tokens <= EAGER_ATTENTION_MAX_TOKENS:
        return "eager"
    return model_attention


def trains_in_bfloat16(policy: Policy) -> bool:
    """Whether the adapters compute in bfloat16 under autocast (their weights and optimizer stay
    float32): with bfloat16 base weights PEFT would otherwise cast every adapted layer's input up
    to float32 and its output back, several full-size copies per layer and step."""
    return next(policy.model.parameters()).dtype == torch.bfloat16


@contextlib.contextmanager
def training_mode(policy: Policy) -> Iterator[None]:
    """Train mode, right padding and no KV cache (the model would otherwise build one); afterwards the
    sampling settings, and the attention implementation training may switch per batch, are put back."""
    base_model = policy.model.get_base_model()
    config = base_model.config
    use_cache, sampling_attention = config.use_cache, config._attn_implementation
    config.use_cache = False
    policy.tokenizer.padding_side = "right"
    policy.model.train()
    try:
        yield
    finally:
        config.use_cache = use_cache
        if config._attn_implementation != sampling_attention:
            base_model.set_attn_implementation(sampling_attention)
        policy.tokenizer.padding_side = "left"
        policy.model.eval()


def train_adapter(
    policy: Policy, conversations: Sequence[Sequence[Message]], config: StascConfig, *, seed: int,
    desc: str = "training",
) -> TrainingReport:
    """Fine-tune the adapter in the policy's slot on the given conversations, in place (desc names its
    progress bar)."""
    dataset, skipped = build_training_dataset(policy, conversations, config.max_seq_length)
    if len(dataset) == 0:
        raise StascError(
            f"No training conversation fits --max-seq-length {config.max_seq_length}: all {skipped} kept ones are "
            "longer. Start the run again in a new --output-dir with a larger --max-seq-length."
        )
    processes = current_processes().count
    per_device, remainder = divmod(config.train_batch_size, config.gradient_accumulation_steps * processes)
    if remainder or per_device == 0:
        raise StascError(
            f"--train-batch-size {config.train_batch_size} is the batch over all {processes} processes; it must be "
            f"a multiple of processes x --gradient-accumulation-steps ({processes * config.gradient_accumulation_steps})."
        )
    steps = optimizer_steps(len(dataset), per_device, processes, config.gradient_accumulation_steps, config.epochs)
    # a kept set smaller than a few batches would otherwise be a step or two: pass over it again instead
    max_steps = config.min_train_steps if config.min_train_steps > steps else -1
    steps = max(steps, config.min_train_steps)
    bfloat16 = trains_in_bfloat16(policy)
    with tempfile.TemporaryDirectory(prefix="stasc-trainer-") as scratch:
        arguments = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=per_device,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            num_train_epochs=config.epochs,
            max_steps=max_steps,
            learning_rate=config.learning_rate,
            lr_scheduler_type=config.lr_scheduler,
            warmup_steps=warmup_steps(config.warmup_ratio, steps),
            weight_decay=config.weight_decay,
            bf16=bfloat16,
            use_cpu=policy.device.type == "cpu",
            logging_steps=max(1, steps // 10),
            save_strategy="no",
            report_to=[] if config.report_to == "none" else [config.report_to],
            seed=seed,
            data_seed=seed,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            disable_tqdm=True,  # TrainingProgress draws the bar
        )
        with training_mode(policy), disable_input_dtype_casting(policy.model, active=bfloat16):
            trainer = CorrectionTrainer(
                model=policy.model, args=arguments, train_dataset=dataset, data_collator=make_collator(policy),
                callbacks=[TrainingProgress(desc)],
            )
            trainer.remove_callback(PrinterCallback)  # it prints every log record
            output = trainer.train()
    policy.mark_trained()
    supervised = sum(sum(1 for label in row["labels"] if label != IGNORE_INDEX) for row in dataset)
    return TrainingReport(
        examples=len(dataset),
        skipped_too_long=skipped,
        steps=output.global_step,
        train_loss=float(output.training_loss),
        supervised_tokens=supervised,
        seconds=float(output.metrics.get("train_runtime", 0.0)),
        loss_curve=[
            [int(entry["step"]), float(entry["loss"])] for entry in trainer.state.log_history if "loss" in entry
        ],
    )
