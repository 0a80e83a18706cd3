"""How the app shows answers and metrics: verdicts, what an iteration's corrections do, metric tables of new
and old run manifests, and HTML tables."""

from __future__ import annotations

import pandas as pd

from stasc.app import views

NEW_ENTRY = {
    "iteration": 2,
    "kept_examples": 7,
    "metrics": {"acc_t1": 0.25, "acc_t2": 0.5, "delta": 0.25, "i_to_c": 0.375, "c_to_i": 0.125, "c_to_c": 0.125,
                "i_to_i": 0.375, "initial_in_acc": 0.25, "correction_in_acc": 0.5},
    "intervals": {"acc_t1": [0.1, 0.4], "acc_t2": [0.3, 0.7], "delta": [-0.05, 0.5], "i_to_c": [0.2, 0.55],
                  "c_to_i": [0.0, 0.25]},
}
OLD_ENTRY = {  # a run.json written before acc_t1 and the intervals
    "iteration": 0,
    "metrics": {"initial_in_acc": 0.5, "correction_in_acc": 0.5, "incorrect_to_correct": 0.0,
                "correct_to_incorrect": 0.0, "correct_to_correct": 0.5, "incorrect_to_incorrect": 0.5},
}


def test_verdicts_set_the_final_answer_apart_and_a_missing_line_is_a_neutral_note() -> None:
    text = "Paris is in France.\nFinal Answer: Paris"
    assert views.verdict(text, ["Paris"], "final_answer") == "**Final answer:** `Paris` **✓ correct**"
    assert views.verdict(text, [], "full") == "**Final answer:** `Paris`"
    assert views.verdict("It is London.", ["London"], "full") == (
        "*No Final Answer line; whole reply graded.* **✓ correct**"
    )
    # Under final_answer extraction the run scores such a reply 0, and the note says why.
    assert views.verdict("It is London.", ["London"], "final_answer") == (
        "*No Final Answer line; graded as no answer (the run reads only that line).* **✗ incorrect**"
    )
    assert "fixed a wrong answer" in views.transition_summary("London", "Paris", ["Paris"], "full")
    assert "broke a right answer" in views.transition_summary("Paris", "Rome", ["Paris"], "full")
    assert "Add reference answers" in views.transition_summary("Rome", "Rome", [], "full")


def test_an_iterations_correction_line_gives_fixed_and_broken_shares_with_their_intervals() -> None:
    assert views.correction_line(NEW_ENTRY) == (
        "**Iteration 2** on the test set: its self-corrections fixed 37.5% (95% interval 20.0% to 55.0%) of "
        "answers and broke 12.5% (95% interval 0.0% to 25.0%); net change +25.0% (95% interval -5.0% to +50.0%)."
    )


def test_an_iteration_that_fixes_nothing_says_so_plainly_also_for_runs_without_intervals() -> None:
    assert views.correction_line(OLD_ENTRY) == (
        "**The base model (iteration 0) fixes nothing on the test set:** its self-corrections turned no wrong "
        "answer right, and broke 0.0% of answers. A changed answer here is not a correction it learned."
    )


def test_metric_values_read_new_and_older_names() -> None:
    assert views.metric_values(NEW_ENTRY) == {
        "acc_t1": 0.25, "acc_t2": 0.5, "delta": 0.25, "i_to_c": 0.375, "c_to_i": 0.125, "c_to_c": 0.125,
        "i_to_i": 0.375,
    }
    assert views.metric_values(OLD_ENTRY) == {
        "acc_t1": 0.5, "acc_t2": 0.5, "delta": 0.0, "i_to_c": 0.0, "c_to_i": 0.0, "c_to_c": 0.5, "i_to_i": 0.5,
    }
    assert views.metric_intervals(OLD_ENTRY) == {}
    assert views.metric_intervals({**OLD_ENTRY, "intervals": {"delta": [0.1], "acc_t1": "x"}}) == {}


def test_the_metrics_table_shows_the_headline_metrics_with_intervals_where_the_run_has_them() -> None:
    table = views.metrics_table([OLD_ENTRY, NEW_ENTRY])
    assert list(table.columns) == ["iteration", "kept", "acc_t1", "acc_t2", "delta", "i→c", "c→i"]
    assert table.values.tolist() == [[0, "-", 0.5, 0.5, 0.0, 0.0, 0.0], [2, "7", 0.25, 0.5, 0.25, 0.375, 0.125]]
    shown = views.metrics_html([OLD_ENTRY, NEW_ENTRY])
    assert "<small>[-0.05, +0.50]</small>" in shown and "<small>[0.20, 0.55]</small>" in shown
    assert shown.count("<small>") == 5  # the old run's row has no intervals


def test_html_tables_escape_model_output_label_every_cell_and_vanish_when_empty() -> None:
    frame = pd.DataFrame({"question": ["<b>Which?</b>"], "initial_answer": ["a & b\nFinal Answer: c"]})
    shown = views.html_table(frame)
    assert "&lt;b&gt;Which?&lt;/b&gt;" in shown and "<b>" not in shown and "a &amp; b" in shown
    assert "<td data-label='question'>" in shown and "<td data-label='initial_answer'>" in shown
    assert views.html_table(pd.DataFrame()) == ""
    assert views.html_table(pd.DataFrame(columns=["question"])) == ""


def test_later_rounds_join_the_table_and_the_plot_after_acc_t2() -> None:
    rounds = {**NEW_ENTRY, "metrics": {**NEW_ENTRY["metrics"], "acc_t3": 0.625, "acc_t10": 0.75},
              "intervals": {**NEW_ENTRY["intervals"], "acc_t3": [0.4, 0.8]}}
    assert views.round_accuracies([rounds, NEW_ENTRY]) == ["acc_t3", "acc_t10"]
    table = views.metrics_table([rounds])
    assert list(table.columns) == ["iteration", "kept", "acc_t1", "acc_t2", "acc_t3", "acc_t10", "delta", "i→c", "c→i"]
    assert list(table.iloc[0])[4:6] == [0.625, 0.75]
    assert "[0.40, 0.80]" in views.metrics_html([rounds])
    assert views.accuracy_labels([rounds])["acc_t3"] == "correction round 2 (acc_t3)"
    assert views.accuracy_labels([NEW_ENTRY]) == views.ACCURACY_LABELS
    assert list(views.metrics_table([NEW_ENTRY]).columns)[2:4] == ["acc_t1", "acc_t2"]
