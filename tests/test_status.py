"""saerl.status and `saerl status`: per stage run status, key, why, time and size; the recent runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ptys import drain, sized_pty

from flows.cli import main
from saerl.artifacts import ArtifactStore
from saerl.runs import RunRecord, StageRecord, UnknownRun, save_run
from saerl.status import KEY_CHARS, list_status, run_status

REPO = Path(__file__).resolve().parents[1]
SUBPROCESS_S = 120  # the most `saerl status` in a child process may take
PAYLOAD = 2_500_000  # bytes of the one file in each hand-made artifact (2.50 MB)
WHY = "computed: config changed: curriculum.mix_ratio 0.2->0.5"


def _runs(root: Path) -> tuple[RunRecord, RunRecord]:
    """Two runs of config 'demo': the second recomputes the curriculum and one training run, and names a
    training run whose artifact is gone (collected)."""
    store = ArtifactStore(root)
    for stage, key in (("curriculum", "c1" * 10), ("curriculum", "c2" * 10), ("train", "t1" * 10)):
        store.ensure(stage, key, lambda b: (b.path / "f.bin").write_bytes(b"\0" * PAYLOAD))
    first = RunRecord(name="demo", run_id="20260101-000000-aaaaaa", started=0.0)
    first.stages["curriculum"] = StageRecord("curriculum", "c1" * 10, "computed", "computed: no earlier run",
                                             {}, {}, 3.0, PAYLOAD)
    second = RunRecord(name="demo", run_id="20260102-000000-bbbbbb", started=86400.0)
    second.stages["curriculum"] = StageRecord("curriculum", "c2" * 10, "computed", WHY, {}, {}, 1.5, PAYLOAD)
    second.stages["train:saerl:0"] = StageRecord("train:saerl:0", "t1" * 10, "computed",
                                                 "computed: input changed: curriculum", {}, {}, 70.0, PAYLOAD)
    second.stages["train:vanilla:0"] = StageRecord("train:vanilla:0", "t9" * 10, "cached",
                                                   "cached: same code version, inputs and config", {}, {}, 0.1, PAYLOAD)
    for r in (first, second):
        save_run(root, r)
    return first, second


def _line(text: str, start: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith(start))


def test_run_status_shows_each_stage_run(tmp_path):
    _, second = _runs(tmp_path)
    text = run_status(tmp_path)  # latest
    assert text.splitlines()[0].startswith(f"run {second.run_id} (demo)")
    assert "3 stage runs, 2 computed, 1 cached" in text
    cur = _line(text, "curriculum")
    assert "computed" in cur and ("c2" * 10)[:KEY_CHARS] in cur and "1.5" in cur and "2.50" in cur and WHY in cur
    saerl = _line(text, "train:saerl:0")
    assert "input changed: curriculum" in saerl and "70.0" in saerl
    assert " gone " in _line(text, "train:vanilla:0"), "an artifact no longer on disk is shown as gone"
    shutil.rmtree(tmp_path / "train" / ("t1" * 10))
    assert " gone " in _line(run_status(tmp_path, "20260102"), "train:saerl:0")


def test_run_status_by_prefix_and_unknown(tmp_path):
    first, _ = _runs(tmp_path)
    assert run_status(tmp_path, "20260101").startswith(f"run {first.run_id}")
    with pytest.raises(UnknownRun, match="no unique run '2026'"):
        run_status(tmp_path, "2026")


def test_list_status_newest_first_and_unreadable_records(tmp_path, monkeypatch):
    """Newest first, an unreadable record named; a start time says its zone (run ids are UTC, the times local)."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        _list_newest_first(tmp_path)
    finally:
        monkeypatch.undo()
        time.tzset()


def _list_newest_first(tmp_path):
    first, second = _runs(tmp_path)
    (tmp_path / "runs" / "20260103-000000-cccccc.json").write_text("{not json")
    lines = list_status(tmp_path).splitlines()
    assert lines[0].split()[:5] == ["run", "name", "setting", "sweep", "started"]
    assert lines[1].startswith("20260103-000000-cccccc") and "unreadable" in lines[1]
    assert lines[2].startswith(second.run_id) and lines[3].startswith(first.run_id)
    assert lines[2].split()[2:9] == ["1970-01-02", "00:00:00", "UTC", "3", "2", "1", "71.6"]  # the time's zone said
    assert len(list_status(tmp_path, limit=1).splitlines()) == 2
    assert "no runs" in list_status(tmp_path / "empty")


def test_list_status_shows_a_sweep_childs_setting(tmp_path):
    from saerl.runs import SETTING, SWEEP

    save_run(tmp_path, RunRecord(name="demo", run_id="20260101-000000-aaaaaa", extra={SWEEP: "s1", SETTING: "mix_ratio=0.1"}))
    header, row = list_status(tmp_path).splitlines()[:2]
    assert row.split()[:3] == ["20260101-000000-aaaaaa", "demo", "mix_ratio=0.1"] and "setting" in header


def _told_apart(root: Path) -> dict[str, RunRecord]:
    """Runs a long-lived root holds (the audit's): two sweeps' children of the same setting, one --until; plain runs
    of other overrides (a root path that looks like one, a quoted list, held-out sets whose names hold '-' and '.'),
    --until previews among them; a deployment's run. in: the root; out: {what: record}, saved."""
    from saerl.runs import INVOCATION, SETTING, SWEEP, UNTIL

    sweep_a, sweep_b = "20261207-100422-204699-80d5", "20261207-100451-859534-9e9b"
    runs = {
        "plain": RunRecord(name="smoke", run_id="20261207-092914-259189-4512", extra={
            INVOCATION: "saerl run configs/smoke.yaml --root runs=old curriculum.mix_ratio=0.5", UNTIL: None}),
        "seeds": RunRecord(name="smoke", run_id="20261207-093019-033411-e372", extra={
            INVOCATION: "saerl -v run configs/smoke.yaml 'train.seeds=[0,1]' --root /r", UNTIL: None}),
        "seed3": RunRecord(name="smoke", run_id="20261207-093652-500035-87ff", extra={
            INVOCATION: "saerl run configs/smoke.yaml --root /r curriculum.seed=3 --until curriculum",
            UNTIL: "curriculum"}),
        "clusters": RunRecord(name="smoke", run_id="20261207-093750-358190-9fbb", extra={
            INVOCATION: "saerl run configs/smoke.yaml --root=/r score.n_clusters=5 --until=curriculum",
            UNTIL: "curriculum"}),
        "deployed": RunRecord(name="smoke", run_id="20261207-093800-000000-0001", extra={
            INVOCATION: "(deployment) saerl run configs/smoke.yaml name=nightly --until score", UNTIL: "score"}),
        "sets": RunRecord(name="smoke", run_id="20261207-093900-000000-0002", extra={  # set names hold '-' and '.'
            INVOCATION: "saerl run configs/smoke.yaml eval.sets.math-500=data/math500.jsonl "
                        "eval.sets.aime.2024=data/aime.jsonl", UNTIL: None}),
        "preview": RunRecord(name="smoke", run_id="20261207-095021-771479-4f00", extra={
            INVOCATION: "(equivalent) saerl run config.yaml runtime.artifact_root=NEW_ROOT tracking.uri=NEW_URI "
                        "--until curriculum", UNTIL: "curriculum", SWEEP: "20261207-095018-824054-e2b9",
            SETTING: "rotation=round_robin"}),
        "a": RunRecord(name="smoke", run_id="20261207-100434-547624-0563", extra={
            INVOCATION: "(equivalent) saerl run config.yaml runtime.artifact_root=NEW_ROOT tracking.uri=NEW_URI",
            SWEEP: sweep_a, SETTING: "mix_ratio=0.6"}),
        "b": RunRecord(name="smoke", run_id="20261207-100500-383200-0906", extra={
            INVOCATION: "(equivalent) saerl run config.yaml runtime.artifact_root=NEW_ROOT tracking.uri=NEW_URI",
            SWEEP: sweep_b, SETTING: "mix_ratio=0.6"}),
    }
    for record in runs.values():
        save_run(root, record)
    return runs


def _cells(table: str) -> dict[str, dict[str, str]]:
    """`status --list`'s rows (one line each) as {run id: {column: cell}}, cut where the header's columns start.
    in: the table; out: the cells."""
    import re

    header, *rows = table.splitlines()
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S+(?: \S+)?", header)]  # 'ran with' is one column
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return {row.split()[0]: {n: row[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
            for row in rows}


def test_list_status_tells_apart_the_runs_of_a_long_lived_root(tmp_path):
    """On a root of many runs `status --list` showed no overrides, --until or sweep: 26 plain runs of other
    overrides read alike (only their stage counts differed), and two sweeps' children of one setting were the same
    row. A sweep child shows the end of its sweep id; every run what it was run with (its overrides, from its
    command, and --until), in a last column: an override of a held-out set named with a '-' (eval.sets.math-500=F),
    which the config takes, was left out of it."""
    runs = _told_apart(tmp_path)
    table = list_status(tmp_path)
    cells = _cells(table)
    assert table.splitlines()[0].split()[-4:] == ["MB", "ended", "ran", "with"]
    ran = {what: cells[r.run_id]["ran with"] for what, r in runs.items()}
    assert ran == {"plain": "curriculum.mix_ratio=0.5", "seeds": "'train.seeds=[0,1]'",
                   "seed3": "curriculum.seed=3 --until curriculum", "clusters": "score.n_clusters=5 --until curriculum",
                   "deployed": "name=nightly --until score", "preview": "--until curriculum", "a": "", "b": "",
                   "sets": "eval.sets.math-500=data/math500.jsonl eval.sets.aime.2024=data/aime.jsonl"}
    a, b = cells[runs["a"].run_id], cells[runs["b"].run_id]
    assert (a["setting"], a["sweep"], b["setting"], b["sweep"]) == ("mix_ratio=0.6", "80d5", "mix_ratio=0.6", "9e9b")
    assert cells[runs["plain"].run_id]["sweep"] == "" and all(c["ended"] == "ok" for c in cells.values())


def test_list_status_wraps_what_a_run_was_run_with_under_its_column(tmp_path):
    """The last column is free text: on a terminal it is wrapped under its column (saerl.terminal.fit_cell), the
    columns before it never; on a pipe (no width) every run stays one line."""
    from saerl.runs import INVOCATION, UNTIL

    overrides = " ".join(f"curriculum.seed={i} score.n_clusters={i}" for i in range(4))
    save_run(tmp_path, RunRecord(name="smoke", run_id="20261207-092914-259189-4512", extra={
        INVOCATION: f"saerl run configs/smoke.yaml {overrides} --until curriculum", UNTIL: "curriculum"}))
    assert len(list_status(tmp_path).splitlines()) == 2
    header = list_status(tmp_path).splitlines()[0]
    column = header.index("ran with")
    lines = list_status(tmp_path, width=column + 50).splitlines()
    assert len(lines) > 2 and all(len(line) <= column + 50 for line in lines), lines
    assert all(line[:column].strip() == "" for line in lines[2:]), "continued under its column"
    assert " ".join(line[column:] for line in lines[1:]) == f"{overrides} --until curriculum"


def test_list_status_fits_a_terminal_leaving_out_its_least_useful_columns(tmp_path, monkeypatch, capsys):
    """`status --list` was about 133 columns wide on any terminal: its columns before `ran with` never wrap, so an
    80-column terminal broke every row. Where they do not fit, columns are left out (stages, the sum of computed and
    cached, first; then MB, seconds, ...: saerl.status.LIST_NARROW_DROPS; a column empty in every row before any), a
    line under the table naming those that held values; each run's row still starts with its id and says how it
    ended; `--json` is the same at any width."""
    import json

    from saerl.status import list_json
    from saerl.terminal import display_width

    runs = _told_apart(tmp_path)
    full = list_status(tmp_path).splitlines()
    assert full[0].split()[:6] == ["run", "name", "setting", "sweep", "started", "stages"]
    assert list_status(tmp_path, width=max(map(display_width, full))).splitlines() == full  # wide enough: as it was
    for width in (60, 80, 100, 120):
        lines = list_status(tmp_path, width=width).splitlines()
        assert all(display_width(line) <= width for line in lines), (width, lines)
        header = lines[0].split()
        assert header[:2] == ["run", "name"] and "ended" in header and "stages" not in header, (width, header)
        for record in runs.values():
            row = next(line for line in lines if line.startswith(record.run_id))
            assert row.split()[1] == "smoke" and " ok" in row, (width, row)
        assert any(line.startswith("left out to fit") and "stages" in line for line in lines), (width, lines)
    assert "setting" in list_status(tmp_path, width=80).splitlines()[0], "a sweep child's setting stays at 80"
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["status", "--list", "--json", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == json.dumps(list_json(tmp_path), indent=1) + "\n"
    assert main(["status", "--list", "--root", str(tmp_path)]) == 0
    assert all(display_width(line) <= 60 for line in capsys.readouterr().out.splitlines())


def test_list_status_adds_no_blank_line_under_a_run_given_nothing_at_a_width_its_padding_passes(tmp_path):
    """A run given no overrides has an empty last column: at a width between its row and its padded row (about 120
    columns beside a run that has overrides), its row was followed by a blank line. Each run stays one line there,
    at any width, columns left out to fit it or not (saerl.terminal.fit_columns)."""
    from saerl.runs import INVOCATION, UNTIL

    save_run(tmp_path, RunRecord(name="smoke", run_id="20261207-092914-259189-4512",
                                 extra={INVOCATION: "saerl run configs/smoke.yaml --until score", UNTIL: "score"}))
    save_run(tmp_path, RunRecord(name="smoke", run_id="20261207-093914-259189-4513",  # newer: listed first
                                 extra={INVOCATION: "saerl run configs/smoke.yaml", UNTIL: None}))
    rows = list_status(tmp_path).splitlines()
    padded = rows[0].index("ran with")  # where the empty cell would start
    for width in range(40, padded + 12):
        lines = list_status(tmp_path, width=width).splitlines()
        assert "" not in lines and len(lines) >= 3, (width, lines)
        plain = next(i for i, line in enumerate(lines) if line.startswith("20261207-093914"))
        assert lines[plain + 1].startswith("20261207-092914"), ("one line", width, lines)


def test_cli_status(tmp_path, capsys):
    _, second = _runs(tmp_path)
    assert main(["status", "--root", str(tmp_path)]) == 0
    assert WHY in capsys.readouterr().out
    assert main(["status", "--list", "--root", str(tmp_path)]) == 0
    assert second.run_id in capsys.readouterr().out
    assert main(["status", "nope", "--root", str(tmp_path)]) == 2
    assert "no unique run 'nope'" in capsys.readouterr().err


def test_run_status_lists_stage_runs_in_pipeline_order(tmp_path):
    """A saved record's JSON sorts stage runs by name; status shows them as the run printed them."""
    rec = RunRecord(name="demo", run_id="20260101-000000-aaaaaa")
    for name in ("testbed", "extract", "curriculum", "train:saerl:0", "train:vanilla:0", "evaluate"):
        rec.stages[name] = StageRecord(name, "k" * 20, "cached", "cached: same", {}, {})
    save_run(tmp_path, rec)
    lines = run_status(tmp_path).splitlines()[2:]
    assert [ln.split()[0] for ln in lines] == list(rec.stages)


def test_cli_status_limit_must_be_at_least_one(tmp_path, capsys):
    """--limit 0 printed 'no runs under ...' beside saved runs, and --limit -1 left out the oldest run."""
    _runs(tmp_path)
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit) as exit_:
            main(["status", "--list", "--limit", bad, "--root", str(tmp_path)])
        assert exit_.value.code == 2 and "--limit: must be at least 1" in capsys.readouterr().err


def test_status_of_an_empty_root_says_how_to_get_a_run(tmp_path, capsys):
    assert main(["status", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no run records" in err and "saerl run CONFIG" in err and "--root" in err


def test_list_status_names_the_training_run_a_failed_run_stopped_at(tmp_path):
    """`status --list` cut the failed stage run at its first colon: a run that failed in train:vanilla:1 read
    'failed at train', not which arm and seed."""
    from saerl.runs import FAILED

    rec = RunRecord(name="demo", run_id="20260101-000000-aaaaaa")
    rec.extra[FAILED] = "train:vanilla:1: RuntimeError: CUDA error: out of memory"
    save_run(tmp_path, rec)
    assert list_status(tmp_path).splitlines()[1].endswith("failed at train:vanilla:1")
    rec.extra[FAILED] = "before the first stage: KeyboardInterrupt: "
    save_run(tmp_path, rec)
    assert list_status(tmp_path).splitlines()[1].endswith("failed at before the first stage")


def test_a_run_a_person_stopped_reads_stopped_not_failed(tmp_path):
    """Ctrl-C or SIGTERM was recorded as a failure ('failed at testbed', 'KeyboardInterrupt:'): a stop is no error.
    The record says where and by which signal, status lists it so, and MLflow's status is KILLED."""
    from saerl.report import tracked_status
    from saerl.runs import STOPPED

    rec = RunRecord(name="demo", run_id="20260101-000000-aaaaaa")
    rec.extra[STOPPED] = "train:vanilla:1: SIGTERM"
    save_run(tmp_path, rec)
    assert list_status(tmp_path).splitlines()[1].endswith("stopped at train:vanilla:1 (SIGTERM)")
    assert "STOPPED at train:vanilla:1: SIGTERM" in run_status(tmp_path)
    assert tracked_status(rec) == "KILLED"


def test_a_record_still_marked_running_reads_unfinished_not_ok(tmp_path):
    """A run killed before it recorded its end (SIGKILL, out of memory) was listed as ended 'ok'."""
    from saerl.runs import RUNNING, UNFINISHED

    rec = RunRecord(name="demo", run_id="20260101-000000-aaaaaa", extra={RUNNING: True})
    save_run(tmp_path, rec)
    assert list_status(tmp_path).splitlines()[1].endswith(" unfinished")
    assert list_status(tmp_path).splitlines()[-1] == UNFINISHED, "the word in the table, what it means under it"
    assert run_status(tmp_path).splitlines()[1] == UNFINISHED.upper()


def test_list_status_explains_killed_and_unfinished_once_however_many_runs_ended_so(tmp_path):
    """`status --list` says what 'killed' and 'unfinished' mean under its table: once each, not once a run (a root
    of many killed runs would repeat the 170-character text of killed for each)."""
    from saerl.runs import KILLED, RUNNING, UNFINISHED, live_path

    for i in range(3):
        save_run(tmp_path, RunRecord(name="demo", run_id=f"2026010{i + 1}-000000-aaaaaa", extra={RUNNING: True}))
    for i in range(2):  # their live lock's file left and free: their process ended without recording how
        live_path(tmp_path, f"2026010{i + 1}-000000-aaaaaa").touch()
    lines = list_status(tmp_path).splitlines()
    assert [line.split()[-1] for line in lines[1:4]] == ["unfinished", "killed", "killed"], lines
    assert lines[4:] == [UNFINISHED, KILLED], "in the order the table shows them"


def test_a_record_marked_running_reads_running_while_its_process_lives_and_killed_after(tmp_path):
    """A run's live lock tells a run still going from one killed before it recorded its end (both read 'unfinished:
    still running, or killed' for as long as the record stayed)."""
    from saerl.runs import KILLED, RUNNING, STILL_RUNNING, live_lock, live_path

    rec = RunRecord(name="demo", run_id="20260101-000000-aaaaaa", extra={RUNNING: True})
    save_run(tmp_path, rec)
    with live_lock(tmp_path, rec.run_id):
        assert list_status(tmp_path).splitlines()[1].endswith(STILL_RUNNING)
        assert run_status(tmp_path).splitlines()[1] == STILL_RUNNING.upper()
    # a run whose end was cut short before its record said so (a second Ctrl-C during the first's handling) leaves
    # the file, its lock free: killed, not "unfinished" for ever
    assert live_path(tmp_path, rec.run_id).exists()
    assert list_status(tmp_path).splitlines()[1].endswith(" killed") and list_status(tmp_path).splitlines()[-1] == KILLED
    assert run_status(tmp_path).splitlines()[1] == KILLED.upper()
    with live_lock(tmp_path, rec.run_id):
        rec.extra.pop(RUNNING)
        save_run(tmp_path, rec)  # the run recorded its end
    assert not live_path(tmp_path, rec.run_id).exists()  # a run that ends removes it


def test_run_status_marks_a_corrupt_artifact_and_how_to_rebuild_it(tmp_path):
    """A truncated file of a stored artifact (`saerl report` names it unusable) showed as a healthy artifact with
    its size on disk. Status checks each artifact's files against its manifest (sizes only: no hashing)."""
    from saerl.artifacts import MANIFEST
    from saerl.status import CORRUPT, REBUILD_HINT

    _runs(tmp_path)
    payload = tmp_path / "curriculum" / ("c2" * 10) / "f.bin"
    payload.write_bytes(payload.read_bytes()[:-100])  # truncated
    text = run_status(tmp_path)
    cur = _line(text, "curriculum")
    assert cur.split()[5] == CORRUPT and WHY in cur, cur
    note = _line(text, f"{CORRUPT}: curriculum")
    assert f"size mismatch {payload}: {PAYLOAD - 100} bytes, the manifest records {PAYLOAD}" in note
    assert ("c2" * 10)[:KEY_CHARS] in note and note.endswith(REBUILD_HINT)
    assert _line(text, "train:saerl:0").split()[5] == "2.50", "an intact artifact keeps its size"
    assert " gone " in _line(text, "train:vanilla:0") and "corrupt: train" not in text

    (tmp_path / "train" / ("t1" * 10) / MANIFEST).unlink()  # a folder without its manifest read as gone
    saerl = _line(run_status(tmp_path), f"{CORRUPT}: train:saerl:0")
    assert "unreadable manifest" in saerl and REBUILD_HINT in saerl


def test_run_status_verify_hashes_what_the_quick_check_cannot_see(tmp_path):
    """A changed byte that keeps the file's size passes the quick (size) check; verify=True hashes as a run does."""
    from saerl.status import CORRUPT

    _runs(tmp_path)
    payload = tmp_path / "curriculum" / ("c2" * 10) / "f.bin"
    payload.write_bytes(b"\1" + payload.read_bytes()[1:])
    assert CORRUPT not in run_status(tmp_path)
    assert f"hash mismatch {payload}" in _line(run_status(tmp_path, verify=True), f"{CORRUPT}: curriculum")


def test_cli_status_shows_a_corrupt_artifact(tmp_path, capsys):
    _runs(tmp_path)
    payload = tmp_path / "curriculum" / ("c2" * 10) / "f.bin"
    payload.write_bytes(b"")
    assert main(["status", "--root", str(tmp_path)]) == 0
    assert "corrupt: curriculum" in capsys.readouterr().out


def test_cli_status_verify_hashes_every_file(tmp_path, capsys):
    """`saerl status --verify` hashes (the quick check cannot see a changed byte that keeps the size); --help says so."""
    _runs(tmp_path)
    payload = tmp_path / "curriculum" / ("c2" * 10) / "f.bin"
    payload.write_bytes(b"\1" + payload.read_bytes()[1:])
    assert main(["status", "--root", str(tmp_path)]) == 0
    assert "corrupt" not in capsys.readouterr().out
    assert main(["status", "--root", str(tmp_path), "--verify"]) == 0
    assert f"hash mismatch {payload}" in _line(capsys.readouterr().out, "corrupt: curriculum")
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "--verify" in capsys.readouterr().out


def test_status_uses_no_private_manifest_reader():
    """status checks artifacts through ArtifactStore.problems (hashes=False), not a copy of its manifest reading."""
    import saerl.status

    assert not hasattr(saerl.status, "_manifest_entries") and not hasattr(saerl.status, "size_problems")


def test_on_disk_size_stats_no_file_the_manifest_check_already_stat_ed(tmp_path, monkeypatch):
    """Status stat'ed every file of an artifact twice: once in the manifest check, once again to add up its size.
    The size now takes the files the manifest lists at their recorded sizes (the check just found them so) and stats
    only the others (the manifest itself, a file added since), so it is the same number as before."""
    import pathlib

    from saerl.artifacts import MANIFEST
    from saerl.status import MB, disk_bytes

    _runs(tmp_path)
    folder = tmp_path / "curriculum" / ("c2" * 10)
    (folder / "later").mkdir()
    (folder / "later" / "extra.txt").write_bytes(b"x" * 1234)
    every_file = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert every_file == PAYLOAD + 1234 + (folder / MANIFEST).stat().st_size
    stat_ed = []
    real_stat = pathlib.Path.stat
    monkeypatch.setattr(pathlib.Path, "stat", lambda self, **kw: stat_ed.append(self.name) or real_stat(self, **kw))
    assert disk_bytes(folder) == every_file
    assert "f.bin" not in stat_ed and {"extra.txt", MANIFEST} <= set(stat_ed)
    monkeypatch.undo()
    assert _line(run_status(tmp_path), "curriculum").split()[5] == f"{every_file / MB:.2f}"


def test_an_artifact_collected_during_the_listing_reads_gone(tmp_path, monkeypatch):
    """`saerl gc` removing an artifact between its manifest check and the size count: the row says gone instead of
    the listing failing."""
    from saerl import status

    _runs(tmp_path)
    real = status.disk_bytes

    def collected(folder):
        import shutil

        shutil.rmtree(folder)
        return real(folder)

    monkeypatch.setattr(status, "disk_bytes", collected)
    assert _line(run_status(tmp_path), "curriculum").split()[5] == "gone"


def test_status_paths_shows_where_each_stage_runs_artifact_is(tmp_path, capsys):
    """Status showed a 12-character key prefix and no path, so nothing said where a run's eval.parquet (or any
    artifact file) was. `--paths` adds each stage run's artifact folder under the root, where its files are; the
    default table is unchanged."""
    _, second = _runs(tmp_path)
    text = run_status(tmp_path, paths=True)
    header = text.splitlines()[1].split()
    assert header[:8] == ["stage", "status", "key", "seconds", "MB", "on", "disk", "path"]
    folder = tmp_path / "curriculum" / ("c2" * 10)
    cur = _line(text, "curriculum")
    assert cur.split()[6] == str(folder) and (Path(cur.split()[6]) / "f.bin").is_file() and cur.endswith(WHY)
    assert _line(text, "train:vanilla:0").split()[5:7] == ["gone", str(tmp_path / "train" / ("t9" * 10))]
    assert "path" not in run_status(tmp_path).splitlines()[1] and str(folder) not in run_status(tmp_path)
    assert main(["status", "--root", str(tmp_path), "--paths"]) == 0
    assert str(folder) in _line(capsys.readouterr().out, "curriculum")
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "--paths" in capsys.readouterr().out


def test_the_status_header_names_the_code_the_run_ran(tmp_path):
    """`saerl status` showed no commit or dirty flag: which code a run ran was in MLflow alone."""
    from saerl.runs import GIT

    code = {"saerl.git_commit": "0123abcd" * 5, "saerl.git_dirty": "true", "saerl.git_diff": "feedfacecafe",
            "saerl.git_dirty_files": "saerl/runners.py"}
    save_run(tmp_path, RunRecord(name="demo", run_id="20260101-000000-aaaaaa", extra={GIT: code}))
    assert run_status(tmp_path).splitlines()[0].endswith(
        "code: commit 0123abcd0123 with uncommitted changes (diff feedfacecafe: saerl/runners.py)")
    save_run(tmp_path, RunRecord(name="demo", run_id="20260101-000001-aaaaaa"))
    assert run_status(tmp_path).splitlines()[0].endswith("code: commit unknown (not a git checkout, or a record "
                                                          "older than the field)")


def _in_progress_run(root: Path, started: float) -> RunRecord:
    """A record still marked running whose process was computing train:saerl:0 (key 'k1' * 10, train.max_steps 10)
    and the score stage, with the training run's checkpoints 2 and 4 saved, 6 killed after transformers' save and
    before saerl's curve file (or while pruned: the curve file goes first), and 8 half-written (no trainer state)."""
    from saerl.checkpoints import CURVE_FILE
    from saerl.runs import RUNNING
    from saerl.status import IN_PROGRESS

    checkpoints = ArtifactStore(root).partial_path("train", "k1" * 10) / "checkpoints"
    for step in (2, 4, 6, 8):
        (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        if step < 8:
            (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
        if step < 6:
            (checkpoints / f"checkpoint-{step}" / CURVE_FILE).write_text('{"rows": []}')
    rec = RunRecord(name="demo", run_id="20260101-000000-aaaaaa", config={"train.max_steps": 10},
                    extra={RUNNING: True, IN_PROGRESS: {"train:saerl:0": {"started": started, "key": "k1" * 10},
                                                        "score": {"started": started + 5, "key": "s1" * 10}}})
    save_run(root, rec)
    return rec


def test_status_names_the_stage_runs_in_progress_and_where_a_killed_run_died(tmp_path):
    """While a run went, `saerl status` showed its finished stage runs alone (for the 1.5 hours of a training run it
    said 'curriculum' was last), and after a kill -9 the word 'train' appeared nowhere. A running record names each
    stage run it computes, since when, for how long, and the checkpoint a training run would resume from (the one
    saerl.checkpoints.last_checkpoint picks: step 4, not the newer 6 a kill left without its curve file); a killed
    one names where it died and that checkpoint."""
    import time

    from saerl.checkpoints import CURVE_FILE, last_checkpoint
    from saerl.runs import KILLED, STILL_RUNNING, live_lock
    from saerl.status import format_clock, in_progress_lines

    started = time.time() - 3725  # 1 h 02 m 05 s ago
    rec = _in_progress_run(tmp_path, started)
    folder = ArtifactStore(tmp_path).partial_path("train", "k1" * 10) / "checkpoints"
    assert last_checkpoint(folder) == folder / "checkpoint-4"
    saved = format_clock((folder / "checkpoint-4" / CURVE_FILE).stat().st_mtime)
    with live_lock(tmp_path, rec.run_id):
        lines = run_status(tmp_path).splitlines()
    assert lines[1:4] == [
        STILL_RUNNING.upper(),
        f"in progress: train:saerl:0 since {format_clock(started)} (1 h 02 m; newest checkpoint: step 4 of 10, "
        f"saved {saved})",
        f"in progress: score since {format_clock(started + 5)} (1 h 02 m)"]
    lines = run_status(tmp_path).splitlines()  # the lock is free: its process died
    assert lines[1:4] == [KILLED.upper(),
                          f"died in train:saerl:0 (started {format_clock(started)}; last checkpoint: step 4 of 10, "
                          f"saved {saved})",
                          f"died in score (started {format_clock(started + 5)})"]
    rec.config["train.steps_per_generation"] = 3  # 2 and 4 are inside a generation batch: a resume starts afresh
    assert in_progress_lines(tmp_path, rec, KILLED)[0] == \
        f"died in train:saerl:0 (started {format_clock(started)}; no checkpoint yet)"
    del rec.config["train.steps_per_generation"]
    shutil.rmtree(ArtifactStore(tmp_path).partial_path("train", "k1" * 10))
    assert in_progress_lines(tmp_path, rec, STILL_RUNNING, now=started + 65)[0] == \
        f"in progress: train:saerl:0 since {format_clock(started, started + 65)} (1 m 05 s; no checkpoint yet)"  # the
    # day of that `now`: run within an hour after midnight, `started` was yesterday's and read as a date
    rec.config["train.save_every"] = 0
    assert in_progress_lines(tmp_path, rec, KILLED)[0] == \
        f"died in train:saerl:0 (started {format_clock(started)}; no checkpoints (train.save_every=0))"
    assert in_progress_lines(tmp_path, rec, None) == [], "an ended run has nothing in progress"


EXTRACT_KEY = "e1" * 10


def _extracting_run(root: Path, started: float, done: int = 3, planned: int = 8) -> Path:
    """A record still marked running whose process was extracting (key EXTRACT_KEY), its unfinished build's chunk log
    planning `planned` chunks (fingerprint 'fp') with chunks 0..done-1 recorded; besides them a record of a replaced
    store (another fingerprint: work to do again), a fan-out's shards.json and a killed writer's temp file, none of
    them a chunk done. out: the build's chunk log folder."""
    from saerl.artifacts import ChunkLog
    from saerl.runs import RUNNING
    from saerl.status import IN_PROGRESS

    log = ChunkLog(ArtifactStore(root).partial_path("extract", EXTRACT_KEY))
    log.plan(planned, "fp")
    for c in range(done):
        log.mark(c, fingerprint="fp", n_tokens=10)
    log.mark(done + 1, fingerprint="old", n_tokens=10)
    (log.folder / "shards.json").write_text('{"seconds": 1.0, "shards": []}')
    (log.folder / f".{done + 2}.json.tmp-123").write_text('{"fingerp')
    save_run(root, RunRecord(name="demo", run_id="20260101-000000-aaaaaa",
                             extra={RUNNING: True, IN_PROGRESS: {"extract": {"started": started, "key": EXTRACT_KEY}}}))
    return log.folder


def test_status_says_how_many_chunks_a_chunked_stage_has_done(tmp_path):
    """An hour-long extraction on a real model showed only 'in progress: extract since 12:18 (1 h 02 m)', and a
    killed one 'died in extract (started ...)': nothing said how far it got. The line now counts the chunks its
    unfinished build recorded (with its fingerprint, out of those it planned) and when the newest was, read from the
    chunk log alone; a killed one says a rerun resumes from there."""
    import os
    import time

    from saerl.runs import KILLED, STILL_RUNNING, live_lock
    from saerl.status import format_clock

    started = time.time() - 3725
    folder = _extracting_run(tmp_path, started)
    for c, after in ((0, 300), (1, 600), (2, 450)):  # chunk 1 recorded last (the replaced store's record is newer)
        os.utime(folder / f"{c}.json", (started + after, started + after))
    with live_lock(tmp_path, "20260101-000000-aaaaaa"):
        lines = run_status(tmp_path).splitlines()
    assert lines[1:3] == [STILL_RUNNING.upper(), f"in progress: extract since {format_clock(started)} (1 h 02 m; "
                                                 f"chunks: 3 of 8 done, newest {format_clock(started + 600)})"]
    lines = run_status(tmp_path).splitlines()  # the lock is free: its process died
    assert lines[1:3] == [KILLED.upper(), f"died in extract (started {format_clock(started)}; 3 of 8 chunks done: "
                                          "a rerun resumes from there)"]


def test_a_chunk_log_half_written_or_absent_shows_no_progress_and_no_error(tmp_path):
    """status reads a build's chunk log while its writers go: an unreadable record is no chunk done, an unreadable
    plan no total, a build with no log (one still tokenizing, a build gone) no note at all, and a log from before
    plans were recorded counts its records without a total."""
    import time

    from saerl.artifacts import CHUNK_PLAN, ChunkLog
    from saerl.runs import KILLED, STILL_RUNNING, load_run
    from saerl.status import format_clock, in_progress_lines

    started = time.time() - 65
    folder = _extracting_run(tmp_path, started)
    rec = load_run(tmp_path, "latest")
    (folder / "2.json").write_text('{"fingerprint": "f')  # a half-written record
    assert "chunks: 2 of 8 done" in in_progress_lines(tmp_path, rec, STILL_RUNNING, now=started + 65)[0]
    (folder / CHUNK_PLAN).write_text('{"chunks": 8, "fin')  # a half-written plan: records of any fingerprint count
    assert in_progress_lines(tmp_path, rec, KILLED)[0].endswith("; 3 chunks done: a rerun resumes from there)")
    (folder / CHUNK_PLAN).unlink()  # a build begun before plans were recorded
    assert "; chunks: 3 done, newest " in in_progress_lines(tmp_path, rec, STILL_RUNNING, now=started + 65)[0]
    for name in ("0.json", "1.json", "2.json", "4.json"):
        (folder / name).unlink()
    assert in_progress_lines(tmp_path, rec, STILL_RUNNING, now=started + 65)[0].endswith("(1 m 05 s)"), "a log with no chunk: no note"
    shutil.rmtree(folder)  # the build has not begun its log (still tokenizing), or went
    assert in_progress_lines(tmp_path, rec, KILLED)[0].endswith(f"(started {format_clock(started)})")
    shutil.rmtree(folder.parent)
    assert in_progress_lines(tmp_path, rec, STILL_RUNNING, now=started + 65)[0].endswith("(1 m 05 s)")
    ChunkLog(folder.parent).plan(8, "fp")  # planned, none done yet
    assert in_progress_lines(tmp_path, rec, STILL_RUNNING, now=started + 65)[0].endswith("(1 m 05 s; chunks: 0 of 8 done)")
    assert in_progress_lines(tmp_path, rec, KILLED)[0].endswith("; 0 of 8 chunks done)")


def test_durations_and_clock_times_read_as_a_person_reads_them():
    import time

    from saerl.status import format_clock, format_duration, format_time

    assert [format_duration(s) for s in (0, 44.6, 192, 3725, 90061)] == ["0 s", "45 s", "3 m 12 s", "1 h 02 m",
                                                                         "1 d 01 h"]
    noon = time.mktime((2026, 1, 2, 12, 0, 0, 0, 0, -1))
    assert format_clock(noon - 3600, now=noon) == "11:00:00"
    assert format_clock(noon - 86400, now=noon) == format_time(noon - 86400), "another day: its date too"


def test_status_check_exits_with_how_the_run_ended_and_json_prints_its_record(tmp_path, capsys):
    """`saerl status` and `report` exited 0 on a failed or killed run: a cron check had to grep text, and
    `status --list` was awkward to parse. --check's exit status says how the run ended (0 ok, 1 failed, 3 stopped or
    killed, 4 still running); --json prints the record with its outcome and the stage it ended at."""
    import json

    from saerl.runs import FAILED, RUNNING, STOPPED, live_lock, run_path

    rec = RunRecord(name="demo", run_id="20260101-000000-aaaaaa")
    root = str(tmp_path)
    cases = [({}, 0, "ok", None), ({FAILED: "train:vanilla:1: RuntimeError: CUDA error"}, 1, "failed", "train:vanilla:1"),
             ({STOPPED: "train:saerl:0: SIGHUP"}, 3, "stopped", "train:saerl:0")]
    for extra, code, outcome, at in cases:
        rec.extra = dict(extra)
        save_run(tmp_path, rec)
        assert main(["status", "--root", root, "--check"]) == code, outcome
        capsys.readouterr()
        assert main(["status", rec.run_id[:8], "--root", root, "--json"]) == 0, "without --check: 0"
        shown = json.loads(capsys.readouterr().out)
        assert (shown["outcome"], shown["ended_at"], shown["run_id"]) == (outcome, at, rec.run_id)
        assert shown["record_path"] == str(run_path(tmp_path, rec.run_id))
    rec.extra = {RUNNING: True, "in_progress": {"extract": {"started": 0.0, "key": "k"}}}
    save_run(tmp_path, rec)
    with live_lock(tmp_path, rec.run_id):
        assert main(["status", "--root", root, "--check"]) == 4
    assert main(["status", "--root", root, "--check"]) == 3, "its process gone: killed"
    capsys.readouterr()
    assert main(["status", "--root", root, "--list", "--check"]) == 2, "--check tests one run"
    assert "--check" in capsys.readouterr().err
    assert main(["status", rec.run_id, "--root", root, "--list"]) == 2, "a run id beside --list was ignored"
    assert f"saerl status {rec.run_id} for that run" in capsys.readouterr().err


def test_status_check_has_an_exit_status_for_every_outcome_a_run_can_have():
    """`status --check` looks up its exit status by the run's outcome word (flows.cli.CHECK_EXIT); the words are
    saerl.status.OUTCOMES. A word added to one list and not the other ended `status --check` in a KeyError."""
    from flows.cli import CHECK_EXIT
    from saerl.status import OUTCOMES

    assert sorted(CHECK_EXIT) == sorted(OUTCOMES)


def test_status_list_json_prints_the_listed_runs_as_a_json_array(tmp_path, capsys):
    """`status --list --json` was refused ('--json reads one run'), so a script listing runs parsed the table. It
    prints the runs the table lists, in its order, as a JSON array on stdout alone: per run its id, config name,
    setting, outcome, the stage it ended at, the signal or error, start and end times, --until, command, commit
    and the table's counts; an unreadable record says so."""
    import json
    import os

    from saerl.runs import (
        ENDED,
        FAILED,
        GIT,
        INVOCATION,
        RUNNING,
        SETTING,
        STOPPED,
        SWEEP,
        UNTIL,
        live_lock,
        run_path,
    )
    from saerl.status import LIST_FIELDS, UNREADABLE

    first, second = _runs(tmp_path)  # ok, ok (3 stage runs, 2 computed)
    failed = RunRecord(name="demo", run_id="20260103-000000-cccccc", started=3.0,
                       extra={FAILED: "train:vanilla:1: RuntimeError: CUDA error: out of memory", UNTIL: "train",
                              ENDED: 3600.0,
                              INVOCATION: "saerl run configs/demo.yaml --until train",
                              GIT: {"saerl.git_commit": "1a2b3c4d" * 5, "saerl.git_dirty": "false"}})
    stopped = RunRecord(name="sweep", run_id="20260104-000000-dddddd", started=4.0,
                        extra={STOPPED: "extract: SIGTERM", SWEEP: "s1", SETTING: "mix_ratio=0.1"})
    going = RunRecord(name="demo", run_id="20260105-000000-eeeeee", started=5.0, extra={RUNNING: True})
    for r in (failed, stopped, going):
        save_run(tmp_path, r)
    # a record from before ENDED: when it was last saved, its end
    os.utime(run_path(tmp_path, second.run_id), (86500.0, 86500.0))
    (tmp_path / "runs" / "20260106-000000-ffffff.json").write_text("{not json")
    root = str(tmp_path)
    with live_lock(tmp_path, going.run_id):
        assert main(["status", "--list", "--json", "--root", root]) == 0
        shown = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
        table = list_status(tmp_path).splitlines()[1:]
    assert [r["run_id"] for r in shown] == [ln.split()[0] for ln in table], "the table's runs, in its order"
    assert all(tuple(r) == LIST_FIELDS for r in shown), "every object has the same keys"
    bad, now, stop, fail, last, oldest = shown
    assert (bad["outcome"], bad["name"], bad["record_path"]) == (UNREADABLE, None,
                                                                 str(tmp_path / "runs" / "20260106-000000-ffffff.json"))
    assert "not readable" in bad["error"]
    assert (now["outcome"], now["ended_at"], now["started"], now["ended"]) == ("running", None, 5.0, None)
    assert {k: stop[k] for k in ("name", "outcome", "ended_at", "signal", "error", "setting", "sweep")} == {
        "name": "sweep", "outcome": "stopped", "ended_at": "extract", "signal": "SIGTERM", "error": None,
        "setting": "mix_ratio=0.1", "sweep": "s1"}
    assert {k: fail[k] for k in ("outcome", "ended_at", "signal", "error", "until", "invocation", "commit")} == {
        "outcome": "failed", "ended_at": "train:vanilla:1", "signal": None,
        "error": "RuntimeError: CUDA error: out of memory", "until": "train",
        "invocation": "saerl run configs/demo.yaml --until train", "commit": "1a2b3c4d" * 5}
    assert fail["ended"] == 3600.0, "the end the record says, not when its file was last written"
    assert {k: last[k] for k in ("run_id", "name", "outcome", "ended_at", "started", "ended", "stage_runs", "computed",
                                 "cached", "seconds", "bytes", "record_path")} == {
        "run_id": second.run_id, "name": "demo", "outcome": "ok", "ended_at": None, "started": 86400.0,
        "ended": 86500.0, "stage_runs": 3, "computed": 2, "cached": 1, "seconds": 71.6, "bytes": 3 * PAYLOAD,
        "record_path": str(run_path(tmp_path, second.run_id))}
    assert oldest["run_id"] == first.run_id and oldest["computed"] == 1
    assert main(["status", "--list", "--json", "--limit", "2", "--root", root]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [bad["run_id"], going.run_id]
    assert main(["status", "--list", "--json", "--root", str(tmp_path / "empty")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and "no runs under" in err



def test_status_marks_a_run_that_started_in_the_future(tmp_path):
    """A run recorded while a clock was ahead stays 'latest' until the clock passes its start, and nothing said why:
    `status --list` marks its start '(in the future)' and says under the table what that means, and `status` of it
    says so under its header; other runs are not marked."""
    import time

    from saerl.runs import new_run_id
    from saerl.status import FUTURE_MARK

    now, skew = time.time(), 3 * 86400 + 5400  # 3 d 01 h 30 m ahead
    older = RunRecord(name="older", run_id=new_run_id(now - 86400), started=now - 86400)
    skewed = RunRecord(name="skewed", run_id=new_run_id(now + skew), started=now + skew)
    for record in (older, skewed):
        save_run(tmp_path, record)
    lines = list_status(tmp_path).splitlines()
    rows = {name: next(line for line in lines if line.startswith(r.run_id)) for name, r in
            (("older", older), ("skewed", skewed))}
    assert FUTURE_MARK in rows["skewed"] and FUTURE_MARK not in rows["older"], lines
    assert lines[-1].startswith(f"{FUTURE_MARK}: 1 runs started later than this machine's clock reads now"), lines
    assert "clock or the one that ran it is off" in lines[-1] and "'latest'" in lines[-1]
    head = run_status(tmp_path, "latest").splitlines()[1]
    assert head.startswith("STARTED IN THE FUTURE (3 d 01 h ahead of this machine's clock): this machine's clock"), head
    assert "STARTED IN THE FUTURE" not in run_status(tmp_path, older.run_id)


LONG_WHY = ("cached: same code version, inputs and config as a stored artifact; built by other code: at commit "
            "38ad53c19140 (now 89de70019665)")  # the 'why' that made 16 of status's 17 lines wider than 80 columns
NARROW, WIDE = 80, 120  # terminal widths: the 'why' goes under each row (80), or beside it, under its column (120)


def _long_whys(root: Path) -> RunRecord:
    """A run of the demo's stage runs, each cached with LONG_WHY (artifacts never built: 'gone'). in: the root;
    out: the record, saved."""
    record = RunRecord(name="demo", run_id="20260103-000000-cccccc", started=0.0)
    for name in ("testbed", "ingest", "extract", "sae", "train:saerl:0", "heldout:reach_probe:1", "evaluate"):
        record.stages[name] = StageRecord(name, "ab" * 32, "cached", LONG_WHY, {}, {}, 0.0, PAYLOAD)
    save_run(root, record)
    return record


def _whys(text: str) -> dict[str, str]:
    """Each stage run's 'why' read back from status's table, its pieces wrapped beside or under the row joined by
    spaces. in: status's text; out: {stage run: why}."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    column = lines[head].index(" why") + 1
    whys: dict[str, list[str]] = {}
    for line in lines[head + 1:]:
        if not line.startswith(" "):  # a row: its stage run, then its why's first piece where it stands beside it
            stage = line.split()[0]
            whys[stage] = [line[column:].strip()]
        else:
            whys[stage].append(line.strip())
    return {stage: " ".join(p for p in pieces if p) for stage, pieces in whys.items()}


@pytest.mark.parametrize("width", [NARROW, WIDE])
def test_status_fits_the_terminals_width_and_its_why_reads_whole(tmp_path, width):
    """In an 80-column terminal 16 of `saerl status`'s 17 lines were wider (up to 200 columns: the 'why'), and the
    terminal wrapped them into a mess. At a width, every line fits it: the header wrapped, the 'why' wrapped at word
    boundaries beside its row under its column, or where that column would be too narrow, on lines under the row;
    the words, read back, are the 'why' whole."""
    record = _long_whys(tmp_path)
    text = run_status(tmp_path, width=width)
    assert [line for line in text.splitlines() if len(line) > width] == []
    assert _whys(text) == dict.fromkeys(record.stages, LONG_WHY)
    assert _whys(run_status(tmp_path)) == dict.fromkeys(record.stages, LONG_WHY)
    assert max(len(line) for line in run_status(tmp_path).splitlines()) > WIDE  # one line per row without a width


def test_status_on_a_pipe_is_one_line_per_row_unless_columns_is_set(tmp_path, capsys, monkeypatch):
    """stdout no terminal (a pipe, a file, a script reading it): the text is the formatter's without a width, byte
    for byte, one line per stage run; COLUMNS set by the user fits it there too (`COLUMNS=100 saerl status | less`)."""
    _long_whys(tmp_path)
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["status", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == run_status(tmp_path) + "\n"
    monkeypatch.setenv("COLUMNS", str(NARROW))
    assert main(["status", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out == run_status(tmp_path, width=NARROW) + "\n"
    assert [line for line in out.splitlines() if len(line) > NARROW] == []


def status_on_terminal(root: Path, rows: int, cols: int) -> tuple[int, list[str], str]:
    """`saerl status --root ROOT` in a child process whose stdout is a fresh pty of `rows` x `cols` (COLUMNS unset:
    the terminal's own size). in: the root, the size; out: (exit status, the lines the terminal got, stderr)."""
    master, slave = sized_pty(rows, cols)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "status", "--root", str(root)], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE, env=env, cwd=REPO)
    os.close(slave)
    got = drain(master)
    err = proc.stderr.read().decode() if proc.stderr else ""
    return proc.wait(timeout=SUBPROCESS_S), got.decode().replace("\r\n", "\n").splitlines(), err


def test_saerl_status_on_an_80_column_terminal_fits_it(tmp_path):
    """`saerl status` on an 80-column terminal (stdout a pty of that size, no COLUMNS) prints no line wider than it,
    and each stage run's why whole."""
    record = _long_whys(tmp_path)
    status, lines, err = status_on_terminal(tmp_path, 24, NARROW)
    assert status == 0, err
    assert [line for line in lines if len(line) > NARROW] == []
    assert _whys("\n".join(lines)) == dict.fromkeys(record.stages, LONG_WHY)
