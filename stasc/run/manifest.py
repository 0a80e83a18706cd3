"""run.json: the manifest of a run, the one file that says which iterations are complete.

An iteration is listed only after all of its files are written, so a reader (resume, the
app, a Hub push) can trust every path an entry names, once check_manifest has made sure the
file was not edited to point elsewhere or to metrics that contradict each other.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from stasc.core.metrics import ALIASES, HEADLINE
from stasc.errors import StascError
from stasc.run.storage import write_json

MANIFEST_NAME = "run.json"
FORMAT_VERSION = 1
TRANSITIONS = ("correct_to_correct", "correct_to_incorrect", "incorrect_to_correct", "incorrect_to_incorrect")
# The files an iteration entry names, always as iteration_NN/NAME relative to the run directory.
PATH_FIELDS = ("adapter", "evaluation", "initial_answers", "corrections", "train_data", "rationalizations")
RUN_FILE = re.compile(r"iteration_[0-9]{2,}(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+")
# Every metric a run records: shares of questions or samples, and delta, a difference of two of them.
RATES = frozenset({*HEADLINE, *ALIASES, *ALIASES.values(), "initial_reward", "correction_reward"})
REQUIRED_METRICS = ("initial_in_acc", "correction_in_acc")  # what every reader of a run relies on
TOLERANCE = 1e-6


def manifest_path(run_dir: Path) -> Path:
    return Path(run_dir) / MANIFEST_NAME


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """Load and check run.json, naming the file and the way out when it is damaged."""
    path = manifest_path(run_dir)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StascError(f"{path} does not exist: {run_dir} is not a stasc run directory.") from None
    except json.JSONDecodeError as error:
        raise StascError(
            f"{path}:{error.lineno}:{error.colno}: the run manifest is not valid JSON ({error.msg}). "
            "Restore it, or start the run again in a new --output-dir."
        ) from None
    check_manifest(manifest, path, run_dir=Path(run_dir))
    return manifest


def check_manifest(manifest: Any, path: Path, *, run_dir: Path | None = None) -> None:
    """Reject a manifest that was damaged, e.g. by hand editing: its structure, every file it names (which
    must lie inside run_dir, symbolic links resolved; for a Hub repo, inside the repository), and its
    metrics, which must agree with each other and with the counts beside them."""
    problem = _structure_problem(manifest)
    if problem is None:
        data = manifest.get("data") if isinstance(manifest.get("data"), dict) else {}
        for position, entry in enumerate(manifest["iterations"]):
            problem = _entry_problem(entry, manifest["config"], data, run_dir)
            if problem:
                problem = f"iterations[{position}].{problem}"
                break
    if problem:
        raise StascError(
            f"{path}: the run manifest is damaged ({problem}). Restore it, or start the run again "
            "in a new --output-dir."
        )


def run_file(run_dir: Path, relative: str) -> Path:
    """The file a manifest names, refused unless it is an iteration's file inside run_dir once every
    symbolic link is resolved, so that an edited run.json cannot make anything read a file elsewhere."""
    problem = _path_problem(relative, Path(run_dir))
    if problem:
        raise StascError(
            f"{manifest_path(run_dir)} names {relative!r}, which {problem}: refusing to read it. Restore run.json, "
            "or start the run again in a new --output-dir."
        )
    return Path(run_dir) / relative


def inside_run(run_dir: Path, path: Path) -> Path:
    """path, refused when it resolves (through symbolic links) to somewhere outside run_dir."""
    if not Path(path).resolve().is_relative_to(Path(run_dir).resolve()):
        raise StascError(
            f"{path} in the run {run_dir} is a link to {Path(path).resolve()}, outside the run directory: refusing "
            "to read it. Replace the link by the file itself."
        )
    return Path(path)


def _path_problem(relative: Any, run_dir: Path | None) -> str | None:
    if not isinstance(relative, str) or not RUN_FILE.fullmatch(relative):
        return "is not a file of an iteration folder (iteration_NN/NAME)"
    if run_dir is not None and not (run_dir / relative).resolve().is_relative_to(run_dir.resolve()):
        return f"leads outside the run directory {run_dir} (through a symbolic link)"
    return None


def _structure_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict):
        return "it is not a JSON object"
    if manifest.get("format_version") != FORMAT_VERSION:
        return f"format_version is {manifest.get('format_version')!r}, expected {FORMAT_VERSION}"
    if not isinstance(manifest.get("config"), dict):
        return "'config' is missing"
    if not isinstance(manifest.get("iterations"), list):
        return "'iterations' is missing or not a list"
    for position, entry in enumerate(manifest["iterations"]):
        if not isinstance(entry, dict) or entry.get("iteration") != position:
            return f"iterations[{position}] should be iteration {position}"
    return None


def _entry_problem(
    entry: dict[str, Any], config: dict[str, Any], data: dict[str, Any], run_dir: Path | None
) -> str | None:
    for name in PATH_FIELDS:
        if entry.get(name) is not None:
            problem = _path_problem(entry[name], run_dir)
            if problem:
                return f"{name} {entry[name]!r} {problem}"
    metrics = entry.get("metrics")
    if not isinstance(metrics, dict) or not all(_is_number(metrics.get(key)) for key in REQUIRED_METRICS):
        return f"metrics needs {' and '.join(REQUIRED_METRICS)}"
    return _metrics_problem(metrics, entry.get("intervals")) or _counts_problem(entry, config, data)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metrics_problem(metrics: dict[str, Any], intervals: Any) -> str | None:
    """Rates in [0, 1]; each older name equal to its new one; delta, the accuracies and the transitions
    in agreement; every interval around its value. Only the names present are checked (older runs
    have fewer)."""
    for name, value in metrics.items():
        low = -1 if name == "delta" else 0
        if name in RATES and (not _is_number(value) or not low - TOLERANCE <= value <= 1 + TOLERANCE):
            return f"metrics.{name} is {value!r}, outside [{low}, 1]"
    for old, new in ALIASES.items():
        if old in metrics and new in metrics and abs(metrics[old] - metrics[new]) > TOLERANCE:
            return f"metrics.{old} is {metrics[old]!r} but its other name {new} is {metrics[new]!r}"
    rate = {new: metrics.get(new, metrics.get(old)) for old, new in ALIASES.items()}
    first, second = rate["acc_t1"], rate["acc_t2"]
    agreements = [
        ("delta", metrics.get("delta"), "acc_t2 - acc_t1", second - first),
        ("c_to_c + c_to_i", _total(rate["c_to_c"], rate["c_to_i"]), "acc_t1", first),
        ("i_to_c + c_to_c", _total(rate["i_to_c"], rate["c_to_c"]), "acc_t2", second),
        ("i_to_c - c_to_i", _difference(rate["i_to_c"], rate["c_to_i"]), "acc_t2 - acc_t1", second - first),
    ]
    for name, value, other, expected in agreements:
        if value is not None and abs(value - expected) > TOLERANCE:
            return f"metrics: {name} is {value:.6g} but {other} is {expected:.6g}"
    if intervals is None:
        return None
    if not isinstance(intervals, dict):
        return "intervals is not an object"
    for name, interval in intervals.items():
        if (
            not isinstance(interval, list) or len(interval) != 2 or not all(map(_is_number, interval))
            or name not in rate | metrics
        ):
            return f"intervals.{name} is {interval!r}, not [low, high] of a metric"
        value = (rate | metrics)[name]
        if not interval[0] - TOLERANCE <= value <= interval[1] + TOLERANCE:
            return f"intervals.{name} {interval} does not contain metrics.{name} {value:.6g}"
    return None


def _total(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else first + second


def _difference(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else first - second


def _counts_problem(entry: dict[str, Any], config: dict[str, Any], data: dict[str, Any]) -> str | None:
    """The kept examples, pairs and transitions agree with each other, the training report and the data."""
    train = entry.get("train") if isinstance(entry.get("train"), dict) else {}
    training = entry.get("training") if isinstance(entry.get("training"), dict) else {}
    counts = {
        "kept_examples": entry.get("kept_examples"),
        "train.kept_examples": train.get("kept_examples"),
        "train.pairs": train.get("pairs"),
        "train.rationalized": train.get("rationalized", 0),
        "training.examples": training.get("examples"),
        "training.skipped_too_long": training.get("skipped_too_long"),
    }
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            return f"{name} is {value!r}, not a count"
    kept, pairs = counts["kept_examples"], counts["train.pairs"]
    for name in ("train_transitions", "kept_transitions"):
        transitions = train.get(name)
        if transitions is not None and (
            not isinstance(transitions, dict) or not all(_is_count(value) for value in transitions.values())
        ):
            return f"train.{name} is {transitions!r}, not counts"
    questions = data.get("train_questions")
    expected_pairs = (
        questions * config["n_init"] * config["n_corr"]
        if all(_is_count(value) for value in (questions, config.get("n_init"), config.get("n_corr")))
        else None
    )
    agreements = [
        ("kept_examples", kept, "train.kept_examples", counts["train.kept_examples"]),
        ("train.pairs", pairs, "the sum of train.train_transitions", _sum(train.get("train_transitions"))),
        ("kept_examples", kept, "the sum of train.kept_transitions", _sum(train.get("kept_transitions"))),
        ("kept_examples", kept, "training.examples + training.skipped_too_long",
         _total(counts["training.examples"], counts["training.skipped_too_long"])),
        ("train.pairs", pairs, "train_questions x n_init x n_corr in the data and config", expected_pairs),
    ]
    for name, value, other, expected in agreements:
        if value is not None and expected is not None and value != expected:
            return f"{name} is {value} but {other} is {expected}"
    if kept is not None and pairs is not None and kept > pairs + counts["train.rationalized"]:
        return f"kept_examples is {kept}, more than the {pairs} pairs sampled"
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _sum(counts: Any) -> int | None:
    return sum(counts.values()) if isinstance(counts, dict) else None


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    write_json(manifest_path(run_dir), manifest)


def format_table(iterations: list[dict[str, Any]]) -> str:
    """A per-iteration table: kept examples, acc_t1, acc_t2, delta with its 95% interval, i->c and c->i."""
    header = ["iter", "kept", "acc_t1", "acc_t2", "delta [95% CI]", "i->c", "c->i"]
    rows = [header]
    for entry in iterations:
        metrics = entry["metrics"]
        kept = entry.get("kept_examples")
        first, second = metrics["initial_in_acc"], metrics["correction_in_acc"]
        delta = f"{second - first:+.3f}"
        interval = (entry.get("intervals") or {}).get("delta")
        if interval:
            delta += f" [{interval[0]:+.3f}, {interval[1]:+.3f}]"
        rows.append(
            [
                str(entry["iteration"]),
                "-" if kept is None else str(kept),
                f"{first:.3f}",
                f"{second:.3f}",
                delta,
                f"{metrics.get('incorrect_to_correct', 0.0):.3f}",
                f"{metrics.get('correct_to_incorrect', 0.0):.3f}",
            ]
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
