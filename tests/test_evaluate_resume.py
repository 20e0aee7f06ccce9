"""The evaluate stage resumes: each evaluation (arm x seed, the base policy, its reach probe) is a chunk of the build,
so a run killed after some of them redoes only the others and publishes the same tables as an uninterrupted run.
No model: loading and generation are stubbed on hand-made training artifacts (as test_runners' evaluate test)."""

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import saerl.evaluate
import saerl.policy_lm
from saerl.artifacts import CHUNK_DIR, ArtifactRef, ArtifactStore
from saerl.config import load_config
from saerl.evaluate import REACH_SEED
from saerl.runners import CURVE_PROBLEMS, EVAL_PARTS, compute_evaluate

RUNS = [("saerl", 0), ("saerl", 1), ("vanilla", 0), ("vanilla", 1)]  # train_runs' order: sorted by (arm, seed)
TABLES = ("eval.parquet", "reach_probe.parquet", "summary.parquet", "comparison.parquet", "gains.parquet",
          "curves.parquet", "steps_to_target.parquet")


class Killed(RuntimeError):
    """The stand-in for a kill in the middle of an evaluation."""


def _train_inputs(root: Path) -> dict[str, ArtifactRef]:
    """Hand-made train artifacts (policy/ empty: loading is stubbed) and a testbed ref for the base policy."""
    inputs = {"testbed": ArtifactRef("testbed", "t", str(root / "testbed"))}
    (root / "ingest").mkdir(parents=True)
    pl.DataFrame({"id": ["a"], "prompt": ["What is 5+5?"]}).write_parquet(root / "ingest" / "prompts.parquet")
    inputs["ingest"] = ArtifactRef("ingest", "i", str(root / "ingest"))
    for arm, seed in RUNS:
        folder = root / f"train-{arm}-{seed}"
        (folder / "policy").mkdir(parents=True)
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
        return str(path), None

    def evaluate(model, tok, sets, cfg, max_new_tokens, seed):
        state["calls"].append((Path(model).parent.name if "train-" in model else "base", seed))
        if len(state["calls"]) == state["kill_at"]:
            raise Killed("killed in the middle of an evaluation")
        return _fake_eval(model, tok, sets, cfg, max_new_tokens, seed)

    monkeypatch.setattr(saerl.policy_lm, "load_policy", load)
    monkeypatch.setattr(saerl.evaluate, "evaluate_loaded", evaluate)
    monkeypatch.setattr("saerl.runners.eval_sets", lambda cfg, inputs: {"heldout": pl.DataFrame({"id": ["q0"], "prompt": ["What is 1+1?"]})})
    return state


def _cfg():
    return load_config(None, ["eval.base_policy=true", "eval.steps_bootstrap=20"])


def _run(store: ArtifactStore, inputs: dict[str, ArtifactRef]):
    cfg = _cfg()
    return store.ensure("evaluate", "k" * 20, lambda b: compute_evaluate(cfg, inputs, b))


def _tables(folder: Path) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(folder / name) for name in TABLES}


@pytest.mark.parametrize("kill_at", [2, 6])  # in the second trained policy's evaluation; in the base policy's probe
def test_a_killed_evaluate_redoes_only_the_unfinished_evaluations_and_writes_the_same_tables(tmp_path, stubbed,
                                                                                             kill_at, caplog):
    """Before: every evaluation ran in one build with no chunk log, so a run killed at the last policy redid them all.
    Now the resumed run calls evaluate_loaded only for the evaluations the killed one did not finish, loads only
    their policies, and publishes the same tables (eval.parquet row for row) as an uninterrupted run."""
    inputs = _train_inputs(tmp_path / "inputs")
    every = [(f"train-{arm}-{seed}", seed) for arm, seed in RUNS] + [("base", 0), ("base", REACH_SEED)]

    whole, _ = _run(ArtifactStore(tmp_path / "whole"), inputs)
    assert stubbed["calls"] == every
    expected = _tables(Path(whole.path))

    stubbed["calls"].clear()
    stubbed["loads"].clear()
    stubbed["kill_at"] = kill_at
    store = ArtifactStore(tmp_path / "killed")
    with pytest.raises(Killed):
        _run(store, inputs)
    partial = store.partial_path("evaluate", "k" * 20)
    finished = every[:kill_at - 1]
    assert sorted(p.stem for p in (partial / CHUNK_DIR / EVAL_PARTS).glob("*.parquet")) == sorted({c for c, _ in finished})
    assert not store.path("evaluate", "k" * 20).exists()

    stubbed["calls"].clear()
    stubbed["loads"].clear()
    stubbed["kill_at"] = 0
    with caplog.at_level("INFO", logger="saerl.runners"):
        resumed, computed = _run(store, inputs)
    assert computed and stubbed["calls"] == every[kill_at - 1:]  # only what the killed run left
    assert stubbed["loads"] == list(dict.fromkeys(c for c, _ in every[kill_at - 1:]))  # each left policy once
    reused = [c for c, _ in finished]
    if kill_at == 6:
        reused = reused[:-1] + ["base"]  # the base evaluation is its own chunk; its probe was left
    assert any(r.getMessage().startswith(f"evaluate: reused {len(reused)} of 6 evaluations") for r in caplog.records)
    assert resumed.manifest()["evaluations"]["reused"] == reused
    got = _tables(Path(resumed.path))
    for name in ("eval.parquet", "reach_probe.parquet"):  # the evaluations themselves: row for row, bit for bit
        assert got[name].equals(expected[name]), name
    for name in TABLES:  # what is derived from them: summarize_eval's standard errors move by an ulp from call to
        assert_frame_equal(got[name], expected[name], rel_tol=1e-12, abs_tol=0.0)  # call on one frame (group order)
    assert (Path(resumed.path) / "comparison.txt").read_text() == (Path(whole.path) / "comparison.txt").read_text()
    # the parts and the chunk log are gone from both published artifacts, as the label stage's parts are
    for ref in (whole, resumed):
        assert not (Path(ref.path) / EVAL_PARTS).exists() and not (Path(ref.path) / CHUNK_DIR).exists()
        assert not any(f.startswith((EVAL_PARTS, CHUNK_DIR)) for f in ref.manifest()["files"])


def test_a_recorded_evaluation_of_other_settings_is_not_reused(tmp_path, stubbed):
    """A part recorded with another fingerprint (here another eval.k_samples under the same partial folder) is
    evaluated again, not read back."""
    inputs = _train_inputs(tmp_path / "inputs")
    store = ArtifactStore(tmp_path / "a")
    stubbed["kill_at"] = 3
    with pytest.raises(Killed):
        _run(store, inputs)
    stubbed["calls"].clear()
    stubbed["kill_at"] = 0
    cfg = load_config(None, ["eval.base_policy=true", "eval.steps_bootstrap=20", "eval.k_samples=2"])
    store.ensure("evaluate", "k" * 20, lambda b: compute_evaluate(cfg, inputs, b))
    assert len(stubbed["calls"]) == 6


def test_an_evaluate_killed_between_its_last_output_and_publishing_redoes_no_evaluation(tmp_path, stubbed,
                                                                                      monkeypatch):
    """The parts used to be removed once every output was written, before the artifact was published: a kill in
    that window (hashing a large artifact takes a while) left a chunk log naming every evaluation and no part to
    read back, so the rerun evaluated every policy again. The parts now stay with the chunk log until publish."""
    inputs = _train_inputs(tmp_path / "inputs")
    store = ArtifactStore(tmp_path / "root")

    def killed_publish(*_a, **_k):
        raise Killed("killed while publishing")

    with monkeypatch.context() as m:
        m.setattr(ArtifactStore, "publish", killed_publish)
        with pytest.raises(Killed):
            _run(store, inputs)
    assert stubbed["calls"] and not store.path("evaluate", "k" * 20).exists()
    stubbed["calls"].clear()
    stubbed["loads"].clear()
    ref, computed = _run(store, inputs)
    assert computed and stubbed["calls"] == [] and stubbed["loads"] == []
    assert not (Path(ref.path) / CHUNK_DIR).exists() and (Path(ref.path) / "eval.parquet").is_file()
