"""Run records: what each pipeline run computed or reused, and why a stage recomputed.

A record is a JSON file `<root>/runs/<run_id>.json` with, per stage: key, status (computed / cached),
reason, config slice, input keys, code version, seconds and bytes on disk. The reason for a recompute compares the
stage with the same stage in the newest earlier run of the same config name that ran it (:func:`previous_stage_runs`:
a newer run may have stopped before it, `--until`, a sweep's shared upstream run): whether the stage's code version
changed (:func:`code_change`: the record's `code_version`, or for a record older than that field the earlier
artifact's manifest), which config fields changed, which input artifacts changed, or that the artifact was missing or
corrupt; a build that resumed an interrupted one
(killed, stopped or failed) says first what it reused: how many of its chunks were already done (its partial folder's
chunk log kept them, :func:`resumed_note`), or the step a training run resumed from (its checkpoint,
:func:`resumed_steps_note`). That note is one short text from `run_stage` (StageResult.resumed) to :func:`explain`.
"""

from __future__ import annotations

import functools
import json
import re
import time
import typing
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from saerl.artifacts import code_drift, file_lock, lock_held, version_drift, write_json_atomic

RUNS_DIR = "runs"
RECENT_IDS = 5  # run ids an unknown-run error lists
FAILED = "failed"  # RunRecord.extra key of a run that stopped on an error: "<stage run>: <error>"
FAILED_CHARS = 300  # of the error text kept there
STOPPED = "stopped"  # RunRecord.extra key of a run a person stopped (Ctrl-C, SIGTERM): "<stage run>: SIGINT" (no error)
ENDED = "ended"  # RunRecord.extra key: when the run ended (epoch seconds), ok, failed or stopped; absent while it runs,
# for a run killed before it could say, and in records from before session 42
RUNNING = "running"  # RunRecord.extra key (True) while a run's stages are under way, removed when it ends (done or
# failed): a record that keeps it is of a run still going, or of one killed before it could say (SIGKILL, out of memory)
UNFINISHED = "unfinished: still running, or killed before it ended"  # how status shows such a record, when its
# process cannot be checked (no live lock: a run before session 27)
LIVE = ".live"  # runs/<run id>.live: locked by the run's process while it runs (:func:`live_lock`), gone at its end
STILL_RUNNING = "running"  # how status shows a record marked running whose process holds its live lock
KILLED = ("killed: its process ended before it could record how (SIGKILL, out of memory, a lost machine; or it failed "
          "on a full disk, which left no room for the record)")
MICROS = 1_000_000  # microseconds a second: a run id's finest unit
PLANNED = "planned"  # RunRecord.extra key from a run's start: {stage run: artifact key} of every stage run it plans
# (saerl.sweep.planned_run_keys), so `saerl gc` keeps what a run under way will reuse; removed when it ends ok, kept
# when it fails, stops or is killed: gc keeps the partial builds of the latest such run of a config, its resume state
GIT = "git"  # RunRecord.extra key: the code tags of the checkout the run ran (saerl.tracking.git_tags)
GIT_PREFIX = "saerl.git_"  # those tags' prefix: + commit, dirty, and for a dirty checkout diff, dirty_files
VERSIONS = "versions"  # RunRecord.extra key: the library versions installed at the run's start
# (saerl.artifacts.library_versions), which a relog tags (an all-cached run's manifests hold other runs' versions)
MACHINE = "machine"  # RunRecord.extra key: the machine the run started on (saerl.artifacts.build_machine)
INVOCATION = "invocation"  # RunRecord.extra key: the command that started the run (credentials masked), or its
# equivalent on the run's logged config file for a run started otherwise (a sweep child, a test, Python)
EQUIVALENT = "(equivalent) "  # how such an equivalent INVOCATION starts: its words (NEW_ROOT, ...) are placeholders,
# not what the run was given
OVERRIDE_KEY = r"[A-Za-z_]\w*(?:\.{name})?="  # how a command line's override KEY=VALUE starts: a section, then
# (:func:`override_word`) a dotted path whose last part may be a mapping entry's name, as the config takes it
# (saerl.config.SET_NAME: 'eval.sets.math-500=F', 'eval.sets.aime.2024=F')
VALUE_OPTIONS = ("--root", "--until")  # options of `saerl run` and `saerl demo` whose value is the next word (a root
# path such as 'runs=old' is no override)
UNTIL = "until"  # RunRecord.extra key: the stage the run was asked to stop after (--until), None for every stage
PREFECT_TAGS = "prefect"  # RunRecord.extra key: the Prefect flow run (and deployment) it ran in, as MLflow tags
SWEEP = "sweep"  # RunRecord.extra key of an ablation's child run: the id of its sweep (ROOT/sweeps/<id>/)
RESUMED = "resumed"  # the build note (Build.note) in which a runner that resumed an interrupted build says what it
# reused (:func:`resumed_steps_note`); run_stage leads the stage run's reason with it (else with the chunk counts)
SWEEP_PARAMS = "sweep_params"  # RunRecord.extra key of an ablation's child run: its swept keys as MLflow params
# ({'sweep.<dotted key>': value}, saerl.sweep.swept_params), for a relog to log them as the run did
SETTING = "setting"  # RunRecord.extra key of an ablation's child run: its setting's label ('mix_ratio=0.1'), or
# 'shared upstream' for the run of the stages every child shares (saerl.sweep.SHARED_LABEL)


@dataclass
class StageRecord:
    """One stage's outcome in one run."""

    stage: str
    key: str
    status: str  # "computed" or "cached"
    reason: str
    config: dict[str, Any]
    inputs: dict[str, str]
    seconds: float = 0.0
    bytes: int = 0
    path: str = ""
    code_version: str = ""  # saerl.stages.code_version of the stage when it ran ('' in records older than the field)


def new_run_id(now: float | None = None) -> str:
    """A run id (UTC) that sorts by start time to the microsecond ('20261203-134501-042137-9f2c'): runs started in
    the same second (an ablation's children) keep their order in `latest`, runs_of and gc. in: epoch
    seconds (default now); out: the id."""
    now = time.time() if now is None else now
    seconds, micro = divmod(int(round(now * MICROS)), MICROS)  # one rounding: .9999997 s is the next second's 0
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(seconds))}-{micro:06d}-{uuid.uuid4().hex[:4]}"


CLOCK_SLACK_S = 60.0  # a run whose start lies more than this ahead of the clock reads as started in the future
# (:func:`ahead_of_clock`): machines sharing a root agree to well under a second when synced; a minute of slack keeps
# a run started at the same moment elsewhere from being flagged
CLOCK_OFF = "this machine's clock or the one that ran it is off"  # why a run's start is in the future
LATEST_NOTE = ("runs are ordered by their start time (the run id), so 'latest' (status, report, export) names such a "
               "run until the clock passes its start")  # what a run that started in the future does, as status says


def ahead_of_clock(record: RunRecord, now: float | None = None) -> float:
    """How far a run's start (its record's `started`) lies ahead of the clock: a run recorded while this machine's
    clock, or that of the machine that ran it, was ahead (a VM before NTP synced, a wrong date set by hand, a copied
    root) sorts after every later run, so it stays 'latest' until the clock passes it. in: the record, the time now
    (default the current time); out: seconds ahead, 0.0 unless more than CLOCK_SLACK_S."""
    ahead = float(record.started) - (time.time() if now is None else now)
    return ahead if ahead > CLOCK_SLACK_S else 0.0


def runs_ahead(root: Path, run_id: str, now: float | None = None) -> list[RunRecord]:
    """The saved runs under `root` whose id sorts after `run_id` and that started in the future
    (:func:`ahead_of_clock`): a run starting now will not be 'latest' while they are there. Only the record files
    that sort after `run_id` are read (usually none); an unreadable one is skipped. in: artifact root, the new run's
    id, the time now (default the current time); out: their records, oldest first."""
    return [r for r in readable_runs(p for p in list_runs(root) if p.stem > run_id) if ahead_of_clock(r, now)]


def clock_warning(root: Path, run_id: str, ahead: list[RunRecord], now: float | None = None) -> str:
    """The warning a run starting under `root` logs when runs there started in the future (:func:`runs_ahead`):
    which run stays 'latest', by how much the clock reads earlier than its start, what that does and how to fix it.
    in: root, the new run's id, those runs (oldest first, at least one), the time now (default the current time);
    out: one paragraph."""
    from saerl.status import format_duration, format_time

    last = ahead[-1]
    more = f" (and {len(ahead) - 1} more runs that started in the future)" if len(ahead) > 1 else ""
    behind = format_duration(ahead_of_clock(last, now))
    return (f"this machine's clock reads {behind} earlier than the start of run {last.run_id} ({last.name}, started "
            f"{format_time(last.started)}) under {root}{more}: runs are ordered by their start time (the run id), so "
            f"'latest' (status, report, export) names that run, not this one ({run_id}), until the clock passes its "
            "start; `saerl gc` keeps that run's artifacts without counting it among the --keep-runs newest. Check this "
            "machine's clock (and that of the machine that ran it), and name this run by its id meanwhile (`saerl "
            "status --list` marks the runs that started in the future)")


class MissingStage(KeyError):
    """A stage run a run record does not hold (``record.stages["score"]``); its text (:func:`missing_stage_text`,
    made when it is read: it may read the root's run records) says which stage runs the record holds and how to pick
    a run that has the one asked for. in: the name asked for, the record's stage runs."""

    def __init__(self, name: str, stages: StageRuns | None = None) -> None:
        super().__init__(name)
        self.stages = stages

    def __str__(self) -> str:
        name = str(self.args[0]) if self.args else ""
        return repr(name) if self.stages is None else missing_stage_text(self.stages, name)


class StageRuns(dict[str, StageRecord]):
    """A run's stage records by stage run name (RunRecord.stages), in execution order: a dict whose lookup of a
    stage run the run does not hold raises MissingStage saying which it holds and how to pick a run that reached
    it, where a bare KeyError('score') said neither; `get`, `in` and iteration are a dict's. `run_id` and `root`
    (where the record was read from, when known) are what the message names."""

    run_id: str = ""
    root: Path | None = None

    def __missing__(self, name: str) -> StageRecord:
        raise MissingStage(name, self)


@dataclass
class RunRecord:
    """One pipeline run: its config name, flat config and stage outcomes in execution order (`stages`: a
    :class:`StageRuns`, whatever mapping it was given)."""

    name: str
    run_id: str = field(default_factory=lambda: new_run_id())
    started: float = field(default_factory=time.time)
    config: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, StageRecord] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        root = getattr(self.stages, "root", None)
        self.stages = StageRuns(self.stages)
        self.stages.run_id, self.stages.root = self.run_id, root

    def to_json(self) -> dict[str, Any]:
        """Plain-dict form for saving."""
        out = asdict(self)
        out["stages"] = {k: asdict(v) for k, v in self.stages.items()}
        return out


def missing_stage_text(stages: StageRuns, name: str) -> str:
    """What to say when a run's record is asked for a stage run it does not hold, with the stage runs it holds: for
    a stage with a run per arm and seed ('train'), the names of this run's ('train:saerl:0'); for a name that is no
    stage, the stage names; for a stage the run did not run (it stopped before it: --until, a failure), the newest
    run under its root that did (when the root is known: load_run), else how to find or make one. in: the run's
    stage records, the name asked for; out: one line."""
    from saerl.stages import STAGES

    stage = stage_of(name)
    head = f"run {stages.run_id or '?'} has no stage run '{name}' (it ran: {', '.join(stages) or 'none'})"
    if runs := [n for n in stages if stage_of(n) == stage]:
        return (f"{head}; a stage with a run per arm and seed names each '{stage}:ARM:SEED': ask for one of "
                f"{', '.join(runs)}")
    if stage not in STAGES:
        return f"{head}; '{stage}' is no stage: stages are {', '.join(STAGES)}"
    if stages.root is None:
        return f"{head}; pick a run that reached it (`saerl status --list` lists them): load_run(root, RUN_ID)"
    found = next((r for r in runs_of(stages.root, None, exclude=stages.run_id)
                  if any(n == name or (n.startswith(f"{name}:") and ":" not in name) for n in r.stages)), None)
    if found is None:
        return f"{head}; no run under {stages.root} has it: run `saerl run CONFIG --until {stage}` (or a whole run) first"
    return (f"{head}; the newest run under {stages.root} that has it is {found.run_id} (config {found.name}): "
            f"load_run(root, '{found.run_id}')")


def run_path(root: Path, run_id: str) -> Path:
    """The record file of run `run_id` under artifact root `root`."""
    return Path(root) / RUNS_DIR / f"{run_id}.json"


def save_run(root: Path, record: RunRecord) -> Path:
    """Write (or overwrite) a run record atomically; returns its path."""
    path = run_path(root, record.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record.to_json())
    return path


def live_path(root: Path, run_id: str) -> Path:
    """The live lock file of run `run_id` under artifact root `root`."""
    return Path(root) / RUNS_DIR / f"{run_id}{LIVE}"


@contextmanager
def live_lock(root: Path, run_id: str) -> Iterator[None]:
    """Hold run `run_id`'s live lock while its stages run, and remove the file when the block ends, once the run's
    record says it ended (:func:`record_ended`); a process that dies (SIGKILL, out of memory) loses the lock with it
    and leaves the file, which is how :func:`run_alive` tells it from a run still going. So does a run whose end
    was cut short before its record said so (a second Ctrl-C during the first's handling: the file went with the
    block, and the run read "unfinished" for ever, its MLflow run RUNNING). in: artifact root, run id; out: a
    context."""
    path = live_path(root, run_id)
    with file_lock(path):
        try:
            yield
        finally:
            if record_ended(root, run_id):
                path.unlink(missing_ok=True)


def record_ended(root: Path, run_id: str) -> bool:
    """Does run `run_id`'s saved record say the run ended (no RUNNING mark), or is there none to say otherwise?
    in: artifact root, run id; out: bool."""
    try:
        return not json.loads(run_path(root, run_id).read_text(encoding="utf-8")).get("extra", {}).get(RUNNING)
    except (OSError, ValueError):  # none, or unreadable: nothing says the run is going
        return True


def run_alive(root: Path, run_id: str) -> bool | None:
    """Is run `run_id`'s process still going? True: its live lock is held; False: the lock file is there but
    free (the process died before it could record its end); None: no lock file (the run ended and removed it, or
    it ran before runs had one). in: artifact root, run id; out: True / False / None."""
    return lock_held(live_path(root, run_id))


def unfinished(root: Path, record: RunRecord) -> str | None:
    """How a record still marked running reads (None when it is not): STILL_RUNNING while its process holds the
    live lock, KILLED once the process is gone, UNFINISHED when that cannot be told. in: root, record; out: text."""
    if not record.extra.get(RUNNING):
        return None
    alive = run_alive(root, record.run_id)
    return STILL_RUNNING if alive else KILLED if alive is False else UNFINISHED


def killed_runs(root: Path) -> list[RunRecord]:
    """The records of the runs under `root` that were killed: those :func:`unfinished` reads KILLED (still marked
    running, their live lock file left free). Only a run going or killed has a lock file, so only those records are
    read; one that is missing or not readable is skipped. in: artifact root; out: the records, oldest first."""
    killed = []
    for lock in sorted((Path(root) / RUNS_DIR).glob(f"*{LIVE}")):
        try:
            record = read_run(run_path(root, lock.name.removesuffix(LIVE)))
        except ValueError:  # no record (the run died before saving it) or an unreadable one
            continue
        if unfinished(root, record) == KILLED:
            killed.append(record)
    return killed


class UnknownRun(KeyError, ValueError):
    """No saved run record matches a run id (a KeyError for lookups, a ValueError for the CLI's error line)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def load_run(root: Path, run_id: str | RunRecord) -> RunRecord:
    """Read a saved run record (run_id may be a unique prefix, or 'latest'; a RunRecord stands for its run id) under
    `root`, each stage run's path re-rooted at `root` (:func:`relocated`: a moved or copied root is read where it is
    now, never from where it was at run time); UnknownRun when none matches, TypeError for a run id that is neither a
    str nor a RunRecord. in: artifact root, run id; out: the record (its stages' missing lookups name runs under
    `root` that have them: :class:`StageRuns`)."""
    run_id = run_id.run_id if isinstance(run_id, RunRecord) else run_id
    if not isinstance(run_id, str):
        fix = f"pass '{run_id}'" if isinstance(run_id, int) else "e.g. pass 'latest'"
        raise TypeError(f"run_id must be a str (a run id, a unique prefix of one, or 'latest') or a RunRecord, got "
                        f"{type(run_id).__name__} {run_id!r}: {fix}")
    runs = list_runs(root)
    if run_id == "latest":
        match = runs[-1:]
    else:
        match = [p for p in runs if p.stem.startswith(run_id)]
    if len(match) != 1:
        raise UnknownRun(f"no unique run '{run_id}' under {Path(root) / RUNS_DIR}: {_run_fix(runs, match)}")
    record = relocated(read_run(match[0]), Path(root))
    record.stages.root = Path(root)
    return record


def _run_fix(runs: list[Path], match: list[Path]) -> str:
    """What to do when a run id names no single record. in: the record files (oldest first), those the id
    matched; out: the fix, with the newest matching run ids (or, when none matched, the newest run ids)."""
    if not runs:
        return ("it holds no run records: run `saerl run CONFIG` first, or pass --root with the artifact root "
                "your runs wrote to (runtime.artifact_root)")
    if match:
        return f"{len(match)} runs start with it, give more of the id (newest first: " \
               f"{', '.join(p.stem for p in match[::-1][:RECENT_IDS])})"
    return f"give a run id, a unique prefix of one, or 'latest' (newest first: " \
           f"{', '.join(p.stem for p in runs[::-1][:RECENT_IDS])})"


# what a record's run id, stage keys and stage folders may be: they name files and folders under the root (a record
# in a copied root is someone else's file: '../../x' would reach out of it)
SAFE_PART = re.compile(r"[A-Za-z0-9_-]+")


# the JSON types a record's fields must have, by the kind their annotations name (a number may be written either way)
JSON_TYPES: dict[type, tuple[type, ...]] = {dict: (dict,), str: (str,), float: (int, float), int: (int, float)}


def shape_problem(data: Any, cls: type) -> str | None:
    """What is wrong with the JSON types of one record (a RunRecord's or a StageRecord's fields, as saved), or None:
    a field of the wrong type ("extra": null) was read as a record, which status, gc and report then crashed on.
    Unknown and missing fields are left to the dataclass. in: the parsed JSON, the record class; out: the problem."""
    if not isinstance(data, dict):
        return f"a {cls.__name__} must be a JSON object, not {type(data).__name__}"
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if name not in hints:
            continue
        wanted = JSON_TYPES.get(typing.get_origin(hints[name]) or hints[name])
        if wanted is not None and (isinstance(value, bool) or not isinstance(value, wanted)):
            return f"field {name!r} of a {cls.__name__} must be {' or '.join(t.__name__ for t in wanted)}, got {value!r:.60}"
    return None


def read_run(path: Path) -> RunRecord:
    """Parse one run record file; ValueError (naming the file) when it is not a readable record (not JSON, a field
    missing, unknown or of the wrong JSON type: :func:`shape_problem`), or when its run id is not its file's name
    or a run id, stage key or stage name of it is not a plain name (SAFE_PART): they become paths under the root
    (the report's HTML file, artifact folders)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if problem := shape_problem(data, RunRecord) or next(  # the stages' only once the record's are sound
                filter(None, (shape_problem(v, StageRecord) for v in data.get("stages", {}).values())), None):
            raise ValueError(problem)
        data["stages"] = {k: StageRecord(**v) for k, v in data["stages"].items()}
        record = RunRecord(**data)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"run record {path} is not readable ({err}); fix or delete it") from err
    unsafe = [p for p in (record.run_id, *(stage_of(n) for n in record.stages), *(s.key for s in record.stages.values()))
              if not SAFE_PART.fullmatch(str(p))]
    if record.run_id != Path(path).stem or unsafe:
        raise ValueError(f"run record {path} is not readable (its run id {record.run_id!r} must be its file's name, "
                         f"and ids, stage names and keys plain names: {unsafe[:3]}); fix or delete it")
    return record


def ended_at(root: Path, record: RunRecord) -> float | None:
    """When a run ended, in epoch seconds: its record's ENDED, else (a run killed before it could say, a record
    from before session 42) when its record file was last saved; None when that file is gone. in: root, record;
    out: the time or None."""
    ended = record.extra.get(ENDED)
    if isinstance(ended, int | float) and not isinstance(ended, bool):
        return float(ended)
    try:
        return run_path(root, record.run_id).stat().st_mtime
    except OSError:  # deleted meanwhile (by a person, or another gc forgetting it)
        return None


def code_summary(extra: Mapping[str, Any]) -> str:
    """The code a run ran, in words, from its record's GIT tags: 'commit 1a2b3c4d5e6f, clean', 'commit 1a2b3c4d5e6f
    with uncommitted changes (diff 0123456789ab: saerl/runners.py)', 'commit unknown (not a git checkout, or a record
    older than the field)'. in: RunRecord.extra; out: the text."""
    tags = extra.get(GIT) or {}
    commit, dirty = tags.get(GIT_PREFIX + "commit", "unknown"), tags.get(GIT_PREFIX + "dirty", "unknown")
    if commit == "unknown":
        return "commit unknown (not a git checkout, or a record older than the field)"
    if dirty == "true":
        return (f"commit {commit[:12]} with uncommitted changes (diff {tags.get(GIT_PREFIX + 'diff', 'unknown')}: "
                f"{tags.get(GIT_PREFIX + 'dirty_files', '')})")
    return f"commit {commit[:12]}, {'clean' if dirty == 'false' else 'dirty flag unknown'}"


def run_overrides(extra: Mapping[str, Any]) -> list[str]:
    """The dotted overrides (KEY=VALUE) a run was started with, in order, as its command (extra INVOCATION) gives them:
    'saerl run configs/smoke.yaml --root R curriculum.seed=3 --until curriculum' -> ['curriculum.seed=3'] (a
    deployment's '(deployment) saerl run ...' alike). [] for a run given none, a record with no command, one whose
    command is an equivalent (EQUIVALENT: a sweep child's, whose setting says what it changed; a run started from
    Python), or one whose command cannot be split into words. in: RunRecord.extra; out: the overrides, as given."""
    import shlex

    command = extra.get(INVOCATION)
    if not isinstance(command, str) or command.startswith(EQUIVALENT):
        return []
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote: say nothing rather than something wrong
        return []
    starts = override_word()
    return [word for before, word in zip(["", *words], words, strict=False)
            if before not in VALUE_OPTIONS and starts.match(word)]


@functools.cache
def override_word() -> re.Pattern[str]:
    """How a command line's override word starts (OVERRIDE_KEY): a section, then a dotted path of the names the config
    takes in it, a mapping field's entry's included (saerl.config.SET_NAME: '-' and '.' in them). saerl.config is
    imported on the first call, not with this module, which loads no pydantic. out: the compiled pattern, for
    re.match."""
    from saerl.config import SET_NAME

    return re.compile(OVERRIDE_KEY.format(name=SET_NAME.pattern))


def stage_of(run_name: str) -> str:
    """The stage (artifact folder) of a stage run's name: 'train:saerl:0' -> 'train', 'curriculum' -> itself."""
    return run_name.split(":", 1)[0]


def lineage_config(stages: dict[str, StageRecord], name: str) -> dict[str, Any]:
    """The config fields stage run `name`'s upstream stage runs read (their StageRecord.config), through its inputs
    and theirs: what its artifact depends on besides its own slice (a training run: the curriculum, score, ...
    settings; vanilla's none of the curriculum's, which it does not read). in: a run's stage records by name, the
    stage run; out: {dotted field: value}, its own slice left out ({} for a stage run not in `stages`: one that
    has not ended yet is asked through :func:`upstream_config`, with the inputs and slice it starts with)."""
    if name not in stages:
        return {}
    return upstream_config(stages, name, stages[name].inputs, stages[name].config)


def upstream_config(stages: dict[str, StageRecord], name: str, inputs: Mapping[str, Any],
                    own: Mapping[str, Any]) -> dict[str, Any]:
    """The config fields of the stage runs upstream of stage run `name`, given its `inputs` (StageRecord.inputs:
    {upstream stage run or variant field: key}) and its `own` config slice, so a stage run that starts computing,
    whose record is not in `stages` until it ends, gets the same fields as its record will give
    (:func:`lineage_config`): its nested MLflow run's params then match a cached run's. in: the records of the
    runs before it by name, the stage run, its inputs, its own slice; out: {dotted field: value}, `own`'s fields
    left out."""
    out: dict[str, Any] = {}
    seen, todo = {name}, list(inputs)
    while todo:
        up = todo.pop()
        if up in seen or up not in stages:
            continue
        seen.add(up)
        out |= stages[up].config
        todo += list(stages[up].inputs)
    return {k: v for k, v in out.items() if k not in own}


def ordered_stages(record: RunRecord) -> list[StageRecord]:
    """The run's stage runs in pipeline order (a saved record's JSON keeps them sorted by name; arms and seeds
    of one stage keep their recorded order)."""
    from saerl.pipeline import ORDER

    rank = {stage: i for i, stage in enumerate(ORDER)}
    return sorted(record.stages.values(), key=lambda r: rank.get(stage_of(r.stage), len(ORDER)))  # stable


def artifact_dir(root: Path, run_name: str, key: str) -> Path:
    """Where a stage run's artifact lives under `root` (found from the root, so a moved root still works)."""
    return Path(root) / stage_of(run_name) / key


def relocated(record: RunRecord, root: Path) -> RunRecord:
    """The record with each stage run's path under `root` (`root/<stage>/<key>`, where the artifact store keeps
    it) instead of the absolute path saved at run time, so a moved or copied artifact root is read where it is
    now, never from the old location."""
    stages = {n: replace(s, path=str(artifact_dir(root, n, s.key))) for n, s in record.stages.items()}
    return replace(record, stages=stages)


def list_runs(root: Path) -> list[Path]:
    """Saved run record files, oldest first."""
    folder = Path(root) / RUNS_DIR
    return sorted(folder.glob("*.json")) if folder.exists() else []


def runs_of(root: Path, name: str | None, exclude: str | None = None) -> Iterator[RunRecord]:
    """The saved runs of config `name` (None: of every config; other than `exclude`), newest first. A record that is
    not readable (:func:`read_run`; `saerl status --list` lists it as such) is skipped."""
    for record in readable_runs(p for p in reversed(list_runs(root)) if p.stem != exclude):
        if name is None or record.name == name:
            yield record


def readable_runs(paths: Iterable[Path]) -> Iterator[RunRecord]:
    """The records of the run record files `paths`, in their order, each read when reached; a record that is not
    readable (:func:`read_run`'s ValueError; `saerl status --list` lists it as such) is skipped. in: record files
    (:func:`list_runs`' paths, those a caller wants); out: their readable records."""
    for path in paths:
        try:
            yield read_run(path)
        except ValueError:
            continue


def previous_stage_runs(root: Path, name: str, wanted: Iterable[str] | None = None,
                        exclude: str | None = None) -> dict[str, StageRecord]:
    """Per stage run, its record in the newest saved run of config `name` (other than `exclude`) that ran it: the
    newest run alone misses every stage it did not reach (an `--until score` run, a sweep's shared upstream run,
    a failed run), and a recompute after it was explained as "no earlier run of this config ran this stage".
    Unreadable records are skipped (:func:`runs_of`). in: artifact root, config name, the stage run names
    wanted (the search stops once each is found; None: every record is read), a run id to leave out;
    out: {stage run name: StageRecord}."""
    wanted_set = None if wanted is None else set(wanted)
    found: dict[str, StageRecord] = {}
    for record in runs_of(root, name, exclude):
        for stage, rec in relocated(record, root).stages.items():  # its artifact where the store keeps it now
            found.setdefault(stage, rec)
        if wanted_set is not None and wanted_set <= set(found):
            break
    return found


def recorded_builds(root: Path, exclude: str | None = None) -> dict[tuple[str, str], str]:
    """Which saved run (of any config; other than `exclude`) last computed or reused each artifact: a stage run
    recomputed under a key a record names had its artifact removed (collected by `saerl gc`, deleted by hand), which
    its reason says (:func:`gone_note`), not a config change against another run. in: artifact root, a run id to
    leave out; out: {(stage, key): run id}, the newest run per artifact."""
    out: dict[tuple[str, str], str] = {}
    for record in runs_of(root, None, exclude):
        for name, rec in record.stages.items():
            if rec.status in ("computed", "cached"):
                out.setdefault((stage_of(name), rec.key), record.run_id)
    return out


def gone_note(run_id: str) -> str:
    """The reason of a stage run whose artifact an earlier run (`run_id`) built or reused and which is no longer
    stored. in: that run's id; out: the reason."""
    return f"computed: its artifact, which run {run_id} had, is gone (collected by `saerl gc`, or deleted)"


_ABSENT = object()  # a field missing from a config slice (the stage does not read it under that config)


def _diff_dicts(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


def field_change(name: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    """How one config field of a stage's slice changed, for a recompute's reason: 'sae.k 32->64'; a field the stage
    stopped reading under the new config ('sae.l1_coefficient (not read under this config)': saerl.stages
    unread_fields drops it from the slice, e.g. under sae.architecture=topk) or started reading ('sae.k 32 (not read
    under the earlier config)'). in: the dotted field, the earlier run's slice, this run's slice; out: the text."""
    if name not in new:
        return f"{name} (not read under this config)"
    if name not in old:
        return f"{name} {new[name]!r} (not read under the earlier config)"
    return f"{name} {old[name]!r}->{new[name]!r}"


def resumed_steps_note(step: int, total: int) -> str:
    """What a training run that resumed an interrupted one from its newest checkpoint reused, leading its reason:
    'resumed an interrupted training run from step 40 of 100'. in: the checkpoint's step, the steps the run was
    to train (train.max_steps); out: the note."""
    return f"resumed an interrupted training run from step {step} of {total}"


def resumed_note(done: int, total: int) -> str:
    """What a stage run that resumed an interrupted build (killed, stopped or failed) reused, leading its reason:
    'resumed an interrupted build: 37 of 40 chunks were already done' ('' when it reused none). in: the chunks its
    chunk log recorded when the compute started that were unchanged when it published (saerl.artifacts.reused_chunks:
    records found among the build's chunks, so at most `total`), the build's chunks when it published; out: the
    note."""
    if done <= 0:
        return ""
    return f"resumed an interrupted build: {min(done, total)} of {total} chunks were already done"


def explain(
    stage: str, computed: bool, config: dict[str, Any], inputs: dict[str, str],
    previous: Mapping[str, StageRecord], note: str = "", waited: float = 0.0, resumed: str = "",
    code: str | None = None, drift: str = "", code_drift: str = "",
) -> str:
    """Why a stage was computed or reused, relative to the same stage run in an earlier run of the same config
    name. `previous`: {stage run: StageRecord} of earlier runs (:func:`previous_stage_runs`: the newest earlier
    run of each stage; a run record's `stages` for one run); `note`: a computed run's reason found before it ran
    (its stored artifact failed verification), said instead of the comparison; `waited`: seconds a reused one
    waited for another process building it; `resumed`: what a computed run that resumed an interrupted build reused
    (StageResult.resumed: :func:`resumed_note`, :func:`resumed_steps_note`), said first, before the rest of the
    reason; '' reads as a build from scratch; `code`: the stage's code version in this run (None: looked up,
    :func:`current_code_version`), compared with the earlier run's (:func:`code_change`); `drift`: for a reused
    artifact, the libraries it was built with whose installed versions differ now (saerl.artifacts.version_drift);
    `code_drift`: for a reused artifact, how the code that built it differs from this run's (another commit,
    uncommitted changes: saerl.artifacts.code_drift)."""
    if not computed and waited:
        return f"cached: built by another process meanwhile (waited {waited:.0f} s for it)"
    if not computed:
        return "cached: same code version, inputs and config as a stored artifact" + (
            f"; built by other code: {code_drift}" if code_drift else "") + (
            f"; built with other library versions: {drift}" if drift else "")
    why = note or "computed: " + _changes(stage, config, inputs, previous, code)
    return f"computed: {resumed}; {why.removeprefix('computed: ')}" if resumed else why


def stage_record(
    name: str, key: str, computed: bool, config: dict[str, Any], inputs: dict[str, str],
    previous: Mapping[str, StageRecord], *, built: Mapping[str, Any], installed: dict[str, str],
    code: dict[str, Any], seconds: float, size: int, path: str, note: str = "", waited: float = 0.0,
    resumed: str = "",
) -> StageRecord:
    """The record of one stage run, as the flow (flows.pipeline) and a run of run_all (saerl.report.record_results)
    keep it: computed or cached, why (:func:`explain`, relative to `previous`), and for a reused artifact how the
    libraries and code it was built with differ from this run's (saerl.artifacts.version_drift, code_drift; a computed
    one names none). in: stage run name ('train:saerl:0'), its artifact key, whether this run built it, its config
    slice and input keys, the earlier runs' records (:func:`previous_stage_runs`); `built`: the artifact's manifest
    (read only for a cached one: {} will do for a computed one), `installed`: this run's library versions
    (saerl.artifacts.library_versions), `code`: its code state (saerl.artifacts.build_code); its seconds, bytes on
    disk and folder; `note`, `waited`, `resumed` as :func:`explain` reads them. out: the StageRecord, whose
    code_version is the stage's now (:func:`current_code_version`: a cached artifact's key holds the same, and a
    computed one was just built by it)."""
    drift = "" if computed else version_drift(built.get("library_versions"), installed)
    other_code = "" if computed else code_drift(built.get("git"), code)
    return StageRecord(stage=name, key=key, status="computed" if computed else "cached",
                       reason=explain(name, computed, config, inputs, previous, note, waited, resumed,
                                      drift=drift, code_drift=other_code),
                       config=config, inputs=inputs, code_version=current_code_version(name),
                       seconds=seconds, bytes=size, path=path)


def current_code_version(stage: str) -> str:
    """The code version (saerl.stages.code_version) a stage run's artifacts are built by now, '' for a name that is
    no pipeline stage. in: stage run name ('train:saerl:0'); out: the version ('12+verify1')."""
    from saerl.stages import STAGES, code_version

    name = stage_of(stage)
    return code_version(name) if name in STAGES else ""


def earlier_code_version(prev: StageRecord) -> str:
    """The code version an earlier stage run was built by: its record's `code_version`, or, for a record older than
    that field, the `code_version` in the manifest of the artifact it names (still there unless collected); '' when
    neither says. in: the earlier StageRecord; out: the version."""
    if prev.code_version:
        return prev.code_version
    if not prev.path:
        return ""
    from saerl.artifacts import read_manifest

    return str(read_manifest(Path(prev.path)).get("code_version", ""))


def code_change(stage: str, old: str, new: str) -> str:
    """How a stage's code version changed, for a recompute's reason: 'code changed: ingest version 9 -> 10', and for
    a verifying stage's verifier part ('10+verify1', saerl.stages.code_version) 'verifier version 1 -> 2'; '' when
    either is unknown or they are equal. in: stage run name, the earlier and the current code version; out: the
    text."""
    from saerl.stages import VERIFY_PART

    if not old or not new or old == new:
        return ""
    old_own, _, old_verify = old.partition(VERIFY_PART)
    new_own, _, new_verify = new.partition(VERIFY_PART)
    parts = [f"{stage_of(stage)} version {old_own} -> {new_own}"] if old_own != new_own else []
    if old_verify != new_verify:
        parts.append(f"verifier version {old_verify or 'none'} -> {new_verify or 'none'}")
    return "code changed: " + ", ".join(parts)


DROPPED_SHOWN = 3  # fields a stage's code no longer reads, named in a recompute's reason before 'and N more'


def declared_read(stage: str, field: str) -> bool:
    """Whether this code's stage (of a stage run's name) declares reading `field` (saerl.stages reads prefixes),
    under some config. in: stage run name, dotted field; out: bool."""
    from saerl.config import under
    from saerl.stages import STAGES

    name = stage_of(stage)
    return name in STAGES and under(field, STAGES[name].reads)


def _changes(stage: str, config: dict[str, Any], inputs: dict[str, str], previous: Mapping[str, StageRecord],
             code: str | None = None) -> str:
    """What differs from the stage run's newest earlier run (:func:`explain`): the stage's code version, changed config
    fields and input artifacts, that no earlier run ran it, or, when nothing differs, that the stored artifact was
    missing or corrupt (adding that the code version may have changed when the earlier version is unknown).
    in: stage run name, its config slice and input keys, the earlier runs' records, its code version now (None:
    looked up); out: the text (no prefix)."""
    prev = previous.get(stage)
    if prev is None:
        return "no earlier run of this config ran this stage"
    new_code = current_code_version(stage) if code is None else code
    old_code = earlier_code_version(prev)
    changed_fields = _diff_dicts(prev.config, config)
    dropped = [k for k in changed_fields if k not in config and not declared_read(stage, k)]
    changed_fields = [k for k in changed_fields if k not in dropped]
    changed_inputs = _diff_dicts(prev.inputs, inputs)
    change = code_change(stage, old_code, new_code)
    parts = [change] if change else []
    if changed_fields:
        parts.append("config changed: " + ", ".join(field_change(k, prev.config, config) for k in changed_fields))
    if dropped:  # the stage's new code reads fewer fields: named in brief, not one '(not read ...)' each
        more = f" and {len(dropped) - DROPPED_SHOWN} more" if len(dropped) > DROPPED_SHOWN else ""
        parts.append(f"fields this stage no longer reads: {', '.join(dropped[:DROPPED_SHOWN])}{more}")
    if changed_inputs:
        parts.append("input changed: " + ", ".join(changed_inputs))
    if not parts:
        unknown = not old_code or not new_code
        parts.append("stored artifact was missing or corrupt" +
                     (" (or the stage's code version changed)" if unknown else ""))
    return "; ".join(parts)
