"""Stage planning and stage runners: the library side of the pipeline (no Prefect here).

`plan(cfg, until)` lists the stages a config runs, in order, with the upstream stages each one reads.
`input_keys` and `stage_key` turn that into cache keys; `run_stage` builds (or reuses) one stage's artifact
in an :class:`ArtifactStore` by calling that stage's ``compute_*`` function. Prefect tasks in `tasks/`
wrap `run_stage` one stage each; `flows/` composes them. What is checked before a run starts is
:mod:`saerl.preflight`'s (`check_runnable`).
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saerl import runners
from saerl.artifacts import (
    MANIFEST,
    ArtifactRef,
    ArtifactStore,
    Build,
    ChunkLog,
    CorruptArtifact,
    chunk_records,
    folder_problems,
    remembered_sha256,
    reused_chunks,
    write_file_atomic,
)
from saerl.config import PKG_MODEL, PipelineConfig, device_type, held_out_file
from saerl.runs import stage_of
from saerl.stages import (
    DATA_LABELS,
    STAGES,
    code_version,
    local_folder,
    rows_version,
    stage_key,
    stage_slice,
)

log = logging.getLogger("saerl.pipeline")
HUB_NO_BARS = "HF_HUB_DISABLE_PROGRESS_BARS"  # read by huggingface_hub (and so transformers) at import: Dask workers
DASK_LOGGER = "distributed"  # parent of the scheduler's, nannies' and workers' loggers (INFO by default)

ORDER = ("testbed", "ingest", "extract", "sae", "encode", "label", "score", "properties", "curriculum", "train",
         "heldout", "evaluate")


@dataclass
class StageResult:
    """What running one stage gave: a reference to its artifact and whether it was computed now."""

    ref: ArtifactRef
    computed: bool
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    waited: float = 0.0  # seconds spent waiting for another process that was building the same artifact
    resumed: str = ""  # what a build that resumed an interrupted one reused, leading the reason (saerl.runs.explain):
    # its runner's note (a training run's checkpoint step), else its chunk counts; '' for a build from scratch, or reused

    def to_json(self) -> dict[str, Any]:
        """Small JSON-able form (what Prefect persists as the task result)."""
        return {"stage": self.ref.stage, "key": self.ref.key, "path": self.ref.path, "computed": self.computed,
                "seconds": self.seconds, "metrics": self.metrics, "waited": self.waited,
                "resumed": self.resumed}


def data_file(cfg: PipelineConfig) -> Path | None:
    """The user data file an ingest reads directly (None when it reads the testbed's artifact)."""
    if cfg.data.source == "sample":
        from saerl.data import sample_path

        return sample_path()
    if cfg.data.source == "file":
        if not cfg.data.path:
            raise ValueError("data.source is 'file' but data.path is empty: set data.path=/path/to/file.jsonl")
        return Path(cfg.data.path).expanduser()
    return None


def needs_testbed(cfg: PipelineConfig, stage: str) -> bool:
    """Whether `stage` reads the testbed artifact: its world as data (ingest; train and heldout, whose held-out
    set is the world's eval split) or its LM as the model (extract when it reads the policy's internals;
    label, train and heldout, which run the policy)."""
    policy = cfg.model.name_or_path == "testbed"
    world = cfg.data.source == "testbed"
    return {
        "ingest": world,
        "extract": cfg.extract.model is None and policy,
        "label": policy,
        "train": policy or world,
        "heldout": policy or world,
    }.get(stage, False)


def available_stages() -> tuple[str, ...]:
    """Stages whose runners exist in this version of the library."""
    return tuple(s for s in ORDER if s in RUNNERS)


def no_label_stage(cfg: PipelineConfig) -> str:
    """Why `--until label` names a stage `cfg` does not run: difficulty comes from the data's column, and how to
    measure it instead. in: config; out: the error text."""
    return (f"--until label: this config runs no label stage, as difficulty is read from the data's column "
            f"(data.difficulty={cfg.data.difficulty!r}, score.difficulty_source={cfg.score.difficulty_source!r}); "
            "set score.difficulty_source=measured to measure pass rates, or stop at another stage, e.g. --until encode")


def plan(cfg: PipelineConfig, until: str | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """Stages to run for `cfg` up to and including `until`, each with the upstream stages it reads, in the order
    they run. The testbed runs when a planned stage reads it, or when it is `until` itself and a stage of the whole
    pipeline reads it (`--until testbed` builds the world and LM the later stages will read); ingest runs first
    when it reads a file, not the testbed's world, so a bad data file or column mapping fails in seconds, not
    after the testbed LM pretrains for minutes."""
    from saerl.labels import needs_measured_labels

    stages = [s for s in available_stages() if s != "label" or needs_measured_labels(cfg)]
    readers = stages
    if until is not None:
        if until not in ORDER:
            close = difflib.get_close_matches(until, ORDER, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"unknown stage '{until}' to run until (--until / until); {hint}stages are: {', '.join(ORDER)}")
        if until == "label" and until in available_stages() and until not in stages:
            raise ValueError(no_label_stage(cfg))
        if until not in stages:
            raise ValueError(f"stage '{until}' is not available in this version; available: {', '.join(stages)}")
        stages = stages[: stages.index(until) + 1]
    if not any(needs_testbed(cfg, s) for s in (readers if until == "testbed" else stages)):
        stages.remove("testbed")
    elif "ingest" in stages and not needs_testbed(cfg, "ingest"):  # a user's file: checked before the LM pretrains
        stages.remove("ingest")
        stages.insert(0, "ingest")

    def reads(stage: str, upstream: str) -> bool:
        return upstream in stages and (upstream != "testbed" or needs_testbed(cfg, stage))

    return [(s, tuple(i for i in STAGES[s].inputs if reads(s, i))) for s in stages]


# the stages that read the held-out sets (the learning curve while training, each policy's evaluation): their keys
# hash the files, with the version of ingest's kept rows (held_out_set_key; evaluate reads the sets' prompts from the heldout artifacts: saerl.runners.HELDOUT_SETS)
HELD_OUT_READERS: tuple[str, ...] = ("train", "heldout")


def hash_path(path: Path, field: str = "data.path") -> str:
    """Content hash of a data file or folder (every file, sorted), so edited data reruns ingest; `field` is the
    config field that names it (said when it is missing)."""
    from saerl.config import stable_hash

    if path.is_dir():
        return stable_hash({p.relative_to(path).as_posix(): remembered_sha256(p)
                            for p in sorted(path.rglob("*")) if p.is_file()})
    if not path.exists():
        raise FileNotFoundError(missing_file(f"data file {path}", path, field))
    return remembered_sha256(path)[:16]


def held_out_set_key(path: Path, field: str) -> str:
    """What a HELD_OUT_READERS stage keys an eval.sets file on: its content hash (:func:`hash_path`) and the version
    of ingest's kept rows (saerl.stages.rows_version), since the set is read through saerl.data.ingest and its kept
    rows, in their order (id order since ingest 16), are the problems evaluated and the order they are generated in.
    in: the file, the config field naming it; out: the key."""
    from saerl.config import stable_hash

    return stable_hash({"file": hash_path(path, field), "rows": rows_version()}, length=16)


def missing_file(what: str, path: Path, field: str) -> str:
    """The error text for a file a config field names that does not exist; a relative path says the folder it was
    read from (the current one, not the config file's). in: what it is ('data file x.jsonl'), its path, the field;
    out: the message."""
    where = "" if path.expanduser().is_absolute() else f", read relative to the current folder {Path.cwd()}"
    return f"{what} does not exist (check {field}{where})"


def folder_stamp(name: str | None, field: str | None = None) -> str | None:
    """A fingerprint of a local model or SAE folder's content (each file's path inside it, size and sha256, read
    once per process while the file stays as it was: :func:`remembered_sha256`; about a second per GB), or None
    for a hub id, the testbed LM or an unset field. A 'pkg:<module>' model is stamped by the folder it resolves to.
    Weights rewritten in place change it; the same weights copied, moved, reinstalled or synced to another machine
    keep it (their path enters no key: saerl.stages.folder_form). `field`: the config field naming it, for the
    error of a 'pkg:' package that is not installed (saerl.activations.resolve_model_path)."""
    from saerl.config import stable_hash

    if name and name.startswith(PKG_MODEL):  # a model a Python package ships: its folder, which an upgrade rewrites
        from saerl.activations import resolve_model_path

        name = resolve_model_path(name, field)
    if (path := local_folder(name)) is None:
        return None
    return stable_hash({p.relative_to(path).as_posix(): [p.stat().st_size, remembered_sha256(p)]
                        for p in sorted(path.rglob("*")) if p.is_file() and not _hidden(p.relative_to(path))})


def _hidden(rel: Path) -> bool:
    """Is a path inside a model folder hidden (a part starting with '.': a hub download's .cache metadata, with its
    own timestamps, a .git folder)? Those are no weights and enter no stamp. in: the path inside; out: bool."""
    return any(part.startswith(".") for part in rel.parts)


def local_models(cfg: PipelineConfig, stage: str) -> dict[str, tuple[str, str | None]]:
    """The local folders whose weights `stage` loads, by input name, each with the config field naming it: the
    internals model (extract: extract.model, else model.name_or_path), the SAE (sae, when sae.source is local:
    sae.path), the policy (label, train, heldout: model.name_or_path). out: {input name: (field, value)}."""
    if stage == "extract":
        return {"model_folder": ("extract.model", cfg.extract.model) if cfg.extract.model else
                ("model.name_or_path", cfg.model.name_or_path)}
    if stage == "sae" and cfg.sae.source == "local":
        return {"sae_folder": ("sae.path", cfg.sae.path)}
    if stage in ("label", "train", "heldout"):
        return {"model_folder": ("model.name_or_path", cfg.model.name_or_path)}
    return {}


# the stages that read ingest's rows and none of its label columns but these (extract: ids and prompts; label: ids,
# prompts, answers and the labelled flag, saerl.labels.labelled_subset; score: ids and prompts, the difficulty and
# quality labels and the labelled flag, saerl.scoring.align_inputs, quality_labels: its fits read no topic, and only
# the properties stage's report reads the defect kinds; properties: ids, prompts and every label, the cluster-vs-topic
# report and out-of-distribution folds (topic), the report's difficulty and quality models (difficulty, quality,
# labelled) and its AUROC per defect kind (defect), saerl.scoring.property_report, saerl.runners.write_score_plots;
# train: ids, prompts and answers, its held-out curve reads no label either, saerl.stages.unread_fields; evaluate: the
# prompts alone, for the held-out overlap note, saerl.runners.held_out_overlap): they key on ingest's rows
# (:func:`rows_key`, input "ingest_rows"), so mapping another label column reruns neither extraction, labelling nor
# the vanilla arm's training, another topic or defect column no scoring, curriculum nor training, and a data file
# changed in nothing they read (another row order, an unmapped column) no property report nor evaluation. No stage
# reads ingest's rejected.parquet nor its summary
ROWS_VERSION = "rows_version"  # an ingest manifest's field: the version its kept rows were written by (rows_version)
ROWS_READERS: dict[str, tuple[str, ...]] = {"extract": (), "label": ("data.labelled",),
                                            "score": ("data.difficulty", "data.quality", "data.labelled"),
                                            "properties": ("data.topic", "data.difficulty", "data.quality",
                                                           "data.labelled", "data.defect"),
                                            "train": (), "evaluate": ()}
# the columns of ingest's prompts.parquet each ROWS_READERS stage reads besides its label columns (those of its
# ROWS_READERS fields, :func:`rows_columns`): extract ids and prompts (saerl.runners.compute_extract); label ids,
# prompts and gold answers (saerl.labels.pass_rates); score and properties ids and prompts, never an answer
# (saerl.scoring.align_inputs); train ids, prompts and answers (saerl.rl.train_grpo, the order it reads:
# saerl.stream.training_order); evaluate the prompts alone (saerl.runners.held_out_overlap). None reads answer_raw
# nor row (the line in the file)
ROWS_COLUMNS: dict[str, tuple[str, ...]] = {"extract": ("id", "prompt"), "label": ("id", "prompt", "answer"),
                                            "score": ("id", "prompt"), "properties": ("id", "prompt"),
                                            "train": ("id", "prompt", "answer"), "evaluate": ("prompt",)}
ROWS_CONTENT = "rows_content"  # an ingest manifest's field: {ROWS_READERS stage: rows_digest of the columns it reads},
# noted by the ingest runner (saerl.runners.compute_ingest) from the prompts.parquet it wrote
ROWS_HASH_BATCH = 4096  # rows hashed per JSON line by rows_digest (part of the digest: changing it changes every key)


def rows_columns(stage: str) -> tuple[str, ...]:
    """The columns of ingest's prompts.parquet a ROWS_READERS `stage` reads: ROWS_COLUMNS and its label fields'
    columns (data.labelled -> labelled). in: the stage; out: column names, in a fixed order."""
    return ROWS_COLUMNS[stage] + tuple(f.removeprefix("data.") for f in ROWS_READERS[stage])


def rows_digest(prompts: Any, columns: tuple[str, ...]) -> str:
    """sha256 of the values of `columns` of an ingested prompts table, row by row in its order, as canonical JSON
    (Python's own encoding, the same in every process: no Polars hash, which is seeded per process); a column the
    table lacks (an unmapped label) is named as absent. in: a polars DataFrame, the columns; out: hex digest."""
    import hashlib

    present = [c for c in columns if c in prompts.columns]
    digest = hashlib.sha256(json.dumps({"columns": present, "absent": [c for c in columns if c not in present],
                                        "rows": prompts.height}).encode())
    table = prompts.select(present)
    for lo in range(0, table.height, ROWS_HASH_BATCH):
        rows = table.slice(lo, ROWS_HASH_BATCH).rows()
        digest.update(json.dumps(rows, separators=(",", ":"), default=str).encode() + b"\n")
    return digest.hexdigest()


def rows_content(ingest_folder: Path) -> dict[str, str]:
    """What each ROWS_READERS stage reads of a (partial or built) ingest artifact: {stage: rows_digest of its
    rows_columns}, recorded in the ingest manifest (ROWS_CONTENT) when ingest builds. in: the artifact's folder;
    out: the digests."""
    import polars as pl

    prompts = pl.read_parquet(Path(ingest_folder) / runners.PROMPTS, glob=False)
    return {stage: rows_digest(prompts, rows_columns(stage)) for stage in ROWS_READERS}


def content_rows_key(stage: str, rows_version_: str, digest: str) -> str:
    """The key of the rows a ROWS_READERS `stage` read from a built ingest artifact whose manifest records their
    content (ROWS_CONTENT): the rows version and the digest of exactly the columns it reads, so a data file that
    changed in nothing the stage reads (a renamed or added column it does not read, rows past data.max_rows, an
    answer for extract and score) keeps the key. in: the stage, the rows version, its digest; out: the key."""
    from saerl.config import stable_hash

    return stable_hash({"stage": "ingest", "rows_for": stage, "version": rows_version_, "content": digest}, length=20)


def rows_key(stage: str, ingest_version: str, ingest_inputs: dict[str, str], ingest_slice: dict[str, Any]) -> str:
    """The key of the part of an ingest artifact a ROWS_READERS `stage` reads: the ingest key's ingredients (its
    code version, input keys and config slice) less the label fields `stage` does not read. in: the stage, and
    ingest's code version, input keys and config slice (from a config, or from an ingest artifact's manifest);
    out: the key."""
    from saerl.config import stable_hash

    unread = [f for f in DATA_LABELS if f not in ROWS_READERS[stage]]
    return stable_hash({"stage": "ingest", "rows_for": stage, "version": ingest_version,
                        "inputs": dict(sorted(ingest_inputs.items())),
                        "config": {k: v for k, v in ingest_slice.items() if k not in unread}}, length=20)


def manifest_rows_key(stage: str, ingest: ArtifactRef) -> str:
    """The key of the rows a ROWS_READERS `stage` reads from a built ingest artifact, from its manifest: the content
    of the columns it reads (:func:`content_rows_key`) where the manifest records it (ROWS_CONTENT), else, for an
    artifact built before that field, :func:`rows_key` of its ingredients (code version, inputs, config slice), so
    what was built on it keeps its key. in: the stage, the ingest artifact's ref; out: the key."""
    m = ingest.manifest()  # ROWS_VERSION: an artifact built before the field was written by its own code version
    version = m.get(ROWS_VERSION, m["code_version"])
    if stage in (content := m.get(ROWS_CONTENT) or {}):
        return content_rows_key(stage, version, content[stage])
    return rows_key(stage, version, m.get("inputs", {}), m.get("config", {}))


def ingest_rows_key(cfg: PipelineConfig, stage: str, ingest: ArtifactRef) -> str:
    """The key of the rows of the ingest artifact a ROWS_READERS `stage` reads: from its manifest once it is built
    (:func:`manifest_rows_key`: the content of the columns it reads, so the key names the rows read, even if the
    data file changed since), also for a ref planned without a path (saerl.sweep.planned_keys) whose key is stored
    under cfg's artifact root, so a plan and a run agree; else, when the run is planned before ingest ran, from the
    config (:func:`rows_key`: ingest's inputs, the testbed world's key or the data file's hash). A run computes its
    keys once ingest is built (flows.pipeline submits a stage after its inputs finished), so it never plans one
    form and builds from the other (saerl.pipeline.planned_elsewhere). in: config, the stage, the ingest artifact's
    ref; out: the key."""
    if ingest.path and ingest.file(MANIFEST).is_file():
        return manifest_rows_key(stage, ingest)
    stored = ArtifactRef("ingest", ingest.key, str(Path(cfg.runtime.artifact_root).expanduser() / "ingest" / ingest.key))
    if ingest.key and stored.file(MANIFEST).is_file() and ROWS_CONTENT in stored.manifest():  # a plan: built already
        return manifest_rows_key(stage, stored)  # (ArtifactStore.path's layout: a plan makes no root)
    upstream = {}
    if needs_testbed(cfg, "ingest"):
        key = stage_key(cfg, "testbed", input_keys(cfg, "testbed", {}))
        upstream["testbed"] = ArtifactRef("testbed", key, "")
    return rows_key(stage, rows_version(), input_keys(cfg, "ingest", upstream), stage_slice(cfg, "ingest"))


# the stages whose numbers depend on the device they run on (runtime.device is otherwise result-neutral): float32 on
# a CPU, model.dtype / bf16 autocast on a GPU, so a GPU run must not reuse a CPU run's artifacts, nor the reverse
DEVICE_DEPENDENT: tuple[str, ...] = ("extract", "label", "train", "heldout")


# the stages that load a model (the policy LM or the SAE) onto runtime.device
MODEL_STAGES: tuple[str, ...] = ("extract", "sae", "encode", "label", "train", "heldout")


def check_ingested(cfg: PipelineConfig, ingest: ArtifactRef, until: str | None = None) -> None:
    """Refuse, right after ingest, a run whose score stage would find no difficulty label: difficulty read from the
    data's column (no label stage planned) where no ingested row has a valid value ('easy' / 'hard' are no numbers):
    the run went on through extraction, the SAE and encoding, then failed at score. Raises the ValueError the score
    stage would (saerl.scoring.resolve_difficulty), naming data.difficulty and the fix. in: config, the ingest
    artifact, --until; out: None when the run can score, or does not."""
    import polars as pl

    from saerl.runners import PROMPTS
    from saerl.scoring import resolve_difficulty

    planned = {stage for stage, _ in plan(cfg, until)}
    if "score" not in planned or "label" in planned:
        return
    prompts = pl.read_parquet(ingest.file(PROMPTS), columns=["difficulty"] if cfg.data.difficulty else [], glob=False)
    resolve_difficulty(prompts, None, cfg.score.difficulty_source)


def release_memory() -> None:
    """Free what a finished stage run's models held, now: a trained policy, its trainer and (DAPO) its optimizer
    state are kept by reference cycles (accelerate and trl bind methods to the model), so they waited for Python's
    next full collection, which came after the next run had loaded its own policy (on a GPU, 6 GB a 1.5B GRPO run,
    18 GB with AdamW's moments); and the CUDA caching allocator's blocks go back to the device, where a colocated
    vLLM engine can see them. in/out: nothing."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")  # nothing to return when no stage of this process imported it
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def input_keys(cfg: PipelineConfig, stage: str, upstream: dict[str, ArtifactRef],
               variant: dict[str, Any] | None = None) -> dict[str, str]:
    """Keys of everything `stage` reads besides config: upstream artifacts (ingest's rows only for ROWS_READERS:
    "ingest_rows", :func:`ingest_rows_key`; an ablation arm's part of the curriculum: "arm_order",
    :func:`arm_order_key`), the data file for ingest, the
    held-out set files for HELD_OUT_READERS, local model / SAE folders (their stamp), the device type
    runtime.device resolves to here for DEVICE_DEPENDENT stages ('cpu', 'cuda'), and the run's variant (arm,
    seed) for train and heldout."""
    keys = {name: ref.key for name, ref in upstream.items()}
    if stage in ROWS_READERS and "ingest" in upstream:
        del keys["ingest"]
        keys["ingest_rows"] = ingest_rows_key(cfg, stage, upstream["ingest"])
    arm = (variant or {}).get("arm")
    if stage == "train" and arm in ARM_ORDER_UNREAD and {"score", "curriculum"} <= set(upstream):
        del keys["curriculum"]
        keys["arm_order"] = arm_order_key(cfg, arm, keys.pop("score"))
    if stage in DEVICE_DEPENDENT:
        keys["device"] = device_type(cfg.runtime.device)
    for name, (named_by, folder) in local_models(cfg, stage).items():
        if (stamp := folder_stamp(folder, named_by)) is not None:
            keys[name] = stamp
    if stage == "ingest" and (f := data_file(cfg)) is not None:
        keys["file"] = hash_path(f)
    if stage in HELD_OUT_READERS:
        for name, entry in sorted(cfg.eval.sets.items()):  # its mapping is in the eval slice (eval.sets)
            keys[f"evalset:{name}"] = held_out_set_key(held_out_file(entry), f"eval.sets.{name}")
    for k, v in (variant or {}).items():
        keys[k] = str(v)
    return keys


def train_variants(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """One training run per (arm, seed): [{"arm": ..., "seed": ...}, ...] in config order (the config refuses an
    arm or seed listed twice)."""
    return [{"arm": arm, "seed": seed} for arm in cfg.train.arms for seed in cfg.train.seeds]


def heldout_variants(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """One held-out evaluation per policy: each training run's (:func:`train_variants`), and with eval.base_policy
    the starting policy's (arm BASE_ARM, seed 0) and its probe pass (arm PROBE_ARM, seed REACH_SEED), which
    defines each set's reachable stratum. in: config; out: [{"arm": ..., "seed": ...}, ...]."""
    from saerl.evaluate import BASE_ARM, PROBE_ARM, REACH_SEED

    base = [{"arm": BASE_ARM, "seed": 0}, {"arm": PROBE_ARM, "seed": REACH_SEED}] if cfg.eval.base_policy else []
    return train_variants(cfg) + base


VARIANTS: dict[str, Callable[[PipelineConfig], list[dict[str, Any]]]] = {"train": train_variants,
                                                                          "heldout": heldout_variants}


def run_label(stage: str, variant: dict[str, Any] | None) -> str:
    """The name of a stage run in records, inputs and MLflow: '<stage>:<arm>:<seed>' for a run of a stage with
    variants (VARIANTS: 'train:saerl:0', 'heldout:base:0'), else the stage's name."""
    return runners.STAGE_RUN.format(stage=stage, **variant) if stage in VARIANTS and variant else stage


# the curriculum stage's config fields an ablation arm's order does not depend on (saerl.runners.compute_curriculum,
# arm_order_frame), as dotted prefixes: filter_only trains on the prompts the quality filter keeps, reshuffled per seed,
# so on the scores and the threshold alone; order_only on the order built without the filter. Their training runs
# key on that part of the curriculum (input "arm_order", :func:`arm_order_key`), not on the whole artifact, so a
# sweep over curriculum.mix_ratio does not retrain filter_only, nor one over the threshold order_only.
ARM_ORDER_UNREAD: dict[str, tuple[str, ...]] = {"filter_only": ("curriculum",),
                                                "order_only": ("curriculum.filter_quality", "score.quality_threshold")}


def arm_order_key(cfg: PipelineConfig, arm: str, score_key: str) -> str:
    """The key of the part of a curriculum artifact an ARM_ORDER_UNREAD `arm` trains on: the curriculum key's
    ingredients (its code version, the score artifact's key, its config slice) less the fields that arm's order
    does not depend on. in: config, the arm, the score artifact's key; out: the key."""
    from saerl.config import stable_hash, under

    config = {k: v for k, v in stage_slice(cfg, "curriculum").items() if not under(k, ARM_ORDER_UNREAD[arm])}
    return stable_hash({"stage": "curriculum", "order_for": arm, "version": code_version("curriculum"),
                        "inputs": {"score": score_key}, "config": config}, length=20)


def variant_upstream(stage: str, upstream: dict[str, ArtifactRef], variant: dict[str, Any] | None) -> dict[str, ArtifactRef]:
    """What one run of `stage` reads. A training run: the vanilla arm reads neither the curriculum nor the scores
    (its order is a shuffle of the ingested pool), so a curriculum change does not retrain it; the other arms keep
    the score artifact too: a curriculum arm's other seeds draw their order from it (saerl.runners.arm_order_frame),
    and an ablation arm's part of the curriculum keys on it (:func:`arm_order_key`). A held-out evaluation: its own
    training run's policy only (none for the starting policy's), so a new seed or arm evaluates that run alone."""
    if stage not in VARIANTS or not variant:
        return upstream
    if stage == "heldout":
        own = runners.TRAIN_RUN.format(**variant)
        return {k: v for k, v in upstream.items() if stage_of(k) != "train" or k == own}
    drop = {"curriculum", "score"} if variant["arm"] == "vanilla" else set()
    return {k: v for k, v in upstream.items() if k not in drop}


# stage -> its runner: (config, upstream artifacts, build) -> metrics; a stage with variants (VARIANTS: train,
# heldout) takes its variant's keyword-only arm and seed too, so no one Callable signature fits them all
RUNNERS: dict[str, Callable[..., dict[str, float]]] = {
    "testbed": runners.compute_testbed,
    "ingest": runners.compute_ingest,
    "extract": runners.compute_extract,
    "sae": runners.compute_sae,
    "encode": runners.compute_encode,
    "label": runners.compute_label,
    "score": runners.compute_score,
    "properties": runners.compute_properties,
    "curriculum": runners.compute_curriculum,
    "train": runners.compute_train,
    "heldout": runners.compute_heldout,
    "evaluate": runners.compute_evaluate,
}


@functools.cache
def default_threads() -> int:
    """torch's CPU thread count in this process before any stage set one (read at the first stage run here)."""
    import torch

    return torch.get_num_threads()


def set_threads(cfg: PipelineConfig) -> None:
    """Apply runtime.torch_threads to this process, or, when 0, the process's own default (:func:`default_threads`):
    a process that runs many stage runs (a Dask worker) kept what an earlier one set, so two runs of one key wrote
    activations that differed in the last float bits by which worker had run what before."""
    import torch

    torch.set_num_threads(cfg.runtime.torch_threads or default_threads())


def stop_verifier() -> None:
    """Stop the answer verifier's worker processes (saerl.verify's pool), which a stage that verifies answers (ingest,
    label, train, evaluate) starts in the process that runs it: a Dask worker or a long-lived process that runs many
    stage runs would otherwise keep up to MAX_WORKERS idle interpreters (~60 MB each) until it exits. A batch
    still running on another thread finishes first (the pool's lock); the next batch restarts them (~0.4 s).
    Nothing happens where the verifier was never imported."""
    verify = sys.modules.get("saerl.verify")
    if verify is not None:
        verify.shutdown_verifier()


def planned_elsewhere(stage: str, planned: str, own: str, keys: dict[str, str]) -> str:
    """The error of a stage run given a key (by the flow, which plans every key in its own process) other than the
    one its inputs give in the process that runs it (a Dask worker): building under the planned key would store an
    artifact of other inputs under it, reused later as if they were the same. Most often the device: with
    runtime.device=auto the flow's machine resolves to cpu and a GPU worker's to cuda, and the precision (model.dtype,
    train.bf16) is read on a GPU only. in: stage, the planned key, this process's key, its input keys; out: the text."""
    return (f"stage {stage}: the flow planned key {planned[:12]}, but its inputs here give {own[:12]} (inputs here: "
            f"{dict(sorted(keys.items()))}): the flow and this worker see different inputs, most often the device "
            f"(runtime.device=auto resolves to {keys.get('device', 'no device')} here and to another type where the "
            "flow runs); set runtime.device to the workers' device (cuda or cpu) so both resolve alike")


def check_inputs(stage: str, upstream: dict[str, ArtifactRef]) -> None:
    """Refuse to build `stage` on an input artifact that is gone or broken (its files checked by size against its
    manifest, one stat each): one collected by `saerl gc` after this run found it reached the runner as a bare path, which loading a
    policy read as a hub id ("Repo id must be in the form ..."). in: the stage, its upstream refs; raises
    CorruptArtifact naming the input, what is wrong and the fix."""
    for name, ref in upstream.items():
        folder = Path(ref.path)
        if folder.exists() and not (folder / MANIFEST).exists():  # made by hand, not by a store: taken as it is
            continue
        if problems := folder_problems(folder, hashes=False):
            raise CorruptArtifact(f"{stage} cannot read its input {name} ({folder}): {'; '.join(problems[:3])} "
                                  "(collected by `saerl gc` while this run went on, or damaged?): rerun, and it is "
                                  "rebuilt")


def run_stage(store: ArtifactStore, cfg: PipelineConfig, stage: str, upstream: dict[str, ArtifactRef],
              key: str | None = None, variant: dict[str, Any] | None = None, take_lock: bool = True) -> StageResult:
    """Build or reuse `stage`'s artifact for `cfg` given its upstream artifacts (and, for a stage with variants,
    VARIANTS: train and heldout, the variant {arm, seed} of the run, which it needs: ValueError naming the stage
    without one, before any key, lock or folder); take_lock=False when the caller holds the key's build lock for it
    (ArtifactStore.ensure). A build that resumed an interrupted one says what it reused (StageResult.resumed): the
    note its runner left (build note saerl.runs.RESUMED), else how many chunks of its chunk log it kept unchanged
    from an interrupted build, of those it held at the end (saerl.artifacts.reused_chunks, saerl.runs.resumed_note)."""
    from saerl.runs import RESUMED, resumed_note

    if stage in VARIANTS and not variant:  # its runner needs arm and seed: it failed after taking the lock
        raise ValueError(f"stage {stage} runs once per variant: pass variant={{'arm': ..., 'seed': ...}} (one of "
                         f"{stage}'s variants, saerl.pipeline.VARIANTS['{stage}'](cfg))")
    set_threads(cfg)
    upstream = variant_upstream(stage, upstream, variant)
    keys = input_keys(cfg, stage, upstream, variant)
    own = stage_key(cfg, stage, keys)
    if key is not None and key != own:
        raise ValueError(planned_elsewhere(stage, key, own, keys))
    key = own
    started = time.monotonic()  # StageRecord.seconds is a span: a wall-clock step moves it not
    metrics: dict[str, float] = {}
    resumed = {"note": ""}  # what the build reused of an interrupted one ('' from scratch, or reused)

    def compute(build: Build) -> None:
        check_inputs(stage, upstream)
        before = chunk_records(build.path)  # finished chunks of an interrupted build this one resumes
        try:
            metrics.update(RUNNERS[stage](cfg, upstream, build, **(variant or {})))
        except BaseException as err:
            if stage in MODEL_STAGES:  # its traceback's frames hold the run's model (a CUDA out-of-memory in training)
                traceback.clear_frames(err.__traceback__)  # for as long as the error is kept (Prefect's state)
            raise
        finally:
            if stage in MODEL_STAGES:  # a build only: a cached stage run loaded nothing
                release_memory()
        if stage in SHARDED and not take_lock:  # the flow fanned it out (and holds its lock): the shards' work,
            metrics.update(shard_notes(build))  # not this run's publish, is the build; else a fan-out's leftover
            # record (one whose stage run never published) is not this build's
        build.note(metrics=metrics)
        after = chunk_records(build.path)  # publishing removes the chunk log: read now
        resumed["note"] = str(build.notes.get(RESUMED) or resumed_note(reused_chunks(before, after), len(after)))

    manifest = {"code_version": code_version(stage), "inputs": keys, "config": stage_slice(cfg, stage, keys)}
    if stage == "ingest":  # what the stages reading its rows key on (saerl.stages.INGEST_ROWS_VERSION)
        manifest[ROWS_VERSION] = rows_version()
    try:
        ref, computed = store.ensure(stage, key, compute, manifest, take_lock=take_lock)
    finally:
        stop_verifier()
    if not computed:
        metrics = ref.manifest().get("metrics", {})
    return StageResult(ref, computed, round(time.monotonic() - started, 3), metrics, store.take_waited(stage, key),
                       resumed["note"])


def stage_runs(cfg: PipelineConfig, until: str | None = None) -> list[tuple[str, str, tuple[str, ...], dict[str, Any] | None]]:
    """Every stage run of `plan(cfg, until)` in order: (stage, run name, planned inputs, variant). A stage with
    variants (VARIANTS) expands into one run per variant: train per (arm, seed), named 'train:<arm>:<seed>', and
    heldout per policy, named 'heldout:<arm>:<seed>'."""
    out = []
    for stage, ups in plan(cfg, until):
        for variant in VARIANTS[stage](cfg) if stage in VARIANTS else [None]:
            out.append((stage, run_label(stage, variant), ups, variant))
    return out


def resolve_upstream(stage: str, ups: tuple[str, ...], refs: dict[str, ArtifactRef],
                     variant: dict[str, Any] | None) -> dict[str, ArtifactRef]:
    """The artifacts one stage run reads, from the refs of the runs before it: its planned inputs, with a stage
    with variants ('train', 'heldout') standing for every run of it, less what its variant does not read."""
    out: dict[str, ArtifactRef] = {}
    for u in ups:
        if u in VARIANTS:
            out.update({k: v for k, v in refs.items() if k.startswith(f"{u}:")})
        else:
            out[u] = refs[u]
    return variant_upstream(stage, out, variant)


@dataclass
class _Quiet:
    """The process's quieting, shared by overlapping quiet_libraries blocks (threads of one Dask worker, a task
    inside a quiet flow): how many are open, and what the first one found, which the last one restores."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    depth: int = 0
    saved: tuple[bool, str | None, int] = (True, None, logging.NOTSET)


_QUIET = _Quiet()


@contextmanager
def quiet_libraries(cfg: PipelineConfig) -> Iterator[None]:
    """With `runtime.progress` off, for the length of the block: transformers' progress bars off ("Loading
    weights", "Writing model shards": several per run, one per model load or save) in this process and, through
    HF_HUB_DISABLE_PROGRESS_BARS in the environment they inherit, in Dask worker processes started inside it;
    and the `distributed` loggers at WARNING (the scheduler's and nannies' INFO lines: ~20 after the final table
    of a Dask run). Blocks may overlap (stage tasks in the threads of one worker): the first to open quiets, the
    last to close restores what the first found. With progress on it does nothing. Wrap the flow call, so a
    LocalCluster started by the flow's task runner starts (and closes) inside it. in: the run's config."""
    if cfg.runtime.progress:
        yield
        return
    from transformers.utils import logging as hf_logging

    if cfg.runtime.task_runner == "dask" and "distributed" not in sys.modules:
        import distributed  # noqa: F401 - its import sets the `distributed` logger's level: set ours after it
    dask_log = logging.getLogger(DASK_LOGGER)
    with _QUIET.lock:
        if _QUIET.depth == 0:
            _QUIET.saved = (hf_logging.is_progress_bar_enabled(), os.environ.get(HUB_NO_BARS), dask_log.level)
            hf_logging.disable_progress_bar()
            os.environ[HUB_NO_BARS] = "1"
            dask_log.setLevel(max(logging.WARNING, dask_log.level))
        _QUIET.depth += 1
    try:
        yield
    finally:
        with _QUIET.lock:
            _QUIET.depth -= 1
            if _QUIET.depth == 0:
                bars_on, env_before, level_before = _QUIET.saved
                dask_log.setLevel(level_before)
                if env_before is None:
                    os.environ.pop(HUB_NO_BARS, None)
                else:
                    os.environ[HUB_NO_BARS] = env_before
                if bars_on:
                    hf_logging.enable_progress_bar()


def run_all(store: ArtifactStore, cfg: PipelineConfig, until: str | None = None,
            report: Callable[[str, StageResult], None] | None = None) -> dict[str, StageResult]:
    """Every stage run of `cfg` in this process, without Prefect or tracking (benchmarks, notebooks):
    {run name: result}, each cached in `store` exactly as the flow caches it. `report` is called per run. With
    runtime.progress off, the libraries' progress bars are off for the run, as in a flow (:func:`quiet_libraries`).

    It saves no run record (the flow does): its run is not seen by `saerl status`, `report` or `export` ('latest'
    names the newest recorded run), and `saerl gc` keeps only the artifacts a kept record names, so it collects
    this run's once they are older than --min-age-hours. To record it, as `saerl run` would, after it returns::

        from saerl.report import record_results
        from saerl.runs import save_run
        save_run(store.root, record_results(store, cfg, results))  # results: what run_all returned
    """
    from saerl.preflight import check_runnable  # (it plans with this module's plan: imported here, not above)

    check_runnable(cfg, until)
    results: dict[str, StageResult] = {}
    refs: dict[str, ArtifactRef] = {}
    with quiet_libraries(cfg):
        for stage, name, ups, variant in stage_runs(cfg, until):
            res = run_stage(store, cfg, stage, resolve_upstream(stage, ups, refs, variant), variant=variant)
            refs[name], results[name] = res.ref, res
            if stage == "ingest":
                check_ingested(cfg, res.ref, until)
            if report:
                report(name, res)
    return results


SHARDED = ("extract", "encode")
SHARDS_TOKEN = "shards.token"  # in a sharded build's chunk log folder: the fan-out whose shards may run (fan_out_token)
STOPPED_TOKEN = "stopped"  # the token a stopped fan-out leaves: no shard runs another chunk


def prepare_shards(store: ArtifactStore, cfg: PipelineConfig, stage: str, upstream: dict[str, ArtifactRef],
                   key: str, n_shards: int) -> list[list[int]]:
    """Lay out a sharded stage's Zarr store in its partial folder (one process, before any shard runs, while the
    flow holds the key's build lock until the stage's own run has published: flows.pipeline.build_sharded) and
    split its unfinished chunks round-robin into at most `n_shards` lists of chunk ids. A chunk is finished
    when the chunk log records it with the store's fingerprint, as the shards themselves decide: a record
    left from a replaced store (another dtype, other weights) is work for a shard, not for the final run."""
    import zarr

    from saerl.activation_store import STORE_NAME, list_chunks, open_activations
    from saerl.sae import CODES_NAME

    build = store.begin(stage, key)
    if stage == "extract":
        from saerl.activations import prepare_extraction

        prompts = runners.read_prompts(upstream)
        prepare_extraction(prompts["prompt"].to_list(), prompts["id"].to_list(), build.path,
                           runners.internals_model_cfg(cfg), cfg.extract, model_path=runners.internals_model(cfg, upstream),
                           device=cfg.runtime.device, root=store.root)
        chunks = list_chunks(build.path / STORE_NAME)
        fp = open_activations(build.path / STORE_NAME).meta.fingerprint
    elif stage == "encode":
        from saerl.sae import encode_codes

        encode_codes(upstream["extract"].path, upstream["sae"].path, cfg.sae, build.path, build.chunks,
                     chunk_ids=[], progress=False)  # creates codes.zarr only
        chunks = list_chunks(upstream["extract"].file(STORE_NAME))
        fp = zarr.open_group(build.path / CODES_NAME, mode="r").attrs.get("fingerprint")
    else:
        raise ValueError(f"stage {stage} is not sharded; sharded stages: {SHARDED}")
    todo = [c for c in chunks if not (build.chunks.is_done(c) and build.chunks.get(c).get("fingerprint") == fp)]
    return [todo[i::n_shards] for i in range(n_shards) if todo[i::n_shards]]


def fan_out_token(store: ArtifactStore, stage: str, key: str, token: str | None = None) -> str:
    """Name the fan-out whose shards may compute chunks of a sharded build: write `token` (default: a new one)
    into its chunk log's folder (SHARDS_TOKEN; left out of the published artifact with the log). Another token
    (a new fan-out of the same build, or STOPPED_TOKEN when the flow stops) makes the earlier fan-out's shards
    end before their next chunk (:func:`shard_wanted`): Dask cannot stop a running task, so a Ctrl-C left the
    shards of an external cluster computing into a folder the next run would publish under them.
    in: store, stage, key, token; out: the token written."""
    token = token or uuid.uuid4().hex
    write_file_atomic(store.begin(stage, key).chunks.folder / SHARDS_TOKEN,
                      lambda tmp: tmp.write_text(token, encoding="utf-8"))
    return token


def shard_wanted(chunk_log: ChunkLog, token: str | None) -> Callable[[], bool]:
    """The check a shard asks before each chunk: is the fan-out that started it (its `token`) still the build's
    own? Always yes for a shard given no token (a direct call). in: the build's chunk log, token; out: the check."""
    path = chunk_log.folder / SHARDS_TOKEN

    def wanted() -> bool:
        try:
            return token is None or path.read_text(encoding="utf-8") == token
        except FileNotFoundError:
            return False
    return wanted


SHARD_RUNS = "shards.json"  # in a sharded build's chunk log folder: what its last fan-out's shards ran (record_shards)


def record_shards(store: ArtifactStore, stage: str, key: str, summaries: list[dict[str, Any]], seconds: float) -> None:
    """Keep what a fan-out's shards ran (their summaries: chunks_run, n_tokens, seconds) and its wall time in the
    build's chunk log folder, for the stage's own run to fold into its manifest and metrics (:func:`shard_notes`):
    that run finds every chunk done, so it measured a build of ~0 s and no throughput. in: store, stage, key, the
    shards' returned summaries, the fan-out's wall seconds."""
    record = {"seconds": round(seconds, 3), "shards": summaries}
    write_file_atomic(store.begin(stage, key).chunks.folder / SHARD_RUNS,
                      lambda tmp: tmp.write_text(json.dumps(record, default=str), encoding="utf-8"))


def shard_notes(build: Build) -> dict[str, float]:
    """What the shards of the build's fan-out ran (:func:`record_shards`), folded into the build: its manifest's
    `shards` note (count, chunks run, tokens, wall seconds) and its `seconds` (from the fan-out's start, not the stage
    run's, which only published); out: the metrics that say it (shard_chunks_run, and tokens_per_s over the fan-out's
    wall time: the cluster's throughput), {} when no fan-out ran for this build."""
    path = build.chunks.folder / SHARD_RUNS
    if not path.is_file():
        return {}
    record = json.loads(path.read_text(encoding="utf-8"))
    shards, wall = record["shards"], float(record["seconds"])
    chunks, tokens = (sum(int(s.get(k, 0)) for s in shards) for k in ("chunks_run", "n_tokens"))
    build.note(shards={"n": len(shards), "chunks_run": chunks, "n_tokens": tokens, "seconds": wall},
               started=float(build.notes.get("started", time.monotonic())) - wall)
    return {"shard_chunks_run": float(chunks), **({"tokens_per_s": round(tokens / wall, 1)} if wall > 0 else {})}


def run_shard(store: ArtifactStore, cfg: PipelineConfig, stage: str, upstream: dict[str, ArtifactRef], key: str,
              chunk_ids: list[int], token: str | None = None) -> dict[str, Any]:
    """Compute some chunks of a prepared sharded stage into its partial folder (any process, any machine
    that sees the artifact root), ending early once the fan-out `token` names is no longer the build's
    (:func:`shard_wanted`). The stage's own run then finds them done and publishes the artifact."""
    from saerl.activation_store import STORE_NAME
    from saerl.activations import pick_device

    set_threads(cfg)
    build = store.begin(stage, key)
    device = str(pick_device(cfg.runtime.device))
    wanted = shard_wanted(build.chunks, token)
    if stage == "extract":
        from saerl.activations import extract_chunks

        return extract_chunks(build.path / STORE_NAME, build.chunks, chunk_ids, model_cfg=runners.internals_model_cfg(cfg),
                              device=device, progress=False, keep_going=wanted,
                              model_path=runners.internals_model(cfg, upstream))
    from saerl.sae import encode_codes

    return encode_codes(upstream["extract"].path, upstream["sae"].path, cfg.sae, build.path, build.chunks,
                        device=device, chunk_ids=chunk_ids, progress=False, keep_going=wanted, reuse_sae=True)
