"""saerl.stages: every config field is read by a stage or declared result-neutral; keys follow slices."""

from pathlib import Path

import pytest
from tiny import stub_weights

from saerl.config import PipelineConfig, field_paths, load_config
from saerl.stages import RESULT_NEUTRAL, STAGES, stage_key

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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


def _key(stage: str, *overrides: str, inputs: dict[str, str] | None = None) -> str:
    """`stage`'s key under the config of `overrides`, with input keys `inputs` (none by default: device unknown)."""
    return stage_key(load_config(None, list(overrides)), stage, inputs or {})


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
    hub = "model.name_or_path=some/policy"  # a hub id: its revision is read (a local policy's is keyed at its default)
    assert _key("extract", hub, "model.revision=abc123") != _key("extract", hub)


def test_a_train_field_the_algorithm_ignores_does_not_retrain():
    dapo, grpo = "train.algorithm=dapo", "train.algorithm=grpo"
    assert _key("train", dapo, "train.loss_type=bnpo") == _key("train", dapo), "DAPO always uses the token loss"
    assert _key("train", grpo, "train.loss_type=bnpo") != _key("train", grpo)
    assert _key("train", grpo, "train.dynamic_sampling_max_rounds=0") == _key("train", grpo), "only DAPO refills"
    assert _key("train", dapo, "train.dynamic_sampling_max_rounds=0") != _key("train", dapo)
    refill = "train.dynamic_sampling_refill=cluster"
    assert _key("train", grpo, refill) == _key("train", grpo), "only DAPO refills"
    for arm, retrains in (("saerl", True), ("order_only", True), ("vanilla", False), ("filter_only", False)):
        keys = {"arm": arm, "seed": "0"}
        assert (_key("train", dapo, refill, inputs=keys) != _key("train", dapo, inputs=keys)) is retrains, \
            f"{arm}: a shuffled arm has no clusters, and DAPO refills it from the stream either way"


def test_the_curve_timeout_is_the_evaluations_and_retrains():
    """The in-training held-out curve judges with eval.verify_timeout_s (as the final evaluation does)."""
    assert _key("train", "eval.verify_timeout_s=1") != _key("train")


def test_the_final_evaluations_generation_limit_reruns_the_held_out_runs_alone():
    """The final evaluation generated up to train.max_completion_length, part of the train key: evaluating at a longer
    limit retrained every arm. eval.max_new_tokens is the heldout stage's alone; unset it is
    train.max_completion_length, and the same number named plainly keys alike (no re-evaluation)."""
    base, longer = _key("heldout"), _key("heldout", "eval.max_new_tokens=2048")
    assert longer != base and _key("heldout", "train.max_completion_length=2048") == longer
    assert _key("heldout", f"eval.max_new_tokens={PipelineConfig().train.max_completion_length}") == base
    assert _key("heldout", "eval.max_new_tokens=2048", "train.max_completion_length=32") == longer  # the limit named
    for stage in ("train", "label", "evaluate"):
        assert _key(stage, "eval.max_new_tokens=2048") == _key(stage), stage
    assert _key("evaluate", "eval.truncation_note_share=0.2") != _key("evaluate")  # its notes head comparison.txt
    assert _key("heldout", "eval.truncation_note_share=0.2") == base


def test_a_sets_own_k_samples_reruns_its_held_out_runs_not_training_and_unset_keys_as_before():
    """An eval.sets entry's k_samples (AIME's avg@32) is the heldout stage's: it reruns every held-out run (and
    evaluate through their keys) but never retrains, as the in-training curve is greedy; an entry that leaves it
    unset dumps, and keys, as before the field existed (saerl.config.HELD_OUT_READING), and so does one naming
    eval.k_samples."""
    from saerl.config import flatten
    from saerl.stages import stage_slice

    file = ["data.source=file", "data.path=x.jsonl"]
    entry = 'eval.sets={"aime": {"path": "a.jsonl", "prompt": "problem"%s}}'
    unset, own = (*file, entry % ""), (*file, entry % ', "k_samples": 32')
    assert flatten(load_config(None, list(unset)))["eval.sets"] == {
        "aime": {"path": "a.jsonl", "prompt": "problem", "answer": None, "id": None}}
    assert _key("heldout", *own) != _key("heldout", *unset)
    assert _key("train", *own) == _key("train", *unset)
    assert stage_slice(load_config(None, list(own)), "heldout")["eval.sets"]["aime"]["k_samples"] == 32
    # the samples it takes anyway, named plainly, key as unset (eval.k_samples is 4)
    assert _key("heldout", *file, entry % ', "k_samples": 4') == _key("heldout", *unset)
    assert _key("heldout", *file, entry % ', "k_samples": 32', "eval.k_samples=32") == _key(
        "heldout", *unset, "eval.k_samples=32")


def test_a_sets_id_false_keys_its_held_out_and_training_runs_and_unset_or_null_keys_as_before():
    """An eval.sets entry's id: false (no id column: content-hash ids) changes the set's ids, which the curve and the
    final evaluation read: it keys the train and heldout runs; an entry leaving id out, or giving null, dumps and keys
    as before (id: null)."""
    from saerl.config import flatten

    file = ["data.source=file", "data.path=x.jsonl", "data.id=qid"]
    entry = "eval.sets.g={path: g.jsonl, prompt: question%s}"
    unset, null, none = (*file, entry % ""), (*file, entry % ", id: null"), (*file, entry % ", id: false")
    assert flatten(load_config(None, list(unset)))["eval.sets"] == flatten(load_config(None, list(null)))[
        "eval.sets"] == {"g": {"path": "g.jsonl", "prompt": "question", "answer": None, "id": None}}
    assert flatten(load_config(None, list(none)))["eval.sets"]["g"]["id"] is False
    assert {stage for stage in STAGES if _key(stage, *none) != _key(stage, *unset)} == {"train", "heldout"}
    assert all(_key(stage, *null) == _key(stage, *unset) for stage in STAGES)


def test_answer_extraction_keys_the_held_out_evaluation_and_curve_only_when_set():
    """eval.answer_extraction 'boxed' (the default) is what the code did before the field: no stage's key holds it,
    so every config's keys stay; 'boxed_or_last' reruns the held-out runs and, as the in-training curve reads
    answers so too, the training runs; nothing else."""
    from saerl.stages import stage_slice

    assert not any("eval.answer_extraction" in stage_slice(PipelineConfig(), stage) for stage in STAGES)
    other = "eval.answer_extraction=boxed_or_last"
    changed = {stage for stage in STAGES if _key(stage, other) != _key(stage)}
    assert changed == {"heldout", "train"}
    assert _key("heldout", "eval.answer_extraction=boxed") == _key("heldout")


def test_the_quality_threshold_reruns_the_curriculum_not_the_score_fits():
    """scores.parquet holds quality_hat alone; kept / share_kept are the curriculum's (saerl.curriculum.quality_kept)."""
    quality = "data.quality=quality"  # a quality column (without one every prompt is kept: keyed at its default)
    assert _key("score", quality, "score.quality_threshold=0.8") == _key("score", quality)
    assert _key("curriculum", quality, "score.quality_threshold=0.8") != _key("curriculum", quality)


def test_a_new_verifier_version_rebuilds_the_stages_that_verify_and_no_other(monkeypatch):
    """A change of the verdict rules (gold normalization at ingest, rewards, label pass rates, evaluation) must not
    reuse artifacts judged by the old rules: verify.VERSION is part of those stages' keys only."""
    from saerl import verify
    from saerl.stages import VERIFYING, code_version

    cfg = PipelineConfig()
    before = {s: stage_key(cfg, s, {}) for s in STAGES}
    monkeypatch.setattr(verify, "VERSION", verify.VERSION + "-next")
    after = {s: stage_key(cfg, s, {}) for s in STAGES}
    assert {s for s in STAGES if before[s] != after[s]} == set(VERIFYING) == {"ingest", "label", "train", "heldout"}
    assert code_version("train").endswith(f"+verify{verify.VERSION}") and "+verify" not in code_version("score")


# a changed value per field the tests below change (each valid under every config they use)
OTHER_VALUE = {"sae.architecture": "standard", "sae.expansion": 4, "sae.k": 16, "sae.lr": 1e-3, "sae.train_epochs": 2,
               "sae.l1_coefficient": 1.0, "sae.normalize": "none", "sae.dead_feature_window": 50,
               "sae.release": "some-release", "sae.sae_id": "some-id", "sae.path": "/some/sae",
               "score.k_range": "[2,5]", "score.silhouette_sample": 500, "score.ridge_alphas": "[1.0]",
               "score.enet_l1_ratios": "[0.5]", "score.enet_n_alphas": 5, "score.enet_max_iter": 100,
               "score.dense_fit_mb": 0, "score.text_max_features": 100, "score.text_analyzer": "word", "score.kmeans_n_init": 1,
               "curriculum.frontier_target": 0.3, "model.dtype": "bfloat16", "train.bf16": "false"}


def _moves(stage: str, path: str, *under: str, inputs: dict[str, str] | None = None) -> bool:
    """Whether changing `path` (to OTHER_VALUE) changes `stage`'s key under the config of overrides `under` and the
    input keys `inputs` (their "device" is the device type the keys read)."""
    return _key(stage, *under, f"{path}={OTHER_VALUE[path]}", inputs=inputs) != _key(stage, *under, inputs=inputs)


def test_each_sae_architecture_ignores_the_others_sparsity_setting():
    """sae-lens' TopK training config has no l1_coefficient and its trainer reads none; the standard SAE has no k
    (saerl.sae.train_sae passes each to its own architecture only)."""
    topk, standard = "sae.architecture=topk", "sae.architecture=standard"
    assert not _moves("sae", "sae.l1_coefficient", topk), "a TopK SAE trains without the L1 coefficient"
    assert _moves("sae", "sae.l1_coefficient", standard)
    assert not _moves("sae", "sae.k", standard), "a standard (L1) SAE has no k"
    assert _moves("sae", "sae.k", topk)
    assert _moves("sae", "sae.dead_feature_window", standard), "its dead-feature count is written to cfg.json"


def test_a_loaded_sae_ignores_every_training_field_and_each_source_its_own_fields_only():
    """A pretrained or local SAE is loaded and scored, never trained: no training field reruns the sae stage, while
    the held-out sample's fields still do; each source reads only the fields naming what it loads."""
    from saerl.stages import SAE_TRAINING

    local, pretrained, train = "sae.source=local", "sae.source=pretrained", "sae.source=train"
    for source in (local, pretrained):
        assert [p for p in SAE_TRAINING if _moves("sae", p, source)] == [], f"{source} trains nothing"
    assert [p for p in SAE_TRAINING if not _moves("sae", p, train, "sae.architecture=topk")] == ["sae.l1_coefficient"]
    assert _key("sae", local, "sae.train_tokens=1000") != _key("sae", local), "it picks the held-out tokens"
    assert _moves("sae", "sae.path", local) and not _moves("sae", "sae.path", pretrained)
    assert not _moves("sae", "sae.path", train)
    for path in ("sae.release", "sae.sae_id"):
        assert _moves("sae", path, pretrained) and not _moves("sae", path, local) and not _moves("sae", path, train)


def test_a_fixed_number_of_clusters_ignores_the_silhouette_search():
    """choose_k returns a fixed score.n_clusters before it reads score.k_range or score.silhouette_sample."""
    for path in ("score.k_range", "score.silhouette_sample"):
        assert not _moves("score", path, "score.n_clusters=8"), f"{path} with n_clusters fixed"
        assert _moves("score", path, "score.n_clusters=auto"), f"{path} with n_clusters auto"


def test_a_difficulty_family_left_out_ignores_its_grid():
    """fit_difficulty fits only the families score.difficulty_models lists; each family's grid is its own."""
    from saerl.stages import FAMILY_FIELDS

    ridge, enet, both = ("score.difficulty_models=[ridge]", "score.difficulty_models=[elasticnet]",
                         "score.difficulty_models=[elasticnet,ridge]")
    for stage in ("score", "properties"):
        for path in FAMILY_FIELDS["elasticnet"]:
            assert not _moves(stage, path, ridge) and _moves(stage, path, enet) and _moves(stage, path, both), path
        path = "score.ridge_alphas"
        assert not _moves(stage, path, enet) and _moves(stage, path, ridge) and _moves(stage, path, both), stage


def test_the_report_without_baselines_ignores_the_baselines_settings():
    """With score.baselines off the report fits no text TF-IDF and clusters no baseline features."""
    for path in ("score.text_max_features", "score.text_analyzer", "score.kmeans_n_init"):
        assert not _moves("properties", path, "score.baselines=false"), path
        assert _moves("properties", path, "score.baselines=true"), path
    assert _moves("score", "score.kmeans_n_init", "score.baselines=false"), "the score stage's own k-means reads it"


def test_the_frontier_target_is_read_by_the_frontier_ordering_only():
    assert not _moves("curriculum", "curriculum.frontier_target", "curriculum.ordering=easy_to_hard")
    assert _moves("curriculum", "curriculum.frontier_target", "curriculum.ordering=frontier")


def test_the_policy_runs_in_float32_so_model_dtype_reruns_extraction_only():
    """label and train load the policy in float32 on every device (saerl.policy_lm.load_policy): model.dtype is
    extraction's, and only on a GPU. The keys read the device type from the input keys' "device" (runtime.device
    never reaches them), so these are a GPU's keys: on a CPU extraction ignores model.dtype too."""
    gpu = {"device": "cuda"}
    for stage in ("label", "train"):
        assert not _moves(stage, "model.dtype", inputs=gpu), stage
    assert _moves("extract", "model.dtype", inputs=gpu)


def test_a_cpu_ignores_the_precision_settings_and_a_gpu_or_an_unknown_device_reads_them():
    """On a CPU every stage runs in float32 (load_model, resolve_dtype; grpo_config turns bf16 on only on CUDA)."""
    from saerl.stages import unread_fields

    cfg = PipelineConfig()
    assert "model.dtype" in unread_fields(cfg, "extract", "cpu") and "train.bf16" in unread_fields(cfg, "train", "cpu")
    for device in ("cuda", None):
        assert "model.dtype" not in unread_fields(cfg, "extract", device), device
        assert "train.bf16" not in unread_fields(cfg, "train", device), device
    assert "train.bf16" not in unread_fields(cfg, "label", "cpu")


def test_the_labelled_share_is_read_only_where_it_draws_the_labelled_subset():
    """score.label_fraction draws the labelled subset only when no `labelled` column is mapped: the demo's testbed
    maps one, so a new share reran score, properties and everything after them for the same scores. Under measured
    difficulty the score and properties stages read the label artifact's rows (its key carries the share)."""
    from pathlib import Path

    import numpy as np
    import scipy.sparse as sp

    from saerl.scoring import align_inputs

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"

    def reads(overrides: list[str], stage: str) -> bool:
        cfg, other = load_config(demo, overrides), load_config(demo, [*overrides, "score.label_fraction=0.5"])
        return stage_key(cfg, stage, {}) != stage_key(other, stage, {})

    for stage in ("label", "score", "properties"):
        assert not reads([], stage), f"{stage}: the testbed's labelled column picks the subset"
    unmapped = ["data.labelled=null"]  # the testbed's difficulty column: no label stage, score draws the share
    assert reads(unmapped, "score") and reads(unmapped, "properties")
    measured = ["data.labelled=null", "score.difficulty_source=measured"]
    assert reads(measured, "label") and not reads(measured, "score") and not reads(measured, "properties")
    # and the subset the score stage aligns does ignore the share when the column is there
    import polars as pl

    prompts = pl.DataFrame({"id": [f"p{i}" for i in range(40)], "prompt": ["q"] * 40, "difficulty": [1.0] * 40,
                            "labelled": [i % 4 == 0 for i in range(40)]})
    X = sp.csr_matrix(np.ones((40, 3)))
    cfg = load_config(demo)
    for share in (0.2, 0.9):
        got = align_inputs(X, prompts, cfg.score.model_copy(update={"label_fraction": share}), None, ids=prompts["id"])
        assert dict(zip(got.ids, got.labelled.tolist(), strict=True)) == {f"p{i}": i % 4 == 0 for i in range(40)}


def test_a_cpu_run_keeps_its_keys_when_the_precision_settings_change():
    """The keys read the device type from the input keys (saerl.pipeline.input_keys' "device")."""
    cfg, cpu, cuda = PipelineConfig(), {"device": "cpu"}, {"device": "cuda"}
    for stage, path in (("extract", "model.dtype"), ("train", "train.bf16")):
        other = load_config(None, [f"{path}={OTHER_VALUE[path]}"])
        assert stage_key(other, stage, cpu) == stage_key(cfg, stage, cpu), f"{path} on a CPU"
        assert stage_key(other, stage, cuda) != stage_key(cfg, stage, cuda), f"{path} on a GPU"


def test_planning_keys_imports_no_torch():
    """unread_fields resolves nothing through torch: the device type comes in with the input keys."""
    import subprocess
    import sys

    code = ("import sys\nfrom saerl.config import PipelineConfig\nfrom saerl.stages import STAGES, stage_key\n"
            "[stage_key(PipelineConfig(), s, {'device': 'cpu'}) for s in STAGES]\nassert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_extract_layer_keys_on_the_block_it_resolves_to_where_the_depth_is_known(tmp_path):
    """extract.layer unset (the middle block), a negative index and the same block named plainly extract the same
    residuals: where the model's depth is known before the stage runs (the testbed LM, a local folder's
    config.json) they share a key, the middle block's being the unset value's (None: keys built before stay); a
    hub id's depth is not known, so its values stay as written."""
    from saerl.stages import known_depth, stage_slice

    def layer(*overrides: str) -> object:
        return stage_slice(load_config(None, list(overrides)), "extract")["extract.layer"]

    assert known_depth(load_config(None, [])) == 2  # the testbed LM
    assert layer() is layer("extract.layer=0") is layer("extract.layer=-2") is None
    assert layer("extract.layer=1") == layer("extract.layer=-1") == 1
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"text_config": {"num_hidden_layers": 28}}')
    local = f"model.name_or_path={folder}"
    assert layer(local) is layer(local, "extract.layer=13") is layer(local, "extract.layer=-15") is None
    assert layer(local, "extract.layer=20") == layer(local, "extract.layer=-8") == 20
    assert layer(local, "extract.layer=99") == 99  # out of range: left as written, for the stage to refuse
    hub = "model.name_or_path=Qwen/Qwen2.5-Math-1.5B"
    assert layer(hub, "extract.layer=13") == 13 != layer(hub) is None
    assert layer(hub, f"extract.model={folder}", "extract.layer=13") is None  # extract.model is the model read
    assert known_depth(load_config(None, ["extract.model=testbed"])) is None, "not a model extract can load"


def test_a_hub_models_size_is_read_from_the_local_cache_for_checks_but_never_for_keys(tmp_path, monkeypatch):
    """A hub id's extract.layer out of range (and a local SAE of another width) was found only when the extract
    stage loaded the model; where the Hugging Face cache holds its config.json they are refused up front. The
    key must not read it: downloading the model between two runs would otherwise rerun extraction."""
    import huggingface_hub.constants

    from saerl.preflight import check_runnable
    from saerl.stages import known_depth, known_size, stage_slice

    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"num_hidden_layers": 6, "hidden_size": 48}')
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def cfg(*overrides: str):
        return load_config(None, ["model.name_or_path=org/tiny", f"runtime.artifact_root={tmp_path / 'root'}",
                                  *overrides])
    assert known_depth(cfg(), hub_cache=True) == 6 and known_size(cfg(), "hidden_size", hub_cache=True) == 48
    assert known_depth(cfg()) is None and known_depth(cfg("model.name_or_path=org/absent"), hub_cache=True) is None
    assert stage_slice(cfg("extract.layer=3"), "extract")["extract.layer"] == 3, "the key reads no cache"
    with pytest.raises(ValueError, match=r"extract.layer=9 is out of range for a model with 6 layers"):
        check_runnable(cfg("extract.layer=9"), "extract")
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "cfg.json").write_text('{"d_in": 32}')
    stub_weights(tmp_path / "sae" / "sae_weights.safetensors")
    with pytest.raises(ValueError, match=r"d_in=32, and the model extraction reads has hidden size 48"):
        check_runnable(cfg("sae.source=local", f"sae.path={tmp_path / 'sae'}"), "sae")


def test_a_held_out_set_given_as_a_plain_path_enters_its_key_by_its_suffix():
    """An eval.sets entry may be a path string as well as a {path: ...} mapping; the string form kept its full
    path in the key, so moving the held-out file reran heldout and evaluate though its content (hashed apart)
    was kept."""
    from saerl.stages import located

    moved = located("eval.sets", {"x": "/c/d.jsonl"})
    assert located("eval.sets", {"x": "/a/b.jsonl"}) == moved == {"x": ".jsonl"}
    assert located("eval.sets", {"x": "/a/b.csv"}) != moved  # another reader


def test_a_data_files_suffix_enters_its_key_lower_cased():
    """The suffix picks the reader case-blind, so train.JSONL and train.jsonl must share a key."""
    from saerl.stages import file_form

    assert file_form("a/B.JSONL") == file_form("c/d.jsonl") == ".jsonl"


def test_without_eval_sets_train_and_heldout_ignore_the_data_mapping():
    """train and heldout read the data mapping only to read the eval.sets files: without any, their held-out set is
    the testbed world's eval split as written, so no data field but data.source (whether that split is read)
    reruns the starting policy's evaluation or a training run (ingest's rows, its own input, carry the rest); with
    an eval.sets file, the mapping it is read with is read, and heldout keeps the sets' topic and difficulty. The
    training data's split is never read for a set (each is read with its own hf_split: keyed at its default)."""
    world = ("data.source=testbed",)
    sets = (*world, "eval.sets.t=/held/t.jsonl")
    mapping = ("data.max_prompt_chars=3000", "data.verify_timeout_s=10", "data.prompt=q", "data.answer=a", "data.id=i",
               "data.format=jsonl")
    labels = ("data.topic=t", "data.difficulty=d")
    for stage in ("train", "heldout"):
        for change in (*mapping, *labels, "data.hf_split=test"):
            assert _key(stage, *world, change) == _key(stage, *world), (stage, change)
        assert _key(stage, *sets, "data.hf_split=test") == _key(stage, *sets), stage
        for change in mapping:
            assert _key(stage, *sets, change) != _key(stage, *sets), (stage, change)
        assert _key(stage, "data.source=sample") != _key(stage, *world), "whether the world's split is read"
    for change in labels:
        assert _key("heldout", *sets, change) != _key("heldout", *sets), change


def test_a_label_column_no_held_out_file_holds_keys_heldout_at_its_default(tmp_path):
    """heldout keeps each problem's topic and difficulty from the eval.sets files, and a label column a file lacks is
    dropped as it is read: renaming data.difficulty (or data.topic) between columns no set file holds evaluated every
    policy again to an identical artifact. Such a field keys heldout at its default (unset); where a set file holds the
    column (a jsonl file's first rows or a later one, a parquet file's schema), the name still keys it."""
    import json

    import polars as pl

    from saerl.runners import eval_sets

    plain, later, table = tmp_path / "plain.jsonl", tmp_path / "later.jsonl", tmp_path / "labelled.parquet"
    plain.write_text("".join(json.dumps({"question": f"{i}+2?", "answer": str(i + 2)}) + "\n" for i in range(5)))
    rows = [{"question": f"{i}+3?", "answer": str(i + 3)} for i in range(150)]
    later.write_text("".join(json.dumps(r | ({"lvl": 2} if i == 140 else {})) + "\n" for i, r in enumerate(rows)))
    pl.DataFrame(rows[:5]).with_columns(top=pl.lit("t")).write_parquet(table)

    def key(sets: tuple[Path, ...], *labels: str) -> str:
        return _key("heldout", *(f"eval.sets.s{i}={p}" for i, p in enumerate(sets)), *labels)

    for label in ("data.difficulty", "data.topic"):
        unset = key((plain,))
        assert key((plain,), f"{label}=lvl") == key((plain,), f"{label}=level") == unset, label
        given = load_config(None, [f"eval.sets.s0={plain}", f"{label}=lvl"])
        assert eval_sets(given, {})["s0"].equals(eval_sets(load_config(None, [f"eval.sets.s0={plain}"]), {})["s0"])
    assert key((plain, later), "data.difficulty=lvl") != key((plain, later), "data.difficulty=level"), "row 140 holds it"
    assert key((plain, table), "data.topic=top") != key((plain, table), "data.topic=other"), "the parquet holds it"
    assert key((plain, table), "data.difficulty=lvl") == key((plain, table)), "no file holds lvl"
    assert key((plain, table), "data.topic=top", "data.difficulty=lvl") != key((plain, table), "data.difficulty=lvl")


def _default(path: str) -> list:
    """A list field's default value. in: dotted path; out: the list."""
    section, name = path.split(".")
    return list(getattr(getattr(PipelineConfig(), section), name))


def _listed(values: list) -> str:
    """A list as an override's value ('[a,b]'). in: the list; out: the text."""
    return "[" + ",".join(str(v) for v in values) + "]"


def test_a_list_read_as_a_set_keys_alike_in_any_order():
    """extract.pooling (pooled vectors are stored and read by name), score.difficulty_models and the CV grids
    (each searched whole for its best value) change nothing but ties when reordered: the keys of the stages that
    read them stay, while another set of values still reruns them. sae.encode_pool keeps its order in the key: its
    first pooling is the codes store's default and the one the encode stage counts kept features in."""
    readers = {"extract.pooling": ("extract",), "score.difficulty_models": ("score", "properties"),
               "score.ridge_alphas": ("score", "properties"), "score.enet_l1_ratios": ("score", "properties"),
               "score.probe_cs": ("score", "properties")}
    read = {"score.probe_cs": ("data.quality=quality",)}  # the quality probe's grid: read with a quality column
    for path, stages in readers.items():
        default, base = _default(path), read.get(path, ())
        reordered, fewer = _listed(default[::-1]), _listed(default[1:])
        for stage in stages:
            assert _key(stage, *base, f"{path}={reordered}") == _key(stage, *base), (path, stage)
            assert _key(stage, *base, f"{path}={fewer}") != _key(stage, *base), (path, stage)
    assert _key("encode", f"sae.encode_pool={_listed(_default('sae.encode_pool')[::-1])}") != _key("encode")


@pytest.mark.parametrize("name", [None, *sorted(p.name for p in CONFIGS.glob("*.yaml"))])
def test_the_canonical_order_of_set_lists_leaves_every_configs_keys_as_they_were(name, monkeypatch):
    """The canonical order (saerl.stages.set_order) is the defaults' and every configs/*.yaml's own, so no key
    built before it changes: each stage's key (each training arm's too) is the same with the lists keyed in the
    config's order. in: a config file's name (None: the schema defaults)."""
    import saerl.stages as stages

    cfg = load_config(None if name is None else CONFIGS / name)
    runs = [(stage, {"device": "cpu", **({"arm": arm} if stage == "train" else {})})
            for stage in STAGES for arm in (cfg.train.arms if stage == "train" else [None])]
    canonical = [stage_key(cfg, stage, inputs) for stage, inputs in runs]
    monkeypatch.setattr(stages, "set_order", lambda field, value: value)
    assert [stage_key(cfg, stage, inputs) for stage, inputs in runs] == canonical


# sha256 of the kept rows a sample ingest writes (tests/test_stages.py:_sample_rows), for each INGEST_ROWS_VERSION
# (13: the sample gained two edge rows, a gold dividing by zero and a key repeated with another value, which 13
# rejects, so its kept rows hash as 11's did; under 11's code both rows were kept. 14: the old sample's rows hash as 13's
# did; the sample gained Unicode edge rows, an NFD copy of an NFC prompt, a copy with a zero-width space, a prompt of
# zero-width characters only, and the golds '3²' and '50％', which 13 kept as more rows and as the golds 3 and 50.
# 16: the same rows as 14's, in id order instead of file order)
REVIEWED_ROWS = {"11": "45b7f06f4fb56dca5a4af8f7de31f17b712ac8d00076cc92aded24a91ea06f39",
                 "13": "45b7f06f4fb56dca5a4af8f7de31f17b712ac8d00076cc92aded24a91ea06f39",
                 "14": "8b29b7b09b9b9ab933969b8942eb775722a4b599a62236dfff3dfb698ee46008",
                 "16": "7ae0faa3958a932ce952ce3a957e26d2ae0bc94d69e6ed5258bd8af6f415f0bd"}


def _sample_rows(tmp_path: Path) -> str:
    """The kept rows (as ingest writes them: in id order) of the built-in sample plus rows that reach ingest's edge cases (a level as text, yes/no quality,
    a NaN and a bad label, a duplicate, a percent, a fraction, a thousands separator, a gold dividing by zero, a key
    repeated with another value, Unicode variants of a prompt, a prompt of zero-width characters, a superscript and a
    full-width percent in a gold), as one sha256."""
    import hashlib
    import json

    from saerl.config import DataConfig
    from saerl.data import in_id_order, ingest, sample_path

    extra = tmp_path / "edge.jsonl"
    rows = [{"question": "Q1 edge?", "answer": "#### 1,000", "topic": "t", "difficulty": "Level 3", "q": "yes"},
            {"question": "Q2 edge?", "answer": "\\frac{3}{4}", "topic": "t", "difficulty": "hard", "q": 0.5},
            {"question": "Q3 edge?", "answer": "12.5%", "topic": None, "difficulty": 2, "q": False},
            {"question": "Q1  edge?", "answer": "7", "topic": "u", "difficulty": 1, "q": "no"},
            {"question": "Caf\u00e9 edge?", "answer": "3\u00b2"}, {"question": "Cafe\u0301 edge?", "answer": "9"},
            {"question": "Q7 edge?", "answer": "50\uff05"}, {"question": "Q7\u200b edge?", "answer": "1"},
            {"question": "\u200b\u200b", "answer": "1"}]
    extra.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"question": "Q4?", "answer": "2", "difficulty": NaN}\n'
                     '{"question": "Q5 edge?", "answer": "\\\\frac{1}{0}"}\n{"question": "Q6 edge?", "answer": "4", "answer": "5"}\n')
    cfg = DataConfig(source="file", topic="topic", difficulty="difficulty")
    kept = [in_id_order(ingest(c, path)).kept.to_dicts()  # as write_ingest writes them
            for c, path in ((cfg, sample_path()), (cfg.model_copy(update={"quality": "q"}), extra))]
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def test_a_change_of_ingests_kept_rows_bumps_its_rows_version(tmp_path):
    """extract, label, score and train key on the version of ingest's kept rows (INGEST_ROWS_VERSION), not on ingest's
    own, so that a change of rejected.parquet alone does not rerun the extraction and everything after it. A change of
    the kept rows that left INGEST_ROWS_VERSION as it was would reuse extractions of other rows: it fails here until
    someone bumps INGEST_ROWS_VERSION to ingest's version and records the new hash under it."""
    from saerl.stages import INGEST_ROWS_VERSION

    digest = _sample_rows(tmp_path)
    assert REVIEWED_ROWS.get(INGEST_ROWS_VERSION) == digest, (
        f"ingest's kept rows changed (sha256 {digest}): bump saerl.stages.INGEST_ROWS_VERSION (now "
        f"{INGEST_ROWS_VERSION!r}) to ingest's version and set REVIEWED_ROWS[INGEST_ROWS_VERSION] to this hash")
    assert int(INGEST_ROWS_VERSION) <= int(STAGES["ingest"].version)


# ------------------------------------------------------------------------------- pinned fields (keyed at default)

HF_FOLDER = "hf-folder"  # a Hugging Face save_to_disk folder's name (a folder: read as hf), made under tmp_path
JSONL_SET = "held.jsonl"  # a held-out jsonl file, made under tmp_path

# (case, the change, the base config it changes nothing under, a base it does change a key under (None: none, the
# stage ignores it under every config), the stages whose keys the control changes)
PINNED_CASES = [
    ("F1 loss log", "testbed.log_every=7", [], None, ()),
    ("F1 self-check batch", "testbed.eval_batch=13", [], None, ()),
    ("F1 self-check limit", "testbed.max_new_tokens=30", [], None, ()),
    ("F2 random order", "curriculum.fit_budget=false", ["curriculum.ordering=random"], [], ("curriculum",)),
    ("F2 frontier", "curriculum.fit_budget=false", ["curriculum.ordering=frontier"], [], ("curriculum",)),
    ("F2 no home", "curriculum.rotation=size_weighted", ["curriculum.mix_ratio=1"], [], ("curriculum",)),
    ("F3 threshold", "score.quality_threshold=0.7", [], ["data.quality=q"], ("curriculum",)),
    ("F3 filter", "curriculum.filter_quality=false", [], ["data.quality=q"], ("curriculum",)),
    ("F3 probe grid", "score.probe_cs=[1.0]", [], ["data.quality=q"], ("score", "properties")),
    ("F3 probe iterations", "score.probe_max_iter=7", [], ["data.quality=q"], ("score", "properties")),
    ("F3 topic probe", "score.probe_cs=[1.0]", [], ["data.topic=t"], ("properties",)),
    ("F4 sample", "data.hf_split=train", [], ["data.format=hf"], ("ingest",)),
    ("F4 testbed pool", "data.hf_split=train", ["data.source=testbed"], ["data.source=testbed", "data.format=hf"],
     ("ingest",)),
    ("F4 jsonl file", "data.hf_split=train", ["data.source=file", "data.path=PATH/train.jsonl"],
     ["data.source=file", f"data.path=PATH/{HF_FOLDER}"], ("ingest",)),
    ("F4 with eval.sets", "data.hf_split=train", [f"eval.sets.x=PATH/{JSONL_SET}"], None, ()),
    ("F4 a set's own", f"eval.sets.x={{path: PATH/{JSONL_SET}, hf_split: test}}", [f"eval.sets.x={{path: PATH/{JSONL_SET}}}"],
     [f"eval.sets.x={{path: PATH/{JSONL_SET}, format: hf}}"], ("train", "heldout")),
    ("F5 token chunks", "extract.token_block_rows=64", [], None, ()),
    ("F6 testbed revision", "model.revision=abc123", [], ["model.name_or_path=Qwen/Qwen2.5-Math-1.5B"],
     ("extract", "label", "train", "heldout")),
    ("F6 folder revision", "model.revision=abc123", ["model.name_or_path=PATH/policy"],
     ["model.name_or_path=Qwen/Qwen2.5-Math-1.5B"], ("extract", "label", "train", "heldout")),
    ("F6 pkg revision", "model.revision=abc123", ["model.name_or_path=pkg:some_model"],
     ["model.name_or_path=Qwen/Qwen2.5-Math-1.5B"], ("extract", "label", "train", "heldout")),
    ("F6 testbed turn end", "model.stop_at_turn_end=false", [], ["model.name_or_path=Qwen/Qwen2.5-Math-1.5B"],
     ("label", "train", "heldout")),
]


def _stage_keys(overrides: list[str], folder: Path) -> dict[str, str]:
    """Every stage's key (each training arm's too) under the defaults plus `overrides` ('PATH' read as `folder`), on
    a CPU. in: overrides, the folder; out: {stage or train:ARM: key}."""
    cfg = load_config(None, [o.replace("PATH", str(folder)) for o in overrides])
    out = {}
    for stage in STAGES:
        for arm in cfg.train.arms if stage == "train" else [None]:
            out[stage if arm is None else f"{stage}:{arm}"] = stage_key(
                cfg, stage, {"device": "cpu", **({"arm": arm} if arm else {})})
    return out


@pytest.mark.parametrize(("case", "change", "base", "control", "readers"), PINNED_CASES, ids=[c[0] for c in PINNED_CASES])
def test_a_field_its_stage_ignores_under_a_config_keys_at_its_default_there(tmp_path, case, change, base, control,
                                                                           readers):
    """The fields saerl.stages.pinned_fields names enter the key at their schema default where the stage ignores them
    (F1-F6 of the session 45 audit: outputs byte-identical), so a change of them reruns nothing there: every stage's
    key under the changed config is the base config's. Under a config where a stage reads the field (the control) the
    same change still reruns that stage."""
    (tmp_path / HF_FOLDER).mkdir()
    (tmp_path / HF_FOLDER / "dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    (tmp_path / JSONL_SET).write_text('{"question": "1+1?", "answer": "2"}\n')
    (tmp_path / "train.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    (tmp_path / "policy").mkdir()
    assert _stage_keys([*base, change], tmp_path) == _stage_keys(base, tmp_path), case
    if control is not None:
        before, after = _stage_keys(control, tmp_path), _stage_keys([*control, change], tmp_path)
        moved = {s.split(":")[0] for s in before if before[s] != after[s]}
        assert set(readers) <= moved, (case, moved)


def test_a_pinned_fields_slice_shows_its_default_and_its_mlflow_params_the_value_the_run_was_given():
    """The slice (the key, the manifest's config, a recompute's 'config changed' reason) holds a pinned field at its
    default, so a run that changes it says nothing changed; the stage run's MLflow params (ran_values) show the value
    the run was given."""
    from saerl.runs import explain
    from saerl.stages import ran_values, stage_slice

    base, cfg = PipelineConfig(), load_config(None, ["testbed.log_every=7", "score.quality_threshold=0.9"])
    assert stage_slice(cfg, "testbed")["testbed.log_every"] == 50 == stage_slice(base, "testbed")["testbed.log_every"]
    assert ran_values(cfg, stage_slice(cfg, "testbed"))["testbed.log_every"] == 7
    assert ran_values(cfg, stage_slice(cfg, "curriculum"))["score.quality_threshold"] == 0.9
    assert ran_values(base, stage_slice(base, "testbed"))["testbed.log_every"] == 50
    from saerl.runs import StageRecord

    prev = {"testbed": StageRecord(stage="testbed", key="k", status="computed", reason="", config=stage_slice(base, "testbed"),
                                   inputs={}, code_version="6")}
    reason = explain("testbed", True, stage_slice(cfg, "testbed"), {}, prev, code="6")
    assert "config changed" not in reason and "log_every" not in reason, reason


def test_pinning_leaves_the_keys_of_every_config_that_leaves_the_pinned_fields_at_their_defaults(monkeypatch):
    """Pinned fields enter the key at their schema default, not dropped, so no key built before changes for a config
    that leaves them at their defaults (no version bump, no cache lost): each stage's key (each arm's) of the defaults
    and of every configs/*.yaml is the one it had with the fields keyed as given (pinned_fields switched off). The
    one field a shipped config sets is smoke.yaml's testbed.max_new_tokens (the LM's self-check limit): smoke's keys are
    those it had with that field at its default."""
    import saerl.stages as stages
    from saerl.config import flatten

    sets_pinned = {"smoke.yaml": ["testbed.max_new_tokens"]}
    defaults = flatten(PipelineConfig())
    for name in [None, *sorted(p.name for p in CONFIGS.glob("*.yaml"))]:
        cfg = load_config(None if name is None else CONFIGS / name)
        runs = [(stage, {"device": device, **({"arm": arm} if stage == "train" else {})})
                for stage in STAGES for device in ("cpu", "cuda") for arm in (cfg.train.arms if stage == "train" else [None])]
        given = sorted({f for stage, inputs in runs for f in stages.pinned_fields(cfg, stage, inputs["device"])
                        if flatten(cfg)[f] != defaults[f]})
        assert given == sets_pinned.get(name, []), name
        pinned = [stage_key(cfg, stage, inputs) for stage, inputs in runs]
        as_default = load_config(None if name is None else CONFIGS / name, [f"{f}={defaults[f]}" for f in given])
        with monkeypatch.context() as m:
            m.setattr(stages, "pinned_fields", lambda *a, **k: ())
            assert [stage_key(as_default, stage, inputs) for stage, inputs in runs] == pinned, name
