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
    demo', and a plain `saerl run` of demo before the sweep lost its trained policies and evaluation. A plain run
    and each sweep keep their own latest complete run. A failed run's resume state goes once a newer run of its line
    is complete (its checkpoints are stale: GBs a failure would otherwise hold until the next one)."""
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
