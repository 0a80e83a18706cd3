"""The STaSC loop: sample, correct, filter, fine-tune, evaluate; resumable step by step.

Iteration n (1..N):
  1. initial answers from M_init (fixed: M0, sampled once and reused; evolving: M_(n-1));
  2. N_corr corrections of every initial answer from M_(n-1);
  3. keep the pairs the filter accepts (improving: 0->1; non-decreasing: 0->1 and 1->1);
  4. fine-tune a LoRA adapter on the kept conversations (fixed: fresh adapter on M0;
     evolving: continue from M_(n-1)'s adapter), which gives M_n = M0 + adapter_n;
  5. evaluate M_n on the held-out questions.
Iteration 0 evaluates M0. Each step writes one file atomically and is skipped when that
file exists, so re-running the same command continues where a run stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from peft import LoraConfig

from stasc import __version__
from stasc.config import StascConfig
from stasc.data import QAExample, load_qa_splits
from stasc.distributed import current_processes
from stasc.errors import StascError
from stasc.core.filtering import count_transitions, keep_correction
from stasc.sampling.base import Sampler, gpu_handover
from stasc.sampling.factory import make_sampler
from stasc.run.layout import iteration_dir
from stasc.run.manifest import FORMAT_VERSION, format_table, manifest_path, read_manifest, write_manifest
from stasc.core.metrics import iteration_metrics
from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path
from stasc.modeling.policy import Policy
from stasc.core.prompts import correction_messages, initial_messages, training_messages
from stasc.core.rewards import binary_reward, score_output
from stasc.run.storage import atomic_directory, read_parquet, remove_leftovers, write_json, write_parquet
from stasc.training.lora import train_adapter
from stasc.sampling.vllm import check_backend

logger = logging.getLogger(__name__)

INITIAL_ANSWERS = "initial_answers.parquet"
CORRECTIONS = "corrections.parquet"
TRAIN_DATA = "train.parquet"
ADAPTER = "adapter"
TRAINING_REPORT = "training.json"
EVALUATION = "evaluation.parquet"

# Settings that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = frozenset(
    {"iterations", "output_dir", "log_level", "report_to", "model_cache_dir", "push_to_hub", "hub_private"}
)
STEP_SEEDS = {"initial": 1, "corrections": 2, "train": 3, "eval_initial": 4, "eval_corrections": 5}


def data_fingerprint(train: Sequence[QAExample], test: Sequence[QAExample]) -> str:
    """A hash of the questions and answers, so a resumed run refuses changed data."""
    payload = json.dumps([[asdict(example) for example in split] for split in (train, test)], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class StascRun:
    """One run directory: its config, data, model and the iterations done so far."""

    def __init__(self, config: StascConfig) -> None:
        self.config = config
        self.processes = current_processes()
        check_backend(config, self.processes.count)
        self.run_dir = Path(config.output_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise StascError(
                f"--output-dir {self.run_dir} is a file, not a directory. Pass a new directory name, or move the file."
            )
        existing = read_manifest(self.run_dir) if manifest_path(self.run_dir).exists() else None
        if existing is not None:
            check_resumable(existing["config"], config, self.run_dir)
        self.model_path = resolve_model_path(config.model, config.model_cache_dir)
        self.train, self.test = load_qa_splits(
            config.dataset,
            test_dataset=config.test_dataset,
            question_column=config.question_column,
            answers_column=config.answers_column,
            dataset_config=config.dataset_config,
            train_split=config.train_split,
            test_split=config.test_split,
            test_fraction=config.test_fraction,
            seed=config.seed,
            max_train=config.max_train_questions,
            max_test=config.max_test_questions,
        )
        fingerprint = data_fingerprint(self.train, self.test)
        if existing is not None and existing.get("data", {}).get("fingerprint") != fingerprint:
            raise StascError(
                f"The questions loaded now differ from the ones {self.run_dir} was started with "
                "(the data file changed). Restore the data or use a new --output-dir."
            )
        tokenizer = load_tokenizer(self.model_path, trust_remote_code=config.trust_remote_code)
        base = load_model(self.model_path, dtype=pick_dtype(config.dtype), trust_remote_code=config.trust_remote_code)
        self.policy = Policy(base, tokenizer, lora_config(config), seed=config.seed)
        self.sampler: Sampler = make_sampler(config, self.policy, self.model_path)
        self.manifest = existing or self._new_manifest(fingerprint)

    def _new_manifest(self, fingerprint: str) -> dict[str, Any]:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return {
            "format_version": FORMAT_VERSION,
            "stasc_version": __version__,
            "created_at": now,
            "updated_at": now,
            "status": "running",
            "config": self.config.to_dict(),
            "variant": self.config.variant_name,
            "base_model": self.config.model,
            "data": {"fingerprint": fingerprint, "train_questions": len(self.train), "test_questions": len(self.test)},
            "iterations": [],
        }

    # ----------------------------------------------------------------- driving

    def run(self, on_iteration: Callable[[Path], None] | None = None) -> dict[str, Any]:
        """Run (or resume) every iteration up to config.iterations; return the manifest.

        on_iteration(run_dir) is called after each iteration is recorded (e.g. a Hub push).
        """
        self.on_iteration = on_iteration if self.processes.is_main else None
        self.processes.barrier()  # every process has read the run directory before the main one changes it
        if self.processes.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.run_dir)
        self.manifest["config"]["iterations"] = self.config.iterations
        self.manifest["status"] = "running"
        self._save_manifest()
        done = len(self.manifest["iterations"])
        if done:
            logger.info("Resuming %s: iterations 0..%d are complete", self.run_dir, done - 1)
        if done == 0:
            started = time.monotonic()
            evaluation = self._evaluate_iteration(0, adapter=None)
            self._record(0, evaluation, adapter=None, extra={"seconds": round(time.monotonic() - started, 1)})
        for iteration in range(len(self.manifest["iterations"]), self.config.iterations + 1):
            self._run_iteration(iteration)
        self.manifest["status"] = "complete"
        self._save_manifest()
        logger.info("Run complete: %s\n%s", self.run_dir, format_table(self.manifest["iterations"]))
        return self.manifest

    def _save_manifest(self) -> None:
        self.manifest["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.processes.main_writes(write_manifest, self.run_dir, self.manifest)

    def _adapter_of(self, iteration: int) -> Path | None:
        """Where M_iteration's adapter lives (None for M0)."""
        relative = self.manifest["iterations"][iteration].get("adapter")
        return self.run_dir / relative if relative else None

    def _seed(self, iteration: int, step: str) -> int:
        return self.config.seed * 1_000_003 + iteration * 101 + STEP_SEEDS[step]

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.run_dir).as_posix()

    # ----------------------------------------------------------------- one iteration

    def _run_iteration(self, iteration: int) -> None:
        config = self.config
        directory = iteration_dir(self.run_dir, iteration)
        previous_adapter = self._adapter_of(iteration - 1)
        started = time.monotonic()
        logger.info("Iteration %d/%d (%s)", iteration, config.iterations, config.variant_name)

        initial_path = self._initial_answers(iteration, previous_adapter)
        corrections_path = directory / CORRECTIONS
        if not self.processes.exists(corrections_path):
            corrections = self._corrections(read_parquet(initial_path), iteration, previous_adapter)
            self.processes.main_writes(write_parquet, corrections_path, corrections)
        corrections = read_parquet(corrections_path)

        train_path = directory / TRAIN_DATA
        if not self.processes.exists(train_path):
            self.processes.main_writes(write_parquet, train_path, self._training_rows(corrections))
        train_rows = read_parquet(train_path)

        warnings: list[str] = []
        training: dict[str, Any] | None = None
        if len(train_rows) == 0:
            message = (
                f"Iteration {iteration}: the {config.filter} filter kept no corrections "
                f"(out of {len(corrections)}); M_{iteration} is M_{iteration - 1} carried forward."
            )
            logger.warning(message)
            warnings.append(message)
            adapter = previous_adapter
        else:
            adapter = directory / ADAPTER
            training = self._train(train_rows, iteration, previous_adapter, adapter)

        transitions = count_transitions(zip(corrections["initial_reward"], corrections["correction_reward"], strict=True))
        train_stats = {
            "pairs": len(corrections),
            "kept_examples": len(train_rows),
            "train_initial_accuracy": float(corrections["initial_reward"].mean()) if len(corrections) else 0.0,
            "train_correction_accuracy": float(corrections["correction_reward"].mean()) if len(corrections) else 0.0,
            "train_transitions": transitions.counts(),
        }
        extra = {
            "initial_answers": self._relative(initial_path),
            "corrections": self._relative(corrections_path),
            "train_data": self._relative(train_path),
            "kept_examples": len(train_rows),
            "train": train_stats,
            "training": training,
            "warnings": warnings,
        }
        evaluation = self._evaluate_iteration(iteration, adapter)
        extra["seconds"] = round(time.monotonic() - started, 1)
        self._record(iteration, evaluation, adapter, extra)

    def _initial_answers(self, iteration: int, previous_adapter: Path | None) -> Path:
        """Step 1; with fixed initialization, iteration 1's answers from M0 are reused."""
        if self.config.initialization == "fixed" and iteration > 1:
            return iteration_dir(self.run_dir, 1) / INITIAL_ANSWERS
        path = iteration_dir(self.run_dir, iteration) / INITIAL_ANSWERS
        if self.processes.exists(path):
            return path
        adapter = None if self.config.initialization == "fixed" else previous_adapter
        prompts = [initial_messages(example.question, self.config.instructions) for example in self.train]
        samples = self.sampler.sample(
            prompts, self.config.n_init, adapter=adapter, seed=self._seed(iteration, "initial"),
            desc=f"iter {iteration} initial answers",
        )
        rows = [
            {
                "question_id": example.id,
                "question": example.question,
                "answers": list(example.answers),
                "initial_index": index,
                "initial_answer": answer,
                "initial_reward": self._reward(answer, example.answers),
            }
            for example, answers in zip(self.train, samples, strict=True)
            for index, answer in enumerate(answers)
        ]
        self.processes.main_writes(write_parquet, path, pd.DataFrame(rows))
        return path

    def _corrections(self, initial: pd.DataFrame, iteration: int, previous_adapter: Path | None) -> pd.DataFrame:
        """Step 2: N_corr corrections per initial answer from M_(n-1), each paired with its answer."""
        config = self.config
        prompts = [
            correction_messages(row.question, row.initial_answer, config.instructions, config.correction_instructions)
            for row in initial.itertuples()
        ]
        samples = self.sampler.sample(
            prompts, config.n_corr, adapter=previous_adapter, seed=self._seed(iteration, "corrections"),
            desc=f"iter {iteration} corrections",
        )
        rows = []
        for row, corrections in zip(initial.to_dict("records"), samples, strict=True):
            for index, correction in enumerate(corrections):
                reward = self._reward(correction, row["answers"])
                rows.append(
                    {
                        **row,
                        "correction_index": index,
                        "correction": correction,
                        "correction_reward": reward,
                        "kept": keep_correction(row["initial_reward"], reward, config.filter),  # type: ignore[arg-type]
                    }
                )
        return pd.DataFrame(rows)

    def _training_rows(self, corrections: pd.DataFrame) -> pd.DataFrame:
        """Step 3: the kept pairs, each with the whole conversation it is trained on."""
        kept = corrections[corrections["kept"]].drop(columns=["kept"]).reset_index(drop=True)
        kept["messages"] = [
            training_messages(
                row.question, row.initial_answer, row.correction,
                self.config.instructions, self.config.correction_instructions,
            )
            for row in kept.itertuples()
        ]
        if kept.empty:
            kept["messages"] = pd.Series([], dtype=object)
        return kept

    def _train(self, rows: pd.DataFrame, iteration: int, previous_adapter: Path | None, adapter: Path) -> dict[str, Any]:
        """Step 4: LoRA fine-tuning from a fresh adapter (fixed) or from M_(n-1)'s (evolving)."""
        report_path = adapter.parent / TRAINING_REPORT
        if self.processes.exists(adapter) and self.processes.exists(report_path):
            return json.loads(report_path.read_text(encoding="utf-8"))
        if self.config.finetuning == "evolving" and previous_adapter is not None:
            self.policy.load_adapter_weights(previous_adapter)
        else:
            self.policy.reset_adapter()
        conversations = [list(messages) for messages in rows["messages"]]
        with gpu_handover(self.sampler), self.processes.trainable(self.policy) as trainee:
            report = asdict(train_adapter(trainee, conversations, self.config, seed=self._seed(iteration, "train")))
        report["started_from"] = (
            self._relative(previous_adapter)
            if self.config.finetuning == "evolving" and previous_adapter is not None
            else "fresh"
        )
        if self.processes.is_main:
            with atomic_directory(adapter) as staging:
                self.policy.save_adapter(staging)
            write_json(report_path, report)
        self.processes.barrier()
        self.policy.loaded_adapter = adapter.resolve()
        return report

    def _evaluate_iteration(self, iteration: int, adapter: Path | None) -> pd.DataFrame:
        """Step 5: one initial answer and one correction per held-out question."""
        path = iteration_dir(self.run_dir, iteration) / EVALUATION
        if self.processes.exists(path):
            return read_parquet(path)
        config = self.config
        if config.initialization == "fixed" and iteration > 0:
            base_rows = read_parquet(iteration_dir(self.run_dir, 0) / EVALUATION)
            initial_answers = list(base_rows["initial_answer"])
        else:
            prompts = [initial_messages(example.question, config.instructions) for example in self.test]
            initial_answers = [
                samples[0]
                for samples in self.sampler.sample(
                    prompts, 1, adapter=adapter, seed=self._seed(iteration, "eval_initial"),
                    desc=f"iter {iteration} eval initial",
                )
            ]
        prompts = [
            correction_messages(example.question, answer, config.instructions, config.correction_instructions)
            for example, answer in zip(self.test, initial_answers, strict=True)
        ]
        corrections = [
            samples[0]
            for samples in self.sampler.sample(
                prompts, 1, adapter=adapter, seed=self._seed(iteration, "eval_corrections"),
                desc=f"iter {iteration} eval corrections",
            )
        ]
        rows = pd.DataFrame(
            [
                {
                    "question_id": example.id,
                    "question": example.question,
                    "answers": list(example.answers),
                    "initial_answer": initial,
                    "correction": correction,
                    "initial_in_acc": self._in_acc(initial, example.answers),
                    "correction_in_acc": self._in_acc(correction, example.answers),
                    "initial_reward": self._reward(initial, example.answers),
                    "correction_reward": self._reward(correction, example.answers),
                }
                for example, initial, correction in zip(self.test, initial_answers, corrections, strict=True)
            ]
        )
        self.processes.main_writes(write_parquet, path, rows)
        return rows

    def _record(self, iteration: int, evaluation: pd.DataFrame, adapter: Path | None, extra: dict[str, Any]) -> None:
        """Append a finished iteration to the manifest (the moment it counts as done)."""
        metrics = iteration_metrics(list(evaluation["initial_in_acc"]), list(evaluation["correction_in_acc"]))
        metrics["initial_reward"] = float(evaluation["initial_reward"].mean()) if len(evaluation) else 0.0
        metrics["correction_reward"] = float(evaluation["correction_reward"].mean()) if len(evaluation) else 0.0
        entry = {
            "iteration": iteration,
            "metrics": metrics,
            "adapter": self._relative(adapter) if adapter else None,
            "evaluation": self._relative(iteration_dir(self.run_dir, iteration) / EVALUATION),
            **extra,
        }
        self.manifest["iterations"].append(entry)
        self._save_manifest()
        if self.on_iteration is not None:
            self.on_iteration(self.run_dir)
        logger.info(
            "Iteration %d: initial in-acc %.3f, correction in-acc %.3f",
            iteration, metrics["initial_in_acc"], metrics["correction_in_acc"],
        )

    def _reward(self, output: str, answers: Sequence[str]) -> int:
        config = self.config
        return binary_reward(
            output, list(answers), reward=config.reward, extraction=config.answer_extraction,  # type: ignore[arg-type]
            f1_threshold=config.f1_threshold,
        )

    def _in_acc(self, output: str, answers: Sequence[str]) -> int:
        score = score_output(output, list(answers), metric="in_acc", extraction=self.config.answer_extraction)  # type: ignore[arg-type]
        return int(score)


def lora_config(config: StascConfig) -> LoraConfig:
    targets: str | list[str] = (
        "all-linear" if config.lora_target_modules == ["all-linear"] else list(config.lora_target_modules)
    )
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def check_resumable(saved: dict[str, Any], config: StascConfig, run_dir: Path) -> None:
    """Refuse to continue a run with settings that would change its results."""
    current = config.to_dict()
    changed = [
        f"{name} was {saved.get(name)!r}, now {value!r}"
        for name, value in current.items()
        if name not in RESUMABLE_CHANGES and saved.get(name) != value
    ]
    if changed:
        raise StascError(
            f"{run_dir} holds a run with different settings ({'; '.join(changed)}). Re-run with the "
            "same settings to resume it (only --iterations may grow), or choose a new --output-dir."
        )
