"""What saerl says during a Prefect flow run, in that run's log (Prefect's API, its UI), printed no second time.

Prefect's logging config (prefect/logging/logging.yml) gives the run loggers `prefect.flow_runs` and
`prefect.task_runs` its API handler and lets their records go on to the root logger's console handler; their level
is the `prefect` logger's, PREFECT_LOGGING_LEVEL, which a saerl run sets to WARNING (flows.server.prefect_env) to keep
Prefect's per-task INFO lines off the terminal. So a line logged at INFO through `get_run_logger()` reached neither,
and at INFO with that level raised it would have been printed twice (once by `print`, once by Prefect's console).
Instead, the lines :func:`flows.pipeline.say` prints go to SAY_LOGGER, which sends them to the API alone (its own
APILogHandler, no propagation), whatever PREFECT_LOGGING_LEVEL is; and INFO (and worse) records of saerl's own
loggers (a stage's notes and progress lines, training health, silhouette at the edge of k_range, ingest rejections)
logged in a flow or task run of this process reach the run's log too, beside their usual line on the terminal
(:func:`send_saerl_lines`). Outside a run (no flow or task run context: `saerl status`, a thread a library started)
nothing is sent.

A stage task on a Dask worker logs in that worker's process, which the flow's setup does not reach: no handler
sent its saerl lines to the run's log, and its root logger, at Prefect's WARNING, dropped their INFO lines (an
extraction's shard said nothing anywhere). The stage tasks start with :func:`send_worker_lines`, which in such a
process sends saerl's lines of INFO and up to the task run's log (in the flow run's) and prints them on the worker's
console, as Prefect's handler does its warnings (a LocalCluster's worker writes to the run's terminal).
"""

from __future__ import annotations

import logging
import threading

SAY_LOGGER = "saerl.say"  # the logger of say()'s lines: to the flow run's log only (the terminal has them already)
SAERL_LOGGER = "saerl"  # saerl's own loggers' parent: their INFO lines and warnings go to the run's log as well
SAERL_LEVEL = logging.INFO  # the least level of saerl's records sent to the run's log (what the CLI prints)
HANDLER_NAME = "saerl-run-log"  # the name of the API handler added here (added once per logger)
_ADDING = threading.Lock()  # flows of one process (a sweep's children in threads) add a handler once
FLOW_PROCESS = threading.Event()  # set in a process a pipeline flow runs in (send_saerl_lines): not a Dask worker's


def in_run(record: logging.LogRecord) -> bool:
    """A logging filter: is the record logged inside a Prefect flow or task run (its run context), where the API
    handler knows which run's log it belongs to? Outside one, Prefect's handler would warn and drop it.
    in: a record (unused beyond the call); out: bool."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def run_log_handler(level: int) -> logging.Handler:
    """A handler that sends records of at least `level` logged inside a Prefect run (:func:`in_run`) to that run's
    log through Prefect's API (prefect.logging.handlers.APILogHandler: batched, in the background, drained when the
    run's server stops: flows.server.drain_logs). in: a logging level; out: the handler, named HANDLER_NAME."""
    from prefect.logging.handlers import APILogHandler

    handler = APILogHandler(level)
    handler.addFilter(in_run)
    handler.set_name(HANDLER_NAME)
    return handler


def send_to_run_log(logger: logging.Logger, level: int) -> None:
    """Give `logger` a :func:`run_log_handler` of `level`, unless it has one. in: a logger, a level."""
    with _ADDING:
        if not any(h.get_name() == HANDLER_NAME for h in logger.handlers):
            logger.addHandler(run_log_handler(level))


def say_logger() -> logging.Logger:
    """The logger say() sends its lines to: INFO and up, to the Prefect run's log only (no propagation, so neither
    the CLI's handler nor Prefect's console prints them again). out: the logger."""
    logger = logging.getLogger(SAY_LOGGER)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    send_to_run_log(logger, logging.INFO)
    return logger


def send_saerl_lines() -> None:
    """Have saerl's own loggers send their records of SAERL_LEVEL and up logged in a Prefect run of this process to
    that run's log as well (:func:`send_to_run_log`); they still reach the terminal as before. Marks this process as
    one a flow runs in (FLOW_PROCESS: :func:`send_worker_lines` leaves it be). Called as a pipeline flow starts; once is
    enough for the process."""
    FLOW_PROCESS.set()
    send_to_run_log(logging.getLogger(SAERL_LOGGER), SAERL_LEVEL)


def send_worker_lines() -> None:
    """At the start of a stage task: in a process no pipeline flow runs in (a Dask worker's), have saerl's records of
    SAERL_LEVEL and up made (its logger set to that level where it was above: a worker's root logger is at Prefect's
    WARNING, so its INFO lines were dropped), go on to the worker's console handlers (Prefect's, on its stderr) and
    reach the task run's log, which is in the flow run's (:func:`send_to_run_log`). Prefect's sender sends them in
    batches, and what is queued as the worker's process ends (its cluster closing) before that process exits. In a
    flow's own process (a local run's stage threads) it does nothing: :func:`send_saerl_lines` did it there."""
    if FLOW_PROCESS.is_set():
        return
    logger = logging.getLogger(SAERL_LOGGER)
    if logger.getEffectiveLevel() > SAERL_LEVEL:
        logger.setLevel(SAERL_LEVEL)
    send_to_run_log(logger, SAERL_LEVEL)
