"""Property-model primitives of the score stage: seeded subsets, SAE-code weighting, k-means with an
automatic k, per-cluster summaries, and the model families (ElasticNetCV or RidgeCV for difficulty, chosen
by CV error; a logistic probe for quality) shared by the SAE models and their baselines. Every number comes
from :class:`ScoreConfig`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.stats import spearmanr
from sklearn import metrics
from sklearn.base import clone
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.feature_extraction.text import TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import ElasticNetCV, LogisticRegression, RidgeCV
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, StandardScaler, normalize

from saerl.config import ScoreConfig

# joblib in a Dask worker (a daemon process) runs a process-backed n_jobs serially and says so in seven lines, twice
# a score stage (ElasticNetCV.fit asks joblib's default backend for its effective n_jobs); the elastic nets' own
# threads (prefer="threads") run all the same. Silenced around those fits alone (:func:`fit_difficulty`), not at
# import: importing saerl changes no process-wide state. warnings' filters are process-wide, so of two fits in
# threads of one worker the first to end may lift the other's silencing early: the warning then prints, no more
DASK_DAEMON_WARNING = "Inside a Dask worker with daemon=True"

WEIGHT_BLOCK_NNZ = 1 << 22  # stored values TF-IDF-weighted at a time (a 32 MB float64 temporary)
PREDICT_BLOCK_ROWS = 1 << 16  # rows per predict call when scoring the whole pool
MIN_CLASS_ROWS = 2  # a probe's stratified CV needs each class in two folds (its train and its test side)
FIT_DTYPE = np.float64  # the elastic net's input is cast to this (float32 codes never met its tolerance: FitOptions)
MINIBATCH_ROWS = 2048  # rows per MiniBatchKMeans step (above score.minibatch_above rows)
# character n-gram lengths of the text baseline's TF-IDF under score.text_analyzer=char_wb (featurizer)
TEXT_CHAR_NGRAMS = (1, 3)


@dataclass(frozen=True)
class FitOptions:
    """How the difficulty elastic nets are computed (score.n_jobs threads, FIT_DTYPE by default: fit_options).

    n_jobs: threads over each ElasticNetCV's (l1_ratio, fold) paths (joblib: -1 every core, 1 serial). Each path
    is computed on its own and coordinate descent releases the GIL, so in float64 the fitted model is the same bit
    for bit for any n_jobs (measured on the demo's codes; float32 BLAS dots were not: 1e-6 apart).
    dtype: the float type the elastic net is fitted in (its rows are cast; predictions read any type); None fits
    in the input's own type (the old way, benchmarks/score_speed.py). The encode stage stores float32 codes: in
    float32 scikit-learn's sparse solver stopped at max_iter (5,000 sweeps) just short of its duality-gap
    tolerance (1 to 13 times it) in 117 of the 601 solves of the demo's production fit, a float32 rounding floor.
    In float64 (with score.enet_max_iter 50,000) no solve of the demo's score stage stops short (867 did before),
    the stage takes about a third of the time on 2 threads, and its report moves by at most .0033 (the residual
    baseline; the SAE rows by .0002)."""

    n_jobs: int
    dtype: Any = FIT_DTYPE


def fit_options(cfg: ScoreConfig) -> FitOptions:
    """The FitOptions of a score config: its score.n_jobs threads, FIT_DTYPE."""
    return FitOptions(n_jobs=cfg.n_jobs)


def seeded_subset(ids: Any, fraction: float, seed: int, cap: int | None = None) -> np.ndarray:
    """Boolean mask over `ids` choosing round(fraction * n) of them (at least 1, at most `cap`: a capped draw is
    the head of the same permutation, so a subset of the uncapped one), seeded and independent of the row order
    (the draw is made on the sorted ids), so the label stage and this stage agree."""
    keys = np.asarray(ids).astype(str)
    if len(keys) == 0:
        return np.zeros(0, dtype=bool)
    m = min(len(keys), max(1, round(fraction * len(keys))), cap or len(keys))
    chosen = np.sort(keys)[np.random.default_rng(seed).permutation(len(keys))[:m]]
    return np.isin(keys, chosen)


def fit_kmeans(M: Any, k: int, cfg: ScoreConfig) -> tuple[np.ndarray, np.ndarray]:
    """(cluster labels of the rows of M, centroids [k, features] float64): KMeans, or MiniBatchKMeans above
    cfg.minibatch_above rows (k capped at the rows). Each label is its row's nearest centroid (Euclidean), as the
    fitted model's predict gives it: :func:`nearest_centroid` places new rows the same way."""
    k = max(1, min(k, M.shape[0]))
    if M.shape[0] > cfg.minibatch_above:
        km = MiniBatchKMeans(k, n_init=cfg.kmeans_n_init, random_state=cfg.seed, batch_size=MINIBATCH_ROWS)
    else:
        km = KMeans(k, n_init=cfg.kmeans_n_init, random_state=cfg.seed)
    labels = km.fit_predict(M).astype(np.int64)
    return labels, np.asarray(km.cluster_centers_, dtype=np.float64)


def kmeans(M: Any, k: int, cfg: ScoreConfig) -> np.ndarray:
    """Cluster labels of the rows of M: KMeans, or MiniBatchKMeans above cfg.minibatch_above rows (fit_kmeans)."""
    return fit_kmeans(M, k, cfg)[0]


def nearest_centroid(Z: Any, centroids: np.ndarray) -> np.ndarray:
    """The index of each row's nearest centroid by Euclidean distance (the first on ties), as k-means' predict
    assigns it; in: rows [n, features] (sparse or dense), centroids [k, features]; out: int64 labels [n]. Computed
    as argmin(|c|^2 - 2 z.c), PREDICT_BLOCK_ROWS rows at a time (|z|^2 is the same for every centroid of a row)."""
    centroids = np.asarray(centroids, dtype=np.float64)
    sq = (centroids**2).sum(axis=1)
    parts = [np.argmin(sq - 2.0 * np.asarray(Z[start: start + PREDICT_BLOCK_ROWS] @ centroids.T), axis=1)
             for start in range(0, Z.shape[0], PREDICT_BLOCK_ROWS)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def choose_k(Z: sp.csr_matrix, cfg: ScoreConfig) -> tuple[int, dict[int, float]]:
    """k for k-means on the weighted codes Z. A fixed cfg.n_clusters is used as is (capped at n). For "auto":
    on a seeded subsample of cfg.silhouette_sample rows, fit k-means for each k in cfg.k_range (inclusive) and
    keep the k with the highest mean silhouette under the cosine metric (ties: the smaller k).
    Returns (k, {k: silhouette})."""
    n = Z.shape[0]
    if cfg.n_clusters != "auto":
        return max(1, min(int(cfg.n_clusters), n)), {}
    rows = np.sort(np.random.default_rng(cfg.seed).permutation(n)[: min(n, cfg.silhouette_sample)])
    S = Z[rows]
    lo, hi = min(cfg.k_range), max(cfg.k_range)
    sil: dict[int, float] = {}
    for k in range(max(2, lo), min(hi, len(rows) - 1) + 1):
        labels = kmeans(S, k, cfg)
        if len(np.unique(labels)) > 1:
            sil[k] = float(metrics.silhouette_score(S, labels, metric="cosine"))
    if not sil:
        return max(1, min(lo, n)), sil
    return max(sil, key=lambda k: (sil[k], -k)), sil


def code_idf(X: sp.spmatrix) -> np.ndarray:
    """The IDF weight of each feature of the codes X (feature = term, prompt = document), as
    TfidfTransformer(norm="l2") fits it on a float64 copy: float64 [features]. What :func:`weight_codes` weighs the
    rows it fits on with, and what the score stage keeps to weigh new prompts' codes the same way."""
    return TfidfTransformer(norm="l2").fit(sp.csr_matrix(X, dtype=np.float64)).idf_.astype(np.float64)


def weight_codes(X: sp.spmatrix, tfidf: bool, idf: np.ndarray | None = None) -> sp.csr_matrix:
    """Rows of X TF-IDF weighted (feature = term, prompt = document; when `tfidf`) and L2-normalised, as a new
    float64 CSR matrix (X is not changed). The IDF is fitted on X's own rows (code_idf), or is `idf` when given
    (a pool's fitted IDF applied to new rows: ScoreModels); `idf` with tfidf off is a ValueError. The same numbers as
    TfidfTransformer(norm="l2").fit_transform, but weighted in place on the one float64 copy, WEIGHT_BLOCK_NNZ
    stored values at a time, so the peak memory is that copy plus a block (scikit-learn's transform makes a second
    copy and an nnz-sized temporary)."""
    if idf is not None and not tfidf:
        raise ValueError("weight_codes was given an idf with tfidf off: pass tfidf=True to apply it, or no idf")
    Z = sp.csr_matrix(X, dtype=np.float64, copy=True)
    if idf is not None and len(idf) != Z.shape[1]:
        raise ValueError(f"the idf has {len(idf)} weights but the codes have {Z.shape[1]} features: both must come "
                         "from the same SAE")
    if tfidf:
        idf = code_idf(Z) if idf is None else np.asarray(idf, dtype=np.float64)  # Z is float64 CSR: no copy there
        for start in range(0, Z.nnz, WEIGHT_BLOCK_NNZ):
            block = slice(start, start + WEIGHT_BLOCK_NNZ)
            Z.data[block] *= idf[Z.indices[block]]
    return normalize(Z, copy=False).tocsr()


def predict_rows(model: Any, X: Any, proba: bool = False) -> np.ndarray:
    """model.predict(X), or model.predict_proba(X)[:, 1] with `proba`, over the rows of X in blocks of
    PREDICT_BLOCK_ROWS: the same numbers as one call (a linear model's output for a row depends on that row
    alone), with the preprocessing copy bounded by one block instead of the whole pool."""
    parts = []
    for start in range(0, X.shape[0], PREDICT_BLOCK_ROWS):
        block = X[start: start + PREDICT_BLOCK_ROWS]
        parts.append(model.predict_proba(block)[:, 1] if proba else model.predict(block))
    return np.concatenate(parts) if parts else np.zeros(0)


def report_rows(n: int, cfg: ScoreConfig) -> np.ndarray:
    """Rows (sorted) the cluster-vs-topic report is computed on: all n rows, or above cfg.minibatch_above (the
    size beyond which scoring switches to its scalable path) a seeded sample of that many rows, so the
    baselines' own clusterings cost the same for any pool size."""
    if n <= cfg.minibatch_above:
        return np.arange(n)
    return np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.minibatch_above, replace=False))


def cluster_table(Z: sp.csr_matrix, labels: np.ndarray, texts: np.ndarray, topics: np.ndarray | None,
                  cfg: ScoreConfig) -> pl.DataFrame:
    """Per cluster: size, share, top SAE features by mean weight in Z, the prompts nearest the centroid
    (cosine; first 200 characters), and the most common true topic (prompts without one, "", are never it)
    with its share of the whole cluster, when topics exist."""
    rows = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        mean = np.asarray(Z[idx].mean(axis=0)).ravel()
        top = [int(f) for f in np.argsort(-mean, kind="stable")[: cfg.cluster_top_features] if mean[f] > 0]
        near = idx[np.argsort(-(Z[idx] @ mean), kind="stable")[: cfg.cluster_examples]]
        row = {"cluster": int(c), "size": len(idx), "share": len(idx) / len(labels), "top_features": top,
               "top_weights": [float(mean[f]) for f in top], "examples": [str(texts[i])[:200] for i in near],
               "top_topic": None, "top_topic_share": None}
        known = topics[idx].astype(str) if topics is not None else np.array([], dtype=str)
        known = known[known != ""]  # a prompt without a topic (""), e.g. off-distribution text, names none
        if len(known):
            vals, counts = np.unique(known, return_counts=True)
            row["top_topic"], row["top_topic_share"] = str(vals[counts.argmax()]), float(counts.max() / len(idx))
        rows.append(row)
    return pl.DataFrame(rows, schema={"cluster": pl.Int64, "size": pl.Int64, "share": pl.Float64,
                                      "top_features": pl.List(pl.Int64), "top_weights": pl.List(pl.Float64),
                                      "examples": pl.List(pl.String), "top_topic": pl.String,
                                      "top_topic_share": pl.Float64})


def text_analyzer(cfg: ScoreConfig) -> str:
    """The tokens the text baseline's TF-IDF reads, as its report rows name them (pool): "char_wb1-3" (character
    n-grams of TEXT_CHAR_NGRAMS lengths inside words) or "word" (score.text_analyzer)."""
    lo, hi = TEXT_CHAR_NGRAMS
    return f"char_wb{lo}-{hi}" if cfg.text_analyzer == "char_wb" else "word"


def featurizer(name: str, cfg: ScoreConfig) -> Any:
    """The unsupervised preprocessing step of feature set `name` (fitted on training rows only): for "text", TF-IDF
    of the prompts' character n-grams (TEXT_CHAR_NGRAMS) inside words, or of their word tokens (score.text_analyzer),
    up to cfg.text_max_features of them.

    Why character n-grams: word tokens made each Chinese or Japanese clause one token (no spaces between words:
    小明有3个苹果 and 小明有8个苹果 shared none), and dropped one-digit numbers while making every other number its own
    token. Side by side on the testbed's English prompts (quick sizes, world 0) character 1-3-grams lifted the text
    baseline's difficulty Spearman from .13 to .69 in distribution and from -.04 to .57 out of it, and topic NMI from
    .37 to .50; on ASDiv (MiniLM) no row fell; on the testbed written without spaces the topic probe went from .46 to
    .97 (docs/results.md, session 40)."""
    if name == "text":
        if cfg.text_analyzer == "char_wb":
            return TfidfVectorizer(analyzer="char_wb", ngram_range=TEXT_CHAR_NGRAMS, max_features=cfg.text_max_features,
                                   sublinear_tf=True)
        return TfidfVectorizer(max_features=cfg.text_max_features, sublinear_tf=True)
    return MaxAbsScaler() if name == "sae" else StandardScaler()


def dense_for_gram(X: Any, max_mb: float) -> Any:
    """X as a dense float64 array when it has more rows than columns and that copy takes at most `max_mb`
    megabytes, else X unchanged. in: the rows an elastic net is fitted on (rows x features), the budget; out: the
    matrix to fit on (the fitted model is the same either way, and predicts on sparse rows as well).

    Why: on dense input with more rows than features, scikit-learn's coordinate descent precomputes the Gram
    matrix X'X once and updates each coordinate from it; on sparse input it never does, and with an intercept it
    also re-centres the residual over every row at each update (``_cd_fast.pyx``). On the demo world's 1,955
    difficulty-labelled rows x 1,024 codes, in float64 (as fit_difficulty fits), the same ElasticNetCV took 19-21 s
    sparse and 10.5-11 s dense, with the same alpha (session 18; the 65 s sparse vs 12 s dense measured before on
    the 10k testbed were float32 fits, whose sparse solves mostly ran to max_iter). With more features than rows
    there is no Gram matrix and the sparse path is the faster one (2,000 x 16,384 synthetic codes: 11 s sparse,
    19 s dense), so X stays sparse."""
    if sp.issparse(X) and X.shape[0] > X.shape[1] and X.shape[0] * X.shape[1] * 8 <= max_mb * 2**20:
        return X.toarray()
    return X


def enet_rows(X: Any, max_mb: float, dtype: Any) -> Any:
    """The matrix an elastic net is fitted on: X (its training rows) through dense_for_gram within `max_mb`, a
    floating-point X cast to `dtype` (None: X's own type; other inputs, e.g. the text baseline's strings, as they
    are). Sparse stays sparse where dense_for_gram leaves it so."""
    X = dense_for_gram(X, max_mb)
    floating = np.issubdtype(getattr(X, "dtype", np.dtype(object)), np.floating)
    return X.astype(dtype) if dtype is not None and floating and X.dtype != dtype else X


def difficulty_model(name: str, cfg: ScoreConfig, family: str = "elasticnet", n_jobs: int = 1) -> Any:
    """The difficulty regressor of feature set `name` behind its preprocessing: family "elasticnet" is
    ElasticNetCV (CV over cfg.enet_l1_ratios x cfg.enet_n_alphas, its paths on `n_jobs` threads: FitOptions),
    "ridge" is RidgeCV over cfg.ridge_alphas (the elastic net's pure-L2 end, which the ElasticNetCV path does not
    reach), both on the same seeded K folds scored by mean squared error; the mean predictor for name="majority".
    The preprocessing step is fitted on all the rows the pipeline is fitted on, before the regressor's internal CV
    splits them, so the CV error (cv_mse, which fit_difficulty chooses by) is slightly optimistic, most for the text
    TF-IDF, whose vocabulary sees every fold; no row outside those is read."""
    if name == "majority":
        return DummyRegressor(strategy="mean")
    folds = KFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    if family == "ridge":
        return make_pipeline(featurizer(name, cfg), RidgeCV(alphas=list(cfg.ridge_alphas), cv=folds,
                                                            scoring="neg_mean_squared_error"))
    enet = ElasticNetCV(l1_ratio=list(cfg.enet_l1_ratios), alphas=cfg.enet_n_alphas, max_iter=cfg.enet_max_iter,
                        cv=folds, n_jobs=n_jobs)
    return make_pipeline(featurizer(name, cfg), enet)


def _regressor(model: Any) -> Any:
    """The final estimator of a difficulty_model (the pipeline's last step; the model itself when bare)."""
    return model[-1] if hasattr(model, "steps") else model


def cv_mse(model: Any) -> float:
    """The cross-validated mean squared error of a fitted difficulty_model at its chosen hyper-parameters (the
    mean over its folds: ElasticNetCV's best point of its path, RidgeCV's best alpha); nan for the mean
    predictor, which has no CV of its own."""
    est = _regressor(model)
    if hasattr(est, "mse_path_"):
        return float(est.mse_path_.mean(axis=-1).min())
    return float(-est.best_score_) if hasattr(est, "best_score_") else float("nan")


def fit_difficulty(candidates: dict[str, Any], y: np.ndarray, rows: np.ndarray, name: str,
                   cfg: ScoreConfig, fit: FitOptions | None = None) -> tuple[str, Any]:
    """Fit feature set `name`'s difficulty_model of each family in cfg.difficulty_models on `rows` (boolean
    mask) of each candidate matrix (e.g. the SAE codes under each pooling, rows aligned to y) and keep the
    (matrix, family) with the lowest cross-validated mean squared error on those rows (the same seeded folds
    for every candidate, so the errors are comparable; no other row is read); the elastic net on a dense copy of
    those rows where that is faster (dense_for_gram, within cfg.dense_fit_mb), in `fit`'s dtype on its threads
    (default: fit_options(cfg)); joblib's warning that a Dask worker runs a process-backed n_jobs serially
    (DASK_DAEMON_WARNING) is silenced while they fit. in: {key: matrix}, labels, mask, feature-set name, config,
    fit options; out: (chosen key, fitted pipeline); the first candidate on ties or without a CV error (the mean
    predictor)."""
    fit = fit_options(cfg) if fit is None else fit
    families = ["elasticnet"] if name == "majority" else list(dict.fromkeys(cfg.difficulty_models))
    fitted = []
    with warnings.catch_warnings():  # the filters as they were once the fits are done
        warnings.filterwarnings("ignore", message=DASK_DAEMON_WARNING, category=UserWarning)
        for key, M in candidates.items():
            for family in families:
                X = enet_rows(M[rows], cfg.dense_fit_mb, fit.dtype) if family == "elasticnet" else M[rows]
                fitted.append((key, clone(difficulty_model(name, cfg, family, fit.n_jobs)).fit(X, y[rows])))
    errors = [np.nan_to_num(cv_mse(model), nan=np.inf) for _, model in fitted]
    return fitted[int(np.argmin(errors))]


def model_family(model: Any) -> str:
    """"ridge", "elasticnet" or "mean": which difficulty_model family a fitted pipeline is."""
    est = _regressor(model)
    return "ridge" if isinstance(est, RidgeCV) else "elasticnet" if isinstance(est, ElasticNetCV) else "mean"


def chosen_alpha(model: Any) -> float:
    """The chosen penalty of a fitted difficulty_model (nan for the mean predictor)."""
    return float(getattr(_regressor(model), "alpha_", np.nan))


def alpha_edge(model: Any) -> str | None:
    """Where a fitted difficulty_model's chosen penalty sits in the grid it was chosen from: "largest" or
    "smallest" at an end of the grid (RidgeCV's alphas; ElasticNetCV's path of alphas at its chosen l1_ratio,
    whose largest alpha is the one that sets every coefficient to 0), None inside it or for the mean predictor.
    An end means the CV error was still falling there: the best penalty may lie beyond the grid."""
    est = _regressor(model)
    if isinstance(est, RidgeCV):
        grid = np.asarray(est.alphas, dtype=np.float64).ravel()
    elif isinstance(est, ElasticNetCV):
        ratios = list(np.atleast_1d(est.l1_ratio))
        grid = np.atleast_2d(est.alphas_)[ratios.index(est.l1_ratio_)]
    else:
        return None
    if len(grid) < 2 or np.ptp(grid) == 0:  # one penalty (a path of constant labels is all one alpha): no ends
        return None
    return "largest" if np.isclose(est.alpha_, grid.max()) else "smallest" if np.isclose(est.alpha_, grid.min()) else None


def probe_fittable(y: np.ndarray) -> bool:
    """Whether probe_model can choose its C on labels `y`: two classes or more, each in MIN_CLASS_ROWS rows (with
    one row of a class, stratified CV cannot split (a crash when every class has one) or scores every C nan and
    keeps the grid's first)."""
    counts = np.unique(y, return_counts=True)[1]
    return len(counts) >= 2 and int(counts.min()) >= MIN_CLASS_ROWS


def probe_model(name: str, cfg: ScoreConfig, y: np.ndarray) -> Any:
    """L2 logistic-regression probe (quality: good vs bad; topic: multinomial) with C chosen from
    cfg.probe_cs by stratified-CV log loss on the training rows (a proper score, so P(good) stays calibrated
    for the quality threshold; folds capped by the rarest class, which needs MIN_CLASS_ROWS: probe_fittable);
    the class-prior predictor for "majority"."""
    if name == "majority":
        return DummyClassifier(strategy="prior")
    folds = int(max(MIN_CLASS_ROWS, min(cfg.cv_folds, np.unique(y, return_counts=True)[1].min())))
    pipe = make_pipeline(featurizer(name, cfg), LogisticRegression(max_iter=cfg.probe_max_iter))
    return GridSearchCV(pipe, {"logisticregression__C": list(cfg.probe_cs)}, scoring="neg_log_loss",
                        cv=StratifiedKFold(folds, shuffle=True, random_state=cfg.seed))


def linear_weights(model: Any) -> tuple[np.ndarray, float]:
    """The effective (weights [features] float64, intercept) of a fitted linear model on raw codes: a
    difficulty_model pipeline (MaxAbsScaler, then ElasticNetCV or RidgeCV; DummyRegressor: zero weights, its mean)
    or a binary probe_model (GridSearchCV over MaxAbsScaler + LogisticRegression: the log-odds of class 1), with
    the scaler folded in (w = coef / max_abs), so x @ w + b is the model's prediction (the probe's decision
    function) up to float rounding. Any other step is a ValueError naming it."""
    model = getattr(model, "best_estimator_", model)
    steps = [step for _, step in model.steps] if hasattr(model, "steps") else [model]
    *pre, est = steps
    if isinstance(est, DummyRegressor):
        return np.zeros(int(est.n_features_in_)), float(np.ravel(est.constant_)[0])
    scale = None
    for step in pre:
        if not isinstance(step, MaxAbsScaler):
            raise ValueError(f"linear_weights folds a MaxAbsScaler only, not {type(step).__name__}")
        scale = np.asarray(step.scale_, dtype=np.float64)
    coef = np.asarray(est.coef_, dtype=np.float64)
    if coef.ndim == 2 and coef.shape[0] != 1:
        raise ValueError(f"linear_weights reads one output, not {coef.shape[0]} ({type(est).__name__})")
    coef = coef.ravel()
    return (coef if scale is None else coef / scale), float(np.ravel(est.intercept_)[0])


def spearman(y: np.ndarray, p: np.ndarray) -> float:
    """Spearman rho; 0.0 when either side is constant (no ranking skill) or fewer than 3 rows."""
    if len(y) < 3 or np.ptp(p) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(y, p).statistic)
