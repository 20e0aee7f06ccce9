"""Label stage: when difficulty must be measured, which prompts are labelled, measured pass rates, and the
chunked, resumable measurement the stage runs."""

import polars as pl
import pytest
from tiny import overfit, tiny_model, tiny_tokenizer

from saerl.artifacts import ChunkLog, chunk_progress
from saerl.config import ScoreConfig, load_config
from saerl.labels import (
    LABELS,
    PARTS_DIR,
    SATURATED_LABEL_SHARE,
    chunk_seed,
    label_fingerprint,
    labelled_subset,
    measure_labels,
    needs_measured_labels,
    pass_rate_profile,
    pass_rates,
    saturation_notes,
)
from saerl.policy_lm import Completions, load_policy, save_tokenizer

PROMPTS = pl.DataFrame({"id": ["e1", "e2", "e3"], "prompt": ["what is 3 + 4 ?", "what is 1 + 1 ?", "what is 2 + 2 ?"],
                        "answer": ["7", "2", "4"]})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ needs_measured_labels


@pytest.mark.parametrize(("overrides", "expected"), [
    (["score.difficulty_source=measured"], True),                                 # asked for, sample data
    (["score.difficulty_source=measured", "data.difficulty=difficulty"], True),   # asked for despite a column
    (["score.difficulty_source=measured", "data.source=testbed", "data.difficulty=difficulty"], True),
    (["score.difficulty_source=column", "data.difficulty=difficulty"], False),
    (["score.difficulty_source=column"], False),                                  # never measured (score errors)
    (["score.difficulty_source=auto", "data.difficulty=difficulty"], False),      # column mapped
    (["score.difficulty_source=auto", "data.source=testbed", "data.difficulty=difficulty"], False),
    (["score.difficulty_source=auto", "data.source=file", "data.path=x.jsonl"], True),  # nothing mapped
    (["score.difficulty_source=auto", "data.source=file", "data.path=x.jsonl", "data.difficulty=level"], False),
    (["score.difficulty_source=auto"], True),                                     # sample, difficulty unmapped
    (["score.difficulty_source=auto", "data.source=testbed"], True),              # testbed, level not mapped
])
def test_needs_measured_labels_per_source_and_data(overrides, expected):
    assert needs_measured_labels(load_config(None, overrides)) is expected


def test_default_config_measures_nothing_it_has_a_column_for():
    demo = load_config(None, ["data.difficulty=difficulty"])
    assert demo.score.difficulty_source == "auto" and not needs_measured_labels(demo)


# ------------------------------------------------------------------------------------------ labelled_subset


def _pool(n: int) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"p{i:04d}" for i in range(n)], "prompt": [f"q{i}" for i in range(n)],
                         "answer": [str(i) for i in range(n)]})


def test_labelled_subset_uses_the_labelled_column_when_present():
    df = _pool(6).with_columns(pl.Series("labelled", [True, False, None, True, False, True], dtype=pl.Boolean))
    out = labelled_subset(df, fraction=0.01, seed=123)  # fraction and seed are ignored
    assert out["id"].to_list() == ["p0000", "p0003", "p0005"]
    assert out.columns == df.columns


def test_labelled_subset_draws_a_seeded_fraction_independent_of_row_order():
    df = _pool(200)
    a = labelled_subset(df, 0.2, seed=7)
    assert a.height == 40 and a["id"].n_unique() == 40
    assert set(labelled_subset(df, 0.2, seed=7)["id"]) == set(a["id"])  # deterministic
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=3)
    assert set(labelled_subset(shuffled, 0.2, seed=7)["id"]) == set(a["id"])  # order-free
    assert set(labelled_subset(df, 0.2, seed=8)["id"]) != set(a["id"])
    assert labelled_subset(df, 1.0, seed=0).height == 200
    assert labelled_subset(_pool(3), 0.01, seed=0).height == 1  # at least one prompt


def test_labelled_subset_of_an_empty_frame_is_empty():
    assert labelled_subset(_pool(0), 0.5, seed=0).height == 0


# ---------------------------------------------------------------------------------------------- pass_rates


@pytest.fixture(scope="module")
def saved_policy(tmp_path_factory):
    """A tiny Llama overfitted to answer e1 and e2 right and e3 with no answer at all."""
    tok = tiny_tokenizer()
    model = tiny_model(tok, "llama")
    overfit(model, tok, [("what is 3 + 4 ?", "#### 7"), ("what is 1 + 1 ?", "#### 2"), ("what is 2 + 2 ?", "what")],
            steps=40)
    out = tmp_path_factory.mktemp("policy")
    model.save_pretrained(out)
    save_tokenizer(tok, out)
    return out


def test_measure_pass_rates_columns_counts_and_range(saved_policy):
    df = pass_rates(*load_policy(saved_policy), PROMPTS, rollouts=3, temperature=1.0, max_new_tokens=4, batch=2, seed=0)
    assert df.columns == ["id", "pass_rate", "n_correct", "n_failed", "rollouts", "n_cut"]
    assert df.schema["pass_rate"] == pl.Float64 and df.schema["n_correct"] == pl.Int64
    assert df["id"].to_list() == ["e1", "e2", "e3"]
    assert df["rollouts"].to_list() == [3, 3, 3]
    assert df["pass_rate"].is_between(0.0, 1.0).all()
    assert (df["n_correct"].is_between(0, 3)).all() and (df["n_failed"] == 0).all()
    assert (df["pass_rate"] * 3 - df["n_correct"]).abs().max() < 1e-9
    again = pass_rates(*load_policy(saved_policy), PROMPTS, rollouts=3, temperature=1.0, max_new_tokens=4, batch=2, seed=0)
    assert again.equals(df)  # seeded


def test_measure_pass_rates_greedy_reads_what_the_policy_knows(saved_policy):
    df = pass_rates(*load_policy(saved_policy), PROMPTS, rollouts=2, temperature=0.0, max_new_tokens=4, batch=3, seed=0)
    assert dict(zip(df["id"], df["pass_rate"], strict=True)) == {"e1": 1.0, "e2": 1.0, "e3": 0.0}
    assert df["n_correct"].to_list() == [2, 2, 0]


# ------------------------------------------------------------------------------------------ measure_labels

SPREAD_T = 2.0  # a temperature at which the tiny policy's pass rates move with the sampling seed


def _score(**fields) -> ScoreConfig:
    return ScoreConfig(label_rollouts=4, label_batch=4, label_chunk_rows=1, seed=3).model_copy(update=fields)


def _measure(policy, folder, cfg: ScoreConfig | None = None, log: ChunkLog | None = None, **kwargs):
    cfg = cfg or _score()
    return measure_labels(policy, PROMPTS, cfg, SPREAD_T, 4, folder, log or ChunkLog(folder), progress=False, **kwargs)


class _Killed(Exception):
    """Stands for a process dying after some chunks finished (the real SIGKILL test is in test_resume.py)."""


def test_measure_labels_seeds_each_chunk_by_its_index_and_cleans_up(saved_policy, tmp_path):
    cfg = _score()
    labels, summary, _ = _measure(saved_policy, tmp_path / "a", cfg)
    assert summary == {**summary, "n_prompts": 3, "chunks_run": 3, "chunks_skipped": 0}
    assert pl.read_parquet(tmp_path / "a" / LABELS).equals(labels)
    assert not (tmp_path / "a" / PARTS_DIR).exists(), "the per-chunk tables are not part of the artifact"
    assert (ChunkLog(tmp_path / "a").folder / PARTS_DIR).is_dir(), "they stay with the chunk log until publish"
    model, tok = load_policy(saved_policy)
    for c in range(3):  # chunk c alone, sampled with its own seed, gives its rows: no dependence on earlier chunks
        alone = pass_rates(model, tok, PROMPTS.slice(c, 1), cfg.label_rollouts, SPREAD_T, 4, cfg.label_batch,
                           chunk_seed(cfg.seed, c))
        assert labels.slice(c, 1).equals(alone)
    other, _, _ = _measure(saved_policy, tmp_path / "b", _score(seed=4))
    assert not other.equals(labels), "the labels depend on the seed (else equality checks would prove nothing)"
    assert chunk_seed(3, 0) != chunk_seed(3, 1) != chunk_seed(4, 1)


def test_measure_labels_of_the_subset_in_another_order_gives_the_same_labels(saved_policy, tmp_path):
    """A prompt's rollouts are sampled from its chunk's seed beside its batch's other prompts, so the subset of a data
    file in another row order measured other pass rates. The subset is now measured in id order: the same prompts
    in any order get the same labels, written in id order."""
    labels, _, _ = _measure(saved_policy, tmp_path / "a")
    again, _, _ = measure_labels(saved_policy, PROMPTS.reverse(), _score(), SPREAD_T, 4, tmp_path / "b",
                                 ChunkLog(tmp_path / "b"), progress=False)
    assert again.sort("id").equals(labels.sort("id"))  # per prompt (measured in file order: e1 .25, then .75)
    assert labels["id"].to_list() == again["id"].to_list() == ["e1", "e2", "e3"]


def test_measure_labels_killed_after_its_table_redoes_no_chunk(saved_policy, tmp_path, monkeypatch):
    """A run killed after labels.parquet was written and before the artifact was published finds every chunk's
    table with the chunk log: it measures nothing again and loads no policy (the parts used to be removed first)."""
    import saerl.policy_lm

    first, _, _ = _measure(saved_policy, tmp_path / "a")

    def no_load(*_a, **_k):
        raise AssertionError("the policy was loaded: a chunk was measured again")

    monkeypatch.setattr(saerl.policy_lm, "load_policy", no_load)
    again, summary, _ = _measure(saved_policy, tmp_path / "a")
    assert summary["chunks_run"] == 0 and summary["chunks_skipped"] == 3 and again.equals(first)


def test_measure_labels_resumes_a_build_that_kept_its_tables_where_builds_before_session_28_did(saved_policy, tmp_path):
    """A label build interrupted under the previous code kept its finished tables in out_dir/label_parts: the same
    key resumes it, and those chunks are not measured again, nor is that folder published with the artifact."""
    log = ChunkLog(tmp_path / "run")

    def die_after_first(c: int) -> None:
        raise _Killed(c)

    with pytest.raises(_Killed):
        _measure(saved_policy, tmp_path / "run", log=log, on_chunk_done=die_after_first)
    (tmp_path / "run" / PARTS_DIR).mkdir()
    (log.folder / PARTS_DIR / "0.parquet").rename(tmp_path / "run" / PARTS_DIR / "0.parquet")  # the old layout
    redone: list[int] = []
    _, summary, _ = _measure(saved_policy, tmp_path / "run", log=log, on_chunk_done=redone.append)
    assert redone == [1, 2] and summary["chunks_skipped"] == 1
    assert not (tmp_path / "run" / PARTS_DIR).exists()


def test_measure_labels_resumes_from_finished_chunks(saved_policy, tmp_path):
    reference, _, _ = _measure(saved_policy, tmp_path / "ref")

    def die_after_first(c: int) -> None:
        raise _Killed(c)

    log = ChunkLog(tmp_path / "run")
    with pytest.raises(_Killed):
        _measure(saved_policy, tmp_path / "run", log=log, on_chunk_done=die_after_first)
    assert log.done() == ["0"] and (log.folder / PARTS_DIR / "0.parquet").is_file()
    progress = chunk_progress(tmp_path / "run")  # what saerl status says of the killed build: 1 of 3 chunks
    assert progress is not None and (progress.done, progress.planned) == (1, 3)
    redone: list[int] = []
    labels, summary, _ = _measure(saved_policy, tmp_path / "run", log=log, on_chunk_done=redone.append)
    assert redone == [1, 2] and summary["chunks_run"] == 2 and summary["chunks_skipped"] == 1
    assert labels.equals(reference)


def test_measure_labels_redoes_chunks_recorded_with_other_settings(saved_policy, tmp_path):
    log = ChunkLog(tmp_path)
    _measure(saved_policy, tmp_path, log=log)
    redone: list[int] = []
    _measure(saved_policy, tmp_path, _score(seed=4), log=log, on_chunk_done=redone.append)
    assert redone == [0, 1, 2], "a chunk log from another fingerprint (or without its table) is not trusted"


def test_measure_labels_of_an_empty_subset_loads_nothing(tmp_path):
    labels, summary, _ = measure_labels(tmp_path / "no-model", PROMPTS.clear(), _score(), 1.0, 4, tmp_path,
                                        ChunkLog(tmp_path), progress=False)
    assert labels.height == 0 and labels.columns == ["id", "pass_rate", "n_correct", "n_failed", "rollouts",
                                                      "n_cut"]
    assert summary["chunks_run"] == 0 and pl.read_parquet(tmp_path / LABELS).height == 0


def test_label_rollouts_sample_with_top_k_and_verify_with_the_timeout_given(saved_policy, tmp_path, monkeypatch):
    import saerl.verify

    spread, _, _ = _measure(saved_policy, tmp_path / "all", _score(), top_k=0)
    assert not spread["pass_rate"].is_in([0.0, 1.0]).all(), "at SPREAD_T sampling from every token spreads"
    top1, _, _ = _measure(saved_policy, tmp_path / "top1", _score(), top_k=1)
    assert dict(zip(top1["id"], top1["pass_rate"], strict=True)) == {"e1": 1.0, "e2": 1.0, "e3": 0.0}, (
        "top_k=1 samples the most likely token only: the greedy answers, whatever the temperature")
    timeouts: list[float] = []
    real = saerl.verify.verify_batch

    def recording(completions, golds, timeout_s=None):
        timeouts.append(timeout_s)
        return real(completions, golds, timeout_s)

    monkeypatch.setattr(saerl.verify, "verify_batch", recording)
    _measure(saved_policy, tmp_path / "timeout", _score(), verify_timeout_s=0.75)
    assert timeouts and set(timeouts) == {0.75}


def _completions(texts: list[str]):
    """What saerl.policy_lm.generate returns for these completions, each ended at EOS after one token."""
    return Completions(texts, [1] * len(texts), [True] * len(texts))


def test_pass_rates_of_prompts_with_integer_ids_join_back_to_them(monkeypatch):
    import saerl.policy_lm
    from saerl.scoring import resolve_difficulty

    monkeypatch.setattr(saerl.policy_lm, "generate", lambda model, tok, texts, *a, **k: _completions(["#### 7"] * len(texts)))
    prompts = PROMPTS.with_columns(id=pl.Series([10, 20, 30]))
    labels = pass_rates(None, None, prompts, 2, 1.0, 4, 2, 0)
    assert labels["id"].to_list() == ["10", "20", "30"] and labels["pass_rate"].to_list() == [1.0, 0.0, 0.0]
    y, source = resolve_difficulty(prompts, labels, "measured")
    assert source == "measured" and y.tolist() == [0.0, 1.0, 1.0]


def test_label_fingerprint_changes_with_every_setting_the_rollouts_read():
    """A recorded chunk is trusted only under the same subset and sampling/verifying settings: each one changes the
    fingerprint (else a rerun with another temperature, length, top_k, timeout... would reuse stale chunks)."""
    ids = ["e1", "e2"]
    base = label_fingerprint(ids, _score(), 1.0, 4, 0, None)
    assert base == label_fingerprint(list(ids), _score(), 1.0, 4, 0, None)
    variants = [label_fingerprint(["e1"], _score(), 1.0, 4, 0, None),
                *(label_fingerprint(ids, _score(**{field: value}), 1.0, 4, 0, None)
                  for field, value in (("label_rollouts", 5), ("label_batch", 8), ("seed", 4), ("label_chunk_rows", 2))),
                label_fingerprint(ids, _score(), 0.5, 4, 0, None), label_fingerprint(ids, _score(), 1.0, 5, 0, None),
                label_fingerprint(ids, _score(), 1.0, 4, 3, None), label_fingerprint(ids, _score(), 1.0, 4, 0, 2.0)]
    assert len({base, *variants}) == len(variants) + 1


def test_pass_rates_count_verifier_failures_per_prompt(monkeypatch):
    """n_failed counts the rollouts the verifier timed out or errored on, per prompt (across rollouts); a wrong or
    unanswered rollout is not a failure."""
    import saerl.policy_lm
    import saerl.verify
    from saerl.verify import VerifyResult

    monkeypatch.setattr(saerl.policy_lm, "generate", lambda model, tok, texts, *a, **k: _completions(list(texts)))
    statuses = {"what is 3 + 4 ?": ["timeout", "correct"], "what is 1 + 1 ?": ["error", "timeout"],
                "what is 2 + 2 ?": ["wrong", "no_answer"]}
    seen: dict[str, int] = {}

    def judge(completions, golds, timeout_s=None):
        out = []
        for c in completions:
            out.append(VerifyResult(statuses[c][seen.get(c, 0)]))
            seen[c] = seen.get(c, 0) + 1
        return out

    monkeypatch.setattr(saerl.verify, "verify_batch", judge)
    labels = pass_rates(None, None, PROMPTS, 2, 1.0, 4, 2, 0)
    assert labels["n_failed"].to_list() == [1, 2, 0] and labels["n_correct"].to_list() == [1, 0, 0]
    assert labels["pass_rate"].to_list() == [0.5, 0.0, 0.0]


def test_pass_rate_profile_counts_never_and_always_solved_and_flags_a_flat_set():
    rates = pl.DataFrame({"pass_rate": [0.0, 0.0, 0.125, 1.0, None]})
    text, flat = pass_rate_profile(rates)
    assert text == "pass rates of 4 prompts: 2 never solved, 1 always solved, 1 in between, mean 0.281" and not flat
    assert pass_rate_profile(pl.DataFrame({"pass_rate": [0.0, 0.0]}))[1]
    assert pass_rate_profile(pl.DataFrame({"pass_rate": []}, schema={"pass_rate": pl.Float64})) == ("no pass rates measured", True)


def test_pass_rates_most_of_which_sit_at_one_end_are_noted_naming_the_policy():
    """GSM8K through the testbed LM: 57 of 60 labelled prompts never solved, and the label stage said nothing
    (difficulty_hat came out nearly constant, just above the score stage's near-constant threshold)."""
    gsm8k = pl.DataFrame({"pass_rate": [0.0] * 57 + [0.125, 0.25, 0.125]})
    notes = saturation_notes(gsm8k, "testbed", 8)
    assert len(notes) == 1
    assert notes[0].startswith("57 of 60 labelled prompts (95%) were never solved by the policy "
                               "(model.name_or_path=testbed) in 8 rollouts each: measured difficulty carries little "
                               "signal")
    assert all(fix in notes[0] for fix in ("stronger policy", "data.difficulty", "score.label_rollouts"))
    easy = saturation_notes(pl.DataFrame({"pass_rate": [1.0] * 9 + [0.5]}), "Qwen/Qwen2.5-0.5B", 4)
    assert len(easy) == 1 and easy[0].startswith("9 of 10 labelled prompts (90%) were always solved by the policy "
                                                 "(model.name_or_path=Qwen/Qwen2.5-0.5B)")
    spread = pl.DataFrame({"pass_rate": [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, None]})  # 2 of 7 at either end
    assert saturation_notes(spread, "testbed", 8) == []
    at_share = int(SATURATED_LABEL_SHARE * 10)  # exactly the share: noted; one fewer: not
    assert saturation_notes(pl.DataFrame({"pass_rate": [0.0] * at_share + [0.5] * (10 - at_share)}), "m", 8)
    assert not saturation_notes(pl.DataFrame({"pass_rate": [0.0] * (at_share - 1) + [0.5] * (11 - at_share)}), "m", 8)
    assert saturation_notes(pl.DataFrame({"pass_rate": []}, schema={"pass_rate": pl.Float64}), "m", 8) == []


def test_the_drawn_labelled_subset_is_capped_and_stays_a_subset_of_the_uncapped_draw():
    """score.label_fraction 0.2 of 500k prompts labelled 100k: 800k rollouts and hours of fits. score.label_max caps
    the draw; the capped draw is part of the uncapped one (the same seeded permutation), for the label and score
    stages alike."""
    from saerl.labels import labelled_subset
    from saerl.property_models import seeded_subset

    ids = [f"p{i:05d}" for i in range(5000)]
    full = seeded_subset(ids, 0.2, 7)
    capped = seeded_subset(ids, 0.2, 7, 300)
    assert full.sum() == 1000 and capped.sum() == 300 and not (capped & ~full).any()
    assert seeded_subset(ids, 0.2, 7, 10**6).tolist() == full.tolist()
    prompts = pl.DataFrame({"id": ids[::-1]})
    assert set(labelled_subset(prompts, 0.2, 7, 300)["id"]) == {i for i, c in zip(ids, capped, strict=True) if c}


# ------------------------------------------------------------------------------- rollouts cut at the limit

LONG_PAIRS = [("what is 3 + 4 ?", "3 + 4 is 7 3 + 4 is 7 #### 7"), ("what is 2 + 2 ?", "2 + 2 is 4 2 + 2 is 4 #### 4")]


@pytest.fixture(scope="module")
def long_solver(tmp_path_factory):
    """A tiny Qwen2 overfitted to solve two prompts right, each in a 13-word solution (then EOS)."""
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    overfit(model, tok, LONG_PAIRS, steps=150)
    out = tmp_path_factory.mktemp("long_solver")
    model.save_pretrained(out)
    save_tokenizer(tok, out)
    return out


def _label_stage(policy, tmp_path, limit: int):
    """The label stage (saerl.runners.compute_label) of `policy` on LONG_PAIRS' prompts, its rollouts cut at
    train.max_completion_length=`limit`. out: (labels.parquet, the build's notes, the stage's metrics)."""
    from saerl.artifacts import ArtifactRef, Build
    from saerl.runners import PROMPTS, compute_label

    ingest = tmp_path / f"ingest{limit}"
    ingest.mkdir()
    pl.DataFrame({"id": ["a", "b"], "prompt": [p for p, _ in LONG_PAIRS], "answer": ["7", "4"]}).write_parquet(
        ingest / PROMPTS)
    cfg = load_config(None, [f"model.name_or_path={policy}", f"train.max_completion_length={limit}",
                             "train.temperature=1.0", "runtime.device=cpu", "runtime.progress=false",
                             "score.label_fraction=1.0", "score.label_rollouts=4", "score.label_batch=8"])
    build = Build(tmp_path / f"out{limit}", {})
    build.path.mkdir()
    metrics = compute_label(cfg, {"ingest": ArtifactRef("ingest", "k", str(ingest))}, build)
    return pl.read_parquet(build.path / LABELS), build.notes.get("notes", []), metrics


def test_label_rollouts_cut_at_the_limit_are_counted_and_noted_naming_the_limit(long_solver, tmp_path):
    """A policy that solves both prompts in 13 words, measured at train.max_completion_length=6: every rollout was
    cut and scored a failure, and the stage said only 'never solved ... use a stronger policy'. labels.parquet now
    counts each prompt's cut rollouts (n_cut), the stage's metric says the share cut, and its notes name the limit
    and say truncation, not the policy, may explain the unsolved prompts. At 30 tokens the same policy solves both,
    none cut, nothing noted."""
    labels, notes, metrics = _label_stage(long_solver, tmp_path, 6)
    assert labels["n_cut"].to_list() == labels["rollouts"].to_list() == [4, 4]
    assert labels["pass_rate"].to_list() == [0.0, 0.0] and metrics["cut_share"] == 1.0
    cut, unsolved = notes
    assert cut.startswith("100% of the label rollouts (8 of 8, in 2 of 2 prompts) were cut at "
                          "train.max_completion_length=6 tokens before they ended")
    assert "raise train.max_completion_length" in cut
    assert "2 of 2 labelled prompts (100%) were never solved" in unsolved
    assert ("100% of their rollouts (8 of 8) were cut at train.max_completion_length=6 tokens before they ended, "
            "so truncation, not the policy, may explain them") in unsolved
    labels, notes, metrics = _label_stage(long_solver, tmp_path, 30)
    assert labels["n_cut"].to_list() == [0, 0] and labels["pass_rate"].to_list() == [1.0, 1.0]
    assert metrics["cut_share"] == 0.0 and not any("cut at" in n for n in notes)


def test_label_cut_note_needs_more_than_the_share_and_an_unsolved_note_says_only_what_was_cut():
    """The cut note fires above health.truncated_share, not at it; a never-solved note whose prompts had no cut
    rollout keeps the plain advice (a stronger policy), and one whose prompts were cut in part says that share."""
    from saerl.labels import cut_notes

    half = pl.DataFrame({"pass_rate": [0.0, 0.5], "rollouts": [4, 4], "n_cut": [4, 0]})
    assert cut_notes(half, 64, 0.5) == [] and len(cut_notes(half, 64, 0.4)) == 1
    uncut = pl.DataFrame({"pass_rate": [0.0] * 9 + [0.5], "rollouts": [4] * 10, "n_cut": [0] * 9 + [4]})
    (note,) = saturation_notes(uncut, "m", 4, limit=64)
    assert "truncation" not in note and "use a stronger policy" in note
    some = uncut.with_columns(n_cut=pl.Series([1] * 9 + [0]))
    (note,) = saturation_notes(some, "m", 4, limit=64)
    assert "25% of their rollouts (9 of 36) were cut at train.max_completion_length=64" in note


# ------------------------------------------------------------------ the labelled prompts against the positions


@pytest.fixture(scope="module")
def context_policies(tmp_path_factory):
    """Two tiny policy folders of one tokenizer: 'gpt' (GPT-2: 16 learned positions) and 'llama' (64 rotary)."""
    from transformers import AutoModelForCausalLM, GPT2Config

    tok = tiny_tokenizer()
    out = tmp_path_factory.mktemp("context")
    AutoModelForCausalLM.from_config(GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=16, n_layer=1,
                                                n_head=2)).save_pretrained(out / "gpt")
    tiny_model(tok, "llama", hidden=16).save_pretrained(out / "llama")
    for folder in ("gpt", "llama"):
        save_tokenizer(tok, out / folder)
    return out


def _count_reads(monkeypatch) -> list[str]:
    """Every read of a model's config or tokenizer from here on (AutoConfig / AutoTokenizer.from_pretrained, the
    policy load's own included), by class name, in a list that grows as they come."""
    from transformers import AutoConfig, AutoTokenizer

    reads: list[str] = []
    for cls in (AutoConfig, AutoTokenizer):
        real = cls.from_pretrained

        def counted(*args, _real=real, _name=cls.__name__, **kwargs):
            reads.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", counted)
    return reads


def test_the_label_stage_reads_the_policy_once_and_checks_the_prompts_against_it_before_generating(
        context_policies, tmp_path, monkeypatch, caplog):
    """The label stage read the policy's config and tokenizer once for its context check and again to load the
    policy to generate (and skipped the check for a hub policy not at hand). The check now runs on the loaded policy,
    before it generates: the stage reads the policy's config and tokenizer as one load does, no more; a GPT-2-style policy (learned
    positions) the prompts overflow is refused naming their ids, with nothing generated; a Llama (rotary) gets a note,
    logged and leading the manifest's notes."""
    import saerl.policy_lm

    for run in ("llama", "fits", "gpt"):
        (tmp_path / run).mkdir()
    reads = _count_reads(monkeypatch)
    load_policy(context_policies / "llama")
    one_load = list(reads)  # the reads of the load alone (its tokenizer reads the config too)
    reads.clear()
    with caplog.at_level("WARNING"):
        _, notes, _ = _label_stage(context_policies / "llama", tmp_path / "llama", 60)
    assert reads == one_load and one_load.count("AutoTokenizer") == 1, "the policy is read once"
    assert notes[0].startswith("2 of 2 labelled prompts, chat-templated, fit the policy's 64-token context but "
                               "leave less than train.max_completion_length=60 tokens")
    assert f"label: {notes[0]}" in caplog.messages
    _, notes, _ = _label_stage(context_policies / "llama", tmp_path / "fits", 12)
    assert not any("chat-templated" in n for n in notes)

    def no_generation(*_a, **_k):
        raise AssertionError("the policy generated before its context was checked")

    monkeypatch.setattr(saerl.policy_lm, "generate", no_generation)
    with pytest.raises(ValueError, match=r"^2 of 2 labelled prompts, chat-templated, plus "
                                         r"train.max_completion_length=12 completion tokens do not fit the policy's 16 "
                                         r"positions: 'a' \(8 tokens\), 'b' \(8 tokens\)\."):
        _label_stage(context_policies / "gpt", tmp_path / "gpt", 12)


def test_a_resumed_label_build_with_no_chunk_left_keeps_its_context_notes(context_policies, tmp_path, monkeypatch,
                                                                          caplog):
    """A build killed after its last chunk and before publishing measures nothing again and loads no policy, so
    nothing checks the prompts again: the notes the check found are kept with the chunk tables and reported again
    (logged and returned); a build measured with other settings keeps none of them."""
    import saerl.policy_lm

    policy, log = context_policies / "llama", ChunkLog(tmp_path)
    first = measure_labels(policy, PROMPTS, _score(), 1.0, 60, tmp_path, log, progress=False)
    assert len(first.fit_notes) == 1 and "fit the policy's 64-token context" in first.fit_notes[0]

    def no_load(*_a, **_k):
        raise AssertionError("the policy was loaded: a chunk was measured again")

    monkeypatch.setattr(saerl.policy_lm, "load_policy", no_load)
    caplog.clear()
    with caplog.at_level("WARNING", logger="saerl.labels"):
        again = measure_labels(policy, PROMPTS, _score(), 1.0, 60, tmp_path, log, progress=False)
    assert again.summary["chunks_run"] == 0 and again.fit_notes == first.fit_notes
    assert [r.getMessage() for r in caplog.records if r.name == "saerl.labels"] == [f"label: {first.fit_notes[0]}"]
    monkeypatch.undo()
    other = measure_labels(policy, PROMPTS, _score(), 1.0, 8, tmp_path, log, progress=False)
    assert other.summary["chunks_run"] == 3 and other.fit_notes == []
