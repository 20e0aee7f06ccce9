"""saerl.sae: an SAE trained through sae-lens on a tiny Qwen2's activations, its report, codes, CSR view."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_activations import make_prompts, one_thread, save_tiny_lm  # noqa: F401 (fixture)

from saerl.activations import extract
from saerl.artifacts import ChunkLog
from saerl.config import ExtractConfig, ModelConfig, SAEConfig
from saerl.sae import SAEShapeError, encode_codes, load_codes_csr, obtain_sae

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


def test_train_report_and_files(trained):
    out, report = trained
    assert (out / "cfg.json").exists() and (out / "sae_weights.safetensors").exists()
    assert report["architecture"] == "topk" and report["d_in"] == 32 and report["d_sae"] == 128
    assert 0 < report["variance_explained"] <= 1
    assert 0 < report["l0"] <= CFG.k and 0 <= report["dead_features"] <= 128
    assert json.loads((out / "sae_report.json").read_text()) == report


def test_encode_topk_csr_and_resume(store, trained, tmp_path):
    sae_dir, _ = trained
    summary = encode_codes(store, sae_dir, CFG, tmp_path, ChunkLog(tmp_path), progress=False)
    assert summary["n_prompts"] == 120 and summary["chunks_run"] == 8 and summary["top_k"] == 12
    ids, csr = load_codes_csr(tmp_path)
    assert ids[:3] == ["p0", "p1", "p2"] and csr.shape == (120, 128)
    assert csr.getnnz(axis=1).max() <= 12 and csr.getnnz(axis=1).min() > 0 and (csr.data > 0).all()
    ref = csr.toarray()
    # an interrupted encode (chunk records lost) resumes to the same bytes
    log = ChunkLog(tmp_path)
    for c in ("3", "7"):
        (log.folder / f"{c}.json").unlink()
    again = encode_codes(store, sae_dir, CFG, tmp_path, log, progress=False)
    assert again["chunks_run"] == 2
    assert np.array_equal(load_codes_csr(tmp_path)[1].toarray(), ref)
    mean = encode_codes(store, sae_dir, CFG.model_copy(update={"encode_pool": "mean"}), tmp_path / "m",
                        ChunkLog(tmp_path / "m"), progress=False)
    assert mean["chunks_run"] == 8


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
