"""benchmarks/gpu_path.py: the RESULT figures come from the run's artifacts, cached or computed."""

import json

from bench import load_benchmark

from saerl.artifacts import MANIFEST, ArtifactRef
from saerl.pipeline import StageResult


def _result(tmp_path, name, seconds, metrics, computed, lookup_s):
    """A StageResult whose artifact's manifest says it took `seconds` to build."""
    folder = tmp_path / name.replace(":", "_")
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"seconds": seconds, "metrics": metrics}))
    return StageResult(ArtifactRef(name.split(":")[0], "k", str(folder)), computed, lookup_s, metrics)


def test_stage_figures_read_the_artifacts_not_the_cache_lookup(tmp_path):
    """A rerun reuses every stage (its StageResult seconds are the cache lookup's, ~0): the throughput still
    comes from the build that computed each stage, over the prompts and steps it really ran."""
    bench = load_benchmark("gpu_path")
    results = {
        "extract": _result(tmp_path, "extract", 20.0, {"n_prompts_total": 400.0}, False, 0.002),
        "train:saerl:0": _result(tmp_path, "train:saerl:0", 30.0, {"steps": 3.0}, False, 0.001),
        "train:vanilla:0": _result(tmp_path, "train:vanilla:0", 50.0, {"steps": 5.0}, True, 50.2),
    }
    assert bench.stage_figures(results) == {"extract_prompts_per_s": 20.0, "grpo_s_per_step": 10.0}
    figures = bench.stage_figures({})
    assert all(v != v for v in figures.values())  # nan without the stages
