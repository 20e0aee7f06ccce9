"""saerl.sae: an SAE trained through sae-lens on a tiny Qwen2's activations, its report, codes, CSR view."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from test_activation_store import tokenless_store
from test_activations import make_prompts, one_thread, save_tiny_lm  # noqa: F401 (fixture)

from saerl.activation_store import open_activations
from saerl.activations import extract
from saerl.artifacts import ChunkLog, ChunkProgress, chunk_progress
from saerl.config import ExtractConfig, ModelConfig, SAEConfig
from saerl.sae import SAEShapeError, check_hook, encode_codes, hook_block, load_codes_csr, obtain_sae

CFG = SAEConfig(expansion=4, k=8, train_tokens=2000, batch_size=128, train_epochs=3, lr=1e-3,
                encode_top_k=12, encode_batch_tokens=100)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An extracted tiny-Qwen2 activation store (d_model 32, chunks of 16 prompts)."""
    root = tmp_path_factory.mktemp("act")
    model = save_tiny_lm(root / "model")
    prompts, ids = make_prompts(120, seed=2)
    extract(prompts, ids, root / "extract", ModelConfig(), ExtractConfig(chunk_rows=16, token_budget=256),
            ChunkLog(root / "extract"), model_path=model, device="cpu", progress=False)
    return root / "extract"


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("sae")
    return out, obtain_sae(CFG, store, out)

# torch.load's environment switches (torch.serialization reads them at every call), which a user may have set:
# the first forces weights_only=True, the second makes a load that passes no weights_only a full unpickle
TORCH_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
TORCH_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def test_encode_shards_of_one_worker_load_the_sae_once_and_match_one_run(store, trained, tmp_path, monkeypatch):
    """runtime.shards_per_worker > 1 gave each encode shard its own SAE load; a worker's shards now share the one it
    loaded (reuse_sae), until its weights file changes; the codes equal a single run's."""
    import os

    from sae_lens import SAE

    import saerl.sae as S

    sae_dir, _ = trained
    loads, load = [], SAE.load_from_disk
    monkeypatch.setattr(SAE, "load_from_disk", lambda *a, **k: loads.append(a[0]) or load(*a, **k))
    S._load_sae_folder.cache_clear()
    one = encode_codes(store, sae_dir, CFG, tmp_path / "one", ChunkLog(tmp_path / "one"), progress=False)
    assert len(loads) == 1
    log = ChunkLog(tmp_path / "shards")
    encode_codes(store, sae_dir, CFG, tmp_path / "shards", log, chunk_ids=[], progress=False)  # prepare: a load
    assert chunk_progress(tmp_path / "shards") == ChunkProgress(0, 8, None), "planned before any shard runs"
    loads.clear()
    for shard in ([0, 2, 4, 6], [1, 3], [5, 7]):
        encode_codes(store, sae_dir, CFG, tmp_path / "shards", log, chunk_ids=shard, progress=False, reuse_sae=True)
    assert len(loads) == 1  # one load for the three shards
    assert S.load_sae_folder(sae_dir, "cpu") is S.load_sae_folder(sae_dir, "cpu")
    weights = sae_dir / S.SAE_WEIGHTS
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a rebuilt SAE in the same folder: reloaded
    S.load_sae_folder(sae_dir, "cpu")
    assert len(loads) == 2
    a, b = load_codes_csr(tmp_path / "one"), load_codes_csr(tmp_path / "shards")
    assert a[0] == b[0] and (a[1] != b[1]).nnz == 0 and one["chunks_run"] == 8
    S._load_sae_folder.cache_clear()


def test_train_report_and_files(trained):
    out, report = trained
    assert (out / "cfg.json").exists() and (out / "sae_weights.safetensors").exists()
    assert report["architecture"] == "topk" and report["d_in"] == 32 and report["d_sae"] == 128
    assert 0 < report["variance_explained"] <= 1
    assert 0 < report["l0"] <= CFG.k and 0 <= report["dead_features"] <= 128
    # the file holds no time (two builds of one key wrote other bytes); the report, which the manifest keeps, does
    assert report["seconds"] > 0 and json.loads((out / "sae_report.json").read_text()) == {
        k: v for k, v in report.items() if k != "seconds"}
    keys = list(json.loads((out / "cfg.json").read_text()))  # sae-lens wrote them in a set's order (PYTHONHASHSEED)
    assert keys == sorted(keys) and len(keys) > 5


def test_encode_topk_csr_and_resume(store, trained, tmp_path, monkeypatch):
    import saerl.sae as S
    from saerl.activation_store import open_activations

    sae_dir, _ = trained
    encoded, pool_codes = [], S.pool_codes

    def counting(codes, lengths, how):
        encoded.append(len(codes) if how == CFG.encode_pool[0] else 0)
        return pool_codes(codes, lengths, how)

    monkeypatch.setattr(S, "pool_codes", counting)
    summary = encode_codes(store, sae_dir, CFG, tmp_path, ChunkLog(tmp_path), progress=False)
    assert summary["n_prompts"] == 120 and summary["chunks_run"] == 8 and summary["top_k"] == 12
    act = open_activations(store)  # the tiny Qwen's template head (6 tokens) is neither encoded nor pooled
    assert (act.heads == 6).all() and summary["n_tokens"] == sum(encoded) == act.n_content_tokens < act.n_tokens
    ids, csr = load_codes_csr(tmp_path)
    assert ids[:3] == ["p0", "p1", "p2"] and csr.shape == (120, 128)
    assert csr.getnnz(axis=1).max() <= 12 and csr.getnnz(axis=1).min() > 0 and (csr.data > 0).all()
    ref = csr.toarray()
    want = _reference_codes(store, sae_dir, "max")
    assert np.array_equal(ref > 0, want > 0) and np.allclose(ref, want, rtol=2e-3, atol=1e-3)
    # an interrupted encode (chunk records lost) resumes to the same bytes
    log = ChunkLog(tmp_path)
    for c in ("3", "7"):
        (log.folder / f"{c}.json").unlink()
    again = encode_codes(store, sae_dir, CFG, tmp_path, log, progress=False)
    assert again["chunks_run"] == 2
    assert np.array_equal(load_codes_csr(tmp_path)[1].toarray(), ref)
    mean = encode_codes(store, sae_dir, CFG.model_copy(update={"encode_pool": ["mean"]}), tmp_path / "m",
                        ChunkLog(tmp_path / "m"), progress=False)
    assert mean["chunks_run"] == 8
    # both poolings in one pass: each equals the store made with that pooling alone
    both = encode_codes(store, sae_dir, CFG.model_copy(update={"encode_pool": ["max", "mean"]}), tmp_path / "b",
                        ChunkLog(tmp_path / "b"), progress=False)
    assert both["chunks_run"] == 8
    assert np.array_equal(load_codes_csr(tmp_path / "b", "max")[1].toarray(), ref)
    assert np.array_equal(load_codes_csr(tmp_path / "b", "mean")[1].toarray(), load_codes_csr(tmp_path / "m")[1].toarray())
    assert not np.array_equal(ref, load_codes_csr(tmp_path / "m")[1].toarray())
    mean_ref = _reference_codes(store, sae_dir, "mean")
    got = load_codes_csr(tmp_path / "m")[1].toarray()
    assert np.array_equal(got > 0, mean_ref > 0) and np.allclose(got, mean_ref, rtol=2e-3, atol=1e-3)
    with pytest.raises(ValueError, match="sae.encode_pool"):
        load_codes_csr(tmp_path / "m", "max")


def _reference_codes(store, sae_dir, how: str) -> np.ndarray:
    """Each prompt's codes computed one prompt at a time from the SAE and the stored token residuals: the SAE's
    code of every content token (the rows after the prompt's head), pooled (`how`: max or mean over them), only
    the CFG.encode_top_k largest kept, as float16 [n_prompts, d_sae]."""
    import torch
    from sae_lens import SAE

    from saerl.activation_store import open_activations

    act, sae = open_activations(store), SAE.load_from_disk(sae_dir, device="cpu")
    out = np.zeros((act.n_prompts, sae.cfg.d_sae), dtype=np.float32)
    with torch.no_grad():
        for i in range(act.n_prompts):
            rows = act.prompt_tokens(i)[act.heads[i]:]
            codes = sae.encode(torch.from_numpy(rows.astype(np.float32))).float()
            pooled = (codes.max(0).values if how == "max" else codes.mean(0)).numpy()
            top = np.argsort(-pooled, kind="stable")[: CFG.encode_top_k]
            out[i, top] = np.clip(pooled[top], 0, None)
    return out.astype(np.float16).astype(np.float32)


def test_local_round_trip_and_width_error(store, trained, tmp_path):
    sae_dir, report = trained
    local = obtain_sae(CFG.model_copy(update={"source": "local", "path": str(sae_dir)}), store, tmp_path / "l")
    assert local["d_sae"] == report["d_sae"] and local["variance_explained"] == report["variance_explained"]
    from sae_lens import SAE, TopKSAE, TopKSAEConfig

    assert isinstance(SAE.load_from_disk(tmp_path / "l"), TopKSAE)
    TopKSAE(TopKSAEConfig(d_in=48, d_sae=96, k=4)).save_model(tmp_path / "wide")
    bad = CFG.model_copy(update={"source": "local", "path": str(tmp_path / "wide")})
    with pytest.raises(SAEShapeError, match=r"d_in=48.*d_model=32.*Fix"):
        obtain_sae(bad, store, tmp_path / "x")
    with pytest.raises(ValueError, match="sae.release"):
        obtain_sae(CFG.model_copy(update={"source": "pretrained"}), store, tmp_path / "y")


@pytest.mark.parametrize(("hook", "expected"), [
    ("blocks.3.hook_resid_post", 3), ("blocks.3.hook_resid_pre", 2), ("blocks.0.hook_resid_pre", -1),
    ("model.layers.14", 14), ("layer.0.output", 0), ("blocks.3.attn.hook_z", None), ("blocks.3.hook_mlp_out", None),
    ("blocks.3.ln2.hook_normalized", None)])
def test_hook_block_reads_the_residual_hooks_alone(hook, expected):
    assert hook_block(hook) == expected


def test_an_outside_sae_of_another_layer_or_hook_is_refused_or_noted(store, trained, tmp_path):
    """An SAE of the same width made for the next block, or for an attention output, passed the width check and
    encoded the wrong activations; now it is refused (sae.hook_check=refuse, the default) or used with a note
    (warn); the SAE trained here (hook layer.N.output) passes without one."""
    sae_dir, _ = trained
    layer = open_activations(store).meta.layer
    assert json.loads((sae_dir / "cfg.json").read_text())["metadata"]["hook_name"] == f"layer.{layer}.output"
    assert obtain_sae(CFG.model_copy(update={"source": "local", "path": str(sae_dir)}), store, tmp_path / "ok")["notes"] == []
    for i, hook in enumerate([f"blocks.{layer + 1}.hook_resid_post", f"blocks.{layer}.attn.hook_z"]):
        other = tmp_path / f"other{i}"
        shutil.copytree(sae_dir, other)
        cfg_json = json.loads((other / "cfg.json").read_text())
        cfg_json["metadata"]["hook_name"] = hook
        (other / "cfg.json").write_text(json.dumps(cfg_json))
        local = CFG.model_copy(update={"source": "local", "path": str(other)})
        with pytest.raises(SAEShapeError, match=rf"hook '{re.escape(hook)}'.*after block {layer} .*sae.hook_check=warn"):
            obtain_sae(local, store, tmp_path / f"refused{i}")
        report = obtain_sae(local.model_copy(update={"hook_check": "warn"}), store, tmp_path / f"warned{i}")
        assert len(report["notes"]) == 1 and hook in report["notes"][0]


def test_an_sae_trained_on_a_testbed_policy_of_a_moved_root_is_not_noted_as_another_model():
    """An SAE trained here names the testbed policy by its folder, <root>/testbed/<key>/lm; reused (sae.source=local)
    after the root was copied or moved, it was noted as trained on another model. The testbed policy is compared by
    its key; another key, or another hub model, is still noted."""
    from types import SimpleNamespace

    act = SimpleNamespace(meta=SimpleNamespace(layer=2, model="/new/root/testbed/c1f83a/lm"))
    assert check_hook("layer.2.output", "/old/root/testbed/c1f83a/lm", act, "x") == []
    other = check_hook("layer.2.output", "/old/root/testbed/0d9e11/lm", act, "x")
    assert len(other) == 1 and "was trained on model '/old/root/testbed/0d9e11/lm'" in other[0]
    # a store and an SAE of this saerl name the policy relative to the root: compared with the absolute paths an
    # older saerl wrote, either way round, by the same key
    relative = SimpleNamespace(meta=SimpleNamespace(layer=2, model="testbed/c1f83a/lm"))
    assert check_hook("layer.2.output", "/old/root/testbed/c1f83a/lm", relative, "x") == []
    assert check_hook("layer.2.output", "testbed/c1f83a/lm", act, "x") == []
    assert len(check_hook("layer.2.output", "testbed/0d9e11/lm", act, "x")) == 1
    hub = SimpleNamespace(meta=SimpleNamespace(layer=2, model="Qwen/Qwen2.5-0.5B"))
    assert len(check_hook("layer.2.output", "Qwen/Qwen2.5-1.5B", hub, "x")) == 1
    assert check_hook("layer.2.output", "Qwen/Qwen2.5-0.5B", hub, "x") == []


def test_trainer_progress_off_silences_sae_lens_bar_and_restores_it():
    import sae_lens.training.sae_trainer as trainer_module

    from saerl.sae import trainer_progress

    original = trainer_module.tqdm
    with trainer_progress(False):
        bar = trainer_module.tqdm(total=3)
        assert bar.disable
        bar.close()
    assert trainer_module.tqdm is original
    with trainer_progress(True):
        assert trainer_module.tqdm is original


def test_a_topk_k_not_below_the_sae_width_is_refused_naming_the_fields():
    """sae.k=1000 with a 128-latent SAE (sae.expansion=4 x hidden size 32) trained without a word: saerl capped k at
    the width, an autoencoder whose every latent fires on every token (session 52's Dask audit ran it). k equal to
    the width is as dense; one under it trains, and a standard SAE does not read k."""
    import torch

    from saerl.sae import dense_topk_problem, train_sae

    x = torch.randn(300, 8)
    small = {"expansion": 2, "batch_size": 64, "train_epochs": 1}
    for k in (16, 1000):
        with pytest.raises(ValueError, match=rf"sae.k={k} is not below the width of the SAE to train, 16 latents "
                                             r"\(sae.expansion=2 x the extracted model's hidden size 8\).*lower sae.k"):
            train_sae(CFG.model_copy(update={**small, "k": k}), x, {}, progress=False)
    assert train_sae(CFG.model_copy(update={**small, "k": 15}), x, {}, progress=False).cfg.k == 15
    assert dense_topk_problem(CFG.model_copy(update={**small, "k": 1000, "architecture": "standard"}), 8) is None


def test_train_sae_with_progress_off_draws_no_bar(capfd):
    """progress=False silences every bar fit draws, the norm estimate's too (it printed 'Estimating norm scaling
    factor' under runtime.progress=false)."""
    import torch

    from saerl.sae import train_sae

    x = torch.randn(300, 8).half()
    train_sae(CFG.model_copy(update={"expansion": 2, "k": 2, "batch_size": 64, "train_epochs": 1}), x, {},
              progress=False)
    err = capfd.readouterr().err
    assert "Estimating norm" not in err and "Training SAE" not in err


def test_train_sae_bar_reaches_its_total_and_keeps_its_label(capfd):
    """sae-lens moved its bar once per 100 steps: a 26-step run stayed at 0%, the demo's 461 steps ended at 87%,
    and the label "Training SAE" was replaced by "400| mse_loss: ..."."""
    import torch

    from saerl.sae import train_sae

    x = torch.randn(300, 8).half()
    train_sae(CFG.model_copy(update={"expansion": 2, "k": 2, "batch_size": 64, "train_epochs": 3}), x, {},
              progress=True)
    last = capfd.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("Training SAE: 100%") and "900/900" in last and "mse_loss" in last, last



def test_train_sae_standard_architecture_trains_an_l1_sae_with_the_configured_coefficient():
    """sae.architecture=standard was never trained by a test (keys and sweep plans covered the option only): it builds
    sae-lens's StandardTrainingSAE with sae.l1_coefficient (a sae-lens rename of the field would have passed CI), and
    the trained SAE encodes without TopK's cap on active features."""
    import torch
    from sae_lens import StandardTrainingSAE

    from saerl.sae import train_sae

    cfg = CFG.model_copy(update={"architecture": "standard", "expansion": 2, "k": 2, "batch_size": 64,
                                 "train_epochs": 1, "l1_coefficient": 2.5})  # not sae-lens's default
    sae = train_sae(cfg, torch.randn(512, 16), {"saerl": "meta"}, progress=False)
    assert isinstance(sae, StandardTrainingSAE) and sae.cfg.architecture() == "standard"
    assert sae.cfg.l1_coefficient == cfg.l1_coefficient == 2.5
    assert sae.cfg.d_sae == cfg.expansion * 16 and sae.cfg.metadata["saerl"] == "meta"
    codes = sae.encode(torch.randn(10, 16))
    assert codes.shape == (10, 32) and torch.isfinite(codes).all() and (codes >= 0).all()
    assert int((codes > 0).sum(1).max()) > cfg.k, "an L1 SAE: no TopK cap of sae.k active features"

# ------------------------------------------------------------------------------------------- load_codes_csr

CSR_ROWS, CSR_D_SAE, CSR_K, CSR_CHUNK = 50, 40, 6, 7  # chunk rows well under the row count, a ragged last chunk
EMPTY_EVERY = 11  # every 11th row of a test store keeps no feature


def _old_load_codes_csr(codes_path):
    """load_codes_csr as it was before it read chunk by chunk (every array at once): the reference."""
    import scipy.sparse as sp
    import zarr

    group = zarr.open_group(codes_path / "codes.zarr", mode="r")
    fids, vals = group["max/feature_ids"][:], group["max/values"][:].astype(np.float32)
    keep = (fids >= 0) & (vals > 0)
    indptr = np.concatenate([[0], np.cumsum(keep.sum(1))])
    csr = sp.csr_matrix((vals[keep], fids[keep], indptr), shape=(len(fids), int(group.attrs["d_sae"])))
    csr.sort_indices()
    return [str(x) for x in group["ids"][:]], csr


def _codes_store(folder, n: int, d_sae: int, k: int, chunk_rows: int, seed: int, filled: float):
    """A codes.zarr of n rows: top-k slots strongest first, about `filled` of them used; unused slots are -1
    or a zero value, a few values are positive in float32 but underflow to 0 in float16, and every EMPTY_EVERY-th
    row is empty."""
    from saerl.sae import CODES_NAME, create_codes_store, write_codes_chunk

    rng = np.random.default_rng(seed)
    group = create_codes_store(folder / CODES_NAME, n, d_sae, k, "max", chunk_rows, "fp")
    for lo in range(0, n, chunk_rows):
        m = min(chunk_rows, n - lo)
        fids = np.stack([rng.choice(d_sae, k, replace=False) for _ in range(m)]).astype(np.int32)
        vals = np.sort(rng.random((m, k)).astype(np.float32), axis=1)[:, ::-1].copy()
        unused = rng.random((m, k)) > filled
        fids[unused & (rng.random((m, k)) < 0.5)] = -1
        vals[unused] = 0
        vals[rng.random((m, k)) < 0.05] = 1e-9  # float16 rounds it to 0: not a kept feature
        fids[(lo + np.arange(m)) % EMPTY_EVERY == 0] = -1  # rows without any feature
        write_codes_chunk(group, lo, fids, vals, ids=[f"q{lo + i}" for i in range(m)])
    return folder


def test_load_codes_csr_chunk_by_chunk_equals_reading_everything_at_once(tmp_path):
    folder = _codes_store(tmp_path, CSR_ROWS, CSR_D_SAE, CSR_K, CSR_CHUNK, seed=0, filled=0.6)
    ids, csr = load_codes_csr(folder)
    ref_ids, ref = _old_load_codes_csr(folder)
    assert ids == ref_ids and csr.shape == ref.shape == (CSR_ROWS, CSR_D_SAE)
    for name in ("indptr", "indices", "data"):
        mine, theirs = getattr(csr, name), getattr(ref, name)
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), name
    assert csr.has_sorted_indices and csr.nnz == ref.nnz > 0
    assert (csr.getnnz(axis=1) == 0).any(), "the store has rows without a kept feature"
    assert load_codes_csr(folder / "codes.zarr")[1].nnz == csr.nnz  # the store itself works too


CHUNK_BYTES_PER_SLOT = 64  # allowance for one chunk's temporaries (decoded arrays, mask, sort order, ...)


def test_load_codes_csr_peak_memory_is_the_output_plus_one_chunk(tmp_path):
    import sys
    import tracemalloc

    n, k, chunk_rows = 20_000, 64, 500
    folder = _codes_store(tmp_path, n, 1024, k, chunk_rows, seed=1, filled=0.1)
    dense_bytes = n * k * (4 + 4)  # what reading everything at once holds: int32 ids + float32 values
    tracemalloc.start()
    try:
        ids, csr = load_codes_csr(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    output = (csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes + sys.getsizeof(ids)
              + sum(map(sys.getsizeof, ids)))
    row_counts = n * np.dtype(np.int64).itemsize
    assert peak < dense_bytes / 2, f"peak {peak} B is not far under the dense read's {dense_bytes} B"
    assert peak < output + row_counts + CHUNK_BYTES_PER_SLOT * chunk_rows * k, f"peak {peak} B for an output of {output} B"


def test_sae_stage_on_a_tokenless_store_names_the_fix(tmp_path):
    """extract.store_tokens=false keeps no token rows to train or evaluate on: a clear error, not a KeyError."""
    store = tokenless_store(tmp_path / "extract")
    with pytest.raises(ValueError, match=r"extract.store_tokens was false.*set extract.store_tokens=true"):
        obtain_sae(CFG, store, tmp_path / "sae")


def test_pooled_values_over_the_float16_range_are_stored_finite(tmp_path):
    """A pooled activation above float16's largest value (a massive-activation token) is clamped, not stored as
    inf: the score stage's TF-IDF weighting and models refuse non-finite input."""
    from saerl.sae import create_codes_store, write_codes_chunk

    group = create_codes_store(tmp_path / "codes.zarr", 2, 10, 2, "max", 2, "fp")
    write_codes_chunk(group, 0, np.array([[3, 1], [2, -1]]), np.array([[1e5, 2.0], [7e4, 0.0]], dtype=np.float32))
    _, csr = load_codes_csr(tmp_path)
    assert np.isfinite(csr.data).all() and csr[0, 3] == csr[1, 2] == np.finfo(np.float16).max and csr[0, 1] == 2.0


def test_encode_with_a_bfloat16_sae_pools_in_float32(store, tmp_path):
    """A local SAE saved in bfloat16 (sae-lens loads it in its own dtype) encodes like its float32 copy: the
    pooled codes are float32 (numpy has no bfloat16, which crashed the write)."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    ref = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4))
    half = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4, dtype="bfloat16"))
    half.load_state_dict({k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()})
    half.save_model(tmp_path / "bf16")
    cfg = CFG.model_copy(update={"source": "local", "path": str(tmp_path / "bf16"), "encode_pool": ["max", "mean"]})
    summary = encode_codes(store, tmp_path / "bf16", cfg, tmp_path / "codes", ChunkLog(tmp_path / "codes"),
                           progress=False)
    assert summary["n_prompts"] == 120 and summary["d_sae"] == 64
    for pool in ("max", "mean"):
        csr = load_codes_csr(tmp_path / "codes", pool)[1]
        assert csr.nnz > 0 and np.isfinite(csr.data).all() and (csr.data > 0).all()


def test_evaluate_sae_reports_what_its_fields_name():
    """variance_explained is 1 - SSE / total sum of squares about the held-out mean (tokens far from the origin
    show the difference), l0 the mean active features per token, dead the features that never fire; batch by
    batch (a ragged last batch) as in one pass."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    from saerl.sae import evaluate_sae

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=32, k=3))
    x = torch.randn(30, 8) + 4.0
    with torch.no_grad():
        feats = sae.encode(x)
        sse = float(((x - sae.decode(feats)) ** 2).sum())
    want_ve = 1 - sse / float(((x - x.mean(0)) ** 2).sum())
    got = evaluate_sae(sae, x, batch=7)
    assert got["variance_explained"] == pytest.approx(want_ve, abs=1e-4)
    assert got["l0"] == pytest.approx(float((feats > 0).sum()) / 30, abs=1e-3)
    dead = int((~(feats > 0).any(0)).sum())
    assert got["dead_features"] == dead > 0 and got["n_eval_tokens"] == 30


def _random_sae(folder, seed: int = 0):
    """A random (untrained) TopK SAE of width 64 on the store's d_model 32, saved in sae-lens format in `folder`."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4)).save_model(folder)
    return folder


def test_encode_replaced_then_restored_in_one_folder_recomputes_every_chunk(store, tmp_path):
    """codes.zarr replaced by an encode of other settings (killed after one chunk), then encoded with the first
    settings again: the store is rebuilt, so the first run's chunk records must not count (they skipped every chunk
    but the replaced one, leaving those prompts without codes); a folder left unreadable by a replacement killed
    mid-delete is replaced, not a crash."""
    import shutil

    import zarr

    from saerl.sae import CODES_NAME

    sae_dir, out = _random_sae(tmp_path / "sae"), tmp_path / "codes"
    cfg = CFG.model_copy(update={"encode_pool": ["max"]})
    first = encode_codes(store, sae_dir, cfg, out, ChunkLog(out), progress=False)
    ref = load_codes_csr(out)[1].toarray()
    first_fp = zarr.open_group(out / CODES_NAME, mode="r").attrs["fingerprint"]

    def killed(_chunk):
        raise RuntimeError("killed")

    other = cfg.model_copy(update={"encode_pool": ["max", "mean"]})
    with pytest.raises(RuntimeError, match="killed"):
        encode_codes(store, sae_dir, other, out, ChunkLog(out), progress=False, on_chunk_done=killed)
    again = encode_codes(store, sae_dir, cfg, out, ChunkLog(out), progress=False)
    assert again["chunks_run"] == first["chunks_run"] == 8
    assert np.array_equal(load_codes_csr(out)[1].toarray(), ref)
    assert zarr.open_group(out / CODES_NAME, mode="r").attrs["fingerprint"] != first_fp
    assert encode_codes(store, sae_dir, cfg, out, ChunkLog(out), progress=False)["chunks_run"] == 0  # resumes
    (out / CODES_NAME / "zarr.json").unlink()  # a replacement killed while deleting: the root went first
    shutil.rmtree(out / CODES_NAME / "max")
    redone = encode_codes(store, sae_dir, cfg, out, ChunkLog(out), progress=False)
    assert redone["chunks_run"] == 8 and np.array_equal(load_codes_csr(out)[1].toarray(), ref)


def test_an_encode_replacement_killed_mid_delete_with_the_root_left_is_not_kept(store, tmp_path, monkeypatch):
    """A replacement of codes.zarr killed while deleting the old store, after its chunks but before its root
    zarr.json: going back to the old settings kept the half-deleted store as complete and skipped every chunk
    (no codes for any prompt); it is recomputed instead."""
    import shutil
    from pathlib import Path

    import zarr.storage._local as local

    sae_dir, out = _random_sae(tmp_path / "sae"), tmp_path / "codes"
    cfg = CFG.model_copy(update={"encode_pool": ["max"]})
    encode_codes(store, sae_dir, cfg, out, ChunkLog(out), progress=False)
    ref = load_codes_csr(out)[1].toarray()
    rmtree = shutil.rmtree

    def killed(path, *args, **kwargs):
        rmtree(Path(path) / "max", *args, **kwargs)
        raise RuntimeError("killed")

    monkeypatch.setattr(local.shutil, "rmtree", killed)
    with pytest.raises(RuntimeError, match="killed"):
        encode_codes(store, sae_dir, cfg.model_copy(update={"encode_top_k": 5}), out, ChunkLog(out), progress=False)
    monkeypatch.undo()
    again = encode_codes(store, sae_dir, cfg, out, ChunkLog(out), progress=False)
    assert again["chunks_run"] == 8 and np.array_equal(load_codes_csr(out)[1].toarray(), ref)


class _RunsCode:
    """A pickle payload that runs code when unpickled in full (makes a folder): what weights_only refuses."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("passed", [{}, {"weights_only": False}])
def test_a_pretrained_release_read_from_a_pickle_loads_weights_only(tmp_path, monkeypatch, passed):
    """sae-lens reads some pretrained releases (qwen_scope, deepseek_r1, goodfire, ...) from .pt files with a bare
    torch.load: a full unpickle that can run code once TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set. Inside
    load_pretrained_sae every torch.load is weights-only (from_pretrained faked: no hub here): a plain state dict
    loads, a pickle that runs code is refused naming the release and the fix, and the environment comes back."""
    import os

    import torch
    from sae_lens import SAE

    from saerl.sae import load_pretrained_sae

    monkeypatch.setenv(TORCH_NO_WEIGHTS_ONLY, "1")  # a user's setting that made the bare torch.load unpickle all
    monkeypatch.delenv(TORCH_WEIGHTS_ONLY, raising=False)
    weights, evil, marker = tmp_path / "w.pt", tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"W_enc": torch.ones(2, 3)}, weights)
    torch.save({"W_enc": _RunsCode(marker)}, evil)
    files = {"good/0": weights, "evil/0": evil}

    def from_pretrained(release, sae_id, device="cpu"):
        return torch.load(files[f"{release}/{sae_id}"], map_location=device, **passed)  # as sae-lens' loaders do

    monkeypatch.setattr(SAE, "from_pretrained", from_pretrained)
    assert torch.equal(load_pretrained_sae("good", "0", "cpu")["W_enc"], torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"sae.release=evil sae.sae_id=0: .*sae.source=local sae.path"):
        load_pretrained_sae("evil", "0", "cpu")
    assert not marker.exists(), "the pickle's code ran"
    assert os.environ.get(TORCH_NO_WEIGHTS_ONLY) == "1" and TORCH_WEIGHTS_ONLY not in os.environ
    obtained = {}
    monkeypatch.setattr("saerl.sae.load_pretrained_sae", lambda r, i, d: obtained.setdefault("args", (r, i, d)))
    from saerl.sae import _source_sae

    _source_sae(CFG.model_copy(update={"source": "pretrained", "release": "good", "sae_id": "0"}), "cpu")
    assert obtained["args"] == ("good", "0", "cpu"), "the pretrained source goes through load_pretrained_sae"
    torch.load(evil, weights_only=False)  # outside the block: the environment is the user's again
    assert marker.exists()


def test_pretrained_loads_on_two_threads_stay_weights_only_and_leave_torch_and_the_environment_as_they_were(
        tmp_path, monkeypatch):
    """Two pretrained loads overlapping on two threads (two sweep children on one multi-threaded Dask worker): B
    starts while A is inside its load. Before, A's exit put the user's TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD back under
    B (a full unpickle ran the code) and B's exit left the environment forcing weights-only loads for good. Now B's
    bare torch.load of a pickle that runs code is refused, and afterwards torch.load is torch's own again and the
    environment is the user's."""
    import os
    import threading
    import time

    import torch
    from sae_lens import SAE
    from sae_lens.loading import pretrained_sae_loaders

    from saerl.sae import load_pretrained_sae

    monkeypatch.setenv(TORCH_NO_WEIGHTS_ONLY, "1")  # the user's own setting: a bare torch.load unpickles all
    monkeypatch.delenv(TORCH_WEIGHTS_ONLY, raising=False)
    before, torch_load = {k: os.environ.get(k) for k in (TORCH_WEIGHTS_ONLY, TORCH_NO_WEIGHTS_ONLY)}, torch.load
    weights, evil, marker = tmp_path / "w.pt", tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"W_enc": torch.ones(2, 3)}, weights)
    torch.save({"W_enc": _RunsCode(marker)}, evil)
    a_in, b_started, a_out = threading.Event(), threading.Event(), threading.Event()

    def from_pretrained(release, sae_id, device="cpu"):
        if release == "A":  # inside its load until B has started its own
            a_in.set()
            assert b_started.wait(30)
            time.sleep(0.2)
            return pretrained_sae_loaders.torch.load(weights, map_location=device)  # as sae-lens' loaders call it
        assert a_out.wait(30)  # B reads its file only once A's load has ended
        return pretrained_sae_loaders.torch.load(evil, map_location=device)

    monkeypatch.setattr(SAE, "from_pretrained", from_pretrained)
    outcome = {}

    def run(name):
        try:
            outcome[name] = load_pretrained_sae(name, "0", "cpu")
        except Exception as err:  # noqa: BLE001 (the test reads it below)
            outcome[name] = err

    a = threading.Thread(target=lambda: (run("A"), a_out.set()))
    a.start()
    assert a_in.wait(30)
    b = threading.Thread(target=lambda: (b_started.set(), run("B")))
    b.start()
    a.join(60)
    b.join(60)
    assert torch.equal(outcome["A"]["W_enc"], torch.ones(2, 3))
    assert isinstance(outcome["B"], ValueError) and "sae.release=B" in str(outcome["B"]) and not marker.exists()
    assert torch.load is torch_load and {k: os.environ.get(k) for k in before} == before

def test_weights_only_loads_nest(tmp_path):
    """A block inside a block (the lock is re-entrant) stays weights-only until the outer one closes, and torch's own
    load is back afterwards."""
    import torch

    from saerl.sae import weights_only_loads

    evil, ran = tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"x": _RunsCode(ran)}, evil)
    torch_load = torch.load
    with weights_only_loads():
        with weights_only_loads():
            pass
        with pytest.raises(Exception, match="Weights only load failed"):
            torch.load(evil, weights_only=False)
    assert torch.load is torch_load and not ran.exists()


def test_sae_lens_reads_torch_load_on_the_torch_module_at_call_time():
    """weights_only_loads swaps the torch module's ``load``: a sae-lens loader that bound torch's load under another
    name at import (``from torch import load``, ``import torch as t``, ``torch.serialization.load``) would escape
    it. Fails when a sae-lens upgrade reads it another way (then patch that name in weights_only_loads too)."""
    import ast
    from pathlib import Path

    import sae_lens

    escapes = []
    for path in sorted((Path(sae_lens.__file__).parent).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch") and any(
                    a.name == "load" for a in node.names):
                escapes.append(f"{path.name}:{node.lineno} from {node.module} import load")
            elif isinstance(node, ast.Import) and any(a.name == "torch" and a.asname for a in node.names):
                escapes.append(f"{path.name}:{node.lineno} import torch as another name")
            elif (isinstance(node, ast.Attribute) and node.attr == "load" and isinstance(node.value, ast.Attribute)
                  and node.value.attr == "serialization"):
                escapes.append(f"{path.name}:{node.lineno} torch.serialization.load")
    assert escapes == [], escapes


def test_an_outside_sae_that_scales_its_inputs_without_a_factor_gets_one_estimated_and_folded(
        store, trained, tmp_path, monkeypatch):
    """An SAE whose cfg.json says normalize_activations 'expected_average_only_in' (trained on inputs scaled to a
    mean norm of sqrt(d_in)) and carries no factor was loaded as is: sae-lens's load_from_disk folds nothing, so
    it encoded activations ~48x off its scale. The factor is now estimated on the extracted tokens and folded."""
    import torch
    from sae_lens import SAE

    import saerl.sae as sae_mod

    sae_dir, report = trained
    x = torch.from_numpy(open_activations(store).sample_tokens(2000, 1, dtype=np.float32))
    scale = 32 ** 0.5 / float(x.norm(dim=-1).mean())
    assert scale > 10, "the tiny LM's activations are far from norm sqrt(d_in): the test can tell"
    scaled = SAE.load_from_disk(sae_dir)
    with torch.no_grad():  # the same SAE, made to read activations scaled by `scale` (sae-lens's unfolded form)
        scaled.W_enc /= scale
        scaled.W_dec *= scale
        scaled.b_dec *= scale
    scaled.cfg.normalize_activations = "expected_average_only_in"
    scaled.save_model(tmp_path / "scaled")
    assert json.loads((tmp_path / "scaled" / "cfg.json").read_text())["normalize_activations"] == "expected_average_only_in"
    cfg = CFG.model_copy(update={"source": "local", "path": str(tmp_path / "scaled")})
    folded = obtain_sae(cfg, store, tmp_path / "folded")
    assert abs(folded["variance_explained"] - report["variance_explained"]) < 0.05
    (note,) = folded["notes"]
    factor = float(re.search(r"carried no factor: ([0-9.]+) ", note).group(1))
    assert "expected_average_only_in" in note and abs(factor / scale - 1) < 0.05
    assert json.loads((tmp_path / "folded" / "cfg.json").read_text())["normalize_activations"] == "none"
    monkeypatch.setattr(sae_mod, "fold_expected_average", lambda sae, x: None)
    unfolded = obtain_sae(cfg, store, tmp_path / "unfolded")
    assert unfolded["variance_explained"] < report["variance_explained"] - 0.3, "without the fold it encodes noise"


def test_a_local_sae_folder_that_cannot_load_is_refused_naming_sae_path(store, trained, tmp_path):
    """A folder of .pt weights only gave sae-lens's bare FileNotFoundError, an unknown architecture a bare
    KeyError ('os.system'); both name sae.path and a fix now, and no pickle is read."""
    sae_dir, _ = trained
    pt_only = tmp_path / "pt"
    shutil.copytree(sae_dir, pt_only)
    (pt_only / "sae_weights.safetensors").rename(pt_only / "sae_weights.pt")
    with pytest.raises(ValueError, match=r"sae.path=.*pt holds no sae_weights.safetensors.*save_model"):
        obtain_sae(CFG.model_copy(update={"source": "local", "path": str(pt_only)}), store, tmp_path / "a")
    odd = tmp_path / "odd"
    shutil.copytree(sae_dir, odd)
    cfg_json = json.loads((odd / "cfg.json").read_text())
    (odd / "cfg.json").write_text(json.dumps({**cfg_json, "architecture": "os.system"}))
    with pytest.raises(ValueError, match=r"architecture 'os.system', which the installed sae-lens does not load.*topk"):
        obtain_sae(CFG.model_copy(update={"source": "local", "path": str(odd)}), store, tmp_path / "b")


def test_a_local_sae_named_under_home_loads(tmp_path, monkeypatch):
    """sae.path=~/saes/mine passed the up-front check (local_sae_problem reads it expanded) and keyed by its content,
    then sae-lens was given '~/saes/mine' and failed after the whole extraction (No such file ... '~/saes/mine/cfg.json')."""
    from sae_lens import TopKSAE

    from saerl.sae import _source_sae

    _random_sae(tmp_path / "home" / "saes" / "mine")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sae, origin = _source_sae(CFG.model_copy(update={"source": "local", "path": "~/saes/mine"}), "cpu")
    assert isinstance(sae, TopKSAE) and sae.cfg.d_sae == 64 and origin == "~/saes/mine"


def _with_metadata(sae_dir, out, **metadata):
    """A copy of the sae-lens folder sae_dir at out, its cfg.json metadata updated with `metadata`."""
    shutil.copytree(sae_dir, out)
    cfg_json = json.loads((out / "cfg.json").read_text())
    cfg_json["metadata"].update(metadata)
    (out / "cfg.json").write_text(json.dumps(cfg_json))
    return out


def test_an_sae_trained_on_centred_residuals_encodes_centred_residuals(store, trained, tmp_path):
    """sae-lens's gpt2-small-res-jb (and other releases) were trained on TransformerLens's residual stream with
    center_writing_weights (metadata model_from_pretrained_kwargs): each token's residual less its mean over d_model.
    saerl fed them raw transformers residuals, with no note. Now the sae and encode stages centre each token for such
    an SAE, and say so: its codes equal those of the same SAE with the centring folded into its encoder (an
    independent form of the same map), and differ from what the raw residuals gave."""
    import torch
    from sae_lens import SAE

    sae_dir, report = trained
    centred = _with_metadata(sae_dir, tmp_path / "centred",
                             model_from_pretrained_kwargs={"center_writing_weights": True, "fold_ln": True})
    folded = SAE.load_from_disk(sae_dir)
    assert folded.cfg.apply_b_dec_to_input
    with torch.no_grad():  # (x - m·1 - b_dec) W + b_enc = (x - b_dec) (W - mean_rows W) + b_enc - mean(b_dec) W.sum(0)
        b_enc = folded.b_enc - folded.b_dec.mean() * folded.W_enc.sum(0)
        folded.W_enc -= folded.W_enc.mean(0, keepdim=True)
        folded.b_enc.copy_(b_enc)
    folded.save_model(tmp_path / "folded")

    def codes(folder, name):
        cfg = CFG.model_copy(update={"source": "local", "path": str(folder)})
        rep = obtain_sae(cfg, store, tmp_path / f"sae_{name}")
        encode_codes(store, tmp_path / f"sae_{name}", cfg, tmp_path / name, ChunkLog(tmp_path / name), progress=False)
        return rep, load_codes_csr(tmp_path / name)[1].toarray()

    rep_c, got = codes(centred, "c")
    rep_f, want = codes(tmp_path / "folded", "f")
    _, raw = codes(sae_dir, "raw")
    scale = np.abs(raw).max()  # the tiny SAE's codes are small: compare with their scale, and which features are kept
    assert np.abs(got - want).max() <= 1e-3 * scale and np.array_equal(got > 0, want > 0)
    assert ((got > 0) != (raw > 0)).sum() > 0.1 * (raw > 0).sum(), "raw residuals keep other features: it can tell"
    assert rep_f["notes"] == [] and len(rep_c["notes"]) == 1 and "center_writing_weights" in rep_c["notes"][0]
    assert rep_c["l0"] == rep_f["l0"] and rep_c["dead_features"] == rep_f["dead_features"]


def test_an_sae_of_other_model_processing_or_a_bos_the_prompts_lack_is_noted(store, trained, tmp_path):
    """A TransformerLens loading option that changes the residual stream and is not applied, and an SAE trained on
    texts that begin with BOS read on prompts that do not (no template head, no BOS: each prompt's first token is the
    attention sink), are notes in the SAE report; options that leave the stream as it is and a store whose prompts
    all begin with the template's head are not."""
    sae_dir, _ = trained
    quiet = _with_metadata(sae_dir, tmp_path / "quiet", prepend_bos=True,
                           model_from_pretrained_kwargs={"fold_ln": True, "fold_value_biases": True})
    cfg = CFG.model_copy(update={"source": "local", "path": str(quiet)})
    assert obtain_sae(cfg, store, tmp_path / "a")["notes"] == []
    odd = _with_metadata(sae_dir, tmp_path / "odd", model_from_pretrained_kwargs={"default_padding_side": "left"})
    (note,) = obtain_sae(cfg.model_copy(update={"path": str(odd)}), store, tmp_path / "b")["notes"]
    assert "default_padding_side" in note and "not apply" in note
    model = save_tiny_lm(tmp_path / "model")
    prompts, ids = make_prompts(40, seed=3)
    plain = tmp_path / "plain"  # no chat template, and the tokenizer adds no BOS
    extract(prompts, ids, plain, ModelConfig(), ExtractConfig(chunk_rows=16, token_budget=256, chat_template=False),
            ChunkLog(plain), model_path=model, device="cpu", progress=False)
    notes = obtain_sae(cfg, plain, tmp_path / "c")["notes"]  # and one of another model: the SAE's is another folder
    assert len(notes) == 2 and "was trained on model" in notes[0]
    assert "prepend_bos" in notes[1] and "chat_template" in notes[1]


def test_a_pretrained_releases_commit_is_read_from_the_hub_cache(tmp_path, monkeypatch):
    """A pretrained SAE's resolved revision was recorded nowhere: the sae manifest records the commit the local
    cache holds for the release's repo."""
    from huggingface_hub import constants

    from saerl.sae import cached_repo_commit

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    (tmp_path / "models--org--saes" / "refs").mkdir(parents=True)
    (tmp_path / "models--org--saes" / "refs" / "main").write_text("d" * 40)
    assert cached_repo_commit("org/saes") == "d" * 40 and cached_repo_commit("org/other") is None


def _damaged(sae_dir, out, cfg_update=None, cut=False, cfg_text=None):
    """A copy of the sae-lens folder sae_dir at out: cfg.json updated with `cfg_update` (or replaced by `cfg_text`),
    the weights file cut to half its bytes with `cut`. out: the copy."""
    shutil.copytree(sae_dir, out)
    cfg_json = json.loads((out / "cfg.json").read_text())
    (out / "cfg.json").write_text(cfg_text if cfg_text is not None else json.dumps({**cfg_json, **(cfg_update or {})}))
    if cut:
        weights = out / "sae_weights.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return out


def test_a_damaged_or_inconsistent_local_sae_is_refused_up_front_naming_sae_path_and_the_file(tmp_path):
    """A truncated weights file, a cfg.json d_sae other than the weights', a d_in written as a string and a cfg.json
    that is a JSON array passed the up-front check (local_sae_problem, run before the first stage) and failed in the
    sae stage, after extraction, with ~130 lines of two Prefect tracebacks naming neither sae.path nor the file
    (SafetensorError, "size mismatch for W_dec", a torch TypeError); the array read "architecture None"."""
    from saerl.sae import local_sae_problem

    good = _random_sae(tmp_path / "good")
    assert local_sae_problem(good, width=32) is None
    cases = {
        "cut": ({"cut": True}, r"sae.path=.*cut: sae_weights.safetensors cannot be read .*cut short.*save_model"),
        "dsae": ({"cfg_update": {"d_sae": 256}}, r"sae.path=.*dsae: cfg.json says d_sae=256, d_in=32, and "
                 r"sae_weights.safetensors holds a decoder W_dec of shape \[64, 32\].*Fix: put back the cfg.json"),
        "strdin": ({"cfg_update": {"d_in": "32"}}, r"""sae.path=.*strdin: cfg.json's d_in is '32', and it must be a """
                   r'''positive integer .*Fix: write it as a number, "d_in": 32'''),
        "array": ({"cfg_text": "[1, 2]"}, r"sae.path=.*array: .*array/cfg.json holds a JSON array, not a JSON object"),
    }
    for name, (damage, message) in cases.items():
        problem = local_sae_problem(_damaged(good, tmp_path / name, **damage), width=32)
        assert problem is not None and re.search(message, problem), (name, problem)
        assert "architecture None" not in problem


def test_a_transcoders_cfg_d_in_other_than_its_encoder_is_refused_up_front(tmp_path):
    """A transcoder's decoder writes d_out, so the up-front check (W_dec against d_sae x d_out) did not see a cfg.json
    d_in other than the weights' (its encoder W_enc is d_in x d_sae): "size mismatch for W_enc" in the sae stage,
    after extraction. Refused up front naming sae.path, both shapes and the fix; the folder saved whole passes."""
    from sae_lens import Transcoder, TranscoderConfig

    from saerl.sae import known_architectures, local_sae_problem

    good = tmp_path / "good"
    Transcoder(TranscoderConfig(d_in=32, d_sae=64, d_out=24, apply_b_dec_to_input=False)).save_model(good)
    assert local_sae_problem(good, known_architectures()) is None
    problem = local_sae_problem(_damaged(good, tmp_path / "din", cfg_update={"d_in": 48}), known_architectures())
    assert problem is not None and re.search(
        r"sae.path=.*din: cfg.json says d_in=48, d_sae=64, and sae_weights.safetensors holds an encoder W_enc of shape "
        r"\[32, 64\] \(d_in x d_sae\).*Fix: put back the cfg.json saved with these weights", problem), problem


def test_a_local_sae_that_does_not_load_with_its_cfg_names_sae_path_the_file_and_sae_lens_words(tmp_path):
    """An architecture whose tensors the weights lack (jumprelu's threshold on TopK weights) passes every up-front
    check and fails in sae-lens's load: a ValueError (a user error, one line on the console) naming sae.path and
    the file, with sae-lens's words and the fix, chained to its error; the check's own errors still come first."""
    from saerl.sae import _source_sae

    good = _random_sae(tmp_path / "good")
    arch = _damaged(good, tmp_path / "arch", cfg_update={"architecture": "jumprelu"})
    cfg = CFG.model_copy(update={"source": "local", "path": str(arch)})
    with pytest.raises(ValueError, match=r"sae.path=.*arch: sae_weights.safetensors does not load with its cfg.json "
                                         r"\(RuntimeError: .*threshold.*\).*Fix: put back the cfg.json") as err:
        _source_sae(cfg, "cpu")
    assert isinstance(err.value.__cause__, RuntimeError) and "\n" not in str(err.value)
    cut = _damaged(good, tmp_path / "cut", cut=True)
    with pytest.raises(ValueError, match=r"sae.path=.*cut: sae_weights.safetensors cannot be read"):
        _source_sae(cfg.model_copy(update={"path": str(cut)}), "cpu")



@pytest.mark.parametrize("error", [RuntimeError("DefaultCPUAllocator: can't allocate memory"),
                                   NotImplementedError("Cannot copy out of meta tensor"), TypeError("an API change")])
def test_a_local_sae_load_error_that_is_not_the_files_passes_unchanged(tmp_path, monkeypatch, error):
    """Every RuntimeError, TypeError, ValueError and KeyError of sae-lens's load read as "cfg.json's architecture,
    d_in or d_sae is not the weights'": out of memory and an API change too. Only the files' faults
    (saerl.artifacts.files_fault) are said to be; the rest pass as they were raised."""
    from sae_lens import SAE

    from saerl.sae import _source_sae

    good = _random_sae(tmp_path / "good")

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(SAE, "load_from_disk", fails)
    with pytest.raises(type(error)) as err:
        _source_sae(CFG.model_copy(update={"source": "local", "path": str(good)}), "cpu")
    assert err.value is error
