"""Shared fixtures: one local Prefect server for the whole test session (started only if a test needs it)."""

from __future__ import annotations

import logging
import os
import sys
import tempfile

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# The suite's own environment, set when pytest loads this file (before any test module imports prefect, which reads
# its settings and creates its home when first imported): no Prefect setting of the developer's shell or profile
# reaches a test (a PREFECT_API_URL, a Cloud workspace's key, a profile or a server database URL sent the tests' flow
# runs and deployments to the user's own server, or failed them), Prefect's home and matplotlib's cache lie in a
# folder removed when the process ends instead of ~/.prefect and ~/.cache, and wandb never logs. The session server
# (prefect_api) and the CLI still set their own PREFECT_HOME, under their artifact root (flows.server.prefect_env).
SUITE_HOME = tempfile.TemporaryDirectory(prefix="saerl-tests-")  # removed at interpreter exit
PREFECT_PREFIX = "PREFECT_"
for _name in [n for n in os.environ if n.startswith(PREFECT_PREFIX)]:
    del os.environ[_name]
os.environ["PREFECT_HOME"] = os.path.join(SUITE_HOME.name, "prefect")
os.environ["MPLCONFIGDIR"] = os.path.join(SUITE_HOME.name, "matplotlib")
os.environ["WANDB_MODE"] = "disabled"
# Hypothesis keeps its example database in ./.hypothesis of the folder pytest runs in (the repo: shared by the xdist
# workers of a run and by every later run); the suite's own folder instead
os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = os.path.join(SUITE_HOME.name, "hypothesis")
# a COLUMNS the developer's shell exports would wrap the tables the tests read on a captured stdout
# (saerl.terminal.output_columns); a test that wants a width sets it
os.environ.pop("COLUMNS", None)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A Prefect server on loopback, through the same helper the CLI uses."""
    from flows.server import prefect_server

    root = tmp_path_factory.mktemp("prefect-root")
    with prefect_server(root) as url:
        yield url


@pytest.fixture(autouse=True)
def environment_restored():
    """The process environment as it was before each test: a test that runs saerl's CLI in-process left what the CLI
    sets for its own process (saerl.privacy.telemetry_off's variables) for every later test of the worker, so a test
    of them passed or failed by the order the tests ran in."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)


def _handlers() -> list[logging.Handler]:
    """Every handler of the root logger and of every named logger."""
    loggers = [logging.getLogger(), *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    return [h for x in loggers for h in x.handlers]


@pytest.fixture(autouse=True)
def log_handlers_write_to_open_streams():
    """A log handler made during a test that captures its output (capsys) writes to that test's stream, which pytest
    closes when the test ends: Prefect's console handler, made when a test first imports flows.pipeline (prefect.main
    configures logging with stream ext://sys.stderr, the capture's then), printed a 98-line '--- Logging error ---'
    traceback on each later warning of every later test in its worker (one of test_export's checks of stderr failed
    when test_terminal ran first). After each test, a handler whose stream was closed writes to sys.stderr again (the
    session's capture)."""
    yield
    for handler in _handlers():
        if getattr(getattr(handler, "stream", None), "closed", False):
            handler.stream = sys.stderr  # not setStream: it flushes the closed stream
            if getattr(handler, "console", None) is not None:  # Prefect's: a rich Console holds the stream too
                handler.console.file = sys.stderr


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one torch thread (and then do not fight other processes for the cores). The first
    stage run of a process caches its default thread count (saerl.pipeline.default_threads): read under this fixture,
    it is forgotten after, or every later module's stage runs would run on one thread."""
    import torch

    import saerl.pipeline

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    saerl.pipeline.default_threads.cache_clear()


@pytest.fixture
def cpu_machine(monkeypatch):
    """This machine seen as one without a GPU (torch.cuda.is_available() False), for tests of what runtime.device
    auto resolves to on a CPU: on a GPU machine it resolves to cuda, and their expected keys name cpu."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(autouse=True)
def hub_has_every_model(monkeypatch):
    """The hub, as the up-front check of a model or SAE repo the local cache lacks asks it (saerl.preflight.hub_answer),
    answers "it has it" without a request: tests name made-up hub ids ('some/encoder') and never reach the network.
    A test of the check patches HfApi.model_info again, after this. HF_HUB_OFFLINE (an air-gapped CI's) is not seen by
    the check either: it answered "the hub is off" before asking."""
    from huggingface_hub import HfApi, constants

    import saerl.preflight

    monkeypatch.setattr(HfApi, "model_info", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    saerl.preflight.hub_answer.cache_clear()


class SteppedWallClock:
    """A module's `time` whose wall clock (`time.time()`) a test steps, as NTP or a resumed VM steps a machine's; the
    rest, the monotonic clock included, is the real `time` module's. in: nothing; `step(seconds)` moves it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        """The real wall clock plus every step so far."""
        import time

        return time.time() + self.offset

    def step(self, seconds: float) -> None:
        """Step the wall clock by `seconds` (negative: back)."""
        self.offset += seconds

    def __getattr__(self, name: str):
        import time

        return getattr(time, name)


@pytest.fixture
def stepped_wall_clock(monkeypatch):
    """Install one SteppedWallClock as the `time` of the modules named: `clock = stepped_wall_clock("saerl.rl")`, then
    `clock.step(-3600)` steps what those modules' `time.time()` reads. in: module names; out: the clock."""
    import importlib

    clock = SteppedWallClock()

    def install(*modules: str) -> SteppedWallClock:
        for name in modules:
            monkeypatch.setattr(importlib.import_module(name), "time", clock)
        return clock

    return install
