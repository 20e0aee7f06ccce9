"""saerl.plots: the top-features-per-cluster plot and the target line on accuracy vs step; every figure has a
title, labelled axes and a legend, and renders to PNG without pyplot."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure

from saerl.plots import (
    MAX_CLUSTER_PANELS,
    accuracy_vs_step,
    cluster_top_features,
    difficulty_label,
    difficulty_scatter,
)

CLUSTER_SCHEMA = {"cluster": pl.Int64, "size": pl.Int64, "share": pl.Float64, "top_features": pl.List(pl.Int64),
                  "top_weights": pl.List(pl.Float64), "examples": pl.List(pl.String), "top_topic": pl.String,
                  "top_topic_share": pl.Float64}


def _clusters(n: int) -> pl.DataFrame:
    """n clusters whose top features overlap in feature 0 only; cluster c has c + 1 prompts."""
    rows = [{"cluster": c, "size": c + 1, "share": (c + 1) / 100, "top_features": [0, 100 + c],
             "top_weights": [0.5, 0.25], "examples": ["q"], "top_topic": "add" if c % 2 else None,
             "top_topic_share": 0.75 if c % 2 else None} for c in range(n)]
    return pl.DataFrame(rows, schema=CLUSTER_SCHEMA)


def _curve() -> pl.DataFrame:
    return pl.DataFrame([{"arm": a, "seed": s, "set": st, "step": t, "greedy": 0.2 + 0.05 * t + 0.1 * s}
                         for a in ("saerl", "vanilla") for s in (0, 1) for st in ("a", "b") for t in (0, 2)])


def _line_labels(fig: Figure) -> list[list[str]]:
    return [[ln.get_label() for ln in ax.get_lines()] for ax in fig.axes]


def test_cluster_top_features_one_panel_per_cluster_with_legend(tmp_path):
    fig = cluster_top_features(_clusters(3))
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(drawn) == 3
    assert all(ax.get_title().startswith("cluster ") and "mean weight" in ax.get_xlabel() for ax in drawn)
    assert "mostly add (75%)" in drawn[1].get_title()
    assert [t.get_text() for t in drawn[0].get_yticklabels()] == ["feature 0", "feature 100"]
    colors = [p.get_facecolor() for p in drawn[0].patches]
    assert colors[0] != colors[1], "a feature shared with other clusters is drawn apart from an own one"
    assert fig.legends and fig.get_suptitle() == "Top SAE features per cluster"
    fig.savefig(tmp_path / "top.png")
    assert (tmp_path / "top.png").stat().st_size > 0


def test_cluster_top_features_keeps_the_largest_clusters():
    n = MAX_CLUSTER_PANELS + 3
    fig = cluster_top_features(_clusters(n))
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert len(titles) == MAX_CLUSTER_PANELS
    assert not any(t.startswith(("cluster 0:", "cluster 1:", "cluster 2:")) for t in titles), "smallest dropped"
    assert f"of {n}" in fig.get_suptitle()


def test_accuracy_vs_step_draws_a_labelled_target_line_per_set():
    fig = accuracy_vs_step(_curve(), target={"a": 0.25, "b": 0.3})
    labels = _line_labels(fig)
    assert len(fig.axes) == 2
    assert any("target (25.0%)" in label for label in labels[0])
    assert any("target (30.0%)" in label for label in labels[1])
    for ax, want in zip(fig.axes, (0.25, 0.3), strict=True):
        assert ax.get_title() and "step" in ax.get_xlabel() and "fraction" in ax.get_ylabel()
        assert ax.get_legend() is not None
        lines = {"target" if "target" in ln.get_label() else ln.get_label().split(" ")[0]: ln for ln in ax.get_lines()}
        assert list(lines["target"].get_ydata()) == [want, want], "the target line is drawn at its set's target"
        for arm in ("saerl", "vanilla"):  # the mean over seeds 0 and 1 (0.2 + 0.05 t and 0.3 + 0.05 t)
            assert list(lines[arm].get_xdata()) == [0, 2]
            assert list(lines[arm].get_ydata()) == pytest.approx([0.25, 0.35])


def test_accuracy_vs_step_target_is_optional_and_may_be_one_number():
    assert not any("target" in label for labels in _line_labels(accuracy_vs_step(_curve())) for label in labels)
    both = _line_labels(accuracy_vs_step(_curve(), target=0.4))
    assert all(any("target (40.0%)" in label for label in labels) for labels in both)


def test_difficulty_scatter_legend_names_the_chosen_regressor_and_pooling():
    import numpy as np

    assert difficulty_label("ridge", "max") == "SAE RidgeCV (max-pooled codes)"
    assert difficulty_label("elasticnet", None) == "SAE ElasticNetCV"
    assert difficulty_label(None, None) == "SAE difficulty model"
    y = np.arange(10, dtype=float)
    fig = difficulty_scatter(y, y[::-1], difficulty_label("ridge", "mean"))
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["SAE RidgeCV (mean-pooled codes)", "y = x"]
    assert "Spearman -1.00, n=10" in fig.axes[0].get_title()
    default = [t.get_text() for t in difficulty_scatter(y, y).axes[0].get_legend().get_texts()]
    assert "ElasticNet" not in default[0], "no regressor is named that the caller did not say was chosen"


def test_cluster_map_never_names_the_missing_topic():
    """Prompts without a true topic (null: the testbed's off-distribution rows; "" or NaN) are one grey group named
    NO_TOPIC in the topic panel, not a topic called "None" (nor an unnamed coloured one)."""
    import numpy as np
    import scipy.sparse as sp
    from matplotlib.colors import to_rgb

    from saerl.plots import NO_TOPIC, NO_TOPIC_COLOR, cluster_map

    Z = sp.csr_matrix(np.random.default_rng(0).uniform(size=(8, 5)))
    topics = np.array(["add", None, "mul", "", "add", float("nan"), "mul", "add"], dtype=object)
    ax = cluster_map(Z, np.array([0, 1] * 4), topics).axes[1]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [NO_TOPIC, "add", "mul"]
    sizes = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    assert sizes == {NO_TOPIC: 3, "add": 3, "mul": 2}
    grey = next(c for c in ax.collections if c.get_label() == NO_TOPIC)
    assert tuple(grey.get_facecolor()[0][:3]) == pytest.approx(to_rgb(NO_TOPIC_COLOR))


def test_curriculum_difficulty_legend_says_its_colours_are_clusters():
    from saerl.plots import curriculum_difficulty

    order = pl.DataFrame({"position": [0, 1, 2, 3], "cluster": [0, 1, 0, 1], "difficulty_hat": [0.1, 0.2, 0.3, 0.4]})
    legend = curriculum_difficulty(order).axes[0].get_legend()
    assert legend.get_title().get_text() == "cluster"  # the entries alone ("0", "1") name nothing
    assert [t.get_text() for t in legend.get_texts()][:2] == ["0", "1"]


def test_cluster_top_features_claims_no_tf_idf_weighting_the_codes_may_not_have():
    from saerl.config import ScoreConfig

    label = cluster_top_features(_clusters(1)).axes[0].get_xlabel()
    assert "weighted" not in label and "as clustered" in label  # score.tfidf=false clusters unweighted codes
    assert "TF-IDF weighted when score.tfidf" in ScoreConfig.model_fields["cluster_top_features"].description


def test_difficulty_scatter_shows_rho_n_and_rows_in_the_title_and_keeps_the_legend_inside(tmp_path):
    """The Spearman and n (the point of the plot) were in a legend entry too long for the 5-inch figure and were
    cut off: they are in the title now, with the rows shown, the legend names only the model, and the axes span
    most of the figure with the legend inside them."""
    import numpy as np

    y = np.arange(40, dtype=float) % 5
    fig = difficulty_scatter(y, y + np.arange(40) / 100, difficulty_label("elasticnet", "mean"), True,
                             "prompts it was not fitted on", "measured difficulty (1 - pass rate)")
    ax = fig.axes[0]
    assert "Spearman 0.98, n=40" in ax.get_title() and "prompts it was not fitted on" in ax.get_title()
    assert ax.get_title().startswith("Predicted vs measured difficulty (1 - pass rate)")
    assert ax.get_xlabel() == "measured difficulty (1 - pass rate)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SAE ElasticNetCV (mean-pooled codes)", "y = x"]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.savefig(tmp_path / "d.png")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box, legend = ax.get_window_extent(renderer), ax.get_legend().get_window_extent(renderer)
    assert box.x0 <= legend.x0 and legend.x1 <= box.x1 and ax.get_position().width > 0.7
    title = ax.title.get_window_extent(renderer)
    assert 0 <= title.x0 and title.x1 <= fig.bbox.width, "the title fits the figure"


def test_difficulty_scatter_of_a_constant_side_has_no_rho():
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning
        fig = difficulty_scatter(np.zeros(5), np.arange(5.0))
    assert "Spearman nan, n=5" in fig.axes[0].get_title()


def test_curriculum_difficulty_legend_says_when_it_names_only_some_clusters():
    """16 clusters, 12 named: the legend's title says which (it read as if there were 12)."""
    from saerl.plots import CURRICULUM_LEGEND_CLUSTERS, cluster_map, curriculum_difficulty

    n = 64
    order = pl.DataFrame({"position": list(range(n)), "cluster": [i % 16 for i in range(n)],
                          "difficulty_hat": [i / n for i in range(n)]})
    legend = curriculum_difficulty(order).axes[0].get_legend()
    assert legend.get_title().get_text() == f"cluster (first {CURRICULUM_LEGEND_CLUSTERS} of 16)"
    assert [t.get_text() for t in legend.get_texts()][:CURRICULUM_LEGEND_CLUSTERS + 1] == [
        *map(str, range(CURRICULUM_LEGEND_CLUSTERS)), "rolling mean (1)"]
    import numpy as np
    import scipy.sparse as sp

    Z = sp.csr_matrix(np.random.default_rng(0).uniform(size=(30, 5)))
    title = cluster_map(Z, np.arange(30) % 25).axes[0].get_legend().get_title().get_text()
    assert title == "cluster (first 20 of 25)"


def test_curve_plots_say_they_are_on_the_in_training_eval_problems():
    """The curves (200 problems per set) were titled 'held-out set heldout' with no n, and their final points
    disagreed with the comparison table (500 problems): the titles and legends now name the problems."""
    from saerl.plots import train_curves

    curve = _curve().with_columns(pl.lit(200).alias("n"))
    fig = accuracy_vs_step(curve)
    assert all("on the in-training eval problems (200 problems)" in ax.get_title() for ax in fig.axes)
    assert "in-training eval problems" in accuracy_vs_step(_curve()).axes[0].get_title()  # no n column: no count
    one = curve.filter((pl.col("arm") == "saerl") & (pl.col("seed") == 0)).drop("arm", "seed")
    right = train_curves(pl.DataFrame({"step": [1, 2], "reward": [0.1, 0.2]}), one, "saerl (seed 0)").axes[1]
    assert "in-training eval problems" in right.get_title()
    assert [ln.get_label() for ln in right.get_lines()] == ["a (200 problems)", "b (200 problems)"]


def test_cluster_panels_keep_few_x_ticks():
    """Small panels labelled every 0.025 of the weight axis, and the labels ran into each other."""
    from saerl.plots import X_TICKS

    for ax in (a for a in cluster_top_features(_clusters(5)).axes if a.axison):
        assert len(ax.get_xticks()) <= X_TICKS + 2  # MaxNLocator(nbins) gives at most nbins + 1 ticks, plus an edge


def _facecolors(ax) -> dict[str, tuple[float, ...]]:
    """{legend label: rgb} of the scatter groups of an axes."""
    return {c.get_label(): tuple(np.round(c.get_facecolor()[0][:3], 4)) for c in ax.collections}


def _rgb(color: str) -> tuple[float, ...]:
    from matplotlib.colors import to_rgb

    return tuple(np.round(to_rgb(color), 4))


def test_few_groups_take_tab10_and_no_two_neighbours_share_a_hue():
    """tab20 coloured 7 topics blue/light blue, orange/light orange, ...: up to 10 groups now take tab10's ten hues."""
    import scipy.sparse as sp
    from matplotlib import colormaps

    from saerl.plots import cluster_map

    n = 70
    Z = sp.csr_matrix(np.random.default_rng(0).uniform(size=(n, 5)))
    topics = np.array([f"t{i % 7}" for i in range(n)], dtype=object)
    colors = _facecolors(cluster_map(Z, np.arange(n) % 7, topics).axes[1])
    tab10 = [tuple(np.round(c, 4)) for c in colormaps["tab10"].colors]
    assert [colors[f"t{j}"] for j in range(7)] == tab10[:7]


def test_many_groups_never_share_colour_and_marker_nor_take_the_no_topic_grey():
    """tab20 drew cluster 15 light grey (NO_TOPIC_COLOR's near twin) and cluster 20 as cluster 0: past the palette the
    marker changes, so every group differs from every other in colour or marker, and none is a light grey."""
    import scipy.sparse as sp
    from matplotlib.colors import to_rgb

    from saerl.plots import GROUP_COLORS, NO_TOPIC_COLOR, cluster_map

    k = 2 * len(GROUP_COLORS) + 3
    Z = sp.csr_matrix(np.random.default_rng(0).uniform(size=(3 * k, 5)))
    ax = cluster_map(Z, np.arange(3 * k) % k).axes[0]
    styles = [(tuple(c.get_facecolor()[0][:3]), c.get_paths()[0].vertices.round(4).tobytes()) for c in ax.collections]
    assert len(styles) == k and len(set(styles)) == k, "two clusters share both colour and marker"
    grey = np.array(to_rgb(NO_TOPIC_COLOR))
    for color in [*GROUP_COLORS, *(rgb for rgb, _ in styles)]:
        assert np.abs(np.array(to_rgb(color)) - grey).max() > 0.1, f"{color} reads as the no-topic grey"
    assert len(set(GROUP_COLORS)) == len(GROUP_COLORS)


def test_a_cluster_has_one_colour_in_the_cluster_map_and_the_curriculum_plot():
    """The curriculum plot coloured clusters by their rank among those in the order: with clusters 0, 1 and 3 filtered
    out, cluster 4 took cluster 1's colour there and another one in the cluster map."""
    import scipy.sparse as sp

    from saerl.plots import cluster_map, curriculum_difficulty

    Z = sp.csr_matrix(np.random.default_rng(0).uniform(size=(30, 5)))
    in_map = _facecolors(cluster_map(Z, np.arange(30) % 6).axes[0])
    order = pl.DataFrame({"position": list(range(9)), "cluster": [2, 4, 5] * 3, "difficulty_hat": [i / 9 for i in range(9)]})
    in_order = {k: v for k, v in _facecolors(curriculum_difficulty(order).axes[0]).items() if k in {"2", "4", "5"}}
    assert in_order == {c: in_map[c] for c in ("2", "4", "5")}


def _arm_lines(fig: Figure) -> dict[str, object]:
    """{arm: its mean line} of the first panel of accuracy_vs_step."""
    return {ln.get_label().split(" ")[0]: ln for ln in fig.axes[0].get_lines() if "target" not in ln.get_label()}


def test_an_arm_keeps_its_colour_whichever_arms_were_trained():
    """Arms were coloured by their sorted place: saerl blue beside vanilla, green among four arms."""
    from typing import get_args

    def colors(arms: tuple[str, ...]) -> dict[str, str]:
        curve = pl.DataFrame([{"arm": a, "seed": 0, "set": "a", "step": t, "greedy": 0.1 * t}
                              for a in arms for t in (0, 1)])
        return {arm: ln.get_color() for arm, ln in _arm_lines(accuracy_vs_step(curve)).items()}

    two, four = colors(("saerl", "vanilla")), colors(("filter_only", "order_only", "saerl", "vanilla"))
    assert two == {a: four[a] for a in two} and len(set(four.values())) == 4
    from saerl.config import TrainConfig
    from saerl.plots import KNOWN_ARMS, arm_styles

    allowed = get_args(get_args(TrainConfig.model_fields["arms"].annotation)[0])
    assert set(allowed) == set(KNOWN_ARMS), "every arm the config allows has its fixed style"
    other = arm_styles(["saerl", "mix_0.5", "vanilla", "mix_0.2"])
    assert other == arm_styles(["mix_0.2", "vanilla", "mix_0.5", "saerl"]), "the same arms, the same styles"
    known = {s["color"] for s in arm_styles(list(KNOWN_ARMS)).values()}
    assert len({other["mix_0.2"]["color"], other["mix_0.5"]["color"]} - known) == 2, "another arm takes a further colour"


def test_one_seed_draws_no_band_and_its_legend_claims_none():
    one = _curve().filter(pl.col("seed") == 0)
    ax = accuracy_vs_step(one).axes[0]
    assert not ax.collections and not any("band" in t.get_text() for t in ax.get_legend().get_texts())
    assert "saerl (1 seed)" in [t.get_text() for t in ax.get_legend().get_texts()]
    ax = accuracy_vs_step(_curve()).axes[0]  # two seeds: a band per arm, and the legend says what it is
    assert len(ax.collections) == 2
    assert "saerl (mean of 2 seeds, band = range)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_equal_curves_both_stay_visible():
    """Two arms with equal accuracy: the later line hid the earlier; each arm now has its own line style and marker,
    the solid one drawn first, and a curve at 0 is not clipped under the axis line."""
    curve = pl.DataFrame([{"arm": a, "seed": 0, "set": "a", "step": t, "greedy": 0.0}
                          for a in ("vanilla", "saerl", "order_only", "filter_only") for t in (0, 1, 2)])
    lines = list(_arm_lines(accuracy_vs_step(curve)).values())
    assert len({ln.get_linestyle() for ln in lines}) == 4 and len({ln.get_marker() for ln in lines}) == 4
    assert lines[0].get_linestyle() == "-", "the unbroken line is drawn first, under the broken ones"
    assert not any(ln.get_clip_on() for ln in lines)


def _is_whole(ticks: np.ndarray) -> bool:
    return bool(np.all(np.asarray(ticks) == np.round(ticks)))


def test_a_short_run_has_whole_step_ticks_and_an_accuracy_axis_from_zero():
    """A 3-step all-zero run: steps were ticked 1.25, 1.5, ... and accuracy ran from -0.04 to 0.04."""
    from saerl.plots import ACCURACY_MARGIN, curriculum_difficulty, train_curves

    zero = pl.DataFrame([{"arm": "saerl", "seed": 0, "set": "a", "step": t, "greedy": 0.0} for t in (1, 2, 3)])
    fig = train_curves(pl.DataFrame({"step": [1, 2, 3], "reward": [0.0, 0.5, 0.25]}), zero.drop("arm", "seed"), "x")
    axes = [*fig.axes, *accuracy_vs_step(zero).axes]
    assert all(_is_whole(ax.get_xticks()) for ax in axes)
    for ax in axes[1:]:
        assert ax.get_ylim() == pytest.approx((0, ACCURACY_MARGIN))
    order = pl.DataFrame({"position": [0, 1, 2], "cluster": [0, 0, 1], "difficulty_hat": [0.1, 0.2, 0.3]})
    assert _is_whole(curriculum_difficulty(order).axes[0].get_xticks())


def test_an_accuracy_axis_shows_its_largest_value_and_target_and_stops_near_one():
    from saerl.plots import ACCURACY_MARGIN, train_curves

    ax = accuracy_vs_step(_curve(), target=0.6).axes[0]  # curves up to 0.4 (seed 1's band), the target 0.6
    bottom, top = ax.get_ylim()
    assert bottom == 0 and 0.6 < top <= 0.6 + ACCURACY_MARGIN + 1e-9
    full = pl.DataFrame({"step": [0, 1], "set": ["a", "a"], "greedy": [0.5, 1.0]})
    assert train_curves(pl.DataFrame(), full, "x").axes[1].get_ylim() == pytest.approx((0, 1 + ACCURACY_MARGIN))


def test_no_two_group_colours_are_closer_than_tab20s_closest_pair():
    """The palette put tab20b's brick (#843c39) beside tab10's brown (#8c564b), 12 apart in CIE76 Lab distance,
    nearer than any pair of tab20 (16.6), which it replaced for its look-alike pairs."""
    import itertools

    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    from saerl.plots import GROUP_COLORS

    def lab(color) -> np.ndarray:
        rgb = np.array(to_rgb(color))
        rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
        xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
        f = np.cbrt(np.maximum(xyz / np.array([0.95047, 1.0, 1.08883]), 0.008856))
        return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])

    def closest(colors) -> float:
        return min(float(np.linalg.norm(lab(a) - lab(b))) for a, b in itertools.combinations(colors, 2))

    assert closest(GROUP_COLORS) > closest(colormaps["tab20"].colors)


@pytest.fixture
def no_cjk_font(monkeypatch):
    """The installed fonts as saerl.plots sees them, less every CJK glyph: the figures then behave as on a machine
    without a CJK font (this one has none; a machine with one would draw the names themselves)."""
    import saerl.plots as plots

    families, covered = plots.label_fonts()
    monkeypatch.setattr(plots, "label_fonts", lambda: (families, frozenset(c for c in covered
                                                                           if not 0x2E80 <= c <= 0x9FFF)))


def _glyph_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_topics_no_font_can_draw_get_ascii_stand_ins_and_one_warning_with_the_key(no_cjk_font, caplog, tmp_path):
    """Chinese topics (代数, 几何) drew as identical empty boxes in the cluster map's legend, with a matplotlib
    UserWarning per glyph (~20 in a Chinese run; i18n audit, finding 8). They are named 'topic N' (N: the name's
    place among the pool's topics), one saerl warning gives the key and the fix, and matplotlib warns of nothing."""
    import warnings

    import numpy as np
    import scipy.sparse as sp

    from saerl.plots import cluster_map, cluster_top_features, stand_in_note, stand_ins

    Z = sp.csr_matrix(np.random.default_rng(0).uniform(size=(9, 5)))
    topics = np.array(["代数", "几何", "add"] * 3, dtype=object)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING", logger="saerl.plots"):
        warnings.simplefilter("always")
        fig = cluster_map(Z, np.array([0, 1, 2] * 3), topics)
        fig.savefig(tmp_path / "map.png")
    assert _glyph_warnings(caught) == []
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["add", "topic 2", "topic 3"]
    (record,) = caplog.records
    assert "topic 2 = 代数, topic 3 = 几何" in record.getMessage() and "fonts-noto-cjk" in record.getMessage()
    names = stand_ins(topics, "topic")  # what a stage computes once and hands both figures: no warning of their own
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        two = _clusters(2).with_columns(pl.lit("几何").alias("top_topic"), pl.lit(0.75).alias("top_topic_share"))
        panels = cluster_top_features(two, names=names)
        panels.savefig(tmp_path / "top.png")
    assert _glyph_warnings(caught) == [] and not caplog.records
    assert "mostly topic 3 (75%)" in panels.axes[1].get_title()
    assert stand_in_note(stand_ins(["add", "mul"], "topic"), "topic") is None


def test_stand_ins_never_take_a_real_name_and_their_note_lists_a_bounded_key(no_cjk_font):
    from saerl.plots import STAND_IN_KEY_SHOWN, stand_in_note, stand_ins

    assert stand_ins(["topic 2", "代数", "", "代数"], "topic") == {"topic 2": "topic 2", "代数": "topic 2'"}
    many = stand_ins([f"题{chr(0x4E00 + i)}" for i in range(STAND_IN_KEY_SHOWN + 5)], "topic")
    note = stand_in_note(many, "topic")
    assert note.startswith(f"{STAND_IN_KEY_SHOWN + 5} topic names use characters no installed font has")
    assert note.count(" = ") == STAND_IN_KEY_SHOWN and " and 5 more;" in note


def test_any_other_text_no_font_can_draw_is_drawn_as_a_placeholder_not_a_glyph_warning(no_cjk_font, caplog, tmp_path):
    """A caller's own set name in Chinese (outside the pipeline, which keeps set names ASCII): one saerl warning,
    '?' in its place, no matplotlib UserWarning; every text is drawn in the installed fallback fonts."""
    import warnings

    from saerl.plots import UNDRAWABLE, accuracy_vs_step, label_fonts

    curve = _curve().with_columns(pl.when(pl.col("set") == "a").then(pl.lit("高考")).otherwise("set").alias("set"))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING", logger="saerl.plots"):
        warnings.simplefilter("always")
        fig = accuracy_vs_step(curve)
        fig.savefig(tmp_path / "acc.png")
    assert _glyph_warnings(caught) == []
    assert any(ax.get_title().startswith(f"held-out set {UNDRAWABLE * 2}:") for ax in fig.axes)
    assert len(caplog.records) == 1 and "fonts-noto-cjk" in caplog.records[0].getMessage()
    families = list(label_fonts()[0])
    assert families[0] == "DejaVu Sans" and all(t.get_fontfamily() == families for t in fig.axes[0].texts + [
        fig.axes[0].title, *fig.axes[0].get_legend().get_texts()])
