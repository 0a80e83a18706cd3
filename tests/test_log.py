"""The console: one live progress bar per step of a run, one line per iteration, no Trainer dicts, no warnings a
user cannot act on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from stasc.config import StascConfig
from stasc.log import UNACTIONABLE_WARNINGS, progress, setup_logging
from stasc.modeling.models import load_model, load_tokenizer
from stasc.modeling.policy import Policy
from stasc.run.loop import lora_config
from stasc.sampling.transformers import SamplingSettings, TransformersSampler

REPO = Path(__file__).resolve().parents[1]
CONVERSATION = [{"role": "user", "content": "Which city is test 1?"}]


def visible_lines(stream: str) -> list[str]:
    """What a terminal shows of a stream: each carriage return starts its line over."""
    return [line.rsplit("\r", 1)[-1].rstrip() for line in stream.split("\n")]


@pytest.mark.slow
def test_a_run_shows_one_live_bar_per_step_and_one_line_per_iteration(tmp_path, tiny_model_dir, city_questions):
    train, test = city_questions  # 8 training and 4 test questions
    command = [
        sys.executable, str(REPO / "train.py"), "--model", str(tiny_model_dir), "--dataset", str(train),
        "--test-dataset", str(test), "--output-dir", str(tmp_path / "run"), "--iterations", "2", "--n-init", "3",
        "--n-corr", "3", "--max-new-tokens", "8", "--dtype", "float32", "--train-batch-size", "4",
        "--learning-rate", "5e-3", "--variant", "EIE",
        "--generation-batch-size", "6", "--sampling-chunk-size", "3",  # every step: several chunks and batches
    ]
    environment = {**os.environ, "TQDM_MININTERVAL": "0"}  # draw every update, as a slow step would
    result = subprocess.run(command, cwd=REPO, capture_output=True, env=environment, check=True)
    stderr = result.stderr.decode("utf-8")  # not text=True, which would turn each carriage return into a newline

    steps = {"iter 0 eval initial": 4, "iter 0 eval corrections": 4}
    for iteration in (1, 2):
        steps |= {f"iter {iteration} initial answers": 8 * 3, f"iter {iteration} corrections": 8 * 3 * 3,
                  f"iter {iteration} eval initial": 4, f"iter {iteration} eval corrections": 4}
    shown = visible_lines(stderr)
    for desc, answers in steps.items():
        bars = [line for line in shown if line.startswith(f"{desc}:")]
        assert len(bars) == 1, f"{desc}: {len(bars)} bars\n{stderr[-3000:]}"
        assert f" {answers}/{answers} [" in bars[0], bars[0]
        drawn = next(line for line in stderr.split("\n") if line.lstrip("\r").startswith(f"{desc}:"))
        counts = [int(count) for count in re.findall(rf"{re.escape(desc)}:.*? (\d+)/{answers} \[", drawn)]
        assert counts == sorted(counts) and any(0 < count < answers for count in counts), f"{desc}: {counts}"
    for iteration in (1, 2):
        (training,) = [line for line in shown if line.startswith(f"iter {iteration} training:")]
        assert re.search(r" (\d+)/\1 \[.*loss=\d+\.\d{4}\]$", training), training
    metrics = [line for line in shown if re.search(r"Iteration \d: acc_t1 .*, peak RSS \d+ MB$", line)]
    assert len(metrics) == 3
    assert not [line for line in shown if line.startswith("{")], "Trainer printed its log records"
    assert "FutureWarning" not in stderr


def test_a_sampling_call_moves_the_bar_as_its_answers_end(tiny_model_dir, capsys) -> None:
    model = load_model(str(tiny_model_dir), dtype=torch.float32)
    policy = Policy(model, load_tokenizer(str(tiny_model_dir)), lora_config(StascConfig()), seed=0)
    settings = SamplingSettings(max_new_tokens=16, temperature=1.0, top_p=1.0, batch_size=64)
    sampler = TransformersSampler(policy, settings)
    counts: list[int] = []
    with progress("step", 8 * 4, "answer") as bar:
        update = bar.update

        def recorded(n: float = 1) -> None:
            update(n)
            counts.append(bar.n)

        bar.update = recorded  # type: ignore[method-assign]
        answers = sampler.sample([CONVERSATION] * 8, 4, seed=0, desc="call")  # 32 answers: one batch, one decode
    assert [len(samples) for samples in answers] == [4] * 8
    assert counts == sorted(counts) and counts[-1] == 32
    assert len({count for count in counts if 0 < count < 32}) >= 2, counts
    stderr = capsys.readouterr().err
    assert "step:" in stderr and "call:" not in stderr  # the call drew on the step's bar, not a bar of its own


def test_warnings_users_cannot_act_on_are_hidden_and_others_shown() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup_logging("info")
        category, _ = UNACTIONABLE_WARNINGS[0]
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", category)
        warnings.warn("`something_else` is deprecated and will be removed in v6.", FutureWarning)
    assert [str(warning.message) for warning in caught] == [
        "`something_else` is deprecated and will be removed in v6."
    ]
