"""train.py as a user runs it: exit codes, messages, and nothing written on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stasc.cli import train_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "missing.jsonl"], "Dataset file not found: missing.jsonl"),
        (["--variant", "XYZ"], "Unknown variant 'XYZ'"),
        (["--n-init", "0"], "--n-init must be at least 1"),
        (["--model", "bundeld"], "Did you mean 'bundled'"),
    ],
)
def test_bad_input_fails_cleanly_and_writes_nothing(tmp_path, capsys, extra, message) -> None:
    output = tmp_path / "run"
    code = train_main(["--output-dir", str(output), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not output.exists()


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
