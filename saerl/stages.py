"""The pipeline's stages: what each reads from config, which artifacts it takes in, and its cache key.

A stage's key is the hash of (stage name, its code version, the keys of its input artifacts, and the
config fields it reads). Bump a stage's ``version`` whenever its code changes what it writes.

Fields no stage reads (``RESULT_NEUTRAL``) are those that cannot change any result (where to log, how to
run); every other config field must be read by some stage, or a change to it would never rerun anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, get_args

from saerl import verify
from saerl.config import (
    PKG_MODEL,
    DataConfig,
    ExtractConfig,
    HeldOutSet,
    PipelineConfig,
    ScoreConfig,
    config_slice,
    eval_max_new_tokens,
    flatten,
    held_out_file,
    held_out_mapping,
    resolve_layer,
    stable_hash,
)
from saerl.curriculum import fits_budget
from saerl.privacy import redacted


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: `reads` are dotted config prefixes, `inputs` upstream stage names."""

    name: str
    version: str
    reads: tuple[str, ...]
    inputs: tuple[str, ...]


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("testbed", "6", ("testbed",), ()),  # synthetic math world + tiny pretrained policy LM
        Stage("ingest", "16", ("data",), ("testbed",)),  # prompts.parquet + rejected.parquet from a data set
        Stage(
            "extract", "6",
            ("model.name_or_path", "model.revision", "model.dtype", "model.trust_remote_code", "model.hub_kernels",
             "extract"),
            ("ingest", "testbed"),
        ),  # residual-stream activations in chunked Zarr
        Stage(
            "sae", "6",
            ("sae.source", "sae.release", "sae.sae_id", "sae.path", "sae.hook_check", "sae.architecture", "sae.expansion", "sae.k",
             "sae.lr", "sae.train_tokens", "sae.batch_size", "sae.heldout_frac", "sae.seed", "sae.train_epochs",
             "sae.l1_coefficient", "sae.normalize", "sae.dead_feature_window"),
            ("extract",),
        ),  # a sae-lens SAE (trained here, local, or pretrained) + its quality report
        Stage("encode", "4", ("sae.encode_pool", "sae.encode_top_k", "sae.encode_batch_tokens"), ("extract", "sae")),  # sparse top-K SAE codes
        Stage(
            "label", "12",
            ("score.label_fraction", "score.label_max", "score.label_rollouts", "score.label_batch",
             "score.label_chunk_rows", "score.seed",
             "model", "train.temperature", "train.top_k", "train.max_completion_length", "train.verify_timeout_s"),
            ("ingest", "testbed"),
        ),  # measured pass rates on the labelled subset
        Stage(
            "score", "15",
            ("score.n_clusters", "score.k_range", "score.tfidf", "score.cluster_pool", "score.model_pool",
             "score.difficulty_pool", "score.difficulty_source", "score.label_fraction", "score.label_max",
             "score.seed", "score.minibatch_above", "score.kmeans_n_init", "score.silhouette_sample",
             "score.cv_folds", "score.difficulty_models", "score.ridge_alphas", "score.enet_l1_ratios",
             "score.dense_fit_mb", "score.enet_n_alphas", "score.enet_max_iter", "score.probe_max_iter",
             "score.probe_cs"),
            ("ingest", "encode", "label"),
        ),  # clusters, difficulty_hat, quality_hat per prompt
        Stage(
            "properties", "3",
            ("score.tfidf", "score.cluster_pool", "score.model_pool", "score.difficulty_pool",
             "score.difficulty_source", "score.label_fraction", "score.label_max", "score.seed",
             "score.minibatch_above",
             "score.kmeans_n_init", "score.cv_folds", "score.difficulty_models", "score.ridge_alphas",
             "score.enet_l1_ratios", "score.dense_fit_mb", "score.enet_n_alphas", "score.enet_max_iter",
             "score.probe_max_iter", "score.probe_cs", "score.heldout_fraction", "score.ood_folds",
             "score.baselines", "score.text_max_features", "score.text_analyzer", "score.cluster_top_features",
             "score.cluster_examples"),
            ("ingest", "extract", "encode", "label", "score"),
        ),  # what the clusters are and how good the property models are: property report vs baselines, plots
        Stage("curriculum", "5", ("curriculum", "score.quality_threshold", "train.max_steps"), ("score",)),  # order.parquet
        Stage(
            "train", "19",
            ("model", "train.algorithm", "train.max_steps", "train.learning_rate", "train.max_grad_norm",
             "train.warmup_steps",
             "train.num_generations",
             "train.steps_per_generation", "train.micro_batches",
             "train.temperature", "train.top_k", "train.max_completion_length", "train.beta", "train.epsilon",
             "train.epsilon_high", "train.loss_type", "train.scale_rewards", "train.format_reward", "train.overlong_buffer",
             "train.mask_truncated_completions",
             "train.dynamic_sampling_max_rounds", "train.dynamic_sampling_refill", "train.eval_every", "train.eval_problems",
             "train.verify_timeout_s", "train.bf16", "train.use_vllm", "train.num_processes", "curriculum.batch_size",
             "eval.verify_timeout_s",
             "curriculum.epochs", "curriculum.seed", "eval.sets", "eval.batch_size", "eval.answer_extraction", "data"),
            ("ingest", "score", "curriculum", "testbed"),
        ),  # one RL run per (arm, seed): policy checkpoint, per-step log, greedy learning curve
        Stage(
            "heldout", "4",
            ("model", "eval.k_samples", "eval.temperature", "eval.max_problems", "eval.batch_size",
             "eval.verify_timeout_s", "eval.sets", "eval.max_new_tokens", "train.max_completion_length",
             "eval.answer_extraction", "data"),
            ("train", "testbed"),
        ),  # one policy on the held-out sets, greedy and k samples per problem: an (arm, seed) run's trained policy,
        # the starting policy, or the starting policy's probe pass
        Stage("evaluate", "26",
              ("eval.base_policy", "eval.k_samples", "eval.target_accuracy", "eval.target_gain_share", "eval.ci_level",
               "eval.steps_bootstrap", "eval.truncation_note_share", "train.arms", "train.seeds"),
              ("heldout", "train", "ingest")),  # eval.parquet, arm comparison, steps-to-target
    )
}

# train.save_every / train.keep_checkpoints only decide which resumable checkpoints a run keeps on disk: a run
# resumed from one continues as the uninterrupted run would (saerl.rl.train_grpo); health only decides which advisory
# notes a training run's manifest carries (saerl.rl.health_notes), never what it trains, so a new threshold must not
# retrain (a reused run keeps the notes of the thresholds it ran under)
RESULT_NEUTRAL: tuple[str, ...] = ("name", "tracking", "runtime", "train.save_every", "train.keep_checkpoints",
                                   "score.n_jobs", "train.activation_checkpointing", "health")


# the policy's name and pinned revision, which extraction reads only when it reads the policy's internals: with
# extract.model set it loads that model (model.revision names a commit of the policy's repo only), so a new policy
# must not rerun extraction (saerl.runners.internals_model, internals_model_cfg)
POLICY_ID: tuple[str, ...] = ("model.name_or_path", "model.revision")


# the train fields one algorithm ignores: DAPO always aggregates the loss per token (saerl.dapo.dapo_overrides),
# and only DAPO refills groups without reward spread (saerl.rl.train_grpo), so a change of either under the other
# algorithm must not retrain
ALGORITHM_UNREAD: dict[str, tuple[str, ...]] = {"dapo": ("train.loss_type",),
                                                "grpo": ("train.dynamic_sampling_max_rounds",
                                                         "train.dynamic_sampling_refill")}

# arms trained on a seeded shuffle (saerl.runners.arm_order_frame), with what they shuffle (the export's README says
# it); the others read a curriculum
SHUFFLED_ARMS = {"vanilla": "every ingested prompt (no filter)", "filter_only": "the prompts the curriculum's filter kept"}

# the train fields a shuffled arm ignores: its order has no clusters, so DAPO refills it from the stream whatever
# train.dynamic_sampling_refill says (saerl.runners.compute_train)
SHUFFLED_UNREAD: tuple[str, ...] = ("train.dynamic_sampling_refill",)

# the fields a run on a CPU ignores, by stage: every model runs in float32 there (saerl.activations.load_model,
# resolve_dtype; saerl.rl.grpo_config turns bf16 on only on CUDA)
CPU_UNREAD: dict[str, tuple[str, ...]] = {"extract": ("model.dtype",), "train": ("train.bf16",)}

# label, train and heldout load the policy in float32 on every device (saerl.policy_lm.load_policy; train.bf16 is the
# autocast): only extraction reads model.dtype
POLICY_FLOAT32: tuple[str, ...] = ("model.dtype",)

# the sae fields only training reads (saerl.sae.train_sae): a pretrained or local SAE is loaded and scored, never
# trained (sae.train_tokens, heldout_frac, seed and batch_size still pick and batch its held-out tokens: obtain_sae)
SAE_TRAINING: tuple[str, ...] = ("sae.architecture", "sae.expansion", "sae.k", "sae.lr", "sae.train_epochs",
                                 "sae.l1_coefficient", "sae.normalize", "sae.dead_feature_window")

# the fields naming an SAE to load, by the sae.source that loads it (saerl.sae._source_sae)
SAE_SOURCE_FIELDS: dict[str, tuple[str, ...]] = {"train": (), "pretrained": ("sae.release", "sae.sae_id"),
                                                 "local": ("sae.path",)}
# what only a loaded SAE's check reads (saerl.sae.check_hook): an SAE trained here reads the store's own layer
OUTSIDE_SAE: tuple[str, ...] = ("sae.hook_check",)

# the training field each sae.architecture ignores: only the standard SAE's config takes the L1 coefficient and
# only the TopK SAE's takes k (saerl.sae.train_sae; sae-lens' TopKTrainingSAEConfig has no l1_coefficient and
# SAETrainer reads none). dead_feature_window stays read under standard: its aux loss ignores dead features, but
# SAETrainer.set_final_sae_metadata writes their count into the saved cfg.json
ARCHITECTURE_UNREAD: dict[str, tuple[str, ...]] = {"topk": ("sae.l1_coefficient",), "standard": ("sae.k",)}

# the silhouette's search for k, which a fixed score.n_clusters skips (saerl.property_models.choose_k)
SILHOUETTE: tuple[str, ...] = ("score.k_range", "score.silhouette_sample")

# each difficulty family's settings, read only when score.difficulty_models lists the family
# (saerl.property_models.fit_difficulty, difficulty_model; the report's mean predictor reads neither)
FAMILY_FIELDS: dict[str, tuple[str, ...]] = {
    "ridge": ("score.ridge_alphas",),
    "elasticnet": ("score.enet_l1_ratios", "score.enet_n_alphas", "score.enet_max_iter", "score.dense_fit_mb")}

# the properties stage's fields that only its baselines read (the text TF-IDF's vocabulary and tokens, the baselines' own
# k-means: saerl.scoring._inputs, _cluster_report), unread with score.baselines off
BASELINE_ONLY: tuple[str, ...] = ("score.text_max_features", "score.text_analyzer", "score.kmeans_n_init")


# the data fields that only label rows (saerl.data: a bad label flags its row, never drops it), so which rows
# ingest keeps, and their ids, prompts and answers, do not depend on them (saerl.pipeline.ROWS_READERS). The train
# stage reads the data mapping only to read its held-out files (eval.sets): its learning curve scores each set
# whole, never per label (saerl.runners.compute_train), so it ignores these; heldout keeps each problem's labels (the
# per-label reports) and reads them
DATA_LABELS: tuple[str, ...] = ("data.topic", "data.difficulty", "data.quality", "data.labelled", "data.defect")


# the data fields a held-out evaluation ignores: it reads each eval.sets file with the data mapping
# (saerl.runners.eval_sets, saerl.config.held_out_mapping), never the training file nor its row cap, and keeps only the
# topic and difficulty labels (saerl.evaluate.evaluate_loaded), so a new training file does not evaluate the starting
# policy again
HELDOUT_UNREAD: tuple[str, ...] = ("data.path", "data.max_rows", "data.quality", "data.labelled", "data.defect")

# the data fields train and heldout read only to read the eval.sets files (the data mapping they are read with:
# saerl.runners.eval_sets, held_out_rows, saerl.config.held_out_mapping): without eval.sets their only held-out set is
# the testbed world's eval split, read as the testbed stage wrote it (world/eval.parquet: no field of the mapping, no
# prompt length cap, answer-parse bound nor label column applied), so a data field change does not evaluate the
# starting policy again. data.source stays read: it says whether that split is read at all
SETS_MAPPING: tuple[str, ...] = tuple(f"data.{name}" for name in DataConfig.model_fields if name != "source")


# the share of prompts drawn for the labelled subset: unread where the data's `labelled` column picks it (the label
# stage's saerl.labels.labelled_subset, the score and properties stages' saerl.scoring.align_inputs), and by score and
# properties under measured difficulty, whose labelled rows are the label artifact's (its key carries the share)
LABEL_DRAW: tuple[str, ...] = ("score.label_fraction", "score.label_max")


def label_draw_unread(cfg: PipelineConfig, stage: str) -> bool:
    """Does `stage` (label, score, properties) ignore LABEL_DRAW under `cfg`? in: config, stage; out: bool."""
    from saerl.labels import needs_measured_labels

    return cfg.data.labelled is not None or (stage != "label" and needs_measured_labels(cfg))


def _sae_unread(cfg: PipelineConfig) -> tuple[str, ...]:
    """The sae stage's reads it ignores under `cfg`: the fields of the sources it does not load from
    (SAE_SOURCE_FIELDS), and when it trains, the one field its architecture ignores (ARCHITECTURE_UNREAD) and the
    loaded SAE's check (OUTSIDE_SAE), else every training field (SAE_TRAINING). in: config; out: dotted paths."""
    out = tuple(f for source, fields in SAE_SOURCE_FIELDS.items() if source != cfg.sae.source for f in fields)
    return out + (ARCHITECTURE_UNREAD[cfg.sae.architecture] + OUTSIDE_SAE if cfg.sae.source == "train" else SAE_TRAINING)


def _policy_reader_unread(cfg: PipelineConfig, stage: str, arm: str | None) -> tuple[str, ...]:
    """The reads of `stage` (label, train or heldout) it ignores under `cfg`, for a training run of `arm`:
    POLICY_FLOAT32; train: ALGORITHM_UNREAD of train.algorithm, DATA_LABELS, and SHUFFLED_UNREAD for a shuffled arm;
    heldout: HELDOUT_UNREAD; train and heldout without eval.sets: SETS_MAPPING. in: config, stage, arm (None: not a
    training run, or not known); out: dotted paths."""
    out = POLICY_FLOAT32 + (ALGORITHM_UNREAD[cfg.train.algorithm] + DATA_LABELS if stage == "train" else ())
    out += HELDOUT_UNREAD if stage == "heldout" else ()
    out += SETS_MAPPING if stage != "label" and not cfg.eval.sets else ()
    if stage == "train" and arm in SHUFFLED_ARMS:
        out += SHUFFLED_UNREAD
    return out


def _score_unread(cfg: PipelineConfig, stage: str) -> tuple[str, ...]:
    """The reads of `stage` (score or properties) it ignores under `cfg`: a family's grid when
    score.difficulty_models leaves it out (FAMILY_FIELDS); score: the silhouette's search under a fixed
    score.n_clusters (SILHOUETTE); properties: the baselines' settings with score.baselines off (BASELINE_ONLY).
    in: config, stage; out: dotted paths."""
    out = tuple(f for family, fields in FAMILY_FIELDS.items() if family not in cfg.score.difficulty_models
                for f in fields)
    if stage == "score" and cfg.score.n_clusters != "auto":
        out += SILHOUETTE
    if stage == "properties" and not cfg.score.baselines:
        out += BASELINE_ONLY
    return out


def _curriculum_unread(cfg: PipelineConfig) -> tuple[str, ...]:
    """The curriculum stage's reads it ignores under `cfg`: curriculum.frontier_target unless curriculum.ordering is
    frontier, and train.max_steps when the order is not fitted to the run (saerl.curriculum.fits_budget).
    in: config; out: dotted paths."""
    out: tuple[str, ...] = ("curriculum.frontier_target",) if cfg.curriculum.ordering != "frontier" else ()
    return out + (() if fits_budget(cfg.curriculum) else ("train.max_steps",))


def unread_fields(cfg: PipelineConfig, stage: str, device: str | None = None, arm: str | None = None) -> tuple[str, ...]:
    """Fields among `stage`'s declared reads that its runner ignores under `cfg` on a `device` type ('cpu', 'cuda':
    saerl.pipeline.input_keys' "device"; None when not known, which keeps the fields only a CPU ignores), for a
    training run of `arm` (None: not a training run, or not known): a shuffled arm reads no cluster (SHUFFLED_UNREAD).
    extract: the policy's id when extract.model names another model (POLICY_ID); sae: the fields of the sources it
    does not load from, every training field when it loads an SAE (SAE_TRAINING), else the one its architecture
    ignores (ARCHITECTURE_UNREAD) and the loaded SAE's check (OUTSIDE_SAE); label, train, heldout: model.dtype (POLICY_FLOAT32); heldout: the training file and the labels it does not keep (HELDOUT_UNREAD); train: what train.algorithm ignores
    (ALGORITHM_UNREAD) and the data's label fields (DATA_LABELS); train and heldout without eval.sets: every data
    field but data.source (SETS_MAPPING); score, properties: a family's grid when
    score.difficulty_models leaves it out (FAMILY_FIELDS); score: the silhouette's search under a fixed
    score.n_clusters (SILHOUETTE); properties: the baselines' settings with score.baselines off (BASELINE_ONLY);
    label, score, properties: the labelled subset's share where something else picks it (LABEL_DRAW);
    curriculum: curriculum.frontier_target unless curriculum.ordering is frontier (saerl.curriculum._queues), and
    train.max_steps when the order is not fitted to the run (saerl.curriculum.fits_budget); on a CPU, CPU_UNREAD.
    in: config, stage, device type; out: dotted paths."""
    out = CPU_UNREAD.get(stage, ()) if device == "cpu" else ()
    if stage in ("label", "score", "properties") and label_draw_unread(cfg, stage):
        out += LABEL_DRAW
    if stage == "extract" and cfg.extract.model is not None:
        out += POLICY_ID
    elif stage == "sae":
        out += _sae_unread(cfg)
    elif stage in ("label", "train", "heldout"):
        out += _policy_reader_unread(cfg, stage, arm)
    elif stage in ("score", "properties"):
        out += _score_unread(cfg, stage)
    elif stage == "curriculum":
        out += _curriculum_unread(cfg)
    return out


def known_size(cfg: PipelineConfig, field: str, hub_cache: bool = False) -> int | None:
    """A size of the model the extract stage reads, where it is known without loading anything: the testbed's LM
    (testbed.n_layers / testbed.d_model), a local folder's config.json (its text model's field), and with
    `hub_cache` (the up-front checks, not keys) a hub model's in the local Hugging Face cache
    (:func:`hub_cached_config`) or a pkg: model's folder's (saerl.activations.resolve_model_path); None for a hub id
    not downloaded yet, and without `hub_cache` for a pkg: model or a hub id. Keys use it without `hub_cache`
    (:func:`stage_slice`): a download must not change a key, and a pkg: model's keys stay as they were built. in:
    config, 'num_hidden_layers' or 'hidden_size', whether to read the hub cache and pkg: folders; out: the size or
    None."""
    if cfg.extract.model is None and cfg.model.name_or_path == "testbed":
        return {"num_hidden_layers": cfg.testbed.n_layers, "hidden_size": cfg.testbed.d_model}[field]
    try:
        raw = known_config(cfg, hub_cache)
        size = (raw.get("text_config") or raw)[field]  # type: ignore[union-attr]
    except (KeyError, TypeError, AttributeError):
        return None  # the stage's own load names what is wrong with the folder
    return size if isinstance(size, int) and size > 0 else None


def known_config(cfg: PipelineConfig, hub_cache: bool = False, policy: bool = False) -> dict[str, Any] | None:
    """The config.json, as read, of the model the extract stage reads (extract.model, else the policy) or with
    `policy` of the policy (model.name_or_path), where it is at hand without loading anything (:func:`known_size`
    says where); None for the testbed LM, a hub id not downloaded yet, or a file that cannot be read (the stage's
    own load names what is wrong). in: config, whether to read the hub cache and pkg: folders, which model;
    out: the config's fields or None."""
    name = cfg.model.name_or_path if policy else cfg.extract.model or cfg.model.name_or_path
    if name == "testbed":
        return None
    if name.startswith(PKG_MODEL):
        if not hub_cache:
            return None
        from saerl.activations import resolve_model_path

        try:
            name = resolve_model_path(name)
        except (ValueError, OSError, ImportError):  # not installed, no model folder: planning names field and fix
            return None
    conf = Path(name).expanduser() / "config.json"
    revision = cfg.model.revision if policy or not cfg.extract.model else None
    if hub_cache and not conf.is_file() and (cached := hub_cached_config(name, revision)):
        conf = cached
    if not conf.is_file():
        return None
    try:
        raw = json.loads(conf.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def hub_cached_config(repo_id: str, revision: str | None) -> Path | None:
    """The config.json of a hub model where the local Hugging Face cache holds it (a model a user downloaded
    before), read without the network; None otherwise (not cached, or not a hub id). in: repo id, revision
    (None: the main branch); out: its path or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id (a missing local folder): check_model names it
        return None
    return Path(found) if isinstance(found, str) else None


def known_depth(cfg: PipelineConfig, hub_cache: bool = False) -> int | None:
    """The number of blocks of the model the extract stage reads, where known without loading (:func:`known_size`)."""
    return known_size(cfg, "num_hidden_layers", hub_cache)


def file_form(path: str | None) -> str | None:
    """How a data file's path enters a key: its suffix alone, lower-cased ('.jsonl'; it picks the reader where
    data.format is auto), as the file's content is hashed apart. in: the path or None; out: the suffix or None."""
    return None if path is None else Path(path).suffix.lower()


MODEL_FOLDER_FIELDS = ("model.name_or_path", "extract.model", "sae.path")  # may name a local folder of weights
LOCAL_FOLDER = "<local folder>"  # how such a folder's path enters a key: its content is keyed apart


def local_folder(name: Any) -> Path | None:
    """The local folder a model or SAE field names, or None for the testbed LM, a hub id (no such folder) or an
    unset field. in: the field's value; out: the folder or None."""
    if not isinstance(name, str) or not name or name == "testbed":
        return None
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def folder_form(value: Any) -> Any:
    """How a model or SAE field enters a key: a local folder (:func:`local_folder`; not a 'pkg:' model, whose name
    is stable) as LOCAL_FOLDER, since its files' content is keyed apart (saerl.pipeline.folder_stamp), so the same
    weights copied, moved or named by another path rerun nothing; a hub id, 'pkg:' name or unset value as it is.
    in: the value; out: the keyed value."""
    if isinstance(value, str) and not value.startswith(PKG_MODEL) and local_folder(value) is not None:
        return LOCAL_FOLDER
    return value


def literal_order(section: type[Any], name: str) -> tuple[str, ...]:
    """The names a list-of-Literal config field allows, in the schema's order. in: the section's class, the field's
    name; out: the names."""
    (item,) = get_args(section.model_fields[name].annotation)
    return get_args(item)


# lists the stages read as sets: their order changes nothing but which of exactly tied candidates wins, so each
# enters a key in one canonical order, that of its default and of configs/*.yaml (the keys built before stay), and a
# reordered list reruns nothing. extract.pooling: every pooled vector is stored and read by its name
# (saerl.activations.extract_chunks, saerl.activation_store.Activations.pooled); score.difficulty_models: each family
# is fitted and the lowest CV error kept (saerl.property_models.fit_difficulty). Named ones sort in the schema's
# Literal order. sae.encode_pool is not one: its first pooling is the codes store's default read and the one the
# encode stage counts kept features in (mean_nonzero: saerl.sae.encode_codes, saerl.runners.encoded_counts)
NAMED_SETS: dict[str, tuple[str, ...]] = {"extract.pooling": literal_order(ExtractConfig, "pooling"),
                                          "score.difficulty_models": literal_order(ScoreConfig, "difficulty_models")}
# the CV grids, searched whole for the value of lowest CV error (RidgeCV, ElasticNetCV's l1_ratio, the quality
# probe's GridSearchCV over C: saerl.property_models.difficulty_model, probe_model; alpha_edge reads the grid's ends
# by value): they sort ascending, as their defaults do
NUMERIC_GRIDS: tuple[str, ...] = ("score.ridge_alphas", "score.enet_l1_ratios", "score.probe_cs")


def set_order(field: str, value: Any) -> Any:
    """A NAMED_SETS or NUMERIC_GRIDS list in its canonical order (as it enters a key; the config keeps the user's
    order); any other value as it is. in: dotted field, value; out: the keyed value."""
    if field in NAMED_SETS and isinstance(value, list):
        return sorted(value, key=NAMED_SETS[field].index)
    if field in NUMERIC_GRIDS and isinstance(value, list):
        return sorted(value)
    return value


def located(field: str, value: Any) -> Any:
    """A config value as it enters a stage's key: a path naming a data file whose content the keys hash apart
    (data.path, hashed under input "file"; each eval.sets entry's path, under "evalset:<name>": saerl.pipeline
    .input_keys) by :func:`file_form`, an eval.sets entry's field mapping kept, so a data or held-out file moved or
    renamed with its suffix kept reruns nothing; a local model or SAE folder by :func:`folder_form`; a list read as a
    set in its canonical order (:func:`set_order`); any other value as it is. in: dotted field, value; out: the keyed
    value."""
    if field == "data.path":
        return file_form(value)
    if field in MODEL_FOLDER_FIELDS:
        return folder_form(value)
    if field == "eval.sets":
        return {name: file_form(e) if isinstance(e, str) else {**e, "path": file_form(e["path"])}
                for name, e in value.items()}
    return set_order(field, value)


# fields added after keys were built, with the value that does what the code did before them: a stage slice leaves
# such a field out while it holds that value, so the keys of configs that do not set it stay as they were, and one
# set otherwise keys the stages that read it (eval.answer_extraction 'boxed' is the verifier's reading alone;
# train.num_processes 1 trains in the stage's own process, as before the field: above 1 each process samples its share
# of the rollouts from its own seed, as trl seeds each process apart: saerl.runners.compute_train)
KEYED_WHEN_SET: dict[str, object] = {"eval.answer_extraction": "boxed", "train.num_processes": 1}

# the eval.sets entries' fields a stage ignores, left out of each entry in its slice: the in-training curve is a
# greedy pass (saerl.rl.EvalCallback), so a set's own samples per problem (k_samples) must not retrain
SET_ENTRY_UNREAD: dict[str, tuple[str, ...]] = {"train": ("k_samples",)}

# the final evaluation's generation limit and the field it falls back to (saerl.config.eval_max_new_tokens)
EVAL_BUDGET: tuple[str, str] = ("eval.max_new_tokens", "train.max_completion_length")


# Pinned fields. A field a stage ignores under some configs (or under every one), found only after keys were built
# with it: unread_fields would drop it from the slice and so re-key every config, so instead it enters the key at its
# schema default (in :func:`located`'s keyed form) wherever the stage ignores it (:func:`pinned_fields`). The keys of
# a config that leaves it at its default stay exactly as they were (no version bump, no cache lost), and a change of
# it reruns nothing there. A stage slice, its manifest's "config" and a recompute's reason ("config changed: ...")
# show such a field at its default, the keyed form; the MLflow params of a stage run show the value the run was given
# (:func:`ran_values`). Each case, with where the code ignores it:

# the testbed LM's own check after pretraining: the loss log's interval (saerl.policy_lm._pretrain, read only to
# append to the log) and the greedy self-check's batch and generation limit (saerl.policy_lm.train_policy_lm, after
# model.save_pretrained: its accuracy goes to the stage's summary alone; the policy's generation limits are
# train.max_completion_length and eval.max_new_tokens). The LM and world files are the same for any value; a reused
# testbed artifact keeps the summary (loss log, greedy accuracy) of the settings it was built under
TESTBED_SELF_CHECK: tuple[str, ...] = ("testbed.log_every", "testbed.eval_batch", "testbed.max_new_tokens")

# the Zarr chunk length of the stored token arrays (saerl.activation_store.prepare_store, ChunkWriter.write): how the
# same values are laid out on disk; every reader gets the same rows (the SAE's token sample is the same draw whatever
# the layout: draw_tokens). The value is in the store's content fingerprint, so a build cut short under one value
# and resumed under another is laid out again, none of its chunks counted as done (tests/test_activations.py)
TOKEN_CHUNKING: tuple[str, ...] = ("extract.token_block_rows",)

# what only a climbing order fits to the run: curriculum.fit_budget is read through saerl.curriculum.fits_budget
# alone, which is false for an ordering outside CLIMBS (random, frontier) whatever it says
CLIMB_FIT: tuple[str, ...] = ("curriculum.fit_budget",)

# how the home cluster rotates (saerl.curriculum._next_home), which saerl.curriculum._epoch calls only while a batch
# has a home part: never where home_size(batch_size, mix_ratio) is 0 (every slot drawn from all clusters)
HOME_ROTATION: tuple[str, ...] = ("curriculum.rotation",)

# the quality filter: without a quality column (data.quality unset: ingest keeps only the mapped label columns,
# saerl.data.ingest) saerl.scoring.quality_labels finds no labels, the score stage fits no probe and writes
# quality_hat = NO_PROBE_QUALITY (1.0) for every prompt (saerl.scoring.score_prompts), which
# saerl.curriculum.quality_kept keeps for any threshold in [0, 1], the filter on or off. A reused curriculum keeps the
# notes of the settings it was built under (saerl.curriculum.inactive_filter_notes)
QUALITY_FILTER: tuple[str, ...] = ("score.quality_threshold", "curriculum.filter_quality")

# the logistic probes' grid and iterations (saerl.property_models.probe_model): the score stage fits one for quality
# alone (saerl.scoring.score_prompts), the properties stage for quality and for the topic report
# (saerl.scoring.property_report, _model_rows), so score ignores them without a quality column and properties without
# a quality and a topic column (data.topic unset: no topic column)
PROBE_GRID: tuple[str, ...] = ("score.probe_cs", "score.probe_max_iter")

# the split of a Hugging Face DatasetDict folder (saerl.data.load_table reads it only for the format 'hf'): ingest
# ignores it for training data read as another format (:func:`read_as_hf`), and train and heldout always, as they read
# the data mapping only for the eval.sets files, each read with its own hf_split (saerl.config.held_out_mapping; the
# training split is read there only to refuse a set that is the training data: refuse_training_split)
TRAINING_SPLIT: tuple[str, ...] = ("data.hf_split",)

# the training file's row cap (saerl.data.ingest reads it): train reads the data mapping only to read the eval.sets
# files, each whole (saerl.config.held_out_mapping sets max_rows None), and the rows it trains on through ingest's
# content (saerl.pipeline.ROWS_READERS: their digest holds exactly the rows data.max_rows kept), so a cap past the
# file's end, or moved between two values both at or past its row count, retrained on the same rows
TRAINING_ROWS: tuple[str, ...] = ("data.max_rows",)

# the label columns heldout keeps per problem (saerl.evaluate.evaluate_loaded: a set's topic and difficulty), read
# from each eval.sets file with the data mapping: a label column a file lacks is dropped as it is read
# (saerl.data.ingest with labels_optional, saerl.runners.read_held_out), so a field naming a column no eval.sets file
# holds evaluated every policy again to an identical artifact when it was renamed (:func:`held_out_labels_unheld`)
HELD_OUT_LABELS: tuple[str, ...] = ("data.topic", "data.difficulty")

# the hub commit of the policy (saerl.activations.weights_kwargs, hub_kwargs), which from_pretrained ignores for a
# local folder: the testbed LM, a 'pkg:' model's folder, a local folder (whose content is keyed apart: folder_form;
# saerl.preflight.unpinned_hub_model exempts the three)
POLICY_REVISION: tuple[str, ...] = ("model.revision",)

# model.stop_at_turn_end adds the chat template's end-of-turn token to the EOS ids (saerl.policy_lm.load_policy,
# add_stop_id): the testbed LM's turn ends with its EOS (saerl.policy_lm.CHAT_TEMPLATE), already its only EOS id,
# so it adds nothing there
TURN_END: tuple[str, ...] = ("model.stop_at_turn_end",)

# the pinned fields that change how a stage runs or what its own summary says, never a result a later stage or
# report reads: like RESULT_NEUTRAL, a value set for them is not warned about (saerl.preflight.unkeyed_settings)
PINNED_NEUTRAL: tuple[str, ...] = TESTBED_SELF_CHECK + TOKEN_CHUNKING

# the stages that read the policy's model section (its revision and turn end), beside extract's own reads
POLICY_READERS: tuple[str, ...] = ("label", "train", "heldout")

# every field some config pins (:func:`pinned_fields`)
PINNABLE: tuple[str, ...] = (TESTBED_SELF_CHECK + TOKEN_CHUNKING + CLIMB_FIT + HOME_ROTATION + QUALITY_FILTER + PROBE_GRID
                             + TRAINING_SPLIT + TRAINING_ROWS + HELD_OUT_LABELS + POLICY_REVISION + TURN_END)


def read_as_hf(path: str | Path | None, fmt: str | None) -> bool:
    """Can a data file be read as a Hugging Face dataset folder (the one format whose split a reading takes:
    saerl.data.load_table)? False only when it cannot: a named format other than 'hf', or 'auto' for a path that is no
    folder and whose suffix names a format (saerl.data.detect_format, SUFFIX_FORMATS); a folder, an unknown suffix or
    a missing path count as read as hf (their reading, or its refusal, decides). in: the path, the format it is read
    as ('auto': by its suffix); out: bool."""
    from saerl.data import SUFFIX_FORMATS

    if fmt is not None and fmt not in ("auto", "hf"):
        return False
    if fmt == "hf" or path is None:
        return True
    path = Path(path).expanduser()
    return path.is_dir() or path.suffix.lower() not in SUFFIX_FORMATS


TESTBED_POOL = "pool.parquet"  # how the testbed world's pool is named where ingest reads it (world/pool.parquet)


def training_data_hf(cfg: PipelineConfig) -> bool:
    """Is the training data read as a Hugging Face folder (:func:`read_as_hf`), from the config: data.path for
    data.source file, the built-in sample (a jsonl file) or the testbed's pool (a parquet file), each read as
    data.format. in: config; out: bool."""
    if cfg.data.source == "file":
        return read_as_hf(cfg.data.path, cfg.data.format)
    if cfg.data.source == "sample":
        from saerl.data import sample_path

        return read_as_hf(sample_path(), cfg.data.format)
    return read_as_hf(TESTBED_POOL, cfg.data.format)


def local_policy(cfg: PipelineConfig) -> bool:
    """Is the policy read from a local folder, where no hub revision applies: the testbed LM, a 'pkg:' model or a
    local folder (:func:`local_folder`)? in: config; out: bool."""
    name = cfg.model.name_or_path
    return name == "testbed" or name.startswith(PKG_MODEL) or local_folder(name) is not None


def held_out_labels_unheld(cfg: PipelineConfig) -> tuple[str, ...]:
    """The HELD_OUT_LABELS fields set to a column that no eval.sets file holds (saerl.data.held_fields of each file,
    read with its mapping: saerl.config.held_out_mapping), which heldout reads nothing under. A set file that cannot
    be read so (missing, unreadable, the training data) counts as holding every column: its key stays as given, and
    the run refuses the set. in: config; out: dotted fields, () without eval.sets."""
    from saerl.data import IngestError, held_fields

    named = {f: column for f in HELD_OUT_LABELS if (column := getattr(cfg.data, f.removeprefix("data."))) is not None}
    if not named or not cfg.eval.sets:
        return ()
    held: set[str] = set()
    for entry in cfg.eval.sets.values():
        try:
            held |= held_fields(held_out_mapping(cfg.data, entry), held_out_file(entry), tuple(sorted(named.values())))
        except (IngestError, OSError, ValueError):
            return ()
    return tuple(f for f, column in named.items() if column not in held)


def _curriculum_pinned(cfg: PipelineConfig) -> tuple[str, ...]:
    """The curriculum stage's pinned fields under `cfg`: CLIMB_FIT for an ordering outside CLIMBS, HOME_ROTATION
    where a batch has no home part (saerl.curriculum.home_size), QUALITY_FILTER without quality labels (data.quality
    unset). in: config; out: dotted paths."""
    from saerl.curriculum import CLIMBS, home_size

    c = cfg.curriculum
    out = CLIMB_FIT if c.ordering not in CLIMBS else ()
    out += HOME_ROTATION if home_size(c.batch_size, c.mix_ratio) == 0 else ()
    return out + (QUALITY_FILTER if cfg.data.quality is None else ())


def _own_pinned(cfg: PipelineConfig, stage: str) -> tuple[str, ...]:
    """The pinned fields of `stage` that only it has: testbed: TESTBED_SELF_CHECK; extract: TOKEN_CHUNKING;
    curriculum: :func:`_curriculum_pinned`; score: PROBE_GRID without quality labels; properties: PROBE_GRID
    without quality and topic labels. in: config, stage; out: dotted paths."""
    no_quality = cfg.data.quality is None
    if stage == "testbed":
        return TESTBED_SELF_CHECK
    if stage == "extract":
        return TOKEN_CHUNKING
    if stage == "curriculum":
        return _curriculum_pinned(cfg)
    if stage == "score":
        return PROBE_GRID if no_quality else ()
    if stage == "properties":
        return PROBE_GRID if no_quality and cfg.data.topic is None else ()
    return ()


def _data_pinned(cfg: PipelineConfig, stage: str) -> tuple[str, ...]:
    """The pinned fields of `stage` that read the training data or held-out files: TRAINING_SPLIT for ingest of
    training data not read as a Hugging Face folder (:func:`training_data_hf`) and for train and heldout;
    TRAINING_ROWS for train with eval.sets; heldout: the HELD_OUT_LABELS no eval.sets file holds
    (:func:`held_out_labels_unheld`). in: config, stage; out: dotted paths."""
    out: tuple[str, ...] = ()
    if (stage == "ingest" and not training_data_hf(cfg)) or stage in ("train", "heldout"):
        out += TRAINING_SPLIT
    if stage == "train" and cfg.eval.sets:  # without eval.sets train reads no data field (SETS_MAPPING)
        out += TRAINING_ROWS
    if stage == "heldout":
        out += held_out_labels_unheld(cfg)
    return out


def _policy_pinned(cfg: PipelineConfig, stage: str) -> tuple[str, ...]:
    """The pinned fields of `stage` that load the policy: POLICY_REVISION for a policy in a local folder
    (:func:`local_policy`) in extract (reading the policy: extract.model unset), label, train and heldout; TURN_END
    for the testbed LM in label, train and heldout (POLICY_READERS). in: config, stage; out: dotted paths."""
    out: tuple[str, ...] = ()
    if local_policy(cfg) and (stage in POLICY_READERS or stage == "extract" and cfg.extract.model is None):
        out += POLICY_REVISION
    if cfg.model.name_or_path == "testbed" and stage in POLICY_READERS:
        out += TURN_END
    return out


def pinned_fields(cfg: PipelineConfig, stage: str, device: str | None = None, arm: str | None = None) -> tuple[str, ...]:
    """Fields among `stage`'s declared reads that its runner ignores under `cfg` but that its key held before this
    was known: they enter the key at their schema default (:func:`stage_slice`), so a change of them reruns nothing
    and the keys of configs leaving them at the default stay. testbed: TESTBED_SELF_CHECK; extract: TOKEN_CHUNKING;
    curriculum: CLIMB_FIT for an ordering outside CLIMBS, HOME_ROTATION where a batch has no home part, and
    QUALITY_FILTER without quality labels (data.quality unset); score: PROBE_GRID without quality labels; properties:
    PROBE_GRID without quality and topic labels; ingest: TRAINING_SPLIT for training data not read as a Hugging Face
    folder (:func:`training_data_hf`); train and heldout: TRAINING_SPLIT; train with eval.sets: TRAINING_ROWS;
    heldout: the HELD_OUT_LABELS no eval.sets file holds (:func:`held_out_labels_unheld`); extract (reading the
    policy: extract.model unset), label, train and heldout: POLICY_REVISION for a policy in a local folder
    (:func:`local_policy`), and label, train and heldout: TURN_END for the testbed LM. Fields :func:`unread_fields` drops stay dropped. `device` and `arm`
    as for :func:`unread_fields` (no case depends on them yet). in: config, stage, device type, arm; out: dotted
    paths."""
    return _own_pinned(cfg, stage) + _data_pinned(cfg, stage) + _policy_pinned(cfg, stage)


def keyed_fields(cfg: PipelineConfig, stage: str, device: str | None = None, arm: str | None = None) -> set[str]:
    """The leaf fields whose value enters `stage`'s key under `cfg`: its declared reads (a section read whole, every
    field of it) less :func:`unread_fields` and :func:`pinned_fields`. A field keyed in a folded form (extract.layer by
    its block, eval.max_new_tokens with train.max_completion_length, a KEYED_WHEN_SET field, a located() form) counts
    as keyed: its value still changes the key. in: config, stage, device type, arm (as for unread_fields); out: dotted
    paths."""
    ignored = set(unread_fields(cfg, stage, device, arm)) | set(pinned_fields(cfg, stage, device, arm))
    return {k for k in config_slice(cfg, STAGES[stage].reads) if k not in ignored}


@cache
def schema_defaults() -> dict[str, Any]:
    """The schema's default of every leaf field, as :func:`saerl.config.flatten` writes it (JSON-able), read once a
    process. in: nothing; out: {dotted path: default}."""
    return flatten(PipelineConfig())


def entry_hf_split_unread(cfg: PipelineConfig, name: str) -> bool:
    """Does the reading of eval.sets entry `name` ignore its own hf_split: set, but its file not read as a Hugging Face
    folder (:func:`read_as_hf` of the format it is read as: its own, else saerl.data.held_out_format's, as
    saerl.config.held_out_mapping reads it)? in: config, the set's name; out: bool."""
    from saerl.data import held_out_format

    entry = cfg.eval.sets.get(name)
    if not isinstance(entry, HeldOutSet) or entry.hf_split is None:
        return False
    path = held_out_file(entry)
    return not read_as_hf(path, entry.format or held_out_format(path, cfg.data.format))


def set_entry_keyed(cfg: PipelineConfig, stage: str, entry: Any, name: str | None = None) -> Any:
    """An eval.sets entry as it enters `stage`'s key (after :func:`located`): a mapping less the fields the stage
    ignores (SET_ENTRY_UNREAD), less a k_samples equal to eval.k_samples, so the samples a set takes anyway, named
    plainly, key as unset, and less an hf_split its file's reading ignores (:func:`entry_hf_split_unread`: pinned at
    its default, unset, which an entry's dump leaves out); a plain path as it is. in: config, stage, the entry's keyed
    form, the set's name (None: not known, its hf_split kept); out: that form."""
    if not isinstance(entry, dict):
        return entry
    ignored = SET_ENTRY_UNREAD.get(stage, ()) + (
        ("hf_split",) if name is not None and entry_hf_split_unread(cfg, name) else ())
    return {f: v for f, v in entry.items() if f not in ignored and not (f == "k_samples" and v == cfg.eval.k_samples)}


def stage_slice(cfg: PipelineConfig, stage: str, keys: Mapping[str, str] | None = None) -> dict[str, object]:
    """The config fields `stage` reads under `cfg` given its input keys `keys` (saerl.pipeline.input_keys: the
    device type under "device", a training run's arm under "arm"; either absent: not known), as
    {dotted path: value} (:func:`unread_fields` left out). A field naming a data file enters by its suffix
    (:func:`located`). extract.layer enters by the block it resolves to where the model's depth is known
    (:func:`known_depth`): None for the middle block (the unset value, so the keys built before stay) and the
    block's index otherwise, so unset, a negative index and the same block named plainly share a key. A field
    :func:`pinned_fields` names enters at its schema default. A stage that
    reads eval.max_new_tokens (heldout) keys the limit it generates with under that name, in place of both
    EVAL_BUDGET fields, so unset (train.max_completion_length's) and the same number named plainly share a key. A
    KEYED_WHEN_SET field at its former value is left out, and each eval.sets entry enters by
    :func:`set_entry_keyed`."""
    keys = keys or {}
    unread = unread_fields(cfg, stage, keys.get("device"), keys.get("arm"))
    pinned = pinned_fields(cfg, stage, keys.get("device"), keys.get("arm"))
    out = {k: located(k, schema_defaults()[k] if k in pinned else v)
           for k, v in config_slice(cfg, STAGES[stage].reads).items() if k not in unread
           and not (k in KEYED_WHEN_SET and v == KEYED_WHEN_SET[k])}
    if isinstance(out.get("eval.sets"), dict):
        out["eval.sets"] = {name: set_entry_keyed(cfg, stage, e, name) for name, e in out["eval.sets"].items()}
    if EVAL_BUDGET[0] in out:
        out.pop(EVAL_BUDGET[1], None)
        out[EVAL_BUDGET[0]] = eval_max_new_tokens(cfg)
    if "extract.layer" in out and (depth := known_depth(cfg)) is not None:
        try:
            block = resolve_layer(cfg.extract.layer, depth)
        except ValueError:
            return out  # out of range: the stage refuses it with the fix
        out["extract.layer"] = None if block == resolve_layer(None, depth) else block
    return out


def pinned_at_default(field: str, value: Any) -> bool:
    """Is `value` a PINNABLE field's keyed default (:func:`pinned_fields`), as a slice holds a pinned field whatever
    the run was given? in: dotted field, its keyed value; out: bool."""
    return field in PINNABLE and value == located(field, schema_defaults()[field])


def ran_values(cfg: PipelineConfig, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The config fields of a stage slice (:func:`stage_slice`, the keyed form) as the run had them, for a reader: each
    as `cfg` holds it (a data file's or local folder's real path, a list in the user's order; credentials masked as
    in a run record), and extract.layer as the block index it resolved to where the model's depth is known (block 0
    shows 0, not the key's None for the middle block; -1 shows the last block's index), and a pinned field
    (:func:`pinned_fields`, keyed at its default) as the run was given it. A field whose value in `cfg` does not key
    to the slice's otherwise (:func:`located`; `cfg` lacks it) keeps the slice's. A stage run's MLflow params: its
    key is computed from the keyed form alone. in: the run's config, the fields; out: {dotted field: value}."""
    flat = redacted(flatten(cfg))
    out = {k: flat[k] if k in flat and (located(k, flat[k]) == v or pinned_at_default(k, v)) else v
           for k, v in fields.items()}
    if "extract.layer" in out and (depth := known_depth(cfg)) is not None:
        try:
            out["extract.layer"] = resolve_layer(cfg.extract.layer, depth)
        except ValueError:  # out of range: the stage refused it
            pass
    return out


# the stages whose outputs pass through saerl.verify (gold answers normalized at ingest; rollouts, rewards and
# evaluation judged): their keys carry verify.VERSION, so a change of the verdict rules rebuilds them
VERIFYING: tuple[str, ...] = ("ingest", "label", "train", "heldout")
VERIFY_PART = "+verify"  # between a VERIFYING stage's own version and the verifier's in its code version ('12+verify1')


# the ingest version whose kept rows (prompts.parquet: ids, prompts, answers, labels) the code writes now. The stages
# that read ingest's rows (saerl.pipeline.ROWS_READERS: extract, label, score, properties, train, evaluate: every
# stage that reads ingest) key on it, not on ingest's own version, so a change of what ingest writes beside the rows
# (rejected.parquet's details, its summary) reruns ingest alone, not the extraction and all after it. Bump it to
# ingest's version when a change alters the kept rows (tests/test_stages.py pins the rows of a sample ingest for each
# value). 16: the kept rows in id order (saerl.data.in_id_order), not file order, so the same rows in another file
# order key every reader as the file does.
INGEST_ROWS_VERSION = "16"


def rows_version() -> str:
    """The version ingest's kept rows are written by: INGEST_ROWS_VERSION plus the verifier's (gold answers are
    normalized, and rows dropped, by saerl.verify), as code_version writes it ('11+verify4')."""
    return f"{INGEST_ROWS_VERSION}{VERIFY_PART}{verify.VERSION}"


def code_version(stage: str) -> str:
    """The code version `stage`'s artifacts are built by: its own version, plus the verifier's for a VERIFYING
    stage ('12+verify1')."""
    own = STAGES[stage].version
    return f"{own}{VERIFY_PART}{verify.VERSION}" if stage in VERIFYING else own


def stage_key(cfg: PipelineConfig, stage: str, input_keys: dict[str, str]) -> str:
    """Cache key of `stage`: hash of its name, :func:`code_version`, input artifact keys and config slice."""
    s = STAGES[stage]
    return stable_hash(
        {"stage": s.name, "version": code_version(stage), "inputs": dict(sorted(input_keys.items())),
         "config": stage_slice(cfg, stage, input_keys)},
        length=20,
    )
