"""The rewards as an `evaluate` metric module: loaded with evaluate.load from the shipped folder (offline),
its scores equal stasc.core.rewards on the same inputs, its card's examples hold, and an installed stasc
(a built wheel) ships it."""

from __future__ import annotations

import doctest
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import evaluate
import pytest

from stasc.core.rewards import binary_reward, score_output
from stasc.errors import StascError
from stasc.metric import MODULE_DIR, MODULE_NAME

ROOT = Path(__file__).resolve().parents[1]

# (prediction, references, answer_extraction, f1_threshold)
CASES = [
    ("The capital of France is Paris.", ["Paris"], "full", 0.5),
    ("Paris", ["paris", "City of Light"], "full", 0.5),
    ("The answer is 14.", ["4"], "full", 0.5),  # "4" is not a token of "14"
    ("It is London, not Paris", ["Paris"], "full", 0.5),
    ("I think it is Rome.\nFinal Answer: Milan", ["Rome"], "final_answer", 0.5),  # only the final line counts
    ("Rome, I believe.", ["Rome"], "final_answer", 0.5),  # no Final Answer line: 0
    ("**Final Answer:** Rome", ["Rome"], "final_answer", 0.5),
    ("Final Answer: the river Seine", ["Seine"], "final_answer", 0.5),
    ("Final Answer: the river Seine", ["Seine"], "final_answer", 0.3),  # token F1 0.5 passes a lower threshold
    ("New York City", ["New York"], "full", 0.8),  # token F1 0.8: exactly at the threshold
    ("New York City", ["New York"], "full", 0.9),
    ("Zürich", ["Zurich"], "full", 0.5),  # accents dropped
    ("Zu\u0308rich", ["Z\u00fcrich"], "full", 0.5),  # decomposed and composed accents
    ("Gabriel García Márquez wrote it", ["Gabriel Garcia Marquez"], "full", 0.5),
    ("«Les Misérables»", ["Les Miserables"], "full", 0.5),
    ("東京です", ["東京"], "full", 0.5),  # no spaces: not a separate token
    ("東京", ["東京"], "full", 0.5),
    ("¿Qué?", ["que"], "full", 0.5),
    ("", ["Paris"], "full", 0.5),
]


@pytest.fixture(scope="module")
def rewards() -> evaluate.EvaluationModule:
    return evaluate.load(str(MODULE_DIR), keep_in_memory=True)


def stasc_scores(prediction: str, references: list[str], extraction: str, threshold: float) -> dict[str, float]:
    """What a stasc run computes for one output."""
    scores: dict[str, float] = {
        reward: binary_reward(prediction, references, reward=reward, extraction=extraction, f1_threshold=threshold)
        for reward in ("in_acc", "em", "f1")
    }
    scores["token_f1"] = score_output(prediction, references, metric="f1", extraction=extraction)
    return scores


def test_it_loads_offline_from_the_shipped_folder(rewards: evaluate.EvaluationModule) -> None:
    assert rewards.name == MODULE_NAME
    assert set(rewards.features[0]) == {"predictions", "references"}
    assert "SQuAD-style" in rewards.info.description


@pytest.mark.parametrize(("prediction", "references", "extraction", "threshold"), CASES)
def test_each_score_equals_the_reward_of_a_run(rewards, prediction, references, extraction, threshold) -> None:
    scores = rewards.compute(
        predictions=[prediction], references=[references], answer_extraction=extraction, f1_threshold=threshold
    )
    assert scores == pytest.approx(stasc_scores(prediction, references, extraction, threshold))


def test_the_cases_cover_every_outcome() -> None:
    """The cases above are right and wrong under each reward, so a score stuck at 0 or 1 would be caught."""
    outcomes = [stasc_scores(*case) for case in CASES]
    for reward in ("in_acc", "em", "f1"):
        assert {outcome[reward] for outcome in outcomes} == {0, 1}, reward


@pytest.mark.parametrize("extraction", ["full", "final_answer"])
def test_a_batch_scores_the_mean_reward(rewards, extraction: str) -> None:
    predictions = [case[0] for case in CASES]
    references = [case[1] for case in CASES]
    scores = rewards.compute(
        predictions=predictions, references=references, answer_extraction=extraction, f1_threshold=0.4
    )
    each = [stasc_scores(prediction, golds, extraction, 0.4) for prediction, golds in zip(predictions, references)]
    assert scores == pytest.approx({name: sum(score[name] for score in each) / len(each) for name in each[0]})


def test_a_single_reference_may_be_a_plain_string(rewards) -> None:
    assert rewards.compute(predictions=["Zürich", "14"], references=["Zurich", "4"]) == pytest.approx(
        {"in_acc": 0.5, "em": 0.5, "f1": 0.5, "token_f1": 0.5}
    )


def test_bad_settings_and_inputs_are_named(rewards) -> None:
    with pytest.raises(StascError, match="Unknown extraction 'final'.*Did you mean 'final_answer'"):
        rewards.compute(predictions=["a"], references=[["a"]], answer_extraction="final")
    with pytest.raises(StascError, match="f1_threshold must be in \\(0, 1\\], got 1.5"):
        rewards.compute(predictions=["a"], references=[["a"]], f1_threshold=1.5)
    with pytest.raises(ValueError, match="references\\[1\\] is empty"):
        rewards.compute(predictions=["a", "b"], references=[["a"], []])


def test_the_card_and_the_docstring_examples_hold(rewards) -> None:
    """The >>> examples of README.md (the metric card) and of the module's docstring run as written."""
    card = (MODULE_DIR / "README.md").read_text(encoding="utf-8")
    blocks = [block for block in re.findall(r"```python\n(.*?)```", card, re.S) if ">>>" in block]
    examples = textwrap.dedent(rewards.info.inputs_description.split("Examples:\n", 1)[1])
    examples = re.sub(r">>> rewards = evaluate.load\(.*\n", "", examples)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for name, text in [("README.md", block) for block in blocks] + [("docstring", examples)]:
        test = doctest.DocTestParser().get_doctest(text, {"rewards": rewards}, name, name, 0)
        assert test.examples, name
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert len(blocks) == 1


@pytest.mark.slow
def test_an_installed_stasc_ships_the_module(tmp_path: Path) -> None:
    """Build stasc's wheel, install it into a bare folder, and load the module from there, outside this checkout."""
    source = tmp_path / "source"  # a copy: building in place would leave build/ and stasc.egg-info in the checkout
    shutil.copytree(ROOT / "stasc", source / "stasc", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("stasc-*.whl"))
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    script = (
        "import evaluate, stasc.metric\n"
        "print(stasc.metric.MODULE_DIR)\n"
        "rewards = evaluate.load(str(stasc.metric.MODULE_DIR), keep_in_memory=True)\n"
        "print(rewards.compute(predictions=['Final Answer: Paris'], references=[['Paris']],"
        " answer_extraction='final_answer'))\n"
    )
    # -I: neither this checkout (PYTHONPATH, the current folder) nor the editable install's path hooks.
    run = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n" + script],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    location, scores = run.stdout.strip().splitlines()[-2:]
    assert Path(location) == site / "stasc" / "metric" / MODULE_NAME
    assert scores == "{'in_acc': 1.0, 'em': 1.0, 'f1': 1.0, 'token_f1': 1.0}"
    assert {path.name for path in Path(location).iterdir()} >= {f"{MODULE_NAME}.py", "README.md", "app.py",
                                                                 "requirements.txt"}
