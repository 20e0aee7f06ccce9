"""Answer extraction and verification, bounded in wall time and safe to call from any thread.

- :func:`extract_final_answer` finds the answer a model wrote (the last ``#### X`` or ``\\boxed{...}``,
  whichever comes later; boxes written together, ``\\boxed{3}, \\boxed{5}``, are one answer, as in math-verify).
- :func:`normalize_answer` / :func:`normalize_answers` turn a gold answer in any common shape into canonical text.
- :func:`verify_answer` / :func:`verify_batch` judge a completion against a gold answer.

Plain numbers on both sides (``18``, ``-2.50``, ``1,000``, ``1\\,000``, ``1 000``, ``1e-07``, ``9 (apples)``,
``-$5``, ``−5``, ``€5``) take a fast path in this process (Decimal comparison, no sympy); a mixed number (``2 1/2``)
or a repeating decimal (``0.\\overline{3}``) goes to math-verify as the fraction it means, an answer without
markdown emphasis around it or a full stop after it (``**18**``, ``1/2.``), a number followed by unit words or short
prose as that number (``3/4 cup``, ``12 in``; a single letter or a two-letter word that is no unit is a variable:
``3 n``, ``4 xy`` stay 3n, 4xy).
A scale word after a plain number multiplies it and a power word raises it, on both sides and in the fast path
(``1.5 million`` is 1500000, ``2 dozen eggs`` 24, ``a dozen`` 12, ``half a dozen`` 6, ``3.2 billion``, ``4 hundred``,
``5 squared`` 25, ``3 cubed`` 27; also as LaTeX text, ``1.5 \\text{ million}``); after anything else (``2 1/2 dozen``,
``-5 squared``, ``2 thousand squared``) the answer is not read: such a gold is unparsed, such a prediction wrong, never
the bare number. A percent word is the percent sign (``10 percent``, ``12.5 per cent``, ``10%``, ``$10\\%$``), and a
plain number with one equals both its number and its hundredth, in the fast path (``10%`` is 10 and 0.1, ``12.5%``
12.5 and 0.125; canonical text ``10%``): math-verify's LaTeX reading does so for an integer percent only (``12.5%`` was
not 12.5) and ``10 percent`` was read as 10 only (not 0.1). Short prose after a percent or a number is left out as
after any number (``2.5 percent of them``, ``1 000 of them``: that number was read by math-verify, as 1*000 = 0).
A compound quantity, numbers with different units (``5 ft 6 in``, ``5 feet, 6 inches``, ``2 hours and 30 minutes``,
``3 lb 4 oz``), is read in the fast path as its (number, unit) pairs, long unit names as short ones (canonical text
``5 ft 6 in``, ``2 h 30 min``): a prediction matches only with the same numbers and units in the same order, units are
never converted (``66 in`` and ``6 ft 5 in`` are wrong), and a compound prediction against a single-answer gold is
wrong (math-verify read ``5 ft 6 in`` as the product 30*f*t*i*n, which ``6 ft 5 in`` equals). A gold that math-verify can
only read as one pick among several answers ('236 adult, 342 child', or a number it found inside LaTeX that does
not parse as a whole: '$R=1, I=(-1,1)$'), or a clock time, is unparsed, not a guess; a prediction read that way
('#### 17 | 18') is wrong.
Everything else goes through math-verify's ``parse``/``verify`` in a small persistent pool of worker processes.
math-verify's own timeouts use ``signal.alarm`` and fail outside the main thread, so they are switched off
(``parsing_timeout=None``/``timeout_seconds=None``) and time is bounded here: each worker arms its own interval
timer (it runs tasks in its main thread), and the parent kills and replaces a worker that overruns
``timeout_s + HARD_KILL_GRACE_S`` (sympy can sit in C code a signal cannot interrupt).
A verifier failure is its own status ("timeout"/"error"), never a silent "wrong".
"""

from __future__ import annotations

import atexit
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

MAX_SCAN_CHARS = 20_000  # extract_final_answer looks at most at the last this-many characters
MAX_ANSWER_CHARS = 2_000  # longer answers are not handed to sympy at all
FLOAT_ROUNDING = 6  # decimal places compared for non-integers, as math-verify's float_rounding
HARD_KILL_GRACE_S = 1.0  # extra seconds a worker gets past timeout_s before it is killed
WORKER_START_TIMEOUT_S = 120.0  # a worker that is not ready (math-verify imported) by then is an error
MAX_START_FAILURES = 3  # workers failing to start, in one call, before its tasks are given up as errors
PARSE_CACHE_SIZE = 4096  # parsed answers each worker remembers
MAX_WORKERS = max(1, min(8, os.cpu_count() or 1))  # sympy's LaTeX parser is ~30 ms per answer: use the cores
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
_WORKER_CMD = "import sys; from saerl.verify import _worker_main; _worker_main(int(sys.argv[1]))"

MAX_EXPONENT_DIGITS = 3  # '1e-07', '2.5e+20' (how polars/pandas write floats) are plain numbers; 1e999 at most
# A number: digits with thousands separators (',', LaTeX's '{,}', ',\!' and '\,', a thin space; no leading 0: '0,245'
# is no thousands number), or without them
# and with an optional exponent (math-verify would read the 'e' of '1e-07' as Euler's number, and '1\,000' as 0).
# A sign may be '-' or the unicode minus U+2212 ('−5').
_SIGN = r"[+\-\u2212]"
_THOUSANDS_SEP = r"(?:,\\!|\{,\}|\\,|[, \u2009\u202f])"  # ' ': '1 000' (math-verify's LaTeX reads 1*000 = 0)
_NUM = (
    rf"{_SIGN}?[1-9]\d{{0,2}}(?:{_THOUSANDS_SEP}\d{{3}})+(?:\.\d+)?"
    rf"|{_SIGN}?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d{{1,{MAX_EXPONENT_DIGITS}}})?"
)
_CURRENCY = r"(?:\\?\$|[€£¥₹])"  # a currency sign before or after a number ('$18', '\$18', '€5', '18 €')
# A plain number, optionally in $...$ or after a currency sign (a sign may stand before it: '-$5'), optionally
# followed by a unit in parentheses ("9 (apples)") or by unit words of 3+ letters ("18 dollars"); "5 x" is not a
# plain number.
# Each optional part carries its own leading \s* inside its group: two \s* with only optional parts between
# them backtrack polynomially on a long run of spaces that does not match ("1" + 800 spaces + "!").
# Scale words multiply the plain number before them ('1.5 million' is 1500000, '2 dozen eggs' 24, 'a dozen' 12, 'half a
# dozen' 6); power words raise it ('5 squared' is 25). Neither is a unit word: after anything but a plain number
# ('2 1/2 dozen', '-5 squared': (-5)^2 or -(5^2)?) the answer is not read (see _unread_number_words), never read as
# the bare number. Percent words are no unit words either: '10 percent' is a percent (see _percent_number).
_SCALE_WORDS = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12, "dozen": 12}
_SCALE_WORDS.update({f"{word}s": scale for word, scale in _SCALE_WORDS.items()})  # '2 dozens', '3 millions': the same
_POWER_WORDS = {"squared": 2, "cubed": 3}
_NUMBER_WORDS = frozenset(_SCALE_WORDS) | frozenset(_POWER_WORDS)
_HALF = Decimal("0.5")  # 'half a dozen'
# Digits an exact scaled or raised number may need: a number of MAX_ANSWER_CHARS digits cubed, times a trillion.
_EXACT_DIGITS = max(_POWER_WORDS.values()) * MAX_ANSWER_CHARS + len(str(max(_SCALE_WORDS.values())))
_NUMBER_WORD_ALT = "|".join(sorted(_NUMBER_WORDS))
_PERCENT_WORD = r"(?i:per\s?cent(?:age)?|pct)(?![A-Za-z])"
_PERCENT = re.compile(_PERCENT_WORD)
# A plain number with a percent sign or word ('10%', '$12.5\%$', '10 percent'; '10 percent of them' once
# _without_unit_words made it '10\%'). It equals both its number and its hundredth (see _percent_equal).
_PERCENT_NUMBER = re.compile(rf"\s*(?:\$\s*)?(?P<num>{_NUM})\s*(?:\\?%|{_PERCENT_WORD})(?:\s*\$)?(?:\s*\.)?\s*")
_PERCENT_DETAIL = "percent"  # the detail of a gold normalised as a percent ('10%')
_TAIL_WORD = rf"(?!(?i:{_NUMBER_WORD_ALT})(?![A-Za-z])|{_PERCENT_WORD})[A-Za-z]{{3,}}"  # a unit word, no number word
_UNIT_TAIL = rf"(?:\s*{_CURRENCY})?(?:\s*(?:\([^()]{{0,60}}\)|{_TAIL_WORD}(?: {_TAIL_WORD}){{0,3}}))?(?:\s*\.)?\s*"
# A scale or power word written as LaTeX text ('1.5 \text{ million}', '5\mathrm{~squared}'): read as the plain word.
_LATEX_NUMBER_WORD = re.compile(rf"\\(?:text|textrm|mathrm|mbox)\{{[\s~]*((?i:{_NUMBER_WORD_ALT}))\s*\}}")
# The scale or power word after a plain number ('1.5 million', '$1.5$ million', '5 squared'); an article stands for
# the number 1 before a scale word only ('a dozen', 'half a million'; 'a squared' is a variable).
_NUMBER_WORD_TAIL = rf"(?:(?:\s*\$)?\s+(?P<word>(?i:{_NUMBER_WORD_ALT}))(?![A-Za-z]))?"
_PLAIN_NUMBER = re.compile(
    rf"\s*(?:(?P<sign>{_SIGN})\s*{_CURRENCY}\s*|{_CURRENCY}\s*)?(?:(?P<num>{_NUM})|(?P<article>(?i:half\s+a|a))(?=\s))"
    rf"{_NUMBER_WORD_TAIL}{_UNIT_TAIL}"
)
# A mixed number ("2 1/2", "-3 1/4 cups"), dressed as a plain number may be: math-verify reads '2 1/2' as (2+1)/2.
_MIXED_NUMBER = re.compile(
    rf"\s*(?:{_CURRENCY}\s*)?(?P<sign>{_SIGN}?)(?P<whole>\d+)\s+(?P<num>\d+)\s*/\s*(?P<den>\d+){_UNIT_TAIL}"
)
_MINUS = ("-", "\u2212")
# A repeating decimal ('0.\overline{3}', '$1.2\overline{45}$'): math-verify reads '0.\overline{3}' as 0.
_REPEATING = re.compile(
    rf"\s*(?:\$\s*)?(?P<sign>{_SIGN}?)(?P<whole>\d*)\.(?P<fixed>\d*)\\(?:overline|bar)\{{(?P<rep>\d+)\}}(?:\s*\$)?\s*"
)
_BOXED = "\\boxed{"
# Boxes written together are one answer ('\boxed{3}, \boxed{5}' is {3, 5}), as math-verify joins them
# (latex2sympy2_extended's extract_boxed_content): an earlier box joins when fewer than BOX_JOIN_NEAR_CHARS
# characters separate it from the next, or, holding another answer, fewer than BOX_JOIN_SEP_CHARS with a separator.
BOX_JOIN_NEAR_CHARS = 10
BOX_JOIN_SEP_CHARS = 70
_BOX_SEPARATOR = re.compile(r"\b(?:and|or)\b|,|;")
_EMPHASIS = re.compile(r"\s*(?P<mark>\*\*?)(?P<inner>[^*]+)(?P=mark)\s*")  # markdown bold/italic: '**18**'
_ANSWER_JOIN = ", "  # how the boxes of one answer are joined: a set to math-verify ('3,500' would be one number)
_HASHES = "####"
_DELIMITERS = ("$", "\\boxed", "\\(", "\\[")
# LaTeX that is not prose: \text{...}-style groups, environment names (\begin{pmatrix}, \begin{array}{rrrr}),
# \operatorname{arccot}, and every other command name.
_LATEX_WORDS = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\{[^{}]*\}"
    r"|\\begin\{[^{}]*\}(?:\{[^{}]*\})?|\\end\{[^{}]*\}|\\[A-Za-z]+"
)
_PROSE_WORD = re.compile(r"[A-Za-z]{4,}")
_ONE_MATH_SPAN = re.compile(r"\$\$([^$]*)\$\$|\$([^$]*)\$|\\\((.*)\\\)", re.S)
# Where a gold read as free text may hold other answers: math spans with a digit, numbers outside them.
_MATH_SPAN = re.compile(r"\$\$.*?\$\$|\$.*?\$|\\\(.*?\\\)|\\\[.*?\\\]", re.S)
_NUMBER_WORD = re.compile(r"\d+(?:[.,]\d+)*")
_POWER = re.compile(r"\^\{?\d\}?")  # a one-digit power (a unit's: '\mathrm{in}^{2}')
# An answer candidate in the text math-verify matched (a number, or \infty: '\approx(-\infty, 2.7095)' is an interval).
_CANDIDATE = re.compile(r"\d+(?:[.,]\d+)*|\\infty")
# A relation before a number that math-verify's number reading skips ('=0.527', '\approx 17.10').
_LEADING_RELATION = re.compile(r"\s*(?:=|\\approx|\\simeq|\u2248)\s*")
_AND = " and "  # how math-verify joins the $...$ spans it read as one answer
# A clock time ('3:30 p.m.', '9:03:36 AM', '$2: 15$ PM'): math-verify reads the hour alone (or h/mm as a ratio).
_CLOCK_TIME = re.compile(r"\d{1,2}:\s?\d{2}(?::\d{2})?\s*\$?\s*[ap]\.?\s?m\b\.?", re.I)
_NOT_A_NUMBER = re.compile(r"\s*(?:\$\s*)?[+-]?nan(?:\s*\$)?\s*", re.I)  # 'NaN' (a missing value written out) is no answer
# A number-like answer followed by short words ('3/4 cup', '12 in', '3/4 of a cup', '60 km/h', '18 sq. ft.'): read as LaTeX,
# the words become variables (3/4 cup = 3/(4*c*u*p)). Words of 3+ letters and the two-letter units are units or prose,
# single letters and other two-letter words are variables ('3 n' is 3n, '4 xy' is 4xy); a word LaTeX names as math
# ('2 pi', '3 sin x') keeps the answer whole.
MAX_UNIT_WORDS = 6  # at most this many words after the number ('3/4 of a cup of flour'); longer text is prose
_UNIT_WORD = r"[A-Za-z]+\.?"
_NUMBER_HEAD = (
    rf"{_SIGN}?\d+\s+\d+\s*/\s*\d+|{_SIGN}?\d+\s*/\s*\d+|{_SIGN}?\\[dt]?frac\{{\d+\}}\{{\d+\}}|{_SIGN}?\\frac\d\d|{_NUM}"
)
_NUMBER_WITH_WORDS = re.compile(
    rf"\s*(?P<head>{_NUMBER_HEAD})\s+(?P<words>{_UNIT_WORD}(?:(?:\s+|\s*/\s*){_UNIT_WORD}){{0,{MAX_UNIT_WORDS - 1}}})\s*"
)
_MATH_NAMES = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi omicron pi varpi rho "
    "sigma tau upsilon phi varphi chi psi omega sqrt sin cos tan cot csc arcsin arccos arctan sinh cosh tanh log ln lg "
    "exp inf infty infinity arcsec arccsc arccot sech csch coth gcd lcm det".split()
)
# Two-letter words that are units or prose ('12 in', '18 sq. ft.', '3/4 of a cup'); any other ('4 xy', '4 ac', '12 or B',
# '3 IV') is a product of variables or a pick among answers, and keeps the answer whole.
_SHORT_WORDS = frozenset("in ft yd mi mm cm km nm kg mg lb oz ml hr yr ms hz kw kb mb gb tb sq cu pt qt rs of an at on".split())
# Math names that are also units ('30 sec', '5 min'): math when an argument word follows ('2 sec x', '3 mod n').
_UNIT_OR_FUNCTION = frozenset("sec min max mod".split())
_ARTICLE = "a"  # the one single-letter word that is prose ('3/4 of a cup'); any other is a variable ('3/4 of x')
_WORD_AFTER = re.compile(r"(/)?\s*([A-Za-z]+)")  # each word after a number, and whether a '/' is before it ('km/h')


@dataclass(frozen=True)
class NormalizedAnswer:
    """A gold answer in canonical form.

    status: "ok" (text holds the canonical answer), "unparsed" (no math found), "timeout" or "error".
    text: numbers as "18", "0.5", "\\frac{1}{2}"; other math as the gold's own LaTeX without its enclosing
        $...$ (it re-parses to the same expression); "" unless status is "ok".
    detail: why it failed, or which path produced it ("number" / "percent" / "compound quantity" / "math-verify").
    """

    status: str
    text: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class VerifyResult:
    """The judgement of one completion: status in {"correct", "wrong", "no_answer", "timeout", "error"}."""

    status: str
    pred: str | None = None
    gold: str | None = None
    detail: str = ""

    @property
    def correct(self) -> bool:
        return self.status == "correct"


# ----------------------------------------------------------------------------------------------- extraction


def _boxed_content(text: str, start: int, stop: int | None = None) -> str | None:
    """Content of the ``\\boxed{`` opening at `start` with balanced braces (escaped ``\\{``/``\\}`` do not
    count), or None if it does not close before `stop` (default: the end of the text)."""
    depth = 0
    begin = start + len(_BOXED)
    i = begin - 1
    stop = len(text) if stop is None else stop
    while i < stop:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
        i += 1
    return None


def _last_hashes_answer(tail: str) -> tuple[int, str | None]:
    """(position, answer) of the last ``####`` with a non-empty answer: what follows it to the end of its line or
    to the next ``####`` ('#### 18 ####' and '#### 18\\n####' answer 18); (-1, None) when there is none.
    Each character is looked at a bounded number of times, however many markers there are."""
    end = len(tail)
    pos = tail.rfind(_HASHES)
    while pos >= 0:
        line_end = tail.find("\n", pos, end)
        answer = tail[pos + len(_HASHES) : end if line_end < 0 else line_end].strip()
        if answer:
            return pos, answer
        end, pos = pos, tail.rfind(_HASHES, 0, pos)
    return -1, None


def _joined_boxes(tail: str, last: int) -> tuple[str, ...] | None:
    """The contents of the last ``\\boxed{`` (at `last`) and of the boxes written together with it, first to last,
    as math-verify joins them: an earlier box joins when fewer than BOX_JOIN_NEAR_CHARS characters separate it from
    the next one, or when it holds another answer and fewer than BOX_JOIN_SEP_CHARS characters with a separator
    (',', ';', 'and', 'or') do ('\\boxed{3}, \\boxed{5}', '$\\boxed{3}$ or $\\boxed{5}$'); a repeat of the next
    box's answer right before it is dropped. None when the last box is unclosed or empty. Linear in the text."""
    content = _boxed_content(tail, last)
    if content is None or not content.strip():
        return None
    parts, later = [content.strip()], last
    while (start := tail.rfind(_BOXED, 0, later)) >= 0:
        earlier = _boxed_content(tail, start, later)
        if earlier is None or not earlier.strip():
            break
        between = tail[start + len(_BOXED) + len(earlier) + 1 : later]
        earlier = earlier.strip()
        near = len(between) < BOX_JOIN_NEAR_CHARS
        if not near and (earlier == parts[0] or len(between) >= BOX_JOIN_SEP_CHARS
                         or not _BOX_SEPARATOR.search(between)):
            break
        if earlier != parts[0]:
            parts.insert(0, earlier)
        later = start
    return tuple(parts)


def _final_answer(text: str) -> tuple[str, ...] | None:
    """The final answer's parts (see extract_final_answer): one for a ``####`` answer or a lone box, one per box
    for boxes written together; None when there is no answer."""
    if not isinstance(text, str) or not text:
        return None
    tail = text[-MAX_SCAN_CHARS:]
    hashes, answer = _last_hashes_answer(tail)
    boxed = tail.rfind(_BOXED)
    if answer is not None and hashes > boxed:
        return (answer,)
    return _joined_boxes(tail, boxed) if boxed >= 0 else None


def extract_final_answer(text: str) -> str | None:
    """The final answer in a model's text, from whichever final-answer marker comes last: what follows the
    last ``####`` (to the end of that line, or to a later ``####`` on it), or the content of the last
    ``\\boxed{...}`` (balanced braces; an unclosed one gives None), together with the boxes written with it, joined
    by ', ' ('\\boxed{3} and \\boxed{5}' -> '3, 5': math-verify reads them as the set {3, 5}, see _joined_boxes);
    an empty ``####`` does not count (an earlier non-empty one still does). None when there is no marker.
    Only the last MAX_SCAN_CHARS characters are scanned, so the work is bounded for any input."""
    parts = _final_answer(text)
    return None if parts is None else _ANSWER_JOIN.join(parts)


# ------------------------------------------------------------------------------------------------ fast path


def _num_value(num: str) -> Decimal | None:
    """The Decimal value of a number matched by _NUM ('1,000' -> 1000, '\u22125' -> -5, '1e-07'), else None."""
    try:
        return Decimal(re.sub(r"[^\d.eE+-]", "", num.replace("\u2212", "-")))
    except InvalidOperation:
        return None


def _plain_number(text: str) -> Decimal | None:
    """The Decimal value if `text` is a plain number (commas, a unit, $ signs allowed; a scale or power word after it
    counts: '1.5 million' -> 1500000, '2 dozen eggs' -> 24, 'half a dozen' -> 6, '5 squared' -> 25), else None."""
    if len(text) > MAX_ANSWER_CHARS:
        return None
    m = _PLAIN_NUMBER.fullmatch(_spelled_number_words(text))
    num = m.group("num") if m else None
    if m is None or (m.group("sign") and num and num[0] in "+-\u2212"):  # '-$-5': two signs
        return None
    if num is None:  # an article: 'a dozen', 'half a dozen'
        value: Decimal | None = _HALF if m.group("article").lower().startswith("half") else Decimal(1)
    else:
        value = _num_value(num)
    if value is None:
        return None
    value = -value if m.group("sign") in _MINUS else value
    return _scaled(value, m.group("word"), article=num is None)


def _percent_number(text: str) -> Decimal | None:
    """N if `text` is a plain number N with a percent sign or word ('10%', '$12.5\\%$', '10 percent' -> 10), else None."""
    m = _PERCENT_NUMBER.fullmatch(text) if len(text) <= MAX_ANSWER_CHARS else None
    return None if m is None else _num_value(m.group("num"))


def _percent_equal(percent: Decimal, other: Decimal) -> bool:
    """True if `other` is the number of a percent or its hundredth (see _numbers_equal): 10% is 10 and 0.1, 12.5% is
    12.5 and 0.125. math-verify (0.9) reads an integer percent so ('9% == 9') but a decimal one only as its hundredth
    (12.5% is not 12.5), and the old fast path read '10 percent' as 10 only (not 0.1): this is both, for both."""
    return _numbers_equal(percent, other) or _numbers_equal(percent.scaleb(-2), other)


def _spelled_number_words(text: str) -> str:
    """`text` with a scale or power word in LaTeX text as the plain word ('1.5 \\text{ million}' -> '1.5  million');
    other LaTeX text ('5 \\text{ cm}') stays."""
    return _LATEX_NUMBER_WORD.sub(r" \1", text) if "\\" in text else text


def _scaled(value: Decimal, word: str | None, article: bool) -> Decimal | None:
    """`value` times its scale word ('million': 10**6, 'dozen': 12) or raised to its power word ('squared': 2),
    exactly; `value` itself without a word. None for an article without a scale word ('a squared' is a variable, 'a
    dollars' no number), for a power of a negative number ('-5 squared' is (-5)^2 or -(5^2)) and for a result whose
    canonical text is over MAX_ANSWER_CHARS."""
    if word is None:
        return None if article else value
    word = word.lower()
    if word in _POWER_WORDS and (article or value < 0):
        return None
    with localcontext() as ctx:
        ctx.prec = _EXACT_DIGITS  # the default 28 digits would round '9'*40 + ' million'
        result = value * _SCALE_WORDS[word] if word in _SCALE_WORDS else value ** _POWER_WORDS[word]
    # its canonical text must read back ('1e999 cubed' would be 2998 characters, over MAX_ANSWER_CHARS)
    return result if len(_number_text(result)) <= MAX_ANSWER_CHARS else None


def _frac_text(value: Fraction) -> str:
    """A non-integer fraction as LaTeX: Fraction(-3, 4) -> '-\\frac{3}{4}'."""
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _mixed_number(text: str) -> str | None:
    """A mixed number ('2 1/2': a whole number, spaces, a proper fraction; $ signs and a unit allowed as for a
    plain number) as LaTeX ('\\frac{5}{2}'), else None. math-verify would read '2 1/2' as (2+1)/2."""
    if len(text) > MAX_ANSWER_CHARS:
        return None
    m = _MIXED_NUMBER.fullmatch(text)
    if m is None:
        return None
    num, den = int(m.group("num")), int(m.group("den"))
    if not 0 < num < den:
        return None
    value = int(m.group("whole")) + Fraction(num, den)
    return _frac_text(-value if m.group("sign") in _MINUS else value)


def _repeating_decimal(text: str) -> str | None:
    """A repeating decimal ('0.\\overline{3}', '-1.2\\overline{45}') as LaTeX ('\\frac{1}{3}'), else None.
    math-verify reads '0.\\overline{3}' as 0."""
    m = _REPEATING.fullmatch(text) if len(text) <= MAX_ANSWER_CHARS else None
    if m is None:
        return None
    fixed, rep = m.group("fixed"), m.group("rep")
    scale = 10 ** len(fixed)
    value = int(m.group("whole") or 0) + Fraction(int(fixed or 0), scale)
    value += Fraction(int(rep), scale * (10 ** len(rep) - 1))
    value = -value if m.group("sign") in _MINUS else value
    return str(value.numerator) if value.denominator == 1 else _frac_text(value)


def _number_text(value: Decimal) -> str:
    """Canonical text of a number: no exponent, no trailing zeros, no '-0' (27.0 -> '27', 0.50 -> '0.5')."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "+0", "") else text.lstrip("+")


def _numbers_equal(gold: Decimal, pred: Decimal) -> bool:
    """Exact equality, or equality after rounding to FLOAT_ROUNDING places when either is not an integer."""
    if gold == pred:
        return True
    if gold == gold.to_integral_value() and pred == pred.to_integral_value():
        return False
    with localcontext() as ctx:
        ctx.prec = 2 * MAX_ANSWER_CHARS + FLOAT_ROUNDING  # quantize must not overflow the default 28 digits
        q = Decimal(1).scaleb(-FLOAT_ROUNDING)
        return gold.quantize(q) == pred.quantize(q)


def _plain_answer(text: str) -> str:
    """`text` without markdown emphasis around it ('**18**' -> '18': math-verify's LaTeX reads no math in it) and
    without a sentence's full stop after it ('\\frac{1}{2}.' -> '\\frac{1}{2}': math-verify's LaTeX reads '1/2.' as 1
    and '\\frac{1}{2}.' as no math); an ellipsis ('1, 2, 3, ...') stays."""
    m = _EMPHASIS.fullmatch(text)
    body = (m.group("inner") if m else text).rstrip()
    return body[:-1].rstrip() if body.endswith(".") and not body.endswith("..") else body


def _without_unit_words(text: str) -> str:
    """The number of a number followed by unit words or short prose ('3/4 cup' -> '3/4', '12 in' -> '12',
    '2 1/2 in' -> '2 1/2', '3/4 of a cup' -> '3/4', '60 km/h' -> '60'), a plain number followed by a percent word
    with its percent sign ('10 percent' -> '10\\%', '12.5 per cent' -> '12.5\\%': as math-verify reads '10%'), else `text`
    unchanged. Read as LaTeX, such words become a product of variables ('3/4 cup' is 3/(4*c*u*p)); words that are math
    stay (see _words_are_math: '3 n', '3/4 of x', '4 xy', '2 pi', '3 sin x', '2 sec x'), and so do scale and power
    words ('2 1/2 dozen' is not 2 1/2; see _unread_number_words)."""
    m = _NUMBER_WITH_WORDS.fullmatch(text) if len(text) <= MAX_ANSWER_CHARS else None
    if m is None:
        return text
    words = [(w.lower(), bool(slash)) for slash, w in _WORD_AFTER.findall(m.group("words"))]
    if _words_are_math(words):
        return text
    head = m.group("head").strip()
    value = _plain_number(head) if _PERCENT.match(m.group("words")) else None
    return head if value is None else f"{_number_text(value)}\\%"  # '10 percent' as math-verify reads '10%'


def _words_are_math(words: list[tuple[str, bool]]) -> bool:
    """True if the words after a number (lower case, each with whether a '/' comes before it) are math, not units or
    prose: a single letter that is neither the article 'a' nor a unit's denominator ('3 n', '4 x y', '3/4 of x';
    not '3/4 of a cup', '60 km/h'), a two-letter word that is no unit ('4 xy', '12 or B'), a name LaTeX reads as math
    ('2 pi', '3 sin x'), or one that is also a unit followed by its argument ('2 sec x'; '30 sec' is a unit). A scale or
    power word ('dozen', 'squared') counts as math too: it changes the number, so the words are never dropped."""
    if all(len(w) < 2 for w, _ in words) or any(w in _NUMBER_WORDS for w, _ in words):
        return True
    if any((len(w) == 1 and w != _ARTICLE and not slash) or (len(w) == 2 and w not in _SHORT_WORDS) for w, slash in words):
        return True
    return any(w in _MATH_NAMES or (w in _UNIT_OR_FUNCTION and i + 1 < len(words)) for i, (w, _) in enumerate(words))


_UNREAD_NUMBER_WORDS = ("a scale or power word is read only after a plain number, once, and not as a power of a negative "
                        "number ('1.5 million', '5 squared'; not '2 1/2 dozen', '-5 squared', '2 thousand squared')")


def _unread_number_words(text: str) -> bool:
    """True if `text` is a number followed by words among which is a scale or power word, other than a plain number
    with one such word (which _plain_number reads): '2 1/2 dozen', '\\frac{1}{2} million', '-5 squared' ((-5)^2 or
    -(5^2)?), '2 thousand squared', '3 n squared', '1e999 cubed' (over MAX_ANSWER_CHARS written out). Such an answer is not read: a gold is unparsed, a prediction wrong
    (math-verify would read it as the bare number or as a product with the word's letters)."""
    spelled = _spelled_number_words(text)
    m = _NUMBER_WITH_WORDS.fullmatch(spelled) if len(text) <= MAX_ANSWER_CHARS else None
    return m is not None and _plain_number(text) is None and any(
        w.lower() in _NUMBER_WORDS for _, w in _WORD_AFTER.findall(m.group("words")))


# Compound quantities: a gold of two or more numbers with different units ('5 ft 6 in', '2 hours 30 minutes', '3 lb 4 oz')
# was read as a product of variables (5*f*t*6*i*n = 30*f*t*i*n), so '6 ft 5 in' and '2 ft 15 in' were judged right
# against '5 ft 6 in'. Policy: such a gold is a compound quantity, and a prediction matches it only if it states the same
# numbers in the same order with the same units (a unit's long name or plural is its short name: '5 feet 6 inches' is
# '5 ft 6 in'). Units are never converted: '66 in' and '5.5 ft' are wrong against '5 ft 6 in' (converting needs unit
# tables and a dimension check; a stated compound is the answer's shape). A compound prediction against a single-answer
# gold is wrong. Each unit is one name of this table (canonical name: its other names), so a product of variables
# ('4 x 3 y', '236 adult, 342 child') is never a compound quantity.
_COMPOUND_UNITS = {
    "mm": "millimeter millimeters millimetre millimetres", "cm": "centimeter centimeters centimetre centimetres",
    "m": "meter meters metre metres", "km": "kilometer kilometers kilometre kilometres", "in": "inch inches",
    "ft": "foot feet", "yd": "yard yards yds", "mi": "mile miles", "mg": "milligram milligrams", "g": "gram grams",
    "kg": "kilogram kilograms kilo kilos", "oz": "ounce ounces", "lb": "pound pounds lbs",
    "ml": "milliliter milliliters millilitre millilitres", "l": "liter liters litre litres", "cup": "cups",
    "pt": "pint pints", "qt": "quart quarts", "gal": "gallon gallons", "s": "sec secs second seconds",
    "min": "mins minute minutes", "h": "hr hrs hour hours", "day": "days", "week": "weeks wk wks",
    "month": "months", "yr": "yrs year years", "dollar": "dollars", "cent": "cents",
}
_UNIT_NAMES = {name: short for short, names in _COMPOUND_UNITS.items() for name in (short, *names.split())}
_QUANTITY = re.compile(rf"\s*(?P<num>{_NUM})\s*(?P<unit>[A-Za-z]+)\.?")  # '5 ft', '6in', '2 hours', '5 ft.'
_QUANTITY_SEP = re.compile(r"\s*(?:,\s*)?(?:and\s+)?")  # '5 ft 6 in', '5 ft, 6 in', '2 hours and 30 minutes'
_QUANTITY_END = re.compile(r"\s*$")
_ENCLOSING_MATH = re.compile(r"\s*(?:\$([^$]*)\$|\\\((.*)\\\))\s*", re.S)  # one $...$ or \(...\) around it all
_LATEX_UNIT = re.compile(r"\\(?:text|textrm|mathrm|mbox)\{([^{}]*)\}")  # '5 \text{ ft } 6 \text{ in}'
_LATEX_SPACE = re.compile(r"~|\\[ ,;]")  # '\mathrm{~ft}', '5\ ft'
_COMPOUND = "compound quantity"  # the detail of a gold normalised as one
_NUMBER_DETAIL = "number"  # the detail of a gold normalised as a plain number


def _compound_quantity(text: str) -> tuple[tuple[Decimal, str], ...] | None:
    """A compound quantity: two or more numbers, each followed by a different unit of _COMPOUND_UNITS
    ('5 ft 6 in', '5 feet, 6 inches', '2 hours and 30 minutes', '$5 \\text{ ft } 6 \\text{ in}$'), as ((number, short
    unit name), ...) in the order written; None for anything else. Linear in the text."""
    if len(text) > MAX_ANSWER_CHARS:
        return None
    if (m := _ENCLOSING_MATH.fullmatch(text)) is not None:
        text = next(g for g in m.groups() if g is not None)
    text = _LATEX_SPACE.sub(" ", _LATEX_UNIT.sub(r" \1 ", text))
    parts: list[tuple[Decimal, str]] = []
    pos = 0
    while (q := _QUANTITY.match(text, pos)) is not None:
        unit = _UNIT_NAMES.get(q.group("unit").lower())
        value = _num_value(q.group("num"))
        if unit is None or value is None or any(u == unit for _, u in parts):
            return None
        parts.append((value, unit))
        if _QUANTITY_END.match(text, q.end()):
            return tuple(parts) if len(parts) > 1 else None
        pos = _QUANTITY_SEP.match(text, q.end()).end()  # type: ignore[union-attr]  # it matches the empty string
    return None


def _compound_text(parts: tuple[tuple[Decimal, str], ...]) -> str:
    """Canonical text of a compound quantity: ((5, 'ft'), (6, 'in')) -> '5 ft 6 in' (it reads back the same)."""
    return " ".join(f"{_number_text(value)} {unit}" for value, unit in parts)


def _same_quantities(gold: tuple[tuple[Decimal, str], ...], pred: tuple[tuple[Decimal, str], ...]) -> bool:
    """True if two compound quantities state the same numbers (see _numbers_equal) with the same units in order."""
    return len(gold) == len(pred) and all(
        gu == pu and _numbers_equal(gv, pv) for (gv, gu), (pv, pu) in zip(gold, pred, strict=True))


def _refused_prediction(pred: str) -> str | None:
    """Why a prediction is wrong against any single-answer gold, or None: a compound quantity ('5 ft 6 in'; see
    _compound_quantity), or a number with a scale or power word it is not read with ('2 1/2 dozen'; see
    _unread_number_words). A single-answer gold is never a compound quantity nor such an answer (both are read in
    the fast path: a compound quantity, or unparsed)."""
    pred = _plain_answer(pred)
    if _compound_quantity(pred) is not None:
        return "a compound quantity against a single answer (units are not converted)"
    if _unread_number_words(pred):
        return _UNREAD_NUMBER_WORDS
    return None


def _strip_hashes(gold: str) -> str:
    """What follows the last '####' of a worked solution, else the text itself (stripped)."""
    pos = gold.rfind(_HASHES)
    return (gold[pos + len(_HASHES) :] if pos >= 0 else gold).strip()


def _fast_normalize(gold: str) -> NormalizedAnswer | None:
    """The canonical form without sympy when the gold is a plain number (with a scale or power word: '1.5 million';
    also after markdown emphasis, a full stop or short prose are left out: '1 000 of them', see _without_unit_words),
    a percent ('10%', '10 percent' -> '10%', detail _PERCENT_DETAIL), a compound quantity ('5 ft 6 in', detail
    _COMPOUND) or plainly unusable (empty, NaN, a clock time, a scale word the fast path does not read), else None."""
    core = _strip_hashes(gold)
    if not core:
        return NormalizedAnswer("unparsed", "", "empty answer")
    if len(core) > MAX_ANSWER_CHARS:
        return NormalizedAnswer("unparsed", "", f"answer over {MAX_ANSWER_CHARS} chars")
    if _NOT_A_NUMBER.fullmatch(core):
        return NormalizedAnswer("unparsed", "", "NaN (a missing value) is not an answer")
    if _CLOCK_TIME.search(core):
        return NormalizedAnswer("unparsed", "", "a clock time is not a number (math-verify reads only its hour)")
    value = _plain_number(core)
    if value is not None:
        return NormalizedAnswer("ok", _number_text(value), _NUMBER_DETAIL)
    plain = _plain_answer(core)
    bare = _without_unit_words(plain)  # '1 000 of them' -> '1 000' (math-verify reads 1*000 = 0), '10 percent' -> '10\%'
    if (value := _plain_number(bare)) is not None:
        return NormalizedAnswer("ok", _number_text(value), _NUMBER_DETAIL)
    if (value := _percent_number(bare)) is not None:
        return NormalizedAnswer("ok", f"{_number_text(value)}%", _PERCENT_DETAIL)
    if (parts := _compound_quantity(plain)) is not None:
        return NormalizedAnswer("ok", _compound_text(parts), _COMPOUND)
    if _unread_number_words(plain):
        return NormalizedAnswer("unparsed", "", _UNREAD_NUMBER_WORDS)
    return None


# -------------------------------------------------------------------------------- worker-side (math-verify)

_TIMED_OUT = False


class _WorkerTimeout(BaseException):
    """Raised by the worker's interval timer; a BaseException so math-verify's `except Exception` lets it out."""


def _on_alarm(signum: int, frame: Any) -> None:
    global _TIMED_OUT
    _TIMED_OUT = True
    raise _WorkerTimeout()


def _looks_like_prose(text: str) -> bool:
    """True if, outside LaTeX commands and \\text{...}, the text has a word of 4+ letters ('see solution')."""
    return _PROSE_WORD.search(_LATEX_WORDS.sub(" ", text)) is not None


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def _mv_read(text: str) -> tuple[tuple, bool]:
    """math-verify parse with its signal timeout off, cached per worker (a gold is parsed once for all its
    rollouts), and whether it was read as free text. Bare answers ('10-4 n', '\\frac12') are read as LaTeX
    math first; prose ('see solution'), text with $...$ spans, and what does not parse as LaTeX only through
    math-verify's free-text extraction (it picks one expression out of the text)."""
    from math_verify import parse

    if not any(d in text.replace("\\$", "") for d in _DELIMITERS) and not _looks_like_prose(text):
        # a newline is a space to LaTeX, but ends math-verify's $...$ (a matrix over lines read as its last number)
        parsed = parse(f"${' '.join(text.splitlines())}$", parsing_timeout=None, raise_on_error=True)
        if parsed:
            return tuple(parsed), False
    return tuple(parse(text, parsing_timeout=None, raise_on_error=True)), True


def _mv_parse(text: str) -> tuple:
    """math-verify's parse of `text` (see _mv_read)."""
    return _mv_read(text)[0]


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def _latex_whole(text: str) -> tuple:
    """math-verify's LaTeX reading of `text` as one $...$ span, with no fallback to a number found inside it."""
    from math_verify import parse
    from math_verify.parser import LatexExtractionConfig

    return tuple(parse(f"${text}$", extraction_config=[LatexExtractionConfig()], fallback_mode="no_fallback",
                       parsing_timeout=None, raise_on_error=True))


def _partial_read(parsed: tuple) -> str | None:
    """The text math-verify matched, when the number it read is only part of it, else None. math-verify reads a
    number out of a matched text whose LaTeX does not parse as a whole ('-1<x \\leqslant 1:(-1,1]' as 1,
    'x=0, \\frac{5 \\pm \\sqrt{61}}{18}' as 0, '17 | 18' as 18); such a text that holds other candidates (numbers,
    \\infty; a unit's power aside) is a pick among several answers. A whole read is not ('\\frac{40}{3} \\approx
    13.33' is 40/3, '= 0.527' is 0.527), nor a text with one number ('18 sq. ft.'), nor one that ends in '= <that
    number>' ('u \\cdot v=17')."""
    import sympy

    exprs = [p for p in parsed if not isinstance(p, str)]
    matched = next((p for p in parsed if isinstance(p, str)), "")
    if not exprs or not isinstance(exprs[0], sympy.Number) or len(_CANDIDATE.findall(_POWER.sub(" ", matched))) < 2:
        return None
    stated = _plain_number(matched.rsplit("=", 1)[1]) if "=" in matched else None
    if stated is not None and sympy.Rational(str(stated)) == sympy.Rational(str(exprs[0])):
        return None
    lead = _LEADING_RELATION.match(matched)
    whole = _latex_whole(matched[lead.end():] if lead else matched)
    return None if whole and whole[0] == exprs[0] else matched


def _other_answers(text: str, matched: str) -> int:
    """How many more answer candidates (math spans holding a digit, numbers outside spans; a unit's power such as
    the 2 of '\\mathrm{in}^{2}' is no candidate) `text` holds besides the `matched` part math-verify read
    ('236 adult, 342 child' read as 342: one more). math-verify joins the spans it read with ' and '."""
    rest = text.replace("\\$", " ")
    parts = [p for p in matched.split(_AND) if p.strip()]
    unmatched = 0
    for part in parts:
        pos = rest.rfind(part)
        if pos < 0:
            unmatched += 1  # rewritten by math-verify ('\\dfrac' as '\\frac'): one of the candidates found
        else:
            rest = rest[:pos] + " " + rest[pos + len(part) :]
    rest = _POWER.sub(" ", rest)
    spans = [m for m in _MATH_SPAN.findall(rest) if any(c.isdigit() for c in m)]
    found = len(spans) + len(_NUMBER_WORD.findall(_MATH_SPAN.sub(" ", rest)))
    return max(0, found - unmatched)


def _gold_parse(core: str) -> tuple[tuple, str]:
    """math-verify's reading of a gold answer, and '' or why it is not usable: a gold read as free text (prose,
    $...$ spans) that holds other numbers or math spans besides the one math-verify picked is ambiguous
    ('236 adult, 342 child', '$64^{\\circ}$ at 2 PM'); a gold with a \\boxed{} answer is read from that box."""
    parsed, free_text = _mv_read(core)
    matched = next((p for p in parsed if isinstance(p, str)), "")
    if not any(not isinstance(p, str) for p in parsed):
        return parsed, "math-verify found no math" + (f" (matched {parsed[0]!r})" if parsed else "")
    if free_text and _BOXED not in core and (n := _other_answers(core, matched)):
        return parsed, f"ambiguous: math-verify read {matched[:60]!r} but the answer holds {n} more number(s)"
    if (part := _partial_read(parsed)) is not None:
        return parsed, f"ambiguous: math-verify read only {parsed[0]} out of {part[:60]!r}"
    return parsed, ""


def _bare_math(text: str) -> str:
    """The inside of one enclosing ``$...$``/``$$...$$``/``\\(...\\)``, when it re-parses the same way
    bare (see _mv_parse), else the text unchanged."""
    m = _ONE_MATH_SPAN.fullmatch(text)
    inner = next((g for g in m.groups() if g is not None), None) if m else None
    if inner is None or not inner.strip() or _looks_like_prose(inner):
        return text
    return inner.strip()


def _canonical_text(parsed: list | tuple, gold: str) -> str | None:
    """Canonical text of a parsed gold: numbers as plain text ('27', '0.5', '\\frac{1}{2}'), anything else as
    the gold's own LaTeX without its enclosing $...$ (math-verify's re-printed string does not always
    re-parse to the same expression, the original does). None when nothing parsed."""
    import sympy

    exprs = [p for p in parsed if not isinstance(p, str)]
    if not exprs:
        return None
    expr = exprs[0]
    if isinstance(expr, sympy.Integer | sympy.Float):
        try:
            return _number_text(Decimal(str(expr)))
        except InvalidOperation:
            pass
    if isinstance(expr, sympy.Rational) and not isinstance(expr, sympy.Integer):
        sign = "-" if expr.p < 0 else ""
        return f"{sign}\\frac{{{abs(expr.p)}}}{{{expr.q}}}"
    return _bare_math(gold)


def _gold_core(gold: str) -> str:
    """The part of a gold answer math-verify reads: what follows its last '####', a mixed number or a repeating
    decimal as its LaTeX fraction (see _mixed_number, _repeating_decimal), without markdown emphasis or a
    sentence's full stop (see _plain_answer), a number's unit words left out ('3/4 cup' -> '3/4', see
    _without_unit_words)."""
    core = _without_unit_words(_plain_answer(_strip_hashes(gold)))
    return _mixed_number(core) or _repeating_decimal(core) or core


def _task_normalize(gold: str) -> tuple[str, str, str]:
    """Worker task: (status, text, detail) for one gold answer."""
    core = _gold_core(gold)
    parsed, why_not = _gold_parse(core)
    text = None if why_not else _canonical_text(parsed, core)
    if text is None:
        return ("unparsed", "", why_not or "math-verify found no math")
    return ("ok", text, "math-verify")


def _task_verify(gold: str, pred: str) -> tuple[str, str, str]:
    """Worker task: (status, gold_text, detail) for one prediction against one gold."""
    from math_verify import verify

    core = _gold_core(gold)
    gold_parsed, why_not = _gold_parse(core)
    if why_not:
        return ("error", "", f"gold answer could not be parsed: {why_not}")
    gold_text = _canonical_text(gold_parsed, core) or ""
    if (why := _refused_prediction(pred)) is not None:  # '5 ft 6 in', '2 1/2 dozen': never a product of letters
        return ("wrong", gold_text, why)
    pred_parsed = _mv_parse(pred)
    if not pred_parsed:
        return ("no_answer", gold_text, "prediction could not be parsed")
    if (part := _partial_read(pred_parsed)) is not None:  # '17 | 18': a pick among answers, read as the last one
        return ("wrong", gold_text, f"ambiguous prediction: math-verify read only {pred_parsed[0]} out of {part[:60]!r}")
    ok = verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None, raise_on_error=True)
    return ("correct" if ok else "wrong", gold_text, "math-verify")


def _task_stall(seconds: float) -> tuple[str, str, str]:
    """Worker task used by the tests: sleep with SIGALRM blocked, as a C call that ignores signals would."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    return ("ok", "", "stalled")


_TASKS = {"normalize": _task_normalize, "verify": _task_verify, "stall": _task_stall}


def _worker_main(fd: int) -> None:
    """Worker loop on socket `fd`: import math-verify, say ready, then run (kind, args, timeout_s) tasks
    until told to stop (None) or the parent goes away."""
    import logging
    import signal

    global _TIMED_OUT
    import math_verify  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    signal.signal(signal.SIGALRM, _on_alarm)
    conn = Connection(fd)
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        kind, args, timeout_s = msg
        _TIMED_OUT = False
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                out: tuple = ("done", _TASKS[kind](*args))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _WorkerTimeout:
            out = ("timeout", f"over {timeout_s:g} s")
        except Exception as e:  # noqa: BLE001 - any verifier failure becomes an "error" status
            out = (
                ("timeout", f"over {timeout_s:g} s")
                if _TIMED_OUT
                else ("error", f"{type(e).__name__}: {e}"[:300])
            )
        conn.send(out)


# ------------------------------------------------------------------------------------------- parent-side pool


class _Worker:
    """One worker: a fresh `python -c` process (not multiprocessing, so the caller's __main__ is never
    re-imported) talking over a socketpair; `ready` once math-verify is imported there."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CMD, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False
        self.task: int | None = None
        self.deadline = time.monotonic() + WORKER_START_TIMEOUT_S

    def kill(self) -> None:
        self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()


class _Pool:
    """A lazily started, reused set of worker processes. One batch runs at a time (a lock), so callers on
    any thread are safe; a worker that overruns its deadline is killed and replaced."""

    def __init__(self, n_workers: int) -> None:
        self.n_workers = n_workers
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers.remove(worker)

    def run(self, tasks: list[tuple[str, tuple]], timeout_s: float) -> list[tuple]:
        """Run tasks, each bounded by timeout_s of its own run time; returns ('done', value) | ('timeout', detail)
        | ('error', detail) per task, in order."""
        results: list[tuple | None] = [None] * len(tasks)
        with self.lock:
            pending = deque(range(len(tasks)))
            start_failures = 0
            while pending or any(w.task is not None for w in self.workers):
                busy = sum(w.task is not None for w in self.workers)
                while len(self.workers) < min(self.n_workers, len(pending) + busy):
                    self.workers.append(_Worker())
                self._dispatch(tasks, pending, results, timeout_s)
                start_failures += self._collect(results, timeout_s)
                if start_failures >= MAX_START_FAILURES and not any(w.ready for w in self.workers):
                    for i in pending:
                        results[i] = ("error", "verifier workers failed to start")
                    pending.clear()
        return [r if r is not None else ("error", "no result") for r in results]

    def _dispatch(
        self, tasks: list[tuple[str, tuple]], pending: deque, results: list, timeout_s: float
    ) -> None:
        """Give each ready, idle worker the next pending task and start its deadline."""
        for w in list(self.workers):
            if w.ready and w.task is None and pending:
                i = pending.popleft()
                kind, args = tasks[i]
                try:
                    w.conn.send((kind, args, timeout_s))
                except OSError:
                    results[i] = ("error", f"verifier worker exited (code {w.proc.poll()})")
                    self._replace(w)
                    continue
                w.task, w.deadline = i, time.monotonic() + timeout_s + HARD_KILL_GRACE_S

    def _collect(self, results: list, timeout_s: float) -> int:
        """Wait for the first message or deadline; record results, kill overrunning workers. Returns how many
        workers failed while starting."""
        live = [w for w in self.workers if w.task is not None or not w.ready]
        if not live:
            return 0
        timeout = max(0.0, min(w.deadline for w in live) - time.monotonic())
        ready_conns = wait([w.conn for w in live], timeout=timeout)
        failures = 0
        for w in live:
            if w.conn in ready_conns:
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):
                    failures += not w.ready
                    if w.task is not None:
                        results[w.task] = ("error", f"verifier worker exited (code {w.proc.poll()})")
                    self._replace(w)
                    continue
                if msg[0] == "ready":
                    w.ready = True
                else:
                    results[w.task] = msg
                    w.task = None
            elif time.monotonic() >= w.deadline:
                if w.task is not None:
                    results[w.task] = ("timeout", f"over {timeout_s:g} s (worker killed)")
                else:
                    failures += 1
                self._replace(w)
        return failures

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's workers (closing only our copies of their sockets) and lock."""
        for w in self.workers:
            w.conn.close()
        self.workers = []
        self.lock = threading.Lock()

    def shutdown(self) -> None:
        with self.lock:
            for w in self.workers:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
                w.kill()
            self.workers.clear()


_POOL = _Pool(MAX_WORKERS)
atexit.register(_POOL.shutdown)
os.register_at_fork(after_in_child=_POOL.forget_after_fork)


def shutdown_verifier() -> None:
    """Stop the verifier worker processes (they restart on the next call that needs them)."""
    _POOL.shutdown()


# ------------------------------------------------------------------------------------------------ public API


def _run_unique(tasks: list[tuple[str, tuple]], timeout_s: float) -> list[tuple]:
    """Pool results for tasks, each distinct task run once (RL groups repeat the same answer many times)."""
    if not tasks:
        return []
    unique = list(dict.fromkeys(tasks))
    done = dict(zip(unique, _POOL.run(unique, timeout_s), strict=True))
    return [done[t] for t in tasks]


def normalize_answers(golds: list[str], timeout_s: float) -> list[NormalizedAnswer]:
    """Canonical forms of many gold answers: plain numbers in-process, the rest in one pool batch."""
    out: list[NormalizedAnswer | None] = [_fast_normalize(g if isinstance(g, str) else str(g)) for g in golds]
    slow = [i for i, r in enumerate(out) if r is None]
    pooled = _run_unique([("normalize", (str(golds[i]),)) for i in slow], timeout_s)
    for i, res in zip(slow, pooled, strict=True):
        if res[0] == "done":
            out[i] = NormalizedAnswer(*res[1])
        else:
            out[i] = NormalizedAnswer(res[0], "", res[1])
    return [r for r in out if r is not None]


def normalize_answer(gold: str, timeout_s: float) -> NormalizedAnswer:
    """Canonical form of one gold answer ('#### 18' -> '18', '9 (apples)' -> '9', '27.0' -> '27',
    '1,000' -> '1000', '$\\frac12$' -> '\\frac{1}{2}'); status 'unparsed'/'timeout'/'error' when it fails."""
    return normalize_answers([gold], timeout_s)[0]


def _fast_verify(completion: str, gold: str) -> VerifyResult | tuple[str, str, str]:
    """A final VerifyResult when no sympy is needed, else (pred, pred as math-verify should read it, gold) to send
    to the pool."""
    parts = _final_answer(completion)
    if parts is None:
        return VerifyResult("no_answer", None, None, "no '####' or closed '\\boxed{}' found")
    pred = _ANSWER_JOIN.join(parts)
    gold_n = _fast_normalize(gold if isinstance(gold, str) else str(gold))
    if gold_n is not None and not gold_n.ok:
        return VerifyResult("error", pred, None, f"gold answer unusable: {gold_n.detail}")
    if len(pred) > MAX_ANSWER_CHARS:
        return VerifyResult(
            "wrong", pred[:100], gold_n.text if gold_n else None, f"prediction over {MAX_ANSWER_CHARS} chars"
        )
    if gold_n is not None and (verdict := _judge_fast_gold(gold_n, pred, len(parts) == 1)) is not None:
        return verdict
    return (pred, _ANSWER_JOIN.join(_as_math(p) for p in parts), gold_n.text if gold_n is not None else str(gold))


def _judge_fast_gold(gold_n: NormalizedAnswer, pred: str, single: bool) -> VerifyResult | None:
    """The judgement of a prediction (`single`: one answer, not boxes written together) against a gold the fast path
    read, when no sympy is needed, else None. A compound-quantity gold needs the same quantities (see
    _compound_quantity); a number or percent against a number or percent is compared in Decimal (a percent is its number
    or its hundredth, see _percent_equal); a prediction no single-answer gold can match is wrong (see
    _refused_prediction)."""
    gold = gold_n.text
    if gold_n.detail == _COMPOUND:  # same numbers, same units, same order (no conversion)
        pred_parts = _compound_quantity(_plain_answer(pred)) if single else None
        ok = pred_parts is not None and _same_quantities(_compound_quantity(gold) or (), pred_parts)
        return VerifyResult("correct" if ok else "wrong", pred, gold, _COMPOUND)
    value = _plain_number(pred) if single else None
    pct = _percent_number(_without_unit_words(_plain_answer(pred))) if single and value is None else None
    gold_is_pct = gold_n.detail == _PERCENT_DETAIL
    gold_value = _percent_number(gold) if gold_is_pct else Decimal(gold) if gold_n.detail == _NUMBER_DETAIL else None
    if gold_value is not None and (value is not None or pct is not None):
        if pct is not None:  # a percent against a number: its number or its hundredth; against a percent: its number
            same = _numbers_equal(gold_value, pct) if gold_is_pct else _percent_equal(pct, gold_value)
        else:
            same = _percent_equal(gold_value, value) if gold_is_pct else _numbers_equal(gold_value, value)
        detail = _PERCENT_DETAIL if gold_is_pct or pct is not None else _NUMBER_DETAIL
        return VerifyResult("correct" if same else "wrong", pred, gold, detail)
    if single and (why := _refused_prediction(pred)) is not None:
        return VerifyResult("wrong", pred, gold, why)
    return None


def _as_math(pred: str) -> str:
    """A prediction as math-verify should read it: a mixed number or a repeating decimal as its LaTeX fraction
    ('2 1/2' -> '\\frac{5}{2}', '0.\\overline{3}' -> '\\frac{1}{3}'), a plain number as its canonical text
    ('1e-07' -> '0.0000001'), anything else unchanged; markdown emphasis around it and a full stop after it go
    first ('**18**' -> '18', '1/2.' -> '1/2', see _plain_answer), then unit words after a number ('3/4 cup' ->
    '3/4', '12 in' -> '12'; not '3 n' or '2 pi', see _without_unit_words)."""
    pred = _without_unit_words(_plain_answer(pred))
    value = _plain_number(pred)
    if value is not None:
        return _number_text(value)
    return _mixed_number(pred) or _repeating_decimal(pred) or pred


def fast_verdict(completion: str, gold: str) -> VerifyResult | None:
    """The judgement :func:`verify_batch` reaches in this process, without the worker pool: no answer, an
    unusable gold, a plain number or percent against a plain-number or percent gold (``#### 1,000``,
    ``\\boxed{18.00}``, ``#### $18``, ``#### 18 dollars``, ``#### 1.5 thousand`` against 1000/18/1500, ``#### 10%``
    against 0.1), anything against a compound-quantity gold (``5 ft 6 in``), or a prediction no single-answer gold
    matches (``#### 5 ft 6 in``, ``#### 2 1/2 dozen`` against a number). in: completion, gold; out: that VerifyResult, or None
    when the pair needs math-verify (call verify_batch for it)."""
    first = _fast_verify(completion, gold)
    return first if isinstance(first, VerifyResult) else None


def verify_batch(completions: list[str], golds: list[str], timeout_s: float = 5.0) -> list[VerifyResult]:
    """Judge each completion against its gold; number-vs-number pairs in-process, the rest in one pool batch
    where each item is bounded by timeout_s (an overrun is status 'timeout')."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    first = [_fast_verify(c, g) for c, g in zip(completions, golds, strict=True)]
    slow = [i for i, r in enumerate(first) if not isinstance(r, VerifyResult)]
    tasks = [("verify", (first[i][2], first[i][1])) for i in slow]  # type: ignore[index]
    out: list[Any] = list(first)
    for i, res in zip(slow, _run_unique(tasks, timeout_s), strict=True):
        pred, _, gold_text = first[i]  # type: ignore[misc]
        if res[0] == "done":
            status, canon, detail = res[1]
            out[i] = VerifyResult(status, pred, canon or gold_text, detail)
        else:
            out[i] = VerifyResult(res[0], pred, gold_text, res[1])
    return out


def verify_answer(completion: str, gold: str, timeout_s: float = 5.0) -> VerifyResult:
    """Judge one completion: its final answer (see extract_final_answer) against the gold, via math-verify's
    verify(parse(gold), parse(pred)); bounded by timeout_s and safe from any thread."""
    return verify_batch([completion], [gold], timeout_s)[0]
