"""bfloat16 linear layers that multiply with weights packed once for oneDNN while sampling on a CPU.

A bfloat16 `F.linear` on a CPU hands oneDNN the weight in torch's plain layout on every call;
oneDNN's packed-weight linear takes a weight laid out for it once. For the few rows of a decode
step that pays: in a micro-benchmark a 576x576 product for 64 rows took 0.13-0.15 ms packed against
0.17-0.28 ms plain. Packing every weight once per `decode` call (0.1-0.2 s for the bundled model) gives
bit-identical outputs (tested); bench/generation.py times the whole sampler with and without.
The two ops are the ones torch.compile's CPU backend uses for frozen weights; where torch lacks
them, layers keep their own forward.

A PEFT LoRA layer (the loop samples with its adapter once it has trained one) would add two
float32 products, a cast and a sum to each projection at every step; while sampling, its
base weight plus the adapter's delta is packed as one weight instead (PEFT's `get_delta_weight`,
summed in float32 and rounded to bfloat16 once), so an adapter costs nothing per step.
bench/generation.py times sampling with an adapter both ways.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from peft.tuners.lora.layer import Linear as LoraLinear


def packing_available() -> bool:
    """Whether this torch build has oneDNN and its packed-weight linear ops."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def packable_layers(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """Plain bfloat16 CPU linear layers whose forward nobody else has replaced (e.g. accelerate's hooks)."""
    return [
        module for module in model.modules()
        if type(module) is torch.nn.Linear
        and module.weight.dtype == torch.bfloat16
        and module.weight.device.type == "cpu"
        and "forward" not in vars(module)
    ]


def _adapters(layer: LoraLinear) -> list[str]:
    """The layer's active adapters that adapt it."""
    return [name for name in layer.active_adapters if name in layer.lora_A]


def _plain_lora(layer: LoraLinear) -> bool:
    """An enabled, unmerged LoRA layer in eval mode whose output is its base layer's plus plain adapter products."""
    adapters = _adapters(layer)
    return (
        bool(adapters) and not (layer.training or layer.merged or layer.disable_adapters)
        and "forward" not in vars(layer)
        and not any(name in layer.lora_variant or layer.lora_bias.get(name) for name in adapters)
    )


def _mergeable(layer: LoraLinear, packable: set[int]) -> bool:
    return _plain_lora(layer) and id(layer.get_base_layer()) in packable


def mergeable_lora_layers(model: torch.nn.Module) -> list[LoraLinear]:
    """PEFT LoRA linear layers in eval mode whose enabled, unmerged, plain adapters fold into a packed base weight."""
    packable = {id(layer) for layer in packable_layers(model)}
    return [module for module in model.modules() if type(module) is LoraLinear and _mergeable(module, packable)]


def merged_weight(layer: LoraLinear) -> torch.Tensor:
    """The layer's base weight plus its active adapters' deltas, summed in float32, in the base weight's dtype."""
    base = layer.get_base_layer().weight
    merged = base.to(torch.float32, copy=True)
    for name in _adapters(layer):
        merged += layer.get_delta_weight(name).float()
    return merged.to(base.dtype)


def _base_only(layer: LoraLinear) -> bool:
    """PEFT computes just the base layer: adapters disabled (e.g. sampling from M0), or none adapts this layer."""
    return layer.disable_adapters or not _adapters(layer)


def is_one_matrix(module: torch.nn.Module) -> bool:
    """Whether a linear layer multiplies by one bias-free matrix: a plain one, or a PEFT LoRA layer on one that
    computes its base layer alone or plus plain adapters (not a bias, a forward replaced by hooks, a merged adapter
    or adapters that do not merge)."""
    if type(module) is LoraLinear:
        return (
            is_one_matrix(module.get_base_layer()) and "forward" not in vars(module) and not module.merged
            and (_base_only(module) or _plain_lora(module))
        )
    return type(module) is torch.nn.Linear and module.bias is None and "forward" not in vars(module)


def effective_weight(module: torch.nn.Module) -> torch.Tensor:
    """That one matrix (for a LoRA layer with adapters on, the base weight with them merged in); see `is_one_matrix`."""
    if type(module) is not LoraLinear:
        return module.weight
    return module.get_base_layer().weight if _base_only(module) else merged_weight(module)


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight)


def _packed_product(inputs: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(inputs, packed_weight, bias, "none", [], "")


class FrozenLinear:
    """x @ weight.T for a weight that does not change while it is used, packed for oneDNN when it is
    bfloat16 on a CPU (plain `F.linear` otherwise)."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.packed = packing_available() and weight.dtype == torch.bfloat16 and weight.device.type == "cpu"
        self.weight = _pack(weight) if self.packed else weight

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.packed:
            return _packed_product(inputs, self.weight, None)
        return torch.nn.functional.linear(inputs, self.weight)


def _packed_lora_linear(
    layer: LoraLinear, packed_weight: torch.Tensor, inputs: torch.Tensor, *args, **kwargs
) -> torch.Tensor:
    if inputs.dtype != torch.bfloat16 or layer.disable_adapters or args or kwargs:  # state changed since packing
        return type(layer).forward(layer, inputs, *args, **kwargs)
    return _packed_product(inputs, packed_weight, layer.get_base_layer().bias)


def _packed_linear(layer: torch.nn.Linear, packed_weight: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    if inputs.dtype != torch.bfloat16:  # e.g. a float32 caller: the plain product, as the layer's own forward
        return torch.nn.functional.linear(inputs, layer.weight, layer.bias)
    return _packed_product(inputs, packed_weight, layer.bias)


@contextlib.contextmanager
def packed_linear_weights(model: torch.nn.Module) -> Iterator[None]:
    """While open (and only under inference mode), the model's bfloat16 CPU linear layers use packed weights,
    and its LoRA layers one packed weight with the adapter merged in."""
    enabled = packing_available() and torch.is_inference_mode_enabled()
    lora_layers = mergeable_lora_layers(model) if enabled else []
    merged_bases = {id(layer.get_base_layer()) for layer in lora_layers}
    layers = [layer for layer in packable_layers(model) if id(layer) not in merged_bases] if enabled else []
    try:
        for layer in lora_layers:
            layer.forward = functools.partial(_packed_lora_linear, layer, _pack(merged_weight(layer)))
        for layer in layers:
            layer.forward = functools.partial(_packed_linear, layer, _pack(layer.weight))
        yield
    finally:
        for layer in [*lora_layers, *layers]:
            vars(layer).pop("forward", None)
