"""The suite's own fixtures (tests/conftest.py) and helpers (tests/cpu_clock.py) do what the tests lean on."""

from __future__ import annotations

import logging
import os
import sys
import time

from cpu_clock import cpu_clock

LEAKED = "SAERL_TEST_LEAKED_VARIABLE"


def test_a_variable_a_test_sets_in_the_environment_without_monkeypatch():
    """The first half: set as the CLI's telemetry_off sets its variables, for its whole process."""
    os.environ[LEAKED] = "1"
    assert os.environ[LEAKED] == "1"


def test_is_gone_for_the_next_test():
    """The second half (pytest runs a file's tests in order): conftest's environment_restored put the environment back."""
    assert LEAKED not in os.environ


HANDLED = "saerl.tests.handler_made_under_capsys"  # a logger whose handler a test makes while its output is captured


def test_a_log_handler_made_while_a_test_captures_its_output(capsys):
    """The first half: a handler bound to this test's captured stderr, as Prefect's console handler is when a test
    that captures its output first imports flows.pipeline (logging.config's ext://sys.stderr)."""
    logging.getLogger(HANDLED).addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger(HANDLED).warning("first")
    assert capsys.readouterr().err == "first\n"


def test_writes_to_an_open_stream_in_the_next_test(capsys):
    """The second half: the first test's stream is closed, and a warning through that handler printed logging's
    'I/O operation on closed file' traceback; conftest's log_handlers_write_to_open_streams re-pointed it."""
    log = logging.getLogger(HANDLED)
    try:
        log.warning("second")
        err = capsys.readouterr().err
        assert "Logging error" not in err and "closed file" not in err
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)


def test_the_cpu_clock_counts_this_processs_work_and_not_its_waits():
    """A sleep (the machine busy with others: this process waits) costs no CPU; a loop does."""
    with cpu_clock() as idle:
        time.sleep(0.3)
    with cpu_clock() as busy:
        sum(i * i for i in range(10_000_000))
    assert idle.seconds < 0.1 < busy.seconds
