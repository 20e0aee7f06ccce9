"""saerl.data: reading four formats, the column mapping, every rejection reason, outputs."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import polars as pl
import pytest

from saerl import data as D
from saerl.config import DataConfig
from saerl.data import IngestError, ingest, read_table, render_prompt, sample_path, summarize, write_ingest
from saerl.verify import NormalizedAnswer

GOOD = [
    {
        "question": "Tom has 3 apples and buys 4 more. How many apples?",
        "answer": "#### 7",
        "topic": "add",
        "difficulty": 1,
    },
    {"question": "What is 6 * 7?", "answer": "42", "topic": "mul", "difficulty": 2.5},
]


def write_jsonl(path: Path, lines: list[bytes | dict]) -> Path:
    """Write dicts as JSON lines and bytes as they are (for broken lines and bad encodings)."""
    with path.open("wb") as fh:
        for line in lines:
            fh.write((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n")
    return path


def cfg(**kw) -> DataConfig:
    return DataConfig(source="file", **kw)


# ------------------------------------------------------------------------------------------------- formats


def _write_format(fmt: str, tmp_path: Path) -> tuple[Path, dict]:
    frame = pl.DataFrame(GOOD)
    if fmt == "jsonl":
        return write_jsonl(tmp_path / "d.jsonl", GOOD), {}
    if fmt == "parquet":
        frame.write_parquet(tmp_path / "d.parquet")
        return tmp_path / "d.parquet", {}
    if fmt == "csv":
        frame.write_csv(tmp_path / "d.csv")
        return tmp_path / "d.csv", {}
    import datasets

    ds = datasets.Dataset.from_dict({k: [r[k] for r in GOOD] for k in GOOD[0]})
    if fmt == "hf":
        ds.save_to_disk(str(tmp_path / "hf"))
        return tmp_path / "hf", {}
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "hfdict"))
    return tmp_path / "hfdict", {"hf_split": "train"}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv", "hf", "hf_dict"])
def test_formats_read_and_ingest_alike(fmt, tmp_path):
    path, extra = _write_format(fmt, tmp_path)
    frame = read_table(path, "auto", extra.get("hf_split"))
    assert frame.height == 2 and {"question", "answer", "topic", "difficulty"} <= set(frame.columns)
    res = ingest(cfg(topic="topic", difficulty="difficulty", **extra), path)
    assert res.kept["answer"].to_list() == ["7", "42"]
    assert res.kept["difficulty"].to_list() == [1.0, 2.5]
    assert res.kept["row"].to_list() == [0, 1]
    assert res.rejected.height == 0


def test_hf_dict_without_split_names_the_splits(tmp_path):
    path, _ = _write_format("hf_dict", tmp_path)
    with pytest.raises(IngestError, match=r"splits \['train', 'test'\].*data.hf_split"):
        read_table(path, "auto", None)


def test_unknown_suffix_and_empty_files(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(IngestError, match=r"--format jsonl\|parquet\|csv\|hf \(saerl ingest\) or data.format="):
        read_table(tmp_path / "d.txt")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(IngestError, match="empty"):
        ingest(cfg(), tmp_path / "empty.jsonl")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    with pytest.raises(IngestError, match="no rows"):
        ingest(cfg(), tmp_path / "blank.jsonl")
    (tmp_path / "header.csv").write_text("question,answer\n")
    with pytest.raises(IngestError, match="no rows"):
        ingest(cfg(), tmp_path / "header.csv")
    with pytest.raises(IngestError, match="does not exist"):
        ingest(cfg(), tmp_path / "missing.jsonl")


# ------------------------------------------------------------------------------------------- bad inputs

BAD_CASES = {
    # name: (lines inserted between the two good rows, expected (reason, field) lines, rows kept of all)
    "empty prompt": ([{"question": "", "answer": "1"}], [("empty prompt", "prompt")], 2),
    "whitespace prompt": ([{"question": " \n\t ", "answer": "1"}], [("empty prompt", "prompt")], 2),
    "null prompt": ([{"question": None, "answer": "1"}], [("missing field", "question")], 2),
    "missing answer": ([{"question": "What is 1 + 1?"}], [("missing field", "answer")], 2),
    "unparseable answer": (
        [{"question": "Shade the region.", "answer": "see solution"}],
        [("unparseable answer", "answer")],
        2,
    ),
    "duplicate prompt": (
        [{"question": "What is  6 * 7? ", "answer": "42"}],
        [("duplicate prompt", "prompt")],
        2,
    ),
    "over-long prompt": ([{"question": "x" * 1_000_000, "answer": "1"}], [("over-long prompt", "prompt")], 2),
    "broken JSON line": ([b'{"question": "What is 2+2?", "answer": '], [("invalid JSON", "")], 2),
    "non-object JSON": ([b"[1, 2]"], [("invalid JSON", "")], 2),
    "non-UTF-8 bytes": (
        [b'{"question": "Caf\xe9 sells 5 cups. How many?", "answer": "5"}'],
        [("invalid UTF-8", "")],
        3,
    ),
    "NaN label": (
        [b'{"question": "What is 5 - 2?", "answer": "3", "difficulty": NaN}'],
        [("invalid label", "difficulty")],
        3,
    ),
    "inf label": (
        [b'{"question": "What is 5 - 1?", "answer": "4", "difficulty": Infinity}'],
        [("invalid label", "difficulty")],
        3,
    ),
    "text label": (
        [{"question": "What is 5 + 1?", "answer": "6", "difficulty": "hard"}],
        [("invalid label", "difficulty")],
        3,
    ),
    "mixed-type answers": (
        [{"question": "What is 10 / 4?", "answer": 2.5}, {"question": "Half of 8?", "answer": 4}],
        [],
        4,
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_rows_are_reported_and_good_rows_survive(case, tmp_path):
    lines, expected, n_kept = BAD_CASES[case]
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD[0], *lines, GOOD[1]])
    res = ingest(cfg(difficulty="difficulty"), path)
    got = list(zip(res.rejected["reason"], res.rejected["field"], strict=True))
    assert got == expected
    assert res.kept.height == n_kept
    assert {"7", "42"} <= set(res.kept["answer"])  # the good rows survive
    bad_row = 2 if case == "duplicate prompt" else 1  # the first occurrence is kept, the later one dropped
    assert res.rejected["row"].to_list() == ([bad_row] if expected else [])
    dropped = {bad_row} if expected and expected[0][0] not in D.FLAG_ONLY else set()
    assert res.kept["row"].to_list() == [r for r in range(len(lines) + 2) if r not in dropped]
    assert all(len(v) <= D.REJECT_VALUE_CHARS for v in res.rejected["value"])
    assert summarize(res).startswith(f"kept {n_kept} of {len(lines) + 2} rows")


def test_label_rejection_keeps_row_with_null_label(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            b'{"question": "Q1?", "answer": "1", "difficulty": NaN, "q": "yes"}',
            {"question": "Q2?", "answer": "2", "difficulty": 3, "q": 2.0},
            {"question": "Q3?", "answer": "3", "difficulty": "4", "q": False},
        ],
    )
    res = ingest(cfg(difficulty="difficulty", quality="q"), path)
    assert res.kept["difficulty"].to_list() == [None, 3.0, 4.0]
    assert res.kept["quality"].to_list() == [1.0, None, 0.0]
    assert sorted(zip(res.rejected["field"], res.rejected["reason"], strict=True)) == [
        ("difficulty", "invalid label"),
        ("q", "invalid label"),
    ]
    assert "flagged (row kept): invalid label 2" in summarize(res)


def test_math_style_level_text_is_a_difficulty(tmp_path):
    """MATH's `level` column holds "Level 1".."Level 5" (and "Level ?" on a few rows): the number is the label,
    the unknown level is flagged with the row kept."""
    rows = [{"question": f"Q{i}?", "answer": str(i), "level": lv} for i, lv in enumerate(["Level 5", "level 2", "Level ?"])]
    res = ingest(cfg(difficulty="level"), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.kept["difficulty"].to_list() == [5.0, 2.0, None]
    assert list(zip(res.rejected["row"], res.rejected["reason"], strict=True)) == [(2, "invalid label")]


def test_csv_bad_bytes_are_replaced_and_flagged(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"question,answer\nWhat is 2+2?,4\nCaf\xe9 has 3 cups. How many?,3\n")
    res = ingest(cfg(), path)
    assert res.kept.height == 2 and "\ufffd" in res.kept["prompt"][1]
    assert list(zip(res.rejected["row"], res.rejected["reason"], strict=True)) == [(1, "invalid UTF-8")]


def test_all_lines_broken_gives_empty_kept_table(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [b"{oops", b"nope"])
    res = ingest(cfg(), path)
    assert res.kept.height == 0 and res.kept.columns[:5] == ["id", "prompt", "answer", "answer_raw", "row"]
    assert res.rejected["reason"].to_list() == ["invalid JSON", "invalid JSON"]


def test_answer_timeout_is_its_own_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(
        D,
        "normalize_answers",
        lambda golds, timeout_s: [NormalizedAnswer("timeout", "", "over 5 s")] * len(golds),
    )
    res = ingest(cfg(), write_jsonl(tmp_path / "d.jsonl", GOOD))
    assert res.rejected["reason"].to_list() == ["answer timeout"] * 2


@pytest.mark.parametrize(
    ("option", "kw", "missing", "closest"),
    [
        ("prompt", {"prompt": "questoin"}, "questoin", "question"),
        ("answer", {"answer": "solution"}, "solution", None),
        ("prompt", {"prompt": "{body} {question}"}, "body", None),
        ("topic", {"topic": "topics"}, "topics", "topic"),
    ],
)
def test_wrong_column_names_raise_with_the_fix(option, kw, missing, closest, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    with pytest.raises(IngestError) as err:
        ingest(cfg(**kw), path)
    msg = str(err.value)
    assert f"'{missing}'" in msg and "Available columns: ['question', 'answer', 'topic', 'difficulty']" in msg
    assert f"--{option} " in msg and f"data.{option}=" in msg
    if closest:
        assert f"Closest: '{closest}'" in msg and f"data.{option}={closest}" in msg


@pytest.mark.parametrize("option", ["labelled", "defect"])
def test_wrong_column_of_a_config_only_field_names_no_cli_option(option, tmp_path):
    """labelled and defect have no `saerl ingest` option: the fix names the config field only (it named a
    --labelled option the command does not have)."""
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    with pytest.raises(IngestError) as err:
        ingest(cfg(**{option: "topics"}), path)
    assert f"--{option}" not in str(err.value) and f"Fix: data.{option}=topic (config)" in str(err.value)


def test_template_typo_suggests_the_fixed_template(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"body": "Ann has 2 pens.", "question": "How many?", "answer": "2"}]
    )
    with pytest.raises(IngestError, match=r"data.prompt='\{body\} \{question\}'"):
        ingest(cfg(prompt="{body} {questoin}"), path)


# ------------------------------------------------------------------------------------ mapping and outputs


def test_render_prompt_template_and_field():
    row = {"body": "Seven apples are in a basket.", "question": "How many?", "n": 3}
    assert render_prompt("{body} {question}", row) == "Seven apples are in a basket. How many?"
    assert render_prompt("question", row) == "How many?"
    assert render_prompt("n", row) == "3"
    with pytest.raises(D.MissingFieldError) as err:
        render_prompt("{body} {missing}", row)
    assert err.value.field == "missing"


def test_template_format_spec_that_does_not_fit_names_template_and_row(tmp_path):
    """A format spec a value cannot take ('{n:d}' on text) is an IngestError naming the row, the template and
    the fix, not a bare ValueError from str.format."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"n": "3", "answer": "3"}])
    with pytest.raises(IngestError, match=r"row 0: prompt template 'Count \{n:d\}' .*Unknown format code.*plain"):
        ingest(cfg(prompt="Count {n:d}"), path)


def test_an_empty_template_field_is_a_missing_field_not_a_prompt_without_it(tmp_path):
    """'{idx}: {question}' kept a row whose question was "" as the prompt '1: ', and '{body} {question}' kept a row
    without its question: an empty or whitespace-only field a template uses is missing, named like a null one."""
    rows = [{"idx": 0, "body": "Ann has 2 pens.", "question": "How many?", "answer": "2"},
            {"idx": 1, "body": "Bo has 3 pens.", "question": "", "answer": "3"},
            {"idx": 2, "body": " \n", "question": "What is 4+4?", "answer": "8"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    res = ingest(cfg(prompt="{idx}: {question}"), path)
    assert res.kept["prompt"].to_list() == ["0: How many?", "2: What is 4+4?"]
    assert [(r, f, why) for r, f, why, _ in res.rejected.rows()] == [(1, "question", D.MISSING_FIELD)]
    res = ingest(cfg(prompt="{body} {question}"), path)
    assert res.kept["prompt"].to_list() == ["Ann has 2 pens. How many?"]
    assert [(r, f) for r, f, _, _ in res.rejected.rows()] == [(1, "question"), (2, "body")]
    with pytest.raises(D.MissingFieldError):
        render_prompt("{body} {question}", {"body": "x", "question": "\t"})
    assert render_prompt("{n} apples", {"n": 0}) == "0 apples"  # a falsy number is a value, not a blank
    res = ingest(cfg(prompt="question"), path)  # one field, not a template: an empty one is an empty prompt
    assert [(r, f, why) for r, f, why, _ in res.rejected.rows()] == [(1, "prompt", D.EMPTY_PROMPT)]


def test_a_duplicate_id_names_the_row_it_repeats_and_the_summary_says_how_to_fix_the_mapping(tmp_path):
    """A duplicate id said only its value ('exercise.2.2.13'), while a duplicate prompt names the first row; on
    CollegeMath 479 distinct problems were dropped so, with no hint that the --id field is not unique."""
    rows = [{"k": "ex.1", "question": "A?", "answer": "1"}, {"k": "ex.2", "question": "B?", "answer": "2"},
            {"k": "ex.1", "question": "C?", "answer": "3"}, {"k": "ex.1", "question": "D?", "answer": "4"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    res = ingest(cfg(id="k"), path)
    assert res.rejected.rows() == [(2, "k", D.DUPLICATE_ID, "same as row 0: ex.1"),
                                   (3, "k", D.DUPLICATE_ID, "same as row 0: ex.1")]
    text = summarize(res)
    assert text.splitlines()[0] == "kept 2 of 4 rows; rejected 2: duplicate id 2"
    assert text.splitlines()[1] == (
        "hint: 2 rows share an id with an earlier row: the id field 'k' is not unique. Leave --id out (saerl ingest) "
        "or data.id unset (config) to use content-hash ids, or make the ids unique")
    hashed = ingest(cfg(), path)  # the hint's fix keeps every distinct problem
    assert hashed.kept.height == 4 and summarize(hashed) == "kept 4 of 4 rows; rejected 0"


def test_template_row_missing_a_field_is_rejected(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"body": "Ann has 2 pens.", "question": "How many?", "answer": "2"},
            {"question": "What is 3+3?", "answer": "6"},
        ],
    )
    res = ingest(cfg(prompt="{body} {question}"), path)
    assert res.kept["prompt"].to_list() == ["Ann has 2 pens. How many?"]
    assert list(zip(res.rejected["reason"], res.rejected["field"], strict=True)) == [
        ("missing field", "body")
    ]


def test_ids_hash_or_mapped_column(tmp_path):
    rows = [
        {"k": 60, "question": "  What is 6 * 7? ", "answer": "42"},
        {"k": 61, "question": "Q?", "answer": "1"},
        {"k": 60, "question": "Other?", "answer": "2"},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    hashed = ingest(cfg(), path)
    assert hashed.kept["id"][0] == hashlib.sha256(b"What is 6 * 7?").hexdigest()[: D.ID_HEX_CHARS]
    mapped = ingest(cfg(id="k"), path)
    assert mapped.kept["id"].to_list() == ["60", "61"]
    assert mapped.rejected["reason"].to_list() == ["duplicate id"]


def test_max_rows_and_write_ingest(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [*GOOD, {"question": "", "answer": "1"}])
    res = ingest(cfg(max_rows=2, topic="topic"), path)
    assert (res.kept.height, res.rejected.height, res.summary["rows"]) == (2, 0, 2)
    counts = write_ingest(res, tmp_path / "out")
    assert counts == {"prompts": 2, "rejected": 0}
    back = pl.read_parquet(tmp_path / "out" / "prompts.parquet")
    assert back.columns == ["id", "prompt", "answer", "answer_raw", "row", "topic"]
    assert pl.read_parquet(tmp_path / "out" / "rejected.parquet").columns == [
        "row",
        "field",
        "reason",
        "value",
    ]


def test_sample_dataset_shows_each_shape_and_rejection():
    res = ingest(DataConfig(topic="topic", difficulty="difficulty"), sample_path())
    reasons = res.summary["reasons"]
    assert reasons == {"empty prompt": 2, "duplicate prompt": 1, "missing field": 1, "unparseable answer": 1}
    assert res.summary["flags"] == {"invalid label": 1}
    assert 50 <= res.kept.height <= 70
    raw_to_answer = dict(zip(res.kept["answer_raw"], res.kept["answer"], strict=True))
    assert raw_to_answer["9 (apples)"] == "9"
    assert raw_to_answer["27.0"] == "27"
    assert raw_to_answer["$\\frac{3}{8}$"] == "\\frac{3}{8}"
    assert raw_to_answer["2,625"] == "2625"
    assert any(r.endswith("#### 30") and a == "30" for r, a in raw_to_answer.items())
    assert res.kept["difficulty"].null_count() == 1
    assert all(not math.isnan(d) for d in res.kept["difficulty"].drop_nulls())


def test_thousands_of_numeric_rows_ingest_fast(tmp_path):
    rows = [
        {"question": f"What is {i} + {i + 1}?", "answer": f"work...\n#### {2 * i + 1:,}"} for i in range(5000)
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    start = time.perf_counter()
    res = ingest(cfg(), path)
    assert time.perf_counter() - start < 5.0
    assert res.kept.height == 5000 and res.kept["answer"][4999] == "9999"


def test_labelled_column_is_mapped_as_boolean(tmp_path):
    import json

    from saerl.config import DataConfig
    from saerl.data import ingest

    src = tmp_path / "l.jsonl"
    rows = [{"q": "1+1?", "a": "2", "lab": True}, {"q": "2+2?", "a": "4", "lab": 0}, {"q": "3+3?", "a": "6", "lab": "yes"}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    kept = ingest(DataConfig(source="file", prompt="q", answer="a", labelled="lab"), src).kept
    assert kept["labelled"].to_list() == [True, False, True]


def test_defect_kind_column_is_ingested_as_text(tmp_path):
    rows = [{**GOOD[0], "kind": "none"}, {**GOOD[1], "kind": 7}, {"question": "What is 2 + 2?", "answer": "4"}]
    res = ingest(cfg(defect="kind"), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.kept["defect"].to_list() == ["none", "7", None]
    assert res.kept.schema["defect"] == pl.String


def test_csv_row_with_unquoted_comma_is_rejected_with_the_fix(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,answer\nAdd 2, 3,5\nWhat is 2+2?,4\n"Add 2, 4",6\nWhat is 1+1?,2,,7\n')
    res = ingest(cfg(prompt="prompt"), path)
    assert res.kept["prompt"].to_list() == ["What is 2+2?", "Add 2, 4"]  # a quoted comma is fine
    assert res.kept["row"].to_list() == [1, 2]
    assert res.rejected["row"].to_list() == [0, 3]
    assert set(res.rejected["reason"]) == {D.EXTRA_FIELDS}
    first = res.rejected["value"][0]
    assert first.startswith("line 2: 3 fields for 2 columns") and "quote" in first
    assert first.endswith("Add 2, 3,5")
    assert res.rejected["value"][1].startswith("line 5: 4 fields for 2 columns")
    assert summarize(res) == "kept 2 of 4 rows; rejected 2: too many fields 2"


def test_csv_extra_field_line_numbers_count_quoted_newlines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('question,answer\n"Two lines,\nof text?",1\nAdd 2, 3,5\n')
    res = ingest(cfg(), path)
    assert res.kept["row"].to_list() == [0]
    assert res.rejected["value"][0].startswith("line 4: 3 fields")


def test_json_array_file_reads_every_element(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("\n  " + json.dumps([*GOOD, 5, {"question": "What is 1+1?", "answer": "2"}], indent=2))
    res = ingest(cfg(topic="topic"), path)
    assert res.kept["row"].to_list() == [0, 1, 3]
    assert res.kept["answer"].to_list() == ["7", "42", "2"]
    assert res.kept["topic"].to_list() == ["add", "mul", None]
    assert list(zip(res.rejected["row"], res.rejected["reason"], strict=True)) == [(2, D.INVALID_JSON)]
    assert res.rejected["value"][0] == "element 2: not an object: 5"
    assert summarize(res).startswith("kept 3 of 4 rows")
    lines = tmp_path / "lines.json"  # a .json file of JSON lines is still read line by line
    write_jsonl(lines, GOOD)
    assert ingest(cfg(), lines).kept.height == 2


def test_broken_json_array_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n {"question": "A?", "answer": "1"},\n {"question": "B?" "answer": "2"}\n]')
    with pytest.raises(IngestError, match=r"line 3 column .*convert the file to jsonl"):
        ingest(cfg(), path)


def test_missing_topic_or_defect_is_null_not_nan_text(tmp_path):
    rows = [
        b'{"question": "Q1?", "answer": "1", "topic": NaN, "kind": NaN}',
        b'{"question": "Q2?", "answer": "2", "topic": "add", "kind": "none"}',
        b'{"question": "Q3?", "answer": "3", "topic": null, "kind": 7}',
    ]
    res = ingest(cfg(topic="topic", defect="kind"), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.kept["topic"].to_list() == [None, "add", None]
    assert res.kept["defect"].to_list() == [None, "none", "7"]
    assert D._label("topic", math.nan) is None and D._label("defect", float("nan")) is None
    parquet = tmp_path / "d.parquet"
    frame = pl.DataFrame({"question": ["A?", "B?"], "answer": ["1", "2"], "topic": [math.nan, 1.0]})
    frame.write_parquet(parquet)
    assert ingest(cfg(topic="topic"), parquet).kept["topic"].to_list() == [None, "1.0"]


def test_big_ints_mixed_with_floats_keep_their_digits(tmp_path):
    big = 2**53 + 1  # 9007199254740993: not exact as a float
    rows = [{"k": big, "question": "Q1?", "answer": big}, {"k": 1.5, "question": "Q2?", "answer": 2.5}]
    res = ingest(cfg(id="k"), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.kept["id"].to_list() == ["9007199254740993", "1.5"]
    assert res.kept["answer_raw"].to_list() == ["9007199254740993", "2.5"]
    small = [{"k": 3, "question": "Q1?", "answer": "1"}, {"k": 1.5, "question": "Q2?", "answer": "2"}]
    assert read_table(write_jsonl(tmp_path / "s.jsonl", small))["k"].to_list() == ["3", "1.5"]  # as written


def test_ints_beside_floats_render_as_written_in_templates_and_ids(tmp_path):
    """A jsonl column of 3 and 2.5 was read as floats: the prompt said 'What is 3.0 + 4?' and the id was '10.0'."""
    rows = [{"k": 10, "a": 3, "b": 4, "answer": "7", "d": 5}, {"k": 11.5, "a": 2.5, "b": 1, "answer": "3.5", "d": 6.5},
            {"k": 12, "a": 1, "b": 1, "answer": "2", "d": math.nan}]
    res = ingest(cfg(prompt="What is {a} + {b}?", id="k", difficulty="d"), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.kept["prompt"].to_list() == ["What is 3 + 4?", "What is 2.5 + 1?", "What is 1 + 1?"]
    assert res.kept["id"].to_list() == ["10", "11.5", "12"]
    assert res.kept["difficulty"].to_list() == [5.0, 6.5, None]
    assert res.rejected.rows() == [(2, "d", D.INVALID_LABEL, "NaN")]  # a NaN label is still flagged, not dropped


def test_an_empty_id_is_a_missing_id_not_a_silent_content_hash(tmp_path):
    rows = [{"k": "", "question": "A?", "answer": "1"}, {"k": " ", "question": "B?", "answer": "2"},
            {"k": "c", "question": "C?", "answer": "3"}]
    res = ingest(cfg(id="k"), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.kept["id"].to_list() == ["c"]
    assert [(r, f, why) for r, f, why, _ in res.rejected.rows()] == [(0, "k", D.MISSING_FIELD), (1, "k", D.MISSING_FIELD)]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_float_answers_in_exponent_notation_stay_numbers(fmt, tmp_path):
    """str(1e-07) is '1e-07' and polars/pandas write such floats to csv so; math-verify alone reads it as e*1 - 7."""
    from saerl.verify import verify_batch

    path = tmp_path / f"d.{fmt}"
    frame = pl.DataFrame({"question": ["A?", "B?", "C?"], "answer": [1e16, 1e-07, 27.0]})
    frame.write_parquet(path) if fmt == "parquet" else frame.write_csv(path)
    kept = ingest(cfg(), path).kept
    assert kept["answer"].to_list() == ["10000000000000000", "0.0000001", "27"]
    got = verify_batch(["#### 10000000000000000", "#### 0.0000001", "#### 27"], kept["answer"].to_list())
    assert [r.status for r in got] == ["correct"] * 3


def test_write_ingest_never_leaves_half_a_file(tmp_path, monkeypatch):
    res = ingest(cfg(), write_jsonl(tmp_path / "d.jsonl", GOOD))
    out = tmp_path / "out"
    write_ingest(res, out)

    def killed_midway(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.DataFrame, "write_parquet", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        write_ingest(res, out)
    monkeypatch.undo()
    assert pl.read_parquet(out / "prompts.parquet")["answer"].to_list() == ["7", "42"]


def test_real_answer_shapes_keep_right_golds_and_report_the_rest(tmp_path):
    """Shapes from ASDiv, CollegeMath and MATH: a clock time and a multi-part answer are reported (they became
    the hour and one of the parts), a matrix stays a matrix (it became its last number), an escaped dollar with
    LaTeX thousands is a number (it was unparseable), and a unit's power is not a second answer."""
    answers = ["3:30 p.m.", "236 adult, 342 child", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\$1,\\!234.56",
               "$0.435 \\mathrm{~km}^{2}$", "9 (apples)", "0.\\overline{3}"]
    rows = [{"question": f"Q{i}?", "answer": a} for i, a in enumerate(answers)]
    res = ingest(cfg(), write_jsonl(tmp_path / "d.jsonl", rows))
    assert list(zip(res.rejected["row"], res.rejected["reason"], strict=True)) == [
        (0, "unparseable answer"), (1, "unparseable answer")]
    assert res.kept["answer"].to_list() == [
        "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "1234.56", "0.435", "9", "\\frac{1}{3}"]


def test_a_wrong_format_names_the_setting_and_the_format_the_file_looks_like(tmp_path):
    """`saerl ingest x.jsonl --format parquet` said only 'cannot read ... as parquet'."""
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    with pytest.raises(IngestError, match=r"as parquet \(it looks like jsonl: set data.format=jsonl or --format jsonl"):
        ingest(cfg(format="parquet"), path)


def test_labels_optional_leaves_out_the_label_columns_a_file_lacks(tmp_path):
    """A held-out file read with the training data's mapping (labels_optional): a mapped label the file lacks is
    left out of the result, one it has is kept; without the flag the missing column is an error naming it. A
    missing prompt or answer column is an error either way."""
    f = tmp_path / "held.jsonl"
    f.write_text("".join(json.dumps({"q": f"q{i}?", "a": str(i), "topic": "t"}) + "\n" for i in range(3)))
    cfg = DataConfig(prompt="q", answer="a", topic="topic", difficulty="level")
    with pytest.raises(D.IngestError, match="difficulty field 'level' is not in the data"):
        D.ingest(cfg, f)
    kept = D.ingest(cfg, f, labels_optional=True).kept
    assert kept.height == 3 and kept["topic"].to_list() == ["t"] * 3 and "difficulty" not in kept.columns
    with pytest.raises(D.IngestError, match="answer field 'answer' is not in the data"):
        D.ingest(cfg.model_copy(update={"answer": "answer"}), f, labels_optional=True)
