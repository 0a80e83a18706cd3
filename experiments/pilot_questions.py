"""Pilot pass of candidate questions: how often the base model answers each one right.

    python experiments/pilot_questions.py CANDIDATES.jsonl OUT.jsonl [--samples 8] [--model bundled]

CANDIDATES.jsonl has one object per line with "question" and "answers" (extra keys are kept). Every
question gets --samples initial answers from the base model, with the loop's own prompt, sampler and
in-accuracy (whole output), at --temperature / --top-p / --max-new-tokens; OUT.jsonl repeats each
candidate with "pilot_correct" (how many samples were right) and "pilot_samples". Questions the model
answers right sometimes but not always are the ones a self-correction run can learn from; the built-in
set (stasc/resources/easy_qa.jsonl) was selected with this pass (see its data card).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from stasc.config import DEFAULT_INSTRUCTIONS, StascConfig, SuggestingParser
from stasc.core.prompts import initial_messages
from stasc.core.rewards import score_output
from stasc.modeling.models import load_model, load_tokenizer, pick_dtype, resolve_model_path
from stasc.modeling.policy import Policy
from stasc.run.loop import lora_config
from stasc.sampling.transformers import SamplingSettings, TransformersSampler


def main() -> None:
    parser = SuggestingParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=256, help="questions per sampling call (bounds memory)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    rows = [json.loads(line) for line in args.candidates.read_text(encoding="utf-8").splitlines() if line.strip()]
    model_path = resolve_model_path(args.model)
    config = StascConfig(model=args.model)
    policy = Policy(
        load_model(model_path, dtype=pick_dtype("auto")), load_tokenizer(model_path), lora_config(config), seed=args.seed
    )
    sampler = TransformersSampler(
        policy, SamplingSettings(args.max_new_tokens, args.temperature, args.top_p, batch_size=256)
    )
    done = {}
    if args.out.exists():  # resume: keep what an interrupted pass already measured
        done = {row["question"]: row for row in map(json.loads, args.out.read_text(encoding="utf-8").splitlines())}
    with args.out.open("a", encoding="utf-8") as out:
        pending = [row for row in rows if row["question"] not in done]
        for start in range(0, len(pending), args.chunk):
            chunk = pending[start : start + args.chunk]
            prompts = [initial_messages(row["question"], DEFAULT_INSTRUCTIONS) for row in chunk]
            samples = sampler.sample(prompts, args.samples, seed=args.seed + start, desc=f"pilot {start}")
            for row, answers in zip(chunk, samples, strict=True):
                correct = sum(
                    int(score_output(answer, row["answers"], metric="in_acc", extraction="full")) for answer in answers
                )
                out.write(json.dumps({**row, "pilot_correct": correct, "pilot_samples": len(answers)}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
