"""Extraction and encoding fanned out over a 2-worker Dask LocalCluster through prefect-dask give the same
stores, bit for bit, as the in-process run; the two runs' roots, at other paths, hold the same bytes in every
artifact both built."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from saerl.config import load_config

pytestmark = pytest.mark.slow
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _arrays(path: Path) -> dict[str, np.ndarray]:
    out = {}

    def walk(group, prefix=""):
        for name, arr in group.arrays():
            out[prefix + name] = arr[:]
        for name, sub in group.groups():
            walk(sub, prefix + name + "/")

    walk(zarr.open_group(path, mode="r"))
    return out


def _file_hashes(root: Path) -> dict[tuple[str, str], dict[str, str]]:
    """The sha256 of every file of every published artifact under `root`, as its manifest lists them.
    in: an artifact root; out: {(stage, key): {file path in the artifact: sha256}}."""
    out = {}
    for manifest in root.glob("*/*/manifest.json"):
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        out[(manifest.parent.parent.name, manifest.parent.name)] = {name: f["sha256"] for name, f in files.items()}
    return out


def test_dask_fan_out_matches_in_process(prefect_api, tmp_path, capsys, monkeypatch):
    import flows.pipeline as fp
    from flows.pipeline import pipeline_flow
    from flows.runner import task_runner

    asked = []  # an external scheduler is asked for its threads once a run, not once per fanned-out stage
    count = fp.shard_count
    monkeypatch.setattr(fp, "shard_count", lambda cfg: asked.append(1) or count(cfg))

    records = {}
    for runner in ("local", "dask"):
        cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path / runner}", f"runtime.task_runner={runner}",
                                  "runtime.workers=2", "runtime.shards_per_worker=2", "runtime.torch_threads=1",
                                  "train.seeds=[0,1]",
                                  "tracking.enabled=false"])
        flow = pipeline_flow.with_options(task_runner=task_runner(cfg))
        # on Dask the whole pipeline: the four training runs (2 arms x 2 seeds) are submitted together
        records[runner] = flow(config=cfg.model_dump(mode="json"), until="encode" if runner == "local" else None)
    dask_runs = records["dask"]["stages"]
    trains = [s for s in dask_runs if s.startswith("train:")]
    assert sorted(trains) == ["train:saerl:0", "train:saerl:1", "train:vanilla:0", "train:vanilla:1"]
    assert all(dask_runs[s]["status"] == "computed" for s in trains) and dask_runs["evaluate"]["status"] == "computed"
    heldouts = [s for s in dask_runs if s.startswith("heldout:")]  # one evaluation per policy, side by side too
    assert len(heldouts) == 6 and all(dask_runs[s]["status"] == "computed" for s in heldouts)
    out = capsys.readouterr().out
    assert "[extract] 8 chunks computed in 4 shards" in out  # 120 prompts / 16 a chunk, 2 workers x 2 shards
    assert len(asked) == 1  # extract and encode fanned out on one count
    # the build's manifest and metrics say what the shards ran: the stage task that publishes found every chunk
    # done, and recorded a build of ~0 s and no throughput
    manifest = json.loads((Path(dask_runs["extract"]["path"]) / "manifest.json").read_text())
    assert manifest["shards"]["n"] == 4 and manifest["shards"]["chunks_run"] == 8
    assert manifest["seconds"] >= manifest["shards"]["seconds"] > 0
    assert manifest["metrics"]["tokens_per_s"] > 0 and manifest["metrics"]["shard_chunks_run"] == 8
    for stage, store in (("extract", "activations.zarr"), ("encode", "codes.zarr")):
        local = _arrays(Path(records["local"]["stages"][stage]["path"]) / store)
        dask = _arrays(Path(records["dask"]["stages"][stage]["path"]) / store)
        assert local.keys() == dask.keys() and local
        for name in local:
            np.testing.assert_array_equal(local[name], dask[name], err_msg=f"{stage}:{name}")
        assert records["local"]["stages"][stage]["key"] == records["dask"]["stages"][stage]["key"]
    # two fresh roots at other paths: every artifact both hold is the same bytes, file for file (the stores named
    # the testbed policy by its absolute path in the root, the SAE's cfg.json too, and sae_report.json its seconds)
    local, dask = (_file_hashes(tmp_path / runner) for runner in ("local", "dask"))
    shared = sorted(local.keys() & dask.keys())
    assert [stage for stage, _ in shared] == ["encode", "extract", "ingest", "sae", "testbed"]
    for artifact in shared:
        assert local[artifact] == dask[artifact], (artifact, sorted(
            name for name in local[artifact].keys() | dask[artifact].keys()
            if local[artifact].get(name) != dask[artifact].get(name)))


def test_an_external_cluster_gets_a_shard_per_worker_thread():
    """Sized from runtime.workers (2 by default), an external cluster of one worker with 3 threads got 2 shards (and
    a 16-worker one 2, leaving 14 idle): the scheduler is asked for its worker threads."""
    from distributed import LocalCluster

    from flows.pipeline import shard_count

    with LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=":0") as cluster:
        cfg = load_config(SMOKE, ["runtime.task_runner=dask", f"runtime.dask_address={cluster.scheduler_address}",
                                  "runtime.shards_per_worker=2"])
        assert shard_count(cfg) == 6
    assert shard_count(load_config(SMOKE, ["runtime.workers=3", "runtime.shards_per_worker=2"])) == 6


def test_a_task_run_whose_dask_worker_died_is_marked_crashed(prefect_api):
    """A Dask worker killed under a task (KilledWorker) left its task run Running or Pending in Prefect forever, beside
    a failed flow run: the flow marks it Crashed, and leaves alone the runs that ended on their own. A stage's future
    whose worker died raises the KilledWorker that says so, not Prefect's 'UnfinishedRun: Run is in RUNNING state'. On saerl's own
    LocalCluster, whose workers and close drop distributed's close-only lines (flows.dask_runner), as a run has it."""
    import os
    import time

    import dask
    from distributed.scheduler import KilledWorker
    from prefect import flow, task
    from prefect.client.orchestration import get_client

    from flows.pipeline import LOST_RUN, crash_lost_runs, finished_state, wait_awake
    from flows.runner import task_runner

    @task
    def work(x: int) -> int:
        if x == 1:
            time.sleep(3)  # running long enough for Prefect's server to hear that it runs
            os._exit(1)  # the worker process dies under the task, as a kill -9 or the OOM killer does
        return x

    runner = task_runner(load_config(SMOKE, ["runtime.task_runner=dask", "runtime.workers=1"]))

    @flow(task_runner=runner)
    def one_dies() -> dict:
        futures = [work.submit(0), work.submit(1)]
        futures[0].wait()
        wait_awake(futures[1])  # as a stage's future is waited for (flows.pipeline._finish)
        with pytest.raises(KilledWorker, match="died while running it"):  # not UnfinishedRun: Run is in RUNNING
            finished_state(futures[1])
        assert finished_state(futures[0]).is_completed()
        with pytest.raises(KilledWorker):
            futures[1].result()
        return {"marked": crash_lost_runs(futures), "ids": [f.task_run_id for f in futures]}

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        out = one_dies()
    assert out["marked"] == 1, out
    deadline = time.time() + 30
    with get_client(sync_client=True) as client:
        while True:  # the finished run's state reaches the server through Prefect's events: wait for it
            states = [client.read_task_run(i).state for i in out["ids"]]
            if states[0] is not None and states[0].is_final() or time.time() > deadline:
                break
            time.sleep(0.5)
    assert states[0].is_completed() and states[1].is_crashed() and states[1].message == LOST_RUN


# a flow on saerl's LocalCluster that fails while a stage still runs on another worker (its progress bar drawn), as a
# run stopped by a failure, a Cancel or Ctrl-C closes its cluster under a stage; argv: the config file
HELD_S = 120  # how long the held stage would run: far past the close, which waits for it 4 s (the nanny's timeout)
FAILED_UNDER_A_STAGE = f"""import sys, time
from prefect import flow, task
from flows.runner import task_runner
from saerl.config import load_config

@task
def stage():
    from tqdm import tqdm

    tqdm(total=1, disable=True).close()
    time.sleep({HELD_S})

@task
def failing():
    time.sleep(1)
    raise RuntimeError("the stage's own error")

cfg = load_config(sys.argv[1], ["runtime.task_runner=dask", "runtime.workers=2"])

@flow(task_runner=task_runner(cfg))
def closes_under_a_stage():
    stage.submit()
    failing.submit().result()

closes_under_a_stage()
"""
CLOSE_NOISE = ("Worker process still alive after", "ended with CancelledError", "leaked semaphore")
RUN_TIMEOUT_S = 180  # the subprocess's limit: a stuck close fails the test, not CI


def test_a_run_that_closes_its_cluster_under_a_stage_says_its_error_and_no_dask_close_lines(prefect_api):
    """A Dask run that stops while a stage still runs (a failure, a Cancel, Ctrl-C) printed, after its own error,
    distributed's lines of the cluster's close: the nanny's 'Worker process still alive after 4.0 seconds, killing',
    the worker's 'Async instruction for <Task cancelled ...> ended with CancelledError', and at exit the resource
    tracker's 'There appear to be 1 leaked semaphore objects' (tqdm's lock in the killed worker). They said nothing to
    the user and read as failures; the run's own error is said as before, and they are gone."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FAILED_UNDER_A_STAGE, str(SMOKE)], capture_output=True, text=True,
                          cwd=SMOKE.parents[1], timeout=RUN_TIMEOUT_S)  # the checkout's flows, from its root
    assert done.returncode != 0 and "RuntimeError: the stage's own error" in done.stderr, done.stderr[-3000:]
    assert not [line for line in done.stderr.splitlines() if any(n in line for n in CLOSE_NOISE)], done.stderr[-3000:]


def test_a_finished_dask_run_lets_go_of_its_cluster(prefect_api):
    """Each Dask run in a long-lived process (a notebook, a service) kept its closed LocalCluster, with the
    in-process Scheduler's task history, its client and event loop: prefect-dask's runner keeps its client and cluster
    after its close, Prefect keeps the finished flow run's context naming the runner, and distributed memoizes its
    servers' bound handlers (12 runs kept 12 clusters, about 1.5 MB a small run: session 52's audit). Once a flow on
    saerl's runner (flows.runner.task_runner) ends, none of them is left."""
    import gc
    import weakref

    from prefect import flow, task
    from prefect.context import FlowRunContext

    from flows.runner import task_runner

    held: dict[str, weakref.ref] = {}

    @task
    def one() -> int:
        return 1

    @flow(task_runner=task_runner(load_config(SMOKE, ["runtime.task_runner=dask", "runtime.workers=1"])))
    def a_run() -> int:
        runner = FlowRunContext.get().task_runner
        got = one.submit().result()
        held.update(cluster=weakref.ref(runner._cluster), scheduler=weakref.ref(runner._cluster.scheduler),
                    client=weakref.ref(runner._client))
        return got

    assert a_run() == 1
    gc.collect()
    assert {name: ref() is None for name, ref in held.items()} == dict.fromkeys(held, True)


OUTSIDER_TIMEOUT_S = 5  # an outside Client's connect timeout
# another local user's process: distributed's Client at the scheduler's address, without the run's certificates
OUTSIDER = f"""import sys
from distributed import Client
try:
    with Client(sys.argv[1], timeout={OUTSIDER_TIMEOUT_S}) as client:
        print(client.run(lambda: "RAN"))
except Exception as err:
    print("refused:", type(err).__name__)
"""


def test_only_the_run_reaches_the_local_cluster_saerl_starts(prefect_api, tmp_path):
    """saerl's LocalCluster listened on plain tcp:// on loopback without authentication: any local user's Client ran
    code in its workers, as the run's user and with its environment's tokens. The flow's own tasks run on it; an
    outside Client, at the scheduler's address or at its tcp:// twin, runs nothing."""
    import os
    import subprocess
    import sys

    from prefect import flow, task

    from flows.runner import task_runner

    cfg = load_config(SMOKE, ["runtime.task_runner=dask", "runtime.workers=1"])

    @task
    def scheduler_address() -> str:
        from distributed import get_worker

        return get_worker().scheduler.address

    @flow(task_runner=task_runner(cfg))
    def probe() -> dict[str, str]:
        address = scheduler_address.submit().result()
        tcp = "tcp://" + address.split("://", 1)[1]
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # no dask config, no credentials of the run
        return {addr: subprocess.run([sys.executable, "-c", OUTSIDER, addr], capture_output=True, text=True, env=env,
                                     timeout=60).stdout for addr in dict.fromkeys([address, tcp])}

    outsiders = probe()
    assert outsiders and all(out.startswith("refused:") for out in outsiders.values()), outsiders


def test_saerl_lines_a_stage_logs_on_a_dask_worker_reach_the_flow_runs_log(prefect_api, tmp_path, capfd):
    """A stage task on a Dask worker logs in the worker's process, which the flow's log setup did not reach: its
    saerl INFO lines (an extraction's shard, ingest's summary) were in neither the flow run's Prefect log nor on the
    terminal, and its warnings only on the terminal. They now reach both, as a local run's do."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.pipeline import PREFECT_FLOW_RUN_TAG, pipeline_flow
    from flows.runner import task_runner
    from flows.server import drain_logs
    from saerl.runs import PREFECT_TAGS, load_run

    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path}", "runtime.task_runner=dask", "runtime.workers=1",
                              "runtime.torch_threads=1", "tracking.enabled=false"])
    pipeline_flow.with_options(task_runner=task_runner(cfg))(config=cfg.model_dump(mode="json"), until="ingest")
    drain_logs()
    flow_run_id = load_run(tmp_path, "latest").extra[PREFECT_TAGS][PREFECT_FLOW_RUN_TAG]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    ingest = [e for e in logs if e.name == "saerl.runners" and e.message.startswith("ingest: ")]  # logged at INFO
    assert ingest and ingest[0].task_run_id is not None, [(e.name, e.message) for e in logs]
    out, err = capfd.readouterr()
    assert ingest[0].message.splitlines()[0] in out + err, "printed on the terminal too (the worker's stderr)"


# a testbed LM of a few steps, judged on a few problems: enough for the stages up to ingest, which this test is about
TINY_TESTBED = ["testbed.n_pretrain=200", "testbed.pretrain_steps=2", "testbed.n_eval=8", "testbed.max_new_tokens=4",
                "testbed.threads=1"]


def test_a_run_goes_to_the_users_own_cluster_at_runtime_dask_address(tmp_path):
    """runtime.dask_address (README: a cluster of the user's) was never run: `saerl run` sends the stage tasks to the
    scheduler at that address (flows.runner.task_runner's DaskTaskRunner(address=...)), not to a LocalCluster of its
    own, and leaves the user's cluster running when the run ends."""
    from distributed import LocalCluster

    from flows.cli import main
    from saerl.runs import load_run

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster:
        argv = ["run", str(SMOKE), "--root", str(tmp_path), "--until", "ingest", "runtime.task_runner=dask",
                f"runtime.dask_address={cluster.scheduler_address}", "runtime.torch_threads=1",
                "tracking.enabled=false", *TINY_TESTBED]
        assert main(argv) == 0
        # the scheduler ran the run's stage tasks (prefect-dask names each after the task's function, stage_task)
        prefixes = cluster.scheduler.task_prefixes
        assert "stage_task" in prefixes, sorted(prefixes)
        ran = prefixes["stage_task"].state_counts["memory"]  # tasks that finished there, a count kept after release
        assert cluster.scheduler.status.name == "running"  # the user's cluster outlives the run
    record = load_run(tmp_path, "latest")
    assert {s: v.status for s, v in record.stages.items()} == {"testbed": "computed", "ingest": "computed"}
    assert ran >= 2, "testbed and ingest each ran as a task on the user's cluster"


def test_a_local_cluster_that_does_not_start_is_an_environment_error_naming_its_folder(prefect_api, tmp_path,
                                                                                         monkeypatch, capsys):
    """An unusable DASK_TEMPORARY_DIRECTORY (a cluster profile's scratch path this host lacks) failed the LocalCluster
    at the first stage's submit: 'run ... failed at testbed', exit status 1, about 100 lines of tracebacks and a hint
    that the same command resumes, which failed the same way. The pipeline flow now starts its cluster before any
    stage or run record, and a start that fails is one line naming the cause and where the folder comes from (the
    variable, else Dask's setting), exit status 2."""
    import dask

    from flows.cli import RESUME_HINT, main
    from flows.runner import cluster_start_problem
    from saerl.runs import RUNS_DIR

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    scratch = blocker / "dask-scratch"  # under a file: no folder can be made there
    monkeypatch.setenv("DASK_TEMPORARY_DIRECTORY", str(scratch))
    root = tmp_path / "root"
    argv = ["run", str(SMOKE), "--root", str(root), "--until", "testbed", "runtime.task_runner=dask",
            "runtime.workers=1", f"runtime.prefect_api_url={prefect_api}", "tracking.enabled=false"]
    with dask.config.set({"temporary-directory": str(scratch)}):  # Dask read the variable when first imported
        assert main(argv) == 2
        monkeypatch.delenv("DASK_TEMPORARY_DIRECTORY")  # the folder from a Dask config file instead
        failed = RuntimeError("Cluster failed to start")
        failed.__cause__ = NotADirectoryError(20, "Not a directory", str(scratch))
        assert f"Dask's temporary-directory setting ({scratch}" in cluster_start_problem(failed)
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("saerl")]
    assert len(said) == 1 and said[0].startswith("saerl: error: the local Dask cluster (runtime.task_runner=dask) "
                                                 "did not start: NotADirectoryError"), err
    assert f"DASK_TEMPORARY_DIRECTORY={scratch}" in said[0] and RESUME_HINT not in err
    assert not (root / RUNS_DIR).exists(), "nothing ran: no run record"
