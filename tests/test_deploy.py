"""prefect.yaml end to end on a loopback server: create the process work pool, `prefect deploy --all` from the
checkout, trigger the pipeline deployment on the smoke config (then the ablation deployment on the same
root), let one `prefect worker start --run-once` run each, and check the flow runs COMPLETED with the stages
they were asked for on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_flow_server import alive

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in PREFECT_YAML["deployments"]}
POOL = DEPLOYMENTS["scheduled-pipeline"]["work_pool"]["name"]
CLI_TIMEOUT_S = 300  # one prefect CLI call (deploy imports every entrypoint's flow module)
RUN_TIMEOUT_S = 600  # one worker running one smoke flow run up to the curriculum


def _prefect(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the prefect CLI of this environment from the checkout, against the test session's server."""
    from flows.server import prefect_executable

    env = dict(os.environ, SAERL_HOME=str(REPO), PREFECT_CLI_PROMPT="false")
    out = subprocess.run([prefect_executable(), *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_deploy_from_prefect_yaml_and_run_the_pipeline_deployment(prefect_api, tmp_path):
    from prefect import get_client

    _prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
    _prefect("deploy", "--all")
    with get_client(sync_client=True) as client:
        names = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}
    assert {"saerl-pipeline-from-file/scheduled-pipeline", "saerl-ablation-from-file/ablation-sweep"} <= set(names)
    sweep = names["saerl-ablation-from-file/ablation-sweep"]
    assert sweep.parameters["grid"] == DEPLOYMENTS["ablation-sweep"]["parameters"]["grid"]
    assert names["saerl-pipeline-from-file/scheduled-pipeline"].schedules, "the pipeline deployment is scheduled"
    scheduled = names["saerl-pipeline-from-file/scheduled-pipeline"]
    limit, options = scheduled.global_concurrency_limit, scheduled.concurrency_options
    assert limit is not None and limit.limit == 1 and options is not None and options.collision_strategy == "ENQUEUE"

    root = tmp_path / "root"
    params = {"config_path": "configs/smoke.yaml",  # relative: read from SAERL_HOME, the pull step's directory
              "overrides": [f"runtime.artifact_root={root}", "tracking.enabled=false"], "until": "curriculum"}
    _run_with_worker("saerl-pipeline-from-file/scheduled-pipeline", params)
    (record,) = _records(root)
    assert "curriculum" in record and not any(s.startswith(("train", "evaluate")) for s in record), "until=curriculum"
    assert set(record.values()) == {"computed"}

    grid = {"curriculum.mix_ratio": [0.0, 0.5]}  # same root: only the curriculum differs from the run above
    _run_with_worker("saerl-ablation-from-file/ablation-sweep", {**params, "grid": grid})
    children = _records(root)[1:]
    assert len(children) == 2 and all(c["curriculum"] == "computed" and c["score"] == "cached" for c in children)


def _run_with_worker(deployment: str, parameters: dict) -> None:
    """Trigger a flow run of `deployment` and let one worker run it; assert it COMPLETED."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment, parameters=parameters, timeout=0)
    _prefect("worker", "start", "--pool", POOL, "--type", "process", "--run-once", "--limit", "1",
             timeout=RUN_TIMEOUT_S)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state is not None and state.is_completed(), f"{deployment} flow run ended {state}"


def _records(root: Path) -> list[dict[str, str]]:
    """{stage run: status} of every run record under an artifact root, oldest first."""
    return [{k: v["status"] for k, v in json.loads(p.read_text())["stages"].items()}
            for p in sorted((root / "runs").glob("*.json"))]


def test_the_first_pull_step_names_saerl_home_when_it_is_not_a_checkout(tmp_path, monkeypatch):
    """The pull step's guard, templated as a worker templates it (prefect.yaml's placeholders from the environment):
    a SAERL_HOME that is not a saerl checkout fails the run with a message naming SAERL_HOME and the fix, before
    set_working_directory would leave the flow run in a temporary folder; the checkout itself passes."""
    import asyncio

    from prefect.deployments.steps.utility import run_shell_script
    from prefect.utilities.templating import apply_values

    (guard,) = PREFECT_YAML["pull"][0].values()
    assert "set_working_directory" in next(iter(PREFECT_YAML["pull"][1])), "the guard runs before the directory step"
    for home, ok in ((tmp_path, False), ("", False), (REPO, True)):  # "": unset where the deployment was made
        monkeypatch.setenv("SAERL_HOME", str(home))
        inputs = apply_values(dict(guard), dict(os.environ))  # what prefect's run_step does with a worker's env
        if ok:
            asyncio.run(run_shell_script(**inputs))
            continue
        with pytest.raises(RuntimeError, match=r"SAERL_HOME=.* is not a saerl checkout.*prefect deploy --all"):
            asyncio.run(run_shell_script(**inputs))


SMOKE = REPO / "configs" / "smoke.yaml"
STAGE_STARTED_S = 300  # a worker's flow-run process importing the flows and reaching its first stage
WORKER_ALIVE_S = 15  # how long the run must go on beside a living worker (it is not stopped while that one lives)
STOP_S = 60  # a flow run's process ending once its worker is gone
POLL_S = 0.2
HANGING_ENTRY = '''"""A deployment entrypoint: saerl's pipeline_from_file, whose first stage never ends (its thread sleeps, a thread
an exit that waits for it would wait for); it writes this process's pid to STARTED when it begins."""
import os, threading, time
import flows.pipeline as fp

STARTED = {started!r}


class Future:
    state = None

    def add_done_callback(self, fn):
        pass

    def wait(self):
        pass


class Task:
    def with_options(self, **_):
        return self

    def submit(self, **_):
        threading.Thread(target=time.sleep, args=(600,)).start()
        with open(STARTED, "w") as out:
            out.write(str(os.getpid()))
        return Future()


fp.stage_task = Task()
pipeline_from_file = fp.pipeline_from_file
'''


def _deployment(client, flow_name: str, name: str, entrypoint: str, directory: Path, pool: str | None = None):
    """A deployment of `flow_name` as `prefect deploy` makes it from prefect.yaml: its code read from `directory` (a
    set_working_directory pull step); returns its id."""
    flow_id = client.create_flow_from_name(flow_name)
    return client.create_deployment(flow_id=flow_id, name=name, entrypoint=entrypoint, work_pool_name=pool,
                                    pull_steps=[{"prefect.deployments.steps.set_working_directory":
                                                 {"directory": str(directory)}}])


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_deployment_run_stops_when_its_worker_is_killed_and_names_the_deployment(prefect_api, tmp_path):
    """A worker SIGKILLed (an operator's restart, the OOM killer) left its flow run's process training on with no
    one to cancel it; it died at its next log line, writing to the dead worker's pipe, as 'FAILED ... SystemExit: 1',
    its flow runs left Running in Prefect. Through a real process worker: the run goes on while the worker lives,
    then stops at once when it is killed, its record saying stopped and why, its Prefect flow runs ended; the record
    names the deployment and the deployment's own flow run (it named the pipeline subflow's, and no deployment)."""
    import signal
    import time

    from prefect import get_client

    from flows.pipeline import PREFECT_DEPLOYMENT_TAG, PREFECT_FLOW_RUN_TAG
    from saerl.runs import PREFECT_TAGS, STOPPED, load_run

    pool, started, root = "saerl-test-worker-dies", tmp_path / "started", tmp_path / "root"
    (tmp_path / "entry.py").write_text(HANGING_ENTRY.format(started=str(started)))
    _prefect("work-pool", "create", pool, "--type", "process", "--overwrite")
    params = {"config_path": str(SMOKE), "overrides": [f"runtime.artifact_root={root}", "tracking.enabled=false"],
              "until": "ingest"}
    with get_client(sync_client=True) as client:
        deployment = _deployment(client, "saerl-pipeline-from-file", "worker-dies", "entry.py:pipeline_from_file",
                                 tmp_path, pool)
        flow_run = client.create_flow_run_from_deployment(deployment, parameters=params)
    from flows.server import prefect_executable

    env = dict(os.environ, PYTHONPATH=str(REPO), PREFECT_CLI_PROMPT="false")
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([prefect_executable(), "worker", "start", "--pool", pool, "--type", "process",
                                   "--run-once", "--limit", "1"], cwd=REPO, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    engine = None
    try:
        deadline = time.monotonic() + STAGE_STARTED_S
        while not (started.exists() and started.read_text()) and time.monotonic() < deadline:
            assert worker.poll() is None, f"the worker ended: {(tmp_path / 'worker.log').read_text()[-3000:]}"
            time.sleep(POLL_S)
        assert started.exists(), f"the flow run never began its stage: {(tmp_path / 'worker.log').read_text()[-3000:]}"
        engine = int(started.read_text())
        time.sleep(WORKER_ALIVE_S)
        assert alive(engine), "the run stopped while its worker lived"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + STOP_S
        while alive(engine) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert not alive(engine), "the flow run's process outlived its worker"
        record = load_run(root, "latest")
        assert record.extra[STOPPED] == "testbed: SIGTERM, its Prefect worker died"
        assert record.extra[PREFECT_TAGS] == {PREFECT_FLOW_RUN_TAG: str(flow_run.id),
                                              PREFECT_DEPLOYMENT_TAG: "worker-dies"}
        with get_client(sync_client=True) as client:
            runs = [client.read_flow_run(flow_run.id)]
            runs += client.read_flow_runs(flow_run_filter=_children_of(client, flow_run.id))
        assert len(runs) == 2 and all(r.state is not None and r.state.is_final() for r in runs), \
            [(r.name, r.state) for r in runs]
    finally:
        if worker.poll() is None:
            worker.kill()
        if engine is not None and alive(engine):
            os.kill(engine, signal.SIGKILL)


def _parent_death_signal() -> int:
    """The signal this process asked the kernel for when its parent dies (Linux's PR_GET_PDEATHSIG); 0: none, or
    not Linux."""
    import ctypes

    pr_get_pdeathsig = 2  # prctl's option number (linux/prctl.h)
    if sys.platform != "linux":
        return 0
    signum = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(pr_get_pdeathsig, ctypes.byref(signum))
    return signum.value


def _children_of(client, flow_run_id):
    """A filter for the subflow runs of the flow run `flow_run_id` (their parent task runs belong to it)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentTaskRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])))
    return FlowRunFilter(parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in tasks]))


def test_a_sweep_deployments_children_name_its_flow_run_and_deployment(prefect_api, tmp_path, monkeypatch):
    """Prefect 3 gives a subflow no deployment id: every run a deployment started (the entry points run the pipeline
    as a subflow, a sweep's children one level further down) had its own subflow's id as prefect.flow_run_id and no
    prefect.deployment. The ablation entry point run as a deployment's flow run, as a worker's process runs it (its
    stages computing nothing): each child's record, and so its MLflow parent run, names the deployment's flow run
    and the deployment."""
    from types import SimpleNamespace

    from prefect import get_client
    from prefect.flow_engine import run_flow

    import flows.pipeline as fp
    from flows.sweep import ablation_from_file
    from saerl.runs import PREFECT_TAGS, SETTING, read_run

    class Done:
        state = SimpleNamespace(name="Completed", result=lambda: {"computed": True, "seconds": 0.1, "metrics": {}})

        def add_done_callback(self, fn):
            fn(self)

        def wait(self):
            pass

    asked: list[int] = []  # the parent-death signal each stage saw its process ask for

    def submit(**_):
        asked.append(_parent_death_signal())
        return Done()

    monkeypatch.setattr(fp, "stage_task", SimpleNamespace(with_options=lambda **_: SimpleNamespace(submit=submit)))
    monkeypatch.setattr(fp, "check_ingested", lambda *_, **__: None)  # no ingested table to check: nothing ran
    root = tmp_path / "root"  # until curriculum: a grid of mix_ratio changes no run before it (refused)
    params = {"config_path": str(SMOKE), "overrides": [f"runtime.artifact_root={root}", "tracking.enabled=false"],
              "until": "curriculum", "grid": {"curriculum.mix_ratio": [0.0, 0.5]}}
    with get_client(sync_client=True) as client:
        deployment = _deployment(client, ablation_from_file.name, "sweep-tags", "flows/sweep.py:ablation_from_file",
                                 REPO)
        flow_run = client.create_flow_run_from_deployment(deployment, parameters=params)
    run_flow(ablation_from_file, flow_run=flow_run)
    children = [read_run(p) for p in sorted((root / "runs").glob("*.json"))]
    assert sorted(c.extra[SETTING] for c in children) == ["mix_ratio=0.0", "mix_ratio=0.5"]
    for child in children:
        assert child.extra[PREFECT_TAGS] == {fp.PREFECT_FLOW_RUN_TAG: str(flow_run.id),
                                             fp.PREFECT_DEPLOYMENT_TAG: "sweep-tags"}
    # a flow run in a process no worker started for it (this test's, `saerl run`'s) does not stop with its parent
    assert asked and set(asked) == {0}


def test_the_scheduled_deployment_runs_one_at_a_time_and_queues_the_rest():
    """The scheduled deployment had no concurrency limit: a worker that was down N nights started N late demo runs at
    once on one artifact root. prefect.yaml, read as `prefect deploy` reads it, limits it to one run at a time; runs
    that come due meanwhile wait (ENQUEUE) rather than being dropped."""
    from prefect.cli.deploy._models import PrefectYamlModel

    deployments = {d.name: d for d in PrefectYamlModel.model_validate(PREFECT_YAML).deployments}
    limit = deployments["scheduled-pipeline"].concurrency_limit
    assert limit is not None and limit.limit == 1 and limit.collision_strategy == "ENQUEUE"
