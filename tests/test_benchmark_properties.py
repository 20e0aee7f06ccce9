"""benchmarks/properties.py on the smoke config: the property table has SAE and baseline rows for each property."""

import math
from pathlib import Path

import polars as pl
import pytest
from bench import load_benchmark

from saerl.config import load_config
from saerl.scoring import FEATURES, summarize_report

pytestmark = pytest.mark.slow
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_property_table_on_smoke_config(tmp_path):
    bench = load_benchmark("properties")
    # a third of the tiny pool defective: the labelled rows a report probe trains on hold each class twice or more
    cfg = load_config(SMOKE, [*bench.COMMON, "testbed.defect_share=0.35", f"runtime.artifact_root={tmp_path}"])
    report, seconds = bench.property_report(cfg)
    assert "score" in seconds and "extract" in seconds
    feats = set(report["features"])
    assert set(FEATURES) <= feats
    # every report model is tested on all rows that carry the label and that it was not fitted on: the tiny
    # world labels every row, so even its few labelled rows give a quality AUROC
    for prop, metric in [("topic_clusters", "nmi"), ("topic_clusters", "purity"), ("difficulty", "spearman_id")]:
        rows = report.filter((report["property"] == prop) & (report["metric"] == metric))
        assert "sae" in set(rows["features"]) and len(set(rows["features"]) - {"sae"}) >= 3, (prop, metric)
    table = summarize_report(report)
    assert "sae" in table and "majority" in table and "spearman_id" in table
    values = bench.headline(report)
    assert set(values) == {"topic_nmi", "topic_nmi_best_baseline", "difficulty_spearman",
                           "difficulty_spearman_best_baseline", "quality_auroc", "quality_auroc_best_baseline"}
    assert 0.0 <= values["topic_nmi"] <= 1.0 and not math.isnan(values["difficulty_spearman"])
    assert 0.0 <= values["quality_auroc"] <= 1.0 and 0.0 <= values["quality_auroc_best_baseline"] <= 1.0
    quality = report.filter(report["metric"] == "auroc")
    assert quality["n_test"].max() > quality["n_train"].max(), "tested beyond the labelled subset's held-out part"
    line = bench.result_line(values)
    assert line.startswith("RESULT topic_nmi=") and "quality_auroc_best_baseline=" in line


def test_derived_labels():
    bench = load_benchmark("properties")
    assert bench.steps_before_answer("a = 1\nb = 2\n\n#### 3") == 2
    assert bench.steps_before_answer("#### 3") == 0
    assert bench.formula_ops("7+2=9") == 1
    assert bench.formula_ops("(5-2)*3=9") == 2
    assert bench.formula_ops("") == 1


@pytest.mark.parametrize(("yaml_text", "flags", "expected"), [
    ("score:\n  difficulty_source: measured\n", [], ("measured", None, False)),
    ("data:\n  difficulty: level\n", [], ("column", "level", False)),
    ("data:\n  difficulty: level\n", ["--difficulty", "steps"], ("column", "steps", False)),
    ("name: plain\n", [], ("column", "_difficulty_none", True)),
])
def test_data_run_reads_difficulty_from_the_config_file_too(tmp_path, monkeypatch, yaml_text, flags, expected):
    """--data: a config file asking for measured difficulty, or mapping a difficulty field, is obeyed (a
    placeholder difficulty only when neither the flags, the overrides nor the config name one)."""
    import sys

    from saerl.scoring import REPORT_SCHEMA

    bench = load_benchmark("properties")
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "1+1", "answer": "2", "level": 1, "steps": 2}\n')
    seen = []

    def fake_report(cfg):
        seen.append(cfg)
        return pl.DataFrame(schema=REPORT_SCHEMA), {"score": 0.0, "n_prompts": 1.0}

    monkeypatch.setattr(bench, "property_report", fake_report)
    monkeypatch.setattr(sys, "argv", ["properties.py", "--data", str(data), "--config", str(config),
                                      "--work", str(tmp_path / "w"), *flags])
    bench.main()
    cfg = seen[0]
    source, field, placeholder = expected
    assert (cfg.score.difficulty_source, cfg.data.difficulty) == (source, field)
    assert (Path(cfg.data.path) != data.resolve()) == placeholder


@pytest.mark.parametrize("suffix", ["csv", "parquet", "json"])
def test_a_data_file_without_difficulty_gets_its_placeholder_in_any_format(tmp_path, monkeypatch, suffix, capsys):
    """--data FILE without --difficulty refused a parquet or csv file ("needs a .jsonl file"), though the help says
    they are read: the placeholder difficulty is added to a parquet copy."""
    import sys

    from saerl.scoring import REPORT_SCHEMA

    bench = load_benchmark("properties")
    frame = pl.DataFrame({"question": ["1+1", "2+2", "3+3"], "answer": ["2", "4", "6"]})
    data = tmp_path / f"d.{suffix}"
    {"csv": frame.write_csv, "parquet": frame.write_parquet, "json": frame.write_ndjson}[suffix](data)  # JSON lines
    seen = []
    monkeypatch.setattr(bench, "property_report", lambda cfg: seen.append(cfg) or (
        pl.DataFrame(schema=REPORT_SCHEMA), {"score": 0.0, "n_prompts": 3.0}))
    monkeypatch.setattr(sys, "argv", ["properties.py", "--data", str(data), "--work", str(tmp_path / "w")])
    bench.main()
    copy = Path(seen[0].data.path)
    assert seen[0].data.difficulty == "_difficulty_none" and copy.suffix == ".parquet"
    read = pl.read_parquet(copy)
    assert sorted(read["question"].to_list()) == frame["question"].to_list() and read["_difficulty_none"].to_list() == [0.0] * 3
    assert "a placeholder difficulty of 0 on every row" in capsys.readouterr().out


def test_worlds_flag_and_the_means_over_worlds():
    """--worlds: seeds parsed (bad text refused naming the flag), RESULT values are the means over the worlds, the
    smallest SAE value of each metric is kept, and a world without a metric does not pull the mean to NaN."""
    bench = load_benchmark("properties")
    assert bench.parse_worlds("0,1, 2,1") == [0, 1, 2]
    for bad in ("", "a,b", "-1", "1;2"):
        with pytest.raises(SystemExit, match="--worlds"):
            bench.parse_worlds(bad)
    nan = math.nan
    a = {"topic_nmi": 0.5, "topic_nmi_best_baseline": 0.6, "difficulty_spearman": 0.7,
         "difficulty_spearman_best_baseline": 0.7, "quality_auroc": 0.8, "quality_auroc_best_baseline": nan}
    b = {**a, "topic_nmi": 0.9, "topic_nmi_best_baseline": 0.4, "quality_auroc": 0.6}
    out = bench.over_worlds({0: a, 1: b})
    assert out["topic_nmi"] == pytest.approx(0.7) and out["topic_nmi_best_baseline"] == pytest.approx(0.5)
    assert out["topic_nmi_min"] == 0.5 and out["quality_auroc_min"] == 0.6 and out["worlds"] == 2
    assert math.isnan(out["quality_auroc_best_baseline"])
    assert out["quality_auroc"] == pytest.approx(0.7)
    line = bench.result_line(out)
    assert line.startswith("RESULT topic_nmi=0.700") and "worlds=2.000" in line
    table = bench.worlds_table({0: a, 1: b}).splitlines()
    assert len(table) == 3 and table[1].split()[:2] == ["0", "0.500"] and table[2].split()[:2] == ["1", "0.900"]
    assert len(table[0].split()) == 7  # every column name stands apart


def test_best_baseline_is_labelled_as_the_maximum_over_baselines_on_the_test_rows(capsys):
    """The printed "best baseline" is the largest of the baselines' test values (an upper bound for them, picked on
    the test rows), and the docstring says so; it also says the models are tested beyond the labelled subset's
    held-out part. The printed table lists the difficulty model each feature set chose."""
    from saerl.scoring import REPORT_SCHEMA

    bench = load_benchmark("properties")
    rows = [dict(property="difficulty", metric="spearman_id", features=f, value=v, n_train=9, n_test=30, model=m,
                 pool=p) for f, v, m, p in [("sae", 0.7, "ridge", "max"), ("residual", 0.6, "elasticnet", "mean"),
                                             ("text", 0.65, "ridge", None), ("majority", 0.0, "mean", None)]]
    bench.describe("t", pl.DataFrame(rows, schema=REPORT_SCHEMA), {"score": 1.0})
    out = capsys.readouterr().out
    assert bench.BEST_BASELINE in out and "upper bound" in bench.BEST_BASELINE and "on the test rows" in out
    assert "sae 0.700 vs best baseline text 0.650" in out
    assert "max ridge" in out and "mean elasticnet" in out
    doc = " ".join(bench.__doc__.split())
    assert "scored on its held-out part" not in doc and "upper bound" in doc
    assert "the subset's held-out part plus the rows outside the subset" in doc


def _capture_data_run(bench, monkeypatch, data: Path, work: Path, *extra: str):
    """Run --data on `data` (difficulty from its 'level' field) with property_report faked; the config it used."""
    import sys

    from saerl.scoring import REPORT_SCHEMA

    seen = []
    monkeypatch.setattr(bench, "property_report", lambda cfg: seen.append(cfg) or (
        pl.DataFrame(schema=REPORT_SCHEMA), {"score": 0.0, "n_prompts": 1.0}))
    monkeypatch.setattr(sys, "argv", ["properties.py", "--data", str(data), "--difficulty", "level", "--work", str(work),
                                      *extra])
    bench.main()
    return seen[0]


def test_a_row_cap_on_data_reads_a_seeded_shuffle_not_the_files_head(tmp_path, monkeypatch, capsys):
    """--data with a row cap (data.max_rows; --quick sets 600) read the file's first rows, so a file sorted by a
    label (ASDiv by solution_type) gave a skewed subset. A capped file is now read from a seeded shuffled copy, the
    same permutation derived_file gives the real sets; an uncapped one (or one the cap does not cut) is read as is."""
    import json

    bench = load_benchmark("properties")
    rows = [{"question": f"{i}+1", "answer": str(i + 1), "level": i // 10} for i in range(30)]  # sorted by level
    data = tmp_path / "sorted.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _capture_data_run(bench, monkeypatch, data, tmp_path / "w", "data.max_rows=10")
    copy = Path(cfg.data.path)
    assert copy != data.resolve() and copy.parent == (tmp_path / "w" / "data").resolve()
    read = [json.loads(line) for line in copy.read_text().splitlines()]
    order = bench.shuffled_order(30)
    assert read == [rows[i] for i in order] and sorted(order) == list(range(30))
    assert {r["level"] for r in read[:10]} == {0, 1, 2}  # the head of the copy spans the levels
    derived = bench.derived_file(data, tmp_path / "d.jsonl", "x", lambda _: 0, "question")
    assert [json.loads(line)["question"] for line in derived.read_text().splitlines()] == [r["question"] for r in read]
    assert "reading a seeded shuffle" in capsys.readouterr().out
    assert Path(_capture_data_run(bench, monkeypatch, data, tmp_path / "w").data.path) == data.resolve()  # no cap
    assert Path(_capture_data_run(bench, monkeypatch, data, tmp_path / "w", "data.max_rows=30").data.path) == \
        data.resolve()  # a cap that cuts nothing

    csv = tmp_path / "sorted.csv"
    pl.DataFrame(rows).with_columns(pl.col("answer").str.zfill(3)).write_csv(csv)  # '001': kept as text
    copy = Path(_capture_data_run(bench, monkeypatch, csv, tmp_path / "w", "data.max_rows=10").data.path)
    assert copy.suffix == ".csv" and copy != csv.resolve()
    back = pl.read_csv(copy, infer_schema=False)
    assert back["question"].to_list() == [rows[i]["question"] for i in order] and back["answer"][0].startswith("0")


def test_a_row_cap_on_a_file_it_cannot_shuffle_is_refused(tmp_path):
    bench = load_benchmark("properties")
    folder = tmp_path / "hf_set"
    folder.mkdir()
    with pytest.raises(SystemExit, match="data.max_rows=5.*data.max_rows=null"):
        bench.shuffled_copy(folder, tmp_path / "w", 5)
    array = tmp_path / "a.json"
    array.write_text('[{"q": 1}, {"q": 2}, {"q": 3}]')
    copy = bench.shuffled_copy(array, tmp_path / "w", 2)
    assert copy.suffix == ".jsonl" and sorted(copy.read_text().splitlines()) == ['{"q": 1}', '{"q": 2}', '{"q": 3}']
    assert bench.shuffled_copy(array, tmp_path / "w", 3) == array


def test_the_property_table_is_printed_once_and_the_result_line_last(tmp_path, monkeypatch, capsys, caplog):
    """A run printed the property table twice: the properties runner logs it (INFO, which the script shows) and
    describe() prints it. The runner's table line is dropped in the script; its other lines still show, the printed
    table stays, and the RESULT line is the last one."""
    import json
    import logging
    import sys

    from saerl.runners import PROPERTY_TABLE_LOG
    from saerl.scoring import REPORT_SCHEMA

    bench = load_benchmark("properties")
    report = pl.DataFrame([dict(property="difficulty", metric="spearman_id", features=f, value=v, n_train=9, n_test=30,
                                model="ridge", pool="max") for f, v in [("sae", 0.7), ("text", 0.6)]],
                          schema=REPORT_SCHEMA)
    runner_log = logging.getLogger("saerl.runners")

    def fake_report(cfg):  # what run_stage's properties runner logs while the report is computed
        runner_log.info(PROPERTY_TABLE_LOG, summarize_report(report))
        runner_log.warning("properties: a note")
        return report, {"score": 0.0, "n_prompts": 2.0}

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "1+1", "answer": "2", "level": 1}) + "\n")
    monkeypatch.setattr(bench, "property_report", fake_report)
    monkeypatch.setattr(sys, "argv", ["properties.py", "--data", str(data), "--difficulty", "level", "--work",
                                      str(tmp_path / "w")])
    try:
        with caplog.at_level(logging.INFO):
            bench.main()
    finally:
        runner_log.removeFilter(bench.RUNNER_TABLE_FILTER)
    out = capsys.readouterr()
    header = summarize_report(report).splitlines()[0]
    shown = out.out + out.err + caplog.text
    assert shown.count(header) == 1, shown
    assert "properties: a note" in caplog.text
    assert out.out.count(header) == 1 and out.out.strip().splitlines()[-1].startswith("RESULT topic_nmi=")
