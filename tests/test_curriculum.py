"""saerl.curriculum: invariants of the SAERL order (hypothesis) and the vanilla order."""

from __future__ import annotations

from typing import get_args

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saerl.config import CurriculumConfig
from saerl.curriculum import (
    ORDER_SCHEMA,
    build_order,
    fits_budget,
    home_share,
    inactive_filter_notes,
    quality_kept,
    share_kept,
    short_order_notes,
    vanilla_order,
    whole_batches,
    within_reach,
)

ORDERINGS = list(get_args(CurriculumConfig.model_fields["ordering"].annotation))  # every ordering the config takes


def _scores(sizes: list[int], seed: int, bad_share: float = 0.2) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    n = len(cluster)
    return pl.DataFrame({"id": [f"p{i}" for i in range(n)], "cluster": cluster,
                         "difficulty_hat": rng.integers(0, 5, n).astype(float),  # ties on purpose
                         "quality_hat": np.where(rng.uniform(size=n) < bad_share, 0.2, 0.9)})


def _whole(**fields) -> CurriculumConfig:
    """A curriculum config whose order is one ramp of the whole pool (fit_budget off: no run size to fit it to)."""
    return CurriculumConfig(fit_budget=False, **fields)


cases = st.fixed_dictionaries({
    "sizes": st.lists(st.integers(0, 30), min_size=1, max_size=6),
    "batch_size": st.integers(1, 12),
    "mix_ratio": st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]),
    "ordering": st.sampled_from(ORDERINGS),  # every value the config takes: a new one is exercised too
    "frontier_target": st.sampled_from([0.5, 2.0, 3.5]),
    "rotation": st.sampled_from(["round_robin", "size_weighted"]),
    "epochs": st.integers(1, 3),
    "filter_quality": st.booleans(),
    "max_difficulty_quantile": st.sampled_from([1.0, 1.0, 0.5]),
    "seed": st.integers(0, 3),
    "fit_budget": st.booleans(),
    "budget": st.one_of(st.none(), st.integers(1, 60)),  # prompts the run trains on (saerl.curriculum.ramps)
})
fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _build(case: dict) -> tuple[pl.DataFrame, pl.DataFrame, CurriculumConfig]:
    """A case's scores, order and config; with no budget, an order fitted to the run (fits_budget) cannot be built:
    the case builds one ramp instead (fit_budget off), as the caller is told to."""
    cfg = CurriculumConfig(**{k: v for k, v in case.items() if k not in ("sizes", "budget")})
    if case["budget"] is None:
        cfg = cfg.model_copy(update={"fit_budget": False})
    scores = _scores(case["sizes"], case["seed"])
    return scores, build_order(scores, cfg, quality_threshold=0.5, seed=case["seed"], budget=case["budget"]), cfg


@fast
@given(cases)
def test_visits_positions_and_filtering(case):
    scores, order, cfg = _build(case)
    pool = scores.filter(pl.col("quality_hat") >= 0.5) if cfg.filter_quality else scores
    kept_ids = set(within_reach(pool, cfg.max_difficulty_quantile)["id"])
    if cfg.max_difficulty_quantile < 1 and pool.height:
        assert order["difficulty_hat"].max() <= pool["difficulty_hat"].quantile(0.5, "linear")
    assert dict(order.schema) == ORDER_SCHEMA
    assert order["position"].to_list() == list(range(order.height))
    counts = order["id"].value_counts()
    assert set(counts["id"]) == kept_ids
    assert (counts["count"] == cfg.epochs).all()
    per_epoch = order.group_by("epoch").agg(pl.col("id").n_unique().alias("u"), pl.len().alias("n"))
    assert (per_epoch["u"] == per_epoch["n"]).all()
    # ramps: where the order is fitted to the run, each epoch's first ramps hold exactly the budget (the run's
    # prompts), its last the rest; elsewhere one ramp (a budget given is not read)
    budget = case["budget"] if fits_budget(cfg) else None
    ramp_sizes = order.group_by("epoch", "ramp").len().sort("epoch", "ramp")
    for _, g in ramp_sizes.group_by("epoch"):
        n = int(g["len"].sum())
        want = [n] if budget is None or budget >= n else [budget] * (n // budget)
        want += [n % budget] if want != [n] and n % budget else []
        assert g.sort("ramp")["len"].to_list() == want and g["ramp"].to_list() == list(range(g.height))
    # batches: consecutive, full except possibly the last of an epoch's ramp
    sizes = order.group_by(["epoch", "ramp", "batch"], maintain_order=True).len()
    assert sizes["batch"].to_list() == list(range(sizes.height))
    last = sizes.group_by("epoch", "ramp").agg(pl.col("batch").max())["batch"].to_list()
    assert (sizes.filter(~pl.col("batch").is_in(last))["len"] == cfg.batch_size).all()
    assert (sizes["len"] <= cfg.batch_size).all()


@fast
@given(cases)
def test_batch_composition_follows_mix_ratio(case):
    scores, order, cfg = _build(case)
    h = round(cfg.batch_size * (1 - cfg.mix_ratio))
    for _, part in order.group_by("epoch", "ramp", maintain_order=True):
        left = part["cluster"].value_counts()
        left = dict(zip(left["cluster"], left["count"], strict=True))
        for _, b in part.group_by("batch", maintain_order=True):
            home = b["home"][0]
            assert (b["home"] == home).all()
            from_home = int((b["cluster"] == home).sum())
            home_left = left.get(home, 0)
            others_left = sum(left.values()) - home_left
            if h == 0:
                assert home == -1
            elif home_left >= h and others_left >= cfg.batch_size - h:
                assert from_home == h, (from_home, h)
            else:
                assert from_home == min(home_left, cfg.batch_size - min(others_left, cfg.batch_size - min(h, home_left)))
            for c in b["cluster"]:
                left[c] -= 1


@fast
@given(cases)
def test_difficulty_monotone_within_cluster_and_deterministic(case):
    scores, order, cfg = _build(case)
    if cfg.ordering != "random":
        for _, g in order.group_by(["epoch", "ramp", "cluster"]):
            d = g.sort("position")["difficulty_hat"].to_numpy()
            key = {"easy_to_hard": d, "hard_to_easy": -d, "frontier": np.abs(d - cfg.frontier_target)}.get(cfg.ordering)
            assert key is not None, f"no monotonicity rule for ordering {cfg.ordering!r}: add the key it sorts by"
            assert (np.diff(key) >= 0).all()
    again = build_order(scores, cfg, quality_threshold=0.5, seed=case["seed"], budget=case["budget"])
    assert order.equals(again)


def test_a_run_shorter_than_the_pool_climbs_each_cluster_from_its_easiest_to_its_hardest():
    """A run that trains on fewer prompts than the order holds read each cluster's easy end alone (its hardest prompts
    never, a selection vanilla's shuffle does not make): the order's first ramp is that many prompts spread evenly
    over each cluster's reading order, each cluster in proportion to its size, read easy to hard."""
    rng = np.random.default_rng(0)
    sizes = [200, 100, 60]
    n = sum(sizes)
    scores = pl.DataFrame({"id": [f"p{i}" for i in range(n)], "cluster": np.repeat(np.arange(3), sizes),
                           "difficulty_hat": rng.uniform(size=n), "quality_hat": [1.0] * n})
    cfg = CurriculumConfig(batch_size=12, mix_ratio=0.25)
    budget = 120  # 10 steps of 12: a third of the pool
    head = build_order(scores, cfg.model_copy(update={"fit_budget": False}), 0.5).head(budget)
    ramped = build_order(scores, cfg, 0.5, budget=budget)
    first = ramped.head(budget)
    assert (first["ramp"] == 0).all() and ramped["ramp"].max() == 2
    assert sorted(first["cluster"].value_counts().sort("cluster")["count"]) == [20, 33, 67]  # 120 in 200:100:60
    for c, size in enumerate(sizes):
        pool = np.sort(scores.filter(pl.col("cluster") == c)["difficulty_hat"].to_numpy())
        read = first.filter(pl.col("cluster") == c)["difficulty_hat"].to_numpy()
        assert (np.diff(read) >= 0).all()  # easy to hard within the ramp
        assert read.max() >= pool[-max(2, size // 20)] and read.min() <= pool[max(1, size // 20)]  # both ends
        old = head.filter(pl.col("cluster") == c)["difficulty_hat"].to_numpy()
        assert old.max() < np.quantile(pool, 0.75)  # the head of the whole-pool order: the easy end alone
    assert abs(first["difficulty_hat"].mean() - scores["difficulty_hat"].mean()) < 0.05
    assert sorted(ramped["id"]) == sorted(scores["id"])  # every prompt still read once per epoch


def test_frontier_reads_each_cluster_from_the_target_outwards():
    scores = pl.DataFrame({"id": [f"p{i}" for i in range(6)], "cluster": [0, 0, 0, 1, 1, 1],
                           "difficulty_hat": [0.1, 0.55, 0.9, 0.3, 0.6, None], "quality_hat": [1.0] * 6})
    cfg = _whole(batch_size=1, mix_ratio=0.0, ordering="frontier", frontier_target=0.5)
    order = build_order(scores, cfg, quality_threshold=0.5)
    per_cluster = {c: g.sort("position")["id"].to_list() for (c,), g in order.group_by("cluster")}
    assert per_cluster == {0: ["p1", "p0", "p2"], 1: ["p4", "p3", "p5"]}  # missing difficulty last
    easy = build_order(scores, cfg.model_copy(update={"ordering": "easy_to_hard"}), quality_threshold=0.5)
    assert easy.filter(pl.col("cluster") == 0).sort("position")["id"].to_list() == ["p0", "p1", "p2"]


def test_mix_zero_gives_pure_batches_and_mix_one_has_no_home():
    scores = _scores([16, 16, 16], 0, bad_share=0.0)
    pure = build_order(scores, _whole(batch_size=8, mix_ratio=0.0), quality_threshold=0.5)
    assert (pure.group_by("batch").agg(pl.col("cluster").n_unique())["cluster"] == 1).all()
    assert pure.group_by("batch", maintain_order=True).agg(pl.col("home").first())["home"].to_list()[:3] == [0, 1, 2]
    mixed = build_order(scores, _whole(batch_size=8, mix_ratio=1.0), quality_threshold=0.5)
    assert (mixed["home"] == -1).all()
    assert mixed.group_by("batch").agg(pl.col("cluster").n_unique())["cluster"].mean() > 1.5


def test_mixed_in_prompts_are_drawn_in_proportion_to_the_prompts_left():
    """With mix_ratio 1 every slot's cluster is drawn with probability proportional to its prompts left, so a small
    cluster's prompts are spread over the epoch; drawn uniformly, its 10 prompts beside 90 would be used up in the
    first few batches (the last batch holding one: about 1.4 of 0..9 on average, against about 8.75)."""
    scores = _scores([90, 10], 0, bad_share=0.0)
    last = []
    for seed in range(20):
        order = build_order(scores, _whole(batch_size=10, mix_ratio=1.0), quality_threshold=0.5, seed=seed)
        assert order["batch"].max() == 9
        last.append(order.filter(pl.col("cluster") == 1)["batch"].max())
    assert np.mean(last) > 5


def test_size_weighted_rotation_gives_big_clusters_more_home_batches_spread_out():
    scores = _scores([64, 16, 16], 0, bad_share=0.0)
    order = build_order(scores, _whole(batch_size=8, mix_ratio=0.0, rotation="size_weighted"),
                        quality_threshold=0.5)
    homes = order.group_by("batch", maintain_order=True).agg(pl.col("home").first())["home"].to_list()
    assert homes.count(0) == 8 and homes.count(1) == 2 and homes.count(2) == 2
    assert homes[:3].count(0) <= 2  # spread, not all big-cluster batches first


def test_home_share_meets_the_design_on_balanced_clusters_and_exceeds_it_where_the_others_run_out():
    """The designed home share (round(B * (1 - mix_ratio)) / B) holds while every cluster has prompts to mix in;
    with one big cluster and round_robin rotation the small ones run out and the big one's last batches are all
    home. mix_ratio 1 has no home cluster: no share."""
    cfg = _whole(batch_size=10, mix_ratio=0.2, filter_quality=False)
    balanced = build_order(_scores([40, 40, 40, 40], seed=0), cfg, 0.5)
    assert home_share(balanced, 10) == pytest.approx(0.8, abs=0.03)  # the clusters' last batches share a little
    skewed = build_order(_scores([300, 20, 20], seed=0), cfg, 0.5)
    assert home_share(skewed, 10) > 0.9
    assert home_share(build_order(_scores([40, 40], seed=0), cfg.model_copy(update={"mix_ratio": 1.0}), 0.5), 10) is None
    assert home_share(balanced.head(0), 10) is None


def test_threshold_rederives_kept_and_filter_can_be_off():
    scores = _scores([10, 10], 1, bad_share=0.5).with_columns(kept=pl.lit(True))
    strict = build_order(scores, _whole(), quality_threshold=0.5)
    assert set(strict["id"]) == set(scores.filter(pl.col("quality_hat") >= 0.5)["id"])
    everything = build_order(scores, _whole(filter_quality=False), quality_threshold=0.5)
    assert everything.height == 20 and everything["kept"].sum() == strict.height


def test_quality_kept_is_the_one_filter_and_needs_quality_hat():
    """kept = quality_hat >= threshold (a null quality_hat kept), whatever a stale `kept` column says; share_kept
    counts it whether or not the filter applies; a frame without quality_hat is an error naming the column."""
    scores = pl.DataFrame({"id": ["a", "b", "c", "d"], "quality_hat": [0.2, 0.5, None, 0.9],
                           "kept": [True, False, False, False]})
    assert quality_kept(scores, 0.5).to_list() == [False, True, True, True]
    assert quality_kept(scores, 0.95).to_list() == [False, False, True, False]
    assert share_kept(scores, 0.5) == 0.75 and share_kept(scores.head(0), 0.5) == 0.0
    with pytest.raises(ValueError, match="no quality_hat column"):
        quality_kept(scores.drop("quality_hat"), 0.5)


def test_a_nan_quality_hat_is_kept_like_a_null_one():
    scores = pl.DataFrame({"id": ["a", "b"], "quality_hat": [float("nan"), 0.1]})
    assert quality_kept(scores, 0.5).to_list() == [True, False]


@pytest.mark.parametrize("bad", [-1, None])
def test_a_missing_or_negative_cluster_is_refused_naming_its_rows(bad):
    """A cluster -1 (a clusterer's noise label) was taken for the order's "no home" mark: under mix_ratio 1 its
    prompts were never mixed in and all went to the epoch's end; a null one failed with "cannot convert float NaN to
    integer". Both are refused, naming the rows."""
    scores = _scores([4, 4], seed=0).with_columns(
        pl.when(pl.col("id").is_in(["p1", "p2"])).then(pl.lit(bad, pl.Int64)).otherwise(pl.col("cluster")).alias("cluster"))
    with pytest.raises(ValueError, match=r"2 of 8 rows .* missing or negative cluster .*\['p1', 'p2'\]"):
        build_order(scores, _whole(batch_size=2, mix_ratio=1.0), 0.5)
    with pytest.raises(ValueError, match="no cluster column"):
        build_order(scores.drop("cluster"), _whole(batch_size=2), 0.5)


def test_a_filter_that_keeps_every_prompt_is_noted():
    """A quality filter that removes nothing leaves the ablation arms repeating the main two: the note says so with
    quality_hat's range, or that the filter is off; a filter that removes a prompt says nothing."""
    scores = pl.DataFrame({"id": ["a", "b", "c"], "quality_hat": [0.59, 0.8, 0.97]})
    on = CurriculumConfig(filter_quality=True)
    (note,) = inactive_filter_notes(scores, on, 0.5)
    assert "removed no prompt" in note and "0.59 to 0.97" in note and "order_only" in note
    assert inactive_filter_notes(scores, on, 0.6) == []
    (off,) = inactive_filter_notes(scores, CurriculumConfig(filter_quality=False), 0.6)
    assert "filter_quality is off" in off and "order_only" in off
    assert inactive_filter_notes(scores.head(0), on, 0.5) == []
    unprobed = scores.with_columns(quality_hat=pl.lit(1.0))  # the score stage's value with no quality labels
    (none,) = inactive_filter_notes(unprobed, on, 0.5)  # it read "raise score.quality_threshold into that range (1 to 1)"
    assert "every quality_hat is 1, so no quality probe was fitted" in none and "score stage's note says why" in none
    assert "into that range" not in none
    (flat,) = inactive_filter_notes(scores.with_columns(quality_hat=pl.lit(0.7)), on, 0.5)  # a probe's constant
    assert "ranges 0.7 to 0.7" in flat and "no quality probe" not in flat


def test_the_score_key_need_not_read_the_quality_threshold(monkeypatch):
    """The score stage writes quality_hat alone (the filter is the curriculum's): with score.quality_threshold out
    of its reads (saerl/stages.py), a threshold change keeps the score key (no refit) and still moves the
    curriculum's, which reads it. The curriculum key takes the score key as its input, as the pipeline passes it."""
    import dataclasses

    import saerl.stages as stages
    from saerl.config import load_config

    score = stages.STAGES["score"]
    reads = tuple(r for r in score.reads if r != "score.quality_threshold")
    monkeypatch.setitem(stages.STAGES, "score", dataclasses.replace(score, reads=reads))
    quality = "data.quality=quality"  # a quality column: without one the curriculum keys the threshold at its default
    a, b = load_config(None, [quality]), load_config(None, [quality, "score.quality_threshold=0.8"])
    assert stages.stage_key(a, "score", {}) == stages.stage_key(b, "score", {})
    up = {"score": stages.stage_key(a, "score", {})}
    assert stages.stage_key(a, "curriculum", up) != stages.stage_key(b, "curriculum", up)


def test_difficulty_cap_leaves_out_the_hardest_and_keeps_unknown_difficulty():
    scores = pl.DataFrame({"id": [f"p{i}" for i in range(10)], "cluster": [0, 1] * 5,
                           "difficulty_hat": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, None],
                           "quality_hat": [0.9] * 9 + [0.1]})
    assert within_reach(scores, 1.0).equals(scores)
    assert within_reach(scores, 0.5)["id"].to_list() == ["p0", "p1", "p2", "p3", "p4", "p9"]  # median of 0..8 is 4
    order = build_order(scores, _whole(batch_size=2, max_difficulty_quantile=0.25, epochs=2),
                        quality_threshold=0.5)
    assert sorted(set(order["id"])) == ["p0", "p1", "p2"]  # cut at the kept pool's quantile; p9 filtered on quality
    assert order.height == 6 and (order["difficulty_hat"] <= 2.0).all()
    unfiltered = build_order(scores, _whole(batch_size=2, max_difficulty_quantile=0.25,
                                                      filter_quality=False), quality_threshold=0.5)
    assert sorted(set(unfiltered["id"])) == ["p0", "p1", "p2", "p9"]  # unknown difficulty stays


def test_vanilla_order():
    ids = [f"p{i}" for i in range(50)]
    order = vanilla_order(ids, epochs=2, seed=3, batch_size=16)
    assert dict(order.schema) == ORDER_SCHEMA
    assert order.height == 100 and order["position"].to_list() == list(range(100))
    assert (order["id"].value_counts()["count"] == 2).all()
    assert order["batch"].max() == 7  # 4 batches per epoch, the last short
    assert (order["cluster"] == -1).all() and order["difficulty_hat"].is_null().all() and order["kept"].all()
    assert order["id"].to_list()[:50] != ids
    first, second = (order.filter(pl.col("epoch") == e)["id"].to_list() for e in (0, 1))
    assert sorted(first) == sorted(second) == sorted(ids) and first != second  # a fresh shuffle per epoch
    assert order.equals(vanilla_order(ids, epochs=2, seed=3, batch_size=16))
    assert not order.equals(vanilla_order(ids, epochs=2, seed=4, batch_size=16))


def test_epochs_draw_independently_from_one_generator():
    """Each epoch of the SAERL order reads its own draws (ties, random order, mixed-in slots): epoch 2 is not a
    replay of epoch 1, and the whole order is still one function of the seed."""
    scores = _scores([12, 12, 12], 0, bad_share=0.0)
    cfg = CurriculumConfig(batch_size=4, mix_ratio=0.5, ordering="random", epochs=2)
    order = build_order(scores, cfg, quality_threshold=0.5, seed=5)
    first, second = (order.filter(pl.col("epoch") == e)["id"].to_list() for e in (0, 1))
    assert sorted(first) == sorted(second) and first != second
    assert order.equals(build_order(scores, cfg, quality_threshold=0.5, seed=5))
    assert not order.equals(build_order(scores, cfg, quality_threshold=0.5, seed=6))


def test_empty_pool():
    scores = _scores([0], 0)
    assert build_order(scores, _whole(), quality_threshold=0.5).height == 0


def test_curriculum_plot(tmp_path):
    from saerl.plots import curriculum_difficulty

    order = build_order(_scores([20, 20, 20], 0), _whole(batch_size=8), quality_threshold=0.5)
    fig = curriculum_difficulty(order)
    assert fig.axes[0].get_title() and fig.axes[0].get_legend() is not None
    fig.savefig(tmp_path / "curriculum.png")
    assert curriculum_difficulty(vanilla_order(["a", "b"], 1, 0, 2)).axes[0].get_xlabel() == "position"
    ramped = build_order(_scores([20, 20, 20], 0), CurriculumConfig(batch_size=8), quality_threshold=0.5, budget=16)
    lines = [ln for ln in curriculum_difficulty(ramped).axes[0].get_lines() if ln.get_linestyle() == "--"]
    starts = ramped.group_by("ramp").agg(pl.col("position").min())["position"].sort().to_list()[1:]
    assert [ln.get_xdata()[0] for ln in lines] == starts and len(starts) >= 2  # each climb after the first marked


@given(cases)
@fast
def test_rl_reads_whole_curriculum_batches_one_per_step(case):
    """Read B ids per step, every step is one batch the curriculum built, over epochs and when the order is read
    again: an epoch's short last batch is left out instead of shifting every later step across two batches."""
    _, order, cfg = _build(case)
    ids = whole_batches(order, cfg.batch_size)
    B = cfg.batch_size
    sizes = order.group_by("batch").len()
    if not (sizes["len"] == B).any():  # no whole batch: the order is read as it is
        assert ids == order["id"].to_list()
        return
    assert len(ids) % B == 0 and len(ids) == B * int((sizes["len"] == B).sum())
    batches = [order.filter(pl.col("batch") == b)["id"].to_list() for b in sorted(sizes.filter(pl.col("len") == B)["batch"])]
    steps = [(ids * 2)[i : i + B] for i in range(0, 2 * len(ids), B)]  # the order read twice, as a long run does
    assert steps == batches * 2


def test_an_order_that_cannot_fill_one_batch_is_noted():
    """An order of fewer distinct prompts than a batch is read as it is, so every training step repeated prompts
    without a word; an empty one (the filter removed everything) failed only when its arm began training."""
    three = vanilla_order(["a", "b", "c"], 2, 0, 8)
    full = vanilla_order([f"p{i}" for i in range(10)], 1, 0, 8)
    empty = three.head(0)
    (short,) = short_order_notes({"saerl": three, "vanilla": full}, 8, 12)
    assert "saerl order holds 3 prompts, fewer than curriculum.batch_size=8" in short and "batch_size=3" in short
    (gone,) = short_order_notes({"saerl": full, "filter_only": empty, "vanilla": full}, 8, 12)  # any arm's order
    assert gone.startswith("the filter_only order is empty: the quality filter") and "none of the 12 prompts" in gone
    assert short_order_notes({"saerl": full, "vanilla": full}, 8, 10) == []


def test_every_ordering_the_config_takes_has_its_own_queue_order():
    """An ordering added to curriculum.ordering without its sort key in _queues read easy_to_hard silently (under
    a new cache key, so an ablation showed it as a result of its own). Each value gives its own order on a pool of
    distinct difficulties, and a name _queues does not know is an error."""
    from saerl.curriculum import _queues

    pool = pl.DataFrame({"cluster": [0] * 12, "difficulty_hat": np.linspace(0.0, 4.0, 12)})
    queues = {o: _queues(pool, o, np.random.default_rng(0), 2.1)[0] for o in ORDERINGS}
    assert len({tuple(q) for q in queues.values()}) == len(ORDERINGS), queues
    with pytest.raises(ValueError, match="curriculum.ordering='medium_first' has no queue order"):
        _queues(pool, "medium_first", np.random.default_rng(0), 2.1)


def test_build_order_honours_fit_budget_as_the_stage_does():
    """build_order left fit_budget to the runner: with the run's config and no budget it built one ramp (the stage
    two), and a budget given with fit_budget off, or with frontier/random (never ramped), still ramped. Now an
    order fitted to the run needs its budget (the error names it), and one not fitted ignores a budget given."""
    scores = _scores([40, 40, 40], 0, bad_share=0.0)
    fitted = CurriculumConfig(batch_size=8)
    with pytest.raises(ValueError, match=r"give budget.*train\.max_steps x curriculum\.batch_size.*fit_budget=false"):
        build_order(scores, fitted, 0.5)
    assert build_order(scores, fitted, 0.5, budget=40)["ramp"].max() == 2  # 120 prompts in climbs of 40
    for update in ({"fit_budget": False}, {"ordering": "frontier"}, {"ordering": "random"}):
        cfg = fitted.model_copy(update=update)
        whole = build_order(scores, cfg.model_copy(update={"fit_budget": False}), 0.5)
        assert build_order(scores, cfg, 0.5, budget=40).equals(whole), update
        assert (whole["ramp"] == 0).all()


def test_build_order_names_what_to_pass_for_the_whole_config_or_a_path():
    """A notebook passed the run's whole config ("'PipelineConfig' object has no attribute 'seed'") or the scores'
    path ("'str' object has no attribute 'columns'"): each is a TypeError naming what to pass."""
    from saerl.config import PipelineConfig

    scores = _scores([10, 10], 0)
    with pytest.raises(TypeError, match=r"build_order takes the config's curriculum section, not a PipelineConfig: "
                                        r"pass its curriculum section, cfg\.curriculum"):
        build_order(scores, PipelineConfig(), 0.5)
    with pytest.raises(TypeError, match=r"not a dict: pass a CurriculumConfig"):
        build_order(scores, {"seed": 0}, 0.5)
    with pytest.raises(TypeError, match=r"scores as a polars DataFrame, not a str: read .*scores\.parquet"):
        build_order("scores.parquet", CurriculumConfig(fit_budget=False), 0.5)
