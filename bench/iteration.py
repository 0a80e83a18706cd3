"""One whole STaSC iteration against a textbook one, and how an iteration's cost grows.

    python bench/iteration.py --quick        # 8 questions, a few minutes
    python bench/iteration.py                # 32 questions, N_init = N_corr = 2
    python bench/iteration.py --scaling      # stasc alone at three sizes of questions and of N_init x N_corr

Both arms run train.py's loop (stasc.run.loop.StascRun, variant ENF, --iterations 1) on the same
questions and settings in one process. Iteration 0 evaluates M0 (and warms up the kernels);
iteration 1 samples initial answers and corrections, filters, fine-tunes and evaluates, and is
what is timed (the seconds its run.json records). The textbook arm swaps in plain
`model.generate` (bfloat16, 64 sequences per call, num_return_sequences) for sampling and a
plain float32 Trainer (bench/training.py) for fine-tuning; stasc uses its own sampler and
training step. Each arm samples its own answers, so the filter keeps different examples: the
rows give the work done next to the seconds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import append_result  # noqa: E402
from bench.generation import plain_generate  # noqa: E402
from bench.training import plain_trainer  # noqa: E402
import stasc.run.loop  # noqa: E402
from stasc.config import StascConfig, SuggestingParser  # noqa: E402
from stasc.sampling.cpu_engine.decoding import DecodeSettings  # noqa: E402
from stasc.run.loop import StascRun  # noqa: E402
from stasc.modeling.policy import Policy  # noqa: E402
from stasc.core.prompts import Message  # noqa: E402
from stasc.modeling.tokenization import IGNORE_INDEX, render_prompt, tokenize_conversation  # noqa: E402
from stasc.training.lora import TrainingReport, train_adapter  # noqa: E402

TEXTBOOK_BATCH = 64  # sequences per generate call, as in bench/generation.py


@dataclass
class Work:
    """What iteration 1 did and how long its parts took."""

    sampled_sequences: int = 0
    sampling_seconds: float = 0.0
    trained_examples: int = 0
    training_seconds: float = 0.0
    iteration_seconds: float = 0.0


class TimedSampler:
    """Passes sampling through, timing iteration 1's sampling of training questions."""

    def __init__(self, inner, work: Work) -> None:
        self.inner, self.work = inner, work

    def sample(self, conversations: Sequence[Sequence[Message]], num_samples: int, *, adapter, seed: int, desc: str):
        began = time.perf_counter()
        result = self.inner.sample(conversations, num_samples, adapter=adapter, seed=seed, desc=desc)
        if desc.startswith("iter 1 ") and "eval" not in desc:
            self.work.sampling_seconds += time.perf_counter() - began
            self.work.sampled_sequences += len(conversations) * num_samples
        return result


class GenerateSampler:
    """The textbook sampler: `model.generate` with num_return_sequences, 64 sequences per call."""

    def __init__(self, policy: Policy, config: StascConfig) -> None:
        self.policy = policy
        self.settings = DecodeSettings(config.max_new_tokens, config.temperature, config.top_p)

    def sample(self, conversations, num_samples: int, *, adapter, seed: int, desc: str) -> list[list[str]]:
        tokenizer = self.policy.tokenizer
        self.policy.activate(adapter)
        prompts = [tokenizer(render_prompt(tokenizer, c), add_special_tokens=False)["input_ids"] for c in conversations]
        with self.policy.generating() as model, torch.inference_mode():
            rows = plain_generate(model, tokenizer, prompts, num_samples, self.settings,
                                  max(1, TEXTBOOK_BATCH // num_samples), seed)
        texts = [text.strip() for text in tokenizer.batch_decode(rows, skip_special_tokens=True)]
        return [texts[index * num_samples : (index + 1) * num_samples] for index in range(len(prompts))]


def textbook_training(model_path: str):
    """The loop's training step done by a plain float32 Trainer on a float32 copy of the model,
    starting from the LoRA weights the loop put in the policy's slot and writing the result back."""

    def train(policy: Policy, conversations, config: StascConfig, *, seed: int) -> TrainingReport:
        start = get_peft_model_state_dict(policy.model)
        seconds, loss, steps, state = plain_trainer(model_path, list(conversations), config, seed=seed, start=start)
        set_peft_model_state_dict(policy.model, state)
        policy.mark_trained()
        supervised = sum(
            sum(label != IGNORE_INDEX for label in tokenize_conversation(policy.tokenizer, row)["labels"])
            for row in conversations
        )
        return TrainingReport(len(conversations), 0, steps, loss, supervised, seconds)

    return train


def one_iteration(config: StascConfig, *, textbook: bool) -> Work:
    """Run iteration 0 and 1 of the loop in a scratch directory; return iteration 1's work."""
    work = Work()
    with tempfile.TemporaryDirectory(prefix="stasc-bench-") as scratch:
        config = StascConfig.from_dict({**config.to_dict(), "output_dir": str(Path(scratch) / "run")})
        run = StascRun(config)
        inner = GenerateSampler(run.policy, config) if textbook else run.sampler
        run.sampler = TimedSampler(inner, work)
        trainer = textbook_training(run.model_path) if textbook else train_adapter

        def timed_training(policy, conversations, config, *, seed):
            began = time.perf_counter()
            report = trainer(policy, conversations, config, seed=seed)
            work.training_seconds += time.perf_counter() - began
            work.trained_examples += report.examples
            return report

        with mock.patch.object(stasc.run.loop, "train_adapter", timed_training):
            manifest = run.run()
    work.iteration_seconds = manifest["iterations"][1]["seconds"]
    return work


def settings(questions: int, test_questions: int, n_init: int, n_corr: int) -> StascConfig:
    return StascConfig(
        iterations=1, variant="ENF", max_train_questions=questions, max_test_questions=test_questions,
        n_init=n_init, n_corr=n_corr, log_level="warning",
    )


def describe(name: str, work: Work) -> str:
    return (
        f"{name}: iteration {work.iteration_seconds:.0f} s; sampling {work.sampled_sequences} sequences "
        f"{work.sampling_seconds:.0f} s; training {work.trained_examples} examples {work.training_seconds:.0f} s"
    )


def compare(args: argparse.Namespace) -> None:
    questions = 8 if args.quick else args.questions
    config = settings(questions, questions // 2, args.n_init, args.n_corr)
    textbook = one_iteration(config, textbook=True)
    ours = one_iteration(config, textbook=False)
    speedup = textbook.iteration_seconds / ours.iteration_seconds
    sampling = (ours.sampled_sequences / ours.sampling_seconds) / (textbook.sampled_sequences / textbook.sampling_seconds)
    training = (ours.trained_examples / ours.training_seconds) / (textbook.trained_examples / textbook.training_seconds)
    rows = [
        f"- setting: iteration 1 of ENF, {questions} training and {questions // 2} test questions, "
        f"N_init {args.n_init} x N_corr {args.n_corr}, defaults otherwise",
        "- " + describe("textbook (generate at batch 64, float32 Trainer)", textbook),
        "- " + describe("stasc", ours),
        f"- sequences/s {sampling:.2f}x, examples/s {training:.2f}x; **whole iteration {speedup:.2f}x**",
    ]
    if not args.no_write:
        append_result("Iteration" + (" (quick)" if args.quick else ""), rows)
    print("\n".join(rows))
    print(f"speedup_vs_textbook_iteration={speedup:.2f}")


def scaling(args: argparse.Namespace) -> None:
    sizes = [(16, 2), (32, 2), (64, 2), (32, 1), (32, 4)]  # (questions, N_init) with N_corr 2
    results: dict[tuple[int, int], Work] = {}
    for questions, n_init in sizes:
        results[questions, n_init] = one_iteration(settings(questions, 16, n_init, 2), textbook=False)
    rows = [
        "- setting: stasc alone, iteration 1 of ENF, 16 test questions, N_corr 2; sampled sequences per question "
        "are N_init x (1 + N_corr)",
        "",
        "| questions | N_init x N_corr | sequences | sampling s | ms per sequence | examples | training s "
        "| ms per example |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (questions, n_init), work in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        rows.append(
            f"| {questions} | {n_init} x 2 | {work.sampled_sequences} | {work.sampling_seconds:.1f} | "
            f"{1000 * work.sampling_seconds / work.sampled_sequences:.0f} | {work.trained_examples} | "
            f"{work.training_seconds:.1f} | {1000 * work.training_seconds / max(1, work.trained_examples):.0f} |"
        )
    if not args.no_write:
        append_result("Iteration scaling", rows)
    print("\n".join(rows))


def main() -> None:
    parser = SuggestingParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 training questions")
    parser.add_argument("--scaling", action="store_true", help="stasc alone at three sizes of each axis")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--n-init", type=int, default=2)
    parser.add_argument("--n-corr", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/results.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.scaling:
        scaling(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
