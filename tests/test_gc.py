"""saerl.gc and `saerl gc`: only what no kept run references goes; locked builds and young folders stay."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import time
from pathlib import Path

import pytest

from flows.cli import main
from saerl.artifacts import CACHE_RECORDS_DIR, ArtifactStore
from saerl.gc import SECONDS_PER_HOUR, collect, format_report
from saerl.runs import RunRecord, StageRecord, save_run

SIZE = 1000  # bytes of the one file in each hand-made artifact
DAY_S = 24 * SECONDS_PER_HOUR


def _artifact(store: ArtifactStore, stage: str, key: str) -> Path:
    return Path(store.ensure(stage, key, lambda b: (b.path / "f.bin").write_bytes(b"\0" * SIZE))[0].path)


def _record(root: Path, run_id: str, stages: dict[str, str], name: str = "demo", extra: dict | None = None) -> None:
    """A saved run record of config `name` whose stage runs {run name: key} name those artifacts."""
    r = RunRecord(name=name, run_id=run_id, extra=extra or {})
    r.stages = {name: StageRecord(name, key, "computed", "", {}, {}) for name, key in stages.items()}
    save_run(root, r)


def _age(path: Path, seconds: float) -> None:
    """Make a folder and everything in it look `seconds` old."""
    stamp = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (stamp, stamp))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three runs: the oldest alone references ingest/old and train/old; the two newest share ingest/new and
    reference train/a and train/b (training runs named 'train:<arm>:<seed>'); plus an unreferenced artifact,
    a stale partial build and a trash leftover. Everything is two days old."""
    store = ArtifactStore(tmp_path)
    for stage, key in (("ingest", "old"), ("ingest", "new"), ("train", "old"), ("train", "a"), ("train", "b"),
                       ("curriculum", "orphan")):
        _artifact(store, stage, key)
    (store.partial_path("extract", "half") / "chunk").mkdir(parents=True)
    (store.partial_path("extract", "half") / "chunk" / "0.bin").write_bytes(b"\0" * SIZE)
    (tmp_path / "extract" / ".trash-dead-123").mkdir()
    _record(tmp_path, "20260101-000000-aaaaaa", {"ingest": "old", "train:saerl:0": "old"})
    _record(tmp_path, "20260102-000000-bbbbbb", {"ingest": "new", "train:saerl:0": "a"})
    _record(tmp_path, "20260103-000000-cccccc", {"ingest": "new", "train:vanilla:0": "b"})
    for stage in ("ingest", "train", "curriculum", "extract"):
        _age(tmp_path / stage, 2 * DAY_S)
    return tmp_path


def _present(root: Path) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for p in root.glob("*/*") if p.is_dir() and p.parent.name != "runs"}


def test_dry_run_lists_without_deleting(root):
    before = _present(root)
    report = collect(root, keep_runs=2, dry_run=True)
    assert {f"{e.stage}/{e.path.name}" for e in report.removed} == {
        "ingest/old", "train/old", "curriculum/orphan", "extract/.partial-half", "extract/.trash-dead-123"}
    assert report.freed >= 4 * SIZE and _present(root) == before
    assert not (root / "extract" / ".lock-half").exists(), "a dry run creates no lock files"
    text = format_report(report)
    assert "would remove 5 folders" in text and "dry run" in text and "referenced by the 2 newest ended runs" in text


def test_a_dry_run_previews_a_root_it_cannot_write(root, monkeypatch):
    """`saerl gc --dry-run` on a root mounted read-only (or another user's) failed with [Errno 30] / [Errno 13] as
    soon as anything would go: it opened each existing build lock file for writing to try its lock. A dry run asks
    whether a build holds the lock reading the file (flock needs no write mode), so it previews such a root; a build
    holding a lock still keeps its folder. (Tests run as root, where chmod does not stop writes: a write-mode open
    under the root is refused here instead.)"""
    import builtins
    import errno
    import fcntl

    real_open = builtins.open

    def read_only(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and Path(file).resolve().is_relative_to(root.resolve()):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    assert (root / "ingest" / ".lock-old").exists() and (root / "curriculum" / ".lock-orphan").exists()
    with real_open(root / "curriculum" / ".lock-orphan", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a build of curriculum/orphan going on
        monkeypatch.setattr(builtins, "open", read_only)
        report = collect(root, keep_runs=2, dry_run=True)
        monkeypatch.setattr(builtins, "open", real_open)
    assert {f"{e.stage}/{e.path.name}" for e in report.removed} == {
        "ingest/old", "train/old", "extract/.partial-half", "extract/.trash-dead-123"}
    assert [f"{e.stage}/{e.key}" for e in report.locked] == ["curriculum/orphan"]


def test_collect_keeps_every_artifact_a_kept_run_references(root):
    report = collect(root, keep_runs=2)
    assert _present(root) == {"ingest/new", "train/a", "train/b"}
    assert len(report.removed) == 5 and not list(root.glob("*/.trash-*"))
    assert sorted(p.name for p in (root / "runs").iterdir()) == [
        "20260101-000000-aaaaaa.json", "20260102-000000-bbbbbb.json", "20260103-000000-cccccc.json"]
    store = ArtifactStore(root)
    assert store.is_complete("ingest", "new") and store.is_complete("train", "a")


def test_keep_runs_widens_what_is_kept(root):
    collect(root, keep_runs=3)
    assert _present(root) == {"ingest/new", "ingest/old", "train/a", "train/b", "train/old"}


def test_young_folders_stay(root):
    _age(root / "curriculum" / "orphan", 60)
    report = collect(root, keep_runs=2)
    assert "curriculum/orphan" in _present(root) and [e.key for e in report.young] == ["orphan"]
    collect(root, keep_runs=2, min_age_hours=0)
    assert "curriculum/orphan" not in _present(root)


def _hold_lock(root: str, ready, release) -> None:
    with ArtifactStore(root).lock("extract", "half"):
        ready.set()
        release.wait(30)


def test_a_build_holding_its_lock_is_never_deleted(root):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(root), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        report = collect(root, keep_runs=2)
        assert "extract/.partial-half" in _present(root) and [e.key for e in report.locked] == ["half"]
    finally:
        release.set()
        holder.join(30)
    collect(root, keep_runs=2)
    assert "extract/.partial-half" not in _present(root)


def test_an_unreadable_kept_record_stops_collection(root):
    (root / "runs" / "20260104-000000-dddddd.json").write_text("{broken")
    with pytest.raises(ValueError, match="not readable"):
        collect(root, keep_runs=2)
    assert "ingest/old" in _present(root)


def test_cli_gc(root, capsys):
    assert main(["gc", "--root", str(root), "--keep-runs", "2", "--dry-run"]) == 0
    assert "would remove 5 folders" in capsys.readouterr().out and "ingest/old" in _present(root)
    assert main(["gc", "--root", str(root), "--keep-runs", "2"]) == 0
    assert "removed 5 folders" in capsys.readouterr().out
    assert _present(root) == {"ingest/new", "train/a", "train/b"}


def test_cli_gc_refuses_a_negative_keep_runs_and_removes_nothing(root, capsys):
    """`saerl gc --keep-runs -1` was accepted and kept every run, which its help does not say."""
    before = _present(root)
    with pytest.raises(SystemExit) as exit_:
        main(["gc", "--root", str(root), "--keep-runs", "-1"])
    assert exit_.value.code == 2 and "--keep-runs: must be at least 0, got -1 (0 keeps nothing of ended runs)" in capsys.readouterr().err
    assert _present(root) == before
    assert main(["gc", "--root", str(root), "--keep-runs", "0", "--dry-run"]) == 0, "0 stays allowed"


def test_a_root_without_run_records_is_refused_unless_keep_runs_is_zero(root):
    for record in (root / "runs").iterdir():
        record.unlink()
    with pytest.raises(ValueError, match="no run records"):
        collect(root)
    assert "ingest/new" in _present(root)
    collect(root, keep_runs=0)
    assert _present(root) == set()


def test_a_build_published_while_gc_walks_it_is_skipped_not_a_crash(root, monkeypatch):
    """A running pipeline publishes its build (renames .partial-<key> to <key>, after removing its chunk folder)
    without regard to gc, which walks folders without their locks: a folder gone mid-walk is skipped."""
    import saerl.gc as gc

    real = gc.tree_stats
    partial = root / "extract" / ".partial-half"

    def publish_first(folder: Path) -> tuple[int, float]:
        if folder == partial:
            os.replace(partial, root / "extract" / "half")  # the build is published while gc looks at it
        return real(folder)

    monkeypatch.setattr(gc, "tree_stats", publish_first)
    report = collect(root, keep_runs=2)
    assert "extract/half" in _present(root) and "half" not in [e.key for e in report.removed]
    assert {f"{e.stage}/{e.key}" for e in report.removed} == {"ingest/old", "train/old", "curriculum/orphan",
                                                               "extract/dead"}


def test_a_run_still_going_keeps_what_it_recorded_when_newer_runs_overtake_it(root):
    """A long run (days of training) records train:vanilla:0, done two days ago, and trains on; newer runs push its
    record out of the newest keep_runs. Its evaluate stage will read that artifact: gc keeps it while the record is
    marked running, and collects it once the run has ended."""
    from saerl.runs import RUNNING, read_run

    path = root / "runs" / "20260101-000000-aaaaaa.json"
    record = read_run(path)
    record.extra[RUNNING] = True
    save_run(root, record)
    report = collect(root, keep_runs=2)
    assert {"ingest/old", "train/old"} <= _present(root) and report.running_kept == 1
    assert "and by 1 runs still going" in format_report(report)
    record.extra.pop(RUNNING)
    save_run(root, record)
    collect(root, keep_runs=2)
    assert _present(root) == {"ingest/new", "train/a", "train/b"}


def test_a_run_killed_before_it_recorded_its_end_keeps_nothing_while_a_live_one_does(root):
    """A run killed by SIGKILL or out of memory stays marked running in its record, and gc kept what it named until
    someone deleted the record by hand. Its live lock tells: held by a run still going (kept), left free by one that
    died (collected as any older run)."""
    from saerl.runs import RUNNING, live_lock, live_path, read_run

    path = root / "runs" / "20260101-000000-aaaaaa.json"
    record = read_run(path)
    record.extra[RUNNING] = True
    save_run(root, record)
    with live_lock(root, record.run_id):
        assert collect(root, keep_runs=2, dry_run=True).running_kept == 1
    live_path(root, record.run_id).touch()  # what a killed run leaves: the file, its lock free
    report = collect(root, keep_runs=2)
    assert report.running_kept == 0 and _present(root) == {"ingest/new", "train/a", "train/b"}


def test_a_live_run_keeps_what_it_plans_to_reuse_and_takes_no_place_among_the_newest(root):
    """gc during a run removed the old artifacts the run was about to reuse (its record named only the stages it had
    reached: the audit lost extract, sae and encode mid-run), and the live run took one of the --keep-runs places,
    pushing out an ended run's artifacts. A run's record now lists its planned keys from its start (RunRecord.extra
    PLANNED), kept while it is going, and the newest places go to ended runs."""
    from saerl.runs import PLANNED, RUNNING, live_lock

    live = RunRecord(name="demo", run_id="20260104-000000-dddddd",
                     extra={RUNNING: True, PLANNED: {"ingest": "old", "train:saerl:0": "old", "extract": "half"}})
    save_run(root, live)
    with live_lock(root, live.run_id):
        report = collect(root, keep_runs=2)
        assert {"ingest/old", "train/old", "ingest/new", "train/a", "train/b"} <= _present(root)
        assert "extract/.partial-half" in _present(root)  # the resume state of a build it plans (a killed one's)
        assert report.runs_kept == 2 and report.running_kept == 1
        assert "and by 1 runs still going" in format_report(report)
    live.extra.pop(RUNNING)
    live.extra.pop(PLANNED)
    live.stages = {"ingest": StageRecord("ingest", "new", "cached", "", {}, {})}
    save_run(root, live)  # ended: it takes the newest place, and what it only planned goes
    collect(root, keep_runs=2)
    assert _present(root) == {"ingest/new", "train/b"}


def test_cache_records_go_with_their_artifacts(root):
    """gc removed artifacts but left the orchestrator's cache record of each (prefect-results/<stage>-<key>): a
    record goes once its artifact is gone (removed now or before), at the same age; a record of a kept artifact, a
    young one and a file that names no stage stay."""
    records = root / CACHE_RECORDS_DIR
    records.mkdir()
    names = ["ingest-old", "ingest-new", "train-a", "curriculum-orphan", "score-removedlastweek", "score-young",
             "notastage-x"]
    for name in names:
        (records / name).write_text("{}")
    _age(records, 2 * DAY_S)
    os.utime(records / "score-young", None)  # written just now
    dry = collect(root, keep_runs=2, dry_run=True)
    assert sorted(p.name for p in records.iterdir()) == sorted(names), "a dry run deletes nothing"
    assert "would remove 5 folders and 3 cache records of artifacts gone" in format_report(dry)
    report = collect(root, keep_runs=2)
    assert sorted(p.name for p in records.iterdir()) == ["ingest-new", "notastage-x", "score-young", "train-a"]
    assert sorted(e.path.name for e in report.removed if e.kind == "record") == [
        "curriculum-orphan", "ingest-old", "score-removedlastweek"]
    assert not list(root.glob("score/.lock-*")), "no lock file is made for a stage folder that does not exist"


def test_a_collection_waits_for_a_run_saving_its_first_record_and_keeps_what_it_names(root, monkeypatch):
    """gc read the run records once, then removed: a run starting meanwhile saved its record (naming an artifact it
    would reuse) too late to be read, and the artifact went from under it (a finished run left with "gone"
    artifacts, or one that failed mid-way). A run saves that record under the root's gc lock, shared (claim); a
    collection holds it exclusive, so it waits for the save and keeps what the record names; and a run that
    claims while a collection is under way waits for it (on_wait told once)."""
    import threading

    from saerl import gc

    saving, release = threading.Event(), threading.Event()

    def starting_run() -> None:
        with gc.claim(root):
            saving.set()
            release.wait(10)
            _record(root, "20260104-000000-dddddd", {"curriculum:x": "orphan"})

    run = threading.Thread(target=starting_run)
    run.start()
    assert saving.wait(10)
    reports: list[gc.GcReport] = []
    collection = threading.Thread(target=lambda: reports.append(collect(root, keep_runs=1, min_age_hours=0)))
    collection.start()
    collection.join(0.5)
    assert collection.is_alive(), "the collection did not wait for the run's first record"
    release.set()
    run.join(10)
    collection.join(10)
    assert "curriculum/orphan" in _present(root) and "train/old" not in _present(root)
    assert reports and not reports[0].dry_run

    inside, leave = threading.Event(), threading.Event()
    body = gc._collect
    monkeypatch.setattr(gc, "_collect", lambda *a: (inside.set(), leave.wait(10), body(*a))[-1])
    collection = threading.Thread(target=lambda: collect(root, keep_runs=1, min_age_hours=0))
    collection.start()
    assert inside.wait(10)
    waits: list[bool] = []
    threading.Timer(0.5, leave.set).start()
    with gc.claim(root, lambda: waits.append(True)) as waited:
        assert waits == [True] and waited > 0
    collection.join(10)
    assert not collection.is_alive()
    missing = root / "no-such-root"
    with pytest.raises(ValueError, match="no run records"):
        collect(missing, keep_runs=1, min_age_hours=0)
    assert not missing.exists(), "a mistyped root is refused, not made (with a lock file in it)"


def test_the_latest_complete_run_of_each_config_keeps_its_artifacts_whatever_newer_runs_there_are(tmp_path):
    """`--keep-runs N` kept the N newest ended records whatever they were: a few `--until` previews, sweep children
    or failed runs pushed the latest complete run (trained policies, evaluations: GPU hours) out, and gc removed its
    artifacts without a word. The latest complete run of each config name (it recorded the last stage, evaluate,
    and ended ok) is kept besides the newest, and the report names it; an older complete run is not."""
    from saerl.runs import FAILED

    store = ArtifactStore(tmp_path)
    for stage, key in (("ingest", "a"), ("train", "a"), ("evaluate", "a"), ("train", "old"), ("evaluate", "old"),
                       ("ingest", "b"), ("train", "other"), ("evaluate", "other"), ("curriculum", "c")):
        _artifact(store, stage, key)
    _record(tmp_path, "20260101-000000-000000-aaaa", {"ingest": "a", "train:saerl:0": "old", "evaluate": "old"})
    _record(tmp_path, "20260102-000000-000000-aaaa", {"train:saerl:0": "other", "evaluate": "other"}, name="other")
    _record(tmp_path, "20260103-000000-000000-cccc", {"ingest": "a", "train:saerl:0": "a", "evaluate": "a"})
    _record(tmp_path, "20260104-000000-000000-dddd", {"ingest": "b", "curriculum": "c"})  # --until curriculum
    _record(tmp_path, "20260105-000000-000000-eeee", {"ingest": "b"},  # failed before its evaluation
            extra={FAILED: "train:saerl:0: RuntimeError: CUDA out of memory"})
    _record(tmp_path, "20260106-000000-000000-ffff", {"ingest": "b", "curriculum": "c"},  # a preview sweep's child
            extra={"sweep": "s1", "setting": "mix_ratio=0.1"})
    for stage in ("ingest", "train", "evaluate", "curriculum"):
        _age(tmp_path / stage, 2 * DAY_S)
    report = collect(tmp_path, keep_runs=2, dry_run=True)
    assert {f"{e.stage}/{e.key}" for e in report.removed} == {"train/old", "evaluate/old"}
    text = format_report(report)
    assert re.search(r"kept: the latest complete run of demo \(20260103-000000-000000-cccc\): 3 artifacts, "
                     r"\d+\.\d\d MB, not among the 2 newest ended runs", text), text  # MB: the manifests' size too
    assert "kept: the latest complete run of other (20260102-000000-000000-aaaa): 2 artifacts" in text
    collect(tmp_path, keep_runs=2)
    assert _present(tmp_path) == {"ingest/a", "train/a", "evaluate/a", "ingest/b", "curriculum/c", "train/other",
                                  "evaluate/other"}
    collect(tmp_path, keep_runs=0)  # keeps no ended run's artifacts at all
    assert _present(tmp_path) == set()


def test_the_latest_run_that_did_not_end_ok_keeps_the_partial_builds_it_planned(tmp_path):
    """A killed run's unfinished builds (`.partial-<key>`: a training run's checkpoints) went once older than
    --min-age-hours, even when it was the newest run: only a run still going kept what it planned. The latest run of
    each config name that did not end ok keeps the partial builds of its planned keys (its resume state; not the
    finished artifacts it planned), and the report says so; an older one's go."""
    from saerl.runs import FAILED, PLANNED, RUNNING, live_path

    store = ArtifactStore(tmp_path)
    for stage, key in (("ingest", "a"), ("train", "done"), ("curriculum", "planned")):
        _artifact(store, stage, key)
    for stage, key in (("train", "half"), ("train", "older"), ("train", "stray"), ("extract", "failedhalf")):
        (store.partial_path(stage, key) / "checkpoint-50").mkdir(parents=True)
        (store.partial_path(stage, key) / "checkpoint-50" / "model.bin").write_bytes(b"\0" * SIZE)
    killed = {RUNNING: True, PLANNED: {"ingest": "a", "curriculum": "planned", "train:saerl:0": "half"}}
    _record(tmp_path, "20260101-000000-000000-aaaa", {"ingest": "a"},  # an older killed run of demo
            extra={RUNNING: True, PLANNED: {"ingest": "a", "train:saerl:0": "older"}})
    _record(tmp_path, "20260102-000000-000000-bbbb", {"ingest": "a", "train:saerl:0": "done"})
    _record(tmp_path, "20260103-000000-000000-cccc", {"ingest": "a"}, extra=killed)
    _record(tmp_path, "20260104-000000-000000-dddd", {}, name="other",  # a failed run that kept its plan
            extra={FAILED: "extract: OSError: [Errno 28] No space left on device", PLANNED: {"extract": "failedhalf"}})
    for run_id in ("20260101-000000-000000-aaaa", "20260103-000000-000000-cccc"):
        live_path(tmp_path, run_id).touch()  # what a killed run leaves: the file, its lock free
    for stage in ("ingest", "train", "curriculum", "extract"):
        _age(tmp_path / stage, 2 * DAY_S)
    report = collect(tmp_path, keep_runs=1, dry_run=True)
    assert report.running_kept == 0
    assert {f"{e.stage}/{e.path.name}" for e in report.removed} == {
        "ingest/a", "train/done", "curriculum/planned", "train/.partial-older", "train/.partial-stray"}
    text = format_report(report)
    assert "kept: the resume state of the latest killed run of demo (20260103-000000-000000-cccc): " \
           "1 unfinished builds, 0.00 MB, not among the 1 newest ended runs" in text
    assert "kept: the resume state of the latest failed run of other (20260104-000000-000000-dddd): " \
           "1 unfinished builds, 0.00 MB" in text
    collect(tmp_path, keep_runs=1)
    assert _present(tmp_path) == {"train/.partial-half", "extract/.partial-failedhalf"}


def test_a_sweeps_complete_children_keep_their_own_latest_not_the_plain_runs_place(tmp_path):
    """A sweep's children carry their base config's name: the last complete child was 'the latest complete run of
    demo', and a plain `saerl run` of demo before the sweep lost its trained policies and evaluation. A config's
    plain runs and its sweeps keep their own latest complete run. A failed run's resume state goes once a newer run
    of its line is complete (its checkpoints are stale: GBs a failure would otherwise hold until the next one)."""
    from saerl.runs import FAILED, PLANNED

    store = ArtifactStore(tmp_path)
    for key in ("plain", "child0", "child1", "child2", "child3"):
        _artifact(store, "train", key)
        _artifact(store, "evaluate", key)
    (store.partial_path("train", "stale") / "checkpoint-50").mkdir(parents=True)
    _record(tmp_path, "20260101-000000-000000-aaaa", {}, extra={FAILED: "train:saerl:0: boom",
                                                                 PLANNED: {"train:saerl:0": "stale"}})
    _record(tmp_path, "20260102-000000-000000-aaaa", {"train:saerl:0": "plain", "evaluate": "plain"})
    for i in range(4):
        _record(tmp_path, f"2026010{3 + i}-000000-000000-aaaa", {"train:saerl:0": f"child{i}", "evaluate": f"child{i}"},
                extra={"sweep": "s1", "setting": f"mix_ratio=0.{i}"})
    for stage in ("train", "evaluate"):
        _age(tmp_path / stage, 2 * DAY_S)
    report = collect(tmp_path, keep_runs=3, dry_run=True)
    assert {f"{e.stage}/{e.path.name}" for e in report.removed} == {"train/child0", "evaluate/child0",
                                                                    "train/.partial-stale"}
    text = format_report(report)
    assert "kept: the latest complete run of demo (20260102-000000-000000-aaaa): 2 artifacts" in text
    assert "resume state" not in text



PLAIN_RUN = "20260101-000000-000000-aaaa"  # a plain complete run of demo, before three complete sweeps of it


def _swept_root(root: Path) -> dict[str, list[str]]:
    """A root that sweeps regularly: PLAIN_RUN (a complete `saerl run` of demo), then three complete sweeps of demo,
    s1, s2 and s3, of two children each (mix_ratio=0.1 and 0.2), every artifact two days old.
    out: {sweep id: its children's run ids, oldest first}."""
    store = ArtifactStore(root)
    _artifact(store, "train", "plain")
    _artifact(store, "evaluate", "plain")
    _record(root, PLAIN_RUN, {"train:saerl:0": "plain", "evaluate": "plain"})
    children: dict[str, list[str]] = {}
    for day, sweep in enumerate(("s1", "s2", "s3"), start=2):
        for i in (1, 2):
            run_id, key = f"2026010{day}-00000{i}-000000-aaaa", f"{sweep}-{i}"
            _artifact(store, "train", key)
            _artifact(store, "evaluate", key)
            _record(root, run_id, {"train:saerl:0": key, "evaluate": key},
                    extra={"sweep": sweep, "setting": f"mix_ratio=0.{i}"})
            children.setdefault(sweep, []).append(run_id)
    for stage in ("train", "evaluate"):
        _age(root / stage, 2 * DAY_S)
    return children


def test_only_the_newest_sweep_of_a_config_keeps_its_last_complete_child_beside_the_newest(tmp_path):
    """gc's 'latest complete run' was kept per sweep: every complete sweep kept its last child (trained policies,
    evaluation) for good, whatever --keep-runs said, so a root that sweeps on a schedule grew without bound, and the
    report called each of them 'the latest complete run of demo'. Now a config's plain runs keep their latest
    complete run and its sweeps, all together, theirs: the newest sweep's last complete child, named with its sweep
    and setting; an older sweep's children go like any run outside the newest."""
    children = _swept_root(tmp_path)
    report = collect(tmp_path, keep_runs=1, dry_run=True)
    assert {f"{e.stage}/{e.key}" for e in report.removed} == {
        f"{stage}/{sweep}-{i}" for stage in ("train", "evaluate") for sweep in ("s1", "s2") for i in (1, 2)} | {
        "train/s3-1", "evaluate/s3-1"}
    text = format_report(report)
    kept = [line for line in text.splitlines() if line.startswith("kept: the latest complete run")]
    assert kept == [
        f"kept: the latest complete run of demo ({PLAIN_RUN}): 2 artifacts, 0.00 MB, not among the 1 newest ended runs",
        f"kept: the latest complete run of demo's sweeps ({children['s3'][-1]}: sweep s3, setting mix_ratio=0.2): "
        "2 artifacts, 0.00 MB"], text
    collect(tmp_path, keep_runs=1)
    assert _present(tmp_path) == {"train/plain", "evaluate/plain", "train/s3-2", "evaluate/s3-2"}


def test_an_older_sweeps_children_are_forgotten_like_any_run(tmp_path):
    """`--forget-runs-older-than-days` never forgot the last child of any complete sweep (with its run record,
    MLflow runs and `sweeps/<id>/`), so it did not bound a root that sweeps. Now only the config's latest complete
    plain run and its newest sweep's last complete child are kept besides the newest: every child of an older sweep
    is forgotten."""
    from saerl.gc import forgettable

    children = _swept_root(tmp_path)
    forgotten = {r.run_id for r in forgettable(tmp_path, keep_runs=1, days=0, now=time.time())}
    assert forgotten == {*children["s1"], *children["s2"], children["s3"][0]}


# --- forgetting old runs (`saerl gc --forget-runs-older-than-days`) ---

SWEEP_FOLDER_BYTES = 3_000_000  # what a sweep's folder (its table, its report) holds in the test below


def test_forgetting_a_sweeps_runs_counts_and_removes_its_folder_and_keeps_one_with_a_run_left(tmp_path):
    """A sweep's folder (`sweeps/<id>/`) goes with the last of its runs, and the report's line counts its bytes with
    the run records' (a dry run's line too, which removes nothing); a sweep with a run left keeps its folder. Runs
    with no MLflow store (no tracking.uri in their records) need none to be forgotten."""
    from saerl.runs import ENDED, SWEEP

    now = time.time()
    ended = {"20260101-000000-000000-aaaa": ("s1", 30), "20260102-000000-000000-aaaa": ("s1", 30),
             "20260103-000000-000000-aaaa": ("s2", 30), "20260104-000000-000000-aaaa": ("s2", 1),
             "20260105-000000-000000-aaaa": (None, 1)}
    for run_id, (sweep, days) in ended.items():
        _record(tmp_path, run_id, {}, extra={ENDED: now - days * DAY_S} | ({SWEEP: sweep} if sweep else {}))
    for sweep in ("s1", "s2"):
        (tmp_path / "sweeps" / sweep).mkdir(parents=True)
        (tmp_path / "sweeps" / sweep / "table.txt").write_bytes(b"x" * SWEEP_FOLDER_BYTES)
    records = sum(p.stat().st_size for p in (tmp_path / "runs").glob("2026010[123]-*.json"))

    def line(dry_run: bool) -> str:
        report = collect(tmp_path, keep_runs=1, forget_days=7, dry_run=dry_run, now=now)
        return next(x for x in format_report(report).splitlines() if "nothing keeps" in x)

    expected = "3 runs that ended 7+ days ago and that nothing keeps and 1 sweeps whose runs all went: run records "
    assert line(dry_run=True) == f"would forget {expected}{(records + SWEEP_FOLDER_BYTES) / 1e6:.2f} MB"
    assert (tmp_path / "sweeps" / "s1").is_dir() and len(list((tmp_path / "runs").glob("*.json"))) == len(ended)
    assert line(dry_run=False) == f"forgot {expected}{(records + SWEEP_FOLDER_BYTES) / 1e6:.2f} MB"
    assert not (tmp_path / "sweeps" / "s1").exists() and (tmp_path / "sweeps" / "s2" / "table.txt").is_file()


NOW = time.time()
OLD, RUNNING_ID, LATEST, YOUNG, SWEPT, SWEPT_KEPT = (
    "20260101-000000-000000-aaaa", "20260102-000000-000000-bbbb", "20260103-000000-000000-cccc",
    "20260106-000000-000000-ffff", "20260104-000000-000000-dddd", "20260105-000000-000000-eeee")


def _tracked(root: Path, run_id: str, uri: str | None = None, name: str = "demo") -> None:
    """An MLflow parent run for saerl run `run_id` of config `name` (in the root's store, or `uri`) with a nested stage
    run, each with a logged file: what a run leaves in mlflow.db and mlruns/."""
    from saerl.config import load_config
    from saerl.tracking import Tracker

    tracker = Tracker(load_config(None, [f"name={name}"] + ([f"tracking.uri={uri}"] if uri else [])), root, run_id)
    tracker.log_text("config", "config.yaml")
    tracker.log_stage("ingest", "computed", "k", "computed", 1.0, {}, {"rows": 1.0})
    logged = root.parent / "logged.txt"
    logged.write_text("a table")
    tracker.log_artifact(logged, "ingest")
    tracker.finish()


def _mlflow_runs(root: Path, uri: str | None = None) -> dict[str, list]:
    """{saerl run id: [its parent's and nested runs]} of a store, deleted runs too."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from saerl.tracking import PARENT_TAG, RUN_ID_TAG, root_store_uri

    client = MlflowClient(tracking_uri=uri or root_store_uri(root))
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(experiments, run_view_type=ViewType.ALL)
    parents = {r.info.run_id: r.data.tags[RUN_ID_TAG] for r in runs if RUN_ID_TAG in r.data.tags}
    out: dict[str, list] = {}
    for r in runs:
        out.setdefault(parents.get(r.data.tags.get(PARENT_TAG, r.info.run_id), "?"), []).append(r)
    return out


@pytest.fixture
def tracked_root(tmp_path: Path) -> Path:
    """Six runs of demo, each tracked in the root's MLflow store: OLD (ended 10 days ago, an --until preview),
    RUNNING_ID (started 10 days ago, still going: its live lock is held by the test), LATEST (the latest complete
    run, ended 9 days ago), SWEPT (a preview child of sweep s1, ended 8 days ago), SWEPT_KEPT (a preview child of
    sweep s2, ended 8 days ago) and YOUNG (a preview child of s2, ended a day ago, the newest)."""
    from saerl.runs import ENDED, RUNNING, SWEEP

    ended = {OLD: 10, LATEST: 9, SWEPT: 8, SWEPT_KEPT: 8, YOUNG: 1}
    for run_id in (OLD, RUNNING_ID, LATEST, SWEPT, SWEPT_KEPT, YOUNG):
        extra = {RUNNING: True} if run_id == RUNNING_ID else {ENDED: NOW - ended[run_id] * DAY_S}
        extra |= {SWEEP: "s1"} if run_id == SWEPT else {SWEEP: "s2"} if run_id in (SWEPT_KEPT, YOUNG) else {}
        stages = {"ingest": "i", "evaluate": "e"} if run_id == LATEST else {"ingest": "i"}
        _record(tmp_path, run_id, stages, extra=extra)
        _tracked(tmp_path, run_id)
    for sweep in ("s1", "s2"):
        (tmp_path / "sweeps" / sweep).mkdir(parents=True)
        (tmp_path / "sweeps" / sweep / "sweep.txt").write_text("table")
        _tracked(tmp_path, f"sweep {sweep}")
    return tmp_path


def _records(root: Path) -> set[str]:
    return {p.stem for p in (root / "runs").glob("*.json")}


@pytest.mark.slow
def test_forgetting_old_runs_deletes_their_records_and_purges_their_mlflow_runs(tracked_root):
    """A scheduled deployment's daily runs grew mlflow.db, mlruns/ and the run records for ever: gc kept them all,
    and the MLflow UI was the only way to delete runs. With --forget-runs-older-than-days, runs that ended that long
    ago and that gc keeps nothing of lose their record, their MLflow runs (parent and nested, purged: gone from
    every lifecycle stage, their logged files too) and a sweep's folder once all its runs went; a run still going,
    the latest complete run and the runs younger than D stay, with their MLflow runs."""
    from saerl.runs import live_lock

    root = tracked_root
    folders = {r.info.run_id: Path(r.info.artifact_uri.removeprefix("file://")).parent
               for runs in _mlflow_runs(root).values() for r in runs}
    assert all(f.is_dir() for f in folders.values())
    with live_lock(root, RUNNING_ID):
        report = collect(root, keep_runs=1, forget_days=7)
    gone = {OLD, SWEPT, SWEPT_KEPT}
    assert _records(root) == {RUNNING_ID, LATEST, YOUNG}
    assert report.forgotten is not None and sorted(report.forgotten.runs) == sorted(gone)
    left = _mlflow_runs(root)
    assert set(left) == {RUNNING_ID, LATEST, YOUNG, "sweep s2"}, "forgotten runs (sweep s1's own too) are purged"
    assert all(r.info.lifecycle_stage == "active" for runs in left.values() for r in runs)
    kept_ids = {r.info.run_id for runs in left.values() for r in runs}
    assert {i for i, f in folders.items() if not f.exists()} == set(folders) - kept_ids, "their logged files went"
    assert not (root / "sweeps" / "s1").exists() and (root / "sweeps" / "s2" / "sweep.txt").exists()
    text = format_report(report)
    assert "forgot 3 runs that ended 7+ days ago and that nothing keeps and 1 sweeps whose runs all went" in text
    assert re.search(r"MLflow sqlite:///.*mlflow\.db: deleted and purged 8 runs \(parents and stage runs\): logged "
                     r"files \d+\.\d\d MB, \d+\.\d\d MB of rows freed", text), text
    assert report.forgotten.stores[0].artifact_bytes > 0 and report.forgotten.stores[0].db_bytes > 0


@pytest.mark.slow
def test_a_collection_cut_short_while_forgetting_leaves_nothing_the_next_cannot_forget(tracked_root, monkeypatch):
    """Run records went before sweep folders: a collection cut short between the two left sweeps/s1/ with no record
    naming its sweep, so no later collection removed it. Sweep folders go first now."""
    import saerl.gc as gc

    root = tracked_root
    real_rmtree = gc.shutil.rmtree

    def cut(path, *args, **kwargs):  # cut short as it removes a sweep's folder (MLflow's purge removes folders too)
        if Path(path).parent == root / "sweeps":
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(gc.shutil, "rmtree", cut)
    with pytest.raises(KeyboardInterrupt):
        collect(root, keep_runs=1, forget_days=7)
    monkeypatch.setattr(gc.shutil, "rmtree", real_rmtree)
    assert (root / "sweeps" / "s1").exists() and SWEPT in _records(root)
    collect(root, keep_runs=1, forget_days=7)
    assert not (root / "sweeps" / "s1").exists() and SWEPT not in _records(root)


@pytest.mark.slow
def test_a_dry_run_of_forgetting_says_what_would_go_and_changes_nothing(tracked_root):
    root = tracked_root
    before = {k: sorted(r.info.lifecycle_stage for r in v) for k, v in _mlflow_runs(root).items()}
    report = collect(root, keep_runs=1, forget_days=7, dry_run=True)
    assert _records(root) == {OLD, RUNNING_ID, LATEST, SWEPT, SWEPT_KEPT, YOUNG} and (root / "sweeps" / "s1").exists()
    assert {k: sorted(r.info.lifecycle_stage for r in v) for k, v in _mlflow_runs(root).items()} == before
    text = format_report(report)
    assert "would forget 3 runs" in text and f"  {OLD}" in text and "would delete and purge 8 runs" in text, text
    assert RUNNING_ID not in report.forgotten.runs  # marked running, no live lock file: its end cannot be told
    # --keep-runs 0 keeps no artifact of an ended run, but forgetting still spares each config's latest complete run
    # (it listed LATEST, whose MLflow runs were then the only record of its results)
    none_kept = collect(root, keep_runs=0, forget_days=7, dry_run=True)
    assert LATEST not in none_kept.forgotten.runs and sorted(none_kept.forgotten.runs) == sorted(report.forgotten.runs)


def _files(folder: Path) -> set[Path]:
    """Every file under `folder`, relative to it."""
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_forgetting_runs_in_a_copied_root_removes_the_copys_files_never_the_originals(tracked_root,
                                                                                     tmp_path_factory):
    """In a root copied with `cp -a`, every run's artifact_uri in the copy's mlflow.db still names the original
    root's mlruns/: forgetting runs there purged the ORIGINAL root's logged files (rows of the copy, files of the
    original) and left the copy's own for ever. Now only files in the store's own mlruns/ go: the original keeps
    every file, the copy loses those of the runs it forgot (called before any repointing: forget_runs alone)."""
    import shutil

    from saerl.gc import forget_runs
    from saerl.runs import live_lock

    original = tracked_root
    copy = tmp_path_factory.mktemp("copied") / "root"
    shutil.copytree(original, copy, symlinks=True)
    before = _files(original / "mlruns")
    assert before == _files(copy / "mlruns") and before
    runs = {k: {r.info.run_id for r in v} for k, v in _mlflow_runs(copy).items()}
    assert all(r.info.artifact_uri.startswith((original / "mlruns").as_uri())
               for v in _mlflow_runs(copy).values() for r in v), "the copy's store names the original's files"
    with live_lock(copy, RUNNING_ID):
        forgotten = forget_runs(copy, keep_runs=1, days=7)
    assert sorted(forgotten.runs) == sorted([OLD, SWEPT, SWEPT_KEPT])
    assert _files(original / "mlruns") == before, "the original root lost files"
    gone = {i for k in (OLD, SWEPT, SWEPT_KEPT, "sweep s1") for i in runs[k]}
    left = {i for k, ids in runs.items() if k not in (OLD, SWEPT, SWEPT_KEPT, "sweep s1") for i in ids}
    assert gone and not any((copy / "mlruns" / i).exists() for i in gone), "the copy kept the forgotten runs' files"
    assert all((copy / "mlruns" / i / "artifacts").is_dir() for i in left)
    assert forgotten.stores[0].purged and forgotten.stores[0].artifact_bytes > 0


@pytest.mark.slow
def test_gc_repoints_a_copied_roots_store_before_forgetting(tracked_root, tmp_path_factory, caplog):
    """A copied root's MLflow store showed the original root's files (or none, the original gone) until a run
    repointed the one experiment it logged in. `saerl gc` repoints every experiment and its runs to the root's own
    mlruns/ first, saying so once; a dry run writes nothing."""
    import shutil

    from saerl.tracking import root_store_uri

    original = tracked_root
    for run_id, name in ((OTHER, "other"), (SHARED, "shared")):  # experiments of their own
        _record(original, run_id, {"ingest": "i"}, name=name)
        _tracked(original, run_id, name=name)
    copy = tmp_path_factory.mktemp("copied") / "root"
    shutil.copytree(original, copy, symlinks=True)
    own = (copy / "mlruns").resolve().as_uri()
    collect(copy, keep_runs=20, dry_run=True)
    assert not any(loc == own for loc in _locations(root_store_uri(copy)).values())
    with caplog.at_level("WARNING", logger="saerl.tracking"):
        collect(copy, keep_runs=20, min_age_hours=0)
    assert caplog.text.count("was moved or copied") == 1, caplog.text
    locations = _locations(root_store_uri(copy))
    assert set(locations) >= {"demo", "other", "shared"}
    assert all(loc == own for n, loc in locations.items() if n != "Default"), locations
    uris = [r.info.artifact_uri for v in _mlflow_runs(copy).values() for r in v]
    assert len(uris) > 10 and all(u.startswith(own + "/") for u in uris)
    theirs = (original / "mlruns").resolve().as_uri()
    assert all(loc == theirs for n, loc in _locations(root_store_uri(original)).items() if n != "Default")


def _locations(uri: str) -> dict[str, str]:
    """{experiment name: its artifact location} of a store, deleted ones too."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    return {e.name: e.artifact_location
            for e in MlflowClient(tracking_uri=uri).search_experiments(view_type=ViewType.ALL)}


@pytest.mark.slow
def test_a_store_that_fails_keeps_its_runs_and_one_elsewhere_is_only_asked_to_delete(tracked_root, tmp_path_factory):
    """A run tracked in a store other than the root's (a tracking server, a SQLite file elsewhere) has its MLflow runs
    deleted but not purged there (that store's own `mlflow gc` does it; the report says so), and a store that
    cannot be reached keeps its runs' records, for a later collection: nothing is left half forgotten."""
    from saerl.runs import ENDED, read_run, run_path

    root = tracked_root
    elsewhere = f"sqlite:///{tmp_path_factory.mktemp('other') / 'm.db'}"
    for run_id, uri in ((OLD, elsewhere), (SWEPT, "http://127.0.0.1:9")):
        record = read_run(run_path(root, run_id))
        record.config = {"tracking.uri": uri, "tracking.http_retries": 0, "tracking.http_timeout_s": 2}
        save_run(root, record)
    _tracked(root, OLD, elsewhere)
    for run_id in (OLD, SWEPT):  # saved again just now: their ENDED says when they ended
        assert read_run(run_path(root, run_id)).extra[ENDED] < NOW - 7 * DAY_S
    report = collect(root, keep_runs=1, forget_days=7)
    assert OLD not in _records(root) and SWEPT in _records(root) and SWEPT_KEPT not in _records(root)
    assert (root / "sweeps" / "s1").exists(), "a sweep whose run was kept back stays"
    other = _mlflow_runs(root, elsewhere)[OLD]
    assert len(other) == 2 and {r.info.lifecycle_stage for r in other} == {"deleted"}, "deleted, not purged"
    text = format_report(report)
    assert "deleted 2 runs (parents and stage runs); not this root's store" in text
    assert "MLflow at http://127.0.0.1:9 failed" in text and "its 1 runs are kept" in text
    # that store's experiment held OLD's runs alone: deleted (not purged) with them; a later run of demo tracked
    # there restores it (MLflow refuses runs in a deleted experiment: tracking went off for every later run)
    assert "own `mlflow gc` purges it; and 1 experiments left without runs: demo" in text, text
    assert _experiments(elsewhere) == {"0": ("Default", "active"), "1": ("demo", "deleted")}
    _tracked(root, "20261201-000000-000000-abcd", elsewhere)
    assert _experiments(elsewhere)["1"] == ("demo", "active")
    assert {r.info.lifecycle_stage for r in _mlflow_runs(root, elsewhere)["20261201-000000-000000-abcd"]} == {"active"}


@pytest.mark.slow
def test_gc_forgets_no_run_unless_asked_and_the_cli_flag_forgets(tracked_root, capsys, monkeypatch):
    """The default gc touches no run record nor MLflow run; the flag forgets, and with no Prefect API to reach (no
    PREFECT_API_URL, no Prefect home under the root) says that it skipped Prefect instead of failing."""
    from saerl.runs import PREFECT_TAGS, read_run, run_path

    root = tracked_root
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    record = read_run(run_path(root, OLD))
    record.extra[PREFECT_TAGS] = {"prefect.flow_run_id": "1f3c9150-4dde-43b8-806a-71fe2a58eb7e"}
    save_run(root, record)
    before = {k: len(v) for k, v in _mlflow_runs(root).items()}
    assert main(["gc", "--root", str(root), "--keep-runs", "1", "--min-age-hours", "0"]) == 0
    assert "forgot" not in capsys.readouterr().out
    assert len(_records(root)) == 6 and {k: len(v) for k, v in _mlflow_runs(root).items()} == before
    assert all(r.info.lifecycle_stage == "active" for runs in _mlflow_runs(root).values() for r in runs)
    assert main(["gc", "--root", str(root), "--keep-runs", "1", "--forget-runs-older-than-days", "7"]) == 0
    out = capsys.readouterr().out
    assert "forgot 3 runs" in out and _records(root) == {RUNNING_ID, LATEST, YOUNG}, out
    assert "Prefect: skipped: no runtime.prefect_api_url nor PREFECT_API_URL names a server and the root has no " \
        "Prefect home" in out


def _experiments(uri: str) -> dict[str, tuple[str, str]]:
    """{experiment id: (name, lifecycle stage)} of a store, deleted ones too."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    return {e.experiment_id: (e.name, e.lifecycle_stage)
            for e in MlflowClient(tracking_uri=uri).search_experiments(view_type=ViewType.ALL)}


OTHER, SHARED = "20260101-000000-000000-1111", "20260101-000000-000000-2222"  # runs of configs other and shared


@pytest.mark.slow
def test_forgetting_every_run_of_an_experiment_purges_it_and_their_report_pages_go(tracked_root):
    """Forgotten runs left their MLflow experiment behind, empty, and their report pages under reports/. Now an
    experiment saerl logged them in (a config's name) that no run is left in is deleted and purged from the root's
    store, never Default nor one holding anyone else's run (even deleted), and the files of reports/ named after a
    forgotten run go; a kept run's page and a page named otherwise stay. A dry run lists both and changes nothing."""
    from mlflow.tracking import MlflowClient

    from saerl.runs import ENDED
    from saerl.tracking import root_store_uri

    root, uri = tracked_root, root_store_uri(tracked_root)
    for run_id, name in ((OTHER, "other"), (SHARED, "shared")):  # previews (not complete), ended ok: forgettable
        _record(root, run_id, {"ingest": "i"}, name=name, extra={ENDED: NOW - 10 * DAY_S})
        _tracked(root, run_id, name=name)
    client = MlflowClient(tracking_uri=uri)
    ids = {name: i for i, (name, _) in _experiments(uri).items()}
    stranger = client.create_run(ids["shared"], run_name="logged by hand")  # not saerl's: keeps "shared"
    client.delete_run(stranger.info.run_id)
    reports = root / "reports"
    reports.mkdir()
    pages = [f"{OLD}.html", f"{OLD}.png", f"{SWEPT}.html", f"{LATEST}.html", f"{YOUNG}.html", "mine.html",
             f"{OLD}-copy.html"]
    for page in pages:
        (reports / page).write_text("<html></html>")
    before = _experiments(uri)

    dry = format_report(collect(root, keep_runs=1, forget_days=7, dry_run=True))
    assert "1 experiments left without runs: other" in dry and "would remove their 3 report files" in dry, dry
    assert f"  reports/{OLD}.png" in dry and sorted(p.name for p in reports.iterdir()) == sorted(pages)
    assert _experiments(uri) == before

    from saerl.gc import mlflow_database, sqlite_bytes
    from saerl.runs import RUNNING, read_run, run_path

    running = read_run(run_path(root, RUNNING_ID))  # ended a day ago: no run goes, so --vacuum may compact mlflow.db
    running.extra = {k: v for k, v in running.extra.items() if k != RUNNING} | {ENDED: NOW - DAY_S}
    save_run(root, running)
    size = sqlite_bytes(root / "mlflow.db")
    text = format_report(collect(root, keep_runs=1, forget_days=7, vacuum_dbs=[mlflow_database(root)]))
    assert OTHER not in _records(root) and SHARED not in _records(root)
    assert f"compacted MLflow {root.resolve() / 'mlflow.db'} (VACUUM): {size / 1e6:.2f} MB before" in text, text
    assert sqlite_bytes(root / "mlflow.db") < size, "the rows forgotten went back to the disk"
    assert "1 experiments left without runs: other" in text and "removed their 3 report files" in text, text
    after = _experiments(uri)
    assert {name for name, _ in after.values()} == {"Default", "demo", "shared"}, "other is purged"
    assert all(stage == "active" for _, stage in after.values())
    assert [r.info.run_id for r in _mlflow_runs(root)["?"]] == [stranger.info.run_id]
    assert sorted(p.name for p in reports.iterdir()) == sorted([f"{LATEST}.html", f"{YOUNG}.html", "mine.html",
                                                                f"{OLD}-copy.html"])
    _tracked(root, "20261201-000000-000000-abcd", name="other")  # a later run of other gets a new experiment
    assert "other" in {name for name, _ in _experiments(uri).values()}


def _bloated(db: Path, wal: bool = False) -> int:
    """A SQLite file with about 2 MB of free pages (rows written, then deleted), in WAL mode (Prefect's) or not
    (MLflow's); out: its bytes."""
    import sqlite3

    from saerl.gc import sqlite_bytes

    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db, isolation_level=None)
    if wal:
        con.execute("PRAGMA journal_mode = WAL")
    con.execute("CREATE TABLE t (x BLOB)")
    con.execute("BEGIN")  # one transaction: one sync, not one per row
    con.executemany("INSERT INTO t VALUES (?)", [(b"\0" * 1000,) for _ in range(2000)])
    con.execute("COMMIT")
    con.execute("DELETE FROM t")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return sqlite_bytes(db)


def _databases(root: Path) -> list:
    from flows.server import prefect_database
    from saerl.gc import mlflow_database

    return [mlflow_database(root), prefect_database(root)]


def test_vacuum_compacts_the_roots_sqlite_files_and_says_their_sizes(root, capsys):
    """Forgetting runs frees rows, but mlflow.db and prefect.db kept their size (SQLite reuses the pages), and
    `sqlite3 FILE VACUUM` by hand was the only way back. `saerl gc --vacuum` compacts both (a WAL file too) and prints
    each one's bytes before and after; a dry run says what it would give back, changes nothing and takes no lock."""
    from saerl.gc import sqlite_bytes

    sizes = {db.what: _bloated(db.path, wal=db.what == "Prefect") for db in _databases(root)}
    assert all(size > 2_000_000 for size in sizes.values())
    assert main(["gc", "--root", str(root), "--vacuum", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"would compact MLflow .*mlflow\.db: \d\.\d\d MB, [12]\.\d\d MB of it free pages", out), out
    assert "would compact Prefect" in out and {db.what: sqlite_bytes(db.path) for db in _databases(root)} == sizes
    assert not (root / "mlflow.db.lock").exists() and not (root / "prefect" / "server-start.lock").exists()
    assert main(["gc", "--root", str(root), "--vacuum"]) == 0
    out = capsys.readouterr().out
    for db in _databases(root):
        assert sqlite_bytes(db.path) < 100_000 < sizes[db.what]
        assert f"compacted {db.what} {db.path} (VACUUM): {sizes[db.what] / 1e6:.2f} MB before, " \
            f"{sqlite_bytes(db.path) / 1e6:.2f} MB after" in out, out
    assert main(["gc", "--root", str(root)]) == 0 and "compacted" not in capsys.readouterr().out, "only when asked"


def test_vacuum_is_refused_while_a_run_goes_on_the_root(root):
    from saerl.gc import sqlite_bytes
    from saerl.runs import RUNNING, live_lock

    dbs = _databases(root)
    sizes = [_bloated(db.path) for db in dbs]
    _record(root, "20260104-000000-dddddd", {"ingest": "new"}, extra={RUNNING: True})
    with live_lock(root, "20260104-000000-dddddd"):
        report = collect(root, vacuum_dbs=dbs)
    assert format_report(report).splitlines()[-1] == (
        f"--vacuum refused: 1 runs are going on {root} (20260104-000000-dddddd): run it again once they end "
        "(`saerl status --list`)")
    assert [sqlite_bytes(db.path) for db in dbs] == sizes


def test_a_process_is_named_by_its_programs_file_names_wherever_it_is_installed(tmp_path):
    """A deep install folder (CI's checkout) pushed 'prefect server start' past the cut: the program and the script an
    interpreter runs are named by file name, the rest of the line as given."""
    from saerl.gc import COMMAND_CHARS, command_line

    proc = tmp_path / "4242"
    proc.mkdir()
    venv = "/check/work/main/a/much/deeper/install/folder/than/any/test/machine/has/.venv/bin"
    (proc / "cmdline").write_bytes(f"{venv}/python\0{venv}/prefect\0server\0start\0--port\0/x/y\0".encode())
    assert command_line(proc) == "python prefect server start --port /x/y"
    (proc / "cmdline").write_bytes(("/usr/bin/sqlite3\0" + "a" * 200 + "\0").encode())
    line = command_line(proc)
    assert len(line) == COMMAND_CHARS and line.startswith("sqlite3 aaa") and line.endswith("...")
    assert command_line(tmp_path / "gone") == "?"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc (Linux)")
def test_vacuum_is_refused_while_another_process_holds_a_database_open(root):
    """A local Prefect server of the root keeps prefect.db open: compacting under it risks its writes failing
    ('database is locked'). The process holding it is named and nothing is compacted."""
    import subprocess
    import sys

    from saerl.gc import sqlite_bytes

    dbs = _databases(root)
    sizes = [_bloated(db.path, wal=True) for db in dbs]
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                               "c.execute('SELECT count(*) FROM t').fetchone(); print('open', flush=True); "
                               "sys.stdin.read()", str(dbs[1].path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        report = collect(root, vacuum_dbs=dbs)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    line = format_report(report).splitlines()[-1]
    assert line.startswith(f"--vacuum refused: pid {holder.pid} (") and "holds prefect.db" in line, line
    assert [sqlite_bytes(db.path) for db in dbs] == sizes
    assert "compacted Prefect" in format_report(collect(root, vacuum_dbs=dbs)), "once it ended"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc (Linux)")
def test_vacuum_is_refused_while_the_roots_prefect_server_runs(root, monkeypatch):
    """The root's own local Prefect server (as `saerl run` starts one) keeps prefect.db open while idle: --vacuum names
    it and compacts nothing; once it stopped, prefect.db is compacted. (The suite's session server, which a test of
    the same worker may have started, sets PREFECT_API_URL: prefect_server would use it and start none.)"""
    from flows.server import API_URL_ENV, prefect_database, prefect_server
    from saerl.gc import sqlite_bytes

    monkeypatch.delenv(API_URL_ENV, raising=False)
    db = prefect_database(root)
    with prefect_server(root):
        size = sqlite_bytes(db.path)
        line = format_report(collect(root, vacuum_dbs=[db])).splitlines()[-1]
        assert line.startswith("--vacuum refused: pid ") and "prefect server start" in line, line
        assert line.endswith("holds prefect.db open: run it again once it ends") and sqlite_bytes(db.path) == size
    assert "compacted Prefect" in format_report(collect(root, vacuum_dbs=[db]))


def test_a_database_sqlite_cannot_compact_is_a_line_and_stays_as_it_was(root, monkeypatch):
    """A connection writing for longer than the busy timeout (one /proc cannot show: this process's own) made VACUUM
    raise sqlite3.OperationalError 'database is locked'; it is a line now, and the other file is compacted."""
    import sqlite3

    import saerl.gc as gc
    from saerl.gc import sqlite_bytes

    monkeypatch.setattr(gc, "VACUUM_BUSY_TIMEOUT_S", 0.1)
    dbs = _databases(root)
    sizes = [_bloated(db.path) for db in dbs]
    writer = sqlite3.connect(dbs[0].path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        report = collect(root, vacuum_dbs=dbs)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    text = format_report(report)
    assert "MLflow mlflow.db: not compacted: SQLite said 'database is locked'" in text and "it is as it was" in text
    assert sqlite_bytes(dbs[0].path) == sizes[0] and sqlite_bytes(dbs[1].path) < sizes[1], text


def test_forget_days_must_be_an_age(capsys):
    from flows.cli import parse_args

    for bad in ("nan", "-1", "x"):
        with pytest.raises(SystemExit):
            parse_args(["gc", "--forget-runs-older-than-days", bad])
    assert "--forget-runs-older-than-days: must be a number of days of at least 0" in capsys.readouterr().err
    assert parse_args(["gc", "--forget-runs-older-than-days", "30"]).forget_runs_older_than_days == 30.0
    assert parse_args(["gc"]).forget_runs_older_than_days is None


def _ended_run(root: Path, tag: str, start: float) -> list[str]:
    """A complete run record (ingest and evaluate) of demo started at `start` (epoch seconds, its id from it, as a
    machine whose clock read that made it), ended a minute later, with its two artifacts two days old: their names."""
    from saerl.runs import ENDED, new_run_id

    store = ArtifactStore(root)
    keys = {stage: f"{tag}{stage}" for stage in ("ingest", "evaluate")}
    for stage, key in keys.items():
        _age(_artifact(store, stage, key), 2 * DAY_S)
    record = RunRecord(name="demo", run_id=new_run_id(start), started=start, extra={ENDED: start + 60})
    record.stages = {stage: StageRecord(stage, key, "computed", "", {}, {}) for stage, key in keys.items()}
    save_run(root, record)
    return [f"{stage}/{key}" for stage, key in keys.items()]


def test_a_run_recorded_while_the_clock_was_ahead_takes_no_place_among_the_newest(tmp_path):
    """Run ids are start times, so a run recorded while the clock was 3 days ahead sorts after the run that really
    finished 10 minutes ago: `gc --keep-runs 1` kept the skewed run and collected that run's artifacts. A run that
    started in the future is kept apart from the newest (its artifacts stay), and the report says which and why."""
    now = time.time()
    older = _ended_run(tmp_path, "older", now - 2 * DAY_S)
    skewed = _ended_run(tmp_path, "skewed", now + 3 * DAY_S + 1.5 * SECONDS_PER_HOUR)
    newest = _ended_run(tmp_path, "newest", now - 600)
    report = collect(tmp_path, keep_runs=1, dry_run=True)
    assert {f"{e.stage}/{e.path.name}" for e in report.removed} == set(older)
    assert {f"{e.stage}/{e.path.name}" for e in report.referenced} == {*skewed, *newest}
    text = format_report(report)
    assert re.search(r"kept: a run of demo that started in the future \(\S+, 3 d 01 h ahead of this machine's "
                     r"clock\): 2 artifacts, 0.00 MB; it takes no place among the 1 newest ended runs", text), text
    assert "clock or the one that ran it is off" in text
    assert {f"{e.stage}/{e.path.name}" for e in collect(tmp_path, keep_runs=0, dry_run=True).removed} == {
        *older, *skewed, *newest}, "--keep-runs 0 keeps no ended run, a skewed one neither"


def test_a_sweeps_own_mlflow_run_is_asked_of_the_first_store_holding_a_child_only():
    """A forgotten sweep whose children were tracked in two MLflow stores: each store is asked for its own runs, and
    the sweep's own run ('sweep <id>') of the first of them alone; a sweep with a run left is never named."""
    from saerl.gc import _store_requests
    from saerl.runs import SWEEP

    def child(run_id: str, sweep: str) -> RunRecord:
        return RunRecord(name="demo", run_id=run_id, extra={SWEEP: sweep})

    stores = {"sqlite:///a.db": [child("r1", "s1"), child("r2", "s2")], "sqlite:///b.db": [child("r3", "s1")]}
    assert _store_requests(stores, {"s1"}) == {"sqlite:///a.db": ["r1", "r2", "sweep s1"],
                                               "sqlite:///b.db": ["r3"]}
