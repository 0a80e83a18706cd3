"""Tables and plots of finished runs (docs/results.md), read back from the runs' evaluation files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stasc.core.bootstrap import Estimate
from stasc.results.report import (
    GENERATED_BEGIN,
    GENERATED_END,
    IterationSummary,
    RunSummary,
    comparison_table,
    plot_runs,
    rank_runs,
    replace_generated,
    study_table,
    summarize_run,
)

REPORT = Path(__file__).resolve().parents[1] / "experiments" / "report.py"


def test_summary_matches_the_manifest_and_brackets_each_measure(tiny_run: Path) -> None:
    manifest = json.loads((tiny_run / "run.json").read_text())
    summary = summarize_run(tiny_run)
    assert summary.variant == "EIE" and summary.method == "stasc"
    assert [item.iteration for item in summary.iterations] == [0, 1, 2]
    for item, entry in zip(summary.iterations, manifest["iterations"], strict=True):
        for name in ("acc_t1", "acc_t2", "delta", "i_to_c", "c_to_i"):
            estimate = item.estimates[name]
            assert estimate.value == pytest.approx(entry["metrics"][name])
            assert estimate.low <= estimate.value <= estimate.high
        assert item.kept_examples == entry.get("kept_examples")
        assert item.turns.shape == (summary.test_questions, 2) == (4, 2)
    assert summary.storage_bytes > 0
    assert summary.compute_seconds == pytest.approx(sum(entry.get("seconds") or 0 for entry in manifest["iterations"]))


def run_with(name: str, deltas: list[float], *, method: str = "stasc", final=(1, 0) * 20) -> RunSummary:
    items = []
    for index, delta in enumerate(deltas):
        turns = np.array([[0.5, value] for value in final], dtype=float)
        table = np.column_stack([turns, turns[:, 1] - turns[:, 0], turns[:, 1], turns[:, 0] * 0, turns, turns[:, 0]])
        estimates = {name_: Estimate(0.4, 0.3, 0.5) for name_ in ("acc_t1", "acc_t2", "i_to_c", "c_to_i")}
        estimates["delta"] = Estimate(delta, delta - 0.05, delta + 0.05)
        items.append(IterationSummary(index, None if index == 0 else 10, estimates, table, turns, 60.0))
    return RunSummary(name, method, "EBF", len(final), tuple(items), 1000)


def test_runs_rank_by_the_last_delta_then_i_to_c() -> None:
    runs = [run_with("a", [0.0, 0.05]), run_with("b", [0.0, 0.10]), run_with("c", [0.2, -0.1])]
    assert [run.name for run in rank_runs(runs)] == ["b", "a", "c"]


def test_study_table_has_a_row_per_iteration_with_intervals_and_bold_significant_deltas() -> None:
    table = study_table([run_with("validation-x", [0.0, 0.10])], {"validation-x": "x"})
    rows = table.splitlines()[2:]
    assert len(rows) == 2
    assert rows[1].startswith("| x | 1 | 10 | 0.400 [0.300, 0.500] | 0.400 [0.300, 0.500] | **+0.100 [+0.050, +0.150]**")
    assert "| +0.000 [-0.050, +0.050] |" in rows[0], "an interval with zero inside is not bold"


def test_comparison_is_paired_by_question() -> None:
    better = run_with("test-a", [0.1], final=(1, 1) * 20)
    worse = run_with("test-b", [0.0], final=(1, 0) * 20)
    table = comparison_table(better, [worse])
    rows = table.splitlines()[2:]
    assert rows[0].startswith("| test-a | 1.000 [1.000, 1.000] | - |")
    assert "**-0.500 [" in rows[1], "the other run's final accuracy is 0.5 lower on the same questions"


def test_generated_block_is_replaced_and_hand_written_text_kept() -> None:
    first = replace_generated("# Results\n\nMy reading.\n", "table one")
    assert first.startswith("# Results\n\nMy reading.") and "table one" in first
    second = replace_generated(first.replace("My reading.", "My new reading."), "table two")
    assert "table one" not in second and "table two" in second and "My new reading." in second
    assert second.count(GENERATED_BEGIN) == second.count(GENERATED_END) == 1


def test_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "figures" / "runs.png"
    plot_runs([run_with("a", [0.0, 0.1]), run_with("b", [0.0, 0.2])], path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_script_writes_tables_plots_and_picks_the_best(tiny_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root / "validation-balanced")
    shutil.copytree(tiny_run, root / "test-balanced")
    unfinished = Path(shutil.copytree(tiny_run, root / "validation-other")) / "run.json"
    unfinished.write_text(json.dumps({**json.loads(unfinished.read_text()), "status": "running"}))
    document = tmp_path / "docs" / "results.md"
    document.parent.mkdir()
    document.write_text("# Results\n\nHand-written reading.\n")
    command = [sys.executable, str(REPORT), str(root), "--document", str(document), "--figures",
               str(tmp_path / "docs" / "figures")]
    subprocess.run(command, check=True, capture_output=True, text=True)
    text = document.read_text()
    assert "Hand-written reading." in text
    assert "| balanced | 2 |" in text and "(figures/validation.png)" in text and "(figures/test.png)" in text
    assert "| other |" not in text, "an unfinished run is left out"
    assert (tmp_path / "docs" / "figures" / "validation.png").is_file()
    assert "acc_t2_low" in (tmp_path / "docs" / "results.csv").read_text()
    best = subprocess.run([*command[:3], "--best"], check=True, capture_output=True, text=True)
    assert best.stdout.split() == ["balanced"]


def test_report_script_says_what_is_missing(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPORT), str(tmp_path), "--best"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "run experiments/study.py validation first" in result.stderr
