"""The suite's own fixtures (tests/conftest.py) and helpers (tests/cpu_clock.py) do what the tests lean on."""

from __future__ import annotations

import os
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


def test_the_cpu_clock_counts_this_processs_work_and_not_its_waits():
    """A sleep (the machine busy with others: this process waits) costs no CPU; a loop does."""
    with cpu_clock() as idle:
        time.sleep(0.3)
    with cpu_clock() as busy:
        sum(i * i for i in range(10_000_000))
    assert idle.seconds < 0.1 < busy.seconds
