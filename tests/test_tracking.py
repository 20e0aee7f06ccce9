"""saerl.tracking: parent + nested runs with params and tags; a dead server never stops the pipeline."""

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gitrepo import git_in, make_saerl_checkout
from mlflow.tracking import MlflowClient

from saerl.config import flatten, load_config
from saerl.tracking import Tracker, tracking_uri


def test_parent_and_nested_stage_runs(tmp_path):
    cfg = load_config(None, ["name=trk", "curriculum.mix_ratio=0.3"])
    t = Tracker(cfg, tmp_path, "run-1")
    t.log_stage("curriculum", "computed", "abc", "computed: first run", 1.5,
                {"curriculum.mix_ratio": 0.3}, {"kept": 10})
    t.log_metrics({"acc": 0.5}, step=3, stage="curriculum")
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    exp = client.get_experiment_by_name("trk")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "run-1")
    child = next(r for r in runs if r.info.run_name == "curriculum")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.tags["saerl.status"] == "computed" and child.data.tags["saerl.key"] == "abc"
    assert parent.data.params["curriculum.mix_ratio"] == "0.3"
    assert len(parent.data.params) == len(flatten(cfg))
    assert child.data.metrics["kept"] == 10
    assert [m.step for m in client.get_metric_history(child.info.run_id, "acc")] == [3]
    assert parent.info.status == "FINISHED"


def test_a_killed_runs_parent_left_running_is_ended_by_the_next_run(tmp_path):
    """A run killed by SIGKILL never ended its MLflow parent run (six of them RUNNING for ever in the audit's store).
    The next run's tracker ends, as KILLED, every parent still RUNNING whose saerl run died (its live lock file
    left free); one whose run is still going (lock held) and a relog's parent stay."""
    from saerl.runs import live_lock, live_path
    from saerl.tracking import RELOGGED_TAG, RUN_ID_TAG

    cfg = load_config(None, ["name=trk"])
    killed, going = Tracker(cfg, tmp_path, "r-killed"), Tracker(cfg, tmp_path, "r-going")
    relog = Tracker(cfg, tmp_path, "r-relog", tags={RELOGGED_TAG: "true"})
    for run_id in ("r-killed", "r-relog"):  # what a killed run leaves: its live file, the lock free
        live_path(tmp_path, run_id).parent.mkdir(parents=True, exist_ok=True)
        live_path(tmp_path, run_id).touch()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))

    def statuses():
        runs = client.search_runs([client.get_experiment_by_name("trk").experiment_id])
        return {r.data.tags[RUN_ID_TAG]: r.info.status for r in runs}

    with live_lock(tmp_path, "r-going"):
        assert statuses() == {"r-killed": "RUNNING", "r-going": "RUNNING", "r-relog": "RUNNING"}
        Tracker(cfg, tmp_path, "r-next").finish()
        assert statuses() == {"r-killed": "KILLED", "r-going": "RUNNING", "r-relog": "RUNNING", "r-next": "FINISHED"}
    assert killed.parent_id and going.parent_id and relog.parent_id


def test_a_failure_to_end_killed_runs_leaves_the_new_runs_tracking_on(tmp_path, monkeypatch, caplog):
    """close_dead_runs ran inside the guarded start: its failure turned tracking off after the parent run was made,
    so that parent stayed RUNNING for ever."""
    import saerl.tracking as T

    def broken(*_):
        raise RuntimeError("search failed")

    monkeypatch.setattr(T, "close_dead_runs", broken)
    cfg = load_config(None, ["name=trk"])
    t = Tracker(cfg, tmp_path, "r-1")
    assert t.enabled and "could not end the runs" in caplog.text
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("trk").experiment_id])
    assert run.info.status == "FINISHED"


def test_unreachable_server_warns_once_and_disables(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")  # an inherited value: the config's wins
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    cfg = load_config(None, ["tracking.uri=http://127.0.0.1:9", "tracking.http_retries=0", "tracking.http_timeout_s=2"])
    with caplog.at_level(logging.WARNING, logger="saerl.tracking"):
        t = Tracker(cfg, tmp_path, "run")
        t.log_stage("ingest", "computed", "k", "r", 0.1, {})
        t.finish()
    assert not t.enabled
    assert sum("continuing without tracking" in r.message for r in caplog.records) == 1
    assert (os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == ("0", "2")
    # the next run in the process reads its own config's values, not the first's
    Tracker(load_config(None, ["tracking.uri=http://127.0.0.1:9", "tracking.http_retries=1"]), tmp_path, "b").finish()
    assert (os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == ("1", "10")


def test_disabled_tracking_logs_nothing(tmp_path):
    cfg = load_config(None, ["tracking.enabled=false"])
    t = Tracker(cfg, tmp_path, "run")
    t.log_stage("ingest", "computed", "k", "r", 0.1, {})
    assert t.parent_id is None and not (tmp_path / "mlflow.db").exists()


def test_parent_run_tags_library_versions(tmp_path):
    from importlib import metadata

    from saerl.tracking import VERSION_TAG, VERSIONED_LIBRARIES

    cfg = load_config(None, ["name=versions"])
    t = Tracker(cfg, tmp_path, "run-v", tags={"extra": "yes"}, started=1_700_000_000.0)
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    parent = client.get_run(t.parent_id)
    tags = parent.data.tags
    assert {VERSION_TAG + lib for lib in VERSIONED_LIBRARIES} <= set(tags)
    assert tags[VERSION_TAG + "torch"] == metadata.version("torch")
    assert tags[VERSION_TAG + "mlflow"] == metadata.version("mlflow")
    assert "saerl.git_commit" in tags and tags["extra"] == "yes"
    assert parent.info.start_time == 1_700_000_000_000, "a re-logged run keeps its original start time"


def test_library_tags_from_given_versions_name_the_missing_ones():
    from saerl.tracking import NOT_INSTALLED, VERSION_TAG, library_tags

    tags = library_tags({"torch": "9.9"})
    assert tags[VERSION_TAG + "torch"] == "9.9" and tags[VERSION_TAG + "trl"] == NOT_INSTALLED


def test_step_points_one_per_step_plus_the_eval_curve():
    import polars as pl

    from saerl.tracking import step_points

    steps = pl.DataFrame({"step": [1, 2], "reward": [0.5, None], "note": ["a", "b"]})
    curve = pl.DataFrame({"step": [0, 2], "set": ["heldout", "heldout"], "greedy": [0.1, 0.3]})
    assert step_points(steps, curve) == [(1, {"reward": 0.5}), (2, {}), (0, {"eval/heldout/greedy": 0.1}),
                                         (2, {"eval/heldout/greedy": 0.3})]


def test_log_stage_run_logs_plots_tables_and_history(tmp_path):
    import polars as pl

    from saerl.runs import StageRecord
    from saerl.tracking import log_stage_run

    folder = tmp_path / "art"
    (folder / "plots").mkdir(parents=True)
    (folder / "plots" / "train_curves.png").write_bytes(b"\x89PNG")
    pl.DataFrame({"step": [1, 2, 3], "reward": [0.1, 0.2, 0.3]}).write_parquet(folder / "log.parquet")
    pl.DataFrame({"step": [0, 3], "set": ["h", "h"], "greedy": [0.2, 0.4]}).write_parquet(folder / "curve.parquet")
    pl.DataFrame({"position": [0], "step": [1], "id": ["p"]}).write_parquet(folder / "trained_order.parquet")
    cfg = load_config(None, ["name=stagelog"])
    t = Tracker(cfg, tmp_path, "run-s")
    rec = StageRecord(stage="train:saerl:0", key="k1", status="computed", reason="computed: first", seconds=2.0,
                      config={"train.learning_rate": 1e-5}, inputs={}, path=str(folder))
    log_stage_run(t, "train", rec, {"steps": 3})
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    rid = t.stage_runs["train:saerl:0"]
    run = client.get_run(rid)
    assert run.data.params["train.learning_rate"] == "1e-05" and run.data.metrics["steps"] == 3
    assert run.data.tags["saerl.key"] == "k1"
    assert [m.step for m in client.get_metric_history(rid, "reward")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(rid, "eval/h/greedy")] == [0, 3]
    assert {a.path for a in client.list_artifacts(rid)} >= {"plots", "trained_order.parquet", "log.parquet"}
    assert [a.path for a in client.list_artifacts(rid, "plots")] == ["plots/train_curves.png"]
    # the logged files live under the artifact root, whatever folder the run started in
    assert (tmp_path / "mlruns").is_dir() and list((tmp_path / "mlruns").rglob("train_curves.png"))
    assert client.get_experiment(t.experiment_id).artifact_location == (tmp_path / "mlruns").resolve().as_uri()


def test_an_unreadable_history_file_is_left_out_and_tracking_goes_on(tmp_path, caplog):
    """A training artifact whose curve file is broken (or was collected by `saerl gc` meanwhile): logging its
    history warns and leaves it out; it turned tracking off for the rest of the run, so every later stage was
    missing from MLflow. Now only a failing tracking store does; the next stage run is logged."""
    import polars as pl
    from mlflow.tracking import MlflowClient

    from saerl.runs import StageRecord
    from saerl.tracking import log_stage_run

    folder = tmp_path / "art"
    folder.mkdir()
    pl.DataFrame({"step": [1], "reward": [0.1]}).write_parquet(folder / "log.parquet")
    (folder / "curve.parquet").write_bytes(b"not parquet")
    t = Tracker(load_config(None, ["name=broken"]), tmp_path, "run-b")
    rec = StageRecord(stage="train:saerl:0", key="k", status="computed", reason="r", seconds=1.0, config={},
                      inputs={}, path=str(folder))
    with caplog.at_level("WARNING", logger="saerl.tracking"):
        log_stage_run(t, "train", rec, {"steps": 3.0})
    assert t.enabled and "log.parquet / curve.parquet of train:saerl:0 could not be read" in caplog.text
    (folder / "curve.parquet").unlink()  # gone altogether
    log_stage_run(t, "train", StageRecord(stage="train:vanilla:0", key="k2", status="computed", reason="r",
                                          seconds=1.0, config={}, inputs={}, path=str(folder)), {"steps": 4.0})
    assert t.enabled
    client = MlflowClient(t.uri)
    runs = {r.data.tags.get("saerl.stage_run"): r for r in client.search_runs([t.experiment_id])}
    assert runs["train:saerl:0"].data.metrics["steps"] == 3.0 and runs["train:vanilla:0"].data.metrics["steps"] == 4.0
    t.finish()


def test_metrics_are_timestamped_when_logged(tmp_path):
    """MLflow reads a metric's timestamp as when it was logged (epoch ms): stage summaries, per-step points and
    plain metrics carry the logging time, not 0 (1970 on MLflow's wall-time axis)."""
    import time

    cfg = load_config(None, ["name=stamps"])
    before = int(time.time() * 1000)
    t = Tracker(cfg, tmp_path, "run-t")
    t.log_stage("evaluate", "computed", "k", "r", 1.0, {}, {"acc": 0.5})
    t.log_metrics({"m": 1.0}, step=2, stage="evaluate")
    t.log_history([(1, {"reward": 0.1}), (2, {"reward": 0.2})], stage="evaluate")
    t.finish()
    after = int(time.time() * 1000)
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    rid = t.stage_runs["evaluate"]
    history = [m for key in ("seconds", "acc", "m", "reward") for m in client.get_metric_history(rid, key)]
    assert len(history) == 5 and all(before <= m.timestamp <= after for m in history)


def test_a_stage_metric_named_seconds_does_not_land_on_the_stage_runs_wall_time(tmp_path):
    """A stage's own metrics may hold 'seconds' (what building its artifact took: the sae stage's); a cached run
    reports the build it reuses. Logged beside the run's wall time at the same step, MLflow showed the larger of
    the two (30.7 s for a cache hit of 0.0 s): the stage's is logged as 'work_seconds'. 'build_seconds', what
    building the artifact took, is its manifest's (README: for every stage run, cached or not; it was logged only
    for the two stages whose own metrics held 'seconds')."""
    from saerl.runs import StageRecord
    from saerl.tracking import log_stage_run

    cfg = load_config(None, ["name=secs"])
    t = Tracker(cfg, tmp_path, "run-s")
    t.log_stage("sae", "cached", "k", "r", 0.0, {}, {"seconds": 30.7, "l0": 4.0})
    built = tmp_path / "curriculum" / "k"
    built.mkdir(parents=True)
    (built / "manifest.json").write_text(json.dumps({"seconds": 12.5, "metrics": {}}))
    log_stage_run(t, "curriculum", StageRecord("curriculum", "k", "cached", "r", {}, {}, seconds=0.01,
                                               path=str(built)), {"batches": 3.0})
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    rid = t.stage_runs["sae"]
    assert [m.value for m in client.get_metric_history(rid, "seconds")] == [0.0]
    assert client.get_run(rid).data.metrics["work_seconds"] == 30.7
    cur = client.get_run(t.stage_runs["curriculum"]).data.metrics
    assert cur["build_seconds"] == 12.5 and cur["seconds"] == 0.01 and cur["batches"] == 3.0


def test_a_metric_name_mlflow_refuses_is_cleaned_not_the_end_of_tracking(tmp_path):
    """A held-out set's name is the user's (eval.sets keys): 'gsm8k+math' in a metric name made MLflow refuse the
    whole batch, and tracking stopped for the rest of the run. The name is cleaned instead."""
    from saerl.tracking import metric_key

    cfg = load_config(None, ["name=names"])
    t = Tracker(cfg, tmp_path, "run-n")
    t.log_stage("evaluate", "computed", "k", "r", 1.0, {}, {"gsm8k+math_vanilla_greedy": 0.5})
    t.log_history([(3, {"eval/math (hard)/greedy": 0.25})], stage="evaluate")
    assert t.enabled
    t.finish()
    run = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path)).get_run(t.stage_runs["evaluate"])
    assert run.data.metrics["gsm8k_math_vanilla_greedy"] == 0.5 and run.data.metrics["eval/math _hard_/greedy"] == 0.25
    assert metric_key("heldout:reachable_saerl_greedy") == "heldout:reachable_saerl_greedy"


def test_a_run_that_loses_the_race_to_create_the_experiment_uses_the_winners(tmp_path, monkeypatch):
    """Runs started side by side (a sweep's children on Dask) can all find the experiment missing; the one whose
    create then fails (it exists by now) must log into it, not turn tracking off for its whole run."""
    cfg = load_config(None, ["name=race"])
    first = Tracker(cfg, tmp_path, "run-a")
    looked: list[str] = []
    real = MlflowClient.get_experiment_by_name

    def stale(self, name):  # the first look happened before the other run created the experiment
        looked.append(name)
        return None if len(looked) == 1 else real(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", stale)
    second = Tracker(cfg, tmp_path, "run-b")
    assert looked and second.enabled and second.experiment_id == first.experiment_id


def test_stage_runs_carry_their_inputs_as_tags_and_arm_and_seed_as_params(tmp_path):
    """Two training runs of one config had identical params: only the run name told the arms and seeds apart, and
    the inputs (curriculum key, ...) never reached MLflow. Each input is a tag now, arm and seed params too."""
    import polars as pl

    from saerl.runs import StageRecord
    from saerl.tracking import log_stage_run

    folder = tmp_path / "art"
    folder.mkdir()
    pl.DataFrame({"step": [1]}).write_parquet(folder / "log.parquet")
    pl.DataFrame({"step": [0], "set": ["h"], "greedy": [0.1]}).write_parquet(folder / "curve.parquet")
    cfg = load_config(None, ["name=variants"])
    t = Tracker(cfg, tmp_path, "run-v")
    config = {"train.learning_rate": 1e-5}
    for arm, seed, inputs in (("saerl", 0, {"curriculum": "c" * 20, "ingest": "i" * 20}),
                              ("vanilla", 1, {"ingest": "i" * 20})):
        log_stage_run(t, "train", StageRecord(
            stage=f"train:{arm}:{seed}", key=f"k{arm}", status="computed", reason="r", config=config,
            inputs=inputs | {"arm": arm, "seed": str(seed)}, path=str(folder)), {})
    log_stage_run(t, "evaluate", StageRecord(
        stage="evaluate", key="ke", status="computed", reason="r", config={}, path=str(tmp_path / "gone"),
        inputs={"train:saerl:0": "ks", "evalset:gsm8k+math": "h1"}), {})
    assert t.enabled, "an input name with a character MLflow refuses must not stop tracking"
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    saerl, vanilla, evaluate = (client.get_run(t.stage_runs[n]).data
                                for n in ("train:saerl:0", "train:vanilla:1", "evaluate"))
    assert saerl.params == {"train.learning_rate": "1e-05", "arm": "saerl", "seed": "0"}
    assert vanilla.params == {"train.learning_rate": "1e-05", "arm": "vanilla", "seed": "1"}
    assert saerl.tags["saerl.stage"] == "train" and saerl.tags["saerl.stage_run"] == "train:saerl:0"  # filterable
    assert saerl.tags["saerl.input.curriculum"] == "c" * 20 and saerl.tags["saerl.input.arm"] == "saerl"
    assert "saerl.input.curriculum" not in vanilla.tags and vanilla.tags["saerl.input.seed"] == "1"
    assert evaluate.tags["saerl.input.train:saerl:0"] == "ks" and evaluate.tags["saerl.input.evalset:gsm8k_math"] == "h1"
    assert "arm" not in evaluate.params and evaluate.tags["saerl.key"] == "ke"


@pytest.mark.parametrize(("uri", "expected"), [
    ("sqlite:///{tmp}/db/m.db", "{tmp}/db/mlruns"),
    ("sqlite:///{tmp}/db/m.db?timeout=20", "{tmp}/db/mlruns"),
    ("sqlite:///rel/m.db", "{cwd}/rel/mlruns"),
    ("sqlite:///:memory:", None),
    ("http://127.0.0.1:5000", None),
    ("https://mlflow.example.org", None),
    ("databricks", None),
    ("{tmp}/filestore", None),  # a file store keeps the files in its own folder (<store>/<experiment id>)
])
def test_artifact_location_is_beside_a_local_sqlite_store(tmp_path, monkeypatch, uri, expected):
    """A configured sqlite:/// URI left the location to MLflow, which put the files in ./mlruns of the current
    folder (a checkout got littered); they go beside the database, as for the default store."""
    from saerl.tracking import artifact_location

    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, [f"tracking.uri={uri.format(tmp=tmp_path)}"])
    want = None if expected is None else Path(expected.format(tmp=tmp_path, cwd=tmp_path.resolve())).resolve().as_uri()
    assert artifact_location(cfg, tmp_path / "root") == want
    assert artifact_location(load_config(None), tmp_path / "root") == (tmp_path / "root" / "mlruns").resolve().as_uri()


def test_a_configured_sqlite_store_keeps_logged_files_beside_it_not_in_the_current_folder(tmp_path, monkeypatch):
    cwd, db = tmp_path / "checkout", tmp_path / "store" / "m.db"
    cwd.mkdir()
    db.parent.mkdir()
    monkeypatch.chdir(cwd)
    cfg = load_config(None, ["name=beside", f"tracking.uri=sqlite:///{db}"])
    t = Tracker(cfg, tmp_path / "root", "run-b")
    (tmp_path / "table.txt").write_text("x")
    t.log_artifact(tmp_path / "table.txt")
    t.finish()
    assert t.enabled and list((db.parent / "mlruns").rglob("table.txt"))
    assert not (cwd / "mlruns").exists(), "nothing is written into the folder the run started in"


@pytest.fixture
def checkout(tmp_path):
    """A git work tree holding a package folder `saerl` (as a saerl checkout does), one commit."""
    return make_saerl_checkout(tmp_path)


def test_git_tags_read_the_package_checkout_whatever_the_current_folder(checkout, tmp_path, monkeypatch):
    """git ran in the current folder: 'unknown' outside the checkout, another repository's commit inside a user's
    own repository. It reads the package's checkout now, and says whether it has uncommitted changes."""
    from saerl.tracking import git_tags

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    git_in(elsewhere, "init", "-q")
    git_in(elsewhere, "commit", "-q", "--allow-empty", "-m", "other")
    monkeypatch.chdir(elsewhere)
    head = git_in(checkout, "rev-parse", "HEAD")
    assert git_tags(checkout / "saerl") == {"saerl.git_commit": head, "saerl.git_dirty": "false"}
    (checkout / "saerl" / "mod.py").write_text("x = 2\n")
    tags = git_tags(checkout / "saerl")
    assert tags["saerl.git_dirty"] == "true" and tags["saerl.git_dirty_files"] == "saerl/mod.py"
    assert len(tags["saerl.git_diff"]) == 12
    # a package folder that is not the top of the repository git finds (installed into a user's repository)
    (checkout / "site" / "saerl").mkdir(parents=True)
    assert git_tags(checkout / "site" / "saerl") == {"saerl.git_commit": "unknown", "saerl.git_dirty": "unknown"}
    outside = tmp_path / "plain" / "saerl"
    outside.mkdir(parents=True)
    assert git_tags(outside) == {"saerl.git_commit": "unknown", "saerl.git_dirty": "unknown"}


def test_the_parent_run_tags_saerls_own_commit_from_any_folder(tmp_path, monkeypatch):
    from saerl.artifacts import PACKAGE_DIR

    if shutil.which("git") is None or not (PACKAGE_DIR.parent / ".git").exists():
        pytest.skip("saerl is not run from a git checkout here")
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR.parent, capture_output=True, text=True,
                         check=False)
    if git.returncode:
        pytest.skip(f"git does not read saerl's checkout here: {git.stderr.strip()}")
    head = git.stdout.strip()
    monkeypatch.chdir(tmp_path)  # not a git repository
    cfg = load_config(None, ["name=commit"])
    t = Tracker(cfg, tmp_path, "run-c")
    t.finish()
    tags = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path)).get_run(t.parent_id).data.tags
    assert tags["saerl.git_commit"] == head and tags["saerl.git_dirty"] in ("true", "false")


def test_a_mapping_param_is_logged_with_sorted_keys(tmp_path):
    """testbed.defect_kinds was logged in the config's insertion order live and in sorted order by a relog (the run
    record is JSON with sorted keys): the same config gave two params. Both log the sorted text now."""
    from saerl.tracking import param_text

    cfg = load_config(None, ["name=mapping", "eval.sets={b: x.jsonl, a: y.jsonl}"])
    assert list(cfg.testbed.defect_kinds) != sorted(cfg.testbed.defect_kinds), "the default is not in sorted order"
    t = Tracker(cfg, tmp_path, "run-m")
    t.log_stage("testbed", "computed", "k", "r", 0.1, {"testbed.defect_kinds": dict(cfg.testbed.defect_kinds)})
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    want = str(dict(sorted(cfg.testbed.defect_kinds.items())))
    assert client.get_run(t.parent_id).data.params["testbed.defect_kinds"] == want
    assert client.get_run(t.stage_runs["testbed"]).data.params["testbed.defect_kinds"] == want
    assert client.get_run(t.parent_id).data.params["eval.sets"] == str({"a": "y.jsonl", "b": "x.jsonl"})
    assert param_text({"b": [{"d": 1, "c": 2}], "a": None}) == "{'a': None, 'b': [{'c': 2, 'd': 1}]}"
    assert param_text(0.3) == "0.3" and param_text("x" * 7000) == "x" * 6000


@pytest.mark.slow
def test_two_first_runs_on_a_new_root_both_track(tmp_path):
    """Two runs started at once on a new root both created the SQLite store: MLflow's schema migrations collided and
    left an _alembic_tmp_ table, and every later run on that root went untracked. The store is created under a lock."""
    import subprocess
    import sys

    script = ("import sys; from pathlib import Path; from saerl.config import load_config; "
              "from saerl.tracking import Tracker; t = Tracker(load_config(None, ['name=both']), Path(sys.argv[1]), "
              "sys.argv[2]); print('enabled' if t.enabled and t.parent_id else 'untracked')")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"run-{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(out.strip().endswith("enabled") for out in outs), outs
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("both").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["run-0", "run-1"]


def test_a_stage_run_is_tagged_with_the_machine_its_artifact_was_built_on(tmp_path):
    """Two runs of one config can differ by where they were built (the demo's LM rebuilt on another session's
    machine came out another model): each stage run carries its manifest's machine as 'saerl.machine.<field>'
    tags, so the comparison UI shows it; a manifest without one adds none."""
    from saerl.runs import StageRecord
    from saerl.tracking import MACHINE_TAG, log_stage_run

    cfg = load_config(None, ["name=machine"])
    t = Tracker(cfg, tmp_path, "run-m")
    for stage, manifest in (("testbed", {"seconds": 3.0, "machine": {"cpu": "AMD EPYC", "torch_cpu": "AVX512"}}),
                            ("ingest", {"seconds": 1.0})):
        built = tmp_path / stage / "k"
        built.mkdir(parents=True)
        (built / "manifest.json").write_text(json.dumps(manifest))
        log_stage_run(t, stage, StageRecord(stage, "k", "computed", "r", {}, {}, seconds=1.0, path=str(built)), {})
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    tags = client.get_run(t.stage_runs["testbed"]).data.tags
    assert tags[MACHINE_TAG + "cpu"] == "AMD EPYC" and tags[MACHINE_TAG + "torch_cpu"] == "AVX512"
    assert not any(k.startswith(MACHINE_TAG) for k in client.get_run(t.stage_runs["ingest"]).data.tags)


def test_a_sweep_childs_stage_runs_carry_its_sweep_setting_and_swept_keys(tmp_path):
    """Two 'train:saerl:0' runs of a mix_ratio sweep had the same name and params and no sweep tag: nothing told
    the settings apart below the parent. Every nested run of a sweep child now carries the sweep tags, each swept
    key as 'sweep.<dotted key>' (the label's text), and a name led by the label; a run outside a sweep is unchanged."""
    from saerl.sweep import sweep_tags, swept_params

    cfg = load_config(None, ["name=swept"])
    for mix in (0, 0.5):
        label = f"mix_ratio={mix}"
        t = Tracker(cfg, tmp_path, f"run-{mix}", label=label, common_tags=sweep_tags("S1", label),
                    common_params=swept_params({"curriculum.mix_ratio": mix}))
        t.log_stage("train:saerl:0", "computed", f"k{mix}", "r", 1.0, {"train.learning_rate": 1e-5},
                    inputs={"arm": "saerl", "seed": "0"})
        t.finish()
    plain = Tracker(cfg, tmp_path, "run-plain")
    plain.log_stage("train:saerl:0", "computed", "kp", "r", 1.0, {}, inputs={"arm": "saerl", "seed": "0"})
    plain.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    exp = [client.get_experiment_by_name("swept").experiment_id]
    both = client.search_runs(exp, "tags.saerl.sweep = 'S1' and params.arm = 'saerl'")
    assert sorted(r.info.run_name for r in both) == ["mix_ratio=0 | train:saerl:0", "mix_ratio=0.5 | train:saerl:0"]
    (zero,) = client.search_runs(exp, "params.sweep.curriculum.mix_ratio = '0' and params.arm = 'saerl'")
    assert zero.data.tags["saerl.setting"] == "mix_ratio=0" and zero.data.tags["saerl.key"] == "k0"
    parents = client.search_runs(exp, "tags.saerl.sweep = 'S1' and attributes.run_name LIKE 'mix_ratio=% | run-%'")
    assert sorted(r.info.run_name for r in parents) == ["mix_ratio=0 | run-0", "mix_ratio=0.5 | run-0.5"]
    assert all(r.data.params["sweep.curriculum.mix_ratio"] in ("0", "0.5") for r in parents)
    outside = client.get_run(plain.stage_runs["train:saerl:0"])
    assert outside.info.run_name == "train:saerl:0" and client.get_run(plain.parent_id).info.run_name == "run-plain"
    assert "saerl.sweep" not in outside.data.tags and not any(k.startswith("sweep.") for k in outside.data.params)


def test_the_evaluate_summary_metrics_are_on_the_parent_run_too(tmp_path):
    """The outcome (held-out accuracy per arm, the difference to vanilla) was only on the nested evaluate run, so
    MLflow's top-level table could not compare runs by it. The evaluate stage run's own metrics go on the parent
    too, cached or computed; other stages' and the build's seconds stay on their nested run."""
    from saerl.runs import StageRecord
    from saerl.tracking import log_stage_run

    cfg = load_config(None, ["name=outcome"])
    t = Tracker(cfg, tmp_path, "run-o")
    built = tmp_path / "evaluate" / "k"
    built.mkdir(parents=True)
    (built / "manifest.json").write_text(json.dumps({"seconds": 40.0, "metrics": {}}))
    log_stage_run(t, "curriculum", StageRecord("curriculum", "kc", "computed", "r", {}, {}, seconds=1.0,
                                               path=str(tmp_path / "gone")), {"kept": 10.0})
    log_stage_run(t, "evaluate", StageRecord("evaluate", "k", "cached", "r", {}, {}, seconds=0.0, path=str(built)),
                  {"heldout_saerl_greedy": 0.42, "heldout_saerl_greedy_delta_pts": 3.0, "gsm8k+math_base_greedy": 0.3})
    t.finish()
    parent = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path)).get_run(t.parent_id).data.metrics
    assert parent == {"heldout_saerl_greedy": 0.42, "heldout_saerl_greedy_delta_pts": 3.0,
                      "gsm8k_math_base_greedy": 0.3}


def test_step_end_times_count_back_from_the_end_over_step_and_eval_seconds():
    import polars as pl

    from saerl.tracking import step_end_times

    steps = pl.DataFrame({"step": [1, 2, 3], "step_time": [10.0, None, 5.0], "reward": [0.1, 0.2, 0.3]})
    curve = pl.DataFrame({"step": [0, 0, 2, 3], "set": ["a", "b", "a", "a"], "seconds": [1.0, 2.0, 4.0, 3.0]})
    # step 3 ended 3 s (its eval) before the end; step 2 ended 5 s (step 3) + 4 s (step 2's eval) before that; ...
    assert step_end_times(steps, curve, 1000.0) == {3: 997_000, 2: 988_000, 1: 988_000, 0: 975_000}
    assert step_end_times(steps.drop("step_time"), curve, 1000.0) == {}, "no per-step durations: no times"


def test_a_training_runs_step_points_are_logged_at_the_times_they_were_measured(tmp_path):
    """Every per-step point of a training run was logged with one timestamp (when it was logged), so MLflow's
    wall-time axis showed the whole run at one instant. Each step is placed at its time, counted back from when the
    artifact was published (its manifest's 'created') over trl's step_time and the curve's eval seconds."""
    import polars as pl

    from saerl.runs import StageRecord
    from saerl.tracking import log_stage_run

    folder = tmp_path / "train" / "k"
    folder.mkdir(parents=True)
    pl.DataFrame({"step": [1, 2], "step_time": [20.0, 30.0], "reward": [0.1, 0.2]}).write_parquet(
        folder / "log.parquet")
    pl.DataFrame({"step": [0, 2], "set": ["h", "h"], "greedy": [0.1, 0.3], "seconds": [5.0, 2.0]}).write_parquet(
        folder / "curve.parquet")
    (folder / "manifest.json").write_text(json.dumps({"created": "2026-01-02T03:04:05Z", "seconds": 60.0}))
    cfg = load_config(None, ["name=steptimes"])
    t = Tracker(cfg, tmp_path, "run-st")
    log_stage_run(t, "train", StageRecord("train:saerl:0", "k", "cached", "r", {}, {}, seconds=0.0, path=str(folder)),
                  {"steps": 2.0})
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    rid = t.stage_runs["train:saerl:0"]
    end_ms = 1_767_323_045_000  # 2026-01-02T03:04:05Z
    assert [(m.step, m.timestamp) for m in client.get_metric_history(rid, "reward")] == [
        (1, end_ms - 32_000), (2, end_ms - 2_000)]
    assert [(m.step, m.timestamp) for m in client.get_metric_history(rid, "eval/h/greedy")] == [
        (0, end_ms - 57_000), (2, end_ms - 2_000)]


def _parquet(path, **columns):
    """Write a small parquet table `path` with the given columns (creating its folder); returns the folder."""
    import polars as pl

    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(columns).write_parquet(path)
    return path.parent


def test_every_arms_order_and_the_eval_curves_are_logged_with_the_reachable_curve(tmp_path):
    """The curriculum run logged only order.parquet and vanilla_order.parquet (not the ablation arms' order files),
    the evaluate run not curves.parquet, and the in-training curve on '<set>:reachable' (only the evaluate stage
    knows the stratum) was no metric history while '<set>' was. Each training run now gets its reachable curve
    as 'eval/<set>:reachable/greedy' beside 'eval/<set>/greedy', at its steps' times; a training run without a
    nested run (a relog whose train artifact was gone) gets it on the evaluate run, named by arm and seed."""
    from saerl.runners import ARM_ORDERS, VANILLA
    from saerl.runs import StageRecord
    from saerl.tracking import log_stage_run

    root = tmp_path / "root"
    cur = root / "curriculum" / "kc"
    for name in (*ARM_ORDERS.values(), VANILLA):
        _parquet(cur / name, position=[0], id=["p"])
    train = _parquet(root / "train" / "kt" / "curve.parquet", step=[0, 2], set=["h", "h"], greedy=[0.1, 0.3],
                     seconds=[5.0, 2.0])
    _parquet(train / "log.parquet", step=[1, 2], step_time=[20.0, 30.0])
    (train / "manifest.json").write_text(json.dumps({"created": "2026-01-02T03:04:05Z"}))
    curves = {"step": [0, 2, 0, 2, 0, 2], "set": ["h", "h", "h:reachable", "h:reachable", "h:reachable", "h:reachable"],
              "greedy": [0.1, 0.3, 0.5, 0.75, 0.25, 0.5], "arm": ["saerl"] * 4 + ["order_only"] * 2,
              "seed": [0] * 6}
    evaluate = _parquet(root / "evaluate" / "ke" / "curves.parquet", **curves)
    cfg = load_config(None, ["name=arms"])
    t = Tracker(cfg, tmp_path, "run-a")
    log_stage_run(t, "curriculum", StageRecord("curriculum", "kc", "computed", "r", {}, {}, path=str(cur)), {})
    log_stage_run(t, "train", StageRecord("train:saerl:0", "kt", "computed", "r", {}, {}, path=str(train)), {})
    log_stage_run(t, "evaluate", StageRecord("evaluate", "ke", "computed", "r", {},
                                             {"train:saerl:0": "kt", "train:order_only:0": "gone"},
                                             path=str(evaluate)), {})
    assert t.enabled
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    assert {a.path for a in client.list_artifacts(t.stage_runs["curriculum"])} == {
        "order.parquet", "order_only.parquet", "filter_only.parquet", "vanilla_order.parquet"}
    assert "curves.parquet" in {a.path for a in client.list_artifacts(t.stage_runs["evaluate"])}
    rid = t.stage_runs["train:saerl:0"]
    end_ms = 1_767_323_045_000  # 2026-01-02T03:04:05Z: the train artifact's steps ended before it
    history = client.get_metric_history(rid, "eval/h:reachable/greedy")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (2, 0.75)]
    assert [m.timestamp for m in history] == [m.timestamp for m in client.get_metric_history(rid, "eval/h/greedy")]
    assert history[1].timestamp == end_ms - 2_000, "at the time its step ended, as the '<set>' curve"
    fallback = client.get_metric_history(t.stage_runs["evaluate"], "eval/h:reachable/order_only/0/greedy")
    assert [(m.step, m.value) for m in fallback] == [(0, 0.25), (2, 0.5)]
    assert not client.get_metric_history(t.stage_runs["evaluate"], "eval/h/order_only/0/greedy"), \
        "the '<set>' curve stays the training run's own"


def test_credentials_in_urls_are_masked_in_params_warnings_and_run_records(tmp_path, caplog):
    """A user:password in runtime.prefect_api_url / runtime.dask_address / tracking.uri was logged as an MLflow
    param, kept in the run record and printed in the tracking warning."""
    from saerl.privacy import redact

    cfg = load_config(None, ["name=secret", "runtime.prefect_api_url=https://ci:PREFECT_SECRET@prefect.example/api",
                             "runtime.dask_address=tls://user:DASK_PW@sched:8786"])
    t = Tracker(cfg, tmp_path, "run-s")
    t.finish()
    params = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path)).get_run(t.parent_id).data.params
    assert params["runtime.prefect_api_url"] == "https://***@prefect.example/api"
    assert params["runtime.dask_address"] == "tls://***@sched:8786"
    assert not any("SECRET" in v or "DASK_PW" in v for v in params.values())
    bad = load_config(None, ["tracking.uri=http://alice:MLFLOW_SECRET@127.0.0.1:9/", "tracking.http_retries=0",
                             "tracking.http_timeout_s=2"])
    with caplog.at_level(logging.WARNING, logger="saerl.tracking"):
        Tracker(bad, tmp_path, "run-w").finish()
    assert "http://***@127.0.0.1:9/" in caplog.text and "MLFLOW_SECRET" not in caplog.text
    assert redact("https://h/api?token=abc&page=2") == "https://h/api?token=***&page=2"
    assert redact("http://127.0.0.1:4200/api") == "http://127.0.0.1:4200/api" and redact(3) == 3
    # a password holding '/', '#', '?' or '@' (SQLAlchemy reads 'pa/ss' whole) was shown, or half of it; an Azure
    # SAS URL's sig was left in
    for url, shown in (("postgresql://bob:pa/ss@db/mlflow", "postgresql://***@db/mlflow"),
                       ("http://alice:p@ss@host/api", "http://***@host/api"), ("http://a:p#s?s@h/x", "http://***@h/x"),
                       ("https://acct.blob.core.windows.net/c?sv=2022&sig=SIG", "https://acct.blob.core.windows.net/c?sv=2022&sig=***"),
                       ("see http://a:b@h1/x and http://c:d@h2/y", "see http://***@h1/x and http://***@h2/y")):
        assert redact(url) == shown, url


def test_a_stage_run_spans_its_wall_time_and_shows_the_upstream_settings_it_depends_on(tmp_path):
    """A training run's params were its own stage's fields alone: two runs trained on curricula of other mix ratios
    looked the same in MLflow's compare view; and every nested run lasted 0 s, its metrics stamped before its start.
    Its params now hold the upstream stage runs' fields too (saerl.runs.lineage_config), and it spans its seconds."""
    import time

    from saerl.runs import StageRecord, lineage_config

    stages = {
        "score": StageRecord(stage="score", key="s", status="cached", reason="", config={"score.seed": 0},
                             inputs={"encode": "e"}),
        "curriculum": StageRecord(stage="curriculum", key="c", status="computed", reason="",
                                  config={"curriculum.mix_ratio": 0.5}, inputs={"score": "s"}),
        "train:saerl:0": StageRecord(stage="train:saerl:0", key="t", status="computed", reason="",
                                     config={"train.max_steps": 9}, inputs={"curriculum": "c", "score": "s"}),
        "train:vanilla:0": StageRecord(stage="train:vanilla:0", key="v", status="computed", reason="",
                                       config={"train.max_steps": 9}, inputs={"ingest": "i"}),
    }
    assert lineage_config(stages, "train:saerl:0") == {"curriculum.mix_ratio": 0.5, "score.seed": 0}
    assert lineage_config(stages, "train:vanilla:0") == {}  # vanilla reads no curriculum
    cfg = load_config(None, ["name=lineage"])
    t = Tracker(cfg, tmp_path, "run-l")
    before = time.time()
    t.log_stage("train:saerl:0", "computed", "t", "r", 8.5, {"train.max_steps": 9}, {"steps": 9.0},
                upstream=lineage_config(stages, "train:saerl:0"))
    t.finish()
    run = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path)).get_run(t.stage_runs["train:saerl:0"])
    assert run.data.params == {"train.max_steps": "9", "curriculum.mix_ratio": "0.5", "score.seed": "0"}
    assert run.info.end_time - run.info.start_time == 8500
    assert run.info.start_time <= int(before * 1000) - 8000


def test_a_stage_run_that_starts_computing_gets_the_upstream_settings_its_record_will_give():
    """A stage run's record comes at its end, and its nested run was made at its start with lineage_config of the
    records then, which lacked it: {} (no curriculum.mix_ratio on a training run that computed). upstream_config
    reads the lineage from the inputs and slice it starts with, and gives what its record gives later: the settings
    of every stage run upstream, through its inputs' inputs (the SAE's and extraction's, two and three hops up), not
    only its direct inputs'."""
    from saerl.runs import StageRecord, lineage_config, upstream_config

    stages = {
        "extract": StageRecord(stage="extract", key="x", status="cached", reason="", config={"extract.layer": 6},
                               inputs={"ingest": "i"}),  # ingest has no record here: none of its fields come
        "sae": StageRecord(stage="sae", key="a", status="cached", reason="", config={"sae.width": 4096},
                           inputs={"extract": "x"}),
        "score": StageRecord(stage="score", key="s", status="cached", reason="", config={"score.seed": 0},
                             inputs={"sae": "a"}),
        "curriculum": StageRecord(stage="curriculum", key="c", status="computed", reason="",
                                  config={"curriculum.mix_ratio": 0.5, "train.max_steps": 9}, inputs={"score": "s"}),
    }
    inputs, own = {"curriculum": "c", "score": "s", "arm": "saerl"}, {"train.max_steps": 9}
    assert lineage_config(stages, "train:saerl:0") == {}  # not ended: no record yet
    starting = upstream_config(stages, "train:saerl:0", inputs, own)
    assert starting == {"curriculum.mix_ratio": 0.5, "score.seed": 0, "sae.width": 4096,
                        "extract.layer": 6}  # its own slice's field left out
    ended = stages | {"train:saerl:0": StageRecord(stage="train:saerl:0", key="t", status="computed", reason="",
                                                   config=own, inputs=inputs)}
    assert lineage_config(ended, "train:saerl:0") == starting


def test_a_failed_or_stopped_runs_parent_says_where_and_why(tmp_path):
    """A failed or stopped run's MLflow parent was closed FAILED / KILLED with nothing saying where or why (the run
    record on disk said it): finish tags it (saerl.ended)."""
    from saerl.tracking import ENDED_TAG, TRACKED_KILLED

    cfg = load_config(None, ["name=ended"])
    t = Tracker(cfg, tmp_path, "run-e")
    t.finish(TRACKED_KILLED, ended="train:saerl:0: SIGINT")
    parent = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path)).get_run(t.parent_id)
    assert parent.info.status == "KILLED" and parent.data.tags[ENDED_TAG] == "train:saerl:0: SIGINT"


def test_a_copied_or_moved_root_logs_into_its_own_mlruns(tmp_path, caplog):
    """MLflow keeps an experiment's artifact location, set when saerl created it beside the root's mlflow.db: a root
    copied with `cp -a` (or moved) went on writing its runs' files into the original root's mlruns (a moved one
    re-created its old path). A tracker that finds its store's experiment pointing beside another store repoints
    the experiment and its earlier runs to its own mlruns, and says so."""
    import shutil

    from mlflow.tracking import MlflowClient

    cfg = load_config(None, ["name=moved"])
    first = tmp_path / "a"
    note = tmp_path / "note.txt"
    note.write_text("x")
    t = Tracker(cfg, first, "run-a")
    t.log_artifact(note)
    t.finish()
    copy = tmp_path / "b"
    shutil.copytree(first, copy)
    with caplog.at_level("WARNING", logger="saerl.tracking"):
        t = Tracker(cfg, copy, "run-b")
    assert t.enabled and "was moved or copied" in caplog.text
    t.log_artifact(note)
    t.finish()
    assert len(list((first / "mlruns").rglob("note.txt"))) == 1, "the original root got the copy's file"
    assert len(list((copy / "mlruns").rglob("note.txt"))) == 2
    client = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    exp = client.get_experiment_by_name("moved")
    assert exp.artifact_location == (copy / "mlruns").resolve().as_uri()
    uris = [r.info.artifact_uri for r in client.search_runs([exp.experiment_id])]
    assert len(uris) == 2 and all(u.startswith((copy / "mlruns").resolve().as_uri() + "/") for u in uris)
    original = MlflowClient(f"sqlite:///{first / 'mlflow.db'}").get_experiment_by_name("moved")
    assert original.artifact_location == (first / "mlruns").resolve().as_uri()  # the original store is untouched


def test_a_tracker_repoints_every_experiment_of_a_copied_store(tmp_path, caplog):
    """Only a run logging in an experiment the store already had repointed it (and the runs beside it): a first run
    of another config (tracking.experiment) in a copied root made its own experiment and left every other naming the
    original root's mlruns/, whose files MLflow showed (or none, the original gone), and which `saerl gc` purged. A
    tracker repoints the whole store as it starts, in one warning."""
    import shutil

    from mlflow.tracking import MlflowClient

    first, copy = tmp_path / "a", tmp_path / "b"
    for name in ("one", "two", "three"):
        Tracker(load_config(None, [f"name={name}"]), first, f"run-{name}").finish()
    shutil.copytree(first, copy)
    with caplog.at_level("WARNING", logger="saerl.tracking"):
        Tracker(load_config(None, ["name=one", "tracking.experiment=copied"]), copy, "run-b").finish()
    assert caplog.text.count("was moved or copied") == 1, caplog.text
    own = (copy / "mlruns").resolve().as_uri()
    client = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    for name in ("one", "two", "three", "copied"):
        exp = client.get_experiment_by_name(name)
        assert exp.artifact_location == own, name
        assert all(r.info.artifact_uri.startswith(own + "/") for r in client.search_runs([exp.experiment_id]))


def test_a_store_that_cannot_be_written_is_left_as_it_is(tmp_path, caplog, monkeypatch):
    """A copied root mounted read-only cannot be repointed: `saerl gc` goes on (the one line says why), nothing is
    raised. (Tests run as root, where chmod does not stop writes: the write is refused here instead.)"""
    import shutil
    import sqlite3

    import saerl.tracking as tracking

    first, copy = tmp_path / "a", tmp_path / "b"
    Tracker(load_config(None, ["name=one"]), first, "run-a").finish()
    shutil.copytree(first, copy)

    def read_only(*args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(tracking, "relocate_artifacts", read_only)
    with caplog.at_level("WARNING", logger="saerl.tracking"):
        assert tracking.repoint_root_store(copy) == 0
    assert "cannot be repointed" in caplog.text and "readonly database" in caplog.text
    monkeypatch.undo()
    assert tracking.repoint_root_store(copy) == 2  # the experiment and its run
    assert tracking.repoint_root_store(copy) == 0  # nothing left pointing elsewhere: nothing written


def test_an_experiment_at_mlflows_default_location_logs_its_new_runs_into_the_root(tmp_path, caplog):
    """A saerl older than December 3 created its experiments at MLflow's default, <working folder>/mlruns/<id>:
    every later run, and every copy of the root, went on writing files into that folder (an old checkout), without
    a word. The experiment's new runs now go to the root's mlruns, said once; its earlier runs keep their files."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    cfg = load_config(None, ["name=old"])
    root, cwd = tmp_path / "root", tmp_path / "old-checkout"
    note = tmp_path / "note.txt"
    note.write_text("x")
    t = Tracker(cfg, root, "run-a")
    t.log_artifact(note)
    t.finish()
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("old").experiment_id
    old_place = (cwd / "mlruns" / exp).as_uri()
    with sqlite3.connect(root / "mlflow.db") as con:  # as the old saerl left it: the default location
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (old_place, int(exp)))
        con.execute("UPDATE runs SET artifact_uri = ? || '/' || run_uuid || '/artifacts'", (old_place,))
    (earlier,) = [r.info.artifact_uri for r in client.search_runs([exp])]
    with caplog.at_level("WARNING", logger="saerl.tracking"):
        t = Tracker(cfg, root, "run-b")
    assert "MLflow's default" in caplog.text and "earlier runs' files stay" in caplog.text
    t.log_artifact(note)
    t.finish()
    assert not cwd.exists(), "the new run wrote outside the root"
    assert client.get_experiment(exp).artifact_location == (root / "mlruns").resolve().as_uri()
    uris = {r.info.artifact_uri for r in client.search_runs([exp])}
    assert earlier in uris and len(uris) == 2


def test_a_readable_but_odd_history_never_fails_the_run(tmp_path, caplog):
    """Reading the step times of a training log ran outside the tracking guard for a moment: a readable log with
    a null step raised out of log_stage_run and failed the flow after its stage had been built. It is guarded:
    tracking warns and stops, the run goes on."""
    import polars as pl

    from saerl.runs import StageRecord
    from saerl.tracking import log_stage_run

    folder = tmp_path / "art"
    folder.mkdir()
    pl.DataFrame({"step": [None, 2], "reward": [0.1, 0.2]}, schema_overrides={"step": pl.Int64}).write_parquet(
        folder / "log.parquet")
    pl.DataFrame({"step": [None], "set": ["h"], "greedy": [0.1], "n": [4]}, schema_overrides={"step": pl.Int64}
                 ).write_parquet(folder / "curve.parquet")
    t = Tracker(load_config(None, ["name=odd"]), tmp_path, "run-o")
    with caplog.at_level("WARNING", logger="saerl.tracking"):
        log_stage_run(t, "train", StageRecord(stage="train:saerl:0", key="k", status="computed", reason="r",
                                              seconds=1.0, config={}, inputs={}, path=str(folder)), {})
    assert not t.enabled and "continuing without tracking" in caplog.text  # the guard caught it: the run goes on
    t.finish()


SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_a_stage_runs_params_show_the_layer_and_data_file_that_ran(tmp_path):
    """A stage run's params were its key slice: extract.layer=0 on a 2-block model showed None (the key's form of the
    middle block) and data.path its suffix, '.jsonl'. They show what ran now; the key is unchanged."""
    from saerl.runs import StageRecord
    from saerl.stages import stage_key, stage_slice
    from saerl.tracking import log_stage_run

    cfg = load_config(SMOKE, ["extract.layer=0", "data.source=file", f"data.path={tmp_path / 'd.jsonl'}"])
    assert stage_slice(cfg, "extract")["extract.layer"] is None and stage_slice(cfg, "ingest")["data.path"] == ".jsonl"
    key = stage_key(cfg, "extract", {})
    t = Tracker(cfg, tmp_path, "run-p")
    for stage in ("ingest", "extract"):
        rec = StageRecord(stage=stage, key="k", status="computed", reason="computed: first", seconds=1.0,
                          config=stage_slice(cfg, stage), inputs={}, path=str(tmp_path / stage))
        log_stage_run(t, stage, rec, {}, upstream=stage_slice(cfg, "ingest") if stage == "extract" else None)
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    extract, ingest = (client.get_run(t.stage_runs[s]).data.params for s in ("extract", "ingest"))
    assert extract["extract.layer"] == "0" and ingest["data.path"] == str(tmp_path / "d.jsonl")
    assert extract["data.path"] == str(tmp_path / "d.jsonl"), "the upstream fields show what ran too"
    assert stage_key(cfg, "extract", {}) == key


def test_a_stage_run_tags_the_code_and_time_that_built_its_artifact(tmp_path):
    """A reused artifact's stage run was credited to the current run's commit alone: nothing said which code built
    it. The manifest's code, publish time and loaded hub commit are its tags now."""
    from saerl.artifacts import write_json_atomic
    from saerl.runs import StageRecord
    from saerl.tracking import log_stage_run

    folder = tmp_path / "art"
    folder.mkdir()
    write_json_atomic(folder / "manifest.json", {
        "created": "2026-12-04T19:54:19Z", "seconds": 3.0, "hub_commit": "c" * 40, "files": {},
        "git": {"commit": "a" * 40, "dirty": "true", "diff": "0123456789ab", "files": ["saerl/runners.py"]}})
    cfg = load_config(None, ["name=built"])
    t = Tracker(cfg, tmp_path, "run-b")
    rec = StageRecord(stage="extract", key="k", status="cached", reason="cached: x", seconds=0.0, config={},
                      inputs={}, path=str(folder))
    log_stage_run(t, "extract", rec, {})
    t.finish()
    tags = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path)).get_run(t.stage_runs["extract"]).data.tags
    assert tags["saerl.build.git_commit"] == "a" * 40 and tags["saerl.build.git_dirty"] == "true"
    assert tags["saerl.build.git_diff"] == "0123456789ab" and tags["saerl.build.git_dirty_files"] == "saerl/runners.py"
    assert tags["saerl.build.created"] == "2026-12-04T19:54:19Z" and tags["saerl.build.hub_commit"] == "c" * 40


def test_version_tags_cover_every_tracked_library_and_python_numpy_scipy():
    """The parent's version tags left out scikit-learn, math-verify and saerl, which manifests record, and python,
    numpy and scipy, which can move sklearn's and torch's floats too."""
    import platform
    from importlib import metadata

    from saerl.artifacts import RESULT_LIBRARIES, TRACKED_LIBRARIES
    from saerl.tracking import VERSION_TAG, library_tags

    tags = library_tags()
    assert {VERSION_TAG + n for n in (*TRACKED_LIBRARIES, *RESULT_LIBRARIES, "python", "numpy", "scipy")} <= set(tags)
    assert tags[VERSION_TAG + "python"] == platform.python_version()
    assert tags[VERSION_TAG + "numpy"] == metadata.version("numpy")
    assert library_tags({"torch": "2.0"})[VERSION_TAG + "python"] == "unknown", "an older record did not say"


def test_the_logged_config_file_loads_back_to_the_runs_config(tmp_path):
    """A parent run held no config file (only the run record JSON), and its params are Python reprs the override
    language misreads ('None' is the text None). CONFIG_FILE loads with the config loader to the run's config, and
    `saerl run config.yaml runtime.artifact_root=... tracking.uri=...` runs it again."""
    from saerl.privacy import redacted
    from saerl.report import recorded_config
    from saerl.tracking import CONFIG_FILE, config_text

    cfg = load_config(SMOKE, ["model.revision=null", "curriculum.mix_ratio=0.5", "train.seeds=[3, 1]",
                              "eval.sets={b: x.jsonl, a: y.jsonl}", "tracking.uri=https://u:pw@mlflow.example/api"])
    flat = redacted(flatten(cfg))
    path = tmp_path / CONFIG_FILE
    path.write_text(config_text(recorded_config(flat), "run-x", "curriculum"))
    assert "--until curriculum" in path.read_text() and "pw" not in path.read_text()
    assert redacted(flatten(load_config(path))) == flat
    again = load_config(path, [f"runtime.artifact_root={tmp_path / 'new'}", "tracking.uri=sqlite:///m.db"])
    assert {k: v for k, v in flatten(again).items() if k not in ("runtime.artifact_root", "tracking.uri")} == {
        k: v for k, v in flat.items() if k not in ("runtime.artifact_root", "tracking.uri")}


def _train_artifact(folder: Path, run: dict) -> Path:
    """What compute_train writes of a train_grpo result that log_stage_run reads: log.parquet, curve.parquet, a
    manifest. in: the artifact folder, the result; out: the folder."""
    import time

    import polars as pl

    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(run["log"], infer_schema_length=None).write_parquet(folder / "log.parquet")
    pl.DataFrame(run["curve"]).write_parquet(folder / "curve.parquet")
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (folder / "manifest.json").write_text(json.dumps({"created": created, "seconds": 5.0}))
    return folder


def test_a_training_runs_points_reach_mlflow_while_it_trains_and_each_step_once(tmp_path):
    """MLflow got nothing of a training run until it had finished (its nested run was made at the end, with the whole
    history at once). The nested run is made as the stage run starts computing (RUNNING); inside live_metrics each
    step's metrics and each in-training evaluation reach it as they are measured (a probe reads MLflow at each
    step's end); the stage's end fills in that same run (FINISHED, no second nested run) and logs each step once."""
    import time

    import polars as pl
    import torch
    from tiny import tiny_model, tiny_tokenizer
    from transformers import TrainerCallback

    from saerl.config import TrainConfig
    from saerl.rl import train_grpo
    from saerl.runs import StageRecord
    from saerl.tracking import live_metrics, log_stage_run

    tok = tiny_tokenizer()
    tiny_model(tok, "llama", seed=0, hidden=16).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    prompts = pl.DataFrame({"id": [f"p{i}" for i in range(8)], "prompt": [f"what is {i} + 1 ?" for i in range(8)],
                            "answer": [str(i + 1) for i in range(8)]})
    cfg = load_config(None, ["name=live"])
    t = Tracker(cfg, tmp_path, "run-live")
    before = time.time()
    rid = t.start_stage("train:saerl:0", "k", {"train.max_steps": 3}, {"arm": "saerl", "seed": "0"})
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    assert client.get_run(rid).data.tags["saerl.status"] == "computing"
    seen: dict[int, tuple[str, list[int], list[int]]] = {}

    class Probe(TrainerCallback):  # what a person polling MLflow sees at each step's end
        def on_step_end(self, args, state, control, **kw):
            seen[state.global_step] = (client.get_run(rid).info.status,
                                       [m.step for m in client.get_metric_history(rid, "reward")],
                                       [m.step for m in client.get_metric_history(rid, "eval/h/greedy")])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with live_metrics(cfg, tmp_path, rid):
            run = train_grpo(tmp_path / "policy", prompts, prompts["id"].to_list(),
                             TrainConfig(num_generations=2, max_completion_length=3, max_steps=3, eval_every=2),
                             tmp_path / "rl", prompts_per_step=2, seed=0, eval_sets={"h": prompts.head(4)},
                             progress=False, callbacks=[Probe()])
    finally:
        torch.set_num_threads(threads)
    assert seen == {1: ("RUNNING", [], [0]), 2: ("RUNNING", [1], [0, 2]), 3: ("RUNNING", [1, 2], [0, 2])}
    folder = _train_artifact(tmp_path / "train" / "k", run)
    log_stage_run(t, "train", StageRecord("train:saerl:0", "k", "computed", "computed: first run", {},
                                          {"arm": "saerl", "seed": "0"}, seconds=time.time() - before,
                                          path=str(folder)), {"steps": 3.0})
    t.finish()
    nested = client.search_runs([client.get_experiment_by_name("live").experiment_id],
                                f"tags.mlflow.parentRunId = '{t.parent_id}'")
    assert [r.info.run_id for r in nested] == [rid], "the stage's end fills in the run made at its start"
    done = nested[0]
    assert done.info.status == "FINISHED" and done.data.tags["saerl.status"] == "computed"
    assert done.data.tags["saerl.reason"] == "computed: first run" and done.data.params["arm"] == "saerl"
    assert done.info.start_time <= int(before * 1000) + 1000 and done.data.metrics["steps"] == 3.0
    log = pl.read_parquet(folder / "log.parquet")
    for name in (c for c in log.columns if c != "step"):  # every metric: each step once
        want = log.filter(pl.col(name).is_not_null())["step"].to_list()
        assert [m.step for m in client.get_metric_history(rid, name)] == want, name
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "eval/h/greedy")] == [
        (r["step"], r["greedy"]) for r in run["curve"]]


def test_the_end_of_a_live_run_logs_only_the_points_it_lacks(tmp_path):
    """A resumed training run sends live only the steps after its checkpoint (and a failed send loses some): its end
    logs the rest of its history, and none of what the run already holds a second time."""
    import polars as pl

    from saerl.runs import StageRecord
    from saerl.tracking import LiveStageRun, log_stage_run

    cfg = load_config(None, ["name=resumed"])
    t = Tracker(cfg, tmp_path, "run-r")
    rid = t.start_stage("train:saerl:0", "k", {})
    send = LiveStageRun(cfg, tmp_path, rid)
    send(2, {"reward": 0.2, "loss": 0.5})
    send(3, {"reward": 0.3})  # its loss was not sent
    folder = tmp_path / "train" / "k"
    folder.mkdir(parents=True)
    pl.DataFrame({"step": [1, 2, 3], "reward": [0.1, 0.2, 0.3], "loss": [0.4, 0.5, 0.6]}).write_parquet(
        folder / "log.parquet")
    pl.DataFrame({"step": [0], "set": ["h"], "greedy": [0.25]}).write_parquet(folder / "curve.parquet")
    log_stage_run(t, "train", StageRecord("train:saerl:0", "k", "computed", "r", {}, {}, seconds=1.0,
                                          path=str(folder)), {})
    t.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    history = {name: sorted((m.step, m.value) for m in client.get_metric_history(rid, name))
               for name in ("reward", "loss", "eval/h/greedy")}
    assert history == {"reward": [(1, 0.1), (2, 0.2), (3, 0.3)], "loss": [(1, 0.4), (2, 0.5), (3, 0.6)],
                       "eval/h/greedy": [(0, 0.25)]}


def test_a_stage_run_still_computing_ends_with_its_run_stopped_failed_or_killed(tmp_path):
    """A nested run made as its stage run started stayed RUNNING for ever when the pipeline run failed, was stopped
    or was killed. A failed or stopped run ends it with its own status (saerl.status says how); a killed run's is
    ended KILLED with its parent by the next run (close_dead_runs)."""
    from saerl.runs import live_path
    from saerl.tracking import RUN_ID_TAG

    cfg = load_config(None, ["name=ends"])
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    for status, said in (("FAILED", "failed"), ("KILLED", "stopped")):
        t = Tracker(cfg, tmp_path, f"run-{said}")
        rid = t.start_stage("train:saerl:0", "k", {})
        assert client.get_run(t.parent_id).data.tags["stage.train:saerl:0"] == "computing:k"
        t.finish(status, ended="train:saerl:0: boom")
        run = client.get_run(rid)
        assert (run.info.status, run.data.tags["saerl.status"]) == (status, said) and not t.live
    killed = Tracker(cfg, tmp_path, "run-killed")
    rid = killed.start_stage("train:saerl:0", "k", {})
    live_path(tmp_path, "run-killed").parent.mkdir(parents=True, exist_ok=True)
    live_path(tmp_path, "run-killed").touch()  # what a killed run leaves: its live file, the lock free
    Tracker(cfg, tmp_path, "run-next").finish()
    assert client.get_run(rid).info.status == "KILLED"
    parents = client.search_runs([client.get_experiment_by_name("ends").experiment_id], f"tags.`{RUN_ID_TAG}` = 'run-killed'")
    assert [p.info.status for p in parents] == ["KILLED"]


def test_live_metrics_are_a_no_op_with_tracking_off_or_no_run(tmp_path):
    """tracking.enabled=false: no nested run is made, and the stage's task sends nothing (no step sink is set)."""
    from saerl.rl import _STEP_SINK
    from saerl.tracking import LiveStageRun, live_metrics

    off = load_config(None, ["tracking.enabled=false"])
    assert Tracker(off, tmp_path, "run").start_stage("train:saerl:0", "k", {}) is None
    with live_metrics(off, tmp_path, "some-run"):
        assert _STEP_SINK.get() is None
    with live_metrics(load_config(None, []), tmp_path, None):
        assert _STEP_SINK.get() is None
    with live_metrics(load_config(None, []), tmp_path, "some-run"):
        assert isinstance(_STEP_SINK.get(), LiveStageRun)
    assert _STEP_SINK.get() is None and not (tmp_path / "mlflow.db").exists()


def test_a_live_send_that_fails_warns_once_and_the_stage_goes_on(tmp_path, caplog):
    """A tracking server that stops answering while a stage run trains costs its live points (one warning), never
    the training run."""
    from saerl.tracking import LiveStageRun

    cfg = load_config(None, ["tracking.uri=http://127.0.0.1:9", "tracking.http_retries=0", "tracking.http_timeout_s=2"])
    send = LiveStageRun(cfg, tmp_path, "0123")
    with caplog.at_level(logging.WARNING, logger="saerl.tracking"):
        send(1, {"reward": 0.1})
        send(2, {"reward": 0.2})
    assert not send.enabled
    assert sum("no more live metric points for this stage run" in r.message for r in caplog.records) == 1


def _open_files(db: Path) -> list[str]:
    """The file descriptors of this process open on `db` (its targets, '(deleted)' once the file is gone)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith(str(db)):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads this process's open files in /proc")
def test_a_run_finished_or_a_stage_sent_live_leaves_no_file_of_its_store_open(tmp_path):
    """MLflow caches an engine per SQLite store for the life of the process, its pool holding the file open: a
    long-lived process (a notebook, a deployment's worker) kept 2 descriptors per artifact root it had tracked to,
    also once the root was deleted. A finished run, a stage's live metric points and a look at a run's parents close
    theirs; the store is still usable after."""
    from saerl.rl import current_sink
    from saerl.tracking import live_metrics, release_store, sqlite_file, tracked_parents

    cfg = load_config(None, ["name=trk"])
    db = sqlite_file(tracking_uri(cfg, tmp_path))
    t = Tracker(cfg, tmp_path, "run-1")
    rid = t.start_stage("train-saerl-s0", "k", {}, {}, {})
    assert _open_files(db), "the test reads no open file: it would pass without the fix"
    t.finish()
    assert _open_files(db) == []
    with live_metrics(cfg, tmp_path, rid):
        current_sink()(1, {"reward": 0.5})  # as a training run's step hands its points on
        assert _open_files(db)
    assert _open_files(db) == []
    assert tracked_parents(cfg, tmp_path, "run-1") and _open_files(db) == []
    assert [m.value for m in MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path)).get_metric_history(
        rid, "reward")] == [0.5]
    release_store(tracking_uri(cfg, tmp_path))
    assert _open_files(db) == []
    assert release_store("http://127.0.0.1:5000") == 0  # a tracking server's URI: nothing of MLflow's is touched


def test_a_finished_run_leaves_no_artifact_repository_of_its_own_in_mlflows_cache(tmp_path, monkeypatch):
    """MLflow keeps an artifact repository per run that logged a file (a module-level cache of up to 1025, about 9 KB
    each): a long-lived process kept those of every run it had finished (20 saerl runs: 80 entries, 0.7 MB). A
    finished run drops its own parent's and nested runs' entries, not another run's; the run's files are logged; a
    cache MLflow renamed or moved leaves finish as it was (nothing dropped)."""
    from mlflow.tracking._tracking_service import utils

    from saerl import tracking

    cfg = load_config(None, ["name=trk"])
    payload = tmp_path / "note.txt"
    payload.write_text("x")
    other = Tracker(cfg, tmp_path, "other")
    other.log_artifact(payload)  # another run, still going: its entry stays
    t = Tracker(cfg, tmp_path, "run-1")
    t.log_text("a: 1\n", "config.yaml")
    t.log_stage("ingest", "computed", "k", "computed: first run", 1.0, {})
    t.log_artifact(payload, "ingest")
    mine = [t.parent_id, t.stage_runs["ingest"]]
    assert all(rid in utils._artifact_repos_cache for rid in [*mine, other.parent_id]), "nothing cached: no test"
    t.finish()
    assert not any(rid in utils._artifact_repos_cache for rid in mine)
    assert other.parent_id in utils._artifact_repos_cache
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    assert [f.path for f in client.list_artifacts(mine[1])] == ["note.txt"]
    assert tracking.forget_artifact_repos([other.parent_id]) == 1
    monkeypatch.delattr(utils, "_artifact_repos_cache")  # another MLflow: no such cache
    assert tracking.forget_artifact_repos([other.parent_id]) == 0
    other.finish()
