"""Tests for stasc.data: every supported source, the train/test split rules and every user-facing error."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stasc.core.rewards import normalize_answer
from stasc.data import (
    normalize_question,
    BUILTIN_DATASET,
    QAExample,
    RowRules,
    builtin_dataset_path,
    load_qa_file,
    load_qa_splits,
)
from stasc.errors import StascError

PUBLIC_QA_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not PUBLIC_QA_DATA.is_dir(), reason=f"shared data folder {PUBLIC_QA_DATA} is absent on this machine"
)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Write one JSON value per line."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def numbered_rows(count: int) -> list[dict[str, Any]]:
    """Rows with distinct questions, for split tests."""
    return [{"question": f"Question number {i}?", "answers": [f"answer {i}"]} for i in range(count)]


def normalized(examples: list[QAExample]) -> set[str]:
    return {normalize_question(example.question) for example in examples}


@pytest.fixture
def offline_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep `datasets` off the network and its cache inside tmp_path.

    The libraries read HF_HUB_OFFLINE when first imported, and other test modules may import them
    earlier (transformers imports huggingface_hub), so the flags they already read are set as well.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.chdir(tmp_path)


# The built-in data set


def test_builtin_set_is_large_stratified_and_has_no_question_in_both_splits() -> None:
    rows = [json.loads(line) for line in builtin_dataset_path().read_text(encoding="utf-8").splitlines()]
    assert all(set(row) == {"id", "question", "answers", "split"} for row in rows)
    assert len({row["id"] for row in rows}) == len(rows) >= 1000
    test = [row for row in rows if row["split"] == "test"]
    train = [row for row in rows if row["split"] == "train"]
    assert len(test) >= 300 and len(train) + len(test) == len(rows)
    assert 1.8 <= len(train) / len(test) <= 2.2, "split 2:1"
    assert not {normalize_question(row["question"]) for row in train} & {normalize_question(row["question"]) for row in test}
    assert len({normalize_question(row["question"]) for row in rows}) == len(rows), "no question twice"
    for row in rows:
        assert row["answers"] and all(isinstance(answer, str) and answer.strip() for answer in row["answers"])
        assert normalize_question(row["answers"][0]) not in {"1", "2", "3", "one", "two", "three"}, row


def test_questions_match_across_case_punctuation_and_spacing() -> None:
    assert normalize_question("What is  the capital of France?") == normalize_question("what is the capital of france")
    assert normalize_question("Who wrote “Hamlet”?") == normalize_question('who wrote "hamlet"')
    assert normalize_question("Capital of France?") != normalize_question("Capital of Spain?")


def test_builtin_split_follows_the_split_column() -> None:
    path = builtin_dataset_path()
    assert path.name == "easy_qa.jsonl" and path.is_file()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train, test = load_qa_splits(BUILTIN_DATASET, question_column="ignored", answers_column="ignored")
    assert len(train) > 0 and len(test) > 0
    assert [example.id for example in test] == [row["id"] for row in rows if row["split"] == "test"]
    test_questions = normalized(test)
    assert [example.id for example in train] == [
        row["id"] for row in rows
        if row["split"] == "train" and normalize_question(row["question"]) not in test_questions
    ]
    assert not normalized(train) & test_questions
    assert all(example.answers and example.question for example in train + test)
    assert load_qa_splits() == (train, test)


def test_builtin_train_with_own_test_dataset(tmp_path: Path) -> None:
    builtin_train, _ = load_qa_splits()
    test_path = write_jsonl(tmp_path / "te.jsonl", [{"q": builtin_train[0].question.upper(), "a": "x"}])
    train, test = load_qa_splits(test_dataset=str(test_path), question_column="q", answers_column="a")
    assert test == [QAExample("te-1", builtin_train[0].question.upper(), ("x",))]
    assert builtin_train[0] not in train and set(builtin_train[1:]) <= set(train)


# Formats and column mapping

EXPECTED = [
    QAExample(id="capitals-1", question="What is the capital of France?", answers=("Paris", "paris")),
    QAExample(id="capitals-2", question="What is the capital of Italy?", answers=("Rome",)),
    QAExample(id="capitals-3", question="What is two plus two?", answers=("4", "four")),
]


def write_capitals(path: Path) -> None:
    """Write EXPECTED in the format given by the suffix, with columns 'query' and 'gold'."""
    questions = ["  What is the capital of France?", "What is the capital of Italy?  ", "What is two plus two?"]
    if path.suffix in (".csv", ".tsv"):
        separator = "\t" if path.suffix == ".tsv" else ","
        cells = ["\"['Paris', ' paris ', 'Paris']\"", "Rome", '"[""4"", ""four""]"']
        lines = [f"query{separator}gold"] + [f"{q}{separator}{g}" for q, g in zip(questions, cells)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    golds: list[Any] = [["Paris", " paris ", "Paris", ""], "Rome", [4, "four", "4"]]
    rows = [{"query": q, "gold": g, "other": 1} for q, g in zip(questions, golds)]
    if path.suffix == ".parquet":
        golds_as_lists = [[str(a) for a in g] if isinstance(g, list) else [g] for g in golds]
        pq.write_table(pa.table({"query": questions, "gold": golds_as_lists, "other": [1, 2, 3]}), path)
    elif path.name.endswith(".array.json"):
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    else:
        write_jsonl(path, rows)


@pytest.mark.parametrize("name", ["capitals.jsonl", "capitals.json", "capitals.array.json", "capitals.csv",
                                  "capitals.tsv", "capitals.parquet"])
def test_every_format_loads_with_column_mapping(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_capitals(path)
    examples = load_qa_file(path, question_column="query", answers_column="gold")
    stem = path.stem
    assert examples == [QAExample(f"{stem}-{i}", e.question, e.answers) for i, e in enumerate(EXPECTED, start=1)]


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "UPPER.JSONL", [{"question": "q?", "answers": "a"}])
    assert load_qa_file(path) == [QAExample("UPPER-1", "q?", ("a",))]


def test_ids_come_from_id_or_question_id_columns(tmp_path: Path) -> None:
    with_id = write_jsonl(tmp_path / "a.jsonl", [{"id": 17, "question": "q1", "answers": ["x"]},
                                                 {"id": None, "question": "q2", "answers": ["y"]}])
    with_qid = write_jsonl(tmp_path / "b.jsonl", [{"question_id": "nq_5", "question": "q", "answers": ["x"]}])
    assert [e.id for e in load_qa_file(with_id)] == ["17", "a-2"]
    assert [e.id for e in load_qa_file(with_qid)] == ["nq_5"]
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [101, 102], "question": ["q1", "q2"], "answers": [["x"], ["y"]]}), parquet)
    assert [e.id for e in load_qa_file(parquet)] == ["101", "102"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Paris", ("Paris",)),
        ("  [citation needed] ", ("[citation needed]",)),
        ("['a', \"b's\", 'a']", ("a", "b's")),
        ('["x", " y "]', ("x", "y")),
        ([" 1 ", 1, 2.5, None, "", "1"], ("1", "2.5")),
        (1984, ("1984",)),
    ],
)
def test_answer_forms(tmp_path: Path, raw: Any, expected: tuple[str, ...]) -> None:
    path = write_jsonl(tmp_path / "forms.jsonl", [{"question": "q?", "answers": raw}])
    assert load_qa_file(path)[0].answers == expected


def test_dotted_columns_reach_into_nested_objects(tmp_path: Path) -> None:
    rows = [
        {"q": {"text": " Who wrote Hamlet? "}, "answer": {"aliases": ["Shakespeare", "The Bard"], "value": "x"}},
        {"q": {"text": "Largest planet?"}, "answer": {"aliases": ["Jupiter"], "value": "y"}},
    ]
    jsonl = write_jsonl(tmp_path / "nested.jsonl", rows)
    parquet = tmp_path / "nested.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    expected = [("Who wrote Hamlet?", ("Shakespeare", "The Bard")), ("Largest planet?", ("Jupiter",))]
    for path in (jsonl, parquet):
        examples = load_qa_file(path, question_column="q.text", answers_column="answer.aliases")
        assert [(e.question, e.answers) for e in examples] == expected
    assert [e.answers for e in load_qa_file(jsonl, question_column="q.text", answers_column="answer.value")] == [
        ("x",), ("y",)]


def test_literal_dotted_column_name_wins(tmp_path: Path) -> None:
    path = tmp_path / "dots.csv"
    path.write_text("question,answer.text\nq?,a\n", encoding="utf-8")
    assert load_qa_file(path, answers_column="answer.text")[0].answers == ("a",)


def test_object_valued_answers_column_points_inside(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "obj.jsonl", [{"question": "q?", "answer": {"aliases": ["a"], "value": "a"}}])
    with pytest.raises(StascError) as error:
        load_qa_file(path, answers_column="answer")
    assert str(error.value) == (
        f"{path}:1: column 'answer' holds an object with keys aliases, value, not answers. "
        "Point --answers-column inside it with a dotted name, e.g. answer.aliases."
    )


def test_missing_dotted_column_lists_nested_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "obj.jsonl", [{"question": "q?", "answer": {"aliases": ["a"], "value": "a"}}])
    with pytest.raises(StascError) as error:
        load_qa_file(path, answers_column="answer.alias")
    assert str(error.value) == (
        f"{path} has no column 'answer.alias' (available columns: answer, answer.aliases, answer.value, question). "
        "Set --answers-column to one of them. Did you mean 'answer.aliases'?"
    )


# Splits


def test_held_out_split_is_deterministic_by_seed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pool.jsonl", numbered_rows(50))
    train, test = load_qa_splits(str(path), seed=3)
    assert (len(train), len(test)) == (40, 10)
    assert load_qa_splits(str(path), seed=3) == (train, test)
    other_train, other_test = load_qa_splits(str(path), seed=4)
    assert {e.id for e in other_test} != {e.id for e in test}
    assert not normalized(train) & normalized(test)
    assert {e.id for e in train + test} == {f"pool-{i}" for i in range(1, 51)}
    half_train, half_test = load_qa_splits(str(path), test_fraction=0.5)
    assert (len(half_train), len(half_test)) == (25, 25)


def test_held_out_split_keeps_at_least_one_question_per_side(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pair.jsonl", numbered_rows(2))
    for fraction in (0.01, 0.99):
        train, test = load_qa_splits(str(path), test_fraction=fraction)
        assert (len(train), len(test)) == (1, 1)


def test_test_dataset_file_is_used_with_same_columns(tmp_path: Path) -> None:
    train_path = write_jsonl(tmp_path / "tr.jsonl", [{"Q": f"t{i}", "A": ["x"]} for i in range(3)])
    test_path = write_jsonl(tmp_path / "te.jsonl", [{"Q": "e0", "A": "y"}])
    train, test = load_qa_splits(str(train_path), test_dataset=str(test_path), question_column="Q", answers_column="A")
    assert [e.question for e in train] == ["t0", "t1", "t2"]
    assert test == [QAExample("te-1", "e0", ("y",))]


def test_overlap_with_test_set_is_removed_from_train(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train_path = write_jsonl(tmp_path / "tr.jsonl", [
        {"question": "Who  wrote Hamlet?", "answers": ["Shakespeare"]},
        {"question": "largest planet?", "answers": ["Jupiter"]},
        {"question": "Unique question?", "answers": ["yes"]},
    ])
    test_path = write_jsonl(tmp_path / "te.jsonl", [
        {"question": "who wrote hamlet?", "answers": ["Shakespeare"]},
        {"question": " LARGEST planet? ", "answers": ["Jupiter"]},
    ])
    with caplog.at_level(logging.WARNING, logger="stasc.data"):
        train, test = load_qa_splits(str(train_path), test_dataset=str(test_path))
    assert [e.question for e in train] == ["Unique question?"]
    assert len(test) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Dropped 2 training questions" in message for message in warnings)


def test_overlap_is_checked_against_the_truncated_test_set(tmp_path: Path) -> None:
    train_path = write_jsonl(tmp_path / "tr.jsonl", numbered_rows(4))
    test_path = write_jsonl(tmp_path / "te.jsonl", numbered_rows(4)[2:])
    train, test = load_qa_splits(str(train_path), test_dataset=str(test_path), max_test=1, max_train=3)
    assert [e.question for e in test] == ["Question number 2?"]
    assert [e.question for e in train] == ["Question number 0?", "Question number 1?", "Question number 3?"]


def test_full_overlap_leaves_no_training_questions(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "same.jsonl", numbered_rows(3))
    with pytest.raises(StascError) as error:
        load_qa_splits(str(path), test_dataset=str(path))
    assert str(error.value) == (
        "No training questions left: all 3 training questions also appear in the test set. "
        "Pass a different --dataset or --test-dataset."
    )


def test_max_train_and_max_test_keep_the_first_questions(tmp_path: Path) -> None:
    train_path = write_jsonl(tmp_path / "tr.jsonl", numbered_rows(10))
    test_path = write_jsonl(tmp_path / "te.jsonl", numbered_rows(20)[10:])
    train, test = load_qa_splits(str(train_path), test_dataset=str(test_path), max_train=3, max_test=2)
    assert [e.id for e in train] == ["tr-1", "tr-2", "tr-3"]
    assert [e.id for e in test] == ["te-1", "te-2"]
    full_train, full_test = load_qa_splits(str(train_path), seed=1)
    small_train, small_test = load_qa_splits(str(train_path), seed=1, max_train=4, max_test=1)
    assert (small_train, small_test) == (full_train[:4], full_test[:1])
    assert load_qa_splits(str(train_path), test_dataset=str(test_path), max_train=100)[0] == load_qa_file(train_path)


@pytest.mark.parametrize(("keyword", "flag"), [("max_train", "--max-train-questions"),
                                               ("max_test", "--max-test-questions")])
def test_limits_must_be_positive(keyword: str, flag: str) -> None:
    with pytest.raises(StascError) as error:
        load_qa_splits("does-not-matter.jsonl", **{keyword: 0})
    assert str(error.value) == f"{flag} must be at least 1 (got 0). Leave it unset to use every question."


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_test_fraction_must_be_between_zero_and_one(tmp_path: Path, fraction: float) -> None:
    path = write_jsonl(tmp_path / "pool.jsonl", numbered_rows(5))
    with pytest.raises(StascError, match=re.escape(f"--test-fraction must be between 0 and 1 (got {fraction})")):
        load_qa_splits(str(path), test_fraction=fraction)


def test_single_question_cannot_be_split(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "one.jsonl", numbered_rows(1))
    with pytest.raises(StascError) as error:
        load_qa_splits(str(path))
    assert str(error.value) == (
        f"{path} has only 1 question, too few to hold out a test set. "
        "Add more questions or pass a separate --test-dataset."
    )


# File errors


@pytest.mark.parametrize("name", ["missing.jsonl", "sub/dir/missing.csv", "./missing"])
def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StascError) as error:
        load_qa_splits(name)
    assert str(error.value) == (
        f"Dataset file not found: {Path(name)}. Pass an existing .jsonl, .json, .csv, .tsv or .parquet file "
        "to --dataset (or --test-dataset), or a Hugging Face dataset name."
    )


def test_missing_test_dataset_file(tmp_path: Path) -> None:
    train_path = write_jsonl(tmp_path / "tr.jsonl", numbered_rows(2))
    with pytest.raises(StascError, match=re.escape(f"Dataset file not found: {tmp_path / 'te.jsonl'}.")):
        load_qa_splits(str(train_path), test_dataset=str(tmp_path / "te.jsonl"))


def test_malformed_json_line_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answers": ["a"]}\n\n{"question": "q2", "answers": ["a",]}\n', encoding="utf-8")
    with pytest.raises(StascError) as error:
        load_qa_file(path)
    assert str(error.value) == f"{path}:3:36: invalid JSON (Expecting value). Fix or remove that line."


def test_malformed_json_array_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"question": "q", "answers": ["a"]},\n  {"question" "q2"}\n]\n', encoding="utf-8")
    with pytest.raises(StascError) as error:
        load_qa_file(path)
    assert str(error.value) == f"{path}:3:15: invalid JSON (Expecting ':' delimiter). Fix the file."


def test_unicode_line_separators_inside_strings_are_not_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "seps.jsonl"
    path.write_text(json.dumps({"question": "a\x85b\u2028c?", "answers": ["x"]}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    assert load_qa_file(path)[0].question == "a\x85b\u2028c?"


@pytest.mark.parametrize(("content", "kind"), [("[1, 2]", "list"), ('"text"', "str"), ("3", "int")])
def test_json_line_must_be_an_object(tmp_path: Path, content: str, kind: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "q", "answers": ["a"]}\n' + content + "\n", encoding="utf-8")
    with pytest.raises(StascError) as error:
        load_qa_file(path)
    assert str(error.value) == (
        f'{path}:2: expected a JSON object like {{"question": "...", "answers": ["..."]}}, got {kind}. '
        "Put one object per line."
    )


def test_json_array_items_must_be_objects(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text('[{"question": "q", "answers": ["a"]}, ["q2", "a2"]]', encoding="utf-8")
    with pytest.raises(StascError, match=re.escape(f"{path}, item 2: expected a JSON object")):
        load_qa_file(path)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("q\ta\n", encoding="utf-8")
    with pytest.raises(StascError) as error:
        load_qa_splits(str(path))
    assert str(error.value) == (
        f"{path} has an unsupported file type '.txt'. Use a .jsonl, .json, .csv, .tsv or .parquet file."
    )


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"question": "caf\xe9", "answers": ["a"]}\n'.encode("latin-1"))
    with pytest.raises(StascError, match=re.escape(f"{path} is not UTF-8 text (") + ".*Save it as UTF-8."):
        load_qa_file(path)


@pytest.mark.parametrize("name", ["nq.jsonl", "nq.json", "nq.csv", "nq.tsv", "nq.parquet"])
def test_missing_column_in_every_format(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    rows = [{"question": "q?", "answer": "a"}]
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif name.endswith((".csv", ".tsv")):
        separator = "\t" if name.endswith(".tsv") else ","
        path.write_text(f"question{separator}answer\nq?{separator}a\n", encoding="utf-8")
    else:
        write_jsonl(path, rows)
    with pytest.raises(StascError) as error:
        load_qa_file(path)
    assert str(error.value) == (
        f"{path} has no column 'answers' (available columns: answer, question). "
        "Set --answers-column to one of them. Did you mean 'answer'?"
    )
    with pytest.raises(StascError) as error:
        load_qa_file(path, question_column="query", answers_column="answer")
    assert str(error.value).startswith(f"{path} has no column 'query' (available columns: answer, question). "
                                       "Set --question-column to one of them.")


def test_empty_answers_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    good = json.dumps({"question": "q", "answers": ["a"]})
    path.write_text(good + "\n\n" + good + "\n" + json.dumps({"question": "q3", "answers": ["", "  "]}) + "\n",
                    encoding="utf-8")
    with pytest.raises(StascError) as error:
        load_qa_file(path)
    assert str(error.value) == (
        f"{path}:4: row has no answers in column 'answers'. Every question needs at least one reference answer."
    )


@pytest.mark.parametrize("answers", ['""', "[]", "\"['', ' ']\""])
def test_empty_answers_name_the_csv_row(tmp_path: Path, answers: str) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text(f"question,answers\nq1,a\nq2,{answers}\n", encoding="utf-8")
    with pytest.raises(StascError) as error:
        load_qa_file(path)
    assert str(error.value) == (
        f"{path}, row 2: row has no answers in column 'answers'. Every question needs at least one reference answer."
    )


def test_missing_answers_key_on_one_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "gaps.jsonl", [{"question": "q", "answers": ["a"]}, {"question": "q2"}])
    with pytest.raises(StascError, match=re.escape(f"{path}:2: row has no answers in column 'answers'.")):
        load_qa_file(path)


@pytest.mark.parametrize(
    ("content", "suffix"),
    [
        ("question,answers\nq1,Paris\nq2,NaN\n", ".csv"),  # how pandas writes a missing value
        ('question,answers\nq1,Paris\nq2,"[nan]"\n', ".csv"),  # a list column with a missing value
        ('{"question": "q1", "answers": ["Paris"]}\n{"question": "q2", "answers": NaN}\n', ".jsonl"),
        ('{"question": "q1", "answers": ["Paris"]}\n{"question": "q2", "answers": [NaN, null]}\n', ".jsonl"),
    ],
)
def test_nan_is_a_missing_answer_not_the_answer_nan(tmp_path: Path, content: str, suffix: str) -> None:
    path = tmp_path / f"nan{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(StascError, match="row has no answers in column 'answers'"):
        load_qa_file(path)


def test_nan_beside_real_answers_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "nan.csv"
    path.write_text('question,answers\nq1,"[\'Paris\', nan]"\n', encoding="utf-8")
    assert load_qa_file(path)[0].answers == ("Paris",)
    table = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"question": ["q1", "q2"], "answers": [1.5, float("nan")]}), table)
    with pytest.raises(StascError, match=re.escape(f"{table}, row 2: row has no answers")):
        load_qa_file(table)


def test_answers_that_normalise_to_nothing_are_refused_with_the_line_and_column(tmp_path: Path, caplog) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q1", "answers": ["Paris", "--", "the"]},
                                               {"question": "q2", "answers": ["\u200b", "A."]}])
    assert load_qa_file(path)[1].answers == ("\u200b", "A."), "without the run's normalisation nothing is checked"
    with pytest.raises(StascError) as refused:
        load_qa_file(path, rules=RowRules(normalize=normalize_answer))
    assert str(refused.value).startswith(
        f"{path}:2: column 'answers': the answers ['\\u200b', 'A.'] are empty once normalised"
    )
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q1", "answers": ["Paris", "--", "the"]}])
    with caplog.at_level(logging.WARNING):
        assert load_qa_file(path, rules=RowRules(normalize=normalize_answer))[0].answers == ("Paris",)
    assert f"Dropped 2 answers that are empty once normalised" in caplog.text and f"{path}:1 '--'" in caplog.text


def test_a_question_over_the_length_limit_names_its_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q" * 2000, "answers": ["a"]},
                                               {"question": "q" * 2001, "answers": ["a"]}])
    assert len(load_qa_file(path)) == 2, "no limit unless the run sets one"
    with pytest.raises(StascError) as refused:
        load_qa_file(path, rules=RowRules(max_question_chars=2000))
    assert str(refused.value) == (
        f"{path}:2: the question in column 'question' has 2,001 characters, more than --max-question-chars (2,000). "
        "Shorten it or remove the row, or raise --max-question-chars."
    )
    train = write_jsonl(tmp_path / "train.jsonl", [{"question": "q" * 10, "answers": ["a"]}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"question": "q" * 11, "answers": ["a"]}])
    with pytest.raises(StascError, match=re.escape(f"{test}:1: the question")):
        load_qa_splits(str(train), test_dataset=str(test), rules=RowRules(max_question_chars=10))


def test_a_json_array_in_a_jsonl_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(numbered_rows(2), indent=2), encoding="utf-8")
    with pytest.raises(StascError) as refused:
        load_qa_file(path)
    assert str(refused.value) == (
        f"{path} holds one JSON array, not JSON lines (one object per line). Rename it to qa.json, or write one "
        "object per line."
    )
    renamed = path.rename(tmp_path / "qa.json")
    assert len(load_qa_file(renamed)) == 2


@pytest.mark.parametrize(
    ("name", "content", "found"),
    [("qa.csv", "question;answers\nq;a\n", "';'"), ("qa.csv", "question\tanswers\nq\ta\n", "'\\t'"),
     ("qa.tsv", "question,answers\nq,a\n", "','")],
)
def test_a_file_with_another_separator_is_named(tmp_path: Path, name: str, content: str, found: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(StascError, match=re.escape(f"its fields are separated by {found}")):
        load_qa_file(path)


@pytest.mark.parametrize("question", ["", "   ", None])
def test_empty_question_names_the_line(tmp_path: Path, question: str | None) -> None:
    path = write_jsonl(tmp_path / "gaps.jsonl", [{"question": "q", "answers": ["a"]},
                                                 {"question": question, "answers": ["a"]}])
    with pytest.raises(StascError) as error:
        load_qa_file(path)
    assert str(error.value) == f"{path}:2: row has no question in column 'question'. Fill it in or remove the row."


def test_question_must_be_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": ["q"], "answers": ["a"]}])
    with pytest.raises(StascError, match=re.escape(f"{path}:1: column 'question' holds a list, not question text.")):
        load_qa_file(path)


@pytest.mark.parametrize(("name", "content"), [("empty.jsonl", "\n\n"), ("empty.csv", "question,answers\n"),
                                               ("blank.csv", ""), ("empty.json", "[]")])
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(StascError) as error:
        load_qa_file(path)
    assert str(error.value) == (
        f"{path} has no questions. Add rows with a question and its answers, or pass another file."
    )


def test_corrupt_parquet(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist(numbered_rows(20)), good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    for path in (truncated, garbage):
        with pytest.raises(StascError, match=re.escape(f"{path} is not a readable Parquet file (")):
            load_qa_file(path)
    assert len(load_qa_file(good)) == 20


# Hugging Face Hub (offline: a made-up name, and local data folders that `datasets` reads itself)


@pytest.mark.usefixtures("offline_datasets")
@pytest.mark.parametrize("name", ["stasc-made-up-org/no-such-dataset-4711", "no_such_dataset_4711"])
def test_hub_name_that_cannot_be_loaded(name: str) -> None:
    with pytest.raises(StascError) as error:
        load_qa_splits(name)
    message = str(error.value)
    assert message.startswith(f"Could not load dataset '{name}' from the Hugging Face Hub (")
    assert message.endswith(
        "If you meant a local file, it must exist: pass the path of an existing .jsonl, .json, .csv, .tsv or "
        ".parquet file to --dataset (or --test-dataset). Otherwise check the dataset name and your network connection."
    )


def write_data_folder(folder: Path) -> None:
    """A local data folder with train/test files and trivia_qa-like nested answers."""
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [
        {"question_id": f"t{i}", "question": f"Train question {i}?", "answer": {"aliases": [f"a{i}", f"b{i}"]}}
        for i in range(4)
    ])
    write_jsonl(folder / "test.jsonl", [
        {"question_id": "e0", "question": "Train question 0?", "answer": {"aliases": ["a0"]}},
        {"question_id": "e1", "question": "Test question 1?", "answer": {"aliases": ["z"]}},
    ])


@pytest.mark.usefixtures("offline_datasets")
def test_data_folder_goes_through_datasets_with_dotted_columns(tmp_path: Path) -> None:
    write_data_folder(tmp_path / "qa_dir")
    train, test = load_qa_splits("qa_dir", test_split="test", answers_column="answer.aliases")
    assert [e.id for e in test] == ["e0", "e1"]
    assert [e.id for e in train] == ["t1", "t2", "t3"]
    assert train[0] == QAExample("t1", "Train question 1?", ("a1", "b1"))
    test_file = write_jsonl(tmp_path / "mine.jsonl", [{"question": "Mine?", "answer": {"aliases": ["m"]}}])
    train, test = load_qa_splits("qa_dir", test_dataset=str(test_file), answers_column="answer.aliases")
    assert (len(train), test) == (4, [QAExample("mine-1", "Mine?", ("m",))])


@pytest.mark.usefixtures("offline_datasets")
def test_data_folder_missing_split_lists_splits(tmp_path: Path) -> None:
    write_data_folder(tmp_path / "qa_dir")
    with pytest.raises(StascError) as error:
        load_qa_splits("qa_dir", answers_column="answer.aliases")
    assert str(error.value) == (
        "Dataset 'qa_dir' has no split 'validation' (available splits: train, test). Set --test-split to one of them."
    )
    with pytest.raises(StascError, match=re.escape("has no split 'dev' (available splits: train, test). "
                                                   "Set --train-split to one of them.")):
        load_qa_splits("qa_dir", train_split="dev", answers_column="answer.aliases")


@pytest.mark.usefixtures("offline_datasets")
def test_data_folder_missing_column(tmp_path: Path) -> None:
    write_data_folder(tmp_path / "qa_dir")
    with pytest.raises(StascError) as error:
        load_qa_splits("qa_dir", test_split="test")
    assert str(error.value) == (
        "Hugging Face dataset 'qa_dir' split 'train' has no column 'answers' "
        "(available columns: answer, answer.aliases, question, question_id). "
        "Set --answers-column to one of them. Did you mean 'answer'?"
    )


# The shared data files


@needs_shared_data
@pytest.mark.parametrize("name", ["s_nq", "s_trivia"])
def test_shared_adaptive_rag_subsets(name: str) -> None:
    folder = PUBLIC_QA_DATA / "stasc_adaptive_rag"
    train, test = load_qa_splits(str(folder / f"{name}.train.jsonl"), test_dataset=str(folder / f"{name}.test.jsonl"))
    assert (len(train), len(test)) == (500, 500)
    assert train[0].id.startswith(f"single_{name[2:]}_dev_") and len({e.id for e in train + test}) == 1000
    assert not normalized(train) & normalized(test)


@needs_shared_data
def test_shared_nq_open_dev_needs_answer_column() -> None:
    path = PUBLIC_QA_DATA / "nq_open" / "NQ-open.dev.jsonl"
    train, test = load_qa_splits(str(path), answers_column="answer")
    assert (len(train), len(test)) == (2888, 722)
    assert test[0].answers and not normalized(train) & normalized(test)
    with pytest.raises(StascError, match="Set --answers-column to one of them. Did you mean 'answer'"):
        load_qa_splits(str(path))


@needs_shared_data
def test_shared_triviaqa_test_file() -> None:
    examples = load_qa_file(PUBLIC_QA_DATA / "triviaqa" / "triviaqa-unfiltered.dev.dpr-test.jsonl")
    assert len(examples) == 11313
    assert examples[0] == QAExample("triviaqa-unfiltered.dev.dpr-test-1", "Who was the man behind The Chipmunks?",
                                    ("David Seville",))


def test_validation_is_held_out_by_question_id_whatever_the_order_and_limits() -> None:
    from stasc.data import QAExample, split_validation

    questions = [QAExample(id=f"q{i}", question=f"Question {i}?", answers=("a",)) for i in range(40)]
    train, validation = split_validation(questions, 0.25)
    assert len(validation) == 10 and len(train) == 30
    assert {q.id for q in train}.isdisjoint(q.id for q in validation)
    shuffled_train, shuffled_validation = split_validation(list(reversed(questions)), 0.25, max_train=5, max_validation=3)
    assert {q.id for q in shuffled_validation} <= {q.id for q in validation}, "the same questions are held out"
    assert len(shuffled_train) == 5 and len(shuffled_validation) == 3
    with pytest.raises(StascError, match="too few"):
        split_validation(questions[:1], 0.25)


# Math data: GSM8K style (question, answer ending in '#### n') and MATH-500 style (problem, answer)

GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many does he have?",
     "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A bike costs $1,200 and a helmet $50. What do both cost?",
     "answer": "Both cost 1200 + 50 = <<1200+50=1250>>1250 dollars.\n#### 1,250"},
    {"question": "Half of 9?", "answer": "9 / 2 = 4.5\n#### 4.5"},
]
MATH_ROWS = [
    {"problem": "Solve $x^2 = 4$ for $x > 0$.", "answer": "2", "unique_id": "test/algebra/1.json"},
    {"problem": "For which $x$ is $\\sqrt{x(1-x)}$ real?", "answer": "[0,1]", "subject": "Algebra"},
    {"problem": "What is $\\frac{2}{4}$ in lowest terms?", "answer": "\\frac{1}{2}"},
    {"problem": "How many sides has a hexagon?", "answer": 6},
]


def test_gsm8k_style_file_gives_the_final_number_and_keeps_the_solution_out(tmp_path: Path) -> None:
    examples = load_qa_file(write_jsonl(tmp_path / "gsm.jsonl", GSM8K_ROWS))
    assert [example.answers for example in examples] == [("7",), ("1,250",), ("4.5",)]
    assert [example.question for example in examples] == [row["question"] for row in GSM8K_ROWS]
    assert examples[0].id == "gsm-1"


def test_math500_style_file_keeps_each_answer_as_written(tmp_path: Path) -> None:
    examples = load_qa_file(write_jsonl(tmp_path / "math.jsonl", MATH_ROWS))
    assert examples == [
        QAExample("math-1", MATH_ROWS[0]["problem"], ("2",)),
        QAExample("math-2", MATH_ROWS[1]["problem"], ("[0,1]",)),  # an interval, not a list of two answers
        QAExample("math-3", MATH_ROWS[2]["problem"], ("\\frac{1}{2}",)),
        QAExample("math-4", MATH_ROWS[3]["problem"], ("6",)),
    ]


def test_math500_style_parquet_reads_its_columns_from_a_wide_file(tmp_path: Path) -> None:
    path = tmp_path / "math.parquet"
    pq.write_table(pa.table({"problem": ["1+1?"], "solution": ["It is \\boxed{2}."], "answer": ["2"]}), path)
    assert load_qa_file(path) == [QAExample("math-1", "1+1?", ("2",))]


def test_gsm8k_answer_without_its_final_line_names_the_line_and_the_fix(tmp_path: Path) -> None:
    rows = [*GSM8K_ROWS[:2], {"question": "Three times 4?", "answer": "3 * 4 = 12"}]
    path = write_jsonl(tmp_path / "gsm.jsonl", rows)
    with pytest.raises(StascError) as error:
        load_qa_splits(str(path))
    assert str(error.value) == (
        f"{path}:3: the GSM8K-style answer in column 'answer' has no final '#### <answer>' line, which gives the "
        "reference answer. Add that line (e.g. '#### 42') or remove the row; for plain reference answers, pass "
        "--answers-column answer."
    )


def test_plain_answer_column_still_needs_the_flag(tmp_path: Path) -> None:
    """A QA file with an 'answer' column and no '####' is no GSM8K file: the column flag is still asked for."""
    path = write_jsonl(tmp_path / "nq.jsonl", [{"question": "Capital of France?", "answer": ["Paris"]},
                                               {"question": "Capital of Italy?", "answer": "Rome"}])
    with pytest.raises(StascError, match="has no column 'answers'.*Did you mean 'answer'"):
        load_qa_file(path)
    assert load_qa_file(path, answers_column="answer")[0].answers == ("Paris",)


@pytest.mark.usefixtures("offline_datasets")
def test_math_data_folders_load_through_datasets_with_split_slices(tmp_path: Path) -> None:
    """Hub data sets go through `datasets`: GSM8K with train and test splits, MATH-500 with one 'test' split
    cut in two by slices, as configs/qwen2.5-1.5b-math500-gpu.yaml does."""
    (tmp_path / "gsm8k").mkdir()
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", GSM8K_ROWS[:2])
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", GSM8K_ROWS[2:])
    train, test = load_qa_splits("gsm8k", test_split="test")
    assert [e.answers for e in train] == [("7",), ("1,250",)] and test[0].answers == ("4.5",)

    (tmp_path / "math500").mkdir()
    write_jsonl(tmp_path / "math500" / "test.jsonl", [{**row, "answer": str(row["answer"])} for row in MATH_ROWS])
    train, test = load_qa_splits("math500", train_split="test[:3]", test_split="test[3:]")
    assert [e.answers for e in train] == [("2",), ("[0,1]",), ("\\frac{1}{2}",)]
    assert test == [QAExample("math500-test[3:]-1", MATH_ROWS[3]["problem"], ("6",))]
