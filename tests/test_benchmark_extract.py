"""benchmarks/extract.py: what each timed figure covers."""

from types import SimpleNamespace

import torch
from bench import load_benchmark

from saerl.config import ExtractConfig


def test_the_limit_waits_for_the_gpus_work_before_reading_the_clock(monkeypatch):
    """CUDA kernels run asynchronously and the limit copies nothing back: its clock stopped when the last batch was
    launched, and the saerl chunk timed next paid for the rest (frac_of_limit too low on a GPU, both figures
    wrong). The limit now waits for the device before it reads the clock."""
    bench = load_benchmark("extract")
    events: list[str] = []
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: events.append("clock") or 0.0))
    monkeypatch.setattr(bench, "pad_batch", lambda seqs, pad, device: (None, None))  # no CUDA tensors on a CPU host
    monkeypatch.setattr(bench, "forward_to_layer", lambda loaded, layer, ids, mask: events.append("forward"))
    monkeypatch.setattr(bench.torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    loaded = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=0), device=torch.device("cuda"))
    seqs = [[1, 2, 3]] * 4 + [[1] * 9]
    bench.limit(loaded, 0, seqs, ExtractConfig(token_budget=9), 0, len(seqs))
    assert events[0] == "clock" and events[-2:] == ["sync", "clock"] and events.count("forward") == 3  # [9], [3, 3, 3], [3]
    events.clear()
    bench.limit(SimpleNamespace(tokenizer=loaded.tokenizer, device=torch.device("cpu")), 0, seqs,
                ExtractConfig(token_budget=9), 0, len(seqs))
    assert "sync" not in events  # the CPU computes in the call: nothing queued
