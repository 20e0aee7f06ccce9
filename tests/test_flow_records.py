"""flows.pipeline.finished_record: which saved run record proves that a flow's body finished (fast, no server)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

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


def test_finished_record_needs_every_planned_key_of_this_config(tmp_path):
    from flows.pipeline import finished_record

    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}"])
    other = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}", "curriculum.mix_ratio=0.5"])
    since = time.time() - 1
    assert finished_record(tmp_path, cfg.model_dump(mode="json"), None, since) is None
    _save(tmp_path, other)  # same name, same stage names, other curriculum: not this config's run
    assert finished_record(tmp_path, cfg.model_dump(mode="json"), None, since) is None
    _save(tmp_path, cfg, drop="evaluate")  # this config, but the body did not finish
    assert finished_record(tmp_path, cfg.model_dump(mode="json"), None, since) is None
    mine = _save(tmp_path, cfg)
    found = finished_record(tmp_path, cfg.model_dump(mode="json"), None, since)
    assert found is not None and found.run_id == mine.run_id
    assert finished_record(tmp_path, cfg.model_dump(mode="json"), None, time.time() + 60) is None  # saved before `since`
    assert finished_record(tmp_path, cfg.model_dump(mode="json"), "score", since) is None  # until: fewer planned runs


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
