"""Shared-prefix attention against torch's own attention, and when models may use it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from stasc.sampling.cpu_engine.prefix_attention import (
    IMPLEMENTATION,
    SharedPrefix,
    shared_prefix_attention,
    shared_prefix_attention_enabled,
    supports_shared_prefix_attention,
)

ROWS, QUERY_HEADS, KV_HEADS, HEAD_DIM = 3, 4, 2, 8


class Layer(torch.nn.Module):
    def __init__(self, layer_idx: int = 0) -> None:
        super().__init__()
        self.layer_idx = layer_idx


def random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference(query, key, value, mask) -> torch.Tensor:
    """torch's SDPA with the key/value heads repeated, in transformers' output layout (rows, new, heads, dim)."""
    groups = QUERY_HEADS // KV_HEADS
    output = F.scaled_dot_product_attention(query, key.repeat_interleave(groups, 1),
                                            value.repeat_interleave(groups, 1), attn_mask=mask)
    return output.transpose(1, 2)


def padding_mask(new: int, length: int, pads: list[int]) -> torch.Tensor:
    """Boolean (rows, 1, new, length): causal over the last `new` keys, each row's first pads hidden."""
    mask = torch.ones(new, length, dtype=torch.bool).tril(length - new).repeat(len(pads), 1, 1, 1)
    for row, pad in enumerate(pads):
        mask[row, :, :, :pad] = False
    return mask


@pytest.mark.parametrize("new", [1, 5])
def test_without_a_prefix_it_is_plain_attention(new: int) -> None:
    query = random(ROWS, QUERY_HEADS, new, HEAD_DIM, seed=0)
    key, value = random(ROWS, KV_HEADS, 7, HEAD_DIM, seed=1), random(ROWS, KV_HEADS, 7, HEAD_DIM, seed=2)
    mask = padding_mask(new, 7, [0, 1, 2])
    output, _ = shared_prefix_attention(Layer(), query, key, value, mask, scaling=HEAD_DIM**-0.5)
    torch.testing.assert_close(output, reference(query, key, value, mask))
    unmasked, _ = shared_prefix_attention(Layer(), query, key, value, None, scaling=HEAD_DIM**-0.5)
    torch.testing.assert_close(unmasked, reference(query, key, value, padding_mask(new, 7, [0, 0, 0])),
                               msg="no mask means causal over the last keys, as transformers skips it")


@pytest.mark.parametrize("new", [1, 5])
def test_a_prefix_kept_once_equals_attention_over_it_copied_into_every_row(new: int) -> None:
    prefix_keys, prefix_values = random(KV_HEADS, 6, HEAD_DIM, seed=3), random(KV_HEADS, 6, HEAD_DIM, seed=4)
    prefix = SharedPrefix([random(KV_HEADS, 6, HEAD_DIM, seed=9), prefix_keys],
                          [random(KV_HEADS, 6, HEAD_DIM, seed=9), prefix_values])
    query = random(ROWS, QUERY_HEADS, new, HEAD_DIM, seed=0)
    key, value = random(ROWS, KV_HEADS, 7, HEAD_DIM, seed=1), random(ROWS, KV_HEADS, 7, HEAD_DIM, seed=2)
    mask = padding_mask(new, 7, [0, 2, 6])  # the last row sees none of its own keys before its last one
    output, _ = shared_prefix_attention(Layer(layer_idx=1), query, key, value, mask, scaling=HEAD_DIM**-0.5,
                                        shared_prefix=prefix)
    copied_keys = torch.cat([prefix_keys.expand(ROWS, -1, -1, -1), key], dim=2)
    copied_values = torch.cat([prefix_values.expand(ROWS, -1, -1, -1), value], dim=2)
    full_mask = torch.cat([torch.ones(ROWS, 1, new, 6, dtype=torch.bool), mask], dim=-1)
    torch.testing.assert_close(output, reference(query, copied_keys, copied_values, full_mask))


def test_layers_it_cannot_reproduce_are_refused() -> None:
    query, key = random(1, QUERY_HEADS, 1, HEAD_DIM, seed=0), random(1, KV_HEADS, 3, HEAD_DIM, seed=1)
    for name, setting in (("sliding_window", 2), ("softcap", 30.0), ("s_aux", torch.zeros(QUERY_HEADS))):
        with pytest.raises(NotImplementedError, match=name):
            shared_prefix_attention(Layer(), query, key, key, None, **{name: setting})


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


def test_which_models_may_use_it() -> None:
    assert supports_shared_prefix_attention(tiny_llama())
    qwen = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2)
    assert supports_shared_prefix_attention(Qwen2ForCausalLM(Qwen2Config(**qwen)))
    windowed = Qwen2ForCausalLM(Qwen2Config(**qwen, use_sliding_window=True, sliding_window=4, max_window_layers=1))
    assert not supports_shared_prefix_attention(windowed), "a sliding window is not reproduced"
    soft_capped = tiny_llama()
    soft_capped.config.attn_logit_softcapping = 50.0
    assert not supports_shared_prefix_attention(soft_capped)


def test_the_models_own_attention_comes_back_even_after_an_error() -> None:
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules="all-linear"))
    own = model.get_base_model().config._attn_implementation
    with pytest.raises(RuntimeError), shared_prefix_attention_enabled(model):
        assert model.get_base_model().config._attn_implementation == IMPLEMENTATION
        raise RuntimeError("interrupted")
    assert model.get_base_model().config._attn_implementation == own


def test_the_model_computes_the_same_logits_with_it() -> None:
    model = tiny_llama()
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(5))
    attention = torch.ones(2, 9, dtype=torch.long)
    attention[1, :3] = 0
    own = model(input_ids=ids, attention_mask=attention).logits
    with shared_prefix_attention_enabled(model):
        assert model.config._attn_implementation == IMPLEMENTATION
        ours = model(input_ids=ids, attention_mask=attention).logits
    torch.testing.assert_close(ours[0], own[0])
    torch.testing.assert_close(ours[1, 3:], own[1, 3:])
