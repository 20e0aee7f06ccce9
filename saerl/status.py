"""What a saved run did, for `saerl status`: per stage run computed or cached, key, why, time and size (and, with
`--paths`, the folder of its artifact under the root, where its files are: eval.parquet, order.parquet, ...).

Everything here reads run records (`<root>/runs/<run_id>.json`, :mod:`saerl.runs`) and the artifact folders
they name; nothing is computed. The "why" is the reason stored when the run ran: for a recompute, the
config fields and input artifacts that changed since the previous run of the same config name.
Each artifact still on disk is checked against its manifest (:func:`artifact_problems`: every listed file there, at
its recorded size; no file is hashed, so status stays quick on gigabytes of activations): one that fails is shown
'corrupt', with what is wrong and that running the same config again rebuilds it. A changed byte that keeps a file's
size is found by `saerl status --verify` (hashes every file, as a run or `saerl report` does when it reads one).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

from saerl.artifacts import MANIFEST, ArtifactStore, chunk_progress
from saerl.checkpoints import CURVE_FILE, checkpoint_step, last_checkpoint
from saerl.runs import (
    CLOCK_OFF,
    FAILED,
    GIT,
    GIT_PREFIX,
    INVOCATION,
    KILLED,
    LATEST_NOTE,
    RUNS_DIR,
    SETTING,
    STILL_RUNNING,
    STOPPED,
    SWEEP,
    UNFINISHED,
    UNTIL,
    RunRecord,
    ahead_of_clock,
    artifact_dir,
    code_summary,
    ended_at,
    list_runs,
    load_run,
    ordered_stages,
    read_run,
    run_overrides,
    run_path,
    stage_of,
    unfinished,
)
from saerl.terminal import fit_columns, fit_lines, table_lines

LIST_LIMIT = 20  # runs shown by `saerl status --list` unless told otherwise
KEY_CHARS = 12  # key prefix shown (enough to tell artifacts apart; the full key is in the record)
MB = 1e6
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"  # local time and its zone (run ids are UTC: a zone-less time read as either)
CORRUPT = "corrupt"  # the 'on disk' cell of an artifact that fails its manifest check
PROBLEMS_SHOWN = 2  # problems named per corrupt artifact (the rest are counted)
REBUILD_HINT = "running the same config again rebuilds it (saerl run CONFIG; the run's other artifacts are reused)"
IN_PROGRESS = "in_progress"  # RunRecord.extra key while a run goes: {stage run: {"started": epoch seconds, "key":
# artifact key}} of each stage run computing now, saved as it starts and removed as it ends (flows.pipeline); a run
# killed meanwhile keeps it in its record: where it died
CLOCK_FORMAT = "%H:%M:%S"  # a time of today (local)
DAY_SECONDS, HOUR_SECONDS, MINUTE_SECONDS = 86400, 3600, 60
FUTURE_MARK = "(in the future)"  # after the start of a run that started in the future (saerl.runs.ahead_of_clock)
SWEEP_TAIL = 4  # characters of a sweep child's sweep id `status --list` shows: its random end, which tells the
# root's sweeps apart and ends its folder's name (ROOT/sweeps/*<them>/; `--list --json` gives the whole id)
# the columns `status --list` leaves out where its table is wider than the terminal (saerl.terminal.fit_columns),
# least useful first: stages is computed + cached; sizes and times before the sweep's tail and the counts; the start
# (the run id says the day and time too, in UTC) and a sweep child's setting last. The run id, config name, how it
# ended and what it ran with (left out only where no run was given anything: LIST_EMPTY_DROPS) stay; `--list --json`
# has every field
LIST_NARROW_DROPS = ("stages", "MB", "seconds", "sweep", "cached", "computed", "started", "setting")
LIST_EMPTY_DROPS = ("ran with",)
NARROW_NOTE = "left out to fit {width} columns: {columns} (a wider terminal or COLUMNS shows them; --json every field)"
EXPLAINED_ENDINGS = (KILLED, UNFINISHED)  # how a run ended that `status --list` shows as the word before its colon,
# the whole text once under the table (a 170-character 'killed: ...' cell widened every row before the last column)


def disk_bytes(folder: Path) -> int:
    """Bytes of every file under an artifact folder that just passed its manifest check (artifact_problems: every
    file the manifest lists is there at its recorded size), with no second stat of those files: their recorded
    sizes, plus one stat of each file the manifest does not list (the manifest itself, anything added since).
    in: the artifact folder; out: bytes."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    recorded = {rel: int(info["bytes"]) for rel, info in manifest["files"].items()}
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent) / name
            rel = path.relative_to(folder).as_posix()
            if rel in recorded:
                total += recorded[rel]
            elif path.is_file():
                total += path.stat().st_size
    return total


def artifact_problems(root: Path, run_name: str, key: str, verify: bool = False) -> list[str] | None:
    """What is wrong with a stage run's artifact now (ArtifactStore.problems): None when its folder is gone
    (collected, never built), [] when it passes, else the problems. The quick check stats each file the manifest lists
    (missing, or not its recorded size: a truncated or partly copied file); verify=True also hashes every file as a
    run does (seconds per gigabyte). in: artifact root, stage run name, key."""
    if not artifact_dir(root, run_name, key).is_dir():
        return None
    return ArtifactStore(root).problems(stage_of(run_name), key, hashes=verify)


def corrupt_line(run_name: str, key: str, problems: list[str]) -> str:
    """The line status prints under its table for a corrupt artifact: which stage run, key prefix, the first
    PROBLEMS_SHOWN problems (and how many more) and how to rebuild it. in: stage run name, key, its problems."""
    more = f" (and {len(problems) - PROBLEMS_SHOWN} more)" if len(problems) > PROBLEMS_SHOWN else ""
    return (f"{CORRUPT}: {run_name} {key[:KEY_CHARS]}: {'; '.join(problems[:PROBLEMS_SHOWN])}{more}; "
            f"{REBUILD_HINT}")


def format_time(stamp: float) -> str:
    """A Unix time as local 'YYYY-MM-DD HH:MM:SS ZONE'."""
    return time.strftime(TIME_FORMAT, time.localtime(stamp))


def format_duration(seconds: float) -> str:
    """A span as a person reads it: '45 s', '3 m 12 s', '1 h 02 m', '2 d 03 h'. in: seconds; out: text."""
    s = max(0, round(seconds))
    if s < MINUTE_SECONDS:
        return f"{s} s"
    if s < HOUR_SECONDS:
        return f"{s // MINUTE_SECONDS} m {s % MINUTE_SECONDS:02d} s"
    if s < DAY_SECONDS:
        return f"{s // HOUR_SECONDS} h {s % HOUR_SECONDS // MINUTE_SECONDS:02d} m"
    return f"{s // DAY_SECONDS} d {s % DAY_SECONDS // HOUR_SECONDS:02d} h"


def format_clock(stamp: float, now: float | None = None) -> str:
    """A Unix time as local 'HH:MM:SS' when it is today (of `now`, default the current time), else as
    :func:`format_time` does. in: epoch seconds; out: text."""
    day = time.localtime(time.time() if now is None else now)[:3]
    return time.strftime(CLOCK_FORMAT, time.localtime(stamp)) if time.localtime(stamp)[:3] == day \
        else format_time(stamp)


def newest_checkpoint(root: Path, run_name: str, key: str, every: int = 1,
                      final: int | None = None) -> tuple[int, float] | None:
    """The checkpoint a training run under way (or killed) would resume from, in its unfinished build
    (`<root>/train/.partial-<key>/checkpoints`): (its optimizer step, when it was completed: its CURVE_FILE, written
    last), chosen as the resume chooses it (saerl.checkpoints.last_checkpoint: complete, on a generation-batch
    boundary `every` or at least the run's last step `final`), so one a kill left half-written or half-pruned is not
    named; None when there is none (not a training run, none saved yet, or the build is gone).
    in: artifact root, stage run name, key, train.steps_per_generation, train.max_steps; out: (step, epoch seconds)
    or None."""
    from saerl.runners import CHECKPOINTS

    folder = ArtifactStore(root).partial_path(stage_of(run_name), key) / CHECKPOINTS
    found = last_checkpoint(folder, every, final)
    try:
        return None if found is None else (checkpoint_step(found), (found / CURVE_FILE).stat().st_mtime)
    except OSError:  # pruned meanwhile by the run, which has just completed a newer one
        return None


def checkpoint_note(root: Path, record: RunRecord, run_name: str, key: str, verb: str) -> str:
    """'<verb> checkpoint: step 60 of 200, saved 12:30:11' of the checkpoint a training run would resume from
    (:func:`newest_checkpoint`, on the record's train.steps_per_generation and train.max_steps; 'of N' from the
    latter), 'no checkpoint yet' for a training run
    that has none, 'no checkpoints (train.save_every=0)' for one that saves none, '' for another stage.
    in: root, record, stage run name, key, 'newest' or 'last'; out: text."""
    if stage_of(run_name) != "train":
        return ""
    every, total = record.config.get("train.steps_per_generation"), record.config.get("train.max_steps")
    found = newest_checkpoint(root, run_name, key, every if isinstance(every, int) and every > 0 else 1,
                              total if isinstance(total, int) else None)
    if found is None:
        return "no checkpoints (train.save_every=0)" if record.config.get("train.save_every") == 0 else \
            "no checkpoint yet"
    of = f" of {total}" if isinstance(total, int) else ""
    return f"{verb} checkpoint: step {found[0]}{of}, saved {format_clock(found[1])}"


def chunk_note(root: Path, run_name: str, key: str, killed: bool) -> str:
    """How far a chunked stage run (extract, encode, label) under way or killed got, from its unfinished build's
    chunk log (saerl.artifacts.chunk_progress: the log's small records, no chunk data): 'chunks: 12 of 40 done,
    newest 12:30:11' for one under way, '12 of 40 chunks done: a rerun resumes from there' for a killed one ('of 40'
    where the build recorded its plan; 'chunks: 0 of 40 done' before the first); '' for a build with no chunk log
    (another stage, one still preparing its store, or gone), or one that cannot be read. in: artifact root, stage run
    name, key, whether the run was killed; out: text."""
    try:
        progress = chunk_progress(ArtifactStore(root).partial_path(stage_of(run_name), key))
    except OSError:  # the folder went or turned unreadable meanwhile: say nothing of it
        return ""
    if progress is None:
        return ""
    of = f" of {progress.planned}" if progress.planned is not None else ""
    if killed:
        return f"{progress.done}{of} chunks done" + (": a rerun resumes from there" if progress.done else "")
    newest = f", newest {format_clock(progress.newest)}" if progress.newest is not None else ""
    return f"chunks: {progress.done}{of} done{newest}"


def in_progress_lines(root: Path, record: RunRecord, state: str | None, now: float | None = None) -> list[str]:
    """What a record still marked running says of the stage runs it was computing (extra IN_PROGRESS): for a run
    under way 'in progress: train:saerl:0 since 12:18:56 (1 h 02 m; newest checkpoint: step 60 of 200, saved
    12:30:11)' or, for a chunked stage, 'in progress: extract since 12:18:56 (1 h 02 m; chunks: 12 of 40 done, newest
    12:30:11)' (:func:`chunk_note`), for a killed one 'died in train:saerl:0 (started 12:18:56; last checkpoint: step
    60 of 200, ...)' or 'died in extract (started 12:18:56; 12 of 40 chunks done: a rerun resumes from there)', when
    that cannot be told 'in progress or died in: ...', in the order they started; [] for an ended run, or a record
    from before IN_PROGRESS.
    in: artifact root, record, its saerl.runs.unfinished state, the time now (default: the current time); out:
    lines."""
    entries = record.extra.get(IN_PROGRESS)
    if not state or not isinstance(entries, dict):
        return []
    now = time.time() if now is None else now
    lines = []
    for name, entry in sorted(entries.items(), key=lambda item: float(item[1].get("started", 0.0))):
        started, key = float(entry.get("started", 0.0)), str(entry.get("key", ""))
        since = format_clock(started, now)
        if state == KILLED:
            notes = "; ".join(n for n in (f"started {since}", checkpoint_note(root, record, name, key, "last"),
                                          chunk_note(root, name, key, killed=True)) if n)
            lines.append(f"died in {name} ({notes})")
            continue
        notes = "; ".join(n for n in (format_duration(now - started), checkpoint_note(root, record, name, key, "newest"),
                                      chunk_note(root, name, key, killed=False)) if n)
        lead = "in progress" if state == STILL_RUNNING else "in progress or died in"
        lines.append(f"{lead}: {name} since {since} ({notes})")
    return lines


def format_run(root: Path, record: RunRecord, verify: bool = False, paths: bool = False,
               width: int | None = None) -> str:
    """The status of one run: a header (id, config name, start, totals; the code it ran: saerl.runs.code_summary)
    and one line per stage run with
    status, key prefix, seconds, MB recorded when it ran, MB on disk now ('gone' once collected, 'corrupt' when it
    fails its manifest check, :func:`artifact_problems`), with `paths` its artifact's folder under `root`
    (:func:`artifact_dir`, where a run reads it; the key prefix alone did not say where eval.parquet is), and why,
    in pipeline order (as the run printed them); then a line per corrupt artifact (:func:`corrupt_line`). A record
    still marked running says under its header whether the run is still going or was killed, and the stage runs it
    was computing (:func:`in_progress_lines`: since when, a training run's newest checkpoint, a chunked stage's
    chunks done).
    verify: hash every file (slow on big artifacts); width: the columns its lines fit, the 'why' wrapped under its
    column (saerl.terminal.output_columns; None: one line per row, as a script reads it)."""
    rows = [("stage", "status", "key", "seconds", "MB", "on disk", *(("path",) if paths else ()), "why")]
    corrupt = []
    for s in ordered_stages(record):
        problems = artifact_problems(root, s.stage, s.key, verify)
        if problems:
            corrupt.append(corrupt_line(s.stage, s.key, problems))
        if problems is None:
            on_disk = "gone"
        elif problems:
            on_disk = CORRUPT
        else:
            try:
                on_disk = f"{disk_bytes(artifact_dir(root, s.stage, s.key)) / MB:.2f}"
            except (OSError, ValueError, KeyError):  # collected between the check and the count (saerl gc)
                on_disk = "gone"
        where = (str(artifact_dir(root, s.stage, s.key)),) if paths else ()
        rows.append((s.stage, s.status, s.key[:KEY_CHARS], f"{s.seconds:.1f}", f"{s.bytes / MB:.2f}", on_disk,
                     *where, s.reason))
    computed = sum(s.status == "computed" for s in record.stages.values())
    seconds = sum(s.seconds for s in record.stages.values())
    head = (f"run {record.run_id} ({record.name}) started {format_time(record.started)}: "
            f"{len(record.stages)} stage runs, {computed} computed, {len(record.stages) - computed} cached, "
            f"{seconds:.1f}s; code: {code_summary(record.extra)}")
    future = future_line(record)
    lines = [head, *([future] if future else [])]
    if record.extra.get(FAILED):
        lines.append(f"FAILED at {record.extra[FAILED]}")
    elif record.extra.get(STOPPED):
        lines.append(f"STOPPED at {record.extra[STOPPED]}")
    elif state := unfinished(root, record):
        lines += [state.upper(), *in_progress_lines(root, record, state)]
    return "\n".join([*fit_lines(lines, width), *table_lines(rows, width), *fit_lines(corrupt, width)])


def future_line(record: RunRecord, now: float | None = None) -> str:
    """What `saerl status` says under the header of a run that started in the future (saerl.runs.ahead_of_clock):
    'STARTED IN THE FUTURE (3 d 00 h ahead of this machine's clock): this machine's clock or the one that ran it is
    off; runs are ordered by ...'; '' for any other run. in: the record, the time now (default the current time);
    out: the line or ''."""
    ahead = ahead_of_clock(record, now)
    if not ahead:
        return ""
    return f"STARTED IN THE FUTURE ({format_duration(ahead)} ahead of this machine's clock): {CLOCK_OFF}; {LATEST_NOTE}"


def failed_at(failed: str) -> str:
    """The stage run a failed run stopped at, from its record's extra['failed'] ('<stage run>: <error>'; a
    training run's name holds colons itself: 'train:saerl:0'). in: that text; out: the stage run name."""
    return failed.split(": ", 1)[0]


def ended(root: Path, record: RunRecord) -> str:
    """How a run ended, for `status --list`: 'failed at <stage run>', 'stopped at <stage run> (SIGINT)' (Ctrl-C or
    SIGTERM: it read 'failed at'), for a record still marked running 'running' or 'killed: ...' (its process holds
    its live lock, or died before it could record its end; 'unfinished: ...' when that cannot be told; it read
    'ok': saerl.runs.unfinished), or 'ok'. in: artifact root, record; out: text."""
    if record.extra.get(FAILED):
        return f"failed at {failed_at(record.extra[FAILED])}"
    if record.extra.get(STOPPED):
        where, _, sig = record.extra[STOPPED].rpartition(": ")
        return f"stopped at {where} ({sig})"
    return unfinished(root, record) or "ok"


def run_status(root: Path, run_id: str | RunRecord = "latest", verify: bool = False, paths: bool = False,
               width: int | None = None) -> str:
    """`saerl status RUN`: the formatted status of a run (a unique id prefix, 'latest', or its record); verify: hash
    every artifact file instead of checking sizes; paths: a column with each artifact's folder; width: the columns
    its lines fit (:func:`format_run`)."""
    return format_run(root, load_run(root, run_id), verify, paths, width)


OUTCOMES = ("ok", "failed", "stopped", "killed", "running", "unfinished")  # how a run ended, for scripts (outcome)


def outcome(root: Path, record: RunRecord) -> tuple[str, str | None]:
    """How a run ended, as one word of OUTCOMES, and the stage run it ended at (None for 'ok' and a run going):
    what `saerl status --json` and `--check` give a script instead of :func:`ended`'s words. 'unfinished': marked
    running, and whether its process is alive cannot be told (saerl.runs.unfinished). in: root, record; out:
    (outcome, stage run or None)."""
    if failed := record.extra.get(FAILED):
        return "failed", failed_at(failed)
    if stopped := record.extra.get(STOPPED):
        return "stopped", stopped.rpartition(": ")[0]
    state = unfinished(root, record)
    if state is None:
        return "ok", None
    dying = sorted(record.extra.get(IN_PROGRESS) or {})
    word = "running" if state == STILL_RUNNING else "killed" if state == KILLED else "unfinished"
    return word, (", ".join(dying) or None) if word != "running" else None


def run_json(root: Path, run_id: str | RunRecord = "latest") -> dict[str, Any]:
    """`saerl status RUN --json`: the run's record (ROOT/runs/<id>.json, its stage runs' paths under `root`), led by
    its outcome, the stage run it ended at (:func:`outcome`) and the record file's path. in: root, run id, prefix,
    'latest' or record; out: a JSON-ready dict."""
    record = load_run(root, run_id)
    word, at = outcome(root, record)
    return {"outcome": word, "ended_at": at, "record_path": str(run_path(root, record.run_id)), **record.to_json()}


def recent_records(root: Path, limit: int = LIST_LIMIT) -> list[tuple[Path, RunRecord | ValueError]]:
    """The `limit` newest run record files under `root`, newest first, each with its record or, for one that cannot
    be read (saerl.runs.read_run), the ValueError saying why: the runs `status --list` shows, as a table or JSON.
    in: artifact root, how many; out: [(record file, record or error)]."""
    out: list[tuple[Path, RunRecord | ValueError]] = []
    for path in list_runs(root)[::-1][:limit]:
        try:
            out.append((path, read_run(path)))
        except ValueError as err:
            out.append((path, err))
    return out


def stage_counts(record: RunRecord) -> tuple[int, int, int, float, int]:
    """A run's stage runs as `status --list` counts them, as a table row and as JSON: (stage runs, computed, cached,
    total seconds, recorded bytes). in: its record; out: the five."""
    runs = record.stages.values()
    computed = sum(s.status == "computed" for s in runs)
    return len(runs), computed, len(runs) - computed, float(sum(s.seconds for s in runs)), sum(s.bytes for s in runs)


def sweep_cell(record: RunRecord) -> str:
    """`status --list`'s sweep column: the last SWEEP_TAIL characters of a sweep child's sweep id (two sweeps' children
    of the same setting read alike without it), '' for a run of no sweep. in: the record; out: the cell."""
    sweep = record.extra.get(SWEEP)
    return str(sweep)[-SWEEP_TAIL:] if sweep else ""


def ran_with(record: RunRecord) -> str:
    """`status --list`'s last column: the overrides the run was started with (saerl.runs.run_overrides, from its
    command) and its --until stage, as a command line writes them ('curriculum.seed=3 --until curriculum'); '' for a
    run given neither (a sweep child's overrides are its setting). in: the record; out: the text."""
    until = record.extra.get(UNTIL)
    return shlex.join([*run_overrides(record.extra), *(["--until", str(until)] if until else [])])


def ended_cell(text: str) -> tuple[str, str]:
    """How :func:`ended`'s text shows in `status --list`'s ended column: one of EXPLAINED_ENDINGS as the word before
    its colon ('killed'), with the whole text for a line under the table; any other as it is, with ''.
    in: the text; out: (the cell, the line under the table or '')."""
    return (text.split(":", 1)[0], text) if text in EXPLAINED_ENDINGS else (text, "")


def list_status(root: Path, limit: int = LIST_LIMIT, now: float | None = None, width: int | None = None) -> str:
    """`saerl status --list`: the `limit` newest runs, newest first: id, config name, a sweep child's setting and
    sweep (:func:`sweep_cell`), start, stage runs, computed and cached counts, total seconds, recorded MB, how it ended
    (:func:`ended`; killed and unfinished as one word, :func:`ended_cell`, explained once under the table) and what it
    was run with (:func:`ran_with`: its overrides and --until). An unreadable record is listed as such. A run that
    started in the future (saerl.runs.ahead_of_clock, against `now`, default the current time) has FUTURE_MARK after
    its start, and a line under the table says what that means.
    Where the columns before the last do not fit `width`, the least useful are left out (LIST_NARROW_DROPS, a column
    empty in every row first: saerl.terminal.fit_columns) and a line under the table names those that held values.
    in: artifact root, how many, the time now, the columns its lines fit (what a run was run with wrapped under its
    column: :func:`format_run`; None: one line per run, every column); out: the text."""
    runs = recent_records(root, limit)
    if not runs:
        return f"no runs under {Path(root) / RUNS_DIR}"
    rows = [("run", "name", "setting", "sweep", "started", "stages", "computed", "cached", "seconds", "MB", "ended",
             "ran with")]
    future, explained = 0, []
    for path, r in runs:
        if isinstance(r, ValueError):
            rows.append((path.stem, "<unreadable record>", *[""] * (len(rows[0]) - 2)))
            continue
        stages, computed, cached, seconds, size = stage_counts(r)
        ahead = bool(ahead_of_clock(r, now))
        future += ahead
        started = f"{format_time(r.started)} {FUTURE_MARK}" if ahead else format_time(r.started)
        end, why = ended_cell(ended(root, r))
        if why and why not in explained:
            explained.append(why)
        rows.append((r.run_id, r.name, str(r.extra.get(SETTING, "")), sweep_cell(r), started, str(stages),
                     str(computed), str(cached), f"{seconds:.1f}", f"{size / MB:.2f}", end, ran_with(r)))
    note = [f"{FUTURE_MARK}: {future} runs started later than this machine's clock reads now: {CLOCK_OFF}; "
            f"{LATEST_NOTE}"] if future else []
    drops = [c for c in LIST_NARROW_DROPS if not (future and c == "started")]  # the start its mark is on stays
    rows, left_out = fit_columns(rows, width, drops, LIST_EMPTY_DROPS)
    narrow = [NARROW_NOTE.format(width=width, columns=", ".join(left_out))] if left_out else []
    return "\n".join(table_lines(rows, width) + fit_lines(explained + note + narrow, width))


UNREADABLE = "unreadable"  # the outcome `status --list --json` gives a record it cannot read (its `error` says why)
ENDED_OUTCOMES = ("ok", "failed", "stopped")  # outcomes that record when the run ended (saerl.runs.ENDED, list_json's
# `ended`; a record from before it: when it was last saved, as the run ended); a killed run never said, a running one
# has not ended
LIST_FIELDS = ("run_id", "name", "setting", "sweep", "outcome", "ended_at", "signal", "error", "started", "ended",
               "until", "invocation", "commit", "stage_runs", "computed", "cached", "seconds", "bytes",
               "record_path")  # every object of `status --list --json` has these keys (null where it has no value)


def list_entry(root: Path, path: Path, record: RunRecord | ValueError) -> dict[str, Any]:
    """One run of `saerl status --list --json`, LIST_FIELDS (null where it has no value): run_id, config name,
    a sweep child's setting and sweep id; its outcome (:func:`outcome`: OUTCOMES, or UNREADABLE for a record that
    cannot be read, whose `error` says why) and the stage run it ended at; the signal that stopped it and the error it
    failed on (as its record says them: extra['stopped'], extra['failed']); started and ended (epoch seconds: its
    start, and its end for a run that ended, ENDED_OUTCOMES (saerl.runs.ended_at: for a record from before ENDED, when the
    record was last saved), else null); --until, the command
    that started it, its git commit; stage run, computed and cached counts, total stage seconds and recorded bytes;
    its record file. in: artifact root, record file, its record or read error; out: a JSON-ready dict."""
    entry: dict[str, Any] = dict.fromkeys(LIST_FIELDS)
    entry |= {"run_id": path.stem, "record_path": str(path)}
    if isinstance(record, ValueError):
        return entry | {"outcome": UNREADABLE, "error": str(record)}
    word, at = outcome(root, record)
    failed, stopped = record.extra.get(FAILED), record.extra.get(STOPPED)
    saved = ended_at(root, record) if word in ENDED_OUTCOMES else None
    stages, computed, cached, seconds, size = stage_counts(record)
    return entry | {
        "run_id": record.run_id, "name": record.name, "setting": record.extra.get(SETTING),
        "sweep": record.extra.get(SWEEP), "outcome": word, "ended_at": at,
        "signal": stopped.rpartition(": ")[2] if stopped else None,
        "error": failed.split(": ", 1)[1] if failed and ": " in failed else None,
        "started": record.started, "ended": saved, "until": record.extra.get(UNTIL),
        "invocation": record.extra.get(INVOCATION), "commit": (record.extra.get(GIT) or {}).get(GIT_PREFIX + "commit"),
        "stage_runs": stages, "computed": computed, "cached": cached, "seconds": round(seconds, 3), "bytes": size}


def list_json(root: Path, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
    """`saerl status --list --json`: the runs `status --list` shows (:func:`recent_records`: the `limit` newest,
    newest first), each as :func:`list_entry`; [] when there are none. in: artifact root, how many; out: JSON-ready
    list."""
    return [list_entry(root, path, record) for path, record in recent_records(root, limit)]
