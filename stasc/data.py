"""Question-answering data: the built-in set, local files and Hugging Face Hub data sets.

Every source becomes a list of QAExample (question plus gold answers), so the training loop never
cares where the data came from. Errors name the file, the row and the flag that fixes them, because
data problems are the most common thing a user has to fix.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import math
import random
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stasc.errors import StascError, closest_hint

logger = logging.getLogger(__name__)

BUILTIN_DATASET = "builtin"

_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
_SUFFIX_LIST = ", ".join(_SUFFIXES[:-1]) + " or " + _SUFFIXES[-1]
_ID_COLUMNS = ("id", "question_id")
_SPLIT_COLUMN = "split"
_BARE_NAN = re.compile(r"(?<=[\[,\s])nan(?=\s*[,\]])")
_OTHER_SEPARATORS = {",": ";\t|", "\t": ",;|"}  # what a one-column header split by them reveals
# Math data sets found by their columns when the default --answers-column 'answers' is absent: MATH-500 style
# (problem, answer) and GSM8K style (question, answer: a worked solution ending in a '#### <answer>' line).
_MATH_COLUMNS = ("problem", "answer")
_GSM8K_MARKER = "####"


@dataclass(frozen=True)
class QAExample:
    """One question with every reference answer that counts as correct."""

    id: str
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class RowRules:
    """What every row must satisfy besides having a question and an answer; the run sets both."""

    max_question_chars: int | None = None  # --max-question-chars; None: no limit
    # How outputs and answers are compared: an answer that normalises to "" cannot be scored.
    normalize: Callable[[str], str] | None = None


@dataclass(frozen=True)
class _Table:
    """Raw rows of one source, kept with what error messages need to point at them."""

    source: str  # how messages name the source: the path as given, or the Hub name and split
    stem: str  # prefix of generated ids
    columns: tuple[str, ...]  # every selectable column, nested ones as dotted paths
    rows: list[dict[str, Any]]
    locations: list[str]  # per row: "PATH:LINE" for JSON lines, "SOURCE, row N" otherwise


def builtin_dataset_path() -> Path:
    """Where the small bundled QA set lives, so the tool works without any download."""
    return Path(__file__).resolve().parent / "resources" / "easy_qa.jsonl"


def load_qa_file(
    path: str | Path, *, question_column: str = "question", answers_column: str = "answers",
    rules: RowRules = RowRules(),
) -> list[QAExample]:
    """Load a local .jsonl, .json, .csv, .tsv or .parquet file, choosing the reader by suffix."""
    table = _read_file(path, needed=(question_column, answers_column, *_ID_COLUMNS, *_MATH_COLUMNS))
    examples = _to_examples(table, question_column, answers_column, rules)
    logger.info("Loaded %d questions from %s", len(examples), table.source)
    return examples


def load_qa_splits(
    dataset: str = BUILTIN_DATASET,
    *,
    test_dataset: str | None = None,
    question_column: str = "question",
    answers_column: str = "answers",
    dataset_config: str | None = None,
    train_split: str = "train",
    test_split: str = "validation",
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    rules: RowRules = RowRules(),
) -> tuple[list[QAExample], list[QAExample]]:
    """Return (train, test) for the built-in set, a local file or a Hub data set.

    test_dataset, when given, replaces any test split (the built-in set ignores the column flags,
    test_dataset does not). The test set is truncated to max_test first, then every train question
    that also appears in it is dropped (so no test question is trained on), then the train set is
    truncated to max_train.
    """
    _check_limit(max_train, "--max-train-questions")
    _check_limit(max_test, "--max-test-questions")
    columns = {"question_column": question_column, "answers_column": answers_column, "rules": rules}
    if dataset == BUILTIN_DATASET:
        train, test = _load_builtin(rules)
        if test_dataset is not None:
            test = _load_named(test_dataset, dataset_config, test_split, "--test-split", **columns)
    elif _is_local_file(dataset):
        train = load_qa_file(dataset, **columns)
        if test_dataset is None:
            train, test = _hold_out(train, dataset, test_fraction, seed)
        else:
            test = _load_named(test_dataset, dataset_config, test_split, "--test-split", **columns)
    else:
        train = _load_hub(dataset, dataset_config, train_split, "--train-split", **columns)
        if test_dataset is None:
            test = _load_hub(dataset, dataset_config, test_split, "--test-split", **columns)
        else:
            test = _load_named(test_dataset, dataset_config, test_split, "--test-split", **columns)
    return _finish_splits(train, test, max_train, max_test)


def _check_limit(value: int | None, flag: str) -> None:
    """Reject a non-positive limit before any slow loading happens."""
    if value is not None and value < 1:
        raise StascError(f"{flag} must be at least 1 (got {value}). Leave it unset to use every question.")


def _is_local_file(name: str) -> bool:
    """Tell a local file apart from a Hub name such as 'owner/name'.

    Existing directories go to the Hub branch, because datasets.load_dataset reads local data folders.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return False
    return (
        path.is_file()
        or path.suffix.lower() in _SUFFIXES
        or name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
    )


def _load_named(
    name: str, config: str | None, split: str, split_flag: str, *, question_column: str, answers_column: str,
    rules: RowRules,
) -> list[QAExample]:
    """Load --test-dataset, which may be a local file or a Hub name like --dataset."""
    columns = {"question_column": question_column, "answers_column": answers_column, "rules": rules}
    if _is_local_file(name):
        return load_qa_file(name, **columns)
    return _load_hub(name, config, split, split_flag, **columns)


def _load_builtin(rules: RowRules) -> tuple[list[QAExample], list[QAExample]]:
    """Split the bundled set by its 'split' column, which fixes train and test once for everyone."""
    table = _read_file(builtin_dataset_path(), needed=("question", "answers", *_ID_COLUMNS, _SPLIT_COLUMN))
    examples = _to_examples(table, "question", "answers", rules)
    splits: dict[str, list[QAExample]] = {"train": [], "test": []}
    for row, location, example in zip(table.rows, table.locations, examples, strict=True):
        split = row.get(_SPLIT_COLUMN)
        if split not in splits:
            raise ValueError(f"{location}: built-in row has split {split!r}; expected 'train' or 'test'")
        splits[split].append(example)
    return splits["train"], splits["test"]


def _hold_out(
    examples: list[QAExample], source: str, test_fraction: float, seed: int
) -> tuple[list[QAExample], list[QAExample]]:
    """Shuffle with the seed and hold out test_fraction, so one file serves as train and test."""
    if not 0 < test_fraction < 1:
        raise StascError(
            f"--test-fraction must be between 0 and 1 (got {test_fraction}). "
            "Use e.g. 0.2, or pass a separate --test-dataset."
        )
    if len(examples) < 2:
        raise StascError(
            f"{source} has only {len(examples)} question, too few to hold out a test set. "
            "Add more questions or pass a separate --test-dataset."
        )
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    n_test = min(max(1, round(len(shuffled) * test_fraction)), len(shuffled) - 1)
    logger.info("Held out %d of %d questions from %s as the test set (seed %d)", n_test, len(shuffled), source, seed)
    return shuffled[n_test:], shuffled[:n_test]


def _finish_splits(
    train: list[QAExample], test: list[QAExample], max_train: int | None, max_test: int | None
) -> tuple[list[QAExample], list[QAExample]]:
    """Truncate, and keep test questions out of training so test scores measure generalization."""
    test = test[:max_test]
    test_questions = {normalize_question(example.question) for example in test}
    kept = [example for example in train if normalize_question(example.question) not in test_questions]
    if len(kept) < len(train):
        logger.warning("Dropped %d training questions that also appear in the test set", len(train) - len(kept))
    if not kept:
        raise StascError(
            f"No training questions left: all {len(train)} training questions also appear in the test set. "
            "Pass a different --dataset or --test-dataset."
        )
    train = kept[:max_train]
    logger.info("Using %d training and %d test questions", len(train), len(test))
    return train, test


def split_validation(
    train: Sequence[QAExample], fraction: float, *, max_train: int | None = None, max_validation: int | None = None
) -> tuple[list[QAExample], list[QAExample]]:
    """Hold out a fraction of the training questions for choosing settings, so the test split is never
    used for that. Which questions are held out depends only on their ids (not on the seed, the order or
    the limits), so every run on a data set validates on the same questions."""
    if not 0 < fraction < 1:
        raise StascError(f"--validation-fraction must be between 0 and 1 (got {fraction}).")
    if len(train) < 2:
        raise StascError(f"Only {len(train)} training question: too few to hold out a validation set.")
    ranked = sorted(train, key=lambda example: hashlib.sha256(example.id.encode("utf-8")).hexdigest())
    count = min(max(1, round(len(train) * fraction)), len(train) - 1)
    held_out = {example.id for example in ranked[:count]}
    validation = [example for example in train if example.id in held_out][:max_validation]
    remaining = [example for example in train if example.id not in held_out][:max_train]
    logger.info("Held out %d training questions for validation; training on %d", len(validation), len(remaining))
    return remaining, validation


def normalize_question(question: str) -> str:
    """Compare questions ignoring case, punctuation and spacing, which differ between copies of the same data."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return " ".join("".join(" " if unicodedata.category(char).startswith(("P", "S")) else char for char in text).split())


def _read_file(path: str | Path, *, needed: Sequence[str]) -> _Table:
    """Read a local file into raw rows; needed names the columns worth keeping from wide files."""
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise StascError(
            f"Dataset file not found: {source}. Pass an existing {_SUFFIX_LIST} file to --dataset "
            "(or --test-dataset), or a Hugging Face dataset name."
        )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        columns, rows = _read_parquet(path, needed)
        locations = [f"{source}, row {number}" for number in range(1, len(rows) + 1)]
    elif suffix in (".csv", ".tsv"):
        rows = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
        columns = _row_columns(rows)
        locations = [f"{source}, row {number}" for number in range(1, len(rows) + 1)]
    elif suffix in (".jsonl", ".json"):
        rows, locations = _read_json(path, _read_text(path), allow_array=suffix == ".json")
        columns = _row_columns(rows)
    else:
        raise StascError(f"{source} has an unsupported file type {path.suffix!r}. Use a {_SUFFIX_LIST} file.")
    if not rows:
        raise StascError(f"{source} has no questions. Add rows with a question and its answers, or pass another file.")
    return _Table(source=source, stem=path.stem, columns=columns, rows=rows, locations=locations)


def _read_text(path: Path) -> str:
    """Read UTF-8 text (a BOM is allowed), naming the file when it is not text."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise StascError(f"{path} is not UTF-8 text ({error}). Save it as UTF-8.") from error


def _read_json(path: Path, text: str, *, allow_array: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse JSON lines or, in a .json file, also one JSON document: an array of objects or one object."""
    if allow_array:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            if text.lstrip().startswith("["):
                raise StascError(
                    f"{path}:{error.lineno}:{error.colno}: invalid JSON ({error.msg}). Fix the file."
                ) from error
        else:
            items = document if isinstance(document, list) else [document]
            locations = [f"{path}, item {number}" for number in range(1, len(items) + 1)]
            for item, location in zip(items, locations, strict=True):
                _check_object(item, location, "Use an array of objects or one object per line")
            return items, locations
    if text.lstrip().startswith("[") and _is_array_of_objects(text):
        raise StascError(
            f"{path} holds one JSON array, not JSON lines (one object per line). Rename it to "
            f"{path.with_suffix('.json').name}, or write one object per line."
        )
    rows: list[dict[str, Any]] = []
    locations = []
    # Split on "\n" only: str.splitlines() would also break at U+2028 and the like, which JSON allows in strings.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        location = f"{path}:{line_number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise StascError(
                f"{location}:{error.colno}: invalid JSON ({error.msg}). Fix or remove that line."
            ) from error
        _check_object(row, location, "Put one object per line")
        rows.append(row)
        locations.append(location)
    return rows, locations


def _is_array_of_objects(text: str) -> bool:
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(document, list) and bool(document) and all(isinstance(item, dict) for item in document)


def _check_object(value: Any, location: str, fix: str) -> None:
    """Rows must be objects so that columns can be looked up by name."""
    if not isinstance(value, dict):
        raise StascError(
            f'{location}: expected a JSON object like {{"question": "...", "answers": ["..."]}}, '
            f"got {type(value).__name__}. {fix}."
        )


def _read_delimited(path: Path, separator: str) -> list[dict[str, Any]]:
    """Read CSV or TSV with every cell as text, so answers like '007' keep their form."""
    try:
        frame = pd.read_csv(path, sep=separator, dtype=str, na_filter=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        return []
    except UnicodeDecodeError as error:
        raise StascError(f"{path} is not UTF-8 text ({error}). Save it as UTF-8.") from error
    except pd.errors.ParserError as error:
        raise StascError(f"{path} is not a valid {path.suffix[1:].upper()} file ({error}). Fix the file.") from error
    _check_separator(path, separator, list(frame.columns))
    return frame.to_dict("records")


def _check_separator(path: Path, separator: str, columns: list[str]) -> None:
    """A file saved with another separator reads as one column whose name holds them all."""
    if len(columns) != 1:
        return
    found = next((other for other in _OTHER_SEPARATORS[separator] if other in columns[0]), None)
    if found is None:
        return
    kind = path.suffix[1:].upper()
    rename = {"\t": " or rename it to .tsv", ",": " or rename it to .csv"}.get(found, "")
    raise StascError(
        f"{path}: its header {columns[0]!r} is one column, because its fields are separated by {found!r} and a "
        f"{kind} file is read with {separator!r}. Save it with {separator!r} between fields{rename}, "
        "or convert it to .jsonl."
    )


def _read_parquet(path: Path, needed: Sequence[str]) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """Read only the needed top-level columns, since Parquet files often carry large extra columns."""
    try:
        schema = pq.read_schema(path)
        keep = _present_top_level(schema.names, needed)
        rows = pq.read_table(path, columns=keep).to_pylist()
    except (pa.ArrowException, OSError) as error:
        raise StascError(
            f"{path} is not a readable Parquet file ({error}). "
            "It may be truncated or corrupt: re-create or re-download it."
        ) from error
    return tuple(sorted(_arrow_paths(schema))), rows


def _present_top_level(names: Sequence[str], needed: Sequence[str]) -> list[str]:
    """Top-level columns that a (possibly dotted) needed column can come from."""
    wanted = {name for column in needed for name in (column, column.split(".", 1)[0])}
    return [name for name in names if name in wanted]


def _arrow_paths(fields: Sequence[pa.Field] | pa.Schema, prefix: str = "") -> Iterator[str]:
    """Column names of an Arrow schema, with struct fields as dotted paths."""
    for field in fields:
        yield prefix + field.name
        if pa.types.is_struct(field.type):
            yield from _arrow_paths(list(field.type), f"{prefix}{field.name}.")


def _mapping_paths(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Keys of a (nested) mapping, with nested keys as dotted paths."""
    for key, value in mapping.items():
        yield prefix + key
        if isinstance(value, Mapping):
            yield from _mapping_paths(value, f"{prefix}{key}.")


def _row_columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """Every column that appears in any row; JSON rows need not all have the same keys."""
    return tuple(sorted({path for row in rows for path in _mapping_paths(row)}))


def _lookup(row: Mapping[str, Any], column: str) -> Any:
    """Value of a column, where 'a.b' reaches into nested objects unless 'a.b' itself is a key."""
    if column in row:
        return row[column]
    value: Any = row
    for key in column.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _to_examples(table: _Table, question_column: str, answers_column: str, rules: RowRules) -> list[QAExample]:
    """Turn raw rows into examples, one per row in order, after checking both columns exist."""
    math_format = _math_format(table, question_column, answers_column)
    if math_format is not None:
        return _math_examples(table, *math_format, rules)
    for column, flag in ((question_column, "--question-column"), (answers_column, "--answers-column")):
        if column not in table.columns:
            raise StascError(
                f"{table.source} has no column {column!r} (available columns: {', '.join(table.columns)}). "
                f"Set {flag} to one of them.{closest_hint(column, table.columns)}"
            )
    examples = []
    unscorable: list[str] = []  # where an alias that normalises to "" was dropped beside usable ones
    for number, (row, location) in enumerate(zip(table.rows, table.locations, strict=True), start=1):
        question = _question(_lookup(row, question_column), location, question_column, rules.max_question_chars)
        answers = _answers(_lookup(row, answers_column), location, answers_column)
        if rules.normalize is not None:
            answers = _scorable(answers, rules.normalize, location, answers_column, unscorable)
        examples.append(QAExample(id=_row_id(row, f"{table.stem}-{number}"), question=question, answers=answers))
    if unscorable:
        logger.warning(
            "Dropped %d answers that are empty once normalised (nothing could be scored against them), at %s%s",
            len(unscorable), ", ".join(unscorable[:3]), ", ..." if len(unscorable) > 3 else "",
        )
    return examples


def _scorable(
    answers: tuple[str, ...], normalize: Callable[[str], str], location: str, column: str, dropped: list[str]
) -> tuple[str, ...]:
    """The answers that keep some text once normalised; a row with none left cannot be scored."""
    kept = tuple(answer for answer in answers if normalize(answer))
    if not kept:
        raise StascError(
            f"{location}: column {column!r}: the answers {list(answers)} are empty once normalised (case, "
            "punctuation, accents and the articles a, an, the are ignored when outputs are scored), so no output "
            "could be scored against them. Write the answer out in words, or remove the row."
        )
    dropped.extend(f"{location} {answer!r}" for answer in answers if answer not in kept)
    return kept


def _math_format(table: _Table, question_column: str, answers_column: str) -> tuple[str, bool] | None:
    """(question column, whether answers are GSM8K solutions) for a MATH-500 or GSM8K style table whose
    default 'answers' column is absent; None for every other table, which loads by the column flags."""
    if answers_column != "answers" or answers_column in table.columns or "answer" not in table.columns:
        return None
    if question_column == "question" and question_column not in table.columns and "problem" in table.columns:
        logger.info("%s has columns problem and answer: reading it as MATH-style problems", table.source)
        return "problem", False
    answers = [answer for row in table.rows if isinstance(answer := _lookup(row, "answer"), str)]
    if question_column in table.columns and any(_GSM8K_MARKER in answer for answer in answers):
        logger.info("%s has '####' answers: reading it as GSM8K-style solutions", table.source)
        return question_column, True
    return None


def _math_examples(table: _Table, question_column: str, gsm8k: bool, rules: RowRules) -> list[QAExample]:
    """Examples whose one reference is the 'answer' cell as written (MATH-style, so '[0,1]' stays an
    interval) or the number after a GSM8K solution's '####' (the worked solution never reaches a prompt)."""
    examples = []
    for number, (row, location) in enumerate(zip(table.rows, table.locations, strict=True), start=1):
        value = _lookup(row, "answer")
        answer = "" if value is None else str(value).strip()
        if gsm8k:
            if _GSM8K_MARKER not in answer:
                raise StascError(
                    f"{location}: the GSM8K-style answer in column 'answer' has no final '#### <answer>' line, which "
                    "gives the reference answer. Add that line (e.g. '#### 42') or remove the row; for plain "
                    "reference answers, pass --answers-column answer."
                )
            answer = answer.rsplit(_GSM8K_MARKER, 1)[1].strip()
        question = _question(_lookup(row, question_column), location, question_column, rules.max_question_chars)
        answers = _answers([answer], location, "answer")  # a list, so the cell is never read as a list literal
        examples.append(QAExample(_row_id(row, f"{table.stem}-{number}"), question, answers))
    return examples


def _row_id(row: Mapping[str, Any], fallback: str) -> str:
    """Keep the data set's own id when it has one, so results can be matched back to it."""
    for column in _ID_COLUMNS:
        value = row.get(column)
        if value is not None and str(value).strip():
            return str(value).strip()
    return fallback


def _missing(value: Any) -> bool:
    """None, and the NaN that pandas and spreadsheets write for an empty cell (as a float or as text)."""
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or (isinstance(value, str) and value.strip().lower() == "nan")


def _question(value: Any, location: str, column: str, limit: int | None) -> str:
    """Question text, stripped; numbers are accepted as text."""
    if value is not None and not isinstance(value, (str, int, float)):
        raise StascError(
            f"{location}: column {column!r} holds a {type(value).__name__}, not question text. "
            "Set --question-column to the column with the question."
        )
    question = "" if _missing(value) else str(value).strip()
    if not question:
        raise StascError(f"{location}: row has no question in column {column!r}. Fill it in or remove the row.")
    if limit is not None and len(question) > limit:
        raise StascError(
            f"{location}: the question in column {column!r} has {len(question):,} characters, more than "
            f"--max-question-chars ({limit:,}). Shorten it or remove the row, or raise --max-question-chars."
        )
    return question


def _answers(value: Any, location: str, column: str) -> tuple[str, ...]:
    """Gold answers from a list, a single string or a string holding a list literal."""
    if isinstance(value, Mapping):
        keys = ", ".join(map(str, value))
        raise StascError(
            f"{location}: column {column!r} holds an object with keys {keys}, not answers. "
            f"Point --answers-column inside it with a dotted name, e.g. {column}.{next(iter(value), 'key')}."
        )
    if isinstance(value, str):
        value = _parse_list_literal(value)
    items = value if isinstance(value, (list, tuple)) else [value]
    answers: list[str] = []
    for item in items:
        if _missing(item):
            continue
        if not isinstance(item, (str, int, float)):
            raise StascError(
                f"{location}: column {column!r} holds a {type(item).__name__} where an answer string was expected. "
                "Answers must be a list of strings or a single string."
            )
        answers.append(str(item).strip())
    unique = tuple(dict.fromkeys(answer for answer in answers if answer))
    if not unique:
        raise StascError(
            f"{location}: row has no answers in column {column!r}. Every question needs at least one reference answer."
        )
    return unique


def _literal_list(text: str) -> Any:
    """A Python list literal; a bare nan in it (how pandas prints a missing value) reads as None."""
    return ast.literal_eval(_BARE_NAN.sub("None", text))


def _parse_list_literal(text: str) -> Any:
    """Read "['a', 'b']" or '["a"]' as a list (CSV files store lists this way); other text stays as it is."""
    stripped = text.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return text
    for parse in (json.loads, _literal_list):
        try:
            parsed = parse(stripped)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(parsed, list):
            return parsed
    return text


def _load_hub(
    name: str, config: str | None, split: str, split_flag: str, *, question_column: str, answers_column: str,
    rules: RowRules,
) -> list[QAExample]:
    """Load one split of a Hub data set (or a local data folder, which datasets also reads)."""
    import datasets
    from huggingface_hub.errors import HFValidationError

    described = f"{name!r}" + (f" (config {config!r})" if config else "")
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except (OSError, datasets.exceptions.DatasetsError, HFValidationError) as error:
        raise StascError(
            f"Could not load dataset {described} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            f"If you meant a local file, it must exist: pass the path of an existing {_SUFFIX_LIST} file "
            "to --dataset (or --test-dataset). Otherwise check the dataset name and your network connection."
        ) from error
    except ValueError as error:
        if "Unknown split" in str(error):
            raise StascError(
                f"Dataset {described} has no split {split!r} (available splits: "
                f"{', '.join(_split_names(name, config))}). Set {split_flag} to one of them."
            ) from error
        raise StascError(
            f"Could not load dataset {described} from the Hugging Face Hub ({error}). "
            "If it has several configurations, pick one with --dataset-config."
        ) from error
    columns = tuple(sorted(_mapping_paths(dataset.features)))
    needed = (question_column, answers_column, *_ID_COLUMNS, *_MATH_COLUMNS)
    keep = _present_top_level(dataset.column_names, needed)
    rows = dataset.select_columns(keep).to_list()
    source = f"Hugging Face dataset {described} split {split!r}"
    if not rows:
        raise StascError(f"{source} has no questions. Set {split_flag} to a split that has some.")
    table = _Table(
        source=source,
        stem=f"{name.rstrip('/').rsplit('/', 1)[-1]}-{split}",
        columns=columns,
        rows=rows,
        locations=[f"{source}, row {number}" for number in range(1, len(rows) + 1)],
    )
    examples = _to_examples(table, question_column, answers_column, rules)
    logger.info("Loaded %d questions from %s", len(examples), source)
    return examples


def _split_names(name: str, config: str | None) -> list[str]:
    """Available splits of a data set, for the message that a requested one is missing."""
    import datasets

    return list(datasets.get_dataset_split_names(name, config))
