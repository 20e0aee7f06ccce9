"""The ablation sweep flow: one parent flow run, one pipeline subflow run per setting of a config grid.

Every child reuses, through the content-addressed artifact keys, whatever its setting does not change (for a
curriculum grid: everything up to scoring, and the arms that read no curriculum), so a sweep over N curriculum
settings pays for extraction, the SAE, encoding and scoring once.

With the local runner the children run one after another in grid order (the first computes every stage).
With `runtime.task_runner: dask` they run side by side on one Dask cluster (a LocalCluster of
`runtime.workers` processes, or the scheduler at `runtime.dask_address`), hosted by a subflow whose task
runner is that cluster: first one run of the stages every child shares (`saerl.sweep.shared_until`), then
every child at once, each as a task on the cluster that runs its pipeline subflow with its stage tasks on the
same cluster. Every process reports to the one Prefect server of the run (workers inherit `PREFECT_API_URL`).

The flow ends with one table: setting x arm, greedy held-out accuracy, difference to vanilla,
steps-to-target, and what each child (and the shared run) computed and reused, kept under
`<root>/sweeps/<sweep id>/` (sweep.parquet, sweep.txt). Every run of a sweep carries the sweep id and its
setting's label (the shared run: 'shared upstream'): in its printed lines, with the local runner its log lines on
stderr too (saerl.terminal.labelled_logs; a Dask worker prints its lines through Prefect's console handler, without
the label), its MLflow runs' names and tags (the parent's and every nested stage run's, which also carry each
swept key as a param 'sweep.<dotted key>'), and its run record (flows.pipeline.pipeline_flow's `sweep`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.cancel import FlowRunCancelled
from flows.pipeline import (
    deployment_config,
    pipeline_flow,
    quiet_libraries,
    refuse_untrusted,
    said_columns,
    say,
    set_task_run_states,
    stopped_with_worker,
    wait_awake,
)
from flows.runner import start_cluster, task_runner
from saerl.config import PipelineConfig, build_config
from saerl.preflight import check_runnable
from saerl.runs import new_run_id
from saerl.sweep import (
    PARAM_GRID,
    SHARED_LABEL,
    Grid,
    format_sweep,
    parse_grid,
    plan_sweep,
    setting_label,
    shared_until,
    sweep_table,
    swept_params,
    write_sweep,
)
from saerl.terminal import labelled_logs
from saerl.tracking import log_sweep


def literal(name: str) -> str:
    """A flow or task run name as given: Prefect formats run names with the run's parameters, so braces double."""
    return name.replace("{", "{{").replace("}", "}}")


def run_name(cfg: PipelineConfig, label: str) -> str:
    """A flow run name '<config name> | <label>'."""
    return literal(f"{cfg.name} | {label}")


def child_run_name(cfg: PipelineConfig, setting: Mapping[str, Any]) -> str:
    """The flow run name of one child: '<config name> | mix_ratio=0.1 ordering=random'."""
    return run_name(cfg, setting_label(dict(setting)))


def sweep_run(sweep_id: str, label: str, setting: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a run of a sweep is told about it (pipeline_flow's `sweep`): {"id": sweep id, "setting": label,
    "params": its MLflow sweep params, :func:`saerl.sweep.swept_params` of `setting` ({} for the shared upstream
    run, which has no setting of its own)}."""
    return {"id": sweep_id, "setting": label, "params": swept_params(dict(setting or {}))}


@task(name="sweep-child", persist_result=False, cache_policy=NO_CACHE)
def child_task(config: dict[str, Any], until: str | None, name: str,
               sweep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one pipeline subflow from a Dask worker, its stage tasks on the same cluster; returns its run record.
    `sweep`: the run's sweep id and label (:func:`sweep_run`).

    The task secedes from the worker's thread pool while its subflow waits on its own stage tasks
    (`distributed.worker_client`): otherwise N children on N single-thread workers would hold every worker
    and wait forever for stage tasks that have nowhere to run. Caching is the stage tasks' business (their
    keys are the artifact keys), so this task caches and persists nothing. The subflow's runner connects with the
    worker's own security (the TLS certificates of saerl's LocalCluster, flows.runner): without it, it could not.
    A Cancel in Prefect leaves as the subflow's FlowRunCancelled, this task run set Cancelled (:func:`end_cancelled`),
    even where `worker_client`'s rejoin fails on the pool of a worker the closing cluster shut down (it turned the
    Cancel into a RuntimeError: two tracebacks, and the task run Failed)."""
    from distributed import worker_client
    from prefect_dask import DaskTaskRunner

    cancel: FlowRunCancelled | None = None
    try:
        with worker_client() as client:
            runner = DaskTaskRunner(address=client.scheduler.address, client_kwargs={"security": client.security})
            try:
                return pipeline_flow.with_options(flow_run_name=name, task_runner=runner)(config=config, until=until,
                                                                                          sweep=sweep)
            except FlowRunCancelled as err:
                cancel = err
                raise
    except (FlowRunCancelled, RuntimeError):  # the RuntimeError: the rejoin's 'cannot schedule new futures after
        if cancel is None:  # shutdown', raised while the Cancel left
            raise
    end_cancelled(cancel)
    raise cancel


def end_cancelled(cancel: FlowRunCancelled) -> None:
    """Set the task run this runs in Cancelled in Prefect, with the Cancel's message: Prefect's task engine proposes
    no state for an Abort such as FlowRunCancelled, so the run stayed Running. The engine's own copy of the run
    takes the state too (prefect 3.9: TaskRunContext.task_run is the engine's), so its last line says 'Finished in
    state Cancelled', not 'Running'. Best effort (flows.pipeline.set_task_run_states): an API that does not answer
    costs a warning. in: the Cancel leaving the task; out: nothing."""
    from prefect.context import TaskRunContext
    from prefect.states import Cancelled

    ctx = TaskRunContext.get()
    if ctx is None:
        return
    state = Cancelled(message=str(cancel))
    set_task_run_states([(ctx.task_run.id, state)], f"mark task run {ctx.task_run.name!r} as cancelled")
    ctx.task_run.state = state


@flow(name="saerl-ablation-dask")
def ablation_on_dask(children: list[dict[str, Any]], until: str | None = None,
                     shared: str | None = None, sweep_id: str | None = None) -> dict[str, Any]:
    """The children of an ablation side by side on the Dask cluster of this flow's task runner. `children` is
    [{"setting", "config" (raw dict), "name" (its flow run name)}]; when `shared` names a stage, the first
    child's pipeline up to it runs first, alone (the stages every child shares: computed once, then cache hits
    for every child), labelled 'shared upstream'. `sweep_id`: the sweep every run is labelled with (None: a new
    one). Returns {"shared": its run record or None, "runs": [run record per child, in order]}."""
    sweep_id = sweep_id or new_run_id()
    record = None
    if shared is not None:
        first = children[0]["config"]
        say(f"== {SHARED_LABEL}: every stage up to {shared}, once")
        upstream = child_task.with_options(task_run_name=SHARED_LABEL).submit(
            config=first, until=shared, name=run_name(build_config(first), f"{SHARED_LABEL} (until {shared})"),
            sweep=sweep_run(sweep_id, SHARED_LABEL))
        wait_awake(upstream)
        record = upstream.result()
    say(f"== {len(children)} settings side by side on the Dask cluster (each line led by its setting)")
    futures = [child_task.with_options(task_run_name=literal(setting_label(c["setting"]))).submit(
        config=c["config"], until=until, name=c["name"],
        sweep=sweep_run(sweep_id, setting_label(c["setting"]), c["setting"]))
        for c in children]
    for future in futures:  # every child ends (or fails) before the first failure is raised
        wait_awake(future)
    return {"shared": record, "runs": [f.result() for f in futures]}


def named_ablation(config: dict[str, Any], sweep_id: str | None = None) -> tuple[Any, str]:
    """:func:`ablation_flow` with its flow run named '<config name> | ablation <sweep id>', as a pipeline run's is
    named after its run id (flows.pipeline.named_run), and that id, to pass as its `sweep_id`: the sweep printed
    and kept under sweeps/<id>/ is found in Prefect under the same id. in: the raw config dict, the sweep id (None:
    a new one); out: (the named flow, the sweep id)."""
    sweep_id = sweep_id or new_run_id()
    return ablation_flow.with_options(flow_run_name=run_name(build_config(config), f"ablation {sweep_id}")), sweep_id


@flow(name="saerl-ablation")
def ablation_flow(config: dict[str, Any], grid: dict[str, list[Any]], until: str | None = None,
                  sweep_id: str | None = None) -> dict[str, Any]:
    """Run the pipeline once per setting of `grid` ({dotted key: [values]}) applied to `config` (a raw config
    dict), each as a subflow named after its setting, up to stage `until`: one after another, or on Dask
    (`runtime.task_runner: dask`) side by side after one run of the stages they share. Then print the table and
    keep it, with the printed text, under `<root>/sweeps/<sweep id>/`. Grid errors name this flow's `grid`
    parameter (`saerl ablate` checks its --grid before it calls the flow). `sweep_id`: the sweep's id, when the
    caller named the flow run after it (:func:`named_ablation`); None: a new one. A Cancel in Prefect of this flow
    run, or of the subflow run of the setting running, stops the sweep inside that setting's stage (flows.cancel:
    both flow runs end Cancelled, no later setting starts, no table is written; the same sweep again resumes it).
    Returns {"grid", "settings": [{key: value}], "runs": [run record dicts], "shared": the shared run's record
    (Dask) or None, "table": [row dicts], "sweep_id", "files": [table path, text path]}."""
    # a child that cannot evaluate, or repeats another's runs, fails now, not after the children before it ran
    children = plan_sweep(config, grid, source=PARAM_GRID, until=until)
    start_cluster()  # a local Dask cluster that cannot start: the environment's problem, said before any child runs
    sweep_id = sweep_id or new_run_id()
    say(f"ablation {sweep_id} over {' x '.join(grid)}: {len(children)} settings")
    base = children[0][1]  # runtime is result-neutral, so never swept: every child has the same runner
    shared: dict[str, Any] | None = None
    if base.runtime.task_runner == "dask":
        upstream = shared_until([cfg for _, cfg in children], until)
        plan = [{"setting": s, "config": cfg.model_dump(mode="json"), "name": child_run_name(cfg, s)}
                for s, cfg in children]
        on_dask = ablation_on_dask.with_options(task_runner=task_runner(base),
                                                flow_run_name=run_name(base, f"ablation {sweep_id}: {len(children)} settings on Dask"))
        out = on_dask(children=plan, until=until, shared=upstream, sweep_id=sweep_id)
        shared = out["shared"]
        done = list(zip([s for s, _ in children], out["runs"], strict=True))
    else:
        done = []
        for setting, cfg in children:
            label = setting_label(setting)
            say(f"== setting {len(done) + 1}/{len(children)}: {label}")
            child = pipeline_flow.with_options(flow_run_name=child_run_name(cfg, setting), task_runner=task_runner(cfg))
            with labelled_logs(label):  # its log lines on stderr say whose they are, as its printed lines do
                done.append((setting, child(config=cfg.model_dump(mode="json"), until=until,
                                            sweep=sweep_run(sweep_id, label, setting))))
    table = sweep_table(done)  # each child's evaluate artifacts, read once for the table and its text
    text = format_sweep(done, shared, table)  # sweep.txt's: one line per row
    width = said_columns(None)
    say(text if width is None else format_sweep(done, shared, table, width))
    root = Path(base.runtime.artifact_root).resolve()
    files = write_sweep(root, sweep_id, table, text)
    log_sweep(base, root, sweep_id, grid, list(files))  # the table across settings, in MLflow beside the children
    say(f"ablation {sweep_id}: wrote {files[0]} and {files[1]}")
    return {"grid": grid, "settings": [s for s, _ in done], "runs": [r for _, r in done], "shared": shared,
            "table": table.to_dicts(), "sweep_id": sweep_id, "files": [str(f) for f in files]}


@flow(name="saerl-ablation-from-file")
def ablation_from_file(config_path: str = "configs/demo.yaml", grid: dict[str, list[Any]] | list[str] | None = None,
                       overrides: list[str] | None = None, until: str | None = None) -> dict[str, Any]:
    """Deployment entry point: load a YAML config (+ dotted overrides) and run the ablation over `grid`, given
    as {dotted key: [values]} or as command-line strings ["curriculum.mix_ratio=0,0.1,0.3", ...]. Parameters that
    run outside code or name other servers are refused (flows.pipeline.refuse_untrusted); the sweep stops when the
    worker that started it dies (flows.pipeline.stopped_with_worker)."""
    from saerl.config import load_config
    from saerl.privacy import without_uri_credentials

    with stopped_with_worker():
        cfg = deployment_config(config_path, overrides)
        parsed: Grid = parse_grid(grid or [], PARAM_GRID)  # errors name the `grid` parameter, not saerl ablate's
        # every grid error first; what the settings run is checked after the untrusted-parameter check, by
        # ablation_flow (their keys may import a `pkg:` model's module)
        children = plan_sweep(cfg.model_dump(mode="json"), parsed, overrides or [], PARAM_GRID, runs=False)
        refuse_untrusted(load_config(config_path, []), [cfg, *(child for _, child in children)])
        check_runnable(cfg, until, warn=False)  # each child's flow warns of what it ignores
        cfg = without_uri_credentials(cfg)  # the subflow's parameters are kept in clear by Prefect
        with quiet_libraries(cfg):
            config = cfg.model_dump(mode="json")
            named, sweep_id = named_ablation(config)
            return named(config=config, grid=parsed, until=until, sweep_id=sweep_id)
