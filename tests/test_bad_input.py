"""Bad input through ingest (saerl.data.ingest / load_table), table-driven: every case gives a clear message that
names the row and the field (or the line or JSON array element, for one that is not a record at all), the good rows survive, and
nothing crashes. A case either expects file-level IngestError text, or (row, field, reason) lines in `rejected`
plus the source rows that are kept."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from saerl import data as D
from saerl.config import DataConfig
from saerl.data import IngestError, ingest, load_table

GOOD_FIRST = {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "#### 7", "difficulty": 1}
GOOD_LAST = {"question": "What is 6 * 7?", "answer": "42", "difficulty": 2.5}
MEGABYTE = 1_000_000
DEEP = 100_000  # JSON nesting far past the parser's recursion limit
BIG_DIGITS = 5_000  # past Python's 4300-digit int parsing limit


def jsonl(*middle: dict | bytes) -> bytes:
    """GOOD_FIRST, the given lines (dicts as JSON, bytes as they are), GOOD_LAST, one per line."""
    lines = [GOOD_FIRST, *middle, GOOD_LAST]
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


def parquet(frame: pl.DataFrame) -> Callable[[Path], None]:
    """A writer that saves `frame` as the case's parquet file."""
    return lambda path: frame.write_parquet(path)


@dataclass(frozen=True)
class Case:
    """One bad-input case: the file (bytes, or a writer), its suffix, the mapping, and what must come out.

    issues: (row, field, reason) lines expected in rejected (field "" = the whole line, whose number the value
    names); kept: source rows that must be kept; error: a regex of the IngestError when the file is unusable."""

    data: bytes | Callable[[Path], None]
    suffix: str = ".jsonl"
    mapping: dict = field(default_factory=lambda: {"difficulty": "difficulty"})
    issues: tuple[tuple[int, str, str], ...] = ()
    kept: tuple[int, ...] = (0, 2)
    error: str = ""


CASES: dict[str, Case] = {
    "empty prompt": Case(jsonl({"question": "", "answer": "1"}), issues=((1, "prompt", D.EMPTY_PROMPT),)),
    "whitespace-only prompt": Case(jsonl({"question": " \t\n ", "answer": "1"}),
                                   issues=((1, "prompt", D.EMPTY_PROMPT),)),
    "zero-width-only prompt": Case(jsonl({"question": "\u200b\u2060\ufeff\u200f", "answer": "1"}),  # kept before
                                   issues=((1, "prompt", D.EMPTY_PROMPT),)),
    # Unicode variants of one prompt are one row (each was kept, with its own id): its NFD form, a zero-width copy
    "NFD copy of a prompt": Case(jsonl({"question": "Caf\u00e9 sells 5 cups. How many?", "answer": "5"},
                                       {"question": "Cafe\u0301 sells 5 cups. How many?", "answer": "5"}),
                                 issues=((2, "prompt", D.DUPLICATE_PROMPT),), kept=(0, 1, 3)),
    "zero-width copy of a prompt": Case(jsonl({"question": "Tom has 3 apples\u200b and buys 4 more. How many apples?",
                                               "answer": "7"}), issues=((1, "prompt", D.DUPLICATE_PROMPT),)),
    "missing answer field": Case(jsonl({"question": "What is 1 + 1?"}), issues=((1, "answer", D.MISSING_FIELD),)),
    "null answer": Case(jsonl({"question": "What is 1 + 2?", "answer": None}),
                        issues=((1, "answer", D.MISSING_FIELD),)),
    "NaN answer (parquet)": Case(
        parquet(pl.DataFrame({"question": ["q1?", "q2?", "q3?"], "answer": [1.0, math.nan, 3.0]})), ".parquet",
        {}, issues=((1, "answer", D.MISSING_FIELD),)),
    "NaN prompt in a mixed column": Case(jsonl(b'{"question": NaN, "answer": "1"}'),
                                         issues=((1, "question", D.MISSING_FIELD),)),
    "NaN written as an answer": Case(jsonl({"question": "What is 0 / 0?", "answer": "nan"}),
                                     issues=((1, "answer", D.UNPARSEABLE_ANSWER),)),
    "wrong column names": Case(jsonl(), mapping={"prompt": "problem"},
                               error=r"prompt field 'problem' is not in the data\. Available columns: "
                                     r"\['question', 'answer', 'difficulty'\]"),
    "prompt column missing beside a solution column": Case(  # it suggested the solutions as prompts
        b'{"problem": "What is 1 + 1?", "solution": "1 + 1 = 2"}\n', mapping={},
        error=r"prompt field 'question' is not in the data\. Available columns: \['problem', 'solution'\]\. Likely: "
              r"'problem' \(named like a prompt column\)\. Fix: data\.prompt=problem "),
    "unclosed brace in a prompt template": Case(  # it was read as one field name, the fix dropping the template text
        jsonl(), mapping={"prompt": "Solve: {question"},
        error=r"data\.prompt 'Solve: \{question' has an unclosed '\{'.*Available columns.*Fix: "
              r"data\.prompt='Solve: \{question\}' "),
    "unparseable answer": Case(jsonl({"question": "Shade the region.", "answer": "see the figure"}),
                               issues=((1, "answer", D.UNPARSEABLE_ANSWER),)),
    "duplicate prompt": Case(jsonl({"question": "  Tom has 3 apples and buys 4 more.  How many apples?",
                                    "answer": "7"}), issues=((1, "prompt", D.DUPLICATE_PROMPT),)),
    "empty field of a prompt template": Case(jsonl({"question": "", "answer": "1"}),
                                              mapping={"prompt": "Q: {question}"},
                                              issues=((1, "question", D.MISSING_FIELD),)),
    "whitespace-only field of a prompt template": Case(
        jsonl({"question": " \t", "answer": "1", "difficulty": 2}, {"question": "2+2?", "answer": "4", "difficulty": ""}),
        mapping={"prompt": "Level {difficulty}: {question}"}, kept=(0, 3),
        issues=((1, "question", D.MISSING_FIELD), (2, "difficulty", D.MISSING_FIELD))),
    "semicolon-separated csv": Case(b"question;answer\nWhat is 1+1?;2\n", ".csv", {},
                                    error=r"Available columns: \['question;answer'\]: the header is one column, "
                                          r"split by semicolons.*saerl reads comma-separated csv.*delimiter=';'"),
    "tab-separated csv": Case(b"question\tanswer\nWhat is 1+1?\t2\n", ".csv", {},
                              error=r"split by tabs.*saerl reads comma-separated csv.*delimiter='\\t'"),
    "duplicate id": Case(
        b'{"k": 1, "question": "A?", "answer": "1"}\n{"k": 1, "question": "B?", "answer": "2"}\n'
        b'{"k": 2, "question": "C?", "answer": "3"}\n', mapping={"id": "k"},
        issues=((1, "k", D.DUPLICATE_ID),)),
    "non-UTF-8 bytes (jsonl)": Case(jsonl(b'{"question": "Caf\xe9 sells 5 cups. How many?", "answer": "5"}'),
                                    issues=((1, "", D.INVALID_UTF8),), kept=(0, 1, 2)),
    "non-UTF-8 bytes (csv)": Case(b"question,answer\nWhat is 2+2?,4\nCaf\xe9 has 3 cups. How many?,3\nQ?,5\n",
                                  ".csv", {}, issues=((1, "question", D.INVALID_UTF8),), kept=(0, 1, 2)),
    "non-UTF-8 bytes (parquet binary)": Case(
        parquet(pl.DataFrame({"question": [b"A?", b"\xff\xfeB?", b"C?"], "answer": ["1", "2", "3"]})),
        ".parquet", {}, issues=((1, "question", D.INVALID_UTF8),), kept=(0, 1, 2)),
    "non-UTF-8 bytes inside a struct (parquet)": Case(
        parquet(pl.DataFrame({"problem": [{"text": b"A?"}, {"text": b"\xffB?"}, {"text": b"C?"}],
                              "reward_model": [{"ground_truth": b"1"}, {"ground_truth": b"2"},
                                               {"ground_truth": b"3"}]})),
        ".parquet", {"prompt": "problem.text", "answer": "reward_model.ground_truth"},
        issues=((1, "problem.text", D.INVALID_UTF8),), kept=(0, 1, 2)),
    "lone surrogate escape": Case(jsonl(b'{"question": "What is \\ud800 2+2?", "answer": "4"}'),
                                  issues=((1, "", D.INVALID_UTF8),), kept=(0, 1, 2)),
    "1 MB prompt": Case(jsonl({"question": "x" * MEGABYTE, "answer": "1"}),
                        issues=((1, "prompt", D.OVERLONG_PROMPT),)),
    "1 MB prompt under a raised limit": Case(jsonl({"question": "y" * MEGABYTE, "answer": "1"}),
                                             mapping={"max_prompt_chars": 2 * MEGABYTE}, kept=(0, 1, 2)),
    "NaN and inf labels (jsonl)": Case(
        jsonl(b'{"question": "5 - 2?", "answer": "3", "difficulty": NaN}',
              b'{"question": "5 - 1?", "answer": "4", "difficulty": -Infinity}'),
        issues=((1, "difficulty", D.INVALID_LABEL), (2, "difficulty", D.INVALID_LABEL)), kept=(0, 1, 2, 3)),
    "NaN and inf labels (csv)": Case(b"question,answer,difficulty\nA?,1,nan\nB?,2,inf\nC?,3,1.5\n", ".csv",
                                     issues=((0, "difficulty", D.INVALID_LABEL), (1, "difficulty", D.INVALID_LABEL)),
                                     kept=(0, 1, 2)),
    "NaN and inf labels (parquet)": Case(
        parquet(pl.DataFrame({"question": ["A?", "B?", "C?"], "answer": ["1", "2", "3"],
                              "difficulty": [math.nan, math.inf, 1.0]})), ".parquet",
        issues=((0, "difficulty", D.INVALID_LABEL), (1, "difficulty", D.INVALID_LABEL)), kept=(0, 1, 2)),
    "mixed-type column": Case(  # a number or a list is no prompt (both were kept as their JSON text)
        jsonl({"question": 12345, "answer": 2.5, "difficulty": "hard"},
              {"question": ["a", "list"], "answer": 4, "difficulty": [1, 2]},
              {"question": "Half of 8?", "answer": "4", "difficulty": True},
              {"question": "What is 9 - 4?", "answer": 5, "difficulty": [1, 2]}),
        issues=((1, "question", D.NON_TEXT_PROMPT), (2, "question", D.NON_TEXT_PROMPT),
                (3, "difficulty", D.INVALID_LABEL), (4, "difficulty", D.INVALID_LABEL)), kept=(0, 3, 4, 5)),
    "non-text prompts (jsonl)": Case(
        jsonl({"question": True, "answer": "1"}, {"question": {"text": "nested?"}, "answer": "2"},
              {"question": 7.5, "answer": "3"}),
        issues=((1, "question", D.NON_TEXT_PROMPT), (2, "question", D.NON_TEXT_PROMPT),
                (3, "question", D.NON_TEXT_PROMPT)), kept=(0, 4)),
    "numeric prompt column (parquet)": Case(
        parquet(pl.DataFrame({"question": [1, 2, 3], "answer": ["1", "2", "3"]})), ".parquet", {},
        issues=((0, "question", D.NON_TEXT_PROMPT), (1, "question", D.NON_TEXT_PROMPT),
                (2, "question", D.NON_TEXT_PROMPT)), kept=()),
    "chat prompt with two user turns": Case(
        jsonl({"question": [{"role": "user", "content": "A?"}, {"role": "user", "content": "B?"}],
               "answer": "1"},
              {"question": [{"role": "system", "content": "Be brief."}], "answer": "2"},
              {"question": [{"role": "user", "content": ["part"]}], "answer": "3"},
              {"question": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "What is 5-3?"}], "answer": "2"}),
        issues=((1, "question", D.NON_TEXT_PROMPT), (2, "question", D.NON_TEXT_PROMPT),
                (3, "question", D.NON_TEXT_PROMPT)), kept=(0, 4, 5)),
    "list in a prompt template": Case(jsonl({"question": "Q?", "ctx": ["a", "b"], "answer": "1"}),
                                      mapping={"prompt": "{ctx} {question}"}, kept=(),
                                      issues=((0, "ctx", D.MISSING_FIELD), (1, "ctx", D.NON_TEXT_PROMPT),
                                              (2, "ctx", D.MISSING_FIELD))),
    "empty answer": Case(jsonl({"question": "What is 1 + 5?", "answer": ""},
                               {"question": "2 + 5?", "answer": " \t"}),
                         issues=((1, "answer", D.EMPTY_ANSWER), (2, "answer", D.EMPTY_ANSWER)), kept=(0, 3)),
    "struct answer (jsonl)": Case(jsonl({"question": "What is 1 + 6?",
                                         "answer": {"style": "rule", "ground_truth": "7"}}),
                                  issues=((1, "answer", D.STRUCT_ANSWER),)),
    "struct answer (parquet)": Case(
        parquet(pl.DataFrame({"question": ["A?", "B?"], "answer": [{"style": "rule", "ground_truth": "1"}] * 2})),
        ".parquet", {}, issues=((0, "answer", D.STRUCT_ANSWER), (1, "answer", D.STRUCT_ANSWER)), kept=()),
    "empty list answer": Case(jsonl({"question": "What is 2 + 9?", "answer": []}),
                              issues=((1, "answer", D.EMPTY_ANSWER),)),
    "list answer": Case(  # a list of two read as the interval [2, 3]: '#### 2' was judged wrong
        jsonl({"question": "Roots of x^2-5x+6?", "answer": [2, 3]}), issues=((1, "answer", D.LIST_ANSWER),)),
    "one answer in a list (parquet)": Case(
        parquet(pl.DataFrame({"question": ["A?", "B?"], "answer": [["7"], ["8", "9"]]})), ".parquet", {},
        issues=((1, "answer", D.LIST_ANSWER),), kept=(0,)),
    "infinite answer": Case(
        parquet(pl.DataFrame({"question": ["A?", "B?", "C?"], "answer": [1.0, float("inf"), float("nan")]})),
        ".parquet", {}, issues=((1, "answer", D.MISSING_FIELD), (2, "answer", D.MISSING_FIELD)), kept=(0,)),
    "dotted answer path a row lacks": Case(
        jsonl({"question": "What is 1 + 7?", "rm": {"style": "rule", "ground_truth": "8"}},
              {"question": "What is 1 + 8?", "rm": "9"}, {"question": "What is 1 + 9?", "rm": {"style": "rule"}}),
        mapping={"answer": "rm.ground_truth"}, kept=(1,),
        issues=((0, "rm.ground_truth", D.MISSING_FIELD), (2, "rm.ground_truth", D.MISSING_FIELD),
                (3, "rm.ground_truth", D.MISSING_FIELD), (4, "rm.ground_truth", D.MISSING_FIELD))),
    "dotted answer path no row has": Case(
        jsonl({"question": "What is 1 + 7?", "answer": "8", "rm": {"style": "rule"}},
              {"question": "What is 1 + 8?", "answer": "9", "rm": "9"}),
        mapping={"answer": "rm.ground_truth"},
        error=r"answer field 'rm.ground_truth' is not in the data\. Available columns: \['question', 'answer', "
              r"'difficulty', 'rm'\]\. Nested fields \(name one with a dotted path\): \['rm\.style'\]"),
    "empty file (jsonl)": Case(b"", error="is empty"),
    "empty file (csv)": Case(b"", ".csv", error="is empty"),
    "empty file (parquet)": Case(b"", ".parquet", error="is empty"),
    "blank lines only": Case(b"\n  \n\n", error="has no rows"),
    "header-only csv": Case(b"question,answer\n", ".csv", {}, error="has no rows"),
    "garbage parquet": Case(b"PAR1 not really parquet", ".parquet", {}, error="cannot read .* as parquet"),
    "UTF-16 file": Case("question,answer\nA?,1\n".encode("utf-16"), ".csv", {}, error="UTF-16.*UTF-8"),
    # without a byte-order mark: every jsonl line was 'invalid JSON' and a csv's columns 'q\x00' (the fix: the mapping)
    "UTF-16 file without a byte-order mark (csv)": Case("question,answer\nA?,1\n".encode("utf-16-le"), ".csv", {},
                                                        error=r"UTF-16LE-encoded without a byte-order mark.*iconv -f "
                                                              r"UTF-16LE -t UTF-8"),
    "UTF-16BE file without a byte-order mark, CJK prompts (jsonl)": Case(
        json.dumps({"question": "小明有3个苹果，吃了1个，还剩几个？", "answer": "2"}, ensure_ascii=False).encode("utf-16-be"),
        error=r"UTF-16BE-encoded without a byte-order mark.*iconv -f UTF-16BE -t UTF-8"),
    "a NUL byte in one line is no UTF-16": Case(jsonl(b"\x00"), issues=((1, "", D.INVALID_JSON),)),
    "unclosed csv quote": Case(b'question,answer\nA?,1\n"B?,2\nC?,3\n', ".csv", {},
                               error=r"line \d+: unexpected end of data"),
    "unclosed csv quote early in a long file": Case(  # it named the file's last line (2001 for a quote on line 12)
        b'question,answer\nA?,1\n"B?,2\n' + b"".join(b"Q%d?,%d\n" % (i, i) for i in range(50)), ".csv", {},
        error=r"the record that begins on line 3: unexpected end of data"),
    "unclosed csv quote after a long valid field": Case(  # a field over csv's 128 KiB limit was blamed instead
        b'question,answer\n"' + b"x" * 200_000 + b'?",1\nA?,1\n"B?,2\nC?,3\n', ".csv", {},
        error=r"the record that begins on line 4: unexpected end of data"),
    "jsonl with one broken line": Case(jsonl(b'{"question": "What is 2+2?", "answer": '),
                                       issues=((1, "", D.INVALID_JSON),)),
    "non-object line": Case(jsonl(b"[1, 2, 3]"), issues=((1, "", D.INVALID_JSON),)),
    "deeply nested line": Case(jsonl(b"[" * DEEP + b"]" * DEEP), issues=((1, "", D.INVALID_JSON),)),
    "5000-digit integer": Case(jsonl(b'{"question": "Big?", "answer": ' + b"7" * BIG_DIGITS + b"}"),
                               issues=((1, "", D.INVALID_JSON),)),
    "huge label": Case(jsonl(b'{"question": "Big?", "answer": "1", "difficulty": ' + b"9" * 400 + b"}"),
                       issues=((1, "difficulty", D.INVALID_LABEL),), kept=(0, 1, 2)),
    "UTF-8 byte-order mark": Case(b"\xef\xbb\xbf" + jsonl(), kept=(0, 1)),
    "UTF-8 byte-order mark on a blank first line": Case(b"\xef\xbb\xbf\n" + jsonl(), kept=(0, 1)),
    "UTF-8 byte-order mark and blank lines only": Case(b"\xef\xbb\xbf\n  \n", error="has no rows"),
    "unquoted comma in a csv field": Case(b"question,answer\nA?,1\nAdd 2, 3,5\nC?,3\n", ".csv", {},
                                          issues=((1, "", D.EXTRA_FIELDS),)),
    "a quote inside an unquoted csv field hides no comma": Case(b'question,answer\nA?,1\nAdd "2,3",5\nC?,3\n', ".csv",
                                                                {}, issues=((1, "", D.EXTRA_FIELDS),)),
    "a quoted csv field with doubled quotes and commas": Case(b'question,answer\nA?,1\n"Say ""2, 3"", add",5\n', ".csv",
                                                              {}, kept=(0, 1)),
    "an inch mark in an unquoted csv field": Case(  # polars refuses the file; Python's csv reader reads every row
        b'question,answer\r\n"Say ""hi"",\r\nthen add",1\r\nA 5" nail and 2,5\r\nB 6" board?,2\r\n', ".csv", {},
        kept=(0, 1, 2)),
    "an inch mark beside an unquoted comma and a blank line": Case(
        b'question,answer\nA 5" nail and 2,5\n\nAdd 2, 3,5\nB 6" board?,2\n', ".csv", {},
        issues=((1, "", D.EXTRA_FIELDS),), kept=(0, 2)),
    "blank lines in a csv": Case(b"question,answer\nA?,1\n\nB?,2\r\n\r\n\n", ".csv", {}, kept=(0, 1)),
    "blank line before bad bytes (csv)": Case(b"question,answer\nA?,1\n\nCaf\xe9 has 3 cups?,3\nQ?,5\n", ".csv", {},
                                              issues=((1, "question", D.INVALID_UTF8),), kept=(0, 1, 2)),
    "blank line before an unquoted comma (csv)": Case(b"question,answer\nA?,1\n\nAdd 2, 3,5\nC?,3\n\n", ".csv", {},
                                                      issues=((1, "", D.EXTRA_FIELDS),)),
    "CR-only line endings (csv)": Case(b"question,answer\rA?,1\rB?,2\r", ".csv", {}, error=r"bare carriage return.* tr "),
    "header only, CRLF (csv)": Case(b"question,answer\r\n", ".csv", {}, error="has no rows"),
    "header and blank lines only (csv)": Case(b"question,answer\n\n\n", ".csv", {}, error="has no rows"),
    "JSON array with a non-object element": Case(
        b"\xef\xbb\xbf [" + b",".join([json.dumps(GOOD_FIRST).encode(), b"[1, 2]", json.dumps(GOOD_LAST).encode()])
        + b"]", ".json", issues=((1, "", D.INVALID_JSON),)),
    "JSON array with bad bytes": Case(
        b"[" + b",".join([json.dumps(GOOD_FIRST).encode(), b'{"question": "Caf\xe9 has 5 cups?", "answer": "5"}',
                          json.dumps(GOOD_LAST).encode()]) + b"]", ".json",
        issues=((1, "", D.INVALID_UTF8),), kept=(0, 1, 2)),
    "JSON array with one element nested too deep": Case(  # refused whole before: the other elements are read alone
        b"[" + b",".join([json.dumps(GOOD_FIRST).encode(), b'{"q": ' + b"[" * DEEP + b"]" * DEEP + b', "s": "a,]}"}',
                          json.dumps(GOOD_LAST).encode()]) + b"]", ".json", issues=((1, "", D.INVALID_JSON),)),
    "JSON array with an integer over the digit limit": Case(
        b"[" + b",".join([json.dumps(GOOD_FIRST).encode(), b'{"question": "Q?", "answer": ' + b"9" * BIG_DIGITS + b"}",
                          b'{"question": "Say \\"[{,\\" then 2+2?", "answer": "4"}',
                          json.dumps(GOOD_LAST).encode()]) + b"]", ".json", issues=((1, "", D.INVALID_JSON),),
        kept=(0, 2, 3)),
    "JSON array with a deep element and text after the array": Case(
        b"[" + json.dumps(GOOD_FIRST).encode() + b"," + b"[" * DEEP + b"]" * DEEP + b"] x", ".json",
        error=r"as a JSON array: (RecursionError|line 1 column).*convert the file to jsonl"),
    "JSON array cut short": Case(b"[" + json.dumps(GOOD_FIRST).encode() + b",", ".json",
                                 error=r"as a JSON array: line 1 column \d+: .*convert the file to jsonl"),
}


def _write(case: Case, path: Path) -> None:
    if isinstance(case.data, bytes):
        path.write_bytes(case.data)
    else:
        case.data(path)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_case(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    path = tmp_path / f"data{case.suffix}"
    _write(case, path)
    cfg = DataConfig(source="file", **case.mapping)
    if case.error:
        with pytest.raises(IngestError, match=case.error) as err:
            ingest(cfg, path)
        assert str(path) in str(err.value) or "Available columns" in str(err.value)
        return
    res = ingest(cfg, path)
    got = set(zip(res.rejected["row"], res.rejected["field"], res.rejected["reason"], strict=True))
    assert set(case.issues) == got, res.rejected.rows()
    assert sorted(res.kept["row"].to_list()) == list(case.kept)
    for fld, value in zip(res.rejected["field"], res.rejected["value"], strict=True):
        assert len(value) <= D.REJECT_VALUE_CHARS
        if fld == "":  # a line (or JSON array element) that is not a record: the value says which one
            assert value.startswith(("line ", "element ")), value
    n_rows = res.summary["rows"]
    assert all(0 <= r < n_rows for r in res.rejected["row"])
    assert res.summary["kept"] + res.summary["dropped"] == n_rows
    assert not any("\ud800" <= ch <= "\udfff" for p in res.kept["prompt"] for ch in p)


def test_good_rows_survive_every_bad_line_at_once(tmp_path: Path) -> None:
    """All the row-level cases of the jsonl table in one file: only the bad rows go, in source order."""
    middle = [b'{"question": "", "answer": "1"}', b'{"question": "What is 1 + 1?"}', b'{"question": "A?", "answer":',
              b"[" * DEEP + b"]" * DEEP, b'{"question": "Shade.", "answer": "see the figure"}',
              json.dumps({"question": "x" * MEGABYTE, "answer": "1"}).encode(),
              b'{"question": "5 - 2?", "answer": "3", "difficulty": NaN}']
    path = tmp_path / "all.jsonl"
    path.write_bytes(jsonl(*middle))
    res = ingest(DataConfig(source="file", difficulty="difficulty"), path)
    assert res.rejected["row"].to_list() == [1, 2, 3, 4, 5, 6, 7]
    assert res.kept["row"].to_list() == [0, 7, 8]
    assert res.kept["answer"].to_list() == ["7", "3", "42"]


def test_load_table_reports_read_issues_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl(b"{oops", b'{"question": "Caf\xe9?", "answer": "1"}'))
    table = load_table(path)
    assert table.n_source_rows == 4 and table.rows == [0, 2, 3]
    assert [(i["row"], i["reason"]) for i in table.issues] == [(1, D.INVALID_JSON), (2, D.INVALID_UTF8)]
    assert table.issues[0]["value"].startswith("line 2: ") and table.issues[1]["value"].startswith("line 3: ")


def test_csv_extra_fields_that_cannot_be_matched_to_rows_refuse_the_file(tmp_path: Path) -> None:
    """A stray quote makes polars read fewer rows than the file has: with an over-long row in it, the file is
    refused with the fix rather than rows silently cut or misnumbered."""
    path = tmp_path / "d.csv"
    path.write_bytes(b'question,answer\r\nx,y,,,b""",\nx,y\n," "b\r\n,')
    with pytest.raises(IngestError, match=r"line 2 has more fields than the 2 header columns .*quote"):
        ingest(DataConfig(source="file"), path)


def _cfg_file(tmp_path: Path, rows: list[dict]) -> tuple[DataConfig, Path]:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return DataConfig(source="file", path=str(path), prompt="question", answer="answer"), path


def test_a_verifier_that_cannot_start_stops_ingest_instead_of_rejecting_good_rows(tmp_path, monkeypatch):
    """Workers that never start (math-verify missing, no subprocesses) judged every LaTeX gold 'unparseable
    answer': good rows were rejected silently. Ingest now refuses, naming the cause and the check to run."""
    from saerl import verify as V

    monkeypatch.setattr(V, "_WORKER_CMD", "import sys; sys.exit(3)")
    monkeypatch.setattr(V, "_POOL", V._Pool(2))
    cfg, path = _cfg_file(tmp_path, [{"question": "2+2?", "answer": "4"}, {"question": "half?", "answer": "\\frac{1}{2}"},
                                     {"question": "root?", "answer": "$\\sqrt{4}$"}])
    try:
        with pytest.raises(IngestError, match=r"answer verifier could not run .*\(rows 1, 2\) were not checked and no "
                                              r"row was rejected\. Check that this Python imports math_verify"):
            ingest(cfg, path)
    finally:
        V._POOL.shutdown()


def test_an_answer_the_verifier_fails_on_is_rejected_as_such_with_its_detail(tmp_path, monkeypatch):
    """A verifier error on one gold is not an 'unparseable answer': the row's detail says what failed; the
    others stay."""
    from saerl.verify import NormalizedAnswer

    def normalize(golds, _timeout, progress=False):
        return [NormalizedAnswer("error", "", "verifier worker exited (code -9)") if g == "7" else
                NormalizedAnswer("ok", g, "number") for g in golds]

    monkeypatch.setattr(D, "normalize_answers", normalize)
    cfg, path = _cfg_file(tmp_path, [{"question": "a?", "answer": "4"}, {"question": "b?", "answer": "7"},
                                     {"question": "c?", "answer": "5"}])
    result = ingest(cfg, path)
    assert result.kept["answer"].to_list() == ["4", "5"]
    assert result.rejected.select("row", "reason", "value", "detail").to_dicts() == [
        {"row": 1, "reason": D.ANSWER_CHECK_ERROR, "value": "7", "detail": "verifier worker exited (code -9)"}]


def test_an_answer_that_is_no_finite_number_says_so(tmp_path: Path) -> None:
    """inf (and 1e400 in JSON) were rejected as a 'missing field' with an empty value and no detail."""
    _write(CASES["infinite answer"], tmp_path / "d.parquet")
    res = ingest(DataConfig(source="file"), tmp_path / "d.parquet")
    inf = res.rejected.filter(pl.col("row") == 1).row(0, named=True)
    assert (inf["value"], inf["detail"]) == ("inf", "not a finite number (inf)")
    assert res.rejected.filter(pl.col("row") == 2)["detail"].to_list() == [None], "NaN is a missing cell"


def test_a_repeated_csv_header_maps_alike_whichever_reader_reads_the_file(tmp_path):
    """Python's csv reader (the fallback for a file polars refuses) kept the last of two 'question' columns, polars
    the first: the same mapping read another prompt by whether a row held an inch mark."""
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"question,question,answer\nFirst 1+1?,Second,2\nFirst 2+2?,Second 2+2?,4\n")
    inch = tmp_path / "inch.csv"
    inch.write_bytes(b'question,question,answer\nFirst 1+1?,Second,2\nA 5" nail plus 2?,Second 5+2?,7\n')
    cfg = DataConfig(prompt="question", answer="answer")
    assert D.ingest(cfg, plain).kept["prompt"].to_list() == ["First 1+1?", "First 2+2?"]
    assert D.ingest(cfg, inch).kept["prompt"].to_list() == ["First 1+1?", 'A 5" nail plus 2?']
    # the second column under polars' own name for it: question_duplicated_0, in both readers
    second = DataConfig(prompt="question_duplicated_0", answer="answer")
    assert D.ingest(second, plain).kept["prompt"].to_list() == ["Second", "Second 2+2?"]
    assert D.ingest(second, inch).kept["prompt"].to_list() == ["Second", "Second 5+2?"]


def test_an_empty_csv_field_is_missing_whichever_reader_reads_the_file(tmp_path):
    """polars reads an empty csv field as null ('missing field'); the Python reader's fallback must too, or a
    row with an inch mark and an empty answer is rejected for another reason ('empty answer') than the same
    row without it. The fallback also leaves the csv module's field size limit as it found it."""
    import csv

    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"question,answer\nFirst 1+1?,2\nFirst 3+3?,\n")
    inch = tmp_path / "inch.csv"
    inch.write_bytes(b'question,answer\nFirst 1+1?,2\nA 5" nail plus 2?,\n')
    cfg, limit = DataConfig(prompt="question", answer="answer"), 131_072  # the csv module's default limit
    before = csv.field_size_limit(limit)  # set here: an earlier test's leak would otherwise hide this one's
    try:
        reasons = [D.ingest(cfg, f).rejected.select("row", "field", "reason").to_dicts()
                   for f in (plain, inch)]
        assert csv.field_size_limit() == limit, "the fallback reader's raised limit leaked out of it"
    finally:
        csv.field_size_limit(before)
    assert reasons[0] == reasons[1] == [{"row": 1, "field": "answer", "reason": D.MISSING_FIELD}]
