"""benchmarks/rerun_cost.py: the stage runs a change must recompute come from the plan."""

from pathlib import Path

from bench import load_benchmark

from saerl.config import load_config

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_downstream_runs_follow_what_each_run_reads():
    """A curriculum change recomputes the curriculum, the arms that read it, their held-out evaluations and evaluate; with the vanilla arm alone
    nothing reads the curriculum (its order is a shuffle of the pool), so the curriculum alone. A score change
    reaches properties too, never the stages above it."""
    bench = load_benchmark("rerun_cost")
    both = load_config(SMOKE, ["train.arms=[saerl, vanilla]", "train.seeds=[0]"])
    assert bench.downstream_runs(both, "curriculum") == {"curriculum", "train:saerl:0", "heldout:saerl:0", "evaluate"}
    assert bench.downstream_runs(load_config(SMOKE, ["train.arms=[vanilla]"]), "curriculum") == {"curriculum"}
    score = bench.downstream_runs(both, "score")
    assert {"score", "properties", "curriculum", "evaluate"} <= score and not score & {"ingest", "extract", "encode"}
    assert "train:vanilla:0" not in score
