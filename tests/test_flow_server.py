"""The per-run Prefect server (flows.server): it ends with the run that started it, even a run killed by SIGKILL
(which never reaches the block's `finally`). A stand-in for `prefect server start` (a tiny HTTP server answering
the health check) keeps this fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 15.0
POLL_S = 0.1

FAKE_SERVER = f"""#!{sys.executable}
import http.server, os, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Health)
open(os.environ["FAKE_SERVER_PID"], "w").write(str(os.getpid()))
server.serve_forever()
"""

RUN = """import sys, time
from pathlib import Path
import flows.server as server
server.prefect_executable = lambda: sys.argv[2]
with server.prefect_server(Path(sys.argv[1])):
    print("up", flush=True)
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie left unreaped by a container's init counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_the_server_ends_when_the_run_that_started_it_is_killed(tmp_path):
    fake = tmp_path / "prefect"
    fake.write_text(FAKE_SERVER)
    fake.chmod(0o755)
    pid_file = tmp_path / "server.pid"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"FAKE_SERVER_PID": str(pid_file)}
    run = subprocess.Popen([sys.executable, "-c", RUN, str(tmp_path / "root"), str(fake)], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, text=True)
    server_pid = None
    try:
        assert run.stdout.readline().strip() == "up", "the run never had its server"
        server_pid = int(pid_file.read_text())
        assert alive(server_pid)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=EXIT_TIMEOUT_S)
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while alive(server_pid) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert not alive(server_pid), "the Prefect server outlived the run that started it"
    finally:
        if run.poll() is None:
            run.kill()
        if server_pid is not None and alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


class RunningProc:
    """A server process started in place of a real one: it runs until stopped (poll None), and stops at once."""

    def poll(self):
        return None

    def terminate(self):
        pass

    def wait(self, timeout=None):
        return 0


def test_a_local_server_starts_under_the_roots_start_lock(tmp_path, monkeypatch):
    """Two first runs on a new root started their Prefect servers at once, both migrating prefect.db, and one died
    ('duplicate column name'). The start lock (PREFECT_HOME/server-start.lock) is held from the server's launch until
    it answers its health check, so a second run's server starts only then; it is free once the server is up."""
    import flows.server as server
    from saerl.artifacts import lock_held

    lock = tmp_path / "prefect" / server.START_LOCK
    held_while_starting: list[bool | None] = []

    def locked() -> bool | None:
        return lock_held(lock)

    def healthy(url, timeout=2.0):
        held_while_starting.append(locked())
        return len(held_while_starting) > 2

    monkeypatch.setattr(server.subprocess, "Popen", lambda *a, **kw: RunningProc())
    monkeypatch.setattr(server, "healthy", healthy)
    monkeypatch.setattr(server, "POLL_S", 0.0)
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})  # restored after
    with server.prefect_server(tmp_path):
        assert not locked()
    assert held_while_starting == [True, True, True]


def test_a_wall_clock_step_while_the_server_starts_does_not_fail_the_start(tmp_path, monkeypatch,
                                                                           stepped_wall_clock):
    """The wait for the local server's first answer was timed by the wall clock: an NTP step of +2 min (a VM or
    laptop just resumed) right after the deadline was taken failed `saerl run` at once with 'did not answer within
    90 s' and sent the user after prefect.db's permissions. The deadline is on the monotonic clock now."""
    import flows.server as server

    clock = stepped_wall_clock("flows.server")
    answers: list[int] = []

    def healthy(url, timeout=2.0):
        answers.append(1)
        clock.step(2 * server.STARTUP_TIMEOUT_S if len(answers) == 1 else 0.0)  # NTP steps the clock forward
        return len(answers) > 2

    monkeypatch.setattr(server.subprocess, "Popen", lambda *a, **kw: RunningProc())
    monkeypatch.setattr(server, "healthy", healthy)
    monkeypatch.setattr(server, "POLL_S", 0.0)
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})  # restored after
    with server.prefect_server(tmp_path) as url:
        assert url.startswith("http://127.0.0.1:")
    assert len(answers) == 3


def test_the_servers_home_is_kept_from_other_users(tmp_path, monkeypatch):
    """Under a umask of 022 the local server's prefect.db (every flow run's parameters: a database tracking URI's
    password among them) was world-readable, and so was PREFECT_HOME. Other users' bits are now off what the server
    writes (its umask) and off the home and what an older run left in it; the group's stay (a team shares a root)."""
    import flows.server as server

    fake = tmp_path / "prefect-fake"
    fake.write_text(FAKE_SERVER.replace("server.serve_forever()", "open(os.path.join(os.environ['PREFECT_HOME'], "
                                        "'prefect.db'), 'w').close()\nserver.serve_forever()"))
    fake.chmod(0o755)
    root = tmp_path / "root"
    monkeypatch.setattr(server, "prefect_executable", lambda: str(fake))
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
                        | {"FAKE_SERVER_PID": str(tmp_path / "server.pid")})  # restored after
    monkeypatch.setattr(server, "_settings", lambda url, auth=None: __import__("contextlib").nullcontext())
    old = os.umask(0o002)  # a team's: the group may write
    try:
        (root / "prefect").mkdir(parents=True)
        (root / "prefect" / "server.log").write_text("an older run's\n")
        with server.prefect_server(root):
            home = root / "prefect"
            assert (home.stat().st_mode & 0o777) == 0o770
            assert (home / "server.log").stat().st_mode & 0o777 == 0o660
            assert (home / "prefect.db").stat().st_mode & 0o777 == 0o660
    finally:
        os.umask(old)


def test_a_local_server_for_an_existing_dask_cluster_is_warned(tmp_path, monkeypatch, caplog):
    """Workers of a cluster started apart cannot use a server on this machine's loopback that ends with the run;
    with runtime.prefect_api_url (a server they reach) nothing is said."""
    import flows.server as server

    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})  # restored after
    monkeypatch.setattr(server, "_settings", lambda url: __import__("contextlib").nullcontext())
    monkeypatch.setattr(server, "answers", lambda url: True)  # no server there: said to answer
    with caplog.at_level("WARNING", logger="saerl.server"):
        with server.prefect_server(tmp_path, "http://10.0.0.5:4200/api", "tcp://10.0.0.5:8786"):
            pass
        assert "runtime.prefect_api_url" not in caplog.text
        monkeypatch.setattr(server.subprocess, "Popen", lambda *a, **kw: (_ for _ in ()).throw(OSError("no server")))
        with pytest.raises(OSError), server.prefect_server(tmp_path, None, "tcp://10.0.0.5:8786"):
            pass
    assert "runtime.dask_address=tcp://10.0.0.5:8786 without runtime.prefect_api_url" in caplog.text


def test_the_environment_is_as_before_once_the_block_ends(tmp_path, monkeypatch):
    """The block left PREFECT_HOME (this root's), PREFECT_API_URL (a server that had stopped) and the rest of
    prefect_env set in the process: a notebook's next Prefect call used them. Inside the block they are set (the
    run's Dask workers and subprocesses read them); after it, a variable set before has its old value again and one
    unset before is unset, also when the block raised."""
    import flows.server as server

    unset = ("PREFECT_API_URL", "DO_NOT_TRACK")
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in unset}
                        | {"PREFECT_HOME": "/before/home"})  # restored after
    monkeypatch.setattr(server, "_settings", lambda url: __import__("contextlib").nullcontext())
    monkeypatch.setattr(server, "answers", lambda url: True)  # no server there: said to answer
    with server.prefect_server(tmp_path, "http://10.0.0.5:4200/api"):
        assert os.environ["PREFECT_API_URL"] == "http://10.0.0.5:4200/api"
        assert os.environ["PREFECT_HOME"] == str(tmp_path.resolve() / "prefect")
        assert os.environ["DO_NOT_TRACK"] == "1"
    assert os.environ["PREFECT_HOME"] == "/before/home"
    assert "PREFECT_API_URL" not in os.environ and "DO_NOT_TRACK" not in os.environ
    with pytest.raises(RuntimeError), server.prefect_server(tmp_path, "http://10.0.0.5:4200/api"):
        raise RuntimeError("the run failed")
    assert os.environ["PREFECT_HOME"] == "/before/home" and "PREFECT_API_URL" not in os.environ
    monkeypatch.undo()  # the real environment back, and Prefect's global settings read from it again: the block's end
    server._refresh_prefect()  # read them from the made-up one, which every later test's threads saw


def test_prefects_own_settings_are_the_callers_again_once_the_block_ends(tmp_path):
    """Prefect reads its settings from the environment once, at its first import, which for the CLI and a
    notebook's first run comes inside the block: its API URL and home stayed the stopped server's and this root's
    even with os.environ put back. In a fresh interpreter (Prefect not imported before the block)."""
    code = f"""
import os, sys
from pathlib import Path
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_HOME"] = {str(tmp_path / "mine")!r}
import flows.server
from flows.server import prefect_server
flows.server.answers = lambda url: True  # no server there: said to answer
assert "prefect" not in sys.modules
with prefect_server(Path({str(tmp_path / "root")!r}), api_url="http://127.0.0.1:9/api"):
    from prefect.settings import get_current_settings
    assert get_current_settings().api.url == "http://127.0.0.1:9/api"
s = get_current_settings()
assert s.api.url is None and str(s.home) == {str(tmp_path / "mine")!r}, (s.api.url, s.home)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env | {"PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_interrupted_cli_run_stops_the_local_server_it_started(monkeypatch, capsys):
    """Ctrl-C or SIGTERM ends a CLI run at once (os._exit: no `finally` stops its Prefect server); on Linux the
    server stops with its parent, but where there is no parent-death signal (macOS) it lived on under pid 1. The
    CLI's stop now sends it SIGTERM first."""
    import signal
    import subprocess
    import sys

    from flows import cli, server

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands for the server
    try:
        monkeypatch.setattr(server, "_STARTED", {proc})

        def exit_(code):
            raise SystemExit(code)

        monkeypatch.setattr(cli.os, "_exit", exit_)
        with pytest.raises(SystemExit) as ended:
            cli.stop_now(signal.SIGINT)
        assert ended.value.code == 128 + signal.SIGINT and proc.wait(timeout=10) == -signal.SIGTERM
        assert "stopped by SIGINT" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()


FOREIGN_ORIGIN = "http://evil.example"  # a web page's origin, other than the server's own


def _ask(url: str, method: str = "POST", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """An HTTP request straight to `url` (no proxy), with no credentials but `headers`; out: status, headers."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/json"} | (headers or {}))
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}


def test_the_local_server_answers_only_the_runs_own_clients(prefect_api):
    """The local server had no API authentication and answered CORS with '*': any local user (or a web page in the
    user's browser that found the port) could read every flow run's parameters, the whole config, and change flow-run
    states. A request without the run's auth string is refused; a browser is let in only from the server's own
    origin; the run's own client (this process, through PREFECT_API_AUTH_STRING) runs flows as before."""
    from prefect import flow

    @flow
    def with_parameters(config: dict) -> int:
        return len(config)

    assert with_parameters({"token": "hf_not-a-token"}) == 1
    home = Path(os.environ["PREFECT_HOME"])  # other users reach nothing in it, and not the flow runs' database
    assert not [p.name for p in (home, *home.glob("prefect.db*")) if p.stat().st_mode & 0o007], "others read it"
    runs = f"{prefect_api}/flow_runs/filter"
    assert _ask(runs)[0] == 401
    assert _ask(runs, headers={"Origin": FOREIGN_ORIGIN})[0] == 401
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    status, headers = _ask(runs, "OPTIONS", preflight | {"Origin": FOREIGN_ORIGIN})
    assert status != 200 and headers.get("access-control-allow-origin") not in ("*", FOREIGN_ORIGIN), headers
    own = prefect_api.removesuffix("/api")
    assert _ask(runs, "OPTIONS", preflight | {"Origin": own})[1].get("access-control-allow-origin") == own


PAST_A_PROXY = """import os, sys
from pathlib import Path
import httpx
from flows.server import healthy, prefect_env
print(healthy(sys.argv[1]))
os.environ.update(prefect_env(Path(sys.argv[2])))
print(httpx.get(sys.argv[1] + "/health", timeout=30).status_code)
"""


def test_the_local_server_is_reached_past_a_proxy(prefect_api, tmp_path, monkeypatch):
    """With HTTP_PROXY set and no NO_PROXY, the health check (urllib) and Prefect's client (httpx) sent the loopback
    server's requests to the proxy: `saerl run` waited 90 s and said the server did not start. In a fresh interpreter
    (urllib reads the proxies at its first request) whose proxy is a closed port; a user's NO_PROXY entries stay."""
    from flows.server import free_port, prefect_env

    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"} | {"PYTHONPATH": str(REPO)}
    env |= {name: f"http://127.0.0.1:{free_port()}" for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")}
    done = subprocess.run([sys.executable, "-c", PAST_A_PROXY, prefect_api, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert done.stdout.split() == ["True", "200"], done.stdout + done.stderr[-2000:]
    monkeypatch.setenv("NO_PROXY", "corp.example,.internal")  # restored after
    monkeypatch.setenv("no_proxy", "corp.example")
    assert prefect_env(tmp_path)["no_proxy"].split(",") == ["corp.example", ".internal", "127.0.0.1", "localhost"]


SAID = "[ingest] computing key=0123456789ab ..."
STAMP_LINE = r"\d\d:\d\d:\d\d "  # the local time leading each line say() prints


def test_said_lines_reach_the_flow_runs_log_and_the_terminal_once(prefect_api, capfd):
    """say() promised its lines were "logged to the flow run (visible in Prefect)", but logged them at INFO through
    Prefect's run logger, at the WARNING the run sets: the audit's Prefect databases held no log line at all. Its lines
    are now in the flow run's log, printed once on the terminal (led by the time), not again by Prefect's console;
    saerl's own warnings and INFO lines (a stage's notes, which the terminal showed: the CLI logs at INFO) reach the
    run's log too."""
    import logging
    import re

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.context import FlowRunContext

    from flows.pipeline import say
    from flows.runlog import send_saerl_lines
    from flows.server import drain_logs

    logging.getLogger("saerl.flowtest").setLevel(logging.INFO)  # as under the CLI's INFO root

    @flow(name="says")
    def says() -> str:
        send_saerl_lines()
        say(SAID)
        logging.getLogger("saerl.flowtest").warning("a saerl warning")
        logging.getLogger("saerl.flowtest").info("a saerl note")
        return str(FlowRunContext.get().flow_run.id)

    flow_run_id = says()
    drain_logs()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    assert {SAID, "a saerl warning", "a saerl note"} <= {e.message for e in logs}, [e.message for e in logs]
    out, err = capfd.readouterr()
    assert (out + err).count(SAID) == 1, out + err
    assert re.search(rf"^{STAMP_LINE}{re.escape(SAID)}$", out, re.M), out


def test_said_outside_a_flow_run_is_printed_only(capsys, recwarn):
    """Outside a Prefect run (no run's log to send to) say() prints its line, led by the time, and nothing warns
    (Prefect's run logger raised there, and its API handler warns)."""
    import re

    from flows.pipeline import say

    say("line one\ntable row", label="mix_ratio=0.5")
    assert re.fullmatch(rf"{STAMP_LINE}mix_ratio=0.5 \| line one\nmix_ratio=0.5 \| table row\n", capsys.readouterr().out)
    assert not recwarn.list


def test_the_flow_runs_of_killed_saerl_runs_are_marked_crashed(prefect_api, tmp_path):
    """A `saerl run` killed by SIGKILL left its Prefect flow run and the task run it was in Running for good (MLflow's
    parent run is ended by the next run). The next run marks them Crashed, saying why: the flow run its record names,
    and under a deployment the pipeline's flow run named after its run id; a run still going (its live lock held), a
    run that ended, and runs already final are left as they are."""
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    from flows.pipeline import KILLED_RUN, PREFECT_DEPLOYMENT_TAG, PREFECT_FLOW_RUN_TAG, crash_killed_runs
    from saerl.runs import PREFECT_TAGS, RUNNING, RunRecord, live_lock, live_path, save_run

    @flow(name="saerl-pipeline")
    def stand_in() -> None:
        pass

    @task(name="stage")
    def stage() -> None:
        pass

    with get_client(sync_client=True) as client:
        def started(name: str) -> tuple[object, object]:
            run = client.create_flow_run(stand_in, name=name, state=Running())
            return run.id, client.create_task_run(stage, run.id, "0", state=Running()).id

        runs = {name: started(name) for name in ("killed", "going", "ended", "20260101-000000-000000-dep1")}
        done = client.create_task_run(stage, runs["killed"][0], "1", state=Completed()).id
        records = {
            "20260101-000000-000000-kill": {PREFECT_FLOW_RUN_TAG: str(runs["killed"][0])},
            "20260101-000000-000000-goin": {PREFECT_FLOW_RUN_TAG: str(runs["going"][0])},
            "20260101-000000-000000-dep1": {PREFECT_FLOW_RUN_TAG: "not-the-pipelines", PREFECT_DEPLOYMENT_TAG: "d"},
        }
        for run_id, tags in records.items():
            save_run(tmp_path, RunRecord(name="demo", run_id=run_id, extra={RUNNING: True, PREFECT_TAGS: tags}))
            live_path(tmp_path, run_id).touch()  # what a killed run leaves: its live file, the lock free
        save_run(tmp_path, RunRecord(name="demo", run_id="20260101-000000-000000-endd",
                                     extra={PREFECT_TAGS: {PREFECT_FLOW_RUN_TAG: str(runs["ended"][0])}}))

        def states() -> dict[str, tuple[str, str]]:
            return {name: (client.read_flow_run(f).state.name, client.read_task_run(t).state.name)
                    for name, (f, t) in runs.items()}

        with live_lock(tmp_path, "20260101-000000-000000-goin"):
            assert crash_killed_runs(tmp_path) == ["20260101-000000-000000-dep1", "20260101-000000-000000-kill"]
            assert states() == {"killed": ("Crashed", "Crashed"), "going": ("Running", "Running"),
                                "ended": ("Running", "Running"), "20260101-000000-000000-dep1": ("Crashed", "Crashed")}
            assert client.read_task_run(done).state.name == "Completed"
            assert client.read_flow_run(runs["killed"][0]).state.message == KILLED_RUN.format(
                run_id="20260101-000000-000000-kill")
            assert crash_killed_runs(tmp_path) == [], "final states are left as they are"


def test_every_shard_of_a_failed_dask_fan_out_ends_in_a_final_state(prefect_api, tmp_path, monkeypatch):
    """A fan-out that failed for good (KilledWorker on one shard) marked Crashed only the shard whose Dask future was
    in error: a sibling shard Dask had rescheduled after the same worker deaths stayed Running in Prefect forever,
    under the failed flow run. Every shard of a failed fan-out that did not run to its end is marked Crashed, naming
    the error; a shard that ran to its end (its final state still on its way as an event) and runs already final
    are left alone, and a stop (no error) marks only the dead worker's. The fan-out runs on stand-in tasks whose
    futures are in the Dask states the audit saw."""
    from types import SimpleNamespace

    from distributed.scheduler import KilledWorker
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    import flows.pipeline as pipeline

    @flow(name="saerl-pipeline")
    def stand_in() -> None:
        pass

    @task(name="extract-shard")
    def shard() -> None:
        pass

    dask_status = {"killed": "error", "rescheduled": "pending", "ran": "finished", "ended": "pending"}
    killed = KilledWorker("shard_task-0", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)

    class Future:
        """A Prefect Dask future as fan_out sees it: the killed shard's result raises KilledWorker; the others never
        finish (the flow fails first)."""

        def __init__(self, name: str, task_run_id: object) -> None:
            self.name, self.task_run_id = name, task_run_id
            self.wrapped_future = SimpleNamespace(status=dask_status[name])

        def add_done_callback(self, fn) -> None:
            if self.name == "killed":
                fn(self)

        def wait(self) -> None:
            pass

        def result(self) -> None:
            raise killed

    with get_client(sync_client=True) as client:
        def task_runs() -> dict[str, object]:
            run = client.create_flow_run(stand_in, name="fan-out", state=Running())
            return {name: client.create_task_run(shard, run.id, name, state=Completed() if name == "ended"
                                                 else Running()).id for name in dask_status}

        def futures(ids: dict[str, object]) -> list[Future]:
            return [Future(name, i) for name, i in ids.items()]

        failed, stopped = task_runs(), task_runs()
        submitted = iter(futures(failed))
        shard_task = SimpleNamespace(submit=lambda **_: next(submitted))
        monkeypatch.setattr(pipeline, "prepare_shards_task",
                            SimpleNamespace(submit=lambda **_: SimpleNamespace(result=lambda: [[0]] * 4)))
        monkeypatch.setattr(pipeline, "wait_awake", lambda _: None)
        monkeypatch.setattr(pipeline, "shard_task", SimpleNamespace(with_options=lambda **_: shard_task))
        with pytest.raises(KilledWorker):
            pipeline.fan_out({"root": str(tmp_path), "stage": "extract", "key": "k"}, 4)
        states = {name: client.read_task_run(i).state for name, i in failed.items()}
        assert {name: state.name for name, state in states.items()} == {
            "killed": "Crashed", "rescheduled": "Crashed", "ran": "Running", "ended": "Completed"}
        assert states["killed"].message == pipeline.LOST_RUN
        assert "fan-out" in states["rescheduled"].message and "KilledWorker" in states["rescheduled"].message
        assert pipeline.crash_lost_runs(futures(stopped)) == 1
        assert {name: client.read_task_run(i).state.name for name, i in stopped.items()} == {
            "killed": "Crashed", "rescheduled": "Running", "ran": "Running", "ended": "Completed"}



def test_a_stage_whose_dask_worker_died_fails_with_the_dask_error_not_an_unfinished_run(monkeypatch):
    """A stage run on Dask whose worker died (KilledWorker) left its task run Running in Prefect, and the flow read
    that state's result: the run failed 'at testbed: UnfinishedRun: Run is in RUNNING state', naming no cause. The
    flow now raises the Dask future's own error, and reads a stage's state from Prefect as before otherwise."""
    from types import SimpleNamespace

    from distributed.scheduler import KilledWorker
    from prefect.states import Completed

    import flows.pipeline as pipeline

    killed = KilledWorker("testbed_task-0", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
    dead = SimpleNamespace(wrapped_future=SimpleNamespace(status=pipeline.DASK_ERROR, exception=lambda: killed),
                           state=SimpleNamespace(result=lambda: pytest.fail("read the Running state's result")))
    with pytest.raises(KilledWorker, match="died while running it"):
        pipeline.finished_state(dead)
    done = Completed()
    for finished in (SimpleNamespace(wrapped_future=SimpleNamespace(status=pipeline.DASK_FINISHED), state=done),
                     SimpleNamespace(state=done)):  # on Dask, and in process (no Dask future)
        assert pipeline.finished_state(finished) is done

FAILING_SERVER = f"""#!{sys.executable}
import sys
print("Traceback (most recent call last):")
print('  File "aiosqlite/core.py", line 466, in connector')
print("sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) unable to open database file")
print("(Background on this error at: https://sqlalche.me/e/21/e3q8)")
print()
print("ERROR:    Application startup failed. Exiting.")
print("Server stopped!")
sys.exit(3)
"""


def test_a_local_server_that_does_not_start_is_one_line_quoting_its_log_and_exit_status_2(tmp_path, monkeypatch,
                                                                                           capsys):
    """A local server that failed to start (a prefect.db it cannot open) raised a RuntimeError: exit status 1, 26
    traceback lines and the false "the run failed ... the same command resumes" line, though nothing ran, and the
    cause stayed in server.log. Now a ServerStartError (an OSError: an environment problem) quotes the log's cause
    (its last error line, not the sign-off after it, nor an older run's lines) and names the log; the CLI prints it
    as one line, exit status 2."""
    import flows.server as server
    from flows.cli import RESUME_HINT, main

    fake = tmp_path / "prefect-failing"
    fake.write_text(FAILING_SERVER)
    fake.chmod(0o755)
    root = tmp_path / "root"
    (root / "prefect").mkdir(parents=True)
    (root / "prefect" / "server.log").write_text("KeyError: an older run's error\n")
    monkeypatch.setattr(server, "prefect_executable", lambda: str(fake))
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})  # restored after
    log = root / "prefect" / "server.log"
    with pytest.raises(server.ServerStartError) as err, server.prefect_server(root):
        pass
    assert isinstance(err.value, OSError) and "\n" not in str(err.value)
    assert str(err.value).startswith("the local Prefect server did not start (it exited with status 3): "
                                     "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) unable to open "
                                     f"database file (the whole log: {log}). Nothing ran. Fix what the log names")
    assert main(["run", str(REPO / "configs" / "smoke.yaml"), "--root", str(root), "--until", "testbed"]) == 2
    out = capsys.readouterr().err
    assert out.startswith("saerl: error: the local Prefect server did not start") and out.count("\n") == 1, out
    assert "Traceback" not in out and RESUME_HINT not in out and "resumes" not in out


def test_the_cause_of_a_failed_server_start_is_read_from_its_own_lines(tmp_path):
    """server_log_cause: the last exception line of this start's lines, else the last line that is no sign-off
    noise; None when this start wrote nothing."""
    from flows.server import server_log_cause

    log = tmp_path / "server.log"
    log.write_text("ValueError: an older run's\n")
    start = log.stat().st_size
    with log.open("a") as f:
        f.write("INFO: Started server process\nOSError: [Errno 98] address already in use\nserver exiting: port busy\n"
                "Server stopped!\n")
    assert server_log_cause(log, start) == "OSError: [Errno 98] address already in use"
    with log.open("a") as f:
        f.write("\n")
    assert server_log_cause(log, log.stat().st_size) is None
    log.write_text("starting...\nthe port is taken\nServer stopped!\n")
    assert server_log_cause(log) == "the port is taken"
    assert server_log_cause(tmp_path / "absent.log") is None


GONE_WAIT_S = 30.0  # how long a loaded machine may take to see the killed stand-in gone (the watcher polls 4 times a s)


def test_prefects_client_stops_retrying_once_the_local_server_is_gone():
    """A local server that died mid-run left Prefect's client retrying the flow run's final state 5 times with
    backoff (about 70 s after the work was done). The block's settings keep Prefect's retries while the server
    runs (a busy server gets them) and drop them to none once its process has exited; other settings keep theirs."""
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from flows.server import GONE_RETRIES, failing_fast_when_gone

    threads, outside = threading.active_count(), PREFECT_CLIENT_MAX_RETRIES.value()
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 5}) as settings, \
                failing_fast_when_gone(stand_in, settings):
            time.sleep(3 * POLL_S)
            assert PREFECT_CLIENT_MAX_RETRIES.value() == 5, "retries dropped while the server runs"
            stand_in.kill()
            deadline = time.monotonic() + GONE_WAIT_S
            while PREFECT_CLIENT_MAX_RETRIES.value() != GONE_RETRIES and time.monotonic() < deadline:
                time.sleep(POLL_S)
            assert PREFECT_CLIENT_MAX_RETRIES.value() == GONE_RETRIES
        assert PREFECT_CLIENT_MAX_RETRIES.value() == outside, "the settings outside the block changed"
        assert threading.active_count() == threads, "the watcher thread outlived the block"
    finally:
        stand_in.kill()
        stand_in.wait()


SHELL_DATABASE = {  # a shell's settings for a Prefect server of the user's own (the legacy spelling among them)
    "PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://prefect:hunter2@db.example:5432/prefect",
    "PREFECT_API_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:////elsewhere/legacy.db",
    "PREFECT_SERVER_DATABASE_DRIVER": "postgresql+asyncpg",
    "PREFECT_SERVER_DATABASE_PASSWORD": "hunter2",
}


def test_a_runs_own_server_keeps_its_records_in_the_roots_database_whatever_the_shell_names(tmp_path, monkeypatch,
                                                                                              caplog):
    """A shell's PREFECT_SERVER_DATABASE_CONNECTION_URL (or the legacy PREFECT_API_DATABASE_CONNECTION_URL, or the
    pieces: driver, password...), meant for a server of the user's own, sent the run's private server, with every flow
    run's parameters, to that database: the root's prefect.db, which `saerl gc` and run forgetting act on, never had
    the run. The local server's environment now names the root's prefect.db and none of the shell's database settings
    (one INFO line names them, not their values); a given server (runtime.prefect_api_url) is the user's: the
    environment is left as it is there. A shell's PREFECT_LOCAL_STORAGE_PATH put the run record outside the root,
    readable by all: results go to the root's prefect/storage, also where Prefect was imported before the block."""
    from prefect.settings import get_current_settings

    import flows.server as server

    started: list[dict[str, str]] = []

    def popen(cmd, env, **kwargs):
        started.append(dict(env))
        return RunningProc()

    storage = {"PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "elsewhere"),
               "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "elsewhere")}
    monkeypatch.setattr(server.subprocess, "Popen", popen)
    monkeypatch.setattr(server, "healthy", lambda url, timeout=2.0: True)
    monkeypatch.setattr(server, "answers", lambda url: True)  # no server at the given URL: said to answer
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
                        | SHELL_DATABASE | storage)  # restored after
    root = tmp_path / "root"
    home = root.resolve() / "prefect"
    with caplog.at_level("INFO", logger="saerl.server"), server.prefect_server(root):
        assert Path(get_current_settings().results.local_storage_path) == home / "storage"
    (env,) = started
    database = {k: v for k, v in env.items() if k.startswith(("PREFECT_SERVER_DATABASE_", "PREFECT_API_DATABASE_"))}
    assert database == {"PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}"}
    assert env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] == str(home / "storage")
    assert all(name in caplog.text for name in SHELL_DATABASE) and "hunter2" not in caplog.text
    assert {k: os.environ[k] for k in SHELL_DATABASE} == SHELL_DATABASE, "the shell's settings are its own again"
    with server.prefect_server(root, "http://10.0.0.5:4200/api"):
        assert {k: os.environ.get(k) for k in SHELL_DATABASE} == SHELL_DATABASE
    assert len(started) == 1, "a given server: none started"


REAL_SERVER_RUN = """import sys
from pathlib import Path
from flows.server import prefect_server
with prefect_server(Path(sys.argv[1])):
    from prefect import flow  # as the CLI: Prefect imported once the server is up
    @flow(name="saerl-shell-database-probe")
    def record(config: dict) -> dict:
        return config
    print(record({"secret": "kept in the root"}))
"""


@pytest.mark.slow
def test_a_run_with_a_shells_prefect_database_and_storage_keeps_its_records_in_its_root(tmp_path):
    """End to end through a real local server: with the shell naming another Prefect database and results folder,
    the flow run is in the root's prefect.db and its persisted result under the root's prefect/storage; the other
    database and folder are never made."""
    import sqlite3

    other_db, other_store, root = tmp_path / "other.db", tmp_path / "other-store", tmp_path / "root"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
        "PYTHONPATH": str(REPO),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{other_db}",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{other_db}",
        "PREFECT_LOCAL_STORAGE_PATH": str(other_store), "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(other_store)}
    done = subprocess.run([sys.executable, "-c", REAL_SERVER_RUN, str(root)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=START_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not other_db.exists() and not other_store.exists()
    with sqlite3.connect(root / "prefect" / "prefect.db") as db:
        flows = [name for (name,) in db.execute("select name from flow")]
    assert "saerl-shell-database-probe" in flows
    stored = [p.read_text() for p in (root / "prefect" / "storage").iterdir()]
    assert any("kept in the root" in text for text in stored)


def test_the_local_servers_database_url_quotes_what_sqlalchemy_reads_in_a_path(tmp_path):
    """Prefect's default database URL pasted the home's path in: a root 'runs?1' kept its prefect.db in the file
    'runs' beside the root (the rest read as a query string, shared by every 'runs?N'), and 'pc%41' opened 'pcA'."""
    from sqlalchemy.engine import make_url

    from flows.server import local_database_url

    for name in ("runs?1", "pc%41", "plain", "sp ace é #1"):
        home = tmp_path / name / "prefect"
        url = make_url(local_database_url(home))
        assert url.drivername == "sqlite+aiosqlite" and url.database == str(home / "prefect.db"), url


@pytest.mark.slow
@pytest.mark.parametrize("name", ["runs?1", "pc%41"])
def test_a_real_local_server_keeps_its_database_in_a_root_whose_name_sqlalchemy_would_read(tmp_path, name):
    """End to end: a root named with '?' or '%' starts its own server, whose flow runs are in that root's
    prefect.db, and nothing is made beside the root."""
    import sqlite3

    root = tmp_path / name
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", REAL_SERVER_RUN, str(root)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=START_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    with sqlite3.connect(root / "prefect" / "prefect.db") as db:
        assert "saerl-shell-database-probe" in [n for (n,) in db.execute("select name from flow")]


SOCKS_RUN = """import os, sys
from pathlib import Path
from flows.server import prefect_env
os.environ.update(prefect_env(Path(sys.argv[1])))
from prefect import flow
@flow
def probe() -> int:
    return 7
print(probe())
"""


def test_a_run_works_with_a_socks_proxy_in_the_shell(prefect_api, tmp_path):
    """With ALL_PROXY=socks5://... in the shell (an SSH tunnel's, a corporate proxy's), httpx makes a SOCKS transport
    for every client it builds, even where NO_PROXY sends the loopback server's requests direct, and raised 'Using
    SOCKS proxy, but the socksio package is not installed' as Prefect's client was made: every `saerl run` failed
    before any stage (socksio is now a dependency). In a fresh interpreter whose SOCKS proxy is a closed port."""
    from flows.server import free_port

    proxy = f"socks5://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"} | {"PYTHONPATH": str(REPO)}
    env |= {"ALL_PROXY": proxy, "all_proxy": proxy}
    done = subprocess.run([sys.executable, "-c", SOCKS_RUN, str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=START_TIMEOUT_S)
    assert done.returncode == 0 and done.stdout.split()[-1:] == ["7"], done.stdout + done.stderr[-3000:]


def test_a_ca_file_no_client_can_load_is_refused_in_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """A stale SSL_CERT_FILE (a moved corporate CA bundle) failed every client httpx made, over http too: the local
    server did not start, and the error quoted 'FileNotFoundError: [Errno 2] No such file or directory' with no path
    and pointed at prefect.db. It is now refused before a server starts, in one line naming the variable and the fix
    (exit status 2); a bundle that loads is not refused."""
    import certifi

    import flows.server as server
    from flows.cli import RESUME_HINT, main

    def no_server(*args, **kwargs):
        raise AssertionError("a server was started")

    monkeypatch.setattr(server.subprocess, "Popen", no_server)
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})  # restored after
    missing = tmp_path / "moved" / "corp-ca.pem"
    monkeypatch.setenv("SSL_CERT_FILE", str(missing))
    argv = ["run", str(REPO / "configs" / "smoke.yaml"), "--root", str(tmp_path / "root"), "--until", "testbed"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"saerl: SSL_CERT_FILE={missing} cannot be loaded") and err.count("\n") == 1, err
    assert "unset it" in err and RESUME_HINT not in err and "Traceback" not in err
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    server.require_usable_ca_file()  # a bundle that loads: not refused


def test_a_runs_stopped_prefect_services_are_not_kept_for_the_life_of_the_process(monkeypatch):
    """Prefect registers each log and event service's exit hook and a drain on its global loop's shutdown calls, and
    never removes them once the service stops: every `saerl run` in one process (its own server, new services) kept
    its services and, through them, its flow run's whole engine context (about 3 MB a run). A stopped service's
    entries go; a running one's and anything else stay, in order. The private names it reads exist in the installed
    Prefect and Python (monkeypatch.setattr refuses a missing one), so a rename fails here, not silently."""
    import functools
    import inspect
    import threading
    from types import SimpleNamespace

    from prefect._internal.concurrency import threads as loop_module
    from prefect._internal.concurrency.calls import Call
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from flows.server import forget_stopped_services

    def service(kind: type, stopped: bool):
        made = kind.__new__(kind)  # no queue thread started: only what forget_stopped_services reads
        made._stopped = stopped
        return made

    done_logs, done_events, running = (service(APILogWorker, True), service(EventsWorker, True),
                                       service(APILogWorker, False))
    other = functools.partial(print)
    hooks = [functools.partial(s._at_exit) for s in (done_logs, running, done_events)] + [other]
    monkeypatch.setattr(threading, "_threading_atexits", hooks)
    calls = [Call.new(s.drain) for s in (done_logs, running, done_events)] + [Call.new(print)]
    monkeypatch.setattr(loop_module, "_global_loop", SimpleNamespace(_on_shutdown=calls))
    assert "_on_shutdown" in inspect.getsource(loop_module.EventLoopThread.__init__)
    kept_hook, kept_calls = hooks[1], [calls[1], calls[3]]
    assert forget_stopped_services() == 4
    assert hooks == [kept_hook, other] and calls == kept_calls
    assert forget_stopped_services() == 0


# runs a flow on its own local server, as `saerl run` does, twice in one process; prints how many exit hooks of
# Prefect's services the process holds after each; argv: a scratch folder
SERVED_RUNS = """import sys, threading
from pathlib import Path
from prefect import flow, get_run_logger
from prefect._internal.concurrency.services import _QueueServiceBase
from flows.server import prefect_server

@flow
def logs_a_line():
    get_run_logger().info("a line for the run's log")

def held():
    return sum(isinstance(getattr(getattr(f, "func", f), "__self__", None), _QueueServiceBase)
               for f in threading._threading_atexits)

for i in range(2):
    with prefect_server(Path(sys.argv[1]) / str(i)):
        logs_a_line()
    print(held(), flush=True)
"""


@pytest.mark.slow
def test_runs_on_their_own_servers_in_one_process_keep_no_stopped_services(tmp_path):
    """Each run on its own server left its Prefect services' exit hooks (and what they hold: its engine context) in
    the process for good: 2 more after each run. They stay level now."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", SERVED_RUNS, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    held = [int(n) for n in done.stdout.split()]
    assert len(held) == 2 and held[1] == held[0], (held, done.stderr[-2000:])
