"""Answer extraction and verification, bounded in wall time and safe to call from any thread.

- :func:`extract_final_answer` finds the answer a model wrote (the last ``#### X`` or ``\\boxed{...}``,
  whichever comes later; boxes written together, ``\\boxed{3}, \\boxed{5}``, are one answer, as in math-verify: only
  whitespace, math delimiters and one separator between them, so ``\\boxed{3}. Wait, ... \\boxed{5}`` answers 5).
- :func:`normalize_answer` / :func:`normalize_answers` turn a gold answer in any common shape into canonical text.
- :func:`verify_answer` / :func:`verify_batch` judge a completion against a gold answer.

One reader, :func:`_read_answer`, reads a gold (what follows its ``####``) and a prediction alike, in this process (Decimal
comparison, no sympy), into a number, a percent or a compound quantity: a pair it reads on both sides is judged there
(so is any prediction against a compound-quantity gold, and a prediction it refuses, below), and whatever it does not
read goes to math-verify. Before anything reads them, a gold and each part of a final answer are folded (see
:func:`fold_unicode`): format characters (zero-width spaces, bidi marks) are dropped; superscripts after a number, a
letter or a bracket are powers (``3²`` is 9, ``x²`` is x^2; a unit's ``12 m²`` stays 12); vulgar fractions are fractions
(``½``, ``2½``); NFKC folds full-width forms (``－５``, ``０．５``, ``50％``, ``（1，2）``) and ``①``; ``√2``, ``∞``, ``·``,
``∈`` and ``、`` become the LaTeX math-verify reads; ``50‰`` is 0.05 (a per mille sign after anything but a plain number
is not read). A decimal comma is not read as one (``3,5`` is the set {3, 5}, ``1.000`` is 1), only English number words
are read (``三`` is no number), and the final-answer markers are ASCII (``＃＃＃＃ 7``, ``\\boxed｛7｝`` hold no answer).

- A number: plain (``18``, ``-2.50``, ``1,000``, ``1\\,000``, ``1 000``, ``1e-07``, ``9 (apples)``, ``-$5``, ``−5``, ``€5``),
  also without markdown emphasis around it or a full stop after it (``**18**``, ``18.``) and with unit words or short
  prose after it left out (``12 in``, ``18 sq. ft.``, ``1 000 of them``: math-verify read that number as 1*000 = 0; a
  single letter or a two-letter word that is no unit is a variable: ``3 n``, ``4 xy`` stay 3n, 4xy). A scale word after
  a plain number multiplies it and a power word raises it (``1.5 million`` is 1500000, ``2 dozen eggs`` 24, ``a dozen``
  12, ``half a dozen`` 6, ``5 squared`` 25, ``3 cubed`` 27; also as LaTeX text, ``1.5 \\text{ million}``), and a chain of
  whole numbers with descending decimal scales, each under the scale before it, is their sum (``2 thousand 5 hundred``
  is 2500, ``1 million 200 thousand`` 1200000: math-verify found it ambiguous as a gold and a product of letters as a
  prediction). After anything else (``2 1/2 dozen``, ``-5 squared``, ``2 thousand squared``, ``2 thousand 15 hundred``,
  ``5 hundred 2 thousand``, ``2 thousand 5``) the answer is not read: such a gold is unparsed, such a prediction wrong,
  never the bare number.
- A percent: a plain number or a fraction with a percent sign or word (``10%``, ``$10\\%$``, ``10 percent``, ``12.5 per
  cent``, ``2.5 percent of them``, ``1/2%``, ``1/2 percent``, ``12 1/2%``, ``$\\frac{1}{2}\\%$``; canonical text ``10%``,
  ``0.5%``, ``\\frac{1}{3}%``). It equals both its number and its hundredth (``10%`` is 10 and 0.1, ``1/2%`` 0.5 and
  0.005): math-verify's LaTeX reading does so for an integer percent only (``12.5%`` was not 12.5), ``10 percent`` was
  read as 10 only, ``1/2 percent`` as 1/2 and ``12 1/2%`` as 13/2 %. Against an answer only math-verify reads
  (``\\frac{25}{2}``), the percent goes to it as it reads a percent and, when found unequal, once more as its number.
- A compound quantity, numbers with different units (``5 ft 6 in``, ``5 feet, 6 inches``, ``5'6"``, ``5' 6''``,
  ``2 hours and 30 minutes``, ``3 lb 4 oz``), as its (number, unit) pairs, long unit names as short ones (canonical text
  ``5 ft 6 in``, ``2 h 30 min``): a prediction matches only with the same numbers and units in the same order, units are
  never converted (``66 in`` and ``6 ft 5 in`` are wrong), and a compound prediction against a single-answer gold is
  wrong (math-verify read ``5 ft 6 in`` as the product 30*f*t*i*n, which ``6 ft 5 in`` equals, and ``5'6"`` as 56). A
  sign before its first number is the sign of the whole (``-5 ft 6 in`` matches only ``-5 ft 6 in``, not ``5 ft 6 in``
  nor ``-5 ft -6 in``); a sign before a later number (``5 ft -6 in``) is not read: a gold unparsed, a prediction wrong.
- A whole number in words, read as its digits and then as digits are (``ten``, ``Twenty-five``, ``twenty five``, ``one
  hundred and five``, ``nineteen hundred eighty four``, ``two thousand five hundred``, ``twelve apples``, ``ten percent``,
  ``two dozen``): math-verify read ``ten`` as the product t*e*n (``#### 10`` was wrong for it) and ``seven`` as no math.
  Words after it that make it no whole number (``three quarters``, ``three point five``, ``three times four``, ``five
  or six``, ``two thousand squared``) leave it unread, as prose; so are sign words (``minus five``) and numbers written
  partly in digits (``twenty 5``). A fraction in words after it is read as after digits (``five and a half`` is 5.5,
  ``two thirds`` 2/3), and so is one LaTeX text group of words (``\\boxed{\\text{ten}}`` is 10; math-verify read no number).
- A whole number and a fraction in words (``2 and a half``, ``2 and one half``, ``3 and three quarters``, ``2 thirds``,
  ``1 half``, ``3 fifths``, ``3 quarters of the pie``; unit words may follow): the fraction (2.5, 3.75; 2/3 goes to
  math-verify as ``\\frac{2}{3}``, as a mixed number does). The fraction word was a unit word, so ``2 and a half`` was 2.
  ``N quarters`` right after a number stays N, as coins (GSM8K asks how many quarters, gold 16: ``16 quarters``), and
  ``second(s)`` is time. A fraction word the reader does not read (``2 half``, ``2 and 3 halves``, ``2 cups and a half``,
  ``1.5 thirds``) leaves the answer unread: a gold unparsed, a prediction wrong.

Prose is no answer: plain words (ASCII letters, spaces and a sentence's punctuation, with a word of two or more letters
and no word LaTeX names as math: ``Ted``, ``Yes``, ``Rug B``, ``Mrs. Hilt``, ``No solution``), whatever their length, are
an unparsed gold, and a wrong prediction against a gold the fast path reads (math-verify read a word of 1-3 letters as
a product of symbols: ``Det`` equalled ``Ted``); against a gold only math-verify reads, such a prediction stays
math-verify's (``\\boxed{xy}`` is the product xy there). A lone letter (``A``, ``(B)``, ``x``: a choice letter or a
variable) stays math on both sides. A gold read as free text whose one math is a bare symbol in a sentence (``$C$ is not
invertible``, ``Any $h$ will work.``: math-verify picked out C and h) is unparsed.

A mixed number (``2 1/2``) or a repeating decimal (``0.\\overline{3}``) goes to math-verify as the fraction it means,
an answer with unit words after it without them (``3/4 cup`` as 3/4). An answer whose canonical text would be over
MAX_ANSWER_CHARS (``'1' * 1990 + 'e999'`` written out) is not read: a gold unparsed, a prediction wrong. A gold that
math-verify can only read as one pick among several answers ('236 adult, 342 child', or a number it found inside LaTeX
that does not parse as a whole: '$R=1, I=(-1,1)$'), or a clock time with a.m./p.m., is unparsed, not a guess; a
prediction read that way ('#### 17 | 18') is wrong. An equation of numbers in a prediction is math-verify's: it compares
the right-hand side (``\\frac{1}{3}=0.33`` is right against 0.33). A bare clock time (``5:45``) is read as its time, not
the ratio 1/9: only the same time matches it (``5:45 p.m.`` does), and a number only where the gold may also be a ratio
in lowest terms (``9:10``: see _CLOCK). A unit in parentheses after a number is unit words only (``9 (apples)``,
``4 (m)``, ``20 (km/h)``, ``5 (cm^2)``): ``2(x+1)``, ``3(5)``, ``3 (x)`` and ``2(ab)`` are math (see _UNIT_PAREN). A
verdict shows the gold's canonical text (as normalize_answer gives it).
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
import unicodedata
from collections import Counter, deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction
from functools import lru_cache
from math import gcd
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, NamedTuple

VERSION = "7"  # the verdict rules' version, part of the cache key of every stage that verifies (saerl.stages):
# bump it with any change that can turn a verdict, a normalized gold answer or an extracted final answer
WORKERS_FAILED = "verifier workers failed to start"  # the detail of every task of a call whose pool never started
MAX_SCAN_CHARS = 20_000  # extract_final_answer looks at most at the last this-many characters
MAX_ANSWER_CHARS = 2_000  # longer answers are not handed to sympy at all
FLOAT_ROUNDING = 6  # decimal places compared for non-integers, as math-verify's float_rounding
HARD_KILL_GRACE_S = 1.0  # extra seconds a worker gets past timeout_s before it is killed
WORKER_START_TIMEOUT_S = 120.0  # a worker that is not ready (math-verify imported) by then is an error
MAX_START_FAILURES = 3  # workers failing to start, in one call, before its tasks are given up as errors
MAX_TASK_DEATHS = 2  # workers that may die (killed: SIGKILL, the OOM killer) on one task before it is an "error";
# each earlier death runs it again on a fresh worker: an infrastructure kill is no verdict on the answer
EXIT_WAIT_S = 1.0  # how long a worker whose socket closed is waited for, to read its exit status (-9: SIGKILL)
PARSE_CACHE_SIZE = 4096  # parsed answers each worker remembers
NORMALIZE_BLOCK = 2048  # gold answers per pool batch when normalizing many: the progress bar's step
# address space a worker may add after importing math-verify: one answer like \boxed{2^{2^{40}}} grew a worker by
# 429 MB in 5 s (eight workers of a raised verify_timeout_s: gigabytes beside a training run); past it sympy's
# allocation fails and the task ends as an "error" (a MemoryError, as any other failure of the verifier)
WORKER_MEMORY_HEADROOM_MB = 1024


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (a container's cpuset, a batch job's or a pinned Dask worker's
    share), else the machine's count: os.cpu_count() alone gave a process pinned to 2 of 64 cores 8 workers."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


MAX_POOL = 8  # verifier processes a pool starts at most (sympy's LaTeX parser is ~30 ms per answer: use the cores)
MAX_WORKERS = max(1, min(MAX_POOL, usable_cpus()))  # this process's pool size outside a Dask worker


def pool_size() -> int:
    """Verifier processes this process's pool may run: inside a Dask worker, its share of its machine's CPUs (the
    CPUs over the cluster's workers on that host), at least its threads, at most MAX_POOL: each worker process runs
    its own pool, and sized by the machine alone, eight single-thread workers on 16 cores ran eight pools of eight
    beside each other (two workers get eight each, as before); elsewhere MAX_WORKERS. Read when the pool first starts
    (in a worker: within a task). out: the count."""
    try:
        from distributed import get_client, get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # no distributed, or not inside a Dask worker's task
        return MAX_WORKERS
    threads = worker.state.nthreads
    try:
        workers = get_client().scheduler_info()["workers"]
        hosts = [w.get("host") for w in workers.values()]
        share = usable_cpus() // max(1, hosts.count(workers[worker.address].get("host")))
    except Exception:  # noqa: BLE001 - the scheduler not answering costs the share, never the verification
        share = threads
    return max(1, min(MAX_POOL, max(threads, share)))
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# a worker ignores Ctrl-C from its first line (the terminal sends SIGINT to the whole process group: each worker printed
# a KeyboardInterrupt traceback under saerl's "stopped by SIGINT"); its parent stops it (EOF on its socket, or kill)
_WORKER_CMD = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
               "import sys; from saerl.verify import _worker_main; _worker_main(int(sys.argv[1]))")

MAX_EXPONENT_DIGITS = 3  # '1e-07', '2.5e+20' (how polars/pandas write floats) are plain numbers; 1e999 at most
# A number: digits with thousands separators (',', LaTeX's '{,}', ',\!' and '\,', a thin space; no leading 0: '0,245'
# is no thousands number), or without them
# and with an optional exponent (math-verify would read the 'e' of '1e-07' as Euler's number, and '1\,000' as 0).
# A sign may be '-' or the unicode minus U+2212 ('−5').
_SIGN = r"[+\-\u2212]"
# ' ': '1 000' (math-verify's LaTeX reads 1*000 = 0); the no-break spaces U+00A0 and U+202F, the thin space U+2009
_THOUSANDS_SEP = r"(?:,\\!|\{,\}|\\,|[, \u00a0\u2009\u202f])"
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
# A fraction before a percent sign or word: 'a/b', a mixed number 'w a/b' (a proper fraction), '\frac{a}{b}' or '\frac ab'.
_PERCENT_FRACTION = (
    rf"(?P<fsign>{_SIGN}?)(?:(?:(?P<whole>\d+)\s+)?(?P<fnum>\d+)\s*/\s*(?P<fden>\d+)"
    rf"|\\[dt]?frac(?:\{{(?P<lnum>\d+)\}}\{{(?P<lden>\d+)\}}|(?P<snum>\d)(?P<sden>\d)))"
)
# A plain number or a fraction with a percent sign or word ('10%', '$12.5\%$', '10 percent', '1/2%', '12 1/2 percent',
# '$\frac{1}{2}\%$'; '10 percent of them' once _without_unit_words made it '10\%'). It equals both its number and its
# hundredth (see _percent_equal): '1/2%' is 0.5 and 0.005 (math-verify read '1/2 percent' as 1/2 and '12 1/2%' as 13/2%).
_PERCENT_NUMBER = re.compile(
    rf"\s*(?:\$\s*)?(?:(?P<num>{_NUM})|{_PERCENT_FRACTION})\s*(?:\\?%|{_PERCENT_WORD})(?:\s*\$)?(?:\s*\.)?\s*"
)
_PERCENT_DETAIL = "percent"  # the detail of a gold normalised as a percent ('10%')
# Fraction words after a number: 'half', 'quarter' and the ordinals from 'third' on, each with its plural, and its
# denominator. '2 thirds' is 2/3, '1 half' 1/2, '2 and a half' 5/2, '3 and three quarters' 15/4 (see _word_fraction);
# they were unit words, so each was read as its whole number ('#### 2 and a half' was right against 2). 'quarter(s)' right
# after a number is also a coin (GSM8K asks 'how many quarters does she have?', gold 16): '3 quarters' stays 3 (a unit
# word), '3 quarters of the pie' is 3/4 and '2 and a quarter' 9/4. 'second(s)' is a unit of time, never a fraction.
_ORDINALS = ("third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth fifteenth "
             "sixteenth seventeenth eighteenth nineteenth twentieth thirtieth fortieth fiftieth sixtieth seventieth "
             "eightieth ninetieth hundredth thousandth millionth billionth trillionth").split()
_ORDINAL_VALUES = [*range(3, 20), *range(20, 100, 10), 100, 10**3, 10**6, 10**9, 10**12]
_QUARTER, _QUARTERS = "quarter", "quarters"
_FRACTION_SINGULAR = {"half": 2, _QUARTER: 4, **dict(zip(_ORDINALS, _ORDINAL_VALUES, strict=True))}
_FRACTION_PLURAL = {"halves": 2, **{f"{w}s": d for w, d in _FRACTION_SINGULAR.items() if w != "half"}}
_FRACTION_WORDS = frozenset(_FRACTION_SINGULAR) | frozenset(_FRACTION_PLURAL)
_COIN_WORDS = frozenset((_QUARTER, _QUARTERS))  # fraction words that are also a coin right after a number


def _trie_pattern(words: frozenset[str]) -> str:
    """A regex alternation of `words` as a trie ({'half', 'halves'} -> '(?:h(?:a(?:l(?:f|v(?:e(?:s))))))'): the regex
    engine tries one branch per letter instead of every word (the unit-word check below runs at every word after a
    number: a flat list of ~80 words made the fast path ~17% slower)."""
    branches: dict[str, set[str]] = {}
    for word in words:
        branches.setdefault(word[:1], set()).add(word[1:])
    alternatives = [re.escape(c) + (_trie_pattern(frozenset(rest)) if rest != {""} else "") for c, rest in
                    sorted(branches.items()) if c]
    pattern = f"(?:{'|'.join(alternatives)})"
    return f"{pattern}?" if "" in branches else pattern


# A unit word: no scale, power, fraction or percent word ('3 quarters' is read once _without_unit_words made it '3');
# the lookahead of three letters first, so that no word list is tried where no word stands (after the number itself).
_TAIL_WORD = (rf"(?=[A-Za-z]{{3}})(?!(?i:{_trie_pattern(_NUMBER_WORDS | _FRACTION_WORDS)})(?![A-Za-z])|{_PERCENT_WORD})"
              rf"[A-Za-z]{{3,}}")
# Words LaTeX names as math: never prose nor a unit ('sin x', '2 pi', '3 (pi)' stay math).
_MATH_NAMES = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi omicron pi varpi rho "
    "sigma tau upsilon phi varphi chi psi omega sqrt sin cos tan cot csc arcsin arccos arctan sinh cosh tanh log ln lg "
    "exp inf infty infinity arcsec arccsc arccot sech csch coth gcd lcm det".split()
)
# Two-letter words that are units or prose ('12 in', '18 sq. ft.', '3/4 of a cup'); any other ('4 xy', '4 ac', '12 or B',
# '3 IV') is a product of variables or a pick among answers, and keeps the answer whole.
_SHORT_WORDS = frozenset("in ft yd mi mm cm km nm kg mg lb oz ml hr yr ms hz kw kb mb gb tb sq cu pt qt rs of an at on".split())
# Three-letter words read as a unit standing alone in parentheses ('60 (mph)', '359 (lbs)', ASDiv's '32 (CDs)'): a run of
# three letters is as likely a product of variables ('6(xyz)', '2(abc)'), so only these are units; any other is math,
# English count words included ('5 (men)' is read, '4 (box)' is math: no ASDiv gold is one). A phrase of several words
# needs one known unit among them ('3 (hot dogs)', '2 (pet fish)': 'dogs', 'fish'; see _UNIT_PAREN).
UNIT_ABBREVIATIONS = frozenset(
    "sec min hrs yrs day wks mos lbs kgs ozs gal qts pts cup tsp tbs yds mph kph kmh rpm fps cal deg amp mol pcs doz "
    "cts usd eur gbp inr cds men".split()
)
# A unit in parentheses after a number (ASDiv's '9 (apples)', '18 (cm)', '4 (m)', '3 (pieces of candy)', '2 (t-shirts)',
# and '20 (km/h)', '5 (cm^2)', '8 (cm3)', '3 (m²)'): unit words, with at most MAX_UNIT_PAREN_CHARS characters inside, as
# - one word: a known unit (of two letters in _SHORT_WORDS, of three in UNIT_ABBREVIATIONS, or of four or more letters:
#   '(apples)', '(t-shirts)', "(children's)"), or, after a space, a unit letter of UNIT_LETTERS ('4 (m)', '350 (g)');
# - a compound unit: such words (and unit letters, after a space or not) joined by '/' or 'per' ('(km/h)', '(m/s)',
#   '(kg/m)', '(km per hr)'; not '(km/x)');
# - a phrase: words joined by spaces, with one known unit among them ('(pieces of candy)', '(sq. ft.)'), or such phrases
#   joined by '/' or 'per' ('(sq. ft./min)');
# each word optionally with a full stop ('(in.)') and a square or cube ('^2', '^{3}', '2', ' 3', '²', '³': '(cm^2)',
# '(cm3)', '(cm 3)'), and no word LaTeX names as math, in any case ('2 (pi)', '2 (Pi)', '3 (sin x)'). Anything else is
# math: a digit other than a power ('3(5)', '8 (mod 5)'; '3 (1/2 cups)' is then no number and unread), an operator other
# than '/', a backslash or a brace ('2(x+1)', '4(1+\sqrt{3})'), a lone variable ('3 (x)', '4(s)') and a product of
# letters ('2(ab)', '6(xyz)', '5 (xy)', '12 (x y)'). Read as its bare number, '\boxed{2(x+1)}' was right against 2 and
# the gold '6(x+y+z)' was stored as 6.
UNIT_LETTERS = "mglsh"  # metre, gram, litre, second, hour: ASDiv writes '4 (m)', '350 (g)'; any other letter is a variable
MAX_UNIT_PAREN_CHARS = 60  # the longest unit in parentheses read ('3 (pieces of drawing paper)')
_NOT_MATH_NAME = rf"(?!(?i:{_trie_pattern(_MATH_NAMES)})(?![A-Za-z]))"
_UNIT_POWER = r"(?:\s?\^\s?(?:[23]|\{[23]\})|\s?[23]|[²³])(?![\d^])"  # a square or cube: '^2', '^{3}', '2', ' 3', '²'
# a unit word standing alone: two letters in _SHORT_WORDS, three in UNIT_ABBREVIATIONS, or four or more letters
# (with hyphens between parts of two or more letters and a possessive: 't-shirts', "children's", "boys'")
_LONG_WORD = r"[A-Za-z](?:-?[A-Za-z]){3,}(?:-[A-Za-z]{2,})*(?:'s?)?(?![A-Za-z'\-])"
_KNOWN_UNIT = (rf"{_NOT_MATH_NAME}(?:{_LONG_WORD}|(?i:{_trie_pattern(UNIT_ABBREVIATIONS)}|"
               rf"{_trie_pattern(_SHORT_WORDS)})(?![A-Za-z'\-]))\.?")
_UNIT_LETTER = rf"(?i:[{UNIT_LETTERS}])(?![A-Za-z'\-])\.?"
_ANY_WORD = rf"{_NOT_MATH_NAME}[A-Za-z]+(?:-[A-Za-z]{{2,}})*(?:'s?)?(?![A-Za-z'\-])\.?"
_UNIT_PER = r"\s*/\s*|\s+per\s+"
# a phrase: two or more words apart by spaces, one of them a known unit ('pieces of candy', 'sq. ft.', 'square feet')
_UNIT_PHRASE = (rf"(?=[^()/]*?(?<![A-Za-z]){_KNOWN_UNIT})"
                rf"{_ANY_WORD}(?:{_UNIT_POWER})?(?:\s+{_ANY_WORD}(?:{_UNIT_POWER})?)+")
_UNIT_PART = rf"{_UNIT_PHRASE}|(?:{_KNOWN_UNIT}|{_UNIT_LETTER})(?:{_UNIT_POWER})?"  # one side of a '/' or 'per'
_UNIT_PAREN = (
    rf"(?<=\s)\(\s*{_UNIT_LETTER}(?:{_UNIT_POWER})?\s*\)"  # a unit letter after a space: '4 (m)' ('4(s)' is a product)
    rf"|\((?=[^()]{{0,{MAX_UNIT_PAREN_CHARS}}}\))\s*"
    rf"(?:(?:{_UNIT_PHRASE}|{_KNOWN_UNIT}(?:{_UNIT_POWER})?)(?:(?:{_UNIT_PER})(?:{_UNIT_PART}))*"  # '(apples)', '(km/h)'
    rf"|{_UNIT_LETTER}(?:{_UNIT_POWER})?(?:(?:{_UNIT_PER})(?:{_UNIT_PART}))+)"  # '(m/s)'
    rf"\s*\)"
)
_UNIT_TAIL = rf"(?:\s*{_CURRENCY})?(?:\s*(?:{_UNIT_PAREN}|{_TAIL_WORD}(?: {_TAIL_WORD}){{0,3}}))?(?:\s*\.)?\s*"
# A scale or power word written as LaTeX text ('1.5 \text{ million}', '5\mathrm{~squared}'): read as the plain word.
_LATEX_NUMBER_WORD = re.compile(rf"\\(?:text|textrm|mathrm|mbox)\{{[\s~]*((?i:{_NUMBER_WORD_ALT}))\s*\}}")
# The scale or power word after a plain number ('1.5 million', '$1.5$ million', '5 squared'); an article stands for
# the number 1 before a scale word only ('a dozen', 'half a million'; 'a squared' is a variable).
_NUMBER_WORD_TAIL = rf"(?:(?:\s*\$)?\s+(?P<word>(?i:{_NUMBER_WORD_ALT}))(?![A-Za-z]))?"
_PLAIN_NUMBER = re.compile(
    rf"\s*(?:(?P<sign>{_SIGN})\s*{_CURRENCY}\s*|{_CURRENCY}\s*)?(?:(?P<num>{_NUM})|(?P<article>(?i:half\s+a|a))(?=\s))"
    rf"{_NUMBER_WORD_TAIL}{_UNIT_TAIL}"
)
# A chain of numbers and number words ('2 thousand 5 hundred', '1 million 200 thousand dollars', a sign before it all):
# read by _scale_chain only as whole numbers with descending decimal scale words, each term under the scale before it
# (2500, 1200000); any other chain ('2 thousand 15 hundred', '5 hundred 2 thousand', '2 thousand 5', '2 dozen 3 hundred')
# is not read (see _unread_number_words), never the bare number nor a product of letters.
_CHAIN_WORDS = frozenset(("hundred", "thousand", "million", "billion", "trillion"))  # decimal scales, singular
_CHAIN_MIN_TOKENS = 4  # the shortest chain read: 'N word N word'
_CHAIN_TERM = rf"\d+(?:\.\d+)?(?:\s+(?i:{_NUMBER_WORD_ALT})(?![A-Za-z]))?"
_NUMBER_CHAIN = re.compile(rf"\s*(?P<sign>{_SIGN})?(?P<chain>{_CHAIN_TERM}(?:\s+{_CHAIN_TERM})+){_UNIT_TAIL}")
_CHAIN_PART = re.compile(r"(?P<num>\d+(?:\.\d+)?)(?:\s+(?P<word>[A-Za-z]+))?")
# A whole number written in words at the start of an answer ('ten', 'Twenty-five', 'twenty five', 'one hundred and five',
# 'twelve hundred', 'two thousand five hundred', 'one million two hundred thousand'; any case; words apart by spaces or a
# hyphen) is read as its digits, by the one reader on both sides, with what follows it as after digits ('twelve apples'
# is 12, 'ten percent' 10%, 'two dozen' 24, 'five squared' 25): math-verify read 'ten' as the product t*e*n and 'seven'
# as no math. A fraction after it is read as after digits ('five and a half' as '5 and a half', 'two thirds', 'one half':
# see _word_fraction). Not read (a gold unparsed, a prediction wrong, as prose): other fractions and ordinals ('three
# quarters': coins or 3/4, 'one hundred and a half', 'two half'), decimals and operations ('three point five', 'three times four'), another
# number after it ('five or six', 'one to one'), a scale or power word after a number with a scale word ('two thousand
# squared', as '2 thousand squared'), a sign word ('minus five'), an article ('a hundred' is read as before: 'a dozen'),
# and words mixed with digits ('twenty 5').
_SPELLED_ONES = {w: i for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_FRACTION_NUMERATORS = {"a": 1, "an": 1, **{w: i for w, i in _SPELLED_ONES.items() if i}}  # 'and a half', 'and three quarters'
_SPELLED_TEENS = {w: i + 10 for i, w in enumerate(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_SPELLED_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_HUNDRED = "hundred"
_SPELLED_SCALES = {w: _SCALE_WORDS[w] for w in _CHAIN_WORDS if w != _HUNDRED}  # thousand .. trillion
_SPELLED_AND = "and"  # 'one hundred and five', 'one thousand and five'
_SPELLED_WORDS = frozenset(_SPELLED_ONES) | frozenset(_SPELLED_TEENS) | frozenset(_SPELLED_TENS) | _CHAIN_WORDS
# Words after a number in words that make it no whole number: fractions, ordinals, a decimal point, operations.
_NOT_WHOLE_WORDS = frozenset(["point", "times", "plus", "minus", "over", "divided"]) | _FRACTION_WORDS
_SPELLED_SEP = re.compile(r"\s*-\s*|\s+")  # 'twenty-five', 'twenty five'
_DIGIT = re.compile(r"\d")
# An answer that is one LaTeX text group of plain words ('\text{ten}', '$\textbf{Twenty-five}$'): its words are read.
_LATEX_TEXT_WORDS = re.compile(r"\s*(?:\$\s*)?\\(?:text|textrm|textbf|mathrm|mbox)\{\s*(?P<words>[A-Za-z][A-Za-z \-]*)\}(?:\s*\$)?\s*")
# A mixed number ("2 1/2", "2 and 1/2", "-3 1/4 cups"), dressed as a plain number may be: math-verify reads '2 1/2' as
# (2+1)/2 and '2 and 1/2' as a product of letters.
_MIXED_NUMBER = re.compile(
    rf"\s*(?:{_CURRENCY}\s*)?(?P<sign>{_SIGN}?)(?P<whole>\d+)(?:\s+and)?\s+(?P<num>\d+)\s*/\s*(?P<den>\d+){_UNIT_TAIL}"
)
_MINUS = ("-", "\u2212")
# A repeating decimal ('0.\overline{3}', '$1.2\overline{45}$'): math-verify reads '0.\overline{3}' as 0.
_REPEATING = re.compile(
    rf"\s*(?:\$\s*)?(?P<sign>{_SIGN}?)(?P<whole>\d*)\.(?P<fixed>\d*)\\(?:overline|bar)\{{(?P<rep>\d+)\}}(?:\s*\$)?\s*"
)
_BOXED = "\\boxed{"
# Other ways to write a box, read as \boxed{...} (as Qwen2.5-Math's grader and math-verify read them): \fbox{18}, a space
# before the brace (\boxed {18}), and a box without braces around one bare token (\boxed 18: LaTeX's one-argument form;
# the token ends at whitespace, '$', an unpaired brace or a backslash, less a trailing ',', ';', '.' or ':', and holds
# the closed brace groups written in it as Qwen2.5-Math's grader reads them: \boxed 3, \boxed 5 is {3, 5}, \boxed 1,000
# is 1000, \boxed 2^{10} is 2^{10}; \boxed \frac12 stays unread)
_BARE_GROUP = r"\{[^\s${}\\]*\}"  # a closed brace group inside a bare token (no space, '$', brace or backslash in it)
_BOX_SPELLINGS = re.compile(
    rf"\\(?:boxed|fbox)(?:\s*\{{|\s+(?P<bare>(?:[^\s${{}}\\]|{_BARE_GROUP})*(?:[^\s${{}}\\,;.:]|{_BARE_GROUP})))")
# Boxes written together are one answer ('\boxed{3}, \boxed{5}' is {3, 5}, '$\boxed{3}$ or $\boxed{5}$' a hedge), as
# math-verify joins them (math_verify.parser's boxed pattern: math environments holding a box, apart by whitespace and
# one ',', 'and' or 'or'): an earlier box joins the next when only these stand between them (see _BOX_GAP):
# - whitespace, math delimiters ('$', '\(', '\]') and LaTeX spaces ('\quad', '\,', '~'), with at most one separator
#   (',', ';', 'and', 'or', ', and', ', or', '\lor', '\vee', or one of these as LaTeX text: '\text{ or }');
# - or, math-verify's shape, the earlier box's math environment closing, one separator, the next one opening, each
#   environment holding other math around its box ('$x = \boxed{3}$ or $x = \boxed{5}$').
# Prose between them is no joining ('\boxed{3}. Wait, let me recheck: 2+3=5, so the answer is \boxed{5}' answers 5:
# a self-correction; a comma anywhere in 70 characters between them used to join it into the set {3, 5}, wrong).
_BOX_FILL = r"(?:\s|\$|\\[()\[\]]|\\[,;:! ]|\\q?quad(?![A-Za-z])|~)"
_BOX_SEP = r"(?:,\s*)?(?i:and|or)(?![A-Za-z])|[,;]|\\(?:lor|vee)(?![A-Za-z])"
_BOX_SEPARATOR = rf"(?:{_BOX_SEP}|\\(?:text|textrm|mathrm|mbox)\{{\s*(?:{_BOX_SEP})\s*\}})"
_MATH_INSIDE = r"(?:[^$\n\\]|\\(?![()\[\]]))"  # a character inside one math environment
_BOX_GAP = re.compile(
    rf"{_BOX_FILL}*+(?:{_BOX_SEPARATOR}{_BOX_FILL}*+)?"
    rf"|{_MATH_INSIDE}*+(?:\$\$?|\\[)\]])\s*{_BOX_SEPARATOR}\s*(?:\$\$?|\\[(\[]){_MATH_INSIDE}*+"
)
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
# Plain words ('Ted', 'Rug B', 'Mrs. Hilt', 'Yes.', 'They are equal', 'No solution'): ASCII letters, spaces and a
# sentence's punctuation only (no digit, no $, no LaTeX command, no operator), with a word of two or more letters and no
# word LaTeX names as math ('sin x', 'pi' stay math; see _MATH_NAMES). Such an answer is prose, whatever its word length:
# a gold is unparsed, a prediction wrong (see _prose). math-verify read a word of 1-3 letters as a product of symbols
# ('Ted' was T*e*d, which 'Det' equals). A lone letter ('A', '(B)', 'x': a choice letter or a variable) stays math.
_NOT_PROSE_CHAR = re.compile(r"[^A-Za-z\s.,;:!?'\"()&\-\u2010-\u2015\u2018\u2019\u201c\u201d]")
_LETTER_RUN = re.compile(r"[A-Za-z]+")
_PROSE = "prose: plain words are no math answer (a lone letter and a number in words are read)"
# A gold read as free text whose one math is a bare symbol in a sentence ('$C$ is not invertible', 'Any $h$ will work.'):
# math-verify picks the symbol out of the sentence, so '\boxed{C}' was right. Such a gold is unparsed (see _lone_symbol).
_LONE_SYMBOL = "prose: math-verify read only the symbol {} out of a sentence"
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
# A bare clock time ('5:45', '12:50', '17:03', '9:03:36'; ASDiv's "It is 2:00. What time will it be in three hours and
# forty-five minutes?"): an hour of one or two digits (0-23), minutes (and seconds) of two (00-59). math-verify read it
# as a ratio, 5:45 as 1/9, so '\boxed{3:27}' and '\boxed{\frac{1}{9}}' were right, '\boxed{5:45 PM}' wrong, and the
# gold was stored as '\frac{1}{9}'. Such a gold is read as its time (canonical text '5:45', detail _CLOCK), and a
# prediction written with a colon matches it only as the same time ('5:45', '05:45', '5{:}45'; with a.m./p.m., which
# the gold leaves open, its hour on either clock: '5:45 p.m.' matches 5:45 and 17:45); times are never converted
# ('17:45' is not 5:45) and an equal ratio is no match ('3:27'). The text alone cannot tell a ratio from a time (ASDiv's
# ratio golds '9:10', '7:50', '22:15' look like times, its times '8:15', '14:55' like ratios), but a ratio answer is
# written in lowest terms (every ASDiv ratio gold is): a gold whose hour and minutes are coprime, with no leading zero
# and no seconds, may be a ratio, and a prediction written without a colon ('\frac{9}{10}', '0.9') is compared with
# that ratio by math-verify; against any other ('5:45', '17:03': a time) it is wrong. A ratio whose second term is no
# two digits ('5:6', '13:1', '11:9') cannot be a time and stays math-verify's ratio (a prediction '15:18' is right
# against it; a gold written '15:18' is a clock time, so '5:6' is wrong against that gold).
_CLOCK = "clock time"  # the detail of a gold normalised as one
_CLOCK_UNITS = ("h", "min", "s")  # the parts of a clock time, as a _Reading's quantities
_HOURS_PER_DAY, _MINUTES_PER_HOUR, _HOURS_PER_HALF_DAY = 24, 60, 12
_NO_LEADING_ZERO = 10  # the least two-digit minutes written without a leading zero ('9:10'; '17:03' is a time)
_CLOCK_COLON = re.compile(r"\{:\}|\\colon(?![A-Za-z])")  # LaTeX colons: '5{:}45', '5 \colon 45'
_PAIR_WRITTEN = re.compile(r":|\\colon(?![A-Za-z])")  # a prediction written as a pair or a time: with a colon
_CLOCK_READ = re.compile(
    r"\s*(?P<h>\d{1,2})\s*:\s*(?P<m>\d{2})(?:\s*:\s*(?P<s>\d{2}))?(?:\s*(?P<half>[ap])\.?\s?m(?![A-Za-z])\.?)?\s*", re.I
)
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
# _SHORT_WORDS: the two-letter words that are units or prose (see above, before _UNIT_PAREN).
# Math names that are also units ('30 sec', '5 min'): math when an argument word follows ('2 sec x', '3 mod n').
_UNIT_OR_FUNCTION = frozenset("sec min max mod".split())
_ARTICLE = "a"  # the one single-letter word that is prose ('3/4 of a cup'); any other is a variable ('3/4 of x')
_WORD_AFTER = re.compile(r"(/)?\s*([A-Za-z]+)")  # each word after a number, and whether a '/' is before it ('km/h')
# A whole number (digits) and a fraction in words (see _word_fraction): '2 thirds', '1 half', '3 quarters of a cup',
# '2 and a half', '-3 and three quarters hours'. The numerator of a mixed one: 'a', 'an', a ones word or digits.
_WORD_FRACTION = re.compile(
    rf"\s*(?:{_CURRENCY}\s*)?(?P<sign>{_SIGN}?)(?P<whole>\d+)\s+(?:(?i:and)\s+(?P<num>\d+|[A-Za-z]+)\s+)?(?P<den>[A-Za-z]+)"
    rf"(?P<rest>(?:\s+{_UNIT_WORD}){{0,{MAX_UNIT_WORDS}}})\s*"
)
_OF = "of"  # '3 quarters of the pie': a fraction of something, not coins
_FRACTION_WORD = re.compile(rf"(?<![A-Za-z])(?i:{_trie_pattern(_FRACTION_WORDS)})(?![A-Za-z])")  # anywhere in an answer
_FRACTION_WORD_PART = re.compile(r"(?i:th|hal|quarter)")  # every fraction word holds one (see _may_hold_fraction_word)
# Where a fraction word is no fraction (see _holds_fraction_word): 'quarter(s)' right after a whole number is coins ('3
# quarters', '9 (quarters)'), and a singular one before another word is an ordinal or a unit's first word ('123 third
# graders', '1 half hour'); either with 'of' after it is a fraction ('3 quarters of the pie', '1 third of them'), and so
# is one after 'and' and its numerator ('2 and a half', '2 cups and a half').
FRACTION_CONTEXT_CHARS = 40  # how far before a fraction word these look (a number and 'and a': '12 and a half')
_COIN_AFTER_NUMBER = re.compile(r"(?<![.\d/])\d+\s*\(?\s*\Z")
_WORD_AFTER_FRACTION = re.compile(r"[\s\-]+[A-Za-z]")
_OF_AFTER = re.compile(rf"\s+(?i:{_OF})(?![A-Za-z])")
_AND_NUMERATOR_BEFORE = re.compile(r"(?<![A-Za-z])(?i:and)[\s\-]+\w+[\s\-]+\Z")
_UNREAD_FRACTION_WORDS = ("a fraction word after a number is read only as 'N <fraction>' (a plural after any number but 1: "
                          "'2 thirds', '1 half'; 'N quarters' is coins, 'N quarters of ...' a fraction) or 'N and <fraction>' "
                          "(a proper fraction: '2 and a half'), with unit words after it; not '2 half', '2 and 3 halves', "
                          "'2 cups and a half', '2 and a half!', '$2$ thirds'")


# ------------------------------------------------------------------------------------------------ Unicode fold
# One fold (see fold_unicode) rewrites Unicode math into what the readers below read, on a gold (at normalisation and
# again, idempotently, when it is judged against) and on each extracted final answer, before anything reads them.
# math-verify dropped what it did not know: '3²' was 3, '50％' 50, '50‰' 50, and '√2', '∞', '½', '－5', '0．5',
# '(1，2)', 'Ａ' or a bidi mark were no math (a gold unparsed, a right prediction wrong).
# Superscript and subscript runs after a number, a letter or a closing bracket, as LaTeX powers and indices ('3²' ->
# '3^{2}', 'x⁻¹' -> 'x^{-1}', 'x₁' -> 'x_{1}'): NFKC would make '3²' the number 32 and 'x₁' the product x1.
_SUPERSCRIPTS, _SUBSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻ⁿ", "₀₁₂₃₄₅₆₇₈₉₊₋"
_SCRIPT_PLAIN = str.maketrans(_SUPERSCRIPTS + _SUBSCRIPTS, "0123456789+-n" + "0123456789+-")
_SCRIPT_BASE = rf"(?<=[^\W{_SUPERSCRIPTS}{_SUBSCRIPTS}]|[)\]}}）］｝])"  # a letter or digit (not a script), or a closer
_SCRIPT_RUN = re.compile(rf"{_SCRIPT_BASE}(?:(?P<sup>[{_SUPERSCRIPTS}]+)|(?P<sub>[{_SUBSCRIPTS}]+))")
# A unit's square or cube stays as written ('12 m²', '5 cm³', '9.8 m/s²': the unit after a number; as '12 m^{2}' it would
# be the product 12*m^2, and math-verify reads '12 m²' as 12): a known unit word, or a unit letter after a space or '/'.
_UNIT_SQUARES = "²³"
UNIT_CONTEXT_CHARS = 40  # how far before a '²' or '³' its number and unit are looked for
_UNIT_BEFORE_SQUARE = re.compile(
    rf"\d\s*(?:(?:{_KNOWN_UNIT}|{_UNIT_LETTER})\s*/\s*)*(?:{_KNOWN_UNIT}|(?<=[\s/]){_UNIT_LETTER})\Z")
# A vulgar fraction ('½', '⅓', '¾'), after a whole number or not ('2½', '2 ½'): its LaTeX fraction ('\frac{1}{2}',
# '\frac{5}{2}'). NFKC would write '1⁄2' with the fraction slash, and '2½' would be the digits 21/2.
_VULGAR = re.compile(r"(?:(?<![\d.,])(?P<whole>\d+)[ \u00a0\u2009\u202f]?)?(?P<frac>[\u00bc-\u00be\u2150-\u215e\u2189])")
_FRACTION_SLASH = "\u2044"  # how NFKC writes a vulgar fraction ('½' is '1⁄2'), and a fraction written with it
# Characters NFKC would change into something read differently, kept as written: math-verify reads 'ℝ' as the reals
# ('R' is a variable), 'ϖ' is a variable ('π' a number), '″' is the inch mark of 5′6″ (see _FEET_INCHES), 'º' and 'ª'
# after a number are dropped by math-verify ('45º' is 45; 'o' would be a factor), 'µ' ('μ' is the variable mu).
# A unit's '²' and '³' (see _UNIT_BEFORE_SQUARE), and the CJK unit squares NFKC writes with a digit ('㎡' as 'm2', a
# product with 2): math-verify drops them ('12㎡' is 12).
_CJK_UNIT_SQUARES = "".join(c for c in map(chr, range(0x3380, 0x3400))
                            if any(d.isdigit() for d in unicodedata.normalize("NFKC", c)))
_NFKC_KEPT = re.compile(f"([ℝℕℤℚℂϖ″‴ºªµ{_UNIT_SQUARES}{_CJK_UNIT_SQUARES}])")
# Symbols math-verify does not read, as the LaTeX it reads; '、' (the CJK enumeration comma), '。' (the CJK full stop)
# and the CJK answer brackets ('【A】': a choice letter, as '(A)')
_SYMBOLS = {"∞": "\\infty", "·": "\\cdot", "∙": "\\cdot", "∈": "\\in", "∉": "\\notin", "、": ",", "。": ".",
            _FRACTION_SLASH: "/", "【": "(", "】": ")"}
_SYMBOL = re.compile("[" + "".join(_SYMBOLS) + "]")
# A root sign and its operand ('√2' -> '\sqrt{2}', '2√3', '√(x+1)' -> '\sqrt{x+1}', '√{2}', '√x', '∛8' ->
# '\sqrt[3]{8}'): the number, the letter or the bracketed group right after it, another root with its own operand
# ('√√16' -> '\sqrt{\sqrt{16}}'), or a LaTeX command with the closed brace groups after it ('√½', folded to
# '√\frac{1}{2}' before, -> '\sqrt{\frac{1}{2}}'; a command without a group only when it is a symbol: _ROOT_SYMBOL,
# '√∞' -> '\sqrt{\infty}'); anything else stays after '\sqrt '.
_ROOTS = {"√": "\\sqrt", "∛": "\\sqrt[3]", "∜": "\\sqrt[4]"}
_ROOT_OPERAND = re.compile(
    r"[ \t]*(?:(?P<group>[({])|(?P<root>[√∛∜])|(?P<command>\\[A-Za-z]+)|(?P<atom>-?\d+(?:\.\d+)?|[^\W\d_]))")
_ROOT_SYMBOL = re.compile(r"\\(?:infty|pi)")  # a command that is a root's whole operand without a brace group
_CLOSER = {"(": ")", "{": "}"}
# Per mille and per ten thousand after a plain number, as that number's thousandth ('50‰' -> '0.05'); math-verify read
# '50‰' as 50. Such a sign anywhere else is not read (see _unread_reason): a gold unparsed, a prediction wrong.
_PER_MILLE = {"‰": 3, "‱": 4}  # the sign, and the power of ten it divides by
# not '1,5‰', '5‰‰', nor '1‰ ‱' (folded as '0.001 ‱', a second fold would read '0.0000001': not idempotent)
_PER_MILLE_NUMBER = re.compile(rf"(?<![\d.,])(?P<num>{_NUM})[ \u00a0]?(?P<sign>[‰‱])(?![\d‰‱]|[ \u00a0][‰‱])")
_UNREAD_PER_MILLE = "a per mille sign is read only right after a plain number ('50‰' is 0.05)"


def _drop_format_characters(text: str) -> str:
    """`text` without format characters (Unicode category Cf: zero-width spaces and joiners, bidi marks such as U+200F
    and U+202E, soft hyphens, a byte-order mark inside), which no reader reads."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def _scripts_as_latex(text: str) -> str:
    """Superscript and subscript runs after a number, a letter or a closing bracket as LaTeX ('3²' -> '3^{2}', '(−2)²'
    -> '(−2)^{2}', '1.5×10⁶' -> '1.5×10^{6}', 'x₁' -> 'x_{1}'), but a unit's square or cube ('12 m²', see
    _UNIT_BEFORE_SQUARE); a run elsewhere ('⁷' alone) is left to NFKC (a digit; '²' and '³' stay as written)."""
    def latex(m: re.Match) -> str:
        mark, run = ("^", m.group("sup")) if m.group("sup") else ("_", m.group("sub"))
        if run in _UNIT_SQUARES and _UNIT_BEFORE_SQUARE.search(text, max(0, m.start() - UNIT_CONTEXT_CHARS), m.start()):
            return run  # '12 m²': a unit's square (see _UNIT_BEFORE_SQUARE)
        return f"{mark}{{{run.translate(_SCRIPT_PLAIN)}}}"

    return _SCRIPT_RUN.sub(latex, text)


def _vulgar_fractions(text: str) -> str:
    """Vulgar fractions as LaTeX fractions, a whole number before one as a mixed number ('½' -> '\\frac{1}{2}', '2½' ->
    '\\frac{5}{2}', '−¾' -> '−\\frac{3}{4}')."""
    def latex(m: re.Match) -> str:
        num, den = (int(part) for part in unicodedata.normalize("NFKC", m.group("frac")).split(_FRACTION_SLASH))
        whole = int(m.group("whole")) if m.group("whole") else 0
        return f"\\frac{{{whole * den + num}}}{{{den}}}"

    return _VULGAR.sub(latex, text)


def _nfkc(text: str) -> str:
    """NFKC of `text` (full-width forms '－５' -> '-5', '％' -> '%', '（１，２）' -> '(1,2)', circled numbers '①' -> '1',
    ideographic and no-break spaces -> ' ', ligatures, '㎡' -> 'm2'), except the characters of _NFKC_KEPT."""
    return "".join(part if i % 2 else unicodedata.normalize("NFKC", part)
                   for i, part in enumerate(_NFKC_KEPT.split(text)))


def _before_letter(text: str, end: int, command: str) -> str:
    """`command`, with a space after it when it is a LaTeX command and a letter follows at `end` ('\\infty' before 'x':
    '\\infty x')."""
    return f"{command} " if command.startswith("\\") and end < len(text) and text[end].isalpha() else command


def _latex_symbols(text: str) -> str:
    """The symbols of _SYMBOLS as the LaTeX math-verify reads ('∞' -> '\\infty', '2·3' -> '2\\cdot3', 'x∈[0,1]' ->
    'x\\in[0,1]', '1、2' -> '1,2', '1⁄2' -> '1/2')."""
    return _SYMBOL.sub(lambda m: _before_letter(text, m.end(), _SYMBOLS[m.group()]), text)


def _closers(text: str) -> dict[int, int]:
    """The position of each '(' and '{' in `text` that is closed, mapped to the position of its closer (one pass)."""
    opened: list[tuple[str, int]] = []
    closes: dict[int, int] = {}
    for i, c in enumerate(text):
        if c in _CLOSER:
            opened.append((_CLOSER[c], i))
        elif opened and c == opened[-1][0]:
            closes[opened.pop()[1]] = i
    return closes


def _command_end(text: str, m: re.Match, closes: dict[int, int]) -> int | None:
    """Where the LaTeX command `m` ("command" group of _ROOT_OPERAND) as a root's operand ends: the position of the
    closer of the last closed brace group right after it ('\\frac{1}{2}'), else of its name's last letter when it is
    a symbol (_ROOT_SYMBOL: '\\infty'); None when it is no operand ('\\left(' or '\\frac12' stay after the root)."""
    end, at = None, m.end("command")
    while at < len(text) and text[at] == "{" and at in closes:
        end = closes[at]
        at = end + 1
    if end is None and _ROOT_SYMBOL.fullmatch(m.group("command")):
        end = m.end("command") - 1
    return end


def _latex_roots(text: str) -> str:
    """Root signs as LaTeX roots of their operand (see _ROOT_OPERAND): '√2' -> '\\sqrt{2}', '2√3' -> '2\\sqrt{3}',
    '√(x+1)' -> '\\sqrt{x+1}', '√{2}' -> '\\sqrt{2}', '√x' -> '\\sqrt{x}', '∛8' -> '\\sqrt[3]{8}', '√ab' -> '\\sqrt{a}b',
    '√√16' -> '\\sqrt{\\sqrt{16}}', '√\\frac{1}{2}' -> '\\sqrt{\\frac{1}{2}}'. Linear in the text (nested roots
    included): a root whose operand is another root or a command opens its brace and leaves its closing to the position
    where that operand ends (`after`: the braces to close after each position; `pending`: those of roots waiting for
    the next operand)."""
    if not any(root in text for root in _ROOTS):
        return text
    closes, out, braces, i = _closers(text), [], set(), 0
    after: dict[int, int] = {}
    pending = 0
    while i < len(text):
        c = text[i]
        if c not in _ROOTS:
            out.append(("}" if i in braces else c) + "}" * after.pop(i, 0))
            i += 1
            continue
        m = _ROOT_OPERAND.match(text, i + 1)
        end = _command_end(text, m, closes) if m is not None and m.group("command") else None
        if m is None or (m.group("group") and m.start("group") not in closes) or (m.group("command") and end is None):
            out.append(_before_letter(text, i + 1, _ROOTS[c]) + "}" * pending)
            pending, i = 0, i + 1
        elif m.group("root"):  # the inner root's operand closes this one's brace too
            out.append(_ROOTS[c] + "{")
            pending, i = pending + 1, m.start("root")
        elif m.group("command"):  # the command and its groups, their own roots folded as the loop goes on
            out.append(_ROOTS[c] + "{")
            after[end] = after.get(end, 0) + 1 + pending
            pending, i = 0, m.start("command")
        elif m.group("group"):  # the group's inside, its own roots folded as the loop goes on
            out.append(_ROOTS[c] + "{")
            braces.add(closes[m.start("group")])
            after[closes[m.start("group")]] = after.get(closes[m.start("group")], 0) + pending
            pending, i = 0, m.end()
        else:
            out.append(f"{_ROOTS[c]}{{{m.group('atom')}}}" + "}" * pending)
            pending, i = 0, m.end()
    return "".join(out) + "}" * pending


def _per_mille_numbers(text: str) -> str:
    """A plain number with a per mille (or per ten thousand) sign as its thousandth ('50‰' -> '0.05', '−2.5‰' ->
    '-0.0025', '1,000‱' -> '0.1'); a sign after anything else stays (and is not read: see _UNREAD_PER_MILLE)."""
    def value(m: re.Match) -> str:
        number = _num_value(m.group("num"))
        return m.group() if number is None else _number_text(number.scaleb(-_PER_MILLE[m.group("sign")]))

    return _PER_MILLE_NUMBER.sub(value, text) if any(sign in text for sign in _PER_MILLE) else text


def fold_unicode(text: str) -> str:
    """Unicode math as the text the verifier reads, applied to a gold and to an extracted final answer before any
    reading (ASCII text is returned as it is). In order: format characters are dropped (see _drop_format_characters);
    superscript and subscript runs after a number, letter or closing bracket become LaTeX powers and indices ('3²' ->
    '3^{2}': before NFKC, which would make it 32); vulgar fractions become LaTeX fractions ('½', '2½'); NFKC, but for
    _NFKC_KEPT (full-width forms, '％', '①', spaces); the symbols math-verify does not read as LaTeX ('∞', '·', '∈',
    '、', '⁄') and root signs as '\\sqrt{...}'; a number with a per mille sign as its thousandth ('50‰' -> '0.05');
    last, a '²' or '³' NFKC kept is read again after what the steps made of the text before it ('™²' is 'TM^{2}'), and
    NFKC is applied once more where a LaTeX command now stands before a combining mark. Idempotent: a folded text folds
    to itself. in: the text; out: the folded text."""
    if text.isascii():
        return text
    text = _vulgar_fractions(_scripts_as_latex(_drop_format_characters(text)))
    text = _nfkc(_latex_roots(_latex_symbols(_nfkc(text))))
    return _scripts_as_latex(_per_mille_numbers(text))


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
    as math-verify joins them: an earlier box joins the next one when only whitespace, math delimiters and at most one
    separator stand between them (see _BOX_GAP: '\\boxed{3}, \\boxed{5}', '$\\boxed{3}$ or $\\boxed{5}$',
    '\\boxed{3}\\boxed{5}'; not '\\boxed{3}. Wait, so it is \\boxed{5}'); a repeat of the next box's answer right
    before it is dropped. None when the last box is unclosed or empty. Linear in the text."""
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
        if _BOX_GAP.fullmatch(between) is None:
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
    tail = _BOX_SPELLINGS.sub(lambda m: _BOXED + (m["bare"] + "}" if m["bare"] else ""), text[-MAX_SCAN_CHARS:])
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
    an empty ``####`` does not count (an earlier non-empty one still does). ``\\fbox{...}``, ``\\boxed {...}`` and a
    brace-less ``\\boxed 18`` are boxes too (_BOX_SPELLINGS). None when there is no marker.
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
    """The Decimal value if `text` is a plain number (see _plain_value) whose canonical text is at most MAX_ANSWER_CHARS
    long (it must read back: '1' * 1990 + 'e999' would be 2,989 characters written out, see _overlong_reading), else None."""
    value = _plain_value(text)
    return value if value is None or len(_number_text(value)) <= MAX_ANSWER_CHARS else None


def _plain_value(text: str) -> Decimal | None:
    """The Decimal value if `text` is a plain number (commas, a unit, $ signs allowed; a scale or power word after it
    counts: '1.5 million' -> 1500000, '2 dozen eggs' -> 24, 'half a dozen' -> 6, '5 squared' -> 25; so does a chain of
    descending scales, '2 thousand 5 hundred' -> 2500, see _scale_chain), else None. An exponent is not bounded here
    ('1' * 1990 + 'e999' is read): _plain_number is the bounded reading."""
    if len(text) > MAX_ANSWER_CHARS:
        return None
    spelled = _spelled_number_words(text)
    m = _PLAIN_NUMBER.fullmatch(spelled)
    if m is None:
        return _scale_chain(spelled)
    num = m.group("num")
    if m.group("sign") and num and num[0] in "+-\u2212":  # '-$-5': two signs
        return None
    if num is None:  # an article: 'a dozen', 'half a dozen'
        value: Decimal | None = _HALF if m.group("article").lower().startswith("half") else Decimal(1)
    else:
        value = _num_value(num)
    if value is None:
        return None
    value = -value if m.group("sign") in _MINUS else value
    return _scaled(value, m.group("word"), article=num is None)


def _scale_chain(text: str) -> Decimal | None:
    """The value of a chain of whole numbers with descending decimal scale words, each term under the scale before it
    ('2 thousand 5 hundred' -> 2500, '-1 million 200 thousand dollars' -> -1200000; a sign only before it all), else None
    (also for '2 thousand 15 hundred', '5 hundred 2 thousand', '2 thousand 5', '1.5 thousand 2 hundred', '2 dozen 3 hundred':
    see _unread_number_words, and for a value whose canonical text is over MAX_ANSWER_CHARS)."""
    if len(text) > MAX_ANSWER_CHARS or len(text.split(None, _CHAIN_MIN_TOKENS - 1)) < _CHAIN_MIN_TOKENS:
        return None  # cheap: most texts are no chain, and this runs after every plain number that failed
    m = _NUMBER_CHAIN.fullmatch(text)
    if m is None:
        return None
    total, previous = 0, None
    for part in _CHAIN_PART.finditer(m.group("chain")):
        num, word = part.group("num"), (part.group("word") or "").lower()
        if word not in _CHAIN_WORDS or not num.isdigit():
            return None
        term, scale = int(num) * _SCALE_WORDS[word], _SCALE_WORDS[word]
        if term == 0 or (previous is not None and term >= previous):
            return None
        total, previous = total + term, scale
    value = Decimal(-total if m.group("sign") in _MINUS else total)
    return value if len(_number_text(value)) <= MAX_ANSWER_CHARS else None


def _spelled_prefix(text: str) -> tuple[int, int, bool] | None:
    """(value, end, scaled) of the whole number written in words at the start of `text` ('twenty-five apples' -> (25,
    11, False), 'two thousand five hundred' -> (2500, 25, True): `end` is where its last number word ends, `scaled` whether
    it holds a scale word), else None. English order only: tens before ones ('twenty five', not 'five twenty'), one
    'hundred' per group ('twelve hundred' is 1200), scale words descending ('one million two hundred thousand'; 'five
    thousand million' stops before 'million'), 'and' after 'hundred' or a scale word only; 'zero' alone. It stops before
    the first word that does not continue the number (the caller decides what may follow). Linear in the text."""
    total = group = small = 0
    state, prev_scale, scaled, hundreds = "start", 0, False, False
    best: tuple[int, int, bool] | None = None
    pos = len(text) - len(text.lstrip())
    while (m := _LETTER_RUN.match(text, pos)) is not None:
        word = m.group().lower()
        if word in _SPELLED_ONES and (word != "zero" or state == "start") \
                and state in ("start", "hundred", "scale", "and", "tens"):
            small, state = small + _SPELLED_ONES[word] if state == "tens" else _SPELLED_ONES[word], "ones"
            state = "zero" if word == "zero" else state
        elif (word in _SPELLED_TEENS or word in _SPELLED_TENS) and state in ("start", "hundred", "scale", "and"):
            small, state = _SPELLED_TEENS.get(word) or _SPELLED_TENS[word], "tens" if word in _SPELLED_TENS else "teen"
        elif word == _HUNDRED and state in ("ones", "teen", "tens") and not hundreds:
            group, small, state, hundreds, scaled = small * 100, 0, "hundred", True, True
        elif word in _SPELLED_SCALES and state in ("ones", "teen", "tens", "hundred") and group + small > 0 \
                and (not prev_scale or _SPELLED_SCALES[word] < prev_scale):
            prev_scale = _SPELLED_SCALES[word]
            total, group, small, state, hundreds, scaled = total + (group + small) * prev_scale, 0, 0, "scale", False, True
        elif word == _SPELLED_AND and state in ("hundred", "scale"):
            state = "and"
        else:
            break
        if state != "and":
            best = (total + group + small, m.end(), scaled)
        sep = _SPELLED_SEP.match(text, m.end())
        if sep is None:
            break
        pos = sep.end()
    return best


def _digits_for_words(text: str) -> str | None:
    """`text` with the whole number written in words at its start in digits ('ten' -> '10', 'twelve apples' -> '12
    apples', 'Twenty-five percent' -> '25 percent', 'one hundred and five' -> '105'; see _spelled_prefix), for the reader
    to read as it reads digits; None when `text` holds a digit or does not start with a number in words, and when what
    follows the number holds another number word, a fraction, an ordinal or an operation ('three quarters', 'three point
    five', 'three times four', 'five or six') or, after a number with a scale word, a scale or power word ('two thousand
    squared', 'two hundred dozen': not read with digits either); a fraction the fraction reader reads is kept, after a
    number without a scale word ('one half' -> '1 half', 'five and a half' -> '5 and a half', 'two thirds' -> '2 thirds':
    see _word_fraction; not 'one hundred and a half'). One LaTeX text group of words is read as its words ('\\text{ten}'
    -> '10', see _latex_words)."""
    if len(text) > MAX_ANSWER_CHARS or _DIGIT.search(text) is not None:
        return None
    text = _latex_words(text)
    head = _spelled_prefix(text)
    if head is None:
        return None
    value, end, scaled = head
    digits = f"{value}{text[end:]}"
    words = {w.lower() for w in _LETTER_RUN.findall(text[end:])}
    if words & _SPELLED_WORDS or words & _NOT_WHOLE_WORDS or (scaled and words & _NUMBER_WORDS):
        return digits if not scaled and _word_fraction(digits) is not None else None
    return digits


def _latex_words(text: str) -> str:
    """The words of an answer that is one LaTeX text group of plain words ('\\text{ten}', '$\\textbf{Twenty-five}$',
    '\\text{ten apples}' -> 'ten apples'), else `text` unchanged. math-verify read '\\boxed{\\text{ten}}' as no number."""
    m = _LATEX_TEXT_WORDS.fullmatch(text) if "\\" in text else None
    return text if m is None else m.group("words").rstrip()


def _plain_words(text: str) -> bool:
    """True if `text` is plain words: ASCII letters, spaces and a sentence's punctuation only, with a word of two or more
    letters and no word LaTeX names as math ('Ted', 'Rug B', 'Mrs. Hilt', 'They are equal.'; not 'A', '(B)', 'x', 'sin x',
    'pi', '$C$ is not invertible', '3 apples'). See _NOT_PROSE_CHAR."""
    if len(text) > MAX_ANSWER_CHARS or _NOT_PROSE_CHAR.search(text) is not None:
        return False
    words = _LETTER_RUN.findall(text)
    return any(len(w) > 1 for w in words) and not any(w in _MATH_NAMES for w in words)


def _prose(text: str) -> bool:
    """True if `text` is prose: plain words (see _plain_words) that are no number in words the reader reads ('Ted',
    'Yes', 'No solution', 'three quarters', 'five or six'; not 'ten', 'twelve apples', 'one half', 'A'). A prose gold is unparsed, a prose
    prediction wrong."""
    return _plain_words(text) and _digits_for_words(text) is None


def _percent_fraction(value: Fraction) -> tuple[Decimal, str] | None:
    """The number of a fraction percent as (Decimal, canonical text): exact when it ends in decimals (1/8 -> 0.125,
    '0.125'), else to 2 * MAX_ANSWER_CHARS digits, written as its LaTeX fraction (1/3 -> '\\frac{1}{3}'); None when the
    text with its percent sign would be over MAX_ANSWER_CHARS (it must read back)."""
    number = _terminating_decimal(value)
    if number is not None:
        text = _number_text(number)
    else:
        with localcontext() as ctx:
            ctx.prec = 2 * MAX_ANSWER_CHARS
            number = Decimal(value.numerator) / Decimal(value.denominator)
        text = _frac_text(value)
    return (number, text) if len(text) < MAX_ANSWER_CHARS else None


def _percent_number(text: str) -> tuple[Decimal, str] | None:
    """(N, N's canonical text) if `text` is a plain number or a fraction N with a percent sign or word ('10%',
    '$12.5\\%$', '10 percent' -> 10, '10'; '1/2%', '1/2 percent' -> 0.5, '0.5'; '12 1/2%' -> 12.5; '1/3%' -> 0.333...,
    '\\frac{1}{3}'), else None (also for a mixed number whose fraction is not proper, '2 3/2%', and a zero denominator)."""
    m = _PERCENT_NUMBER.fullmatch(text) if len(text) <= MAX_ANSWER_CHARS else None
    if m is None:
        return None
    if m.group("num") is not None:
        value = _num_value(m.group("num"))
        return None if value is None else (value, _number_text(value))
    num, den = next((m.group(a), m.group(b)) for a, b in (("fnum", "fden"), ("lnum", "lden"), ("snum", "sden"))
                    if m.group(a) is not None)
    whole, num, den = m.group("whole"), int(num), int(den)
    if den == 0 or (whole is not None and not 0 < num < den):
        return None
    fraction = Fraction(num, den) + int(whole or 0)
    return _percent_fraction(-fraction if m.group("fsign") in _MINUS else fraction)


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
    """A mixed number ('2 1/2', '2 and 1/2': a whole number, spaces or 'and', a proper fraction; $ signs and a unit
    allowed as for a plain number) as LaTeX ('\\frac{5}{2}'), else None. math-verify would read '2 1/2' as (2+1)/2."""
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


def _word_fraction(text: str) -> Fraction | None:
    """The value of a whole number in digits followed by a fraction in words: 'N <fraction>' is N/d, with a plural
    fraction word after any number but 1 and a singular one after 1 ('2 thirds' -> 2/3, '1 half' -> 1/2, '4 halves' -> 2,
    '3 quarters of a cup' -> 3/4); 'N and <fraction>' is N plus a proper fraction whose numerator is 'a', 'an', a ones
    word or digits ('2 and a half' -> 5/2, '3 and three quarters' -> 15/4, '-2 and a half hours' -> -5/2). Unit words or
    short prose may follow, as after a number (see _words_are_math). None for anything else, also for 'N quarters' not
    followed by 'of' ('3 quarters', '16 quarters left': coins), a singular fraction word before another word ('1 third
    grader', '1 half hour': see _holds_fraction_word) and for a fraction word that does not agree with its number ('2 third', '2 and 3 halves'), or with math, a scale or power word, another fraction word or a
    percent word after it ('2 thirds of x', '2 and a half dozen', '2 and a half percent': see _unread_fraction_words)."""
    m = _WORD_FRACTION.fullmatch(text) if len(text) <= MAX_ANSWER_CHARS else None
    if m is None:
        return None
    rest = [(w.lower(), bool(slash)) for slash, w in _WORD_AFTER.findall(m.group("rest"))]
    if rest and (_words_are_math(rest) or any(w in _FRACTION_WORDS for w, _ in rest) or _PERCENT.search(m.group("rest"))):
        return None  # '2 thirds of x', '2 and a half dozen', '2 and a half percent' (not read as a percent): not read
    den_word, whole, num_word = m.group("den").lower(), int(m.group("whole")), m.group("num")
    if num_word is None:  # 'N thirds'; not '3 quarters' (coins), '1 third grader' (see _holds_fraction_word)
        if not _holds_fraction_word(text):
            return None
        whole, num = 0, whole
    else:  # 'N and a half'
        num = int(num_word) if num_word.isdigit() else _FRACTION_NUMERATORS.get(num_word.lower())
        if num is None:
            return None
    den = (_FRACTION_SINGULAR if num == 1 else _FRACTION_PLURAL).get(den_word)
    if den is None or (num_word is not None and not 0 < num < den):
        return None
    value = whole + Fraction(num, den)
    return -value if m.group("sign") in _MINUS else value


def _terminating_decimal(value: Fraction) -> Decimal | None:
    """`value` as an exact Decimal when its decimal ends (5/2 -> 2.5, 1/8 -> 0.125: a denominator of 2s and 5s only),
    else None (2/3). Exact: p/q with q = 2^a 5^b is p * (10^k / q) / 10^k for any k >= a, b (here k = a + b)."""
    den, places = value.denominator, 0
    for prime in (2, 5):
        while den % prime == 0:
            den, places = den // prime, places + 1
    return Decimal(value.numerator * 10**places // value.denominator).scaleb(-places) if den == 1 else None


def _word_fraction_math(text: str) -> str | None:
    """A number with a fraction in words (see _word_fraction) as LaTeX, as a mixed number goes to math-verify ('2 and a
    half' -> '\\frac{5}{2}', '4 halves' -> '2'), else None. math-verify read '2 and a half' as {2, a*h*a*l*f}."""
    value = _word_fraction(text)
    if value is None:
        return None
    return str(value.numerator) if value.denominator == 1 else _frac_text(value)


def _holds_fraction_word(text: str) -> bool:
    """True if `text` holds a fraction word used as a fraction ('2 thirds', '2 and a half', '3 quarters of the pie', '1
    third', '2 (and a half)'); not a coin right after a whole number ('3 quarters', '9 (quarters)') nor a singular one
    before another word ('123 third graders', '1 half hour'; see _COIN_AFTER_NUMBER). Linear in the text."""
    if not _may_hold_fraction_word(text):
        return False
    for m in _FRACTION_WORD.finditer(text):
        word, before = m.group().lower(), max(0, m.start() - FRACTION_CONTEXT_CHARS)
        if not (_AND_NUMERATOR_BEFORE.search(text, before, m.start()) or _OF_AFTER.match(text, m.end())) and (
                (word in _COIN_WORDS and _COIN_AFTER_NUMBER.search(text, before, m.start()))
                or (word in _FRACTION_SINGULAR and _WORD_AFTER_FRACTION.match(text, m.end()))):
            continue
        return True
    return False


def _unread_fraction_words(text: str) -> bool:
    """True if `text` holds a digit and a fraction word used as one (see _holds_fraction_word: not '3 quarters', '123
    third graders'), and is no number with a fraction in words that _word_fraction reads ('2 and a
    half', '2 thirds of a cup'): '2 half', '2 and 3 halves', '2 cups and a half', '2 1/2 thirds', '1.5 thirds', and each
    of these dressed in any other way ('2 and a half!', '2 and a half %', '$2$ thirds', '2 (and a half)', '2 \\text{
    thirds}'). Such an answer is not read: a gold unparsed, a prediction wrong. The fraction word was a unit word, and
    math-verify reads what it does not take as math around a number as nothing: each was read as the bare number 2."""
    if len(text) > MAX_ANSWER_CHARS or _DIGIT.search(text) is None:
        return False
    return _holds_fraction_word(text) and _word_fraction(text) is None


def _may_hold_fraction_word(text: str) -> bool:
    """False if `text` holds no fraction word for certain (every one holds 'th', 'hal' or 'quarter': 'third', 'half'): a
    cheap test before the reader looks for one (see _unread_fraction_words), at every answer it reads."""
    return _FRACTION_WORD_PART.search(text) is not None


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
    if _words_are_math(words) or _holds_fraction_word(text):  # '2 thirds', '2 and a half': not 2
        return text
    head = m.group("head").strip()
    if not _PERCENT.match(m.group("words")):
        return head
    value = _plain_number(head)  # '10 percent' as math-verify reads '10%'; '1/2 percent' as '1/2\\%' (it was 1/2)
    return f"{head if value is None else _number_text(value)}\\%"


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
                        "number, or in a chain of whole numbers with descending decimal scales ('1.5 million', '5 squared', "
                        "'2 thousand 5 hundred'; not '2 1/2 dozen', '-5 squared', '2 thousand squared', '2 thousand 15 hundred')")


def _unread_number_words(text: str) -> bool:
    """True if `text` is a number followed by words among which is a scale or power word, or a chain of numbers and
    such words, other than what _plain_number reads (a plain number with one such word, a chain of descending decimal
    scales): '2 1/2 dozen', '\\frac{1}{2} million', '-5 squared' ((-5)^2 or -(5^2)?), '2 thousand squared', '3 n squared',
    '1e999 cubed' (over MAX_ANSWER_CHARS written out), '2 thousand 15 hundred', '5 hundred 2 thousand', '2 thousand 5'.
    Such an answer is not read: a gold is unparsed, a prediction wrong (math-verify would read it as the bare number or as
    a product with the word's letters)."""
    if len(text) > MAX_ANSWER_CHARS:
        return False
    spelled = _spelled_number_words(text)
    if (m := _NUMBER_WITH_WORDS.fullmatch(spelled)) is not None:
        words = [w for _, w in _WORD_AFTER.findall(m.group("words"))]
    elif (m := _NUMBER_CHAIN.fullmatch(spelled)) is not None:
        words = [part.group("word") or "" for part in _CHAIN_PART.finditer(m.group("chain"))]
    else:
        return False
    return any(w.lower() in _NUMBER_WORDS for w in words) and _plain_number(text) is None


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


# A signed compound quantity: one sign, before its first number, is the sign of the whole ('-5 ft 6 in' is -(5 ft 6 in),
# '-2 hours 30 minutes' -(2 h 30 min), as a person reads them): kept apart from the numbers (so '-0 ft 6 in' is not
# '0 ft 6 in'), and a prediction matches only with the same sign ('-5 ft 6 in' is neither '5 ft 6 in' nor '-4 ft -6 in':
# no conversion). A sign before a later number ('5 ft -6 in', '-5 ft -6 in': the part's own sign, or the whole's
# repeated?) has no one reading, so such an answer is not read: a gold is unparsed, a prediction wrong (before, '5 ft -6
# in' matched only itself, and '-5 ft -6 in' was wrong against '-5 ft 6 in' though a person may mean the same by both).
_SIGNS = "+-\u2212"
_SIGNED_PART = ("a sign is read only before a compound quantity's first number, as the sign of the whole ('-5 ft 6 in'; "
                "not '5 ft -6 in', '-5 ft -6 in')")
# Feet and inches written with marks ('5\'6"', "5' 6''", '5′6″'): the compound quantity 5 ft 6 in. Both marks are
# needed ('5\'' alone stays what math-verify reads); typographic quotes ('5’6”') are not read.
_FEET_INCHES = re.compile(rf"\s*(?P<ft>{_SIGN}?\d+(?:\.\d+)?)\s*['\u2032]\s*(?P<inch>{_SIGN}?\d+(?:\.\d+)?)\s*(?:\"|''|\u2033)\s*")
_Quantities = tuple[tuple[Decimal, str], ...]
_COMPOUND_AGAINST_SINGLE = "a compound quantity against a single answer (units are not converted)"


def _written_quantities(text: str) -> tuple[tuple[str, str], ...] | None:
    """The (number as written, short unit name) pairs of a compound quantity: two or more numbers, each followed by a
    different unit of _COMPOUND_UNITS ('5 ft 6 in', '5 feet, 6 inches', '2 hours and 30 minutes', '$5 \\text{ ft } 6
    \\text{ in}$'), or feet and inches with marks ('5\\'6"' -> ('5', 'ft'), ('6', 'in')); signs kept ('-5 ft -6 in');
    None for anything else. Linear in the text."""
    if len(text) > MAX_ANSWER_CHARS:
        return None
    if (m := _ENCLOSING_MATH.fullmatch(text)) is not None:
        text = next(g for g in m.groups() if g is not None)
    if (m := _FEET_INCHES.fullmatch(text)) is not None:
        return ((m.group("ft"), "ft"), (m.group("inch"), "in"))
    text = _LATEX_SPACE.sub(" ", _LATEX_UNIT.sub(r" \1 ", text))
    parts: list[tuple[str, str]] = []
    pos = 0
    while (q := _QUANTITY.match(text, pos)) is not None:
        unit = _UNIT_NAMES.get(q.group("unit").lower())
        if unit is None or any(u == unit for _, u in parts):
            return None
        parts.append((q.group("num"), unit))
        if _QUANTITY_END.match(text, q.end()):
            return tuple(parts) if len(parts) > 1 else None
        pos = _QUANTITY_SEP.match(text, q.end()).end()  # type: ignore[union-attr]  # it matches the empty string
    return None


def _compound_quantity(text: str) -> tuple[bool, _Quantities] | None:
    """A compound quantity (see _written_quantities) as (negative, ((number, short unit name), ...)): numbers without
    their sign, in the order written; a sign only before the first number, the sign of the whole ('-5 ft 6 in' -> (True,
    ((5, 'ft'), (6, 'in')))). None for anything else, and for a sign before a later number (see _signed_part)."""
    written = _written_quantities(text)
    if written is None or any(num[0] in _SIGNS for num, _ in written[1:]):
        return None
    values = [(_num_value(num), unit) for num, unit in written]
    if any(value is None for value, _ in values):
        return None
    return written[0][0][0] in _MINUS, tuple((abs(value), unit) for value, unit in values)  # type: ignore[arg-type]


def _signed_part(text: str) -> bool:
    """True if `text` is a compound quantity with a sign before a later number ('5 ft -6 in', '-5 ft -6 in', '5\\'-6"'):
    not read (see _SIGNED_PART)."""
    written = _written_quantities(text)
    return written is not None and any(num[0] in _SIGNS for num, _ in written[1:])


def _compound_text(negative: bool, parts: _Quantities) -> str:
    """Canonical text of a compound quantity: (False, ((5, 'ft'), (6, 'in'))) -> '5 ft 6 in', True: '-5 ft 6 in' (it
    reads back the same)."""
    return ("-" if negative else "") + " ".join(f"{_number_text(value)} {unit}" for value, unit in parts)


class _Reading(NamedTuple):
    """An answer as the fast path reads it (see _read_answer), on either side.

    kind: _NUMBER_DETAIL (value: the number), _PERCENT_DETAIL (value: N of N%; number_text: N's canonical text, '12.5'
        or '\\frac{1}{3}'), _COMPOUND (negative, quantities) or _CLOCK (a gold only: quantities, its hour, minutes and
        seconds, see _clock_time).
    A NamedTuple, and its canonical text a property: both sides are read for every verdict, and only the gold's text
    is ever written out (its length is checked for both: see _read_answer).
    """

    kind: str
    value: Decimal = Decimal(0)
    number_text: str = ""
    negative: bool = False
    quantities: _Quantities = ()

    @property
    def text(self) -> str:
        """Canonical text, which reads back the same ('18', '12.5%', '\\frac{1}{3}%', '-5 ft 6 in', '5:45')."""
        if self.kind == _COMPOUND:
            return _compound_text(self.negative, self.quantities)
        if self.kind == _CLOCK:
            hour, *rest = (int(value) for value, _ in self.quantities)
            return ":".join([str(hour), *(f"{part:02d}" for part in rest)])
        return f"{self.number_text}%" if self.kind == _PERCENT_DETAIL else _number_text(self.value)


def _read_answer(text: str) -> _Reading | None:
    """The one reader of the fast path, for a gold (what follows its '####') and a prediction alike: a plain number
    ('18', '1,000', '-$5', '9 (apples)', '1.5 million', '2 thousand 5 hundred'; also once markdown emphasis, a full stop
    and unit words or short prose are left out: '**18**', '1 000 of them', '12 in', see _without_unit_words), a percent
    ('10%', '10 percent of them', '1/2%', '12 1/2 percent'), or a compound quantity ('5 ft 6 in', '5 feet, 6 inches',
    '5\\'6"', '-2 hours 30 minutes'), each also with its number in words ('ten', 'twelve apples', 'ten percent': see
    _digits_for_words); None for anything else (math-verify reads it, or it is not read at all: see
    _unread_reason), also for an answer whose canonical text is over MAX_ANSWER_CHARS (see _overlong_reading)."""
    reading = _read_unbounded(text)
    return None if reading is None or len(reading.text) > MAX_ANSWER_CHARS else reading


def _overlong_reading(text: str) -> bool:
    """True if the reader reads `text` but its canonical text is over MAX_ANSWER_CHARS, so it would not read back
    ('1' * 1990 + 'e999' is 2,989 characters written out; so is '... e999%', '... e999 ft 6 in'): not read (see
    _OVERLONG_READING), and never handed to math-verify written out."""
    reading = _read_unbounded(text)
    return reading is not None and len(reading.text) > MAX_ANSWER_CHARS


def _read_unbounded(text: str) -> _Reading | None:
    """What _read_answer reads, its canonical text of any length; a number in words as its digits ('twelve apples' as
    '12 apples', see _digits_for_words)."""
    if _DIGIT.search(text) is None and (digits := _digits_for_words(_plain_answer(text))) is not None:
        text = digits
    if "(" in text and _unread_fraction_words(text):  # '2 (and a half)': no number 2 with a note in parentheses (the
        return None  # one place a fraction word may stand in what the reader reads: it is no unit word, see _TAIL_WORD)
    if (value := _plain_value(text)) is not None:
        return _Reading(_NUMBER_DETAIL, value)
    plain = _plain_answer(text)
    bare = _without_unit_words(plain)  # '1 000 of them' -> '1 000' (math-verify reads 1*000 = 0), '10 percent' -> '10\%'
    if bare != text and (value := _plain_value(bare)) is not None:
        return _Reading(_NUMBER_DETAIL, value)
    if (fraction := _word_fraction(bare)) is not None and (value := _terminating_decimal(fraction)) is not None:
        return _Reading(_NUMBER_DETAIL, value)  # '2 and a half' is 2.5; '2 thirds' goes to math-verify as 2/3
    if (percent := _percent_number(bare)) is not None:
        return _Reading(_PERCENT_DETAIL, percent[0], percent[1])
    if (compound := _compound_quantity(plain)) is not None:
        return _Reading(_COMPOUND, negative=compound[0], quantities=compound[1])
    return None


def _same_reading(gold: _Reading, pred: _Reading) -> bool:
    """True if a prediction's reading states the gold's: a compound quantity the same sign, numbers (see _numbers_equal)
    and units in the same order (no conversion); a number or percent against a number or percent the same number, where a
    percent is its number or its hundredth against a number (see _percent_equal). A compound against a number or percent,
    either way, is never the same."""
    if _COMPOUND in (gold.kind, pred.kind):
        return gold.kind == pred.kind and gold.negative == pred.negative and len(gold.quantities) == len(pred.quantities) \
            and all(gu == pu and _numbers_equal(gv, pv)
                    for (gv, gu), (pv, pu) in zip(gold.quantities, pred.quantities, strict=True))
    if gold.kind == pred.kind:
        return _numbers_equal(gold.value, pred.value)
    percent, other = (gold, pred) if gold.kind == _PERCENT_DETAIL else (pred, gold)
    return _percent_equal(percent.value, other.value)


_OVERLONG_READING = (f"a number, percent or compound quantity over {MAX_ANSWER_CHARS} characters written out (an exponent "
                     "such as '1' * 1990 + 'e999'): its canonical text would not read back")


def _unread_reason(text: str) -> str | None:
    """Why `text` (markdown emphasis and a full stop left out) is an answer the verifier does not read, or None: a
    compound quantity with a sign before a later number ('5 ft -6 in', see _SIGNED_PART), a number with a scale or power
    word it is not read with ('2 1/2 dozen', '2 thousand 15 hundred', see _unread_number_words), an answer the reader
    reads whose canonical text is over MAX_ANSWER_CHARS ('1' * 1990 + 'e999', see _overlong_reading), a per mille sign
    fold_unicode left (not after a plain number: 'x‰', see _UNREAD_PER_MILLE). Such a gold is unparsed, such a
    prediction wrong."""
    if _signed_part(text):
        return _SIGNED_PART
    if _unread_number_words(text):
        return _UNREAD_NUMBER_WORDS
    if _unread_fraction_words(text):
        return _UNREAD_FRACTION_WORDS
    if _overlong_reading(text):
        return _OVERLONG_READING
    if any(sign in text for sign in _PER_MILLE):  # left by fold_unicode: not after a plain number
        return _UNREAD_PER_MILLE
    return None


class _ClockTime(NamedTuple):
    """A clock time as written (see _clock_time): hour, minutes, seconds (None when not written), and its a.m./p.m.
    marker ('a', 'p'; None when not written)."""

    hour: int
    minutes: int
    seconds: int | None
    half: str | None


def _clock_time(text: str) -> _ClockTime | None:
    """A bare clock time ('5:45', '$12:50$', '17:03', '9:03:36', '5{:}45'; markdown emphasis, a full stop and LaTeX text
    around its a.m./p.m. as for any answer: '5:45 \\text{ p.m.}', '**5:45 PM**'), else None; also None for an hour over 23
    (over 12, or 0, with a.m./p.m.) or minutes or seconds over 59 ('25:30', '5:75', '13:30 p.m.'). Linear in the text."""
    if len(text) > MAX_ANSWER_CHARS or (":" not in text and "colon" not in text):
        return None  # cheap: most answers hold no colon
    text = _plain_answer(text)
    if (m := _ENCLOSING_MATH.fullmatch(text)) is not None:
        text = next(g for g in m.groups() if g is not None)
    text = _LATEX_SPACE.sub(" ", _LATEX_UNIT.sub(r" \1 ", _CLOCK_COLON.sub(":", text)))
    m = _CLOCK_READ.fullmatch(text.replace("$", " ")) if "\\$" not in text else None
    if m is None:
        return None
    hour, minutes, seconds = int(m.group("h")), int(m.group("m")), None if m.group("s") is None else int(m.group("s"))
    half = m.group("half").lower() if m.group("half") else None
    hours = range(1, _HOURS_PER_HALF_DAY + 1) if half else range(_HOURS_PER_DAY)
    if hour not in hours or minutes >= _MINUTES_PER_HOUR or (seconds or 0) >= _MINUTES_PER_HOUR:
        return None
    return _ClockTime(hour, minutes, seconds, half)


def _clock_reading(text: str) -> _Reading | None:
    """A gold that is a bare clock time without a.m./p.m. ('5:45', see _clock_time) as its _Reading (kind _CLOCK,
    canonical text '5:45', '9:03:36'), else None."""
    time_ = _clock_time(text)
    if time_ is None or time_.half is not None:
        return None
    parts = (time_.hour, time_.minutes) if time_.seconds is None else (time_.hour, time_.minutes, time_.seconds)
    return _Reading(_CLOCK, quantities=tuple((Decimal(p), u) for p, u in zip(parts, _CLOCK_UNITS, strict=False)))


def _may_be_ratio(gold: _Reading) -> bool:
    """True if a _CLOCK gold may as well be a ratio in lowest terms: hour and minutes only, coprime, the minutes written
    without a leading zero ('9:10', '8:15', '22:15'; not '5:45', '12:50', '17:03', '9:03:36', '0:45')."""
    if len(gold.quantities) != len(_CLOCK_UNITS) - 1:
        return False
    hour, minutes = (int(value) for value, _ in gold.quantities)
    return hour > 0 and minutes >= _NO_LEADING_ZERO and gcd(hour, minutes) == 1


def _same_clock_time(gold: _Reading, pred: str) -> bool:
    """True if `pred` states the clock time of a _CLOCK gold: the same hour, minutes and seconds ('5:45', '05:45',
    '5{:}45' against 5:45); with a.m./p.m., which the gold leaves open, its hour on either clock ('5:45 p.m.' against
    5:45 or 17:45, '12:50 a.m.' against 12:50 or 0:50). Never converted otherwise ('17:45' against 5:45 is wrong)."""
    time_ = _clock_time(pred)
    if time_ is None:
        return False
    hour, minutes, *seconds = (int(value) for value, _ in gold.quantities)
    if (time_.minutes, time_.seconds) != (minutes, seconds[0] if seconds else None):
        return False
    if time_.half is None:
        return time_.hour == hour
    on_24h_clock = time_.hour % _HOURS_PER_HALF_DAY + (_HOURS_PER_HALF_DAY if time_.half == "p" else 0)
    return hour in (time_.hour, on_24h_clock)


def _refused_prediction(pred: str) -> str | None:
    """Why a prediction is wrong against any single-answer gold, or None: a compound quantity ('5 ft 6 in'; see
    _compound_quantity), or an answer the verifier does not read ('2 1/2 dozen', '5 ft -6 in'; see _unread_reason). A
    single-answer gold is never a compound quantity nor such an answer (both are read in the fast path: a compound
    quantity, or unparsed)."""
    pred = _plain_answer(pred)
    if _compound_quantity(pred) is not None:
        return _COMPOUND_AGAINST_SINGLE
    return _unread_reason(pred)


def _strip_hashes(gold: str) -> str:
    """What follows the last '####' of a worked solution, else the text itself (stripped)."""
    pos = gold.rfind(_HASHES)
    return (gold[pos + len(_HASHES) :] if pos >= 0 else gold).strip()


def _fast_gold(gold: str) -> _Reading | NormalizedAnswer | None:
    """A gold answer as the fast path reads it: its reading (see _read_answer: a number, a percent, a compound quantity),
    an 'unparsed' NormalizedAnswer when it is plainly unusable (empty, over MAX_ANSWER_CHARS, NaN, a clock time, an
    answer the verifier does not read: see _unread_reason, prose: see _prose), else None (math-verify reads it)."""
    core = _strip_hashes(gold)
    if not core:
        return NormalizedAnswer("unparsed", "", "empty answer")
    if len(core) > MAX_ANSWER_CHARS:
        return NormalizedAnswer("unparsed", "", f"answer over {MAX_ANSWER_CHARS} chars")
    if _NOT_A_NUMBER.fullmatch(core):
        return NormalizedAnswer("unparsed", "", "NaN (a missing value) is not an answer")
    if _CLOCK_TIME.search(core):
        return NormalizedAnswer("unparsed", "", "a clock time is not a number (math-verify reads only its hour)")
    if (clock := _clock_reading(core)) is not None:  # '5:45': its time, not the ratio 1/9
        return clock
    if (reading := _read_answer(core)) is not None:
        return reading
    if (why := _unread_reason(_plain_answer(core))) is not None:
        return NormalizedAnswer("unparsed", "", why)
    if _prose(_plain_answer(core)):  # 'Ted', 'Yes', 'Rug B': never a product of symbols
        return NormalizedAnswer("unparsed", "", _PROSE)
    return None


def _fast_normalize(gold: str) -> NormalizedAnswer | None:
    """The canonical form without sympy when the fast path reads the gold (see _fast_gold): a number ('1.5 million' ->
    '1500000', detail _NUMBER_DETAIL), a percent ('10 percent' -> '10%', detail _PERCENT_DETAIL), a compound quantity
    ('5 feet 6 inches' -> '5 ft 6 in', detail _COMPOUND), or 'unparsed' when it is plainly unusable; else None."""
    got = _fast_gold(gold)
    return NormalizedAnswer("ok", got.text, got.kind) if isinstance(got, _Reading) else got


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
    ('236 adult, 342 child', '$64^{\\circ}$ at 2 PM'); an equation whose sides are both numbers ('7+2=9', ASDiv's
    formula field) is a computation, not an answer ('x=5' and 'f(2)=5' are answers); a gold with a \\boxed{} answer
    is read from that box."""
    parsed, free_text = _mv_read(core)
    matched = next((p for p in parsed if isinstance(p, str)), "")
    if not any(not isinstance(p, str) for p in parsed):
        return parsed, "math-verify found no math" + (f" (matched {parsed[0]!r})" if parsed else "")
    if _undefined(next(p for p in parsed if not isinstance(p, str))):
        return parsed, (f"undefined ({core[:60]!r} divides by zero): no answer equals it, so every check against it "
                        "would fail (an infinite answer is written \\infty)")
    if _equation_of_numbers(next(p for p in parsed if not isinstance(p, str))):
        return parsed, (f"an equation of numbers ({core[:60]!r}): a worked computation, not a final answer (a right "
                        "answer, its right-hand side alone, would be judged wrong)")
    if free_text and _BOXED not in core and (n := _other_answers(core, matched)):
        return parsed, f"ambiguous: math-verify read {matched[:60]!r} but the answer holds {n} more number(s)"
    if (part := _partial_read(parsed)) is not None:
        return parsed, f"ambiguous: math-verify read only {parsed[0]} out of {part[:60]!r}"
    if free_text and _BOXED not in core and (symbol := _lone_symbol(parsed, core)) is not None:
        return parsed, _LONE_SYMBOL.format(symbol)
    return parsed, ""


def _undefined(expr: Any) -> bool:
    """Does math-verify's reading of a gold divide by zero: hold sympy's complex infinity or NaN ('\\frac{1}{0}',
    '0/0'), or a negative power of what sympy knows is zero (math-verify leaves 'x/0', '\\frac{2}{1-1}' and
    '(1-1)^{-1/2}' unevaluated)? in: the expression; out: the verdict (False for \\infty, which is an answer, for
    '\\frac{1}{x-x}', which sympy does not know is zero, and for anything that is not a sympy expression)."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        return False
    return expr.has(sympy.zoo, sympy.nan) or any(
        isinstance(node, sympy.Pow) and node.exp.is_negative and node.base.is_zero
        for node in sympy.preorder_traversal(expr))


def _equation_of_numbers(expr: Any) -> bool:
    """Is math-verify's reading of a gold an equation both of whose sides are numbers (Eq(2 + 7, 9))? in: the
    expression; out: the verdict (False for anything else, and for Eq(x, 5) or Eq(f(2), 5))."""
    import sympy

    return isinstance(expr, sympy.Equality) and bool(expr.lhs.is_number) and bool(expr.rhs.is_number)


def _lone_symbol(parsed: tuple, text: str) -> str | None:
    """The symbol, when math-verify's reading of a free text is one bare symbol and the text outside its math spans is
    prose (a word of two or more letters: '$C$ is not invertible', 'Any $h$ will work.', 'Only $\\mathbf{w}$ is a unit
    vector.'), else None ('$m$', '$-m$', '$e$', 'Yes, $x = 2$' are not)."""
    import sympy

    expr = next((p for p in parsed if not isinstance(p, str)), None)
    if not isinstance(expr, sympy.Symbol):
        return None
    outside = _LATEX_WORDS.sub(" ", _MATH_SPAN.sub(" ", text))
    return str(expr) if any(len(w) > 1 for w in _LETTER_RUN.findall(outside)) else None


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
    sentence's full stop (see _plain_answer), a number in words in digits ('two thirds' -> '2 thirds', see
    _digits_for_words), a number's unit words left out ('3/4 cup' -> '3/4', see _without_unit_words), a number with a
    fraction in words as its LaTeX fraction ('2 thirds' -> '\\frac{2}{3}', see _word_fraction_math)."""
    plain = _plain_answer(_strip_hashes(gold))
    core = _without_unit_words(_digits_for_words(plain) or plain)  # 'two and a half' as '2 and a half'
    return _mixed_number(core) or _word_fraction_math(core) or _repeating_decimal(core) or core


def _task_normalize(gold: str) -> tuple[str, str, str]:
    """Worker task: (status, text, detail) for one gold answer. A gold that parses is also compared once with a
    plain number (PROBE_ANSWER), inside the task's time bound: a gold such as 10^{10^{10}} parses at once but
    makes every comparison with it run out of time (each rollout's check, every RL step), so it times out here
    and ingest rejects its row ('answer timeout') instead."""
    from math_verify import verify

    core = _gold_core(gold)
    parsed, why_not = _gold_parse(core)
    text = None if why_not else _canonical_text(parsed, core)
    if text is None:
        return ("unparsed", "", why_not or "math-verify found no math")
    verify(list(parsed), list(_mv_parse(PROBE_ANSWER)), timeout_seconds=None, raise_on_error=False)
    return ("ok", text, "math-verify")


PROBE_ANSWER = "0"  # what a gold is compared with once when it is normalized (_task_normalize)


def _task_verify(gold: str, pred: str, gold_number: str = "", pred_number: str = "") -> tuple[str, str, str]:
    """Worker task: (status, gold_text, detail) for one prediction against one gold. A percent equals its number or its
    hundredth (see _percent_equal), and math-verify reads a decimal percent as its hundredth only ('12.5%' is 0.125): for
    a percent gold `gold_number` is its number ('12.5'), for a percent prediction `pred_number` is ('' when not a
    percent; the fast path judges a pair with a percent on both sides), and a prediction math-verify does not find equal
    to the gold is compared once more, with that number in place of the percent."""
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
    if verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None, raise_on_error=True):
        return ("correct", gold_text, "math-verify")
    if gold_number or pred_number:  # one more comparison, for a percent pair only
        gold_alt = _mv_parse(gold_number) if gold_number else gold_parsed
        pred_alt = _mv_parse(pred_number) if pred_number else pred_parsed
        if verify(list(gold_alt), list(pred_alt), timeout_seconds=None, raise_on_error=True):
            return ("correct", gold_text, _PERCENT_AS_NUMBER)
    return ("wrong", gold_text, "math-verify")


_PERCENT_AS_NUMBER = "math-verify, a percent as its number"  # the detail of a percent pair judged equal that way


def _task_stall(seconds: float) -> tuple[str, str, str]:
    """Worker task used by the tests: sleep with SIGALRM blocked, as a C call that ignores signals would."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    return ("ok", "", "stalled")


_TASKS = {"normalize": _task_normalize, "verify": _task_verify, "stall": _task_stall}


def cap_address_space(headroom_mb: int) -> int | None:
    """Limit this process's address space (RLIMIT_AS) to what it maps now plus `headroom_mb`, where the system has
    such a limit (Linux; elsewhere nothing is set). in: headroom in MB; out: the limit set, in bytes, or None."""
    try:
        import resource

        pages = int(Path("/proc/self/statm").read_text().split()[0])
        limit = pages * os.sysconf("SC_PAGE_SIZE") + headroom_mb * 2**20
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = min([limit, *(v for v in (soft, hard) if v != resource.RLIM_INFINITY)])  # never loosen a user's limit
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        return None
    return limit


def _worker_main(fd: int) -> None:
    """Worker loop on socket `fd`: import math-verify, say ready, then run (kind, args, timeout_s) tasks
    until told to stop (None) or the parent goes away."""
    import logging
    import signal

    global _TIMED_OUT
    import math_verify  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    signal.signal(signal.SIGALRM, _on_alarm)
    cap_address_space(WORKER_MEMORY_HEADROOM_MB)
    conn = Connection(fd)
    if not _send(conn, ("ready", None)):
        return
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
        if not _send(conn, out):
            return


def _send(conn: Connection, message: tuple) -> bool:
    """Send `message` to the parent; False when the parent is gone (it was stopped or died mid-task: a traceback of
    BrokenPipeError per worker followed saerl's own line), so the worker ends quietly. in: the socket, a message."""
    try:
        conn.send(message)
    except OSError:  # BrokenPipeError, ConnectionResetError
        return False
    return True


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
    any thread are safe; a worker that overruns its deadline is killed and replaced (the task's verdict: 'timeout');
    a worker that dies on a task (killed from outside) is replaced and the task runs again, MAX_TASK_DEATHS in all."""

    def __init__(self, n_workers: int | None = None) -> None:
        self.n_workers = n_workers  # None: pool_size() when the pool first runs
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()
        self.deaths: Counter[int] = Counter()  # this batch's tasks -> workers that died on them (run, _died)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers.remove(worker)

    def run(self, tasks: list[tuple[str, tuple]], timeout_s: float) -> list[tuple]:
        """Run tasks, each bounded by timeout_s of its own run time; returns ('done', value) | ('timeout', detail)
        | ('error', detail) per task, in order."""
        results: list[tuple | None] = [None] * len(tasks)
        with self.lock:
            if self.n_workers is None:
                self.n_workers = pool_size()
            pending = deque(range(len(tasks)))
            start_failures = 0
            self.deaths = Counter()
            while pending or any(w.task is not None for w in self.workers):
                busy = sum(w.task is not None for w in self.workers)
                while len(self.workers) < min(self.n_workers, len(pending) + busy):
                    self.workers.append(_Worker())
                self._dispatch(tasks, pending, results, timeout_s)
                start_failures += self._collect(results, timeout_s, pending)
                if start_failures >= MAX_START_FAILURES and not any(w.ready for w in self.workers):
                    for i in pending:
                        results[i] = ("error", WORKERS_FAILED)
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
                    self._died(w, i, pending, results)
                    continue
                w.task, w.deadline = i, time.monotonic() + timeout_s + HARD_KILL_GRACE_S

    def _died(self, worker: _Worker, task: int, pending: deque, results: list) -> None:
        """A worker died on `task` (its socket closed: killed from outside, the OOM killer): replace it and put the
        task first in line for a fresh worker, or, at its MAX_TASK_DEATHS-th death, give it ('error', ...) naming the
        worker's exit status (read after a wait of at most EXIT_WAIT_S: -9 for SIGKILL; poll() read None before the
        process was reaped). in: the worker, the task's index, the pending queue, the results."""
        try:
            worker.proc.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
        code = worker.proc.returncode  # None: still running after the wait (killed next, by _replace)
        self._replace(worker)
        self.deaths[task] += 1
        if self.deaths[task] < MAX_TASK_DEATHS:
            pending.appendleft(task)
        else:
            results[task] = ("error", f"verifier worker exited (code {code}) on this task {self.deaths[task]} times")

    def _collect(self, results: list, timeout_s: float, pending: deque) -> int:
        """Wait for the first message or deadline; record results, kill overrunning workers, send the task of one
        that died back to `pending` (:meth:`_died`). Returns how many workers failed while starting."""
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
                        self._died(w, w.task, pending, results)
                    else:
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


_POOL = _Pool()
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


def normalize_answers(golds: list[str], timeout_s: float, progress: bool = False) -> list[NormalizedAnswer]:
    """Canonical forms of many gold answers, each folded first (see fold_unicode: '3²' is 9, '50％' 50%): what
    _fast_normalize reads (numbers, percents, compound quantities, number words) in this process, the rest in pool
    batches of NORMALIZE_BLOCK (with `progress`, runtime.progress, a progress bar over them where there are two or
    more), each answer bounded by timeout_s."""
    from tqdm.auto import tqdm

    golds = [fold_unicode(g if isinstance(g, str) else str(g)) for g in golds]  # '3²' as '3^{2}', '50％' as '50%'
    out: list[NormalizedAnswer | None] = [_fast_normalize(g) for g in golds]
    slow = [i for i, r in enumerate(out) if r is None]
    pooled: list[tuple] = []
    blocks = range(0, len(slow), NORMALIZE_BLOCK)  # a bar where it takes long: LaTeX golds cost ~12 ms each
    for lo in tqdm(blocks, desc="normalizing gold answers", unit="block", disable=len(blocks) < 2 or not progress):
        pooled += _run_unique([("normalize", (golds[i],)) for i in slow[lo : lo + NORMALIZE_BLOCK]], timeout_s)
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


class _PoolPair(NamedTuple):
    """A pair the fast path leaves to math-verify (see _task_verify).

    pred: the prediction as extracted (shown in the verdict); pred_math: as math-verify should read it (see _as_math).
    gold_math: the gold as math-verify should read it (the gold itself when the fast path does not read it).
    gold_text: the gold's canonical text when the fast path reads it ('12.5%', '\\frac{1}{3}%': the verdict shows it, as
        every verdict of the fast path does), else None (the worker's canonical text is shown).
    gold_number / pred_number: a percent gold's or a percent prediction's number ('12.5', '\\frac{1}{3}'), else ''.
    """

    pred: str
    pred_math: str
    gold_math: str
    gold_text: str | None = None
    gold_number: str = ""
    pred_number: str = ""


def _fast_verify(completion: str, gold: str) -> VerifyResult | _PoolPair:
    """A final VerifyResult when no sympy is needed, else the pair to send to the pool (see _PoolPair). The gold and each
    part of the final answer are folded (see fold_unicode) before they are read; the verdict shows the folded answer."""
    parts = _final_answer(completion)
    if parts is None:
        return VerifyResult("no_answer", None, None, "no '####' or closed '\\boxed{}' found")
    parts = tuple(fold_unicode(p) for p in parts)
    pred = _ANSWER_JOIN.join(parts)
    gold = fold_unicode(gold if isinstance(gold, str) else str(gold))
    gold_r = _fast_gold(gold)
    if isinstance(gold_r, NormalizedAnswer):
        return VerifyResult("error", pred, None, f"gold answer unusable: {gold_r.detail}")
    if len(pred) > MAX_ANSWER_CHARS:
        return VerifyResult(
            "wrong", pred[:100], gold_r.text if gold_r else None, f"prediction over {MAX_ANSWER_CHARS} chars"
        )
    if gold_r is not None and (verdict := _judge_fast_gold(gold_r, pred, len(parts) == 1)) is not None:
        return verdict
    pred_math = _ANSWER_JOIN.join(_as_math(p) for p in parts)
    if gold_r is None:  # a percent prediction ('12.5%', '1/3%') also as its number
        reading = _read_answer(pred) if len(parts) == 1 else None
        percent = reading.number_text if reading is not None and reading.kind == _PERCENT_DETAIL else ""
        return _PoolPair(pred, pred_math, gold, pred_number=percent)
    if gold_r.kind != _PERCENT_DETAIL:
        return _PoolPair(pred, pred_math, gold_r.text, gold_r.text)
    # a percent whose decimal does not end ('\\frac{1}{3}%') as math-verify reads it; '12.5%' it reads as it is
    gold_math = _percent_math(gold_r.number_text) if "\\frac" in gold_r.number_text else gold_r.text
    return _PoolPair(pred, pred_math, gold_math, gold_r.text, gold_number=gold_r.number_text)


def _judge_fast_gold(gold: _Reading, pred: str, single: bool) -> VerifyResult | None:
    """The judgement of a prediction (`single`: one answer, not boxes written together) against a gold the fast path
    read, when no sympy is needed, else None. The prediction is read by the same reader as the gold (see _read_answer)
    and the two readings compared (see _same_reading); against a compound-quantity gold anything else is wrong, and so
    is, against any gold, a prediction no single-answer gold can match (see _refused_prediction). Against a clock-time
    gold only the same time is right (see _same_clock_time), except that a prediction without a colon goes to
    math-verify when the gold may also be a ratio (see _may_be_ratio: '\\frac{9}{10}' against '9:10')."""
    if gold.kind == _CLOCK:  # the same time (see _same_clock_time), or a number against a possible ratio (math-verify)
        if single and _PAIR_WRITTEN.search(pred) is None and _may_be_ratio(gold):
            return None
        return VerifyResult("correct" if single and _same_clock_time(gold, pred) else "wrong", pred, gold.text, _CLOCK)
    reading = _read_answer(pred) if single else None
    if gold.kind == _COMPOUND:
        same = reading is not None and _same_reading(gold, reading)
        return VerifyResult("correct" if same else "wrong", pred, gold.text, _COMPOUND)
    if reading is not None and reading.kind == _COMPOUND:
        return VerifyResult("wrong", pred, gold.text, _COMPOUND_AGAINST_SINGLE)
    if reading is not None:
        detail = _PERCENT_DETAIL if _PERCENT_DETAIL in (gold.kind, reading.kind) else _NUMBER_DETAIL
        return VerifyResult("correct" if _same_reading(gold, reading) else "wrong", pred, gold.text, detail)
    if single and (why := _refused_prediction(pred) or _prose_prediction(pred)) is not None:
        return VerifyResult("wrong", pred, gold.text, why)
    return None


def _prose_prediction(pred: str) -> str | None:
    """_PROSE if the prediction is prose ('Det', 'Yes', 'The answer is twelve', 'three quarters'; see _prose), else None. Against
    a gold the fast path reads (a number, a percent, a compound quantity) such a prediction is wrong: math-verify read it as
    no math or a product of letters, never that number. Against a gold only math-verify reads it stays math-verify's
    ('\\boxed{xy}' against '$x y$' is its product of letters; prose with a word of 4+ letters reads as no math there)."""
    return _PROSE if _prose(_plain_answer(pred)) else None


def _as_math(pred: str) -> str:
    """A prediction as math-verify should read it: a mixed number or a repeating decimal as its LaTeX fraction
    ('2 1/2' -> '\\frac{5}{2}', '0.\\overline{3}' -> '\\frac{1}{3}'), a plain number as its canonical text
    ('1e-07' -> '0.0000001'), anything else unchanged; markdown emphasis around it and a full stop after it go
    first ('**18**' -> '18', '1/2.' -> '1/2', see _plain_answer), then unit words after a number ('3/4 cup' ->
    '3/4', '12 in' -> '12'; not '3 n' or '2 pi', see _without_unit_words); a fraction percent as math-verify reads a
    percent (see _fraction_percent_math: '1/2%' -> '0.5\\%')."""
    pred = _plain_answer(pred)
    pred = _without_unit_words(_digits_for_words(pred) or pred)  # 'ten' as '10', 'twelve apples' as '12'
    value = _plain_number(pred)
    if value is not None:
        return _number_text(value)
    return _mixed_number(pred) or _word_fraction_math(pred) or _repeating_decimal(pred) or _fraction_percent_math(pred) or pred


def _fraction_percent_math(text: str) -> str | None:
    """A percent written with a fraction ('1/2%', '12 1/2 percent', '\\frac{1}{3}\\%'), as math-verify reads a percent:
    its decimal with a percent sign ('0.5\\%', '12.5\\%'; math-verify reads '1/2%' as no number), or, when the decimal
    does not end, the fraction over 100 ('\\frac{\\frac{1}{3}}{100}'); None for anything else. As math-verify reads a
    decimal percent, this is the hundredth only (the fast path also takes the number itself, see _percent_equal)."""
    m = _PERCENT_NUMBER.fullmatch(text) if len(text) <= MAX_ANSWER_CHARS else None
    read = _percent_number(text) if m is not None and m.group("num") is None else None
    return None if read is None else _percent_math(read[1])


def _percent_math(number_text: str) -> str:
    """A percent's canonical number text as math-verify reads its percent: '0.5' -> '0.5\\%', '\\frac{1}{3}' ->
    '\\frac{\\frac{1}{3}}{100}' (math-verify reads no fraction before a percent sign)."""
    return f"\\frac{{{number_text}}}{{100}}" if "\\frac" in number_text else f"{number_text}\\%"


def fast_verdict(completion: str, gold: str) -> VerifyResult | None:
    """The judgement :func:`verify_batch` reaches in this process, without the worker pool: no answer, an
    unusable gold, a number or percent against a number or percent gold, each read by the one reader (``#### 1,000``,
    ``\\boxed{18.00}``, ``#### $18``, ``#### 18 dollars``, ``#### **18**``, ``#### 1 000 of them``, ``#### 1.5 thousand``,
    ``#### 2 thousand 5 hundred`` against 1000/18/1500/2500, ``#### 10%``, ``#### 1/2%`` against 0.1, 0.005), anything
    against a compound-quantity gold (``5 ft 6 in``, ``5'6"``) or a clock-time gold (``5:45``; a number against one that
    may be a ratio, ``9:10``, goes to math-verify), or a prediction no single-answer gold matches
    (``#### 5 ft 6 in``, ``#### 2 1/2 dozen``, ``#### 5 ft -6 in`` against a number), and prose against a number, a
    percent or a compound quantity (``#### Yes``, ``\\boxed{Det}``; ``#### ten`` is read as 10). in: completion, gold; out: that VerifyResult, or None
    when the pair needs math-verify (call verify_batch for it)."""
    first = _fast_verify(completion, gold)
    return first if isinstance(first, VerifyResult) else None


def verify_batch(completions: list[str], golds: list[str], timeout_s: float = 5.0) -> list[VerifyResult]:
    """Judge each completion against its gold: what :func:`fast_verdict` decides (numbers, percents, number
    words, compound quantities, prose, a missing answer) in this process, the rest by math-verify in one pool
    batch where each item is bounded by timeout_s (an overrun is status 'timeout'). in: completions, golds
    (same length), timeout; out: one VerifyResult each, in order."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    first = [_fast_verify(c, g) for c, g in zip(completions, golds, strict=True)]
    pooled = [(i, r) for i, r in enumerate(first) if isinstance(r, _PoolPair)]
    tasks = [("verify", (p.gold_math, p.pred_math, p.gold_number, p.pred_number)) for _, p in pooled]
    out: list[Any] = list(first)
    for (i, pair), res in zip(pooled, _run_unique(tasks, timeout_s), strict=True):
        if res[0] == "done":
            status, canon, detail = res[1]
            out[i] = VerifyResult(status, pair.pred, pair.gold_text or canon or pair.gold_math, detail)
        else:
            out[i] = VerifyResult(res[0], pair.pred, pair.gold_text or pair.gold_math, res[1])
    return out


def verify_answer(completion: str, gold: str, timeout_s: float = 5.0) -> VerifyResult:
    """Judge one completion: its final answer (see extract_final_answer) against the gold, as
    :func:`verify_batch` does (in process where it can, else math-verify's verify(parse(gold), parse(pred)) in a
    worker); bounded by timeout_s and safe from any thread."""
    return verify_batch([completion], [gold], timeout_s)[0]
