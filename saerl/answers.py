"""How the held-out evaluation reads a completion's final answer (eval.answer_extraction).

- ``boxed`` (the default): the verifier's own reading, :func:`saerl.verify.extract_final_answer` (the last
  ``\\boxed{}`` or ``####``); a completion with neither has no answer and is scored wrong.
- ``boxed_or_last``: that, and for a completion with neither, the answer Qwen2.5-Math's evaluation and lm-eval's
  flexible extract read there (:func:`fallback_answer`): what follows the last 'the (final) answer is', else the
  completion's last number. The answer read so is judged by the verifier's own comparison, as the text
  ``#### <answer>`` (:func:`held_out_reading`), so both modes compare alike. A completion cut at the generation limit
  (no end of sequence) is not read by its last number: that is whatever it was writing when cut ('48 / 2 = 2' on its
  way to 24); its box, '####' or 'the answer is' written before the cut still counts.

Only the held-out evaluation reads so (the heldout stage, :func:`saerl.evaluate.evaluate_loaded`, and the in-training
curve, :class:`saerl.rl.EvalCallback`): the training reward (:class:`saerl.rl.CorrectnessReward`) and the label
stage's rollouts keep the verifier's reading, so a policy is never rewarded for an answer it did not box.
"""

from __future__ import annotations

import re
from collections import deque

from saerl.verify import MAX_SCAN_CHARS, VerifyResult, extract_final_answer, fold_unicode, verify_batch

BOXED = "boxed"  # eval.answer_extraction's default: the verifier's reading alone
BOXED_OR_LAST = "boxed_or_last"  # the verifier's reading, else the answer phrase, else the last number
FALLBACK = "fallback"  # the per-sample column (eval.parquet) saying the fallback read the answer (boxed_or_last only)

# 'The answer is 18', 'the final answer is: $18$' (case aside): the last one names the answer
_ANSWER_PHRASE = re.compile(r"(?i)\b(?:final\s+)?answer\s+is\b\s*:?")
# a sentence's end after the answer ('18. I hope it is correct'): a period before a space or the end, not a decimal
_SENTENCE_END = re.compile(r"\.(?=\s|$)")
_MINUS = "-\u2212"  # a number's minus signs (_NUMBER): ASCII and U+2212 (fold_unicode keeps it; the verifier reads it)
# a number as the last-number rule reads it: digits with thousands commas ('1,000') or without, an optional decimal
# part, or a fraction of two integers as fold_unicode writes a vulgar fraction ('½' -> '\frac{1}{2}'); a minus sign
# (not one between two terms: '3-5' ends on 5)
_NUMBER = re.compile(r"[-\u2212]?(?:\\frac\{\d+\}\{\d+\}|(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)")
_MARKER = "#### "  # how an answer the fallback read is handed to the verifier: as a '####' answer


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last match of `pattern` in `text`, or None. in: pattern, text; out: the match."""
    return next(iter(deque(pattern.finditer(text), maxlen=1)), None)


def _phrase_answer(tail: str) -> str | None:
    """What follows the last 'the (final) answer is' in `tail`, to the end of its sentence (its first non-empty
    line), or None when there is no such phrase or nothing follows it. in: text; out: the answer text or None."""
    last = _last_match(_ANSWER_PHRASE, tail)
    if last is None:
        return None
    rest = tail[last.end():].lstrip()
    line = rest.split("\n", 1)[0]
    answer = _SENTENCE_END.split(line, maxsplit=1)[0].strip()
    return answer or None


def _last_number(tail: str) -> str | None:
    """The last number in `tail` (_NUMBER), its minus sign dropped where it stands between two terms ('3-5' -> 5);
    None when it has none. in: text; out: the number's text or None."""
    last = _last_match(_NUMBER, tail)
    if last is None:
        return None
    number = last.group()
    before = tail[last.start() - 1] if last.start() else ""
    return number[1:] if number[0] in _MINUS and (before.isalnum() or before in ")]}") else number


def fallback_answer(text: str, ended: bool = True) -> str | None:
    """The answer of a completion that boxed none, as the community's math harnesses read it: what follows the last
    'the (final) answer is' (Qwen2.5-Math's evaluation; 'The answer is 18.' -> '18'), else the last number in it
    (lm-eval's flexible extract; 'so x = 3 ... 42 apples' -> '42'); None when it has neither. A completion cut at the
    generation limit (`ended` False) gets no last number: it is what was being written at the cut, not an answer.
    Reads the same last MAX_SCAN_CHARS characters the verifier does, Unicode math folded first as the verifier folds
    it (saerl.verify.fold_unicode: '−4' keeps its sign, '½' is '\\frac{1}{2}'). in: completion, whether it ended (at
    an end-of-sequence id); out: the answer text or None."""
    if not isinstance(text, str) or not text:
        return None
    tail = fold_unicode(text[-MAX_SCAN_CHARS:])
    return _phrase_answer(tail) or (_last_number(tail) if ended else None)


def held_out_reading(text: str, extraction: str, ended: bool = True) -> tuple[str, bool]:
    """The text the verifier judges for one held-out completion under eval.answer_extraction `extraction`, and
    whether the fallback read its answer: the completion itself where the verifier finds a final answer in it (a
    box or '####' always wins) or under 'boxed'; else under 'boxed_or_last' '#### <answer>' of
    :func:`fallback_answer` where it finds one (for a completion cut at the limit, `ended` False, the answer phrase
    alone). in: completion, extraction, whether it ended; out: (text to judge, fallback used)."""
    if extraction == BOXED or extract_final_answer(text) is not None:
        return text, False
    answer = fallback_answer(text, ended)
    return (text, False) if answer is None else (_MARKER + answer, True)


def judge_held_out(texts: list[str], golds: list[str], timeout_s: float, extraction: str = BOXED,
                   ended: list[bool] | None = None) -> tuple[list[VerifyResult], list[bool]]:
    """Each held-out completion judged against its gold by :func:`saerl.verify.verify_batch`, its answer read by
    `extraction` (:func:`held_out_reading`). in: completions, golds, the verifier's bound per answer,
    eval.answer_extraction, whether each completion ended (saerl.policy_lm.Completions.ended; None = every one did);
    out: (results, whether the fallback read each answer)."""
    if ended is not None and len(ended) != len(texts):
        raise ValueError(f"judge_held_out: {len(ended)} ended flags for {len(texts)} completions: pass generate's "
                         "Completions.ended for the same completions")
    flags = [True] * len(texts) if ended is None else ended
    read = [held_out_reading(t, extraction, e) for t, e in zip(texts, flags, strict=True)]
    return verify_batch([r for r, _ in read], golds, timeout_s), [f for _, f in read]
