"""Attention for batched sampling on a CPU, with a prompt prefix every row shares kept once.

The rows of a sampling batch all start with the same system prompt and instructions. With a
plain KV cache those keys and values are copied into every row, and each decode step pays for
the copies three times: the cache grows by concatenation (the whole cache is copied), rows that
finish are dropped by indexing (copied again), and attention reads every row's copy. Here the
shared prefix stays one (heads, tokens, dim) block beside the per-row cache: its scores for
all rows come from one matrix product, and a single softmax runs over prefix and row scores
together, so the result is attention over the whole sequence (cascade attention).

The scores are computed as eager attention does, with the query heads of a key/value head
folded into one matrix product. For one new token per row this is also faster than the CPU
SDPA kernel at these widths (bench/generation.py times it).

Used by stasc.sampling.cpu_engine.decoding for models whose attention this reproduces exactly: full attention,
no logit soft-capping, no sliding window, no attention sinks; others keep their own attention.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

IMPLEMENTATION = "stasc_shared_prefix"


@dataclass(frozen=True)
class SharedPrefix:
    """Keys and values of the shared prefix, one (kv_heads, tokens, head_dim) pair per layer."""

    keys: Sequence[torch.Tensor]
    values: Sequence[torch.Tensor]

    @classmethod
    def from_cache(cls, cache) -> SharedPrefix:
        """From a one-row transformers cache that holds just the prefix."""
        return cls([layer.keys[0] for layer in cache.layers], [layer.values[0] for layer in cache.layers])


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    shared_prefix: SharedPrefix | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: queries (batch, heads, new, dim) over the shared prefix, then each row's keys."""
    unsupported = {name: kwargs[name] for name in ("sliding_window", "softcap", "s_aux") if kwargs.get(name) is not None}
    if unsupported or (dropout and module.training):
        raise NotImplementedError(
            f"{IMPLEMENTATION} attention reproduces plain full attention only; this layer asks for "
            f"{unsupported or {'dropout': dropout}}. Sample with the model's own attention instead."
        )
    rows, query_heads, new, head_dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = query_heads // kv_heads
    scaling = head_dim**-0.5 if scaling is None else scaling
    # the query heads that share a key/value head become rows of one product: no copies of keys or values
    grouped = query.reshape(rows, kv_heads, groups * new, head_dim)
    scores = (torch.matmul(grouped, key.transpose(-1, -2)).float() * scaling).view(rows, kv_heads, groups, new, length)
    if attention_mask is None and new > 1:
        attention_mask = torch.ones(new, length, dtype=torch.bool, device=query.device).tril(length - new)
    if attention_mask is not None:
        mask = attention_mask.reshape(-1, 1, 1, new, length) if attention_mask.dim() == 4 else attention_mask
        # the lowest float, not -inf: a padding position that sees no key gets finite garbage, not NaN
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    scores = scores.view(rows, kv_heads, groups * new, length)
    if shared_prefix is None:
        output = torch.matmul(scores.softmax(-1).to(value.dtype), value)
    else:
        prefix_keys, prefix_values = shared_prefix.keys[module.layer_idx], shared_prefix.values[module.layer_idx]
        prefix_length = prefix_keys.shape[1]
        all_rows = grouped.transpose(0, 1).reshape(kv_heads, rows * groups * new, head_dim)
        prefix_scores = torch.matmul(all_rows, prefix_keys.transpose(-1, -2)).float() * scaling
        prefix_scores = prefix_scores.view(kv_heads, rows, groups * new, prefix_length).transpose(0, 1)
        probs = torch.cat([prefix_scores, scores], dim=-1).softmax(-1).to(value.dtype)
        output = torch.matmul(probs[..., prefix_length:], value)
        prefix_probs = probs[..., :prefix_length].transpose(0, 1).reshape(kv_heads, rows * groups * new, prefix_length)
        output += torch.matmul(prefix_probs, prefix_values).view(kv_heads, rows, groups * new, head_dim).transpose(0, 1)
    output = output.view(rows, kv_heads, groups, new, head_dim).permute(0, 3, 1, 2, 4)
    return output.reshape(rows, new, query_heads, head_dim), None


AttentionInterface.register(IMPLEMENTATION, shared_prefix_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)  # boolean masks, as for SDPA


def transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_shared_prefix_attention(model: torch.nn.Module) -> bool:
    """Whether the model's attention is plain full attention that this module reproduces."""
    base = transformers_model(model)
    config = base.config
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    return (
        getattr(base, "_supports_attention_backend", False)
        and not getattr(config, "attn_logit_softcapping", None)
        and all(layer_type == "full_attention" for layer_type in layer_types)
        and not sliding
    )


@contextlib.contextmanager
def shared_prefix_attention_enabled(model: torch.nn.Module) -> Iterator[None]:
    """Run the model with shared-prefix attention while the context is open; its own attention comes back after."""
    base = transformers_model(model)
    own = base.config._attn_implementation
    base.set_attn_implementation(IMPLEMENTATION)
    try:
        yield
    finally:
        base.set_attn_implementation(own)
