"""Scoring and curriculum at scale: N prompts of synthetic SAE codes through the score and curriculum steps.

Builds, chunk by chunk (memory stays flat while writing), the encode stage's ``codes.zarr`` through its own
helpers (:func:`saerl.sae.create_codes_store`, :func:`saerl.sae.write_codes_chunk`) with structure like real
codes: top-K sparse codes over D features, LATENT_TOPICS latent topics each with its own signature features (so
clusters exist), background features drawn from a power law (Zipf) over all features, a block of features whose
strength follows difficulty and two that light up on bad prompts. Beside it, a prompts table in which a small
labelled subset (``--labelled`` rows) carries difficulty and quality labels and a coarse topic.

Then it runs what the score and curriculum stages run: :func:`saerl.sae.load_codes_csr`,
:func:`saerl.scoring.score_prompts` (MiniBatchKMeans above score.minibatch_above; the difficulty and quality
models fit on the labelled subset only and predict every row in batches; the report's baselines on a seeded
sample) and :func:`saerl.curriculum.build_order`. Plots are not drawn (the runner's figures are not part of
this measure). It prints each step's wall time and the peak RSS so far (``ru_maxrss``). Then, side by side, it
times the difficulty regressors (:func:`saerl.property_models.fit_difficulty`) on the labelled rows with
``score.dense_fit_mb=0`` (always sparse) and with the default budget, which fits the elastic net on a dense
copy when the rows outnumber the features; once on this world's labelled rows (more features than rows: both
stay sparse) and once on a second world of TALL_D_SAE features (as the testbed's codes: the dense copy applies),
and checks that both give the same predictions. The two fits alternate, ``--repeats`` rounds (default 3, --quick 2)
of sparse then default, so that load on a shared machine falls on both alike; each side's seconds per round are
printed. Last line: ``RESULT prompts=<n> wall_s=<x> peak_rss_gb=<x> dense_fit_speedup=<x>
dense_fit_speedup_wide=<x>`` (wall time of loading, scoring and the curriculum; building the synthetic data and
the side-by-side fits are apart; each speedup is the median over the rounds of the always-sparse fit's seconds
over the default's: the tall world's, and this world's, where it should stay near 1).

    .venv/bin/python benchmarks/scale.py --quick          # 100k prompts
    .venv/bin/python benchmarks/scale.py                  # 1,000,000 prompts
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from sides import interleaved, median_ratio, seconds_text
from sklearn.exceptions import ConvergenceWarning

from saerl.config import CurriculumConfig, ScoreConfig
from saerl.curriculum import build_order, share_kept
from saerl.property_models import fit_difficulty
from saerl.runners import counting_unconverged
from saerl.sae import CODES_NAME, create_codes_store, load_codes_csr, write_codes_chunk
from saerl.scoring import property_report, score_prompts, summarize_report

FULL_PROMPTS = 1_000_000
QUICK_PROMPTS = 100_000
D_SAE = 16_384
TALL_D_SAE = 1_024  # the side-by-side fit's second world: fewer features than labelled rows (as the testbed's codes)
TOP_K = 64
CHUNK_ROWS = 8_192  # prompts per Zarr chunk (the encode stage's resume unit)
LATENT_TOPICS = 256  # latent structure the clusters should find
TOPIC_GROUP = 16  # latent topics per coarse labelled topic (a data set's subject labels are coarser)
SIGNATURE = 48  # features characteristic of one latent topic
FROM_SIGNATURE = 36  # of the top-K slots, this many come from the prompt's topic signature
DIFFICULTY_FEATURES = 8  # features whose strength follows difficulty
DEFECT_FEATURES = 2  # features that fire on bad prompts
BAD_SHARE = 0.15  # share of bad prompts
ZIPF_EXPONENT = 1.1  # background feature frequencies ~ rank^-exponent
TOPIC_SIZE_EXPONENT = 0.8  # latent topic sizes ~ rank^-exponent
LABELLED = 2_000  # rows with difficulty and quality labels (a fixed budget, independent of N)
SEED = 0
WORDS = np.array("how many apples does a farmer sell each day if she buys twice as much and gives away half of"
                 " the rest what is the total cost in dollars per week".split())
KB_PER_GB = 1024**2  # ru_maxrss is in KiB on Linux
DEFAULT_REPEATS = 3  # interleaved rounds of the side-by-side difficulty fits (sparse, default, sparse, ...)
QUICK_REPEATS = 2


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KB_PER_GB


def power_law(n: int, exponent: float) -> np.ndarray:
    """Probabilities over n items proportional to rank^-exponent."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return p / p.sum()


class CodeWorld:
    """The latent structure behind the synthetic codes: topic sizes, topic signatures, the background feature
    distribution, and the difficulty and defect features (disjoint from each other)."""

    def __init__(self, rng: np.random.Generator, d_sae: int = D_SAE) -> None:
        features = rng.permutation(d_sae)
        n_special = DIFFICULTY_FEATURES + DEFECT_FEATURES
        self.difficulty = features[:DIFFICULTY_FEATURES]
        self.defect = features[DIFFICULTY_FEATURES:n_special]
        pool = features[n_special:]
        self.signatures = np.stack([rng.choice(pool, SIGNATURE, replace=False) for _ in range(LATENT_TOPICS)])
        self.topic_p = power_law(LATENT_TOPICS, TOPIC_SIZE_EXPONENT)[rng.permutation(LATENT_TOPICS)]
        self.background_cdf = np.cumsum(power_law(len(pool), ZIPF_EXPONENT))
        self.background = pool[rng.permutation(len(pool))]

    def chunk(self, rng: np.random.Generator, m: int) -> dict[str, np.ndarray]:
        """m prompts: latent topic, difficulty in [0, 1], bad flag, and top-K codes (feature ids [m, K] int32,
        strongest first, -1 in empty slots; values [m, K] float32, 0 in empty slots). The value scales are
        illustrative: strong signature features, weaker background ones, difficulty features proportional to
        difficulty, defect features only on bad prompts."""
        topic = rng.choice(LATENT_TOPICS, m, p=self.topic_p)
        difficulty = rng.beta(2.0, 2.0, m)
        bad = rng.random(m) < BAD_SHARE
        n_back = TOP_K - FROM_SIGNATURE - DIFFICULTY_FEATURES - DEFECT_FEATURES
        pick = np.argsort(rng.random((m, SIGNATURE)), axis=1)[:, :FROM_SIGNATURE]
        sig = np.take_along_axis(self.signatures[topic], pick, axis=1)
        back_rank = np.minimum(np.searchsorted(self.background_cdf, rng.random((m, n_back))), len(self.background) - 1)
        ids = np.concatenate([sig, self.background[back_rank], np.broadcast_to(self.difficulty, (m, DIFFICULTY_FEATURES)),
                              np.broadcast_to(self.defect, (m, DEFECT_FEATURES))], axis=1)
        vals = np.concatenate([rng.exponential(1.0, (m, FROM_SIGNATURE)) + 0.5, rng.exponential(0.4, (m, n_back)),
                               np.clip(2.0 * difficulty[:, None] + rng.normal(0, 0.2, (m, DIFFICULTY_FEATURES)), 0, None),
                               np.where(bad[:, None], rng.uniform(1.5, 2.5, (m, DEFECT_FEATURES)), 0.0)], axis=1)
        order = np.lexsort((-vals, ids), axis=1)  # per row: by feature id, strongest copy first
        ids, vals = np.take_along_axis(ids, order, 1), np.take_along_axis(vals, order, 1)
        vals[:, 1:][ids[:, 1:] == ids[:, :-1]] = 0.0  # a feature drawn twice keeps its strongest value
        order = np.argsort(-vals, axis=1, kind="stable")
        ids, vals = np.take_along_axis(ids, order, 1), np.take_along_axis(vals, order, 1)
        ids[vals <= 0] = -1
        return {"topic": topic, "difficulty": difficulty, "bad": bad, "feature_ids": ids.astype(np.int32),
                "values": np.where(vals > 0, vals, 0.0).astype(np.float32)}


def prompt_texts(rng: np.random.Generator, m: int, lo: int) -> list[str]:
    """m short synthetic prompt texts of varied length, unique by their number, unrelated to the codes."""
    lengths = rng.integers(6, 30, m)
    words = WORDS[rng.integers(0, len(WORDS), int(lengths.sum()))]
    return [f"Problem {lo + i}: " + " ".join(w) for i, w in enumerate(np.split(words, np.cumsum(lengths)[:-1]))]


def build_data(n: int, folder: Path, labelled: int, d_sae: int = D_SAE) -> pl.DataFrame:
    """Write codes.zarr for n prompts over d_sae features into `folder` chunk by chunk and return the prompts
    table (id, prompt, answer, topic, labelled; difficulty and quality on the labelled rows only, null elsewhere)."""
    rng = np.random.default_rng(SEED)
    world = CodeWorld(rng, d_sae)
    labelled_rows = np.zeros(n, dtype=bool)
    labelled_rows[rng.choice(n, min(labelled, n), replace=False)] = True
    group = create_codes_store(folder / CODES_NAME, n, d_sae, TOP_K, "max", CHUNK_ROWS, f"synthetic-{n}")
    parts = []
    for lo in range(0, n, CHUNK_ROWS):
        m = min(CHUNK_ROWS, n - lo)
        c = world.chunk(rng, m)
        ids = [f"p{i:08d}" for i in range(lo, lo + m)]
        write_codes_chunk(group, lo, c["feature_ids"], c["values"], ids=ids)
        lab = labelled_rows[lo: lo + m]
        parts.append(pl.DataFrame({
            "id": ids, "prompt": prompt_texts(rng, m, lo), "answer": ["1"] * m,
            "topic": [f"subject{t // TOPIC_GROUP}" for t in c["topic"]], "labelled": lab,
            "difficulty": np.where(lab, c["difficulty"], np.nan), "quality": np.where(lab, (~c["bad"]).astype(float), np.nan),
        }).with_columns(pl.col("difficulty", "quality").fill_nan(None)))
    return pl.concat(parts)


def scale_score_config() -> ScoreConfig:
    """Score settings for a large pool: k chosen by silhouette on a sample, smaller CV grids (the models fit
    on the labelled subset only, so their cost does not grow with N)."""
    return ScoreConfig(n_clusters="auto", k_range=(8, 24), kmeans_n_init=3, cv_folds=3, enet_n_alphas=10,
                       enet_l1_ratios=[0.5, 1.0], enet_max_iter=1000, probe_cs=[0.1, 1.0, 10.0])


def dense_fit_speedup(X: object, ids: list[str], prompts: pl.DataFrame, cfg: ScoreConfig,
                      repeats: int = DEFAULT_REPEATS) -> tuple[list[float], list[float], float]:
    """Seconds of fit_difficulty on the labelled rows' sparse codes (dense_fit_mb=0) and on a dense copy (cfg's
    budget), interleaved in this process for `repeats` rounds (sparse, default, sparse, default, ...: load on a
    shared machine falls on both alike), and the largest difference of their predictions on those rows over every
    round. out: (sparse seconds per round, default seconds per round, largest difference)."""
    table = pl.DataFrame({"id": pl.Series(list(ids), dtype=pl.String)}).join(prompts, on="id", how="left",
                                                                           maintain_order="left")
    rows = table["labelled"].to_numpy() & table["difficulty"].is_not_null().to_numpy()
    y = table["difficulty"].fill_null(np.nan).to_numpy()
    def fit(mb: float) -> Callable[[], tuple[float, np.ndarray]]:
        def run() -> tuple[float, np.ndarray]:  # (seconds, predictions on the labelled rows)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t = time.perf_counter()
                _, model = fit_difficulty({"sae": X}, y, rows, "sae", cfg.model_copy(update={"dense_fit_mb": mb}))
                seconds = time.perf_counter() - t
            return seconds, model.predict(X[rows])  # type: ignore[index]
        return run

    rounds = interleaved({"sparse": fit(0.0), "default": fit(cfg.dense_fit_mb)}, repeats)
    diff = max(float(np.abs(a - b).max()) for _, a in rounds["sparse"] for _, b in rounds["default"])
    return [s for s, _ in rounds["sparse"]], [s for s, _ in rounds["default"]], diff


def main() -> None:
    """Run the scale benchmark with the command line's arguments (see the module's docstring); prints its RESULT line last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PROMPTS:,} prompts instead of {FULL_PROMPTS:,}")
    parser.add_argument("--prompts", type=int, default=None, help="number of prompts (overrides --quick)")
    parser.add_argument("--labelled", type=int, default=LABELLED, help="rows with difficulty/quality labels")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write codes.zarr (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=None, help=f"interleaved rounds of the side-by-side difficulty "
                        f"fits (default {DEFAULT_REPEATS}, --quick {QUICK_REPEATS}); the speedups are medians")
    args = parser.parse_args()
    repeats = args.repeats if args.repeats is not None else QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if repeats < 1:
        raise SystemExit(f"--repeats {repeats}: give 1 or more rounds")
    n = args.prompts or (QUICK_PROMPTS if args.quick else FULL_PROMPTS)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="saerl-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        prompts = build_data(n, workdir, args.labelled)
        print(f"built synthetic codes for {n:,} prompts ({TOP_K} of {D_SAE:,} features, {LATENT_TOPICS} latent "
              f"topics) in {time.perf_counter() - started:.1f} s; peak RSS {peak_rss_gb():.2f} GB", flush=True)

        t0 = time.perf_counter()
        ids, X = load_codes_csr(workdir)
        print(f"load codes: {time.perf_counter() - t0:.1f} s, {X.nnz:,} nonzeros; peak RSS {peak_rss_gb():.2f} GB",
              flush=True)
        t1 = time.perf_counter()
        with counting_unconverged() as unconverged:  # as the score runner: counted, not printed
            result = score_prompts(X, prompts, scale_score_config(), ids=ids)
            report = property_report(X, prompts, scale_score_config(), result.scores, ids=ids, k=result.params["k"])
        kept = share_kept(result.scores, scale_score_config().quality_threshold)  # the curriculum's filter
        print(f"score + property report: {time.perf_counter() - t1:.1f} s, k={result.params['k']}, kept "
              f"{kept:.3f}, {unconverged.count} fits stopped at max_iter; peak RSS "
              f"{peak_rss_gb():.2f} GB", flush=True)
        print(summarize_report(report.report), flush=True)
        wall = time.perf_counter() - t0
        wide = dense_fit_speedup(X, ids, prompts, scale_score_config(), repeats)
        del X
        t2 = time.perf_counter()
        # one ramp of the whole pool, as this benchmark has always timed (no run size to fit the order to)
        order = build_order(result.scores, CurriculumConfig(batch_size=32, fit_budget=False), quality_threshold=0.5)
        print(f"curriculum: {time.perf_counter() - t2:.1f} s, {order.height:,} visits in "
              f"{order['batch'].n_unique():,} batches; peak RSS {peak_rss_gb():.2f} GB", flush=True)
        wall += time.perf_counter() - t2
        tall_dir = workdir / "tall"
        tall_prompts = build_data(args.labelled, tall_dir, args.labelled, TALL_D_SAE)
        tall_ids, tall_X = load_codes_csr(tall_dir)
        tall = dense_fit_speedup(tall_X, tall_ids, tall_prompts, scale_score_config(), repeats)
        for name, (sparse_s, default_s, diff), d in (("wide", wide, D_SAE), ("tall", tall, TALL_D_SAE)):
            print(f"difficulty fits, {args.labelled:,} labelled rows x {d:,} features ({name}), {repeats} rounds: "
                  f"always sparse {seconds_text(sparse_s)} s, default {seconds_text(default_s)} s (median ratio "
                  f"{median_ratio(sparse_s, default_s):.2f}); largest prediction difference {diff:.2g}", flush=True)
        print(f"RESULT prompts={n} wall_s={wall:.1f} peak_rss_gb={peak_rss_gb():.2f} "
              f"dense_fit_speedup={median_ratio(tall[0], tall[1]):.2f} "
              f"dense_fit_speedup_wide={median_ratio(wide[0], wide[1]):.2f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
