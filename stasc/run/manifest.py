"""run.json: the manifest of a run, the one file that says which iterations are complete.

An iteration is listed only after all of its files are written, so a reader (resume, the
app, a Hub push) can trust every path an entry names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stasc.errors import StascError
from stasc.run.storage import write_json

MANIFEST_NAME = "run.json"
FORMAT_VERSION = 1
TRANSITIONS = ("correct_to_correct", "correct_to_incorrect", "incorrect_to_correct", "incorrect_to_incorrect")


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
    check_manifest(manifest, path)
    return manifest


def check_manifest(manifest: Any, path: Path) -> None:
    """Reject a manifest whose structure was damaged, e.g. by hand editing."""
    problem = None
    if not isinstance(manifest, dict):
        problem = "it is not a JSON object"
    elif manifest.get("format_version") != FORMAT_VERSION:
        problem = f"format_version is {manifest.get('format_version')!r}, expected {FORMAT_VERSION}"
    elif not isinstance(manifest.get("config"), dict):
        problem = "'config' is missing"
    elif not isinstance(manifest.get("iterations"), list):
        problem = "'iterations' is missing or not a list"
    else:
        for position, entry in enumerate(manifest["iterations"]):
            metrics = entry.get("metrics") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or entry.get("iteration") != position:
                problem = f"iterations[{position}] should be iteration {position}"
            elif not isinstance(metrics, dict) or not all(
                isinstance(metrics.get(key), (int, float)) and 0 <= metrics[key] <= 1
                for key in ("initial_in_acc", "correction_in_acc")
            ):
                problem = f"iterations[{position}].metrics needs initial_in_acc and correction_in_acc in [0, 1]"
            if problem:
                break
    if problem:
        raise StascError(
            f"{path}: the run manifest is damaged ({problem}). Restore it, or start the run again "
            "in a new --output-dir."
        )


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
