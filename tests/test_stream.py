"""saerl.stream: how long a training run's prompt stream is, and which prompt each of its places reads."""

import pytest

from saerl.rl import OrderSampler
from saerl.stream import stream_length, training_order


@pytest.mark.parametrize(("steps", "spg"), [(3, 2), (1, 4), (5, 1), (4, 4), (7, 3)])
def test_stream_covers_every_step_in_whole_generation_batches(steps, spg):
    """The sampler yields only whole generation batches (steps_per_generation steps of prompts): the stream must
    hold enough of them for every step, read from the head of the order once (no re-read, no empty sampler)."""
    pps, g = 2, 2
    n = stream_length(steps, pps, spg)
    gen_rows = pps * spg * g  # trl's dataloader hands one generation batch per step, each block spg times
    idx = list(OrderSampler(n, g, pps * spg, block_repeats=spg))
    batches = [idx[i : i + gen_rows] for i in range(0, len(idx), gen_rows)]
    assert len(batches) >= steps and all(len(b) == gen_rows for b in batches)
    generated = [i for b in batches[::spg] for i in b[::g]]  # trl generates on every spg-th batch
    assert generated == list(range(n)) and n >= steps * pps
    assert stream_length(steps, pps, spg, extra_rounds=3) == 4 * n
    with pytest.raises(ValueError, match="steps_per_generation"):
        stream_length(steps, pps, 0)


def test_training_order_follows_order_or_a_seeded_shuffle():
    ids = [f"p{i}" for i in range(10)]
    assert training_order(ids, ["p3", "p1"], 5, 0) == ["p3", "p1", "p3", "p1", "p3"]
    shuffled = training_order(ids, None, 20, 0)
    assert shuffled == training_order(ids, None, 20, 0) != training_order(ids, None, 20, 1)
    assert sorted(shuffled[:10]) == sorted(ids) and shuffled[:10] != ids
