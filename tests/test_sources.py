"""Reading runs back: locally, and from a real Hub-compatible server (olah, see conftest.py)
through the real huggingface_hub, peft and datasets clients."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from stasc.errors import StascError
from stasc.run.manifest import read_manifest
from stasc.hub.sources import RunSource, adapter_location, list_iterations, load_evaluation

from testing_utils import HUB_REPO as REPO, load_iteration_model

TESTS = Path(__file__).resolve().parent


READER = r"""
import json, sys
import torch
from datasets import load_dataset
from safetensors.torch import load_file
from stasc.hub.sources import RunSource, list_iterations, load_evaluation
from stasc.errors import StascError

repo, local = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
from testing_utils import load_iteration_model

source = RunSource(repo)
out = {"metrics": [entry["metrics"] for entry in list_iterations(source)]}
model, tokenizer = load_iteration_model(source, 2, dtype="auto")
state = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
saved = load_file(local + "/iteration_02/adapter/adapter_model.safetensors")
out["adapter_matches"] = all(
    any(torch.equal(v, s) for s in saved.values()) for v in state.values()
) and len(state) == len([k for k in saved if "lora_B" in k])
ids = tokenizer("Which city?", return_tensors="pt").input_ids
out["generated"] = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False).shape[1] > ids.shape[1]
out["base_is_plain"] = type(load_iteration_model(source, 0, dtype="auto")[0]).__name__
train = load_dataset(repo, "train", split="iteration_01")
out["train_rows"] = train.num_rows
out["train_columns"] = sorted(train.column_names)
evaluation = load_dataset(repo, "evaluation")
out["evaluation_splits"] = {name: split.num_rows for name, split in evaluation.items()}
out["corrections_rows"] = len(load_evaluation(source, 1, "corrections"))
try:
    list_iterations(RunSource("stasc-test/missing-run"))
except StascError as error:
    out["missing_error"] = str(error)
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_a_pushed_run_is_read_back_through_the_hub_clients(hub_server, tiny_run: Path) -> None:
    endpoint, root = hub_server
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HUB_DISABLE_XET="1", HF_HOME=str(root / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run([sys.executable, "-c", READER, REPO, str(tiny_run), str(TESTS)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    manifest = read_manifest(tiny_run)
    assert out["metrics"] == [entry["metrics"] for entry in manifest["iterations"]]
    assert out["adapter_matches"] and out["generated"]
    assert out["base_is_plain"] == "LlamaForCausalLM"
    assert out["train_rows"] == manifest["iterations"][1]["kept_examples"]
    assert {"question", "answers", "initial_answer", "correction", "messages"} <= set(out["train_columns"])
    assert out["evaluation_splits"] == {"iteration_00": 4, "iteration_01": 4, "iteration_02": 4}
    assert out["corrections_rows"] == len(pd.read_parquet(tiny_run / manifest["iterations"][1]["corrections"]))
    assert "stasc-test/missing-run" in out["missing_error"] and "not found" in out["missing_error"]


def test_local_run_lists_and_loads_iterations(tiny_run: Path) -> None:
    source = RunSource(str(tiny_run))
    iterations = list_iterations(source)
    assert [entry["iteration"] for entry in iterations] == [0, 1, 2]
    model, _ = load_iteration_model(source, 1, dtype="float32")
    saved = load_file(str(tiny_run / "iteration_01" / "adapter" / "adapter_model.safetensors"))
    live = {k: v for k, v in model.state_dict().items() if "lora_A" in k}
    assert len(live) == len([k for k in saved if "lora_A" in k])
    assert all(any(torch.equal(v, s) for s in saved.values()) for v in live.values())
    assert len(load_evaluation(source, 0)) == 4
    with pytest.raises(StascError, match="iterations 0..2; iteration 5 does not exist"):
        adapter_location(source, 5)


def test_damaged_manifest_names_the_file(tiny_run: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    manifest = json.loads((copy / "run.json").read_text())
    manifest["iterations"][1]["metrics"]["initial_in_acc"] = 7
    (copy / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(StascError, match=r"run.json: the run manifest is damaged \(iterations\[1\].metrics"):
        list_iterations(RunSource(str(copy)))
    (copy / "run.json").write_text("{broken")
    with pytest.raises(StascError, match=r"run.json:1:2: the run manifest is not valid JSON"):
        list_iterations(RunSource(str(copy)))


def test_an_adapter_or_table_outside_the_run_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    outside = Path(shutil.copytree(copy / "iteration_02" / "adapter", tmp_path / "elsewhere"))
    manifest = json.loads((copy / "run.json").read_text())
    manifest["iterations"][2]["adapter"] = "../elsewhere"
    (copy / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(StascError, match=r"iterations\[2\].adapter '../elsewhere' is not a file of an iteration"):
        adapter_location(RunSource(str(copy)), 2)
    shutil.copytree(tiny_run, copy, dirs_exist_ok=True)  # run.json as it was
    shutil.rmtree(copy / "iteration_02" / "adapter")
    (copy / "iteration_02" / "adapter").symlink_to(outside)
    with pytest.raises(StascError, match="leads outside the run directory"):
        adapter_location(RunSource(str(copy)), 2)
    with pytest.raises(StascError, match="leads outside the run directory"):
        load_evaluation(RunSource(str(copy)), 0)  # the whole manifest is refused, whatever is asked of it
