"""run.json checked on load: metrics that agree with each other, counts that agree with the data, and files
that stay inside the run directory; a hand-edited manifest is refused with the field it got wrong."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stasc.core.metrics import ALIASES, self_correction_metrics
from stasc.errors import StascError
from stasc.run.manifest import check_manifest, read_manifest, run_file, write_manifest

from testing_utils import assert_documented


def entry(iteration: int, initial: list[int], correction: list[int]) -> dict[str, Any]:
    """An iteration entry as the loop records it, for 4 test questions."""
    metrics, intervals = self_correction_metrics(["t0", "t1", "t2", "t3"], initial, correction)
    metrics |= {"initial_reward": metrics["acc_t1"], "correction_reward": metrics["acc_t2"]}
    folder = f"iteration_{iteration:02d}"
    recorded = {"iteration": iteration, "metrics": metrics, "intervals": intervals, "adapter": None,
                "evaluation": f"{folder}/evaluation.parquet", "peak_rss_mb": 600.0}
    if iteration:
        recorded |= {
            "adapter": f"{folder}/adapter", "initial_answers": f"{folder}/initial_answers.parquet",
            "corrections": f"{folder}/corrections.parquet", "train_data": f"{folder}/train.parquet",
            "kept_examples": 10,
            "train": {"pairs": 32, "kept_examples": 10,
                      "train_transitions": {"correct_to_correct": 7, "correct_to_incorrect": 7,
                                            "incorrect_to_correct": 3, "incorrect_to_incorrect": 15},
                      "kept_transitions": {"correct_to_correct": 7, "correct_to_incorrect": 0,
                                           "incorrect_to_correct": 3, "incorrect_to_incorrect": 0}},
            "training": {"examples": 9, "skipped_too_long": 1, "steps": 3},
        }
    return recorded


def manifest() -> dict[str, Any]:
    return {
        "format_version": 1, "status": "complete",
        "config": {"n_init": 2, "n_corr": 2, "model": "bundled"},
        "data": {"train_questions": 8, "test_questions": 4},
        "iterations": [entry(0, [1, 1, 0, 0], [1, 0, 0, 0]), entry(1, [1, 0, 0, 0], [1, 1, 1, 0])],
    }


def written(tmp_path: Path, edit: Callable[[dict[str, Any]], Any] | None = None) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    values = manifest()
    if edit:
        edit(values)
    write_manifest(run_dir, values)
    return run_dir


def test_a_manifest_as_the_loop_writes_it_loads(tmp_path: Path) -> None:
    assert read_manifest(written(tmp_path)) == manifest()


def both(name: str, value: float) -> Callable[[dict[str, Any]], None]:
    """Set a metric under its new name and its older one, as a careful hand edit would."""
    old = next(old for old, new in ALIASES.items() if new == name)

    def edit(values: dict[str, Any]) -> None:
        values["iterations"][1]["metrics"][name] = values["iterations"][1]["metrics"][old] = value

    return edit


def setting(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set one field of iteration 1's entry, named by its dotted path."""
    *parents, last = path.split(".")

    def edit(values: dict[str, Any]) -> None:
        target = values["iterations"][1]
        for key in parents:
            target = target[key]
        target[last] = value

    return edit


TAMPERED = {  # each hand edit, and the field the refusal names
    "a rate above one": (setting("metrics.acc_t1", 1.5), "iterations[1].metrics.acc_t1 is 1.5, outside [0, 1]"),
    "a negative rate": (setting("metrics.correct_to_incorrect", -0.25),
                        "iterations[1].metrics.correct_to_incorrect is -0.25, outside [0, 1]"),
    "a rate that is not a number": (setting("metrics.i_to_c", "high"), "iterations[1].metrics.i_to_c is 'high'"),
    "an older name that disagrees": (setting("metrics.initial_in_acc", 0.5),
                                     "metrics.initial_in_acc is 0.5 but its other name acc_t1 is 0.25"),
    "delta that is not the difference": (setting("metrics.delta", 0.75),
                                         "metrics: delta is 0.75 but acc_t2 - acc_t1 is 0.5"),
    "more fixes than the accuracies allow": (both("i_to_c", 0.75), "metrics: i_to_c + c_to_c is 1 but acc_t2 is 0.75"),
    "breaks that the accuracies do not show": (both("c_to_i", 0.25),
                                               "metrics: c_to_c + c_to_i is 0.5 but acc_t1 is 0.25"),
    "an interval that misses its value": (setting("intervals.delta", [-0.5, 0.25]),
                                          "intervals.delta [-0.5, 0.25] does not contain metrics.delta 0.5"),
    "kept examples twice over": (setting("kept_examples", 11), "kept_examples is 11 but train.kept_examples is 10"),
    "pairs that the transitions do not add up to": (setting("train.pairs", 33),
                                                    "train.pairs is 33 but the sum of train.train_transitions is 32"),
    "a training report of other examples": (setting("training.examples", 10), "kept_examples is 10 but "
                                            "training.examples + training.skipped_too_long is 11"),
    "a path out of the run": (setting("evaluation", "../../secret.parquet"),
                              "iterations[1].evaluation '../../secret.parquet' is not a file of an iteration folder"),
    "an absolute path": (setting("adapter", "/etc"), "iterations[1].adapter '/etc' is not a file of an iteration"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_hand_edited_manifest_is_refused_naming_the_field(tmp_path: Path, case: str) -> None:
    edit, problem = TAMPERED[case]
    run_dir = written(tmp_path, edit)
    with pytest.raises(StascError) as refused:
        read_manifest(run_dir)
    message = str(refused.value)
    assert message.startswith(f"{run_dir}/run.json: the run manifest is damaged (")
    assert problem in message
    assert message.endswith("Restore it, or start the run again in a new --output-dir.")


def test_pairs_must_match_the_questions_and_samples_of_the_run(tmp_path: Path) -> None:
    run_dir = written(tmp_path, lambda values: values["data"].update(train_questions=9))
    with pytest.raises(StascError, match=r"train.pairs is 32 but train_questions x n_init x n_corr in the data and "
                                         r"config is 36"):
        read_manifest(run_dir)


def test_what_a_user_sees_for_contradicting_metrics(tmp_path: Path) -> None:
    with pytest.raises(StascError) as refused:
        read_manifest(written(tmp_path, setting("metrics.delta", 0.75)))
    assert_documented("metrics in run.json that contradict each other", str(refused.value))
    with pytest.raises(StascError) as refused:
        read_manifest(written(tmp_path, setting("evaluation", "../../secret.parquet")))
    assert_documented("a path in run.json that leaves the run directory", str(refused.value))


def test_a_manifest_from_before_the_newer_metric_names_still_loads(tmp_path: Path) -> None:
    def older(values: dict[str, Any]) -> None:
        for recorded in values["iterations"]:
            recorded.pop("intervals")
            recorded.pop("peak_rss_mb")
            for name in ("acc_t1", "acc_t2", "delta", "i_to_c", "c_to_i", "c_to_c", "i_to_i"):
                recorded["metrics"].pop(name)

    run_dir = written(tmp_path, older)
    assert "acc_t1" not in read_manifest(run_dir)["iterations"][0]["metrics"]
    (run_dir / "run.json").write_text(
        (run_dir / "run.json").read_text().replace('"incorrect_to_correct": 0.5', '"incorrect_to_correct": 0.25')
    )
    with pytest.raises(StascError, match=r"i_to_c \+ c_to_c is 0.5 but acc_t2 is 0.75"):
        read_manifest(run_dir)


def test_a_symbolic_link_out_of_the_run_directory_is_refused(tmp_path: Path) -> None:
    run_dir = written(tmp_path)
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(b"not the run's")
    (run_dir / "iteration_01").mkdir()
    (run_dir / "iteration_01" / "evaluation.parquet").symlink_to(secret)
    with pytest.raises(StascError, match=r"iterations\[1\].evaluation 'iteration_01/evaluation.parquet' leads outside "
                                         r"the run directory .* \(through a symbolic link\)"):
        read_manifest(run_dir)
    with pytest.raises(StascError, match="refusing to read it"):
        run_file(run_dir, "iteration_01/evaluation.parquet")
    assert run_file(run_dir, "iteration_01/train.parquet") == run_dir / "iteration_01" / "train.parquet"


def test_a_manifest_from_the_hub_is_checked_without_a_directory(tmp_path: Path) -> None:
    values = manifest()
    check_manifest(values, Path("org/run/run.json"))
    values = copy.deepcopy(values)
    values["iterations"][1]["adapter"] = "iteration_01/../../.."
    with pytest.raises(StascError, match=r"org/run/run.json: the run manifest is damaged \(iterations\[1\].adapter"):
        check_manifest(values, Path("org/run/run.json"))

