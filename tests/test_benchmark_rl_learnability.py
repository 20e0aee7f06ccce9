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


def test_the_fresh_pool_holds_the_whole_step_budget(tmp_path, monkeypatch):
    """--pool-n (10,000) was drawn whatever the budget: --max-steps 1000 at 16 prompts a step reads 16,000, so 6,000
    prompts came round a second time, against the promise that RL never sees a prompt twice within its budget. The
    pool now holds the stream of the step budget (the wall clock's step cap without --max-steps)."""
    from saerl.config import TrainConfig

    bench = load_benchmark("rl_learnability")
    assert bench.pool_size(TrainConfig(), 16, 1000, 10_000) == 16_000
    assert bench.pool_size(TrainConfig(), 16, 100, 10_000) == 10_000  # --pool-n when it is the longer
    assert bench.pool_size(TrainConfig(algorithm="dapo", dynamic_sampling_max_rounds=2), 4, 10, 0) == 120
    _fake_run(bench, monkeypatch, tmp_path)
    drawn, steps = [], []
    fake_fresh = bench.fresh_problems
    monkeypatch.setattr(bench, "fresh_problems", lambda tb, world, n, *a, **kw: drawn.append(n) or fake_fresh())
    fake_train = bench.train_grpo
    monkeypatch.setattr(bench, "train_grpo", lambda *a, **kw: steps.append(kw["max_steps"]) or fake_train())
    _main(bench, monkeypatch, tmp_path, "--max-steps", "1000")
    assert drawn == [1000, 16_000] and steps == [1000]  # held-out set, then the pool of 1000 steps x 16 prompts
    drawn.clear()
    monkeypatch.setattr(sys, "argv", ["rl_learnability.py", "--testbed-dir", str(tmp_path / "tb"), "--out",
                                      str(tmp_path / "out"), "--minutes", "5"])
    bench.main()
    assert drawn[1] == 16 * int(300 / bench.MIN_STEP_SECONDS) > 10_000  # the most steps 5 minutes can buy


def _publish_testbed(root: Path, cfg) -> Path:
    """A published pipeline testbed artifact of cfg under `root` (an lm/ folder and a verified manifest), keyed as
    saerl.pipeline.run_stage keys it."""
    from saerl.artifacts import ArtifactStore
    from saerl.pipeline import input_keys
    from saerl.stages import stage_key

    def write(build):
        (build.path / "lm").mkdir(parents=True)
        (build.path / "lm" / "config.json").write_text("{}")

    key = stage_key(cfg, "testbed", input_keys(cfg, "testbed", {}))
    ref, _ = ArtifactStore(root).ensure("testbed", key, write, {"config": {}})
    return Path(ref.path)


def test_without_testbed_dir_the_configs_pipeline_testbed_artifact_is_reused(tmp_path, monkeypatch, capsys):
    """--testbed-dir defaulted to .saerl/bench/testbed and only that folder was looked at, so --quick after a demo
    pretrained a new LM first (330 s) although the docstring promised the demo's testbed. Without --testbed-dir the
    pipeline's complete testbed artifact of the config (<runtime.artifact_root>/testbed/<key>) is now read, and
    the script says which; with none, it says it is building (pretraining) before it does."""
    from saerl.config import load_config

    bench = load_benchmark("rl_learnability")
    builds = _fake_run(bench, monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)  # the default artifact root (.saerl) and build folder are relative to the cwd
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    artifact = _publish_testbed(tmp_path / ".saerl", cfg)
    trained = []
    fake_train = bench.train_grpo
    monkeypatch.setattr(bench, "train_grpo", lambda lm, *a, **kw: trained.append(Path(lm)) or fake_train())
    argv = ["rl_learnability.py", "--out", str(tmp_path / "out"), "--max-steps", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    assert builds == [] and trained == [artifact.resolve() / "lm"]
    out = capsys.readouterr().out
    assert f"reusing the pipeline's testbed artifact {artifact.resolve()}" in out and bench.BUILDING not in out
    monkeypatch.setattr(sys, "argv", [*argv, "testbed.n_pool=300"])  # another testbed config: no artifact of its key
    bench.main()
    assert builds == [300] and trained[-1] == Path(bench.BUILD_DIR) / "lm"
    out = capsys.readouterr().out
    assert "no complete testbed artifact of this config" in out
    assert f"{bench.BUILDING} in {bench.BUILD_DIR}" in out
    bench.main()  # its own build is reused, stamped with the key
    assert builds == [300] and "reusing this script's testbed build" in capsys.readouterr().out


def test_an_incomplete_pipeline_testbed_artifact_is_not_reused(tmp_path, monkeypatch):
    """A published artifact whose files no longer match its manifest is not the config's testbed: the script
    builds its own instead (and never writes into the artifact)."""
    from saerl.config import load_config

    bench = load_benchmark("rl_learnability")
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml",
                      [f"runtime.artifact_root={tmp_path / 'root'}"])
    assert bench.pipeline_testbed(cfg) is None and not (tmp_path / "root").exists()  # nothing created
    artifact = _publish_testbed(tmp_path / "root", cfg)
    assert bench.pipeline_testbed(cfg) == artifact
    (artifact / "lm" / "config.json").write_text('{"changed": 1}')
    assert bench.pipeline_testbed(cfg) is None
    assert bench.choose_testbed(cfg, None) == Path(bench.BUILD_DIR)
    assert bench.choose_testbed(cfg, str(tmp_path / "x")) == tmp_path / "x"  # --testbed-dir wins
