"""saerl.scoring / saerl.property_models on planted synthetic SAE codes: topics are disjoint feature blocks,
difficulty drives a shared block of features, bad quality lights two features."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from saerl import property_models as PM
from saerl import scoring as S
from saerl.config import ScoreConfig
from saerl.curriculum import quality_kept
from saerl.property_models import (
    choose_k,
    cv_mse,
    dense_for_gram,
    fit_difficulty,
    model_family,
    seeded_subset,
    weight_codes,
)
from saerl.scoring import (
    REPORT_SCHEMA,
    best_baseline,
    ood_folds,
    property_report,
    resolve_difficulty,
    score_prompts,
    summarize_report,
)

FAST = dict(k_range=(3, 6), kmeans_n_init=2, cv_folds=3, enet_n_alphas=8, enet_l1_ratios=[0.5, 1.0],
            probe_cs=[0.1, 1.0], label_fraction=0.5)
FAST_HELDOUT = ScoreConfig().heldout_fraction


def synth(n: int = 400, topics: int = 4, d: int = 320, seed: int = 0) -> tuple[sp.csr_matrix, pl.DataFrame, np.ndarray]:
    """Planted CSR codes [n, d], a prompts frame with true topic/difficulty/quality, and residuals R [n, 24]."""
    rng = np.random.default_rng(seed)
    block = 48
    topic = rng.integers(0, topics, n)
    diff = rng.uniform(0, 1, n)
    bad = rng.uniform(size=n) < 0.2
    rows, cols, vals = [], [], []
    for i in range(n):
        f = np.concatenate([topic[i] * block + rng.choice(block, 16, replace=False), rng.choice(d, 6, replace=False),
                            280 + np.arange(8), [300, 301] if bad[i] else []]).astype(int)
        v = np.concatenate([rng.exponential(1.0, 16) + 0.5, rng.exponential(0.3, 6),
                            2 * diff[i] + rng.normal(0, 0.2, 8), rng.uniform(1.5, 2.5, 2) if bad[i] else []])
        f, first = np.unique(f, return_index=True)
        rows += [i] * len(f)
        cols += list(f)
        vals += list(np.clip(v[first], 0.01, None))
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n, d))
    words = [f"w{j}" for j in range(200)]
    texts = [f"topic{topic[i]} " + " ".join(rng.choice(words, int(rng.integers(5, 25)))) for i in range(n)]
    R = np.asarray(X @ rng.normal(size=(d, 24)) + rng.normal(0, 1, (n, 24)), dtype=np.float32)
    prompts = pl.DataFrame({"id": [f"p{i:04d}" for i in range(n)], "prompt": texts, "answer": ["1"] * n,
                            "topic": [f"t{x}" for x in topic], "difficulty": diff, "quality": (~bad).astype(float)})
    return X, prompts, R


def scored(X, prompts, cfg, measured=None, *, R=None, RD=None, fit=None, **kw) -> SimpleNamespace:
    """score_prompts, then property_report on its clusters, as the score and properties stages run them: both
    results in one namespace (scores, params, labelled; report, clusters, heldout; notes of both). ids: the prompts'
    (their row order is the codes' in these tests) unless given."""
    kw.setdefault("ids", prompts["id"])
    s = score_prompts(X, prompts, cfg, measured, fit=fit, **kw)
    r = property_report(X, prompts, cfg, s.scores, measured, R=R, RD=RD, fit=fit, k=s.params["k"], **kw)
    assert r.labelled == s.labelled  # the same inputs give both stages the same labelled subset
    return SimpleNamespace(scores=s.scores, params=s.params, labelled=s.labelled, report=r.report,
                           clusters=r.clusters, heldout=r.heldout, notes=s.notes + r.notes)


@pytest.fixture(scope="module")
def data():
    return synth()


@pytest.fixture(scope="module")
def result(data):
    X, prompts, R = data
    return scored(X, prompts, ScoreConfig(**FAST), R=R)


def _value(report: pl.DataFrame, prop: str, metric: str, features: str) -> float:
    row = report.filter((pl.col("property") == prop) & (pl.col("metric") == metric) & (pl.col("features") == features))
    assert row.height == 1, (prop, metric, features)
    return row["value"][0]


def test_sae_models_recover_planted_properties(result, data):
    rep = result.report
    assert dict(rep.schema) == REPORT_SCHEMA
    assert _value(rep, "topic_clusters", "nmi", "sae") > _value(rep, "topic_clusters", "nmi", "shuffled") + 0.5
    assert _value(rep, "topic_clusters", "purity", "sae") > 0.9
    assert _value(rep, "difficulty", "spearman_id", "sae") > 0.7
    assert _value(rep, "difficulty", "spearman_ood", "sae") > 0.7
    assert _value(rep, "quality", "auroc", "sae") > 0.9
    assert result.params["k"] == 4 and result.params["difficulty_source"] == "column"


def test_every_baseline_is_reported_on_the_same_split(result):
    rep = result.report
    for prop, metric in [("topic_clusters", "nmi"), ("difficulty", "spearman_id"), ("difficulty", "spearman_ood"),
                         ("quality", "auroc"), ("quality", "ap_bad")]:
        rows = rep.filter((pl.col("property") == prop) & (pl.col("metric") == metric))
        assert set(S.FEATURES) <= set(rows["features"]), (prop, metric)  # every feature set, not a list of some
        assert rows["n_train"].n_unique() == 1 and rows["n_test"].n_unique() == 1
    assert _value(rep, "quality", "auroc", "majority") == 0.5
    assert _value(rep, "difficulty", "spearman_id", "majority") == 0.0
    text = summarize_report(rep)
    assert "spearman_ood" in text and "residual" in text
    name, value = best_baseline(rep, "quality", "auroc")
    assert name != "sae" and value == rep.filter((pl.col("metric") == "auroc") & (pl.col("features") != "sae"))["value"].max()
    assert best_baseline(rep, "quality", "no_such_metric") is None


def test_the_text_baseline_reads_chinese_prompts_and_its_rows_name_what_it_read(result):
    """On Chinese prompts the word TF-IDF made each clause one token, so its topic probe was at chance whatever the
    text said (i18n audit, finding 5). With character n-grams the topic, written inside a clause, is read; each text
    row of the report names the tokens its TF-IDF read (pool; per topic fold out of distribution)."""
    text_rows = result.report.filter(pl.col("features") == "text")
    assert text_rows.height and {a for p in text_rows["pool"] for a in p.split(",")} == {"char_wb1-3"}
    rng = np.random.default_rng(0)
    n, marks, filler = 240, "代几数概", "小明有个苹果又买了一共还剩多少支笔送给同学"
    topics = np.array([f"t{i % 4}" for i in range(n)])
    texts = np.array(["".join(rng.choice(list(filler), 6)) + marks[i % 4] + "".join(rng.choice(list(filler), 6))
                      + "，" + "".join(rng.choice(list(filler), 5)) + "？" for i in range(n)], dtype=object)
    train = np.arange(n) < n // 2
    (chars,) = S._model_rows("topic", {"text": texts}, topics, train, ~train, ScoreConfig(**FAST))
    (words,) = S._model_rows("topic", {"text": texts}, topics, train, ~train, ScoreConfig(**FAST, text_analyzer="word"))
    assert (chars["pool"], words["pool"]) == ("char_wb1-3", "word")
    assert chars["value"] > 0.7 and words["value"] < 0.4, (chars["value"], words["value"])  # 4 topics: chance .25


def test_scores_clusters_and_threshold(result, data):
    _, prompts, _ = data
    s = result.scores
    assert s.columns == ["id", "cluster", "difficulty_hat", "quality_hat"]  # the filter is the curriculum's
    assert s["id"].to_list() == prompts["id"].to_list()
    assert s["quality_hat"].is_between(0, 1).all()
    kept = quality_kept(s, 0.5)
    bad = prompts["quality"] < 0.5
    assert s.filter(~kept).height > 0 and bad.filter(~kept).mean() > 0.9  # filtered rows are bad ones
    c = result.clusters
    assert c["size"].sum() == prompts.height and c.height == s["cluster"].n_unique()
    assert (c["top_topic_share"] > 0.9).all() and (c["examples"].list.len() == 3).all()
    assert (c["top_features"].list.len() > 0).all()


def test_measured_difficulty_and_no_quality_labels(data):
    X, prompts, _ = data
    plain = prompts.drop("difficulty", "quality")
    labelled = plain["id"].to_list()[::3]
    truth = dict(zip(prompts["id"], prompts["difficulty"], strict=True))
    measured = pl.DataFrame({"id": labelled, "pass_rate": [1 - truth[i] for i in labelled]})
    cfg = ScoreConfig(**FAST, baselines=False, n_clusters=4)
    r = scored(X, plain, cfg, measured)
    assert r.params["difficulty_source"] == "measured" and r.params["n_labelled"] == len(labelled)
    assert r.scores["quality_hat"].eq(1.0).all() and quality_kept(r.scores, 1.0).all()
    assert any("quality" in n for n in r.notes)
    assert set(r.report["features"]) == {"sae"}
    rho = np.corrcoef(r.scores["difficulty_hat"].rank(), prompts["difficulty"].rank())[0, 1]
    assert rho > 0.7


def test_ids_align_rows_and_labelled_column(data):
    X, prompts, _ = data
    perm = np.random.default_rng(1).permutation(prompts.height)
    ids = prompts["id"].gather(perm)
    with_lab = prompts.with_columns(labelled=pl.Series(np.arange(prompts.height) < 150)).drop("topic")
    r = scored(X[perm], with_lab, ScoreConfig(**FAST, baselines=False, n_clusters=4, quality_threshold=0.9),
                      ids=ids)
    assert r.scores["id"].to_list() == ids.to_list()
    q = r.scores["quality_hat"]
    assert q.is_between(0.5, 0.9, closed="left").any() and "kept" not in r.scores.columns
    assert r.params["n_labelled"] == 150
    assert any("topic" in n for n in r.notes) and "topic_clusters" not in set(r.report["property"])
    with pytest.raises(ValueError, match="rows"):
        scored(X[:10], prompts, ScoreConfig(**FAST))


def test_the_quality_threshold_changes_nothing_the_score_stage_writes(data):
    """The quality filter is the curriculum's (saerl.curriculum.quality_kept): the scores, clusters, report, notes
    and params of score_prompts are the same under any score.quality_threshold, so the score stage need not read
    it and a threshold change reuses its fits. Before, scores carried `kept` and params share_kept."""
    X, prompts, _ = data
    low, high = (scored(X, prompts, ScoreConfig(**FAST, baselines=False, n_clusters=4, quality_threshold=t))
                 for t in (0.1, 0.9))
    assert low.scores.equals(high.scores) and low.clusters.equals(high.clusters) and low.report.equals(high.report)
    assert low.params == high.params and low.notes == high.notes and "share_kept" not in low.params
    assert not quality_kept(low.scores, 0.1).equals(quality_kept(low.scores, 0.9))  # the threshold does filter


def test_report_tests_on_every_labelled_row_no_report_model_trained_on(data):
    X, prompts, _ = data
    n_lab = 150
    lab = prompts.with_columns(labelled=pl.Series(np.arange(prompts.height) < n_lab))
    rep = scored(X, lab, ScoreConfig(**FAST, baselines=False, n_clusters=4)).report
    n_train = n_lab - round(FAST_HELDOUT * n_lab)
    for metric in ("spearman_id", "auroc"):
        row = rep.filter(pl.col("metric") == metric)
        assert row["n_train"].to_list() == [n_train] and row["n_test"].to_list() == [prompts.height - n_train]
    # labels only inside the labelled subset (a user's file): the test rows are its held-out part alone
    only = lab.with_columns(*(pl.when(pl.col("labelled")).then(pl.col(c)).otherwise(None).alias(c)
                              for c in ("difficulty", "quality")))
    rep = scored(X, only, ScoreConfig(**FAST, baselines=False, n_clusters=4)).report
    assert rep.filter(pl.col("metric") == "spearman_id")["n_test"].to_list() == [n_lab - n_train]
    ood = rep.filter(pl.col("metric") == "spearman_ood")  # every labelled row tested once, by the fold holding its topic
    assert ood["n_test"][0] == n_lab and 0 < ood["n_train"][0] < n_lab


def test_ood_folds_hold_out_every_topic_once():
    topics = np.array(["a", "b", "c", "d", "e", "f", "g", ""] * 10)
    usable = np.arange(len(topics)) % 3 != 0
    testable = np.ones(len(topics), dtype=bool)
    cfg = ScoreConfig(ood_folds=3)
    folds = ood_folds(topics, usable, cfg, testable)
    assert len(folds) == 3
    held = [set(topics[test]) for _, test in folds]
    assert sorted(t for h in held for t in h) == list("abcdefg"), "each topic held out exactly once, '' never"
    assert sorted(len(h) for h in held) == [2, 2, 3]
    for train, test in folds:
        assert not set(topics[train]) & set(topics[test]) and not (train & ~usable).any() and "" not in topics[train]
    assert [t.tolist() for _, t in ood_folds(topics, usable, cfg, testable)] == [t.tolist() for _, t in folds]
    assert [set(topics[t]) for _, t in ood_folds(topics, usable, ScoreConfig(ood_folds=3, seed=1), testable)] != held
    two = np.array(["a", "b"] * 5)
    assert len(ood_folds(two, np.ones(10, dtype=bool), cfg)) == 2, "never more folds than topics"
    assert ood_folds(np.array(["a"] * 5), np.ones(5, dtype=bool), cfg) == []


def test_ood_folds_hold_out_a_topic_no_usable_row_has():
    """A topic whose rows carry the label but sit outside the labelled subset is held out too (no model ever
    trains on it), not left untested."""
    topics = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 10)
    usable, testable = np.arange(30) < 20, np.ones(30, dtype=bool)
    folds = ood_folds(topics, usable, ScoreConfig(ood_folds=3), testable)
    assert sorted(t for _, test in folds for t in set(topics[test])) == ["a", "b", "c"]
    assert sum(int(test.sum()) for _, test in folds) == 30 and not any((train & ~usable).any() for train, _ in folds)
    one = ood_folds(topics, np.arange(30) < 10, ScoreConfig(ood_folds=3), testable)  # one trainable topic is enough
    assert sorted(int(train.sum()) for train, _ in one) == [0, 10, 10]


def test_ood_mean_leaves_out_a_fold_whose_held_out_difficulty_is_constant(data):
    """A held-out topic whose difficulty labels are all equal (e.g. measured pass rates all 0) has no ranking:
    its fold is not tested, instead of adding a Spearman of 0 to every feature set's mean."""
    X, prompts, _ = data
    flat = prompts.with_columns(difficulty=pl.when(pl.col("topic") == "t3").then(0.5).otherwise(pl.col("difficulty")))
    rep = scored(X, flat, ScoreConfig(**FAST, baselines=False, n_clusters=4, ood_folds=4)).report
    ood = rep.filter(pl.col("metric") == "spearman_ood")
    assert ood["n_test"].to_list() == [int((prompts["topic"] != "t3").sum())] and ood["value"][0] > 0.7


def test_constant_held_out_difficulty_reports_no_spearman_and_says_why(data):
    """Pass rates all 0 on the held-out rows (a policy that cannot do the data) leave nothing to rank: no
    spearman_id row (a 0.000 would read as a measurement) and a note that says so, not "too few prompts"."""
    X, prompts, _ = data
    flat = prompts.with_columns(difficulty=pl.lit(1.0))
    r = scored(X, flat, ScoreConfig(**FAST, baselines=False, n_clusters=4))
    assert "spearman_id" not in set(r.report["metric"]) and "spearman_ood" not in set(r.report["metric"])
    assert any("every held-out difficulty label is 1: no ranking" in n for n in r.notes), r.notes


def test_the_report_split_trains_on_part_of_the_labelled_subset_and_tests_on_every_other_row():
    """No report model sees a test row: train is the labelled subset less its seeded held-out part, and every other
    row (held-out part and unlabelled rows) is evaluable; an id's side does not depend on the row order."""
    cfg = ScoreConfig(**FAST)
    ids = np.array([f"p{i:03d}" for i in range(100)])
    labelled = np.arange(100) < 60
    train, evaluable = S._report_split(ids, labelled, cfg)
    assert not (train & ~labelled).any() and (evaluable == ~train).all()
    assert labelled.sum() - train.sum() == round(cfg.heldout_fraction * 60)
    perm = np.random.default_rng(0).permutation(100)
    assert (S._report_split(ids[perm], labelled[perm], cfg)[0] == train[perm]).all()


def test_the_report_notes_say_why_a_figure_is_missing():
    """Two equal held-out labels are too few to call constant; three or more equal ones leave nothing to rank; no
    topic column and a cluster sample without topics are told apart; baselines without residuals are named."""
    cfg = ScoreConfig(**FAST)
    rows = [{"property": "difficulty", "metric": "spearman_id"}, {"property": "topic_clusters", "metric": "nmi"}]
    assert S._report_notes(rows, np.array([0.2, 0.5, 0.9]), True, True, cfg) == []
    too_few, constant = (S._report_notes([], np.full(n, 1.0), True, True, cfg) for n in (2, 3))
    assert too_few[0] == "too few labelled prompts to test the difficulty models on held-out rows"
    assert constant[0].startswith("every held-out difficulty label is 1: no ranking") and len(constant) == 2
    assert "no cluster-vs-topic metrics" in constant[1] and f"among the {cfg.minibatch_above} sampled" in constant[1]
    no_topic = S._report_notes(rows[:1], np.zeros(0), False, False, cfg)
    assert [n.split(":")[0] for n in no_topic] == ["no topic column", "no residual activations given"]
    assert S._report_notes(rows[:1], np.zeros(0), False, False, ScoreConfig(**FAST, baselines=False)) == [no_topic[0]]


def test_resolve_difficulty_sources_and_errors(data):
    _, prompts, _ = data
    y, src = resolve_difficulty(prompts, None, "auto")
    assert src == "column" and not np.isnan(y).any()
    measured = pl.DataFrame({"id": ["p0001"], "pass_rate": [0.25]})
    y, src = resolve_difficulty(prompts.drop("difficulty"), measured, "auto")
    assert src == "measured" and y[1] == 0.75 and np.isnan(y).sum() == prompts.height - 1
    with pytest.raises(ValueError, match="no difficulty labels"):
        resolve_difficulty(prompts.drop("difficulty"), None, "auto")
    with pytest.raises(ValueError, match="data.difficulty"):
        resolve_difficulty(prompts.drop("difficulty"), measured, "column")


def test_resolve_difficulty_error_says_a_mapped_column_is_empty(data):
    """A mapped difficulty field with no values (auto falls back to measured, and no label stage ran) is named as
    such, not as a missing column whose fix is to map the field the user mapped."""
    _, prompts, _ = data
    empty = prompts.with_columns(difficulty=pl.lit(None, pl.Float64))
    with pytest.raises(ValueError, match=r"difficulty column \(data.difficulty\) has no values"):
        resolve_difficulty(empty, None, "auto")
    with pytest.raises(ValueError, match="have no difficulty column"):
        resolve_difficulty(prompts.drop("difficulty"), None, "auto")
    with pytest.raises(ValueError, match="asks for measured pass rates"):
        resolve_difficulty(prompts, pl.DataFrame(schema={"id": pl.String, "pass_rate": pl.Float64}), "measured")


def test_seeded_subset_is_order_independent_and_sized():
    ids = np.array([f"x{i}" for i in range(101)])
    a = seeded_subset(ids, 0.2, 7)
    b = seeded_subset(ids[::-1], 0.2, 7)[::-1]
    assert a.sum() == 20 and (a == b).all()
    assert not (a == seeded_subset(ids, 0.2, 8)).all()


def test_choose_k_fixed_and_auto(data):
    X, _, _ = data
    Z = weight_codes(X, tfidf=True)
    assert choose_k(Z, ScoreConfig(n_clusters=7)) == (7, {})
    k, sil = choose_k(Z, ScoreConfig(k_range=(2, 7), kmeans_n_init=2))
    assert k == 4 and set(sil) == set(range(2, 8))


def test_choose_k_breaks_a_silhouette_tie_toward_the_smaller_k(data, monkeypatch):
    """Every k scoring the same silhouette: the smallest k searched is chosen (fewer, larger clusters)."""
    X, _, _ = data
    monkeypatch.setattr(PM.metrics, "silhouette_score", lambda *args, **kwargs: 0.1)
    k, sil = choose_k(weight_codes(X, tfidf=True), ScoreConfig(k_range=(3, 6), kmeans_n_init=2))
    assert sil == dict.fromkeys(range(3, 7), 0.1) and k == 3


def test_a_quality_label_at_the_good_quality_cut_is_good():
    """quality_labels: a label at or above GOOD_QUALITY (0.5) is good, below it bad, a null unlabelled."""
    good, labelled = S.quality_labels(pl.DataFrame({"quality": [0.5, 0.49, None, 1.0, 0.0]}))
    assert good[labelled].tolist() == [1, 0, 1, 0] and labelled.tolist() == [True, True, False, True, True]
    none, unlabelled = S.quality_labels(pl.DataFrame({"id": ["a", "b"]}))
    assert none is None and not unlabelled.any()


def test_plots_return_titled_figures(result, data, tmp_path):
    from saerl.plots import cluster_map, difficulty_scatter

    X, prompts, _ = data
    fig = cluster_map(weight_codes(X, tfidf=True), result.scores["cluster"].to_numpy(), prompts["topic"].to_numpy())
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "prompts by true topic"
    fig.savefig(tmp_path / "map.png")
    fig = difficulty_scatter(prompts["difficulty"].to_numpy(), result.scores["difficulty_hat"].to_numpy())
    assert fig.axes[0].get_legend() is not None and fig.axes[0].get_xlabel() == "true difficulty"
    fig.savefig(tmp_path / "difficulty.png")
    assert (tmp_path / "map.png").stat().st_size > 0


def test_quality_auroc_per_defect_kind_separates_visible_from_invisible_defects():
    """Bad rows that light the planted features ('loud') are found; bad rows whose codes look clean ('silent',
    like a wrong gold answer behind a well-formed prompt) are not: the per-kind AUROC says which is which."""
    X, prompts, _ = synth(seed=3)
    rng = np.random.default_rng(3)
    loud = (prompts["quality"] < 0.5).to_numpy()
    silent = ~loud & (rng.uniform(size=prompts.height) < 0.15)
    prompts = prompts.with_columns(quality=pl.Series(np.where(loud | silent, 0.0, 1.0)),
                                   defect=pl.Series(np.where(loud, "loud", np.where(silent, "silent", "none"))))
    rep = scored(X, prompts, ScoreConfig(**FAST)).report
    assert _value(rep, "quality", "auroc_loud", "sae") > 0.9
    assert _value(rep, "quality", "auroc_silent", "sae") < 0.75
    assert _value(rep, "quality", "auroc_loud", "majority") == 0.5
    assert not rep.filter(pl.col("metric") == "auroc_none").height  # good rows are not a defect kind


def test_fit_difficulty_keeps_the_codes_with_the_lowest_cv_error_on_the_train_rows_only(data):
    """Two candidate code matrices: the planted codes and the same codes with the difficulty block removed.
    Whatever their order, the CV error on the train rows picks the planted one; labels outside the train rows
    (here: scrambled) change nothing."""
    X, prompts, _ = data
    y = prompts["difficulty"].to_numpy()
    blind = X.tolil()
    blind[:, 280:288] = 0
    blind = blind.tocsr()
    rows = np.arange(len(y)) < 200
    cfg = ScoreConfig(**FAST)
    for cands in ({"blind": blind, "planted": X}, {"planted": X, "blind": blind}):
        key, model = fit_difficulty(cands, y, rows, "sae", cfg)
        assert key == "planted"
        assert cv_mse(model) < cv_mse(fit_difficulty({"b": blind}, y, rows, "sae", cfg)[1])
    scrambled = np.where(rows, y, np.random.default_rng(0).permutation(y))
    key, model = fit_difficulty({"blind": blind, "planted": X}, scrambled, rows, "sae", cfg)
    ref = fit_difficulty({"planted": X}, y, rows, "sae", cfg)[1]
    assert key == "planted" and np.allclose(model.predict(X), ref.predict(X))
    assert np.isnan(cv_mse(fit_difficulty({"m": X}, y, rows, "majority", cfg)[1]))


def test_dense_for_gram_copies_tall_matrices_within_the_budget():
    X = sp.random(100, 50, density=0.1, format="csr", random_state=0)  # a dense copy: 100 x 50 x 8 = 40,000 bytes
    tall = dense_for_gram(X, 40_000 / 2**20)
    assert isinstance(tall, np.ndarray) and np.array_equal(tall, X.toarray())
    assert sp.issparse(dense_for_gram(X, 39_999 / 2**20)) and sp.issparse(dense_for_gram(X, 0))
    assert sp.issparse(dense_for_gram(X.T.tocsr(), 1.0))  # more features than rows: no Gram matrix, stays sparse
    D = X.toarray()
    assert dense_for_gram(D, 0) is D


def test_the_difficulty_elastic_net_fitted_dense_is_the_sparse_fit(data, monkeypatch):
    """Within score.dense_fit_mb, fit_difficulty fits the elastic net on a dense copy of its (tall) rows and
    the ridge on the sparse ones; the elastic net is the one a sparse fit gives: same penalty, same CV error,
    same predictions on sparse rows."""
    X, prompts, _ = data
    y = prompts["difficulty"].to_numpy()
    rows = np.arange(len(y)) < 360  # more rows than the 320 features
    seen: list[bool] = []
    real = PM.dense_for_gram
    monkeypatch.setattr(PM, "dense_for_gram", lambda M, mb: seen.append(sp.issparse(out := real(M, mb))) or out)
    fits = {mb: fit_difficulty({"sae": X}, y, rows, "sae", ScoreConfig(**FAST, dense_fit_mb=mb, enet_max_iter=20000,
                                                                      difficulty_models=["elasticnet", "ridge"]))
            for mb in (0, 64)}
    assert seen == [True, False]  # the elastic net's rows: sparse at 0 MB, dense at 64 MB; the ridge's never pass
    enet = {mb: fit_difficulty({"sae": X}, y, rows, "sae", ScoreConfig(**FAST, dense_fit_mb=mb, enet_max_iter=20000,
                                                                      difficulty_models=["elasticnet"]))[1]
            for mb in (0, 64)}
    assert enet[0][-1].alpha_ == pytest.approx(enet[64][-1].alpha_)
    assert enet[0][-1].l1_ratio_ == enet[64][-1].l1_ratio_
    assert cv_mse(enet[0]) == pytest.approx(cv_mse(enet[64]), rel=1e-3)
    assert np.allclose(enet[0].predict(X), enet[64].predict(X), atol=1e-3)
    assert fits[0][0] == fits[64][0] == "sae"


def test_score_chooses_the_difficulty_pooling_and_reports_the_choice(data):
    """D's candidates: production predicts from the chosen one (params name it); the report's SAE row is a model
    chosen the same way on the report's own train rows, so it matches the planted codes' row."""
    X, prompts, _ = data
    blind = X.tolil()
    blind[:, 280:288] = 0
    blind = blind.tocsr()
    cfg = ScoreConfig(**FAST, baselines=False, n_clusters=4)
    both = scored(blind, prompts, cfg, D={"mean": blind, "max": X})
    planted = scored(blind, prompts, cfg, D={"max": X})
    only_blind = scored(blind, prompts, cfg)
    assert both.params["difficulty_pool"] == "max" and only_blind.params["difficulty_pool"] == cfg.model_pool
    assert both.scores["difficulty_hat"].to_list() == planted.scores["difficulty_hat"].to_list()
    for metric in ("spearman_id", "spearman_ood"):
        assert _value(both.report, "difficulty", metric, "sae") == _value(planted.report, "difficulty", metric, "sae")
        assert _value(both.report, "difficulty", metric, "sae") > _value(only_blind.report, "difficulty", metric,
                                                                          "sae") + 0.3
    assert both.params["difficulty_cv_mse"] < only_blind.params["difficulty_cv_mse"]
    with pytest.raises(ValueError, match="D"):
        scored(X, prompts, cfg, D={"max": X[:10]})


def test_fit_difficulty_chooses_the_family_by_cv_error():
    """Dense small effects on every feature favour the ridge; one strong feature among noise favours the
    elastic net's sparsity. Each time the family kept is the one with the lower CV error on the train rows,
    and difficulty_models fixes the family when it names one."""
    rng = np.random.default_rng(0)
    n, d = 150, 600
    X = sp.csr_matrix(rng.exponential(1.0, (n, d)))
    rows = np.ones(n, dtype=bool)
    cfg = ScoreConfig(**FAST)
    dense = X @ rng.normal(0, 0.05, d) + rng.normal(0, 0.5, n)
    sparse = 3 * X[:, 0].toarray().ravel() + rng.normal(0, 0.3, n)
    for y, want in ((dense, "ridge"), (sparse, "elasticnet")):
        errors = {f: cv_mse(fit_difficulty({"x": X}, y, rows, "sae", ScoreConfig(**FAST, difficulty_models=[f]))[1])
                  for f in ("ridge", "elasticnet")}
        assert min(errors, key=errors.get) == want, errors
        _, model = fit_difficulty({"x": X}, y, rows, "sae", cfg)
        assert model_family(model) == want and cv_mse(model) == min(errors.values())
    assert model_family(fit_difficulty({"x": X}, dense, rows, "sae",
                                       ScoreConfig(**FAST, difficulty_models=["elasticnet"]))[1]) == "elasticnet"
    assert model_family(fit_difficulty({"x": X}, dense, rows, "majority", cfg)[1]) == "mean"


def test_cluster_table_never_names_the_missing_topic():
    """Prompts without a topic ("": off-distribution text, unlabelled rows) are not a topic: a cluster mostly of
    them names its most common real topic, with its share of the whole cluster, or none at all."""
    Z = sp.csr_matrix(np.ones((6, 2)))
    labels = np.array([0, 0, 0, 0, 1, 1])
    topics = np.array(["", "", "", "add", "", ""])
    t = PM.cluster_table(Z, labels, np.array(["q"] * 6, dtype=object), topics, ScoreConfig())
    assert t["top_topic"].to_list() == ["add", None] and t["top_topic_share"].to_list() == [0.25, None]


def test_best_baseline_is_never_the_shuffled_chance_level():
    """With weak baselines the permuted SAE clusters can score above them by chance (seen with uninformative text
    and no residuals); the best baseline is still one of the baselines."""
    rep = pl.DataFrame([dict(property="topic_clusters", metric="nmi", features=f, value=v, n_train=9, n_test=9)
                        for f, v in [("sae", 0.9), ("text", 0.004), ("length", 0.003), ("majority", 0.0),
                                     ("shuffled", 0.011)]], schema=REPORT_SCHEMA)
    assert best_baseline(rep, "topic_clusters", "nmi") == ("text", 0.004)
    assert best_baseline(rep.filter(pl.col("features").is_in(["sae", "shuffled"])), "topic_clusters", "nmi") is None


def test_quality_labels_with_a_class_in_one_labelled_prompt_fit_no_probe(data):
    """Quality known on few labelled prompts: one good and one bad crashed the stratified CV (n_splits=2 cannot be
    greater than the number of members in each class); one bad among several good scored every C nan and kept the
    grid's first. Both leave quality_hat = 1 with a note; two of each fit the probe."""
    X, prompts, _ = data
    cfg = ScoreConfig(**FAST, baselines=False, n_clusters=4)
    lab = np.arange(prompts.height) < 100
    for good, bad in ((1, 1), (3, 1), (2, 2)):
        q = np.full(prompts.height, np.nan)
        q[:good], q[good: good + bad] = 1.0, 0.0
        r = scored(X, prompts.with_columns(labelled=pl.Series(lab), quality=pl.Series(q)), cfg)
        fitted = (good, bad) == (2, 2)
        assert ("quality_C" in r.params) is fitted
        assert any("no usable quality labels" in n for n in r.notes) is not fitted
        assert fitted or r.scores["quality_hat"].eq(1.0).all()
        # too few of a class names the settings that label more prompts
        assert fitted or any("data.labelled's rows where it is mapped, else score.label_fraction" in n
                             for n in r.notes)
    assert PM.probe_fittable(np.array([0, 0, 1, 1])) and not PM.probe_fittable(np.array([0, 1, 1, 1]))
    assert not PM.probe_fittable(np.array([1, 1, 1]))


def test_the_no_probe_note_gives_the_class_counts_and_says_when_every_labelled_prompt_is_bad():
    """With data.quality mapped and every labelled prompt labelled bad, nothing is filtered and the note only said
    "need both classes"; the curriculum's note then blamed an unmapped column."""
    from saerl.scoring import quality_label_note

    assert "map data.quality" in quality_label_note(None)
    bad = quality_label_note(np.zeros(12, dtype=int))
    assert "every labelled prompt is labelled bad" in bad and "12 labelled prompts" in bad and "0 good, 12 bad" in bad
    few = quality_label_note(np.array([1, 1, 1, 0]))
    assert "3 good, 1 bad" in few and "labelled bad" not in few and "map data.quality" not in few


def test_the_job_count_reaches_the_elastic_net_from_the_config():
    """FitOptions.n_jobs is ElasticNetCV's n_jobs; fit_options reads score.n_jobs (default -1, every core);
    float64 unless told otherwise."""
    cfg = ScoreConfig(**FAST)
    assert PM.difficulty_model("sae", cfg, "elasticnet", n_jobs=2)[-1].n_jobs == 2
    assert PM.fit_options(cfg) == PM.FitOptions(n_jobs=-1, dtype=np.float64)
    assert PM.fit_options(ScoreConfig(**FAST, n_jobs=3)).n_jobs == 3
    rng = np.random.default_rng(0)
    X, y = sp.csr_matrix(rng.exponential(1.0, (40, 12))), rng.normal(size=40)
    _, model = fit_difficulty({"x": X}, y, np.ones(40, dtype=bool), "sae",
                              ScoreConfig(**FAST, difficulty_models=["elasticnet"]), PM.FitOptions(n_jobs=2))
    assert model[-1].n_jobs == 2


def test_the_difficulty_elastic_net_fits_in_float64_whatever_the_codes_type(data):
    """The encode stage stores float32 codes and residuals; the elastic net is fitted on their float64 cast (in
    float32 the sparse solver's duality gap never met the tolerance on the demo's codes: 117 of 601 solves ran
    to max_iter), so float32 and float64 codes give one model, bit for bit. FitOptions(dtype=None) is the old
    way: the input's own type."""
    X, prompts, _ = data
    y = prompts["difficulty"].to_numpy()
    rows = np.arange(len(y)) < 200
    cfg = ScoreConfig(**FAST, difficulty_models=["elasticnet"])
    X32 = X.astype(np.float32)
    with warnings.catch_warnings(record=True) as new_warnings:
        warnings.simplefilter("always", ConvergenceWarning)
        got = fit_difficulty({"x": X32}, y, rows, "sae", cfg)[1][-1]
    ref = fit_difficulty({"x": X32.astype(np.float64)}, y, rows, "sae", cfg)[1][-1]
    assert got.coef_.dtype == np.float64 and np.array_equal(got.coef_, ref.coef_)
    assert np.array_equal(got.mse_path_, ref.mse_path_) and got.alpha_ == ref.alpha_
    with warnings.catch_warnings(record=True) as old_warnings:
        warnings.simplefilter("always", ConvergenceWarning)
        old = fit_difficulty({"x": X32}, y, rows, "sae", cfg, PM.FitOptions(n_jobs=1, dtype=None))[1][-1]
    assert old.coef_.dtype == np.float32
    # here too float32 stops short of the tolerance on one solve of the path at least; float64 never does
    assert not [w for w in new_warnings if issubclass(w.category, ConvergenceWarning)]
    assert [w for w in old_warnings if issubclass(w.category, ConvergenceWarning)]
    R32 = np.asarray(X32[:, :24].toarray())  # dense residual-like rows are cast too
    assert fit_difficulty({"r": R32}, y, rows, "residual", cfg)[1][-1].coef_.dtype == np.float64


def test_enet_rows_casts_floating_rows_only():
    X = sp.random(30, 10, density=0.3, format="csr", random_state=0, dtype=np.float32)
    tall = PM.enet_rows(X, 1.0, np.float64)
    assert isinstance(tall, np.ndarray) and tall.dtype == np.float64 and np.array_equal(tall, X.toarray())
    wide = PM.enet_rows(X.T.tocsr(), 1.0, np.float64)
    assert sp.issparse(wide) and wide.dtype == np.float64
    assert PM.enet_rows(X, 0, None) is X  # dtype None: the input as it is
    texts = np.array(["a b", "c"], dtype=object)
    assert PM.enet_rows(texts, 1.0, np.float64) is texts  # the text baseline's strings go to its vectorizer


@pytest.mark.slow
def test_one_or_two_threads_give_the_same_report_bit_for_bit(data):
    """The elastic net's (l1_ratio, fold) paths on two threads: every report value, difficulty_hat and the
    chosen hyper-parameters are the serial run's, exactly."""
    X, prompts, R = data
    cfg = ScoreConfig(**FAST)
    one, two = (scored(X.astype(np.float32), prompts, cfg, R=R, fit=PM.FitOptions(n_jobs=jobs))
                for jobs in (1, 2))
    assert one.report.equals(two.report)
    assert one.scores["difficulty_hat"].to_list() == two.scores["difficulty_hat"].to_list()
    assert one.params == two.params


def test_report_rows_name_the_pooling_and_family_each_fit_chose(data):
    """The report's difficulty rows say which pooling and family their own CV chose (on the report's train rows,
    per topic fold out of distribution), for every feature set; the printed table lists them below the values."""
    X, prompts, _ = data
    blind = X.tolil()
    blind[:, 280:288] = 0
    blind = blind.tocsr()
    cfg = ScoreConfig(**FAST, n_clusters=4, baselines=False, ood_folds=3)
    r = scored(blind, prompts, cfg, D={"mean": blind, "max": X})
    assert {"model", "pool"} <= set(r.report.columns) and dict(r.report.schema) == REPORT_SCHEMA
    row = r.report.filter((pl.col("metric") == "spearman_id") & (pl.col("features") == "sae")).row(0, named=True)
    train = np.isin(prompts["id"].to_numpy(), r.labelled) & ~np.isin(prompts["id"].to_numpy(), r.heldout["id"].to_list())
    key, model = fit_difficulty({"mean": blind, "max": X}, prompts["difficulty"].to_numpy(), train, "sae", cfg)
    assert row["pool"] == key == "max" and row["model"] == model_family(model)
    ood = r.report.filter(pl.col("metric") == "spearman_ood").row(0, named=True)
    assert ood["pool"].split(",") == ["max"] * 3 and len(ood["model"].split(",")) == 3
    quality = r.report.filter(pl.col("property") == "quality")
    assert set(quality["model"]) == {"logistic"} and quality["pool"].is_null().all()
    text = summarize_report(r.report)
    assert "difficulty models chosen" in text and f"max {row['model']}" in text
    assert S.chosen_text("ridge,ridge,elasticnet", "mean,mean,max") == "mean ridge x2, max elasticnet"
    assert S.chosen_text("ridge", None) == "ridge" and S.chosen_text(None, None) == "-"


@pytest.mark.slow
def test_the_residual_difficulty_baseline_chooses_its_pooling_as_the_sae_does():
    """RD gives the residual baseline's difficulty model the SAE's choice of pooling: CV on the train rows keeps
    the informative residuals whatever their key, and the report names the one kept; the other residual rows
    (clusters, quality, topic) read R as before."""
    X, prompts, R = synth(n=200)
    noise = np.random.default_rng(5).normal(size=R.shape).astype(np.float32)
    cfg = ScoreConfig(**FAST, n_clusters=4)
    both = scored(X, prompts, cfg, R=noise, RD={"mean": noise, "max": R})
    only = scored(X, prompts, cfg, R=noise, RD={"max": R})
    plain = scored(X, prompts, cfg, R=noise)
    for metric in ("spearman_id", "spearman_ood"):
        got = both.report.filter((pl.col("metric") == metric) & (pl.col("features") == "residual")).row(0, named=True)
        assert got["value"] == _value(only.report, "difficulty", metric, "residual")
        assert got["value"] > _value(plain.report, "difficulty", metric, "residual") + 0.3
        assert set(got["pool"].split(",")) == {"max"}
    assert _value(plain.report, "difficulty", "spearman_id", "residual") < 0.3  # the noise alone: {"mean": R}
    assert plain.report.filter((pl.col("metric") == "spearman_id") & (pl.col("features") == "residual"))["pool"][0] == "mean"
    assert _value(both.report, "quality", "auroc", "residual") == _value(plain.report, "quality", "auroc", "residual")
    with pytest.raises(ValueError, match="RD"):
        scored(X, prompts, cfg, RD={"max": R})  # no R
    with pytest.raises(ValueError, match="RD"):
        scored(X, prompts, cfg, R=R, RD={"max": R[:10]})


def _unpredictable(n: int = 120) -> tuple[sp.csr_matrix, pl.DataFrame]:
    """Random sparse codes and difficulty labels unrelated to them (no topic, no quality)."""
    rng = np.random.default_rng(0)
    X = sp.random(n, 40, density=0.1, random_state=1, format="csr", data_rvs=lambda k: rng.random(k))
    prompts = pl.DataFrame({"id": [f"p{i}" for i in range(n)], "prompt": [f"q {i}" for i in range(n)],
                            "answer": ["1"] * n, "difficulty": rng.integers(1, 6, n).astype(float)})
    return X, prompts


@pytest.mark.parametrize(("family", "flat"), [("elasticnet", "predicts one difficulty_hat"),
                                              ("ridge", "near-constant difficulty_hat")])
def test_a_constant_difficulty_model_is_noted(family, flat):
    """Labels the codes cannot predict: the elastic net keeps no coefficient (one difficulty_hat for every prompt)
    and the ridge the largest alpha of its grid (a near-constant one). The curriculum would then order each
    cluster by its seeded tie-breaking shuffle: a note says so, and names the penalty at the grid's end."""
    X, prompts = _unpredictable()
    cfg = ScoreConfig(**FAST, baselines=False, n_clusters=3, difficulty_models=[family], n_jobs=1)
    r = scored(X, prompts, cfg)
    assert any(flat in n for n in r.notes), r.notes
    assert any("chose the largest penalty" in n for n in r.notes), r.notes
    assert not [n for n in scored(*synth()[:2], ScoreConfig(**FAST, baselines=False, n_clusters=4)).notes
                if "difficulty_hat" in n or "penalty" in n]


def test_alpha_edge_and_difficulty_notes_read_the_chosen_penalty():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    signal, noise = X @ np.arange(1.0, 6.0) + rng.normal(0, 0.1, 60), rng.normal(size=60)
    ridge = PM.difficulty_model("length", ScoreConfig(**FAST, ridge_alphas=[1e-3, 1.0, 1e6]), "ridge")
    assert PM.alpha_edge(clone(ridge).fit(X, noise)) == "largest"
    assert PM.alpha_edge(clone(ridge).fit(X, signal)) == "smallest"
    assert PM.alpha_edge(PM.difficulty_model("majority", ScoreConfig()).fit(X, signal)) is None
    fitted = clone(ridge).fit(X, signal)
    notes = S.difficulty_notes(fitted, "max", fitted.predict(X), signal)
    assert len(notes) == 1 and "smallest penalty of score.ridge_alphas" in notes[0]
    flat = PM.difficulty_model("sae", ScoreConfig(**FAST), "elasticnet").fit(np.abs(X), np.zeros(60))
    assert PM.alpha_edge(flat) is None  # constant labels: a path of one alpha has no ends
    notes = S.difficulty_notes(flat, "max", np.zeros(60), np.zeros(60))
    assert len(notes) == 1 and notes[0].startswith("every labelled difficulty is 0: difficulty_hat is one value")


def test_a_silhouette_k_at_an_end_of_the_range_is_noted(data):
    assert "largest k searched (4..16" in S.k_edge_note(16, {k: k / 100 for k in range(4, 17)})
    assert "smallest" in S.k_edge_note(4, {4: 0.5, 5: 0.4})
    assert S.k_edge_note(5, {4: 0.1, 5: 0.5, 6: 0.2}) is None and S.k_edge_note(4, {4: 0.5}) is None
    X, prompts, _ = data  # four planted topics: k = 4 is the best, the bottom of (4, 6) but inside (3, 6)
    cfg = {**FAST, "baselines": False}
    edge = scored(X, prompts, ScoreConfig(**{**cfg, "k_range": (4, 6)}))
    assert edge.params["k"] == 4 and any("the silhouette chose k = 4, the smallest" in n for n in edge.notes)
    assert not any("silhouette" in n for n in scored(X, prompts, ScoreConfig(**cfg)).notes)


@pytest.mark.slow
def test_clusters_that_are_not_the_k_asked_for_are_noted(data):
    """A fixed k above the pool was capped, an automatic k that no k of the range could score fell back, and
    identical codes gave one cluster while the parameters said k = 4: all without a note."""
    cfg = ScoreConfig(**{**FAST, "n_clusters": 10})
    (capped,) = S.cluster_count_notes(cfg, 5, 5, {}, 5)
    assert "score.n_clusters=10 is more than the 5 prompts: k capped at 5" in capped
    (unscored,) = S.cluster_count_notes(ScoreConfig(**FAST), 3, 3, {}, 3)
    assert "no k of score.k_range (3..6) could be scored on 3 prompts" in unscored
    assert S.cluster_count_notes(ScoreConfig(**FAST), 400, 4, {3: 0.1, 4: 0.2}, 4) == []
    X, prompts, _ = data  # every prompt's codes alike: k-means finds one cluster of the 4 asked
    same = sp.csr_matrix(np.tile(X[0].toarray(), (X.shape[0], 1)))
    notes = score_prompts(same, prompts, ScoreConfig(**{**FAST, "n_clusters": 4, "baselines": False}), ids=prompts["id"]).notes
    assert any("k-means found 1 distinct cluster of the k = 4 asked" in n for n in notes)


def test_non_finite_labels_are_no_labels_and_non_finite_codes_name_their_row(data):
    """An infinite difficulty label reached sklearn ("Input y contains infinity"), NaN codes its TF-IDF ("does not
    accept missing values"), naming no row."""
    X, prompts, _ = data
    cfg = ScoreConfig(**{**FAST, "n_clusters": 4, "baselines": False})
    lab = np.arange(prompts.height) < 100
    d = prompts["difficulty"].cast(pl.Float64).to_numpy().copy()
    d[0], d[1] = np.inf, -np.inf
    q = np.where(np.arange(prompts.height) % 2 == 0, 1.0, 0.0)
    q[2] = np.inf
    p = prompts.with_columns(labelled=pl.Series(lab), difficulty=pl.Series(d), quality=pl.Series(q))
    r = score_prompts(X, p, cfg, ids=p["id"])
    assert r.params["n_difficulty_labels"] == 98 and r.params["n_quality_labels"] == 99
    bad = X.tolil()
    bad[5, int(X[5].indices[0])] = np.nan
    with pytest.raises(ValueError, match=r"codes X hold NaN or infinite values in 1 rows \(first: id '.*'\)"):
        score_prompts(bad.tocsr(), p, cfg, ids=p["id"])


# silhouette curves measured over k = 4..16 (score_params.json): GSM8K through MiniLM, no cluster structure found,
# and the testbed world, whose clusters follow its topics
GSM8K_SILHOUETTE = {4: 0.029, 5: 0.027, 6: 0.027, 7: 0.027, 8: 0.025, 9: 0.024, 10: 0.026, 11: 0.026, 12: 0.025,
                    13: 0.029, 14: 0.028, 15: 0.027, 16: 0.026}
TESTBED_SILHOUETTE = {4: 0.134, 5: 0.146, 6: 0.149, 7: 0.15, 8: 0.161, 9: 0.159, 10: 0.171, 11: 0.176, 12: 0.165,
                      13: 0.185, 14: 0.193, 15: 0.196, 16: 0.196}


def test_a_low_or_flat_silhouette_is_noted():
    """GSM8K: the silhouette was 0.024 to 0.029 for every k in 4..16, k = 13 chosen, and the score stage said
    nothing about its clusters carrying no structure."""
    note = S.silhouette_note(13, GSM8K_SILHOUETTE)
    assert note is not None and note.startswith("the cosine silhouette that chose k = 13 over k = 4..16 is low (best "
                                                f"0.029, under {S.SILHOUETTE_LOW:g}")
    assert "flat (0.024 to 0.029" in note and "the clusters carry little structure here" in note
    assert S.silhouette_note(15, TESTBED_SILHOUETTE) is None  # structure the topics confirm: no note
    flat_high = S.silhouette_note(5, {4: 0.50, 5: 0.52, 6: 0.49})  # separated, but every k alike: k is arbitrary
    assert flat_high is not None and "flat (0.490 to 0.520" in flat_high and "low" not in flat_high
    assert "k = 5 is close to arbitrary" in flat_high and "little structure" not in flat_high
    assert S.silhouette_note(4, {4: 0.5, 5: 0.3}) is None  # two k make no curve to call flat
    assert "low (best 0.010" in S.silhouette_note(4, {4: 0.01})
    assert S.silhouette_note(6, {}) is None  # a fixed score.n_clusters computes no silhouette


def test_score_prompts_notes_clusters_on_codes_without_structure():
    """Random sparse codes: score_prompts' notes say the silhouette-chosen clusters carry little structure, and
    say nothing of the kind with a fixed k (test_a_silhouette_k_at_an_end_of_the_range_is_noted: nor on the planted
    topics)."""
    rng = np.random.default_rng(0)
    X = sp.random(300, 400, density=0.05, random_state=1, format="csr", data_rvs=lambda k: rng.random(k))
    prompts = pl.DataFrame({"id": [f"p{i}" for i in range(300)], "prompt": [f"q {i}" for i in range(300)],
                            "answer": ["1"] * 300, "difficulty": rng.uniform(0, 1, 300)})
    cfg = {**FAST, "baselines": False}
    notes = score_prompts(X, prompts, ScoreConfig(**cfg), ids=prompts["id"]).notes
    assert any("the clusters carry little structure here" in n for n in notes), notes
    assert not any("cosine silhouette" in n for n in score_prompts(X, prompts, ScoreConfig(**cfg, n_clusters=4),
                                                                        ids=prompts["id"]).notes)


def test_too_few_difficulty_labels_name_the_fixes():
    """'only 2 labelled prompts have a difficulty label; need >= 3' named no way out."""
    rng = np.random.default_rng(0)
    X = sp.random(40, 50, density=0.1, random_state=1, format="csr", data_rvs=lambda k: rng.random(k))
    prompts = pl.DataFrame({"id": [f"p{i}" for i in range(40)], "prompt": [f"q {i}" for i in range(40)],
                            "answer": ["1"] * 40, "difficulty": [1.0, 2.0] + [None] * 38})
    with pytest.raises(ValueError, match=r"only 2 labelled prompts .* need >= 3 \(score.cv_folds\): label more "
                                         r"prompts .*data.difficulty.*lower score.cv_folds"):
        score_prompts(X, prompts, ScoreConfig(**{**FAST, "label_fraction": 1.0}, n_clusters=3), ids=prompts["id"])


def test_heldout_holds_the_report_models_predictions_on_its_test_rows(result, data):
    """ScoreResult.heldout: the report's in-distribution SAE model on its test rows (the measured-difficulty plot
    draws it): the same rows, Spearman and choice as the report's sae spearman_id row."""
    _, prompts, _ = data
    row = result.report.filter((pl.col("metric") == "spearman_id") & (pl.col("features") == "sae")).row(0, named=True)
    h = result.heldout
    assert h.height == row["n_test"] and not set(h["id"]) & (set(result.labelled) - set(h["id"]))
    truth = dict(zip(prompts["id"], prompts["difficulty"], strict=True))
    assert h["difficulty"].to_list() == [truth[i] for i in h["id"]]
    assert PM.spearman(h["difficulty"].to_numpy(), h["difficulty_pred"].to_numpy()) == pytest.approx(row["value"])
    assert (h["model"][0], h["pool"][0]) == (row["model"], row["pool"])


def test_report_settings_change_nothing_the_score_stage_writes(data):
    """The fields only the properties stage reads (saerl.stages.STAGES) change nothing score_prompts returns, so a
    report setting cannot leave the curriculum and training, which chain on the score stage's key, reading scores
    of another setting: each such field changed alone gives the same scores and params."""
    from saerl.stages import STAGES

    changed = {"heldout_fraction": 0.5, "ood_folds": 2, "baselines": False, "text_max_features": 50,
               "text_analyzer": "word", "cluster_top_features": 2, "cluster_examples": 1}
    assert set(STAGES["properties"].reads) - set(STAGES["score"].reads) == {f"score.{k}" for k in changed}
    X, prompts, _ = data
    base = score_prompts(X, prompts, ScoreConfig(**FAST), ids=prompts["id"])
    for field_, value in changed.items():
        other = score_prompts(X, prompts, ScoreConfig(**FAST, **{field_: value}), ids=prompts["id"])
        assert other.scores.equals(base.scores) and other.params == base.params, field_


def test_property_report_refuses_scores_of_other_prompts(data):
    """property_report reads the clusters of the scores it is given: a prompt without one is an error naming the
    count, not a report on partial clusters."""
    X, prompts, _ = data
    cfg = ScoreConfig(**FAST, baselines=False, n_clusters=4)
    scores = score_prompts(X, prompts, cfg, ids=prompts["id"]).scores
    with pytest.raises(ValueError, match="3 prompts have no cluster"):
        property_report(X, prompts, cfg, scores.slice(3), ids=prompts["id"])


def test_every_feature_set_of_the_report_is_one_of_features_and_clusters_or_is_refused():
    """A baseline is named in three places (_inputs, FEATURES, _cluster_report's clustering input): one added to
    _inputs alone was dropped silently from the cluster rows, the table's columns and the best baseline. The
    inputs are FEATURES, every baseline among them clusters, and one without a clustering input is an error."""
    texts = np.array(["What is 1+1?", "Add 2 and 3.", "What is 7-2?", "Take 4 from 9."])
    X = sp.csr_matrix(np.eye(4))
    cfg = ScoreConfig(**FAST)
    inputs = S._inputs(X, np.eye(4), texts, cfg)
    assert set(inputs) == set(S.FEATURES)
    assert set(S.BASELINES) - {"majority"} == set(S.CLUSTER_FEATURES)
    topics = np.array(["a", "a", "b", "b"])
    rows = S._cluster_report(np.array([0, 0, 1, 1]), inputs, topics, 2, cfg)
    assert {r["features"] for r in rows} == {*S.FEATURES, "shuffled"}
    with pytest.raises(ValueError, match="baseline 'digits' has no clustering input .*CLUSTER_FEATURES"):
        S._cluster_report(np.array([0, 0, 1, 1]), {**inputs, "digits": np.eye(4)}, topics, 2, cfg)


@pytest.mark.parametrize("case", ["pools", "ridge_no_tfidf", "no_probe"])
def test_the_fitted_models_score_the_training_codes_as_score_prompts_did(data, case):
    """ScoreResult.models (ScoreModels) was missing: the k-means, difficulty and quality fits were thrown away and
    new prompts could only be scored by a refit that relabelled the clusters. Its predict on the training codes gives
    score_prompts' scores back: the clusters equal, difficulty_hat and quality_hat up to float rounding; each model
    reads the pooling it was fitted on (clusters C, difficulty a key of D, quality X)."""
    from saerl.curriculum import NO_PROBE_QUALITY

    X, prompts, _ = data
    X32 = X.astype(np.float32)  # the encode stage's dtype: the pipelines scale in float32, the weights in float64
    blind = sp.hstack([X32[:, :40], sp.csr_matrix((X.shape[0], X.shape[1] - 40), dtype=np.float32)]).tocsr()
    if case == "pools":
        cfg = ScoreConfig(**FAST, baselines=False, n_clusters=4)
        kw, codes = {"C": X32, "D": {"mean": blind, "max": X32}}, {"mean": blind, "max": X32}
        cfg = cfg.model_copy(update={"model_pool": "mean", "cluster_pool": "max"})
        X_in = blind
    else:
        cfg = ScoreConfig(**FAST, baselines=False, n_clusters=4, difficulty_models=["ridge"], tfidf=False)
        kw, codes, X_in = {}, {cfg.model_pool: X32}, X32
    p = prompts.drop("quality") if case == "no_probe" else prompts
    r = score_prompts(X_in, p, cfg, ids=p["id"], **kw)
    m = r.models
    got = m.predict(codes, p["id"])
    assert got.columns == list(S.SCORES_COLUMNS) and got["id"].to_list() == p["id"].to_list()
    assert got["cluster"].to_list() == r.scores["cluster"].to_list()
    assert np.allclose(got["difficulty_hat"], r.scores["difficulty_hat"], rtol=1e-6, atol=1e-9)
    assert np.allclose(got["quality_hat"], r.scores["quality_hat"], rtol=1e-6, atol=1e-9)
    assert m.k == r.params["k"] and m.d_sae == X.shape[1] and m.difficulty_pool == r.params["difficulty_pool"]
    if case == "pools":
        assert (m.cluster_pool, m.quality_pool, m.difficulty_pool) == ("max", "mean", "max") and m.idf is not None
        assert m.quality_weights is not None and r.scores["quality_hat"].n_unique() > 2
    else:
        assert m.idf is None and m.difficulty_model == "ridge" and m.pools == ["max"]
    if case == "no_probe":
        assert m.quality_weights is None and set(got["quality_hat"]) == {NO_PROBE_QUALITY}
    # a new prompt's codes: one of the run's clusters, the same scores alone as beside the pool
    one = m.predict({pool: M[[7]] for pool, M in codes.items()}, ["new"])
    assert one.row(0) == ("new", *got.row(7)[1:])
    with pytest.raises(ValueError, match=r"codes_by_pool lacks \["):
        m.predict({}, p["id"])
    with pytest.raises(ValueError, match=r"need 3 rows \(one per id\) x 320 features"):
        m.predict({pool: M[:2] for pool, M in codes.items()}, ["a", "b", "c"])


def test_score_models_round_trip_through_safetensors_and_json(data, tmp_path):
    """save_score_models / load_score_models: plain arrays and JSON, no pickle; the loaded models predict the same
    numbers. A folder without them (a score artifact written before version 14) names the fix."""
    X, prompts, _ = data
    for quality in (True, False):
        p = prompts if quality else prompts.drop("quality")
        m = score_prompts(X, p, ScoreConfig(**FAST, baselines=False, n_clusters=4), ids=p["id"]).models
        folder = tmp_path / str(quality)
        folder.mkdir()
        paths = S.save_score_models(m, folder)
        assert sorted(f.name for f in folder.iterdir()) == sorted([S.SCORE_MODELS_ARRAYS, S.SCORE_MODELS_META])
        assert [f.name for f in paths] == [S.SCORE_MODELS_ARRAYS, S.SCORE_MODELS_META]
        back = S.load_score_models(folder)
        assert repr(back) == repr(m) and f"k={m.k}" in repr(m)
        for name in ("centroids", "idf", "difficulty_weights", "quality_weights"):
            a, b = getattr(m, name), getattr(back, name)
            assert (a is None and b is None) or np.array_equal(a, b), name
        assert back.predict({"max": X}, p["id"]).equals(m.predict({"max": X}, p["id"]))
    with pytest.raises(ValueError, match=r"holds no fitted score models .*saerl run <config>"):
        S.load_score_models(tmp_path)


def test_ids_are_required_so_a_prompts_frame_in_another_order_cannot_misalign_the_codes(data):
    """ids defaulted to the prompts' row order: a prompts frame sorted or filtered another way than the codes fitted
    every model on permuted labels, silently (Spearman .76 -> .05 on the demo). ids is now required (keyword-only):
    with it, the prompts frame may come in any order and the scores are the same."""
    X, prompts, _ = data
    cfg = ScoreConfig(**FAST, baselines=False, n_clusters=4)
    with pytest.raises(TypeError, match="ids"):
        score_prompts(X, prompts, cfg)
    with pytest.raises(TypeError, match="ids"):
        property_report(X, prompts, cfg, prompts.select("id").with_columns(cluster=pl.lit(0)))
    with pytest.raises(ValueError, match="ids is required"):
        S.align_inputs(X, prompts, cfg, None, ids=None)
    with pytest.raises(ValueError, match=r"ids repeat an id \('p0000'"):
        S.align_inputs(X, prompts, cfg, None, ids=["p0000"] * X.shape[0])
    aligned = score_prompts(X, prompts, cfg, ids=prompts["id"])
    shuffled = prompts.sample(fraction=1.0, shuffle=True, seed=3)
    assert shuffled["id"].to_list() != prompts["id"].to_list()
    again = score_prompts(X, shuffled, cfg, ids=prompts["id"])
    assert again.scores.equals(aligned.scores) and again.params == aligned.params


def test_codes_in_another_row_order_get_the_same_clusters_scores_and_report(data):
    """The codes' rows follow the data file's order, and k-means++ seeds, cross-validation folds and the report's
    samples are drawn by row: the same codes in another order fitted other clusters (ARI .91 on the testbed's
    codes, session 46) and other difficulty models. The fits now read the rows in id order: the same rows in any order
    give the same clusters, scores (in the rows' given order), choices and report."""
    X, prompts, R = data
    cfg = ScoreConfig(**FAST, n_clusters=4)
    first = scored(X, prompts, cfg, R=R)
    perm = np.random.default_rng(5).permutation(X.shape[0])
    ids = prompts["id"].gather(perm)
    again = scored(X[perm], prompts, cfg, R=R[perm], ids=ids)
    assert again.scores["id"].to_list() == ids.to_list()  # in the rows' given order
    assert again.scores.sort("id").equals(first.scores.sort("id")) and again.params == first.params
    assert again.report.equals(first.report) and again.clusters.equals(first.clusters)
    assert again.heldout.sort("id").equals(first.heldout.sort("id"))


@pytest.mark.slow
def test_score_new_scores_new_prompts_with_a_finished_runs_models(tmp_path):
    """score_new on a smoke run (its score stage saves its models: score_models.safetensors + .json): prompts of
    the run's pool get their stored scores back (re-extracted and re-encoded with the run's model and SAE), a new
    prompt well-formed scores in one of the run's clusters; a run that stopped before the score stage says so."""
    from pathlib import Path

    from saerl.artifacts import ArtifactStore
    from saerl.config import load_config
    from saerl.pipeline import run_all
    from saerl.report import record_results
    from saerl.runs import save_run
    from saerl.sae import load_codes_csr

    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    root = tmp_path / "root"
    store = ArtifactStore(root)
    early = load_config(smoke, ["runtime.torch_threads=1", "tracking.enabled=false", f"runtime.artifact_root={root}",
                                "testbed.defect_share=0.35"])
    save_run(root, record_results(store, early, run_all(store, early, until="encode")))
    with pytest.raises(ValueError, match=r"has no score stage: score_new needs a run that reached the score stage"):
        S.score_new(root, "latest", ["what is 1 + 1 ?"])
    results = run_all(store, early, until="score")
    save_run(root, record_results(store, early, results))
    score_dir = Path(results["score"].ref.path)
    stored = pl.read_parquet(score_dir / "scores.parquet")
    models = S.load_score_models(score_dir)
    assert models.quality_weights is not None, "the defects give the quality probe labels of both classes"
    # the runner saved the models score_prompts fitted: on the stored codes they give the stored scores
    codes = {pool: load_codes_csr(results["encode"].ref.path, pool) for pool in models.pools}
    ids = codes[models.pools[0]][0]
    again = models.predict({pool: M for pool, (_, M) in codes.items()}, ids)
    expect = pl.DataFrame({"id": ids}).join(stored, on="id", how="left", maintain_order="left")
    assert again["cluster"].to_list() == expect["cluster"].to_list()
    assert np.allclose(again["difficulty_hat"], expect["difficulty_hat"], rtol=1e-5, atol=1e-6)
    assert np.allclose(again["quality_hat"], expect["quality_hat"], rtol=1e-5, atol=1e-6)

    pool = pl.read_parquet(Path(results["ingest"].ref.path) / "prompts.parquet").head(4)
    new = "what is 2 + 3 ?"
    got = S.score_new(root, "latest", [*pool["prompt"], new], ids=[*pool["id"], "mine"])
    assert got.columns == list(S.SCORES_COLUMNS) and got["id"].to_list() == [*pool["id"], "mine"]
    mine = pool.select("id").join(stored, on="id", how="left", maintain_order="left")
    assert got.head(4)["cluster"].to_list() == mine["cluster"].to_list()
    assert np.allclose(got.head(4)["difficulty_hat"], mine["difficulty_hat"], rtol=1e-5, atol=1e-6)
    assert np.allclose(got.head(4)["quality_hat"], mine["quality_hat"], rtol=1e-5, atol=1e-6)
    last = got.row(4, named=True)
    assert 0 <= last["cluster"] < models.k and np.isfinite(last["difficulty_hat"]) and 0 < last["quality_hat"] < 1
    assert S.score_new(root, "latest", [new])["id"].to_list() == ["new-0"]  # default ids
    with pytest.raises(ValueError, match="one distinct id per prompt"):
        S.score_new(root, "latest", [new, new], ids=["a", "a"])


@pytest.mark.parametrize("prompts, expected", [
    ("What is the second biggest of 12 , 85 , 40 , 7 ?", "got one str: wrap one prompt in a list"),
    (["What is 2 + 3 ?", None, 5], r"prompts\[1\] is NoneType None, not a prompt text \(str\)"),
    (["What is 2 + 3 ?", 5], r"prompts\[1\] is int 5"),
    (7, "got int 7: wrap one prompt in a list"),
])
def test_score_new_refuses_one_str_or_items_that_are_not_text(tmp_path, prompts, expected):
    """score_new(root, run, "one prompt") scored each character as a prompt (48 rows), and None / 5 in the list were
    scored as the texts 'None' and '5'; refused before the run is read."""
    with pytest.raises(TypeError, match=expected):
        S.score_new(tmp_path, "latest", prompts)


def test_score_new_takes_the_runs_record_for_its_id(tmp_path):
    """score_new(root, load_run(root, ...), ...) failed with "startswith first arg must be str ..., not RunRecord"."""
    from saerl.runs import RunRecord, StageRecord, load_run, save_run

    record = RunRecord(name="demo", run_id="20260101-000000-aaaaaa")
    record.stages["ingest"] = StageRecord("ingest", "ikey", "computed", "", {}, {})
    save_run(tmp_path, record)
    with pytest.raises(ValueError, match="run 20260101-000000-aaaaaa has no extract, sae, encode, score stage"):
        S.score_new(tmp_path, load_run(tmp_path, "latest"), ["what is 1 + 1 ?"])


def test_score_prompts_names_what_to_pass_for_the_whole_config_or_a_path(data):
    """The whole config ("'PipelineConfig' object has no attribute 'model_pool'") or the prompts' path ("string
    indices must be integers") passed from a notebook: a TypeError naming what to pass."""
    from saerl.config import PipelineConfig

    X, prompts, _ = data
    with pytest.raises(TypeError, match=r"takes the config's score section, not a PipelineConfig: .*cfg\.score"):
        score_prompts(X, prompts, PipelineConfig(), ids=prompts["id"])
    with pytest.raises(TypeError, match=r"prompts must be a polars DataFrame .*not a str: read .*prompts\.parquet"):
        score_prompts(X, "prompts.parquet", ScoreConfig(**FAST), ids=prompts["id"])


def test_align_inputs_names_ids_that_miss_the_codes_rows_or_the_prompts(data):
    """ids one short of the codes' rows say how many of each; an id matching no prompt says how many are unmatched."""
    X, prompts, _ = data
    cfg = ScoreConfig(**FAST, baselines=False, n_clusters=4)
    ids = prompts["id"].to_list()
    with pytest.raises(ValueError, match=rf"X has {X.shape[0]} rows, C {X.shape[0]} and D \[{X.shape[0]}\] but "
                                         rf"{len(ids) - 1} ids were given"):
        S.align_inputs(X, prompts, cfg, None, ids=ids[:-1])
    with pytest.raises(ValueError, match=r"ids of X must each match one prompts row: 1 unmatched, 0 extra rows"):
        S.align_inputs(X, prompts, cfg, None, ids=["no such id", *ids[1:]])
