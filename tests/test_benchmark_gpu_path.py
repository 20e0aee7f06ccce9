"""benchmarks/gpu_path.py: the RESULT figures come from the run's artifacts, cached or computed."""

import json
from dataclasses import replace

import polars as pl
import pytest
from bench import load_benchmark

from saerl.artifacts import MANIFEST, ArtifactRef
from saerl.pipeline import StageResult


def _result(tmp_path, name, seconds, metrics, computed, lookup_s):
    """A StageResult whose artifact's manifest says it took `seconds` to build."""
    folder = tmp_path / name.replace(":", "_")
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"seconds": seconds, "metrics": metrics}))
    return StageResult(ArtifactRef(name.split(":")[0], "k", str(folder)), computed, lookup_s, metrics)


def test_stage_figures_read_the_artifacts_not_the_cache_lookup(tmp_path):
    """A rerun reuses every stage (its StageResult seconds are the cache lookup's, ~0): the throughput still
    comes from the build that computed each stage, over the prompts and steps it really ran."""
    bench = load_benchmark("gpu_path")
    results = {
        "extract": _result(tmp_path, "extract", 20.0, {"n_prompts_total": 400.0}, False, 0.002),
        # a training build's seconds hold its evaluations and loads too: the step figure reads trl's train_seconds
        "train:saerl:0": _result(tmp_path, "train:saerl:0", 41.0, {"steps": 3.0, "train_seconds": 30.0}, False, 0.001),
        "train:vanilla:0": _result(tmp_path, "train:vanilla:0", 62.0, {"steps": 5.0, "train_seconds": 50.0}, True,
                                   50.2),
    }
    pl.DataFrame({"step": [1, 2], "step_time": [4.0, 6.0]}).write_parquet(results["train:saerl:0"].ref.file("log.parquet"))
    pl.DataFrame({"step": [1, 2, 3], "step_time": [7.0, 8.0, 9.0]}).write_parquet(
        results["train:vanilla:0"].ref.file("log.parquet"))
    pl.DataFrame({"step": [0, 3], "seconds": [1.5, 2.0]}).write_parquet(results["train:saerl:0"].ref.file("curve.parquet"))
    # grpo_step_s: each arm's mean step_time (5 and 8), averaged over the arms; grpo_warm_step_s: the steps pooled
    # less the first of the first arm computed here (vanilla's 7.0 s: the saerl arm was reused), (4 + 6 + 8 + 9) / 4
    assert bench.stage_figures(results) == {"extract_prompts_per_s": 20.0, "grpo_s_per_step": 10.0, "grpo_step_s": 6.5,
                                            "grpo_warm_step_s": 6.75}
    reused = {name: replace(res, computed=False) for name, res in results.items()}  # a rerun: the first arm's first
    assert bench.stage_figures(reused)["grpo_warm_step_s"] == 7.5  # step warmed the run that computed it: (6+7+8+9)/4
    assert bench.train_step_figures(results["train:saerl:0"].ref) == {"grpo_step_s": 5.0, "eval_s": 3.5}
    missing = bench.train_step_figures(results["train:vanilla:0"].ref)  # no curve.parquet
    assert missing["grpo_step_s"] == 8.0 and missing["eval_s"] != missing["eval_s"]
    figures = bench.stage_figures({})
    assert all(v != v for v in figures.values())  # nan without the stages


# Bytes a GRPO step keeps per token of Qwen2.5-Math-1.5B (28 blocks, d=1536, MLP 8960) as trl 1.16 trains it: float32
# weights under bf16 autocast, gradient checkpointing on (GRPOConfig's default), per token of one forward/backward
# pass (a step runs train.micro_batches of them). Measured on the CPU with torch.autograd.graph.saved_tensors_hooks on blocks of that shape
# (the difference between 4 and 2 blocks, and between 384 and 128 tokens, so weights and fixed costs cancel).
CHECKPOINT_BYTES = 6144  # per token per block: the block's float32 input, all that checkpointing keeps
RECOMPUTE_BYTES = 121_912  # per token: what the one block being recomputed in backward keeps at a time
STATE_BYTES = 18  # per parameter: float32 weights, gradients, AdamW's two moments (16) and autocast's bf16 copies
VOCAB = 151_936  # Qwen2.5-Math-1.5B's vocabulary (the benchmark's shape model has MiniLM's)
PROMPT_TOKENS = 256  # a long GSM8K question with the chat template: a step's prompts are padded to the longest
GPU_BYTES = 80e9  # the README's user: one 80 GB GPU
HEADROOM = 0.8  # the rest for backward's activation gradients, the CUDA context and allocator fragmentation


def _train_step_bytes(cfg, params: int) -> float:
    """Peak bytes of one GRPO step of `cfg` on Qwen2.5-Math-1.5B with `params` parameters (estimate): the
    training state, and the activations of one of the step's train.micro_batches forward/backward passes."""
    tokens = cfg.curriculum.batch_size * cfg.train.num_generations * (PROMPT_TOKENS + cfg.train.max_completion_length)
    tokens /= cfg.train.micro_batches
    per_token = 28 * CHECKPOINT_BYTES + RECOMPUTE_BYTES
    return params * STATE_BYTES + tokens * per_token


def test_the_shipped_config_trains_on_one_80gb_gpu():
    """The config put 32 prompts x 8 rollouts of up to 1024 tokens in one forward/backward pass: ~124 GB for the
    step alone, an out-of-memory on the 80 GB GPU the README sizes it for; the shipped step is estimated here with
    its train.micro_batches passes, and one pass of 32 x 8 x 1024 still does not fit."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from saerl.config import load_config

    bench = load_benchmark("gpu_path")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=VOCAB, **bench.QWEN25_MATH_15B))
    params = sum(p.numel() for p in model.parameters())
    assert 1.5e9 < params < 1.6e9  # Qwen2.5-Math-1.5B: 1.54B with tied embeddings
    cfg = load_config(bench.ROOT / "configs" / "qwen2.5-math-1.5b.yaml")
    assert not cfg.train.use_vllm  # vLLM's colocate share would come off the budget
    assert _train_step_bytes(cfg, params) <= HEADROOM * GPU_BYTES
    big = cfg.model_copy(update={"curriculum": cfg.curriculum.model_copy(update={"batch_size": 32}),
                                 "train": cfg.train.model_copy(update={"max_completion_length": 1024, "micro_batches": 1})})
    assert _train_step_bytes(big, params) > GPU_BYTES
    four = big.model_copy(update={"train": big.train.model_copy(update={"micro_batches": 4})})
    assert _train_step_bytes(four, params) <= HEADROOM * GPU_BYTES


def test_a_full_run_keeps_the_configs_grpo_step(tmp_path):
    """Peak memory is read to check a GPU before a long run, so a full run trains the config's step (it ran 8
    prompts a step whatever the config said); --quick shrinks it on purpose."""
    from saerl.config import load_config

    bench = load_benchmark("gpu_path")
    path = bench.ROOT / "configs" / "qwen2.5-math-1.5b.yaml"
    full = load_config(path, bench.run_overrides("m", "d.jsonl", "e.jsonl", tmp_path, 2048, 8, False, False))
    shipped = load_config(path)
    assert (full.curriculum.batch_size, full.train.max_completion_length, full.train.num_generations) == (
        shipped.curriculum.batch_size, shipped.train.max_completion_length, shipped.train.num_generations)
    assert (full.train.max_steps, full.data.max_rows, full.train.seeds) == (8, 2048, [0])
    quick = load_config(path, bench.run_overrides("m", "d.jsonl", "e.jsonl", tmp_path, 512, 4, True, True))
    assert (quick.curriculum.batch_size, quick.train.max_completion_length, quick.extract.layer) == (8, 128, 2)


def test_result_line_peak_is_nan_without_a_gpu_and_total_is_the_stages_time(tmp_path, monkeypatch, capsys):
    """--tiny on a CPU machine computes every stage, yet no GPU memory was measured: the peak is undefined (nan),
    not 0.0 GiB; total_s is the stages' wall time, not counting the parameter count taken after them."""
    import sys

    bench = load_benchmark("gpu_path")
    from types import SimpleNamespace

    clock = iter([100.0, 130.0, 500.0, 600.0])
    monkeypatch.setattr(bench, "time", SimpleNamespace(time=lambda: next(clock)))  # this module's clock only
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    results = {"extract": _result(tmp_path, "extract", 20.0, {"n_prompts_total": 400.0}, True, 20.0)}
    monkeypatch.setattr(bench, "run_all", lambda store, cfg, report=None: results)
    monkeypatch.setattr(bench, "parameter_count", lambda model: bench.time.time() and 1.5e9)  # ticks the clock
    monkeypatch.setattr(sys, "argv", ["gpu_path.py", "--model", "m", "--data", "d.jsonl", "--eval", "e.jsonl",
                                      "--root", str(tmp_path), "--cpu"])
    bench.main()
    result = capsys.readouterr().out.strip().splitlines()[-1]
    assert "peak_gpu_gib=nan" in result and "total_s=30 " in result and "extract_prompts_per_s=20.0" in result
    assert "params_b=1.5 " not in result and result.endswith("params_b=1.5")


def test_without_a_gpu_the_full_size_path_is_refused_unless_asked(tmp_path, monkeypatch, capsys):
    """Without a GPU and without --tiny it built the 1.37B model (2.6 GB) and extracted on the CPU for hours,
    saying nothing; it now names --tiny --quick, and runs on the CPU only with --cpu."""
    import sys

    bench = load_benchmark("gpu_path")
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "build_shaped_model", lambda *a, **k: pytest.fail("built the model"))
    monkeypatch.setattr(sys, "argv", ["gpu_path.py", "--data", "d.jsonl", "--eval", "e.jsonl", "--root", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.main()
    err = capsys.readouterr().err
    assert "no GPU here" in err and "`--tiny --quick`" in err


def test_an_interrupted_model_build_leaves_no_config_a_rerun_would_trust(tmp_path, monkeypatch):
    """main() builds the random-weight model only when `<model>/config.json` is missing; save_pretrained writes the
    config first, so a build killed while writing the weights or the tokenizer left a folder that every later run
    loaded as a complete model. The build now lands in place whole or not at all."""
    import transformers

    bench = load_benchmark("gpu_path")
    out = tmp_path / "tiny-qwen2-shape"
    shape = {**bench.QWEN25_MATH_15B, **bench.TINY}
    saves = transformers.PreTrainedTokenizerBase.save_pretrained

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt("killed while writing the tokenizer")

    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        bench.build_shaped_model(out, bench.default_tokenizer_dir(), shape)
    assert not (out / "config.json").exists()
    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "save_pretrained", saves)
    params_b = bench.build_shaped_model(out, bench.default_tokenizer_dir(), shape)
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists() and params_b > 0


@pytest.mark.parametrize(("flags", "expected"), [
    ([], (2048, 8)), (["--quick"], (512, 4)), (["--quick", "--steps", "2", "--prompts", "100"], (100, 2)),
    (["--steps", "3"], (2048, 3)),
])
def test_explicit_prompts_and_steps_win_over_quick(tmp_path, monkeypatch, flags, expected):
    """--quick --steps 2 ran 4 steps on 512 prompts: the explicit --prompts and --steps were dropped without a word."""
    import sys

    bench = load_benchmark("gpu_path")
    seen = {}
    monkeypatch.setattr(bench, "run_all", lambda store, cfg, report=None: seen.setdefault("cfg", cfg) and {})
    monkeypatch.setattr(bench, "parameter_count", lambda model: 1.5e9)
    monkeypatch.setattr(sys, "argv", ["gpu_path.py", "--model", "m", "--data", "d.jsonl", "--eval", "e.jsonl",
                                      "--root", str(tmp_path), "--cpu", *flags])
    bench.main()
    assert (seen["cfg"].data.max_rows, seen["cfg"].train.max_steps) == expected


def test_one_step_per_arm_says_its_peak_leaves_out_the_optimizer_state():
    """On the H200 a 1-step run peaked at 28.2 GiB where a 2-step one reached 40.6 (AdamW's moments, created at the
    first update, after the one step's backward): the run says so instead of printing the low peak alone."""
    bench = load_benchmark("gpu_path")
    assert "AdamW" in bench.one_step_peak_note(1) and bench.one_step_peak_note(2) is None
