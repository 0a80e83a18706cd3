"""The sampler a run asks for: its backend, shared out over the processes when there are several."""

from __future__ import annotations

from stasc.config import StascConfig
from stasc.distributed import current_processes
from stasc.modeling.policy import Policy
from stasc.sampling.base import Sampler
from stasc.sampling.sharded import ShardedSampler
from stasc.sampling.transformers import PolicySampler, SamplingSettings


def make_sampler(config: StascConfig, policy: Policy, model_path: str) -> Sampler:
    """The sampling backend the config asks for (check_backend has accepted it), shared out
    over the processes when `accelerate launch` started several."""
    processes = current_processes()
    sampler: Sampler
    if config.backend == "vllm":
        from stasc.sampling.vllm import VLLMSampler

        sampler = VLLMSampler(config, model_path, policy.tokenizer, launched=processes.count > 1)
        group_size = config.tensor_parallel_size
    else:
        settings = SamplingSettings(
            config.max_new_tokens, config.temperature, config.top_p, config.generation_batch_size
        )
        sampler = PolicySampler(policy, settings)
        group_size = 1
    return sampler if processes.count == 1 else ShardedSampler(sampler, processes, group_size)
