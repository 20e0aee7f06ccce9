"""saerl.export: each format round-trips an arm's order with its prompts; the sampler modules stream it."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import types
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from saerl.artifacts import ArtifactStore
from saerl.curriculum import vanilla_order, whole_batch_rows, whole_batches
from saerl.export import (
    ARM_FILES,
    COLUMNS,
    README,
    REWARD,
    REWARD_FUNCTION,
    SAMPLER,
    SAMPLER_CLASS,
    TABLE,
    export_run,
    reward_module,
)
from saerl.runners import PROMPTS
from saerl.runs import RunRecord, StageRecord, save_run

N_PROMPTS, EPOCHS, BATCH, GENERATIONS = 10, 2, 4, 3


def _publish(store: ArtifactStore, stage: str, key: str, tables: dict[str, pl.DataFrame]) -> str:
    """A finished artifact holding `tables` as parquet files; returns its path."""
    def write(build):
        for name, df in tables.items():
            df.write_parquet(build.path / name)

    return store.ensure(stage, key, write)[0].path


def _make_run(root: Path, epochs: int = EPOCHS, n_prompts: int = N_PROMPTS,
              config: dict | None = None) -> tuple[Path, RunRecord]:
    """An artifact root with an ingest and a curriculum artifact (every arm's order file stored shuffled, so
    the export must sort by position; `epochs` epochs of `n_prompts`) and a run record naming both, its config
    the batch size, the generations and `config`."""
    store = ArtifactStore(root)
    ids = [f"p{i:02d}" for i in range(n_prompts)]
    prompts = pl.DataFrame({"id": ids, "prompt": [f"What is {i}+1?" for i in range(n_prompts)],
                            "answer": [str(i + 1) for i in range(n_prompts)], "answer_raw": ids,
                            "row": list(range(n_prompts))})
    orders = {f: vanilla_order(ids, epochs, seed, BATCH).sample(fraction=1.0, shuffle=True, seed=seed)
              for seed, f in enumerate(ARM_FILES.values())}
    record = RunRecord(name="t", config={"curriculum.batch_size": BATCH, "train.num_generations": GENERATIONS,
                                         **(config or {})})
    for stage, key, tables in (("ingest", "ki", {PROMPTS: prompts}), ("curriculum", "kc", orders)):
        path = _publish(store, stage, key, tables)
        record.stages[stage] = StageRecord(stage, key, "computed", "", {}, {}, path=path)
    save_run(root, record)
    return root, record


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, RunRecord]:
    """_make_run with EPOCHS epochs under tmp_path/root."""
    return _make_run(tmp_path / "root")


def _expected(root: Path, arm: str) -> list[str]:
    """The arm's ids as RL reads them from the stored order file: in position order, in whole batches (without
    an epoch's short last batch)."""
    return whole_batches(pl.read_parquet(root / "curriculum" / "kc" / ARM_FILES[arm]), BATCH)


def _load_module(path: Path, name: str) -> types.ModuleType:
    """Import a written module from its path, as verl's class_path loading does."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _answers(root: Path) -> dict[str, tuple[str, str]]:
    df = pl.read_parquet(root / "ingest" / "ki" / PROMPTS)
    return {r["id"]: (r["prompt"], r["answer"]) for r in df.iter_rows(named=True)}


def test_hf_round_trips_the_order(run, tmp_path):
    from datasets import load_from_disk

    root, _ = run
    out = tmp_path / "hf"
    export_run(root, "latest", "hf", out)
    ds = load_from_disk(str(out))
    assert ds["id"] == _expected(root, "saerl") and len(ds) == (N_PROMPTS // BATCH) * BATCH * EPOCHS
    assert ds["position"] == list(range(len(ds)))
    prompts = _answers(root)
    assert all((p, a) == prompts[i] for i, p, a in zip(ds["id"], ds["prompt"], ds["answer"], strict=True))
    assert "load_from_disk" in (out / README).read_text()


def test_latest_exports_the_newest_run_with_a_curriculum_saying_so(run, tmp_path, caplog):
    """After a failed attempt (its record names no curriculum stage) `export latest` refused, though the run before
    it had one: 'latest' now means the newest run that reached its curriculum, and says when that is not the newest."""
    import logging

    from saerl.runs import FAILED

    root, good = run
    failed = RunRecord(name="t", extra={FAILED: "extract: ValueError: extract.layer=6 is out of range"})
    failed.stages = {"ingest": good.stages["ingest"]}
    save_run(root, failed)
    with caplog.at_level(logging.WARNING, logger="saerl.export"):
        export_run(root, "latest", "hf", tmp_path / "hf")
    assert f"the newest run, {failed.run_id}, has no curriculum stage (failed at extract); exporting " \
           f"{good.run_id}" in caplog.text
    with pytest.raises(ValueError, match=f"run {failed.run_id} has no curriculum stage"):
        export_run(root, failed.run_id, "hf", tmp_path / "hf2")  # named: that run, refused


def test_verl_round_trips_the_order_and_its_sampler_streams_it(run, tmp_path, monkeypatch):
    root, _ = run
    out = tmp_path / "verl"
    export_run(root, "latest", "verl", out, arm="order_only")
    df = pl.read_parquet(out / TABLE)
    extra = df["extra_info"].struct.unnest()
    assert extra["id"].to_list() == _expected(root, "order_only")
    assert extra["index"].to_list() == list(range(df.height))
    prompts = _answers(root)
    for row in df.iter_rows(named=True):
        prompt, answer = prompts[row["extra_info"]["id"]]
        assert row["prompt"] == [{"role": "user", "content": prompt}]
        assert row["reward_model"] == {"style": "rule", "ground_truth": answer}
        assert row["data_source"]

    sampler = getattr(_load_module(out / SAMPLER, "verl_sampler_plain"), SAMPLER_CLASS)
    assert list(sampler(data_source=list(range(df.height)), data_config={})) == list(range(df.height))

    class AbstractSampler:  # stands in for verl's, which create_rl_sampler checks with isinstance
        pass

    for name in ("verl", "verl.experimental", "verl.experimental.dataset", "verl.experimental.dataset.sampler"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["verl.experimental.dataset.sampler"].AbstractSampler = AbstractSampler
    with_verl = getattr(_load_module(out / SAMPLER, "verl_sampler_verl"), SAMPLER_CLASS)
    assert isinstance(with_verl(data_source=[0, 1], data_config={}), AbstractSampler)
    text = (out / README).read_text()
    assert f"data.sampler.class_name={SAMPLER_CLASS}" in text and f"data.train_batch_size={BATCH}" in text
    assert "data.shuffle=False" in text


def test_verl_export_writes_a_reward_that_judges_as_saerl_does(run, tmp_path):
    """verl's built-in openai/gsm8k reward takes only a strict final '#### N' compared as text: a right
    '\\boxed{3/4}' against the gold '\\frac{3}{4}' scored 0, whatever the policy learned. The export
    writes reward.py around saerl's verifier and its README's command points verl at it."""
    root, _ = run
    out = tmp_path / "verl"
    export_run(root, "latest", "verl", out)
    reward = _load_module(out / REWARD, "saerl_export_reward")  # as verl's custom_reward_function loads it
    score = getattr(reward, REWARD_FUNCTION)
    assert score("openai/gsm8k", "3 of the 4 slices: \\boxed{3/4}", "\\frac{3}{4}") == 1.0
    assert score("openai/gsm8k", "so \\boxed{4/3}", "\\frac{3}{4}") == 0.0
    assert score("openai/gsm8k", "the rise is \\boxed{10\\%}", "10%", extra_info={"index": 0}) == 1.0
    assert score("other", "#### 18", "18", None, reward_router_address=None) == 1.0  # keywords newer verl adds
    assert reward.TIMEOUT_S == 5.0  # the run's train.verify_timeout_s (the record sets none: the default)
    assert "TIMEOUT_S = 2.5 " in reward_module("verl", 2.5)
    text = (out / README).read_text()
    assert (f"reward.custom_reward_function.path={out.resolve() / REWARD} "
            f"reward.custom_reward_function.name={REWARD_FUNCTION}") in text  # verl 0.7.1 and later
    assert f"`custom_reward_function.path={out.resolve() / REWARD} custom_reward_function.name=" in text  # earlier
    assert "saerl must be importable in verl's environment" in text


def test_trl_round_trips_the_order_and_its_sampler_repeats_each_prompt(run, tmp_path):
    from saerl.rl import OrderSampler

    root, _ = run
    out = tmp_path / "trl"
    export_run(root, "latest", "trl", out)
    df = pl.read_parquet(out / TABLE)
    assert df["id"].to_list() == _expected(root, "saerl") and df["position"].to_list() == list(range(df.height))
    module = _load_module(out / SAMPLER, "trl_sampler")
    stream = list(module.SaerlOrderSampler(df, GENERATIONS))
    assert stream == [i for i in range(df.height) for _ in range(GENERATIONS)]
    assert [df["id"][i] for i in stream[::GENERATIONS]] == _expected(root, "saerl")
    assert list(module.SaerlOrderSampler(df, GENERATIONS, BATCH, 2)) == list(OrderSampler(df.height, GENERATIONS, BATCH, 2))

    class FakeGRPOTrainer:  # the attributes trl's GRPOTrainer reads in _get_train_sampler
        num_generations, num_iterations = GENERATIONS, 1
        args = types.SimpleNamespace(generation_batch_size=BATCH * GENERATIONS, steps_per_generation=1)
        train_dataset = df

    sampler = module.ordered(FakeGRPOTrainer)()._get_train_sampler()
    assert list(sampler) == list(OrderSampler(df.height, GENERATIONS, BATCH, 1))


@pytest.mark.parametrize("arm", list(ARM_FILES))
def test_every_arm_exports_its_own_order_file(run, tmp_path, arm):
    root, _ = run
    export_run(root, "latest", "trl", tmp_path / arm, arm=arm)
    assert pl.read_parquet(tmp_path / arm / TABLE)["id"].to_list() == _expected(root, arm)


@pytest.mark.parametrize("arm", list(ARM_FILES))
def test_every_arm_exports_what_rl_reads_one_batch_per_block(run, tmp_path, arm):
    """RL reads every arm in whole batches (an epoch's short last batch left out): the export holds the same
    prompts, so each block of batch_size rows in the other trainer is one batch (a curriculum batch for saerl and
    order_only, a batch of one epoch's shuffle for vanilla and filter_only)."""
    root, _ = run
    export_run(root, "latest", "trl", tmp_path / arm, arm=arm)
    ids = pl.read_parquet(tmp_path / arm / TABLE)["id"].to_list()
    order = pl.read_parquet(root / "curriculum" / "kc" / ARM_FILES[arm]).sort("position")
    assert order.height == N_PROMPTS * EPOCHS and N_PROMPTS % BATCH  # the fixture has short batches
    assert ids == whole_batches(order, BATCH) and len(ids) == (N_PROMPTS // BATCH) * BATCH * EPOCHS
    export_run(root, "latest", "hf", tmp_path / f"{arm}_hf", arm=arm)
    from datasets import load_from_disk

    batches = load_from_disk(str(tmp_path / f"{arm}_hf"))["batch"]
    assert all(len(set(batches[i : i + BATCH])) == 1 for i in range(0, len(batches), BATCH))


def test_export_errors_name_the_problem(run, tmp_path):
    root, record = run
    with pytest.raises(ValueError, match="unknown arm"):
        export_run(root, "latest", "trl", tmp_path / "x", arm="nope")
    with pytest.raises(ValueError, match="unknown export format"):
        export_run(root, "latest", "csv", tmp_path / "x")
    shutil.rmtree(root / "curriculum" / "kc")
    with pytest.raises(ValueError, match="saerl gc"):
        export_run(root, "latest", "trl", tmp_path / "x")
    del record.stages["curriculum"]
    record.run_id += "z"
    save_run(root, record)
    with pytest.raises(ValueError, match="until curriculum"):  # named ('latest' reads the run before it)
        export_run(root, record.run_id, "trl", tmp_path / "x")


def test_an_empty_order_is_refused_not_exported_as_empty_files(tmp_path):
    """An order the quality filter emptied was exported as 0-row files with exit status 0."""
    root, record = _make_run(tmp_path / "root")
    orders = {f: pl.read_parquet(root / "curriculum" / "kc" / f) for f in ARM_FILES.values()}
    orders[ARM_FILES["saerl"]] = orders[ARM_FILES["saerl"]].head(0)
    record.stages["curriculum"].path = _publish(ArtifactStore(root), "curriculum", "kc2", orders)
    record.stages["curriculum"].key = "kc2"
    save_run(root, record)
    with pytest.raises(ValueError, match="saerl order is empty.*nothing to export"):
        export_run(root, "latest", "trl", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    export_run(root, "latest", "trl", tmp_path / "v", arm="vanilla")  # another arm still exports


def test_cli_export(run, tmp_path, capsys):
    root, record = run
    out = tmp_path / "cli"
    assert main(["export", record.run_id[:15], "--format", "verl", "--out", str(out), "--root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert str(out / TABLE) in printed
    assert f"exported run {record.run_id}, arm saerl:" in printed, "the run exported, named in full on stdout"
    assert main(["export", "nope", "--format", "trl", "--out", str(out), "--root", str(root)]) == 2
    assert "no unique run 'nope'" in capsys.readouterr().err


def test_cli_export_out_pointing_at_a_file_is_an_error_naming_out(run, tmp_path, capsys):
    """--out naming an existing file crashed with a FileExistsError traceback."""
    root, _ = run
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    assert main(["export", "latest", "--root", str(root), "--format", "verl", "--out", str(taken)]) == 2
    assert "--out" in capsys.readouterr().err and taken.read_text() == "mine"


def test_an_export_killed_half_way_keeps_the_last_whole_table(run, tmp_path, monkeypatch):
    """verl/trl wrote train.parquet in place: an export killed mid-write left half a file over the earlier one."""
    root, record = run
    out = tmp_path / "verl"
    export_run(root, record.run_id, "verl", out)
    whole = pl.read_parquet(out / TABLE)

    def killed_midway(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.DataFrame, "write_parquet", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        export_run(root, record.run_id, "verl", out)
    monkeypatch.undo()
    assert pl.read_parquet(out / TABLE).equals(whole)


# ------------------------------------------------------------------------------------ what the README says


def test_a_whole_batch_export_says_how_many_rows_of_the_order_it_leaves_out_and_why(run, tmp_path, caplog):
    """The files and README said '16 rows in training order' and nothing of the short last batches RL leaves out
    (288 of 300 on a real run): the README and a warning now give the count and the reason."""
    root, _ = run
    order = pl.read_parquet(root / "curriculum" / "kc" / ARM_FILES["saerl"])
    rows = (N_PROMPTS // BATCH) * BATCH * EPOCHS
    left, absent = order.height - rows, N_PROMPTS - len(set(_expected(root, "saerl")))
    with caplog.at_level("WARNING", logger="saerl.export"):
        export_run(root, "latest", "hf", tmp_path / "hf")
    note = (f"{left} of the {order.height} rows of the saerl order are not in this file: the short last batch of "
            f"each epoch ({EPOCHS} batches of fewer than {BATCH} prompts), which saerl's own RL does not train on")
    text = (tmp_path / "hf" / README).read_text()
    assert f"arm saerl, {rows} rows in training order" in text and note in text
    assert f"Each block of {BATCH} rows is one saerl batch" in text
    assert (f"{absent} of its prompts appear nowhere in the file" in text) == (absent > 0)
    assert any(note in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("arm", ["vanilla", "filter_only"])
def test_a_shuffled_arm_export_describes_its_own_arm_and_the_rows_rl_leaves_out(arm, tmp_path, caplog):
    """vanilla/filter_only (10 rows, batch 4): saerl's RL reads them in whole batches, as the ordered arms, so the
    export leaves each epoch's short last batch out and says so, and its README names the arm's shuffle; every
    exported row is in a batch the exported trl sampler yields."""
    root, _ = _make_run(tmp_path / "root", epochs=1)
    with caplog.at_level("WARNING", logger="saerl.export"):
        export_run(root, "latest", "trl", tmp_path / arm, arm=arm)
    df = pl.read_parquet(tmp_path / arm / TABLE)
    tail = N_PROMPTS % BATCH
    assert df.height == N_PROMPTS - tail and tail
    text = (tmp_path / arm / README).read_text()
    assert f"The {arm} arm's shuffle (training seed 0)" in text and f"Each block of {BATCH} rows is one saerl batch" in text
    note = f"{tail} of the {N_PROMPTS} rows of the {arm} order are not in this file"
    assert note in text and any(note in r.getMessage() for r in caplog.records)
    sampler = _load_module(tmp_path / arm / SAMPLER, f"trl_sampler_{arm}").SaerlOrderSampler(df, 1, BATCH)
    assert sorted(set(sampler)) == list(range(N_PROMPTS - tail))


def test_an_export_whose_rows_all_fill_batches_says_nothing_is_left_out(tmp_path, caplog):
    root, _ = _make_run(tmp_path / "root", n_prompts=2 * BATCH)  # vanilla over EPOCHS epochs of 2 whole batches
    with caplog.at_level("WARNING", logger="saerl.export"):
        export_run(root, "latest", "verl", tmp_path / "v", arm="vanilla")
    text = (tmp_path / "v" / README).read_text()
    assert "not in this file" not in text and "do not fill a batch" not in text and not caplog.records


# ------------------------------------------------------------------------------------ the output folder


def test_an_export_over_an_earlier_export_of_another_format_removes_its_files(run, tmp_path, caplog):
    """hf into a folder holding a trl export left the stale train.parquet and saerl_sampler.py beside the new
    dataset, unmentioned; verl over hf left hf's shards and json files."""
    from datasets import load_from_disk

    root, _ = run
    out = tmp_path / "out"
    export_run(root, "latest", "trl", out)
    with caplog.at_level("WARNING", logger="saerl.export"):
        export_run(root, "latest", "hf", out)
    assert not (out / TABLE).exists() and not (out / SAMPLER).exists() and not (out / REWARD).exists()
    assert load_from_disk(str(out))["id"] == _expected(root, "saerl")
    assert any(f"removed 3 files of an earlier saerl export in {out}" in r.getMessage()
               and f"{REWARD}, {SAMPLER}, {TABLE}" in r.getMessage() for r in caplog.records)
    export_run(root, "latest", "verl", out)
    assert sorted(p.name for p in out.iterdir()) == sorted([README, REWARD, SAMPLER, TABLE])
    export_run(root, "latest", "verl", out, arm="vanilla")  # the same format again: replaced, nothing else
    assert sorted(p.name for p in out.iterdir()) == sorted([README, REWARD, SAMPLER, TABLE])
    assert "arm vanilla" in (out / README).read_text()
    export_run(root, "latest", "trl", out)  # trl over verl: trl's own reward module replaces verl's
    assert sorted(p.name for p in out.iterdir()) == sorted([README, REWARD, SAMPLER, TABLE])
    assert "def compute_score(completions" in (out / REWARD).read_text()


@pytest.mark.parametrize("files", [{"notes.txt": "mine"}, {TABLE: "my own data"}, {README: "# my project"},
                                   {README: "# saerl export: run x", "sub/": ""}])
def test_an_export_refuses_a_folder_that_is_not_empty_and_not_an_earlier_export(run, tmp_path, files):
    """An export wrote over (and beside) whatever the folder held: a user's README.md, their train.parquet."""
    root, _ = run
    out = tmp_path / "out"
    out.mkdir()
    for name, text in files.items():
        (out / name).mkdir() if name.endswith("/") else (out / name).write_text(text)
    before = {p.name: (p.read_text() if p.is_file() else None) for p in out.iterdir()}
    with pytest.raises(ValueError, match=f"export folder {out} is not empty and not an earlier saerl export"):
        export_run(root, "latest", "trl", out)
    assert {p.name: (p.read_text() if p.is_file() else None) for p in out.iterdir()} == before


def test_cli_export_into_a_users_folder_is_an_error(run, tmp_path, capsys):
    root, _ = run
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    assert main(["export", "latest", "--root", str(root), "--format", "hf", "--out", str(tmp_path / "mine")]) == 2
    assert "files no saerl export writes (notes.txt)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ trl's reward, the step budget


def test_trl_export_writes_a_reward_that_judges_as_saerl_does(run, tmp_path):
    """The trl export had no reward module, and trl's stock accuracy_reward takes a `solution` column (the file has
    `answer`) and scored a final '#### 17' 0. It now writes reward.py around saerl's verifier with trl's
    signature, for plain and conversational completions, and its README passes it as reward_funcs."""
    root, _ = run
    out = tmp_path / "trl"
    export_run(root, "latest", "trl", out)
    reward = _load_module(out / REWARD, "saerl_export_trl_reward")  # as the README loads it
    score = getattr(reward, REWARD_FUNCTION)
    plain = ["so 10 + 7 = 17\n#### 17", "the total is \\boxed{17}", "#### 18", "no answer here"]
    assert score(plain, ["17"] * 4) == [1.0, 1.0, 0.0, 0.0]
    chat = [[{"role": "assistant", "content": text}] for text in plain]
    assert score(prompts=[[{"role": "user", "content": "q"}]] * 4, completions=chat, answer=["17"] * 4,
                 id=["p0"] * 4, position=[0] * 4, ramp=[0] * 4, completion_ids=[[1]] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert score(["3 of 4: \\boxed{3/4}"], ["\\frac{3}{4}"]) == [1.0]
    assert reward.TIMEOUT_S == 5.0 and "TIMEOUT_S = 2.5 " in reward_module("trl", 2.5)
    text = (out / README).read_text()
    assert f"reward = load('saerl_reward', {str(out.resolve() / REWARD)!r})" in text
    assert f"reward_funcs=[reward.{REWARD_FUNCTION}]" in text
    assert "saerl must be importable in trl's environment" in text


@pytest.mark.parametrize(("max_steps", "trained", "passes"), [
    (1, "the first 4 rows of this file; it does not read the 12 rows after them", 1),
    (4, "the first 16 rows of this file.", 1),
    (9, "all 16 rows, then the file again from the top (36 rows in all", 3)])
def test_trl_and_verl_readmes_train_the_runs_step_budget(tmp_path, max_steps, trained, passes):
    """trl's README kept GRPOConfig's default num_train_epochs=3 (the file read three times; saerl trained
    train.max_steps steps, the first max_steps x batch_size rows), verl's gave no step budget, and its command
    failed verl's check (ppo_mini_batch_size 256 over train_batch_size). Both now state the run's train.max_steps
    and the rows it reads, and set it; trl's says to divide the per-device batch by the number of processes."""
    root, _ = _make_run(tmp_path / "root", config={"train.max_steps": max_steps})  # 16 rows: 4 batches of BATCH
    export_run(root, "latest", "trl", tmp_path / "trl")
    export_run(root, "latest", "verl", tmp_path / "verl")
    trl_text, verl_text = (tmp_path / "trl" / README).read_text(), (tmp_path / "verl" / README).read_text()
    said = f"saerl's RL trains this run for train.max_steps={max_steps} steps of {BATCH} prompts: {trained}"
    assert said in trl_text and said in verl_text
    assert (f"GRPOConfig(num_generations={GENERATIONS}, per_device_train_batch_size={BATCH * GENERATIONS}, "
            f"max_steps={max_steps}, ...)") in trl_text
    assert "on N processes (GPUs) divide it by N" in trl_text
    for key in (f"trainer.total_training_steps={max_steps} ", f"trainer.total_epochs={passes} ",
                f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH} ", f"data.train_batch_size={BATCH} "):
        assert key in verl_text, key


def test_dapo_runs_readmes_say_refills_read_further(tmp_path):
    root, _ = _make_run(tmp_path / "root", config={"train.max_steps": 2, "train.algorithm": "dapo"})
    export_run(root, "latest", "hf", tmp_path / "hf")
    assert "dynamic-sampling refills read further rows" in (tmp_path / "hf" / README).read_text()


def test_every_format_exports_the_ramp(run, tmp_path):
    """The order's `ramp` (which climb of its epoch a row belongs to: the run's budget is the first) was dropped by
    every format: hf and trl carry it as a column, verl in extra_info. An order from before ramps reads as ramp 0."""
    from datasets import load_from_disk

    root, record = run
    orders = {f: pl.read_parquet(root / "curriculum" / "kc" / f) for f in ARM_FILES.values()}
    saerl = orders[ARM_FILES["saerl"]].sort("position")
    orders[ARM_FILES["saerl"]] = saerl.with_columns(ramp=(pl.col("position") >= 8).cast(pl.Int64))
    orders[ARM_FILES["vanilla"]] = orders[ARM_FILES["vanilla"]].drop("ramp")  # an order from curriculum v3
    record.stages["curriculum"].path = _publish(ArtifactStore(root), "curriculum", "kr", orders)
    record.stages["curriculum"].key = "kr"
    save_run(root, record)
    expected = (whole_batch_rows(orders[ARM_FILES["saerl"]], BATCH))["ramp"].to_list()
    assert set(expected) == {0, 1}
    export_run(root, "latest", "hf", tmp_path / "hf")
    assert tuple(load_from_disk(str(tmp_path / "hf")).column_names) == COLUMNS
    assert load_from_disk(str(tmp_path / "hf"))["ramp"] == expected
    export_run(root, "latest", "trl", tmp_path / "trl")
    assert pl.read_parquet(tmp_path / "trl" / TABLE)["ramp"].to_list() == expected
    export_run(root, "latest", "verl", tmp_path / "verl")
    assert pl.read_parquet(tmp_path / "verl" / TABLE)["extra_info"].struct.field("ramp").to_list() == expected
    export_run(root, "latest", "trl", tmp_path / "vanilla", arm="vanilla")
    assert set(pl.read_parquet(tmp_path / "vanilla" / TABLE)["ramp"]) == {0}


def test_an_hf_export_draws_no_progress_bar_into_a_stderr_that_is_no_terminal(run, tmp_path, monkeypatch):
    """`saerl export --format hf` wrote 'Saving the dataset (0/1 shards)' frames into a redirected stderr, whatever
    it was: datasets' bars are off while it saves unless stderr is a terminal, and as they were after."""
    import datasets
    from datasets.utils import logging as ds_logging

    import saerl.export as ex

    root, _ = run
    seen: list[bool] = []
    save = datasets.Dataset.save_to_disk
    monkeypatch.setattr(datasets.Dataset, "save_to_disk",
                        lambda self, *a, **k: (seen.append(ds_logging.is_progress_bar_enabled()), save(self, *a, **k))[1])
    ds_logging.enable_progress_bar()
    for terminal in (False, True):
        monkeypatch.setattr(ex, "stderr_is_terminal", lambda t=terminal: t)
        export_run(root, "latest", "hf", tmp_path / f"hf{terminal}")
        assert ds_logging.is_progress_bar_enabled(), "as they were after"
    assert seen == [False, True]


def test_an_export_from_a_root_with_brackets_prints_commands_that_paste_whole(tmp_path):
    """An artifact root 'runs [v2]': the export read its order and prompts files as glob patterns that matched
    nothing (polars). Into a folder with spaces, the verl README's bash block split data.train_files, the reward
    path and the sampler path at the space."""
    import re
    import shlex

    root, _ = _make_run(tmp_path / "runs [v2]")
    out = tmp_path / "my export [v2]"
    export_run(root, "latest", "verl", out)
    text = (out / README).read_text()
    (block,) = re.findall(r"```bash\n(.*?)```", text, re.S)
    words = shlex.split(block.replace("\\\n", " "))
    assert f"data.train_files={out.resolve() / TABLE}" in words
    assert f"reward.custom_reward_function.path={out.resolve() / REWARD}" in words
    (sampler,) = re.findall(r"sampler written here, `(.*?)`", text)
    assert shlex.split(sampler)[0] == f"data.sampler.class_path={out.resolve() / SAMPLER}"
    (keys,) = re.findall(r"top level: `(.*?)`", text)
    assert shlex.split(keys)[0] == f"custom_reward_function.path={out.resolve() / REWARD}"


def test_the_trl_readme_loads_exactly_the_exported_file_from_a_folder_with_brackets(tmp_path):
    """trl's README loads the table with `load_dataset('parquet', data_files=PATH)`, and datasets reads data_files
    as a glob: from a folder 'my export [v2]' it found no file. The printed path is escaped."""
    import ast
    import re

    from datasets import load_dataset

    root, _ = _make_run(tmp_path / "root")
    out = tmp_path / "my export [v2]"
    export_run(root, "latest", "trl", out)
    (files,) = re.findall(r"data_files=('.*?'), split", (out / README).read_text())
    data = load_dataset("parquet", data_files=ast.literal_eval(files), split="train", cache_dir=str(tmp_path / "c"))
    assert data.num_rows == pl.read_parquet(out / TABLE, glob=False).height
