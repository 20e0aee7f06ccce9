"""One pydantic schema for the whole pipeline, YAML loading, dotted CLI overrides, and config slices.

Every section forbids unknown keys. Errors name the dotted key path, suggest the closest valid key for
typos, and for wrong types name the field, the value given and the type expected.

Which fields each stage reads is declared in :mod:`saerl.stages`; :func:`config_slice` and
:func:`slice_hash` turn such a declaration into the part of a stage's cache key that comes from config.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    max_prompt_chars: int = Field(4000, gt=0, description="longer prompts are rejected as over-long")
    max_rows: int | None = Field(None, gt=0, description="read at most this many rows (after reading, before checks)")
    verify_timeout_s: float = Field(5.0, gt=0, description="wall-clock bound per answer parse")


class TestbedConfig(Section):
    """The synthetic math world and its tiny policy LM (testbed stage)."""

    seed: int = Field(0, description="one seed for the whole world")
    n_pool: int = Field(2000, gt=0, description="prompts in the RL training pool")
    n_eval: int = Field(500, gt=0, description="prompts per held-out evaluation set")
    defect_share: float = Field(0.15, ge=0, le=1, description="share of pool prompts with a quality defect")


class ModelConfig(Section):
    """The policy model (also the model whose internals are read unless extract.model is set)."""

    name_or_path: str = Field("testbed", description="hub id, local folder, or 'testbed' for the project's tiny LM")
    revision: str | None = Field(None, description="hub revision (commit) to pin")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = float32 on CPU, the checkpoint's dtype on GPU"
    )
    trust_remote_code: bool = Field(False, description="run a model repo's own code; off unless you ask")


class ExtractConfig(Section):
    """Residual-stream extraction (extract stage)."""

    model: str | None = Field(None, description="read internals of this model instead of the policy")
    layer: int | None = Field(None, description="layer index, negative allowed; None = n_layers // 2")
    pooling: list[Literal["mean", "last", "max"]] = Field(["mean", "last", "max"], description="pooled vectors kept")
    chat_template: bool = Field(True, description="apply the tokenizer's chat template as in RL")
    token_budget: int = Field(16384, gt=0, description="padded tokens per forward batch")
    max_length: int = Field(512, gt=0, description="truncate prompts to this many tokens")
    chunk_rows: int = Field(512, gt=0, description="prompts per Zarr chunk (the resume unit)")
    store_tokens: bool = Field(True, description="keep token-level residuals, not only pooled vectors")


class SAEConfig(Section):
    """The sparse autoencoder (sae stage) and how prompts are encoded with it (encode stage)."""

    source: Literal["train", "pretrained", "local"] = Field("train", description="where the SAE comes from")
    release: str | None = Field(None, description="sae-lens release (source=pretrained)")
    sae_id: str | None = Field(None, description="sae-lens SAE id within the release (source=pretrained)")
    path: str | None = Field(None, description="local sae-lens folder (source=local)")
    architecture: Literal["topk", "standard"] = Field("topk", description="architecture when training")
    expansion: int = Field(8, gt=0, description="width = expansion * d_in when training")
    k: int = Field(32, gt=0, description="active features per token (TopK)")
    lr: float = Field(4e-4, gt=0, description="training learning rate")
    train_tokens: int = Field(200_000, gt=0, description="token sample size for training")
    batch_size: int = Field(512, gt=0, description="training batch in tokens")
    heldout_frac: float = Field(0.1, gt=0, lt=1, description="share of sampled tokens held out for the report")
    seed: int = Field(0, description="token sampling and init seed")
    encode_pool: Literal["max", "mean"] = Field("max", description="pool token codes per prompt")
    encode_top_k: int = Field(64, gt=0, description="pooled features kept per prompt")


class ScoreConfig(Section):
    """Property models on SAE features: clusters, difficulty, quality (label and score stages)."""

    n_clusters: int | Literal["auto"] = Field("auto", description="k for k-means, or auto (silhouette over k_range)")
    k_range: tuple[int, int] = Field((4, 16), description="k searched when n_clusters is auto")
    tfidf: bool = Field(True, description="TF-IDF-weight pooled codes before clustering")
    difficulty_source: Literal["auto", "column", "measured"] = Field(
        "auto", description="auto: the dataset's difficulty column if mapped, else measured pass rate"
    )
    label_fraction: float = Field(0.2, gt=0, le=1, description="share of prompts in the labelled subset")
    label_rollouts: int = Field(8, gt=0, description="rollouts per prompt when measuring pass rate")
    quality_threshold: float = Field(0.5, ge=0, le=1, description="prompts with quality_hat below are filtered")
    seed: int = Field(0, description="split and k-means seed")


class CurriculumConfig(Section):
    """Batch order from scores (curriculum stage)."""

    batch_size: int = Field(16, gt=0, description="prompts per RL batch")
    mix_ratio: float = Field(0.2, ge=0, le=1, description="share of each batch from other clusters")
    ordering: Literal["easy_to_hard", "hard_to_easy", "random"] = Field("easy_to_hard", description="within a cluster")
    rotation: Literal["round_robin", "size_weighted"] = Field("round_robin", description="cluster rotation policy")
    epochs: int = Field(1, gt=0, description="passes over the kept prompts")
    filter_quality: bool = Field(True, description="drop prompts under score.quality_threshold")
    seed: int = Field(0, description="tie-breaking and mixing seed")


class TrainConfig(Section):
    """RL training through trl (train stage)."""

    algorithm: Literal["grpo", "dapo"] = Field("grpo", description="grpo, or dapo (clip-higher, token loss, dynamic sampling)")
    arms: list[str] = Field(["saerl", "vanilla"], description="arms trained on the same budget")
    seeds: list[int] = Field([0], description="one run per arm per seed")
    max_steps: int = Field(100, gt=0, description="optimizer steps per arm")
    learning_rate: float = Field(3e-5, gt=0, description="AdamW learning rate (constant)")
    num_generations: int = Field(8, ge=2, description="rollouts per prompt (group size)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature for rollouts")
    top_k: int = Field(0, ge=0, description="top-k sampling; 0 = off")
    max_completion_length: int = Field(64, gt=0, description="tokens per rollout")
    beta: float = Field(0.0, ge=0, description="KL coefficient")
    epsilon: float = Field(0.2, gt=0, description="PPO clip (low)")
    epsilon_high: float | None = Field(None, description="PPO clip (high); DAPO uses 0.28")
    format_reward: float = Field(0.0, ge=0, description="weight of the answer-format reward")
    eval_every: int = Field(25, gt=0, description="evaluate every N steps")


class EvalConfig(Section):
    """Held-out evaluation (evaluate stage)."""

    k_samples: int = Field(4, gt=0, description="samples per problem for mean accuracy")
    temperature: float = Field(1.0, gt=0, description="sampling temperature for mean@k")
    target_accuracy: float | None = Field(None, description="steps-to-target target; None = vanilla's final accuracy")
    max_problems: int | None = Field(None, gt=0, description="cap per held-out set")


class TrackingConfig(Section):
    """MLflow tracking. Does not change any result, so no stage's key reads it."""

    enabled: bool = Field(True, description="log runs to MLflow")
    uri: str | None = Field(None, description="tracking URI; None = SQLite under the artifact root")
    experiment: str | None = Field(None, description="experiment name; None = the config's name")
    http_retries: int = Field(2, ge=0, description="retries of a tracking-server request before giving up")
    http_timeout_s: int = Field(10, gt=0, description="timeout of one tracking-server request")


class RuntimeConfig(Section):
    """Where and how things run. Does not change any result, so no stage's key reads it."""

    artifact_root: str = Field(".saerl", description="root folder for every artifact")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="torch device")
    task_runner: Literal["local", "dask"] = Field("local", description="local threads, or Dask via prefect-dask")
    dask_address: str | None = Field(None, description="scheduler address of an existing Dask cluster")
    dask_workers: int = Field(2, gt=0, description="LocalCluster workers when no address is given")
    prefect_api_url: str | None = Field(None, description="use this Prefect server instead of starting one")
    progress: bool = Field(True, description="show progress bars")


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
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)


class ConfigError(ValueError):
    """A config problem, phrased for the user: key path, value, what was expected, and a fix."""


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


def _suggest(path: str) -> str:
    """' (did you mean 'x.y'?)' for the valid key closest to `path`, or ''."""
    valid = field_paths() + [p.split(".")[0] for p in field_paths()]
    last = path.split(".")[-1]
    close = difflib.get_close_matches(path, valid, n=1, cutoff=0.6)
    if not close:
        same_leaf = [p for p in field_paths() if difflib.get_close_matches(last, [p.split(".")[-1]], cutoff=0.75)]
        close = same_leaf[:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _format_errors(err: ValidationError, where: str) -> str:
    """Turn pydantic errors into one line per problem naming key path, value and expectation."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{path}'{_suggest(path)}")
        else:
            value = e.get("input")
            lines.append(f"field '{path}': got {value!r} ({type(value).__name__}); {e['msg']}")
    return f"invalid config ({where}):\n  " + "\n  ".join(lines)


def parse_override(text: str) -> tuple[str, Any]:
    """Split 'a.b=value' into ('a.b', value) with the value parsed as YAML (numbers, lists, null...)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.path=value (e.g. curriculum.mix_ratio=0.2)")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of a raw config dict with dotted overrides set; unknown paths are errors."""
    out = json.loads(json.dumps(raw))
    valid = set(field_paths())
    sections = {p.split(".")[0] for p in valid}
    for text in overrides:
        key, value = parse_override(text)
        if key not in valid and not (key in sections and isinstance(value, dict)):
            raise ConfigError(f"unknown key '{key}' in override '{text}'{_suggest(key)}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        node[parts[-1]] = value
    return out


def build_config(raw: dict[str, Any], where: str = "config") -> PipelineConfig:
    """Validate a raw dict into a PipelineConfig, raising ConfigError with readable messages."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, where)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a YAML config (None = all defaults), apply dotted overrides, validate."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist (the shipped ones are in configs/)")
        raw = yaml.safe_load(p.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(raw).__name__}")
        where = str(p)
        if "name" not in raw:
            raw["name"] = p.stem
    if overrides:
        raw = apply_overrides(raw, overrides)
        where += " + overrides"
    return build_config(raw, where)


def flatten(cfg: PipelineConfig) -> dict[str, Any]:
    """Config as {dotted path: JSON-able value}, the form logged as MLflow params and hashed for keys."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(cfg.model_dump(mode="json"), "")
    return flat


def config_slice(cfg: PipelineConfig, reads: tuple[str, ...]) -> dict[str, Any]:
    """The fields a stage reads: every flat path equal to, or under, one of the `reads` prefixes."""
    flat = flatten(cfg)
    return {k: v for k, v in sorted(flat.items()) if any(k == r or k.startswith(r + ".") for r in reads)}


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex sha256 of canonical JSON (sorted keys), truncated; identical for equal values across runs."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def slice_hash(cfg: PipelineConfig, reads: tuple[str, ...]) -> str:
    """Stable hash of exactly the config fields a stage reads."""
    return stable_hash(config_slice(cfg, reads))
