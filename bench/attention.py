"""Training attention on a CPU: eager (plain matrix products) against SDPA, by conversation length.

    python bench/attention.py               # about a minute

Times one forward and backward pass of one attention layer with the bundled model's shapes
(query, key/value heads and head size from its config), in bfloat16, for a training pass of 4
right-padded conversations, at several lengths, through transformers' own eager and SDPA
attention functions. stasc.training.lora trains a batch with eager attention on a CPU up to
EAGER_ATTENTION_MAX_TOKENS tokens; this benchmark is where that threshold comes from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.llama.modeling_llama import eager_attention_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import append_result  # noqa: E402
from stasc.config import SuggestingParser  # noqa: E402
from stasc.modeling.models import resolve_model_path  # noqa: E402
from stasc.training.lora import EAGER_ATTENTION_MAX_TOKENS  # noqa: E402

LENGTHS = (128, 192, 256, 320, 384, 512, 768)
ROWS = 4  # conversations per forward pass: --train-batch-size 8 / --gradient-accumulation-steps 2


class AttentionLayer(torch.nn.Module):
    """What the attention functions read from the layer that calls them."""

    is_causal = True

    def __init__(self, key_value_groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = key_value_groups


def milliseconds(function, layer, length: int, heads: int, key_value_heads: int, head_size: int, repeats: int) -> float:
    """One forward + backward of the attention function, averaged over repeats."""
    query = torch.randn(ROWS, heads, length, head_size, dtype=torch.bfloat16, requires_grad=True)
    key = torch.randn(ROWS, key_value_heads, length, head_size, dtype=torch.bfloat16, requires_grad=True)
    value = torch.randn(ROWS, key_value_heads, length, head_size, dtype=torch.bfloat16, requires_grad=True)
    lengths = torch.linspace(length * 3 // 4, length, ROWS).long()  # right padding, as in a training batch
    allowed = torch.ones(length, length, dtype=torch.bool).tril() & (torch.arange(length) < lengths[:, None, None])
    mask = torch.zeros(ROWS, 1, length, length, dtype=torch.bfloat16).masked_fill(~allowed[:, None], float("-inf"))
    function(layer, query, key, value, mask, scaling=head_size**-0.5, dropout=0.0)[0].sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        output, _ = function(layer, query, key, value, mask, scaling=head_size**-0.5, dropout=0.0)
        output.sum().backward()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = SuggestingParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/results.md")
    args = parser.parse_args()
    config = AutoConfig.from_pretrained(resolve_model_path("bundled"))
    heads, key_value_heads = config.num_attention_heads, config.num_key_value_heads
    head_size = config.hidden_size // heads
    layer = AttentionLayer(heads // key_value_heads)
    rows = [
        f"- setting: one attention layer, {heads} query / {key_value_heads} key-value heads of {head_size}, "
        f"{ROWS} right-padded conversations per pass, bfloat16, forward + backward, mean of {args.repeats}; "
        f"stasc trains with eager up to {EAGER_ATTENTION_MAX_TOKENS} tokens",
        "",
        "| tokens | SDPA ms | eager ms | eager / SDPA |",
        "|---|---|---|---|",
    ]
    for length in LENGTHS:
        shapes = (length, heads, key_value_heads, head_size, args.repeats)
        sdpa = milliseconds(sdpa_attention_forward, layer, *shapes)
        eager = milliseconds(eager_attention_forward, layer, *shapes)
        rows.append(f"| {length} | {sdpa:.1f} | {eager:.1f} | {eager / sdpa:.2f} |")
    if not args.no_write:
        append_result("Training attention", rows)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
