"""saerl.report: the run report from artifacts on disk (terminal table, self-contained HTML) and the re-log
of a finished run into a fresh MLflow store; `saerl report` on the command line."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from saerl.config import build_config, flatten, load_config
from saerl.report import arm_table, format_table, unflatten
from saerl.runs import FAILED, RUNNING

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_unflatten_gives_back_the_config():
    cfg = load_config(SMOKE, ["curriculum.mix_ratio=0.3", "eval.sets={}"])
    assert build_config(unflatten(flatten(cfg))) == cfg


def _two_arms() -> pl.DataFrame:
    """A comparison.parquet of one set: vanilla (the reference) and saerl, 2 seeds each, saerl 10 points better."""
    return pl.DataFrame({
        "set": ["h", "h"], "arm": ["vanilla", "saerl"], "n_seeds": [2, 2], "accuracy": [0.4, 0.5],
        "ci_low": [0.3, 0.45], "ci_high": [0.5, 0.55], "level": [0.95, 0.95], "diff_pts": [0.0, 10.0],
        "diff_ci_low_pts": [None, 2.0], "diff_ci_high_pts": [None, 18.0], "verdict": ["reference", "better"],
        "metric": ["greedy", "greedy"]})


def test_arm_table_shows_intervals_verdict_and_steps():
    cmp = _two_arms()
    stt = pl.DataFrame({"arm": ["saerl", "vanilla"], "seed": [0, 0], "target": [0.4, 0.4], "steps": [2, 4],
                        "reached": [True, True], "mean_steps": [2.0, 4.0], "ratio": [0.5, 1.0], "set": ["h", "h"]})
    table = arm_table(cmp, stt)
    saerl = table.filter(pl.col("arm") == "saerl").row(0, named=True)
    assert saerl["accuracy"] == "50.0%" and saerl["95% CI"] == "[45.0, 55.0]"
    assert saerl["diff vs vanilla (pts)"] == "+10.0" and saerl["diff 95% CI"] == "[+2.0, +18.0]"
    assert saerl["verdict"] == "better" and saerl["steps to target"] == "2 (0.50x)"
    text = format_table(table)
    assert text.splitlines()[0].startswith("set") and len(text.splitlines()) == 3


def test_arm_table_shows_a_near_zero_bound_with_its_sign_as_the_printed_comparison_does():
    """The report printed "[+0.0, +4.8]" beside "better" where the run's own table printed "[+0.049, +4.8]"."""
    cmp = _two_arms().with_columns(diff_ci_low_pts=pl.Series([None, 0.049423]),
                                   diff_ci_high_pts=pl.Series([None, 4.8]))
    saerl = arm_table(cmp, None).filter(pl.col("arm") == "saerl").row(0, named=True)
    assert saerl["diff 95% CI"] == "[+0.049, +4.8]"


def test_arm_table_names_each_sets_mean_at_its_own_k():
    """The report named the mean over samples 'mean_k' for every set: it names each set's k (summary.parquet's,
    eval.sets.NAME.k_samples where a set sets its own), and the mean of the sets says when theirs differ."""
    from saerl.evaluate import MEAN_OF_SETS
    from saerl.report import samples_per_set

    cmp = pl.concat([_two_arms().with_columns(set=pl.lit(s), metric=pl.lit("mean_k")) for s in ("h", "aime", MEAN_OF_SETS)])
    summary = pl.DataFrame({"set": ["h", "aime", "h"], "arm": ["saerl", "saerl", "vanilla"], "k": [4, 8, 4]})
    ks = samples_per_set(summary)
    assert ks == {"h": 4, "aime": 8}
    names = dict(zip(arm_table(cmp, None, ks)["set"], arm_table(cmp, None, ks)["metric"], strict=False))
    assert names == {"h": "mean@4", "aime": "mean@8", MEAN_OF_SETS: "mean@k (each set's own)"}
    assert set(arm_table(cmp, None)["metric"]) == {"mean_k"}  # k not known: as before
    assert set(arm_table(cmp, None, {"h": 4, "aime": 4})["metric"]) == {"mean@4"}


def test_report_of_a_partial_run_says_what_is_missing(tmp_path):
    from saerl.report import format_text, load_report, render_html
    from saerl.runs import RunRecord, StageRecord, save_run

    rec = RunRecord(name="partial", stages={"score": StageRecord(
        stage="score", key="k" * 16, status="cached", reason="cached: same", config={}, inputs={},
        path=str(tmp_path / "gone"))})
    save_run(tmp_path, rec)
    report = load_report(tmp_path)
    assert report.missing == ["score"] and report.comparison is None
    text = format_text(report)
    assert "no evaluate stage in this run" in text and "Missing artifacts" in text
    assert "data:image/png" not in render_html(report)


def test_the_reports_title_gives_the_start_with_its_zone_as_status_does(tmp_path, monkeypatch):
    """The title (terminal and the saved HTML page) gave the start in local time with no zone, beside a UTC run id:
    under Asia/Kolkata a run started 2026-12-06 22:44:56 UTC read 'started 2026-12-07 04:14:56', another date than
    its id, and a page shared with someone in another zone was off by the writer's offset. It reads as `saerl status`
    does now (saerl.status.format_time)."""
    import time

    from saerl.report import format_text, load_report, render_html
    from saerl.runs import RunRecord, save_run

    started = 1796597096.0  # 2026-12-06 22:44:56 UTC
    save_run(tmp_path, RunRecord(name="cfg", run_id="20261206-224456-000000-03e4", started=started))
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        report = load_report(tmp_path)
        title = "run 20261206-224456-000000-03e4 (cfg), started 2026-12-07 04:14:56 IST"
        assert format_text(report).splitlines()[0] == title
        assert title in render_html(report)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_report_of_a_killed_run_says_it_did_not_finish(tmp_path):
    """A run killed before its evaluation (SIGKILL, out of memory) keeps its running marker: the report said it had
    no evaluate stage, as if it were a short finished run."""
    from saerl.report import format_text, load_report
    from saerl.runs import KILLED, RUNNING, RunRecord, StageRecord, live_lock, live_path, save_run

    record = RunRecord(name="killed", extra={RUNNING: True}, stages={"ingest": StageRecord(
        stage="ingest", key="i" * 16, status="computed", reason="computed: first", config={}, inputs={})})
    save_run(tmp_path, record)
    text = format_text(load_report(tmp_path))
    assert "no evaluate stage" not in text and "the run did not finish (unfinished: still running, or killed" in text
    with live_lock(tmp_path, record.run_id):  # its process still going
        assert "the run has not finished: it is still running" in format_text(load_report(tmp_path))
    live_path(tmp_path, record.run_id).touch()  # its process gone, the lock free
    assert f"the run did not finish ({KILLED})" in format_text(load_report(tmp_path))


def test_report_of_a_collected_evaluate_says_it_is_gone_not_absent(tmp_path):
    """A run whose evaluate artifact gc removed did have an evaluate stage: the report said it had none."""
    from saerl.report import format_text, load_report
    from saerl.runs import RunRecord, StageRecord, save_run

    save_run(tmp_path, RunRecord(name="collected", stages={"evaluate": StageRecord(
        stage="evaluate", key="e" * 16, status="computed", reason="computed: first", config={}, inputs={})}))
    text = format_text(load_report(tmp_path))
    assert "no evaluate stage" not in text and "evaluate artifact is gone from disk" in text


def test_report_of_a_preview_names_the_newest_run_with_a_comparison(tmp_path, capsys):
    """`saerl report` (latest) after an --until preview said 'nothing to compare' and not where the last comparison
    is. It still reports the preview (its own tables), and names the newest run with an evaluate stage, of any
    config, and the command that shows it; on a root with none it says so."""
    from flows.cli import main
    from saerl.report import format_text, load_report, render_html
    from saerl.runs import SETTING, SWEEP, UNTIL, RunRecord, StageRecord, save_run

    def run(name: str, run_id: str, stages: tuple[str, ...], **extra: object) -> RunRecord:
        record = RunRecord(name=name, run_id=run_id, started=0.0, extra=dict(extra), stages={s: StageRecord(
            stage=s, key=s[0] * 16, status="computed", reason="computed: first", config={}, inputs={}) for s in stages})
        save_run(tmp_path, record)
        return record

    older = run("smoke", "20261207-093019-033411-e372", ("curriculum", "evaluate"))
    newest = run("smoke", "20261207-093258-060642-53c1", ("curriculum", "evaluate"), **{
        SWEEP: "20261207-093201-239604-85e8", SETTING: "mix_ratio=0.8"})
    preview = run("smoke_b", "20261207-095151-514148-aa6a", ("curriculum",), **{UNTIL: "curriculum"})
    text = format_text(load_report(tmp_path))
    assert text.startswith(f"run {preview.run_id} (smoke_b)"), "the run asked for is the one reported"
    arms = text.split("== Arms ==\n", 1)[1].splitlines()[0]
    assert arms.startswith("no evaluate stage in this run (it ran --until curriculum): nothing to compare; "
                           f"the newest run with one is {newest.run_id} (smoke, mix_ratio=0.8), started "), arms
    assert arms.endswith(f": `saerl report {newest.run_id} --root {tmp_path}`"), arms
    assert older.run_id not in text and f"saerl report {newest.run_id}" in render_html(load_report(tmp_path))
    assert main(["report", "--root", str(tmp_path), "--html", str(tmp_path / "r.html")]) == 0
    assert f"`saerl report {newest.run_id} --root {tmp_path}`" in capsys.readouterr().out
    named = format_text(load_report(tmp_path, preview.run_id[:15]))  # named by a prefix, not 'latest': the same
    assert f"the newest run with one is {newest.run_id}" in named
    for record in (older, newest):
        (tmp_path / "runs" / f"{record.run_id}.json").unlink()
    arms = format_text(load_report(tmp_path)).split("== Arms ==\n", 1)[1].splitlines()[0]
    assert arms.endswith(f"nothing to compare; no run under {tmp_path} has one yet: `saerl run CONFIG --root "
                         f"{tmp_path}` without --until makes one"), arms


def test_report_reads_the_artifacts_of_a_moved_root(tmp_path):
    """A root copied or moved elsewhere: the report reads its artifacts there (the record's paths are absolute
    paths of the old root: it said every artifact was gone, or read the old root's files)."""
    import shutil

    from saerl.artifacts import ArtifactStore
    from saerl.report import format_text, load_report
    from saerl.runs import RunRecord, StageRecord, save_run

    old, new = tmp_path / "old", tmp_path / "new"
    clusters = pl.DataFrame({"cluster": [0, 1], "size": [3, 1], "share": [0.75, 0.25], "top_features": [[4], [7]],
                             "top_topic": [None, None], "top_topic_share": [None, None]})
    ref, _ = ArtifactStore(old).ensure("score", "s" * 20, lambda b: clusters.write_parquet(b.path / "clusters.parquet"))
    save_run(old, RunRecord(name="moved", stages={"score": StageRecord(
        stage="score", key=ref.key, status="computed", reason="computed: first", config={}, inputs={}, path=ref.path)}))
    shutil.copytree(old, new)
    shutil.rmtree(old)
    report = load_report(new)
    assert report.missing == [] and report.clusters is not None and report.clusters.height == 2
    assert "Missing artifacts" not in format_text(report) and report.record.stages["score"].path.startswith(str(new))


def test_a_corrupt_artifact_is_named_and_left_out_not_read(tmp_path):
    """A truncated comparison.parquet gave a raw polars traceback, and a deleted file read as 'gone from disk';
    the report verifies the artifacts it reads (as export does), names what is wrong, and reads the rest."""
    from saerl.artifacts import ArtifactStore
    from saerl.report import format_text, load_report
    from saerl.runs import RunRecord, StageRecord, save_run

    clusters = pl.DataFrame({"cluster": [0, 1], "size": [3, 1], "share": [0.75, 0.25], "top_features": [[4], [7]],
                             "top_topic": [None, None], "top_topic_share": [None, None]})
    store = ArtifactStore(tmp_path)
    score, _ = store.ensure("score", "s" * 20, lambda b: clusters.write_parquet(b.path / "clusters.parquet"))
    ev, _ = store.ensure("evaluate", "e" * 20, lambda b: clusters.write_parquet(b.path / "comparison.parquet"))
    (Path(ev.path) / "comparison.parquet").write_bytes(b"PAR1 truncated")
    save_run(tmp_path, RunRecord(name="corrupt", stages={s: StageRecord(
        stage=s, key=ref.key, status="computed", reason="computed: first", config={}, inputs={}, path=ref.path)
        for s, ref in (("score", score), ("evaluate", ev))}))
    report = load_report(tmp_path)
    assert list(report.unusable) == ["evaluate"] and report.comparison is None
    assert report.clusters is not None and report.clusters.height == 2  # the intact artifact is still read
    text = format_text(report)
    assert f"artifact {ev.path} is not usable" in text and "comparison.parquet" in text
    assert "gone from disk" not in text and "Unusable artifacts" in text


# ------------------------------------------------------------------------------------------------ on a real run


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """An artifact root on which the smoke pipeline ran once (run_all, no Prefect), with its run record."""
    from saerl.artifacts import ArtifactStore
    from saerl.pipeline import run_all
    from saerl.report import record_results
    from saerl.runs import save_run

    root = tmp_path_factory.mktemp("report-root")
    cfg = load_config(SMOKE, [f"runtime.artifact_root={root}", "runtime.progress=false"])
    store = ArtifactStore(root)
    record = record_results(store, cfg, run_all(store, cfg))
    save_run(root, record)
    return root, record


@pytest.mark.slow
def test_text_report_has_arms_verdict_and_data_numbers(smoke_run):
    from saerl.report import format_text, load_report

    root, record = smoke_run
    text = format_text(load_report(root, "latest"))
    assert record.run_id in text and "smoke" in text
    arms = text.split("== Arms")[1].split("==")[1]
    assert "saerl" in arms and "vanilla" in arms and "reference" in arms
    assert any(v in arms for v in ("within noise", "better", "worse", "no CI"))
    assert "steps to target" in text and "fraction filtered" in text and "clusters" in text
    assert "fraction of variance the SAE explains (held-out tokens)" in text and "SAE features active per token" in text
    assert "Property models vs baselines" in text and "topic_clusters" in text
    assert all(name in text for name in record.stages)


@pytest.mark.slow
def test_html_report_is_self_contained(smoke_run, tmp_path):
    from saerl.report import load_report, write_html

    root, record = smoke_run
    path = write_html(load_report(root, record.run_id[:10]), tmp_path / "r.html")
    page = path.read_text()
    assert page.count("data:image/png;base64,") >= 5, "score, curriculum, train x2 and evaluate plots, embedded"
    assert "<table>" in page and any(v in page for v in ("within noise", "better", "worse", "no CI"))
    assert "http://" not in page and "https://" not in page and "<link" not in page, "nothing outside the file"
    assert "cluster_top_features.png" in page and "accuracy_vs_step.png" in page


@pytest.mark.slow
def test_relog_creates_parent_and_stage_runs_in_a_fresh_store(smoke_run, tmp_path):
    from mlflow.tracking import MlflowClient

    from saerl.report import relog
    from saerl.tracking import VERSION_TAG

    root, record = smoke_run
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    parent_id = relog(root, record, uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_id == parent_id)
    assert parent.info.run_name == record.run_id and parent.data.tags["saerl.relogged"] == "true"
    assert parent.data.tags[VERSION_TAG + "torch"] != "not installed"
    assert parent.data.params["curriculum.mix_ratio"] == "0.2"
    assert parent.info.start_time == int(record.started * 1000)
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}
    assert set(children) == set(record.stages)
    score = children["score"]
    assert "n_clusters" in score.data.metrics and score.data.tags["saerl.key"] == record.stages["score"].key
    assert {"cluster_map.png", "cluster_top_features.png"} <= {
        Path(a.path).name for a in client.list_artifacts(children["properties"].info.run_id, "plots")}
    train = children["train:saerl:0"].info.run_id
    assert [m.step for m in client.get_metric_history(train, "reward")] == [1, 2, 3]
    assert children["train:saerl:0"].data.params["arm"] == "saerl" and children["train:vanilla:0"].data.params["seed"] == "0"
    assert children["train:saerl:0"].data.tags["saerl.input.curriculum"] == record.stages["curriculum"].key
    assert "gains.parquet" in {a.path for a in client.list_artifacts(children["evaluate"].info.run_id)}
    assert list((tmp_path / "mlruns").rglob("gains.parquet")), "the logged files sit beside the store"
    assert any(a.path.endswith(".json") for a in client.list_artifacts(parent_id))
    code = record.extra["git"]  # the flow kept the code tags it logged; the relog tags those
    assert {"saerl.git_commit", "saerl.git_dirty"} <= set(code)  # and for a dirty checkout its diff and files
    assert {k: parent.data.tags[k] for k in code} == code


@pytest.mark.slow
def test_cli_report_prints_table_and_writes_html(smoke_run, tmp_path, capsys):
    from flows.cli import main

    root, record = smoke_run
    assert main(["report", "--root", str(root), "--html", str(tmp_path / "out.html")]) == 0
    out = capsys.readouterr().out
    assert "diff vs vanilla" in out and f"wrote {tmp_path / 'out.html'}" in out
    assert main(["report", "nope", "--root", str(root)]) == 2
    assert "no unique run 'nope'" in capsys.readouterr().err


def test_data_numbers_count_the_quality_filter_and_the_difficulty_cap_apart():
    from saerl.report import data_numbers

    scores = pl.DataFrame({"id": [f"p{i}" for i in range(10)]})
    order = pl.DataFrame({"id": ["p0", "p1", "p2", "p0"]})
    old = data_numbers(scores, order)  # an artifact from before the cap: every missing prompt was filtered
    assert old == {"prompts scored": 10.0, "prompts in the SAERL order": 3.0, "fraction filtered": 0.7}
    new = data_numbers(scores, order, {"filtered": 2.0, "out_of_reach": 5.0})
    assert new["fraction filtered"] == 0.2 and new["prompts out of reach (difficulty cap)"] == 5.0


def test_sae_numbers_show_its_quality_and_the_data_table_formats_them():
    from saerl.report import data_rows, sae_numbers

    numbers = sae_numbers({"source": "train", "d_sae": 1024, "variance_explained": 0.9713, "l0": 31.5,
                           "dead_frac": 0.4277, "dead_features": 438})
    assert numbers == {"SAE features": 1024.0, "fraction of variance the SAE explains (held-out tokens)": 0.9713,
                       "SAE features active per token (L0)": 31.5, "fraction of SAE features dead on held-out tokens": 0.4277}
    assert data_rows(numbers)["value"].to_list() == ["1024", "97.1%", "31.5", "42.8%"]
    assert sae_numbers({"d_sae": 8}) == {"SAE features": 8.0}  # an older report's missing keys are left out


def test_write_html_stopped_half_way_keeps_the_last_whole_page(tmp_path, monkeypatch):
    from saerl.report import RunReport, write_html
    from saerl.runs import RunRecord

    out = write_html(RunReport(RunRecord(name="demo")), tmp_path / "r.html")
    whole = out.read_text()
    assert whole.endswith("</html>")

    def half_then_fail(self: Path, text: str, **kw) -> int:
        with open(self, "w", **kw) as f:
            f.write(text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_html(RunReport(RunRecord(name="demo")), out)
    assert out.read_text() == whole


@pytest.mark.parametrize(("extra", "status"), [({}, "FINISHED"), ({FAILED: "train:saerl:0: boom"}, "FAILED"),
                                               ({RUNNING: True}, "KILLED")])
def test_relog_closes_the_parent_with_the_status_the_record_stands_for(tmp_path, extra, status):
    """A run that failed (or never recorded its end) was re-logged as FINISHED; the flow logs a failed run FAILED."""
    from mlflow.tracking import MlflowClient

    from saerl.config import PipelineConfig
    from saerl.report import relog
    from saerl.runs import RunRecord, save_run

    record = RunRecord(name="relogged", config=flatten(PipelineConfig(name="relogged")), extra=extra)
    save_run(tmp_path, record)
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    parent = relog(tmp_path, record, uri)
    assert MlflowClient(tracking_uri=uri).get_run(parent).info.status == status


def test_relog_refuses_a_run_that_is_still_going(tmp_path):
    """A run still going (its live lock held) was re-logged KILLED beside the parent run it is logging itself."""
    from saerl.config import PipelineConfig
    from saerl.report import relog
    from saerl.runs import RunRecord, live_lock, save_run

    record = RunRecord(name="live", config=flatten(PipelineConfig(name="live")), extra={RUNNING: True})
    save_run(tmp_path, record)
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    with live_lock(tmp_path, record.run_id), pytest.raises(RuntimeError, match="still running"):
        relog(tmp_path, record, uri)
    assert not (tmp_path / "fresh.db").exists()


def _compare_rows(arms: list[str], ref: str) -> pl.DataFrame:
    """compare_arms-shaped rows of one set and metric: `ref` is the reference, every other arm +10 points."""
    return pl.DataFrame({
        "set": ["h"] * len(arms), "arm": arms, "n_seeds": [1] * len(arms), "accuracy": [0.4] * len(arms),
        "ci_low": [0.3] * len(arms), "ci_high": [0.5] * len(arms), "level": [0.95] * len(arms),
        "diff_pts": [0.0 if a == ref else 10.0 for a in arms],
        "diff_ci_low_pts": [None if a == ref else 2.0 for a in arms],
        "diff_ci_high_pts": [None if a == ref else 18.0 for a in arms],
        "verdict": ["reference" if a == ref else "better" for a in arms], "metric": ["greedy"] * len(arms)})


def test_report_shows_the_rl_gain_over_the_starting_policy(tmp_path):
    """`saerl run` printed each arm's gain over the starting policy (gains.parquet); `saerl report` never showed it."""
    from saerl.artifacts import ArtifactStore
    from saerl.report import GAINS_TITLE, format_text, load_report, render_html
    from saerl.runs import RunRecord, StageRecord, save_run

    def build(b):
        _compare_rows(["vanilla", "saerl"], "vanilla").write_parquet(b.path / "comparison.parquet")
        _compare_rows(["base", "saerl", "vanilla"], "base").write_parquet(b.path / "gains.parquet")

    ref, _ = ArtifactStore(tmp_path).ensure("evaluate", "e" * 20, build)
    save_run(tmp_path, RunRecord(name="gains", stages={"evaluate": StageRecord(
        stage="evaluate", key=ref.key, status="computed", reason="computed: first", config={}, inputs={},
        path=ref.path)}))
    report = load_report(tmp_path)
    assert report.gains is not None and report.gains.height == 3
    text = format_text(report)
    gains = text.split(f"== {GAINS_TITLE} ==")[1].split("\n\n")[0]
    assert "diff vs base (pts)" in gains and "steps to target" not in gains
    saerl = next(line for line in gains.splitlines() if " saerl " in line)
    assert "+10.0" in saerl and "[+2.0, +18.0]" in saerl and "better" in saerl
    assert "RL gain over the starting policy" in render_html(report)
    no_base = load_report(tmp_path)
    no_base.gains = None  # a run with eval.base_policy off has no gains.parquet: no such section
    assert GAINS_TITLE not in format_text(no_base)


def test_relog_logs_the_params_the_live_run_logged(tmp_path):
    """A relog rebuilt the config through the current schema and logged mappings in the record's (sorted) key order:
    testbed.defect_kinds differed from the live run's param, and a field added to the code after the run appeared
    as a param the run never had. Both paths log the same text, and a relog the stored config as it is."""
    from mlflow.tracking import MlflowClient

    from saerl.report import relog
    from saerl.runs import RunRecord, load_run, save_run
    from saerl.tracking import Tracker, tracking_uri

    cfg = load_config(None, ["name=same"])
    live = Tracker(cfg, tmp_path, "live")
    live.finish()
    client = MlflowClient(tracking_uri=tracking_uri(cfg, tmp_path))
    live_params = client.get_run(live.parent_id).data.params
    save_run(tmp_path, RunRecord(name="same", config=flatten(cfg)))
    again = relog(tmp_path, load_run(tmp_path, "latest"))  # the record as read back from its JSON file
    assert client.get_run(again).data.params == live_params

    older = {k: v for k, v in flatten(cfg).items() if k != "train.warmup_steps"}  # a run from before the field
    save_run(tmp_path, RunRecord(name="same", config=older))
    old_run = client.get_run(relog(tmp_path, load_run(tmp_path, "latest"))).data.params
    assert "train.warmup_steps" not in old_run and old_run == {k: live_params[k] for k in older}


def test_relog_tags_the_code_the_run_ran_not_todays_checkout(tmp_path):
    """relog tagged the git commit of the checkout at relog time, a later commit than the run's; the record now keeps
    the run's code tags, and a record saved before it did is tagged 'unknown', not today's commit."""
    from mlflow.tracking import MlflowClient

    from saerl.config import PipelineConfig
    from saerl.report import relog
    from saerl.runs import GIT, RunRecord, save_run

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    client = MlflowClient(tracking_uri=uri)
    ran = {"saerl.git_commit": "0123abcd" * 5, "saerl.git_dirty": "true"}
    for extra, tags in [({GIT: ran}, ran), ({}, {"saerl.git_commit": "unknown", "saerl.git_dirty": "unknown"})]:
        record = RunRecord(name="relogged", config=flatten(PipelineConfig(name="relogged")), extra=extra)
        save_run(tmp_path, record)
        logged = client.get_run(relog(tmp_path, record, uri)).data.tags
        assert {k: logged[k] for k in tags} == tags


def test_relog_refuses_a_run_the_store_holds_already_and_keeps_its_prefect_tags(tmp_path):
    """Relogging into a store that held the run already added a second parent of the same run id (every comparison
    then counted it twice), silently; and the relog lost the Prefect flow run the live run was tagged with. Now it is
    refused unless --again, and the record keeps the Prefect tags."""
    from mlflow.tracking import MlflowClient

    from saerl.config import PipelineConfig
    from saerl.report import relog
    from saerl.runs import PREFECT_TAGS, RunRecord, save_run
    from saerl.tracking import RUN_ID_TAG

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    prefect = {"prefect.flow_run_id": "5f0c2a1e-0000-4000-8000-000000000001"}
    record = RunRecord(name="twice", config=flatten(PipelineConfig(name="twice")), extra={PREFECT_TAGS: prefect})
    save_run(tmp_path, record)
    first = relog(tmp_path, record, uri)
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(first).data.tags["prefect.flow_run_id"] == prefect["prefect.flow_run_id"]
    with pytest.raises(RuntimeError, match="already .*--again"):
        relog(tmp_path, record, uri)
    second = relog(tmp_path, record, uri, again=True)
    exp = client.get_experiment_by_name("twice").experiment_id
    parents = client.search_runs([exp], filter_string=f"tags.`{RUN_ID_TAG}` = '{record.run_id}'")
    assert {r.info.run_id for r in parents} == {first, second}
    # the case relog is for: tracking stopped during the run, whose parent stays RUNNING: that does not block it
    from saerl.tracking import Tracker

    partial = RunRecord(name="partial", config=flatten(PipelineConfig(name="partial")))
    save_run(tmp_path, partial)
    cfg = PipelineConfig(name="partial").model_copy(update={"tracking": PipelineConfig().tracking.model_copy(
        update={"enabled": True, "uri": uri})})
    live = Tracker(cfg, tmp_path, partial.run_id).parent_id  # never finished: RUNNING
    assert client.get_run(live).info.status == "RUNNING"
    assert relog(tmp_path, partial, uri) != live


def test_relog_refuses_a_run_whose_parent_an_older_saerl_logged_without_the_run_id_tag(tmp_path):
    """Parents logged before the saerl.run_id tag (Dec 5) carry the run id as their name alone: relog did not find
    them and made a second parent of the run. A nested run of that name (a stage's) is no parent."""
    from mlflow.tracking import MlflowClient

    from saerl.config import PipelineConfig
    from saerl.report import relog
    from saerl.runs import RunRecord, save_run

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    record = RunRecord(name="old", config=flatten(PipelineConfig(name="old")))
    save_run(tmp_path, record)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("old")
    other = client.create_run(exp, run_name="someone")
    client.create_run(exp, run_name=record.run_id, tags={"mlflow.parentRunId": other.info.run_id})  # a nested one
    assert relog(tmp_path, record, uri)  # no parent of that name yet: relogged
    second = RunRecord(name="old", config=flatten(PipelineConfig(name="old")))
    save_run(tmp_path, second)
    old_parent = client.create_run(exp, run_name=second.run_id)  # as an older saerl logged it: no saerl.run_id tag
    client.set_terminated(old_parent.info.run_id)
    with pytest.raises(RuntimeError, match="already .*--again"):
        relog(tmp_path, second, uri)
    third = RunRecord(name="old", config=flatten(PipelineConfig(name="old")))  # a sweep child's, named by its setting
    save_run(tmp_path, third)
    client.set_terminated(client.create_run(exp, run_name=f"mix_ratio=0.5 | {third.run_id}").info.run_id)
    with pytest.raises(RuntimeError, match="already .*--again"):
        relog(tmp_path, third, uri)


def test_relog_of_a_sweep_child_names_tags_and_params_its_runs_as_the_live_run_did(tmp_path):
    """A relogged sweep child kept plain names and lost its sweep tags and swept params: the record now keeps the
    params (runs.SWEEP_PARAMS) and relog passes the label, tags and params to the tracker as the flow does."""
    from mlflow.tracking import MlflowClient

    from saerl.config import PipelineConfig
    from saerl.report import relog
    from saerl.runs import SETTING, SWEEP, SWEEP_PARAMS, RunRecord, save_run

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    extra = {SWEEP: "sw1", SETTING: "mix_ratio=0", SWEEP_PARAMS: {"sweep.curriculum.mix_ratio": "0"}}
    record = RunRecord(name="swept", config=flatten(PipelineConfig(name="swept")), extra=extra)
    save_run(tmp_path, record)
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(relog(tmp_path, record, uri))
    assert parent.info.run_name == f"mix_ratio=0 | {record.run_id}"
    assert parent.data.tags["saerl.sweep"] == "sw1" and parent.data.tags["saerl.setting"] == "mix_ratio=0"
    assert parent.data.params["sweep.curriculum.mix_ratio"] == "0"


def _one_seed_report():
    """A RunReport of one set: one seed per arm (ci_source says the seed variance is not in the intervals), two
    verifier failures in saerl's samples, and a steps-to-target table whose reference is at the target from the
    start (vanilla ends where it began), read on 200 in-training problems against the final evaluation's 500."""
    from saerl.report import RunReport
    from saerl.runs import RunRecord

    source = "500 paired problems; training-seed variance not included (one seed)"
    cmp = _compare_rows(["vanilla", "saerl"], "vanilla").with_columns(
        ci_source=pl.Series([_ref_source(), source]), n_problems=pl.lit(500), verifier_failures=pl.Series([0, 2]))
    gains = _compare_rows(["base", "saerl"], "base").with_columns(
        ci_source=pl.Series(["500 problems", source]), verifier_failures=pl.Series([1, 2]))
    stt = pl.DataFrame({"arm": ["saerl", "vanilla"], "seed": [0, 0], "target": [0.145, 0.145], "steps": [10, 0],
                        "reached": [True, True], "mean_steps": [10.0, 0.0], "ratio": [None, None],
                        "reference": ["vanilla", "vanilla"], "target_fixed": [False, False],
                        "target_problems": [200, 200], "set": ["h", "h"]},
                       schema_overrides={"ratio": pl.Float64})
    return RunReport(RunRecord(name="one-seed"), comparison=cmp, gains=gains, steps=stt), source


def _ref_source():
    return "500 problems; training-seed variance not included (one seed)"


def test_report_says_what_the_intervals_leave_out_the_failures_and_the_target():
    """comparison.txt says the intervals leave the training-seed variance out (one seed), how many answer checks
    failed, and what the steps-to-target target is; `saerl report` said none of it (and gave only the target's
    percentage, read on the in-training problems, next to accuracies on the whole set)."""
    from saerl.report import GAINS_TITLE, format_text, render_html

    report, source = _one_seed_report()
    text = format_text(report)
    arms = text.split("== Arms")[1].split("\n\n")[0]
    assert f"intervals from (h): {source}" in arms
    assert "h: verifier failures: 2 (scored wrong): saerl 2" in arms
    assert ("the target is vanilla's final greedy accuracy on the 200 in-training eval problems (14.5%), not on the "
            "500 problems of the final evaluation") in arms
    gains = text.split(f"== {GAINS_TITLE} ==")[1].split("\n\n")[0]
    assert f"intervals from (h): {source}" in gains and "verifier failures: 3 (scored wrong): base 1, saerl 2" in gains
    page = render_html(report)
    assert f"<p>intervals from (h): {source}</p>" in page and "200 in-training eval problems (14.5%)" in page
    assert "verifier failures: 2 (scored wrong)" in page


def test_steps_cell_says_when_a_ratio_is_missing_because_of_the_start():
    """vanilla at the target from the start: its cell was a bare "0" and saerl's had no ratio and no reason, where
    comparison.txt says "(at the target from the start)"."""
    report, _ = _one_seed_report()
    table = arm_table(report.comparison, report.steps)
    cells = dict(zip(table["arm"].to_list(), table["steps to target"].to_list(), strict=True))
    assert cells["vanilla"] == "0 (at the target from the start)"
    assert cells["saerl"] == "10 (no ratio: vanilla is at the target from the start)"


# ------------------------------------------------------------------------------------------------ warnings and n


def _noted_run(root: Path):
    """A run of GSM8K's shape through the testbed LM: a label stage whose pass rates are nearly all 0, a score stage
    that noted no usable quality labels (every prompt kept), a properties stage with a difficulty Spearman on 18
    test rows, and a curriculum that filtered nothing."""
    from saerl.artifacts import ArtifactStore
    from saerl.runs import RunRecord, StageRecord, save_run

    ids = [f"p{i}" for i in range(60)]
    profile = "pass rates of 60 prompts: 57 never solved, 0 always solved, 3 in between, mean 0.010"
    quality = "no usable quality labels (need both classes): quality_hat = 1, every prompt kept"
    silhouette = "the cosine silhouette that chose k = 13 over k = 4..16 is low <and> flat"
    report = pl.DataFrame({"property": ["difficulty"] * 2, "metric": ["spearman_id"] * 2, "features": ["sae", "text"],
                           "value": [0.164, 0.351], "n_train": [42, 42], "n_test": [18, 18],
                           "model": ["ridge", "ridge"], "pool": ["max", None]})

    def stage(name: str, files: dict[str, pl.DataFrame], **notes):
        def build(b):
            for file, df in files.items():
                df.write_parquet(b.path / file)
            b.note(**notes)
        return store.ensure(name, name[0] * 20, build)[0]

    store = ArtifactStore(root)
    refs = {"label": stage("label", {}, profile=profile),
            "score": stage("score", {"scores.parquet": pl.DataFrame({"id": ids})}, notes=[quality, silhouette]),
            "properties": stage("properties", {"property_report.parquet": report}, notes=[]),
            "curriculum": stage("curriculum", {"order.parquet": pl.DataFrame({"id": ids})})}
    save_run(root, RunRecord(name="gsm8k", stages={s: StageRecord(
        stage=s, key=ref.key, status="computed", reason="computed: first", config={}, inputs={}, path=ref.path)
        for s, ref in refs.items()}))
    return profile, quality, silhouette


def test_report_lists_every_stages_warnings_the_label_profile_and_each_propertys_n(tmp_path):
    """On GSM8K the score manifest held 'no usable quality labels ... every prompt kept' but the report showed only
    'fraction filtered 0.0%', which reads as a clean pass; its property table gave spearman_id 0.164 with no hint
    that it rested on 18 test rows, and nothing of the pass rates (57 of 60 prompts never solved)."""
    from saerl.report import NOTES_TITLE, format_text, load_report, render_html

    profile, quality, silhouette = _noted_run(tmp_path)
    report = load_report(tmp_path)
    assert report.notes == [("score", quality), ("score", silhouette)] and report.label_profile == profile
    text = format_text(report)
    notes = text.split(f"== {NOTES_TITLE} ==")[1].split("\n\n")[0]
    assert f"score  {quality}" in notes and f"score  {silhouette}" in notes
    assert text.index(NOTES_TITLE) < text.index("== Arms"), "the warnings come before the numbers they qualify"
    data = text.split("== Data engineering ==")[1].split("\n\n")[0]
    assert "fraction filtered" in data and "0.0%" in data and f"label: {profile}" in data
    props = text.split("== Property models vs baselines (held-out) ==")[1].split("\n\n")[0].strip().splitlines()
    assert props[0].split()[-4:] == ["n", "train", "n", "test"] and props[1].split()[-2:] == ["42", "18"]
    page = render_html(report)
    assert "<h2>Warnings and notes" in page and f"<td>score</td><td>{quality}</td>" in page
    assert "&lt;and&gt;" in page and "<and>" not in page, "notes are escaped in the HTML"
    assert f"<p>label: {profile}</p>" in page and "<th>n test</th>" in page


def test_a_run_without_notes_has_no_warnings_section_and_an_old_property_report_no_n(tmp_path):
    from saerl.report import NOTES_TITLE, format_text, load_report, property_table

    save_dir = tmp_path / "root"
    _noted_run(save_dir)
    report = load_report(save_dir)
    report.notes, report.label_profile = [], None
    text = format_text(report)
    assert NOTES_TITLE not in text and "label:" not in text
    old = pl.DataFrame({"property": ["quality"], "metric": ["auroc"], "features": ["sae"], "value": [0.9]})
    assert property_table(old).columns == ["property", "metric", "sae"]


def test_a_note_every_arm_and_seed_left_is_one_row_naming_the_runs():
    """The train stage's note that the policy cannot read the prompts came from every (arm, seed) alike: the
    report listed it once per run, four identical rows for two arms and two seeds."""
    from saerl.report import notes_table

    unk = "the policy's tokenizer reads 40% of the training prompts' tokens as its unknown token"
    table = notes_table([("score", "flat silhouette"), ("train:saerl:0", unk), ("train:vanilla:0", unk),
                         ("train:saerl:1", unk), ("train:saerl:1", unk), ("evaluate", "overlap")])
    assert table.rows() == [("score", "flat silhouette"),
                            ("train:saerl:0, train:vanilla:0, train:saerl:1", unk), ("evaluate", "overlap")]


def test_a_run_all_record_says_which_libraries_a_reused_artifact_was_built_with_otherwise(tmp_path,
                                                                                          monkeypatch):
    """record_results (the run record of run_all, no Prefect) records the reasons the flow does: a reused
    artifact built under another torch says so, as flows.pipeline._finish says it; it never passed the
    drift on."""
    import json

    from saerl import pipeline
    from saerl.artifacts import MANIFEST, ArtifactStore, library_versions
    from saerl.config import PipelineConfig
    from saerl.report import record_results

    store, cfg = ArtifactStore(tmp_path), PipelineConfig()
    write = lambda c, u, b: (b.path / "f.txt").write_text("x") and {}  # noqa: E731
    monkeypatch.setitem(pipeline.RUNNERS, "curriculum", write)
    built = pipeline.run_stage(store, cfg, "curriculum", {})
    manifest = built.ref.file(MANIFEST)
    saved = json.loads(manifest.read_text())
    saved["library_versions"]["torch"] = "0.0"  # as if built under another torch
    manifest.write_text(json.dumps(saved))
    reason = record_results(store, cfg, {"curriculum": built}).stages["curriculum"].reason
    assert "library versions" not in reason, "a computed run names no drift"
    again = pipeline.run_stage(store, cfg, "curriculum", {})
    why = record_results(store, cfg, {"curriculum": again}).stages["curriculum"].reason
    now = library_versions()["torch"]
    assert not again.computed, "reused"
    assert why == ("cached: same code version, inputs and config as a stored artifact; built with other library "
                   f"versions: torch 0.0 (now {now})"), why


def test_a_record_of_a_path_its_source_ignored_still_reads_as_a_config():
    """Before session 33 a config could name data.path beside source sample or testbed (the run ignored the path);
    the config refuses that now, and `saerl relog` of such a run failed on it. The record's path is dropped."""
    from saerl.config import build_config, flatten
    from saerl.report import recorded_config

    flat = {**flatten(build_config({})), "data.path": "/d/train.jsonl"}
    assert flat["data.source"] == "sample"
    cfg = build_config(recorded_config(flat), where="run record x")
    assert cfg.data.path is None and cfg.data.source == "sample"
    kept = {**flatten(build_config({"data": {"source": "file", "path": "/d/t.jsonl"}}))}
    assert build_config(recorded_config(kept)).data.path == "/d/t.jsonl"


def test_a_record_naming_a_field_the_schema_has_lost_still_reads_as_a_config(caplog):
    """`saerl relog` of a record saved before score.ood_topic_fraction was removed failed with "unknown key": such
    fields are left out, with a warning naming them; entries of a mapping field (eval.sets.NAME) are kept."""
    from saerl.config import build_config, flatten
    from saerl.report import recorded_config

    flat = {**flatten(build_config({"eval": {"sets": {"gsm": "/d/test.jsonl"}}})), "score.ood_topic_fraction": 0.3,
            "gone_section.x": 1}
    with caplog.at_level("WARNING", logger="saerl.report"):
        cfg = build_config(recorded_config(flat), where="run record x")
    assert "gone_section.x, score.ood_topic_fraction" in caplog.text
    assert str(cfg.eval.sets["gsm"]).endswith("test.jsonl")


def test_a_gone_evaluation_of_an_older_saerl_is_not_promised_back_by_the_same_config(tmp_path):
    """After gc, a run an older saerl made was told "run the same config again to rebuild it": today's code builds
    other keys, so the report said "gone" for ever. It says an older saerl built it; today's own runs keep the hint."""
    from saerl.report import format_text, load_report
    from saerl.runs import RunRecord, StageRecord, current_code_version, save_run

    def report_of(version: str, train: str | None = None) -> str:
        stages = {"evaluate": StageRecord(stage="evaluate", key="k" * 16, status="computed", reason="", config={},
                                          inputs={}, path=str(tmp_path / "gone"), code_version=version)}
        if train is not None:  # an upstream stage of an older saerl: the evaluation's key moves with it
            stages["train:saerl:0"] = StageRecord(stage="train:saerl:0", key="t" * 16, status="computed", reason="",
                                                  config={}, inputs={}, path=str(tmp_path / "gone"), code_version=train)
        folder = tmp_path / f"{version}-{train}"
        save_run(folder, RunRecord(name="old", stages=stages))
        return format_text(load_report(folder))

    now = current_code_version("evaluate")
    old = report_of("1")
    assert f"an older saerl built this run (evaluate version 1 -> {now})" in old
    assert "run the same config again to rebuild it" not in old
    assert "run the same config again to rebuild it" in report_of(now)
    assert "an older saerl built this run (train version 1 -> " in report_of(now, "1")


def test_run_all_says_how_to_record_its_run_and_the_recipe_works(tmp_path):
    """run_all's results were neither recorded (not seen by status/report/export) nor kept by `saerl gc`, and
    nothing said so: its docstring gives the calls, which (run as written there) make the run seen and kept."""
    import textwrap

    from saerl.artifacts import ArtifactStore
    from saerl.gc import collect
    from saerl.pipeline import run_all
    from saerl.runs import UnknownRun, load_run
    from saerl.status import run_status

    doc = run_all.__doc__ or ""
    assert "saves no run record" in doc and "saerl gc" in doc
    recipe = textwrap.dedent(doc.split("::", 1)[1]) if "::" in doc else ""
    assert "record_results(store, cfg, results)" in recipe and "save_run(store.root" in recipe
    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "runtime.progress=false", "tracking.enabled=false"])
    store = ArtifactStore(tmp_path)
    results = run_all(store, cfg, until="ingest")
    with pytest.raises(UnknownRun):  # not recorded: status and report see no run
        load_run(tmp_path, "latest")
    exec(recipe, {"store": store, "cfg": cfg, "results": results})  # noqa: S102 - the docstring's own recipe
    record = load_run(tmp_path, "latest")
    assert list(record.stages) == ["ingest"] and record.run_id in run_status(tmp_path)
    swept = collect(tmp_path, dry_run=True, min_age_hours=0)
    assert not swept.removed and [e.key for e in swept.referenced] == [results["ingest"].ref.key]


def test_relog_tags_the_versions_machine_and_command_the_record_kept(tmp_path):
    """A relog of a run that computed nothing tagged the library versions installed at relog time; the record keeps
    those of the run's start now (with its machine and command), and a relog tags them and logs its config file."""
    import yaml
    from mlflow.tracking import MlflowClient

    from saerl.config import PipelineConfig
    from saerl.report import relog
    from saerl.runs import INVOCATION, MACHINE, UNTIL, VERSIONS, RunRecord, save_run

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    client = MlflowClient(tracking_uri=uri)
    extra = {VERSIONS: {"python": "3.0.1", "torch": "0.0.1"}, MACHINE: {"cpu": "abacus"}, UNTIL: "ingest",
             INVOCATION: "saerl run c.yaml --until ingest"}
    record = RunRecord(name="kept", config=flatten(PipelineConfig(name="kept")), extra=extra)
    save_run(tmp_path, record)
    parent = relog(tmp_path, record, uri)
    tags = client.get_run(parent).data.tags
    assert tags["saerl.version.torch"] == "0.0.1" and tags["saerl.version.python"] == "3.0.1"
    assert tags["saerl.versions_from"] == "run record" and tags["saerl.machine.cpu"] == "abacus"
    assert tags["saerl.invocation"] == "saerl run c.yaml --until ingest" and tags["saerl.until"] == "ingest"
    text = (Path(client.download_artifacts(parent, "config.yaml", str(tmp_path))).read_text())
    assert yaml.safe_load(text)["name"] == "kept" and "--until ingest" in text


def test_the_report_says_what_produced_its_numbers_and_how_to_run_it_again(tmp_path):
    """The report (text and HTML, to share a result without MLflow) named no commit, version, machine or config
    value: a reader could not tell what produced the numbers."""
    from saerl.report import format_text, load_report, render_html
    from saerl.runs import GIT, INVOCATION, MACHINE, UNTIL, VERSIONS, RunRecord, StageRecord, save_run

    cfg = load_config(None, ["name=prov", "curriculum.mix_ratio=0.37"])
    extra = {GIT: {"saerl.git_commit": "0123abcd" * 5, "saerl.git_dirty": "true", "saerl.git_diff": "feedfacecafe",
                   "saerl.git_dirty_files": "saerl/runners.py"},
             VERSIONS: {"saerl": "0.1.0", "torch": "2.0.0", "python": "3.11.7"}, MACHINE: {"cpu": "abacus"},
             UNTIL: "curriculum", INVOCATION: "saerl run c.yaml --until curriculum"}
    rec = RunRecord(name="prov", config=flatten(cfg), extra=extra, stages={"ingest": StageRecord(
        stage="ingest", key="k" * 16, status="computed", reason="computed", config={}, inputs={"file": "7a6ab4153dca"},
        path=str(tmp_path / "gone"))})
    save_run(tmp_path, rec)
    report = load_report(tmp_path)
    for page in (format_text(report), render_html(report)):
        assert "Provenance" in page and "0123abcd0123" in page and "uncommitted changes" in page
        assert "feedfacecafe" in page and "torch 2.0.0" in page and "python 3.11.7" in page and "abacus" in page
        assert "curriculum.mix_ratio=0.37" in page and "7a6ab4153dca" in page
        assert "saerl run config.yaml runtime.artifact_root=NEW_ROOT tracking.uri=NEW_URI --until curriculum" in page
        assert "train.max_steps=" not in page, "only the fields the run set"


def test_the_property_table_says_which_tokens_the_text_baseline_read():
    """The text baseline's TF-IDF reads character n-grams since properties version 2 (word tokens made a Chinese clause
    one token): the report names the analyzer its rows record (pool), and says nothing for a report without it."""
    from saerl.report import property_notes

    rows = pl.DataFrame({"property": ["topic_clusters", "difficulty", "difficulty"], "metric": ["nmi", "spearman_id",
                         "spearman_ood"], "features": ["text", "text", "sae"], "value": [0.5, 0.6, 0.7],
                         "model": ["kmeans", "ridge", "ridge,ridge"], "pool": ["char_wb1-3", "char_wb1-3", "max,max"]})
    assert property_notes(rows) == ["text: TF-IDF of the prompts' character 1-3-grams inside words "
                                    "(score.text_analyzer=char_wb)"]
    old = rows.with_columns(pl.when(pl.col("features") == "text").then(None).otherwise(pl.col("pool")).alias("pool"))
    assert property_notes(old) == [] and property_notes(rows.drop("pool")) == []


@pytest.mark.slow
def test_cli_report_relog_logs_a_finished_run_and_names_its_parent(smoke_run, tmp_path, capsys):
    """`saerl report RUN --relog --uri URI` was never run through the command line: it prints the report, logs the
    run into the store at URI (a parent named after the run with a nested run per stage) and says the parent's id."""
    from mlflow.tracking import MlflowClient

    from flows.cli import main
    from saerl.tracking import RUN_ID_TAG

    root, record = smoke_run
    uri = f"sqlite:///{tmp_path / 'relog.db'}"
    assert main(["report", record.run_id, "--root", str(root), "--html", str(tmp_path / "r.html"), "--relog",
                 "--uri", uri]) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if line.startswith("re-logged run")]
    assert len(said) == 1 and said[0].startswith(f"re-logged run {record.run_id} into MLflow: parent run "), out
    parent_id = said[0].rsplit(" ", 1)[1]
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_id)
    assert parent.data.tags[RUN_ID_TAG] == record.run_id and parent.data.tags["saerl.relogged"] == "true"
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert {r.info.run_name for r in children} == set(record.stages)


def _bare_record(root: Path, **tracking) -> str:
    """A finished run of no stages saved under `root` (its config's tracking section as given); out: its run id."""
    from saerl.config import PipelineConfig
    from saerl.privacy import redacted
    from saerl.runs import RunRecord, save_run

    record = RunRecord(name="bare", config=redacted(flatten(PipelineConfig(name="bare", tracking=tracking))))
    save_run(root, record)
    return record.run_id


def test_cli_report_relog_of_a_run_tracked_with_credentials_asks_for_the_uri(tmp_path, capsys):
    """A run tracked at a URL with credentials keeps it masked in its record: `saerl report --relog` cannot send it
    there and says, exit status 1, to give the URI with --uri (it does not log into the masked address)."""
    from flows.cli import main

    run_id = _bare_record(tmp_path, uri="http://alice:secret@mlflow.example:5000")
    assert main(["report", run_id, "--root", str(tmp_path), "--html", str(tmp_path / "r.html"), "--relog"]) == 1
    captured = capsys.readouterr()
    assert f"run {run_id} was tracked at http://***@mlflow.example:5000" in captured.err
    assert "give the URI with --uri" in captured.err and "secret" not in captured.err
    assert "re-logged" not in captured.out


def test_cli_report_relog_into_a_store_it_cannot_read_names_the_store(tmp_path, capsys):
    """An --uri whose store is not one (here a file that is not SQLite) is refused with exit status 1, naming the
    store, instead of a traceback; nothing is logged."""
    from flows.cli import main

    run_id = _bare_record(tmp_path)
    bad = tmp_path / "not-a-store.db"
    bad.write_bytes(b"this is not an SQLite database" * 100)
    assert main(["report", run_id, "--root", str(tmp_path), "--html", str(tmp_path / "r.html"), "--relog",
                 "--uri", f"sqlite:///{bad}"]) == 1
    captured = capsys.readouterr()
    assert f"saerl: could not read the MLflow store at sqlite:///{bad} (" in captured.err
    assert "re-logged" not in captured.out


def test_cli_report_relog_that_mlflow_fails_to_log_exits_1_naming_the_store(tmp_path, capsys, monkeypatch):
    """A store that answers but fails the logging itself (here: creating the parent run raises): relog's Tracker
    turns itself off with a warning, and the command says it could not log the run, exit status 1."""
    from mlflow.tracking import MlflowClient

    from flows.cli import main

    run_id = _bare_record(tmp_path)

    def refuse(self, *args, **kwargs):
        raise OSError("disk quota exceeded")

    monkeypatch.setattr(MlflowClient, "create_run", refuse)
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["report", run_id, "--root", str(tmp_path), "--html", str(tmp_path / "r.html"), "--relog",
                 "--uri", uri]) == 1
    assert f"saerl: could not log run {run_id} to MLflow at {uri} (see the warning above)" in capsys.readouterr().err


def test_relog_of_a_run_whose_artifact_is_gone_logs_the_other_stages_and_warns(tmp_path, caplog):
    """A stage whose artifact was deleted since the run (gc, by hand) is skipped with a warning naming it and its
    folder; the stages whose artifacts remain are logged."""
    from mlflow.tracking import MlflowClient

    from saerl.artifacts import ArtifactStore
    from saerl.config import PipelineConfig
    from saerl.report import relog
    from saerl.runs import RunRecord, StageRecord, save_run

    store = ArtifactStore(tmp_path)
    kept, _ = store.ensure("score", "s" * 20, lambda b: (b.path / "scores.parquet").write_bytes(b""))
    gone = tmp_path / "curriculum" / ("c" * 20)
    stages = {name: StageRecord(stage=name, key=path.name, status="computed", reason="computed: first", config={},
                                inputs={}, path=str(path))
              for name, path in (("score", Path(kept.path)), ("curriculum", gone))}
    record = RunRecord(name="gone", config=flatten(PipelineConfig(name="gone")), stages=stages)
    save_run(tmp_path, record)
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    with caplog.at_level("WARNING", logger="saerl.report"):
        parent = relog(tmp_path, record, uri)
    assert f"relog: curriculum's artifact {gone} is gone; its stage run is not logged" in caplog.text
    client = MlflowClient(tracking_uri=uri)
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent}'")
    assert [r.info.run_name for r in children] == ["score"]


REPORT_WIDTH = 80  # the terminal a report's free-text columns must fit
LONG_NOTE = ("the policy cannot read the prompts: its greedy accuracy on the held-out set is 0.0% before training, "
             "so the arms' differences measure noise; use a model that reads them (model.name_or_path)")


def test_report_free_text_columns_fit_the_terminals_width_and_number_columns_never_wrap():
    """`saerl report`'s notes, stage runs' why and provenance ran past an 80-column terminal: at a width, a table whose
    last column is free text (FREE_TEXT_COLUMNS) wraps it at word boundaries, its words read back whole; a table of
    numbers is left as it is, and without a width (stdout no terminal) every table keeps one line per row."""
    from saerl.report import notes_table

    notes = notes_table([("train:saerl:0", LONG_NOTE), ("heldout:reach_probe:1", LONG_NOTE + " (again)")])
    fitted = format_table(notes, REPORT_WIDTH).splitlines()
    assert [line for line in fitted if len(line) > REPORT_WIDTH] == [] and len(fitted) > notes.height + 1
    column = fitted[0].index("note")
    read: dict[str, list[str]] = {}
    for line in fitted[1:]:  # a row's stage, or a continuation line of the row above
        if line[:column].strip():
            read[line[:column].strip()] = []
        list(read.values())[-1].append(line[column:].strip())
    assert {stage: " ".join(pieces) for stage, pieces in read.items()} == dict(notes.iter_rows())
    assert len(format_table(notes).splitlines()) == notes.height + 1
    arms = arm_table(_two_arms(), None)
    assert format_table(arms, REPORT_WIDTH) == format_table(arms)


CJK_NOTE = ("策略无法读懂提示：它在训练前对留出集的贪心准确率为0.0%，因此各组之间的差异只是噪声；请使用能读懂提示的模型"
            "（model.name_or_path）。プロンプトを読めるモデルを使ってください。")  # no space in it, as CJK text has none


def test_a_report_note_in_cjk_fits_the_terminals_width():
    """A Chinese or Japanese note (a stage's warning quoting a prompt) was wrapped counting characters, and each
    CJK character takes two terminal columns: its lines ran up to twice past the terminal. Every line now fits the
    width in terminal columns, the note broken between its characters and read back whole."""
    from saerl.report import notes_table
    from saerl.terminal import display_width

    notes = notes_table([("train:saerl:0", CJK_NOTE)])
    fitted = format_table(notes, REPORT_WIDTH).splitlines()
    assert [line for line in fitted if display_width(line) > REPORT_WIDTH] == [] and len(fitted) > notes.height + 1
    column = fitted[0].index("note")
    assert "".join(line[column:] for line in fitted[1:]) == CJK_NOTE


def test_sections_of_a_run_stopped_before_its_evaluation_say_where_and_keep_its_clusters():
    """A run a person stopped (Ctrl-C) before evaluate: the Arms section says at which stage run, and the tables it
    did make (clusters) still have their sections, before the stage runs and provenance."""
    from saerl.report import RunReport, sections
    from saerl.runs import STOPPED, RunRecord

    clusters = pl.DataFrame({"cluster": [0, 1], "size": [3, 1], "share": [0.75, 0.25], "top_features": [[4], [7]],
                             "top_topic": [None, None], "top_topic_share": [None, None]})
    report = RunReport(RunRecord(name="stopped", extra={STOPPED: "train_rl: SIGINT"}), clusters=clusters)
    found = dict(sections(report))
    assert found["Arms"] == "the run was stopped before its evaluation, at train_rl: SIGINT"
    assert [title for title, _ in sections(report)][1:3] == ["Clusters", "Stage runs"]
    assert found["Clusters"].height == 2


def test_relog_of_a_run_tracked_with_credentials_asks_for_the_uri(tmp_path):
    """The record keeps a tracking URI with its credentials masked: relog without --uri refuses, saying how to give
    it, before touching any store."""
    from saerl.config import PipelineConfig
    from saerl.privacy import REDACTED
    from saerl.report import relog
    from saerl.runs import RunRecord, save_run

    cfg = PipelineConfig(name="secret", tracking={"uri": f"https://user:{REDACTED}@mlflow.example"})
    record = RunRecord(name="secret", config=flatten(cfg))
    save_run(tmp_path, record)
    with pytest.raises(RuntimeError, match=r"whose credentials its record does not keep: give the URI with --uri"):
        relog(tmp_path, record)
    assert not (tmp_path / "mlflow.db").exists()
