"""Run `train.py` in this process and SIGKILL it at a named point (used by tests/test_loop.py).

    python tests/kill_at.py POINT OCCURRENCE -- <train.py flags>

POINT is one of
  batch:<step>        before the OCCURRENCE-th generation batch of a sampling step ("iter 1 corrections")
  filter              before the OCCURRENCE-th filter decision (one per correction)
  train_step          before the OCCURRENCE-th optimizer step of fine-tuning
  replace:<name>      after <name>'s temporary file is complete, just before the OCCURRENCE-th rename
                      that would put it in place (run.json, evaluation.parquet, adapter, ...)
The process kills itself with SIGKILL, as the kernel's OOM killer or `kill -9` would: no
finally blocks, no atexit handlers, no flushing. With KILL_AT_SIGNAL=SIGSTOP it stops there instead,
until a SIGCONT lets it go on (a run caught in the middle of a step).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers  # noqa: E402

import stasc.core.filtering  # noqa: E402
import stasc.run.storage  # noqa: E402
import stasc.sampling.transformers  # noqa: E402
from stasc.cli.train import train_main  # noqa: E402


def main() -> int:
    point, occurrence, separator, *train_args = sys.argv[1:]
    assert separator == "--", __doc__
    kind, _, detail = point.partition(":")
    target = int(occurrence)
    seen = 0

    def reached() -> None:
        nonlocal seen
        seen += 1
        if seen == target:
            os.kill(os.getpid(), getattr(signal, os.environ.get("KILL_AT_SIGNAL", "SIGKILL")))

    if kind == "batch":
        sampler = stasc.sampling.transformers.TransformersSampler
        sample, generate_batch = sampler.sample, sampler._generate_batch
        current = {"desc": None}

        def tracked_sample(self, conversations, num_samples, *, seed, desc, **settings):
            current["desc"] = desc
            return sample(self, conversations, num_samples, seed=seed, desc=desc, **settings)

        def killing_batch(self, *args, **kwargs):
            if current["desc"] == detail:
                reached()
            return generate_batch(self, *args, **kwargs)

        sampler.sample = tracked_sample
        sampler._generate_batch = killing_batch
    elif kind == "filter":
        keep = stasc.core.filtering.keep_correction

        def killing_keep(*args, **kwargs):
            reached()
            return keep(*args, **kwargs)

        stasc.core.filtering.keep_correction = killing_keep
    elif kind == "train_step":
        step = transformers.Trainer.training_step

        def killing_step(self, *args, **kwargs):
            reached()
            return step(self, *args, **kwargs)

        transformers.Trainer.training_step = killing_step
    elif kind == "replace":
        replace = os.replace

        def killing_replace(source, destination, *args, **kwargs):
            if Path(destination).name == detail:
                reached()
            return replace(source, destination, *args, **kwargs)

        stasc.run.storage.os.replace = killing_replace
    else:
        raise SystemExit(f"unknown kill point {point!r}")
    return train_main(train_args)


if __name__ == "__main__":
    raise SystemExit(main())
