"""saerl.runners: the steps-to-target lines of comparison.txt, and the curriculum stage's orders and counts."""

import polars as pl

from saerl.artifacts import ArtifactRef, Build
from saerl.config import PipelineConfig
from saerl.evaluate import steps_to_target
from saerl.runners import ARM_ORDERS, ORDER, SCORES, compute_curriculum, format_steps


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
    assert "0 steps (at the target from the start)" in reach and "ratio" not in reach
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
    assert "prompts generated" not in format_steps(stt)
    costed = stt.with_columns(mean_prompts=pl.when(pl.col("arm") == "saerl").then(150.0).otherwise(600.0),
                              prompts_ratio=pl.when(pl.col("arm") == "saerl").then(0.25).otherwise(1.0))
    lines = {tuple(line.split()[:2]): line for line in format_steps(costed).splitlines()[1:]}
    assert lines[("heldout", "saerl")].endswith("ratio 0.50x; 150 prompts generated for (0.25x)")
    assert lines[("heldout", "vanilla")].endswith("600 prompts generated for (1.00x)")


def test_curriculum_counts_the_quality_filter_and_the_difficulty_cap_apart(tmp_path):
    scores = pl.DataFrame({"id": [f"p{i}" for i in range(20)], "cluster": [i % 2 for i in range(20)],
                           "difficulty_hat": [float(i) for i in range(20)],
                           "quality_hat": [0.1] * 4 + [0.9] * 16, "kept": [True] * 20})
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
    filter_only = pl.read_parquet(out_dir / ARM_ORDERS["filter_only"])
    assert set(filter_only["id"]) == set(order["id"])  # the same prompts, shuffled
    order_only = pl.read_parquet(out_dir / ARM_ORDERS["order_only"])
    assert set(order_only["id"]) == {f"p{i}" for i in range(10)}  # no quality filter: the cap is read on all 20
