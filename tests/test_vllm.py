"""The vllm backend up to the vLLM call: backend checks, engine arguments, prompts, LoRA requests, outputs.

No GPU and no vllm here: a fake `vllm` module records what stasc asks of it and answers with
token ids, so everything stasc does before and after the engine runs for real, the loop included.
"""

from __future__ import annotations

import random
import sys
import types
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
from stasc.run.loop import StascRun
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

from testing_utils import CITIES, make_config


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
    """A `vllm` package with LLM, SamplingParams and LoRARequest, and one visible GPU."""
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(vllm_backend, "visible_gpus", lambda: 1)
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


def without(monkeypatch, *, vllm: bool, gpus: int) -> None:
    monkeypatch.setattr(vllm_backend, "_installed", lambda package: vllm)
    monkeypatch.setattr(vllm_backend, "visible_gpus", lambda: gpus)


@pytest.mark.parametrize(
    ("vllm", "gpus", "named", "not_named"),
    [
        (False, 0, ["vllm package", "pip install 'stasc[vllm]'", "requirements-vllm.txt", "NVIDIA GPU"], []),
        (False, 1, ["vllm package", "pip install 'stasc[vllm]'"], ["NVIDIA GPU"]),
        (True, 0, ["NVIDIA GPU", "torch.cuda.is_available() is False"], ["pip install"]),
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
    if vllm_backend._installed("vllm") and vllm_backend.visible_gpus():
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
