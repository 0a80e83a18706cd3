"""bfloat16 linear layers that multiply with weights packed once for oneDNN while sampling on a CPU.

A bfloat16 `F.linear` on a CPU hands oneDNN the weight in torch's plain layout on every call;
oneDNN's packed-weight linear takes a weight laid out for it once. For the few rows of a decode
step that pays: in a micro-benchmark a 576x576 product for 64 rows took 0.14 ms packed against
0.28 ms plain. Packing every weight once per `decode` call (0.2 s for the bundled model) gives
bit-identical outputs (tested); bench/generation.py times the whole sampler with and without.
The two ops are the ones torch.compile's CPU backend uses for frozen weights; where torch lacks
them, layers keep their own forward.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch


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


def _packed_linear(layer: torch.nn.Linear, packed_weight: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    if inputs.dtype != torch.bfloat16:  # e.g. a float32 caller: the plain product, as the layer's own forward
        return torch.nn.functional.linear(inputs, layer.weight, layer.bias)
    return torch.ops.mkldnn._linear_pointwise(inputs, packed_weight, layer.bias, "none", [], "")


@contextlib.contextmanager
def packed_linear_weights(model: torch.nn.Module) -> Iterator[None]:
    """While open (and only under inference mode), the model's bfloat16 CPU linear layers use packed weights."""
    layers = packable_layers(model) if packing_available() and torch.is_inference_mode_enabled() else []
    try:
        for layer in layers:
            packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight)
            layer.forward = functools.partial(_packed_linear, layer, packed)
        yield
    finally:
        for layer in layers:
            vars(layer).pop("forward", None)
