"""benchmarks/rl_learnability.py: the testbed it reuses is the one its config asks for."""

import json
import sys
from pathlib import Path

import polars as pl
import pytest
from bench import load_benchmark

from saerl.artifacts import MANIFEST


def _fake_run(bench, monkeypatch, tmp_path) -> list:
    """Stand-ins for the testbed build, the fresh draws, scoring and GRPO; returns the list of builds made."""
    builds = []

    def fake_build(tb, root):
        builds.append(tb.n_pool)
        (root / "lm").mkdir(parents=True, exist_ok=True)
        (root / "lm" / "config.json").write_text("{}")

    ev = pl.DataFrame({"id": ["a", "b", "c"], "prompt": ["1+1"] * 3, "answer": ["2"] * 3, "difficulty": [1, 2, 1]})
    monkeypatch.setattr(bench, "build_testbed", fake_build)
    monkeypatch.setattr(bench, "read_world", lambda root: {})
    monkeypatch.setattr(bench, "fresh_problems", lambda *a, **kw: ev)
    monkeypatch.setattr(bench, "load_policy", lambda model_dir: (None, None))
    monkeypatch.setattr(bench, "score_policy", lambda *a: ([True, False, False], [0.5, 0.0, 0.5]))
    monkeypatch.setattr(bench, "train_grpo", lambda *a, **kw: {
        "model_dir": str(tmp_path / "out"), "steps": 2, "seconds": 6.0, "order": ["a", "b"],
        "log": [{"reward": 0.1}, {"reward": 0.3}]})
    monkeypatch.setattr(bench.torch, "set_num_threads", lambda n: None)
    return builds


def _main(bench, monkeypatch, tmp_path, *overrides: str) -> None:
    monkeypatch.setattr(sys, "argv", ["rl_learnability.py", "--testbed-dir", str(tmp_path / "tb"), "--out",
                                      str(tmp_path / "out"), "--max-steps", "2", *overrides])
    bench.main()


def test_a_testbed_built_from_another_config_is_rebuilt_not_reused(tmp_path, monkeypatch, capsys):
    """The built testbed was reused whenever its LM existed, so testbed.* overrides (or another --config) silently
    trained and scored the world of an earlier run; it is now reused only for the same testbed config."""
    bench = load_benchmark("rl_learnability")
    builds = _fake_run(bench, monkeypatch, tmp_path)
    _main(bench, monkeypatch, tmp_path, "testbed.n_pool=300")
    _main(bench, monkeypatch, tmp_path, "testbed.n_pool=300")
    assert builds == [300]  # the same config: the build is reused
    _main(bench, monkeypatch, tmp_path, "testbed.n_pool=400")
    assert builds == [300, 400]
    (tmp_path / "tb" / bench.STAMP).unlink()  # a folder of unknown origin (built before the stamp): rebuilt
    _main(bench, monkeypatch, tmp_path, "testbed.n_pool=400")
    assert builds == [300, 400, 400]
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("RESULT rl_gain_points=")


def test_a_pipeline_testbed_artifact_is_reused_only_for_its_own_key(tmp_path, monkeypatch):
    from saerl.config import load_config
    from saerl.pipeline import input_keys
    from saerl.stages import stage_key

    bench = load_benchmark("rl_learnability")
    builds = _fake_run(bench, monkeypatch, tmp_path)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")  # the script's default
    key = stage_key(cfg, "testbed", input_keys(cfg, "testbed", {}))
    artifact = tmp_path / "root" / "testbed" / key
    (artifact / "lm").mkdir(parents=True)
    (artifact / "lm" / "config.json").write_text("{}")
    (artifact / MANIFEST).write_text(json.dumps({"config": {}}))
    monkeypatch.setattr(sys, "argv", ["rl_learnability.py", "--testbed-dir", str(artifact), "--out",
                                      str(tmp_path / "out"), "--max-steps", "2"])
    bench.main()
    assert builds == []  # the demo's own testbed artifact
    monkeypatch.setattr(sys, "argv", [*sys.argv, "testbed.n_pool=300"])
    with pytest.raises(SystemExit, match="another testbed config"):
        bench.main()
    assert builds == [] and not (artifact / bench.STAMP).exists()  # never built over
