"""Property-based fuzzing (hypothesis, bounded example counts and per-example deadlines) of the ingest parser
and the answer normaliser.

Ingest: for any jsonl/csv bytes, ingest either raises IngestError (a file it cannot use, with a message) or
returns tables in which every source row is kept or rejected with its row, field and a known reason.
Normaliser: never raises, and is idempotent on its own output; the final-answer extractor is total and bounded."""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from saerl import data as D
from saerl import verify as V
from saerl.config import DataConfig
from saerl.data import IngestError, ingest, load_table

REASONS = {D.EMPTY_PROMPT, D.MISSING_FIELD, D.UNPARSEABLE_ANSWER, D.DUPLICATE_PROMPT, D.DUPLICATE_ID,
           D.OVERLONG_PROMPT, D.INVALID_JSON, D.INVALID_LABEL, D.ANSWER_TIMEOUT, D.INVALID_UTF8, D.EXTRA_FIELDS,
           D.ANSWER_CHECK_ERROR, D.NON_TEXT_PROMPT, D.STRUCT_ANSWER, D.EMPTY_ANSWER, D.LIST_ANSWER,
           D.TEMPLATE_ERROR}
FIELDS = ("question", "answer", "difficulty", "quality", "topic", "k")
MAPPING = {"difficulty": "difficulty", "quality": "quality", "topic": "topic"}
TIMEOUT_S = 2.0  # per answer; a timeout is an allowed outcome, not a failure
MAX_PROMPT_CHARS = 80  # small, so over-long prompts come up often
# Example counts: enough to find the crashes this file was written against in a few seconds each (multiply them
# with SAERL_FUZZ_SCALE=N for a longer hunt); deadlines are per example and generous (worker-pool answers on a
# loaded 2-core machine), so they only catch hangs.
SCALE = int(os.environ.get("SAERL_FUZZ_SCALE", "1"))
INGEST = settings(max_examples=150 * SCALE, deadline=timedelta(seconds=60),
                  suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=400 * SCALE, deadline=timedelta(seconds=2))
POOLED = settings(max_examples=100 * SCALE, deadline=timedelta(seconds=60),
                  suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.integers(min_value=0, max_value=10**9).map(lambda n: f"{n:,}"),
    st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**6), max_value=10**6).map(str),
    st.tuples(st.integers(-50, 50), st.integers(1, 50)).map(lambda t: f"\\frac{{{t[0]}}}{{{t[1]}}}"),
)
answers = st.one_of(
    numbers, numbers.map(lambda n: f"#### {n}"), numbers.map(lambda n: f"${n}$"),
    numbers.map(lambda n: f"{n} (apples)"), numbers.map(lambda n: f"{n} dollars"),
    st.sampled_from(["x^2", "\\sqrt{2}", "2\\pi", "10-4 n", "\\frac{a}{b}", "(1, 2)", "\\{1,2\\}", "x=3", "-\\infty",
                     "3.14159", "0.50", "-0.0", "025", "\\dfrac{3}{4}", "2^{10}", "a+b", "nan", "1e5"]),
    st.text(max_size=25),
)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["", "   ", "#### 18", "9 (apples)", "\\frac{1}{2}", "NaN", "1,000",
                                           "see solution", "$x^2$", "yes", "bad", "1e400"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)
chats = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]),
                                         "content": st.one_of(st.text(max_size=20), scalars)}), max_size=3)
prompts = st.one_of(st.text(max_size=MAX_PROMPT_CHARS + 10), st.text(max_size=MAX_PROMPT_CHARS + 10), values,
                    chats)
usual = st.fixed_dictionaries({"question": prompts, "answer": st.one_of(answers, answers, scalars)},
                              optional={f: values for f in FIELDS if f not in ("question", "answer")})
records = st.one_of(usual, usual, usual, st.dictionaries(st.sampled_from(FIELDS), values, max_size=len(FIELDS)))
raw_lines = st.one_of(st.binary(max_size=40), st.sampled_from([b"{", b"[1]", b"null", b'"x"', b"{}", b"[" * 3000]))
lines = st.lists(st.one_of(records.map(lambda r: json.dumps(r).encode()), raw_lines), min_size=1, max_size=8)


def _ingest_bytes(data: bytes, suffix: str, **mapping) -> tuple[D.IngestResult | None, str]:
    """ingest() on `data` written to a temp file: (result, "") or (None, IngestError text); anything else raises."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(data)
        cfg = DataConfig(source="file", max_prompt_chars=MAX_PROMPT_CHARS, verify_timeout_s=TIMEOUT_S, **mapping)
        try:
            return ingest(cfg, path), ""
        except IngestError as e:
            assert str(e), "an IngestError must say what is wrong"
            return None, str(e)


def _check_accounting(res: D.IngestResult) -> None:
    """Every source row is kept or rejected (with row, field and a known reason), never both; kept rows are
    usable (non-empty prompt within the limit, a normalised answer, a unique id)."""
    n_rows = res.summary["rows"]
    kept = set(res.kept["row"].to_list())
    assert len(kept) == res.kept.height, "a source row kept twice"
    dropped: set[int] = set()
    for row, fld, reason, value, detail in res.rejected.iter_rows():
        assert isinstance(row, int) and 0 <= row < n_rows and isinstance(fld, str) and reason in REASONS
        assert len(value) <= D.REJECT_VALUE_CHARS
        assert detail is None or 0 < len(detail) <= D.REJECT_DETAIL_CHARS
        if reason not in D.FLAG_ONLY:
            dropped.add(row)
    assert kept.isdisjoint(dropped), kept & dropped
    assert kept | dropped == set(range(n_rows))
    assert res.summary["kept"] + res.summary["dropped"] == n_rows
    for prompt, answer in zip(res.kept["prompt"], res.kept["answer"], strict=True):
        assert prompt.strip() and len(prompt) <= MAX_PROMPT_CHARS and answer
    assert res.kept["id"].n_unique() == res.kept.height
    for kind in ("difficulty", "quality"):
        if kind in res.kept.columns:
            assert all(math.isfinite(x) for x in res.kept[kind].drop_nulls())


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    """Start the verifier workers once, before any deadline is counted."""
    assert V.normalize_answer("\\frac12", 60).ok
    yield


# ------------------------------------------------------------------------------------------------- ingest


@INGEST
@given(lines)
def test_ingest_jsonl_never_crashes_and_accounts_for_every_row(raw: list[bytes]) -> None:
    res, err = _ingest_bytes(b"\n".join(raw) + b"\n", ".jsonl", **MAPPING)
    if res is None:
        assert any(m in err for m in ("Available columns", "has no rows", "is empty", "-encoded")), err
        event("file refused")
        return
    event(f"kept {min(res.kept.height, 2)}+ rows")
    _check_accounting(res)


@INGEST
@given(st.lists(st.lists(st.one_of(st.text(max_size=12), st.binary(max_size=6).map(
    lambda b: b.decode("latin-1"))), min_size=0, max_size=4), min_size=1, max_size=6))
def test_ingest_csv_never_crashes_and_accounts_for_every_row(rows: list[list[str]]) -> None:
    body = "\n".join(",".join(cells) for cells in rows)
    res, _ = _ingest_bytes(("question,answer,difficulty\n" + body).encode("utf-8", "surrogatepass"), ".csv",
                           difficulty="difficulty")
    if res is not None:
        _check_accounting(res)


@INGEST
@given(st.lists(st.one_of(records, records, records, values), min_size=1, max_size=6))
def test_ingest_json_array_never_crashes_and_accounts_for_every_element(items: list) -> None:
    res, err = _ingest_bytes(json.dumps(items).encode("utf-8", "surrogatepass"), ".json", **MAPPING)
    if res is None:
        assert any(m in err for m in ("Available columns", "JSON array")), err
        return
    assert res.summary["rows"] == len(items)
    _check_accounting(res)
    for row, prompt in zip(res.kept["row"], res.kept["prompt"], strict=True):  # text, or a chat's one user message
        assert prompt == _prompt_text(items[row]["question"]), (items[row], prompt)


def _prompt_text(value) -> str | None:
    """What ingest may keep as the prompt of a source `question` value: text as is, a chat message list's one
    user message (text) when it has exactly one; None for anything else (a number, a list, a struct)."""
    if isinstance(value, str):
        return value
    chat = all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value) if isinstance(value, list) \
        else False
    if chat and value:
        users = [m["content"] for m in value if m["role"] == "user"]
        return users[0] if len(users) == 1 and isinstance(users[0], str) else None
    return None


@settings(max_examples=200 * SCALE, deadline=timedelta(seconds=10))
@given(st.binary(max_size=200))
def test_load_table_on_arbitrary_bytes_raises_only_ingest_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".jsonl", ".json", ".csv", ".parquet"):
            path = Path(tmp) / f"x{suffix}"
            path.write_bytes(data)
            try:
                table = load_table(path)
            except IngestError:
                continue
            assert table.n_source_rows >= table.frame.height
            assert all(0 <= r < table.n_source_rows for r in table.rows)


# --------------------------------------------------------------------------------------------- normaliser

LONG_EXPONENTS = ["1" * 1990 + "e999", "1" * 1990 + "e999%", "1" * 996 + "e999 ft 6 in"]  # over MAX_ANSWER_CHARS written out


@FAST
@given(st.text(max_size=300))
@example(LONG_EXPONENTS[0])
@example(LONG_EXPONENTS[1])
@example(LONG_EXPONENTS[2])
@example("Twenty-five apples")
@example("one hundred and five percent")
def test_fast_normalise_is_total_and_idempotent(text: str) -> None:
    first = V._fast_normalize(text)
    if first is None or not first.ok:
        return
    again = V._fast_normalize(first.text)
    assert again is not None and again.ok and again.text == first.text


@POOLED
@given(answers)
@example(LONG_EXPONENTS[0])
def test_normalise_is_idempotent_on_its_own_output(gold: str) -> None:
    first = V.normalize_answer(gold, TIMEOUT_S)
    event(first.status)
    assert first.status in {"ok", "unparsed", "timeout", "error"}
    assert first.ok == bool(first.text)
    if not first.ok:
        return
    again = V.normalize_answer(first.text, TIMEOUT_S)
    if again.status == "timeout":
        return
    assert again.ok and again.text == first.text, (gold, first, again)


# Unicode math the fold rewrites, and characters around it that once made a second fold differ from the first ('∈²',
# '0‰‰', '∞' before a combining accent)
UNICODE_MATH = "0123456789x m()[]{}.,-/ ²³⁴⁻ⁿ₁½⅓⁄√∛∞·∈、。【】‰‱％－０．Ａ①ℝº″㎡π™（）\u200b\u200f\u00a0\u0301"


@FAST
@given(st.one_of(st.text(st.sampled_from(UNICODE_MATH), max_size=20), st.text(max_size=40)))
@example("\u2208\u00b2")
@example("0\u2030\u2030")
@example("\u221e\u0301")
def test_the_unicode_fold_is_idempotent(text: str) -> None:
    """A gold is folded when it is normalized and again when it is judged against (saerl.verify.fold_unicode)."""
    folded = V.fold_unicode(text)
    assert V.fold_unicode(folded) == folded


@FAST
@given(st.text(max_size=400), st.sampled_from(["", "#### ", "\\boxed{", "}", "{", "\\", "\n"]))
def test_extract_final_answer_is_total(text: str, marker: str) -> None:
    for candidate in (text, marker + text, text + marker, text + marker + text):
        got = V.extract_final_answer(candidate)
        assert got is None or (got and got == got.strip() and len(got) <= V.MAX_SCAN_CHARS)


@POOLED
@given(st.lists(st.tuples(st.one_of(answers, st.text(max_size=40)), answers), min_size=1, max_size=4))
def test_verify_batch_gives_a_status_for_every_pair(pairs: list[tuple[str, str]]) -> None:
    completions = [f"#### {c}" if i % 2 else f"\\boxed{{{c}}}" for i, (c, _) in enumerate(pairs)]
    got = V.verify_batch(completions, [g for _, g in pairs], timeout_s=TIMEOUT_S)
    assert len(got) == len(pairs)
    assert all(r.status in {"correct", "wrong", "no_answer", "timeout", "error"} for r in got)


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
         "eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"), (100, "hundred"))


def _in_words(n: int, sep: str) -> str:
    """0 <= n < 10**15 in English words, tens and ones joined by `sep` ('-' or ' '): written apart from the reader."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (sep + _ONES[n % 10] if n % 10 else "")
    scale, name = next((scale, name) for scale, name in _SCALES if n >= scale)
    return f"{_in_words(n // scale, sep)} {name}" + (f" {_in_words(n % scale, sep)}" if n % scale else "")


@FAST
@given(st.integers(min_value=0, max_value=10**15 - 1), st.sampled_from(["-", " "]),
       st.sampled_from(["", " apples", " percent", ".", " of them"]), st.booleans())
def test_a_number_in_words_reads_as_its_number(n: int, sep: str, tail: str, title: bool) -> None:
    """Every whole number below 10**15, spelled out by a speller written apart from the reader, reads as its digits on both
    sides, with the words after it read as after digits."""
    text = _in_words(n, sep) + tail
    text = text.capitalize() if title else text
    got = V._fast_normalize(text)
    expected = f"{n}%" if tail == " percent" else str(n)
    assert got is not None and (got.status, got.text) == ("ok", expected), (text, got)
    assert V.fast_verdict(f"#### {text}", expected).status == "correct"
    assert V.fast_verdict(f"#### {text}", str(n + 1)).status == "wrong"


_DENOMINATORS = {2: ("half", "halves"), 3: ("third", "thirds"), 4: ("quarter", "quarters"), 5: ("fifth", "fifths"),
                 6: ("sixth", "sixths"), 8: ("eighth", "eighths"), 10: ("tenth", "tenths"), 100: ("hundredth", "hundredths")}


@FAST
@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(_DENOMINATORS)), st.integers(min_value=1, max_value=99),
       st.sampled_from(["", " hours", " of a cup"]), st.booleans())
def test_a_fraction_in_words_is_never_its_whole_number(whole: int, den: int, num: int, tail: str, mixed: bool) -> None:
    """'N and <num> <fraction>' (a proper fraction, numerator in words below 10, else digits) is N + num/den, and 'N
    <fractions>' N/den ('N quarters' is coins and '1 half hours' one half-hour, with 'of' after them a fraction), by a
    speller written apart from the reader; the fast path never reads either as the whole number N."""
    num = num % (den - 1) + 1  # 1 <= num < den
    word = _DENOMINATORS[den][0 if (num if mixed else whole) == 1 else 1]
    if mixed:
        text, value = f"{whole} and {'a' if num == 1 else _ONES[num] if num < 10 else num} {word}{tail}", whole + Fraction(num, den)
    else:
        text, value = f"{whole} {word}{tail}", Fraction(whole, den)
    # no fraction: 'N quarters' (coins: '3 quarters', '3 quarters hours') and a singular one before a word ('1 half hours')
    unit = not mixed and not tail.startswith(" of") and (den == 4 or (whole == 1 and tail != ""))
    assert V._word_fraction(text) == (None if unit else value), text
    if not unit and value != whole:
        verdict = V.fast_verdict(f"#### {text}", str(whole))
        assert verdict is None or verdict.status == "wrong", (text, verdict)
