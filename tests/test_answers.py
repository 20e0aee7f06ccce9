"""eval.answer_extraction: the held-out evaluation's opt-in reading of an unboxed final answer (saerl.answers)."""

from types import SimpleNamespace

import polars as pl
import pytest

from saerl.answers import BOXED, BOXED_OR_LAST, fallback_answer, held_out_reading, judge_held_out


@pytest.mark.parametrize(("text", "answer"), [
    ("The answer is 18.", "18"),
    ("so x = 3 and y = 5, which leaves 42 apples", "42"),
    ("First 3 + 4 = 7. The final answer is: $7$. I hope it is correct.", "$7$"),
    ("the answer is 12, then I checked again: The answer is 14", "14"),  # the last phrase
    ("The answer is\n\n  2.5 litres", "2.5 litres"),  # its first non-empty line
    ("in all 1,000 people came", "1,000"),
    ("the temperature fell to -4 overnight", "-4"),
    ("from 3-5", "5"),  # a minus between two terms is no sign
    ("He paid 3.50 dollars.", "3.50"),
    ("no number at all", None),
    ("", None),
])
def test_the_fallback_reads_the_answer_phrase_else_the_last_number(text, answer):
    assert fallback_answer(text) == answer


@pytest.mark.parametrize(("text", "answer", "gold"), [
    ("the temperature fell to \u22124 overnight", "\u22124", "-4"),  # U+2212 MINUS SIGN: the sign was dropped
    ("from 3\u22125", "5", "5"),  # a Unicode minus between two terms is no sign either
    ("so x = \u00bd", "\\frac{1}{2}", "1/2"),  # a vulgar fraction read no number at all
    ("it takes 2\u00bd hours", "\\frac{5}{2}", "2.5"),
    ("x = -\\frac{3}{4}", "-\\frac{3}{4}", "-3/4"),
])
def test_the_fallback_reads_unicode_math_as_the_verifier_does(text, answer, gold):
    """fallback_answer read '\u22124' (the verifier reads it as -4) as 4, judged wrong against -4, and '\u00bd' as no
    number: it folds the text as the verifier folds an answer (saerl.verify.fold_unicode) before reading it."""
    assert fallback_answer(text) == answer
    (result,), _ = judge_held_out([text], [gold], 5.0, BOXED_OR_LAST)
    assert result.status == "correct", result


def test_a_boxed_or_hashes_answer_wins_over_a_later_number_and_boxed_mode_reads_as_before():
    boxed = "so \\boxed{5} apples, which took 7 minutes"
    assert held_out_reading(boxed, BOXED_OR_LAST) == (boxed, False)
    assert held_out_reading("#### 5\nthen 9", BOXED_OR_LAST) == ("#### 5\nthen 9", False)
    assert held_out_reading("The answer is 18.", BOXED) == ("The answer is 18.", False)  # the default: unchanged
    assert held_out_reading("The answer is 18.", BOXED_OR_LAST) == ("#### 18", True)
    assert held_out_reading("no number", BOXED_OR_LAST) == ("no number", False)


def test_the_answer_read_is_judged_by_the_verifiers_own_comparison():
    """Under 'boxed' an unboxed answer is no answer (as the verifier reads it); under 'boxed_or_last' it is compared
    as the verifier compares a '####' answer (18.0 = 18, a thousands separator, a unit word), and a completion the
    fallback finds nothing in stays no answer."""
    texts = ["The answer is 18.", "so 1,000 people", "\\boxed{5} then 7", "nothing here", "The answer is 18.00 apples"]
    golds = ["18", "1000", "5", "3", "18"]
    results, used = judge_held_out(texts, golds, 5.0)
    assert [r.status for r in results] == ["no_answer", "no_answer", "correct", "no_answer", "no_answer"]
    assert used == [False] * 5
    results, used = judge_held_out(texts, golds, 5.0, BOXED_OR_LAST)
    assert [r.status for r in results] == ["correct", "correct", "correct", "no_answer", "correct"]
    assert used == [True, True, False, False, True]


def test_the_training_reward_never_reads_an_unboxed_answer_while_the_held_out_curve_may(monkeypatch):
    """eval.answer_extraction is the held-out evaluation's alone: the correctness reward (and the format reward)
    score 'The answer is 18.' as no answer whatever it says, so RL never rewards an answer the policy did not box;
    the in-training curve under 'boxed_or_last' reads it as the final evaluation does."""
    from saerl import policy_lm
    from saerl.rl import CorrectnessReward, EvalCallback, format_reward

    unboxed = [[{"role": "assistant", "content": "The answer is 18."}], "so it is 18 apples"]
    assert CorrectnessReward()(unboxed, ["18", "18"]) == [0.0, 0.0]
    assert format_reward(unboxed) == [0.0, 0.0]
    monkeypatch.setattr(policy_lm, "generate", lambda model, tok, prompts, *a, **k: policy_lm.Completions(
        ["The answer is 18.", "\\boxed{4}"], [5, 3], [True, True]))
    held = pl.DataFrame({"id": ["a", "b"], "prompt": ["p", "q"], "answer": ["18", "4"]})
    curves = {}
    for mode in (BOXED, BOXED_OR_LAST):
        evals = EvalCallback({"h": held}, None, 1, 8, 2, extraction=mode)
        evals._run(SimpleNamespace(training=False), 0)
        curves[mode] = [p["correct"] for p in evals.problems]
    assert curves == {BOXED: [False, True], BOXED_OR_LAST: [True, True]}


def test_a_completion_cut_at_the_limit_is_not_read_by_its_last_half_written_number():
    """'48 / 2 = 2', cut while writing 24, was read under 'boxed_or_last' as the answer 2 and scored right against a
    gold of 2. A completion cut at the generation limit (ended False) gets no last-number reading; the same text that
    ended is read as before, and a box, '####' or 'the answer is' written before the cut still counts."""
    cut = "Natalia sold 48 clips in April. In May she sold 48 / 2 = 2"
    (ended,), _ = judge_held_out([cut], ["2"], 5.0, BOXED_OR_LAST, [True])
    (was_cut,), used = judge_held_out([cut], ["2"], 5.0, BOXED_OR_LAST, [False])
    assert ended.status == "correct" and was_cut.status == "no_answer" and used == [False]
    before = ["The answer is 24. Then 48 / 2 = 2", "so \\boxed{24} and 48 / 2 = 2", "#### 24\nthen 48 / 2 = 2"]
    results, used = judge_held_out(before, ["24"] * 3, 5.0, BOXED_OR_LAST, [False] * 3)
    assert [r.status for r in results] == ["correct"] * 3 and used == [True, False, False]
    assert held_out_reading(cut, BOXED_OR_LAST, ended=False) == (cut, False)
    with pytest.raises(ValueError, match="1 ended flags for 2 completions"):
        judge_held_out([cut, cut], ["2", "2"], 5.0, BOXED_OR_LAST, [False])


def test_the_held_out_evaluation_and_the_curve_pass_whether_each_completion_was_cut(monkeypatch):
    """evaluate_loaded (the heldout stage) and the in-training curve judged a cut completion by its last number: each
    now hands generate's ended flags to judge_held_out, so '48 / 2 = 2' cut at the limit is not right against 2."""
    from saerl import policy_lm
    from saerl.config import EvalConfig
    from saerl.evaluate import evaluate_loaded
    from saerl.rl import EvalCallback

    monkeypatch.setattr(policy_lm, "generate", lambda model, tok, prompts, *a, **k: policy_lm.Completions(
        ["48 / 2 = 2", "48 / 2 = 2"], [9, 7], [False, True]))
    held = pl.DataFrame({"id": ["cut", "ended"], "prompt": ["p", "q"], "answer": ["2", "2"]})
    frame = evaluate_loaded(None, None, {"h": held}, EvalConfig(k_samples=1, answer_extraction=BOXED_OR_LAST), 9, 0)
    assert frame["status"].to_list() == ["no_answer", "correct"] * 2  # the greedy pass, then the sample
    assert frame["truncated"].to_list() == [True, False] * 2
    evals = EvalCallback({"h": held}, None, 1, 8, 2, extraction=BOXED_OR_LAST)
    evals._run(SimpleNamespace(training=False), 0)
    assert [p["correct"] for p in evals.problems] == [False, True]
