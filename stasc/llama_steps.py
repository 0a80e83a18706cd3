"""Decode steps for Llama-architecture models (SmolLM2, Llama 3, ...), written out as plain tensor operations.

transformers' forward runs each decode step through its modules, a cache object and a fresh
attention mask; here one step is the same arithmetic with less around it:
- q, k and v come from one matrix product, and gate and up from another (4 products per layer
  instead of 7), their weights concatenated and packed for oneDNN once per `decode` call
  (stasc.packed_weights; a plain LoRA adapter is merged in first);
- rotary embeddings come from a table computed once by the model's own rotary module, and are
  applied to queries and keys together;
- the additive attention mask grows by one column per step; attention is
  stasc.prefix_attention's (the shared prompt prefix kept once).
Norms and the activation are the model's own modules. bench/generation.py times the sampler
with and without these steps; tests check the logits against the model's forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, LlamaForCausalLM

from stasc.packed_weights import FrozenLinear, effective_weight, is_one_matrix
from stasc.prefix_attention import SharedPrefix, shared_prefix_attention, transformers_model
from stasc.row_compaction import moved_rows

DYNAMIC_ROPE = ("dynamic", "longrope")  # rotary frequencies that change with the sequence length: no fixed table


def supports_llama_steps(model: torch.nn.Module) -> bool:
    """Whether `model` is a transformers Llama on a CPU whose projections are each one bias-free matrix."""
    base = transformers_model(model)
    if type(base) is not LlamaForCausalLM or base.device.type != "cpu":
        return False
    config = base.config
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if any(kind in rope_type for kind in DYNAMIC_ROPE) or getattr(config, "pretraining_tp", 1) != 1:
        return False
    projections = [base.lm_head]
    for layer in base.model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        projections += [attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
                        mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    return all(is_one_matrix(projection) for projection in projections)


@dataclass(frozen=True)
class _LayerWeights:
    attention: torch.nn.Module  # the model's attention module: layer index and scaling for the attention function
    input_norm: torch.nn.Module
    qkv: FrozenLinear
    output: FrozenLinear
    post_attention_norm: torch.nn.Module
    gate_up: FrozenLinear
    down: FrozenLinear
    activation: torch.nn.Module


def _fused(*modules: torch.nn.Module) -> FrozenLinear:
    return FrozenLinear(torch.cat([effective_weight(module) for module in modules]))


class LlamaWeights:
    """A Llama model's weights as the decode steps use them: fused, merged with a plain LoRA adapter, packed.

    Built after the prefill: while the prompts run through the model's own forward,
    stasc.packed_weights has replaced its layers' forward (and packed their weights separately).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        base = transformers_model(model)
        inner = base.model
        self.query_heads = base.config.num_attention_heads
        self.kv_heads = base.config.num_key_value_heads
        self.head_dim = inner.layers[0].self_attn.head_dim
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.final_norm = inner.norm
        self.output = FrozenLinear(effective_weight(base.lm_head))
        self.layers = [
            _LayerWeights(
                layer.self_attn, layer.input_layernorm,
                _fused(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj),
                FrozenLinear(effective_weight(layer.self_attn.o_proj)), layer.post_attention_layernorm,
                _fused(layer.mlp.gate_proj, layer.mlp.up_proj), FrozenLinear(effective_weight(layer.mlp.down_proj)),
                layer.mlp.act_fn,
            )
            for layer in inner.layers
        ]


class LlamaSteps:
    """Decode steps for the rows of a prefilled cache; rows can be moved and dropped between steps."""

    def __init__(
        self, weights: LlamaWeights, cache: DynamicCache, attention: torch.Tensor, next_position: torch.Tensor,
        shared_prefix: SharedPrefix | None, max_new_tokens: int,
    ) -> None:
        self.weights = weights
        positions = torch.arange(int(next_position.max()) + max_new_tokens, device=attention.device)
        cos, sin = weights.rotary(weights.embed.weight[:1], positions.unsqueeze(0))
        half = weights.head_dim // 2
        self.cos = cos[0]
        # x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1) = roll(x) with the first half negated
        self.signed_sin = torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)
        self.keys = [layer.keys for layer in cache.layers]
        self.values = [layer.values for layer in cache.layers]
        lowest = torch.finfo(torch.float32).min
        self.mask = torch.zeros(attention.shape, dtype=torch.float32, device=attention.device).masked_fill(
            attention == 0, lowest)[:, None, None, :]
        self.next_position = next_position
        self.shared_prefix = shared_prefix

    def move_rows(self, holes: torch.Tensor, movers: torch.Tensor, remaining: int) -> None:
        """Row `movers[i]` takes the place of row `holes[i]`; then only the first `remaining` rows are kept."""
        def move(tensor: torch.Tensor) -> torch.Tensor:
            return moved_rows(tensor, holes, movers, remaining)

        self.keys = [move(keys) for keys in self.keys]
        self.values = [move(values) for values in self.values]
        self.mask, self.next_position = move(self.mask), move(self.next_position)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits (rows, vocab) after appending one token to each row."""
        weights = self.weights
        rows = tokens.shape[0]
        heads, kv_heads, head_dim = weights.query_heads, weights.kv_heads, weights.head_dim
        rotated = (heads + kv_heads) * head_dim
        self.mask = torch.cat([self.mask, self.mask.new_zeros((rows, 1, 1, 1))], dim=-1)
        cos = self.cos[self.next_position].unsqueeze(1)
        sin = self.signed_sin[self.next_position].unsqueeze(1)
        hidden = weights.embed(tokens)
        for index, layer in enumerate(weights.layers):
            qkv = layer.qkv(layer.input_norm(hidden))
            query_key = qkv[:, :rotated].view(rows, heads + kv_heads, head_dim)
            query_key = query_key * cos + query_key.roll(head_dim // 2, dims=-1) * sin
            self.keys[index] = torch.cat([self.keys[index], query_key[:, heads:].unsqueeze(2)], dim=2)
            self.values[index] = torch.cat(
                [self.values[index], qkv[:, rotated:].view(rows, kv_heads, 1, head_dim)], dim=2)
            attended, _ = shared_prefix_attention(
                layer.attention, query_key[:, :heads].unsqueeze(2), self.keys[index], self.values[index], self.mask,
                scaling=layer.attention.scaling, shared_prefix=self.shared_prefix,
            )
            hidden = hidden + layer.output(attended.reshape(rows, heads * head_dim))
            gate_up = layer.gate_up(layer.post_attention_norm(hidden))
            gate, up = gate_up.chunk(2, dim=-1)
            hidden = hidden + layer.down(layer.activation(gate) * up)
        self.next_position = self.next_position + 1
        return weights.output(weights.final_norm(hidden))
