"""The embedded synthetic math world: seven topics x five difficulty levels, worked solutions, quality defects.

Every problem is generated from one integer seed, so the world is a pure function of :class:`TestbedConfig`.
Text is written as space-separated words (numbers are whole words, e.g. ``347``) so that the policy LM's
word-piece tokenizer round-trips it exactly. A completion (what the LM learns to write) is a worked solution,
one ``a op b = r`` step after another, then ``#### <answer>``: the line the verifier reads.

Splits, disjoint by content (topic + the numbers of the problem, whatever the template):
- ``pretrain``: the LM's corpus. A level-dependent share of its worked solutions carries one plausible slip
  (a digit off by one in one step, carried through to the final answer), as real corpora are noisy: the LM's
  samples then solve a problem some of the time, which is what RL sharpens.
- ``pool``: the RL training pool; ``defect_share`` of it carries a quality defect (see ``DEFECTS``), and a
  ``labelled_share`` subset is flagged for property models.
- ``eval``: held-out clean problems from the pool's distribution.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from saerl.config import TESTBED_DEFECTS, TestbedConfig

ANSWER_MARK = "####"
LM_FOLDER = "lm"  # the testbed artifact's policy LM, <root>/testbed/<key>/lm (build_testbed)
REVERSED = "rev"  # marks a step result written least-significant digit first (see Calc.step)
DEFECTS = TESTBED_DEFECTS
NAMES = ("Ann", "Ben", "Carl", "Dana", "Eva", "Finn", "Gina", "Hugo", "Ivy", "Jack", "Kim", "Leo", "Mia",
         "Nora", "Omar", "Pia", "Rosa", "Sam", "Tara", "Umar")
OBJECTS = ("apples", "pens", "coins", "books", "cards", "marbles", "stickers", "shells", "cookies", "stamps",
           "beads", "rocks")
VAGUE = ("some", "a few", "several", "many")
OFF_TEXT = (
    "Write a short poem about the {obj} of {name} .",
    "What is the favourite colour of {name} ?",
    "Tell me a story about {name} and the {obj} .",
    "Why does {name} like {obj} so much ?",
    "Describe the weather in the town of {name} .",
    "Is it better to keep {obj} or to give them away ?",
)


class Calc:
    """Arithmetic steps of one worked solution, optionally with one plausible slip at step `slip_at`.

    in: slip_at (step index whose result is perturbed, or None) and a rng for the perturbation.
    out: `.steps` (the solution lines) and `.n` (steps taken); `step` returns the (possibly slipped) value,
    so later steps build on the slip as a person's solution would.
    """

    def __init__(self, slip_at: int | None, rng: random.Random) -> None:
        self.slip_at, self.rng, self.n, self.steps = slip_at, rng, 0, []

    def step(self, text: str, value: int) -> int:
        """Record ``text = rev <digits of value, least significant first>`` (value slipped if this is the slip
        step) and return the value written. Later steps and the final answer use the value in the usual
        order, so the solution reverses it back when it reads it."""
        if self.n == self.slip_at:
            value = slip(self.rng, value)
        self.n += 1
        self.steps.append(f"{text} = {REVERSED} {reversed_digits(value)}")
        return value

    def note(self, text: str) -> None:
        """Record a line that is not a computation (it cannot slip)."""
        self.steps.append(text)


def reversed_digits(value: int) -> str:
    """`value` written least-significant digit first, the sign kept in front: 132 -> "231", -40 -> "-04"."""
    return ("-" if value < 0 else "") + str(abs(value))[::-1]


def slip(rng: random.Random, value: int) -> int:
    """A plausible wrong value: one digit of `value` moved by one (a dropped carry/borrow); never equal, >= 0
    when value >= 0. in: rng, value; out: the wrong value."""
    digits = len(str(abs(value)))
    pos = rng.randrange(digits)
    delta = 10**pos * rng.choice((-1, 1))
    wrong = value + delta
    if (value >= 0 > wrong) or (digits > 1 and len(str(abs(wrong))) < digits and pos == digits - 1):
        wrong = value - delta
    return wrong


def _num(rng: random.Random, digits: int) -> int:
    """A random integer with exactly `digits` digits (1-digit: 2..9)."""
    return rng.randint(2, 9) if digits == 1 else rng.randint(10 ** (digits - 1), 10**digits - 1)


# ---------------------------------------------------------------------------------------------- topics
# Each generator: (rng, level, calc) -> (prompt, answer, key). `key` names the problem's content (the numbers
# that define it), so two templates of one problem are the same content for the split check.

def gen_arith(rng: random.Random, level: int, c: Calc) -> tuple[str, int, tuple]:
    """Multi-digit addition/subtraction; level 1: a number up to 19 and a digit; levels 2-4: digits;
    level 5: three operands of 3-4 digits."""
    if level == 5:
        a, b, d = _num(rng, 4), _num(rng, 3), _num(rng, 3)
        t = c.step(f"{a} + {b}", a + b)
        r = c.step(f"{t} - {d}", t - d)
        tpl = rng.choice(("What is {a} plus {b} minus {d} ?", "Compute {a} + {b} - {d} .",
                          "Work out {a} + {b} - {d} .", "{a} + {b} - {d} = ?"))
        return tpl.format(a=a, b=b, d=d), r, (a, b, d)
    add = rng.random() < 0.5
    if level == 1:
        a, b = rng.randint(1, 19), rng.randint(1, 9)
    else:
        a, b = _num(rng, level), _num(rng, max(1, level - rng.randint(0, 1)))
    if add:
        r = c.step(f"{a} + {b}", a + b)
        tpl = rng.choice(("What is {a} plus {b} ?", "Compute {a} + {b} .", "Find the sum of {a} and {b} .",
                          "{a} + {b} = ?", "Add {a} and {b} ."))
        return tpl.format(a=a, b=b), r, ("+", a, b)
    a, b = max(a, b), min(a, b)
    r = c.step(f"{a} - {b}", a - b)
    tpl = rng.choice(("What is {a} minus {b} ?", "Compute {a} - {b} .", "Find the difference of {a} and {b} .",
                      "{a} - {b} = ?", "Subtract {b} from {a} ."))
    return tpl.format(a=a, b=b), r, ("-", a, b)


def gen_mult(rng: random.Random, level: int, c: Calc) -> tuple[str, int, tuple]:
    """Multiplication; levels: up to 19 times a digit, 2x1, 3x1, 2x2, 3x2 digits (2-digit multipliers via
    partial products)."""
    da, db = ((2, 1), (2, 1), (3, 1), (2, 2), (3, 2))[level - 1]
    a, b = _num(rng, da), _num(rng, db)
    if level == 1:
        a = rng.randint(2, 19)
    if db == 1:
        r = c.step(f"{a} * {b}", a * b)
    else:
        ones, tens = b % 10, b - b % 10
        p1 = c.step(f"{a} * {ones}", a * ones)
        p2 = c.step(f"{a} * {tens}", a * tens)
        r = c.step(f"{p1} + {p2}", p1 + p2)
    tpl = rng.choice(("What is {a} times {b} ?", "Compute {a} * {b} .", "Find the product of {a} and {b} .",
                      "{a} * {b} = ?", "Multiply {a} by {b} ."))
    return tpl.format(a=a, b=b), r, (a, b)


def gen_word(rng: random.Random, level: int, c: Calc) -> tuple[str, int, tuple]:
    """Story problems with varied names, objects and phrasing; levels add steps, digits and a distractor."""
    name, friend = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    digits = 1 if level == 1 else 2
    start = _num(rng, digits)
    parts = [rng.choice(("{n} has {a} {o} .", "{n} starts with {a} {o} .", "There are {a} {o} in the box of {n} ."))
             .format(n=name, a=start, o=obj)]
    # `value` is the count the solution writes (a slipped step carries through it); `held` the story's true count,
    # which the story's own draws read, so that a slip changes the solution, never the problem
    value, held, key = start, start, [name, friend, obj, start]
    n_ops = (1, 1, 2, 2, 3)[level - 1]
    for i in range(n_ops):
        if level == 5 and i == 0:
            k, m = rng.randint(2, 9), rng.randint(2, 9)
            parts.append(f"{name} buys {k} bags with {m} {obj} in each bag .")
            got = c.step(f"{k} * {m}", k * m)
            value, held = c.step(f"{value} + {got}", value + got), held + k * m
            key += ["*", k, m]
            continue
        if rng.random() < 0.5 or held < 4:
            x = _num(rng, digits)
            parts.append(rng.choice(("{n} gets {x} more .", "{f} gives {n} {x} more {o} .", "Then {n} finds {x} more {o} ."))
                         .format(n=name, f=friend, x=x, o=obj))
            value, held = c.step(f"{value} + {x}", value + x), held + x
            key += ["+", x]
        else:
            x = rng.randint(1, held - 1)
            parts.append(rng.choice(("{n} gives {x} to {f} .", "{n} loses {x} {o} .", "Then {n} gives away {x} {o} ."))
                         .format(n=name, f=friend, x=x, o=obj))
            value, held = c.step(f"{value} - {x}", value - x), held - x
            key += ["-", x]
    if level >= 4:
        parts.insert(rng.randint(1, len(parts)), f"{friend} has {_num(rng, digits)} {rng.choice(OBJECTS)} .")
    parts.append(rng.choice(("How many {o} does {n} have now ?", "How many {o} does {n} have in the end ?",
                             "What is the number of {o} {n} has now ?")).format(n=name, o=obj))
    text = " ".join(parts)
    if friend not in text.split(" "):
        key[1] = "-"  # most templates never name the friend: the same text must be the same content
    return text, value, tuple(key)


def gen_linear(rng: random.Random, level: int, c: Calc) -> tuple[str, int, tuple]:
    """Linear equations in one unknown: x + a = b, a * x = b, a * x + b = c, a * x - b = c, a * x + b = c * x + d."""
    x = rng.randint(2, 9) if level <= 3 else rng.randint(2, 19)
    a = rng.randint(2, 9) if level < 4 else rng.randint(3, 19)
    if level == 1:
        b = _num(rng, rng.randint(1, 2))
        eq, key = f"x + {b} = {x + b}", (1, b, x + b)
        story = f"add {b} and get {x + b}"
        r = c.step(f"x = {x + b} - {b}", x)
    elif level == 2:
        eq, key = f"{a} * x = {a * x}", (a, 0, a * x)
        story = f"multiply it by {a} and get {a * x}"
        r = c.step(f"x = {a * x} / {a}", x)
    else:
        b = _num(rng, 2)
        b = b if level != 4 or b < a * x else rng.randint(1, a * x - 1)
        sign = "-" if level == 4 else "+"
        rhs = a * x - b if level == 4 else a * x + b
        if level == 5:
            cc = rng.randint(1, a - 1) if a > 2 else 1
            d = rhs - cc * x
            eq, key = f"{a} * x + {b} = {cc} * x + {d}", (a, b, cc, d)
            k = a - cc
            t = c.step(f"{k} * x = {d} - {b}", d - b)
            r = c.step(f"x = {t} / {k}", t // k if t % k == 0 else round(t / k))
            return _linear_text(rng, eq, None), r, key
        verb = "add" if sign == "+" else "subtract"
        story = f"multiply it by {a} and {verb} {b} . The result is {rhs}"
        eq, key = f"{a} * x {sign} {b} = {rhs}", (a, sign, b, rhs)
        t = c.step(f"{a} * x = {rhs} {'+' if sign == '-' else '-'} {b}", a * x)
        r = c.step(f"x = {t} / {a}", t // a if t % a == 0 else round(t / a))
        return _linear_text(rng, eq, story), r, key
    return _linear_text(rng, eq, story), r, key


def _linear_text(rng: random.Random, eq: str, story: str | None) -> str:
    """A prompt for equation `eq`; with `story` (what is done to the number, and the result) also a
    think-of-a-number phrasing, so the letter x does not name the topic."""
    tpls = ["Solve for x : {eq} .", "Find x if {eq} .", "What is x when {eq} ?", "If {eq} , what is x ?"]
    if story is not None:
        tpls += [f"I think of a number , {story} . What is the number ?",
                 f"A number is taken , {story} . Find the number ."]
    return rng.choice(tpls).format(eq=eq)


def gen_remainder(rng: random.Random, level: int, c: Calc) -> tuple[str, int, tuple]:
    """Remainders: dividend/divisor digits grow with level (1-digit divisors up to level 3)."""
    dn, dd = ((2, 1), (2, 1), (3, 1), (3, 2), (4, 2))[level - 1]
    d = _num(rng, dd)
    n = rng.randint(d + 1, 10 * d - 1) if level == 1 else _num(rng, dn)
    q = c.step(f"{n} / {d}", n // d)
    p = c.step(f"{q} * {d}", q * d)
    r = c.step(f"{n} - {p}", n - p)
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    tpl = rng.choice(("What is the remainder when {n} is divided by {d} ?", "Compute {n} mod {d} .",
                      "Find {n} modulo {d} .", "What is left when {n} is divided by {d} ?",
                      "{name} shares {n} {obj} equally among {d} friends . How many {obj} are left over ?"))
    return tpl.format(n=n, d=d, name=name, obj=obj), r, (n, d)


def gen_compare(rng: random.Random, level: int, c: Calc) -> tuple[str, int, tuple]:
    """Pick the largest/smallest (levels 1-3) or second largest/smallest (4-5) of 2-6 numbers; higher levels
    use more, longer and closer numbers."""
    count, digits = ((2, 2), (3, 2), (4, 3), (5, 3), (6, 4))[level - 1]
    if level == 5:
        base = _num(rng, 2) * 100
        nums = rng.sample(range(base, base + 100), count)
    else:
        nums = rng.sample(range(2 if digits == 1 else 10 ** (digits - 1), 10**digits), count)
    want = rng.choice(("largest", "smallest"))
    rank = 1 if level <= 3 else 2
    order = sorted(nums, reverse=want == "largest")
    c.note("sorted : " + " , ".join(map(str, order)))
    ans = order[rank - 1]
    if c.slip_at is not None:
        ans = order[rank] if rank < len(order) else order[rank - 2]
    c.n += 1
    words = {"largest": ("largest", "greatest", "biggest"), "smallest": ("smallest", "least", "lowest")}[want]
    which = rng.choice(words) if rank == 1 else "second " + rng.choice(words)
    listed = " , ".join(map(str, nums))
    tpl = rng.choice(("Which is the {w} number : {l} ?", "What is the {w} of {l} ?", "Find the {w} value among {l} .",
                      "Of the numbers {l} , which is the {w} ?"))
    return tpl.format(w=which, l=listed), ans, (want, rank, *nums)


def gen_sequence(rng: random.Random, level: int, c: Calc) -> tuple[str, int, tuple]:
    """Next term of a sequence: +small step, +larger step, decreasing, growing steps, or times 2/3."""
    n_terms = 4 if level <= 2 else 5
    if level <= 3:
        step = rng.randint(1, 5) if level == 1 else rng.randint(2, 9) if level == 2 else -rng.randint(3, 12)
        start = rng.randint(1, 9 if level == 2 else 40) if step > 0 else rng.randint(60, 99)
        terms = [start + i * step for i in range(n_terms)]
        d = c.step(f"{terms[1]} - {terms[0]}" if step > 0 else f"{terms[0]} - {terms[1]}", abs(step))
        nxt = c.step(f"{terms[-1]} + {d}" if step > 0 else f"{terms[-1]} - {d}", terms[-1] + d if step > 0 else terms[-1] - d)
    elif level == 4:
        start, s0 = rng.randint(1, 20), rng.randint(1, 5)
        terms = [start]
        for i in range(n_terms - 1):
            terms.append(terms[-1] + s0 + i)
        d = c.step(f"{terms[-1]} - {terms[-2]}", terms[-1] - terms[-2])
        d = c.step(f"{d} + 1", d + 1)
        nxt = c.step(f"{terms[-1]} + {d}", terms[-1] + d)
    else:
        ratio, start = rng.choice((2, 3)), rng.randint(2, 9)
        terms = [start * ratio**i for i in range(n_terms - 1)]
        r = c.step(f"{terms[1]} / {terms[0]}", ratio)
        nxt = c.step(f"{terms[-1]} * {r}", terms[-1] * r)
    listed = " , ".join(map(str, terms))
    tpl = rng.choice(("What comes next : {l} , ?", "Find the next number in the sequence {l} .",
                      "Continue the pattern : {l} , ...", "What is the next term of {l} ?"))
    return tpl.format(l=listed), nxt, tuple(terms)


GENERATORS: dict[str, Callable[[random.Random, int, Calc], tuple[str, int, tuple]]] = {
    "arith": gen_arith, "mult": gen_mult, "word": gen_word, "linear": gen_linear,
    "remainder": gen_remainder, "compare": gen_compare, "sequence": gen_sequence,
}


@dataclass(frozen=True)
class Problem:
    """One generated problem: prompt text, gold answer, worked solution (steps + final line), labels."""

    prompt: str
    answer: str
    solution: str
    topic: str
    level: int
    key: tuple
    n_steps: int


def make_problem(seed: int, topic: str, level: int, slip_prob: float = 0.0) -> Problem:
    """The problem for (seed, topic, level); with probability `slip_prob` its worked solution (and so its
    stated answer) carries one plausible slip. in: seed, topic, level 1-5, slip_prob; out: Problem."""
    rng = random.Random(f"slip:{seed}")  # a stream of its own: whether and where a solution slips must not
    clean = Calc(None, random.Random(seed + 1))  # depend on the draws that made the problem (its content)
    GENERATORS[topic](random.Random(seed), level, clean)
    slip_at = rng.randrange(clean.n) if clean.n and rng.random() < slip_prob else None
    calc = Calc(slip_at, random.Random(seed + 1))
    prompt, answer, key = GENERATORS[topic](random.Random(seed), level, calc)
    solution = " , ".join(calc.steps) + f" {ANSWER_MARK} {answer}"
    return Problem(prompt, str(answer), solution, topic, level, (topic, *key), len(calc.steps))


# ---------------------------------------------------------------------------------------------- defects

def apply_defect(rng: random.Random, kind: str, p: Problem, other: Problem) -> tuple[str, str]:
    """(prompt, gold) of problem `p` with defect `kind`; `other` is the source of a near-duplicate.
    wrong_gold: a plausible wrong gold; missing_info: one number replaced by a vague word (unanswerable);
    garbled: truncated and with two words swapped; near_duplicate: `other` with one word changed, its gold;
    off_distribution: text that is not a math problem, with an arbitrary number as gold."""
    if kind == "wrong_gold":
        return p.prompt, str(slip(rng, int(p.answer)))
    if kind == "missing_info":
        return _missing_info(rng, p), p.answer
    if kind == "garbled":
        return _garbled(rng, p.prompt), p.answer
    if kind == "near_duplicate":
        return _near_duplicate(rng, other.prompt), other.answer
    if kind == "off_distribution":
        text = rng.choice(OFF_TEXT).format(name=rng.choice(NAMES), obj=rng.choice(OBJECTS))
        return text, str(rng.randint(0, 99))
    raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECTS}")


def _missing_info(rng: random.Random, p: Problem) -> str:
    """Problem `p`'s prompt with one number the answer needs (:func:`_needed_numbers`) replaced by a vague word; a
    sequence keeps only its first term (one vague term leaves its rule readable from the others). in: rng, problem;
    out: the prompt."""
    words = p.prompt.split(" ")
    idx = _needed_numbers(words, p)
    for i in (idx[1:] if p.topic == "sequence" else [rng.choice(idx)]):
        words[i] = rng.choice(VAGUE)
    return " ".join(words)


def _needed_numbers(words: list[str], p: Problem) -> list[int]:
    """The positions of the numbers in prompt `words` of problem `p` that its content key holds (not a distractor's
    number: :func:`_distractor_number`), or of every number when none is. in: the prompt's words, problem; out:
    word positions."""
    needed = {v for v in p.key if isinstance(v, int)}  # a distractor's number is not in the content key
    idx = [i for i, w in enumerate(words)
           if w.lstrip("-").isdigit() and int(w) in needed and not _distractor_number(words, i, p)]
    return idx or [i for i, w in enumerate(words) if w.lstrip("-").isdigit()]


def _garbled(rng: random.Random, prompt: str) -> str:
    """`prompt` cut to 40-70% of its words (at least 3) with two neighbouring words swapped. in: rng, prompt; out:
    the garbled prompt."""
    words = prompt.split(" ")
    cut = words[: max(3, int(len(words) * rng.uniform(0.4, 0.7)))]
    i = rng.randrange(len(cut) - 1)
    cut[i], cut[i + 1] = cut[i + 1], cut[i]
    return " ".join(cut)


def _near_duplicate(rng: random.Random, prompt: str) -> str:
    """`prompt` with one name or object changed to another of its kind, or, holding neither, with "Please" put
    before it (its first word lower-cased unless a name). in: rng, the source problem's prompt; out: the prompt."""
    ow = prompt.split(" ")
    swap = [i for i, w in enumerate(ow) if w in NAMES or w in OBJECTS]
    if not swap:
        return " ".join(["Please", ow[0].lower() if ow[0][0].isupper() and ow[0] not in NAMES else ow[0], *ow[1:]])
    i = rng.choice(swap)
    ow[i] = rng.choice([w for w in (NAMES if ow[i] in NAMES else OBJECTS) if w != ow[i]])
    return " ".join(ow)


def _distractor_number(words: list[str], i: int, p: Problem) -> bool:
    """Whether word `i` of story `p` is the number of its distractor ("<friend> has <n> <objects> ."), which can
    equal a number the answer needs: only the story's subject (p.key[1]) "has" a number the answer reads."""
    return p.topic == "word" and i >= 2 and words[i - 1] == "has" and words[i - 2] != p.key[1]


# ---------------------------------------------------------------------------------------------- splits

MAX_MISSES = 3000  # consecutive draws of a (topic, level) cell that hit taken content before it counts as exhausted
POOL_REMEDY = "lower testbed.n_pool / testbed.n_eval or move testbed.pool_level_mix towards higher levels"
PRETRAIN_REMEDY = ("the pool and eval splits hold all of it at the corpus's levels: lower testbed.n_pool / "
                   "testbed.n_eval or move testbed.pretrain_level_mix towards higher levels")
FRESH_REMEDY = "ask for fewer fresh problems or move their level mix towards higher levels"


def _draw(cfg: TestbedConfig, rng: random.Random, mix: list[float], n: int, slip: list[float] | None,
          taken: set[tuple], unique: bool = True, remedy: str = POOL_REMEDY) -> list[Problem]:
    """n problems whose content keys are not in `taken`; topics uniform, levels by `mix`. With `unique` (pool,
    eval) every key is new and joins `taken`; without it (the pretraining corpus) keys may repeat inside the
    draw, as in a real corpus, but never come from `taken`. A (topic, level) cell whose content runs out
    (small level-1 spaces) is dropped from the draw and the others fill the rest; if every cell runs out the
    error says how to fix the sizes (`remedy`: the settings of this draw)."""
    out: list[Problem] = []
    cells = {(t, lv): w for t in cfg.topics for lv, w in enumerate(mix, start=1) if w > 0}
    misses: dict[tuple[str, int], int] = {}
    while len(out) < n:
        if not cells:
            raise ValueError(f"the world has run out of distinct content after {len(out)} of {n} problems: {remedy}")
        keys = list(cells)
        topic, level = rng.choices(keys, weights=[cells[k] for k in keys])[0]
        p = make_problem(rng.getrandbits(48), topic, level, slip[level - 1] if slip else 0.0)
        if p.key in taken:
            misses[(topic, level)] = misses.get((topic, level), 0) + 1
            if misses[(topic, level)] >= MAX_MISSES:
                del cells[(topic, level)]
            continue
        misses[(topic, level)] = 0
        if unique:
            taken.add(p.key)
        out.append(p)
    return out


def _frame(problems: list[Problem], split: str, prompts: list[str] | None = None, answers: list[str] | None = None,
           defects: list[str] | None = None, labelled: list[bool] | None = None) -> pl.DataFrame:
    """The ingest-format frame of a split (prompts/answers/defects override the clean problem's). An
    off-distribution row is not a math problem: its topic and difficulty are null, not its source problem's."""
    n = len(problems)
    defects = defects or ["none"] * n
    math = [d != "off_distribution" for d in defects]
    return pl.DataFrame({
        "id": [f"{split}-{i:06d}" for i in range(n)],
        "prompt": prompts or [p.prompt for p in problems],
        "answer": answers or [p.answer for p in problems],
        "topic": pl.Series([p.topic if m else None for p, m in zip(problems, math, strict=True)], dtype=pl.String),
        "difficulty": pl.Series([float(p.level) if m else None for p, m in zip(problems, math, strict=True)],
                                dtype=pl.Float64),
        "quality": [0.0 if d != "none" else 1.0 for d in defects],
        "defect": defects,
        "solution": [p.solution for p in problems],
        "split": [split] * n,
        "labelled": labelled or [False] * n,
        "n_steps": [p.n_steps for p in problems],
        "content": [" ".join(map(str, p.key)) for p in problems],
    })


def defect_counts(n_bad: int, shares: dict[str, float]) -> tuple[list[str], list[int]]:
    """How many pool rows carry each defect kind: `n_bad` split in proportion to `shares` by largest remainder
    (ties: the kind first in sorted order), so the counts sum to exactly n_bad (rounding each kind on its own
    could exceed the pool, or miss defect_share). Kinds are sorted: the config's key sorts the mapping, so the
    world must not see its order. in: number of defective rows, {kind: relative share}; out: (kinds, counts)."""
    kinds = sorted(shares)
    exact = [n_bad * shares[k] / sum(shares.values()) for k in kinds]
    counts = [int(e) for e in exact]
    by_rest = sorted(range(len(kinds)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_rest[: n_bad - sum(counts)]:
        counts[i] += 1
    return kinds, counts


def generate_world(cfg: TestbedConfig) -> dict[str, pl.DataFrame]:
    """The three splits {pretrain, pool, eval} as ingest-format frames, a pure function of `cfg`."""
    rng = random.Random(cfg.seed)
    taken: set[tuple] = set()
    pool = _draw(cfg, rng, cfg.pool_level_mix, cfg.n_pool, None, taken)
    evl = _draw(cfg, rng, cfg.pool_level_mix, cfg.n_eval, None, taken)
    pre = _draw(cfg, rng, cfg.pretrain_level_mix, cfg.n_pretrain, cfg.pretrain_slip, taken, False, PRETRAIN_REMEDY)
    kinds, counts = defect_counts(round(cfg.defect_share * cfg.n_pool), cfg.defect_kinds)
    bad_idx = rng.sample(range(cfg.n_pool), sum(counts))
    defects = ["none"] * cfg.n_pool
    for i, kind in zip(bad_idx, [k for k, c in zip(kinds, counts, strict=True) for _ in range(c)], strict=True):
        defects[i] = kind
    prompts, answers = [p.prompt for p in pool], [p.answer for p in pool]
    clean = [j for j, kind in enumerate(defects) if kind == "none"]
    for i, kind in enumerate(defects):
        if kind != "none":
            other = pool[rng.choice(clean)] if clean else pool[i]
            prompts[i], answers[i] = apply_defect(rng, kind, pool[i], other)
            if kind == "near_duplicate":
                pool[i] = other
    labelled = [rng.random() < cfg.labelled_share for _ in pool]
    return {
        "pretrain": _frame(pre, "pretrain"),
        "pool": _frame(pool, "pool", prompts, answers, defects, labelled),
        "eval": _frame(evl, "eval"),
    }


def fresh_problems(cfg: TestbedConfig, world: dict[str, pl.DataFrame], n: int, level_mix: list[float],
                   seed: int, exclude: set[tuple] | None = None) -> pl.DataFrame:
    """`n` clean problems whose content appears in no split of `world` (nor in `exclude`, which grows): more
    RL prompts or a larger held-out set from the same generator, e.g. for a benchmark that must not repeat a
    prompt. in: config, world frames, count, level shares, seed, keys to avoid; out: an ingest-format frame."""
    taken = set() if exclude is None else exclude
    for df in world.values():
        taken |= {_content_key(c) for c in df["content"].to_list()}
    problems = _draw(cfg, random.Random(seed), level_mix, n, None, taken, remedy=FRESH_REMEDY)
    return _frame(problems, f"fresh{seed}")


def _content_key(text: str) -> tuple:
    """The content key tuple back from a frame's `content` column (space-joined key parts)."""
    return tuple(int(v) if v.lstrip("-").isdigit() else v for v in text.split(" "))


def write_world(world: dict[str, pl.DataFrame], out_dir: Path) -> None:
    """Write each split as `<out_dir>/world/<split>.parquet`."""
    (out_dir / "world").mkdir(parents=True, exist_ok=True)
    for split, df in world.items():
        df.write_parquet(out_dir / "world" / f"{split}.parquet")


def read_world(out_dir: Path) -> dict[str, pl.DataFrame]:
    """The world write_world wrote to `out_dir` (a testbed artifact folder): {split: frame} for pretrain,
    pool and eval."""
    return {split: pl.read_parquet(out_dir / "world" / f"{split}.parquet", glob=False)
            for split in ("pretrain", "pool", "eval")}


def build_testbed(cfg: TestbedConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """The testbed stage: write `world/{pretrain,pool,eval}.parquet`, pretrain the policy LM into `lm/`.
    in: config, output folder; out: summary {rows per split, pretrain seconds, greedy accuracy per level}."""
    from saerl.policy_lm import train_policy_lm

    out_dir = Path(out_dir)
    world = generate_world(cfg)
    write_world(world, out_dir)
    lm = train_policy_lm(cfg, world, out_dir / LM_FOLDER, progress)
    return {"rows": {k: v.height for k, v in world.items()}, **lm}
