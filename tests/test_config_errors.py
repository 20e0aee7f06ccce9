"""Config mistakes fail early with a clear message: unknown keys, wrong types, a layer the model does not have, an
SAE whose d_in does not match the residual width, and a model repo that needs its own code without
model.trust_remote_code (which saerl never turns on by itself)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_activations import make_prompts, save_tiny_lm
from test_artifacts import write_synthetic_activations

from saerl import activations as A
from saerl.activation_store import open_activations
from saerl.artifacts import ChunkLog
from saerl.config import ConfigError, ExtractConfig, ModelConfig, SAEConfig, load_config
from saerl.sae import SAEShapeError, check_width, encode_codes, obtain_sae

TINY_LAYERS = 2
SYNTH_WIDTH = 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A tiny random Qwen2 with TINY_LAYERS blocks saved as a model folder."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny"), layers=TINY_LAYERS)


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory) -> Path:
    """A synthetic activation store of width SYNTH_WIDTH (no model needed)."""
    return write_synthetic_activations(tmp_path_factory.mktemp("synth"), n_prompts=12, d_model=SYNTH_WIDTH)


# ----------------------------------------------------------------------------------------- schema errors


@pytest.mark.parametrize(("yaml_text", "key", "suggestion"), [
    ("extract:\n  layr: 3\n", "extract.layr", "extract.layer"),
    ("model:\n  trust_remote: true\n", "model.trust_remote", "model.trust_remote_code"),
    ("sae:\n  encode_topk: 8\n", "sae.encode_topk", "sae.encode_top_k"),
    ("scroe:\n  seed: 1\n", "scroe", "score"),
])
def test_unknown_keys_name_the_key_and_the_closest_one(tmp_path, yaml_text, key, suggestion):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"unknown key '{key}'" in str(err.value) and f"did you mean '{suggestion}'" in str(err.value)
    with pytest.raises(ConfigError, match=f"unknown key '{key}"):
        load_config(None, [f"{key}=1"])


@pytest.mark.parametrize(("override", "field", "expected"), [
    ("extract.layer=top", "extract.layer", "integer"),
    ("model.trust_remote_code=maybe", "model.trust_remote_code", "boolean"),
    ("extract.pooling=[median]", "extract.pooling.0", "'mean', 'last' or 'max'"),
    ("sae.encode_top_k=0", "sae.encode_top_k", "greater than 0"),
    ("extract.chunk_rows=[1, 2]", "extract.chunk_rows", "integer"),
    ("runtime.device=tpu", "runtime.device", "'auto', 'cpu' or 'cuda'"),
])
def test_wrong_types_name_the_field_the_value_and_the_expectation(override, field, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert f"field '{field}': got " in msg and expected in msg, msg


def test_trust_remote_code_is_off_unless_set():
    assert load_config(None).model.trust_remote_code is False
    assert load_config(None, ["model.trust_remote_code=true"]).model.trust_remote_code is True


# ------------------------------------------------------------------------------------------- layer range


@pytest.mark.parametrize("layer", [TINY_LAYERS, 99, -TINY_LAYERS - 1])
def test_layer_out_of_range_fails_before_tokenizing(tiny, tmp_path, monkeypatch, layer):
    def forbidden(*_a, **_k):
        raise AssertionError("heavy work started before the layer was checked")

    monkeypatch.setattr(A, "tokenize_prompts", forbidden)
    monkeypatch.setattr(A.AutoTokenizer, "from_pretrained", forbidden)
    monkeypatch.setattr(A.AutoModelForCausalLM, "from_pretrained", forbidden)
    prompts, ids = make_prompts(4)
    with pytest.raises(ValueError, match=rf"extract.layer={layer} is out of range for a model with {TINY_LAYERS} "
                                         rf"layers \(use 0..{TINY_LAYERS - 1}"):
        A.prepare_extraction(prompts, ids, tmp_path, ModelConfig(), ExtractConfig(layer=layer), model_path=tiny)
    assert not (tmp_path / "activations.zarr").exists()


def test_layers_in_range_resolve(tiny):
    assert A.resolve_layer(None, TINY_LAYERS) == (TINY_LAYERS - 1) // 2
    assert A.resolve_layer(-1, TINY_LAYERS) == TINY_LAYERS - 1
    assert A.config_shape(A.model_config(tiny, ModelConfig())) == (TINY_LAYERS, 32)


# ---------------------------------------------------------------------------------------------- SAE width


def test_check_width_names_both_widths_and_the_fix(synth_store):
    act = open_activations(synth_store)
    check_width(SYNTH_WIDTH, act, "ok")
    with pytest.raises(SAEShapeError, match=rf"d_in=48 but layer 1 of synthetic has width d_model={SYNTH_WIDTH}"
                                            r".*Fix: .*sae.source: train"):
        check_width(48, act, "some/sae")


@pytest.fixture(scope="module")
def wide_sae(tmp_path_factory) -> Path:
    """A sae-lens TopK SAE of the wrong width (d_in 48) saved in sae-lens format."""
    from sae_lens import TopKSAE, TopKSAEConfig

    folder = tmp_path_factory.mktemp("wide")
    TopKSAE(TopKSAEConfig(d_in=48, d_sae=96, k=4)).save_model(folder)
    return folder


def test_mismatched_sae_fails_before_encoding_or_sampling(synth_store, wide_sae, tmp_path, monkeypatch):
    with pytest.raises(SAEShapeError, match="d_in=48"):
        encode_codes(synth_store, wide_sae, SAEConfig(), tmp_path / "enc", ChunkLog(tmp_path / "enc"), progress=False)
    assert not (tmp_path / "enc" / "codes.zarr").exists()
    from saerl.activation_store import Activations

    def forbidden(*_a, **_k):
        raise AssertionError("tokens were sampled before the SAE width was checked")

    monkeypatch.setattr(Activations, "sample_tokens", forbidden)
    with pytest.raises(SAEShapeError, match="d_in=48"):
        obtain_sae(SAEConfig(source="local", path=str(wide_sae)), synth_store, tmp_path / "sae")


# -------------------------------------------------------------------------------------- trust_remote_code


class _Recorded(Exception):
    """Raised by the stand-in loaders once they have recorded their arguments."""


def _recorder(calls: list[dict]):
    def load(*_args, **kwargs):
        calls.append(kwargs)
        raise _Recorded

    return load


@pytest.mark.parametrize("allowed", [False, True])
def test_loaders_pass_trust_remote_code_only_as_configured(monkeypatch, allowed):
    calls: list[dict] = []
    for cls in (A.AutoConfig, A.AutoTokenizer, A.AutoModelForCausalLM, A.AutoModel):
        monkeypatch.setattr(cls, "from_pretrained", _recorder(calls))
    model_cfg = ModelConfig(trust_remote_code=allowed)
    with pytest.raises(_Recorded):
        A.load_model("some/hub-model", model_cfg, device="cpu")
    with pytest.raises(_Recorded):
        A.prepare_extraction(["q"], ["i"], "/nonexistent", model_cfg, ExtractConfig(), model_path="some/hub-model")
    with pytest.raises(_Recorded):
        A.model_config("some/hub-model", model_cfg)
    assert len(calls) == 3 and all(c["trust_remote_code"] is allowed for c in calls)


@pytest.fixture
def remote_code_repo(tmp_path) -> Path:
    """A model folder whose config maps the Auto classes onto its own Python files (as custom-code hub repos do)."""
    folder = tmp_path / "custom-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "toy-custom", "architectures": ["ToyForCausalLM"], "hidden_size": 8, "num_hidden_layers": 2,
        "auto_map": {"AutoConfig": "configuration_toy.ToyConfig", "AutoModelForCausalLM": "modeling_toy.ToyForCausalLM"}}))
    (folder / "configuration_toy.py").write_text("raise SystemExit('this repo code must never run in the tests')\n")
    return folder


def test_remote_code_model_asks_for_the_flag(remote_code_repo):
    model_cfg = ModelConfig()
    for call in (lambda: A.load_model(str(remote_code_repo), model_cfg, device="cpu"),
                 lambda: A.model_config(str(remote_code_repo), model_cfg),
                 lambda: A.prepare_extraction(["q"], ["i"], remote_code_repo, model_cfg, ExtractConfig(),
                                              model_path=str(remote_code_repo))):
        with pytest.raises(A.RemoteCodeError) as err:
            call()
        msg = str(err.value)
        assert "set model.trust_remote_code=true" in msg and str(remote_code_repo) in msg


def test_other_load_errors_pass_through(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # no model_type: transformers' own ValueError, untouched
    with pytest.raises(ValueError, match="model_type") as err:
        A.model_config(str(tmp_path), ModelConfig())
    assert not isinstance(err.value, A.RemoteCodeError)


def test_policy_loads_ask_for_the_flag(remote_code_repo, tmp_path):
    """The policy loaders (label, train, evaluate all go through load_policy) give the same error as extraction,
    before any rollout is sampled or chunk written."""
    import polars as pl

    from saerl.config import ScoreConfig
    from saerl.labels import PARTS_DIR, measure_labels
    from saerl.policy_lm import load_policy

    prompts = pl.DataFrame({"id": ["a"], "prompt": ["what is 1 + 1 ?"], "answer": ["2"]})
    for call in (lambda: load_policy(remote_code_repo),
                 lambda: load_policy(remote_code_repo, ModelConfig()),
                 lambda: measure_labels(remote_code_repo, prompts, ScoreConfig(), 1.0, 4, tmp_path, ChunkLog(tmp_path),
                                        ModelConfig(), progress=False)):
        with pytest.raises(A.RemoteCodeError) as err:
            call()
        assert "set model.trust_remote_code=true" in str(err.value) and str(remote_code_repo) in str(err.value)
    assert not list((ChunkLog(tmp_path).folder / PARTS_DIR).iterdir()), "no chunk was measured"


@pytest.mark.parametrize("allowed", [False, True])
def test_policy_loads_pass_trust_remote_code_and_revision_as_configured(monkeypatch, allowed):
    from saerl.policy_lm import load_policy

    calls: list[dict] = []
    for cls in (A.AutoTokenizer, A.AutoModelForCausalLM):
        monkeypatch.setattr(cls, "from_pretrained", _recorder(calls))
    with pytest.raises(_Recorded):
        load_policy("some/hub-policy", ModelConfig(trust_remote_code=allowed, revision="abc123"))
    with pytest.raises(_Recorded):
        load_policy("some/hub-policy")  # no config: the safe defaults
    assert calls[0] | {"revision": "abc123", "trust_remote_code": allowed} == calls[0]
    assert calls[1] | {"revision": None, "trust_remote_code": False} == calls[1]


@pytest.mark.parametrize("allowed", [False, True])
def test_weight_loads_ask_for_hub_kernels_only_as_configured(monkeypatch, allowed):
    """transformers (>= 5.24, with the kernels package it depends on) swaps layers for code fetched from the hub
    unless told not to: a GPU run then failed offline at model.train(). Every load of weights (extraction, the
    policy) passes use_kernels exactly as model.hub_kernels says; config and tokenizer loads never get it."""
    from transformers import LlamaConfig

    from saerl.policy_lm import load_policy

    calls: list[dict] = []
    monkeypatch.setattr(A.AutoConfig, "from_pretrained", lambda *_a, **_k: LlamaConfig())
    for cls in (A.AutoTokenizer, A.AutoModelForCausalLM, A.AutoModel):
        monkeypatch.setattr(cls, "from_pretrained", _recorder(calls))
    model_cfg = ModelConfig(hub_kernels=allowed)
    with pytest.raises(_Recorded):
        A.load_model("some/hub-model", model_cfg, device="cpu")
    with pytest.raises(_Recorded):
        load_policy("some/hub-policy", model_cfg)
    with pytest.raises(_Recorded):
        load_policy("some/hub-policy")  # no config: no hub kernels
    assert [c["use_kernels"] for c in calls] == [allowed, allowed, False]
    assert all(c["use_safetensors"] is True for c in calls)



# ------------------------------------------------------------------------------------- cross-field checks


@pytest.mark.parametrize(("overrides", "names"), [
    (["sae.encode_pool=mean"], ["score.cluster_pool is 'max'", "sae.encode_pool=[mean, max]", "score.cluster_pool=mean"]),
    (["sae.encode_pool=mean", "score.cluster_pool=mean"], ["score.model_pool is 'max'", "score.model_pool=mean"]),
    (["sae.encode_pool=max", "score.difficulty_pool=mean"], ["score.difficulty_pool is 'mean'", "sae.encode_pool=[max, mean]"]),
    (["train.seeds=[]"], ["train.seeds", "train.seeds=[0]"]),
    (["train.seeds=[0, 1, 0]"], ["train.seeds lists 0 more than once", "train.seeds=[0, 1]"]),
    (["train.arms=[saerl, vanilla, saerl]"], ["train.arms lists saerl more than once", "train.arms=[saerl, vanilla]"]),
    (["data.source=file"], ["data.source is 'file' but data.path is not set", "data.path="]),
    (["testbed.pretrain_slip=[0.1, 0.2]"], ["testbed.pretrain_slip", "one entry per difficulty level 1-5", "got 2"]),
    (["testbed.pool_level_mix=[0.5, 0.2, 0.1, 0.1, 0.05, 0.05]"], ["testbed.pool_level_mix", "got 6"]),
    (["testbed.defect_kinds={garbled: 0, wrong_gold: 0}"], ["testbed.defect_kinds", "sum to 0", "defect_share=0"]),
    (["testbed.defect_kinds={garbled: -1, wrong_gold: 2}"], ["testbed.defect_kinds", "negative share for garbled"]),
    (["testbed.defect_kinds={garbeld: 1}"], ["testbed.defect_kinds", "unknown kind 'garbeld'", "near_duplicate"]),
    (["testbed.topics=[]"], ["testbed.topics", "testbed.topics=[arith"]),
    (["eval.target_accuracy=75"], ["eval.target_accuracy", "less than or equal to 1"]),
    (["train.micro_batches=5"], ["train.micro_batches=5 does not divide a step's 128 completions",
                                 "curriculum.batch_size 16 x train.num_generations 8", "one of [4, 8, 16]"]),
    (["train.overlong_buffer=64"], ["train.overlong_buffer=64 is not below train.max_completion_length=64",
                                    "train.overlong_buffer=12"]),
    (["train.steps_per_generation=3"], ["train.max_steps=100 is not a multiple of train.steps_per_generation=3",
                                        "train.max_steps=102"]),
])
def test_inconsistent_fields_fail_at_load_naming_the_field_and_the_fix(overrides, names):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    msg = str(err.value)
    assert all(n in msg for n in names), msg
    assert "field ''" not in msg, "a cross-field error names its fields, not the whole config"


def test_consistent_pools_and_a_file_with_its_path_load():
    cfg = load_config(None, ["sae.encode_pool=mean", "score.cluster_pool=mean", "score.model_pool=mean"])
    assert cfg.sae.encode_pool == ["mean"]
    assert load_config(None, ["data.source=file", "data.path=x.jsonl"]).data.path == "x.jsonl"
    assert load_config(None, ["train.micro_batches=4", "curriculum.batch_size=3"]).train.micro_batches == 4
    assert load_config(None, ["train.overlong_buffer=63"]).train.overlong_buffer == 63
    assert load_config(None, ["train.steps_per_generation=4"]).train.steps_per_generation == 4
    assert load_config(None, ["testbed.defect_kinds={garbled: 1, wrong_gold: 0}"]).testbed.defect_kinds["garbled"] == 1


@pytest.mark.parametrize("override", ["score.seed=-1", "curriculum.seed=-2", "testbed.seed=-1", "train.seeds=[0,-1]"])
def test_a_negative_seed_is_refused_naming_the_field(override):
    """numpy's generators refuse negative seeds deep inside a stage, naming no field: the config refuses them."""
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config(None, [override])


@pytest.mark.parametrize(("override", "names"), [
    ("score.n_clusters=-3", ["score.n_clusters", "greater than 0", "'auto'"]),
    ("score.n_clusters=0", ["score.n_clusters", "greater than 0"]),
    ("score.k_range=[-5, 0]", ["score.k_range.0", "score.k_range.1", "greater than 0"]),
    ("testbed.pool_level_mix=[0, 0, 0, 0, 0]", ["testbed.pool_level_mix", "sum to 0", "pool_level_mix=[0.25"]),
    ("testbed.pretrain_level_mix=[-1, 1, 0, 0, 0]", ["testbed.pretrain_level_mix.0", "greater than or equal to 0"]),
    ("testbed.pretrain_slip=[2, 0.4, 0.4, 0.4, 0.4]", ["testbed.pretrain_slip.0", "less than or equal to 1"]),
])
def test_values_a_stage_would_silently_bend_are_refused_naming_the_field(override, names):
    """n_clusters -3 or a k_range under 1 became one cluster without a word; an all-zero level mix failed in the
    testbed as 'the world has run out of distinct content: lower testbed.n_pool'; a slip share of 2 meant always."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert all(n in str(err.value) for n in names), str(err.value)


def test_a_section_given_twice_in_a_file_is_refused_naming_it(tmp_path):
    """yaml keeps the last of two `eval:` blocks without a word: the first block's settings were lost."""
    path = tmp_path / "c.yaml"
    path.write_text("eval:\n  k_samples: 2\ntrain:\n  max_steps: 3\neval:\n  max_problems: 20\n")
    with pytest.raises(ConfigError, match=r"key 'eval' appears twice.*lines 1 and 5"):
        load_config(path)
    path.write_text("eval:\n  k_samples: 2\n  max_problems: 20\n")
    assert load_config(path).eval.k_samples == 2


def test_one_entry_of_a_mapping_field_is_set_by_its_name(tmp_path):
    """'eval.sets.extra=PATH' was an unknown key; it sets that entry and keeps the others (and the defaults)."""
    cfg = load_config(None, ['eval.sets={a: /x/a.jsonl}', "eval.sets.b=/x/b.jsonl", "testbed.defect_kinds.garbled=0.5"])
    assert cfg.eval.sets == {"a": "/x/a.jsonl", "b": "/x/b.jsonl"}
    assert cfg.testbed.defect_kinds["garbled"] == 0.5 and cfg.testbed.defect_kinds["wrong_gold"] == 0.3
    with pytest.raises(ConfigError, match="unknown key 'eval.setz.b'"):
        load_config(None, ["eval.setz.b=/x"])


def test_clip_higher_defaults_agree_with_trl_and_dapo():
    """epsilon_high unset is epsilon under grpo (trl's GRPOTrainer: None -> epsilon) and DAPO's 0.28 under dapo, the
    value saerl.dapo trains with; an equal or higher epsilon_high is taken."""
    from saerl import config
    from saerl.dapo import DAPO_EPSILON_HIGH, dapo_overrides

    assert config.DAPO_EPSILON_HIGH == DAPO_EPSILON_HIGH
    dapo = load_config(None, ["train.algorithm=dapo"]).train
    assert dapo.epsilon_high is None and dapo_overrides(dapo)["epsilon_high"] >= dapo.epsilon
    assert load_config(None, ["train.epsilon=0.3", "train.epsilon_high=0.3"]).train.epsilon_high == 0.3
    assert load_config(None, ["train.algorithm=dapo", "train.epsilon=0.3", "train.epsilon_high=0.4"]).train.epsilon == 0.3


@pytest.mark.parametrize("raw", [{"curriculum.mix_ratio": 0.3}, {"curriculum": {"curriculum.mix_ratio": 0.3}}])
def test_a_dotted_key_in_a_file_or_dict_shows_its_nested_form(raw, tmp_path):
    """A dotted key at the top of a YAML file said "did you mean 'curriculum.mix_ratio'?", itself: dotted keys are
    the command line's; a file or a dict nests them."""
    from saerl.config import build_config

    with pytest.raises(ConfigError) as err:
        build_config(raw)
    msg = str(err.value)
    assert "dotted keys are for command-line overrides (curriculum.mix_ratio=0.3)" in msg, msg
    assert "nest it under its section: curriculum: {mix_ratio: 0.3}" in msg and "did you mean" not in msg, msg
    (tmp_path / "c.yaml").write_text("curriculum.mix_ratio: 0.3\n")
    with pytest.raises(ConfigError, match=r"curriculum: \{mix_ratio: 0\.3\}"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize(("overrides", "names"), [
    (["curriculum.mix_ratio=0.5", "configs/smoke.yaml"],
     ["override 'configs/smoke.yaml' has no '=' and looks like a config file", "the config file comes first",
      "saerl run CONFIG KEY=VALUE"]),
    (["train.seeds=[0,", "1]"], ["override '1]' looks like the rest of a list or mapping the shell split at a space",
                                 "quote the whole override 'train.seeds=[0, 1]'"]),
    (["train.seeds=[0,", "1,", "2]", "train.max_steps=4"], ["override '1,'", "'train.seeds=[0, 1, 2]'"]),
    (["eval.sets={a:", "x.jsonl}"], ["override 'x.jsonl}'", "'eval.sets={a: x.jsonl}'"]),
    (["curriculum.mix_ratio"], ["override 'curriculum.mix_ratio' is not of the form key.path=value"]),
])
def test_an_override_without_equals_says_what_it_looks_like(overrides, names):
    """A config file after an override ('saerl run curriculum.mix_ratio=0.5 configs/smoke.yaml') and the rest of a
    list the shell split at a space ('train.seeds=[0, 1]' unquoted gave '1]') were 'not of the form key.path=value'."""
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert all(n in str(err.value) for n in names), str(err.value)


def test_a_config_path_that_is_an_override_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"does not exist .*: it looks like an override \(KEY=VALUE\); the config "
                                          "file comes first"):
        load_config("curriculum.mix_ratio=0.5")


@pytest.mark.parametrize(("overrides", "given"), [({"curriculum.mix_ratio": 0.3}, "dict"),
                                                  ("curriculum.mix_ratio=0.3", "str"),
                                                  ([("curriculum.mix_ratio", 0.3)], "list holding other things")])
def test_load_config_says_overrides_are_a_list_of_strings(overrides, given):
    """A dict of overrides was read key by key ("override 'curriculum.mix_ratio' is not of the form ..."), a string
    letter by letter ("override 'c' ...")."""
    with pytest.raises(TypeError) as err:
        load_config(None, overrides)
    assert str(err.value) == (f"load_config's overrides must be a list of 'key=value' strings, not a {given}: e.g. "
                              "['curriculum.mix_ratio=0.3']")


def test_a_config_path_that_is_a_folder_or_a_data_file_says_so(tmp_path):
    """`saerl run configs` said "[Errno 21] Is a directory"; `saerl run data.jsonl` said only that it is no valid
    YAML. Now a folder is named as one with the YAML files in it, and a data file's suffix adds where a data set goes."""
    from saerl.config import DATA_SUFFIXES, ConfigError, load_config
    from saerl.data import SUFFIX_FORMATS

    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "smoke.yaml").write_text("name: s\n")
    with pytest.raises(ConfigError, match=r"configs is a folder: name a YAML file in it, e.g. .*smoke.yaml"):
        load_config(folder)
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "What is 1+1?", "answer": "2"}\n{"question": "What is 2+2?", "answer": "4"}\n')
    with pytest.raises(ConfigError, match=r"(?s)not valid YAML: .*train.jsonl looks like a data file: a config names it "
                                          r"as data.path"):
        load_config(data)
    assert set(DATA_SUFFIXES) == set(SUFFIX_FORMATS)


@pytest.mark.parametrize(("override", "fix"), [
    ("train.seeds=5", "write a list: train.seeds=[5]"),
    ("extract.pooling=max", "write a list: extract.pooling=[max]"),
    ("eval.sets=[a.jsonl]", "write a mapping of names to values: eval.sets.NAME=VALUE"),
    ("score.k_range=[1]", "score.k_range takes 2 values, got 1"),
])
def test_a_value_of_the_wrong_shape_is_shown_in_the_right_one(override, fix):
    """pydantic's "Input should be a valid list" (or dictionary; or "Field required" for the second of a pair) named
    no fix: the message now shows the value in the shape the field takes."""
    with pytest.raises(ConfigError, match=re.escape(fix)):
        load_config(None, [override])
    with pytest.raises(ConfigError) as err:  # no fix that is no value either ("write a list: train.seeds=[null]")
        load_config(None, ["train.seeds=null"])
    assert "[null]" not in str(err.value)


def test_a_config_file_that_is_not_utf8_names_the_file_and_the_iconv_line(tmp_path):
    """A config saved in cp1252 (`name: café`) or by Notepad as UTF-16 gave "'utf-8' codec can't decode byte 0xe9
    in position 9", naming no file; data files already had an iconv hint. Now a ConfigError names the file, the
    encoding it looks like (a UTF-16 byte-order mark's, else cp1252) and the iconv line; a UTF-8 file still loads."""
    legacy = tmp_path / "legacy.yaml"
    legacy.write_bytes("name: café\n".encode("cp1252"))
    with pytest.raises(ConfigError, match=rf"^config file {legacy} is not UTF-8 text \(byte 9: invalid continuation "
                                          rf"byte\); it looks cp1252-encoded. Fix: save it as UTF-8, e.g. iconv -f "
                                          rf"cp1252 -t utf-8 {legacy} > {tmp_path / 'legacy.utf8.yaml'}, and name"):
        load_config(legacy)
    notepad = tmp_path / "notepad.yaml"
    notepad.write_bytes("name: café\n".encode("utf-16"))  # with its byte-order mark, as Notepad's "Unicode"
    with pytest.raises(ConfigError, match=r"notepad.yaml is not UTF-8 text .*looks UTF-16-encoded.*iconv -f UTF-16 "):
        load_config(notepad)
    fine = tmp_path / "fine.yaml"
    fine.write_bytes("name: café\n".encode())
    assert load_config(fine).name == "café"


@pytest.mark.parametrize(("override", "field", "fix"), [
    ("name=", "name", "set name=NAME, or leave it out to take the config file's name"),
    ("name=' '", "name", "set name=NAME"),
    ("runtime.artifact_root=", "runtime.artifact_root", "set runtime.artifact_root=DIR, or leave it out for .saerl"),
])
def test_an_empty_name_or_artifact_root_is_refused_naming_the_field_and_the_fix(override, field, fix):
    """`name=` ran without MLflow (its warning named neither the field nor the fix: "Invalid experiment name: ''");
    `runtime.artifact_root=` made the current folder the root, silently (mlflow.db, prefect and every stage's folder
    written there). Both are refused as the config loads; the defaults and the keys are as before."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert f"field '{field}'" in str(err.value) and f"{field} is empty" in str(err.value) and fix in str(err.value)
    cfg = load_config(None)
    assert cfg.name == "saerl" and cfg.runtime.artifact_root == ".saerl"


@pytest.mark.parametrize(("text", "kind"), [("- curriculum\n- train\n", "list"), ("smoke\n", "str"), ("3\n", "int")])
def test_a_config_file_whose_top_level_is_not_a_mapping_names_the_file_and_what_it_is(tmp_path, text, kind):
    """A YAML list, a bare word or a number as a config file: refused naming the file, what the top level must be
    and what it is (a plain `'list' object has no attribute 'items'` before)."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: the top level must be a mapping of sections, got {kind}"
