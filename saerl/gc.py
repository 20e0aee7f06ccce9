"""Garbage collection of the artifact root, for `saerl gc`: remove what no recent run references.

Kept, always: every artifact a stage run of the `keep_runs` newest records of ended runs names (by stage and key),
and every one a run still going names or plans (its record is saved when it starts, with the key of every stage run
it plans, and after each stage; a long run that newer runs overtook reads what it finished days ago in its later
stages; a run still going takes no place among the newest; a run killed before it could record its end is told by
its free live lock and counts as ended); anything whose build lock another process holds (a build in progress);
anything younger than `min_age_hours`. Removed: the other finished artifacts
(`<root>/<stage>/<key>/`), unfinished builds (`.partial-<key>/`, so their resume state goes too) and
leftovers of replaced artifacts (`.trash-<key>-<pid>/`), and the orchestrator's cache record of a stage run
(`prefect-results/<stage>-<key>`) once its artifact is gone (removed now or before; same age rule). Nothing else
is touched: run records, the MLflow store and Prefect's home stay. Lock files (`.lock-<key>`, empty) stay as well: deleting a lock
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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from saerl.artifacts import CACHE_RECORDS_DIR, MANIFEST, file_lock
from saerl.runs import (
    PLANNED,
    RUNS_DIR,
    STILL_RUNNING,
    UNFINISHED,
    RunRecord,
    list_runs,
    read_run,
    stage_of,
    unfinished,
)
from saerl.stages import STAGES
from saerl.status import MB

KEEP_RUNS = 20  # run records whose artifacts are kept by default
MIN_AGE_HOURS = 24.0  # artifacts younger than this are kept by default (a running pipeline's)
SECONDS_PER_HOUR = 3600.0
PARTIAL_PREFIX = ".partial-"  # the artifact store's names inside a stage folder (saerl.artifacts)
TRASH_PREFIX = ".trash-"
LOCK_PREFIX = ".lock-"
GC_LOCK = ".gc.lock"  # <root>/<this>: a collection holds it exclusive, a run saving its first record shared


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


@dataclass
class GcReport:
    """What a collection removed (or, in a dry run, would remove) and what it kept and why."""

    removed: list[Entry] = field(default_factory=list)
    referenced: list[Entry] = field(default_factory=list)
    locked: list[Entry] = field(default_factory=list)
    young: list[Entry] = field(default_factory=list)
    runs_kept: int = 0
    running_kept: int = 0  # records of runs still going, whose artifacts (recorded and planned) are kept too
    dry_run: bool = False
    min_age_hours: float = MIN_AGE_HOURS

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


def is_going(root: Path, record: RunRecord) -> bool:
    """Is a run record's run still under way, as far as can be told (saerl.runs.unfinished): marked running and its
    live lock held, or a run from before live locks, whose process cannot be checked; not one killed with its lock
    left free. in: root, record; out: the verdict."""
    return unfinished(root, record) in (STILL_RUNNING, UNFINISHED)


def kept_records(root: Path, keep_runs: int) -> tuple[list[RunRecord], list[RunRecord]]:
    """(the `keep_runs` newest run records of runs that ended (every one when negative), every record of a run still
    going (:func:`is_going`), whatever its age), newest first. A run under way takes no place among the newest: a
    long run, or gc run during one, would otherwise push out an ended run whose artifacts were kept. A record that
    cannot be read is an error while places among the newest are left (what it references is unknown), and passed
    over after them. in: root, runs to keep; out: the two lists."""
    ended: list[RunRecord] = []
    going: list[RunRecord] = []
    for path in list_runs(root)[::-1]:
        open_place = keep_runs < 0 or len(ended) < keep_runs
        try:
            record = read_run(path)
        except ValueError:
            if open_place:
                raise
            continue
        if is_going(root, record):
            going.append(record)
        elif open_place:
            ended.append(record)
    return ended, going


def referenced_keys(root: Path, keep_runs: int) -> tuple[set[tuple[str, str]], int, int]:
    """({(stage, key)} named by the `keep_runs` newest records of ended runs and by every run still going: its stage
    runs so far and every one it plans (RunRecord.extra PLANNED, saved when it starts: an old artifact it will reuse
    later is not in its stage runs yet), how many ended runs that was, how many going ones); :func:`kept_records`."""
    ended, going = kept_records(root, keep_runs)
    keys = {(stage_of(name), s.key) for r in [*ended, *going] for name, s in r.stages.items()}
    keys |= {(stage_of(name), key) for r in going for name, key in (r.extra.get(PLANNED) or {}).items()}
    return keys, len(ended), len(going)


@contextmanager
def try_lock(root: Path, stage: str, key: str, create: bool = True) -> Iterator[bool]:
    """Hold the build lock of (stage, key) if it is free, without waiting: yields True when held, False
    when another process holds it. With create=False a missing lock file counts as free and is not made."""
    path = Path(root) / stage / f"{LOCK_PREFIX}{key}"
    if not create and not path.exists():
        yield True
        return
    with open(path, "a") as fh:
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
            now: float | None = None) -> GcReport:
    """Remove (or with dry_run only list) every artifact, partial build and trash folder under `root` that no kept
    record references (:func:`referenced_keys`: the `keep_runs` newest records of ended runs, every run still going,
    with what it plans; a partial build of such a key is kept too: a run going now may resume it), that no build
    holds the lock of, and that is at least `min_age_hours` old; ValueError when the root has no run records (unless
    keep_runs is 0). in: artifact root, runs to keep, dry run, minimum age, the time to age against (default now);
    out: a GcReport. A collection that removes holds the root's gc lock (GC_LOCK) exclusive throughout: runs
    save their first record under it (:func:`claim`)."""
    if dry_run or not Path(root).is_dir():  # removes nothing (a missing root is refused): no lock, no lock file
        return _collect(root, keep_runs, dry_run, min_age_hours, now)
    with file_lock(Path(root) / GC_LOCK):
        return _collect(root, keep_runs, dry_run, min_age_hours, now)


def _collect(root: Path, keep_runs: int, dry_run: bool, min_age_hours: float, now: float | None) -> GcReport:
    """:func:`collect`'s body (under the root's gc lock when it removes). in and out: as collect's."""
    refs, runs_kept, running_kept = referenced_keys(root, keep_runs)
    if keep_runs != 0 and not list_runs(root):
        raise ValueError(f"no run records under {Path(root) / RUNS_DIR}, so nothing says which artifacts are in "
                         "use (is this an artifact root?); pass --keep-runs 0 to remove every artifact anyway")
    now = time.time() if now is None else now
    report = GcReport(runs_kept=runs_kept, running_kept=running_kept, dry_run=dry_run, min_age_hours=min_age_hours)
    for entry in scan(root):
        if entry.kind in ("artifact", "partial") and (entry.stage, entry.key) in refs:
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
    return report


def take(root: Path, entry: Entry, dry_run: bool) -> bool | None:
    """Remove `entry` under its key's lock (with dry_run only try the lock). out: None when a build holds the lock,
    else whether the entry was there (one published or removed by another process since the scan is left alone)."""
    with try_lock(root, entry.stage, entry.key, create=not dry_run and entry.kind != "record") as held:
        if not held:
            return None
        there = entry.path.exists()
        if there and not dry_run:
            remove(entry)
        return there


def format_report(report: GcReport) -> str:
    """Lines for the terminal: what went (or would go) with sizes, the bytes freed, and what was kept."""
    verb = "would remove" if report.dry_run else "removed"
    records = sum(e.kind == "record" for e in report.removed)
    also = f" and {records} cache records of artifacts gone" if records else ""
    lines = [f"{verb} {len(report.removed) - records} folders{also}, {report.freed / MB:.2f} MB"
             + (" (dry run: nothing deleted)" if report.dry_run else "")]
    lines += [f"  {e.path.parent.name}/{e.path.name}  {e.kind}  {e.bytes / MB:.2f} MB" for e in report.removed]
    running = f" and by {report.running_kept} runs still going" if report.running_kept else ""
    lines.append(f"kept: {len(report.referenced)} artifacts referenced by the {report.runs_kept} newest ended runs{running}, "
                 f"{len(report.locked)} locked by a running build, "
                 f"{len(report.young)} younger than {report.min_age_hours:g} h")
    return "\n".join(lines)
