"""Ablation sweeps: grid parsing and validation, the cartesian product of settings, and the result table.

A grid is ``{dotted config key: [values]}``, written on the command line as ``--grid key=v1,v2,...`` (each
value parsed as YAML: numbers, strings, null, ``[0,1]`` lists). :func:`plan_sweep` validates a grid against
the config schema and returns one validated config per setting of the cartesian product; every error names
the key and says how to fix it. :func:`shared_until` finds, from the planned artifact keys, the stages every
setting shares (run once before the children when they run side by side on Dask). :func:`sweep_table` reads
each child run's evaluate artifact into one table (setting x set x arm), :func:`format_sweep` prints it
with what each child computed and reused, and :func:`write_sweep` keeps both under `<root>/sweeps/<sweep id>/`.
Errors name what the user wrote: the command line's ``--grid`` (:data:`CLI_GRID`), or a deployment's `grid`
parameter (:data:`PARAM_GRID`).

Library code: no Prefect. The sweep flow is `flows/sweep.py`; the CLI is `saerl ablate`.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from saerl.artifacts import ArtifactRef, write_file_atomic
from saerl.config import (
    ConfigError,
    PipelineConfig,
    build_config,
    field_paths,
    section_names,
)
from saerl.overrides import OverrideLoader, parse_override, suggest_key
from saerl.stages import RESULT_NEUTRAL, stage_key
from saerl.terminal import display_width, fit_cell, pad, table_lines

log = logging.getLogger("saerl.sweep")

Grid = dict[str, list[Any]]  # {dotted config key: values}, in the order given
Setting = dict[str, Any]  # {dotted config key: one value}: one point of the grid
GRID_EXAMPLE = "curriculum.mix_ratio=0,0.1,0.3"  # shown in every error that asks for the grid syntax
EVAL_STAGE = "evaluate"  # the stage whose artifact holds the comparison and steps-to-target tables
GREEDY = "greedy"  # comparison.parquet's metric for greedy pass@1 (the other one is mean_k)
YAML_WIDTH = 10**9  # never wrap a value over lines when printing it
NA = "n/a"  # table cell for a value a child did not produce (no evaluate stage, target never reached)
FLOW_SEQUENCE_CHARS = ",[]{}"  # a string value holding one of these must be quoted inside a --grid list
SHARED_LABEL = "shared upstream"  # the run of the stages every child shares, before the children (on Dask)
SWEEPS_DIR = "sweeps"  # <root>/sweeps/<sweep id>/: what an ablation printed (sweep.txt) and its table (sweep.parquet)
SWEEP_TABLE = "sweep.parquet"
SWEEP_TEXT = "sweep.txt"
SWEEP_TAG = "saerl.sweep"  # MLflow tag of a sweep child's runs (parent and nested stage runs): the sweep id
SETTING_TAG = "saerl.setting"  # MLflow tag of a sweep child's runs: its setting's label (or SHARED_LABEL)
SWEEP_PARAM = "sweep."  # + dotted key: the MLflow param of a sweep child's runs holding that key's swept value


@dataclass(frozen=True)
class GridSource:
    """Where a grid was written, so that an error names what the user set and shows the fix in that form.
    `key`, `axis`, `entry` are format strings: `key` names one swept key, `axis` one key with its values
    (`key`, `values`: joined by `sep`), `entry` one unparsed 'KEY=V1,V2' string (`text`); `whole` names the grid;
    `until` names the last stage the sweep runs (`stage`), as the command line or the flow's parameter sets it."""

    key: str
    axis: str
    sep: str
    entry: str
    whole: str
    until: str


# `saerl ablate`'s --grid; a flow's `grid` parameter (a deployment run's, set in prefect.yaml or with --param)
CLI_GRID = GridSource(key="--grid {key}", axis="--grid {key}={values}", sep=",", entry="--grid {text}",
                      whole="--grid KEY=V1,V2", until="--until {stage}")
PARAM_GRID = GridSource(key="grid key '{key}'", axis="grid: {{{key}: [{values}]}}", sep=", ",
                        entry="grid entry '{text}'", whole="key in its grid parameter, {KEY: [V1, V2]}",
                        until="until={stage}")


def format_value(value: Any) -> str:
    """A grid value as written on a command line: 0.1, easy_to_hard, null, [0, 1], 'a,b'."""
    if isinstance(value, str) and any(c in value for c in FLOW_SEQUENCE_CHARS):
        return "'" + value.replace("'", "''") + "'"
    return yaml.safe_dump(value, default_flow_style=True, width=YAML_WIDTH).removesuffix("\n...\n").strip()


def _example(source: GridSource, key: str = GRID_EXAMPLE.split("=")[0],
             values: Sequence[str] = tuple(GRID_EXAMPLE.split("=")[1].split(","))) -> str:
    """One axis, its values already formatted, written the way `source` takes it (default: the grid example)."""
    return source.axis.format(key=key, values=source.sep.join(values))


def parse_axis(text: str, source: GridSource = CLI_GRID) -> tuple[str, list[Any]]:
    """One ``--grid`` argument 'a.b=v1,v2' -> ('a.b', [v1, v2]), each value parsed as YAML (quote a value
    that contains a comma: a.b='x,y'), an integer with a leading zero as an override's is (overrides.OverrideLoader:
    decimal, not YAML 1.1's octal). Raises ConfigError naming the argument (as `source` calls it) when it
    cannot be read."""
    where = source.entry.format(text=text)
    if "=" not in text:
        raise ConfigError(f"{where}: expected KEY=V1,V2,... (e.g. {_example(source)})")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        values = yaml.load(f"[{raw}]", Loader=OverrideLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        problem = str(err).splitlines()[0]
        raise ConfigError(f"{where}: cannot read the values of '{key}' ({problem}); write them comma-"
                          f"separated and quote one that holds a comma or bracket, e.g. {key}='a,b',c") from None
    if not values:
        raise ConfigError(f"{where}: no values for '{key}'; write {key}=V1,V2 (e.g. {_example(source)})")
    return key, values


def parse_grid(items: Sequence[str] | Mapping[str, Sequence[Any]], source: GridSource = CLI_GRID) -> Grid:
    """Command-line ``--grid`` strings, or an already structured {key: [values]} (a deployment's parameter),
    as one grid in the order given. A key given twice is an error that says how to merge the two. `source`:
    what the user wrote the grid as, which the errors name. A key with no values is an error (it made a sweep of no
    settings, which the ablation flow died on)."""
    if isinstance(items, Mapping):
        grid: Grid = {}
        for key, values in items.items():
            if isinstance(values, str) or not isinstance(values, Sequence):
                raise ConfigError(f"grid key '{key}': values must be a list, got {values!r}; write "
                                  f"{{{key}: [{format_value(values)}, ...]}}")
            if not values:
                raise ConfigError(f"grid key '{key}': no values; write {{{key}: [V1, V2]}}")
            grid[key] = list(values)
        return grid
    grid = {}
    for text in items:
        key, values = parse_axis(text, source)
        if key in grid:
            merged = [format_value(v) for v in grid[key] + values]
            raise ConfigError(f"{source.key.format(key=key)} is given twice; give it once with every value: "
                              f"{_example(source, key, merged)}")
        grid[key] = values
    return grid


def check_key(key: str, source: GridSource = CLI_GRID) -> None:
    """Raise ConfigError unless `key` is a config field that changes results (a stage reads it); the error
    names the key as `source` (the command line's --grid, a deployment's grid parameter) has it."""
    paths = field_paths()
    where = source.key.format(key=key)
    if key in section_names():
        example = next(p for p in paths if p.startswith(f"{key}."))
        raise ConfigError(f"{where}: '{key}' is a section; sweep one of its fields, e.g. "
                          f"{_example(source, example, ['V1', 'V2'])}")
    if key not in paths:
        raise ConfigError(f"{where}: unknown key '{key}'{suggest_key(key)}; keys are dotted config paths "
                          f"like {GRID_EXAMPLE.split('=')[0]}")
    if any(key == n or key.startswith(f"{n}.") for n in RESULT_NEUTRAL):
        raise ConfigError(f"{where}: '{key}' changes no result (no stage reads it), so every setting would "
                          "be the same run; sweep a field a stage reads, or pass it as a plain override")


def with_setting(base: Mapping[str, Any], setting: Setting) -> dict[str, Any]:
    """A copy of a raw config dict with each dotted key of `setting` set to its value."""
    out = copy.deepcopy(dict(base))
    for key, value in setting.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = copy.deepcopy(value)
    return out


def settings(grid: Grid) -> list[Setting]:
    """The cartesian product of the grid, first key slowest: {a: [1, 2], b: [x, y]} -> a=1 b=x, a=1 b=y, ..."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def setting_label(setting: Setting) -> str:
    """A short name of a setting: 'mix_ratio=0.1 ordering=random' (full dotted keys when two leaves clash)."""
    leaves = [k.split(".")[-1] for k in setting]
    names = leaves if len(set(leaves)) == len(leaves) else list(setting)
    return " ".join(f"{n}={format_value(v)}" for n, v in zip(names, setting.values(), strict=True))


def _check_overrides(grid: Grid, overrides: Sequence[str], source: GridSource = CLI_GRID) -> None:
    """Raise ConfigError when a plain override sets a key the grid sweeps (which one should win is unclear)."""
    for text in overrides:
        key, _ = parse_override(text)
        if key in grid:
            raise ConfigError(f"'{key}' is both an override ({text}) and a grid key; drop the override or put "
                              f"its value into the grid: {_example(source, key, ['...'])}")


def plan_sweep(base: Mapping[str, Any], grid: Grid, overrides: Sequence[str] = (),
               source: GridSource = CLI_GRID, until: str | None = None,
               runs: bool = True) -> list[tuple[Setting, PipelineConfig]]:
    """Validate a grid against a base config and expand it.
    in: base, a validated config as a raw dict (``cfg.model_dump(mode="json")``, overrides applied); the grid;
    the plain overrides (only to reject a key that is also swept); what the user wrote the grid as (the command
    line's --grid, a deployment's grid parameter), which the errors name; the last stage the sweep runs (None:
    every stage); `runs`: also check what the settings would run (:func:`refuse_repeats`: each one runnable up to
    `until`, every key changing some run), which stamps local model folders and so may import a `pkg:` model's module
    (False where a deployment's parameters must be refused outside code first: flows.pipeline.refuse_untrusted).
    out: (setting, validated config) per point of the cartesian product, in order. Raises ConfigError naming the
    key (unknown, a section, result-neutral, set twice, given no values, or read by no stage up to `until` under
    this config), or the value (invalid for the field, or equal to another value once validated), and warns of
    settings that would run the same stage runs; a setting that cannot run up to `until` raises what
    saerl.preflight.check_runnable raises."""
    if not grid:
        raise ConfigError(f"an ablation needs at least one {source.whole} (e.g. {_example(source)})")
    _check_overrides(grid, overrides, source)
    for key, values in grid.items():
        check_key(key, source)
        where = source.key.format(key=key)
        if not values:  # a product with no settings: the ablation flow had no child to read its runner from
            raise ConfigError(f"{where}: no values; write {_example(source, key, ['V1', 'V2'])}")
        seen: dict[str, Any] = {}
        for value in values:
            cfg = _validated(base, {key: value}, f"{where}: value {format_value(value)} is invalid")
            canonical = json.dumps(_leaf(cfg, key), sort_keys=True)
            if canonical in seen:
                raise ConfigError(f"{where}: values {format_value(seen[canonical])} and {format_value(value)} "
                                  "are the same setting; list each value once")
            seen[canonical] = value
    children = [(s, _validated(base, s, f"grid setting {setting_label(s)} is invalid")) for s in settings(grid)]
    if runs:
        refuse_repeats(children, until, source)
    return children


def _validated(base: Mapping[str, Any], setting: Setting, where: str) -> PipelineConfig:
    """The config of `base` with `setting` applied; a ConfigError starts with `where`."""
    try:
        return build_config(with_setting(base, setting), "grid")
    except ConfigError as err:
        detail = str(err).split("\n", 1)[-1].strip()
        raise ConfigError(f"{where}: {detail}") from None


def _leaf(cfg: PipelineConfig, key: str) -> Any:
    """The validated, JSON-able value of a dotted key of a config."""
    node: Any = cfg.model_dump(mode="json")
    for part in key.split("."):
        node = node[part]
    return node


# ------------------------------------------------------------------------------------- what the children share


def planned_keys(cfg: PipelineConfig, until: str | None = None) -> dict[str, dict[str, str]]:
    """The artifact key of every stage run a config would run, computed from config (nothing runs; an ingest
    artifact already stored under its planned key gives the rows its readers key on: saerl.pipeline.ingest_rows_key):
    {stage: {run name: key}} in plan order. Keys chain exactly as the flow chains them (each run's key from
    its inputs' keys), so two configs get the same key for a stage run when they share its artifact (before ingest
    is built, two data files whose kept rows agree in what a stage reads still plan two keys: the run finds one)."""
    from saerl.pipeline import input_keys, resolve_upstream, stage_runs

    refs: dict[str, ArtifactRef] = {}
    out: dict[str, dict[str, str]] = {}
    for stage, name, ups, variant in stage_runs(cfg, until):
        upstream = resolve_upstream(stage, ups, refs, variant)
        key = stage_key(cfg, stage, input_keys(cfg, stage, upstream, variant))
        refs[name] = ArtifactRef(stage, key, "")
        out.setdefault(stage, {})[name] = key
    return out


def planned_run_keys(cfg: PipelineConfig, until: str | None = None) -> dict[str, str]:
    """{run name: artifact key} of every stage run a config would run (:func:`planned_keys`, flattened)."""
    return {name: key for runs in planned_keys(cfg, until).values() for name, key in runs.items()}


def shared_until(configs: Sequence[PipelineConfig], until: str | None = None) -> str | None:
    """The last stage to run once, for every child, before the children of a sweep run side by side: every
    stage before the first one whose runs differ between the configs (for a curriculum grid: up to the properties stage),
    extended to the last sharded stage (extract, encode) that they all share: built once on every worker before
    the children start, rather than by one child while the others wait on its build lock (children that share a
    sharded key among fewer than all take turns on it: flows.pipeline.build_sharded). None when the first stage
    already differs. The stages it returns are run with the first
    config; every stage before it is identical for every config, or (only in the extended case) the first
    config's own."""
    from saerl.pipeline import SHARDED

    plans = [planned_keys(cfg, until) for cfg in configs]
    order = list(plans[0])
    shared = [s for s in order if all(p.get(s) == plans[0][s] for p in plans[1:])]
    prefix = 0
    while prefix < len(order) and order[prefix] in shared:
        prefix += 1
    last = max([prefix - 1] + [order.index(s) for s in shared if s in SHARDED])
    return order[last] if last >= 0 else None


def _changes_nothing(key: str, settings_: Sequence[Setting], plans: Sequence[str]) -> bool:
    """Does every value of `key` give the same plan, whatever the other keys' values? in: a grid key, the
    settings and their plans (:func:`planned_keys` as JSON text), in the same order; out: bool."""
    groups: dict[str, set[str]] = {}
    for setting, plan in zip(settings_, plans, strict=True):
        rest = json.dumps({k: v for k, v in setting.items() if k != key}, sort_keys=True, default=str)
        groups.setdefault(rest, set()).add(plan)
    return all(len(plans_) == 1 for plans_ in groups.values())


def _readers(key: str) -> list[str]:
    """The stages that declare `key` among their reads (saerl.stages.STAGES), in pipeline order."""
    from saerl.stages import STAGES

    return [name for name, stage in STAGES.items() if any(key == r or key.startswith(f"{r}.") for r in stage.reads)]


def _unread_reason(key: str, cfg: PipelineConfig, planned: Sequence[str], until: str | None,
                   source: GridSource) -> str:
    """Why no stage run of `cfg` up to `until` (its planned stages, `planned`) changes with `key`, and the fix, for
    :func:`refuse_repeats`: no stage up to `until` reads it (sweep it with a later until), a stage there ignores it
    under this config (saerl.stages.unread_fields, or pinned_fields, which key it at its default: drop it or change
    what makes the stage ignore it), or every value
    gives that stage the same input."""
    from saerl.config import device_type
    from saerl.stages import pinned_fields, unread_fields

    readers = _readers(key)
    here = [s for s in readers if s in planned]
    if not here:
        return _unplanned_reason(readers, cfg, planned, until, source)
    device = device_type(cfg.runtime.device)
    if all(key in unread_fields(cfg, s, device) + pinned_fields(cfg, s, device) for s in here):
        return (f"the {_stage_phrase(here)} ignore{_verb_s(here)}"
                " it under this config (README, 'What the demo does': a field 'not read under this config'); drop it "
                "from the grid, or set the config so that a stage reads it")
    return (f"every value gives the {_stage_phrase(here)} the same input under "
            "this config; drop it from the grid, or sweep values that differ there")


def _stage_phrase(stages: Sequence[str]) -> str:
    """Stage names as a message names them: ['sae'] -> 'sae stage', ['sae', 'score'] -> 'sae and score stages'."""
    return f"{' and '.join(stages)} stage{'' if len(stages) == 1 else 's'}"


def _verb_s(stages: Sequence[str]) -> str:
    """The 's' of a verb whose subject is `stages` (:func:`_stage_phrase`): 's' for one stage, '' for several."""
    return "s" if len(stages) == 1 else ""


def _unplanned_reason(readers: Sequence[str], cfg: PipelineConfig, planned: Sequence[str], until: str | None,
                      source: GridSource) -> str:
    """:func:`_unread_reason` for a key no planned stage reads: no stage reads it, only stages this config never
    runs do, or a stage after `until` does (sweep it with a later until). in: the key's reader stages
    (:func:`_readers`), the config, its planned stages, the last stage, where the grid was written; out: the reason
    and fix."""
    from saerl.pipeline import plan

    whole = {stage for stage, _ in plan(cfg)}  # the stages this config runs with no --until
    later = [s for s in readers if s not in planned and s in whole]
    if not later:
        return _never_run_reason([s for s in readers if s not in whole])
    if until is None:
        return "no stage reads it; drop it from the grid"
    return (f"no stage up to {source.until.format(stage=until)} reads it ({', '.join(later)} "
            f"{'does' if len(later) == 1 else 'do'}); sweep it with {source.until.format(stage=later[0])} or "
            "a later stage, or drop it from the grid")


def _never_run_reason(never: Sequence[str]) -> str:
    """The reason for a key that only stages this config never runs (`never`) read, or, with none, that no stage
    reads it; with its fix."""
    if not never:
        return "no stage reads it; drop it from the grid"
    return (f"only the {_stage_phrase(never)} read{_verb_s(never)} "
            "it, which this config never runs (e.g. the testbed under data.source=file); drop it from the "
            "grid, or set the config so that stage runs")


def refuse_repeats(children: Sequence[tuple[Setting, PipelineConfig]], until: str | None = None,
                   source: GridSource = CLI_GRID) -> None:
    """Raise ConfigError when a grid key's values never change what a sweep runs (:func:`planned_keys` up to
    `until`): every child would repeat another's runs. The key is named with why (:func:`_unread_reason`: e.g.
    sae.l1_coefficient for a TopK SAE, or train.max_steps up to --until score). Settings that coincide otherwise (a
    corner of the grid: topk x two l1 coefficients) are a warning naming them. Each setting is first
    checked to be runnable up to `until` (saerl.preflight.check_runnable, whose errors it raises), as its keys
    hash its data files. in: the (setting, config) pairs of :func:`plan_sweep`, the last stage, where the grid
    was written (which the error names)."""
    from saerl.preflight import check_runnable

    for _, cfg in children:
        check_runnable(cfg, until, warn=False)  # each child's flow warns of what it ignores
    planned = [planned_keys(cfg, until) for _, cfg in children]
    plans = [json.dumps(p, sort_keys=True) for p in planned]  # equal exactly when two settings run the same runs
    if len(set(plans)) == len(plans):
        return
    settings_ = [s for s, _ in children]
    scope = f" up to {source.until.format(stage=until)}" if until else ""
    dead = [key for key in settings_[0] if _changes_nothing(key, settings_, plans)]
    if dead:
        raise ConfigError("; ".join(
            f"{source.key.format(key=key)} changes no stage run{scope}, so its values would repeat one run: "
            f"{_unread_reason(key, children[0][1], list(planned[0]), until, source)}" for key in dead))
    groups: dict[str, list[str]] = {}
    for setting, plan in zip(settings_, plans, strict=True):
        groups.setdefault(plan, []).append(f"'{setting_label(setting)}'")
    same = "; ".join(" and ".join(labels) for labels in groups.values() if len(labels) > 1)
    # not refused: a full grid whose corner coincides (topk x two l1 coefficients) still gives its one table, and
    # the repeated child reuses every artifact of the first
    log.warning("grid settings %s run the same stage runs%s (the same artifacts): their rows of the table are one "
                "run repeated; drop a value that makes them coincide, or split the grid into ablations whose settings "
                "each run something of their own", same, scope)


# ---------------------------------------------------------------------------------------------- result table


def stage_statuses(record: Mapping[str, Any]) -> dict[str, list[str]]:
    """{'computed': [stage runs], 'cached': [stage runs]} of one run record (as `pipeline_flow` returns it)."""
    out: dict[str, list[str]] = {"computed": [], "cached": []}
    for name, stage in record["stages"].items():
        out.setdefault(stage["status"], []).append(name)
    return out


def child_rows(setting: Setting, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (set, arm) of a child run's evaluate artifact: greedy final accuracy, its difference to the
    reference arm (points) and verdict, and steps-to-target (on the arm's mean curve over seeds; None if it never
    reaches the target), and the child's run id (`saerl status RUN`). A child without an evaluate stage gives one
    row of None."""
    label = setting_label(setting)
    stage = record["stages"].get(EVAL_STAGE)
    if stage is None:
        return [{"setting": label, "set": None, "arm": None, "accuracy": None, "diff_pts": None, "verdict": None,
                 "target": None, "steps_to_target": None, "run_id": record.get("run_id")}]
    folder = Path(stage["path"])
    comparison = pl.read_parquet(folder / "comparison.parquet", glob=False).filter(pl.col("metric") == GREEDY)
    stt = pl.read_parquet(folder / "steps_to_target.parquet", glob=False).unique(
        ["set", "arm"], keep="first", maintain_order=True)
    steps = {(r["set"], r["arm"]): r for r in stt.iter_rows(named=True)}
    rows = []
    for r in comparison.iter_rows(named=True):
        s = steps.get((r["set"], r["arm"]), {})
        rows.append({"setting": label, "set": r["set"], "arm": r["arm"], "accuracy": r["accuracy"],
                     "diff_pts": None if r["verdict"] == "reference" else r["diff_pts"], "verdict": r["verdict"],
                     "target": s.get("target"), "steps_to_target": s.get("mean_steps"), "run_id": record.get("run_id")})
    return rows


def sweep_table(children: Sequence[tuple[Setting, Mapping[str, Any]]]) -> pl.DataFrame:
    """Every child's rows (:func:`child_rows`) in one frame: setting, set, arm, accuracy, diff_pts, verdict,
    target, steps_to_target, run_id."""
    rows = [row for setting, record in children for row in child_rows(setting, record)]
    schema = {"setting": pl.String, "set": pl.String, "arm": pl.String, "accuracy": pl.Float64,
              "diff_pts": pl.Float64, "verdict": pl.String, "target": pl.Float64, "steps_to_target": pl.Float64,
              "run_id": pl.String}
    return pl.DataFrame(rows, schema=schema)


def _cell(value: float | None, fmt: str) -> str:
    """A number formatted with `fmt`, or n/a for None/NaN."""
    return NA if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def format_sweep(children: Sequence[tuple[Setting, Mapping[str, Any]]], shared: Mapping[str, Any] | None = None,
                 table: pl.DataFrame | None = None, width: int | None = None) -> str:
    """The printed end of an ablation: per setting and arm, greedy accuracy (%), difference to the reference
    arm (points) with its verdict and steps-to-target; then per child the stage runs it computed and reused,
    after those of the `shared` run (the upstream run once before the children, on Dask) when there is one.
    `table`: the children's :func:`sweep_table`, when the caller has it (None: read from their artifacts); `width`:
    the columns to fit (saerl.terminal.fit_cell: the heading and the lists of stage runs wrapped; the table's
    columns, all names and numbers, never: saerl.terminal.table_lines; None: one line each, as sweep.txt keeps it)."""
    table = sweep_table(children) if table is None else table
    rows = [("setting", "set", "arm", "greedy acc", "diff (pts)", "verdict", "steps to target")]
    for r in table.iter_rows(named=True):
        accuracy = None if r["accuracy"] is None else 100 * r["accuracy"]
        diff = "-" if r["verdict"] == "reference" else _cell(r["diff_pts"], "+.1f")
        target = "" if r["target"] is None else f" (target {100 * r['target']:.1f}%)"
        steps = _cell(r["steps_to_target"], ".0f") + (target if r["steps_to_target"] is not None else "")
        rows.append((r["setting"], r["set"] or NA, r["arm"] or NA, _cell(accuracy, ".1f") + ("%" if accuracy is not None else ""),
                     diff, r["verdict"] or NA, steps))
    lines = fit_cell("", f"ablation: {len(children)} settings (greedy pass@1 on held-out sets; steps to target: on the "
                     f"mean in-training curve over seeds, {NA} = never reached; the target is read on that curve's "
                     "problems, train.eval_problems per set, not on the final evaluation's)", width)
    lines += table_lines(rows, width, wrap_last=False)
    lines += ["", "stage runs per setting"]
    runs = [(setting_label(s), record) for s, record in children]
    if shared is not None:
        runs.insert(0, (SHARED_LABEL, shared))
    label_width = max(display_width(label) for label, _ in runs)
    for label, record in runs:
        status = stage_statuses(record)
        lines += fit_cell(f"{pad(label, label_width)}  computed: ", " ".join(status["computed"]) or "-", width)
        lines += fit_cell(f"{pad('', label_width)}  cached:   ", " ".join(status["cached"]) or "-", width)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- what stays on disk


def sweep_tags(sweep_id: str, label: str) -> dict[str, str]:
    """The MLflow tags of one run of a sweep (a child, or the shared upstream run): {SWEEP_TAG: id, SETTING_TAG:
    label}, so the runs of one sweep and each one's setting can be found and told apart in MLflow."""
    return {SWEEP_TAG: sweep_id, SETTING_TAG: label}


def swept_params(setting: Setting) -> dict[str, str]:
    """The MLflow params of a sweep child's runs naming its setting: {'sweep.<dotted key>': value}, each value
    written as :func:`setting_label` writes it ({'curriculum.mix_ratio': 0} -> {'sweep.curriculum.mix_ratio':
    '0'}, matching the label 'mix_ratio=0', where the config param reads '0.0')."""
    return {SWEEP_PARAM + key: format_value(value) for key, value in setting.items()}


def sweep_dir(root: Path, sweep_id: str) -> Path:
    """Where a sweep's table and printed text are kept: <root>/sweeps/<sweep id>/."""
    return Path(root) / SWEEPS_DIR / sweep_id


def write_sweep(root: Path, sweep_id: str, table: pl.DataFrame, text: str) -> tuple[Path, Path]:
    """Keep what an ablation printed after it ends: its table (:func:`sweep_table`, one row per setting, set and
    arm, with each child's run id) as sweep.parquet and the printed text (:func:`format_sweep`) as sweep.txt,
    both written atomically under :func:`sweep_dir`. in: artifact root, sweep id, table, text; out: both paths."""
    folder = sweep_dir(root, sweep_id)
    folder.mkdir(parents=True, exist_ok=True)
    table_path, text_path = folder / SWEEP_TABLE, folder / SWEEP_TEXT
    write_file_atomic(table_path, lambda tmp: table.write_parquet(tmp))
    write_file_atomic(text_path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    return table_path, text_path
