"""saerl.overrides: parsing a `key.path=value` override, applying overrides to a raw config, key aliases, and the
refusal of an override that undoes an earlier one (load_config's use of them: tests/test_config.py)."""

import pytest

from saerl.config import ConfigError, field_paths, load_config
from saerl.overrides import apply_overrides, parse_override


def test_malformed_override():
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("curriculum.mix_ratio")


def test_override_values_keep_a_hash_sign_and_a_date_as_written():
    assert parse_override("data.path=/data/set #2.jsonl") == ("data.path", "/data/set #2.jsonl")
    assert parse_override("model.revision=2024-05-01") == ("model.revision", "2024-05-01")
    assert parse_override("curriculum.mix_ratio=0.2") == ("curriculum.mix_ratio", 0.2)
    assert parse_override("score.k_range=[4, 8]") == ("score.k_range", [4, 8])
    cfg = load_config(None, ["model.revision=2024-05-01", 'runtime.artifact_root="/tmp/runs #2"'])
    assert cfg.model.revision == "2024-05-01" and cfg.runtime.artifact_root == "/tmp/runs #2"


def test_apply_overrides_does_not_mutate_input():
    raw = {"curriculum": {"mix_ratio": 0.1}}
    out = apply_overrides(raw, ["curriculum.mix_ratio=0.4"])
    assert raw["curriculum"]["mix_ratio"] == 0.1 and out["curriculum"]["mix_ratio"] == 0.4


def test_every_key_alias_names_a_valid_key_for_an_invalid_one():
    from saerl.overrides import KEY_ALIASES

    paths = set(field_paths())
    assert all(meant in paths and key not in paths for key, meant in KEY_ALIASES.items())


@pytest.mark.parametrize(("overrides", "names"), [
    (["train.max_steps=5", "train.max_steps=6"], ["'train.max_steps=6' sets train.max_steps again",
                                                  "after 'train.max_steps=5'"]),
    (["train.max_steps=5", "train={max_steps: 6}"], ["sets train.max_steps again"]),
    (["eval.sets.a=x.jsonl", "eval.sets={b: y.jsonl}"], ["replaces eval.sets whole, dropping eval.sets.a",
                                                         "'eval.sets.a=x.jsonl'"]),
    (["eval.sets.a=x.jsonl", "eval={sets: {b: y.jsonl}}"], ["replaces eval.sets whole"]),
    (["eval.sets={a: x.jsonl}", "eval.sets.a=y.jsonl"], ["sets eval.sets.a again"]),
    (["testbed.defect_kinds.garbled=0.1", "testbed.defect_kinds.garbled=0.2"], ["testbed.defect_kinds.garbled again"]),
])
def test_a_users_override_that_undoes_an_earlier_one_is_refused(overrides, names):
    """The last of two overrides of a key won without a word, and 'eval.sets={b: F}' after 'eval.sets.a=G' dropped
    set a (a YAML file refuses a key given twice)."""
    from saerl.overrides import refuse_rewrites

    with pytest.raises(ConfigError) as err:
        refuse_rewrites(overrides)
    assert all(n in str(err.value) for n in names), str(err.value)


def test_overrides_that_add_to_one_another_pass_and_layered_overrides_take_the_later_value():
    from saerl.overrides import refuse_rewrites

    adding = ["eval.sets={b: y.jsonl}", "eval.sets.a=x.jsonl", "train={max_steps: 6}", "train.seeds=[1]"]
    refuse_rewrites(adding)
    dotted = ["eval.sets.gsm8k.v2=x.jsonl", "eval.sets.gsm8k=y.jsonl"]  # two sets: a set's name may hold a dot
    for overrides in (dotted, dotted[::-1]):
        refuse_rewrites(overrides)
        assert set(load_config(None, overrides).eval.sets) == {"gsm8k.v2", "gsm8k"}
    cfg = load_config(None, adding)
    assert cfg.eval.sets == {"b": "y.jsonl", "a": "x.jsonl"} and (cfg.train.max_steps, cfg.train.seeds) == (6, [1])
    # code layers its own overrides under a user's (a benchmark's defaults; --root after them): the later one wins
    assert load_config(None, ["train.seeds=[0, 1, 2]", "train.seeds=[0]"]).train.seeds == [0]


def test_an_override_of_a_whole_section_or_through_a_value_names_the_override_and_the_fix():
    """A section set to a scalar ('train=5') says it is a section and shows a field and the mapping form; a dotted
    key through a value that is no section (a raw config with train: 5) names that part."""
    with pytest.raises(ConfigError, match=r"override 'train=5': 'train' is a section, not a field; set one of its "
                                          r"fields \(train\.\w+=\.\.\.\) or several as a mapping \(train=\{\w+: \.\.\.\}\)"):
        apply_overrides({}, ["train=5"])
    with pytest.raises(ConfigError, match=r"override 'train.max_steps=3': 'train' is not a section"):
        apply_overrides({"train": 5}, ["train.max_steps=3"])
    out = apply_overrides({"train": {"max_steps": 4, "beta": 0.1}}, ["train={max_steps: 6}"])
    assert out["train"] == {"max_steps": 6, "beta": 0.1}  # a section as a mapping keeps the fields it does not name
