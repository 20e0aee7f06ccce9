"""Ablation sweeps: grid parsing and its errors, the cartesian product, the result table, `saerl ablate`
failing fast, and (slow) the ablation flow paying for the shared stages once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from saerl.config import ConfigError, load_config
from saerl.sweep import (
    PARAM_GRID,
    format_sweep,
    format_value,
    parse_axis,
    parse_grid,
    plan_sweep,
    planned_keys,
    planned_run_keys,
    setting_label,
    settings,
    shared_until,
    sweep_table,
    with_setting,
)

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def base():
    return load_config(SMOKE).model_dump(mode="json")


def test_axis_values_are_yaml():
    assert parse_axis("curriculum.mix_ratio=0,0.1,0.3") == ("curriculum.mix_ratio", [0, 0.1, 0.3])
    assert parse_axis("curriculum.ordering=easy_to_hard, random") == ("curriculum.ordering", ["easy_to_hard", "random"])
    assert parse_axis("train.seeds=[0,1],[2]") == ("train.seeds", [[0, 1], [2]])
    assert parse_axis("eval.target_accuracy=null,0.5") == ("eval.target_accuracy", [None, 0.5])
    assert parse_axis("data.path='a,b.jsonl',c.jsonl") == ("data.path", ["a,b.jsonl", "c.jsonl"])


def test_a_grid_integer_with_a_leading_zero_is_decimal_as_in_an_override(base):
    """YAML 1.1 read --grid train.max_steps=010,20 as octal 8: the sweep trained 8 steps where 'train.max_steps=010'
    trains 10; a text field keeps its digits (a commit hash)."""
    key, values = parse_axis("train.max_steps=010,20")
    assert [c.train.max_steps for _, c in plan_sweep(base, {key: values})] == [10, 20]
    assert parse_axis("model.revision=0123456,abc")[1] == ["0123456", "abc"]


@pytest.mark.parametrize("text, expected", [
    ("curriculum.mix_ratio", "expected KEY=V1,V2"),
    ("curriculum.mix_ratio=", "no values for 'curriculum.mix_ratio'; write curriculum.mix_ratio=V1,V2"),
    ("curriculum.mix_ratio=[0,1", "quote one that holds a comma or bracket"),
])
def test_unreadable_axis_names_the_key_and_the_syntax(text, expected):
    with pytest.raises(ConfigError, match="--grid curriculum.mix_ratio") as err:
        parse_axis(text)
    assert expected in str(err.value)


def test_key_given_twice_suggests_the_merged_axis():
    with pytest.raises(ConfigError, match=r"give it once with every value: --grid curriculum.mix_ratio=0,0.1,0.3"):
        parse_grid(["curriculum.mix_ratio=0,0.1", "curriculum.mix_ratio=0.3"])


def test_grid_from_a_mapping_keeps_its_order_and_wants_lists():
    assert parse_grid({"b.x": [1], "a.y": (2, 3)}) == {"b.x": [1], "a.y": [2, 3]}
    with pytest.raises(ConfigError, match="grid key 'a.y': values must be a list"):
        parse_grid({"a.y": 0.1})


def test_a_grid_key_with_no_values_is_refused_where_it_is_read_and_where_it_is_planned(base):
    """A deployment's grid {"curriculum.mix_ratio": []} passed parse_grid, plan_sweep returned no settings without
    a word, and the ablation flow died with IndexError at its first child; now both refuse it naming the key."""
    with pytest.raises(ConfigError, match=r"grid key 'curriculum.mix_ratio': no values; write "
                                          r"\{curriculum.mix_ratio: \[V1, V2\]\}"):
        parse_grid({"curriculum.mix_ratio": [], "curriculum.ordering": ["random"]}, PARAM_GRID)
    with pytest.raises(ConfigError, match=r"grid key 'curriculum.mix_ratio': no values; write "
                                          r"grid: \{curriculum.mix_ratio: \[V1, V2\]\}"):
        plan_sweep(base, {"curriculum.ordering": ["random"], "curriculum.mix_ratio": []}, source=PARAM_GRID)


@pytest.mark.parametrize("grid, expected", [
    ({"curriculum.mix_ratoi": [0, 1]}, "unknown key 'curriculum.mix_ratoi' (did you mean 'curriculum.mix_ratio'?)"),
    ({"mix_ratio": [0, 1]}, "did you mean 'curriculum.mix_ratio'?"),
    ({"curriculum": [0, 1]}, "'curriculum' is a section; sweep one of its fields, e.g. --grid curriculum."),
    ({"runtime.workers": [1, 2]}, "changes no result (no stage reads it)"),
    ({"tracking.enabled": [True, False]}, "changes no result"),
    ({"train.save_every": [0, 5]}, "changes no result"),
    ({"curriculum.mix_ratio": [0.1, 2]}, "--grid curriculum.mix_ratio: value 2 is invalid: field 'curriculum.mix_ratio'"),
    ({"curriculum.ordering": ["easy_to_hrd"]}, "value easy_to_hrd is invalid"),
    ({"curriculum.mix_ratio": [0, 0.0]}, "values 0 and 0.0 are the same setting; list each value once"),
    ({}, "needs at least one --grid KEY=V1,V2"),
    ({"curriculum.mix_ratio": []}, "--grid curriculum.mix_ratio: no values; write --grid curriculum.mix_ratio=V1,V2"),
])
def test_invalid_grids_name_the_key_and_the_fix(base, grid, expected):
    with pytest.raises(ConfigError) as err:
        plan_sweep(base, grid)
    assert expected in str(err.value)


def test_a_swept_key_cannot_also_be_an_override(base):
    with pytest.raises(ConfigError, match="'curriculum.mix_ratio' is both an override"):
        plan_sweep(base, {"curriculum.mix_ratio": [0, 1]}, ["curriculum.mix_ratio=0.5"])


@pytest.mark.parametrize("grid, until, expected", [
    ({"sae.l1_coefficient": [1, 2]}, "sae",
     "--grid sae.l1_coefficient changes no stage run up to --until sae, so its values would repeat one run: the sae "
     "stage ignores it under this config"),
    ({"sae.l1_coefficient": [1, 2], "curriculum.mix_ratio": [0, 0.5]}, None, "--grid sae.l1_coefficient changes no "
     "stage run, so"),
    ({"train.max_steps": [3, 4]}, "score", "--grid train.max_steps changes no stage run up to --until score, so its "
     "values would repeat one run: no stage up to --until score reads it (curriculum, train do); sweep it with "
     "--until curriculum or a later stage, or drop it from the grid"),
])
def test_a_grid_key_no_stage_reads_under_this_config_or_until_is_refused(base, grid, until, expected):
    """`saerl ablate configs/smoke.yaml --grid sae.l1_coefficient=1,2` (a TopK SAE reads no L1 coefficient) and
    `--grid train.max_steps=3,4 --until score` ran their settings as identical children, without a word."""
    with pytest.raises(ConfigError) as err:
        plan_sweep(base, grid, until=until)
    assert expected in str(err.value) and "drop it from the grid" in str(err.value)



@pytest.mark.parametrize("grid, until, stages", [
    ({"testbed.log_every": [7, 9]}, None, "testbed stage ignores"),
    ({"score.quality_threshold": [0.3, 0.7]}, None, "curriculum stage ignores"),
    ({"curriculum.fit_budget": [True, False], "curriculum.ordering": ["random", "frontier"]}, "curriculum",
     "curriculum stage ignores"),
    ({"extract.token_block_rows": [64, 128]}, "extract", "extract stage ignores"),
])
def test_a_grid_over_a_field_keyed_at_its_default_under_this_config_is_refused(base, grid, until, stages):
    """A field a stage keys at its schema default where it ignores it (saerl.stages.pinned_fields) changes no run:
    `saerl ablate configs/smoke.yaml --grid testbed.log_every=7,9` (the LM's loss log), a quality threshold with no
    quality column (smoke's data.quality unset here), fit_budget under orderings that do not climb. Each is refused,
    saying that stage ignores it under this config, as for an unread field."""
    base = {**base, "data": {**base["data"], "quality": None}}
    with pytest.raises(ConfigError) as err:
        plan_sweep(base, grid, until=until)
    key = next(iter(grid))
    assert f"--grid {key} changes no stage run" in str(err.value)
    assert f"the {stages} it under this config" in str(err.value) and "drop it from the grid" in str(err.value)


def test_a_grid_of_values_that_give_a_stage_the_same_input_is_refused(base):
    """extract.layer -1 and 1 are the same block of the smoke model's 2: the extract stage reads them alike, so the
    settings would be one run twice; refused, saying why and to sweep values that differ."""
    with pytest.raises(ConfigError) as err:
        plan_sweep(base, {"extract.layer": [-1, 1]}, until="extract")
    assert str(err.value).startswith("--grid extract.layer changes no stage run up to --until extract, so its values "
                                     "would repeat one run: every value gives the extract stage the same input under "
                                     "this config; drop it from the grid, or sweep values that differ there")


def test_a_grid_key_of_a_stage_this_config_never_runs_is_refused(tmp_path):
    """testbed.* under data.source=file: the testbed stage is not in this config's plan, so no stage run reads the
    key and every setting would be the same run: refused, saying to drop it from the grid."""
    train, held_out = tmp_path / "train.jsonl", tmp_path / "held_out.jsonl"
    train.write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    held_out.write_text('{"question": "What is 2+2?", "answer": "4"}\n')
    base = load_config(None, ["data.source=file", f"data.path={train}", "model.name_or_path=some/model",
                              "model.revision=abc", f"eval.sets={{h: {held_out}}}"]).model_dump(mode="json")
    with pytest.raises(ConfigError) as err:
        plan_sweep(base, {"testbed.n_pool": [10, 20]})
    assert str(err.value).startswith("--grid testbed.n_pool changes no stage run, so its values would repeat one run: "
                                     "only the testbed stage reads it, which this config never runs")
    with pytest.raises(ConfigError) as err:  # with --until: it said "sweep it with --until testbed", which does nothing
        plan_sweep(base, {"testbed.n_pool": [10, 20]}, until="ingest")
    assert "only the testbed stage reads it, which this config never runs" in str(err.value)
    assert "sweep it with" not in str(err.value)

def test_settings_that_would_repeat_one_run_are_named(base, caplog):
    """A key read under some settings of the grid but not others: the settings that coincide are named in a warning,
    not refused (the full grid still gives its one table; the repeated child reuses the first one's artifacts)."""
    import logging

    grid = {"sae.architecture": ["topk", "standard"], "sae.l1_coefficient": [1, 2]}
    with caplog.at_level(logging.WARNING, logger="saerl.sweep"):
        assert len(plan_sweep(base, grid, until="sae")) == 4
    assert ("grid settings 'architecture=topk l1_coefficient=1' and 'architecture=topk l1_coefficient=2' run the same "
            "stage runs up to --until sae") in caplog.text and "drop a value that makes them coincide" in caplog.text
    assert len(plan_sweep(base, {"sae.architecture": ["topk", "standard"], "sae.k": [4]}, until="sae")) == 2
    assert len(plan_sweep(base, {"train.max_steps": [3, 4]}, until="curriculum")) == 2, "curriculum reads it"


def test_cli_refuses_a_grid_that_repeats_one_run_before_a_server_starts(tmp_path, capsys):
    started = time.time()
    assert main(["ablate", str(SMOKE), "--grid", "train.max_steps=3,4", "--until", "score",
                 "--root", str(tmp_path)]) == 2
    assert "--grid train.max_steps changes no stage run up to --until score" in capsys.readouterr().err
    assert time.time() - started < 30 and not any(tmp_path.iterdir()), "refused before a server or a stage starts"


def test_product_first_key_slowest_and_configs_validated(base):
    grid = parse_grid(["curriculum.mix_ratio=0,0.1,0.3", "curriculum.ordering=easy_to_hard,random"])
    points = settings(grid)
    assert len(points) == 6
    assert points[:3] == [{"curriculum.mix_ratio": 0, "curriculum.ordering": "easy_to_hard"},
                          {"curriculum.mix_ratio": 0, "curriculum.ordering": "random"},
                          {"curriculum.mix_ratio": 0.1, "curriculum.ordering": "easy_to_hard"}]
    planned = plan_sweep(base, grid)
    assert [s for s, _ in planned] == points
    assert [(c.curriculum.mix_ratio, c.curriculum.ordering) for _, c in planned][-1] == (0.3, "random")
    assert all(c.train.max_steps == 3 for _, c in planned), "the rest of the base config is kept"
    assert base["curriculum"]["mix_ratio"] == 0.2, "the base is not modified"


def test_with_setting_and_labels():
    assert with_setting({"a": {"x": 1, "y": 2}}, {"a.x": 5}) == {"a": {"x": 5, "y": 2}}
    assert setting_label({"curriculum.mix_ratio": 0.1, "curriculum.ordering": "random"}) == "mix_ratio=0.1 ordering=random"
    assert setting_label({"score.seed": 1, "curriculum.seed": 2}) == "score.seed=1 curriculum.seed=2", "clashing leaves"
    assert [format_value(v) for v in (None, [0, 1], "a,b", True)] == ["null", "[0, 1]", "'a,b'", "true"]


def _child(tmp_path: Path, name: str, acc: dict[str, float], steps: dict[str, float | None],
           statuses: dict[str, str]) -> dict:
    """A run record whose evaluate artifact holds the two tables the sweep reads."""
    folder = tmp_path / name
    folder.mkdir()
    rows = [{"set": "heldout", "arm": arm, "accuracy": a, "diff_pts": 0.0 if arm == "vanilla" else 100 * (a - acc["vanilla"]),
             "verdict": "reference" if arm == "vanilla" else "within noise", "metric": m}
            for m in ("greedy", "mean_k") for arm, a in acc.items()]
    pl.DataFrame(rows).write_parquet(folder / "comparison.parquet")
    stt = [{"arm": arm, "seed": 0, "target": 0.25, "steps": s, "reached": s is not None, "mean_steps": s, "set": "heldout"}
           for arm, s in steps.items()]
    pl.DataFrame(stt, schema_overrides={"steps": pl.Float64, "mean_steps": pl.Float64}).write_parquet(
        folder / "steps_to_target.parquet")
    stages = {n: {"status": st, "path": str(folder)} for n, st in statuses.items()}
    return {"stages": stages}


def test_table_reads_greedy_accuracy_and_steps_to_target_per_setting_and_arm(tmp_path):
    every = ["testbed", "extract", "score", "curriculum", "train:saerl:0", "train:vanilla:0", "evaluate"]
    first = _child(tmp_path, "a", {"vanilla": 0.25, "saerl": 0.35}, {"saerl": 2.0, "vanilla": 4.0},
                   dict.fromkeys(every, "computed"))
    second = _child(tmp_path, "b", {"vanilla": 0.25, "saerl": 0.2}, {"saerl": None, "vanilla": 4.0},
                    {n: "computed" if n in ("curriculum", "train:saerl:0", "evaluate") else "cached" for n in every})
    children = [({"curriculum.mix_ratio": 0}, first), ({"curriculum.mix_ratio": 0.3}, second)]
    table = sweep_table(children)
    assert table.height == 4 and set(table["setting"]) == {"mix_ratio=0", "mix_ratio=0.3"}
    saerl = table.filter(pl.col("arm") == "saerl").sort("setting")
    assert saerl["accuracy"].to_list() == [0.35, 0.2] and saerl["steps_to_target"].to_list() == [2.0, None]
    assert table.filter(pl.col("arm") == "vanilla")["diff_pts"].to_list() == [None, None]
    text = format_sweep(children)
    assert "ablation: 2 settings" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("mix_ratio=0.3") and " saerl " in ln)
    assert "20.0%" in line and "-5.0" in line and line.rstrip().endswith("n/a")
    assert "35.0%" in text and "2 (target 25.0%)" in text
    reuse = text.split("stage runs per setting")[1].splitlines()
    assert any("computed: curriculum train:saerl:0 evaluate" in ln for ln in reuse)
    assert any("cached:   testbed extract score train:vanilla:0" in ln for ln in reuse)


def test_table_without_an_evaluate_stage_says_na():
    text = format_sweep([({"curriculum.mix_ratio": 0}, {"stages": {"curriculum": {"status": "computed", "path": ""}}})])
    row = next(ln for ln in text.splitlines() if ln.startswith("mix_ratio=0 "))
    assert row.split()[1:4] == ["n/a", "n/a", "n/a"]


def test_cli_grid_errors_fail_fast(capsys):
    started = time.time()
    assert main(["ablate", str(SMOKE), "--grid", "curriculum.mix_ratoi=0,0.1"]) == 2
    assert "did you mean 'curriculum.mix_ratio'?" in capsys.readouterr().err
    assert main(["ablate", str(SMOKE), "--grid", "curriculum.mix_ratio=0,0.1", "curriculum.batch_sise=2"]) == 2
    assert "curriculum.batch_sise" in capsys.readouterr().err, "overrides after --grid are checked too"
    assert main(["ablate", str(SMOKE), "--grid", "curriculum.mix_ratio=0,0.1", "--until", "curiculum"]) == 2
    assert "unknown stage 'curiculum'" in capsys.readouterr().err
    assert time.time() - started < 5, "grid errors must come before any server/model start"


def test_cli_config_after_grid_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["ablate", "--grid", "curriculum.mix_ratio=0,0.1", str(SMOKE)])
    assert "put CONFIG first" in capsys.readouterr().err


@pytest.mark.slow
def test_ablation_flow_pays_for_shared_stages_once(prefect_api, tmp_path, capsys):
    from flows.sweep import ablation_flow

    cfg = load_config(SMOKE, [f"runtime.artifact_root={tmp_path / 'root'}", "tracking.enabled=false"])
    out = ablation_flow(config=cfg.model_dump(mode="json"), grid={"curriculum.mix_ratio": [0.0, 0.5]})
    first, second = ({k: v["status"] for k, v in run["stages"].items()} for run in out["runs"])
    shared = ("testbed", "ingest", "extract", "sae", "encode", "score", "properties")
    assert all(first[s] == "computed" for s in shared)
    assert all(second[s] == "cached" for s in shared), second
    assert second["curriculum"] == second["train:saerl:0"] == second["evaluate"] == "computed"
    assert second["train:vanilla:0"] == "cached", "vanilla reads no curriculum"
    assert [r["arm"] for r in out["table"]] == ["vanilla", "saerl", "vanilla", "saerl"]
    text = capsys.readouterr().out
    assert "ablation: 2 settings" in text and "steps to target" in text
    assert "mix_ratio=0.5" in text and "cached:   testbed ingest extract sae encode score properties train:vanilla:0" in text
    assert "mix_ratio=0.5 | [curriculum] computed" in text, "each child's lines carry its setting"
    assert [r["extra"]["setting"] for r in out["runs"]] == ["mix_ratio=0.0", "mix_ratio=0.5"]
    kept = tmp_path / "root" / "sweeps" / out["sweep_id"]
    assert pl.read_parquet(kept / "sweep.parquet")["arm"].to_list() == ["vanilla", "saerl", "vanilla", "saerl"]
    assert "ablation: 2 settings" in (kept / "sweep.txt").read_text() and f"wrote {kept / 'sweep.parquet'}" in text


def test_shared_until_is_the_common_upstream_of_the_settings(base, tmp_path):
    def shared(grid, until=None, over=None):
        configs = [cfg for _, cfg in plan_sweep(over or base, grid)]
        return shared_until(configs, until)

    assert shared({"curriculum.mix_ratio": [0, 0.5]}) == "properties", "a curriculum grid shares everything before it"
    assert shared({"score.baselines": [True, False]}) == "score", "a report grid shares the scores"
    assert shared({"sae.k": [4, 8]}) == "extract"
    assert shared({"train.learning_rate": [1e-5, 2e-5]}) == "curriculum"
    assert shared({"eval.k_samples": [2, 3]}) == "train" and shared({"eval.k_samples": [2, 3]}, "curriculum") == "curriculum"
    assert shared({"testbed.n_pool": [100, 120]}) is None, "the first stage differs: nothing to run once"
    # the testbed differs but extraction (an external encoder over a data file) does not: the shared run goes
    # on to the last sharded stage, so two children never fan out the same extraction at once
    held_out = tmp_path / "held_out.jsonl"  # data that is not the testbed evaluates on a set of its own
    held_out.write_text('{"id": "h0", "prompt": "1 + 1 ?", "answer": "2"}\n')
    other = load_config(SMOKE, ["data.source=sample", "extract.model=some/encoder",
                                f"eval.sets={{held: {held_out}}}"]).model_dump(mode="json")
    assert shared({"testbed.seed": [0, 1]}, over=other) == "encode"
    keys = [planned_keys(cfg) for _, cfg in plan_sweep(other, {"testbed.seed": [0, 1]})]
    assert keys[0]["testbed"] != keys[1]["testbed"] and keys[0]["encode"] == keys[1]["encode"]


def test_table_lists_the_shared_run_first(tmp_path):
    shared = {"stages": {s: {"status": "computed", "path": ""} for s in ("testbed", "extract", "score")}}
    child = {"stages": {"score": {"status": "cached", "path": ""}, "curriculum": {"status": "computed", "path": ""}}}
    text = format_sweep([({"curriculum.mix_ratio": 0}, child)], shared).split("stage runs per setting")[1]
    lines = text.strip().splitlines()
    assert lines[0].split() == ["shared", "upstream", "computed:", "testbed", "extract", "score"]
    assert lines[2].split() == ["mix_ratio=0", "computed:", "curriculum"] and lines[3].split() == ["cached:", "score"]


@pytest.mark.slow
def test_ablation_children_run_side_by_side_on_dask(prefect_api, tmp_path, capfd):
    """On a 2-worker LocalCluster: the shared upstream runs once, then both children at the same time, every
    flow run on the test's one Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from flows.sweep import ablation_flow

    name = f"sweep-dask-{uuid.uuid4().hex[:8]}"  # finds this test's flow runs on the session's server
    root = tmp_path / "root"
    cfg = load_config(SMOKE, [f"name={name}", f"runtime.artifact_root={root}", "tracking.enabled=false",
                              "runtime.task_runner=dask", "runtime.workers=2", "runtime.torch_threads=1"])
    grid = {"curriculum.mix_ratio": [0.0, 0.5]}
    out = ablation_flow(config=cfg.model_dump(mode="json"), grid=grid)

    upstream = ("testbed", "ingest", "extract", "sae", "encode", "score", "properties")
    shared, runs = out["shared"], out["runs"]
    assert {k: v["status"] for k, v in shared["stages"].items()} == dict.fromkeys(upstream, "computed")
    for run in runs:
        status = {k: v["status"] for k, v in run["stages"].items()}
        assert all(status[s] == "cached" for s in upstream), status
        assert status["curriculum"] == status["train:saerl:0"] == status["evaluate"] == "computed", status
    vanilla = sorted(run["stages"]["train:vanilla:0"]["status"] for run in runs)
    assert vanilla == ["cached", "computed"], "one child trains vanilla (it reads no curriculum), the other reuses it"
    for stage in upstream:  # one artifact per shared stage, built once
        assert len([p for p in (root / stage).iterdir() if not p.name.startswith(".")]) == 1, stage
    for (_, child), run in zip(plan_sweep(cfg.model_dump(mode="json"), grid), runs, strict=True):
        assert planned_run_keys(child) == {n: s["key"] for n, s in run["stages"].items()}, "planning chains keys as the flow does"

    with get_client(sync_client=True) as client:  # the runs started on Dask workers reported to this server
        flow_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name)))
        by_name = {r.name: r for r in flow_runs}
        host = by_name[f"{name} | ablation {out['sweep_id']}: 2 settings on Dask"]
        children = [by_name[f"{name} | {label}"] for label in
                    ("shared upstream (until properties)", "mix_ratio=0.0", "mix_ratio=0.5")]
        assert all(r.state.is_completed() for r in (host, *children))
        assert {client.read_task_run(r.parent_task_run_id).flow_run_id for r in children} == {host.id}
        (s0, e0), (s1, e1) = [(r.start_time, r.end_time) for r in children[1:]]
        assert max(s0, s1) < min(e0, e1), f"the settings' flow runs did not overlap: {(s0, e0)} vs {(s1, e1)}"
    text = capfd.readouterr().out  # with what the children printed on the Dask workers
    assert "shared upstream  computed: testbed ingest extract sae encode score properties" in text
    assert shared["extra"]["setting"] == "shared upstream" and [r["extra"]["setting"] for r in runs] == [
        "mix_ratio=0.0", "mix_ratio=0.5"] and len({r["extra"]["sweep"] for r in (shared, *runs)}) == 1
    assert "shared upstream | [score] computed" in text and "mix_ratio=0.5 | [evaluate] computed" in text
    assert "cached:   testbed ingest extract sae encode score" in text and "ablation: 2 settings" in text


def test_ablation_flow_refuses_a_child_that_cannot_evaluate_before_any_child_runs(base, tmp_path):
    """A setting without a held-out set (data.source=sample, no eval.sets) fails before the first child
    starts, not at its own start after the children before it ran (a deployment's grid is checked there only)."""
    from flows.sweep import ablation_flow

    config = with_setting(base, {"runtime.artifact_root": str(tmp_path)})
    with pytest.raises(ValueError, match="no held-out set"):
        ablation_flow.fn(config=config, grid={"data.source": ["testbed", "sample"]})
    assert not (tmp_path / "runs").exists()


def test_the_ablation_flow_names_its_until_parameter_for_a_key_no_stage_reads(base, tmp_path):
    """A deployment's grid that repeats one run is refused by the flow before any child, naming its parameters."""
    from flows.sweep import ablation_flow

    config = with_setting(base, {"runtime.artifact_root": str(tmp_path)})
    with pytest.raises(ConfigError, match="grid key 'train.max_steps' changes no stage run up to until=score.*"
                       "sweep it with until=curriculum"):
        ablation_flow.fn(config=config, grid={"train.max_steps": [3, 4]}, until="score")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("grid, expected", [
    ({"curriculum.mix_ration": [0, 0.5]}, "grid key 'curriculum.mix_ration': unknown key"),
    ({"curriculum": [0, 0.5]}, "e.g. grid: {curriculum."),
    ({"curriculum.mix_ratio": [0, 0.0]}, "grid key 'curriculum.mix_ratio': values 0 and 0.0 are the same setting"),
    ({"curriculum.mix_ratio": [0, 7]}, "grid key 'curriculum.mix_ratio': value 7 is invalid"),
    ({}, "needs at least one key in its grid parameter, {KEY: [V1, V2]}"),
    ({"curriculum.mix_ratio": []}, "grid key 'curriculum.mix_ratio': no values; write {curriculum.mix_ratio: [V1, V2]}"),
    (["curriculum.mix_ratio"], "grid entry 'curriculum.mix_ratio': expected KEY=V1,V2"),
    (["curriculum.mix_ratio=0", "curriculum.mix_ratio=1"], "give it once with every value: grid: {curriculum.mix_ratio: [0, 1]}"),
])
def test_a_deployments_grid_errors_name_its_grid_parameter_not_the_cli_flag(grid, expected):
    """A deployment run's bad `grid` parameter failed with "--grid curriculum.mix_ration: unknown key", naming a
    command-line flag the user never typed."""
    from flows.sweep import ablation_from_file

    with pytest.raises(ConfigError) as err:
        ablation_from_file.fn(config_path=str(SMOKE), grid=grid)
    assert expected in str(err.value) and "--grid" not in str(err.value)
    with pytest.raises(ConfigError, match="put its value into the grid: grid: {curriculum.mix_ratio: \\[...\\]}"):
        ablation_from_file.fn(config_path=str(SMOKE), grid={"curriculum.mix_ratio": [0, 1]},
                              overrides=["curriculum.mix_ratio=0.5"])


def test_the_table_and_text_are_kept_under_the_root(tmp_path):
    from saerl.sweep import SWEEPS_DIR, write_sweep

    child = _child(tmp_path, "a", {"vanilla": 0.25, "saerl": 0.35}, {"saerl": 2.0, "vanilla": 4.0}, {"evaluate": "computed"})
    child["run_id"] = "20260101-000000-000000-aaaa"
    children = [({"curriculum.mix_ratio": 0}, child)]
    table, text = sweep_table(children), format_sweep(children)
    parquet, txt = write_sweep(tmp_path / "root", "S1", table, text)
    assert parquet == tmp_path / "root" / SWEEPS_DIR / "S1" / "sweep.parquet" and txt.name == "sweep.txt"
    back = pl.read_parquet(parquet)
    assert back.equals(table) and set(back["run_id"]) == {child["run_id"]}, "each row names its child run"
    assert txt.read_text() == text + "\n"
    assert sorted(p.name for p in parquet.parent.iterdir()) == ["sweep.parquet", "sweep.txt"], "no temp file left"


class _FakeChild:
    """pipeline_flow (or a Dask child task) standing in for a sweep's child run: records what it was given and
    returns a run record without an evaluate stage."""

    def __init__(self, calls: list):
        self.calls = calls

    def with_options(self, **_):
        return self

    def __call__(self, config, until=None, sweep=None, name=None):
        self.calls.append({"until": until, "sweep": sweep, "mix": config["curriculum"]["mix_ratio"]})
        return {"run_id": f"run-{len(self.calls)}", "stages": {"score": {"status": "cached", "path": ""}}}

    def submit(self, **kwargs):
        from types import SimpleNamespace

        record = self(**kwargs)
        return SimpleNamespace(result=lambda: record, wait=lambda: None, add_done_callback=lambda fn: fn(None))


def test_an_ablation_labels_its_children_and_keeps_its_table(base, tmp_path, monkeypatch, capsys):
    """An ablation only printed its table, and nothing told its children apart in MLflow or `saerl status`:
    each child is now given the sweep id and its setting's label (pipeline_flow names, tags and records it),
    and the table and text are written under ROOT/sweeps/<sweep id>/."""
    import flows.sweep as fs

    calls: list = []
    monkeypatch.setattr(fs, "pipeline_flow", _FakeChild(calls))
    monkeypatch.setattr(fs, "say", lambda message, label=None: print(message))
    config = with_setting(base, {"runtime.artifact_root": str(tmp_path)})
    out = fs.ablation_flow.fn(config=config, grid={"curriculum.mix_ratio": [0.0, 0.5]}, until="curriculum")
    sweep_id = out["sweep_id"]
    assert [c["sweep"] for c in calls] == [
        {"id": sweep_id, "setting": "mix_ratio=0.0", "params": {"sweep.curriculum.mix_ratio": "0.0"}},
        {"id": sweep_id, "setting": "mix_ratio=0.5", "params": {"sweep.curriculum.mix_ratio": "0.5"}}]
    folder = tmp_path / "sweeps" / sweep_id
    assert out["files"] == [str(folder / "sweep.parquet"), str(folder / "sweep.txt")]
    assert pl.read_parquet(folder / "sweep.parquet")["run_id"].to_list() == ["run-1", "run-2"]
    printed = capsys.readouterr().out
    assert (folder / "sweep.txt").read_text().strip() in printed and f"wrote {folder / 'sweep.parquet'}" in printed
    # and in MLflow: a run of the sweep itself holds the table across settings, which no child's run has
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                filter_string=f"tags.`saerl.sweep` = '{sweep_id}'")
    assert run.info.run_name == f"sweep {sweep_id}" and run.data.params == {"grid.curriculum.mix_ratio": "[0.0, 0.5]"}
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"sweep.parquet", "sweep.txt"}


def test_saerl_ablate_names_its_prefect_flow_run_after_the_sweep_id(prefect_api, tmp_path, monkeypatch, capsys):
    """The sweep's parent flow run had a random Prefect name ('tiny-slug'): it is now '<config> | ablation <sweep
    id>', the id `saerl ablate` prints and keeps the sweep under (as a pipeline run's flow run carries its run id)."""
    import re

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    import flows.sweep as fs

    monkeypatch.setattr(fs, "pipeline_flow", _FakeChild([]))
    name = f"sweep-name-{uuid.uuid4().hex[:8]}"  # finds this test's flow run on the session's server
    main(["ablate", str(SMOKE), "--grid", "curriculum.mix_ratio=0,0.5", "--until", "curriculum", f"name={name}",
          f"runtime.artifact_root={tmp_path}", f"runtime.prefect_api_url={prefect_api}", "tracking.enabled=false"])
    (sweep_id,) = set(re.findall(r"ablation (\S+): wrote", capsys.readouterr().out))
    assert (tmp_path / "sweeps" / sweep_id / "sweep.parquet").exists()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name)))
    assert [r.name for r in runs] == [f"{name} | ablation {sweep_id}"]


def test_on_dask_the_shared_run_and_each_child_carry_their_labels(monkeypatch):
    """The shared upstream run is labelled 'shared upstream' (not taken for a setting), each child its setting."""
    import flows.sweep as fs

    calls: list = []
    monkeypatch.setattr(fs, "child_task", _FakeChild(calls))
    monkeypatch.setattr(fs, "wait_awake", lambda future: None)
    monkeypatch.setattr(fs, "say", lambda message, label=None: None)
    cfg = load_config(SMOKE).model_dump(mode="json")
    children = [{"setting": {"curriculum.mix_ratio": m}, "config": cfg, "name": f"c{m}"} for m in (0, 0.5)]
    out = fs.ablation_on_dask.fn(children=children, shared="score", sweep_id="S")
    assert [(c["until"], c["sweep"]) for c in calls] == [
        ("score", {"id": "S", "setting": "shared upstream", "params": {}}),
        (None, {"id": "S", "setting": "mix_ratio=0", "params": {"sweep.curriculum.mix_ratio": "0"}}),
        (None, {"id": "S", "setting": "mix_ratio=0.5", "params": {"sweep.curriculum.mix_ratio": "0.5"}})]
    assert out["shared"]["run_id"] == "run-1" and [r["run_id"] for r in out["runs"]] == ["run-2", "run-3"]


def test_swept_params_write_each_value_as_the_setting_label_does():
    """A sweep child's stage runs had no param naming its setting (a curriculum key is no param of train or
    evaluate), and the config param of mix_ratio=0 read '0.0': 'sweep.<dotted key>' holds the label's text."""
    from saerl.sweep import swept_params

    setting = {"curriculum.mix_ratio": 0, "curriculum.ordering": "random", "score.weights": "a,b"}
    assert setting_label(setting) == "mix_ratio=0 ordering=random weights='a,b'"
    assert swept_params(setting) == {"sweep.curriculum.mix_ratio": "0", "sweep.curriculum.ordering": "random",
                                     "sweep.score.weights": "'a,b'"}


ABLATION_WIDTH = 80  # the terminal an ablation's printed end must fit


def test_the_ablations_heading_and_stage_run_lists_fit_the_terminals_width(tmp_path):
    """The ablation's printed end had a 230-column heading and a line per setting listing every stage run it reused
    (15 in the demo): at a width (the terminal's) both are wrapped at word boundaries, the lists under their column;
    the table's rows (names and numbers) stay as they are, and without a width (sweep.txt) every line does."""
    every = ["testbed", "ingest", "extract", "sae", "encode", "score", "properties", "curriculum", "train:saerl:0",
             "train:vanilla:0", "heldout:base:0", "heldout:reach_probe:1", "heldout:saerl:0", "heldout:vanilla:0",
             "evaluate"]
    child = _child(tmp_path, "a", {"vanilla": 0.25, "saerl": 0.35}, {"saerl": 2.0, "vanilla": 4.0},
                   dict.fromkeys(every, "cached"))
    children = [({"curriculum.mix_ratio": 0}, child)]
    plain, fitted = format_sweep(children), format_sweep(children, width=ABLATION_WIDTH)
    table = [line for line in plain.splitlines() if line.startswith("setting ") or "%" in line]
    assert len(table) == 3 and all(row in fitted.splitlines() for row in table)  # its columns never wrap
    assert max(len(line) for line in plain.splitlines() if line not in table) > ABLATION_WIDTH
    assert [line for line in fitted.splitlines() if len(line) > ABLATION_WIDTH and line not in table] == []
    assert fitted.split("cached:")[1].split() == every
    lines = fitted.splitlines()
    heading = lines[:next(i for i, line in enumerate(lines) if line.startswith("setting "))]
    assert len(heading) > 1 and " ".join(heading) == plain.splitlines()[0]


def test_a_key_only_unrun_stages_read_names_one_stage_or_several_in_the_plural():
    """The reason a grid key changes nothing names its readers in the singular or plural ('the testbed stage reads',
    'the testbed and label stages read'), and with no reader says no stage reads it."""
    from saerl.sweep import _never_run_reason

    assert _never_run_reason(["testbed"]).startswith("only the testbed stage reads it, which this config never runs")
    assert _never_run_reason(["testbed", "label"]).startswith("only the testbed and label stages read it, which")
    assert _never_run_reason([]) == "no stage reads it; drop it from the grid"
