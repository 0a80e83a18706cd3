"""End-to-end STaSC runs with a tiny random model and the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from stasc.config import PAPER_VARIANTS, StascConfig
from stasc.errors import StascError
from stasc.run import loop
from stasc.run.loop import StascRun, check_resumable
from stasc.run.manifest import read_manifest, write_manifest

from testing_utils import assert_documented, make_config


class RecordingSampler:
    """Delegates to the real sampler and records which model (adapter) each step used."""

    def __init__(self, inner, fail_on: str | None = None) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str | None]] = []
        self.fail_on = fail_on

    def sample(self, conversations, num_samples, *, adapter, seed, desc, temperature=None):
        if desc == self.fail_on:
            raise KeyboardInterrupt
        self.calls.append((desc, None if adapter is None else Path(adapter).parent.name))
        return self.inner.sample(conversations, num_samples, adapter=adapter, seed=seed, desc=desc, temperature=temperature)


def start(config: StascConfig, fail_on: str | None = None) -> tuple[StascRun, RecordingSampler]:
    run = StascRun(config)
    recorder = RecordingSampler(run.sampler, fail_on)
    run.sampler = recorder
    return run, recorder


def base_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("variant", [*PAPER_VARIANTS, "EBF", "FAE"])
def test_every_variant_runs_two_iterations(tmp_path, tiny_model_dir, city_questions, variant) -> None:
    config = make_config(tmp_path, tiny_model_dir, city_questions, variant=variant)
    run, recorder = start(config)
    manifest = run.run()
    run_dir = Path(config.output_dir)

    assert manifest == read_manifest(run_dir)
    assert manifest["status"] == "complete" and manifest["variant"] == variant
    assert [entry["iteration"] for entry in manifest["iterations"]] == [0, 1, 2]
    for entry in manifest["iterations"]:
        for key in ("initial_in_acc", "correction_in_acc", "correct_to_incorrect", "incorrect_to_correct"):
            assert 0.0 <= entry["metrics"][key] <= 1.0
        evaluation = pd.read_parquet(run_dir / entry["evaluation"])
        assert len(evaluation) == 4 and evaluation["correction"].map(type).eq(str).all()
        assert entry["metrics"]["initial_in_acc"] == pytest.approx(evaluation["initial_in_acc"].mean())

    first = manifest["iterations"][1]
    assert first["kept_examples"] > 0, "the tiny model gives mixed rewards, so the filter keeps something"
    train = pd.read_parquet(run_dir / first["train_data"])
    assert {"question", "answers", "initial_answer", "correction", "initial_reward", "correction_reward", "messages"} <= set(train.columns)
    assert (train["correction_reward"] == 1).all()
    if variant[1] == "I":
        assert (train["initial_reward"] == 0).all()
    corrections = pd.read_parquet(run_dir / first["corrections"])
    assert len(corrections) == 8 * config.n_init * config.n_corr
    assert corrections.groupby(["question_id", "initial_index"]).size().eq(config.n_corr).all()
    messages = train["messages"].iloc[0]
    assert messages[-1]["content"] == train["correction"].iloc[0]
    assert messages[1]["content"] == train["initial_answer"].iloc[0]

    # which model each step sampled from
    calls = dict(recorder.calls)
    assert calls["iter 1 initial answers"] is None and calls["iter 1 corrections"] is None
    assert calls["iter 2 corrections"] == "iteration_01"
    if variant[0] == "E":
        assert calls["iter 2 initial answers"] == "iteration_01"
        assert calls["iter 2 eval initial"] == "iteration_02"
    else:
        assert "iter 2 initial answers" not in calls  # M0's answers from iteration 1 are reused
        assert manifest["iterations"][2]["initial_answers"] == first["initial_answers"]
        assert "iter 2 eval initial" not in calls
        assert manifest["iterations"][2]["metrics"]["initial_in_acc"] == manifest["iterations"][0]["metrics"]["initial_in_acc"]

    # where fine-tuning started, and what it changed
    second = manifest["iterations"][2]
    if second["training"] is not None:
        expected = "iteration_01/adapter" if variant[2] == "E" else "fresh"
        assert second["training"]["started_from"] == expected
    adapter = load_file(str(run_dir / first["adapter"] / "adapter_model.safetensors"))
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().sum() > 0 for tensor in lora_b), "LoRA B starts at zero; training moved it"
    assert len(adapter) == len([n for n in adapter if "lora_" in n]), "only adapter weights are saved"
    saved_base = base_weights(tiny_model_dir)
    live_base = {
        name.replace("base_model.model.", "").replace(".base_layer", ""): tensor
        for name, tensor in run.policy.model.state_dict().items()
        if "lora_" not in name
    }
    for name, tensor in saved_base.items():
        assert torch.equal(live_base[name], tensor), f"base weight {name} changed"
    assert not list(run_dir.rglob("model.safetensors")), "full models are never saved"


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(tmp_path, tiny_model_dir, city_questions, monkeypatch) -> None:
    reference_config = make_config(tmp_path / "a", tiny_model_dir, city_questions)
    reference, _ = start(reference_config)
    expected = reference.run()

    config = make_config(tmp_path / "b", tiny_model_dir, city_questions)
    # interrupt at a different step each time: evaluation, sampling, training, evaluation, sampling
    for fail_on in ("iter 0 eval corrections", "iter 1 corrections", "training", "iter 1 eval corrections",
                    "iter 2 corrections"):
        interrupted, _ = start(config, fail_on=fail_on)
        if fail_on == "training":
            def crash(*args, **kwargs):
                raise KeyboardInterrupt
            monkeypatch.setattr("stasc.run.loop.train_adapter", crash)
        with pytest.raises(KeyboardInterrupt):
            interrupted.run()
        monkeypatch.undo()
    resumed, recorder = start(config)
    manifest = resumed.run()
    assert [desc for desc, _ in recorder.calls] == ["iter 2 corrections", "iter 2 eval initial", "iter 2 eval corrections"]

    run_a, run_b = Path(reference_config.output_dir), Path(config.output_dir)
    assert [e["metrics"] for e in manifest["iterations"]] == [e["metrics"] for e in expected["iterations"]]
    for entry in expected["iterations"]:
        for key in ("evaluation", "corrections", "train_data"):
            if key in entry:
                pd.testing.assert_frame_equal(pd.read_parquet(run_a / entry[key]), pd.read_parquet(run_b / entry[key]))
    for name in ("iteration_01", "iteration_02"):
        a = load_file(str(run_a / name / "adapter" / "adapter_model.safetensors"))
        b = load_file(str(run_b / name / "adapter" / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k]) for k in a)
    assert not list(run_b.rglob(".tmp-*")), "no temporary files are left behind"

    again, recorder = start(config)
    assert again.run()["iterations"] == manifest["iterations"]
    assert recorder.calls == [], "a finished run does nothing when re-run"


KILL_POINTS = [  # in the order a run reaches them; each resumed process is killed at the next one
    ("batch:iter 0 eval corrections", 1),  # sampling, in evaluation
    ("replace:run.json", 2),  # the manifest write that records iteration 0
    ("batch:iter 1 initial answers", 2),  # sampling, between batches
    ("replace:initial_answers.parquet", 1),  # a finished temporary file not yet in place
    ("batch:iter 1 corrections", 3),
    ("filter", 5),  # filtering the corrections
    ("replace:train.parquet", 1),
    ("train_step", 2),  # in the middle of fine-tuning
    ("replace:adapter", 1),  # the adapter directory, written but not yet in place
    ("replace:training.json", 1),
    ("batch:iter 1 eval initial", 1),
    ("replace:evaluation.parquet", 1),
    ("replace:run.json", 2),  # the manifest write that records iteration 1
    ("train_step", 3),  # iteration 2 fine-tuning, starting from iteration 1's adapter
    ("replace:run.json", 3),  # the last manifest write, that marks the run complete
]
REPO = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(REPO / "train.py")]


def train_flags(model: Path, questions: tuple[Path, Path], output: Path) -> list[str]:
    """train.py's flags for a two-iteration run of the tiny model, as make_config sets it up."""
    train, test = questions
    return ["--model", str(model), "--dataset", str(train), "--test-dataset", str(test),
            "--output-dir", str(output), "--iterations", "2", "--n-init", "3", "--n-corr", "3",
            "--max-new-tokens", "4", "--dtype", "float32", "--train-batch-size", "4", "--learning-rate", "5e-3",
            "--variant", "EIE", "--generation-batch-size", "6", "--log-level", "warning"]


def comparable(manifest: dict) -> dict:
    """The manifest without the clock and the memory: timestamps, durations and peaks differ between runs."""
    manifest = json.loads(json.dumps(manifest))
    for key in ("created_at", "updated_at", "peak_rss_mb"):
        manifest.pop(key, None)
    for entry in manifest["iterations"]:
        entry.pop("seconds", None)
        entry.pop("peak_rss_mb", None)
        if entry.get("training"):
            entry["training"].pop("seconds")
    return manifest


def assert_consistent(run_dir: Path) -> None:
    """What a killed run leaves: whole files under their final names, at most temporary leftovers."""
    if (run_dir / "run.json").exists():
        read_manifest(run_dir)
    for table in run_dir.rglob("*.parquet"):
        if not table.name.startswith(".tmp-"):
            pd.read_parquet(table)
    for adapter in run_dir.glob("iteration_*/adapter"):
        load_file(str(adapter / "adapter_model.safetensors"))
        assert (adapter / "adapter_config.json").is_file()


@pytest.mark.slow
def test_sigkill_anywhere_then_the_same_command_finishes_with_identical_results(
    tmp_path, tiny_model_dir, city_questions
) -> None:
    def command(output: Path) -> list[str]:
        return train_flags(tiny_model_dir, city_questions, output)

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run([sys.executable, str(REPO / "train.py"), *command(reference)], check=True, cwd=REPO)
    for point, occurrence in KILL_POINTS:
        result = subprocess.run([sys.executable, str(REPO / "tests" / "kill_at.py"), point, str(occurrence), "--",
                                 *command(killed)], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == -signal.SIGKILL, f"{point} #{occurrence} was never reached:\n{result.stderr[-2000:]}"
        assert_consistent(killed)
    subprocess.run([sys.executable, str(REPO / "train.py"), *command(killed)], check=True, cwd=REPO)

    assert comparable(read_manifest(killed))["iterations"] == comparable(read_manifest(reference))["iterations"]
    assert read_manifest(killed)["status"] == "complete"
    expected_files = sorted(path.relative_to(reference) for path in reference.rglob("*") if path.is_file())
    assert sorted(path.relative_to(killed) for path in killed.rglob("*") if path.is_file()) == expected_files
    for relative in expected_files:
        if relative.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(killed / relative), pd.read_parquet(reference / relative))
        elif relative.suffix == ".safetensors":
            ours, theirs = load_file(str(killed / relative)), load_file(str(reference / relative))
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), relative
        elif relative.name == "training.json":
            ours, theirs = json.loads((killed / relative).read_text()), json.loads((reference / relative).read_text())
            ours.pop("seconds"), theirs.pop("seconds")
            assert ours == theirs
        elif relative.name != "run.json":
            assert (killed / relative).read_bytes() == (reference / relative).read_bytes(), relative


@pytest.mark.slow
def test_more_iterations_extend_a_finished_run(tmp_path, tiny_model_dir, city_questions) -> None:
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=1)
    start(config)[0].run()
    extended, recorder = start(make_config(tmp_path, tiny_model_dir, city_questions, iterations=2))
    manifest = extended.run()
    assert len(manifest["iterations"]) == 3
    assert all(desc.startswith("iter 2") for desc, _ in recorder.calls)


def test_changed_settings_refuse_to_resume(tmp_path, tiny_model_dir, city_questions) -> None:
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=0)
    start(config)[0].run()
    with pytest.raises(StascError, match="n_init was 3, now 4.*new --output-dir"):
        StascRun(make_config(tmp_path, tiny_model_dir, city_questions, iterations=0, n_init=4))


def test_empty_filter_carries_the_model_forward(tmp_path, tiny_model_dir, city_questions) -> None:
    # the tiny model can only say Paris, London or Rome: with "Berlin" as the only answer no
    # correction is ever right, so no filter keeps anything
    train, test = city_questions
    impossible = tmp_path / "impossible.jsonl"
    impossible.write_text("".join(json.dumps({"question": f"q{i}", "answers": ["Berlin"]}) + "\n" for i in range(6)))
    config = make_config(tmp_path, tiny_model_dir, (impossible, test), iterations=2, variant="EIE")
    manifest = start(config)[0].run()
    for entry in manifest["iterations"][1:]:
        assert entry["kept_examples"] == 0
        assert entry["adapter"] is None, "M_n is M0 carried forward"
        assert "nothing was kept to train on" in entry["warnings"][0]
    assert pd.read_parquet(Path(config.output_dir) / manifest["iterations"][1]["train_data"]).empty


def test_damaged_files_are_named_with_the_way_out(tmp_path, tiny_run) -> None:
    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    config = StascConfig(**{**read_manifest(run_dir)["config"], "output_dir": str(run_dir), "iterations": 3})
    corrections = run_dir / "iteration_01" / "corrections.parquet"
    corrections.write_bytes(corrections.read_bytes()[:100])  # truncated by a crash or a full disk
    (run_dir / "iteration_02" / "initial_answers.parquet").unlink()
    adapter = run_dir / "iteration_02" / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:50])
    run = StascRun(config)
    with pytest.raises(StascError, match=r"iteration_02/adapter/adapter_model.safetensors cannot be read.*rerun"):
        run.run()  # iteration 3 starts from M_2, whose adapter is half-written
    from stasc.run.storage import read_parquet

    with pytest.raises(StascError, match=r"corrections.parquet is damaged.*Delete it and rerun"):
        read_parquet(corrections)


class ChunkCheckingSampler(RecordingSampler):
    """Records every call, and checks that a step's earlier chunks are on disk before it samples the next."""

    def __init__(self, inner, run_dir: Path, chunk: int, fail_after: tuple[str, int] | None = None) -> None:
        super().__init__(inner)
        self.run_dir, self.chunk, self.fail_after = run_dir, chunk, fail_after
        self.sizes: list[tuple[str, int]] = []

    def sample(self, conversations, num_samples, *, adapter, seed, desc, temperature=None):
        assert len(conversations) <= self.chunk, f"{desc}: {len(conversations)} prompts in one call"
        earlier = sum(1 for name, _ in self.sizes if name == desc)
        parts = {"initial answers": "initial_answers", "corrections": "corrections", "eval initial": "evaluation_initial",
                 "eval corrections": "evaluation_round1"}
        step = desc.split(" ", 2)[2]
        iteration = int(desc.split(" ")[1])
        written = sorted((self.run_dir / f"iteration_{iteration:02d}" / f"{parts[step]}.parts").glob("chunk-*.parquet"))
        assert len(written) >= earlier, f"{desc}: chunk {earlier} started before the earlier ones were written"
        if self.fail_after == (desc, earlier):
            raise KeyboardInterrupt
        self.sizes.append((desc, len(conversations)))
        return super().sample(conversations, num_samples, adapter=adapter, seed=seed, desc=desc, temperature=temperature)


@pytest.mark.slow
def test_sampling_goes_chunk_by_chunk_to_disk_and_resumes_within_a_step(tmp_path, tiny_model_dir, city_questions):
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=1, sampling_chunk_size=5)
    run = StascRun(config)
    run.sampler = ChunkCheckingSampler(run.sampler, Path(config.output_dir), 5, fail_after=("iter 1 corrections", 3))
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert [size for desc, size in run.sampler.sizes if desc == "iter 1 corrections"] == [5, 5, 5]
    assert [size for desc, size in run.sampler.sizes if desc == "iter 1 initial answers"] == [5, 3]

    resumed = StascRun(config)
    resumed.sampler = ChunkCheckingSampler(resumed.sampler, Path(config.output_dir), 5)
    manifest = resumed.run()
    sizes = [size for desc, size in resumed.sampler.sizes if desc == "iter 1 corrections"]
    assert sizes == [5, 4], "the three chunks (of five) written before the interruption are not sampled again"
    run_dir = Path(config.output_dir)
    corrections = pd.read_parquet(run_dir / manifest["iterations"][1]["corrections"])
    assert len(corrections) == 8 * 3 * 3 and corrections.groupby(["question_id", "initial_index"]).size().eq(3).all()
    assert not list(run_dir.rglob("*.parts")), "chunks are removed once their step's file is written"


def test_freed_memory_goes_back_after_every_sampling_call_and_fine_tuning(
    tmp_path, tiny_model_dir, city_questions, monkeypatch
) -> None:
    # without it glibc keeps what each call freed and the process grows call after call (stasc.run.memory)
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=1, sampling_chunk_size=5)
    events: list[str] = []
    monkeypatch.setattr("stasc.run.loop.release_freed_memory", lambda: events.append("release"))
    train_adapter = loop.train_adapter
    monkeypatch.setattr(
        "stasc.run.loop.train_adapter", lambda *args, **kwargs: events.append("train") or train_adapter(*args, **kwargs)
    )
    run, recorder = start(config)
    recorder.sample = lambda *args, sample=recorder.sample, **kwargs: events.append("sample") or sample(*args, **kwargs)
    run.run()
    assert events.count("sample") > 4 and events.count("train") == 1
    assert all(after == "release" for before, after in zip(events, events[1:]) if before in ("sample", "train"))
    assert events[-1] == "release"


@pytest.mark.slow
def test_evaluation_draws_k_answers_per_question_at_its_own_temperature(tmp_path, tiny_model_dir, city_questions):
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=1, eval_samples=3, eval_temperature=1.2,
                         variant="FNF")
    run, recorder = start(config)
    temperatures = []
    inner = recorder.sample

    def noting(conversations, num_samples, *, adapter, seed, desc, temperature=None):
        temperatures.append((desc, temperature))
        return inner(conversations, num_samples, adapter=adapter, seed=seed, desc=desc, temperature=temperature)

    recorder.sample = noting
    manifest = run.run()
    assert dict(temperatures) == {"iter 0 eval initial": 1.2, "iter 0 eval corrections": 1.2,
                                  "iter 1 initial answers": None, "iter 1 corrections": None,
                                  "iter 1 eval corrections": 1.2}
    run_dir = Path(config.output_dir)
    base = pd.read_parquet(run_dir / manifest["iterations"][0]["evaluation"])
    assert len(base) == 4 * 3 and sorted(base["sample_index"].unique()) == [0, 1, 2]
    later = pd.read_parquet(run_dir / manifest["iterations"][1]["evaluation"])
    assert list(later["initial_answer"]) == list(base["initial_answer"]), "fixed initialization reuses M0's K answers"
    for entry, table in ((manifest["iterations"][0], base), (manifest["iterations"][1], later)):
        metrics, intervals = entry["metrics"], entry["intervals"]
        per_question = table.groupby("question_id")[["initial_in_acc", "correction_in_acc"]].mean()
        assert metrics["acc_t1"] == pytest.approx(per_question["initial_in_acc"].mean())
        assert metrics["acc_t2"] == pytest.approx(per_question["correction_in_acc"].mean())
        assert metrics["delta"] == pytest.approx(metrics["acc_t2"] - metrics["acc_t1"])
        assert metrics["initial_in_acc"] == metrics["acc_t1"] and metrics["incorrect_to_correct"] == metrics["i_to_c"]
        for name in ("acc_t1", "acc_t2", "delta", "i_to_c", "c_to_i"):
            low, high = intervals[name]
            assert low <= metrics[name] + 1e-9 and metrics[name] <= high + 1e-9
        assert entry["peak_rss_mb"] > 100
    assert manifest["peak_rss_mb"] == max(entry["peak_rss_mb"] for entry in manifest["iterations"])


@pytest.mark.slow
def test_rationalization_trains_on_hinted_corrections_without_the_hint(tmp_path, tiny_model_dir, city_questions):
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=1, rationalize=True, variant="EBF",
                         keep_ratio=1.0, n_init=4, n_corr=1, temperature=1.5)
    run, recorder = start(config)
    prompts = []
    inner = recorder.sample

    def noting(conversations, num_samples, *, adapter, seed, desc, temperature=None):
        prompts.append((desc, conversations))
        return inner(conversations, num_samples, adapter=adapter, seed=seed, desc=desc, temperature=temperature)

    recorder.sample = noting
    manifest = run.run()
    entry = manifest["iterations"][1]
    run_dir = Path(config.output_dir)
    corrections = pd.read_parquet(run_dir / entry["corrections"])
    rationalizations = pd.read_parquet(run_dir / entry["rationalizations"])
    unfixed = corrections[(corrections["initial_reward"] == 0) & (corrections["correction_reward"] == 0)]
    assert len(rationalizations) == len(unfixed) > 0, "one hinted correction per wrong answer no correction fixed"
    hinted = dict(prompts)["iter 1 rationalizations"]
    for conversation, row in zip(hinted, rationalizations.itertuples(), strict=True):
        assert conversation[-1]["content"].endswith(f"(The correct answer is {row.answers[0]}.)")
        assert conversation[1]["content"] == row.initial_answer
    assert (rationalizations["kept"] == (rationalizations["correction_reward"] == 1)).all()
    train = pd.read_parquet(run_dir / entry["train_data"])
    rationalized = train[train["source"] == "rationalization"]
    assert len(rationalized) == rationalizations["kept"].sum() > 0
    assert not any("correct answer is" in message["content"] for messages in train["messages"] for message in messages)
    fixes = int((train["initial_reward"] == 0).sum())
    stays_right = int((train["initial_reward"] == 1).sum())
    assert stays_right <= fixes, "balanced: at most keep_ratio right-stays-right pairs per fix, rationalized ones count"
    assert entry["train"]["rationalized"] == len(rationalized)


@pytest.mark.slow
def test_validation_questions_come_from_training_and_are_not_trained_on(tmp_path, tiny_model_dir, city_questions):
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=1, evaluate_on="validation",
                         validation_fraction=0.25, variant="ENF")
    manifest = start(config)[0].run()
    run_dir = Path(config.output_dir)
    evaluated = set(pd.read_parquet(run_dir / manifest["iterations"][1]["evaluation"])["question_id"])
    trained_on = set(pd.read_parquet(run_dir / manifest["iterations"][1]["initial_answers"])["question_id"])
    assert len(evaluated) == 2 and len(trained_on) == 6
    assert evaluated.isdisjoint(trained_on) and evaluated <= {f"q{i}" for i in range(8)}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5000, 2**63 - 1])
def test_any_seed_trains(tmp_path, tiny_model_dir, city_questions, seed):
    """`python train.py --seed 5000 ...` (numpy, which Trainer seeds, takes only 32-bit seeds)."""
    run_dir = tmp_path / "run"
    flags = [*train_flags(tiny_model_dir, city_questions, run_dir), "--iterations", "1", "--seed", str(seed)]
    result = subprocess.run([*TRAIN, *flags], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(run_dir)
    assert manifest["config"]["seed"] == seed and manifest["iterations"][1]["training"]["steps"] >= 1


@pytest.mark.slow
def test_own_answer_fixes_train_wrong_answers_towards_the_models_own_right_ones(tmp_path, tiny_model_dir, city_questions):
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=1, own_answer_fixes=True, variant="EBF",
                         keep_ratio=0.5, n_init=4, n_corr=1, temperature=1.5)
    manifest = start(config)[0].run()
    entry = manifest["iterations"][1]
    run_dir = Path(config.output_dir)
    corrections = pd.read_parquet(run_dir / entry["corrections"])
    train = pd.read_parquet(run_dir / entry["train_data"])
    borrowed = train[train["source"] == "own_answer"]
    assert len(borrowed) == entry["train"]["own_answer_fixes"] > 0
    right = corrections[corrections["correction_reward"] == 1].groupby("question_id")["correction"].apply(set)
    right_initial = corrections[corrections["initial_reward"] == 1].groupby("question_id")["initial_answer"].apply(set)
    for row in borrowed.itertuples():
        assert row.initial_reward == 0 and row.correction_reward == 1
        assert row.correction in right.get(row.question_id, set()) | right_initial.get(row.question_id, set())
        assert row.messages[-1]["content"] == row.correction and row.messages[1]["content"] == row.initial_answer
    fixes = int((train["initial_reward"] == 0).sum())
    assert int((train["initial_reward"] == 1).sum()) <= 0.5 * fixes, "borrowed fixes count for the balanced filter"


@pytest.mark.slow
def test_star_trains_on_right_initial_answers_without_a_correction_turn(tmp_path, tiny_model_dir, city_questions):
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=1, method="star", variant="EIF",
                         own_answer_fixes=False)
    run, recorder = start(config)
    manifest = run.run()
    entry = manifest["iterations"][1]
    run_dir = Path(config.output_dir)
    assert manifest["config"]["method"] == "star"
    assert "corrections" not in entry and not (run_dir / "iteration_01" / "corrections.parquet").exists()
    assert "iter 1 corrections" not in dict(recorder.calls), "STaR samples no corrections to train on"
    initial = pd.read_parquet(run_dir / entry["initial_answers"])
    train = pd.read_parquet(run_dir / entry["train_data"])
    assert len(train) == int(initial["initial_reward"].sum()) == entry["kept_examples"] > 0
    for row in train.itertuples():
        assert [message["role"] for message in row.messages] == ["user", "assistant"]
        assert row.messages[-1]["content"] == row.initial_answer and row.initial_reward == 1
    assert entry["training"]["steps"] >= 1
    evaluation = pd.read_parquet(run_dir / entry["evaluation"])
    assert evaluation["correction"].map(type).eq(str).all(), "evaluation still asks for a correction"


@pytest.mark.slow
def test_eval_rounds_correct_the_previous_correction(tmp_path, tiny_model_dir, city_questions):
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=0, eval_rounds=3, eval_samples=2)
    run, recorder = start(config)
    prompts = {}
    inner = recorder.sample

    def noting(conversations, num_samples, *, adapter, seed, desc, temperature=None):
        prompts[desc] = conversations
        return inner(conversations, num_samples, adapter=adapter, seed=seed, desc=desc, temperature=temperature)

    recorder.sample = noting
    manifest = run.run()
    entry = manifest["iterations"][0]
    evaluation = pd.read_parquet(Path(config.output_dir) / entry["evaluation"])
    assert len(evaluation) == 4 * 2
    third = prompts["iter 0 eval round 3"]
    for conversation, row in zip(third, evaluation.itertuples(), strict=True):
        assert [m["content"] for m in conversation if m["role"] == "assistant"] == [
            row.initial_answer, row.correction, row.correction_2]
        assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    metrics, intervals = entry["metrics"], entry["intervals"]
    per_question = evaluation.groupby("question_id").mean(numeric_only=True)
    for turn, column in ((1, "initial_in_acc"), (2, "correction_in_acc"), (3, "correction_2_in_acc"),
                         (4, "correction_3_in_acc")):
        assert metrics[f"acc_t{turn}"] == pytest.approx(per_question[column].mean())
        assert f"acc_t{turn}" in intervals
    assert metrics["delta_t2_t3"] == pytest.approx(metrics["acc_t3"] - metrics["acc_t2"])
    assert metrics["i_to_c_t3_t4"] - metrics["c_to_i_t3_t4"] == pytest.approx(metrics["delta_t3_t4"])
    assert metrics["delta_t1_t4"] == pytest.approx(metrics["acc_t4"] - metrics["acc_t1"])
    assert not list(Path(config.output_dir).rglob("*.parts"))


def files_of(run_dir: Path, leave_out: tuple[str, ...] = ()) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(run_dir.rglob("*")) if path.is_file() and path.name not in leave_out}


def wait_until_stopped(pid: int, timeout: float = 600) -> None:
    """Until the process has stopped itself with SIGSTOP (state T in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        if state == "Z":
            raise AssertionError("the first run ended before it reached its stopping point")
        time.sleep(0.2)
    raise AssertionError("the first run never reached its stopping point")


@pytest.mark.slow
def test_a_second_run_on_a_directory_in_use_is_refused_and_loses_no_file(tmp_path, tiny_model_dir, city_questions):
    run_dir = tmp_path / "run"
    flags = train_flags(tiny_model_dir, city_questions, run_dir)
    log = tmp_path / "first.log"
    with open(log, "w") as output:  # stopped with a finished temporary file not yet renamed into place
        first = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "kill_at.py"), "replace:corrections.parquet", "1", "--", *flags],
            cwd=REPO, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "KILL_AT_SIGNAL": "SIGSTOP"},
        )
    try:
        wait_until_stopped(first.pid)
        assert list(run_dir.rglob(".tmp-corrections.parquet.*")), "the first run is in the middle of a write"
        before = files_of(run_dir)
        second = subprocess.run([*TRAIN, *flags], cwd=REPO, capture_output=True, text=True)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"is in use by another stasc process (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        assert_documented("a second run on a directory in use", second.stderr)
        assert files_of(run_dir) == before, "the second run changed or deleted nothing, not even temporary files"
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        first.kill()
        first.wait()
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "complete" and len(manifest["iterations"]) == 3
    assert not list(run_dir.rglob(".tmp-*")) and not (run_dir / "run.lock").exists()


@pytest.mark.slow
def test_a_deleted_adapter_is_redone_once_its_iteration_directory_is_deleted(tmp_path, tiny_run) -> None:
    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    config = StascConfig(**{**read_manifest(run_dir)["config"], "output_dir": str(run_dir), "iterations": 3})
    (run_dir / "iteration_02" / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(StascError) as missing:
        StascRun(config).run()  # iteration 3 starts from M_2
    assert_documented("a deleted adapter file", str(missing.value))
    shutil.rmtree(run_dir / "iteration_01")
    with pytest.raises(StascError) as out_of_order:
        StascRun(config).run()
    assert_documented("an iteration directory deleted before a later one", str(out_of_order.value))
    shutil.copytree(tiny_run / "iteration_01", run_dir / "iteration_01")
    kept = files_of(run_dir / "iteration_01") | files_of(run_dir / "iteration_00")
    shutil.rmtree(run_dir / "iteration_02")  # what the message says to do
    manifest = StascRun(config).run()
    assert [entry["iteration"] for entry in manifest["iterations"]] == [0, 1, 2, 3]
    assert comparable(manifest)["iterations"][:2] == comparable(read_manifest(tiny_run))["iterations"][:2]
    assert (files_of(run_dir / "iteration_01") | files_of(run_dir / "iteration_00")) == kept
    load_file(str(run_dir / "iteration_02" / "adapter" / "adapter_model.safetensors"))


def config_file(path: Path, config: dict, **changes) -> Path:
    """A run's settings (run.json's config) as a --config YAML file."""
    path.write_text(yaml.safe_dump({**config, **changes}))
    return path


@pytest.mark.slow
def test_a_full_disk_while_the_adapter_is_saved_stops_cleanly_and_the_run_resumes(tmp_path, tiny_run, small_disk):
    run_dir = Path(shutil.copytree(tiny_run, small_disk(1024) / "run"))
    # as a run stopped after writing iteration 2's training data: no adapter, training report or evaluation yet
    manifest = read_manifest(run_dir)
    manifest["iterations"].pop()
    manifest["status"] = "running"
    write_manifest(run_dir, manifest)
    shutil.rmtree(run_dir / "iteration_02" / "adapter")
    (run_dir / "iteration_02" / "training.json").unlink()
    (run_dir / "iteration_02" / "evaluation.parquet").unlink()
    settings = config_file(tmp_path / "run.yaml", manifest["config"], output_dir=str(run_dir))
    before = files_of(run_dir, leave_out=("run.json",))
    disk = os.statvfs(run_dir)
    filler = run_dir.parent / "filler"
    filler.write_bytes(b"\0" * (disk.f_bavail * disk.f_frsize - 24 * 1024))  # room for run.json, not the adapter
    result = subprocess.run([*TRAIN, "--config", str(settings)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert_documented("a full disk while the adapter is saved", result.stderr)
    assert files_of(run_dir, leave_out=("run.json",)) == before, "nothing written before changed"
    assert read_manifest(run_dir)["iterations"] == manifest["iterations"]
    assert not (run_dir / "iteration_02" / "adapter").exists() and not list(run_dir.rglob(".tmp-*"))
    filler.unlink()
    result = subprocess.run([*TRAIN, "--config", str(settings)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_manifest(run_dir)["status"] == "complete" and len(read_manifest(run_dir)["iterations"]) == 3


@pytest.mark.slow
def test_a_read_only_run_directory_is_named_and_left_as_it_was(tmp_path, tiny_run, freezable_dir) -> None:
    directory, freeze = freezable_dir
    run_dir = Path(shutil.copytree(tiny_run, directory / "run"))
    settings = config_file(tmp_path / "run.yaml", read_manifest(run_dir)["config"], output_dir=str(run_dir),
                           iterations=3)
    before = files_of(run_dir)
    freeze()
    result = subprocess.run([*TRAIN, "--config", str(settings)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert_documented("a read-only run directory", result.stderr)
    assert files_of(run_dir) == before


class ScriptedMathSampler:
    """Answers every GSM8K question n with a wrong solution that still mentions n ("I first guessed 7, but it is
    70"), and corrects it to n written as a fraction (\\boxed{\\frac{14}{2}}), so the QA in-accuracy and the math
    reward disagree on every output. Records each prompt."""

    def __init__(self, references: dict[str, str]) -> None:
        self.references = references
        self.prompts: list[str] = []

    def sample(self, conversations, num_samples, *, adapter, seed, desc, temperature=None):
        outputs = []
        for conversation in conversations:
            self.prompts.append(conversation[0]["content"])
            n = int(self.references[conversation[0]["content"].rsplit("Question: ", 1)[1]])
            if len(conversation) == 1:
                answer = f"I first guessed {n}, but it is {n}0.\nFinal Answer: {n}0"
            else:
                answer = f"Check: {n}0 is too big. It is \\boxed{{\\frac{{{2 * n}}}{{2}}}}."
            outputs.append([answer] * num_samples)
        return outputs


@pytest.mark.slow
def test_math_task_runs_on_a_gsm8k_file_and_scores_by_the_math_reward(tmp_path, tiny_model_dir) -> None:
    from testing_utils import write_jsonl

    def rows(start: int, count: int) -> list[dict]:
        return [{"question": f"Tom has {n - 2} apples and buys 2 more. How many has he?",
                 "answer": f"He has {n - 2} + 2 = <<{n - 2}+2={n}>>{n} apples.\n#### {n}"}
                for n in range(start, start + 2 * count, 2)]

    train, test = rows(7, 4), rows(21, 2)  # odd n: no token of 2n or 2 is n, so in-accuracy misses the fraction
    questions = (write_jsonl(tmp_path / "gsm_train.jsonl", train), write_jsonl(tmp_path / "gsm_test.jsonl", test))
    config = make_config(tmp_path, tiny_model_dir, questions, task="math", iterations=1, n_init=2, n_corr=2,
                         variant="EIF", max_seq_length=256)
    run = StascRun(config)
    run.sampler = ScriptedMathSampler({row["question"]: row["answer"].rsplit("#### ", 1)[1] for row in train + test})
    manifest = run.run()
    run_dir = Path(config.output_dir)

    assert read_manifest(run_dir)["config"]["task"] == "math"
    corrections = pd.read_parquet(run_dir / manifest["iterations"][1]["corrections"])
    assert len(corrections) == 4 * 2 * 2
    assert (corrections["initial_reward"] == 0).all() and (corrections["correction_reward"] == 1).all()
    assert manifest["iterations"][1]["kept_examples"] == 16 and manifest["iterations"][1]["training"]["steps"] >= 1
    kept = pd.read_parquet(run_dir / manifest["iterations"][1]["train_data"])
    assert kept["messages"].iloc[0][0]["content"].startswith(config.instructions)
    assert "\\boxed{}" in config.instructions and kept["messages"].iloc[0][2]["content"] == config.correction_instructions
    for entry in manifest["iterations"]:
        evaluation = pd.read_parquet(run_dir / entry["evaluation"])
        assert list(evaluation["answers"].map(list)) == [["21"], ["23"]]
        assert (evaluation["initial_in_acc"] == 0).all() and (evaluation["correction_in_acc"] == 1).all()
        metrics = entry["metrics"]
        assert (metrics["acc_t1"], metrics["acc_t2"], metrics["i_to_c"]) == (0.0, 1.0, 1.0)
    assert not any("####" in prompt or "<<" in prompt for prompt in run.sampler.prompts), "no worked solution"


def test_a_run_from_before_own_answer_fixes_resumes_only_without_them(tmp_path) -> None:
    saved = StascConfig(own_answer_fixes=False).to_dict()
    del saved["own_answer_fixes"]  # run.json of a run made before the setting existed, when no run had them
    check_resumable(saved, StascConfig(own_answer_fixes=False), tmp_path)
    with pytest.raises(StascError, match="own_answer_fixes was False, now True"):
        check_resumable(saved, StascConfig(), tmp_path)


def test_a_run_from_before_tasks_resumes_as_qa(tmp_path) -> None:
    saved = StascConfig().to_dict()
    del saved["task"]  # run.json of a run made before the task setting existed
    check_resumable(saved, StascConfig(), tmp_path)
    with pytest.raises(StascError, match="task was 'qa', now 'math'"):
        check_resumable(saved, StascConfig(task="math"), tmp_path)
