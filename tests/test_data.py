"""saerl.data: reading four formats, the column mapping, every rejection reason, outputs."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import polars as pl
import pytest
from cpu_clock import cpu_clock

from saerl import data as D
from saerl.config import DataConfig
from saerl.data import IngestError, ingest, load_table, prompt_parts, sample_path, summarize, write_ingest
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


def read_table(path, fmt: str = "auto", hf_split: str | None = None):
    """The data file as ingest reads it, its frame alone."""
    return load_table(path, fmt, hf_split).frame


def render_prompt(template_or_field: str, row: dict) -> str:
    """One row's prompt text, as ingest renders it."""
    return prompt_parts(template_or_field, row)[0]


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
    # each line says what the field must hold (the detail was empty: "NaN" beside "invalid label", no more)
    detail = dict(zip(res.rejected["field"], res.rejected["detail"], strict=True))
    assert "'difficulty' must hold finite numbers" in detail["difficulty"] and "nan is none" in detail["difficulty"]
    assert "'q' must hold a number in [0, 1]" in detail["q"] and "2.0 is neither" in detail["q"]


def test_the_summary_counts_flags_of_kept_rows_only(tmp_path):
    """A duplicate prompt with an invalid label is rejected (the duplicate) and flagged (the label): the summary said
    'flagged (row kept): invalid label 1' of a row that was not kept. Flags are counted over kept rows; the
    rejected row keeps both lines in rejected.parquet."""
    rows = [{"question": "Q1?", "answer": "1", "diff": 1}, {"question": "Q2?", "answer": "2", "diff": 2},
            {"question": "Q1?", "answer": "1", "diff": "x"}, {"question": "Q3?", "answer": "3", "diff": "y"}]
    res = ingest(cfg(difficulty="diff"), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.kept["row"].to_list() == [0, 1, 3]
    assert sorted(res.rejected.select("row", "reason").rows()) == [
        (2, D.DUPLICATE_PROMPT), (2, D.INVALID_LABEL), (3, D.INVALID_LABEL)]
    line = summarize(res).splitlines()[0]
    assert line == "kept 3 of 4 rows; rejected 1: duplicate prompt 1; flagged (row kept): invalid label 1", line
    assert res.summary["flags"] == {D.INVALID_LABEL: 1}  # the summary the ingest manifest keeps says the same
    dropped_only = ingest(cfg(difficulty="diff"), write_jsonl(tmp_path / "e.jsonl", rows[:3]))
    assert "flagged" not in summarize(dropped_only).splitlines()[0]
    assert "(it became null; the row is kept unless rejected for another reason)" in summarize(dropped_only)


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
        lambda golds, timeout_s, progress=False: [NormalizedAnswer("timeout", "", "over 5 s")] * len(golds),
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
def test_wrong_column_of_labelled_or_defect_names_the_cli_option_too(option, tmp_path):
    """labelled and defect are options of `saerl ingest` now: the fix names both forms, as for the others."""
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    with pytest.raises(IngestError) as err:
        ingest(cfg(**{option: "topics"}), path)
    assert f"data.{option}=topic (config, or an override of saerl run; `saerl ingest --{option} topic`)" in str(err.value)


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
    with pytest.raises(D.NonTextError, match="field 'n' holds a number; map data.prompt"):
        render_prompt("n", row)  # a number is no prompt (it was kept as the text '3'); in a template it is a value
    assert render_prompt("{n} apples", row) == "3 apples"
    with pytest.raises(D.MissingFieldError) as err:
        render_prompt("{body} {missing}", row)
    assert err.value.field == "missing"


def test_a_template_format_spec_that_does_not_fit_one_row_rejects_that_row_alone(tmp_path):
    """A format spec a value cannot take ('{n:d}' on text) refused the whole file, every good row with it. Now that
    row alone is rejected (reason 'template error', its field and value, the template and the fix in the detail)."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"n": 3, "answer": "3"}, {"n": "x", "answer": "4"},
                                              {"n": 5, "answer": "5"}])
    res = ingest(cfg(prompt="Count {n:d}"), path)
    assert res.kept["prompt"].to_list() == ["Count 3", "Count 5"]
    (row, fld, why, value, detail), = res.rejected.select("row", "field", "reason", "value", "detail").rows()
    assert (row, fld, why, value) == (1, "n", D.TEMPLATE_ERROR, "x")
    assert re.search(r"prompt template 'Count \{n:d\}' cannot format field 'n'.*Unknown format code.*plain", detail)
    assert f"hint: 1 of 3 rows (33%) were rejected as template error: {detail}" in D.summarize(res)


def test_an_empty_template_field_is_a_missing_field_not_a_prompt_without_it(tmp_path):
    """'{idx}: {question}' kept a row whose question was "" as the prompt '1: ', and '{body} {question}' kept a row
    without its question: an empty or whitespace-only field a template uses is missing, named like a null one."""
    rows = [{"idx": 0, "body": "Ann has 2 pens.", "question": "How many?", "answer": "2"},
            {"idx": 1, "body": "Bo has 3 pens.", "question": "", "answer": "3"},
            {"idx": 2, "body": " \n", "question": "What is 4+4?", "answer": "8"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    res = ingest(cfg(prompt="{idx}: {question}"), path)
    assert res.kept["prompt"].to_list() == ["0: How many?", "2: What is 4+4?"]
    assert [(r, f, why) for r, f, why, *_ in res.rejected.rows()] == [(1, "question", D.MISSING_FIELD)]
    res = ingest(cfg(prompt="{body} {question}"), path)
    assert res.kept["prompt"].to_list() == ["Ann has 2 pens. How many?"]
    assert [(r, f) for r, f, *_ in res.rejected.rows()] == [(1, "question"), (2, "body")]
    with pytest.raises(D.MissingFieldError):
        render_prompt("{body} {question}", {"body": "x", "question": "\t"})
    assert render_prompt("{n} apples", {"n": 0}) == "0 apples"  # a falsy number is a value, not a blank
    res = ingest(cfg(prompt="question"), path)  # one field, not a template: an empty one is an empty prompt
    assert [(r, f, why) for r, f, why, *_ in res.rejected.rows()] == [(1, "prompt", D.EMPTY_PROMPT)]


def test_a_duplicate_id_names_the_row_it_repeats_and_the_summary_says_how_to_fix_the_mapping(tmp_path):
    """A duplicate id said only its value ('exercise.2.2.13'), while a duplicate prompt names the first row; on
    CollegeMath 479 distinct problems were dropped so, with no hint that the --id field is not unique."""
    rows = [{"k": "ex.1", "question": "A?", "answer": "1"}, {"k": "ex.2", "question": "B?", "answer": "2"},
            {"k": "ex.1", "question": "C?", "answer": "3"}, {"k": "ex.1", "question": "D?", "answer": "4"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    res = ingest(cfg(id="k"), path)
    assert res.rejected.rows() == [(2, "k", D.DUPLICATE_ID, "same as row 0: ex.1", None),
                                   (3, "k", D.DUPLICATE_ID, "same as row 0: ex.1", None)]
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
        "detail",
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
    with cpu_clock() as clock:
        res = ingest(cfg(), path)
    assert clock.seconds < 5.0
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
    assert summarize(res).splitlines() == [
        "kept 2 of 4 rows; rejected 2: too many fields 2",
        "hint: 2 of 4 rows (50%) have more fields than the csv header: quote each field that holds a comma "
        '("Add 2, 3"), or convert the file to jsonl']


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


def test_a_key_repeated_with_another_value_rejects_its_row_alone(tmp_path):
    rows = [
        b'{"question": "What is 2+2?", "answer": "4", "answer": "5"}',  # which answer? json.loads kept "5"
        b'{"question": "What is 3+3?", "answer": "6", "answer": "6"}',  # the same value twice: harmless
        b'{"question": "What is 1+1?", "answer": "2", "meta": {"a": 1, "a": 2}}',  # nested too
        b'{"question": "What is 5+5?", "answer": "10"}',
    ]
    res = ingest(cfg(), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.kept["row"].to_list() == [1, 3]
    assert res.kept["answer"].to_list() == ["6", "10"]
    assert res.rejected["row"].to_list() == [0, 2]
    assert set(res.rejected["reason"]) == {D.INVALID_JSON}
    assert res.rejected["value"][0].startswith("line 1: key 'answer' appears more than once with different values "
                                               '("4" and "5"): keep the one you mean')
    array = tmp_path / "d.json"  # a JSON array: the element alone, the others read one by one
    array.write_text("[" + ",".join(r.decode() for r in rows) + "]")
    res = ingest(cfg(), array)
    assert res.kept["row"].to_list() == [1, 3]
    assert res.rejected["value"][0].startswith("element 0: key 'answer' appears more than once")


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
    assert [row[:4] for row in res.rejected.rows()] == [(2, "d", D.INVALID_LABEL, "NaN")]  # a NaN label is flagged, not dropped


def test_an_empty_id_is_a_missing_id_not_a_silent_content_hash(tmp_path):
    rows = [{"k": "", "question": "A?", "answer": "1"}, {"k": " ", "question": "B?", "answer": "2"},
            {"k": "c", "question": "C?", "answer": "3"}]
    res = ingest(cfg(id="k"), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.kept["id"].to_list() == ["c"]
    assert [(r, f, why) for r, f, why, *_ in res.rejected.rows()] == [(0, "k", D.MISSING_FIELD),
                                                                      (1, "k", D.MISSING_FIELD)]


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
    assert pl.read_parquet(out / "prompts.parquet").sort("row")["answer"].to_list() == ["7", "42"]


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


# ------------------------------------------------------------------------------- non-text prompts, nested fields

CHAT_ROWS = [
    {"prompt": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 0+1?"}],
     "answer": "1"},
    {"prompt": [{"role": "user", "content": "What is 2+2?"}], "answer": "4"},
    {"prompt": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "B"},
                {"role": "user", "content": "C?"}], "answer": "3"},
]


def _write_rows(fmt: str, rows: list[dict], tmp_path: Path) -> Path:
    """`rows` as a jsonl, JSON array, parquet file or HF save_to_disk folder (nested values as structs/lists)."""
    if fmt == "jsonl":
        return write_jsonl(tmp_path / "d.jsonl", rows)
    if fmt == "json":
        (tmp_path / "d.json").write_text(json.dumps(rows))
        return tmp_path / "d.json"
    if fmt == "parquet":
        pl.DataFrame(rows).write_parquet(tmp_path / "d.parquet")
        return tmp_path / "d.parquet"
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    return tmp_path / "hf"


def test_non_text_prompts_are_rejected_naming_the_field_and_the_fix(tmp_path):
    """The auditor's bad.jsonl: prompts 12345, ["What is","1+1?"], {"text":"nested?"} and true were kept as
    their JSON text, unflagged. Each is now a 'non-text prompt' whose detail says what the field holds and
    what to map, and the summary's hint counts the kinds."""
    rows = [{"q": 12345, "sol": "1"}, {"q": ["What is", "1+1?"], "sol": "2"},
            {"q": {"text": "nested?"}, "sol": "3"}, {"q": True, "sol": "4"}, {"q": "What is 2+3?", "sol": "5"}]
    res = ingest(cfg(prompt="q", answer="sol"), write_jsonl(tmp_path / "bad.jsonl", rows))
    assert res.kept["prompt"].to_list() == ["What is 2+3?"]
    assert res.rejected.select("row", "field", "reason", "value").rows() == [
        (0, "q", D.NON_TEXT_PROMPT, "12345"), (1, "q", D.NON_TEXT_PROMPT, '["What is", "1+1?"]'),
        (2, "q", D.NON_TEXT_PROMPT, '{"text": "nested?"}'), (3, "q", D.NON_TEXT_PROMPT, "true")]
    details = res.rejected["detail"].to_list()
    assert details[0] == "field 'q' holds a number; map data.prompt (--prompt) to a text field or a template"
    assert details[1] == "field 'q' holds a list; map data.prompt (--prompt) to a text field or a template"
    assert details[2].startswith("field 'q' holds a struct with fields ['text']; name its text field with a dotted "
                                 "path (data.prompt=q.text)")
    assert details[3].startswith("field 'q' holds a boolean;")
    hint = summarize(res).splitlines()[1]
    assert hint.startswith("hint: 4 of 5 rows (80%) have a prompt field that holds no text (a number (1), a list "
                           "(1), a struct (1), a boolean (1)): map --prompt")
    nested = ingest(cfg(prompt="q.text", answer="sol"), write_jsonl(tmp_path / "n.jsonl", rows))  # the fix works
    assert nested.kept["prompt"].to_list() == ["nested?"]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "hf"])
def test_a_chat_prompt_is_its_user_message_in_every_format(fmt, tmp_path):
    """trl's conversational format was kept as JSON text from jsonl and as a Python repr from parquet, so the
    prompt and its content-hash id depended on the file format. A chat is now its one user message (the system
    turn left out and counted in the summary); a chat with two user turns is a non-text prompt."""
    res = ingest(cfg(prompt="prompt"), _write_rows(fmt, CHAT_ROWS, tmp_path))
    assert res.kept["prompt"].to_list() == ["What is 0+1?", "What is 2+2?"]
    assert res.kept["id"][0] == hashlib.sha256(b"What is 0+1?").hexdigest()[: D.ID_HEX_CHARS]
    assert res.rejected.select("row", "field", "reason").rows() == [(2, "prompt", D.NON_TEXT_PROMPT)]
    assert res.rejected["detail"][0].startswith("field 'prompt' holds a chat with 2 user turns")
    assert (res.summary["chat_prompts"], res.summary["dropped_turns"]) == (2, {"system": 1})
    assert summarize(res).splitlines()[1] == ("chat prompts: 2 prompts were chat message lists, read as their one "
                                              "user message; other turns left out: system 1")


def test_saerls_own_trl_and_verl_exports_ingest_back_to_the_same_prompts(tmp_path):
    """`saerl export --format trl` (and verl) write the prompt as a one-message chat and verl's gold at
    reward_model.ground_truth: both read back to the text and answers exported."""
    from saerl.export import trl_table, verl_table

    frame = pl.DataFrame({"position": [0, 1], "id": ["a", "b"], "prompt": ["What is 1+1?", "Half of 8?"],
                          "answer": ["2", "4"], "ramp": [0, 0]})
    trl_table(frame).write_parquet(tmp_path / "trl.parquet")
    verl_table(frame).write_parquet(tmp_path / "verl.parquet")
    trl = ingest(cfg(prompt="prompt", id="id"), tmp_path / "trl.parquet").kept
    verl = ingest(cfg(prompt="prompt", answer="reward_model.ground_truth", id="extra_info.id"),
                  tmp_path / "verl.parquet").kept
    for kept in (trl, verl):
        assert kept.select("id", "prompt", "answer").rows() == [("a", "What is 1+1?", "2"),
                                                                ("b", "Half of 8?", "4")]


VERL_ROWS = [{"data_source": "gsm8k", "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
              "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
              "extra_info": {"index": i, "question": f"What is {i} + {i}?"}} for i in range(4)]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_verl_layout_answer_is_a_dotted_path_and_a_struct_answer_says_so(fmt, tmp_path):
    """verl keeps the gold at reward_model.ground_truth: --answer reward_model rejected every row as
    'unparseable answer' with the struct as its value. A struct answer is now its own reason whose detail and
    hint name the dotted path; the dotted path (also in a template) reads the gold."""
    path = _write_rows(fmt, VERL_ROWS, tmp_path)
    res = ingest(cfg(prompt="prompt", answer="reward_model"), path)
    assert res.kept.height == 0 and set(res.rejected["reason"]) == {D.STRUCT_ANSWER}
    assert res.rejected["value"][1] == '{"style": "rule", "ground_truth": "2"}'
    fix = "--answer reward_model.ground_truth (saerl ingest) or data.answer=reward_model.ground_truth (config)"
    assert fix in res.rejected["detail"][0]
    assert summarize(res).splitlines()[-1] == (
        "hint: 4 of 4 rows (100%) were rejected as struct answer: field 'reward_model' holds a struct with fields "
        f"['style', 'ground_truth']: name the nested field with a dotted path, e.g. {fix}")
    good = ingest(cfg(prompt="Q: {extra_info.question}", answer="reward_model.ground_truth"), path)
    assert good.rejected.height == 0
    want = [(f"Q: What is {i} + {i}?", str(2 * i)) for i in range(4)]
    assert good.kept.select("prompt", "answer").rows() == want


def test_a_missing_field_lists_nested_fields_and_suggests_the_dotted_path(tmp_path):
    path = _write_rows("parquet", VERL_ROWS, tmp_path)
    with pytest.raises(IngestError) as err:
        ingest(cfg(prompt="prompt", answer="ground_truth"), path)
    assert str(err.value) == (
        "answer field 'ground_truth' is not in the data. Available columns: ['data_source', 'prompt', "
        "'reward_model', 'extra_info']. Nested fields (name one with a dotted path): ['reward_model.style', "
        "'reward_model.ground_truth', 'extra_info.index', 'extra_info.question']. Closest: "
        "'reward_model.ground_truth'. Fix: data.answer=reward_model.ground_truth (config, or an override of saerl "
        "run; `saerl ingest --answer reward_model.ground_truth`).")
    with pytest.raises(IngestError, match=r"prompt field 'extra_info.qestion' is not in the data.*Closest: "
                                          r"'extra_info.question'. Fix: data.prompt='Q: \{extra_info.question\}'"):
        ingest(cfg(prompt="Q: {extra_info.qestion}", answer="reward_model.ground_truth"), path)


def test_a_column_whose_name_holds_dots_wins_over_a_nested_path(tmp_path):
    rows = [{"a.b": "What is 1+2?", "a": {"b": "nested"}, "answer": "3"}]
    assert ingest(cfg(prompt="a.b"), write_jsonl(tmp_path / "d.jsonl", rows)).kept["prompt"][0] == "What is 1+2?"
    assert D.field_value({"x": {"y.z": {"w": 1}}}, "x.y.z.w") == 1  # a nested key holding a dot
    assert D.field_value({"x": {"y": 1}}, "x.q") is None


# --------------------------------------------------------------------------------- answer details and hints


def test_unparseable_answers_keep_the_verifiers_reason_and_many_add_a_hint(tmp_path):
    """rejected.parquet showed only the raw value of an unparseable answer; the verifier's reason is now its
    detail. An empty answer is its own reason. Over HINT_SHARE of the rows rejected for one reason adds a hint
    saying what forms are read and that another field or a dotted path may be meant; under it, none."""
    rows = [{"question": f"Q{i}?", "answer": str(i)} for i in range(40)]
    rows += [{"question": "Clock?", "answer": "3:30 p.m."}, {"question": "Blank?", "answer": ""}]
    res = ingest(cfg(), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.rejected.rows() == [
        (40, "answer", D.UNPARSEABLE_ANSWER, "3:30 p.m.",
         "a clock time is not a number (math-verify reads only its hour)"),
        (41, "answer", D.EMPTY_ANSWER, "", None)]
    assert res.summary["hints"] == []  # 1 of 42 each: under 5%
    many = ingest(cfg(), write_jsonl(tmp_path / "m.jsonl", rows[:10] + [
        {"question": "Multi?", "answer": "236 adult, 342 child"}, {"question": "Clock?", "answer": "3:30 p.m."}]))
    assert many.rejected["detail"].null_count() == 0
    hint = summarize(many).splitlines()[1]
    assert hint.startswith("hint: 2 of 12 rows (17%) have an answer in field 'answer' that is not read as a final "
                           "answer: saerl reads a number")
    assert "detail column of rejected.parquet" in hint
    assert "dotted path (data.answer=reward_model.ground_truth)" in hint


def test_golds_with_decimal_commas_or_thousands_dots_add_a_hint_with_the_fix(tmp_path):
    """A European data set's golds '3,5' and '1.000' were kept with no word: the verifier reads '3,5' as the set {3, 5}
    (3.5 wrong, '5, 3' right) and '1.000' as 1. Over NUMBER_FORMAT_HINT_SHARE of the kept golds so written adds a hint
    that says how they are read and the fix; fewer (an English set's '1,2', a list of two roots) add none."""
    rows = [{"question": f"Q{i}?", "answer": str(i)} for i in range(20)]
    rows += [{"question": "A?", "answer": "3,5"}, {"question": "B?", "answer": "1.000"}, {"question": "C?", "answer": "0,25"}]
    res = ingest(cfg(), write_jsonl(tmp_path / "d.jsonl", rows))
    (hint,) = res.summary["hints"]
    assert hint.startswith("3 of 23 kept golds (13%) look written with a decimal comma or thousands dots ('3,5', "
                           "'1.000', '0,25'): the verifier reads '3,5' as the set {3, 5}")
    assert "'1.000' as 1" in hint and "rewrite those golds with a decimal point and no thousands dots (3.5, 1000)" in hint
    assert res.kept.filter(pl.col("answer_raw") == "1.000")["answer"].to_list() == ["1"]  # read as before, not changed
    rows = [{"question": f"Q{i}?", "answer": str(i)} for i in range(60)] + [{"question": "Roots?", "answer": "1,2"}]
    assert ingest(cfg(), write_jsonl(tmp_path / "e.jsonl", rows)).summary["hints"] == []  # 1 of 61: under the share
    assert D.number_format_hint(["1,000", "2.5", "12,75", "2.500.000"]) is not None  # '1,000' and '2.5' are not so
    assert D.number_format_hint(["1,000", "2.5", "1,2345", "1.50"]) is None


@pytest.mark.parametrize("gold", ["0.125", "0.375", "3.142", "-0.001", "\u22120.625", "2.500", "12.345"])
def test_ordinary_decimals_are_not_taken_for_thousands_dots(gold):
    """'0.125', '3.142' fullmatched the thousands-dots pattern, so a probability or measurement data set with 3 of 100
    golds written to three decimals was told to rewrite them (the verifier reads them right). A leading zero is never
    a thousands group, and a single dotted group counts only as '.000'."""
    plain = [str(i) for i in range(97)]
    assert D.number_format_hint([*plain, gold, gold, gold]) is None
    assert D.THOUSANDS_DOTS.fullmatch(gold) is None


@pytest.mark.parametrize("gold", ["1.000", "12.000", "-5.000", "1.234.567", "2.500.000", "\u2212100.000.000"])
def test_dotted_thousands_still_count(gold):
    assert D.THOUSANDS_DOTS.fullmatch(gold) is not None
    assert D.number_format_hint([*(str(i) for i in range(97)), gold, gold, gold]) is not None


def test_a_file_mostly_not_utf8_hints_at_cp1252_and_the_iconv_line(tmp_path):
    """A Latin-1 / cp1252 file was kept whole with U+FFFD in place of its accents ('Caf\ufffd'), and the hint named
    neither the encoding nor the fix. Over LEGACY_ENCODING_SHARE of the rows flagged invalid UTF-8 names both; a few
    flagged rows keep the plain hint."""
    path = tmp_path / "d.csv"
    path.write_bytes("question,answer\nCaf\xe9 1?,1\nNum\xe9ro 2?,2\nPlain?,3\n".encode("cp1252"))
    res = ingest(cfg(), path)
    assert res.summary["hints"] == [
        "2 of 3 rows (67%) were flagged as invalid UTF-8 (kept, with U+FFFD in place of the bad bytes): the file is "
        "probably cp1252 / Latin-1, not UTF-8. Convert it and ingest again: iconv -f cp1252 -t utf-8 IN > OUT"]
    path.write_bytes("question,answer\nCaf\xe9 1?,1\nPlain?,2\nOther?,3\n".encode("cp1252"))
    (few,) = ingest(cfg(), path).summary["hints"]
    assert "cp1252" not in few and few.startswith("1 of 3 rows (33%) were flagged as invalid UTF-8: see their row")


def test_unicode_variants_of_a_prompt_are_one_row_kept_as_written_with_todays_id(tmp_path):
    """Ingest deduplicated on whitespace alone: a prompt's NFD form and a copy with a zero-width space were kept as
    more rows (trained twice). The duplicate key folds NFC and drops format characters; the first prompt is kept as
    written, and its content-hash id is computed as before (on the text with whitespace collapsed)."""
    nfd = "Cafe\u0301 sells 5 cups. How many?"
    rows = [{"question": nfd, "answer": "5"}, {"question": "Caf\u00e9 sells 5 cups.  How many?", "answer": "5"},
            {"question": "Caf\u00e9\u200b sells 5 cups. How many?", "answer": "5"}, {"question": "\u200b\u200b", "answer": "1"}]
    res = ingest(cfg(), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.kept["prompt"].to_list() == [nfd]
    assert res.kept["id"].to_list() == [hashlib.sha256(nfd.encode()).hexdigest()[: D.ID_HEX_CHARS]]
    assert [(r, why) for r, _, why, *_ in res.rejected.rows()] == [
        (1, D.DUPLICATE_PROMPT), (2, D.DUPLICATE_PROMPT), (3, D.EMPTY_PROMPT)]
    assert D.duplicate_key("\u200fCaf\u00e9\u00ad  x") == D.duplicate_key("Cafe\u0301 x") == "Caf\u00e9 x"
    assert D.normalize_prompt("Cafe\u0301\u200b x") == "Cafe\u0301\u200b x"  # ids and canonical_prompt: as before


def test_over_long_prompts_over_the_share_hint_at_the_limit(tmp_path):
    rows = [{"question": "x" * 50 + str(i), "answer": "1"} for i in range(3)]
    rows.append({"question": "Short?", "answer": "1"})
    res = ingest(cfg(max_prompt_chars=40), write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.summary["hints"] == [
        "3 of 4 rows (75%) have a prompt over data.max_prompt_chars=40 characters: raise it to keep them"]


def test_a_missing_fields_suggestion_is_never_a_field_another_option_reads(tmp_path):
    """The closest-field suggestion for a missing answer field proposed the prompt's own field (--answer question)."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "What is 1+1?", "solution_type": "Addition"}])
    with pytest.raises(IngestError) as err:
        ingest(cfg(prompt="question", answer="questions_answer"), path)
    assert "--answer question " not in str(err.value) and "Closest: 'question'" not in str(err.value)


MATH_ROWS = [{"problem": "What is 2 + 3?", "solution": "2 + 3 = 5.\n#### 5"},
             {"problem": "What is 4 * 6?", "solution": "4 * 6 = 24.\n#### 24"}]


def test_a_missing_prompt_field_never_suggests_the_answer_column(tmp_path):
    """MATH-style columns (problem, solution) and data.prompt=question suggested 'solution' (difflib's closest): a run
    following it trains on the worked solutions as prompts; the answer error then suggested nothing. Now the prompt
    gets the column named like a prompt, the answer the one named like an answer, a held-out set alike."""
    from saerl.config import HeldOutSet, held_out_mapping

    path = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    with pytest.raises(IngestError) as err:
        ingest(cfg(prompt="question", answer="answer"), path)
    msg = str(err.value)
    assert "prompt field 'question' is not in the data" in msg and "Likely: 'problem'" in msg
    assert "Fix: data.prompt=problem (config, or an override of saerl run; `saerl ingest --prompt problem`)" in msg
    assert "'solution'." not in msg and "data.prompt=solution" not in msg
    with pytest.raises(IngestError, match=r"answer field 'answer' is not in the data.*Likely: 'solution' \(named like "
                                          r"a gold answer column\)\. Fix: data\.answer=solution "):
        ingest(cfg(prompt="problem", answer="answer"), path)
    assert ingest(cfg(prompt="problem", answer="solution"), path).kept.height == 2  # the fixes read the file
    with pytest.raises(IngestError, match=r"prompt field 'question'.*Likely: 'problem'.*Fix: data\.prompt=problem "):
        D.check_mapping(held_out_mapping(cfg(), HeldOutSet(path=str(path))), path, labels_optional=True)
    with pytest.raises(IngestError, match=r"answer field 'gold'.*Likely: 'solution'.*Fix: data\.answer=solution "):
        D.check_mapping(held_out_mapping(cfg(), HeldOutSet(path=str(path), prompt="problem", answer="gold")), path,
                        labels_optional=True)


def test_a_missing_fields_suggestion_prefers_names_like_its_kind_and_says_when_none_fits(tmp_path):
    """Column names are matched by a word (case, plural and camel case aside), an id column never; a typo of the
    missing name comes first; when no column looks like the field, the message says so instead of a poor match."""
    rows = [{"question_id": "q1", "Question_Text": "What is 1+1?", "GroundTruths": "2", "notes": "easy"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(IngestError, match=r"Likely: 'Question_Text' \(named like a prompt column\)\. Fix: "
                                          r"data\.prompt=Question_Text "):
        ingest(cfg(prompt="prompt", answer="GroundTruths"), path)
    with pytest.raises(IngestError, match=r"Likely: 'GroundTruths' .*Fix: data\.answer=GroundTruths "):
        ingest(cfg(prompt="Question_Text", answer="answer"), path)
    with pytest.raises(IngestError, match=r"Closest: 'Question_Text'\. Fix: data\.prompt=Question_Text "):
        ingest(cfg(prompt="question_txt", answer="GroundTruths"), path)  # a typo
    lone = write_jsonl(tmp_path / "lone.jsonl", [{"body": "Ann has 3 apples.", "solution": "3", "notes": "x"}])
    with pytest.raises(IngestError) as err:
        ingest(cfg(prompt="question", answer="solution"), lone)
    assert ("No column looks like a prompt (none is named like problem, question, prompt, query, instruction, input, "
            "or like 'question'): map data.prompt to the field that holds the question. Fix: data.prompt=FIELD "
            "(config") in str(err.value)
    with pytest.raises(IngestError, match=r"No column looks like a gold answer \(none is named like answer, solution"
                                          r".*Fix: data\.answer=FIELD "):
        ingest(cfg(prompt="body", answer="answer"), write_jsonl(tmp_path / "q.jsonl", [{"body": "1+1?", "hint": "x"}]))
    with pytest.raises(IngestError) as err:  # the template's other field is not offered for the missing one
        ingest(cfg(prompt="{body} {question}", answer="solution"), lone)
    assert "No column looks like a prompt" in str(err.value) and "'{body} {body}'" not in str(err.value)


@pytest.mark.parametrize(("prompt", "answer", "said", "fixed"), [
    ("{question} {answer}", "answer", "data.prompt '{question} {answer}' uses the answer field 'answer' (data.answer)",
     "'{question}'"),
    ("Q: {question}\nA: {answer}", "answer", "uses the answer field 'answer'", "'Q: {question}\\nA:'"),
    ("Solve: {gold}", "gold", "uses the answer field 'gold'", "'Solve: {QUESTION_FIELD}'"),
    ("{rm.q} {rm.truth}", "rm.truth", "uses the answer field 'rm.truth'", "'{rm.q}'"),
])
def test_a_prompt_template_that_reads_the_answer_field_is_refused(prompt, answer, said, fixed, tmp_path, monkeypatch):
    """`--prompt "{question} {answer}" --answer answer` kept every row: every RL prompt showed its own gold answer.
    The mapping is refused before the file is read, by ingest and by the run's check (a held-out set's own fields
    too), naming data.prompt, the field and the template without it."""
    from saerl.config import HeldOutSet, held_out_mapping

    rows = [{"question": "What is 1+1?", "answer": "2", "gold": "2", "rm": {"q": "1+1?", "truth": "2"}}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    monkeypatch.setattr(D, "load_table", lambda *a, **k: pytest.fail("read the file of a refused mapping"))
    for check in (lambda c: ingest(c, path), lambda c: D.check_mapping(c, path)):
        with pytest.raises(IngestError) as err:
            check(cfg(prompt=prompt, answer=answer))
        msg = str(err.value)
        assert said in msg and "every prompt would show the policy its own gold answer" in msg
        assert f"Fix: drop {{{answer}}} from the template, data.prompt={fixed} " in msg
        assert f"`saerl ingest --prompt {fixed}`" in msg
    held = held_out_mapping(cfg(), HeldOutSet(path=str(path), prompt=prompt, answer=answer))
    for check in (D.check_mapping, ingest):  # as the run's check and the held-out stages read a set
        with pytest.raises(IngestError) as err:
            check(held, path, labels_optional=True)
        assert "data.prompt (or a held-out set's own prompt and answer)" in str(err.value) and said[-20:] in str(err.value)
        assert f"(a held-out set's own: eval.sets.NAME={{path: P, prompt: {fixed}}})" in str(err.value)


def test_a_prompt_naming_the_answer_field_is_refused(tmp_path):
    """`--prompt question --answer question` kept the one row whose question parsed as a number, its question as its
    gold; now the two options naming one field are refused, saying so."""
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    with pytest.raises(IngestError) as err:
        ingest(cfg(prompt="question", answer="question"), path)
    assert str(err.value).startswith(
        "data.prompt and data.answer both name field 'question': every prompt would be its own gold answer. Fix: "
        "map data.prompt to the field that holds the question, data.prompt=FIELD (config, or an override of saerl "
        "run; `saerl ingest --prompt FIELD`), and data.answer to the one that holds the gold answer")
    assert ingest(cfg(prompt="Q: {question}", answer="answer"), path).kept.height == len(GOOD)  # no answer: kept


@pytest.mark.parametrize(("prompt", "what", "fixed"), [
    ("Solve: {question", "an unclosed '{'", "'Solve: {question}'"),
    ("Solve {question and show your work", "an unclosed '{'", "'Solve {question} and show your work'"),
    ("Solve: question}", "a '}' that closes no '{'", "'Solve: {question}'"),
    ("{question} Put it in \\boxed{", "an unclosed '{'", "'{question} Put it in \\\\boxed{{'"),
])
def test_a_prompt_template_with_an_unmatched_brace_says_so_and_shows_it_fixed(prompt, what, fixed, tmp_path):
    """`--prompt "Solve: {question"` said "prompt field 'Solve: {question' is not in the data ... Fix:
    data.prompt=question" (read as a field name, the fix dropped the template's text)."""
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    for check in (ingest, D.check_mapping):
        with pytest.raises(IngestError) as err:
            check(cfg(prompt=prompt), path)
        msg = str(err.value)
        assert msg.startswith(f"data.prompt {prompt!r} has {what}: no field of the data has that name")
        assert f"Fix: data.prompt={fixed} (config, or an override of saerl run; `saerl ingest --prompt {fixed}`)" in msg
    rows = [{"Solve: {question": "What is 1+1?", "answer": "2"}]  # a column of that name: read as before
    assert ingest(cfg(prompt="Solve: {question"), write_jsonl(tmp_path / "c.jsonl", rows)).kept.height == 1


def test_a_missing_field_hint_names_every_field_the_rows_lack():
    """The hint counted every missing-field row but named the commonest field alone: a row without an answer and one
    with a null question read "2 of 4 rows lack field 'answer'"."""
    lines = [{"row": 1, "field": "answer", "reason": D.MISSING_FIELD, "detail": ""},
             {"row": 3, "field": "question", "reason": D.MISSING_FIELD, "detail": ""},
             {"row": 5, "field": "answer", "reason": D.MISSING_FIELD, "detail": ""}]
    (hint,) = D.ingest_hints(cfg(), lines, 6)
    assert hint.startswith("3 of 6 rows (50%) lack fields 'answer' (2 rows), 'question' (1 row) (null")
    (one,) = D.ingest_hints(cfg(), lines[:1] + lines[2:], 4)
    assert "lack field 'answer' (null" in one
    labels = [{"row": r, "field": f, "reason": D.INVALID_LABEL, "detail": ""}  # flagged in two fields: it named one
              for r, f in ((1, "difficulty"), (2, "difficulty"), (3, "difficulty"), (4, "quality"), (5, "quality"))]
    (bad,) = D.ingest_hints(cfg(), labels, 5)
    assert "invalid label in fields 'difficulty' (3 rows), 'quality' (2 rows) (it became null" in bad


# ------------------------------------------------------------------------------------------- check_mapping


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "csv", "hf"])
def test_check_mapping_raises_what_ingest_raises_for_a_field_the_file_lacks(fmt, tmp_path):
    rows = [{"question": f"Q{i}?", "answer": str(i), "topic": "t"} for i in range(3)]
    if fmt == "csv":
        pl.DataFrame(rows).write_csv(tmp_path / "d.csv")
        path = tmp_path / "d.csv"
    else:
        path = _write_rows(fmt, rows, tmp_path)
    D.check_mapping(cfg(topic="topic"), path)  # a good mapping: no error
    for bad in (cfg(answer="gold"), cfg(prompt="{body} {question}"), cfg(id="uid"), cfg(difficulty="level")):
        with pytest.raises(IngestError) as want:
            ingest(bad, path)
        with pytest.raises(IngestError) as got:
            D.check_mapping(bad, path)
        assert str(got.value) == str(want.value)
    D.check_mapping(cfg(difficulty="level"), path, labels_optional=True)  # as an eval set is read
    with pytest.raises(IngestError, match="answer field 'gold'"):
        D.check_mapping(cfg(answer="gold", difficulty="level"), path, labels_optional=True)


def test_check_mapping_reads_only_the_header_of_a_large_file(tmp_path, monkeypatch):
    """The lead calls it before a run for data.path and every eval set: a schema, a header, the first rows."""
    n = 200_000
    frame = pl.DataFrame({"question": [f"What is {i} + 1?" for i in range(n)],
                          "answer": [str(i + 1) for i in range(n)],
                          "rm": [{"style": "rule", "ground_truth": str(i + 1)} for i in range(n)]})
    frame.write_parquet(tmp_path / "big.parquet")
    frame.drop("rm").write_csv(tmp_path / "big.csv")
    write_jsonl(tmp_path / "big.jsonl", frame.head(HEADER_PLUS).to_dicts())
    monkeypatch.setattr(D, "load_table", lambda *a, **k: pytest.fail("check_mapping read the whole file"))
    mappings = {"big.parquet": cfg(answer="rm.ground_truth"), "big.csv": cfg(), "big.jsonl": cfg()}
    for name, mapping in mappings.items():
        with cpu_clock() as clock:
            D.check_mapping(mapping, tmp_path / name)
        assert clock.seconds < 1.0, name
    with pytest.raises(IngestError, match=r"answer field 'rm.truth' is not in the data.*'rm.ground_truth'"):
        D.check_mapping(cfg(answer="rm.truth"), tmp_path / "big.parquet")


HEADER_PLUS = D.HEADER_ROWS + 5


def test_check_mapping_finds_a_jsonl_column_that_starts_after_the_first_rows(tmp_path, monkeypatch):
    """A label (or a nested answer) only later rows have is in the data for ingest: check_mapping scans on for
    its key rather than refuse it, without reading the file as ingest does; a field no row has is refused."""
    rows = [{"question": f"Q{i}?", "answer": str(i)} for i in range(HEADER_PLUS)]
    rows[-1].update(topic="late", rm={"gold": "1"})
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert ingest(cfg(topic="topic"), path).kept["topic"].to_list()[-1] == "late"
    monkeypatch.setattr(D, "load_table", lambda *a, **k: pytest.fail("check_mapping read the whole file"))
    D.check_mapping(cfg(topic="topic", id="rm.gold"), path)
    with pytest.raises(IngestError, match=r"topic field 'topic' is not in the data"):  # not in the first N rows
        D.check_mapping(cfg(topic="topic", max_rows=HEADER_PLUS - 1), path)
    with pytest.raises(IngestError, match=r"answer field 'gold' is not in the data\. Available columns: "
                                          r"\['question', 'answer'\]"):
        D.check_mapping(cfg(answer="gold"), path)
    monkeypatch.undo()
    with pytest.raises(IngestError, match="does not exist"):
        D.check_mapping(cfg(), tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_bytes(b"")
    with pytest.raises(IngestError, match="is empty"):
        D.check_mapping(cfg(), tmp_path / "e.jsonl")


def test_same_file_reads_each_file_once_per_process_and_again_when_rewritten(tmp_path, monkeypatch):
    """same_file hashed both files afresh on every call: the plan and each held-out variant ask it of the training
    file, so a large pair of same-size files was read whole every time. It reads each once while it stays as it
    was, and again after a rewrite (same size)."""
    import saerl.artifacts as artifacts

    reads = []
    real = artifacts.file_sha256
    monkeypatch.setattr(artifacts, "file_sha256", lambda p: reads.append(Path(p).name) or real(p))
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    a.write_text('{"prompt": "1+1", "answer": "2"}\n')
    b.write_text(a.read_text())
    c.write_text('{"prompt": "1+2", "answer": "3"}\n')
    assert all(D.same_file(a, b) for _ in range(4)) and sorted(reads) == ["a.jsonl", "b.jsonl"]
    assert not D.same_file(a, c) and sorted(reads) == ["a.jsonl", "b.jsonl", "c.jsonl"]
    b.write_text(c.read_text())  # same size, other bytes
    assert not D.same_file(a, b) and reads.count("b.jsonl") == 2


def test_a_folder_that_is_no_saved_hf_dataset_is_refused_naming_it_and_what_it_lacks(tmp_path):
    """data.path (or `saerl ingest FILE`) naming a folder of data files, not a datasets save_to_disk folder: refused
    before reading, naming the folder and the files a saved data set has (no traceback from datasets)."""
    folder = tmp_path / "gsm8k"
    (folder / "data").mkdir(parents=True)
    pl.DataFrame({"question": ["q"], "answer": ["1"]}).write_parquet(folder / "data" / "train.parquet")
    with pytest.raises(IngestError) as err:
        ingest(DataConfig(source="file", path=str(folder)), folder)
    msg = str(err.value)
    assert msg.startswith(f"{folder} is a folder but not a HF save_to_disk folder")
    assert all(marker in msg for marker in D.HF_MARKERS), msg
    assert "Fix: name the data file inside it" in msg and "save_to_disk(DIR)" in msg, "the error says what to do"


def test_held_fields_scans_later_jsonl_rows_by_row_not_line_and_parses_escaped_keys(tmp_path):
    """A field found past the first HEADER_ROWS rows: blank lines (and a BOM on the first) are no rows, so
    data.max_rows cuts where ingest does; a line holding a key's text but not the field (a string where a struct
    is) does not count; a key JSON may write escaped (non-ASCII) is found by parsing the lines."""
    head = [json.dumps({"question": f"Q{i}?", "answer": str(i)}).encode() for i in range(D.HEADER_ROWS)]
    head[0] = D.UTF8_BOM + head[0]
    head[10:10] = [b"", b"   "]
    later = [json.dumps({"question": "Q?", "answer": "1", "rm": "gold"}).encode(),  # '"rm' and 'gold"', no rm.gold
             json.dumps({"question": "Q?", "answer": "1", "ünï": "x"}).encode(),  # written '\u00fc...'
             b"", b"",
             json.dumps({"question": "Q?", "answer": "1", "rm": {"gold": "2"}}).encode()]
    path = write_jsonl(tmp_path / "d.jsonl", head + later)
    names = ("rm.gold", "ünï", "topic")
    last_row = D.HEADER_ROWS + 2  # rm.gold's row: the blank lines are not counted
    assert D.held_fields(cfg(), path, names) == {"rm.gold", "ünï"}
    assert D.held_fields(cfg(max_rows=last_row + 1), path, names) == {"rm.gold", "ünï"}
    assert D.held_fields(cfg(max_rows=last_row), path, names) == {"ünï"}
    assert ingest(cfg(max_rows=last_row), path).summary["rows"] == last_row  # as ingest counts them
