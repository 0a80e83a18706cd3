"""Several processes under one run: sharded sampling, one writer, training on every process.

The multi-process tests start real process groups with torchrun on CPU (gloo), the way
`accelerate launch` starts them on GPUs (NCCL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from stasc import distributed
from stasc.config import StascConfig
from stasc.distributed import Processes, current_processes, full_adapter_state
from stasc.run.loop import lora_config
from stasc.run.manifest import read_manifest
from stasc.modeling.models import load_model, load_tokenizer
from stasc.modeling.policy import Policy
from stasc.training.lora import optimizer_steps

from testing_utils import capital_questions, free_port, make_config, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def torchrun(script: str, processes: int, *args: str, tmp_path: Path, timeout: int = 600) -> list[dict]:
    """Run a script in `processes` CPU processes; each writes its result as JSON to $OUT/<rank>.json."""
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
        f"--master_port={free_port()}", str(path), *args,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return [json.loads((out / f"{rank}.json").read_text()) for rank in range(processes)]


# ----------------------------------------------------------------- one process: everything is a no-op


def test_a_plain_run_is_one_process() -> None:
    processes = current_processes()
    assert (processes.count, processes.index, processes.is_main) == (1, 0, True)
    written = []
    processes.main_writes(written.append, "file")
    processes.barrier()
    assert written == ["file"] and processes.gather([1, 2]) == [1, 2]
    assert not Processes(count=2, index=1).is_main


class EchoSampler:
    def sample(self, conversations, num_samples, *, adapter, seed, desc, temperature=None):
        return [[f"{conversation} {sample}" for sample in range(num_samples)] for conversation in conversations]


SHARDING = """
    import json, os, time
    from pathlib import Path
    import torch
    from stasc.distributed import current_processes
    from stasc.sampling.sharded import ShardedSampler

    class EchoSampler:
        def __init__(self):
            self.seen = []
        def sample(self, conversations, num_samples, *, adapter, seed, desc, temperature=None):
            self.seen.append(list(conversations))
            return [[f"{c} {s}" for s in range(num_samples)] for c in conversations]

    processes = current_processes()
    results = {}
    for group_size in (1, 2):
        echo = EchoSampler()
        sampler = ShardedSampler(echo, processes, group_size)
        answers = sampler.sample([f"q{i}" for i in range(7)], 2, adapter=None, seed=0, desc="test")
        results[group_size] = {"answers": answers, "share": echo.seen[0]}
        results[f"{group_size}-few"] = sampler.sample(["only"], 1, adapter=None, seed=0, desc="test")
    # the main process makes a file right after deciding to; a slower process must get the same answer
    marker = os.path.join(os.environ["OUT"], "marker")
    if not processes.is_main:
        time.sleep(0.5)
    results["agreed"] = processes.exists(Path(marker))
    if processes.is_main:
        open(marker, "w").close()
    processes.barrier()
    results["after"] = processes.exists(Path(marker))
    with open(os.path.join(os.environ["OUT"], f"{processes.index}.json"), "w") as handle:
        json.dump({"count": processes.count, **{str(k): v for k, v in results.items()}}, handle)
    torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_sampling_is_shared_out_and_every_process_gets_every_answer(tmp_path) -> None:
    ranks = torchrun(SHARDING, 4, tmp_path=tmp_path)
    expected = EchoSampler().sample([f"q{i}" for i in range(7)], 2, adapter=None, seed=0, desc="")
    for rank, result in enumerate(ranks):
        assert result["count"] == 4
        for group_size in ("1", "2"):
            assert result[group_size]["answers"] == expected, "order and shape as one process would give"
            assert result[f"{group_size}-few"] == [["only 0"]], "processes with an empty share still take part"
        assert result["1"]["share"] == [f"q{i}" for i in range(rank, 7, 4)]
        assert result["2"]["share"] == [f"q{i}" for i in range(rank // 2, 7, 2)], "tensor-parallel groups share"
        assert (result["agreed"], result["after"]) == (False, True), "every process takes the main one's view of files"


# ----------------------------------------------------------------- training under FSDP / DeepSpeed


@pytest.fixture()
def policy(tiny_model_dir) -> Policy:
    return Policy(
        load_model(str(tiny_model_dir), dtype=torch.float32), load_tokenizer(str(tiny_model_dir)),
        lora_config(StascConfig()), seed=0,
    )


def test_ddp_trains_the_policy_itself(policy, monkeypatch) -> None:
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    with Processes().trainable(policy) as trainee:
        assert trainee is policy


@pytest.mark.parametrize("strategy", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharding_strategies_train_a_copy_and_gather_its_adapter(policy, monkeypatch, strategy) -> None:
    monkeypatch.setenv(strategy, "true")
    before = {name: tensor.clone() for name, tensor in policy.model.state_dict().items()}
    with Processes().trainable(policy) as trainee:
        assert trainee is not policy and trainee.model is not policy.model
        with torch.no_grad():
            for name, parameter in trainee.model.named_parameters():
                if "lora_B" in name:
                    parameter.fill_(0.5)  # what training would do, on the copy only
        assert all(torch.equal(tensor, before[name]) for name, tensor in policy.model.state_dict().items())
    assert not hasattr(trainee, "model"), "the copy's weights are freed"
    after = policy.model.state_dict()
    assert all(torch.all(tensor == 0.5) for name, tensor in after.items() if "lora_B" in name)
    assert all(torch.equal(tensor, before[name]) for name, tensor in after.items() if "lora_" not in name)
    assert not policy.use_base and policy.loaded_adapter is None


def test_zero3_partitioned_adapters_are_gathered_before_reading(policy, monkeypatch) -> None:
    gathered = []

    class GatheredParameters:
        def __init__(self, parameters, modifier_rank):
            gathered.append((len(parameters), modifier_rank))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    deepspeed = types.SimpleNamespace(zero=types.SimpleNamespace(GatheredParameters=GatheredParameters))
    monkeypatch.setitem(sys.modules, "deepspeed", deepspeed)
    lora = [parameter for name, parameter in policy.model.named_parameters() if "lora_" in name]
    for number, parameter in enumerate(lora):
        parameter.ds_id = number
    state = full_adapter_state(policy.model)
    assert gathered == [(len(lora), None)]
    assert len(state) == len(lora) and all(tensor.device.type == "cpu" for tensor in state.values())


def test_fsdp2_shards_are_read_whole() -> None:
    shard = types.SimpleNamespace(full_tensor=lambda: torch.ones(3))
    assert torch.equal(distributed._whole(shard), torch.ones(3))
    plain = torch.zeros(2)
    assert distributed._whole(plain) is plain


# ----------------------------------------------------------------- the loop on two processes


LOOP = """
    import json, os, sys
    import torch
    from stasc.config import StascConfig
    from stasc.run.loop import StascRun

    config = StascConfig(**json.loads(sys.argv[1]))
    run = StascRun(config)
    manifest = run.run()
    with open(os.path.join(os.environ["OUT"], f"{run.processes.index}.json"), "w") as handle:
        json.dump({"count": run.processes.count, "manifest": manifest}, handle)
    torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_run_one_loop_and_write_once(tmp_path, tiny_model_dir, city_questions) -> None:
    config = make_config(tmp_path, tiny_model_dir, city_questions, variant="EIE")
    settings = {**config.to_dict(), "variant": None}
    ranks = torchrun(LOOP, 2, json.dumps(settings), tmp_path=tmp_path)
    run_dir = Path(config.output_dir)

    def timeless(manifest: dict) -> list[dict]:  # each process timed its own steps and measured its own memory
        return [
            {**entry, "seconds": None, "peak_rss_mb": None,
             "training": entry.get("training") and {**entry["training"], "seconds": None}}
            for entry in manifest["iterations"]
        ]

    written = read_manifest(run_dir)
    assert written["status"] == "complete" and len(written["iterations"]) == 3
    for rank in ranks:
        assert rank["count"] == 2 and rank["manifest"]["data"] == written["data"]
        assert timeless(rank["manifest"]) == timeless(written), "every process saw the same steps and files"
    assert not list(run_dir.rglob(".tmp-*"))
    corrections = pd.read_parquet(run_dir / "iteration_01" / "corrections.parquet")
    assert len(corrections) == 8 * config.n_init * config.n_corr
    assert corrections.groupby(["question_id", "initial_index"]).size().eq(config.n_corr).all()
    for iteration in ("iteration_01", "iteration_02"):
        adapter = load_file(str(run_dir / iteration / "adapter" / "adapter_model.safetensors"))
        assert any(tensor.abs().sum() > 0 for name, tensor in adapter.items() if "lora_B" in name)
        report = json.loads((run_dir / iteration / "training.json").read_text())
        assert report["examples"] > 0
        # the schedule (warm-up, logging) is planned for the steps Trainer really takes over 2 processes
        per_device = config.train_batch_size // (2 * config.gradient_accumulation_steps)
        assert report["steps"] == optimizer_steps(
            report["examples"], per_device, 2, config.gradient_accumulation_steps, config.epochs
        )


# ----------------------------------------------------------------- shipped configs


def launch_environment(config_file: Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file config_file train.py` gives the processes (nothing started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"])
    args, defaults, precision_from_config = _validate_launch_command(args)
    assert args.num_processes == 8 and args.mixed_precision == "bf16"
    if args.use_deepspeed:  # as accelerate's launch_command does
        fields = [*defaults.deepspeed_config, *(["mixed_precision"] if precision_from_config else [])]
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        return prepare_deepspeed_cmd_env(args)[1]
    assert args.multi_gpu or args.use_fsdp
    return prepare_multi_gpu_env(args)


def test_accelerate_configs_launch_the_intended_strategy(monkeypatch) -> None:
    ddp = launch_environment(ROOT / "configs" / "accelerate" / "ddp.yaml")
    assert "ACCELERATE_USE_FSDP" not in ddp and "ACCELERATE_USE_DEEPSPEED" not in ddp

    fsdp = launch_environment(ROOT / "configs" / "accelerate" / "fsdp.yaml")
    assert fsdp["ACCELERATE_USE_FSDP"] == "true" and fsdp["FSDP_VERSION"] == "2"
    assert fsdp["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"

    zero3 = launch_environment(ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml")
    assert zero3["ACCELERATE_USE_DEEPSPEED"] == "true" and zero3["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    for name, value in zero3.items():
        if name.startswith("ACCELERATE_"):
            monkeypatch.setenv(name, value)
    from accelerate.utils import DeepSpeedPlugin

    deepspeed = DeepSpeedPlugin().deepspeed_config
    assert deepspeed["zero_optimization"]["stage"] == 3
    # stasc's batch size, accumulation and clipping reach DeepSpeed through the Trainer, not the config
    assert deepspeed["gradient_accumulation_steps"] == deepspeed["train_micro_batch_size_per_gpu"] == "auto"
    assert deepspeed["gradient_clipping"] == "auto"


def test_paper_gpu_recipe_is_the_paper_setting_on_vllm() -> None:
    from stasc.config import config_from_args

    gpu = config_from_args(["--config", str(ROOT / "configs" / "qwen2.5-1.5b-paper-gpu.yaml")])
    cpu = config_from_args(["--config", str(ROOT / "configs" / "qwen2.5-1.5b-paper.yaml")])
    assert (gpu.backend, gpu.tensor_parallel_size, gpu.model) == ("vllm", 1, "Qwen/Qwen2.5-1.5B-Instruct")
    assert (gpu.n_init, gpu.n_corr, gpu.iterations, gpu.max_new_tokens) == (5, 5, 10, 256)
    differences = {name for name, value in gpu.to_dict().items() if cpu.to_dict()[name] != value}
    assert differences <= {"backend", "dtype", "output_dir", "generation_batch_size"}


# ----------------------------------------------------------------- `accelerate launch` on the bundled model

@pytest.mark.slow
def test_accelerate_launch_on_two_cpu_processes_trains_as_one_process_does(tmp_path) -> None:
    """One iteration of the bundled model, once with `python train.py` and once with `accelerate launch
    --multi_gpu --num_processes 2 train.py` (on a machine without GPUs accelerate starts CPU processes, which
    stasc joins with gloo). Greedy sampling in float32 makes the kept data the same whichever process samples
    which prompt; the effective batch is the same (4 = 1 process x 2 x 2 accumulated = 2 processes x 1 x 2).

    Tolerance of the loss curve: 1% relative at every step. Both runs are float32 and train on the same examples
    in the same order; they differ only in summation order (two processes' gradients summed by gloo, each
    example padded alone instead of beside another), which moves a loss by about 1e-6 relative, and Adam's
    first steps are close to sign updates, which such differences do not flip. 1% is far above that and far
    below what a wrong effective batch or a loss averaged over the wrong count would change (a factor of two
    in the loss, or half the steps)."""
    rows = capital_questions(10)
    train, test = write_jsonl(tmp_path / "train.jsonl", rows[:8]), write_jsonl(tmp_path / "test.jsonl", rows[8:])
    settings = [
        "train.py", "--dataset", str(train), "--test-dataset", str(test), "--iterations", "1",
        "--n-init", "1", "--n-corr", "1", "--temperature", "0", "--max-new-tokens", "8", "--dtype", "float32",
        "--train-batch-size", "4", "--gradient-accumulation-steps", "2", "--min-train-steps", "4",
        "--learning-rate", "1e-3", "--log-level", "warning", "--variant", "ENF", "--no-own-answer-fixes",
    ]  # ENF keeps the right-stays-right pairs of a model that knows every capital: there is data to train on
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    accelerate = str(Path(sys.executable).parent / "accelerate")
    commands = {
        "one": [sys.executable, *settings],
        "two": [
            accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
            "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *settings,
        ],
    }
    runs = {}
    for name, command in commands.items():
        runs[name] = tmp_path / name
        result = subprocess.run([*command, "--output-dir", str(runs[name])], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=1200, check=False)
        assert result.returncode == 0, result.stderr[-6000:]

    one, two = (read_manifest(runs[name]) for name in ("one", "two"))
    assert one["status"] == two["status"] == "complete"
    for table in ("initial_answers", "corrections", "train"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(runs["one"] / "iteration_01" / f"{table}.parquet"),
            pd.read_parquet(runs["two"] / "iteration_01" / f"{table}.parquet"),
        )
    reports = [json.loads((runs[name] / "iteration_01" / "training.json").read_text()) for name in ("one", "two")]
    assert reports[0]["examples"] == reports[1]["examples"] > 0
    assert reports[0]["steps"] == reports[1]["steps"] == 4
    steps = [[step for step, _ in report["loss_curve"]] for report in reports]
    assert steps[0] == steps[1] == [1, 2, 3, 4]
    losses = [[loss for _, loss in report["loss_curve"]] for report in reports]
    assert losses[0] == pytest.approx(losses[1], rel=0.01)
