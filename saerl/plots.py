"""Figures for the score and curriculum stages. Each function returns a matplotlib Figure built without pyplot
(no global backend state; ``fig.savefig`` renders with Agg), ready for ``mlflow.log_figure``.

- :func:`cluster_map`: prompts in 2-D (TruncatedSVD of the weighted SAE codes) coloured by cluster and, beside
  it, by true topic;
- :func:`difficulty_scatter`: predicted vs true difficulty;
- :func:`curriculum_difficulty`: difficulty_hat along the curriculum position, one colour per cluster;
- :func:`cluster_top_features`: the top SAE features of each cluster, by mean weight;
- :func:`train_curves` / :func:`accuracy_vs_step`: one training run, and every arm's held-out accuracy
  (with the steps-to-target target line).

Every figure draws its texts in the installed fonts of FONT_FALLBACK, glyph by glyph; a topic no installed font can
draw is named by an ASCII stand-in ("topic 2": :func:`stand_ins`), whose key :func:`stand_in_note` gives.

Groups (clusters, topics) and arms take their colours from one categorical palette, GROUP_COLORS
(:func:`group_style`, :func:`arm_styles`): a cluster has one colour in cluster_map and curriculum_difficulty, an
arm one colour in every figure.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping

import numpy as np
import polars as pl
import scipy.sparse as sp
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.text import Text
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


log = logging.getLogger("saerl.plots")

# Font families a figure's texts are drawn in, tried glyph by glyph in this order (matplotlib >= 3.6): matplotlib's
# own DejaVu Sans (Latin, Greek, Cyrillic, Arabic, Hebrew), then fonts with Chinese, Japanese, Korean, Thai or Indic
# glyphs where installed (label_fonts names only the installed ones: a missing family is a findfont warning)
FONT_FALLBACK = ("DejaVu Sans", "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK KR", "Noto Sans CJK TC",
                 "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback",
                 "Microsoft YaHei", "PingFang SC", "Hiragino Sans", "Arial Unicode MS", "Noto Sans Thai",
                 "Noto Sans Devanagari", "Noto Sans Bengali", "Noto Sans Arabic", "Noto Sans Hebrew")
FONT_FIX = ("install a font that has them (Debian/Ubuntu: apt-get install fonts-noto-cjk for Chinese, Japanese and "
            "Korean; fonts-noto for other scripts)")
STAND_IN_KEY_SHOWN = 20  # stand-ins whose names stand_in_note lists (the cluster map's legend names 20 topics)
UNDRAWABLE = "?"  # what a figure draws for a character no installed font has, in a text no stand-in replaced


@functools.cache
def label_fonts() -> tuple[tuple[str, ...], frozenset[int]]:
    """The font families a figure's texts are drawn in: matplotlib's default sans-serif font (rcParams; DejaVu Sans
    unless configured), then the FONT_FALLBACK families installed here, in order; and every code point one of them
    has a glyph for (read once per process: a font installed later is seen by the next run)."""
    from matplotlib import font_manager

    default = font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]))
    default = font_manager.get_font(default).family_name
    installed = {f.name for f in font_manager.fontManager.ttflist}
    families = tuple(dict.fromkeys(name for name in (default, *FONT_FALLBACK) if name in installed))
    covered: set[int] = set()
    for name in families:
        path = font_manager.findfont(font_manager.FontProperties(family=[name]), fallback_to_default=False)
        covered.update(font_manager.get_font(path).get_charmap())
    return families, frozenset(covered)


def drawable(text: str) -> bool:
    """Whether an installed FONT_FALLBACK font has a glyph for every character of `text` (line breaks aside):
    matplotlib draws any other as an empty box, with a UserWarning per glyph."""
    covered = label_fonts()[1]
    return all(ord(c) in covered for c in text if c != "\n")


def stand_ins(names: Iterable[str], noun: str) -> dict[str, str]:
    """What the figures draw for each of some names a user gave (topics): the name itself where it is drawable, else
    an ASCII stand-in "<noun> <i>", i its place among the distinct names in sorted order (from 1; primed when
    another name is that text already), so one pool's topics get the same stand-ins in every figure. in: the
    names (repeats and "" allowed, "" left out); out: {name: text drawn}."""
    distinct = sorted({str(n) for n in names if n})
    out: dict[str, str] = {}
    taken = set(distinct)
    for i, name in enumerate(distinct, 1):
        shown = name
        if not drawable(name):
            shown = f"{noun} {i}"
            while shown in taken:
                shown += "'"
            taken.add(shown)
        out[name] = shown
    return out


def stand_in_note(shown: Mapping[str, str], noun: str) -> str | None:
    """The one warning about a figure's stand-ins (stand_ins): how many names no installed font can draw, the key
    (stand-in = name, the first STAND_IN_KEY_SHOWN) and the fix; None when every name is drawn as itself."""
    swapped = [(text, name) for name, text in shown.items() if text != name]
    if not swapped:
        return None
    key = ", ".join(f"{text} = {name}" for text, name in swapped[:STAND_IN_KEY_SHOWN])
    more = f" and {len(swapped) - STAND_IN_KEY_SHOWN} more" if len(swapped) > STAND_IN_KEY_SHOWN else ""
    return (f"{_count(len(swapped), noun + ' name')} use{'s' if len(swapped) == 1 else ''} characters no installed "
            f"font has, so the plots draw a stand-in: {key}{more}; to see "
            f"the names themselves, {FONT_FIX} (plots drawn after that show them)")


def use_label_fonts(fig: Figure) -> Figure:
    """Every text of `fig` drawn in the installed FONT_FALLBACK fonts (label_fonts), glyph by glyph; in a text still
    holding a character none of them has (a name no stand-in replaced: a caller's own set or arm name), that
    character is drawn as UNDRAWABLE, with one warning for the figure, instead of an empty box and a matplotlib
    UserWarning per glyph. Call it before the figure's layout is computed (tight_layout measures the texts)."""
    families = list(label_fonts()[0])
    missing: set[str] = set()
    for text in fig.findobj(Text):
        text.set_fontfamily(families)
        value = text.get_text()
        if not drawable(value):
            missing.update(c for c in value if c != "\n" and not drawable(c))
            text.set_text("".join(c if c == "\n" or drawable(c) else UNDRAWABLE for c in value))
    if missing:
        log.warning("a figure's labels use %d characters no installed font has (%s): drawn as %r; %s", len(missing),
                    "".join(sorted(missing)[:STAND_IN_KEY_SHOWN]), UNDRAWABLE, FONT_FIX)
    return fig


def _layout(fig: Figure, **tight: object) -> Figure:
    """The figure's fonts set (use_label_fonts), then its tight layout (keywords of Figure.tight_layout)."""
    use_label_fonts(fig)
    fig.tight_layout(**tight)  # type: ignore[arg-type]
    return fig


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


def _shown_names(given: Iterable[str], names: Mapping[str, str] | None, noun: str) -> Mapping[str, str]:
    """`names` when given; else stand_ins of the `given` names, their stand_in_note logged as a warning (a figure
    drawn outside a stage, which would have kept the note)."""
    if names is not None:
        return names
    shown = stand_ins(given, noun)
    note = stand_in_note(shown, noun)
    if note:
        log.warning(note)
    return shown


def cluster_map(Z: sp.spmatrix, clusters: np.ndarray, topics: np.ndarray | None = None, seed: int = 0,
                names: Mapping[str, str] | None = None) -> Figure:
    """2-D TruncatedSVD projection of the SAE codes Z [n, d_sae] as clustered (L2-normalised, TF-IDF weighted
    when score.tfidf); left panel coloured by k-means cluster (group_style of the cluster id, as in
    curriculum_difficulty), right panel by true topic (when `topics` is given; prompts without one are grey, named
    NO_TOPIC), each topic named as `names` says (stand_ins of the pool's topics, which the caller reports with
    stand_in_note; None: stand_ins of `topics`, the note logged as a warning)."""
    xy = TruncatedSVD(2, random_state=seed).fit_transform(Z) if min(Z.shape) > 2 else np.zeros((Z.shape[0], 2))
    panels = 2 if topics is not None else 1
    fig = Figure(figsize=(6 * panels, 5))
    axes = fig.subplots(1, panels, squeeze=False)
    _scatter_groups(axes[0, 0], xy, np.asarray(clusters), "prompts by SAE cluster", noun="cluster", by_id=True)
    if topics is not None:
        given = topic_names(topics)
        shown = _shown_names(given, names, "topic")
        missing = given == ""
        if missing.any():  # drawn first, grey, so its legend entry never reads as a topic
            axes[0, 1].scatter(xy[missing, 0], xy[missing, 1], s=6, alpha=0.7, color=NO_TOPIC_COLOR, label=NO_TOPIC)
        drawn = np.array([shown.get(t, t) for t in given[~missing]], dtype=str)
        _scatter_groups(axes[0, 1], xy[~missing], drawn, "prompts by true topic", noun="topic")
    fig.suptitle("Prompts in SAE feature space")
    _layout(fig)
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
    _layout(fig)
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
    _layout(fig)
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
    _layout(fig)
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
    _layout(fig)
    return fig


def _cluster_caption(row: dict, names: Mapping[str, str]) -> str:
    """A cluster panel's title: id, size and share, and its dominant true topic when known (as `names` draws it)."""
    text = f"cluster {row['cluster']}: {_count(row['size'], 'prompt')} ({100 * row['share']:.0f}%)"
    if row.get("top_topic") is not None:
        topic = names.get(row["top_topic"], row["top_topic"])
        text += f"\nmostly {topic} ({100 * row['top_topic_share']:.0f}%)"
    return text


def cluster_top_features(clusters: pl.DataFrame, max_clusters: int = MAX_CLUSTER_PANELS,
                         names: Mapping[str, str] | None = None) -> Figure:
    """The top SAE features of each cluster as horizontal bars of their mean weight (in the L2-normalised codes,
    TF-IDF weighted when score.tfidf, as the clustering saw them), one panel per cluster (the `max_clusters` largest); a
    feature that is also among another cluster's top features is drawn grey, one only this cluster has blue.
    in: the score stage's clusters frame (cluster, size, share, top_features, top_weights, top_topic,
    top_topic_share), `names`: each topic as drawn, as for cluster_map (None: stand_ins of the top topics, the note
    logged); out: Figure."""
    shown = clusters.sort("size", descending=True).head(max_clusters).sort("cluster")
    topic_text = _shown_names(shown["top_topic"].drop_nulls().to_list() if "top_topic" in shown.columns else [],
                              names, "topic")
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
        ax.set_title(_cluster_caption(row, topic_text), fontsize=8)
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
    _layout(fig, rect=(0, 0.06, 1, 1))
    return fig
