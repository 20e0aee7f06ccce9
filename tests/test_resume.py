"""kill -9 during extraction, encoding and labelling: the rerun resumes from the chunks the killed run recorded as
done (their files are not rewritten, their chunks not recomputed) and its result equals an uninterrupted run's:
the Zarr arrays bit for bit, the labels table row for row.

Each run is a subprocess running the smoke config's stages that the stage under test reads, then that stage
(run_stage, cached exactly as run_all caches), with small chunks. The killed run sleeps a little after recording
each chunk (a patched ChunkLog.mark, which also prints each chunk it records), so the SIGKILL lands while most
chunks are still to do; where it lands (computing, writing, sleeping) is up to the race."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_artifacts import _read_zarr_arrays

from saerl.artifacts import CHUNK_DIR, MANIFEST, ArtifactStore, ChunkLog
from saerl.config import load_config
from saerl.pipeline import run_all

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
# Two prompts per chunk: ~60 chunks, so a kill after the first few leaves most of the work to resume.
OVERRIDES = ["extract.chunk_rows=2", "runtime.torch_threads=1", "runtime.progress=false", "tracking.enabled=false"]
UPSTREAM = ("testbed", "ingest")
SLEEP_AFTER_CHUNK_S = 0.05
KILL_AFTER_CHUNKS = 3
RUN_TIMEOUT_S = 600
POLL_S = 0.005

RUNNER = """
import json, sys, time
from saerl.artifacts import ArtifactStore, ChunkLog
from saerl.config import load_config
from saerl.pipeline import resolve_upstream, run_stage, stage_runs

config, root, until, sleep_s, go = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
overrides = json.loads(sys.argv[6])
mark = ChunkLog.mark
def reported_mark(self, chunk, **meta):
    mark(self, chunk, **meta)
    print(f"MARKED {chunk}", flush=True)
    time.sleep(sleep_s)
ChunkLog.mark = reported_mark
cfg = load_config(config, overrides + [f"runtime.artifact_root={root}"])
store = ArtifactStore(root)
if go != "-":  # wait for the starting signal, so that several runners begin together
    open(go + ".ready-" + str(__import__("os").getpid()), "w").close()
    while not __import__("os").path.exists(go):
        time.sleep(0.01)
runs = stage_runs(cfg, until)
needed = {until}  # only what `until` reads, directly or not (labelling reads no activations)
for stage, name, ups, variant in reversed(runs):
    if stage in needed:
        needed |= set(ups)
refs, results = {}, {}
for stage, name, ups, variant in runs:
    if stage in needed:
        res = run_stage(store, cfg, stage, resolve_upstream(stage, ups, refs, variant), variant=variant)
        refs[name], results[name] = res.ref, res
print("RESULTS " + json.dumps({name: r.to_json() for name, r in results.items()}), flush=True)
"""


def start_runner(root: Path, until: str, sleep_s: float = 0.0, go: str = "-",
                 overrides: list[str] = OVERRIDES) -> subprocess.Popen:
    """A subprocess running the stages `until` reads and `until` itself (as run_all does, cached in `root`) for
    the smoke config + `overrides`, optionally slowed after each recorded chunk and held until the file `go`
    exists."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(SMOKE), str(root), until, str(sleep_s), go,
                             json.dumps(overrides)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)


def finish_marked(proc: subprocess.Popen) -> tuple[dict, list[str]]:
    """Wait for a runner: ({run name: StageResult json}, the chunks it recorded as done, in order); fails with its
    stderr if it failed."""
    out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, err[-3000:]
    line = next(x for x in out.splitlines() if x.startswith("RESULTS "))
    marked = [x.split()[1] for x in out.splitlines() if x.startswith("MARKED ")]
    return json.loads(line[len("RESULTS "):]), marked


def finish(proc: subprocess.Popen) -> dict:
    """Wait for a runner and return its {run name: StageResult json}; fails with its stderr if it failed."""
    return finish_marked(proc)[0]


def smoke_upstream(tmp_path_factory) -> Path:
    """A session-wide artifact root holding the smoke config's testbed and ingest artifacts (built in this
    process the first time; later calls are cache hits)."""
    root = tmp_path_factory.getbasetemp() / "smoke-upstream"
    cfg = load_config(SMOKE, OVERRIDES + [f"runtime.artifact_root={root}"])
    run_all(ArtifactStore(root), cfg, until="ingest")
    return root


def copy_stages(src: Path, dst: Path, stages: tuple[str, ...]) -> Path:
    """Copy the finished artifacts of `stages` from one artifact root to another (keys do not depend on the
    root, so they are cache hits there)."""
    for stage in stages:
        for folder in (src / stage).iterdir():
            if not folder.name.startswith("."):
                shutil.copytree(folder, dst / stage / folder.name)
    return dst


def kill_after_chunks(proc: subprocess.Popen, root: Path, stage: str, n_chunks: int) -> list[str]:
    """SIGKILL the runner once the partial folder of `stage` records n_chunks done; returns the chunks
    recorded done at that moment (the runner must not have finished first)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"runner ended before it was killed: {proc.communicate()[1][-2000:]}"
        partials = list((root / stage).glob(".partial-*")) if (root / stage).exists() else []
        if partials and len(ChunkLog(partials[0]).done()) >= n_chunks:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return ChunkLog(partials[0]).done()
        time.sleep(POLL_S)
    raise AssertionError(f"no {n_chunks} chunks of {stage} done within {RUN_TIMEOUT_S} s")


def chunk_files(folder: Path, stage: str, chunks: list[str]) -> dict[str, int]:
    """{relative path: mtime_ns} of the Zarr files only the given prompt-chunks write."""
    if stage == "extract":
        patterns = [f"activations.zarr/pooled/*/c/{c}/*" for c in chunks]
        patterns += [f"activations.zarr/tokens/c{int(c):06d}/**/*" for c in chunks]
    else:
        patterns = [f"codes.zarr/{pool}/{name}/c/{c}/*" for c in chunks for name in ("feature_ids", "values")
                    for pool in ("max", "mean")]
    files = {p for pattern in patterns for p in folder.glob(pattern) if p.is_file()}
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run up to encode, in a subprocess like the killed ones."""
    root = copy_stages(smoke_upstream(tmp_path_factory), tmp_path_factory.mktemp("reference"), UPSTREAM)
    finish(start_runner(root, "encode"))
    return root


def _only_artifact(root: Path, stage: str) -> Path:
    (folder,) = [p for p in (root / stage).iterdir() if not p.name.startswith(".")]
    return folder


@pytest.mark.parametrize(("stage", "before"), [("extract", UPSTREAM), ("encode", (*UPSTREAM, "extract", "sae"))])
def test_kill_9_resumes_finished_chunks_and_matches_an_uninterrupted_run(reference, tmp_path, stage, before):
    root = copy_stages(reference, tmp_path / "root", before)
    done = kill_after_chunks(start_runner(root, stage, SLEEP_AFTER_CHUNK_S), root, stage, KILL_AFTER_CHUNKS)
    (partial,) = (root / stage).glob(".partial-*")
    stamps = chunk_files(partial, stage, done)
    assert stamps, f"no chunk files found for chunks {done}"
    assert not [p for p in (root / stage).iterdir() if not p.name.startswith(".")], "killed run published"

    results = finish(start_runner(root, stage))
    assert results[stage]["computed"]
    final = _only_artifact(root, stage)
    assert not list((root / stage).glob(".partial-*"))
    summary = json.loads((final / MANIFEST).read_text())["summary"]
    if stage == "extract":  # the rerun's own count of what it skipped
        assert summary["chunks_skipped"] == len(done)
    chunk_dirs = final / ("activations.zarr/tokens" if stage == "extract" else "codes.zarr/max/values/c")
    n_chunks = sum(p.is_dir() for p in chunk_dirs.iterdir())
    assert summary["chunks_run"] == n_chunks - len(done)
    # (a) the finished chunks were not recomputed: their files are the killed run's, untouched
    assert chunk_files(final, stage, done) == stamps
    # (b) the result equals the uninterrupted run's, bit for bit
    mine, ref = _read_zarr_arrays(final), _read_zarr_arrays(_only_artifact(reference, stage))
    assert mine.keys() == ref.keys()
    for name, arr in ref.items():
        assert arr.dtype == mine[name].dtype and arr.shape == mine[name].shape, name
        if arr.dtype.kind in "fiu":
            assert arr.tobytes() == mine[name].tobytes(), name
        else:
            assert np.array_equal(arr, mine[name]), name


# --------------------------------------------------------------------------------------------------- label

# The smoke testbed flags about a fifth of its 120 prompts as labelled: chunks of 2 give about 10 chunks. Difficulty
# is measured (the label stage runs) although the smoke data has a difficulty column.
LABEL_OVERRIDES = [*OVERRIDES, "score.difficulty_source=measured", "score.label_chunk_rows=2"]
LABEL_SLEEP_S = 0.2  # a chunk is quick to measure: a longer pause leaves the kill most of the chunks


@pytest.fixture(scope="module")
def label_reference(tmp_path_factory) -> Path:
    """An uninterrupted run of the label stage (on the shared testbed and ingest), in a subprocess."""
    root = copy_stages(smoke_upstream(tmp_path_factory), tmp_path_factory.mktemp("label-reference"), UPSTREAM)
    finish(start_runner(root, "label", overrides=LABEL_OVERRIDES))
    return root


def test_kill_9_during_labelling_resumes_finished_chunks_and_matches_an_uninterrupted_run(label_reference,
                                                                                           tmp_path_factory, tmp_path):
    import polars as pl

    from saerl.labels import LABELS, PARTS_DIR

    root = copy_stages(smoke_upstream(tmp_path_factory), tmp_path / "root", UPSTREAM)
    proc = start_runner(root, "label", LABEL_SLEEP_S, overrides=LABEL_OVERRIDES)
    done = kill_after_chunks(proc, root, "label", KILL_AFTER_CHUNKS)
    assert not [p for p in (root / "label").iterdir() if not p.name.startswith(".")], "killed run published"
    (partial,) = (root / "label").glob(".partial-*")
    assert all((partial / CHUNK_DIR / PARTS_DIR / f"{c}.parquet").is_file() for c in done), "each recorded chunk has its table"

    results, marked = finish_marked(start_runner(root, "label", overrides=LABEL_OVERRIDES))
    assert results["label"]["computed"]
    final = _only_artifact(root, "label")
    summary = json.loads((final / MANIFEST).read_text())["summary"]
    n_chunks = summary["chunks_run"] + summary["chunks_skipped"]
    assert summary["chunks_skipped"] == len(done) < n_chunks
    # (a) the finished chunks were not measured again: the rerun recorded only the others
    assert sorted(marked, key=int) == [str(c) for c in range(n_chunks) if str(c) not in done]
    assert not (final / PARTS_DIR).exists() and not (final / CHUNK_DIR).exists()
    # (b) the labels equal the uninterrupted run's, row for row and byte for byte
    ref = _only_artifact(label_reference, "label")
    assert pl.read_parquet(final / LABELS).equals(pl.read_parquet(ref / LABELS))
    assert n_chunks == -(-pl.read_parquet(final / LABELS).height // 2), "chunks of 2 labelled prompts"
    files = json.loads((final / MANIFEST).read_text())["files"]
    assert files[LABELS]["sha256"] == json.loads((ref / MANIFEST).read_text())["files"][LABELS]["sha256"]


# ------------------------------------------------------------------------------------------ the flow's reason


def test_a_flow_resuming_a_killed_extraction_says_how_many_chunks_were_already_done(reference, tmp_path, prefect_api,
                                                                                     capsys):
    """The flow explained a stage run that resumed a killed build as "computed: no earlier run of this config ran
    this stage": nothing said that most of a long extraction was reused. Its line and run record now lead with
    'resumed an interrupted build: N of M chunks were already done'; a rerun is a plain cache hit."""
    from flows.pipeline import pipeline_flow

    root = copy_stages(reference, tmp_path / "root", UPSTREAM)
    done = kill_after_chunks(start_runner(root, "extract", SLEEP_AFTER_CHUNK_S), root, "extract", KILL_AFTER_CHUNKS)
    cfg = load_config(SMOKE, OVERRIDES + [f"runtime.artifact_root={root}"])
    record = pipeline_flow(config=cfg.model_dump(mode="json"), until="extract")
    summary = json.loads((_only_artifact(root, "extract") / MANIFEST).read_text())["summary"]
    total = summary["chunks_run"] + summary["chunks_skipped"]
    assert summary["chunks_skipped"] == len(done) < total
    why = record["stages"]["extract"]["reason"]
    assert why == (f"computed: resumed an interrupted build: {len(done)} of {total} chunks were already done; "
                   "no earlier run of this config ran this stage"), why
    line = next(ln for ln in capsys.readouterr().out.splitlines() if re.match(r"\d\d:\d\d:\d\d \[extract\] computed", ln))
    assert line.endswith(f"  {why}"), line
    assert record["stages"]["ingest"]["reason"] == "cached: same code version, inputs and config as a stored artifact"
    again = pipeline_flow(config=cfg.model_dump(mode="json"), until="extract")["stages"]["extract"]
    assert again["status"] == "cached" and "resumed" not in again["reason"]


def _fake_stage_task(monkeypatch, done: dict) -> None:
    """The flow's stage task faked: every stage run returns `done` (a StageResult's JSON form) at once."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    import flows.pipeline as fp

    state = SimpleNamespace(name="Completed", result=lambda: done, timestamp=datetime.now(UTC))
    future = SimpleNamespace(state=state, wait=lambda: None, add_done_callback=lambda fn: fn(None))

    class Task:
        def with_options(self, **_):
            return self

        def submit(self, **_):
            return future

    monkeypatch.setattr(fp, "stage_task", Task())


def _fanned_extract(tmp_path, monkeypatch, fan_out=None, build_sharded=None, computed=True) -> dict:
    """The extract stage of the smoke config through the flow on a faked Dask fan-out: a killed build left chunks
    0-1 of 5 in the partial folder; `fan_out(partial folder, the task's result)` stands for the shards (the real
    build_sharded runs around it), or `build_sharded(store, args, n_shards, start, label)` for the whole; the stage task is faked
    (computed or not). out: the flow's record."""

    import flows.pipeline as fp
    from saerl.sweep import planned_run_keys

    cfg = load_config(SMOKE, OVERRIDES + [f"runtime.artifact_root={tmp_path}", "runtime.task_runner=dask"])
    key = planned_run_keys(cfg, "extract")["extract"]
    partial = ArtifactStore(tmp_path).partial_path("extract", key)
    for c in range(2):
        ChunkLog(partial).mark(c)
    done = {"computed": computed, "seconds": 0.1, "metrics": {}, "resumed": ""}
    _fake_stage_task(monkeypatch, done)
    if fan_out is not None:
        monkeypatch.setattr(fp, "fan_out", lambda args, n_shards, label=None: fan_out(partial, done))
    if build_sharded is not None:
        monkeypatch.setattr(fp, "build_sharded", build_sharded)
    monkeypatch.setattr(fp, "say", lambda message, label=None: None)
    return fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="extract")


def test_a_fanned_out_stage_counts_what_it_resumed_around_its_shards(tmp_path, monkeypatch):
    """On Dask a sharded stage's own task finds every chunk done (its shards ran them), so its count is the whole
    store: build_sharded counts the chunk records its shards left unchanged (2 of 5 left by a killed build; the
    shards run the other 3 and, a record of a replaced store, chunk 1 again: 1 of 5 reused)."""
    def shards(partial, done):
        for c in (1, 2, 3, 4):
            ChunkLog(partial).mark(c)
        done["resumed"] = "resumed an interrupted build: 5 of 5 chunks were already done"  # what the task then sees

    record = _fanned_extract(tmp_path, monkeypatch, fan_out=shards)
    assert record["stages"]["extract"]["reason"].startswith(
        "computed: resumed an interrupted build: 1 of 5 chunks were already done; "), record["stages"]["extract"]
    assert record["stages"]["ingest"]["reason"] == "computed: no earlier run of this config ran this stage"


def test_a_fanned_out_stage_that_waited_for_another_flows_build_says_so(tmp_path, monkeypatch):
    """A second flow fanning out the same extraction waits on the key's build lock (build_sharded) until the first
    has published, then its stage task finds the artifact: the reason said "same code, inputs and config as a
    stored artifact", nothing of the wait. It says whose build it reused and how long it waited (the lock's wait,
    kept by the flow's store; faked here)."""
    def build_sharded(store, args, n_shards, start, label=None):
        store.waited[("extract", args["key"])] = 12.0  # what ArtifactStore.lock records after waiting on another
        return start(), ""

    why = _fanned_extract(tmp_path, monkeypatch, build_sharded=build_sharded, computed=False)["stages"]["extract"]["reason"]
    assert why == "cached: built by another process meanwhile (waited 12 s for it)", why


def test_the_flow_leads_a_stage_runs_reason_with_the_note_its_task_returned(tmp_path, monkeypatch):
    """Not fanned out, the flow's reason leads with the task's own note (StageResult.resumed: chunk counts, or a
    training run's checkpoint step), not a second count of its own (stage tasks faked)."""

    import flows.pipeline as fp

    cfg = load_config(SMOKE, OVERRIDES + [f"runtime.artifact_root={tmp_path}"])
    note = "resumed an interrupted training run from step 40 of 100"
    _fake_stage_task(monkeypatch, {"computed": True, "seconds": 0.1, "metrics": {}, "resumed": note})
    monkeypatch.setattr(fp, "say", lambda message, label=None: None)
    record = fp.pipeline_flow.fn(config=cfg.model_dump(mode="json"), until="ingest")
    assert record["stages"]["ingest"]["reason"] == f"computed: {note}; no earlier run of this config ran this stage"


def test_the_testbed_manifest_records_the_threads_its_lm_pretrained_on(tmp_path_factory):
    """The testbed pretrains on testbed.threads and gives the process its own count back before publishing, so the
    manifest recorded the process's count (runtime.torch_threads=1 here) for an LM built on two threads."""
    root = smoke_upstream(tmp_path_factory)
    cfg = load_config(SMOKE, OVERRIDES)
    manifest = json.loads((_only_artifact(root, "testbed") / "manifest.json").read_text())
    assert manifest["machine"]["torch_threads"] == str(cfg.testbed.threads) != "1"
    assert manifest["machine"]["cpu"] and "greedy_accuracy" in manifest["summary"]
