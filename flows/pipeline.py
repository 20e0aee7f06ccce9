"""The SAERL pipeline flow: every available stage in order, each a cached task, with a 'what reran' report.

A run of a sweep (flows/sweep.py) passes `sweep` ({"id", "setting", "params"}): its printed lines start with its
setting's label, its MLflow runs (the parent and every nested stage run) are named and tagged with it and carry
its swept keys as params, and its run record keeps the id and label (extra). Its MLflow parent run is tagged with
the Prefect flow run (and deployment) it belongs to (:func:`prefect_tags`). A deployment's flow run stops, recorded
as stopped, when the Prefect worker that started its process dies (:func:`stopped_with_worker`); a run no worker
started (`saerl run`, a flow called from Python) stops, recorded as stopped, on a Cancel of its flow run in Prefect,
which its waits look for (:func:`as_done`, flows.cancel).
With `runtime.progress` off, :func:`quiet_libraries` silences the libraries' own progress bars and INFO chatter
(transformers' weight loading and saving, distributed's scheduler and nannies) for the length of a run.
"""

from __future__ import annotations

import logging
import os
import queue
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.cancel import CANCELLED, FLOW_RUN_ENV, FlowRunCancelled, cancel_watch
from flows.runlog import say_logger, send_saerl_lines
from flows.runner import start_cluster
from saerl.artifacts import (
    ArtifactRef,
    ArtifactStore,
    build_code,
    read_manifest,
)
from saerl.config import (
    ADDRESS_FIELDS,
    CODE_FIELDS,
    PipelineConfig,
    build_config,
    flatten,
    names_other_server,
    runs_outside_code,
)
from saerl.distributed import die_with_parent
from saerl.gc import claim
from saerl.pipeline import (
    SHARDED,
    STOPPED_TOKEN,
    check_ingested,
    fan_out_token,
    input_keys,
    quiet_libraries,
    record_shards,
    resolve_upstream,
    stage_runs,
)
from saerl.preflight import check_runnable
from saerl.privacy import redact, redacted
from saerl.report import recorded_config
from saerl.runs import (
    ENDED,
    EQUIVALENT,
    FAILED,
    FAILED_CHARS,
    INVOCATION,
    PLANNED,
    PREFECT_TAGS,
    RUNNING,
    SETTING,
    STOPPED,
    SWEEP,
    SWEEP_PARAMS,
    UNTIL,
    VERSIONS,
    RunRecord,
    StageRecord,
    clock_warning,
    gone_note,
    killed_runs,
    lineage_config,
    live_lock,
    new_run_id,
    previous_stage_runs,
    read_run,
    recorded_builds,
    run_path,
    runs_ahead,
    save_run,
    stage_record,
    upstream_config,
)
from saerl.stages import ran_values, stage_key, stage_slice
from saerl.status import IN_PROGRESS
from saerl.sweep import planned_run_keys, sweep_tags
from saerl.terminal import display_width, fit_cell, output_columns, table_lines
from saerl.tracking import (
    CONFIG_FILE,
    LABEL_SEP,
    LIVE_STAGES,
    TRACKED_FAILED,
    TRACKED_KILLED,
    Tracker,
    config_text,
    log_stage_run,
    record_tags,
    rerun_command,
    run_provenance,
)
from tasks.stage import plain_record, prepare_shards_task, shard_task, stage_options, stage_task

log = logging.getLogger("saerl.flow")
CLUSTER_TIMEOUT_S = 30  # how long asking an external Dask scheduler for its worker threads may take
PARALLEL_STAGES = ("train", "heldout")  # stages whose runs (one per variant) run at once on Dask
WAKE_S = 0.5  # how often the flow's thread wakes while it waits for a stage: how soon a Ctrl-C is seen
PREFECT_FLOW_RUN_TAG = "prefect.flow_run_id"  # MLflow parent-run tag: the Prefect flow run the pipeline belongs to
PREFECT_DEPLOYMENT_TAG = "prefect.deployment"  # MLflow parent-run tag: the deployment that flow run came from
DEPLOYMENT_DEPTH = 8  # flow runs walked up from a pipeline run to its deployment's (a sweep child on Dask: 4)
WORKER_LOST = signal.SIGHUP  # what the kernel sends a deployment's flow-run process when its worker dies
WORKER_DIED = "its Prefect worker died"  # how a run record's stop says so: 'train:saerl:0: SIGTERM, its Prefect ...'
STARTED_BY = os.getppid()  # this process's parent as the module is imported: a deployment flow run's, its worker
WORKER_GONE = threading.Event()  # set once this process has seen its worker die (worker_lost)
STAMP = "%H:%M:%S"  # the local time of day leading each line say() prints (a log file then says when a stage began)
STAMP_CHARS = len(time.strftime(STAMP, time.gmtime(0))) + 1  # the stamp and its space before a said first line
LOST_RUN = ("the Dask worker running it died (its process ended without saying how the task ended); the run's "
            "error says why the flow stopped")  # the message of a task run marked Crashed by crash_lost_runs
FAILED_FAN_OUT = ("the fan-out it belonged to failed before it ended ({failure}); the run's error says why the flow "
                  "stopped")  # the message of a shard task run left open by a failed fan-out (crash_lost_runs)
DASK_FINISHED = "finished"  # a Dask future's status once its task ran to its end (a Prefect task's own error too)
DASK_ERROR = "error"  # a Dask future's status once it failed on the Dask side (KilledWorker)
KILLED_RUN = ("saerl run {run_id} was killed (its process ended before it could say how: SIGKILL, out of memory, a "
              "lost machine); marked by the next run on its artifact root")  # crash_killed_runs's message


def format_report(record: RunRecord, width: int | None = None) -> str:
    """A plain-text table of the run: stage, status, key, seconds, size, reason; with `width` (:func:`said_columns`),
    the reason wrapped to fit it (saerl.terminal.table_lines; None: one line per stage run). in: the record, the width;
    out: the text."""
    rows = [("stage", "status", "key", "seconds", "MB", "why")]
    for s in record.stages.values():
        rows.append((s.stage, s.status, s.key[:12], f"{s.seconds:.1f}", f"{s.bytes / 1e6:.2f}", s.reason))
    return "\n".join([f"run {record.run_id} ({record.name})", *table_lines(rows, width)])


def said_columns(label: str | None) -> int | None:
    """The columns a message said (:func:`say`) may fill, so that each of its lines fits the terminal: the output's
    width (saerl.terminal.output_columns) less the stamp its first line is led by (STAMP_CHARS) and the lead every
    line of a sweep child gets ('<label> | '); None where stdout is no terminal (lines as they were).
    in: the label or None; out: columns or None."""
    width = output_columns()
    return None if width is None else width - STAMP_CHARS - (display_width(f"{label}{LABEL_SEP}") if label else 0)


def stage_line(rec: StageRecord, label: str | None) -> str:
    """The line said as a stage run ends: '[train:saerl:0] computed key=<12 hex> 70.2s  <why>', its why wrapped to
    the terminal's width (:func:`said_columns`), continuation lines aligned under the stamped first line's.
    in: the stage run's record, the sweep child's label or None; out: the message."""
    first, *rest = fit_cell(f"[{rec.stage}] {rec.status} key={rec.key[:12]} {rec.seconds:.1f}s  ", rec.reason,
                            said_columns(label))
    return "\n".join([first, *(" " * STAMP_CHARS + line for line in rest)])


def labelled(message: str, label: str | None) -> str:
    """`message` with every line led by '<label> | ' (a sweep child's lines, interleaved with its siblings' on
    Dask, say whose they are), or unchanged when `label` is None. in: text, label; out: text."""
    if not label:
        return message
    return "\n".join(f"{label}{LABEL_SEP}{line}" for line in message.split("\n"))


def stamped(text: str) -> str:
    """`text` led by the local time of day now (STAMP: '12:18:56 [train:saerl:0] computing ...') on its first line,
    its other lines (a table's) as they are. in: text; out: text."""
    return f"{time.strftime(STAMP)} {text}"


def say(message: str, label: str | None = None) -> None:
    """Print a line for the person at the terminal, led by the time (:func:`stamped`; each line by `label` first,
    :func:`labelled`), and send it to the Prefect flow or task run it is said in (its log in the Prefect UI, where
    the flow run's name says whose it is), at INFO, without printing it again (flows.runlog.say_logger). Said
    outside a Prefect run, it is printed only. Once the reader of standard output has gone, the lines go nowhere
    and the run goes on (:func:`stdout_gone`). Text the output's encoding lacks (a config's name or a changed value
    it quotes, under a latin-1 or ASCII locale) is printed escaped (flows.cli.escape_unencodable_output: also for a
    deployment's run, which a Prefect worker starts without the CLI), never failing the run."""
    from flows.cli import escape_unencodable_output

    escape_unencodable_output()
    try:
        print(stamped(labelled(message, label)), flush=True)
    except BrokenPipeError:
        stdout_gone()
    say_logger().info(message)


def stdout_gone() -> None:
    """Point this process's standard output at /dev/null, once its reader has closed it (`saerl run ... | head -2`),
    as Python's documentation on SIGPIPE advises, and say so once on stderr. The next stage line raised
    BrokenPipeError inside the flow: the run failed at that stage, nothing was trained, and saerl exited 0. A run's
    results live on disk, not in its output: it goes on, its lines still reach the Prefect run's log, and its record
    says how it ended. A standard output that is no file (captured) is left as it is (flows.cli.stdout_to_devnull)."""
    from flows.cli import stdout_to_devnull

    if not stdout_to_devnull():  # no file under it: nothing to point elsewhere
        return
    log.warning("the reader of standard output has closed it: the run goes on without printing its lines (`saerl "
                "status` shows them, the Prefect run's log has them)")


def announce(root: Path, run_id: str, label: str | None = None) -> None:
    """Say on stderr, once the run's record is saved, which run this is and how to follow it: a failed or stopped
    run never printed its id (a successful one only in its last table), so a script could only guess with
    `latest`, wrong as soon as two runs share a root. One line, led by `label` for a sweep's run; a stderr that is
    gone is let be. in: artifact root, run id, a sweep run's label."""
    follow = f"saerl status {run_id} --root {shlex.quote(str(root))}"  # quoted: a root with a space pastes whole
    line = f"saerl: run {run_id} started; `{follow}` follows it (--json: its record)"
    try:
        print(labelled(line, label), file=sys.stderr, flush=True)
    except OSError:
        pass


_CLOCK_WARNED: set[tuple[str, str]] = set()  # (root, run id) of each run started in the future that this process
# warned of already: a sweep's children start one after another, and each would repeat it


def warn_clock(root: Path, run_id: str) -> None:
    """Log, once a process per run, that runs under `root` started in the future (saerl.runs.runs_ahead: the clock
    reads earlier than their start), so 'latest' will not name run `run_id`, which starts now
    (saerl.runs.clock_warning says what that does and how to fix it). in: artifact root, the new run's id."""
    ahead = runs_ahead(root, run_id)
    if ahead and (str(root), ahead[-1].run_id) not in _CLOCK_WARNED:
        _CLOCK_WARNED.add((str(root), ahead[-1].run_id))
        log.warning("%s", clock_warning(root, run_id, ahead))


def prefect_tags() -> dict[str, str]:
    """The MLflow parent-run tags linking a pipeline run to Prefect: the flow run it belongs to (PREFECT_FLOW_RUN_TAG)
    and, when a deployment started it, the deployment's name (PREFECT_DEPLOYMENT_TAG). Under a deployment that flow
    run is the deployment's own (the id `prefect deployment run` prints), found by walking up from the pipeline's
    flow run (:func:`deployment_run`): the deployment entry points run the pipeline as a subflow, a sweep child is
    one or more levels further down, and Prefect 3 gives a subflow no deployment id of its own. Otherwise it is the
    pipeline's own flow run. Called outside a flow run, `prefect.runtime`'s view (its environment variables). A value
    Prefect does not know (None) is not tagged; nor is the deployment when asking the Prefect API for it fails (that
    costs the tag, never the run). out: {tag: value}."""
    from prefect.context import FlowRunContext
    from prefect.runtime import deployment, flow_run

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    tags: dict[str, Any] = {PREFECT_FLOW_RUN_TAG: run.id if run is not None else flow_run.id}
    try:
        if run is None:  # prefect.runtime's deployment.id asks the API for the flow run when it has no context
            tags[PREFECT_DEPLOYMENT_TAG] = deployment.name if deployment.id else None
        elif (started := deployment_run(run)) is not None:
            tags = {PREFECT_FLOW_RUN_TAG: started.id, PREFECT_DEPLOYMENT_TAG: deployment_name(started.deployment_id)}
    except Exception as err:  # noqa: BLE001 - a tag is not worth a run
        log.warning("could not read the Prefect deployment of this flow run (%s); its MLflow run is not tagged with it",
                    err)
    return {k: str(v) for k, v in tags.items() if v}


def deployment_run(run: Any) -> Any | None:
    """The flow run a deployment started that `run` is, or runs under: `run` itself when it has a deployment id,
    else its parent flow run's (a subflow's parent task run belongs to it), asked of the Prefect API, and so on up,
    at most DEPLOYMENT_DEPTH flow runs; None when the top one came from no deployment. A top-level run reads no API.
    in: a Prefect FlowRun; out: a FlowRun or None."""
    from prefect.client.orchestration import get_client

    if run.deployment_id is not None or run.parent_task_run_id is None:
        return run if run.deployment_id is not None else None
    with get_client(sync_client=True) as client:
        for _ in range(DEPLOYMENT_DEPTH + 1):  # the run itself, then up to DEPLOYMENT_DEPTH flow runs above it
            if run.deployment_id is not None:
                return run
            if run.parent_task_run_id is None:
                return None
            run = client.read_flow_run(client.read_task_run(run.parent_task_run_id).flow_run_id)
    return None


def deployment_name(deployment_id: Any) -> str:
    """The name of the deployment `deployment_id` (e.g. scheduled-pipeline), asked of the Prefect API."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment(deployment_id).name


def wait_awake(future: Any) -> None:
    """`future.wait()`, woken every WAKE_S: a wait without a timeout cannot be interrupted (a Ctrl-C delivered while
    the flow's thread sleeps in it runs its handler only once the stage is done, half an hour into an extraction),
    while between two short waits Python runs the signal's handler, and the flow run's Cancel in Prefect is looked
    for (:func:`as_done`). in: a Prefect future."""
    for _ in as_done([future]):
        pass


def as_done(futures: list[Any]) -> Iterator[Any]:
    """The futures in the order they finish, each waited for in waits of WAKE_S (:func:`wait_awake`: a Ctrl-C
    is handled at once). Between the waits, at most every flows.cancel.CANCEL_POLL_S, Prefect is asked whether the
    flow run this runs in (or one it runs under) was cancelled, which raises flows.cancel.FlowRunCancelled (in a
    process a worker started, its worker stops it instead: flows.cancel.watched_process). in: Prefect futures; out:
    the same, finished."""
    done: queue.Queue[Any] = queue.Queue()
    for f in futures:
        f.add_done_callback(lambda _, f=f: done.put(f))  # the future itself, whatever the callback is given
    watch = cancel_watch()
    for _ in futures:
        while True:
            if watch is not None:
                watch.check()
            try:
                f = done.get(timeout=WAKE_S)
                break
            except queue.Empty:
                continue
        f.wait()
        yield f


def finished_state(future: Any) -> Any:
    """The Prefect state of a stage's future once it is done (:func:`wait_awake`). A Dask future that failed on the
    Dask side (KilledWorker: the worker died running the stage) has no state of its own: Prefect's API still says
    Running, whose result raised 'UnfinishedRun: Run is in RUNNING state', and the run failed under that line, while
    only distributed's log said a worker had died. Its Dask error is raised instead, which names the task, the workers
    and what to read next (the run's failure marks the task run Crashed: :func:`crash_lost_runs`). in: a finished
    Prefect future; out: its state. Raises the Dask future's exception."""
    if dask_status(future) == DASK_ERROR:
        raise future.wrapped_future.exception()
    return future.state


def dask_status(future: Any) -> str | None:
    """A Prefect future's Dask status (DASK_FINISHED, DASK_ERROR, 'pending', ...), or None for a future that runs
    elsewhere than on Dask. in: a Prefect future; out: the status or None."""
    return getattr(getattr(future, "wrapped_future", None), "status", None)


def crash_lost_runs(futures: list[Any], failure: BaseException | None = None) -> int:
    """Mark as Crashed, in Prefect, the task runs among `futures` that will never say how they ended, while their
    state is not final: a Dask future that failed on the Dask side (KilledWorker: the worker died running it; a
    task's own error comes back as a Prefect state instead), and, given the `failure` that failed their fan-out,
    every Dask future that did not run to its end (a sibling shard Dask rescheduled after the same worker deaths,
    then dropped with the cluster). Prefect showed such a run Running (or Pending) forever, beside a flow run that
    had failed. A shard still running stops at its next chunk and its own final state, newer, replaces the mark.
    Best effort (:func:`set_task_run_states`): a failure to reach the API costs the marks (a warning), never the
    flow's own error; a run the server never heard of is left alone. in: Prefect futures (others than Dask's are
    skipped), the fan-out's error or None; out: how many were marked."""
    status = {id(f): dask_status(f) for f in futures}
    lost = [f for f in futures if status[id(f)] == DASK_ERROR
            or failure is not None and status[id(f)] not in (None, DASK_FINISHED)]
    if not lost:
        return 0
    from prefect.states import Crashed

    failed = FAILED_FAN_OUT.format(failure=f"{type(failure).__name__}: {failure}")
    marks = [(f.task_run_id, Crashed(message=LOST_RUN if status[id(f)] == DASK_ERROR else failed)) for f in lost]
    return set_task_run_states(marks, "mark the task runs of dead Dask workers as crashed", open_only=True)


def set_task_run_states(marks: list[tuple[Any, Any]], what: str, open_only: bool = False) -> int:
    """Set task runs' states in Prefect, forced over what they were, best effort: a Prefect API that does not answer
    costs a warning ('could not <what> in Prefect (<error>)'), never the caller's own error or stop. With
    `open_only`, a run whose state is final already, or that the server never heard of, is left alone (its events
    never reached the server: Prefect shows no run to correct). in: (task run id, Prefect state) pairs, what the
    marks do in words, open_only; out: how many were set."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    marked = 0
    try:
        with get_client(sync_client=True) as client:
            for task_run_id, state in marks:
                if open_only:
                    try:
                        now = client.read_task_run(task_run_id).state
                    except ObjectNotFound:
                        continue
                    if now is not None and now.is_final():
                        continue
                client.set_task_run_state(task_run_id, state, force=True)
                marked += 1
    except Exception as err:  # noqa: BLE001 - a state in the UI is not worth the run's own error
        log.warning("could not %s in Prefect (%s)", what, err)
    return marked


def crash_killed_runs(root: Path) -> list[str]:
    """Mark as Crashed, in Prefect, the pipeline flow runs of the saerl runs under `root` that were killed (SIGKILL,
    out of memory: saerl.runs.killed_runs) and are not in a final state, with their task runs that are not: Prefect
    showed them Running for good, as MLflow showed their parent runs (saerl.tracking.close_dead_runs, which ends
    those when the next run's tracking starts). The flow run is the record's PREFECT_FLOW_RUN_TAG where that is the
    pipeline's own (no PREFECT_DEPLOYMENT_TAG); under a deployment, the tag is the deployment's flow run, which its
    worker reports, and the pipeline's is found by its name, the run id (:func:`named_run`). Best effort: a failure
    to reach the API is a warning, never the run's error. in: artifact root; out: the saerl run ids whose flow runs
    were marked."""
    killed = killed_runs(root)
    if not killed:
        return []
    from prefect.client.orchestration import get_client

    marked = []
    try:
        with get_client(sync_client=True) as client:
            for record in killed:
                flow_runs = pipeline_flow_runs(client, record)
                if sum(crash_flow_run(client, flow_run_id, record.run_id) for flow_run_id in flow_runs):
                    marked.append(record.run_id)
    except Exception as err:  # noqa: BLE001 - a state in the UI is not worth the run
        log.warning("Prefect: could not mark the flow runs of saerl runs that were killed as crashed (%s)", err)
    if marked:
        log.info("Prefect: marked the flow runs of %d saerl runs that were killed as Crashed: %s", len(marked),
                 ", ".join(marked))
    return marked


def pipeline_flow_runs(client: Any, record: RunRecord) -> list[Any]:
    """The ids of the Prefect flow runs that ran the pipeline of `record` (:func:`crash_killed_runs`): its
    PREFECT_FLOW_RUN_TAG when no deployment started it, else the flow runs named after its run id; none for a record
    without Prefect tags. in: a sync Prefect client, a run record; out: flow run ids."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    tags = record.extra.get(PREFECT_TAGS) or {}
    if PREFECT_DEPLOYMENT_TAG not in tags:
        return [tags[PREFECT_FLOW_RUN_TAG]] if tags.get(PREFECT_FLOW_RUN_TAG) else []
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[record.run_id])))
    return [run.id for run in runs]


def crash_flow_run(client: Any, flow_run_id: Any, run_id: str) -> int:
    """Set flow run `flow_run_id` and its task runs Crashed, each unless already final (a run the server does not
    know is left alone), saying that saerl run `run_id` was killed. in: a sync Prefect client, the flow run's id,
    the saerl run id; out: how many runs were marked."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import TERMINAL_STATES, StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    try:
        flow_run = client.read_flow_run(flow_run_id)
    except ObjectNotFound:
        return 0
    message = KILLED_RUN.format(run_id=run_id)
    open_types = [t for t in StateType if t not in TERMINAL_STATES]
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                                  task_run_filter=TaskRunFilter(state=TaskRunFilterState(
                                      type=TaskRunFilterStateType(any_=open_types))))
    for task_run in tasks:
        client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
    marked = len(tasks)
    if flow_run.state is None or not flow_run.state.is_final():
        client.set_flow_run_state(flow_run.id, Crashed(message=message), force=True)
        marked += 1
    return marked


def shard_count(cfg: PipelineConfig) -> int:
    """Shards a sharded stage fans out into: runtime.shards_per_worker per worker thread of the cluster. A LocalCluster
    has runtime.workers single-thread workers; an external cluster (runtime.dask_address) is asked for its threads
    at the fan-out: sized from runtime.workers (2 by default), a 16-worker cluster got 2 shards and left 14 workers
    idle, and a node of one worker with N threads got one shard on one core (the nanny sets OMP_NUM_THREADS=1).
    in: config; out: the count."""
    if not cfg.runtime.dask_address:
        return cfg.runtime.workers * cfg.runtime.shards_per_worker
    from distributed import Client

    with Client(cfg.runtime.dask_address, set_as_default=False, timeout=CLUSTER_TIMEOUT_S) as client:
        threads = sum(client.nthreads().values())
    shards = max(1, threads) * cfg.runtime.shards_per_worker
    if threads != cfg.runtime.workers:
        log.info("the Dask cluster at %s has %d worker threads (runtime.workers=%d is read by a LocalCluster only): "
                 "%d shards per sharded stage", cfg.runtime.dask_address, threads, cfg.runtime.workers, shards)
    return shards


def fan_out(args: dict[str, Any], n_shards: int, label: str | None = None) -> None:
    """Run a sharded stage's chunks as parallel shard tasks (on Dask workers); the stage task then publishes.
    The shards run under a new fan-out token (saerl.pipeline.fan_out_token); when the flow stops (Ctrl-C, SIGTERM)
    or a shard fails, the token is withdrawn, so the other shards end before their next chunk instead of running
    on in the cluster's workers. What the shards ran and the fan-out's wall time are kept for the build's manifest
    (saerl.pipeline.record_shards). `label`: a sweep run's, leading its printed line (:func:`say`)."""
    store, stage, key = ArtifactStore(args["root"]), args["stage"], args["key"]
    started = time.monotonic()  # the fan-out's wall time is a span: a wall-clock step moves it not
    prepared = prepare_shards_task.submit(**args, n_shards=n_shards)
    wait_awake(prepared)
    shards = prepared.result()
    token = fan_out_token(store, stage, key)
    futures: list[Any] = []  # each shard's, as soon as it is submitted: a later submit's failure keeps them
    try:
        for i, ids in enumerate(shards):
            futures.append(shard_task.with_options(task_run_name=f"{stage}-shard-{i}").submit(**args, chunk_ids=ids,
                                                                                               token=token))
        summaries = [f.result() for f in as_done(futures)]  # a failed shard is seen when it fails
    except BaseException as err:  # a failed shard (KilledWorker): every shard that did not end is marked; a stop
        fan_out_token(store, stage, key, STOPPED_TOKEN)  # (Ctrl-C, SIGTERM, a Cancel): they end before their next chunk
        crash_lost_runs(futures, err if isinstance(err, Exception) else None)
        raise
    record_shards(store, stage, key, summaries, time.monotonic() - started)  # for the build's manifest and metrics
    say(f"[{stage}] {sum(map(len, shards))} chunks computed in {len(shards)} shards", label)


def build_sharded(store: ArtifactStore, args: dict[str, Any], n_shards: int, start: Callable[[], Any],
                  label: str | None = None) -> tuple[Any, str]:
    """Build a sharded stage on Dask under its key's build lock, which this process holds from before the shards
    until its stage task has published the artifact. A second flow building the same key meanwhile (two children
    of a sweep sharing an extraction, another run on the root) waits here and then finds the artifact published;
    without the lock it laid the store out again under the first flow's shards, computed every chunk a second
    time, and its shards wrote into a folder the first flow's stage task had already renamed into place. The
    stage task, started by `start()` (with lock_held), builds without taking the lock: waiting for it on a Dask
    worker would hold a worker the shards need. in: store, stage task arguments, shard count, start, a sweep
    run's label (for its printed line); out: the stage task's finished future, and what the build reused of an
    interrupted one (saerl.runs.resumed_note: the chunk records the shards left unchanged, counted here because the
    stage task finds every chunk done; '' when none, or when another flow built the key meanwhile)."""
    from saerl.artifacts import chunk_records, reused_chunks
    from saerl.runs import resumed_note

    stage, key = args["stage"], args["key"]
    resumed = ""
    with store.lock(stage, key):
        if not store.is_complete(stage, key):
            before = chunk_records(store.partial_path(stage, key))
            fan_out(args, n_shards, label)
            after = chunk_records(store.partial_path(stage, key))
            resumed = resumed_note(reused_chunks(before, after), len(after))
        future = start()
        wait_awake(future)
    return future, resumed


def stop_signal(err: BaseException) -> str | None:
    """The signal's name when `err` is a person stopping the run (Ctrl-C: KeyboardInterrupt; SIGHUP, which the CLI
    raises as a KeyboardInterrupt naming it in `signum`, flows.cli.Interrupted; SIGTERM, which Prefect's flow engine
    raises as TerminationSignal; followed by WORKER_DIED when it came of that, :func:`worker_lost`), CANCELLED for a
    Cancel of its flow run in Prefect (flows.cancel.FlowRunCancelled), else None (an error)."""
    from prefect.exceptions import TerminationSignal

    if isinstance(err, FlowRunCancelled):
        return CANCELLED
    if isinstance(err, KeyboardInterrupt):
        return signal.Signals(getattr(err, "signum", signal.SIGINT)).name
    if isinstance(err, TerminationSignal):
        try:
            name = signal.Signals(err.signal).name
        except ValueError:
            name = f"signal {err.signal}"
        return f"{name}, {WORKER_DIED}" if WORKER_GONE.is_set() else name
    return None


def mark_failed(stage_run: str, err: BaseException) -> str:
    """What a failed run's record says in extra['failed']: the stage run that was running and the error, one
    line, a URL's credentials masked. in: stage run name ('' before the first), the exception; out: text."""
    text = " ".join(redact(f"{type(err).__name__}: {err}").split())  # it goes to MLflow too: no credentials
    return f"{stage_run or 'before the first stage'}: {text[:FAILED_CHARS]}"


def format_levels(metrics: dict[str, float]) -> str:
    """One line of the testbed policy's held-out greedy accuracy per level."""
    levels = sorted(k for k in metrics if k.startswith("greedy_acc_L"))
    cells = "  ".join(f"L{k.removeprefix('greedy_acc_L')} {metrics[k]:.2f}" for k in levels)
    return f"[testbed] policy greedy accuracy on held-out problems: {cells}  all {metrics.get('greedy_acc', 0):.2f}"


def stored_ref(store: ArtifactStore, stage: str, key: str) -> ArtifactRef:
    """The reference to a finished stage run's artifact under this run's artifact root. A Prefect cache hit
    hands back the result persisted when the artifact was built, whose absolute path is stale once the root
    has moved (`mv .saerl /big/.saerl`, then runtime.artifact_root=/big/.saerl): the path always comes from
    the store, never from the task result. in: store, stage, artifact key; out: ArtifactRef."""
    return ArtifactRef(stage, key, str(store.path(stage, key)))


def cached_seconds(started: float, state: Any, elapsed: float | None = None) -> float:
    """Seconds a stage run answered from Prefect's cache took: from its submission (epoch `started`, which
    includes verifying the stored artifact) to its Cached state. The cached result is the one persisted when the
    artifact was built, whose seconds are that build's. The state's time is a wall-clock stamp (the task's process
    sets it), so the span is at least 0 and at most `elapsed`, the seconds a monotonic clock counted since the
    submission (None: no bound): a wall-clock step between the two (NTP, a resumed VM) gave hours, or a negative
    span. in: submission time, the task run's final state, the monotonic seconds since the submission; out:
    seconds."""
    span = max(0.0, state.timestamp.timestamp() - started)
    return round(span if elapsed is None else min(span, max(0.0, elapsed)), 3)


def run_seconds(run: dict[str, Any], state: Any, result: dict[str, Any]) -> float:
    """Seconds one stage run took, for its record: a Prefect cache hit's own (:func:`cached_seconds`); a stage
    fanned out on Dask from its submission to its task's end, since its task only publishes what the shards
    computed (its own seconds said 0.1 s for a whole extraction); else its task's. in: what _submit returned
    (started, and `clock`: time.monotonic() at the submission, which bounds the span; fanned), the task run's final
    state, its result."""
    if state.name == "Cached" or run["fanned"]:
        elapsed = time.monotonic() - run["clock"] if "clock" in run else None
        return cached_seconds(run["started"], state, elapsed)
    return result["seconds"]


def waited_seconds(state: Any, result: dict[str, Any], fanned_wait: float) -> float:
    """Seconds a stage run waited for another process building its artifact: its task's own wait (a fanned stage:
    the flow's, `fanned_wait`, as build_sharded holds the lock), none for a Prefect cache hit, whose result is the
    one stored by the task run that computed it (a wait of that run would be reported by every later one).
    in: the task run's final state, its result, the flow's wait; out: seconds."""
    if state.name == "Cached":
        return 0.0
    return result.get("waited", 0.0) or fanned_wait


@dataclass
class _FlowRun:
    """What one pipeline flow run's steps share (:func:`pipeline_flow`): its config, `until`, artifact root and
    store, a sweep child's label (None: no sweep), its run record and MLflow Tracker, the newest earlier record of
    each planned stage run (`previous`) and the installed library versions (`installed`), both read by
    saerl.runs.stage_record; then what the run fills in as it goes: each finished stage run's artifact (`refs`), the
    stage run being submitted or waited for (`active`: where a failed run stopped, '' before the first), every stage
    task's future (`submitted`: a dead worker's is marked Crashed, crash_lost_runs), the shard count, asked once a
    fanned-out stage needs it (`n_shards`), and the artifacts earlier runs had (`builds`, saerl.runs.recorded_builds,
    read once a run, at its first stage run to build)."""

    cfg: PipelineConfig
    until: str | None
    root: Path
    store: ArtifactStore
    label: str | None
    record: RunRecord
    tracker: Tracker
    previous: dict[str, StageRecord]
    installed: dict[str, str]
    refs: dict[str, ArtifactRef] = field(default_factory=dict)
    active: str = ""
    submitted: list[Any] = field(default_factory=list)
    n_shards: int | None = None
    builds: dict[tuple[str, str], str] | None = None


def _tell(flow_run: _FlowRun, message: str) -> None:
    """Say `message` (:func:`say`), led by the run's sweep label if it has one. in: the flow run, the message."""
    say(message, flow_run.label)


def _record_extra(provenance: dict[str, Any], prefect: dict[str, str], until: str | None, invocation: str | None,
                  sweep: dict[str, Any] | None, label: str | None) -> dict[str, Any]:
    """A new run record's extra: RUNNING (until it ends, either way), the run's provenance and Prefect tags, `until`,
    the invocation (masked; None: its equivalent on the config file) and, for a sweep's run, its id, label and
    params. in: run_provenance(), prefect_tags(), until, the invocation, the sweep or None, its label; out: extra."""
    extra: dict[str, Any] = {RUNNING: True, **provenance, PREFECT_TAGS: prefect,  # RUNNING until it ends, either way
                             UNTIL: until,
                             INVOCATION: redact(invocation) if invocation else f"{EQUIVALENT}{rerun_command(until)}"}
    if sweep:
        extra |= {SWEEP: sweep["id"], SETTING: label, SWEEP_PARAMS: sweep.get("params") or {}}
    return extra


def _start_run(cfg: PipelineConfig, until: str | None, sweep: dict[str, Any] | None, run_id: str | None,
               invocation: str | None) -> _FlowRun:
    """Set up a pipeline run before its first stage: its run record (not saved yet), the clock warning, the earlier
    stage runs it compares with, its MLflow parent run (tagged, holding the config as CONFIG_FILE), and the Prefect
    flow runs of killed runs on the root marked Crashed. in: the config, until, the sweep or None, the run id or None
    (a new one), the invocation or None (:func:`pipeline_flow`); out: the flow run's state."""
    root = Path(cfg.runtime.artifact_root).resolve()
    store = ArtifactStore(root)
    label = sweep["setting"] if sweep else None
    prefect = prefect_tags()  # kept too: a relog tags the flow run and deployment the run was
    # kept in the record: a later relog tags this code, these versions and machine, not the relog's
    provenance = run_provenance()
    installed = provenance[VERSIONS]  # what a reused artifact's build is compared with (stage_record)
    extra = _record_extra(provenance, prefect, until, invocation, sweep, label)
    record = RunRecord(name=cfg.name, run_id=run_id or new_run_id(), config=redacted(flatten(cfg)), extra=extra)
    warn_clock(root, record.run_id)  # a run that started in the future stays 'latest': say so now
    planned = [name for _, name, _, _ in stage_runs(cfg, until)]
    previous = previous_stage_runs(root, cfg.name, planned)  # per stage run: a newer run may have stopped before it
    tracker = Tracker(cfg, root, record.run_id, tags=record_tags(extra) | prefect, label=label,
                      common_tags=sweep_tags(sweep["id"], label) if sweep else {},
                      common_params=(sweep.get("params") or {}) if sweep else {})
    tracker.log_text(config_text(recorded_config(record.config), record.run_id, until), CONFIG_FILE)
    crash_killed_runs(root)
    return _FlowRun(cfg=cfg, until=until, root=root, store=store, label=label, record=record, tracker=tracker,
                    previous=previous, installed=installed)


def _rebuild_note(flow_run: _FlowRun, stage: str, key: str) -> str:
    """Why a stage run whose artifact is not complete computes, beyond its reason: its stored artifact failed
    verification (the problems, cut to 300 characters), or an earlier run had it and it is gone since
    (saerl.runs.gone_note), else ''. in: the flow run, stage, key; out: the note."""
    store = flow_run.store
    if store.path(stage, key).exists():
        return f"computed: stored artifact failed verification ({'; '.join(store.problems(stage, key))[:300]})"
    if flow_run.builds is None:  # read once a run, at its first stage run to build
        flow_run.builds = recorded_builds(flow_run.root, exclude=flow_run.record.run_id)
    if (earlier := flow_run.builds.get((stage, key))) is not None:
        return gone_note(earlier)
    return ""


def _started_computing(flow_run: _FlowRun, stage: str, name: str, key: str, started: float,
                       keys: dict[str, str]) -> str | None:
    """Say in the run record that stage run `name` computes since `started` (IN_PROGRESS: `saerl status` shows
    it, and a killed run's record keeps where it died) and make its nested MLflow run, RUNNING
    (Tracker.start_stage). in: the flow run, stage, stage run, key, start (epoch s), input keys; out: the MLflow run
    id or None (tracking off)."""
    cfg, record = flow_run.cfg, flow_run.record
    record.extra.setdefault(IN_PROGRESS, {})[name] = {"started": started, "key": key}
    save_run(flow_run.root, record)
    sl = stage_slice(cfg, stage, keys)  # its upstream settings from its inputs: its own record comes at its end
    return flow_run.tracker.start_stage(name, key, ran_values(cfg, sl), keys,
                                        ran_values(cfg, upstream_config(record.stages, name, keys, sl)))


def _submit_task(flow_run: _FlowRun, task: Any, args: dict[str, Any], variant: dict[str, Any] | None,
                 live_run: str | None, fanned: bool) -> tuple[Any, str]:
    """Submit a stage run's task: a fanned stage's shards first, under its build lock (:func:`build_sharded`), its
    shard count asked once a run (an external scheduler for its threads, not once a stage); else the task alone,
    given its nested MLflow run when it sends points while it runs (LIVE_STAGES). in: the flow run, the task with
    its options, its arguments, variant, the MLflow run or None, fanned; out: its future, and what a fanned build
    reused of an interrupted one ('' else: a fanned stage's own task finds every chunk done, its shards ran them)."""
    if not fanned:
        return task.submit(**args, variant=variant, live_run=live_run if args["stage"] in LIVE_STAGES else None), ""
    if flow_run.n_shards is None:  # an external scheduler is asked for its threads once a run, not once a stage
        flow_run.n_shards = shard_count(flow_run.cfg)
    return build_sharded(flow_run.store, args, flow_run.n_shards,
                         lambda: task.submit(**args, variant=variant, lock_held=True), flow_run.label)


def _submit(flow_run: _FlowRun, stage: str, name: str, ups: tuple[str, ...],
            variant: dict[str, Any] | None) -> dict[str, Any]:
    """Start one stage run as a task (its shards first, on Dask); returns what finishing it needs (:func:`_finish`,
    :func:`run_seconds`). in: the flow run, stage, stage run, its upstream stages, variant; out: {stage, name, key,
    keys, note, future, started, clock, fanned, resumed}."""
    flow_run.active = name
    started, clock = time.time(), time.monotonic()  # when (status's 'since'), and a span's start (run_seconds)
    upstream = resolve_upstream(stage, ups, flow_run.refs, variant)
    keys = input_keys(flow_run.cfg, stage, upstream, variant)
    key = stage_key(flow_run.cfg, stage, keys)
    complete = flow_run.store.is_complete(stage, key)
    refresh = not complete or not plain_record(flow_run.root, stage, key)  # a record of another serializer: rewritten
    note = "" if complete else _rebuild_note(flow_run, stage, key)
    args = {"stage": stage, "key": key, "root": str(flow_run.root), "config": flow_run.cfg.model_dump(mode="json"),
            "upstream": {u: asdict(r) for u, r in upstream.items()}}
    task = stage_task.with_options(**stage_options(stage, flow_run.root, refresh) | {"task_run_name": name})
    live_run = None  # its nested MLflow run, made now: a training run's points arrive there while it trains
    if not complete:  # a long stage says it is running (its end line comes only once it is done)
        _tell(flow_run, f"[{name}] computing key={key[:12]} ...")
        live_run = _started_computing(flow_run, stage, name, key, started, keys)
    fanned = not complete and stage in SHARDED and flow_run.cfg.runtime.task_runner == "dask"
    future, resumed = _submit_task(flow_run, task, args, variant, live_run, fanned)
    flow_run.submitted.append(future)
    return {"stage": stage, "name": name, "key": key, "keys": keys, "note": note,
            "future": future, "started": started, "clock": clock, "fanned": fanned, "resumed": resumed}


def _stage_run_record(flow_run: _FlowRun, run: dict[str, Any], state: Any, result: dict[str, Any]) -> StageRecord:
    """The record of a finished stage run (what it computed or reused, its seconds and waits, size, path, note), its
    artifact kept in the flow run's refs. A build that resumed an interrupted one says what it reused (the task's
    StageResult.resumed: chunks already done, a training run's checkpoint step; a fanned stage's from build_sharded,
    around its shards). in: the flow run, what _submit returned, the task run's final state, its result; out: the
    stage run's record."""
    stage, name, key, keys = run["stage"], run["name"], run["key"], run["keys"]
    computed = bool(result["computed"]) and state.name != "Cached"
    seconds = run_seconds(run, state, result)
    ref = flow_run.refs[name] = stored_ref(flow_run.store, stage, key)
    built = {} if computed else read_manifest(Path(ref.path))  # a reused artifact's build: versions, code
    sl = stage_slice(flow_run.cfg, stage, keys)
    # a fanned stage waits for another flow's build of its key in this process (build_sharded holds the lock)
    waited = waited_seconds(state, result, flow_run.store.take_waited(stage, key) if run["fanned"] else 0.0)
    resumed = run["resumed"] if run["fanned"] else result.get("resumed", "")
    return stage_record(name, key, computed, sl, keys, flow_run.previous, built=built, installed=flow_run.installed,
                        code=build_code(), seconds=seconds, size=flow_run.store.size_bytes(stage, key), path=ref.path,
                        note=run["note"], waited=waited, resumed=resumed)


def _said_after(flow_run: _FlowRun, stage: str, ref: ArtifactRef, result: dict[str, Any]) -> None:
    """What follows a stage run's line: the testbed's accuracy per level, the ingested table's check (a run that
    could not score stops here, not after extraction, the SAE and encoding), the evaluation's comparison table.
    in: the flow run, stage, its artifact, its task's result."""
    if stage == "testbed":
        _tell(flow_run, format_levels(result.get("metrics", {})))
    if stage == "ingest":  # a run that could not score stops here, not after extraction, the SAE and encoding
        check_ingested(flow_run.cfg, ref, flow_run.until)
    if stage == "evaluate":
        _tell(flow_run, ref.file("comparison.txt").read_text(encoding="utf-8"))


def _finish(flow_run: _FlowRun, run: dict[str, Any]) -> None:
    """Wait for a submitted stage run, record it (run record, terminal, MLflow) (:func:`_stage_run_record`), then say
    what follows it (:func:`_said_after`). in: the flow run, what _submit returned."""
    stage, name = run["stage"], run["name"]
    flow_run.active = name
    future = run["future"]
    wait_awake(future)
    state = finished_state(future)
    result = state.result()
    rec = _stage_run_record(flow_run, run, state, result)
    record = flow_run.record
    record.stages[name] = rec
    record.extra.get(IN_PROGRESS, {}).pop(name, None)
    if stage == "ingest":  # the rows its readers key on are known now (their content: saerl.pipeline
        # .ingest_rows_key), where the start's plan had the data file's hash: gc keeps what the run will reuse
        record.extra[PLANNED] = planned_run_keys(flow_run.cfg, flow_run.until)
    save_run(flow_run.root, record)  # after every stage: `saerl gc` then sees what a running flow uses
    _tell(flow_run, stage_line(rec, flow_run.label))
    log_stage_run(flow_run.tracker, stage, rec, result.get("metrics"), lineage_config(record.stages, name))
    _said_after(flow_run, stage, flow_run.refs[name], result)


def _run_stages(flow_run: _FlowRun) -> None:
    """Run every stage run of the plan in order (saerl.pipeline.stage_runs), after saving the record with the run's
    planned keys (`saerl gc` keeps what the run will build or reuse; one under way ends first) and announcing the run.
    Training runs (arm x seed) read nothing of each other, nor do held-out evaluations (one per policy): on Dask the
    runs of each of these stages (PARALLEL_STAGES) run at once, one per worker, and are waited for once the next
    stage comes (a stage's runs read the runs of the one before). in: the flow run."""
    parallel = PARALLEL_STAGES if flow_run.cfg.runtime.task_runner == "dask" else ()
    root, record, label = flow_run.root, flow_run.record, flow_run.label
    pending: list[dict[str, Any]] = []
    record.extra[PLANNED] = planned_run_keys(flow_run.cfg, flow_run.until)
    # before the first stage: `saerl gc` keeps what the run will build or reuse; one under way ends first
    with claim(root, lambda: say(f"waiting for a `saerl gc` of {root} to finish", label)):
        save_run(root, record)
    announce(root, record.run_id, label)
    for stage, name, ups, variant in stage_runs(flow_run.cfg, flow_run.until):
        if pending and stage != pending[-1]["stage"]:  # a stage's runs read the runs of the one before
            for run in pending:
                _finish(flow_run, run)
            pending = []
        run = _submit(flow_run, stage, name, ups, variant)
        if stage in parallel:
            pending.append(run)
        else:
            _finish(flow_run, run)
    for run in pending:
        _finish(flow_run, run)


def _record_stop(flow_run: _FlowRun, err: BaseException) -> None:
    """Say in the run record that the run failed (or was stopped), and where, before its error goes on: the record
    saved first (what follows asks servers, which may not answer) and logged to MLflow, the MLflow run ended as
    failed or killed, and, for a failure, the task runs of dead Dask workers marked Crashed. in: the flow run, the
    error that ended it."""
    record, tracker = flow_run.record, flow_run.tracker
    sig = stop_signal(err)
    if sig:
        record.extra[STOPPED] = f"{flow_run.active or 'before the first stage'}: {sig}"
    else:
        record.extra[FAILED] = mark_failed(flow_run.active, err)
    record.extra.pop(RUNNING, None)  # PLANNED stays: `saerl gc` keeps the partial builds of the latest run of
    # a config that failed or was stopped (its resume state: a training run's checkpoints)
    record.extra.pop(IN_PROGRESS, None)  # FAILED / STOPPED say where it ended
    record.extra[ENDED] = time.time()
    try:
        path = save_run(flow_run.root, record)  # first: what follows asks servers, which may not answer
        tracker.log_artifact(path)  # where and why it ended, in MLflow too
    except OSError as lost:  # a full disk leaves no room for the record: MLflow and the lost runs still
        # hear how it ended, and the stage's own error, not this one, is raised (status reads it as killed)
        log.warning("the run record of %s could not be saved (%s): `saerl status` will read it as killed",
                    record.run_id, lost)
    tracker.finish(TRACKED_KILLED if sig else TRACKED_FAILED,  # else MLflow shows it running forever
                   ended=record.extra.get(STOPPED) or record.extra.get(FAILED))
    if not sig:
        crash_lost_runs(flow_run.submitted)


def _record_end(flow_run: _FlowRun) -> Path:
    """Say in the run record that the run ended (no longer running, nothing planned or in progress) and save it.
    in: the flow run; out: the record's path."""
    record = flow_run.record
    record.extra.pop(RUNNING, None)
    record.extra.pop(PLANNED, None)
    record.extra.pop(IN_PROGRESS, None)
    record.extra[ENDED] = time.time()
    return save_run(flow_run.root, record)


@flow(name="saerl-pipeline")
def pipeline_flow(config: dict[str, Any], until: str | None = None, sweep: dict[str, Any] | None = None,
                  run_id: str | None = None, invocation: str | None = None) -> dict[str, Any]:
    """Run the pipeline for a config dict up to stage `until`; returns the run record as a dict. `sweep`, for a
    run of an ablation: {"id": the sweep id, "setting": its setting's label, or 'shared upstream', "params":
    {'sweep.<dotted key>': value} of its setting (flows.sweep.sweep_run; absent or {} for the shared run)}; its
    printed lines then start with the label, its MLflow parent run is named '<label> | <run id>' and each nested
    stage run '<label> | <stage run>', all of them tagged (saerl.sweep, saerl.setting) and given the params, and its
    run record's extra keeps the id and label ('sweep', 'setting'). `run_id`: the run's id, when the caller named
    the flow run after it (:func:`run_pipeline_flow`); None: a new one. `invocation`: the command that started it
    (credentials masked), kept in the run record and tagged; None (a sweep child, a call from Python): its equivalent
    on the run's config file. The MLflow parent run is tagged with the Prefect flow run and deployment
    (:func:`prefect_tags`), the code, library versions and machine at its start (saerl.tracking.record_tags), and
    holds the run's config as CONFIG_FILE, which `saerl run` takes to run it again. A stage run that starts
    computing is saved in the run record as in progress (saerl.status.IN_PROGRESS) and gets its nested MLflow run
    then, RUNNING; a training run's per-step metrics arrive there while it trains (its task is given the run's id:
    saerl.tracking.live_metrics), and its end fills the run in. saerl's INFO lines and warnings logged in it, by this
    process or a Dask worker's, go to its Prefect log too (flows.runlog.send_saerl_lines, send_worker_lines), and the Prefect flow runs of killed runs on the
    root are marked Crashed (:func:`crash_killed_runs`), as the Tracker ends their MLflow runs."""
    send_saerl_lines()
    cfg = build_config(config)
    check_runnable(cfg, until)  # a deployment's run fails here, not at its last stage
    start_cluster()  # a local Dask cluster that cannot start: the environment's problem, before the run's record
    flow_run = _start_run(cfg, until, sweep, run_id, invocation)
    # held until the record says how the run ended: status and gc tell a run killed before that (SIGKILL, out of
    # memory) from one still going by whether its lock is free
    with live_lock(flow_run.root, flow_run.record.run_id):
        try:
            _run_stages(flow_run)
        except BaseException as err:  # the record says the run failed (or was stopped), and where, before it goes on
            _record_stop(flow_run, err)
            raise
        path = _record_end(flow_run)
    flow_run.tracker.log_artifact(path)
    flow_run.tracker.finish()
    _tell(flow_run, format_report(flow_run.record, said_columns(flow_run.label)))
    return flow_run.record.to_json()


def named_run(flow_fn: Any, run_id: str | None = None) -> tuple[Any, str]:
    """A pipeline flow (`pipeline_flow`, possibly with options) whose flow run is named after `run_id` (None: a new
    run id), and that id, to pass as its `run_id`: Prefect shows the flow run under saerl's id, not a random name.
    in: the flow, the run id or None; out: (the flow with that name, the run id)."""
    run_id = run_id or new_run_id()
    return flow_fn.with_options(flow_run_name=run_id), run_id


def orchestration_errors() -> tuple[type[BaseException], ...]:
    """What a Prefect API that stopped answering raises in the flow engine: transport failures (refused,
    reset, timed out) and error statuses from a failing server."""
    import httpx

    return (httpx.TransportError, httpx.HTTPStatusError)


def finished_record(root: Path, config: dict[str, Any], until: str | None, run_id: str) -> RunRecord | None:
    """The run record the pipeline flow run `run_id` saved, if it holds every planned stage run of `config` under
    its planned artifact key (the flow body then finished: all artifacts of exactly this config are stored), else
    None (no record, an unreadable one, or one short of a stage). By run id: a record of the same config and keys,
    saved meanwhile by a concurrent identical run, is that run's, not proof that this one finished."""
    planned = planned_run_keys(build_config(config), until)
    path = run_path(root, run_id)
    try:
        record = read_run(path)
    except (OSError, ValueError):
        return None
    return record if {name: st.key for name, st in record.stages.items()} == planned else None


def run_pipeline_flow(flow_fn: Any, config: dict[str, Any], until: str | None = None,
                      invocation: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Call a pipeline flow (`pipeline_flow`, possibly with options) and return its run record; `invocation`: the
    command that started it (:func:`pipeline_flow`); `run_id`: the run's id, chosen by the caller (the CLI names it
    when the run fails), None: a new one. The flow run is named after the run's id (:func:`named_run`). Prefect 3 runs
    task runs on the client, so when the Prefect API dies mid-run every stage still finishes and stores its
    artifact; only reporting the flow run's final state fails. Then, if the record holds every planned stage
    run, warn (the flow run's record in Prefect is incomplete) and return it; any other failure is raised."""
    root = Path(build_config(config).runtime.artifact_root).resolve()
    named, run_id = named_run(flow_fn, run_id)
    try:
        return named(config=config, until=until, run_id=run_id, invocation=invocation)
    except orchestration_errors() as err:
        record = finished_record(root, config, until, run_id)
        if record is None:
            raise
        dropped = drop_pending_events()
        log.warning("the Prefect API stopped answering during the run (%s: %s). Every stage run finished and its "
                    "artifact is stored (run record %s); Prefect's view of this flow run is incomplete (no final "
                    "state, task-run events after the outage are lost: %d queued events dropped). Rerun to see it "
                    "there: all cache hits.", type(err).__name__, err, run_path(root, record.run_id), dropped)
        return record.to_json()


def drop_pending_events() -> int:
    """Empty the queues of this process's Prefect event workers and return how many events were dropped.

    Called once the Prefect API is known dead: each queued event would otherwise retry its websocket 11 times
    (about 7 s) when the process exits, so a run of a few dozen task runs hung for a minute after it finished.
    The events are lost either way. Reads Prefect's service registry, which is private: a Prefect without it
    drops nothing and the process only exits slowly, as before."""
    from prefect.events.worker import EventsWorker

    dropped = 0
    for worker in list(getattr(EventsWorker, "_instances", {}).values()):
        pending = getattr(worker, "_queue", None)
        if not isinstance(worker, EventsWorker) or not isinstance(pending, queue.Queue):
            continue
        release = getattr(worker, "_on_item_dropped", None)  # frees the event's saved context
        while True:
            try:
                item = pending.get_nowait()
            except queue.Empty:
                break
            pending.task_done()  # taken off the queue: its count must fall, or Prefect's queue.join() never returns
            if item is None:  # the worker's stop signal: put it back so the worker still ends
                pending.put_nowait(None)
                break
            if release is not None:
                release(item)
            dropped += 1
    return dropped


ALLOW_CODE_ENV = "SAERL_DEPLOYMENT_ALLOW_CODE"  # set to 1 on a worker to accept deployment parameters that run code
# or point the run at other servers


def refuse_untrusted(cfg_file: PipelineConfig, configs: list[PipelineConfig]) -> None:
    """Refuse deployment parameters (overrides, an ablation grid's settings) that change what outside code a run
    executes, or point it at a server of their choosing: anyone who can reach the Prefect server can start a
    deployment with any parameters. A hub repo's modelling code (model.trust_remote_code), hub kernels or a `pkg:`
    module would run on the workers; a Dask scheduler of theirs (runtime.dask_address) would trade pickles with
    them, which runs code both ways; a tracking server of theirs (tracking.uri) would receive the run's config and
    metrics. A run config (the overridden one, each sweep child) that executes outside code
    (saerl.config.runs_outside_code, on the validated values) must keep every CODE_FIELDS value of the config file
    on the worker, whose settings are its owner's, and one naming another server (saerl.config.names_other_server)
    must name the config file's; the worker opts out of both checks with SAERL_DEPLOYMENT_ALLOW_CODE=1.
    in: the config file as loaded, the configs the parameters make; raises ValueError naming the fields."""
    if os.environ.get(ALLOW_CODE_ENV) == "1":
        return
    before = flatten(cfg_file)
    for cfg in configs:
        after = flatten(cfg)
        moved = [f"{f}={redact(after[f])}" for f in ADDRESS_FIELDS
                 if after[f] != before[f] and names_other_server(f, after[f])]
        if moved:
            raise ValueError(f"deployment parameters point the run at another server ({', '.join(moved)}; the config "
                             "file names another or none): a deployment accepts them from anyone who can reach the "
                             "Prefect server, and a Dask scheduler runs code on the worker, a tracking server receives "
                             "the run's config and metrics. Put the setting in the config file on the worker, or set "
                             f"{ALLOW_CODE_ENV}=1 in the worker's environment")
        if not any(runs_outside_code(f, after[f]) for f in CODE_FIELDS):
            continue
        changed = [f"{f}={after[f]}" for f in CODE_FIELDS if after[f] != before[f]]
        if changed:
            raise ValueError(f"deployment parameters change what outside code the run executes ({', '.join(changed)}, "
                             "where the run executes code from outside saerl): a deployment accepts them from anyone "
                             "who can reach the Prefect server. Put the setting in the config file on the worker, or "
                             f"set {ALLOW_CODE_ENV}=1 in the worker's environment")


CONFIG_DIRS_ENV = "SAERL_DEPLOYMENT_CONFIGS"  # folders (os.pathsep) a worker reads deployment configs from, beyond
# the flow run's working directory (SAERL_HOME, prefect.yaml's pull step) and the configs saerl ships


def refuse_config_path(config_path: str) -> None:
    """Refuse a deployment's config_path outside the folders the worker's owner chose: the flow run's working
    directory (SAERL_HOME), the configs saerl ships, and CONFIG_DIRS_ENV's folders. The config file is what
    :func:`refuse_untrusted` trusts, so a file anyone can write (/tmp/x.yaml) naming a Dask scheduler or a `pkg:`
    model of theirs ran their code on the worker. SAERL_DEPLOYMENT_ALLOW_CODE=1 allows any path. in: the parameter;
    raises ValueError naming the folders and the fix."""
    if os.environ.get(ALLOW_CODE_ENV) == "1":
        return
    from saerl.config import SHIPPED_CONFIGS

    extra = [Path(d).expanduser() for d in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if d]
    allowed = [Path.cwd(), SHIPPED_CONFIGS, *extra]
    path = Path(config_path).expanduser().resolve()
    if not any(path.is_relative_to(folder.resolve()) for folder in allowed):
        raise ValueError(f"deployment parameter config_path={config_path} lies outside the folders this worker reads "
                         f"configs from ({', '.join(str(f) for f in allowed)}): a deployment accepts it from anyone "
                         "who can reach the Prefect server, and the config file is what the run trusts. Put the file "
                         f"in one of them, add its folder to {CONFIG_DIRS_ENV} in the worker's environment, or set "
                         f"{ALLOW_CODE_ENV}=1 there")


def started_by_worker() -> bool:
    """Was this process started by a Prefect worker (or a `flow.serve` runner) to run the flow run it is running,
    and is this its main thread? They pass the process the flow run's id (FLOW_RUN_ENV); a flow called in-process
    (`saerl run`, `saerl ablate`, a test, a notebook) runs with no such variable, or another flow run's id. out: bool."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    return (run is not None and os.environ.get(FLOW_RUN_ENV) == str(run.id)
            and threading.current_thread() is threading.main_thread())


def worker_lost(signum: int, frame: Any) -> None:
    """WORKER_LOST's handler: the worker that started this process has died, and with it the reader of the process's
    output. Point stdout and stderr at /dev/null (a write to the dead worker's pipe fails, and rich's console, which
    Prefect logs through, turns that into SystemExit(1) in the middle of Prefect's crash handling: the run ended
    'FAILED ... SystemExit: 1', its flow runs left Running in Prefect, once its stage had finished), say why in the
    flow run's log (Prefect's API), and stop the run as a cancel does: SIGTERM, which Prefect's flow engine raises in
    the flow (the run record says stopped, MLflow KILLED, Prefect Crashed) and, once the flow runs have ended, hands
    back to its default action, ending the process at once (a stage's thread is not waited for). in: the signal's
    number and frame (unused). The kernel sends the signal again as each thread of the dying worker ends: only the
    first is acted on (a second stop, raised while the first one saved the run's record, cost the record)."""
    if WORKER_GONE.is_set() or os.getppid() == STARTED_BY:  # acted on already; or the thread that started this
        return  # process ended, not the worker (the kernel signals either way): its parent is still the worker
    WORKER_GONE.set()
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (1, 2):
        os.dup2(devnull, stream)
    os.close(devnull)
    try:
        get_run_logger().warning("the Prefect worker that started this flow run's process (pid %d) has died: "
                                 "stopping the run; the next run of it resumes what it built", STARTED_BY)
    except Exception:  # noqa: BLE001, S110 - the stop matters, not its log line
        pass
    os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def stopped_with_worker() -> Iterator[None]:
    """For the block (a deployment entry point's body): when the process was started by a Prefect worker for this
    flow run (:func:`started_by_worker`) on Linux, the run stops when that worker dies, even by SIGKILL
    (:func:`worker_lost`, on the WORKER_LOST the kernel then sends: saerl.distributed.die_with_parent); also when it had
    died before the block. Prefect's process worker leaves a flow run's process running when it dies: it trained on
    with no one to cancel it, then failed at its next log line. Elsewhere (a flow called in-process: `saerl run`, a
    test; not Linux) the block runs as it is; after it, neither the signal nor its handler stays."""
    if not started_by_worker():
        yield
        return
    before = signal.signal(WORKER_LOST, worker_lost)  # first: the signal may come as soon as it is asked for
    try:
        if die_with_parent(WORKER_LOST) and os.getppid() != STARTED_BY:  # the worker died before it was asked for
            worker_lost(WORKER_LOST, None)
        yield
    finally:
        die_with_parent(0)  # 0: no signal
        signal.signal(WORKER_LOST, before)


def deployment_config(config_path: str, overrides: list[str] | None) -> PipelineConfig:
    """A deployment entry point's config (pipeline_from_file, flows.sweep.ablation_from_file), its parameters checked
    before anything is read: telemetry off (saerl.privacy.telemetry_off), config_path in the folders the worker reads
    configs from (:func:`refuse_config_path`), each override's key once, as on the command line
    (saerl.overrides.refuse_rewrites); then the file with the overrides. in: the two parameters; out: the config."""
    from saerl.config import load_config
    from saerl.overrides import refuse_rewrites
    from saerl.privacy import telemetry_off

    telemetry_off()
    refuse_config_path(config_path)
    refuse_rewrites(overrides or [])
    return load_config(config_path, overrides or [])


def deployment_invocation(config_path: str, overrides: list[str] | None, until: str | None) -> str:
    """What a deployment's run records as its command (RunRecord.extra INVOCATION): the `saerl run` command line its
    parameters stand for, marked as a deployment's, URL credentials masked (it becomes a subflow's parameter, which
    Prefect keeps in clear). in: its config_path, overrides and until; out: the text."""
    return redact("(deployment) " + shlex.join(["saerl", "run", config_path, *(overrides or []),
                                                *(["--until", until] if until else [])]))


@flow(name="saerl-pipeline-from-file")
def pipeline_from_file(config_path: str = "configs/demo.yaml", overrides: list[str] | None = None,
                       until: str | None = None) -> dict[str, Any]:
    """Deployment entry point: load a YAML config (+ dotted overrides) and run the pipeline as a subflow on the
    task runner the config asks for (runtime.task_runner, runtime.workers), as `saerl run` does, quiet as
    runtime.progress says (:func:`quiet_libraries`); the subflow's run is named after the run id (:func:`named_run`).
    Parameters that run outside code or name other servers are refused (:func:`refuse_untrusted`); the run stops
    when the worker that started it dies (:func:`stopped_with_worker`)."""
    from flows.runner import task_runner
    from saerl.config import load_config
    from saerl.privacy import without_uri_credentials

    with stopped_with_worker():
        cfg = deployment_config(config_path, overrides)
        refuse_untrusted(load_config(config_path, []), [cfg])
        cfg = without_uri_credentials(cfg)  # the subflow's parameters are kept in clear by Prefect
        named, run_id = named_run(pipeline_flow.with_options(task_runner=task_runner(cfg)))
        with quiet_libraries(cfg):
            return named(config=cfg.model_dump(mode="json"), until=until, run_id=run_id,
                         invocation=deployment_invocation(config_path, overrides, until))
