"""Figures for the score and curriculum stages. Each function returns a matplotlib Figure built without pyplot
(no global backend state; ``fig.savefig`` renders with Agg), ready for ``mlflow.log_figure``.

- :func:`cluster_map`: prompts in 2-D (TruncatedSVD of the weighted SAE codes) coloured by cluster and, beside
  it, by true topic;
- :func:`difficulty_scatter`: predicted vs true difficulty;
- :func:`curriculum_difficulty`: difficulty_hat along the curriculum position, one colour per cluster.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from sklearn.decomposition import TruncatedSVD


def _scatter_groups(ax: Axes, xy: np.ndarray, groups: np.ndarray, title: str, max_legend: int = 20) -> None:
    """Scatter `xy` one colour per group value, with a legend (first `max_legend` groups)."""
    cmap = colormaps["tab20"]
    for j, g in enumerate(np.unique(groups)):
        m = groups == g
        ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.7, color=cmap(j % 20),
                   label=str(g) if j < max_legend else None)
    ax.set(title=title, xlabel="SVD 1", ylabel="SVD 2")
    ax.legend(fontsize=6, markerscale=2, loc="best")


def cluster_map(Z: sp.spmatrix, clusters: np.ndarray, topics: np.ndarray | None = None, seed: int = 0) -> Figure:
    """2-D TruncatedSVD projection of the (TF-IDF weighted, L2-normalised) SAE codes Z [n, d_sae]; left panel
    coloured by k-means cluster, right panel by true topic (when `topics` is given)."""
    xy = TruncatedSVD(2, random_state=seed).fit_transform(Z) if min(Z.shape) > 2 else np.zeros((Z.shape[0], 2))
    panels = 2 if topics is not None else 1
    fig = Figure(figsize=(6 * panels, 5))
    axes = fig.subplots(1, panels, squeeze=False)
    _scatter_groups(axes[0, 0], xy, np.asarray(clusters), "prompts by SAE cluster")
    if topics is not None:
        _scatter_groups(axes[0, 1], xy, np.asarray(topics).astype(str), "prompts by true topic")
    fig.suptitle("Prompts in SAE feature space")
    fig.tight_layout()
    return fig


def difficulty_scatter(y_true: np.ndarray, y_pred: np.ndarray, label: str = "SAE ElasticNet") -> Figure:
    """Predicted vs true difficulty (rows with both), with the y = x line and Spearman rho in the legend."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    ok = ~(np.isnan(y_true) | np.isnan(y_pred))
    rho = float(spearmanr(y_true[ok], y_pred[ok]).statistic) if ok.sum() > 2 else float("nan")
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(y_true[ok], y_pred[ok], s=8, alpha=0.6, label=f"{label} (Spearman {rho:.2f}, n={ok.sum()})")
    if ok.any():
        lo, hi = min(y_true[ok].min(), y_pred[ok].min()), max(y_true[ok].max(), y_pred[ok].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set(title="Predicted vs true difficulty", xlabel="true difficulty", ylabel="predicted difficulty")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curriculum_difficulty(order: pl.DataFrame, window: int = 0) -> Figure:
    """difficulty_hat along the curriculum position (order frame from saerl.curriculum), points coloured by
    cluster, plus a rolling mean over `window` positions (default: about 2% of the run, at least 1)."""
    order = order.sort("position").filter(pl.col("difficulty_hat").is_not_null())
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    if order.height:
        pos, diff = order["position"].to_numpy(), order["difficulty_hat"].to_numpy()
        _scatter_groups(ax, np.c_[pos, diff], order["cluster"].to_numpy(), "", max_legend=12)
        w = window or max(1, order.height // 50)
        ax.plot(pos, order["difficulty_hat"].rolling_mean(w, min_samples=1).to_numpy(), "k-", lw=1.5,
                label=f"rolling mean ({w})")
        ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2)
    ax.set(title="Predicted difficulty along the curriculum", xlabel="position", ylabel="difficulty_hat")
    fig.tight_layout()
    return fig


def train_curves(log: pl.DataFrame, curve: pl.DataFrame, title: str) -> Figure:
    """One training run: mean reward and the share of zero-spread groups per step (left), greedy held-out
    accuracy per eval step and set (right). in: trl's per-step log (step, reward, frac_reward_zero_std),
    eval curve (step, set, greedy); out: Figure."""
    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    if {"step", "reward"} <= set(log.columns) and log.height:
        left.plot(log["step"], log["reward"], lw=0.8, label="reward (mean)")
        if "frac_reward_zero_std" in log.columns:
            left.plot(log["step"], log["frac_reward_zero_std"], lw=0.8, alpha=0.6, label="groups without spread")
        left.legend(fontsize=7)
    left.set(title=f"{title}: training", xlabel="step")
    for s in curve["set"].unique().sort().to_list() if curve.height else []:
        c = curve.filter(pl.col("set") == s).sort("step")
        right.plot(c["step"], c["greedy"], marker="o", ms=3, label=s)
    right.set(title="greedy held-out accuracy", xlabel="step", ylabel="accuracy")
    if curve.height:
        right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def accuracy_vs_step(curve: pl.DataFrame) -> Figure:
    """Greedy held-out accuracy vs step, one line per arm (mean over seeds, band = min..max over seeds),
    one panel per held-out set. in: curve (arm, seed, set, step, greedy); out: Figure."""
    sets = curve["set"].unique().sort().to_list() or ["(none)"]
    fig = Figure(figsize=(6 * len(sets), 4.5))
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    cmap = colormaps["tab10"]
    for ax, s in zip(axes, sets, strict=True):
        per = curve.filter(pl.col("set") == s)
        for j, arm in enumerate(per["arm"].unique().sort().to_list()):
            g = (per.filter(pl.col("arm") == arm).group_by("step")
                 .agg(pl.col("greedy").mean().alias("m"), pl.col("greedy").min().alias("lo"),
                      pl.col("greedy").max().alias("hi"), pl.len().alias("n")).sort("step"))
            ax.plot(g["step"], g["m"], marker="o", ms=3, color=cmap(j), label=f"{arm} ({g['n'].max()} seeds)")
            ax.fill_between(g["step"].to_numpy(), g["lo"].to_numpy(), g["hi"].to_numpy(), color=cmap(j), alpha=0.15)
        ax.set(title=f"held-out set {s}", xlabel="RL step", ylabel="greedy accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
