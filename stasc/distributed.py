"""Running the loop on several GPUs with `accelerate launch train.py ...`.

Every launched process runs the whole loop over the same run directory, in step:
- sampling is split: each process (or each group of tensor_parallel_size processes sharing one
  vLLM engine) samples its share of the prompts on its own GPU, and every process receives all
  the answers, so generation, the step that dominates a run, scales with the GPUs;
- fine-tuning runs on every process with the strategy of the accelerate config (DDP, FSDP or
  DeepSpeed ZeRO-3, see configs/accelerate/), since transformers' Trainer reads it from the
  environment that `accelerate launch` sets;
- only the main process writes files; the others wait at a barrier after each write, so that
  every process then sees the same files and takes the same path through the resumable steps.
The run directory must be on a file system every process sees (always true on one machine).
In a plain `python train.py` run there is one process and all of this does nothing.
"""

from __future__ import annotations

import contextlib
import copy
import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from stasc.modeling.policy import Policy


class Processes:
    """The processes `accelerate launch` started (one in a plain run), and how they take turns.

    count and index are read once: transformers' TrainingArguments resets accelerate's shared
    state whenever it is built, so the live PartialState is not a stable place to ask later.
    """

    def __init__(self, count: int = 1, index: int = 0) -> None:
        self.count = count
        self.index = index

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def shards_parameters(self) -> bool:
        """Whether training shards the model it is given in place (FSDP, DeepSpeed), making it unusable after."""
        return parse_flag_from_env("ACCELERATE_USE_FSDP") or parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")

    def barrier(self) -> None:
        if self.count == 1:
            return
        if torch.distributed.get_backend() == "nccl":
            torch.distributed.barrier(device_ids=[torch.cuda.current_device()])
        else:
            torch.distributed.barrier()

    def exists(self, path: Path) -> bool:
        """Whether path exists as the main process sees it, the same answer on every process.

        Every process asks at the same point, so none can see a file the main process wrote
        after the others had already decided to make it.
        """
        return bool(self.from_main(path.exists))

    def from_main(self, compute: Callable[[], Any]) -> Any:
        """compute() as the main process returns it, on every process (only the main one calls it)."""
        if self.count == 1:
            return compute()
        answer = [compute() if self.is_main else None]
        torch.distributed.broadcast_object_list(answer, src=0)
        return answer[0]

    def main_writes(self, write: Callable[..., None], *args: Any) -> None:
        """write(*args) on the main process; every process returns once it is done."""
        if self.is_main:
            write(*args)
        self.barrier()

    def gather(self, items: list[Any]) -> list[Any]:
        """Every process's items, concatenated in process order, on every process."""
        if self.count == 1:
            return items
        parts: list[list[Any] | None] = [None] * self.count
        torch.distributed.all_gather_object(parts, items)
        return [item for part in parts for item in part or []]

    @contextlib.contextmanager
    def trainable(self, policy: Policy) -> Iterator[Policy]:
        """The policy to fine-tune in place: the policy itself, or a copy when training shards it.

        FSDP and DeepSpeed ZeRO-3 shard the parameters of the model they train in place, after
        which it can neither generate nor load another adapter. They train a copy instead; its
        trained adapter is gathered whole into the policy and the copy is freed.
        """
        if not self.shards_parameters:
            yield policy
            return
        replica = copy.copy(policy)
        replica.model = copy.deepcopy(policy.model)
        try:
            yield replica
            set_peft_model_state_dict(policy.model, full_adapter_state(replica.model))
            policy.mark_trained()
        finally:
            del replica.model  # the caller's name for the copy must not keep its weights on the GPU
            gc.collect()
            torch.cuda.empty_cache()


def current_processes() -> Processes:
    """This process's place among the launched ones; initialises the process group on first use.

    Called before the model is loaded, so each process's "cuda" is its own GPU. Without a GPU
    the processes are CPU processes joined with gloo.
    """
    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.num_processes, state.process_index)


def full_adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole LoRA weights of a model, gathered from every process when FSDP or ZeRO-3 sharded them.

    Every process must call this (the gathers are collective).
    """
    lora = [parameter for name, parameter in model.named_parameters() if "lora_" in name]
    with _zero3_gathered(lora):
        state = get_peft_model_state_dict(model)
        return {name: _whole(tensor).detach().to("cpu", copy=True) for name, tensor in state.items()}


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """An FSDP2 shard (a DTensor) as the full tensor; anything else as it is."""
    full_tensor = getattr(tensor, "full_tensor", None)
    return full_tensor() if callable(full_tensor) else tensor


def _zero3_gathered(parameters: list[torch.nn.Parameter]) -> contextlib.AbstractContextManager[Any]:
    """DeepSpeed ZeRO-3 partitions parameters (marking them with ds_id); gather them for reading."""
    if not any(hasattr(parameter, "ds_id") for parameter in parameters):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(parameters, modifier_rank=None)
