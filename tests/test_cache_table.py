"""Cache correctness, table-driven over the whole config schema, from keys alone (nothing runs).

For every leaf field of PipelineConfig: change it to another valid value and compute every stage run's key
(train expanded per arm and seed) with fake upstream references chained through the keys, exactly as the
flow chains them. Exactly the runs whose stage reads the field (saerl.stages reads prefixes) and the runs
downstream of them (the inputs graph, where the vanilla arm reads no curriculum) must get a new key; every
other run keeps its key. A field no stage declares changes no key and fails here; a result-neutral field
(saerl.stages.RESULT_NEUTRAL) must change no key at all.
"""

from __future__ import annotations

import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ValidationError

from saerl.artifacts import ArtifactRef
from saerl.config import PipelineConfig, field_paths, flatten
from saerl.data import sample_path
from saerl.pipeline import (
    DATA_LABELS,
    DEVICE_DEPENDENT,
    ROWS_READERS,
    input_keys,
    resolve_upstream,
    stage_runs,
)
from saerl.stages import RESULT_NEUTRAL, STAGES, pinned_fields, stage_key, unread_fields

CHANGED_TEXT = "changed"  # a new value for a text field
SCALE, STEP = 0.5, 0.1  # new float values: v * SCALE, v + STEP, then FALLBACK_FLOATS
FALLBACK_INTS, FALLBACK_FLOATS = (1, 2), (0.5, 1.0)
EXTRA_KEY = "extra"  # key added to a dict field
# settings under which a field the defaults ignore is read (saerl.stages.unread_fields): a field no stage reads under
# the defaults is tested under the first of these under which one does
READING_BASES: tuple[dict[str, dict[str, Any]], ...] = (
    {"train": {"algorithm": "dapo"}}, {"train": {"algorithm": "grpo"}}, {"sae": {"architecture": "standard"}},
    {"sae": {"source": "pretrained"}}, {"sae": {"source": "local"}}, {"runtime": {"device": "cuda"}},
    {"curriculum": {"ordering": "frontier"}}, {"data": {"quality": "quality"}}, {"data": {"format": "hf"}},
    {"model": {"name_or_path": "Qwen/Qwen2.5-Math-1.5B"}},
    {"data": {"source": "file", "path": str(sample_path())}})
FILE_BASE = len(READING_BASES) - 1  # data.path is allowed beside source 'file' alone (the config refuses it otherwise)


SHORT_SAMPLE_LINES = 20
_short_sample: list[Path] = []  # the file _write_short_sample wrote for this module's tests


@pytest.fixture(scope="module", autouse=True)
def _write_short_sample(tmp_path_factory):
    """Writes short_sample()'s file in pytest's temporary folder (removed with it, as a tempfile.mkdtemp folder
    per run was not)."""
    path = tmp_path_factory.mktemp("cache-table") / "short.jsonl"
    path.write_text("".join(sample_path().read_text().splitlines(keepends=True)[:SHORT_SAMPLE_LINES]))
    _short_sample.append(path)
    yield
    _short_sample.remove(path)


def short_sample() -> str:
    """Another data file than the sample (its first lines), for data.path to change to: keys hash a data file's
    content, so only a file of other content changes them. Written once per module by _write_short_sample."""
    return str(_short_sample[-1])


@pytest.fixture(scope="module", autouse=True)
def _cpu_machine():
    """The keys here are those of a CPU machine (runtime.device auto gives cpu): on a GPU one, auto -> cpu changes
    the device-dependent stages' keys, as it should. Module-wide, since _base_graph caches the graph the first test
    builds. The cuda branches stay tested through READING_BASES' runtime.device=cuda base."""
    import torch

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_available", lambda: False)
        yield


@pytest.fixture(scope="module")
def base() -> PipelineConfig:
    """The schema defaults: every stage runs (label too, as difficulty is measured; testbed as the policy)."""
    return PipelineConfig()


def _is_neutral(path: str) -> bool:
    return any(path == n or path.startswith(n + ".") for n in RESULT_NEUTRAL)


def _reads(stage: str, path: str, cfg: PipelineConfig | None = None, arm: str | None = None) -> bool:
    """Whether `stage` declares `path` among its reads and, given `cfg`, does not ignore it under it (unread_fields,
    or pinned_fields, which key it at its default; on the device type input_keys resolves for it, for a training run
    of `arm`)."""
    declared = any(path == r or path.startswith(r + ".") for r in STAGES[stage].reads)
    if not declared or cfg is None:
        return declared
    device = device_type(cfg, stage)
    return path not in unread_fields(cfg, stage, device, arm) + pinned_fields(cfg, stage, device, arm)


def device_type(cfg: PipelineConfig, stage: str) -> str | None:
    """The device type in `stage`'s input keys under `cfg` (None for a stage whose keys hold none)."""
    return input_keys(cfg, stage, {}).get("device") if stage in DEVICE_DEPENDENT else None


def _annotation(path: str) -> Any:
    """The type annotation of a dotted leaf field."""
    model: type[BaseModel] = PipelineConfig
    *sections, leaf = path.split(".")
    for name in sections:
        model = model.model_fields[name].annotation
    return model.model_fields[leaf].annotation


def candidates(ann: Any, value: Any) -> list[Any]:
    """Values of type `ann` other than `value`, most natural first (validation picks a valid one)."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:  # a constrained type (list[Annotated[int, Field(ge=0)]]): its base type's values
        return candidates(args[0], value)
    if origin in (typing.Union, types.UnionType):
        out = [] if value is None else [None]
        return out + [c for a in args if a is not type(None) for c in candidates(a, value)]
    if origin is Literal:
        return [m for m in args if m != value]
    if ann is bool:
        return [not value] if isinstance(value, bool) else [True, False]
    if ann is int:
        near = [value + 1, value - 1, value * 2] if isinstance(value, int) and not isinstance(value, bool) else []
        return near + list(FALLBACK_INTS)  # value * 2: a width its heads still split evenly (testbed.d_model)
    if ann is float:
        near = [value * SCALE, value + STEP] if isinstance(value, int | float) else []
        return near + list(FALLBACK_FLOATS)
    if ann is str:
        return [f"{value}-{CHANGED_TEXT}" if isinstance(value, str) else CHANGED_TEXT, str(sample_path()), short_sample()]
    if origin is list:
        value = value or []
        first = [] if typing.get_origin(args[0]) is Literal or not value else [
            [c, *value[1:]] for c in candidates(args[0], value[0])]
        shorter = [value[:-1]] if value else []
        return first + shorter + [[*value, c] for c in candidates(args[0], None) if c not in value]
    if origin is tuple:
        return [(*value[:-1], c) for c in candidates(args[-1], value[-1])]
    if origin is dict:  # one entry's value changed first (a mapping of fixed keys refuses new ones), then a new entry
        value = value or {}
        changed = [{**value, k: c} for k, v in value.items() for c in candidates(args[1], v)]
        return changed + [{**value, EXTRA_KEY: c} for c in candidates(args[1], None)]
    if isinstance(ann, type) and issubclass(ann, BaseModel):  # a section as a value (an eval.sets entry): its fields
        return [{name: candidates(info.annotation, None)[-1] for name, info in ann.model_fields.items()}]
    raise TypeError(f"no candidate values for type {ann!r}: teach tests/test_cache_table.py::candidates")


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of a dumped config with one dotted field set."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    *sections, leaf = path.split(".")
    node = out
    for name in sections:
        node = node[name]
    node[leaf] = value
    return out


def run_graph(cfg: PipelineConfig) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """Every stage run of `cfg`, in order: ({run name: key}, {run name: stage}, {run name: upstream run names}),
    keys computed as the flow computes them, each upstream passed as a fake reference carrying its key."""
    keys: dict[str, str] = {}
    stages: dict[str, str] = {}
    upstream_names: dict[str, set[str]] = {}
    refs: dict[str, ArtifactRef] = {}
    for stage, name, ups, variant in stage_runs(cfg):
        upstream = resolve_upstream(stage, ups, refs, variant)
        key = stage_key(cfg, stage, input_keys(cfg, stage, upstream, variant))
        refs[name] = ArtifactRef(stage, key, f"/fake/{stage}/{key}")
        keys[name], stages[name], upstream_names[name] = key, stage, set(upstream)
    return keys, stages, upstream_names


@cache
def _base_graph(base: int | None = None) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    return run_graph(_base_for(base))


def _base_for(base: int | None) -> PipelineConfig:
    """The schema defaults, with READING_BASES[base] set (None: the defaults alone)."""
    cfg = PipelineConfig()
    if base is None:
        return cfg
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=fields)
                                  for section, fields in READING_BASES[base].items()})


def base_reading(path: str) -> int | None:
    """The READING_BASES entry under which a stage reads `path`, when every stage ignores it under the defaults
    (unread_fields: dynamic_sampling_max_rounds is DAPO's alone, l1_coefficient the standard SAE's, ...), else None
    (the defaults read it, or nothing reads it under any of them). data.path: the base whose source reads it."""
    if path == "data.path":
        return FILE_BASE
    for base in (None, *range(len(READING_BASES))):
        if any(_reads(stage, path, _base_for(base)) for stage in STAGES):
            return base
    return None


def changed_config(base: PipelineConfig, path: str) -> tuple[PipelineConfig, dict[str, str]]:
    """The first candidate value of `path` that validates, differs from the base and whose keys compute
    (a data file that must exist, ...): (config, its run keys)."""
    raw = base.model_dump(mode="json")
    old = flatten(base)[path]
    for value in candidates(_annotation(path), getattr_path(base, path)):
        try:
            cfg = PipelineConfig.model_validate(_set(raw, path, value))
            if flatten(cfg)[path] == old:
                continue
            return cfg, run_graph(cfg)[0]
        except (ValidationError, ValueError, FileNotFoundError):
            continue
    raise AssertionError(f"no valid value for {path} differs from {old!r}: add one to candidates()")


def getattr_path(cfg: BaseModel, path: str) -> Any:
    """The value of a dotted field."""
    value: Any = cfg
    for name in path.split("."):
        value = getattr(value, name)
    return value


def expected_changes(path: str) -> set[str]:
    """Run names that must get a new key when `path` changes: runs whose stage reads it, and every run
    downstream of one of those (in plan order, through the runs' actual upstream)."""
    base = base_reading(path)
    cfg = _base_for(base)
    _, stages, upstream_names = _base_graph(base)
    out: set[str] = set()
    for name, stage in stages.items():
        arm = name.split(":")[1] if stage == "train" else None  # train:ARM:SEED
        if _reads(stage, path, cfg, arm) or any(_reaches(u, stage, path) for u in upstream_names[name] & out):
            out.add(name)
    return out


def _reaches(upstream: str, stage: str, path: str) -> bool:
    """Whether a change of `path` in run `upstream` reaches a run of `stage` that reads it: a ROWS_READERS stage reads
    ingest's rows only, which a label field it does not read never changes (saerl.pipeline.rows_key)."""
    return not (upstream == "ingest" and stage in ROWS_READERS and path in DATA_LABELS
                and path not in ROWS_READERS[stage])


def test_base_plan_runs_every_stage_and_arm(base):
    _, stages, upstream_names = _base_graph()
    assert set(stages.values()) == set(STAGES), "the base config must run every stage so every read is tested"
    assert {"train:saerl:0", "train:vanilla:0"} <= set(stages)
    assert "curriculum" not in upstream_names["train:vanilla:0"], "vanilla reads no curriculum"


def _always_pinned(path: str) -> bool:
    """Whether every stage that declares `path` keys it at its default under every READING_BASES config and the
    defaults (saerl.stages.pinned_fields: the testbed LM's self-check, the token arrays' Zarr chunks): like a
    result-neutral field, a change of it must change no key."""
    declared = [s for s in STAGES if _reads(s, path)]
    bases = [_base_for(b) for b in (None, *range(len(READING_BASES)))]
    return bool(declared) and all(path in pinned_fields(cfg, s) for s in declared for cfg in bases)


@pytest.mark.parametrize("path", [p for p in field_paths() if not _is_neutral(p) and not _always_pinned(p)])
def test_a_field_change_reruns_exactly_its_readers_and_downstream(path):
    base = base_reading(path)  # a field the defaults ignore is tested under settings that read it
    base_keys = _base_graph(base)[0]
    expected = expected_changes(path)
    assert expected, (f"{path}: no stage reads it; declare it in a stage's reads (saerl/stages.py) or in RESULT_NEUTRAL "
                      "(or, when unread_fields ignores it under the defaults, add settings that read it to READING_BASES)")
    _, new_keys = changed_config(_base_for(base), path)
    common = set(base_keys) & set(new_keys)
    changed = {n for n in common if base_keys[n] != new_keys[n]}
    assert changed, f"{path}: changing it changed no stage run's key"
    assert changed == expected & common, (
        f"{path}: new keys for {sorted(changed)}, expected exactly {sorted(expected & common)}")


@pytest.mark.parametrize("path", [p for p in field_paths() if _is_neutral(p)])
def test_a_result_neutral_field_changes_no_key(base, path):
    _, new_keys = changed_config(base, path)
    assert new_keys == _base_graph()[0], f"{path} is result-neutral but changed a key"


@pytest.mark.parametrize("path", [p for p in field_paths() if _always_pinned(p)])
def test_a_field_keyed_at_its_default_under_every_config_changes_no_key(base, path):
    """testbed.log_every, eval_batch and max_new_tokens (the LM's self-check) and extract.token_block_rows (the token
    arrays' Zarr chunks) are keyed at their defaults whatever the config (saerl.stages.pinned_fields)."""
    _, new_keys = changed_config(base, path)
    assert new_keys == _base_graph()[0], f"{path} is keyed at its default but changed a key"


def test_the_fields_keyed_at_their_defaults_under_every_config_are_the_self_check_and_the_chunking():
    from saerl.stages import TESTBED_SELF_CHECK, TOKEN_CHUNKING

    assert sorted(p for p in field_paths() if _always_pinned(p)) == sorted(TESTBED_SELF_CHECK + TOKEN_CHUNKING)


def test_a_curriculum_change_keeps_vanilla_and_upstream_keys(base):
    """The table's headline case, spelled out: mix_ratio reruns curriculum, the arms reading it, their held-out
    evaluations and evaluate; vanilla's training run and evaluation and the starting policy's stay."""
    base_keys = _base_graph()[0]
    _, new_keys = changed_config(base, "curriculum.mix_ratio")
    changed = {n for n in base_keys if base_keys[n] != new_keys[n]}
    assert changed == {"curriculum", "train:saerl:0", "heldout:saerl:0", "evaluate"}
    assert {"heldout:vanilla:0", "heldout:base:0", "heldout:reach_probe:1"} <= set(base_keys)


@pytest.mark.parametrize("path", ["eval.ci_level", "eval.steps_bootstrap", "eval.target_gain_share"])
def test_how_evaluate_compares_generates_nothing_again(base, path):
    """A change of how the arms are compared (the interval's level, the bootstrap, the steps target) reruns evaluate
    alone: every policy's held-out evaluation (the generation, minutes to hours) keeps its key."""
    base_keys = _base_graph()[0]
    _, new_keys = changed_config(base, path)
    assert {n for n in base_keys if base_keys[n] != new_keys[n]} == {"evaluate"}


def test_the_short_sample_lies_in_pytests_temporary_folder(tmp_path_factory):
    """short_sample()'s file goes with pytest's temporary folders (it kept one more folder in /tmp per run)."""
    assert Path(short_sample()).is_relative_to(tmp_path_factory.getbasetemp())
    assert len(Path(short_sample()).read_text().splitlines()) == SHORT_SAMPLE_LINES
