"""prefect.yaml end to end on a loopback server: create the process work pool, `prefect deploy --all` from the
checkout, trigger the pipeline deployment on the smoke config (then the ablation deployment on the same
root), let one `prefect worker start --run-once` run each, and check the flow runs COMPLETED with the stages
they were asked for on disk."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

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
