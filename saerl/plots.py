"""Figures for the score and curriculum stages. Each function returns a matplotlib Figure built without pyplot
(no global backend state; ``fig.savefig`` renders with Agg), ready for ``mlflow.log_figure``.

- :func:`cluster_map`: prompts in 2-D (TruncatedSVD of the weighted SAE codes) coloured by cluster and, beside
  it, by true topic;
- :func:`difficulty_scatter`: predicted vs true difficulty;
- :func:`curriculum_difficulty`: difficulty_hat along the curriculum position, one colour per cluster;
- :func:`cluster_top_features`: the top SAE features of each cluster, by mean weight;
- :func:`train_curves` / :func:`accuracy_vs_step`: one training run, and every arm's held-out accuracy
  (with the steps-to-target target line).

Groups (clusters, topics) and arms take their colours from one categorical palette, GROUP_COLORS
(:func:`group_style`, :func:`arm_styles`): a cluster has one colour in cluster_map and curriculum_difficulty, an
arm one colour in every figure.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from scipy.stats import spearmanr
from sklearn.decomposition import TruncatedSVD

MAX_CLUSTER_PANELS = 12  # clusters drawn by cluster_top_features (the largest ones)
PANEL_COLUMNS = 4  # panels per row in cluster_top_features
X_TICKS = 3  # at most this many x tick intervals on a cluster_top_features panel
SHARED_COLOR, OWN_COLOR = "tab:gray", "tab:blue"  # a feature that is top in other clusters too / only in this one
FEATURE_WEIGHT_LABEL = "mean weight (codes as clustered, unit-norm rows)"  # TF-IDF weighted only when score.tfidf
CURRICULUM_LEGEND_CLUSTERS = 12  # clusters named in curriculum_difficulty's legend (the rest are drawn unnamed)
NO_TOPIC, NO_TOPIC_COLOR = "(no topic)", "lightgray"  # prompts without a true topic (null, NaN or "") in cluster_map
# Categorical colours of groups (clusters, topics) and arms, in order: tab10 (all that <= 10 groups use), then the
# darkest shade of tab20b's indigo, olive, ochre and plum (not its brick, #843c39: tab10's brown, #8c564b, again).
# Not tab20: its dark/light pairs of one hue made neighbouring groups look alike and its light grey is
# NO_TOPIC_COLOR; not tab20c's darkest shades: they are tab10's blue, orange, green, purple and grey again.
TAB20B_DARKEST = (0, 4, 8, 16)  # tab20b's indigo, olive, ochre and plum (12: brick, left out)
GROUP_COLORS: tuple[str, ...] = tuple(to_hex(c) for c in (*colormaps["tab10"].colors,
                                                         *(colormaps["tab20b"].colors[i] for i in TAB20B_DARKEST)))
# A group's marker: "o" on the first pass through GROUP_COLORS, "^" on the next, ..., so the first
# len(GROUP_COLORS) * len(GROUP_MARKERS) (112) groups never share both colour and marker
GROUP_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")
# The arms train.arms allows (saerl.config.TrainConfig.arms): each keeps its colour, marker and line style in every
# figure whichever arms a run trained; another arm name takes the next style, in name order
KNOWN_ARMS = ("saerl", "vanilla", "order_only", "filter_only")
ARM_LINESTYLES = ("-", "--", "-.", ":")  # with the arm's marker (drawn open), two arms' equal curves both stay visible
ACCURACY_MARGIN = 0.05  # headroom above an accuracy axis's largest value (fraction correct)
# Axes.plot keywords of an accuracy curve: drawn whole and over the axis line, so a curve at 0 (the axis's bottom)
# is not cut in half and hidden under it
ON_THE_AXIS = {"clip_on": False, "zorder": 3}


def legend_title(noun: str, shown: int, total: int) -> str:
    """A legend's title that says when it names only some groups: "cluster", or "cluster (first 12 of 16)"."""
    return noun if total <= shown else f"{noun} (first {shown} of {total})"


def group_style(index: int) -> tuple[str, str]:
    """Colour and marker of the group at `index` (>= 0): GROUP_COLORS in turn, the marker (GROUP_MARKERS) changing
    each time the colours start over, so no two of the first len(GROUP_COLORS) * len(GROUP_MARKERS) share both."""
    cycle, slot = divmod(index, len(GROUP_COLORS))
    return GROUP_COLORS[slot], GROUP_MARKERS[cycle % len(GROUP_MARKERS)]


def _style_indices(names: np.ndarray, by_id: bool) -> list[int]:
    """Each group's index for group_style. in: the sorted distinct group values; `by_id`: index a group by its own
    value when every value is a whole number >= 0 (a cluster id: a cluster then has one colour in every figure,
    whichever clusters a figure shows); out: those values, or else each group's rank."""
    if by_id and names.dtype.kind in "iuf" and bool(np.all(names >= 0)) and bool(np.all(np.mod(names, 1) == 0)):
        return [int(g) for g in names]
    return list(range(len(names)))


def _scatter_groups(ax: Axes, xy: np.ndarray, groups: np.ndarray, title: str, max_legend: int = 20,
                    noun: str | None = None, by_id: bool = False) -> None:
    """Scatter `xy` one colour (and, past len(GROUP_COLORS) groups, marker) per group value (group_style of its
    rank, or of its value when `by_id`: _style_indices), with a legend (first `max_legend` groups, its title saying
    so when there are more: legend_title of `noun`, or of "groups" when no noun is given)."""
    names = np.unique(groups)
    for j, (g, index) in enumerate(zip(names, _style_indices(names, by_id), strict=True)):
        m = groups == g
        color, marker = group_style(index)
        ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.7, color=color, marker=marker,
                   label=str(g) if j < max_legend else None)
    ax.set(title=title, xlabel="SVD 1", ylabel="SVD 2")
    heading = legend_title(noun or "groups", max_legend, len(names))
    ax.legend(fontsize=6, markerscale=2, loc="best", title=heading if noun or len(names) > max_legend else None,
              title_fontsize=6)


def topic_names(topics: np.ndarray) -> np.ndarray:
    """Topics as text, "" for a prompt without one. in: one topic per prompt (strings, None or NaN for none);
    out: a str array (np.asarray(...).astype(str) would name the missing topic "None" or "nan")."""
    return np.array(["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in topics], dtype=str)


def cluster_map(Z: sp.spmatrix, clusters: np.ndarray, topics: np.ndarray | None = None, seed: int = 0) -> Figure:
    """2-D TruncatedSVD projection of the SAE codes Z [n, d_sae] as clustered (L2-normalised, TF-IDF weighted
    when score.tfidf); left panel coloured by k-means cluster (group_style of the cluster id, as in
    curriculum_difficulty), right panel by true topic (when `topics` is given; prompts without one are grey, named
    NO_TOPIC)."""
    xy = TruncatedSVD(2, random_state=seed).fit_transform(Z) if min(Z.shape) > 2 else np.zeros((Z.shape[0], 2))
    panels = 2 if topics is not None else 1
    fig = Figure(figsize=(6 * panels, 5))
    axes = fig.subplots(1, panels, squeeze=False)
    _scatter_groups(axes[0, 0], xy, np.asarray(clusters), "prompts by SAE cluster", noun="cluster", by_id=True)
    if topics is not None:
        names = topic_names(topics)
        missing = names == ""
        if missing.any():  # drawn first, grey, so its legend entry never reads as a topic
            axes[0, 1].scatter(xy[missing, 0], xy[missing, 1], s=6, alpha=0.7, color=NO_TOPIC_COLOR, label=NO_TOPIC)
        _scatter_groups(axes[0, 1], xy[~missing], names[~missing], "prompts by true topic", noun="topic")
    fig.suptitle("Prompts in SAE feature space")
    fig.tight_layout()
    return fig


DIFFICULTY_MODEL_NAMES = {"elasticnet": "ElasticNetCV", "ridge": "RidgeCV", "mean": "mean predictor"}


def difficulty_label(model: str | None, pool: str | None) -> str:
    """Legend name of the difficulty regressor the score stage chose. in: its family ("elasticnet", "ridge",
    "mean"; score params' difficulty_model) and the pooled codes it read (difficulty_pool), either None when
    unknown; out: e.g. "SAE RidgeCV (max-pooled codes)"."""
    name = DIFFICULTY_MODEL_NAMES.get(model or "", model or "difficulty model")
    return f"SAE {name}" + (f" ({pool}-pooled codes)" if pool else "")


def difficulty_scatter(y_true: np.ndarray, y_pred: np.ndarray, label: str = "SAE difficulty model",
                       identity: bool = True, rows: str = "", truth: str = "true difficulty") -> Figure:
    """Predicted vs true difficulty (rows with both): Spearman rho, n and the `rows` shown (e.g. "prompts it was
    not fitted on") in the title, `label` (:func:`difficulty_label`, the predictor) in the legend, and, when
    `identity` (both on one scale), the y = x line; `truth` names the x axis and the title's truth (e.g.
    "measured difficulty (1 - pass rate)")."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    ok = ~(np.isnan(y_true) | np.isnan(y_pred))
    ranked = ok.sum() > 2 and np.ptp(y_true[ok]) > 0 and np.ptp(y_pred[ok]) > 0  # a constant side has no rho
    rho = float(spearmanr(y_true[ok], y_pred[ok]).statistic) if ranked else float("nan")
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.scatter(y_true[ok], y_pred[ok], s=8, alpha=0.6, label=label)
    if ok.any() and identity:
        lo, hi = min(y_true[ok].min(), y_pred[ok].min()), max(y_true[ok].max(), y_pred[ok].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    stats = f"Spearman {rho:.2f}, n={ok.sum()}" + (f"\n{rows}" if rows else "")
    ax.set_title(f"Predicted vs {truth}\n{stats}", fontsize=10)
    ax.set(xlabel=truth, ylabel="predicted difficulty")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def curriculum_difficulty(order: pl.DataFrame, window: int = 0) -> Figure:
    """difficulty_hat along the curriculum position (order frame from saerl.curriculum), points coloured by
    cluster (group_style of the cluster id, as in cluster_map; the legend names the first
    CURRICULUM_LEGEND_CLUSTERS, and its title says so when there are more), plus a rolling mean over `window`
    positions (default: about 2% of the run, at least 1), and a dashed line where each ramp or epoch after the first
    begins (saerl.curriculum.ramps: the first ramp is what a shorter run reads); whole-number position ticks."""
    order = order.sort("position").filter(pl.col("difficulty_hat").is_not_null())
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    if order.height:
        pos, diff = order["position"].to_numpy(), order["difficulty_hat"].to_numpy()
        clusters = order["cluster"].to_numpy()
        _scatter_groups(ax, np.c_[pos, diff], clusters, "", max_legend=CURRICULUM_LEGEND_CLUSTERS, by_id=True)
        w = window or max(1, order.height // 50)
        ax.plot(pos, order["difficulty_hat"].rolling_mean(w, min_samples=1).to_numpy(), "k-", lw=1.5,
                label=f"rolling mean ({w})")
        if "ramp" in order.columns:  # where each climb after the first begins (a run's budget, an epoch)
            starts = order.group_by("epoch", "ramp").agg(pl.col("position").min())["position"].sort().to_list()[1:]
            for j, x in enumerate(starts):
                ax.axvline(x, color="grey", ls="--", lw=0.8, label="next ramp or epoch" if j == 0 else None)
        ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2, title_fontsize=6,
                  title=legend_title("cluster", CURRICULUM_LEGEND_CLUSTERS, len(np.unique(clusters))))
    ax.set(title="Predicted difficulty along the curriculum", xlabel="position", ylabel="difficulty_hat")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # positions are whole numbers
    fig.tight_layout()
    return fig


def train_curves(log: pl.DataFrame, curve: pl.DataFrame, title: str) -> Figure:
    """One training run: mean reward and the share of zero-spread groups per step (left), greedy held-out
    accuracy per eval step and set (right; an accuracy axis, _accuracy_axis), whole-number steps on both.
    in: trl's per-step log (step, reward, frac_reward_zero_std), eval curve (step, set, greedy); out: Figure."""
    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    if {"step", "reward"} <= set(log.columns) and log.height:
        left.plot(log["step"], log["reward"], lw=0.8, label="reward (mean)")
        if "frac_reward_zero_std" in log.columns:
            left.plot(log["step"], log["frac_reward_zero_std"], lw=0.8, alpha=0.6, label="groups without spread")
        left.legend(fontsize=7)
    left.set(title=f"{title}: training", xlabel="RL step (optimizer steps)", ylabel="mean reward / share of groups")
    for s in curve["set"].unique().sort().to_list() if curve.height else []:
        c = curve.filter(pl.col("set") == s).sort("step")
        right.plot(c["step"], c["greedy"], marker="o", ms=3, label=s + _problems(c), **ON_THE_AXIS)
    right.set(title="greedy held-out accuracy (in-training eval problems)", xlabel="RL step (optimizer steps)",
              ylabel="accuracy (fraction correct)")
    _accuracy_axis(right, curve["greedy"].to_list() if "greedy" in curve.columns else [])
    for ax in (left, right):
        _step_axis(ax)
    if curve.height:
        right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _step_axis(ax: Axes) -> None:
    """Whole-number ticks on an RL step x axis (a 3-step run was ticked 1.25, 1.5, ...)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _accuracy_axis(ax: Axes, values: list[float | None]) -> None:
    """An accuracy (fraction correct) y axis from 0 to ACCURACY_MARGIN above the largest of `values` (what the
    panel draws: curves, bands, target), that largest counted as at most 1; 0 to 1 + margin when none is finite
    (an all-zero run was drawn from -0.04 to 0.04)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    top = min(1.0, max(0.0, *finite)) if finite else 1.0
    ax.set_ylim(0.0, top + ACCURACY_MARGIN)


def _problems(curve: pl.DataFrame) -> str:
    """' (200 problems)': how many problems a curve's points are scored on (its `n` column), '' without one."""
    n = curve["n"].max() if "n" in curve.columns and curve.height else None
    return f" ({_count(int(n), 'problem')})" if n else ""


def _count(n: int, noun: str) -> str:
    """'1 seed', '3 seeds': a count with its noun in the right number."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _target_for(target: float | dict[str, float] | None, set_name: str) -> float | None:
    """The target accuracy of one held-out set: the mapping's value for it, or the one number for all."""
    if isinstance(target, dict):
        return target.get(set_name)
    return target


def arm_styles(arms: list[str]) -> dict[str, dict[str, str]]:
    """Line style of each arm, the same in every figure: a KNOWN_ARMS arm takes the style at its place there, any
    other arm the next ones in name order (GROUP_COLORS, GROUP_MARKERS and ARM_LINESTYLES at that index).
    in: the arm names; out: {arm: {"color", "marker", "linestyle"}} (keyword arguments of Axes.plot), in that
    style order (the solid line first: an arm drawn later, broken or dotted, leaves an equal one below it seen)."""
    others = sorted(set(arms) - set(KNOWN_ARMS))
    return {arm: {"color": GROUP_COLORS[i % len(GROUP_COLORS)], "marker": GROUP_MARKERS[i % len(GROUP_MARKERS)],
                  "linestyle": ARM_LINESTYLES[i % len(ARM_LINESTYLES)]}
            for i, arm in enumerate((*KNOWN_ARMS, *others)) if arm in arms}


def accuracy_vs_step(curve: pl.DataFrame, target: float | dict[str, float] | None = None) -> Figure:
    """Greedy held-out accuracy vs step, one line per arm (arm_styles; mean over seeds, and with more than one
    seed a band = min..max over seeds, the legend saying which), one panel per held-out set, with the
    steps-to-target target as a labelled horizontal line; whole-number steps, accuracy from 0 (_accuracy_axis).
    in: curve (arm, seed, set, step, greedy); target: one accuracy (fraction) for every set, {set: accuracy},
    or None for no line; out: Figure."""
    sets = curve["set"].unique().sort().to_list() or ["(none)"]
    fig = Figure(figsize=(6 * len(sets), 4.5))
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    styles = arm_styles(curve["arm"].unique().to_list())
    for ax, s in zip(axes, sets, strict=True):
        per = curve.filter(pl.col("set") == s)
        drawn: list[float | None] = []
        present = set(per["arm"].to_list())
        for arm in (a for a in styles if a in present):
            g = (per.filter(pl.col("arm") == arm).group_by("step")
                 .agg(pl.col("greedy").mean().alias("m"), pl.col("greedy").min().alias("lo"),
                      pl.col("greedy").max().alias("hi"), pl.len().alias("n")).sort("step"))
            seeds = int(g["n"].max())
            label = f"{arm} (mean of {_count(seeds, 'seed')}, band = range)" if seeds > 1 else f"{arm} (1 seed)"
            ax.plot(g["step"], g["m"], ms=4, markerfacecolor="none", label=label, **styles[arm], **ON_THE_AXIS)
            if seeds > 1:
                ax.fill_between(g["step"].to_numpy(), g["lo"].to_numpy(), g["hi"].to_numpy(),
                                color=styles[arm]["color"], alpha=0.15)
            drawn += g["m"].to_list() + g["hi"].to_list()
        t = _target_for(target, s)
        if t is not None and not np.isnan(t):
            ax.axhline(t, color="k", ls="--", lw=1, label=f"steps-to-target target ({100 * t:.1f}%)")
            drawn.append(t)
        ax.set(title=f"held-out set {s}: greedy accuracy by RL step\non the in-training eval problems{_problems(per)}",
               xlabel="RL step (optimizer steps)", ylabel="greedy accuracy (fraction correct)")
        _step_axis(ax)
        _accuracy_axis(ax, drawn)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _cluster_caption(row: dict) -> str:
    """A cluster panel's title: id, size and share, and its dominant true topic when known."""
    text = f"cluster {row['cluster']}: {_count(row['size'], 'prompt')} ({100 * row['share']:.0f}%)"
    if row.get("top_topic") is not None:
        text += f"\nmostly {row['top_topic']} ({100 * row['top_topic_share']:.0f}%)"
    return text


def cluster_top_features(clusters: pl.DataFrame, max_clusters: int = MAX_CLUSTER_PANELS) -> Figure:
    """The top SAE features of each cluster as horizontal bars of their mean weight (in the L2-normalised codes,
    TF-IDF weighted when score.tfidf, as the clustering saw them), one panel per cluster (the `max_clusters` largest); a
    feature that is also among another cluster's top features is drawn grey, one only this cluster has blue.
    in: the score stage's clusters frame (cluster, size, share, top_features, top_weights, top_topic,
    top_topic_share); out: Figure."""
    shown = clusters.sort("size", descending=True).head(max_clusters).sort("cluster")
    counts: dict[int, int] = {}
    for feats in clusters["top_features"].to_list():
        for f in feats or []:
            counts[f] = counts.get(f, 0) + 1
    n = max(1, shown.height)
    cols = min(PANEL_COLUMNS, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.6 * cols, 0.6 + 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, row in zip(axes, shown.iter_rows(named=True), strict=False):
        feats, weights = list(row["top_features"] or []), list(row["top_weights"] or [])
        colors = [SHARED_COLOR if counts.get(f, 0) > 1 else OWN_COLOR for f in feats]
        ax.barh(range(len(feats)), weights, color=colors)
        ax.set_yticks(range(len(feats)), [f"feature {f}" for f in feats], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(_cluster_caption(row), fontsize=8)
        ax.set_xlabel(FEATURE_WEIGHT_LABEL, fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=X_TICKS))  # small panels: more ticks ran into each other
    for ax in axes[shown.height:]:
        ax.set_axis_off()
    hidden = clusters.height - shown.height
    title = "Top SAE features per cluster" + (f" ({shown.height} largest of {clusters.height})" if hidden else "")
    fig.suptitle(title)
    fig.legend(handles=[Patch(color=OWN_COLOR, label="top in this cluster only"),
                        Patch(color=SHARED_COLOR, label="also top in another cluster")],
               loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
