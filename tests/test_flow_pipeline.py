"""The pipeline flow through Prefect on the smoke config: cache hits on rerun, exactly the readers of a
changed field recompute (and say why), corrupt artifacts are rebuilt, MLflow gets parent + stage runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from saerl.config import flatten, load_config

pytestmark = pytest.mark.slow
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
STAMP = re.compile(r"\d\d:\d\d:\d\d ")  # the time of day leading each line the flow says (flows.pipeline.say)


def _run(root, *overrides, until=None):
    from flows.pipeline import pipeline_flow

    cfg = load_config(SMOKE, [f"runtime.artifact_root={root}", *overrides])
    return pipeline_flow(config=cfg.model_dump(mode="json"), until=until)


def _status(record):
    return {s: v["status"] for s, v in record["stages"].items()}


@pytest.fixture(scope="module")
def warm_root(prefect_api, tmp_path_factory):
    """An artifact root on which the whole smoke pipeline has run once."""
    root = tmp_path_factory.mktemp("flow-root")
    first = _run(root)
    return root, first


def test_first_run_computes_every_stage(warm_root):
    _, first = warm_root
    assert list(first["stages"]) == ["testbed", "ingest", "extract", "sae", "encode", "score", "properties",
                                     "curriculum", "train:saerl:0", "train:vanilla:0", "heldout:saerl:0",
                                     "heldout:vanilla:0", "heldout:base:0", "heldout:reach_probe:1", "evaluate"]
    assert set(_status(first).values()) == {"computed"}
    # a training build's seconds (MLflow's build_seconds) are its wall time: trl's training, its evaluations, loads
    manifest = json.loads((Path(first["stages"]["train:saerl:0"]["path"]) / "manifest.json").read_text())
    assert manifest["seconds"] > manifest["metrics"]["train_seconds"] > 0


def test_evaluate_compares_the_arms_on_held_out_problems(warm_root):
    import polars as pl

    _, first = warm_root
    folder = Path(first["stages"]["evaluate"]["path"])
    samples = pl.read_parquet(folder / "eval.parquet")
    assert set(samples["arm"].unique()) == {"saerl", "vanilla", "base"}  # base: the starting policy
    assert set(samples["sample"].unique()) == {0, 1, 2}  # greedy + k=2 samples
    assert samples.group_by("arm").agg(pl.col("id").n_unique())["id"].to_list() == [20, 20, 20]
    cmp = pl.read_parquet(folder / "comparison.parquet")
    assert set(cmp["metric"]) == {"greedy", "mean_k"} and set(cmp["arm"]) == {"saerl", "vanilla"}
    reach = pl.read_parquet(folder / "reach_probe.parquet")
    assert set(reach["sample"].unique()) == {1, 2}  # the probe's sampled completions alone: no greedy pass
    n_reach = reach.filter(pl.col("sample") > 0).group_by("id").agg(pl.col("correct").any())["correct"].sum()
    stratum = cmp.filter(pl.col("set") == "heldout:reachable")
    assert stratum.height == (4 if n_reach else 0) and (not n_reach or stratum["n_problems"].max() == n_reach)
    gains = pl.read_parquet(folder / "gains.parquet").filter(pl.col("set") == "heldout")
    assert set(gains["arm"]) == {"base", "saerl", "vanilla"} and "RL gain" in (folder / "comparison.txt").read_text()
    stt = pl.read_parquet(folder / "steps_to_target.parquet")
    assert set(stt["arm"]) == {"saerl", "vanilla"}
    # GRPO generates for its batch (4 prompts) per step; a mean curve that reaches the target at step s has spent 4s
    reached = stt.filter(pl.col("mean_steps").is_not_null())
    assert reached.height and (reached["mean_prompts"] == 4 * reached["mean_steps"]).all()
    assert "greedy pass@1" in (folder / "comparison.txt").read_text()
    train = Path(first["stages"]["train:saerl:0"]["path"])
    curve = pl.read_parquet(train / "curve.parquet")
    assert curve["step"].to_list() == [0, 2, 3], "eval before training, every 2 steps, and after the last"
    per = pl.read_parquet(train / "curve_problems.parquet").group_by("step").agg(pl.col("correct").mean()).sort("step")
    assert per["correct"].to_list() == pytest.approx(curve["greedy"].to_list()), "the curve, problem by problem"
    assert (train / "policy" / "model.safetensors").exists()
    trained = pl.read_parquet(train / "trained_order.parquet")["id"].to_list()
    order = pl.read_parquet(Path(first["stages"]["curriculum"]["path"]) / "order.parquet")["id"].to_list()
    assert trained == order[: len(trained)] and len(trained) == 3 * 4, "the saerl arm trains in curriculum order"


def test_second_run_is_all_cache_hits(warm_root, capsys):
    root, _ = warm_root
    second = _run(root)
    assert set(_status(second).values()) == {"cached"}
    assert all(v["reason"].startswith("cached") for v in second["stages"].values())
    out = capsys.readouterr().out
    assert "[curriculum] cached" in out and "stage" in out
    last = json.loads(sorted((root / "runs").glob("*.json"))[-1].read_text())
    assert last["stages"]["extract"]["status"] == "cached"


def _stage_params(root, run_id):
    """{stage run: its nested MLflow run's params} of the run `run_id` on `root` (the smoke experiment)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke").experiment_id
    parent = client.search_runs([exp], f"tags.`saerl.run_id` = '{run_id}'")[0].info.run_id
    return {r.data.tags["saerl.stage_run"]: r.data.params
            for r in client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'")}


def test_a_computed_stage_runs_mlflow_params_show_its_upstream_settings_as_a_cached_ones_do(warm_root):
    """A stage run that computed had only its own config slice as params (its upstream settings were read from its
    own record, which it gets at its end): a mix-ratio sweep's training runs showed no curriculum.mix_ratio in
    MLflow's compare view, while a cached run had them all. Computed and cached runs of a stage now log the same
    params: its own slice and those of every stage run upstream of it."""
    root, first = warm_root
    computed = _stage_params(root, first["run_id"])
    cached = _stage_params(root, _run(root)["run_id"])
    train = computed["train:saerl:0"]
    assert train["curriculum.mix_ratio"] == "0.2" and "score.n_clusters" in train, sorted(train)
    assert "curriculum.mix_ratio" not in computed["train:vanilla:0"], "vanilla reads no curriculum"
    for downstream in ("heldout:saerl:0", "evaluate"):
        assert {"curriculum.mix_ratio", "score.n_clusters", "train.learning_rate"} <= set(computed[downstream])
    assert "score.n_clusters" in computed["curriculum"] and "sae.expansion" in computed["score"]
    assert sorted(computed) == sorted(cached) == sorted(first["stages"])
    for name in computed:
        assert sorted(computed[name]) == sorted(cached[name]), name


def test_prefect_results_are_plain_json_never_pickles(warm_root):
    """Every persisted Prefect result (the stage tasks' cache records and the flow's own) is plain JSON: a cache
    hit decodes no pickle and imports nothing a record names."""
    root, first = warm_root
    records = [*(root / "prefect-results").iterdir(), *(root / "prefect" / "storage").glob("*")]
    assert len(list((root / "prefect-results").iterdir())) >= len(first["stages"])
    for path in records:
        record = json.loads(path.read_text())
        assert record["metadata"]["serializer"]["type"] == "json", path
        assert record["metadata"]["serializer"].get("object_decoder") is None or path.parent.name == "storage", path
    extract = json.loads((root / "prefect-results" / f"extract-{first['stages']['extract']['key']}").read_text())
    assert json.loads(extract["result"])["path"] == first["stages"]["extract"]["path"]


def test_curriculum_change_recomputes_only_curriculum_and_downstream(warm_root):
    root, _ = warm_root
    rec = _run(root, "curriculum.mix_ratio=0.5")
    status = _status(rec)
    for downstream in ("curriculum", "train:saerl:0", "heldout:saerl:0", "evaluate"):
        assert status.pop(downstream) == "computed", downstream
    assert set(status.values()) == {"cached"}, "vanilla reads no curriculum: it must not retrain nor be evaluated again"
    assert "curriculum.mix_ratio 0.2->0.5" in rec["stages"]["curriculum"]["reason"]


def test_a_comparison_setting_recomputes_evaluate_alone(warm_root):
    """How the arms are compared (the intervals' level) is evaluate's alone: no policy is evaluated again."""
    root, _ = warm_root
    rec = _run(root, "eval.ci_level=0.9")
    status = _status(rec)
    assert status.pop("evaluate") == "computed"
    assert set(status.values()) == {"cached"}
    assert "eval.ci_level 0.95->0.9" in rec["stages"]["evaluate"]["reason"]


def test_report_setting_recomputes_only_the_property_report(warm_root):
    """A setting of the property report alone (its baselines, its held-out share) reruns the properties stage:
    the scores the curriculum and the arms read are the same, so nothing downstream of them reruns."""
    root, _ = warm_root
    rec = _run(root, "score.baselines=false", "score.heldout_fraction=0.4")
    status = _status(rec)
    assert status.pop("properties") == "computed"
    assert set(status.values()) == {"cached"}
    assert "score.baselines True->False" in rec["stages"]["properties"]["reason"]
    import polars as pl

    report = pl.read_parquet(Path(rec["stages"]["properties"]["path"]) / "property_report.parquet")
    assert "residual" not in set(report["features"])


def test_layer_change_recomputes_from_extraction(warm_root):
    root, _ = warm_root
    assert set(_status(_run(root, "extract.layer=0")).values()) == {"cached"}, "block 0 is the 2-block LM's middle"
    rec = _run(root, "extract.layer=1")
    status = _status(rec)
    assert status["testbed"] == status["ingest"] == "cached"
    assert all(status[s] == "computed" for s in ("extract", "sae", "encode", "score"))
    assert "extract.layer None->1" in rec["stages"]["extract"]["reason"]
    assert "input changed: extract" in rec["stages"]["sae"]["reason"]


def test_result_neutral_change_reruns_nothing(warm_root):
    root, _ = warm_root
    rec = _run(root, "tracking.enabled=false", "runtime.progress=true")
    assert set(_status(rec).values()) == {"cached"}


def test_corrupt_artifact_is_recomputed_not_used(warm_root):
    root, first = warm_root
    scores = Path(first["stages"]["score"]["path"]) / "scores.parquet"
    scores.write_bytes(scores.read_bytes()[:-20])
    rec = _run(root)
    assert _status(rec)["score"] == "computed"
    assert "failed verification" in rec["stages"]["score"]["reason"]
    assert "scores.parquet" in rec["stages"]["score"]["reason"]
    assert _status(rec)["encode"] == "cached"


def test_an_artifact_removed_since_an_earlier_run_says_so(warm_root):
    """A stage run whose artifact an earlier run had, removed since (`saerl gc`, by hand), was explained against
    the newest earlier run of the same config name: "config changed: ..." when that run had other settings. Its
    reason now says the artifact is gone and which run had it."""
    import shutil

    root, first = warm_root
    shutil.rmtree(first["stages"]["curriculum"]["path"])
    rec = _run(root)
    assert _status(rec)["curriculum"] == "computed" and _status(rec)["score"] == "cached"
    reason = rec["stages"]["curriculum"]["reason"]
    assert "its artifact, which run " in reason and "is gone (collected by `saerl gc`" in reason, reason


def test_mlflow_has_parent_and_stage_runs(warm_root):
    from mlflow.tracking import MlflowClient

    root, first = warm_root
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_name == first["run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.info.run_name for c in children) == sorted(first["stages"]), "one nested run per stage run"
    assert {c.info.status for c in children} == {"FINISHED"}
    assert parent.data.params["curriculum.mix_ratio"] == "0.2"
    score = next(c for c in children if c.info.run_name == "score")
    assert "n_clusters" in score.data.metrics and score.data.tags["saerl.status"] == "computed"
    properties = next(c for c in children if c.info.run_name == "properties")
    plots = {Path(a.path).name for a in client.list_artifacts(properties.info.run_id, "plots")}
    assert {"cluster_map.png", "difficulty_pred_vs_true.png"} <= plots
    assert "property_report.parquet" in {a.path for a in client.list_artifacts(properties.info.run_id)}
    assert "scores.parquet" in {a.path for a in client.list_artifacts(score.info.run_id)}
    assert any(a.path.endswith(".json") for a in client.list_artifacts(parent.info.run_id))
    train = next(c for c in children if c.info.run_name == "train:saerl:0")
    assert [m.step for m in client.get_metric_history(train.info.run_id, "reward")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(train.info.run_id, "eval/heldout/greedy")] == [0, 2, 3]
    assert "train.learning_rate" in train.data.params
    evaluate = next(c for c in children if c.info.run_name == "evaluate")
    assert "accuracy_vs_step.png" in {Path(a.path).name for a in client.list_artifacts(evaluate.info.run_id, "plots")}


def test_a_training_task_sends_its_points_to_its_mlflow_run_while_it_trains(warm_root, monkeypatch):
    """The stage task of a training run given its nested run's id (as the flow gives it: Tracker.start_stage) sends
    each step's metrics there as they are measured: when the points of a step are sent, MLflow already holds those
    of every step before it. The task runs in this process here; on Dask it runs in a worker, given the same id."""
    from dataclasses import asdict

    from mlflow.tracking import MlflowClient

    import saerl.tracking as tracking
    from saerl.artifacts import ArtifactRef
    from saerl.pipeline import input_keys, resolve_upstream, stage_runs
    from saerl.runs import stage_of
    from saerl.stages import stage_key
    from tasks.stage import stage_task

    root, first = warm_root
    cfg = load_config(SMOKE, [f"runtime.artifact_root={root}", "train.max_steps=4"])
    tracker = tracking.Tracker(cfg, root, "live-task")
    rid = tracker.start_stage("train:saerl:0", "k", {})
    client = MlflowClient(tracking_uri=tracking.tracking_uri(cfg, root))
    held: list[tuple[int, list[int]]] = []
    send = tracking.LiveStageRun.__call__

    def probe(self, step, values):  # what MLflow holds as a step's points are sent
        if "reward" in values:
            held.append((step, [m.step for m in client.get_metric_history(rid, "reward")]))
        send(self, step, values)

    monkeypatch.setattr(tracking.LiveStageRun, "__call__", probe)
    refs = {name: ArtifactRef(stage_of(name), st["key"], st["path"]) for name, st in first["stages"].items()}
    (ups,) = [u for stage, name, u, _ in stage_runs(cfg, "train") if name == "train:saerl:0"]
    variant = {"arm": "saerl", "seed": 0}
    upstream = resolve_upstream("train", ups, refs, variant)
    key = stage_key(cfg, "train", input_keys(cfg, "train", upstream, variant))
    result = stage_task.fn(stage="train", key=key, root=str(root), config=cfg.model_dump(mode="json"),
                           upstream={u: asdict(r) for u, r in upstream.items()}, variant=variant, live_run=rid)
    tracker.finish()
    assert result["computed"] and held == [(1, []), (2, [1]), (3, [1, 2]), (4, [1, 2, 3])]


def test_until_stops_early(warm_root):
    root, _ = warm_root
    rec = _run(root, until="ingest")
    assert list(rec["stages"]) == ["testbed", "ingest"]
    rec = _run(root, until="curriculum")
    assert "train:saerl:0" not in rec["stages"] and "evaluate" not in rec["stages"]


def test_a_moved_artifact_root_is_read_where_it_now_is(prefect_api, tmp_path):
    """`mv .saerl /big/.saerl`, then rerun with the new root: every stage is a cache hit (the Prefect results
    moved with the root) and every recorded path points into the new root, never at the old one."""
    import shutil

    old, new = tmp_path / "old", tmp_path / "big" / "moved"
    first = _run(old, until="ingest")
    assert set(_status(first).values()) == {"computed"}
    new.parent.mkdir()
    shutil.move(old, new)
    rec = _run(new, until="ingest")
    assert set(_status(rec).values()) == {"cached"}
    for name, stage in rec["stages"].items():
        path = Path(stage["path"])
        assert path.is_relative_to(new.resolve()) and (path / "manifest.json").is_file(), (name, path)


def test_a_prefect_cache_hit_records_its_own_seconds_not_the_builds(prefect_api, tmp_path, monkeypatch, capsys):
    """A rerun answered from Prefect's cache records the seconds it took, not those of the build whose result
    Prefect persisted (a cached training run would report the hours it once took). A stage run that computes says
    so when it starts (its end line comes only once it is done: nothing said which stage a long run was in); a
    cache hit does not."""
    import time

    from flows.pipeline import pipeline_flow
    from saerl import pipeline

    build = pipeline.RUNNERS["ingest"]

    def slow_ingest(*args, **kwargs):
        time.sleep(2.0)
        return build(*args, **kwargs)

    monkeypatch.setitem(pipeline.RUNNERS, "ingest", slow_ingest)
    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample", "tracking.enabled=false"])
    runs, outs = [], []
    for _ in range(2):
        runs.append(pipeline_flow(config=cfg.model_dump(mode="json"), until="ingest")["stages"]["ingest"])
        outs.append(capsys.readouterr().out.splitlines())
    assert [r["status"] for r in runs] == ["computed", "cached"]
    assert runs[0]["seconds"] >= 2.0 > runs[1]["seconds"]
    said = [STAMP.sub("", ln, count=1) for ln in outs[0]]  # each line led by the time it was said
    starts = [i for i, ln in enumerate(said) if ln == f"[ingest] computing key={runs[0]['key'][:12]} ..."]
    ends = [i for i, ln in enumerate(said) if ln.startswith("[ingest] computed key=")]
    assert len(starts) == len(ends) == 1 and starts[0] < ends[0], outs[0]
    assert not any(" computing " in ln for ln in outs[1]), outs[1]


def test_a_failed_run_is_recorded_as_failed_and_where(prefect_api, tmp_path, monkeypatch):
    """A run stopped by an error leaves a record that says so (it read as a short finished run): the stage run
    that failed and the error, shown by `saerl status`, `status --list` and the report. Prefect's warning that the
    error could not be written as a JSON result (beside every failure, reading like a second problem) is not shown."""
    from flows.pipeline import pipeline_flow
    from saerl import pipeline
    from saerl.report import load_report, sections
    from saerl.runs import FAILED, load_run
    from saerl.status import list_status, run_status

    def broken_ingest(*args, **kwargs):
        raise RuntimeError("the data file went away")

    monkeypatch.setitem(pipeline.RUNNERS, "ingest", broken_ingest)
    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample", "tracking.enabled=false"])
    import logging

    class Kept(logging.Handler):  # on the task-run logger itself: Prefect's console handler may hold another stream
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    kept = Kept()
    logging.getLogger("prefect.task_runs").addHandler(kept)
    try:
        with pytest.raises(Exception, match="the data file went away"):
            pipeline_flow(config=cfg.model_dump(mode="json"), until="ingest")
    finally:
        logging.getLogger("prefect.task_runs").removeHandler(kept)
    assert any("the data file went away" in m for m in kept.messages), kept.messages
    assert not any("Failed to write result" in m for m in kept.messages), kept.messages
    record = load_run(tmp_path, "latest")
    assert record.extra[FAILED] == "ingest: RuntimeError: the data file went away" and not record.stages
    assert "FAILED at ingest: RuntimeError" in run_status(tmp_path)
    assert list_status(tmp_path).splitlines()[1].split()[-5:] == ["failed", "at", "ingest", "--until", "ingest"]
    arms = dict(sections(load_report(tmp_path, record.run_id)))["Arms"]
    assert "failed before its evaluation, at ingest" in arms


class _Planted:
    """Unpickling it writes a marker file: what a cloudpickle cache record could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return Path.write_text, (Path(self.marker), "unpickled")


def test_a_pickled_cache_record_is_never_unpickled_but_rewritten_as_json(prefect_api, tmp_path):
    """Prefect decodes a cache record with the serializer the record names: a stage run whose record was written
    before results were JSON (cloudpickle) was unpickled on the next cache hit. The flow refreshes such a record
    instead (the artifact is reused, the record rewritten as JSON)."""
    from prefect.results import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    from flows.pipeline import pipeline_flow
    from tasks.stage import RESULT_SERIALIZER, plain_record, record_path

    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample", "tracking.enabled=false"])
    first = pipeline_flow(config=cfg.model_dump(mode="json"), until="ingest")["stages"]["ingest"]
    path, marker = record_path(tmp_path, "ingest", first["key"]), tmp_path / "unpickled.txt"
    assert plain_record(tmp_path, "ingest", first["key"])
    planted = ResultRecord(metadata=ResultRecordMetadata(serializer=PickleSerializer(), storage_key=str(path)),
                           result={**{k: first[k] for k in ("key", "path", "seconds")}, "stage": "ingest",
                                   "computed": False, "metrics": {}, "planted": _Planted(marker)})
    path.write_bytes(planted.serialize())
    assert not plain_record(tmp_path, "ingest", first["key"])
    second = pipeline_flow(config=cfg.model_dump(mode="json"), until="ingest")["stages"]["ingest"]
    assert not marker.exists(), "a cache hit unpickled a record"
    assert second["status"] == "cached" and second["key"] == first["key"]
    assert json.loads(path.read_text())["metadata"]["serializer"] == RESULT_SERIALIZER.model_dump(mode="json")


def test_a_reused_artifact_says_what_code_built_it_and_the_run_how_to_run_it_again(prefect_api, tmp_path,
                                                                                    monkeypatch):
    """An artifact built by uncommitted code was reused by a clean run of the same commit: its stage run said
    "same code version" and the run was credited with the clean commit alone. The reason and the stage run's tags
    name the code that built it now; the parent run holds the config file (which loads back to the run's config),
    the command and --until, and the record the versions and machine at the start."""
    from mlflow.tracking import MlflowClient

    import flows.pipeline as fp
    import saerl.artifacts
    import saerl.tracking
    from saerl.privacy import redacted
    from saerl.tracking import CONFIG_FILE

    def code(state):
        for module in (saerl.artifacts, saerl.tracking, fp):
            monkeypatch.setattr(module, "build_code", lambda: state)

    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample", "name=prov"])
    code({"commit": "a" * 40, "dirty": "true", "diff": "0123456789ab", "files": ["saerl/runners.py"]})
    first = fp.pipeline_flow(config=cfg.model_dump(mode="json"), until="ingest", invocation="saerl run x.yaml")
    code({"commit": "b" * 40, "dirty": "false"})
    second = fp.pipeline_flow(config=cfg.model_dump(mode="json"), until="ingest")
    reason = second["stages"]["ingest"]["reason"]
    assert reason.startswith("cached: ") and "built by other code: at commit aaaaaaaaaaaa (now bbbbbbbbbbbb); with " \
        "uncommitted changes (diff 0123456789ab: saerl/runners.py)" in reason, reason
    assert {"python", "numpy", "torch"} <= set(second["extra"]["versions"]) and second["extra"]["machine"]["cpu"]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("prov").experiment_id])
    parents = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    one, two = parents[first["run_id"]], parents[second["run_id"]]
    assert one.data.tags["saerl.invocation"] == "saerl run x.yaml" and one.data.tags["saerl.until"] == "ingest"
    assert two.data.tags["saerl.git_commit"] == "b" * 40 and "saerl.version.numpy" in two.data.tags
    ingest = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == two.info.run_id
                  and r.info.run_name == "ingest")
    assert ingest.data.tags["saerl.build.git_commit"] == "a" * 40 and ingest.data.tags["saerl.build.git_dirty"] == "true"
    assert ingest.data.tags["saerl.build.created"]
    config = Path(client.download_artifacts(two.info.run_id, CONFIG_FILE, str(tmp_path)))
    assert redacted(flatten(load_config(config))) == second["config"] == redacted(flatten(cfg))


def test_a_stage_saerl_reuses_without_a_prefect_cache_hit_says_why_in_prefect(prefect_api, tmp_path):
    """A stage run saerl reused (its artifact stored, here its Prefect cache record gone, as when another process
    built it meanwhile) showed in Prefect as a plain 'Completed' with no message, as a build does: its task run's
    state now carries saerl's reason, and the run record still says cached, and a cache hit still 'Cached'."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName

    from flows.pipeline import pipeline_flow, run_pipeline_flow
    from tasks.stage import record_path

    root = tmp_path / "root"
    config = load_config(SMOKE, [f"runtime.artifact_root={root}", "tracking.enabled=false"]).model_dump(mode="json")
    first = run_pipeline_flow(pipeline_flow, config, until="ingest")
    key = first["stages"]["ingest"]["key"]
    record_path(root, "ingest", key).unlink()  # the artifact stays; Prefect's cache record of it is gone
    again = run_pipeline_flow(pipeline_flow, config, until="ingest")  # its flow run named after its run id
    assert _status(again) == {"testbed": "cached", "ingest": "cached"}
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[again["run_id"]])))
        states = {t.name: t.state for t in client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))}
    assert (states["ingest"].name, states["ingest"].message) == (
        "Completed", "cached: same code version, inputs and config as a stored artifact")
    assert states["testbed"].name == "Cached"
