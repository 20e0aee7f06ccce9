"""One local Prefect server per pipeline invocation (or a server the user already runs).

Without an API URL every Prefect process starts its own temporary server (seconds each, and one per Dask
worker). The CLI therefore starts one `prefect server start` on loopback before importing any flow, points
`PREFECT_API_URL` at it, keeps `PREFECT_HOME` under the artifact root and turns telemetry off. The server
answers only the run's own clients (a random per-server auth string, CORS for its own origin only) and is reached
without any HTTP proxy. It stops when the block ends, and on Linux also when the run that started it is killed
(LAUNCHER). If it dies mid-run, the run's Prefect client stops retrying it (failing_fast_when_gone), so the command
ends within seconds of its work.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saerl.artifacts import file_lock
from saerl.distributed import launcher

if TYPE_CHECKING:
    from saerl.gc import Database

log = logging.getLogger("saerl.server")
STARTUP_TIMEOUT_S = 90.0
POLL_S = 0.25
LOG_DRAIN_S = 5.0  # longest wait for the queued Prefect logs to be sent when a run ends
START_LOCK = "server-start.lock"  # in PREFECT_HOME: held from a local server's start until it answers
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")  # never reached through a proxy (NO_PROXY): the local server is there
NO_PROXY_VARS = ("NO_PROXY", "no_proxy")  # both spellings: urllib, httpx and requests read either
AUTH_USER = "saerl"  # the user part of a local server's auth string ('user:password', HTTP basic auth)
AUTH_SECRET_BYTES = 32  # random bytes of a local server's password (secrets.token_urlsafe)
API_CHECK_TIMEOUT_S = 10.0  # how long a given Prefect API (PREFECT_API_URL, runtime.prefect_api_url) has to answer
API_URL_ENV = "PREFECT_API_URL"  # the environment variable a given Prefect API may come from
API_URL_FIELD = "runtime.prefect_api_url"  # the config field it may come from
OTHERS_BITS = 0o007  # a mode's bits for other users: none on PREFECT_HOME and what is in it (a team's group keeps its own)
GONE_RETRIES = 0  # Prefect's client retries (PREFECT_CLIENT_MAX_RETRIES) once the run's own local server has exited


# Runs in the server's process, then becomes `prefect server start` (saerl.distributed.launcher): on Linux it asks
# the kernel for SIGTERM when the process that started it dies (die_with_parent), since a run killed by SIGTERM or
# SIGKILL never reaches the `finally` that stops the server (started in a session of its own, it would outlive the
# run); a starter already gone means exit at once (status 0). Without prctl (not Linux) the launcher runs the
# server as its child and stops it once the starter is gone (watch_parent), besides that `finally` and stop_servers
# on Ctrl-C or SIGTERM (the CLI ends then without it). Its umask gives other users
# nothing (OTHERS_BITS) of what the server writes: prefect.db holds every flow run's parameters (a database tracking
# URI's password among them). argv: the starter's pid, then the server command.
LAUNCHER = launcher(orphan_status=0, umask_bits=OTHERS_BITS)


# the local servers this process started and has not stopped yet (_serve): stop_servers ends them where the process
# ends without reaching _serve's `finally`
_STARTED: set[subprocess.Popen[bytes]] = set()


def stop_servers() -> None:
    """Send SIGTERM to every local Prefect server this process started and has not stopped, without waiting: the CLI
    ends at once on Ctrl-C or SIGTERM (flows.cli.stop_now: os._exit, no `finally` runs), and the LAUNCHER's own stop
    (its parent-death signal, or on macOS its watch of the starter) comes only after the process is gone.
    in/out: nothing."""
    for proc in list(_STARTED):
        try:
            proc.terminate()
        except OSError:  # already gone
            pass


def keep_from_others(path: Path) -> None:
    """Take other users' permission bits (OTHERS_BITS) off `path`, the group's kept (a team shares a root through
    one); left as it is where this user may not change it (a teammate's), and a link (its target may lie anywhere).
    in: a file or folder; out: nothing."""
    try:
        mode = path.lstat().st_mode
        if mode & OTHERS_BITS and not stat.S_ISLNK(mode):
            path.chmod(stat.S_IMODE(mode) & ~OTHERS_BITS)
    except PermissionError:
        log.debug("could not take other users' access off %s: not this user's", path)
    except FileNotFoundError:  # removed meanwhile (a finished server's SQLite journal)
        pass


PREFECT_DB = "prefect.db"  # the database a local server keeps in the Prefect home (every flow run, its task runs, logs)
RESULTS_STORAGE = "storage"  # in the Prefect home: where a flow run's persisted result (the run record) goes
RESULTS_STORAGE_ENV = "PREFECT_RESULTS_LOCAL_STORAGE_PATH"  # Prefect's setting for it (beats PREFECT_LOCAL_STORAGE_PATH)
DATABASE_URL_ENV = "PREFECT_SERVER_DATABASE_CONNECTION_URL"  # a Prefect server's database
# the environment variables of a Prefect server's database settings (the URL, or driver, host, name, password...;
# PREFECT_API_DATABASE_* is their legacy spelling): a shell's, meant for a server of the user's own, sent a run's
# private server, with every flow run's parameters, to that database instead of the root's prefect.db
DATABASE_ENV_PREFIXES = ("PREFECT_SERVER_DATABASE_", "PREFECT_API_DATABASE_")
SQLITE_DRIVER = "sqlite+aiosqlite"  # the driver of a Prefect server's SQLite database URL (Prefect's own default)
CA_FILE_ENV = "SSL_CERT_FILE"  # a CA bundle httpx (Prefect's client, and the server's own) loads for every client


def prefect_home(root: Path) -> Path:
    """The Prefect home of an artifact root (PREFECT_HOME of its processes: :func:`prefect_env`), where a local
    server keeps PREFECT_DB. in: the root; out: the folder."""
    return Path(root).resolve() / "prefect"


def prefect_database(root: Path) -> Database:
    """The root's Prefect database for `saerl gc --vacuum` (saerl.gc.vacuum): PREFECT_DB in its Prefect home, with
    START_LOCK, which a local server of the root holds from its start until it answers (it opens the file then): a
    server starting waits while the file is compacted. in: the root; out: a saerl.gc.Database."""
    from saerl.gc import Database

    home = prefect_home(root)
    return Database("Prefect", home / PREFECT_DB, home / START_LOCK)


def prefect_env(root: Path) -> dict[str, str]:
    """Environment for Prefect processes of this artifact root: home under the root, results persisted there as JSON
    (RESULTS_STORAGE, whatever PREFECT_LOCAL_STORAGE_PATH a shell sets: the run record went outside the root, readable
    by all), no telemetry. The home and what it holds (prefect.db: every flow run's parameters; results, server.log)
    are kept from other users (:func:`keep_from_others`; under a umask of 022 prefect.db was world-readable): an older
    root's too. in: the root; out: {variable: value}."""
    home = prefect_home(root)
    home.mkdir(parents=True, exist_ok=True)
    for path in (home, *home.iterdir()):
        keep_from_others(path)
    return {
        "PREFECT_HOME": str(home),
        RESULTS_STORAGE_ENV: str(home / RESULTS_STORAGE),  # a shell's storage path put run records outside the root
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_RESULTS_DEFAULT_SERIALIZER": "json",  # flow results too: JSON records, never pickles
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    } | no_proxy_env()


def no_proxy_env() -> dict[str, str]:
    """NO_PROXY and no_proxy, each listing what either lists now plus loopback (LOOPBACK_HOSTS): with HTTP_PROXY set
    and no NO_PROXY, the health check and Prefect's client sent the local server's requests to the proxy, and the run
    waited STARTUP_TIMEOUT_S to say the server did not start. A list with the wildcard '*' is kept as it is.
    in: nothing (the environment); out: {name: comma-separated hosts}."""
    hosts = [h.strip() for name in NO_PROXY_VARS for h in os.environ.get(name, "").split(",") if h.strip()]
    if "*" not in hosts:
        hosts += LOOPBACK_HOSTS
    return dict.fromkeys(NO_PROXY_VARS, ",".join(dict.fromkeys(hosts)))


def local_database_url(home: Path) -> str:
    """The database URL of a local server whose Prefect home is `home`: PREFECT_DB there, with Prefect's own default
    driver, its path quoted as SQLAlchemy reads it (saerl.tracking.sqlite_uri: Prefect's default pasted the path in,
    so a root 'runs?1' kept its database in the file 'runs' beside the root, and 'pc%41' failed to start its server).
    in: the home; out: the URL."""
    from saerl.tracking import sqlite_uri

    return sqlite_uri(home / PREFECT_DB, SQLITE_DRIVER)


def local_server_env(home: Path, auth: str, origin: str) -> dict[str, str]:
    """The environment of a local server: this process's, less every database setting it inherited
    (DATABASE_ENV_PREFIXES: a shell's PREFECT_SERVER_DATABASE_CONNECTION_URL sent the run's flow runs, the whole
    config among their parameters, to another database, which `saerl gc` and run forgetting never see), with the
    database pinned to the root's (:func:`local_database_url`), the run's auth string and CORS for its own origin only.
    The dropped variables are named (not their values) in one INFO line. in: the Prefect home, the auth string, the
    server's origin; out: {variable: value}."""
    dropped = sorted(name for name in os.environ if name.startswith(DATABASE_ENV_PREFIXES))
    if dropped:
        log.info("the run's own Prefect server keeps its records in %s; %s of the environment %s for a server of "
                 "your own, not used (set %s to run on that server)", home / PREFECT_DB, ", ".join(dropped),
                 "is" if len(dropped) == 1 else "are", API_URL_FIELD)
    env = {name: value for name, value in os.environ.items() if name not in dropped}
    return env | {DATABASE_URL_ENV: local_database_url(home), "PREFECT_SERVER_API_AUTH_STRING": auth,
                  "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": origin}


def require_usable_ca_file() -> None:
    """Refuse, in one line naming the variable and the fix, an SSL_CERT_FILE (CA_FILE_ENV) that cannot be loaded (a
    moved file): httpx loads it whenever a client is made, over http too, so Prefect's client and the local server's
    own failed, and the run stopped saying the server did not start, quoting a 'No such file or directory' without
    the path and pointing at prefect.db. Loaded as httpx loads it, so a setting that works is never refused; an unset
    or empty one is not checked (SSL_CERT_DIR, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE only matter for https requests).
    in: nothing (the environment); raises ConfigError."""
    import ssl

    from saerl.config import ConfigError

    cafile = os.environ.get(CA_FILE_ENV)
    if not cafile:
        return
    try:
        ssl.create_default_context(cafile=cafile)
    except OSError as err:  # ssl.SSLError is one: a file that holds no certificate
        raise ConfigError(f"{CA_FILE_ENV}={cafile} cannot be loaded as a CA certificate file ({type(err).__name__}: "
                          f"{err.strerror or err}): Prefect's HTTP client loads it for every connection, even to the "
                          f"run's own server on 127.0.0.1, so nothing can run. Point {CA_FILE_ENV} at your CA bundle "
                          f"(a .pem file), or unset it") from err


def local_server_auth() -> str:
    """A new random auth string ('saerl:<secret>') for a local server and its clients: without one, any local user
    (or a web page that found the port) could read every flow run's parameters and change flow-run states."""
    return f"{AUTH_USER}:{secrets.token_urlsafe(AUTH_SECRET_BYTES)}"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when a Prefect API answers its health check, asked directly (a proxy of the environment would get the
    request for loopback, and the server seemed never to start)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(f"{api_url.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def answers(api_url: str, timeout: float = API_CHECK_TIMEOUT_S) -> bool:
    """Does a server answer HTTP at a given Prefect API's health URL, asked as Prefect's client asks (through the
    environment's proxies)? Any status counts (a server that wants credentials answers 401); a refused or timed out
    connection, or a URL that is none, does not. in: the API URL, seconds to wait; out: bool."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout):  # noqa: S310 - the user's URL
            return True
    except urllib.error.HTTPError:  # a status: something answers there
        return True
    except (OSError, ValueError):  # refused, unreachable, timed out; ValueError: not a URL
        return False


def require_answer(api_url: str, source: str) -> None:
    """Refuse a given Prefect API that does not answer (:func:`answers`), naming where its URL came from and the
    fix: a PREFECT_API_URL left in the environment (a CI image's, a shell's) failed the run after 6 s with a
    117-line traceback ending 'Failed to reach API', after a hint that the run would resume. in: the URL, its
    source (the variable or config field); raises ConfigError."""
    from saerl.config import ConfigError
    from saerl.privacy import redact

    if answers(api_url):
        return
    fix = (f"unset {source} to let saerl start a Prefect server of its own for the run" if source == API_URL_ENV
           else f"drop {source} to let saerl start a Prefect server of its own for the run")
    raise ConfigError(f"the Prefect API at {redact(api_url)} (from {source}) does not answer: start that server "
                      f"(prefect server start), or {fix}")


def prefect_executable() -> str:
    """The `prefect` console script of the running interpreter's environment."""
    candidate = Path(sys.executable).parent / "prefect"
    return str(candidate) if candidate.exists() else "prefect"


@contextmanager
def _settings(api_url: str, auth: str | None = None) -> Iterator[Any]:
    """Apply the API URL (and a local server's `auth` string, if any), home and results folder (prefect_env's) to
    Prefect's settings even if Prefect was imported before (it reads env once: a PREFECT_LOCAL_STORAGE_PATH read then
    kept the run record outside the root). Yields the block's Prefect settings (prefect.settings.Settings), which
    the flow runs started in the block read."""
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )

    updates = {PREFECT_API_URL: api_url, PREFECT_HOME: os.environ["PREFECT_HOME"],
               PREFECT_RESULTS_LOCAL_STORAGE_PATH: os.environ[RESULTS_STORAGE_ENV],
               PREFECT_SERVER_ANALYTICS_ENABLED: False}
    if auth is not None:
        updates[PREFECT_API_AUTH_STRING] = auth
    with temporary_settings(updates=updates) as settings:
        yield settings


def drain_logs() -> None:
    """Send the flow's and tasks' logs still queued for the Prefect API (a failed run's last lines), waiting at most
    LOG_DRAIN_S; a failure to send is logged, not raised (the run's own outcome stands)."""
    try:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=LOG_DRAIN_S)
    except Exception as err:  # noqa: BLE001 - losing log lines must not hide the run's own error
        log.debug("could not send the queued Prefect logs: %s", err)


def forget_stopped_services() -> int:
    """Drop what Prefect keeps, for the life of the process, of its services that have stopped. Prefect 3.9's
    _QueueServiceBase.start registers each service's exit hook (threading._register_atexit) and a drain on the global
    loop's shutdown calls, and never removes them when the service stops; a run's own server (a new API URL) makes a
    new APILogWorker and EventsWorker, so a process that ran `saerl run` again and again (a notebook, flows.cli.main in
    a loop) kept every finished run's services, and through the shutdown call's context its whole flow-run engine
    context (states, results, the task runner): about 3 MB and 3,000 objects a run, never freed. A stopped service's
    hook and drain do nothing. Private names of Prefect and CPython, read with getattr: where they are gone, nothing
    is done. out: how many entries were dropped."""
    loop_module = sys.modules.get("prefect._internal.concurrency.threads")
    services = sys.modules.get("prefect._internal.concurrency.services")
    base = getattr(services, "_QueueServiceBase", None)
    if loop_module is None or base is None:
        return 0

    def stopped(fn: Any) -> bool:
        owner = getattr(getattr(fn, "func", fn), "__self__", None)  # an exit hook is a functools.partial
        return isinstance(owner, base) and getattr(owner, "_stopped", False)

    def prune(entries: Any, fn_of: Any) -> int:
        if not isinstance(entries, list):
            return 0
        kept = [e for e in entries if not stopped(fn_of(e))]
        dropped = len(entries) - len(kept)
        entries[:] = kept
        return dropped

    hooks = getattr(threading, "_threading_atexits", None)
    calls = getattr(getattr(loop_module, "_global_loop", None), "_on_shutdown", None)  # none made here
    return prune(hooks, lambda hook: hook) + prune(calls, lambda call: getattr(call, "fn", None))


@contextmanager
def prefect_server(root: Path, api_url: str | None = None, dask_address: str | None = None) -> Iterator[str]:
    """Make a Prefect API available for the block: the given/`PREFECT_API_URL` one (refused when it does not answer:
    :func:`require_answer`), or a new local server, with a warning when the run's tasks go to an existing Dask
    cluster (`dask_address`, runtime.dask_address), whose
    workers cannot use a server on this machine's loopback that ends with the run. The environment it sets
    (prefect_env, PREFECT_API_URL, a local server's PREFECT_API_AUTH_STRING: read by the Dask workers and
    subprocesses the run starts) is as before once the block ends, and so are Prefect's global settings where Prefect
    was imported meanwhile (:func:`_refresh_prefect`), so a later Prefect call of the same process (a notebook's) does
    not use this root's home or a server that has stopped. An SSL_CERT_FILE no client can load is refused first
    (:func:`require_usable_ca_file`)."""
    require_usable_ca_file()
    env = prefect_env(root)
    try:
        with _restored_env([*env, "PREFECT_API_URL", "PREFECT_API_AUTH_STRING"]):
            os.environ.update(env)
            given = api_url or os.environ.get(API_URL_ENV)
            if given:
                require_answer(given, API_URL_FIELD if api_url else API_URL_ENV)
            yield from _serve(given, dask_address)
    finally:
        _refresh_prefect()


def _refresh_prefect() -> None:
    """Read Prefect's global settings anew from the environment, as restored: Prefect reads them once, when first
    imported, which for the CLI and a notebook's first run is inside prefect_server's block (its API URL and home
    then stayed the stopped server's). Nothing to do where no Prefect was imported."""
    context = sys.modules.get("prefect.context")
    refresh = getattr(context, "refresh_global_settings_context", None)
    if refresh is not None:
        refresh()


@contextmanager
def _restored_env(names: list[str]) -> Iterator[None]:
    """Put the environment variables `names` back as they were (set, or unset) when the block ends. in: names."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ServerStartError(OSError):
    """The local Prefect server did not start: an environment problem (nothing ran), one line naming the log and the
    cause it gives (the CLI's exit status 2, as a config error's)."""


# the lines a server that failed to start ends its log with after the cause: uvicorn's and Prefect's sign-off and
# SQLAlchemy's link under its error; the cause is the line before them
SERVER_LOG_NOISE = ("Application startup failed", "Server stopped", "(Background on this error at",
                    "Waiting for application shutdown", "Application shutdown complete", "Finished server process")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")  # 'sqlalchemy.exc.OperationalError: ...'
SERVER_LOG_READ_BYTES = 64 * 1024  # how much of the end of this start's log is read for its cause
SERVER_CAUSE_CHARS = 300  # how much of that line the error quotes


def server_log_cause(logfile: Path, start: int = 0) -> str | None:
    """The line of a failed server start's log that says why: the last exception line ('sqlalchemy.exc.
    OperationalError: (sqlite3.OperationalError) unable to open database file'), else the last line that is not
    sign-off noise (SERVER_LOG_NOISE), read from byte `start` (this start's lines) on, cut at SERVER_CAUSE_CHARS;
    None when there is none. in: the log, where this start began; out: the line or None."""
    try:
        with open(logfile, "rb") as f:
            f.seek(max(start, f.seek(0, os.SEEK_END) - SERVER_LOG_READ_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    meaningful = [line for line in lines if not line.startswith(SERVER_LOG_NOISE)]
    raised = [line for line in meaningful if EXCEPTION_LINE.match(line)]
    found = (raised or meaningful or [None])[-1]
    return None if found is None else found[:SERVER_CAUSE_CHARS]


def server_start_problem(logfile: Path, start: int, status: int | None) -> str:
    """Why the local Prefect server did not start, in one line: how it ended (its exit status, or no answer within
    STARTUP_TIMEOUT_S), the cause its log gives (:func:`server_log_cause`), the log's path and the fix. in: the log,
    where this start's lines begin, the server's exit status (None: still running); out: the message."""
    how = (f"it exited with status {status}" if status is not None else
           f"it did not answer within {STARTUP_TIMEOUT_S:.0f} s")
    cause = server_log_cause(logfile, start)
    said = f": {cause}" if cause else " and its log says nothing"
    return (f"the local Prefect server did not start ({how}){said} (the whole log: {logfile}). Nothing ran. Fix what "
            f"the log names (often {logfile.parent / PREFECT_DB}, which the server must be able to create and "
            "write: its folder's permissions, a full disk, a damaged file) and run the same command again, or set "
            f"{API_URL_FIELD} to a Prefect server that runs")


@contextmanager
def failing_fast_when_gone(proc: subprocess.Popen[bytes], settings: Any) -> Iterator[None]:
    """For the block: once the local server `proc` has exited (killed, out of memory), Prefect's client requests made
    under `settings` (the block's Prefect settings: the flow run's final state, its queued logs) fail at once
    (GONE_RETRIES) instead of being retried PREFECT_CLIENT_MAX_RETRIES times (5 by default) with backoff (2 to 32 s):
    after a server that died mid-run, `saerl run` waited about 70 s once its work was done, then more at exit for
    each batch of queued logs. While the server runs, its retries stay as they are (a busy server still gets them).
    A daemon thread polls the process every POLL_S until the block ends. in: the server's process, the settings."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(POLL_S):
            if proc.poll() is not None:
                settings.client.max_retries = GONE_RETRIES
                log.debug("the local Prefect server exited (status %s): Prefect's client requests now fail at once",
                          proc.returncode)
                return

    watcher = threading.Thread(target=watch, name="saerl-prefect-server-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _serve(api_url: str | None, dask_address: str | None) -> Iterator[str]:
    """prefect_server's body, in its environment: yield the given API's URL, or start a local server and yield its
    URL until the generator closes, then stop it. A local server requires a new random auth string, which this
    process and what it starts send (PREFECT_API_AUTH_STRING), allows cross-origin requests from its own origin
    only and keeps its records in the root's prefect.db whatever database the environment names
    (:func:`local_server_env`); a given server is the user's, its settings theirs."""
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
        with _settings(api_url):
            yield api_url
        return
    if dask_address:
        log.warning("runtime.dask_address=%s without runtime.prefect_api_url: this run's Prefect server listens on "
                    "127.0.0.1 and ends with the run, so workers on other machines cannot reach it, and the cluster's "
                    "long-lived workers stay bound to the first run's server (later runs' task runs go unrecorded, "
                    "without an error on either side). The artifacts are not affected. Fix: run one `prefect server "
                    "start --host 0.0.0.0` the workers can reach and set runtime.prefect_api_url=http://HOST:4200/api",
                    dask_address)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    url = f"{origin}/api"
    auth = local_server_auth()
    os.environ["PREFECT_API_AUTH_STRING"] = auth
    home = Path(os.environ["PREFECT_HOME"])
    server_env = local_server_env(home, auth, origin)
    logfile = home / "server.log"
    cmd = [sys.executable, "-c", LAUNCHER, str(os.getpid()), prefect_executable(), "server", "start", "--host",
           "127.0.0.1", "--port", str(port), "--analytics-off", "--no-ui", "--no-scheduler", "--no-late-runs"]
    proc: subprocess.Popen[bytes] | None = None
    try:
        # one server starting at a time per root: two first runs on a new root migrated prefect.db at once, and
        # one of them died ('duplicate column name')
        with file_lock(home / START_LOCK):
            with open(logfile, "ab") as out:
                start = out.tell()  # where this start's lines begin (the log keeps earlier runs')
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=server_env,
                                        start_new_session=True)
            _STARTED.add(proc)
            deadline = time.monotonic() + STARTUP_TIMEOUT_S  # a wall-clock step (NTP, a VM resumed) moves no deadline
            while not healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ServerStartError(server_start_problem(logfile, start, proc.poll()))
                time.sleep(POLL_S)
        log.info("Prefect server on %s (log: %s)", url, logfile)
        os.environ["PREFECT_API_URL"] = url
        with _settings(url, auth) as settings, failing_fast_when_gone(proc, settings):
            yield url
    finally:
        if proc is not None:
            drain_logs()  # while the server still answers: else "--- Error logging to API ---" after a failed run
        if proc is not None:
            _STARTED.discard(proc)
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            forget_stopped_services()  # the run's log and event services, stopped with its server
