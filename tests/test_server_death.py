"""A tracking server or a Prefect server dying mid-run loses no computed artifact.

MLflow: the smoke pipeline tracks to a real `mlflow server` on loopback, SIGKILLed right after the first stage run
was logged to it. The flow still runs every stage, warns once that tracking stopped, and every artifact is stored.

Prefect: `saerl run` runs in a subprocess against a real `prefect server` on loopback, SIGKILLed while extraction
is writing its chunks. Prefect 3 runs task runs on the client, so the stages keep going; only the flow run's final
state cannot be reported. The command warns and exits 0, every artifact is stored, and a rerun (under a new server)
is all cache hits. When the server that dies is the command's own (started for the root), the command ends within
seconds of the work, with Prefect's default client retries (they waited about 70 s), and prints no traceback."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_mlflow_server import HOST, _stop, start_mlflow

from saerl.artifacts import ArtifactStore, ChunkLog
from saerl.config import load_config
from saerl.runs import list_runs, read_run, stage_of

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
RUN_TIMEOUT_S = 600
POLL_S = 0.01
SERVER_START_S = 120
SERVER_POLL_S = 0.25


def _assert_stored(root: Path, record: dict, stages: list[str]) -> None:
    """The record holds exactly `stages`, each computed, and every one's artifact is in the store and verifies."""
    assert set(record["stages"]) == set(stages)  # a record read back from disk has its stages sorted by name
    store = ArtifactStore(root)
    for name, rec in record["stages"].items():
        assert store.is_complete(stage_of(name), rec["key"]), f"{name}: {store.problems(stage_of(name), rec['key'])}"


# -------------------------------------------------------------------------------------------------- MLflow

MLFLOW_UNTIL = "curriculum"
MLFLOW_STAGES = ["testbed", "ingest", "extract", "sae", "encode", "score", "properties", "curriculum"]


class _Messages(logging.Handler):
    """Collects the messages of one logger (caplog's root handler does not survive Prefect configuring logging
    at the first flow run of a session)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_tracking_server_dying_mid_run_loses_no_artifact(prefect_api, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    import flows.pipeline as fp

    proc, url, db = start_mlflow(tmp_path)
    logged: list[str] = []
    log_stage_run = fp.log_stage_run

    def log_then_kill(tracker, stage, rec, metrics, upstream=None):  # the server dies once the first stage run
        log_stage_run(tracker, stage, rec, metrics, upstream)  # reached it
        logged.append(rec.stage)
        if len(logged) == 1:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    monkeypatch.setattr(fp, "log_stage_run", log_then_kill)
    root = tmp_path / "root"
    cfg = load_config(SMOKE, [f"runtime.artifact_root={root}", f"tracking.uri={url}"])
    caught, tracking_log = _Messages(), logging.getLogger("saerl.tracking")
    tracking_log.addHandler(caught)
    try:
        record = fp.pipeline_flow(config=cfg.model_dump(mode="json"), until=MLFLOW_UNTIL)
    finally:
        tracking_log.removeHandler(caught)
        _stop(proc)
    assert proc.returncode == -signal.SIGKILL and logged == MLFLOW_STAGES
    _assert_stored(root, record, MLFLOW_STAGES)
    assert {r["status"] for r in record["stages"].values()} == {"computed"}
    assert len(caught.messages) == 1, caught.messages  # one warning, then tracking is off
    assert url in caught.messages[0] and "continuing without tracking" in caught.messages[0]
    # what was logged before the server died is in its store: the parent run and the first stage run
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert {r.info.run_name for r in runs} == {record["run_id"], "testbed"}
    testbed = next(r for r in runs if r.info.run_name == "testbed")
    assert testbed.data.tags["saerl.key"] == record["stages"]["testbed"]["key"]


# -------------------------------------------------------------------------------------------------- Prefect

PREFECT_UNTIL = "encode"
PREFECT_STAGES = ["testbed", "ingest", "extract", "sae", "encode"]
# Two prompts per extraction chunk (~60 chunks), each followed by a pause: the kill lands during extraction.
CLI_OVERRIDES = ["extract.chunk_rows=2", "runtime.torch_threads=1", "tracking.enabled=false"]
SLEEP_AFTER_CHUNK_S = 0.1
KILL_AFTER_CHUNKS = 3
CLIENT_RETRIES = "1"  # Prefect's client retries a refused request 5 times with backoff (~70 s) by default

CLI_RUNNER = """
import sys, time
from saerl.artifacts import ChunkLog
sleep_s = float(sys.argv[1])
if sleep_s:
    mark = ChunkLog.mark
    def slow_mark(self, chunk, **meta):
        mark(self, chunk, **meta)
        time.sleep(sleep_s)
    ChunkLog.mark = slow_mark
from flows.cli import main
sys.exit(main(sys.argv[2:]))
"""


def start_prefect(folder: Path) -> tuple[subprocess.Popen, str]:
    """A real `prefect server` on loopback (home and database under `folder`, its own process group):
    (process, API URL)."""
    from flows.server import free_port, healthy, prefect_env, prefect_executable

    env = {**os.environ, **prefect_env(folder)}
    port = free_port()
    url = f"http://{HOST}:{port}/api"
    cmd = [prefect_executable(), "server", "start", "--host", HOST, "--port", str(port), "--analytics-off", "--no-ui",
           "--no-scheduler", "--no-late-runs"]
    log = folder / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.monotonic() + SERVER_START_S
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"prefect server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(SERVER_POLL_S)
    return proc, url


def start_cli(root: Path, api_url: str | None, sleep_s: float,
              client_retries: str | None = CLIENT_RETRIES) -> subprocess.Popen:
    """`saerl run configs/smoke.yaml --until encode` in a subprocess on `root`, against the Prefect API at
    `api_url` (None: the command starts its own server), pausing `sleep_s` after each recorded chunk, with
    PREFECT_CLIENT_MAX_RETRIES=`client_retries` (None: Prefect's default, as a user runs it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_CLIENT_MAX_RETRIES")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    if client_retries is not None:
        env["PREFECT_CLIENT_MAX_RETRIES"] = client_retries
    overrides = [f"runtime.artifact_root={root}", *CLI_OVERRIDES, *([f"runtime.prefect_api_url={api_url}"] if api_url else [])]
    argv = ["run", str(SMOKE), *overrides, "--until", PREFECT_UNTIL]
    return subprocess.Popen([sys.executable, "-c", CLI_RUNNER, str(sleep_s), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def kill_during_extraction(cli: subprocess.Popen, server: subprocess.Popen | None, root: Path) -> list[str]:
    """SIGKILL the Prefect server (its whole process group; None: the one the command started, :func:`own_server`)
    once extraction recorded KILL_AFTER_CHUNKS chunks; returns the extraction chunks done by then (the command must
    still be running)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        assert cli.poll() is None, f"saerl run ended before the server was killed: {cli.communicate()[1][-3000:]}"
        partials = list((root / "extract").glob(".partial-*")) if (root / "extract").exists() else []
        if partials and len(ChunkLog(partials[0]).done()) >= KILL_AFTER_CHUNKS:
            if server is None:
                pid = own_server(cli.pid)
                os.killpg(pid, signal.SIGKILL)  # the command's child: it reaps it, not this test
            else:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            return ChunkLog(partials[0]).done()
        time.sleep(POLL_S)
    raise AssertionError(f"extraction recorded no {KILL_AFTER_CHUNKS} chunks within {RUN_TIMEOUT_S} s")


def own_server(cli_pid: int) -> int:
    """The pid of the local Prefect server the command `cli_pid` started (its child running `prefect server start`,
    which leads a process group of its own). Linux (/proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
        if ppid == cli_pid and b"server" in argv and b"start" in argv:
            return int(stat.parent.name)
    raise AssertionError(f"saerl run (pid {cli_pid}) has no local Prefect server")


def _newest_record(root: Path) -> dict:
    return read_run(list_runs(root)[-1]).to_json()


def test_prefect_server_dying_mid_run_loses_no_artifact(tmp_path):
    root = tmp_path / "root"
    server, url = start_prefect(tmp_path / "server")
    try:
        cli = start_cli(root, url, SLEEP_AFTER_CHUNK_S)
        try:
            done = kill_during_extraction(cli, server, root)
            out, err = cli.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            if cli.poll() is None:
                cli.kill()
    finally:
        _stop(server)
    assert cli.returncode == 0, err[-3000:]
    assert "the Prefect API stopped answering" in err and "Every stage run finished" in err
    assert "queued events dropped" in err
    first = _newest_record(root)
    _assert_stored(root, first, PREFECT_STAGES)
    assert {r["status"] for r in first["stages"].values()} == {"computed"}
    summary = json.loads((Path(first["stages"]["extract"]["path"]) / "manifest.json").read_text())["summary"]
    assert len(done) < summary["chunks_run"] + summary["chunks_skipped"], "extraction went on after the server died"

    rerun = start_cli(root, None, 0.0)  # a fresh server, as a user's next `saerl run` starts one
    out, err = rerun.communicate(timeout=RUN_TIMEOUT_S)
    assert rerun.returncode == 0, err[-3000:]
    second = _newest_record(root)
    assert second["run_id"] != first["run_id"]
    assert {n: r["status"] for n, r in second["stages"].items()} == dict.fromkeys(PREFECT_STAGES, "cached")
    assert {n: r["key"] for n, r in second["stages"].items()} == {n: r["key"] for n, r in first["stages"].items()}


PROMPT_EXIT_S = 30  # from the run's end (its record's) to the command's exit: Prefect's 5 client retries took ~70 s


def test_own_prefect_server_dying_mid_run_ends_the_command_promptly(tmp_path):
    """The command's own server killed mid-run: the command still exits 0 with every artifact, but within seconds of
    the work ending (it retried the flow run's final state for about 70 s) and without Prefect's ERROR traceback."""
    root = tmp_path / "root"
    cli = start_cli(root, None, SLEEP_AFTER_CHUNK_S, client_retries=None)  # Prefect's default client retries
    try:
        kill_during_extraction(cli, None, root)
        out, err = cli.communicate(timeout=RUN_TIMEOUT_S)
        exited = time.time()
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, err[-3000:]
    record = _newest_record(root)
    _assert_stored(root, record, PREFECT_STAGES)
    assert exited - record["extra"]["ended"] < PROMPT_EXIT_S, err[-3000:]
    assert "the Prefect API stopped answering" in err and "Every stage run finished" in err
    assert "Traceback" not in err, err[-3000:]
