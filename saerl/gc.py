"""Garbage collection of the artifact root, for `saerl gc`: remove what no recent run references.

Kept, always: every artifact a stage run of the `keep_runs` newest records of ended runs names (by stage and key),
and every one a run still going names or plans (its record is saved when it starts, with the key of every stage run
it plans, and after each stage; a long run that newer runs overtook reads what it finished days ago in its later
stages; a run still going takes no place among the newest; a run killed before it could record its end is told by
its free live lock and counts as ended); every one a run that started in the future names (saerl.runs
ahead_of_clock: recorded while a clock was ahead; its id sorts after every later run's), and the partial builds of
what it planned when it did not end ok, without a place among the newest, so it never pushes out the runs that
really ended last (unless `keep_runs` is 0); anything whose build lock another process holds (a build in progress);
anything younger than `min_age_hours`. Besides the newest (unless `keep_runs` is 0), per config name
(RunRecord.name) and apart for its ablations' children, all its sweeps together (:func:`lineage`): every artifact of
the latest complete run (ended ok with the pipeline's last stage, FINAL_STAGE, recorded: not cut short by `--until`),
which `--until` runs, sweep children, failed and killed runs pushed out of the newest places (hours of training on a
real model: what the config's next run reuses); and the unfinished builds (`.partial-<key>/`: resume state,
a training run's checkpoints) of every stage run that the latest run that did not end ok (failed, stopped or
killed) planned, unless a newer run of it is complete (RunRecord.extra PLANNED, which a record keeps unless its run
ended ok; a record without it, from before session 36, keeps nothing by this rule), not its finished artifacts. Removed: the other finished artifacts
(`<root>/<stage>/<key>/`), unfinished builds (`.partial-<key>/`, so their resume state goes too) and
leftovers of replaced artifacts (`.trash-<key>-<pid>/`), and the orchestrator's cache record of a stage run
(`prefect-results/<stage>-<key>`) once its artifact is gone (removed now or before; same age rule). Nothing else
is touched by default: run records, the MLflow store and Prefect's home stay. Asked to (`forget_days`, `saerl gc
--forget-runs-older-than-days D`), a collection first forgets, for good, the runs that ended at least D days ago and
that the rules above keep nothing of (:func:`forgettable`: never a run still going, one of the `keep_runs` newest,
nor the latest complete or resumable run of a config name or of its sweeps: one each, so a root that sweeps every
day is bounded too): their MLflow runs (the parent and its nested
stage runs, found by the run id: deleted, and in a SQLite store under the root, the root's own, purged as `mlflow gc
--run-ids` purges them, logged files and rows; another store, a tracking server's, only deletes them, its own `mlflow
gc` purges them; a store that fails keeps its runs for a later collection), their Prefect flow runs (a step the
command line gives, flows.forget: Prefect is not the library's), their run records and live lock files, their
report pages (`<root>/reports/<run id>.html`), the folder of each sweep none of whose runs is left, and each MLflow
experiment (named by a config, never 'Default') that no run is left in, deleted and, in the root's store, purged
(:func:`forget_runs`); their artifacts then go by the rules above, as they kept nothing. Asked to (`vacuum_dbs`,
`saerl gc --vacuum`), a collection last compacts the root's SQLite files (mlflow.db, and prefect/prefect.db through
the command line), refused in one line while a run goes on the root or another process (a local Prefect server)
holds one open (:func:`vacuum`). Lock files (`.lock-<key>`, empty) stay as well: deleting a lock
file another process has open would let two builders of one key both think they hold it.

A removal takes the key's lock without waiting, renames the folder to a trash name (so it vanishes in one
step) and then deletes it; a removal cut short leaves a trash folder the next collection takes.
Not protected: an old artifact that only a pipeline still running reuses, when that pipeline's record predates
planned keys (session 29) or was not written yet (the moment between its start and its first save); anything
`saerl.pipeline.run_all` (benchmarks, notebooks) reuses, as it writes no run record: the age rule alone covers it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saerl.tracking import ForgottenRuns

from saerl.artifacts import CACHE_RECORDS_DIR, MANIFEST, file_lock, lock_held
from saerl.runs import (
    CLOCK_OFF,
    FAILED,
    KILLED,
    PLANNED,
    RUNS_DIR,
    SETTING,
    STILL_RUNNING,
    STOPPED,
    SWEEP,
    UNFINISHED,
    RunRecord,
    ahead_of_clock,
    ended_at,
    list_runs,
    live_path,
    read_run,
    readable_runs,
    run_path,
    runs_of,
    stage_of,
    unfinished,
)
from saerl.stages import STAGES
from saerl.status import MB, format_duration

KEEP_RUNS = 20  # run records whose artifacts are kept by default
MIN_AGE_HOURS = 24.0  # artifacts younger than this are kept by default (a running pipeline's)
SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 24 * SECONDS_PER_HOUR
PARTIAL_PREFIX = ".partial-"  # the artifact store's names inside a stage folder (saerl.artifacts)
TRASH_PREFIX = ".trash-"
LOCK_PREFIX = ".lock-"
GC_LOCK = ".gc.lock"  # <root>/<this>: a collection holds it exclusive, a run saving its first record shared
FINAL_STAGE = next(reversed(STAGES))  # the pipeline's last stage (evaluate): a run that recorded it was not cut short
ENDED_OK = "ok"  # how a run ended (:func:`ended_how`): done, every stage it planned recorded
ENDED_KILLED = "killed"  # its process died before its record said how it ended (saerl.runs.KILLED)
Key = tuple[str, str]  # (stage, artifact key)
VACUUM_BUSY_TIMEOUT_S = 30.0  # how long `--vacuum` waits for another connection's write to end (SQLite's busy timeout)
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")  # what SQLite keeps beside a database (<db><suffix>) while it is used
PROC = Path("/proc")  # Linux's process table: which process holds a file open (/proc/<pid>/fd)
COMMAND_CHARS = 80  # of a process's command line, in a line naming it
SWEEPS_LINEAGE = "{name} (sweeps)"  # :func:`lineage` of an ablation's child: one for every sweep of its config name


@contextmanager
def claim(root: Path, on_wait: Callable[[], None] | None = None) -> Iterator[float]:
    """Hold the root's gc lock shared for the block: a run saves its first record (what it will build or reuse)
    under it, so a collection under way finishes first (and the run's reuse checks come after it: anything it
    removed is rebuilt) or starts after the record (and keeps what it names); a collection read the records once
    and then removed what a run starting meanwhile had found and went on to read. in: artifact root, `on_wait`
    (called once when a collection holds the lock); out: a context giving the seconds waited."""
    with file_lock(Path(root) / GC_LOCK, on_wait, shared=True) as waited:
        yield waited


@dataclass(frozen=True)
class Entry:
    """One removable folder under a stage folder (kind 'artifact', 'partial' or 'trash'), or the cache record file of
    a stage run (kind 'record', see :func:`orphan_records`)."""

    stage: str
    key: str
    kind: str
    path: Path
    bytes: int
    mtime: float


@dataclass(frozen=True)
class KeptRun:
    """A run kept besides the newest, per config name and apart for its sweeps' children (:func:`lineage`): the
    latest complete run (every artifact it names), or the latest run that did not end ok (the unfinished builds of
    what it planned: its resume state)."""

    name: str  # its config name (RunRecord.name)
    run_id: str
    ended: str  # how it ended (:func:`ended_how`): ENDED_OK, FAILED, STOPPED or ENDED_KILLED
    keys: frozenset[Key]  # what it keeps: its stage runs' artifacts, or the planned keys whose partial builds stay
    newest: bool  # whether it is among the keep_runs newest ended runs anyway
    ahead: float = 0.0  # seconds its start lies ahead of the clock, for a run that started in the future (kept apart)
    sweep: str = ""  # for an ablation's child: its sweep's id and setting ('sweep <id>, setting mix_ratio=0.6'), which
    # the report names (:func:`kept_run_line`); '' for a plain run


@dataclass
class Kept:
    """What the run records keep (:func:`kept_runs`): artifact keys kept whole (with their partial builds), keys
    whose partial build alone is kept, and the runs that keep them."""

    keys: set[Key]
    partials: set[Key]
    runs_kept: int  # the newest ended runs
    running_kept: int  # runs still going, whose artifacts (recorded and planned) are kept too
    complete: list[KeptRun] = field(default_factory=list)  # the latest complete run per config name and its sweeps
    resumable: list[KeptRun] = field(default_factory=list)  # the latest per config name and its sweeps not ended ok
    future: list[KeptRun] = field(default_factory=list)  # ended runs that started in the future, kept apart


# forgets the Prefect flow runs of saerl runs: (root, the runs forgotten, the runs kept, dry run) -> the report's
# line (flows.forget.forget_flow_runs: Prefect is the command line's business, never the library's)
PrefectForget = Callable[[Path, list[RunRecord], list[RunRecord], bool], str]


@dataclass
class Forgotten:
    """What forgetting old runs did (or, in a dry run, would do): :func:`forget_runs`."""

    days: float  # runs that ended at least this many days ago were forgotten (unless kept)
    runs: list[str] = field(default_factory=list)  # the saerl run ids forgotten
    sweeps: list[str] = field(default_factory=list)  # sweep ids whose folder went (every child forgotten)
    record_bytes: int = 0  # their run records, live lock files and sweep folders
    reports: list[Path] = field(default_factory=list)  # their report pages under <root>/reports/ (:func:`run_reports`)
    report_bytes: int = 0
    stores: list[ForgottenRuns] = field(default_factory=list)  # per MLflow store: its runs deleted (saerl.tracking)
    held: list[str] = field(default_factory=list)  # one line per MLflow store that failed: its runs stay, for a later
    # collection to forget
    prefect: str = ""  # what happened to their Prefect flow runs ('' when nobody asked)


@dataclass(frozen=True)
class Database:
    """A SQLite file of the root that `saerl gc --vacuum` compacts: the root's MLflow store (:func:`mlflow_database`)
    or its Prefect home's (flows.server.prefect_database: Prefect is not the library's), with the lock file that a
    process about to open it takes first (held while it is compacted: a run's tracker, a local server starting,
    waits)."""

    what: str  # for the report: 'MLflow', 'Prefect'
    path: Path
    lock: Path


@dataclass
class Vacuumed:
    """What `saerl gc --vacuum` did (or, in a dry run, would do): :func:`vacuum`."""

    refused: str = ""  # the one line saying why nothing was compacted ('' when it went)
    done: list[tuple[Database, int, int]] = field(default_factory=list)  # (file, bytes before, bytes after; in a dry
    # run the bytes of its free pages, which VACUUM gives back)
    failed: list[str] = field(default_factory=list)  # a line per file SQLite could not compact (it stays as it was)


@dataclass
class GcReport:
    """What a collection removed (or, in a dry run, would remove) and what it kept and why."""

    removed: list[Entry] = field(default_factory=list)
    referenced: list[Entry] = field(default_factory=list)
    locked: list[Entry] = field(default_factory=list)
    young: list[Entry] = field(default_factory=list)
    runs_kept: int = 0
    running_kept: int = 0  # records of runs still going, whose artifacts (recorded and planned) are kept too
    complete: list[KeptRun] = field(default_factory=list)  # the latest complete run per config name, kept whole
    resumable: list[KeptRun] = field(default_factory=list)  # the latest per config name that failed, stopped or
    # was killed: the partial builds of what it planned are kept
    future: list[KeptRun] = field(default_factory=list)  # ended runs that started in the future: kept whole, apart
    # from the newest (their ids sort after the runs that really ended last)
    dry_run: bool = False
    min_age_hours: float = MIN_AGE_HOURS
    forgotten: Forgotten | None = None  # old runs forgotten first (`--forget-runs-older-than-days`), or None
    vacuumed: Vacuumed | None = None  # the root's SQLite files compacted last (`--vacuum`), or None

    @property
    def freed(self) -> int:
        """Bytes removed (or that would be)."""
        return sum(e.bytes for e in self.removed)


def tree_stats(folder: Path) -> tuple[int, float]:
    """(total bytes of every file, newest mtime of the folder or any file under it) of a folder."""
    size, newest = 0, folder.stat().st_mtime
    for p in folder.rglob("*"):
        try:
            st = p.lstat()
        except FileNotFoundError:  # removed while we looked
            continue
        newest = max(newest, st.st_mtime)
        if p.is_file():
            size += st.st_size
    return size, newest


def parse_entry(stage: str, folder: Path) -> Entry | None:
    """An Entry for one child of a stage folder, or None for what gc never touches (lock and temp files) and for a
    folder that moved away while it was read (a build published meanwhile: the next collection sees it)."""
    if not folder.is_dir() or folder.is_symlink():
        return None
    name = folder.name
    if name.startswith(PARTIAL_PREFIX):
        kind, key = "partial", name.removeprefix(PARTIAL_PREFIX)
    elif name.startswith(TRASH_PREFIX):
        kind, key = "trash", name.removeprefix(TRASH_PREFIX).rsplit("-", 1)[0]
    elif name.startswith("."):
        return None
    else:
        kind, key = "artifact", name
    try:
        size, newest = tree_stats(folder)
        manifest = folder / MANIFEST
        if kind == "artifact" and manifest.exists():  # its age is when it was published
            newest = manifest.stat().st_mtime
    except FileNotFoundError:  # moved or removed while we looked (a build publishing takes no notice of gc)
        return None
    return Entry(stage, key, kind, folder, size, newest)


def scan(root: Path) -> list[Entry]:
    """Every artifact, partial build and trash folder under the stage folders of `root`, sorted by path."""
    out = []
    for stage in STAGES:
        folder = Path(root) / stage
        if folder.is_dir():
            out.extend(e for child in sorted(folder.iterdir()) if (e := parse_entry(stage, child)) is not None)
    return out


def orphan_records(root: Path, gone: set[tuple[str, str]]) -> list[Entry]:
    """The cache records (`<root>/prefect-results/<stage>-<key>`) of stage runs whose artifact folder is missing or
    in `gone` (removed by this collection), sorted by path; a file whose name names no stage is not one.
    in: artifact root, {(stage, key)} being removed; out: their Entries (kind 'record')."""
    folder = Path(root) / CACHE_RECORDS_DIR
    out = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        stage, _, key = path.name.partition("-")
        if stage not in STAGES or not key or not path.is_file() or path.is_symlink():
            continue
        if (stage, key) in gone or not (Path(root) / stage / key).is_dir():
            try:
                st = path.stat()
            except FileNotFoundError:  # removed while we looked
                continue
            out.append(Entry(stage, key, "record", path, st.st_size, st.st_mtime))
    return out


def ended_how(root: Path, record: RunRecord) -> str | None:
    """How a run ended: ENDED_OK, FAILED (an error), STOPPED (Ctrl-C, SIGTERM) or ENDED_KILLED (marked running, its
    live lock left free: its process died before its record said, SIGKILL, out of memory); None for a run still
    going, as far as can be told (saerl.runs.unfinished: marked running and its live lock held, or a run from before
    live locks, whose process cannot be checked). in: root, record; out: the label."""
    state = unfinished(root, record)
    if state in (STILL_RUNNING, UNFINISHED):
        return None
    if state == KILLED:
        return ENDED_KILLED
    return FAILED if record.extra.get(FAILED) else STOPPED if record.extra.get(STOPPED) else ENDED_OK


def is_complete(record: RunRecord) -> bool:
    """Did an ended-ok run go through the whole pipeline: did it record a run of its last stage (FINAL_STAGE), which a
    run cut short by `--until` (a preview, a sweep's shared upstream run) does not? in: record; out: the verdict."""
    return any(stage_of(name) == FINAL_STAGE for name in record.stages)


def stage_keys(record: RunRecord) -> frozenset[Key]:
    """{(stage, key)} of a record's stage runs."""
    return frozenset((stage_of(name), s.key) for name, s in record.stages.items())


def planned_keys(record: RunRecord) -> frozenset[Key]:
    """{(stage, key)} of the stage runs a record plans (RunRecord.extra PLANNED; empty when it holds none, or
    something other than {stage run: key})."""
    planned = record.extra.get(PLANNED)
    return frozenset((stage_of(name), key) for name, key in planned.items()) if isinstance(planned, dict) else frozenset()


KeptRecords = tuple[list[RunRecord], list[RunRecord], dict[str, RunRecord], dict[str, tuple[RunRecord, str]],
                    list[tuple[RunRecord, str]]]  # what :func:`kept_records` finds


def kept_records(root: Path, keep_runs: int, by_lineage: bool | None = None, now: float | None = None) -> KeptRecords:
    """Read every run record, newest first: (the `keep_runs` newest ended (every one when negative), every one still
    going, {lineage: its latest complete run}, {lineage: (its latest run that did not end ok, how), unless a newer
    run of it is complete}, [(every ended run that started in the future, how)]); the lineage two are empty when
    `by_lineage` is False, which it is by default when keep_runs is 0 (:func:`lineage`: the config name, or for an
    ablation's child its config name's sweeps, every sweep of it together). A run under way takes no place among the
    newest: a long run, or gc run during one, would otherwise push out an ended run whose artifacts were kept. Nor does an ended run that started
    in the future (saerl.runs.ahead_of_clock, against `now`): its id sorts after the runs that really ended last,
    which it would push out; it is not its lineage's latest either. A record that cannot be read is an
    error while places among the newest are left (what it references is unknown), and passed over after them.
    in: root, runs to keep, whether to find each lineage's latest runs (None: unless keep_runs is 0), the time now
    (default the current time); out: the five."""
    by_lineage = keep_runs != 0 if by_lineage is None else by_lineage
    now = time.time() if now is None else now
    ended: list[RunRecord] = []
    going: list[RunRecord] = []
    complete: dict[str, RunRecord] = {}
    resumable: dict[str, tuple[RunRecord, str]] = {}
    future: list[tuple[RunRecord, str]] = []
    for path in list_runs(root)[::-1]:
        open_place = keep_runs < 0 or len(ended) < keep_runs
        try:
            record = read_run(path)
        except ValueError:
            if open_place:
                raise
            continue
        how = ended_how(root, record)
        if how is None:
            going.append(record)
            continue
        if ahead_of_clock(record, now):
            future.append((record, how))
            continue
        if open_place:
            ended.append(record)
        if not by_lineage:
            continue
        line = lineage(record)
        if how == ENDED_OK and is_complete(record):
            complete.setdefault(line, record)
        elif how != ENDED_OK and line not in complete:  # a newer complete run of its line left its checkpoints stale
            resumable.setdefault(line, (record, how))
    return ended, going, complete, resumable, future


def lineage(record: RunRecord) -> str:
    """What gc keeps a latest run of (:func:`kept_records`): a plain run's config name ('demo'), or for an ablation's
    child its config name's sweeps, every sweep of that config together ('demo (sweeps)', SWEEPS_LINEAGE). Apart,
    since a sweep's children carry their base config's name: the last child of a sweep was 'the latest complete run
    of demo' and a plain run of demo lost its trained policies to it. Together, since a lineage per sweep pinned the
    last child of every complete sweep for good (its trained policies, run record, MLflow runs and sweep folder),
    whatever `--keep-runs` and `--forget-runs-older-than-days` said: a root that sweeps on a schedule grew without
    bound. The pin keeps what the config's next run reuses (trained policies, evaluations): for a plain run the
    latest complete plain run's, for the next sweep the newest sweep's last complete child's; an older sweep's
    children are kept like any run, while among the `keep_runs` newest. in: a record; out: the name."""
    return SWEEPS_LINEAGE.format(name=record.name) if record.extra.get(SWEEP) else record.name


def sweep_label(record: RunRecord) -> str:
    """How the report names an ablation child's place (KeptRun.sweep): 'sweep <id>, setting mix_ratio=0.6' (its
    SETTING when it has one); '' for a plain run. in: a record; out: the label."""
    sweep = record.extra.get(SWEEP)
    if not sweep:
        return ""
    setting = record.extra.get(SETTING)
    return f"sweep {sweep}, setting {setting}" if setting else f"sweep {sweep}"


def kept_runs(root: Path, keep_runs: int, now: float | None = None) -> Kept:
    """What the run records keep: whole, every (stage, key) named by the `keep_runs` newest records of ended runs,
    by the latest complete run of each config name and of its sweeps (:func:`lineage`, :func:`is_complete`), by
    every run still going (its stage runs so far and every one it plans: RunRecord.extra PLANNED, saved when it
    starts: an old artifact it will reuse later is not in its stage runs yet) and by every ended run that started in
    the future (against `now`: kept apart from the newest, :func:`kept_records`); the partial builds alone of every
    (stage, key) that the latest run of each config name (or of its sweeps) that did not end ok plans (its resume
    state), and that a run that started in the future and did not end ok plans. With keep_runs 0 no ended run keeps
    anything.
    in: root, runs to keep, the time now (default the current time); out: a Kept (:func:`kept_records`)."""
    now = time.time() if now is None else now
    ended, going, complete, resumable, future = kept_records(root, keep_runs, now=now)
    future = future if keep_runs != 0 else []
    newest = {r.run_id for r in ended}
    keys = {k for r in [*ended, *going, *complete.values(), *(r for r, _ in future)] for k in stage_keys(r)}
    keys |= {k for r in going for k in planned_keys(r)}
    wholes = [KeptRun(r.name, r.run_id, ENDED_OK, stage_keys(r), r.run_id in newest, sweep=sweep_label(r))
              for r in complete.values()]
    partly = [KeptRun(r.name, r.run_id, how, planned_keys(r), r.run_id in newest, sweep=sweep_label(r))
              for r, how in resumable.values()]
    partials = {k for r in partly for k in r.keys}
    partials |= {k for r, how in future if how != ENDED_OK for k in planned_keys(r)}
    ahead = [KeptRun(r.name, r.run_id, how, stage_keys(r), False, ahead_of_clock(r, now)) for r, how in future]
    return Kept(keys, partials, len(ended), len(going), sorted(wholes, key=_line_order),
                sorted(partly, key=_line_order), ahead)


def _line_order(run: KeptRun) -> tuple[str, bool]:
    """The report's order of kept runs: by config name, a plain run before the one of its sweeps. in: a KeptRun;
    out: the sort key."""
    return run.name, bool(run.sweep)


@contextmanager
def try_lock(root: Path, stage: str, key: str, create: bool = True) -> Iterator[bool]:
    """Hold the build lock of (stage, key) if it is free, without waiting: yields True when held, False
    when another process holds it. With create=False a missing lock file counts as free and is not made."""
    path = Path(root) / stage / f"{LOCK_PREFIX}{key}"
    if not create and not path.exists():
        yield True
        return
    with open(path, "a", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove(entry: Entry) -> None:
    """Rename a folder to a trash name in its stage folder, then delete it; unlink a cache record (call under the
    key's lock)."""
    if entry.kind == "record":
        entry.path.unlink(missing_ok=True)
        return
    target = entry.path
    if entry.kind != "trash":
        target = entry.path.with_name(f"{TRASH_PREFIX}{entry.key}-{os.getpid()}")
        os.replace(entry.path, target)
    shutil.rmtree(target)


def collect(root: Path, keep_runs: int = KEEP_RUNS, dry_run: bool = False, min_age_hours: float = MIN_AGE_HOURS,
            now: float | None = None, forget_days: float | None = None,
            forget_prefect: PrefectForget | None = None, vacuum_dbs: list[Database] | None = None) -> GcReport:
    """Remove (or with dry_run only list) every artifact, partial build and trash folder under `root` that no kept
    record references (:func:`kept_runs`: the `keep_runs` newest records of ended runs, the latest complete run of
    each config name and of its sweeps, every run still going, with what it plans; a partial build of such a key is kept too: a run
    going now may resume it; and the partial builds of what the latest run of each config name that failed, was
    stopped or was killed planned: its resume state), that no build
    holds the lock of, and that is at least `min_age_hours` old; ValueError when the root has no run records (unless
    keep_runs is 0). With `forget_days` (None: no run is forgotten), first forget the runs that ended that many days
    ago and that nothing above keeps (:func:`forget_runs`: their records, MLflow runs, sweep folders and, through
    `forget_prefect`, Prefect flow runs, and their report pages). With `vacuum_dbs` (None: none), last compact those
    SQLite files (:func:`vacuum`: refused while a run goes or another process holds one open). in: artifact root,
    runs to keep, dry run, minimum age, the time to age against (default now), days, the Prefect step, the files to
    compact; out: a GcReport. A collection that removes holds the root's gc lock (GC_LOCK) exclusive throughout: runs
    save their first record under it (:func:`claim`); it first repoints the root's MLflow store when the root was
    moved or copied (saerl.tracking.repoint_root_store; a dry run writes nothing and leaves it)."""
    from saerl.tracking import repoint_root_store

    args = (root, keep_runs, dry_run, min_age_hours, now, forget_days, forget_prefect, vacuum_dbs)
    if dry_run or not Path(root).is_dir():  # removes nothing (a missing root is refused): no lock, no lock file
        return _collect(*args)
    with file_lock(Path(root) / GC_LOCK):
        repoint_root_store(Path(root))  # a moved or copied root's MLflow store names its own mlruns/ again
        return _collect(*args)


def _collect(root: Path, keep_runs: int, dry_run: bool, min_age_hours: float, now: float | None,
             forget_days: float | None = None, forget_prefect: PrefectForget | None = None,
             vacuum_dbs: list[Database] | None = None) -> GcReport:
    """:func:`collect`'s body (under the root's gc lock when it removes). in and out: as collect's."""
    if keep_runs != 0 and not list_runs(root):
        raise ValueError(f"no run records under {Path(root) / RUNS_DIR}, so nothing says which artifacts are in "
                         "use (is this an artifact root?); pass --keep-runs 0 to remove every artifact anyway")
    now = time.time() if now is None else now
    forgotten = None if forget_days is None else forget_runs(root, keep_runs, forget_days, dry_run, now,
                                                             forget_prefect)
    kept = kept_runs(root, keep_runs, now)  # what is left: a forgotten run kept nothing anyway (forgettable)
    report = GcReport(runs_kept=kept.runs_kept, running_kept=kept.running_kept, complete=kept.complete,
                      resumable=kept.resumable, future=kept.future, dry_run=dry_run, min_age_hours=min_age_hours,
                      forgotten=forgotten)
    for entry in scan(root):
        key = (entry.stage, entry.key)
        if (entry.kind in ("artifact", "partial") and key in kept.keys
                or entry.kind == "partial" and key in kept.partials):
            report.referenced.append(entry)
        elif now - entry.mtime < min_age_hours * SECONDS_PER_HOUR:
            report.young.append(entry)
        elif (taken := take(root, entry, dry_run)) is None:
            report.locked.append(entry)
        elif taken:
            report.removed.append(entry)
    gone = {(e.stage, e.key) for e in report.removed if e.kind == "artifact"}
    for record in orphan_records(root, gone):  # a record of an artifact gone (now or before), by the same rules;
        old = now - record.mtime >= min_age_hours * SECONDS_PER_HOUR  # not counted among what is kept
        if old and take(root, record, dry_run):
            report.removed.append(record)
    if vacuum_dbs is not None:  # last: the rows forgotten above are among the pages it gives back
        report.vacuumed = vacuum(root, vacuum_dbs, dry_run)
    return report


def forgettable(root: Path, keep_runs: int, days: float, now: float) -> list[RunRecord]:
    """The runs a collection may forget: ended (ok, failed, stopped or killed: :func:`ended_how`) at least `days`
    days before `now` (saerl.runs.ended_at), and none that the collection keeps (:func:`kept_records`: the `keep_runs`
    newest ended runs, every run still going, the latest complete run and the latest run that did not end ok of each
    config name and of its sweeps (:func:`lineage`: one of each for all its sweeps, so an older sweep's children are
    forgotten like any run), and every ended run that started in the future, even under keep_runs 0, which keeps no
    artifact of theirs: a run forgotten is gone for good).
    A record that cannot be read is never forgotten (`saerl status --list` names it).
    in: root, runs to keep, days, the time to age against; out: their records, oldest first."""
    ended, going, complete, resumable, future = kept_records(root, keep_runs, by_lineage=True, now=now)
    kept = {r.run_id for r in [*ended, *going, *complete.values(), *(r for r, _ in [*resumable.values(), *future])]}
    out = []
    for record in readable_runs(p for p in list_runs(root) if p.stem not in kept):
        ended = ended_at(root, record) if ended_how(root, record) is not None else None
        if ended is not None and now - ended >= days * SECONDS_PER_DAY:
            out.append(record)
    return out


def _left_runs(root: Path, records: list[RunRecord]) -> list[RunRecord]:
    """The root's runs (saerl.runs.runs_of) that are not among `records`. in: root, the runs to forget; out: the
    runs that stay."""
    ids = {r.run_id for r in records}
    return [r for r in runs_of(root, None) if r.run_id not in ids]


def _split_held(records: list[RunRecord], held: set[str]) -> tuple[list[RunRecord], list[RunRecord]]:
    """`records` split by whether a failed MLflow store kept them (run ids `held`). in: the runs to forget, the
    kept ids; out: (the runs forgotten, the runs kept), each in the order of `records`."""
    return [r for r in records if r.run_id not in held], [r for r in records if r.run_id in held]


def _emptied_sweeps(records: list[RunRecord], left: list[RunRecord]) -> set[str]:
    """The sweeps none of whose runs is left: each sweep id a record of `records` names that no record of `left`
    does. in: the runs to forget, the runs that stay; out: sweep ids."""
    return {s for r in records if (s := r.extra.get(SWEEP))} - {r.extra.get(SWEEP) for r in left}


def _store_requests(stores: dict[str, list[RunRecord]], sweeps: set[str]) -> dict[str, list[str]]:
    """What each MLflow store is asked to forget (saerl.tracking.forget_tracked's `names`): the run ids of its runs
    to forget (:func:`_by_store`), then the own run ('sweep <id>': saerl.tracking.SWEEP_RUN) of each sweep of
    `sweeps` one of them belongs to, asked of the first store holding a run of it only. in: the runs to forget per
    store, the sweeps to forget; out: {uri: names}, the stores in their order."""
    from saerl.tracking import SWEEP_RUN

    out: dict[str, list[str]] = {}
    named: set[str] = set()  # sweeps whose own MLflow run one store was asked for already
    for uri, group in stores.items():
        out[uri] = [r.run_id for r in group]
        for sweep in sorted(({r.extra.get(SWEEP) for r in group} & sweeps) - named):
            out[uri].append(SWEEP_RUN.format(sweep_id=sweep))
            named.add(sweep)
    return out


def _by_store(root: Path, records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """The runs of `records` grouped by the MLflow store each was tracked in (saerl.tracking.recorded_store; a run
    with none is left out). in: root, records; out: {uri: records}, in the order the stores first appear."""
    from saerl.tracking import recorded_store

    stores: dict[str, list[RunRecord]] = {}
    for record in records:
        if (uri := recorded_store(record.config, Path(root))) is not None:
            stores.setdefault(uri, []).append(record)
    return stores


def _forget_in_stores(root: Path, records: list[RunRecord], sweeps: set[str], dry_run: bool,
                      out: Forgotten) -> set[str]:
    """Forget the MLflow runs of `records` and of the sweeps `sweeps`, store by store (:func:`_store_requests`,
    saerl.tracking.forget_tracked, in the experiments saerl logged them in), adding what each store did to
    `out.stores`; a store that fails keeps its runs, a line in `out.held`. in: root, the runs to forget, the sweeps
    to forget, dry run, the Forgotten to add to; out: the run ids a failed store kept."""
    from saerl.privacy import redact
    from saerl.tracking import forget_tracked

    groups = _by_store(root, records)
    held: set[str] = set()
    for uri, names in _store_requests(groups, sweeps).items():
        group = groups[uri]
        experiments = frozenset(r.config.get("tracking.experiment") or r.name for r in group)  # as Tracker names them
        try:
            out.stores.append(forget_tracked(uri, names, Path(root), dry_run, experiments))
        except Exception as err:  # noqa: BLE001 - any store failure: its runs stay, the rest go on
            held |= {r.run_id for r in group}
            out.held.append(f"MLflow at {redact(uri)} failed ({redact(str(err))}): its {len(group)} runs are kept, "
                            "for a later collection to forget")
    return held


def _forget_sweep_folders(root: Path, sweeps: list[str], dry_run: bool) -> int:
    """Remove the folder of each sweep of `sweeps` (`<root>/sweeps/<id>/`: saerl.sweep.sweep_dir) that exists
    (unless dry_run). in: root, sweep ids, dry run; out: the bytes of those folders."""
    from saerl.sweep import sweep_dir

    removed = 0
    for sweep in sweeps:
        folder = sweep_dir(Path(root), sweep)
        if folder.is_dir():
            removed += tree_stats(folder)[0]
            if not dry_run:
                shutil.rmtree(folder)
    return removed


def _forget_records(root: Path, run_ids: list[str], dry_run: bool) -> int:
    """Remove the run record and live lock file of each run of `run_ids` (unless dry_run). in: root, run ids, dry
    run; out: their bytes."""
    return sum(_forget_file(path, dry_run) for run_id in run_ids
               for path in (run_path(root, run_id), live_path(root, run_id)))


def forget_runs(root: Path, keep_runs: int, days: float, dry_run: bool = False, now: float | None = None,
                forget_prefect: PrefectForget | None = None) -> Forgotten:
    """Forget the runs :func:`forgettable` names, for good: first their MLflow runs, per store (saerl.tracking
    forget_tracked: the parent and its nested stage runs deleted, and purged in the root's own SQLite store; a
    sweep's own run with its last children); a store that fails keeps its runs (a line in `held`: a later
    collection tries again); then their Prefect flow runs (`forget_prefect`, which says what it did in a line; none
    when it is None); then the folder of every sweep (`<root>/sweeps/<id>/`) none of whose runs is left, their
    report pages (:func:`run_reports`), and last their run records and live lock files (a collection cut short leaves
    records, which the next one forgets with what they name). An MLflow experiment they leave without any run goes
    too (saerl.tracking.emptied_experiments). Their artifacts are then collected as any other's.
    in: root, runs to keep, days, dry run (delete nothing; say what would go), the time to age against (default
    now), the Prefect step; out: a Forgotten."""
    now = time.time() if now is None else now
    records = forgettable(root, keep_runs, days, now)
    out = Forgotten(days)
    left = _left_runs(root, records)
    sweeps = _emptied_sweeps(records, left)
    held = _forget_in_stores(root, records, sweeps, dry_run, out)
    forgotten, kept = _split_held(records, held)
    sweeps -= {r.extra.get(SWEEP) for r in kept}
    if forget_prefect is not None and forgotten:
        out.prefect = forget_prefect(Path(root), forgotten, [*left, *kept], dry_run)
    # the sweeps' folders before the records: a collection cut short between the two leaves the records, which the
    # next one forgets with the rest (the other way round, nothing named the sweep's folder any more)
    out.sweeps = sorted(sweeps)
    out.record_bytes += _forget_sweep_folders(root, out.sweeps, dry_run)
    out.reports = run_reports(root, [r.run_id for r in forgotten])
    out.report_bytes += sum(_forget_file(path, dry_run) for path in out.reports)
    out.runs = [r.run_id for r in forgotten]
    out.record_bytes += _forget_records(root, out.runs, dry_run)
    return out


def run_reports(root: Path, run_ids: list[str]) -> list[Path]:
    """The files of `<root>/reports/` (saerl.report.REPORTS_DIR) that belong to runs `run_ids` alone: each named after
    one of them, `<run id>.<suffix>` (`saerl report`'s page `<run id>.html`, a picture saved beside it); a file named
    otherwise (a page written with --html, another run's) is not theirs. in: root, run ids; out: paths, sorted."""
    from saerl.report import REPORTS_DIR

    folder = Path(root) / REPORTS_DIR
    ids = set(run_ids)
    if not ids or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if "." in p.name and p.name.partition(".")[0] in ids and p.is_file() and not p.is_symlink())


def _forget_file(path: Path, dry_run: bool) -> int:
    """Remove a file (unless dry_run); out: its bytes, 0 when it is not there."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if not dry_run:
        path.unlink(missing_ok=True)
    return size


def mlflow_database(root: Path) -> Database:
    """The root's own MLflow store (saerl.tracking.root_store) for `--vacuum`, with the lock a tracker takes to open
    it (saerl.tracking.store_lock). in: root; out: a Database."""
    from saerl.tracking import root_store, store_lock_file

    db = root_store(root)
    return Database("MLflow", db, store_lock_file(db))


def vacuum(root: Path, dbs: list[Database], dry_run: bool = False) -> Vacuumed:
    """Compact the root's SQLite files (SQLite's VACUUM: the pages rows freed go back to the file system; forgetting
    runs frees rows, which the file keeps for later ones), those of `dbs` that exist, only when nothing else uses
    them: refused (one line, nothing compacted) while a run of the root is still going (:func:`ended_how`; a run
    starting waits, as it saves its first record, for the gc lock a collection holds) or while another process holds
    one of them open (:func:`open_by`: a local Prefect server of the root, an `mlflow ui`, a notebook's client). Each
    file's lock (Database.lock) is held meanwhile; SQLite then waits VACUUM_BUSY_TIMEOUT_S for a write under way, and
    an error of SQLite's (busy, a full disk) is a line of `failed`, the file left as it was.
    in: root, the files, dry run (measure their free pages, compact nothing, take no lock); out: a Vacuumed."""
    from saerl.tracking import sqlite_free_bytes  # a dry run's answer: what VACUUM would give back

    out = Vacuumed()
    dbs = [db for db in dbs if db.path.is_file()]
    going = kept_records(root, 0, by_lineage=False)[1]
    if going:
        out.refused = (f"--vacuum refused: {len(going)} runs are going on {root} ({', '.join(r.run_id for r in going)}"
                       "): run it again once they end (`saerl status --list`)")
        return out
    with ExitStack() as stack:
        for db in [] if dry_run else dbs:  # a dry run takes none
            stack.enter_context(file_lock(db.lock))
        if held := open_by([db.path for db in dbs]):
            out.refused = f"--vacuum refused: {'; '.join(held)}: run it again once it ends"
            return out
        for db in dbs:
            before = sqlite_bytes(db.path)
            try:
                out.done.append((db, before, sqlite_free_bytes(db.path) if dry_run else _vacuum_file(db.path)))
            except sqlite3.Error as err:
                out.failed.append(f"{db.what} {db.path.name}: not compacted: SQLite said '{err}' (another process "
                                  f"wrote to it for over {VACUUM_BUSY_TIMEOUT_S:g} s, or the disk lacks room for a "
                                  "copy of it); it is as it was")
    return out


def _vacuum_file(db: Path) -> int:
    """VACUUM one SQLite file, then write back and empty its write-ahead log where it has one (Prefect's), waiting at
    most VACUUM_BUSY_TIMEOUT_S for another connection. in: the file; out: its bytes after (:func:`sqlite_bytes`);
    raises sqlite3.Error."""
    con = sqlite3.connect(db, timeout=VACUUM_BUSY_TIMEOUT_S, isolation_level=None)
    try:
        con.execute("VACUUM")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a no-op in rollback-journal mode (MLflow's)
    finally:
        con.close()
    return sqlite_bytes(db)


def sqlite_bytes(db: Path) -> int:
    """A SQLite database's bytes on disk: the file and its write-ahead log (`<db>-wal`, pages not yet written back).
    in: the file; out: bytes."""
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.is_file())


def open_by(files: list[Path]) -> list[str]:
    """The other processes holding one of `files` (or a SQLite side file of it, SQLITE_SIDE_FILES) open, one line
    each: 'pid 4242 (prefect server start ...) holds prefect.db open'. Read off Linux's /proc/<pid>/fd: the processes
    of this user alone (all, as root); where /proc is absent (not Linux) none is seen, and SQLite's busy timeout is
    the only guard. in: the files; out: lines."""
    names = {str(f.resolve()) + side: f.name for f in files for side in ("", *SQLITE_SIDE_FILES)}
    out: list[str] = []
    for proc in sorted(PROC.iterdir(), key=lambda p: p.name) if PROC.is_dir() and names else []:
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # another user's process, or one gone meanwhile
            continue
        targets = set()
        for fd in fds:
            try:
                targets.add(os.readlink(fd))
            except OSError:  # closed meanwhile
                continue
        if held := sorted({names[t] for t in targets if t in names}):
            out.append(f"pid {proc.name} ({command_line(proc)}) holds {', '.join(held)} open")
    return out


def command_line(proc: Path) -> str:
    """A process's command line, its program (and the script an interpreter runs) named by file name alone, so that an
    install's folders do not push the words that tell what it is (`python prefect server start`) past the cut, then
    cut at COMMAND_CHARS characters. in: its /proc/<pid> folder; out: the text ('?' when it cannot be read)."""
    try:
        words = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    words = [Path(w).name if i < 2 and w.startswith("/") else w for i, w in enumerate(words)]
    text = " ".join(words).strip()
    return text if len(text) <= COMMAND_CHARS else text[:COMMAND_CHARS - 3] + "..."


def take(root: Path, entry: Entry, dry_run: bool) -> bool | None:
    """Remove `entry` under its key's lock (with dry_run only ask whether a build holds it, opening the lock file
    read-only: saerl.artifacts.lock_held; a root that cannot be written, mounted read-only or another user's, is
    previewed too). out: None when a build holds the lock, else whether the entry was there (one published or removed
    by another process since the scan is left alone)."""
    if dry_run:
        return None if lock_held(Path(root) / entry.stage / f"{LOCK_PREFIX}{entry.key}") else entry.path.exists()
    with try_lock(root, entry.stage, entry.key, create=entry.kind != "record") as held:
        if not held:
            return None
        there = entry.path.exists()
        if there and not dry_run:
            remove(entry)
        return there


def format_report(report: GcReport) -> str:
    """Lines for the terminal: the runs forgotten first, when asked (:func:`forgotten_lines`), what went (or would
    go) with sizes, the bytes freed, and what was kept: the counts, then one line per run kept besides the newest
    (:func:`kept_run_line`), and last, when asked, what `--vacuum` did to the SQLite files (:func:`vacuum_lines`).
    in: the GcReport; out: the text."""
    head = forgotten_lines(report.forgotten, report.dry_run) if report.forgotten is not None else []
    tail = vacuum_lines(report.vacuumed, report.dry_run) if report.vacuumed is not None else []
    return "\n".join([*head, _artifact_report(report), *tail])


def vacuum_lines(vacuumed: Vacuumed, dry_run: bool) -> list[str]:
    """The report's lines on `--vacuum`: the one line refusing it, or per SQLite file its bytes before and after ('would
    compact' with its free pages' bytes in a dry run), and a line per file SQLite refused. in: a Vacuumed, dry run;
    out: lines."""
    if vacuumed.refused:
        return [vacuumed.refused]
    if not vacuumed.done and not vacuumed.failed:
        return ["--vacuum: the root has no SQLite file of its own (mlflow.db, prefect/prefect.db) to compact"]
    lines = []
    for db, before, after in vacuumed.done:
        lines.append(f"would compact {db.what} {db.path}: {before / MB:.2f} MB, {after / MB:.2f} MB of it free pages"
                     if dry_run else
                     f"compacted {db.what} {db.path} (VACUUM): {before / MB:.2f} MB before, {after / MB:.2f} MB after")
    return lines + vacuumed.failed


def forgotten_lines(forgotten: Forgotten, dry_run: bool) -> list[str]:
    """The report's lines on forgotten runs: how many (ended at least D days ago) with their run records' and sweep
    folders' bytes, each one's id, their report files, one line per MLflow store (runs deleted, and for a purged
    store the bytes of logged files and of rows freed; else that its own `mlflow gc` purges them; the experiments
    left without runs, deleted too), a line per store that failed, and the Prefect line. in: a Forgotten, dry run;
    out: lines."""
    verb = "would forget" if dry_run else "forgot"
    sweeps = f" and {len(forgotten.sweeps)} sweeps whose runs all went" if forgotten.sweeps else ""
    lines = [f"{verb} {len(forgotten.runs)} runs that ended {forgotten.days:g}+ days ago and that nothing keeps{sweeps}"
             f": run records {forgotten.record_bytes / MB:.2f} MB"]
    lines += [f"  {run_id}" for run_id in forgotten.runs]
    if forgotten.reports:
        lines.append(f"{'would remove' if dry_run else 'removed'} their {len(forgotten.reports)} report files, "
                     f"{forgotten.report_bytes / MB:.2f} MB")
        lines += [f"  {path.parent.name}/{path.name}" for path in forgotten.reports]
    for store in forgotten.stores:
        emptied = (f"; and {len(store.experiments)} experiments left without runs: {', '.join(store.experiments)}"
                   if store.experiments else "")
        if store.purged:
            rows = "" if dry_run else f", {store.db_bytes / MB:.2f} MB of rows freed in its database for later runs"
            lines.append(f"MLflow {store.uri}: {'would delete and purge' if dry_run else 'deleted and purged'} "
                         f"{store.runs} runs (parents and stage runs): logged files {store.artifact_bytes / MB:.2f} "
                         f"MB{rows}{emptied}")
        else:
            lines.append(f"MLflow {store.uri}: {'would delete' if dry_run else 'deleted'} {store.runs} runs (parents "
                         "and stage runs); not this root's store, so their data stays until that store's own `mlflow "
                         f"gc` purges it{emptied}")
    lines += forgotten.held
    if forgotten.prefect:
        lines.append(forgotten.prefect)
    return lines


def _artifact_report(report: GcReport) -> str:
    """:func:`format_report`'s lines on artifacts. in: the report; out: the text."""
    verb = "would remove" if report.dry_run else "removed"
    records = sum(e.kind == "record" for e in report.removed)
    also = f" and {records} cache records of artifacts gone" if records else ""
    lines = [f"{verb} {len(report.removed) - records} folders{also}, {report.freed / MB:.2f} MB"
             + (" (dry run: nothing deleted)" if report.dry_run else "")]
    lines += [f"  {e.path.parent.name}/{e.path.name}  {e.kind}  {e.bytes / MB:.2f} MB" for e in report.removed]
    running = f" and by {report.running_kept} runs still going" if report.running_kept else ""
    kept = [line for run in [*report.complete, *report.resumable, *report.future]
            if (line := kept_run_line(run, report))]
    below = " and by the runs below" if kept else ""
    lines.append(f"kept: {len(report.referenced)} artifacts referenced by the {report.runs_kept} newest ended runs"
                 f"{running}{below}, {len(report.locked)} locked by a running build, "
                 f"{len(report.young)} younger than {report.min_age_hours:g} h")
    return "\n".join(lines + kept)


def kept_run_line(run: KeptRun, report: GcReport) -> str:
    """The report's line for a run kept besides the newest: 'kept: the latest complete run of demo (<run id>): 12
    artifacts, 13.63 MB, not among the 3 newest ended runs', for an ablation's child 'kept: the latest complete run of
    demo's sweeps (<run id>: sweep <id>, setting mix_ratio=0.6): ...' (one for all the config's sweeps:
    :func:`lineage`), or for one that did not end ok 'kept: the resume state of the latest killed run of demo (<run
    id>): 1 unfinished builds, 13.44 MB' ('' for the latter when it kept none: it left none, or its record plans
    none), or for a run that started in the future (:func:`future_run_line`).
    in: the run, the report (its referenced entries are counted); out: the line."""
    if run.ahead:
        return future_run_line(run, report)
    kind = "partial" if run.ended != ENDED_OK else "artifact"
    held = [e for e in report.referenced if e.kind == kind and (e.stage, e.key) in run.keys]
    of = f"{run.name}'s sweeps" if run.sweep else run.name
    what = f"the latest complete run of {of}" if run.ended == ENDED_OK else \
        f"the resume state of the latest {run.ended} run of {of}"
    unit = "artifacts" if run.ended == ENDED_OK else "unfinished builds"
    if run.ended != ENDED_OK and not held:
        return ""
    older = "" if run.newest else f", not among the {report.runs_kept} newest ended runs"
    which = f"{run.run_id}: {run.sweep}" if run.sweep else run.run_id
    return f"kept: {what} ({which}): {len(held)} {unit}, {sum(e.bytes for e in held) / MB:.2f} MB{older}"


def future_run_line(run: KeptRun, report: GcReport) -> str:
    """The report's line for an ended run that started in the future, kept apart from the newest: 'kept: a run of
    demo that started in the future (<run id>, 3 d 00 h ahead of this machine's clock): 2 artifacts, 0.00 MB; it
    takes no place among the 1 newest ended runs, which its id sorts after (this machine's clock or ...)'.
    in: the run, the report (its referenced artifacts are counted); out: the line."""
    held = [e for e in report.referenced if e.kind == "artifact" and (e.stage, e.key) in run.keys]
    return (f"kept: a run of {run.name} that started in the future ({run.run_id}, {format_duration(run.ahead)} ahead "
            f"of this machine's clock): {len(held)} artifacts, {sum(e.bytes for e in held) / MB:.2f} MB; it takes no "
            f"place among the {report.runs_kept} newest ended runs, which its id sorts after ({CLOCK_OFF})")
