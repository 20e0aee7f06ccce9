"""saerl.activation_store on stores written without a model: preparing a store (its resume check, its disk check),
reading one (heads, tokenless stores) and the seeded token draw the SAE trains on. Stores written by an extraction
of a tiny model: tests/test_activations.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from saerl.activation_store import (
    HEADS,
    STORE_NAME,
    ChunkWriter,
    chunk_ranges,
    draw_tokens,
    model_reference,
    open_activations,
    prepare_store,
    prompt_seeds,
    token_keys,
)
from saerl.config import ExtractConfig


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


def test_a_store_without_heads_reads_as_heads_of_zero(tmp_path):
    """Stores written before the heads array existed: every row is content (sampling draws what it drew then)."""
    token_ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    cfg = ExtractConfig(chunk_rows=2, pooling=["mean"])
    store = tmp_path / STORE_NAME
    meta = prepare_store(store, ["a", "b", "c"], token_ids, "synthetic", 0, 4, n_layers=1, cfg=cfg, heads=[1, 1, 2])
    writer = ChunkWriter(zarr.open_group(store, mode="r+"), meta)
    rows = np.arange(9 * 4, dtype=np.float16).reshape(9, 4)
    writer.write(0, rows[:5], {"mean": np.zeros((2, 4), dtype=np.float32)})
    writer.write(1, rows[5:], {"mean": np.zeros((1, 4), dtype=np.float32)})
    act = open_activations(store)
    assert act.heads.tolist() == [1, 1, 2] and act.n_content_tokens == 5
    drawn = act.sample_tokens(10, seed=0)
    assert sorted(drawn[:, 0].tolist()) == [4.0, 8.0, 16.0, 28.0, 32.0]  # rows 1, 2, 4, 7, 8
    del zarr.open_group(store, mode="r+")[HEADS]
    old = open_activations(store)
    assert old.heads.tolist() == [0, 0, 0] and old.n_content_tokens == 9
    assert np.array_equal(old.sample_tokens(9, seed=0), rows[draw_tokens(old.ids, old.offsets, old.heads, 9, 0)])
    assert sorted(old.sample_tokens(9, seed=0)[:, 0].tolist()) == sorted(rows[:, 0].tolist())


def _prompts_in_store_order(lengths: list[int], heads: list[int], order: list[int]) -> tuple[list[str], np.ndarray,
                                                                                           np.ndarray]:
    """ids, offsets and heads of prompts p0, p1, ... (of `lengths` and `heads`) laid out in a store in `order`."""
    sizes = [lengths[i] for i in order]
    return [f"p{i}" for i in order], np.concatenate([[0], np.cumsum(sizes)]), np.array([heads[i] for i in order])


def _drawn(ids: list[str], offsets: np.ndarray, heads: np.ndarray, n: int, seed: int, **kw: int) -> list[tuple]:
    """The (id, position in its prompt) of each token draw_tokens draws, in draw order."""
    rows = draw_tokens(ids, offsets, heads, n, seed, **kw)
    prompt = np.searchsorted(offsets, rows, side="right") - 1
    return [(ids[p], int(r - offsets[p])) for p, r in zip(prompt, rows, strict=True)]


def test_the_token_draw_is_order_free_prefix_consistent_and_never_a_head():
    """The SAE's token sample was drawn by position in the store, so a data file of the same rows in another order
    trained another SAE (session 45: cluster ARI .973, 1 of 300 saerl order positions kept). Each content token's key
    now comes from the seed, its prompt's id and its position in the prompt: the same prompts stored in another order
    draw the same (id, position) tokens in the same order, for samples of a few or of most tokens."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 40, 300).tolist()
    heads = [int(rng.integers(0, n)) for n in lengths]
    content = sum(lengths) - sum(heads)
    first = _prompts_in_store_order(lengths, heads, list(range(300)))
    other = _prompts_in_store_order(lengths, heads, rng.permutation(300).tolist())
    for n in (1, 500, content // 2 + 1, content):  # the buffered draw and the one that keys every token at once
        drawn = _drawn(*first, n, seed=4)
        assert drawn == _drawn(*other, n, seed=4) == _drawn(*other, n, seed=4, block=97)
        assert len(set(drawn)) == n and all(heads[int(i[1:])] <= pos < lengths[int(i[1:])] for i, pos in drawn)
    every = _drawn(*first, content, seed=4)
    assert _drawn(*other, 120, seed=4, block=50) == every[:120]  # prefix-consistent, whatever the block
    assert _drawn(*first, content // 2 + 7, seed=4) == every[:content // 2 + 7]
    assert _drawn(*first, 500, seed=5) != every[:500]
    assert len(draw_tokens(*first, 0, seed=1)) == 0


def test_the_token_draw_takes_the_tokens_of_the_smallest_keys_of_their_id_and_position():
    """draw_tokens keys tokens block by block, rebased per prompt; its definition is plainer: each content token's key
    is token_keys of its prompt's seed (prompt_seeds of the id) and its position in the prompt, and the n smallest
    keys win, in key order. A mistake in the blocked keying (a base off by one position, a prompt's tokens keyed with
    its neighbour's seed) draws other tokens than the definition's."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 30, 120).tolist()
    heads = [int(rng.integers(0, n)) for n in lengths]
    ids, offsets, heads_arr = _prompts_in_store_order(lengths, heads, rng.permutation(120).tolist())
    seeds = prompt_seeds(ids, 11)
    prompt = np.concatenate([np.full(int(offsets[p + 1] - offsets[p] - heads_arr[p]), p) for p in range(len(ids))])
    position = np.concatenate([np.arange(heads_arr[p], offsets[p + 1] - offsets[p]) for p in range(len(ids))])
    keys = token_keys(seeds[prompt], position)
    by_key = np.argsort(keys, kind="stable")
    for n, block in ((1, 7), (40, 13), (len(keys), 1 << 10)):
        want = [(ids[prompt[i]], int(position[i])) for i in by_key[:n]]
        assert _drawn(ids, offsets, heads_arr, n, seed=11, block=block) == want


def test_the_token_draw_is_uniform_and_bounded_in_memory():
    """Each content token is drawn equally often, and first in the order equally often; a sample of a few tokens of
    a large store keeps buffers of the sample's size, not one of every token (a permutation of 4M indices is 32 MB)."""
    import tracemalloc

    lengths, heads = [6, 9, 5], [1, 3, 0]  # 16 content tokens
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    hits, first = np.zeros(offsets[-1]), np.zeros(offsets[-1])
    for seed in range(2000):
        got = draw_tokens(["a", "b", "c"], offsets, heads, 4, seed, block=5)
        hits[got] += 1
        first[got[0]] += 1
    content = np.concatenate([np.arange(o + h, o + n) for o, h, n in zip(offsets, heads, lengths, strict=False)])
    assert hits[np.setdiff1d(np.arange(offsets[-1]), content)].sum() == 0  # never a head row
    assert hits[content].min() > 430 and hits[content].max() < 570  # each drawn 500 times in expectation
    assert first[content].min() > 85 and first[content].max() < 170  # and first 125 times: the order is random too
    ids = [f"p{i}" for i in range(4_000)]  # 4M tokens: 4,000 prompts of 1,000
    tracemalloc.start()
    draw_tokens(ids, np.arange(4_001) * 1_000, np.ones(4_000, dtype=int), 1_000, seed=0, block=1 << 14)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4_000_000 * 8 / 10


def test_stores_of_the_same_prompts_in_another_order_sample_the_same_token_rows(tmp_path):
    """sample_tokens, what the SAE trains and is judged on, reads the same rows in the same order from two stores of
    the same prompts (the same residuals per prompt) written in different orders."""
    rng = np.random.default_rng(1)
    token_ids = [rng.integers(0, 50, int(rng.integers(3, 12))).tolist() for _ in range(30)]
    heads = [int(rng.integers(0, len(t))) for t in token_ids]
    rows = [rng.standard_normal((len(t), 4)).astype(np.float16) for t in token_ids]

    def store(name: str, order: list[int]) -> Path:
        cfg = ExtractConfig(chunk_rows=7, pooling=["mean"])
        path = tmp_path / name / STORE_NAME
        meta = prepare_store(path, [f"p{i}" for i in order], [token_ids[i] for i in order], "synthetic", 0, 4, 1, cfg,
                             heads=[heads[i] for i in order])
        writer = ChunkWriter(zarr.open_group(path, mode="r+"), meta)
        for c, (lo, hi) in enumerate(chunk_ranges(len(order), cfg.chunk_rows)):
            writer.write(c, np.concatenate([rows[i] for i in order[lo:hi]]),
                         {"mean": np.zeros((hi - lo, 4), dtype=np.float32)})
        return path

    a = open_activations(store("a", list(range(30))))
    b = open_activations(store("b", rng.permutation(30).tolist()))
    for n in (25, a.n_content_tokens):
        assert np.array_equal(a.sample_tokens(n, seed=2), b.sample_tokens(n, seed=2))
    assert np.array_equal(a.sample_tokens(25, seed=2), a.sample_tokens(10**6, seed=2)[:25])


def test_an_extraction_that_cannot_fit_on_its_disk_is_refused_before_writing(tmp_path, monkeypatch):
    """Nothing checked free disk: 500k prompts of a 1536-wide model keep 140-230 GB of token residuals, found when the
    disk filled. The store's size is estimated from its token count and refused up front when it cannot fit."""
    import shutil as sh

    import saerl.activation_store as store_mod

    token_ids = [[1, 2, 3, 4]] * 3
    cfg = ExtractConfig(chunk_rows=2, pooling=["mean", "max"])
    raw = 12 * 64 * 2 + 3 * 2 * 64 * 4 + 12 * 4  # tokens x d_model float16 + prompts x poolings x d_model float32
    # + token ids int32
    free = raw - 1  # a check at 75% of the raw size passed a store that took 78% of it (94% at a real width)
    monkeypatch.setattr(store_mod.shutil, "disk_usage", lambda p: sh._ntuple_diskusage(10**12, 10**12 - free, free))
    with pytest.raises(OSError, match=r"extraction would write up to .* GB of residuals .*extract.store_tokens=false"):
        prepare_store(tmp_path / "a.zarr", ["a", "b", "c"], token_ids, "m", 0, 64, n_layers=1, cfg=cfg)
    assert not (tmp_path / "a.zarr").exists(), "refused before anything was written"
    (tmp_path / "a.zarr").mkdir()
    (tmp_path / "a.zarr" / "old").write_bytes(b"x" * 2)  # a store replaced there gives its space back
    assert prepare_store(tmp_path / "a.zarr", ["a", "b", "c"], token_ids, "m", 0, 64, n_layers=1, cfg=cfg).n_tokens == 12
    pooled_only = cfg.model_copy(update={"store_tokens": False})
    assert prepare_store(tmp_path / "b.zarr", ["a", "b", "c"], token_ids, "m", 0, 64, 1, pooled_only).n_tokens == 12


def test_a_model_inside_the_artifact_root_is_named_relative_to_it(tmp_path):
    """The testbed policy lives in the root (<root>/testbed/<key>/lm): a store named it by its absolute path, so two
    roots at other paths wrote other bytes. A folder inside the root is named by its POSIX path relative to the
    root; a hub id, a pkg: model, a folder outside the root, a name relative to the working folder, or any name
    when no root is given, stays as given."""
    root = tmp_path / "root"
    policy = str(root / "testbed" / "c1f83a" / "lm")
    assert model_reference(policy, root) == "testbed/c1f83a/lm"
    assert model_reference(policy, str(root) + "/") == "testbed/c1f83a/lm"  # the root as a string, its slash too
    outside = str(tmp_path / "rootless" / "lm")  # a sibling whose name begins with the root's: not inside it
    for name in (outside, "Qwen/Qwen2.5-0.5B", "pkg:tiny_model", "models/lm", "testbed/c1f83a/lm"):
        assert model_reference(name, root) == name
    assert model_reference(policy, None) == policy


def _store_in(root: Path, name: str = "lm") -> tuple[Path, object]:
    """A store laid out in `root`'s extract folder as the extract stage does, its model the testbed policy folder
    inside `root`. in: the root, the policy folder's last name; out: (the store's path, its metadata)."""
    store = root / "extract" / ".partial-k" / STORE_NAME
    meta = prepare_store(store, ["a", "b", "c"], [[1, 2, 3], [4, 5], [6, 7, 8, 9]], str(root / "testbed" / "t" / name),
                         0, 8, n_layers=2, cfg=ExtractConfig(chunk_rows=2), root=root)
    return store, meta


def test_two_roots_at_other_paths_lay_out_the_same_store_bytes(tmp_path):
    """The same extraction prepared in two roots at other paths writes the same attrs, byte for byte: meta.model is
    the policy's root-relative name, and the content hash (the fingerprint chunk records and the encode store chain
    from) is taken over it."""
    a, meta_a = _store_in(tmp_path / "a")
    b, meta_b = _store_in(tmp_path / "deeper" / "b")
    assert meta_a == meta_b and meta_a.model == "testbed/t/lm"
    assert (a / "zarr.json").read_bytes() == (b / "zarr.json").read_bytes()
    assert "content_model" not in zarr.open_group(a, mode="r").attrs


def test_a_store_an_older_saerl_named_by_its_absolute_path_resumes_under_the_root_relative_name(tmp_path):
    """A store an older saerl prepared (meta.model the policy's absolute path, the content hashed with it), resumed
    on its root or on the root moved, keeps its fingerprint (its chunk records count); its meta.model becomes the
    root-relative name, and the name its content was hashed with is kept in content_model. Another setting still
    replaces it."""
    import shutil

    old_root, new_root = tmp_path / "old", tmp_path / "moved"
    store = old_root / "extract" / ".partial-k" / STORE_NAME
    token_ids, cfg = [[1, 2, 3], [4, 5], [6, 7, 8, 9]], ExtractConfig(chunk_rows=2)
    policy = str(old_root / "testbed" / "t" / "lm")
    before = prepare_store(store, ["a", "b", "c"], token_ids, policy, 0, 8, n_layers=2, cfg=cfg)  # as before: no root
    assert before.model == policy
    kept = prepare_store(store, ["a", "b", "c"], token_ids, policy, 0, 8, n_layers=2, cfg=cfg, root=old_root)
    assert kept.fingerprint == before.fingerprint and kept.model == "testbed/t/lm"
    assert zarr.open_group(store, mode="r").attrs["content_model"] == policy
    shutil.move(old_root, new_root)
    moved = new_root / "extract" / ".partial-k" / STORE_NAME
    again = prepare_store(moved, ["a", "b", "c"], token_ids, str(new_root / "testbed" / "t" / "lm"), 0, 8, n_layers=2,
                          cfg=cfg, root=new_root)
    assert again.fingerprint == before.fingerprint and again.model == "testbed/t/lm"
    wider = prepare_store(moved, ["a", "b", "c"], token_ids, str(new_root / "testbed" / "t" / "lm"), 0, 16,
                          n_layers=2, cfg=cfg, root=new_root)
    assert wider.fingerprint != before.fingerprint and "content_model" not in zarr.open_group(moved, mode="r").attrs


def test_a_store_named_relative_to_its_root_is_replaced_for_another_policy(tmp_path):
    """Two testbed policies of the same shape in one root (another testbed key) are other models: a store prepared
    for one is replaced, not kept, for the other."""
    store, first = _store_in(tmp_path, "lm")
    _, other = _store_in(tmp_path, "lm2")
    assert other.fingerprint != first.fingerprint and other.model == "testbed/t/lm2"


def test_the_resume_check_leaves_out_only_the_models_name(tmp_path):
    """A store prepared under another model name is kept only when all else matches: another width (another model)
    or another setting still replaces it."""
    token_ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    cfg = ExtractConfig(chunk_rows=2)
    store = tmp_path / STORE_NAME
    first = prepare_store(store, ["a", "b", "c"], token_ids, "/old/root/lm", 0, 8, n_layers=2, cfg=cfg)
    kept = prepare_store(store, ["a", "b", "c"], token_ids, "/new/root/lm", 0, 8, n_layers=2, cfg=cfg)
    assert kept.fingerprint == first.fingerprint and kept.model == "/new/root/lm"
    assert zarr.open_group(store, mode="r").attrs["content_model"] == "/old/root/lm"
    wider = prepare_store(store, ["a", "b", "c"], token_ids, "/new/root/lm", 0, 16, n_layers=2, cfg=cfg)
    assert wider.fingerprint != first.fingerprint
    rows_1 = cfg.model_copy(update={"chunk_rows": 1})
    other = prepare_store(store, ["a", "b", "c"], token_ids, "/x/lm", 0, 16, 2, rows_1)
    assert other.fingerprint != wider.fingerprint and "content_model" not in zarr.open_group(store, mode="r").attrs
    hub = prepare_store(tmp_path / "hub", ["a", "b", "c"], token_ids, "Qwen/Qwen2.5-0.5B", 0, 8, 2, cfg)
    instruct = prepare_store(tmp_path / "hub", ["a", "b", "c"], token_ids, "Qwen/Qwen2.5-0.5B-Instruct", 0, 8, 2, cfg)
    assert instruct.fingerprint != hub.fingerprint  # hub ids name models, not folders: another one replaces it
