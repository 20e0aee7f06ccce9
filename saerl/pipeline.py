"""Stage planning and stage runners: the library side of the pipeline (no Prefect here).

`plan(cfg, until)` lists the stages a config runs, in order, with the upstream stages each one reads.
`input_keys` and `stage_key` turn that into cache keys; `run_stage` builds (or reuses) one stage's artifact
in an :class:`ArtifactStore` by calling that stage's ``compute_*`` function. Prefect tasks in `tasks/`
wrap `run_stage` one stage each; `flows/` composes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saerl import runners
from saerl.artifacts import ArtifactRef, ArtifactStore, Build, file_sha256
from saerl.config import PipelineConfig
from saerl.stages import STAGES, stage_key, stage_slice

log = logging.getLogger("saerl.pipeline")

ORDER = ("testbed", "ingest", "extract", "sae", "encode", "label", "score", "curriculum", "train", "evaluate")


@dataclass
class StageResult:
    """What running one stage gave: a reference to its artifact and whether it was computed now."""

    ref: ArtifactRef
    computed: bool
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Small JSON-able form (what Prefect persists as the task result)."""
        return {"stage": self.ref.stage, "key": self.ref.key, "path": self.ref.path, "computed": self.computed,
                "seconds": self.seconds, "metrics": self.metrics}


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


def uses_testbed(cfg: PipelineConfig) -> bool:
    """Whether this config needs the testbed stage (its world as data, or its LM as the policy)."""
    return cfg.data.source == "testbed" or cfg.model.name_or_path == "testbed"


def available_stages() -> tuple[str, ...]:
    """Stages whose runners exist in this version of the library."""
    return tuple(s for s in ORDER if s in RUNNERS)


def plan(cfg: PipelineConfig, until: str | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """Stages to run for `cfg` up to and including `until`, each with the upstream stages it reads."""
    stages = [s for s in available_stages() if s != "testbed" or uses_testbed(cfg)]
    if until is not None:
        if until not in ORDER:
            raise ValueError(f"unknown stage '{until}'; stages are: {', '.join(ORDER)}")
        if until not in stages:
            raise ValueError(f"stage '{until}' is not available in this version; available: {', '.join(stages)}")
        stages = stages[: stages.index(until) + 1]
    return [(s, tuple(i for i in STAGES[s].inputs if i in stages)) for s in stages]


def hash_path(path: Path) -> str:
    """Content hash of a data file or folder (every file, sorted), so edited data reruns ingest."""
    from saerl.config import stable_hash

    if path.is_dir():
        return stable_hash({p.relative_to(path).as_posix(): file_sha256(p)
                            for p in sorted(path.rglob("*")) if p.is_file()})
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist (check data.path)")
    return file_sha256(path)[:16]


def input_keys(cfg: PipelineConfig, stage: str, upstream: dict[str, ArtifactRef]) -> dict[str, str]:
    """Keys of everything `stage` reads besides config: upstream artifacts, and the data file for ingest."""
    keys = {name: ref.key for name, ref in upstream.items()}
    if stage == "ingest" and (f := data_file(cfg)) is not None:
        keys["file"] = hash_path(f)
    return keys


RUNNERS: dict[str, Callable[[PipelineConfig, dict[str, ArtifactRef], Build], dict[str, float]]] = {
    "ingest": runners.compute_ingest,
}


def run_stage(store: ArtifactStore, cfg: PipelineConfig, stage: str, upstream: dict[str, ArtifactRef],
              key: str | None = None) -> StageResult:
    """Build or reuse `stage`'s artifact for `cfg` given its upstream artifacts."""
    keys = input_keys(cfg, stage, upstream)
    key = key or stage_key(cfg, stage, keys)
    started = time.time()
    metrics: dict[str, float] = {}

    def compute(build: Build) -> None:
        metrics.update(RUNNERS[stage](cfg, upstream, build))
        build.note(metrics=metrics)

    manifest = {"code_version": STAGES[stage].version, "inputs": keys, "config": stage_slice(cfg, stage)}
    ref, computed = store.ensure(stage, key, compute, manifest)
    if not computed:
        metrics = ref.manifest().get("metrics", {})
    return StageResult(ref, computed, round(time.time() - started, 3), metrics)
