from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stasc.core.bootstrap import Estimate
from stasc.results.report import (
    design_choice_table,
    GENERATED_BEGIN,
    GENERATED_END,
    IterationSummary,
    RunSummary,
    iteration_table,
    plot_runs,
    rank_variants,
    replace_generated,
    summarize_run,
)

REPORT = Path(__file__).resolve().parents[1] / "experiments" / "report.py"


def test_summary_matches_the_manifest_and_brackets_each_accuracy(tiny_run: Path) -> None:
    manifest = json.loads((tiny_run / "run.json").read_text())
    summary = summarize_run(tiny_run)
    assert summary.variant == "EIE"
    assert [item.iteration for item in summary.iterations] == [0, 1, 2]
    for item, entry in zip(summary.iterations, manifest["iterations"], strict=True):
        assert item.initial.value == pytest.approx(entry["metrics"]["initial_in_acc"])
        assert item.correction.value == pytest.approx(entry["metrics"]["correction_in_acc"])
        assert item.initial.low <= item.initial.value <= item.initial.high
        assert item.kept_examples == entry.get("kept_examples")
        assert len(item.correction_correct) == summary.test_questions == 4
    assert summary.storage_bytes > 0
    assert summary.compute_seconds == pytest.approx(sum(entry.get("seconds") or 0 for entry in manifest["iterations"]))
    assert [item.iteration for item in summary.timed_iterations] == [0, 1, 2], "iteration 0 records its seconds"


def run_with(variant: str, corrections: list[float]) -> RunSummary:
    items = tuple(
        IterationSummary(index, None if index == 0 else 10, Estimate(0.4, 0.3, 0.5), Estimate(value, value - 0.1,
                         value + 0.1), {"correct_to_incorrect": 0.0, "incorrect_to_correct": 0.0}, (1, 0), (1, 0), 1.0)
        for index, value in enumerate(corrections)
    )
    return RunSummary(f"builtin-{variant}", variant, 2, items, 1000)


def test_variants_rank_by_last_correction_accuracy_then_by_the_mean() -> None:
    runs = [run_with("FIF", [0.3, 0.5, 0.4]), run_with("ENE", [0.3, 0.3, 0.45]), run_with("EIF", [0.3, 0.4, 0.45])]
    assert [run.variant for run in rank_variants(runs)] == ["EIF", "ENE", "FIF"]


def test_iteration_table_has_a_row_per_iteration_with_intervals() -> None:
    table = iteration_table([run_with("FIF", [0.3, 0.5])])
    assert "| FIF | 1 | 10 | 0.400 [0.300, 0.500] | 0.500 [0.400, 0.600] |" in table
    assert len(table.splitlines()) == 2 + 2


def test_generated_block_is_replaced_and_hand_written_text_kept() -> None:
    first = replace_generated("# Results\n\nMy reading.\n", "table one")
    assert first.startswith("# Results\n\nMy reading.") and "table one" in first
    second = replace_generated(first.replace("My reading.", "My new reading."), "table two")
    assert "table one" not in second and "table two" in second and "My new reading." in second
    assert second.count(GENERATED_BEGIN) == second.count(GENERATED_END) == 1


def test_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "figures" / "runs.png"
    plot_runs([run_with("FIF", [0.3, 0.5]), run_with("ENE", [0.3, 0.4])], path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_script_writes_tables_plots_and_picks_the_best(tiny_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root / "builtin-EIE")
    unfinished = Path(shutil.copytree(tiny_run, root / "builtin-ENE")) / "run.json"
    unfinished.write_text(json.dumps({**json.loads(unfinished.read_text()), "status": "running", "variant": "ENE"}))
    document = tmp_path / "docs" / "results.md"
    document.parent.mkdir()
    document.write_text("# Results\n\nHand-written reading.\n")
    command = [sys.executable, str(REPORT), str(root), "--document", str(document), "--figures",
               str(tmp_path / "docs" / "figures")]
    subprocess.run(command, check=True, capture_output=True, text=True)
    text = document.read_text()
    assert "Hand-written reading." in text
    assert "| EIE | 2 |" in text and "![" in text and "(figures/builtin.png)" in text
    assert "| ENE |" not in text, "an unfinished run is left out"
    assert (tmp_path / "docs" / "figures" / "builtin.png").is_file()
    assert "correction_in_acc" in (tmp_path / "docs" / "results.csv").read_text()
    best = subprocess.run([*command[:3], "--best", "1"], check=True, capture_output=True, text=True)
    assert best.stdout.split() == ["EIE"]


def test_report_script_says_what_is_missing(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPORT), str(tmp_path), "--best", "2"], capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert "run experiments/run_results.sh first" in result.stderr


def test_design_choices_compare_variants_that_differ_in_that_choice_alone() -> None:
    def run(variant: str, correct: tuple[int, ...]) -> RunSummary:
        estimate = Estimate(0.5, 0.4, 0.6)
        last = IterationSummary(1, 4, estimate, estimate, {}, correct, correct, 1.0)
        return RunSummary(f"builtin-{variant}", variant, len(correct), (last, last), 1000)

    table = design_choice_table(
        [run("ENF", (1, 1, 1, 0) * 10), run("FNF", (1, 0, 0, 0) * 10), run("ENE", (1, 1, 1, 1) * 10)]
    )
    rows = [row.split(" | ") for row in table.splitlines()[2:]]
    assert [row[:3] for row in rows] == [
        ["| initialization", "evolving − fixed", "ENF − FNF"],
        ["| fine-tuning", "evolving − fixed", "ENE − ENF"],
    ], "one row per pair differing in one choice; none for pairs whose other variant is missing (FNE, EIF ...)"
    assert rows[0][3].startswith("**+0.500 [") and rows[1][3].startswith("**+0.250 ["), "differences, significant"
