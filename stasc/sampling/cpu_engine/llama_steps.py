"""Prompts and decode steps for Llama-architecture models (SmolLM2, Llama 3, ...), as plain tensor operations.

transformers' forward runs each decode step through its modules, a cache object and a fresh
attention mask; here one step is the same arithmetic with less around it:
- q, k and v come from one matrix product, and gate and up from another (4 products per layer
  instead of 7), their weights concatenated and packed for oneDNN once per `decode` call
  (stasc.sampling.cpu_engine.packed_weights; a plain LoRA adapter is merged in first);
- rotary embeddings come from a table computed once by the model's own rotary module, and are
  applied to queries and keys together;
- the additive attention mask grows by one column per step; attention is
  stasc.sampling.cpu_engine.prefix_attention's (the shared prompt prefix kept once).
The prompts run through the same weights (`prefill`): their tokens one after another in one
matrix for every product, so no product computes padding (padding exists only inside attention,
where each prompt's keys sit in a row of their own, as wide as the longest prompt of its group of
prompts, not of the call: long prompts of many lengths, as in the correction step, pad less), and
the weights are packed once per call.
Norms and the activation are the model's own modules. bench/generation.py times the sampler
with and without these steps; tests check the logits against the model's forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LlamaForCausalLM

from stasc.sampling.cpu_engine.packed_weights import FrozenLinear, effective_weight, is_one_matrix
from stasc.sampling.cpu_engine.prefix_attention import SharedPrefix, shared_prefix_attention, transformers_model
from stasc.sampling.cpu_engine.row_compaction import moved_rows

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
    """A Llama model's weights as prompts and decode steps use them: fused, merged with a plain LoRA adapter,
    packed; and the layer arithmetic both share."""

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

    def rotary_table(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed sin), (length, head_dim) each, for positions 0..length-1, from the model's rotary module.

        x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1) = roll(x) with the first half negated.
        """
        positions = torch.arange(length, device=self.embed.weight.device)
        cos, sin = self.rotary(self.embed.weight[:1], positions.unsqueeze(0))
        half = self.head_dim // 2
        return cos[0], torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)

    def project(
        self, layer: _LayerWeights, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries (tokens, heads, dim), rotated keys and values (tokens, kv_heads, dim) of `hidden`."""
        tokens, heads, kv_heads, head_dim = hidden.shape[0], self.query_heads, self.kv_heads, self.head_dim
        rotated = (heads + kv_heads) * head_dim
        qkv = layer.qkv(layer.input_norm(hidden))
        query_key = qkv[:, :rotated].view(tokens, heads + kv_heads, head_dim)
        query_key = query_key * cos + query_key.roll(head_dim // 2, dims=-1) * sin
        return query_key[:, :heads], query_key[:, heads:], qkv[:, rotated:].view(tokens, kv_heads, head_dim)

    def finish_layer(self, layer: _LayerWeights, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The layer's output: attention output projected and added, then the MLP added."""
        hidden = hidden + layer.output(attended)
        gate, up = layer.gate_up(layer.post_attention_norm(hidden)).chunk(2, dim=-1)
        return hidden + layer.down(layer.activation(gate) * up)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits of the last layer's hidden states."""
        return self.output(self.final_norm(hidden))


@dataclass
class PrefilledRows:
    """Each prompt's keys and values, left-padded to one width, and its next-token logits."""

    keys: list[torch.Tensor]  # per layer, (rows, kv_heads, width, head_dim)
    values: list[torch.Tensor]
    attention: torch.Tensor  # (rows, width): 1 where a row has a token
    logits: torch.Tensor  # (rows, vocab)

    def selected(self, rows: torch.Tensor) -> PrefilledRows:
        """Rows `rows` (e.g. one per sample of its prompt)."""
        def select(tensor: torch.Tensor) -> torch.Tensor:
            return tensor[rows]
        return PrefilledRows([select(keys) for keys in self.keys], [select(values) for values in self.values],
                             select(self.attention), select(self.logits))


PREFILL_TOKENS = 4096  # padded prompt tokens per prefill group: bounds the attention scores' memory


def prefill(
    weights: LlamaWeights, prompts: Sequence[Sequence[int]], start: int, shared_prefix: SharedPrefix | None
) -> PrefilledRows:
    """Run each prompt (its tokens from position `start`, after `shared_prefix`) through the model."""
    width = max(len(prompt) for prompt in prompts)
    per_group = max(1, PREFILL_TOKENS // width)
    rotary = weights.rotary_table(start + width)
    groups = [_prefill_group(weights, prompts[first : first + per_group], start, shared_prefix, rotary)
              for first in range(0, len(prompts), per_group)]
    if len(groups) == 1:
        return groups[0]

    def merged(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:  # each group padded on the left to `width`
        return torch.cat([
            torch.nn.functional.pad(tensor, (0, 0) * (tensor.dim() - 1 - dim) + (width - tensor.shape[dim], 0))
            for tensor in tensors
        ])

    # layer by layer, each group's tensors of a layer let go once merged: the cache is never held twice
    keys, values = [], []
    for _ in weights.layers:
        keys.append(merged([group.keys.pop(0) for group in groups], 2))
        values.append(merged([group.values.pop(0) for group in groups], 2))
    return PrefilledRows(
        keys, values, merged([group.attention for group in groups], 1), torch.cat([group.logits for group in groups]),
    )


def _prefill_group(
    weights: LlamaWeights, prompts: Sequence[Sequence[int]], start: int, shared_prefix: SharedPrefix | None,
    rotary: tuple[torch.Tensor, torch.Tensor],
) -> PrefilledRows:
    """One group of prompts: every product over the group's tokens end to end; attention with each prompt in a row
    of its own as wide as the group's longest, its tokens at the row's right end."""
    device = weights.embed.weight.device
    width = max(len(prompt) for prompt in prompts)
    lengths = torch.tensor([len(prompt) for prompt in prompts], device=device)
    rows = len(prompts)
    row_of = torch.repeat_interleave(torch.arange(rows, device=device), lengths)
    offset = torch.arange(row_of.shape[0], device=device) - (lengths.cumsum(0) - lengths)[row_of]
    column_of = width - lengths[row_of] + offset
    cos_table, sin_table = rotary
    cos, sin = cos_table[start + offset].unsqueeze(1), sin_table[start + offset].unsqueeze(1)
    columns = torch.arange(width, device=device)
    attention = (columns >= width - lengths[:, None]).long()
    causal = (columns[None, :, None] >= columns[None, None, :]) & attention.bool()[:, None, :]  # (rows, query, key)
    hidden = weights.embed(torch.tensor([token for prompt in prompts for token in prompt], device=device))

    def padded(flat: torch.Tensor) -> torch.Tensor:  # (tokens, heads, dim) -> (rows, heads, width, dim)
        grid = flat.new_zeros((rows, width, *flat.shape[1:]))
        grid[row_of, column_of] = flat
        return grid.transpose(1, 2).contiguous()

    keys, values = [], []
    for layer in weights.layers:
        queries, layer_keys, layer_values = weights.project(layer, hidden, cos, sin)
        keys.append(padded(layer_keys))
        values.append(padded(layer_values))
        attended, _ = shared_prefix_attention(
            layer.attention, padded(queries), keys[-1], values[-1], causal[:, None],
            scaling=layer.attention.scaling, shared_prefix=shared_prefix,
        )
        hidden = weights.finish_layer(layer, hidden, attended[row_of, column_of].flatten(1))
    return PrefilledRows(keys, values, attention, weights.logits(hidden[lengths.cumsum(0) - 1]))


def prefill_shared_prefix(weights: LlamaWeights, tokens: Sequence[int]) -> SharedPrefix:
    """Keys and values of the tokens every prompt starts with, computed once."""
    prefilled = prefill(weights, [tokens], 0, None)
    return SharedPrefix([keys[0] for keys in prefilled.keys], [values[0] for values in prefilled.values])


class LlamaSteps:
    """Decode steps for prefilled rows; rows can be moved and dropped between steps, and copied by a step."""

    def __init__(
        self, weights: LlamaWeights, rows: PrefilledRows, start: int, shared_prefix: SharedPrefix | None,
        max_new_tokens: int,
    ) -> None:
        self.weights = weights
        self.keys, self.values = list(rows.keys), list(rows.values)
        self.next_position = start + rows.attention.sum(-1)
        self.cos, self.signed_sin = weights.rotary_table(int(self.next_position.max()) + max_new_tokens)
        lowest = torch.finfo(torch.float32).min
        self.mask = torch.zeros(rows.attention.shape, dtype=torch.float32, device=rows.attention.device).masked_fill(
            rows.attention == 0, lowest)[:, None, None, :]
        self.shared_prefix = shared_prefix

    def move_rows(self, holes: torch.Tensor, movers: torch.Tensor, remaining: int) -> None:
        """Row `movers[i]` takes the place of row `holes[i]`; then only the first `remaining` rows are kept."""
        def move(tensor: torch.Tensor) -> torch.Tensor:
            return moved_rows(tensor, holes, movers, remaining)

        self.keys = [move(keys) for keys in self.keys]
        self.values = [move(values) for values in self.values]
        self.mask, self.next_position = move(self.mask), move(self.next_position)

    def step(self, tokens: torch.Tensor, copies_of: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (rows, vocab) after appending one token to each row; the rows after the current ones
        start as copies of rows `copies_of`."""
        weights = self.weights
        rows = tokens.shape[0]
        if copies_of is not None:
            self.mask = torch.cat([self.mask, self.mask[copies_of]])
            self.next_position = torch.cat([self.next_position, self.next_position[copies_of]])
        self.mask = torch.cat([self.mask, self.mask.new_zeros((rows, 1, 1, 1))], dim=-1)
        cos = self.cos[self.next_position].unsqueeze(1)
        sin = self.signed_sin[self.next_position].unsqueeze(1)
        hidden = weights.embed(tokens)
        for index, layer in enumerate(weights.layers):
            queries, keys, values = weights.project(layer, hidden, cos, sin)
            self.keys[index] = _appended(self.keys[index], keys, copies_of)
            self.values[index] = _appended(self.values[index], values, copies_of)
            attended, _ = shared_prefix_attention(
                layer.attention, queries.unsqueeze(2), self.keys[index], self.values[index], self.mask,
                scaling=layer.attention.scaling, shared_prefix=self.shared_prefix,
            )
            hidden = weights.finish_layer(layer, hidden, attended.reshape(rows, -1))
        self.next_position = self.next_position + 1
        return weights.logits(hidden)


def _appended(cache: torch.Tensor, new: torch.Tensor, copies_of: torch.Tensor | None) -> torch.Tensor:
    """`cache` (rows, heads, width, dim) with copies of rows `copies_of` after its rows, and `new` (all rows, heads,
    dim) as one more column: one pass over the cache, as the concatenation alone."""
    if copies_of is None:
        return torch.cat([cache, new.unsqueeze(2)], dim=2)
    rows, heads, width, dim = cache.shape
    grown = cache.new_empty((rows + len(copies_of), heads, width + 1, dim))
    grown[:rows, :, :width] = cache
    grown[rows:, :, :width] = cache[copies_of]
    grown[:, :, width] = new
    return grown
