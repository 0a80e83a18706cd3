"""Packed bfloat16 linear weights: same outputs, LoRA adapters merged in, own forward back afterwards, other layers
left alone."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear as LoraLinear
from transformers import LlamaConfig, LlamaForCausalLM

import stasc.sampling.cpu_engine.decoding
from stasc.sampling.cpu_engine import packed_weights
from stasc.sampling.cpu_engine.decoding import DecodeSettings, decode
from stasc.sampling.cpu_engine.packed_weights import (
    FrozenLinear,
    effective_weight,
    is_one_matrix,
    mergeable_lora_layers,
    merged_weight,
    packable_layers,
    packed_linear_weights,
    packing_available,
)

pytestmark = pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN packed linear ops")


def tiny_llama(dtype: torch.dtype = torch.bfloat16) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(config).to(dtype).eval()


IDS = torch.randint(3, 96, (3, 11), generator=torch.Generator().manual_seed(1))


def test_packed_layers_give_bit_identical_logits_and_their_own_forward_comes_back() -> None:
    model = tiny_llama()
    with torch.inference_mode():
        plain = model(input_ids=IDS).logits
        with packed_linear_weights(model):
            replaced = [layer for layer in model.modules() if "forward" in vars(layer)]
            packed = model(input_ids=IDS).logits
    assert len(replaced) == 2 * 7 + 1, "every projection of both layers and the output layer"
    assert torch.equal(packed, plain)
    assert not [layer for layer in model.modules() if "forward" in vars(layer)]


def test_float32_layers_and_replaced_forwards_are_left_alone() -> None:
    assert packable_layers(tiny_llama(torch.float32)) == []
    model = tiny_llama()
    hooked = model.lm_head
    hooked.forward = lambda inputs: torch.nn.functional.linear(inputs, hooked.weight) * 0  # like accelerate's wrapper
    assert hooked not in packable_layers(model)
    with torch.inference_mode(), packed_linear_weights(model):
        assert hooked.forward(torch.ones(1, 64, dtype=torch.bfloat16)).abs().sum() == 0
    assert "forward" in vars(hooked)


def test_nothing_is_packed_outside_inference_mode() -> None:
    model = tiny_llama()
    with packed_linear_weights(model):
        assert not [layer for layer in model.modules() if "forward" in vars(layer)]


def lora_llama(dtype: torch.dtype = torch.bfloat16, **lora) -> torch.nn.Module:
    model = get_peft_model(tiny_llama(dtype), LoraConfig(r=2, target_modules="all-linear", **lora))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)  # an adapter that changes the output
    return model.eval()


def test_under_peft_the_adapter_is_merged_into_one_packed_weight_per_layer() -> None:
    model = lora_llama()
    with torch.inference_mode():
        plain = model(input_ids=IDS).logits
        with model.disable_adapter():
            base = model(input_ids=IDS).logits
        with packed_linear_weights(model):
            merged = [layer for layer in model.modules() if isinstance(layer, LoraLinear) and "forward" in vars(layer)]
            packed = model(input_ids=IDS).logits
    assert len(merged) == 2 * 7, "every adapted projection of both layers"
    adapter_effect = (plain - base).abs().max()
    assert adapter_effect > 0.5
    # merged in float32 and rounded to bfloat16 once, instead of two products summed at every step
    assert (packed - plain).abs().max() < 0.05 * adapter_effect
    assert not [layer for layer in model.modules() if "forward" in vars(layer)]


def test_a_disabled_adapter_leaves_the_plain_packed_base_weights() -> None:
    model = lora_llama()
    with torch.inference_mode(), model.disable_adapter():
        base = model(input_ids=IDS).logits
        assert mergeable_lora_layers(model) == []
        with packed_linear_weights(model):
            replaced = [layer for layer in model.modules() if "forward" in vars(layer)]
            packed = model(input_ids=IDS).logits
    assert len(replaced) == 2 * 7 + 1 and all(type(layer) is torch.nn.Linear for layer in replaced), \
        "the base projections and the output layer are packed, not the LoRA layers"
    assert torch.equal(packed, base)


def test_adapters_in_training_mode_or_with_variants_are_not_merged() -> None:
    assert mergeable_lora_layers(lora_llama().train()) == []
    assert mergeable_lora_layers(lora_llama(use_dora=True)) == []


def test_merged_weight_is_the_base_weight_plus_the_adapter_product() -> None:
    layer = lora_llama().base_model.model.model.layers[0].self_attn.q_proj
    expected = layer.base_layer.weight.float() + (
        layer.lora_B["default"].weight.float() @ layer.lora_A["default"].weight.float() * layer.scaling["default"]
    )
    assert torch.equal(merged_weight(layer), expected.to(torch.bfloat16))


@pytest.mark.parametrize("llama_steps", [True, False], ids=["llama steps", "model forward"])
def test_sampling_draws_the_same_tokens_with_and_without_packing(monkeypatch, llama_steps: bool) -> None:
    model = tiny_llama()
    prompts = [list(range(5, 25)) + [30 + i] for i in range(3)]
    settings = DecodeSettings(10, 0.8, 0.9)
    if not llama_steps:
        monkeypatch.setattr(stasc.sampling.cpu_engine.decoding, "supports_llama_steps", lambda model: False)
    calls: list[int] = []
    real_layer, real_frozen = packed_weights._packed_linear, FrozenLinear.__call__

    def counted_layer(*args):
        calls.append(1)
        return real_layer(*args)

    def counted_frozen(self, inputs):
        calls.extend([1] if self.packed else [])
        return real_frozen(self, inputs)

    monkeypatch.setattr(packed_weights, "_packed_linear", counted_layer)
    monkeypatch.setattr(FrozenLinear, "__call__", counted_frozen)
    packed = decode(model, prompts, 2, settings, pad_token_id=2, stop_ids=[2], seed=4)
    assert calls, "decode multiplied with packed weights"
    monkeypatch.setattr(packed_weights, "packing_available", lambda: False)
    calls.clear()
    assert decode(model, prompts, 2, settings, pad_token_id=2, stop_ids=[2], seed=4) == packed
    assert not calls


def test_effective_weight_is_the_one_matrix_a_layer_multiplies_by() -> None:
    model = lora_llama(torch.float32)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    base = q_proj.base_layer.weight.clone()
    assert is_one_matrix(q_proj)
    assert torch.equal(effective_weight(q_proj), base + q_proj.get_delta_weight("default"))
    assert torch.equal(q_proj.base_layer.weight, base), "the base weight itself is left as it was"
    plain = tiny_llama().lm_head
    assert is_one_matrix(plain) and effective_weight(plain) is plain.weight
    assert not is_one_matrix(torch.nn.Linear(4, 4)), "a bias is not part of one matrix"
    with model.disable_adapter():
        assert is_one_matrix(q_proj) and effective_weight(q_proj) is q_proj.base_layer.weight, "adapter off: the base"
    assert not is_one_matrix(lora_llama(use_dora=True).base_model.model.model.layers[0].self_attn.q_proj)
    plain.forward = lambda inputs: inputs  # like accelerate's wrapper
    assert not is_one_matrix(plain)


def test_frozen_linear_packs_bfloat16_cpu_weights_only() -> None:
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    inputs = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        packed = FrozenLinear(weight.to(torch.bfloat16))
        unpacked = FrozenLinear(weight)
        assert packed.packed and not unpacked.packed
        assert torch.equal(packed(inputs.to(torch.bfloat16)), torch.nn.functional.linear(
            inputs.to(torch.bfloat16), weight.to(torch.bfloat16)))
        assert torch.equal(unpacked(inputs), torch.nn.functional.linear(inputs, weight))
