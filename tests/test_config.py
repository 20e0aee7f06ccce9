"""saerl.config (schema, YAML, config slices and their hashes), with saerl.overrides (dotted overrides, readable
errors) as load_config applies them (the override functions' own tests: tests/test_overrides.py)."""

from pathlib import Path

import pytest

from saerl.config import (
    ConfigError,
    PipelineConfig,
    config_slice,
    device_type,
    field_paths,
    flatten,
    load_config,
    stable_hash,
)
from saerl.overrides import apply_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROOT = CONFIGS.parent


def test_every_shipped_config_validates():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert files, "configs/ must hold at least demo.yaml"
    for f in files:
        cfg = load_config(f)
        assert cfg.name


def test_name_defaults_to_file_stem(tmp_path):
    p = tmp_path / "my-exp.yaml"
    p.write_text("curriculum:\n  mix_ratio: 0.3\n")
    cfg = load_config(p)
    assert cfg.name == "my-exp"
    assert cfg.curriculum.mix_ratio == 0.3


def test_override_sets_nested_value_and_parses_types(tmp_path):
    cfg = load_config(None, ["curriculum.mix_ratio=0.2", "train.seeds=[1, 2, 3]", "extract.layer=-2",
                             "score.n_clusters=auto"])
    assert cfg.curriculum.mix_ratio == 0.2
    assert cfg.train.seeds == [1, 2, 3]
    assert cfg.extract.layer == -2
    assert cfg.score.n_clusters == "auto"


def test_unknown_override_key_names_path_and_suggests():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["curriculum.mix_ratoi=0.2"])
    msg = str(err.value)
    assert "curriculum.mix_ratoi" in msg and "did you mean 'curriculum.mix_ratio'" in msg


def yaml_config_error(folder: Path, text: str) -> tuple[Path, str]:
    """Write `text` as a config file in `folder` and load it: (its path, the ConfigError's message)."""
    p = folder / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    return p, str(err.value)


def test_unknown_yaml_key_names_path_and_suggests(tmp_path):
    _, msg = yaml_config_error(tmp_path, "curriculum:\n  mixratio: 0.2\n")
    assert "unknown key 'curriculum.mixratio'" in msg and "curriculum.mix_ratio" in msg


def test_a_yaml_syntax_error_is_a_config_error_naming_the_file_and_line(tmp_path):
    """A YAML syntax error ended in a raw traceback whose message named "<unicode string>"."""
    p, msg = yaml_config_error(tmp_path, "curriculum:\n  mix_ratio: [0.2\n  batch_size: 16\n")
    assert f"{p} is not valid YAML" in msg and f'in "{p}", line' in msg and "<unicode string>" not in msg


def test_yaml_merge_keys_load_and_a_key_that_is_no_name_is_a_config_error(tmp_path):
    """The loader that refuses a key given twice built YAML's merge key `<<` as a key and refused a valid file as
    "not valid YAML: could not determine a constructor for the tag ...merge"; a key that is a list (`? [a]`) was a
    raw TypeError. Merges load as YAML means (an own key overrides a merged one); a key twice is still refused."""
    merged = tmp_path / "merge.yaml"
    merged.write_text("eval:\n  sets:\n    a: &s {path: a.jsonl, prompt: q, answer: ans}\n"
                      "    b: {<<: *s, path: b.jsonl}\ntrain: {<<: {max_steps: 3, seeds: [0]}, seeds: [1]}\n")
    cfg = load_config(merged)
    assert (cfg.eval.sets["b"].path, cfg.eval.sets["b"].prompt, cfg.eval.sets["a"].path) == ("b.jsonl", "q", "a.jsonl")
    assert (cfg.train.max_steps, cfg.train.seeds) == (3, [1])
    twice = tmp_path / "twice.yaml"
    twice.write_text("train: {<<: {max_steps: 3}, seeds: [0], seeds: [1]}\n")
    with pytest.raises(ConfigError, match="key 'seeds' appears twice"):
        load_config(twice)
    listed = tmp_path / "listkey.yaml"
    listed.write_text("name: x\n? [a]\n: b\n")
    with pytest.raises(ConfigError, match="line 2: a key must be a name, got a list"):
        load_config(listed)


@pytest.mark.parametrize("override", ["train.max_steps=yes", "score.n_clusters=true", "train.learning_rate=false",
                                      "data.max_rows=on"])
def test_a_number_field_refuses_a_yes_or_no(override):
    """pydantic read `train.max_steps=yes` as 1 step and `score.n_clusters=true` as k = 1, without a word."""
    with pytest.raises(ConfigError, match=rf"field '{override.split('=')[0]}': got (True|False) \(bool\); takes a "
                                          r"number, not (true|false)"):
        load_config(None, [override])
    assert load_config(None, ["train.use_vllm=yes"]).train.use_vllm is True, "a yes/no field still takes one"


def test_a_list_of_numbers_refuses_yes_or_no_items():
    """`train.seeds=[yes, no]` still loaded as seeds [1, 0] (a review): the items of a list of numbers are checked."""
    for override in ("train.seeds=[yes, no]", "score.k_range=[true, 4]"):
        with pytest.raises(ConfigError, match=r"takes numbers, not \['true'"):
            load_config(None, [override])
    assert load_config(None, ["train.seeds=[0, 1]"]).train.seeds == [0, 1]


def test_a_nested_list_of_poolings_is_a_config_error_naming_the_item():
    """sae.encode_pool=[[max]] was a raw TypeError (unhashable type: 'list') from the validator that drops repeats."""
    with pytest.raises(ConfigError, match=r"field 'sae.encode_pool.0': got \['max'\]"):
        load_config(None, ["sae.encode_pool=[[max]]"])
    assert load_config(None, ["sae.encode_pool=[max, mean, max]"]).sae.encode_pool == ["max", "mean"]


def test_unknown_section_is_an_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("curicculum:\n  mix_ratio: 0.2\n")
    with pytest.raises(ConfigError, match="did you mean 'curriculum'"):
        load_config(p)


def test_wrong_type_names_field_value_and_expected_type():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.max_steps=lots"])
    msg = str(err.value)
    assert "train.max_steps" in msg and "'lots'" in msg and "integer" in msg


def test_out_of_range_value_is_rejected():
    with pytest.raises(ConfigError, match="curriculum.mix_ratio"):
        load_config(None, ["curriculum.mix_ratio=1.5"])


def test_a_text_field_keeps_an_override_yaml_reads_as_a_number_boolean_or_mapping_as_written():
    cfg = load_config(None, ["model.revision=0123456", "name=2024", "data.topic=no", "data.id=null"])
    assert (cfg.model.revision, cfg.name, cfg.data.topic, cfg.data.id) == ("0123456", "2024", "no", None)
    cfg = load_config(None, ["data.prompt=Solve: {question}"])  # a template, not the mapping YAML reads
    assert cfg.data.prompt == "Solve: {question}" and load_config(None, ["data.prompt={q}"]).data.prompt == "{q}"
    assert load_config(None, ["curriculum.mix_ratio=0.3"]).curriculum.mix_ratio == 0.3  # numbers stay numbers


def test_loss_type_and_epsilon_high_descriptions_say_what_algorithm_dapo_does_with_them():
    from saerl.config import TrainConfig
    from saerl.dapo import DAPO_EPSILON_HIGH, dapo_overrides

    fields = TrainConfig.model_fields
    assert dapo_overrides(TrainConfig(algorithm="dapo", loss_type="grpo"))["loss_type"] == "dapo"  # ignored
    assert "algorithm=dapo always uses dapo" in fields["loss_type"].description
    assert dapo_overrides(TrainConfig(algorithm="dapo"))["epsilon_high"] == DAPO_EPSILON_HIGH
    assert f"{DAPO_EPSILON_HIGH} under algorithm=dapo" in fields["epsilon_high"].description
    assert "None = epsilon under algorithm=grpo" in fields["epsilon_high"].description  # trl's default


def test_minibatch_above_description_says_it_also_samples_the_cluster_report_and_map():
    import numpy as np

    from saerl.config import ScoreConfig
    from saerl.property_models import report_rows

    cfg = ScoreConfig(minibatch_above=100)
    assert len(report_rows(150, cfg)) == 100 and np.array_equal(report_rows(100, cfg), np.arange(100))
    assert "seeded sample of this many prompts" in ScoreConfig.model_fields["minibatch_above"].description


def test_field_paths_and_flatten_agree():
    cfg = PipelineConfig()
    assert set(flatten(cfg)) == set(field_paths())


def test_slice_selects_only_declared_fields():
    cfg = PipelineConfig()
    sl = config_slice(cfg, ("curriculum", "score.quality_threshold"))
    assert "curriculum.mix_ratio" in sl and "score.quality_threshold" in sl
    assert not any(k.startswith("extract") for k in sl)
    assert "score.seed" not in sl
    # a prefix reads a field or a section, not every field whose name starts alike (train.epsilon_high)
    assert config_slice(cfg, ("train.epsilon",)) == {"train.epsilon": cfg.train.epsilon}


def test_a_slice_hash_is_stable_and_sensitive_only_to_its_fields():
    a = PipelineConfig()
    b = load_config(None, ["curriculum.mix_ratio=0.9"])

    def slice_hash(cfg: PipelineConfig, reads: tuple[str, ...]) -> str:
        return stable_hash(config_slice(cfg, reads))

    extract_reads = ("extract", "model")
    assert slice_hash(a, extract_reads) == slice_hash(b, extract_reads)
    assert slice_hash(a, ("curriculum",)) != slice_hash(b, ("curriculum",))
    assert slice_hash(a, ("curriculum",)) == slice_hash(PipelineConfig(), ("curriculum",))


def test_section_override_sets_its_fields_and_keeps_the_others(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  seeds: [3, 4]\n  learning_rate: 0.001\n")
    cfg = load_config(p, ["train={max_steps: 50, top_k: 5}"])
    assert cfg.train.max_steps == 50 and cfg.train.top_k == 5
    assert cfg.train.seeds == [3, 4] and cfg.train.learning_rate == 0.001, "the YAML's other train fields stay"
    defaults = load_config(None, ["train.seeds=[7]", "train={max_steps: 50}"])
    assert defaults.train.seeds == [7] and defaults.train.max_steps == 50
    with pytest.raises(ConfigError, match="unknown key 'train.max_stepz'"):
        load_config(None, ["train={max_stepz: 50}"])


def test_a_value_no_member_of_a_union_accepts_names_the_field_once():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["score.n_clusters=abc"])
    lines = str(err.value).splitlines()[1:]
    assert len(lines) == 1 and lines[0].strip().startswith("field 'score.n_clusters': got 'abc'"), lines
    assert "valid integer" in lines[0] and "or Input should be 'auto'" in lines[0]
    with pytest.raises(ConfigError, match=r"field 'eval\.sets\.gsm': got 1"):  # a dict key is part of the path
        load_config(None, ["eval.sets={gsm: 1}"])


def test_a_section_set_to_a_plain_value_says_it_is_a_section():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["score=5"])
    assert "'score' is a section" in str(err.value) and "unknown" not in str(err.value)
    assert load_config(None, ["name=other"]).name == "other"


def test_an_artifact_root_under_home_is_expanded():
    import os

    cfg = load_config(None, ["runtime.artifact_root=~/saerl-runs"])
    assert cfg.runtime.artifact_root == os.path.join(os.path.expanduser("~"), "saerl-runs")


def test_device_type_resolves_auto_by_the_gpu_and_a_named_device_without_torch(monkeypatch):
    import subprocess
    import sys

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_type("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_type("auto") == "cpu"
    assert device_type("cuda") == "cuda" and device_type("cpu") == "cpu"
    # a config that names its device gets its cache keys without importing torch (seconds at every plan)
    code = "import sys; from saerl.config import device_type; device_type('cuda'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_demo_keeps_resumable_checkpoints_without_moving_a_key():
    """README's 'Interrupting and resuming' promises an interrupted demo training run goes on from its checkpoint:
    train.save_every defaults to 0 (none kept), so the demo's config sets it; it is result-neutral, so no key moves."""
    from saerl.stages import RESULT_NEUTRAL, stage_key

    demo = load_config(CONFIGS / "demo.yaml")
    assert 0 < demo.train.save_every < demo.train.max_steps
    assert "train.save_every" in RESULT_NEUTRAL
    without = load_config(CONFIGS / "demo.yaml", ["train.save_every=0"])
    assert stage_key(demo, "train", {}) == stage_key(without, "train", {})


def test_held_out_set_names_must_name_metrics_and_keep_off_the_testbeds_own():
    """eval.sets keys were free text: '..' or 'a//b' made MLflow refuse the metrics (tracking went off for the
    run), 'x:reachable' collided with set x's reachable stratum, and 'heldout' replaced the testbed's own set."""
    for name in ("..", "a//b", "x:reachable", "ASDiv (2021)", ".hidden"):
        with pytest.raises(ConfigError, match="not usable: a set's name names its metrics"):
            load_config(None, ["data.source=file", "data.path=x.jsonl", f"eval.sets={{'{name}': x.jsonl}}"])
    with pytest.raises(ConfigError, match="'heldout', the name of the testbed's own held-out set"):
        load_config(None, ["data.source=testbed", "eval.sets={heldout: x.jsonl}"])
    ok = load_config(None, ["eval.sets={gsm8k_test: x.jsonl, asdiv-v1.2: y.jsonl}"])
    assert set(ok.eval.sets) == {"gsm8k_test", "asdiv-v1.2"}
    assert load_config(None, ["data.source=file", "data.path=x.jsonl", "eval.sets={heldout: x.jsonl}"]).eval.sets


def test_a_config_error_shows_a_short_form_of_a_huge_value(tmp_path):
    """Nine levels of ten YAML aliases each (a small file) made the error message print 10^9 items: it ran out of
    memory. The error shows a few levels and items of the value."""
    lines = ["eval:", "  sets:", "    s0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"    s{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"field 'eval.sets.s8': got \[\[\[") as err:
        load_config(bomb)
    assert len(str(err.value)) < 20_000


def test_a_data_path_without_a_source_reads_that_file_and_a_source_that_ignores_it_is_refused():
    """data.source defaulted to the built-in sample: a config naming only data.path trained on the sample and
    ignored the file without a word. A path with no source now reads the file; a path beside a source that does
    not read it (sample, testbed) is refused, naming both fields."""
    from saerl.config import ConfigError

    assert load_config(None, ["data.path=/d/train.jsonl"]).data.source == "file"
    assert load_config(None, []).data.source == "sample"
    for source in ("sample", "testbed"):
        with pytest.raises(ConfigError, match=f"data.path is '/d/train.jsonl' but data.source is '{source}'"):
            load_config(None, [f"data.source={source}", "data.path=/d/train.jsonl"])
    with pytest.raises(ConfigError, match="set data.source=file"):
        load_config(CONFIGS / "demo.yaml", ["data.path=/d/train.jsonl"])


def test_an_empty_section_is_all_defaults_overrides_into_it_included(tmp_path):
    """YAML reads `eval:` with nothing under it (its entries commented out) as None: an override of one entry of a
    mapping in it (eval.sets.gsm=PATH) crashed with AttributeError and a traceback, a plain field override said
    "'eval' is not a section", and no override at all "got None". An empty section is now an absent one."""
    path = tmp_path / "emptysec.yaml"
    path.write_text("name: t\neval:\n  # sets: {}\ndata: {source: sample}\ntestbed:\n")
    assert load_config(path).eval == PipelineConfig().eval
    assert load_config(path, ["eval.sets.gsm=x.jsonl"]).eval.sets == {**PipelineConfig().eval.sets, "gsm": "x.jsonl"}
    assert load_config(path, ["eval.k_samples=2"]).eval.k_samples == 2
    assert load_config(path, ["testbed.defect_kinds.garbled=0.3"]).testbed.defect_kinds["garbled"] == 0.3
    assert apply_overrides({"eval": None}, ["eval.k_samples=2"]) == {"eval": {"k_samples": 2}}


def test_an_empty_config_file_runs_the_defaults_with_a_warning(tmp_path, caplog):
    """A config file with nothing but comments (the wrong file, or one saved empty) ran every default without a
    word: the built-in sample data, not the user's. It still loads, and the log says so."""
    import logging

    path = tmp_path / "mine.yaml"
    path.write_text("# data:\n#   path: problems.jsonl\n\n")
    with caplog.at_level(logging.WARNING, logger="saerl.config"):
        cfg = load_config(path)
    assert cfg.data == PipelineConfig().data and cfg.name == "mine"
    assert any(f"config file {path} is empty" in r.getMessage() for r in caplog.records)
    caplog.clear()
    path.write_text("name: mine\n")
    with caplog.at_level(logging.WARNING, logger="saerl.config"):
        load_config(path)
    assert not caplog.records, "a file with settings says nothing"


def test_held_out_reading_fields_left_unset_keep_the_keys_of_configs_written_before():
    """eval.sets entries gained format and hf_split; a config whose entries leave them out (qwen's asdiv and aime24
    mappings) must dump, and so key its heldout and train runs, as before; one that sets them is keyed by them."""
    from saerl.stages import located

    cfg = load_config(CONFIGS / "qwen2.5-math-1.5b.yaml")
    data = "../shared/data"
    assert flatten(cfg)["eval.sets"] == {  # the form written before the new fields existed
        "gsm8k_test": f"{data}/gsm8k_test.jsonl", "college_math": f"{data}/college_math_test.jsonl",
        "amc23": f"{data}/amc23_test.jsonl",
        "asdiv": {"path": f"{data}/asdiv_test.jsonl", "prompt": "{body} {question}", "answer": None, "id": None},
        "aime24": {"path": f"{data}/aime24_test.jsonl", "prompt": "problem", "answer": None, "id": None}}
    assert PipelineConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # a record's dump reads back the same
    split = load_config(None, ["eval.sets.t={path: d/hf, hf_split: test}", "eval.sets.u={path: d/u, format: csv}"])
    flat = located("eval.sets", flatten(split)["eval.sets"])
    assert flat["t"]["hf_split"] == "test" and flat["u"]["format"] == "csv" and "format" not in flat["t"]


def test_a_held_out_set_with_id_false_reads_content_hash_ids_whatever_data_id_names():
    """Held-out sets inherit data.id (demo and smoke map `id: id`), and only truthy per-set fields were taken: a file
    without an id column (GSM8K test: question, answer) could not be added but by unsetting data.id, which re-ids the
    training data. An entry's id: false reads it with none (content-hash ids, as data.id unset gives); an entry that
    leaves id out, or gives null (as a config's dump writes an unset one), reads data.id; 0, true and "" (read as
    data.id's, without a word) are refused."""
    from saerl.config import HeldOutSet, build_config, held_out_mapping

    cfg = load_config(CONFIGS / "demo.yaml", ["eval.sets.g={path: t.jsonl, prompt: question, id: false}",
                                              "eval.sets.n={path: t.jsonl, prompt: question, id: null}",
                                              "eval.sets.p=t.jsonl"])
    assert cfg.data.id == "id"
    assert held_out_mapping(cfg.data, cfg.eval.sets["g"]).id is None  # content-hash ids
    assert held_out_mapping(cfg.data, cfg.eval.sets["g"]).prompt == "question"
    assert held_out_mapping(cfg.data, cfg.eval.sets["n"]).id == "id"  # null: data.id's, as a dump reads back
    assert held_out_mapping(cfg.data, cfg.eval.sets["p"]).id == "id"
    assert held_out_mapping(cfg.data, HeldOutSet(path="t.jsonl", id="qid")).id == "qid"
    assert build_config(cfg.model_dump(mode="json")) == cfg  # the flows' and run records' round trip keeps false
    assert build_config(cfg.model_dump(mode="json")).eval.sets["g"].id is False
    for value in ("0", "true", "3"):
        with pytest.raises(ConfigError, match=r"eval\.sets\.g\.id.*false for a file with no id column"):
            load_config(None, [f"eval.sets.g={{path: t.jsonl, id: {value}}}"])
    for value in ('""', "' '"):  # "" read as data.id's without a word
        with pytest.raises(ConfigError, match=r"eval\.sets\.g\.id.*names no field: write id: false for a file with no "
                                              r"id column \(content-hash ids\), the file's id field"):
            load_config(None, [f"eval.sets.g={{path: t.jsonl, id: {value}}}"])
    for field, leave in (("prompt", "data.prompt's"), ("answer", "data.answer's"), ("hf_split", "the folder's only")):
        for value in ('""', "' '"):  # read as data.prompt's / data.answer's / the only split, without a word
            with pytest.raises(ConfigError, match=rf"eval\.sets\.g\.{field}.*names no field: .*leave it out for {leave}"):
                load_config(None, [f"eval.sets.g={{path: t.jsonl, {field}: {value}}}"])


@pytest.mark.parametrize(("override", "names"), [
    ("score.n_jobs=0", ["score.n_jobs=0 is not a thread count", "score.n_jobs=1"]),
    ("score.probe_cs=[0.1, 0]", ["score.probe_cs.1", "got 0", "greater than 0"]),
    ("score.ridge_alphas=[-1.0]", ["score.ridge_alphas.0", "got -1.0", "greater than 0"]),
    ("score.enet_l1_ratios=[0.5, 2.0]", ["score.enet_l1_ratios.1", "got 2.0", "less than or equal to 1"]),
    ("score.enet_l1_ratios=[0]", ["score.enet_l1_ratios.0", "greater than 0"]),
    ("train.epsilon_high=-0.5", ["train.epsilon_high", "got -0.5", "greater than 0"]),
    ("train.learning_rate=.inf", ["train.learning_rate", "got inf", "finite number"]),
    ("train.max_grad_norm=0", ["train.max_grad_norm", "got 0", "greater than 0"]),
    ("health.format_only_share=1.5", ["health.format_only_share", "got 1.5", "less than or equal to 1"]),
    ("curriculum.frontier_target=.nan", ["curriculum.frontier_target", "got nan", "finite number"]),
    ("testbed.defect_kinds.garbled=.inf", ["testbed.defect_kinds.garbled", "finite number"]),
    ("testbed.d_model=30", ["testbed.d_model=30", "testbed.n_heads=4", "testbed.d_model=32", "testbed.n_heads=3"]),
    ("testbed.d_model=20", ["testbed.d_model=20", "even width", "testbed.d_model=16", "testbed.n_heads=5"]),
    ("testbed.n_heads=3", ["testbed.d_model=128", "testbed.n_heads=3", "testbed.d_model=126"]),
    ("score.k_range=[1, 1]", ["score.k_range=[1, 1]", "k = 1 is never searched", "score.k_range=[2, 16]"]),
])
def test_numbers_a_stage_fails_on_or_bends_silently_are_refused_naming_the_field_and_the_fix(override, names):
    """score.n_jobs=0, a C or alpha <= 0 and a testbed width its heads do not split failed inside their stage naming
    no field; an l1_ratio above 1 (a negative L2 term), a negative epsilon_high (an upper clip below the lower
    one), an inf or nan anywhere and a k_range under 2 (one cluster) ran on without a word."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert all(n in str(err.value) for n in names), str(err.value)


def test_numbers_at_the_edge_of_their_range_load():
    cfg = load_config(None, ["score.n_jobs=-1", "score.enet_l1_ratios=[1.0]", "train.epsilon_high=0.28",
                             "testbed.d_model=136", "score.k_range=[1, 2]"])
    assert (cfg.score.n_jobs, cfg.score.enet_l1_ratios, cfg.testbed.d_model, cfg.score.k_range) == (-1, [1.0], 136, (1, 2))
    assert load_config(None, ["score.n_jobs=4", "testbed.n_heads=8", "testbed.d_model=64"]).score.n_jobs == 4
    assert load_config(None, ["score.n_jobs=-2"]).score.n_jobs == -2  # joblib: every core but one, as before


@pytest.mark.parametrize(("key", "meant"), [("runtime.root", "runtime.artifact_root"), ("eval.problems", "eval.max_problems")])
def test_an_unknown_field_of_a_real_section_suggests_a_field_not_the_section(key, meant):
    """`runtime.root=DIR` said "did you mean 'runtime'?": the section the user had already named, no field of it."""
    with pytest.raises(ConfigError, match=rf"unknown key '{key}'.*did you mean '{meant}'"):
        load_config(None, [f"{key}=x"])


@pytest.mark.parametrize(("key", "meant"), [
    ("train.batch_size", "curriculum.batch_size"), ("train.epochs", "curriculum.epochs"),
    ("train.lr", "train.learning_rate"), ("eval.k", "eval.k_samples"), ("sae.learning_rate", "sae.lr"),
])
def test_an_unknown_key_for_a_knob_elsewhere_suggests_that_knob_not_another_stages(key, meant):
    """difflib matched train.batch_size to sae.batch_size (the SAE's token batch: following it reran the SAE and left
    the RL batch as it was), train.lr to train.arms and eval.k to the section eval."""
    with pytest.raises(ConfigError, match=rf"unknown key '{key}'.*did you mean '{meant}'"):
        load_config(None, [f"{key}=1"])


def test_the_final_evaluations_limit_is_its_own_field_defaulting_to_the_training_length():
    """eval.max_new_tokens was a key alias of train.max_completion_length (the only limit, the train key's too): it
    is a field of its own, unset meaning the training length, and the paper's config evaluates at the 2048 tokens
    Qwen2.5-Math's own suite generates."""
    from saerl.config import eval_max_new_tokens
    from saerl.overrides import KEY_ALIASES

    assert "eval.max_new_tokens" not in KEY_ALIASES
    default = load_config(None, ["train.max_completion_length=40"])
    assert default.eval.max_new_tokens is None and eval_max_new_tokens(default) == 40
    assert eval_max_new_tokens(load_config(None, ["train.max_completion_length=40", "eval.max_new_tokens=96"])) == 96
    with pytest.raises(ConfigError, match="eval.max_new_tokens"):
        load_config(None, ["eval.max_new_tokens=0"])
    qwen = load_config(CONFIGS / "qwen2.5-math-1.5b.yaml")
    assert (eval_max_new_tokens(qwen), qwen.train.max_completion_length) == (2048, 512)


def test_a_held_out_sets_field_is_set_through_its_entry_and_a_dotted_set_name_is_a_name():
    """'eval.sets.a.prompt=q' was an unknown key with a suggestion of data.prompt (the training data's prompt):
    an entry is given whole, and the error writes it so; a field misspelt inside an entry suggests the entry's."""
    with pytest.raises(ConfigError, match=r"eval.sets is set whole.*eval.sets.a=\{path: x.jsonl, prompt: q\}"):
        load_config(None, ["eval.sets.a=x.jsonl", "eval.sets.a.prompt=q"])
    with pytest.raises(ConfigError, match=r"unknown key 'eval.sets.a.promt' \(did you mean 'eval.sets.a.prompt'"):
        load_config(None, ["eval.sets.a={path: x.jsonl, promt: q}"])
    assert load_config(None, ["eval.sets.asdiv-v1.2=x.jsonl"]).eval.sets == {"asdiv-v1.2": "x.jsonl"}


def test_an_override_integer_with_a_leading_zero_is_decimal_not_octal():
    """YAML 1.1 read train.max_steps=010 as octal 8; a number field reads it in decimal, a text field keeps it."""
    cfg = load_config(None, ["train.max_steps=010", "train.seeds=[07, 010]", "model.revision=0123456",
                             "eval.sets.a=0123", "train.learning_rate=1e-4", "testbed.n_pool=0x10"])
    assert (cfg.train.max_steps, cfg.train.seeds, cfg.model.revision) == (10, [7, 10], "0123456")
    assert cfg.eval.sets == {"a": "0123"} and cfg.train.learning_rate == 1e-4 and cfg.testbed.n_pool == 16
