"""The tiny policy LM: tokenizer round trip, chat template, save + reload through the Auto classes."""

import json

import polars as pl
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from saerl.config import TestbedConfig as TBConfig
from saerl.policy_lm import ASSISTANT, build_tokenizer, length_buckets, prompt_text, train_policy_lm
from saerl.testbed import generate_world

CFG = TBConfig(n_pretrain=200, n_pool=200, n_eval=50, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                    pretrain_steps=3, batch_size=16, warmup_steps=1, log_every=1, eval_batch=64, max_new_tokens=8)


@pytest.fixture(scope="module")
def world() -> dict[str, pl.DataFrame]:
    return generate_world(CFG)


def _texts(world):
    return [t for df in world.values() for col in ("prompt", "solution") for t in df[col].to_list()]


def test_tokenizer_round_trips_every_prompt_and_solution(world):
    tok = build_tokenizer(_texts(world))
    for text in _texts(world):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text


def test_numbers_are_spelled_by_digits(world):
    tok = build_tokenizer(_texts(world))
    assert tok.convert_ids_to_tokens(tok("347 + 85", add_special_tokens=False)["input_ids"]) == [
        "3", "~~4", "~~7", "+", "8", "~~5"]
    assert prompt_text(tok, "What is 3 plus 4 ?").endswith(ASSISTANT)


def test_length_buckets_cover_each_example_once():
    import torch

    lengths = list(range(100))
    batches = length_buckets(lengths, 8, 4, torch.Generator().manual_seed(0))
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 96 and all(len(b) == 8 for b in batches)


def test_pretrained_model_saves_and_reloads_through_auto_classes(world, tmp_path):
    summary = train_policy_lm(CFG, world, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    levels = {str(d) for d in world["eval"]["difficulty"].unique()}
    assert set(summary["greedy_accuracy"]) == levels | {"all"}
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    tok = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=False)
    text = world["pool"]["prompt"][0]
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    enc = tok([prompt_text(tok, text)], add_special_tokens=False, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert model.config.eos_token_id == tok.eos_token_id and model.config.vocab_size == len(tok)
