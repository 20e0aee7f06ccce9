"""Score and properties stages: clusters, difficulty and quality per prompt from pooled SAE codes
(:func:`score_prompts`, what the curriculum reads), and how good those models are beside baselines
(:func:`property_report`, what a person reads).

Inputs: ``X`` (CSR [n_prompts, d_sae], non-negative pooled top-K codes, rows aligned to ``ids``), the prompts
frame (id, prompt, answer, optional topic / difficulty / quality / labelled), optionally measured pass rates
(frame id, pass_rate) and dense mean-pooled residuals ``R`` [n_prompts, d_model] for the no-SAE baseline (and
``RD``, the residual poolings its difficulty model chooses from, as the SAE's chooses from ``D``).

Every supervised property model is fitted on a labelled subset only. The report fits the same model family, with
the same hyper-parameter search, on the same train rows with each feature set (``FEATURES``) and scores it on rows
no supervised fit of the report read. The unsupervised parts see every pool prompt, the report's test rows and
held-out topics included: the SAE dictionary (trained upstream on a token sample of every pool prompt), the
clusters' IDF weights, k-means and the silhouette-chosen k. The report's rows score the procedure (choice of
pooling, family and penalty made again on the report's train rows, ``model`` / ``pool`` columns), not the
production model fitted on every labelled row (ScoreResult.params names that one).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.special import expit
from sklearn import metrics
from sklearn.base import clone
from sklearn.preprocessing import StandardScaler, normalize

from saerl.config import ScoreConfig, require_section
from saerl.curriculum import NO_PROBE_QUALITY
from saerl.data import GOOD_QUALITY
from saerl.property_models import (
    MIN_CLASS_ROWS,
    FitOptions,
    alpha_edge,
    choose_k,
    chosen_alpha,
    cluster_table,
    code_idf,
    cv_mse,
    featurizer,
    fit_difficulty,
    fit_kmeans,
    fit_options,
    kmeans,
    linear_weights,
    model_family,
    nearest_centroid,
    predict_rows,
    probe_fittable,
    probe_model,
    report_rows,
    seeded_subset,
    spearman,
    text_analyzer,
    weight_codes,
)

if TYPE_CHECKING:
    from saerl.runs import RunRecord

FEATURES = ("sae", "residual", "text", "length", "majority")
# the non-SAE models; "shuffled" (the SAE clusters permuted) is a chance level, not a baseline
BASELINES = tuple(f for f in FEATURES if f != "sae")
# model: the fitted model family (difficulty: elasticnet / ridge / mean, as chosen by CV error; quality, topic:
# logistic / prior; clusters: kmeans / one cluster / permuted); pool: the pooling a difficulty model was chosen to
# read (sae: a key of D, residual: a key of RD), for the text baseline the tokens its TF-IDF read (text_analyzer:
# "char_wb1-3" or "word", score.text_analyzer), null for the other feature sets and properties. Out of distribution
# both list the choice of each tested topic fold in fold order, joined by commas ("mean,mean,max").
REPORT_SCHEMA = {"property": pl.String, "metric": pl.String, "features": pl.String, "value": pl.Float64,
                 "n_train": pl.Int64, "n_test": pl.Int64, "model": pl.String, "pool": pl.String}
# PropertyReport.heldout (its id column takes the prompts' id type)
HELDOUT_SCHEMA = {"id": pl.String, "difficulty": pl.Float64, "difficulty_pred": pl.Float64, "model": pl.String,
                  "pool": pl.String}
# difficulty_hat whose standard deviation is at most this share of the labels' reads as (near) constant: a note
# says the curriculum's within-cluster order then carries (almost) no difficulty signal
NEAR_CONSTANT_SPREAD = 0.01
# A best mean cosine silhouette below this reads as clusters with little structure: a prompt's silhouette is
# (b - a) / max(a, b), so at 0.05 its mean distance to its own cluster is still 95% of that to the nearest other one.
# Measured over score.k_range 4..16: the testbed world, whose clusters follow its topics (NMI .49), 0.13 to 0.20;
# ASDiv 0.06 to 0.08; GSM8K through MiniLM 0.024 to 0.029. Kaufman & Rousseeuw's 0.25 ("no substantial structure")
# would flag the testbed world too: pooled sparse codes sit low on that scale.
SILHOUETTE_LOW = 0.05
# A silhouette curve whose spread over the k searched (max - min) is at most this share of its best reads as flat: no
# k separates the prompts clearly better than the others, so the k chosen is close to arbitrary (GSM8K through
# MiniLM: 0.005 of 0.029, 17%; the testbed world 32%, ASDiv 34%). Needs SILHOUETTE_FLAT_MIN_K k searched or more.
SILHOUETTE_FLAT_SHARE = 0.2
SILHOUETTE_FLAT_MIN_K = 3  # fewer k searched make no curve to call flat
CLUSTER_MODELS = {"majority": "one cluster", "shuffled": "permuted"}  # the report's clusterings that are not k-means


# the score artifact's fitted models (ScoreModels: save_score_models / load_score_models): arrays, then the rest
SCORE_MODELS_ARRAYS = "score_models.safetensors"
SCORE_MODELS_META = "score_models.json"
SCORE_MODELS_FORMAT = 1  # the layout of those two files; load_score_models refuses another
SCORES_COLUMNS = ("id", "cluster", "difficulty_hat", "quality_hat")  # scores.parquet's, and ScoreModels.predict's


def scores_frame(ids: Any, cluster: Any, difficulty: np.ndarray, quality: np.ndarray) -> pl.DataFrame:
    """The frame of SCORES_COLUMNS that scores.parquet and ScoreModels.predict hold: one row per prompt, the
    predictions as float64. in: ids, cluster per prompt, difficulty_hat, quality_hat (each [n]); out: the frame."""
    return pl.DataFrame(dict(zip(SCORES_COLUMNS, (ids, cluster, np.asarray(difficulty, dtype=np.float64),
                                                  np.asarray(quality, dtype=np.float64)), strict=True)))


@dataclass(frozen=True)
class ScoreModels:
    """The score stage's fitted models in plain arrays (no pickle): what places a new prompt's pooled SAE codes in
    the run's clusters and gives its difficulty_hat and quality_hat (:meth:`predict`), as score_prompts scored the
    pool. Every array is float64 over the SAE's d_sae features.

    centroids [k, d_sae]: k-means' centroids in the weighted space (codes of `cluster_pool`, TF-IDF weighted by
    `idf` when not None (score.tfidf), L2-normalised: weight_codes); a row's cluster is its nearest centroid
    (Euclidean, as k-means assigns). difficulty_weights [d_sae] / difficulty_intercept: the whole difficulty
    pipeline (its MaxAbsScaler folded in: linear_weights) on `difficulty_pool` codes, difficulty_hat = x @ w + b
    (nothing clipped, as predict_rows gives it); `difficulty_model` its family. quality_weights [d_sae] /
    quality_intercept: the quality probe's log-odds on `quality_pool` codes, quality_hat = sigmoid(x @ w + b); both
    None when no probe was fitted (no usable quality labels), and quality_hat is then NO_PROBE_QUALITY."""

    centroids: np.ndarray
    idf: np.ndarray | None
    cluster_pool: str
    difficulty_pool: str
    difficulty_weights: np.ndarray
    difficulty_intercept: float
    difficulty_model: str
    quality_pool: str
    quality_weights: np.ndarray | None = None
    quality_intercept: float | None = None

    def __repr__(self) -> str:
        """One line: k, width, poolings, families (not the arrays)."""
        probe = "a quality probe" if self.quality_weights is not None else f"no quality probe ({NO_PROBE_QUALITY:g})"
        return (f"ScoreModels(k={self.k}, d_sae={self.d_sae}, tfidf={self.idf is not None}, cluster_pool="
                f"{self.cluster_pool!r}, difficulty={self.difficulty_model} on {self.difficulty_pool!r}, {probe} on "
                f"{self.quality_pool!r})")

    @property
    def k(self) -> int:
        """The number of clusters."""
        return int(self.centroids.shape[0])

    @property
    def d_sae(self) -> int:
        """The SAE width the models read."""
        return int(self.centroids.shape[1])

    @property
    def pools(self) -> list[str]:
        """The code poolings predict reads (cluster, difficulty, quality; each once)."""
        return list(dict.fromkeys([self.cluster_pool, self.difficulty_pool, self.quality_pool]))

    def predict(self, codes_by_pool: dict[str, sp.spmatrix], ids: Sequence[Any]) -> pl.DataFrame:
        """Score rows of pooled SAE codes with the fitted models. in: {pooling: codes [n, d_sae]} holding every
        pooling of `pools` (rows aligned to `ids`, as saerl.sae.load_codes_csr reads them from an encode store),
        the n ids; out: a frame (id, cluster, difficulty_hat, quality_hat) in the ids' order, scores.parquet's
        columns. A pooling missing, a matrix of other rows or width, or non-finite codes are a ValueError."""
        ids = list(ids)
        missing = [pool for pool in self.pools if pool not in codes_by_pool]
        if missing:
            raise ValueError(f"the score models read the poolings {self.pools}; codes_by_pool lacks {missing} (encode "
                             "with the run's sae.encode_pool)")
        codes = {pool: sp.csr_matrix(codes_by_pool[pool]) for pool in self.pools}
        for pool, M in codes.items():
            if M.shape != (len(ids), self.d_sae):
                raise ValueError(f"the {pool} codes are {M.shape[0]} x {M.shape[1]}, the models need {len(ids)} rows "
                                 f"(one per id) x {self.d_sae} features (the run's SAE width)")
            check_finite(M, pool, ids)
        Z = weight_codes(codes[self.cluster_pool], self.idf is not None, self.idf)
        cluster = nearest_centroid(Z, self.centroids)
        difficulty = np.asarray(codes[self.difficulty_pool] @ self.difficulty_weights).ravel() + self.difficulty_intercept
        if self.quality_weights is None:
            quality = np.full(len(ids), NO_PROBE_QUALITY, dtype=np.float64)
        else:
            logit = np.asarray(codes[self.quality_pool] @ self.quality_weights).ravel() + self.quality_intercept
            quality = expit(logit)
        return scores_frame(ids, cluster, difficulty, quality)


def save_score_models(models: ScoreModels, folder: str | Path) -> list[Path]:
    """Write `models` into `folder` as SCORE_MODELS_ARRAYS (safetensors: centroids, idf, the weights) and
    SCORE_MODELS_META (JSON: format, poolings, k, d_sae, intercepts, difficulty family); no pickle. in: the models,
    an existing folder (the score stage's build folder); out: the two paths written."""
    from safetensors.numpy import save_file

    arrays = {"centroids": models.centroids, "difficulty_weights": models.difficulty_weights}
    if models.idf is not None:
        arrays["idf"] = models.idf
    if models.quality_weights is not None:
        arrays["quality_weights"] = models.quality_weights
    meta = {"format": SCORE_MODELS_FORMAT, "k": models.k, "d_sae": models.d_sae, "cluster_pool": models.cluster_pool,
            "difficulty_pool": models.difficulty_pool, "difficulty_model": models.difficulty_model,
            "difficulty_intercept": models.difficulty_intercept, "quality_pool": models.quality_pool,
            "quality_intercept": models.quality_intercept, "tfidf": models.idf is not None,
            "quality_probe": models.quality_weights is not None}
    folder = Path(folder)
    paths = [folder / SCORE_MODELS_ARRAYS, folder / SCORE_MODELS_META]
    save_file({name: np.ascontiguousarray(a, dtype=np.float64) for name, a in arrays.items()}, str(paths[0]))
    paths[1].write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return paths


def load_score_models(folder: str | Path) -> ScoreModels:
    """The ScoreModels a score artifact holds (save_score_models' two files in `folder`, e.g. a run's
    ``stages['score'].path``). A folder without them (a score artifact written before the score stage saved its
    models, version 14) or of another format is a ValueError naming the fix."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    arrays_path, meta_path = folder / SCORE_MODELS_ARRAYS, folder / SCORE_MODELS_META
    if not (arrays_path.is_file() and meta_path.is_file()):
        raise ValueError(f"{folder} holds no fitted score models ({SCORE_MODELS_ARRAYS}, {SCORE_MODELS_META}): it is "
                         "not a score artifact, or one written before the score stage saved its models; run the "
                         "pipeline again with the run's config (saerl run <config>) to rebuild its score stage")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != SCORE_MODELS_FORMAT:
        raise ValueError(f"{meta_path} has format {meta.get('format')!r}, this saerl reads {SCORE_MODELS_FORMAT}: "
                         "rebuild the score stage with this saerl")
    arrays = load_file(str(arrays_path))
    return ScoreModels(centroids=arrays["centroids"], idf=arrays.get("idf"), cluster_pool=meta["cluster_pool"],
                       difficulty_pool=meta["difficulty_pool"], difficulty_weights=arrays["difficulty_weights"],
                       difficulty_intercept=float(meta["difficulty_intercept"]),
                       difficulty_model=meta["difficulty_model"], quality_pool=meta["quality_pool"],
                       quality_weights=arrays.get("quality_weights"),
                       quality_intercept=None if meta["quality_intercept"] is None else float(meta["quality_intercept"]))


@dataclass
class ScoreResult:
    """What the curriculum reads, from score_prompts. `scores`: id, cluster, difficulty_hat, quality_hat (one row
    per prompt, X's row order; the quality filter, quality_hat >= score.quality_threshold, is the curriculum
    stage's: saerl.curriculum.quality_kept); `notes`: plain-language caveats; `params`: chosen k, silhouette per k,
    CV'd hyper-parameters and label counts (for MLflow params); `labelled`: the ids of the labelled subset the
    models were fitted on; `models`: the fitted models themselves (ScoreModels: new prompts' codes are scored with
    them, the score stage saves them), None only in a result built by hand."""

    scores: pl.DataFrame
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    labelled: list[Any] = field(default_factory=list)
    models: ScoreModels | None = None


@dataclass
class PropertyReport:
    """What a person reads about the score stage's models, from property_report. `report`: the long property
    report (REPORT_SCHEMA); `clusters`: one row per cluster (size, top SAE features, example prompts, dominant
    true topic); `heldout`: the report's in-distribution SAE difficulty model on its test rows (HELDOUT_SCHEMA:
    id, difficulty = the label (the column, or 1 - pass rate), difficulty_pred = its prediction, model / pool =
    its family and pooling, as in the report's sae spearman_id row), no rows when it was not tested; `notes`:
    plain-language caveats of the report; `labelled`: the ids of the labelled subset score_prompts fits its models
    on (the same inputs give the same subset)."""

    report: pl.DataFrame
    clusters: pl.DataFrame
    heldout: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=HELDOUT_SCHEMA))
    notes: list[str] = field(default_factory=list)
    labelled: list[Any] = field(default_factory=list)


def resolve_difficulty(prompts: pl.DataFrame, measured: pl.DataFrame | None, source: str) -> tuple[np.ndarray, str]:
    """Difficulty labels aligned to `prompts` rows (NaN where unknown) and the source used.

    source "column": the prompts' ``difficulty`` column; "measured": 1 - pass_rate from `measured` (id, pass_rate);
    "auto": the column when it has any value, else measured. Raises ValueError naming the fix when neither exists."""
    has_col = "difficulty" in prompts.columns and prompts["difficulty"].drop_nulls().len() > 0
    has_measured = measured is not None and measured.height > 0
    if source == "auto":
        source = "column" if has_col else "measured"
    if source == "column" and not has_col:
        raise ValueError("score.difficulty_source=column but the prompts have no difficulty values: map "
                         "data.difficulty to a numeric column, or use score.difficulty_source=measured")
    if source == "measured" and not has_measured:
        what = ("score.difficulty_source=measured asks for measured pass rates" if has_col else
                "the prompts' difficulty column (data.difficulty) has no values" if "difficulty" in prompts.columns
                else "the prompts have no difficulty column")
        raise ValueError(f"no difficulty labels: {what} and no measured pass rates were given (map "
                         "data.difficulty to a field with values, or run the label stage to measure pass rates: "
                         "score.difficulty_source=measured, with a labelled subset that is not empty)")
    if source == "column":
        return prompts["difficulty"].cast(pl.Float64).fill_null(np.nan).to_numpy(), "column"
    m = measured.select(pl.col("id").cast(prompts["id"].dtype), (1.0 - pl.col("pass_rate").cast(pl.Float64)).alias("d"))
    joined = prompts.select("id").join(m.unique("id"), on="id", how="left", maintain_order="left")
    return joined["d"].fill_null(np.nan).to_numpy(), "measured"


def _inputs(X: sp.csr_matrix, R: np.ndarray | None, texts: np.ndarray, cfg: ScoreConfig) -> dict[str, Any]:
    """Model inputs per feature set (rows aligned to X); residual only when R is given, baselines only if on."""
    out: dict[str, Any] = {"sae": X}  # every name one of FEATURES: the report's columns and best baseline read those
    if cfg.baselines:
        if R is not None and len(R) != X.shape[0]:
            raise ValueError(f"R has {len(R)} rows but X has {X.shape[0]}: both must follow the ids' order")
        if R is not None:
            out["residual"] = np.asarray(R)
        lengths = np.log1p(np.array([len(t) for t in texts], dtype=np.float64))[:, None]
        out.update(text=texts, length=lengths, majority=np.zeros((len(texts), 1)))
    return out


# how each baseline's features are prepared for the same k-means as the SAE's (_cluster_report): centred,
# L2-normalised residuals; the text's TF-IDF; standardised log length
CLUSTER_FEATURES: dict[str, Callable[[Any, ScoreConfig], Any]] = {
    "residual": lambda M, cfg: normalize(M - M.mean(axis=0)),
    "text": lambda M, cfg: featurizer("text", cfg).fit_transform(M),
    "length": lambda M, cfg: StandardScaler().fit_transform(M),
}


def _cluster_report(labels: np.ndarray, inputs: dict[str, Any], topics: np.ndarray, k: int,
                    cfg: ScoreConfig) -> list[dict[str, Any]]:
    """NMI / ARI / purity of clusters vs true topics for SAE k-means, the same k-means on each baseline's
    features (centred, L2-normalised residuals; text TF-IDF; log length), one cluster (majority) and the SAE
    labels shuffled (chance). Every clustering has the SAE's k (silhouette-chosen on the SAE codes, or fixed), not a
    k of its own, deliberately: NMI and ARI depend on the number of clusters, so equal k keeps them comparable
    (on the demo world the residuals' own silhouette k, 14 instead of 16, moved their NMI by .01). Above cfg.minibatch_above prompts, all of it on a seeded sample of that many rows
    (report_rows): the SAE labels are the whole pool's, restricted to the sample. No rows (no metric) when no
    prompt of the sample has a topic (topics on a few prompts of a big pool)."""
    rows = report_rows(len(labels), cfg)
    if len(rows) < len(labels):
        labels, topics = labels[rows], topics[rows]
        inputs = {name: M[rows] for name, M in inputs.items()}
    has = topics != ""
    if not has.any():
        return []
    found = {"sae": labels}
    if cfg.baselines:
        for name, M in inputs.items():
            if name in ("sae", "majority"):  # the SAE's own labels above; one cluster below
                continue
            if name not in CLUSTER_FEATURES:  # a baseline added to _inputs alone left the cluster rows silently
                raise ValueError(f"baseline {name!r} has no clustering input in saerl.scoring.CLUSTER_FEATURES: add "
                                 "how its features are prepared for k-means there")
            found[name] = kmeans(CLUSTER_FEATURES[name](M, cfg), k, cfg)
        found["majority"] = np.zeros(len(labels), dtype=np.int64)
        found["shuffled"] = np.random.default_rng(cfg.seed).permutation(labels)
    rows = []
    for name, lab in found.items():
        cm = metrics.cluster.contingency_matrix(topics[has], lab[has])  # purity: majority topic per cluster
        values = {"nmi": metrics.normalized_mutual_info_score(topics[has], lab[has]),
                  "ari": metrics.adjusted_rand_score(topics[has], lab[has]), "purity": cm.max(axis=0).sum() / cm.sum()}
        model = CLUSTER_MODELS.get(name, "kmeans")
        pool = text_analyzer(cfg) if name == "text" else None
        rows += [dict(property="topic_clusters", metric=m, features=name, value=float(v), n_train=len(labels),
                      n_test=int(has.sum()), model=model, pool=pool) for m, v in values.items()]
    return rows


def auroc_by_kind(good: np.ndarray, p_good: np.ndarray, kinds: np.ndarray) -> dict[str, float]:
    """AUROC of P(good) separating the good rows from the bad rows of each defect kind (rows aligned; bad rows'
    kinds name them): {'auroc_<kind>': value} for every kind present among the bad rows."""
    out = {}
    for kind in sorted(set(kinds[good == 0].tolist())):
        rows = (good == 1) | (kinds == kind)
        if (good[rows] == 1).any():
            out[f"auroc_{kind}"] = float(metrics.roc_auc_score(good[rows], p_good[rows]))
    return out


def _model_rows(prop: str, inputs: dict[str, Any], y: np.ndarray, train: np.ndarray, test: np.ndarray,
                cfg: ScoreConfig, suffix: str = "", kinds: np.ndarray | None = None, fit: FitOptions | None = None,
                predictions: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Fit each feature set's model on `train` rows and score it on `test` rows (boolean masks): difficulty
    (Spearman rho; a feature set given as {key: matrix} is fitted on each, and the lowest CV error on the
    train rows picks the one tested, as in production: fit_difficulty), quality (AUROC of P(good); average
    precision of finding bad prompts by 1 - P(good); with defect `kinds`, the AUROC per kind), topic
    (held-out accuracy of a topic probe: is topic linearly decodable). Each row names its model family and, for
    a difficulty feature set given as {key: matrix}, the key chosen (REPORT_SCHEMA's model, pool). `fit`: how the
    difficulty elastic nets are computed (default fit_options(cfg)). `predictions`, when given, receives each
    difficulty model's predictions on the test rows under its feature-set name."""
    if train.sum() < cfg.cv_folds or test.sum() < 3:
        return []
    yt, yv = y[train], y[test]
    if prop == "difficulty" and np.ptp(yv) == 0:  # no ranking to recover: a Spearman of 0 would be no measurement
        return []
    if prop != "difficulty" and (not probe_fittable(yt) or (prop == "quality" and len(np.unique(yv)) < 2)):
        return []
    rows = []
    for name, M in inputs.items():
        family, pool = ("prior" if name == "majority" else "logistic"), None
        if prop == "difficulty":
            cands = M if isinstance(M, dict) else {name: M}
            key, model = fit_difficulty(cands, y, train, name, cfg, fit)
            pred = model.predict(cands[key][test])
            values = {f"spearman{suffix}": spearman(y[test], pred)}
            family, pool = model_family(model), (key if isinstance(M, dict) else None)
            if predictions is not None:
                predictions[name] = np.asarray(pred, dtype=np.float64)
        elif prop == "topic":
            pred = clone(probe_model(name, cfg, yt)).fit(M[train], yt).predict(M[test])
            values = {"accuracy": float(np.mean(pred == yv))}
        else:
            p_good = clone(probe_model(name, cfg, yt)).fit(M[train], yt).predict_proba(M[test])[:, 1]
            values = {"auroc": metrics.roc_auc_score(yv, p_good),
                      "ap_bad": metrics.average_precision_score(1 - yv, 1 - p_good),
                      **(auroc_by_kind(yv, p_good, kinds[test]) if kinds is not None else {})}
        if name == "text":
            pool = text_analyzer(cfg)
        rows += [dict(property=prop, metric=m, features=name, value=float(v), n_train=int(train.sum()),
                      n_test=int(test.sum()), model=family, pool=pool) for m, v in values.items()]
    return rows


def ood_folds(topics: np.ndarray, usable: np.ndarray, cfg: ScoreConfig,
              testable: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Out-of-distribution folds by topic: the topics of the usable or testable rows dealt (seeded by cfg.seed)
    into min(cfg.ood_folds, topics) groups of near-equal size, and per group (train mask: `usable` rows of the
    other topics, test mask: `testable` rows (default: `usable`) of the group's topics), so every topic is held
    out once (a topic with testable rows but no usable one too: no model ever trains on it); [] when fewer than
    two topics are present. in: topic per row ('' = none), masks; out: (train, test) mask pairs."""
    usable = usable & (topics != "")
    testable = usable if testable is None else testable & (topics != "")
    names = np.unique(topics[usable | testable])
    if len(names) < 2:
        return []
    groups = np.array_split(names[np.random.default_rng(cfg.seed).permutation(len(names))],
                            min(cfg.ood_folds, len(names)))
    return [(usable & ~np.isin(topics, g), testable & np.isin(topics, g)) for g in groups]


def _ood_rows(inputs: dict[str, Any], y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
              cfg: ScoreConfig, fit: FitOptions | None = None) -> list[dict[str, Any]]:
    """Difficulty report rows out of distribution: each feature set's models fitted and tested on every topic
    fold (:func:`ood_folds`, :func:`_model_rows`), spearman_ood the mean Spearman over the folds it could be
    tested on, n_train their mean training rows, n_test their test rows together (each held-out row once), model
    and pool each fold's choice, in fold order, joined by commas (pool null when no fold chose one).
    A fold whose held-out labels are all equal has no ranking to recover (its Spearman would be a 0 that is
    no measurement, pulling every feature set's mean toward 0) and is not tested.
    One held-out draw of topics made the figure a lottery of which topics were held out (the demo world's SAE
    codes: .08 to .58 over five seeds, residuals .12 to .50; docs/testbed.md, session 17)."""
    per_fold = [_model_rows("difficulty", inputs, y, train, test, cfg, "_ood", fit=fit) for train, test in folds
                if test.any() and np.ptp(y[test]) > 0]
    rows = []
    for name in inputs:
        found = [r for fold in per_fold for r in fold if r["features"] == name]
        if found:
            pools = [r["pool"] for r in found]
            rows.append({**found[0], "value": float(np.mean([r["value"] for r in found])),
                         "n_train": int(round(np.mean([r["n_train"] for r in found]))),
                         "n_test": sum(r["n_test"] for r in found), "model": ",".join(r["model"] for r in found),
                         "pool": None if all(p is None for p in pools) else ",".join(str(p) for p in pools)})
    return rows


def k_edge_note(k: int, sil: dict[int, float]) -> str | None:
    """A note when the silhouette chose the smallest or the largest k it searched (two k or more searched): the
    best number of clusters may lie beyond score.k_range. in: choose_k's k and {k: silhouette}; out: note or None."""
    if len(sil) < 2 or k not in (min(sil), max(sil)):
        return None
    side = "largest" if k == max(sil) else "smallest"
    return (f"the silhouette chose k = {k}, the {side} k searched ({min(sil)}..{max(sil)}, score.k_range): the best "
            "number of clusters may lie beyond the range; widen score.k_range or fix score.n_clusters")


def cluster_count_notes(cfg: ScoreConfig, n: int, k: int, sil: dict[int, float], found: int) -> list[str]:
    """Notes when the clusters are not the k asked for, which nothing said: a fixed score.n_clusters above the pool
    (capped: a prompt or so a cluster), an automatic k with no k of score.k_range scored (a pool too small or too
    alike for the silhouette), and k-means finding fewer distinct clusters than k (identical or empty codes: the
    parameters record k). in: score config, prompts, k used, {k: silhouette}, distinct cluster labels; out: notes."""
    notes = []
    if cfg.n_clusters != "auto" and int(cfg.n_clusters) > n:
        notes.append(f"score.n_clusters={cfg.n_clusters} is more than the {n} prompts: k capped at {k}, about one "
                     "prompt a cluster")
    if cfg.n_clusters == "auto" and not sil:
        lo, hi = min(cfg.k_range), max(cfg.k_range)
        notes.append(f"no k of score.k_range ({lo}..{hi}) could be scored on {n} prompts (the silhouette needs at "
                     f"least two clusters that differ and more prompts than k): k = {k} was used; fix "
                     "score.n_clusters or add prompts")
    if found < k:
        notes.append(f"k-means found {found} distinct cluster{'s' if found != 1 else ''} of the k = {k} asked: the "
                     "prompts' codes hold fewer distinct points (identical prompts, or codes with no active "
                     "feature); the diversity order has little to rotate over")
    return notes


def silhouette_note(k: int, sil: dict[int, float], low: float = SILHOUETTE_LOW,
                    flat_share: float = SILHOUETTE_FLAT_SHARE) -> str | None:
    """A note when the silhouette that chose k says little: its best mean silhouette is below `low` (the clusters
    carry little structure), or its curve over the k searched is flat (spread, max - min, at most `flat_share` of its
    best, with SILHOUETTE_FLAT_MIN_K k or more searched: the k chosen is close to arbitrary). in: choose_k's k and
    {k: silhouette} ({} when score.n_clusters fixes k: no note); out: note or None."""
    if not sil:
        return None
    best, worst = max(sil.values()), min(sil.values())
    is_low = best < low
    is_flat = len(sil) >= SILHOUETTE_FLAT_MIN_K and best > 0 and best - worst <= flat_share * best
    if not (is_low or is_flat):
        return None
    why = [f"low (best {best:.3f}, under {low:g}: a prompt lies about as near the next cluster as its own)" if is_low
           else "",
           f"flat ({worst:.3f} to {best:.3f}: no k separates the prompts clearly better than another)" if is_flat
           else ""]
    so = ("the clusters carry little structure here, so the curriculum's clusters and the report's cluster table group "
          "prompts that barely differ (read other codes: score.cluster_pool, extract.layer; fix score.n_clusters if "
          "a number of groups matters)" if is_low else
          f"k = {k} is close to arbitrary (fix score.n_clusters if a number of groups matters)")
    searched = f"{min(sil)}..{max(sil)}" if len(sil) > 1 else f"{k} alone"
    return (f"the cosine silhouette that chose k = {k} over k = {searched} is "
            f"{' and '.join(w for w in why if w)}: {so}")


def difficulty_notes(model: Any, pool: str, hat: np.ndarray, y: np.ndarray) -> list[str]:
    """Notes on the production difficulty model: its penalty at an end of its grid (alpha_edge), and a constant
    or near-constant difficulty_hat (standard deviation at most NEAR_CONSTANT_SPREAD of the labels'), under which
    the curriculum's easy_to_hard order within a cluster falls back to its seeded tie-breaking shuffle.
    in: the fitted model, the pooling it reads, difficulty_hat of every prompt, the labels it was fitted on;
    out: notes (none when neither holds; one plain note when every label is the same, which no penalty changes)."""
    if y.size and np.ptp(y) == 0:
        return [f"every labelled difficulty is {y[0]:g}: difficulty_hat is one value for every prompt, and the "
                "curriculum's easy_to_hard order within a cluster is its seeded tie-breaking shuffle"]
    family = model_family(model)
    name = f"the difficulty model ({family} on {pool}-pooled codes)"
    notes = []
    edge = alpha_edge(model)
    if edge is not None:
        grid = "score.ridge_alphas" if family == "ridge" else "the elastic net's path of alphas"
        why = {("largest", "ridge"): "the CV error kept falling toward a constant prediction: the codes predict "
                                     "these labels little if at all",
               ("largest", "elasticnet"): "the alpha that sets every coefficient to 0: a constant prediction had "
                                          "the lowest CV error"}.get((edge, family), "a smaller penalty may fit better")
        notes.append(f"{name} chose the {edge} penalty of {grid}, alpha = {chosen_alpha(model):.3g}: {why}")
    spread, label_spread = float(np.std(hat)), float(np.std(y))
    if hat.size and np.ptp(hat) == 0:
        notes.append(f"{name} predicts one difficulty_hat ({hat[0]:.3g}) for every prompt: the curriculum's "
                     "easy_to_hard order within a cluster is its seeded tie-breaking shuffle (no difficulty signal); "
                     "the codes do not predict these labels (more labels, or other difficulty labels, may)")
    elif spread <= NEAR_CONSTANT_SPREAD * label_spread:
        notes.append(f"{name} predicts a near-constant difficulty_hat (standard deviation {spread:.3g}, "
                     f"{spread / label_spread:.2%} of its labels' {label_spread:.3g}): the curriculum's within-cluster "
                     "order rests on almost no difficulty signal")
    return notes


@dataclass
class Aligned:
    """score_prompts' and property_report's inputs aligned to one id order: the codes (X, C, D), the prompts
    frame P joined to the ids, their texts, their topics (None when no prompt has one), the difficulty labels
    (NaN where unknown) and their source, and the labelled subset (boolean mask)."""

    ids: pl.Series
    X: sp.csr_matrix
    C: sp.csr_matrix
    D: dict[str, sp.csr_matrix]
    P: pl.DataFrame
    texts: np.ndarray
    topics: np.ndarray | None
    y_diff: np.ndarray
    source: str
    labelled: np.ndarray
    order: np.ndarray | None = None  # the given row of each aligned row (None: the rows came in id order)


def id_order(ids: pl.Series) -> np.ndarray | None:
    """The row order that sorts `ids` by their text (the order seeded_subset draws in), or None when they are in it
    already. The fits read rows in this order: k-means++ seeds, cross-validation folds and the report's row samples
    are drawn by row, so rows in another order fitted other clusters (session 46: ARI .91 on the same codes).
    in: unique ids; out: int64 row indices, or None."""
    order = ids.cast(pl.String).arg_sort().to_numpy().astype(np.int64)
    return None if bool((order == np.arange(len(order))).all()) else order


def rows_in_order(order: np.ndarray | None, *matrices: Any) -> list[Any]:
    """Each of `matrices` (sparse or dense, rows aligned to the same ids) with its rows taken in `order` (None: as
    given); a matrix passed twice is taken once and stays one object. in: the order, the matrices; out: them."""
    if order is None:
        return list(matrices)
    taken: dict[int, Any] = {}
    for M in matrices:
        if id(M) not in taken:
            taken[id(M)] = M[order]
    return [taken[id(M)] for M in matrices]


def check_finite(M: sp.csr_matrix, name: str, ids: pl.Series | Sequence[Any]) -> None:
    """Refuse codes holding NaN or infinite values, naming how many rows and the first one's id (sklearn's own error
    named no row: "Input contains NaN"). in: CSR codes, their name, the ids of their rows."""
    finite = np.isfinite(M.data)
    if not finite.all():
        bad = np.unique(np.repeat(np.arange(M.shape[0]), np.diff(M.indptr))[~finite])
        raise ValueError(f"codes {name} hold NaN or infinite values in {len(bad)} rows (first: id "
                         f"{ids[int(bad[0])]!r}): the encoding is broken; rebuild the encode artifact")


def align_inputs(X: sp.spmatrix, prompts: pl.DataFrame, cfg: ScoreConfig, measured: pl.DataFrame | None, *,
                 ids: Sequence[Any], C: sp.spmatrix | None = None, D: dict[str, sp.spmatrix] | None = None) -> Aligned:
    """The codes and prompts of score_prompts / property_report aligned to `ids` (required, one per row of the
    codes: the codes carry no ids of their own, so the prompts' row order is never assumed to be theirs) and taken
    in id order (:func:`id_order`, kept in Aligned.order: the fits are the same whatever order the rows come in),
    with the difficulty labels (resolve_difficulty) and the labelled subset: the prompts' ``labelled`` column, else
    the measured ids (measured source), else a seeded draw of cfg.label_fraction (at most cfg.label_max); a
    non-finite difficulty is no label. Raises ValueError when `ids` is None or repeats an id, the matrices' rows and
    the ids disagree, an id matches no prompt, or the codes hold NaN / infinite values (naming the first row's id)."""
    require_section(cfg, "score", "score_prompts / property_report")
    _refuse_input_kinds(prompts, ids)
    X = sp.csr_matrix(X)
    C = X if C is None else sp.csr_matrix(C)
    D = {cfg.model_pool: X} if D is None else {key: sp.csr_matrix(M) for key, M in D.items()}
    row_ids = _checked_ids(ids, prompts, X, C, D)
    order = id_order(row_ids)
    X, C, *moved = rows_in_order(order, X, C, *D.values())
    D = dict(zip(D, moved, strict=True))
    row_ids = row_ids if order is None else row_ids.gather(order)
    P = _joined_prompts(row_ids, prompts)
    texts, topics = _prompt_texts(P)
    _check_codes_finite(X, C, D, row_ids)
    y_diff, source = resolve_difficulty(P, measured, cfg.difficulty_source)
    y_diff = np.where(np.isfinite(y_diff), y_diff, np.nan)  # an infinite label is no label (as ingest reads it)
    labelled = _labelled_rows(P, y_diff, source, row_ids, cfg)
    return Aligned(row_ids, X, C, D, P, texts, topics, y_diff, source, labelled, order)


def _refuse_input_kinds(prompts: Any, ids: Sequence[Any] | None) -> None:
    """Refuse prompts that are not a polars DataFrame (TypeError) and missing ids (ValueError), each with the fix.
    in: align_inputs' prompts and ids."""
    if not isinstance(prompts, pl.DataFrame):
        raise TypeError(f"the prompts must be a polars DataFrame (id, prompt, ...), not a {type(prompts).__name__}: read "
                        "the ingest artifact's prompts.parquet with pl.read_parquet (pl.from_pandas for a pandas frame)")
    if ids is None:
        raise ValueError("ids is required: the ids of the codes' rows, in their order (saerl.sae.load_codes_csr "
                         "returns them with the codes); the prompts frame is joined to them by id")


def _checked_ids(ids: Sequence[Any], prompts: pl.DataFrame, X: sp.csr_matrix, C: sp.csr_matrix,
                 D: dict[str, sp.csr_matrix]) -> pl.Series:
    """The codes' row ids as a Series of the prompts' id type; ValueError where an id repeats, D is empty or a
    matrix's rows and the ids disagree. in: the ids, the prompts, the CSR codes X, C and D; out: the id Series."""
    series = pl.Series("id", list(ids)).cast(prompts["id"].dtype)
    if series.n_unique() != len(series):
        dup = series.filter(series.is_duplicated())[0]
        raise ValueError(f"ids repeat an id ({dup!r} and {len(series) - series.n_unique()} more repeats): each row of "
                         "the codes needs its own id")
    if not D or any(M.shape[0] != len(ids) for M in (X, C, *D.values())):
        raise ValueError(f"X has {X.shape[0]} rows, C {C.shape[0]} and D {[M.shape[0] for M in D.values()]} but "
                         f"{len(ids)} ids were given (D needs at least one matrix)")
    return series


def _joined_prompts(ids: pl.Series, prompts: pl.DataFrame) -> pl.DataFrame:
    """The prompts rows of `ids`, in their order; ValueError where an id matches no prompt or several. in: the ids,
    the prompts frame; out: the joined frame (id first)."""
    P = pl.DataFrame({"id": ids}).join(prompts, on="id", how="left", maintain_order="left")
    if P.height != len(ids) or P["prompt"].null_count():
        raise ValueError(f"ids of X must each match one prompts row: {P['prompt'].null_count()} unmatched, "
                         f"{P.height - len(ids)} extra rows from duplicate prompt ids")
    return P


def _prompt_texts(P: pl.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """(prompt texts as an object array, topics as a str array: None without a topic column or with every topic
    empty) of the aligned prompts P."""
    texts = P["prompt"].fill_null("").to_numpy().astype(object)
    topics = P["topic"].cast(pl.String).fill_null("").to_numpy().astype(str) if "topic" in P.columns else None
    topics = topics if topics is not None and (topics != "").any() else None
    return texts, topics


def _check_codes_finite(X: sp.csr_matrix, C: sp.csr_matrix, D: dict[str, sp.csr_matrix], ids: pl.Series) -> None:
    """Refuse codes X, C or an entry of D holding NaN / infinite values (:func:`check_finite`), reading each matrix
    once (C and a D entry are X itself by default). in: the aligned codes and their ids."""
    checked: set[int] = set()
    for name, M in (("X", X), ("C", C), *((f"D[{key}]", M) for key, M in D.items())):
        if id(M) in checked:
            continue
        checked.add(id(M))
        check_finite(M, name, ids)


def _labelled_rows(P: pl.DataFrame, y_diff: np.ndarray, source: str, ids: pl.Series, cfg: ScoreConfig) -> np.ndarray:
    """Which rows are labelled: the prompts' ``labelled`` column, else the rows with a measured difficulty (measured
    source), else a seeded draw of cfg.label_fraction (at most cfg.label_max). in: the aligned prompts, their
    difficulty labels and its source, the ids, the score config; out: a bool array."""
    if "labelled" in P.columns:
        return P["labelled"].fill_null(False).to_numpy().astype(bool)
    if source == "measured":
        return ~np.isnan(y_diff)
    return seeded_subset(ids.to_numpy(), cfg.label_fraction, cfg.seed, cfg.label_max)


def quality_labels(P: pl.DataFrame) -> tuple[np.ndarray | None, np.ndarray]:
    """(good: 1 where the quality label is >= GOOD_QUALITY, else 0; None without a quality column, and whether
    each row has a quality label) for the rows of P."""
    if "quality" not in P.columns:
        return None, np.zeros(P.height, dtype=bool)
    y_q = P["quality"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    known = np.isfinite(y_q)  # an infinite label is no label, as ingest reads it
    return (np.where(known, y_q, 0.0) >= GOOD_QUALITY).astype(int), known


def quality_label_note(good: np.ndarray | None) -> str:
    """Why no quality probe was fitted, with the labelled subset's class counts: no quality column (map
    data.quality), or too few of a class, saying when every labelled prompt is labelled bad (the filter then keeps
    the very prompts the labels call defective). in: the labelled prompts' good (1) / bad (0) labels, None without a
    quality column; out: the note."""
    kept = f"quality_hat = {NO_PROBE_QUALITY:g}, every prompt kept"
    if good is None:
        return f"no quality labels (no quality column: map data.quality to filter): {kept}"
    n_good, n_bad = int(good.sum()), int(len(good) - good.sum())
    counts = f"{len(good)} labelled prompts have a quality label: {n_good} good, {n_bad} bad"
    need = f"a probe needs both classes, each in {MIN_CLASS_ROWS} prompts or more"
    if n_bad and not n_good:
        return (f"no usable quality labels: every labelled prompt is labelled bad ({counts}; {need}), so {kept}, the "
                "ones labelled bad too: check data.quality's scale (good is >= "
                f"{GOOD_QUALITY:g}) or label good prompts")
    return (f"no usable quality labels ({counts}; {need}): {kept}; the labelled prompts are data.labelled's rows where "
            "it is mapped, else score.label_fraction of the prompts (at most score.label_max): label more prompts of "
            "the missing class, or raise those")


def score_prompts(X: sp.spmatrix, prompts: pl.DataFrame, cfg: ScoreConfig, measured: pl.DataFrame | None = None,
                  *, ids: Sequence[Any], C: sp.spmatrix | None = None, D: dict[str, sp.spmatrix] | None = None,
                  fit: FitOptions | None = None) -> ScoreResult:
    """Cluster, score difficulty and quality for every prompt: what the curriculum reads. How good these models are,
    beside baselines, is :func:`property_report`'s (the properties stage), so a setting of the report alone reruns no
    fit here and nothing the curriculum and training read.

    X (the cfg.model_pool codes the quality probe reads, and the difficulty regressor unless `D` is given) rows are
    aligned to `ids` (required: the ids load_codes_csr returns with the codes; the prompts frame is joined to them
    by id, in any order of its own); `C`, rows aligned the same way, are the codes the clusters are
    made from (default: X; the score stage passes the cfg.cluster_pool pooling); `D` ({pooling: codes}, rows
    aligned the same way) are the codes the difficulty regressor is chosen from by CV error on its training
    rows (fit_difficulty; default {cfg.model_pool: X}; the score stage passes every pooling in
    sae.encode_pool when cfg.difficulty_pool is auto); `measured` (id, pass_rate) supplies measured
    difficulty. The models train on the whole labelled subset (align_inputs), reading the rows in id order, so
    rows given in another order get the same clusters and scores; the scores come back in the given order.
    cfg.quality_threshold is not read: the filter it sets is the curriculum's (saerl.curriculum.quality_kept), so a
    threshold change reuses the score stage's fits. `fit` (default: fit_options(cfg): float64, the
    config's thread count) says how every difficulty elastic net is computed; benchmarks/score_speed.py passes
    FitOptions(n_jobs=1, dtype=None) to time the old way beside it. Notes (ScoreResult.notes) flag a silhouette k
    at an end of the range searched (k_edge_note), a low or flat silhouette curve (silhouette_note), a (near)
    constant difficulty_hat or a difficulty penalty at an end of its grid (difficulty_notes), and quality labels too
    few to fit a probe. ScoreResult.models holds the fitted models (ScoreModels), whose predict on these codes
    gives these scores again (clusters equal; difficulty and quality up to float rounding)."""
    a = align_inputs(X, prompts, cfg, measured, ids=ids, C=C, D=D)
    notes: list[str] = []
    fit = fit_options(cfg) if fit is None else fit
    idf = code_idf(a.C) if cfg.tfidf else None
    Z = weight_codes(a.C, cfg.tfidf, idf)
    k, sil = choose_k(Z, cfg)
    notes += [note for note in (k_edge_note(k, sil), silhouette_note(k, sil)) if note is not None]
    labels, centroids = fit_kmeans(Z, k, cfg)
    notes += cluster_count_notes(cfg, Z.shape[0], k, sil, int(np.unique(labels).size))
    has_d = a.labelled & ~np.isnan(a.y_diff)
    if has_d.sum() < cfg.cv_folds:
        raise ValueError(f"only {int(has_d.sum())} labelled prompts have a difficulty label; need >= {cfg.cv_folds} "
                         "(score.cv_folds): label more prompts (score.label_fraction and score.label_max, or a data.labelled column that "
                         "marks more rows), map a difficulty column with values on them (data.difficulty), or lower "
                         "score.cv_folds")
    d_pool, dmodel = fit_difficulty(a.D, a.y_diff, has_d, "sae", cfg, fit)
    difficulty_hat = predict_rows(dmodel, a.D[d_pool])
    notes += difficulty_notes(dmodel, d_pool, difficulty_hat, a.y_diff[has_d])
    reg = dmodel[-1]
    q_good, known_q = quality_labels(a.P)
    has_q = a.labelled & known_q
    params: dict[str, Any] = {"k": k, "silhouette": sil, "difficulty_source": a.source,
                              "n_labelled": int(a.labelled.sum()), "n_difficulty_labels": int(has_d.sum()),
                              "n_quality_labels": int(has_q.sum()), "difficulty_model": model_family(dmodel),
                              "difficulty_alpha": float(reg.alpha_), "difficulty_l1_ratio": float(getattr(reg, "l1_ratio_", 0.0)),
                              "difficulty_pool": d_pool, "difficulty_cv_mse": cv_mse(dmodel)}
    q_weights, q_intercept = None, None
    if q_good is not None and probe_fittable(q_good[has_q]):
        qmodel = probe_model("sae", cfg, q_good[has_q]).fit(a.X[has_q], q_good[has_q])
        quality_hat = predict_rows(qmodel, a.X, proba=True)
        params["quality_C"] = float(qmodel.best_params_["logisticregression__C"])
        q_weights, q_intercept = linear_weights(qmodel)
    else:
        quality_hat = np.full(len(a.ids), NO_PROBE_QUALITY)
        notes.append(quality_label_note(None if q_good is None else q_good[has_q]))
    d_weights, d_intercept = linear_weights(dmodel)
    models = ScoreModels(centroids=centroids, idf=idf, cluster_pool=cfg.model_pool if C is None else cfg.cluster_pool,
                         difficulty_pool=d_pool, difficulty_weights=d_weights, difficulty_intercept=d_intercept,
                         difficulty_model=model_family(dmodel), quality_pool=cfg.model_pool, quality_weights=q_weights,
                         quality_intercept=q_intercept)
    scores = scores_frame(a.ids, labels, difficulty_hat, quality_hat)
    if a.order is not None:  # back to the rows' given order
        scores = scores[np.argsort(a.order)]
    return ScoreResult(scores, notes, params, a.ids.filter(pl.Series(a.labelled)).to_list(), models)


def _residual_rows(R: np.ndarray | None, RD: dict[str, np.ndarray] | None, n: int,
                   order: np.ndarray | None) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None]:
    """property_report's residuals taken in the codes' id order (:func:`rows_in_order`). in: the mean-pooled
    residuals R (None: no residual baseline), their poolings RD (None: {"mean": R}), the number of ids, the id order;
    out: (R, RD) in that order. Raises ValueError when RD comes without R, empty, or with rows other than one per id."""
    if RD is not None and (R is None or not RD or any(len(M) != n for M in RD.values())):
        raise ValueError(f"RD (residual poolings {list(RD)}, rows {[len(M) for M in RD.values()]}) needs R (the "
                         f"mean-pooled residuals) and at least one matrix of {n} rows, one per id")
    if R is None:
        return R, RD
    R, *moved = rows_in_order(order, R, *(RD or {}).values())
    return R, None if RD is None else dict(zip(RD, moved, strict=True))


def _cluster_labels(scores: pl.DataFrame, ids: pl.Series) -> np.ndarray:
    """The cluster of each id in `scores` (score_prompts' frame: id, cluster, ...), as int64 aligned to `ids`.
    Raises ValueError, with how many, when an id has no cluster there (scores of other prompts)."""
    joined = pl.DataFrame({"id": ids}).join(scores.select(pl.col("id").cast(ids.dtype), "cluster"), on="id",
                                            how="left", maintain_order="left")
    if joined["cluster"].null_count():
        raise ValueError(f"{joined['cluster'].null_count()} prompts have no cluster in the scores given (scores must "
                         "come from score_prompts on the same prompts)")
    return joined["cluster"].to_numpy().astype(np.int64)


def _report_split(ids: np.ndarray, labelled: np.ndarray, cfg: ScoreConfig) -> tuple[np.ndarray, np.ndarray]:
    """The report models' rows: train, the labelled subset less its seeded cfg.heldout_fraction (seed cfg.seed + 1,
    so the draw differs from the subset's own), and evaluable, every other row (the held-out part and every row
    outside the subset: a model tests on those of them that carry its label). in: the ids (aligned rows), the
    labelled mask, score config; out: (train, evaluable) boolean masks, each the other's complement."""
    test = np.zeros(len(ids), dtype=bool)
    test[labelled] = seeded_subset(ids[labelled], cfg.heldout_fraction, cfg.seed + 1)
    train = labelled & ~test
    return train, ~train


def _difficulty_inputs(inputs: dict[str, Any], D: dict[str, sp.csr_matrix],
                       RD: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """The difficulty models' feature sets: `inputs` (:func:`_inputs`) with the SAE's codes as the poolings `D` and,
    when there is a residual baseline, the residuals as their poolings `RD` (None: {"mean": the residual input}),
    each chosen from by CV error as fit_difficulty does. in: the inputs, D, RD; out: {feature set: matrix or
    {pooling: matrix}}."""
    out = {**inputs, "sae": D}
    if "residual" in out:
        out["residual"] = {"mean": out["residual"]} if RD is None else {k: np.asarray(M) for k, M in RD.items()}
    return out


def _heldout_frame(ids: pl.Series, y: np.ndarray, test: np.ndarray, rows: list[dict[str, Any]],
                   predictions: dict[str, np.ndarray]) -> pl.DataFrame:
    """The report's in-distribution SAE difficulty model on its test rows (HELDOUT_SCHEMA, the id column of `ids`'
    type): id, difficulty (label), difficulty_pred, and the model / pool of its report row. in: the ids, labels,
    test mask, the spearman_id report rows and their predictions by feature set; out: the frame, no rows when the
    SAE model was not tested."""
    if "sae" not in predictions:
        return pl.DataFrame(schema=HELDOUT_SCHEMA)
    sae_row = next(r for r in rows if r["features"] == "sae")
    return pl.DataFrame({"id": ids.filter(pl.Series(test)), "difficulty": y[test], "difficulty_pred": predictions["sae"],
                         "model": sae_row["model"], "pool": sae_row["pool"]}, schema={**HELDOUT_SCHEMA, "id": ids.dtype})


def _topic_rows(inputs: dict[str, Any], topics: np.ndarray, train: np.ndarray, evaluable: np.ndarray,
                cfg: ScoreConfig) -> list[dict[str, Any]]:
    """Report rows of the topic probes (:func:`_model_rows`), on the topics with at least cfg.cv_folds training
    rows (the others are left out). in: inputs, topic per row ('' = none), train / evaluable masks; out: rows."""
    names, counts = np.unique(topics[train & (topics != "")], return_counts=True)
    common = np.isin(topics, names[counts >= cfg.cv_folds])
    return _model_rows("topic", inputs, topics, train & common, evaluable & common, cfg)


def _report_notes(report: list[dict[str, Any]], held_out_difficulty: np.ndarray, has_topics: bool,
                  has_residuals: bool, cfg: ScoreConfig) -> list[str]:
    """The property report's caveats: why no in-distribution difficulty row (every held-out label equal: nothing to
    rank; else too few labelled prompts), no topic column, no prompt of the cluster-vs-topic sample with a topic, and
    baselines without residuals. in: the report rows, the difficulty labels of the rows a difficulty model tests on,
    whether the prompts have topics, whether residuals were given, score config; out: notes, in that order."""
    notes = []
    if not any(r["metric"] == "spearman_id" for r in report):
        notes.append(f"every held-out difficulty label is {held_out_difficulty[0]:g}: no ranking to test the "
                     "difficulty models on" if held_out_difficulty.size >= 3 and np.ptp(held_out_difficulty) == 0 else
                     "too few labelled prompts to test the difficulty models on held-out rows")
    if not has_topics:
        notes.append("no topic column: no cluster-vs-topic metrics and no out-of-distribution difficulty test")
    elif not any(r["property"] == "topic_clusters" for r in report):
        notes.append(f"no prompt among the {cfg.minibatch_above} sampled for the cluster-vs-topic report has a topic: "
                     "no cluster-vs-topic metrics")
    if cfg.baselines and not has_residuals:
        notes.append("no residual activations given: the residual baseline is missing from the report")
    return notes


def property_report(X: sp.spmatrix, prompts: pl.DataFrame, cfg: ScoreConfig, scores: pl.DataFrame,
                    measured: pl.DataFrame | None = None, *, ids: Sequence[Any], R: np.ndarray | None = None,
                    C: sp.spmatrix | None = None, D: dict[str, sp.spmatrix] | None = None, fit: FitOptions | None = None,
                    RD: dict[str, np.ndarray] | None = None, k: int | None = None) -> PropertyReport:
    """What the clusters of `scores` (score_prompts' frame: id, cluster, ...) are, and how good SAE property models
    are beside baselines, for the properties stage. X, C, D, measured and ids as for score_prompts (the same
    inputs give the same labelled subset); `R` (mean-pooled residuals) enables the residual baseline; `RD`
    ({pooling: residuals}, rows aligned the same way; default {"mean": R}) are the residuals its difficulty model
    is chosen from, as the SAE's from D (the score stage passes the residuals of D's poolings that the extract stage
    stored), so both get the same search; `k`: the number of clusters the score stage chose (default: the highest
    cluster id + 1), which every baseline clustering gets too.

    Report models train on the labelled subset's seeded (1 - heldout_fraction) part and are tested on every other
    row that carries the label: the subset's held-out part, plus the rows outside the subset when the data labels
    them too (the testbed labels every row; a user's file may), so the report's intervals shrink with the labels
    there are, while no report model sees a test row (:func:`_report_split`). Out of distribution: trained on the
    labelled rows of some topics, tested on every labelled row of the others, over topic folds that hold out each
    topic once (ood_folds)."""
    a = align_inputs(X, prompts, cfg, measured, ids=ids, C=C, D=D)
    R, RD = _residual_rows(R, RD, len(a.ids), a.order)
    labels = _cluster_labels(scores, a.ids)
    k = int(labels.max()) + 1 if k is None else k
    fit = fit_options(cfg) if fit is None else fit
    clusters = cluster_table(weight_codes(a.C, cfg.tfidf), labels, a.texts, a.topics, cfg)
    inputs = _inputs(a.X, R, a.texts, cfg)
    report = _cluster_report(labels, inputs, a.topics, k, cfg) if a.topics is not None else []

    train, evaluable = _report_split(a.ids.to_numpy(), a.labelled, cfg)
    known_d = ~np.isnan(a.y_diff)
    has_d = a.labelled & known_d
    d_inputs = _difficulty_inputs(inputs, a.D, RD)
    id_test, id_preds = evaluable & known_d, {}
    id_rows = _model_rows("difficulty", d_inputs, a.y_diff, train & has_d, id_test, cfg, "_id", fit=fit,
                          predictions=id_preds)
    report += id_rows
    heldout = _heldout_frame(a.ids, a.y_diff, id_test, id_rows, id_preds)
    if a.topics is not None:
        report += _ood_rows(d_inputs, a.y_diff, ood_folds(a.topics, has_d, cfg, known_d), cfg, fit)
        report += _topic_rows(inputs, a.topics, train, evaluable, cfg)
    q_good, known_q = quality_labels(a.P)
    if q_good is not None and probe_fittable(q_good[a.labelled & known_q]):
        kinds = a.P["defect"].cast(pl.String).fill_null("").to_numpy().astype(str) if "defect" in a.P.columns else None
        report += _model_rows("quality", inputs, q_good, train & a.labelled & known_q, evaluable & known_q, cfg,
                              kinds=kinds)
    notes = _report_notes(report, a.y_diff[id_test], a.topics is not None, R is not None, cfg)
    return PropertyReport(pl.DataFrame(report, schema=REPORT_SCHEMA), clusters, heldout, notes,
                          a.ids.filter(pl.Series(a.labelled)).to_list())


def chosen_text(model: str | None, pool: str | None) -> str:
    """A report row's chosen difficulty model in words: "max ridge"; over topic folds, each (pooling, family)
    with its count, most frequent first ("mean ridge x2, max elasticnet"); "-" without a model."""
    if not model:
        return "-"
    models = model.split(",")
    pools = pool.split(",") if pool else [""] * len(models)
    picks = Counter(f"{p} {m}".strip() for p, m in zip(pools, models, strict=True))
    return ", ".join(k + (f" x{n}" if n > 1 else "") for k, n in picks.most_common())


def chosen_models(report: pl.DataFrame) -> str:
    """Which pooling and family each feature set's difficulty model chose on the report's train rows (per topic
    fold, counted, out of distribution: chosen_text): one line per feature set, one column per difficulty metric;
    "" when the report has no difficulty rows or no model column (a report written before it had one)."""
    rows = report.filter(pl.col("property") == "difficulty") if "model" in report.columns else report.clear()
    if rows.height == 0:
        return ""
    metrics_ = list(dict.fromkeys(rows["metric"]))
    cells = {(r["features"], r["metric"]): chosen_text(r["model"], r["pool"]) for r in rows.iter_rows(named=True)}
    feats = list(dict.fromkeys(f for f in (*FEATURES, *rows["features"]) if f in set(rows["features"])))
    w = {m: 2 + max(len(m), *(len(cells.get((f, m), "-")) for f in feats)) for m in metrics_}
    lines = ["difficulty models chosen on each fit's train rows (pooling family; out of distribution: per topic "
             "fold, counted):", (f"  {'features':<10}" + "".join(f"{m:<{w[m]}}" for m in metrics_)).rstrip()]
    lines += [(f"  {f:<10}" + "".join(f"{cells.get((f, m), '-'):<{w[m]}}" for m in metrics_)).rstrip() for f in feats]
    return "\n".join(lines)


def summarize_report(report: pl.DataFrame) -> str:
    """A fixed-width text table: one line per (property, metric), one column per feature set, plus n_train/n_test;
    below it, the difficulty models each feature set chose (chosen_models)."""
    if report.height == 0:
        return "(empty property report)"
    feats = [f for f in (*FEATURES, "shuffled") if f in set(report["features"])]
    w = max(15, 2 + max(len(m) for m in report["metric"]))
    head = f"{'property':<16}{'metric':<{w}}" + "".join(f"{f:>10}" for f in feats) + f"{'n_train':>9}{'n_test':>8}"
    lines = [head, "-" * len(head)]
    for (prop, metric), g in report.group_by(["property", "metric"], maintain_order=True):
        vals = dict(zip(g["features"], g["value"], strict=True))
        cells = "".join(f"{vals[f]:>10.3f}" if f in vals else f"{'-':>10}" for f in feats)
        lines.append(f"{prop:<16}{metric:<{w}}{cells}{g['n_train'].max():>9}{g['n_test'].max():>8}")
    chosen = chosen_models(report)
    return "\n".join([*lines, *([chosen] if chosen else [])])


def best_baseline(report: pl.DataFrame, property: str, metric: str) -> tuple[str, float] | None:
    """The best baseline (one of BASELINES, never the shuffled chance level) and its value for one property and
    metric (higher is better for every metric in the report); None when no baseline row exists."""
    rows = report.filter((pl.col("property") == property) & (pl.col("metric") == metric)
                         & pl.col("features").is_in(BASELINES) & pl.col("value").is_not_nan())
    if rows.height == 0:
        return None
    best = rows.sort("value", descending=True).row(0, named=True)
    return str(best["features"]), float(best["value"])


# the stage artifacts score_new reads from a run (the testbed's too when the run's policy is the testbed LM)
SCORE_NEW_STAGES = ("extract", "sae", "encode", "score")


def score_new(root: str | Path, run_id: str | RunRecord, prompts: Sequence[str], *, ids: Sequence[str] | None = None,
              device: str | None = None, progress: bool = False) -> pl.DataFrame:
    """Score new prompts with a finished run's models, without refitting anything: their residuals are extracted
    with the run's model and layer (extract.*) and encoded with the run's SAE (sae.*) into a temporary folder,
    as the run's extract and encode stages did for its pool, then its score stage's saved models (ScoreModels)
    place each in one of the run's clusters (the clusters of its scores.parquet, clusters.parquet and curriculum) and
    give its difficulty_hat and quality_hat. A prompt of the run's pool gets its stored scores again (difficulty and
    quality up to float rounding).

    in: the artifact root, a run id (a unique prefix, or 'latest'; or the run's RunRecord), a list of the prompt
    texts as the model reads them (the `prompt` column of the run's prompts.parquet: after data.prompt's template),
    optional ids (default new-0, new-1, ...), the device (default: the run's runtime.device), whether to show
    progress bars; out: a frame (id, cluster, difficulty_hat, quality_hat) in the prompts' order, scores.parquet's
    columns. The quality filter is quality_hat >= the run's score.quality_threshold (saerl.curriculum.quality_kept).
    Raises TypeError for one str as the prompts (it was scored a character at a time) or an item that is not a str
    (None and 5 were scored as the texts 'None' and '5'), ValueError for no prompts, ids that repeat or do not match
    the prompts, or a run without the stages it needs, and load_score_models' error for a run whose score stage saved
    no models."""
    import tempfile

    from saerl.activations import extract, pick_device
    from saerl.artifacts import ArtifactRef, ChunkLog
    from saerl.pipeline import quiet_libraries
    from saerl.report import run_config
    from saerl.runners import internals_model, internals_model_cfg
    from saerl.runs import load_run
    from saerl.sae import encode_codes, load_codes_csr

    if isinstance(prompts, str) or not isinstance(prompts, Iterable):
        one = "one str" if isinstance(prompts, str) else f"{type(prompts).__name__} {prompts!r:.60}"
        raise TypeError(f"score_new's prompts must be a list of prompt texts, got {one}: wrap one prompt in a list, "
                        "score_new(root, run_id, [prompt])")
    prompts = list(prompts)
    if (bad := next((i for i, p in enumerate(prompts) if not isinstance(p, str)), None)) is not None:
        raise TypeError(f"score_new's prompts[{bad}] is {type(prompts[bad]).__name__} {prompts[bad]!r:.60}, not a "
                        "prompt text (str): drop it or give its text")
    ids = [f"new-{i}" for i in range(len(prompts))] if ids is None else [str(i) for i in ids]
    if not prompts:
        raise ValueError("score_new was given no prompts")
    if len(ids) != len(prompts) or len(set(ids)) != len(ids):
        raise ValueError(f"score_new needs one distinct id per prompt: {len(prompts)} prompts, {len(ids)} ids, "
                         f"{len(set(ids))} distinct")
    record = load_run(Path(root), run_id)  # its artifacts under `root`, even a moved one
    missing = [stage for stage in SCORE_NEW_STAGES if stage not in record.stages]
    if missing:
        raise ValueError(f"run {record.run_id} has no {', '.join(missing)} stage: score_new needs a run that reached "
                         "the score stage (saerl run <config> --until score, or a whole run)")
    cfg = run_config(record)
    device = cfg.runtime.device if device is None else device
    cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"progress": progress})})
    inputs = {name: ArtifactRef(name, s.key, s.path) for name, s in record.stages.items()}
    models = load_score_models(inputs["score"].path)
    with tempfile.TemporaryDirectory(prefix="saerl-score-new-") as tmp, quiet_libraries(cfg):
        ext, enc = Path(tmp) / "extract", Path(tmp) / "encode"
        extract(prompts, ids, ext, internals_model_cfg(cfg), cfg.extract, ChunkLog(ext),
                model_path=internals_model(cfg, inputs), device=device, progress=progress)
        encode_codes(ext, inputs["sae"].path, cfg.sae, enc, ChunkLog(enc), device=str(pick_device(device)),
                     progress=progress)
        loaded = {pool: load_codes_csr(enc, pool) for pool in models.pools}
    codes_ids = loaded[models.pools[0]][0]
    scored = models.predict({pool: M for pool, (_, M) in loaded.items()}, codes_ids)
    order = pl.DataFrame({"id": ids})
    return order.join(scored.with_columns(pl.col("id").cast(pl.String)), on="id", how="left", maintain_order="left")
