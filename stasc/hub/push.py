"""Publishing a run to the Hugging Face Hub, one commit per iteration, and nothing twice.

Layout (the same repo id is used for a model repo and a dataset repo):
  model repo ORG/NAME                         dataset repo ORG/NAME
    README.md      model card (all metrics)     README.md     dataset card, one config per iteration
    run.json       the manifest                 run.json      the manifest
    adapter_*      the latest adapter           iteration_01/{train,corrections,initial_answers,evaluation}.parquet
    iteration_01/  that iteration's adapter     ...
Iterations are subfolders on main rather than branches: every iteration stays reachable
in one snapshot, `PeftModel.from_pretrained(base, repo, subfolder="iteration_02")` loads
one, the root loads the latest. The data repo has one config per table (train,
corrections, initial_answers, evaluation) with one split per iteration, because
`datasets` needs one schema per config: `load_dataset(repo, "train", split="iteration_02")`.

Which iterations were pushed is recorded in RUN_DIR/hub_push.json after each successful
commit, so a push that failed part-way is finished by pushing again and a second push of
the same run makes no commit at all. Tokens come from huggingface_hub's own login or
HF_TOKEN; stasc never writes, logs or repeats them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stasc.config import check_repo_id
from stasc.errors import StascError
from stasc.run.layout import iteration_folder
from stasc.run.manifest import TRANSITIONS, inside_run, read_manifest, run_file
from stasc.run.storage import write_json

logger = logging.getLogger(__name__)

PUSH_STATE = "hub_push.json"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DATA_FILES = ("train_data", "corrections", "initial_answers", "evaluation")
SPLIT_NAMES = {"train_data": "train", "corrections": "corrections", "initial_answers": "initial_answers", "evaluation": "evaluation"}


@dataclass(frozen=True)
class PushReport:
    """What a push did: the iterations committed now and those already on the Hub."""

    repo_id: str
    pushed: list[int]
    already_there: list[int]


def base_model_id(manifest: dict[str, Any]) -> str:
    model = manifest["config"]["model"]
    return BUNDLED_HUB_ID if model == "bundled" else model


def _digest(paths: list[Path], entry: dict[str, Any]) -> str:
    """A hash of an iteration's files and its manifest entry: what a push must match."""
    sha = hashlib.sha256(json.dumps(entry, sort_keys=True).encode())
    for path in sorted(paths):
        sha.update(path.name.encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _row_count(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _metrics_table(iterations: list[dict[str, Any]]) -> str:
    header = "| iteration | kept examples | initial in-acc | correction in-acc | " + " | ".join(
        name.replace("_", " ") for name in TRANSITIONS
    ) + " |"
    lines = [header, "|" + "---|" * (4 + len(TRANSITIONS))]
    for entry in iterations:
        metrics = entry["metrics"]
        kept = entry.get("kept_examples")
        lines.append(
            f"| {entry['iteration']} | {'-' if kept is None else kept} | {metrics['initial_in_acc']:.3f} | "
            f"{metrics['correction_in_acc']:.3f} | "
            + " | ".join(f"{metrics.get(name, 0.0):.3f}" for name in TRANSITIONS)
            + " |"
        )
    return "\n".join(lines)


def model_card(manifest: dict[str, Any], repo_id: str, upto: int) -> str:
    """The adapter repo's README: Hub metadata, how the run was made, metrics so far."""
    from huggingface_hub import ModelCard, ModelCardData

    config = manifest["config"]
    iterations = manifest["iterations"][: upto + 1]
    data = ModelCardData(
        base_model=base_model_id(manifest),
        library_name="peft",
        datasets=[repo_id],
        license="apache-2.0",
        tags=["stasc", "self-correction", "lora", f"stasc-{manifest['variant']}"],
        pipeline_tag="text-generation",
    )
    settings = "\n".join(
        f"| `{name}` | `{json.dumps(config[name])}` |"
        for name in ("dataset", "variant", "iterations", "n_init", "n_corr", "reward", "answer_extraction",
                     "temperature", "top_p", "max_new_tokens", "lora_r", "lora_alpha", "learning_rate", "seed")
    )
    latest = max((entry["iteration"] for entry in iterations if entry.get("adapter")), default=None)
    content = f"""---
{data.to_yaml()}
---

# {repo_id.split('/')[-1]}

LoRA adapters for **{base_model_id(manifest)}** trained with STaSC (Self-Taught Self-Correction), variant
**{manifest['variant']}**, by [stasc](https://pypi.org/project/stasc/). The model answers a question, then
corrects its own answer when asked; each iteration is trained on the corrections that improved on its
previous answers.

Iterations are subfolders: `iteration_01/`, `iteration_02/`, ... The repository root holds the latest adapter
(iteration {latest if latest is not None else 'none yet'}). The generated training data and evaluations are in
the dataset repository [{repo_id}](https://huggingface.co/datasets/{repo_id}).

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained("{base_model_id(manifest)}")
model = PeftModel.from_pretrained(base, "{repo_id}", subfolder="iteration_01")
```

## Metrics on held-out questions

Iteration 0 is the base model. In-accuracy: a reference answer occurs in the output.

{_metrics_table(iterations)}

## Settings

| setting | value |
|---|---|
{settings}

The full configuration and per-iteration statistics are in `run.json`.
"""
    return str(ModelCard(content))


def dataset_card(manifest: dict[str, Any], repo_id: str, upto: int, run_dir: Path) -> str:
    """The data repo's README: one config per table, one split per iteration, and what the columns mean."""
    from huggingface_hub import DatasetCard, DatasetCardData

    configs = []
    for key in DATA_FILES:
        files = [
            {"split": iteration_folder(entry["iteration"]), "path": f"{iteration_folder(entry['iteration'])}/{Path(entry[key]).name}"}
            for entry in manifest["iterations"][: upto + 1]
            if entry.get(key) and _row_count(run_file(run_dir, entry[key])) > 0
        ]
        if files:
            configs.append({"config_name": SPLIT_NAMES[key], "data_files": files})
    data = DatasetCardData(license="apache-2.0", tags=["stasc", "self-correction"], configs=configs)
    content = f"""---
{data.to_yaml()}
---

# {repo_id.split('/')[-1]}: STaSC self-correction data

Generated by [stasc](https://pypi.org/project/stasc/) while training the adapters in
[{repo_id}](https://huggingface.co/{repo_id}) (base model {base_model_id(manifest)}, variant {manifest['variant']}).
One configuration per table and one split per iteration:
`load_dataset("{repo_id}", "train", split="iteration_01")`; `load_dataset("{repo_id}", "evaluation")` gives
every iteration's evaluation at once (iteration_00 is the base model).

## Configurations

- `initial_answers`: N_init sampled answers per training question, with `initial_reward` (0/1).
- `corrections`: N_corr corrections per initial answer (`initial_index` says which), with `correction_reward`
  and `kept` (whether the {manifest['config']['filter']} filter kept the pair).
- `train`: the kept pairs, with `messages`, the whole conversation the adapter was trained on (loss only on the
  last, correction turn).
- `evaluation`: one initial answer and one correction per held-out question, with `initial_in_acc`,
  `correction_in_acc` and the reward columns. Iteration 0 (the base model) appears only here.

Columns shared by all: `question_id`, `question`, `answers` (reference answers). Rewards use
`{manifest['config']['reward']}` on the {manifest['config']['answer_extraction']} output.
"""
    return str(DatasetCard(content))


def _explain(error: Exception, repo_id: str, run_dir: Path) -> StascError:
    """A message for a failed push that names the cause and the fix, and never the token."""
    from huggingface_hub.errors import HfHubHTTPError

    retry = f"The local run in {run_dir} is unchanged; run 'python -m stasc push {run_dir} --repo {repo_id}' to finish."
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status == 401:
            return StascError(f"The Hub refused the token (HTTP 401). Log in with 'hf auth login' or set HF_TOKEN. {retry}")
        if status == 403:
            return StascError(
                f"The token may not write to {repo_id} (HTTP 403): the repository belongs to someone else or the "
                f"token is read-only. Push to a repository you own. {retry}"
            )
        return StascError(f"The Hub answered HTTP {status} while pushing to {repo_id}. {retry}")
    return StascError(f"Could not reach the Hub while pushing to {repo_id} ({type(error).__name__}). {retry}")


def push_run(
    run_dir: Path, repo_id: str, *, private: bool = False, api: Any = None,
    progress: Callable[[str], None] | None = None,
) -> PushReport:
    """Push every finished iteration of run_dir that is not on the Hub yet."""
    from huggingface_hub import CommitOperationAdd, HfApi

    run_dir = Path(run_dir)
    check_repo_id(repo_id)
    manifest = read_manifest(run_dir)
    api = api or HfApi()
    state_path = run_dir / PUSH_STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("repo_id") not in (None, repo_id):
        state = {}
    state.setdefault("repo_id", repo_id)
    done: dict[str, dict[str, str]] = state.setdefault("pushed", {"model": {}, "dataset": {}})
    pushed, already = [], []
    repos_ready = False
    for entry in manifest["iterations"]:
        iteration = entry["iteration"]
        folder = iteration_folder(iteration)
        adapter_files = (
            sorted(inside_run(run_dir, path) for path in run_file(run_dir, entry["adapter"]).iterdir())
            if entry.get("adapter") else []
        )
        data_files = [run_file(run_dir, entry[key]) for key in DATA_FILES if entry.get(key)]
        digests = {"model": _digest(adapter_files, entry), "dataset": _digest(data_files, entry)}
        if all(done[kind].get(str(iteration)) == digests[kind] for kind in digests):
            already.append(iteration)
            continue
        partial = dict(manifest, iterations=manifest["iterations"][: iteration + 1])
        manifest_bytes = (json.dumps(partial, indent=2, ensure_ascii=False) + "\n").encode()
        summary = (
            f"initial in-acc {entry['metrics']['initial_in_acc']:.3f}, "
            f"correction in-acc {entry['metrics']['correction_in_acc']:.3f}"
        )
        commits: dict[str, tuple[Callable[[], list[Any]], str]] = {
            "model": (
                lambda: [CommitOperationAdd(f"{folder}/{path.name}", str(path)) for path in adapter_files]
                + [CommitOperationAdd(path.name, str(path)) for path in adapter_files]
                + [CommitOperationAdd("README.md", model_card(manifest, repo_id, iteration).encode())],
                f"STaSC iteration {iteration}: {summary}",
            ),
            "dataset": (
                lambda: [CommitOperationAdd(f"{folder}/{path.name}", str(path)) for path in data_files]
                + [CommitOperationAdd("README.md", dataset_card(manifest, repo_id, iteration, run_dir).encode())],
                f"STaSC iteration {iteration} data: {summary}",
            ),
        }
        try:
            if not repos_ready:
                for repo_type in commits:
                    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
                repos_ready = True
            for kind, (operations, message) in commits.items():
                if done[kind].get(str(iteration)) == digests[kind]:
                    continue
                api.create_commit(
                    repo_id, [*operations(), CommitOperationAdd("run.json", manifest_bytes)],
                    repo_type=kind, commit_message=message,
                )
                done[kind][str(iteration)] = digests[kind]
                write_json(state_path, state)
        except Exception as error:  # any failure of the Hub client: explain it, keep the run intact
            if isinstance(error, StascError):
                raise
            raise _explain(error, repo_id, run_dir) from None
        pushed.append(iteration)
        if progress:
            progress(f"Pushed iteration {iteration} to {repo_id}")
    return PushReport(repo_id=repo_id, pushed=pushed, already_there=already)
