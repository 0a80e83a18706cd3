"""The STaSC loop: sample, correct, filter, fine-tune, evaluate; resumable step by step.

Iteration n (1..N):
  1. initial answers from M_init (fixed: M0, sampled once and reused; evolving: M_(n-1));
  2. N_corr corrections of every initial answer from M_(n-1); with --rationalize, a hinted
     correction for each wrong answer that no correction fixed;
  3. keep the pairs the filter accepts (see stasc.core.filtering);
  4. fine-tune a LoRA adapter on the kept conversations (fixed: fresh adapter on M0;
     evolving: continue from M_(n-1)'s adapter), which gives M_n = M0 + adapter_n;
  5. evaluate M_n on the held-out questions: K initial answers per question, each corrected once.
Iteration 0 evaluates M0. Each step writes one file atomically and is skipped when that
file exists; sampling steps write their samples chunk by chunk, so re-running the same
command continues where a run stopped, redoing at most one chunk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
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
from stasc.core.filtering import count_transitions, kept_pairs, own_answer_fixes
from stasc.core.metrics import round_metrics
from stasc.core.prompts import (
    Message,
    answer_messages,
    correction_messages,
    hinted_correction_messages,
    initial_messages,
    mentions_hint,
    refinement_messages,
    training_messages,
)
from stasc.core.rewards import normalize_answer
from stasc.core.tasks import task_accuracy, task_reward
from stasc.data import QAExample, RowRules, load_qa_splits, split_validation
from stasc.distributed import current_processes
from stasc.errors import StascError
from stasc.log import progress
from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path
from stasc.modeling.policy import Policy
from stasc.run.layout import iteration_dir
from stasc.run.lock import RunLock, check_unlocked
from stasc.run.manifest import (
    FORMAT_VERSION,
    format_table,
    manifest_path,
    read_manifest,
    run_file,
    write_manifest,
)
from stasc.run.memory import limit_retained_memory, peak_rss_mb, release_freed_memory, reset_peak_rss
from stasc.run.storage import atomic_directory, read_parquet, remove_leftovers, write_json, write_parquet
from stasc.sampling.base import Sampler, gpu_handover
from stasc.sampling.factory import make_sampler
from stasc.sampling.threads import cpu_threads
from stasc.sampling.vllm import check_backend
from stasc.training.lora import check_sequence_room, train_adapter

logger = logging.getLogger(__name__)

INITIAL_ANSWERS = "initial_answers.parquet"
CORRECTIONS = "corrections.parquet"
RATIONALIZATIONS = "rationalizations.parquet"
TRAIN_DATA = "train.parquet"
ADAPTER = "adapter"
TRAINING_REPORT = "training.json"
EVALUATION = "evaluation.parquet"

# Settings that may change between a run and its resumption without changing what it computes (threads: only
# how bfloat16 sums round).
RESUMABLE_CHANGES = frozenset(
    {"iterations", "output_dir", "log_level", "report_to", "model_cache_dir", "push_to_hub", "hub_private",
     "max_question_chars", "threads"}
)
SEED_RANGE = 2**31


def derived_seed(seed: int, *parts: object) -> int:
    """A seed in 0..2**31-1 for one step of the run, from the run's seed (any size) and the step's name:
    numpy, which Trainer seeds, takes only 32-bit seeds."""
    digest = hashlib.sha256(repr((seed, *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % SEED_RANGE


def data_fingerprint(train: Sequence[QAExample], test: Sequence[QAExample]) -> str:
    """A hash of the questions and answers, so a resumed run refuses changed data."""
    payload = json.dumps([[asdict(example) for example in split] for split in (train, test)], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class StascRun:
    """One run directory: its config, data, model and the iterations done so far."""

    def __init__(self, config: StascConfig) -> None:
        self.config = config
        limit_retained_memory()  # before the model and the first tensors are allocated
        self.processes = current_processes()
        check_backend(config, self.processes.count)
        self.run_dir = Path(config.output_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise StascError(
                f"--output-dir {self.run_dir} is a file, not a directory. Pass a new directory name, or move the file."
            )
        check_unlocked(self.run_dir)
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
            max_train=None if config.evaluate_on == "validation" else config.max_train_questions,
            max_test=config.max_test_questions,
            rules=RowRules(max_question_chars=config.max_question_chars, normalize=normalize_answer),
        )
        if config.evaluate_on == "validation":
            self.train, self.test = split_validation(
                self.train, config.validation_fraction, max_train=config.max_train_questions,
                max_validation=config.max_test_questions,
            )
        self.fingerprint = data_fingerprint(self.train, self.test)
        if existing is not None:
            self._check_existing(existing)
        tokenizer = load_tokenizer(self.model_path, trust_remote_code=config.trust_remote_code)
        check_sequence_room(tokenizer, [example.question for example in self.train], config)
        base = load_model(self.model_path, dtype=pick_dtype(config.dtype), trust_remote_code=config.trust_remote_code)
        self.policy = Policy(base, tokenizer, lora_config(config), seed=config.seed)
        self.sampler: Sampler = make_sampler(config, self.policy, self.model_path)
        self.manifest = existing or self._new_manifest(self.fingerprint)
        self.lock = RunLock(self.run_dir)

    def _check_existing(self, manifest: dict[str, Any]) -> None:
        """Refuse to continue a run made with other settings or other questions."""
        check_resumable(manifest["config"], self.config, self.run_dir)
        if manifest.get("data", {}).get("fingerprint") != self.fingerprint:
            raise StascError(
                f"The questions loaded now differ from the ones {self.run_dir} was started with "
                "(the data file changed). Restore the data or use a new --output-dir."
            )

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
        """Run (or resume) every iteration up to config.iterations on --threads CPU threads; return the manifest.

        on_iteration(run_dir) is called after each iteration is recorded (e.g. a Hub push).
        """
        with cpu_threads(self.config.threads):
            return self._run(on_iteration)

    def _run(self, on_iteration: Callable[[Path], None] | None) -> dict[str, Any]:
        self.on_iteration = on_iteration if self.processes.is_main else None
        self.processes.barrier()  # every process has read the run directory before the main one changes it
        problem, manifest = self.processes.from_main(self._claim)
        if problem:
            raise StascError(problem)
        try:
            self.manifest = manifest or self.manifest
            return self._run_iterations()
        finally:
            self.lock.release()

    def _claim(self) -> tuple[str | None, dict[str, Any] | None]:
        """Main process: lock the run directory, then read what is in it now (another run may have finished
        iterations since this one started) and clear what interrupted runs left. (error message, manifest)."""
        try:
            self.lock.acquire()
        except StascError as error:
            return str(error), None
        try:
            manifest = read_manifest(self.run_dir) if manifest_path(self.run_dir).exists() else None
            if manifest is not None:
                self._check_existing(manifest)
                forget_deleted_iterations(self.run_dir, manifest)
            remove_leftovers(self.run_dir)
            remove_finished_parts(self.run_dir)
        except StascError as error:
            self.lock.release()
            return str(error), None
        return None, manifest

    def _run_iterations(self) -> dict[str, Any]:
        """The iterations not recorded yet, with the run directory locked."""
        self.manifest["config"]["iterations"] = self.config.iterations
        self.manifest["status"] = "running"
        self._save_manifest()
        done = len(self.manifest["iterations"])
        if done:
            logger.info("Resuming %s: iterations 0..%d are complete", self.run_dir, done - 1)
        if done == 0:
            started = time.monotonic()
            reset_peak_rss()
            evaluation = self._evaluate_iteration(0, adapter=None)
            self._record(0, evaluation, adapter=None, extra={"seconds": round(time.monotonic() - started, 1)})
        for iteration in range(len(self.manifest["iterations"]), self.config.iterations + 1):
            self._run_iteration(iteration)
        self.manifest["status"] = "complete"
        self.manifest["peak_rss_mb"] = max(
            [self.manifest.get("peak_rss_mb", 0.0)]
            + [entry.get("peak_rss_mb", 0.0) for entry in self.manifest["iterations"]]
        )
        self._save_manifest()
        logger.info("Run complete: %s\n%s", self.run_dir, format_table(self.manifest["iterations"]))
        return self.manifest

    def _save_manifest(self) -> None:
        self.manifest["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.processes.main_writes(write_manifest, self.run_dir, self.manifest)

    def _adapter_of(self, iteration: int) -> Path | None:
        """Where M_iteration's adapter lives (None for M0)."""
        relative = self.manifest["iterations"][iteration].get("adapter")
        return run_file(self.run_dir, relative) if relative else None

    def _seed(self, iteration: int, step: str, chunk: int = 0) -> int:
        return derived_seed(self.config.seed, iteration, step, chunk)

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.run_dir).as_posix()

    # ----------------------------------------------------------------- one iteration

    def _run_iteration(self, iteration: int) -> None:
        config = self.config
        directory = iteration_dir(self.run_dir, iteration)
        previous_adapter = self._adapter_of(iteration - 1)
        started = time.monotonic()
        reset_peak_rss()
        logger.info("Iteration %d/%d (%s)", iteration, config.iterations, config.variant_name)

        initial_path = self._initial_answers(iteration, previous_adapter)
        train_path = directory / TRAIN_DATA
        if config.method == "star":
            train_rows, extra = self._star_data(read_parquet(initial_path), train_path)
        else:
            train_rows, extra = self._stasc_data(initial_path, train_path, iteration, previous_adapter)

        training: dict[str, Any] | None = None
        if len(train_rows) == 0:
            message = (
                f"Iteration {iteration}: nothing was kept to train on (out of {extra['train']['pairs']} "
                f"{'answers' if config.method == 'star' else 'corrections'}); M_{iteration} is M_{iteration - 1} "
                "carried forward."
            )
            logger.warning(message)
            extra["warnings"].append(message)
            adapter = previous_adapter
        else:
            adapter = directory / ADAPTER
            training = self._train(train_rows, iteration, previous_adapter, adapter)
        extra.update(
            initial_answers=self._relative(initial_path), train_data=self._relative(train_path),
            kept_examples=len(train_rows), training=training,
        )
        evaluation = self._evaluate_iteration(iteration, adapter)
        extra["seconds"] = round(time.monotonic() - started, 1)
        self._record(iteration, evaluation, adapter, extra)

    def _stasc_data(
        self, initial_path: Path, train_path: Path, iteration: int, previous_adapter: Path | None
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Steps 2 and 3 of STaSC: corrections (and extra fixes), the filter, the training rows."""
        config = self.config
        directory = train_path.parent
        corrections_path = directory / CORRECTIONS
        rationalizations_path = directory / RATIONALIZATIONS
        if self.processes.exists(corrections_path):
            corrections = read_parquet(corrections_path)
        else:
            corrections = self._corrections(read_parquet(initial_path), iteration, previous_adapter)
        rationalizations = None
        if config.rationalize and self.processes.exists(rationalizations_path):
            rationalizations = read_parquet(rationalizations_path)
        elif config.rationalize:
            rationalizations = self._rationalizations(corrections, iteration, previous_adapter)
            self._write_step(rationalizations_path, rationalizations)
        own_fixes = self._own_answer_fixes(corrections, iteration) if config.own_answer_fixes else None
        extra_fixes = {"rationalization": rationalizations, "own_answer": own_fixes}
        if "kept" not in corrections:
            corrections["kept"] = self._filter(corrections, extra_fixes, iteration)
            self._write_step(corrections_path, corrections)
        if not self.processes.exists(train_path):
            self.processes.main_writes(write_parquet, train_path, self._training_rows(corrections, extra_fixes))
        train_rows = read_parquet(train_path)

        transitions = count_transitions(zip(corrections["initial_reward"], corrections["correction_reward"], strict=True))
        train_stats = {
            "pairs": len(corrections),
            "kept_examples": len(train_rows),
            "train_initial_accuracy": float(corrections["initial_reward"].mean()) if len(corrections) else 0.0,
            "train_correction_accuracy": float(corrections["correction_reward"].mean()) if len(corrections) else 0.0,
            "train_transitions": transitions.counts(),
            "kept_transitions": count_transitions(
                zip(train_rows["initial_reward"], train_rows["correction_reward"], strict=True)
            ).counts(),
        }
        extra: dict[str, Any] = {"corrections": self._relative(corrections_path), "train": train_stats, "warnings": []}
        if rationalizations is not None:
            extra["rationalizations"] = self._relative(rationalizations_path)
            train_stats["rationalized"] = int(rationalizations["kept"].sum()) if len(rationalizations) else 0
            train_stats["rationalization_attempts"] = len(rationalizations)
        if own_fixes is not None:
            train_stats["own_answer_fixes"] = len(own_fixes)
        return train_rows, extra

    def _star_data(self, initial: pd.DataFrame, train_path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
        """--method star: the right initial answers, each trained on as the answer to its question (no
        correction turn), as STaR fine-tunes on its own correct answers."""
        if not self.processes.exists(train_path):
            kept = initial[initial["initial_reward"] == 1].reset_index(drop=True)
            kept["messages"] = [
                answer_messages(row.question, row.initial_answer, self.config.instructions) for row in kept.itertuples()
            ]
            if kept.empty:
                kept["messages"] = pd.Series([], dtype=object)
            self.processes.main_writes(write_parquet, train_path, kept)
        train_rows = read_parquet(train_path)
        train_stats = {
            "pairs": len(initial),
            "kept_examples": len(train_rows),
            "train_initial_accuracy": float(initial["initial_reward"].mean()) if len(initial) else 0.0,
        }
        return train_rows, {"train": train_stats, "warnings": []}

    def _sample_rows(
        self,
        destination: Path,
        prompts: Sequence[Sequence[Message]],
        num_samples: int,
        make_rows: Callable[[int, list[str]], list[dict[str, Any]]],
        *,
        adapter: Path | None,
        iteration: int,
        step: str,
        desc: str,
        temperature: float | None = None,
    ) -> pd.DataFrame:
        """num_samples samples of every prompt, turned into table rows by make_rows(prompt index, samples).

        Prompts are sampled --sampling-chunk-size at a time and each chunk's rows are written to
        DESTINATION.parts/ before the next chunk starts, and what the sampler freed goes back to the system,
        so the sampler's memory does not grow with the number of prompts and a resumed step redoes at most one
        chunk. The parts are removed once the
        caller has written the step's own file.
        """
        parts = destination.parent / f"{destination.stem}.parts"
        chunk = self.config.sampling_chunk_size
        frames = []
        with progress(desc, len(prompts) * num_samples, "answer") as bar:  # one bar for all chunks
            for number, start in enumerate(range(0, len(prompts), chunk)):
                part = parts / f"chunk-{number:05d}.parquet"
                if self.processes.exists(part):
                    bar.update(len(prompts[start : start + chunk]) * num_samples)
                else:
                    samples = self.sampler.sample(
                        prompts[start : start + chunk], num_samples, adapter=adapter,
                        seed=self._seed(iteration, step, number), desc=desc, temperature=temperature,
                    )
                    release_freed_memory()
                    rows = [row for offset, texts in enumerate(samples) for row in make_rows(start + offset, texts)]
                    self.processes.main_writes(write_parquet, part, pd.DataFrame(rows))
                frames.append(read_parquet(part))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _remove_parts(self, destination: Path) -> None:
        parts = destination.parent / f"{destination.stem}.parts"
        if self.processes.is_main:
            shutil.rmtree(parts, ignore_errors=True)

    def _write_step(self, destination: Path, rows: pd.DataFrame) -> None:
        """Write a sampling step's table, then drop the chunks it was assembled from."""
        self.processes.main_writes(write_parquet, destination, rows)
        self._remove_parts(destination)

    def _initial_answers(self, iteration: int, previous_adapter: Path | None) -> Path:
        """Step 1; with fixed initialization, iteration 1's answers from M0 are reused."""
        if self.config.initialization == "fixed" and iteration > 1:
            return iteration_dir(self.run_dir, 1) / INITIAL_ANSWERS
        path = iteration_dir(self.run_dir, iteration) / INITIAL_ANSWERS
        if self.processes.exists(path):
            return path
        adapter = None if self.config.initialization == "fixed" else previous_adapter
        prompts = [initial_messages(example.question, self.config.instructions) for example in self.train]

        def rows_of(position: int, answers: list[str]) -> list[dict[str, Any]]:
            example = self.train[position]
            return [
                {
                    "question_id": example.id,
                    "question": example.question,
                    "answers": list(example.answers),
                    "initial_index": index,
                    "initial_answer": answer,
                    "initial_reward": self._reward(answer, example.answers),
                }
                for index, answer in enumerate(answers)
            ]

        rows = self._sample_rows(
            path, prompts, self.config.n_init, rows_of, adapter=adapter, iteration=iteration, step="initial",
            desc=f"iter {iteration} initial answers",
        )
        self._write_step(path, rows)
        return path

    def _corrections(self, initial: pd.DataFrame, iteration: int, previous_adapter: Path | None) -> pd.DataFrame:
        """Step 2: N_corr corrections per initial answer from M_(n-1), each paired with its answer."""
        config = self.config
        records = initial.to_dict("records")
        prompts = [
            correction_messages(row["question"], row["initial_answer"], config.instructions, config.correction_instructions)
            for row in records
        ]

        def rows_of(position: int, corrections: list[str]) -> list[dict[str, Any]]:
            row = records[position]
            return [
                {
                    **row,
                    "correction_index": index,
                    "correction": correction,
                    "correction_reward": self._reward(correction, row["answers"]),
                }
                for index, correction in enumerate(corrections)
            ]

        path = iteration_dir(self.run_dir, iteration) / CORRECTIONS
        return self._sample_rows(
            path, prompts, config.n_corr, rows_of, adapter=previous_adapter, iteration=iteration,
            step="corrections", desc=f"iter {iteration} corrections",
        )

    def _rationalizations(
        self, corrections: pd.DataFrame, iteration: int, previous_adapter: Path | None
    ) -> pd.DataFrame:
        """Step 2b (--rationalize): for each wrong initial answer that none of its corrections fixed, one
        correction sampled with the reference answer as a hint; kept when right and not about the hint."""
        config = self.config
        unfixed = corrections.groupby(["question_id", "initial_index"], sort=False).filter(
            lambda pairs: pairs["initial_reward"].iloc[0] == 0 and pairs["correction_reward"].max() == 0
        )
        records = (
            unfixed.drop_duplicates(["question_id", "initial_index"])
            .drop(columns=["correction_index", "correction", "correction_reward"])
            .to_dict("records")
        )
        prompts = [
            hinted_correction_messages(
                row["question"], row["initial_answer"], config.instructions, config.correction_instructions,
                config.rationalization_hint, str(row["answers"][0]),
            )
            for row in records
        ]

        def rows_of(position: int, corrections: list[str]) -> list[dict[str, Any]]:
            row = records[position]
            rows = []
            for correction in corrections:
                reward = self._reward(correction, row["answers"])
                rows.append(
                    {**row, "correction": correction, "correction_reward": reward,
                     "kept": bool(reward == 1 and not mentions_hint(correction))}
                )
            return rows

        path = iteration_dir(self.run_dir, iteration) / RATIONALIZATIONS
        rows = self._sample_rows(
            path, prompts, 1, rows_of, adapter=previous_adapter, iteration=iteration, step="rationalizations",
            desc=f"iter {iteration} rationalizations",
        )
        if rows.empty:
            rows = pd.DataFrame(columns=[*initial_columns(corrections), "correction", "correction_reward", "kept"])
        return rows

    def _own_answer_fixes(self, corrections: pd.DataFrame, iteration: int) -> pd.DataFrame:
        """Step 2c (--own-answer-fixes): for each wrong initial answer that no correction fixed, one of the
        model's own right answers to the same question as its correction (kept, like a rationalization)."""
        attempts = corrections.drop_duplicates(["question_id", "initial_index"])
        outputs = pd.concat(
            [
                attempts[["question_id", "initial_index", "initial_reward"]].assign(
                    output=attempts["initial_answer"], output_reward=attempts["initial_reward"]),
                corrections[["question_id", "initial_index", "initial_reward"]].assign(
                    output=corrections["correction"], output_reward=corrections["correction_reward"]),
            ],
            ignore_index=True,
        )
        fixes = own_answer_fixes(
            list(outputs["question_id"]), [int(index) for index in outputs["initial_index"]],
            [int(reward) for reward in outputs["initial_reward"]], list(outputs["output"]),
            [int(reward) for reward in outputs["output_reward"]], seed=self._seed(iteration, "own_answer_fixes"),
        )
        columns = initial_columns(corrections)
        rows = [
            {**row, "correction": fixes[(row["question_id"], int(row["initial_index"]))], "correction_reward": 1,
             "kept": True}
            for row in attempts[columns].to_dict("records")
            if (row["question_id"], int(row["initial_index"])) in fixes
        ]
        return pd.DataFrame(rows, columns=[*columns, "correction", "correction_reward", "kept"])

    def _filter(self, corrections: pd.DataFrame, extra_fixes: dict[str, pd.DataFrame | None], iteration: int) -> list[bool]:
        """Step 3: the filter's decision for every correction (rationalizations and own-answer fixes count
        as wrong-to-right pairs for the balanced filter)."""
        return kept_pairs(
            list(corrections["initial_reward"]), list(corrections["correction_reward"]),
            list(corrections["question_id"]), self.config.filter,  # type: ignore[arg-type]
            keep_ratio=self.config.keep_ratio,
            extra_fixes=sum(int(rows["kept"].sum()) for rows in extra_fixes.values() if rows is not None),
            seed=self._seed(iteration, "filter"),
        )

    def _training_rows(self, corrections: pd.DataFrame, extra_fixes: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
        """Step 3: the kept pairs, each with the whole conversation it is trained on (a rationalization
        under the plain correction request, without its hint); `source` says where each came from."""
        kept = corrections[corrections["kept"]].drop(columns=["kept"]).assign(source="correction")
        for source, rows in extra_fixes.items():
            if rows is not None and len(rows):
                chosen = rows[rows["kept"].astype(bool)].drop(columns=["kept"])
                kept = pd.concat([kept, chosen.assign(source=source)], ignore_index=True)
        kept = kept.reset_index(drop=True)
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
            report = asdict(train_adapter(
                trainee, conversations, self.config, seed=self._seed(iteration, "train"), desc=f"iter {iteration} training"
            ))
        release_freed_memory()  # the Trainer, its optimizer and the batches' activations
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
        """Step 5: --eval-samples initial answers per held-out question, each with one correction, at the
        evaluation temperature. With fixed initialization the initial answers are M0's, from iteration 0."""
        path = iteration_dir(self.run_dir, iteration) / EVALUATION
        if self.processes.exists(path):
            return read_parquet(path)
        config = self.config
        temperature = config.evaluation_temperature
        if config.initialization == "fixed" and iteration > 0:
            base = read_parquet(iteration_dir(self.run_dir, 0) / EVALUATION)
            if "sample_index" not in base:  # evaluated before --eval-samples existed: one sample per question
                base["sample_index"] = 0
            initial = base[["question_id", "question", "answers", "sample_index", "initial_answer"]]
        else:
            def initial_rows(position: int, answers: list[str]) -> list[dict[str, Any]]:
                example = self.test[position]
                return [
                    {"question_id": example.id, "question": example.question, "answers": list(example.answers),
                     "sample_index": index, "initial_answer": answer}
                    for index, answer in enumerate(answers)
                ]

            prompts = [initial_messages(example.question, config.instructions) for example in self.test]
            initial = self._sample_rows(
                path.with_name("evaluation_initial.parquet"), prompts, config.eval_samples, initial_rows,
                adapter=adapter, iteration=iteration, step="eval_initial", desc=f"iter {iteration} eval initial",
                temperature=temperature,
            )
        records = initial.to_dict("records")
        prompts = [
            correction_messages(row["question"], row["initial_answer"], config.instructions, config.correction_instructions)
            for row in records
        ]

        def evaluated_rows(position: int, corrections: list[str]) -> list[dict[str, Any]]:
            row, correction = records[position], corrections[0]
            return [
                {
                    **row,
                    "correction": correction,
                    "initial_in_acc": self._in_acc(row["initial_answer"], row["answers"]),
                    "correction_in_acc": self._in_acc(correction, row["answers"]),
                    "initial_reward": self._reward(row["initial_answer"], row["answers"]),
                    "correction_reward": self._reward(correction, row["answers"]),
                }
            ]

        rows = self._sample_rows(
            path.with_name("evaluation_round1.parquet"), prompts, 1, evaluated_rows, adapter=adapter,
            iteration=iteration, step="eval_corrections", desc=f"iter {iteration} eval corrections",
            temperature=temperature,
        )
        for round_number in range(2, config.eval_rounds + 1):
            rows = self._refine(rows, round_number, adapter, iteration)
        self.processes.main_writes(write_parquet, path, rows)
        for name in ["initial", *(f"round{number}" for number in range(1, config.eval_rounds + 1))]:
            self._remove_parts(path.with_name(f"evaluation_{name}.parquet"))
        return rows

    def _refine(self, rows: pd.DataFrame, round_number: int, adapter: Path | None, iteration: int) -> pd.DataFrame:
        """Evaluation round 2.. (--eval-rounds): the model corrects its previous correction once more; adds the
        columns correction_R, correction_R_in_acc and correction_R_reward."""
        config = self.config
        earlier = ["correction"] + [f"correction_{number}" for number in range(2, round_number)]
        records = rows.to_dict("records")
        prompts = [
            refinement_messages(
                row["question"], [row["initial_answer"], *(row[column] for column in earlier)],
                config.instructions, config.correction_instructions,
            )
            for row in records
        ]

        def refined_rows(position: int, corrections: list[str]) -> list[dict[str, Any]]:
            row, correction = records[position], corrections[0]
            return [{
                **row,
                f"correction_{round_number}": correction,
                f"correction_{round_number}_in_acc": self._in_acc(correction, row["answers"]),
                f"correction_{round_number}_reward": self._reward(correction, row["answers"]),
            }]

        return self._sample_rows(
            iteration_dir(self.run_dir, iteration) / f"evaluation_round{round_number}.parquet", prompts, 1,
            refined_rows, adapter=adapter, iteration=iteration, step=f"eval_round{round_number}",
            desc=f"iter {iteration} eval round {round_number}", temperature=config.evaluation_temperature,
        )

    def _record(self, iteration: int, evaluation: pd.DataFrame, adapter: Path | None, extra: dict[str, Any]) -> None:
        """Append a finished iteration to the manifest (the moment it counts as done)."""
        turns = ["initial_in_acc", "correction_in_acc"] + [
            f"correction_{number}_in_acc" for number in range(2, self.config.eval_rounds + 1)
        ]
        metrics, intervals = round_metrics(
            list(evaluation["question_id"]), [list(evaluation[column]) for column in turns],
            seed=self.config.seed % SEED_RANGE,
        )
        metrics["initial_reward"] = float(evaluation["initial_reward"].mean()) if len(evaluation) else 0.0
        metrics["correction_reward"] = float(evaluation["correction_reward"].mean()) if len(evaluation) else 0.0
        entry = {
            "iteration": iteration,
            "metrics": metrics,
            "intervals": intervals,
            "adapter": self._relative(adapter) if adapter else None,
            "evaluation": self._relative(iteration_dir(self.run_dir, iteration) / EVALUATION),
            **extra,
            "peak_rss_mb": peak_rss_mb(),
        }
        self.manifest["iterations"].append(entry)
        self._save_manifest()
        if self.on_iteration is not None:
            self.on_iteration(self.run_dir)
        logger.info(
            "Iteration %d: acc_t1 %.3f, acc_t2 %.3f, delta %+.3f [%+.3f, %+.3f], i->c %.3f, c->i %.3f, peak RSS %.0f MB",
            iteration, metrics["acc_t1"], metrics["acc_t2"], metrics["delta"], *intervals["delta"],
            metrics["i_to_c"], metrics["c_to_i"], entry["peak_rss_mb"],
        )

    def _reward(self, output: str, answers: Sequence[str]) -> int:
        return task_reward(self.config, output, answers)

    def _in_acc(self, output: str, answers: Sequence[str]) -> int:
        return task_accuracy(self.config, output, answers)


def remove_finished_parts(run_dir: Path) -> None:
    """Delete the chunks of sampling steps whose own file was written (a run killed in between leaves them)."""
    for parts in run_dir.glob("iteration_*/*.parts"):
        finished = parts.with_suffix(".parquet")
        if parts.stem.startswith("evaluation_"):  # the initial answers and each round of the evaluation
            finished = parts.with_name(EVALUATION)
        if finished.exists():
            shutil.rmtree(parts, ignore_errors=True)


def forget_deleted_iterations(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Drop the entries of iterations whose directory was deleted (the way to redo a damaged one), so that
    they are run again; refused while a later iteration, built on a deleted one, is still there."""
    entries = manifest["iterations"]
    gone = next((entry["iteration"] for entry in entries if not iteration_dir(run_dir, entry["iteration"]).is_dir()), None)
    if gone is None:
        return
    later = sorted(
        path.name for path in run_dir.glob("iteration_*")
        if path.is_dir() and path.name.split("_")[-1].isdigit() and int(path.name.split("_")[-1]) > gone
    )
    if later:
        raise StascError(
            f"{iteration_dir(run_dir, gone)} was deleted, but the later iterations built on it are still there "
            f"({', '.join(later)}). Delete them too and rerun the same command: iterations {gone} and later are "
            "then redone."
        )
    logger.warning(
        "%s was deleted: iterations %d..%d are redone", iteration_dir(run_dir, gone), gone, entries[-1]["iteration"]
    )
    del entries[gone:]
    manifest["status"] = "running"


def initial_columns(corrections: pd.DataFrame) -> list[str]:
    """The columns a corrections table carries over from its initial answers."""
    return [name for name in corrections.columns if name not in ("correction_index", "correction", "correction_reward", "kept")]


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


BEFORE_THE_SETTING = {"own_answer_fixes": False}


def check_resumable(saved: dict[str, Any], config: StascConfig, run_dir: Path) -> None:
    """Refuse to continue a run with settings that would change its results."""
    current = config.to_dict()
    # A setting newer than the run has the value the run was made with: its default, or what the run did
    # before the setting existed where the default has changed since.
    defaults = {**StascConfig().to_dict(), **BEFORE_THE_SETTING}
    changed = [
        f"{name} was {saved.get(name, defaults[name])!r}, now {value!r}"
        for name, value in current.items()
        if name not in RESUMABLE_CHANGES and saved.get(name, defaults[name]) != value
    ]
    if changed:
        raise StascError(
            f"{run_dir} holds a run with different settings ({'; '.join(changed)}). Re-run with the "
            "same settings to resume it (only --iterations may grow), or choose a new --output-dir."
        )
