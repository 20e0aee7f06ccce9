"""The synthetic world: determinism, labels, topics, defects, splits."""

from collections import Counter

import polars as pl
import pytest

from saerl.config import TestbedConfig as TBConfig
from saerl.testbed import (
    DEFECTS,
    GENERATORS,
    apply_defect,
    generate_world,
    make_problem,
    read_world,
    slip,
    write_world,
)
from saerl.verify import extract_final_answer

CFG = TBConfig(n_pretrain=600, n_pool=600, n_eval=200)


@pytest.fixture(scope="module")
def world() -> dict[str, pl.DataFrame]:
    return generate_world(CFG)


def test_same_seed_same_world_other_seed_other_world(world):
    again = generate_world(CFG)
    for split in world:
        assert world[split].equals(again[split])
    other = generate_world(CFG.model_copy(update={"seed": 1}))
    assert not world["pool"]["prompt"].equals(other["pool"]["prompt"])


def test_ingest_columns_and_types(world):
    want = {"id": pl.Utf8, "prompt": pl.Utf8, "answer": pl.Utf8, "topic": pl.Utf8, "difficulty": pl.Float64,
            "quality": pl.Float64, "defect": pl.Utf8, "solution": pl.Utf8, "split": pl.Utf8, "labelled": pl.Boolean}
    for split, df in world.items():
        assert {c: df.schema[c] for c in want} == want
        assert df.height == {"pretrain": CFG.n_pretrain, "pool": CFG.n_pool, "eval": CFG.n_eval}[split]
        assert df["id"].n_unique() == df.height
        assert set(df["split"]) == {split}


def test_clean_solutions_end_in_the_gold_answer(world):
    for split in ("pool", "eval"):
        clean = world[split].filter(pl.col("defect") == "none")
        assert all(extract_final_answer(s) == a for s, a in zip(clean["solution"], clean["answer"], strict=True))


def test_pretraining_corpus_carries_slips_at_the_configured_rates():
    n = 400
    for level, rate in enumerate(CFG.pretrain_slip, start=1):
        wrong = sum(make_problem(s, "arith", level, rate).answer != make_problem(s, "arith", level).answer
                    for s in range(n))
        assert abs(wrong / n - rate) < 0.08


def test_whether_a_solution_slips_does_not_depend_on_its_content():
    # the slip once drew from the generator's own stream: level-2 additions slipped 90% of the time, subtractions never
    n, rate = 1200, 0.45
    by_op: dict[str, list[bool]] = {"+": [], "-": []}
    for s in range(n):
        p = make_problem(s, "arith", 2, rate)
        by_op[p.key[1]].append(p.answer != make_problem(s, "arith", 2).answer)
    for op, slipped in by_op.items():
        assert len(slipped) > n / 4 and abs(sum(slipped) / len(slipped) - rate) < 0.08, op


def test_solution_length_grows_with_level(world):
    df = world["pretrain"].with_columns(pl.col("solution").str.len_chars().alias("len"))
    per_level = df.group_by("difficulty").agg(pl.col("len").mean()).sort("difficulty")["len"].to_list()
    assert per_level == sorted(per_level) and per_level[-1] > 2 * per_level[0]
    for topic in GENERATORS:
        t = df.filter(pl.col("topic") == topic).group_by("difficulty").agg(pl.col("len").mean()).sort("difficulty")
        assert t["len"][-1] > t["len"][0], topic


def test_every_topic_present_and_no_single_token_separates_a_topic(world):
    clean = pl.concat([world["pool"], world["eval"]]).filter(pl.col("defect") == "none")
    assert set(clean["topic"]) == set(CFG.topics)
    tokens = [set(p.split()) for p in clean["prompt"]]
    topics = clean["topic"].to_list()
    vocab = set().union(*tokens)
    for topic in CFG.topics:
        is_t = [t == topic for t in topics]
        best = 0.0
        for w in vocab:
            tp = sum(1 for ts, y in zip(tokens, is_t, strict=True) if y and w in ts)
            fp = sum(1 for ts, y in zip(tokens, is_t, strict=True) if not y and w in ts)
            best = max(best, 2 * tp / (2 * tp + fp + (sum(is_t) - tp)))
        assert best < 0.95, (topic, best)


def test_defects_appear_in_the_configured_shares(world):
    counts = Counter(world["pool"]["defect"])
    n_bad = round(CFG.defect_share * CFG.n_pool)
    total = sum(CFG.defect_kinds.values())
    for kind in DEFECTS:
        assert abs(counts[kind] - n_bad * CFG.defect_kinds[kind] / total) <= 1, kind
    assert (world["pool"]["quality"] == 0.0).sum() == sum(counts[k] for k in DEFECTS)
    assert set(world["eval"]["defect"]) == {"none"} and set(world["pretrain"]["defect"]) == {"none"}


def test_wrong_gold_is_really_wrong(world):
    bad = world["pool"].filter(pl.col("defect") == "wrong_gold")
    assert bad.height > 0
    assert all(extract_final_answer(s) != a for s, a in zip(bad["solution"], bad["answer"], strict=True))
    assert all(slip(__import__("random").Random(i), v) != v for i, v in enumerate([0, 9, 10, 99, 100, 5071]))


def test_missing_info_and_garbled_change_the_text(world):
    import random

    pool = world["pool"]
    for kind in ("missing_info", "garbled", "off_distribution"):
        rows = pool.filter(pl.col("defect") == kind)
        assert rows.height > 0
        assert not rows["prompt"].is_in(world["eval"]["prompt"]).any()
    for s in range(200):  # each kind changes the problem's own text (the checks above hold for any pool row)
        p = make_problem(s, list(GENERATORS)[s % len(GENERATORS)], 1 + s % 5)
        words = p.prompt.split(" ")
        for kind in ("missing_info", "garbled", "off_distribution"):
            prompt, gold = apply_defect(random.Random(s), kind, p, p)
            assert prompt != p.prompt, (kind, p.prompt)
            assert gold == p.answer or kind == "off_distribution"
        cut = apply_defect(random.Random(s), "garbled", p, p)[0].split(" ")
        assert len(cut) < len(words) and sorted(cut) == sorted(words[: len(cut)])  # truncated, two words swapped
        off, _ = apply_defect(random.Random(s), "off_distribution", p, p)
        assert not any(w.isdigit() for w in off.split(" "))


def test_off_distribution_rows_carry_no_topic_or_level(world):
    """Text that is not a math problem has no topic and no difficulty level; every other row keeps both."""
    pool = world["pool"]
    off = pool.filter(pl.col("defect") == "off_distribution")
    assert off.height > 0 and off["topic"].is_null().all() and off["difficulty"].is_null().all()
    rest = pool.filter(pl.col("defect") != "off_distribution")
    assert rest["topic"].null_count() == 0 and rest["difficulty"].null_count() == 0


def test_world_written_reads_back_split_by_split(world, tmp_path):
    write_world(world, tmp_path)
    back = read_world(tmp_path)
    assert set(back) == {"pretrain", "pool", "eval"}
    for split, df in world.items():
        assert back[split].equals(df)


def test_splits_are_disjoint_by_content(world):
    keys = {s: set(df.filter(pl.col("defect") == "none")["content"]) for s, df in world.items()}
    assert not keys["pretrain"] & keys["pool"]
    assert not keys["pretrain"] & keys["eval"]
    assert not keys["pool"] & keys["eval"]


def test_labelled_subset_share(world):
    share = world["pool"]["labelled"].mean()
    assert abs(share - CFG.labelled_share) < 0.06


def test_level_mixes_and_labelled_share_follow_the_config():
    """pool and eval are drawn with pool_level_mix, the corpus with pretrain_level_mix, the labelled flag at
    labelled_share: settings far from the defaults, so a swapped or ignored field shows."""
    cfg = CFG.model_copy(update={"n_pretrain": 50, "n_pool": 100, "n_eval": 20, "pool_level_mix": [0, 0, 0, 0, 1],
                                 "pretrain_level_mix": [1, 0, 0, 0, 0], "labelled_share": 0.7, "defect_share": 0.0})
    world = generate_world(cfg)
    assert set(world["pool"]["difficulty"]) == set(world["eval"]["difficulty"]) == {5.0}
    assert set(world["pretrain"]["difficulty"]) == {1.0}
    assert abs(world["pool"]["labelled"].mean() - 0.7) < 0.15


def _true_answer(content: str) -> int | None:
    """The right answer of an arith or mult problem from its content key (topic, [op], operands); else None."""
    topic, *rest = content.split(" ")
    if topic == "mult":
        return int(rest[0]) * int(rest[1])
    if topic != "arith":
        return None
    if rest[0] in "+-":
        return int(rest[1]) + int(rest[2]) if rest[0] == "+" else int(rest[1]) - int(rest[2])
    return int(rest[0]) + int(rest[1]) - int(rest[2])  # level 5: a + b - d


def test_the_corpus_carries_slips_and_the_pool_does_not(world):
    """The pretraining split's worked solutions slip at about testbed.pretrain_slip per level (its answer column is
    the slipped one, as the LM learns it); the pool's and eval's clean rows are right."""
    for split in ("pretrain", "pool", "eval"):
        df = world[split].filter(pl.col("defect") == "none")
        truth = [_true_answer(c) for c in df["content"]]
        rows = [(int(a) != r, int(d)) for a, r, d in zip(df["answer"], truth, df["difficulty"], strict=True)
                if r is not None]
        assert len(rows) > 20, split
        wrong = sum(w for w, _ in rows) / len(rows)
        if split == "pretrain":
            expected = sum(CFG.pretrain_slip[d - 1] for _, d in rows) / len(rows)
            assert abs(wrong - expected) < 0.1, (wrong, expected)
        else:
            assert wrong == 0, split


def test_the_same_text_is_the_same_content():
    # a word problem's key named the friend even when no sentence does, so one text could pass as two contents
    texts: dict[str, set[tuple]] = {}
    for s in range(3000):
        p = make_problem(s, "word", 1)
        texts.setdefault(p.prompt, set()).add(p.key)
    assert all(len(keys) == 1 for keys in texts.values())


def test_defect_kinds_order_does_not_change_the_world():
    kinds = dict(CFG.defect_kinds)
    turned = dict(reversed(list(kinds.items())))
    a = generate_world(CFG.model_copy(update={"n_pretrain": 10, "defect_kinds": kinds}))["pool"]
    b = generate_world(CFG.model_copy(update={"n_pretrain": 10, "defect_kinds": turned}))["pool"]
    assert a.equals(b)


def test_a_near_duplicate_is_never_a_copy_of_its_source(world):
    import random

    for s in range(400):
        other = make_problem(s, "word", 1 + s % 5)
        prompt, gold = apply_defect(random.Random(s), "near_duplicate", other, other)
        assert prompt != other.prompt and gold == other.answer
    pool = world["pool"]
    copies = pool.filter(pl.col("defect") == "near_duplicate")["prompt"]
    assert copies.len() > 0
    assert not copies.is_in(pool.filter(pl.col("defect") == "none")["prompt"]).any()


def test_missing_info_removes_a_number_the_answer_needs(world):
    import random

    for s in range(300):
        for topic, level in (("word", 4), ("word", 5), ("sequence", 2), ("sequence", 5)):
            p = make_problem(s, topic, level)
            prompt, _ = apply_defect(random.Random(s), "missing_info", p, p)
            numbers = [Counter(int(w) for w in t.split(" ") if w.lstrip("-").isdigit()) for t in (p.prompt, prompt)]
            gone = numbers[0] - numbers[1]
            needed = {v for v in p.key if isinstance(v, int)}
            assert gone and set(gone) <= needed, (p.prompt, prompt)  # never (only) a distractor's number
            if topic == "sequence":  # one vague term leaves the rule readable: only the first term stays
                assert sum(numbers[1].values()) == 1, prompt


def test_defect_counts_sum_to_the_configured_share():
    # each kind's count was rounded on its own: 10 of 10 defective rows became 11 (rng.sample crashed), 90 became 91
    for n_pool, share in ((10, 1.0), (50, 1.0), (600, 0.15), (120, 0.15), (7, 0.5)):
        cfg = CFG.model_copy(update={"n_pretrain": 10, "n_eval": 5, "n_pool": n_pool, "defect_share": share})
        pool = generate_world(cfg)["pool"]
        assert (pool["defect"] != "none").sum() == round(share * n_pool), (n_pool, share)


def test_missing_info_never_blanks_a_distractor_whose_number_the_answer_also_needs():
    import random

    hits = 0
    for s in range(4000):
        p = make_problem(s, "word", 4 + s % 2)
        sentences = p.prompt.split(" . ")
        distractor = next(t for t in sentences if t.split(" ")[1] == "has" and t.split(" ")[0] != p.key[1])
        if int(distractor.split(" ")[2]) not in {v for v in p.key if isinstance(v, int)}:
            continue
        hits += 1
        for r in range(20):
            prompt, _ = apply_defect(random.Random(r), "missing_info", p, p)
            assert distractor in prompt.split(" . "), (p.prompt, prompt)
    assert hits > 20


def test_running_out_of_content_names_the_settings_of_the_draw_that_ran_out():
    # the corpus's and fresh_problems' errors named pool_level_mix, which neither draw reads
    from saerl.testbed import fresh_problems

    n = len({make_problem(s, "arith", 1).key for s in range(6000)})  # every level-1 arith problem (306)
    level1 = {"topics": ["arith"], "pool_level_mix": [1, 0, 0, 0, 0], "n_pretrain": 20, "n_eval": 20}
    with pytest.raises(ValueError, match=r"testbed\.pool_level_mix") as err:
        generate_world(CFG.model_copy(update={**level1, "n_pool": n}))
    assert "pretrain_level_mix" not in str(err.value)
    with pytest.raises(ValueError, match=r"testbed\.pretrain_level_mix") as err:
        generate_world(CFG.model_copy(update={**level1, "n_pool": n - 20, "pretrain_level_mix": [1, 0, 0, 0, 0]}))
    assert "testbed.pool_level_mix" not in str(err.value)
    cfg = CFG.model_copy(update={**level1, "n_pool": n - 30})
    with pytest.raises(ValueError, match="fewer fresh problems") as err:
        fresh_problems(cfg, generate_world(cfg), 20, [1, 0, 0, 0, 0], seed=5)
    assert "testbed.pool_level_mix" not in str(err.value)


def test_a_slip_changes_the_solution_never_the_problem():
    # a word problem drew its next step from the slipped count: 6% of slipped word problems became other problems,
    # some impossible ("Hugo has 140 pens ... gives 149 to Tara"), in the corpus the LM learns from
    for s in range(2000):
        for topic in GENERATORS:
            level = 1 + s % 5
            slipped, clean = make_problem(s, topic, level, 1.0), make_problem(s, topic, level)
            assert (slipped.prompt, slipped.key, slipped.n_steps) == (clean.prompt, clean.key, clean.n_steps), topic
