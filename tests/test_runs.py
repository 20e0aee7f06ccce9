"""saerl.runs: run records and the 'why' of a recompute."""

from pathlib import Path

from saerl.runs import RunRecord, StageRecord, explain, load_run, runs_of, save_run

DAY_S = 86400.0  # seconds a day


def _rec(name, stage, cfg, inputs):
    r = RunRecord(name=name)
    r.stages[stage] = StageRecord(stage, "k", "computed", "", cfg, inputs)
    return r


def test_explain_names_changed_fields_and_inputs():
    prev = _rec("demo", "curriculum", {"curriculum.mix_ratio": 0.1}, {"score": "a"}).stages
    why = explain("curriculum", True, {"curriculum.mix_ratio": 0.3}, {"score": "a"}, prev)
    assert "curriculum.mix_ratio 0.1->0.3" in why
    why = explain("curriculum", True, {"curriculum.mix_ratio": 0.1}, {"score": "b"}, prev)
    assert "input changed: score" in why
    assert explain("curriculum", False, {}, {}, prev).startswith("cached")
    assert "no earlier run" in explain("extract", True, {}, {}, prev)


def test_save_load_previous(tmp_path):
    a = _rec("demo", "ingest", {"data.prompt": "q"}, {})
    a.run_id = "20260101-000000-aaaaaa"
    b = _rec("other", "ingest", {}, {})
    b.run_id = "20260101-000001-bbbbbb"
    save_run(tmp_path, a)
    save_run(tmp_path, b)
    assert next(runs_of(tmp_path, "demo"), None).run_id == a.run_id
    assert next(runs_of(tmp_path, "demo", exclude=a.run_id), None) is None
    assert load_run(tmp_path, "latest").run_id == b.run_id
    assert load_run(tmp_path, "20260101-000000").stages["ingest"].config == {"data.prompt": "q"}


def test_run_ids_sort_by_start_time_within_a_second(tmp_path):
    """Runs started in the same second (an ablation's children) come back oldest first: 'latest' and
    the latest run of a config (runs_of) is the one that started last."""
    from saerl.runs import list_runs, new_run_id

    base = 1_764_770_000.0
    for i, dt in enumerate([0.9, 0.05, 0.5]):  # saved out of order
        save_run(tmp_path, RunRecord(name=f"r{i}", run_id=new_run_id(base + dt)))
    assert [load_run(tmp_path, p.stem).name for p in list_runs(tmp_path)] == ["r1", "r2", "r0"]
    assert load_run(tmp_path, "latest").name == "r0" and next(runs_of(tmp_path, "r2"), None).name == "r2"
    assert len({new_run_id(base) for _ in range(20)}) == 20  # the random tail tells apart one microsecond


def test_unknown_run_errors_say_what_to_do(tmp_path):
    import pytest

    from saerl.runs import UnknownRun

    with pytest.raises(UnknownRun, match="no run records: run `saerl run CONFIG` first, or pass --root"):
        load_run(tmp_path, "latest")
    for run_id in ("20260101-000000-aaaaaa", "20260101-000001-bbbbbb", "20260102-000000-cccccc"):
        r = _rec("demo", "ingest", {}, {})
        r.run_id = run_id
        save_run(tmp_path, r)
    with pytest.raises(UnknownRun, match=r"2 runs start with it, give more of the id \(newest first: 20260101-000001") as err:
        load_run(tmp_path, "20260101")
    assert "20260102" not in str(err.value), "only the runs the prefix matched are listed"
    with pytest.raises(UnknownRun, match="give a run id, a unique prefix of one, or 'latest'"):
        load_run(tmp_path, "nope")


def test_ordered_and_relocated_stage_runs(tmp_path):
    """Pipeline order back from a saved record (its JSON sorts names); paths re-rooted at the root given."""
    from saerl.runs import ordered_stages, relocated

    r = RunRecord(name="demo", run_id="20260101-000000-aaaaaa")
    for name in ("score", "train:saerl:0", "evaluate"):
        r.stages[name] = StageRecord(name, f"{name[:5]}key", "cached", "", {}, {}, path=f"/old/root/{name}")
    save_run(tmp_path, r)
    back = load_run(tmp_path, "latest")
    assert list(back.stages) == ["evaluate", "score", "train:saerl:0"]
    assert [s.stage for s in ordered_stages(back)] == ["score", "train:saerl:0", "evaluate"]
    assert back.stages["score"].path == str(tmp_path / "score" / "scorekey"), "load_run reads it under its root"
    moved = relocated(back, tmp_path / "new")
    assert moved.stages["train:saerl:0"].path == str(tmp_path / "new" / "train" / "trainkey")
    assert back.stages["score"].path == str(tmp_path / "score" / "scorekey"), "the record given is left as it was"
    assert relocated(moved, tmp_path / "new") == moved, "relocating twice to one root changes nothing"


def test_load_run_reads_a_moved_root_where_it_is_now(tmp_path):
    """A root moved whole (`mv`, as the README allows): load_run's paths pointed at the old root, so reading a
    stage's files from them failed (FileNotFoundError) or, with the old root still there, read the other root's."""
    import shutil

    old, new = tmp_path / "old", tmp_path / "new"
    r = RunRecord(name="demo", run_id="20260101-000000-aaaaaa")
    r.stages["curriculum"] = StageRecord("curriculum", "ckey", "computed", "", {}, {},
                                         path=str(old / "curriculum" / "ckey"))
    (old / "curriculum" / "ckey").mkdir(parents=True)
    (old / "curriculum" / "ckey" / "order.parquet").write_text("x")
    save_run(old, r)
    shutil.move(old, new)
    rec = load_run(new, "latest").stages["curriculum"]
    assert rec.path == str(new / "curriculum" / "ckey")
    assert (Path(rec.path) / "order.parquet").read_text() == "x"


def test_a_run_id_a_hair_before_the_next_second_sorts_after_the_seconds_earlier_runs():
    """The seconds and the microseconds were rounded apart: 0.9999997 s past a second rounded to microsecond 0 of
    the same second, so that run's id sorted before every run started earlier in that second."""
    from saerl.runs import new_run_id

    base = 1_764_770_000.0
    early, late = new_run_id(base + 0.5), new_run_id(base + 0.9999997)
    assert early < late and late[:22] == new_run_id(base + 1.0)[:22]


def test_the_latest_run_of_a_config_skips_an_unreadable_record_instead_of_failing_the_run(tmp_path):
    """A record that parses as JSON but is no run record (a list, a stage without its fields) stopped every later
    run of the config before its first stage: only unparseable JSON was skipped."""
    import json

    from saerl.runs import RUNS_DIR

    good = _rec("demo", "ingest", {}, {})
    good.run_id = "20260101-000000-000000-aaaa"
    save_run(tmp_path, good)
    bad = tmp_path / RUNS_DIR / "20260102-000000-000000-bbbb.json"
    for text in (json.dumps({"name": "demo", "stages": {"x": {"stage": "x"}}}), "[1]", "{"):
        bad.write_text(text)
        assert next(runs_of(tmp_path, "demo"), None).run_id == good.run_id


def test_run_ids_sort_by_start_time_across_the_hour_clocks_go_back(monkeypatch):
    """Ids are UTC: in local time the two 02:30s of a daylight-saving fallback (Berlin, 2026-10-25) read the same,
    and the later run could sort first (latest, runs_of and gc read the order)."""
    import time

    from saerl.runs import new_run_id

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        first, second = 1792888200.0, 1792891800.0  # 00:30 and 01:30 UTC: both 02:30 in Berlin
        assert time.localtime(first).tm_hour == time.localtime(second).tm_hour == 2
        assert new_run_id(first)[:15] == "20261025-003000" and new_run_id(second)[:15] == "20261025-013000"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_the_why_looks_past_a_newer_run_that_stopped_before_the_stage(tmp_path):
    """The newest record of a config was the only one read: after an `--until score` run (or a sweep's shared
    upstream run, which stops at score) a changed curriculum read "no earlier run of this config ran this stage"
    although an older run had. Each stage run is now compared with the newest earlier run that ran it."""
    from saerl.runs import previous_stage_runs

    full = _rec("demo", "curriculum", {"curriculum.mix_ratio": 0.1}, {"score": "a"})
    full.stages["score"] = StageRecord("score", "k1", "computed", "", {"score.k": 4}, {})
    full.run_id = "20260101-000000-000000-aaaa"
    partial = _rec("demo", "score", {"score.k": 8}, {})  # newer, stopped at score
    partial.run_id = "20260102-000000-000000-bbbb"
    other = _rec("other", "curriculum", {"curriculum.mix_ratio": 0.9}, {"score": "z"})  # newest, another config
    other.run_id = "20260103-000000-000000-cccc"
    for record in (full, partial, other):
        save_run(tmp_path, record)

    prev = previous_stage_runs(tmp_path, "demo")
    assert prev["curriculum"].config == {"curriculum.mix_ratio": 0.1} and prev["score"].config == {"score.k": 8}
    why = explain("curriculum", True, {"curriculum.mix_ratio": 0.3}, {"score": "a"}, prev)
    assert why == "computed: config changed: curriculum.mix_ratio 0.1->0.3"
    assert "no earlier run" in explain("curriculum", True, {}, {}, next(runs_of(tmp_path, "demo"), None).stages), \
        "one record's stage runs work too"
    assert "no earlier run" in explain("train:saerl:0", True, {}, {}, prev)
    assert set(previous_stage_runs(tmp_path, "demo", wanted=["score"])) == {"score"}, "stops once every wanted is found"
    assert previous_stage_runs(tmp_path, "demo", exclude=full.run_id).keys() == {"score"}


def test_a_resumed_build_says_first_how_many_chunks_were_already_done():
    """A stage run resuming a killed build (37 of 40 chunks done) read "computed: no earlier run of this config ran
    this stage", nothing saying what it reused. The count leads the reason, before the config diff; a build that
    resumed no chunk reads as before."""
    from saerl.runs import resumed_note

    prev = _rec("demo", "extract", {"extract.layer": 1}, {"ingest": "a"}).stages
    diff = "config changed: extract.layer 1->2"
    assert explain("extract", True, {"extract.layer": 2}, {"ingest": "a"}, prev, resumed=resumed_note(37, 40)) == \
        f"computed: resumed an interrupted build: 37 of 40 chunks were already done; {diff}"
    assert explain("encode", True, {}, {}, prev, resumed=resumed_note(3, 60)) == \
        "computed: resumed an interrupted build: 3 of 60 chunks were already done; no earlier run of this config ran this stage"
    for zero in ((0, 40), (0, 0)):  # from scratch: exactly the old text
        assert resumed_note(*zero) == ""
        assert explain("extract", True, {"extract.layer": 2}, {"ingest": "a"}, prev, resumed=resumed_note(*zero)) == \
            f"computed: {diff}"
    bad = "computed: stored artifact failed verification (size mismatch x)"
    assert explain("extract", True, {}, {}, prev, bad, resumed=resumed_note(2, 5)) == \
        "computed: resumed an interrupted build: 2 of 5 chunks were already done; stored artifact failed verification (size mismatch x)"
    assert explain("extract", True, {}, {}, prev, bad) == bad
    assert explain("extract", False, {}, {}, prev, resumed=resumed_note(37, 40)) == \
        "cached: same code version, inputs and config as a stored artifact", "a reused artifact resumed nothing"


def test_a_resumed_training_run_says_first_which_step_it_resumed_from():
    """A training run that resumed a killed one from its newest checkpoint read "computed: no earlier run of this
    config ran this stage", nothing about the 40 steps it did not train again. Its note leads the reason, as a
    resumed chunked build's counts do (one field, StageResult.resumed)."""
    from saerl.runs import resumed_steps_note

    assert resumed_steps_note(40, 100) == "resumed an interrupted training run from step 40 of 100"
    assert explain("train:saerl:0", True, {}, {}, {}, resumed=resumed_steps_note(40, 100)) == \
        "computed: resumed an interrupted training run from step 40 of 100; no earlier run of this config ran this stage"


def test_chunk_records_read_a_chunk_log_without_creating_one(tmp_path):
    """chunk_records reads the finished chunks' records (not one being written) and creates nothing; reused_chunks
    counts the records left unchanged between two reads: a chunk marked again (computed again) is not reused."""
    from saerl.artifacts import CHUNK_DIR, ChunkLog, chunk_records, reused_chunks

    assert chunk_records(tmp_path / "nope") == {} and not (tmp_path / "nope").exists()
    assert chunk_records(tmp_path) == {} and not (tmp_path / CHUNK_DIR).exists()
    log = ChunkLog(tmp_path)
    for c in (0, 1, 5):
        log.mark(c, rows=2)
    (tmp_path / CHUNK_DIR / ".7.json.tmp-123").write_text("{")  # a record being written is not a finished chunk
    before = chunk_records(tmp_path)
    assert sorted(before) == ["0.json", "1.json", "5.json"]
    log.mark(1, rows=3)  # computed again
    log.mark(2, rows=2)
    # neither what a fan-out's shards ran nor the plan is a chunk (shards.json made a Dask resume of 8 chunks read
    # '3 of 9 chunks were already done')
    (tmp_path / CHUNK_DIR / "shards.json").write_text("{}")
    log.plan(6, "fp")
    after = chunk_records(tmp_path)
    assert len(after) == 4 and reused_chunks(before, after) == 2

def test_run_stage_counts_a_resumed_builds_chunks(tmp_path, monkeypatch):
    """run_stage counts, per build, the chunks its log recorded when the compute started (what it resumed) and when
    it ended (all of them; publishing removes the log): the note (StageResult.resumed) the flow's and
    record_results' reasons lead with."""
    import pytest

    from saerl import pipeline
    from saerl.artifacts import ArtifactStore
    from saerl.config import PipelineConfig

    def compute(cfg, upstream, build, stop_after=None, stale=()):
        for c in range(5):
            if not build.chunks.is_done(c) or c in stale:  # a record of a replaced store is computed again
                build.chunks.mark(c)
            if c == stop_after:
                raise KeyboardInterrupt  # a run stopped mid-build: its partial folder keeps chunks 0-1
        return {}

    store, cfg = ArtifactStore(tmp_path), PipelineConfig()
    monkeypatch.setitem(pipeline.RUNNERS, "curriculum", lambda c, u, b: compute(c, u, b, stop_after=1))
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_stage(store, cfg, "curriculum", {})
    monkeypatch.setitem(pipeline.RUNNERS, "curriculum", lambda c, u, b: compute(c, u, b, stale=(0,)))
    res = pipeline.run_stage(store, cfg, "curriculum", {})
    note = "resumed an interrupted build: 1 of 5 chunks were already done"  # chunk 1 kept; chunk 0 computed again
    assert res.computed and res.resumed == note and res.to_json()["resumed"] == note
    monkeypatch.setitem(pipeline.RUNNERS, "curriculum", lambda c, u, b: (b.path / "f.txt").write_text("x") and {})
    other = cfg.model_copy(update={"curriculum": cfg.curriculum.model_copy(update={"mix_ratio": 0.7})})
    plain = pipeline.run_stage(store, other, "curriculum", {})  # a stage without chunks
    assert plain.resumed == ""
    again = pipeline.run_stage(store, cfg, "curriculum", {})
    assert not again.computed and again.resumed == "", "a reused artifact began no build"


def test_run_stage_leads_with_the_note_a_runner_left(tmp_path, monkeypatch):
    """A runner that resumed an interrupted build its own way (a training run from its checkpoint) leaves its note
    in the build (saerl.runs.RESUMED); run_stage carries it, and record_results' reason leads with it."""
    from saerl import pipeline
    from saerl.artifacts import ArtifactStore
    from saerl.config import PipelineConfig
    from saerl.report import record_results
    from saerl.runs import RESUMED, resumed_steps_note

    def compute(cfg, upstream, build):
        (build.path / "f.txt").write_text("x")
        build.note(**{RESUMED: resumed_steps_note(40, 100)})
        return {}

    store, cfg = ArtifactStore(tmp_path), PipelineConfig()
    monkeypatch.setitem(pipeline.RUNNERS, "curriculum", compute)
    res = pipeline.run_stage(store, cfg, "curriculum", {})
    assert res.resumed == "resumed an interrupted training run from step 40 of 100"
    why = record_results(store, cfg, {"curriculum": res}).stages["curriculum"].reason
    assert why == "computed: resumed an interrupted training run from step 40 of 100; no earlier run of this config ran this stage"
    again = pipeline.run_stage(store, cfg, "curriculum", {})
    assert not again.computed and again.resumed == ""
    assert record_results(store, cfg, {"curriculum": again}).stages["curriculum"].reason.startswith("cached")


def test_a_stage_record_names_what_a_reused_artifact_was_built_with_that_differs_now():
    """One function (stage_record) makes a stage run's record for the flow and for run_all's record_results: a
    reused artifact built under other library versions and other code says so in its record's reason; a computed
    one, whose build is this run's, names neither, even given a manifest that differs."""
    from saerl.runs import stage_record
    from saerl.stages import code_version

    built = {"library_versions": {"torch": "2.0.0", "numpy": "1.0"}, "git": {"commit": "a" * 40, "dirty": "false"}}
    installed, code = {"torch": "2.1.0", "numpy": "1.0"}, {"commit": "b" * 40, "dirty": "false"}
    config, inputs = {"curriculum.mix_ratio": 0.1}, {"score": "s1"}

    def record(computed):
        return stage_record("curriculum", "k1", computed, config, inputs, {}, built=built, installed=installed,
                            code=code, seconds=1.5, size=42, path="/r/curriculum/k1")

    cached = record(False)
    assert cached.status == "cached" and cached.reason == (
        "cached: same code version, inputs and config as a stored artifact; built by other code: at commit "
        "aaaaaaaaaaaa (now bbbbbbbbbbbb); built with other library versions: torch 2.0.0 (now 2.1.0)")
    computed = record(True)
    assert computed.status == "computed" and "library versions" not in computed.reason
    assert "other code" not in computed.reason and computed.reason.startswith("computed: no earlier run")
    same = stage_record("curriculum", "k1", False, config, inputs, {}, built={"library_versions": installed,
                        "git": code}, installed=installed, code=code, seconds=0.0, size=42, path="/r/curriculum/k1")
    assert same.reason == "cached: same code version, inputs and config as a stored artifact", "nothing differs"
    assert (cached.key, cached.config, cached.inputs, cached.seconds, cached.bytes, cached.path,
            cached.code_version) == ("k1", config, inputs, 1.5, 42, "/r/curriculum/k1", code_version("curriculum"))


def test_a_field_a_stage_stopped_or_started_reading_is_said_so_not_unset():
    """Switching sae.architecture to topk drops sae.l1_coefficient from the sae stage's slice (saerl.stages
    unread_fields) and adds sae.k: the reason read "sae.l1_coefficient 0.001-><unset>" and "sae.k <unset>->32"."""
    from saerl.config import load_config
    from saerl.stages import stage_slice

    standard = stage_slice(load_config(None, ["sae.source=train", "sae.architecture=standard"]), "sae")
    topk = stage_slice(load_config(None, ["sae.source=train", "sae.architecture=topk"]), "sae")
    assert "sae.l1_coefficient" in standard and "sae.k" in topk and "sae.k" not in standard
    prev = _rec("demo", "sae", standard, {}).stages
    why = explain("sae", True, topk, {}, prev)
    assert "<unset>" not in why, why
    assert "sae.architecture 'standard'->'topk'" in why
    assert "sae.l1_coefficient (not read under this config)" in why
    assert f"sae.k {topk['sae.k']!r} (not read under the earlier config)" in why
    back = explain("sae", True, standard, {}, _rec("demo", "sae", topk, {}).stages)
    assert "sae.k (not read under this config)" in back
    assert f"sae.l1_coefficient {standard['sae.l1_coefficient']!r} (not read under the earlier config)" in back
    none_valued = explain("x", True, {"a": None}, {}, _rec("demo", "x", {}, {}).stages)
    assert none_valued == "computed: config changed: a None (not read under the earlier config)"


def test_a_code_version_bump_is_named_in_the_reason(tmp_path):
    """After the ingest stage's version went 9 -> 10 (saerl.stages), `saerl run` said "stored artifact was missing
    or corrupt (or the stage's code version changed)". A record now keeps each stage run's code version and the
    reason names the bump; when the versions match, only "missing or corrupt" is left."""
    from saerl.runs import read_run
    from saerl.stages import code_version

    prev = RunRecord(name="demo")
    prev.stages["ingest"] = StageRecord("ingest", "k9", "computed", "", {"data.prompt": "q"}, {}, code_version="9")
    prev.stages["train:saerl:0"] = StageRecord("train:saerl:0", "kt", "computed", "", {}, {"curriculum": "a"},
                                               code_version=code_version("train"))
    prev = read_run(save_run(tmp_path, prev))  # the field survives a save and a read
    assert prev.stages["ingest"].code_version == "9"

    why = explain("ingest", True, {"data.prompt": "q"}, {}, prev.stages, code="10")
    assert why == "computed: code changed: ingest version 9 -> 10"
    why = explain("ingest", True, {"data.prompt": "p"}, {}, prev.stages, code="10")
    assert why == "computed: code changed: ingest version 9 -> 10; config changed: data.prompt 'q'->'p'"
    now = code_version("ingest").partition("+verify")[0]  # looked up in saerl.stages
    assert explain("ingest", True, {"data.prompt": "q"}, {}, prev.stages).startswith(
        f"computed: code changed: ingest version 9 -> {now}")
    assert explain("train:saerl:0", True, {}, {"curriculum": "a"}, prev.stages) == \
        "computed: stored artifact was missing or corrupt", "same code, inputs and config: nothing else to blame"
    assert explain("train:saerl:0", True, {}, {"curriculum": "b"}, prev.stages) == \
        "computed: input changed: curriculum"


def test_a_record_without_code_versions_reads_them_from_the_earlier_artifact(tmp_path):
    """A record written before stage runs kept their code version: the earlier artifact's manifest (where the
    store keeps it now, even after the root moved) says it; with neither, the reason reads as before."""
    import json

    from saerl.artifacts import ArtifactStore
    from saerl.runs import RUNS_DIR, previous_stage_runs

    root = tmp_path / "root"
    with ArtifactStore(root).build("ingest", "k9", {"code_version": "9"}) as build:
        (build.path / "prompts.parquet").write_text("x")
    old = RunRecord(name="demo", run_id="20260101-000000-000000-aaaa")
    old.stages["ingest"] = StageRecord("ingest", "k9", "computed", "", {}, {}, path="/moved/away/ingest/k9")
    old.stages["score"] = StageRecord("score", "gone", "computed", "", {}, {})  # collected since
    path = save_run(root, old)
    data = json.loads(path.read_text())
    for stage in data["stages"].values():
        del stage["code_version"]  # as an older saerl wrote it
    (root / RUNS_DIR / path.name).write_text(json.dumps(data))

    prev = previous_stage_runs(root, "demo")
    assert prev["ingest"].code_version == ""
    assert explain("ingest", True, {}, {}, prev, code="10") == "computed: code changed: ingest version 9 -> 10"
    assert explain("ingest", True, {}, {}, prev, code="9") == "computed: stored artifact was missing or corrupt"
    assert explain("score", True, {}, {}, prev, code="13") == \
        "computed: stored artifact was missing or corrupt (or the stage's code version changed)"


def test_a_verifying_stages_reason_says_whose_version_changed():
    """A verifying stage's code version holds the verifier's too ('10+verify1'): the reason names the part that
    changed, the stage's own or the verifier's."""
    from saerl.runs import code_change

    assert code_change("ingest", "10+verify1", "11+verify1") == "code changed: ingest version 10 -> 11"
    assert code_change("train:saerl:0", "7+verify1", "7+verify2") == "code changed: verifier version 1 -> 2"
    assert code_change("label", "9+verify1", "10+verify2") == \
        "code changed: label version 9 -> 10, verifier version 1 -> 2"
    assert code_change("score", "13", "13+verify1") == "code changed: verifier version none -> 1"
    assert code_change("score", "", "13") == "" and code_change("score", "13", "13") == ""


def test_a_record_whose_ids_would_leave_the_root_is_refused(tmp_path):
    """A record in a copied root named its run id '../../escape/pwned': `saerl report` wrote its HTML outside the
    root. A record's run id must be its file's name, and ids, stage names and keys plain names."""
    import json

    import pytest

    from saerl.runs import read_run

    good = RunRecord(name="r", run_id="20261205-080000-000000-abcd", stages={"train:saerl:0": StageRecord(
        stage="train:saerl:0", key="0123abcd", status="computed", reason="", config={}, inputs={}, path="x")})
    path = save_run(tmp_path, good)
    assert read_run(path).run_id == good.run_id
    data = json.loads(path.read_text())
    # a plain run id that is not the file's name: a copied record would be read as (and overwrite) another run
    for change in ({"run_id": "../../escape/pwned"}, {"run_id": "20261205-080000-000000-ffff"},
                   {"stages": {"../x": {**data["stages"]["train:saerl:0"]}}},
                   {"stages": {"train:saerl:0": {**data["stages"]["train:saerl:0"], "key": "../../etc"}}}):
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(ValueError, match="is not readable .*plain names"):
            read_run(path)


def test_a_reused_artifact_built_with_other_library_versions_says_so():
    """Library versions are in no key (an upgrade would rebuild the testbed LM and everything after it), so a reused
    artifact built with another torch or transformers was reused unsaid. Its reason names each library that moved;
    one that only runs or records (prefect, mlflow) is not named."""
    from saerl.artifacts import version_drift

    built = {"torch": "2.12.0", "transformers": "5.25.0", "prefect": "3.4.0", "polars": "1.30.0"}
    now = {"torch": "2.13.0", "transformers": "5.25.0", "prefect": "3.5.0"}
    drift = version_drift(built, now)
    assert drift == "torch 2.12.0 (now 2.13.0), polars 1.30.0 (now not installed)"
    assert version_drift(built, built) == "" and version_drift(None, now) == ""
    assert explain("extract", False, {}, {}, {}, drift=drift) == ("cached: same code version, inputs and config as a stored "
                                                                 f"artifact; built with other library versions: {drift}")
    assert explain("extract", True, {}, {}, {}, drift=drift).startswith("computed: ")


def test_fields_a_stages_new_code_no_longer_reads_are_named_in_brief():
    """When a stage's code stopped reading fields (the evaluate stage, once held-out generation moved to the heldout
    stage, dropped 21), its reason listed each as '(not read under this config)', a paragraph long. They are named
    in brief; a field the stage still declares but does not read under this config keeps its own words."""
    import dataclasses

    prev = {"evaluate": StageRecord(stage="evaluate", key="k", status="computed", reason="",
                                    config={"eval.ci_level": 0.95, "eval.batch_size": 64, "data.answer": "a",
                                            "data.id": None, "eval.temperature": 1.0},
                                    inputs={}, code_version="18+verify3")}
    why = explain("evaluate", True, {"eval.ci_level": 0.95}, {}, prev, code="19")
    assert why == ("computed: code changed: evaluate version 18 -> 19, verifier version 3 -> none; fields this stage "
                   "no longer reads: data.answer, data.id, eval.batch_size and 1 more")
    prev["sae"] = StageRecord(stage="sae", key="k", status="computed", reason="", config={"sae.l1_coefficient": 5.0},
                              inputs={}, code_version="3")
    assert explain("sae", True, {}, {}, prev, code="3") == \
        "computed: config changed: sae.l1_coefficient (not read under this config)"
    three = {k: v for k, v in prev["evaluate"].config.items() if k != "eval.temperature"}
    prev["evaluate"] = dataclasses.replace(prev["evaluate"], config=three)
    assert explain("evaluate", True, {"eval.ci_level": 0.95}, {}, prev, code="18+verify3") == \
        "computed: fields this stage no longer reads: data.answer, data.id, eval.batch_size"  # no '0 more'


def test_a_field_a_training_run_does_not_read_under_its_arm_is_not_one_its_stage_stopped_reading():
    """A stage run with variants ('train:vanilla:0') is judged by its stage's declared reads (train), not by
    its run name, which declares none: a field unread under this arm or algorithm would read "no longer
    reads"."""
    from saerl.runs import declared_read

    assert declared_read("train:vanilla:0", "train.dynamic_sampling_refill")
    assert declared_read("heldout:base:0", "eval.sets")
    assert not declared_read("train:vanilla:0", "eval.ci_level")
    prev = {"train:vanilla:0": StageRecord(stage="train:vanilla:0", key="k", status="computed", reason="",
                                           config={"train.dynamic_sampling_refill": "cluster"}, inputs={},
                                           code_version="5")}
    assert explain("train:vanilla:0", True, {}, {}, prev, code="5") == \
        "computed: config changed: train.dynamic_sampling_refill (not read under this config)"


def test_recorded_builds_names_the_newest_run_that_had_each_artifact(tmp_path):
    """recorded_builds: per (stage, key), the newest saved run (any config) that computed or reused it, leaving out
    the given run and stage runs that failed; gone_note says which run had it."""
    from saerl.runs import RunRecord, StageRecord, gone_note, recorded_builds, save_run

    def save(run_id: str, name: str, stages: dict[str, tuple[str, str]]) -> None:
        r = RunRecord(name=name, run_id=run_id)
        r.stages = {n: StageRecord(n, key, status, "", {}, {}) for n, (key, status) in stages.items()}
        save_run(tmp_path, r)

    save("20260101-000000-aaaaaa", "a", {"score": ("s1", "computed"), "train:saerl:0": ("t1", "computed")})
    save("20260102-000000-bbbbbb", "b", {"score": ("s1", "cached"), "train:saerl:0": ("t2", "failed")})
    save("20260103-000000-cccccc", "a", {"score": ("s2", "computed")})
    builds = recorded_builds(tmp_path, exclude="20260103-000000-cccccc")
    assert builds == {("score", "s1"): "20260102-000000-bbbbbb", ("train", "t1"): "20260101-000000-aaaaaa"}
    assert "run 20260102-000000-bbbbbb" in gone_note(builds["score", "s1"]) and "saerl gc" in gone_note("x")


def test_a_record_with_fields_of_the_wrong_json_type_is_unreadable_to_status_and_gc(tmp_path, capsys):
    """A record with "extra": null (or a stage's "inputs": null) was read as a record, and `saerl status`,
    `status --list`, `gc` and `report` then crashed on it with AttributeError and a traceback. read_run now checks
    the JSON types, so each command treats it as any unreadable record: status --list lists it as such, gc stops on
    it while it would be among the runs kept and passes over it after them."""
    import json

    import pytest

    from flows.cli import main
    from saerl.runs import read_run

    good = _rec("demo", "ingest", {}, {"testbed": "k"})
    good.run_id = "20260101-000000-000000-aaaa"
    data = good.to_json()
    path = save_run(tmp_path, good)
    assert read_run(path).stages["ingest"].inputs == {"testbed": "k"}
    odd = {**data, "run_id": "20260102-000000-000000-bbbb"}
    stage = data["stages"]["ingest"]
    for change in ({"extra": None}, {"config": []}, {"started": "yesterday"}, {"started": True}, {"name": 3},
                   {"stages": None}, {"stages": {"ingest": None}}, {"stages": {"ingest": {**stage, "inputs": None}}},
                   {"stages": {"ingest": {**stage, "config": None}}}, {"stages": {"ingest": {**stage, "bytes": "1"}}}):
        bad = save_run(tmp_path, RunRecord(name="demo", run_id=odd["run_id"]))
        bad.write_text(json.dumps({**odd, **change}))
        with pytest.raises(ValueError, match=f"run record {bad} is not readable .*must be"):
            read_run(bad)
    bad.write_text(json.dumps({**odd, "stages": {"ingest": {**stage, "seconds": 2, "bytes": 5.0}}}))
    assert read_run(bad).stages["ingest"].seconds == 2  # a number is one, written as an int or a float
    bad.write_text(json.dumps({**odd, "extra": None}))
    capsys.readouterr()
    assert main(["status", "--list", "--root", str(tmp_path)]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "<unreadable record>" in listed[odd["run_id"]] and "demo" in listed[good.run_id]
    assert main(["gc", "--dry-run", "--root", str(tmp_path)]) == 2  # the newest: what it keeps is unknown
    assert "is not readable" in capsys.readouterr().err
    good.run_id = "20260103-000000-000000-cccc"
    save_run(tmp_path, good)
    assert main(["gc", "--dry-run", "--keep-runs", "1", "--root", str(tmp_path)]) == 0  # past the runs kept
    assert "Traceback" not in capsys.readouterr().err


def _stopped_and_whole_runs(root):
    """Two runs of config demo under `root`: a whole one (score, two training runs), then a newer one that stopped
    after ingest (--until ingest). out: (whole run id, stopped run id)."""
    whole = RunRecord(name="demo", run_id="20260101-000000-aaaaaa")
    for name in ("ingest", "score", "train:saerl:0", "train:vanilla:0"):
        whole.stages[name] = StageRecord(name.split(":")[0], "k", "computed", "", {}, {})
    stopped = _rec("demo", "ingest", {}, {})
    stopped.run_id = "20260102-000000-bbbbbb"
    save_run(root, whole)
    save_run(root, stopped)
    return whole.run_id, stopped.run_id


def test_a_stage_a_run_stopped_before_names_the_newest_run_that_has_it(tmp_path):
    """load_run(root, "latest").stages["score"] on a run that stopped early (the README's example) raised a bare
    KeyError('score')."""
    import pytest

    whole, stopped = _stopped_and_whole_runs(tmp_path)
    latest = load_run(tmp_path, "latest")
    with pytest.raises(KeyError) as err:
        latest.stages["score"]
    assert str(err.value) == (f"run {stopped} has no stage run 'score' (it ran: ingest); the newest run under "
                              f"{tmp_path} that has it is {whole} (config demo): load_run(root, '{whole}')")
    assert "score" not in latest.stages and latest.stages.get("score") is None and list(latest.stages) == ["ingest"]
    with pytest.raises(KeyError, match=f"no run under {tmp_path} has it: run `saerl run CONFIG --until evaluate`"):
        latest.stages["evaluate"]
    with pytest.raises(KeyError, match="pick a run that reached it"):
        RunRecord(name="demo").stages["score"]  # a record not read from a root
    with pytest.raises(KeyError, match="'scores' is no stage: stages are testbed, ingest"):
        latest.stages["scores"]


def test_a_stage_with_a_run_per_arm_and_seed_names_its_runs():
    """stages["train"] instead of "train:saerl:0" raised a bare KeyError('train')."""
    import pytest

    record = RunRecord(name="demo", run_id="20260101-000000-aaaaaa")
    for name in ("score", "train:saerl:0", "train:vanilla:0"):
        record.stages[name] = StageRecord(name.split(":")[0], "k", "computed", "", {}, {})
    with pytest.raises(KeyError, match="names each 'train:ARM:SEED': ask for one of train:saerl:0, train:vanilla:0"):
        record.stages["train"]


def test_load_run_takes_a_run_record_and_names_run_id_for_other_types(tmp_path):
    """load_run(root, <RunRecord>) and load_run(root, 20260101) failed with "startswith first arg must be str"."""
    import pytest

    whole, _ = _stopped_and_whole_runs(tmp_path)
    assert load_run(tmp_path, load_run(tmp_path, whole)).run_id == whole
    with pytest.raises(TypeError, match=r"run_id must be a str \(a run id, a unique prefix of one, or 'latest'\) or a "
                       "RunRecord, got int 20260101: pass '20260101'"):
        load_run(tmp_path, 20260101)


def test_runs_that_started_in_the_future_are_those_a_run_starting_now_sorts_before(tmp_path):
    """A run recorded while a clock was ahead (a VM before NTP synced, a copied root) sorts after every later run,
    so it stays 'latest'. runs_ahead finds it for a run starting now; a run started elsewhere at the same moment,
    on a clock a few seconds ahead, and an older run are not flagged."""
    import time

    import pytest

    from saerl.runs import CLOCK_SLACK_S, ahead_of_clock, new_run_id, runs_ahead

    now = time.time()
    for name, start in (("older", now - 2 * DAY_S), ("near", now + CLOCK_SLACK_S / 2),
                        ("ahead", now + 3 * DAY_S)):
        save_run(tmp_path, RunRecord(name=name, run_id=new_run_id(start), started=start))
    new = new_run_id(now)
    assert [r.name for r in runs_ahead(tmp_path, new, now)] == ["ahead"]
    assert load_run(tmp_path, "latest").name == "ahead", "the order stays the run ids' (records on users' disks)"
    assert ahead_of_clock(load_run(tmp_path, "latest"), now) == pytest.approx(3 * DAY_S, abs=1.0)
    assert runs_ahead(tmp_path, new, now + 4 * DAY_S) == [], "once the clock passes its start"
