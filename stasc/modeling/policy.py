"""One base model in memory with one LoRA slot that holds whichever iteration is needed.

Every STaSC model M_n is the base model M0 plus iteration n's adapter, so switching
between M0, M_(n-1) and M_n is a matter of loading a few MB of adapter weights into the
slot (or bypassing it), never reloading the base model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from stasc.errors import StascError

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
REDO = (
    "Delete that iteration's directory, and those of the iterations after it, then rerun the same command: "
    "those iterations are redone."
)


class Policy:
    """The base model, its tokenizer, and the LoRA adapter currently loaded into it."""

    def __init__(
        self,
        base_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        lora_config: LoraConfig,
        *,
        seed: int,
    ) -> None:
        torch.manual_seed(seed)
        self.tokenizer = tokenizer
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in base_model.named_modules()
                         if isinstance(module, torch.nn.Linear)})
        try:
            self.model: PeftModel = get_peft_model(base_model, lora_config)
        except ValueError:  # peft: no module matches the target names
            targets = lora_config.target_modules
            named = targets if isinstance(targets, str) else " ".join(sorted(targets or []))
            raise StascError(
                f"--lora-target-modules {named} matches no layer of the model. Use all-linear, or some of its "
                f"linear layers: {' '.join(linear)}."
            ) from None
        adapter_config = self.model.peft_config[self.model.active_adapter]
        if isinstance(adapter_config.target_modules, set):  # a set's order changes between processes
            adapter_config.target_modules = sorted(adapter_config.target_modules)  # same adapter_config.json
        self.model.eval()
        self._fresh_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}
        self.loaded_adapter: Path | None = None
        self.use_base = True

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def activate(self, adapter_dir: Path | None) -> None:
        """Make M0 (None) or base + the adapter saved in adapter_dir the model that generates."""
        if adapter_dir is None:
            self.use_base = True
            return
        adapter_dir = Path(adapter_dir)
        if self.loaded_adapter != adapter_dir.resolve():
            self.load_adapter_weights(adapter_dir)
        self.use_base = False

    def load_adapter_weights(self, adapter_dir: Path) -> None:
        """Copy a saved adapter's weights into the slot, checking that the file is whole."""
        weights = Path(adapter_dir) / ADAPTER_WEIGHTS
        if not weights.is_file() or not (Path(adapter_dir) / ADAPTER_CONFIG).is_file():
            raise StascError(
                f"Adapter {adapter_dir} is incomplete (missing {ADAPTER_WEIGHTS} or {ADAPTER_CONFIG}). {REDO}"
            )
        try:
            state = load_file(str(weights), device=str(self.device))
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise StascError(
                f"Adapter {weights} cannot be read ({error}). {REDO}"
            ) from None
        result = set_peft_model_state_dict(self.model, state)
        missing = [key for key in result.missing_keys if "lora_" in key]
        if missing or result.unexpected_keys:
            raise StascError(
                f"Adapter {adapter_dir} does not match this run's model and LoRA settings "
                f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected tensors)."
            )
        self.loaded_adapter = Path(adapter_dir).resolve()

    def reset_adapter(self) -> None:
        """Put the freshly initialised LoRA weights back (fixed fine-tuning starts here)."""
        set_peft_model_state_dict(self.model, self._fresh_state)
        self.loaded_adapter = None

    def mark_trained(self) -> None:
        """The slot now holds weights produced in memory by training, not a file."""
        self.loaded_adapter = None
        self.use_base = False

    @contextlib.contextmanager
    def generating(self) -> Iterator[torch.nn.Module]:
        """The model to call generate on, with the adapter bypassed when M0 is active."""
        self.model.eval()
        if self.use_base:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.model

    def save_adapter(self, directory: Path) -> None:
        """Write the adapter in PEFT's format (PeftModel.from_pretrained loads it)."""
        self.model.save_pretrained(str(directory))
