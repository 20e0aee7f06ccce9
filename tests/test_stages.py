"""saerl.stages: every config field is read by a stage or declared result-neutral; keys follow slices."""

from saerl.config import PipelineConfig, field_paths, load_config
from saerl.stages import RESULT_NEUTRAL, STAGES, stage_key


def _read_by(path: str) -> list[str]:
    return [s.name for s in STAGES.values() if any(path == r or path.startswith(r + ".") for r in s.reads)]


def test_every_field_is_read_by_a_stage_or_result_neutral():
    orphans = [p for p in field_paths()
               if not _read_by(p) and not any(p == n or p.startswith(n + ".") for n in RESULT_NEUTRAL)]
    assert orphans == [], f"config fields no stage reads (declare them in saerl/stages.py): {orphans}"


def test_declared_reads_exist_in_schema():
    paths = field_paths()
    for s in STAGES.values():
        for r in s.reads:
            assert any(p == r or p.startswith(r + ".") for p in paths), f"{s.name} reads unknown field {r}"


def test_inputs_are_upstream_only():
    names = list(STAGES)
    for s in STAGES.values():
        for i in s.inputs:
            assert names.index(i) < names.index(s.name), f"{s.name} reads later stage {i}"


def test_curriculum_change_leaves_upstream_keys_alone():
    a, b = PipelineConfig(), load_config(None, ["curriculum.mix_ratio=0.5"])
    for stage in ("extract", "sae", "encode", "score"):
        assert stage_key(a, stage, {}) == stage_key(b, stage, {})
    assert stage_key(a, "curriculum", {}) != stage_key(b, "curriculum", {})


def test_key_depends_on_inputs_and_result_neutral_fields_do_not_matter():
    a = PipelineConfig()
    assert stage_key(a, "encode", {"extract": "x"}) != stage_key(a, "encode", {"extract": "y"})
    b = load_config(None, ["tracking.enabled=false", "runtime.artifact_root=/elsewhere", "name=other"])
    assert all(stage_key(a, s, {}) == stage_key(b, s, {}) for s in STAGES)


def test_difficulty_pool_reruns_scoring_only():
    a, b = PipelineConfig(), load_config(None, ["score.difficulty_pool=max"])
    assert all(stage_key(a, s, {}) == stage_key(b, s, {}) for s in ("extract", "sae", "encode", "label"))
    assert stage_key(a, "score", {}) != stage_key(b, "score", {})


def _key(stage: str, *overrides: str) -> str:
    return stage_key(load_config(None, list(overrides)), stage, {})


def test_label_key_follows_how_rollouts_sample_and_are_verified_not_the_difficulty_source():
    base = _key("label")
    assert _key("label", "train.top_k=20") != base, "label rollouts sample with train.top_k"
    assert _key("label", "train.verify_timeout_s=1.5") != base, "label checks are bounded by train.verify_timeout_s"
    assert _key("label", "score.difficulty_source=measured") == base, "it decides whether label runs, not what it writes"
    assert _key("score", "score.difficulty_source=measured") != _key("score")


def test_checkpoint_settings_do_not_retrain():
    base = _key("train")
    assert _key("train", "train.save_every=10") == base
    assert _key("train", "train.keep_checkpoints=5") == base
    assert _key("train", "train.activation_checkpointing=false") == base, "the same update (tests/test_rl.py)"
    assert {"train.save_every", "train.keep_checkpoints", "train.activation_checkpointing"} <= set(RESULT_NEUTRAL)


def test_extraction_of_another_model_ignores_the_policy_id():
    other = "extract.model=some/encoder"
    base = _key("extract", other)
    assert _key("extract", other, "model.name_or_path=some/policy", "model.revision=abc123") == base, \
        "extract.model is read instead of the policy: a new policy must not rerun extraction"
    assert _key("extract", other, "model.dtype=bfloat16") != base, "the internals model still loads in model.dtype"
    assert _key("extract", "model.name_or_path=some/policy") != _key("extract"), "without extract.model it reads the policy"
    assert _key("extract", "model.revision=abc123") != _key("extract")


def test_a_train_field_the_algorithm_ignores_does_not_retrain():
    dapo, grpo = "train.algorithm=dapo", "train.algorithm=grpo"
    assert _key("train", dapo, "train.loss_type=bnpo") == _key("train", dapo), "DAPO always uses the token loss"
    assert _key("train", grpo, "train.loss_type=bnpo") != _key("train", grpo)
    assert _key("train", grpo, "train.dynamic_sampling_max_rounds=0") == _key("train", grpo), "only DAPO refills"
    assert _key("train", dapo, "train.dynamic_sampling_max_rounds=0") != _key("train", dapo)


def test_the_curve_timeout_is_the_evaluations_and_retrains():
    """The in-training held-out curve judges with eval.verify_timeout_s (as the final evaluation does)."""
    assert _key("train", "eval.verify_timeout_s=1") != _key("train")


def test_the_quality_threshold_reruns_the_curriculum_not_the_score_fits():
    """scores.parquet holds quality_hat alone; kept / share_kept are the curriculum's (saerl.curriculum.quality_kept)."""
    assert _key("score", "score.quality_threshold=0.8") == _key("score")
    assert _key("curriculum", "score.quality_threshold=0.8") != _key("curriculum")


def test_a_new_verifier_version_rebuilds_the_stages_that_verify_and_no_other(monkeypatch):
    """A change of the verdict rules (gold normalization at ingest, rewards, label pass rates, evaluation) must not
    reuse artifacts judged by the old rules: verify.VERSION is part of those stages' keys only."""
    from saerl import verify
    from saerl.stages import VERIFYING, code_version

    cfg = PipelineConfig()
    before = {s: stage_key(cfg, s, {}) for s in STAGES}
    monkeypatch.setattr(verify, "VERSION", verify.VERSION + "-next")
    after = {s: stage_key(cfg, s, {}) for s in STAGES}
    assert {s for s in STAGES if before[s] != after[s]} == set(VERIFYING) == {"ingest", "label", "train", "evaluate"}
    assert code_version("train").endswith(f"+verify{verify.VERSION}") and "+verify" not in code_version("score")
