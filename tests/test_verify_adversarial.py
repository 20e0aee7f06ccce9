"""The verifier under adversarial answers: every sample is bounded in time, and comes out as a verifier failure
(status timeout/error) or a definite wrong/no_answer, never a hang and never "correct".

Batches hold as many samples as the pool has workers, so each batch's wall-clock bound is a bound per sample;
the bound is generous (BATCH_BOUND_FACTOR x the timeout: a worker killed at its hard deadline is restarted for
the next batch, which costs an import of math-verify on a loaded machine)."""

from __future__ import annotations

import time

import pytest

from saerl import verify as V
from saerl.verify import normalize_answers, verify_answer, verify_batch

TIMEOUT_S = 2.0
BATCH_BOUND_FACTOR = 10
FAILURE_OR_DEFINITE = {"wrong", "no_answer", "timeout", "error"}
NORMALIZE_OUTCOMES = {"ok", "unparsed", "timeout", "error"}
GARBAGE_CHARS = 1_000_000
LONG_DIGITS = 10_000
MAX_ANSWER_DIGITS = V.MAX_ANSWER_CHARS - len("#### ") - len(" cubed")  # the longest number a fast-path answer holds

ADVERSARIAL = {
    "tower, bare": "9^9^9^9",
    "tower, boxed": "\\boxed{9^9^9^9}",
    "tower, braced": "\\boxed{9^{9^{9^{9}}}}",
    "tower after ####": "#### 9^{9^{9^{9}}}",
    "10k-digit number after ####": "#### " + "7" * LONG_DIGITS,
    "10k-digit number boxed": "\\boxed{" + "7" * LONG_DIGITS + "}",
    "10k-digit decimal": "#### 0." + "3" * LONG_DIGITS,
    "nested fractions": "\\boxed{" + "\\frac{1}{" * 150 + "2" + "}" * 150 + "}",
    "nested roots": "\\boxed{" + "\\sqrt{" * 200 + "2" + "}" * 200 + "}",
    "nested braces": "\\boxed{" + "{" * 2000 + "1" + "}" * 2000 + "}",
    "nested parentheses": "\\boxed{" + "(" * 500 + "1" + ")" * 500 + "}",
    "unclosed boxed": "the answer is \\boxed{",
    "unclosed boxed after a closed one": "\\boxed{5} and then \\boxed{5",
    "huge exponent": "\\boxed{10^{10^{10}}}",
    "huge power of two": "\\boxed{2^{99999999999}}",
    "huge factorial": "\\boxed{99999999999!}",
    "float overflow": "#### 1e999999999",
    "integral tower": "\\boxed{\\int_0^1 e^{x^{x^x}} dx}",
    "long garbage": "".join(chr(33 + (i * 7919) % 90) for i in range(GARBAGE_CHARS)),
    "long garbage then boxed": "zq!" * (GARBAGE_CHARS // 3) + "\\boxed{x^{y^{z}}}",
    "long sum": "\\boxed{" + "x+" * 600 + "1}",
    "long number cubed": "#### " + "9" * MAX_ANSWER_DIGITS + " cubed",  # its cube is over MAX_ANSWER_CHARS: not read
    "tiny number cubed": "#### 1e-999 cubed",
    "compound quantity": "#### 5 ft 6 in",
    "compound of every unit": "#### " + " ".join(f"{i} {u}" for i, u in enumerate(V._COMPOUND_UNITS)),
    "scale word after a fraction": "\\boxed{\\frac{1}{2} \\text{ million}}",
    "long chain of scale words": "#### " + " ".join(f"{i} {w}" for i in range(1, 200) for w in ("thousand", "hundred")),
    "long number in a chain": "#### " + "9" * (MAX_ANSWER_DIGITS - 30) + " trillion 5 hundred",
    "feet and inches, long numbers": "#### " + "9" * 900 + "'" + "9" * 900 + '"',
    "fraction percent, long numbers": "#### " + "7" * 900 + "/" + "3" * 900 + "%",
    "signed compound quantity": "#### 5 ft -6 in",
    "fraction in words, long number": "#### " + "9" * (MAX_ANSWER_DIGITS - 10) + " and a half",
    "fraction word, long prose after it": "#### 2 thirds" + " of the" * 400,
    "fraction word the reader does not read": "#### 2 and 3 halves",
    "number in words as long LaTeX text": "\\boxed{\\text{" + "ten " * 600 + "}}",
}


def _batches(items: list, size: int) -> list[list]:
    return [items[i: i + size] for i in range(0, len(items), size)]


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    """Start the workers before timing anything (the first start imports sympy)."""
    assert verify_answer("\\boxed{\\frac{1}{2}}", "0.5", 60).correct
    yield


@pytest.mark.slow
@pytest.mark.parametrize("gold", ["5", "\\frac{1}{2}"])
def test_adversarial_completions_are_bounded_per_batch(gold: str) -> None:
    names = list(ADVERSARIAL)
    for batch in _batches(names, V.MAX_WORKERS):
        start = time.perf_counter()
        got = verify_batch([ADVERSARIAL[n] for n in batch], [gold] * len(batch), timeout_s=TIMEOUT_S)
        took = time.perf_counter() - start
        assert took < BATCH_BOUND_FACTOR * TIMEOUT_S, f"batch {batch} took {took:.1f} s"
        for name, res in zip(batch, got, strict=True):
            assert res.status in FAILURE_OR_DEFINITE, (name, res)
            assert res.pred is None or len(res.pred) <= V.MAX_SCAN_CHARS


@pytest.mark.slow
def test_adversarial_golds_are_bounded_per_batch() -> None:
    golds = list(ADVERSARIAL.values())
    for batch in _batches(golds, V.MAX_WORKERS):
        start = time.perf_counter()
        got = normalize_answers(batch, timeout_s=TIMEOUT_S)
        assert time.perf_counter() - start < BATCH_BOUND_FACTOR * TIMEOUT_S
        assert all(g.status in NORMALIZE_OUTCOMES for g in got), got
        assert all((g.status == "ok") == bool(g.text) for g in got)
        start = time.perf_counter()
        judged = verify_batch(["\\boxed{-31}"] * len(batch), batch, timeout_s=TIMEOUT_S)  # no gold is -31
        assert time.perf_counter() - start < BATCH_BOUND_FACTOR * TIMEOUT_S
        assert all(r.status in FAILURE_OR_DEFINITE for r in judged), judged


def test_failures_are_counted_not_hidden_and_the_pool_recovers() -> None:
    """Timeouts are their own status (a verifier failure the caller counts), and good answers after an
    adversarial batch are judged as usual."""
    got = verify_batch([ADVERSARIAL["huge exponent"], ADVERSARIAL["huge factorial"], "#### 5"], ["5"] * 3,
                       timeout_s=TIMEOUT_S)
    assert got[0].status in {"timeout", "error", "wrong"} and got[1].status in {"timeout", "error", "wrong"}
    assert got[2].correct
    failures = sum(r.status in {"timeout", "error"} for r in got)
    assert failures >= 1, "a tower that sympy evaluates must hit the time bound"
    assert verify_answer("\\boxed{\\frac{2}{4}}", "0.5", 30).correct
    assert verify_answer("#### 17", "18", 30).status == "wrong"


SPACES = V.MAX_ANSWER_CHARS - 10  # a long run of spaces that still fits an answer the fast path reads
REGEX_CHILD_TIMEOUT_S = 60  # the old pattern needed ~110 s for 800 spaces (n^4); the linear one needs ms
REGEX_SCRIPT = f"""
from decimal import Decimal
from saerl import verify as V
n = {SPACES}
assert V._plain_number("1" + " " * n + "!") is None
assert V._plain_number("$" + " " * n + "!") is None
assert V._plain_number("1" * 900 + " " * (n - 900) + "!") is None
assert V._plain_number("1 dollars" + " " * (n - 9) + "!") is None
assert V._plain_number("\\\\$ " + " " * (n // 2) + "18" + " " * (n // 3) + "dollars ." + " " * 9) == Decimal(18)
assert V._NOT_A_NUMBER.fullmatch("nan" + " " * n + "!") is None
assert not isinstance(V._fast_verify("#### 7" + " " * n + "?", "7"), V.VerifyResult)  # goes on to the pool
assert V._plain_number("1 million" + " " * (n - 9) + "!") is None
assert V._plain_number("1 $" + " " * (n - 3) + "!") is None
assert V._plain_number("half" + " " * (n - 5) + "a!") is None
assert V._plain_number("1 \\\\text{{" + " " * (n - 8) + "!") is None
assert V._compound_quantity("5 ft" + " " * (n - 4) + "!") is None
assert V._compound_quantity("5 ft ," + " " * (n - 6) + "6!") is None
assert V._compound_quantity("1" + " 000" * (n // 4 - 1) + " ft!") is None
assert V._percent_number("1" + " " * n + "%!") is None
assert not V._unread_number_words("1/2 dozen" + " a" * (n // 2 - 5) + "!")
assert V._plain_number("2 thousand" + " " * (n - 10) + "!") is None
assert V._plain_number("2 thousand " * (n // 11) + "!") is None
assert V._plain_number("1 " * (n // 2) + "thousand!") is None
assert not V._unread_number_words("1 " * (n // 2) + "!")
assert V._compound_quantity("5'" + " " * (n - 4) + "6!") is None
assert V._percent_number("2" + " " * (n - 6) + "1/2!") is None
assert V._percent_number("1" + " 1" * (n // 2 - 2) + "/2%!") is None
assert V._word_fraction("1 and" + " " * (n - 6) + "!") is None
assert V._word_fraction("1 thirds" + " " * (n - 9) + "!") is None
assert V._word_fraction("1 and a half" + " a" * (n // 2 - 7) + "!") is None
assert V._unread_fraction_words("1 and " + " " * (n - 8) + "2 halves!")
assert not V._holds_fraction_word("1 " + "half a " * (n // 7))
assert not V._holds_fraction_word("1 " + "quarters and" * (n // 12))
assert V._holds_fraction_word("1" * (n - 9) + " quarters")  # its number starts before FRACTION_CONTEXT_CHARS
assert V._latex_words("\\\\text{{a" + " " * (n - 8) + "!") != "a"
assert V._digits_for_words("\\\\text{{one" + " a" * (n // 2 - 6) + "!") is None
print("ok")
"""


def test_plain_number_regex_is_linear_on_long_space_runs() -> None:
    """Runs of spaces between optional parts must not backtrack polynomially in the parent process (outside
    the worker pool's time bound). Run in a child so a regression fails at the timeout instead of hanging."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", REGEX_SCRIPT], capture_output=True, text=True,
                         timeout=REGEX_CHILD_TIMEOUT_S)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
