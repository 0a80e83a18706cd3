"""stasc's CUDA path on one NVIDIA GPU, offline, in a few minutes: one JSON report of what ran and how fast.

    python bench/gpu_check.py                                   # on the GPU machine; writes bench/gpu_check.json
    python bench/gpu_check.py --device cpu --out /tmp/check.json   # the same steps, small, on a CPU

Steps (each is recorded on its own; a failing step is reported with its error and the others still run):
1. for models built from config at the shapes of SmolLM2-135M and Qwen2.5-1.5B (random weights: speed does not
   depend on them; with --device cpu, 2 layers and a quarter of the width and a 4,096-word vocabulary), the
   transformers backend samples answers (tokens/s, peak memory) and LoRA training fine-tunes the adapter on
   correction conversations (tokens/s, peak memory);
2. one full STaSC iteration of a tiny model through `train.py` (iteration 0's evaluation, sampling, filtering,
   fine-tuning, evaluation), as a separate process on the same device.

Nothing is downloaded: the tokenizer is a word-level one built here with each shape's vocabulary size and a
ChatML template. Needs torch, transformers, peft and accelerate (a stock CUDA PyTorch image) and stasc's own
files (run it from the repository, installed or not); no vllm, datasets, gradio or math-verify. The iteration
also needs pandas and pyarrow (a run's files); without them it is reported as skipped. Exits 1 if a step failed.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peft import LoraConfig  # noqa: E402

from stasc.config import StascConfig, SuggestingParser  # noqa: E402
from stasc.core.prompts import initial_messages, training_messages  # noqa: E402
from stasc.modeling.policy import Policy  # noqa: E402
from stasc.run.memory import peak_rss_mb, reset_peak_rss  # noqa: E402
from stasc.sampling.transformers import PolicySampler, SamplingSettings  # noqa: E402
from stasc.training.lora import build_training_dataset, train_adapter  # noqa: E402

logger = logging.getLogger("gpu_check")

# The published configs of the two models (their config.json files), without the weights.
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "smollm2-135m": ("llama", {
        "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    }),
    "qwen2.5-1.5b": ("qwen2", {
        "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
        "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
    }),
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CITIES = ("Paris", "London", "Rome")
REQUIRED = ("torch", "transformers", "peft", "accelerate")
FOR_THE_ITERATION = ("pandas", "pyarrow")
ABSENT_IN_A_STOCK_IMAGE = ("vllm", "datasets", "gradio", "math_verify")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each measurement does on this device."""

    prompts: int
    samples: int
    new_tokens: int
    conversations: int
    batch: int

    @staticmethod
    def for_device(device: str) -> Sizes:
        if device == "cuda":
            return Sizes(prompts=64, samples=4, new_tokens=64, conversations=64, batch=8)
        return Sizes(prompts=4, samples=2, new_tokens=8, conversations=8, batch=4)


def shape(name: str, device: str) -> tuple[str, dict[str, Any]]:
    """The model type and config of a named shape; small on a CPU (2 layers, a quarter of the width)."""
    model_type, settings = SHAPES[name]
    if device == "cuda":
        return model_type, dict(settings)
    return model_type, {
        **settings, "num_hidden_layers": 2, "hidden_size": settings["hidden_size"] // 4,
        "intermediate_size": settings["intermediate_size"] // 4, "vocab_size": 4096,
    }


def word_tokenizer(vocab_size: int, words: tuple[str, ...] = ()) -> Any:
    """A word-level tokenizer with exactly vocab_size entries (the special tokens, `words`, then w0, w1, ...)
    and a ChatML template: enough for the sampler and the trainer, built without any download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    entries = [*SPECIAL_TOKENS, *words]
    entries += [f"w{index}" for index in range(vocab_size - len(entries))]
    vocabulary = {word: index for index, word in enumerate(entries)}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    tokenizer.padding_side = "left"
    return tokenizer


def build_model(model_type: str, settings: dict[str, Any], device: str, dtype: torch.dtype) -> Any:
    """A model of this shape with random weights, made directly on the device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, bos_token_id=None, eos_token_id=2, pad_token_id=2, **settings)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def questions(count: int) -> list[str]:
    """Synthetic questions of 12 words (prompts of about 40 tokens with the template and instructions)."""
    return [" ".join(f"w{(index * 13 + word) % 3000}" for word in range(12)) + " ?" for index in range(count)]


@contextmanager
def peak_memory(device: str) -> Iterator[dict[str, float]]:
    """Peak memory of the block: the GPU's allocated memory on cuda, the process's resident memory on a CPU."""
    result: dict[str, float] = {}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    yield result
    if device == "cuda":
        torch.cuda.synchronize()
        result["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        result["peak_rss_mb"] = peak_rss_mb()


def measure_sampling(policy: Policy, sizes: Sizes, config: StascConfig, device: str) -> dict[str, Any]:
    """The transformers backend drawing sizes.samples answers to each prompt (top-p 1: random weights give
    near-uniform distributions, whose nucleus a trained model's would not have)."""
    settings = SamplingSettings(sizes.new_tokens, 1.0, 1.0, sizes.prompts * sizes.samples)
    sampler = PolicySampler(policy, settings)
    prompts = [initial_messages(question, config.instructions) for question in questions(sizes.prompts)]
    sampler.sample(prompts[:2], 1, adapter=None, seed=1, desc="warm-up")
    with peak_memory(device) as memory:
        start = time.perf_counter()
        answers = sampler.sample(prompts, sizes.samples, adapter=None, seed=0, desc="sampling")
        seconds = time.perf_counter() - start
    tokens = sum(len(policy.tokenizer(text, add_special_tokens=False)["input_ids"]) for row in answers for text in row)
    return {
        "sequences": sizes.prompts * sizes.samples, "new_tokens": tokens, "max_new_tokens": sizes.new_tokens,
        "seconds": round(seconds, 3), "tokens_per_second": round(tokens / seconds, 1), **memory,
    }


def measure_training(policy: Policy, sizes: Sizes, config: StascConfig, device: str) -> dict[str, Any]:
    """LoRA training (stasc's trainer) on sizes.conversations correction conversations, one epoch."""
    words = questions(sizes.conversations * 3)
    conversations = [
        training_messages(words[3 * index], words[3 * index + 1], words[3 * index + 2],
                          config.instructions, config.correction_instructions)
        for index in range(sizes.conversations)
    ]
    training = dataclasses.replace(config, train_batch_size=sizes.batch, gradient_accumulation_steps=1)
    rows, _ = build_training_dataset(policy, conversations, training.max_seq_length)
    tokens = sum(len(row["input_ids"]) for row in rows)
    with peak_memory(device) as memory:
        report = train_adapter(policy, conversations, training, seed=0)
    return {
        "examples": report.examples, "steps": report.steps, "tokens": tokens,
        "supervised_tokens": report.supervised_tokens, "loss": round(report.train_loss, 4),
        "seconds": round(report.seconds, 3), "tokens_per_second": round(tokens / report.seconds, 1), **memory,
    }


def check_shape(name: str, device: str, sizes: Sizes) -> dict[str, Any]:
    """Sampling and training with a random model of one shape."""
    model_type, settings = shape(name, device)
    dtype = torch.bfloat16
    config = StascConfig(dtype="bfloat16")
    tokenizer = word_tokenizer(settings["vocab_size"])
    model = build_model(model_type, settings, device, dtype)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    # the loop's adapter (stasc.run.loop.lora_config, not imported: the loop needs pandas and pyarrow)
    adapter = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                         target_modules="all-linear", task_type="CAUSAL_LM")
    policy = Policy(model, tokenizer, adapter, seed=0)
    result: dict[str, Any] = {"model_type": model_type, "config": settings, "parameters": parameters,
                              "dtype": str(dtype).removeprefix("torch.")}
    result["sampling"] = measure_sampling(policy, sizes, config, device)
    result["training"] = measure_training(policy, sizes, config, device)
    del policy, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def tiny_model_dir(directory: Path) -> Path:
    """A 2-layer random Llama whose generation may only say a few city names or end its turn, so the
    iteration's rewards come out mixed and fine-tuning has kept examples to train on."""
    from transformers import GenerationConfig

    tokenizer = word_tokenizer(64, CITIES)
    model = build_model("llama", {
        "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    }, "cpu", torch.float32)
    allowed = {tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(list(CITIES))}
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        suppress_tokens=[token for token in range(64) if token not in allowed],
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def check_iteration(device: str) -> dict[str, Any]:
    """`python train.py` for one iteration of the tiny model in its own process (stasc puts the model on the
    GPU whenever one is visible; on --device cpu the process is shown none)."""
    missing = [module for module in FOR_THE_ITERATION if importlib.util.find_spec(module) is None]
    if missing:
        return {"status": "skipped", "reason": f"a run's files need {', '.join(missing)}, not installed here"}
    with tempfile.TemporaryDirectory(prefix="stasc-gpu-check-") as scratch:
        directory = Path(scratch)
        model = tiny_model_dir(directory / "model")
        for split, count in (("train", 8), ("test", 4)):
            rows = [{"question": f"Which city is number {index} ?", "answers": [CITIES[index % 3]]}
                    for index in range(count)]
            (directory / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        run = directory / "run"
        command = [
            sys.executable, str(ROOT / "train.py"), "--model", str(model), "--dataset", str(directory / "train.jsonl"),
            "--test-dataset", str(directory / "test.jsonl"), "--output-dir", str(run), "--iterations", "1",
            "--n-init", "3", "--n-corr", "3", "--max-new-tokens", "4", "--train-batch-size", "4",
            "--learning-rate", "5e-3", "--variant", "EIE", "--log-level", "warning",
        ]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        if device == "cpu":
            environment["CUDA_VISIBLE_DEVICES"] = ""
        start = time.perf_counter()
        finished = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if finished.returncode != 0:
            raise RuntimeError(f"train.py exited with {finished.returncode}:\n{finished.stderr[-3000:]}")
        manifest = json.loads((run / "run.json").read_text())
        last = manifest["iterations"][-1]
        adapter = run / last["adapter"] / "adapter_model.safetensors"
        return {
            "status": manifest["status"], "iterations": [entry["iteration"] for entry in manifest["iterations"]],
            "kept_examples": last.get("kept_examples"), "training": last.get("training"),
            "adapter_bytes": adapter.stat().st_size, "metrics": last["metrics"], "seconds": round(seconds, 1),
        }


def environment(device: str) -> dict[str, Any]:
    """The device, and the version of each package that matters here (None: not importable)."""
    versions = {}
    for package in (*REQUIRED, *FOR_THE_ITERATION, *ABSENT_IN_A_STOCK_IMAGE):
        try:
            importable = importlib.util.find_spec(package) is not None
            versions[package] = importlib.metadata.version(package) if importable else None
        except (ImportError, importlib.metadata.PackageNotFoundError):
            versions[package] = None
    info: dict[str, Any] = {"python": platform.python_version(), "packages": versions, "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_mb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**20)
        info["cuda"] = torch.version.cuda
    return info


def run_step(report: dict[str, Any], key: str, step: Callable[[], dict[str, Any]]) -> None:
    """Run one step and record its result, or its error (the other steps still run)."""
    logger.info("step %s", key)
    try:
        report["steps"][key] = step()
    except Exception as error:  # noqa: BLE001 - a check reports every failure it meets
        report["steps"][key] = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                                "traceback": traceback.format_exc()[-4000:]}
        report["failures"].append(key)
        logger.error("step %s failed: %s", key, error)


def main(argv: list[str] | None = None) -> int:
    parser = SuggestingParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda: the check itself; cpu: the same steps, small (to test this script)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_check.json", help="JSON report to write")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES), help="model shapes to check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device is visible (torch.cuda.is_available() is False); use --device cpu to test "
                     "the script on a CPU")
    sizes = Sizes.for_device(args.device)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "check": "stasc gpu_check", "environment": environment(args.device), "sizes": dataclasses.asdict(sizes),
        "steps": {}, "failures": [],
    }
    for name in args.shapes:
        run_step(report, name, lambda name=name: check_shape(name, args.device, sizes))
    run_step(report, "iteration", lambda: check_iteration(args.device))
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    logger.info("report: %s (%.0f s, %d failed steps)", args.out, report["seconds"], len(report["failures"]))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
