"""One pydantic schema for the whole pipeline, YAML loading, and config slices.

Every section forbids unknown keys. Errors name the dotted key path, suggest the closest valid key for
typos, and for wrong types name the field, the value given and the type expected: :mod:`saerl.overrides` words
them, and parses and applies the dotted command-line overrides :func:`load_config` takes. It imports this module
(the schema), so this one imports it inside the functions that call it.

Which fields each stage reads is declared in :mod:`saerl.stages`; :func:`config_slice` turns such a declaration
into the part of a stage's cache key that comes from config (hashed there with :func:`stable_hash`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from saerl.terminal import stderr_is_terminal

log = logging.getLogger(__name__)
CHECKOUT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # a checkout's top-level configs/
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"  # the same files as a wheel installs them (pyproject.toml)
TESTBED_LEVELS = 5  # difficulty levels of the synthetic world (saerl.testbed): one entry each in the level lists
TESTBED_DEFECTS = ("wrong_gold", "missing_info", "garbled", "near_duplicate", "off_distribution")  # saerl.testbed
ROPE_PAIR = 2  # the testbed LM's rotary position embeddings turn pairs of dimensions: a head's width divides by it
MIN_CLUSTERS = 2  # the smallest k the auto k search (score.k_range) tries: one cluster orders nothing
DAPO_EPSILON_HIGH = 0.28  # DAPO's clip-higher upper bound, train.epsilon_high under algorithm=dapo when unset (as
# saerl.dapo.DAPO_EPSILON_HIGH, which trains with it; a test checks the two agree)
DAPO_EPSILON = 0.2  # DAPO's lower clip bound (paper, section 3.1), which its epsilon_high is above


def shipped_configs(packaged: Path = PACKAGED_CONFIGS, checkout: Path = CHECKOUT_CONFIGS) -> Path:
    """The folder of the configs saerl ships (demo.yaml, smoke.yaml, the examples): the package's own copy where a wheel
    installed one (saerl/configs; a checkout has none, and the folder beside an installed package is site-packages',
    whose `configs` could be anything), else the checkout's configs/. in: both candidates; out: the folder."""
    return packaged if packaged.is_dir() else checkout


SHIPPED_CONFIGS = shipped_configs()


def union_members(annotation: Any) -> list[Any]:
    """The types a field of this annotation takes: the members of a union (X | None, Union[...]), each unwrapped of
    Annotated. in: a type annotation; out: the member annotations."""
    todo, members = [annotation], []
    while todo:
        ann = todo.pop()
        origin = get_origin(ann)
        if origin is Annotated:
            todo.append(get_args(ann)[0])
        elif origin in (Union, types.UnionType):
            todo.extend(get_args(ann))
        else:
            members.append(ann)
    return members


def number_not_bool(annotation: Any) -> bool:
    """Does a field of this type take a number (int or float, also as one member of a union or inside Annotated) but
    not a bool? in: a type annotation; out: the verdict."""
    members = union_members(annotation)
    return bool({int, float} & set(members)) and bool not in members


def item_annotations(annotation: Any) -> list[Any]:
    """The item types of a list or tuple field (list[int]: [int]; tuple[int, int]: [int, int]), also inside a union
    or Annotated; [] for any other. in: a type annotation; out: the item annotations."""
    return [a for m in union_members(annotation) if get_origin(m) in (list, tuple) for a in get_args(m) if a is not Ellipsis]


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated, and no number field takes
    inf or nan (none means anything there: a learning rate of .inf trained nonsense without a word)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_no_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """A number field refuses true/false (YAML reads yes/no/on/off so too): pydantic read
        `train.max_steps=yes` as 1 and `score.n_clusters=true` as k = 1, without a word."""
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if isinstance(value, bool) and number_not_bool(annotation):
            raise ValueError(f"takes a number, not {str(value).lower()} (a yes/no: YAML reads yes, no, on and off "
                             "as such too)")
        if isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value) and any(
                number_not_bool(item) for item in item_annotations(annotation)):  # train.seeds=[yes, no]: [1, 0]
            raise ValueError(f"takes numbers, not {[str(v).lower() if isinstance(v, bool) else v for v in value]} "
                             "(yes/no items: YAML reads yes, no, on and off as such too)")
        return value


class DataConfig(Section):
    """Where the training prompts come from and how a user's columns map onto ours (ingest stage)."""

    source: Literal["file", "testbed", "sample"] = Field(
        "sample", description="file: a user dataset at `path`; testbed: the synthetic world; sample: the small built-in file"
    )
    path: str | None = Field(None, description="jsonl / parquet / csv file, or a HF `save_to_disk` folder")
    format: Literal["auto", "jsonl", "parquet", "csv", "hf"] = Field("auto", description="file format; auto = by suffix")
    hf_split: str | None = Field(None, description="split to read from a HF DatasetDict folder")
    prompt: str = Field("question", description="prompt field name, or a template over fields like '{body} {question}'")
    answer: str = Field("answer", description="gold answer field (normalised with math-verify)")
    id: str | None = Field(None, description="id field; default: content hash of the prompt")
    topic: str | None = Field(None, description="optional topic label field")
    difficulty: str | None = Field(None, description="optional difficulty label field (numeric)")
    quality: str | None = Field(None, description="optional quality label field (1/true = good)")
    labelled: str | None = Field(None, description="optional boolean field marking the labelled subset for property models")
    defect: str | None = Field(None, description="optional defect-kind field (text; e.g. 'none', 'garbled'): the "
                               "quality report then adds the probe's AUROC per defect kind")
    max_prompt_chars: int = Field(4000, gt=0, description="longer prompts are rejected as over-long")
    max_rows: int | None = Field(None, gt=0, description="take the first N rows of the file (after reading, before checks)")
    verify_timeout_s: float = Field(5.0, gt=0, description="wall-clock bound per answer parse")

    @model_validator(mode="before")
    @classmethod
    def _file_when_a_path_is_given(cls, data: Any) -> Any:
        """A data section that names a path and no source reads that file (source 'file'): the default source,
        the built-in sample, would train on the sample and ignore the path without a word. in: the raw section;
        out: the same, with source 'file' added when a path is given without a source."""
        if isinstance(data, dict) and data.get("path") is not None and "source" not in data:
            return {**data, "source": "file"}
        return data

    @model_validator(mode="after")
    def _path_read(self) -> DataConfig:
        """Refuse a path that the source does not read (source 'sample' or 'testbed' with a path): the run would
        ignore the file. in: the section; out: the same, or ValueError naming both fields and the fix."""
        if self.path is not None and self.source != "file":
            raise ValueError(f"data.path is {self.path!r} but data.source is '{self.source}', which does not read "
                             "it: set data.source=file to train on that file, or leave data.path out")
        return self


class TestbedConfig(Section):
    """The synthetic math world and its tiny policy LM (testbed stage)."""

    seed: int = Field(0, ge=0, description="one seed for the whole world")
    topics: list[Literal["arith", "mult", "word", "linear", "remainder", "compare", "sequence"]] = Field(
        ["arith", "mult", "word", "linear", "remainder", "compare", "sequence"], description="topics drawn uniformly"
    )
    n_pretrain: int = Field(60000, gt=0, description="problems in the LM's pretraining corpus")
    n_pool: int = Field(2000, gt=0, description="prompts in the RL training pool")
    n_eval: int = Field(500, gt=0, description="prompts per held-out evaluation set")
    pool_level_mix: list[Annotated[float, Field(ge=0)]] = Field(
        [0.25, 0.3, 0.25, 0.12, 0.08], description="level 1-5 shares (pool, eval)")
    pretrain_level_mix: list[Annotated[float, Field(ge=0)]] = Field(
        [0.3, 0.3, 0.2, 0.1, 0.1], description="level 1-5 shares (corpus)")
    pretrain_slip: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        [0.25, 0.45, 0.45, 0.4, 0.4], description="per level, share of corpus solutions with one plausible slip "
        "(the LM learns to slip that often; RL's headroom is removing the slips)"
    )
    defect_share: float = Field(0.15, ge=0, le=1, description="share of pool prompts with a quality defect")
    defect_kinds: dict[str, float] = Field(
        {"wrong_gold": 0.3, "missing_info": 0.2, "garbled": 0.2, "near_duplicate": 0.15, "off_distribution": 0.15},
        description="relative shares of the defect kinds",
    )
    labelled_share: float = Field(0.2, ge=0, le=1, description="share of the pool flagged as the labelled subset")
    d_model: int = Field(128, gt=0, description="LM hidden size")
    n_layers: int = Field(2, gt=0, description="LM layers")
    n_heads: int = Field(4, gt=0, description="LM attention heads")
    d_ff: int = Field(512, gt=0, description="LM MLP width")
    max_len: int = Field(160, gt=0, description="LM context (tokens)")
    pretrain_steps: int = Field(1500, gt=0, description="pretraining optimizer steps")
    batch_size: int = Field(96, gt=0, description="pretraining sequences per step")
    bucket_batches: int = Field(32, gt=0, description="batches sorted together by length (less padding)")
    lr: float = Field(3e-3, gt=0, description="pretraining peak learning rate (AdamW, cosine)")
    warmup_steps: int = Field(30, ge=0, description="linear warmup steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate as a share of the peak")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip")
    log_every: int = Field(50, gt=0, description="log the pretraining loss every N steps (the stage's summary only)")
    eval_batch: int = Field(256, gt=0, description="prompts per generation batch of the LM's own greedy check after "
                            "pretraining (the stage's summary only)")
    max_new_tokens: int = Field(
        56, gt=0, description="generation limit of the LM's own greedy check after pretraining (the stage's summary "
        "only; the longest worked solution fits): not the policy's, which is train.max_completion_length (rollouts, "
        "the learning curve) and eval.max_new_tokens (the final evaluation)")
    threads: int = Field(2, gt=0, description="torch CPU threads")

    @field_validator("topics")
    @classmethod
    def _some_topic(cls, value: list[str]) -> list[str]:
        """At least one topic: the world draws every problem from them."""
        if not value:
            raise ValueError("no topic given: name at least one, e.g. testbed.topics=[arith, mult]")
        return value

    @field_validator("pool_level_mix", "pretrain_level_mix", "pretrain_slip")
    @classmethod
    def _one_per_level(cls, value: list[float], info: Any) -> list[float]:
        """One entry per difficulty level of the world (levels 1..TESTBED_LEVELS)."""
        if len(value) != TESTBED_LEVELS:
            raise ValueError(f"testbed.{info.field_name} needs one entry per difficulty level 1-{TESTBED_LEVELS} "
                             f"({TESTBED_LEVELS} numbers), got {len(value)}: e.g. testbed.{info.field_name}="
                             f"{cls.model_fields[info.field_name].default}")
        return value

    @field_validator("pool_level_mix", "pretrain_level_mix")
    @classmethod
    def _some_level(cls, value: list[float], info: Any) -> list[float]:
        """Relative shares: a positive total to draw levels by (all 0 drew nothing, reported as the world's
        content running out)."""
        if sum(value) <= 0:
            raise ValueError(f"testbed.{info.field_name}: the shares sum to 0; give at least one level a positive "
                             f"share, e.g. testbed.{info.field_name}={cls.model_fields[info.field_name].default}")
        return value

    @field_validator("defect_kinds")
    @classmethod
    def _defect_shares(cls, value: dict[str, float]) -> dict[str, float]:
        """Relative shares of known kinds (TESTBED_DEFECTS): none negative, and a positive total to divide by."""
        unknown = sorted(k for k in value if k not in TESTBED_DEFECTS)
        if unknown:
            raise ValueError(f"testbed.defect_kinds: unknown kind {', '.join(map(repr, unknown))}; the kinds are "
                             f"{', '.join(TESTBED_DEFECTS)}")
        negative = sorted(k for k, v in value.items() if v < 0)
        if negative:
            raise ValueError(f"testbed.defect_kinds: negative share for {', '.join(negative)}; shares are >= 0")
        if sum(value.values()) <= 0:
            raise ValueError("testbed.defect_kinds: the shares sum to 0; give at least one kind a positive share, "
                             "e.g. testbed.defect_kinds={garbled: 1} (no defects at all: testbed.defect_share=0)")
        return value

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TestbedConfig:
        """Each attention head of the LM takes d_model / n_heads dimensions, turned in pairs by its rotary position
        embeddings (ROPE_PAIR): d_model must divide by n_heads into an even width (transformers refused it inside
        the testbed stage, naming no config field). in: the section; out: the same, or ValueError naming both fields
        and the nearest values that fit."""
        step = ROPE_PAIR * self.n_heads
        if self.d_model % step == 0:
            return self
        width = max(step, round(self.d_model / step) * step)
        heads = [h for h in range(1, self.d_model + 1) if self.d_model % (ROPE_PAIR * h) == 0]
        other = (f" or testbed.n_heads={min(heads, key=lambda h: (abs(h - self.n_heads), h))}" if heads else "")
        raise ValueError(f"testbed.d_model={self.d_model} does not split into testbed.n_heads={self.n_heads} heads of an "
                         f"even width (each head takes d_model / n_heads dimensions, turned in pairs by its rotary "
                         f"position embeddings): set testbed.d_model={width}{other}")


class ModelConfig(Section):
    """The policy model (also the model whose internals are read unless extract.model is set)."""

    name_or_path: str = Field("testbed", description="hub id, local folder, or 'testbed' for the project's tiny LM")
    revision: str | None = Field(None, description="hub revision (commit) to pin")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = float32 on CPU, the checkpoint's dtype on GPU"
    )
    trust_remote_code: bool = Field(False, description="run a model repo's own code; off unless you ask")
    hub_kernels: bool = Field(
        False, description="let transformers swap layers for kernels it downloads from the Hugging Face Hub "
        "(kernels-community/*, its default on a GPU when the kernels package is installed): code from the hub, and "
        "training fails without hub access; off unless you ask")
    stop_at_turn_end: bool = Field(
        True, description="completions (RL rollouts, label rollouts, evaluation) also end at the token the chat "
        "template closes an assistant turn with (Qwen's <|im_end|>, Llama 3's <|eot_id|>), not only at EOS: a base "
        "model's generation_config often names EOS alone, and text past the turn's end could state another answer")


class ExtractConfig(Section):
    """Residual-stream extraction (extract stage)."""

    model: str | None = Field(None, description="read internals of this model instead of the policy")
    layer: int | None = Field(
        None, description="block whose output is read, negative allowed; None = (n_layers - 1) // 2, the middle "
        "of the residual stream")
    pooling: list[Literal["mean", "last", "max"]] = Field(["mean", "last", "max"], description="pooled vectors kept")
    chat_template: bool = Field(True, description="apply the tokenizer's chat template as in RL")
    token_budget: int = Field(16384, gt=0, description="padded tokens per forward batch")
    max_length: int = Field(512, gt=0, description="truncate prompts to this many tokens")
    chunk_rows: int = Field(512, gt=0, description="prompts per Zarr chunk (the resume unit)")
    store_tokens: bool = Field(True, description="keep token-level residuals, not only pooled vectors; the sae and "
                               "encode stages read them, so false is for runs that stop at extract (--until extract)")
    truncation_side: Literal["left", "right"] = Field(
        "left", description="which end of an over-long prompt is cut (left keeps the end the policy answers from)"
    )
    token_block_rows: int = Field(4096, gt=0, description="token rows per Zarr chunk inside one prompt-chunk's token array")
    skip_head: bool = Field(
        True, description="causal models: leave each prompt's head out of the pooled vectors, the SAE's training "
        "tokens and the encode pooling: the chat template's tokens before the prompt text (the same for every "
        "prompt, so their residuals are too) and at least the first token (the attention sink, whose norm dwarfs "
        "the rest); the last token and the template's tail after the prompt are kept")


class SAEConfig(Section):
    """The sparse autoencoder (sae stage) and how prompts are encoded with it (encode stage)."""

    source: Literal["train", "pretrained", "local"] = Field("train", description="where the SAE comes from")
    release: str | None = Field(None, description="sae-lens release (source=pretrained)")
    sae_id: str | None = Field(None, description="sae-lens SAE id within the release (source=pretrained)")
    path: str | None = Field(None, description="local sae-lens folder (source=local)")
    hook_check: Literal["refuse", "warn"] = Field(
        "refuse", description="a pretrained or local SAE whose hook (cfg metadata hook_name) is not the residual "
        "stream after the extracted block (extract.layer): refuse it, or warn and use it")
    architecture: Literal["topk", "standard"] = Field("topk", description="architecture when training")
    expansion: int = Field(8, gt=0, description="width = expansion * d_in when training")
    k: int = Field(32, gt=0, description="active features per token (TopK)")
    lr: float = Field(4e-4, gt=0, description="training learning rate")
    train_tokens: int = Field(200_000, gt=0, description="token sample size for training")
    batch_size: int = Field(512, gt=0, description="training batch in tokens")
    heldout_frac: float = Field(0.1, gt=0, lt=1, description="share of sampled tokens held out for the report")
    seed: int = Field(0, ge=0, description="token sampling and init seed")
    encode_pool: list[Literal["max", "mean"]] = Field(
        ["max", "mean"], min_length=1, description="poolings of token codes per prompt stored by the encode stage "
        "(max: each feature's strongest firing; mean: weighted by the share of tokens it fires on); "
        "score.cluster_pool and score.model_pool each read one of them, score.difficulty_pool one or all")
    encode_top_k: int = Field(64, gt=0, description="pooled features kept per prompt")
    encode_batch_tokens: int = Field(8192, gt=0, description="tokens per SAE encode batch (bounds encode memory)")
    train_epochs: int = Field(8, gt=0, description="passes over the training token sample")
    l1_coefficient: float = Field(5.0, gt=0, description="L1 sparsity coefficient (architecture=standard)")
    normalize: Literal["none", "expected_average_only_in"] = Field(
        "expected_average_only_in", description="input scaling while training (folded into the saved weights)"
    )
    dead_feature_window: int = Field(
        200, gt=0, description="training steps without firing after which a feature counts as dead (TopK aux loss)"
    )

    @field_validator("encode_pool", mode="before")
    @classmethod
    def _one_pool(cls, value: Any) -> Any:
        """A single pooling name ("max") means that pooling alone; duplicates are dropped, order kept."""
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(dict.fromkeys(value))
        return value  # other items ([[max]]): the schema names the field and what it takes


class ScoreConfig(Section):
    """Property models on SAE features: clusters, difficulty, quality (label, score and properties stages)."""

    n_clusters: Annotated[int, Field(gt=0)] | Literal["auto"] = Field(
        "auto", description="k for k-means, or auto (silhouette over k_range)")
    k_range: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] = Field(
        (4, 16), description="k searched when n_clusters is auto (inclusive, either order; k = 1 is never searched)")
    tfidf: bool = Field(True, description="TF-IDF-weight pooled codes before clustering")
    cluster_pool: Literal["max", "mean"] = Field(
        "max", description="pooled SAE codes the clusters are made from (must be in sae.encode_pool): max was "
        "better on 3 of 4 data sets measured, mean on the number-heavy 10k testbed world (docs/testbed.md, "
        "session 5); switching reruns scoring and the stages after it, never extraction or encoding")
    model_pool: Literal["max", "mean"] = Field(
        "max", description="pooled SAE codes the quality probe reads (must be in sae.encode_pool); max keeps the "
        "strongest firing of each feature")
    difficulty_pool: Literal["auto", "max", "mean"] = Field(
        "auto", description="pooled SAE codes the difficulty regressor reads: auto fits it on every pooling in "
        "sae.encode_pool and keeps the lowest cross-validated error on the labelled rows (no held-out row is "
        "read; the report's models choose the same way on their own train rows); max or mean fixes one")
    difficulty_source: Literal["auto", "column", "measured"] = Field(
        "auto", description="auto: the dataset's difficulty column if mapped, else measured pass rate"
    )
    label_fraction: float = Field(0.2, gt=0, le=1, description="share of prompts in the labelled subset, a seeded "
                                  "draw; unread when data.labelled maps a column (it picks the subset)")
    label_max: int | None = Field(
        5000, gt=0, description="at most this many prompts in the drawn labelled subset (score.label_fraction of the "
        "pool, capped; a subset of the uncapped draw): the label stage's rollouts and every property-model fit grow "
        "with it (20% of 500k prompts: 100k labelled rows, 800k rollouts and hours of fits on 2 cores); null: no cap; "
        "unread when data.labelled maps a column")
    label_rollouts: int = Field(8, gt=0, description="rollouts per prompt when measuring pass rate")
    label_batch: int = Field(64, gt=0, description="prompts per generation batch when measuring pass rate")
    label_chunk_rows: int = Field(
        64, gt=0, description="labelled prompts per label chunk: the resume unit (a killed label stage redoes only "
        "unfinished chunks) and the seeding unit (each chunk samples with a seed derived from score.seed and its index)")
    quality_threshold: float = Field(0.5, ge=0, le=1, description="prompts with quality_hat below are filtered")
    seed: int = Field(0, ge=0, description="split and k-means seed")
    minibatch_above: int = Field(
        10_000, gt=0, description="use MiniBatchKMeans when there are more prompts than this; above it the "
        "cluster-vs-topic report and the cluster map also read a seeded sample of this many prompts")
    kmeans_n_init: int = Field(3, gt=0, description="k-means restarts (best inertia kept)")
    silhouette_sample: int = Field(2000, ge=100, description="prompts subsampled (seeded) to choose k by cosine silhouette")
    cluster_top_features: int = Field(10, gt=0, description="top SAE features listed per cluster, by mean weight in "
                                      "the codes the clusters were made from (TF-IDF weighted when score.tfidf; "
                                      "rows L2-normalised)")
    cluster_examples: int = Field(3, ge=0, description="example prompts listed per cluster")
    cv_folds: int = Field(5, ge=2, description="cross-validation folds for every property model's hyper-parameters")
    enet_l1_ratios: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [0.1, 0.5, 0.9, 1.0], min_length=1, description="ElasticNetCV l1_ratio grid (difficulty), each in (0, 1]: 1 "
        "is the lasso; 0 (pure L2, the ridge family's) has no automatic alpha path, and above 1 the L2 term turns "
        "negative"
    )
    difficulty_models: list[Literal["elasticnet", "ridge"]] = Field(
        ["elasticnet", "ridge"], min_length=1, description="difficulty regressor families; each is fitted (with its "
        "own CV'd penalty) and the lowest cross-validated error on the labelled rows is kept: elasticnet "
        "(ElasticNetCV), ridge (RidgeCV, the elastic net's pure-L2 end, which generalised best from a few hundred "
        "labels on the testbed: docs/testbed.md, session 7)")
    ridge_alphas: list[Annotated[float, Field(gt=0)]] = Field(
        [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0], min_length=1,
        description="RidgeCV penalty grid (difficulty, family ridge), each > 0")
    enet_n_alphas: int = Field(30, gt=0, description="ElasticNetCV alphas per l1_ratio along the regularisation path")
    enet_max_iter: int = Field(
        50_000, gt=0, description="ElasticNet coordinate-descent iteration cap (fits are in float64 and stop once "
        "converged: at 5,000 the residual baseline's smallest alphas stopped short of the tolerance on the demo)")
    probe_max_iter: int = Field(
        2000, gt=0, description="iteration cap of each logistic-regression probe fit (quality, topic)")
    dense_fit_mb: float = Field(
        1024, ge=0, description="the difficulty elastic net fits on a dense copy of its labelled rows when they "
        "outnumber the features and the copy takes at most this many MB (float64; the CV fit holds about twice "
        "that): the same model, fitted through the Gram matrix, which scikit-learn never uses on sparse input "
        "(1,955 rows x 1,024 codes of the demo world: 10.5 s instead of 19 s; docs/results.md, Property models); 0: always sparse")
    n_jobs: int = Field(
        -1, description="threads for each difficulty ElasticNetCV (its l1_ratio x fold paths; joblib: -1 every core, "
        "1 serial); the fitted models are the same for any value (float64), so the score stage's key does not read it")
    probe_cs: list[Annotated[float, Field(gt=0)]] = Field(
        [0.01, 0.1, 1.0, 10.0, 100.0], min_length=1, description="inverse-regularisation C grid of the quality probe "
        "(CV'd by log loss), each > 0"
    )
    heldout_fraction: float = Field(
        0.3, gt=0, lt=1, description="share of the labelled subset held out to test property models in the report"
    )
    ood_folds: int = Field(
        3, ge=2, description="out-of-distribution difficulty test: topics are dealt (seeded) into this many groups "
        "and each group is held out once (models trained on the labelled rows of the other topics, tested on every "
        "labelled row of the group's); the report's spearman_ood is the mean over the groups it could be tested on "
        "(held-out labels not all equal)")
    baselines: bool = Field(True, description="fit baselines (residuals, text TF-IDF, length, majority) for the report")
    text_max_features: int = Field(20_000, gt=0, description="vocabulary cap of the prompt-text TF-IDF baseline")
    text_analyzer: Literal["char_wb", "word"] = Field(
        "char_wb", description="what the prompt-text TF-IDF baseline reads: char_wb, character 1-3-grams inside words "
        "(any script, with or without spaces between words); word, word tokens of two or more characters (the "
        "baseline before properties stage version 2: each clause of Chinese or Japanese text was one token)")

    @field_validator("k_range")
    @classmethod
    def _some_k_searched(cls, value: tuple[int, int]) -> tuple[int, int]:
        """The auto search tries k from MIN_CLUSTERS up: a range below it searched nothing and gave one cluster,
        which orders nothing, without a word. in: the range; out: the same, or ValueError naming the fix."""
        if max(value) < MIN_CLUSTERS:
            raise ValueError(f"score.k_range={list(value)} holds no k of {MIN_CLUSTERS} or more, and k = 1 is never "
                             f"searched (one cluster orders nothing): set e.g. score.k_range=[{MIN_CLUSTERS}, 16] (a "
                             "fixed k: score.n_clusters=K)")
        return value

    @field_validator("n_jobs")
    @classmethod
    def _threads(cls, value: int) -> int:
        """joblib's thread count: 1 and up, or -1 (every core), -2 (every core but one), ...; 0 failed inside the
        score stage ('n_jobs == 0 in Parallel has no meaning'), naming no field. in: the value; out: the same, or
        ValueError naming the fix."""
        if value == 0:
            raise ValueError("score.n_jobs=0 is not a thread count: give 1 or more, or -1 (every core), -2 (every core "
                             "but one), as joblib reads them, e.g. score.n_jobs=1 (serial)")
        return value


class CurriculumConfig(Section):
    """Batch order from scores (curriculum stage)."""

    batch_size: int = Field(16, gt=0, description="prompts per RL batch")
    mix_ratio: float = Field(
        0.2, ge=0, le=1, description="share of each batch from other clusters: a batch of B takes "
        "round(B * (1 - mix_ratio)) prompts from its home cluster, Python's round (a half to the even number: B 5 at "
        "0.5 takes 2, B 1 at 0.5 none, so no home cluster). 1: no home cluster, every slot drawn from all clusters, "
        "random as to clusters but each cluster still read per `ordering` (a random order is ordering=random too)")
    ordering: Literal["easy_to_hard", "hard_to_easy", "random", "frontier"] = Field(
        "easy_to_hard", description="within a cluster: difficulty_hat ascending, descending, a seeded shuffle, or "
        "frontier: nearest to frontier_target first, then outwards")
    frontier_target: float = Field(
        0.5, description="with ordering=frontier, the difficulty_hat read first, in difficulty_hat's units: with "
        "score.difficulty_source=measured that is 1 - pass rate, so 0.5 starts from the prompts the policy is "
        "predicted to pass half the time, where a GRPO group's reward variance p(1-p) peaks")
    max_difficulty_quantile: float = Field(
        1.0, gt=0, le=1, description="leave out the prompts whose difficulty_hat is above this quantile of the "
        "pool the order reads (after the quality filter): the predicted out-of-reach tail, whose groups are all "
        "wrong and carry no gradient (DAPO regenerates them). 1.0 keeps every prompt; prompts without a "
        "difficulty_hat are kept. A shorter order is repeated by the trainer when the run needs more prompts")
    fit_budget: bool = Field(
        True, description="with a climbing ordering (easy_to_hard, hard_to_easy), when the run trains on fewer "
        "prompts than one epoch of the order holds (train.max_steps x batch_size under the kept pool), read each epoch "
        "in ramps of that many: the first spread evenly over each cluster's reading order, its first prompt to its "
        "last (clusters in proportion to their sizes), so the run climbs each cluster's whole range, then the next "
        "ramp of what is left (DAPO's refills read past the first ramp, into a second climb from the easy end; so do "
        "later epochs). false: one ramp of the whole pool, of which a short run reads only each cluster's easy end, "
        "a selection vanilla's shuffle does not make")
    rotation: Literal["round_robin", "size_weighted"] = Field("round_robin", description="cluster rotation policy")
    epochs: int = Field(1, gt=0, description="passes over the kept prompts")
    filter_quality: bool = Field(True, description="drop prompts under score.quality_threshold")
    seed: int = Field(0, ge=0, description="tie-breaking and mixing seed")


class HealthConfig(Section):
    """The train stage's health checks: when a training run's per-step log (trl's metrics, log.parquet) earns a
    note in its manifest (logged as a warning, shown by `saerl report`; saerl.rl.health_notes); truncated_share also
    bounds the label stage's share of cut rollouts (saerl.labels.cut_notes). Notes only: none stops a run (weights
    that turn non-finite always do), and a change here reruns nothing (saerl.stages.RESULT_NEUTRAL: a reused run
    keeps the notes of the thresholds it ran under)."""

    entropy_floor: float = Field(
        0.05, ge=0, description="note a collapse when the policy's mean token entropy (nats) over the run's last "
        "steps (tail_share) is below this: rollouts of a group come out (nearly) identical, so GRPO has no spread "
        "to learn from; 0 = off")
    tail_share: float = Field(0.25, gt=0, le=1, description="share of the run's last steps (at least one) the "
                              "entropy, format_only_share, reward_drop_share and length_factor checks average over "
                              "(the last two compare it with the same share of the first steps)")
    truncated_share: float = Field(
        0.5, ge=0, le=1, description="note when the mean share of rollouts cut off at train.max_completion_length "
        "(trl's completions/clipped_ratio) over the run is above this; the label stage notes its rollouts, sampled at "
        "the same limit, by the same share (a cut rollout counts as unsolved: saerl.labels.cut_notes)")
    no_signal_share: float = Field(
        0.5, ge=0, le=1, description="note when more than this share of steps had no group with a reward spread "
        "(frac_reward_zero_std = 1: every advantage 0, so no gradient from the reward)")
    verifier_failure_share: float = Field(
        0.01, ge=0, le=1, description="note when more than this share of the reward's answer checks timed out or "
        "erred (scored 0: the reward was noise there)")
    kl_bound: float = Field(1.0, gt=0, description="with train.beta > 0: note when a step's mean KL to the reference "
                            "policy (nats/token) is above this")
    format_only_share: float = Field(
        0.5, ge=0, le=1, description="with train.format_reward > 0: note when, over the run's last steps (tail_share), "
        "the format reward's mean exceeds the correctness reward's by more than this: that share of rollouts earned "
        "reward for a readable final answer alone, not a right one (format-reward hacking)")
    reward_drop_share: float = Field(
        0.9, ge=0, le=1, description="note a reward collapse when the mean reward over the run's last steps "
        "(tail_share) is below its mean over the first steps (tail_share) by more than this share of it, the early "
        "mean being at least reward_floor: the run unlearned what it knew (a finite but ruinous update: a learning "
        "rate too high). A curriculum order trains on harder prompts later, so its reward falls by design: the "
        "demo's saerl arm fell 85% (0.16 -> 0.024) while its held-out accuracy moved 3.5 points at most; 0 = off")
    reward_floor: float = Field(
        0.05, ge=0, description="the early mean reward (first tail_share of the steps) a reward collapse "
        "(reward_drop_share) needs: below it the run had little reward to lose")
    eval_drop: float = Field(
        0.05, ge=0, le=1, description="note when a held-out set's in-training greedy accuracy at the run's last "
        "evaluation is below its first (step 0) by more than this (accuracy points: 0.05 = 5 points): training made "
        "the policy worse on problems it did not train on; 0 = off")
    grad_spike_factor: float = Field(
        10.0, ge=0, description="note the steps whose grad_norm (trl's, before clipping to train.max_grad_norm) is "
        "above this many times the run's median grad_norm over the steps that had a gradient (grad_norm > 0: a step "
        "without a reward spread has none); above 1; 0 = off")
    length_factor: float = Field(
        2.0, ge=0, description="note when the mean completion length (trl's completions/mean_length) over the run's "
        "last steps (tail_share) is above this many times its mean over the first steps (blow-up: rambling or "
        "degenerate repetition) or below 1/this of it (collapse); above 1; 0 = off")

    @field_validator("grad_spike_factor", "length_factor")
    @classmethod
    def _factor_above_one(cls, value: float, info: Any) -> float:
        """A factor over a run's own level: above 1 (at or below it every run would be noted), or 0 (off)."""
        if 0 < value <= 1:
            raise ValueError(f"health.{info.field_name}={value:g} is a factor over the run's own level and must be "
                             f"above 1 (e.g. health.{info.field_name}={cls.model_fields[info.field_name].default:g}),"
                             f" or 0 to turn the note off")
        return value


class TrainConfig(Section):
    """RL training through trl (train stage)."""

    algorithm: Literal["grpo", "dapo"] = Field("grpo", description="grpo, or dapo (clip-higher, token loss, dynamic sampling; "
        "its overlong shaping and filtering are train.overlong_buffer and train.mask_truncated_completions)")
    arms: list[Literal["saerl", "vanilla", "order_only", "filter_only"]] = Field(
        ["saerl", "vanilla"], min_length=1, description="arms trained on the same budget: saerl (filtered, "
        "curriculum order), vanilla (whole pool, seeded shuffle), order_only (curriculum order, no filter), "
        "filter_only (filtered, seeded shuffle)")
    seeds: list[Annotated[int, Field(ge=0)]] = Field([0], description="one run per arm per seed; each seed reads "
        "its own draw of its arm's order (seeded curriculum.seed + seed: vanilla and filter_only a shuffle, saerl "
        "and order_only the curriculum built again), so an arm's spread over seeds includes its order's")
    max_steps: int = Field(100, gt=0, description="optimizer steps per arm")
    learning_rate: float = Field(5e-5, gt=0, description="AdamW learning rate (constant after the warmup)")
    max_grad_norm: float = Field(
        1.0, gt=0, description="clip each optimizer step's gradient to this global L2 norm (trl's and transformers' "
        "default, 1.0; trl logs the norm before clipping as grad_norm)")
    warmup_steps: int = Field(
        0, ge=0, description="optimizer steps of linear learning-rate warmup from 0 (DAPO's recipe: 20); 0 = none")
    num_generations: int = Field(8, ge=2, description="rollouts per prompt (group size)")
    steps_per_generation: int = Field(
        1, ge=1, description="optimizer steps per generation batch (trl): rollouts for this many steps' prompts are "
        "generated in one batch, then consumed one step's prompts at a time, PPO-clipped against the generating policy")
    micro_batches: int = Field(
        1, ge=1, description="gradient accumulation: each optimizer step's completions go through forward/backward "
        "in this many equal parts (the same update, about 1/N of the activation memory); prompts per step x "
        "num_generations must divide by it")
    temperature: float = Field(1.0, gt=0, description="sampling temperature for rollouts (also the label stage's, "
                               "whose pass rates are the measured difficulty: a change there remeasures it)")
    top_k: int = Field(0, ge=0, description="top-k sampling of rollouts, the label stage's too; 0 = off")
    max_completion_length: int = Field(64, gt=0, description="tokens per rollout (the label stage's and the "
                                       "evaluation's completions too)")
    beta: float = Field(0.0, ge=0, description="KL coefficient")
    epsilon: float = Field(0.2, gt=0, description="PPO clip (low), below 1: trl clips the ratio from 1 - epsilon")
    epsilon_high: float | None = Field(
        None, gt=0, description="PPO clip (high): trl clips the ratio to [1 - epsilon, 1 + epsilon_high]; None = "
        "epsilon under algorithm=grpo, DAPO's 0.28 under algorithm=dapo")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "grpo", description="trl loss aggregation under algorithm=grpo: grpo (GRPO's: each rollout's token mean, then "
        "the mean over rollouts), dapo (token-level: every token of the batch weighs the same), dr_grpo, bnpo; "
        "algorithm=dapo always uses dapo (token-level)")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="advantage scaling (trl)")
    format_reward: float = Field(0.0, ge=0, description="weight of the answer-format reward")
    overlong_buffer: int = Field(
        0, ge=0, description="DAPO's overlong reward shaping: a rollout longer than max_completion_length minus this "
        "many tokens is penalised linearly, down to -1 at max_completion_length (trl's soft overlong punishment, added "
        "to the correctness reward with weight 1); 0 = off. DAPO's recipe: 4096 of 20480 tokens, a fifth")
    mask_truncated_completions: bool = Field(
        False, description="DAPO's overlong filtering: rollouts cut off at max_completion_length (no end token) are "
        "left out of the loss (trl), so a truncated answer is neither rewarded nor punished")
    dynamic_sampling_max_rounds: int = Field(
        3, ge=0, description="DAPO: extra generation rounds per batch to replace groups without reward spread "
        "(0 = drop and fill only)")
    dynamic_sampling_refill: Literal["stream", "cluster"] = Field(
        "stream", description="DAPO: what replaces a group without reward spread. stream: the next prompts of the "
        "order, which belong to the next curriculum batches (a refilled step mixes clusters: the run's "
        "cluster_share falls under cluster_share_designed); cluster: the next prompt of the order from the dropped "
        "prompt's own cluster, searched to the end of the order's current pass (prompts passed over are read next; "
        "none left: the next of any cluster), so "
        "a step keeps its cluster mix at the price of reading that cluster's later, harder prompts early. The "
        "shuffled arms (vanilla, filter_only) have no clusters and read the stream either way")
    eval_every: int = Field(25, gt=0, description="greedy held-out accuracy every N steps (the learning curve)")
    eval_problems: int = Field(
        200, gt=0, description="problems per held-out set in the in-training evaluation (smallest sha256(id))")
    save_every: int = Field(
        0, ge=0, description="save a resumable checkpoint (safetensors + optimizer state) every N steps, rounded "
        "up to whole generation batches (steps_per_generation); a killed run resumes from the newest; 0 = final "
        "policy only")
    keep_checkpoints: int = Field(2, gt=0, description="newest checkpoints kept on disk")
    verify_timeout_s: float = Field(5.0, gt=0, description="wall-clock bound per reward answer check (the label "
                                    "stage's checks too)")
    bf16: bool = Field(True, description="bfloat16 training on a GPU (CPU always trains in float32)")
    activation_checkpointing: bool = Field(
        True, description="recompute each layer's activations in the backward pass instead of keeping them (trl's "
        "default): a pass keeps about 1/layers of its activations for one more forward pass of compute. The same "
        "gradients either way (tested: the same weights bit for bit), so result-neutral; turn it off where memory is to "
        "spare for faster steps (the demo does: on its CPU LM 100 steps took 97.7 s on, 88.2 s off)")
    use_vllm: bool = Field(False, description="generate rollouts with vLLM (colocated; GPU only, needs trl[vllm])")
    num_processes: int = Field(
        1, ge=1, description="processes that train one (arm, seed) run together, one GPU each on CUDA (the first N "
        "of CUDA_VISIBLE_DEVICES): the runner starts them with torchrun (saerl.distributed) and each generates and "
        "trains on its 1/N of every step's rollouts, gradients summed (DDP), so a step is the same batch of the "
        "order as in one process; curriculum.batch_size must divide by it. 1 = in the stage's own process (keys "
        "read it only above 1). GRPO only")

    @model_validator(mode="after")
    def _buffer_inside_limit(self) -> TrainConfig:
        """The overlong buffer is the tail of max_completion_length where the penalty rises: it must leave a head
        without penalty, or every rollout would be punished for its length alone."""
        if self.overlong_buffer >= self.max_completion_length:
            raise ValueError(f"train.overlong_buffer={self.overlong_buffer} is not below train.max_completion_length="
                             f"{self.max_completion_length}: the penalty would start at the first token; set "
                             f"train.overlong_buffer={self.max_completion_length // 5} (DAPO's fifth) or 0 (off)")
        return self

    @model_validator(mode="after")
    def _whole_generation_batches(self) -> TrainConfig:
        """A run ends on a whole generation batch: trl generates steps_per_generation steps' rollouts at once, so a
        run stopping inside one would have generated rollouts it never trains on (and which trained_order.parquet
        would list as trained)."""
        if self.max_steps % self.steps_per_generation:
            spg = self.steps_per_generation
            raise ValueError(f"train.max_steps={self.max_steps} is not a multiple of train.steps_per_generation={spg}: "
                             f"the last generation batch would be generated but not all trained on; set "
                             f"train.max_steps={-(-self.max_steps // spg) * spg} (or a steps_per_generation dividing it)")
        return self

    @model_validator(mode="after")
    def _processes_for_grpo(self) -> TrainConfig:
        """Several training processes run GRPO only: DAPO's dynamic sampling draws its prompts in one process."""
        if self.num_processes > 1 and self.algorithm == "dapo":
            raise ValueError(f"train.num_processes={self.num_processes} with train.algorithm=dapo: DAPO's dynamic "
                             "sampling draws its prompts in one process; set train.num_processes=1 or "
                             "train.algorithm=grpo")
        return self

    @field_validator("seeds")
    @classmethod
    def _some_seed(cls, value: list[int]) -> list[int]:
        """At least one seed: every arm trains once per seed, so no seed would train nothing."""
        if not value:
            raise ValueError("no seed given: every arm trains once per seed; give at least one, e.g. train.seeds=[0]")
        return value

    @field_validator("seeds", "arms")
    @classmethod
    def _each_once(cls, value: list[Any], info: Any) -> list[Any]:
        """Each arm and seed once: one listed twice would train the same run twice (the evaluation reads the list)."""
        twice = sorted({v for v in value if value.count(v) > 1}, key=str)
        if twice:
            raise ValueError(f"train.{info.field_name} lists {', '.join(map(str, twice))} more than once: give each "
                             f"once, e.g. train.{info.field_name}=[{', '.join(map(str, dict.fromkeys(value)))}]")
        return value


# the HeldOutSet fields added after configs with {path, prompt, ...} entries keyed their runs: how its file is read
# (format, hf_split) and its own samples per problem (k_samples): left out of the entry's dump (flatten, stage keys,
# records) while unset, so those keys stay as they were
HELD_OUT_READING: tuple[str, ...] = ("format", "hf_split", "k_samples")


class HeldOutSet(Section):
    """One eval.sets entry with a field mapping of its own: a held-out file whose fields differ from the training
    data's (ASDiv's '{body} {question}' beside GSM8K's 'question'), or that is read otherwise (its own format, a
    split of a Hugging Face DatasetDict folder). Mapping fields left out are the data mapping's."""

    path: str = Field(description="the held-out file (jsonl, json, parquet, csv, or a Hugging Face dataset folder)")
    prompt: str | None = Field(None, description="its prompt field or template; None = data.prompt")
    answer: str | None = Field(None, description="its gold answer field; None = data.answer")
    id: str | Literal[False] | None = Field(
        None, description="its id field; None = data.id (content-hash ids when that is unset); false = the file has "
        "no id column: content-hash ids of its prompts, as data.id unset gives, whatever data.id names (an entry "
        "that leaves id out, or gives null, reads data.id, as a config's dump writes it)")
    format: Literal["auto", "jsonl", "parquet", "csv", "hf"] | None = Field(
        None, description="its file format; None = the one its suffix names (a HF folder: hf), or data.format for "
        "a file whose suffix names none")
    hf_split: str | None = Field(
        None, description="the split read from a Hugging Face DatasetDict folder; None = its only split (a folder "
        "of several names one; never data.hf_split, the training data's)")
    k_samples: int | None = Field(
        None, gt=0, description="sampled completions per problem of this set's mean@k (and of its reachable "
        "stratum's probe): AIME and AMC are reported as avg@32 where GSM8K and MATH take fewer; None = "
        "eval.k_samples")

    @field_validator("prompt", "answer", "hf_split", mode="before")
    @classmethod
    def _no_blank_field(cls, value: Any, info: ValidationInfo) -> Any:
        """A prompt, answer or split that is "" (or blanks) names nothing: it read as data.prompt's / data.answer's /
        the folder's only split without a word. in: the value as given; out: it."""
        if isinstance(value, str) and not value.strip():
            leave = "the folder's only split" if info.field_name == "hf_split" else f"data.{info.field_name}'s"
            raise ValueError(f"{info.field_name}={value!r} names no field: write the file's "
                             f"{'split' if info.field_name == 'hf_split' else 'field'}, or leave it out for {leave}")
        return value

    @field_validator("id", mode="before")
    @classmethod
    def _id_field_or_false(cls, value: Any) -> Any:
        """An id is a field's name, false (no id column) or null (data.id's): 0 or true would otherwise read as false
        or as a type error that names neither, and "" (or blanks) as data.id's without a word. in: the value as
        given; out: it."""
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"id={value!r} names no field: write id: false for a file with no id column "
                             "(content-hash ids), the file's id field, or leave id out for data.id's")
        if value is None or value is False or isinstance(value, str):
            return value
        raise ValueError(f"id={value!r}: give the file's id field (text), false for a file with no id column "
                         "(content-hash ids), or leave it out for data.id's")

    @model_serializer(mode="wrap")
    def _unset_reading_left_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The entry as dumped, less the HELD_OUT_READING fields left unset (None), so an entry that does not set
        them dumps, and keys its runs, as before they existed. in: the entry; out: its dict."""
        return {k: v for k, v in handler(self).items() if not (k in HELD_OUT_READING and v is None)}


def held_out_file(entry: str | HeldOutSet) -> Path:
    """The file of an eval.sets entry (a path, or a HeldOutSet's). in: the entry; out: the path, ~ expanded."""
    return Path(entry.path if isinstance(entry, HeldOutSet) else entry).expanduser()


def held_out_mapping(data: DataConfig, entry: str | HeldOutSet) -> DataConfig:
    """How an eval.sets entry is read: the data mapping, whole (data.max_rows caps the training data only), with the
    entry's own prompt / answer / id where it gives them (id: false: none, so content-hash ids); its file format is
    its own format, else the one its suffix names, else data.format (saerl.data.held_out_format: a jsonl held-out set
    beside a training file whose format is named); its split is its own hf_split, else the folder's only one
    (data.hf_split is the training data's). Refuses a set that is the training data's HF folder read with the training split
    (saerl.data.refuse_training_split). in: data config, entry; out: mapping; raises saerl.data.IngestError."""
    from saerl.data import held_out_format, refuse_training_split

    own = {k: v for k in ("prompt", "answer", "id") if isinstance(entry, HeldOutSet) and (v := getattr(entry, k))}
    if isinstance(entry, HeldOutSet) and entry.id is False:  # no id column: content-hash ids, as data.id unset
        own["id"] = None
    path = held_out_file(entry)
    fmt = entry.format if isinstance(entry, HeldOutSet) and entry.format else held_out_format(path, data.format)
    split = entry.hf_split if isinstance(entry, HeldOutSet) else None
    mapping = data.model_copy(update={"max_rows": None, "format": fmt, "hf_split": split, **own})
    refuse_training_split(data, mapping, path)
    return mapping


def set_samples(cfg: EvalConfig, name: str) -> int:
    """The sampled completions per problem of held-out set `name`: its eval.sets entry's own k_samples where it
    sets one, else eval.k_samples (the testbed's own set, a plain-path entry). in: eval config, set name; out: k."""
    entry = cfg.sets.get(name)
    own = entry.k_samples if isinstance(entry, HeldOutSet) else None
    return cfg.k_samples if own is None else own


def eval_max_new_tokens(cfg: PipelineConfig) -> int:
    """The generation limit of the final held-out evaluation: eval.max_new_tokens, or train.max_completion_length
    where it is unset (the in-training curve's limit). in: the config; out: tokens per completion."""
    return cfg.eval.max_new_tokens if cfg.eval.max_new_tokens is not None else cfg.train.max_completion_length


SET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a held-out set's name (eval.sets keys)
TESTBED_SET = "heldout"  # the testbed's own held-out set (saerl.runners.eval_sets)


class EvalConfig(Section):
    """Held-out evaluation (evaluate stage)."""

    k_samples: int = Field(4, gt=0, description="samples per problem for mean accuracy (mean@k); a set's own "
                           "eval.sets.NAME.k_samples overrides it for that set")
    base_policy: bool = Field(
        True, description="also evaluate the starting policy: each arm's RL gain over it, and every set's "
        "reachable stratum (problems the starting policy solves in at least one of k_samples probe samples, a pass "
        "apart from the scored one)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature for mean@k")
    target_accuracy: float | None = Field(
        None, ge=0, le=1, description="steps-to-target target, a fraction (0.75, not 75); None = vanilla's final "
        "accuracy (or eval.target_gain_share's target)")
    target_gain_share: float | None = Field(
        None, gt=0, le=1, description="steps-to-target target as the start plus this share of the arms' mean gain "
        "(0.75: three quarters of the way from step 0 to the arms' mean final accuracy): one target for every arm, "
        "not vanilla's own noisy last point, which vanilla always reaches while an equal arm crosses it earlier or "
        "never (simulations: no ratio in 31-43% of no-difference runs, and ratios biased low); None = vanilla's final")
    max_problems: int | None = Field(
        None, gt=0, description="cap per held-out set: the problems with the smallest sha256(id) (same for every arm)"
    )
    max_new_tokens: int | None = Field(
        None, gt=0, description="tokens per completion of the final held-out evaluation (the heldout stage; the "
        "in-training curve generates up to train.max_completion_length); None = train.max_completion_length. A "
        "completion cut at the limit is scored wrong unless it wrote a right final answer before the cut: a higher "
        "limit re-evaluates every policy without retraining")
    truncation_note_share: float = Field(
        0.05, ge=0, le=1, description="a held-out set whose completions of some arm are cut at the generation limit "
        "(eval.max_new_tokens) and not right, or give no final answer, in over this share gets a note above the "
        "comparison")
    batch_size: int = Field(64, gt=0, description="prompts per generation batch (left-padded HF generate)")
    verify_timeout_s: float = Field(5.0, gt=0, description="wall-clock bound per answer check (the final evaluation "
                                    "and the in-training held-out curve)")
    ci_level: float = Field(0.95, gt=0, lt=1, description="confidence level of every interval in the arm comparison")
    steps_bootstrap: int = Field(
        1000, ge=0, description="resamples (training seeds per arm, and the curve's problems, paired across arms) "
        "for the steps-to-target ratio's interval; 0 = no interval")
    sets: dict[str, str | HeldOutSet] = Field(
        {}, description="extra held-out sets {name: file} read with the data mapping, or {name: {path: file, prompt: "
        "F, answer: F, id: F, format: F, hf_split: S, k_samples: K}} for a file whose fields, reading or samples "
        "per problem differ (id: false for a file with no id column; the testbed adds its own); a file's format is "
        "the one its suffix names, a DatasetDict folder's split its only one unless hf_split names it")
    answer_extraction: Literal["boxed", "boxed_or_last"] = Field(
        "boxed", description="how the held-out evaluation (the heldout stage and the in-training curve; never the "
        "training reward) reads a completion's final answer: 'boxed' = the verifier's (the last \\boxed{} or "
        "'####'; none = no answer, scored wrong); 'boxed_or_last' = that, else the last 'the (final) answer is X', "
        "else the completion's last number, as Qwen2.5-Math's evaluation and lm-eval's flexible extract read an "
        "unboxed answer (saerl.answers)")

    @field_validator("sets")
    @classmethod
    def _set_names(cls, sets: dict[str, Any]) -> dict[str, Any]:
        """A set's name becomes part of metric names (eval/<set>/greedy) and of table rows ('<set>:reachable' is a
        set's reachable stratum): letters, digits, '_', '.' and '-' only, starting with a letter, digit or '_'
        (MLflow refused '..' or 'a//b' and tracking went off for the run; 'x:reachable' collided with x's stratum)."""
        bad = [name for name in sets if not SET_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"eval.sets names {', '.join(map(repr, bad))} are not usable: a set's name names its "
                             "metrics and table rows; use letters, digits, '_', '.' and '-' (e.g. gsm8k_test)")
        return sets

    @model_validator(mode="after")
    def _one_target(self) -> EvalConfig:
        """A steps target is given, or derived by one rule: not both."""
        if self.target_accuracy is not None and self.target_gain_share is not None:
            raise ValueError(f"eval.target_accuracy={self.target_accuracy} and eval.target_gain_share="
                             f"{self.target_gain_share} both set the steps-to-target target: keep one (set the other "
                             "to null)")
        return self


class TrackingConfig(Section):
    """MLflow tracking. Does not change any result, so no stage's key reads it."""

    enabled: bool = Field(True, description="log runs to MLflow")
    uri: str | None = Field(None, description="tracking URI; None = SQLite under the artifact root")
    experiment: str | None = Field(None, description="experiment name; None = the config's name")
    http_retries: int = Field(2, ge=0, description="retries of a tracking-server request before giving up (set as "
                              "MLFLOW_HTTP_REQUEST_MAX_RETRIES for each run, over an inherited value)")
    http_timeout_s: int = Field(10, gt=0, description="timeout of one tracking-server request (set as "
                                "MLFLOW_HTTP_REQUEST_TIMEOUT for each run, over an inherited value)")


PROGRESS_AUTO = "auto"  # runtime.progress's default: bars while stderr is a terminal (RuntimeConfig._progress_auto)


class RuntimeConfig(Section):
    """Where and how things run. No stage's key reads these fields; the device type `device` resolves to (cpu or
    cuda) is part of the keys of the stages that load a model (saerl.pipeline.DEVICE_DEPENDENT): it sets their
    precision."""

    artifact_root: str = Field(".saerl", description="root folder for every artifact")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="torch device")
    task_runner: Literal["local", "dask"] = Field("local", description="local threads, or Dask via prefect-dask")
    dask_address: str | None = Field(None, description="scheduler address of an existing Dask cluster")
    workers: int = Field(2, gt=0, description="parallel tasks: threads (local) or LocalCluster processes (dask)")
    shards_per_worker: int = Field(
        1, gt=0, description="on Dask, extract and encode fan out into this many shards per worker thread (fixed "
        "lists of chunks, dealt round-robin; a LocalCluster has runtime.workers single-thread workers, an external "
        "cluster is asked for its threads); above 1 the scheduler balances them across workers of unequal speed, at the cost of one model load per extract shard (a worker keeps the SAE "
        "it loaded, on its device, for its next encode shard: a few hundred MB of a GPU for a 16k-feature SAE of a 1.5B "
        "model)")
    prefect_api_url: str | None = Field(None, description="use this Prefect server instead of starting one")
    progress: bool = Field(
        PROGRESS_AUTO, validate_default=True, description="show progress bars: true, false, or auto (the default): "
        "while stderr is a terminal (not TERM=dumb, not one of 0 columns), so a log file, a pipe or a CI log gets no "
        "bar frames; auto is resolved as the config is loaded")
    torch_threads: int = Field(
        0, ge=0, description="torch CPU threads per process; 0 = torch's default. Float results are bitwise "
        "reproducible across runs and runners only at an equal thread count (Dask workers default to 1; on the demo "
        "1 and 2 threads gave the same bits). On a 2-core machine where another process keeps a core busy set 1: "
        "torch's 2 threads then wait on each other (a rollout step 1.07 s at 2 threads, 0.47 s at 1)")

    @field_validator("progress", mode="before")
    @classmethod
    def _progress_auto(cls, value: Any) -> Any:
        """'auto' (the default) is whether stderr is a terminal (:func:`stderr_is_terminal`): progress bars went into
        every `2>log` and CI log by default ('\\r'-joined tqdm frames). Resolved where the config is loaded (the
        CLI's process; a deployment's worker), so the flow, its tasks and Dask workers get true or false."""
        return stderr_is_terminal() if value == PROGRESS_AUTO else value

    @field_validator("artifact_root")
    @classmethod
    def _home_expanded(cls, value: str) -> str:
        """'~/runs' is the home folder's runs (it became a folder named '~' under the working directory); an empty
        one is refused (`runtime.artifact_root=` made the current folder the root, silently: every run's artifacts,
        MLflow and Prefect stores landed there)."""
        if not value.strip():
            raise ValueError("runtime.artifact_root is empty, which would make the current folder the artifact root "
                             "(every artifact, MLflow and Prefect store written there): set runtime.artifact_root=DIR, "
                             "or leave it out for .saerl")
        return os.path.expanduser(value)


class PipelineConfig(Section):
    """The whole pipeline. `name` names the MLflow experiment and the run history."""

    name: str = Field("saerl", description="config name")
    data: DataConfig = Field(default_factory=DataConfig)
    testbed: TestbedConfig = Field(default_factory=TestbedConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    sae: SAEConfig = Field(default_factory=SAEConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @field_validator("name")
    @classmethod
    def _named(cls, value: str) -> str:
        """An empty name is refused: MLflow refused the experiment ('Invalid experiment name') and the run went on
        untracked, with only a warning naming neither the field nor the fix."""
        if not value.strip():
            raise ValueError("name is empty, and it names the run's MLflow experiment and its run history: set "
                             "name=NAME, or leave it out to take the config file's name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        """Fields that must agree across sections, checked before any stage runs: the data file when
        data.source is 'file', every pooling the score stage reads among those the encode stage stores,
        train.num_processes dividing a step's prompts (curriculum.batch_size), and train.micro_batches dividing a
        step's completions (curriculum.batch_size x train.num_generations) on each process."""
        if self.data.source == "file" and not self.data.path:
            raise ValueError("data.source is 'file' but data.path is not set: set data.path=/path/to/file.jsonl "
                             "(or data.source=sample / testbed)")
        stored = self.sae.encode_pool
        for name in ("cluster_pool", "model_pool", "difficulty_pool"):
            pool = getattr(self.score, name)
            if pool != "auto" and pool not in stored:
                have, both = ", ".join(stored), ", ".join(dict.fromkeys([*stored, pool]))
                raise ValueError(f"score.{name} is '{pool}' but sae.encode_pool=[{have}] does not store it: set "
                                 f"sae.encode_pool=[{both}] or score.{name}={stored[0]}")
        if self.data.source == "testbed" and TESTBED_SET in self.eval.sets:
            raise ValueError(f"eval.sets names a set '{TESTBED_SET}', the name of the testbed's own held-out set, "
                             "which it would replace: give yours another name")
        rollouts, parts = self.curriculum.batch_size * self.train.num_generations, self.train.micro_batches
        procs = self.train.num_processes
        if self.curriculum.batch_size % procs:
            fits = [d for d in range(1, self.curriculum.batch_size + 1) if self.curriculum.batch_size % d == 0]
            raise ValueError(f"train.num_processes={procs} does not divide curriculum.batch_size="
                             f"{self.curriculum.batch_size}: each process generates whole groups of every step's "
                             f"prompts; set train.num_processes to one of {fits[-3:]} or curriculum.batch_size to a "
                             f"multiple of {procs}")
        if procs > 1 and (rollouts // procs) % parts:
            share = rollouts // procs
            fits = [d for d in range(1, share + 1) if share % d == 0 and d <= 4 * parts][-3:]
            raise ValueError(f"train.micro_batches={parts} does not divide each of the train.num_processes={procs} "
                             f"processes' {share} completions of a step (curriculum.batch_size "
                             f"{self.curriculum.batch_size} x train.num_generations {self.train.num_generations} / "
                             f"{procs}): set train.micro_batches to one of {fits}")
        if rollouts % parts:
            fits = [d for d in range(1, rollouts + 1) if rollouts % d == 0 and d <= 4 * parts][-3:]
            raise ValueError(f"train.micro_batches={parts} does not divide a step's {rollouts} completions "
                             f"(curriculum.batch_size {self.curriculum.batch_size} x train.num_generations "
                             f"{self.train.num_generations}): set train.micro_batches to one of {fits}")
        return self


class ConfigError(ValueError):
    """A config problem, phrased for the user: key path, value, what was expected, and a fix."""


def resolve_layer(layer: int | None, n_layers: int) -> int:
    """Block index in [0, n_layers) whose output is read: None -> (n_layers - 1) // 2, the middle of the
    residual stream (its n_layers + 1 positions run from the embeddings to the last block's output, which the
    unembedding reads; block i writes position i + 1); negatives count from the top. For a 2-block model
    that is block 0, not block 1 (the final stream); for 28 blocks, block 13."""
    idx = (n_layers - 1) // 2 if layer is None else layer
    if idx < 0:
        idx += n_layers
    if not 0 <= idx < n_layers:
        raise ValueError(f"extract.layer={layer} is out of range for a model with {n_layers} layers "
                         f"(use 0..{n_layers - 1} or -1..-{n_layers}, or leave it unset for the middle layer)")
    return idx


def device_type(device: str) -> str:
    """The device type `runtime.device` resolves to on this machine. in: 'auto', 'cpu' or 'cuda'; out: 'cpu' or
    'cuda' ('auto': 'cuda' when torch sees a GPU, else 'cpu'). Only 'auto' imports torch, so cache keys of a config
    that names its device are computed without it."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def clip_problem(train: TrainConfig) -> str | None:
    """What is wrong with the clip range (None when nothing): its upper bound below its lower one (clip-higher: trl
    clips the ratio to [1 - epsilon, 1 + epsilon_high], epsilon_high None meaning epsilon under algorithm=grpo and
    DAPO_EPSILON_HIGH under dapo; an epsilon_high under epsilon clips the rollouts the update favours tighter than those
    it disfavours, the reverse of DAPO's recipe), or an epsilon of 1 or more (no lower clip). Checked before a run
    that trains (saerl.preflight.check_runnable), not by the schema: a run record of such a run still reads (relog,
    score_new). in: the train section; out: one line naming the fields and the fix, or None."""
    high = train.epsilon_high
    if train.epsilon >= 1:
        return (f"train.epsilon={train.epsilon} is not below 1: trl clips the ratio from 1 - epsilon, which would leave "
                f"no lower clip; set train.epsilon below 1 (PPO's and DAPO's: {DAPO_EPSILON})")
    if high is None and train.algorithm == "dapo" and DAPO_EPSILON_HIGH < train.epsilon:
        return (f"train.epsilon={train.epsilon} is above the train.epsilon_high algorithm=dapo uses when none is set "
                f"({DAPO_EPSILON_HIGH}): set train.epsilon_high={train.epsilon} or above (DAPO's clip-higher is "
                f"epsilon_high {DAPO_EPSILON_HIGH} over epsilon {DAPO_EPSILON})")
    if high is not None and high < train.epsilon:
        unset = ", or leave it unset (null: epsilon under grpo)" if train.algorithm == "grpo" else ""
        return (f"train.epsilon_high={high} is below train.epsilon={train.epsilon}: clip-higher means epsilon_high >= "
                f"epsilon (DAPO's: epsilon_high {DAPO_EPSILON_HIGH} over epsilon {DAPO_EPSILON}); set "
                f"train.epsilon_high={train.epsilon} or above{unset}")
    return None


def no_gpu_problem(device: str) -> str | None:
    """Why a CUDA device ('cuda', 'cuda:1') cannot run here: torch sees no GPU (a CPU build of torch, or a CUDA
    build with no device visible), which failed deep in the first stage to load a model ("Torch not compiled with
    CUDA enabled"); None for another device or where torch sees a GPU. Imports torch only for a CUDA device. in:
    runtime.device; out: one line naming it, the cause and the fix, or None."""
    if not device.startswith("cuda"):
        return None
    import torch

    if torch.cuda.is_available():
        return None
    why = (f"torch {torch.__version__} is built without CUDA" if torch.version.cuda is None else
           f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU (none visible: check the driver, "
           "nvidia-smi and CUDA_VISIBLE_DEVICES)")
    return (f"runtime.device={device} but {why}: set runtime.device=auto (a GPU where torch sees one, else the CPU) or cpu, or "
            "install a torch built for your GPU's CUDA")


def field_paths(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[str]:
    """All dotted leaf field paths of a config model, e.g. 'curriculum.mix_ratio'."""
    paths: list[str] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths.extend(field_paths(ann, f"{prefix}{name}."))
        else:
            paths.append(f"{prefix}{name}")
    return paths


def section_names() -> set[str]:
    """The names of the config's sections (train, eval, ...): the top-level fields that hold fields."""
    return {p.split(".")[0] for p in field_paths() if "." in p}


def require_section(cfg: Any, section: str, where: str) -> None:
    """Refuse a config that is not the section `section` of PipelineConfig a library function takes (a notebook
    passed the whole config, or a dict, and met "'PipelineConfig' object has no attribute 'seed'"): TypeError naming
    the function (`where`) and what to pass. in: the value given, the section's name, the function's name."""
    expected = PipelineConfig.model_fields[section].annotation
    if isinstance(cfg, expected):
        return
    fix = (f"pass its {section} section, cfg.{section}" if isinstance(cfg, PipelineConfig) else
           f"pass a {expected.__name__} (saerl.config; a run's whole config's section: cfg.{section})")
    raise TypeError(f"{where} takes the config's {section} section, not a {type(cfg).__name__}: {fix}")


def mapping_fields() -> set[str]:
    """The dotted paths of mapping-valued fields (eval.sets, testbed.defect_kinds), whose entries an override may
    name: 'eval.sets.gsm8k=PATH'."""
    return {path for path, ann in leaf_annotations().items() if "." in path and get_origin(ann) is dict}


def leaf_annotations() -> dict[str, Any]:
    """{dotted leaf field path (field_paths): its type annotation}."""
    out = {}
    for path in field_paths():
        section, _, name = path.partition(".")
        info = PipelineConfig.model_fields[section]
        out[path] = (info.annotation.model_fields[name] if name else info).annotation
    return out


def without_empty_sections(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw config dict less its empty sections: YAML reads a section with nothing under it (`eval:` with its
    entries commented out) as None, which means all defaults, as an absent section does (an override into it
    crashed on the None, a plain field override said the section was not one). in: raw dict; out: a new dict."""
    sections = section_names()
    return {k: v for k, v in raw.items() if not (k in sections and v is None)}


def build_config(raw: dict[str, Any], where: str = "config") -> PipelineConfig:
    """Validate a raw dict into a PipelineConfig, raising ConfigError with readable messages."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        from saerl.overrides import format_errors

        raise ConfigError(format_errors(err, where)) from None


YAML_MERGE_TAG = "tag:yaml.org,2002:merge"  # the tag of YAML's merge key, `<<`


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key given twice in one mapping (safe_load keeps the last one silently: a
    second `eval:` block would drop the first one's settings)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping node as a dict: its own keys each once (a merge key `<<: *anchor` brings keys an own key may
        override, as YAML means, and is resolved by the safe loader); a key must be a scalar (`? [a]` was a raw
        TypeError). in: the node; out: the dict; raises ConfigError naming the line."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == YAML_MERGE_TAG:  # constructed by flatten_mapping (the parent's), not as a key
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: a key must be a name, got a "
                                  f"{type(key).__name__}")
            if key in seen:
                raise ConfigError(f"key '{key}' appears twice in one mapping (lines {seen[key] + 1} and "
                                  f"{key_node.start_mark.line + 1}): merge the two into one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def shipped_hint(missing: Path, shipped: Path | None = None) -> str:
    """The end of a missing config file's error: where the shipped configs are, naming the one of the same name when
    it exists ('; the shipped configs are in DIR: DIR/demo.yaml'), or nothing when this install has none. in: the path
    not found, the shipped folder (None: SHIPPED_CONFIGS); out: the text."""
    shipped = SHIPPED_CONFIGS if shipped is None else shipped
    if not shipped.is_dir():
        return ""
    same = shipped / missing.name
    return f"; the shipped configs are in {shipped}" + (f": {same}" if same.is_file() else "")


MAX_LISTED_CONFIGS = 8  # a config path that is a folder: the YAML files in it the error lists at most
# a config path with one of these suffixes that is no YAML is a data set given where the config goes (saerl.data reads
# them)
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq")  # saerl.data.SUFFIX_FORMATS


# byte-order marks of encodings other than UTF-8 (Notepad's "Unicode" is UTF-16LE), by the name iconv reads the mark
# with (and drops it): a config file (:func:`read_utf8`) or a data file (saerl.data) starting with one is refused with
# that fix, not read as garbage; a config file with none that is no UTF-8 is taken for LEGACY_CONFIG_ENCODING (a
# Windows editor's default)
OTHER_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
               b"\xfe\xff": "UTF-16"}
LEGACY_CONFIG_ENCODING = "cp1252"


def read_utf8(path: Path) -> str:
    """A config file's text, read as UTF-8; one that is not UTF-8 (saved in cp1252 or UTF-16: the bare "'utf-8'
    codec can't decode byte 0xe9" named no file) is refused with a ConfigError naming the file, the encoding it
    looks like (a byte-order mark's, else cp1252) and the iconv line that converts it. in: the file; out: its text."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        name = next((enc for bom, enc in OTHER_BOMS.items() if data.startswith(bom)), LEGACY_CONFIG_ENCODING)
        fixed = path.with_name(f"{path.stem}.utf8{path.suffix}")
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start}: {err.reason}); it looks "
                          f"{name}-encoded. Fix: save it as UTF-8, e.g. iconv -f {name} -t utf-8 {path} > {fixed}, "
                          "and name that file") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a YAML config (None = all defaults), apply dotted overrides (a list of 'key=value' strings), validate."""
    from saerl.overrides import apply_overrides, require_override_list

    require_override_list(overrides)
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        p = Path(path)
        if not p.exists():
            looks = (": it looks like an override (KEY=VALUE); the config file comes first, the overrides after it"
                     if "=" in p.name else "")
            raise ConfigError(f"config file {p} does not exist (read relative to the current folder {Path.cwd()}"
                              f"{shipped_hint(p)}){looks}")
        if p.is_dir():  # was "[Errno 21] Is a directory"
            inside = sorted(q.name for q in p.glob("*.y*ml"))[:MAX_LISTED_CONFIGS]
            raise ConfigError(f"config file {p} is a folder: name a YAML file" +
                              (f" in it, e.g. {p / inside[0]} (it holds {', '.join(inside)})" if inside else ""))
        text = read_utf8(p)
        try:
            loaded = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        except ConfigError as err:
            raise ConfigError(f"{p}: {err}") from None
        except yaml.YAMLError as err:  # its "<unicode string>" is this file
            data = (f"; {p.name} looks like a data file: a config names it as data.path (data.source=file), and "
                    "`saerl ingest FILE` checks it" if p.suffix.lower() in DATA_SUFFIXES else "")
            raise ConfigError(f"{p} is not valid YAML: {str(err).replace('<unicode string>', str(p))}{data}") from None
        if loaded is None:  # nothing but blanks and comments: a run of every default, likely not what was meant
            log.warning("config file %s is empty: every setting is its default (data.source=%s, model.name_or_path=%s); "
                        "check that it is the file you meant", p, DataConfig().source, ModelConfig().name_or_path)
        raw = {} if loaded is None else loaded
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(raw).__name__}")
        where = str(p)
        raw = without_empty_sections(raw)  # `eval:` with nothing under it: the section's defaults
        if "name" not in raw:
            raw["name"] = p.stem
    if overrides:
        raw = apply_overrides(raw, overrides)
        where += f" + overrides {' '.join(overrides)}"
    return build_config(raw, where)


# the model fields that make a run execute code it did not ship with: a hub repo's own modelling code, hub kernels,
# and a Python package named by `pkg:<module>` (imported when it has no model/ folder)
CODE_FIELDS: tuple[str, ...] = ("model.trust_remote_code", "model.hub_kernels", "model.name_or_path", "extract.model")
PKG_MODEL = "pkg:"  # the prefix of a model a Python package ships (saerl.activations.resolve_model_path)


def runs_outside_code(field: str, value: Any) -> bool:
    """Does `value` of config field `field` make a run execute code from outside saerl (CODE_FIELDS)? in: a dotted
    field and its validated value (a flattened config's); out: the verdict (False for any other field)."""
    if field in ("model.trust_remote_code", "model.hub_kernels"):
        return value is True
    if field in ("model.name_or_path", "extract.model"):
        return isinstance(value, str) and value.startswith(PKG_MODEL)
    return False


# the fields naming a server a run connects to (or a store it writes to) in place of its own: a Dask scheduler (the
# client trades pickled task results with it and its workers, so code runs both ways) and an MLflow tracking store
# (sent the run's config and metrics). None: the run's own, a LocalCluster and the SQLite store under the root
ADDRESS_FIELDS: tuple[str, ...] = ("runtime.dask_address", "tracking.uri")


def names_other_server(field: str, value: Any) -> bool:
    """Does `value` of config field `field` point a run at a server or store other than its own (ADDRESS_FIELDS)?
    in: a dotted field and its validated value (a flattened config's); out: the verdict (False for None, the run's
    own, and for any other field)."""
    return field in ADDRESS_FIELDS and value is not None


def flatten(cfg: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Config as {dotted leaf path: JSON-able value}, following the schema (a dict-valued field is one leaf).

    This is the form logged as MLflow params and hashed for stage keys; its keys equal `field_paths()`.
    """
    flat: dict[str, Any] = {}
    dumped = cfg.model_dump(mode="json")
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = dumped[name]
    return flat


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a dotted config path equals, or lies under, one of the dotted `prefixes` ('curriculum.seed' is
    under 'curriculum'; 'curriculum_x' is not)."""
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def config_slice(cfg: PipelineConfig, reads: tuple[str, ...]) -> dict[str, Any]:
    """The fields a stage reads: every flat path equal to, or under, one of the `reads` prefixes."""
    return {k: v for k, v in sorted(flatten(cfg).items()) if under(k, reads)}


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex sha256 of canonical JSON (sorted keys), truncated; identical for equal values across runs."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
