"""The pipeline's stages: what each reads from config, which artifacts it takes in, and its cache key.

A stage's key is the hash of (stage name, its code version, the keys of its input artifacts, and the
config fields it reads). Bump a stage's ``version`` whenever its code changes what it writes.

Fields no stage reads (``RESULT_NEUTRAL``) are those that cannot change any result (where to log, how to
run); every other config field must be read by some stage, or a change to it would never rerun anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from saerl import verify
from saerl.config import PipelineConfig, config_slice, stable_hash


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: `reads` are dotted config prefixes, `inputs` upstream stage names."""

    name: str
    version: str
    reads: tuple[str, ...]
    inputs: tuple[str, ...]
    doc: str


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("testbed", "6", ("testbed",), (), "synthetic math world + tiny pretrained policy LM"),
        Stage("ingest", "8", ("data",), ("testbed",), "prompts.parquet + rejected.parquet from a data set"),
        Stage(
            "extract", "5",
            ("model.name_or_path", "model.revision", "model.dtype", "model.trust_remote_code", "model.hub_kernels",
             "extract"),
            ("ingest", "testbed"), "residual-stream activations in chunked Zarr",
        ),
        Stage(
            "sae", "2",
            ("sae.source", "sae.release", "sae.sae_id", "sae.path", "sae.architecture", "sae.expansion", "sae.k",
             "sae.lr", "sae.train_tokens", "sae.batch_size", "sae.heldout_frac", "sae.seed", "sae.train_epochs",
             "sae.l1_coefficient", "sae.normalize", "sae.dead_feature_window"),
            ("extract",), "a sae-lens SAE (trained here, local, or pretrained) + its quality report",
        ),
        Stage("encode", "3", ("sae.encode_pool", "sae.encode_top_k", "sae.encode_batch_tokens"), ("extract", "sae"), "sparse top-K SAE codes"),
        Stage(
            "label", "9",
            ("score.label_fraction", "score.label_rollouts", "score.label_batch",
             "score.label_chunk_rows", "score.seed",
             "model", "train.temperature", "train.top_k", "train.max_completion_length", "train.verify_timeout_s"),
            ("ingest", "testbed"), "measured pass rates on the labelled subset",
        ),
        Stage(
            "score", "12",
            ("score.n_clusters", "score.k_range", "score.tfidf", "score.cluster_pool", "score.model_pool",
             "score.difficulty_pool",
             "score.difficulty_source", "score.label_fraction",
             "score.seed", "score.minibatch_above", "score.kmeans_n_init", "score.silhouette_sample",
             "score.cluster_top_features", "score.cluster_examples", "score.cv_folds", "score.difficulty_models",
             "score.ridge_alphas", "score.enet_l1_ratios", "score.dense_fit_mb",
             "score.enet_n_alphas", "score.enet_max_iter", "score.probe_max_iter", "score.probe_cs", "score.heldout_fraction",
             "score.ood_folds", "score.baselines", "score.text_max_features"),
            ("ingest", "extract", "encode", "label"), "clusters, difficulty_hat, quality_hat per prompt",
        ),
        Stage("curriculum", "3", ("curriculum", "score.quality_threshold"), ("score",), "order.parquet"),
        Stage(
            "train", "12",
            ("model", "train.algorithm", "train.max_steps", "train.learning_rate", "train.warmup_steps",
             "train.num_generations",
             "train.steps_per_generation", "train.micro_batches",
             "train.temperature", "train.top_k", "train.max_completion_length", "train.beta", "train.epsilon",
             "train.epsilon_high", "train.loss_type", "train.scale_rewards", "train.format_reward", "train.overlong_buffer",
             "train.mask_truncated_completions",
             "train.dynamic_sampling_max_rounds", "train.eval_every", "train.eval_problems",
             "train.verify_timeout_s", "train.bf16", "train.use_vllm", "curriculum.batch_size", "eval.verify_timeout_s",
             "curriculum.epochs", "curriculum.seed", "eval.sets", "eval.batch_size", "data"),
            ("ingest", "curriculum", "testbed"),
            "one RL run per (arm, seed): policy checkpoint, per-step log, greedy learning curve",
        ),
        Stage("evaluate", "13", ("eval", "train.arms", "train.seeds", "train.max_completion_length", "data"),
              ("train", "ingest", "testbed"), "eval.parquet, arm comparison, steps-to-target"),
    )
}

# train.save_every / train.keep_checkpoints only decide which resumable checkpoints a run keeps on disk: a run
# resumed from one continues as the uninterrupted run would (saerl.rl.train_grpo)
RESULT_NEUTRAL: tuple[str, ...] = ("name", "tracking", "runtime", "train.save_every", "train.keep_checkpoints",
                                   "score.n_jobs", "train.activation_checkpointing")


# the policy's name and pinned revision, which extraction reads only when it reads the policy's internals: with
# extract.model set it loads that model (model.revision names a commit of the policy's repo only), so a new policy
# must not rerun extraction (saerl.runners.internals_model, internals_model_cfg)
POLICY_ID: tuple[str, ...] = ("model.name_or_path", "model.revision")


# the train fields one algorithm ignores: DAPO always aggregates the loss per token (saerl.dapo.dapo_overrides),
# and only DAPO refills groups without reward spread (saerl.rl.train_grpo), so a change of either under the other
# algorithm must not retrain
ALGORITHM_UNREAD: dict[str, tuple[str, ...]] = {"dapo": ("train.loss_type",),
                                                "grpo": ("train.dynamic_sampling_max_rounds",)}


def unread_fields(cfg: PipelineConfig, stage: str) -> tuple[str, ...]:
    """Fields among `stage`'s declared reads that its runner ignores under `cfg`: the policy's id (POLICY_ID)
    for extract when extract.model names another model; for train, what cfg.train.algorithm ignores
    (ALGORITHM_UNREAD). in: config, stage; out: dotted paths."""
    if stage == "extract":
        return POLICY_ID if cfg.extract.model is not None else ()
    return ALGORITHM_UNREAD[cfg.train.algorithm] if stage == "train" else ()


def stage_slice(cfg: PipelineConfig, stage: str) -> dict[str, object]:
    """The config fields `stage` reads under `cfg`, as {dotted path: value}."""
    unread = unread_fields(cfg, stage)
    return {k: v for k, v in config_slice(cfg, STAGES[stage].reads).items() if k not in unread}


# the stages whose outputs pass through saerl.verify (gold answers normalized at ingest; rollouts, rewards and
# evaluation judged): their keys carry verify.VERSION, so a change of the verdict rules rebuilds them
VERIFYING: tuple[str, ...] = ("ingest", "label", "train", "evaluate")


def code_version(stage: str) -> str:
    """The code version `stage`'s artifacts are built by: its own version, plus the verifier's for a VERIFYING
    stage ('12+verify1')."""
    own = STAGES[stage].version
    return f"{own}+verify{verify.VERSION}" if stage in VERIFYING else own


def stage_key(cfg: PipelineConfig, stage: str, input_keys: dict[str, str]) -> str:
    """Cache key of `stage`: hash of its name, :func:`code_version`, input artifact keys and config slice."""
    s = STAGES[stage]
    return stable_hash(
        {"stage": s.name, "version": code_version(stage), "inputs": dict(sorted(input_keys.items())),
         "config": stage_slice(cfg, stage)},
        length=20,
    )
