"""train.py as a user runs it: exit codes, messages, and nothing written on bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stasc.cli.train import train_main

from testing_utils import assert_documented, documented_messages

ROOT = Path(__file__).resolve().parents[1]


QA = '{"question": "Capital of France?", "answers": ["Paris"]}\n'
TINY_MODEL = "<tiny model>"  # replaced by the tiny test model's directory

# (files to create, flags, part of the expected message): every malformed input a user is
# likely to give train.py, each refused before anything is written.
BAD_INPUTS = {
    # data files
    "missing data file": ({}, ["--dataset", "missing.jsonl"], "Dataset file not found: missing.jsonl"),
    "missing test file": ({}, ["--test-dataset", "gone.jsonl"], "Dataset file not found: gone.jsonl"),
    "malformed JSON line": ({"qa.jsonl": QA + "{not json\n"}, ["--dataset", "qa.jsonl"], "qa.jsonl:2:2: invalid JSON"),
    "line that is not an object": ({"qa.jsonl": "[1, 2]\n"}, ["--dataset", "qa.jsonl"],
                                   "qa.jsonl:1: expected a JSON object"),
    "answers missing on one line": ({"qa.jsonl": QA + '{"question": "q2", "answers": []}\n'}, ["--dataset", "qa.jsonl"],
                                    "qa.jsonl:2: row has no answers in column 'answers'"),
    "empty question": ({"qa.jsonl": '{"question": "", "answers": ["a"]}\n'}, ["--dataset", "qa.jsonl"],
                       "qa.jsonl:1: row has no question"),
    "misnamed column": ({"qa.csv": "question,answer\nq,a\n"}, ["--dataset", "qa.csv"],
                        "qa.csv has no column 'answers' (available columns: answer, question). Set --answers-column"),
    "GSM8K answer without its final line": (
        {"gsm.jsonl": '{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n{"question": "2+2?", "answer": "4"}\n'},
        ["--dataset", "gsm.jsonl"], "gsm.jsonl:2: the GSM8K-style answer in column 'answer' has no final '#### <answer>'"),
    "unsupported file type": ({"qa.txt": "hello\n"}, ["--dataset", "qa.txt"], "unsupported file type '.txt'"),
    "not UTF-8": ({"qa.jsonl": b"\xff\xfe bad"}, ["--dataset", "qa.jsonl"], "is not UTF-8 text"),
    "empty file": ({"qa.jsonl": ""}, ["--dataset", "qa.jsonl"], "qa.jsonl has no questions"),
    "truncated parquet": ({"qa.parquet": b"PAR1 not really"}, ["--dataset", "qa.parquet"],
                          "qa.parquet is not a readable Parquet file"),
    "one question only": ({"qa.jsonl": QA}, ["--dataset", "qa.jsonl"], "too few to hold out a test set"),
    "JSON array in a .jsonl file": ({"qa.jsonl": "[" + QA.strip() + ",\n " + QA.strip() + "]\n"},
                                    ["--dataset", "qa.jsonl"], "qa.jsonl holds one JSON array, not JSON lines"),
    "CSV separated by semicolons": ({"qa.csv": "question;answers\nq1;Paris\nq2;Rome\n"}, ["--dataset", "qa.csv"],
                                    "its fields are separated by ';'"),
    "NaN answer in a CSV": ({"qa.csv": "question,answers\nq1,Paris\nq2,NaN\nq3,Rome\n"}, ["--dataset", "qa.csv"],
                            "qa.csv, row 2: row has no answers in column 'answers'"),
    "answer empty once normalised": ({"qa.jsonl": QA + '{"question": "q2", "answers": ["...", "The"]}\n'},
                                     ["--dataset", "qa.jsonl"],
                                     "qa.jsonl:2: column 'answers': the answers ['...', 'The'] are empty once normalised"),
    "question over the length limit": ({"qa.jsonl": QA + json.dumps({"question": "why " * 501, "answers": ["x"]}) + "\n"},
                                       ["--dataset", "qa.jsonl"],
                                       "qa.jsonl:2: the question in column 'question' has 2,003 characters"),
    # configs
    "YAML syntax error": ({"c.yaml": "iterations: [1\n"}, ["--config", "c.yaml"], "c.yaml:2:1: invalid YAML"),
    "YAML unknown key": ({"c.yaml": "iteratons: 3\n"}, ["--config", "c.yaml"],
                         "unknown setting 'iteratons'. Did you mean 'iterations'?"),
    "YAML wrong type": ({"c.yaml": "iterations: three\n"}, ["--config", "c.yaml"],
                        "iterations has value 'three', which is not a valid int"),
    "YAML not a mapping": ({"c.yaml": "- 1\n- 2\n"}, ["--config", "c.yaml"], "expected a mapping of setting: value"),
    "missing config": ({}, ["--config", "nope.yaml"], "Config file not found: nope.yaml"),
    "config that is a directory": ({"configs/.keep": ""}, ["--config", "configs"], "--config configs is a directory"),
    # flags
    "unknown variant": ({}, ["--variant", "XYZ"], "Unknown variant 'XYZ'"),
    "zero samples": ({}, ["--n-init", "0"], "--n-init must be at least 1"),
    "negative temperature": ({}, ["--temperature", "-1"], "--temperature must be at least 0"),
    "top-p above one": ({}, ["--top-p", "1.5"], "--top-p must satisfy 0 < p <= 1"),
    "zero learning rate": ({}, ["--learning-rate", "0"], "--learning-rate must be greater than 0"),
    "unknown reward": ({}, ["--reward", "bleu"], "Invalid --reward 'bleu'. Choose one of: in_acc, em, f1."),
    "QA reward with the math task": ({}, ["--task", "math", "--reward", "em"],
                                     "--task math always scores the final answer by mathematical equivalence"),
    "unknown dtype": ({}, ["--dtype", "float8"], "Did you mean 'float32'?"),
    "batch not divisible": ({}, ["--train-batch-size", "6", "--gradient-accumulation-steps", "4"],
                            "must be a multiple of"),
    "F1 threshold above one": ({}, ["--f1-threshold", "2"], "--f1-threshold must satisfy 0 < t <= 1"),
    "warmup ratio above one": ({}, ["--warmup-ratio", "1.5"], "--warmup-ratio must satisfy 0 <= r < 1"),
    "vLLM without vLLM": ({}, ["--backend", "vllm"], "--backend vllm needs the vllm package"),
    "output dir is a file": ({"taken": "x"}, ["--output-dir", "taken"], "--output-dir taken is a file"),
    "output dir with a trailing space": ({}, ["--output-dir", "runs/a "], "--output-dir 'runs/a ' begins or ends with"),
    "negative seed": ({}, ["--seed", "-1"], "--seed must be between 0 and 9223372036854775807 (2**63 - 1), got -1"),
    "seed beyond 2**63 - 1": ({}, ["--seed", str(2**63)], "--seed must be between 0 and 9223372036854775807"),
    "question length limit below one": ({}, ["--max-question-chars", "0"], "--max-question-chars must be at least 1"),
    "LoRA target that matches no layer": ({}, ["--model", TINY_MODEL, "--lora-target-modules", "not_a_module"],
                                          "--lora-target-modules not_a_module matches no layer of the model"),
    "max-seq-length too short for any conversation": ({}, ["--model", TINY_MODEL, "--max-seq-length", "16"],
                                                      "--max-seq-length 16 is too short for any training conversation"),
    # model paths
    "misspelled bundled": ({}, ["--model", "bundeld"], "Did you mean 'bundled'"),
    "model path that does not exist": ({}, ["--model", "/nonexistent/model"],
                                       "Unknown model '/nonexistent/model': no such directory"),
    "model folder without config": ({"empty-model/.keep": ""}, ["--model", "empty-model"],
                                    "Model directory empty-model has no config.json"),
    # Hub repository ids
    "Hub id with spaces": ({}, ["--push-to-hub", "not a valid id!"], "Invalid Hub repository id 'not a valid id!'"),
    "Hub id with three parts": ({}, ["--push-to-hub", "org/name/extra"], "Invalid Hub repository id 'org/name/extra'"),
    "Hub id with double dash": ({}, ["--push-to-hub", "org/na--me"], "Invalid Hub repository id"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_corpus_fails_cleanly_and_writes_nothing(tmp_path, monkeypatch, capsys, request, case) -> None:
    files, flags, message = BAD_INPUTS[case]
    if TINY_MODEL in flags:
        model = str(request.getfixturevalue("tiny_model_dir"))
        flags = [model if flag == TINY_MODEL else flag for flag in flags]
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(content if isinstance(content, bytes) else content.encode())
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    flags = flags if "--output-dir" in flags else ["--output-dir", "run", *flags]
    assert train_main(flags) == 2
    err = capsys.readouterr().err
    assert message in err, err[-1000:]
    assert "Traceback" not in err
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before, "nothing is created, not even a run dir"
    assert_documented(case, err)


def test_corpus_is_large() -> None:
    assert len(BAD_INPUTS) >= 25


def test_every_row_of_the_robustness_table_is_checked_by_a_test() -> None:
    """docs/robustness.md lists only what a test checks: the corpus above, and assert_documented elsewhere."""
    checked = set(BAD_INPUTS)
    for test_file in Path(__file__).parent.glob("test_*.py"):
        checked |= set(re.findall(r'assert_documented\(\s*"([^"]+)"', test_file.read_text(encoding="utf-8")))
    documented = set(documented_messages())
    assert documented - checked == set(), "rows no test checks"
    assert checked - documented == set(), "checked bad inputs missing from docs/robustness.md"


def test_mistyped_flag_names_the_right_one(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--iteratons", "3"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --iteratons 3. Did you mean '--iterations'?" in capsys.readouterr().err


def test_changed_settings_leave_the_existing_run_untouched(tiny_run, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    contents = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    config = json.loads((run / "run.json").read_text())["config"]
    flags = ["--model", config["model"], "--dataset", config["dataset"], "--test-dataset", config["test_dataset"],
             "--output-dir", str(run), "--variant", "FNF"]
    assert train_main(flags) == 2
    assert "variant" in capsys.readouterr().err.lower()
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == contents


def test_malformed_json_line_is_named(tmp_path, capsys) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "q", "answers": ["a"]}) + "\n{not json\n")
    assert train_main(["--dataset", str(data), "--output-dir", str(tmp_path / "run")]) == 2
    assert f"{data}:2:2: invalid JSON" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_column_lists_available_ones(tmp_path, capsys) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": ["a"]}) + "\n")
    assert train_main(["--dataset", str(data), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no column 'answers'" in err and "answer, question" in err and "--answers-column" in err


def test_help_runs_as_a_script() -> None:
    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0
    assert "--variant" in result.stdout and "EIE" in result.stdout
