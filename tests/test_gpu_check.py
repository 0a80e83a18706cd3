"""bench/gpu_check.py, the check to run on a machine with an NVIDIA GPU, run here with --device cpu (the same
steps, small) in an environment where vllm, datasets, gradio and math-verify cannot be imported, as in a stock
CUDA PyTorch image."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check

ROOT = Path(__file__).resolve().parents[1]

# Put first on PYTHONPATH, this makes the listed packages unimportable in every process started with it:
# importlib finds no module (as where they are not installed), so libraries that look for them do without.
WITHOUT_PACKAGES = """
import sys
from importlib.machinery import PathFinder

ABSENT = {"vllm", "datasets", "gradio", "math_verify"}


class PathFinderWithout(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [PathFinderWithout if finder is PathFinder else finder for finder in sys.meta_path]
"""


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_on_a_cpu_without_vllm_datasets_gradio_or_math_verify(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(WITHOUT_PACKAGES)
    report_path = tmp_path / "report.json"
    environment = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--out", str(report_path)],
        env=environment, capture_output=True, text=True, timeout=900, check=False,
    )
    assert finished.returncode == 0, finished.stderr[-4000:]
    report = json.loads(report_path.read_text())

    packages = report["environment"]["packages"]
    assert packages["vllm"] is None and packages["datasets"] is None and packages["gradio"] is None
    assert packages["math_verify"] is None
    assert packages["torch"] == torch.__version__ and report["failures"] == []
    sizes = report["sizes"]
    for name, model_type in (("smollm2-135m", "llama"), ("qwen2.5-1.5b", "qwen2")):
        step = report["steps"][name]
        assert step["model_type"] == model_type and step["config"]["num_hidden_layers"] == 2
        sampling, training = step["sampling"], step["training"]
        assert sampling["sequences"] == sizes["prompts"] * sizes["samples"]
        assert 0 < sampling["new_tokens"] <= sampling["sequences"] * sizes["new_tokens"]
        assert sampling["tokens_per_second"] > 0 and sampling["peak_rss_mb"] > 0
        assert training["examples"] == sizes["conversations"] and training["steps"] == 2
        assert training["tokens"] > training["supervised_tokens"] > 0 and math.isfinite(training["loss"])
        assert training["tokens_per_second"] > 0 and training["peak_rss_mb"] > 0
    iteration = report["steps"]["iteration"]
    assert iteration["status"] == "complete" and iteration["iterations"] == [0, 1]
    assert iteration["kept_examples"] > 0 and iteration["training"]["steps"] > 0 and iteration["adapter_bytes"] > 0


def test_a_failing_step_is_reported_and_the_others_still_run() -> None:
    report: dict = {"steps": {}, "failures": []}

    def broken() -> dict:
        raise RuntimeError("CUDA error: out of memory")

    gpu_check.run_step(report, "qwen2.5-1.5b", broken)
    gpu_check.run_step(report, "iteration", lambda: {"status": "complete"})
    assert report["failures"] == ["qwen2.5-1.5b"]
    assert report["steps"]["qwen2.5-1.5b"]["error"] == "RuntimeError: CUDA error: out of memory"
    assert report["steps"]["iteration"] == {"status": "complete"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_without_a_gpu_the_check_says_to_use_the_cpu_and_writes_nothing(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["--out", str(tmp_path / "report.json")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "no CUDA device is visible" in err and "use --device cpu" in err
    assert not (tmp_path / "report.json").exists()


def test_shapes_are_the_published_ones_on_a_gpu_and_small_on_a_cpu() -> None:
    model_type, full = gpu_check.shape("qwen2.5-1.5b", "cuda")
    assert model_type == "qwen2" and (full["hidden_size"], full["num_hidden_layers"], full["vocab_size"]) == (
        1536, 28, 151936
    )
    _, small = gpu_check.shape("smollm2-135m", "cpu")
    assert (small["hidden_size"], small["num_hidden_layers"], small["vocab_size"]) == (144, 2, 4096)
    # the word-level tokenizer fills the model's whole vocabulary and speaks ChatML
    tokenizer = gpu_check.word_tokenizer(small["vocab_size"], ("Paris",))
    assert len(tokenizer) == small["vocab_size"] and tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Paris w5"}], tokenize=False,
                                         add_generation_prompt=True)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tokens == ["<|im_start|>", "<|endoftext|>", "Paris", "w5", "<|im_end|>", "<|im_start|>", "<|endoftext|>"]
