"""Reports of a finished run, read from its artifacts on disk only (the paths are in the run record).

- :func:`load_report`: a run's comparison, RL gain over the starting policy, steps-to-target, data-engineering
  numbers (with the label stage's pass-rate profile), clusters, property models, plots and every stage's notes (the
  warnings its stage log showed, kept in its manifest), as a :class:`RunReport`;
- :func:`format_text`: the report as plain-text tables for the terminal;
- :func:`render_html` / :func:`write_html`: one self-contained HTML file (tables as HTML, plots embedded as
  base64 PNG), to share a result without MLflow;
- :func:`relog`: log a finished run into MLflow after the fact (parent run + a nested run per stage run, with
  what the flow would have logged), for when the tracking server was down during the run;
- :func:`record_results`: a run record for results of :func:`saerl.pipeline.run_all` (no Prefect), so those
  runs can be reported too.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from saerl.artifacts import (
    MANIFEST,
    ArtifactRef,
    ArtifactStore,
    build_code,
    read_manifest,
    write_file_atomic,
)
from saerl.config import PipelineConfig, build_config, field_paths, flatten
from saerl.privacy import REDACTED, redact, redacted
from saerl.runs import (
    FAILED,
    INVOCATION,
    MACHINE,
    PREFECT_TAGS,
    RUNNING,
    SETTING,
    STILL_RUNNING,
    STOPPED,
    SWEEP,
    SWEEP_PARAMS,
    UNTIL,
    VERSIONS,
    RunRecord,
    code_change,
    code_summary,
    current_code_version,
    earlier_code_version,
    ordered_stages,
    previous_stage_runs,
    runs_of,
    stage_of,
    stage_record,
    unfinished,
)
from saerl.stages import stage_slice
from saerl.status import format_time
from saerl.terminal import fit_cell, fit_lines, table_lines

if TYPE_CHECKING:
    from saerl.tracking import Tracker  # at run time imported where used, as relog imports saerl.tracking

log = logging.getLogger("saerl.report")
REPORTS_DIR = "reports"  # default folder of HTML reports under the artifact root
PERCENT = 100  # accuracies are stored as fractions, shown in percent
NO_VALUE = "-"
FREE_TEXT_COLUMNS = ("note", "why", "value")  # the text report's tables whose last column is free text, wrapped to the
# terminal's width (format_table): the notes, the stage runs' why, the provenance's value (the data table's numeric
# 'value' holds no space: nothing splits it)
NOTES_TITLE = "Warnings and notes (what each stage's log warned of, kept in its manifest)"
PROVENANCE_TITLE = "Provenance (what produced these numbers, and how to run it again)"
UNKNOWN_TEXT = "not recorded"  # a provenance field a record older than it lacks
GAINS_TITLE = "RL gain over the starting policy (arm 'base': the policy before RL, scored on the same problems)"
CSS = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
       "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#eee}"
       "img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}pre{background:#f6f6f6;padding:1em}")


@dataclass
class Noted:
    """A section's table with the lines that go under it (what the intervals account for, what the target is, ...)."""

    table: pl.DataFrame
    notes: list[str] = field(default_factory=list)


Body = pl.DataFrame | str | Noted  # a section's content: a table, a sentence, or a table with notes


@dataclass
class RunReport:
    """What a report shows about one run. Frames are None when the run has no such stage (or it is gone)."""

    record: RunRecord
    comparison: pl.DataFrame | None = None  # evaluate: comparison.parquet
    gains: pl.DataFrame | None = None  # evaluate: gains.parquet (each arm vs the starting policy, eval.base_policy)
    steps: pl.DataFrame | None = None  # evaluate: steps_to_target.parquet
    k_samples: dict[str, int] = field(default_factory=dict)  # evaluate: each set's k of mean@k (summary.parquet)
    clusters: pl.DataFrame | None = None  # properties: clusters.parquet
    properties: pl.DataFrame | None = None  # properties: property_report.parquet
    data: dict[str, float] = field(default_factory=dict)  # prompts scored / in the order / filtered, the SAE's quality
    plots: dict[str, list[Path]] = field(default_factory=dict)  # stage run name -> PNG files
    missing: list[str] = field(default_factory=list)  # stage runs whose artifact folder is gone
    unusable: dict[str, str] = field(default_factory=dict)  # read stage -> what is wrong with its artifact (not read)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (stage run, note) from every manifest's notes, in order
    label_profile: str | None = None  # the label stage's pass-rate profile (its manifest's profile), when it ran
    unfinished: str | None = None  # how a record still marked running reads (saerl.runs.unfinished): running, killed
    elsewhere: str = ""  # for a run with no evaluate stage: where the root's newest comparison is (comparison_elsewhere)


READ_STAGES = ("score", "properties", "curriculum", "evaluate")  # the stages whose tables a report reads (verified first)


def _read(record: RunRecord, stage: str, file: str, unusable: dict[str, str] | None = None) -> pl.DataFrame | None:
    """A table of the run's `stage` artifact, or None when the run has no such stage or file, or the artifact is
    among `unusable` (failed verification)."""
    if stage in (unusable or {}):
        return None
    rec = record.stages.get(stage)
    path = Path(rec.path) / file if rec else None
    return pl.read_parquet(path, glob=False) if path is not None and path.exists() else None


def manifest_notes(manifest: dict[str, Any]) -> list[str]:
    """The notes a stage left in its manifest (`notes`: the plain-language warnings its log showed, e.g. the score
    stage's 'no usable quality labels ...'), as text; [] when it left none."""
    notes = manifest.get("notes") or []
    return [str(n) for n in ([notes] if isinstance(notes, str) else notes)]


def data_numbers(scores: pl.DataFrame | None, order: pl.DataFrame | None,
                 curriculum: dict[str, float] | None = None) -> dict[str, float]:
    """Prompts scored, prompts the SAERL order trains on, the share the quality filter removed and the prompts
    the difficulty cap left out. in: scores.parquet (id, ...), order.parquet (id, ...), the curriculum
    artifact's metrics (filtered, out_of_reach; older artifacts have neither: then every prompt missing from
    the order counts as filtered), any may be None; out: {name: value}."""
    out: dict[str, float] = {}
    curriculum = curriculum or {}
    if scores is not None:
        out["prompts scored"] = float(scores.height)
    if order is not None:
        out["prompts in the SAERL order"] = float(order["id"].n_unique())
    if scores is not None and order is not None and scores.height:
        filtered = curriculum.get("filtered", scores.height - order["id"].n_unique())
        out["fraction filtered"] = filtered / scores.height
    if curriculum.get("out_of_reach"):
        out["prompts out of reach (difficulty cap)"] = float(curriculum["out_of_reach"])
    return out


def sae_numbers(sae_report: dict[str, Any]) -> dict[str, float]:
    """How good the SAE is, from the sae stage's report (its manifest's `report`, saerl.sae.obtain_sae): its
    width, the share of variance it explains and the features active per token (L0) on held-out tokens, and the
    share of features that never fire there (dead). A low explained share or many dead features undermine every
    property read from the codes. in: the report dict (a key it lacks is left out); out: {name: value}."""
    names = {"d_sae": "SAE features", "variance_explained": "fraction of variance the SAE explains (held-out tokens)",
             "l0": "SAE features active per token (L0)", "dead_frac": "fraction of SAE features dead on held-out tokens"}
    return {name: float(sae_report[k]) for k, name in names.items()
            if isinstance(sae_report.get(k), int | float) and not isinstance(sae_report.get(k), bool)}


def load_report(root: Path, run_id: str = "latest") -> RunReport:
    """Everything a report shows about run `run_id` (a unique prefix, or 'latest') under artifact root `root`,
    read from the artifacts under `root` (where they are now, should the root have moved since the run)."""
    from saerl.runs import load_run

    record = load_run(Path(root), run_id)  # its paths under `root` (load_run relocates them)
    report = RunReport(record, unfinished=unfinished(Path(root), record))
    if "evaluate" not in record.stages:
        report.elsewhere = comparison_elsewhere(Path(root), record)
    store = ArtifactStore(root)
    sae: dict[str, float] = {}
    for rec in ordered_stages(record):
        folder = Path(rec.path)
        if not folder.exists():
            report.missing.append(rec.stage)
            continue
        pngs = sorted(folder.glob("plots/*.png"))
        if pngs:
            report.plots[rec.stage] = pngs
        manifest = read_manifest(folder)  # {} when unreadable: the report still shows the rest
        report.notes += [(rec.stage, note) for note in manifest_notes(manifest)]
        if stage_of(rec.stage) == "label" and manifest.get("profile"):
            report.label_profile = str(manifest["profile"])
        if stage_of(rec.stage) == "sae" and isinstance(manifest.get("report"), dict):
            sae = sae_numbers(manifest["report"])
        if rec.stage in READ_STAGES and (problems := store.problems(rec.stage, rec.key)):
            report.unusable[rec.stage] = f"artifact {folder} is not usable ({problems[0]})"
    bad = report.unusable
    report.comparison = _read(record, "evaluate", "comparison.parquet", bad)
    report.gains = _read(record, "evaluate", "gains.parquet", bad)
    report.steps = _read(record, "evaluate", "steps_to_target.parquet", bad)
    report.k_samples = samples_per_set(_read(record, "evaluate", "summary.parquet", bad))
    described = "properties" if "properties" in record.stages else "score"  # a run before the split: the score stage's
    report.clusters = _read(record, described, "clusters.parquet", bad)
    report.properties = _read(record, described, "property_report.parquet", bad)
    cur = record.stages.get("curriculum")
    cur_metrics = ArtifactRef("curriculum", cur.key, cur.path).manifest().get("metrics", {}) \
        if cur is not None and "curriculum" not in bad and (Path(cur.path) / MANIFEST).exists() else {}
    report.data = data_numbers(_read(record, "score", "scores.parquet", bad),
                               _read(record, "curriculum", "order.parquet", bad), cur_metrics)
    if report.clusters is not None:
        report.data["clusters"] = float(report.clusters.height)
    report.data |= sae
    return report


def newest_evaluated(root: Path, exclude: str | None = None) -> RunRecord | None:
    """The newest run under `root` (other than `exclude`) whose record has an evaluate stage, of any config name
    (saerl.runs.runs_of: unreadable records skipped); None when there is none. in: artifact root, a run id to leave
    out; out: its record or None."""
    return next((r for r in runs_of(root, None, exclude) if "evaluate" in r.stages), None)


def comparison_elsewhere(root: Path, record: RunRecord) -> str:
    """What the report of a run with no evaluate stage (an --until preview, a run newer than the last full one: the
    'latest' a bare `saerl report` shows) says after 'nothing to compare': the newest run under `root` that has one
    (:func:`newest_evaluated`) and the command that shows it ('the newest run with one is 2026... (smoke,
    mix_ratio=0.8), started ...: `saerl report 2026... --root R`'), or that no run there has one and how to make one.
    in: artifact root, the record; out: the text."""
    found = newest_evaluated(root, record.run_id)
    where = f"--root {shlex.quote(str(root))}"
    if found is None:
        return f"no run under {root} has one yet: `saerl run CONFIG {where}` without --until makes one"
    setting = f", {found.extra[SETTING]}" if found.extra.get(SETTING) else ""
    return (f"the newest run with one is {found.run_id} ({found.name}{setting}), started {format_time(found.started)}: "
            f"`saerl report {found.run_id} {where}`")


# ------------------------------------------------------------------------------------------------ tables


def _pct(x: float | None) -> str:
    return NO_VALUE if x is None or math.isnan(x) else f"{PERCENT * x:.1f}%"


def _interval(lo: float | None, hi: float | None, scale: float = PERCENT, signed: bool = False) -> str:
    """'[lo, hi]' of an interval in display units, or '-' when it is missing."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return NO_VALUE
    if signed:  # a difference's bounds: as the printed comparison shows them (+0.049, not +0.0 beside "better")
        from saerl.evaluate import signed_bound

        return f"[{signed_bound(scale * lo)}, {signed_bound(scale * hi)}]"
    return f"[{scale * lo:.1f}, {scale * hi:.1f}]"


def format_ratio_interval(r: dict[str, Any]) -> str:
    """' [low, high]' of a steps_to_target row's bootstrap ratio interval (inf: the arm's mean curve misses the
    target in too many resamples), or '' when the row has none."""
    low, high = r.get("ratio_ci_low"), r.get("ratio_ci_high")
    if low is None or high is None:
        return ""
    noise = ", within noise" if low <= 1 <= high and low < high else ""
    return f" [{low:.2f}, {high:.2f}{noise}]"


def _steps_cell(steps: pl.DataFrame | None, set_name: str, arm: str) -> str:
    """Steps-to-target of one arm on one set: mean steps over seeds and ratio to the reference, or why there is
    no ratio (the arm, or the reference, at the target from the start; the reference never reaching a fixed one)."""
    from saerl.evaluate import AT_START, no_ratio_reason

    if steps is None:
        return NO_VALUE
    rows = steps.filter((pl.col("set") == set_name) & (pl.col("arm") == arm))
    if rows.is_empty():
        return NO_VALUE
    r = rows.row(0, named=True)
    if r["mean_steps"] is None:
        return f"not reached ({int(rows['reached'].sum())}/{rows.height} seeds on their own)"
    ratio = "" if r["ratio"] is None else f" ({r['ratio']:.2f}x{format_ratio_interval(r)})"
    why = no_ratio_reason(steps, set_name, arm)
    notes = [n for n in (AT_START if r["mean_steps"] == 0 else "", why) if n]
    return f"{r['mean_steps']:.0f}{ratio}" + (f" ({'; '.join(notes)})" if notes else "")


def samples_per_set(summary: pl.DataFrame | None) -> dict[str, int]:
    """Each set's k of its mean@k (an eval.sets entry's own k_samples, else eval.k_samples), from the evaluate
    stage's summary.parquet (set, k per arm and seed); {} without one. in: the summary or None; out: {set: k}."""
    if summary is None or "k" not in summary.columns:
        return {}
    return {name: int(k) for name, k in summary.group_by("set").agg(pl.col("k").max()).iter_rows() if k}


def metric_name(metric: str, set_name: str, ks: dict[str, int]) -> str:
    """How the Arms table names a row's metric: 'greedy', or the mean over samples as 'mean@8' with its set's k
    (`ks`: :func:`samples_per_set`; MEAN_OF_SETS's is its sets' one k, or 'mean@k (each set's own)' where they
    differ); 'mean_k' where the k is not known. in: metric code, set, {set: k}; out: the name."""
    from saerl.evaluate import MEAN_OF_SETS, REACHABLE

    if metric != "mean_k" or not ks:
        return metric
    if set_name == MEAN_OF_SETS:
        distinct = {k for name, k in ks.items() if not name.endswith(REACHABLE)}
        return f"mean@{distinct.pop()}" if len(distinct) == 1 else "mean@k (each set's own)"
    return f"mean@{ks[set_name]}" if set_name in ks else metric


def arm_table(comparison: pl.DataFrame, steps: pl.DataFrame | None, ks: dict[str, int] | None = None) -> pl.DataFrame:
    """Display table of the arm comparison: per set, metric (with `ks`, {set: k}, the mean over samples named by
    its set's k: :func:`metric_name`) and arm the seeds, final accuracy with its interval, the difference to the
    reference arm (points) with its interval and verdict, and (greedy rows) the steps to reach the target.
    in: comparison.parquet, steps_to_target.parquet, {set: k}; out: all-string frame."""
    ref = comparison.filter(pl.col("verdict") == "reference")["arm"].first() or "reference"
    level = f"{PERCENT * float(comparison['level'][0]):.0f}% CI" if "level" in comparison.columns else "CI"
    rows = []
    for r in comparison.iter_rows(named=True):
        is_ref = r["verdict"] == "reference"
        rows.append({
            "set": r["set"], "metric": metric_name(r.get("metric") or "greedy", r["set"], ks or {}), "arm": r["arm"],
            "seeds": str(r["n_seeds"]),
            "accuracy": _pct(r["accuracy"]), level: _interval(r["ci_low"], r["ci_high"]),
            f"diff vs {ref} (pts)": NO_VALUE if is_ref else f"{r['diff_pts']:+.1f}",
            f"diff {level}": NO_VALUE if is_ref else _interval(r["diff_ci_low_pts"], r["diff_ci_high_pts"], 1, True),
            "verdict": r["verdict"],
            "steps to target": _steps_cell(steps, r["set"], r["arm"]) if r.get("metric", "greedy") == "greedy"
            else NO_VALUE,
        })
    return pl.DataFrame(rows)


def interval_notes(comparison: pl.DataFrame) -> list[str]:
    """What the intervals of a comparison account for (its ci_source, e.g. "training-seed variance not included
    (one seed)"), one line per distinct text with the sets it applies to; [] for a table without the column."""
    if "ci_source" not in comparison.columns:
        return []
    rows = comparison.filter((pl.col("verdict") != "reference") & pl.col("ci_source").is_not_null())
    per = rows.group_by("ci_source", maintain_order=True).agg(pl.col("set").unique(maintain_order=True))
    return [f"intervals from ({', '.join(sets)}): {source}" for source, sets in per.iter_rows()]


def failure_notes(comparison: pl.DataFrame) -> list[str]:
    """Per set, the final evaluation's verifier failures (answer checks that timed out or erred, scored wrong) behind
    a comparison's accuracies, summed over its metrics' samples; [] when there are none or the table does not
    count them (made before it did)."""
    from saerl.evaluate import failures_line

    out = []
    for set_name in comparison["set"].unique(maintain_order=True).to_list():
        line = failures_line(comparison.filter(pl.col("set") == set_name))
        if line:
            out.append(f"{set_name}: {line}")
    return out


def target_notes(steps: pl.DataFrame, comparison: pl.DataFrame | None = None) -> list[str]:
    """Per set, what the steps-to-target target is (:func:`saerl.evaluate.describe_target`: read on the in-training
    curve's problems, which are not the final evaluation's), with the final evaluation's problem count from the
    comparison's reference rows where it has one."""
    from saerl.evaluate import describe_target, final_problems

    final = final_problems(comparison) if comparison is not None else {}
    return [f"steps to target on {r['set']}: the target is {describe_target(r, final.get(r['set']))}"
            for r in steps.unique("set", maintain_order=True).sort("set").iter_rows(named=True)]


def gains_table(gains: pl.DataFrame, ks: dict[str, int] | None = None) -> pl.DataFrame:
    """Display table of each arm's RL gain over the starting policy (arm 'base'): :func:`arm_table`'s columns (the
    same as the Arms table, read against 'base'), without steps to target, which the starting policy has none of.
    in: gains.parquet (compare_arms rows with a metric column), {set: k} (:func:`metric_name`); out: all-string
    frame."""
    return arm_table(gains, None, ks).drop("steps to target")


N_COLUMNS = {"n_train": "n train", "n_test": "n test"}  # property_report.parquet's row counts, as the report heads them


def property_table(properties: pl.DataFrame) -> pl.DataFrame:
    """Property models vs baselines: one row per (property, metric), one column per feature set, values
    rounded to 3 digits, then the rows each value rests on (n train: the rows the models were fitted on; n test: the
    held-out rows they were scored on; out of distribution the mean train rows of the topic folds and every held-out
    row once; the largest over the feature sets, as summarize_report counts them), so a Spearman of 18 test rows
    does not read like one of 1,800. in: property_report.parquet (property, metric, features, value, n_train, n_test;
    a report written without the counts gets no n columns); out: wide frame."""
    keys = ["property", "metric"]
    wide = properties.pivot(on="features", index=keys, values="value", aggregate_function="first")
    wide = wide.with_columns(pl.exclude(keys).round(3).cast(pl.String).fill_null(NO_VALUE))
    counts = [c for c in N_COLUMNS if c in properties.columns]
    if not counts:
        return wide
    n = properties.group_by(keys, maintain_order=True).agg(
        [pl.col(c).max().cast(pl.String).fill_null(NO_VALUE).alias(N_COLUMNS[c]) for c in counts])
    return wide.join(n, on=keys, how="left", maintain_order="left")


# what the text baseline's TF-IDF read, by the analyzer its report rows name (pool; saerl.property_models.text_analyzer)
TEXT_ANALYZER_WORDS = {"word": "word tokens (score.text_analyzer=word)",
                       "char_wb1-3": "character 1-3-grams inside words (score.text_analyzer=char_wb)"}


def property_notes(properties: pl.DataFrame) -> list[str]:
    """The lines under the property table: which tokens the text baseline's TF-IDF read (its rows' pool,
    TEXT_ANALYZER_WORDS), when the report names them (one written before it did, or without a text row: none).
    in: property_report.parquet; out: lines."""
    if "pool" not in properties.columns:
        return []
    named = properties.filter((pl.col("features") == "text") & pl.col("pool").is_not_null())["pool"]
    analyzers = sorted({a for p in named.to_list() for a in p.split(",")})
    return [f"text: TF-IDF of the prompts' {' / '.join(TEXT_ANALYZER_WORDS.get(a, a) for a in analyzers)}"] \
        if analyzers else []


def notes_table(notes: list[tuple[str, str]]) -> pl.DataFrame:
    """Display table of the stages' notes: one row per note, in stage order, naming every stage run that left it
    (the train stage's note that the policy cannot read the prompts comes from each arm and seed alike: one row
    'train:saerl:0, train:vanilla:0', not one per run). in: (stage run, note) pairs; out: table stage, note."""
    runs: dict[str, list[str]] = {}
    for stage, note in notes:
        if stage not in runs.setdefault(note, []):
            runs[note].append(stage)
    return pl.DataFrame([{"stage": ", ".join(stages), "note": note} for note, stages in runs.items()],
                        schema={"stage": pl.String, "note": pl.String})


def cluster_rows(clusters: pl.DataFrame) -> pl.DataFrame:
    """Display table of the clusters: id, size, share, top SAE features, dominant true topic (when known)."""
    rows = []
    for r in clusters.sort("cluster").iter_rows(named=True):
        topic = NO_VALUE if r.get("top_topic") is None else f"{r['top_topic']} ({_pct(r['top_topic_share'])})"
        rows.append({"cluster": str(r["cluster"]), "prompts": str(r["size"]), "share": _pct(r["share"]),
                     "top SAE features": ", ".join(map(str, r["top_features"] or [])), "top topic": topic})
    return pl.DataFrame(rows)


def stage_rows(record: RunRecord) -> pl.DataFrame:
    """Display table of the stage runs: name, computed/cached, key prefix, seconds, reason."""
    return pl.DataFrame([{"stage": s.stage, "status": s.status, "key": s.key[:12], "seconds": f"{s.seconds:.1f}",
                          "why": s.reason} for s in ordered_stages(record)])


def data_rows(data: dict[str, float]) -> pl.DataFrame:
    """Display table of the data-engineering numbers (shares in percent, counts as integers)."""
    return pl.DataFrame([{"quantity": k, "value": _pct(v) if k.startswith("fraction") else f"{v:.0f}" if v == round(v)
                          else f"{v:.1f}"} for k, v in data.items()])


def sections(report: RunReport) -> list[tuple[str, Body]]:
    """The report's sections in order: (title, display table, a sentence, or a table with notes under it)."""
    out: list[tuple[str, Body]] = []
    if report.notes:  # first: they qualify every number below (a filter that kept every prompt, flat clusters, ...)
        out.append((NOTES_TITLE, notes_table(report.notes)))
    out.append(_arms_section(report))
    if report.gains is not None and report.gains.height:
        out.append((GAINS_TITLE, Noted(gains_table(report.gains, report.k_samples),
                                       interval_notes(report.gains) + failure_notes(report.gains))))
    out.extend(_data_sections(report))
    out.append(("Stage runs", stage_rows(report.record)))
    out.append((PROVENANCE_TITLE, Noted(provenance_rows(report.record), [rerun_note(report.record)])))
    out.extend(_artifact_sections(report))
    return out


def _arms_section(report: RunReport) -> tuple[str, Body]:
    """The report's "Arms" section: the arms table with its notes (with steps to target in the title when the run
    has them), or a sentence saying why there is none (:func:`_no_arms_text`). in: report; out: (title, body)."""
    if report.comparison is None or not report.comparison.height:
        return "Arms", _no_arms_text(report)
    title, notes = "Arms", interval_notes(report.comparison) + failure_notes(report.comparison)
    if report.steps is not None and report.steps.height:
        title += (" (steps to target: the first in-training eval step at which an arm's mean greedy curve reaches "
                  "the target, see below)")
        notes += target_notes(report.steps, report.comparison)
    return title, Noted(arm_table(report.comparison, report.steps, report.k_samples), notes)


def _no_arms_text(report: RunReport) -> str:
    """Why a report has no arms table: its evaluate artifact unusable or gone, the run failed, stopped or unfinished
    before its evaluation, or it had no evaluate stage. in: report (no comparison); out: the sentence."""
    record = report.record
    if "evaluate" in report.unusable:
        return f"{report.unusable['evaluate']}: {rebuild_hint(record, 'evaluate')}"
    if "evaluate" in record.stages:
        return f"the evaluate artifact is gone from disk (saerl gc?): {rebuild_hint(record, 'evaluate')}"
    if record.extra.get(FAILED):
        return f"the run failed before its evaluation, at {record.extra[FAILED]}"
    if record.extra.get(STOPPED):
        return f"the run was stopped before its evaluation, at {record.extra[STOPPED]}"
    if report.unfinished == STILL_RUNNING:
        return "the run has not finished: it is still running"
    if report.unfinished:
        return (f"the run did not finish ({report.unfinished}): run the same config again, the stages it "
                "finished are reused")
    until = record.extra.get(UNTIL)
    ran = f" (it ran --until {until})" if until else ""
    elsewhere = f"; {report.elsewhere}" if report.elsewhere else ""
    return f"no evaluate stage in this run{ran}: nothing to compare{elsewhere}"


def _data_sections(report: RunReport) -> list[tuple[str, Body]]:
    """The report's data sections, those it has: data engineering (its numbers with the label profile under them,
    or the profile alone), property models vs baselines, clusters. in: report; out: [(title, body)]."""
    out: list[tuple[str, Body]] = []
    profile = [f"label: {report.label_profile}"] if report.label_profile else []
    if report.data:
        out.append(("Data engineering", Noted(data_rows(report.data), profile)))
    elif profile:
        out.append(("Data engineering", profile[0]))
    if report.properties is not None and report.properties.height:
        out.append(("Property models vs baselines (held-out)",
                    Noted(property_table(report.properties), property_notes(report.properties))))
    if report.clusters is not None and report.clusters.height:
        out.append(("Clusters", cluster_rows(report.clusters)))
    return out


def _artifact_sections(report: RunReport) -> list[tuple[str, Body]]:
    """The report's closing sections on artifacts it could not read, those it has: missing (gone from disk) and
    unusable ones. in: report; out: [(title, sentence)]."""
    out: list[tuple[str, Body]] = []
    if report.missing:
        out.append(("Missing artifacts", "gone from disk (garbage-collected?): " + ", ".join(report.missing)))
    if report.unusable:
        out.append(("Unusable artifacts", "; ".join(f"{stage}: {why}" for stage, why in report.unusable.items())
                    + ": their tables are left out; run the same config again to rebuild them"))
    return out


def non_default(flat: dict[str, Any]) -> dict[str, Any]:
    """The fields of a run record's flat config whose value is not the schema's default (credentials masked as the
    record keeps them): what the config file and overrides set. in: RunRecord.config; out: {dotted field: value}."""
    defaults = redacted(flatten(build_config({}, "defaults")))
    return {k: v for k, v in flat.items() if k not in defaults or defaults[k] != v}


def provenance_rows(record: RunRecord) -> pl.DataFrame:
    """Display table of what produced a run's numbers: run and config name, the code (saerl.runs.code_summary), the
    saerl and library versions and the machine at its start (an older record: versions from its manifests, machine
    not recorded), its command, the data file's sha256 (ingest's input), the config fields it set (:func:`non_default`).
    in: the run record; out: a (what, value) frame."""
    versions = run_library_versions(record) or {}
    machine = record.extra.get(MACHINE) or {}
    ingest = next((s for s in record.stages.values() if stage_of(s.stage) == "ingest"), None)
    rows = [("run", f"{record.run_id} ({record.name})"), ("code", code_summary(record.extra)),
            ("saerl", versions.get("saerl", UNKNOWN_TEXT)),
            ("libraries", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if k != "saerl") or UNKNOWN_TEXT),
            ("machine", ", ".join(f"{k}={v}" for k, v in machine.items()) or UNKNOWN_TEXT),
            ("command", str(record.extra.get(INVOCATION) or UNKNOWN_TEXT))]
    if ingest is not None and ingest.inputs.get("file"):
        rows.append(("data content hash", f"{ingest.inputs['file']} (ingest's key input: a file's sha256 prefix, "
                                          "a folder's hash of its files' sha256)"))
    rows.append(("config (fields not at their default)",
                 ", ".join(f"{k}={v}" for k, v in sorted(non_default(record.config).items()))))
    return pl.DataFrame({"what": [r[0] for r in rows], "value": [r[1] for r in rows]})


def rerun_note(record: RunRecord) -> str:
    """How to run a recorded run again (saerl.tracking.rerun_command): its config file from its MLflow parent run (or
    the run record). in: the record; out: the sentence."""
    from saerl.tracking import CONFIG_FILE, rerun_command

    return (f"to run it again: download {CONFIG_FILE} from the run's MLflow parent run (tag saerl.run_id = "
            f"{record.run_id}), then `{rerun_command(record.extra.get(UNTIL))}` (the original root reuses the stages "
            "still stored there; README: Re-running a recorded run)")


def rebuild_hint(record: RunRecord, stage: str) -> str:
    """How to get a run's missing `stage` artifact back: the same config again, when the code that built the run's
    stages is today's (or unknown); when an older saerl built any of them (that stage, or one it reads: train,
    heldout, a verifier), that rebuilds nothing of this run: today's code writes other keys (it said "run the same
    config again" for ever after a gc). in: the run record, stage run name; out: the sentence."""
    for name in [stage, *(n for n in record.stages if n != stage)]:
        then, now = earlier_code_version(record.stages[name]), current_code_version(name)
        if then and now and then != now:
            return (f"an older saerl built this run ({code_change(name, then, now).removeprefix('code changed: ')}), "
                    "so it cannot be rebuilt; running the same config again makes a new run with today's code")
    return "run the same config again to rebuild it (the stages still stored are reused)"


def _title(record: RunRecord) -> str:
    """The report's heading: run id, config name and start time, in local time with its zone as `saerl status` gives
    it (saerl.status.format_time: the run id is UTC, and a saved page is read in other zones)."""
    return f"run {record.run_id} ({record.name}), started {format_time(record.started)}"


# ------------------------------------------------------------------------------------------------ text / HTML


def format_table(df: pl.DataFrame, width: int | None = None) -> str:
    """A frame of strings as a fixed-width text table (header, then one line per row); with `width`, a last column
    of FREE_TEXT_COLUMNS is wrapped to fit it, under its column (saerl.terminal.table_lines; None: one line per row).
    in: the frame, the width; out: the text."""
    if not df.width:  # a frame without columns (a run with no stage run: its stage table)
        return ""
    cells = [list(df.columns)] + [[str(v) for v in row] for row in df.iter_rows()]
    return "\n".join(table_lines(cells, width, wrap_last=df.columns[-1] in FREE_TEXT_COLUMNS))


def format_text(report: RunReport, width: int | None = None) -> str:
    """The whole report as plain text for the terminal; with `width` (saerl.terminal.output_columns) its free-text
    table columns, notes and sentences are wrapped to fit it (None: one line per row, as a script reads it).
    in: the report, the width; out: the text."""
    parts = fit_lines([_title(report.record)], width)
    for title, body in sections(report):
        parts += ["", *fit_lines([f"== {title} =="], width)]
        if isinstance(body, Noted):
            parts += [format_table(body.table, width), *(p for n in body.notes for p in fit_cell("  ", n, width))]
        else:
            parts += fit_lines([body], width) if isinstance(body, str) else [format_table(body, width)]
    return "\n".join(parts) + "\n"


def html_table(df: pl.DataFrame) -> str:
    """A frame as an HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in df.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png_data_uri(path: Path) -> str:
    """A PNG file as a data URI (base64), so the HTML needs no other file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(report: RunReport) -> str:
    """The whole report as one self-contained HTML page: tables as HTML, every plot embedded as base64 PNG."""
    title = html.escape(_title(report.record))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style>"
             f"</head><body><h1>saerl report</h1><p>{title}</p>"]
    for name, body in sections(report):
        parts.append(f"<h2>{html.escape(name)}</h2>")
        if isinstance(body, Noted):
            parts += [html_table(body.table), *(f"<p>{html.escape(n)}</p>" for n in body.notes)]
        else:
            parts.append(f"<p>{html.escape(body)}</p>" if isinstance(body, str) else html_table(body))
    parts.append("<h2>Plots</h2>")
    for stage, pngs in report.plots.items():
        for png in pngs:
            caption = html.escape(f"{stage}: {png.name}")
            parts.append(f"<figure><img alt='{caption}' src='{png_data_uri(png)}'><figcaption>{caption}"
                         "</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def default_html_path(root: Path, record: RunRecord) -> Path:
    """Where the HTML report goes when no path is given: <root>/reports/<run_id>.html."""
    return Path(root) / REPORTS_DIR / f"{record.run_id}.html"


def write_html(report: RunReport, path: Path) -> Path:
    """Write the HTML report to `path` (creating its folder) atomically: a reader never sees, and a write stopped
    half way never leaves, a truncated page in place of the last whole one; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = render_html(report)
    write_file_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


# ------------------------------------------------------------------------------------------------ records / relog


def record_results(store: ArtifactStore, cfg: PipelineConfig, results: dict[str, Any]) -> RunRecord:
    """A run record for the results of :func:`saerl.pipeline.run_all` ({run name: StageResult}), with the
    same fields the flow records (reasons relative to the previous run of the config; a reused artifact's
    names the libraries it was built with whose installed versions differ now: saerl.artifacts.version_drift);
    save it with :func:`saerl.runs.save_run`."""
    from saerl.tracking import run_provenance

    provenance = run_provenance()  # code, library versions and machine, as flows.pipeline records them
    record = RunRecord(name=cfg.name, config=redacted(flatten(cfg)), extra=provenance)
    previous = previous_stage_runs(store.root, cfg.name, list(results))  # per stage run: its newest earlier run
    for name, res in results.items():
        manifest = res.ref.manifest()
        inputs = manifest.get("inputs", {})
        record.stages[name] = stage_record(
            name, res.ref.key, res.computed, stage_slice(cfg, stage_of(name), inputs), inputs, previous,
            built=manifest, installed=provenance[VERSIONS], code=build_code(), seconds=res.seconds,
            size=store.size_bytes(res.ref.stage, res.ref.key), path=res.ref.path, resumed=res.resumed)
    return record


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1, 'name': 'x'} -> {'a': {'b': 1}, 'name': 'x'}: a run record's flat config back into sections."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def run_library_versions(record: RunRecord) -> dict[str, str] | None:
    """Library versions at run time: the run record's (saerl.runs.VERSIONS, taken at its start), else, for a record
    older than that, from the manifest of the last artifact the run computed (None when the run computed nothing,
    so the versions then are unknown)."""
    if isinstance(record.extra.get(VERSIONS), dict):
        return record.extra[VERSIONS]
    for rec in reversed(ordered_stages(record)):
        manifest = Path(rec.path) / MANIFEST
        if rec.status == "computed" and manifest.exists():
            return ArtifactRef(stage_of(rec.stage), rec.key, rec.path).manifest().get("library_versions")
    return None


def tracked_status(record: RunRecord) -> str:
    """The MLflow status a run record stands for: FAILED for a run that stopped on an error (as the flow logs it),
    KILLED for one a person stopped (Ctrl-C, SIGTERM) or whose record never said it ended (killed before it could,
    or still running), else FINISHED."""
    from saerl.tracking import TRACKED_FAILED, TRACKED_FINISHED, TRACKED_KILLED

    if record.extra.get(FAILED):
        return TRACKED_FAILED
    return TRACKED_KILLED if record.extra.get(RUNNING) or record.extra.get(STOPPED) else TRACKED_FINISHED


def recorded_config(flat: dict[str, Any]) -> dict[str, Any]:
    """A run record's flattened config as a config dict that validates today: a record saved before session 33 may
    name a data.path beside a source that never read it (the run trained on the built-in sample or the testbed),
    which the config now refuses; that path is dropped, as the run ignored it. Fields the schema has lost since the
    run are left out, with a warning naming them (a record's keys are flatten's, today's field_paths). in: the
    record's config; out: the nested config dict."""
    if flat.get("data.source", "sample") != "file" and flat.get("data.path") is not None:
        flat = {k: v for k, v in flat.items() if k != "data.path"}
    known = set(field_paths())
    gone = sorted(k for k in flat if k not in known)
    if gone:  # a field removed since the run (score.ood_topic_fraction): the record could never be relogged
        log.warning("the run record names fields this saerl no longer has, left out: %s", ", ".join(gone))
        flat = {k: v for k, v in flat.items() if k not in gone}
    return unflatten(flat)


def run_config(record: RunRecord) -> PipelineConfig:
    """The config a run ran with, from its record's flat config (:func:`recorded_config`: a field the schema has lost
    since is left out, with a warning). in: run record; out: its PipelineConfig."""
    return build_config(recorded_config(record.config), where=f"run record {record.run_id}")


def relog(root: Path, record: RunRecord, uri: str | None = None, again: bool = False) -> str:
    """Log a finished run into MLflow from its artifacts: the parent run (the record's flat config as params, as
    stored: the params the live run logged, not fields the code gained since; the git tags the record kept, both
    'unknown' in a record saved before records kept them, and library-version tags; the run record as an artifact,
    back-dated to the run's start, closed with the status the record stands for: :func:`tracked_status`) and one nested run per stage run with the params, tags, metrics, plots, tables and
    per-step metrics the flow logs.
    in: artifact root, the run record, tracking URI (None = the run's tracking.uri, else SQLite under root);
    out: the new parent run's id. Raises RuntimeError when the tracking store cannot be reached, when the run is
    still going (its live lock is held: it would be logged KILLED, and its live parent run is being logged now), or
    when the store holds the run already (its live run's or an earlier relog's parent: a second copy doubles every
    comparison it is in), unless `again`."""
    from saerl.runs import relocated, run_path
    from saerl.tracking import CONFIG_FILE, config_text

    if unfinished(Path(root), record) == STILL_RUNNING:
        raise RuntimeError(f"run {record.run_id} is still running (its live lock is held): relog it once it has "
                           "ended; its own MLflow run is being logged meanwhile")

    record = relocated(record, Path(root))  # the artifacts under `root`, not where a moved root was at run time
    cfg = _relog_config(record, uri)
    _refuse_tracked_twice(cfg, Path(root), record.run_id, again)
    tracker = _relog_tracker(cfg, Path(root), record)
    tracker.log_text(config_text(recorded_config(record.config), record.run_id, record.extra.get(UNTIL)), CONFIG_FILE)
    _log_stage_runs(tracker, record)
    run_file = run_path(root, record.run_id)
    if run_file.exists():
        tracker.log_artifact(run_file)
    tracker.finish(tracked_status(record), ended=record.extra.get(STOPPED) or record.extra.get(FAILED))
    if not tracker.enabled or tracker.parent_id is None:
        raise RuntimeError(f"could not log run {record.run_id} to MLflow at {redact(tracker.uri)} (see the warning above)")
    return tracker.parent_id


def _relog_config(record: RunRecord, uri: str | None) -> PipelineConfig:
    """The config a relog tracks with: the run's (:func:`run_config`) with tracking on, at `uri` when given. in: run
    record (relocated), tracking URI or None; out: the config. Raises RuntimeError when `uri` is None and the run's
    tracking URI had credentials its record does not keep."""
    cfg = run_config(record)
    if uri is None and REDACTED in (cfg.tracking.uri or ""):
        raise RuntimeError(f"run {record.run_id} was tracked at {cfg.tracking.uri}, whose credentials its record "
                           "does not keep: give the URI with --uri (or the credentials in MLFLOW_TRACKING_USERNAME "
                           "and MLFLOW_TRACKING_PASSWORD, and --uri without them)")
    return cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={
        "enabled": True, "uri": uri or cfg.tracking.uri})})


def _refuse_tracked_twice(cfg: PipelineConfig, root: Path, run_id: str, again: bool) -> None:
    """Refuses a relog into a store that holds the run already (a finished parent run of it: its live run's or an
    earlier relog's), unless `again`; warns of a parent left RUNNING (tracking stopped during the run). in: relog
    config, artifact root, run id, --again; out: None. Raises RuntimeError naming the store (also when it cannot be
    read)."""
    from saerl.tracking import TRACKED_RUNNING, tracked_parents, tracking_uri

    target = tracking_uri(cfg, root)
    try:
        there = tracked_parents(cfg, root, run_id)
    except Exception as err:  # noqa: BLE001 - any store failure: say which store
        raise RuntimeError(f"could not read the MLflow store at {redact(target)} ({redact(str(err))})") from err
    whole = [run for run, status in there.items() if status != TRACKED_RUNNING]
    if whole and not again:
        raise RuntimeError(f"run {run_id} is in MLflow at {redact(target)} already (parent run "
                           f"{', '.join(whole)}): a second copy would count twice in every comparison; relog it "
                           "into another store (--uri), or log it again anyway with --again")
    for run in set(there) - set(whole):  # the live run's parent, left RUNNING when tracking stopped during the run
        log.warning("relog: MLflow run %s is this run's parent as far as its tracking got (it stopped during the run, "
                    "so it reads RUNNING): the relog logs the whole run beside it; delete it in MLflow to keep one "
                    "copy", run)


def _relog_tracker(cfg: PipelineConfig, root: Path, record: RunRecord) -> Tracker:
    """The Tracker a relog logs through: the parent run back-dated to the run's start, with its params as the run
    logged them, the record's tags, library-version tags (and where the versions came from), and a sweep child's
    name, tags and swept params. in: relog config, artifact root, run record; out: the tracker (parent run open)."""
    from saerl.sweep import sweep_tags
    from saerl.tracking import RELOGGED_TAG, Tracker, library_tags, record_tags

    versions = run_library_versions(record)
    found = "run record" if VERSIONS in record.extra else "artifact manifests" if versions else "installed at relog time"
    tags = {RELOGGED_TAG: "true", "saerl.versions_from": found,
            **record_tags(record.extra),  # the code, versions, machine and command of the run ('unknown' code, no
            # others, in an older record)
            **record.extra.get(PREFECT_TAGS, {})}  # the Prefect flow run it ran in (none in an older record)
    sweep = record.extra.get(SWEEP)  # a sweep's child: its runs named, tagged and given its swept keys as it was
    label = record.extra.get(SETTING) if sweep else None
    return Tracker(cfg, root, record.run_id, tags=library_tags(versions) | tags, started=record.started,
                   params=record.config,  # as the run logged it: not fields the code gained since
                   label=label, common_tags=sweep_tags(sweep, label) if sweep else {},
                   common_params=record.extra.get(SWEEP_PARAMS, {}) if sweep else {})


def _log_stage_runs(tracker: Tracker, record: RunRecord) -> None:
    """Logs one nested run per stage run of the record whose artifact is still on disk (a warning for each one
    gone), as the flow logs it. in: the relog's tracker, run record (relocated); out: None."""
    from saerl.runs import lineage_config
    from saerl.tracking import log_stage_run

    for rec in ordered_stages(record):
        stage = stage_of(rec.stage)
        if not (Path(rec.path) / MANIFEST).exists():
            log.warning("relog: %s's artifact %s is gone; its stage run is not logged", rec.stage, rec.path)
            continue
        log_stage_run(tracker, stage, rec, ArtifactRef(stage, rec.key, rec.path).manifest().get("metrics", {}),
                      lineage_config(record.stages, rec.stage))
