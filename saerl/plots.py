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
