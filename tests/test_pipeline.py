"""saerl.pipeline: which stages a config runs, what each reads, and input keys."""

from pathlib import Path

import pytest

from saerl.config import load_config
from saerl.pipeline import hash_path, input_keys, plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_smoke_plan_reads_testbed_lm_for_extraction():
    p = dict(plan(load_config(CONFIGS / "smoke.yaml")))
    assert list(p) == ["testbed", "ingest", "extract", "sae", "encode", "score", "curriculum"]
    assert p["extract"] == ("ingest", "testbed") and p["ingest"] == ()
    assert p["score"] == ("ingest", "extract", "encode")


def test_external_encoder_without_policy_stages_skips_testbed():
    cfg = load_config(CONFIGS / "real-gsm8k.yaml")
    p = dict(plan(cfg, "encode"))
    assert "testbed" not in p and p["extract"] == ("ingest",)


def test_no_difficulty_column_adds_measured_label_stage():
    cfg = load_config(CONFIGS / "real-gsm8k.yaml")
    p = dict(plan(cfg, "score"))
    assert "label" in p and p["label"] == ("ingest", "testbed")
    assert p["extract"] == ("ingest",), "extraction reads MiniLM, so a new testbed LM must not rerun it"
    assert "label" in p["score"]
    with_column = dict(plan(load_config(CONFIGS / "real-gsm8k.yaml", ["data.difficulty=answer"]), "score"))
    assert "label" not in with_column


def test_until_errors():
    cfg = load_config(CONFIGS / "smoke.yaml")
    with pytest.raises(ValueError, match="unknown stage 'extrakt'"):
        plan(cfg, "extrakt")


def test_ingest_key_follows_file_content(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"question": "1+1?", "answer": "2"}\n')
    cfg = load_config(None, ["data.source=file", f"data.path={f}"])
    k1 = input_keys(cfg, "ingest", {})["file"]
    f.write_text('{"question": "1+2?", "answer": "3"}\n')
    assert input_keys(cfg, "ingest", {})["file"] != k1
    with pytest.raises(FileNotFoundError, match="data.path"):
        hash_path(tmp_path / "missing.jsonl")
