"""End-to-end STaSC runs with a tiny random model and the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from stasc.config import PAPER_VARIANTS, StascConfig
from stasc.errors import StascError
from stasc.run.loop import StascRun, check_resumable
from stasc.run.manifest import read_manifest

from testing_utils import make_config


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
    train, test = city_questions

    def command(output: Path) -> list[str]:
        return ["--model", str(tiny_model_dir), "--dataset", str(train), "--test-dataset", str(test),
                "--output-dir", str(output), "--iterations", "2", "--n-init", "3", "--n-corr", "3",
                "--max-new-tokens", "4", "--dtype", "float32", "--train-batch-size", "4", "--learning-rate", "5e-3",
                "--variant", "EIE", "--generation-batch-size", "6", "--log-level", "warning"]

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
        assert "kept no corrections" in entry["warnings"][0]
    assert pd.read_parquet(Path(config.output_dir) / manifest["iterations"][1]["train_data"]).empty


def test_damaged_files_are_named_with_the_way_out(tmp_path, tiny_run) -> None:
    import shutil

    from stasc.run.manifest import read_manifest as read

    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    config = StascConfig(**{**read(run_dir)["config"], "output_dir": str(run_dir), "iterations": 3})
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
                 "eval corrections": "evaluation"}
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
    config = make_config(tmp_path, tiny_model_dir, city_questions, iterations=1, seed=seed, variant="ENF")
    manifest = start(config)[0].run()
    assert manifest["iterations"][1]["training"]["steps"] >= 1


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


def test_a_run_from_before_tasks_resumes_as_qa(tmp_path) -> None:
    saved = StascConfig().to_dict()
    del saved["task"]  # run.json of a run made before the task setting existed
    check_resumable(saved, StascConfig(), tmp_path)
    with pytest.raises(StascError, match="task was 'qa', now 'math'"):
        check_resumable(saved, StascConfig(task="math"), tmp_path)
