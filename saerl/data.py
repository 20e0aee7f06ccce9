"""Ingest: read a user's data set, map its columns onto ours, check every row, normalise gold answers.

In: a jsonl (or .json array of objects) / parquet / csv file or a HF ``save_to_disk`` folder, and a
:class:`~saerl.config.DataConfig` (which field is the prompt, the answer, optional id/topic/difficulty/quality, and
the limits).
Out: :class:`IngestResult` with ``kept`` (``id, prompt, answer, answer_raw, row`` + mapped labels) and
``rejected`` (``row, field, reason, value, detail``), one line per problem found, with a fixed vocabulary of
reasons; ``detail`` says why when there is more to say than the reason (the verifier's reading of an
unparseable answer, what a non-text prompt holds and what to map instead), else null.

Rows (``row`` in both tables) are numbered from 0 in source order; for jsonl a row is a non-blank line (a
broken line keeps its number), for a JSON array an element, for csv a record after the header (a blank line is
no row).

A mapped field is a column name, or a dotted path into struct (dict) columns:
``data.answer=reward_model.ground_truth`` reads verl's layout, also inside a prompt template
(``'{extra_info.question}'``); a column whose name holds the dots wins. A prompt field holding a chat message
list (``[{"role": "user", "content": ...}]``, trl's conversational format) is read as its one user message;
any other non-text prompt value is rejected (see ingest). :func:`check_mapping` checks a mapping against a
file's columns without reading the whole file.
Pure library code: no Prefect here.
"""

from __future__ import annotations

import csv
import difflib
import functools
import hashlib
import json
import math
import re
import string
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from saerl.config import OTHER_BOMS, DataConfig
from saerl.verify import WORKERS_FAILED, normalize_answers

# Reasons a row (or one of its labels) appears in `rejected`.
EMPTY_PROMPT = "empty prompt"
MISSING_FIELD = "missing field"
UNPARSEABLE_ANSWER = "unparseable answer"
DUPLICATE_PROMPT = "duplicate prompt"
DUPLICATE_ID = "duplicate id"
OVERLONG_PROMPT = "over-long prompt"
INVALID_JSON = "invalid JSON"
INVALID_LABEL = "invalid label"
ANSWER_TIMEOUT = "answer timeout"
ANSWER_CHECK_ERROR = "answer check error"  # the verifier failed on this answer (see detail)
EMPTY_ANSWER = "empty answer"  # the answer field holds "" or whitespace only
STRUCT_ANSWER = "struct answer"  # the answer field holds a struct: a nested field (a dotted path) is meant
LIST_ANSWER = "list answer"  # the answer field holds a list of several values (one value in a list is read as it)
NON_TEXT_PROMPT = "non-text prompt"  # a number, boolean, list, struct or chat without one user turn
TEMPLATE_ERROR = "template error"  # a format spec / conversion of data.prompt's template does not fit the row's value
INVALID_UTF8 = "invalid UTF-8"
EXTRA_FIELDS = "too many fields"  # a csv row with more fields than the header (an unquoted comma)
# These only flag a row: it is kept (a bad label becomes null, bad bytes become U+FFFD).
FLAG_ONLY = frozenset({INVALID_LABEL, INVALID_UTF8})

REJECT_VALUE_CHARS = 200  # `value` in rejected.parquet is cut to this many characters
REJECT_DETAIL_CHARS = 500  # `detail` in rejected.parquet is cut to this many characters
PLAIN_KEY = re.compile(r"[A-Za-z0-9_ .-]+")  # keys every JSON writer writes as they are (_key_needles)
HINT_SHARE = 0.05  # a reason rejecting over this share of the rows adds a hint to the summary (ingest_hints)
# Golds written the European way: a decimal comma ('3,5', '0,25': read as the set {3, 5}) or thousands dots ('1.000',
# '2.500.000': read as 1 and 2.5). Over NUMBER_FORMAT_HINT_SHARE of the kept golds so written adds a hint (see
# number_format_hint); English data holds some ('1,2' lists two roots), a translated one a few percent at least.
# Thousands dots are counted only where a decimal is unlikely: no leading zero ('0.125' is a decimal), a single dotted
# group only as '.000' ('3.142' and '2.500' are read as the decimals they likely are), else two groups or more
# ('1.234.567')
DECIMAL_COMMA = re.compile(r"[-\u2212]?\d+,\d{1,2}")
THOUSANDS_DOTS = re.compile(r"[-\u2212]?[1-9]\d{0,2}(?:\.000|(?:\.\d{3}){2,})")
NUMBER_FORMAT_HINT_SHARE = 0.02
NUMBER_FORMAT_EXAMPLES = 3  # the hint quotes this many such golds
HEADER_ROWS = 100  # check_mapping reads this many rows of a jsonl file (all of it when a field is not there)
SCAN_CHUNK_BYTES = 1 << 23  # check_mapping scans a jsonl file's later rows in chunks of about this size
MAX_NESTING = 4  # nested fields are listed (and found by check_mapping) down to this many levels
MAX_LISTED_FIELDS = 40  # an error lists at most this many nested fields
CHAT_ROLE, CHAT_CONTENT, CHAT_USER = "role", "content", "user"  # a chat message's keys and the prompt's role
# Keys of a struct answer that likely hold the gold (verl: reward_model.ground_truth), for the hint's example.
GOLD_KEY_GUESSES = ("ground_truth", "answer", "gold", "target", "solution", "label")
# Column names (a name's last dotted part, or a word of it, case and a plural 's' aside) that usually hold a prompt / a
# gold answer, most likely first: a missing prompt or answer field's suggestion prefers them, and never offers a column
# named like the other kind (data.prompt=solution would train on the worked solutions as prompts).
PROMPT_NAMES = ("problem", "question", "prompt", "query", "instruction", "input")
ANSWER_NAMES = ("answer", "solution", "ground_truth", "gold", "target", "output", "label", "response", "completion")
ID_NAMES = ("id", "idx", "index", "uid")  # words of an id column's name ('question_id'): never a prompt or an answer
_NAME_WORD = re.compile(r"[a-z0-9]+")
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # where 'GroundTruth' splits into words
TYPO_CUTOFF = 0.75  # a column at least this similar (difflib ratio, case aside) to a missing field's name is its typo
CLOSE_CUTOFF = 0.4  # a missing id or label field's suggestion: the closest column at least this similar
_FIELD_START = re.compile(r"[A-Za-z_][\w.]*")  # a field name after an unclosed '{' (the fixed template closes it)
_FIELD_END = re.compile(r"[A-Za-z_][\w.]*$")  # a field name before a '}' that closes no '{'
REJECTED_TABLE = "rejected.parquet"  # an ingest's table of rejected and flagged rows (write_ingest)
ID_HEX_CHARS = 16  # content-hash ids: this many hex digits of sha256(normalised prompt)
SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",  # one object per line, or a JSON array of objects (see _is_json_array)
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
}
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
HF_SPLITS_FILE = "dataset_dict.json"  # a DatasetDict folder's list of its splits ({"splits": [...]})
HELD_OUT_FIX = "eval.sets.NAME={path: P, %s: %s}"  # how a held-out set reads its file its own way (config.HeldOutSet)
UTF8_BOM = b"\xef\xbb\xbf"
SNIFF_BYTES = 4096  # read this much at a time looking for the first non-space byte of a .json file; and the encoding
# UTF-16 without a byte-order mark: in the first SNIFF_BYTES, at least this share of the bytes at odd (UTF-16LE) or even
# (UTF-16BE) offsets are NUL, as every ASCII character's second byte is. Read as UTF-8 every jsonl line was 'invalid
# JSON' and a csv's columns were named 'q\x00'; a UTF-8 file holds a NUL byte only where a row is broken.
UTF16_NUL_SHARE = 0.5
# When over this share of the rows are flagged invalid UTF-8, the file is likely another 8-bit encoding: the hint
# names cp1252/Latin-1 and the iconv line that converts it (every row kept with U+FFFD in place of its accents).
LEGACY_ENCODING_SHARE = 0.5
LEGACY_ENCODING_FIX = "iconv -f cp1252 -t utf-8 IN > OUT"
# A JSON \u escape of a UTF-16 surrogate: after json.loads it may leave a lone surrogate no encoder accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# A double-quoted run ("" escapes read as two adjacent runs): as polars splits records, a newline in one does not end
# the record, wherever in a field the quote stands.
_CSV_QUOTED_OR_NEWLINE = re.compile(r'"[^"]*"|\n')
# A field that starts with a quote (quoted runs and unquoted text up to a comma outside them): its commas do not
# split. A quote later in a field is a plain character to polars (and Python's csv): 'Add "2,3"' is two fields.
_CSV_QUOTED_FIELD = re.compile(r'(?:^|(?<=,))"[^"]*"(?:[^",]|"[^"]*")*')
# Field separators a spreadsheet may save "csv" with: a header holding one of them reads as one column.
CSV_OTHER_SEPARATORS = {";": "semicolons (';')", "\t": "tabs ('\\t')"}
TRUE_WORDS = {"1", "true", "yes", "good"}
FALSE_WORDS = {"0", "false", "no", "bad"}
NAN_TEXTS = frozenset({"NaN", "Infinity", "-Infinity"})  # json.dumps of non-finite floats
# What a non-text prompt's detail says the field holds ("field 'q' holds a list; ..."), for the hint.
_HOLDS = re.compile(r"holds (.+?)(?: with fields|;|:)")
# a MATH-style difficulty ("Level 5", "level 2"): the number is the label; MATH's "Level ?" stays invalid
_LEVEL_TEXT = re.compile(r"\s*level\s+(\d+(?:\.\d+)?)\s*", re.IGNORECASE)
KEPT_SCHEMA = {
    "id": pl.String,
    "prompt": pl.String,
    "answer": pl.String,
    "answer_raw": pl.String,
    "row": pl.Int64,
}
LABEL_KINDS = ("topic", "difficulty", "quality", "labelled", "defect")
GOOD_QUALITY = 0.5  # a quality label (0/1, or a probability of good) at or above this marks a good prompt
LABEL_TYPES = {"topic": pl.String, "difficulty": pl.Float64, "quality": pl.Float64, "labelled": pl.Boolean,
               "defect": pl.String}
REJECTED_SCHEMA = {"row": pl.Int64, "field": pl.String, "reason": pl.String, "value": pl.String,
                   "detail": pl.String}
# mapping fields `saerl ingest` takes (--prompt, --answer, ...)
INGEST_OPTIONS = ("prompt", "answer", "id", "topic", "difficulty", "quality", "labelled", "defect")


class IngestError(ValueError):
    """A data set that cannot be ingested at all (wrong column names, unreadable or empty file), with a fix."""


class FieldNotFoundError(IngestError):
    """A field the mapping names (prompt template field, answer, id, a label) that the data does not have; `.option`
    names the mapping option that names it ('prompt', 'answer', 'id', a label; None where not known)."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class MissingFieldError(KeyError):
    """A row lacks a field the prompt template or mapping needs; `.field` names it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.field = name


class NonTextError(ValueError):
    """A prompt field of a row holds no text (a number, a list, a struct, a chat without one user turn);
    `.field` names it, `.value` is what it holds, `.detail` says what it holds and what to map instead."""

    def __init__(self, name: str, value: Any, detail: str) -> None:
        super().__init__(detail)
        self.field, self.value, self.detail = name, value, detail


class TemplateError(ValueError):
    """A format spec or conversion of the prompt template does not fit a row's value ('{n:d}' over the text 'x');
    `.field` names the field, `.value` is its value, `.detail` says why and the fix."""

    def __init__(self, name: str, value: Any, detail: str) -> None:
        super().__init__(detail)
        self.field, self.value, self.detail = name, value, detail


@dataclass
class ChatCounts:
    """Prompts read from chat message lists: how many, and the turns of other roles left out, by role."""

    prompts: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


_NO_CHAT = ChatCounts()  # prompt_parts' answer for a prompt read from no chat (never changed)


@dataclass
class LoadedTable:
    """A read data set: its rows, each row's source row number, and rows flagged while reading.

    data: a frame (parquet, csv, HF), or the parsed objects of a jsonl / JSON array file as they were parsed,
    so a nested or mixed-type value keeps its type (a number stays a number, a list a list) whatever the file
    format."""

    data: pl.DataFrame | list[dict[str, Any]]
    rows: list[int]
    issues: list[dict[str, Any]] = field(default_factory=list)
    n_source_rows: int = 0

    @property
    def frame(self) -> pl.DataFrame:
        """The rows as a frame (JSON objects through _records_frame: a mixed or nested column as text)."""
        return self.data if isinstance(self.data, pl.DataFrame) else _records_frame(self.data)

    @functools.cached_property
    def columns(self) -> list[str]:
        """Top-level column names (for JSON objects: every key, in first-seen order)."""
        if isinstance(self.data, pl.DataFrame):
            return self.data.columns
        names: dict[str, None] = {}
        for rec in self.data:
            names.update(dict.fromkeys(rec))
        return list(names)

    def records(self) -> Iterator[dict[str, Any]]:
        """Each row as a dict of plain Python values (a struct as a dict, a list column as a list)."""
        return self.data.iter_rows(named=True) if isinstance(self.data, pl.DataFrame) else iter(self.data)

    def head(self, n: int) -> LoadedTable:
        """The first `n` rows of the file: table rows from source rows below n, and their issues."""
        keep = sum(r < n for r in self.rows)
        data = self.data.head(keep) if isinstance(self.data, pl.DataFrame) else self.data[:keep]
        return LoadedTable(data, self.rows[:keep], [i for i in self.issues if i["row"] < n],
                           min(n, self.n_source_rows))

    def has_field(self, name: str) -> bool:
        """True if `name` is a column, or a dotted path that some row (a frame: its schema) holds."""
        if name in self.columns:
            return True
        if "." not in name:
            return False
        if isinstance(self.data, pl.DataFrame):
            return name in _schema_paths(self.data.schema)
        return any(_lookup(rec, name) is not _ABSENT for rec in self.data)

    def nested_fields(self) -> list[str]:
        """Dotted paths into struct columns (a frame: its schema; JSON objects: their first HEADER_ROWS)."""
        if isinstance(self.data, pl.DataFrame):
            return _schema_paths(self.data.schema)
        paths: dict[str, None] = {}
        for rec in self.data[:HEADER_ROWS]:
            paths.update(dict.fromkeys(_dict_paths(rec)))
        return [p for p in paths if "." in p]


@dataclass
class IngestResult:
    """What ingest produced: kept prompts (in file order; :func:`in_id_order` sorts them as the stages read them), one
    line per rejection or flag (by file row), and a summary dict."""

    kept: pl.DataFrame
    rejected: pl.DataFrame
    summary: dict[str, Any]


# --------------------------------------------------------------------------------------------------- reading


def _issue(row: int, field_name: str, reason: str, value: Any, detail: str | None = None) -> dict[str, Any]:
    """One rejected.parquet line; the value is stringified and cut to REJECT_VALUE_CHARS, the detail (why,
    when there is more to say than the reason; else None) to REJECT_DETAIL_CHARS."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return {"row": row, "field": field_name, "reason": reason, "value": text[:REJECT_VALUE_CHARS],
            "detail": detail[:REJECT_DETAIL_CHARS] if detail else None}


def _column(values: list[Any]) -> pl.Series:
    """A Series from one column of JSON values (load_table's frame of a jsonl file; ingest reads the parsed
    values themselves): a column of one scalar type keeps it; mixed or nested types become text, each value as
    the file wrote it (JSON: ints beside floats stay '3' next to '2.5' and a big int keeps its digits; a NaN
    becomes 'NaN', see is_missing)."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1 and kinds <= {bool, int, float, str}:
        try:
            return pl.Series(
                values,
                dtype={bool: pl.Boolean, int: pl.Int64, float: pl.Float64}.get(
                    next(iter(kinds), str), pl.String
                ),
            )
        except (OverflowError, TypeError, ValueError, pl.exceptions.PolarsError):
            pass
    return pl.Series(
        [None if v is None else v if isinstance(v, str) else json.dumps(v, default=str) for v in values],
        dtype=pl.String,
    )


class _RepeatedKey(ValueError):
    """A JSON object names one key twice with different values (json.loads would keep the last one silently)."""


def _one_value_a_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: the object of `pairs`; raises _RepeatedKey when a key repeats with another value ('a row
    saying "answer": "3" and later "answer": "4"' has no one answer; a key repeated with the same value is harmless)."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        for key, value in pairs:
            if obj[key] is not value and obj[key] != value:
                raise _RepeatedKey(f"key {key!r} appears more than once with different values ({json.dumps(value)[:40]} "
                                   f"and {json.dumps(obj[key])[:40]}): keep the one you mean")
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_one_value_a_key)  # every JSON object ingest reads goes through it


def _parse_line(text: str) -> tuple[dict[str, Any] | None, str]:
    """One jsonl line as (object, "") or (None, why not): broken JSON, a non-object, a key repeated with another value
    (:func:`_one_value_a_key`), nesting too deep for the parser, or an integer over Python's digit limit all count as an
    invalid line, never a crash."""
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        return None, e.msg
    except _RepeatedKey as e:
        return None, str(e)
    except (ValueError, RecursionError) as e:
        return None, f"{type(e).__name__}: {str(e)[:REJECT_VALUE_CHARS]}"
    if not isinstance(obj, dict):
        return None, "not an object"
    return obj, ""


def _has_lone_surrogate(value: Any) -> bool:
    """True if a string anywhere in a parsed JSON value (keys included) cannot be encoded as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _scrub_surrogates(value: Any) -> Any:
    """A parsed JSON value with valid surrogate pairs joined and lone surrogates replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_scrub_surrogates(k): _scrub_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_surrogates(v) for v in value]
    return value


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, dict keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _records_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    """A frame from JSON objects: one column per key (in first-seen order), built by _column."""
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec))
    return pl.DataFrame([_column([rec.get(n) for rec in records]).alias(n) for n in names])


def _read_jsonl(path: Path, limit: int | None = None) -> LoadedTable:
    """Line by line: a broken line is an 'invalid JSON' issue, bad bytes are replaced and flagged. With
    `limit`, only the first `limit` rows (check_mapping's look at the columns)."""
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    issues: list[dict[str, Any]] = []
    row = -1
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if limit is not None and row + 1 >= limit:
                break
            if line_no == 1:  # a UTF-8 BOM before a blank first line leaves that line blank, not a row
                raw = raw.removeprefix(UTF8_BOM)
            if not raw.strip():
                continue
            row += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", errors="replace")
                issues.append(_issue(row, "", INVALID_UTF8, f"line {line_no}: {text.strip()}"))
            obj, error = _parse_line(text)
            if error:
                issues.append(_issue(row, "", INVALID_JSON, f"line {line_no}: {error}: {text.strip()}"))
                continue
            if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
                obj = _scrub_surrogates(obj)
                issues.append(_issue(row, "", INVALID_UTF8, f"line {line_no}: lone UTF-16 surrogate escape"))
            records.append(obj)
            rows.append(row)
    return LoadedTable(records, rows, issues, row + 1)


def _is_json_array(path: Path) -> bool:
    """True if the file's first character after a UTF-8 BOM and whitespace is '[' (a JSON array, not jsonl)."""
    with path.open("rb") as fh:
        if fh.read(len(UTF8_BOM)) != UTF8_BOM:
            fh.seek(0)
        while chunk := fh.read(SNIFF_BYTES):
            head = chunk.lstrip()
            if head:
                return head.startswith(b"[")
    return False


@dataclass(frozen=True)
class _Unreadable:
    """An element of a JSON array that does not parse alone (nested too deep, an integer over the digit limit, not
    an object): `why` says so."""

    why: str


def _array_elements(text: str) -> list[str] | None:
    """The text of each top-level element of a JSON array, split at its top-level commas (outside strings), for a
    file whose whole parse failed on one element (Python's parser recursed too deep, or refused a huge integer), so
    the other elements are read one by one. in: the file's text; out: the elements' texts ([] for an empty array),
    or None when the text is not one array (unbalanced brackets, text after it)."""
    body = text.strip()
    if not body.startswith("["):
        return None
    parts, depth, start, in_string, escaped = [], 0, 1, False, False
    for i, ch in enumerate(body):
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                if body[i + 1:].strip():
                    return None
                last = body[start:i].strip()
                return parts + [last] if parts or last else []
        elif ch == "," and depth == 1:
            parts.append(body[start:i])
            start = i + 1
    return None


def _read_json_array(path: Path) -> LoadedTable:
    """A .json file holding one array of row objects: row i is element i. A non-object element is an
    'invalid JSON' issue; bad bytes and lone surrogate escapes are replaced and the element flagged. An element
    Python's parser cannot take (nested too deep, an integer over the digit limit) is an 'invalid JSON' issue of its
    own, the others read one by one (:func:`_array_elements`). A file that does not parse as JSON raises IngestError
    with the line and column."""
    raw = path.read_bytes().removeprefix(UTF8_BOM)
    try:
        text, bad_bytes = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        text, bad_bytes = raw.decode("utf-8", errors="replace"), True
    escapes = _SURROGATE_ESCAPE.search(text) is not None
    try:
        items = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise IngestError(
            f"cannot read {path} as a JSON array: line {e.lineno} column {e.colno}: {e.msg} (fix "
            "the JSON there, or convert the file to jsonl, one object per line)"
        ) from e
    except (ValueError, RecursionError) as e:  # one element nested too deep, or an integer over the digit limit
        parts = _array_elements(text)
        if parts is None:
            raise IngestError(
                f"cannot read {path} as a JSON array: {type(e).__name__}: "
                f"{str(e)[:REJECT_VALUE_CHARS]} (convert the file to jsonl, one object per line)"
            ) from e
        items = [_Unreadable(why) if obj is None else obj for obj, why in map(_parse_line, parts)]
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    issues: list[dict[str, Any]] = []
    for row, item in enumerate(items):
        if isinstance(item, _Unreadable):
            issues.append(_issue(row, "", INVALID_JSON, f"element {row}: {item.why}"))
            continue
        if not isinstance(item, dict):
            issues.append(_issue(row, "", INVALID_JSON, f"element {row}: not an object: {json.dumps(item)}"))
            continue
        if bad_bytes and any("\ufffd" in s for s in _strings(item)):
            issues.append(_issue(row, "", INVALID_UTF8, f"element {row}: bad bytes replaced by U+FFFD"))
        if escapes and _has_lone_surrogate(item):
            item = _scrub_surrogates(item)
            issues.append(_issue(row, "", INVALID_UTF8, f"element {row}: lone UTF-16 surrogate escape"))
        records.append(item)
        rows.append(row)
    return LoadedTable(records, rows, issues, len(items))


def _python_csv(path: Path) -> tuple[list[tuple[int, list[str]]], str]:
    """A csv file polars could not parse, read once by Python's strict csv reader: each record (the header first)
    with the line it begins on, and '' when the whole file reads; else no records and where the reader failed ('line
    3: unexpected end of data'; an unclosed quote fails at the file's end, so the record's first line is named).
    Python's reader takes a quote inside an unquoted field (an inch mark, 'A 5" nail') as a plain character, as
    spreadsheets do, where polars opens a quoted run and refuses the file. in: the path; out: (records, error)."""
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)  # a long field is no error here (polars reads it); the limit came first
    records: list[tuple[int, list[str]]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh, strict=True)
            began = 1  # the line the record being read began on
            try:
                for rec in reader:
                    records.append((began, rec))
                    began = reader.line_num + 1
            except csv.Error as e:
                where = f"line {began}" if began == reader.line_num else f"the record that begins on line {began}"
                return [], f"{where}: {e}"
    finally:
        csv.field_size_limit(limit)
    return records, ""


def _polars_names(header: list[str]) -> list[str]:
    """A csv header's column names as polars names them: a repeated name gets '_duplicated_<n>' (the first stays), so
    a file read by :func:`_csv_table` maps its fields as one polars reads does. in: the header; out: names."""
    seen: dict[str, int] = {}
    out = []
    for name in header:
        out.append(name if name not in seen else f"{name}_duplicated_{seen[name]}")
        seen[name] = seen.get(name, -1) + 1
    return out


def _csv_table(records: list[tuple[int, list[str]]]) -> LoadedTable:
    """The table of a csv file read by Python's reader (:func:`_python_csv`: records with their first lines, the
    header first), read as :func:`_read_csv` reads (every column as text, undecodable bytes replaced and the row
    flagged, a blank line no row); a row with more fields than the header is a 'too many fields' issue and is not
    kept, one with fewer is padded with nulls, and an empty field is null, as polars reads it. in: the records; out:
    the table."""
    header = _polars_names(records[0][1] if records else [])
    width, fix = len(header), 'an unquoted comma splits a field; quote the whole field that holds it, e.g. "Add 2, 3"'
    rows_read = [(line, rec) for line, rec in records[1:] if rec]  # a blank line is no row
    issues, kept, rows = [], [], []
    for row, (line, rec) in enumerate(rows_read):
        if len(rec) > width:
            issues.append(_issue(row, "", EXTRA_FIELDS, f"line {line}: {len(rec)} fields for {width} columns ({fix}): "
                                 + ",".join(rec)))
            continue
        values = dict(zip(header, [v or None for v in rec] + [None] * (width - len(rec)), strict=True))  # '' is null
        issues += [_issue(row, name, INVALID_UTF8, v) for name, v in values.items() if v and "\ufffd" in v]
        kept.append(values)
        rows.append(row)
    frame = pl.DataFrame({name: [r[name] for r in kept] for name in header}, schema=dict.fromkeys(header, pl.String))
    return LoadedTable(frame, rows, sorted(issues, key=lambda i: i["row"]), len(rows_read))


def _csv_field_counts(records: list[tuple[int, str]]) -> list[int]:
    """Fields in each of the records of a csv file (_csv_records), header first, counted as polars splits them:
    commas inside a field that starts with a quote do not count; a quote later in a field is a plain character."""
    return [_CSV_QUOTED_FIELD.sub("q", record).count(",") + 1 for _, record in records]


def _csv_records(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each record of csv text, split as polars splits them: a record ends at a
    newline outside quoted runs, leading blank lines are skipped, a blank line is a record, the file's final
    newline starts none."""
    body = text.lstrip("\r\n")
    line = 1 + text[: len(text) - len(body)].count("\n")
    records: list[tuple[int, str]] = []
    start, start_line = 0, line
    for m in _CSV_QUOTED_OR_NEWLINE.finditer(body):
        if m.group() == "\n":
            records.append((start_line, body[start : m.start()].rstrip("\r")))
            start, line = m.end(), line + 1
            start_line = line
        else:
            line += m.group().count("\n")
    if start < len(body):
        records.append((start_line, body[start:].rstrip("\r")))
    return records


def _ragged_rows(path: Path, records: list[tuple[int, str]], width: int, n_rows: int) -> list[dict[str, Any]]:
    """One 'too many fields' issue per row of csv file `path` (its `records`: _csv_records) with more fields than
    the `width` header columns (polars would cut the extra fields off: an unquoted comma splits 'Add 2, 3' in two).
    IngestError naming the first such line if the records cannot be matched to the `n_rows` rows polars read (a
    stray quote)."""
    counts = _csv_field_counts(records)
    if max(counts[1:], default=0) <= width:
        return []
    bad = [(row, n, records[row + 1]) for row, n in enumerate(counts[1:]) if n > width]
    fix = 'an unquoted comma splits a field; quote the whole field that holds it, e.g. "Add 2, 3"'
    if len(counts) != n_rows + 1 or len(records) != len(counts):
        line, record = bad[0][2]
        raise IngestError(
            f"cannot read {path} as csv: line {line} has more fields than the {width} header columns and the "
            f"rows do not line up (a stray quote?): {fix}, double any quote inside a quoted field, or convert the "
            f"file to jsonl: {record[:REJECT_VALUE_CHARS]}"
        )
    return [
        _issue(row, "", EXTRA_FIELDS, f"line {line}: {n} fields for {width} columns ({fix}): {record}")
        for row, n, (line, record) in bad
    ]


def _blank_rows(records: list[tuple[int, str]], frame: pl.DataFrame) -> set[int]:
    """Rows of a csv frame that are blank lines of its file (its `records`: _csv_records; polars reads each as a
    row of nulls; like a blank jsonl line, one is no row), looked for among the all-null rows only; none when the
    file's records do not line up with the frame's rows."""
    empty = [i for i, rec in enumerate(frame.iter_rows()) if all(v is None for v in rec)]
    if not empty:
        return set()
    if len(records) != frame.height + 1:
        return set()
    return {i for i in empty if not records[i + 1][1]}


def _read_csv(path: Path) -> LoadedTable:
    """All columns as text (labels are parsed later); undecodable bytes are replaced and the row flagged; a row
    with more fields than the header is a 'too many fields' issue and is not kept; a blank line is no row (rows
    after it are numbered as if it were not there). A file polars cannot parse is read by Python's csv reader
    where that reads it (a quote inside an unquoted field: :func:`_python_csv`); one neither can (an unclosed
    quote) raises IngestError naming the first bad line."""
    try:
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy", truncate_ragged_lines=True, glob=False)
    except pl.exceptions.PolarsError as e:
        records, where = _python_csv(path)
        if not where:  # Python's reader reads it: a quote inside an unquoted field
            return _csv_table(records)
        raise IngestError(f"cannot read {path} as csv: {where} (an unclosed quote makes the rest of the file "
                          "one field: fix that line, or convert the file to jsonl)") from e
    if any("\r" in name for name in frame.columns):  # polars splits lines at \n only: the file read as one header
        raise IngestError(f"cannot read {path} as csv: its lines end in a bare carriage return (\\r, as old Mac "
                          "spreadsheets save csv); convert them to \\n, e.g. tr '\\r' '\\n' < IN.csv > OUT.csv")
    issues = [
        _issue(i, name, INVALID_UTF8, value)
        for i, rec in enumerate(frame.iter_rows(named=True))
        for name, value in rec.items()
        if isinstance(value, str) and "\ufffd" in value
    ]
    records = _csv_records(path.read_bytes().decode("utf-8", errors="replace"))  # the file read once for both
    ragged = _ragged_rows(path, records, frame.width, frame.height)
    blank = _blank_rows(records, frame)
    dropped = {i["row"] for i in ragged} | blank
    number = {r: n for n, r in enumerate(r for r in range(frame.height) if r not in blank)}  # frame row -> source row
    rows = [number[r] for r in range(frame.height) if r not in dropped]
    kept = frame.filter(pl.Series([r not in dropped for r in range(frame.height)])) if dropped else frame
    issues = [{**i, "row": number[i["row"]]} for i in sorted(issues + ragged, key=lambda i: i["row"])]
    return LoadedTable(kept, rows, issues, len(number))


def _read_hf(path: Path, hf_split: str | None) -> pl.DataFrame:
    """A `datasets` save_to_disk folder: a Dataset, or one split of a DatasetDict."""
    return _hf_dataset(path, hf_split).to_polars()


def _hf_dataset(path: Path, hf_split: str | None) -> Any:
    """The `datasets.Dataset` of a save_to_disk folder (memory-mapped: nothing read yet); IngestError naming
    the splits of a DatasetDict when `hf_split` picks none of them."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds.keys())
        if hf_split is None and len(splits) == 1:
            hf_split = splits[0]
        if hf_split not in ds:
            raise IngestError(
                f"{path} is a DatasetDict with splits {splits}; pick one with "
                f"data.hf_split=SPLIT (config; a held-out set's own: {HELD_OUT_FIX % ('hf_split', 'SPLIT')}) or "
                f"--hf-split SPLIT (saerl ingest) (got {hf_split!r})"
            )
        ds = ds[hf_split]
    return ds


def detect_format(path: Path) -> str:
    """'jsonl' | 'parquet' | 'csv' by suffix, 'hf' for a save_to_disk folder; IngestError otherwise."""
    if path.is_dir():
        if any((path / m).exists() for m in HF_MARKERS):
            return "hf"
        raise IngestError(f"{path} is a folder but not a HF save_to_disk folder (none of {HF_MARKERS} in it). Fix: "
                          "name the data file inside it (.jsonl, .json, .csv or .parquet), or save the dataset with "
                          "datasets' save_to_disk(DIR) and name DIR")
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(
            f"cannot tell the format of {path.name} from its suffix; known suffixes "
            f"{sorted(SUFFIX_FORMATS)}; set --format jsonl|parquet|csv|hf (saerl ingest) or "
            f"data.format=jsonl|parquet|csv|hf (config; a held-out set's own: {HELD_OUT_FIX % ('format', 'F')})"
        )
    return fmt


def _check_encoding(path: Path) -> None:
    """IngestError for a text file that starts with a UTF-16/32 byte-order mark, or that is UTF-16 without one (see
    _utf16_without_bom): read as UTF-8 it would be garbage or 'no rows'; a UTF-8 BOM is fine."""
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    for bom, name in OTHER_BOMS.items():
        if head.startswith(bom):
            raise IngestError(f"data file {path} is {name}-encoded (byte-order mark {bom!r}); save it as "
                              f"UTF-8 (e.g. iconv -f {name} -t UTF-8 IN > OUT) and ingest again")
    if (name := _utf16_without_bom(head)) is not None:
        raise IngestError(f"data file {path} looks {name}-encoded without a byte-order mark (NUL in every other byte "
                          f"of its start); save it as UTF-8 (e.g. iconv -f {name} -t UTF-8 IN > OUT) and ingest again")


def _utf16_without_bom(head: bytes) -> str | None:
    """'UTF-16LE' or 'UTF-16BE' when at least UTF16_NUL_SHARE of the bytes at odd (LE) or even (BE) offsets of a file's
    first bytes are NUL, as in UTF-16 text of mostly ASCII characters; else None. in: the first bytes; out: the name."""
    for name, offset in (("UTF-16LE", 1), ("UTF-16BE", 0)):
        half = head[offset::2]
        if len(half) > 1 and half.count(0) >= UTF16_NUL_SHARE * len(half):
            return name
    return None


def _check_readable(path: Path, fmt: str) -> None:
    """Refuse a data file that cannot be read as text of its format before reading it: an empty file, and for
    jsonl / csv an encoding other than UTF-8 (_check_encoding). in: path, format; raises IngestError."""
    if path.is_file() and path.stat().st_size == 0:
        raise IngestError(f"data file {path} is empty (0 bytes)")
    if path.is_file() and fmt in ("jsonl", "csv"):
        _check_encoding(path)


def load_table(path: Path, fmt: str = "auto", hf_split: str | None = None) -> LoadedTable:
    """Read a data set with its source row numbers and read-time issues (broken JSON lines, bad bytes)."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"data file {path} does not exist (check data.path)")
    fmt = detect_format(path) if fmt == "auto" else fmt
    _check_readable(path, fmt)
    try:
        if fmt == "jsonl":
            array = path.suffix.lower() == ".json" and _is_json_array(path)
            table = _read_json_array(path) if array else _read_jsonl(path)
        elif fmt == "csv":
            table = _read_csv(path)
        elif fmt in ("parquet", "hf"):
            frame = pl.read_parquet(path, glob=False) if fmt == "parquet" else _read_hf(path, hf_split)
            table = LoadedTable(frame, list(range(frame.height)), [], frame.height)
        else:
            raise IngestError(f"unknown data format {fmt!r}; use auto, jsonl, parquet, csv or hf")
    except (OSError, pl.exceptions.PolarsError, ValueError) as e:
        if isinstance(e, IngestError):
            raise
        try:
            guess = detect_format(path)
        except IngestError:  # no telling suffix: no hint
            guess = fmt
        hint = (f" (it looks like {guess}: set data.format={guess} or --format {guess}, or auto; a held-out set's "
                f"own: {HELD_OUT_FIX % ('format', guess)})" if guess != fmt else "")
        raise IngestError(f"cannot read {path} as {fmt}{hint}: {type(e).__name__}: {e}") from e
    if table.n_source_rows == 0:
        raise IngestError(f"data file {path} has no rows")
    return table


def held_out_format(path: Path, data_format: str) -> str:
    """The format a held-out file is read as when its eval.sets entry names none: 'auto' (by its suffix, or a HF
    folder) where the suffix names a format (SUFFIX_FORMATS) or the path is a folder, not the training file's
    data.format (a jsonl held-out set beside a training file whose format is named was read as that format);
    else data.format, as before. in: the held-out path, data.format; out: the format to read it as."""
    return "auto" if path.is_dir() or path.suffix.lower() in SUFFIX_FORMATS else data_format


def hf_splits(path: Path) -> list[str] | None:
    """The splits of a HF save_to_disk folder holding a DatasetDict (its HF_SPLITS_FILE), or None for one holding a
    single Dataset or anything else. in: a path; out: the split names or None."""
    listing = path / HF_SPLITS_FILE
    return [str(s) for s in json.loads(listing.read_text(encoding="utf-8"))["splits"]] if listing.is_file() else None


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths are one data file: the same file once resolved (a link, a relative path), or two files of
    the same bytes (a copy: same size, then same sha256, each file read once per process while it stays as it was:
    the plan and every held-out variant ask). in: two paths; out: bool (False unless both are files)."""
    from saerl.artifacts import remembered_sha256

    if not (a.is_file() and b.is_file()):
        return False
    return a.resolve() == b.resolve() or (a.stat().st_size == b.stat().st_size
                                          and remembered_sha256(a) == remembered_sha256(b))


def refuse_training_split(data: DataConfig, held: DataConfig, path: Path) -> None:
    """Refuse a held-out set that is the training data: data.path's file itself (data.source file; the same path or
    the same bytes: :func:`same_file`), or its HF folder read as the split training reads (a split given, or a
    DatasetDict's only one; a single Dataset folder has none, so every row is a training prompt). RL trains on those
    prompts, so its 'held-out' accuracy measured recall (the evaluate stage only noted the overlap, and the set
    counted in the mean of the sets). Another file or folder, or another split of this one, passes; a split left
    ambiguous is refused by the read itself. in: the data config, the held-out set's (config.held_out_mapping), its
    path; raises IngestError naming the file or split and the fix (the caller names the eval.sets entry)."""
    train = Path(data.path).expanduser() if data.source == "file" and data.path else None
    if train is not None and same_file(train, path):
        copy = "" if train.resolve() == path.resolve() else ", a copy of it"
        raise IngestError(f"{path} is the training data's file (data.path {train}{copy}): "
                          "RL trains on every prompt of it, so accuracy on it would measure recall; give the held-out "
                          "set a file of its own whose problems the training file lacks (split the file into a "
                          "training part for data.path and a held-out part for the set), or drop the set")
    if train is None or not path.is_dir() or not train.is_dir() or train.resolve() != path.resolve():
        return
    splits = hf_splits(path)
    if splits is None:
        raise IngestError(f"{path} is the training data's folder (data.path), a single Dataset without splits: every "
                          "row of it is a training prompt, so accuracy on it would measure recall; give the held-out "
                          "set a file or folder of its own")

    def read(split: str | None) -> str | None:
        return splits[0] if split is None and len(splits) == 1 else split

    if read(held.hf_split) is not None and read(held.hf_split) == read(data.hf_split):
        others = [s for s in splits if s != read(data.hf_split)]
        fix = (f"read another of its splits {others}: {HELD_OUT_FIX % ('hf_split', others[0])}" if others else
               "it has no other split: give the held-out set a file or folder of its own")
        raise IngestError(f"{path} is the training data's DatasetDict folder (data.path), read as the training split "
                          f"'{read(data.hf_split)}': RL trains on its prompts, so accuracy on it would measure "
                          f"recall; {fix}")


# ------------------------------------------------------------------------------------------- mapping rows

_ABSENT = object()  # _lookup's answer for a field a row does not have (a null is there: None)


def template_fields(template_or_field: str) -> list[str]:
    """Field names a prompt spec reads: the {placeholders} of a template (a dotted path into a struct allowed:
    '{extra_info.question}'), else the spec itself."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template_or_field) if name is not None]
    except ValueError:  # a lone brace: not a template, a (strange) field name
        return [template_or_field]
    bad = [n for n in names if not n or n.isdigit() or "[" in n or not all(n.split("."))]
    if bad:
        raise IngestError(
            f"prompt template {template_or_field!r} has a placeholder that is not a plain field name "
            f"({bad[0]!r}); name the fields, e.g. '{{body}} {{question}}' (a nested field: "
            "'{extra_info.question}'; a literal brace is written twice: '\\boxed{{}}')"
        )
    return list(dict.fromkeys(names)) or [template_or_field]


@functools.lru_cache(maxsize=64)
def _template_fields(template_or_field: str) -> tuple[str, ...]:
    """template_fields, parsed once per spec (ingest asks for every row)."""
    return tuple(template_fields(template_or_field))


def _lookup(rec: dict[str, Any], name: str) -> Any:
    """The value field `name` names in one row: the column `name`, else, for a dotted name, the value at that
    path through nested structs ('reward_model.ground_truth'; a key holding dots is tried whole first);
    _ABSENT when the row has no such field."""
    if name in rec:
        return rec[name]
    for i, ch in enumerate(name):
        if ch == "." and isinstance(inner := rec.get(name[:i]), dict):
            got = _lookup(inner, name[i + 1 :])
            if got is not _ABSENT:
                return got
    return _ABSENT


def field_value(rec: dict[str, Any], name: str) -> Any:
    """The value of mapped field `name` (a column or dotted path, see _lookup) in one row; None if absent."""
    got = _lookup(rec, name)
    return None if got is _ABSENT else got


def _dict_paths(value: dict[str, Any], prefix: str = "", depth: int = 0) -> Iterator[str]:
    """Every key of a row (or struct) as a field name, with a dotted path for each key of a nested struct,
    down to MAX_NESTING levels (lists are not entered)."""
    for key, inner in value.items():
        yield prefix + str(key)
        if isinstance(inner, dict) and depth + 1 < MAX_NESTING:
            yield from _dict_paths(inner, f"{prefix}{key}.", depth + 1)


def _schema_paths(schema: pl.Schema | dict[str, pl.DataType]) -> list[str]:
    """The dotted paths into a schema's struct columns ('reward_model.ground_truth'), MAX_NESTING deep."""
    paths: list[str] = []

    def walk(fields: list[tuple[str, pl.DataType]], prefix: str, depth: int) -> None:
        for name, dtype in fields:
            if prefix:
                paths.append(prefix + name)
            if isinstance(dtype, pl.Struct) and depth < MAX_NESTING:
                walk([(f.name, f.dtype) for f in dtype.fields], f"{prefix}{name}.", depth + 1)

    walk(list(schema.items()), "", 0)
    return paths


def is_missing(value: Any) -> bool:
    """True for an absent cell: None, a NaN/inf float (pandas and JSON writers store missing text as NaN), or
    the text 'NaN' (a NaN in a mixed-type column of load_table's frame, see _column)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    return value is None or (isinstance(value, str) and value in NAN_TEXTS)


def is_blank(value: Any) -> bool:
    """True for text that is empty or whitespace only (a cell that holds no words, though it is not null)."""
    return isinstance(value, str) and not value.strip()


def _kind(value: Any) -> str:
    """What a non-text value is, in words: 'a number', 'a boolean', 'a list', 'a struct', ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a struct"
    return f"a {type(value).__name__}"


def _is_chat(value: Any) -> bool:
    """True for a chat message list: a non-empty list of {role, content} dicts (trl's conversational form)."""
    return (isinstance(value, list | tuple) and bool(value)
            and all(isinstance(m, dict) and CHAT_ROLE in m and CHAT_CONTENT in m for m in value))


def _text_fix(name: str, value: Any, single: bool) -> str:
    """What to map instead of prompt field `name` holding non-text `value` (a 'non-text prompt' detail)."""
    where = "map data.prompt (--prompt) to a text field or a template" if single else \
        f"use a text field in the prompt template in place of {{{name}}}"
    if isinstance(value, dict):
        text_keys = [k for k, v in value.items() if isinstance(v, str)]
        nested = f"{name}.{text_keys[0]}" if text_keys else f"{name}.FIELD"
        shown = list(value)[:MAX_LISTED_FIELDS]
        path = f"data.prompt={nested}" if single else f"{{{nested}}} in the template"
        return (f"field '{name}' holds a struct with fields {shown}; name its text field with a dotted path "
                f"({path}), or {where}")
    return f"field '{name}' holds {_kind(value)}; {where}"


def _chat_text(name: str, messages: list[Any], chat: ChatCounts) -> str:
    """The one user message of a chat message list, counted in `chat` with its other turns (system, assistant)
    by role; NonTextError when it has no user turn, more than one, or one whose content is not text."""
    users = [m for m in messages if m[CHAT_ROLE] == CHAT_USER]
    if len(users) != 1:
        raise NonTextError(name, messages, (
            f"field '{name}' holds a chat with {len(users)} user turns; saerl reads a chat prompt as its one "
            "user message: keep one user turn per row, or map data.prompt (--prompt) to a text field or a "
            "template"))
    content = users[0][CHAT_CONTENT]
    if not isinstance(content, str):
        raise NonTextError(name, messages, (
            f"field '{name}' holds a chat whose user message content is "
            f"{'null' if content is None else _kind(content)}, not text; map "
            "data.prompt (--prompt) to a text field or a template"))
    chat.prompts = 1
    chat.dropped.update(str(m[CHAT_ROLE]) for m in messages if m[CHAT_ROLE] != CHAT_USER)
    return content


def _prompt_value(name: str, value: Any, single: bool, chat: ChatCounts) -> Any:
    """What a prompt field puts in the prompt: text as is, a chat message list as its user message (see
    _chat_text); in a template also a number or other scalar as itself (formatted as written: 3, 2.5, a big
    int's digits). NonTextError for anything else: a number or boolean as the whole prompt, a list, a struct.
    """
    if isinstance(value, str):
        return value
    if _is_chat(value):
        return _chat_text(name, value, chat)
    if isinstance(value, list | tuple | dict) or (single and not isinstance(value, str)):
        raise NonTextError(name, value, _text_fix(name, value, single))
    return value


def prompt_parts(template_or_field: str, row: dict[str, Any]) -> tuple[str, ChatCounts]:
    """The prompt text of one row and whether it was read from a chat message list (ChatCounts.prompts 1, else 0)
    with the turns left out of it, by role. The text is a template over the row's fields, or one field (a field may
    be a dotted path into a struct); a field holding a chat message list gives its one user message (other turns are
    left out). MissingFieldError naming the field if it is absent, null or NaN, or, for a template's field, empty or
    whitespace only (the template would render without it: '{idx}: {question}' as '1: '; one prompt field left
    empty is an empty prompt, which _check_row reports as such); NonTextError when the field holds no text
    (see _prompt_value); TemplateError naming the field when a format spec in the template does not fit its value
    ('{n:d}' on text)."""
    names = _template_fields(template_or_field)
    single = names == (template_or_field,)
    for name in names:
        value = field_value(row, name)
        if is_missing(value) or (not single and is_blank(value)):
            raise MissingFieldError(name)
    if single and isinstance(value, str):  # the common case, first
        return value, _NO_CHAT
    chat = ChatCounts()
    values = {n: _prompt_value(n, field_value(row, n), single, chat) for n in names}
    if single:
        return values[template_or_field], chat
    parts: list[str] = []
    for literal, name, spec, conversion in string.Formatter().parse(template_or_field):
        parts.append(literal)
        if name is not None:
            value = values[name]
            try:
                if conversion:
                    value = {"r": repr, "s": str, "a": ascii}[conversion](value)
                parts.append(format(value, spec or ""))
            except (ValueError, TypeError, KeyError) as e:
                raise TemplateError(name, values[name], f"prompt template {template_or_field!r} cannot format field "
                                    f"{name!r} of this row: {e} (write each field as a plain {{name}}, without a "
                                    "format spec or conversion after it)") from e
    return "".join(parts), chat


def normalize_prompt(text: str) -> str:
    """Whitespace collapsed and stripped: the form content-hash ids are computed on (see duplicate_key)."""
    return re.sub(r"\s+", " ", text).strip()


FORMAT_CATEGORY = "Cf"  # Unicode's format characters: zero-width spaces and joiners, bidi marks, soft hyphens, BOM


def without_format_characters(text: str) -> str:
    """`text` without Unicode format characters (category Cf: U+200B, U+2060, U+200F, U+202E, U+00AD, U+FEFF), which
    show as nothing. in: text; out: text."""
    return "".join(c for c in text if unicodedata.category(c) != FORMAT_CATEGORY)


def duplicate_key(text: str) -> str:
    """The form two prompts are one row in at ingest (a duplicate prompt): format characters dropped (see
    without_format_characters), Unicode NFC (a composed 'é' and 'e' with a combining accent are one), whitespace
    collapsed and stripped (normalize_prompt). The prompt is kept as written, and its content-hash id is computed on
    normalize_prompt alone, as before. in: prompt text; out: its key."""
    return normalize_prompt(unicodedata.normalize("NFC", without_format_characters(text)))


THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # a comma between digit groups: 1,000 -> 1000
DECIMAL_ZEROS = re.compile(r"(\.\d*?)0+(?!\d)")  # a decimal's trailing zeros: 2.50 -> 2.5, .50 -> .5, 3.0 -> 3.
# prose punctuation, read as a space by canonical_prompt; a '.' before a digit, a '!' after a digit or bracket (5!),
# a "'" after a letter or bracket (f'(2)) and a ':' between digits (3:4) are maths and stay
PROSE_PUNCTUATION = re.compile(r"""[,;?"`\u2018\u2019\u201c\u201d\u2026\u3001\u3002\u300a-\u300f\u3010\u3011\u060c\u061f]|"""
                               r"""\.(?!\d)|(?<![\w)\]}])!|(?<![\w)\]}])'|(?<!\d):|:(?!\d)""")
# superscript digits and signs (a run of them): canonical_prompt writes them as '^' and their plain form before NFKC,
# which would make 2³ the number 23 and x² the name x2
SUPERSCRIPTS = re.compile("[\u00b2\u00b3\u00b9\u2070\u2071\u2074-\u207f]+")
# dashes written for a minus sign (U+2212 minus, U+2012 figure dash, U+2013 en dash, U+2014 em dash, U+FE63 small
# hyphen-minus): canonical_prompt reads each as '-'
MINUS_SIGNS = re.compile("[\u2212\u2012-\u2014\ufe63]")
SIGN_SPACE = re.compile(r" (?=\W)|(?<=\W) ")  # a space beside a sign or bracket: 3 + 4 -> 3+4 (never 1 2 -> 12)


def canonical_prompt(text: str) -> str:
    """The form two prompts are the same problem in, for the overlap checks (held-out sets against the training
    data, and against each other): superscripts written as powers (2³ -> 2^3, never the 23 NFKC makes of it),
    Unicode compatibility forms folded (NFKC: full-width forms, ligatures), format characters (category Cf: zero-width
    space, word joiner, soft hyphen, BOM, direction marks) dropped, a dash written for a minus sign read as '-'
    (MINUS_SIGNS), every decimal digit as its ASCII digit (Arabic-Indic ٣ = 3), case folded, thousands separators
    and a decimal's trailing zeros dropped (1,000 = 1000, 2.50 = 2.5, 3.0 = 3), prose punctuation (, ; ? . quotes, the
    CJK and Arabic marks, and ! ' : where they are no maths: PROSE_PUNCTUATION) read as a space, whitespace collapsed
    and a space beside a sign dropped (7 ? = 7?, 3 + 4 = 3+4). Mathematical signs and brackets stay (3 + 4 and 3 - 4
    are two problems), and a space between two words or numbers. Two prompts match when these forms are equal: a
    reworded problem, another template around it or swapped operands are not caught. in: prompt text; out: its
    canonical form."""
    import unicodedata

    text = SUPERSCRIPTS.sub(lambda m: "^" + unicodedata.normalize("NFKC", m.group()), text)
    text = "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf")
    text = re.sub(r"\d", lambda m: str(unicodedata.decimal(m.group())), MINUS_SIGNS.sub("-", text)).casefold()
    text = DECIMAL_ZEROS.sub(r"\1", THOUSANDS.sub("", text))
    return SIGN_SPACE.sub("", normalize_prompt(PROSE_PUNCTUATION.sub(" ", text)))


def _cell_text(value: Any) -> str:
    """A cell as text: text as is, a list or struct as JSON (the same text from every file format), else str()
    (27.0 stays '27.0'; normalize_answer makes it '27')."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str) if isinstance(value, list | tuple | dict) else str(value)


def _answer_text(value: Any) -> str:
    """A gold answer cell as text (see _cell_text)."""
    return _cell_text(value)


def _struct_fix(option: str, name: str, value: dict[str, Any]) -> str:
    """What to map instead of field `name` (of mapping option `option`) holding a struct: a dotted path to the
    nested field most likely meant (a known gold key, else the first scalar one), in CLI and config form."""
    keys = [str(k) for k in value]
    scalar = [k for k, v in value.items() if not isinstance(v, list | tuple | dict)]
    fallback = scalar[0] if scalar else keys[0] if keys else "FIELD"
    guess = next((k for k in GOLD_KEY_GUESSES if k in value), fallback)
    cli = f"--{option} {name}.{guess} (saerl ingest) or " if option in INGEST_OPTIONS else ""
    return (f"field '{name}' holds a struct with fields {keys[:MAX_LISTED_FIELDS]}: name the nested field "
            f"with a dotted path, e.g. {cli}data.{option}={name}.{guess} (config)")


def _label(kind: str, value: Any) -> float | str | None:
    """A topic or defect kind as text (None when missing: null or NaN, see is_missing), a difficulty as a finite
    float (MATH's "Level 5" reads as 5.0; a boolean is invalid), a quality as a float in [0, 1]; ValueError if
    invalid."""
    if value is None:
        return None
    if kind in ("topic", "defect"):
        if is_missing(value):
            return None
        return _cell_text(value)
    if kind == "labelled":
        return _label("quality", value) == 1.0
    if kind == "quality" and isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return 1.0 if value.strip().lower() in TRUE_WORDS else 0.0
    if kind == "difficulty" and isinstance(value, bool):  # float(True) is 1.0, but a yes/no is no difficulty
        raise ValueError(f"difficulty {value!r} is a boolean, not a number")
    level = _LEVEL_TEXT.fullmatch(value) if kind == "difficulty" and isinstance(value, str) else None
    number = float(level.group(1) if level else value)  # ValueError/TypeError for non-numeric text
    if not math.isfinite(number) or (kind == "quality" and not 0.0 <= number <= 1.0):
        raise ValueError(
            f"{kind} {value!r} is not a finite number" + (" in [0, 1]" if kind == "quality" else "")
        )
    return number


def _check_separator(option: str, name: str, columns: list[str]) -> None:
    """IngestError when a mapped field is missing and the table has a single column whose name holds another
    separator (';' or a tab): a csv file separated by it, read as one column. Names the separator and how to
    convert the file to the comma-separated csv saerl reads (there is no option to read another separator).
    in: the option and field not found, the table's columns; out: None when the header is not such a line."""
    if len(columns) != 1:
        return
    found = [sep for sep in CSV_OTHER_SEPARATORS if sep in columns[0]]
    if not found:
        return
    sep, shown = found[0], CSV_OTHER_SEPARATORS[found[0]]
    raise IngestError(
        f"{option} field '{name}' is not in the data. Available columns: {columns}: the header is one column, "
        f"split by {shown}. saerl reads comma-separated csv (a tab- or semicolon-separated file reads as one "
        f"column). Convert the file, e.g. python -c \"import csv, sys; csv.writer(sys.stdout).writerows(csv.reader(sys.stdin, "
        f"delimiter={sep!r}))\" < IN.csv > OUT.csv, or save it as jsonl"
    )


def _mapped_fields(cfg: DataConfig) -> list[tuple[str, str]]:
    """(option, field) of every mapped field, in the order they are checked: prompt template fields, answer,
    id, then labels (IngestError for a template placeholder that is not a field name)."""
    wanted = [("prompt", f) for f in template_fields(cfg.prompt)] + [("answer", cfg.answer)]
    return wanted + [(k, getattr(cfg, k)) for k in ("id", *LABEL_KINDS) if getattr(cfg, k)]


def _cli_fix(option: str, fix: str) -> str:
    """Where a fix `data.OPTION=fix` is given: the config, an override of saerl run, and `saerl ingest --OPTION fix`
    where saerl ingest has that option. in: option, the value to give; out: the parenthesis ending a message."""
    cli = f"; `saerl ingest --{option} {fix}`" if option in INGEST_OPTIONS else ""  # saerl run has no such flag
    return f"(config, or an override of saerl run{cli})"


def _template_without(template: str, name: str) -> str:
    """`template` with its placeholders of field `name` left out (each kept as '{QUESTION_FIELD}' where no other field
    would be left), surrounding whitespace stripped: '{question} {answer}' -> '{question}'. in: a template that
    parses, a field it reads; out: the template."""
    others = [n for n in template_fields(template) if n != name]
    parts: list[str] = []
    for literal, field_name, spec, conversion in string.Formatter().parse(template):
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if field_name is None:
            continue
        if field_name == name:
            parts.append("" if others else "{QUESTION_FIELD}")
        else:
            parts.append("{" + field_name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return "".join(parts).strip()


def _refuse_answer_in_prompt(cfg: DataConfig, held_out: bool = False) -> None:
    """IngestError when data.prompt reads the answer field (data.answer is the prompt's field, or one of its
    template's fields): every prompt would show the policy its own gold answer, and rewards, difficulty and the
    comparison would mean nothing. Names data.prompt, the field and the fix (the template without that field; a map
    of the question's field); for a held-out set's mapping (`held_out`: the data mapping with the set's own fields)
    also the set's own prompt. Checks the mapping only, not the rows' text. in: mapping, flag; out: None when they
    differ."""
    fields = template_fields(cfg.prompt)
    if cfg.answer not in fields:
        return
    own = " (or a held-out set's own prompt and answer)" if held_out else ""
    if fields == [cfg.prompt]:
        raise IngestError(
            f"data.prompt and data.answer{own} both name field '{cfg.answer}': every prompt would be its own gold "
            f"answer. Fix: map data.prompt to the field that holds the question, data.prompt=FIELD "
            f"{_cli_fix('prompt', 'FIELD')}, and data.answer to the one that holds the gold answer"
            + (f" (a held-out set's own: {HELD_OUT_FIX % ('prompt', 'FIELD')})." if held_out else ".")
        )
    fixed = _template_without(cfg.prompt, cfg.answer)
    raise IngestError(
        f"data.prompt{own} {cfg.prompt!r} uses the answer field '{cfg.answer}' (data.answer): every prompt would "
        f"show the policy its own gold answer. Fix: drop {{{cfg.answer}}} from the template, data.prompt={fixed!r} "
        f"{_cli_fix('prompt', repr(fixed))}"
        + (f" (a held-out set's own: {HELD_OUT_FIX % ('prompt', repr(fixed))})." if held_out else ".")
    )


def _named_like(name: str, known: tuple[str, ...]) -> tuple[int, int] | None:
    """How field `name` is named like one of `known` (PROMPT_NAMES, ANSWER_NAMES): (0 when its last dotted part is
    a known name, 1 when only a word of it is; the known name's rank), case and a plural 's' aside ('Question',
    'extra_info.question', 'problem_text', 'answers', 'GroundTruth'); None when it is not, or is named like an id
    ('question_id'). in: field name, known names; out: the sort key, or None."""
    last = _CAMEL_HUMP.sub("_", name.rsplit(".", 1)[-1]).lower()
    words = _NAME_WORD.findall(last)
    if any(w in ID_NAMES for w in words):
        return None
    whole = "_".join(words)
    for exact, names in ((0, [whole, whole.removesuffix("s")]), (1, [*words, *(w.removesuffix("s") for w in words)])):
        ranks = [known.index(n) for n in names if n in known]
        if ranks:
            return exact, min(ranks)
    return None


def _similarity(name: str, column: str) -> float:
    """How alike a missing field's name and a column are (difflib ratio, case aside): the whole names, or their last
    dotted parts ('ground_truth' and 'reward_model.ground_truth' are alike). in: two names; out: 0 to 1."""
    def ratio(a: str, b: str) -> float:
        return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()
    return max(ratio(name, column), ratio(name.rsplit(".", 1)[-1], column.rsplit(".", 1)[-1]))


def _suggest(option: str, name: str, candidates: list[str]) -> tuple[str | None, str]:
    """The field to map in place of missing field `name` of `option`, from `candidates` (fields no other option
    reads), and the sentence saying why. For the prompt and the answer: a column named like the other kind is never
    offered (PROMPT_NAMES, ANSWER_NAMES); a typo of `name` (TYPO_CUTOFF) comes first, then a column named like the
    option's kind, else none, said so. For an id or a label: the closest column (CLOSE_CUTOFF), else none.
    in: option, field name, candidates; out: (field or None, sentence)."""
    if option not in ("prompt", "answer"):
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=CLOSE_CUTOFF)
        return (close[0], f" Closest: '{close[0]}'.") if close else (None, "")
    known = PROMPT_NAMES if option == "prompt" else ANSWER_NAMES
    if option == "prompt":  # a column named like an answer (also 'question_answer') is never the prompt
        free = [c for c in candidates if _named_like(c, ANSWER_NAMES) is None]
    else:  # one named like a prompt is the answer only when it is named like an answer too
        free = [c for c in candidates if _named_like(c, PROMPT_NAMES) is None or _named_like(c, ANSWER_NAMES)]
    typos = [c for c in free if _similarity(name, c) >= TYPO_CUTOFF]
    if typos:
        best = max(typos, key=lambda c: _similarity(name, c))
        return best, f" Closest: '{best}'."
    liked = sorted((key, i, c) for i, c in enumerate(free) if (key := _named_like(c, known)) is not None)
    what, holds = ("a prompt", "the question") if option == "prompt" else ("a gold answer", "the gold answer")
    if liked:
        best = liked[0][2]
        return best, f" Likely: '{best}' (named like {what} column)."
    return None, (f" No column looks like {what} (none is named like {', '.join(known)}, or like '{name}'): map "
                  f"data.{option} to the field that holds {holds}.")


def _missing_field_error(cfg: DataConfig, option: str, name: str, columns: list[str],
                         nested: list[str]) -> FieldNotFoundError:
    """The IngestError for mapped field `name` absent from the data: names it, lists the columns (and nested
    fields a dotted path can name), suggests a field that no other option maps (see _suggest: the answer's field,
    or a column named like an answer, is never the prompt's; a template's other fields are not suggested for it)
    and the fix in CLI and config form. A prompt that is no field but a template with an unmatched brace raises
    its own IngestError (see _check_braces)."""
    if option == "prompt" and name == cfg.prompt:
        _check_braces(name, columns)
    _check_separator(option, name, columns)
    taken = {field for other, field in _mapped_fields(cfg) if other != option or field != name}  # read elsewhere
    close, hint = _suggest(option, name, [c for c in [*columns, *nested] if c not in taken])
    fix = close or "FIELD"
    if option == "prompt" and cfg.prompt != name:  # a template: show it with the placeholder fixed
        fix = repr(cfg.prompt.replace(f"{{{name}}}", f"{{{fix}}}"))
    more = f" (and {len(nested) - MAX_LISTED_FIELDS} more)" if len(nested) > MAX_LISTED_FIELDS else ""
    listed = f"{nested[:MAX_LISTED_FIELDS]}{more}"
    shown = f" Nested fields (name one with a dotted path): {listed}." if nested else ""
    return FieldNotFoundError(
        f"{option} field '{name}' is not in the data. Available columns: {columns}.{shown}{hint} "
        f"Fix: data.{option}={fix} {_cli_fix(option, fix)}.", option
    )


def _brace_fixed(template: str) -> tuple[str, str] | None:
    """The first unmatched brace of `template` and the template with it fixed: an unclosed '{' closed after the
    field name that follows it ('Solve: {question' -> 'Solve: {question}'), a '}' that closes no '{' opened before
    the field name that precedes it ('Solve: question}' -> 'Solve: {question}'), else the brace doubled (a literal
    one: '\\boxed{' -> '\\boxed{{'). in: template; out: ('{' or '}', fixed template), or None when every brace
    is matched."""
    i = 0
    while i < len(template):
        if template.startswith(("{{", "}}"), i):
            i += 2
        elif template[i] == "}":
            word = _FIELD_END.search(template, 0, i)
            at = word.start() if word else i
            return "}", template[:at] + ("{" if word else "}") + template[at:]
        elif template[i] == "{":
            close, reopen = template.find("}", i + 1), template.find("{", i + 1)
            if close != -1 and (reopen == -1 or close < reopen):  # a placeholder: on after it
                i = close + 1
                continue
            word = _FIELD_START.match(template, i + 1)
            at = word.end() if word else i
            return "{", template[:at] + ("}" if word else "{") + template[at:]
        else:
            i += 1
    return None


def _check_braces(template: str, columns: list[str]) -> None:
    """IngestError when data.prompt, not found as a field, is a template with an unmatched brace (it was read as
    one strange field name): names the first such brace and shows the template with every one fixed (see
    _brace_fixed), where that parses. in: data.prompt, the data's columns; out: None when it parses as a
    template."""
    if _parses(template):
        return
    first = _brace_fixed(template)
    fixed = template
    for _ in range(len(template)):  # each step fixes one brace of at most len(template)
        if (step := _brace_fixed(fixed)) is None:
            break
        fixed = step[1]
    fixed = fixed if first is not None and _parses(fixed) else "TEMPLATE"  # a tangle _brace_fixed does not fix
    what = {"{": "an unclosed '{'", "}": "a '}' that closes no '{'"}[first[0]] if first else "an unmatched brace"
    raise IngestError(
        f"data.prompt {template!r} has {what}: no field of the data has that name (Available columns: {columns}), "
        f"and as a template it cannot be read (a field is written in braces, '{{question}}'; a literal brace twice, "
        f"'{{{{'). Fix: data.prompt={fixed!r} "
        f"{_cli_fix('prompt', repr(fixed))}."
    )


def _parses(template: str) -> bool:
    """True when string.Formatter parses `template` (its braces match). in: template; out: bool."""
    try:
        list(string.Formatter().parse(template))
    except ValueError:
        return False
    return True


def _resolve_mapping(cfg: DataConfig, table: LoadedTable, labels_optional: bool,
                     present: frozenset[str] = frozenset()) -> DataConfig:
    """The mapping checked against a table's fields: IngestError (see _missing_field_error) for the first
    mapped field the table lacks; with `labels_optional`, a label field it lacks is dropped from the returned
    mapping instead. in: mapping, table (a whole file, or check_mapping's look at its columns), flag, fields
    known to be in the file though not in the table (check_mapping: found in later rows); out: the mapping."""
    absent = [(option, name) for option, name in _mapped_fields(cfg)
              if name not in present and not table.has_field(name)]
    if labels_optional:
        cfg = cfg.model_copy(update={option: None for option, _ in absent if option in LABEL_KINDS})
        absent = [(option, name) for option, name in absent if option not in LABEL_KINDS]
    if absent:
        raise _missing_field_error(cfg, *absent[0], table.columns, table.nested_fields())
    return cfg


# ----------------------------------------------------------------------------------------------- ingest

def _decode_bytes(row: int, rec: dict[str, Any], issues: list[dict[str, Any]]) -> dict[str, Any]:
    """The record with binary cells (parquet/HF binary columns, and binary values inside struct and list cells)
    decoded as UTF-8; undecodable bytes become U+FFFD and flag the field (its dotted path inside a struct)
    'invalid UTF-8'."""
    if not any(isinstance(v, bytes | dict | list) for v in rec.values()):
        return rec
    return {name: _decoded(row, str(name), value, issues) for name, value in rec.items()}


def _decoded(row: int, name: str, value: Any, issues: list[dict[str, Any]]) -> Any:
    """One cell, or a value inside one, with its bytes decoded as UTF-8 (see _decode_bytes); `name` is its field
    or dotted path. in: row number, name, value, the issues list to append to; out: the value."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("utf-8", errors="replace")
            issues.append(_issue(row, name, INVALID_UTF8, text))
            return text
    if isinstance(value, dict):
        return {k: _decoded(row, f"{name}.{k}", v, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(row, name, v, issues) for v in value]
    return value


def _check_row(cfg: DataConfig, row: int, rec: dict[str, Any], issues: list[dict[str, Any]],
               chats: ChatCounts) -> dict | None:
    """One source row as a candidate {row, prompt, answer_raw, id, labels...}, or None (with the reason
    appended to `issues`) when its prompt or a required field is missing (null/NaN), its prompt holds no text,
    is empty or over-long, or its answer is empty or a struct. A prompt read from a chat is counted in
    `chats`."""
    rec = _decode_bytes(row, rec, issues)
    prompt, chat, issue = _row_prompt(cfg.prompt, row, rec)
    if issue is None:
        if chat.prompts:
            chats.prompts += chat.prompts
            chats.dropped.update(chat.dropped)
        issue = _prompt_issue(row, prompt, cfg.max_prompt_chars)
    if issue is not None:
        issues.append(issue)
        return None
    answer, ident = field_value(rec, cfg.answer), field_value(rec, cfg.id) if cfg.id else None
    if isinstance(answer, list | tuple) and len(answer) == 1:  # ["5"]: one answer kept in a list (HF datasets)
        answer = answer[0]
    issue = _missing_gold_issue(cfg, row, answer, ident) or _answer_shape_issue(row, cfg.answer, answer)
    if issue is not None:
        issues.append(issue)
        return None
    item = {"row": row, "prompt": prompt, "answer_raw": _answer_text(answer)}
    item["id"] = _cell_text(ident) if cfg.id else None
    labels, label_issues = _row_labels(cfg, row, rec)
    item.update(labels)
    issues.extend(label_issues)
    return item


def _row_prompt(template_or_field: str, row: int, rec: dict[str, Any]) -> tuple[str, ChatCounts, dict | None]:
    """A row's prompt read by prompt_parts, or the issue rejecting the row when it cannot be (a missing field, a
    field holding no text, a template the row's value breaks). in: the mapping's prompt, the row number, the
    decoded row; out: (prompt text, its chat counts, None) or ("", no chat counts, the issue)."""
    try:
        prompt, chat = prompt_parts(template_or_field, rec)
    except MissingFieldError as e:
        return "", ChatCounts(), _issue(row, e.field, MISSING_FIELD, "")
    except NonTextError as e:
        return "", ChatCounts(), _issue(row, e.field, NON_TEXT_PROMPT, e.value, e.detail)
    except TemplateError as e:  # this row's value only: the other rows are formatted and kept
        return "", ChatCounts(), _issue(row, e.field, TEMPLATE_ERROR, e.value, e.detail)
    return prompt, chat, None


def _prompt_issue(row: int, prompt: str, max_chars: int) -> dict[str, Any] | None:
    """The issue rejecting a row for its prompt text: empty (whitespace or zero-width characters only) or over
    `max_chars` (data.max_prompt_chars). in: row number, prompt, the cap; out: the issue, or None when it is fine."""
    if not without_format_characters(prompt).strip():  # whitespace or zero-width characters only
        return _issue(row, "prompt", EMPTY_PROMPT, prompt)
    if len(prompt) > max_chars:
        return _issue(row, "prompt", OVERLONG_PROMPT, prompt)
    return None


def _missing_gold_issue(cfg: DataConfig, row: int, answer: Any, ident: Any) -> dict[str, Any] | None:
    """The issue rejecting a row whose answer or (mapped) id is missing: null, NaN or infinite, or an id with no
    text. in: mapping, row number, the answer cell (a one-item list unwrapped), the id cell (None unmapped); out:
    the issue, or None."""
    for name, value in ((cfg.answer, answer), (cfg.id, ident)):
        if name and is_missing(value):
            infinite = isinstance(value, float) and math.isinf(value)  # NaN is how pandas writes a missing cell
            return _issue(row, name, MISSING_FIELD, str(value) if infinite else "",
                          f"not a finite number ({value})" if infinite else None)
    if cfg.id and not _cell_text(ident).strip():  # an empty id is none (a content hash stood in, unsaid)
        return _issue(row, cfg.id, MISSING_FIELD, ident)
    return None


def _answer_shape_issue(row: int, field_name: str, answer: Any) -> dict[str, Any] | None:
    """The issue rejecting a row whose answer is not one final answer: a struct, an empty or many-valued list, or
    blank text. in: row number, the answer field, its cell (present; a one-item list unwrapped); out: the issue,
    or None."""
    if isinstance(answer, dict):
        return _issue(row, field_name, STRUCT_ANSWER, answer, _struct_fix("answer", field_name, answer))
    if isinstance(answer, list | tuple) and not answer:
        return _issue(row, field_name, EMPTY_ANSWER, answer)
    if isinstance(answer, list | tuple):
        return _issue(row, field_name, LIST_ANSWER, answer, f"field '{field_name}' holds {len(answer)} values: "
                      "a gold is one final answer (a list of two reads as an interval); map one of them, "
                      "or write the answers as one text")
    if is_blank(answer):
        return _issue(row, field_name, EMPTY_ANSWER, answer)
    return None


def _row_labels(cfg: DataConfig, row: int, rec: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A row's mapped labels (LABEL_KINDS order), an invalid one as None with its issue (the row is kept). in:
    mapping, row number, the decoded row; out: ({kind: label}, the issues)."""
    labels: dict[str, Any] = {}
    issues: list[dict[str, Any]] = []
    for kind in LABEL_KINDS:
        name = getattr(cfg, kind)
        if name:
            value = field_value(rec, name)
            try:
                labels[kind] = _label(kind, value)
            except (TypeError, ValueError, OverflowError):
                labels[kind] = None
                issues.append(_issue(row, name, INVALID_LABEL, value, _invalid_label_detail(kind, name, value)))
    return labels, issues


def _invalid_label_detail(kind: str, field_name: str, value: Any) -> str:
    """Why a label cell is invalid and what the field must hold instead (rejected.parquet's detail of an 'invalid
    label' line: it was empty, leaving "hard" beside "invalid label" unexplained). in: the label kind (LABEL_KINDS),
    the field mapped to it, the cell; out: text."""
    shown = (repr(value) if isinstance(value, str) else f"a {type(value).__name__}" if isinstance(value, list | dict)
             else "a yes/no" if isinstance(value, bool) else str(value))
    if kind == "difficulty":
        return (f"the difficulty field '{field_name}' must hold finite numbers (a level: 3, 2.5 or 'Level 3'; higher = "
                f"harder): {shown} is none; map a numeric field, or write text levels as numbers (easy/medium/hard "
                "as 1/2/3)")
    words = "/".join(sorted(TRUE_WORDS | FALSE_WORDS))
    return (f"the {kind} field '{field_name}' must hold a number in [0, 1] or one of {words}: {shown} is neither; "
            "map such a field, or write the labels so")


def _keep(cfg: DataConfig, candidates: list[dict], issues: list[dict[str, Any]],
          progress: bool = False) -> list[dict[str, Any]]:
    """Candidates whose answer normalises (one batch; with `progress`, its bar) and whose prompt and id are first
    seen; others go to `issues` (an answer the verifier did not read with its reason as the detail), a duplicate
    naming the kept row it repeats ('same as row 3: ...'). Adds `answer` (canonical) and fills content-hash ids."""
    normalized = normalize_answers([c["answer_raw"] for c in candidates], cfg.verify_timeout_s, progress=progress)
    unchecked = [c["row"] for c, n in zip(candidates, normalized, strict=True) if n.detail == WORKERS_FAILED]
    if unchecked:  # the environment, not the rows: rejecting them would lose good data as "unparseable"
        raise IngestError(
            f"the answer verifier could not run ({WORKERS_FAILED}): {len(unchecked)} gold answers (rows "
            f"{', '.join(map(str, unchecked[:5]))}{', ...' if len(unchecked) > 5 else ''}) were not checked and no "
            "row was rejected. Check that this Python imports math_verify (python -c 'import math_verify') and "
            "can start subprocesses, then rerun")
    kept: list[dict[str, Any]] = []
    first_row: dict[str, int] = {}
    id_row: dict[str, int] = {}  # each kept id's source row
    for item, norm in zip(candidates, normalized, strict=True):
        key = duplicate_key(item["prompt"])
        item["id"] = item["id"] or hashlib.sha256(normalize_prompt(item["prompt"]).encode()).hexdigest()[:ID_HEX_CHARS]
        if not norm.ok:
            reason = {"timeout": ANSWER_TIMEOUT, "error": ANSWER_CHECK_ERROR}.get(norm.status, UNPARSEABLE_ANSWER)
            issues.append(_issue(item["row"], cfg.answer, reason, item["answer_raw"], norm.detail or None))
        elif key in first_row:
            issues.append(
                _issue(
                    item["row"], "prompt", DUPLICATE_PROMPT, f"same as row {first_row[key]}: {item['prompt']}"
                )
            )
        elif item["id"] in id_row:
            issues.append(_issue(item["row"], cfg.id or "id", DUPLICATE_ID,
                                 f"same as row {id_row[item['id']]}: {item['id']}"))
        else:
            first_row[key] = item["row"]
            id_row[item["id"]] = item["row"]
            kept.append({**item, "answer": norm.text})
    return kept


def ingest(cfg: DataConfig, path: Path, *, labels_optional: bool = False, progress: bool = False) -> IngestResult:
    """Read `path` (its first data.max_rows rows), check each row, normalise answers in one batch (with `progress`,
    runtime.progress, a bar over the verifier's blocks where it takes long), drop duplicates (the first in the file
    stays); the kept rows come back in file order, and are written and read by the stages in id order
    (:func:`in_id_order`: a shuffled copy of a file without duplicate prompts, and not cut by data.max_rows, gives the
    same rows in the same order, so every stage that reads only ingest's rows reuses what the file built). With
    `labels_optional` (a held-out file read with the training data's mapping), a mapped label column the file lacks
    is left out of the result instead of an error: evaluation needs only prompt, answer and id.

    A row is dropped for (first match wins): invalid JSON (also a line nested too deep or with an integer over
    Python's digit limit, or a JSON array element that is not an object), too many fields (a csv row with more
    fields than the header: an unquoted comma), missing field (prompt/answer/id null, NaN or absent; an id,
    and a field a prompt template uses, also when empty or whitespace only), non-text prompt (a prompt field
    holding a number, boolean, list or struct, or a chat message list without exactly one user message, whose
    text is the prompt: other turns are left out and counted in the summary; the detail says what to map
    instead), empty prompt (also whitespace or zero-width characters only), over-long prompt (> cfg.max_prompt_chars), struct answer
    (the answer field holds a struct: the detail names the dotted path to map), list answer (a list of several
    values; one value in a list is read as that value), empty answer ('' or whitespace
    only), unparseable answer (the detail says why the verifier did not read it), answer timeout (normalising,
    which compares the gold once with a number, took over cfg.verify_timeout_s), answer check error (the verifier failed), duplicate prompt (same text
    after whitespace normalisation, Unicode NFC and without zero-width and bidi characters: see duplicate_key; the first
    kept occurrence stays) or duplicate id (both name the row they
    repeat). A bad label (NaN/inf/non-numeric difficulty or quality, quality outside [0, 1]) does NOT drop the
    row: the label becomes null and an 'invalid label' line names the field. Undecodable bytes (and lone
    UTF-16 surrogate escapes in JSON) are replaced by U+FFFD and flagged 'invalid UTF-8' (row kept). The
    summary adds hints when the rejections point at the mapping (see ingest_hints). Raises IngestError when
    the file cannot be read (with the first bad line of a csv), is empty, is UTF-16/32 encoded, has no rows,
    or lacks a mapped field (naming the columns it has; see check_mapping for the same check without reading
    the whole file), and before reading it when the prompt reads the answer field (_refuse_answer_in_prompt)."""
    start = time.perf_counter()
    _refuse_answer_in_prompt(cfg, held_out=labels_optional)
    table = load_table(Path(path), cfg.format, cfg.hf_split)
    if cfg.max_rows is not None and table.n_source_rows > cfg.max_rows:
        table = table.head(cfg.max_rows)
    rows, issues, n_rows = table.rows, list(table.issues), table.n_source_rows
    if rows:  # a file whose every line is broken has no columns to check
        cfg = _resolve_mapping(cfg, table, labels_optional)

    chats = ChatCounts()
    records = zip(rows, table.records(), strict=True)
    checked = (_check_row(cfg, row, rec, issues, chats) for row, rec in records)
    kept = _keep(cfg, [c for c in checked if c is not None], issues, progress)

    labels = [k for k in LABEL_KINDS if getattr(cfg, k)]
    schema = {**KEPT_SCHEMA, **{k: LABEL_TYPES[k] for k in labels}}
    kept_df = pl.DataFrame(kept, schema=schema) if kept else pl.DataFrame(schema=schema)
    kept_df = kept_df.select(list(schema))
    issues.sort(key=lambda i: i["row"])
    rejected_df = (
        pl.DataFrame(issues, schema=REJECTED_SCHEMA) if issues else pl.DataFrame(schema=REJECTED_SCHEMA)
    )
    counts = Counter(i["reason"] for i in issues)
    kept_rows = set(kept_df["row"].to_list())
    # the flags of kept rows: a flagged row also rejected (a duplicate prompt with an invalid label) counts as rejected
    flags = Counter(i["reason"] for i in issues if i["reason"] in FLAG_ONLY and i["row"] in kept_rows)
    summary = {
        "source": str(path),
        "rows": n_rows,
        "kept": kept_df.height,
        "dropped": n_rows - kept_df.height,
        "reasons": {r: c for r, c in counts.most_common() if r not in FLAG_ONLY},
        "flags": dict(flags.most_common()),
        "chat_prompts": chats.prompts,  # prompts read from a chat message list (as its one user message)
        "dropped_turns": dict(chats.dropped.most_common()),
        "seconds": round(time.perf_counter() - start, 3),
        "hints": ingest_hints(cfg, issues, n_rows, kept_df["answer_raw"].to_list()),
    }
    return IngestResult(kept_df, rejected_df, summary)


def in_id_order(result: IngestResult) -> IngestResult:
    """An ingest's result with its kept rows sorted by id (as text: the order saerl.scoring.id_order and
    seeded_subset read rows in; the ids are unique, so the order is total), as every stage reads them: write_ingest
    writes prompts.parquet so, and the held-out sets are read so (saerl.runners.read_held_out). So the same rows in
    another file order give the same prompts.parquet but for its `row` column, the same digest of what each later
    stage reads (saerl.pipeline.rows_digest), the same keys from extraction on, and the same extraction and
    generation batches. What still follows the file: data.max_rows (its first rows), which of two duplicate prompts
    is kept (the first), the `row` column here and in rejected.parquet (the file's 0-based row) and the examples the
    summary's hints quote (the first). in: ingest's result (kept rows in file order); out: a new result, the same
    rejected rows and summary."""
    return IngestResult(result.kept.sort(pl.col("id").cast(pl.String)), result.rejected, result.summary)


def check_mapping(cfg: DataConfig, path: Path, *, labels_optional: bool = False) -> None:
    """Check a mapping against a data file's fields before a run, without reading the whole file: raises the
    IngestError ingest would raise for a mapped field the file lacks (prompt template fields, answer, id, and
    label fields unless `labels_optional`, as ingest reads held-out sets), naming the columns it has; also a prompt
    that reads the answer field (_refuse_answer_in_prompt), an unmatched brace of a prompt template, and the
    file-level errors (missing, empty, unknown format, UTF-16, unreadable). Reads a parquet file's schema, a
    csv file's header, a HF folder's features, and the first HEADER_ROWS rows of a jsonl file; a field not in
    them may start later, so the rest of the file is scanned for its key (only lines holding it are parsed)
    and the columns listed are those of the first rows. A JSON array file is read whole. in: mapping
    (data.format, data.hf_split and data.max_rows are honoured), path; out: None."""
    _refuse_answer_in_prompt(cfg, held_out=labels_optional)
    table, later = _field_view(Path(path), cfg.format, cfg.hf_split, cfg.max_rows,
                               tuple(name for _, name in _mapped_fields(cfg)))
    if table.rows:
        _resolve_mapping(cfg, table, labels_optional, later)


def _field_view(path: Path, fmt_given: str, hf_split: str | None, max_rows: int | None,
                names: tuple[str, ...]) -> tuple[LoadedTable, frozenset[str]]:
    """What a mapping is checked against without reading the whole file where a cheap look suffices: the file's
    header (a parquet schema, a csv header, a HF folder's features, a jsonl file's first HEADER_ROWS rows) and those
    of `names` it lacks that a later jsonl row holds (only lines holding the key are parsed); with no cheap look or
    no good row in it, the whole file read as ingest reads it (capped at data.max_rows) and no later names. in: path,
    the mapping's data.format, data.hf_split and data.max_rows, field names; out: (the table, the names found later);
    raises the file-level IngestError / OSError (missing, empty, unknown format, unreadable)."""
    fmt = detect_format(path) if path.exists() and fmt_given == "auto" else fmt_given
    limit = min(HEADER_ROWS, max_rows or HEADER_ROWS)
    header = _header_table(path, fmt, hf_split, limit) if path.exists() else None
    if header is None or not header.rows:  # no cheap look, or no good row in it: read it as ingest does
        table = load_table(path, fmt_given, hf_split)
        if max_rows is not None and table.n_source_rows > max_rows:
            table = table.head(max_rows)
        return table, frozenset()
    absent = [name for name in names if not header.has_field(name)]
    if absent and fmt == "jsonl" and header.n_source_rows >= limit and (max_rows is None or max_rows > limit):
        return header, frozenset(_jsonl_fields_later(path, absent, limit, max_rows))
    return header, frozenset()


def held_fields(cfg: DataConfig, path: Path, names: tuple[str, ...]) -> frozenset[str]:
    """Which of the field `names` a data file holds, found as :func:`check_mapping` finds a mapped field (a parquet
    schema, a csv header, a HF folder's features, a jsonl file's first HEADER_ROWS rows and then the rest scanned for
    its key; a JSON array file read whole), so as ingest finds it in the whole file: a label field it lacks is what
    ingest drops under `labels_optional` (a held-out set). A file without a usable row holds every name (ingest keeps
    an unresolved mapping there). Remembered per process while the file's size and modification time stay. in:
    mapping (data.format, data.hf_split and data.max_rows are honoured), path, field names; out: those it holds;
    raises IngestError / OSError as check_mapping."""
    path = Path(path).expanduser()
    stat = path.stat()
    return _held_fields(cfg.format, cfg.hf_split, cfg.max_rows, str(path), names, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _held_fields(fmt_given: str, hf_split: str | None, max_rows: int | None, path_text: str, names: tuple[str, ...],
                 size: int, mtime_ns: int) -> frozenset[str]:
    """:func:`held_fields` of a file as it is (size and mtime key the memo). in: the mapping's format, split and row
    cap, the path, the names, the file's size and mtime; out: the names it holds."""
    table, later = _field_view(Path(path_text), fmt_given, hf_split, max_rows, names)
    return frozenset(n for n in names if not table.rows or table.has_field(n) or n in later)


def _jsonl_fields_later(path: Path, names: list[str], start: int, max_rows: int | None) -> set[str]:
    """Which of `names` (mapped fields not in a jsonl file's first `start` rows) a row from `start` on (before
    `max_rows`) holds. Read in chunks of whole lines; a line is parsed only when it holds the text the field's
    keys are written with ('"reward_model' and 'ground_truth"'), every line for a key JSON may write escaped
    (non-ASCII, a quote or a backslash in it)."""
    pending = {name: _key_needles(name) for name in names}
    found: set[str] = set()
    with path.open("rb") as fh:
        row = _skip_rows(fh, start)
        while pending and (chunk := fh.read(SCAN_CHUNK_BYTES) + fh.readline()):
            hit = _needles_held(chunk, pending, list(pending))
            if not hit and max_rows is None:
                continue
            for raw in _nonblank_lines(chunk):
                row += 1
                if max_rows is not None and row >= max_rows:
                    return found
                for name in _line_fields(raw, _needles_held(raw, pending, hit)):
                    found.add(name)
                    del pending[name]
    return found


def _skip_rows(fh: BinaryIO, start: int) -> int:
    """Reads a jsonl file's lines up to its first `start` rows (blank lines, and a UTF-8 BOM alone on the first,
    are no rows). in: the file opened binary at its start, the row count; out: the number of the last row read
    (-1 when none)."""
    row = -1
    while row + 1 < start and (raw := fh.readline()):
        row += 0 if not (raw.removeprefix(UTF8_BOM) if row < 0 else raw).strip() else 1
    return row


def _nonblank_lines(chunk: bytes) -> list[bytes]:
    """A chunk's lines that hold more than whitespace (the jsonl rows). in: bytes of whole lines; out: the lines."""
    return [raw for raw in chunk.split(b"\n") if raw.strip()]


def _needles_held(text: bytes, pending: dict[str, tuple[bytes, ...]], names: list[str]) -> list[str]:
    """Those of `names` still pending whose key needles (_key_needles) `text` all holds. in: a chunk or line,
    {name: needles} of the names not yet found, the names to try; out: those held, in order."""
    return [n for n in names if n in pending and all(x in text for x in pending[n])]


def _line_fields(raw: bytes, wanted: list[str]) -> list[str]:
    """Those of `wanted` that a jsonl line parsed as an object holds (none when it does not parse). in: the line's
    bytes, field names; out: the names it holds, in order."""
    if not wanted or (obj := _parse_line(raw.decode("utf-8", errors="replace"))[0]) is None:
        return []
    return [n for n in wanted if _lookup(obj, n) is not _ABSENT]


def _key_needles(name: str) -> tuple[bytes, ...]:
    """Byte strings every jsonl line holding field `name` contains: its first key opened ('"a') and its last
    key closed ('c"'), whichever way the dotted name splits into keys; none when JSON may escape a key."""
    first, last = name.split(".")[0], name.split(".")[-1]
    if not all(PLAIN_KEY.fullmatch(k) for k in (first, last)):  # JSON may escape others ('/' as '\\/', '\\u0041')
        return ()
    return (f'"{first}'.encode(), f'{last}"'.encode())


def _header_table(path: Path, fmt: str, hf_split: str | None, limit: int) -> LoadedTable | None:
    """A table of a file's columns without its rows (parquet: schema; csv: header; HF: features) or with its
    first `limit` rows (jsonl), for check_mapping; None when there is no such cheap look (a JSON array, or a
    file that does not read so: load_table then reads it, with its error). An empty parquet/HF table has no
    rows either: IngestError as load_table's."""
    _check_readable(path, fmt)
    try:
        if fmt == "jsonl":
            if path.suffix.lower() == ".json" and _is_json_array(path):
                return None
            return _read_jsonl(path, limit)
        if fmt == "csv":
            columns = pl.read_csv(path, n_rows=1, infer_schema=False, encoding="utf8-lossy",
                                  truncate_ragged_lines=True, glob=False).columns
            if any("\r" in name for name in columns):
                return None  # load_table names the fix
            return LoadedTable(pl.DataFrame(schema=dict.fromkeys(columns, pl.String)), [0], [], 1)
        if fmt == "parquet":
            with path.open("rb") as fh:  # read_parquet_schema takes no glob=False: a path would be a pattern
                schema = pl.read_parquet_schema(fh)
            n = pl.scan_parquet(path, glob=False).select(pl.len()).collect().item()
        elif fmt == "hf":
            ds = _hf_dataset(path, hf_split)
            schema, n = pl.from_arrow(ds.data.table.slice(0, 0)).schema, ds.num_rows
        else:
            return None
    except (OSError, pl.exceptions.PolarsError, ValueError) as e:
        if isinstance(e, IngestError):
            raise
        return None
    if n == 0:
        raise IngestError(f"data file {path} has no rows")
    return LoadedTable(pl.DataFrame(schema=schema), [0], [], 1)


def _share(n: int, n_rows: int) -> str:
    """'30 of 288 rows (10%)'."""
    return f"{n} of {n_rows} rows ({n / n_rows:.0%})"


def _fields_named(lines: list[dict[str, Any]]) -> str:
    """Which fields the rows of one reason name (the fields a missing-field rejection lacks, those an invalid label
    was in), with their rows when more than one field is named: "field 'answer'", or "fields 'answer' (5 rows),
    'question' (1 row)". in: its rejected lines; out: the words."""
    rows: dict[str, set[int]] = {}
    for i in lines:
        rows.setdefault(i["field"], set()).add(i["row"])
    if len(rows) == 1:
        return f"field '{next(iter(rows))}'"
    counts = sorted(rows.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return "fields " + ", ".join(f"'{f}' ({len(r)} row{'s' if len(r) > 1 else ''})" for f, r in counts)


def _reason_hint(cfg: DataConfig, reason: str, lines: list[dict[str, Any]], n_rows: int) -> str:
    """The hint for one reason that rejects (or flags) over HINT_SHARE of the rows: what it points at and what
    to change. in: the mapping, the reason, its rejected lines, the number of rows; out: one sentence."""
    share = _share(len({i["row"] for i in lines}), n_rows)
    name = Counter(i["field"] for i in lines).most_common(1)[0][0]
    first = next((i["detail"] for i in lines if i["field"] == name and i["detail"]), "")
    if reason == NON_TEXT_PROMPT:
        held = Counter(m.group(1) for i in lines if (m := _HOLDS.search(i["detail"] or "")))
        kinds = ", ".join(f"{kind} ({n})" for kind, n in held.most_common())
        return (f"{share} have a prompt field that holds no text ({kinds}): map --prompt (saerl ingest) or "
                "data.prompt (config) to a text field, a nested text field with a dotted path (a.b), or a "
                "template; a chat message list is read as its user message when it holds exactly one")
    hints = {
        UNPARSEABLE_ANSWER: (
            f"have an answer in field '{name}' that is not read as a final answer: saerl reads a number (18, "
            "-2.5, 1,000, 3/4, 50%, twelve), a quantity with units (5 ft 6 in), what follows GSM8K's '####', "
            "or LaTeX math ($\\frac{3}{4}$, \\boxed{x^2}); the detail column of rejected.parquet says why "
            "each was not read. If this field is not the final answer (a worked solution, a struct), map the "
            "one that is: --answer F (saerl ingest) or data.answer=F (config), a nested field with a dotted "
            "path (data.answer=reward_model.ground_truth)"),
        STRUCT_ANSWER: f"were rejected as {reason}: {first}",
        TEMPLATE_ERROR: f"were rejected as {reason}: {first}",  # the detail names the template, the field, the fix
        LIST_ANSWER: f"were rejected as {reason}: {first}",
        EMPTY_ANSWER: (f"have an empty answer in field '{name}': check that --answer (saerl ingest) or "
                       "data.answer (config) names the gold answer field"),
        MISSING_FIELD: (f"lack {_fields_named(lines)} (null, NaN, absent or empty): check that the mapping "
                        "names fields the rows have"),
        OVERLONG_PROMPT: (f"have a prompt over data.max_prompt_chars={cfg.max_prompt_chars} characters: "
                          "raise it to keep them"),
        DUPLICATE_PROMPT: ("repeat an earlier prompt (the first is kept): if they should differ, check that "
                           "--prompt / data.prompt maps the question (a template joins fields: "
                           "'{body} {question}')"),
        ANSWER_TIMEOUT: (f"took over data.verify_timeout_s={cfg.verify_timeout_s}s to read their answer: "
                         "raise it, or check that the answer field holds final answers, not worked "
                         "solutions"),
        EXTRA_FIELDS: ("have more fields than the csv header: quote each field that holds a comma "
                       '("Add 2, 3"), or convert the file to jsonl'),
        INVALID_JSON: ("do not parse as a JSON object (the value column names each line and why): fix them, "
                       "or check that the file is jsonl, one object per line"),
        INVALID_LABEL: (f"have an invalid label in {_fields_named(lines)} (it became null; the row is kept unless "
                        "rejected for another reason): check the mapping"),
    }
    if reason == INVALID_UTF8 and len({i["row"] for i in lines}) > LEGACY_ENCODING_SHARE * n_rows:
        hints[reason] = ("were flagged as invalid UTF-8 (kept, with U+FFFD in place of the bad bytes): the file is "
                         "probably cp1252 / Latin-1, not UTF-8. Convert it and ingest again: "
                         f"{LEGACY_ENCODING_FIX}")
    verb = "flagged" if reason in FLAG_ONLY else "rejected"
    return f"{share} " + hints.get(reason, f"were {verb} as {reason}: see their row, value and detail in "
                                           "rejected.parquet")


def number_format_hint(golds: list[str]) -> str | None:
    """A hint when over NUMBER_FORMAT_HINT_SHARE of the golds are written with a decimal comma ('3,5') or thousands
    dots ('1.000'): how the verifier reads them and the fix; else None. in: the kept rows' golds as written; out: one
    sentence or None."""
    written = [g.strip() for g in golds]
    odd = [g for g in written if DECIMAL_COMMA.fullmatch(g) or THOUSANDS_DOTS.fullmatch(g)]
    if not golds or len(odd) <= NUMBER_FORMAT_HINT_SHARE * len(golds):
        return None
    examples = ", ".join(repr(g) for g in odd[:NUMBER_FORMAT_EXAMPLES])
    return (f"{len(odd)} of {len(golds)} kept golds ({len(odd) / len(golds):.0%}) look written with a decimal comma or "
            f"thousands dots ({examples}): "
            "the verifier reads '3,5' as the set {3, 5} (so 3.5 is wrong and '5, 3' right) and '1.000' as 1. If the "
            "data writes numbers the European way, rewrite those golds with a decimal point and no thousands dots "
            "(3.5, 1000) and ingest again")


def ingest_hints(cfg: DataConfig, issues: list[dict[str, Any]], n_rows: int,
                 golds: list[str] | None = None) -> list[str]:
    """What to change when the rejections point at the mapping rather than at bad rows. in: the mapping, the
    rejected lines, the number of source rows, the kept rows' golds as written (optional); out: one sentence per hint:
    a mapped --id that repeats (any count), then one per reason that rejects or flags over HINT_SHARE of the rows (most
    rows first; see _reason_hint), then one when the golds look written with decimal commas (see number_format_hint)."""
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for issue in issues:
        by_reason.setdefault(issue["reason"], []).append(issue)
    hints = []
    n_dup = len(by_reason.get(DUPLICATE_ID, []))
    if n_dup and cfg.id:
        hints.append(f"{n_dup} rows share an id with an earlier row: the id field '{cfg.id}' is not unique. "
                     "Leave --id out (saerl ingest) or data.id unset (config) to use content-hash ids, or "
                     "make the ids unique")
    for reason, lines in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        rows = len({i["row"] for i in lines})
        if n_rows and rows > HINT_SHARE * n_rows and not (reason == DUPLICATE_ID and cfg.id):
            hints.append(_reason_hint(cfg, reason, lines, n_rows))
    if golds and (numbers := number_format_hint(golds)) is not None:
        hints.append(numbers)
    return hints


def summarize(result: IngestResult) -> str:
    """One line: 'kept 7473 of 7480 rows; rejected 7: unparseable answer 4, duplicate prompt 3' (+ the flags of
    kept rows), a 'chat prompts: ...' line when prompts were chat message lists (their user message read, other turns left
    out, counted by role), then one 'hint: ...' line per hint of the summary (see ingest_hints)."""
    s = result.summary
    line = f"kept {s['kept']} of {s['rows']} rows; rejected {s['dropped']}"
    if s["reasons"]:
        line += ": " + ", ".join(f"{r} {c}" for r, c in s["reasons"].items())
    if s["flags"]:
        line += "; flagged (row kept): " + ", ".join(f"{r} {c}" for r, c in s["flags"].items())
    lines = [line]
    if s.get("chat_prompts"):
        turns = s.get("dropped_turns") or {}
        left = ", ".join(f"{role} {c}" for role, c in turns.items()) if turns else "none"
        lines.append(f"chat prompts: {s['chat_prompts']} prompts were chat message lists, read as their one "
                     f"user message; other turns left out: {left}")
    return "\n".join([*lines, *(f"hint: {h}" for h in s.get("hints", []))])


def require_rows(result: IngestResult) -> None:
    """Refuse an ingest that kept no row: every later stage needs prompts (extraction failed deep inside the tokenizer
    on an empty list, and the empty ingest artifact was cached). in: the result; raises IngestError with the summary
    (its reasons and hints: usually a mapping that names the wrong fields)."""
    if result.kept.height == 0:
        raise IngestError(f"ingest kept no row: {summarize(result)}\nfix the mapping (data.prompt / data.answer in "
                          "the config, --prompt / --answer for saerl ingest) or the file; `saerl ingest FILE --prompt "
                          "F --answer F` writes rejected.parquet with each row's reason")


def write_ingest(result: IngestResult, out_dir: Path) -> dict[str, int]:
    """Write prompts.parquet (the kept rows in id order: :func:`in_id_order`) and rejected.parquet (by file row) into
    out_dir, each through a temp file renamed into place (the stage renames its folder too; `saerl ingest` writes
    into the user's folder, where a killed write must not leave half a file)."""
    from saerl.artifacts import write_file_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_file_atomic(out_dir / "prompts.parquet", in_id_order(result).kept.write_parquet)
    write_file_atomic(out_dir / REJECTED_TABLE, result.rejected.write_parquet)
    return {"prompts": result.kept.height, "rejected": result.rejected.height}


def sample_path() -> Path:
    """The packaged sample data set: grade-school word problems and arithmetic, with a few bad rows."""
    return Path(__file__).resolve().parent / "sample" / "sample.jsonl"
