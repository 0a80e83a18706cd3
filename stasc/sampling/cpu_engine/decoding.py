"""A decode loop for sampling many short answers on a CPU, faster than `generate`.

What it saves, measured in bench/generation.py:
- each prompt is prefilled once and its KV cache copied for its samples
  (generate prefills every sample separately), and the tokens all prompts of a batch start
  with (system prompt, instructions) are prefilled once for the whole batch and kept once,
  not copied into every row (stasc.sampling.cpu_engine.prefix_attention; models with attention it does not
  reproduce, e.g. sliding windows, prefill whole prompts per row instead);
- prompts are prefilled in groups of similar length, not all padded to the longest (for Llama
  models, stasc.sampling.cpu_engine.llama_steps runs all prompts' tokens end to end through every product instead);
- the samples of a prompt share one row for as long as they have drawn the same tokens
  (a row's logits are the same for all of them; each still draws its own next token), and a
  row splits when its samples draw different tokens: with four samples per prompt, 15% fewer
  rows to compute, most of them in the first, widest steps (generate computes every sample);
- rows whose samples all produced end-of-turn leave the batch, so later steps run on fewer rows
  (generate keeps computing padding for them until the longest row ends); unfinished rows
  from the end move into their places, so the cache is not copied whole to drop them
  (stasc.sampling.cpu_engine.row_compaction);
- the prompt's last position reaches the output layer as a contiguous matrix (with a frozen,
  tied output layer, as under PEFT, torch would otherwise copy the layer's weights once per row:
  7 GB for 128 prompts of the bundled model);
- bfloat16 linear layers multiply with weights packed once for oneDNN (stasc.sampling.cpu_engine.packed_weights),
  instead of plain-layout weights at every step;
- for Llama models the prompts and the decode steps skip transformers' forward: fused q/k/v and
  gate/up products, weights packed once per call, and a rotary table computed once
  (stasc.sampling.cpu_engine.llama_steps); other models run through their own forward;
- top-p is computed over a top-k shortlist when the shortlist already holds the
  nucleus (exact; rows where it does not fall back to a full sort), instead of sorting
  the whole vocabulary for every row at every step, in float32 buffers reused across steps;
  the shortlist is searched for in the blocks of the vocabulary with the largest maxima.
Greedy decoding gives the same tokens as `generate` (tested).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from stasc.sampling.cpu_engine.llama_steps import (
    LlamaSteps,
    LlamaWeights,
    prefill,
    prefill_shared_prefix,
    supports_llama_steps,
)
from stasc.sampling.cpu_engine.packed_weights import packed_linear_weights
from stasc.sampling.cpu_engine.prefix_attention import (
    SharedPrefix,
    shared_prefix_attention_enabled,
    supports_shared_prefix_attention,
)
from stasc.sampling.cpu_engine.row_compaction import moved_rows
from stasc.sampling.cpu_engine.shared_rows import regrouped, sample_groups

# the top 32 hold the nucleus (top-p 0.9, T 0.6) in 99.5% of the bundled model's rows; topk of 256 took 2.3x as long
SHORTLIST = 32


@dataclass(frozen=True)
class DecodeSettings:
    max_new_tokens: int
    temperature: float
    top_p: float


def stop_token_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    """End-of-sequence ids from the generation config and the tokenizer."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def token_probabilities(logits: torch.Tensor, temperature: float, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(logits / temperature) in float32, computed in `scratch` (2, rows, vocab) when given.

    For a batch of rows the float32 copies of the logits are tens of MB; allocating them fresh at
    every step took longer than the softmax itself (docs/performance.md).
    """
    if scratch is None:
        return (logits.float() / temperature).softmax(-1)
    rows = logits.shape[0]
    scores = scratch[0, :rows].copy_(logits).div_(temperature)
    return torch.softmax(scores, -1, out=scratch[1, :rows])


def sample_next(
    logits: torch.Tensor, settings: DecodeSettings, generator: torch.Generator | None,
    scratch: torch.Tensor | None = None, repeats: torch.Tensor | None = None,
) -> torch.Tensor:
    """Tokens drawn from each row's distribution, row after row, `repeats[row]` of them (one each when not given):
    greedy at temperature 0, else temperature + nucleus (top-p) sampling."""
    if settings.temperature == 0:
        return _repeat_rows(logits.argmax(dim=-1), repeats)
    probs = token_probabilities(logits, settings.temperature, scratch)
    if settings.top_p >= 1.0:
        return torch.multinomial(_repeat_rows(probs, repeats), 1, generator=generator).squeeze(-1)
    top_probs, top_ids = shortlist(probs, min(SHORTLIST, probs.shape[-1]))
    covered = top_probs.sum(-1) >= settings.top_p
    if bool(covered.all()):
        return _nucleus_sample(top_probs, top_ids, settings.top_p, generator, repeats)
    # rare: a flat distribution whose nucleus is wider than the shortlist; sort those rows fully
    covered_draws = _repeat_rows(covered, repeats)
    result = torch.empty(covered_draws.shape[0], dtype=torch.long, device=probs.device)
    wide = (~covered).nonzero().squeeze(-1)
    sorted_probs, sorted_ids = probs[wide].sort(dim=-1, descending=True)
    result[~covered_draws] = _nucleus_sample(
        sorted_probs, sorted_ids, settings.top_p, generator, None if repeats is None else repeats[wide])
    narrow = covered.nonzero().squeeze(-1)
    if narrow.numel():
        result[covered_draws] = _nucleus_sample(
            top_probs[narrow], top_ids[narrow], settings.top_p, generator, None if repeats is None else repeats[narrow])
    return result


def shortlist(probs: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `size` largest probabilities of each row, largest first, and their token ids: what `topk` gives (ids of
    equal probabilities may come in another order), in half its time for the bundled model's vocabulary.

    The vocabulary is cut into blocks of `size` tokens and only the `size` blocks with the largest maxima are
    searched: a block outside them has a maximum no larger than each of theirs, so each of those blocks holds a
    token at least as probable as any of its tokens.
    """
    rows, vocab = probs.shape
    if vocab % size or vocab < 8 * size * size:  # too few blocks to be worth two passes
        return probs.topk(size, dim=-1)
    blocks = probs.view(rows, vocab // size, size)
    best_blocks = blocks.amax(-1).topk(size, dim=-1).indices
    candidates = blocks.gather(1, best_blocks.unsqueeze(-1).expand(-1, -1, size)).view(rows, size * size)
    top_probs, where = candidates.topk(size, dim=-1)
    return top_probs, best_blocks.gather(1, where // size) * size + where % size


def _repeat_rows(tensor: torch.Tensor, repeats: torch.Tensor | None) -> torch.Tensor:
    return tensor if repeats is None else tensor.repeat_interleave(repeats, dim=0)


def _nucleus_sample(
    sorted_probs: torch.Tensor, sorted_ids: torch.Tensor, top_p: float, generator: torch.Generator | None,
    repeats: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample among the smallest top set whose probability reaches top_p (as transformers' TopP warper),
    `repeats[row]` times from each row (once when not given)."""
    before = sorted_probs.cumsum(-1) - sorted_probs  # probability of all better-ranked tokens
    probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    probs[:, 0] = probs[:, 0].clamp_min(torch.finfo(probs.dtype).tiny)
    choice = torch.multinomial(_repeat_rows(probs, repeats), 1, generator=generator)
    return _repeat_rows(sorted_ids, repeats).gather(-1, choice).squeeze(-1)


@contextlib.contextmanager
def contiguous_output_layer(model: torch.nn.Module) -> Iterator[None]:
    """Feed the output layer contiguous hidden states while the context is open.

    `logits_to_keep=1` slices the last position out of the prompt's hidden states; for a
    non-contiguous 3-D input and a weight without gradient, torch's matmul broadcasts the weight
    over the batch instead of folding the batch into one matrix product.
    """
    output_layer = model.get_output_embeddings()
    if output_layer is None:
        yield
        return
    handle = output_layer.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a forward call of their own


def shared_prompt_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens all prompts start with (each keeps at least one of its own); 0 when not worth sharing."""
    if len(prompts) < 2:
        return 0
    length = min(len(prompt) for prompt in prompts) - 1
    first = prompts[0]
    for prompt in prompts[1:]:
        length = next((i for i in range(length) if prompt[i] != first[i]), length)
    return length if length >= MIN_SHARED_PREFIX else 0


def left_padded(
    rows: Sequence[Sequence[int]], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of rows padded on the left to the longest."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long, device=device)
    attention = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for index, row in enumerate(rows):
        input_ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention[index, width - len(row) :] = 1
    return input_ids, attention


@torch.inference_mode()
def decode(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    num_samples: int,
    settings: DecodeSettings,
    *,
    pad_token_id: int,
    stop_ids: Sequence[int],
    seed: int,
    suppress_ids: torch.Tensor | None = None,
    on_step: Callable[[list[list[int]]], None] | None = None,
) -> list[list[int]]:
    """New tokens for num_samples continuations of each prompt, ordered prompt by prompt.

    on_step, when given, sees every sequence's tokens so far after each step (streaming to a reader);
    an exception it raises ends decoding."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    prefix_attention = supports_shared_prefix_attention(model)
    shared = shared_prompt_prefix(prompts) if prefix_attention else 0
    groups = sample_groups(len(prompts), num_samples)
    first_rows = [group[0] // num_samples for group in groups]  # each row's prompt
    # rows other than one per prompt (each prompt's prefill copied to its rows), or None
    row_prompts = None if first_rows == list(range(len(prompts))) else torch.tensor(first_rows, device=device)
    if prefix_attention and supports_llama_steps(model):
        weights = LlamaWeights(model)
        prefix = prefill_shared_prefix(weights, prompts[0][:shared]) if shared else None
        rows = prefill(weights, [prompt[shared:] for prompt in prompts], shared, prefix)
        rows = rows if row_prompts is None else rows.selected(row_prompts)
        steps = LlamaSteps(weights, rows, shared, prefix, settings.max_new_tokens)
        logits = rows.logits
        del rows  # the steps own the cache now: the prompts' copy of it would stay alive beside the growing one
        return _sample_rows(steps, logits, groups, settings, generator, stop_ids, suppress_ids, on_step)
    input_ids, attention = left_padded([prompt[shared:] for prompt in prompts], pad_token_id, device)
    positions = shared + (attention.cumsum(-1) - 1).clamp_min(0)
    cache = DynamicCache(config=model.config)
    with contiguous_output_layer(model), packed_linear_weights(model):
        prefix = None
        if shared:  # e.g. the system prompt and instructions: computed and kept once for all rows
            prefix_cache = DynamicCache(config=model.config)
            model(input_ids=torch.tensor([prompts[0][:shared]], device=device), past_key_values=prefix_cache,
                  use_cache=True, logits_to_keep=1)
            prefix = SharedPrefix.from_cache(prefix_cache)
        extra = {"shared_prefix": prefix} if prefix_attention else {}
        with shared_prefix_attention_enabled(model) if prefix_attention else contextlib.nullcontext():
            logits, attention, next_position = _prefill_rows(
                model, cache, input_ids, attention, positions, row_prompts, extra)
            steps = ModelSteps(model, cache, attention, next_position, extra)
            return _sample_rows(steps, logits, groups, settings, generator, stop_ids, suppress_ids, on_step)


BUCKET_RATIO = 0.75  # a prompt shorter than this fraction of its group's longest starts a new prefill group


def length_buckets(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices in groups of similar length, longest first, so a group pads little."""
    buckets: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda row: -lengths[row]):
        if buckets and lengths[index] >= BUCKET_RATIO * lengths[buckets[-1][0]]:
            buckets[-1].append(index)
        else:
            buckets.append([index])
    return buckets


def _prefill(
    model: torch.nn.Module, cache: DynamicCache, input_ids: torch.Tensor, attention: torch.Tensor,
    positions: torch.Tensor, extra: dict,
) -> torch.Tensor:
    """Fill the cache with every prompt and return each one's next-token logits.

    Prompts run in groups of similar length (a short prompt beside a long one would compute as
    much padding as tokens); the groups' keys and values are then padded on the left to one width.
    """
    lengths = attention.sum(-1).tolist()
    buckets = length_buckets(lengths)
    if len(buckets) == 1:
        return model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
            use_cache=True, logits_to_keep=1, **extra,
        ).logits[:, -1, :]
    width = input_ids.shape[1]
    parts, logits = [], []
    for rows in buckets:
        index = torch.tensor(rows, device=input_ids.device)
        columns = slice(width - lengths[rows[0]], None)  # each row's tokens end at the right edge
        part = DynamicCache(config=model.config)
        logits.append(model(
            input_ids=input_ids[index, columns], attention_mask=attention[index, columns],
            position_ids=positions[index, columns], past_key_values=part, use_cache=True, logits_to_keep=1, **extra,
        ).logits[:, -1, :])
        parts.append(part)
    original_order = torch.tensor([row for rows in buckets for row in rows], device=input_ids.device).argsort()

    def merged(tensors: list[torch.Tensor]) -> torch.Tensor:  # (rows, heads, tokens, dim), padded on the left
        return torch.cat([torch.nn.functional.pad(tensor, (0, 0, width - tensor.shape[2], 0)) for tensor in tensors])[
            original_order]

    for index, layers in enumerate(zip(*(part.layers for part in parts), strict=True)):
        cache.update(merged([layer.keys for layer in layers]), merged([layer.values for layer in layers]), index)
    return torch.cat(logits)[original_order]


class ModelSteps:
    """Decode steps through the model's own forward and a transformers cache."""

    def __init__(
        self, model: torch.nn.Module, cache: DynamicCache, attention: torch.Tensor, next_position: torch.Tensor,
        extra: dict,
    ) -> None:
        self.model, self.cache, self.attention, self.next_position, self.extra = (
            model, cache, attention, next_position, extra)

    def move_rows(self, holes: torch.Tensor, movers: torch.Tensor, remaining: int) -> None:
        """Row `movers[i]` takes the place of row `holes[i]`; then only the first `remaining` rows are kept."""
        for layer in self.cache.layers:
            layer.keys = moved_rows(layer.keys, holes, movers, remaining)
            layer.values = moved_rows(layer.values, holes, movers, remaining)
        self.attention = moved_rows(self.attention, holes, movers, remaining)
        self.next_position = moved_rows(self.next_position, holes, movers, remaining)

    def step(self, tokens: torch.Tensor, copies_of: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (rows, vocab) after appending one token to each row; the rows after the current ones
        start as copies of rows `copies_of`."""
        if copies_of is not None:
            for layer in self.cache.layers:
                layer.keys = torch.cat([layer.keys, layer.keys[copies_of]])
                layer.values = torch.cat([layer.values, layer.values[copies_of]])
            self.attention = torch.cat([self.attention, self.attention[copies_of]])
            self.next_position = torch.cat([self.next_position, self.next_position[copies_of]])
        self.attention = torch.cat([self.attention, self.attention.new_ones((self.attention.shape[0], 1))], dim=-1)
        logits = self.model(
            input_ids=tokens.unsqueeze(-1), attention_mask=self.attention,
            position_ids=self.next_position.unsqueeze(-1), past_key_values=self.cache, use_cache=True, **self.extra,
        ).logits[:, -1, :]
        self.next_position = self.next_position + 1
        return logits


def _prefill_rows(
    model: torch.nn.Module, cache: DynamicCache, input_ids: torch.Tensor, attention: torch.Tensor,
    positions: torch.Tensor, row_prompts: torch.Tensor | None, extra: dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prefill each prompt's own tokens once and give row i prompt `row_prompts[i]`'s cache (one row per prompt when
    None): (logits, attention mask, next position) for every row."""
    logits = _prefill(model, cache, input_ids, attention, positions, extra)
    if row_prompts is not None:
        cache.batch_select_indices(row_prompts)
        logits, attention, positions = logits[row_prompts], attention[row_prompts], positions[row_prompts]
    return logits, attention, positions[:, -1] + 1


def _sample_rows(
    steps: LlamaSteps | ModelSteps, logits: torch.Tensor, groups: list[list[int]], settings: DecodeSettings,
    generator: torch.Generator, stop_ids: Sequence[int], suppress_ids: torch.Tensor | None,
    on_step: Callable[[list[list[int]]], None] | None = None,
) -> list[list[int]]:
    """Draw a token for every sequence from its row (`groups`: the sequences of each row), split rows whose sequences
    drew different tokens, drop the rows whose sequences all stopped, step the rest; until all sequences stop."""
    device = logits.device
    total = sum(len(group) for group in groups)
    scratch = logits.new_empty((2, total, logits.shape[-1]), dtype=torch.float32) if settings.temperature else None
    outputs: list[list[int]] = [[] for _ in range(total)]
    stops = set(stop_ids)
    for step in range(settings.max_new_tokens):
        if suppress_ids is not None:
            logits[:, suppress_ids] = float("-inf")
        repeats = torch.tensor([len(group) for group in groups], device=device)
        tokens = sample_next(logits, settings, generator, scratch, repeats).tolist()
        for sequence, token in zip((sequence for group in groups for sequence in group), tokens, strict=True):
            if token not in stops:
                outputs[sequence].append(token)
        if on_step is not None:
            on_step(outputs)
        if step == settings.max_new_tokens - 1:
            break
        rows = regrouped(groups, tokens, stops)
        if not rows.groups:
            break
        if rows.remaining < len(groups):
            holes, movers = (
                torch.tensor(moves, dtype=torch.long, device=device) for moves in (rows.holes, rows.movers))
            steps.move_rows(holes, movers, rows.remaining)
        copies_of = torch.tensor(rows.copies_of, dtype=torch.long, device=device) if rows.copies_of else None
        groups = rows.groups
        logits = steps.step(torch.tensor(rows.tokens, device=device), copies_of)
    return outputs
