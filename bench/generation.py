"""Generation throughput of stasc's sampler against plain `model.generate`, in one process.

    python bench/generation.py --quick      # < 1 minute; prints speedup_vs_generate=X.XX last
    python bench/generation.py              # more prompts, also the per-question loop baseline; the
                                            # ratios' measurements 3 times each, in turn, fastest kept

Same bundled model, dtype, prompts (built-in training questions), sampling settings and
batch of sequences for both; generated tokens are counted up to and including end-of-turn.
Also checks greedy equality with generate (in float32, where it must be exact, and in the
benchmark's dtype, next to how often generate agrees with itself when only its batching
changes) and reports the share of the machine's bfloat16 matrix-multiply rate that
generation reaches (FLOPs per generated token = 2 x parameters). Without --quick it also times
sampling with the loop's LoRA adapter (merged into the packed weights, and not), and what one
decode step costs before any real arithmetic: the sampler on a model with the bundled model's
layers and heads but 8 dimensions per head.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stasc.sampling.cpu_engine import decoding, packed_weights, shared_rows  # noqa: E402
from bench.common import append_result, matmul_gflops, question_prompts  # noqa: E402
from stasc.config import StascConfig, SuggestingParser  # noqa: E402
from stasc.sampling.cpu_engine.decoding import DecodeSettings, decode, stop_token_ids  # noqa: E402
from stasc.run.loop import lora_config  # noqa: E402
from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path  # noqa: E402


UNBUFFERED = decoding.token_probabilities  # without a scratch buffer: fresh tensors at every step
ABLATIONS = {
    "without the shared prompt prefix (each prompt prefilled whole)":
        (decoding, "shared_prompt_prefix", lambda prompts: 0),
    "with the model's own attention (SDPA; no shared prefix then)":
        (decoding, "supports_shared_prefix_attention", lambda model: False),
    "without packed weights (plain F.linear)": (packed_weights, "packing_available", lambda: False),
    "with fresh float32 tensors for top-p at every step":
        (decoding, "token_probabilities",
         lambda logits, temperature, scratch=None: UNBUFFERED(logits, temperature)),
    "with a top-256 shortlist for top-p": (decoding, "SHORTLIST", 256),
    "with the shortlist's topk over the whole vocabulary (not the blocks with the largest maxima)":
        (decoding, "shortlist", lambda probs, size: probs.topk(size, dim=-1)),
    "with every unfinished row copied when rows finish (as selecting them does)":
        (shared_rows, "compaction_moves",
         lambda finished: (list(range(finished.count(False))), [row for row, done in enumerate(finished) if not done])),
    "with the model's own forward for the prompts (packed layers, length groups) and every step (no Llama steps)":
        (decoding, "supports_llama_steps", lambda model: False),
    "with a row of its own for every sample (samples that drew the same tokens computed apart)":
        (decoding, "sample_groups",
         lambda prompts, samples: [[sequence] for sequence in range(prompts * samples)]),
}


def count_tokens(rows: list[list[int]], stops: set[int]) -> int:
    total = 0
    for row in rows:
        for token in row:
            total += 1
            if token in stops:
                break
    return total


def row_steps(rows: list[list[int]], samples: int) -> tuple[int, int]:
    """Forward steps the sequences needed (one after each drawn token but the last), and the row-steps that computed
    them: the samples of a prompt that have drawn the same tokens share a row
    (stasc.sampling.cpu_engine.shared_rows)."""
    needed = sum(len(row) - 1 for row in rows)
    computed = 0
    for first in range(0, len(rows), samples):
        group = rows[first : first + samples]
        for step in range(max(len(row) for row in group) - 1):
            computed += len({tuple(row[: step + 1]) for row in group if len(row) - 1 > step})
    return needed, computed


def plain_generate(model, tokenizer, prompts, num_samples, settings, batch_prompts, seed):
    """The baseline: transformers' generate with num_return_sequences, batch by batch."""
    rows = []
    for start in range(0, len(prompts), batch_prompts):
        chunk = prompts[start : start + batch_prompts]
        padded = tokenizer.pad({"input_ids": chunk}, padding=True, return_tensors="pt", padding_side="left")
        torch.manual_seed(seed + start)
        output = model.generate(
            **padded, max_new_tokens=settings.max_new_tokens, do_sample=settings.temperature > 0,
            temperature=settings.temperature, top_p=settings.top_p, top_k=None,
            num_return_sequences=num_samples, pad_token_id=tokenizer.pad_token_id,
        )
        rows.extend(output[:, padded["input_ids"].shape[1] :].tolist())
    return rows


def our_batches(prompts, batch_prompts) -> list[list[int]]:
    """The prompts of each of the sampler's batches: longest first, as the loop's sampler batches them."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    return [order[start : start + batch_prompts] for start in range(0, len(order), batch_prompts)]


def ours(model, tokenizer, prompts, num_samples, settings, batch_prompts, seed):
    stops = stop_token_ids(model, tokenizer)
    rows: dict[int, list[int]] = {}
    for number, indices in enumerate(our_batches(prompts, batch_prompts)):
        new = decode(model, [prompts[i] for i in indices], num_samples, settings,
                     pad_token_id=tokenizer.pad_token_id, stop_ids=stops, seed=seed + number * batch_prompts)
        for position, index in enumerate(indices):
            for sample in range(num_samples):
                row = new[position * num_samples + sample]
                rows[index * num_samples + sample] = row + [stops[0]] if len(row) < settings.max_new_tokens else row
    return [rows[key] for key in sorted(rows)]


def greedy_matches(model, tokenizer, prompts, per_prompt_too: bool) -> tuple[int, int | None]:
    """How many prompts get exactly the greedy tokens of generate (all prompts in one batch) from stasc's
    sampler, and (per_prompt_too) from generate itself called once per prompt: how much batching alone changes them."""
    greedy = DecodeSettings(24, 0.0, 1.0)

    def until_stop(rows: list[list[int]]) -> list[list[int]]:
        return [row[: row.index(2) + 1] if 2 in row else row for row in rows]

    reference = until_stop(plain_generate(model, tokenizer, prompts, 1, greedy, len(prompts), 0))
    sampled = ours(model, tokenizer, prompts, 1, greedy, len(prompts), 0)
    if not per_prompt_too:
        return sum(a == b for a, b in zip(sampled, reference)), None
    per_prompt = until_stop(plain_generate(model, tokenizer, prompts, 1, greedy, 1, 0))
    return sum(a == b for a, b in zip(sampled, reference)), sum(a == b for a, b in zip(per_prompt, reference))


def with_adapter(model):
    """The model with a LoRA adapter as the loop trains one (its default rank and layers), non-zero so it counts."""
    from peft import get_peft_model

    adapted = get_peft_model(model, lora_config(StascConfig()))
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=1e-3)
    return adapted.eval()


def step_overhead_ms(model, dtype: torch.dtype, steps: int = 32) -> float:
    """Milliseconds per decode step of 16 rows for a model with `model`'s layers and heads but 8 dimensions per head:
    what the layers' operations cost themselves (dispatch, Python), with almost no arithmetic."""
    heads = model.config.num_attention_heads
    config = type(model.config).from_dict(
        {**model.config.to_dict(), "hidden_size": 8 * heads, "head_dim": 8, "intermediate_size": 128, "vocab_size": 512}
    )
    narrow = type(model)(config).to(dtype).eval()
    prompts = [[1] * 40 + [3 + index] * 8 for index in range(8)]

    def run(new_tokens: int) -> None:  # no stop token: every row runs all steps
        decode(narrow, prompts, 2, DecodeSettings(new_tokens, 0.6, 0.9), pad_token_id=0, stop_ids=[-1], seed=0)

    run(2)
    _, seconds = timed(run, steps)
    return seconds / steps * 1000


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = SuggestingParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="16 questions x 4 samples; no per-question baseline, ablations or per-prompt generate check")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="sequences per batch of plain generate")
    parser.add_argument("--our-batch", type=int, default=None,
                        help="sequences per batch of stasc's sampler (default: the loop's --generation-batch-size)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of generate, stasc and the per-question loop, taken in turn; each keeps its fastest "
                             "(this machine's speed drifts by 10-25%% from minute to minute; --quick: 1)")
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/results.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    questions = 16 if args.quick else args.questions
    repeats = 1 if args.quick else max(1, args.repeats)

    path = resolve_model_path("bundled")
    tokenizer = load_tokenizer(path)
    dtype = pick_dtype("auto")
    model = load_model(path, dtype=dtype)
    prompts = question_prompts(tokenizer, questions)
    settings = DecodeSettings(args.max_new_tokens, 0.6, 0.9)
    batch_prompts = max(1, args.batch // args.samples)
    our_batch = args.our_batch or StascConfig().generation_batch_size
    our_prompts = max(1, our_batch // args.samples)
    stops = set(stop_token_ids(model, tokenizer))
    parameters = sum(p.numel() for p in model.parameters())  # before an adapter is added below

    with torch.inference_mode():
        ours(model, tokenizer, prompts[:2], 2, DecodeSettings(4, 0.6, 0.9), 2, 0)  # warm up kernels
        plain_generate(model, tokenizer, prompts[:2], 2, DecodeSettings(4, 0.6, 0.9), 2, 0)
        greedy_agreement = {
            name: greedy_matches(greedy_model, tokenizer, prompts[:8], per_prompt_too=not args.quick)
            for name, greedy_model in (("float32", load_model(path, dtype=torch.float32)), (str(dtype), model))
        }
        measured = {  # the ratios' three measurements, taken in turn `repeats` times; each keeps its fastest run
            "generate": lambda: plain_generate(model, tokenizer, prompts, args.samples, settings, batch_prompts, 0),
            "stasc": lambda: ours(model, tokenizer, prompts, args.samples, settings, our_prompts, 0),
        }
        if not args.quick:
            measured["loop"] = lambda: plain_generate(model, tokenizer, prompts[:16], args.samples, settings, 1, 0)
        runs = {name: [] for name in measured}
        for _ in range(repeats):
            for name, measure in measured.items():
                rows, seconds = timed(measure)
                runs[name].append((count_tokens(rows, stops) / seconds, rows, seconds))
        (base_rate, _, _), (our_rate, our_rows, our_seconds) = max(runs["generate"]), max(runs["stasc"])
        ablation_rates = {}
        if not args.quick:
            for name, (module, attribute, replacement) in ABLATIONS.items():
                with mock.patch.object(module, attribute, replacement):
                    ablated_rows, ablated_seconds = timed(ours, model, tokenizer, prompts, args.samples, settings,
                                                          our_prompts, 0)
                ablation_rates[name] = count_tokens(ablated_rows, stops) / ablated_seconds
        loop_rate = max(runs["loop"])[0] if "loop" in runs else None
        adapter_rates = {}
        overhead_ms = None
        if not args.quick:
            adapted = with_adapter(model)  # last: PEFT puts its layers into the model
            for name, unmerged in (("merged into the packed weights", False), ("as separate products", True)):
                with contextlib.ExitStack() as context:
                    if unmerged:  # PEFT's own forward at every step
                        context.enter_context(
                            mock.patch.object(packed_weights, "mergeable_lora_layers", lambda model: []))
                        context.enter_context(
                            mock.patch.object(decoding, "supports_llama_steps", lambda model: False))
                    adapted_rows, adapted_seconds = timed(ours, adapted, tokenizer, prompts, args.samples, settings,
                                                          our_prompts, 0)
                adapter_rates[name] = count_tokens(adapted_rows, stops) / adapted_seconds
            overhead_ms = step_overhead_ms(model, dtype)
    peak = matmul_gflops(dtype)
    share = our_rate * 2 * parameters / 1e9 / peak
    rows = [
        f"- setting: {questions} questions x {args.samples} samples, batch {args.batch} sequences for generate and "
        f"{our_batch} for stasc, {dtype}, "
        f"T 0.6, top-p 0.9, max {args.max_new_tokens} new tokens",
        f"- plain generate: {base_rate:.0f} tok/s; stasc sampler: {our_rate:.0f} tok/s; "
        f"**speedup {our_rate / base_rate:.2f}x**"
        + (f" (fastest of {repeats} runs each, taken in turn: generate "
           + " / ".join(f"{rate:.0f}" for rate, _, _ in runs["generate"]) + ", stasc "
           + " / ".join(f"{rate:.0f}" for rate, _, _ in runs["stasc"]) + ")" if repeats > 1 else ""),
        "- greedy output identical to generate's with all 8 prompts in one batch, prompts of 8: stasc sampler "
        + ", ".join(f"{name} {ours_count}" for name, (ours_count, _) in greedy_agreement.items())
        + ("" if args.quick else "; generate itself, one prompt per call: "
           + ", ".join(f"{name} {own_count}" for name, (_, own_count) in greedy_agreement.items()))
        + " (bfloat16 rounds differently for other batch shapes, e.g. a shared prefix prefilled on its own, and "
        "a greedy choice between near-equal tokens can flip)",
        f"- matmul peak measured now: {peak:.0f} GFLOP/s ({dtype}); stasc sampler reaches {share:.1%} of it",
    ]
    if ablation_rates:
        rows.append("- ideas, the sampler with one of them undone: "
                    + "; ".join(f"{name} {rate:.0f} tok/s" for name, rate in ablation_rates.items())
                    + f"; against {our_rate:.0f} tok/s with all")
    if adapter_rates:
        rows.append("- with a LoRA adapter (the loop's: rank 8 on all linear layers; it samples so after its first "
                    "training): "
                    + "; ".join(f"adapter {name} {rate:.0f} tok/s" for name, rate in adapter_rates.items()))
    if not args.quick:
        needed, computed = row_steps(our_rows, args.samples)
        rows.append(f"- samples of a prompt sharing a row while their tokens agree: the {len(our_rows)} sequences "
                    f"needed {needed} forward steps, computed as {computed} row-steps "
                    f"({1 - computed / needed:.1%} fewer)")
    if overhead_ms is not None:
        steps = sum(
            max(len(our_rows[index * args.samples + sample]) for index in batch for sample in range(args.samples))
            for batch in our_batches(prompts, our_prompts)
        )
        rows.append(f"- one decode step of 16 rows with the same layers and heads but 8 dimensions per head (almost no "
                    f"arithmetic): {overhead_ms:.1f} ms; x the {steps} steps the sampler's batches took (each as "
                    f"many as its longest answer) = {overhead_ms * steps / 1000:.1f} s of its {our_seconds:.1f} s")
    if loop_rate is not None:
        rows.append(f"- per-question generate loop (STaR/STaSC scripts), 16 of the questions: {loop_rate:.0f} tok/s"
                    + (" (fastest of " + " / ".join(f"{rate:.0f}" for rate, _, _ in runs["loop"]) + ")"
                       if repeats > 1 else "")
                    + f"; stasc sampler is {our_rate / loop_rate:.1f}x faster")
    if not args.no_write:
        append_result("Generation" + (" (quick)" if args.quick else ""), rows)
    print("\n".join(rows))
    print(f"speedup_vs_generate={our_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
