"""Evaluation: batched generation on tiny LMs, summaries, steps-to-target, arm comparisons with known intervals."""

import math

import numpy as np
import polars as pl
import pytest
from tiny import overfit, tiny_model, tiny_tokenizer

from saerl.config import EvalConfig
from saerl.evaluate import (
    REACHABLE,
    _interval,
    _problem_part,
    compare_arms,
    completion_shares,
    evaluate_loaded,
    evaluate_policy,
    final_accuracy,
    format_comparison,
    generated_prompts,
    problem_scores,
    problem_set_notes,
    reachable_ids,
    reaches,
    select_problems,
    set_size,
    steps_ratio_interval,
    steps_to_target,
    summarize_eval,
    training_signal,
    truncation_notes,
    with_reachable,
    worse_than_base_notes,
)
from saerl.policy_lm import Completions, generate, load_policy, save_tokenizer

SETS = {"easy": pl.DataFrame({"id": ["e1", "e2", "e3"], "prompt": ["what is 3 + 4 ?", "what is 1 + 1 ?", "what is 2 + 2 ?"],
                              "answer": ["7", "2", "4"], "difficulty": [1, 1, 2]})}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved_policy(tmp_path_factory):
    """A tiny Llama (the testbed's model type: it reloads with its own tokenizer) that knows e1 and e2."""
    tok = tiny_tokenizer()
    model = tiny_model(tok, "llama")
    overfit(model, tok, [("what is 3 + 4 ?", "#### 7"), ("what is 1 + 1 ?", "#### 2"), ("what is 2 + 2 ?", "what")])
    out = tmp_path_factory.mktemp("policy")
    model.save_pretrained(out)
    save_tokenizer(tok, out)
    return out


def test_evaluate_policy_loads_on_the_device_given(monkeypatch):
    """evaluate_policy had no device and always loaded on the CPU (load_policy's default), where the heldout stage
    loads on runtime.device: a notebook on a GPU box evaluated on the CPU, saying nothing. 'auto' by default, as
    the rest of the library (saerl.activations.pick_device)."""
    import saerl.policy_lm as policy_lm

    seen = []
    monkeypatch.setattr(policy_lm, "load_policy",
                        lambda path, model_cfg=None, device="cpu": seen.append(device) or (1, 2))
    monkeypatch.setattr("saerl.evaluate.evaluate_loaded", lambda model, tok, *args, **kw: (model, tok))
    cfg = EvalConfig()
    assert evaluate_policy("p", SETS, cfg, 4, 0) == (1, 2) and seen == ["auto"]
    evaluate_policy("p", SETS, cfg, 4, 0, device="cuda")
    assert seen == ["auto", "cuda"]


def test_evaluate_policy_rows_statuses_and_determinism(saved_policy):
    cfg = EvalConfig(k_samples=2, temperature=1.0, batch_size=2)
    df = evaluate_policy(saved_policy, SETS, cfg, max_new_tokens=4, seed=0)
    assert df.columns[:6] == ["set", "id", "sample", "correct", "status", "completion_len"]
    assert df.height == 3 * 3 and sorted(df["sample"].unique().to_list()) == [0, 1, 2]
    greedy = {r["id"]: r for r in df.filter(pl.col("sample") == 0).iter_rows(named=True)}
    assert greedy["e1"]["correct"] and greedy["e2"]["correct"]
    assert greedy["e3"]["status"] == "no_answer" and not greedy["e3"]["correct"]
    assert greedy["e1"]["completion_len"] == 3 and not greedy["e1"]["truncated"]  # "####", "7", EOS
    assert df["completion_len"].is_between(1, 4).all() and set(df["status"]) <= {"correct", "wrong", "no_answer"}
    assert df["difficulty"].to_list()[:3] == ["1", "1", "2"]
    model, tok = load_policy(saved_policy)
    again = evaluate_loaded(model, tok, SETS, cfg, max_new_tokens=4, seed=0)
    assert again.equals(df)
    other = evaluate_loaded(model, tok, SETS, cfg, max_new_tokens=4, seed=1)
    assert other.filter(pl.col("sample") == 0).equals(df.filter(pl.col("sample") == 0))  # greedy does not sample


def test_each_pass_samples_at_the_eval_temperature_with_a_seed_of_its_own(monkeypatch):
    """Pass 0 is greedy; passes 1..k sample at eval.temperature, each from a seed of (run seed, pass) alone: the k
    passes differ, another run seed draws other samples, and pass j is the same whatever k is."""
    import saerl.policy_lm

    calls: list[tuple] = []

    def fake(model, tok, prompts, max_new_tokens, batch, temperature, seed, on_batch=None):
        calls.append((temperature, seed, batch, max_new_tokens))
        return Completions(["#### 7"] * len(prompts), [2] * len(prompts), [True] * len(prompts))

    monkeypatch.setattr(saerl.policy_lm, "generate", fake)
    out = evaluate_loaded(None, None, SETS, EvalConfig(k_samples=3, temperature=0.7, batch_size=5), 9, seed=0)
    assert [c[0] for c in calls] == [0.0, 0.7, 0.7, 0.7] and all(c[2:] == (5, 9) for c in calls)
    seeds = [c[1] for c in calls]
    assert len(set(seeds)) == 4
    assert out.filter(pl.col("id") == "e1")["correct"].all() and not out.filter(pl.col("id") != "e1")["correct"].any()
    calls.clear()
    evaluate_loaded(None, None, SETS, EvalConfig(k_samples=1, temperature=0.7), 9, seed=0)
    assert [c[1] for c in calls] == seeds[:2]
    calls.clear()
    evaluate_loaded(None, None, SETS, EvalConfig(k_samples=3, temperature=0.7), 9, seed=1)
    assert not set(c[1] for c in calls[1:]) & set(seeds[1:])
    calls.clear()  # without the greedy pass (the reach probe's): the same sampled passes, nothing else
    sampled = evaluate_loaded(None, None, SETS, EvalConfig(k_samples=3, temperature=0.7, batch_size=5), 9, seed=0,
                              greedy=False)
    assert [c[:2] for c in calls] == [(0.7, s) for s in seeds[1:]]
    assert sampled.equals(out.filter(pl.col("sample") > 0))


def test_the_probe_pass_draws_from_a_seed_stream_no_run_seed_reaches(monkeypatch):
    """The reach probe (REACH_SEED = 1) drew its samples from _seed_for(1, j), the seeds every training run of seed 1
    drew its scored samples from: a policy RL barely moved re-drew the completions that chose its reachable stratum,
    and the stratum's gain over the base came from seed 1 alone. The probe draws from a stream of its own; every
    scored pass keeps its seeds (pinned: their outputs do not change)."""
    import saerl.policy_lm
    from saerl.evaluate import REACH_SEED, _seed_for

    k = 16
    probe = {_seed_for(REACH_SEED, j, probe=True) for j in range(1, k + 1)}
    scored = {_seed_for(s, j) for s in range(1000) for j in range(k + 1)}
    assert not probe & scored
    assert not {_seed_for(s, j, probe=True) for s in range(50) for j in range(k + 1)} & scored
    assert [_seed_for(0, j) for j in range(4)] == [2968811710, 3964924996, 3141116543, 2613022947]
    assert [_seed_for(1, j) for j in range(3)] == [1835504127, 1189033389, 1596810411]
    assert _seed_for(7, 5) == 1002604896
    calls: list[int] = []

    def fake(model, tok, prompts, max_new_tokens, batch, temperature, seed, on_batch=None):
        calls.append(seed)
        return Completions(["#### 7"] * len(prompts), [2] * len(prompts), [True] * len(prompts))

    monkeypatch.setattr(saerl.policy_lm, "generate", fake)
    cfg = EvalConfig(k_samples=3, temperature=0.7)
    evaluate_loaded(None, None, SETS, cfg, 9, seed=REACH_SEED, greedy=False, probe=True)
    assert calls == [_seed_for(REACH_SEED, j, probe=True) for j in (1, 2, 3)] and not set(calls) & scored
    calls.clear()
    evaluate_loaded(None, None, SETS, cfg, 9, seed=REACH_SEED)  # a trained policy of seed 1: as before
    assert calls == [1835504127, 1189033389, 1596810411, _seed_for(1, 3)]


@pytest.mark.parametrize("progress", [True, False])
def test_the_evaluation_shows_its_progress_naming_the_policy_and_set(monkeypatch, capsys, progress):
    """Held-out evaluation drew no bar (minutes per policy at 1.5B with k samples): with runtime.progress a bar per
    set counts the completions batch by batch, described by the policy and the set; without it, nothing is drawn."""
    import saerl.policy_lm

    def fake(model, tok, prompts, max_new_tokens, batch, temperature, seed, on_batch=None):
        for start in range(0, len(prompts), batch):  # generate's batches
            on_batch(len(prompts[start: start + batch]))
        return Completions(["#### 7"] * len(prompts), [2] * len(prompts), [True] * len(prompts))

    monkeypatch.setattr(saerl.policy_lm, "generate", fake)
    evaluate_loaded(None, None, SETS, EvalConfig(k_samples=2), 9, seed=0, progress=progress, label="saerl:0")
    err = capsys.readouterr().err
    assert ("evaluate saerl:0 on easy: 100%" in err and "9/9" in err) is progress, err  # 3 problems x 3 passes
    assert progress or not err


def test_truncated_means_no_eos_not_a_completion_that_ends_at_the_limit(saved_policy):
    """A completion whose EOS is the last token allowed ended on its own; one cut at the limit did not."""
    model, tok = load_policy(saved_policy)
    cfg = EvalConfig(k_samples=1, batch_size=2)
    exact = evaluate_loaded(model, tok, SETS, cfg, max_new_tokens=3, seed=0).filter(pl.col("sample") == 0)
    e1 = exact.filter(pl.col("id") == "e1").row(0, named=True)
    assert e1["completion_len"] == 3 and not e1["truncated"] and e1["correct"]  # "####", "7", EOS
    cut = evaluate_loaded(model, tok, SETS, cfg, max_new_tokens=1, seed=0)
    cut = cut.filter((pl.col("id") == "e1") & (pl.col("sample") == 0)).row(0, named=True)
    assert cut["truncated"] and cut["completion_len"] == 1
    texts, lens, ended = generate(model, tok, ["what is 3 + 4 ?"], 3, 1, 0.0, seed=0)
    assert (lens, ended) == ([3], [True])


def test_generation_stops_at_the_tokenizers_eos_as_rl_rollouts_do(saved_policy):
    """trl's rollouts end at the tokenizer's EOS as well as the generation_config's: so does the evaluation, even
    when the checkpoint's generation_config names another end token (before, it ran on past the EOS)."""
    model, tok = load_policy(saved_policy)
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<u>")  # not the tokenizer's EOS
    texts, lens, ended = generate(model, tok, ["what is 3 + 4 ?"], 6, 1, 0.0, seed=0)
    assert (lens, ended) == ([3], [True]) and texts[0].split() == ["####", "7"]  # "####", "7", EOS


def test_left_padded_batches_match_one_by_one_on_qwen2():
    tok = tiny_tokenizer()
    model = tiny_model(tok, "qwen2", seed=3)
    sets = {"s": pl.DataFrame({"id": ["a", "b", "c"], "prompt": ["what is 1 ?", "what is 2 + 3 + 4 + 5 ?", "1 + 1"],
                               "answer": ["1", "14", "2"]})}
    one = evaluate_loaded(model, tok, sets, EvalConfig(k_samples=1, batch_size=1), 6, seed=0)
    three = evaluate_loaded(model, tok, sets, EvalConfig(k_samples=1, batch_size=3), 6, seed=0)
    key = ["id", "status", "completion_len"]
    assert one.filter(pl.col("sample") == 0).select(key).equals(three.filter(pl.col("sample") == 0).select(key))


def test_select_problems_is_order_independent():
    df = pl.DataFrame({"id": [f"p{i}" for i in range(20)], "prompt": ["x"] * 20, "answer": ["1"] * 20})
    a = select_problems(df, 5)["id"].to_list()
    b = select_problems(df.reverse(), 5)["id"].to_list()
    assert len(a) == 5 and sorted(a) == sorted(b)
    assert select_problems(df, None).height == 20


def _samples(correct_greedy, correct_sampled, statuses=None, set_name="A"):
    rows = []
    for i, g in enumerate(correct_greedy):
        rows.append({"set": set_name, "id": f"q{i}", "sample": 0, "correct": bool(g), "status": "correct" if g else "wrong"})
        for j, c in enumerate(correct_sampled[i], start=1):
            rows.append({"set": set_name, "id": f"q{i}", "sample": j, "correct": bool(c), "status": "correct" if c else "wrong"})
    df = pl.DataFrame(rows)
    if statuses:
        df = df.with_columns(pl.Series("status", [statuses.get(k, s) for k, s in enumerate(df["status"])]))
    return df.with_columns(pl.lit(3).alias("completion_len"))


def test_summarize_eval_known_values():
    df = _samples([1, 1, 0, 0], [[1, 1], [1, 0], [0, 0], [0, 1]], statuses={8: "timeout"})
    s = summarize_eval(df).row(0, named=True)
    assert s["n"] == 4 and s["k"] == 2 and s["failures"] == 1
    assert s["greedy"] == 0.5 and s["greedy_se"] == pytest.approx(0.57735 / 2, abs=1e-5)
    assert s["mean_k"] == 0.5 and s["mean_k_se"] == pytest.approx(0.408248 / 2, abs=1e-5)
    assert s["pass_k"] == 0.75


def test_summarize_eval_gives_the_shares_of_completions_cut_and_unanswered():
    """eval.parquet recorded each completion's truncation and status, but no summary read them: a 0% caused by the
    generation limit read like a real 0%. summary.parquet has the share of all samples cut at the limit and with no
    final answer (null truncated share for a frame without the column)."""
    df = _samples([1, 0], [[1, 0], [0, 0]], statuses={1: "no_answer", 3: "no_answer", 4: "no_answer"})
    s = summarize_eval(df.with_columns(truncated=pl.Series([False, True, False, True, True, False])))
    assert s.row(0, named=True)["truncated"] == 0.5 and s.row(0, named=True)["no_answer"] == 0.5
    assert s.row(0, named=True)["cut_wrong"] == pytest.approx(1 / 3)  # q0's cut sample 1 is right: not counted
    bare = summarize_eval(df).row(0, named=True)
    assert bare["truncated"] is None and bare["cut_wrong"] is None and bare["no_answer"] == 0.5


def test_truncation_notes_name_the_fix_above_the_share_only():
    """A set where some arm's completions are cut at the limit (or give no final answer) in over
    eval.truncation_note_share gets a note naming the fix; a reachable stratum is a subset, noted through its set."""
    shares = pl.DataFrame({"set": ["A", "A", "B", "B", "C", "A:reachable"], "arm": ["base", "saerl"] * 3,
                           "truncated": [0.02, 0.3, 0.0, 0.01, 0.0, 0.9], "cut_wrong": [0.02, 0.25, 0.0, 0.01, 0.0, 0.9],
                           "no_answer": [0.02, 0.31, 0.4, 0.0, 0.0, 0.9]})
    a, b = truncation_notes(shares, 0.05, 512)
    assert a.startswith("held-out set A: of the completions of each arm (greedy and sampled, every seed), cut at the "
                        "512-token generation limit and not right: base 2%, saerl 25% (cut in all, with those that "
                        "wrote a right answer before the cut: base 2%, saerl 30%); with no final answer")
    assert a.endswith("raise eval.max_new_tokens (now 512; the heldout stage generates again, nothing is retrained)")
    assert b.startswith("held-out set B: of the completions of each arm (greedy and sampled, every seed), with no "
                        "final answer ('####' or \\boxed{}): base 40%, saerl 0%. These are scored wrong, so these "
                        "accuracies measure the answer format as much as solving: prompt the policy")
    assert truncation_notes(shares, 0.95, 512) == []


def test_completions_cut_after_a_right_answer_are_not_noted_as_scored_wrong():
    """The note said every completion cut at the generation limit was scored wrong, yet the verifier reads a box
    written before the cut: a policy that boxes 18 and rambles on to the limit scored 100% under a note saying its
    accuracy measured finishing within the limit. It counts the completions cut and not right; under
    eval.answer_extraction boxed_or_last a completion with no answer had not even a last number."""
    def frame(correct: list[bool], status: list[str]) -> pl.DataFrame:
        return pl.DataFrame({"set": "A", "arm": "saerl", "correct": correct, "status": status, "truncated": True})

    right = frame([True] * 4, ["correct"] * 4)
    assert completion_shares(right)["cut_wrong"].to_list() == [0.0]
    assert truncation_notes(completion_shares(right), 0.05, 9) == []
    half = frame([True, True, False, False], ["correct", "correct", "wrong", "no_answer"])
    (note,) = truncation_notes(completion_shares(half), 0.05, 9)
    assert note.startswith("held-out set A: of the completions of each arm (greedy and sampled, every seed), cut at the "
                           "9-token generation limit and not right: saerl 50% (cut in all, with those that wrote a "
                           "right answer before the cut: saerl 100%); with no final answer ('####' or \\boxed{}): "
                           "saerl 25%. These are scored wrong"), note
    (read,) = truncation_notes(completion_shares(half.with_columns(fallback=pl.lit(False))), 0.05, 9)
    assert "; with no answer (no \\boxed{} nor '####', and no 'the answer is X' nor any number): saerl 25%." in read


def test_problem_set_notes_name_the_set_and_the_policies_short_of_problems():
    """Held-out ingest bounds each gold's reading in time, so one heldout run can keep a problem another dropped: each
    arm's accuracy was then on its own list, unremarked."""
    one = _samples([1, 0, 1], [[1], [0], [1]])
    frames = [one.with_columns(arm=pl.lit(a), seed=pl.lit(0)) for a in ("base", "vanilla")]
    short = one.filter(pl.col("id") != "q2").with_columns(arm=pl.lit("saerl"), seed=pl.lit(1))
    assert problem_set_notes(pl.concat(frames)) == []
    stratum = short.with_columns(set=pl.lit("A" + REACHABLE))
    (note,) = problem_set_notes(pl.concat([*frames, short, stratum], how="diagonal_relaxed"))
    assert note.startswith("held-out set A: the policies were not all evaluated on the same problems (1 of the 3 "
                           "problems some policy was scored on is missing from another: saerl:1 lacks 1).")


@pytest.mark.parametrize(("n", "read", "text"), [
    (500, None, "(500 problems)"), (1319, (1319, 1319), "(1319 problems)"), (500, (1319, 1319), "(500 of 1319 problems)"),
    (2249, (2249, 2818), "(2249 readable of 2818 rows)"), (500, (2249, 2818), "(500 of 2249 readable of 2818 rows)"),
])
def test_a_sets_header_gives_the_share_of_its_file(n, read, text):
    """'set college_math (500 problems)' hid that the 500 were drawn (eval.max_problems) from the 2249 rows of 2818
    whose golds the verifier reads."""
    assert set_size(n, read) == text
    table = compare_arms(_samples([1, 0], [[1], [0]], set_name="s").with_columns(arm=pl.lit("vanilla"), seed=pl.lit(0))
                         .vstack(_samples([1, 1], [[1], [1]], set_name="s").with_columns(arm=pl.lit("saerl"), seed=pl.lit(0))))
    assert format_comparison(table, {"s": (4, 9)}).splitlines()[0] == "set s (2 of 4 readable of 9 rows)"


def test_summarize_eval_by_a_column_some_sets_lack():
    """A set without difficulty labels has null difficulty in the stacked frame (diagonal concat): its group lost its
    mean_k, pass_k and failures (null keys do not match in a join) and showed k = 0."""
    labelled = _samples([1, 0], [[1, 0], [0, 0]]).with_columns(pl.lit("1").alias("difficulty"))
    unlabelled = _samples([1, 1], [[1, 1], [0, 1]], set_name="other", statuses={2: "error"})
    df = pl.concat([labelled, unlabelled], how="diagonal_relaxed")
    s = summarize_eval(df, ("set", "difficulty")).filter(pl.col("set") == "other").row(0, named=True)
    assert s["difficulty"] is None and s["k"] == 2 and s["failures"] == 1
    assert s["mean_k"] == 0.75 and s["pass_k"] == 1.0

def test_steps_to_target_default_target_ratio_and_never_reached():
    def arm(name, seeds):
        return [{"arm": name, "seed": s, "step": st, "accuracy": a} for s, accs in enumerate(seeds)
                for st, a in zip([0, 10, 20], accs, strict=True)]

    curve = pl.DataFrame(arm("vanilla", [[.1, .3, .5], [.1, .4, .5]]) + arm("saerl", [[.2, .5, .6], [.1, .6, .6]])
                         + arm("never", [[.1, .2, .3], [.1, .2, .6]]))
    out = steps_to_target(curve)
    by = {(r["arm"], r["seed"]): r for r in out.iter_rows(named=True)}
    assert out["target"][0] == pytest.approx(0.5)
    assert by[("vanilla", 0)]["steps"] == 20 and by[("saerl", 1)]["steps"] == 10
    assert by[("saerl", 0)]["ratio"] == pytest.approx(0.5) and by[("vanilla", 0)]["ratio"] == pytest.approx(1.0)
    assert by[("never", 0)]["steps"] is None and not by[("never", 0)]["reached"] and by[("never", 1)]["steps"] == 20
    assert by[("never", 1)]["mean_steps"] is None and by[("never", 1)]["ratio"] is None  # one seed never got there
    explicit = {(r["arm"], r["seed"]): r["steps"] for r in steps_to_target(curve, 0.35).iter_rows(named=True)}
    assert explicit[("vanilla", 0)] == 20 and explicit[("vanilla", 1)] == 10


def test_steps_to_target_reads_the_mean_curve_when_a_seed_ends_below_the_target():
    # vanilla's seeds end at .4 and .6: target .5, which seed 0 never reaches; the mean curve (.1, .4, .5) does
    rows = [("vanilla", 0, [.1, .3, .4]), ("vanilla", 1, [.1, .5, .6]), ("saerl", 0, [.1, .5, .5]), ("saerl", 1, [.1, .5, .6])]
    curve = pl.DataFrame([{"arm": a, "seed": s, "step": st, "accuracy": acc} for a, s, accs in rows
                          for st, acc in zip([0, 10, 20], accs, strict=True)])
    out = steps_to_target(curve)
    by = {(r["arm"], r["seed"]): r for r in out.iter_rows(named=True)}
    assert not by[("vanilla", 0)]["reached"] and by[("vanilla", 1)]["steps"] == 10
    assert by[("vanilla", 0)]["mean_steps"] == 20 and by[("saerl", 0)]["mean_steps"] == 10
    assert by[("saerl", 1)]["ratio"] == pytest.approx(0.5)
    # a step only some seeds evaluated (a resumed or shorter run) does not count for the mean curve
    partial = pl.concat([curve, pl.DataFrame([{"arm": "saerl", "seed": 0, "step": 5, "accuracy": 0.9}])])
    assert steps_to_target(partial).filter(pl.col("arm") == "saerl")["mean_steps"][0] == 10


def test_the_default_target_is_the_references_final_accuracy_not_its_peak():
    """vanilla peaks at .6 (step 10) and ends at .5: the default target is .5, which saerl (.5 at step 10) reaches
    when vanilla does (ratio 1), on the point estimate and in every resample of the interval; its peak would have
    set .6, reached by saerl at step 20 only."""
    n = 10
    vanilla = [[0] * n, [1] * 6 + [0] * 4, [1] * 5 + [0] * 5]  # .0 / .6 / .5: the final 5 are among the peak's 6
    saerl = [[0] * n, [1] * 5 + [0] * 5, [1] * n]
    problems = _problem_curves({("vanilla", 0): vanilla, ("saerl", 0): saerl})
    curve = problems.group_by("arm", "seed", "step").agg(pl.col("correct").mean().alias("accuracy"))
    by = {r["arm"]: r for r in steps_to_target(curve).iter_rows(named=True)}
    assert by["vanilla"]["target"] == pytest.approx(0.5)
    assert by["vanilla"]["mean_steps"] == 10 and by["saerl"]["mean_steps"] == 10
    assert by["saerl"]["ratio"] == pytest.approx(1.0)
    out = {r["arm"]: r for r in steps_ratio_interval(problems, n_boot=200).iter_rows(named=True)}
    assert out["saerl"]["ratio_ci_low"] == out["saerl"]["ratio_ci_high"] == pytest.approx(1.0)
    assert out["saerl"]["reach_share"] == 1.0


def test_steps_to_target_counts_the_prompts_generated_by_then():
    """With each run's generation cost, the arm-level row says how many prompts the arm generated for (mean over
    seeds) by the step its mean curve reached the target: under DAPO the arms spend differently per step."""
    rows = [("vanilla", 0, [.1, .3, .5]), ("vanilla", 1, [.1, .3, .5]), ("saerl", 0, [.1, .5, .6]),
            ("saerl", 1, [.1, .5, .6]), ("start", 0, [.5, .5, .5]), ("start", 1, [.5, .5, .5])]
    curve = pl.DataFrame([{"arm": a, "seed": s, "step": st, "accuracy": acc} for a, s, accs in rows
                          for st, acc in zip([0, 10, 20], accs, strict=True)])
    per_step = {"vanilla": [4.0, 4.0], "saerl": [2.0, 3.0], "start": [1.0, 1.0]}  # prompts per step, by seed
    cost = pl.DataFrame([{"arm": a, "seed": s, "step": st, "prompts": per_step[a][s] * st}
                         for a in per_step for s in (0, 1) for st in range(1, 21)])
    by = {r["arm"]: r for r in steps_to_target(curve, cost=cost).iter_rows(named=True)}
    assert by["vanilla"]["mean_steps"] == 20 and by["vanilla"]["mean_prompts"] == pytest.approx(80.0)
    assert by["saerl"]["mean_steps"] == 10 and by["saerl"]["mean_prompts"] == pytest.approx((20 + 30) / 2)
    assert by["saerl"]["prompts_ratio"] == pytest.approx(25 / 80) and by["vanilla"]["prompts_ratio"] == 1.0
    assert by["start"]["mean_steps"] == 0 and by["start"]["mean_prompts"] == 0.0  # at the target before training
    never = steps_to_target(curve, 0.9, cost=cost)
    assert never["mean_prompts"].null_count() == never.height and never["prompts_ratio"].null_count() == never.height
    assert "mean_prompts" not in steps_to_target(curve).columns
    no_cost = {r["arm"]: r for r in steps_to_target(curve, cost=cost.filter(pl.col("arm") != "saerl")).iter_rows(named=True)}
    assert no_cost["saerl"]["mean_prompts"] is None and no_cost["vanilla"]["mean_prompts"] == pytest.approx(80.0)


def test_generated_prompts_under_grpo_and_dapo():
    order = pl.DataFrame({"step": [1, 1, 2, 2, 3], "id": list("abcde")})
    grpo = pl.DataFrame({"step": [1, 2, 3], "reward": [0.1] * 3, "frac_reward_zero_std": [0.5] * 3})
    assert generated_prompts(grpo, order)["prompts"].to_list() == [2.0, 4.0, 5.0]  # the batch each step trained
    dapo = grpo.with_columns(pl.Series("dynamic_sampling/kept_groups", [2.0, 2.0, 1.0]),
                             pl.Series("dynamic_sampling/prompts_drawn", [3.0, 6.0, 4.0]))
    assert generated_prompts(dapo, order).to_dicts() == [{"step": 1, "prompts": 3.0}, {"step": 2, "prompts": 9.0},
                                                          {"step": 3, "prompts": 13.0}]


def _problem_curves(curves: dict[tuple[str, int], list[list[int]]]) -> pl.DataFrame:
    """Per-problem in-training results: {(arm, seed): [[correct per problem] per step 0, 10, 20, ...]}."""
    return pl.DataFrame([{"arm": arm, "seed": seed, "step": 10 * t, "id": f"q{i}", "correct": bool(c)}
                         for (arm, seed), steps in curves.items() for t, row in enumerate(steps)
                         for i, c in enumerate(row)])


def test_steps_ratio_interval_is_tight_for_a_clear_gap_and_wide_for_noise():
    n = 40
    rise_fast = [[0] * n, [1] * n, [1] * n]  # reaches 100% at step 10
    rise_slow = [[0] * n, [0] * n, [1] * n]  # at step 20
    clear = _problem_curves({("vanilla", 0): rise_slow, ("vanilla", 1): rise_slow,
                             ("saerl", 0): rise_fast, ("saerl", 1): rise_fast})
    out = {r["arm"]: r for r in steps_ratio_interval(clear, n_boot=200).iter_rows(named=True)}
    assert out["saerl"]["ratio_ci_low"] == out["saerl"]["ratio_ci_high"] == pytest.approx(0.5)
    assert out["saerl"]["reach_share"] == 1.0 and out["vanilla"]["ratio_ci_high"] == pytest.approx(1.0)
    # a fixed target nobody reaches: no ratio at all (not 0 or nan from dividing by a reference that never gets there)
    unreached = steps_ratio_interval(clear, target=1.01, n_boot=50).row(0, named=True)
    assert unreached["ratio_ci_low"] is None and unreached["reach_share"] == 0.0
    # one saerl seed is fast, the other never gets there: resampling seeds gives ratios from 0.5 to never (inf)
    mixed = _problem_curves({("vanilla", 0): rise_slow, ("vanilla", 1): rise_slow,
                             ("saerl", 0): rise_fast, ("saerl", 1): [[0] * n] * 3})
    out = {r["arm"]: r for r in steps_ratio_interval(mixed, n_boot=200).iter_rows(named=True)}
    assert out["saerl"]["ratio_ci_low"] == pytest.approx(0.5) and out["saerl"]["ratio_ci_high"] == float("inf")
    assert 0.1 < out["saerl"]["reach_share"] < 0.5  # only resamples drawing the fast seed twice reach 100%
    # problems are resampled too: a 1-problem lead is not a steady one
    rng = np.random.default_rng(0)
    noisy = _problem_curves({("vanilla", s): [[0] * n, rng.integers(0, 2, n).tolist(), [1] * (n // 2) + [0] * (n // 2)]
                             for s in (0, 1)} | {("saerl", s): [[0] * n, [1] * (n // 2 + 1) + [0] * (n // 2 - 1),
                                                                 [1] * (n // 2) + [0] * (n // 2)] for s in (0, 1)})
    out = {r["arm"]: r for r in steps_ratio_interval(noisy, n_boot=300).iter_rows(named=True)}
    assert out["saerl"]["ratio_ci_low"] <= 0.5 and out["saerl"]["ratio_ci_high"] >= 1.0
    assert steps_ratio_interval(noisy, reference_arm="absent").is_empty()
    assert steps_ratio_interval(noisy, n_boot=0).is_empty()


def test_steps_ratio_interval_is_reproducible_for_a_seed():
    """Same inputs and seed, in any row order: the same interval (the arms draw from one rng in a fixed order)."""
    rng = np.random.default_rng(1)
    curves = {(arm, s): [rng.integers(0, 2, 30).tolist() for _ in range(4)]
              for arm in ("vanilla", "saerl", "order_only", "filter_only", "a5", "a6") for s in (0, 1, 2)}
    problems = _problem_curves(curves)
    first = steps_ratio_interval(problems, n_boot=100, seed=3)
    for k in range(6):
        again = steps_ratio_interval(problems.sample(fraction=1.0, shuffle=True, seed=k), n_boot=100, seed=3)
        assert again.equals(first)


def test_steps_ratio_interval_reads_a_run_over_the_problems_it_scored():
    """A missing (run, step, problem) row was NaN in the pivot: that run's curve never reached the target at that step
    (one row moved saerl's interval from 0.5 to [0.5, 1.0]); a duplicate row crashed the pivot; runs sharing no
    problem divided by zero, and seeds sharing no eval step crashed. Now: a run's accuracy is over the problems it
    scored (as steps_to_target's), duplicates average, and no shared problem or step means no interval."""
    n = 40
    fast, slow = [[0] * n, [1] * n, [1] * n], [[0] * n, [0] * n, [1] * n]
    clear = _problem_curves({("vanilla", 0): slow, ("vanilla", 1): slow, ("saerl", 0): fast, ("saerl", 1): fast})
    gap = clear.filter(~((pl.col("arm") == "saerl") & (pl.col("seed") == 0) & (pl.col("step") == 10) & (pl.col("id") == "q5")))
    out = {r["arm"]: r for r in steps_ratio_interval(gap, n_boot=100).iter_rows(named=True)}
    assert out["saerl"]["ratio_ci_low"] == out["saerl"]["ratio_ci_high"] == pytest.approx(0.5)
    twice = pl.concat([clear, clear.filter((pl.col("arm") == "vanilla") & (pl.col("step") == 10))])
    assert steps_ratio_interval(twice, n_boot=50).equals(steps_ratio_interval(clear, n_boot=50))
    apart = clear.with_columns(pl.when(pl.col("arm") == "saerl").then(pl.col("id") + "x").otherwise(pl.col("id")).alias("id"))
    assert steps_ratio_interval(apart, n_boot=50).is_empty()
    staggered = clear.with_columns(pl.when((pl.col("arm") == "saerl") & (pl.col("seed") == 1)).then(pl.col("step") + 5)
                                   .otherwise(pl.col("step")).alias("step"))
    out = {r["arm"]: r for r in steps_ratio_interval(staggered, n_boot=50).iter_rows(named=True)}
    assert out["saerl"]["reach_share"] == 0.0 and out["vanilla"]["ratio_ci_low"] == pytest.approx(1.0)
    assert steps_ratio_interval(staggered, reference_arm="saerl", n_boot=50).is_empty()


def test_steps_ratio_interval_counts_a_problem_missing_at_a_shared_step_as_not_scored():
    """q2 is scored by every run, but each vanilla seed scored it only at a step the other seed lacks (5, 15): the
    pivot over the shared steps had no q2 column, and the interval crashed with ColumnNotFoundError. Now q2 is not
    scored at the shared steps (null), as a missing row is: vanilla reaches 100% at step 20, saerl at 10."""
    fast, slow = [[0, 0], [1, 1], [1, 1]], [[0, 0], [0, 0], [1, 1]]
    base = _problem_curves({("vanilla", 0): slow, ("vanilla", 1): slow, ("saerl", 0): fast, ("saerl", 1): fast})
    extra = pl.DataFrame([{"arm": arm, "seed": seed, "step": step, "id": "q2", "correct": True}
                          for arm, seed, step in [("vanilla", 0, 5), ("vanilla", 1, 15), ("saerl", 0, 10), ("saerl", 1, 10)]])
    problems = pl.concat([base, extra])
    out = {r["arm"]: r for r in steps_ratio_interval(problems, n_boot=200).iter_rows(named=True)}
    assert out["saerl"]["ratio_ci_low"] == out["saerl"]["ratio_ci_high"] == pytest.approx(0.5)
    assert out["vanilla"]["ratio_ci_low"] == out["vanilla"]["ratio_ci_high"] == pytest.approx(1.0)
    # the same as q2 written at vanilla's shared steps with no score (null)
    nulls = pl.DataFrame([{"arm": "vanilla", "seed": seed, "step": step, "id": "q2", "correct": None}
                          for seed in (0, 1) for step in (0, 10, 20)], schema=problems.schema)
    assert steps_ratio_interval(problems, n_boot=200).equals(steps_ratio_interval(pl.concat([problems, nulls]), n_boot=200))


def test_steps_to_target_with_a_null_final_reference_accuracy_has_no_target():
    """A null accuracy at the reference's last step raised a raw TypeError (float(None)); a NaN one already meant no
    target. Now a null is read as a NaN: no target, so no arm reaches it and there is no ratio."""
    curve = pl.DataFrame({"arm": ["vanilla", "vanilla", "saerl", "saerl"], "seed": [0] * 4, "step": [0, 10, 0, 10],
                          "accuracy": [0.2, None, 0.2, 0.5], "n": [10] * 4}, schema_overrides={"accuracy": pl.Float64})
    out = steps_to_target(curve)
    assert out["target"].is_nan().all() and out["mean_steps"].is_null().all() and out["ratio"].is_null().all()
    assert not out.filter(pl.col("arm") == "saerl")["reached"][0]


def test_steps_to_target_never_counts_a_nan_point_or_a_nan_target_as_reached():
    """polars orders NaN above every number: a NaN accuracy (a point with no problem scored) counted as reaching any
    target, and a NaN target (the reference's final accuracy NaN) was reached by every NaN point. Now neither is."""
    nan = float("nan")
    curve = pl.DataFrame({"arm": ["vanilla"] * 3 + ["saerl"] * 3, "seed": [0] * 6, "step": [0, 10, 20] * 2,
                          "accuracy": [0.2, 0.4, 0.6, 0.2, nan, 0.7], "n": [10] * 6})
    fixed = {r["arm"]: r for r in steps_to_target(curve, 0.5).iter_rows(named=True)}
    assert fixed["saerl"]["steps"] == 20 and fixed["saerl"]["mean_steps"] == 20.0  # not 10, its NaN point
    assert fixed["saerl"]["ratio"] == pytest.approx(1.0)
    no_final = curve.with_columns(pl.when((pl.col("arm") == "vanilla") & (pl.col("step") == 20)).then(nan)
                                  .otherwise(pl.col("accuracy")).alias("accuracy"))
    out = steps_to_target(no_final)
    assert out["target"].is_nan().all() and out["steps"].is_null().all() and not out["reached"].any()
    assert out["mean_steps"].is_null().all() and out["ratio"].is_null().all()
    assert not pl.DataFrame({"accuracy": [nan, 1.0]}).select(reaches(nan))[:, 0].any()


def test_steps_ratio_interval_reads_a_nan_target_as_none():
    """steps_to_target reads a NaN target as none (the reference's final accuracy); the interval beside it took it
    as a fixed target nobody reaches, and gave no interval to a row with a ratio. Now both read the same target."""
    n = 20
    fast, slow = [[0] * n, [1] * n, [1] * n], [[0] * n, [0] * n, [1] * n]
    clear = _problem_curves({("vanilla", 0): slow, ("vanilla", 1): slow, ("saerl", 0): fast, ("saerl", 1): fast})
    assert steps_ratio_interval(clear, target=float("nan"), n_boot=50).equals(steps_ratio_interval(clear, n_boot=50))


def test_curve_from_per_sample_frames():
    frames = [_samples([1] * c + [0] * (4 - c), [[]] * 4).with_columns(pl.lit("a").alias("arm"), pl.lit(0).alias("seed"),
                                                                      pl.lit(step).alias("step"))
              for step, c in ((0, 1), (10, 3))]
    curve = final_accuracy(pl.concat(frames), by=("arm", "seed", "step", "set"))
    assert curve["accuracy"].to_list() == [0.25, 0.75]
    assert steps_to_target(curve, 0.5, reference_arm="a")["steps"].to_list() == [10]


def _seed_samples(final: pl.DataFrame, k: int = 20, problems: int = 4, spread: dict[str, float] | None = None):
    """Per-sample rows in which every problem of an (arm, seed, set) scores its accuracy by metric mean_k (that share
    of its k samples right): the problems add no variance, so an interval holds the seeds' part alone. `spread`
    moves an arm's even problems up and its odd ones down by that much (its accuracies stay)."""
    rows = []
    for arm, seed, set_name, acc in final.select("arm", "seed", "set", "accuracy").iter_rows():
        for i in range(problems):
            share = acc + (spread or {}).get(arm, 0.0) * (1 if i % 2 == 0 else -1)
            right = round(share * k)
            assert right == pytest.approx(share * k)
            rows += [{"arm": arm, "seed": seed, "set": set_name, "id": f"q{i}", "sample": j, "correct": 1 <= j <= right}
                     for j in range(k + 1)]
    return pl.DataFrame(rows)


def test_compare_arms_pairs_arms_trained_on_the_same_seeds():
    """Arms run on the same 3+ seeds are compared seed by seed (paired t over per-seed differences), with known
    values; differences that tie across seeds (a constant +10 points) would give a seed variance of exactly 0 from
    three seeds, so they fall back to Welch, as do 2 seeds and other seed sets; two arms with the same accuracy on
    every seed but not on every problem are not identical: Welch too (widened by the problems), not an exact 0."""
    final = pl.DataFrame({"arm": ["vanilla"] * 3 + ["saerl"] * 3 + ["same"] * 3 + ["shifted"] * 3,
                          "seed": [0, 1, 2] * 4, "set": ["A"] * 12,
                          "accuracy": [.5, .6, .7, .6, .75, .8, .5, .6, .7, .6, .7, .8]})
    samples = _seed_samples(final, spread={"same": 0.1})
    t = {r["arm"]: r for r in compare_arms(samples, metric="mean_k").iter_rows(named=True)}
    half = 4.302653 * float(np.std([.1, .15, .1], ddof=1)) / math.sqrt(3)  # t(0.975, 2) * sd of the differences
    assert t["saerl"]["diff_ci_low_pts"] == pytest.approx(100 * (0.35 / 3 - half), abs=1e-3)
    assert "3 seeds paired with the reference's (t)" in t["saerl"]["ci_source"]
    assert "1 degree of freedom" not in t["saerl"]["ci_source"]
    welch = 2.776445 * math.sqrt(2 * 0.01 / 3)  # Welch dof = 4 for equal variances and sizes
    assert t["shifted"]["diff_ci_low_pts"] == pytest.approx(100 * (0.1 - welch), abs=1e-3)  # not [10, 10]
    assert t["shifted"]["verdict"] == t["same"]["verdict"] == "within noise"
    assert "Welch" in t["shifted"]["ci_source"] and "Welch" in t["same"]["ci_source"]
    assert t["same"]["diff_pts"] == pytest.approx(0.0, abs=1e-9) and t["same"]["diff_ci_low_pts"] < -100 * welch
    two = samples.filter(pl.col("seed") < 2)
    assert "Welch" in {r["arm"]: r for r in compare_arms(two, metric="mean_k").iter_rows(named=True)}["saerl"]["ci_source"]


def test_compare_arms_averages_the_held_out_sets_with_equal_weight():
    """The paper's headline is the accuracy averaged over its held-out sets: with two or more sets the comparison has
    a set "mean_of_sets" (each set weighing the same, whatever its size; a reachable stratum is no set of its own),
    paired seed by seed, its problem part each set's own scaled by 1/sets^2; with one set there is none."""
    from scipy import stats

    from saerl.evaluate import MEAN_OF_SETS

    rng = np.random.default_rng(3)
    frames = []
    for arm, p in (("vanilla", 0.4), ("saerl", 0.5)):
        for seed in range(3):
            for set_name, n in (("A", 10), ("B", 40)):
                correct = rng.uniform(size=n) < p + 0.05 * seed
                frames.append(_samples(correct.tolist(), [[False]] * n, set_name=set_name)
                              .with_columns(arm=pl.lit(arm), seed=pl.lit(seed)))
    samples = pl.concat(frames)
    table = compare_arms(samples)
    per = {(r["set"], r["arm"]): r for r in table.iter_rows(named=True)}
    mean = {arm: per[MEAN_OF_SETS, arm] for arm in ("vanilla", "saerl")}
    final = final_accuracy(samples)
    for arm, row in mean.items():  # the mean over seeds of each seed's mean over the two sets
        want = final.filter(pl.col("arm") == arm).group_by("seed").agg(pl.col("accuracy").mean())["accuracy"].mean()
        assert row["accuracy"] == pytest.approx(want) and row["n_problems"] == 50
    assert mean["saerl"]["diff_pts"] == pytest.approx((per["A", "saerl"]["diff_pts"] + per["B", "saerl"]["diff_pts"]) / 2)
    # the interval: paired seeds + each set's paired per-problem differences, over 2^2
    acc = final.group_by("arm", "seed").agg(pl.col("accuracy").mean()).sort("seed")
    d_seed = (acc.filter(pl.col("arm") == "saerl")["accuracy"] - acc.filter(pl.col("arm") == "vanilla")["accuracy"]).to_numpy()
    parts = [(np.var(d_seed, ddof=1) / 3, 2)]
    scores = problem_scores(samples).group_by("set", "arm", "id").agg(pl.col("score").mean()).sort("id")
    for set_name, n in (("A", 10), ("B", 40)):
        side = {a: scores.filter((pl.col("set") == set_name) & (pl.col("arm") == a))["score"].to_numpy()
                for a in ("saerl", "vanilla")}
        parts.append((np.var(side["saerl"] - side["vanilla"], ddof=1) / n / 4, n - 1))
    var = sum(v for v, _ in parts)
    dof = var**2 / sum(v**2 / d for v, d in parts)
    half = 100 * stats.t.ppf(0.975, dof) * math.sqrt(var)
    assert mean["saerl"]["diff_ci_high_pts"] - mean["saerl"]["diff_pts"] == pytest.approx(half)
    assert mean["saerl"]["ci_source"].startswith("mean of 2 sets: 3 seeds paired")
    stratum = samples.filter(pl.col("set") == "A").with_columns(set=pl.lit("A" + REACHABLE))
    with_stratum = compare_arms(pl.concat([samples, stratum]))
    assert with_stratum.filter(pl.col("set") == MEAN_OF_SETS).equals(table.filter(pl.col("set") == MEAN_OF_SETS))
    assert MEAN_OF_SETS not in compare_arms(samples.filter(pl.col("set") == "A"))["set"].to_list()
    assert f"set {MEAN_OF_SETS} (50 problems)" in format_comparison(table)


def test_sets_sharing_problems_are_left_out_of_the_mean_of_sets():
    """The mean of the sets added each set's per-problem variance as if the sets were independent: a set passed twice
    (or MATH-500 beside MATH test) counted its problems twice and narrowed the mean's interval by about 1/sqrt(2),
    claiming twice the paired problems. A set sharing a problem (the same prompt once case, spacing, punctuation and
    number formatting are set aside) with a larger set is left out of the mean, with a note; disjoint sets stay."""
    from saerl.evaluate import MEAN_OF_SETS, sets_to_average

    a = [f"What is {i} + 1,000?" for i in range(200)]
    c = [f"What is {i} - 1?" for i in range(50)]
    left, notes = sets_to_average({"A": a, "B": [p.lower().replace(",", "").replace("?", " ?") for p in a[:30]],
                                   "C": c})
    assert left == ["B"] and len(notes) == 1
    assert notes[0].startswith("held-out set B shares problems with another set (30 with A;") and MEAN_OF_SETS in notes[0]
    assert sets_to_average({"A": a, "C": c}) == ([], [])
    assert sets_to_average({"A": a[:10], "Z": a})[0] == ["A"]  # the larger set stays
    rng = np.random.default_rng(5)
    frames = []
    for arm, p in (("vanilla", 0.4), ("saerl", 0.45)):
        for set_name, n in (("A", 200), ("C", 50)):
            correct = (rng.uniform(size=n) < p).tolist()
            frames.append(_samples(correct, [[False]] * n, set_name=set_name).with_columns(arm=pl.lit(arm), seed=pl.lit(0)))
    samples = pl.concat(frames)
    twice = pl.concat([samples, samples.filter(pl.col("set") == "A").with_columns(set=pl.lit("B"))])
    table = compare_arms(twice, left_out=left)
    assert table.filter(pl.col("set") == MEAN_OF_SETS).equals(compare_arms(samples)
                                                              .filter(pl.col("set") == MEAN_OF_SETS))
    assert table.filter(pl.col("set") == MEAN_OF_SETS)["n_problems"].to_list() == [250, 250]
    assert set(table["set"]) == {"A", "B", "C", MEAN_OF_SETS}  # the set's own rows stay
    alone = compare_arms(twice.filter(pl.col("set") != "C"), left_out=["B"])
    assert MEAN_OF_SETS not in alone["set"].to_list()  # one set left: no mean


def test_two_seeds_are_flagged_and_intervals_stay_in_range():
    """A side with 2 seeds estimates its seed variance from 1 degree of freedom: the source says so, and the
    intervals are clipped to what an accuracy (0..1) and a difference (-1..1) can be."""
    final = pl.DataFrame({"arm": ["vanilla"] * 2 + ["saerl"] * 2, "seed": [0, 1] * 2, "set": ["A"] * 4,
                          "accuracy": [.05, .3, .2, .9]})
    t = {r["arm"]: r for r in compare_arms(_seed_samples(final), metric="mean_k").iter_rows(named=True)}
    assert t["saerl"]["ci_low"] == 0.0 and t["saerl"]["ci_high"] == 1.0  # unclipped: about -3.6 to +5.7
    assert t["saerl"]["diff_ci_low_pts"] >= -100 and t["saerl"]["diff_ci_high_pts"] <= 100
    assert "1 degree of freedom" in t["saerl"]["ci_source"]
    assert "1 degree of freedom" in t["vanilla"]["ci_source"]


def test_compare_arms_seed_t_intervals_known_values():
    """Arms on different seeds: Welch's unpaired t over each arm's per-seed accuracies."""
    final = pl.DataFrame({"arm": ["vanilla"] * 3 + ["saerl"] * 3, "seed": [0, 1, 2, 3, 4, 5], "set": ["A"] * 6,
                          "accuracy": [.5, .6, .7, .6, .7, .8]})
    table = compare_arms(_seed_samples(final), metric="mean_k")
    t = {r["arm"]: r for r in table.iter_rows(named=True)}
    half = 4.302653 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(3)
    assert t["vanilla"]["ci_low"] == pytest.approx(0.6 - half, abs=1e-5) and t["vanilla"]["verdict"] == "reference"
    welch = 2.776445 * math.sqrt(2 * 0.01 / 3)  # Welch dof = 4 for equal variances and sizes
    assert t["saerl"]["diff_pts"] == pytest.approx(10.0)
    assert t["saerl"]["diff_ci_low_pts"] == pytest.approx(100 * (0.1 - welch), abs=1e-3)
    assert t["saerl"]["verdict"] == "within noise"
    text = format_comparison(table)
    assert "within noise (CI contains 0)" in text and "saerl" in text and "[-12.7, +32.7]" in text


def _one_seed_samples():
    ref = _samples([1] * 50 + [0] * 50, [[]] * 100).with_columns(pl.lit("vanilla").alias("arm"), pl.lit(0).alias("seed"))
    arm = _samples([1] * 60 + [0] * 40, [[]] * 100).with_columns(pl.lit("saerl").alias("arm"), pl.lit(0).alias("seed"))
    return pl.concat([ref, arm])


def test_an_arm_that_solves_no_problem_or_every_problem_gets_an_exact_binomial_interval_not_a_point():
    """Every problem at 0 gave "0.0% [0.0, 0.0]" on 16 problems (the t interval of problems all alike has no
    width): certainty from 16 problems. The Clopper-Pearson bound is [0, 1 - 0.025 ** (1/16)] = [0, 20.6%]."""
    ref = _samples([0] * 16, [[]] * 16).with_columns(pl.lit("vanilla").alias("arm"), pl.lit(0).alias("seed"))
    arm = _samples([1] * 16, [[]] * 16).with_columns(pl.lit("saerl").alias("arm"), pl.lit(0).alias("seed"))
    t = {r["arm"]: r for r in compare_arms(pl.concat([ref, arm])).iter_rows(named=True)}
    assert (t["vanilla"]["ci_low"], t["vanilla"]["ci_high"]) == (0.0, pytest.approx(1 - 0.025 ** (1 / 16)))
    assert (t["saerl"]["ci_low"], t["saerl"]["ci_high"]) == (pytest.approx(0.025 ** (1 / 16)), 1.0)
    assert "20.6" in format_comparison(compare_arms(pl.concat([ref, arm])))
    mixed = _one_seed_samples()  # problems that differ: the t interval as before
    row = compare_arms(mixed).filter(pl.col("arm") == "vanilla").row(0, named=True)
    assert row["ci_low"] == pytest.approx(0.5 - 1.984217 * math.sqrt(0.25 * 100 / 99 / 100), abs=1e-6)


def test_every_problem_flipped_one_way_gives_an_exact_bound_not_a_certain_difference():
    """0/2 against 2/2 read "[+100.0, +100.0], better than vanilla" (paired differences all +1: no width) while the
    arms' own intervals overlapped. The share of problems flipping that way has an exact lower bound b, so the
    difference is at least 2b - 1: two problems [-68.4, +100] (within noise); sixteen [+58.8, +100]."""
    for n, low in ((2, 2 * 0.025 ** (1 / 2) - 1), (16, 2 * 0.025 ** (1 / 16) - 1)):
        ref = _samples([0] * n, [[]] * n).with_columns(pl.lit("vanilla").alias("arm"), pl.lit(0).alias("seed"))
        arm = _samples([1] * n, [[]] * n).with_columns(pl.lit("saerl").alias("arm"), pl.lit(0).alias("seed"))
        row = compare_arms(pl.concat([ref, arm])).filter(pl.col("arm") == "saerl").row(0, named=True)
        assert (row["diff_ci_low_pts"], row["diff_ci_high_pts"]) == (pytest.approx(100 * low), 100.0)
        assert row["verdict"] == ("within noise" if n == 2 else "better, 1 seed")
        back = compare_arms(pl.concat([ref.with_columns(pl.lit("saerl").alias("arm")),
                                                    arm.with_columns(pl.lit("vanilla").alias("arm"))]))
        worse = back.filter(pl.col("arm") == "saerl").row(0, named=True)
        assert (worse["diff_ci_low_pts"], worse["diff_ci_high_pts"]) == (-100.0, pytest.approx(-100 * low))


def test_the_mean_of_sets_exact_bound_averages_each_sets_own():
    """All wrong on a 2-problem set and a 1000-problem set: pooling the 1002 problems bounded the mean of the sets
    (equal weights) at 0.4%, though the small set alone allows 84%: each set's bound, averaged."""
    def arm(name: str) -> pl.DataFrame:
        return pl.concat([_samples([0] * 2, [[]] * 2, set_name="small"), _samples([0] * 1000, [[]] * 1000,
                                                                                    set_name="big")]).with_columns(
            pl.lit(name).alias("arm"), pl.lit(0).alias("seed"))

    from saerl.evaluate import MEAN_OF_SETS

    table = compare_arms(pl.concat([arm("vanilla"), arm("saerl")]))
    mean = table.filter((pl.col("set") == MEAN_OF_SETS) & (pl.col("arm") == "vanilla")).row(0, named=True)
    assert mean["ci_high"] == pytest.approx(((1 - 0.025 ** (1 / 2)) + (1 - 0.025 ** (1 / 1000))) / 2)


def test_one_problem_says_it_is_the_one_problem_that_leaves_no_interval():
    """With per-sample results on one problem the text blamed missing per-sample results."""
    ref = _samples([0], [[]]).with_columns(pl.lit("vanilla").alias("arm"), pl.lit(0).alias("seed"))
    arm = _samples([1], [[]]).with_columns(pl.lit("saerl").alias("arm"), pl.lit(0).alias("seed"))
    table = compare_arms(pl.concat([ref, arm]))
    assert set(table["ci_source"]) == {"none: one seed and one problem"}
    assert "2+ problems" in format_comparison(table)


def test_one_seed_uses_paired_per_problem_differences():
    samples = _one_seed_samples()
    t = {r["arm"]: r for r in compare_arms(samples).iter_rows(named=True)}
    se = math.sqrt((10 * 0.9**2 + 90 * 0.1**2) / 99 / 100)  # sd of the paired differences / sqrt(n)
    assert t["saerl"]["diff_ci_low_pts"] == pytest.approx(100 * (0.1 - 1.984217 * se), abs=1e-3)
    # beyond the problems' noise, but the seed's own effect is not in the interval: not called "better" outright
    assert t["saerl"]["verdict"] == "better, 1 seed" and t["saerl"]["n_problems"] == 100
    assert "one seed, whose own effect is not in the interval" in format_comparison(compare_arms(samples))
    assert "training-seed variance not included" in t["saerl"]["ci_source"]
    own = math.sqrt(0.24 * 100 / 99 / 100)  # the arm's own accuracy: problem-level SE
    assert t["saerl"]["ci_high"] == pytest.approx(0.6 + 1.984217 * own, abs=1e-5)
    # the same accuracies compared as if independent samples: the interval would contain 0
    by_arm = {a: g.sort("id")["correct"].cast(pl.Float64).to_numpy() for (a,), g in samples.group_by("arm")}
    lo, _ = _interval(0.1, _problem_part(by_arm["saerl"]) + _problem_part(by_arm["vanilla"]), 0.95)
    assert lo < 0


def test_a_one_seed_verdict_says_so_unless_the_one_seed_side_is_the_untrained_base():
    """With one seed on a trained side the interval holds the problems' noise only, and a retrained arm moves by its
    seed's effect (12-13% false "better"/"worse" at the testbed's seed spread, not 5%): the verdict carries
    ", 1 seed". The base policy is not trained (reference_fixed): 3 arm seeds against it give a plain verdict."""
    rows = [{"arm": "base", "seed": 0, "id": f"q{i}", "correct": i < 20} for i in range(200)]
    rows += [{"arm": "saerl", "seed": s, "id": f"q{i}", "correct": i < acc}
             for s, acc in enumerate((60, 62, 64)) for i in range(200)]
    samples = pl.DataFrame(rows).with_columns(pl.lit("A").alias("set"), pl.lit(0).alias("sample"))
    gains = {r["arm"]: r for r in compare_arms(samples, "base", reference_fixed=True).iter_rows(named=True)}
    assert gains["saerl"]["verdict"] == "better"
    trained = {r["arm"]: r for r in compare_arms(samples, "base").iter_rows(named=True)}
    assert trained["saerl"]["verdict"] == "better, 1 seed"  # were "base" a trained arm, its seed effect is missing
    assert "the reference is the untrained starting policy" in gains["saerl"]["ci_source"]
    assert "not included" not in gains["saerl"]["ci_source"]
    one = samples.filter(pl.col("seed") == 0)
    assert {r["arm"]: r for r in compare_arms(one, "base", reference_fixed=True)
            .iter_rows(named=True)}["saerl"]["verdict"] == "better, 1 seed"
    # per-problem scores that all differ alike (every problem won): a zero-width interval, read as measured
    won = pl.DataFrame([{"arm": a, "seed": 0, "id": f"q{i}", "correct": a == "saerl"} for a in ("vanilla", "saerl")
                        for i in range(20)]).with_columns(pl.lit("A").alias("set"), pl.lit(0).alias("sample"))
    assert {r["arm"]: r for r in compare_arms(won).iter_rows(named=True)}["saerl"]["verdict"] == \
        "better, 1 seed"


def test_arms_that_differ_seed_by_seed_are_not_taken_for_identical():
    """The exact-0 shortcut read problems averaged over seeds, where opposite differences cancel: two arms that
    differ on 8 of 12 (seed, problem) cells got the interval [0, 0]. Identity is now checked cell by cell; here
    every variance the interval reads is 0 (each arm 50% on every seed, equal averages per problem) without the
    arms being the same, so the cells' own spread gives the interval its width."""
    pattern = {"saerl": {0: [1, 0, 1, 0], 1: [0, 1, 0, 1], 2: [1, 1, 0, 0]},
               "vanilla": {0: [0, 1, 0, 1], 1: [1, 0, 1, 0], 2: [1, 1, 0, 0]}}
    from saerl.evaluate import MEAN_OF_SETS

    rows = [{"set": set_name, "arm": arm, "seed": sd, "id": str(i), "sample": 0, "correct": bool(y)}
            for set_name in ("h", "k") for arm, by in pattern.items() for sd, ys in by.items() for i, y in enumerate(ys)]
    table = compare_arms(pl.DataFrame(rows))
    for set_name in ("h", MEAN_OF_SETS):  # the mean of the sets reads the same cells (its rows share one code path)
        t = {r["arm"]: r for r in table.filter(pl.col("set") == set_name).iter_rows(named=True)}["saerl"]
        assert t["diff_pts"] == 0.0 and t["verdict"] == "within noise"
        assert t["diff_ci_low_pts"] < 0 < t["diff_ci_high_pts"], set_name


def test_seeds_that_repeat_one_accuracy_give_a_difference_the_problems_width():
    """Seeds that repeat one accuracy gave a zero-width interval and "better" for half a point: their seed parts
    are exactly 0 (Welch, ties not paired), and the paired problems give the interval its width."""
    rows = [{"set": "h", "arm": arm, "seed": sd, "id": f"q{i:03d}", "sample": 0, "correct": i < right}
            for arm, right in (("vanilla", 40), ("saerl", 41)) for sd in (0, 1) for i in range(200)]
    t = {r["arm"]: r for r in compare_arms(pl.DataFrame(rows)).iter_rows(named=True)}["saerl"]
    assert t["diff_pts"] == pytest.approx(0.5) and t["verdict"] == "within noise"
    assert t["diff_ci_low_pts"] < 0 < t["diff_ci_high_pts"] and "Welch" in t["ci_source"]


def test_identical_arms_are_within_noise_with_one_seed_or_three():
    """Two arms with the same per-problem results differ by exactly 0 with a zero-width interval [0, 0]: that
    interval contains 0, so the verdict is "within noise" (not "worse"), with one seed or three."""
    from saerl.evaluate import MEAN_OF_SETS

    for seeds in ((0,), (0, 1, 2)):
        frames = [_samples([1] * (30 + 10 * s + 5 * k) + [0] * (70 - 10 * s - 5 * k), [[]] * 100, set_name=set_name)
                  .with_columns(pl.lit(arm).alias("arm"), pl.lit(s).alias("seed"))
                  for arm in ("vanilla", "twin") for s in seeds for k, set_name in enumerate(("A", "B"))]
        table = compare_arms(pl.concat(frames))
        for set_name in ("A", "B", MEAN_OF_SETS):  # the mean of two sets too (it was Welch's width with 3 seeds)
            t = {r["arm"]: r for r in table.filter(pl.col("set") == set_name).iter_rows(named=True)}["twin"]
            assert t["diff_pts"] == 0.0 and t["diff_ci_low_pts"] == 0.0 == t["diff_ci_high_pts"], (seeds, set_name)
            assert t["verdict"] == "within noise"


def test_gain_over_a_one_seed_base_includes_the_arms_seed_spread():
    """The base policy is evaluated once: its side counts as fixed, but the trained arm's 3 seeds still spread
    the difference's interval (20/50/80% against a base at 40% is no clear gain)."""
    rows = [{"arm": "base", "seed": 0, "id": f"q{i}", "correct": i < 40} for i in range(100)]
    rows += [{"arm": "saerl", "seed": s, "id": f"q{i}", "correct": i < acc}
             for s, acc in enumerate((20, 50, 80)) for i in range(100)]
    samples = pl.DataFrame(rows).with_columns(pl.lit("A").alias("set"), pl.lit(0).alias("sample"))
    t = {r["arm"]: r for r in compare_arms(samples, "base").iter_rows(named=True)}["saerl"]
    assert t["diff_pts"] == pytest.approx(10.0) and t["verdict"] == "within noise"
    seed_half = 4.302653 * 0.3 / math.sqrt(3)  # t(0.975, 2) * sd of 20/50/80% / sqrt(3): the seed part alone
    assert t["diff_ci_high_pts"] - t["diff_pts"] > 100 * seed_half * 0.9
    assert "the arm's 3 seeds (t)" in t["ci_source"] and "100 paired problems" in t["ci_source"]
    assert "the reference's training-seed variance not included" in t["ci_source"]
    assert "(one seed)" not in t["ci_source"].split(";")[0]


def test_an_arm_worse_than_the_starting_policy_is_noted_by_set_metric_and_interval():
    """A final policy below the base was only a "worse" row in the gains block of comparison.txt: each arm whose
    gain's interval lies wholly below 0 gets one note naming the set, metric, gain and what to check; an arm within
    noise gets none, nor does a reachable stratum (the base's solved problems sit there, so any change loses some)."""
    rows = [{"arm": "base", "seed": 0, "id": f"q{i}", "correct": i < 60} for i in range(200)]
    rows += [{"arm": arm, "seed": s, "id": f"q{i}", "correct": i < acc}
             for arm, accs in (("saerl", (20, 22, 24)), ("vanilla", (58, 60, 63))) for s, acc in enumerate(accs)
             for i in range(200)]
    samples = pl.DataFrame(rows).with_columns(pl.lit("A").alias("set"), pl.lit(0).alias("sample"))
    stratum = samples.with_columns(pl.lit("A" + REACHABLE).alias("set"))
    gains = (compare_arms(pl.concat([samples, stratum]), "base", reference_fixed=True)
             .with_columns(metric=pl.lit("greedy")))
    assert set(gains.filter(pl.col("arm") == "saerl")["verdict"]) == {"worse"}  # the premise, on the stratum too
    [note] = worse_than_base_notes(gains, {"greedy": "greedy pass@1"})
    assert note.startswith("arm saerl ended worse than the starting policy, its gain's whole interval below 0: "
                           "on set A, greedy pass@1 -19.0 points [-24.5, -13.5]. RL lowered accuracy")
    assert REACHABLE not in note and "vanilla" not in note
    assert "train.learning_rate" in note and "train.beta" in note and "health notes of arm saerl's train runs" in note
    one = gains.filter(pl.col("arm") == "saerl").with_columns(verdict=pl.lit("worse, 1 seed"))
    assert "(1 seed: its own effect is not in the interval)" in worse_than_base_notes(one, {})[0]
    assert worse_than_base_notes(gains.filter(pl.col("arm") != "saerl"), {}) == []


def test_compare_arms_needs_shared_problems_and_the_reference():
    samples = _one_seed_samples()
    moved = samples.with_columns(pl.when(pl.col("arm") == "saerl").then(pl.col("id") + "x").otherwise(pl.col("id")).alias("id"))
    with pytest.raises(ValueError, match="share no problem ids"):
        compare_arms(moved)
    with pytest.raises(ValueError, match="reference arm"):
        compare_arms(samples, reference="nope")


def test_training_signal_by_stretch_of_the_run():
    log = pl.DataFrame({"step": [1, 2, 3, 4], "reward": [0.4, 0.2, 0.0, 0.1], "frac_reward_zero_std": [0.5, 0.25, 1.0, 0.75]})
    order = pl.DataFrame({"step": [1, 1, 2, 2, 3, 3, 4, 4], "id": ["a", "b", "c", "d", "e", "f", "g", "h"]})
    prompts = pl.DataFrame({"id": list("abcdefgh"), "quality": [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0],
                            "difficulty": [1, 1, 1, 3, 4, 4, 5, 5]})
    sig = training_signal(log, order, prompts, parts=2)
    assert sig["first_step"].to_list() == [1, 3] and sig["last_step"].to_list() == [2, 4]
    assert sig["reward"].to_list() == pytest.approx([0.3, 0.05])
    assert sig["zero_std"].to_list() == pytest.approx([0.375, 0.875])
    assert sig["bad_share"].to_list() == pytest.approx([0.25, 0.75])
    assert sig["level"].to_list() == pytest.approx([1.5, 4.5])
    assert sig["spread_groups"].to_list() == pytest.approx([(1.0 + 1.5) / 2, (0.0 + 0.5) / 2])  # 2 groups x (1 - zero_std)
    assert sig["prompts_drawn"].to_list() == pytest.approx([2.0, 2.0])
    bare = training_signal(log, order, None, parts=1)
    assert bare.columns == ["part", "first_step", "last_step", "reward", "zero_std", "spread_groups", "prompts_drawn"]
    assert bare.height == 1
    with pytest.raises(ValueError, match="parts"):
        training_signal(log, order, prompts, parts=0)


@pytest.mark.parametrize(("steps", "parts"), [(4, 3), (5, 4), (10, 6), (20, 3), (3, 5)])
def test_training_signal_gives_every_stretch_asked_for(steps, parts):
    """Stretches of ceil(steps / parts) steps left the last ones empty: 4 steps in thirds gave two stretches, 10 in
    sixths five. Now `parts` stretches (one per step when there are fewer), lengths within one step of each other."""
    log = pl.DataFrame({"step": list(range(1, steps + 1)), "reward": [0.1] * steps, "frac_reward_zero_std": [0.5] * steps})
    order = pl.DataFrame({"step": list(range(1, steps + 1)), "id": [f"p{i}" for i in range(steps)]})
    sig = training_signal(log, order, None, parts=parts)
    assert sig.height == min(steps, parts) and sig["part"].is_sorted() and sig["part"].n_unique() == sig.height
    assert sig["part"][0] == 1 and (steps < parts or sig["part"][-1] == parts)  # numbered by where it lies in the run
    lengths = [b - a + 1 for a, b in zip(sig["first_step"], sig["last_step"], strict=True)]
    assert sum(lengths) == steps and max(lengths) - min(lengths) <= 1
    assert sig["first_step"][0] == 1 and sig["last_step"][-1] == steps


def test_training_signal_reads_dynamic_sampling_counts():
    """DAPO: a step trains on the groups it kept (the trained order holds exactly those) and generated for every
    prompt it drew over its rounds; both come from the dynamic-sampling columns, not from zero_std."""
    log = pl.DataFrame({"step": [1, 2], "reward": [0.5, 0.1], "frac_reward_zero_std": [0.2, 0.8],
                        "dynamic_sampling/kept_groups": [2.0, 1.0], "dynamic_sampling/prompts_drawn": [3.0, 7.0]})
    order = pl.DataFrame({"step": [1, 1, 2], "id": ["a", "b", "c"]})
    sig = training_signal(log, order, None, parts=2)
    assert sig["spread_groups"].to_list() == pytest.approx([2.0, 1.0])
    assert sig["prompts_drawn"].to_list() == pytest.approx([3.0, 7.0])


def test_training_signal_counts_a_generation_batch_once_when_it_spans_several_steps():
    """train.steps_per_generation 2: each generation batch is generated (and placed in the trained order) at its first
    step, and trl logs reward and zero_std there alone. The step after it counted as missing, so the mean over steps
    gave 2x the spread groups per step (8 against 4 drawn: more spread groups than prompts) and, under DAPO, 2x the
    kept groups and the prompts drawn."""
    log = pl.DataFrame({"step": [1, 2, 3, 4], "reward": [0.5, None, 0.5, None],
                        "frac_reward_zero_std": [0.0, None, 0.5, None]})
    order = pl.DataFrame({"step": [1] * 8 + [3] * 8, "id": [str(i) for i in range(16)]})  # B = 4 a step
    grpo = training_signal(log, order, None, parts=1)
    assert grpo["spread_groups"].to_list() == pytest.approx([(8 + 4) / 4])  # 12 groups with a spread over 4 steps
    assert grpo["prompts_drawn"].to_list() == pytest.approx([4.0]) and grpo["reward"].to_list() == pytest.approx([0.5])
    dapo = log.with_columns(pl.Series("dynamic_sampling/kept_groups", [8.0, None, 6.0, None]),
                            pl.Series("dynamic_sampling/prompts_drawn", [12.0, None, 10.0, None]))
    sig = training_signal(dapo, order.head(14), None, parts=1)
    assert sig["spread_groups"].to_list() == pytest.approx([14 / 4]) and sig["prompts_drawn"].to_list() == pytest.approx([22 / 4])
    assert generated_prompts(dapo, order.head(14))["prompts"].to_list() == [12.0, 12.0, 22.0, 22.0]


def test_reachable_stratum_comes_from_the_probe_samples_only():
    # probe: q0 right only greedy (not reachable: greedy is not a sample), q1 right in one sample, q2 never
    probe = _samples([1, 0, 0], [[0, 0], [0, 1], [0, 0]])
    assert reachable_ids(probe) == {"A": {"q1"}}
    arm = _samples([1, 1, 0], [[1, 1], [1, 0], [0, 0]]).with_columns(pl.lit("vanilla").alias("arm"), pl.lit(0).alias("seed"))
    out = with_reachable(arm, probe)
    assert out.filter(pl.col("set") == "A").height == arm.height
    stratum = out.filter(pl.col("set") == "A:reachable")
    assert set(stratum["id"]) == {"q1"} and stratum.height == 3  # q1's greedy + 2 samples
    s = {r["set"]: r for r in summarize_eval(out).iter_rows(named=True)}
    assert s["A"]["greedy"] == pytest.approx(2 / 3) and s["A:reachable"]["greedy"] == 1.0 and s["A:reachable"]["n"] == 1


def test_steps_to_target_says_what_its_target_is_read_on():
    """The default target is the reference's final accuracy on the in-training curve (train.eval_problems problems),
    while the comparison's accuracies are on the final evaluation's problems: the table and its sentence say so."""
    from saerl.evaluate import describe_target

    curve = pl.DataFrame({"arm": ["vanilla", "vanilla", "saerl", "saerl"], "seed": [0] * 4, "step": [0, 10] * 2,
                          "accuracy": [0.1, 0.145, 0.1, 0.2], "n": [200] * 4})
    r = steps_to_target(curve).row(0, named=True)
    assert (r["reference"], r["target_fixed"], r["target_problems"]) == ("vanilla", False, 200)
    assert describe_target(r, 500) == ("vanilla's final greedy accuracy on the 200 in-training eval problems (14.5%), "
                                       "not on the 500 problems of the final evaluation")
    assert describe_target(r, 200) == "vanilla's final greedy accuracy on the 200 in-training eval problems (14.5%)"
    fixed = steps_to_target(curve, 0.15).row(0, named=True)
    assert fixed["target_fixed"] and describe_target(fixed).startswith(
        "15.0% greedy accuracy (eval.target_accuracy) on the 200 in-training eval problems")
    bare = steps_to_target(curve.drop("n")).row(0, named=True)  # no problem count: said without one
    assert bare["target_problems"] is None and "on the in-training eval problems" in describe_target(bare)


def test_steps_to_target_reads_the_evaluate_artifacts_curves():
    """curves.parquet (arm, seed, set, step, greedy, n) failed with ColumnNotFoundError "accuracy": the evaluate
    stage filtered a set and renamed greedy itself. metric= and set_name= read it, as the stage does; a curve of
    several sets without set_name, or without the metric's column, is refused naming what to give."""
    rows = {"arm": ["vanilla", "vanilla", "saerl", "saerl"] * 2, "seed": [0] * 8, "step": [0, 10] * 4,
            "set": ["heldout"] * 4 + ["heldout:reachable"] * 4,
            "greedy": [0.1, 0.3, 0.1, 0.4, 0.2, 0.6, 0.2, 0.5], "n": [20] * 4 + [5] * 4}
    curves = pl.DataFrame(rows)
    for s in ("heldout", "heldout:reachable"):
        want = steps_to_target(curves.filter(pl.col("set") == s).drop("set").rename({"greedy": "accuracy"}), 0.35)
        assert steps_to_target(curves, 0.35, metric="greedy", set_name=s).equals(want)
    one = curves.filter(pl.col("set") == "heldout")
    assert steps_to_target(one, metric="greedy").equals(steps_to_target(one, metric="greedy", set_name="heldout"))
    with pytest.raises(ValueError, match=r"holds the sets \['heldout', 'heldout:reachable'\]: give set_name="):
        steps_to_target(curves, metric="greedy")
    with pytest.raises(ValueError, match=r"no 'accuracy' column .*give metric=.*'greedy'"):
        steps_to_target(curves, set_name="heldout")


def test_no_ratio_reason_names_a_reference_at_the_target_from_the_start():
    """vanilla ends below where it started: its mean curve is at its own final accuracy at step 0, so no arm gets a
    ratio; the reason is said (the ratio was only left out, and read like "never reached")."""
    from saerl.evaluate import no_ratio_reason

    curve = pl.DataFrame({"arm": ["vanilla", "vanilla", "saerl", "saerl"], "seed": [0] * 4, "step": [0, 10] * 2,
                          "accuracy": [0.3, 0.2, 0.1, 0.4]})
    stt = steps_to_target(curve)
    assert stt["ratio"].null_count() == stt.height
    assert no_ratio_reason(stt, "any", "saerl") == "no ratio: vanilla is at the target from the start"
    assert no_ratio_reason(stt, "any", "vanilla") == ""  # the reference's own line says it is at the start
    never = steps_to_target(curve, 0.9)  # a fixed target nobody reaches: the arm's own steps say so
    assert no_ratio_reason(never, "any", "saerl") == ""
    reaches = steps_to_target(curve, 0.35)  # saerl reaches a fixed target vanilla never does
    assert no_ratio_reason(reaches, "any", "saerl") == "no ratio: vanilla's mean curve never reaches the target"


def test_compare_arms_counts_verifier_failures_and_the_table_says_so():
    """A verifier timeout/error scores the answer wrong; the final evaluation never said how many there were."""
    from saerl.evaluate import verifier_failures

    samples = _one_seed_samples()
    failed = samples.with_columns(pl.when((pl.col("arm") == "saerl") & pl.col("id").is_in(["q60", "q61"]))
                                  .then(pl.lit("timeout")).otherwise(pl.col("status")).alias("status"))
    t = {r["arm"]: r for r in compare_arms(failed).iter_rows(named=True)}
    assert t["saerl"]["verifier_failures"] == 2 and t["vanilla"]["verifier_failures"] == 0
    text = format_comparison(compare_arms(failed))
    assert "  verifier failures: 2 (scored wrong): saerl 2" in text and "set A (100 problems)" in text
    assert "verifier failures" not in format_comparison(compare_arms(samples))  # none: no line
    mixed = _samples([1, 0], [[1, 0], [0, 0]], statuses={1: "error", 4: "timeout", 5: "timeout"}).with_columns(
        pl.lit("saerl").alias("arm"))  # rows: q0 greedy, q0 s1, q0 s2, q1 greedy, q1 s1, q1 s2
    assert verifier_failures(mixed, "greedy")["failures"].to_list() == [0]  # each metric counts its own samples
    assert verifier_failures(mixed, "mean_k")["failures"].to_list() == [3]
    assert verifier_failures(mixed)["failures"].to_list() == [3]
    assert compare_arms(samples.drop("status"))["verifier_failures"].to_list() == [None, None]  # no statuses


def test_summarize_eval_gives_the_same_bits_every_call():
    """Per-problem rows reached the standard error's std in hash order: the same frame gave up to 11 different
    greedy_se values (last digit) in 20 calls, so two identical runs wrote different summary.parquet files."""
    import random

    from saerl.evaluate import summarize_eval

    rng = random.Random(0)
    rows = [{"set": "h", "id": f"p{i}", "sample": s, "correct": rng.random() < 0.37, "status": "ok"}
            for i in range(400) for s in (0, 1, 2, 3)]
    df = pl.DataFrame(rows)
    first = summarize_eval(df)
    assert all(summarize_eval(df).equals(first) for _ in range(20))


def test_the_default_target_is_a_point_of_the_references_own_mean_curve():
    """One vanilla seed evaluated a step further than the other: the target was the mean of each seed's own last
    point (.17), which the mean curve over the steps both seeds share (.14 at its end) never reached, so no arm had
    a ratio and nothing said why. The target is now the mean curve's last shared point, the one the bootstrap reads."""
    rows = [("vanilla", 0, 0, .10), ("vanilla", 0, 10, .12), ("vanilla", 0, 20, .14),
            ("vanilla", 1, 0, .10), ("vanilla", 1, 10, .12), ("vanilla", 1, 20, .14), ("vanilla", 1, 30, .20),
            ("saerl", 0, 0, .10), ("saerl", 0, 10, .16), ("saerl", 1, 0, .10), ("saerl", 1, 10, .16)]
    t = steps_to_target(pl.DataFrame(rows, schema=["arm", "seed", "step", "accuracy"], orient="row"))
    by_arm = {r["arm"]: r for r in t.unique("arm").iter_rows(named=True)}
    assert by_arm["vanilla"]["target"] == pytest.approx(0.14)
    assert by_arm["vanilla"]["mean_steps"] == 20 and by_arm["saerl"]["mean_steps"] == 10
    assert by_arm["saerl"]["ratio"] == pytest.approx(0.5)


def test_a_gain_share_target_is_one_target_for_every_arm_from_their_pooled_gain():
    """eval.target_gain_share: the arms' mean start plus that share of their mean gain, instead of vanilla's own last
    point (which vanilla always reaches while an equal arm crosses it earlier or never). Read on each arm's mean curve;
    the bootstrap derives its target by the same rule (problems that all score alike: every resample is the curve)."""
    from saerl.evaluate import describe_target

    rows = []
    for arm, by_step in {"vanilla": {0: 0, 10: 0, 20: 1, 30: 1}, "saerl": {0: 0, 10: 1, 20: 1, 30: 1}}.items():
        for seed in (0, 1):
            rows += [{"arm": arm, "seed": seed, "step": st, "id": f"q{i}", "correct": bool(c)}
                     for st, c in by_step.items() for i in range(4)]
    problems = pl.DataFrame(rows)
    curve = problems.group_by("arm", "seed", "step").agg(pl.col("correct").cast(pl.Float64).mean().alias("accuracy"))
    t = steps_to_target(curve, gain_share=0.5)
    by_arm = {r["arm"]: r for r in t.unique("arm").iter_rows(named=True)}
    assert by_arm["vanilla"]["target"] == pytest.approx(0.5) == by_arm["saerl"]["target"]  # 0 + .5 x (1 - 0)
    assert by_arm["saerl"]["mean_steps"] == 10 and by_arm["vanilla"]["mean_steps"] == 20
    assert by_arm["saerl"]["ratio"] == pytest.approx(0.5) and by_arm["saerl"]["target_share"] == 0.5
    assert "the start plus 50% of the arms' mean gain" in describe_target(by_arm["saerl"])
    assert steps_to_target(curve)["target_share"].null_count() == t.height  # the default rule: no share
    ci = {r["arm"]: r for r in steps_ratio_interval(problems, gain_share=0.5, n_boot=50).iter_rows(named=True)}
    assert ci["saerl"]["ratio_ci_low"] == pytest.approx(0.5) == ci["saerl"]["ratio_ci_high"]
    # and where the rules differ: vanilla's last point dips, so its own final (.25) is below saerl's path
    dip = curve.with_columns(pl.when((pl.col("arm") == "vanilla") & (pl.col("step") == 30)).then(0.25)
                             .otherwise(pl.col("accuracy")).alias("accuracy"))
    assert steps_to_target(dip)["target"][0] == pytest.approx(0.25)
    assert steps_to_target(dip, gain_share=0.5)["target"][0] == pytest.approx(0.5 * (0.25 + 1.0) / 2)
    # the bootstrap follows the gain-share rule too, not vanilla's own final: with vanilla's last point at 0,
    # its final is met at step 0 (no ratio at all), while the pooled target (0.25) gives saerl 10 / 20 steps
    kept = (pl.col("arm") != "vanilla") | (pl.col("step") != 30)
    lost = problems.with_columns((kept & pl.col("correct")).alias("correct"))
    by_final = steps_ratio_interval(lost, n_boot=50).filter(pl.col("arm") == "saerl")
    assert by_final["ratio_ci_low"].to_list() == [None]
    ci = {r["arm"]: r for r in steps_ratio_interval(lost, gain_share=0.5, n_boot=50).iter_rows(named=True)}
    assert ci["saerl"]["ratio_ci_low"] == pytest.approx(0.5) == ci["saerl"]["ratio_ci_high"]


def test_the_gain_share_target_leaves_out_a_resample_that_scored_no_problem():
    """A resample with no problem scored gives a NaN start point; the pooled start skips it rather than making
    the whole target NaN (which no curve ever reaches)."""
    from saerl.evaluate import gain_target

    target = gain_target(np.array([np.nan, 0.2]), np.array([0.4, 0.6]), 0.5)
    assert target == pytest.approx(0.2 + 0.5 * (0.5 - 0.2))  # start 0.2 (the NaN left out), mean final 0.5


def test_the_steps_target_is_given_or_derived_not_both():
    from saerl.config import load_config

    with pytest.raises(ValueError, match="both set the steps-to-target target"):
        load_config(None, ["eval.target_accuracy=0.3", "eval.target_gain_share=0.75"])


def test_a_bound_near_zero_shows_its_side_of_zero():
    """The demo printed "+2.4 [+0.0, +4.8]  above vanilla": the low bound was +0.049 points, which one decimal
    rounds to +0.0, so the verdict read as contradicting the interval. A bound that rounds to 0 without being 0 gets
    the decimals that show its sign; other bounds keep one decimal."""
    table = compare_arms(_one_seed_samples())
    row = table.filter(pl.col("arm") == "saerl")
    text = format_comparison(row.with_columns(diff_ci_low_pts=pl.lit(0.049423)).vstack(
        table.filter(pl.col("arm") == "vanilla")).sort("verdict", descending=True))
    assert "[+0.049, +" in text and "[+0.0," not in text
    assert f"{row['diff_ci_high_pts'][0]:+.1f}]" in text
    text = format_comparison(table.with_columns(
        diff_ci_low_pts=pl.when(pl.col("arm") == "saerl").then(-0.004).otherwise(pl.col("diff_ci_low_pts"))))
    assert "[-0.0040, +" in text
    from saerl.evaluate import signed_bound

    assert signed_bound(1e-15) == "+1e-15" and len(signed_bound(5e-324)) < 10  # no run of hundreds of zeros


@pytest.mark.slow
def test_the_comparison_is_bit_identical_from_one_process_to_the_next():
    """compare_arms summed each variance over problems in the order of a hash table's groups, which moves between
    processes (Polars seeds its hashes per process): two identical runs wrote comparison.parquet files differing in
    an interval's last bit (3 of 8 processes differed here). The problems are now read sorted by id: eight
    processes, one frame, bit for bit."""
    import subprocess
    import sys

    script = """
import numpy as np, polars as pl
from saerl.evaluate import compare_arms
rng = np.random.default_rng(7)
rows = [{"set": "h", "arm": a, "seed": 0, "id": f"eval-{i:06d}", "sample": 0, "correct": bool(rng.uniform() < p)}
        for a, p in (("vanilla", 0.05), ("saerl", 0.07)) for i in range(100)]
table = compare_arms(pl.DataFrame(rows))
print([repr(v) for c in ("ci_low", "ci_high", "diff_ci_low_pts", "diff_ci_high_pts") for v in table[c].to_list()])
"""
    outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
            for _ in range(8)}
    assert len(outs) == 1, outs


def test_a_set_with_its_own_k_samples_generates_that_many_passes_and_the_others_eval_k_samples(monkeypatch):
    """AIME/AMC are reported as avg@32 beside GSM8K's fewer samples: an eval.sets entry's own k_samples sets its
    passes (the reach probe's too); the other sets keep eval.k_samples; sample j draws the same seed in both."""
    import saerl.policy_lm
    from saerl.config import HeldOutSet

    calls: list[tuple[str, float, int]] = []

    def fake(model, tok, prompts, max_new_tokens, batch, temperature, seed, on_batch=None):
        calls.append((prompts[0], temperature, seed))
        return Completions(["#### 7"] * len(prompts), [2] * len(prompts), [True] * len(prompts))

    monkeypatch.setattr(saerl.policy_lm, "generate", fake)
    hard = pl.DataFrame({"id": ["h1"], "prompt": ["what is 9 * 9 ?"], "answer": ["81"]})
    cfg = EvalConfig(k_samples=4, sets={"hard": HeldOutSet(path="hard.jsonl", k_samples=8)})
    out = evaluate_loaded(None, None, {**SETS, "hard": hard}, cfg, 9, seed=0)
    k = out.filter(pl.col("sample") > 0).group_by("set").agg(pl.col("sample").max(), pl.len()).sort("set")
    assert k.rows() == [("easy", 4, 3 * 4), ("hard", 8, 8)]
    easy = [c[2] for c in calls if c[0] == SETS["easy"]["prompt"][0]]
    assert [c[2] for c in calls if c[0] == "what is 9 * 9 ?"][:5] == easy  # sample j: the same seed in every set
    calls.clear()
    probe = evaluate_loaded(None, None, {**SETS, "hard": hard}, cfg, 9, seed=1, greedy=False, probe=True)
    assert probe.filter(pl.col("set") == "hard")["sample"].to_list() == list(range(1, 9))


def test_answer_extraction_reads_an_unboxed_answer_only_when_asked_and_marks_it(monkeypatch):
    """eval.answer_extraction 'boxed' (the default) writes the frame it always wrote: an unboxed 'The answer is 7'
    is no answer; 'boxed_or_last' scores it by the verifier's comparison and marks the row (fallback), which the
    summary counts per set."""
    import saerl.policy_lm

    def fake(model, tok, prompts, max_new_tokens, batch, temperature, seed, on_batch=None):
        return Completions(["The answer is 7.", "#### 2", "so it is 5"], [4] * 3, [True] * 3)

    monkeypatch.setattr(saerl.policy_lm, "generate", fake)
    boxed = evaluate_loaded(None, None, SETS, EvalConfig(k_samples=1), 9, seed=0)
    assert "fallback" not in boxed.columns and boxed["status"].to_list()[:3] == ["no_answer", "correct", "no_answer"]
    last = evaluate_loaded(None, None, SETS, EvalConfig(k_samples=1, answer_extraction="boxed_or_last"), 9, seed=0)
    assert last["status"].to_list()[:3] == ["correct", "correct", "wrong"]
    assert last["fallback"].to_list()[:3] == [True, False, True]
    assert summarize_eval(last)["fallback"].to_list() == [pytest.approx(2 / 3)]
    assert "fallback" not in summarize_eval(boxed).columns


def test_a_comparison_of_sets_of_different_k_names_each_sets_k():
    """The mean@k table's title named eval.k_samples for every set: with a set of its own k it says so, and each
    set's block (the mean of the sets too) names its own k; one k over every set reads as it always did."""
    from saerl.evaluate import MEAN_OF_SETS, mean_k_names, samples_per_set

    rows = [{"set": s, "id": f"{s}{i}", "sample": j, "correct": (i + j) % 2 == 0, "arm": a, "seed": 0, "status": "x"}
            for s, k in (("gsm", 4), ("aime", 8)) for i in range(3) for j in range(k + 1) for a in ("saerl", "vanilla")]
    samples = pl.DataFrame(rows)
    assert samples_per_set(samples) == {"gsm": 4, "aime": 8}
    name, labels = mean_k_names(samples_per_set(samples))
    assert name == "mean@k (each set's own k)" and labels["aime"] == "mean@8" and labels["gsm"] == "mean@4"
    assert mean_k_names({"gsm": 4, "aime": 4}) == ("mean@4", {})
    table = compare_arms(samples, metric="mean_k")
    text = format_comparison(table, labels=labels)
    assert "set aime (3 problems): mean@8\n" in text and "set gsm (3 problems): mean@4\n" in text
    assert f"set {MEAN_OF_SETS} (6 problems): the mean of each set's own mean@k (aime 8, gsm 4)\n" in text
    assert format_comparison(table) == format_comparison(table, labels={})  # no labels: the blocks as before


def test_the_intervals_sources_are_listed_in_the_tables_order_in_every_process(tmp_path):
    """format_comparison's "intervals from:" line listed the arms' distinct sources in a hash order that moved
    between processes (polars' unique), so comparison.txt of one run differed from another's. They follow the
    table's rows."""
    import subprocess
    import sys

    arms = ["vanilla", "a", "b", "c", "d"]
    samples = pl.concat([_samples([1, 0, 1, 0], [[1, 0]] * 4).with_columns(arm=pl.lit(a), seed=pl.lit(0)) for a in arms],
                        how="diagonal_relaxed")
    table = compare_arms(samples, "vanilla")
    assert table["arm"].to_list() == arms
    table.with_columns(ci_source=pl.Series(["r", "w", "x", "y", "z"])).write_parquet(tmp_path / "t.parquet")
    code = ("import polars as pl, sys\n"
            "from saerl.evaluate import format_comparison\n"
            "text = format_comparison(pl.read_parquet(sys.argv[1]))\n"
            "print([x for x in text.splitlines() if 'intervals from' in x][0])\n")
    seen = {subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.parquet")], capture_output=True, text=True,
                           check=True).stdout for _ in range(4)}
    assert seen == {"  intervals from: w; x; y; z\n"}
