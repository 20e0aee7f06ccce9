"""Held-out evaluation is one heldout artifact per policy (arm x seed, the base policy, its reach probe), and the
evaluate stage only compares them: a run killed after some evaluations redoes only the others and publishes the same
tables as an uninterrupted run; a change of how the arms are compared, or a new seed, generates nothing again for the
policies already evaluated. No model: loading and generation are stubbed on hand-made training artifacts (as
test_runners' evaluate test), and the stages run through saerl.pipeline.run_stage as the flow runs them."""

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from stand_in import stand_in_load

import saerl.evaluate
import saerl.policy_lm
from saerl.artifacts import ArtifactRef, ArtifactStore
from saerl.config import load_config
from saerl.evaluate import REACH_SEED
from saerl.pipeline import heldout_variants, resolve_upstream, run_label, run_stage
from saerl.runners import CURVE_PROBLEMS, INGEST_SCHEMA, whole_set
from saerl.stages import STAGES

pytestmark = pytest.mark.slow  # each test runs the heldout and evaluate stages end to end, some twice

RUNS = [("saerl", 0), ("saerl", 1), ("vanilla", 0), ("vanilla", 1)]  # train_runs' order: sorted by (arm, seed)
EVERY = [(f"train-{arm}-{seed}", seed) for arm, seed in RUNS] + [("base", 0), ("base", REACH_SEED)]  # evaluated, in order
TABLES = ("eval.parquet", "reach_probe.parquet", "summary.parquet", "comparison.parquet", "gains.parquet",
          "curves.parquet", "steps_to_target.parquet")


class Killed(RuntimeError):
    """The stand-in for a kill in the middle of an evaluation."""


def _train_inputs(root: Path, runs: list[tuple[str, int]] = RUNS) -> dict[str, ArtifactRef]:
    """Hand-made train artifacts (policy/ empty: loading is stubbed) and a testbed ref for the base policy."""
    (root / "testbed").mkdir(parents=True, exist_ok=True)  # read by nothing here (loading is stubbed), yet there
    inputs = {"testbed": ArtifactRef("testbed", "t", str(root / "testbed"))}
    (root / "ingest").mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"id": ["a"], "prompt": ["What is 5+5?"]}).write_parquet(root / "ingest" / "prompts.parquet")
    inputs["ingest"] = ArtifactRef("ingest", "i", str(root / "ingest"))
    for arm, seed in runs:
        folder = root / f"train-{arm}-{seed}"
        (folder / "policy").mkdir(parents=True, exist_ok=True)
        rows = [{"step": step, "set": "heldout", "id": f"q{i}", "correct": (i + step // 10 + seed) % 3 == 0}
                for step in (0, 10) for i in range(4)]
        per = pl.DataFrame(rows)
        per.write_parquet(folder / CURVE_PROBLEMS)
        (per.group_by("step", "set").agg(pl.col("correct").cast(pl.Float64).mean().alias("greedy"))
         .with_columns(n=pl.lit(4, pl.Int64)).sort("step").write_parquet(folder / "curve.parquet"))
        pl.DataFrame({"step": [10], "reward": [0.5], "frac_reward_zero_std": [0.0]}).write_parquet(folder / "log.parquet")
        pl.DataFrame({"step": [10] * 4, "id": ["a", "b", "c", "d"]}).write_parquet(folder / "trained_order.parquet")
        inputs[f"train:{arm}:{seed}"] = ArtifactRef("train", f"{arm}{seed}", str(folder))
    return inputs


def _fake_eval(model: str, tok: None, sets: dict, cfg: object, max_new_tokens: int, seed: int) -> pl.DataFrame:
    """A deterministic evaluation that depends on the policy (its path) and the seed, with every column type the real
    one has (Int32 sample and completion_len, a timeout status among them)."""
    salt = sum(map(ord, str(model))) + 7 * seed
    n = 6
    status = ["correct" if (i + salt) % 2 == 0 else ("timeout" if i == 5 else "wrong") for i in range(n)] * 2
    return pl.DataFrame({"set": ["heldout"] * 2 * n, "id": [f"q{i}" for i in range(n)] * 2,
                         "sample": [0] * n + [1] * n, "correct": [s == "correct" for s in status], "status": status,
                         "completion_len": [3 + i for i in range(2 * n)], "truncated": [False] * 2 * n,
                         "difficulty": [str(i % 3) for i in range(n)] * 2},
                        schema_overrides={"sample": pl.Int32, "completion_len": pl.Int32})


@pytest.fixture
def stubbed(monkeypatch):
    """Stub model loading, generation and the held-out sets; returns the list of (policy, seed) evaluated and the
    list of policies loaded, in order, and `kill_at`: evaluate_loaded raises on that call (1-based; 0 = never)."""
    state = {"calls": [], "loads": [], "kill_at": 0}

    def load(path, *a, **k):
        state["loads"].append(Path(path).parent.name if "train-" in str(path) else "base")
        return stand_in_load(path)

    def evaluate(model, tok, sets, cfg, max_new_tokens, seed, greedy=True, **kw):
        state["calls"].append((Path(model).parent.name if "train-" in model else "base", seed))
        state.setdefault("greedy", []).append(greedy)
        state.setdefault("probe", []).append(kw.get("probe", False))
        if len(state["calls"]) == state["kill_at"]:
            raise Killed("killed in the middle of an evaluation")
        return _fake_eval(model, tok, sets, cfg, max_new_tokens, seed)

    monkeypatch.setattr(saerl.policy_lm, "load_policy", load)
    monkeypatch.setattr(saerl.evaluate, "evaluate_loaded", evaluate)
    sets = {"heldout": pl.DataFrame({"id": ["q0"], "prompt": ["What is 1+1?"]})}
    read = pl.DataFrame([whole_set(name, df.height) for name, df in sets.items()], schema=INGEST_SCHEMA)
    monkeypatch.setattr("saerl.runners.read_eval_sets", lambda cfg, inputs: (sets, read))
    return state


def _cfg(*overrides: str):
    return load_config(None, ["eval.base_policy=true", "eval.steps_bootstrap=20", "train.arms=[saerl,vanilla]",
                              "train.seeds=[0,1]", *overrides])


def _run(store: ArtifactStore, inputs: dict[str, ArtifactRef], cfg=None) -> dict[str, object]:
    """Every heldout run, then evaluate, as the flow chains them: {run name: StageResult}."""
    cfg = cfg or _cfg()
    refs, results = dict(inputs), {}
    runs = [("heldout", v) for v in heldout_variants(cfg)] + [("evaluate", None)]
    for stage, variant in runs:
        upstream = resolve_upstream(stage, STAGES[stage].inputs, refs, variant)
        name = run_label(stage, variant)
        results[name] = run_stage(store, cfg, stage, upstream, variant=variant)
        refs[name] = results[name].ref
    return results


def _computed(results: dict[str, object]) -> list[str]:
    return [name for name, r in results.items() if r.computed]


def _tables(folder: Path) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(folder / name) for name in TABLES}


@pytest.mark.parametrize("kill_at", [2, 6])  # in the second trained policy's evaluation; in the base policy's probe
def test_a_killed_evaluation_leaves_the_finished_ones_and_a_rerun_writes_the_same_tables(tmp_path, stubbed, kill_at):
    """Each policy's evaluation is published as its own heldout artifact: a run killed in the middle of one redoes
    that one and those after it, loads only their policies, and evaluate publishes the same tables (eval.parquet row
    for row) as an uninterrupted run."""
    inputs = _train_inputs(tmp_path / "inputs")
    whole = _run(ArtifactStore(tmp_path / "whole"), inputs)
    assert stubbed["calls"] == EVERY
    # the probe pass (the starting policy at REACH_SEED) generates no greedy pass: nothing reads it
    assert stubbed["greedy"] == [seed != REACH_SEED or policy != "base" for policy, seed in EVERY]
    # and it alone draws from the probe's own seed stream (saerl.evaluate._seed_for), apart from every scored pass's
    assert stubbed["probe"] == [not greedy for greedy in stubbed["greedy"]]
    expected = _tables(Path(whole["evaluate"].ref.path))

    stubbed["calls"].clear()
    stubbed["loads"].clear()
    stubbed["kill_at"] = kill_at
    store = ArtifactStore(tmp_path / "killed")
    with pytest.raises(Killed):
        _run(store, inputs)
    assert len(list((tmp_path / "killed" / "heldout").glob("*/eval.parquet"))) == kill_at - 1  # published ones

    stubbed["calls"].clear()
    stubbed["loads"].clear()
    stubbed["kill_at"] = 0
    resumed = _run(store, inputs)
    assert stubbed["calls"] == EVERY[kill_at - 1:]  # only what the killed run left
    assert stubbed["loads"] == [c for c, _ in EVERY[kill_at - 1:]]
    assert len(_computed(resumed)) == len(EVERY) - kill_at + 2  # the unfinished evaluations and evaluate
    got = _tables(Path(resumed["evaluate"].ref.path))
    for name in ("eval.parquet", "reach_probe.parquet"):  # the evaluations themselves: row for row, bit for bit
        assert got[name].equals(expected[name]), name
    for name in TABLES:  # what is derived from them: summarize_eval's standard errors move by an ulp from call to
        assert_frame_equal(got[name], expected[name], rel_tol=1e-12, abs_tol=0.0)  # call on one frame (group order)
    text = "comparison.txt"
    assert (Path(resumed["evaluate"].ref.path) / text).read_text() == (Path(whole["evaluate"].ref.path) / text).read_text()


def test_a_new_interval_level_or_steps_target_generates_nothing_again(tmp_path, stubbed):
    """Before, every field of eval was in one stage's key: a new eval.ci_level (or bootstrap count, or steps target)
    generated every policy's completions again. Now evaluate alone reruns, reads the same evaluations and writes
    intervals of the new level."""
    inputs = _train_inputs(tmp_path / "inputs")
    store = ArtifactStore(tmp_path / "root")
    first = _run(store, inputs)
    stubbed["calls"].clear()
    again = _run(store, inputs, _cfg("eval.ci_level=0.8", "eval.steps_bootstrap=30", "eval.target_gain_share=0.5"))
    assert stubbed["calls"] == [] and _computed(again) == ["evaluate"]
    old, new = (pl.read_parquet(Path(r["evaluate"].ref.path) / "comparison.parquet") for r in (first, again))
    assert old["accuracy"].equals(new["accuracy"])
    width = (pl.col("ci_high") - pl.col("ci_low")).sum()
    assert new.select(width).item() < old.select(width).item()  # an 80% interval is narrower than a 95% one


def test_a_new_seed_or_arm_evaluates_only_its_own_policies(tmp_path, stubbed):
    """Adding a training seed evaluates that seed's policies alone: the other runs' evaluations and the starting
    policy's are reused."""
    store = ArtifactStore(tmp_path / "root")
    two = [("saerl", 0), ("vanilla", 0)]
    _run(store, _train_inputs(tmp_path / "inputs", two), _cfg("train.seeds=[0]"))
    stubbed["calls"].clear()
    results = _run(store, _train_inputs(tmp_path / "inputs"), _cfg("train.seeds=[0,1]"))
    assert stubbed["calls"] == [("train-saerl-1", 1), ("train-vanilla-1", 1)]
    assert _computed(results) == ["heldout:saerl:1", "heldout:vanilla:1", "evaluate"]


def test_a_recorded_evaluation_of_other_settings_is_not_reused(tmp_path, stubbed):
    """A generation setting (here eval.k_samples) is in every evaluation's key: each policy is evaluated again."""
    inputs = _train_inputs(tmp_path / "inputs")
    store = ArtifactStore(tmp_path / "a")
    _run(store, inputs)
    stubbed["calls"].clear()
    _run(store, inputs, _cfg("eval.k_samples=2"))
    assert stubbed["calls"] == EVERY
