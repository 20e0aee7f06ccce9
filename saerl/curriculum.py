"""Curriculum stage: turn per-prompt scores into the order RL reads, and the vanilla (shuffled) order.

An order is a Polars frame with one row per (prompt, epoch) visit: id, position (0..n-1 over the whole run),
batch (global batch index), cluster, difficulty_hat, kept, epoch, home (the batch's home cluster, -1 when
the batch has none) and ramp (the climb within its epoch the visit belongs to: :func:`ramps`). The trainer reads it
by position, without shuffling.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from saerl.config import CurriculumConfig, require_section

NO_PROBE_QUALITY = 1.0  # every prompt's quality_hat when the score stage could fit no quality probe: all kept

ORDER_SCHEMA = {"id": pl.String, "position": pl.Int64, "batch": pl.Int64, "cluster": pl.Int64,
                "difficulty_hat": pl.Float64, "kept": pl.Boolean, "epoch": pl.Int64, "home": pl.Int64,
                "ramp": pl.Int64}


def _queues(pool: pl.DataFrame, ordering: str, rng: np.random.Generator, target: float) -> dict[int, list[int]]:
    """Row indices of `pool` per cluster, in the order the cluster is read: difficulty_hat ascending
    (easy_to_hard), descending (hard_to_easy), or by distance to `target` ascending (frontier), ties broken by
    a seeded shuffle and missing difficulties last (shuffled); or a seeded shuffle (random)."""
    tie = rng.permutation(pool.height)
    diff = pool["difficulty_hat"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    missing = np.isnan(diff)
    keys = {"easy_to_hard": diff, "hard_to_easy": -diff, "frontier": np.abs(diff - target), "random": diff}
    if ordering not in keys:  # a name added to curriculum.ordering without its order here read easy_to_hard silently
        raise ValueError(f"curriculum.ordering={ordering!r} has no queue order in saerl.curriculum._queues (it has "
                         f"{', '.join(keys)}): add its sort key there")
    key = np.where(missing, 0.0, keys[ordering])
    order = np.lexsort((tie, key, missing)) if ordering != "random" else tie
    clusters = pool["cluster"].to_numpy()
    queues: dict[int, list[int]] = {int(c): [] for c in np.unique(clusters)}
    for i in order:
        queues[int(clusters[i])].append(int(i))
    return queues


def _next_home(left: dict[int, int], credit: dict[int, float], weights: dict[int, float], last: int | None,
               rotation: str) -> int:
    """The next batch's home cluster among clusters with prompts left.

    round_robin: the next cluster id after the last home (cyclic). size_weighted: smooth weighted round robin
    (each active cluster gains its initial size in credit, the richest is chosen and pays the total), so
    each cluster's home batches are proportional to its size and evenly spread over the run."""
    active = sorted(c for c, n in left.items() if n > 0)
    if rotation == "round_robin":
        return next((c for c in active if last is None or c > last), active[0])
    for c in active:
        credit[c] += weights[c]
    home = max(active, key=lambda c: (credit[c], -c))
    credit[home] -= sum(weights[c] for c in active)
    return home


def home_size(batch_size: int, mix_ratio: float) -> int:
    """The prompts a batch takes from its home cluster: round(B * (1 - mix_ratio)), Python's round (a half to the
    even number). in: B, curriculum.mix_ratio; out: the count (0: no home cluster)."""
    return round(batch_size * (1 - mix_ratio))


def _epoch(pool: pl.DataFrame, cfg: CurriculumConfig, rng: np.random.Generator) -> list[tuple[int, int]]:
    """One pass over `pool`: (row index, home cluster) in reading order, batch after batch.

    Each batch of B takes h = round(B * (1 - mix_ratio)) prompts from its home cluster's queue front and
    fills the other B - h slots one at a time from the fronts of the other clusters, each slot's cluster
    drawn with probability proportional to its prompts left (so the mixed-in share is a seeded random sample
    of the rest of the pool, still read easy to hard within each cluster). Tail: when the home cluster has
    fewer than h left, the other clusters fill in; when the others run dry, the home cluster does; only the
    epoch's last batch can be short (when the pool size is not a multiple of B). With h = 0 (mix_ratio 1)
    no cluster is home and every slot is drawn from all clusters."""
    queues = _queues(pool, cfg.ordering, rng, cfg.frontier_target)
    heads = dict.fromkeys(queues, 0)
    left = {c: len(q) for c, q in queues.items()}
    weights = {c: float(n) for c, n in left.items()}
    credit = dict.fromkeys(queues, 0.0)
    B = cfg.batch_size
    h = home_size(B, cfg.mix_ratio)
    out: list[tuple[int, int]] = []
    last: int | None = None

    def take(c: int) -> int:
        heads[c] += 1
        left[c] -= 1
        return queues[c][heads[c] - 1]

    while sum(left.values()) > 0:
        home = _next_home(left, credit, weights, last, cfg.rotation) if h > 0 else -1
        last = home
        batch = [take(home) for _ in range(min(h, left.get(home, 0)))]
        while len(batch) < B:
            others = [c for c, n in left.items() if n > 0 and c != home]
            if not others:
                break
            w = np.array([left[c] for c in others], dtype=np.float64)
            batch.append(take(others[int(rng.choice(len(others), p=w / w.sum()))]))
        while len(batch) < B and left.get(home, 0) > 0:
            batch.append(take(home))
        out += [(i, home) for i in batch]
    return out


def apportion(sizes: list[int], total: int) -> list[int]:
    """`total` split over parts of `sizes` in proportion to them, by largest remainder (ties to the earlier part):
    the counts sum to `total` and none exceeds its size. in: part sizes, total <= sum(sizes); out: counts."""
    whole = sum(sizes)
    if whole == 0:
        return [0] * len(sizes)
    exact = [n * total / whole for n in sizes]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(sizes)), key=lambda i: (-(exact[i] - counts[i]), i))[: total - sum(counts)]:
        counts[i] += 1
    return counts


CLIMBS = ("easy_to_hard", "hard_to_easy")  # the orderings that climb a cluster's difficulties (fit_budget fits them)


def spread(n: int, m: int) -> np.ndarray:
    """`m` of the positions 0..n-1 spread evenly from the first to the last, both ends included (the middle one for
    m = 1): a thinned copy of a list read easy to hard still runs from its easiest item to its hardest.
    in: n, m <= n; out: m increasing positions."""
    if m <= 1:
        return np.array([n // 2] if m == 1 else [], dtype=np.int64)
    return np.rint(np.arange(m) * (n - 1) / (m - 1)).astype(np.int64)


def fits_budget(cfg: CurriculumConfig) -> bool:
    """Is the order read in ramps of the run's size (:func:`ramps`)? With curriculum.fit_budget, for the orderings
    that climb (CLIMBS); frontier reads the prompts nearest its target first on purpose, and a random order has no
    end to miss. in: curriculum config; out: bool."""
    return cfg.fit_budget and cfg.ordering in CLIMBS


def budget_problem(cfg: CurriculumConfig, budget: int | None) -> str | None:
    """Why :func:`build_order` cannot build the order `cfg` asks for with `budget`, or None: an order fitted to the
    run (:func:`fits_budget`) needs the run's size, and without it was built as one ramp, another order than the
    curriculum stage's from the same config. in: curriculum config, budget; out: the problem, with its fix."""
    if budget is None and fits_budget(cfg):
        return (f"curriculum.fit_budget with ordering {cfg.ordering} fits the order to the run: give budget, the "
                "prompts the run trains on (train.max_steps x curriculum.batch_size: saerl.runners.run_prompts(cfg)), "
                "or set curriculum.fit_budget=false for one ramp of the whole pool")
    return None


def ramps(pool: pl.DataFrame, cfg: CurriculumConfig, rng: np.random.Generator, budget: int | None) -> list[list[int]]:
    """The row indices of `pool` per ramp, in the order the ramps are read. A run that trains on `budget` prompts,
    fewer than the pool holds, would read an order of the whole pool only as far as each cluster's easy end (each
    read easy to hard): so the first ramp is `budget` prompts spread evenly over each cluster's reading order, from
    its first prompt to its last (:func:`spread`; the clusters in proportion to their sizes, :func:`apportion`),
    which the run climbs, then the next `budget` of what is left likewise, and so on (a GRPO run reads the first
    alone; DAPO's refills read past it, into a second climb from the easy end, and so do later epochs). With no
    budget, or one the pool fits in, one ramp: the whole pool.
    in: pool (cluster, difficulty_hat), curriculum config (ordering, frontier_target), generator, budget (>= 1 or
    None); out: [[row index, ...] per ramp]. Raises ValueError for a budget under 1."""
    if budget is not None and budget < 1:
        raise ValueError(f"a curriculum budget is the run's prompts, at least 1; got {budget}")
    if budget is None or budget >= pool.height:
        return [list(range(pool.height))]
    left = [np.array(q, dtype=np.int64) for q in _queues(pool, cfg.ordering, rng, cfg.frontier_target).values()]
    out: list[list[int]] = []
    while any(q.size for q in left):
        counts = apportion([q.size for q in left], min(budget, sum(q.size for q in left)))
        ramp, rest = [], []
        for q, m in zip(left, counts, strict=True):
            keep = np.ones(q.size, dtype=bool)
            keep[spread(q.size, m)] = False
            ramp.append(q[~keep])
            rest.append(q[keep])
        out.append(sorted(int(i) for i in np.concatenate(ramp)))
        left = rest
    return out


def within_reach(pool: pl.DataFrame, max_quantile: float) -> pl.DataFrame:
    """The rows of `pool` (with difficulty_hat) whose difficulty_hat is at most its `max_quantile` quantile
    (numpy's default, linear interpolation, over the rows that have one); rows without a difficulty_hat stay.
    max_quantile 1.0 returns `pool` unchanged."""
    diff = pool["difficulty_hat"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    known = ~np.isnan(diff)
    if max_quantile >= 1.0 or not known.any():
        return pool
    cut = float(np.quantile(diff[known], max_quantile))
    return pool.filter(pl.Series(~known | (diff <= cut)))  # NaN <= cut is False: unknown kept by ~known


def quality_kept(scores: pl.DataFrame, quality_threshold: float) -> pl.Series:
    """The quality filter's verdict per prompt, the one place it is computed: quality_hat >= quality_threshold
    (score.quality_threshold); a null or NaN quality_hat (no probe read) is kept. The score stage writes quality_hat
    alone, so a threshold change reruns the curriculum and what follows it, never the score stage's fits.
    in: scores (id, quality_hat, ...; any older `kept` column is ignored), threshold; out: Boolean Series
    "kept", one per row. Raises ValueError when scores has no quality_hat column."""
    if "quality_hat" not in scores.columns:
        raise ValueError(f"scores has no quality_hat column (columns: {scores.columns}): the quality filter reads "
                         "it; the score stage always writes it (1.0 where no probe was fitted), so add it, 1.0 to "
                         "keep a prompt")
    return (scores["quality_hat"].cast(pl.Float64).fill_nan(None) >= quality_threshold).fill_null(True).alias("kept")


def share_kept(scores: pl.DataFrame, quality_threshold: float) -> float:
    """The share of `scores`' prompts the quality filter keeps (:func:`quality_kept`), whether or not
    curriculum.filter_quality applies it; 0.0 for no prompts. in: scores, threshold; out: a share in [0, 1]."""
    return float(quality_kept(scores, quality_threshold).sum()) / max(1, scores.height)


def inactive_filter_notes(scores: pl.DataFrame, cfg: CurriculumConfig, quality_threshold: float) -> list[str]:
    """A note when the quality filter removes nothing from the saerl order: it is off (curriculum.filter_quality),
    so the saerl order is order_only's, or it is on but keeps every prompt (every quality_hat at or above the
    threshold), so the saerl order is order_only's and filter_only is vanilla's pool: those ablation arms repeat
    the main two. in: scores (quality_hat), curriculum config, score.quality_threshold; out: [] or one note."""
    if not cfg.filter_quality:
        return ["curriculum.filter_quality is off: the saerl order is the order_only arm's (the same order, no "
                "quality filter)"]
    if scores.is_empty() or not bool(quality_kept(scores, quality_threshold).all()):
        return []
    q = scores["quality_hat"].cast(pl.Float64).drop_nulls()
    if q.len() and q.min() == q.max() == NO_PROBE_QUALITY:  # the score stage's value when it fitted no probe
        return [f"the quality filter removed no prompt: every quality_hat is {q.min():.3g}, so no quality probe was "
                "fitted (the score stage's note says why: no quality column mapped, or too few labelled prompts of a "
                "class); the saerl order equals the order_only arm's and filter_only trains on vanilla's pool"]
    spread = (f"quality_hat ranges {q.min():.3g} to {q.max():.3g}, median {q.median():.3g}" if q.len()
              else "no prompt has a quality_hat")
    return [f"the quality filter removed no prompt: every quality_hat is at or above score.quality_threshold="
            f"{quality_threshold:g} ({spread}), so the saerl order equals the order_only arm's and filter_only "
            "trains on vanilla's pool; to filter, raise score.quality_threshold into that range"]


def short_order_notes(orders: dict[str, pl.DataFrame], batch_size: int, pool: int) -> list[str]:
    """A note per order (arm name -> ORDER_SCHEMA frame) that cannot fill one batch: an empty one (training that
    arm fails; found only at its first step before), or one of fewer distinct prompts than curriculum.batch_size
    (an order with no whole batch is read as it is, so every step repeats prompts). in: orders, B, the pool's
    prompts; out: notes."""
    notes = []
    for arm, order in orders.items():
        distinct = order["id"].n_unique()
        if distinct == 0:
            notes.append(f"the {arm} order is empty: the quality filter (score.quality_threshold) or the difficulty "
                         f"cap (curriculum.max_difficulty_quantile) left none of the {pool} prompts, so training that "
                         "arm fails; lower score.quality_threshold or raise curriculum.max_difficulty_quantile")
        elif distinct < batch_size:
            notes.append(f"the {arm} order holds {distinct} prompts, fewer than curriculum.batch_size={batch_size}: "
                         f"every training step repeats prompts; set curriculum.batch_size={distinct} or less, or add "
                         "prompts")
    return notes


def quality_pool(scores: pl.DataFrame, cfg: CurriculumConfig, quality_threshold: float) -> pl.DataFrame:
    """`scores` with kept (:func:`quality_kept`), less the rows not kept when cfg.filter_quality: the
    prompts the order reads before the difficulty cap."""
    pool = scores.with_columns(quality_kept(scores, quality_threshold))
    return pool.filter(pl.col("kept")) if cfg.filter_quality else pool


def check_clusters(scores: pl.DataFrame) -> None:
    """Refuse scores whose cluster column is missing, null or negative on some row: an order's `home` column marks
    a batch with no home cluster (mix_ratio 1) as -1, and a null cluster has no queue. in: scores; raises ValueError
    naming the first such rows' ids."""
    if "cluster" not in scores.columns:
        raise ValueError(f"scores has no cluster column (columns: {scores.columns}): the curriculum batches by it; "
                         "give every prompt a cluster id >= 0 (one cluster: 0 everywhere)")
    cluster = pl.col("cluster").cast(pl.Float64, strict=False)
    bad = scores.filter(cluster.is_null() | cluster.is_nan() | (cluster < 0))
    if bad.height:
        raise ValueError(f"{bad.height} of {scores.height} rows of scores have a missing or negative cluster (first "
                         f"ids: {bad['id'].head(5).to_list()}, clusters: {bad['cluster'].head(5).to_list()}): give "
                         "each a cluster id >= 0 (a clusterer's noise label, -1, as a cluster of its own)")


def build_order(scores: pl.DataFrame, cfg: CurriculumConfig, quality_threshold: float,
                seed: int | None = None, budget: int | None = None) -> pl.DataFrame:
    """The SAERL order (ORDER_SCHEMA) from `scores` (id, cluster, difficulty_hat, quality_hat).

    kept is quality_hat >= `quality_threshold` (score.quality_threshold, :func:`quality_kept`); with
    cfg.filter_quality, rows not kept are dropped; then prompts over cfg.max_difficulty_quantile of difficulty_hat (:func:`within_reach`).
    Every kept prompt is visited once per epoch (cfg.epochs). `budget` is the prompts the run trains on
    (train.max_steps x curriculum.batch_size, saerl.runners.run_prompts): where the order is fitted to the run
    (:func:`fits_budget`: cfg.fit_budget with a climbing ordering) each epoch is read as ramps of at most `budget`
    prompts (:func:`ramps`), as the curriculum stage builds it; otherwise as one ramp, the whole pool, and `budget`
    is not read. Each ramp builds cluster-first batches as described in :func:`_epoch`, rotating home clusters per
    cfg.rotation; each cluster is read per cfg.ordering (:func:`_queues`). Epochs
    use independent draws of one generator seeded by `seed` (default cfg.seed), so the order is deterministic.
    Raises ValueError when the order is fitted to the run and no budget is given (:func:`budget_problem`), or when
    a cluster is missing or negative (-1 is the order's "no home cluster" mark)."""
    require_section(cfg, "curriculum", "build_order")
    if not isinstance(scores, pl.DataFrame):
        raise TypeError(f"build_order takes the scores as a polars DataFrame, not a {type(scores).__name__}: read the "
                        "score artifact's scores.parquet with pl.read_parquet (pl.from_pandas for a pandas frame)")
    if problem := budget_problem(cfg, budget):
        raise ValueError(problem)
    check_clusters(scores)
    budget = budget if fits_budget(cfg) else None
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    pool = within_reach(quality_pool(scores, cfg, quality_threshold), cfg.max_difficulty_quantile)
    pool = pool.with_columns(pl.col("id").cast(pl.String), pl.col("cluster").cast(pl.Int64),
                             pl.col("difficulty_hat").cast(pl.Float64))
    parts: list[pl.DataFrame] = []
    batch0 = 0
    for epoch in range(cfg.epochs):
        for ramp, rows_of in enumerate(ramps(pool, cfg, rng, budget) if pool.height else []):
            sub = pool[rows_of]
            visits = _epoch(sub, cfg, rng)
            rows = sub[[i for i, _ in visits]].select("id", "cluster", "difficulty_hat", "kept")
            n_batches = -(-len(visits) // cfg.batch_size)
            parts.append(rows.with_columns(
                batch=pl.Series(batch0 + np.arange(len(visits)) // cfg.batch_size, dtype=pl.Int64),
                epoch=pl.lit(epoch, pl.Int64), home=pl.Series([c for _, c in visits], dtype=pl.Int64),
                ramp=pl.lit(ramp, pl.Int64)))
            batch0 += n_batches
    return _finish(parts)


def whole_batch_rows(order: pl.DataFrame, batch_size: int) -> pl.DataFrame:
    """The rows of `order` (ORDER_SCHEMA) RL reads, one optimizer step per batch: every batch of `batch_size`
    rows, in position order. A shorter batch (an epoch's last) is left out: read through, it would shift
    every later step across two of the curriculum's batches (the next epoch, or the order read again when
    it is shorter than the run), losing the cluster-first grouping. At most batch_size - 1 prompts per epoch
    are left out; an order with no whole batch is read as it is. in: order frame, B; out: its kept rows."""
    order = order.sort("position")
    sizes = order.group_by("batch").len()
    whole = order.join(sizes.filter(pl.col("len") == batch_size).select("batch"), on="batch", how="semi",
                       maintain_order="left")
    return whole if whole.height else order


def whole_batches(order: pl.DataFrame, batch_size: int) -> list[str]:
    """The ids of :func:`whole_batch_rows`, in the order RL reads them. in: order frame, B; out: ids."""
    return whole_batch_rows(order, batch_size)["id"].cast(pl.String).to_list()


def step_cluster_share(trained: pl.DataFrame, order: pl.DataFrame, prompts_per_step: int) -> float | None:
    """How cluster-first the steps of a run were: per optimizer step, the share of its prompts that come from its
    most common cluster, averaged over steps. `trained` lists the prompts trained on in order, each at its
    generation batch's first step (trained_order.parquet); a generation batch's prompts go to its steps in that
    order, `prompts_per_step` each (under DAPO a step's kept prompts). Read on the order itself (position, id as
    step) it gives the designed share; under DAPO, refills from the next batches lower it.
    in: trained (step, id, in order), the arm's order (id, cluster), prompts per step; out: mean share, or None
    when nothing was trained."""
    if trained.height == 0:
        return None
    clusters = order.select(pl.col("id").cast(pl.String), "cluster").unique("id")
    steps = (trained.with_columns(pl.col("id").cast(pl.String),
                                  part=pl.int_range(pl.len()).over("step") // prompts_per_step)
             .join(clusters, on="id", how="left")
             .group_by("step", "part", "cluster").len()
             .group_by("step", "part").agg(share=pl.col("len").max() / pl.col("len").sum()))
    return float(steps["share"].mean())


def home_share(order: pl.DataFrame, batch_size: int) -> float | None:
    """How much of its whole batches an order (ORDER_SCHEMA) took from their home clusters: the mean over whole
    batches (:func:`whole_batch_rows`) with a home cluster of the share of their prompts from it. The design asks
    round(B * (1 - mix_ratio)) / B; it is exceeded where the other clusters ran out (unbalanced clusters under
    round_robin rotation: the last batches of the big clusters are all home). None without such a batch (mix_ratio
    1, or an empty order). in: order, B; out: the share."""
    rows = whole_batch_rows(order, batch_size).filter(pl.col("home") >= 0)
    if rows.is_empty():
        return None
    per = rows.group_by("batch").agg((pl.col("cluster") == pl.col("home")).mean().alias("share"))
    return float(per["share"].mean())


def _finish(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate epoch parts, number positions 0..n-1 and fix column order and types (ORDER_SCHEMA)."""
    if not parts or sum(p.height for p in parts) == 0:
        return pl.DataFrame(schema=ORDER_SCHEMA)
    df = pl.concat(parts, how="vertical_relaxed")
    df = df.with_columns(position=pl.int_range(0, df.height, dtype=pl.Int64))
    return df.select([pl.col(c).cast(t) for c, t in ORDER_SCHEMA.items()])


def vanilla_order(ids: Any, epochs: int, seed: int, batch_size: int) -> pl.DataFrame:
    """The vanilla arm's order (ORDER_SCHEMA): the whole unfiltered pool, a fresh seeded shuffle per epoch,
    batches of `batch_size` within an epoch (an epoch's last batch can be short); cluster = home = -1,
    difficulty_hat null, kept True."""
    ids = pl.Series("id", list(ids)).cast(pl.String)
    rng = np.random.default_rng(seed)
    parts, batch0 = [], 0
    for epoch in range(epochs):
        n = len(ids)
        parts.append(pl.DataFrame({
            "id": ids.gather(rng.permutation(n)), "cluster": [-1] * n, "difficulty_hat": [None] * n,
            "kept": [True] * n, "epoch": [epoch] * n, "home": [-1] * n, "ramp": [0] * n,
            "batch": batch0 + np.arange(n) // batch_size}, schema_overrides={"difficulty_hat": pl.Float64}))
        batch0 += -(-n // batch_size)
    return _finish(parts)
