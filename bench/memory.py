"""Peak memory of one sampling call of corrections against the key/value cache it has to hold; and, with
--loop, what stasc's glibc setting (stasc.run.memory) costs in time against the memory it saves.

    python bench/memory.py --quick     # 64 and 256 rows (about 3 minutes on one thread)
    python bench/memory.py             # 64, 128, 256 and 512 rows
    python bench/memory.py --loop      # a shortened loop under three glibc settings (about 13 minutes)

Each measurement runs in a child process of its own on one CPU thread, with the loop's memory settings
(stasc.run.memory): the bundled model samples one initial answer for each of the first ROWS built-in training
questions, then one correction of each in a single call at the loop's batch of 256 sequences. The result is
the call's peak resident memory above what the process held before it, against the baseline that cannot be
avoided: the bfloat16 keys and values of every row at its longest (the longest correction prompt after the
shared prefix, plus 64 new tokens). A ratio near 1 means the sampler holds little beside the cache; the
ratio also shows whether the peak grows with rows beyond one batch (it must not: the loop samples in batches).

--loop runs, in a child process per setting and on one thread, what an iteration does to memory: 256 corrections,
fine-tuning on 16 conversations, 256 corrections with the adapter, fine-tuning again, 256 more corrections (each
followed by the loop's release of freed memory). The settings: stasc's (allocations of 1 MB and more mapped on
pages of their own), MALLOC_MMAP_THRESHOLD_=33554432 in the environment (which stasc leaves alone), and glibc's
own dynamic threshold (the baseline). Wall time, kernel time and peak come from the child's resource usage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import append_result  # noqa: E402
from stasc.config import SuggestingParser  # noqa: E402

BATCH = 256
MAX_NEW_TOKENS = 64


def measure(rows: int) -> dict[str, float]:
    """One child process's numbers for `rows` corrections."""
    output = subprocess.run([sys.executable, __file__, "--child", str(rows)], check=True, capture_output=True,
                            text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


LOOP_SETTINGS = {
    "stasc's (M_MMAP_THRESHOLD 1 MB)": {},
    "MALLOC_MMAP_THRESHOLD_=33554432": {"MALLOC_MMAP_THRESHOLD_": "33554432"},
    "glibc's own (dynamic threshold)": {"STASC_BENCH_GLIBC_DEFAULT": "1"},
}


def measure_loop(setting: dict[str, str]) -> dict[str, float]:
    """Wall time, kernel time and peak of one child running the shortened loop under a glibc setting."""
    start = time.perf_counter()
    child_process = subprocess.Popen([sys.executable, __file__, "--loop-child"], env={**os.environ, **setting},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child_process.pid, 0)  # this child's own resource usage
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the loop failed under the glibc setting {setting}; run --loop-child to see why")
    return {"wall_s": time.perf_counter() - start, "kernel_s": usage.ru_stime, "peak_kb": usage.ru_maxrss}


def loop_child() -> None:
    import tempfile

    import torch

    from stasc.config import DEFAULT_CORRECTION_INSTRUCTIONS, DEFAULT_INSTRUCTIONS, StascConfig
    from stasc.core.prompts import correction_messages, initial_messages, training_messages
    from stasc.data import load_qa_splits
    from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path
    from stasc.modeling.policy import Policy
    from stasc.run.loop import lora_config
    from stasc.run.memory import limit_retained_memory, release_freed_memory
    from stasc.sampling.factory import make_sampler
    from stasc.training.lora import train_adapter

    torch.set_num_threads(1)
    if not os.environ.get("STASC_BENCH_GLIBC_DEFAULT"):
        limit_retained_memory()
    config = StascConfig(generation_batch_size=BATCH, max_new_tokens=MAX_NEW_TOKENS)
    path = resolve_model_path(config.model)
    tokenizer = load_tokenizer(path)
    policy = Policy(load_model(path, dtype=pick_dtype(config.dtype)), tokenizer, lora_config(config), seed=0)
    sampler = make_sampler(config, policy, path)
    questions = [example.question for example in load_qa_splits("builtin", max_train=256)[0]]
    initial = [answers[0] for answers in sampler.sample(
        [initial_messages(q, DEFAULT_INSTRUCTIONS) for q in questions], 1, adapter=None, seed=0, desc="initial")]
    prompts = [correction_messages(q, a, DEFAULT_INSTRUCTIONS, DEFAULT_CORRECTION_INSTRUCTIONS)
               for q, a in zip(questions, initial, strict=True)]
    adapter = None
    for round_ in range(3):
        corrections = sampler.sample(prompts, 1, adapter=adapter, seed=round_, desc="corrections")
        release_freed_memory()
        if round_ == 2:
            break
        conversations = [training_messages(q, a, c[0], DEFAULT_INSTRUCTIONS, DEFAULT_CORRECTION_INSTRUCTIONS)
                         for q, a, c in list(zip(questions, initial, corrections, strict=True))[:16]]
        policy.activate(adapter)
        train_adapter(policy, conversations, config, seed=round_)
        release_freed_memory()
        adapter = Path(tempfile.mkdtemp(prefix="stasc-bench-")) / "adapter"
        policy.save_adapter(adapter)


def child(rows: int) -> None:
    import torch

    from stasc.config import DEFAULT_CORRECTION_INSTRUCTIONS, DEFAULT_INSTRUCTIONS, StascConfig
    from stasc.core.prompts import correction_messages, initial_messages
    from stasc.data import load_qa_splits
    from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path
    from stasc.modeling.policy import Policy
    from stasc.run.loop import lora_config
    from stasc.run.memory import limit_retained_memory, peak_rss_mb, release_freed_memory, reset_peak_rss
    from stasc.sampling.cpu_engine.decoding import shared_prompt_prefix
    from stasc.sampling.factory import make_sampler

    torch.set_num_threads(1)
    limit_retained_memory()
    config = StascConfig(generation_batch_size=BATCH, max_new_tokens=MAX_NEW_TOKENS)
    path = resolve_model_path(config.model)
    tokenizer = load_tokenizer(path)
    model = load_model(path, dtype=pick_dtype(config.dtype))
    sampler = make_sampler(config, Policy(model, tokenizer, lora_config(config), seed=0), path)
    questions = [example.question for example in load_qa_splits("builtin", max_train=rows)[0]]
    initial = sampler.sample([initial_messages(q, DEFAULT_INSTRUCTIONS) for q in questions], 1, adapter=None, seed=0,
                             desc="initial answers")
    conversations = [correction_messages(q, answers[0], DEFAULT_INSTRUCTIONS, DEFAULT_CORRECTION_INSTRUCTIONS)
                     for q, answers in zip(questions, initial, strict=True)]
    prompts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False)
               for c in conversations]
    release_freed_memory()
    reset_peak_rss()
    before = peak_rss_mb()
    sampler.sample(conversations, 1, adapter=None, seed=1, desc="corrections")
    peak = peak_rss_mb()
    text = model.config
    head_dim = text.hidden_size // text.num_attention_heads
    width = max(len(p) for p in prompts) - shared_prompt_prefix(prompts) + MAX_NEW_TOKENS
    per_row = text.num_hidden_layers * 2 * text.num_key_value_heads * head_dim * model.dtype.itemsize * width
    cache = min(rows, BATCH) * per_row / 2**20
    print(json.dumps({"rows": rows, "before_mb": before, "peak_mb": peak, "cache_mb": cache}))


def main() -> None:
    parser = SuggestingParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 and 256 rows only")
    parser.add_argument("--loop", action="store_true", help="the shortened loop under three glibc settings")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loop-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.loop_child:
        loop_child()
        return
    if args.loop:
        loop = {name: measure_loop(setting) for name, setting in LOOP_SETTINGS.items()}
        baseline = loop["glibc's own (dynamic threshold)"]
        lines = ["- setting: 256 corrections, fine-tuning on 16 conversations, 256 corrections with the adapter, "
                 "fine-tuning, 256 corrections; one thread, bundled model, batch 256; one child process each",
                 "- glibc setting: wall / kernel time / peak; wall and peak as ratios of glibc's own"]
        for name, result in loop.items():
            lines.append(f"  - {name}: {result['wall_s']:.0f} s / {result['kernel_s']:.0f} s / {result['peak_kb']:,} kB"
                         f" = {result['wall_s'] / baseline['wall_s']:.2f}x time, "
                         f"{result['peak_kb'] / baseline['peak_kb']:.2f}x memory")
            print(f"{name}: wall_s={result['wall_s']:.0f} kernel_s={result['kernel_s']:.0f} "
                  f"peak_kb={result['peak_kb']}")
        append_result("glibc memory setting", lines)
        return
    results = [measure(rows) for rows in ([64, 256] if args.quick else [64, 128, 256, 512])]
    lines = [f"- setting: corrections of the first ROWS built-in training questions in one sampling call, batch "
             f"{BATCH} sequences, one thread, bundled model, max {MAX_NEW_TOKENS} new tokens, stasc.run.memory's "
             "settings; each in its own process",
             "- rows: peak above the process before the call / the key-value cache of one batch at its longest "
             "(the baseline) = ratio"]
    for result in results:
        above = result["peak_mb"] - result["before_mb"]
        lines.append(f"  - {result['rows']}: {above:.0f} MB / {result['cache_mb']:.0f} MB = "
                     f"{above / result['cache_mb']:.2f}x (process peak {result['peak_mb']:.0f} MB)")
        print(f"rows={result['rows']} above_mb={above:.0f} cache_mb={result['cache_mb']:.0f} "
              f"ratio={above / result['cache_mb']:.2f} peak_mb={result['peak_mb']:.0f}")
    append_result("Sampling memory" + (" (quick)" if args.quick else ""), lines)


if __name__ == "__main__":
    main()
